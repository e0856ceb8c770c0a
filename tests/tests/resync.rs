//! Full resync, end to end: okta-port's real clients against the Okta and Port
//! simulators over HTTP on loopback.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use okta_port::sync::RunOverrides;
use okta_port_tests::expected::{self, APP_BLUEPRINT, GROUP_BLUEPRINT, USER_BLUEPRINT};
use okta_port_tests::harness::{Env, assert_catalog};
use okta_port_tests::okta_sim::{self, Bucket, OktaSimConfig};
use okta_port_tests::orggen::{Org, OrgSpec, generate};
use okta_port_tests::port_sim::PortSimConfig;
use serde_json::json;

fn org(users: usize, groups: usize, apps: usize) -> Org {
    generate(&OrgSpec {
        users,
        groups,
        apps,
        seed: 7,
    })
}

fn pages(items: usize, page: usize) -> u64 {
    items.div_ceil(page).max(1) as u64
}

/// The fewest Okta calls that can read the org: every listing page, nothing else.
fn page_minimum(org: &Org) -> u64 {
    let deprovisioned = org
        .users
        .iter()
        .filter(|u| u["status"] == "DEPROVISIONED")
        .count();
    let mut calls = pages(org.users.len() - deprovisioned, 200) + pages(deprovisioned, 200);
    calls += pages(org.groups.len(), 10_000) + pages(org.apps.len(), 200);
    calls += org
        .group_members
        .values()
        .map(|m| pages(m.len(), 1000))
        .sum::<u64>();
    for app in &org.apps {
        calls += pages(org.app_users(app["id"].as_str().unwrap()).len(), 500);
    }
    calls
}

