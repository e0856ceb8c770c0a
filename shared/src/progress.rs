//! Progress of long work, as tracing events under one target: every listing page, write
//! wave and rate-limit pause at DEBUG, one line per finished phase at INFO. The Lambda logs
//! at INFO, so a resync of 100,000 users logs a dozen progress lines, not thousands; the CLI
//! on a terminal turns the DEBUG events into a live status line (`telemetry::init_cli`).

/// The target of every progress event.
pub const TARGET: &str = "okta_port::progress";

/// One page of an Okta listing arrived. `listing` names the endpoint, ids left out
/// (`/api/v1/groups/{id}/users`).
pub fn page(listing: &str, objects: usize, last: bool) {
    tracing::debug!(target: TARGET, listing, objects, last, "page");
}

/// A pause to stay within a rate limit, or after a 429.
pub fn rate_limit_wait(api: &'static str, wait_ms: u64) {
    tracing::debug!(target: TARGET, api, wait_ms, "rate limit pause");
}

/// Entities of `blueprint` written so far in this phase, out of `of`.
pub fn written(blueprint: &str, written: usize, of: usize) {
    tracing::debug!(target: TARGET, blueprint, written, of, "writing");
}

/// A phase begins (the status line shows its name).
pub fn phase(name: &'static str) {
    tracing::debug!(target: TARGET, phase = name, "phase");
}

/// A listing's path with its ids replaced, so that the 300 group-member listings count as
/// one: `/api/v1/groups/00g1/users` → `/api/v1/groups/{id}/users`.
pub fn listing_name(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            // Okta ids are 20 characters of letters and digits (`00u…`, `00g…`, `0oa…`).
            let id_like = segment.len() >= 15 && segment.bytes().all(|b| b.is_ascii_alphanumeric());
            if id_like { "{id}" } else { segment }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    #[test]
    fn listing_names_drop_ids() {
        assert_eq!(
            super::listing_name("/api/v1/groups/00g1abcdefghijklmno7/users"),
            "/api/v1/groups/{id}/users"
        );
        assert_eq!(super::listing_name("/api/v1/users"), "/api/v1/users");
    }
}
