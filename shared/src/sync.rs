//! The full resync (docs/architecture.md): snapshot Okta, map, write what changed in dependency
//! order, then delete what vanished, only on a complete picture of Okta.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use chrono::Utc;
use futures::future::join_all;
use serde::Deserialize;
use serde_json::Value;

use crate::config::ResyncOptions;
use crate::domain::targets;
use crate::mapping::{ManagerIndex, Mapped, Mapping, ObjectKind, UserLinks};
use crate::okta::{OktaSource, UserListing};
use crate::port::{Entity, PortError, PortSink, StoredEntity, WriteFailure};
use crate::report::{Failure, Plan, Report};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("could not prepare the Port blueprints: {0}")]
    Blueprints(#[source] PortError),
    #[error("could not list this installation's {blueprint} entities in Port: {source}")]
    PortListing { blueprint: String, source: PortError },
    /// The mapping configuration cannot work on this org (found before any write).
    #[error("mapping configuration: {0}")]
    Configuration(String),
}

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

impl Snapshot {
    pub fn is_complete(&self) -> bool {
        self.errors.is_empty()
    }
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

/// Whether Port's copy already holds what we would write. Only the fields we write are
/// compared (a merge upsert leaves the others alone); null, absent and `[]` are alike.
pub fn is_unchanged(desired: &Entity, stored: &Entity) -> bool {
    fn same(a: &Value, b: Option<&Value>) -> bool {
        match (a, b) {
            (Value::Null, None | Some(Value::Null)) => true,
            (a, Some(b)) => a == b,
            _ => false,
        }
    }
    fn ids(v: Option<&Value>) -> Vec<&str> {
        let mut ids = v.map(targets).unwrap_or_default();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
    (desired.title.is_none() || desired.title == stored.title)
        && desired
            .properties
            .iter()
            .all(|(k, v)| same(v, stored.properties.get(k)))
        && desired
            .relations
            .iter()
            .all(|(k, v)| ids(Some(v)) == ids(stored.relations.get(k)))
}

/// Orders one blueprint's writes so that an entity comes after the entities of the same
/// blueprint it relates to (a manager before their reports). Entities caught in a cycle
/// (or a self-reference) are written first without those relations, then again in full.
pub fn write_waves(entities: Vec<Entity>) -> Vec<Vec<Entity>> {
    let index: HashMap<&str, usize> = entities
        .iter()
        .enumerate()
        .map(|(i, e)| (e.identifier.as_str(), i))
        .collect();
    let refs = |e: &Entity| -> Vec<usize> {
        let mut out: Vec<usize> = e
            .relations
            .values()
            .flat_map(targets)
            .filter_map(|id| index.get(id).copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    };
    let deps: Vec<Vec<usize>> = entities.iter().map(refs).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); entities.len()];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut waves_idx: Vec<Vec<usize>> = Vec::new();
    let mut ready: Vec<usize> = (0..entities.len()).filter(|&i| waiting[i] == 0).collect();
    let mut placed = vec![false; entities.len()];
    while !ready.is_empty() {
        let mut next = Vec::new();
        for &i in &ready {
            placed[i] = true;
            for &d in &dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    next.push(d);
                }
            }
        }
        waves_idx.push(std::mem::replace(&mut ready, next));
    }
    let stuck: Vec<usize> = (0..entities.len()).filter(|&i| !placed[i]).collect();
    let mut slots: Vec<Option<Entity>> = entities.into_iter().map(Some).collect();
    let mut waves: Vec<Vec<Entity>> = waves_idx
        .into_iter()
        .map(|w| {
            w.into_iter()
                .map(|i| slots[i].take().expect("placed once"))
                .collect()
        })
        .collect();
    if !stuck.is_empty() {
        let stuck_ids: HashSet<String> = stuck
            .iter()
            .map(|&i| slots[i].as_ref().expect("stuck").identifier.clone())
            .collect();
        let full: Vec<Entity> = stuck
            .iter()
            .map(|&i| slots[i].take().expect("stuck once"))
            .collect();
        let stripped = full
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.relations.retain(|_, v| match v {
                    Value::String(s) => !stuck_ids.contains(s),
                    Value::Array(a) => !a
                        .iter()
                        .any(|x| x.as_str().is_some_and(|s| stuck_ids.contains(s))),
                    _ => true,
                });
                e
            })
            .collect();
        waves.push(stripped);
        waves.push(full);
    }
    waves
}

