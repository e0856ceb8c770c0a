//! Everything a resync reads from Okta, and what the mapping makes of it.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::future::join_all;
use serde_json::Value;

use crate::mapping::{ManagerIndex, Mapped, Mapping, ObjectKind, UserLinks};
use crate::okta::{OktaSource, UserListing};
use crate::port::Entity;
use crate::report::Failure;

/// Everything read from Okta for a resync. A `None` relation map means the listings that
/// supply it did not all succeed.
#[derive(Debug, Default)]
pub struct Snapshot {
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

/// Reads the whole org with the fewest calls: users (plus the DEPROVISIONED search),
/// groups and their members, apps and their users. Relations come from the group and app
/// side, so there is no per-user call.
pub async fn take_snapshot<O: OktaSource>(okta: &O) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let (users, deprovisioned, groups, apps) = tokio::join!(
        okta.list_users(UserListing::Default),
        okta.list_users(UserListing::Deprovisioned),
        okta.list_groups(),
        okta.list_apps()
    );
    match (users, deprovisioned) {
        (Ok(mut users), Ok(deprovisioned)) => {
            // A user changing status between the two listings may appear in both.
            let mut seen: HashSet<String> = users
                .iter()
                .filter_map(|u| u["id"].as_str().map(str::to_owned))
                .collect();
            users.extend(
                deprovisioned
                    .into_iter()
                    .filter(|u| u["id"].as_str().is_some_and(|id| seen.insert(id.into()))),
            );
            tracing::info!(target: crate::progress::TARGET, users = users.len(), "listed Okta users");
            snapshot.users = Some(users);
        }
        (Err(e), _) | (_, Err(e)) => snapshot.errors.push(format!("listing users: {e}")),
    }
    match groups {
        Ok(groups) => {
            tracing::info!(target: crate::progress::TARGET, groups = groups.len(), "listed Okta groups; listing members");
            let ids: Vec<&str> = groups.iter().filter_map(|g| g["id"].as_str()).collect();
            let members = join_all(ids.iter().map(|id| okta.list_group_member_ids(id))).await;
            snapshot.user_groups = invert(&ids, members, "members of group", &mut snapshot.errors);
            snapshot.groups = Some(groups);
        }
        Err(e) => snapshot.errors.push(format!("listing groups: {e}")),
    }
    match apps {
        Ok(apps) => {
            tracing::info!(target: crate::progress::TARGET, apps = apps.len(), "listed Okta apps; listing assigned users");
            let ids: Vec<&str> = apps.iter().filter_map(|a| a["id"].as_str()).collect();
            let users = join_all(ids.iter().map(|id| okta.list_app_user_ids(id))).await;
            snapshot.user_apps = invert(&ids, users, "users of app", &mut snapshot.errors);
            snapshot.apps = Some(apps);
        }
        Err(e) => snapshot.errors.push(format!("listing apps: {e}")),
    }
    snapshot
}

/// Turns per-container member lists into member → containers; None if any list failed.
fn invert<E: std::fmt::Display>(
    containers: &[&str],
    members: Vec<Result<Vec<String>, E>>,
    what: &str,
    errors: &mut Vec<String>,
) -> Option<HashMap<String, Vec<String>>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    let mut complete = true;
    for (container, result) in containers.iter().zip(members) {
        match result {
            Ok(ids) => {
                for id in ids {
                    map.entry(id).or_default().push((*container).to_owned());
                }
            }
            Err(e) => {
                complete = false;
                errors.push(format!("listing {what} {container}: {e}"));
            }
        }
    }
    complete.then_some(map)
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
pub fn map_snapshot<M: Mapping>(mapping: &M, snapshot: &Snapshot) -> Desired {
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
        fn index(objects: &Option<Vec<Value>>) -> HashMap<&str, &Value> {
            objects
                .iter()
                .flatten()
                .filter_map(|o| Some((o["id"].as_str()?, o)))
                .collect()
        }
        fn objects<'a>(ids: Option<&[String]>, index: &HashMap<&str, &'a Value>) -> Option<Vec<&'a Value>> {
            ids.map(|ids| {
                ids.iter()
                    .filter_map(|id| index.get(id.as_str()).copied())
                    .collect()
            })
        }
        let (group_index, app_index) = (index(&snapshot.groups), index(&snapshot.apps));
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
            let (group_objects, app_objects) =
                (objects(groups, &group_index), objects(applications, &app_index));
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
