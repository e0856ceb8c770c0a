//! The Port catalog an Okta org should produce, computed independently of the product
//! straight from the mapping specification. This is the end-to-end tests' oracle.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use crate::orggen::Org;

pub const USER_BLUEPRINT: &str = "oktaUser";
pub const GROUP_BLUEPRINT: &str = "oktaGroup";
pub const APP_BLUEPRINT: &str = "oktaApplication";

/// Blueprint -> identifier -> `{"identifier","title","properties","relations"}`.
pub type Catalog = BTreeMap<String, BTreeMap<String, Value>>;

/// Computes the expected catalog of `org`. All three blueprints are always present.
pub fn catalog(org: &Org) -> Catalog {
    let mut out = Catalog::new();
    out.insert(USER_BLUEPRINT.to_owned(), users(org));
    out.insert(
        GROUP_BLUEPRINT.to_owned(),
        entities(
            &org.groups,
            |g| g["profile"]["name"].clone(),
            |g| {
                props([
                    ("name", &g["profile"]["name"]),
                    ("description", &g["profile"]["description"]),
                    ("type", &g["type"]),
                    ("created", &g["created"]),
                    ("lastUpdated", &g["lastUpdated"]),
                    ("lastMembershipUpdated", &g["lastMembershipUpdated"]),
                ])
            },
        ),
    );
    out.insert(
        APP_BLUEPRINT.to_owned(),
        entities(
            &org.apps,
            |a| a["label"].clone(),
            |a| {
                props([
                    ("name", &a["name"]),
                    ("label", &a["label"]),
                    ("signOnMode", &a["signOnMode"]),
                    ("status", &a["status"]),
                    ("created", &a["created"]),
                    ("lastUpdated", &a["lastUpdated"]),
                    ("features", &a["features"]),
                ])
            },
        ),
    );
    out
}

/// Indexing a `Value` yields `Null` for missing keys, which is exactly the "missing or
/// null is written as null" rule.
fn props<const N: usize>(pairs: [(&str, &Value); N]) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect::<Map<_, _>>(),
    )
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

fn entities(
    items: &[Value],
    title: impl Fn(&Value) -> Value,
    properties: impl Fn(&Value) -> Value,
) -> BTreeMap<String, Value> {
    items
        .iter()
        .map(|item| {
            let identifier = id(item);
            let entity = entity(&identifier, title(item), properties(item), Map::new());
            (identifier, entity)
        })
        .collect()
}

fn entity(identifier: &str, title: Value, properties: Value, relations: Map<String, Value>) -> Value {
    let mut e = Map::new();
    e.insert("identifier".to_owned(), Value::from(identifier));
    e.insert("title".to_owned(), title);
    e.insert("properties".to_owned(), properties);
    e.insert("relations".to_owned(), Value::Object(relations));
    Value::Object(e)
}

/// A non-empty string, else `None` (empty strings count as "not set" for titles).
fn set(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

/// displayName; else "firstName lastName" when both are set; else login.
pub fn user_title(user: &Value) -> Value {
    let p = &user["profile"];
    if let Some(display) = set(&p["displayName"]) {
        return json!(display);
    }
    if let (Some(first), Some(last)) = (set(&p["firstName"]), set(&p["lastName"])) {
        return json!(format!("{first} {last}"));
    }
    p["login"].clone()
}

/// Resolves `profile.managerId` against all users: an Okta user id, else a unique
/// employeeNumber, else exactly one user whose login or email matches case-insensitively.
pub struct ManagerIndex<'a> {
    ids: BTreeSet<&'a str>,
    employee_numbers: HashMap<&'a str, Vec<&'a str>>,
    logins_and_emails: HashMap<String, BTreeSet<&'a str>>,
}

impl<'a> ManagerIndex<'a> {
    pub fn new(users: &'a [Value]) -> Self {
        let mut index = ManagerIndex {
            ids: BTreeSet::new(),
            employee_numbers: HashMap::new(),
            logins_and_emails: HashMap::new(),
        };
        for u in users {
            let Some(uid) = u["id"].as_str() else {
                continue;
            };
            index.ids.insert(uid);
            let p = &u["profile"];
            if let Some(e) = p["employeeNumber"].as_str() {
                index.employee_numbers.entry(e).or_default().push(uid);
            }
            for field in ["login", "email"] {
                if let Some(v) = p[field].as_str() {
                    index
                        .logins_and_emails
                        .entry(fold_case(v))
                        .or_default()
                        .insert(uid);
                }
            }
        }
        index
    }

    pub fn resolve(&self, manager_id: &str) -> Option<String> {
        // Okta cannot search a value with a quote or a backslash: it names nobody.
        if manager_id.trim().is_empty() || manager_id.contains('"') || manager_id.contains('\\') {
            return None;
        }
        // Only an Okta user id (`00u…`, never an email) is taken as an id.
        if manager_id.starts_with("00u") && !manager_id.contains('@') && self.ids.contains(manager_id) {
            return Some(manager_id.to_owned());
        }
        if let Some([only]) = self.employee_numbers.get(manager_id).map(Vec::as_slice) {
            return Some((*only).to_owned());
        }
        match self.logins_and_emails.get(&fold_case(manager_id)) {
            Some(matches) if matches.len() == 1 => matches.first().map(|s| (*s).to_owned()),
            _ => None,
        }
    }
}

