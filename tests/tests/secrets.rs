//! `secrets` against real Secrets Manager protocol (moto): a secret loaded by ARN reaches the
//! Okta and Port clients, it wins over a stale environment variable, several secrets each
//! bring their keys, and a missing or malformed secret
//! fails at cold start with an error naming the ARN or the key, never a value.

use std::collections::HashMap;

use okta_port::App;
use okta_port::app::AppError;
use okta_port::config::ConfigError;
use okta_port::secrets::{Lookup, SecretValues, SecretsError};
use okta_port::sync::RunOverrides;
use okta_port_tests::harness::{Env, LogCapture};
use okta_port_tests::moto;
use okta_port_tests::orggen::{OrgSpec, generate};
use serde_json::json;

async fn client_for(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&moto::sdk_config(endpoint).await)
}

async fn client() -> aws_sdk_secretsmanager::Client {
    client_for(&moto::sqs_endpoint().await).await
}

/// Creates a secret with a unique name; returns its ARN.
async fn create_secret(client: &aws_sdk_secretsmanager::Client, prefix: &str, text: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("okta-port/{prefix}-{}-{n}-{nanos}", std::process::id());
    client
        .create_secret()
        .name(name)
        .secret_string(text)
        .send()
        .await
        .expect("moto creates the secret")
        .arn
        .expect("CreateSecret returns the ARN")
}

