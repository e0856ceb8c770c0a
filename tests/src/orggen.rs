//! Deterministic model of an Okta org and a generator of the messy shapes a real org has:
//! every user status, odd manager references, unicode names, page-boundary group sizes,
//! apps with every kind of assignment. The same seed always yields the identical org.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rand::RngCore;
use rand::seq::{SliceRandom, index};
use serde_json::{Map, Value, json};

/// Host used in the `_links` of generated objects (the simulator does not rewrite them).
pub const ORG_URL: &str = "https://example.okta.com";

/// Every user status Okta knows.
pub const USER_STATUSES: [&str; 8] = [
    "STAGED",
    "PROVISIONED",
    "ACTIVE",
    "RECOVERY",
    "PASSWORD_EXPIRED",
    "LOCKED_OUT",
    "SUSPENDED",
    "DEPROVISIONED",
];

/// Size of the big group (listing its members takes exactly one full page of 1000).
pub const BIG_GROUP_SIZE: usize = 1000;
/// Size of the medium group (exactly one full page of 200 users).
pub const PAGE_GROUP_SIZE: usize = 200;

/// An Okta org: the objects exactly as the Management API returns them plus the
/// membership and assignment relations between them.
#[derive(Clone, Debug, Default)]
pub struct Org {
    /// Full Okta User objects, in creation order.
    pub users: Vec<Value>,
    /// Okta Group objects, the BUILT_IN "Everyone" first.
    pub groups: Vec<Value>,
    /// Okta Application objects.
    pub apps: Vec<Value>,
    /// Group id -> member user ids.
    pub group_members: BTreeMap<String, BTreeSet<String>>,
    /// App id -> directly assigned user ids.
    pub app_user_assignments: BTreeMap<String, BTreeSet<String>>,
    /// App id -> assigned group ids.
    pub app_group_assignments: BTreeMap<String, BTreeSet<String>>,
    /// System Log events (LogEvent objects, as event hooks deliver them in `data.events[]`)
    /// Okta would emit for the mutations since the last [`Org::take_events`]. Generation
    /// emits none.
    pub events: Vec<Value>,
    /// Every event taken before (the System Log keeps them all; see [`Org::system_log`]).
    pub taken_events: Vec<Value>,
    /// Counter behind event uuids and the ids of objects created by mutations, so both
    /// are deterministic.
    serial: u64,
}

// The event log is history, not state: two orgs holding the same objects and relations
// are equal however they got there.
impl PartialEq for Org {
    fn eq(&self, other: &Org) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let Org {
            users,
            groups,
            apps,
            group_members,
            app_user_assignments,
            app_group_assignments,
            events: _,
            taken_events: _,
            serial: _,
        } = self;
        *users == other.users
            && *groups == other.groups
            && *apps == other.apps
            && *group_members == other.group_members
            && *app_user_assignments == other.app_user_assignments
            && *app_group_assignments == other.app_group_assignments
    }
}

/// What to generate. `groups` counts the built-in Everyone group (there is always one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrgSpec {
    pub users: usize,
    pub groups: usize,
    pub apps: usize,
    pub seed: u64,
}

impl Default for OrgSpec {
    fn default() -> Self {
        OrgSpec {
            users: 2000,
            groups: 40,
            apps: 15,
            seed: 42,
        }
    }
}

/// Formats a timestamp the way Okta does: `2024-03-05T10:20:30.000Z`.
pub fn okta_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A timestamp strictly later than `prev` (and not before now), so that mutations always
/// move `lastUpdated` forward even when two happen within the same millisecond.
fn later_than(prev: Option<&Value>) -> String {
    let now = Utc::now();
    let now = now - TimeDelta::nanoseconds(i64::from(now.timestamp_subsec_nanos() % 1_000_000));
    let prev = prev
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc));
    let t = match prev {
        Some(p) if p >= now => p + TimeDelta::milliseconds(1),
        _ => now,
    };
    okta_time(t)
}

fn bump(obj: &mut Value, field: &str) {
    let next = later_than(obj.get(field));
    obj[field] = Value::String(next);
}

fn id_of(v: &Value) -> &str {
    v.get("id").and_then(Value::as_str).unwrap_or_default()
}

fn find<'a>(items: &'a [Value], id: &str) -> Option<&'a Value> {
    items.iter().find(|v| id_of(v) == id)
}

fn find_mut<'a>(items: &'a mut [Value], id: &str) -> Option<&'a mut Value> {
    items.iter_mut().find(|v| id_of(v) == id)
}

// ---------------------------------------------------------------------------------------
// System Log events
// ---------------------------------------------------------------------------------------

/// The admin whose API token performs every mutation (the `actor` of every event).
pub const ACTOR_ID: &str = "00uadmin000000000000";

/// An event `target` entry.
fn target(id: &str, kind: &str, alternate_id: &str, display_name: &str) -> Value {
    json!({
        "id": id,
        "type": kind,
        "alternateId": alternate_id,
        "displayName": display_name,
        "detailEntry": null,
    })
}

fn user_target(user: &Value) -> Value {
    let profile = &user["profile"];
    // Okta shows "firstName lastName" for a user target.
    let name: Vec<&str> = [&profile["firstName"], &profile["lastName"]]
        .into_iter()
        .filter_map(Value::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    let login = profile["login"].as_str().unwrap_or_default();
    target(id_of(user), "User", login, &name.join(" "))
}

fn group_target(group: &Value) -> Value {
    let name = group["profile"]["name"].as_str().unwrap_or_default();
    target(id_of(group), "UserGroup", name, name)
}

fn app_target(app: &Value) -> Value {
    let label = app["label"].as_str().unwrap_or_default();
    target(id_of(app), "AppInstance", label, label)
}

fn display_message(event_type: &str) -> &'static str {
    match event_type {
        "user.lifecycle.create" => "Create Okta user",
        "user.lifecycle.activate" => "Activate Okta user",
        "user.lifecycle.deactivate" => "Deactivate Okta user",
        "user.lifecycle.suspend" => "Suspend Okta user",
        "user.lifecycle.unsuspend" => "Unsuspend Okta user",
        "user.lifecycle.reactivate" => "Reactivate Okta user",
        "user.lifecycle.delete.initiated" => "Delete Okta user",
        "user.account.update_profile" => "Update user profile for Okta",
        "user.account.lock" => "Max sign in attempts exceeded",
        "user.account.unlock_by_admin" => "Unlock user account by admin",
        "user.account.reset_password" => "Fired when the user's Okta password is reset",
        "group.lifecycle.create" => "Create okta group",
        "group.lifecycle.delete" => "Delete okta group",
        "group.profile.update" => "Update group profile",
        "group.user_membership.add" => "Add user to group membership",
        "group.user_membership.remove" => "Remove user from group membership",
        "application.lifecycle.create" => "Create application",
        "application.lifecycle.update" => "Update application",
        "application.lifecycle.activate" => "Activate application",
        "application.lifecycle.deactivate" => "Deactivate application",
        "application.lifecycle.delete" => "Delete application",
        "application.user_membership.add" => "Add user to application membership",
        "application.user_membership.remove" => "Remove user from application membership",
        "group.application_assignment.add" => "Add assigned application to group",
        "group.application_assignment.remove" => "Remove assigned application from group",
        _ => "Okta event",
    }
}

