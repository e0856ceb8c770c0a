//! Everything a resync reads from Okta, kept compact so memory stays bounded as the org
//! grows: each Okta id is stored once and named by a number; users are spilled to local
//! disk as Okta sent them (without `_links`) and read back one at a time to be mapped; in
//! memory stay only the keys the manager rule needs and the membership pairs.
//!
//! Listings are read page by page (`read`), and the state of each (its next-page cursor)
//! lives here too, so a snapshot saved half-way (a checkpoint) goes on where it stopped.

mod read;
mod spill;
mod whole;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use self::read::{DRAIN, ReadEnd, read_okta};
pub use self::spill::{Span, Spill};
pub use self::whole::{Desired, WholeSnapshot, map_snapshot};
use crate::domain::UserLookup;
use crate::okta::{Listing, OktaError, Page};

/// Where a listing stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ListingState {
    /// Still to read, from this cursor (`None`: the first page).
    Next(Option<String>),
    Done,
    Failed,
}

/// Okta ids, each stored once and named by its index.
#[derive(Debug, Default)]
pub struct Ids {
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
}

impl Ids {
    pub fn intern(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let name: Arc<str> = Arc::from(id);
        let i = self.names.len() as u32;
        self.names.push(name.clone());
        self.index.insert(name, i);
        i
    }

    pub fn get(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    pub fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }
}

impl Serialize for Ids {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names.iter().map(|n| &**n))
    }
}

impl<'de> Deserialize<'de> for Ids {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names: Vec<String> = Vec::deserialize(d)?;
        let mut ids = Ids::default();
        for name in names {
            ids.intern(&name);
        }
        Ok(ids)
    }
}

/// One user: where its JSON lies in the spill file, and the keys the manager rule looks
/// up (login and email lowercased).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: u32,
    pub span: Span,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_id: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_number: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logins: Vec<Box<str>>,
}

/// Everything read from Okta so far, and where each listing stands.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    ids: Ids,
    users: Vec<UserRecord>,
    #[serde(skip)]
    is_user: HashSet<u32>,
    groups: Vec<Value>,
    apps: Vec<Value>,
    /// (user, group) pairs, then (user, app): sorted by user once every listing is read.
    group_members: Vec<(u32, u32)>,
    app_users: Vec<(u32, u32)>,
    #[serde(with = "as_pairs")]
    listings: BTreeMap<Listing, ListingState>,
    /// Whether every group's members, and every app's users, were read (set by `finish`).
    #[serde(skip)]
    links_complete: (bool, bool),
    /// Every listing that failed, with Okta's error.
    pub errors: Vec<String>,
}

impl Snapshot {
    /// Nothing read yet: the four root listings wait for their first page.
    pub fn new() -> Self {
        let mut snapshot = Snapshot::default();
        for root in [
            Listing::Users,
            Listing::DeprovisionedUsers,
            Listing::Groups,
            Listing::Apps,
        ] {
            snapshot.listings.insert(root, ListingState::Next(None));
        }
        snapshot
    }

    /// After loading a checkpoint: the lookups that are not saved.
    pub fn restore(&mut self) {
        self.is_user = self.users.iter().map(|u| u.id).collect();
    }

