//! Okta objects → Port entities (docs/mapping.md), behind the `Mapping` trait: the hand-written
//! `DefaultMapping`, and `JqMapping` (`jq.rs`), a port-app-config (`config.rs`) in Ocean's
//! format evaluated with jaq.

pub mod config;
pub mod jq;

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use crate::domain::{self, UserLookup};
pub use crate::domain::{Entity, ObjectKind};

pub const USER_BLUEPRINT: &str = "oktaUser";
pub const GROUP_BLUEPRINT: &str = "oktaGroup";
pub const APP_BLUEPRINT: &str = "oktaApplication";

/// The user statuses Okta knows (the `status` enum of `oktaUser`).
pub const USER_STATUSES: [&str; 8] = [
    "ACTIVE",
    "DEPROVISIONED",
    "LOCKED_OUT",
    "PASSWORD_EXPIRED",
    "PROVISIONED",
    "RECOVERY",
    "STAGED",
    "SUSPENDED",
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MappingError {
    #[error("{kind} object without an id")]
    MissingId { kind: &'static str },
    /// A jq expression of the configuration failed on this object.
    #[error("resources[{resource}].{field}: {message}")]
    Jq {
        resource: usize,
        field: String,
        message: String,
    },
    /// A selector that yields something other than one boolean: a mistake in the
    /// configuration, not in the object, so the whole run stops before writing.
    #[error("resources[{resource}].selector.query must yield one boolean, but yielded {yielded}")]
    Selector { resource: usize, yielded: String },
}

impl MappingError {
    /// Whether the error lies in the configuration rather than in one object.
    pub fn is_configuration(&self) -> bool {
        matches!(self, MappingError::Selector { .. })
    }
}

/// One entity to write, with its blueprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub blueprint: String,
    pub entity: Entity,
}

/// A user's relations as the sync knows them. `None` means unknown (the listing that
/// supplies it failed): the relation is then left out of the write, so nothing is lost.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserLinks<'a> {
    pub groups: Option<&'a [String]>,
    pub applications: Option<&'a [String]>,
    /// The resolved manager's Okta id; `Some(None)` = resolved to no manager.
    pub manager: Option<Option<&'a str>>,
    /// The user's group objects, when the caller has them (what a jq mapping sees as
    /// `.groups`); `None` with `groups` set means only the ids are at hand.
    pub group_objects: Option<&'a [&'a Value]>,
    /// The user's app objects (`.applications` in a jq mapping), likewise.
    pub app_objects: Option<&'a [&'a Value]>,
}

/// How Okta objects become Port entities.
pub trait Mapping: Send + Sync {
    /// Blueprint definitions to ensure, in write order (relation targets first).
    fn blueprints(&self) -> Vec<Value>;
    /// Identifiers of the blueprints this mapping writes, in write order.
    fn blueprint_ids(&self) -> Vec<String> {
        self.blueprints()
            .iter()
            .filter_map(|b| b["identifier"].as_str().map(str::to_owned))
            .collect()
    }
    /// The blueprints objects of `kind` are written to (the live path deletes from them).
    fn kind_blueprints(&self, kind: ObjectKind) -> Vec<String> {
        vec![
            match kind {
                ObjectKind::Group => GROUP_BLUEPRINT,
                ObjectKind::App => APP_BLUEPRINT,
                ObjectKind::User => USER_BLUEPRINT,
            }
            .to_owned(),
        ]
    }
    /// Whether mapping a user needs its groups and apps even when only the user object
    /// changed (the selector, identifier or title reads them).
    fn user_needs_links(&self) -> bool {
        false
    }
    /// Whether the entities have the built-in shape that the live path's shortcuts rely on:
    /// users in `oktaUser` with relations `groups`, `applications` and `manager`, groups
    /// in `oktaGroup` with the `type` property.
    fn builtin_shape(&self) -> bool {
        true
    }
    /// The identifier `object` (of `kind`) has, or had, in `blueprint`, whatever the
    /// selector says: what the live path deletes by. `None` when it cannot be computed
    /// (an object gone from Okta of which only the id is known).
    fn identifier(&self, _kind: ObjectKind, _blueprint: &str, object: &Value) -> Option<String> {
        object["id"].as_str().map(str::to_owned)
    }
    /// Tells the mapping how Port defines one of its blueprints (it may have been made
    /// outside okta-port): a relation's cardinality is Port's, not ours.
    fn learn_blueprint(&self, _definition: &Value) {}
    fn map_group(&self, group: &Value) -> Result<Vec<Mapped>, MappingError>;
    fn map_app(&self, app: &Value) -> Result<Vec<Mapped>, MappingError>;
    fn map_user(&self, user: &Value, links: &UserLinks<'_>) -> Result<Vec<Mapped>, MappingError>;
}

/// The mapping a deployment runs: the hand-written default, or a loaded configuration.
#[derive(Debug)]
pub enum AppMapping {
    Builtin(DefaultMapping),
    Jq(Box<jq::JqMapping>),
}

impl AppMapping {
    /// `PORT_APP_CONFIG_FILE` or `PORT_APP_CONFIG` when set (compiled now; errors refuse
    /// the configuration), else the built-in mapping.
    pub fn load(source: &config::ConfigSource) -> Result<Self, config::MappingConfigError> {
        match source {
            config::ConfigSource::Default => Ok(AppMapping::Builtin(DefaultMapping)),
            other => Ok(AppMapping::Jq(Box::new(jq::JqMapping::load(other)?))),
        }
    }

