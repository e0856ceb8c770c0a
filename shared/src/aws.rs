//! AWS SDK configuration with the timeouts and retry budget each caller can afford: the
//! SDK's defaults have no operation timeout, so a stalled endpoint would hang a call until
//! the Lambda timeout (or forever in the CLI).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Timeouts and attempts of one kind of AWS call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub connect: Duration,
    /// One attempt, answer read included.
    pub attempt: Duration,
    /// Every attempt and back-off together.
    pub total: Duration,
    pub max_attempts: u32,
}

/// The webhook's SendMessageBatch: Okta waits 3 s for the whole request, and a 503 must
/// reach it in time for its one retry to count.
pub const WEBHOOK_SEND: Budget = Budget {
    connect: Duration::from_millis(300),
    attempt: Duration::from_millis(1_200),
    total: Duration::from_millis(1_900),
    max_attempts: 3,
};

/// Reading the secret at a cold start or a CLI start: well inside Lambda's 10 s init phase,
/// and a person waiting hears about it in seconds.
pub const STARTUP: Budget = Budget {
    connect: Duration::from_secs(1),
    attempt: Duration::from_secs(2),
    total: Duration::from_secs(5),
    max_attempts: 3,
};

/// Everything else (local tooling, tests' queue reads): bounded, with room for long polls.
pub const GENERAL: Budget = Budget {
    connect: Duration::from_secs(2),
    attempt: Duration::from_secs(25),
    total: Duration::from_secs(60),
    max_attempts: 3,
};

/// The standard AWS configuration (environment, profile, role; `AWS_ENDPOINT_URL` points
/// it at moto), bounded by `budget`.
pub async fn sdk_config(budget: Budget) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(budget.connect)
                .read_timeout(budget.attempt)
                .operation_attempt_timeout(budget.attempt)
                .operation_timeout(budget.total)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(budget.max_attempts))
        .load()
        .await
}
