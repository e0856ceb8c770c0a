//! Logging setup. Logs go to stderr (the CLI keeps stdout for the report); in Lambda they
//! are JSON lines for CloudWatch. `RUST_LOG` overrides the default level.

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, FilterFn, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

/// The span lambda_runtime opens around each invocation, with its `requestId` field.
const REQUEST_SPAN_TARGET: &str = "lambda_runtime::layers::trace";

/// The targets of this workspace (the library, the CLI, the three functions).
const OUR_TARGETS: [&str; 4] = ["okta_port", "webhook", "consumer", "resync"];

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Our own code follows `RUST_LOG` down to trace; every dependency is capped at INFO,
/// whatever `RUST_LOG` says. Below that, some write what they carry: lambda_runtime logs
/// each raw event at trace (the webhook's secret header with it), HTTP and AWS clients log
/// requests and answers (tokens, secret values).
fn dependencies_capped() -> FilterFn<impl Fn(&Metadata<'_>) -> bool + Clone> {
    filter_fn(|meta| {
        let crate_name = meta.target().split("::").next().unwrap_or_default();
        OUR_TARGETS.contains(&crate_name) || *meta.level() <= Level::INFO
    })
}

/// Human-readable logs on stderr at `default` level ("info" shows each phase). With
/// `status_line` and stderr a terminal, a live status line shows the progress below them;
/// otherwise stderr carries the log lines alone (machine-readable, as in CI).
pub fn init_cli(default: &str, status_line: bool) {
    use std::io::IsTerminal;
    let registry = Registry::default();
    if status_line && std::io::stderr().is_terminal() {
        let logs = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(crate::status_line::ClearLine)
            .with_filter(filter(default).and(dependencies_capped()));
        let progress = crate::status_line::StatusLine::default().with_filter(
            tracing_subscriber::filter::Targets::new().with_target(crate::progress::TARGET, Level::DEBUG),
        );
        let _ = tracing::subscriber::set_global_default(registry.with(logs).with(progress));
    } else {
        // Colours only for a person: a file or a pipe gets plain text.
        let logs = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter(default).and(dependencies_capped()));
        let _ = tracing::subscriber::set_global_default(registry.with(logs));
    }
}

/// JSON lines, as CloudWatch Logs Insights queries them best. Each line written during an
/// invocation carries the Lambda request id, as `spans[0].requestId`.
pub fn init_lambda() {
    let _ = tracing::subscriber::set_global_default(lambda_subscriber(filter("info"), std::io::stdout));
}

/// The Lambda subscriber writing to `writer`. The request span stays enabled whatever
/// `RUST_LOG` says, so no line loses its request id; dependencies stay at INFO at most.
pub fn lambda_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter.add_directive(
        format!("{REQUEST_SPAN_TARGET}=info")
            .parse()
            .expect("a valid directive"),
    );
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .with_target(false)
        .with_current_span(false)
        .with_span_list(true)
        .without_time()
        .with_writer(writer)
        .with_filter(filter.and(dependencies_capped()));
    Registry::default().with(layer)
}

/// A function's cold start that cannot go on: the reason goes to the log as one line
/// (Display, never Debug, so it reads as the message and carries no secret), then the
/// process exits, which Lambda reports as an init failure.
pub fn init_failed(function: &str, error: &dyn std::fmt::Display) -> ! {
    tracing::error!(error = %error, "{function}: cold start failed");
    eprintln!("{function}: cold start failed: {error}");
    std::process::exit(1);
}

/// For a function binary started outside Lambda: one clear line and exit status 2, instead
/// of the runtime's panic (exit 101) on its missing `AWS_LAMBDA_*` variables.
pub fn require_lambda(function: &str) {
    const NEEDED: [&str; 4] = [
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
    ];
    let missing: Vec<&str> = NEEDED
        .into_iter()
        .filter(|v| std::env::var_os(v).is_none_or(|x| x.is_empty()))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "{function}: not running in AWS Lambda ({} not set); run it locally with \
             `cargo lambda watch`, or use the okta-port CLI",
            missing.join(", ")
        );
        std::process::exit(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use lambda_http::lambda_runtime::{Context, layers::trace::request_span};
    use serde_json::Value;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(default_level: &str) -> Vec<Value> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = lambda_subscriber(EnvFilter::new(default_level), move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let mut context = Context::default();
            context.request_id = "8476a536-e9f4-11e8-9739-2dfe598c3fcd".into();
            // As lambda_runtime's tracing layer does around each invocation.
            let span = request_span(&context);
            let _entered = span.enter();
            tracing::warn!(event_uuid = "ev-1", entity = "00u1", "converged");
            tracing::info!("progress");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn lambda_lines_are_json_with_the_request_id() {
        let lines = logged("info");
        assert_eq!(lines.len(), 2, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["fields"]["message"], "converged");
        assert_eq!(line["fields"]["event_uuid"], "ev-1");
        assert_eq!(line["fields"]["entity"], "00u1");
        assert_eq!(
            line["spans"][0]["requestId"],
            "8476a536-e9f4-11e8-9739-2dfe598c3fcd"
        );
    }

    #[test]
    fn dependencies_stay_at_info_even_at_trace() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = lambda_subscriber(EnvFilter::new("trace"), move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "lambda_runtime::runtime", "raw event: authorization s3cret");
            tracing::debug!(target: "aws_smithy_runtime::client", "response body s3cret");
            tracing::info!(target: "lambda_runtime::runtime", "started");
            tracing::trace!("our own trace line");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("started") && text.contains("our own trace line"),
            "{text}"
        );
    }

    #[test]
    fn the_request_id_survives_a_quiet_filter() {
        let lines = logged("warn");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(
            lines[0]["spans"][0]["requestId"],
            "8476a536-e9f4-11e8-9739-2dfe598c3fcd"
        );
    }
}
