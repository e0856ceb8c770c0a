//! An in-memory Okta org behind `OktaSource`, for the core's fast tests: the same
//! answers as the HTTP client gives (DEPROVISIONED users only through a search, 404 as
//! `OktaError::Api`), no network. A listing can be made to fail.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Listing, OktaError, OktaSource, Page};

/// Objects per page: small, so the core's tests page through every listing.
const PAGE: usize = 2;
use crate::report::ApiStats;

#[derive(Default)]
pub struct MemoryOkta {
    org: Mutex<Org>,
    calls: AtomicU64,
}

#[derive(Default, Clone)]
pub struct Org {
    pub users: BTreeMap<String, Value>,
    pub groups: BTreeMap<String, Value>,
    pub apps: BTreeMap<String, Value>,
    /// group id → member ids
    pub members: BTreeMap<String, BTreeSet<String>>,
    /// app id → ids of the users assigned (directly or through a group)
    pub assigned: BTreeMap<String, BTreeSet<String>>,
    /// Listings that answer 500: "users", "groups", "apps", "members", "app_users".
    pub failing: BTreeSet<&'static str>,
}

impl Org {
    pub fn user(&mut self, id: &str, login: &str, manager_id: Option<&str>) -> &mut Self {
        let mut profile = json!({ "login": login, "email": login, "firstName": id, "lastName": "Test" });
        if let Some(m) = manager_id {
            profile["managerId"] = json!(m);
        }
        self.users.insert(
            id.into(),
            json!({ "id": id, "status": "ACTIVE", "profile": profile }),
        );
        self
    }

    pub fn group(&mut self, id: &str, members: &[&str]) -> &mut Self {
        self.groups.insert(
            id.into(),
            json!({ "id": id, "type": "OKTA_GROUP", "profile": { "name": id } }),
        );
        self.members
            .insert(id.into(), members.iter().map(|m| m.to_string()).collect());
        self
    }

    pub fn app(&mut self, id: &str, users: &[&str]) -> &mut Self {
        self.apps
            .insert(id.into(), json!({ "id": id, "label": id, "status": "ACTIVE" }));
        self.assigned
            .insert(id.into(), users.iter().map(|u| u.to_string()).collect());
        self
    }
}

impl MemoryOkta {
    pub fn new(org: Org) -> Self {
        Self {
            org: Mutex::new(org),
            calls: AtomicU64::new(0),
        }
    }

    /// Changes the org between calls (what an admin does in Okta).
    pub fn edit(&self, change: impl FnOnce(&mut Org)) {
        change(&mut self.org.lock().unwrap());
    }

    fn read<T>(&self, listing: &'static str, read: impl FnOnce(&Org) -> T) -> Result<T, OktaError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let org = self.org.lock().unwrap();
        if org.failing.contains(listing) {
            return Err(api_error(500, listing));
        }
        Ok(read(&org))
    }
}

fn api_error(status: u16, endpoint: &str) -> OktaError {
    OktaError::Api {
        status,
        endpoint: endpoint.into(),
        code: if status == 404 { "E0000007" } else { "E0000009" }.into(),
        summary: "simulated".into(),
        id: "memory".into(),
    }
}

#[async_trait]
impl OktaSource for MemoryOkta {
    async fn page(&self, listing: &Listing, next: Option<&str>) -> Result<Page, OktaError> {
        let name = match listing {
            Listing::Users | Listing::DeprovisionedUsers => "users",
            Listing::Groups => "groups",
            Listing::Apps => "apps",
            Listing::GroupMembers(_) => "members",
            Listing::AppUsers(_) => "app_users",
        };
        let skip: usize = next.map_or(Ok(0), str::parse).map_err(|_| api_error(400, name))?;
        let all = self.read(name, |org| -> Vec<Value> {
            let stub = |id: &String| json!({ "id": id });
            match listing {
                Listing::Users | Listing::DeprovisionedUsers => {
                    let deprovisioned = *listing == Listing::DeprovisionedUsers;
                    let users = org.users.values();
                    users
                        .filter(|u| (u["status"] == "DEPROVISIONED") == deprovisioned)
                        .cloned()
                        .collect()
                }
                Listing::Groups => org.groups.values().cloned().collect(),
                Listing::Apps => org.apps.values().cloned().collect(),
                Listing::GroupMembers(g) => org.members.get(g).into_iter().flatten().map(stub).collect(),
                Listing::AppUsers(a) => org.assigned.get(a).into_iter().flatten().map(stub).collect(),
            }
        })?;
        let objects: Vec<Value> = all.iter().skip(skip).take(PAGE).cloned().collect();
        let next = (skip + PAGE < all.len()).then(|| (skip + PAGE).to_string());
        Ok(Page { objects, next })
    }
    async fn user(&self, id: &str) -> Result<Option<Value>, OktaError> {
        self.read("user", |org| org.users.get(id).cloned())
    }
    async fn user_groups(&self, id: &str) -> Result<Vec<Value>, OktaError> {
        self.read("user_groups", |org| {
            let of_user = org.members.iter().filter(|(_, m)| m.contains(id));
            of_user.filter_map(|(g, _)| org.groups.get(g).cloned()).collect()
        })
    }
    async fn user_apps(&self, id: &str) -> Result<Vec<Value>, OktaError> {
        self.read("user_apps", |org| {
            let of_user = org.assigned.iter().filter(|(_, u)| u.contains(id));
            of_user.filter_map(|(a, _)| org.apps.get(a).cloned()).collect()
        })
    }
    async fn group(&self, id: &str) -> Result<Option<Value>, OktaError> {
        self.read("group", |org| org.groups.get(id).cloned())
    }
    async fn app(&self, id: &str) -> Result<Option<Value>, OktaError> {
        self.read("app", |org| org.apps.get(id).cloned())
    }
    /// `profile.<field> eq "<value>"` terms joined by ` or `, compared exactly.
    async fn search_users(&self, expression: &str) -> Result<Vec<Value>, OktaError> {
        let terms: Vec<(String, String)> = expression
            .split(" or ")
            .filter_map(|term| {
                let (field, value) = term.split_once(" eq ")?;
                let field = field.trim().strip_prefix("profile.")?;
                Some((field.to_owned(), value.trim().trim_matches('"').to_owned()))
            })
            .collect();
        self.read("search", |org| {
            org.users
                .values()
                .filter(|u| terms.iter().any(|(f, v)| u["profile"][f].as_str() == Some(v)))
                .cloned()
                .collect()
        })
    }
    fn stats(&self) -> ApiStats {
        ApiStats {
            calls: self.calls.load(Ordering::Relaxed),
            ..ApiStats::default()
        }
    }
}
