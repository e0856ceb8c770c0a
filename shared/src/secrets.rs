//! Secrets from AWS Secrets Manager (docs/configuration.md): when `SECRETS_ARN` is set, its secret (a
//! JSON object of string values, say `{"OKTA_API_TOKEN": "…", "PORT_CLIENT_SECRET": "…"}`)
//! is read once per cold start and merged *under* the environment: a variable set (and not
//! empty) in the environment wins over the same key in the secret.
//!
//! Values are held as `SecretString` until a caller asks for one; `Debug` shows key names
//! only, and no error quotes a value.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::OnceCell;

/// The variable naming the secret (an ARN, or a name in the function's own account).
pub const SECRETS_ARN: &str = "SECRETS_ARN";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("secret {arn} (SECRETS_ARN) was not found")]
    NotFound { arn: String },
    #[error("access to secret {arn} (SECRETS_ARN) was denied: {message}")]
    AccessDenied { arn: String, message: String },
    #[error("secret {arn} (SECRETS_ARN) is not a JSON object of strings: {reason}")]
    Malformed { arn: String, reason: String },
    #[error("secret {arn} (SECRETS_ARN): the value of {key} is a JSON {found}, not a string")]
    NotAString {
        arn: String,
        key: String,
        found: &'static str,
    },
    #[error("could not read secret {arn} (SECRETS_ARN) from AWS Secrets Manager: {message}")]
    Transport { arn: String, message: String },
}

/// The key/value pairs of one secret. `Debug` names the keys, never the values.
#[derive(Clone, Default)]
pub struct SecretValues {
    source: String,
    values: BTreeMap<String, SecretString>,
}

impl SecretValues {
    /// Parses a SecretString: a JSON object whose values are all strings. `source` (the
    /// secret's id) only serves to name the secret in errors.
    pub fn parse(source: &str, text: &str) -> Result<Self, SecretsError> {
        let malformed = |reason: String| SecretsError::Malformed {
            arn: source.to_owned(),
            reason,
        };
        // Parse to a `Value` first: serde's type errors quote the value they met, syntax
        // errors only give a position.
        let value: Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(malformed(format!("it is a JSON {}", crate::json_type(&value))));
        };
        let mut values = BTreeMap::new();
        for (key, value) in map {
            match value {
                Value::String(s) => {
                    values.insert(key, SecretString::from(s));
                }
                other => {
                    return Err(SecretsError::NotAString {
                        arn: source.to_owned(),
                        key,
                        found: crate::json_type(&other),
                    });
                }
            }
        }
        Ok(Self {
            source: source.to_owned(),
            values,
        })
    }

    /// Reads and parses the secret `secret_id` (ARN or name) with one GetSecretValue call.
    pub async fn fetch(
        client: &aws_sdk_secretsmanager::Client,
        secret_id: &str,
    ) -> Result<Self, SecretsError> {
        let output = client
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|err| classify(secret_id, &err))?;
        let Some(text) = output.secret_string() else {
            return Err(SecretsError::Malformed {
                arn: secret_id.to_owned(),
                reason: "it has no SecretString (binary secrets are not supported)".into(),
            });
        };
        let values = Self::parse(secret_id, text)?;
        tracing::info!(secret = secret_id, keys = ?values.keys().collect::<Vec<_>>(), "secret loaded");
        Ok(values)
    }

    /// The secret's id, as given to `fetch` or `parse`.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    pub fn get(&self, key: &str) -> Option<&SecretString> {
        self.values.get(key)
    }
}

impl fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretValues")
            .field("source", &self.source)
            .field(
                "values",
                &self
                    .values
                    .keys()
                    .map(|k| (k, "[REDACTED]"))
                    .collect::<BTreeMap<_, _>>(),
            )
            .finish()
    }
}

