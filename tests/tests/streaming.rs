//! Okta Log Streaming: System Log events on an EventBridge bus, matched by a rule on the
//! handled event types, land on the queue (moto's EventBridge and SQS, as the stack wires
//! them) and the consumer applies them like the webhook's messages.

use std::time::{Duration, Instant};

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use okta_port::queue::Sqs;
use okta_port_tests::expected;
use okta_port_tests::harness::{Env, assert_catalog, consume, diff, local_dev_changes};
use okta_port_tests::moto;
use okta_port_tests::orggen::{OrgSpec, generate};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_streaming_events_reach_port_through_eventbridge_and_the_queue() {
    let env = Env::with_org(generate(&OrgSpec {
        users: 200,
        groups: 8,
        apps: 3,
        seed: 31,
    }))
    .await;
    assert!(env.resync().await.unwrap().is_success());
    let events = env.okta.with_org(|org| {
        (1..=3)
            .flat_map(|round| local_dev_changes(org, round))
            .collect::<Vec<_>>()
    });
    let expected = env.okta.with_org(|org| expected::catalog(org));
    assert!(
        !diff(&env.catalog(), &expected).is_empty(),
        "Port is behind before the events"
    );

    // The stack's wiring: a bus, a rule on the handled types, the queue as its target.
    let endpoint = moto::sqs_endpoint().await;
    let sqs_client = moto::sqs_client(&endpoint).await;
    let (queue_url, _dlq) = moto::create_queue(&sqs_client, "streaming").await;
    let queue_arn = moto::queue_arn(&sqs_client, &queue_url).await;
    let (bridge, bus_name) = moto::okta_streaming_bus(&endpoint, &queue_arn).await;

    // Okta puts each System Log event on the bus, with one it does not handle among them.
    let unhandled = json!({ "uuid": "session-1", "eventType": "user.session.start", "published": "2026-12-07T10:00:00.000Z", "target": [] });
    let entries: Vec<PutEventsRequestEntry> = events
        .iter()
        .chain([&unhandled])
        .map(|event| moto::log_streaming_entry(&bus_name, event))
        .collect();
    for chunk in entries.chunks(10) {
        let out = bridge
            .put_events()
            .set_entries(Some(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_entry_count, 0, "{out:?}");
    }

    // The rule keeps the handled events only.
    let sqs = Sqs::new(sqs_client, queue_url);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut received = Vec::new();
    while received.len() < events.len() && Instant::now() < deadline {
        received.extend(sqs.receive(10, 1).await.unwrap());
    }
    assert_eq!(received.len(), events.len(), "every handled event, nothing else");
    assert!(
        received.iter().all(|m| m.body.contains("\"detail-type\"")),
        "EventBridge envelopes"
    );

    let consumed = consume(&env.app(), received.into_iter().map(|m| m.body).collect(), 10, 3).await;
    assert!(consumed.dead.is_empty(), "{:?}", consumed.dead);
    assert_catalog(&env.catalog(), &expected);
}
