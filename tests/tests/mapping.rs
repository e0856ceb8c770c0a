//! The configurable mapping (port-app-config.yml evaluated with jq), end to end through the
//! simulators: the built-in configuration writes what the hand-written mapping writes, a
//! custom configuration works through a resync and through live events, Ocean's published
//! Okta configuration runs, and bad configurations are refused with precise messages.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use okta_port::App;
use okta_port::mapping::config::{ConfigSource, DEFAULT_CONFIG, MappingConfigError};
use okta_port::mapping::jq::JqMapping;
use okta_port::mapping::{AppMapping, DefaultMapping, Mapping, MappingError, UserLinks};
use okta_port::port::PortSink;
use okta_port::queue::MemoryQueue;
use okta_port::sync::{WholeSnapshot as Snapshot, map_snapshot};
use okta_port_tests::expected::{self, ManagerIndex};
use okta_port_tests::harness::{Env, assert_catalog, consume, deliver, normalize};
use okta_port_tests::orggen::{Org, OrgSpec, generate};
use serde_json::{Value, json};

fn org(users: usize, groups: usize, apps: usize, seed: u64) -> Org {
    generate(&OrgSpec {
        users,
        groups,
        apps,
        seed,
    })
}

/// What a complete resync snapshot of `org` holds.
fn snapshot_of(org: &Org) -> Snapshot {
    let mut user_groups: HashMap<String, Vec<String>> = HashMap::new();
    for (group, members) in &org.group_members {
        for m in members {
            user_groups.entry(m.clone()).or_default().push(group.clone());
        }
    }
    let mut user_apps: HashMap<String, Vec<String>> = HashMap::new();
    for app in &org.apps {
        let id = app["id"].as_str().unwrap();
        for (user, _) in org.app_users(id) {
            user_apps.entry(user).or_default().push(id.to_owned());
        }
    }
    Snapshot {
        users: Some(org.users.clone()),
        groups: Some(org.groups.clone()),
        apps: Some(org.apps.clone()),
        user_groups: Some(user_groups),
        user_apps: Some(user_apps),
        errors: Vec::new(),
    }
}

fn app_with(env: &Env, mapping: AppMapping) -> App {
    let mut app = env.app();
    app.mapping = mapping;
    app
}

