//! Okta Management API simulator serving an [`Org`] over real HTTP on 127.0.0.1.
//!
//! It mimics what a sync client meets in production: SSWS auth, Okta error bodies,
//! per-endpoint fixed-window rate limits with the `X-Rate-Limit-*` headers, a concurrency
//! limit, cursor pagination through `Link` headers, and injectable transient faults.
//! It also manages event hooks (`/api/v1/eventHooks`), verifying them against the
//! configured endpoint for real. Besides SSWS it is an org authorization server for OAuth
//! service apps (`POST /oauth2/v1/token`, private_key_jwt, DPoP) and checks their tokens,
//! proofs and scopes on every call: see [`oauth`].

mod oauth;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::orggen::{ACTOR_ID, Org, okta_time};
pub use oauth::{OAuthSimConfig, SimClient, TOKEN_PATH};

/// How the simulator behaves; see [`Default`] for the friendly settings.
#[derive(Clone, Debug)]
pub struct OktaSimConfig {
    /// Expected in `Authorization: SSWS <token>`.
    pub token: String,
    /// Share (0..1) of requests answered with a transient 500 or 503.
    pub fault_rate: f64,
    /// Added to every response.
    pub latency: Duration,
    /// Seeds the fault RNG so fault sequences are reproducible.
    pub seed: u64,
    /// More simultaneous requests than this are answered 429 (0 = unlimited).
    pub max_in_flight: usize,
    /// Whether the token may change event hooks; without it every non-GET eventHooks
    /// request is answered 403 (listing and reading stay allowed).
    pub manage_hooks: bool,
    /// The org authorization server: registered service apps, DPoP, token lifetime.
    pub oauth: OAuthSimConfig,
}

impl Default for OktaSimConfig {
    fn default() -> Self {
        OktaSimConfig {
            token: "test-okta-token".to_owned(),
            fault_rate: 0.0,
            latency: Duration::ZERO,
            seed: 0,
            max_in_flight: 75,
            manage_hooks: true,
            oauth: OAuthSimConfig::default(),
        }
    }
}

/// Rate-limit buckets, one fixed window each (Okta limits per endpoint family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    UsersList,
    UserById,
    GroupsList,
    GroupById,
    GroupUsers,
    /// All of `/api/v1/apps*`.
    Apps,
    EventHooks,
    /// `/api/v1/logs`, the System Log.
    Logs,
    Other,
}

/// Forces `status` on requests whose path starts with `path_prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    pub path_prefix: String,
    pub status: u16,
    /// How many more requests to fault; `None` = forever.
    pub times: Option<u32>,
}

/// Request counters since start or the last [`OktaSim::reset_calls`].
#[derive(Clone, Debug, Default)]
pub struct OktaCalls {
    pub total: u64,
    /// Keys: "users.list" (including the `status eq "DEPROVISIONED"` search),
    /// "users.search" (every other search), "users.get", "users.groups", "groups.list",
    /// "groups.get", "groups.users", "apps.list", "apps.list_by_user" (the `user.id eq`
    /// filter), "apps.get", "apps.users", "eventHooks", "other".
    pub by_endpoint: BTreeMap<String, u64>,
    /// Every 429 answered (rate limit, concurrency limit or a 429 fault rule).
    pub rate_limited_429: u64,
    pub faults_injected: u64,
    /// Answers broken off after the request was carried out (see `break_answers`).
    pub broken_answers: u64,
    /// When each 429 of a [`OktaSim::throttle_bare`] window was answered.
    pub bare_429s_at: Vec<Instant>,
    /// Writes refused 411 for want of a Content-Length.
    pub length_required_411: u64,
    pub max_in_flight_seen: usize,
    /// `POST /oauth2/v1/token` requests (nonce round trips and refusals included).
    pub token_requests: u64,
    /// Access tokens issued.
    pub tokens_issued: u64,
    /// API calls refused 401 for an OAuth token (unknown, expired, bad DPoP proof), with why.
    pub token_refusals: Vec<String>,
    /// API calls refused 403 because the token lacked the scope, with the scope.
    pub scope_denials: Vec<String>,
}

impl OktaCalls {
    /// Count for one endpoint key (0 when never called).
    pub fn get(&self, endpoint: &str) -> u64 {
        self.by_endpoint.get(endpoint).copied().unwrap_or(0)
    }
}

/// Handle on a running simulator; clones share it, and the server stops once the last
/// clone is dropped.
#[derive(Clone)]
pub struct OktaSim {
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    shared: Arc<Shared>,
    _server: Arc<ServerTask>,
}

struct ServerTask(AbortHandle);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl OktaSim {
    pub async fn start(org: Org, config: OktaSimConfig) -> OktaSim {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Okta simulator on loopback");
        let addr = listener.local_addr().expect("local address");
        let base_url = format!("http://{addr}");
        let shared = Arc::new(Shared {
            base_url: base_url.clone(),
            auth: format!("SSWS {}", config.token),
            latency: config.latency,
            fault_rate: config.fault_rate.clamp(0.0, 1.0),
            max_in_flight: if config.max_in_flight == 0 {
                usize::MAX
            } else {
                config.max_in_flight
            },
            in_flight: AtomicUsize::new(0),
            manage_hooks: config.manage_hooks,
            oauth: config.oauth.clone(),
            http: reqwest::Client::builder()
                .timeout(VERIFICATION_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("build the event hook verification client"),
            state: Mutex::new(SimState {
                org,
                index: None,
                seqs: Seqs::default(),
                rng: StdRng::seed_from_u64(config.seed),
                calls: OktaCalls::default(),
                buckets: HashMap::new(),
                faults: Vec::new(),
                broken_answers: Vec::new(),
                bare_throttle_until: None,
                hooks: Vec::new(),
                hook_ids: StdRng::seed_from_u64(config.seed ^ 0x600C),
                oauth: oauth::OAuthState::default(),
            }),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("okta simulator stopped: {e}");
            }
        });
        OktaSim {
            base_url,
            shared,
            _server: Arc::new(ServerTask(task.abort_handle())),
        }
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Reads or mutates the live org; the next request sees the change.
    pub fn with_org<R>(&self, f: impl FnOnce(&mut Org) -> R) -> R {
        let mut state = self.shared.lock();
        // Invalidate first so that even a panicking `f` cannot leave a stale index.
        state.index = None;
        f(&mut state.org)
    }

    pub fn calls(&self) -> OktaCalls {
        self.shared.lock().calls.clone()
    }

    pub fn reset_calls(&self) {
        self.shared.lock().calls = OktaCalls::default();
    }

    /// Every OAuth access token issued so far (to check they never reach a log).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().oauth.issued_tokens()
    }

    /// Every OAuth access token issued so far expires now (the next call with one gets 401).
    pub fn expire_tokens(&self) {
        self.shared.lock().oauth.expire_all();
    }

    /// Every OAuth access token issued so far expires once `calls` more API calls were
    /// authorized with OAuth tokens.
    pub fn expire_tokens_after(&self, calls: u64) {
        self.shared.lock().oauth.expire_tokens_after(calls.max(1));
    }

    /// Replaces the bucket's limit and starts a fresh window now.
    pub fn set_rate_limit(&self, bucket: Bucket, limit: u32, window: Duration) {
        self.shared
            .lock()
            .buckets
            .insert(bucket, Window::new(limit, window));
    }

    pub fn add_fault(&self, rule: FaultRule) {
        self.shared.lock().faults.push(rule);
    }

    /// The next `times` requests of `method` whose path starts with `path_prefix` are
    /// carried out (their side effects happen), then their answers break off half-way.
    pub fn break_answers(&self, method: &str, path_prefix: &str, times: u32) {
        let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        self.shared
            .lock()
            .broken_answers
            .push((method, path_prefix.to_owned(), times));
    }

