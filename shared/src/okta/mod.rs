//! Okta Management API: the `OktaSource` trait the sync core reads through, and
//! `Client`, its HTTP implementation (SSWS or OAuth service-app auth through [`OktaAuth`],
//! Link pagination, per-bucket throttling, bounded concurrency, retries).

pub mod auth;
mod client;
#[cfg(test)]
pub mod memory;
mod ratelimit;

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::{HeaderMap, LINK};
use serde_json::Value;

pub use auth::{OktaAuth, RequestAuth};
pub use client::Client;
pub use ratelimit::{Budget, RateLimiter, bucket_of};

use crate::report::ApiStats;

/// Page maxima per listing endpoint: we always ask for the maximum (fewest calls).
pub const USERS_PAGE: u32 = 200;
pub const GROUPS_PAGE: u32 = 10_000;
pub const GROUP_USERS_PAGE: u32 = 1_000;
pub const APPS_PAGE: u32 = 200;
pub const APP_USERS_PAGE: u32 = 500;

#[derive(Debug, Clone, thiserror::Error)]
pub enum OktaError {
    /// Okta answered with an error status; `code` and `id` are Okta's `errorCode`/`errorId`.
    #[error("Okta answered {status} on {endpoint}: {code} {summary} (errorId {id})")]
    Api {
        status: u16,
        endpoint: String,
        code: String,
        summary: String,
        id: String,
    },
    #[error("Okta request to {endpoint} failed: {message}")]
    Transport { endpoint: String, message: String },
    /// The org authorization server refused a token request; `error` and `description`
    /// are Okta's `error` and `error_description` (`invalid_client`, `invalid_scope`,
    /// `invalid_dpop_proof`, ...).
    #[error("Okta refused the OAuth access token ({status} on {endpoint}): {error}: {description}")]
    Auth {
        status: u16,
        endpoint: String,
        error: String,
        description: String,
    },
    /// The credentials cannot be used (a bad key, a token that is no header value).
    #[error("Okta credentials: {0}")]
    Credentials(String),
    #[error("Okta rate limit on {endpoint} still exceeded after {waits} waits")]
    RateLimited { endpoint: String, waits: u32 },
    #[error("unexpected response from Okta on {endpoint}: {message}")]
    InvalidResponse { endpoint: String, message: String },
    /// A `next` link pointing away from the org: never follow it (it would carry our token).
    #[error("Okta pagination on {endpoint} pointed outside the org ({origin}); listing stopped")]
    ForeignLink { endpoint: String, origin: String },
}

impl OktaError {
    /// The object does not exist (Okta's `E0000007`, HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, OktaError::Api { status: 404, .. })
    }
}

/// One listing of a full resync, read a page at a time: the objects themselves, or the
/// member ids of one group or app.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Listing {
    Users,
    DeprovisionedUsers,
    Groups,
    Apps,
    GroupMembers(String),
    AppUsers(String),
}

impl Listing {
    /// Member listings yield ids; the others whole objects.
    pub fn is_members(&self) -> bool {
        matches!(self, Listing::GroupMembers(_) | Listing::AppUsers(_))
    }

    /// The Okta rate-limit bucket its calls count in.
    pub fn bucket(&self) -> &'static str {
        match self {
            Listing::Users | Listing::DeprovisionedUsers => "users.list",
            Listing::Groups => "groups.list",
            Listing::GroupMembers(_) => "groups.users",
            Listing::Apps | Listing::AppUsers(_) => "apps",
        }
    }
}

/// One page of a listing: objects (or, for a member listing, `{"id"}` stubs) and the
/// opaque cursor of the next page, `None` on the last.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub objects: Vec<Value>,
    pub next: Option<String>,
}

