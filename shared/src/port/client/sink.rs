//! `PortSink` over HTTP: bulk upserts (20 entities or 1 MiB a call, per-entity results from
//! Port's 207), bulk deletes, and the searches of our own entities.

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use std::sync::atomic::Ordering;

use super::{Client, ENVELOPE_BYTES, Envelope};
use crate::port::{
    BULK_DELETE_MAX, BULK_MAX_ENTITIES, DeleteResult, Entity, MAX_BODY_BYTES, PortError, PortSink,
    StoredEntity, WriteFailure, WriteResult,
};
use crate::report::{ApiStats, Failure};

impl Client {
    async fn bulk_upsert(&self, blueprint: &str, batch: Vec<(Entity, Vec<u8>)>) -> Vec<WriteResult> {
        let route = format!("/v1/blueprints/{blueprint}/entities/bulk");
        let url = self.url(&["blueprints", blueprint, "entities", "bulk"], UPSERT_QUERY);
        let answer = self
            .request(Method::POST, url, &route, Some(bulk_body(&batch).into()))
            .await;
        let ids: Vec<String> = batch.iter().map(|(e, _)| e.identifier.clone()).collect();
        match answer {
            Ok((status, _, bytes)) if status == StatusCode::OK || status.as_u16() == 207 => {
                bulk_results(ids, &bytes)
            }
            Ok((StatusCode::PAYLOAD_TOO_LARGE, _, _)) => {
                tracing::warn!(
                    blueprint,
                    entities = ids.len(),
                    "bulk upsert too large; sending one by one"
                );
                let mut results = Vec::with_capacity(batch.len());
                for (entity, bytes) in batch {
                    results.push(self.single_upsert(blueprint, entity.identifier, bytes).await);
                }
                results
            }
            Ok((status, headers, bytes)) => match Self::api_error(&route, status, &headers, &bytes) {
                PortError::Api {
                    status,
                    error,
                    message,
                    ..
                } => fail_all(&ids, status, &error, &message),
                other => fail_all(&ids, status.as_u16(), "error", &other.to_string()),
            },
            Err(e) => fail_all(&ids, e.status().unwrap_or(0), "request_failed", &e.to_string()),
        }
    }

    async fn single_upsert(&self, blueprint: &str, identifier: String, body: Vec<u8>) -> WriteResult {
        let route = format!("/v1/blueprints/{blueprint}/entities");
        let url = self.url(&["blueprints", blueprint, "entities"], UPSERT_QUERY);
        let outcome = match self.request(Method::POST, url, &route, Some(body.into())).await {
            Ok((status, _, _)) if status.is_success() => Ok(status == StatusCode::CREATED),
            Ok((status, _, bytes)) => {
                let env: Envelope = serde_json::from_slice(&bytes).unwrap_or_default();
                Err(WriteFailure {
                    status: status.as_u16(),
                    error: env.error,
                    message: env.message,
                })
            }
            Err(e) => Err(WriteFailure {
                status: e.status().unwrap_or(0),
                error: "request_failed".into(),
                message: e.to_string(),
            }),
        };
        WriteResult { identifier, outcome }
    }

    async fn delete_batch(&self, blueprint: &str, ids: &[String]) -> Result<Vec<String>, PortError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct DeleteResponse {
            deleted_entities: Vec<String>,
        }
        let route = format!("/v1/blueprints/{blueprint}/bulk/entities/delete");
        let url = self.url(
            &["blueprints", blueprint, "bulk", "entities", "delete"],
            &[("delete_dependents", "false")],
        );
        let body = serde_json::to_vec(&json!({ "entities": ids })).expect("serializable");
        let (status, headers, bytes) = self.request(Method::POST, url, &route, Some(body.into())).await?;
        if !status.is_success() {
            return Err(Self::api_error(&route, status, &headers, &bytes));
        }
        let parsed: DeleteResponse =
            serde_json::from_slice(&bytes).map_err(|e| PortError::InvalidResponse {
                route: route.clone(),
                message: e.to_string(),
            })?;
        Ok(parsed.deleted_entities)
    }
}

