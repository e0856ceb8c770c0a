//! Configuration from environment variables (docs/configuration.md). The CLI and every function read
//! the same variables; secrets are held as `SecretString` so they never reach a log line.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::retry::RetryPolicy;

/// Default Port API (EU region).
pub const DEFAULT_PORT_API_URL: &str = "https://api.port.io";
/// Default installation id, the last segment of our User-Agent and so of `$datasource`.
pub const DEFAULT_INSTALLATION_ID: &str = "okta-port";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("missing configuration: set the environment variable {0}")]
    Missing(&'static str),
    /// Missing, with what else the user can do about it.
    #[error("missing configuration: set the environment variable {var} ({hint})")]
    MissingFor { var: &'static str, hint: &'static str },
    #[error("invalid configuration in {var}: {reason}")]
    Invalid { var: &'static str, reason: String },
    /// Neither or both of the two Okta credential kinds.
    #[error(
        "Okta credentials: {0}. Set either OKTA_API_TOKEN (an SSWS API token) or OKTA_CLIENT_ID, \
         OKTA_PRIVATE_KEY and OKTA_KEY_ID (an OAuth 2.0 service app), not both"
    )]
    OktaCredentials(&'static str),
    /// Several of the above, all reported at once.
    #[error("{} configuration problems:{}", .0.len(), list_problems(.0))]
    Several(Vec<ConfigError>),
}