/// A stand-in for the process environment.
fn env(pairs: Vec<(&'static str, String)>) -> Lookup {
    let map: HashMap<&'static str, String> = pairs.into_iter().collect();
    Lookup::from_fn(move |k| map.get(k).cloned())
}

#[tokio::test]
async fn secrets_from_secrets_manager_reach_the_clients() {
    let logs = LogCapture::default();
    let writer = logs.clone();
    let subscriber =
        okta_port::telemetry::lambda_subscriber(tracing_subscriber::EnvFilter::new("trace"), move || {
            writer.clone()
        });
    let _guard = tracing::subscriber::set_default(subscriber);

    let sims = Env::with_org(generate(&OrgSpec {
        users: 60,
        groups: 6,
        apps: 3,
        seed: 7,
    }))
    .await;
    let vars: HashMap<&str, String> = sims.variables().into_iter().collect();
    let client = client().await;
    // The secret holds the credentials; the environment only where to find things.
    let secret = json!({
        "OKTA_API_TOKEN": vars["OKTA_API_TOKEN"],
        "PORT_CLIENT_ID": vars["PORT_CLIENT_ID"],
        "PORT_CLIENT_SECRET": vars["PORT_CLIENT_SECRET"],
        "OKTA_WEBHOOK_SECRET": "whsec-from-the-secret",
    });
    let arn = create_secret(&client, "reach", &secret.to_string()).await;
    let lookup = env(vec![
        ("SECRETS_ARN", arn.clone()),
        ("OKTA_DOMAIN", vars["OKTA_DOMAIN"].clone()),
        ("PORT_API_URL", vars["PORT_API_URL"].clone()),
    ])
    .with_secret(&client)
    .await
    .expect("the secret loads by ARN");
    assert_eq!(
        lookup.secret().unwrap().keys().collect::<Vec<_>>(),
        [
            "OKTA_API_TOKEN",
            "OKTA_WEBHOOK_SECRET",
            "PORT_CLIENT_ID",
            "PORT_CLIENT_SECRET"
        ]
    );

    // The simulators refuse wrong credentials: a complete resync proves they arrived.
    let app = App::from_lookup(&lookup).expect("configuration from env + secret");
    let report = app.resync(RunOverrides::default()).await.expect("resync runs");
    assert!(report.is_success(), "{}", report.failure_summary());
    assert_eq!(sims.catalog()["oktaUser"].len(), 60);
    // The webhook reads its secret the same way.
    let webhook = okta_port::webhook::WebhookConfig::from_lookup(|k| lookup.get(k)).unwrap();
    assert!(webhook.secret.is_some());

    let logged = logs.text();
    assert!(logged.contains("secret loaded"), "{logged}");
    for value in [
        vars["OKTA_API_TOKEN"].as_str(),
        vars["PORT_CLIENT_SECRET"].as_str(),
        "whsec-from-the-secret",
    ] {
        assert!(!logged.contains(value), "a secret value was logged");
        assert!(!format!("{lookup:?}").contains(value));
    }
}

#[tokio::test]
async fn the_secrets_win_over_a_stale_environment() {
    let client = client().await;
    let secret = json!({ "OKTA_DOMAIN": "from-secret.okta.com", "OKTA_API_TOKEN": "tok-rotated",
                         "PORT_CLIENT_ID": "id-from-secret" });
    let arn = create_secret(&client, "order", &secret.to_string()).await;
    let hook = create_secret(
        &client,
        "hook",
        &json!({ "OKTA_WEBHOOK_SECRET": "hook-secret" }).to_string(),
    )
    .await;
    let lookup = env(vec![
        // Two secrets, as the resync reads them (a trailing newline is ignored).
        ("SECRETS_ARN", format!("{arn},{hook}\n")),
        // A stale copy of the token in the environment: the rotated secret wins.
        ("OKTA_API_TOKEN", "tok-stale".into()),
        ("OKTA_MAX_IN_FLIGHT", "4".into()),
        // Empty counts as unset, as a template's blank parameter would leave it.
        ("PORT_CLIENT_ID", String::new()),
    ])
    .with_secret(&client)
    .await
    .unwrap();
    assert_eq!(lookup.get("OKTA_API_TOKEN").as_deref(), Some("tok-rotated"));
    assert_eq!(lookup.get("OKTA_DOMAIN").as_deref(), Some("from-secret.okta.com"));
    assert_eq!(lookup.get("OKTA_WEBHOOK_SECRET").as_deref(), Some("hook-secret"));
    assert_eq!(lookup.get("PORT_CLIENT_ID").as_deref(), Some("id-from-secret"));
    // What no secret holds comes from the environment.
    assert_eq!(lookup.get("OKTA_MAX_IN_FLIGHT").as_deref(), Some("4"));
    assert_eq!(lookup.get("PORT_CLIENT_SECRET"), None);
}

#[tokio::test]
async fn a_secret_without_a_required_key_names_the_key() {
    let client = client().await;
    let secret = json!({ "OKTA_API_TOKEN": "tok", "PORT_CLIENT_ID": "id" });
    let arn = create_secret(&client, "partial", &secret.to_string()).await;
    let lookup = env(vec![
        ("SECRETS_ARN", arn),
        ("OKTA_DOMAIN", "dev-1.okta.com".into()),
    ])
    .with_secret(&client)
    .await
    .unwrap();
    let err = App::from_lookup(&lookup).err().expect("a key is missing");
    assert!(
        matches!(err, AppError::Config(ConfigError::Missing("PORT_CLIENT_SECRET"))),
        "{err}"
    );
    assert!(err.to_string().contains("PORT_CLIENT_SECRET"), "{err}");
}

#[tokio::test]
async fn a_missing_secret_names_the_arn() {
    let client = client().await;
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:okta-port/absent-AbCdEf";
    let err = env(vec![("SECRETS_ARN", arn.into())])
        .with_secret(&client)
        .await
        .unwrap_err();
    assert_eq!(err, SecretsError::NotFound { arn: arn.into() });
    assert!(err.to_string().contains(arn), "{err}");
    // Through App: the same error, for the cold start to fail with.
    let err = AppError::from(err);
    assert!(err.to_string().contains(arn), "{err}");
}

#[tokio::test]
async fn a_non_string_value_names_the_key_not_the_value() {
    let client = client().await;
    let text =
        r#"{"OKTA_API_TOKEN": "tok-ok", "PORT_CLIENT_SECRET": 987654321, "OKTA_WEBHOOK_SECRET": "wh"}"#;
    let arn = create_secret(&client, "typed", text).await;
    let err = env(vec![("SECRETS_ARN", arn.clone())])
        .with_secret(&client)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SecretsError::NotAString {
            arn: arn.clone(),
            key: "PORT_CLIENT_SECRET".into(),
            found: "number"
        }
    );
    let message = err.to_string();
    assert!(
        message.contains("PORT_CLIENT_SECRET") && message.contains(&arn),
        "{message}"
    );
    for value in ["987654321", "tok-ok"] {
        assert!(!message.contains(value), "{message}");
        assert!(!format!("{err:?}").contains(value));
    }

    // Not JSON at all: neither the text nor a value is quoted.
    let arn = create_secret(&client, "plain", "OKTA_API_TOKEN=tok-plain").await;
    let err = SecretValues::fetch(&client, &arn).await.unwrap_err();
    assert!(matches!(err, SecretsError::Malformed { .. }), "{err}");
    assert!(!err.to_string().contains("tok-plain"), "{err}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_transport_error() {
    // Nothing listens on a port we just closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = client_for(&format!("http://127.0.0.1:{port}")).await;
    let err = SecretValues::fetch(&client, "okta-port/anything")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SecretsError::Transport { arn, .. } if arn == "okta-port/anything"),
        "{err}"
    );
}