fn jq(yaml: &str) -> JqMapping {
    JqMapping::parse(yaml, "test").unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------
// The built-in configuration

#[test]
fn the_builtin_configuration_maps_exactly_like_the_handwritten_mapping() {
    let builtin = JqMapping::builtin();
    assert!(builtin.builtin_shape());
    assert_eq!(builtin.blueprints(), DefaultMapping.blueprints());
    assert_eq!(builtin.blueprint_ids(), DefaultMapping.blueprint_ids());
    for seed in [7, 8] {
        let org = org(3000, 60, 20, seed);
        let snapshot = snapshot_of(&org);
        let want = map_snapshot(&DefaultMapping, &snapshot);
        let got = map_snapshot(&builtin, &snapshot);
        assert!(
            want.failures.is_empty() && got.failures.is_empty(),
            "{:?}",
            got.failures
        );
        assert_eq!(
            got.entities.keys().collect::<Vec<_>>(),
            want.entities.keys().collect::<Vec<_>>()
        );
        for (bp, entities) in &want.entities {
            assert_eq!(entities.len(), got.entities[bp].len());
            for (w, g) in entities.iter().zip(&got.entities[bp]) {
                assert_eq!(g, w, "seed {seed}, {bp} {}", w.identifier);
            }
        }
    }
    // Unknown relations are left out, exactly as the built-in mapping does.
    let user = json!({ "id": "00u1", "status": "ACTIVE", "type": { "id": "oty1" },
        "profile": { "login": "a@x", "displayName": "  ", "firstName": "Ann", "lastName": "" } });
    let groups = vec!["00g2".to_owned(), "00g1".to_owned(), "00g2".to_owned()];
    for links in [
        UserLinks {
            groups: Some(&groups),
            manager: Some(None),
            ..UserLinks::default()
        },
        UserLinks::default(),
    ] {
        assert_eq!(
            builtin.map_user(&user, &links).unwrap(),
            DefaultMapping.map_user(&user, &links).unwrap()
        );
    }
    assert_eq!(
        builtin.map_user(&json!({ "profile": {} }), &UserLinks::default()),
        Err(MappingError::Jq {
            resource: 2,
            field: "port.entity.mappings.identifier".into(),
            message: "must yield a non-empty string, yielded null".into(),
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_configuration_through_jq_gives_the_same_catalog_resync_and_live() {
    let env = Env::with_org(org(1500, 40, 12, 7)).await;
    let app = app_with(&env, AppMapping::Jq(Box::new(JqMapping::builtin())));
    let report = app.resync(Default::default()).await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    let expected = env.okta.with_org(|org| expected::catalog(org));
    assert_catalog(&env.catalog(), &expected);

    // Live: a day's changes, through webhook → queue → consumer, with the jq mapping.
    let events = env.okta.with_org(|org| {
        let users: Vec<String> = org
            .users
            .iter()
            .filter(|u| u["status"] == "ACTIVE")
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .take(12)
            .collect();
        let groups: Vec<String> = org
            .groups
            .iter()
            .filter(|g| g["type"] == "OKTA_GROUP")
            .map(|g| g["id"].as_str().unwrap().to_owned())
            .take(3)
            .collect();
        org.delete_user(&users[0]);
        org.set_user_status(&users[1], "DEPROVISIONED");
        org.set_manager_id(&users[2], Some(&users[3]));
        org.set_profile_attr(&users[4], "displayName", Some("Renamed Person"));
        org.add_member(&groups[0], &users[5]);
        org.remove_member(&groups[1], &users[6]);
        org.rename_group(&groups[2], "Platform — Ünïcode");
        let app = org.apps[0]["id"].as_str().unwrap().to_owned();
        org.assign_user(&app, &users[7]);
        org.take_events()
    });
    let queue = MemoryQueue::default();
    let statuses = deliver(&events, 3, &queue).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let consumed = consume(&app, queue.drain(), 10, 3).await;
    assert!(consumed.dead.is_empty(), "{:?}", consumed.dead);
    let expected = env.okta.with_org(|org| expected::catalog(org));
    assert_catalog(&env.catalog(), &expected);
}

// ---------------------------------------------------------------------------------------
// A custom configuration

const CUSTOM: &str = r#"
entityDeletionThreshold: 0.9
resources:
  - kind: okta-group
    selector:
      query: '.type == "OKTA_GROUP"'
    port:
      entity:
        mappings:
          identifier: .id
          title: .profile.name
          blueprint: '"team"'
          properties:
            description: .profile.description
  - kind: okta-user
    selector:
      query: '.status != "DEPROVISIONED"'
    port:
      entity:
        mappings:
          identifier: .id
          title: '.profile.firstName + " " + .profile.lastName'
          blueprint: '"person"'
          properties:
            costCenter: .profile.costCenter
            email: .profile.email
            appCount: '[.applications[]] | length'
          relations:
            teams: '[.groups[] | select(.type == "OKTA_GROUP") | .id]'
            boss: .manager
"#;

fn custom_blueprints() -> Vec<Value> {
    vec![
        json!({ "identifier": "team", "title": "Team", "schema": { "properties": {
            "description": { "type": "string", "title": "Description" } } }, "relations": {} }),
        json!({ "identifier": "person", "title": "Person", "schema": { "properties": {
            "costCenter": { "type": "string", "title": "Cost center" },
            "email": { "type": "string", "title": "Email" },
            "appCount": { "type": "number", "title": "Applications" } } },
            "relations": {
                "teams": { "title": "Teams", "target": "team", "many": true, "required": false },
                "boss": { "title": "Boss", "target": "person", "many": false, "required": false } } }),
    ]
}

/// The custom configuration's catalog, computed from the org without jq.
fn custom_catalog(org: &Org) -> BTreeMap<String, BTreeMap<String, Value>> {
    let managers = ManagerIndex::new(&org.users);
    let mut teams = BTreeMap::new();
    for g in org.groups.iter().filter(|g| g["type"] == "OKTA_GROUP") {
        let id = g["id"].as_str().unwrap().to_owned();
        teams.insert(
            id.clone(),
            json!({ "identifier": id, "title": g["profile"]["name"],
                "properties": { "description": g["profile"]["description"] }, "relations": {} }),
        );
    }
    let mut people = BTreeMap::new();
    for u in org.users.iter().filter(|u| u["status"] != "DEPROVISIONED") {
        let id = u["id"].as_str().unwrap().to_owned();
        let p = &u["profile"];
        let title = format!(
            "{} {}",
            p["firstName"].as_str().unwrap_or(""),
            p["lastName"].as_str().unwrap_or("")
        );
        let user_teams: BTreeSet<&String> = org
            .group_members
            .iter()
            .filter(|(g, m)| m.contains(&id) && teams.contains_key(*g))
            .map(|(g, _)| g)
            .collect();
        let apps = org
            .apps
            .iter()
            .filter(|a| {
                org.app_users(a["id"].as_str().unwrap())
                    .iter()
                    .any(|(u, _)| *u == id)
            })
            .count();
        let boss = p["managerId"]
            .as_str()
            .and_then(|m| managers.resolve(m))
            .map_or(Value::Null, Value::from);
        people.insert(
            id.clone(),
            json!({ "identifier": id, "title": title,
                "properties": { "costCenter": p["costCenter"], "email": p["email"], "appCount": apps },
                "relations": { "teams": user_teams, "boss": boss } }),
        );
    }
    BTreeMap::from([("team".to_owned(), teams), ("person".to_owned(), people)])
}

fn catalog_of(env: &Env, blueprints: &[&str]) -> BTreeMap<String, BTreeMap<String, Value>> {
    blueprints
        .iter()
        .map(|bp| {
            let entities = env
                .port
                .entities(bp)
                .iter()
                .map(|e| (e["identifier"].as_str().unwrap().to_owned(), normalize(e)))
                .collect();
            (bp.to_string(), entities)
        })
        .collect()
}

fn assert_same(
    actual: &BTreeMap<String, BTreeMap<String, Value>>,
    expected: &BTreeMap<String, BTreeMap<String, Value>>,
) {
    for (bp, want) in expected {
        let got = &actual[bp];
        let mut diffs = Vec::new();
        for (id, w) in want {
            match got.get(id) {
                None => diffs.push(format!("{bp} {id}: missing")),
                Some(g) if g != w => diffs.push(format!("{bp} {id}: got {g}\n  want {w}")),
                _ => {}
            }
        }
        for id in got.keys().filter(|id| !want.contains_key(*id)) {
            diffs.push(format!("{bp} {id}: not expected"));
        }
        assert!(
            diffs.is_empty(),
            "{} differences:\n{}",
            diffs.len(),
            diffs[..diffs.len().min(6)].join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_configuration_works_through_resync_and_live_events() {
    let mut org = org(400, 20, 8, 11);
    let ids: Vec<String> = org
        .users
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        org.set_profile_attr(id, "costCenter", Some(&format!("CC-{}", i % 7)));
    }
    // The selector leaves DEPROVISIONED users out, so a `boss` relation to one would be
    // refused by Port: those reports get no managerId here.
    let deprovisioned: BTreeSet<String> = org
        .users
        .iter()
        .filter(|u| u["status"] == "DEPROVISIONED")
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    let managers = ManagerIndex::new(&org.users);
    let orphaned: Vec<String> = org
        .users
        .iter()
        .filter(|u| {
            u["profile"]["managerId"]
                .as_str()
                .and_then(|m| managers.resolve(m))
                .is_some_and(|m| deprovisioned.contains(&m))
        })
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    drop(managers);
    for id in orphaned {
        org.set_manager_id(&id, None);
    }
    org.take_events();
    let env = Env::with_org(org).await;
    let mut config = env.config();
    config.mapping = ConfigSource::Inline(CUSTOM.to_owned());
    let app = App::new(&config).unwrap();
    assert_eq!(
        app.options.deletion_threshold, 0.9,
        "entityDeletionThreshold applies"
    );
    assert!(
        app.mapping.blueprints().is_empty(),
        "a custom configuration's blueprints are the user's"
    );
    assert_eq!(app.mapping.blueprint_ids(), ["team", "person"]);
    app.port.ensure_blueprints(&custom_blueprints()).await.unwrap();

    let report = app.resync(Default::default()).await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert!(
        env.port.entities("oktaUser").is_empty(),
        "the default blueprints are not created"
    );
    let expected = env.okta.with_org(|org| custom_catalog(org));
    assert!(
        expected["person"].len() < ids.len(),
        "the org has DEPROVISIONED users"
    );
    assert_same(&catalog_of(&env, &["team", "person"]), &expected);

    // Live: a deprovisioning must make the user disappear now, not at the next resync.
    let events = env.okta.with_org(|org| {
        // Users nobody reports to, so that deprovisioning them leaves no dangling `boss`.
        let managers = ManagerIndex::new(&org.users);
        let bosses: BTreeSet<String> = org
            .users
            .iter()
            .filter_map(|u| managers.resolve(u["profile"]["managerId"].as_str()?))
            .collect();
        drop(managers);
        let active: Vec<String> = org
            .users
            .iter()
            .filter(|u| u["status"] == "ACTIVE" && !bosses.contains(u["id"].as_str().unwrap()))
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .take(8)
            .collect();
        let team = org
            .groups
            .iter()
            .find(|g| g["type"] == "OKTA_GROUP")
            .map(|g| g["id"].as_str().unwrap().to_owned())
            .unwrap();
        org.set_user_status(&active[0], "DEPROVISIONED");
        org.set_user_status(&active[1], "DEPROVISIONED");
        org.set_profile_attr(&active[2], "costCenter", Some("CC-new"));
        org.set_profile_attr(&active[3], "firstName", Some("Zoë"));
        org.add_member(&team, &active[4]);
        org.set_manager_id(&active[5], Some(&active[6]));
        org.rename_group(&team, "Renamed team");
        let app = org.apps[1]["id"].as_str().unwrap().to_owned();
        org.assign_user(&app, &active[7]);
        org.take_events()
    });
    let gone: Vec<String> = events
        .iter()
        .filter(|e| e["eventType"] == "user.lifecycle.deactivate")
        .flat_map(|e| e["target"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(gone.len(), 2);
    assert!(
        gone.iter()
            .all(|id| env.port.entities("person").iter().any(|e| e["identifier"] == *id))
    );
    let queue = MemoryQueue::default();
    assert!(deliver(&events, 2, &queue).await.iter().all(|s| *s == 200));
    let consumed = consume(&app, queue.drain(), 10, 3).await;
    assert!(consumed.dead.is_empty(), "{:?}", consumed.dead);
    let catalog = catalog_of(&env, &["team", "person"]);
    for id in &gone {
        assert!(
            !catalog["person"].contains_key(id),
            "{id} deprovisioned: deleted live"
        );
    }
    assert_same(&catalog, &env.okta.with_org(|org| custom_catalog(org)));

    // And a resync afterwards finds nothing to change.
    let report = app.resync(Default::default()).await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    for (bp, b) in &report.blueprints {
        assert_eq!(
            (b.created, b.updated, b.deleted),
            (0, 0, 0),
            "resync changed {bp}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Ocean's published Okta configuration

const OCEAN: &str = include_str!("../fixtures/ocean-okta-port-app-config.yml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oceans_published_configuration_loads_and_runs_with_every_group() {
    let env = Env::with_org(org(300, 15, 5, 3)).await;
    let mut config = env.config();
    config.mapping = ConfigSource::Inline(OCEAN.to_owned());
    let app = App::new(&config).unwrap();
    assert_eq!(app.mapping.blueprint_ids(), ["oktaGroup", "oktaUser"]);
    // The user creates the blueprints (here: Port's Okta blueprints, as okta-port defines them).
    app.port
        .ensure_blueprints(&DefaultMapping.blueprints())
        .await
        .unwrap();
    let report = app.resync(Default::default()).await.unwrap();
    // Ocean's `manager: .profile.managerId` is the raw HR value: where it is not a user id,
    // Port refuses the relation (createMissingRelatedEntities: false), as it does for Ocean.
    let ids: BTreeSet<String> = env.okta.with_org(|org| {
        org.users
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect()
    });
    let dangling: BTreeSet<String> = env.okta.with_org(|org| {
        org.users
            .iter()
            .filter(|u| {
                u["profile"]["managerId"]
                    .as_str()
                    .is_some_and(|m| !ids.contains(m))
            })
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect()
    });
    let failed: BTreeSet<String> = report.blueprints["oktaUser"]
        .failed
        .iter()
        .map(|f| f.identifier.clone())
        .collect();
    assert!(!dangling.is_empty());
    // A user whose manager failed fails too (the relation target is missing).
    let mut dangling = dangling;
    loop {
        let more: Vec<String> = env.okta.with_org(|org| {
            org.users
                .iter()
                .filter(|u| {
                    u["profile"]["managerId"]
                        .as_str()
                        .is_some_and(|m| dangling.contains(m))
                        && !dangling.contains(u["id"].as_str().unwrap())
                })
                .map(|u| u["id"].as_str().unwrap().to_owned())
                .collect()
        });
        if more.is_empty() {
            break;
        }
        dangling.extend(more);
    }
    assert_eq!(failed, dangling, "{}", report.to_text());
    assert!(report.unmapped.is_empty(), "{}", report.to_text());

    let expected = env.okta.with_org(|org| expected::catalog(org));
    let users = env.port.entities("oktaUser");
    assert_eq!(users.len(), expected["oktaUser"].len() - dangling.len());
    let mut several = 0;
    for user in &users {
        let id = user["identifier"].as_str().unwrap();
        let want = &expected["oktaUser"][id];
        // `groups: .groups[].id` relates the user to every group, not only the first.
        let got = normalize(user);
        assert_eq!(got["relations"]["groups"], want["relations"]["groups"], "{id}");
        if want["relations"]["groups"].as_array().unwrap().len() > 1 {
            several += 1;
        }
        assert_eq!(got["properties"]["email"], want["properties"]["email"]);
        let raw = env
            .okta
            .with_org(|org| org.user(id).unwrap()["profile"]["managerId"].clone());
        assert_eq!(got["relations"]["manager"], raw, "{id}");
    }
    assert!(
        several > users.len() / 2,
        "most users are in several groups ({several})"
    );
    assert_eq!(env.port.entities("oktaGroup").len(), expected["oktaGroup"].len());
}

// ---------------------------------------------------------------------------------------
// Refusals

fn refused(yaml: &str) -> MappingConfigError {
    match JqMapping::load(&ConfigSource::Inline(yaml.to_owned())) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e,
    }
}

const USER_RESOURCE: &str = r#"
resources:
  - kind: okta-group
    port: { entity: { mappings: { identifier: .id, blueprint: '"g"' } } }
  - kind: okta-user
    selector:
      query: SELECTOR
    port:
      entity:
        mappings:
          identifier: .id
          title: TITLE
          blueprint: '"u"'
          properties:
            email: .profile.email
"#;

fn user_config(selector: &str, title: &str) -> String {
    USER_RESOURCE
        .replace("SELECTOR", &format!("'{selector}'"))
        .replace("TITLE", &format!("'{title}'"))
}

#[test]
fn bad_configurations_are_refused_with_precise_messages() {
    // Malformed YAML.
    let e = refused("resources:\n  - kind: okta-user\n    port: [unclosed\n");
    assert!(matches!(e, MappingConfigError::Yaml { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("PORT_APP_CONFIG: not a valid port-app-config:"),
        "{e}"
    );
    assert!(e.to_string().contains("line"), "{e}");
    // Missing required field.
    let e =
        refused("resources:\n  - kind: okta-user\n    port: { entity: { mappings: { identifier: .id } } }\n");
    assert!(e.to_string().contains("blueprint"), "{e}");

    // Unknown kind, with the resource index.
    let e = refused(&user_config("true", ".id").replace("kind: okta-user", "kind: okta-device"));
    assert_eq!(
        e.to_string(),
        "PORT_APP_CONFIG: resources[1].kind: unknown kind \"okta-device\" (expected okta-user, okta-group or okta-application)"
    );

    // jq syntax error: the resource, the field and jq's message.
    let e = refused(&user_config("true", ".profile.firstName +"));
    let text = e.to_string();
    assert!(
        text.starts_with("PORT_APP_CONFIG: resources[1].port.entity.mappings.title: jq: "),
        "{text}"
    );
    assert!(text.contains("expected"), "{text}");
    let e = refused(&user_config(".status ==", ".id"));
    assert!(
        e.to_string()
            .starts_with("PORT_APP_CONFIG: resources[1].selector.query: jq: "),
        "{e}"
    );
    let e = refused(&user_config("true", "nosuchfilter(.id)"));
    assert!(e.to_string().contains("undefined filter nosuchfilter/1"), "{e}");
    // An unquoted blueprint name: the message says a jq string needs quotes, and how.
    let e = refused(&user_config("true", ".id").replace("blueprint: '\"u\"'", "blueprint: oktaUser"));
    assert_eq!(
        e.to_string(),
        "PORT_APP_CONFIG: resources[1].port.entity.mappings.blueprint: jq: undefined filter \
         oktaUser/0. A jq string needs its quotes, inside YAML's: write '\"oktaUser\"' for the \
         text oktaUser, or .oktaUser for the field oktaUser"
    );
    let e = refused(&user_config("true", "env.OKTA_API_TOKEN"));
    assert!(
        e.to_string().contains("undefined filter env/0"),
        "env is not available: {e}"
    );

    // A selector that cannot yield a boolean is refused at load…
    let e = refused(&user_config("\"yes\"", ".id"));
    assert_eq!(
        e.to_string(),
        "PORT_APP_CONFIG: resources[1].selector.query: must yield a boolean, yields \"yes\""
    );
    // …and one that yields a non-boolean for an object is a configuration error, naming
    // the resource and the value's type (the resync stops before any write).
    let mapping = jq(&user_config(".status", ".id"));
    let user = json!({ "id": "00u1", "status": "ACTIVE", "profile": {} });
    let err = mapping.map_user(&user, &UserLinks::default()).unwrap_err();
    assert!(err.is_configuration());
    assert_eq!(
        err.to_string(),
        "resources[1].selector.query must yield one boolean, but yielded string (\"ACTIVE\")"
    );

    // A blueprint okta-port cannot know in advance.
    let e = refused(&user_config("true", ".id").replace("'\"u\"'", ".kind"));
    assert!(
        e.to_string().starts_with(
            "PORT_APP_CONFIG: resources[1].port.entity.mappings.blueprint: must be a jq string literal"
        ),
        "{e}"
    );
    // A missing file names the variable and the path.
    let e = JqMapping::load(&ConfigSource::File("/nonexistent/port-app-config.yml".into())).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("PORT_APP_CONFIG_FILE (/nonexistent/port-app-config.yml): cannot read"),
        "{e}"
    );
    // The App refuses before building anything.
    let lookup = |name: &str| match name {
        "OKTA_DOMAIN" => Some("https://dev-1.okta.com".to_owned()),
        "OKTA_API_TOKEN" | "PORT_CLIENT_ID" | "PORT_CLIENT_SECRET" => Some("x".to_owned()),
        "PORT_APP_CONFIG" => Some("resources: 3".to_owned()),
        _ => None,
    };
    let config = okta_port::config::Config::from_lookup(lookup).unwrap();
    let err = App::new(&config).err().expect("refused");
    assert!(
        err.to_string()
            .starts_with("PORT_APP_CONFIG: not a valid port-app-config"),
        "{err}"
    );
}

#[test]
fn single_valued_fields_with_several_outputs_fail_the_object_naming_the_field() {
    let mapping = jq(&user_config("true", ".profile.names[]"));
    let user = json!({ "id": "00u1", "profile": { "names": ["a", "b"] } });
    assert_eq!(
        mapping.map_user(&user, &UserLinks::default()).unwrap_err(),
        MappingError::Jq {
            resource: 1,
            field: "port.entity.mappings.title".into(),
            message: "yielded 2 values where one was expected (wrap it in [...] for an array)".into(),
        }
    );
    // A jq runtime error fails the object with jq's message.
    let mapping = jq(&user_config("true", ".profile.first + 1"));
    let err = mapping
        .map_user(
            &json!({ "id": "00u1", "profile": { "first": "x" } }),
            &UserLinks::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("resources[1].port.entity.mappings.title: jq: "),
        "{err}"
    );
    // The built-in default is what ships in the repository.
    assert!(DEFAULT_CONFIG.contains("kind: okta-user"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jq_error_on_one_object_fails_it_by_id_and_blocks_deletions() {
    let org = org(120, 8, 4, 5);
    let victim = org.users[10]["id"].as_str().unwrap().to_owned();
    // 25 more users the same mapping fails: one error line for all of them.
    let others: Vec<String> = org.users[30..55]
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    let env = Env::with_org(org.clone()).await;
    assert!(env.resync().await.unwrap().is_success());
    // One user gets a profile the custom title cannot handle; another user is deleted.
    let deleted = org.users[20]["id"].as_str().unwrap().to_owned();
    env.okta.with_org(|o| {
        o.set_profile_attr(&victim, "nickname", Some("x"));
        o.delete_user(&deleted);
    });
    let yaml = DEFAULT_CONFIG.replace(
        "          identifier: .id\n          # displayName",
        "          identifier: 'if .profile.nickname then error(\"no nicknames\") else .id end'\n          # displayName",
    );
    assert_ne!(yaml, DEFAULT_CONFIG);
    let mut config = env.config();
    config.mapping = ConfigSource::Inline(yaml);
    let app = App::new(&config).unwrap();
    let report = app.resync(Default::default()).await.unwrap();
    assert!(!report.is_success());
    assert_eq!(report.unmapped.len(), 1, "{}", report.to_text());
    assert_eq!(report.unmapped[0].identifier, victim);
    assert!(
        report.unmapped[0].reason.contains("no nicknames"),
        "{}",
        report.unmapped[0].reason
    );
    // The table's failed column counts it, under the blueprint it would have gone to.
    assert_eq!(report.blueprints["oktaUser"].unmapped, 1);
    let row = report
        .to_text()
        .lines()
        .find(|l| l.starts_with("oktaUser "))
        .unwrap()
        .to_owned();
    assert_eq!(row.split_whitespace().nth(5), Some("1"), "failed column: {row}");

    // Many objects failing the same way: one error with a count and a few examples, the
    // text lists ten and counts the rest.
    env.okta.with_org(|o| {
        for id in &others {
            o.set_profile_attr(id, "nickname", Some("y"));
        }
    });
    let report = app.resync(Default::default()).await.unwrap();
    assert_eq!(report.unmapped.len(), 26, "{}", report.to_text());
    assert_eq!(report.blueprints["oktaUser"].unmapped, 26);
    let mapping_errors: Vec<&String> = report
        .errors
        .iter()
        .filter(|e| e.contains("could not be mapped"))
        .collect();
    assert_eq!(mapping_errors.len(), 1, "{:?}", report.errors);
    assert!(
        mapping_errors[0].starts_with("26 Okta objects could not be mapped (e.g. user 00u"),
        "{}",
        mapping_errors[0]
    );
    let text = report.to_text();
    assert_eq!(text.matches("\nnot mapped 00u").count(), 10, "{text}");
    assert!(
        text.contains("not mapped: 16 more (--json lists them all)"),
        "{text}"
    );
    assert!(
        env.port
            .entities("oktaUser")
            .iter()
            .any(|e| e["identifier"] == deleted),
        "deletions are blocked by the mapping failure"
    );
}

/// Blueprints made by the user in Port, not by okta-port: `person.teams` is a
/// many-relation there, and the configuration fills it with a jq stream (no brackets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blueprints_made_in_port_decide_cardinality_and_selectors_delete() {
    const STREAM: &str = r#"
resources:
  - kind: okta-group
    port:
      entity:
        mappings:
          identifier: .id
          title: .profile.name
          blueprint: '"team"'
          properties:
            description: .profile.description
  - kind: okta-user
    selector:
      query: '.status != "DEPROVISIONED"'
    port:
      entity:
        mappings:
          identifier: .id
          title: .profile.login
          blueprint: '"person"'
          properties:
            email: .profile.email
          relations:
            teams: '.groups[].id'
"#;
    let env = Env::with_org(org(200, 12, 4, 3)).await;
    // The user's own blueprints, made in Port before okta-port ever ran.
    let user_port = env.app();
    user_port
        .port
        .ensure_blueprints(&[
            json!({ "identifier": "team", "title": "Team", "schema": { "properties": {
                "description": { "type": "string", "title": "Description" } } }, "relations": {} }),
            json!({ "identifier": "person", "title": "Person", "schema": { "properties": {
                "email": { "type": "string", "title": "Email" } } },
                "relations": { "teams": { "title": "Teams", "target": "team", "many": true, "required": false } } }),
        ])
        .await
        .unwrap();
    let mut config = env.config();
    config.mapping = ConfigSource::Inline(STREAM.to_owned());
    let app = App::new(&config).unwrap();

    let expected_teams = |env: &Env| -> BTreeMap<String, Vec<String>> {
        env.okta.with_org(|org| {
            org.users
                .iter()
                .filter(|u| u["status"] != "DEPROVISIONED")
                .map(|u| {
                    let id = u["id"].as_str().unwrap().to_owned();
                    let teams: BTreeSet<String> = org
                        .group_members
                        .iter()
                        .filter(|(_, m)| m.contains(&id))
                        .map(|(g, _)| g.clone())
                        .collect();
                    (id, teams.into_iter().collect())
                })
                .collect()
        })
    };
    let actual_teams = |env: &Env| -> BTreeMap<String, Vec<String>> {
        env.port
            .entities("person")
            .iter()
            .map(|e| {
                let mut teams: Vec<String> = e["relations"]["teams"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_owned())
                    .collect();
                teams.sort();
                (e["identifier"].as_str().unwrap().to_owned(), teams)
            })
            .collect()
    };

    let report = app.resync(Default::default()).await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    let want = expected_teams(&env);
    assert!(
        want.values().any(|t| t.len() >= 2),
        "some user is in several groups"
    );
    assert_eq!(actual_teams(&env), want);

    // A user whose selector turns false is deleted by the next resync.
    let leaver = env.okta.with_org(|org| {
        let id = org.users.iter().find(|u| u["status"] == "ACTIVE").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(org.set_user_status(&id, "DEPROVISIONED"));
        id
    });
    let report = App::new(&config)
        .unwrap()
        .resync(Default::default())
        .await
        .unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert_eq!(report.blueprints["person"].deleted, 1);
    assert!(env.port.entity("person", &leaver).is_none());
    assert_eq!(actual_teams(&env), expected_teams(&env));
}