    /// For `window` from now, every API call is answered 429 with no rate-limit header
    /// (an edge throttle that says nothing of when to come back).
    pub fn throttle_bare(&self, window: Duration) {
        self.shared.lock().bare_throttle_until = Some(Instant::now() + window);
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The event hooks as `GET /api/v1/eventHooks` shows them (no secret values).
    pub fn hooks(&self) -> Vec<Value> {
        let state = self.shared.lock();
        state.hooks.iter().map(|h| h.render(&self.base_url)).collect()
    }

    /// `(header name, value)` of the hook's auth scheme: the value the API never returns.
    pub fn hook_secret(&self, id: &str) -> Option<(String, String)> {
        let state = self.shared.lock();
        let hook = state.hooks.iter().find(|h| h.id() == id)?;
        let key = hook.object["channel"]["config"]["authScheme"]["key"].as_str()?;
        Some((key.to_owned(), hook.secret.clone()?))
    }

    /// Adds `n` unrelated ACTIVE and VERIFIED hooks (other integrations of the org), e.g.
    /// to run into the limit of 25.
    pub fn seed_hooks(&self, n: usize) {
        let mut state = self.shared.lock();
        for k in 0..n {
            let id = state.new_hook_id();
            let now = okta_time(chrono::Utc::now());
            let object = json!({
                "id": id,
                "status": "ACTIVE",
                "verificationStatus": "VERIFIED",
                "name": format!("Unrelated integration {k}"),
                "description": null,
                "created": now,
                "createdBy": ACTOR_ID,
                "lastUpdated": now,
                "events": {"type": "EVENT_TYPE", "items": ["user.lifecycle.create"], "filter": null},
                "channel": {
                    "type": "HTTP",
                    "version": "1.0.0",
                    "config": {
                        "uri": format!("https://hooks.example.net/integration/{k}"),
                        "headers": [],
                        "method": "POST",
                        "authScheme": {"type": "HEADER", "key": "Authorization"},
                    },
                },
            });
            let secret = Some(format!("unrelated-secret-{k}"));
            state.hooks.push(Hook { object, secret });
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server state
// ---------------------------------------------------------------------------------------

struct Shared {
    base_url: String,
    auth: String,
    latency: Duration,
    fault_rate: f64,
    max_in_flight: usize,
    in_flight: AtomicUsize,
    manage_hooks: bool,
    oauth: OAuthSimConfig,
    /// Calls hook endpoints to verify them.
    http: reqwest::Client,
    state: Mutex<SimState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panicking test closure must not wedge the server for everyone else.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct SimState {
    org: Org,
    /// Lookup tables over `org`; `None` after a mutation, rebuilt on the next request.
    index: Option<Index>,
    seqs: Seqs,
    rng: StdRng,
    calls: OktaCalls,
    buckets: HashMap<Bucket, Window>,
    faults: Vec<FaultRule>,
    /// (method, path prefix, answers left to break).
    broken_answers: Vec<(Method, String, u32)>,
    /// Until then, every API call is answered 429 without rate-limit headers.
    bare_throttle_until: Option<Instant>,
    /// Event hooks in creation order.
    hooks: Vec<Hook>,
    /// Draws hook ids (separate from the fault RNG so hooks do not shift fault sequences).
    hook_ids: StdRng,
    oauth: oauth::OAuthState,
}

/// Creation sequence numbers, never forgotten (even for deleted objects), so a cursor
/// naming the last id seen stays valid while the org changes underneath.
#[derive(Default)]
struct Seqs {
    users: SeqMap,
    groups: SeqMap,
    apps: SeqMap,
}

#[derive(Default)]
struct SeqMap {
    seq: HashMap<String, u64>,
    next: u64,
}

impl SeqMap {
    /// `(seq, position)` of every item, in creation order.
    fn order(&mut self, items: &[Value]) -> Vec<(u64, usize)> {
        let mut order: Vec<(u64, usize)> = items
            .iter()
            .enumerate()
            .map(|(pos, item)| {
                let id = id_of(item);
                let seq = match self.seq.get(id) {
                    Some(&s) => s,
                    None => {
                        self.next += 1;
                        self.seq.insert(id.to_owned(), self.next);
                        self.next
                    }
                };
                (seq, pos)
            })
            .collect();
        order.sort_unstable();
        order
    }

    /// Index into `order` of the first item created after the cursor's item.
    fn start_after(&self, order: &[(u64, usize)], after: Option<&str>) -> Result<usize, Reply> {
        let Some(after) = after else { return Ok(0) };
        let seq = self.seq.get(after).ok_or_else(|| {
            Reply::error(
                StatusCode::BAD_REQUEST,
                "E0000001",
                "Api validation failed: after",
            )
        })?;
        Ok(order.partition_point(|&(s, _)| s <= *seq))
    }
}

struct Index {
    users: Vec<(u64, usize)>,
    groups: Vec<(u64, usize)>,
    apps: Vec<(u64, usize)>,
    user_pos: HashMap<String, usize>,
    /// Lower-cased login -> position (users can be fetched by login).
    login_pos: HashMap<String, usize>,
    group_pos: HashMap<String, usize>,
    app_pos: HashMap<String, usize>,
    /// Memoized `Org::app_users`, so paging a huge app stays linear.
    app_users: HashMap<String, Arc<Vec<(String, &'static str)>>>,
}

impl Index {
    fn build(org: &Org, seqs: &mut Seqs) -> Index {
        let positions = |items: &[Value]| -> HashMap<String, usize> {
            items
                .iter()
                .enumerate()
                .map(|(pos, v)| (id_of(v).to_owned(), pos))
                .collect()
        };
        Index {
            users: seqs.users.order(&org.users),
            groups: seqs.groups.order(&org.groups),
            apps: seqs.apps.order(&org.apps),
            user_pos: positions(&org.users),
            login_pos: org
                .users
                .iter()
                .enumerate()
                .filter_map(|(pos, u)| Some((u["profile"]["login"].as_str()?.to_lowercase(), pos)))
                .collect(),
            group_pos: positions(&org.groups),
            app_pos: positions(&org.apps),
            app_users: HashMap::new(),
        }
    }

    fn user(&self, key: &str) -> Option<usize> {
        self.user_pos
            .get(key)
            .or_else(|| self.login_pos.get(&key.to_lowercase()))
            .copied()
    }
}

/// Fixed rate-limit window of one bucket.
struct Window {
    limit: u32,
    length: Duration,
    started: Instant,
    started_wall: SystemTime,
    used: u32,
}

impl Window {
    fn new(limit: u32, length: Duration) -> Window {
        Window {
            limit,
            length,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            used: 0,
        }
    }

    /// Generous default: effectively unlimited for tests that do not care.
    fn generous() -> Window {
        Window::new(10_000, Duration::from_secs(60))
    }

    fn roll(&mut self) {
        if self.started.elapsed() >= self.length {
            *self = Window::new(self.limit, self.length);
        }
    }

    fn headers(&self) -> RateHeaders {
        // Rounded up: a client sleeping until this second finds the window renewed.
        let end = (self.started_wall + self.length)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let reset = end.as_secs() + u64::from(end.subsec_nanos() > 0);
        RateHeaders {
            limit: self.limit,
            remaining: self.limit.saturating_sub(self.used),
            reset,
            bare: false,
        }
    }
}

#[derive(Clone, Copy)]
struct RateHeaders {
    limit: u32,
    remaining: u32,
    reset: u64,
    /// Send none of them (a 429 from a proxy or the concurrency limit says nothing).
    bare: bool,
}

impl RateHeaders {
    /// Used when no bucket window applies (concurrency limit, injected 429).
    fn exhausted() -> RateHeaders {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        RateHeaders {
            limit: 0,
            remaining: 0,
            reset: now.as_secs() + 1,
            bare: false,
        }
    }

    /// No rate-limit headers at all.
    fn bare() -> RateHeaders {
        RateHeaders {
            bare: true,
            ..RateHeaders::exhausted()
        }
    }
}

struct Reply {
    status: StatusCode,
    body: Value,
    links: Vec<String>,
    /// Cut the body off half-way (the request was carried out): a broken connection.
    truncate: bool,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body,
            links: Vec::new(),
            truncate: false,
        }
    }

    /// Okta's error body shape.
    fn error(status: StatusCode, code: &str, summary: &str) -> Reply {
        let error_id = format!("oae{}", Alphanumeric.sample_string(&mut rand::rng(), 22));
        Reply {
            status,
            body: json!({
                "errorCode": code,
                "errorSummary": summary,
                "errorLink": code,
                "errorId": error_id,
                "errorCauses": [],
            }),
            links: Vec::new(),
            truncate: false,
        }
    }

    fn not_found(id: &str, kind: &str) -> Reply {
        Reply::error(
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {id} ({kind})"),
        )
    }

    fn rate_limited() -> Reply {
        Reply::error(
            StatusCode::TOO_MANY_REQUESTS,
            "E0000047",
            "API call exceeded rate limit due to too many requests.",
        )
    }

    /// The error Okta sends with a given status (used by injected faults).
    fn for_status(status: u16, path: &str) -> Reply {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match status {
            400 => Reply::error(code, "E0000001", "Api validation failed"),
            401 => Reply::error(code, "E0000011", "Invalid token provided"),
            403 => Reply::error(
                code,
                "E0000006",
                "You do not have permission to perform the requested action",
            ),
            404 => Reply::not_found(path, "Route"),
            429 => Reply::rate_limited(),
            503 => Reply::error(code, "E0000009", "Service Unavailable"),
            _ => Reply::error(code, "E0000009", "Internal Server Error"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------

enum Route {
    UsersList,
    User(String),
    UserGroups(String),
    GroupsList,
    Group(String),
    GroupUsers(String),
    AppsList,
    App(String),
    AppUsers(String),
    EventHooks,
    EventHook(String),
    HookLifecycle(String, HookAction),
    Logs,
    Other,
}

#[derive(Clone, Copy)]
enum HookAction {
    Verify,
    Activate,
    Deactivate,
}

impl Route {
    fn parse(path: &str) -> Route {
        let Some(rest) = path.strip_prefix("/api/v1/") else {
            return Route::Other;
        };
        let segments: Vec<String> = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let id = |i: usize| segments[i].clone();
        match segments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["users"] => Route::UsersList,
            ["users", _] => Route::User(id(1)),
            ["users", _, "groups"] => Route::UserGroups(id(1)),
            ["groups"] => Route::GroupsList,
            ["groups", _] => Route::Group(id(1)),
            ["groups", _, "users"] => Route::GroupUsers(id(1)),
            ["apps"] => Route::AppsList,
            ["apps", _] => Route::App(id(1)),
            ["apps", _, "users"] => Route::AppUsers(id(1)),
            ["logs"] => Route::Logs,
            ["eventHooks"] => Route::EventHooks,
            ["eventHooks", _] => Route::EventHook(id(1)),
            ["eventHooks", _, "lifecycle", action] => {
                let action = match action {
                    "verify" => HookAction::Verify,
                    "activate" => HookAction::Activate,
                    "deactivate" => HookAction::Deactivate,
                    _ => return Route::Other,
                };
                Route::HookLifecycle(id(1), action)
            }
            _ => Route::Other,
        }
    }

    /// The endpoint key counted in [`OktaCalls::by_endpoint`]; some depend on the query.
    fn kind(&self, query: Option<&HashMap<String, String>>) -> &'static str {
        let param = |name: &str| query.and_then(|q| q.get(name));
        match self {
            Route::UsersList => match param("search") {
                // The resync's DEPROVISIONED search is part of listing the users.
                Some(s) if is_deprovisioned_search(s) => "users.list",
                Some(_) => "users.search",
                None => "users.list",
            },
            Route::User(_) => "users.get",
            Route::UserGroups(_) => "users.groups",
            Route::GroupsList => "groups.list",
            Route::Group(_) => "groups.get",
            Route::GroupUsers(_) => "groups.users",
            Route::AppsList => match param("filter").and_then(|f| parse_user_filter(f)) {
                Some(_) => "apps.list_by_user",
                None => "apps.list",
            },
            Route::App(_) => "apps.get",
            Route::AppUsers(_) => "apps.users",
            Route::EventHooks | Route::EventHook(_) | Route::HookLifecycle(..) => "eventHooks",
            Route::Logs => "logs",
            Route::Other => "other",
        }
    }

    fn bucket(&self, path: &str) -> Bucket {
        match self {
            Route::UsersList => Bucket::UsersList,
            Route::User(_) | Route::UserGroups(_) => Bucket::UserById,
            Route::GroupsList => Bucket::GroupsList,
            Route::Group(_) => Bucket::GroupById,
            Route::GroupUsers(_) => Bucket::GroupUsers,
            Route::AppsList | Route::App(_) | Route::AppUsers(_) => Bucket::Apps,
            Route::EventHooks | Route::EventHook(_) | Route::HookLifecycle(..) => Bucket::EventHooks,
            Route::Other if path.starts_with("/api/v1/apps") => Bucket::Apps,
            Route::Other if path.starts_with("/api/v1/eventHooks") => Bucket::EventHooks,
            Route::Logs => Bucket::Logs,
            Route::Other => Bucket::Other,
        }
    }

    /// The OAuth scope a call needs, and one that also does.
    fn scope(&self, method: &Method) -> Option<(&'static str, Option<&'static str>)> {
        match self {
            Route::UsersList | Route::User(_) | Route::UserGroups(_) => Some(("okta.users.read", None)),
            Route::GroupsList | Route::Group(_) | Route::GroupUsers(_) => Some(("okta.groups.read", None)),
            Route::AppsList | Route::App(_) | Route::AppUsers(_) => Some(("okta.apps.read", None)),
            Route::EventHooks | Route::EventHook(_) | Route::HookLifecycle(..) if method == Method::GET => {
                Some(("okta.eventHooks.read", Some("okta.eventHooks.manage")))
            }
            Route::EventHooks | Route::EventHook(_) | Route::HookLifecycle(..) => {
                Some(("okta.eventHooks.manage", None))
            }
            Route::Logs => Some(("okta.logs.read", None)),
            Route::Other => None,
        }
    }

    fn is_hook(&self) -> bool {
        matches!(
            self,
            Route::EventHooks | Route::EventHook(_) | Route::HookLifecycle(..)
        )
    }

    /// Only the event hook routes take more than GET; the rest of the API is read here.
    fn allows(&self, method: &Method) -> bool {
        match self {
            Route::EventHooks => [Method::GET, Method::POST].contains(method),
            Route::EventHook(_) => [Method::GET, Method::PUT, Method::DELETE].contains(method),
            Route::HookLifecycle(..) => method == Method::POST,
            _ => method == Method::GET,
        }
    }
}

/// Decrements the in-flight counter however the request ends (even if the client hangs up).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a request needs once the state lock is released.
enum Outcome {
    Reply(Reply),
    /// Call the hook's endpoint (without holding the lock), then record the result.
    Verify(Verification),
}

struct Verification {
    hook_id: String,
    uri: String,
    /// The channel's headers and its auth header, sent with the challenge as Okta does.
    headers: Vec<(String, String)>,
}

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&shared.in_flight);
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    let (parts, body) = req.into_parts();
    // Okta's front end answers 411 to a write that says nothing of its body's length.
    let writes = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    let sized = parts.headers.contains_key(header::CONTENT_LENGTH)
        || parts.headers.contains_key(header::TRANSFER_ENCODING);
    if writes && !sized {
        shared.lock().calls.length_required_411 += 1;
        return axum::response::IntoResponse::into_response((StatusCode::LENGTH_REQUIRED, "Length Required"));
    }
    // An unreadable body is left empty; routes that need one then answer 400.
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    if parts.uri.path() == TOKEN_PATH {
        return token_endpoint(&shared, &parts.method, &parts.headers, &body);
    }
    let (outcome, rate) = shared.lock().serve(
        &shared,
        in_flight,
        &parts.method,
        &parts.uri,
        &parts.headers,
        &body,
    );
    let reply = match outcome {
        Outcome::Reply(reply) => reply,
        Outcome::Verify(v) => {
            let result = verify(&shared.http, &v).await;
            shared
                .lock()
                .finish_verification(&shared.base_url, &v.hook_id, result)
        }
    };
    respond(reply, rate)
}

impl SimState {
    fn serve(
        &mut self,
        cfg: &Shared,
        in_flight: usize,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (Outcome, RateHeaders) {
        let done = |reply: Reply, rate: RateHeaders| (Outcome::Reply(reply), rate);
        let path = uri.path();
        let route = Route::parse(path);
        let bucket = route.bucket(path);
        let query = Query::<HashMap<String, String>>::try_from_uri(uri)
            .ok()
            .map(|Query(q)| q);
        self.calls.total += 1;
        *self
            .calls
            .by_endpoint
            .entry(route.kind(query.as_ref()).to_owned())
            .or_default() += 1;
        self.calls.max_in_flight_seen = self.calls.max_in_flight_seen.max(in_flight);

        if in_flight > cfg.max_in_flight {
            self.calls.rate_limited_429 += 1;
            return done(Reply::rate_limited(), RateHeaders::exhausted());
        }
        let window = self.buckets.entry(bucket).or_insert_with(Window::generous);
        window.roll();
        let rate = window.headers();

        // Faults come before anything else, as a flaky proxy or node would.
        if self
            .bare_throttle_until
            .is_some_and(|until| Instant::now() < until)
        {
            self.calls.rate_limited_429 += 1;
            self.calls.bare_429s_at.push(Instant::now());
            return done(Reply::for_status(429, path), RateHeaders::bare());
        }
        let truncate = self.take_broken_answer(method, path);
        match self.take_fault(path, cfg.fault_rate) {
            None => {}
            Some(Fault::BARE_429) => {
                self.calls.faults_injected += 1;
                self.calls.rate_limited_429 += 1;
                return done(Reply::for_status(429, path), RateHeaders::bare());
            }
            Some(status) => {
                self.calls.faults_injected += 1;
                if status == 429 {
                    self.calls.rate_limited_429 += 1;
                    return done(Reply::for_status(status, path), RateHeaders::exhausted());
                }
                return done(Reply::for_status(status, path), rate);
            }
        }
        if oauth::OAuthState::is_oauth(headers) {
            match self
                .oauth
                .check_call(&cfg.base_url, method, path, headers, route.scope(method))
            {
                Ok(()) => {}
                Err(oauth::Denied::Unauthorized(why)) => {
                    self.calls.token_refusals.push(why);
                    let reply = Reply::error(StatusCode::UNAUTHORIZED, "E0000011", "Invalid token provided");
                    return done(reply, rate);
                }
                Err(oauth::Denied::Forbidden(scope)) => {
                    self.calls.scope_denials.push(scope);
                    return done(Reply::for_status(403, path), rate);
                }
            }
        } else if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v != cfg.auth)
        {
            let reply = Reply::error(StatusCode::UNAUTHORIZED, "E0000011", "Invalid token provided");
            return done(reply, rate);
        }
        let window = self.buckets.entry(bucket).or_insert_with(Window::generous);
        if window.used >= window.limit {
            self.calls.rate_limited_429 += 1;
            return done(Reply::rate_limited(), window.headers());
        }
        window.used += 1;
        let rate = window.headers();

        if !route.allows(method) {
            let reply = Reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "E0000022",
                "The endpoint does not support the provided HTTP method",
            );
            return done(reply, rate);
        }
        if route.is_hook() {
            if method != Method::GET && !cfg.manage_hooks {
                return done(Reply::for_status(403, path), rate);
            }
            let mut outcome = self
                .serve_hooks(&cfg.base_url, method, &route, body)
                .unwrap_or_else(Outcome::Reply);
            if let Outcome::Reply(reply) = &mut outcome {
                reply.truncate = truncate;
            }
            return (outcome, rate);
        }
        let Some(query) = query else {
            let reply = Reply::error(
                StatusCode::BAD_REQUEST,
                "E0000001",
                "Api validation failed: query",
            );
            return done(reply, rate);
        };
        let mut reply = self
            .dispatch(&cfg.base_url, path, &route, &query)
            .unwrap_or_else(|e| e);
        reply.truncate = truncate;
        done(reply, rate)
    }

    /// Whether to break this request's answer off (see [`OktaSim::break_answers`]).
    fn take_broken_answer(&mut self, method: &Method, path: &str) -> bool {
        let Some(rule) = self
            .broken_answers
            .iter_mut()
            .find(|(m, prefix, left)| m == method && path.starts_with(prefix.as_str()) && *left > 0)
        else {
            return false;
        };
        rule.2 -= 1;
        self.calls.faults_injected += 1;
        self.calls.broken_answers += 1;
        true
    }

    /// Status to force on this request, from the rules first, then the random rate.
    /// (`Fault::BARE_429` is a code, not a status.)
    fn take_fault(&mut self, path: &str, fault_rate: f64) -> Option<u16> {
        let hit = self
            .faults
            .iter_mut()
            .find(|r| path.starts_with(&r.path_prefix) && r.times != Some(0));
        if let Some(rule) = hit {
            let status = rule.status;
            if let Some(times) = rule.times.as_mut() {
                *times -= 1;
            }
            self.faults.retain(|r| r.times != Some(0));
            return Some(status);
        }
        if fault_rate > 0.0 && self.rng.random_bool(fault_rate) {
            // A bare 429 too: Okta's edge answers some throttles without rate-limit headers.
            return Some([500, 503, Fault::BARE_429][self.rng.random_range(0..3)]);
        }
        None
    }

    fn dispatch(
        &mut self,
        base: &str,
        path: &str,
        route: &Route,
        query: &HashMap<String, String>,
    ) -> Result<Reply, Reply> {
        if self.index.is_none() {
            self.index = Some(Index::build(&self.org, &mut self.seqs));
        }
        let idx = self.index.as_mut().expect("index was just built");
        let org = &self.org;
        let after = query.get("after").map(String::as_str);
        let pager = |limit: usize, extra: String| Pager {
            base,
            path,
            limit,
            extra,
            after,
        };
        match route {
            Route::UsersList => {
                let expr = query.get("search").or_else(|| query.get("filter"));
                let (clauses, extra) = match expr {
                    None => (None, String::new()),
                    Some(e) => {
                        let key = if query.contains_key("search") {
                            "search"
                        } else {
                            "filter"
                        };
                        let clauses = parse_user_search(e).ok_or_else(|| {
                            Reply::error(StatusCode::BAD_REQUEST, "E0000031", "Invalid search criteria.")
                        })?;
                        (Some(clauses), format!("&{key}={}", percent_encode(e)))
                    }
                };
                let pager = pager(page_limit(query, 200, 200), extra);
                let start = self.seqs.users.start_after(&idx.users, after)?;
                // Only the plain listing leaves DEPROVISIONED users out; searches match all.
                let wanted = |u: &&Value| match &clauses {
                    None => u["status"] != "DEPROVISIONED",
                    Some(list) => list.iter().any(|c| c.matches(u)),
                };
                let users = idx.users[start..]
                    .iter()
                    .map(|&(_, pos)| &org.users[pos])
                    .filter(wanted);
                Ok(pager.page(users, |u| id_of(u).to_owned(), |v| (*v).clone()))
            }
            Route::User(key) => {
                let pos = idx.user(key).ok_or_else(|| Reply::not_found(key, "User"))?;
                Ok(Reply::ok(org.users[pos].clone()))
            }
            Route::UserGroups(key) => {
                let pos = idx.user(key).ok_or_else(|| Reply::not_found(key, "User"))?;
                let uid = id_of(&org.users[pos]);
                let groups: Vec<Value> = org
                    .groups
                    .iter()
                    .filter(|g| org.group_members.get(id_of(g)).is_some_and(|m| m.contains(uid)))
                    .cloned()
                    .collect();
                Ok(Reply::ok(Value::Array(groups)))
            }
            Route::GroupsList => {
                let pager = pager(page_limit(query, 10_000, 10_000), String::new());
                let start = self.seqs.groups.start_after(&idx.groups, after)?;
                let groups = idx.groups[start..].iter().map(|&(_, pos)| &org.groups[pos]);
                Ok(pager.page(groups, |g| id_of(g).to_owned(), |v| (*v).clone()))
            }
            Route::Group(id) => {
                let pos = idx
                    .group_pos
                    .get(id)
                    .ok_or_else(|| Reply::not_found(id, "UserGroup"))?;
                Ok(Reply::ok(org.groups[*pos].clone()))
            }
            Route::GroupUsers(id) => {
                if !idx.group_pos.contains_key(id) {
                    return Err(Reply::not_found(id, "UserGroup"));
                }
                let pager = pager(page_limit(query, 1000, 1000), String::new());
                let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
                let members = org
                    .group_members
                    .get(id)
                    .into_iter()
                    .flat_map(|m| m.range::<str, _>((lower, Bound::Unbounded)))
                    .filter_map(|uid| idx.user_pos.get(uid).map(|&pos| &org.users[pos]));
                Ok(pager.page(members, |u| id_of(u).to_owned(), |v| (*v).clone()))
            }
            Route::AppsList => {
                let user = match query.get("filter") {
                    None => None,
                    Some(f) => Some(parse_user_filter(f).ok_or_else(|| {
                        Reply::error(StatusCode::BAD_REQUEST, "E0000031", "Invalid search criteria.")
                    })?),
                };
                // `expand=user/{id}` is accepted (and its embedding not simulated).
                let extra: String = ["filter", "expand"]
                    .into_iter()
                    .filter_map(|k| Some(format!("&{k}={}", percent_encode(query.get(k)?))))
                    .collect();
                let pager = pager(page_limit(query, 20, 200), extra);
                let start = self.seqs.apps.start_after(&idx.apps, after)?;
                let apps = idx.apps[start..]
                    .iter()
                    .map(|&(_, pos)| &org.apps[pos])
                    .filter(|a| user.as_deref().is_none_or(|u| assigned_to(org, id_of(a), u)));
                Ok(pager.page(apps, |a| id_of(a).to_owned(), |v| (*v).clone()))
            }
            Route::App(id) => {
                let pos = idx
                    .app_pos
                    .get(id)
                    .ok_or_else(|| Reply::not_found(id, "AppInstance"))?;
                Ok(Reply::ok(org.apps[*pos].clone()))
            }
            Route::AppUsers(id) => {
                if !idx.app_pos.contains_key(id) {
                    return Err(Reply::not_found(id, "AppInstance"));
                }
                let assigned = idx
                    .app_users
                    .entry(id.clone())
                    .or_insert_with(|| Arc::new(org.app_users(id)))
                    .clone();
                let pager = pager(page_limit(query, 50, 500), String::new());
                // Sorted by user id, so the cursor is simply the last user id.
                let start = after.map_or(0, |a| assigned.partition_point(|(u, _)| u.as_str() <= a));
                let rows = assigned[start..]
                    .iter()
                    .filter_map(|(uid, scope)| Some((&org.users[*idx.user_pos.get(uid)?], *scope)));
                Ok(pager.page(
                    rows,
                    |(u, _)| id_of(u).to_owned(),
                    |(u, scope)| app_user(base, id, u, scope),
                ))
            }
            Route::Logs => serve_logs(org, base, query),
            Route::EventHooks | Route::EventHook(_) | Route::HookLifecycle(..) | Route::Other => {
                Err(Reply::not_found(path, "Route"))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// System Log
// ---------------------------------------------------------------------------------------

/// `GET /api/v1/logs`: every event the org emitted, oldest first, from `since` (inclusive,
/// required here) to `until` (exclusive), filtered by `eventType eq "…"` terms joined by
/// `or`, `limit` per page (at most 1000), `after` the uuid of the last event of the page
/// before. Without `until` a read polls: every page names a next one, even an empty page.
fn serve_logs(org: &Org, base: &str, query: &HashMap<String, String>) -> Result<Reply, Reply> {
    let invalid = |what: &str| {
        Reply::error(
            StatusCode::BAD_REQUEST,
            "E0000001",
            &format!("Api validation failed: {what}"),
        )
    };
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, Reply> {
        query
            .get(name)
            .map(|t| {
                DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| invalid(name))
            })
            .transpose()
    };
    let since = time("since")?.ok_or_else(|| invalid("since"))?;
    let until = time("until")?;
    let limit: usize = match query.get("limit") {
        None => 100,
        Some(l) => l
            .parse()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| invalid("limit"))?,
    };
    if query.get("sortOrder").is_some_and(|o| o != "ASCENDING") {
        return Err(invalid("sortOrder: only ASCENDING polls"));
    }
    let types: Option<Vec<String>> = match query.get("filter") {
        None => None,
        Some(filter) => Some(
            filter
                .split(" or ")
                .map(|term| {
                    let value = term
                        .trim()
                        .strip_prefix("eventType eq ")
                        .ok_or_else(|| invalid("filter"))?;
                    Ok(value.trim_matches('"').to_owned())
                })
                .collect::<Result<_, Reply>>()?,
        ),
    };
    let published = |e: &Value| {
        e["published"]
            .as_str()
            .and_then(|p| DateTime::parse_from_rfc3339(p).ok())
            .map(|p| p.with_timezone(&Utc))
    };
    let matching: Vec<&Value> = org
        .system_log()
        .filter(|e| published(e).is_some_and(|p| p >= since && until.is_none_or(|u| p < u)))
        .filter(|e| {
            types
                .as_ref()
                .is_none_or(|t| t.iter().any(|t| e["eventType"] == t.as_str()))
        })
        .collect();
    let after = query.get("after");
    let start = match after {
        None => 0,
        Some(uuid) => matching
            .iter()
            .position(|e| e["uuid"] == uuid.as_str())
            .map_or(matching.len(), |i| i + 1),
    };
    let page: Vec<Value> = matching[start..]
        .iter()
        .take(limit)
        .map(|e| (*e).clone())
        .collect();
    let more = matching.len() > start + page.len();
    let mut params: Vec<(String, String)> = vec![
        ("since".into(), query["since"].clone()),
        ("limit".into(), limit.to_string()),
    ];
    for name in ["until", "filter", "sortOrder"] {
        if let Some(v) = query.get(name) {
            params.push((name.into(), v.clone()));
        }
    }
    let link = |after: Option<&str>| {
        let mut all = params.clone();
        if let Some(a) = after {
            all.push(("after".into(), a.to_owned()));
        }
        let q: Vec<String> = all
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        format!("<{base}/api/v1/logs?{}>", q.join("&"))
    };
    let mut links = vec![format!("{}; rel=\"self\"", link(after.map(String::as_str)))];
    // Polling: the next page starts after this page's last event, or where this one did.
    let last = page
        .last()
        .and_then(|e| e["uuid"].as_str())
        .or(after.map(String::as_str));
    if until.is_none() || more {
        links.push(format!("{}; rel=\"next\"", link(last)));
    }
    Ok(Reply {
        status: StatusCode::OK,
        body: Value::Array(page),
        links,
        truncate: false,
    })
}

// ---------------------------------------------------------------------------------------
// Event hooks
// ---------------------------------------------------------------------------------------

/// Okta allows this many event hooks per org.
const MAX_EVENT_HOOKS: usize = 25;

/// Okta gives the endpoint 3 seconds to answer the verification challenge.
const VERIFICATION_TIMEOUT: Duration = Duration::from_secs(3);

/// Event types Okta lets an event hook subscribe to (a subset of the real list).
/// `user.lifecycle.delete.completed`, for one, is not eligible.
pub const ELIGIBLE_EVENT_TYPES: &[&str] = &[
    "user.lifecycle.create",
    "user.lifecycle.activate",
    "user.lifecycle.reactivate",
    "user.lifecycle.deactivate",
    "user.lifecycle.suspend",
    "user.lifecycle.unsuspend",
    "user.lifecycle.delete.initiated",
    "user.lifecycle.password_mass_expire",
    "user.account.update_profile",
    "user.account.lock",
    "user.account.unlock_by_admin",
    "user.account.unlock",
    "user.account.reset_password",
    "user.account.update_password",
    "user.account.privilege.grant",
    "user.account.privilege.revoke",
    "user.session.start",
    "user.mfa.factor.activate",
    "user.mfa.factor.deactivate",
    "group.lifecycle.create",
    "group.lifecycle.delete",
    "group.profile.update",
    "group.user_membership.add",
    "group.user_membership.remove",
    "group.privilege.grant",
    "group.privilege.revoke",
    "application.lifecycle.create",
    "application.lifecycle.update",
    "application.lifecycle.activate",
    "application.lifecycle.deactivate",
    "application.lifecycle.delete",
    "application.user_membership.add",
    "application.user_membership.remove",
    "application.user_membership.change_username",
    "group.application_assignment.add",
    "group.application_assignment.remove",
    "group.application_assignment.update",
];

struct Hook {
    /// The hook as the API shows it, minus `_links` (they depend on the status) and minus
    /// the write-only `authScheme.value`.
    object: Value,
    /// `channel.config.authScheme.value`.
    secret: Option<String>,
}

impl Hook {
    fn id(&self) -> &str {
        id_of(&self.object)
    }

    fn render(&self, base: &str) -> Value {
        let mut out = self.object.clone();
        let href = format!("{base}/api/v1/eventHooks/{}", self.id());
        let link = |suffix: &str, allow: &[&str]| json!({"href": format!("{href}{suffix}"), "hints": {"allow": allow}});
        let mut links = serde_json::Map::new();
        links.insert("self".into(), link("", &["GET", "PUT", "DELETE"]));
        links.insert("verify".into(), link("/lifecycle/verify", &["POST"]));
        // Like Okta, only the transition available from the current status is linked.
        if out["status"] == "ACTIVE" {
            links.insert("deactivate".into(), link("/lifecycle/deactivate", &["POST"]));
        } else {
            links.insert("activate".into(), link("/lifecycle/activate", &["POST"]));
        }
        out["_links"] = Value::Object(links);
        out
    }
}

/// A validated create or replace request.
struct HookSpec {
    name: String,
    description: Value,
    events: Value,
    /// Without the secret.
    channel: Value,
    secret: Option<String>,
}

/// Okta's answer to an invalid hook: E0000001 with the reason in `errorCauses`.
fn invalid_hook(cause: &str) -> Reply {
    let mut reply = Reply::error(
        StatusCode::BAD_REQUEST,
        "E0000001",
        "Api validation failed: eventHook",
    );
    reply.body["errorCauses"] = json!([{ "errorSummary": cause }]);
    reply
}

/// Validates a create (`previous` = `None`) or replace request. A replace may omit the
/// write-only secret to keep the current one (as long as the header stays the same).
fn hook_spec(body: &Value, previous: Option<&Hook>) -> Result<HookSpec, Reply> {
    let text = |v: &Value| v.as_str().filter(|s| !s.trim().is_empty()).map(str::to_owned);
    let name = text(&body["name"]).ok_or_else(|| invalid_hook("name: The field cannot be left blank"))?;
    let description = match &body["description"] {
        d @ (Value::Null | Value::String(_)) => d.clone(),
        _ => return Err(invalid_hook("description: must be a string")),
    };

    let events = &body["events"];
    if events["type"] != "EVENT_TYPE" {
        return Err(invalid_hook("events.type: must be EVENT_TYPE"));
    }
    let items = events["items"]
        .as_array()
        .filter(|items| !items.is_empty())
        .ok_or_else(|| invalid_hook("events.items: The field cannot be left blank"))?;
    for item in items {
        let event_type = item
            .as_str()
            .ok_or_else(|| invalid_hook("events.items: must be event type names"))?;
        if !ELIGIBLE_EVENT_TYPES.contains(&event_type) {
            let cause = format!("events.items: {event_type} is not an eligible event type for event hooks");
            return Err(invalid_hook(&cause));
        }
    }

    let channel = &body["channel"];
    if channel["type"] != "HTTP" || channel["version"] != "1.0.0" {
        return Err(invalid_hook("channel: type must be HTTP and version 1.0.0"));
    }
    let config = &channel["config"];
    let uri = text(&config["uri"])
        .filter(|u| reqwest::Url::parse(u).is_ok_and(|u| ["http", "https"].contains(&u.scheme())))
        .ok_or_else(|| invalid_hook("channel.config.uri: must be an http(s) URL"))?;
    let headers = match &config["headers"] {
        Value::Null => json!([]),
        Value::Array(list)
            if list
                .iter()
                .all(|h| h["key"].is_string() && h["value"].is_string()) =>
        {
            json!(
                list.iter()
                    .map(|h| json!({"key": h["key"], "value": h["value"]}))
                    .collect::<Vec<_>>()
            )
        }
        _ => return Err(invalid_hook("channel.config.headers: must be key/value pairs")),
    };
    let (auth_scheme, secret) = match &config["authScheme"] {
        Value::Null => (Value::Null, None),
        scheme => {
            let key = text(&scheme["key"])
                .filter(|_| scheme["type"] == "HEADER")
                .ok_or_else(|| invalid_hook("channel.config.authScheme: type must be HEADER, with a key"))?;
            let kept = previous.and_then(|p| {
                let same_key = p.object["channel"]["config"]["authScheme"]["key"] == key.as_str();
                same_key.then(|| p.secret.clone()).flatten()
            });
            let secret = text(&scheme["value"]).or(kept).ok_or_else(|| {
                invalid_hook("channel.config.authScheme.value: The field cannot be left blank")
            })?;
            (json!({"type": "HEADER", "key": key}), Some(secret))
        }
    };
    Ok(HookSpec {
        name,
        description,
        events: json!({"type": "EVENT_TYPE", "items": items, "filter": null}),
        channel: json!({
            "type": "HTTP",
            "version": "1.0.0",
            "config": {"uri": uri, "headers": headers, "method": "POST", "authScheme": auth_scheme},
        }),
        secret,
    })
}

/// Sends the verification challenge; `Err` says what went wrong.
async fn verify(client: &reqwest::Client, v: &Verification) -> Result<(), String> {
    let challenge = Alphanumeric.sample_string(&mut rand::rng(), 40);
    let mut request = client
        .get(&v.uri)
        .header("X-Okta-Verification-Challenge", &challenge);
    for (key, value) in &v.headers {
        request = request.header(key, value);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("the endpoint answered {}", response.status()));
    }
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if body["verification"] != challenge.as_str() {
        return Err("the endpoint did not echo the challenge".to_owned());
    }
    Ok(())
}

impl SimState {
    fn new_hook_id(&mut self) -> String {
        format!("who{}", Alphanumeric.sample_string(&mut self.hook_ids, 17))
    }

    fn hook_mut(&mut self, id: &str) -> Result<&mut Hook, Reply> {
        self.hooks
            .iter_mut()
            .find(|h| h.id() == id)
            .ok_or_else(|| Reply::not_found(id, "EventHook"))
    }

    fn serve_hooks(
        &mut self,
        base: &str,
        method: &Method,
        route: &Route,
        body: &[u8],
    ) -> Result<Outcome, Reply> {
        let json_body = || {
            serde_json::from_slice::<Value>(body).map_err(|_| {
                Reply::error(
                    StatusCode::BAD_REQUEST,
                    "E0000003",
                    "The request body was not well-formed.",
                )
            })
        };
        let now = okta_time(chrono::Utc::now());
        let reply = match (route, method.as_str()) {
            (Route::EventHooks, "GET") => {
                Reply::ok(Value::Array(self.hooks.iter().map(|h| h.render(base)).collect()))
            }
            (Route::EventHooks, _) => {
                let spec = hook_spec(&json_body()?, None)?;
                if self.hooks.len() >= MAX_EVENT_HOOKS {
                    return Err(Reply::error(
                        StatusCode::BAD_REQUEST,
                        "E0000001",
                        &format!(
                            "Api validation failed: You cannot have more than {MAX_EVENT_HOOKS} event hooks"
                        ),
                    ));
                }
                let id = self.new_hook_id();
                let hook = Hook {
                    object: json!({
                        "id": id,
                        "status": "ACTIVE",
                        "verificationStatus": "UNVERIFIED",
                        "name": spec.name,
                        "description": spec.description,
                        "created": now,
                        "createdBy": ACTOR_ID,
                        "lastUpdated": now,
                        "events": spec.events,
                        "channel": spec.channel,
                    }),
                    secret: spec.secret,
                };
                let reply = Reply::ok(hook.render(base));
                self.hooks.push(hook);
                reply
            }
            (Route::EventHook(id), "GET") => Reply::ok(self.hook_mut(id)?.render(base)),
            (Route::EventHook(id), "PUT") => {
                let body = json_body()?;
                let hook = self.hook_mut(id)?;
                let spec = hook_spec(&body, Some(hook))?;
                // A new endpoint (or credential) has to prove itself again.
                if hook.object["channel"] != spec.channel || hook.secret != spec.secret {
                    hook.object["verificationStatus"] = json!("UNVERIFIED");
                }
                let object = &mut hook.object;
                object["name"] = json!(spec.name);
                object["description"] = spec.description;
                object["events"] = spec.events;
                object["channel"] = spec.channel;
                object["lastUpdated"] = json!(now);
                hook.secret = spec.secret;
                Reply::ok(hook.render(base))
            }
            (Route::EventHook(id), _) => {
                if self.hook_mut(id)?.object["status"] == "ACTIVE" {
                    return Err(Reply::error(
                        StatusCode::BAD_REQUEST,
                        "E0000001",
                        "Api validation failed: Cannot delete an ACTIVE event hook; deactivate it first",
                    ));
                }
                self.hooks.retain(|h| h.id() != id);
                Reply {
                    status: StatusCode::NO_CONTENT,
                    body: Value::Null,
                    links: Vec::new(),
                    truncate: false,
                }
            }
            (Route::HookLifecycle(id, HookAction::Verify), _) => {
                let hook = self.hook_mut(id)?;
                let config = &hook.object["channel"]["config"];
                let mut headers: Vec<(String, String)> = config["headers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|h| Some((h["key"].as_str()?.to_owned(), h["value"].as_str()?.to_owned())))
                    .collect();
                if let (Some(key), Some(secret)) = (config["authScheme"]["key"].as_str(), &hook.secret) {
                    headers.push((key.to_owned(), secret.clone()));
                }
                return Ok(Outcome::Verify(Verification {
                    hook_id: id.clone(),
                    uri: config["uri"].as_str().unwrap_or_default().to_owned(),
                    headers,
                }));
            }
            (Route::HookLifecycle(id, action), _) => {
                let status = match action {
                    HookAction::Deactivate => "INACTIVE",
                    _ => "ACTIVE",
                };
                let hook = self.hook_mut(id)?;
                hook.object["status"] = json!(status);
                hook.object["lastUpdated"] = json!(now);
                Reply::ok(hook.render(base))
            }
            // `serve` only routes hook requests with an allowed method here.
            _ => unreachable!("not an event hook request"),
        };
        Ok(Outcome::Reply(reply))
    }

    fn finish_verification(&mut self, base: &str, id: &str, result: Result<(), String>) -> Reply {
        let hook = match self.hook_mut(id) {
            Ok(hook) => hook,
            // Deleted while its endpoint was being called.
            Err(reply) => return reply,
        };
        match result {
            Ok(()) => {
                hook.object["verificationStatus"] = json!("VERIFIED");
                hook.object["lastUpdated"] = json!(okta_time(chrono::Utc::now()));
                Reply::ok(hook.render(base))
            }
            Err(why) => {
                let mut reply = Reply::error(
                    StatusCode::BAD_REQUEST,
                    "E0000001",
                    "Api validation failed: Event hook verification failed. The endpoint did not answer the verification request correctly.",
                );
                reply.body["errorCauses"] = json!([{ "errorSummary": why }]);
                reply
            }
        }
    }
}

/// Builds a page and its `Link` headers.
struct Pager<'a> {
    base: &'a str,
    path: &'a str,
    limit: usize,
    /// Already-encoded extra query (`&search=…`) repeated in the links.
    extra: String,
    after: Option<&'a str>,
}

impl Pager<'_> {
    fn page<T>(
        &self,
        items: impl Iterator<Item = T>,
        cursor: impl Fn(&T) -> String,
        render: impl Fn(&T) -> Value,
    ) -> Reply {
        // One extra item tells whether a next page exists without a second pass.
        let mut items: Vec<T> = items.take(self.limit + 1).collect();
        let more = items.len() > self.limit;
        items.truncate(self.limit);
        let (base, path, limit, extra) = (self.base, self.path, self.limit, &self.extra);
        let self_after = self
            .after
            .map(|a| format!("&after={}", percent_encode(a)))
            .unwrap_or_default();
        let mut links = vec![format!(
            "<{base}{path}?limit={limit}{extra}{self_after}>; rel=\"self\""
        )];
        if let (true, Some(last)) = (more, items.last()) {
            let next = percent_encode(&cursor(last));
            links.push(format!(
                "<{base}{path}?limit={limit}{extra}&after={next}>; rel=\"next\""
            ));
        }
        Reply {
            status: StatusCode::OK,
            body: Value::Array(items.iter().map(render).collect()),
            links,
            truncate: false,
        }
    }
}

/// The AppUser object Okta returns from `/api/v1/apps/{id}/users`.
fn app_user(base: &str, app_id: &str, user: &Value, scope: &str) -> Value {
    let uid = id_of(user);
    json!({
        "id": uid,
        "externalId": null,
        "created": user["created"],
        "lastUpdated": user["lastUpdated"],
        "scope": scope,
        "status": "ACTIVE",
        "statusChanged": user["created"],
        "passwordChanged": null,
        "syncState": "DISABLED",
        "credentials": {"userName": user["profile"]["login"]},
        "profile": {},
        "_links": {
            "app": {"href": format!("{base}/api/v1/apps/{app_id}")},
            "user": {"href": format!("{base}/api/v1/users/{uid}")},
        },
    })
}

/// Parses `field eq "value"` clauses OR-ed together (`\"` escapes a quote); `None` when
/// the expression has any other shape.
fn parse_eq_clauses(expr: &str) -> Option<Vec<(String, String)>> {
    let mut clauses = Vec::new();
    let mut rest = expr.trim_start();
    loop {
        let (field, after) = rest.split_once(char::is_whitespace)?;
        let (op, after) = after.trim_start().split_once(char::is_whitespace)?;
        if !op.eq_ignore_ascii_case("eq") {
            return None;
        }
        let (value, after) = quoted(after.trim_start())?;
        clauses.push((field.to_owned(), value));
        let after = after.trim_start();
        if after.is_empty() {
            return Some(clauses);
        }
        let (or, after) = after.split_once(char::is_whitespace)?;
        if !or.eq_ignore_ascii_case("or") {
            return None;
        }
        rest = after.trim_start();
    }
}

/// The double-quoted string starting `s`, unescaped, and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &body[i + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

/// One clause of a users search.
enum UserClause {
    Status(String),
    Id(String),
    /// Attribute and lower-cased value: Okta compares profile values case-insensitively.
    Profile(String, String),
}

impl UserClause {
    fn matches(&self, user: &Value) -> bool {
        match self {
            UserClause::Status(s) => user["status"] == s.as_str(),
            UserClause::Id(id) => id_of(user) == id,
            UserClause::Profile(attr, value) => match &user["profile"][attr] {
                Value::String(s) => s.to_lowercase() == *value,
                Value::Number(n) => n.to_string() == *value,
                Value::Bool(b) => b.to_string() == *value,
                _ => false,
            },
        }
    }
}

/// `status eq "X"`, `id eq "X"` and `profile.<attr> eq "X"` clauses, OR-ed.
fn parse_user_search(expr: &str) -> Option<Vec<UserClause>> {
    parse_eq_clauses(expr)?
        .into_iter()
        .map(|(field, value)| match field.as_str() {
            "status" => {
                let valid = !value.is_empty() && value.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
                valid.then_some(UserClause::Status(value))
            }
            "id" => Some(UserClause::Id(value)),
            _ => {
                let attr = field.strip_prefix("profile.")?;
                let valid = !attr.is_empty() && attr.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                valid.then(|| UserClause::Profile(attr.to_owned(), value.to_lowercase()))
            }
        })
        .collect()
}

/// The search the resync makes to list DEPROVISIONED users (counted as listing).
fn is_deprovisioned_search(expr: &str) -> bool {
    parse_user_search(expr).is_some_and(|clauses| {
        clauses
            .iter()
            .all(|c| matches!(c, UserClause::Status(s) if s == "DEPROVISIONED"))
    })
}

/// The user id of an apps filter `user.id eq "00u…"` (the only apps filter simulated).
fn parse_user_filter(expr: &str) -> Option<String> {
    match <[_; 1]>::try_from(parse_eq_clauses(expr)?) {
        Ok([(field, value)]) if field == "user.id" => Some(value),
        _ => None,
    }
}

/// Whether the user is assigned to the app directly or through one of its groups.
fn assigned_to(org: &Org, app_id: &str, user_id: &str) -> bool {
    let direct = org
        .app_user_assignments
        .get(app_id)
        .is_some_and(|users| users.contains(user_id));
    direct
        || org.app_group_assignments.get(app_id).is_some_and(|groups| {
            groups
                .iter()
                .any(|g| org.group_members.get(g).is_some_and(|m| m.contains(user_id)))
        })
}

/// `limit` clamped to the endpoint maximum; absent or invalid means the default.
fn page_limit(query: &HashMap<String, String>, default: usize, max: usize) -> usize {
    query
        .get("limit")
        .and_then(|l| l.trim().parse::<usize>().ok())
        .filter(|&l| l > 0)
        .map_or(default, |l| l.min(max))
}

fn id_of(v: &Value) -> &str {
    v.get("id").and_then(Value::as_str).unwrap_or_default()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `POST /oauth2/v1/token`, answered as Okta's org authorization server does.
fn token_endpoint(shared: &Shared, method: &Method, headers: &HeaderMap, body: &[u8]) -> Response {
    let mut state = shared.lock();
    state.calls.token_requests += 1;
    let reply = if method == Method::POST {
        let state = &mut *state;
        state.oauth.token(&shared.oauth, &shared.base_url, headers, body)
    } else {
        oauth::TokenReply {
            status: StatusCode::METHOD_NOT_ALLOWED,
            body: json!({"error": "invalid_request", "error_description": "The token endpoint takes POST."}),
            nonce: None,
            issued: false,
        }
    };
    if reply.issued {
        state.calls.tokens_issued += 1;
    }
    drop(state);
    let mut builder = Response::builder()
        .status(reply.status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            "x-okta-request-id",
            Alphanumeric.sample_string(&mut rand::rng(), 20),
        );
    if let Some(nonce) = reply.nonce {
        builder = builder.header("dpop-nonce", nonce);
    }
    builder
        .body(Body::from(serde_json::to_vec(&reply.body).unwrap_or_default()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Fault codes of the random faults that are not plain statuses.
struct Fault;

impl Fault {
    /// A 429 without any rate-limit header.
    const BARE_429: u16 = 598;
}

fn respond(reply: Reply, rate: RateHeaders) -> Response {
    let body = if reply.status == StatusCode::NO_CONTENT {
        Vec::new()
    } else {
        serde_json::to_vec(&reply.body).unwrap_or_default()
    };
    let request_id = Alphanumeric.sample_string(&mut rand::rng(), 20);
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let mut builder = Response::builder()
        .status(reply.status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::DATE, date)
        .header("x-okta-request-id", request_id);
    if !rate.bare {
        builder = builder
            .header("x-rate-limit-limit", rate.limit)
            .header("x-rate-limit-remaining", rate.remaining)
            .header("x-rate-limit-reset", rate.reset);
    }
    for link in reply.links {
        builder = builder.header(header::LINK, link);
    }
    let body = if reply.truncate {
        // Promise the whole body, send half, then fail the stream: the client reads a
        // broken answer to a request that was carried out.
        builder = builder.header(header::CONTENT_LENGTH, body.len().max(2));
        let half = body[..body.len() / 2].to_vec();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(half), Err(std::io::Error::other("connection reset"))];
        Body::from_stream(futures::stream::iter(chunks))
    } else {
        Body::from(body)
    };
    builder.body(body).unwrap_or_else(|e| {
        let mut fallback = Response::new(Body::from(e.to_string()));
        *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orggen::{OrgSpec, generate};

    const AUTH: &str = "SSWS test-okta-token";

    fn next_link(resp: &reqwest::Response) -> Option<String> {
        resp.headers()
            .get_all(header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.ends_with("rel=\"next\""))
            .and_then(|v| Some(v[v.find('<')? + 1..v.find('>')?].to_owned()))
    }

    #[tokio::test]
    async fn a_write_without_a_length_is_answered_411() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sim = OktaSim::start(Org::default(), OktaSimConfig::default()).await;
        let host = sim.base_url.trim_start_matches("http://").to_owned();
        let mut socket = tokio::net::TcpStream::connect(&host).await.unwrap();
        let request = format!(
            "POST /api/v1/eventHooks/who1/lifecycle/verify HTTP/1.1\r\nHost: {host}\r\n\
             Authorization: {AUTH}\r\nConnection: close\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
        assert_eq!(sim.calls().length_required_411, 1);
        // With `Content-Length: 0` the same call goes through to the route.
        let resp = reqwest::Client::new()
            .post(format!(
                "{}/api/v1/eventHooks/who1/lifecycle/verify",
                sim.base_url
            ))
            .header("Authorization", AUTH)
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        assert_ne!(resp.status(), 411);
    }

    /// Follows `next` links; returns every item and the page sizes.
    async fn collect(client: &reqwest::Client, first: String) -> (Vec<Value>, Vec<usize>) {
        let (mut items, mut sizes, mut url) = (Vec::new(), Vec::new(), Some(first));
        while let Some(u) = url {
            let resp = client.get(&u).header("Authorization", AUTH).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{u}");
            assert!(resp.headers().contains_key("x-rate-limit-remaining"));
            url = next_link(&resp);
            let page: Vec<Value> = resp.json().await.unwrap();
            sizes.push(page.len());
            items.extend(page);
        }
        (items, sizes)
    }

    #[tokio::test]
    async fn listing_search_pagination_and_auth() {
        let org = generate(&OrgSpec {
            users: 450,
            groups: 10,
            apps: 6,
            seed: 11,
        });
        let deprovisioned = org
            .users
            .iter()
            .filter(|u| u["status"] == "DEPROVISIONED")
            .count();
        let sim = OktaSim::start(org, OktaSimConfig::default()).await;
        let client = reqwest::Client::new();

        let resp = client.get(sim.url("/api/v1/users")).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert!(resp.headers().contains_key("x-okta-request-id"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["errorCode"], "E0000011");

        // limit=500 is clamped to 200.
        let (users, sizes) = collect(&client, sim.url("/api/v1/users?limit=500")).await;
        assert_eq!(sizes, vec![200, 450 - deprovisioned - 200]);
        assert!(users.iter().all(|u| u["status"] != "DEPROVISIONED"));

        let search = "/api/v1/users?limit=20&search=status%20eq%20%22DEPROVISIONED%22";
        let (found, sizes) = collect(&client, sim.url(search)).await;
        assert_eq!(found.len(), deprovisioned);
        assert_eq!(sizes.len(), deprovisioned.div_ceil(20));

        let bad = client
            .get(sim.url("/api/v1/users?search=profile.login%20sw%20%22a%22"))
            .header("Authorization", AUTH)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(bad.json::<Value>().await.unwrap()["errorCode"], "E0000031");

        // App users: default page of 50 and a stable cursor while the org changes.
        let app = sim.with_org(|o| id_of(&o.apps[0]).to_owned());
        let expected = sim.with_org(|o| o.app_users(&app).len());
        let (rows, _) = collect(&client, sim.url(&format!("/api/v1/apps/{app}/users"))).await;
        assert_eq!(rows.len(), expected);
        let calls = sim.calls();
        assert_eq!(calls.get("apps.users"), expected.div_ceil(50) as u64);
        // 401, two listing pages, the DEPROVISIONED search pages; the bad search is a search.
        assert_eq!(calls.get("users.list"), 3 + sizes.len() as u64);
        assert_eq!(calls.get("users.search"), 1);
    }

    #[tokio::test]
    async fn rate_limits_faults_and_not_found() {
        let org = generate(&OrgSpec {
            users: 50,
            groups: 5,
            apps: 3,
            seed: 1,
        });
        let sim = OktaSim::start(org, OktaSimConfig::default()).await;
        let client = reqwest::Client::new();
        let get = |path: &str| client.get(sim.url(path)).header("Authorization", AUTH).send();

        sim.set_rate_limit(Bucket::GroupsList, 2, Duration::from_secs(60));
        for remaining in ["1", "0"] {
            let resp = get("/api/v1/groups").await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["x-rate-limit-remaining"], remaining);
        }
        let resp = get("/api/v1/groups").await.unwrap();
        assert_eq!(resp.status(), 429);
        let reset: u64 = resp.headers()["x-rate-limit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset > chrono::Utc::now().timestamp() as u64);
        assert_eq!(resp.json::<Value>().await.unwrap()["errorCode"], "E0000047");

        sim.add_fault(FaultRule {
            path_prefix: "/api/v1/apps".into(),
            status: 503,
            times: Some(1),
        });
        assert_eq!(get("/api/v1/apps").await.unwrap().status(), 503);
        assert_eq!(get("/api/v1/apps").await.unwrap().status(), 200);

        let missing = get("/api/v1/groups/00gmissing/users").await.unwrap();
        assert_eq!(missing.status(), 404);
        assert_eq!(missing.json::<Value>().await.unwrap()["errorCode"], "E0000007");
        assert_eq!(get("/api/v1/nope").await.unwrap().status(), 404);

        let calls = sim.calls();
        assert_eq!(calls.get("groups.list"), 3);
        assert_eq!(calls.get("apps.list"), 2);
        assert_eq!(calls.rate_limited_429, 1);
        assert_eq!(calls.faults_injected, 1);
        assert_eq!(calls.total, 7);
    }

    #[tokio::test]
    async fn apps_of_a_user_and_profile_searches() {
        let org = generate(&OrgSpec {
            users: 300,
            groups: 10,
            apps: 8,
            seed: 5,
        });
        // The user with the most apps, some of them through groups.
        let (uid, expected) = org
            .users
            .iter()
            .map(|u| {
                let uid = id_of(u);
                let apps: Vec<String> = org
                    .apps
                    .iter()
                    .filter(|a| assigned_to(&org, id_of(a), uid))
                    .map(|a| id_of(a).to_owned())
                    .collect();
                (uid.to_owned(), apps)
            })
            .max_by_key(|(_, apps)| apps.len())
            .unwrap();
        assert!(expected.len() >= 3, "{expected:?}");
        let via_group = expected
            .iter()
            .any(|a| !org.app_user_assignments[a].contains(&uid));
        assert!(via_group, "some apps come through a group");
        let gone = org
            .users
            .iter()
            .find(|u| u["status"] == "DEPROVISIONED")
            .unwrap()
            .clone();
        let sim = OktaSim::start(org, OktaSimConfig::default()).await;
        let client = reqwest::Client::new();

        let filter = percent_encode(&format!("user.id eq \"{uid}\""));
        let url = sim.url(&format!(
            "/api/v1/apps?filter={filter}&expand=user%2F{uid}&limit=2"
        ));
        let (apps, sizes) = collect(&client, url).await;
        let got: Vec<&str> = apps.iter().map(id_of).collect();
        assert_eq!(got, expected);
        assert_eq!(sizes.len(), expected.len().div_ceil(2));
        let bad = client
            .get(sim.url("/api/v1/apps?filter=group.id%20eq%20%2200g1%22"))
            .header("Authorization", AUTH)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);

        // Profile values match case-insensitively, DEPROVISIONED users included, OR-ed
        // with an id clause.
        let login = gone["profile"]["login"].as_str().unwrap().to_uppercase();
        let search = format!("profile.login eq \"{login}\" or id eq \"{uid}\"");
        let url = sim.url(&format!(
            "/api/v1/users?limit=1&search={}",
            percent_encode(&search)
        ));
        let (users, _) = collect(&client, url).await;
        let mut found: Vec<&str> = users.iter().map(id_of).collect();
        found.sort_unstable();
        let mut want = vec![id_of(&gone), uid.as_str()];
        want.sort_unstable();
        assert_eq!(found, want);
        // A value with spaces and an escaped quote parses (and matches nobody).
        let odd = percent_encode(r#"profile.displayName eq "O\"Brien, Zoë" or status eq "STAGED""#);
        let (staged, _) = collect(&client, sim.url(&format!("/api/v1/users?search={odd}"))).await;
        assert!(!staged.is_empty() && staged.iter().all(|u| u["status"] == "STAGED"));

        let calls = sim.calls();
        assert_eq!(calls.get("apps.list_by_user"), sizes.len() as u64);
        assert_eq!(calls.get("apps.list"), 1, "the unsupported filter");
        assert_eq!(calls.get("users.search"), 3);
        assert_eq!(calls.get("users.list"), 0);
    }

    /// Serves `GET /hook` on loopback, answering the challenge with `answer(challenge)` and
    /// recording the Authorization header it got.
    async fn hook_endpoint(answer: fn(&str) -> String) -> (String, Arc<Mutex<Vec<String>>>, AbortOnDrop) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = Router::new().route(
            "/hook",
            axum::routing::get(move |headers: HeaderMap| async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                log.lock().unwrap().push(header("authorization"));
                axum::Json(json!({"verification": answer(&header("x-okta-verification-challenge"))}))
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (url, seen, AbortOnDrop(server.abort_handle()))
    }

    struct AbortOnDrop(AbortHandle);

    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    fn hook_body(uri: &str, events: &[&str]) -> Value {
        json!({
            "name": "okta-port live sync",
            "events": {"type": "EVENT_TYPE", "items": events},
            "channel": {
                "type": "HTTP",
                "version": "1.0.0",
                "config": {
                    "uri": uri,
                    "headers": [{"key": "X-Source", "value": "okta"}],
                    "authScheme": {"type": "HEADER", "key": "Authorization", "value": "s3cret"},
                },
            },
        })
    }

    #[tokio::test]
    async fn event_hooks_are_created_verified_and_deleted() {
        let org = generate(&OrgSpec {
            users: 20,
            groups: 3,
            apps: 2,
            seed: 2,
        });
        let sim = OktaSim::start(org, OktaSimConfig::default()).await;
        let client = reqwest::Client::new();
        let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
            let method_is_write = method != reqwest::Method::GET;
            let request = client
                .request(method, sim.url(path))
                .header("Authorization", AUTH);
            let request = match body {
                Some(b) => request.json(&b),
                // As Okta's front end requires of a write (411 otherwise).
                None if method_is_write => request.header("content-length", "0"),
                None => request,
            };
            async move {
                let resp = request.send().await.unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let (good, seen, _good_server) = hook_endpoint(str::to_owned).await;
        let (bad, _, _bad_server) = hook_endpoint(|_| "wrong".to_owned()).await;
        let types = ["user.lifecycle.create", "group.user_membership.add"];
        let create = |body: Value| call(reqwest::Method::POST, "/api/v1/eventHooks", Some(body));

        let (status, ineligible) = create(hook_body(&good, &["user.lifecycle.delete.completed"])).await;
        assert_eq!((status, &ineligible["errorCode"]), (400, &json!("E0000001")));

        let (status, hook) = create(hook_body(&good, &types)).await;
        assert_eq!(status, 200, "{hook}");
        let id = hook["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("who"));
        assert_eq!(hook["status"], "ACTIVE");
        assert_eq!(hook["verificationStatus"], "UNVERIFIED");
        assert_eq!(hook["channel"]["config"]["method"], "POST");
        let scheme = &hook["channel"]["config"]["authScheme"];
        assert_eq!(scheme["key"], "Authorization");
        assert!(scheme.get("value").is_none(), "the secret is write-only");
        let verify_href = hook["_links"]["verify"]["href"].as_str().unwrap();
        assert!(verify_href.ends_with("/lifecycle/verify"));
        assert_eq!(
            sim.hook_secret(&id),
            Some(("Authorization".into(), "s3cret".into()))
        );
        assert_eq!(sim.hooks(), vec![hook.clone()]);

        let verify = format!("/api/v1/eventHooks/{id}/lifecycle/verify");
        let (status, verified) = call(reqwest::Method::POST, &verify, None).await;
        assert_eq!(status, 200, "{verified}");
        assert_eq!(verified["verificationStatus"], "VERIFIED");
        assert_eq!(*seen.lock().unwrap(), ["s3cret"], "the auth header goes along");

        // A new endpoint must be verified again; the omitted secret is kept.
        let mut replaced = hook_body(&bad, &types);
        replaced["channel"]["config"]["authScheme"]
            .as_object_mut()
            .unwrap()
            .remove("value");
        let path = format!("/api/v1/eventHooks/{id}");
        let (status, updated) = call(reqwest::Method::PUT, &path, Some(replaced)).await;
        assert_eq!(status, 200, "{updated}");
        assert_eq!(updated["verificationStatus"], "UNVERIFIED");
        assert_eq!(sim.hook_secret(&id).unwrap().1, "s3cret");
        let (status, failed) = call(reqwest::Method::POST, &verify, None).await;
        assert_eq!((status, &failed["errorCode"]), (400, &json!("E0000001")));
        let (_, current) = call(reqwest::Method::GET, &path, None).await;
        assert_eq!(current["verificationStatus"], "UNVERIFIED");

        // Only an inactive hook can be deleted.
        let (status, _) = call(reqwest::Method::DELETE, &path, None).await;
        assert_eq!(status, 400);
        let deactivate = format!("{path}/lifecycle/deactivate");
        let (status, inactive) = call(reqwest::Method::POST, &deactivate, None).await;
        assert_eq!((status, &inactive["status"]), (200, &json!("INACTIVE")));
        assert!(inactive["_links"]["activate"].is_object());
        let (status, _) = call(reqwest::Method::DELETE, &path, None).await;
        assert_eq!(status, 204);
        let (status, _) = call(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 404);

        // At most 25 hooks.
        sim.seed_hooks(25);
        let (status, full) = create(hook_body(&good, &types)).await;
        assert_eq!(status, 400);
        assert!(full["errorSummary"].as_str().unwrap().contains("25"), "{full}");
        let (status, list) = call(reqwest::Method::GET, "/api/v1/eventHooks", None).await;
        assert_eq!((status, list.as_array().unwrap().len()), (200, 25));

        let (status, _) = call(reqwest::Method::PATCH, "/api/v1/eventHooks", None).await;
        assert_eq!(status, 405);
        let (status, _) = call(reqwest::Method::POST, "/api/v1/users", None).await;
        assert_eq!(status, 405);
        assert_eq!(sim.calls().get("eventHooks"), 13);
    }

    #[tokio::test]
    async fn without_the_permission_hooks_are_read_only() {
        let config = OktaSimConfig {
            manage_hooks: false,
            ..OktaSimConfig::default()
        };
        let sim = OktaSim::start(Org::default(), config).await;
        sim.seed_hooks(1);
        let client = reqwest::Client::new();
        let list = client
            .get(sim.url("/api/v1/eventHooks"))
            .header("Authorization", AUTH)
            .send()
            .await
            .unwrap();
        assert_eq!(list.status(), 200);
        let create = client
            .post(sim.url("/api/v1/eventHooks"))
            .header("Authorization", AUTH)
            .json(&hook_body("https://example.net/hook", &["user.lifecycle.create"]))
            .send()
            .await
            .unwrap();
        assert_eq!(create.status(), 403);
        assert_eq!(create.json::<Value>().await.unwrap()["errorCode"], "E0000006");
    }
}