/// A bulk delete's identifiers and Port's answer.
type ChunkAnswer = (Vec<String>, Result<Vec<String>, PortError>);

/// `{"entities":[…]}` from the already serialized entities.
fn bulk_body(batch: &[(Entity, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.iter().map(|(_, b)| b.len() + 1).sum::<usize>() + ENVELOPE_BYTES);
    body.extend_from_slice(b"{\"entities\":[");
    for (i, (_, bytes)) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(bytes);
    }
    body.extend_from_slice(b"]}");
    body
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BulkResponse {
    entities: Vec<BulkOk>,
    errors: Vec<BulkErr>,
}

#[derive(Deserialize)]
struct BulkOk {
    index: usize,
    created: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkErr {
    index: usize,
    status_code: u16,
    error: String,
    message: String,
}

/// One result per entity of a bulk answer (200 or 207), by index; an entity the answer
/// does not mention failed.
fn bulk_results(ids: Vec<String>, bytes: &[u8]) -> Vec<WriteResult> {
    let parsed: BulkResponse = match serde_json::from_slice(bytes) {
        Ok(p) => p,
        Err(e) => return fail_all(&ids, 0, "invalid_response", &e.to_string()),
    };
    let mut outcomes: Vec<Option<Result<bool, WriteFailure>>> = vec![None; ids.len()];
    for ok in parsed.entities {
        if let Some(slot) = outcomes.get_mut(ok.index) {
            *slot = Some(Ok(ok.created));
        }
    }
    for err in parsed.errors {
        if let Some(slot) = outcomes.get_mut(err.index) {
            *slot = Some(Err(WriteFailure {
                status: err.status_code,
                error: err.error,
                message: err.message,
            }));
        }
    }
    ids.into_iter()
        .zip(outcomes)
        .map(|(identifier, outcome)| WriteResult {
            identifier,
            outcome: outcome.unwrap_or_else(|| {
                Err(WriteFailure {
                    status: 0,
                    error: "missing_result".into(),
                    message: "Port's bulk answer had no result for this entity".into(),
                })
            }),
        })
        .collect()
}

const UPSERT_QUERY: &[(&str, &str)] = &[
    ("upsert", "true"),
    ("merge", "true"),
    ("create_missing_related_entities", "false"),
    ("validation_only", "false"),
];

fn fail_all(ids: &[String], status: u16, error: &str, message: &str) -> Vec<WriteResult> {
    ids.iter()
        .map(|id| WriteResult {
            identifier: id.clone(),
            outcome: Err(WriteFailure {
                status,
                error: error.into(),
                message: message.into(),
            }),
        })
        .collect()
}

/// A per-entity failure worth sending again: Port or its proxy was briefly unable.
fn is_transient(outcome: &Result<bool, WriteFailure>) -> bool {
    matches!(outcome, Err(f) if f.status == 429 || f.status >= 500)
}

/// Splits serialized entities into bulk batches of at most 20 entities and 1 MiB.
fn batches(entities: Vec<Entity>) -> Vec<Vec<(Entity, Vec<u8>)>> {
    let mut out: Vec<Vec<(Entity, Vec<u8>)>> = Vec::new();
    let mut size = 0;
    for entity in entities {
        let bytes = serde_json::to_vec(&entity).expect("entities serialize");
        let fits = out.last().is_some_and(|b| {
            b.len() < BULK_MAX_ENTITIES && size + bytes.len() + 1 + ENVELOPE_BYTES <= MAX_BODY_BYTES
        });
        if !fits {
            out.push(Vec::new());
            size = 0;
        }
        size += bytes.len() + 1;
        out.last_mut().expect("just pushed").push((entity, bytes));
    }
    out
}

#[async_trait::async_trait]
impl PortSink for Client {
    async fn ensure_blueprints(&self, blueprints: &[Value]) -> Result<Vec<String>, PortError> {
        let mut created = Vec::new();
        for bp in blueprints {
            let id = bp["identifier"].as_str().unwrap_or_default();
            if self.blueprint(id).await?.is_some() {
                continue;
            }
            // Bare first: a relation may target a blueprint (even this one) not created yet.
            let mut bare = bp.clone();
            if let Some(obj) = bare.as_object_mut() {
                obj.remove("relations");
            }
            let route = "/v1/blueprints";
            let body = serde_json::to_vec(&bare).expect("serializable");
            let (status, headers, bytes) = self
                .request(
                    Method::POST,
                    self.url(&["blueprints"], &[]),
                    route,
                    Some(body.into()),
                )
                .await?;
            if !status.is_success() {
                return Err(Self::api_error(route, status, &headers, &bytes));
            }
            tracing::info!(blueprint = id, "created blueprint");
            created.push(id.to_owned());
        }
        for bp in blueprints {
            let id = bp["identifier"].as_str().unwrap_or_default();
            let relations = &bp["relations"];
            if !created.iter().any(|c| c == id) || relations.as_object().is_none_or(|r| r.is_empty()) {
                continue;
            }
            let route = format!("/v1/blueprints/{id}");
            let body = serde_json::to_vec(&json!({ "relations": relations })).expect("serializable");
            let (status, headers, bytes) = self
                .request(
                    Method::PATCH,
                    self.url(&["blueprints", id], &[]),
                    &route,
                    Some(body.into()),
                )
                .await?;
            if !status.is_success() {
                return Err(Self::api_error(&route, status, &headers, &bytes));
            }
        }
        Ok(created)
    }

    async fn blueprint(&self, blueprint: &str) -> Result<Option<Value>, PortError> {
        let route = format!("/v1/blueprints/{blueprint}");
        let (status, headers, bytes) = self
            .request(
                Method::GET,
                self.url(&["blueprints", blueprint], &[]),
                &route,
                None,
            )
            .await?;
        match status {
            s if s.is_success() => {
                let mut answer: Value =
                    serde_json::from_slice(&bytes).map_err(|e| PortError::InvalidResponse {
                        route: route.clone(),
                        message: e.to_string(),
                    })?;
                Ok(Some(answer["blueprint"].take()))
            }
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(Self::api_error(&route, s, &headers, &bytes)),
        }
    }

    async fn upsert(&self, blueprint: &str, entities: Vec<Entity>) -> Vec<WriteResult> {
        // Entities a bulk answer failed with a 5xx or 429 of their own (inside a 207) are
        // sent again, with back-off, within the retry budget; the rest are final.
        let mut results: Vec<Option<WriteResult>> = vec![None; entities.len()];
        let mut pending: Vec<(usize, Entity)> = entities.into_iter().enumerate().collect();
        let mut round = 0;
        while !pending.is_empty() {
            round += 1;
            let (slots, batch): (Vec<usize>, Vec<Entity>) = pending.iter().cloned().unzip();
            let answers: Vec<Vec<WriteResult>> = futures::stream::iter(batches(batch))
                .map(|batch| self.bulk_upsert(blueprint, batch))
                .buffered(self.inner.max_concurrency)
                .collect()
                .await;
            let mut again = Vec::new();
            for ((slot, result), entity) in slots
                .into_iter()
                .zip(answers.into_iter().flatten())
                .zip(pending.into_iter().map(|(_, e)| e))
            {
                if is_transient(&result.outcome) && round < self.inner.retry.max_attempts {
                    again.push((slot, entity));
                } else {
                    results[slot] = Some(result);
                }
            }
            if !again.is_empty() {
                tracing::warn!(
                    blueprint,
                    entities = again.len(),
                    attempt = round,
                    "Port failed some entities of a bulk upsert transiently; retrying them"
                );
                tokio::time::sleep(self.inner.retry.backoff(round)).await;
            }
            pending = again;
        }
        results.into_iter().flatten().collect()
    }

    async fn delete(&self, blueprint: &str, identifiers: &[String]) -> DeleteResult {
        let chunks: Vec<Vec<String>> = identifiers
            .chunks(BULK_DELETE_MAX)
            .map(<[String]>::to_vec)
            .collect();
        let answers: Vec<ChunkAnswer> = futures::stream::iter(chunks)
            .map(|chunk| async move {
                let answer = self.delete_batch(blueprint, &chunk).await;
                (chunk, answer)
            })
            .buffered(self.inner.max_concurrency)
            .collect()
            .await;
        let mut result = DeleteResult::default();
        for (chunk, answer) in answers {
            match answer {
                Ok(deleted) => {
                    // Port's list is the truth. A call that succeeded but did not name an
                    // id found nothing to delete: someone deleted it first.
                    result
                        .absent
                        .extend(chunk.iter().filter(|id| !deleted.contains(id)).cloned());
                    result.deleted.extend(deleted);
                }
                Err(e) => result.failed.extend(chunk.iter().map(|id| Failure {
                    identifier: id.clone(),
                    reason: e.to_string(),
                })),
            }
        }
        result
    }

    async fn list_own_pages(
        &self,
        blueprint: &str,
        on_page: &mut (dyn FnMut(Vec<StoredEntity>) + Send),
    ) -> Result<(), PortError> {
        self.search_own_pages(blueprint, Vec::new(), on_page).await
    }

    /// Searched 100 identifiers at a time.
    async fn list_own_among(
        &self,
        blueprint: &str,
        identifiers: &[String],
    ) -> Result<Vec<StoredEntity>, PortError> {
        let mut found = Vec::new();
        for chunk in identifiers.chunks(BULK_DELETE_MAX) {
            let rule = json!({ "property": "$identifier", "operator": "in", "value": chunk });
            found.extend(self.search_own(blueprint, vec![rule]).await?);
        }
        Ok(found)
    }

    async fn own_related(
        &self,
        blueprint: &str,
        target_blueprint: &str,
        target: &str,
    ) -> Result<Vec<StoredEntity>, PortError> {
        // Our entities point at `target`: they depend on it, so they are downstream of it
        // ("upstream" would list what `target` itself points at).
        let rule = json!({ "operator": "relatedTo", "blueprint": target_blueprint, "value": target, "direction": "downstream" });
        self.search_own(blueprint, vec![rule]).await
    }

    async fn own_where(
        &self,
        blueprint: &str,
        property: &str,
        value: &str,
    ) -> Result<Vec<StoredEntity>, PortError> {
        let rule = json!({ "property": property, "operator": "=", "value": value });
        self.search_own(blueprint, vec![rule]).await
    }

    fn stats(&self) -> ApiStats {
        ApiStats {
            calls: self.inner.calls.load(Ordering::Relaxed),
            rate_limited: self.inner.rate_limited.load(Ordering::Relaxed),
            rate_limit_wait_ms: self.inner.waited_ms.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(id: &str, filler: usize) -> Entity {
        Entity {
            identifier: id.into(),
            title: Some("x".repeat(filler)),
            properties: Default::default(),
            relations: Default::default(),
        }
    }

    #[test]
    fn batches_respect_count_and_size() {
        let small: Vec<Entity> = (0..45).map(|i| entity(&i.to_string(), 10)).collect();
        let sizes: Vec<usize> = batches(small).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![20, 20, 5]);
        // 300 KiB each: three fit under 1 MiB, a fourth does not.
        let big: Vec<Entity> = (0..7).map(|i| entity(&i.to_string(), 300 * 1024)).collect();
        let sizes: Vec<usize> = batches(big).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 3, 1]);
    }
}
