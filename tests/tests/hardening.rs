//! The edges, tried as a hostile internet and an unlucky operator would, through real
//! processes: the function binaries under an emulated Lambda runtime (`lambda_emu`), the
//! CLI as its own process, moto's server, the simulators, and fake AWS endpoints that
//! refuse, stall, throttle or fail.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use okta_port_tests::harness::{self, Env};
use okta_port_tests::lambda_emu::{Answer, Function, function_binary, function_url_event};
use okta_port_tests::moto;
use okta_port_tests::orggen::{OrgSpec, generate, hook_delivery};
use serde_json::{Value, json};

const SECRET: &str = "hook-secret-7c1e9d";

/// How a fake AWS endpoint misbehaves.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Accepts the connection and never answers.
    Stall,
    /// Answers SQS's throttling error.
    Throttle,
    /// Answers 500 InternalError.
    Fail,
}

/// A fake AWS endpoint on loopback; returns its URL.
async fn bad_endpoint(how: Misbehaviour) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    match how {
        Misbehaviour::Stall => {
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    held.push(socket);
                }
            });
        }
        Misbehaviour::Throttle | Misbehaviour::Fail => {
            let app = axum::Router::new().fallback(move || async move {
                let (status, kind) = match how {
                    Misbehaviour::Throttle => (StatusCode::BAD_REQUEST, "RequestThrottled"),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
                };
                (
                    status,
                    [("content-type", "application/x-amz-json-1.0")],
                    json!({ "__type": kind, "message": "injected" }).to_string(),
                )
            });
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
    }
    url
}

/// A URL on which nothing listens: connections are refused.
async fn refused_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

fn aws_vars(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
    ]
}

fn delivery(events: usize) -> String {
    let org = generate(&OrgSpec {
        users: 5,
        groups: 1,
        apps: 1,
        seed: 2,
    });
    let events: Vec<Value> = org
        .users
        .iter()
        .cycle()
        .take(events)
        .enumerate()
        .map(|(i, u)| {
            json!({ "uuid": format!("ev-{i}"), "eventType": "user.account.update_profile",
                    "published": "2026-12-07T04:00:00.000Z",
                    "target": [{ "id": u["id"], "type": "User", "alternateId": u["profile"]["login"] }] })
        })
        .collect();
    hook_delivery(&events, 1).to_string()
}

fn post(secret: &str, body: &str) -> Value {
    function_url_event(
        "POST",
        &[("content-type", "application/json"), ("authorization", secret)],
        body,
    )
}