/// The final outcome of entities that may be written more than once.
#[derive(Default)]
pub struct Outcomes {
    pub created: HashSet<String>,
    pub written: HashSet<String>,
    pub failed: HashMap<String, WriteFailure>,
    /// Left alone: someone else (a live event) wrote or deleted them during this run.
    pub superseded: HashSet<String>,
}

impl Outcomes {
    pub fn record(&mut self, identifier: String, outcome: Result<bool, WriteFailure>) {
        match outcome {
            Ok(created) => {
                self.failed.remove(&identifier);
                if created {
                    self.created.insert(identifier.clone());
                }
                self.written.insert(identifier);
            }
            Err(failure) => {
                self.written.remove(&identifier);
                self.failed.insert(identifier, failure);
            }
        }
    }
}

/// Writes one blueprint's entities in `write_waves` order through `upsert`.
pub async fn write_in_order<F, Fut>(
    blueprint: &str,
    entities: Vec<Entity>,
    upsert: F,
    outcomes: &mut Outcomes,
) where
    F: Fn(Vec<Entity>) -> Fut,
    Fut: std::future::Future<Output = Vec<crate::port::WriteResult>>,
{
    let total = entities.len();
    let mut done = 0;
    for wave in write_waves(entities) {
        done += wave.len();
        for result in upsert(wave).await {
            outcomes.record(result.identifier, result.outcome);
        }
        crate::progress::written(blueprint, done.min(total), total);
    }
}

/// Writes one blueprint's entities in `write_waves` order, each wave rechecked in Port
/// first: an entity that someone else wrote or deleted since `before` was listed holds
/// newer data than our snapshot and is left alone (Port has no conditional writes; this
/// narrows the race to one round trip).
async fn write_blueprint<P: PortSink>(
    port: &P,
    blueprint: &str,
    entities: Vec<Entity>,
    before: &HashMap<String, StoredEntity>,
    outcomes: &mut Outcomes,
) {
    let total = entities.len();
    let mut done = 0;
    for wave in write_waves(entities) {
        done += wave.len();
        let wave = drop_superseded(port, blueprint, wave, before, outcomes).await;
        for result in port.upsert(blueprint, wave).await {
            outcomes.record(result.identifier, result.outcome);
        }
        crate::progress::written(blueprint, done.min(total), total);
    }
}

/// The wave without the entities Port changed since `before` (ours written earlier in this
/// run are not rechecked). A recheck that fails fails its entities: they are retried next run.
async fn drop_superseded<P: PortSink>(
    port: &P,
    blueprint: &str,
    wave: Vec<Entity>,
    before: &HashMap<String, StoredEntity>,
    outcomes: &mut Outcomes,
) -> Vec<Entity> {
    let check: Vec<String> = wave
        .iter()
        .filter(|e| !outcomes.written.contains(&e.identifier))
        .map(|e| e.identifier.clone())
        .collect();
    if check.is_empty() {
        return wave;
    }
    let now: HashMap<String, StoredEntity> = match port.list_own_among(blueprint, &check).await {
        Ok(found) => found
            .into_iter()
            .map(|s| (s.entity.identifier.clone(), s))
            .collect(),
        Err(e) => {
            let failure = WriteFailure {
                status: e.status().unwrap_or(0),
                error: "recheck_failed".into(),
                message: format!("could not recheck the entity in Port before writing: {e}"),
            };
            let check: HashSet<String> = check.into_iter().collect();
            let (failed, rest): (Vec<Entity>, Vec<Entity>) =
                wave.into_iter().partition(|e| check.contains(&e.identifier));
            for entity in failed {
                outcomes.record(entity.identifier, Err(failure.clone()));
            }
            return rest;
        }
    };
    let check: HashSet<String> = check.into_iter().collect();
    let mut keep = Vec::with_capacity(wave.len());
    for entity in wave {
        let id = &entity.identifier;
        let changed =
            check.contains(id) && before.get(id).map(|s| s.updated_at) != now.get(id).map(|s| s.updated_at);
        if changed {
            tracing::info!(
                blueprint,
                id,
                "left alone: written or deleted in Port by someone else during this run"
            );
            outcomes.superseded.insert(id.clone());
        } else {
            keep.push(entity);
        }
    }
    keep
}

