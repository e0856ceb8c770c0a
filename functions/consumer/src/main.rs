//! Consumer Lambda (SQS trigger with ReportBatchItemFailures): converges the Okta objects
//! a batch of events touched, and reports only the messages whose work failed.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use std::time::{Duration, SystemTime};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use okta_port::live::{AppProcessor, GroupProcessor, Processor, UserProcessor};
use okta_port::{App, metrics};

/// Time kept back from the invocation's deadline to report the batch's failures.
const MARGIN: Duration = Duration::from_secs(3);

/// The time the batch's work may take: what the invocation has left, less the margin. A
/// short invocation keeps three quarters for the work; a deadline already past (a local
/// emulator's) gets Lambda's longest timeout, since the real one is unknown.
fn budget(left: Duration) -> Duration {
    if left.is_zero() {
        return Duration::from_secs(900);
    }
    left.saturating_sub(MARGIN.min(left / 4))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    okta_port::telemetry::require_lambda("consumer");
    okta_port::telemetry::init_lambda();
    let app = match App::from_environment().await {
        Ok(app) => app,
        Err(e) => okta_port::telemetry::init_failed("consumer", &e),
    };
    // One processor per resource kind, in convergence order (relation targets first).
    let processors: Vec<Box<dyn Processor>> = vec![
        Box::new(GroupProcessor),
        Box::new(AppProcessor),
        Box::new(UserProcessor),
    ];
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let (app, processors) = (&app, &processors);
        async move {
            let messages = okta_port::live::sqs_messages(event.payload);
            let left = event
                .context
                .deadline()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let report = app.apply_batch_within(&messages, processors, budget(left)).await;
            tracing::info!(?report, "batch done");
            let lags = metrics::applied_event_lags(&messages, &report, processors);
            metrics::emit_stdout(&metrics::consumer(
                &report,
                &lags,
                Some(&event.context.request_id),
            ));
            let mut response = SqsBatchResponse::default();
            for id in report.failed_messages {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
            Ok::<_, Error>(response)
        }
    }))
    .await
}