fn classify<E, R>(secret_id: &str, err: &SdkError<E, R>) -> SecretsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    let arn = secret_id.to_owned();
    if let Some(service) = err.as_service_error() {
        let message = service.message().unwrap_or_default().to_owned();
        match service.code() {
            Some("ResourceNotFoundException") => return SecretsError::NotFound { arn },
            // A missing kms:Decrypt grant shows up as a DecryptionFailure.
            Some(code @ ("AccessDeniedException" | "DecryptionFailure")) => {
                return SecretsError::AccessDenied {
                    arn,
                    message: format!("{code}: {message}"),
                };
            }
            _ => {}
        }
    }
    SecretsError::Transport {
        arn,
        message: DisplayErrorContext(err).to_string(),
    }
}

type EnvFn = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Configuration look-up: the secrets first (docs/configuration.md: when `SECRETS_ARN` is set it is the
/// source of what it holds, so an environment variable never silently beats a rotated
/// secret), then the environment (a variable set to an empty string counts as unset).
/// Cheap to clone.
#[derive(Clone)]
pub struct Lookup {
    env: Arc<EnvFn>,
    secrets: Vec<Arc<SecretValues>>,
}

impl Lookup {
    /// The process environment alone.
    pub fn process_env() -> Self {
        Self::from_fn(|name| std::env::var(name).ok())
    }

    /// `env` stands for the environment (tests pass a map).
    pub fn from_fn(env: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self {
            env: Arc::new(env),
            secrets: Vec::new(),
        }
    }

    /// This look-up with `secret` merged in (after the secrets already there).
    pub fn with_values(mut self, secret: SecretValues) -> Self {
        self.secrets.push(Arc::new(secret));
        self
    }

    /// Reads each of `SECRETS_ARN`'s secrets through `client` and merges them in; without
    /// `SECRETS_ARN`, returns the look-up as is.
    pub async fn with_secret(
        mut self,
        client: &aws_sdk_secretsmanager::Client,
    ) -> Result<Self, SecretsError> {
        for id in self.secret_ids() {
            let values = SecretValues::fetch(client, &id).await?;
            self = self.with_values(values);
        }
        Ok(self)
    }

    /// `SECRETS_ARN`, from the environment: one secret, or several separated by commas
    /// (the resync reads the credentials and the webhook's secret, each function only its
    /// own). White space around each is ignored: a value pasted with its newline must not
    /// become a "not found" split over two lines.
    pub fn secret_ids(&self) -> Vec<String> {
        self.env_value(SECRETS_ARN)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first of `SECRETS_ARN`'s secrets, if any.
    pub fn secret_id(&self) -> Option<String> {
        self.secret_ids().into_iter().next()
    }

    /// A setting: from a secret that holds it, else from the environment. An environment
    /// variable that disagrees with a secret is ignored, and said so (by name only).
    pub fn get(&self, name: &str) -> Option<String> {
        let from_secret = self
            .secrets
            .iter()
            .find_map(|s| s.get(name))
            .map(|v| v.expose_secret().to_owned());
        let from_env = self.env_value(name);
        match (from_secret, from_env) {
            (Some(secret), Some(env)) => {
                if secret != env {
                    tracing::warn!(
                        variable = name,
                        "the environment sets {name}, but SECRETS_ARN holds it: the secret's value is used"
                    );
                }
                Some(secret)
            }
            (secret, env) => secret.or(env),
        }
    }

    /// The first secret merged in, if any.
    pub fn secret(&self) -> Option<&SecretValues> {
        self.secrets.first().map(Arc::as_ref)
    }

    fn env_value(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lookup")
            .field("env", &"<environment>")
            .field("secrets", &self.secrets)
            .finish()
    }
}

/// The process environment, with `SECRETS_ARN`'s secret merged under it when that is set.
/// The secret is read once per process (per Lambda cold start) and kept; a failure is not
/// kept, so a later call tries again. The client comes from the standard AWS configuration,
/// so `AWS_ENDPOINT_URL` points it at a local Secrets Manager (moto).
pub async fn environment() -> Result<Lookup, SecretsError> {
    static LOADED: OnceCell<Lookup> = OnceCell::const_new();
    LOADED
        .get_or_try_init(|| async {
            let env = Lookup::process_env();
            if env.secret_ids().is_empty() {
                return Ok(env);
            }
            let config = crate::aws::sdk_config(crate::aws::STARTUP).await;
            env.with_secret(&aws_sdk_secretsmanager::Client::new(&config))
                .await
        })
        .await
        .cloned()
}

/// The secret settings `put-secret` copies from the environment into a secret.
pub const SECRET_VARIABLES: [&str; 7] = [
    "OKTA_API_TOKEN",
    "OKTA_CLIENT_ID",
    "OKTA_PRIVATE_KEY",
    "OKTA_KEY_ID",
    "PORT_CLIENT_ID",
    "PORT_CLIENT_SECRET",
    "OKTA_WEBHOOK_SECRET",
];

/// Sets `values` in the secret `secret_id` (a JSON object of strings), keeping its other
/// keys: one GetSecretValue, one PutSecretValue. Returns the keys it set. What the deploy
/// guide uses to fill the stack's secret without the AWS CLI or jq; no value is logged.
pub async fn store(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
    values: &[(&str, SecretString)],
) -> Result<Vec<String>, SecretsError> {
    let current = SecretValues::fetch(client, secret_id).await?;
    let mut merged: BTreeMap<String, String> = current
        .values
        .iter()
        .map(|(k, v)| (k.clone(), v.expose_secret().to_owned()))
        .collect();
    for (key, value) in values {
        merged.insert((*key).to_owned(), value.expose_secret().to_owned());
    }
    let text = SecretString::from(serde_json::to_string(&merged).expect("a map of strings serializes"));
    client
        .put_secret_value()
        .secret_id(secret_id)
        .secret_string(text.expose_secret())
        .send()
        .await
        .map_err(|err| classify(secret_id, &err))?;
    let keys: Vec<String> = values.iter().map(|(k, _)| (*k).to_owned()).collect();
    tracing::info!(secret = secret_id, ?keys, "secret updated");
    Ok(keys)
}

#[derive(Debug, thiserror::Error)]
pub enum PutSecretError {
    #[error(
        "nothing to store: set one or more of {} in the environment first",
        SECRET_VARIABLES.join(", ")
    )]
    NothingToStore,
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

/// `okta-port put-secret`: the `SECRET_VARIABLES` set in the process environment, stored
/// in `secret_id` through the standard AWS configuration.
pub async fn put_from_environment(secret_id: &str) -> Result<Vec<String>, PutSecretError> {
    let values: Vec<(&str, SecretString)> = SECRET_VARIABLES
        .into_iter()
        .filter_map(|name| {
            let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
            Some((name, SecretString::from(value)))
        })
        .collect();
    if values.is_empty() {
        return Err(PutSecretError::NothingToStore);
    }
    let config = crate::aws::sdk_config(crate::aws::GENERAL).await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    Ok(store(&client, secret_id, &values).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Lookup {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Lookup::from_fn(move |k| map.get(k).cloned())
    }

    const SECRET: &str = r#"{"OKTA_API_TOKEN": "00tok-from-secret", "PORT_CLIENT_SECRET": "pcs-from-secret",
        "OKTA_DOMAIN": "secret.okta.com"}"#;

    #[test]
    fn the_secret_is_the_source_of_what_it_holds() {
        let values = SecretValues::parse("arn:test", SECRET).unwrap();
        let lookup = env(&[
            ("OKTA_DOMAIN", "env.okta.com"),
            ("OKTA_API_TOKEN", ""),
            ("PORT_CLIENT_ID", "cid"),
        ])
        .with_values(values);
        // In both: the secret's value (a stale variable never beats a rotated secret).
        assert_eq!(lookup.get("OKTA_DOMAIN").as_deref(), Some("secret.okta.com"));
        // Empty in the environment, or absent: the secret's.
        assert_eq!(lookup.get("OKTA_API_TOKEN").as_deref(), Some("00tok-from-secret"));
        assert_eq!(
            lookup.get("PORT_CLIENT_SECRET").as_deref(),
            Some("pcs-from-secret")
        );
        // Only in the environment.
        assert_eq!(lookup.get("PORT_CLIENT_ID").as_deref(), Some("cid"));
        // Nowhere.
        assert_eq!(lookup.get("OKTA_WEBHOOK_SECRET"), None);
        // Clones share the secret.
        assert_eq!(lookup.clone().get("OKTA_API_TOKEN"), lookup.get("OKTA_API_TOKEN"));
    }

    #[test]
    fn several_secrets_each_bring_their_keys() {
        let lookup = env(&[("SECRETS_ARN", " arn:creds ,\narn:hook\n")])
            .with_values(SecretValues::parse("arn:creds", SECRET).unwrap())
            .with_values(SecretValues::parse("arn:hook", r#"{"OKTA_WEBHOOK_SECRET": "hook"}"#).unwrap());
        assert_eq!(lookup.secret_ids(), ["arn:creds", "arn:hook"]);
        assert_eq!(lookup.get("OKTA_API_TOKEN").as_deref(), Some("00tok-from-secret"));
        assert_eq!(lookup.get("OKTA_WEBHOOK_SECRET").as_deref(), Some("hook"));
    }

    #[test]
    fn config_reads_through_the_lookup() {
        let lookup = env(&[("OKTA_DOMAIN", "dev-1.okta.com"), ("PORT_CLIENT_ID", "cid")])
            .with_values(SecretValues::parse("arn:test", SECRET).unwrap());
        let config = crate::Config::from_lookup(|k| lookup.get(k)).unwrap();
        assert_eq!(config.okta.base_url.as_str(), "https://secret.okta.com/");
        assert_eq!(config.okta.api_token.expose_secret(), "00tok-from-secret");
        assert_eq!(config.port.client_secret.expose_secret(), "pcs-from-secret");
        // A key in neither place is still named.
        let lookup = env(&[("OKTA_DOMAIN", "dev-1.okta.com")])
            .with_values(SecretValues::parse("arn:test", SECRET).unwrap());
        let err = crate::Config::from_lookup(|k| lookup.get(k)).unwrap_err();
        assert_eq!(err, crate::config::ConfigError::Missing("PORT_CLIENT_ID"));
    }

    #[test]
    fn debug_never_shows_values() {
        let lookup =
            env(&[("SECRETS_ARN", "arn:test")]).with_values(SecretValues::parse("arn:test", SECRET).unwrap());
        for debug in [
            format!("{lookup:?}"),
            format!("{lookup:#?}"),
            format!("{:?}", lookup.secret()),
        ] {
            assert!(
                debug.contains("OKTA_API_TOKEN") && debug.contains("[REDACTED]"),
                "{debug}"
            );
            assert!(
                !debug.contains("from-secret") && !debug.contains("secret.okta.com"),
                "{debug}"
            );
        }
    }

    #[test]
    fn malformed_secrets_name_the_key_not_the_value() {
        let err = SecretValues::parse("arn:s", r#"{"A": "ok", "PORT_CLIENT_SECRET": 12345678}"#).unwrap_err();
        assert_eq!(
            err,
            SecretsError::NotAString {
                arn: "arn:s".into(),
                key: "PORT_CLIENT_SECRET".into(),
                found: "number"
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("PORT_CLIENT_SECRET") && text.contains("arn:s"),
            "{text}"
        );
        assert!(!text.contains("12345678"), "{text}");

        // Not an object: the type, not the value.
        let err = SecretValues::parse("arn:s", r#""hunter2-plain""#).unwrap_err();
        assert!(matches!(err, SecretsError::Malformed { .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        // Not JSON at all: a position, not the text.
        let err = SecretValues::parse("arn:s", "OKTA_API_TOKEN=hunter2").unwrap_err();
        assert!(matches!(err, SecretsError::Malformed { .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = SecretValues::parse("arn:s", r#"{"K": {"nested": "hunter2"}}"#).unwrap_err();
        assert!(err.to_string().contains("K") && !err.to_string().contains("hunter2"));
    }

    #[test]
    fn without_secrets_arn_the_environment_is_all() {
        let lookup = env(&[("OKTA_DOMAIN", "d")]);
        assert_eq!(lookup.secret_id(), None);
        assert!(lookup.secret().is_none());
        assert_eq!(lookup.get("OKTA_DOMAIN").as_deref(), Some("d"));
    }
}
