//! Logging setup. Logs go to stderr (the CLI keeps stdout for the report); in Lambda they
//! are JSON lines for CloudWatch. `RUST_LOG` overrides the default level.

use tracing_subscriber::EnvFilter;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Human-readable progress on stderr.
pub fn init_cli() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// JSON lines, as CloudWatch Logs Insights queries them best.
pub fn init_lambda() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter())
        .with_target(false)
        .with_current_span(false)
        .without_time()
        .try_init();
}
