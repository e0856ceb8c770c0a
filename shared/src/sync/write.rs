//! Writing entities in dependency order: relation targets before the entities that point
//! at them, cycles broken, and one more try for writes whose targets were missing. Both
//! the resync and the live path write through here.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use serde_json::Value;

use crate::domain::targets;
use crate::port::{Entity, PortSink, WriteFailure};

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
    let (waves_idx, stuck) = wave_order(&deps);
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
        let full: Vec<Entity> = stuck
            .iter()
            .map(|&i| slots[i].take().expect("stuck once"))
            .collect();
        waves.extend(break_cycle(full));
    }
    waves
}

/// Waves of indices: each entity after those it depends on (`deps[i]`, indices into the
/// same list), and those in or behind a cycle, which no order can place.
pub fn wave_order(deps: &[Vec<usize>]) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); deps.len()];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut waves: Vec<Vec<usize>> = Vec::new();
    let mut ready: Vec<usize> = (0..deps.len()).filter(|&i| waiting[i] == 0).collect();
    let mut placed = vec![false; deps.len()];
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
        waves.push(std::mem::replace(&mut ready, next));
    }
    let stuck = (0..deps.len()).filter(|&i| !placed[i]).collect();
    (waves, stuck)
}

/// Entities that point at each other: written first without the relations among them,
/// then in full.
pub fn break_cycle(full: Vec<Entity>) -> [Vec<Entity>; 2] {
    let stuck_ids: HashSet<String> = full.iter().map(|e| e.identifier.clone()).collect();
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
    [stripped, full]
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

/// How one wave of a blueprint's entities reaches Port: the resync rechecks each wave
/// first, the live path writes it as it is.
#[async_trait]
pub trait WaveWriter: Send + Sync {
    /// Writes `wave` (or what is left of it) and records each entity's outcome.
    async fn write_wave(&self, blueprint: &str, wave: Vec<Entity>, outcomes: &mut Outcomes);
    /// Called once a blueprint's first pass is written.
    fn blueprint_written(&self, _blueprint: &str, _entities: usize) {}
}

/// Writes through `upsert` as it is.
pub struct Plain<'a>(pub &'a dyn PortSink);

#[async_trait]
impl WaveWriter for Plain<'_> {
    async fn write_wave(&self, blueprint: &str, wave: Vec<Entity>, outcomes: &mut Outcomes) {
        for result in self.0.upsert(blueprint, wave).await {
            outcomes.record(result.identifier, result.outcome);
        }
    }
}

/// The one write path: each blueprint's entities in `write_waves` order, blueprints in the
/// order given (relation targets first); then once more those that failed because a
/// relation target was missing, now that everything else is written.
pub async fn write_blueprints(
    writer: &dyn WaveWriter,
    pending: Vec<(String, Vec<Entity>)>,
    outcomes: &mut Outcomes,
) {
    let mut retry: Vec<(String, Vec<Entity>)> = Vec::new();
    for (blueprint, entities) in pending {
        let count = entities.len();
        let kept = entities.clone();
        write_in_waves(writer, &blueprint, entities, outcomes).await;
        writer.blueprint_written(&blueprint, count);
        let again: Vec<Entity> = kept
            .into_iter()
            .filter(|e| {
                outcomes
                    .failed
                    .get(&e.identifier)
                    .is_some_and(WriteFailure::is_not_found)
            })
            .collect();
        if !again.is_empty() {
            retry.push((blueprint, again));
        }
    }
    for (blueprint, entities) in retry {
        tracing::info!(
            blueprint,
            entities = entities.len(),
            "retrying writes whose relation targets were missing"
        );
        write_in_waves(writer, &blueprint, entities, outcomes).await;
    }
}

async fn write_in_waves(
    writer: &dyn WaveWriter,
    blueprint: &str,
    entities: Vec<Entity>,
    outcomes: &mut Outcomes,
) {
    let total = entities.len();
    let mut done = 0;
    for wave in write_waves(entities) {
        done += wave.len();
        writer.write_wave(blueprint, wave, outcomes).await;
        crate::progress::written(blueprint, done.min(total), total);
    }
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
}
