//! Real SQS protocol for tests, served by moto (<https://github.com/getmoto/moto>).
//!
//! CI (`.ci/run`) starts one moto server and exports `AWS_ENDPOINT_URL`; elsewhere the first
//! test that asks starts one `moto_server` for the whole test process, which dies with it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

const INSTALL_HINT: &str = "moto is needed for the SQS tests. Install it from the repository root with \
     `python3 -m venv .venv-tools && .venv-tools/bin/pip install 'moto[server]==5.2.5'`, \
     point MOTO_SERVER at a moto_server binary, or run `.ci/run`";

/// The SQS endpoint for this test process: `AWS_ENDPOINT_URL` if set, else a moto server
/// started on first use and shared by every test of the process.
pub async fn sqs_endpoint() -> String {
    if let Some(url) = std::env::var("AWS_ENDPOINT_URL").ok().filter(|u| !u.is_empty()) {
        return url;
    }
    static SERVER: OnceCell<String> = OnceCell::const_new();
    SERVER.get_or_init(start_moto).await.clone()
}

/// The AWS configuration for moto at `endpoint`: static test credentials, us-east-1.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
        .load()
        .await
}

/// An SQS client for `endpoint` with moto's static test credentials, region us-east-1.
pub async fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk_config(endpoint).await)
}

/// An S3 client for moto (buckets by path, as a custom endpoint serves them).
pub async fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&sdk_config(endpoint).await)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A queue's ARN.
pub async fn queue_arn(client: &aws_sdk_sqs::Client, queue_url: &str) -> String {
    client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("read the queue's ARN")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("GetQueueAttributes returns the ARN")
}

/// What the stack wires for Okta Log Streaming, on moto: an event bus, a rule on the
/// handled event types, and the queue as its target. Returns the client and the bus name.
pub async fn okta_streaming_bus(endpoint: &str, queue_arn: &str) -> (aws_sdk_eventbridge::Client, String) {
    let bridge = aws_sdk_eventbridge::Client::new(&sdk_config(endpoint).await);
    let bus = unique_name("okta-log-streaming");
    bridge
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .expect("create the bus");
    let pattern = serde_json::json!({ "detail": { "eventType": okta_port::events::HANDLED_EVENT_TYPES } });
    bridge
        .put_rule()
        .name("okta-handled-events")
        .event_bus_name(&bus)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .expect("create the rule");
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id("events-queue")
        .arn(queue_arn)
        .build()
        .expect("a target");
    bridge
        .put_targets()
        .rule("okta-handled-events")
        .event_bus_name(&bus)
        .targets(target)
        .send()
        .await
        .expect("target the queue");
    (bridge, bus)
}

/// One System Log event as Okta Log Streaming puts it on the bus.
pub fn log_streaming_entry(
    bus: &str,
    event: &serde_json::Value,
) -> aws_sdk_eventbridge::types::PutEventsRequestEntry {
    aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source("aws.partner/okta.com/example/okta-port")
        .detail_type("SystemLog")
        .detail(event.to_string())
        .build()
}

/// Creates a fresh queue pair, unique per call so parallel tests never share messages:
/// a dead-letter queue and a main queue that moves a message there after 3 receives.
/// Returns `(queue_url, dlq_url)`.
pub async fn create_queue(client: &aws_sdk_sqs::Client, name_prefix: &str) -> (String, String) {
    let name = unique_name(name_prefix);
    let dlq_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .expect("create the dead-letter queue")
        .queue_url
        .expect("CreateQueue returns the URL");
    let dlq_arn = queue_arn(client, &dlq_url).await;
    let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3" });
    let queue_url = client
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .expect("create the queue")
        .queue_url
        .expect("CreateQueue returns the URL");
    (queue_url, dlq_url)
}

/// `<prefix>-<pid>-<counter>-<millis>`: unique within a moto server shared by several test
/// processes. Queue names allow 80 characters, letters, digits, `-` and `_`.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 100_000_000);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{millis}", std::process::id())
}

/// The moto_server to run: `MOTO_SERVER`, then the repository's `.venv-tools`, then PATH.
fn moto_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return Some(PathBuf::from(path));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent");
    let venv = root.join(".venv-tools/bin/moto_server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.is_file())
}

/// Starts a moto server on a free loopback port for the rest of this process (whatever
/// `AWS_ENDPOINT_URL` says); returns its endpoint. The local-development simulators use it.
pub async fn start_server() -> String {
    start_moto().await
}

async fn start_moto() -> String {
    let binary = moto_binary().unwrap_or_else(|| panic!("moto_server not found. {INSTALL_HINT}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port();
    let log = std::env::temp_dir().join(format!("moto-{}-{port}.log", std::process::id()));
    let exited = spawn_for_process_lifetime(&binary, port, &log);

    let deadline = Instant::now() + Duration::from_secs(30);
    while !moto_answers(port).await {
        if let Some(status) = exited.get() {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "{} exited ({status}) before answering on port {port}:\n{}\n{INSTALL_HINT}",
                binary.display(),
                output.trim_end()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "{} did not answer on port {port} within 30 s; see {}. {INSTALL_HINT}",
                binary.display(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    format!("http://127.0.0.1:{port}")
}

/// Starts moto from a thread that waits on it for as long as it runs. PR_SET_PDEATHSIG
/// fires when the *thread* that forked the child exits, not the process, and test threads
/// (and tokio's blocking threads) come and go; this one ends only after moto does.
/// The returned cell is filled with moto's exit status if it ever exits.
fn spawn_for_process_lifetime(binary: &Path, port: u16, log: &Path) -> Arc<OnceLock<String>> {
    let exited = Arc::new(OnceLock::new());
    let (tx, rx) = std::sync::mpsc::channel();
    let (binary_path, log, exit_cell) = (binary.to_owned(), log.to_owned(), exited.clone());
    std::thread::Builder::new()
        .name("moto-server".into())
        .spawn(move || match spawn_moto(&binary_path, port, &log) {
            Ok(mut child) => {
                tx.send(Ok(())).expect("the test waits for moto");
                let status = child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
                let _ = exit_cell.set(status);
            }
            Err(err) => tx.send(Err(err)).expect("the test waits for moto"),
        })
        .expect("start the moto-server thread");
    if let Err(err) = rx.recv().expect("the moto-server thread answers") {
        panic!("could not start {}: {err}. {INSTALL_HINT}", binary.display());
    }
    exited
}

fn spawn_moto(binary: &Path, port: u16, log: &Path) -> std::io::Result<std::process::Child> {
    let log = std::fs::File::create(log)?;
    let parent = std::process::id() as libc::pid_t;
    let mut command = Command::new(binary);
    command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: runs in the forked child before exec and only makes async-signal-safe calls.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The test process may have died between fork and prctl: then go now.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    command.spawn()
}

/// `GET /moto-api/` answers 200 once the server is up.
async fn moto_answers(port: u16) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request =
            format!("GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        std::io::Result::Ok(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(true))
    )
}
