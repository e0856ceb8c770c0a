//! The live path end to end: Okta event hook deliveries through the webhook handler, a
//! queue (in memory, or SQS through moto's server), the consumer, into the Port simulator.

use std::collections::BTreeSet;
use std::sync::Arc;

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request};
use okta_port::events::QueuedEvent;
use okta_port::hooks::HookError;
use okta_port::port::PortSink;
use okta_port::queue::{EventQueue, MemoryQueue, Sqs};
use okta_port::sync::live::default_processors;
use okta_port::webhook::{self, WebhookConfig};
use okta_port_tests::expected;
use okta_port_tests::harness::{self, Env, LogCapture, assert_catalog, consume, deliver};
use okta_port_tests::okta_sim::{FaultRule, OktaSimConfig};
use okta_port_tests::orggen::{Org, OrgSpec, generate};
use okta_port_tests::port_sim::PortSimConfig;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const SAMPLE_SECRET: &str = "sample-webhook-secret";

fn sample(name: &str) -> Request {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&text)
        .unwrap_or_else(|e| panic!("{path} is not a Function URL request: {e}"))
}

fn config(secret: Option<&str>) -> WebhookConfig {
    WebhookConfig::from_lookup(|k| {
        (k == "OKTA_WEBHOOK_SECRET")
            .then(|| secret.map(str::to_owned))
            .flatten()
    })
    .unwrap()
}

fn with_body(mut request: Request, body: impl Into<String>) -> Request {
    *request.body_mut() = Body::from(body.into());
    request
}

fn body_text(response: &lambda_http::Response<Body>) -> String {
    String::from_utf8_lossy(response.body().as_ref()).into_owned()
}

