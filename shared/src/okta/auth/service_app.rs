//! An OAuth 2.0 service app: client credentials with `private_key_jwt`, DPoP-bound tokens,
//! one token request at a time, cached until shortly before they expire.

use std::fmt;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use super::RequestAuth;
use super::dpop::{DpopKey, htu, new_jti, unix_now};
use crate::config::ServiceAppConfig;
use crate::keys::{ClientKey, KindName};
use crate::okta::OktaError;
use crate::retry::{Attempts, RetryPolicy, is_transient};

/// Token requests one credential fetch may make for Okta's DPoP nonce: the first, and one
/// retry with the nonce Okta asked for (plus one more in case the nonce rotated in
/// between). A nonce that keeps changing past this is an error, not a loop. (Transport
/// failures and transient statuses are retried apart, within the client's retry policy.)
pub const MAX_TOKEN_ATTEMPTS: u32 = 3;
/// Lifetime of a client assertion (Okta accepts up to an hour; keep it short).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(300);
/// The error after Okta asked for a new DPoP nonce on every one of our token requests.
fn nonce_keeps_changing(endpoint: String, last: OktaError) -> OktaError {
    OktaError::Auth {
        status: 400,
        endpoint,
        error: "use_dpop_nonce".into(),
        description: format!(
            "Okta still asked for a new DPoP nonce after {MAX_TOKEN_ATTEMPTS} token requests; giving up ({last})"
        ),
    }
}

/// Renew a token this long before it expires, at most (a tenth of its life for short ones).
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenType {
    Bearer,
    Dpop,
}

struct CachedToken {
    /// The `Authorization` header value, marked sensitive.
    authorization: HeaderValue,
    kind: TokenType,
    /// base64url(SHA-256(token)), the `ath` of resource proofs.
    ath: String,
    renew_at: Instant,
    generation: u64,
}

/// An OAuth 2.0 service app's credentials and token cache.
pub struct ServiceApp {
    http: reqwest::Client,
    /// The retry budget of a token request (transport failures, transient statuses).
    retry: RetryPolicy,
    token_url: Url,
    client_id: String,
    key_id: String,
    key: EncodingKey,
    alg: Algorithm,
    scopes: String,
    dpop: DpopKey,
    /// Held across a token request: that is what makes it single-flight.
    cached: tokio::sync::Mutex<Option<CachedToken>>,
    /// The last `DPoP-Nonce` Okta sent.
    nonce: StdMutex<Option<String>>,
    generations: AtomicU64,
    /// The newest generation Okta refused.
    refused: AtomicU64,
    token_requests: AtomicU64,
    /// Token fetches finished (successful or not), and the last failure with the fetch
    /// number it ended: callers that waited on a failing fetch share its error instead of
    /// each sending their own doomed request.
    fetches: AtomicU64,
    failure: StdMutex<Option<(u64, OktaError)>>,
}

