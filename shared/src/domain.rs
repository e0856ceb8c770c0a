//! The domain: what okta-port moves from Okta to Port, with no I/O. Entities and their
//! relations, the kinds of Okta objects, and the rule that resolves a user's manager. Every
//! other module may use it; it uses none of them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An entity as we write it and as Port returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub identifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub relations: Map<String, Value>,
}

impl Entity {
    /// The identifiers `relation` points at (none when it is absent or null).
    pub fn related(&self, relation: &str) -> Vec<&str> {
        self.relations.get(relation).map(targets).unwrap_or_default()
    }
}

/// The identifiers a relation value names: one for a single relation, each string of a
/// many-relation, none for null.
pub fn targets(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The kinds of Okta objects, in the order they are converged (relation targets first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Group,
    App,
    User,
}

impl ObjectKind {
    /// As reports and Okta's event types name it.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::User => "user",
            ObjectKind::Group => "group",
            ObjectKind::App => "application",
        }
    }
}

/// Where the manager rule looks users up: an index of the whole org (the resync) or Okta
/// itself (the live path). Each answer holds the ids of the users that match exactly.
pub trait UserLookup {
    type Error;
    /// Whether `id` is the id of a user.
    fn is_user(&self, id: &str) -> impl Future<Output = Result<bool, Self::Error>> + Send;
    /// The users whose `employeeNumber` is `number`.
    fn with_employee_number(
        &self,
        number: &str,
    ) -> impl Future<Output = Result<BTreeSet<String>, Self::Error>> + Send;
    /// The users whose `login` or `email` is `value`, compared case-insensitively.
    fn with_login_or_email(
        &self,
        value: &str,
    ) -> impl Future<Output = Result<BTreeSet<String>, Self::Error>> + Send;
}

/// Okta search values are quoted strings: a value with a quote or a backslash cannot be
/// searched safely, so it matches nobody.
pub fn is_searchable(value: &str) -> bool {
    !value.contains(['"', '\\'])
}

/// The manager rule, the one copy both paths use. `managerId` is free-form; it names:
/// 1. a user's id (Okta user ids start with `00u` and carry no `@`);
/// 2. else the one user with that `employeeNumber`;
/// 3. else the one user whose `login` or `email` matches, case-insensitively;
/// 4. else nobody. A value with a quote or a backslash cannot be searched in Okta, so it
///    names nobody either way.
pub async fn resolve_manager<L: UserLookup>(
    lookup: &L,
    manager_id: &str,
) -> Result<Option<String>, L::Error> {
    if manager_id.trim().is_empty() || !is_searchable(manager_id) {
        return Ok(None);
    }
    if manager_id.starts_with("00u") && !manager_id.contains('@') && lookup.is_user(manager_id).await? {
        return Ok(Some(manager_id.to_owned()));
    }
    let only = |ids: BTreeSet<String>| (ids.len() == 1).then(|| ids.into_iter().next()).flatten();
    if let Some(id) = only(lookup.with_employee_number(manager_id).await?) {
        return Ok(Some(id));
    }
    Ok(only(lookup.with_login_or_email(manager_id).await?))
}
