//! Scheduled Lambda: one full Okta → Port resync per invocation.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use okta_port::{App, Report, metrics};
use serde_json::Value;

async fn run(app: &App, payload: Value) -> Result<Report, Error> {
    let overrides = okta_port::app::scheduled_overrides(payload)?;
    let mut report = app.resync(overrides).await?;
    if app.hook.url.is_some() {
        // A hook problem must not block the resync, but it fails the invocation.
        match app.ensure_hook(None).await {
            Ok(outcome) => tracing::info!(?outcome, "event hook checked"),
            Err(e) => report.errors.push(format!("event hook: {e}")),
        }
    }
    tracing::info!(report = %serde_json::to_string(&report)?, "resync finished");
    Ok(report)
}

async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Report, Error> {
    let request_id = event.context.request_id.clone();
    let result = run(app, event.payload).await;
    let report = result.as_ref().ok();
    let failed = report.is_none_or(|r| !r.is_success());
    metrics::emit_stdout(&metrics::resync(report, failed, Some(&request_id)));
    let report = result?;
    if failed {
        return Err(format!("resync incomplete: {}", report.failure_summary()).into());
    }
    Ok(report)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    okta_port::telemetry::init_lambda();
    let app = App::from_environment().await?;
    lambda_runtime::run(service_fn(|event| handle(&app, event))).await
}
