//! One full resync: list our entities in Port (into a digest), read Okta (into a compact
//! snapshot, every listing at once), map and write what changed, delete what vanished.
//!
//! "Written by someone else during this run" is decided on Port's own timestamps: our
//! entities are listed before Okta is read, and an entity whose `updatedAt` differs when
//! rechecked (just before its write or deletion) was changed since. No local clock, no
//! margin: an entity that vanished from Okta is deleted by the very next run.
//!
//! A run given a stop time and a state store may stop before the snapshot is complete:
//! it saves a checkpoint (`sync::checkpoint`) and the next run goes on from it.

mod plan;
mod writes;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;

use self::plan::plan;
use self::writes::{Rechecked, WriteStop, tally_writes, write_pending};
use super::SyncError;
use super::checkpoint::{self, Job};
use super::digest::Digest;
use super::snapshot::{ReadEnd, Snapshot, Spill, read_okta};
use crate::config::ResyncOptions;
use crate::mapping::{Mapping, ObjectKind};
use crate::okta::OktaSource;
use crate::port::{PortError, PortSink};
use crate::report::{Failure, Plan, Report};
use crate::state::StateStore;

/// How long a run may go on, and where it saves its checkpoint when it must stop.
#[derive(Clone, Copy, Default)]
pub struct Budget<'a> {
    /// Reading Okta stops here (pages already asked for get a few seconds more).
    pub stop_at: Option<tokio::time::Instant>,
    /// Writing stops here, between chunks (with a store to save the checkpoint in).
    pub write_stop_at: Option<tokio::time::Instant>,
    pub checkpoints: Option<&'a dyn StateStore>,
    /// The checkpoint's name in the store.
    pub name: &'a str,
    /// A checkpoint of a resync started longer ago than this is discarded.
    pub max_age: Duration,
}

/// One full resync, start to end.
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
    resync_within(okta, port, mapping, options, Budget::default()).await
}

/// A full resync, or the part of one that fits the budget. Returns a report (which may
/// list failures, or say the run stopped and is resumable) or, when Port itself could not
/// be prepared or read, or the mapping cannot work, an error before anything was written.
pub async fn resync_within<O, P, M>(
    okta: &O,
    port: &P,
    mapping: &M,
    options: &ResyncOptions,
    budget: Budget<'_>,
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
    let resumed = match budget.checkpoints {
        Some(store) => checkpoint::load(store, budget.name, budget.max_age).await?,
        None => None,
    };
    let mut job = match resumed {
        Some(job) => {
            tracing::info!(started_at = %job.started_at, run = job.runs, "going on from the resync checkpoint");
            report.resumed_from = Some(job.started_at.to_rfc3339());
            job
        }
        None => Job {
            started_at: Utc::now(),
            digest: list_digest(port, &blueprints).await?,
            snapshot: Snapshot::new(),
            users: Spill::new().map_err(SyncError::Spill)?,
            runs: 1,
            written: Default::default(),
        },
    };
    let result = resync_job(
        okta,
        port,
        mapping,
        options,
        budget,
        &blueprints,
        &mut job,
        &mut report,
    )
    .await;
    report.okta = okta.stats().since(okta_before);
    report.port = port.stats().since(port_before);
    report.duration_ms = clock.elapsed().as_millis() as u64;
    result.map(|()| report)
}

#[allow(clippy::too_many_arguments)]
async fn resync_job<O: OktaSource, P: PortSink, M: Mapping>(
    okta: &O,
    port: &P,
    mapping: &M,
    options: &ResyncOptions,
    budget: Budget<'_>,
    blueprints: &[String],
    job: &mut Job,
    report: &mut Report,
) -> Result<(), SyncError> {
    crate::progress::phase("reading Okta");
    let read_before = job.snapshot.is_read();
    let end = read_okta(okta, &mut job.snapshot, &mut job.users, budget.stop_at)
        .await
        .map_err(SyncError::Spill)?;
    report.spilled_bytes = job.users.len();
    // Writes start before the stop time, or in a run of their own: a read that ended
    // late would leave them too little of the invocation.
    let late = !read_before && budget.stop_at.is_some_and(|t| tokio::time::Instant::now() >= t);
    if end == ReadEnd::Stopped || (late && budget.checkpoints.is_some()) {
        return pause(budget, job, report).await;
    }
    job.snapshot.finish();
    report.errors.extend(job.snapshot.errors.iter().cloned());
    for bp in blueprints {
        let bp_report = report.blueprint(bp);
        if options.dry_run {
            bp_report.plan = Some(Plan::default());
        }
    }
    crate::progress::phase("mapping");
    let (mut pending, left) = plan(
        mapping,
        &job.snapshot,
        &mut job.users,
        &mut job.digest,
        &job.written,
        report,
        options.dry_run,
    )
    .map_err(SyncError::Spill)?;
    if !left.configuration_errors.is_empty() {
        return Err(SyncError::Configuration(summarize(&left.configuration_errors)));
    }
    record_unmapped(report, mapping, left.failures);
    report.spilled_bytes += pending.spill.len();
    if !options.dry_run && !write(port, budget, blueprints, &mut pending, job, report).await? {
        return pause(budget, job, report).await;
    }
    drop(pending);
    crate::progress::phase("deleting what Okta no longer has");
    delete_stale(port, blueprints, &job.digest, options, report).await;
    if let Some(store) = budget.checkpoints
        && let Err(e) = checkpoint::remove(store, budget.name).await
    {
        report.errors.push(format!(
            "the finished resync's checkpoint could not be removed: {e}"
        ));
    }
    Ok(())
}

