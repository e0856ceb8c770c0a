//! docs/development.md's "Local development" section, run as written: the three functions under
//! `cargo lambda watch` (separate processes, built by cargo-lambda), the simulators and an
//! SQS queue on moto's server; a resync invoked with `cargo lambda invoke`, an Okta delivery
//! POSTed to the webhook's local Function URL, the queued messages turned into an SQS event
//! by the `sqs-event` bin and handed to the consumer with `cargo lambda invoke`.
//!
//! Needs cargo-lambda (`.venv-tools/bin` or PATH) and moto. Every wait has a deadline, and
//! `cargo lambda watch` is stopped with SIGINT (its process group is killed if that fails),
//! also when the test panics.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use okta_port_tests::expected;
use okta_port_tests::harness::{self, Env, SAMPLE_WEBHOOK_SECRET, assert_catalog};
use okta_port_tests::moto;
use okta_port_tests::orggen::{OrgSpec, generate, hook_delivery};
use serde_json::Value;

const INSTALL_HINT: &str = "cargo-lambda is needed for the `cargo lambda watch` test. Install it from \
     the repository root with `python3 -m venv .venv-tools; .venv-tools/bin/pip install cargo-lambda`, \
     or put `cargo-lambda` on PATH, or run `.ci/run`";

/// The first build of each function (cold dependencies) may take minutes on 2 cores.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// An invocation of an already built function (includes cargo's freshness check).
const INVOKE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The directory holding `cargo-lambda`: the repository's `.venv-tools/bin`, else PATH.
fn cargo_lambda_dir() -> PathBuf {
    let venv = workspace_root().join(".venv-tools/bin");
    if venv.join("cargo-lambda").is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join("cargo-lambda").is_file()))
        .unwrap_or_else(|| panic!("cargo-lambda not found. {INSTALL_HINT}"))
}

/// PATH with `dir` first: cargo-lambda finds its python and zig there.
fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut dirs = vec![dir.to_owned()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).expect("PATH entries are valid")
}

/// `cargo lambda watch` as a child in its own process group. Dropping it stops it.
struct Watch {
    child: Child,
    log: PathBuf,
}

