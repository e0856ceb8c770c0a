//! The stack's scheduled catch-up: the resync function, invoked with `{"catchUp": true}`,
//! reads the System Log from a cursor in S3 and queues what the hook missed; the consumer
//! applies it. Real parts: the function binary under the Lambda Runtime API, moto's S3
//! and SQS, the Okta and Port simulators.

use std::time::{Duration, Instant};

use okta_port::queue::Sqs;
use okta_port_tests::expected;
use okta_port_tests::harness::{self, Env, assert_catalog, consume, diff, local_dev_changes};
use okta_port_tests::lambda_emu::{Function, function_binary};
use okta_port_tests::moto;
use okta_port_tests::orggen::{OrgSpec, generate};
use serde_json::{Value, json};

async fn drain(sqs: &Sqs, at_least: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut bodies = Vec::new();
    loop {
        let batch = sqs.receive(10, 1).await.expect("receive");
        let empty = batch.is_empty();
        for message in batch {
            sqs.delete(std::slice::from_ref(&message.receipt_handle))
                .await
                .expect("delete");
            bodies.push(message.body);
        }
        if (empty && bodies.len() >= at_least) || Instant::now() > deadline {
            return bodies;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_catch_up_queues_what_the_hook_missed_and_keeps_its_cursor_in_s3() {
    let env = Env::with_org(generate(&OrgSpec {
        users: 200,
        groups: 8,
        apps: 3,
        seed: 41,
    }))
    .await;
    assert!(env.resync().await.unwrap().is_success());
    let events = env.okta.with_org(|org| {
        (1..=3)
            .map(|round| local_dev_changes(org, round).len())
            .sum::<usize>()
    });
    let expected = env.okta.with_org(|org| expected::catalog(org));
    assert!(!diff(&env.catalog(), &expected).is_empty());

    let endpoint = moto::sqs_endpoint().await;
    let sqs_client = moto::sqs_client(&endpoint).await;
    let (queue_url, _dlq) = moto::create_queue(&sqs_client, "catchup").await;
    let bucket = format!("okta-port-state-{}", std::process::id());
    let s3 = moto::s3_client(&endpoint).await;
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create the state bucket");

    let mut vars = env.variables();
    vars.extend(harness::aws_test_variables(&endpoint));
    vars.push(("STATE_URL", format!("s3://{bucket}/okta-port")));
    vars.push(("EVENTS_QUEUE_URL", queue_url.clone()));
    let vars: Vec<(&str, String)> = vars.iter().map(|(k, v)| (*k, v.clone())).collect();
    let function = Function::start(&function_binary("resync"), &vars).await;
    let invoke = || async {
        function
            .runtime
            .invoke(json!({ "catchUp": true }), Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("no answer; logs:\n{}", function.logs()))
            .response()
    };

    let report: Value = invoke().await;
    assert_eq!(report["newEvents"], events, "{report}");
    let sqs = Sqs::new(sqs_client, queue_url);
    let bodies = drain(&sqs, events).await;
    assert_eq!(bodies.len(), events, "one message per event");
    let consumed = consume(&env.app(), bodies, 10, 3).await;
    assert!(consumed.dead.is_empty(), "{:?}", consumed.dead);
    assert_catalog(&env.catalog(), &expected);

    // The cursor is in S3; the next pass finds nothing new and queues nothing.
    let objects = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("okta-port/")
        .send()
        .await
        .unwrap();
    assert_eq!(objects.contents().len(), 1, "{objects:?}");
    let report: Value = invoke().await;
    assert_eq!(report["newEvents"], 0, "{report}");
    assert!(report["pages"].as_u64().unwrap() <= 2, "{report}");
    assert!(drain(&sqs, 0).await.is_empty());
    function.stop().await;
}