    /// `entityDeletionThreshold` of a loaded configuration.
    pub fn deletion_threshold(&self) -> Option<f64> {
        match self {
            AppMapping::Builtin(_) => None,
            AppMapping::Jq(m) => m.deletion_threshold(),
        }
    }

    fn inner(&self) -> &dyn Mapping {
        match self {
            AppMapping::Builtin(m) => m,
            AppMapping::Jq(m) => m.as_ref(),
        }
    }
}

impl Mapping for AppMapping {
    fn blueprints(&self) -> Vec<Value> {
        self.inner().blueprints()
    }
    fn blueprint_ids(&self) -> Vec<String> {
        self.inner().blueprint_ids()
    }
    fn kind_blueprints(&self, kind: ObjectKind) -> Vec<String> {
        self.inner().kind_blueprints(kind)
    }
    fn user_needs_links(&self) -> bool {
        self.inner().user_needs_links()
    }
    fn builtin_shape(&self) -> bool {
        self.inner().builtin_shape()
    }
    fn learn_blueprint(&self, definition: &Value) {
        self.inner().learn_blueprint(definition)
    }
    fn identifier(&self, kind: ObjectKind, blueprint: &str, object: &Value) -> Option<String> {
        self.inner().identifier(kind, blueprint, object)
    }
    fn map_group(&self, group: &Value) -> Result<Vec<Mapped>, MappingError> {
        self.inner().map_group(group)
    }
    fn map_app(&self, app: &Value) -> Result<Vec<Mapped>, MappingError> {
        self.inner().map_app(app)
    }
    fn map_user(&self, user: &Value, links: &UserLinks<'_>) -> Result<Vec<Mapped>, MappingError> {
        self.inner().map_user(user, links)
    }
}

/// The built-in mapping: blueprints and properties of Port's own Okta integration.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultMapping;

fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .fold(value, |v, key| v.get(key).unwrap_or(&Value::Null))
}

fn copy(obj: &Value, props: &mut Map<String, Value>, name: &str, path: &[&str]) {
    props.insert(name.to_owned(), at(obj, path).clone());
}

fn non_empty(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.trim().is_empty())
}

fn id_of(obj: &Value, kind: &'static str) -> Result<String, MappingError> {
    non_empty(&obj["id"])
        .map(str::to_owned)
        .ok_or(MappingError::MissingId { kind })
}

fn sorted_ids(ids: &[String]) -> Value {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    json!(ids)
}