/// Case folding for the login/email comparison; the ASCII path is the same result, faster.
fn fold_case(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

fn users(org: &Org) -> BTreeMap<String, Value> {
    // user id -> group ids / app ids, built in one pass over the relations.
    let mut groups: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (g, members) in &org.group_members {
        for u in members {
            groups.entry(u).or_default().insert(g);
        }
    }
    let mut apps: HashMap<String, BTreeSet<&str>> = HashMap::new();
    for app in &org.apps {
        let app_id = app["id"].as_str().unwrap_or_default();
        for (u, _) in org.app_users(app_id) {
            apps.entry(u).or_default().insert(app_id);
        }
    }
    let managers = ManagerIndex::new(&org.users);

    org.users
        .iter()
        .map(|u| {
            let identifier = id(u);
            let p = &u["profile"];
            let properties = props([
                ("email", &p["email"]),
                ("status", &u["status"]),
                ("created", &u["created"]),
                ("department", &p["department"]),
                ("displayName", &p["displayName"]),
                ("login", &p["login"]),
                ("type", &u["type"]["id"]),
                ("activated", &u["activated"]),
                ("firstName", &p["firstName"]),
                ("lastName", &p["lastName"]),
                ("lastLogin", &u["lastLogin"]),
                ("lastUpdated", &u["lastUpdated"]),
            ]);
            let manager = p["managerId"]
                .as_str()
                .and_then(|m| managers.resolve(m))
                .map_or(Value::Null, Value::String);
            // Sets iterate sorted and deduplicated, as relation arrays must be.
            let user_groups: Vec<Value> = groups
                .get(identifier.as_str())
                .map(|s| s.iter().map(|g| Value::from(*g)).collect())
                .unwrap_or_default();
            let user_apps: Vec<Value> = apps
                .get(&identifier)
                .map(|s| s.iter().map(|a| Value::from(*a)).collect())
                .unwrap_or_default();
            // Direct construction: `json!` would re-serialize the nested values.
            let mut relations = Map::new();
            relations.insert("groups".to_owned(), Value::Array(user_groups));
            relations.insert("manager".to_owned(), manager);
            relations.insert("applications".to_owned(), Value::Array(user_apps));
            let entity = entity(&identifier, user_title(u), properties, relations);
            (identifier, entity)
        })
        .collect()
}

/// The fewest Okta calls a full read of `org` takes (every listing's pages at the largest
/// page size), and how many of them count in the apps bucket.
pub fn okta_page_minimum(org: &Org) -> (u64, u64) {
    use okta_port::okta::{APP_USERS_PAGE, APPS_PAGE, GROUP_USERS_PAGE, GROUPS_PAGE, USERS_PAGE};
    let pages = |n: usize, per: u32| n.div_ceil(per as usize).max(1) as u64;
    let deprovisioned = org
        .users
        .iter()
        .filter(|u| u["status"] == "DEPROVISIONED")
        .count();
    let members = |g: &Value| {
        org.group_members
            .get(g["id"].as_str().unwrap())
            .map_or(0, |m| m.len())
    };
    let users = pages(org.users.len() - deprovisioned, USERS_PAGE) + pages(deprovisioned, USERS_PAGE);
    let groups = pages(org.groups.len(), GROUPS_PAGE)
        + org
            .groups
            .iter()
            .map(|g| pages(members(g), GROUP_USERS_PAGE))
            .sum::<u64>();
    let apps_bucket = pages(org.apps.len(), APPS_PAGE)
        + org
            .apps
            .iter()
            .map(|a| pages(org.app_users(a["id"].as_str().unwrap()).len(), APP_USERS_PAGE))
            .sum::<u64>();
    (users + groups + apps_bucket, apps_bucket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orggen::{OrgSpec, generate};

    #[test]
    fn manager_and_title_edge_cases() {
        let org = generate(&OrgSpec {
            users: 400,
            groups: 12,
            apps: 8,
            seed: 3,
        });
        let cat = catalog(&org);
        let users = &cat[USER_BLUEPRINT];
        assert_eq!(users.len(), 400);
        assert_eq!(cat[GROUP_BLUEPRINT].len(), 12);
        assert_eq!(cat[APP_BLUEPRINT].len(), 8);
        let uid = |i: usize| id(&org.users[i]);
        let manager = |i: usize| users[&uid(i)]["relations"]["manager"].clone();

        // The chain 0 <- 1 <- ... <- 6 resolves through every reference form.
        assert_eq!(manager(0), Value::Null);
        for k in 1..=6 {
            assert_eq!(manager(k), json!(uid(k - 1)), "chain link {k}");
        }
        assert_eq!(manager(9), Value::Null, "ambiguous employeeNumber");
        assert_eq!(manager(10), json!(uid(11)));
        assert_eq!(manager(11), json!(uid(10)));
        assert_eq!(manager(12), Value::Null, "dangling id");
        assert_eq!(manager(13), Value::Null, "dangling email");
        assert_eq!(users[&uid(14)]["title"], org.users[14]["profile"]["login"]);
        assert_eq!(users[&uid(17)]["title"], org.users[17]["profile"]["login"]);
        assert_eq!(users[&uid(19)]["title"], "Zoë Ólafsdóttir");
        assert_eq!(users[&uid(18)]["title"], "渡辺 健");
        assert!(users[&uid(14)]["properties"]["lastName"].is_null());

        let everyone = org.everyone_id().unwrap();
        for u in users.values() {
            let groups = u["relations"]["groups"].as_array().unwrap();
            assert!(groups.contains(&json!(everyone)));
            assert!(u["relations"]["applications"].is_array());
        }
    }
}
