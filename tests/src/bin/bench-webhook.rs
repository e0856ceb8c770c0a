//! Benchmark: the webhook handler's latency in-process (no SQS: an in-memory queue), for
//! deliveries of the sample payloads and of larger generated batches.
//!
//! cargo run --release -p okta-port-tests --bin bench-webhook

use std::time::{Duration, Instant};

use okta_port::queue::MemoryQueue;
use okta_port::webhook;
use okta_port_tests::harness::{WEBHOOK_SECRET, delivery_request, webhook_config};
use okta_port_tests::orggen::{OrgSpec, generate, hook_delivery};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let config = webhook_config();
    let queue = MemoryQueue::default();
    // Realistic events: what a day of changes in a generated org emits.
    let mut org = generate(&OrgSpec {
        users: 200,
        groups: 10,
        apps: 5,
        seed: 1,
    });
    let ids: Vec<String> = org
        .users
        .iter()
        .map(|u| u["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let group = org.groups[1]["id"].as_str().unwrap_or_default().to_owned();
    for (i, id) in ids.iter().enumerate().take(100) {
        if i % 2 == 0 {
            org.set_profile_attr(id, "department", Some("Bench"));
        } else {
            org.add_member(&group, id);
        }
    }
    let events = org.take_events();
    println!(
        "{:<22} {:>9} {:>10} {:>10} {:>10}",
        "delivery", "requests", "p50 µs", "p99 µs", "max µs"
    );
    for per_delivery in [1usize, 10, 50] {
        let body = hook_delivery(&events[..per_delivery], 1);
        let runs = 20_000 / per_delivery.max(1);
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let request = delivery_request(&body, Some(WEBHOOK_SECRET));
            let started = Instant::now();
            let response = webhook::handle(&request, &config, &queue).await;
            times.push(started.elapsed());
            assert_eq!(response.status().as_u16(), 200);
            queue.drain();
        }
        times.sort();
        println!(
            "{:<22} {runs:>9} {:>10.1} {:>10.1} {:>10.1}",
            format!("{per_delivery} event(s)"),
            percentile(&times, 0.5).as_secs_f64() * 1e6,
            percentile(&times, 0.99).as_secs_f64() * 1e6,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1e6
        );
    }
}
