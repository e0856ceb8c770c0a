//! When to try a request again, and how long to wait first: the one classifier the Okta,
//! Port and Okta token clients share.

use std::time::Duration;

use rand::Rng;

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Sends of one request at most, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    /// Cap on any single wait, including waits a server asked for.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(300),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Wait before retry number `retry` (1 for the first retry): `base × 2^(retry-1)`,
    /// capped, with "equal jitter" (half fixed, half random) so that many clients that
    /// failed together do not retry together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

/// Back-off after a 429 that carries no rate-limit headers: from about a second up.
pub const RATE_LIMIT_BACKOFF: RetryPolicy = RetryPolicy {
    max_attempts: 10,
    base_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(60),
};

/// 429s one request may wait out before giving up.
pub const MAX_RATE_LIMIT_WAITS: u32 = 10;

/// Statuses worth another try: a timeout, and the server errors that mean "not now"
/// (not 501 or 505, which a retry cannot change). 429 is a rate limit, counted apart.
pub fn is_transient(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 500 | 502 | 503 | 504)
}

/// One request's retry budget: failures (no answer, a broken-off answer, a transient
/// status) and rate-limit waits are counted apart, each with its own bound.
#[derive(Debug)]
pub struct Attempts<'p> {
    policy: &'p RetryPolicy,
    failures: u32,
    rate_limit_waits: u32,
}

impl<'p> Attempts<'p> {
    pub fn new(policy: &'p RetryPolicy) -> Self {
        Self {
            policy,
            failures: 0,
            rate_limit_waits: 0,
        }
    }

    /// Counts a failed attempt; the backoff before the next one, or `None` when the
    /// request has had all its attempts.
    pub fn after_failure(&mut self) -> Option<Duration> {
        self.failures += 1;
        (self.failures < self.policy.max_attempts).then(|| self.policy.backoff(self.failures))
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts a 429; the number of waits so far, or `None` when the request may wait no more.
    pub fn after_rate_limit(&mut self) -> Option<u32> {
        self.rate_limit_waits += 1;
        (self.rate_limit_waits <= MAX_RATE_LIMIT_WAITS).then_some(self.rate_limit_waits)
    }

    pub fn rate_limit_waits(&self) -> u32 {
        self.rate_limit_waits
    }

    /// `wait` (one the server asked for, or a backoff), capped by the policy.
    pub fn capped(&self, wait: Duration) -> Duration {
        wait.min(self.policy.max_delay)
    }
}

/// `Retry-After` in seconds or as an HTTP date, when the answer has one.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Some(Duration::from_secs_f64(secs.clamp(0.0, 3600.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_bounded_apart() {
        let policy = RetryPolicy::default();
        let mut attempts = Attempts::new(&policy);
        for _ in 0..MAX_RATE_LIMIT_WAITS {
            assert!(attempts.after_rate_limit().is_some());
        }
        assert_eq!(attempts.after_rate_limit(), None);
        // 429s do not spend the failures' budget: five sends in all, so four retries.
        assert_eq!((0..10).filter_map(|_| attempts.after_failure()).count(), 4);
        assert!(
            is_transient(reqwest::StatusCode::BAD_GATEWAY)
                && is_transient(reqwest::StatusCode::REQUEST_TIMEOUT)
        );
        assert!(
            !is_transient(reqwest::StatusCode::NOT_IMPLEMENTED)
                && !is_transient(reqwest::StatusCode::CONFLICT)
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let first = p.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = p.backoff(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            assert!(p.backoff(30) <= Duration::from_secs(1));
        }
    }
}
