//! The mapping configuration: Ocean's `port-app-config.yml` format (port-api.md §10), read
//! from `PORT_APP_CONFIG_FILE` or `PORT_APP_CONFIG`, or the built-in default.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The built-in configuration, shipped in the repository: docs/mapping.md's entities exactly.
pub const DEFAULT_CONFIG: &str = include_str!("../../resources/port-app-config.yml");

/// Why a configuration was refused (before anything is written).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum MappingConfigError {
    #[error("{origin}: cannot read the mapping configuration: {message}")]
    Read { origin: String, message: String },
    #[error("{origin}: not a valid port-app-config: {message}")]
    Yaml { origin: String, message: String },
    #[error(
        "{origin}: resources[{index}].kind: unknown kind {kind:?} (expected okta-user, okta-group or okta-application)"
    )]
    UnknownKind {
        origin: String,
        index: usize,
        kind: String,
    },
    #[error("{origin}: resources[{index}].{field}: {message}")]
    Field {
        origin: String,
        index: usize,
        field: String,
        message: String,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// Where the configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The built-in default (`shared/resources/port-app-config.yml`).
    Default,
    /// `PORT_APP_CONFIG_FILE`: a path.
    File(String),
    /// `PORT_APP_CONFIG`: the YAML itself.
    Inline(String),
}

impl ConfigSource {
    /// `PORT_APP_CONFIG_FILE` wins over `PORT_APP_CONFIG`; neither means the default.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        if let Some(path) = var("PORT_APP_CONFIG_FILE") {
            ConfigSource::File(path.trim().to_owned())
        } else if let Some(text) = var("PORT_APP_CONFIG") {
            ConfigSource::Inline(text)
        } else {
            ConfigSource::Default
        }
    }

    /// How errors name this source.
    pub fn origin(&self) -> String {
        match self {
            ConfigSource::Default => "built-in port-app-config.yml".into(),
            ConfigSource::File(path) => format!("PORT_APP_CONFIG_FILE ({path})"),
            ConfigSource::Inline(_) => "PORT_APP_CONFIG".into(),
        }
    }

    /// The YAML text.
    pub fn text(&self) -> Result<String, MappingConfigError> {
        match self {
            ConfigSource::Default => Ok(DEFAULT_CONFIG.to_owned()),
            ConfigSource::Inline(text) => Ok(text.clone()),
            ConfigSource::File(path) => std::fs::read_to_string(path).map_err(|e| MappingConfigError::Read {
                origin: self.origin(),
                message: e.to_string(),
            }),
        }
    }
}

/// The file as written; every mapping value is a jq expression.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppConfig {
    /// Accepted for Ocean compatibility; okta-port's behaviour is fixed (see `fixed_behaviour`).
    pub delete_dependent_entities: Option<bool>,
    pub create_missing_related_entities: Option<bool>,
    pub enable_merge_entity: Option<bool>,
    pub entity_deletion_threshold: Option<f64>,
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceConfig {
    pub kind: String,
    #[serde(default)]
    pub selector: SelectorConfig,
    pub port: PortConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectorConfig {
    pub query: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortConfig {
    pub entity: EntityConfig,
    pub items_to_parse: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityConfig {
    pub mappings: MappingsConfig,
}

/// `identifier` and relations may be a search-query object in Ocean's format; okta-port
/// takes only jq expressions there (refused with a message otherwise).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingsConfig {
    pub identifier: Value,
    pub title: Option<String>,
    pub blueprint: String,
    pub icon: Option<String>,
    pub team: Option<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, Value>,
    #[serde(default)]
    pub relations: BTreeMap<String, Value>,
}

impl AppConfig {
    /// The Ocean settings okta-port does not take from the file, each with what okta-port
    /// does instead: a file that asks otherwise is named in a warning, never silently.
    fn warn_fixed_behaviour(&self, origin: &str) {
        let fixed = [
            (
                "deleteDependentEntities",
                self.delete_dependent_entities,
                false,
                "okta-port deletes without dependents: a deleted group never takes its members with it",
            ),
            (
                "createMissingRelatedEntities",
                self.create_missing_related_entities,
                false,
                "okta-port writes relation targets first and never creates placeholder entities",
            ),
            (
                "enableMergeEntity",
                self.enable_merge_entity,
                true,
                "okta-port always merges: a live update writes only what it knows",
            ),
        ];
        for (field, set, ours, why) in fixed {
            if set.is_some_and(|value| value != ours) {
                tracing::warn!(origin, field, "{field}: {} is not honoured; {why}", !ours);
            }
        }
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, MappingConfigError> {
        let config: AppConfig = serde_norway::from_str(text).map_err(|e| MappingConfigError::Yaml {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(t) = config.entity_deletion_threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(MappingConfigError::Invalid {
                origin: origin.to_owned(),
                message: format!("entityDeletionThreshold: {t} is not between 0 and 1"),
            });
        }
        config.warn_fixed_behaviour(origin);
        if config.resources.is_empty() {
            return Err(MappingConfigError::Invalid {
                origin: origin.to_owned(),
                message: "resources: no resource to map".into(),
            });
        }
        Ok(config)
    }
}
