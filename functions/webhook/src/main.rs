//! Webhook Lambda behind a Function URL: Okta Event Hooks in, SQS messages out.

use lambda_http::{Error, Request, RequestExt, service_fn};
use okta_port::metrics;
use okta_port::queue::Sqs;
use okta_port::webhook::{self, WebhookConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    okta_port::telemetry::init_lambda();
    // The environment, with SECRETS_ARN's secret (the webhook secret) merged under it.
    let lookup = okta_port::secrets::environment().await?;
    let config = WebhookConfig::from_lookup(|name| lookup.get(name))?;
    let queue_url = lookup
        .get("EVENTS_QUEUE_URL")
        .ok_or("missing configuration: set the environment variable EVENTS_QUEUE_URL")?;
    let queue = Sqs::from_env(queue_url).await;
    lambda_http::run(service_fn(|request: Request| {
        let (config, queue) = (&config, &queue);
        async move {
            let (response, outcome) = webhook::handle_counted(&request, config, queue).await;
            let request_id = request.lambda_context_ref().map(|c| c.request_id.as_str());
            metrics::emit_stdout(&metrics::webhook(&outcome, request_id));
            Ok::<_, Error>(response)
        }
    }))
    .await
}
