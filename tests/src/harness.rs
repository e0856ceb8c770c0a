//! Glue for end-to-end tests, the demo and benchmarks: both simulators on loopback and an
//! okta-port configuration pointing at them.

use std::collections::BTreeMap;

use okta_port::config::Config;
use okta_port::retry::RetryPolicy;
use okta_port::sync::{RunOverrides, SyncError};
use okta_port::{App, Report};
use serde_json::{Value, json};

use crate::expected::{APP_BLUEPRINT, Catalog, GROUP_BLUEPRINT, USER_BLUEPRINT};
use crate::okta_sim::{OktaSim, OktaSimConfig};
use crate::orggen::Org;
use crate::port_sim::{PortSim, PortSimConfig};

pub const BLUEPRINTS: [&str; 3] = [USER_BLUEPRINT, GROUP_BLUEPRINT, APP_BLUEPRINT];

/// Both simulators and the settings that reach them.
pub struct Env {
    pub okta: OktaSim,
    pub port: PortSim,
    okta_token: String,
    port_client_id: String,
    port_client_secret: String,
}

impl Env {
    pub async fn start(org: Org, okta_config: OktaSimConfig, port_config: PortSimConfig) -> Env {
        let okta_token = okta_config.token.clone();
        let (port_client_id, port_client_secret) =
            (port_config.client_id.clone(), port_config.client_secret.clone());
        let okta = OktaSim::start(org, okta_config).await;
        let port = PortSim::start(port_config).await;
        Env {
            okta,
            port,
            okta_token,
            port_client_id,
            port_client_secret,
        }
    }

    pub async fn with_org(org: Org) -> Env {
        Env::start(org, OktaSimConfig::default(), PortSimConfig::default()).await
    }

    /// The environment variables okta-port needs to reach these simulators.
    pub fn variables(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OKTA_DOMAIN", self.okta.base_url.clone()),
            ("OKTA_API_TOKEN", self.okta_token.clone()),
            ("PORT_API_URL", self.port.base_url.clone()),
            ("PORT_CLIENT_ID", self.port_client_id.clone()),
            ("PORT_CLIENT_SECRET", self.port_client_secret.clone()),
        ]
    }

    /// okta-port's configuration for these simulators, with fast retries.
    pub fn config(&self) -> Config {
        let vars = self.variables();
        let mut config =
            Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
                .expect("simulator configuration is valid");
        config.okta.retry = RetryPolicy::fast();
        config.port.retry = RetryPolicy::fast();
        // The simulators share our clock: no skew to allow for between back-to-back runs.
        config.resync.clock_skew = std::time::Duration::ZERO;
        config
    }

    /// A fresh app (new clients, so its counters start at zero).
    pub fn app(&self) -> App {
        App::new(&self.config()).expect("clients build")
    }

    pub async fn resync(&self) -> Result<Report, SyncError> {
        self.app().resync(RunOverrides::default()).await
    }

    /// The catalog okta-port (installation `okta-port`) wrote into the simulated Port, in
    /// the oracle's shape: relation arrays sorted.
    pub fn catalog(&self) -> Catalog {
        self.catalog_of("okta-port")
    }

    pub fn catalog_of(&self, installation: &str) -> Catalog {
        let suffix = format!("/{installation}");
        let mut catalog = BTreeMap::new();
        for bp in BLUEPRINTS {
            let entities: BTreeMap<String, Value> = self
                .port
                .entities(bp)
                .into_iter()
                .filter(|e| {
                    let id = e["identifier"].as_str().unwrap_or_default();
                    self.port
                        .datasource_of(bp, id)
                        .is_some_and(|d| d.starts_with("okta-port/") && d.ends_with(&suffix))
                })
                .map(|e| {
                    (
                        e["identifier"].as_str().unwrap_or_default().to_owned(),
                        normalize(&e),
                    )
                })
                .collect();
            catalog.insert(bp.to_owned(), entities);
        }
        catalog
    }
}

/// An entity reduced to what okta-port writes, relation arrays sorted.
pub fn normalize(entity: &Value) -> Value {
    let mut relations = entity["relations"].as_object().cloned().unwrap_or_default();
    for value in relations.values_mut() {
        if let Value::Array(items) = value {
            items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        }
    }
    json!({
        "identifier": entity["identifier"],
        "title": entity["title"],
        "properties": entity["properties"],
        "relations": relations,
    })
}

/// Describes how two catalogs differ (empty when equal), for readable assertion failures.
pub fn diff(actual: &Catalog, expected: &Catalog) -> Vec<String> {
    let mut out = Vec::new();
    for bp in BLUEPRINTS {
        let (a, e) = (
            actual.get(bp).cloned().unwrap_or_default(),
            expected.get(bp).cloned().unwrap_or_default(),
        );
        for (id, want) in &e {
            match a.get(id) {
                None => out.push(format!("{bp} {id}: missing in Port")),
                Some(got) if got != want => out.push(format!("{bp} {id}: Port has {got}\n  expected {want}")),
                _ => {}
            }
        }
        for id in a.keys().filter(|id| !e.contains_key(*id)) {
            out.push(format!("{bp} {id}: in Port but not expected"));
        }
    }
    out
}

/// Asserts that the simulated Port holds exactly the expected catalog.
pub fn assert_catalog(actual: &Catalog, expected: &Catalog) {
    let d = diff(actual, expected);
    assert!(
        d.is_empty(),
        "{} differences, first ones:\n{}",
        d.len(),
        d.iter().take(8).cloned().collect::<Vec<_>>().join("\n")
    );
}
