//! Client-side throttling per Okta rate-limit bucket.
//!
//! Okta counts requests per bucket (endpoint family) in windows and reports the budget on
//! every response: `X-Rate-Limit-Limit`, `X-Rate-Limit-Remaining` and `X-Rate-Limit-Reset`
//! (epoch seconds, to be compared with the response's `Date`, not our clock). We track each
//! bucket's budget, count our own requests in flight against it, and pause until the
//! window resets once it is spent, so a well-behaved run never meets a 429.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;
use tokio::time::Instant;

/// How long to poll while the first request to a bucket tells us its budget.
const PROBE_POLL: Duration = Duration::from_millis(10);

/// The bucket a path is counted in (longest-match families, as Okta documents them).
pub fn bucket_of(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "v1", "apps", ..] => "apps",
        ["api", "v1", "users"] => "users.list",
        ["api", "v1", "users", _] => "users.get",
        ["api", "v1", "users", _, ..] => "users.sub",
        ["api", "v1", "groups"] => "groups.list",
        ["api", "v1", "groups", _] => "groups.get",
        ["api", "v1", "groups", _, "users"] => "groups.users",
        ["api", "v1", "groups", ..] => "groups.sub",
        ["api", "v1", "eventHooks", ..] => "eventHooks",
        ["api", "v1", "logs"] => "logs",
        _ => "other",
    }
}

/// Budget reported by one response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub limit: u32,
    pub remaining: u32,
    /// Time until the window resets, from the response's own clock.
    pub resets_in: Duration,
}

impl Budget {
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let num = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<i64>().ok();
        let limit = num("x-rate-limit-limit")?;
        let remaining = num("x-rate-limit-remaining")?;
        let reset = num("x-rate-limit-reset")?;
        let now = headers
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.timestamp())
            .unwrap_or_else(|| chrono::Utc::now().timestamp());
        Some(Self {
            limit: limit.clamp(0, u32::MAX as i64) as u32,
            remaining: remaining.clamp(0, u32::MAX as i64) as u32,
            resets_in: Duration::from_secs((reset - now).clamp(0, 3600) as u64),
        })
    }
}

#[derive(Debug)]
struct BucketState {
    /// None until the first response of this bucket tells us its budget.
    budget: Option<(u32, Instant)>,
    in_flight: u32,
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<&'static str, BucketState>>,
    waited_ms: AtomicU64,
}

/// A request counted in flight in its bucket until released, or dropped: a request
/// abandoned half-way (a resync stopping at its time budget) must not stay counted, or
/// the bucket would wait for it forever in the next invocation of a warm function.
pub struct Slot<'a> {
    limiter: &'a RateLimiter,
    bucket: &'static str,
    released: bool,
}

impl Slot<'_> {
    /// Ends the request, learning the bucket's budget from the response.
    pub fn release(mut self, budget: Option<Budget>) {
        self.released = true;
        self.limiter.release(self.bucket, budget);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.released {
            self.limiter.release(self.bucket, None);
        }
    }
}