    /// The listings still to read, with their cursors.
    pub fn pending(&self) -> Vec<(Listing, Option<String>)> {
        self.listings
            .iter()
            .filter_map(|(l, s)| match s {
                ListingState::Next(next) => Some((l.clone(), next.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether every listing is done or failed.
    pub fn is_read(&self) -> bool {
        self.listings
            .values()
            .all(|s| !matches!(s, ListingState::Next(_)))
    }

    /// Listings, users, and pages still to read (for logs and reports).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.listings.len(), self.users.len(), self.pending().len())
    }

    /// Takes one page's answer: its objects, and where the listing goes on. Returns the
    /// listings the page started (each group's members, each app's users).
    pub fn take_page(
        &mut self,
        spill: &mut Spill,
        listing: &Listing,
        page: Result<Page, OktaError>,
    ) -> std::io::Result<Vec<Listing>> {
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                self.errors.push(format!("listing {}: {e}", describe(listing)));
                self.listings.insert(listing.clone(), ListingState::Failed);
                return Ok(Vec::new());
            }
        };
        let mut started = Vec::new();
        for object in page.objects {
            let Some(id) = object["id"].as_str() else { continue };
            let i = self.ids.intern(id);
            match listing {
                Listing::Users | Listing::DeprovisionedUsers => self.add_user(spill, i, object)?,
                Listing::Groups => {
                    started.push(Listing::GroupMembers(id.to_owned()));
                    self.groups.push(object);
                }
                Listing::Apps => {
                    started.push(Listing::AppUsers(id.to_owned()));
                    self.apps.push(object);
                }
                Listing::GroupMembers(group) => {
                    let group = self.ids.intern(group);
                    self.group_members.push((i, group));
                }
                Listing::AppUsers(app) => {
                    let app = self.ids.intern(app);
                    self.app_users.push((i, app));
                }
            }
        }
        for sub in &started {
            self.listings.insert(sub.clone(), ListingState::Next(None));
        }
        let state = page
            .next
            .map_or(ListingState::Done, |n| ListingState::Next(Some(n)));
        self.listings.insert(listing.clone(), state);
        Ok(started)
    }

    /// A user once, whichever listing brings it first (a user changing status between the
    /// two listings may appear in both).
    fn add_user(&mut self, spill: &mut Spill, id: u32, mut user: Value) -> std::io::Result<()> {
        if !self.is_user.insert(id) {
            return Ok(());
        }
        if let Some(fields) = user.as_object_mut() {
            fields.remove("_links");
        }
        let profile = &user["profile"];
        let text = |key: &str| {
            profile[key]
                .as_str()
                .filter(|s| !s.trim().is_empty())
                .map(Box::from)
        };
        let mut logins: Vec<Box<str>> = ["login", "email"]
            .iter()
            .filter_map(|k| text(k))
            .map(|s: Box<str>| s.to_lowercase().into_boxed_str())
            .collect();
        logins.dedup(); // login == email: one user, counted once
        let record = UserRecord {
            id,
            span: spill.append(&serde_json::to_vec(&user).expect("JSON value"))?,
            manager_id: text("managerId"),
            employee_number: text("employeeNumber"),
            logins,
        };
        self.users.push(record);
        Ok(())
    }

    /// Orders the membership pairs by user, once every listing is read, and notes which
    /// relations are complete.
    pub fn finish(&mut self) {
        self.group_members.sort_unstable();
        self.group_members.dedup();
        self.app_users.sort_unstable();
        self.app_users.dedup();
        self.links_complete = (
            self.groups().is_some() && self.all_done(|l| matches!(l, Listing::GroupMembers(_))),
            self.apps().is_some() && self.all_done(|l| matches!(l, Listing::AppUsers(_))),
        );
    }

    pub fn users(&self) -> &[UserRecord] {
        &self.users
    }

    pub fn ids(&self) -> &Ids {
        &self.ids
    }

    /// None when a user listing failed: no user can be written faithfully then.
    pub fn users_complete(&self) -> bool {
        [Listing::Users, Listing::DeprovisionedUsers]
            .iter()
            .all(|l| self.listings.get(l) == Some(&ListingState::Done))
    }

    pub fn groups(&self) -> Option<&[Value]> {
        (self.listings.get(&Listing::Groups) == Some(&ListingState::Done)).then_some(&self.groups[..])
    }

    pub fn apps(&self) -> Option<&[Value]> {
        (self.listings.get(&Listing::Apps) == Some(&ListingState::Done)).then_some(&self.apps[..])
    }

    /// The ids of the user's groups; `None` unless every group's members were read.
    pub fn groups_of(&self, user: u32) -> Option<Vec<String>> {
        self.links_complete
            .0
            .then(|| self.related(&self.group_members, user))
    }

    /// The ids of the user's apps; `None` unless every app's users were read.
    pub fn apps_of(&self, user: u32) -> Option<Vec<String>> {
        self.links_complete.1.then(|| self.related(&self.app_users, user))
    }

    fn all_done(&self, which: impl Fn(&Listing) -> bool) -> bool {
        self.listings
            .iter()
            .filter(|(l, _)| which(l))
            .all(|(_, s)| *s == ListingState::Done)
    }

    fn related(&self, pairs: &[(u32, u32)], user: u32) -> Vec<String> {
        let start = pairs.partition_point(|&(u, _)| u < user);
        let mut ids: Vec<String> = pairs[start..]
            .iter()
            .take_while(|&&(u, _)| u == user)
            .map(|&(_, c)| self.ids.name(c).to_owned())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The lookup the manager rule runs on.
    pub fn manager_lookup(&self) -> ManagerLookup<'_> {
        let mut lookup = ManagerLookup {
            snapshot: self,
            by_employee_number: HashMap::new(),
            by_login_or_email: HashMap::new(),
        };
        for user in &self.users {
            if let Some(n) = &user.employee_number {
                lookup.by_employee_number.entry(n).or_default().push(user.id);
            }
            for login in &user.logins {
                lookup.by_login_or_email.entry(login).or_default().push(user.id);
            }
        }
        lookup
    }
}

/// Objects by id (what a jq mapping reads as a user's `.groups` and `.applications`).
pub fn by_id(objects: Option<&[Value]>) -> HashMap<&str, &Value> {
    let objects = objects.into_iter().flatten();
    objects.filter_map(|o| Some((o["id"].as_str()?, o))).collect()
}

pub fn objects_of<'a>(ids: Option<&[String]>, index: &HashMap<&str, &'a Value>) -> Option<Vec<&'a Value>> {
    ids.map(|ids| {
        ids.iter()
            .filter_map(|id| index.get(id.as_str()).copied())
            .collect()
    })
}