/// Writes what the plan holds; `false` when the writes stopped at the budget's write stop
/// (what was written is then kept in the job, for the next run to skip).
async fn write<P: PortSink>(
    port: &P,
    budget: Budget<'_>,
    blueprints: &[String],
    pending: &mut plan::Pending,
    job: &mut Job,
    report: &mut Report,
) -> Result<bool, SyncError> {
    crate::progress::phase("writing to Port");
    let mut outcomes = super::write::Outcomes::default();
    let writer = Rechecked {
        port,
        digest: &job.digest,
    };
    let mut stop = WriteStop {
        stop_at: budget.checkpoints.and(budget.write_stop_at),
        chunks: 0,
    };
    let complete = write_pending(&writer, blueprints, pending, &mut outcomes, &mut stop)
        .await
        .map_err(SyncError::Spill)?;
    tally_writes(pending, &job.digest, &outcomes, report);
    if !complete {
        for (bp, entities) in &pending.blueprints {
            let done = entities
                .iter()
                .filter(|e| outcomes.written.contains(&*e.identifier))
                .map(|e| e.identifier.to_string());
            job.written.entry(bp.clone()).or_default().extend(done);
        }
    }
    Ok(complete)
}

/// Saves the checkpoint; the report says the run stopped and can go on.
async fn pause(budget: Budget<'_>, job: &mut Job, report: &mut Report) -> Result<(), SyncError> {
    let store = budget.checkpoints.expect("a run that may stop has a state store");
    checkpoint::save(store, budget.name, job).await?;
    report.resumable = true;
    report.listings_left = Some(job.snapshot.pending().len());
    tracing::info!(
        listings_left = report.listings_left,
        "resync stopped at its time budget; checkpoint saved"
    );
    Ok(())
}

/// This installation's entities per blueprint, digested page by page.
async fn list_digest<P: PortSink>(port: &P, blueprints: &[String]) -> Result<Digest, SyncError> {
    crate::progress::phase("reading this installation's entities in Port");
    let mut digest = Digest::default();
    for bp in blueprints {
        digest.add_blueprint(bp);
        port.list_own_pages(bp, &mut |page| {
            for stored in page {
                digest.add(bp, stored);
            }
        })
        .await
        .map_err(|source| SyncError::PortListing {
            blueprint: bp.clone(),
            source,
        })?;
    }
    tracing::info!(
        target: crate::progress::TARGET,
        entities = digest.total(),
        "listed this installation's entities in Port"
    );
    Ok(digest)
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

/// Deletes this installation's entities that Okta no longer has, if the picture of Okta is
/// complete and the mass-deletion guard agrees. Each candidate is rechecked in Port first:
/// one written since we listed it (a live event) is kept.
async fn delete_stale<P: PortSink>(
    port: &P,
    blueprints: &[String],
    digest: &Digest,
    options: &ResyncOptions,
    report: &mut Report,
) {
    if !report.errors.is_empty() {
        tracing::warn!("skipping deletions: the picture of Okta is incomplete");
        return;
    }
    // Reports before their managers and groups: fewer references for Port to clear.
    for bp in blueprints.iter().rev() {
        let stale = digest.unseen(bp);
        let own = digest.len(bp);
        if stale.is_empty() {
            continue;
        }
        let share = stale.len() as f64 / own as f64;
        if share > options.deletion_threshold && !options.allow_mass_deletion {
            report.errors.push(format!(
                "mass-deletion guard: refusing to delete {} of {} {bp} entities ({:.0}% > the {:.0}% \
                 threshold); nothing of {bp} was deleted. Check Okta (a token that sees less, a \
                 bad import), then let it through with `okta-port resync --allow-mass-deletion`, \
                 ALLOW_MASS_DELETION=true, or the resync function's payload {{\"allowMassDeletion\": true}}",
                stale.len(),
                own,
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
        let stale = match unchanged_since_listed(port, bp, stale, digest).await {
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
    digest: &Digest,
) -> Result<Vec<String>, PortError> {
    let now = port.list_own_among(blueprint, &candidates).await?;
    let mut keep: Vec<String> = now
        .into_iter()
        .filter(|s| {
            let id = &s.entity.identifier;
            let same = digest
                .get(blueprint, id)
                .is_some_and(|l| l.updated_at == s.updated_at);
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