fn list_problems(problems: &[ConfigError]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

/// Scopes a service app asks for by default (`OKTA_SCOPES` overrides them).
pub const DEFAULT_OKTA_SCOPES: [&str; 3] = ["okta.users.read", "okta.groups.read", "okta.apps.read"];
/// Added to the default scopes when `WEBHOOK_URL` is set (the hook is provisioned then).
pub const HOOK_SCOPE: &str = "okta.eventHooks.manage";
/// Added by default when `STATE_URL` is set: the System Log catch-up reads the log.
pub const LOGS_SCOPE: &str = "okta.logs.read";

/// An Okta OAuth 2.0 service app (client credentials with `private_key_jwt`).
#[derive(Debug, Clone)]
pub struct ServiceAppConfig {
    /// `OKTA_CLIENT_ID`
    pub client_id: String,
    /// `OKTA_PRIVATE_KEY`: PEM or private JWK (JSON).
    pub private_key: SecretString,
    /// `OKTA_KEY_ID`: the `kid` of the public key registered with the app.
    pub key_id: String,
    /// `OKTA_SCOPES`, space-separated.
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct OktaConfig {
    /// Origin of the org, e.g. `https://dev-123456.okta.com` (no trailing slash).
    pub base_url: Url,
    /// `OKTA_API_TOKEN`, the SSWS token; empty when `service_app` is set.
    pub api_token: SecretString,
    /// The service app, when configured instead of an API token: `okta::OktaAuth` then
    /// authenticates with OAuth 2.0 tokens.
    pub service_app: Option<ServiceAppConfig>,
    /// Requests in flight at once, well under Okta's org-wide 75.
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct PortConfig {
    pub api_url: Url,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Identifies this deployment in `$datasource`: `okta-port/<version>/<installation>`.
    pub installation_id: String,
    /// Concurrent bulk requests.
    pub max_concurrency: usize,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResyncOptions {
    /// Largest share (0..=1) of a blueprint's own entities one resync may delete.
    pub deletion_threshold: f64,
    /// Lets a resync delete past the threshold (an explicit override).
    pub allow_mass_deletion: bool,
    /// Compute and report the plan without writing anything.
    pub dry_run: bool,
    /// A resync checkpoint older than this (from when that resync started) is discarded.
    pub checkpoint_max_age: Duration,
}

impl Default for ResyncOptions {
    fn default() -> Self {
        Self {
            deletion_threshold: 0.5,
            allow_mass_deletion: false,
            dry_run: false,
            checkpoint_max_age: Duration::from_secs(12 * 3600),
        }
    }
}

/// The event hook okta-port provisions in Okta (optional: only `ensure-hook` and the
/// resync function when `WEBHOOK_URL` is set use it).
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// The webhook's public URL (its Function URL).
    pub url: Option<String>,
    /// `OKTA_WEBHOOK_SECRET`: what Okta sends in `header`.
    pub secret: Option<SecretString>,
    pub header: String,
}

impl HookConfig {
    /// `WEBHOOK_URL`, `OKTA_WEBHOOK_SECRET`, `OKTA_WEBHOOK_HEADER`: all optional here;
    /// `require` says what registering the hook lacks.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        HookConfig {
            url: var("WEBHOOK_URL"),
            secret: get("OKTA_WEBHOOK_SECRET")
                .filter(|s| !s.is_empty())
                .map(SecretString::from),
            header: var("OKTA_WEBHOOK_HEADER").unwrap_or_else(|| "Authorization".into()),
        }
    }

    /// The URL (`url` wins over `WEBHOOK_URL`) and the secret the hook is registered with;
    /// both are named when both are missing.
    pub fn require<'a>(&'a self, url: Option<&'a str>) -> Result<(&'a str, &'a SecretString), ConfigError> {
        let mut problems = Problems::default();
        let url = problems.check(url.or(self.url.as_deref()).ok_or(ConfigError::MissingFor {
            var: "WEBHOOK_URL",
            hint: "or pass --url with the stack's WebhookUrl output",
        }));
        let secret = problems.check(self.secret.as_ref().ok_or(ConfigError::MissingFor {
            var: "OKTA_WEBHOOK_SECRET",
            hint: "the value Okta sends in the hook's header; the stack's webhook secret holds it",
        }));
        problems.into_result()?;
        Ok((url.expect("checked"), secret.expect("checked")))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub okta: OktaConfig,
    pub port: PortConfig,
    pub resync: ResyncOptions,
    pub hook: HookConfig,
    /// The mapping configuration: `PORT_APP_CONFIG_FILE` (a path) or `PORT_APP_CONFIG`
    /// (inline YAML), else the built-in mapping. Compiled when the `App` is built.
    pub mapping: crate::mapping::config::ConfigSource,
    /// `STATE_URL`: `file:///path` or `s3://bucket/prefix` (see `state`); the CLI has a
    /// default, the functions none.
    pub state_url: Option<String>,
    /// `EVENTS_QUEUE_URL`: where the scheduled catch-up queues what it finds.
    pub events_queue_url: Option<String>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `get`, so tests need not touch the process environment.
    /// Every missing or invalid variable is named in one error, not one per run.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut problems = Problems::default();
        let okta = okta_config(&var, &mut problems);
        let port = port_config(&var, &mut problems);
        let resync = resync_options(&var, &mut problems);
        problems.into_result()?;
        let (Some(okta), Some(port), Some(resync)) = (okta, port, resync) else {
            unreachable!("each part is Some when no problem was recorded")
        };
        Ok(Self {
            okta,
            port,
            resync,
            hook: HookConfig::from_lookup(&get),
            mapping: crate::mapping::config::ConfigSource::from_lookup(&get),
            state_url: var("STATE_URL"),
            events_queue_url: var("EVENTS_QUEUE_URL"),
        })
    }
}

