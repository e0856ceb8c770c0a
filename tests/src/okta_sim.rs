//! Okta Management API simulator serving an [`Org`] over real HTTP on 127.0.0.1.
//!
//! It mimics what a sync client meets in production: SSWS auth, Okta error bodies,
//! per-endpoint fixed-window rate limits with the `X-Rate-Limit-*` headers, a concurrency
//! limit, cursor pagination through `Link` headers, and injectable transient faults.

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
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::orggen::Org;

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
}

impl Default for OktaSimConfig {
    fn default() -> Self {
        OktaSimConfig {
            token: "test-okta-token".to_owned(),
            fault_rate: 0.0,
            latency: Duration::ZERO,
            seed: 0,
            max_in_flight: 75,
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
    /// Keys: "users.list", "users.get", "users.groups", "groups.list", "groups.get",
    /// "groups.users", "apps.list", "apps.get", "apps.users", "other".
    pub by_endpoint: BTreeMap<String, u64>,
    /// Every 429 answered (rate limit, concurrency limit or a 429 fault rule).
    pub rate_limited_429: u64,
    pub faults_injected: u64,
    pub max_in_flight_seen: usize,
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
            state: Mutex::new(SimState {
                org,
                index: None,
                seqs: Seqs::default(),
                rng: StdRng::seed_from_u64(config.seed),
                calls: OktaCalls::default(),
                buckets: HashMap::new(),
                faults: Vec::new(),
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

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
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
        }
    }
}

#[derive(Clone, Copy)]
struct RateHeaders {
    limit: u32,
    remaining: u32,
    reset: u64,
}

impl RateHeaders {
    /// Used when no bucket window applies (concurrency limit, injected 429).
    fn exhausted() -> RateHeaders {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        RateHeaders {
            limit: 0,
            remaining: 0,
            reset: now.as_secs() + 1,
        }
    }
}

struct Reply {
    status: StatusCode,
    body: Value,
    links: Vec<String>,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body,
            links: Vec::new(),
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
    Other,
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
            ["eventHooks", ..] => Route::EventHooks,
            _ => Route::Other,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Route::UsersList => "users.list",
            Route::User(_) => "users.get",
            Route::UserGroups(_) => "users.groups",
            Route::GroupsList => "groups.list",
            Route::Group(_) => "groups.get",
            Route::GroupUsers(_) => "groups.users",
            Route::AppsList => "apps.list",
            Route::App(_) => "apps.get",
            Route::AppUsers(_) => "apps.users",
            Route::EventHooks | Route::Other => "other",
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
            Route::EventHooks => Bucket::EventHooks,
            Route::Other if path.starts_with("/api/v1/apps") => Bucket::Apps,
            Route::Other => Bucket::Other,
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

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&shared.in_flight);
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    let (reply, rate) = shared
        .lock()
        .serve(&shared, in_flight, req.method(), req.uri(), req.headers());
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
    ) -> (Reply, RateHeaders) {
        let path = uri.path();
        let route = Route::parse(path);
        let bucket = route.bucket(path);
        self.calls.total += 1;
        *self.calls.by_endpoint.entry(route.kind().to_owned()).or_default() += 1;
        self.calls.max_in_flight_seen = self.calls.max_in_flight_seen.max(in_flight);

        if in_flight > cfg.max_in_flight {
            self.calls.rate_limited_429 += 1;
            return (Reply::rate_limited(), RateHeaders::exhausted());
        }
        let window = self.buckets.entry(bucket).or_insert_with(Window::generous);
        window.roll();
        let rate = window.headers();

        // Faults come before anything else, as a flaky proxy or node would.
        if let Some(status) = self.take_fault(path, cfg.fault_rate) {
            self.calls.faults_injected += 1;
            if status == 429 {
                self.calls.rate_limited_429 += 1;
                return (Reply::for_status(status, path), RateHeaders::exhausted());
            }
            return (Reply::for_status(status, path), rate);
        }
        let authorized = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == cfg.auth);
        if !authorized {
            let reply = Reply::error(StatusCode::UNAUTHORIZED, "E0000011", "Invalid token provided");
            return (reply, rate);
        }
        let window = self.buckets.entry(bucket).or_insert_with(Window::generous);
        if window.used >= window.limit {
            self.calls.rate_limited_429 += 1;
            return (Reply::rate_limited(), window.headers());
        }
        window.used += 1;
        let rate = window.headers();