fn describe(listing: &Listing) -> String {
    match listing {
        Listing::Users => "users".into(),
        Listing::DeprovisionedUsers => "DEPROVISIONED users".into(),
        Listing::Groups => "groups".into(),
        Listing::Apps => "apps".into(),
        Listing::GroupMembers(g) => format!("members of group {g}"),
        Listing::AppUsers(a) => format!("users of app {a}"),
    }
}

/// The manager rule's lookups over the snapshot's users.
pub struct ManagerLookup<'a> {
    snapshot: &'a Snapshot,
    by_employee_number: HashMap<&'a str, Vec<u32>>,
    by_login_or_email: HashMap<&'a str, Vec<u32>>,
}

impl ManagerLookup<'_> {
    /// The Okta id of the user's manager, if its `managerId` resolves.
    pub fn manager_of(&self, user: &UserRecord) -> Option<String> {
        use futures::FutureExt;
        let manager_id = user.manager_id.as_deref()?;
        match crate::domain::resolve_manager(self, manager_id).now_or_never() {
            Some(Ok(found)) => found,
            Some(Err(never)) => match never {},
            None => unreachable!("the lookup answers without waiting"),
        }
    }

    fn names(&self, ids: Option<&Vec<u32>>) -> BTreeSet<String> {
        let names = ids.into_iter().flatten();
        names.map(|&i| self.snapshot.ids.name(i).to_owned()).collect()
    }
}

impl UserLookup for ManagerLookup<'_> {
    type Error = std::convert::Infallible;

    async fn is_user(&self, id: &str) -> Result<bool, Self::Error> {
        let snapshot = self.snapshot;
        Ok(snapshot
            .ids
            .get(id)
            .is_some_and(|i| snapshot.is_user.contains(&i)))
    }

    async fn with_employee_number(&self, number: &str) -> Result<BTreeSet<String>, Self::Error> {
        Ok(self.names(self.by_employee_number.get(number)))
    }

    async fn with_login_or_email(&self, value: &str) -> Result<BTreeSet<String>, Self::Error> {
        Ok(self.names(self.by_login_or_email.get(value.to_lowercase().as_str())))
    }
}

/// A map with non-string keys, saved as a list of pairs.
mod as_pairs {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        map: &BTreeMap<Listing, ListingState>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Listing, ListingState>, D::Error> {
        let pairs: Vec<(Listing, ListingState)> = Vec::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}