fn status(answer: Answer) -> u64 {
    answer.response()["statusCode"]
        .as_u64()
        .expect("a Function URL response")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_answers_503_in_time_whatever_sqs_does() {
    let binary = tokio::task::spawn_blocking(|| function_binary("webhook"))
        .await
        .unwrap();
    let cases = [
        ("refused", refused_endpoint().await),
        ("stalled", bad_endpoint(Misbehaviour::Stall).await),
        ("throttled", bad_endpoint(Misbehaviour::Throttle).await),
        ("failing", bad_endpoint(Misbehaviour::Fail).await),
    ];
    let body = delivery(3);
    for (name, endpoint) in cases {
        let mut vars = aws_vars(&endpoint);
        vars.push(("OKTA_WEBHOOK_SECRET", SECRET.into()));
        vars.push(("EVENTS_QUEUE_URL", format!("{endpoint}/123456789012/okta-events")));
        let function = Function::start(&binary, &vars).await;
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let answer = function
                .runtime
                .invoke(post(SECRET, &body), Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("{name}: no answer; logs:\n{}", function.logs()));
            times.push(started.elapsed());
            assert_eq!(status(answer), 503, "{name}");
        }
        times.sort();
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        eprintln!("SQS {name}: the webhook answered 503 in p50 {p50:?}, p99 {p99:?}");
        assert!(p99 < Duration::from_millis(2_500), "{name}: {times:?}");
        function.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_4xx_and_bad_events_are_set_aside() {
    let endpoint = moto::sqs_endpoint().await;
    let client = moto::sqs_client(&endpoint).await;
    let (queue_url, _dlq) = moto::create_queue(&client, "hardening").await;
    let binary = tokio::task::spawn_blocking(|| function_binary("webhook"))
        .await
        .unwrap();
    let mut vars = aws_vars(&endpoint);
    vars.push(("OKTA_WEBHOOK_SECRET", SECRET.into()));
    vars.push(("EVENTS_QUEUE_URL", queue_url.clone()));
    let function = Function::start(&binary, &vars).await;
    let invoke = |event: Value| {
        let runtime = function.runtime.clone();
        async move {
            runtime
                .invoke(event, Duration::from_secs(10))
                .await
                .expect("an answer")
        }
    };

    // A control character in a header value: our 4xx, not a function error.
    for headers in [
        vec![("authorization", "x\u{1}y"), ("content-type", "application/json")],
        vec![
            ("authorization", SECRET),
            ("x-forwarded-for", "1.2.3.4\u{0}"),
            ("content-type", "application/json"),
        ],
    ] {
        match invoke(function_url_event("POST", &headers, &delivery(1))).await {
            Answer::Response(r) => {
                let code = r["statusCode"].as_u64().unwrap();
                // A bad header that is not the secret is dropped; the delivery goes through.
                let expected = if headers[0].1 == SECRET { 200 } else { 401 };
                assert_eq!(code, expected, "{r}");
            }
            Answer::Error(e) => panic!("a function error for a malformed request: {e}"),
        }
    }
    // Not a Function URL event at all.
    match invoke(json!({ "hello": "world" })).await {
        Answer::Response(r) => assert_eq!(r["statusCode"], 400),
        Answer::Error(e) => panic!("a function error: {e}"),
    }
    // A too long verification challenge.
    let long = "c".repeat(5000);
    let verify = function_url_event("GET", &[("x-okta-verification-challenge", &long)], "");
    assert_eq!(status(invoke(verify).await), 400);

    // One bad event among good ones: 200, the good ones queued, the bad one counted.
    let mut good: Value = serde_json::from_str(&delivery(2)).unwrap();
    good["data"]["events"]
        .as_array_mut()
        .unwrap()
        .insert(1, json!({ "uuid": "bad-1", "target": "??" }));
    let answer = invoke(post(SECRET, &good.to_string())).await;
    assert_eq!(status(answer), 200);
    // An event with 6,000 targets: accepted and split across messages that fit SQS.
    let targets: Vec<Value> = (0..6000)
        .map(|i| json!({ "id": format!("00u{i:017}"), "type": "User", "alternateId": format!("u{i}@example.com"), "displayName": "A user with a rather long display name" }))
        .collect();
    let huge = hook_delivery(
        &[json!({ "uuid": "huge-1", "eventType": "group.application_assignment.add", "target": targets })],
        2,
    );
    let answer = invoke(post(SECRET, &huge.to_string())).await;
    assert_eq!(status(answer), 200);

    let mut bodies = Vec::new();
    for _ in 0..10 {
        let got = client
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if got.messages().is_empty() {
            break;
        }
        bodies.extend(got.messages().iter().filter_map(|m| m.body().map(str::to_owned)));
    }
    let parsed: Vec<Value> = bodies.iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    let uuids: Vec<&str> = parsed.iter().filter_map(|m| m["uuid"].as_str()).collect();
    assert!(uuids.contains(&"ev-0") && uuids.contains(&"ev-1"), "{uuids:?}");
    assert!(!uuids.contains(&"bad-1"));
    let huge_targets: usize = parsed
        .iter()
        .filter(|m| m["uuid"].as_str().is_some_and(|u| u.starts_with("huge-1")))
        .map(|m| m["targets"].as_array().unwrap().len())
        .sum();
    assert_eq!(huge_targets, 6000, "every target of the huge event was queued");
    let logs = function.stop().await;
    assert!(
        logs.contains("\"EventsMalformed\":1"),
        "the bad event is counted (EMF)"
    );
    assert!(logs.contains("event set aside"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_at_trace() {
    let endpoint = moto::sqs_endpoint().await;
    let client = moto::sqs_client(&endpoint).await;
    let (queue_url, _dlq) = moto::create_queue(&client, "trace").await;
    let env = Env::with_org(generate(&OrgSpec {
        users: 30,
        groups: 3,
        apps: 2,
        seed: 4,
    }))
    .await;
    let (webhook, consumer, resync) = tokio::task::spawn_blocking(|| {
        (
            function_binary("webhook"),
            function_binary("consumer"),
            function_binary("resync"),
        )
    })
    .await
    .unwrap();
    let mut vars = aws_vars(&endpoint);
    vars.extend(env.variables());
    vars.push(("OKTA_WEBHOOK_SECRET", SECRET.into()));
    vars.push(("EVENTS_QUEUE_URL", queue_url.clone()));
    vars.push(("RUST_LOG", "trace".into()));

    let mut logs = String::new();
    let f = Function::start(&resync, &vars).await;
    let report = f
        .runtime
        .invoke(json!({}), Duration::from_secs(120))
        .await
        .expect("resync answers");
    assert!(matches!(report, Answer::Response(_)), "{report:?}");
    logs += &f.stop().await;

    let f = Function::start(&webhook, &vars).await;
    let body = delivery(3);
    assert_eq!(
        status(
            f.runtime
                .invoke(post(SECRET, &body), Duration::from_secs(10))
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            f.runtime
                .invoke(post("wrong", &body), Duration::from_secs(10))
                .await
                .unwrap()
        ),
        401
    );
    logs += &f.stop().await;

    let sqs = okta_port::queue::Sqs::new(client.clone(), queue_url.clone());
    let received = sqs.receive(10, 1).await.unwrap();
    assert!(!received.is_empty());
    let f = Function::start(&consumer, &vars).await;
    let event = harness::sqs_lambda_event(&queue_url, &received);
    let answer = f
        .runtime
        .invoke(event, Duration::from_secs(60))
        .await
        .unwrap()
        .response();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    logs += &f.stop().await;

    let lines = logs.lines().count();
    for said in ["resync finished", "delivery accepted", "batch done"] {
        assert!(logs.contains(said), "{said:?} not logged:\n{logs}");
    }
    let secrets: Vec<String> = env
        .variables()
        .into_iter()
        .filter(|(k, _)| k.contains("TOKEN") || k.contains("SECRET"))
        .map(|(_, v)| v)
        .chain([SECRET.to_owned()])
        .chain(env.port.issued_tokens())
        .collect();
    assert!(secrets.len() >= 4);
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs");
    }
    eprintln!(
        "{lines} log lines at trace from the three functions, none with any of {} secrets",
        secrets.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_backs_off_on_bare_429s_and_hands_messages_back() {
    let env = Env::with_org(generate(&OrgSpec {
        users: 20,
        groups: 2,
        apps: 1,
        seed: 6,
    }))
    .await;
    assert!(env.resync().await.unwrap().is_success());
    let events = env.okta.with_org(|org| {
        org.take_events();
        let ids: Vec<String> = org
            .users
            .iter()
            .take(3)
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect();
        for id in &ids {
            org.set_profile_attr(id, "department", Some("Moved"));
        }
        org.take_events()
    });
    let queue = okta_port::queue::MemoryQueue::default();
    harness::deliver(&events, 10, &queue).await;
    let messages: Vec<okta_port::queue::ReceivedMessage> = queue
        .drain()
        .into_iter()
        .enumerate()
        .map(|(i, body)| okta_port::queue::ReceivedMessage {
            message_id: format!("m-{i}"),
            receipt_handle: format!("r-{i}"),
            body,
        })
        .collect();
    let binary = tokio::task::spawn_blocking(|| function_binary("consumer"))
        .await
        .unwrap();
    let f = Function::start(&binary, &env.variables().into_iter().collect::<Vec<_>>()).await;
    let event = harness::sqs_lambda_event("https://sqs.us-east-1.amazonaws.com/1/q", &messages);

    // Okta answers every call 429 with no rate-limit header for 12 s; the invocation has 10 s.
    const WINDOW: Duration = Duration::from_secs(12);
    env.okta.throttle_bare(WINDOW);
    let started = Instant::now();
    let answer = f
        .runtime
        .invoke(event.clone(), Duration::from_secs(10))
        .await
        .expect("answer");
    let answer = answer.response();
    let failed = answer["batchItemFailures"].as_array().unwrap().len();
    assert_eq!(failed, messages.len(), "every message handed back: {answer}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered before the deadline"
    );
    let throttled = env.okta.calls().bare_429s_at.len();
    let rate = throttled as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "bare 429s: {throttled} Okta requests in {:.1} s ({rate:.2}/s) for {} touched users; all {} messages handed back",
        started.elapsed().as_secs_f64(),
        3,
        messages.len()
    );
    assert!(rate < 3.0, "{rate:.1} requests/s while Okta says 429");

    // Once Okta answers again, the same messages converge.
    tokio::time::sleep(WINDOW.saturating_sub(started.elapsed())).await;
    let answer = f
        .runtime
        .invoke(event, Duration::from_secs(30))
        .await
        .unwrap()
        .response();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    f.stop().await;
    let moved = env
        .port
        .entities("oktaUser")
        .iter()
        .filter(|u| u["properties"]["department"] == "Moved")
        .count();
    assert_eq!(moved, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_fail_fast_and_say_why() {
    let stalled = bad_endpoint(Misbehaviour::Stall).await;
    let env = Env::with_org(generate(&OrgSpec {
        users: 5,
        groups: 1,
        apps: 1,
        seed: 8,
    }))
    .await;
    // The function's init against a stalled Secrets Manager: a prompt init error naming it.
    let binary = tokio::task::spawn_blocking(|| function_binary("webhook"))
        .await
        .unwrap();
    let mut vars = aws_vars(&stalled);
    vars.push(("SECRETS_ARN", "okta-port/secrets\n".into()));
    vars.push(("EVENTS_QUEUE_URL", format!("{stalled}/1/q")));
    let started = Instant::now();
    let mut f = Function::start(&binary, &vars).await;
    let exit = f
        .wait_exit(Duration::from_secs(9))
        .await
        .expect("the cold start gives up");
    let took = started.elapsed();
    assert!(
        !exit.success() && took < Duration::from_secs(8),
        "init took {took:?}"
    );
    let text = f.logs();
    assert!(
        text.contains("cold start failed")
            && text.contains("Secrets Manager")
            && text.contains("okta-port/secrets"),
        "{text}"
    );
    assert!(!text.contains("secrets\\n"), "SECRETS_ARN is trimmed: {text}");
    eprintln!("a cold start against a stalled Secrets Manager gave up in {took:?}");
    f.stop().await;

    // The CLI, the same: it says so within seconds instead of hanging.
    tokio::task::spawn_blocking(harness::cli_binary).await.unwrap();
    let started = Instant::now();
    let mut cli_vars: Vec<(&str, &str)> = vec![("SECRETS_ARN", "okta-port/secrets")];
    let aws = aws_vars(&stalled);
    cli_vars.extend(aws.iter().map(|(k, v)| (*k, v.as_str())));
    let run = env.run_cli(&["blueprints"], &cli_vars).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("Secrets Manager"), "{}", run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // A blank webhook secret is refused at init, naming the variable.
    let mut f = Function::start(
        &binary,
        &[
            ("OKTA_WEBHOOK_SECRET", "   ".into()),
            ("EVENTS_QUEUE_URL", "http://127.0.0.1:1/1/q".into()),
        ],
    )
    .await;
    assert!(
        f.wait_exit(Duration::from_secs(5))
            .await
            .is_some_and(|s| !s.success())
    );
    let text = f.stop().await;
    assert!(
        text.contains("OKTA_WEBHOOK_SECRET") && text.contains("white space"),
        "{text}"
    );

    // An installation id that cannot go into a header, and a Port URL that is not Port.
    let run = env
        .run_cli(&["blueprints"], &[("INSTALLATION_ID", "prod\u{7f}")])
        .await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("INSTALLATION_ID"), "{}", run.stderr);
    let not_port = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app =
            axum::Router::new().fallback(|| async { (StatusCode::NOT_FOUND, "<html>Not Found</html>") });
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    };
    let run = env
        .run_cli(&["blueprints"], &[("PORT_API_URL", not_port.as_str())])
        .await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("PORT_API_URL looks wrong"), "{}", run.stderr);

    // Each function started outside Lambda: one clear line, exit status 2, no panic.
    for name in ["webhook", "consumer", "resync"] {
        let binary = tokio::task::spawn_blocking(move || function_binary(name))
            .await
            .unwrap();
        let out = tokio::process::Command::new(binary)
            .env_clear()
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.contains("not running in AWS Lambda") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}
