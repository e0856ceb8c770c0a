//! HTTP implementation of `PortSink`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use url::Url;

mod sink;

use super::{PortError, StoredEntity};
use crate::config::PortConfig;
use crate::retry::{Attempts, RetryPolicy};

/// Room left in a bulk body for the `{"entities":[…]}` envelope.
const ENVELOPE_BYTES: usize = 64;
/// Page size of the entity search (Port's maximum).
const SEARCH_PAGE: u32 = 1000;

/// HTTP client of the Port API.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    client_id: String,
    client_secret: SecretString,
    installation_id: String,
    token: tokio::sync::Mutex<Option<Token>>,
    retry: RetryPolicy,
    max_concurrency: usize,
    calls: AtomicU64,
    rate_limited: AtomicU64,
    waited_ms: AtomicU64,
}

struct Token {
    value: SecretString,
    refresh_at: Instant,
}

/// The User-Agent Port records as `$datasource`: stable across versions in its last segment.
pub fn user_agent(installation_id: &str) -> String {
    format!("okta-port/{}/{installation_id}", env!("CARGO_PKG_VERSION"))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Envelope {
    error: String,
    message: String,
}

impl Client {
    pub fn new(config: &PortConfig) -> Result<Self, PortError> {
        let http = reqwest::Client::builder()
            .user_agent(user_agent(&config.installation_id))
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| PortError::Transport {
                route: "client".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base: config.api_url.clone(),
                client_id: config.client_id.clone(),
                client_secret: config.client_secret.clone(),
                installation_id: config.installation_id.clone(),
                token: tokio::sync::Mutex::new(None),
                retry: config.retry.clone(),
                max_concurrency: config.max_concurrency,
                calls: AtomicU64::new(0),
                rate_limited: AtomicU64::new(0),
                waited_ms: AtomicU64::new(0),
            }),
        })
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .expect("http(s) base URL")
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// The cached token, or a new one. One caller fetches while the others wait for it.
    async fn token(&self) -> Result<String, PortError> {
        let mut cached = self.inner.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.value.expose_secret().to_owned());
        }
        let token = self.fetch_token().await?;
        let value = token.value.expose_secret().to_owned();
        *cached = Some(token);
        Ok(value)
    }

    /// Drops the cached token if it is still the one that was refused.
    async fn invalidate(&self, refused: &str) {
        let mut cached = self.inner.token.lock().await;
        if cached
            .as_ref()
            .is_some_and(|t| t.value.expose_secret() == refused)
        {
            *cached = None;
        }
    }

    async fn fetch_token(&self) -> Result<Token, PortError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct TokenResponse {
            access_token: String,
            expires_in: f64,
        }
        let route = "/v1/auth/access_token";
        let body = serde_json::to_vec(&json!({
            "clientId": self.inner.client_id,
            "clientSecret": self.inner.client_secret.expose_secret(),
        }))
        .expect("serializable");
        let url = self.url(&["auth", "access_token"], &[]);
        let (status, _, bytes) = self
            .send_with_retries(Method::POST, url, route, Some(body.into()), None)
            .await?;
        if matches!(status.as_u16(), 404 | 405) {
            return Err(PortError::NotPortApi {
                url: self.inner.base.to_string(),
                route: route.into(),
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            let env: Envelope = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(PortError::Auth {
                status: status.as_u16(),
                message: env.message,
            });
        }
        // A web page instead of Port's JSON: the URL points at something else.
        let t: TokenResponse = serde_json::from_slice(&bytes).map_err(|_| PortError::NotPortApi {
            url: self.inner.base.to_string(),
            route: route.into(),
            status: status.as_u16(),
        })?;
        let lifetime = Duration::from_secs_f64(t.expires_in.max(0.0));
        // Refresh a little early; Port hands back the same token while it is alive anyway.
        let refresh_at = Instant::now() + lifetime.saturating_sub(Duration::from_secs(30).min(lifetime / 10));
        Ok(Token {
            value: SecretString::from(t.access_token),
            refresh_at,
        })
    }

    /// Sends an authenticated request, retrying what is worth retrying and refreshing the
    /// token once on a 401. Returns the final status and body for the caller to interpret.
    async fn request(
        &self,
        method: Method,
        url: Url,
        route: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), PortError> {
        let mut refreshed = false;
        loop {
            let token = self.token().await?;
            let (status, headers, bytes) = self
                .send_with_retries(method.clone(), url.clone(), route, body.clone(), Some(&token))
                .await?;
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                tracing::info!(route, "Port refused the token; fetching a new one");
                self.invalidate(&token).await;
                refreshed = true;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED {
                let env: Envelope = serde_json::from_slice(&bytes).unwrap_or_default();
                return Err(PortError::Auth {
                    status: 401,
                    message: env.message,
                });
            }
            return Ok((status, headers, bytes));
        }
    }

    /// Sends one request, retrying transport failures and transient statuses (backoff or
    /// the server's wait) and waiting out 429s, each within its bound. The final answer,
    /// whatever its status, is the caller's to interpret.
    async fn send_with_retries(
        &self,
        method: Method,
        url: Url,
        route: &str,
        body: Option<Bytes>,
        token: Option<&str>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), PortError> {
        let inner = &self.inner;
        let mut attempts = Attempts::new(&inner.retry);
        loop {
            let (status, headers, bytes) = match self.exchange(&method, &url, body.as_ref(), token).await {
                Ok(answer) => answer,
                Err(e) => match attempts.after_failure() {
                    Some(wait) => {
                        tracing::warn!(route, error = %e.without_url(), attempt = attempts.failures(), "Port request failed; retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    None => {
                        return Err(PortError::Transport {
                            route: route.into(),
                            message: e.without_url().to_string(),
                        });
                    }
                },
            };
            let wait = if status == StatusCode::TOO_MANY_REQUESTS {
                inner.rate_limited.fetch_add(1, Ordering::Relaxed);
                let Some(waits) = attempts.after_rate_limit() else {
                    return Ok((status, headers, bytes));
                };
                let wait = attempts
                    .capped(server_wait(&headers, true).unwrap_or_else(|| inner.retry.backoff(waits)));
                inner
                    .waited_ms
                    .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
                tracing::warn!(
                    route,
                    wait_ms = wait.as_millis() as u64,
                    "Port answered 429; waiting"
                );
                crate::progress::rate_limit_wait("port", wait.as_millis() as u64);
                wait
            } else if crate::retry::is_transient(status) {
                let Some(backoff) = attempts.after_failure() else {
                    return Ok((status, headers, bytes));
                };
                tracing::warn!(
                    route,
                    status = status.as_u16(),
                    attempt = attempts.failures(),
                    "Port unavailable; retrying"
                );
                attempts.capped(server_wait(&headers, false).unwrap_or(backoff))
            } else {
                return Ok((status, headers, bytes));
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One HTTP exchange, counted.
    async fn exchange(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Bytes>,
        token: Option<&str>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), reqwest::Error> {
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let mut request = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body.clone());
        }
        let response = request.send().await?;
        let (status, headers) = (response.status(), response.headers().clone());
        Ok((status, headers, response.bytes().await?))
    }

    /// Turns a non-success answer into a `PortError`.
    fn api_error(route: &str, status: StatusCode, headers: &HeaderMap, bytes: &[u8]) -> PortError {
        let env: Envelope = serde_json::from_slice(bytes).unwrap_or_default();
        PortError::Api {
            status: status.as_u16(),
            route: route.into(),
            error: env.error,
            message: env.message,
            trace_id: headers
                .get("x-trace-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .into(),
        }
    }

    /// This installation's entities of a blueprint that also match `rules`, every page.
    pub async fn search_own(
        &self,
        blueprint: &str,
        rules: Vec<Value>,
    ) -> Result<Vec<StoredEntity>, PortError> {
        let mut all = Vec::new();
        self.search_own_pages(blueprint, rules, &mut |page| all.extend(page))
            .await?;
        Ok(all)
    }

    /// `search_own`, each page handed to `on_page` as it arrives.
    pub async fn search_own_pages(
        &self,
        blueprint: &str,
        rules: Vec<Value>,
        on_page: &mut (dyn FnMut(Vec<StoredEntity>) + Send),
    ) -> Result<(), PortError> {
        #[derive(Deserialize)]
        struct SearchPage {
            entities: Vec<StoredEntity>,
            #[serde(default)]
            next: Option<String>,
        }
        let route = format!("/v1/blueprints/{blueprint}/entities/search");
        let url = self.url(&["blueprints", blueprint, "entities", "search"], &[]);
        // Our entities are those whose $datasource is our User-Agent, whatever the version.
        let mut all_rules = vec![
            json!({ "property": "$datasource", "operator": "beginsWith", "value": "okta-port/" }),
            json!({ "property": "$datasource", "operator": "endsWith", "value": format!("/{}", self.inner.installation_id) }),
        ];
        all_rules.extend(rules);
        let query = json!({ "combinator": "and", "rules": all_rules });
        let mut from: Option<String> = None;
        loop {
            let mut body = json!({ "query": query, "limit": SEARCH_PAGE });
            if let Some(f) = &from {
                body["from"] = json!(f);
            }
            let body = serde_json::to_vec(&body).expect("serializable");
            let (status, headers, bytes) = self
                .request(Method::POST, url.clone(), &route, Some(body.into()))
                .await?;
            if status == StatusCode::NOT_FOUND && from.is_none() {
                // No such blueprint yet: nothing of ours in it.
                return Ok(());
            }
            if !status.is_success() {
                return Err(Self::api_error(&route, status, &headers, &bytes));
            }
            let page: SearchPage =
                serde_json::from_slice(&bytes).map_err(|e| PortError::InvalidResponse {
                    route: route.clone(),
                    message: e.to_string(),
                })?;
            on_page(page.entities);
            match page.next.filter(|n| !n.is_empty()) {
                Some(n) => from = Some(n),
                None => return Ok(()),
            }
        }
    }
}

/// How long the server asked us to wait: `Retry-After` (seconds or an HTTP date), else,
/// for a 429, `x-ratelimit-reset` (an epoch second above 10,000, else seconds from now).
fn server_wait(headers: &HeaderMap, rate_limited: bool) -> Option<Duration> {
    if let Some(wait) = crate::retry::retry_after(headers) {
        return Some(wait);
    }
    if !rate_limited {
        return None;
    }
    let reset = headers
        .get("x-ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()?;
    let secs = if reset > 10_000.0 {
        reset - chrono::Utc::now().timestamp() as f64
    } else {
        reset
    };
    Some(Duration::from_secs_f64(secs.clamp(0.0, 3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    #[test]
    fn waits_follow_the_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", HeaderValue::from_static("7"));
        assert_eq!(server_wait(&h, true), Some(Duration::from_secs(7)));
        assert_eq!(server_wait(&h, false), None);
        let epoch = (chrono::Utc::now().timestamp() + 20).to_string();
        h.insert("x-ratelimit-reset", HeaderValue::from_str(&epoch).unwrap());
        let w = server_wait(&h, true).unwrap();
        assert!(
            w <= Duration::from_secs(20) && w >= Duration::from_secs(18),
            "{w:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(server_wait(&h, false), Some(Duration::from_secs(3)));
    }

    #[test]
    fn user_agent_ends_with_the_installation() {
        assert_eq!(
            user_agent("prod"),
            format!("okta-port/{}/prod", env!("CARGO_PKG_VERSION"))
        );
    }
}