/// Options a caller can set per run (e.g. from the scheduled event), over the configured ones.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RunOverrides {
    pub dry_run: bool,
    pub allow_mass_deletion: bool,
}

impl RunOverrides {
    pub fn apply(self, options: &ResyncOptions) -> ResyncOptions {
        ResyncOptions {
            dry_run: options.dry_run || self.dry_run,
            allow_mass_deletion: options.allow_mass_deletion || self.allow_mass_deletion,
            ..options.clone()
        }
    }
}

/// One full resync. Returns a report (which may list failures) or, when Port itself could
/// not be prepared or read, or the mapping cannot work, an error before anything was written.
///
/// "Written by someone else during this run" is decided on Port's own timestamps: our
/// entities are listed before Okta is read, and an entity whose `updatedAt` differs when
/// rechecked (just before its write or deletion) was changed since. No local clock, no
/// margin: an entity that vanished from Okta is deleted by the very next run.
pub async fn resync<O, P, M>(
    okta: &O,
    port: &P,
    mapping: &M,
    options: &ResyncOptions,
) -> Result<Report, SyncError>
where
    O: OktaSource,
    P: PortSink,
    M: Mapping,
{
    let clock = Instant::now();
    let (okta_before, port_before) = (okta.stats(), port.stats());
    let mut report = Report {
        started_at: Utc::now().to_rfc3339(),
        dry_run: options.dry_run,
        ..Report::default()
    };
    let blueprints = mapping.blueprint_ids();
    prepare_blueprints(port, mapping, options.dry_run).await?;

    crate::progress::phase("reading this installation's entities in Port");
    let stored = list_stored(port, &blueprints).await?;
    tracing::info!(
        target: crate::progress::TARGET,
        entities = stored.values().map(HashMap::len).sum::<usize>(),
        "listed this installation's entities in Port"
    );

    crate::progress::phase("reading Okta");
    let snapshot = take_snapshot(okta).await;
    report.errors.extend(snapshot.errors.iter().cloned());
    let desired = map_snapshot(mapping, &snapshot);
    drop(snapshot);
    if !desired.configuration_errors.is_empty() {
        return Err(SyncError::Configuration(summarize(&desired.configuration_errors)));
    }
    record_unmapped(&mut report, mapping, desired.failures);

    let pending = plan_writes(&blueprints, &desired.entities, &stored, options, &mut report);
    let mut outcomes = Outcomes::default();
    crate::progress::phase("writing to Port");
    write_all(port, pending, &stored, &mut outcomes).await;
    tally_writes(&blueprints, &desired.entities, &stored, &outcomes, &mut report);

    crate::progress::phase("deleting what Okta no longer has");
    delete_stale(
        port,
        &blueprints,
        &desired.entities,
        &stored,
        options,
        &mut report,
    )
    .await;

    report.okta = okta.stats().since(okta_before);
    report.port = port.stats().since(port_before);
    report.duration_ms = clock.elapsed().as_millis() as u64;
    Ok(report)
}

/// Creates the missing blueprints (not in a dry run) and tells the mapping how Port
/// defines the existing ones (a relation's cardinality comes from Port, not from us).
async fn prepare_blueprints<P: PortSink, M: Mapping>(
    port: &P,
    mapping: &M,
    dry_run: bool,
) -> Result<(), SyncError> {
    if !dry_run {
        let created = port
            .ensure_blueprints(&mapping.blueprints())
            .await
            .map_err(SyncError::Blueprints)?;
        if !created.is_empty() {
            tracing::info!(?created, "created missing blueprints");
        }
    }
    // Blueprints the mapping brings are as it defines them; the others are the user's.
    let own: HashSet<String> = mapping
        .blueprints()
        .iter()
        .filter_map(|b| b["identifier"].as_str().map(str::to_owned))
        .collect();
    for bp in mapping.blueprint_ids().into_iter().filter(|bp| !own.contains(bp)) {
        if let Some(definition) = port.blueprint(&bp).await.map_err(SyncError::Blueprints)? {
            mapping.learn_blueprint(&definition);
        }
    }
    Ok(())
}

