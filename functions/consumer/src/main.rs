//! Consumer Lambda (SQS trigger with ReportBatchItemFailures): converges the Okta objects
//! a batch of events touched, and reports only the messages whose work failed.

use std::time::SystemTime;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use okta_port::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    okta_port::telemetry::require_lambda("consumer");
    okta_port::telemetry::init_lambda();
    let app = match App::from_environment().await {
        Ok(app) => app,
        Err(e) => okta_port::telemetry::init_failed("consumer", &e),
    };
    let processors = okta_port::sync::live::default_processors();
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let (app, processors) = (&app, &processors);
        async move {
            let left = event
                .context
                .deadline()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let request_id = event.context.request_id;
            Ok::<_, Error>(app.consume(event.payload, processors, left, &request_id).await)
        }
    }))
    .await
}
