//! Port API: the `PortSink` trait the sync core writes through, and `Client`, its HTTP
//! implementation (token cache, bulk upserts and deletes, paginated search of our own
//! entities, retries honouring Port's rate-limit headers).

mod client;
#[cfg(test)]
pub mod memory;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

pub use client::Client;

use crate::report::{ApiStats, Failure};

/// Bulk upsert limits (Port rejects more).
pub const BULK_MAX_ENTITIES: usize = 20;
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Bulk delete takes up to 100 identifiers.
pub const BULK_DELETE_MAX: usize = 100;

pub use crate::domain::Entity;

/// Our entity as stored in Port, with the time Port last saw it written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StoredEntity {
    #[serde(flatten)]
    pub entity: Entity,
    #[serde(default, rename = "updatedAt")]
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Why Port refused one entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    pub status: u16,
    pub error: String,
    pub message: String,
}

impl WriteFailure {
    /// A relation target that does not exist (yet): worth a retry once targets are written.
    pub fn is_not_found(&self) -> bool {
        self.status == 404 && self.error == "not_found"
    }
}

impl std::fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error, self.message)
    }
}

/// Result of upserting one entity: `Ok(created)` or why it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteResult {
    pub identifier: String,
    pub outcome: Result<bool, WriteFailure>,
}

/// What a deletion did: the ids Port confirmed deleted, and the ones it could not delete.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteResult {
    pub deleted: Vec<String>,
    /// Already gone: nothing to delete.
    pub absent: Vec<String>,
    pub failed: Vec<Failure>,
}

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("Port refused our credentials ({status}): {message}")]
    Auth { status: u16, message: String },
    #[error("Port answered {status} on {route}: {error}: {message} (trace {trace_id})")]
    Api {
        status: u16,
        route: String,
        error: String,
        message: String,
        trace_id: String,
    },
    /// The token route is missing: `PORT_API_URL` is not Port's API.
    #[error(
        "PORT_API_URL looks wrong: {url} answered {status} to {route} (Port's API is \
         https://api.port.io, or https://api.us.port.io in the US region)"
    )]
    NotPortApi { url: String, route: String, status: u16 },
    #[error("Port request to {route} failed: {message}")]
    Transport { route: String, message: String },
    #[error("unexpected response from Port on {route}: {message}")]
    InvalidResponse { route: String, message: String },
}

impl PortError {
    pub fn status(&self) -> Option<u16> {
        match self {
            PortError::Auth { status, .. } | PortError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Port as the sync core writes and reads it. `Client` is the HTTP implementation; the
/// core's own tests use an in-memory one. "Our" entities are those this installation wrote.
#[async_trait]
pub trait PortSink: Send + Sync {
    /// Creates the missing blueprints (bare first, then their relations); never alters an
    /// existing one. Returns the identifiers it created.
    async fn ensure_blueprints(&self, blueprints: &[Value]) -> Result<Vec<String>, PortError>;
    /// A blueprint's definition as Port has it, or `None` when it does not exist.
    async fn blueprint(&self, blueprint: &str) -> Result<Option<Value>, PortError>;
    /// Upserts (merge) entities of one blueprint; one result per entity, in input order.
    async fn upsert(&self, blueprint: &str, entities: Vec<Entity>) -> Vec<WriteResult>;
    /// Deletes entities without their dependents (Port clears the references to them).
    async fn delete(&self, blueprint: &str, identifiers: &[String]) -> DeleteResult;
    /// Every entity of ours in the blueprint, handed over a page at a time (so a caller
    /// that digests them never holds the whole listing).
    async fn list_own_pages(
        &self,
        blueprint: &str,
        on_page: &mut (dyn FnMut(Vec<StoredEntity>) + Send),
    ) -> Result<(), PortError>;
    /// Those of `identifiers` that are entities of ours, as Port has them now.
    async fn list_own_among(
        &self,
        blueprint: &str,
        identifiers: &[String],
    ) -> Result<Vec<StoredEntity>, PortError>;
    /// Our entities of `blueprint` with a relation to `target`, an entity of `target_blueprint`.
    async fn own_related(
        &self,
        blueprint: &str,
        target_blueprint: &str,
        target: &str,
    ) -> Result<Vec<StoredEntity>, PortError>;
    /// Our entities of `blueprint` whose `property` equals `value`.
    async fn own_where(
        &self,
        blueprint: &str,
        property: &str,
        value: &str,
    ) -> Result<Vec<StoredEntity>, PortError>;
    fn stats(&self) -> ApiStats;
}
