//! The resync's writes: the pending entities of each blueprint in dependency order, read
//! back from the spill file a chunk at a time, each chunk rechecked in Port first; then
//! once more those whose relation target was missing. Counted into the report by id.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio::time::Instant;

use async_trait::async_trait;

use super::plan::{Pending, PendingEntity, id_hash};
use crate::port::{Entity, PortSink, WriteFailure};
use crate::report::{Failure, Report};
use crate::sync::digest::Digest;
use crate::sync::write::{Outcomes, WaveWriter, break_cycle, wave_order};

/// Entities read back and written at once (a wave is written in chunks this size).
const CHUNK: usize = 1000;

/// When the writes stop: at `stop_at`, between chunks, once at least one chunk is
/// written (so every run moves on).
pub struct WriteStop {
    pub stop_at: Option<Instant>,
    pub chunks: usize,
}

impl WriteStop {
    fn reached(&self) -> bool {
        self.chunks > 0 && self.stop_at.is_some_and(|t| Instant::now() >= t)
    }
}

/// Writes every pending entity, blueprints in `order` (relation targets first). Returns
/// `false` when it stopped at the stop time with writes left (they are not in `outcomes`).
pub async fn write_pending(
    writer: &dyn WaveWriter,
    order: &[String],
    pending: &mut Pending,
    outcomes: &mut Outcomes,
    stop: &mut WriteStop,
) -> std::io::Result<bool> {
    let blueprints = std::mem::take(&mut pending.blueprints);
    let result = write_all(writer, order, &blueprints, pending, outcomes, stop).await;
    pending.blueprints = blueprints;
    result
}

