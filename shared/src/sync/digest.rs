//! Port's side of a resync, compact: for each entity of ours, Port's `updatedAt` and a
//! hash of each field, not the entity. The listing is digested a page at a time, so a
//! catalog of any size costs a few dozen bytes per entity, and the digest can be saved
//! with a checkpoint. Hashes are XXH64 of a canonical form, the same in every process.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use twox_hash::XxHash64;

use crate::domain::{Entity, targets};
use crate::port::StoredEntity;

/// One entity of ours as Port had it when listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    #[serde(rename = "u")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(rename = "t")]
    title: Option<u64>,
    /// (field, value) hashes, sorted by field; null fields and empty relations left out.
    #[serde(rename = "f")]
    fields: Box<[(u64, u64)]>,
    /// Produced by this run's snapshot (so not to be deleted).
    #[serde(skip)]
    seen: bool,
}

/// What the digest says of an entity the snapshot produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Port already holds what we would write.
    Unchanged,
    /// Ours, but different.
    Changed,
    /// Not an entity of ours in Port.
    New,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Digest {
    blueprints: BTreeMap<String, HashMap<Box<str>, Stored>>,
}

impl Digest {
    pub fn add_blueprint(&mut self, blueprint: &str) {
        self.blueprints.entry(blueprint.to_owned()).or_default();
    }

    pub fn add(&mut self, blueprint: &str, stored: StoredEntity) {
        let entity = stored.entity;
        let mut fields: Vec<(u64, u64)> = entity
            .properties
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (field_hash('p', k), value_hash(v)))
            .chain(
                entity
                    .relations
                    .iter()
                    .filter_map(|(k, v)| Some((field_hash('r', k), relation_hash(v)?))),
            )
            .collect();
        fields.sort_unstable();
        let digest = Stored {
            updated_at: stored.updated_at,
            title: entity.title.as_deref().map(text_hash),
            fields: fields.into_boxed_slice(),
            seen: false,
        };
        self.blueprints
            .entry(blueprint.to_owned())
            .or_default()
            .insert(entity.identifier.into_boxed_str(), digest);
    }

    /// Compares `desired` with Port's copy (only the fields we write: a merge upsert
    /// leaves the others alone; null, absent and an empty relation are alike) and marks
    /// Port's copy as produced by this run.
    pub fn check(&mut self, blueprint: &str, desired: &Entity) -> Known {
        let Some(stored) = self
            .blueprints
            .get_mut(blueprint)
            .and_then(|b| b.get_mut(desired.identifier.as_str()))
        else {
            return Known::New;
        };
        stored.seen = true;
        if stored.holds(desired) {
            Known::Unchanged
        } else {
            Known::Changed
        }
    }

    pub fn get(&self, blueprint: &str, id: &str) -> Option<&Stored> {
        self.blueprints.get(blueprint)?.get(id)
    }

    pub fn contains(&self, blueprint: &str, id: &str) -> bool {
        self.get(blueprint, id).is_some()
    }

    /// How many entities of ours the blueprint had.
    pub fn len(&self, blueprint: &str) -> usize {
        self.blueprints.get(blueprint).map_or(0, HashMap::len)
    }

    pub fn total(&self) -> usize {
        self.blueprints.values().map(HashMap::len).sum()
    }

    /// Ours in Port, not produced by this run's snapshot: sorted.
    pub fn unseen(&self, blueprint: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .blueprints
            .get(blueprint)
            .into_iter()
            .flatten()
            .filter(|(_, s)| !s.seen)
            .map(|(id, _)| id.to_string())
            .collect();
        ids.sort();
        ids
    }
}

impl Stored {
    fn holds(&self, desired: &Entity) -> bool {
        let field = |key: u64| {
            self.fields
                .binary_search_by_key(&key, |&(k, _)| k)
                .ok()
                .map(|i| self.fields[i].1)
        };
        (desired.title.is_none() || desired.title.as_deref().map(text_hash) == self.title)
            && desired.properties.iter().all(|(k, v)| {
                let stored = field(field_hash('p', k));
                if v.is_null() {
                    stored.is_none()
                } else {
                    stored == Some(value_hash(v))
                }
            })
            && desired
                .relations
                .iter()
                .all(|(k, v)| field(field_hash('r', k)) == relation_hash(v))
    }
}

fn field_hash(kind: char, key: &str) -> u64 {
    let mut h = XxHash64::with_seed(0);
    h.write(&[kind as u8, 0]);
    h.write(key.as_bytes());
    h.finish()
}

fn text_hash(text: &str) -> u64 {
    XxHash64::oneshot(0, text.as_bytes())
}

/// Of the JSON text, whose object keys serde_json keeps sorted: one value, one text.
fn value_hash(value: &Value) -> u64 {
    struct Writer(XxHash64);
    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = Writer(XxHash64::with_seed(0));
    serde_json::to_writer(&mut w, value).expect("a JSON value serializes");
    w.0.finish()
}

/// Of the sorted, distinct target ids; `None` for no target at all.
fn relation_hash(value: &Value) -> Option<u64> {
    let mut ids = targets(value);
    if ids.is_empty() {
        return None;
    }
    ids.sort_unstable();
    ids.dedup();
    let mut h = XxHash64::with_seed(0);
    for id in ids {
        h.write(id.as_bytes());
        h.write(&[0]);
    }
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::write::is_unchanged;
    use serde_json::json;

    fn entity(v: Value) -> Entity {
        serde_json::from_value(v).unwrap()
    }

    /// The digest decides as `is_unchanged` does on whole entities.
    #[test]
    fn the_digest_agrees_with_the_whole_comparison() {
        let stored = entity(json!({
            "identifier": "00u1", "title": "Ann",
            "properties": { "dept": "R&D", "custom": "kept by merge", "gone": null, "tags": ["a"] },
            "relations": { "groups": ["00g2", "00g1"], "manager": null }
        }));
        let cases = [
            json!({ "identifier": "00u1", "title": "Ann", "properties": { "dept": "R&D" }, "relations": { "groups": ["00g1", "00g2", "00g1"] } }),
            json!({ "identifier": "00u1", "properties": { "gone": null, "tags": ["a"] }, "relations": { "manager": null, "apps": [] } }),
            json!({ "identifier": "00u1", "title": "Bob", "properties": {}, "relations": {} }),
            json!({ "identifier": "00u1", "properties": { "dept": "Ops" }, "relations": {} }),
            json!({ "identifier": "00u1", "properties": { "tags": [] }, "relations": {} }),
            json!({ "identifier": "00u1", "properties": {}, "relations": { "groups": ["00g1"] } }),
            json!({ "identifier": "00u1", "properties": {}, "relations": { "manager": "00u9" } }),
            json!({ "identifier": "00u1", "properties": { "dept": null }, "relations": {} }),
        ];
        for case in cases {
            let desired = entity(case.clone());
            let mut digest = Digest::default();
            digest.add(
                "user",
                StoredEntity {
                    entity: stored.clone(),
                    updated_at: None,
                },
            );
            let whole = is_unchanged(&desired, &stored);
            let known = digest.check("user", &desired);
            assert_eq!(known == Known::Unchanged, whole, "{case}");
            assert!(digest.unseen("user").is_empty());
        }
        let mut digest = Digest::default();
        assert_eq!(
            digest.check("user", &entity(json!({ "identifier": "x" }))),
            Known::New
        );
    }
}
