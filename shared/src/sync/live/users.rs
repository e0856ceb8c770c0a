//! Users: refetched with their groups, apps and resolved manager; and the users whose
//! manager a change may move.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use serde_json::Value;

use super::{
    Context, Converged, FollowUps, Kind, Processor, Wanted, delete_unmapped, mapped_by_blueprint,
    primary_blueprint, write,
};
use crate::domain::{self, UserLookup};
use crate::events::QueuedEvent;
use crate::mapping::{GROUP_BLUEPRINT, UserLinks};
use crate::okta::{OktaError, OktaSource, ids_of};
use crate::port::Entity;

fn profile_str<'a>(user: &'a Value, key: &str) -> Option<&'a str> {
    user["profile"][key].as_str().filter(|s| !s.trim().is_empty())
}

/// Okta itself as the manager rule's user look-up: a GET by id, and searches whose
/// answers are filtered to exact matches (Okta's `eq` may fold case or trim).
struct OktaUsers<'a>(&'a dyn OktaSource);

impl UserLookup for OktaUsers<'_> {
    type Error = OktaError;

    async fn is_user(&self, id: &str) -> Result<bool, OktaError> {
        // GET by id also accepts a login, so check that the id itself matched.
        Ok(self
            .0
            .user(id)
            .await?
            .is_some_and(|user| user["id"].as_str() == Some(id)))
    }

    async fn with_employee_number(&self, number: &str) -> Result<BTreeSet<String>, OktaError> {
        let found = self
            .0
            .search_users(&format!("profile.employeeNumber eq \"{number}\""))
            .await?;
        Ok(ids_where(found, |u| {
            profile_str(u, "employeeNumber") == Some(number)
        }))
    }

    async fn with_login_or_email(&self, value: &str) -> Result<BTreeSet<String>, OktaError> {
        let found = self
            .0
            .search_users(&format!(
                "profile.login eq \"{value}\" or profile.email eq \"{value}\""
            ))
            .await?;
        let lower = value.to_lowercase();
        Ok(ids_where(found, |u| {
            ["login", "email"]
                .iter()
                .any(|k| profile_str(u, k).is_some_and(|v| v.to_lowercase() == lower))
        }))
    }
}

fn ids_where(users: Vec<Value>, keep: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    users
        .iter()
        .filter(|u| keep(u))
        .filter_map(|u| u["id"].as_str().map(str::to_owned))
        .collect()
}

/// Resolves `managerId` by the domain's manager rule, looking users up in Okta.
pub async fn resolve_manager(okta: &dyn OktaSource, manager_id: &str) -> Result<Option<String>, OktaError> {
    domain::resolve_manager(&OktaUsers(okta), manager_id).await
}

pub struct UserProcessor;

#[async_trait]
impl Processor for UserProcessor {
    fn kind(&self) -> Kind {
        Kind::User
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("user.")
            || event_type.starts_with("group.user_membership.")
            || event_type.starts_with("application.user_membership.")
    }
    fn targets(&self, event: &QueuedEvent) -> Vec<(String, Wanted)> {
        let t = event.event_type.as_str();
        let wanted = match t {
            // Okta deletes asynchronously: right after delete.initiated a GET may still answer.
            "user.lifecycle.delete.initiated" => Wanted::DELETE,
            "user.lifecycle.create" | "user.lifecycle.activate" | "user.lifecycle.reactivate" => {
                Wanted::REFETCH_ALL
            }
            // Every other event: the user and its relations, whatever the event says
            // (docs/architecture.md), so a profile or status event also repairs a membership or an
            // assignment whose own event was lost. Users refetched only because their
            // manager may resolve differently (follow-ups) read the user alone.
            "user.account.update_profile" => Wanted::REFETCH_ALL,
            _ => Wanted {
                relations: true,
                ..Wanted::REFETCH
            },
        };
        // `User`, never `AppUser`: that id is an assignment id.
        event
            .targets_of("User")
            .map(|id| (id.to_owned(), wanted))
            .collect()
    }
    async fn converge(&self, ctx: &Context<'_>, touched: &BTreeMap<String, Wanted>) -> Converged {
        let ids: Vec<String> = touched.keys().cloned().collect();
        if ctx.mapping.kind_blueprints(Kind::User).is_empty() {
            // The configuration maps no users.
            return ids.into_iter().map(|id| (id, Ok(FollowUps::default()))).collect();
        }
        let user_bp = primary_blueprint(ctx, Kind::User);
        let stored: HashMap<String, Entity> = match ctx.port.list_own_among(&user_bp, &ids).await {
            Ok(list) => list
                .into_iter()
                .map(|s| (s.entity.identifier.clone(), s.entity))
                .collect(),
            Err(e) => return ids.into_iter().map(|id| (id, Err(e.to_string()))).collect(),
        };
        let mut run = UserRun {
            ctx,
            results: BTreeMap::new(),
            entities: BTreeMap::new(),
            gone: Vec::new(),
            produced: BTreeMap::new(),
            managers: HashMap::new(),
        };
        for (id, wanted) in touched {
            let outcome = run.converge_one(id, *wanted, stored.get(id)).await;
            run.results.insert(id.clone(), outcome);
        }
        let mut failures = write(ctx.port, run.entities).await;
        failures.extend(delete_unmapped(ctx, Kind::User, run.gone, &run.produced).await);
        for (id, reason) in failures {
            run.results.insert(id, Err(reason));
        }
        run.results
    }
}