/// FNV-1a over the parts (separated, so ("ab","c") and ("a","bc") differ): a stable seed
/// for ids that must be the same on every run and platform.
fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn alphanumeric(seed: u64, len: usize) -> String {
    let mut rng = Prng::new(seed);
    (0..len)
        .map(|_| char::from(ID_CHARS[rng.range(0..ID_CHARS.len())]))
        .collect()
}

/// Okta-looking id: `prefix` and 17 alphanumerics.
fn fake_id(prefix: &str, seed: u64) -> String {
    format!("{prefix}{}", alphanumeric(seed, 17))
}

fn uuid(seed: u64) -> String {
    let mut rng = Prng::new(seed);
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// The body Okta POSTs to an event hook: the delivery envelope around `events`. `seq`
/// makes the `eventId` (distinct seqs give distinct ids).
pub fn hook_delivery(events: &[Value], seq: u64) -> Value {
    json!({
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": format!("{ORG_URL}/api/v1/eventHooks/whoabc123"),
        "eventId": uuid(hash(&["delivery", &seq.to_string()])),
        "eventTime": okta_time(Utc::now()),
        "contentType": "application/json",
        "data": {"events": events},
    })
}

impl Org {
    pub fn user(&self, id: &str) -> Option<&Value> {
        find(&self.users, id)
    }

    /// Raw mutable access; the caller is responsible for timestamps.
    pub fn user_mut(&mut self, id: &str) -> Option<&mut Value> {
        find_mut(&mut self.users, id)
    }

    pub fn group(&self, id: &str) -> Option<&Value> {
        find(&self.groups, id)
    }

    pub fn app(&self, id: &str) -> Option<&Value> {
        find(&self.apps, id)
    }

    /// Id of the BUILT_IN Everyone group.
    pub fn everyone_id(&self) -> Option<String> {
        self.groups
            .iter()
            .find(|g| g["type"] == "BUILT_IN")
            .map(|g| id_of(g).to_owned())
    }

    fn group_is_built_in(&self, id: &str) -> bool {
        self.group(id).is_some_and(|g| g["type"] == "BUILT_IN")
    }

    fn bump_membership(&mut self, group_id: &str) {
        if let Some(g) = find_mut(&mut self.groups, group_id) {
            bump(g, "lastMembershipUpdated");
        }
    }

    /// Adds a full User object (it must have an `id`); it joins the Everyone group.
    pub fn add_user(&mut self, user: Value) -> String {
        let id = user
            .get("id")
            .and_then(Value::as_str)
            .expect("add_user: the user object needs an \"id\"")
            .to_owned();
        let target = user_target(&user);
        let active = user["status"] == "ACTIVE";
        self.users.push(user);
        if let Some(everyone) = self.everyone_id() {
            self.group_members
                .entry(everyone.clone())
                .or_default()
                .insert(id.clone());
            self.bump_membership(&everyone);
        }
        let uri = format!("/api/v1/users?activate={active}");
        self.emit("user.lifecycle.create", vec![target.clone()], &uri);
        if active {
            self.emit("user.lifecycle.activate", vec![target], &uri);
        }
        id
    }

    /// Removes the user, its group memberships and direct app assignments.
    pub fn delete_user(&mut self, id: &str) -> bool {
        let Some(target) = self.user(id).map(user_target) else {
            return false;
        };
        self.users.retain(|u| id_of(u) != id);
        let touched: Vec<String> = self
            .group_members
            .iter_mut()
            .filter_map(|(g, members)| members.remove(id).then(|| g.clone()))
            .collect();
        for g in touched {
            self.bump_membership(&g);
        }
        for users in self.app_user_assignments.values_mut() {
            users.remove(id);
        }
        let uri = format!("/api/v1/users/{id}");
        self.emit("user.lifecycle.delete.initiated", vec![target], &uri);
        true
    }

    pub fn set_user_status(&mut self, id: &str, status: &str) -> bool {
        let Some(user) = self.user_mut(id) else {
            return false;
        };
        let previous = user["status"].as_str().unwrap_or_default().to_owned();
        user["status"] = json!(status);
        bump(user, "statusChanged");
        if status == "STAGED" {
            user["activated"] = Value::Null;
        } else if user.get("activated").is_none_or(Value::is_null) {
            user["activated"] = user["statusChanged"].clone();
        }
        bump(user, "lastUpdated");
        let target = user_target(user);
        // The event (and the API call behind it) Okta logs for this transition.
        let (event_type, action) = match (status, previous.as_str()) {
            ("DEPROVISIONED", _) => ("user.lifecycle.deactivate", "lifecycle/deactivate"),
            ("SUSPENDED", _) => ("user.lifecycle.suspend", "lifecycle/suspend"),
            ("ACTIVE", "SUSPENDED") => ("user.lifecycle.unsuspend", "lifecycle/unsuspend"),
            ("ACTIVE", "DEPROVISIONED") => ("user.lifecycle.reactivate", "lifecycle/reactivate"),
            ("ACTIVE", "LOCKED_OUT") => ("user.account.unlock_by_admin", "lifecycle/unlock"),
            ("ACTIVE", _) => ("user.lifecycle.activate", "lifecycle/activate"),
            ("LOCKED_OUT", _) => ("user.account.lock", ""),
            ("RECOVERY", _) => ("user.account.reset_password", "lifecycle/reset_password"),
            ("PASSWORD_EXPIRED", _) => ("user.account.reset_password", "lifecycle/expire_password"),
            _ => ("user.account.update_profile", ""),
        };
        let uri = match (event_type, action) {
            // A lockout comes from failed sign-ins, not from an admin call.
            ("user.account.lock", _) => "/api/v1/authn".to_owned(),
            (_, "") => format!("/api/v1/users/{id}"),
            (_, action) => format!("/api/v1/users/{id}/{action}"),
        };
        self.emit(event_type, vec![target], &uri);
        true
    }

    /// Sets (`Some`) or removes (`None`) `profile.managerId`.
    pub fn set_manager_id(&mut self, user_id: &str, manager: Option<&str>) -> bool {
        self.set_profile_attr(user_id, "managerId", manager)
    }

    /// Sets (`Some`) or removes (`None`) any profile attribute.
    pub fn set_profile_attr(&mut self, user_id: &str, key: &str, value: Option<&str>) -> bool {
        let Some(user) = self.user_mut(user_id) else {
            return false;
        };
        let profile = &mut user["profile"];
        match value {
            Some(v) => profile[key] = json!(v),
            None => {
                if let Some(p) = profile.as_object_mut() {
                    p.remove(key);
                }
            }
        }
        bump(user, "lastUpdated");
        let target = user_target(user);
        let uri = format!("/api/v1/users/{user_id}");
        self.emit("user.account.update_profile", vec![target], &uri);
        true
    }

    /// Creates an OKTA_GROUP without members; returns its id.
    pub fn add_group(&mut self, name: &str, description: Option<&str>) -> String {
        let id = self.fresh_id("00g");
        let now = later_than(None);
        let description = description.map_or(Value::Null, Value::from);
        let group = group_object(&id, "OKTA_GROUP", name, description, [&now, &now, &now]);
        let target = group_target(&group);
        self.groups.push(group);
        self.group_members.insert(id.clone(), BTreeSet::new());
        self.emit("group.lifecycle.create", vec![target], "/api/v1/groups");
        id
    }

    pub fn rename_group(&mut self, id: &str, name: &str) -> bool {
        let Some(group) = find_mut(&mut self.groups, id) else {
            return false;
        };
        group["profile"]["name"] = json!(name);
        bump(group, "lastUpdated");
        let target = group_target(group);
        self.emit(
            "group.profile.update",
            vec![target],
            &format!("/api/v1/groups/{id}"),
        );
        true
    }

    /// Deletes a group with its memberships and app assignments. Like Okta, the built-in
    /// Everyone group cannot be deleted.
    pub fn delete_group(&mut self, id: &str) -> bool {
        if self.group_is_built_in(id) {
            return false;
        }
        let Some(target) = self.group(id).map(group_target) else {
            return false;
        };
        self.groups.retain(|g| id_of(g) != id);
        self.group_members.remove(id);
        for groups in self.app_group_assignments.values_mut() {
            groups.remove(id);
        }
        self.emit(
            "group.lifecycle.delete",
            vec![target],
            &format!("/api/v1/groups/{id}"),
        );
        true
    }

    pub fn add_member(&mut self, group_id: &str, user_id: &str) -> bool {
        let (Some(group), Some(user)) = (self.group(group_id), self.user(user_id)) else {
            return false;
        };
        let targets = self.membership_targets(user, group);
        let added = self
            .group_members
            .entry(group_id.to_owned())
            .or_default()
            .insert(user_id.to_owned());
        if added {
            self.bump_membership(group_id);
            let uri = format!("/api/v1/groups/{group_id}/users/{user_id}");
            self.emit("group.user_membership.add", targets, &uri);
        }
        added
    }

    /// Everyone always holds every user, so removing from it is refused (as Okta does).
    pub fn remove_member(&mut self, group_id: &str, user_id: &str) -> bool {
        if self.group_is_built_in(group_id) {
            return false;
        }
        let removed = self
            .group_members
            .get_mut(group_id)
            .is_some_and(|m| m.remove(user_id));
        if removed {
            self.bump_membership(group_id);
            if let (Some(group), Some(user)) = (self.group(group_id), self.user(user_id)) {
                let targets = self.membership_targets(user, group);
                let uri = format!("/api/v1/groups/{group_id}/users/{user_id}");
                self.emit("group.user_membership.remove", targets, &uri);
            }
        }
        removed
    }

    /// User and group targets, in an order that alternates: Okta does not guarantee one.
    fn membership_targets(&self, user: &Value, group: &Value) -> Vec<Value> {
        let (user, group) = (user_target(user), group_target(group));
        if self.serial.is_multiple_of(2) {
            vec![user, group]
        } else {
            vec![group, user]
        }
    }

    /// Targets of an application.user_membership event; the AppUser target carries the
    /// assignment's own id, not the user's.
    fn app_user_targets(&self, app_id: &str, user_id: &str) -> Option<Vec<Value>> {
        let (app, user) = (self.app(app_id)?, self.user(user_id)?);
        let user_target = user_target(user);
        let assignment = fake_id("0ua", hash(&[app_id, user_id]));
        let app_user = target(
            &assignment,
            "AppUser",
            user_target["alternateId"].as_str().unwrap_or_default(),
            user_target["displayName"].as_str().unwrap_or_default(),
        );
        Some(vec![app_user, app_target(app), user_target])
    }

    // App assignments do not change the app's or user's lastUpdated in Okta either.
    pub fn assign_user(&mut self, app_id: &str, user_id: &str) -> bool {
        let Some(targets) = self.app_user_targets(app_id, user_id) else {
            return false;
        };
        let added = self
            .app_user_assignments
            .entry(app_id.to_owned())
            .or_default()
            .insert(user_id.to_owned());
        if added {
            let uri = format!("/api/v1/apps/{app_id}/users");
            self.emit("application.user_membership.add", targets, &uri);
        }
        added
    }

    pub fn unassign_user(&mut self, app_id: &str, user_id: &str) -> bool {
        let targets = self.app_user_targets(app_id, user_id);
        let removed = self
            .app_user_assignments
            .get_mut(app_id)
            .is_some_and(|s| s.remove(user_id));
        if let (true, Some(targets)) = (removed, targets) {
            let uri = format!("/api/v1/apps/{app_id}/users/{user_id}");
            self.emit("application.user_membership.remove", targets, &uri);
        }
        removed
    }

    fn app_group_targets(&self, app_id: &str, group_id: &str) -> Option<Vec<Value>> {
        Some(vec![
            group_target(self.group(group_id)?),
            app_target(self.app(app_id)?),
        ])
    }

    pub fn assign_group(&mut self, app_id: &str, group_id: &str) -> bool {
        let Some(targets) = self.app_group_targets(app_id, group_id) else {
            return false;
        };
        let added = self
            .app_group_assignments
            .entry(app_id.to_owned())
            .or_default()
            .insert(group_id.to_owned());
        if added {
            self.emit_group_assignment("group.application_assignment.add", app_id, group_id, targets);
        }
        added
    }

    pub fn unassign_group(&mut self, app_id: &str, group_id: &str) -> bool {
        let targets = self.app_group_targets(app_id, group_id);
        let removed = self
            .app_group_assignments
            .get_mut(app_id)
            .is_some_and(|s| s.remove(group_id));
        if let (true, Some(targets)) = (removed, targets) {
            self.emit_group_assignment("group.application_assignment.remove", app_id, group_id, targets);
        }
        removed
    }

    fn emit_group_assignment(&mut self, event_type: &str, app_id: &str, group_id: &str, targets: Vec<Value>) {
        let uri = format!("/api/v1/apps/{app_id}/groups/{group_id}");
        let event = self.emit(event_type, targets, &uri);
        event["debugContext"]["debugData"]["groupAppAssignmentId"] =
            json!(fake_id("0gr", hash(&[app_id, group_id])));
    }

    /// Creates an ACTIVE app without assignments; returns its id.
    pub fn add_app(&mut self, label: &str, name: &str, sign_on_mode: &str) -> String {
        let id = self.fresh_id("0oa");
        let now = later_than(None);
        let app = app_object(&id, name, label, sign_on_mode, &[], true, [&now, &now]);
        let target = app_target(&app);
        self.apps.push(app);
        self.app_user_assignments.insert(id.clone(), BTreeSet::new());
        self.app_group_assignments.insert(id.clone(), BTreeSet::new());
        self.emit("application.lifecycle.create", vec![target], "/api/v1/apps");
        id
    }

    pub fn set_app_label(&mut self, id: &str, label: &str) -> bool {
        let Some(app) = find_mut(&mut self.apps, id) else {
            return false;
        };
        app["label"] = json!(label);
        bump(app, "lastUpdated");
        let target = app_target(app);
        self.emit(
            "application.lifecycle.update",
            vec![target],
            &format!("/api/v1/apps/{id}"),
        );
        true
    }

    /// `status` is "ACTIVE" or "INACTIVE" (anything else is refused).
    pub fn set_app_status(&mut self, id: &str, status: &str) -> bool {
        let (event_type, action) = match status {
            "ACTIVE" => ("application.lifecycle.activate", "activate"),
            "INACTIVE" => ("application.lifecycle.deactivate", "deactivate"),
            _ => return false,
        };
        let Some(app) = find_mut(&mut self.apps, id) else {
            return false;
        };
        app["status"] = json!(status);
        bump(app, "lastUpdated");
        let target = app_target(app);
        let uri = format!("/api/v1/apps/{id}/lifecycle/{action}");
        self.emit(event_type, vec![target], &uri);
        true
    }

    pub fn delete_app(&mut self, id: &str) -> bool {
        let Some(target) = self.app(id).map(app_target) else {
            return false;
        };
        self.apps.retain(|a| id_of(a) != id);
        self.app_user_assignments.remove(id);
        self.app_group_assignments.remove(id);
        self.emit(
            "application.lifecycle.delete",
            vec![target],
            &format!("/api/v1/apps/{id}"),
        );
        true
    }

    /// Drains the events logged since the previous call, oldest first.
    pub fn take_events(&mut self) -> Vec<Value> {
        let events = std::mem::take(&mut self.events);
        self.taken_events.extend(events.iter().cloned());
        events
    }

    /// The System Log: every event emitted, whether a hook delivered it or not, oldest first.
    pub fn system_log(&self) -> impl Iterator<Item = &Value> {
        self.taken_events.iter().chain(&self.events)
    }

    /// A new id with `prefix`, unique among the org's objects.
    fn fresh_id(&mut self, prefix: &str) -> String {
        loop {
            self.serial += 1;
            let id = fake_id(prefix, hash(&[prefix, &self.serial.to_string()]));
            let taken = [&self.users, &self.groups, &self.apps]
                .iter()
                .any(|items| find(items, &id).is_some());
            if !taken {
                return id;
            }
        }
    }

    /// Appends one LogEvent and returns it (for event-specific debug data).
    fn emit(&mut self, event_type: &str, targets: Vec<Value>, uri: &str) -> &mut Value {
        self.serial += 1;
        let n = self.serial;
        // Okta uses the request id as the transaction id of an API call.
        let request_id = alphanumeric(hash(&["transaction", &n.to_string()]), 27);
        let event = json!({
            "uuid": uuid(hash(&["event", &n.to_string()])),
            "published": later_than(None),
            "eventType": event_type,
            "version": "0",
            "displayMessage": display_message(event_type),
            "severity": "INFO",
            "legacyEventType": null,
            "actor": {
                "id": ACTOR_ID,
                "type": "User",
                "alternateId": "admin@example.com",
                "displayName": "Admin",
                "detailEntry": null,
            },
            "client": {
                "userAgent": {"rawUserAgent": "Mozilla/5.0", "os": "Mac OS X", "browser": "CHROME"},
                "zone": "null",
                "device": "Computer",
                "id": null,
                "ipAddress": "203.0.113.9",
                "geographicalContext": {
                    "city": "Oslo",
                    "state": null,
                    "country": "Norway",
                    "postalCode": null,
                    "geolocation": {"lat": 59.9, "lon": 10.7},
                },
            },
            "device": null,
            "outcome": {"result": "SUCCESS", "reason": null},
            "target": targets,
            "transaction": {"type": "WEB", "id": request_id, "detail": {}},
            "debugContext": {
                "debugData": {"requestId": request_id, "requestUri": uri, "url": uri},
            },
            "authenticationContext": {
                "authenticationProvider": null,
                "credentialProvider": null,
                "credentialType": null,
                "issuer": null,
                "interface": null,
                "authenticationStep": 0,
                "externalSessionId": "trsAdminApiToken0000000",
            },
            "securityContext": {
                "asNumber": null,
                "asOrg": null,
                "isp": null,
                "domain": null,
                "isProxy": null,
            },
            "request": {"ipChain": []},
            "insertionTimestamp": null,
        });
        self.events.push(event);
        self.events.last_mut().expect("an event was just pushed")
    }

    /// Users assigned to the app, directly ("USER") or through an assigned group ("GROUP");
    /// a user assigned both ways appears once as "USER". Sorted by user id.
    pub fn app_users(&self, app_id: &str) -> Vec<(String, &'static str)> {
        let mut out: BTreeMap<&str, &'static str> = BTreeMap::new();
        for g in self.app_group_assignments.get(app_id).into_iter().flatten() {
            for u in self.group_members.get(g).into_iter().flatten() {
                out.insert(u, "GROUP");
            }
        }
        for u in self.app_user_assignments.get(app_id).into_iter().flatten() {
            out.insert(u, "USER");
        }
        out.into_iter().map(|(u, s)| (u.to_owned(), s)).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------

const FIRST_NAMES: &[&str] = &[
    "Zoë",
    "Ólafur",
    "Łukasz",
    "José",
    "François",
    "Søren",
    "Ana",
    "John",
    "Mary",
    "Aiko",
    "Wei",
    "Priya",
    "Mohammed",
    "Olga",
    "Chloé",
    "Björn",
    "Siobhán",
    "Kenji",
    "Fatima",
    "Lars",
    "Emma",
    "Noah",
    "Liam",
    "Sofia",
    "Mateo",
    "İbrahim",
    "Ümit",
    "Renée",
    "Ada",
    "Grace",
];
const LAST_NAMES: &[&str] = &[
    "渡辺",
    "Müller",
    "Núñez",
    "O'Brien",
    "Smith",
    "Kowalski",
    "Þórsson",
    "García",
    "Nguyễn",
    "Dubois",
    "Johansson",
    "Öztürk",
    "Rossi",
    "Tanaka",
    "Schmidt",
    "Ivanova",
    "Jensen",
    "Brown",
    "Lee",
    "Patel",
    "van der Berg",
    "Żak",
    "Ødegaard",
    "Łukaszewicz",
    "Hopper",
];
const DEPARTMENTS: &[&str] = &[
    "Engineering",
    "Sales",
    "Marketing",
    "Finance",
    "Human Resources",
    "Legal",
    "Support",
    "Operations",
    "R&D",
    "Customer Success",
];
const JOB_TITLES: &[&str] = &[
    "Engineer",
    "Senior Engineer",
    "Manager",
    "Director",
    "Analyst",
    "Account Executive",
    "VP",
];
const GROUP_NAMES: &[&str] = &[
    "Engineering",
    "Sales",
    "Marketing",
    "Finance",
    "Support",
    "Platform Team",
    "Développeurs",
    "営業部",
    "Contractors",
    "Admins",
    "Berlin Office",
    "São Paulo Office",
    "On-call",
    "Security Champions",
    "Interns",
];
/// (template name, label, signOnMode, features). Names repeat across apps, as in Okta.
const APP_TEMPLATES: &[(&str, &str, &str, &[&str])] = &[
    ("bookmark", "Company Wiki", "BOOKMARK", &[]),
    ("oidc_client", "Internal Portal", "OPENID_CONNECT", &[]),
    ("org_customsaml20app_1", "Expense Tool", "SAML_2_0", &[]),
    (
        "google",
        "Google Workspace",
        "SAML_2_0",
        &["PUSH_NEW_USERS", "PUSH_PROFILE_UPDATES", "IMPORT_NEW_USERS"],
    ),
    (
        "slack",
        "Slack",
        "SAML_2_0",
        &["PUSH_NEW_USERS", "PUSH_USER_DEACTIVATION", "REACTIVATE_USERS"],
    ),
    ("zoomus", "Zoom", "SAML_2_0", &["PUSH_NEW_USERS"]),
    ("template_swa", "Legacy Payroll", "BROWSER_PLUGIN", &[]),
    ("org_autologin_1", "Vendor Portal", "AUTO_LOGIN", &[]),
    ("template_basic_auth", "Build Server", "BASIC_AUTH", &[]),
    ("oidc_client", "Mobile Backend", "OPENID_CONNECT", &[]),
];

const ID_CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Okta-looking ids ("00u" + 17 alphanumerics), unique within the org.
struct IdGen {
    used: HashSet<String>,
}

impl IdGen {
    fn next(&mut self, rng: &mut Prng, prefix: &str) -> String {
        loop {
            let mut id = String::with_capacity(20);
            id.push_str(prefix);
            // 62^10 < 2^64: two draws give the 17 characters.
            for (draw, count) in [(rng.next_u64(), 10), (rng.next_u64(), 7)] {
                let mut x = draw;
                for _ in 0..count {
                    id.push(char::from(ID_CHARS[(x % 62) as usize]));
                    x /= 62;
                }
            }
            if self.used.insert(id.clone()) {
                return id;
            }
        }
    }
}

/// 2019-01-01T00:00:00Z; generated objects are created within the following ~5 years.
const EPOCH_2019: i64 = 1_546_300_800;
const FIVE_YEARS: i64 = 5 * 365 * 86_400;
const DAY: i64 = 86_400;

/// Okta timestamp of whole epoch seconds. Hand-rolled (Hinnant's civil-from-days) because
/// chrono's formatter is slow in unoptimized test builds and 100k users need six each.
fn ts(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(DAY), secs.rem_euclid(DAY));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.000Z")
}

/// SplitMix64: tiny, fully specified (so the same seed gives the same org on every
/// platform and rand version) and cheap even in unoptimized builds.
struct Prng(u64);

impl Prng {
    fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    /// Uniform-enough integer in `r` (the modulo bias is irrelevant here).
    fn range(&mut self, r: std::ops::Range<usize>) -> usize {
        r.start + (self.next_u64() % (r.end - r.start) as u64) as usize
    }

    fn range_i64(&mut self, r: std::ops::Range<i64>) -> i64 {
        r.start + (self.next_u64() % (r.end - r.start) as u64) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) < p * (1u64 << 53) as f64
    }
}

impl RngCore for Prng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// ASCII login fragment from a (possibly unicode) name.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let folded = match c {
            'ë' | 'é' | 'è' | 'ê' => "e",
            'Ó' | 'ó' | 'ø' | 'Ø' | 'ö' | 'Ö' => "o",
            'Ł' | 'ł' => "l",
            'ç' => "c",
            'ü' | 'Ü' => "u",
            'ñ' => "n",
            'Þ' | 'þ' => "th",
            'á' => "a",
            'İ' | 'ı' => "i",
            'ễ' => "e",
            'Ż' | 'ż' => "z",
            _ if c.is_ascii_alphanumeric() => {
                out.push(c.to_ascii_lowercase());
                continue;
            }
            _ => continue,
        };
        out.push_str(folded);
    }
    if out.is_empty() {
        out.push_str("user");
    }
    out
}