#[tokio::test]
async fn webhook_answers_verifies_accepts_and_refuses() {
    let (logs, _guard) = LogCapture::install(tracing::Level::INFO);
    let cfg = config(Some(SAMPLE_SECRET));
    let queue = MemoryQueue::default();

    // Okta's one-time verification challenge.
    let response = webhook::handle(&sample("webhook-verify.json"), &cfg, &queue).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body_text(&response)).unwrap(),
        json!({ "verification": "2eFRfXJPcnRtAHuQo0WRpx4gFA1Bd-fqEjwA3lTF" })
    );

    // Accepted deliveries: one message per kept event, with the delivery and event ids.
    for (file, kept) in [
        ("webhook-delivery-users.json", 3),
        ("webhook-delivery-groups.json", 2),
        ("webhook-delivery-apps.json", 3),
    ] {
        let request = sample(file);
        let delivery: Value = serde_json::from_slice(request.body().as_ref()).unwrap();
        let response = webhook::handle(&request, &cfg, &queue).await;
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        assert!(body_text(&response).is_empty());
        let queued: Vec<QueuedEvent> = queue
            .drain()
            .iter()
            .map(|m| serde_json::from_str(m).expect("queued event"))
            .collect();
        assert_eq!(queued.len(), kept, "{file}");
        for q in &queued {
            assert_eq!(q.delivery_id.as_deref(), delivery["eventId"].as_str());
            assert!(q.uuid.is_some() && okta_port::events::is_handled(&q.event_type));
            assert!(!q.targets.is_empty());
        }
    }

    // Refused: nothing queued, a clear status.
    let mut missing = sample("webhook-delivery-users.json");
    missing.headers_mut().remove("authorization");
    let mut wrong = sample("webhook-delivery-users.json");
    wrong
        .headers_mut()
        .insert("authorization", "sample-webhook-secreT".parse().unwrap());
    let cases: Vec<(&str, Request, WebhookConfig, StatusCode)> = vec![
        (
            "missing secret",
            missing,
            config(Some(SAMPLE_SECRET)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong secret",
            wrong,
            config(Some(SAMPLE_SECRET)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no secret configured",
            sample("webhook-delivery-users.json"),
            config(None),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "over 1 MiB",
            with_body(sample("webhook-delivery-users.json"), " ".repeat(1024 * 1024 + 1)),
            config(Some(SAMPLE_SECRET)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "not JSON",
            with_body(sample("webhook-delivery-users.json"), "{not json"),
            config(Some(SAMPLE_SECRET)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "no data.events",
            with_body(
                sample("webhook-delivery-users.json"),
                r#"{"eventType":"com.okta.event_hook","data":{}}"#,
            ),
            config(Some(SAMPLE_SECRET)),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (name, request, cfg, status) in cases {
        let response = webhook::handle(&request, &cfg, &queue).await;
        assert_eq!(response.status(), status, "{name}");
        assert!(queue.messages().is_empty(), "{name}: something was queued");
    }

    // An event without eventType is set aside, not the delivery: Okta never retries a 4xx.
    let response = webhook::handle(
        &with_body(
            sample("webhook-delivery-users.json"),
            r#"{"data":{"events":[{"uuid":"1"}]}}"#,
        ),
        &cfg,
        &queue,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(queue.messages().is_empty());

    // Only irrelevant events: accepted, nothing queued.
    let irrelevant = json!({ "eventId": "d9", "data": { "events": [
        { "uuid": "x1", "eventType": "user.session.start", "target": [] },
        { "uuid": "x2", "eventType": "policy.evaluate_sign_on", "target": null },
    ] } });
    let response = webhook::handle(
        &with_body(sample("webhook-delivery-users.json"), irrelevant.to_string()),
        &cfg,
        &queue,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(queue.messages().is_empty());

    // The queue refuses: a 5xx, so that Okta delivers again.
    queue.set_failing(true);
    let response = webhook::handle(&sample("webhook-delivery-users.json"), &cfg, &queue).await;
    assert!(response.status().is_server_error());

    let logs = logs.text();
    assert!(
        logs.contains("delivery refused") && logs.contains("could not queue"),
        "{logs}"
    );
    assert!(!logs.contains(SAMPLE_SECRET), "a log line shows the secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_sqs_batch_reports_only_its_poison_message() {
    let env = Env::with_org(generate(&OrgSpec {
        users: 60,
        groups: 6,
        apps: 3,
        seed: 3,
    }))
    .await;
    assert!(env.resync().await.unwrap().is_success());
    let path = format!("{}/../events/consumer-sqs-batch.json", env!("CARGO_MANIFEST_DIR"));
    let event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let poison = event.records[3].message_id.clone().unwrap();
    let messages = okta_port::sync::live::sqs_messages(event);
    let report = env.app().apply_batch(&messages, &default_processors()).await;
    // The sample's objects do not exist in this org: refetched, found gone, nothing to do.
    assert_eq!(report.failed_messages, vec![poison]);
    assert_eq!(report.events, 3);
}

/// A random day in an org: every kind of mutation the live path must follow.
fn mutate_randomly(org: &mut Org, rng: &mut StdRng, steps: usize) {
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    for step in 0..steps {
        let users: Vec<String> = org.users.iter().map(id).collect();
        let groups: Vec<String> = org
            .groups
            .iter()
            .filter(|g| g["type"] == "OKTA_GROUP")
            .map(id)
            .collect();
        let apps: Vec<String> = org.apps.iter().map(id).collect();
        let user = users.choose(rng).unwrap().clone();
        let other = users.choose(rng).unwrap().clone();
        let group = groups.choose(rng).unwrap().clone();
        let app = apps.choose(rng).unwrap().clone();
        match rng.random_range(0..17) {
            0 => {
                let mut new = org.user(&user).unwrap().clone();
                let n = format!("{step:04}");
                new["id"] = json!(format!("00unew{n}{}", &user[10..20]));
                new["profile"]["login"] = json!(format!("new.user{n}@example.com"));
                new["profile"]["email"] = json!(format!("new.user{n}@example.com"));
                new["profile"]["employeeNumber"] = json!(format!("N{n}"));
                new["profile"]["managerId"] = json!(other);
                org.add_user(new);
            }
            1 => {
                // Not one of two users sharing an employeeNumber (see the README's limits).
                let number = org.user(&user).unwrap()["profile"]["employeeNumber"].clone();
                let shared = org
                    .users
                    .iter()
                    .filter(|u| u["profile"]["employeeNumber"] == number)
                    .count()
                    > 1;
                if !shared || number.is_null() {
                    org.delete_user(&user);
                }
            }
            2 => {
                let status = ["DEPROVISIONED", "SUSPENDED", "ACTIVE", "LOCKED_OUT", "RECOVERY"]
                    .choose(rng)
                    .unwrap();
                org.set_user_status(&user, status);
            }
            3 => {
                let target = org.user(&other).unwrap().clone();
                let reference = match rng.random_range(0..5) {
                    0 => Some(other.clone()),
                    1 => target["profile"]["login"].as_str().map(str::to_uppercase),
                    2 => target["profile"]["email"].as_str().map(str::to_owned),
                    3 => target["profile"]["employeeNumber"].as_str().map(str::to_owned),
                    _ => None,
                };
                org.set_manager_id(&user, reference.as_deref());
            }
            4 => {
                let key = ["department", "employeeNumber", "displayName", "login"]
                    .choose(rng)
                    .unwrap();
                org.set_profile_attr(&user, key, Some(&format!("changed-{step}@example.com")));
            }
            5 => {
                org.add_group(&format!("New group {step}"), Some("made live"));
            }
            6 => {
                org.rename_group(&group, &format!("Renamed {step} — ü"));
            }
            7 => {
                org.delete_group(&group);
            }
            8 | 9 => {
                org.add_member(&group, &user);
            }
            10 => {
                org.remove_member(&group, &user);
            }
            11 => {
                org.assign_user(&app, &user);
            }
            12 => {
                org.unassign_user(&app, &user);
            }
            13 => {
                org.assign_group(&app, &group);
            }
            14 => {
                org.unassign_group(&app, &group);
            }
            15 => {
                if rng.random_bool(0.5) {
                    org.add_app(&format!("New app {step}"), "bookmark", "BOOKMARK");
                } else {
                    org.set_app_label(&app, &format!("Relabelled {step}"));
                }
            }
            _ => {
                if rng.random_bool(0.3) {
                    org.delete_app(&app);
                } else {
                    let status = if org.app(&app).unwrap()["status"] == "ACTIVE" {
                        "INACTIVE"
                    } else {
                        "ACTIVE"
                    };
                    org.set_app_status(&app, status);
                }
            }
        }
    }
}

/// The events Okta would send, shuffled, with duplicates (Okta delivers at least once).
fn shuffled_with_duplicates(events: Vec<Value>, rng: &mut StdRng) -> Vec<Value> {
    let mut out = events.clone();
    out.extend(events.iter().filter(|_| rng.random_bool(0.25)).cloned());
    out.shuffle(rng);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_in_any_order_converge_to_what_a_resync_writes() {
    for seed in [1u64, 2, 3] {
        let env = Env::with_org(generate(&OrgSpec {
            users: 150,
            groups: 12,
            apps: 6,
            seed,
        }))
        .await;
        assert!(env.resync().await.unwrap().is_success());
        let mut rng = StdRng::seed_from_u64(seed);
        let debug_members: Vec<String> = std::env::var("DEBUG_GROUP")
            .map(|g| {
                env.okta.with_org(|org| {
                    org.group_members
                        .get(&g)
                        .map(|m| m.iter().cloned().collect())
                        .unwrap_or_default()
                })
            })
            .unwrap_or_default();
        let events = env.okta.with_org(|org| {
            mutate_randomly(org, &mut rng, 60);
            org.take_events()
        });
        let events = shuffled_with_duplicates(events, &mut rng);
        let queue = MemoryQueue::default();
        let statuses = deliver(&events, 4, &queue).await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        let app = env.app();
        let consumed = consume(&app, queue.drain(), 10, 5).await;
        assert!(
            consumed.dead.is_empty(),
            "seed {seed}: messages died: {:?}",
            consumed.dead
        );

        // The catalog is what the final org implies…
        let expected = env.okta.with_org(|org| expected::catalog(org));
        if let Ok(g) = std::env::var("DEBUG_GROUP") {
            for e in &events {
                if e.to_string().contains(&g)
                    || debug_members.iter().any(|m| e.to_string().contains(m.as_str()))
                {
                    eprintln!("EVENT {} {}", e["eventType"], e["target"]);
                }
            }
        }
        assert_catalog(&env.catalog(), &expected);
        // …and a full resync finds nothing to change.
        let report = env.resync().await.unwrap();
        assert!(report.is_success(), "{}", report.to_text());
        for (bp, b) in &report.blueprints {
            assert_eq!(
                (b.created, b.updated, b.deleted),
                (0, 0, 0),
                "seed {seed}: resync changed {bp}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_events_costs_a_few_calls_per_touched_user() {
    let env = Env::with_org(generate(&OrgSpec {
        users: 400,
        groups: 20,
        apps: 8,
        seed: 5,
    }))
    .await;
    assert!(env.resync().await.unwrap().is_success());
    let mut rng = StdRng::seed_from_u64(5);
    let events = env.okta.with_org(|org| {
        let users: Vec<String> = org
            .users
            .iter()
            .filter(|u| u["status"] == "ACTIVE")
            .take(100)
            .map(|u| u["id"].as_str().unwrap().into())
            .collect();
        let groups: Vec<String> = org
            .groups
            .iter()
            .filter(|g| g["type"] == "OKTA_GROUP")
            .map(|g| g["id"].as_str().unwrap().into())
            .collect();
        // 1,000 events touching 100 users: profile updates and membership changes.
        let mut i = 0;
        while org.events.len() < 1000 {
            let user = &users[i % users.len()];
            let group = groups.choose(&mut rng).unwrap();
            match i % 4 {
                0 | 1 => {
                    org.set_profile_attr(user, "department", Some(&format!("Dept {}", i % 7)));
                }
                2 => {
                    org.add_member(group, user);
                }
                _ => {
                    org.remove_member(group, user);
                }
            }
            i += 1;
        }
        org.take_events()
    });
    assert!(events.len() >= 1000);
    let queue = MemoryQueue::default();
    deliver(&events, 20, &queue).await;
    let messages = queue.drain();
    let app = env.app();
    // One Lambda invocation's worth: the whole burst as one batch, then as SQS's default 10.
    let all = consume(&app, messages.clone(), messages.len(), 3).await;
    let tens = consume(&env.app(), messages, 10, 3).await;
    eprintln!(
        "burst of {} events on 100 users: {} Okta calls in one batch; {} Okta calls in {} batches of 10",
        events.len(),
        all.okta_calls,
        tens.okta_calls,
        tens.batches
    );
    assert!(all.dead.is_empty() && tens.dead.is_empty());
    assert!(
        all.okta_calls < events.len() as u64,
        "coalescing must beat one call per event"
    );
    assert_catalog(&env.catalog(), &env.okta.with_org(|org| expected::catalog(org)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_real_sqs_redelivery_is_harmless_and_failures_are_exact() {
    let endpoint = okta_port_tests::moto::sqs_endpoint().await;
    let client = okta_port_tests::moto::sqs_client(&endpoint).await;
    let (queue_url, _dlq) = okta_port_tests::moto::create_queue(&client, "live").await;
    let sqs = Sqs::new(client, queue_url);

    let env = Env::with_org(generate(&OrgSpec {
        users: 120,
        groups: 10,
        apps: 5,
        seed: 9,
    }))
    .await;
    assert!(env.resync().await.unwrap().is_success());
    let (events, broken_user) = env.okta.with_org(|org| {
        let ids: Vec<String> = org
            .users
            .iter()
            .take(6)
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect();
        let group = org.groups.iter().find(|g| g["type"] == "OKTA_GROUP").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for u in &ids[..4] {
            org.add_member(&group, u);
        }
        org.set_profile_attr(&ids[4], "department", Some("Moved"));
        org.set_profile_attr(&ids[5], "department", Some("Broken"));
        (org.take_events(), ids[5].clone())
    });

    // webhook → SQS → receive → consumer, twice over (Okta may deliver a batch twice).
    for _ in 0..2 {
        assert!(deliver(&events, 3, &sqs).await.iter().all(|s| *s == 200));
    }
    let mut messages = Vec::new();
    loop {
        let got = sqs.receive(10, 1).await.unwrap();
        if got.is_empty() {
            break;
        }
        messages.extend(got);
    }
    assert_eq!(messages.len(), events.len() * 2);
    let app = env.app();
    let processors = default_processors();
    let batch: Vec<(String, String)> = messages
        .iter()
        .map(|m| (m.message_id.clone(), m.body.clone()))
        .collect();
    let report = app.apply_batch(&batch, &processors).await;
    assert!(report.failed_messages.is_empty(), "{:?}", report.failures);
    assert!(report.duplicates >= events.len());
    let receipts: Vec<String> = messages.iter().map(|m| m.receipt_handle.clone()).collect();
    sqs.delete(&receipts).await.unwrap();
    let expected = env.okta.with_org(|org| expected::catalog(org));
    assert_catalog(&env.catalog(), &expected);
    // The same batch again leaves the same catalog.
    let again = app.apply_batch(&batch, &processors).await;
    assert!(again.failed_messages.is_empty());
    assert_catalog(&env.catalog(), &expected);

    // One poison message and one refetch that keeps failing: exactly those are reported.
    env.okta.add_fault(FaultRule {
        path_prefix: format!("/api/v1/users/{broken_user}"),
        status: 500,
        times: None,
    });
    sqs.send_all(&["this is not an event".to_string()]).await.unwrap();
    let touching_broken = events
        .iter()
        .filter(|e| {
            e["target"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["id"] == broken_user.as_str())
        })
        .count();
    assert!(deliver(&events, 3, &sqs).await.iter().all(|s| *s == 200));
    let mut messages = Vec::new();
    loop {
        let got = sqs.receive(10, 1).await.unwrap();
        if got.is_empty() {
            break;
        }
        messages.extend(got);
    }
    let batch: Vec<(String, String)> = messages
        .iter()
        .map(|m| (m.message_id.clone(), m.body.clone()))
        .collect();
    let report = app.apply_batch(&batch, &processors).await;
    let poison: BTreeSet<&str> = messages
        .iter()
        .filter(|m| m.body == "this is not an event")
        .map(|m| m.message_id.as_str())
        .collect();
    let broken: BTreeSet<&str> = messages
        .iter()
        .filter(|m| m.body.contains(broken_user.as_str()))
        .map(|m| m.message_id.as_str())
        .collect();
    assert_eq!(poison.len(), 1);
    assert_eq!(broken.len(), touching_broken);
    let failed: BTreeSet<&str> = report.failed_messages.iter().map(String::as_str).collect();
    assert_eq!(
        failed,
        poison.union(&broken).copied().collect(),
        "{:?}",
        report.failures
    );
}

/// Serves the webhook handler on loopback, as its Function URL would.
async fn serve_webhook(config: WebhookConfig) -> String {
    use axum::body::to_bytes;
    let config = Arc::new(config);
    let queue = MemoryQueue::default();
    let handler = move |request: axum::extract::Request| {
        let (config, queue) = (config.clone(), queue.clone());
        async move {
            let (parts, body) = request.into_parts();
            let bytes = to_bytes(body, 2 * 1024 * 1024).await.unwrap_or_default();
            let request = Request::from_parts(parts, Body::from(bytes.to_vec()));
            let response = webhook::handle(&request, &config, &queue).await;
            let (parts, body) = response.into_parts();
            axum::response::Response::from_parts(parts, axum::body::Body::from(body.as_ref().to_vec()))
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(handler)).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_hook_is_provisioned_verified_and_kept_up_to_date() {
    let env = Env::with_org(generate(&OrgSpec {
        users: 10,
        groups: 3,
        apps: 2,
        seed: 1,
    }))
    .await;
    let url = serve_webhook(harness::webhook_config()).await;
    let mut config = env.config();
    config.hook.secret = Some(harness::WEBHOOK_SECRET.to_string().into());
    let app = okta_port::App::new(&config).unwrap();

    let first = app.ensure_hook(Some(&url)).await.unwrap();
    assert!(first.created && first.verified, "{first:?}");
    let hooks = env.okta.hooks();
    let hook = hooks
        .iter()
        .find(|h| h["channel"]["config"]["uri"] == url.as_str())
        .unwrap();
    assert_eq!(hook["verificationStatus"], "VERIFIED");
    assert_eq!(hook["status"], "ACTIVE");
    assert_eq!(
        env.okta.hook_secret(first.id.as_str()),
        Some(("Authorization".to_string(), harness::WEBHOOK_SECRET.to_string()))
    );
    let subscribed: BTreeSet<&str> = hook["events"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        subscribed,
        okta_port::events::HANDLED_EVENT_TYPES.iter().copied().collect()
    );

    // Okta's front end refuses a write without a length (411): none was sent.
    assert_eq!(env.okta.calls().length_required_411, 0);

    // A second run changes nothing.
    let second = app.ensure_hook(Some(&url)).await.unwrap();
    assert!(!second.changed(), "{second:?}");
    assert_eq!(env.okta.hooks().len(), 1);

    // An outdated event list (an older okta-port) is brought up to date.
    let outdated = json!({
        "name": "okta-port", "events": { "type": "EVENT_TYPE", "items": ["user.lifecycle.create"] },
        "channel": { "type": "HTTP", "version": "1.0.0", "config": { "uri": url, "headers": [],
            "authScheme": { "type": "HEADER", "key": "Authorization", "value": harness::WEBHOOK_SECRET } } }
    });
    let put = reqwest::Client::new()
        .put(format!("{}/api/v1/eventHooks/{}", env.okta.base_url, first.id))
        .header("authorization", "SSWS test-okta-token")
        .json(&outdated)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let third = app.ensure_hook(Some(&url)).await.unwrap();
    assert!(third.events_updated && !third.created, "{third:?}");
    let items = env.okta.hooks()[0]["events"]["items"].as_array().unwrap().len();
    assert_eq!(items, okta_port::events::HANDLED_EVENT_TYPES.len());

    // A rotated secret is pushed on request (Okta never shows the one it has).
    let mut rotated = config.clone();
    rotated.hook.secret = Some("rotated-webhook-secret".to_string().into());
    let rotated_app = okta_port::App::new(&rotated).unwrap();
    assert!(
        !rotated_app.ensure_hook(Some(&url)).await.unwrap().changed(),
        "not detectable without asking"
    );
    let pushed = rotated_app.ensure_hook_with(Some(&url), true).await.unwrap();
    assert!(pushed.events_updated && pushed.verified, "{pushed:?}");
    assert_eq!(
        env.okta.hook_secret(&first.id).map(|(_, v)| v).as_deref(),
        Some("rotated-webhook-secret")
    );

    // Where nothing answers the challenge, verification fails with a clear error.
    let err = app
        .ensure_hook(Some("http://127.0.0.1:1/okta-hook"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            okta_port::app::HookSetupError::Hook(HookError::Verification { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("verify"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_whose_creation_answer_breaks_off_is_created_once() {
    let env = Env::with_org(generate(&OrgSpec {
        users: 5,
        groups: 2,
        apps: 1,
        seed: 3,
    }))
    .await;
    let url = serve_webhook(harness::webhook_config()).await;
    let mut config = env.config();
    config.hook.secret = Some(harness::WEBHOOK_SECRET.to_string().into());
    let app = okta_port::App::new(&config).unwrap();
    // Okta creates the hook, then the connection breaks before its answer is read.
    env.okta.break_answers("POST", "/api/v1/eventHooks", 1);
    let err = app.ensure_hook(Some(&url)).await.unwrap_err();
    assert!(err.to_string().contains("/api/v1/eventHooks"), "{err}");
    let calls = env.okta.calls();
    assert_eq!(calls.broken_answers, 1);
    assert_eq!(env.okta.hooks().len(), 1, "the create was not sent twice");

    // The next run finds that hook and finishes it: still exactly one, active and verified.
    let outcome = app.ensure_hook(Some(&url)).await.unwrap();
    assert!(!outcome.created && outcome.verified, "{outcome:?}");
    let hooks = env.okta.hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["status"], "ACTIVE");
    assert_eq!(hooks[0]["verificationStatus"], "VERIFIED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_setup_explains_missing_permission_and_the_hook_limit() {
    let org = generate(&OrgSpec {
        users: 5,
        groups: 2,
        apps: 1,
        seed: 1,
    });
    let env = Env::start(
        org.clone(),
        OktaSimConfig {
            manage_hooks: false,
            ..OktaSimConfig::default()
        },
        PortSimConfig::default(),
    )
    .await;
    let mut config = env.config();
    config.hook.secret = Some("s".to_string().into());
    let err = okta_port::App::new(&config)
        .unwrap()
        .ensure_hook(Some("https://example.com/hook"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("okta.eventHooks.manage"), "{err}");

    let env = Env::with_org(org).await;
    env.okta.seed_hooks(25);
    let mut config = env.config();
    config.hook.secret = Some("s".to_string().into());
    let err = okta_port::App::new(&config)
        .unwrap()
        .ensure_hook(Some("https://example.com/hook"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("maximum number of event hooks"), "{err}");
    // The secret never shows in an error.
    assert!(!format!("{err:?}").contains("\"s\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_unassigned_from_an_app_takes_the_app_from_its_members() {
    let env = Env::with_org(generate(&OrgSpec {
        users: 400,
        groups: 10,
        apps: 4,
        seed: 9,
    }))
    .await;
    // A group of 50+ members and an app it is not assigned to yet.
    let (group, app, direct) = env.okta.with_org(|org| {
        let (group, members) = org
            .group_members
            .iter()
            .filter(|(g, m)| m.len() >= 50 && org.group(g).is_some_and(|g| g["type"] == "OKTA_GROUP"))
            .map(|(g, m)| (g.clone(), m.iter().cloned().collect::<Vec<_>>()))
            .next()
            .expect("a group of 50+ members");
        let app = org
            .apps
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .find(|a| {
                !org.app_group_assignments
                    .get(a)
                    .is_some_and(|g| g.contains(&group))
            })
            .expect("an app the group lacks");
        (group, app, members[0].clone())
    });
    assert!(env.resync().await.unwrap().is_success());
    let app_users = |env: &Env| -> usize {
        env.port
            .entities(expected::USER_BLUEPRINT)
            .iter()
            .filter(|u| {
                u["relations"]["applications"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(app.as_str())))
            })
            .count()
    };
    let before = app_users(&env);
    let app_for_live = env.app();
    let run_events = |events: Vec<Value>| {
        let app = &app_for_live;
        async move {
            let queue = MemoryQueue::default();
            assert!(deliver(&events, 10, &queue).await.iter().all(|s| *s == 200));
            let consumed = consume(app, queue.drain(), 10, 3).await;
            assert!(consumed.dead.is_empty(), "{:?}", consumed.dead);
        }
    };

    // The group gains the app, one member also directly: every member gains it.
    let events = env.okta.with_org(|org| {
        org.take_events();
        assert!(org.assign_group(&app, &group));
        assert!(org.assign_user(&app, &direct));
        org.take_events()
    });
    run_events(events).await;
    assert_catalog(&env.catalog(), &env.okta.with_org(|org| expected::catalog(org)));
    let members: Vec<String> = env
        .okta
        .with_org(|org| org.group_members[&group].iter().cloned().collect());
    for member in &members {
        let user = env.port.entity(expected::USER_BLUEPRINT, member).unwrap();
        let apps = user["relations"]["applications"].as_array().unwrap();
        assert!(
            apps.iter().any(|a| a.as_str() == Some(app.as_str())),
            "{member} lacks the app"
        );
    }
    assert!(app_users(&env) > before, "{before} → {}", app_users(&env));

    // The group loses it: every member loses it, but the one assigned directly.
    let events = env.okta.with_org(|org| {
        assert!(org.unassign_group(&app, &group));
        org.take_events()
    });
    run_events(events).await;
    assert_catalog(&env.catalog(), &env.okta.with_org(|org| expected::catalog(org)));
    assert!(app_users(&env) <= before + 1, "{before} → {}", app_users(&env));
    let direct_user = env.port.entity(expected::USER_BLUEPRINT, &direct).unwrap();
    assert!(
        direct_user["relations"]["applications"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str() == Some(app.as_str())),
        "the directly assigned member keeps the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_event_repairs_a_membership_whose_event_was_lost() {
    let env = Env::with_org(generate(&OrgSpec {
        users: 60,
        groups: 6,
        apps: 3,
        seed: 12,
    }))
    .await;
    assert!(env.resync().await.unwrap().is_success());
    let events = env.okta.with_org(|org| {
        org.take_events();
        let user = org.users.iter().find(|u| u["status"] == "ACTIVE").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (group, app) = (
            org.groups
                .iter()
                .map(|g| g["id"].as_str().unwrap().to_owned())
                .find(|g| {
                    !org.group_members[g].contains(&user) && org.group(g).unwrap()["type"] == "OKTA_GROUP"
                })
                .unwrap(),
            org.apps
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_owned())
                .find(|a| !org.app_users(a).iter().any(|(u, _)| *u == user))
                .unwrap(),
        );
        assert!(org.add_member(&group, &user) && org.assign_user(&app, &user));
        // The membership and assignment events are lost (the hook was down)…
        org.take_events();
        // …and the next event for the user is a profile change.
        org.set_profile_attr(&user, "department", Some("Repaired"));
        org.take_events()
    });
    assert!(
        events
            .iter()
            .all(|e| e["eventType"] == "user.account.update_profile")
    );
    let queue = MemoryQueue::default();
    deliver(&events, 10, &queue).await;
    let consumed = consume(&env.app(), queue.drain(), 10, 3).await;
    assert!(consumed.dead.is_empty());
    let expected = env.okta.with_org(|org| expected::catalog(org));
    let actual = env.catalog();
    for (id, want) in &expected[expected::USER_BLUEPRINT] {
        if want["properties"]["department"] == "Repaired" {
            assert_eq!(
                &actual[expected::USER_BLUEPRINT][id],
                want,
                "the user is whole again"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_deletes_touch_only_our_entities_by_the_mappings_identifier() {
    use okta_port::mapping::config::ConfigSource;
    const PREFIXED: &str = r#"
resources:
  - kind: okta-user
    port:
      entity:
        mappings:
          identifier: '"okta-" + .id'
          title: .profile.login
          blueprint: '"person"'
          properties:
            email: .profile.email
"#;
    let env = Env::with_org(generate(&OrgSpec {
        users: 40,
        groups: 3,
        apps: 2,
        seed: 14,
    }))
    .await;
    let delete_event = |id: &str, n: usize| {
        json!({ "uuid": format!("del-{n}"), "eventType": "user.lifecycle.delete.initiated",
                "published": "2026-12-07T04:00:00.000Z", "target": [{ "id": id, "type": "User" }] })
    };
    let foreign = "port-ocean/okta/1.0.0/okta/exporter";

    // The built-in mapping: an entity of another tool, under an Okta user's id, survives.
    assert!(env.resync().await.unwrap().is_success());
    env.port.seed_entity(
        expected::USER_BLUEPRINT,
        json!({ "identifier": "00uforeign00000000001", "title": "HR", "properties": {}, "relations": {} }),
        foreign,
    );
    let ours = env.okta.with_org(|org| {
        let id = org.users.iter().find(|u| u["status"] == "ACTIVE").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(org.delete_user(&id));
        id
    });
    let queue = MemoryQueue::default();
    deliver(
        &[delete_event("00uforeign00000000001", 1), delete_event(&ours, 2)],
        10,
        &queue,
    )
    .await;
    let consumed = consume(&env.app(), queue.drain(), 10, 3).await;
    assert!(consumed.dead.is_empty(), "{:?}", consumed.dead);
    assert!(
        env.port.entity(expected::USER_BLUEPRINT, &ours).is_none(),
        "ours is deleted"
    );
    assert!(
        env.port
            .entity(expected::USER_BLUEPRINT, "00uforeign00000000001")
            .is_some(),
        "another tool's entity survives"
    );

    // A configured identifier: the entity is found by it, not by the raw Okta id.
    let mut config = env.config();
    config.mapping = ConfigSource::Inline(PREFIXED.to_owned());
    let app = okta_port::App::new(&config).unwrap();
    app.port
        .ensure_blueprints(&[
            json!({ "identifier": "person", "title": "Person", "schema": { "properties": {
            "email": { "type": "string", "title": "Email" } } }, "relations": {} }),
        ])
        .await
        .unwrap();
    assert!(app.resync(Default::default()).await.unwrap().is_success());
    let victim = env.okta.with_org(|org| {
        let id = org.users.iter().find(|u| u["status"] == "ACTIVE").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(org.delete_user(&id));
        id
    });
    // Another tool keeps an entity under the raw Okta id in the same blueprint.
    env.port.seed_entity(
        "person",
        json!({ "identifier": victim, "title": "HR copy", "properties": {}, "relations": {} }),
        foreign,
    );
    assert!(env.port.entity("person", &format!("okta-{victim}")).is_some());
    let queue = MemoryQueue::default();
    deliver(&[delete_event(&victim, 3)], 10, &queue).await;
    let consumed = consume(&app, queue.drain(), 10, 3).await;
    assert!(consumed.dead.is_empty(), "{:?}", consumed.dead);
    assert!(
        env.port.entity("person", &format!("okta-{victim}")).is_none(),
        "deleted by its identifier"
    );
    assert!(
        env.port.entity("person", &victim).is_some(),
        "the raw-id entity of another tool survives"
    );
}

/// SQS as the event source mapping sees it: messages invisible for `visibility` once
/// received, moved to the DLQ when a receive would exceed `max_receives`. (moto's SQS slows
/// to seconds per call with 2,000 messages queued, so the burst runs against this model;
/// `through_real_sqs_redelivery_is_harmless_and_failures_are_exact` covers the protocol.)
struct QueueModel {
    messages: std::sync::Mutex<Vec<(String, String, u32, std::time::Instant)>>,
    dead: std::sync::Mutex<Vec<String>>,
    visibility: std::time::Duration,
    max_receives: u32,
}

impl QueueModel {
    fn receive(&self, max: usize) -> Vec<(String, String)> {
        let now = std::time::Instant::now();
        let mut messages = self.messages.lock().unwrap();
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for (id, body, receives, visible_at) in messages.iter_mut() {
            if out.len() == max || *visible_at > now {
                continue;
            }
            *receives += 1;
            if *receives > self.max_receives {
                dead.push(id.clone());
                continue;
            }
            *visible_at = now + self.visibility;
            out.push((id.clone(), body.clone()));
        }
        messages.retain(|(id, ..)| !dead.contains(id));
        self.dead.lock().unwrap().extend(dead);
        out
    }

    fn delete(&self, ids: &[String]) {
        self.messages.lock().unwrap().retain(|(id, ..)| !ids.contains(id));
    }

    fn is_empty(&self) -> bool {
        self.messages.lock().unwrap().is_empty()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_2000_events_converges_with_nothing_in_the_dlq() {
    let env = Env::with_org(generate(&OrgSpec {
        users: 300,
        groups: 12,
        apps: 6,
        seed: 21,
    }))
    .await;
    assert!(env.resync().await.unwrap().is_success());
    let mut rng = StdRng::seed_from_u64(21);
    let events = env.okta.with_org(|org| {
        org.take_events();
        while org.events.len() < 2000 {
            mutate_randomly(org, &mut rng, 50);
        }
        org.take_events()
    });
    // The whole burst at once, in Okta's deliveries of up to 50 events, through the webhook.
    let staged = MemoryQueue::default();
    assert!(deliver(&events, 50, &staged).await.iter().all(|s| *s == 200));
    let queue = QueueModel {
        messages: std::sync::Mutex::new(
            staged
                .drain()
                .into_iter()
                .enumerate()
                .map(|(i, b)| (format!("m{i}"), b, 0, std::time::Instant::now()))
                .collect(),
        ),
        dead: Default::default(),
        // Longer than any batch takes here; the stack's is six consumer timeouts plus 20 s
        // (380 s by default), so its 15 receives last far longer than these 15 × 2 s.
        visibility: std::time::Duration::from_secs(2),
        max_receives: 15,
    };
    env.okta.reset_calls();
    let started = std::time::Instant::now();
    // The stack's event source mapping: batches of 10, at most two at once, and no
    // reservation below that (template.rs checks), so no invoke is throttled.
    let processors = default_processors();
    let poller = |app: okta_port::App| {
        let (queue, processors) = (&queue, &processors);
        async move {
            let (mut batches, mut failed) = (0, 0);
            while !queue.is_empty() {
                let messages = queue.receive(10);
                if messages.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
                let report = app.apply_batch(&messages, processors).await;
                batches += 1;
                failed += report.failed_messages.len();

                let done: Vec<String> = messages
                    .into_iter()
                    .map(|(id, _)| id)
                    .filter(|id| !report.failures.contains_key(id))
                    .collect();
                queue.delete(&done);
            }
            (batches, failed)
        }
    };
    let ((b1, f1), (b2, f2)) = tokio::join!(poller(env.app()), poller(env.app()));
    let took = started.elapsed();
    let dead = queue.dead.lock().unwrap().len();
    assert_eq!(dead, 0, "messages reached the DLQ");
    assert_catalog(&env.catalog(), &env.okta.with_org(|org| expected::catalog(org)));
    eprintln!(
        "burst of {} events: {} batches over 2 concurrent consumers, {} messages retried, DLQ {dead}, \
         converged in {:.1} s with {} Okta calls",
        events.len(),
        b1 + b2,
        f1 + f2,
        took.as_secs_f64(),
        env.okta.calls().total
    );
}
