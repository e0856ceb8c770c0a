//! The webhook function's logic: answer Okta's verification challenge, authenticate each
//! delivery by its secret header (constant time, fail closed), validate it, and hand the
//! relevant events to the queue, answering 200 only once the queue has accepted them all.

use std::sync::atomic::{AtomicBool, Ordering};

use lambda_http::http::{HeaderName, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::events::parse_delivery;
use crate::metrics::WebhookOutcome;
use crate::queue::EventQueue;

/// Okta's body limit for us: larger deliveries are refused (413).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
pub struct WebhookConfig {
    /// The value Okta sends in `header`; `None` refuses every delivery.
    pub secret: Option<SecretString>,
    pub header: HeaderName,
}

impl WebhookConfig {
    /// `OKTA_WEBHOOK_SECRET` and `OKTA_WEBHOOK_HEADER` (default `Authorization`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, crate::config::ConfigError> {
        let header = get("OKTA_WEBHOOK_HEADER")
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| "authorization".into());
        let header = HeaderName::try_from(header.trim().to_ascii_lowercase()).map_err(|e| {
            crate::config::ConfigError::Invalid {
                var: "OKTA_WEBHOOK_HEADER",
                reason: e.to_string(),
            }
        })?;
        let secret = get("OKTA_WEBHOOK_SECRET")
            .filter(|s| !s.is_empty())
            .map(SecretString::from);
        Ok(Self { secret, header })
    }
}

static MISSING_SECRET_LOGGED: AtomicBool = AtomicBool::new(false);

fn reply(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
}

fn refuse(status: StatusCode, reason: &str) -> Response<Body> {
    tracing::warn!(status = status.as_u16(), reason, "delivery refused");
    reply(status, serde_json::json!({ "error": reason }).to_string())
}

/// Handles one request to the webhook's Function URL.
pub async fn handle<Q: EventQueue>(request: &Request, config: &WebhookConfig, queue: &Q) -> Response<Body> {
    handle_counted(request, config, queue).await.0
}

/// `handle`, also returning what the request did, for `metrics::webhook`.
pub async fn handle_counted<Q: EventQueue>(
    request: &Request,
    config: &WebhookConfig,
    queue: &Q,
) -> (Response<Body>, WebhookOutcome) {
    match *request.method() {
        Method::GET => verification(request),
        Method::POST => delivery(request, config, queue).await,
        _ => (
            refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET (verification) and POST (deliveries)",
            ),
            refused("method"),
        ),
    }
}

fn refused(reason: &'static str) -> WebhookOutcome {
    WebhookOutcome {
        refused: Some(reason),
        ..WebhookOutcome::default()
    }
}

/// Okta's one-time verification: echo the challenge header.
fn verification(request: &Request) -> (Response<Body>, WebhookOutcome) {
    let outcome = WebhookOutcome {
        verification: true,
        ..WebhookOutcome::default()
    };
    let response = match request
        .headers()
        .get("x-okta-verification-challenge")
        .and_then(|v| v.to_str().ok())
    {
        Some(challenge) => {
            tracing::info!("answered Okta's verification challenge");
            let body = serde_json::json!({ "verification": challenge }).to_string();
            let mut response = reply(StatusCode::OK, body);
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().expect("static"));
            response
        }
        None => {
            let response = refuse(
                StatusCode::BAD_REQUEST,
                "GET without X-Okta-Verification-Challenge",
            );
            return (response, refused("no_challenge"));
        }
    };
    (response, outcome)
}

fn authenticated(request: &Request, config: &WebhookConfig) -> bool {
    let Some(secret) = &config.secret else {
        if !MISSING_SECRET_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::error!("OKTA_WEBHOOK_SECRET is not configured: every delivery is refused");
        }
        return false;
    };
    let presented = request
        .headers()
        .get(&config.header)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    bool::from(presented.ct_eq(secret.expose_secret().as_bytes()))
}

async fn delivery<Q: EventQueue>(
    request: &Request,
    config: &WebhookConfig,
    queue: &Q,
) -> (Response<Body>, WebhookOutcome) {
    if !authenticated(request, config) {
        let response = refuse(StatusCode::UNAUTHORIZED, "missing or wrong secret header");
        return (response, refused("unauthorized"));
    }
    let body: &[u8] = request.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        let response = refuse(StatusCode::PAYLOAD_TOO_LARGE, "delivery over 1 MiB");
        return (response, refused("too_large"));
    }
    let delivery = match parse_delivery(body) {
        Ok(d) => d,
        Err(e) => {
            return (
                refuse(StatusCode::BAD_REQUEST, &e.to_string()),
                refused("invalid"),
            );
        }
    };
    let mut outcome = WebhookOutcome {
        received: delivery.total,
        ignored: delivery.total - delivery.kept.len(),
        ..WebhookOutcome::default()
    };
    let messages: Vec<String> = delivery
        .kept
        .iter()
        .map(|e| serde_json::to_string(e).expect("queued events serialize"))
        .collect();
    if !messages.is_empty()
        && let Err(e) = queue.send_all(&messages).await
    {
        // A 5xx makes Okta deliver again.
        tracing::error!(delivery = delivery.delivery_id, error = %e, "could not queue the delivery");
        outcome.refused = Some("queue_unavailable");
        return (reply(StatusCode::SERVICE_UNAVAILABLE, ""), outcome);
    }
    outcome.queued = messages.len();
    tracing::info!(
        delivery = delivery.delivery_id,
        events = delivery.total,
        queued = messages.len(),
        ignored = delivery.total - messages.len(),
        uuids = ?delivery.kept.iter().filter_map(|e| e.uuid.as_deref()).collect::<Vec<_>>(),
        "delivery accepted"
    );
    (reply(StatusCode::OK, ""), outcome)
}