/// `okta-port put-secret`, the deploy guide's way to fill the stack's secret without the
/// AWS CLI or jq: the credentials set in the environment are stored, the secret's other
/// keys are kept, and no value is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_secret_stores_the_environments_credentials_and_keeps_the_rest() {
    let client = client().await;
    let endpoint = moto::sqs_endpoint().await;
    // As the stack creates it: empty credentials, a generated webhook secret.
    let created = json!({
        "OKTA_API_TOKEN": "", "PORT_CLIENT_ID": "", "PORT_CLIENT_SECRET": "",
        "OKTA_WEBHOOK_SECRET": "whsec-generated-by-the-stack",
    });
    let arn = create_secret(&client, "put", &created.to_string()).await;
    let cli = tokio::task::spawn_blocking(okta_port_tests::harness::cli_binary)
        .await
        .unwrap();
    let run = |vars: Vec<(&'static str, &'static str)>| {
        let mut command = std::process::Command::new(&cli);
        command
            .args(["put-secret", "--secret-id", &arn])
            .env_clear()
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("RUST_LOG", "trace")
            .envs(vars);
        command.output().expect("run the CLI")
    };

    let out = run(vec![
        ("OKTA_API_TOKEN", "00tok-put-by-the-cli"),
        ("PORT_CLIENT_ID", "pcid-put"),
        ("PORT_CLIENT_SECRET", "pcs-put-by-the-cli"),
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("stored in {arn}: OKTA_API_TOKEN, PORT_CLIENT_ID, PORT_CLIENT_SECRET")
    );
    for value in [
        "00tok-put-by-the-cli",
        "pcs-put-by-the-cli",
        "whsec-generated-by-the-stack",
    ] {
        assert!(
            !stdout.contains(value) && !stderr.contains(value),
            "a value was printed"
        );
    }
    let stored = client.get_secret_value().secret_id(&arn).send().await.unwrap();
    let stored: serde_json::Value = serde_json::from_str(stored.secret_string().unwrap()).unwrap();
    assert_eq!(
        stored,
        json!({
            "OKTA_API_TOKEN": "00tok-put-by-the-cli", "PORT_CLIENT_ID": "pcid-put",
            "PORT_CLIENT_SECRET": "pcs-put-by-the-cli", "OKTA_WEBHOOK_SECRET": "whsec-generated-by-the-stack",
        })
    );

    // Nothing set: a configuration error (exit 2) naming what it would store.
    let out = run(vec![]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nothing to store") && stderr.contains("PORT_CLIENT_SECRET"),
        "{stderr}"
    );
    // A secret that does not exist is named.
    let mut missing = std::process::Command::new(&cli);
    missing
        .args(["put-secret", "--secret-id", "okta-port/no-such-secret"])
        .env_clear()
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("PORT_CLIENT_SECRET", "pcs-x");
    let out = missing.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("okta-port/no-such-secret (SECRETS_ARN) was not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
