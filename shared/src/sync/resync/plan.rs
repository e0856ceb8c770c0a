//! From the snapshot to what must be written: each Okta object mapped one at a time (a
//! user read back from the spill file, with its relations from the membership pairs),
//! compared with Port's digest, and, when it differs, spilled again with the few facts
//! the write order needs. Memory holds no whole entity list at any point.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;
use twox_hash::XxHash64;

use crate::domain::targets;
use crate::mapping::{Mapped, Mapping, MappingError, ObjectKind, UserLinks};
use crate::port::Entity;
use crate::report::{Failure, Plan, Report};
use crate::sync::digest::{Digest, Known};
use crate::sync::snapshot::{Snapshot, Span, Spill, by_id as index, objects_of as objects};

/// One entity to write: where it lies in the pending spill file, and what it relates to.
pub struct PendingEntity {
    pub identifier: Box<str>,
    pub span: Span,
    /// Hashes of the ids it points at (enough to order writes within its blueprint).
    pub targets: Box<[u64]>,
}

/// Everything to write, per blueprint, spilled.
pub struct Pending {
    pub spill: Spill,
    pub blueprints: BTreeMap<String, Vec<PendingEntity>>,
}

impl Pending {
    pub fn load(&mut self, entity: &PendingEntity) -> std::io::Result<Entity> {
        let bytes = self.spill.read(entity.span)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
}

pub fn id_hash(id: &str) -> u64 {
    XxHash64::oneshot(0, id.as_bytes())
}

/// What mapping the snapshot left: mapping failures, and errors of the configuration itself.
#[derive(Default)]
pub struct Leftovers {
    pub failures: Vec<(ObjectKind, Failure)>,
    pub configuration_errors: Vec<String>,
}

struct Planner<'a> {
    digest: &'a mut Digest,
    /// Written by an earlier run of this resync: checked (so not deleted), not written again.
    written: &'a BTreeMap<String, HashSet<String>>,
    report: &'a mut Report,
    dry_run: bool,
    pending: Pending,
    left: Leftovers,
}

impl Planner<'_> {
    fn take(
        &mut self,
        kind: ObjectKind,
        id: &Value,
        result: Result<Vec<Mapped>, MappingError>,
    ) -> std::io::Result<()> {
        let mapped = match result {
            Ok(mapped) => mapped,
            Err(e) if e.is_configuration() => {
                let on = format!("{} {}", kind.name(), id.as_str().unwrap_or("?"));
                self.left.configuration_errors.push(format!("{e} (on {on})"));
                return Ok(());
            }
            Err(e) => {
                let failure = Failure {
                    identifier: id.as_str().unwrap_or("?").to_owned(),
                    reason: e.to_string(),
                };
                self.left.failures.push((kind, failure));
                return Ok(());
            }
        };
        for Mapped { blueprint, entity } in mapped {
            let known = self.digest.check(&blueprint, &entity);
            let bp = self.report.blueprint(&blueprint);
            if known == Known::Unchanged {
                bp.unchanged += 1;
                continue;
            }
            if self
                .written
                .get(&blueprint)
                .is_some_and(|w| w.contains(&entity.identifier))
            {
                continue;
            }
            if self.dry_run {
                let plan = bp.plan.get_or_insert_with(Plan::default);
                let list = if known == Known::New {
                    &mut plan.create
                } else {
                    &mut plan.update
                };
                list.push(entity.identifier);
                continue;
            }
            let mut targets: Vec<u64> = entity.relations.values().flat_map(targets).map(id_hash).collect();
            targets.sort_unstable();
            targets.dedup();
            let span = self
                .pending
                .spill
                .append(&serde_json::to_vec(&entity).expect("entity serializes"))?;
            self.pending
                .blueprints
                .entry(blueprint)
                .or_default()
                .push(PendingEntity {
                    identifier: entity.identifier.into_boxed_str(),
                    span,
                    targets: targets.into_boxed_slice(),
                });
        }
        Ok(())
    }
}

/// Maps every object of a complete read: groups and apps, then each user.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    mapping: &dyn Mapping,
    snapshot: &Snapshot,
    users: &mut Spill,
    digest: &mut Digest,
    written: &BTreeMap<String, HashSet<String>>,
    report: &mut Report,
    dry_run: bool,
) -> std::io::Result<(Pending, Leftovers)> {
    let mut planner = Planner {
        digest,
        written,
        report,
        dry_run,
        pending: Pending {
            spill: Spill::new()?,
            blueprints: BTreeMap::new(),
        },
        left: Leftovers::default(),
    };
    for group in snapshot.groups().into_iter().flatten() {
        planner.take(ObjectKind::Group, &group["id"], mapping.map_group(group))?;
    }
    for app in snapshot.apps().into_iter().flatten() {
        planner.take(ObjectKind::App, &app["id"], mapping.map_app(app))?;
    }
    // Without the complete user list, neither users nor managers can be written faithfully.
    if snapshot.users_complete() {
        let (group_index, app_index) = (index(snapshot.groups()), index(snapshot.apps()));
        let managers = snapshot.manager_lookup();
        for record in snapshot.users() {
            let user: Value =
                serde_json::from_slice(&users.read(record.span)?).map_err(std::io::Error::other)?;
            let (groups, apps) = (snapshot.groups_of(record.id), snapshot.apps_of(record.id));
            let manager = managers.manager_of(record);
            let (group_objects, app_objects) = (
                objects(groups.as_deref(), &group_index),
                objects(apps.as_deref(), &app_index),
            );
            let links = UserLinks {
                groups: groups.as_deref(),
                applications: apps.as_deref(),
                manager: Some(manager.as_deref()),
                group_objects: group_objects.as_deref(),
                app_objects: app_objects.as_deref(),
            };
            planner.take(ObjectKind::User, &user["id"], mapping.map_user(&user, &links))?;
        }
    }
    Ok((planner.pending, planner.left))
}
