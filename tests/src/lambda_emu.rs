//! An emulated Lambda runtime: the Runtime API (`/2018-06-01/runtime/...`) served on
//! loopback, and a function binary run as its own process against it, as Lambda runs a
//! `provided.al2023` bootstrap. Tests invoke it with any event, a deadline of their
//! choosing, and read what the function answered, its init error and its log lines.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{Notify, oneshot};

/// What the function answered for one invocation.
#[derive(Debug)]
pub enum Answer {
    /// The handler's result (`/response`).
    Response(Value),
    /// The handler failed (`/error`): a function error, which CloudWatch counts as one.
    Error(Value),
}

impl Answer {
    pub fn response(self) -> Value {
        match self {
            Answer::Response(v) => v,
            Answer::Error(e) => panic!("the function failed: {e}"),
        }
    }
}

struct Pending {
    id: String,
    event: Value,
    deadline_ms: u64,
}

#[derive(Default)]
struct Inner {
    queue: Mutex<VecDeque<Pending>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    init_error: Mutex<Option<Value>>,
    ready: Notify,
    init_failed: Notify,
    seq: Mutex<u64>,
}

/// The Runtime API on loopback.
#[derive(Clone)]
pub struct RuntimeApi {
    /// `127.0.0.1:PORT`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    inner: Arc<Inner>,
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        RuntimeApi { address, inner }
    }

    /// Invokes the function with `event` and a deadline `timeout` from now; waits at most
    /// `timeout` plus a second for its answer (as Lambda would end the invocation).
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Option<Answer> {
        let id = {
            let mut seq = self.inner.seq.lock().unwrap();
            *seq += 1;
            format!("00000000-0000-4000-8000-{:012}", *seq)
        };
        let (tx, rx) = oneshot::channel();
        self.inner.waiting.lock().unwrap().insert(id.clone(), tx);
        let deadline = SystemTime::now() + timeout;
        let deadline_ms = deadline.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        self.inner.queue.lock().unwrap().push_back(Pending {
            id,
            event,
            deadline_ms,
        });
        self.inner.ready.notify_waiters();
        self.inner.ready.notify_one();
        tokio::time::timeout(timeout + Duration::from_secs(1), rx)
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// The init error the function reported, waiting up to `within` for one.
    pub async fn init_error(&self, within: Duration) -> Option<Value> {
        let wait = self.inner.init_failed.notified();
        if let Some(e) = self.inner.init_error.lock().unwrap().clone() {
            return Some(e);
        }
        let _ = tokio::time::timeout(within, wait).await;
        self.inner.init_error.lock().unwrap().clone()
    }
}

async fn next(State(inner): State<Arc<Inner>>) -> Response {
    loop {
        let notified = inner.ready.notified();
        if let Some(p) = inner.queue.lock().unwrap().pop_front() {
            let mut headers = HeaderMap::new();
            let put = |h: &mut HeaderMap, k: &'static str, v: String| {
                h.insert(k, v.parse().expect("header value"));
            };
            put(&mut headers, "lambda-runtime-aws-request-id", p.id);
            put(
                &mut headers,
                "lambda-runtime-deadline-ms",
                p.deadline_ms.to_string(),
            );
            put(
                &mut headers,
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:okta-port-test".into(),
            );
            put(
                &mut headers,
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000".into(),
            );
            return (StatusCode::OK, headers, p.event.to_string()).into_response();
        }
        notified.await;
    }
}

fn parse(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(State(inner): State<Arc<Inner>>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    if let Some(tx) = inner.waiting.lock().unwrap().remove(&id) {
        let _ = tx.send(Answer::Response(parse(&body)));
    }
    StatusCode::ACCEPTED
}

async fn error(State(inner): State<Arc<Inner>>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    if let Some(tx) = inner.waiting.lock().unwrap().remove(&id) {
        let _ = tx.send(Answer::Error(parse(&body)));
    }
    StatusCode::ACCEPTED
}

async fn init_error(State(inner): State<Arc<Inner>>, body: Bytes) -> StatusCode {
    *inner.init_error.lock().unwrap() = Some(parse(&body));
    inner.init_failed.notify_waiters();
    StatusCode::ACCEPTED
}

/// A binary of this workspace (`webhook`, `consumer`, `resync`, `okta-port`), built once per
/// test process as `cargo build --bin` builds it.
pub fn function_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let mut built = BUILT.lock().unwrap();
    if !built.iter().any(|b| b == name) {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--locked", "--bin", name])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
        built.push(name.to_owned());
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("debug")
        .join(name)
}

/// A function process attached to a [`RuntimeApi`]; killed when dropped.
pub struct Function {
    pub runtime: RuntimeApi,
    child: tokio::process::Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Function {
    /// Starts `binary` as Lambda would: the `AWS_LAMBDA_*` variables, and `vars` (nothing
    /// else of this process's environment but `PATH` and `HOME`).
    pub async fn start(binary: &Path, vars: &[(&str, String)]) -> Function {
        let runtime = RuntimeApi::start().await;
        let dir = std::env::temp_dir().join(format!(
            "okta-port-fn-{}-{}",
            std::process::id(),
            runtime.address.replace([':', '.'], "-")
        ));
        std::fs::create_dir_all(&dir).expect("log directory");
        let (stdout, stderr) = (dir.join("stdout.log"), dir.join("stderr.log"));
        let mut command = tokio::process::Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", &runtime.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", "okta-port-test")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/okta-port-test")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .kill_on_drop(true);
        for (k, v) in vars {
            command.env(k, v);
        }
        let child = command.spawn().expect("start the function");
        Function {
            runtime,
            child,
            stdout,
            stderr,
        }
    }

    /// Everything the function wrote so far (stdout, then stderr), as CloudWatch gets it.
    pub fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(&self.stdout), read(&self.stderr))
    }

    /// Whether the process has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `within` for the process to exit on its own.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    pub async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        self.logs()
    }
}

/// A Function URL event (payload format 2.0), as Lambda hands a request to the function.
/// `headers` are taken verbatim, so a test can send what an HTTP library would refuse.
pub fn function_url_event(method: &str, headers: &[(&str, &str)], body: &str) -> Value {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect();
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abc123",
            "domainName": "abc123.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abc123",
            "http": { "method": method, "path": "/", "protocol": "HTTP/1.1",
                      "sourceIp": "203.0.113.7", "userAgent": "Okta Event Hooks" },
            "requestId": "r-1", "routeKey": "$default", "stage": "$default",
            "time": "07/Dec/2026:04:00:00 +0000", "timeEpoch": 1_796_616_000_000_u64
        },
        "body": body,
        "isBase64Encoded": false
    })
}