async fn write_all(
    writer: &dyn WaveWriter,
    order: &[String],
    blueprints: &BTreeMap<String, Vec<PendingEntity>>,
    pending: &mut Pending,
    outcomes: &mut Outcomes,
    stop: &mut WriteStop,
) -> std::io::Result<bool> {
    for bp in order {
        let Some(entities) = blueprints.get(bp) else {
            continue;
        };
        let all: Vec<usize> = (0..entities.len()).collect();
        if !write_in_order(writer, bp, entities, &all, pending, outcomes, stop).await? {
            return Ok(false);
        }
        writer.blueprint_written(bp, entities.len());
    }
    for bp in order {
        let Some(entities) = blueprints.get(bp) else {
            continue;
        };
        let again: Vec<usize> = (0..entities.len())
            .filter(|&i| {
                let failed = outcomes.failed.get(&*entities[i].identifier);
                failed.is_some_and(WriteFailure::is_not_found)
            })
            .collect();
        if !again.is_empty() {
            tracing::info!(
                blueprint = bp,
                entities = again.len(),
                "retrying writes whose relation targets were missing"
            );
            if !write_in_order(writer, bp, entities, &again, pending, outcomes, stop).await? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The `chosen` entities of one blueprint, in waves: each after those it points at.
/// `false` when it stopped at the stop time.
async fn write_in_order(
    writer: &dyn WaveWriter,
    blueprint: &str,
    entities: &[PendingEntity],
    chosen: &[usize],
    pending: &mut Pending,
    outcomes: &mut Outcomes,
    stop: &mut WriteStop,
) -> std::io::Result<bool> {
    let position: HashMap<u64, usize> = chosen
        .iter()
        .enumerate()
        .map(|(at, &i)| (id_hash(&entities[i].identifier), at))
        .collect();
    let deps: Vec<Vec<usize>> = chosen
        .iter()
        .map(|&i| {
            let targets = entities[i].targets.iter();
            targets.filter_map(|t| position.get(t).copied()).collect()
        })
        .collect();
    let (waves, stuck) = wave_order(&deps);
    let total = chosen.len();
    let mut done = 0;
    for wave in waves {
        for chunk in wave.chunks(CHUNK) {
            if stop.reached() {
                return Ok(false);
            }
            stop.chunks += 1;
            let batch = chunk
                .iter()
                .map(|&at| pending.load(&entities[chosen[at]]))
                .collect::<std::io::Result<Vec<Entity>>>()?;
            done += batch.len();
            writer.write_wave(blueprint, batch, outcomes).await;
            crate::progress::written(blueprint, done, total);
        }
    }
    if !stuck.is_empty() {
        // Both passes of a cycle in one run: the first alone would pass for written.
        if stop.reached() {
            return Ok(false);
        }
        stop.chunks += 1;
        let full = stuck
            .iter()
            .map(|&at| pending.load(&entities[chosen[at]]))
            .collect::<std::io::Result<Vec<Entity>>>()?;
        for wave in break_cycle(full) {
            writer.write_wave(blueprint, wave, outcomes).await;
        }
        crate::progress::written(blueprint, total, total);
    }
    Ok(true)
}

/// Counts what the writes did per blueprint, and lists every failure by id.
pub fn tally_writes(pending: &Pending, digest: &Digest, outcomes: &Outcomes, report: &mut Report) {
    for (bp, entities) in &pending.blueprints {
        let bp_report = report.blueprint(bp);
        for entity in entities {
            let id = &*entity.identifier;
            if let Some(failure) = outcomes.failed.get(id) {
                bp_report.failed.push(Failure {
                    identifier: id.to_owned(),
                    reason: failure.to_string(),
                });
            } else if outcomes.written.contains(id) {
                if outcomes.created.contains(id) || !digest.contains(bp, id) {
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

/// The resync's writes: each wave rechecked in Port first. An entity that someone else
/// wrote or deleted since it was listed holds newer data than our snapshot and is left
/// alone (Port has no conditional writes; this narrows the race to one round trip).
pub struct Rechecked<'a, P: PortSink> {
    pub port: &'a P,
    pub digest: &'a Digest,
}

#[async_trait]
impl<P: PortSink> WaveWriter for Rechecked<'_, P> {
    async fn write_wave(&self, blueprint: &str, wave: Vec<Entity>, outcomes: &mut Outcomes) {
        let wave = self.drop_superseded(blueprint, wave, outcomes).await;
        for result in self.port.upsert(blueprint, wave).await {
            outcomes.record(result.identifier, result.outcome);
        }
    }

    fn blueprint_written(&self, blueprint: &str, entities: usize) {
        tracing::info!(target: crate::progress::TARGET, blueprint, entities, "written to Port");
    }
}

impl<P: PortSink> Rechecked<'_, P> {
    /// The wave without the entities Port changed since they were listed (ours written
    /// earlier in this run are not rechecked). A recheck that fails fails its entities:
    /// they are retried next run.
    async fn drop_superseded(
        &self,
        blueprint: &str,
        wave: Vec<Entity>,
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
        let check_set: HashSet<&str> = check.iter().map(String::as_str).collect();
        let now = match self.port.list_own_among(blueprint, &check).await {
            Ok(found) => found,
            Err(e) => {
                let failure = WriteFailure {
                    status: e.status().unwrap_or(0),
                    error: "recheck_failed".into(),
                    message: format!("could not recheck the entity in Port before writing: {e}"),
                };
                let (failed, rest): (Vec<Entity>, Vec<Entity>) = wave
                    .into_iter()
                    .partition(|e| check_set.contains(e.identifier.as_str()));
                for entity in failed {
                    outcomes.record(entity.identifier, Err(failure.clone()));
                }
                return rest;
            }
        };
        let now: HashMap<String, _> = now
            .into_iter()
            .map(|s| (s.entity.identifier, s.updated_at))
            .collect();
        let mut keep = Vec::with_capacity(wave.len());
        for entity in wave {
            let id = entity.identifier.as_str();
            let listed = self.digest.get(blueprint, id).map(|s| s.updated_at);
            if check_set.contains(id) && listed != now.get(id).copied() {
                tracing::info!(
                    blueprint,
                    id,
                    "left alone: written or deleted in Port by someone else during this run"
                );
                outcomes.superseded.insert(entity.identifier);
            } else {
                keep.push(entity);
            }
        }
        keep
    }
}
