//! Glue for end-to-end tests, the demo and benchmarks: both simulators on loopback and an
//! okta-port configuration pointing at them.

use std::collections::BTreeMap;

use okta_port::config::Config;
use okta_port::sync::{RunOverrides, SyncError};
use okta_port::{App, Report};
use serde_json::{Value, json};

use crate::expected::{APP_BLUEPRINT, Catalog, GROUP_BLUEPRINT, USER_BLUEPRINT};
use crate::okta_sim::{OktaSim, OktaSimConfig};
use crate::orggen::Org;
use crate::port_sim::{PortSim, PortSimConfig};

pub const BLUEPRINTS: [&str; 3] = [USER_BLUEPRINT, GROUP_BLUEPRINT, APP_BLUEPRINT];

/// Both simulators and the settings that reach them.
pub struct Env {
    pub okta: OktaSim,
    pub port: PortSim,
    okta_token: String,
    port_client_id: String,
    port_client_secret: String,
}

impl Env {
    pub async fn start(org: Org, okta_config: OktaSimConfig, port_config: PortSimConfig) -> Env {
        let okta_token = okta_config.token.clone();
        let (port_client_id, port_client_secret) =
            (port_config.client_id.clone(), port_config.client_secret.clone());
        let okta = OktaSim::start(org, okta_config).await;
        let port = PortSim::start(port_config).await;
        Env {
            okta,
            port,
            okta_token,
            port_client_id,
            port_client_secret,
        }
    }

    pub async fn with_org(org: Org) -> Env {
        Env::start(org, OktaSimConfig::default(), PortSimConfig::default()).await
    }

    /// The environment variables okta-port needs to reach these simulators.
    pub fn variables(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OKTA_DOMAIN", self.okta.base_url.clone()),
            ("OKTA_API_TOKEN", self.okta_token.clone()),
            ("PORT_API_URL", self.port.base_url.clone()),
            ("PORT_CLIENT_ID", self.port_client_id.clone()),
            ("PORT_CLIENT_SECRET", self.port_client_secret.clone()),
        ]
    }

    /// okta-port's configuration for these simulators: the production defaults, with no
    /// test-only shortcut (retries and back-off as a deployment has them).
    pub fn config(&self) -> Config {
        let vars = self.variables();
        Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
            .expect("simulator configuration is valid")
    }

    /// A fresh app (new clients, so its counters start at zero).
    pub fn app(&self) -> App {
        App::new(&self.config()).expect("clients build")
    }

    pub async fn resync(&self) -> Result<Report, SyncError> {
        self.app().resync(RunOverrides::default()).await
    }

    /// The catalog okta-port (installation `okta-port`) wrote into the simulated Port, in
    /// the oracle's shape: relation arrays sorted.
    pub fn catalog(&self) -> Catalog {
        self.catalog_of("okta-port")
    }

    pub fn catalog_of(&self, installation: &str) -> Catalog {
        let suffix = format!("/{installation}");
        let mut catalog = BTreeMap::new();
        for bp in BLUEPRINTS {
            let entities: BTreeMap<String, Value> = self
                .port
                .entities(bp)
                .into_iter()
                .filter(|e| {
                    let id = e["identifier"].as_str().unwrap_or_default();
                    self.port
                        .datasource_of(bp, id)
                        .is_some_and(|d| d.starts_with("okta-port/") && d.ends_with(&suffix))
                })
                .map(|e| {
                    (
                        e["identifier"].as_str().unwrap_or_default().to_owned(),
                        normalize(&e),
                    )
                })
                .collect();
            catalog.insert(bp.to_owned(), entities);
        }
        catalog
    }
}

/// An entity reduced to what okta-port writes, relation arrays sorted.
pub fn normalize(entity: &Value) -> Value {
    let mut relations = entity["relations"].as_object().cloned().unwrap_or_default();
    for value in relations.values_mut() {
        if let Value::Array(items) = value {
            items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        }
    }
    json!({
        "identifier": entity["identifier"],
        "title": entity["title"],
        "properties": entity["properties"],
        "relations": relations,
    })
}

