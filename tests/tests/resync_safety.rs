//! The resync's safety properties, end to end against the simulators: deletions on Port's
//! own timestamps, a loud mass-deletion guard, retries until faults pass, configuration
//! mistakes caught before any write, live events that a resync does not undo, and a safe
//! `OKTA_DOMAIN`. Where a point is about the CLI, the CLI runs as its own process.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use okta_port::app::InvocationError;
use okta_port::okta::{Listing, OktaError, OktaSource, Page};
use okta_port::report::ApiStats;
use okta_port::sync;
use okta_port_tests::expected::{self, APP_BLUEPRINT, GROUP_BLUEPRINT, USER_BLUEPRINT};
use okta_port_tests::harness::{Env, assert_catalog, consume, deliver};
use okta_port_tests::okta_sim::{Bucket, OktaSimConfig};
use okta_port_tests::orggen::{Org, OrgSpec, generate};
use okta_port_tests::port_sim::PortSimConfig;
use serde_json::{Value, json};

fn org(users: usize, groups: usize, apps: usize) -> Org {
    generate(&OrgSpec {
        users,
        groups,
        apps,
        seed: 5,
    })
}

fn first_id(values: &[Value], pick: impl Fn(&Value) -> bool) -> String {
    values.iter().find(|v| pick(v)).expect("one matches")["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn deleted(report: &okta_port::Report) -> (usize, usize, usize) {
    (
        report.blueprints[USER_BLUEPRINT].deleted,
        report.blueprints[GROUP_BLUEPRINT].deleted,
        report.blueprints[APP_BLUEPRINT].deleted,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_object_is_deleted_by_the_very_next_run_however_soon() {
    let env = Env::with_org(org(300, 12, 6)).await;
    assert!(env.resync().await.unwrap().is_success());

    // A user, a group and an app vanish; the next run starts one second later.
    env.okta.with_org(|org| {
        let user = first_id(&org.users, |u| u["status"] == "ACTIVE");
        let group = first_id(&org.groups, |g| g["type"] == "OKTA_GROUP");
        let app = first_id(&org.apps, |_| true);
        assert!(org.delete_user(&user) && org.delete_group(&group) && org.delete_app(&app));
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = env.resync().await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert_eq!(deleted(&report), (1, 1, 1), "{}", report.to_text());
    assert_catalog(&env.catalog(), &env.okta.with_org(|org| expected::catalog(org)));

    // And with no pause at all: a user deleted right after a run is gone after the next.
    env.okta.with_org(|org| {
        let user = first_id(&org.users, |u| u["status"] == "ACTIVE");
        assert!(org.delete_user(&user));
    });
    let report = env.resync().await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert_eq!(deleted(&report), (1, 0, 0), "{}", report.to_text());
    assert_catalog(&env.catalog(), &env.okta.with_org(|org| expected::catalog(org)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mass_deletion_guard_is_loud_in_the_cli_and_the_function() {
    let env = Env::with_org(org(1500, 20, 6)).await;
    let first = env.run_cli(&["resync"], &[]).await;
    assert_eq!(first.code, Some(0), "{first:?}");
    let users = env.catalog()[USER_BLUEPRINT].len();
    assert_eq!(users, 1500);

    // The org is cut from 1,500 to 300 users (a token that sees less, a bad import).
    env.okta.with_org(|org| {
        let ids: Vec<String> = org
            .users
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect();
        for id in &ids[300..] {
            assert!(org.delete_user(id));
        }
    });
    let run = env.run_cli(&["resync"], &[]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    for needle in [
        "mass-deletion guard",
        "refusing to delete 1200 of 1500 oktaUser",
        "50% threshold",
        "--allow-mass-deletion",
        "ALLOW_MASS_DELETION=true",
        "allowMassDeletion",
    ] {
        assert!(run.stdout.contains(needle), "{needle:?} not in:\n{}", run.stdout);
    }
    assert_eq!(env.catalog()[USER_BLUEPRINT].len(), 1500, "nothing deleted");

    let json_run = env.run_cli(&["resync", "--json"], &[]).await;
    assert_eq!(json_run.code, Some(1));
    let report: Value = serde_json::from_str(&json_run.stdout).expect("the report is JSON");
    assert_eq!(report["blueprints"][USER_BLUEPRINT]["deletion_refused"], 1200);
    assert_eq!(report["blueprints"][USER_BLUEPRINT]["deleted"], 0);

    // The scheduled function fails its invocation, so the ResyncErrors alarm fires.
    let err = env.app().scheduled_resync(json!({})).await.unwrap_err();
    assert!(matches!(err, InvocationError::Incomplete { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("refusing to delete 1200 of 1500 oktaUser"),
        "{err}"
    );
    assert_eq!(
        err.report().unwrap().blueprints[USER_BLUEPRINT].deletion_refused,
        1200
    );
    assert_eq!(env.catalog()[USER_BLUEPRINT].len(), 1500);

    // The override lets it through.
    let run = env.run_cli(&["resync", "--allow-mass-deletion"], &[]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_catalog(&env.catalog(), &env.okta.with_org(|org| expected::catalog(org)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_everywhere_still_end_exact_in_one_run() {
    let org = org(1000, 40, 12);
    let expected = expected::catalog(&org);
    let okta = OktaSimConfig {
        // 500s, 503s and 429s without rate-limit headers.
        fault_rate: 0.05,
        seed: 21,
        ..OktaSimConfig::default()
    };
    let port = PortSimConfig {
        // 500/502/503/504 on whole requests, and 500/503 per entity inside 207s.
        fault_rate: 0.05,
        item_fault_rate: 0.05,
        token_ttl: Duration::from_secs(20),
        seed: 22,
        ..PortSimConfig::default()
    };
    let env = Env::start(org, okta, port).await;
    env.okta
        .set_rate_limit(Bucket::UsersList, 3, Duration::from_secs(1));
    env.okta
        .set_rate_limit(Bucket::GroupUsers, 10, Duration::from_secs(1));
    env.okta.set_rate_limit(Bucket::Apps, 5, Duration::from_secs(1));
    env.port.set_rate_limit(4, Duration::from_secs(1));

    let started = Instant::now();
    let run = env.run_cli(&["resync", "--json"], &[]).await;
    let wall = started.elapsed();
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_catalog(&env.catalog(), &expected);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let (okta_calls, port_calls) = (env.okta.calls(), env.port.calls());
    assert!(okta_calls.faults_injected > 0 && port_calls.faults_injected > 0);
    assert!(port_calls.tokens_issued >= 2, "the 20 s token expired mid-run");
    eprintln!(
        "5% faults both sides, small windows, 20 s Port token: rc 0, exact, {:.1} s wall; \
         Okta {} calls ({} faults injected, {} 429s); Port {} calls ({} faults injected incl. \
         per-entity, {} 429s, {} tokens)",
        wall.as_secs_f64(),
        report["okta"]["calls"],
        okta_calls.faults_injected,
        okta_calls.rate_limited_429,
        report["port"]["calls"],
        port_calls.faults_injected,
        port_calls.rate_limited_429,
        port_calls.tokens_issued
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_without_a_boolean_is_refused_before_any_write() {
    let env = Env::with_org(org(60, 6, 3)).await;
    let config = r#"
resources:
  - kind: okta-group
    selector:
      query: '.type'
    port:
      entity:
        mappings:
          identifier: .id
          title: .profile.name
          blueprint: '"oktaGroup"'
"#;
    let run = env.run_cli(&["resync"], &[("PORT_APP_CONFIG", config)]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("resources[0].selector.query")
            && run.stderr.contains("must yield one boolean")
            && run.stderr.contains("string"),
        "{}",
        run.stderr
    );
    let calls = env.port.calls();
    for route in ["entities.bulk_upsert", "entities.upsert", "entities.bulk_delete"] {
        assert_eq!(calls.by_route.get(route).copied().unwrap_or(0), 0, "{route}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_okta_domain_is_refused_and_no_token_leaves() {
    let env = Env::with_org(org(10, 2, 1)).await;
    for (domain, says) in [
        ("http://dev-1.okta.example", "must use https"),
        ("https://admin:pw@dev-1.okta.example", "user information"),
        (
            "https://dev-1.okta.example/api/v1?x=1",
            "without a path, query or fragment",
        ),
    ] {
        let run = env.run_cli(&["resync"], &[("OKTA_DOMAIN", domain)]).await;
        assert_eq!(run.code, Some(2), "{domain}: {run:?}");
        assert!(
            run.stderr.contains("OKTA_DOMAIN") && run.stderr.contains(says),
            "{domain}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("pw"), "{}", run.stderr);
    }
    assert_eq!(env.port.calls().total, 0);
    assert_eq!(env.okta.calls().total, 0);
}

type Hook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The real Okta client, with `hook` run once the last page of users is read and before
/// the resync goes on: the moment a live event lands between the listing and the writes.
struct PausingOkta {
    inner: okta_port::okta::Client,
    hook: Mutex<Option<Hook>>,
}

#[async_trait::async_trait]
impl OktaSource for PausingOkta {
    async fn page(&self, listing: &Listing, next: Option<&str>) -> Result<Page, OktaError> {
        let page = self.inner.page(listing, next).await;
        let last_user_page = *listing == Listing::Users && page.as_ref().is_ok_and(|p| p.next.is_none());
        if last_user_page {
            let hook = self.hook.lock().unwrap().take();
            if let Some(hook) = hook {
                hook().await;
            }
        }
        page
    }
    async fn user(&self, id: &str) -> Result<Option<Value>, OktaError> {
        self.inner.user(id).await
    }
    async fn user_groups(&self, id: &str) -> Result<Vec<Value>, OktaError> {
        self.inner.user_groups(id).await
    }
    async fn user_apps(&self, id: &str) -> Result<Vec<Value>, OktaError> {
        self.inner.user_apps(id).await
    }
    async fn group(&self, id: &str) -> Result<Option<Value>, OktaError> {
        self.inner.group(id).await
    }
    async fn app(&self, id: &str) -> Result<Option<Value>, OktaError> {
        self.inner.app(id).await
    }
    async fn search_users(&self, expression: &str) -> Result<Vec<Value>, OktaError> {
        self.inner.search_users(expression).await
    }
    fn stats(&self) -> ApiStats {
        self.inner.stats()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_during_a_resync_are_not_undone_by_it() {
    let env = Env::with_org(org(200, 8, 4)).await;
    assert!(env.resync().await.unwrap().is_success());
    // Two users change in Okta, so the resync below has something to write for each.
    let (edited, removed) = env.okta.with_org(|org| {
        let active: Vec<String> = org
            .users
            .iter()
            .filter(|u| u["status"] == "ACTIVE")
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect();
        let (edited, removed) = (active[3].clone(), active[4].clone());
        org.set_profile_attr(&edited, "department", Some("Snapshot dept"));
        org.set_profile_attr(&removed, "department", Some("Snapshot dept"));
        org.take_events();
        (edited, removed)
    });

    // Once the resync has read the users, they change again and the live path applies it.
    let (okta, port) = (env.okta.clone(), env.port.clone());
    let live_app = env.app();
    let hook: Hook = Box::new({
        let (edited, removed) = (edited.clone(), removed.clone());
        move || {
            Box::pin(async move {
                let events = okta.with_org(|org| {
                    org.set_profile_attr(&edited, "department", Some("Live dept"));
                    assert!(org.delete_user(&removed));
                    org.take_events()
                });
                let queue = okta_port::queue::MemoryQueue::default();
                let statuses = deliver(&events, 10, &queue).await;
                assert!(statuses.iter().all(|s| *s == 200));
                let consumed = consume(&live_app, queue.drain(), 10, 3).await;
                assert!(consumed.dead.is_empty(), "{:?}", consumed.dead);
                let live = port.entity(USER_BLUEPRINT, &edited).unwrap();
                assert_eq!(live["properties"]["department"], "Live dept");
                assert!(port.entity(USER_BLUEPRINT, &removed).is_none());
            })
        }
    });
    let app = env.app();
    let okta = PausingOkta {
        inner: app.okta.clone(),
        hook: Mutex::new(Some(hook)),
    };
    let report = sync::resync(&okta, &app.port, &app.mapping, &app.options)
        .await
        .unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert!(okta.hook.lock().unwrap().is_none(), "the live step ran");
    assert_eq!(
        report.blueprints[USER_BLUEPRINT].superseded,
        2,
        "{}",
        report.to_text()
    );

    // The live write stands, and the user deleted live was not re-created.
    let user = env.port.entity(USER_BLUEPRINT, &edited).unwrap();
    assert_eq!(user["properties"]["department"], "Live dept");
    assert!(env.port.entity(USER_BLUEPRINT, &removed).is_none());
    // The next run finds the catalog exact.
    let report = env.resync().await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert_catalog(&env.catalog(), &env.okta.with_org(|org| expected::catalog(org)));
}
