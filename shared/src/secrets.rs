//! Secrets from AWS Secrets Manager (design §6): when `SECRETS_ARN` is set, its secret (a
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
            return Err(malformed(format!("it is a JSON {}", json_type(&value))));
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
                        found: json_type(&other),
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

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
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

/// Configuration look-up: the environment first (a variable set to an empty string counts
/// as unset), then the secret. Cheap to clone.
#[derive(Clone)]
pub struct Lookup {
    env: Arc<EnvFn>,
    secret: Option<Arc<SecretValues>>,
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
            secret: None,
        }
    }

    /// This look-up with `secret` merged under it.
    pub fn with_values(mut self, secret: SecretValues) -> Self {
        self.secret = Some(Arc::new(secret));
        self
    }

    /// Reads `SECRETS_ARN`'s secret through `client` and merges it under this look-up;
    /// without `SECRETS_ARN`, returns the look-up as is.
    pub async fn with_secret(self, client: &aws_sdk_secretsmanager::Client) -> Result<Self, SecretsError> {
        match self.secret_id() {
            None => Ok(self),
            Some(id) => {
                let values = SecretValues::fetch(client, &id).await?;
                Ok(self.with_values(values))
            }
        }
    }

    /// `SECRETS_ARN`, from the environment.
    pub fn secret_id(&self) -> Option<String> {
        // A value pasted with its newline must not become a "not found" split over two lines.
        self.env_value(SECRETS_ARN)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A setting: from the environment if set there, else from the secret.
    pub fn get(&self, name: &str) -> Option<String> {
        self.env_value(name).or_else(|| {
            self.secret
                .as_ref()?
                .get(name)
                .map(|v| v.expose_secret().to_owned())
        })
    }

    /// The secret merged in, if any.
    pub fn secret(&self) -> Option<&SecretValues> {
        self.secret.as_deref()
    }

    fn env_value(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lookup")
            .field("env", &"<environment>")
            .field("secret", &self.secret)
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
            if env.secret_id().is_none() {
                return Ok(env);
            }
            let config = crate::aws::sdk_config(crate::aws::STARTUP).await;
            env.with_secret(&aws_sdk_secretsmanager::Client::new(&config))
                .await
        })
        .await
        .cloned()
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
    fn environment_wins_over_the_secret() {
        let values = SecretValues::parse("arn:test", SECRET).unwrap();
        let lookup = env(&[
            ("OKTA_DOMAIN", "env.okta.com"),
            ("OKTA_API_TOKEN", ""),
            ("PORT_CLIENT_ID", "cid"),
        ])
        .with_values(values);
        // Set in the environment: the environment's value.
        assert_eq!(lookup.get("OKTA_DOMAIN").as_deref(), Some("env.okta.com"));
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
    fn config_reads_through_the_lookup() {
        let lookup = env(&[("OKTA_DOMAIN", "dev-1.okta.com"), ("PORT_CLIENT_ID", "cid")])
            .with_values(SecretValues::parse("arn:test", SECRET).unwrap());
        let config = crate::Config::from_lookup(|k| lookup.get(k)).unwrap();
        assert_eq!(config.okta.base_url.as_str(), "https://dev-1.okta.com/");
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