/// Deterministic choices of ids for mutations.
fn ids(values: &[serde_json::Value], pick: impl Fn(&serde_json::Value) -> bool) -> Vec<String> {
    values
        .iter()
        .filter(|v| pick(v))
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The mutations a day in an org brings: users deleted and deprovisioned, a group renamed
/// and one deleted, memberships moved, an app unassigned and one deleted, managers changed.
fn mutate(org: &mut Org) {
    let users = ids(&org.users, |u| u["status"] == "ACTIVE");
    let groups = ids(&org.groups, |g| g["type"] == "OKTA_GROUP");
    let apps = ids(&org.apps, |_| true);
    for id in &users[0..5] {
        assert!(org.delete_user(id));
    }
    for id in &users[5..10] {
        assert!(org.set_user_status(id, "DEPROVISIONED"));
    }
    assert!(org.rename_group(&groups[0], "Renamed — Ünïcode team"));
    assert!(org.delete_group(&groups[1]));
    for user in &users[10..20] {
        let from: Vec<String> = org
            .group_members
            .iter()
            .filter(|(g, m)| m.contains(user) && groups.contains(g))
            .map(|(g, _)| g.clone())
            .collect();
        for g in from {
            org.remove_member(&g, user);
        }
        org.add_member(&groups[2], user);
    }
    let (app, app_users): (String, Vec<String>) = org
        .app_user_assignments
        .iter()
        .find(|(_, u)| !u.is_empty())
        .map(|(a, u)| (a.clone(), u.iter().cloned().collect()))
        .expect("an app with direct assignments");
    org.unassign_user(&app, &app_users[0]);
    if let Some((a, g)) = org
        .app_group_assignments
        .iter()
        .find(|(_, g)| !g.is_empty())
        .map(|(a, g)| (a.clone(), g.iter().next().unwrap().clone()))
    {
        org.unassign_group(&a, &g);
    }
    assert!(org.delete_app(apps.last().unwrap()));
    // A manager by id, by login in upper case, one removed, one dangling.
    org.set_manager_id(&users[20], Some(&users[21]));
    let login = org.user(&users[23]).unwrap()["profile"]["login"]
        .as_str()
        .unwrap()
        .to_uppercase();
    org.set_manager_id(&users[22], Some(&login));
    org.set_manager_id(&users[24], None);
    org.set_manager_id(&users[25], Some("nobody@nowhere.example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_builds_the_exact_catalog_with_the_fewest_calls() {
    let org = org(2000, 100, 30);
    let minimum = page_minimum(&org);
    let expected = expected::catalog(&org);
    assert!(expected[USER_BLUEPRINT].len() >= 2000 && expected[GROUP_BLUEPRINT].len() >= 100);
    let env = Env::with_org(org).await;

    let report = env.resync().await.expect("resync runs");
    assert!(report.is_success(), "{}", report.to_text());
    assert_catalog(&env.catalog(), &expected);
    assert_eq!(
        report.blueprints[USER_BLUEPRINT].created,
        expected[USER_BLUEPRINT].len()
    );
    assert_eq!(
        report.blueprints[APP_BLUEPRINT].created,
        expected[APP_BLUEPRINT].len()
    );

    // Okta calls: exactly the listing pages, and no per-user call at all.
    let calls = env.okta.calls();
    assert_eq!(report.okta.calls, calls.total);
    assert_eq!(
        report.okta.calls, minimum,
        "calls by endpoint: {:?}",
        calls.by_endpoint
    );
    assert_eq!(calls.get("users.get") + calls.get("users.groups"), 0);
    assert_eq!(report.okta.rate_limited, 0);
    // Port: bulk writes of at most 20, so about total/20 upserts.
    let port_calls = env.port.calls();
    let entities: usize = expected.values().map(|b| b.len()).sum();
    let upserts = port_calls
        .by_route
        .get("entities.bulk_upsert")
        .copied()
        .unwrap_or(0) as usize;
    assert!(
        upserts >= entities / 20 && upserts <= entities / 20 + 40,
        "{upserts} bulk upserts for {entities} entities"
    );
    eprintln!(
        "org of {} entities: {} Okta calls (page minimum {minimum}), {} Port calls ({upserts} bulk upserts)",
        entities, report.okta.calls, report.port.calls
    );

    // A second run finds nothing to write.
    env.port.reset_calls();
    let again = env.resync().await.expect("second resync runs");
    assert!(again.is_success());
    for (bp, b) in &again.blueprints {
        assert_eq!((b.created, b.updated, b.deleted), (0, 0, 0), "{bp}");
        assert_eq!(b.unchanged, expected[bp].len(), "{bp}");
    }
    assert_eq!(
        env.port
            .calls()
            .by_route
            .get("entities.bulk_upsert")
            .copied()
            .unwrap_or(0),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutated_org_converges_and_foreign_entities_survive() {
    let env = Env::with_org(org(600, 30, 12)).await;
    assert!(env.resync().await.unwrap().is_success());
    // Entities of another tool and of another okta-port installation share the blueprint.
    env.port.seed_entity(
        USER_BLUEPRINT,
        json!({ "identifier": "hr-import-1", "title": "HR", "properties": {}, "relations": {} }),
        "port-ocean/okta/1.0.0/okta/exporter",
    );
    env.port.seed_entity(
        USER_BLUEPRINT,
        json!({ "identifier": "staging-1", "title": "S", "properties": {}, "relations": {} }),
        "okta-port/0.0.9/okta-port-staging",
    );

    env.okta.with_org(mutate);
    let expected = env.okta.with_org(|org| expected::catalog(org));
    let report = env.resync().await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert_catalog(&env.catalog(), &expected);
    assert_eq!(report.blueprints[USER_BLUEPRINT].deleted, 5);
    assert_eq!(report.blueprints[GROUP_BLUEPRINT].deleted, 1);
    assert_eq!(report.blueprints[APP_BLUEPRINT].deleted, 1);
    assert!(report.blueprints[USER_BLUEPRINT].updated >= 10);
    assert!(
        env.port.entity(USER_BLUEPRINT, "hr-import-1").is_some(),
        "another datasource's entity survives"
    );
    assert!(
        env.port.entity(USER_BLUEPRINT, "staging-1").is_some(),
        "another installation's entity survives"
    );

    // Converged: a third run changes nothing and still leaves the foreign entities alone.
    let report = env.resync().await.unwrap();
    assert!(
        report
            .blueprints
            .values()
            .all(|b| b.created + b.updated + b.deleted == 0),
        "{}",
        report.to_text()
    );
    assert!(env.port.entity(USER_BLUEPRINT, "hr-import-1").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_the_plan_and_writes_nothing() {
    let env = Env::with_org(org(300, 12, 6)).await;
    assert!(env.resync().await.unwrap().is_success());
    let before = env.catalog();
    env.okta.with_org(mutate);
    env.port.reset_calls();
    let report = env
        .app()
        .resync(RunOverrides {
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(report.dry_run && report.is_success(), "{}", report.to_text());
    let plan = report.blueprints[USER_BLUEPRINT].plan.as_ref().unwrap();
    assert_eq!(plan.delete.len(), 5);
    assert!(!plan.update.is_empty());
    assert_eq!(
        report.blueprints[APP_BLUEPRINT]
            .plan
            .as_ref()
            .unwrap()
            .delete
            .len(),
        1
    );
    let calls = env.port.calls();
    for route in [
        "entities.bulk_upsert",
        "entities.upsert",
        "entities.bulk_delete",
        "blueprints.create",
    ] {
        assert_eq!(
            calls.by_route.get(route).copied().unwrap_or(0),
            0,
            "{route} called in a dry run"
        );
    }
    assert_eq!(env.catalog(), before);
}

/// A listing that fails for good fails the run: nothing deleted, no relation lost.
async fn failed_listing_case(fault: okta_sim::FaultRule) {
    let env = Env::with_org(org(400, 16, 8)).await;
    assert!(env.resync().await.unwrap().is_success());
    let before = env.catalog();
    // Users vanish (none of them a manager, so that no relation changes for that reason),
    // and the failing listing's relations would be missing from the snapshot.
    let managers: HashSet<String> = before[USER_BLUEPRINT]
        .values()
        .filter_map(|u| u["relations"]["manager"].as_str().map(str::to_owned))
        .collect();
    env.okta.with_org(|org| {
        let gone = ids(&org.users, |u| {
            u["status"] == "ACTIVE" && !managers.contains(u["id"].as_str().unwrap())
        });
        for id in &gone[..3] {
            org.delete_user(id);
        }
    });
    env.okta.add_fault(fault);
    let report = env.resync().await.unwrap();
    assert!(!report.is_success());
    assert!(!report.errors.is_empty(), "{}", report.to_text());
    assert!(
        report.blueprints.values().all(|b| b.deleted == 0),
        "nothing is deleted on an incomplete picture"
    );
    let after = env.catalog();
    for (bp, entities) in &before {
        for (id, old) in entities {
            let new = after[bp]
                .get(id)
                .unwrap_or_else(|| panic!("{bp} {id} was deleted"));
            for (relation, value) in old["relations"].as_object().unwrap() {
                assert_eq!(
                    &new["relations"][relation], value,
                    "{bp} {id} lost its {relation} relation"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_member_listing_deletes_nothing_and_drops_no_relation() {
    let org = org(400, 16, 8);
    let group = org
        .group_members
        .iter()
        .max_by_key(|(_, m)| m.len())
        .map(|(g, _)| g.clone())
        .unwrap();
    failed_listing_case(okta_sim::FaultRule {
        path_prefix: format!("/api/v1/groups/{group}/users"),
        status: 403,
        times: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_listing_failing_after_retries_deletes_nothing() {
    failed_listing_case(okta_sim::FaultRule {
        path_prefix: "/api/v1/apps".into(),
        status: 500,
        times: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_user_listing_deletes_nothing() {
    failed_listing_case(okta_sim::FaultRule {
        path_prefix: "/api/v1/users".into(),
        status: 403,
        times: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_rate_limit_buckets_are_respected_without_failures() {
    let org = org(500, 12, 10);
    let expected = expected::catalog(&org);
    let env = Env::with_org(org).await;
    // The apps bucket takes 11+ calls; the group members bucket 12+.
    env.okta.set_rate_limit(Bucket::Apps, 4, Duration::from_secs(1));
    env.okta
        .set_rate_limit(Bucket::GroupUsers, 5, Duration::from_secs(1));
    let report = env.resync().await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert_catalog(&env.catalog(), &expected);
    eprintln!(
        "tiny buckets: {} Okta calls, {} 429s met, {} ms paused for rate limits",
        report.okta.calls, report.okta.rate_limited, report.okta.rate_limit_wait_ms
    );
    assert!(
        report.okta.rate_limit_wait_ms > 0,
        "the client paused instead of running into the limit"
    );
    assert!(
        report.okta.rate_limited <= 2,
        "{} 429s: the limiter should avoid them",
        report.okta.rate_limited
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_on_both_sides_still_give_the_exact_catalog() {
    let org = org(800, 40, 12);
    let okta = OktaSimConfig {
        fault_rate: 0.05,
        seed: 11,
        ..OktaSimConfig::default()
    };
    let port = PortSimConfig {
        fault_rate: 0.05,
        seed: 12,
        ..PortSimConfig::default()
    };
    let env = Env::start(org.clone(), okta, port).await;
    let report = env.resync().await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert_catalog(&env.catalog(), &expected::catalog(&org));
    assert!(env.okta.calls().faults_injected > 0 && env.port.calls().faults_injected > 0);

    env.okta.with_org(mutate);
    let report = env.resync().await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert_catalog(&env.catalog(), &env.okta.with_org(|org| expected::catalog(org)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_token_expiring_mid_run_is_replaced() {
    let org = org(1000, 20, 8);
    let expected = expected::catalog(&org);
    let env = Env::with_org(org).await;
    let port = env.port.clone();
    // Expire every token once the run is well under way.
    let expirer = tokio::spawn(async move {
        while port
            .calls()
            .by_route
            .get("entities.bulk_upsert")
            .copied()
            .unwrap_or(0)
            < 10
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        port.expire_tokens();
    });
    let report = env.resync().await.unwrap();
    expirer.await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert_catalog(&env.catalog(), &expected);
    let calls = env.port.calls();
    assert_eq!(calls.tokens_issued, 2, "one token, then one replacement");
    assert!(calls.unauthorized_401 >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mass_deletion_guard_refuses_and_the_override_lets_through() {
    let env = Env::with_org(org(300, 10, 5)).await;
    assert!(env.resync().await.unwrap().is_success());
    // Most of the org vanishes (as it would behind a misconfigured token or a bad import).
    env.okta.with_org(|org| {
        let all = ids(&org.users, |_| true);
        for id in &all[..all.len() * 7 / 10] {
            org.delete_user(id);
        }
    });
    let users_before = env.catalog()[USER_BLUEPRINT].len();
    let report = env.resync().await.unwrap();
    assert!(!report.is_success());
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("refusing to delete") && e.contains(USER_BLUEPRINT)),
        "{:?}",
        report.errors
    );
    assert_eq!(report.blueprints[USER_BLUEPRINT].deleted, 0);
    assert_eq!(env.catalog()[USER_BLUEPRINT].len(), users_before);

    let report = env
        .app()
        .resync(RunOverrides {
            allow_mass_deletion: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert_catalog(&env.catalog(), &env.okta.with_org(|org| expected::catalog(org)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_entity_is_reported_by_id_and_the_rest_is_written() {
    let mut org = org(200, 8, 4);
    // An Okta group type the blueprint's enum does not know: Port answers 422 for it.
    let odd = org.groups.iter().position(|g| g["type"] == "OKTA_GROUP").unwrap();
    org.groups[odd]["type"] = json!("SOMETHING_NEW");
    let odd_id = org.groups[odd]["id"].as_str().unwrap().to_owned();
    let env = Env::with_org(org).await;
    let report = env.resync().await.unwrap();
    assert!(!report.is_success());
    let failed = &report.blueprints[GROUP_BLUEPRINT].failed;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].identifier, odd_id);
    assert!(failed[0].reason.contains("422"), "{}", failed[0].reason);
    // Its members could not relate to it, nor, possibly, the users they manage
    // (transitively): those are reported by id, and every other user is written.
    let catalog = env.okta.with_org(|org| expected::catalog(org));
    let members: BTreeSet<String> = env
        .okta
        .with_org(|org| org.group_members[&odd_id].iter().cloned().collect());
    let mut blocked = members.clone();
    loop {
        let more: Vec<String> = catalog[USER_BLUEPRINT]
            .iter()
            .filter(|(id, u)| {
                !blocked.contains(*id)
                    && u["relations"]["manager"]
                        .as_str()
                        .is_some_and(|m| blocked.contains(m))
            })
            .map(|(id, _)| id.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        blocked.extend(more);
    }
    let failed: BTreeSet<String> = report.blueprints[USER_BLUEPRINT]
        .failed
        .iter()
        .map(|f| f.identifier.clone())
        .collect();
    assert!(
        failed.is_superset(&members) && failed.is_subset(&blocked),
        "{failed:?}"
    );
    // Every user not reported is in Port exactly as expected; every reported one is not.
    let actual = env.catalog();
    for (id, want) in &catalog[USER_BLUEPRINT] {
        let got = actual[USER_BLUEPRINT].get(id);
        assert_eq!(
            got == Some(want),
            !failed.contains(id),
            "{id}: reported {} but Port has {got:?}",
            failed.contains(id)
        );
    }
    assert!(
        report.blueprints[USER_BLUEPRINT]
            .failed
            .iter()
            .all(|f| f.reason.contains("not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_rate_limits_are_waited_out() {
    let org = org(200, 8, 4);
    let expected = expected::catalog(&org);
    let env = Env::with_org(org).await;
    env.port.set_rate_limit(8, Duration::from_secs(1));
    let report = env.resync().await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert_catalog(&env.catalog(), &expected);
    assert!(report.port.rate_limited > 0 && env.port.calls().rate_limited_429 > 0);
}
