//! The live path (docs/architecture.md): a batch of queued Okta events becomes the set of touched
//! groups, apps and users; each is refetched once from Okta and converged in Port through
//! the same mapping as the resync, so a live update and a resync write the same entity.
//!
//! One `Processor` per resource kind says which event types it handles, which targets of
//! an event it takes, and how it refetches and maps them. The consumer registers them in
//! its `main.rs`; a new resource kind is a new processor.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::domain::{self, UserLookup};
use crate::events::QueuedEvent;
/// The kinds of Okta objects, in the order they are converged (relation targets first).
pub use crate::mapping::ObjectKind as Kind;
use crate::mapping::{APP_BLUEPRINT, GROUP_BLUEPRINT, Mapped, Mapping, USER_BLUEPRINT, UserLinks};
use crate::okta::{OktaError, OktaSource, ids_of};
use crate::port::{Entity, PortSink};
pub use crate::report::BatchReport;
use crate::sync::{Outcomes, write_in_order};

/// What the events of a batch ask of one object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Refetch and upsert (or delete when Okta says 404).
    pub refetch: bool,
    /// Users: also refetch its groups and apps (a membership or assignment changed).
    pub relations: bool,
    /// Users: its id, employeeNumber, login or email may have changed, so other users'
    /// `managerId` may now resolve differently.
    pub keys: bool,
    /// Delete without asking Okta (the object is going away).
    pub delete: bool,
    /// Apps: recompute which users have the app (a group assignment changed).
    pub reconcile_assignments: bool,
}

impl Wanted {
    pub const REFETCH: Wanted = Wanted {
        refetch: true,
        relations: false,
        keys: false,
        delete: false,
        reconcile_assignments: false,
    };
    pub const REFETCH_ALL: Wanted = Wanted {
        relations: true,
        keys: true,
        ..Wanted::REFETCH
    };
    pub const DELETE: Wanted = Wanted {
        refetch: false,
        delete: true,
        ..Wanted::REFETCH
    };
    pub const RECONCILE: Wanted = Wanted {
        refetch: false,
        reconcile_assignments: true,
        ..Wanted::REFETCH
    };

    fn merge(&mut self, other: Wanted) {
        self.refetch |= other.refetch;
        self.relations |= other.relations;
        self.keys |= other.keys;
        self.delete |= other.delete;
        self.reconcile_assignments |= other.reconcile_assignments;
    }
}

/// More work an object's convergence revealed: objects to refetch in a second round.
#[derive(Debug, Default)]
pub struct FollowUps {
    /// Groups whose membership changed (their `lastMembershipUpdated` moved).
    pub groups: BTreeSet<String>,
    /// Values other users' `profile.managerId` may name (ids, employee numbers, logins,
    /// emails of users that changed or vanished), and users that related to them.
    pub manager_keys: BTreeSet<String>,
    /// Users converged this round, whose reports (in Port) may need a new manager.
    pub users: BTreeSet<String>,
    /// Users to refetch in full.
    pub refetch_users: BTreeSet<String>,
}

/// What processors work with.
pub struct Context<'a> {
    pub okta: &'a dyn OktaSource,
    pub port: &'a dyn PortSink,
    pub mapping: &'a dyn Mapping,
}

/// Per object: Ok with the follow-ups its convergence revealed, or why it failed.
pub type Converged = BTreeMap<String, Result<FollowUps, String>>;

