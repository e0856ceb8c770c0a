//! A resync that must stop before it is done saves where it stands in the state store,
//! and the next run goes on from there: Port's digest as listed when the resync started
//! (the baseline every write and deletion is rechecked against), the snapshot read so far
//! with each listing's next-page cursor, the spilled users, and the entities already
//! written. Deletions happen only in the run that completes the writes.
//!
//! Two values: the users file first, then the manifest that points into it. The users
//! file only grows, so an older manifest still reads a newer users file correctly.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::snapshot::{Snapshot, Spill};
use crate::state::{StateError, StateStore};

/// The keys of a checkpoint named `name` (one per Okta org and installation, so one
/// state store can serve several): the manifest, and the users file it points into.
fn keys(name: &str) -> (String, String) {
    (name.to_owned(), format!("{name}-users"))
}
/// Bumped when the saved form changes: a checkpoint of another form is started over.
const FORM: u32 = 1;

/// A resync in progress.
pub struct Job {
    pub started_at: DateTime<Utc>,
    pub digest: Digest,
    pub snapshot: Snapshot,
    pub users: Spill,
    /// Runs (invocations) this resync has taken so far, this one included.
    pub runs: u32,
    /// Entities earlier runs of this resync wrote, per blueprint: not written again.
    pub written: BTreeMap<String, HashSet<String>>,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    form: u32,
    started_at: DateTime<Utc>,
    saved_at: DateTime<Utc>,
    runs: u32,
    users_bytes: u64,
    digest: Digest,
    snapshot: Snapshot,
    #[serde(default)]
    written: BTreeMap<String, HashSet<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("resync checkpoint: {0}")]
    Store(#[from] StateError),
    #[error("resync checkpoint: {0}")]
    Io(#[from] std::io::Error),
}

pub async fn save(store: &dyn StateStore, name: &str, job: &mut Job) -> Result<(), CheckpointError> {
    let (manifest_key, users_key) = keys(name);
    store.save_file(&users_key, job.users.path()?).await?;
    let manifest = ManifestRef {
        form: FORM,
        started_at: job.started_at,
        saved_at: Utc::now(),
        runs: job.runs,
        users_bytes: job.users.len(),
        digest: &job.digest,
        snapshot: &job.snapshot,
        written: &job.written,
    };
    // Written to a file and streamed: a large org's digest never sits in memory as text.
    let path = Spill::blank_path()?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    serde_json::to_writer(&mut file, &manifest).map_err(std::io::Error::other)?;
    file.flush()?;
    drop(file);
    store.save_file(&manifest_key, &path).await?;
    Ok(())
}

/// `Manifest`, borrowed for saving.
#[derive(Serialize)]
struct ManifestRef<'a> {
    form: u32,
    started_at: DateTime<Utc>,
    saved_at: DateTime<Utc>,
    runs: u32,
    users_bytes: u64,
    digest: &'a Digest,
    snapshot: &'a Snapshot,
    written: &'a BTreeMap<String, HashSet<String>>,
}

/// The saved resync, unless there is none, it is older than `max_age` (counted from
/// when that resync started) or of another form: then the run starts over.
pub async fn load(
    store: &dyn StateStore,
    name: &str,
    max_age: Duration,
) -> Result<Option<Job>, CheckpointError> {
    let (manifest_key, users_key) = keys(name);
    let path = Spill::blank_path()?;
    if !store.load_file(&manifest_key, &path).await? {
        return Ok(None);
    }
    let file = std::io::BufReader::new(std::fs::File::open(&path)?);
    let manifest: Manifest = match serde_json::from_reader(file) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "the resync checkpoint cannot be read; starting over");
            return Ok(None);
        }
    };
    let age = (Utc::now() - manifest.started_at).to_std().unwrap_or_default();
    if manifest.form != FORM || age > max_age {
        tracing::warn!(
            started_at = %manifest.started_at,
            age_s = age.as_secs(),
            max_age_s = max_age.as_secs(),
            "discarding the resync checkpoint (too old, or saved by another version); starting over"
        );
        return Ok(None);
    }
    let path = Spill::blank_path()?;
    let found = store.load_file(&users_key, &path).await?;
    let users = match found.then(|| Spill::adopt(path, manifest.users_bytes)) {
        Some(Ok(users)) => users,
        _ => {
            tracing::warn!("the resync checkpoint's users are missing or cut short; starting over");
            return Ok(None);
        }
    };
    let mut snapshot = manifest.snapshot;
    snapshot.restore();
    Ok(Some(Job {
        started_at: manifest.started_at,
        digest: manifest.digest,
        snapshot,
        users,
        runs: manifest.runs + 1,
        written: manifest.written,
    }))
}

pub async fn remove(store: &dyn StateStore, name: &str) -> Result<(), CheckpointError> {
    let (manifest_key, users_key) = keys(name);
    store.remove(&manifest_key).await?;
    store.remove(&users_key).await?;
    Ok(())
}
