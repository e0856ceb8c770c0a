//! The core: the full resync and the live path, side by side over the same two ports
//! (`okta::OktaSource`, `port::PortSink`) and the same mapping, so both write the same
//! entity for the same Okta object.
//!
//! - `resync`: snapshot Okta (`snapshot`), map, write what changed in dependency order
//!   (`write`), then delete what vanished, only on a complete picture of Okta.
//! - `live`: a batch of queued events becomes the touched objects, each refetched and
//!   converged.

pub mod catchup;
pub mod checkpoint;
#[cfg(test)]
mod core_tests;
mod digest;
pub mod live;
mod resync;
mod snapshot;
pub mod write;

use serde::Deserialize;

pub use self::resync::{Budget, resync, resync_within};
pub use self::snapshot::{DRAIN as READ_DRAIN, Desired, WholeSnapshot, map_snapshot};
pub use self::write::{Outcomes, is_unchanged, write_waves};
use crate::config::ResyncOptions;
use crate::port::PortError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("could not prepare the Port blueprints: {0}")]
    Blueprints(#[source] PortError),
    #[error("could not list this installation's {blueprint} entities in Port: {source}")]
    PortListing { blueprint: String, source: PortError },
    /// The mapping configuration cannot work on this org (found before any write).
    #[error("mapping configuration: {0}")]
    Configuration(String),
    /// The local disk the snapshot spills to failed (full, or not writable).
    #[error("could not keep the snapshot on local disk (TMPDIR): {0}")]
    Spill(#[source] std::io::Error),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
}

/// Options a caller can set per run (e.g. from the scheduled event), over the configured ones.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RunOverrides {
    pub dry_run: bool,
    pub allow_mass_deletion: bool,
}

impl RunOverrides {
    pub fn apply(self, options: &ResyncOptions) -> ResyncOptions {
        ResyncOptions {
            dry_run: options.dry_run || self.dry_run,
            allow_mass_deletion: options.allow_mass_deletion || self.allow_mass_deletion,
            ..options.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overrides_only_widen() {
        let base = ResyncOptions::default();
        let o = RunOverrides {
            dry_run: true,
            allow_mass_deletion: false,
        }
        .apply(&base);
        assert!(o.dry_run && !o.allow_mass_deletion);
        let parsed: RunOverrides = serde_json::from_value(json!({ "allowMassDeletion": true })).unwrap();
        assert!(parsed.allow_mass_deletion && !parsed.dry_run);
    }
}