/// One resource kind of the live path.
#[async_trait]
pub trait Processor: Send + Sync {
    fn kind(&self) -> Kind;
    /// The event types this processor acts on.
    fn handles(&self, event_type: &str) -> bool;
    /// The objects of its kind an event touches, and what it asks of each.
    fn targets(&self, event: &QueuedEvent) -> Vec<(String, Wanted)>;
    /// Refetches the touched objects and writes (or deletes) their entities.
    async fn converge(&self, ctx: &Context<'_>, touched: &BTreeMap<String, Wanted>) -> Converged;
}

/// The default processors, in convergence order.
pub fn default_processors() -> Vec<Box<dyn Processor>> {
    vec![
        Box::new(GroupProcessor),
        Box::new(AppProcessor),
        Box::new(UserProcessor),
    ]
}

fn mapped_by_blueprint(mapped: Vec<Mapped>, into: &mut BTreeMap<String, Vec<Entity>>) {
    for m in mapped {
        into.entry(m.blueprint).or_default().push(m.entity);
    }
}

/// Writes entities (targets before relating entities, as in the resync), retrying once
/// those whose relation targets were missing, and returns each one's failure, if any.
async fn write(port: &dyn PortSink, entities: BTreeMap<String, Vec<Entity>>) -> HashMap<String, String> {
    let mut outcomes = Outcomes::default();
    for (bp, list) in entities {
        let retry: HashMap<String, Entity> = list.iter().map(|e| (e.identifier.clone(), e.clone())).collect();
        write_in_order(&bp, list, |wave| port.upsert(&bp, wave), &mut outcomes).await;
        let again: Vec<Entity> = retry
            .into_values()
            .filter(|e| {
                outcomes
                    .failed
                    .get(&e.identifier)
                    .is_some_and(|f| f.is_not_found())
            })
            .collect();
        if !again.is_empty() {
            write_in_order(&bp, again, |wave| port.upsert(&bp, wave), &mut outcomes).await;
        }
    }
    outcomes
        .failed
        .into_iter()
        .map(|(id, f)| (id, f.to_string()))
        .collect()
}

/// Deletes those of `ids` that are this installation's entities; an entity of the same
/// identifier written by another tool or installation is left alone. Failures are keyed
/// by identifier.
async fn delete(port: &dyn PortSink, blueprint: &str, ids: Vec<String>) -> HashMap<String, String> {
    if ids.is_empty() {
        return HashMap::new();
    }
    let own: Vec<String> = match port.list_own_among(blueprint, &ids).await {
        Ok(found) => found.into_iter().map(|s| s.entity.identifier).collect(),
        Err(e) => {
            let reason = format!("could not find our entities to delete: {e}");
            return ids.into_iter().map(|id| (id, reason.clone())).collect();
        }
    };
    if own.len() < ids.len() {
        tracing::info!(
            blueprint,
            not_ours = ids.len() - own.len(),
            "left alone: absent, or written by another tool or installation"
        );
    }
    if own.is_empty() {
        return HashMap::new();
    }
    let result = port.delete(blueprint, &own).await;
    tracing::info!(blueprint, deleted = ?result.deleted, "deleted entities gone from Okta");
    result
        .failed
        .into_iter()
        .map(|f| (f.identifier, f.reason))
        .collect()
}

/// The blueprint the live path reads objects of `kind` from (the mapping's first).
fn primary_blueprint(ctx: &Context<'_>, kind: Kind) -> String {
    ctx.mapping
        .kind_blueprints(kind)
        .into_iter()
        .next()
        .unwrap_or_else(|| {
            match kind {
                Kind::Group => GROUP_BLUEPRINT,
                Kind::App => APP_BLUEPRINT,
                Kind::User => USER_BLUEPRINT,
            }
            .to_owned()
        })
}

/// Deletes `gone` (Okta ids) from every blueprint objects of `kind` map to, and each
/// refetched object from the blueprints its mapping no longer produces (a selector that
/// now says no), each by the identifier the mapping gives it there. Failures are keyed by
/// Okta id, so that they reach the messages that asked.
async fn delete_unmapped(
    ctx: &Context<'_>,
    kind: Kind,
    gone: Vec<String>,
    produced: &BTreeMap<String, (BTreeSet<String>, Value)>,
) -> HashMap<String, String> {
    let mut failures = HashMap::new();
    for bp in ctx.mapping.kind_blueprints(kind) {
        // identifier in `bp` → Okta id
        let mut by_identifier: HashMap<String, String> = HashMap::new();
        let mut unknown = Vec::new();
        for id in &gone {
            match ctx
                .mapping
                .identifier(kind, &bp, &serde_json::json!({ "id": id }))
            {
                Some(identifier) => {
                    by_identifier.insert(identifier, id.clone());
                }
                None => unknown.push(id.clone()),
            }
        }
        for (id, (_, object)) in produced.iter().filter(|(_, (bps, _))| !bps.contains(&bp)) {
            if let Some(identifier) = ctx.mapping.identifier(kind, &bp, object) {
                by_identifier.insert(identifier, id.clone());
            }
        }
        if !unknown.is_empty() {
            // The object is gone and its identifier needs more than its id: never guess
            // (that could delete someone else's entity); the nightly resync removes it.
            tracing::warn!(
                blueprint = bp,
                ids = ?unknown,
                "gone from Okta, but this mapping's identifier cannot be computed from the id; left for the resync"
            );
        }
        let ids: Vec<String> = by_identifier.keys().cloned().collect();
        for (identifier, reason) in delete(ctx.port, &bp, ids).await {
            let id = by_identifier.get(&identifier).cloned().unwrap_or(identifier);
            failures.insert(id, reason);
        }
    }
    failures
}

/// Shared shape of groups and apps: refetch each, map, write; 404 or a delete event
/// deletes. `before_delete` runs on the ids about to be deleted, while Port still holds
/// the references to them, and returns their follow-ups.
async fn converge_objects<'f, F>(
    ctx: &Context<'_>,
    touched: &BTreeMap<String, Wanted>,
    kind: Kind,
    fetch: F,
    map: fn(&dyn Mapping, &Value) -> Result<Vec<Mapped>, crate::mapping::MappingError>,
    before_delete: Option<&(dyn Fn(String) -> BoxFuture<'f, Result<FollowUps, String>> + Sync)>,
) -> Converged
where
    F: Fn(String) -> BoxFuture<'f, Result<Option<Value>, OktaError>>,
{
    let mut results: Converged = BTreeMap::new();
    let mut entities = BTreeMap::new();
    let mut gone = Vec::new();
    let mut produced: BTreeMap<String, (BTreeSet<String>, Value)> = BTreeMap::new();
    for (id, wanted) in touched {
        if wanted.delete {
            gone.push(id.clone());
            continue;
        }
        if !wanted.refetch {
            continue;
        }
        let mapped = match fetch(id.clone()).await {
            Ok(None) => {
                gone.push(id.clone());
                continue;
            }
            Ok(Some(object)) => map(ctx.mapping, &object)
                .map(|mapped| (mapped, object))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match mapped {
            Ok((mapped, object)) => {
                produced.insert(
                    id.clone(),
                    (mapped.iter().map(|m| m.blueprint.clone()).collect(), object),
                );
                mapped_by_blueprint(mapped, &mut entities);
                results.insert(id.clone(), Ok(FollowUps::default()));
            }
            Err(reason) => {
                results.insert(id.clone(), Err(reason));
            }
        }
    }
    let mut deletable = Vec::new();
    for id in gone {
        let follow = match before_delete {
            Some(hook) => hook(id.clone()).await,
            None => Ok(FollowUps::default()),
        };
        if follow.is_ok() {
            deletable.push(id.clone());
        }
        results.insert(id, follow);
    }
    let mut failures = write(ctx.port, entities).await;
    failures.extend(delete_unmapped(ctx, kind, deletable, &produced).await);
    for (id, reason) in failures {
        results.insert(id, Err(reason));
    }
    results
}

pub struct GroupProcessor;

#[async_trait]
impl Processor for GroupProcessor {
    fn kind(&self) -> Kind {
        Kind::Group
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("group.lifecycle.")
            || event_type == "group.profile.update"
            || event_type.starts_with("group.user_membership.")
    }
    fn targets(&self, event: &QueuedEvent) -> Vec<(String, Wanted)> {
        let wanted = if event.event_type == "group.lifecycle.delete" {
            Wanted::DELETE
        } else {
            Wanted::REFETCH
        };
        event
            .targets_of("UserGroup")
            .map(|id| (id.to_owned(), wanted))
            .collect()
    }
    async fn converge(&self, ctx: &Context<'_>, touched: &BTreeMap<String, Wanted>) -> Converged {
        let (okta, port) = (ctx.okta, ctx.port);
        let (user_bp, group_bp) = (
            primary_blueprint(ctx, Kind::User),
            primary_blueprint(ctx, Kind::Group),
        );
        let (user_bp, group_bp) = (&user_bp, &group_bp);
        // A deleted group takes with it the apps its members had through it: refetch them.
        let members = |id: String| -> BoxFuture<'_, Result<FollowUps, String>> {
            Box::pin(async move {
                let members = port
                    .own_related(user_bp, group_bp, &id)
                    .await
                    .map_err(|e| e.to_string())?;
                let refetch_users = members.into_iter().map(|m| m.entity.identifier).collect();
                Ok(FollowUps {
                    refetch_users,
                    ..FollowUps::default()
                })
            })
        };
        let fetch = |id: String| -> BoxFuture<'_, _> { Box::pin(async move { okta.group(&id).await }) };
        converge_objects(
            ctx,
            touched,
            Kind::Group,
            fetch,
            |m, g| m.map_group(g),
            Some(&members),
        )
        .await
    }
}

pub struct AppProcessor;

#[async_trait]
impl Processor for AppProcessor {
    fn kind(&self) -> Kind {
        Kind::App
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("application.lifecycle.")
            || event_type.starts_with("application.user_membership.")
            || event_type.starts_with("group.application_assignment.")
    }
    fn targets(&self, event: &QueuedEvent) -> Vec<(String, Wanted)> {
        let wanted = match event.event_type.as_str() {
            "application.lifecycle.delete" => Wanted::DELETE,
            t if t.starts_with("group.application_assignment.") => Wanted::RECONCILE,
            _ => Wanted::REFETCH,
        };
        event
            .targets_of("AppInstance")
            .map(|id| (id.to_owned(), wanted))
            .collect()
    }
    async fn converge(&self, ctx: &Context<'_>, touched: &BTreeMap<String, Wanted>) -> Converged {
        let okta = ctx.okta;
        let fetch = |id: String| -> BoxFuture<'_, _> { Box::pin(async move { okta.app(&id).await }) };
        let mut results = converge_objects(ctx, touched, Kind::App, fetch, |m, a| m.map_app(a), None).await;
        for (app, wanted) in touched {
            if wanted.reconcile_assignments && !wanted.delete {
                let outcome = if ctx.mapping.builtin_shape() {
                    reconcile_assignments(ctx, app)
                        .await
                        .map(|()| FollowUps::default())
                } else {
                    assignment_members(ctx, app).await
                };
                results.insert(app.clone(), outcome);
            }
        }
        results
    }
}

/// A group's assignment to an app changed: every member may have gained or lost the app.
/// Instead of one Okta call per member, list the app's users once (direct and through
/// groups) and diff that against the users whose Port entity relates to the app; only the
/// `applications` relation of those that differ is rewritten (a merge upsert).
async fn reconcile_assignments(ctx: &Context<'_>, app: &str) -> Result<(), String> {
    let assigned: HashSet<String> = match ctx.okta.list_app_user_ids(app).await {
        Ok(ids) => ids.into_iter().collect(),
        // The app is gone: deleting it clears every user's reference to it.
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let related = ctx
        .port
        .own_related(USER_BLUEPRINT, APP_BLUEPRINT, app)
        .await
        .map_err(|e| e.to_string())?;
    let related_ids: HashSet<String> = related.iter().map(|s| s.entity.identifier.clone()).collect();
    let gaining: Vec<String> = assigned.difference(&related_ids).cloned().collect();
    let mut current = related;
    current.extend(
        ctx.port
            .list_own_among(USER_BLUEPRINT, &gaining)
            .await
            .map_err(|e| e.to_string())?,
    );
    // Who gains or loses the app is read off Port; what they then have is read off Okta,
    // one call per such user. Never Port's relation plus or minus this app: another batch
    // may be writing the same user, and a patch computed from what it read could undo that.
    let differing: Vec<String> = current
        .into_iter()
        .filter(|stored| {
            let has = stored.entity.related("applications").contains(&app);
            has != assigned.contains(&stored.entity.identifier)
        })
        .map(|stored| stored.entity.identifier)
        .collect();
    let mut patches = Vec::new();
    for user in differing {
        let apps: BTreeSet<String> = match ctx.okta.user_apps(&user).await {
            Ok(apps) => ids_of(&apps).into_iter().collect(),
            // Gone from Okta: its own delete event (or the resync) removes it.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(format!("user {user}: {e}")),
        };
        let mut relations = serde_json::Map::new();
        relations.insert("applications".into(), serde_json::json!(apps));
        patches.push(Entity {
            identifier: user,
            title: None,
            properties: Default::default(),
            relations,
        });
    }
    tracing::info!(
        app,
        users = patches.len(),
        "reconciled the app's user assignments"
    );
    let failures = write(ctx.port, BTreeMap::from([(USER_BLUEPRINT.to_owned(), patches)])).await;
    match failures.into_iter().next() {
        None => Ok(()),
        Some((id, reason)) => Err(format!("user {id}: {reason}")),
    }
}

/// `reconcile_assignments` for a configured mapping, whose relation names okta-port cannot
/// know: every user that has the app, or whose entity relates to it, is refetched in full.
async fn assignment_members(ctx: &Context<'_>, app: &str) -> Result<FollowUps, String> {
    let mut refetch_users: BTreeSet<String> = match ctx.okta.list_app_user_ids(app).await {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) if e.is_not_found() => BTreeSet::new(),
        Err(e) => return Err(e.to_string()),
    };
    let (user_bp, app_bp) = (
        primary_blueprint(ctx, Kind::User),
        primary_blueprint(ctx, Kind::App),
    );
    let related = ctx
        .port
        .own_related(&user_bp, &app_bp, app)
        .await
        .map_err(|e| e.to_string())?;
    refetch_users.extend(related.into_iter().map(|s| s.entity.identifier));
    Ok(FollowUps {
        refetch_users,
        ..FollowUps::default()
    })
}

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
        let mut results: Converged = BTreeMap::new();
        let mut entities = BTreeMap::new();
        let mut gone = Vec::new();
        let mut produced: BTreeMap<String, (BTreeSet<String>, Value)> = BTreeMap::new();
        let mut managers: HashMap<String, Option<String>> = HashMap::new();
        for (id, wanted) in touched {
            let old = stored.get(id);
            let old_groups: BTreeSet<String> = old
                .map(|e| e.related("groups").into_iter().map(str::to_owned).collect())
                .unwrap_or_default();
            let old_keys = || {
                let mut keys = BTreeSet::from([id.clone()]);
                for key in ["login", "email"] {
                    if let Some(v) = old.and_then(|e| e.properties.get(key)).and_then(Value::as_str) {
                        keys.insert(v.to_owned());
                    }
                }
                keys
            };
            let mut follow = FollowUps::default();
            let user = if wanted.delete {
                Ok(None)
            } else {
                ctx.okta.user(id).await
            };
            let converged = match user {
                Ok(None) => {
                    gone.push(id.clone());
                    follow.manager_keys = old_keys();
                    follow.groups = old_groups;
                    if old.is_none() {
                        // Created and gone before we saw it: Okta emits no membership event
                        // for the built-in Everyone group, whose lastMembershipUpdated moved.
                        match built_in_groups(ctx).await {
                            Ok(groups) => follow.groups.extend(groups),
                            Err(e) => {
                                results.insert(id.clone(), Err(e));
                                continue;
                            }
                        }
                    }
                    Ok(())
                }
                Ok(Some(user)) => {
                    // A user new to Port needs everything; otherwise only what the events say
                    // may have changed (a merge upsert keeps the rest).
                    let relations = wanted.relations || old.is_none() || ctx.mapping.user_needs_links();
                    if wanted.keys || old.is_none() {
                        follow.manager_keys = old_keys();
                        for key in ["employeeNumber", "login", "email"] {
                            if let Some(v) = profile_str(&user, key) {
                                follow.manager_keys.insert(v.to_owned());
                            }
                        }
                    }
                    match refetch_user(ctx, &user, relations, &mut managers).await {
                        Ok((groups, apps, manager)) => {
                            let ids_of = |objects: &Option<Vec<Value>>| -> Option<Vec<String>> {
                                objects.as_ref().map(|list| {
                                    list.iter()
                                        .filter_map(|o| o["id"].as_str().map(str::to_owned))
                                        .collect()
                                })
                            };
                            let (group_ids, app_ids) = (ids_of(&groups), ids_of(&apps));
                            if let Some(groups) = &group_ids {
                                let new_groups: BTreeSet<String> = groups.iter().cloned().collect();
                                follow.groups =
                                    old_groups.symmetric_difference(&new_groups).cloned().collect();
                            }
                            let group_objects: Option<Vec<&Value>> =
                                groups.as_ref().map(|l| l.iter().collect());
                            let app_objects: Option<Vec<&Value>> = apps.as_ref().map(|l| l.iter().collect());
                            let links = UserLinks {
                                groups: group_ids.as_deref(),
                                applications: app_ids.as_deref(),
                                manager: Some(manager.as_deref()),
                                group_objects: group_objects.as_deref(),
                                app_objects: app_objects.as_deref(),
                            };
                            ctx.mapping
                                .map_user(&user, &links)
                                .map(|mapped| {
                                    produced.insert(
                                        id.clone(),
                                        (mapped.iter().map(|m| m.blueprint.clone()).collect(), user.clone()),
                                    );
                                    mapped_by_blueprint(mapped, &mut entities)
                                })
                                .map_err(|e| e.to_string())
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            results.insert(id.clone(), converged.map(|()| follow));
        }
        let mut failures = write(ctx.port, entities).await;
        failures.extend(delete_unmapped(ctx, Kind::User, gone, &produced).await);
        for (id, reason) in failures {
            results.insert(id, Err(reason));
        }
        results
    }
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
async fn manager_dependents(
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

/// Applies a batch of queue messages `(message id, body)`.
pub async fn apply_batch(
    messages: &[(String, String)],
    processors: &[Box<dyn Processor>],
    ctx: &Context<'_>,
) -> BatchReport {
    let calls_before = ctx.okta.stats().calls;
    let mut report = BatchReport::default();
    let mut seen: HashSet<String> = HashSet::new();
    // Per kind, the objects to converge and what is wanted of each; and which messages
    // asked for each object (their failures are reported against those messages).
    let mut pending: BTreeMap<Kind, BTreeMap<String, Wanted>> = BTreeMap::new();
    let mut askers: HashMap<(Kind, String), BTreeSet<String>> = HashMap::new();
    let fail = |report: &mut BatchReport, message: &str, reason: String| {
        if !report.failures.contains_key(message) {
            report.failed_messages.push(message.to_owned());
            report.failures.insert(message.to_owned(), reason);
        }
    };
    for (message_id, body) in messages {
        let event: QueuedEvent = match serde_json::from_str(body) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(message_id, error = %e, "poison message: not a queued Okta event");
                fail(&mut report, message_id, format!("not a queued Okta event: {e}"));
                continue;
            }
        };
        report.events += 1;
        if event.uuid.as_ref().is_some_and(|u| !seen.insert(u.clone())) {
            report.duplicates += 1;
        }
        let mut handled = false;
        for processor in processors.iter().filter(|p| p.handles(&event.event_type)) {
            handled = true;
            for (id, wanted) in processor.targets(&event) {
                pending
                    .entry(processor.kind())
                    .or_default()
                    .entry(id.clone())
                    .or_default()
                    .merge(wanted);
                askers
                    .entry((processor.kind(), id))
                    .or_default()
                    .insert(message_id.clone());
            }
        }
        if !handled {
            report.ignored += 1;
        }
    }

    // Round one converges what the events asked, kind by kind (relation targets first).
    // Later rounds converge what earlier ones revealed: groups whose membership moved,
    // members of deleted groups, users whose manager may now resolve differently. Each
    // object is converged once per batch.
    let mut done: HashSet<(Kind, String)> = HashSet::new();
    // Logged once for the batch: a broken mapping fails every object the same way.
    let mut not_converged: Vec<String> = Vec::new();
    for round in 0..MAX_ROUNDS {
        if pending.is_empty() {
            break;
        }
        let mut next: BTreeMap<Kind, BTreeMap<String, Wanted>> = BTreeMap::new();
        let mut manager_keys = BTreeSet::new();
        let mut converged_users = BTreeSet::new();
        let mut user_askers: BTreeSet<String> = BTreeSet::new();
        for processor in processors {
            let kind = processor.kind();
            let Some(mut objects) = pending.remove(&kind) else {
                continue;
            };
            objects.retain(|id, _| !done.contains(&(kind, id.clone())));
            if objects.is_empty() {
                continue;
            }
            for (id, result) in processor.converge(ctx, &objects).await {
                done.insert((kind, id.clone()));
                report.converged += 1;
                let asked = askers.get(&(kind, id.clone())).cloned().unwrap_or_default();
                match result {
                    Ok(f) => {
                        let members = Wanted {
                            relations: true,
                            ..Wanted::REFETCH
                        };
                        for (target_kind, ids, wanted) in [
                            (Kind::Group, f.groups, Wanted::REFETCH),
                            (Kind::User, f.refetch_users, members),
                        ] {
                            for target in ids {
                                next.entry(target_kind)
                                    .or_default()
                                    .entry(target.clone())
                                    .or_default()
                                    .merge(wanted);
                                askers
                                    .entry((target_kind, target))
                                    .or_default()
                                    .extend(asked.iter().cloned());
                            }
                        }
                        if round == 0 && !f.manager_keys.is_empty() {
                            manager_keys.extend(f.manager_keys);
                            user_askers.extend(asked.iter().cloned());
                        }
                        if kind == Kind::User {
                            converged_users.insert(id);
                        }
                    }
                    Err(reason) => {
                        not_converged.push(format!("{kind:?} {id}: {reason}"));
                        for message in &asked {
                            fail(&mut report, message, format!("{kind:?} {id}: {reason}"));
                        }
                    }
                }
            }
        }
        // Users whose manager may resolve differently, found once, from round one's users.
        if !manager_keys.is_empty() {
            match manager_dependents(ctx, &manager_keys, &converged_users).await {
                Ok(users) => {
                    for u in users {
                        next.entry(Kind::User)
                            .or_default()
                            .insert(u.clone(), Wanted::REFETCH);
                        askers
                            .entry((Kind::User, u))
                            .or_default()
                            .extend(user_askers.iter().cloned());
                    }
                }
                Err(reason) => {
                    for message in &user_askers {
                        fail(
                            &mut report,
                            message,
                            format!("finding the reports of changed users: {reason}"),
                        );
                    }
                }
            }
        }
        pending = next;
    }
    // Work still pending after the last round is not dropped: the messages that led to it
    // are reported failed, so they come back and the work is done then.
    for (kind, objects) in &pending {
        for id in objects
            .keys()
            .filter(|id| !done.contains(&(*kind, (*id).clone())))
        {
            let asked = askers.get(&(*kind, id.clone())).cloned().unwrap_or_default();
            for message in &asked {
                fail(
                    &mut report,
                    message,
                    format!(
                        "{kind:?} {id}: follow-up work left after {MAX_ROUNDS} rounds; retried with the message"
                    ),
                );
            }
        }
    }
    if !not_converged.is_empty() {
        tracing::warn!(
            objects = not_converged.len(),
            examples = not_converged[..not_converged.len().min(3)].join("; "),
            "could not converge; their messages are retried"
        );
    }
    report.okta_calls = ctx.okta.stats().calls - calls_before;
    report
}

/// Rounds in one batch: the events, then what each round revealed. Follow-ups do not
/// cascade far (each object is converged once), so this bound is rarely reached.
const MAX_ROUNDS: usize = 5;

/// `metrics::event_lags` as of now, for the events of `messages` that `processors` handle
/// and whose messages did not fail.
pub fn applied_event_lags(
    messages: &[(String, String)],
    report: &BatchReport,
    processors: &[Box<dyn Processor>],
) -> Vec<u64> {
    let handled = |e: &QueuedEvent| processors.iter().any(|p| p.handles(&e.event_type));
    crate::metrics::event_lags(messages, &report.failed_messages, handled, chrono::Utc::now())
}

/// The `(message id, body)` pairs of an SQS event; a record without a body is kept with an
/// empty one, so that it is reported as failed rather than lost.
pub fn sqs_messages(event: aws_lambda_events::event::sqs::SqsEvent) -> Vec<(String, String)> {
    event
        .records
        .into_iter()
        .map(|r| (r.message_id.unwrap_or_default(), r.body.unwrap_or_default()))
        .collect()
}
