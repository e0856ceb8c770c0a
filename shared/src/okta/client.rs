//! `Client`, the HTTP implementation of `OktaSource`: credentials through [`OktaAuth`],
//! Link pagination, per-bucket throttling, bounded concurrency and retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Semaphore;
use url::Url;

use super::{
    APP_USERS_PAGE, APPS_PAGE, Budget, GROUP_USERS_PAGE, GROUPS_PAGE, LOG_PAGE, Listing, LogPage,
    LogPosition, OktaAuth, OktaError, OktaSource, Page, RateLimiter, RequestAuth, SystemLog, USERS_PAGE,
    bucket_of, next_link, scope_for,
};
use crate::config::OktaConfig;
use crate::report::ApiStats;
use crate::retry::Attempts;

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// HTTP client of the Okta Management API.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: OktaAuth,
    in_flight: Semaphore,
    limiter: RateLimiter,
    retry: crate::retry::RetryPolicy,
    calls: AtomicU64,
    rate_limited: AtomicU64,
}

impl Client {
    pub fn new(config: &OktaConfig) -> Result<Self, OktaError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("okta-port/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OktaError::Transport {
                endpoint: "client".into(),
                message: e.to_string(),
            })?;
        let auth = OktaAuth::from_config(config, http.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base: config.base_url.clone(),
                auth,
                in_flight: Semaphore::new(config.max_in_flight),
                limiter: RateLimiter::default(),
                retry: config.retry.clone(),
                calls: AtomicU64::new(0),
                rate_limited: AtomicU64::new(0),
            }),
        })
    }

    /// OAuth token requests sent so far (0 with an SSWS token).
    pub fn token_requests(&self) -> u64 {
        self.inner.auth.token_requests()
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.inner.base.join(path).expect("static API path");
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// GET one object, e.g. `/api/v1/users/{id}`.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, OktaError> {
        let (body, _) = self.send(self.url(path, &[])).await?;
        parse(path, &body)
    }

    /// GET one object; `None` when Okta says it does not exist (404).
    pub async fn get_optional(&self, path: &str) -> Result<Option<Value>, OktaError> {
        match self.get_json(path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A write (`POST`, `PUT`, `DELETE`) with an optional JSON body; returns the answer's
    /// JSON (`null` when empty).
    pub async fn write_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, OktaError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("serializable"));
        let (answer, _) = self.send_request(method, self.url(path, &[]), body).await?;
        if answer.is_empty() {
            Ok(Value::Null)
        } else {
            parse(path, &answer)
        }
    }

    /// GET every page of a listing, following `Link: rel="next"` verbatim.
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<T>, OktaError> {
        let mut url = Some(self.url(path, query));
        let mut items = Vec::new();
        let listing = crate::progress::listing_name(path);
        while let Some(current) = url.take() {
            let (body, headers) = self.send(current).await?;
            let page: Vec<T> = parse(path, &body)?;
            let next = next_link(&headers);
            crate::progress::page(&listing, page.len(), next.is_none());
            items.extend(page);
            if let Some(next) = next {
                url = Some(self.next_url(path, &next)?);
            }
        }
        Ok(items)
    }

    /// A `next` link, followed verbatim but only on our org's origin (a link elsewhere
    /// would carry our credentials away).
    fn next_url(&self, path: &str, next: &str) -> Result<Url, OktaError> {
        let next = Url::parse(next).map_err(|e| OktaError::InvalidResponse {
            endpoint: path.into(),
            message: format!("bad next link: {e}"),
        })?;
        if next.origin() != self.inner.base.origin() {
            return Err(OktaError::ForeignLink {
                endpoint: path.into(),
                origin: next.origin().ascii_serialization(),
            });
        }
        Ok(next)
    }

    async fn send(&self, url: Url) -> Result<(bytes::Bytes, HeaderMap), OktaError> {
        self.send_request(Method::GET, url, None).await
    }

    /// One request with throttling, bounded concurrency and retries. Failures are retried
    /// for reads and idempotent writes only: a retried create could create twice (Okta may
    /// have acted on a write whose answer broke off).
    async fn send_request(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(bytes::Bytes, HeaderMap), OktaError> {
        let inner = &self.inner;
        let idempotent = method != Method::POST || url.path().contains("/lifecycle/");
        let endpoint = url.path().to_owned();
        let mut attempts = Attempts::new(&inner.retry);
        // A 401 with a service-app token gets one new token, not a retry storm.
        let mut refreshed = false;
        loop {
            // Before the throttles: a token request must not hold a rate-limit slot.
            let credentials = inner.auth.authorize(&method, &url).await?;
            let generation = credentials.generation;
            let (status, headers, answer) = match self
                .exchange(&method, &url, body.as_deref(), credentials)
                .await
            {
                Ok(answer) => answer,
                Err(e) => match attempts.after_failure().filter(|_| idempotent) {
                    Some(wait) => {
                        tracing::warn!(endpoint, error = %e.without_url(), attempt = attempts.failures(), "Okta request failed; retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    None => {
                        return Err(OktaError::Transport {
                            endpoint,
                            message: e.without_url().to_string(),
                        });
                    }
                },
            };
            if status.is_success() {
                return Ok((answer, headers));
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.wait_out_rate_limit(&endpoint, &headers, &mut attempts)
                    .await?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && inner.auth.refreshable() && !refreshed {
                refreshed = true;
                inner.auth.invalidate(generation).await;
                continue;
            }
            let error = api_error_with_hint(&method, status, &endpoint, &answer, &headers);
            if crate::retry::is_transient(status)
                && idempotent
                && let Some(wait) = attempts.after_failure()
            {
                tracing::warn!(%error, attempt = attempts.failures(), "Okta server error; retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(error);
        }
    }

    /// One HTTP exchange, under its bucket's throttle and the concurrency limit.
    async fn exchange(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        credentials: RequestAuth,
    ) -> Result<(StatusCode, HeaderMap, bytes::Bytes), reqwest::Error> {
        let inner = &self.inner;
        let bucket = bucket_of(url.path());
        let slot = inner.limiter.slot(bucket).await;
        let _permit = inner.in_flight.acquire().await.expect("semaphore never closed");
        // The credentials were taken before the wait; if a 401 has replaced the token
        // meanwhile, take the new one (cached: no token request under the throttles).
        let credentials = if inner.auth.is_stale(credentials.generation) {
            inner.auth.authorize(method, url).await.unwrap_or(credentials)
        } else {
            credentials
        };
        inner.calls.fetch_add(1, Ordering::Relaxed);
        let mut request = inner
            .http
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, credentials.authorization)
            .header(ACCEPT, "application/json");
        if let Some(proof) = credentials.dpop {
            request = request.header("DPoP", proof);
        }
        if *method != Method::GET {
            // Okta's front end answers 411 to a write without a length, and an empty body
            // alone does not make the HTTP client send one: say it explicitly.
            let body = body.unwrap_or_default().to_vec();
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::CONTENT_LENGTH, body.len())
                .body(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                slot.release(None);
                return Err(e);
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        slot.release(Budget::from_headers(&headers));
        let body = response.bytes().await?;
        Ok((status, headers, body))
    }

    /// A 429: with Okta's rate-limit headers the limiter now knows the bucket is spent and
    /// waits for its reset; without them (a proxy, the concurrency limit) Retry-After if
    /// given, else an exponential backoff. Bounded per request.
    async fn wait_out_rate_limit(
        &self,
        endpoint: &str,
        headers: &HeaderMap,
        attempts: &mut Attempts<'_>,
    ) -> Result<(), OktaError> {
        let inner = &self.inner;
        inner.rate_limited.fetch_add(1, Ordering::Relaxed);
        let Some(waits) = attempts.after_rate_limit() else {
            return Err(OktaError::RateLimited {
                endpoint: endpoint.to_owned(),
                waits: attempts.rate_limit_waits(),
            });
        };
        if Budget::from_headers(headers).is_some() {
            tracing::warn!(endpoint, "Okta answered 429; waiting for the rate-limit reset");
            return Ok(());
        }
        let wait = attempts.capped(
            crate::retry::retry_after(headers)
                .unwrap_or_else(|| crate::retry::RATE_LIMIT_BACKOFF.backoff(waits)),
        );
        tracing::warn!(
            endpoint,
            wait_ms = wait.as_millis() as u64,
            "Okta answered 429 without rate-limit headers; backing off"
        );
        inner.limiter.record_wait(wait);
        crate::progress::rate_limit_wait("okta", wait.as_millis() as u64);
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

#[async_trait]
impl SystemLog for Client {
    async fn log_page(&self, from: &LogPosition) -> Result<LogPage, OktaError> {
        const PATH: &str = "/api/v1/logs";
        let url = match from {
            LogPosition::Since { since, filter } => self.url(
                PATH,
                &[
                    ("since", since.as_str()),
                    ("filter", filter.as_str()),
                    ("limit", &LOG_PAGE.to_string()),
                    ("sortOrder", "ASCENDING"),
                ],
            ),
            LogPosition::Next(link) => self.next_url(PATH, link)?,
        };
        let (body, headers) = self.send(url).await?;
        Ok(LogPage {
            events: parse(PATH, &body)?,
            next: next_link(&headers),
        })
    }
}

/// `api_error`, and for a 403 the scope and role the call needs.
fn api_error_with_hint(
    method: &Method,
    status: StatusCode,
    endpoint: &str,
    body: &[u8],
    headers: &HeaderMap,
) -> OktaError {
    let mut error = api_error(status, endpoint, body, headers);
    if status == StatusCode::FORBIDDEN
        && let OktaError::Api { summary, .. } = &mut error
    {
        let scope = scope_for(method, endpoint);
        summary.push_str(&format!(
            " (this call needs the {scope} scope for a service app, and an admin role \
             that may read it for either kind of credential)"
        ));
    }
    error
}

#[async_trait]
impl OktaSource for Client {
    async fn page(&self, listing: &Listing, next: Option<&str>) -> Result<Page, OktaError> {
        let (path, query): (String, Vec<(&str, String)>) = match listing {
            Listing::Users => ("/api/v1/users".into(), vec![("limit", USERS_PAGE.to_string())]),
            Listing::DeprovisionedUsers => (
                "/api/v1/users".into(),
                vec![
                    ("search", "status eq \"DEPROVISIONED\"".into()),
                    ("limit", USERS_PAGE.to_string()),
                ],
            ),
            Listing::Groups => ("/api/v1/groups".into(), vec![("limit", GROUPS_PAGE.to_string())]),
            Listing::Apps => ("/api/v1/apps".into(), vec![("limit", APPS_PAGE.to_string())]),
            Listing::GroupMembers(id) => (
                format!("/api/v1/groups/{}/users", encode_segment(id)),
                vec![("limit", GROUP_USERS_PAGE.to_string())],
            ),
            Listing::AppUsers(id) => (
                format!("/api/v1/apps/{}/users", encode_segment(id)),
                vec![("limit", APP_USERS_PAGE.to_string())],
            ),
        };
        let url = match next {
            Some(link) => self.next_url(&path, link)?,
            None => {
                let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.url(&path, &query)
            }
        };
        let (body, headers) = self.send(url).await?;
        let next = next_link(&headers);
        let objects: Vec<Value> = if listing.is_members() {
            // Members come as whole user objects; only their ids are kept.
            let members: Vec<IdOnly> = parse(&path, &body)?;
            members
                .into_iter()
                .map(|m| serde_json::json!({ "id": m.id }))
                .collect()
        } else {
            parse(&path, &body)?
        };
        crate::progress::page(
            &crate::progress::listing_name(&path),
            objects.len(),
            next.is_none(),
        );
        Ok(Page { objects, next })
    }

    async fn user(&self, id: &str) -> Result<Option<Value>, OktaError> {
        self.get_optional(&format!("/api/v1/users/{}", encode_segment(id)))
            .await
    }

    /// Every group the user is a member of (Everyone included).
    async fn user_groups(&self, id: &str) -> Result<Vec<Value>, OktaError> {
        self.list(&format!("/api/v1/users/{}/groups", encode_segment(id)), &[])
            .await
    }

    /// The apps assigned to the user, directly or through a group (not `appLinks`, which
    /// only shows dashboard links).
    async fn user_apps(&self, id: &str) -> Result<Vec<Value>, OktaError> {
        let filter = format!("user.id eq \"{id}\"");
        self.list(
            "/api/v1/apps",
            &[("filter", &filter), ("limit", &APPS_PAGE.to_string())],
        )
        .await
    }

    async fn group(&self, id: &str) -> Result<Option<Value>, OktaError> {
        self.get_optional(&format!("/api/v1/groups/{}", encode_segment(id)))
            .await
    }

    async fn app(&self, id: &str) -> Result<Option<Value>, OktaError> {
        self.get_optional(&format!("/api/v1/apps/{}", encode_segment(id)))
            .await
    }

    async fn search_users(&self, expression: &str) -> Result<Vec<Value>, OktaError> {
        self.list(
            "/api/v1/users",
            &[("search", expression), ("limit", &USERS_PAGE.to_string())],
        )
        .await
    }

    fn stats(&self) -> ApiStats {
        ApiStats {
            calls: self.inner.calls.load(Ordering::Relaxed),
            rate_limited: self.inner.rate_limited.load(Ordering::Relaxed),
            rate_limit_wait_ms: self.inner.limiter.waited().as_millis() as u64,
        }
    }
}

fn encode_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

fn parse<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, OktaError> {
    serde_json::from_slice(body).map_err(|e| OktaError::InvalidResponse {
        endpoint: endpoint.into(),
        message: e.to_string(),
    })
}

fn api_error(status: StatusCode, endpoint: &str, body: &[u8], headers: &HeaderMap) -> OktaError {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct OktaErrorBody {
        error_code: String,
        error_summary: String,
        error_id: String,
    }
    let parsed: OktaErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let id = if parsed.error_id.is_empty() {
        // Fall back to the request id, which Okta support can trace too.
        headers
            .get("x-okta-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    } else {
        parsed.error_id
    };
    OktaError::Api {
        status: status.as_u16(),
        endpoint: endpoint.into(),
        code: if parsed.error_code.is_empty() {
            "-".into()
        } else {
            parsed.error_code
        },
        summary: parsed.error_summary,
        id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_okta_codes() {
        let body = br#"{"errorCode":"E0000006","errorSummary":"You do not have permission","errorLink":"E0000006","errorId":"oae123","errorCauses":[]}"#;
        let e = api_error(StatusCode::FORBIDDEN, "/api/v1/groups", body, &HeaderMap::new());
        let text = e.to_string();
        assert!(
            text.contains("403") && text.contains("E0000006") && text.contains("oae123"),
            "{text}"
        );
    }
}