/// `displayName`; else `firstName lastName` when both are set; else `login`.
pub fn user_title(user: &Value) -> Option<String> {
    let profile = &user["profile"];
    if let Some(display) = non_empty(&profile["displayName"]) {
        return Some(display.to_owned());
    }
    if let (Some(first), Some(last)) = (non_empty(&profile["firstName"]), non_empty(&profile["lastName"])) {
        return Some(format!("{first} {last}"));
    }
    profile["login"].as_str().map(str::to_owned)
}

impl Mapping for DefaultMapping {
    fn blueprints(&self) -> Vec<Value> {
        let date = |title: &str| json!({ "type": "string", "format": "date-time", "title": title });
        let text = |title: &str| json!({ "type": "string", "title": title });
        vec![
            json!({
                "identifier": GROUP_BLUEPRINT,
                "title": "Okta Group",
                "icon": "Okta",
                "schema": { "properties": {
                    "name": text("Name"),
                    "description": text("Description"),
                    "type": { "type": "string", "title": "Type", "enum": ["OKTA_GROUP", "APP_GROUP", "BUILT_IN"] },
                    "created": date("Created"),
                    "lastUpdated": date("Last updated"),
                    "lastMembershipUpdated": date("Last membership update"),
                }, "required": [] },
                "relations": {}
            }),
            json!({
                "identifier": APP_BLUEPRINT,
                "title": "Okta Application",
                "icon": "Okta",
                "schema": { "properties": {
                    "name": text("Name"),
                    "label": text("Label"),
                    "signOnMode": text("Sign-on mode"),
                    "status": text("Status"),
                    "created": date("Created"),
                    "lastUpdated": date("Last updated"),
                    "features": { "type": "array", "title": "Features", "items": { "type": "string" } },
                }, "required": [] },
                "relations": {}
            }),
            json!({
                "identifier": USER_BLUEPRINT,
                "title": "Okta User",
                "icon": "Okta",
                "schema": { "properties": {
                    "email": text("Email"),
                    "status": { "type": "string", "title": "Status", "enum": USER_STATUSES, "enumColors": {
                        "ACTIVE": "green", "DEPROVISIONED": "red", "LOCKED_OUT": "orange", "PASSWORD_EXPIRED": "yellow",
                        "PROVISIONED": "blue", "RECOVERY": "purple", "STAGED": "lightGray", "SUSPENDED": "darkGray" } },
                    "created": date("Created"),
                    "department": text("Department"),
                    "displayName": text("Display name"),
                    "login": text("Login"),
                    "type": text("User type"),
                    "activated": date("Activated"),
                    "firstName": text("First name"),
                    "lastName": text("Last name"),
                    "lastLogin": date("Last login"),
                    "lastUpdated": date("Last updated"),
                }, "required": [] },
                "relations": {
                    "groups": { "title": "Groups", "target": GROUP_BLUEPRINT, "many": true, "required": false },
                    "manager": { "title": "Manager", "target": USER_BLUEPRINT, "many": false, "required": false },
                    "applications": { "title": "Applications", "target": APP_BLUEPRINT, "many": true, "required": false },
                }
            }),
        ]
    }

    fn map_group(&self, group: &Value) -> Result<Vec<Mapped>, MappingError> {
        let mut properties = Map::new();
        copy(group, &mut properties, "name", &["profile", "name"]);
        copy(group, &mut properties, "description", &["profile", "description"]);
        for key in ["type", "created", "lastUpdated", "lastMembershipUpdated"] {
            copy(group, &mut properties, key, &[key]);
        }
        let entity = Entity {
            identifier: id_of(group, "group")?,
            title: group["profile"]["name"].as_str().map(str::to_owned),
            properties,
            relations: Map::new(),
        };
        Ok(vec![Mapped {
            blueprint: GROUP_BLUEPRINT.into(),
            entity,
        }])
    }

    fn map_app(&self, app: &Value) -> Result<Vec<Mapped>, MappingError> {
        let mut properties = Map::new();
        for key in [
            "name",
            "label",
            "signOnMode",
            "status",
            "created",
            "lastUpdated",
            "features",
        ] {
            copy(app, &mut properties, key, &[key]);
        }
        let entity = Entity {
            identifier: id_of(app, "application")?,
            title: app["label"].as_str().map(str::to_owned),
            properties,
            relations: Map::new(),
        };
        Ok(vec![Mapped {
            blueprint: APP_BLUEPRINT.into(),
            entity,
        }])
    }