impl RateLimiter {
    /// Waits until a request to `bucket` fits in its budget, then counts it in flight
    /// until the slot is released or dropped.
    pub async fn slot(&self, bucket: &'static str) -> Slot<'_> {
        self.acquire(bucket).await;
        Slot {
            limiter: self,
            bucket,
            released: false,
        }
    }

    /// Waits until a request to `bucket` fits in its budget, then counts it in flight.
    /// Every `acquire` must be followed by one `release`.
    async fn acquire(&self, bucket: &'static str) {
        let mut waited = Duration::ZERO;
        loop {
            let wait = {
                let mut buckets = self.buckets.lock().expect("rate limiter lock");
                let state = buckets.entry(bucket).or_insert(BucketState {
                    budget: None,
                    in_flight: 0,
                });
                let now = Instant::now();
                if matches!(state.budget, Some((_, reset_at)) if now >= reset_at) {
                    // The window has reset: the budget is unknown again until a response says.
                    state.budget = None;
                }
                let wait = match state.budget {
                    // Unknown budget: one request goes alone to learn it.
                    None if state.in_flight == 0 => None,
                    None => Some((PROBE_POLL, false)),
                    // The whole budget is ours to use: a reserve would cost a window per window.
                    Some((remaining, _)) if remaining > state.in_flight => None,
                    Some((_, reset_at)) => {
                        let jitter = Duration::from_millis(rand::rng().random_range(50..250));
                        Some((reset_at - now + jitter, true))
                    }
                };
                if wait.is_none() {
                    state.in_flight += 1;
                }
                wait
            };
            match wait {
                None => break,
                Some((d, counts)) => {
                    tokio::time::sleep(d).await;
                    if counts {
                        waited += d;
                    }
                }
            }
        }
        if !waited.is_zero() {
            tracing::debug!(
                bucket,
                waited_ms = waited.as_millis() as u64,
                "paused for the Okta rate limit"
            );
            crate::progress::rate_limit_wait("okta", waited.as_millis() as u64);
            self.waited_ms
                .fetch_add(waited.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Ends a request counted by `acquire`, learning the bucket's budget from the response.
    fn release(&self, bucket: &'static str, budget: Option<Budget>) {
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let Some(state) = buckets.get_mut(bucket) else {
            return;
        };
        state.in_flight = state.in_flight.saturating_sub(1);
        let Some(b) = budget else { return };
        let reset_at = Instant::now() + b.resets_in;
        state.budget = match state.budget {
            // Same window (responses may arrive out of order): the lowest count is the truth.
            Some((remaining, old_reset)) if abs_diff(old_reset, reset_at) < Duration::from_millis(1500) => {
                Some((remaining.min(b.remaining), old_reset.max(reset_at)))
            }
            _ => Some((b.remaining, reset_at)),
        };
        if b.limit == 0 {
            // Concurrency 429 (limit 0, remaining 0): back off until the estimated reset.
            state.budget = Some((0, reset_at.max(Instant::now() + Duration::from_secs(1))));
        }
    }

    /// Total time requests spent paused for rate limits.
    /// Counts a wait spent outside `acquire` (a back-off after a bare 429).
    pub fn record_wait(&self, wait: Duration) {
        self.waited_ms
            .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn waited(&self) -> Duration {
        Duration::from_millis(self.waited_ms.load(Ordering::Relaxed))
    }
}

fn abs_diff(a: Instant, b: Instant) -> Duration {
    if a > b { a - b } else { b - a }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn buckets_follow_okta_families() {
        assert_eq!(bucket_of("/api/v1/users"), "users.list");
        assert_eq!(bucket_of("/api/v1/users/00u1"), "users.get");
        assert_eq!(bucket_of("/api/v1/users/00u1/groups"), "users.sub");
        assert_eq!(bucket_of("/api/v1/groups/00g1/users"), "groups.users");
        assert_eq!(bucket_of("/api/v1/apps/0oa1/users"), "apps");
        assert_eq!(bucket_of("/api/v1/apps"), "apps");
    }

    #[test]
    fn budget_uses_the_response_clock() {
        let mut h = HeaderMap::new();
        h.insert("x-rate-limit-limit", HeaderValue::from_static("100"));
        h.insert("x-rate-limit-remaining", HeaderValue::from_static("7"));
        // Date and reset 12 s apart, whatever our own clock says.
        h.insert("date", HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        h.insert("x-rate-limit-reset", HeaderValue::from_static("784111789"));
        let b = Budget::from_headers(&h).unwrap();
        assert_eq!(
            b,
            Budget {
                limit: 100,
                remaining: 7,
                resets_in: Duration::from_secs(12)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_when_the_budget_is_spent() {
        let rl = RateLimiter::default();
        rl.acquire("apps").await;
        rl.release(
            "apps",
            Some(Budget {
                limit: 3,
                remaining: 2,
                resets_in: Duration::from_secs(5),
            }),
        );
        rl.acquire("apps").await; // 2 left → fits
        rl.release(
            "apps",
            Some(Budget {
                limit: 3,
                remaining: 1,
                resets_in: Duration::from_secs(5),
            }),
        );
        rl.acquire("apps").await; // the last one of the window fits too
        rl.release(
            "apps",
            Some(Budget {
                limit: 3,
                remaining: 0,
                resets_in: Duration::from_secs(5),
            }),
        );
        let before = Instant::now();
        rl.acquire("apps").await; // budget spent: waits for the reset
        assert!(Instant::now() - before >= Duration::from_secs(5));
        assert!(rl.waited() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_request_does_not_stay_in_flight() {
        let rl = RateLimiter::default();
        // The first request of a bucket goes alone (it learns the budget), and is dropped.
        let probe = rl.slot("apps").await;
        drop(probe);
        let next = tokio::time::timeout(Duration::from_secs(1), rl.slot("apps")).await;
        assert!(next.is_ok(), "the bucket still counts the abandoned request");
    }
}
