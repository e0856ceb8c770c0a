//! The webhook function's logic: answer Okta's verification challenge, authenticate each
//! delivery by its secret header (constant time, fail closed), validate it, and hand the
//! relevant events to the queue, answering 200 only once the queue has accepted them all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lambda_http::http::{HeaderName, HeaderValue, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::events::{QueuedEvent, parse_delivery};
use crate::metrics::WebhookOutcome;
use crate::queue::EventQueue;

/// Okta's body limit for us: larger deliveries are refused (413).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The longest Okta's verification challenge may be (Okta sends a short token).
pub const MAX_CHALLENGE_BYTES: usize = 1024;
/// Time the queue gets before the delivery is answered 503: Okta waits 3 s in all, and
/// the function's own start and the answer's way back need the rest.
pub const QUEUE_DEADLINE: Duration = Duration::from_millis(2_200);

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
        let secret = get("OKTA_WEBHOOK_SECRET").filter(|s| !s.is_empty());
        if secret.as_deref().is_some_and(|s| s.trim().is_empty()) {
            // HTTP trims header values: no delivery could ever match a blank secret.
            return Err(crate::config::ConfigError::Invalid {
                var: "OKTA_WEBHOOK_SECRET",
                reason: "is only white space; set the value Okta sends (or leave it unset)".into(),
            });
        }
        Ok(Self {
            secret: secret.map(SecretString::from),
            header,
        })
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
        Some(challenge) if challenge.len() > MAX_CHALLENGE_BYTES => {
            let response = refuse(StatusCode::BAD_REQUEST, "verification challenge too long");
            return (response, refused("challenge_too_long"));
        }
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
    for bad in &delivery.malformed {
        // Set aside and counted: Okta never retries a 4xx, so refusing would lose the rest.
        tracing::warn!(
            delivery = delivery.delivery_id,
            index = bad.index,
            uuid = bad.uuid,
            reason = bad.reason,
            "event set aside"
        );
    }
    let mut outcome = WebhookOutcome {
        received: delivery.total,
        ignored: delivery.total - delivery.kept.len() - delivery.malformed.len(),
        malformed: delivery.malformed.len(),
        ..WebhookOutcome::default()
    };
    let uuids: Vec<String> = delivery.kept.iter().filter_map(|e| e.uuid.clone()).collect();
    let kept = delivery.kept.len();
    let messages: Vec<String> = delivery
        .kept
        .into_iter()
        .flat_map(QueuedEvent::into_messages)
        .collect();
    if !messages.is_empty() {
        // A 5xx makes Okta deliver again, once: it must reach Okta within its 3 s.
        let failure = match tokio::time::timeout(QUEUE_DEADLINE, queue.send_all(&messages)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} ms", QUEUE_DEADLINE.as_millis())),
        };
        if let Some(error) = failure {
            tracing::error!(
                delivery = delivery.delivery_id,
                error,
                "could not queue the delivery"
            );
            outcome.refused = Some("queue_unavailable");
            return (reply(StatusCode::SERVICE_UNAVAILABLE, ""), outcome);
        }
    }
    outcome.queued = kept;
    tracing::info!(
        delivery = delivery.delivery_id,
        events = delivery.total,
        queued = kept,
        messages = messages.len(),
        ignored = outcome.ignored,
        malformed = outcome.malformed,
        uuids = ?uuids,
        "delivery accepted"
    );
    (reply(StatusCode::OK, ""), outcome)
}

/// A Function URL event (payload format 2.0) as a request, read leniently: Lambda hands
/// over whatever the client sent, and a header value no HTTP library accepts (a control
/// character) must become our 4xx, not a function error raised before our handler runs.
/// Headers that are not valid HTTP are left out (a secret header among them then fails
/// authentication); their values are never logged.
pub fn request_from_function_url(event: &Value) -> Result<Request, &'static str> {
    let method = event
        .pointer("/requestContext/http/method")
        .and_then(Value::as_str)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or("not a Function URL request (no requestContext.http.method)")?;
    let body = match event.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) if event["isBase64Encoded"].as_bool() == Some(true) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| "body is not valid base64")?
        }
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(_) => return Err("body is not a string"),
    };
    let mut request = Request::new(Body::from(body));
    *request.method_mut() = method;
    let mut skipped = 0;
    for (name, value) in event["headers"].as_object().into_iter().flatten() {
        let parsed = (
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
            value.as_str().map(HeaderValue::from_str),
        );
        match parsed {
            (Ok(name), Some(Ok(value))) => {
                request.headers_mut().append(name, value);
            }
            _ => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::info!(skipped, "left out request headers that are not valid HTTP");
    }
    Ok(request)
}

/// A response as the Function URL expects it back from the function.
pub fn function_url_response(response: Response<Body>) -> Value {
    let (parts, body) = response.into_parts();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), Value::String(v.to_str().ok()?.to_owned()))))
        .collect();
    serde_json::json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "body": String::from_utf8_lossy(body.as_ref()),
        "isBase64Encoded": false,
        // Optional for Lambda; some emulators' response types require it.
        "cookies": [],
    })
}

/// The webhook function's whole work for one Function URL event.
pub async fn handle_function_url<Q: EventQueue>(
    event: &Value,
    config: &WebhookConfig,
    queue: &Q,
) -> (Value, WebhookOutcome) {
    match request_from_function_url(event) {
        Ok(request) => {
            let (response, outcome) = handle_counted(&request, config, queue).await;
            (function_url_response(response), outcome)
        }
        Err(reason) => (
            function_url_response(refuse(StatusCode::BAD_REQUEST, reason)),
            refused("malformed"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_webhook_counts_what_each_request_did() {
        use crate::metrics::WebhookOutcome;
        use crate::queue::MemoryQueue;
        use lambda_http::{Body, http};
        use serde_json::json;

        let config =
            WebhookConfig::from_lookup(|k| (k == "OKTA_WEBHOOK_SECRET").then(|| "s3cret".into())).unwrap();
        let queue = MemoryQueue::default();
        let delivery = json!({ "eventId": "d1", "data": { "events": [
            { "uuid": "u1", "eventType": "group.user_membership.add", "target": [] },
            { "uuid": "u2", "eventType": "user.session.start", "target": [] },
            { "uuid": "u3", "eventType": "group.profile.update", "target": [] },
        ] } });
        let post = |secret: &str| {
            http::Request::builder()
                .method("POST")
                .header("authorization", secret)
                .body(Body::from(delivery.to_string()))
                .unwrap()
        };
        let (response, outcome) = handle_counted(&post("s3cret"), &config, &queue).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            outcome,
            WebhookOutcome {
                received: 3,
                ignored: 1,
                queued: 2,
                ..WebhookOutcome::default()
            }
        );
        let (response, outcome) = handle_counted(&post("wrong"), &config, &queue).await;
        assert_eq!(response.status(), 401);
        assert_eq!(outcome.refused, Some("unauthorized"));
        queue.set_failing(true);
        let (response, outcome) = handle_counted(&post("s3cret"), &config, &queue).await;
        assert_eq!(response.status(), 503);
        assert_eq!((outcome.refused, outcome.queued), (Some("queue_unavailable"), 0));
        let verify = http::Request::builder()
            .method("GET")
            .header("x-okta-verification-challenge", "c")
            .body(Body::Empty)
            .unwrap();
        let (_, outcome) = handle_counted(&verify, &config, &queue).await;
        assert!(outcome.verification && outcome.refused.is_none());
    }
}
