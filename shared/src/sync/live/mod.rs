//! The live path (docs/architecture.md): a batch of queued Okta events becomes the set of
//! touched groups, apps and users; each is refetched once from Okta and converged in Port
//! through the same mapping as the resync, so a live update and a resync write the same
//! entity.
//!
//! One `Processor` per resource kind says which event types it handles, which targets of
//! an event it takes, and how it refetches and maps them (`objects`: groups and apps,
//! `users`); `batch` runs them over a batch. A new resource kind is a new processor.

mod batch;
mod objects;
mod users;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::Value;

pub use self::batch::{applied_event_lags, apply_batch, sqs_messages};
pub use self::objects::{AppProcessor, GroupProcessor};
pub use self::users::{UserProcessor, resolve_manager};
use crate::events::QueuedEvent;
/// The kinds of Okta objects, in the order they are converged (relation targets first).
pub use crate::mapping::ObjectKind as Kind;
use crate::mapping::{APP_BLUEPRINT, GROUP_BLUEPRINT, Mapped, Mapping, USER_BLUEPRINT};
use crate::okta::{OktaError, OktaSource};
use crate::port::{Entity, PortSink};
pub use crate::report::BatchReport;
use crate::sync::write::{Outcomes, Plain, write_blueprints};

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
    write_blueprints(&Plain(port), entities.into_iter().collect(), &mut outcomes).await;
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