/// A variable's trimmed, non-empty value.
type Var<'a> = &'a dyn Fn(&'static str) -> Option<String>;

/// `OKTA_*`: the org, its credentials, the requests in flight. `None` when a problem
/// was recorded.
fn okta_config(var: Var<'_>, problems: &mut Problems) -> Option<OktaConfig> {
    let base_url = problems.check(
        var("OKTA_DOMAIN")
            .ok_or(ConfigError::Missing("OKTA_DOMAIN"))
            .and_then(|d| okta_base_url(&d)),
    );
    let credentials = problems.check(okta_credentials(var));
    let max_in_flight = problems.check(
        parse_or(var("OKTA_MAX_IN_FLIGHT"), "OKTA_MAX_IN_FLIGHT", 8usize).and_then(|n| {
            if (1..=50).contains(&n) {
                Ok(n)
            } else {
                Err(ConfigError::Invalid {
                    var: "OKTA_MAX_IN_FLIGHT",
                    reason: "must be between 1 and 50 (Okta allows 75 in flight for the whole org)".into(),
                })
            }
        }),
    );
    let (api_token, service_app) = credentials?;
    Some(OktaConfig {
        base_url: base_url?,
        api_token,
        service_app,
        max_in_flight: max_in_flight?,
        retry: RetryPolicy::default(),
        timeout: Duration::from_secs(30),
    })
}

/// `PORT_*` and `INSTALLATION_ID`. `None` when a problem was recorded.
fn port_config(var: Var<'_>, problems: &mut Problems) -> Option<PortConfig> {
    let required = |name: &'static str| var(name).ok_or(ConfigError::Missing(name));
    let installation_id = var("INSTALLATION_ID").unwrap_or_else(|| DEFAULT_INSTALLATION_ID.into());
    let valid_id = problems.check(validate_installation_id(&installation_id));
    let api_url = var("PORT_API_URL").unwrap_or_else(|| DEFAULT_PORT_API_URL.into());
    let api_url = problems.check(parse_url(&api_url, "PORT_API_URL"));
    let client_id = problems.check(required("PORT_CLIENT_ID"));
    let client_secret = problems.check(required("PORT_CLIENT_SECRET"));
    let max_concurrency = problems.check(parse_or(
        var("PORT_MAX_CONCURRENCY"),
        "PORT_MAX_CONCURRENCY",
        5usize,
    ));
    valid_id?;
    Some(PortConfig {
        api_url: api_url?,
        client_id: client_id?,
        client_secret: SecretString::from(client_secret?),
        installation_id,
        max_concurrency: max_concurrency?.max(1),
        retry: RetryPolicy::default(),
        timeout: Duration::from_secs(60),
    })
}

/// `DELETION_THRESHOLD` and `ALLOW_MASS_DELETION`. `None` when a problem was recorded.
fn resync_options(var: Var<'_>, problems: &mut Problems) -> Option<ResyncOptions> {
    let deletion_threshold = problems.check(
        parse_or(var("DELETION_THRESHOLD"), "DELETION_THRESHOLD", 0.5f64).and_then(|share| {
            if (0.0..=1.0).contains(&share) {
                Ok(share)
            } else {
                Err(ConfigError::Invalid {
                    var: "DELETION_THRESHOLD",
                    reason: "must be a share between 0 and 1".into(),
                })
            }
        }),
    );
    let allow_mass_deletion = problems.check(parse_bool(var("ALLOW_MASS_DELETION"), "ALLOW_MASS_DELETION"));
    let max_age = problems.check(
        parse_or(
            var("RESYNC_CHECKPOINT_MAX_AGE"),
            "RESYNC_CHECKPOINT_MAX_AGE",
            43_200u64,
        )
        .and_then(|s| {
            if s >= 60 {
                Ok(Duration::from_secs(s))
            } else {
                Err(ConfigError::Invalid {
                    var: "RESYNC_CHECKPOINT_MAX_AGE",
                    reason: "must be a number of seconds, at least 60".into(),
                })
            }
        }),
    );
    Some(ResyncOptions {
        deletion_threshold: deletion_threshold?,
        allow_mass_deletion: allow_mass_deletion?,
        checkpoint_max_age: max_age?,
        ..ResyncOptions::default()
    })
}

/// The configuration problems found so far: all of them are reported together.
#[derive(Default)]
pub struct Problems(Vec<ConfigError>);

impl Problems {
    /// The value, or `None` with the problem recorded.
    pub fn check<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(ConfigError::Several(more)) => {
                self.0.extend(more);
                None
            }
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    /// `Ok` when nothing was recorded; one problem as itself, several as `Several`.
    pub fn into_result(mut self) -> Result<(), ConfigError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(ConfigError::Several(self.0)),
        }
    }
}

/// The SSWS token or the service app: exactly one of them.
fn okta_credentials(var: Var<'_>) -> Result<(SecretString, Option<ServiceAppConfig>), ConfigError> {
    const APP_VARS: [&str; 3] = ["OKTA_CLIENT_ID", "OKTA_PRIVATE_KEY", "OKTA_KEY_ID"];
    let token = var("OKTA_API_TOKEN");
    let app_set = APP_VARS.iter().any(|name| var(name).is_some());
    match (token, app_set) {
        (Some(_), true) => Err(ConfigError::OktaCredentials("both kinds are set")),
        (None, false) => Err(ConfigError::OktaCredentials("none is set")),
        (Some(token), false) => Ok((SecretString::from(token), None)),
        (None, true) => service_app(var).map(|app| (SecretString::default(), Some(app))),
    }
}

