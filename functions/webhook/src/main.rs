//! Webhook Lambda behind a Function URL: Okta Event Hooks in, SQS messages out.

use lambda_http::{Error, Request, service_fn};
use okta_port::queue::Sqs;
use okta_port::webhook::{self, WebhookConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    okta_port::telemetry::init_lambda();
    let config = WebhookConfig::from_lookup(|name| std::env::var(name).ok())?;
    let queue_url =
        std::env::var("EVENTS_QUEUE_URL").map_err(|_| "missing configuration: EVENTS_QUEUE_URL")?;
    let queue = Sqs::from_env(queue_url).await;
    lambda_http::run(service_fn(|request: Request| {
        let (config, queue) = (&config, &queue);
        async move { Ok::<_, Error>(webhook::handle(&request, config, queue).await) }
    }))
    .await
}