    fn map_user(&self, user: &Value, links: &UserLinks<'_>) -> Result<Vec<Mapped>, MappingError> {
        let mut properties = Map::new();
        for key in [
            "email",
            "department",
            "displayName",
            "login",
            "firstName",
            "lastName",
        ] {
            copy(user, &mut properties, key, &["profile", key]);
        }
        for key in ["status", "created", "activated", "lastLogin", "lastUpdated"] {
            copy(user, &mut properties, key, &[key]);
        }
        copy(user, &mut properties, "type", &["type", "id"]);
        let mut relations = Map::new();
        if let Some(groups) = links.groups {
            relations.insert("groups".into(), sorted_ids(groups));
        }
        if let Some(apps) = links.applications {
            relations.insert("applications".into(), sorted_ids(apps));
        }
        if let Some(manager) = links.manager {
            relations.insert("manager".into(), manager.map_or(Value::Null, |m| json!(m)));
        }
        let entity = Entity {
            identifier: id_of(user, "user")?,
            title: user_title(user),
            properties,
            relations,
        };
        Ok(vec![Mapped {
            blueprint: USER_BLUEPRINT.into(),
            entity,
        }])
    }
}

/// Resolves `profile.managerId`, a free-form HR attribute, to an Okta user id: a user's id;
/// else the one user with that `employeeNumber`; else the one user whose login or email
/// matches case-insensitively; else no manager.
#[derive(Debug, Default)]
pub struct ManagerIndex {
    ids: std::collections::HashSet<String>,
    by_employee_number: HashMap<String, Vec<String>>,
    by_login_or_email: HashMap<String, Vec<String>>,
}

impl ManagerIndex {
    pub fn build(users: &[Value]) -> Self {
        let mut index = ManagerIndex::default();
        for user in users {
            let Some(id) = user["id"].as_str() else { continue };
            index.ids.insert(id.to_owned());
            let profile = &user["profile"];
            if let Some(n) = non_empty(&profile["employeeNumber"]) {
                index
                    .by_employee_number
                    .entry(n.to_owned())
                    .or_default()
                    .push(id.to_owned());
            }
            let mut keys: Vec<String> = ["login", "email"]
                .iter()
                .filter_map(|k| non_empty(&profile[*k]))
                .map(str::to_lowercase)
                .collect();
            keys.dedup(); // login == email: one user, counted once
            for key in keys {
                index
                    .by_login_or_email
                    .entry(key)
                    .or_default()
                    .push(id.to_owned());
            }
        }
        index
    }

    /// The manager of `user`, if its `managerId` resolves.
    pub fn manager_of(&self, user: &Value) -> Option<String> {
        self.resolve(non_empty(&user["profile"]["managerId"])?)
    }

    /// The domain's manager rule over this index (which answers at once).
    pub fn resolve(&self, manager_id: &str) -> Option<String> {
        use futures::FutureExt;
        match domain::resolve_manager(self, manager_id).now_or_never() {
            Some(Ok(found)) => found,
            Some(Err(never)) => match never {},
            None => unreachable!("the index answers without waiting"),
        }
    }

    fn matching(map: &HashMap<String, Vec<String>>, key: &str) -> BTreeSet<String> {
        map.get(key)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl UserLookup for ManagerIndex {
    type Error = std::convert::Infallible;

    async fn is_user(&self, id: &str) -> Result<bool, Self::Error> {
        Ok(self.ids.contains(id))
    }

    async fn with_employee_number(&self, number: &str) -> Result<BTreeSet<String>, Self::Error> {
        Ok(Self::matching(&self.by_employee_number, number))
    }

    async fn with_login_or_email(&self, value: &str) -> Result<BTreeSet<String>, Self::Error> {
        Ok(Self::matching(&self.by_login_or_email, &value.to_lowercase()))
    }
}

#[cfg(test)]
mod tests;
