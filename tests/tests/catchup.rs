//! System Log catch-up: events the hook never delivered (it was down) reach Port through
//! `okta-port catchup`, which reads Okta's System Log from a stored cursor; a pass right
//! after finds nothing to do, and a failed page leaves the cursor where it was.

use std::path::PathBuf;

use okta_port_tests::expected;
use okta_port_tests::harness::{Env, assert_catalog, diff, local_dev_changes};
use okta_port_tests::okta_sim::FaultRule;
use okta_port_tests::orggen::{OrgSpec, generate};
use serde_json::Value;

async fn env_after_an_outage() -> (Env, usize) {
    let env = Env::with_org(generate(&OrgSpec {
        users: 300,
        groups: 12,
        apps: 4,
        seed: 21,
    }))
    .await;
    assert!(env.resync().await.unwrap().is_success());
    // The hook is down: the changes are made in Okta, logged, and never delivered.
    let events = env
        .okta
        .with_org(|org| (1..=4).flat_map(|round| local_dev_changes(org, round)).count());
    assert!(events >= 10, "{events} events");
    (env, events)
}

fn state_dir(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("okta-port-catchup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("file://{}", dir.display());
    (dir, url)
}

fn port_writes(env: &Env) -> u64 {
    let calls = env.port.calls();
    [
        "entities.bulk_upsert",
        "entities.upsert",
        "entities.bulk_delete",
        "entities.delete",
    ]
    .iter()
    .map(|r| calls.by_route.get(*r).copied().unwrap_or(0))
    .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_hook_missed_reach_port_and_a_second_pass_does_nothing() {
    let (env, events) = env_after_an_outage().await;
    let expected = env.okta.with_org(|org| expected::catalog(org));
    let (dir, state_url) = state_dir("exact");
    assert!(
        !diff(&env.catalog(), &expected).is_empty(),
        "Port is behind before the catch-up"
    );

    env.okta.reset_calls();
    let run = env.run_cli(&["catchup"], &[("STATE_URL", &state_url)]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("{events} events")), "{}", run.stdout);
    assert_catalog(&env.catalog(), &expected);
    // One page of events (fewer than 1,000), then the empty page that ends the poll.
    let log_calls = env.okta.calls().by_endpoint.get("logs").copied();
    assert_eq!(log_calls, Some(2), "{:?}", env.okta.calls().by_endpoint);

    env.okta.reset_calls();
    env.port.reset_calls();
    let run = env
        .run_cli(&["catchup", "--json"], &[("STATE_URL", &state_url)])
        .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("--json prints the report");
    assert_eq!(report["newEvents"], 0, "{report}");
    let okta = env.okta.calls();
    assert!(okta.by_endpoint["logs"] <= 2, "{:?}", okta.by_endpoint);
    assert_eq!(
        okta.total, okta.by_endpoint["logs"],
        "no refetch: {:?}",
        okta.by_endpoint
    );
    assert_eq!(port_writes(&env), 0, "{:?}", env.port.calls().by_route);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_page_leaves_the_cursor_and_the_next_pass_catches_up() {
    let (env, _) = env_after_an_outage().await;
    let expected = env.okta.with_org(|org| expected::catalog(org));
    let (dir, state_url) = state_dir("fault");
    // Every attempt at the log fails (the client's retries included).
    env.okta.add_fault(FaultRule {
        path_prefix: "/api/v1/logs".into(),
        status: 503,
        times: Some(5),
    });
    let run = env.run_cli(&["catchup"], &[("STATE_URL", &state_url)]).await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("System Log"), "{}", run.stderr);
    assert!(
        !dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none(),
        "no cursor was saved"
    );

    let run = env.run_cli(&["catchup"], &[("STATE_URL", &state_url)]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_catalog(&env.catalog(), &expected);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_url_it_cannot_use_is_a_configuration_error() {
    let (env, _) = env_after_an_outage().await;
    for (url, says) in [
        ("file://relative/state", "absolute path"),
        ("https://example.com/state", "file:///path or s3://bucket/prefix"),
    ] {
        let run = env.run_cli(&["catchup"], &[("STATE_URL", url)]).await;
        assert_eq!(run.code, Some(2), "{url}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{url}: {}", run.stderr);
    }
    assert_eq!(env.okta.calls().by_endpoint.get("logs"), None, "nothing was read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_cursor_is_refused_and_since_starts_over() {
    let (env, _) = env_after_an_outage().await;
    let expected = env.okta.with_org(|org| expected::catalog(org));
    let (dir, state_url) = state_dir("corrupt");
    let run = env.run_cli(&["catchup"], &[("STATE_URL", &state_url)]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for entry in std::fs::read_dir(&dir).unwrap() {
        std::fs::write(entry.unwrap().path(), b"not a cursor").unwrap();
    }
    let run = env.run_cli(&["catchup"], &[("STATE_URL", &state_url)]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("pass --since"), "{}", run.stderr);
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let run = env
        .run_cli(&["catchup", "--since", &since], &[("STATE_URL", &state_url)])
        .await;
    assert_eq!(
        run.code,
        Some(0),
        "--since ignores the stored cursor: {}",
        run.stderr
    );
    assert_catalog(&env.catalog(), &expected);
    std::fs::remove_dir_all(dir).unwrap();
}