/// `OKTA_CLIENT_ID`, `OKTA_PRIVATE_KEY`, `OKTA_KEY_ID` and `OKTA_SCOPES`, all checked.
fn service_app(var: &dyn Fn(&'static str) -> Option<String>) -> Result<ServiceAppConfig, ConfigError> {
    let mut problems = Problems::default();
    let required = |name: &'static str| var(name).ok_or(ConfigError::Missing(name));
    let client_id = problems.check(required("OKTA_CLIENT_ID"));
    let key_id = problems.check(required("OKTA_KEY_ID"));
    let private_key = problems.check(required("OKTA_PRIVATE_KEY").and_then(|pem| {
        crate::keys::ClientKey::parse(&pem).map_err(|reason| ConfigError::Invalid {
            var: "OKTA_PRIVATE_KEY",
            reason,
        })?;
        Ok(SecretString::from(pem))
    }));
    let scopes: Vec<String> = match var("OKTA_SCOPES") {
        Some(list) => list
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        None => {
            let mut scopes: Vec<String> = DEFAULT_OKTA_SCOPES.iter().map(|s| (*s).to_owned()).collect();
            if var("WEBHOOK_URL").is_some() {
                scopes.push(HOOK_SCOPE.to_owned());
            }
            if var("STATE_URL").is_some() {
                scopes.push(LOGS_SCOPE.to_owned());
            }
            scopes
        }
    };
    if scopes.is_empty() {
        problems.check::<()>(Err(ConfigError::Invalid {
            var: "OKTA_SCOPES",
            reason: "names no scope".into(),
        }));
    }
    problems.into_result()?;
    match (client_id, private_key, key_id) {
        (Some(client_id), Some(private_key), Some(key_id)) => Ok(ServiceAppConfig {
            client_id,
            private_key,
            key_id,
            scopes,
        }),
        _ => unreachable!("no problem was recorded"),
    }
}

/// `OKTA_DOMAIN` is a bare domain (`https://` implied) or a full URL (simulators, proxies).
pub fn okta_base_url(domain: &str) -> Result<Url, ConfigError> {
    let with_scheme = if domain.contains("://") {
        domain.to_owned()
    } else {
        format!("https://{domain}")
    };
    let invalid = |reason: String| ConfigError::Invalid {
        var: "OKTA_DOMAIN",
        reason,
    };
    // The token goes to this origin on every call: nothing in it may redirect or leak it.
    if with_scheme.contains('@') {
        return Err(invalid(
            "must not carry user information (`user@host`): give the org's host only".into(),
        ));
    }
    let url = parse_url(&with_scheme, "OKTA_DOMAIN")?;
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!(
            "must be the org's host (e.g. dev-123456.okta.com), without a path, query or fragment; got {domain:?}"
        )));
    }
    if url.scheme() != "https" && !is_loopback(&url) {
        return Err(invalid(format!(
            "must use https: the API token would cross the network in clear text (plain http is \
             accepted for loopback hosts only); got {domain:?}"
        )));
    }
    Ok(url)
}

/// `localhost`, 127.0.0.0/8 or ::1: a simulator or a local proxy on this machine.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn parse_url(raw: &str, var: &'static str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.trim_end_matches('/')).map_err(|e| ConfigError::Invalid {
        var,
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::Invalid {
            var,
            reason: format!("expected an http(s) URL or a domain, got {raw:?}"),
        });
    }
    Ok(url)
}

fn validate_installation_id(id: &str) -> Result<(), ConfigError> {
    // It ends our User-Agent, which we match with endsWith: a slash would break that match.
    // It also goes into an HTTP header: printable ASCII only.
    if id.contains('/') || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::Invalid {
            var: "INSTALLATION_ID",
            reason: "must be printable ASCII without '/' or white space (it ends the User-Agent)".into(),
        });
    }
    Ok(())
}

fn parse_or<T: std::str::FromStr>(
    raw: Option<String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    raw.map_or(Ok(default), |v| {
        v.parse().map_err(|e: T::Err| ConfigError::Invalid {
            var,
            reason: e.to_string(),
        })
    })
}

fn parse_bool(raw: Option<String>, var: &'static str) -> Result<bool, ConfigError> {
    match raw.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            var,
            reason: format!("expected true or false, got {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests;
