//! Logging setup. Logs go to stderr (the CLI keeps stdout for the report); in Lambda they
//! are JSON lines for CloudWatch. `RUST_LOG` overrides the default level.

use tracing_subscriber::EnvFilter;

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Human-readable logs on stderr at `default` level ("info" shows progress).
pub fn init_cli(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// JSON lines, as CloudWatch Logs Insights queries them best.
pub fn init_lambda() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter("info"))
        .with_target(false)
        .with_current_span(false)
        .without_time()
        .try_init();
}
