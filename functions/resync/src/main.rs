//! Scheduled Lambda: one full Okta → Port resync per invocation.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use okta_port::{App, Report, metrics};
use serde_json::Value;

async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Report, Error> {
    let request_id = event.context.request_id.clone();
    let result = app.scheduled_resync(event.payload).await;
    let report = match &result {
        Ok(report) => Some(report),
        Err(e) => e.report(),
    };
    metrics::emit_stdout(&metrics::resync(report, result.is_err(), Some(&request_id)));
    Ok(result?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    okta_port::telemetry::require_lambda("resync");
    okta_port::telemetry::init_lambda();
    let app = match App::from_environment().await {
        Ok(app) => app,
        Err(e) => okta_port::telemetry::init_failed("resync", &e),
    };
    lambda_runtime::run(service_fn(|event| handle(&app, event))).await
}