/// Okta as the sync core reads it: listings page by page for the resync, single objects
/// and searches for the live path. `Client` is the HTTP implementation; the core's own
/// tests use an in-memory one.
#[async_trait]
pub trait OktaSource: Send + Sync {
    /// One page of `listing`: the first when `next` is `None`, else the one `next` names
    /// (a cursor a page before returned).
    async fn page(&self, listing: &Listing, next: Option<&str>) -> Result<Page, OktaError>;
    /// Every page of `listing`.
    async fn list_all(&self, listing: &Listing) -> Result<Vec<Value>, OktaError> {
        let mut all = Vec::new();
        let mut next = None;
        loop {
            let page = self.page(listing, next.as_deref()).await?;
            all.extend(page.objects);
            match page.next {
                Some(n) => next = Some(n),
                None => return Ok(all),
            }
        }
    }
    /// Ids of the users assigned to an app, directly or through a group.
    async fn list_app_user_ids(&self, app_id: &str) -> Result<Vec<String>, OktaError> {
        let users = self.list_all(&Listing::AppUsers(app_id.into())).await?;
        Ok(ids_of(&users))
    }
    /// One user, `None` when Okta has no such user.
    async fn user(&self, id: &str) -> Result<Option<Value>, OktaError>;
    /// The user's group objects (what a jq mapping sees as `.groups`).
    async fn user_groups(&self, id: &str) -> Result<Vec<Value>, OktaError>;
    /// The user's app objects, directly or through a group (`.applications`).
    async fn user_apps(&self, id: &str) -> Result<Vec<Value>, OktaError>;
    async fn group(&self, id: &str) -> Result<Option<Value>, OktaError>;
    async fn app(&self, id: &str) -> Result<Option<Value>, OktaError>;
    /// Users matching a `search` expression (DEPROVISIONED ones included).
    async fn search_users(&self, expression: &str) -> Result<Vec<Value>, OktaError>;
    /// Calls, 429s and rate-limit waits so far.
    fn stats(&self) -> ApiStats;
}

/// System Log events per page (Okta's maximum).
pub const LOG_PAGE: u32 = 1000;

/// Where a System Log read goes on from: a time (with the event-type filter), or the next
/// link of the page before.
#[derive(Debug, Clone, PartialEq)]
pub enum LogPosition {
    Since { since: String, filter: String },
    Next(String),
}

/// One page of the System Log, oldest first, and the link to the next. A read without an
/// end time polls: Okta always names a next page, empty when nothing newer is logged yet.
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    pub events: Vec<Value>,
    pub next: Option<String>,
}

/// Okta's System Log (`/api/v1/logs`), read page by page: the same events, with the same
/// `uuid`s, as the event hook delivers.
#[async_trait]
pub trait SystemLog: Send + Sync {
    async fn log_page(&self, from: &LogPosition) -> Result<LogPage, OktaError>;
}

/// The ids of Okta objects.
pub fn ids_of(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .filter_map(|o| o["id"].as_str().map(str::to_owned))
        .collect()
}

/// The OAuth scope an API call needs (what a 403 most often means is missing).
pub fn scope_for(method: &Method, path: &str) -> &'static str {
    let read = *method == Method::GET;
    match bucket_of(path) {
        "apps" => {
            if read {
                "okta.apps.read"
            } else {
                "okta.apps.manage"
            }
        }
        "groups.list" | "groups.get" | "groups.users" | "groups.sub" => {
            if read {
                "okta.groups.read"
            } else {
                "okta.groups.manage"
            }
        }
        "eventHooks" => {
            if read {
                "okta.eventHooks.read"
            } else {
                "okta.eventHooks.manage"
            }
        }
        "users.list" | "users.get" | "users.sub" => {
            if read {
                "okta.users.read"
            } else {
                "okta.users.manage"
            }
        }
        "logs" => "okta.logs.read",
        _ => "matching okta.*",
    }
}

/// Ids come from Okta itself, but never let one rewrite the path.
/// The `rel="next"` target of the `Link` headers (Okta sends one header per relation).
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.split_once(';')?;
            let is_next = params.split(';').any(|p| {
                let p = p.trim();
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            });
            is_next.then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn next_link_is_found_among_several() {
        let mut h = HeaderMap::new();
        h.append(
            LINK,
            HeaderValue::from_static("<https://x.okta.com/api/v1/users?limit=200>; rel=\"self\""),
        );
        h.append(
            LINK,
            HeaderValue::from_static("<https://x.okta.com/api/v1/users?after=00u5&limit=200>; rel=\"next\""),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://x.okta.com/api/v1/users?after=00u5&limit=200")
        );
        let mut h = HeaderMap::new();
        h.append(
            LINK,
            HeaderValue::from_static("<https://x/a>; rel=\"self\", <https://x/b>; rel=\"next\""),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://x/b"));
        let mut h = HeaderMap::new();
        h.append(LINK, HeaderValue::from_static("<https://x/a>; rel=\"self\""));
        assert_eq!(next_link(&h), None);
    }
}
