//! Event hook provisioning: make sure the org has our hook (found by its URI), with the
//! event list okta-port handles, active and verified. Idempotent: a second run changes
//! nothing.

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::events::HANDLED_EVENT_TYPES;
use crate::okta::{self, OktaError};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(
        "the Okta token may not manage event hooks (403): grant the okta.eventHooks.manage scope, or use an admin token"
    )]
    Forbidden(#[source] OktaError),
    #[error(
        "the org already has the maximum number of event hooks (25): delete an unused one in Okta, then retry"
    )]
    LimitReached(#[source] OktaError),
    #[error("Okta could not verify the hook at {uri}: is the webhook deployed and answering? ({source})")]
    Verification { uri: String, source: OktaError },
    #[error(transparent)]
    Okta(#[from] OktaError),
}

fn classify(e: OktaError) -> HookError {
    match &e {
        OktaError::Api { status: 403, .. } => HookError::Forbidden(e),
        OktaError::Api {
            status: 400, summary, ..
        } if summary.contains("25") || summary.to_lowercase().contains("maximum") => {
            HookError::LimitReached(e)
        }
        _ => HookError::Okta(e),
    }
}

/// What `ensure_hook` did; all false means the hook was already as it should be.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HookOutcome {
    pub id: String,
    pub created: bool,
    pub events_updated: bool,
    pub activated: bool,
    pub verified: bool,
}

impl HookOutcome {
    pub fn changed(&self) -> bool {
        self.created || self.events_updated || self.activated || self.verified
    }
}

/// The hook's definition, with the secret header (write-only in Okta).
fn definition(uri: &str, header: &str, secret: &SecretString) -> Value {
    json!({
        "name": "okta-port",
        "description": "Keeps the Port catalog in step with Okta (okta-port)",
        "events": { "type": "EVENT_TYPE", "items": HANDLED_EVENT_TYPES },
        "channel": {
            "type": "HTTP",
            "version": "1.0.0",
            "config": {
                "uri": uri,
                "headers": [],
                "authScheme": { "type": "HEADER", "key": header, "value": secret.expose_secret() },
            },
        },
    })
}

/// Finds the hook whose URI is `uri`; creates it, brings its event list up to date (and
/// its secret header, when `push_secret`: Okta cannot show us the one it has), activates
/// and verifies it as needed.
pub async fn ensure_hook(
    okta: &okta::Client,
    uri: &str,
    header: &str,
    secret: &SecretString,
    push_secret: bool,
) -> Result<HookOutcome, HookError> {
    let hooks: Vec<Value> = okta.get_json("/api/v1/eventHooks").await?;
    let existing = hooks
        .into_iter()
        .find(|h| h["channel"]["config"]["uri"].as_str() == Some(uri));
    let mut outcome = HookOutcome::default();
    let hook = match existing {
        None => {
            let created = okta
                .write_json(
                    Method::POST,
                    "/api/v1/eventHooks",
                    Some(&definition(uri, header, secret)),
                )
                .await
                .map_err(classify)?;
            tracing::info!(id = created["id"].as_str(), uri, "created the Okta event hook");
            outcome.created = true;
            created
        }
        Some(hook) => {
            let mut have: Vec<&str> = hook["events"]["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            have.sort_unstable();
            let mut want: Vec<&str> = HANDLED_EVENT_TYPES.to_vec();
            want.sort_unstable();
            // Okta never shows the secret back: a rotated one is pushed only on request.
            if have != want || push_secret {
                let id = hook["id"].as_str().unwrap_or_default();
                let updated = okta
                    .write_json(
                        Method::PUT,
                        &format!("/api/v1/eventHooks/{id}"),
                        Some(&definition(uri, header, secret)),
                    )
                    .await
                    .map_err(classify)?;
                tracing::info!(id, push_secret, "updated the event hook");
                outcome.events_updated = true;
                updated
            } else {
                hook
            }
        }
    };
    outcome.id = hook["id"].as_str().unwrap_or_default().to_owned();
    let lifecycle = |action: &str| format!("/api/v1/eventHooks/{}/lifecycle/{action}", outcome.id);
    if hook["status"].as_str() != Some("ACTIVE") {
        okta.write_json(Method::POST, &lifecycle("activate"), None)
            .await
            .map_err(classify)?;
        outcome.activated = true;
    }
    if hook["verificationStatus"].as_str() != Some("VERIFIED") {
        // Okta now calls the webhook with a challenge; it must be deployed and answering.
        okta.write_json(Method::POST, &lifecycle("verify"), None)
            .await
            .map_err(|e| match classify(e) {
                HookError::Okta(source) => HookError::Verification {
                    uri: uri.to_owned(),
                    source,
                },
                other => other,
            })?;
        outcome.verified = true;
    }
    Ok(outcome)
}
