//! Scheduled Lambda: one full Okta → Port resync per invocation.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use okta_port::{App, Report};
use serde_json::Value;

async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Report, Error> {
    let overrides = okta_port::app::scheduled_overrides(event.payload)?;
    let mut report = app.resync(overrides).await?;
    if app.hook.url.is_some() {
        // A hook problem must not block the resync, but it fails the invocation.
        match app.ensure_hook(None).await {
            Ok(outcome) => tracing::info!(?outcome, "event hook checked"),
            Err(e) => report.errors.push(format!("event hook: {e}")),
        }
    }
    tracing::info!(report = %serde_json::to_string(&report)?, "resync finished");
    if !report.is_success() {
        return Err(format!("resync incomplete: {}", report.failure_summary()).into());
    }
    Ok(report)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    okta_port::telemetry::init_lambda();
    let app = App::from_env()?;
    lambda_runtime::run(service_fn(|event| handle(&app, event))).await
}