impl fmt::Debug for ServiceApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OktaAuth::ServiceApp")
            .field("client_id", &self.client_id)
            .field("key_id", &self.key_id)
            .field("alg", &self.alg)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl ServiceApp {
    /// Whether the token of `generation` was refused, or a newer one obtained since.
    pub(super) fn is_stale(&self, generation: u64) -> bool {
        generation <= self.refused.load(Ordering::Relaxed)
            || generation < self.generations.load(Ordering::Relaxed)
    }

    /// The token of `generation` was refused: drop it, unless another caller already did.
    pub(super) async fn invalidate(&self, generation: u64) {
        self.refused.fetch_max(generation, Ordering::Relaxed);
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|t| t.generation == generation) {
            tracing::info!("Okta refused the access token; a new one will be requested");
            *cached = None;
        }
    }

    /// Token requests sent so far (each attempt counts, nonce retries included).
    pub(super) fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    pub(super) fn new(
        config: &ServiceAppConfig,
        token_url: Url,
        http: reqwest::Client,
        retry: RetryPolicy,
    ) -> Result<Self, OktaError> {
        let key = ClientKey::parse(config.private_key.expose_secret())
            .map_err(|reason| OktaError::Credentials(format!("OKTA_PRIVATE_KEY: {reason}")))?;
        Ok(Self {
            http,
            retry,
            token_url,
            client_id: config.client_id.clone(),
            key_id: config.key_id.clone(),
            alg: key.alg,
            key: key.key,
            scopes: config.scopes.join(" "),
            dpop: DpopKey::generate()?,
            cached: tokio::sync::Mutex::new(None),
            nonce: StdMutex::new(None),
            generations: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            failure: StdMutex::new(None),
        })
    }

    pub(super) async fn authorize(&self, method: &Method, url: &Url) -> Result<RequestAuth, OktaError> {
        let seen = self.fetches.load(Ordering::Acquire);
        let (authorization, kind, ath, generation) = {
            let mut cached = self.cached.lock().await;
            let fresh = cached.as_ref().is_some_and(|t| Instant::now() < t.renew_at);
            if !fresh {
                let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some((fetch, error)) = failure
                    && fetch > seen
                {
                    // The fetch this caller waited on failed: its answer is ours too.
                    return Err(error);
                }
                let result = self.request_token().await;
                let fetch = self.fetches.fetch_add(1, Ordering::AcqRel) + 1;
                let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(token) => {
                        *failure = None;
                        *cached = Some(token);
                    }
                    Err(error) => {
                        *failure = Some((fetch, error.clone()));
                        return Err(error);
                    }
                }
            }
            let token = cached.as_ref().expect("a token was just stored");
            (
                token.authorization.clone(),
                token.kind,
                token.ath.clone(),
                token.generation,
            )
        };
        let dpop = match kind {
            TokenType::Bearer => None,
            TokenType::Dpop => Some(self.dpop.proof(method, &htu(url), None, Some(&ath))?),
        };
        Ok(RequestAuth {
            authorization,
            dpop,
            generation,
        })
    }

    fn client_assertion(&self) -> Result<String, OktaError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            sub: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
            jti: String,
        }
        let mut header = Header::new(self.alg);
        header.kid = Some(self.key_id.clone());
        let now = unix_now();
        let claims = Claims {
            iss: &self.client_id,
            sub: &self.client_id,
            aud: self.token_url.as_str(),
            iat: now,
            exp: now + ASSERTION_LIFETIME.as_secs(),
            jti: new_jti(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| {
            OktaError::Credentials(format!("could not sign the client assertion: {}", e.kind_name()))
        })
    }

    /// Client credentials with `private_key_jwt` and a DPoP proof, answering
    /// `use_dpop_nonce` with the nonce Okta sends (bounded). Transport failures and
    /// transient statuses are retried like any Okta call, each try with a new assertion
    /// and proof (Okta refuses a replayed `jti`).
    async fn request_token(&self) -> Result<CachedToken, OktaError> {
        let endpoint = self.token_url.path().to_owned();
        let mut attempts = Attempts::new(&self.retry);
        let mut nonce_requests = 0;
        loop {
            let (status, headers, body) = match self.post_token().await? {
                Ok(answer) => answer,
                Err(e) => match attempts.after_failure() {
                    Some(wait) => {
                        tracing::warn!(endpoint, error = %e.without_url(), "token request failed; retrying");
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
            if let Some(new_nonce) = dpop_nonce(&headers) {
                *self.nonce.lock().unwrap_or_else(|e| e.into_inner()) = Some(new_nonce);
            }
            if status.is_success() {
                return self.accept_token(&body, &endpoint);
            }
            let error = token_error(status, &endpoint, &body);
            if is_transient(status)
                && let Some(wait) = attempts.after_failure()
            {
                tracing::warn!(%error, "token request failed; retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            let asks_nonce = status == StatusCode::BAD_REQUEST
                && matches!(&error, OktaError::Auth { error, .. } if error == "use_dpop_nonce")
                && dpop_nonce(&headers).is_some();
            nonce_requests += 1;
            if asks_nonce && nonce_requests < MAX_TOKEN_ATTEMPTS {
                tracing::debug!("Okta asked for a DPoP nonce; retrying the token request with it");
                continue;
            }
            let error = if asks_nonce {
                nonce_keeps_changing(endpoint, error)
            } else {
                error
            };
            tracing::warn!(%error, "Okta refused the access token request");
            return Err(error);
        }
    }

    /// One token request, with a new client assertion and DPoP proof. The outer error is
    /// ours (signing), the inner one the exchange's.
    async fn post_token(
        &self,
    ) -> Result<Result<(StatusCode, HeaderMap, bytes::Bytes), reqwest::Error>, OktaError> {
        let nonce = self.nonce.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let proof = self
            .dpop
            .proof(&Method::POST, &htu(&self.token_url), nonce.as_deref(), None)?;
        let assertion = self.client_assertion()?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", &self.scopes)
            .append_pair("client_assertion_type", CLIENT_ASSERTION_TYPE)
            .append_pair("client_assertion", &assertion)
            .finish();
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .http
            .post(self.token_url.clone())
            .header("DPoP", proof)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await;
        Ok(match sent {
            Ok(response) => {
                let (status, headers) = (response.status(), response.headers().clone());
                response.bytes().await.map(|body| (status, headers, body))
            }
            Err(e) => Err(e),
        })
    }

    fn accept_token(&self, body: &[u8], endpoint: &str) -> Result<CachedToken, OktaError> {
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            token_type: String,
            expires_in: Option<u64>,
            scope: Option<String>,
        }
        let token: TokenResponse = serde_json::from_slice(body).map_err(|_| OktaError::InvalidResponse {
            endpoint: endpoint.to_owned(),
            message: "the token response is not the expected JSON".into(),
        })?;
        self.cache(
            token.access_token,
            &token.token_type,
            token.expires_in,
            token.scope,
            endpoint,
        )
    }

    fn cache(
        &self,
        token: String,
        token_type: &str,
        expires_in: Option<u64>,
        scope: Option<String>,
        endpoint: &str,
    ) -> Result<CachedToken, OktaError> {
        let kind = if token_type.eq_ignore_ascii_case("DPoP") {
            TokenType::Dpop
        } else if token_type.eq_ignore_ascii_case("Bearer") {
            TokenType::Bearer
        } else {
            return Err(OktaError::InvalidResponse {
                endpoint: endpoint.into(),
                message: format!("unknown token_type {token_type:?}"),
            });
        };
        let scheme = match kind {
            TokenType::Dpop => "DPoP",
            TokenType::Bearer => "Bearer",
        };
        let mut authorization =
            HeaderValue::from_str(&format!("{scheme} {token}")).map_err(|_| OktaError::InvalidResponse {
                endpoint: endpoint.into(),
                message: "the access token is not a valid header value".into(),
            })?;
        authorization.set_sensitive(true);
        let ath = B64.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            token.as_bytes(),
        ));
        // Zeroed on drop: the header value is the only copy kept.
        drop(SecretString::from(token));
        // Okta's service-app tokens live an hour.
        let lifetime = Duration::from_secs(expires_in.unwrap_or(3600));
        let margin = EXPIRY_MARGIN.min(lifetime / 10);
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            token_type = scheme,
            expires_in = lifetime.as_secs(),
            scope = scope.as_deref().unwrap_or(""),
            "Okta access token obtained"
        );
        Ok(CachedToken {
            authorization,
            kind,
            ath,
            renew_at: Instant::now() + lifetime - margin,
            generation,
        })
    }
}