/// This installation's entities per blueprint, by identifier.
async fn list_stored<P: PortSink>(
    port: &P,
    blueprints: &[String],
) -> Result<BTreeMap<String, HashMap<String, StoredEntity>>, SyncError> {
    let mut stored = BTreeMap::new();
    for bp in blueprints {
        let own = port.list_own(bp).await.map_err(|source| SyncError::PortListing {
            blueprint: bp.clone(),
            source,
        })?;
        stored.insert(
            bp.clone(),
            own.into_iter()
                .map(|e| (e.entity.identifier.clone(), e))
                .collect(),
        );
    }
    Ok(stored)
}

/// The first few of many messages, with the count.
fn summarize(messages: &[String]) -> String {
    let shown: Vec<&str> = messages.iter().take(3).map(String::as_str).collect();
    if messages.len() > shown.len() {
        format!("{} ({} in all)", shown.join("; "), messages.len())
    } else {
        shown.join("; ")
    }
}

fn record_unmapped<M: Mapping>(report: &mut Report, mapping: &M, failures: Vec<(ObjectKind, Failure)>) {
    if failures.is_empty() {
        return;
    }
    // One line for them all: a broken mapping fails thousands of objects the same way.
    let examples: Vec<String> = failures
        .iter()
        .take(3)
        .map(|(kind, f)| format!("{} {}: {}", kind.name(), f.identifier, f.reason))
        .collect();
    report.errors.push(format!(
        "{} Okta objects could not be mapped (e.g. {})",
        failures.len(),
        examples.join("; ")
    ));
    for (kind, failure) in failures {
        // Counted as failed in the blueprint the object would have been written to.
        if let Some(blueprint) = mapping.kind_blueprints(kind).into_iter().next() {
            report.blueprint(&blueprint).unmapped += 1;
        }
        report.unmapped.push(failure);
    }
}

/// What to write per blueprint (unchanged entities are counted and skipped); in a dry run,
/// the plan goes into the report and nothing is returned.
fn plan_writes(
    blueprints: &[String],
    desired: &BTreeMap<String, Vec<Entity>>,
    stored: &BTreeMap<String, HashMap<String, StoredEntity>>,
    options: &ResyncOptions,
    report: &mut Report,
) -> Vec<(String, Vec<Entity>)> {
    let empty = HashMap::new();
    let mut pending = Vec::new();
    for bp in blueprints {
        let own = stored.get(bp).unwrap_or(&empty);
        let bp_report = report.blueprint(bp);
        let mut to_write = Vec::new();
        for entity in desired.get(bp).into_iter().flatten() {
            match own.get(&entity.identifier) {
                Some(s) if is_unchanged(entity, &s.entity) => bp_report.unchanged += 1,
                _ => to_write.push(entity.clone()),
            }
        }
        if options.dry_run {
            let (create, update): (Vec<_>, Vec<_>) =
                to_write.iter().partition(|e| !own.contains_key(&e.identifier));
            bp_report.plan = Some(Plan {
                create: create.into_iter().map(|e| e.identifier.clone()).collect(),
                update: update.into_iter().map(|e| e.identifier.clone()).collect(),
                delete: Vec::new(),
            });
        } else {
            pending.push((bp.clone(), to_write));
        }
    }
    pending
}