impl Watch {
    fn start(dir: &Path, port: u16, env_file: &Path, env_keys: &[&str], log: PathBuf) -> Watch {
        let out = std::fs::File::create(&log).expect("create the watch log");
        let mut command = Command::new(dir.join("cargo-lambda"));
        command
            .args([
                "lambda",
                "watch",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
            ])
            .arg(port.to_string())
            .arg("--env-file")
            .arg(env_file)
            .current_dir(workspace_root())
            .env("PATH", path_with(dir))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup the log"))
            .stderr(out)
            .process_group(0);
        // The functions get their settings from the env file alone, as in the README.
        for key in env_keys {
            command.env_remove(key);
        }
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: runs in the forked child before exec and only makes async-signal-safe calls.
        unsafe {
            command.pre_exec(move || {
                // If the test process dies, watch gets the SIGINT it stops cleanly on.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not start cargo lambda watch: {e}. {INSTALL_HINT}"));
        Watch { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Waits until watch accepts connections on `port`.
    async fn wait_listening(&mut self, port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "cargo lambda watch exited ({status}) before listening:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "cargo lambda watch did not listen on port {port} within {timeout:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGINT to watch, as a developer's Ctrl-C; true if it exited within `timeout`.
    fn interrupt(&mut self, timeout: Duration) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid(), libc::SIGINT) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.interrupt(Duration::from_secs(10)) {
            // SAFETY: kill(2) on the process group we created for the child.
            unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
        // The functions are in the same group: make sure none is left behind.
        // SAFETY: as above; ESRCH when the group is already gone.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
    }
}

/// Runs a command to completion within `timeout` (killed on expiry); returns its stdout,
/// panicking with stdout and stderr if it fails.
async fn run(what: &str, command: &mut Command, timeout: Duration) -> String {
    let mut command = tokio::process::Command::from(std::mem::replace(command, Command::new("true")));
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: could not start: {e}"));
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {timeout:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
    stdout
}

fn cargo_lambda_invoke(dir: &Path, port: u16, function: &str, data_file: &Path) -> Command {
    let mut command = Command::new(dir.join("cargo-lambda"));
    command
        .args([
            "lambda",
            "invoke",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
        ])
        .arg(port.to_string())
        .arg(function)
        .arg("--data-file")
        .arg(data_file)
        .current_dir(workspace_root())
        .env("PATH", path_with(dir));
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_functions_under_cargo_lambda_watch_keep_port_in_step() {
    let dir = cargo_lambda_dir();
    let root = workspace_root();

    // Terminal 1 of docs/development.md: moto, the simulators, a queue, the env file.
    let org = generate(&OrgSpec {
        users: 120,
        groups: 10,
        apps: 5,
        seed: 11,
    });
    let env = Env::with_org(org).await;
    let endpoint = moto::sqs_endpoint().await;
    let client = moto::sqs_client(&endpoint).await;
    let (queue_url, _dlq) = moto::create_queue(&client, "lambda-watch").await;
    let variables = env.function_variables(&endpoint, &queue_url);
    let work = std::env::temp_dir().join(format!("okta-port-lambda-watch-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("create the work directory");
    let env_file = work.join("sim.env");
    std::fs::write(&env_file, harness::env_file_text(&variables)).expect("write the env file");

    // Build each function as watch does (`cargo run --bin <name>`), so that the first
    // invocations below only wait for cargo's freshness check.
    for bin in ["resync", "webhook", "consumer"] {
        run(
            &format!("cargo build --bin {bin}"),
            Command::new(env!("CARGO"))
                .args(["build", "--bin", bin])
                .current_dir(&root),
            BUILD_TIMEOUT,
        )
        .await;
    }

    // Terminal 3: cargo lambda watch with the env file.
    let port = harness::free_port();
    let keys: Vec<&str> = variables.iter().map(|(k, _)| *k).collect();
    let mut watch = Watch::start(&dir, port, &env_file, &keys, work.join("watch.log"));
    watch.wait_listening(port, Duration::from_secs(60)).await;

    // The resync, with the scheduler's sample event: the whole catalog lands in Port.
    let out = run(
        "cargo lambda invoke resync",
        &mut cargo_lambda_invoke(&dir, port, "resync", &root.join("events/resync-scheduler.json")),
        INVOKE_TIMEOUT,
    )
    .await;
    let report: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("the resync's answer is not JSON ({e}): {out}"));
    assert!(report.is_object(), "{report}");
    let expected_catalog = env.okta.with_org(|org| expected::catalog(org));
    assert_catalog(&env.catalog(), &expected_catalog);

    // The webhook's local Function URL: Okta's verification challenge, then a delivery.
    let url = format!("http://127.0.0.1:{port}/lambda-url/webhook/");
    let http = reqwest::Client::builder()
        .timeout(INVOKE_TIMEOUT)
        .build()
        .expect("HTTP client");
    let challenge = http
        .get(&url)
        .header("x-okta-verification-challenge", "local-challenge")
        .header("authorization", SAMPLE_WEBHOOK_SECRET)
        .send()
        .await
        .expect("the webhook answers the challenge");
    assert_eq!(challenge.status(), 200);
    let body: Value = challenge.json().await.expect("the challenge answer is JSON");
    assert_eq!(body["verification"], "local-challenge");

    let events = env.okta.with_org(|org| harness::local_dev_changes(org, 1));
    assert!(!events.is_empty());
    let delivery = hook_delivery(&events, 1);
    let refused = http
        .post(&url)
        .header("content-type", "application/json")
        .body(delivery.to_string())
        .send()
        .await
        .expect("the webhook answers");
    assert_eq!(refused.status(), 401, "a delivery without the secret");
    let accepted = http
        .post(&url)
        .header("content-type", "application/json")
        .header("authorization", SAMPLE_WEBHOOK_SECRET)
        .body(delivery.to_string())
        .send()
        .await
        .expect("the webhook answers");
    let status = accepted.status();
    assert_eq!(status, 200, "{}", accepted.text().await.unwrap_or_default());

    // The queued events as an SQS event, through the sqs-event bin, to the consumer.
    let event_file = work.join("sqs-event.json");
    run(
        "sqs-event",
        Command::new(env!("CARGO_BIN_EXE_sqs-event"))
            .arg("--env-file")
            .arg(&env_file)
            .arg("--out")
            .arg(&event_file)
            .env_remove("EVENTS_QUEUE_URL")
            .env_remove("AWS_ENDPOINT_URL"),
        Duration::from_secs(60),
    )
    .await;
    let sqs_event: Value =
        serde_json::from_str(&std::fs::read_to_string(&event_file).expect("the event file")).expect("JSON");
    let records = sqs_event["Records"].as_array().expect("Records");
    assert_eq!(records.len(), events.len(), "one message per event: {sqs_event}");
    let out = run(
        "cargo lambda invoke consumer",
        &mut cargo_lambda_invoke(&dir, port, "consumer", &event_file),
        INVOKE_TIMEOUT,
    )
    .await;
    let answer: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("the consumer's answer is not JSON ({e}): {out}"));
    let failures = answer["batchItemFailures"].as_array().map_or(0, Vec::len);
    assert_eq!(failures, 0, "the consumer reported failures: {answer}");

    // Port now matches the changed org.
    let expected_catalog = env.okta.with_org(|org| expected::catalog(org));
    assert_catalog(&env.catalog(), &expected_catalog);
    // The queue is empty: sqs-event deleted what it handed over.
    let left = okta_port::queue::Sqs::new(client, queue_url)
        .receive(10, 0)
        .await
        .expect("receive");
    assert!(left.is_empty(), "messages left on the queue: {left:?}");

    // Ctrl-C stops watch and its functions.
    assert!(
        watch.interrupt(Duration::from_secs(20)),
        "cargo lambda watch did not stop on SIGINT:\n{}",
        watch.log_text()
    );
    drop(watch);
    let _ = std::fs::remove_dir_all(&work);
}
