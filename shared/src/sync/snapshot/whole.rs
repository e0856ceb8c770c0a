//! A whole org held in memory as Okta's JSON, and what the mapping makes of it: how the
//! mapping tests and benchmark compare two mappings object by object. The resync itself
//! reads into the compact [`super::Snapshot`].

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{by_id, objects_of};
use crate::mapping::{ManagerIndex, Mapped, Mapping, ObjectKind, UserLinks};
use crate::port::Entity;
use crate::report::Failure;

/// Everything read from Okta for a resync. A `None` relation map means the listings that
/// supply it did not all succeed.
#[derive(Debug, Default)]
pub struct WholeSnapshot {
    /// None when either user listing failed.
    pub users: Option<Vec<Value>>,
    pub groups: Option<Vec<Value>>,
    pub apps: Option<Vec<Value>>,
    /// user id → ids of the groups it is a member of.
    pub user_groups: Option<HashMap<String, Vec<String>>>,
    /// user id → ids of the apps assigned to it (directly or through a group).
    pub user_apps: Option<HashMap<String, Vec<String>>>,
    /// Every listing that failed, with Okta's error.
    pub errors: Vec<String>,
}

/// Entities the snapshot produces, per blueprint, plus mapping failures.
#[derive(Debug, Default)]
pub struct Desired {
    pub entities: BTreeMap<String, Vec<Entity>>,
    pub failures: Vec<(ObjectKind, Failure)>,
    /// Errors of the configuration itself (a selector that yields no boolean): the run
    /// must stop before writing anything.
    pub configuration_errors: Vec<String>,
}

/// Maps every object of the snapshot that can be mapped faithfully.
pub fn map_snapshot<M: Mapping>(mapping: &M, snapshot: &WholeSnapshot) -> Desired {
    let mut desired = Desired::default();
    let mut push = |kind: ObjectKind,
                    id: &Value,
                    result: Result<Vec<Mapped>, crate::mapping::MappingError>| match result
    {
        Ok(mapped) => {
            for m in mapped {
                desired.entities.entry(m.blueprint).or_default().push(m.entity);
            }
        }
        Err(e) if e.is_configuration() => desired.configuration_errors.push(format!(
            "{e} (on {} {})",
            kind.name(),
            id.as_str().unwrap_or("?")
        )),
        Err(e) => desired.failures.push((
            kind,
            Failure {
                identifier: id.as_str().unwrap_or("?").to_owned(),
                reason: e.to_string(),
            },
        )),
    };
    for group in snapshot.groups.iter().flatten() {
        push(ObjectKind::Group, &group["id"], mapping.map_group(group));
    }
    for app in snapshot.apps.iter().flatten() {
        push(ObjectKind::App, &app["id"], mapping.map_app(app));
    }
    // Without the complete user list, neither users nor managers can be written faithfully.
    if let Some(users) = &snapshot.users {
        let managers = ManagerIndex::build(users);
        let none: [String; 0] = [];
        // The objects behind the relation ids, for mappings that read them (`.groups` in jq).
        let (group_index, app_index) = (by_id(snapshot.groups.as_deref()), by_id(snapshot.apps.as_deref()));
        for user in users {
            let id = user["id"].as_str().unwrap_or_default();
            let manager = managers.manager_of(user);
            let groups = snapshot
                .user_groups
                .as_ref()
                .map(|m| m.get(id).map_or(&none[..], Vec::as_slice));
            let applications = snapshot
                .user_apps
                .as_ref()
                .map(|m| m.get(id).map_or(&none[..], Vec::as_slice));
            let (group_objects, app_objects) = (
                objects_of(groups, &group_index),
                objects_of(applications, &app_index),
            );
            let links = UserLinks {
                groups,
                applications,
                manager: Some(manager.as_deref()),
                group_objects: group_objects.as_deref(),
                app_objects: app_objects.as_deref(),
            };
            push(ObjectKind::User, &user["id"], mapping.map_user(user, &links));
        }
    }
    desired
}