        if method != Method::GET {
            let reply = Reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "E0000022",
                "The endpoint does not support the provided HTTP method",
            );
            return (reply, rate);
        }
        let query = match Query::<HashMap<String, String>>::try_from_uri(uri) {
            Ok(Query(q)) => q,
            Err(_) => {
                let reply = Reply::error(
                    StatusCode::BAD_REQUEST,
                    "E0000001",
                    "Api validation failed: query",
                );
                return (reply, rate);
            }
        };
        let reply = self
            .dispatch(&cfg.base_url, path, &route, &query)
            .unwrap_or_else(|e| e);
        (reply, rate)
    }

    /// Status to force on this request, from the rules first, then the random rate.
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
            return Some(if self.rng.random_bool(0.5) { 500 } else { 503 });
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
                let (statuses, extra) = match expr {
                    None => (None, String::new()),
                    Some(e) => {
                        let key = if query.contains_key("search") {
                            "search"
                        } else {
                            "filter"
                        };
                        let statuses = parse_status_search(e).ok_or_else(|| {
                            Reply::error(StatusCode::BAD_REQUEST, "E0000031", "Invalid search criteria.")
                        })?;
                        (Some(statuses), format!("&{key}={}", percent_encode(e)))
                    }
                };
                let pager = pager(page_limit(query, 200, 200), extra);
                let start = self.seqs.users.start_after(&idx.users, after)?;
                let wanted = |u: &&Value| match &statuses {
                    None => u["status"] != "DEPROVISIONED",
                    Some(list) => list.iter().any(|s| u["status"] == s.as_str()),
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
                let pager = pager(page_limit(query, 20, 200), String::new());
                let start = self.seqs.apps.start_after(&idx.apps, after)?;
                let apps = idx.apps[start..].iter().map(|&(_, pos)| &org.apps[pos]);
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
            Route::EventHooks => Ok(Reply::ok(json!([]))),
            Route::Other => Err(Reply::not_found(path, "Route")),
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

/// Accepts `status eq "X"` optionally OR-ed with more of the same; `None` otherwise.
fn parse_status_search(expr: &str) -> Option<Vec<String>> {
    let tokens: Vec<&str> = expr.split_whitespace().collect();
    let mut statuses = Vec::new();
    for term in tokens.split(|t| t.eq_ignore_ascii_case("or")) {
        let [field, op, value] = term else {
            return None;
        };
        if *field != "status" || !op.eq_ignore_ascii_case("eq") {
            return None;
        }
        let value = value.strip_prefix('"')?.strip_suffix('"')?;
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            return None;
        }
        statuses.push(value.to_owned());
    }
    Some(statuses)
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

fn respond(reply: Reply, rate: RateHeaders) -> Response {
    let body = serde_json::to_vec(&reply.body).unwrap_or_default();
    let request_id = Alphanumeric.sample_string(&mut rand::rng(), 20);
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let mut builder = Response::builder()
        .status(reply.status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::DATE, date)
        .header("x-okta-request-id", request_id)
        .header("x-rate-limit-limit", rate.limit)
        .header("x-rate-limit-remaining", rate.remaining)
        .header("x-rate-limit-reset", rate.reset);
    for link in reply.links {
        builder = builder.header(header::LINK, link);
    }
    builder.body(Body::from(body)).unwrap_or_else(|e| {
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
        // 401, two listing pages, the search pages, the bad search.
        assert_eq!(calls.get("users.list"), 4 + sizes.len() as u64);
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
}
