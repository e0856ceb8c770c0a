//! Webhook Lambda behind a Function URL: Okta Event Hooks in, SQS messages out.
//!
//! The Function URL event is read as plain JSON (not through lambda_http), so a request
//! whose headers no HTTP library accepts is our 400, never a function error.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use okta_port::metrics;
use okta_port::queue::Sqs;
use okta_port::webhook::{self, WebhookConfig};
use serde_json::Value;

/// The environment, with SECRETS_ARN's secret (the webhook secret) merged under it.
async fn init() -> Result<(WebhookConfig, Sqs), Error> {
    let lookup = okta_port::secrets::environment().await?;
    let config = WebhookConfig::from_lookup(|name| lookup.get(name))?;
    let queue_url = lookup
        .get("EVENTS_QUEUE_URL")
        .ok_or("missing configuration: set the environment variable EVENTS_QUEUE_URL")?;
    Ok((config, Sqs::for_webhook(queue_url).await))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    okta_port::telemetry::require_lambda("webhook");
    okta_port::telemetry::init_lambda();
    let (config, queue) = match init().await {
        Ok(ready) => ready,
        Err(e) => okta_port::telemetry::init_failed("webhook", &e),
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (config, queue) = (&config, &queue);
        async move {
            let (response, outcome) = webhook::handle_function_url(&event.payload, config, queue).await;
            metrics::emit_stdout(&metrics::webhook(&outcome, Some(&event.context.request_id)));
            Ok::<_, Error>(response)
        }
    }))
    .await
}