/// One converge call's users: what to write, what to delete, and the managers resolved so
/// far (users of one batch often share a manager).
struct UserRun<'c, 'a> {
    ctx: &'c Context<'a>,
    results: Converged,
    entities: BTreeMap<String, Vec<Entity>>,
    gone: Vec<String>,
    /// Per refetched user: the blueprints its mapping produced, and the user object.
    produced: BTreeMap<String, (BTreeSet<String>, Value)>,
    managers: HashMap<String, Option<String>>,
}

impl UserRun<'_, '_> {
    /// Refetches one user (unless it is being deleted) and maps it, or marks it gone.
    async fn converge_one(
        &mut self,
        id: &str,
        wanted: Wanted,
        old: Option<&Entity>,
    ) -> Result<FollowUps, String> {
        let user = if wanted.delete {
            None
        } else {
            self.ctx.okta.user(id).await.map_err(|e| e.to_string())?
        };
        match user {
            None => self.gone_user(id, old).await,
            Some(user) => self.present_user(id, wanted, old, user).await,
        }
    }

    /// A user Okta no longer has: deleted, and its old groups and keys followed up.
    async fn gone_user(&mut self, id: &str, old: Option<&Entity>) -> Result<FollowUps, String> {
        self.gone.push(id.to_owned());
        let mut follow = FollowUps {
            manager_keys: old_keys(id, old),
            groups: old_groups(old),
            ..FollowUps::default()
        };
        if old.is_none() {
            // Created and gone before we saw it: Okta emits no membership event for the
            // built-in Everyone group, whose lastMembershipUpdated moved.
            follow.groups.extend(built_in_groups(self.ctx).await?);
        }
        Ok(follow)
    }

    /// A user Okta has: mapped with what the events say may have changed (a user new to
    /// Port needs everything; a merge upsert keeps the rest).
    async fn present_user(
        &mut self,
        id: &str,
        wanted: Wanted,
        old: Option<&Entity>,
        user: Value,
    ) -> Result<FollowUps, String> {
        let ctx = self.ctx;
        let mut follow = FollowUps::default();
        if wanted.keys || old.is_none() {
            follow.manager_keys = old_keys(id, old);
            for key in ["employeeNumber", "login", "email"] {
                if let Some(v) = profile_str(&user, key) {
                    follow.manager_keys.insert(v.to_owned());
                }
            }
        }
        let relations = wanted.relations || old.is_none() || ctx.mapping.user_needs_links();
        let (groups, apps, manager) = refetch_user(ctx, &user, relations, &mut self.managers).await?;
        let (group_ids, app_ids) = (groups.as_deref().map(ids_of), apps.as_deref().map(ids_of));
        if let Some(groups) = &group_ids {
            let new_groups: BTreeSet<String> = groups.iter().cloned().collect();
            follow.groups = old_groups(old)
                .symmetric_difference(&new_groups)
                .cloned()
                .collect();
        }
        let group_objects: Option<Vec<&Value>> = groups.as_ref().map(|l| l.iter().collect());
        let app_objects: Option<Vec<&Value>> = apps.as_ref().map(|l| l.iter().collect());
        let links = UserLinks {
            groups: group_ids.as_deref(),
            applications: app_ids.as_deref(),
            manager: Some(manager.as_deref()),
            group_objects: group_objects.as_deref(),
            app_objects: app_objects.as_deref(),
        };
        let mapped = ctx.mapping.map_user(&user, &links).map_err(|e| e.to_string())?;
        let blueprints = mapped.iter().map(|m| m.blueprint.clone()).collect();
        mapped_by_blueprint(mapped, &mut self.entities);
        self.produced.insert(id.to_owned(), (blueprints, user));
        Ok(follow)
    }
}

