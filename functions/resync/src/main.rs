//! Scheduled Lambda: one full Okta to Port resync per invocation; with the input
//! `{"resumable": true}` (the resync state machine's), as much of one as the invocation
//! allows, going on from and saving a checkpoint; with `{"catchUp": true}`, one System
//! Log catch-up pass that queues what the hook missed.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use okta_port::app::is_catch_up;
use okta_port::{App, metrics};
use serde_json::Value;

async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    if is_catch_up(&event.payload) {
        return Ok(serde_json::to_value(app.scheduled_catch_up().await?)?);
    }
    let request_id = event.context.request_id.clone();
    let left = event
        .context
        .deadline()
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let result = app.scheduled_resync_until(event.payload, left).await;
    let report = match &result {
        Ok(report) => Some(report),
        Err(e) => e.report(),
    };
    metrics::emit_stdout(&metrics::resync(report, result.is_err(), Some(&request_id)));
    Ok(serde_json::to_value(result?)?)
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