/// Targets first (the mapping's blueprint order), then the not_found failures once more,
/// now that everything else is written.
async fn write_all<P: PortSink>(
    port: &P,
    pending: Vec<(String, Vec<Entity>)>,
    stored: &BTreeMap<String, HashMap<String, StoredEntity>>,
    outcomes: &mut Outcomes,
) {
    let empty = HashMap::new();
    let mut retry: Vec<(String, Vec<Entity>)> = Vec::new();
    for (bp, entities) in pending {
        let before = stored.get(&bp).unwrap_or(&empty);
        let by_id: HashMap<String, Entity> = entities
            .iter()
            .map(|e| (e.identifier.clone(), e.clone()))
            .collect();
        let count = entities.len();
        write_blueprint(port, &bp, entities, before, outcomes).await;
        tracing::info!(target: crate::progress::TARGET, blueprint = bp, entities = count, "written to Port");
        let again: Vec<Entity> = by_id
            .into_values()
            .filter(|e| {
                outcomes
                    .failed
                    .get(&e.identifier)
                    .is_some_and(WriteFailure::is_not_found)
            })
            .collect();
        if !again.is_empty() {
            retry.push((bp, again));
        }
    }
    for (bp, entities) in retry {
        tracing::info!(
            blueprint = bp,
            entities = entities.len(),
            "retrying writes whose relation targets were missing"
        );
        let before = stored.get(&bp).unwrap_or(&empty);
        write_blueprint(port, &bp, entities, before, outcomes).await;
    }
}

/// Counts what the writes did per blueprint, and lists every failure by id.
fn tally_writes(
    blueprints: &[String],
    desired: &BTreeMap<String, Vec<Entity>>,
    stored: &BTreeMap<String, HashMap<String, StoredEntity>>,
    outcomes: &Outcomes,
    report: &mut Report,
) {
    let empty = HashMap::new();
    for bp in blueprints {
        let own = stored.get(bp).unwrap_or(&empty);
        let bp_report = report.blueprint(bp);
        for entity in desired.get(bp).into_iter().flatten() {
            let id = &entity.identifier;
            if let Some(failure) = outcomes.failed.get(id) {
                bp_report.failed.push(Failure {
                    identifier: id.clone(),
                    reason: failure.to_string(),
                });
            } else if outcomes.written.contains(id) {
                if outcomes.created.contains(id) || !own.contains_key(id) {
                    bp_report.created += 1;
                } else {
                    bp_report.updated += 1;
                }
            } else if outcomes.superseded.contains(id) {
                bp_report.superseded += 1;
            }
        }
    }
}

/// Deletes this installation's entities that Okta no longer has, if the picture of Okta is
/// complete and the mass-deletion guard agrees. Each candidate is rechecked in Port first:
/// one written since we listed it (a live event) is kept.
async fn delete_stale<P: PortSink>(
    port: &P,
    blueprints: &[String],
    desired: &BTreeMap<String, Vec<Entity>>,
    stored: &BTreeMap<String, HashMap<String, StoredEntity>>,
    options: &ResyncOptions,
    report: &mut Report,
) {
    if !report.errors.is_empty() {
        tracing::warn!("skipping deletions: the picture of Okta is incomplete");
        return;
    }
    // Reports before their managers and groups: fewer references for Port to clear.
    for bp in blueprints.iter().rev() {
        let Some(own) = stored.get(bp) else { continue };
        let present: HashSet<&str> = desired
            .get(bp)
            .into_iter()
            .flatten()
            .map(|e| e.identifier.as_str())
            .collect();
        let mut stale: Vec<String> = own
            .keys()
            .filter(|id| !present.contains(id.as_str()))
            .cloned()
            .collect();
        stale.sort();
        if stale.is_empty() {
            continue;
        }
        let share = stale.len() as f64 / own.len() as f64;
        if share > options.deletion_threshold && !options.allow_mass_deletion {
            report.errors.push(format!(
                "mass-deletion guard: refusing to delete {} of {} {bp} entities ({:.0}% > the {:.0}% \
                 threshold); nothing of {bp} was deleted. Check Okta (a token that sees less, a \
                 bad import), then let it through with `okta-port resync --allow-mass-deletion`, \
                 ALLOW_MASS_DELETION=true, or the resync function's payload {{\"allowMassDeletion\": true}}",
                stale.len(),
                own.len(),
                share * 100.0,
                options.deletion_threshold * 100.0
            ));
            report.blueprint(bp).deletion_refused = stale.len();
            continue;
        }
        if options.dry_run {
            if let Some(plan) = report.blueprint(bp).plan.as_mut() {
                plan.delete = stale;
            }
            continue;
        }
        let stale = match unchanged_since_listed(port, bp, stale, own).await {
            Ok(stale) => stale,
            Err(e) => {
                report.errors.push(format!(
                    "could not recheck the {bp} entities to delete in Port, so none was deleted: {e}"
                ));
                continue;
            }
        };
        if stale.is_empty() {
            continue;
        }
        tracing::info!(
            blueprint = bp,
            entities = stale.len(),
            "deleting entities gone from Okta"
        );
        let result = port.delete(bp, &stale).await;
        let bp_report = report.blueprint(bp);
        bp_report.deleted += result.deleted.len();
        bp_report.failed.extend(result.failed);
    }
}