/// The groups the user's Port entity relates to.
fn old_groups(old: Option<&Entity>) -> BTreeSet<String> {
    old.map(|e| e.related("groups").into_iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The values other users' `managerId` may have named this user by, as Port knew it.
fn old_keys(id: &str, old: Option<&Entity>) -> BTreeSet<String> {
    let mut keys = BTreeSet::from([id.to_owned()]);
    for key in ["login", "email"] {
        if let Some(v) = old.and_then(|e| e.properties.get(key)).and_then(Value::as_str) {
            keys.insert(v.to_owned());
        }
    }
    keys
}

/// Ids of the built-in groups (Everyone) as Port knows them.
async fn built_in_groups(ctx: &Context<'_>) -> Result<Vec<String>, String> {
    if !ctx.mapping.builtin_shape() {
        // A configured mapping may not write the `type` property: left to the resync.
        return Ok(Vec::new());
    }
    let groups = ctx
        .port
        .own_where(GROUP_BLUEPRINT, "type", "BUILT_IN")
        .await
        .map_err(|e| e.to_string())?;
    Ok(groups.into_iter().map(|g| g.entity.identifier).collect())
}

/// A user's groups and apps (when `relations`), and its resolved manager, from Okta.
type UserRelations = (Option<Vec<Value>>, Option<Vec<Value>>, Option<String>);

async fn refetch_user(
    ctx: &Context<'_>,
    user: &Value,
    relations: bool,
    managers: &mut HashMap<String, Option<String>>,
) -> Result<UserRelations, String> {
    let id = user["id"].as_str().unwrap_or_default();
    let (groups, apps) = if relations {
        let (groups, apps) = futures::join!(ctx.okta.user_groups(id), ctx.okta.user_apps(id));
        (
            Some(groups.map_err(|e| e.to_string())?),
            Some(apps.map_err(|e| e.to_string())?),
        )
    } else {
        (None, None)
    };
    let manager = match profile_str(user, "managerId") {
        None => None,
        Some(m) => match managers.get(m) {
            Some(cached) => cached.clone(),
            None => {
                let resolved = resolve_manager(ctx.okta, m).await.map_err(|e| e.to_string())?;
                managers.insert(m.to_owned(), resolved.clone());
                resolved
            }
        },
    };
    Ok((groups, apps, manager))
}

/// Users whose `managerId` may name one of `keys`, or whose Port entity relates to one of
/// `related`: their resolved manager may have changed.
pub(super) async fn manager_dependents(
    ctx: &Context<'_>,
    keys: &BTreeSet<String>,
    related: &BTreeSet<String>,
) -> Result<BTreeSet<String>, String> {
    let mut found = BTreeSet::new();
    let keys: Vec<&String> = keys.iter().filter(|k| domain::is_searchable(k)).collect();
    for chunk in keys.chunks(10) {
        let expression = chunk
            .iter()
            .map(|k| format!("profile.managerId eq \"{k}\""))
            .collect::<Vec<_>>()
            .join(" or ");
        for user in ctx
            .okta
            .search_users(&expression)
            .await
            .map_err(|e| e.to_string())?
        {
            if let Some(id) = user["id"].as_str() {
                found.insert(id.to_owned());
            }
        }
    }
    let user_bp = primary_blueprint(ctx, Kind::User);
    for id in related {
        let reports = ctx
            .port
            .own_related(&user_bp, &user_bp, id)
            .await
            .map_err(|e| e.to_string())?;
        // Only those that name it as manager (not, say, as a member of the same group); a
        // configured mapping's relation names are unknown, so all of them.
        let builtin = ctx.mapping.builtin_shape();
        found.extend(
            reports
                .into_iter()
                .filter(|r| !builtin || r.entity.relations.get("manager").and_then(Value::as_str) == Some(id))
                .map(|r| r.entity.identifier),
        );
    }
    Ok(found)
}