/// Describes how two catalogs differ (empty when equal), for readable assertion failures.
pub fn diff(actual: &Catalog, expected: &Catalog) -> Vec<String> {
    let mut out = Vec::new();
    for bp in BLUEPRINTS {
        let (a, e) = (
            actual.get(bp).cloned().unwrap_or_default(),
            expected.get(bp).cloned().unwrap_or_default(),
        );
        for (id, want) in &e {
            match a.get(id) {
                None => out.push(format!("{bp} {id}: missing in Port")),
                Some(got) if got != want => out.push(format!("{bp} {id}: Port has {got}\n  expected {want}")),
                _ => {}
            }
        }
        for id in a.keys().filter(|id| !e.contains_key(*id)) {
            out.push(format!("{bp} {id}: in Port but not expected"));
        }
    }
    out
}

/// Asserts that the simulated Port holds exactly the expected catalog.
pub fn assert_catalog(actual: &Catalog, expected: &Catalog) {
    let d = diff(actual, expected);
    assert!(
        d.is_empty(),
        "{} differences, first ones:\n{}",
        d.len(),
        d.iter().take(8).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// The secret the tests' webhook expects in `Authorization`.
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";

pub fn webhook_config() -> okta_port::webhook::WebhookConfig {
    okta_port::webhook::WebhookConfig::from_lookup(|k| {
        (k == "OKTA_WEBHOOK_SECRET").then(|| WEBHOOK_SECRET.into())
    })
    .expect("valid webhook configuration")
}

/// A Function URL POST as Okta sends a delivery.
pub fn delivery_request(delivery: &Value, secret: Option<&str>) -> lambda_http::Request {
    let mut builder = lambda_http::http::Request::builder()
        .method("POST")
        .uri("https://abc123.lambda-url.us-east-1.on.aws/")
        .header("content-type", "application/json")
        .header("user-agent", "Okta Event Hooks");
    if let Some(secret) = secret {
        builder = builder.header("authorization", secret);
    }
    builder
        .body(lambda_http::Body::from(delivery.to_string()))
        .expect("valid request")
}

/// Delivers events through the webhook handler, `per_delivery` events a delivery, as Okta
/// batches them; returns the status of each delivery.
pub async fn deliver<Q: okta_port::queue::EventQueue>(
    events: &[Value],
    per_delivery: usize,
    queue: &Q,
) -> Vec<u16> {
    let config = webhook_config();
    let mut statuses = Vec::new();
    for (seq, chunk) in events.chunks(per_delivery.max(1)).enumerate() {
        let delivery = crate::orggen::hook_delivery(chunk, seq as u64);
        let request = delivery_request(&delivery, Some(WEBHOOK_SECRET));
        statuses.push(
            okta_port::webhook::handle(&request, &config, queue)
                .await
                .status()
                .as_u16(),
        );
    }
    statuses
}

/// What feeding a queue to the consumer did.
#[derive(Debug, Default)]
pub struct Consumed {
    pub batches: usize,
    pub okta_calls: u64,
    /// Messages that kept failing until their receive count ran out (the DLQ).
    pub dead: Vec<(String, String)>,
}

/// Feeds message bodies to the consumer in batches of `batch_size`, putting the failed ones
/// back at the end of the queue as SQS does, until each has been received `max_receives`
/// times.
pub async fn consume(app: &App, bodies: Vec<String>, batch_size: usize, max_receives: usize) -> Consumed {
    let processors = okta_port::sync::live::default_processors();
    let mut queue: std::collections::VecDeque<(String, String, usize)> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| (format!("msg-{i}"), b, 0))
        .collect();
    let mut consumed = Consumed::default();
    while !queue.is_empty() {
        let take = batch_size.min(queue.len());
        let batch: Vec<(String, String, usize)> = queue.drain(..take).collect();
        let messages: Vec<(String, String)> = batch
            .iter()
            .map(|(id, body, _)| (id.clone(), body.clone()))
            .collect();
        let report = app.apply_batch(&messages, &processors).await;
        consumed.batches += 1;
        consumed.okta_calls += report.okta_calls;
        for (id, body, receives) in batch {
            if let Some(reason) = report.failures.get(&id) {
                if receives + 1 >= max_receives {
                    consumed.dead.push((body, reason.clone()));
                } else {
                    queue.push_back((id, body, receives + 1));
                }
            }
        }
    }
    consumed
}

// ---------------------------------------------------------------------------------------
// Local development: the functions under `cargo lambda watch`, as separate processes,
// against the simulators and an SQS queue served by moto.

/// The webhook secret the `events/` samples carry; local development uses it too, so
/// those samples are accepted as they are.
pub const SAMPLE_WEBHOOK_SECRET: &str = "sample-webhook-secret";

/// The AWS settings for moto: any static credentials, region us-east-1.
pub fn aws_test_variables(sqs_endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", sqs_endpoint.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
    ]
}

