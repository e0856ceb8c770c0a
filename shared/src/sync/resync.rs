//! One full resync: list our entities in Port, snapshot Okta, map, write what changed,
//! delete what vanished.
//!
//! "Written by someone else during this run" is decided on Port's own timestamps: our
//! entities are listed before Okta is read, and an entity whose `updatedAt` differs when
//! rechecked (just before its write or deletion) was changed since.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;

use super::SyncError;
use super::snapshot::{map_snapshot, take_snapshot};
use super::write::{Outcomes, WaveWriter, is_unchanged, write_blueprints};
use crate::config::ResyncOptions;
use crate::mapping::{Mapping, ObjectKind};
use crate::okta::OktaSource;
use crate::port::{Entity, PortError, PortSink, StoredEntity, WriteFailure};
use crate::report::{Failure, Plan, Report};

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
    let writer = Rechecked {
        port,
        stored: &stored,
    };
    write_blueprints(&writer, pending, &mut outcomes).await;
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

/// The resync's writes: each wave rechecked in Port first. An entity that someone else
/// wrote or deleted since it was listed holds newer data than our snapshot and is left
/// alone (Port has no conditional writes; this narrows the race to one round trip).
struct Rechecked<'a, P: PortSink> {
    port: &'a P,
    stored: &'a BTreeMap<String, HashMap<String, StoredEntity>>,
}

#[async_trait]
impl<P: PortSink> WaveWriter for Rechecked<'_, P> {
    async fn write_wave(&self, blueprint: &str, wave: Vec<Entity>, outcomes: &mut Outcomes) {
        let empty = HashMap::new();
        let before = self.stored.get(blueprint).unwrap_or(&empty);
        let wave = drop_superseded(self.port, blueprint, wave, before, outcomes).await;
        for result in self.port.upsert(blueprint, wave).await {
            outcomes.record(result.identifier, result.outcome);
        }
    }

    fn blueprint_written(&self, blueprint: &str, entities: usize) {
        tracing::info!(target: crate::progress::TARGET, blueprint, entities, "written to Port");
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