fn dpop_nonce(headers: &HeaderMap) -> Option<String> {
    headers
        .get("dpop-nonce")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// An OAuth error answer, `{"error": …, "error_description": …}`; only those two fields
/// reach the error (never the request).
fn token_error(status: StatusCode, endpoint: &str, body: &[u8]) -> OktaError {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct ErrorBody {
        error: String,
        error_description: String,
        #[serde(rename = "errorCode")]
        error_code: String,
        #[serde(rename = "errorSummary")]
        error_summary: String,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let (error, description) = if !parsed.error.is_empty() {
        (parsed.error, parsed.error_description)
    } else if !parsed.error_code.is_empty() {
        (parsed.error_code, parsed.error_summary)
    } else {
        ("-".to_owned(), String::new())
    };
    OktaError::Auth {
        status: status.as_u16(),
        endpoint: endpoint.into(),
        error,
        description,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_errors_carry_okta_error_and_description() {
        let body = br#"{"error":"invalid_scope","error_description":"The following scopes are not allowed: okta.apps.read"}"#;
        let e = token_error(StatusCode::BAD_REQUEST, "/oauth2/v1/token", body);
        let text = e.to_string();
        assert!(
            text.contains("invalid_scope") && text.contains("okta.apps.read"),
            "{text}"
        );
    }
}