impl Env {
    /// Everything the three functions need to run locally against these simulators: the
    /// okta-port settings, the webhook secret of the samples, the events queue and the AWS
    /// settings that point the SDK at moto.
    pub fn function_variables(&self, sqs_endpoint: &str, queue_url: &str) -> Vec<(&'static str, String)> {
        let mut vars = self.variables();
        vars.push(("OKTA_WEBHOOK_SECRET", SAMPLE_WEBHOOK_SECRET.to_owned()));
        vars.push(("EVENTS_QUEUE_URL", queue_url.to_owned()));
        vars.extend(aws_test_variables(sqs_endpoint));
        vars
    }
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// `export KEY=VALUE` lines: a shell can source them (`. FILE`), and
/// `cargo lambda watch --env-file FILE` reads them too. The values never need quoting
/// (URLs, tokens, region names).
pub fn env_file_text(vars: &[(&'static str, String)]) -> String {
    vars.iter().map(|(k, v)| format!("export {k}={v}\n")).collect()
}

/// Reads `KEY=VALUE` lines (an optional leading `export ` is allowed; blank lines and `#`
/// comments are skipped).
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// The SQS event Lambda's event source mapping would hand the consumer for `messages`
/// taken from `queue_url` (moto's URLs end in `/<account>/<name>`).
pub fn sqs_lambda_event(queue_url: &str, messages: &[okta_port::queue::ReceivedMessage]) -> Value {
    let mut parts = queue_url.trim_end_matches('/').rsplit('/');
    let name = parts.next().unwrap_or("queue");
    let account = parts
        .next()
        .filter(|a| a.chars().all(|c| c.is_ascii_digit()) && !a.is_empty())
        .unwrap_or("123456789012");
    let arn = format!("arn:aws:sqs:us-east-1:{account}:{name}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        .to_string();
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id,
                "receiptHandle": m.receipt_handle,
                "body": m.body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": now,
                    "SenderId": "AROAEXAMPLE:okta-port-webhook",
                    "ApproximateFirstReceiveTimestamp": now,
                },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records })
}

/// A few changes to the org, different at each `round`: a group renamed, a user's
/// department changed, that user added to the group, another user deprovisioned.
/// Returns the events Okta would send for them (what a delivery carries).
pub fn local_dev_changes(org: &mut Org, round: u64) -> Vec<Value> {
    let id = |v: &Value| v["id"].as_str().unwrap_or_default().to_owned();
    let groups: Vec<String> = org
        .groups
        .iter()
        .filter(|g| g["type"] == "OKTA_GROUP")
        .map(id)
        .collect();
    let active: Vec<String> = org
        .users
        .iter()
        .filter(|u| u["status"] == "ACTIVE")
        .map(id)
        .collect();
    let pick = |items: &[String], k: u64| -> Option<String> {
        (!items.is_empty()).then(|| items[(k as usize) % items.len()].clone())
    };
    if let Some(group) = pick(&groups, round) {
        org.rename_group(&group, &format!("Local dev group {round}"));
        if let Some(user) = pick(&active, round * 2) {
            org.set_profile_attr(&user, "department", Some(&format!("Local dev {round}")));
            org.add_member(&group, &user);
        }
    }
    if let Some(leaver) = pick(&active, round * 2 + 1) {
        org.set_user_status(&leaver, "DEPROVISIONED");
    }
    org.take_events()
}

/// What the simulated Port holds, cheaply comparable: per blueprint, entity id → its
/// content (title, properties, relations; not `updatedAt`, so rewriting an entity
/// unchanged is no change) and title.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSnapshot(pub BTreeMap<String, BTreeMap<String, (String, String)>>);

impl PortSnapshot {
    pub fn take(port: &PortSim) -> PortSnapshot {
        let mut out = BTreeMap::new();
        for bp in BLUEPRINTS {
            let entities = port
                .entities(bp)
                .into_iter()
                .map(|e| {
                    let title = match &e["title"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (
                        e["identifier"].as_str().unwrap_or_default().to_owned(),
                        (normalize(&e).to_string(), title),
                    )
                })
                .collect();
            out.insert(bp.to_owned(), entities);
        }
        PortSnapshot(out)
    }

    /// One line: the entity count per blueprint, what was created, updated and deleted
    /// since `before`, and the first few changed entities.
    pub fn summary_since(&self, before: &PortSnapshot) -> String {
        let mut counts = Vec::new();
        let mut changed = Vec::new();
        for (bp, now) in &self.0 {
            let empty = BTreeMap::new();
            let then = before.0.get(bp).unwrap_or(&empty);
            let (mut created, mut updated) = (0, 0);
            for (id, (content, title)) in now {
                match then.get(id) {
                    None => {
                        created += 1;
                        changed.push(format!("+{bp}/{id} \"{title}\""));
                    }
                    Some((old, _)) if old != content => {
                        updated += 1;
                        changed.push(format!("~{bp}/{id} \"{title}\""));
                    }
                    _ => {}
                }
            }
            let deleted: Vec<&String> = then.keys().filter(|id| !now.contains_key(*id)).collect();
            changed.extend(deleted.iter().map(|id| format!("-{bp}/{id}")));
            counts.push(format!(
                "{bp} {} (+{created} ~{updated} -{})",
                now.len(),
                deleted.len()
            ));
        }
        let shown = 4;
        let more = changed.len().saturating_sub(shown);
        let mut line = format!("port: {}", counts.join(", "));
        if !changed.is_empty() {
            line.push_str(&format!("; {}", changed[..changed.len().min(shown)].join(" ")));
            if more > 0 {
                line.push_str(&format!(" … and {more} more"));
            }
        }
        line
    }
}

/// Captures every log line written while installed, so tests can check what was logged
/// (and that no secret was). Clones share the buffer; use one as a `tracing` writer.
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Installs a plain-text subscriber at `level` on this thread, until the guard drops.
    pub fn install(level: tracing::Level) -> (LogCapture, tracing::subscriber::DefaultGuard) {
        let logs = LogCapture::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(level)
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

/// The `okta-port` CLI, built once per test process the way `cargo build --bin` builds it
/// (so `cargo lambda watch` and these tests share the artifacts), for tests that run it as
/// its own process.
pub fn cli_binary() -> std::path::PathBuf {
    crate::lambda_emu::function_binary("okta-port")
}

/// What one run of the CLI did.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Env {
    /// Runs the `okta-port` CLI as its own process against these simulators, with `extra`
    /// variables on top (a variable given empty is removed), and waits for it.
    pub async fn run_cli(&self, args: &[&str], extra: &[(&str, &str)]) -> CliRun {
        let binary = tokio::task::spawn_blocking(cli_binary)
            .await
            .expect("build the CLI");
        let mut command = tokio::process::Command::new(binary);
        command.args(args).env_clear().env("RUST_LOG", "warn");
        for (k, v) in self.variables() {
            command.env(k, v);
        }
        for (k, v) in extra {
            if v.is_empty() {
                command.env_remove(k);
            } else {
                command.env(k, v);
            }
        }
        let out = tokio::time::timeout(std::time::Duration::from_secs(300), command.output())
            .await
            .expect("the CLI finishes within 5 minutes")
            .expect("run the CLI");
        CliRun {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