struct Draft {
    id: String,
    status: &'static str,
    first: String,
    last: Option<String>,
    display: Option<String>,
    login: String,
    email: String,
    employee_number: String,
    department: Option<&'static str>,
    job_title: Option<&'static str>,
    manager: Option<String>,
    user_type: usize,
    created: i64,
    never_logged_in: bool,
}

/// Exact status counts (so a 2000-user org has 240 DEPROVISIONED), shuffled by the seed.
fn status_plan(n: usize, rng: &mut Prng) -> Vec<&'static str> {
    let at_least = |share: usize| if n >= 16 { (n * share / 100).max(1) } else { 0 };
    let mut plan = Vec::with_capacity(n);
    for (status, share) in [
        ("DEPROVISIONED", 12),
        ("STAGED", 3),
        ("PROVISIONED", 3),
        ("SUSPENDED", 3),
        ("RECOVERY", 1),
        ("PASSWORD_EXPIRED", 1),
        ("LOCKED_OUT", 1),
    ] {
        plan.extend(std::iter::repeat_n(status, at_least(share)));
    }
    plan.truncate(n);
    plan.resize(n, "ACTIVE");
    plan.shuffle(rng);
    plan
}

fn draft(i: usize, id: String, status: &'static str, rng: &mut Prng) -> Draft {
    let first = FIRST_NAMES[rng.range(0..FIRST_NAMES.len())].to_owned();
    let last = LAST_NAMES[rng.range(0..LAST_NAMES.len())].to_owned();
    let (fs, ls) = (slug(&first), slug(&last));
    let login = format!("{fs}.{ls}{i}@example.com");
    let email = match rng.range(0..100) {
        0..85 => login.clone(),
        85..93 => format!("{fs}.{ls}.{i}@mail.example.org"),
        // Same address as the login but in another letter case.
        _ => format!("{}.{}{i}@Example.COM", capitalize(&fs), capitalize(&ls)),
    };
    let display = match rng.range(0..100) {
        0..60 => Some(format!("{first} {last}")),
        60..72 => Some(format!("{last}, {first}")),
        _ => None,
    };
    Draft {
        id,
        status,
        display,
        login,
        email,
        employee_number: format!("{}", 100_000 + i),
        department: rng
            .chance(0.85)
            .then(|| DEPARTMENTS[rng.range(0..DEPARTMENTS.len())]),
        job_title: rng
            .chance(0.7)
            .then(|| JOB_TITLES[rng.range(0..JOB_TITLES.len())]),
        manager: None,
        user_type: usize::from(rng.chance(0.1)),
        created: EPOCH_2019 + rng.range_i64(0..FIVE_YEARS),
        never_logged_in: rng.chance(0.1),
        first,
        last: Some(last),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

#[derive(Clone, Copy)]
enum Ref {
    Id,
    Employee,
    Login,
    LoginUpper,
    LoginMixed,
    Email,
}

fn reference(target: &Draft, how: Ref) -> String {
    match how {
        Ref::Id => target.id.clone(),
        Ref::Employee => target.employee_number.clone(),
        Ref::Login => target.login.clone(),
        Ref::LoginUpper => target.login.to_uppercase(),
        Ref::LoginMixed => capitalize(&target.login),
        Ref::Email => target.email.clone(),
    }
}

/// Users 0..SPECIAL hold the hand-made edge cases when the org is big enough.
const SPECIAL: usize = 20;

/// Hand-made cases (see the module docs of `expected` for how each must resolve):
/// 0 has no manager; 1..=6 form a chain 6 levels deep using every reference form;
/// 7 and 8 share an employeeNumber which 9 references (ambiguous → no manager);
/// 10 and 11 manage each other; 12 and 13 reference nobody; 14 and 15 have neither
/// lastName nor displayName; 16 has an empty displayName; 17 an empty lastName;
/// 18 and 19 have non-Latin/accented names.
fn special_cases(d: &mut [Draft], ids: &mut IdGen, rng: &mut Prng) {
    let chain = [
        Ref::Id,
        Ref::Employee,
        Ref::LoginUpper,
        Ref::Email,
        Ref::Id,
        Ref::LoginMixed,
    ];
    for (k, how) in (1..=6).zip(chain) {
        d[k].manager = Some(reference(&d[k - 1], how));
    }
    d[8].employee_number = d[7].employee_number.clone();
    d[9].manager = Some(d[7].employee_number.clone());
    d[10].manager = Some(d[11].id.clone());
    d[11].manager = Some(d[10].employee_number.clone());
    d[12].manager = Some(ids.next(rng, "00u"));
    d[13].manager = Some("nobody.here@example.com".to_owned());
    for k in [14, 15] {
        d[k].last = None;
        d[k].display = None;
    }
    d[14].manager = Some(d[0].id.clone());
    d[16].display = Some(String::new());
    d[17].last = Some(String::new());
    d[17].display = None;
    d[18].first = "健".to_owned();
    d[18].last = Some("渡辺".to_owned());
    d[18].display = Some("渡辺 健".to_owned());
    d[19].first = "Zoë".to_owned();
    d[19].last = Some("Ólafsdóttir".to_owned());
    d[19].display = None;
}

/// Random managers for the remaining users, mostly picked among the first tenth of the
/// org so reporting chains several levels deep emerge.
fn assign_managers(d: &mut [Draft], from: usize, ambiguous: Option<&str>, rng: &mut Prng) {
    let pool = (d.len() / 10).max(2);
    for i in from.max(1)..d.len() {
        let target = &d[rng.range(0..i.min(pool))];
        let manager = match rng.range(0..100) {
            0..12 => None,
            12..55 => Some(reference(target, Ref::Id)),
            55..68 => Some(reference(target, Ref::Employee)),
            68..73 => Some(reference(target, Ref::Login)),
            73..78 => Some(reference(target, Ref::LoginUpper)),
            78..88 => Some(reference(target, Ref::Email)),
            88..90 => Some(format!("former.employee{i}@example.com")),
            90..92 => Some(format!("999{i:06}")),
            92..94 => ambiguous.map(str::to_owned),
            _ => Some(reference(target, Ref::Id)),
        };
        d[i].manager = manager;
    }
}

fn user_json(d: &Draft, types: &[String; 2], rng: &mut Prng) -> Value {
    let created = d.created;
    let activated = created + rng.range_i64(60..DAY);
    let status_changed = activated + rng.range_i64(0..90 * DAY);
    let last_login = activated + rng.range_i64(DAY..120 * DAY);
    let password_changed = activated + rng.range_i64(0..60 * DAY);
    let last_updated = status_changed.max(last_login).max(password_changed) + rng.range_i64(0..DAY);
    let staged = d.status == "STAGED";
    let never_active = staged || d.status == "PROVISIONED";

    let opt_ts = |set: bool, secs: i64| if set { Value::from(ts(secs)) } else { Value::Null };

    // Built with direct inserts: `json!` re-serializes nested values, which is slow in
    // unoptimized test builds of a 100k-user org.
    let mut profile = Map::new();
    let mut put = |k: &str, v: Value| profile.insert(k.to_owned(), v);
    put("firstName", Value::from(d.first.as_str()));
    if let Some(last) = &d.last {
        put("lastName", Value::from(last.as_str()));
    }
    put("mobilePhone", Value::Null);
    put("secondEmail", Value::Null);
    put("login", Value::from(d.login.as_str()));
    put("email", Value::from(d.email.as_str()));
    if let Some(display) = &d.display {
        put("displayName", Value::from(display.as_str()));
    }
    if let Some(dept) = d.department {
        put("department", Value::from(dept));
    }
    if let Some(title) = d.job_title {
        put("title", Value::from(title));
    }
    put("employeeNumber", Value::from(d.employee_number.as_str()));
    if let Some(manager) = &d.manager {
        put("managerId", Value::from(manager.as_str()));
    }

    let provider = obj([("type", "OKTA".into()), ("name", "OKTA".into())]);
    let credentials = if never_active {
        obj([("provider", provider)])
    } else {
        let email = obj([
            ("value", d.email.as_str().into()),
            ("status", "VERIFIED".into()),
            ("type", "PRIMARY".into()),
        ]);
        obj([
            ("password", Value::Object(Map::new())),
            ("emails", Value::Array(vec![email])),
            ("provider", provider),
        ])
    };
    let href = format!("{ORG_URL}/api/v1/users/{}", d.id);
    obj([
        ("id", d.id.as_str().into()),
        ("status", d.status.into()),
        ("created", ts(created).into()),
        ("activated", opt_ts(!staged, activated)),
        (
            "statusChanged",
            ts(if d.status == "ACTIVE" {
                activated
            } else {
                status_changed
            })
            .into(),
        ),
        (
            "lastLogin",
            opt_ts(!never_active && !d.never_logged_in, last_login),
        ),
        ("lastUpdated", ts(last_updated).into()),
        ("passwordChanged", opt_ts(!never_active, password_changed)),
        ("type", obj([("id", types[d.user_type].as_str().into())])),
        ("profile", Value::Object(profile)),
        ("credentials", credentials),
        ("_links", obj([("self", obj([("href", href.into())]))])),
    ])
}

fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut map = Map::new();
    for (k, v) in pairs {
        map.insert(k.to_owned(), v);
    }
    Value::Object(map)
}

fn group_json(id: &str, kind: &str, name: &str, description: Value, rng: &mut Prng) -> Value {
    let created = EPOCH_2019 + rng.range_i64(0..FIVE_YEARS / 2);
    let last_updated = created + rng.range_i64(0..200 * DAY);
    let membership = created + rng.range_i64(0..400 * DAY);
    let times = [ts(created), ts(last_updated), ts(membership)];
    group_object(id, kind, name, description, [&times[0], &times[1], &times[2]])
}

/// `times`: created, lastUpdated, lastMembershipUpdated.
fn group_object(id: &str, kind: &str, name: &str, description: Value, times: [&str; 3]) -> Value {
    let [created, last_updated, membership] = times;
    json!({
        "id": id,
        "created": created,
        "lastUpdated": last_updated,
        "lastMembershipUpdated": membership,
        "objectClass": ["okta:user_group"],
        "type": kind,
        "profile": {"name": name, "description": description},
        "_links": {
            "logo": [{"name": "medium", "href": format!("{ORG_URL}/assets/img/logos/groups/okta-medium.png"), "type": "image/png"}],
            "users": {"href": format!("{ORG_URL}/api/v1/groups/{id}/users")},
            "apps": {"href": format!("{ORG_URL}/api/v1/groups/{id}/apps")},
        },
    })
}

fn app_json(id: &str, template: usize, label: &str, active: bool, rng: &mut Prng) -> Value {
    let (name, _, mode, features) = APP_TEMPLATES[template];
    let created = EPOCH_2019 + rng.range_i64(0..FIVE_YEARS / 2);
    let last_updated = created + rng.range_i64(0..300 * DAY);
    let times = [ts(created), ts(last_updated)];
    app_object(id, name, label, mode, features, active, [&times[0], &times[1]])
}

/// `times`: created, lastUpdated.
fn app_object(
    id: &str,
    name: &str,
    label: &str,
    mode: &str,
    features: &[&str],
    active: bool,
    times: [&str; 2],
) -> Value {
    let [created, last_updated] = times;
    json!({
        "id": id,
        "name": name,
        "label": label,
        "status": if active { "ACTIVE" } else { "INACTIVE" },
        "lastUpdated": last_updated,
        "created": created,
        "accessibility": {"selfService": false, "errorRedirectUrl": null, "loginRedirectUrl": null},
        "visibility": {
            "autoSubmitToolbar": false,
            "hide": {"iOS": false, "web": false},
            "appLinks": {format!("{name}_link"): true},
        },
        "features": features,
        "signOnMode": mode,
        "credentials": {
            "userNameTemplate": {"template": "${source.login}", "type": "BUILT_IN"},
            "signing": {},
        },
        "settings": {
            "app": {},
            "notifications": {"vpn": {"network": {"connection": "DISABLED"}, "message": null, "helpUrl": null}},
            "manualProvisioning": false,
            "implicitAssignment": false,
        },
        "_links": {
            "users": {"href": format!("{ORG_URL}/api/v1/apps/{id}/users")},
            "groups": {"href": format!("{ORG_URL}/api/v1/apps/{id}/groups")},
            "deactivate": {"href": format!("{ORG_URL}/api/v1/apps/{id}/lifecycle/deactivate")},
            "self": {"href": format!("{ORG_URL}/api/v1/apps/{id}")},
        },
    })
}

fn sample(rng: &mut Prng, pool: &[usize], amount: usize) -> Vec<usize> {
    let amount = amount.min(pool.len());
    index::sample(rng, pool.len(), amount)
        .into_iter()
        .map(|k| pool[k])
        .collect()
}

/// Generates the org described by `spec`; the same spec always yields the identical org.
///
/// Layout (when the org is large enough): group 1 has exactly 1000 members, group 2
/// exactly 200, groups 3..=5 are empty, 6 and 7 are APP_GROUPs; about one user in nine
/// is only in Everyone. App 0 has group 1 plus direct users (> 500 users), app 1 direct
/// users only, app 2 groups only, app 3 nothing, app 4 is INACTIVE, app 5 shares its
/// `name` with app 1.
pub fn generate(spec: &OrgSpec) -> Org {
    let mut rng = Prng::new(spec.seed);
    let mut ids = IdGen {
        used: HashSet::with_capacity(spec.users + spec.groups + spec.apps + 8),
    };
    let n = spec.users;

    // Users.
    let types = [ids.next(&mut rng, "oty"), ids.next(&mut rng, "oty")];
    let statuses = status_plan(n, &mut rng);
    let mut drafts: Vec<Draft> = Vec::with_capacity(n);
    for (i, status) in statuses.into_iter().enumerate() {
        let id = ids.next(&mut rng, "00u");
        drafts.push(draft(i, id, status, &mut rng));
    }
    let special = n >= 2 * SPECIAL;
    let ambiguous = if special {
        special_cases(&mut drafts, &mut ids, &mut rng);
        Some(drafts[7].employee_number.clone())
    } else {
        None
    };
    let first_generic = if special { SPECIAL } else { 1 };
    assign_managers(&mut drafts, first_generic, ambiguous.as_deref(), &mut rng);
    let users: Vec<Value> = drafts.iter().map(|d| user_json(d, &types, &mut rng)).collect();
    let user_ids: Vec<String> = drafts.into_iter().map(|d| d.id).collect();

    // Groups: Everyone first, then the page-boundary and edge-case groups, then random ones.
    let mut org = Org::default();
    let everyone = ids.next(&mut rng, "00g");
    org.groups.push(group_json(
        &everyone,
        "BUILT_IN",
        "Everyone",
        json!("All users in your organization"),
        &mut rng,
    ));
    org.group_members
        .insert(everyone, user_ids.iter().cloned().collect());
    // About one user in nine belongs to no group but Everyone.
    let eligible: Vec<usize> = (0..n).filter(|i| i % 9 != 4).collect();
    let big = if eligible.len() >= BIG_GROUP_SIZE {
        BIG_GROUP_SIZE
    } else {
        eligible.len() / 2
    };
    let page = if eligible.len() >= PAGE_GROUP_SIZE {
        PAGE_GROUP_SIZE
    } else {
        eligible.len() / 4
    };
    for k in 1..spec.groups.max(1) {
        let id = ids.next(&mut rng, "00g");
        let (kind, size) = match k {
            1 => ("OKTA_GROUP", big),
            2 => ("OKTA_GROUP", page),
            3..=5 => ("OKTA_GROUP", 0),
            6 | 7 => ("APP_GROUP", rng.range(1..61)),
            _ => ("OKTA_GROUP", rng.range(1..121)),
        };
        let base = GROUP_NAMES[k % GROUP_NAMES.len()];
        let name = match (kind, k < GROUP_NAMES.len()) {
            ("APP_GROUP", _) => format!("{} Users {k}", APP_TEMPLATES[k % APP_TEMPLATES.len()].1),
            (_, true) => base.to_owned(),
            (_, false) => format!("{base} {k}"),
        };
        let description = if rng.chance(0.3) {
            Value::Null
        } else {
            json!(format!("Members of {name}"))
        };
        org.groups
            .push(group_json(&id, kind, &name, description, &mut rng));
        let members = sample(&mut rng, &eligible, size)
            .into_iter()
            .map(|i| user_ids[i].clone())
            .collect();
        org.group_members.insert(id, members);
    }
    let group_ids: Vec<String> = org.groups.iter().map(|g| id_of(g).to_owned()).collect();
    let all: Vec<usize> = (0..n).collect();

    // Apps.
    let mut labels = HashSet::new();
    for k in 0..spec.apps {
        let id = ids.next(&mut rng, "00a").replacen("00a", "0oa", 1);
        let template = match k {
            1 | 5 => 0, // two "bookmark" apps: `name` is not unique
            _ => rng.range(0..APP_TEMPLATES.len()),
        };
        let base = APP_TEMPLATES[template].1;
        let label = if labels.insert(base) {
            base.to_owned()
        } else {
            format!("{base} {k}")
        };
        let active = match k {
            4 => false,
            0..=5 => true,
            _ => !rng.chance(0.15),
        };
        org.apps.push(app_json(&id, template, &label, active, &mut rng));
        let group = |g: usize| group_ids.get(g).cloned();
        let (direct, groups): (usize, Vec<String>) = match k {
            0 => (30, group(1).into_iter().collect()),
            1 => (25, vec![]),
            2 => (0, [2, 3, 6].into_iter().filter_map(group).collect()),
            3 => (0, vec![]),
            4 => (10, group(7).into_iter().collect()),
            5 => (5, vec![]),
            _ if rng.chance(0.5) => (rng.range(0..40), vec![]),
            _ => {
                let count = rng.range(0..4);
                let picks = (0..count)
                    .filter_map(|_| group(rng.range(1..group_ids.len().max(2))))
                    .collect();
                (rng.range(0..5), picks)
            }
        };
        let users = sample(&mut rng, &all, direct)
            .into_iter()
            .map(|i| user_ids[i].clone())
            .collect();
        org.app_user_assignments.insert(id.clone(), users);
        org.app_group_assignments.insert(id, groups.into_iter().collect());
    }
    org.users = users;
    org
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_covers_edge_cases() {
        let spec = OrgSpec {
            users: 2000,
            groups: 30,
            apps: 12,
            seed: 7,
        };
        let org = generate(&spec);
        assert_eq!(org, generate(&spec));
        assert_ne!(org.users, generate(&OrgSpec { seed: 8, ..spec }).users);
        assert_eq!(org.users.len(), 2000);
        assert_eq!(org.groups.len(), 30);
        assert_eq!(org.apps.len(), 12);

        let everyone = org.everyone_id().unwrap();
        assert_eq!(org.groups[0]["profile"]["name"], "Everyone");
        assert_eq!(org.group_members[&everyone].len(), 2000);
        for status in USER_STATUSES {
            assert!(org.users.iter().any(|u| u["status"] == status), "{status}");
        }
        let deprovisioned = org
            .users
            .iter()
            .filter(|u| u["status"] == "DEPROVISIONED")
            .count();
        assert!(deprovisioned > 200);
        let sizes: Vec<usize> = org.group_members.values().map(BTreeSet::len).collect();
        assert!(sizes.contains(&1000) && sizes.contains(&200) && sizes.contains(&0));
        assert!(org.app_users(id_of(&org.apps[0])).len() > 500);
        assert_eq!(org.apps[1]["name"], org.apps[5]["name"]);

        for secs in [0, 951_782_400, 1_709_634_030, EPOCH_2019 + FIVE_YEARS] {
            assert_eq!(ts(secs), okta_time(DateTime::from_timestamp(secs, 0).unwrap()));
        }

        // Mutations keep Everyone complete and move timestamps forward.
        let mut org = org;
        let mut user = org.users[0].clone();
        user["id"] = json!("00unew0000000000000");
        org.add_user(user);
        assert_eq!(org.group_members[&everyone].len(), 2001);
        let victim = id_of(&org.users[30]).to_owned();
        let before = org.groups[0]["lastMembershipUpdated"].clone();
        assert!(org.delete_user(&victim));
        assert_eq!(org.group_members[&everyone].len(), 2000);
        assert!(org.groups[0]["lastMembershipUpdated"].as_str() > before.as_str());
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["eventType"].as_str().unwrap()).collect()
    }

    fn target_of<'a>(event: &'a Value, kind: &str) -> &'a Value {
        let targets = event["target"].as_array().unwrap();
        targets.iter().find(|t| t["type"] == kind).unwrap()
    }

    #[test]
    fn mutations_log_the_events_okta_would_send() {
        let mut org = generate(&OrgSpec {
            users: 60,
            groups: 6,
            apps: 4,
            seed: 3,
        });
        assert!(org.events.is_empty(), "generation emits no events");
        let active = ids_where(&org.users, |u| u["status"] == "ACTIVE");
        let uid = active[0].clone();
        let login = org.user(&uid).unwrap()["profile"]["login"].clone();

        let group = org.add_group("Event Team", None);
        for user in &active[..4] {
            assert!(org.add_member(&group, user));
        }
        assert!(!org.add_member(&group, &uid), "a no-op logs nothing");
        let memberships = org.take_events();
        let mut expected = vec!["group.lifecycle.create"];
        expected.extend(["group.user_membership.add"; 4]);
        assert_eq!(types(&memberships), expected);
        assert!(org.events.is_empty(), "take_events drains");
        let add = &memberships[1];
        assert_eq!(target_of(add, "User")["id"], uid.as_str());
        assert_eq!(target_of(add, "User")["alternateId"], login);
        assert_eq!(target_of(add, "UserGroup")["id"], group.as_str());
        assert_eq!(target_of(add, "UserGroup")["alternateId"], "Event Team");
        let firsts: BTreeSet<&str> = memberships[1..]
            .iter()
            .map(|e| e["target"][0]["type"].as_str().unwrap())
            .collect();
        assert_eq!(firsts.len(), 2, "targets come in varying order");

        let app = org.add_app("Event App", "bookmark", "BOOKMARK");
        assert!(org.app(&app).is_some_and(|a| a["status"] == "ACTIVE"));
        assert!(org.assign_user(&app, &uid));
        assert!(org.assign_group(&app, &group));
        assert!(org.set_user_status(&uid, "SUSPENDED"));
        assert!(org.set_user_status(&uid, "ACTIVE"));
        assert!(org.set_profile_attr(&uid, "title", Some("Chief")));
        assert!(org.set_app_label(&app, "Event App 2"));
        assert!(org.set_app_status(&app, "INACTIVE"));
        assert!(org.unassign_user(&app, &uid));
        assert!(org.delete_app(&app));
        assert!(org.delete_group(&group));
        assert!(org.delete_user(&uid));
        let events = org.take_events();
        assert_eq!(
            types(&events),
            [
                "application.lifecycle.create",
                "application.user_membership.add",
                "group.application_assignment.add",
                "user.lifecycle.suspend",
                "user.lifecycle.unsuspend",
                "user.account.update_profile",
                "application.lifecycle.update",
                "application.lifecycle.deactivate",
                "application.user_membership.remove",
                "application.lifecycle.delete",
                "group.lifecycle.delete",
                "user.lifecycle.delete.initiated",
            ]
        );
        // The AppUser target is the assignment, with its own id, and the login.
        let assigned = &events[1];
        let kinds: Vec<&str> = assigned["target"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["AppUser", "AppInstance", "User"]);
        let app_user = target_of(assigned, "AppUser");
        assert!(app_user["id"].as_str().unwrap().starts_with("0ua"));
        assert_ne!(app_user["id"], uid.as_str());
        assert_eq!(app_user["alternateId"], login);
        assert_eq!(target_of(assigned, "AppInstance")["alternateId"], "Event App");
        assert_eq!(target_of(&events[8], "AppUser")["id"], app_user["id"]);
        let debug = &events[2]["debugContext"]["debugData"];
        assert!(debug["groupAppAssignmentId"].is_string());
        assert_eq!(debug["requestUri"], format!("/api/v1/apps/{app}/groups/{group}"));
        assert_eq!(target_of(&events[6], "AppInstance")["alternateId"], "Event App 2");

        let all: Vec<&Value> = memberships.iter().chain(&events).collect();
        let uuids: HashSet<&str> = all.iter().map(|e| e["uuid"].as_str().unwrap()).collect();
        assert_eq!(uuids.len(), all.len());
        for e in &all {
            assert_eq!(e["actor"]["id"], ACTOR_ID);
            assert_eq!(e["outcome"]["result"], "SUCCESS");
            assert!(DateTime::parse_from_rfc3339(e["published"].as_str().unwrap()).is_ok());
        }

        let delivery = hook_delivery(&events, 7);
        assert_eq!(delivery["eventType"], "com.okta.event_hook");
        assert_eq!(delivery["data"]["events"].as_array().unwrap().len(), events.len());
        assert_ne!(delivery["eventId"], hook_delivery(&events, 8)["eventId"]);
    }

    #[test]
    fn status_changes_map_to_okta_event_types() {
        let mut org = generate(&OrgSpec {
            users: 40,
            groups: 3,
            apps: 2,
            seed: 5,
        });
        let uid = id_of(&org.users[0]).to_owned();
        let steps = [
            ("DEPROVISIONED", "user.lifecycle.deactivate"),
            ("ACTIVE", "user.lifecycle.reactivate"),
            ("LOCKED_OUT", "user.account.lock"),
            ("ACTIVE", "user.account.unlock_by_admin"),
            ("PASSWORD_EXPIRED", "user.account.reset_password"),
            ("RECOVERY", "user.account.reset_password"),
            ("ACTIVE", "user.lifecycle.activate"),
            ("PROVISIONED", "user.account.update_profile"),
        ];
        for (status, event_type) in steps {
            assert!(org.set_user_status(&uid, status));
            let events = org.take_events();
            assert_eq!(types(&events), [event_type], "{status}");
            assert_eq!(events[0]["target"][0]["id"], uid.as_str());
        }
        let mut user = org.users[1].clone();
        user["id"] = json!("00unewuser000000000");
        user["status"] = json!("ACTIVE");
        org.add_user(user);
        assert_eq!(
            types(&org.take_events()),
            ["user.lifecycle.create", "user.lifecycle.activate"]
        );
        assert!(org.set_manager_id(&uid, None));
        assert_eq!(types(&org.take_events()), ["user.account.update_profile"]);
    }

    fn ids_where(values: &[Value], pick: impl Fn(&Value) -> bool) -> Vec<String> {
        values
            .iter()
            .filter(|v| pick(v))
            .map(|v| id_of(v).to_owned())
            .collect()
    }
}
