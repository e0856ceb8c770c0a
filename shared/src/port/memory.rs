//! An in-memory Port catalog behind `PortSink`, for the core's fast tests. As strict as
//! Port where the core relies on it: a relation to an entity that does not exist is a
//! per-entity `404 not_found` (no placeholder is created), upserts merge, and every write
//! moves the entity's `updatedAt`. Every entity here counts as this installation's.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{Duration, TimeZone, Utc};
use serde_json::Value;

use super::{DeleteResult, Entity, PortError, PortSink, StoredEntity, WriteFailure, WriteResult};
use crate::domain::targets;
use crate::report::ApiStats;

#[derive(Default)]
pub struct MemoryPort {
    catalog: Mutex<Catalog>,
    calls: AtomicU64,
}

#[derive(Default)]
struct Catalog {
    blueprints: BTreeMap<String, Value>,
    entities: BTreeMap<String, BTreeMap<String, StoredEntity>>,
    /// Port's clock, one tick per write.
    ticks: i64,
}

impl MemoryPort {
    /// The entity as Port holds it now.
    pub fn entity(&self, blueprint: &str, identifier: &str) -> Option<Entity> {
        let catalog = self.catalog.lock().unwrap();
        let stored = catalog.entities.get(blueprint)?.get(identifier)?;
        Some(stored.entity.clone())
    }

    /// The identifiers of a blueprint's entities, sorted.
    pub fn identifiers(&self, blueprint: &str) -> Vec<String> {
        let catalog = self.catalog.lock().unwrap();
        catalog
            .entities
            .get(blueprint)
            .map(|e| e.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn call(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.catalog.lock().unwrap()
    }
}

impl Catalog {
    /// Merges `entity` in, unless one of its relations names an entity that does not exist.
    fn upsert(&mut self, blueprint: &str, entity: Entity) -> Result<bool, WriteFailure> {
        for (relation, value) in &entity.relations {
            let target_bp = self.blueprints[blueprint]["relations"][relation]["target"]
                .as_str()
                .unwrap_or(blueprint)
                .to_owned();
            let known = self.entities.get(&target_bp);
            if let Some(missing) = targets(value)
                .into_iter()
                .find(|t| !known.is_some_and(|k| k.contains_key(*t)))
            {
                return Err(WriteFailure {
                    status: 404,
                    error: "not_found".into(),
                    message: format!("{relation}: {target_bp} entity {missing} does not exist"),
                });
            }
        }
        self.ticks += 1;
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap() + Duration::seconds(self.ticks);
        let entities = self.entities.entry(blueprint.to_owned()).or_default();
        let created = !entities.contains_key(&entity.identifier);
        let stored = entities
            .entry(entity.identifier.clone())
            .or_insert_with(|| StoredEntity {
                entity: Entity {
                    identifier: entity.identifier.clone(),
                    title: None,
                    properties: Default::default(),
                    relations: Default::default(),
                },
                updated_at: None,
            });
        if entity.title.is_some() {
            stored.entity.title = entity.title;
        }
        stored.entity.properties.extend(entity.properties);
        stored.entity.relations.extend(entity.relations);
        stored.updated_at = Some(at);
        Ok(created)
    }

    fn own(&self, blueprint: &str, keep: impl Fn(&StoredEntity) -> bool) -> Vec<StoredEntity> {
        let all = self.entities.get(blueprint).into_iter().flat_map(|e| e.values());
        all.filter(|s| keep(s)).cloned().collect()
    }
}

#[async_trait]
impl PortSink for MemoryPort {
    async fn ensure_blueprints(&self, blueprints: &[Value]) -> Result<Vec<String>, PortError> {
        let mut catalog = self.call();
        let mut created = Vec::new();
        for bp in blueprints {
            let id = bp["identifier"].as_str().unwrap_or_default().to_owned();
            if !catalog.blueprints.contains_key(&id) {
                catalog.blueprints.insert(id.clone(), bp.clone());
                created.push(id);
            }
        }
        Ok(created)
    }
    async fn blueprint(&self, blueprint: &str) -> Result<Option<Value>, PortError> {
        Ok(self.call().blueprints.get(blueprint).cloned())
    }
    async fn upsert(&self, blueprint: &str, entities: Vec<Entity>) -> Vec<WriteResult> {
        let mut catalog = self.call();
        entities
            .into_iter()
            .map(|entity| WriteResult {
                identifier: entity.identifier.clone(),
                outcome: catalog.upsert(blueprint, entity),
            })
            .collect()
    }
    async fn delete(&self, blueprint: &str, identifiers: &[String]) -> DeleteResult {
        let mut catalog = self.call();
        let mut result = DeleteResult::default();
        let entities = catalog.entities.entry(blueprint.to_owned()).or_default();
        for id in identifiers {
            match entities.remove(id) {
                Some(_) => result.deleted.push(id.clone()),
                None => result.absent.push(id.clone()),
            }
        }
        // Port clears the references to what it deleted (delete_dependents=false).
        for stored in catalog.entities.values_mut().flat_map(|e| e.values_mut()) {
            for value in stored.entity.relations.values_mut() {
                match value {
                    Value::String(s) if identifiers.contains(s) => *value = Value::Null,
                    Value::Array(items) => {
                        items.retain(|i| !i.as_str().is_some_and(|s| identifiers.iter().any(|d| d == s)))
                    }
                    _ => {}
                }
            }
        }
        result
    }
    async fn list_own_pages(
        &self,
        blueprint: &str,
        on_page: &mut (dyn FnMut(Vec<StoredEntity>) + Send),
    ) -> Result<(), PortError> {
        on_page(self.call().own(blueprint, |_| true));
        Ok(())
    }
    async fn list_own_among(
        &self,
        blueprint: &str,
        identifiers: &[String],
    ) -> Result<Vec<StoredEntity>, PortError> {
        Ok(self
            .call()
            .own(blueprint, |s| identifiers.contains(&s.entity.identifier)))
    }
    async fn own_related(
        &self,
        blueprint: &str,
        _target_blueprint: &str,
        target: &str,
    ) -> Result<Vec<StoredEntity>, PortError> {
        Ok(self.call().own(blueprint, |s| {
            s.entity.relations.values().any(|v| targets(v).contains(&target))
        }))
    }
    async fn own_where(
        &self,
        blueprint: &str,
        property: &str,
        value: &str,
    ) -> Result<Vec<StoredEntity>, PortError> {
        Ok(self.call().own(blueprint, |s| {
            s.entity.properties.get(property).and_then(Value::as_str) == Some(value)
        }))
    }
    fn stats(&self) -> ApiStats {
        ApiStats {
            calls: self.calls.load(Ordering::Relaxed),
            ..ApiStats::default()
        }
    }
}
