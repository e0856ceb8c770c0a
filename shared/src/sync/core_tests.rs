//! The core over the in-memory Okta and Port: whole resyncs and live batches, fast and
//! without sockets (the simulators' end-to-end tests in `tests/` cover the HTTP side).

use serde_json::{Value, json};

use super::live::{self, Context};
use super::resync;
use crate::config::ResyncOptions;
use crate::mapping::{APP_BLUEPRINT, DefaultMapping, GROUP_BLUEPRINT, USER_BLUEPRINT};
use crate::okta::memory::{MemoryOkta, Org};
use crate::port::PortSink;
use crate::port::memory::MemoryPort;

/// Ann manages Bob (by id), Bob manages Cy (by login); Ann and Bob are in one group, Bob
/// and Cy have one app.
fn org() -> Org {
    let mut org = Org::default();
    org.user("00u1", "ann@example.com", None)
        .user("00u2", "bob@example.com", Some("00u1"))
        .user("00u3", "cy@example.com", Some("Bob@Example.com"))
        .group("00g1", &["00u1", "00u2"])
        .app("0oa1", &["00u2", "00u3"]);
    org
}

fn relation(port: &MemoryPort, user: &str, name: &str) -> Value {
    let entity = port.entity(USER_BLUEPRINT, user).expect("the user is in Port");
    entity.relations.get(name).cloned().unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_resync_writes_the_org_then_nothing_then_deletes_what_vanished() {
    let (okta, port) = (MemoryOkta::new(org()), MemoryPort::default());
    let options = ResyncOptions::default();
    let first = resync(&okta, &port, &DefaultMapping, &options).await.unwrap();
    assert!(first.is_success(), "{:?}", first.errors);
    assert_eq!(first.blueprints[USER_BLUEPRINT].created, 3);
    assert_eq!(relation(&port, "00u2", "manager"), json!("00u1"));
    assert_eq!(
        relation(&port, "00u3", "manager"),
        json!("00u2"),
        "a login names its user, whatever the case"
    );
    assert_eq!(relation(&port, "00u2", "groups"), json!(["00g1"]));
    assert_eq!(relation(&port, "00u3", "applications"), json!(["0oa1"]));
    assert_eq!(port.identifiers(GROUP_BLUEPRINT), ["00g1"]);
    assert_eq!(port.identifiers(APP_BLUEPRINT), ["0oa1"]);

    let again = resync(&okta, &port, &DefaultMapping, &options).await.unwrap();
    let users = &again.blueprints[USER_BLUEPRINT];
    assert_eq!((users.created, users.updated, users.unchanged), (0, 0, 3));

    okta.edit(|org| {
        org.users.remove("00u3");
        org.assigned.get_mut("0oa1").unwrap().remove("00u3");
    });
    let after = resync(&okta, &port, &DefaultMapping, &options).await.unwrap();
    assert!(after.is_success(), "{:?}", after.errors);
    assert_eq!(after.blueprints[USER_BLUEPRINT].deleted, 1);
    assert_eq!(port.identifiers(USER_BLUEPRINT), ["00u1", "00u2"]);
}

#[tokio::test]
async fn an_incomplete_picture_of_okta_deletes_nothing() {
    let (okta, port) = (MemoryOkta::new(org()), MemoryPort::default());
    let options = ResyncOptions::default();
    resync(&okta, &port, &DefaultMapping, &options).await.unwrap();
    okta.edit(|org| {
        org.users.remove("00u3");
        org.failing.insert("members");
    });
    let report = resync(&okta, &port, &DefaultMapping, &options).await.unwrap();
    assert!(!report.is_success());
    assert_eq!(port.identifiers(USER_BLUEPRINT), ["00u1", "00u2", "00u3"]);
    // The relation a failed listing supplies is left as it was, not emptied.
    assert_eq!(relation(&port, "00u2", "groups"), json!(["00g1"]));
}

fn event(event_type: &str, targets: &[(&str, &str)]) -> (String, String) {
    let targets: Vec<Value> = targets
        .iter()
        .map(|(kind, id)| json!({ "type": kind, "id": id }))
        .collect();
    let body = json!({ "uuid": format!("{event_type}-{}", targets.len()), "eventType": event_type, "targets": targets });
    (format!("m-{event_type}"), body.to_string())
}

#[tokio::test]
async fn live_events_move_memberships_managers_and_deletions() {
    let (okta, port) = (MemoryOkta::new(org()), MemoryPort::default());
    resync(&okta, &port, &DefaultMapping, &ResyncOptions::default())
        .await
        .unwrap();
    okta.edit(|org| {
        org.members.get_mut("00g1").unwrap().remove("00u2");
        org.users.get_mut("00u2").unwrap()["profile"]["login"] = json!("robert@example.com");
        org.users.remove("00u1");
        org.members.get_mut("00g1").unwrap().remove("00u1");
    });
    let messages = [
        event(
            "group.user_membership.remove",
            &[("User", "00u2"), ("UserGroup", "00g1")],
        ),
        event("user.account.update_profile", &[("User", "00u2")]),
        event("user.lifecycle.delete.initiated", &[("User", "00u1")]),
    ];
    let ctx = Context {
        okta: &okta,
        port: &port,
        mapping: &DefaultMapping,
    };
    let report = live::apply_batch(&messages, &live::default_processors(), &ctx).await;
    assert!(report.failed_messages.is_empty(), "{:?}", report.failures);
    assert_eq!(relation(&port, "00u2", "groups"), json!([]));
    assert_eq!(port.identifiers(USER_BLUEPRINT), ["00u2", "00u3"]);
    // Bob's login changed: Cy's managerId no longer names anyone.
    assert_eq!(relation(&port, "00u3", "manager"), Value::Null);
    assert!(port.stats().calls > 0);
}

/// A resync that may only read a few pages and write one chunk per run still ends, run
/// after run from its checkpoint, with the catalog a single run writes; nothing is
/// deleted before the last run.
#[tokio::test]
async fn a_resync_stopped_at_every_turn_goes_on_until_it_matches_one_whole_run() {
    let (okta, port) = (MemoryOkta::new(org()), MemoryPort::default());
    let options = ResyncOptions::default();
    resync(&okta, &port, &DefaultMapping, &options).await.unwrap();
    okta.edit(|org| {
        org.users.remove("00u3");
        org.assigned.get_mut("0oa1").unwrap().remove("00u3");
        org.user("00u4", "dee@example.com", Some("00u2"));
        org.user("00u5", "eve@example.com", Some("00u4"));
    });
    let dir = tempfile::tempdir().unwrap();
    let store = crate::state::from_url(&format!("file://{}", dir.path().display()))
        .await
        .unwrap();
    let mut runs = 0;
    loop {
        runs += 1;
        let now = tokio::time::Instant::now();
        let budget = super::Budget {
            stop_at: Some(now),
            write_stop_at: Some(now),
            checkpoints: Some(store.as_ref()),
            name: "resync-checkpoint-test",
            max_age: options.checkpoint_max_age,
        };
        let report = super::resync_within(&okta, &port, &DefaultMapping, &options, budget)
            .await
            .unwrap();
        if !report.resumable {
            assert!(report.is_success(), "{:?}", report.errors);
            break;
        }
        assert!(
            port.entity(USER_BLUEPRINT, "00u3").is_some(),
            "deleted before the end"
        );
        assert!(runs < 40, "no progress");
    }
    assert!(runs >= 4, "every turn stopped: {runs} runs");
    let whole = MemoryPort::default();
    resync(&okta, &whole, &DefaultMapping, &options).await.unwrap();
    for bp in [USER_BLUEPRINT, GROUP_BLUEPRINT, APP_BLUEPRINT] {
        assert_eq!(port.identifiers(bp), whole.identifiers(bp), "{bp}");
        for id in whole.identifiers(bp) {
            let (a, b) = (port.entity(bp, &id).unwrap(), whole.entity(bp, &id).unwrap());
            assert_eq!(
                (a.properties, a.relations),
                (b.properties, b.relations),
                "{bp} {id}"
            );
        }
    }
    assert_eq!(relation(&port, "00u5", "manager"), json!("00u4"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "checkpoint removed"
    );
}

/// A checkpoint that cannot be read (a torn write, another tool's file) is not trusted:
/// the resync starts over and ends as a whole run would.
#[tokio::test]
async fn an_unreadable_checkpoint_is_started_over() {
    let (okta, port) = (MemoryOkta::new(org()), MemoryPort::default());
    let options = ResyncOptions::default();
    let dir = tempfile::tempdir().unwrap();
    let store = crate::state::from_url(&format!("file://{}", dir.path().display()))
        .await
        .unwrap();
    let name = "resync-checkpoint-test";
    store.save(name, b"{\"form\": 1, \"started_at\": ").await.unwrap();
    let budget = super::Budget {
        checkpoints: Some(store.as_ref()),
        name,
        max_age: options.checkpoint_max_age,
        ..super::Budget::default()
    };
    let report = super::resync_within(&okta, &port, &DefaultMapping, &options, budget)
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.errors);
    assert!(report.resumed_from.is_none(), "went on from a torn checkpoint");
    assert_eq!(report.blueprints[USER_BLUEPRINT].created, 3);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "checkpoint removed"
    );
}