/// Those of `candidates` that Port still has exactly as listed before Okta was read.
async fn unchanged_since_listed<P: PortSink>(
    port: &P,
    blueprint: &str,
    candidates: Vec<String>,
    listed: &HashMap<String, StoredEntity>,
) -> Result<Vec<String>, PortError> {
    let now = port.list_own_among(blueprint, &candidates).await?;
    let mut keep: Vec<String> = now
        .into_iter()
        .filter(|s| {
            let id = &s.entity.identifier;
            let same = listed.get(id).is_some_and(|l| l.updated_at == s.updated_at);
            if !same {
                tracing::info!(blueprint, id, "not deleted: written in Port during this run");
            }
            same
        })
        .map(|s| s.entity.identifier)
        .collect();
    keep.sort();
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn e(id: &str, manager: Option<&str>) -> Entity {
        let mut relations = serde_json::Map::new();
        relations.insert("manager".into(), manager.map_or(Value::Null, |m| json!(m)));
        relations.insert("groups".into(), json!(["00g1"]));
        Entity {
            identifier: id.into(),
            title: Some(id.into()),
            properties: Default::default(),
            relations,
        }
    }

    fn ids(wave: &[Entity]) -> Vec<&str> {
        let mut v: Vec<&str> = wave.iter().map(|e| e.identifier.as_str()).collect();
        v.sort();
        v
    }

    #[test]
    fn managers_come_before_reports_and_cycles_are_broken() {
        let waves = write_waves(vec![
            e("c", Some("b")),
            e("b", Some("a")),
            e("a", None),
            e("x", Some("y")),
            e("y", Some("x")),
            e("s", Some("s")),
            e("d", Some("outside")),
        ]);
        assert_eq!(waves.len(), 5);
        assert_eq!(ids(&waves[0]), ["a", "d"]);
        assert_eq!(ids(&waves[1]), ["b"]);
        assert_eq!(ids(&waves[2]), ["c"]);
        assert_eq!(ids(&waves[3]), ["s", "x", "y"]);
        assert!(
            waves[3].iter().all(|e| !e.relations.contains_key("manager")),
            "first write without the cycle"
        );
        assert!(
            waves[3].iter().all(|e| e.relations.contains_key("groups")),
            "other relations kept"
        );
        assert_eq!(ids(&waves[4]), ["s", "x", "y"]);
        assert!(waves[4].iter().all(|e| e.relations.contains_key("manager")));
    }

    #[test]
    fn unchanged_ignores_order_and_nulls() {
        let mut desired = e("a", None);
        desired.properties.insert("dept".into(), Value::Null);
        desired.relations.insert("groups".into(), json!(["00g2", "00g1"]));
        let mut stored = desired.clone();
        stored.properties.remove("dept");
        stored.properties.insert("custom".into(), json!("kept by merge"));
        stored.relations.insert("groups".into(), json!(["00g1", "00g2"]));
        stored.relations.remove("manager");
        assert!(is_unchanged(&desired, &stored));
        stored.relations.insert("manager".into(), json!("00u9"));
        assert!(!is_unchanged(&desired, &stored));
    }

    #[test]
    fn overrides_only_widen() {
        let base = ResyncOptions::default();
        let o = RunOverrides {
            dry_run: true,
            allow_mass_deletion: false,
        }
        .apply(&base);
        assert!(o.dry_run && !o.allow_mass_deletion);
        let parsed: RunOverrides = serde_json::from_value(json!({ "allowMassDeletion": true })).unwrap();
        assert!(parsed.allow_mass_deletion && !parsed.dry_run);
    }
}
