//! What a sync did: counts per blueprint, failures by id and reason, API usage.

use std::collections::BTreeMap;

use serde::Serialize;

/// Usage of one API during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ApiStats {
    /// Requests sent, retries included.
    pub calls: u64,
    /// 429 answers met.
    pub rate_limited: u64,
    /// Time spent paused for rate limits (summed over concurrent requests).
    pub rate_limit_wait_ms: u64,
}

impl ApiStats {
    /// Usage between two snapshots of a client's counters.
    pub fn since(self, before: ApiStats) -> ApiStats {
        ApiStats {
            calls: self.calls - before.calls,
            rate_limited: self.rate_limited - before.rate_limited,
            rate_limit_wait_ms: self.rate_limit_wait_ms - before.rate_limit_wait_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub identifier: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BlueprintReport {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub failed: Vec<Failure>,
    /// Okta objects of this blueprint's kind that the mapping could not turn into an
    /// entity (listed in `Report::unmapped`); the text report counts them as failed.
    pub unmapped: usize,
    /// Not written: a live event changed, created or deleted the entity in Port while this
    /// run read Okta, so Port holds newer data than the snapshot.
    pub superseded: usize,
    /// Deletions the mass-deletion guard refused (nothing of this blueprint was deleted).
    pub deletion_refused: usize,
    /// Dry run only: what a real run would create, update and delete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub create: Vec<String>,
    pub update: Vec<String>,
    pub delete: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub started_at: String,
    pub duration_ms: u64,
    pub dry_run: bool,
    pub blueprints: BTreeMap<String, BlueprintReport>,
    pub okta: ApiStats,
    pub port: ApiStats,
    /// Okta objects that could not be mapped to entities.
    pub unmapped: Vec<Failure>,
    /// Why the run is incomplete (failed listings, refused deletions); empty on success.
    pub errors: Vec<String>,
    /// Stopped at its time budget with a checkpoint saved: the next run goes on from it.
    pub resumable: bool,
    /// Set when this run went on from a checkpoint: when the resync it continues started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<String>,
    /// Bytes of users and pending writes kept on local disk instead of in memory.
    pub spilled_bytes: u64,
    /// Listings still to read when a resumable run stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listings_left: Option<usize>,
}

impl Report {
    pub fn blueprint(&mut self, blueprint: &str) -> &mut BlueprintReport {
        self.blueprints.entry(blueprint.to_owned()).or_default()
    }

    pub fn failed_entities(&self) -> usize {
        self.unmapped.len() + self.blueprints.values().map(|b| b.failed.len()).sum::<usize>()
    }

    /// A run succeeds when it saw all of Okta, wrote every entity and did every deletion.
    pub fn is_success(&self) -> bool {
        self.errors.is_empty() && self.failed_entities() == 0
    }

    /// One line naming what went wrong, for an error return.
    pub fn failure_summary(&self) -> String {
        let mut parts = self.errors.clone();
        for (bp, b) in &self.blueprints {
            if let Some(first) = b.failed.first() {
                parts.push(format!(
                    "{} {bp} entities failed (first: {}: {})",
                    b.failed.len(),
                    first.identifier,
                    first.reason
                ));
            }
        }
        parts.join("; ")
    }

    /// A human-readable table for the CLI.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{:<18} {:>8} {:>8} {:>10} {:>8} {:>7} {:>10}\n",
            "blueprint", "created", "updated", "unchanged", "deleted", "failed", "superseded"
        );
        for (bp, b) in &self.blueprints {
            out += &format!(
                "{bp:<18} {:>8} {:>8} {:>10} {:>8} {:>7} {:>10}\n",
                b.created,
                b.updated,
                b.unchanged,
                b.deleted,
                b.failed.len() + b.unmapped,
                b.superseded
            );
        }
        for (bp, b) in &self.blueprints {
            out += &listed(&format!("failed {bp}"), &b.failed);
            if let Some(plan) = &b.plan {
                for (verb, ids) in [
                    ("create", &plan.create),
                    ("update", &plan.update),
                    ("delete", &plan.delete),
                ] {
                    if !ids.is_empty() {
                        out += &format!("would {verb} {bp} ({}): {}\n", ids.len(), ids.join(", "));
                    }
                }
            }
        }
        out += &listed("not mapped", &self.unmapped);
        out += &format!(
            "Okta: {} calls, {} 429s, {} ms waiting on rate limits\nPort: {} calls, {} 429s\nduration: {} ms{}\n",
            self.okta.calls,
            self.okta.rate_limited,
            self.okta.rate_limit_wait_ms,
            self.port.calls,
            self.port.rate_limited,
            self.duration_ms,
            if self.dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        );
        if let Some(from) = &self.resumed_from {
            out += &format!("went on from the checkpoint of the resync started at {from}\n");
        }
        if self.resumable {
            let left = match self.listings_left.unwrap_or(0) {
                0 => "with Okta read and nothing written yet".to_owned(),
                n => format!("with {n} Okta listings left to read"),
            };
            out += &format!(
                "incomplete: the time budget ran out {left}; the checkpoint is saved, and \
                 the same command goes on from it\n"
            );
        }
        for e in &self.errors {
            out += &format!("error: {e}\n");
        }
        out
    }
}

/// Text lines shown per list of failures; `--json` has them all.
const LISTED: usize = 10;

/// `what id: reason` lines for the first few failures, and a count of the rest.
fn listed(what: &str, failures: &[Failure]) -> String {
    let mut out: String = failures
        .iter()
        .take(LISTED)
        .map(|f| format!("{what} {}: {}\n", f.identifier, f.reason))
        .collect();
    if failures.len() > LISTED {
        out += &format!(
            "{what}: {} more (--json lists them all)\n",
            failures.len() - LISTED
        );
    }
    out
}

/// What happened to a batch.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct BatchReport {
    /// Message ids to report as `batchItemFailures` (they come back, then go to the DLQ).
    pub failed_messages: Vec<String>,
    /// Why, per failed message.
    pub failures: BTreeMap<String, String>,
    pub events: usize,
    pub duplicates: usize,
    pub ignored: usize,
    pub converged: usize,
    pub okta_calls: u64,
}

impl BatchReport {
    /// Fails `message` for `reason` (its first reason is kept).
    pub fn fail(&mut self, message: &str, reason: String) {
        if !self.failures.contains_key(message) {
            self.failed_messages.push(message.to_owned());
            self.failures.insert(message.to_owned(), reason);
        }
    }
}
