//! Okta credentials: where each Management API request gets its `Authorization` (and
//! `DPoP`) header from.
//!
//! - [`OktaAuth::Ssws`]: the API token, `Authorization: SSWS <token>`.
//! - [`OktaAuth::ServiceApp`]: an OAuth 2.0 service app. Access tokens come from the org
//!   authorization server (`POST {org}/oauth2/v1/token`) by client credentials with
//!   `private_key_jwt` client authentication (a client assertion signed RS256 or ES256 with
//!   the app's key). Every token request carries a DPoP proof (RFC 9449) made with a P-256
//!   key generated for this process; Okta's `use_dpop_nonce` answer is met once by
//!   rebuilding the proof with the nonce it sends. A `token_type: "DPoP"` token is sent as
//!   `Authorization: DPoP <token>` with a fresh proof per call (`htm`, `htu`, `iat`, `jti`,
//!   `ath`); a `Bearer` token (an app without DPoP) as plain `Authorization: Bearer`.
//!
//! Tokens are cached until shortly before `expires_in`. One token request runs at a time;
//! callers arriving meanwhile wait for it and share its token. After a 401 the caller
//! invalidates the token it used ([`OktaAuth::invalidate`]); only the first invalidation of
//! a given token takes effect, so a burst of 401s costs one token request.
//!
//! Never logged or put in an error: the private key, the assertion, the access token.
//! Okta's `error` and `error_description` are.
//!
//! `htu` of a resource proof is the request URL without its query string and fragment, as
//! RFC 9449 §4.3 has the server compare it; Okta does not document otherwise.

use std::fmt;

use reqwest::Method;
use reqwest::header::HeaderValue;
use secrecy::ExposeSecret;
use url::Url;

mod dpop;
mod service_app;

pub use service_app::{MAX_TOKEN_ATTEMPTS, ServiceApp};

use super::OktaError;
use crate::config::OktaConfig;

/// The headers one API request carries, and the token generation they came from (for
/// [`OktaAuth::invalidate`]).
pub struct RequestAuth {
    pub authorization: HeaderValue,
    pub dpop: Option<HeaderValue>,
    pub generation: u64,
}

/// The credential provider of the Okta client.
pub enum OktaAuth {
    Ssws(HeaderValue),
    ServiceApp(Box<ServiceApp>),
}

impl fmt::Debug for OktaAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OktaAuth::Ssws(_) => f.write_str("OktaAuth::Ssws([REDACTED])"),
            OktaAuth::ServiceApp(app) => app.fmt(f),
        }
    }
}

impl OktaAuth {
    /// The provider the configuration chose. `http` serves the token requests.
    pub fn from_config(config: &OktaConfig, http: reqwest::Client) -> Result<Self, OktaError> {
        match &config.service_app {
            Some(app) => {
                let token_url = config
                    .base_url
                    .join("/oauth2/v1/token")
                    .map_err(|e| OktaError::Credentials(format!("token URL: {e}")))?;
                Ok(OktaAuth::ServiceApp(Box::new(ServiceApp::new(
                    app,
                    token_url,
                    http,
                    config.retry.clone(),
                )?)))
            }
            None => {
                let mut value = HeaderValue::from_str(&format!("SSWS {}", config.api_token.expose_secret()))
                    .map_err(|_| {
                        OktaError::Credentials("OKTA_API_TOKEN is not a valid header value".into())
                    })?;
                value.set_sensitive(true);
                Ok(OktaAuth::Ssws(value))
            }
        }
    }

    /// Whether a 401 may be cured by a new token (SSWS tokens do not change).
    pub fn refreshable(&self) -> bool {
        matches!(self, OktaAuth::ServiceApp(_))
    }

    /// The headers for one request to `url`.
    pub async fn authorize(&self, method: &Method, url: &Url) -> Result<RequestAuth, OktaError> {
        match self {
            OktaAuth::Ssws(value) => Ok(RequestAuth {
                authorization: value.clone(),
                dpop: None,
                generation: 0,
            }),
            OktaAuth::ServiceApp(app) => app.authorize(method, url).await,
        }
    }

    /// The token of `generation` was refused (401): drop it so the next request gets a new
    /// one, unless another caller already did.
    pub async fn invalidate(&self, generation: u64) {
        if let OktaAuth::ServiceApp(app) = self {
            app.invalidate(generation).await;
        }
    }

    /// Whether the token of `generation` was refused, or a newer one obtained since.
    pub fn is_stale(&self, generation: u64) -> bool {
        match self {
            OktaAuth::Ssws(_) => false,
            OktaAuth::ServiceApp(app) => app.is_stale(generation),
        }
    }

    /// Token requests sent so far (each attempt counts, nonce retries included).
    pub fn token_requests(&self) -> u64 {
        match self {
            OktaAuth::Ssws(_) => 0,
            OktaAuth::ServiceApp(app) => app.token_requests(),
        }
    }
}
