//! Benchmark: the latency of each ingress path, measured the same way: from a change in
//! (simulated) Okta, its event logged, to Port holding the change. Okta's own delay before
//! it delivers, streams or logs an event is not included, nor the catch-up's schedule
//! interval (every minute in Polling mode, every 15 minutes behind the push): add those.
//!
//! - hook: the webhook handler takes the delivery and queues it (in memory); the consumer
//!   applies the batch.
//! - streaming: the event goes on an EventBridge bus (moto), a rule puts it on an SQS queue
//!   (moto); the consumer receives and applies it.
//! - polling: one System Log catch-up pass (cursor on disk) applies what is new.
//!
//! cargo run --release -p okta-port-tests --bin bench-ingress [-- --changes 20]

use std::time::{Duration, Instant};

use okta_port::queue::{MemoryQueue, Sqs};
use okta_port::sync::live::default_processors;
use okta_port::webhook;
use okta_port_tests::harness::{Env, WEBHOOK_SECRET, delivery_request, webhook_config};
use okta_port_tests::moto;
use okta_port_tests::orggen::{OrgSpec, generate, hook_delivery};
use serde_json::Value;

/// One change: a user's department, which Port shows as a property.
fn change(env: &Env, round: usize) -> (String, String, Vec<Value>) {
    env.okta.with_org(|org| {
        let users: Vec<String> = org
            .users
            .iter()
            .filter(|u| u["status"] == "ACTIVE")
            .map(|u| u["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        let user = users[round % users.len()].clone();
        let department = format!("Bench {round}");
        org.set_profile_attr(&user, "department", Some(&department));
        (user, department, org.take_events())
    })
}

fn in_port(env: &Env, user: &str, department: &str) -> bool {
    env.catalog()["oktaUser"]
        .get(user)
        .is_some_and(|e| e["properties"]["department"] == department)
}

fn report(path: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{path:<10} {:>7} {:>9.1} {:>9.1} {:>9.1}",
        times.len(),
        ms(times[times.len() / 2]),
        ms(times[(times.len() * 9) / 10]),
        ms(*times.last().unwrap())
    );
}

#[tokio::main]
async fn main() {
    let changes: usize = std::env::args()
        .skip_while(|a| a != "--changes")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let env = Env::with_org(generate(&OrgSpec {
        users: 500,
        groups: 20,
        apps: 5,
        seed: 51,
    }))
    .await;
    assert!(env.resync().await.unwrap().is_success());
    let app = env.app();
    let processors = default_processors();
    println!(
        "{:<10} {:>7} {:>9} {:>9} {:>9}",
        "path", "changes", "p50 ms", "p90 ms", "max ms"
    );

    // Hook: delivery → webhook → queue → consumer.
    let (config, queue) = (webhook_config(), MemoryQueue::default());
    let mut times = Vec::new();
    for round in 0..changes {
        let (user, department, events) = change(&env, round);
        let started = Instant::now();
        let request = delivery_request(&hook_delivery(&events, round as u64), Some(WEBHOOK_SECRET));
        assert_eq!(webhook::handle(&request, &config, &queue).await.status(), 200);
        let messages: Vec<(String, String)> = queue
            .drain()
            .into_iter()
            .enumerate()
            .map(|(i, b)| (i.to_string(), b))
            .collect();
        app.apply_batch(&messages, &processors).await;
        times.push(started.elapsed());
        assert!(in_port(&env, &user, &department), "hook round {round}");
    }
    report("hook", times);

    // Streaming: EventBridge bus → rule → SQS → consumer.
    let endpoint = moto::sqs_endpoint().await;
    let sqs_client = moto::sqs_client(&endpoint).await;
    let (queue_url, _dlq) = moto::create_queue(&sqs_client, "bench-streaming").await;
    let queue_arn = moto::queue_arn(&sqs_client, &queue_url).await;
    let (bridge, bus) = moto::okta_streaming_bus(&endpoint, &queue_arn).await;
    let sqs = Sqs::new(sqs_client, queue_url);
    let mut times = Vec::new();
    for round in changes..2 * changes {
        let (user, department, events) = change(&env, round);
        let started = Instant::now();
        let entries: Vec<_> = events
            .iter()
            .map(|e| moto::log_streaming_entry(&bus, e))
            .collect();
        bridge
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
        let mut messages = Vec::new();
        while messages.len() < events.len() {
            for m in sqs.receive(10, 1).await.unwrap() {
                sqs.delete(std::slice::from_ref(&m.receipt_handle)).await.unwrap();
                messages.push((m.message_id, m.body));
            }
        }
        app.apply_batch(&messages, &processors).await;
        times.push(started.elapsed());
        assert!(in_port(&env, &user, &department), "streaming round {round}");
    }
    report("streaming", times);

    // Polling: one catch-up pass from the cursor.
    let dir = std::env::temp_dir().join(format!("okta-port-bench-ingress-{}", std::process::id()));
    let state_url = format!("file://{}", dir.display());
    app.catch_up(&state_url, None)
        .await
        .expect("a first pass sets the cursor");
    let mut times = Vec::new();
    for round in 2 * changes..3 * changes {
        let (user, department, _) = change(&env, round);
        let started = Instant::now();
        let pass = app.catch_up(&state_url, None).await.expect("a catch-up pass");
        times.push(started.elapsed());
        assert_eq!(pass.new_events, 1, "polling round {round}: {pass:?}");
        assert!(in_port(&env, &user, &department), "polling round {round}");
    }
    report("polling", times);
    let _ = std::fs::remove_dir_all(dir);
}
