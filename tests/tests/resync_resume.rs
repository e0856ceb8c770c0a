//! A resync too long for its time budget stops, saves a checkpoint and goes on from it:
//! the CLI (`--state DIR --time-budget SECS`, exit 75 until done) and the resync function
//! as the state machine invokes it (`{"resumable": true}`, checkpoint in moto's S3, a
//! short deadline), each ending with the exact catalog and no page read twice.

use std::time::Duration;

use okta_port_tests::expected;
use okta_port_tests::harness::{self, Env, assert_catalog};
use okta_port_tests::lambda_emu::{Function, function_binary};
use okta_port_tests::moto;
use okta_port_tests::okta_sim::OktaSimConfig;
use okta_port_tests::orggen::{Org, OrgSpec, generate};
use okta_port_tests::port_sim::PortSimConfig;
use serde_json::{Value, json};

/// An org whose users alone take 15 pages, read one after another: with 400 ms per Okta
/// call, far more than one run's budget.
async fn slow_env() -> Env {
    let org = generate(&OrgSpec {
        users: 3000,
        groups: 12,
        apps: 4,
        seed: 23,
    });
    let okta = OktaSimConfig {
        latency: Duration::from_millis(400),
        ..OktaSimConfig::default()
    };
    Env::start(org, okta, PortSimConfig::default()).await
}

fn page_minimum(org: &Org) -> u64 {
    expected::okta_page_minimum(org).0
}

fn okta_calls(report: &Value) -> u64 {
    report["okta"]["calls"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_resync_stops_at_its_budget_and_goes_on_until_exact() {
    let env = slow_env().await;
    let (expected, minimum) = env
        .okta
        .with_org(|org| (expected::catalog(org), page_minimum(org)));
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    let args = ["resync", "--json", "--state", dir, "--time-budget", "1"];

    let mut runs = Vec::new();
    loop {
        let run = env.run_cli(&args, &[]).await;
        let report: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
        runs.push(report.clone());
        match run.code {
            Some(75) => {
                assert_eq!(report["resumable"], true, "{report}");
                // Nothing is written before the snapshot is complete, and nothing deleted
                // before every write is done.
                let blueprints = report["blueprints"].as_object().unwrap();
                if report["listings_left"].as_u64().unwrap() > 0 {
                    assert!(blueprints.is_empty(), "{report}");
                }
                assert!(blueprints.values().all(|b| b["deleted"] == 0), "{report}");
                assert!(
                    std::fs::read_dir(dir).unwrap().count() >= 2,
                    "the checkpoint is saved"
                );
                assert!(runs.len() < 20, "no progress: {runs:?}");
            }
            Some(0) => break,
            other => panic!("exit {other:?}: {run:?}"),
        }
    }
    assert!(runs.len() >= 2, "the budget was to stop the first run: {runs:?}");
    let last = runs.last().unwrap();
    assert_eq!(last["resumable"], false);
    assert!(last["resumed_from"].is_string(), "{last}");
    assert_catalog(&env.catalog(), &expected);
    // Every page once, give or take one per resumption.
    let total: u64 = runs.iter().map(okta_calls).sum();
    let resumptions = runs.len() as u64 - 1;
    assert!(
        total as f64 <= 1.05 * minimum as f64 + resumptions as f64,
        "{total} Okta calls for a page minimum of {minimum} over {resumptions} resumptions"
    );
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        0,
        "the finished run removes its checkpoint"
    );

    // A text report says the run is incomplete and how to go on.
    let text = env
        .run_cli(&["resync", "--state", dir, "--time-budget", "1"], &[])
        .await;
    assert_eq!(text.code, Some(75), "{text:?}");
    assert!(
        text.stdout.contains("incomplete") && text.stdout.contains("same command"),
        "{}",
        text.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_older_than_its_max_age_is_started_over() {
    let env = slow_env().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    let first = env
        .run_cli(&["resync", "--json", "--state", dir, "--time-budget", "1"], &[])
        .await;
    assert_eq!(first.code, Some(75), "{first:?}");
    // Age the saved resync by two hours.
    let manifest = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().ends_with(".json") && !p.to_str().unwrap().contains("-users"))
        .expect("the checkpoint's manifest");
    let mut saved: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let started = chrono::Utc::now() - chrono::Duration::hours(2);
    saved["started_at"] = json!(started);
    std::fs::write(&manifest, serde_json::to_vec(&saved).unwrap()).unwrap();

    let max_age = [("RESYNC_CHECKPOINT_MAX_AGE", "3600")];
    let again = env
        .run_cli(
            &["resync", "--json", "--state", dir, "--time-budget", "1"],
            &max_age,
        )
        .await;
    let report: Value = serde_json::from_str(&again.stdout).unwrap();
    assert!(
        report["resumed_from"].is_null(),
        "a stale checkpoint is not gone on from: {report}"
    );
    let kept = env
        .run_cli(
            &["resync", "--json", "--state", dir, "--time-budget", "1"],
            &max_age,
        )
        .await;
    let report: Value = serde_json::from_str(&kept.stdout).unwrap();
    assert!(report["resumed_from"].is_string(), "a fresh one is: {report}");
}

/// The state machine's loop, played by hand: invoke the resync function with
/// `{"resumable": true}` and a short deadline while its answer says `resumable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resync_function_goes_on_from_its_s3_checkpoint_until_exact() {
    let env = slow_env().await;
    let (expected, minimum) = env
        .okta
        .with_org(|org| (expected::catalog(org), page_minimum(org)));
    let endpoint = moto::sqs_endpoint().await;
    let bucket = format!("okta-port-resync-{}", std::process::id());
    let s3 = moto::s3_client(&endpoint).await;
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create the state bucket");
    let mut vars = env.variables();
    vars.extend(harness::aws_test_variables(&endpoint));
    vars.push(("STATE_URL", format!("s3://{bucket}/okta-port")));
    let vars: Vec<(&str, String)> = vars.iter().map(|(k, v)| (*k, v.clone())).collect();
    let function = Function::start(&function_binary("resync"), &vars).await;
    let checkpoint_objects = || async {
        let listed = s3
            .list_objects_v2()
            .bucket(&bucket)
            .prefix("okta-port/resync-checkpoint")
            .send()
            .await;
        listed.unwrap().contents().len()
    };

    let mut answers = Vec::new();
    loop {
        // A 3-second invocation reads Okta for 2 seconds, then saves the checkpoint.
        let answer = function
            .runtime
            .invoke(json!({ "resumable": true }), Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("no answer; logs:\n{}", function.logs()))
            .response();
        answers.push(answer.clone());
        if answer["resumable"] != true {
            break;
        }
        assert_eq!(checkpoint_objects().await, 2, "manifest and users in S3");
        assert!(answers.len() < 20, "no progress: {answers:?}");
    }
    assert!(answers.len() >= 2, "{answers:?}");
    assert_catalog(&env.catalog(), &expected);
    let total: u64 = answers.iter().map(okta_calls).sum();
    assert!(
        total as f64 <= 1.05 * minimum as f64 + answers.len() as f64,
        "{total} Okta calls for a page minimum of {minimum}"
    );
    assert_eq!(
        checkpoint_objects().await,
        0,
        "the finished resync removes its checkpoint"
    );
    function.stop().await;
}
