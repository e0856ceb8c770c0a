//! A simulator of Port's REST API (port.io) serving on loopback.
//!
//! It implements the subset the Okta → Port sync uses — auth, blueprints, single and bulk
//! entity upserts, search, deletes — with Port's validation rules, error envelope,
//! rate-limit headers and injectable faults, so the product can be tested exactly as it
//! talks to the real API. All state sits behind one mutex that is never held across an
//! `.await`; every request is handled synchronously under it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

/// Port rejects request bodies above 1 MiB.
const MAX_BODY: usize = 1_048_576;
/// How much we are willing to read before giving up (the excess is answered with 413 anyway).
const READ_LIMIT: usize = 16 * MAX_BODY;
const MAX_BULK_UPSERT: usize = 20;
const MAX_BULK_DELETE: usize = 100;
const MAX_SEARCH_LIMIT: u64 = 1000;
const DEFAULT_SEARCH_LIMIT: u64 = 200;
const PROPERTY_TYPES: [&str; 5] = ["string", "number", "boolean", "array", "object"];
/// Characters allowed in identifiers besides letters and digits.
const IDENTIFIER_SYMBOLS: &str = "@_.+:\\/=-";

/// Configuration of a [`PortSim`].
#[derive(Clone, Debug)]
pub struct PortSimConfig {
    pub client_id: String,
    pub client_secret: String,
    /// Advertised `expiresIn` and the real validity of issued tokens.
    pub token_ttl: Duration,
    /// Share (0..1) of requests answered with a transient 500/502/503/504.
    pub fault_rate: f64,
    /// Share (0..1) of the entities of a bulk upsert failed on their own, inside a 207,
    /// with a 500 or 503 (and not written), as Port does when one write hits a bad node.
    pub item_fault_rate: f64,
    /// Added to every response.
    pub latency: Duration,
    /// Seeds the fault RNG so runs are reproducible.
    pub seed: u64,
}

impl Default for PortSimConfig {
    fn default() -> Self {
        Self {
            client_id: "test-client".into(),
            client_secret: "test-secret".into(),
            token_ttl: Duration::from_secs(3 * 3600),
            fault_rate: 0.0,
            item_fault_rate: 0.0,
            latency: Duration::ZERO,
            seed: 0,
        }
    }
}

/// Forces `status` (with Port's error envelope) on requests matching `method` (any when
/// `None`) and whose path starts with `path_prefix`, `times` times (forever when `None`).
#[derive(Clone, Debug)]
pub struct FaultRule {
    pub method: Option<String>,
    pub path_prefix: String,
    pub status: u16,
    pub times: Option<u32>,
}

/// Request counters. `by_route` keys: "token", "blueprints.get", "blueprints.create",
/// "blueprints.patch", "entities.upsert", "entities.bulk_upsert", "entities.search",
/// "entities.bulk_delete", "entities.delete", "entities.get", "other".
/// `tokens_issued` counts newly minted tokens (a reused active token is not counted).
#[derive(Clone, Debug, Default)]
pub struct PortCalls {
    pub total: u64,
    pub by_route: BTreeMap<String, u64>,
    pub tokens_issued: u64,
    pub rate_limited_429: u64,
    pub faults_injected: u64,
    pub unauthorized_401: u64,
}

/// A running Port API simulator; clones share the same server and state.
#[derive(Clone)]
pub struct PortSim {
    /// `http://127.0.0.1:PORT`; clients append `/v1/…`.
    pub base_url: String,
    shared: Arc<Shared>,
}

struct Shared {
    latency: Duration,
    state: Mutex<State>,
}

impl PortSim {
    /// Binds 127.0.0.1:0 and serves in a spawned task (lives as long as the runtime).
    pub async fn start(config: PortSimConfig) -> PortSim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port simulator");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            latency: config.latency,
            state: Mutex::new(State::new(config)),
        });
        // The body is read by hand in `handle`, so axum's default body limit never answers
        // with its own (non-Port) error.
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(%err, "port simulator stopped");
            }
        });
        PortSim {
            base_url: format!("http://{addr}"),
            shared,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in a test thread must not hide the state from the other assertions.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stored entities of `blueprint` as the API returns them, sorted by identifier.
    pub fn entities(&self, blueprint: &str) -> Vec<Value> {
        let st = self.state();
        st.blueprints
            .get(blueprint)
            .map(|bp| bp.entities.values().map(|e| e.to_json(blueprint)).collect())
            .unwrap_or_default()
    }

    pub fn entity(&self, blueprint: &str, identifier: &str) -> Option<Value> {
        let st = self.state();
        st.blueprints
            .get(blueprint)?
            .entities
            .get(identifier)
            .map(|e| e.to_json(blueprint))
    }

    /// The `$datasource` (User-Agent of the last write) of an entity.
    pub fn datasource_of(&self, blueprint: &str, identifier: &str) -> Option<String> {
        let st = self.state();
        st.blueprints
            .get(blueprint)?
            .entities
            .get(identifier)
            .map(|e| e.datasource.clone())
    }

    /// Stores an entity as if another tool had written it with User-Agent `datasource`.
    /// Panics when the blueprint does not exist or the entity does not fit its schema;
    /// relation targets are not required to exist.
    pub fn seed_entity(&self, blueprint: &str, entity: Value, datasource: &str) {
        let mut st = self.state();
        let opts = WriteOpts {
            upsert: true,
            merge: false,
            create_missing: false,
            check_targets: false,
        };
        let actor = st.config.client_id.clone();
        if let Err(fail) = st.write_entity(blueprint, &entity, opts, datasource, &actor) {
            panic!("seed_entity({blueprint}): {} {}", fail.code, fail.message);
        }
    }

    pub fn blueprint(&self, identifier: &str) -> Option<Value> {
        self.state().blueprints.get(identifier).map(|bp| bp.json.clone())
    }

    pub fn calls(&self) -> PortCalls {
        self.state().calls.clone()
    }

    pub fn reset_calls(&self) {
        self.state().calls = PortCalls::default();
    }

    /// Every token issued so far becomes invalid (401), as if it had expired.
    /// Every access token issued so far (for tests that check none reaches a log line).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().tokens.keys().cloned().collect()
    }

    pub fn expire_tokens(&self) {
        let mut st = self.state();
        st.tokens.clear();
        st.current_token = None;
    }

    pub fn add_fault(&self, rule: FaultRule) {
        self.state().faults.push(rule);
    }

    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Fixed window of `limit` requests per `window`; starts a fresh window now.
    pub fn set_rate_limit(&self, limit: u32, window: Duration) {
        self.state().rate = RateWindow::new(limit, window);
    }
}

// ---------------------------------------------------------------------------------------
// State

struct State {
    config: PortSimConfig,
    blueprints: BTreeMap<String, Blueprint>,
    /// Token → expiry.
    tokens: HashMap<String, Instant>,
    current_token: Option<String>,
    calls: PortCalls,
    faults: Vec<FaultRule>,
    fault_rng: StdRng,
    /// Separate from the fault RNG so token minting does not shift the fault sequence.
    token_rng: StdRng,
    rate: RateWindow,
    trace_seq: u64,
}

struct RateWindow {
    limit: u32,
    window: Duration,
    start: Instant,
    used: u32,
}

impl RateWindow {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            start: Instant::now(),
            used: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        if now >= self.start + self.window {
            self.start = now;
            self.used = 0;
        }
    }

    fn until_reset(&self, now: Instant) -> Duration {
        (self.start + self.window).saturating_duration_since(now)
    }
}

struct Blueprint {
    json: Value,
    schema: Schema,
    entities: BTreeMap<String, Entity>,
}

struct Schema {
    properties: Map<String, Value>,
    required: BTreeSet<String>,
    relations: BTreeMap<String, RelationDef>,
}

struct RelationDef {
    target: String,
    many: bool,
    required: bool,
}

#[derive(Clone)]
struct Entity {
    identifier: String,
    title: Value,
    icon: Option<String>,
    team: Vec<String>,
    properties: Map<String, Value>,
    relations: Map<String, Value>,
    created_at: String,
    updated_at: String,
    created_by: String,
    updated_by: String,
    datasource: String,
}

impl Entity {
    fn to_json(&self, blueprint: &str) -> Value {
        let mut out = json!({
            "identifier": self.identifier,
            "title": self.title,
            "team": self.team,
            "blueprint": blueprint,
            "properties": self.properties,
            "relations": self.relations,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "createdBy": self.created_by,
            "updatedBy": self.updated_by,
        });
        if let Some(icon) = &self.icon {
            out["icon"] = json!(icon);
        }
        out
    }

    fn stub(identifier: &str, now: &str, actor: &str, datasource: &str) -> Self {
        Entity {
            identifier: identifier.to_string(),
            title: Value::Null,
            icon: None,
            team: Vec::new(),
            properties: Map::new(),
            relations: Map::new(),
            created_at: now.to_string(),
            updated_at: now.to_string(),
            created_by: actor.to_string(),
            updated_by: actor.to_string(),
            datasource: datasource.to_string(),
        }
    }

    /// Does relation `key` point at `id`?
    fn relates_to(&self, key: &str, ids: &BTreeSet<String>) -> bool {
        match self.relations.get(key) {
            Some(Value::String(s)) => ids.contains(s),
            Some(Value::Array(items)) => items.iter().any(|v| v.as_str().is_some_and(|s| ids.contains(s))),
            _ => false,
        }
    }
}

/// A response before it becomes HTTP: status, JSON body, optional `Retry-After`.
struct Reply {
    status: u16,
    body: Value,
    retry_after: Option<u64>,
}

impl Reply {
    fn ok(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            retry_after: None,
        }
    }

    fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self::ok(
            status,
            json!({"ok": false, "error": code, "message": message.into()}),
        )
    }
}

impl From<Fail> for Reply {
    fn from(fail: Fail) -> Self {
        Reply::error(fail.status, fail.code, fail.message)
    }
}

/// A failed entity write; becomes a whole reply or a bulk `errors[]` item.
struct Fail {
    status: u16,
    code: &'static str,
    message: String,
}

fn fail(status: u16, code: &'static str, message: impl Into<String>) -> Fail {
    Fail {
        status,
        code,
        message: message.into(),
    }
}

type Res = Result<Reply, Reply>;

#[derive(Clone, Copy)]
struct WriteOpts {
    upsert: bool,
    merge: bool,
    create_missing: bool,
    /// Seeding skips the existence check of relation targets.
    check_targets: bool,
}

enum Route {
    Token,
    BlueprintGet(String),
    BlueprintCreate,
    BlueprintPatch(String),
    EntityUpsert(String),
    EntityBulkUpsert(String),
    EntitySearch(String),
    EntityBulkDelete(String),
    EntityDelete(String, String),
    EntityGet(String, String),
    Other,
}

impl Route {
    fn parse(method: &Method, path: &str) -> Route {
        let segs: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(|s| percent_decode(s, false))
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let m = method.clone();
        match (m, segs.as_slice()) {
            (Method::POST, ["v1", "auth", "access_token"]) => Route::Token,
            (Method::POST, ["v1", "blueprints"]) => Route::BlueprintCreate,
            (Method::GET, ["v1", "blueprints", id]) => Route::BlueprintGet(id.to_string()),
            (Method::PATCH, ["v1", "blueprints", id]) => Route::BlueprintPatch(id.to_string()),
            (Method::POST, ["v1", "blueprints", bp, "entities"]) => Route::EntityUpsert(bp.to_string()),
            (Method::POST, ["v1", "blueprints", bp, "entities", "bulk"]) => {
                Route::EntityBulkUpsert(bp.to_string())
            }
            (Method::POST, ["v1", "blueprints", bp, "entities", "search"]) => {
                Route::EntitySearch(bp.to_string())
            }
            (Method::POST, ["v1", "blueprints", bp, "bulk", "entities", "delete"]) => {
                Route::EntityBulkDelete(bp.to_string())
            }
            (Method::DELETE, ["v1", "blueprints", bp, "entities", id]) => {
                Route::EntityDelete(bp.to_string(), id.to_string())
            }
            (Method::GET, ["v1", "blueprints", bp, "entities", id]) => {
                Route::EntityGet(bp.to_string(), id.to_string())
            }
            _ => Route::Other,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Route::Token => "token",
            Route::BlueprintGet(_) => "blueprints.get",
            Route::BlueprintCreate => "blueprints.create",
            Route::BlueprintPatch(_) => "blueprints.patch",
            Route::EntityUpsert(_) => "entities.upsert",
            Route::EntityBulkUpsert(_) => "entities.bulk_upsert",
            Route::EntitySearch(_) => "entities.search",
            Route::EntityBulkDelete(_) => "entities.bulk_delete",
            Route::EntityDelete(..) => "entities.delete",
            Route::EntityGet(..) => "entities.get",
            Route::Other => "other",
        }
    }
}

/// What the handler extracted from the HTTP request.
struct Incoming<'a> {
    method: &'a Method,
    path: &'a str,
    query: HashMap<String, String>,
    headers: &'a HeaderMap,
    /// `None` when the body exceeded even the read limit.
    body: Option<Bytes>,
}

impl Incoming<'_> {
    fn flag(&self, name: &str) -> bool {
        self.query.get(name).is_some_and(|v| v == "true")
    }

    fn user_agent(&self) -> String {
        self.headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    fn body(&self) -> &[u8] {
        self.body.as_deref().unwrap_or_default()
    }
}

async fn handle(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    let (parts, body): (_, Body) = req.into_parts();
    let body = axum::body::to_bytes(body, READ_LIMIT).await.ok();
    let incoming = Incoming {
        method: &parts.method,
        path: parts.uri.path(),
        query: parse_query(parts.uri.query().unwrap_or_default()),
        headers: &parts.headers,
        body,
    };
    let (reply, headers) = {
        let mut st = shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let reply = st.dispatch(&incoming);
        (reply, st.common_headers())
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(reply.body)).into_response();
    let out = response.headers_mut();
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(HeaderName::from_static(name), value);
        }
    }
    if let Some(secs) = reply.retry_after {
        out.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

impl State {
    fn new(config: PortSimConfig) -> Self {
        let seed = config.seed;
        State {
            config,
            blueprints: BTreeMap::new(),
            tokens: HashMap::new(),
            current_token: None,
            calls: PortCalls::default(),
            faults: Vec::new(),
            fault_rng: StdRng::seed_from_u64(seed),
            token_rng: StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            rate: RateWindow::new(100_000, Duration::from_secs(300)),
            trace_seq: 0,
        }
    }

    fn common_headers(&mut self) -> Vec<(&'static str, String)> {
        self.trace_seq += 1;
        let now = Instant::now();
        self.rate.roll(now);
        let reset = SystemTime::now() + self.rate.until_reset(now);
        let reset_epoch = reset
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        vec![
            (
                "x-trace-id",
                format!("{:016x}{:016x}", self.config.seed, self.trace_seq),
            ),
            ("x-ratelimit-period", self.rate.window.as_secs().to_string()),
            ("x-ratelimit-limit", self.rate.limit.to_string()),
            (
                "x-ratelimit-remaining",
                self.rate.limit.saturating_sub(self.rate.used).to_string(),
            ),
            ("x-ratelimit-reset", reset_epoch.to_string()),
        ]
    }

    fn dispatch(&mut self, req: &Incoming<'_>) -> Reply {
        let route = Route::parse(req.method, req.path);
        self.calls.total += 1;
        *self.calls.by_route.entry(route.name().to_string()).or_default() += 1;

        if let Some(status) = self.injected_fault(req) {
            self.calls.faults_injected += 1;
            let code = match status {
                500 => "internal_error",
                502 => "bad_gateway",
                503 => "service_unavailable",
                504 => "gateway_timeout",
                _ => "injected_fault",
            };
            return Reply::error(status, code, format!("injected fault {status}"));
        }

        let now = Instant::now();
        self.rate.roll(now);
        if self.rate.used >= self.rate.limit {
            self.calls.rate_limited_429 += 1;
            let mut reply = Reply::error(429, "rate_limit_exceeded", "Too many requests");
            reply.retry_after = Some(self.rate.until_reset(now).as_secs_f64().ceil().max(1.0) as u64);
            return reply;
        }
        self.rate.used += 1;

        if !matches!(route, Route::Token) && !self.authorized(req.headers) {
            self.calls.unauthorized_401 += 1;
            return Reply::error(401, "unauthorized", "Missing or invalid access token");
        }

        if req.body.as_ref().is_none_or(|b| b.len() > MAX_BODY) {
            return Reply::error(
                413,
                "payload_too_large",
                format!("Request body is larger than {MAX_BODY} bytes"),
            );
        }

        let result = match route {
            Route::Token => self.token(req),
            Route::BlueprintGet(id) => self.blueprint_get(&id),
            Route::BlueprintCreate => self.blueprint_create(req),
            Route::BlueprintPatch(id) => self.blueprint_patch(&id, req),
            Route::EntityUpsert(bp) => self.entity_upsert(&bp, req),
            Route::EntityBulkUpsert(bp) => self.entity_bulk_upsert(&bp, req),
            Route::EntitySearch(bp) => self.entity_search(&bp, req),
            Route::EntityBulkDelete(bp) => self.entity_bulk_delete(&bp, req),
            Route::EntityDelete(bp, id) => self.entity_delete(&bp, &id, req),
            Route::EntityGet(bp, id) => self.entity_get(&bp, &id),
            Route::Other => Err(Reply::error(
                404,
                "not_found",
                format!("Route {} {} not found", req.method, req.path),
            )),
        };
        result.unwrap_or_else(|reply| reply)
    }

    /// A forced status from a matching rule, else a random transient one at `fault_rate`.
    fn injected_fault(&mut self, req: &Incoming<'_>) -> Option<u16> {
        let rule_pos = self.faults.iter().position(|rule| {
            rule.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(req.method.as_str()))
                && req.path.starts_with(&rule.path_prefix)
                && rule.times != Some(0)
        });
        if let Some(pos) = rule_pos {
            let rule = &mut self.faults[pos];
            let status = rule.status;
            if let Some(times) = rule.times.as_mut() {
                *times -= 1;
                if *times == 0 {
                    self.faults.remove(pos);
                }
            }
            return Some(status);
        }
        if self.config.fault_rate > 0.0 && self.fault_rng.random::<f64>() < self.config.fault_rate {
            return Some([500, 502, 503, 504][self.fault_rng.random_range(0..4)]);
        }
        None
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, token)) = value.split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer")
            && self
                .tokens
                .get(token.trim())
                .is_some_and(|&expiry| expiry > Instant::now())
    }

    // --- auth ---------------------------------------------------------------------------

    fn token(&mut self, req: &Incoming<'_>) -> Res {
        let body = parse_object(req.body())?;
        if let Some(extra) = body.keys().find(|k| *k != "clientId" && *k != "clientSecret") {
            return Err(Reply::error(
                422,
                "invalid_request",
                format!("Unexpected field \"{extra}\""),
            ));
        }
        let (Some(id), Some(secret)) = (
            body.get("clientId").and_then(Value::as_str),
            body.get("clientSecret").and_then(Value::as_str),
        ) else {
            return Err(Reply::error(
                422,
                "invalid_request",
                "clientId and clientSecret are required strings",
            ));
        };
        if id != self.config.client_id || secret != self.config.client_secret {
            self.calls.unauthorized_401 += 1;
            return Err(Reply::error(401, "unauthorized", "Invalid client credentials"));
        }
        let now = Instant::now();
        // Port hands back the active token while it is still valid.
        if let Some(token) = &self.current_token
            && let Some(&expiry) = self.tokens.get(token)
            && expiry > now
        {
            return Ok(token_reply(token, expiry - now));
        }
        let token = format!(
            "pst_{:016x}{:016x}",
            self.token_rng.random::<u64>(),
            self.calls.tokens_issued + 1
        );
        let ttl = self.config.token_ttl;
        self.tokens.insert(token.clone(), now + ttl);
        self.current_token = Some(token.clone());
        self.calls.tokens_issued += 1;
        Ok(token_reply(&token, ttl))
    }

    // --- blueprints ---------------------------------------------------------------------

    fn blueprint_get(&self, id: &str) -> Res {
        let bp = self.blueprint_ref(id)?;
        Ok(Reply::ok(200, json!({"ok": true, "blueprint": bp.json})))
    }

    fn blueprint_ref(&self, id: &str) -> Result<&Blueprint, Reply> {
        self.blueprints
            .get(id)
            .ok_or_else(|| Reply::error(404, "not_found", format!("Blueprint \"{id}\" not found")))
    }

    fn blueprint_create(&mut self, req: &Incoming<'_>) -> Res {
        let mut body = parse_object(req.body())?;
        let Some(id) = body.get("identifier").and_then(Value::as_str).map(str::to_string) else {
            return Err(Reply::error(
                422,
                "invalid_request",
                "identifier is a required string",
            ));
        };
        if !valid_blueprint_identifier(&id) {
            return Err(Reply::error(
                422,
                "invalid_request",
                format!("Blueprint identifier \"{id}\" does not match ^[A-Za-z0-9@_.+:\\\\/=-]+$"),
            ));
        }
        if self.blueprints.contains_key(&id) {
            return Err(Reply::error(
                409,
                "identifier_taken",
                format!("A blueprint with identifier \"{id}\" already exists"),
            ));
        }
        let now = now_rfc3339();
        let actor = self.config.client_id.clone();
        for (key, value) in [
            ("createdAt", &now),
            ("updatedAt", &now),
            ("createdBy", &actor),
            ("updatedBy", &actor),
        ] {
            body.insert(key.into(), json!(value));
        }
        let (json, schema) = self.normalize_blueprint(&id, body)?;
        self.blueprints.insert(
            id,
            Blueprint {
                json: json.clone(),
                schema,
                entities: BTreeMap::new(),
            },
        );
        Ok(Reply::ok(201, json!({"ok": true, "blueprint": json})))
    }

    fn blueprint_patch(&mut self, id: &str, req: &Incoming<'_>) -> Res {
        let patch = parse_object(req.body())?;
        let Value::Object(mut current) = self.blueprint_ref(id)?.json.clone() else {
            unreachable!("blueprints are stored as objects");
        };
        for (key, value) in patch {
            match key.as_str() {
                "identifier" if value.as_str() != Some(id) => {
                    return Err(Reply::error(
                        422,
                        "invalid_request",
                        "The identifier of a blueprint cannot be changed",
                    ));
                }
                "identifier" | "createdAt" | "createdBy" | "updatedAt" | "updatedBy" => {}
                "relations" => merge_keys(&mut current, "relations", value)?,
                "schema" => {
                    let Value::Object(schema_patch) = value else {
                        return Err(Reply::error(422, "invalid_request", "schema must be an object"));
                    };
                    let schema = current
                        .entry("schema")
                        .or_insert_with(|| json!({"properties": {}}));
                    let Value::Object(schema) = schema else {
                        unreachable!("normalized schema is an object");
                    };
                    for (skey, svalue) in schema_patch {
                        if skey == "properties" {
                            merge_keys(schema, "properties", svalue)?;
                        } else {
                            schema.insert(skey, svalue);
                        }
                    }
                }
                _ => {
                    current.insert(key, value);
                }
            }
        }
        current.insert("updatedAt".into(), json!(now_rfc3339()));
        current.insert("updatedBy".into(), json!(self.config.client_id));
        let (json, schema) = self.normalize_blueprint(id, current)?;
        let bp = self.blueprints.get_mut(id).expect("checked above");
        bp.json = json.clone();
        bp.schema = schema;
        Ok(Reply::ok(200, json!({"ok": true, "blueprint": json})))
    }

    /// Validates a full blueprint definition and fills defaults (`required`, `many`, …).
    fn normalize_blueprint(&self, id: &str, mut body: Map<String, Value>) -> Result<(Value, Schema), Reply> {
        let invalid = |msg: String| Reply::error(422, "invalid_request", msg);
        if !body.get("title").is_some_and(Value::is_string) {
            return Err(invalid("title is a required string".into()));
        }
        let schema = body.entry("schema").or_insert_with(|| json!({"properties": {}}));
        let Value::Object(schema) = schema else {
            return Err(invalid("schema must be an object".into()));
        };
        let properties = schema.entry("properties").or_insert_with(|| json!({}));
        let Value::Object(properties) = properties else {
            return Err(invalid("schema.properties must be an object".into()));
        };
        for (name, prop) in properties.iter() {
            let ty = prop.get("type").and_then(Value::as_str);
            if !ty.is_some_and(|t| PROPERTY_TYPES.contains(&t)) {
                return Err(invalid(format!(
                    "Property \"{name}\" has an invalid type {:?}",
                    prop.get("type")
                )));
            }
            if prop.get("enum").is_some_and(|e| !e.is_array()) {
                return Err(invalid(format!("enum of property \"{name}\" must be an array")));
            }
            if let Some(items) = prop.get("items") {
                let item_ty = items.get("type").and_then(Value::as_str);
                if !items.is_object()
                    || items.get("type").is_some() && !item_ty.is_some_and(|t| PROPERTY_TYPES.contains(&t))
                {
                    return Err(invalid(format!("items of property \"{name}\" are invalid")));
                }
            }
        }
        let properties = properties.clone();
        let required = schema.entry("required").or_insert_with(|| json!([]));
        let mut required_set = BTreeSet::new();
        for name in required.as_array().into_iter().flatten() {
            let Some(name) = name.as_str().filter(|n| properties.contains_key(*n)) else {
                return Err(invalid(format!("required entry {name} is not a property")));
            };
            required_set.insert(name.to_string());
        }
        if !required.is_array() {
            return Err(invalid("schema.required must be an array".into()));
        }

        let relations = body.entry("relations").or_insert_with(|| json!({}));
        let Value::Object(relations) = relations else {
            return Err(invalid("relations must be an object".into()));
        };
        let mut defs = BTreeMap::new();
        for (name, rel) in relations.iter_mut() {
            let Value::Object(rel) = rel else {
                return Err(invalid(format!("relation \"{name}\" must be an object")));
            };
            let Some(target) = rel.get("target").and_then(Value::as_str).map(str::to_string) else {
                return Err(invalid(format!("relation \"{name}\" needs a target")));
            };
            if target != id && !self.blueprints.contains_key(&target) {
                return Err(Reply::error(
                    404,
                    "not_found",
                    format!("Target blueprint \"{target}\" of relation \"{name}\" not found"),
                ));
            }
            let flag = |rel: &Map<String, Value>, key: &str| -> Result<bool, Reply> {
                match rel.get(key) {
                    None => Ok(false),
                    Some(Value::Bool(b)) => Ok(*b),
                    Some(_) => Err(invalid(format!("{key} of relation \"{name}\" must be a boolean"))),
                }
            };
            let many = flag(rel, "many")?;
            let required = flag(rel, "required")?;
            rel.insert("many".into(), json!(many));
            rel.insert("required".into(), json!(required));
            rel.entry("title").or_insert_with(|| json!(name));
            defs.insert(
                name.clone(),
                RelationDef {
                    target,
                    many,
                    required,
                },
            );
        }
        for key in [
            "mirrorProperties",
            "calculationProperties",
            "aggregationProperties",
        ] {
            body.entry(key).or_insert_with(|| json!({}));
        }
        let schema = Schema {
            properties,
            required: required_set,
            relations: defs,
        };
        Ok((Value::Object(body), schema))
    }

    // --- entity writes ------------------------------------------------------------------

    fn write_opts(req: &Incoming<'_>) -> WriteOpts {
        WriteOpts {
            upsert: req.flag("upsert"),
            merge: req.flag("merge"),
            create_missing: req.flag("create_missing_related_entities"),
            check_targets: true,
        }
    }

    fn entity_upsert(&mut self, bp: &str, req: &Incoming<'_>) -> Res {
        self.blueprint_ref(bp)?;
        let body = parse_json(req.body())?;
        let actor = self.config.client_id.clone();
        let (entity, created) =
            self.write_entity(bp, &body, Self::write_opts(req), &req.user_agent(), &actor)?;
        Ok(Reply::ok(
            if created { 201 } else { 200 },
            json!({"ok": true, "entity": entity}),
        ))
    }

    fn entity_bulk_upsert(&mut self, bp: &str, req: &Incoming<'_>) -> Res {
        self.blueprint_ref(bp)?;
        let body = parse_object(req.body())?;
        let items = match body.get("entities") {
            Some(Value::Array(items)) if (1..=MAX_BULK_UPSERT).contains(&items.len()) => items,
            _ => {
                return Err(Reply::error(
                    422,
                    "invalid_request",
                    format!("entities must be an array of 1 to {MAX_BULK_UPSERT} entities"),
                ));
            }
        };
        let opts = Self::write_opts(req);
        let datasource = req.user_agent();
        let actor = self.config.client_id.clone();
        let mut done = Vec::new();
        let mut errors = Vec::new();
        // In index order, so an entity may relate to one written earlier in the same request.
        for (index, item) in items.iter().enumerate() {
            let identifier = item.get("identifier").cloned().unwrap_or(Value::Null);
            if self.config.item_fault_rate > 0.0
                && self.fault_rng.random::<f64>() < self.config.item_fault_rate
            {
                self.calls.faults_injected += 1;
                let status = [500, 503][self.fault_rng.random_range(0..2)];
                errors.push(json!({
                    "index": index,
                    "identifier": identifier,
                    "statusCode": status,
                    "error": "internal_error",
                    "message": "injected per-entity fault",
                }));
                continue;
            }
            match self.write_entity(bp, item, opts, &datasource, &actor) {
                Ok((_, created)) => done.push(json!({
                    "index": index,
                    "identifier": identifier,
                    "created": created,
                    "additionalData": {},
                })),
                Err(f) => errors.push(json!({
                    "index": index,
                    "identifier": identifier,
                    "statusCode": f.status,
                    "error": f.code,
                    "message": f.message,
                })),
            }
        }
        let all_ok = errors.is_empty();
        Ok(Reply::ok(
            if all_ok { 200 } else { 207 },
            json!({"ok": all_ok, "entities": done, "errors": errors}),
        ))
    }

    /// Validates and stores one entity; returns its JSON and whether it was created.
    fn write_entity(
        &mut self,
        bp: &str,
        input: &Value,
        opts: WriteOpts,
        datasource: &str,
        actor: &str,
    ) -> Result<(Value, bool), Fail> {
        let blueprint = self
            .blueprints
            .get(bp)
            .ok_or_else(|| fail(404, "not_found", format!("Blueprint \"{bp}\" not found")))?;
        let Value::Object(input) = input else {
            return Err(fail(422, "invalid_request", "An entity must be a JSON object"));
        };
        const FIELDS: [&str; 6] = ["identifier", "title", "icon", "team", "properties", "relations"];
        if let Some(extra) = input.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(fail(
                422,
                "invalid_request",
                format!("Unexpected entity field \"{extra}\""),
            ));
        }
        let id = match input.get("identifier") {
            Some(Value::String(id)) if valid_entity_identifier(id) => id.clone(),
            Some(Value::String(id)) => {
                return Err(fail(
                    422,
                    "invalid_request",
                    format!("Entity identifier \"{id}\" does not match ^[\\p{{L}}0-9@_.+:\\\\/=-]+$"),
                ));
            }
            _ => return Err(fail(422, "invalid_request", "identifier is a required string")),
        };
        let existing = blueprint.entities.get(&id);
        if existing.is_some() && !opts.upsert {
            return Err(fail(
                409,
                "identifier_taken",
                format!("Entity \"{id}\" already exists in blueprint \"{bp}\""),
            ));
        }

        let now = now_rfc3339();
        let mut entity = match (existing, opts.merge) {
            (Some(old), true) => old.clone(),
            (Some(old), false) => Entity {
                created_at: old.created_at.clone(),
                created_by: old.created_by.clone(),
                ..Entity::stub(&id, &now, actor, datasource)
            },
            (None, _) => Entity::stub(&id, &now, actor, datasource),
        };
        if let Some(title) = input.get("title") {
            if !(title.is_string() || title.is_null()) {
                return Err(fail(422, "schema_mismatch", "title must be a string"));
            }
            entity.title = title.clone();
        }
        if let Some(icon) = input.get("icon") {
            match icon {
                Value::String(s) => entity.icon = Some(s.clone()),
                Value::Null => entity.icon = None,
                _ => return Err(fail(422, "schema_mismatch", "icon must be a string")),
            }
        }
        if let Some(team) = input.get("team") {
            entity.team = match team {
                Value::Null => Vec::new(),
                Value::String(s) => vec![s.clone()],
                Value::Array(items) if items.iter().all(Value::is_string) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => {
                    return Err(fail(
                        422,
                        "schema_mismatch",
                        "team must be a string or an array of strings",
                    ));
                }
            };
        }
        for (field, target) in [
            ("properties", &mut entity.properties),
            ("relations", &mut entity.relations),
        ] {
            match input.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::Object(sent)) => {
                    target.extend(sent.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                Some(_) => {
                    return Err(fail(422, "schema_mismatch", format!("{field} must be an object")));
                }
            }
        }

        validate_properties(&blueprint.schema, &entity.properties)?;
        let mut stubs: Vec<(String, String)> = Vec::new();
        for (name, value) in &entity.relations {
            let Some(def) = blueprint.schema.relations.get(name) else {
                return Err(fail(
                    422,
                    "schema_mismatch",
                    format!("Relation \"{name}\" does not exist in blueprint \"{bp}\""),
                ));
            };
            let targets: Vec<&str> = match (value, def.many) {
                (Value::Null, _) => Vec::new(),
                (Value::String(s), false) => vec![s.as_str()],
                (Value::Array(items), true) if items.iter().all(Value::is_string) => {
                    items.iter().filter_map(Value::as_str).collect()
                }
                (_, many) => {
                    let expected = if many { "an array of strings" } else { "a string" };
                    return Err(fail(
                        422,
                        "schema_mismatch",
                        format!("Relation \"{name}\" must be {expected} or null"),
                    ));
                }
            };
            // Only what this request sends is checked, so a stale stored reference does
            // not fail an unrelated merge.
            let sent = input
                .get("relations")
                .and_then(Value::as_object)
                .is_some_and(|sent| sent.contains_key(name));
            if !opts.check_targets || !sent {
                continue;
            }
            let target_entities = &self.blueprints[&def.target].entities;
            for target in targets {
                // The entity being written counts as existing, so it may relate to itself.
                let exists = target_entities.contains_key(target) || (def.target == bp && target == id);
                if exists || stubs.iter().any(|(b, t)| *b == def.target && t == target) {
                    continue;
                }
                if !opts.create_missing {
                    return Err(fail(
                        404,
                        "not_found",
                        format!(
                            "The related entity \"{target}\" of relation \"{name}\" (blueprint \"{}\") was not found",
                            def.target
                        ),
                    ));
                }
                stubs.push((def.target.clone(), target.to_string()));
            }
        }
        for (name, def) in &blueprint.schema.relations {
            if def.required && entity.relations.get(name).is_none_or(Value::is_null) {
                return Err(fail(
                    422,
                    "schema_mismatch",
                    format!("Required relation \"{name}\" is missing"),
                ));
            }
        }

        entity.updated_at = now.clone();
        entity.updated_by = actor.to_string();
        entity.datasource = datasource.to_string();
        let created = existing.is_none();
        for (target_bp, target) in stubs {
            let stub = Entity::stub(&target, &now, actor, datasource);
            self.blueprints
                .get_mut(&target_bp)
                .expect("relation targets exist")
                .entities
                .insert(target, stub);
        }
        let json = entity.to_json(bp);
        self.blueprints
            .get_mut(bp)
            .expect("checked above")
            .entities
            .insert(id, entity);
        Ok((json, created))
    }

    // --- entity reads -------------------------------------------------------------------

    fn entity_get(&self, bp: &str, id: &str) -> Res {
        let blueprint = self.blueprint_ref(bp)?;
        let entity = blueprint.entities.get(id).ok_or_else(|| {
            Reply::error(
                404,
                "not_found",
                format!("Entity \"{id}\" not found in blueprint \"{bp}\""),
            )
        })?;
        Ok(Reply::ok(200, json!({"ok": true, "entity": entity.to_json(bp)})))
    }

    fn entity_search(&self, bp: &str, req: &Incoming<'_>) -> Res {
        let blueprint = self.blueprint_ref(bp)?;
        let body = parse_object(req.body())?;
        let query = body
            .get("query")
            .ok_or_else(|| Reply::error(422, "invalid_request", "query is required"))?;
        let mut rule = compile_rule(query)?;
        rule.resolve(&self.blueprints);
        let limit = match body.get("limit") {
            None => DEFAULT_SEARCH_LIMIT,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=MAX_SEARCH_LIMIT).contains(n))
                .ok_or_else(|| {
                    Reply::error(
                        422,
                        "invalid_request",
                        format!("limit must be an integer from 1 to {MAX_SEARCH_LIMIT}"),
                    )
                })?,
        };
        let start = match body.get("from") {
            None | Some(Value::Null) => Bound::Unbounded,
            Some(Value::String(cursor)) => Bound::Excluded(
                decode_cursor(cursor)
                    .ok_or_else(|| Reply::error(422, "invalid_request", "from is not a valid cursor"))?,
            ),
            Some(_) => return Err(Reply::error(422, "invalid_request", "from must be a string")),
        };
        let include: Option<Vec<&str>> = match body.get("include") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                Some(items.iter().filter_map(Value::as_str).collect())
            }
            Some(_) => {
                return Err(Reply::error(
                    422,
                    "invalid_request",
                    "include must be an array of strings",
                ));
            }
        };

        // A search by `$identifier in [...]` looks those up instead of scanning the whole
        // blueprint (a catalog of a million entities); the answer is the same.
        let listed: Box<dyn Iterator<Item = &Entity>> = match rule.identifiers_in() {
            Some(mut ids) => {
                ids.sort_unstable();
                ids.dedup();
                let after = move |id: &&str| match &start {
                    Bound::Excluded(cursor) => *id > cursor.as_str(),
                    _ => true,
                };
                Box::new(
                    ids.into_iter()
                        .filter(after)
                        .filter_map(|id| blueprint.entities.get(id)),
                )
            }
            None => Box::new(
                blueprint
                    .entities
                    .range::<String, _>((start, Bound::Unbounded))
                    .map(|(_, e)| e),
            ),
        };
        let mut matches = listed.filter(|e| rule.matches(bp, e));
        let page: Vec<&Entity> = matches.by_ref().take(limit as usize).collect();
        let has_more = matches.next().is_some();
        let entities: Vec<Value> = page
            .iter()
            .map(|e| match &include {
                Some(fields) => project(&e.to_json(bp), fields),
                None => e.to_json(bp),
            })
            .collect();
        let mut out = json!({"ok": true, "entities": entities});
        if has_more && let Some(last) = page.last() {
            out["next"] = json!(encode_cursor(&last.identifier));
        }
        Ok(Reply::ok(200, out))
    }

    // --- deletes ------------------------------------------------------------------------

    fn entity_delete(&mut self, bp: &str, id: &str, req: &Incoming<'_>) -> Res {
        let blueprint = self.blueprint_ref(bp)?;
        if !blueprint.entities.contains_key(id) {
            return Err(Reply::error(
                404,
                "not_found",
                format!("Entity \"{id}\" not found in blueprint \"{bp}\""),
            ));
        }
        self.delete_entities(bp, &[id.to_string()], req.flag("delete_dependents"))?;
        Ok(Reply::ok(200, json!({"ok": true})))
    }

    fn entity_bulk_delete(&mut self, bp: &str, req: &Incoming<'_>) -> Res {
        let blueprint = self.blueprint_ref(bp)?;
        let body = parse_object(req.body())?;
        let ids: Vec<String> = match body.get("entities") {
            Some(Value::Array(items))
                if (1..=MAX_BULK_DELETE).contains(&items.len()) && items.iter().all(Value::is_string) =>
            {
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            }
            _ => {
                return Err(Reply::error(
                    422,
                    "invalid_request",
                    format!("entities must be an array of 1 to {MAX_BULK_DELETE} identifiers"),
                ));
            }
        };
        let mut seen = BTreeSet::new();
        let existing: Vec<String> = ids
            .into_iter()
            .filter(|id| blueprint.entities.contains_key(id) && seen.insert(id.clone()))
            .collect();
        self.delete_entities(bp, &existing, req.flag("delete_dependents"))?;
        Ok(Reply::ok(200, json!({"ok": true, "deletedEntities": existing})))
    }

    /// Deletes existing `ids` of `bp`; then either deletes the entities relating to them
    /// (recursively) or clears those references, as Port does for optional relations.
    fn delete_entities(&mut self, bp: &str, ids: &[String], dependents: bool) -> Result<(), Reply> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut doomed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        doomed.insert(bp.to_string(), ids.iter().cloned().collect());
        if dependents {
            // Waves: each scans the blueprints relating to what the previous wave doomed.
            let mut wave = doomed.clone();
            while !wave.is_empty() {
                let mut next: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                for (name, blueprint) in &self.blueprints {
                    for (rel, def) in &blueprint.schema.relations {
                        let Some(targets) = wave.get(&def.target) else {
                            continue;
                        };
                        for entity in blueprint.entities.values() {
                            let already = doomed.get(name).is_some_and(|s| s.contains(&entity.identifier));
                            if !already && entity.relates_to(rel, targets) {
                                next.entry(name.clone())
                                    .or_default()
                                    .insert(entity.identifier.clone());
                            }
                        }
                    }
                }
                for (name, set) in &next {
                    doomed
                        .entry(name.clone())
                        .or_default()
                        .extend(set.iter().cloned());
                }
                wave = next;
            }
            for (name, set) in doomed {
                if let Some(blueprint) = self.blueprints.get_mut(&name) {
                    for id in set {
                        blueprint.entities.remove(&id);
                    }
                }
            }
            return Ok(());
        }

        let deleted = &doomed[bp];
        let mut edits: Vec<(String, String, String)> = Vec::new();
        for (name, blueprint) in &self.blueprints {
            for (rel, def) in &blueprint.schema.relations {
                if def.target != bp {
                    continue;
                }
                for entity in blueprint.entities.values() {
                    if name == bp && deleted.contains(&entity.identifier) {
                        continue;
                    }
                    if !entity.relates_to(rel, deleted) {
                        continue;
                    }
                    if def.required {
                        return Err(Reply::error(
                            422,
                            "has_dependents",
                            format!(
                                "Entity \"{}\" of blueprint \"{name}\" depends on a deleted entity through required relation \"{rel}\"",
                                entity.identifier
                            ),
                        ));
                    }
                    edits.push((name.clone(), entity.identifier.clone(), rel.clone()));
                }
            }
        }
        let deleted = deleted.clone();
        let blueprint = self.blueprints.get_mut(bp).expect("checked by callers");
        for id in &deleted {
            blueprint.entities.remove(id);
        }
        for (name, id, rel) in edits {
            let Some(entity) = self
                .blueprints
                .get_mut(&name)
                .and_then(|b| b.entities.get_mut(&id))
            else {
                continue;
            };
            if let Some(value) = entity.relations.get_mut(&rel) {
                match value {
                    Value::Array(items) => {
                        items.retain(|v| v.as_str().is_none_or(|s| !deleted.contains(s)));
                    }
                    _ => *value = Value::Null,
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Validation helpers

fn valid_blueprint_identifier(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || IDENTIFIER_SYMBOLS.contains(c))
}

fn valid_entity_identifier(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id.chars().count() <= 1000
        && id
            .chars()
            .all(|c| c.is_alphabetic() || c.is_ascii_digit() || IDENTIFIER_SYMBOLS.contains(c))
}

fn validate_properties(schema: &Schema, properties: &Map<String, Value>) -> Result<(), Fail> {
    for (name, value) in properties {
        let Some(def) = schema.properties.get(name) else {
            return Err(fail(
                422,
                "schema_mismatch",
                format!("Property \"{name}\" does not exist in the blueprint schema"),
            ));
        };
        if value.is_null() {
            continue; // Checked against `required` below.
        }
        check_value(name, def, value).map_err(|msg| fail(422, "schema_mismatch", msg))?;
    }
    for name in &schema.required {
        if properties.get(name).is_none_or(Value::is_null) {
            return Err(fail(
                422,
                "schema_mismatch",
                format!("Required property \"{name}\" is missing"),
            ));
        }
    }
    Ok(())
}

/// Checks a non-null value against a property (or `items`) definition.
fn check_value(name: &str, def: &Value, value: &Value) -> Result<(), String> {
    if let Some(ty) = def.get("type").and_then(Value::as_str) {
        let ok = match ty {
            "string" => value.is_string(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !ok {
            return Err(format!("Property \"{name}\" must be of type {ty}, got {value}"));
        }
    }
    if def.get("format").and_then(Value::as_str) == Some("date-time")
        && let Some(s) = value.as_str()
        && DateTime::parse_from_rfc3339(s).is_err()
    {
        return Err(format!(
            "Property \"{name}\" must be an RFC 3339 date-time, got \"{s}\""
        ));
    }
    if let Some(allowed) = def.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!(
            "Property \"{name}\" must be one of {allowed:?}, got {value}"
        ));
    }
    if let (Some(items), Some(values)) = (def.get("items"), value.as_array()) {
        for (i, item) in values.iter().enumerate() {
            check_value(&format!("{name}[{i}]"), items, item)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Search

enum Op {
    Eq,
    Ne,
    In,
    NotIn,
    Contains,
    BeginsWith,
    EndsWith,
    Gt,
    Lt,
    Gte,
    Lte,
    IsEmpty,
    IsNotEmpty,
}

enum Rule {
    Group {
        and: bool,
        rules: Vec<Rule>,
    },
    Cond {
        property: String,
        op: Op,
        value: Value,
    },
    /// `{"operator": "relatedTo", "blueprint": "<bp>", "value": "<id>", "direction": ...}`:
    /// `downstream`, entities one of whose relations points at that entity (they depend on
    /// it); `upstream`, the entities that entity's own relations point at; no direction,
    /// both. Port's meaning: a user relating to an app is downstream of the app.
    RelatedTo {
        blueprint: String,
        value: String,
        upstream: bool,
        downstream: bool,
        /// Filled by `resolve`: what the entity `value` points at.
        upstream_ids: BTreeSet<String>,
    },
}

impl Rule {
    /// The identifiers an `and` of rules limits the search to with `$identifier in [...]`.
    fn identifiers_in(&self) -> Option<Vec<&str>> {
        let Rule::Group { and: true, rules } = self else {
            return None;
        };
        rules.iter().find_map(|r| match r {
            Rule::Cond {
                property,
                op: Op::In,
                value: Value::Array(ids),
            } if property == "$identifier" => Some(ids.iter().filter_map(Value::as_str).collect()),
            _ => None,
        })
    }
}

fn compile_rule(rule: &Value) -> Result<Rule, Reply> {
    let invalid = |msg: String| Reply::error(422, "invalid_request", msg);
    if let Some(combinator) = rule.get("combinator") {
        let and = match combinator.as_str() {
            Some("and") => true,
            Some("or") => false,
            _ => return Err(invalid(format!("Unknown combinator {combinator}"))),
        };
        let rules = rule
            .get("rules")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("rules must be an array".into()))?
            .iter()
            .map(compile_rule)
            .collect::<Result<_, _>>()?;
        return Ok(Rule::Group { and, rules });
    }
    if rule.get("operator").and_then(Value::as_str) == Some("relatedTo") {
        let value = rule.get("value").and_then(Value::as_str);
        return match (rule.get("blueprint").and_then(Value::as_str), value) {
            (Some(b), Some(v)) => {
                let (upstream, downstream) = match rule.get("direction").and_then(Value::as_str) {
                    None => (true, true),
                    Some("upstream") => (true, false),
                    Some("downstream") => (false, true),
                    Some(other) => {
                        return Err(invalid(format!(
                            "relatedTo direction must be upstream or downstream, got {other:?}"
                        )));
                    }
                };
                Ok(Rule::RelatedTo {
                    blueprint: b.to_string(),
                    value: v.to_string(),
                    upstream,
                    downstream,
                    upstream_ids: BTreeSet::new(),
                })
            }
            _ => Err(invalid(format!(
                "relatedTo needs a blueprint and a string value: {rule}"
            ))),
        };
    }
    let property = rule
        .get("property")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("Rule {rule} needs a property or a combinator")))?;
    let op = match rule.get("operator").and_then(Value::as_str) {
        Some("=") => Op::Eq,
        Some("!=") => Op::Ne,
        Some("in") => Op::In,
        Some("notIn") => Op::NotIn,
        Some("contains") => Op::Contains,
        Some("beginsWith") => Op::BeginsWith,
        Some("endsWith") => Op::EndsWith,
        Some(">") => Op::Gt,
        Some("<") => Op::Lt,
        Some(">=") => Op::Gte,
        Some("<=") => Op::Lte,
        Some("isEmpty") => Op::IsEmpty,
        Some("isNotEmpty") => Op::IsNotEmpty,
        other => return Err(invalid(format!("Unsupported operator {other:?}"))),
    };
    let value = rule.get("value").cloned().unwrap_or(Value::Null);
    if matches!(op, Op::In | Op::NotIn) && !value.is_array() {
        return Err(invalid(format!(
            "Operator in/notIn on \"{property}\" needs an array value"
        )));
    }
    Ok(Rule::Cond {
        property: property.to_string(),
        op,
        value,
    })
}

impl Rule {
    fn matches(&self, bp: &str, entity: &Entity) -> bool {
        match self {
            Rule::Group { and: true, rules } => rules.iter().all(|r| r.matches(bp, entity)),
            Rule::Group { and: false, rules } => rules.iter().any(|r| r.matches(bp, entity)),
            Rule::Cond { property, op, value } => {
                let actual = field_of(bp, entity, property);
                op_matches(op, &actual, value)
            }
            Rule::RelatedTo {
                value,
                upstream,
                downstream,
                upstream_ids,
                ..
            } => {
                let points_at_value = entity.relations.values().any(|r| match r {
                    Value::String(s) => s == value,
                    Value::Array(items) => items.iter().any(|i| i.as_str() == Some(value)),
                    _ => false,
                });
                (*downstream && points_at_value) || (*upstream && upstream_ids.contains(&entity.identifier))
            }
        }
    }

    /// Fills what `relatedTo … upstream` needs: the relation targets of the named entity.
    fn resolve(&mut self, blueprints: &BTreeMap<String, Blueprint>) {
        match self {
            Rule::Group { rules, .. } => rules.iter_mut().for_each(|r| r.resolve(blueprints)),
            Rule::Cond { .. } => {}
            Rule::RelatedTo {
                blueprint,
                value,
                upstream_ids,
                ..
            } => {
                if let Some(e) = blueprints.get(blueprint).and_then(|b| b.entities.get(value)) {
                    for r in e.relations.values() {
                        match r {
                            Value::String(s) => {
                                upstream_ids.insert(s.clone());
                            }
                            Value::Array(items) => {
                                upstream_ids.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

fn field_of(bp: &str, e: &Entity, property: &str) -> Value {
    match property {
        "$identifier" => json!(e.identifier),
        "$title" => e.title.clone(),
        "$datasource" => json!(e.datasource),
        "$updatedAt" => json!(e.updated_at),
        "$createdAt" => json!(e.created_at),
        "$updatedBy" => json!(e.updated_by),
        "$createdBy" => json!(e.created_by),
        "$blueprint" => json!(bp),
        "$team" => json!(e.team),
        "$icon" => json!(e.icon),
        // Relations are searchable by name too, which keeps reference lookups simple.
        name => e
            .properties
            .get(name)
            .or_else(|| e.relations.get(name))
            .cloned()
            .unwrap_or(Value::Null),
    }
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) {
        return x.partial_cmp(&y);
    }
    let (x, y) = (a.as_str()?, b.as_str()?);
    match (DateTime::parse_from_rfc3339(x), DateTime::parse_from_rfc3339(y)) {
        (Ok(x), Ok(y)) => Some(x.cmp(&y)),
        _ => Some(x.cmp(y)),
    }
}

fn op_matches(op: &Op, actual: &Value, value: &Value) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let in_list = |list: &Value| {
        let list = list.as_array().map(Vec::as_slice).unwrap_or_default();
        match actual {
            Value::Array(items) => items.iter().any(|a| list.iter().any(|v| values_equal(a, v))),
            a => list.iter().any(|v| values_equal(a, v)),
        }
    };
    let strings = || actual.as_str().zip(value.as_str());
    match op {
        Op::Eq => values_equal(actual, value),
        Op::Ne => !values_equal(actual, value),
        Op::In => in_list(value),
        Op::NotIn => !in_list(value),
        Op::Contains => match actual {
            Value::Array(items) => items.iter().any(|a| values_equal(a, value)),
            _ => strings().is_some_and(|(a, v)| a.contains(v)),
        },
        Op::BeginsWith => strings().is_some_and(|(a, v)| a.starts_with(v)),
        Op::EndsWith => strings().is_some_and(|(a, v)| a.ends_with(v)),
        Op::Gt => compare(actual, value) == Some(Greater),
        Op::Lt => compare(actual, value) == Some(Less),
        Op::Gte => matches!(compare(actual, value), Some(Greater | Equal)),
        Op::Lte => matches!(compare(actual, value), Some(Less | Equal)),
        Op::IsEmpty => is_empty(actual),
        Op::IsNotEmpty => !is_empty(actual),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Keeps only the `include`d fields: `$identifier`-style meta fields, `properties.x`,
/// `relations.x`, or a bare property/relation name.
fn project(entity: &Value, fields: &[&str]) -> Value {
    let mut out = Map::new();
    for field in fields {
        let field = field.strip_prefix('$').unwrap_or(field);
        if let Some((group @ ("properties" | "relations"), key)) = field.split_once('.') {
            if let Some(v) = entity[group].get(key) {
                let slot = out.entry(group).or_insert_with(|| json!({}));
                slot[key] = v.clone();
            }
        } else if let Some(v) = entity.get(field) {
            out.insert(field.to_string(), v.clone());
        } else {
            for group in ["properties", "relations"] {
                if let Some(v) = entity[group].get(field) {
                    let slot = out.entry(group).or_insert_with(|| json!({}));
                    slot[field] = v.clone();
                }
            }
        }
    }
    Value::Object(out)
}

/// Cursors are opaque to clients: the hex of the last identifier returned.
fn encode_cursor(identifier: &str) -> String {
    identifier.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(cursor: &str) -> Option<String> {
    if !cursor.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

// ---------------------------------------------------------------------------------------
// Small helpers

fn token_reply(token: &str, valid_for: Duration) -> Reply {
    Reply::ok(
        200,
        json!({
            "ok": true,
            "accessToken": token,
            "expiresIn": valid_for.as_secs(),
            "tokenType": "Bearer",
        }),
    )
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_json(body: &[u8]) -> Result<Value, Reply> {
    serde_json::from_slice(body)
        .map_err(|err| Reply::error(400, "invalid_request", format!("Invalid JSON body: {err}")))
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    match parse_json(body)? {
        Value::Object(map) => Ok(map),
        _ => Err(Reply::error(
            422,
            "invalid_request",
            "The body must be a JSON object",
        )),
    }
}

/// Merges `patch` (an object) into `target[key]` key by key; a null value removes the key.
fn merge_keys(target: &mut Map<String, Value>, key: &str, patch: Value) -> Result<(), Reply> {
    let Value::Object(patch) = patch else {
        return Err(Reply::error(
            422,
            "invalid_request",
            format!("{key} must be an object"),
        ));
    };
    let slot = target.entry(key).or_insert_with(|| json!({}));
    let Value::Object(slot) = slot else {
        return Err(Reply::error(
            422,
            "invalid_request",
            format!("{key} must be an object"),
        ));
    };
    for (k, v) in patch {
        if v.is_null() {
            slot.remove(&k);
        } else {
            slot.insert(k, v);
        }
    }
    Ok(())
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match bytes[i] {
            b'%' if hex(i + 1).is_some() && hex(i + 2).is_some() => {
                out.push((hex(i + 1).unwrap_or(0) * 16 + hex(i + 2).unwrap_or(0)) as u8);
                i += 3;
                continue;
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    struct Client {
        http: reqwest::Client,
        base: String,
        token: String,
    }

    impl Client {
        async fn new(sim: &PortSim) -> Client {
            let http = reqwest::Client::builder()
                .user_agent("okta-port/test")
                .build()
                .unwrap();
            let token = fetch_token(&http, sim).await;
            Client {
                http,
                base: sim.base_url.clone(),
                token,
            }
        }

        async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
            let mut req = self
                .http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(&self.token);
            if let Some(body) = body {
                req = req.json(&body);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap())
        }

        async fn post(&self, path: &str, body: Value) -> (u16, Value) {
            self.send(Method::POST, path, Some(body)).await
        }
    }

    async fn fetch_token(http: &reqwest::Client, sim: &PortSim) -> String {
        let resp: Value = http
            .post(format!("{}/v1/auth/access_token", sim.base_url))
            .json(&json!({"clientId": "test-client", "clientSecret": "test-secret"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        resp["accessToken"].as_str().unwrap().to_string()
    }

    async fn setup_users(client: &Client) {
        let (status, _) = client
            .post(
                "/v1/blueprints",
                json!({
                    "identifier": "oktaUser",
                    "title": "Okta user",
                    "schema": {
                        "properties": {
                            "email": {"type": "string", "format": "email"},
                            "status": {"type": "string", "enum": ["ACTIVE", "SUSPENDED"]},
                            "lastLogin": {"type": "string", "format": "date-time"},
                        },
                        "required": ["email"],
                    },
                    "relations": {"manager": {"target": "oktaUser", "many": false, "required": false}},
                }),
            )
            .await;
        assert_eq!(status, 201);
    }

    #[tokio::test]
    async fn token_is_reused_and_rejected_after_expiry() {
        let sim = PortSim::start(PortSimConfig::default()).await;
        let http = reqwest::Client::new();
        let url = format!("{}/v1/auth/access_token", sim.base_url);
        let bad = http
            .post(&url)
            .json(&json!({"clientId": "test-client", "clientSecret": "nope"}))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status().as_u16(), 401);
        let extra = http
            .post(&url)
            .json(&json!({"clientId": "test-client", "clientSecret": "test-secret", "x": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(extra.status().as_u16(), 422);

        let first = fetch_token(&http, &sim).await;
        assert_eq!(fetch_token(&http, &sim).await, first, "active token is reused");
        let get = |token: String| {
            http.get(format!("{}/v1/blueprints/missing", sim.base_url))
                .bearer_auth(token)
                .send()
        };
        let resp = get(first.clone()).await.unwrap();
        assert_eq!(resp.status().as_u16(), 404);
        assert!(resp.headers().contains_key("x-ratelimit-remaining"));
        assert!(resp.headers().contains_key("x-trace-id"));

        sim.expire_tokens();
        let resp = get(first.clone()).await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
        let second = fetch_token(&http, &sim).await;
        assert_ne!(second, first);
        assert_eq!(get(second).await.unwrap().status().as_u16(), 404);

        let calls = sim.calls();
        assert_eq!(calls.tokens_issued, 2);
        assert_eq!(calls.unauthorized_401, 2);
        assert_eq!(calls.by_route["token"], 5);

        sim.add_fault(FaultRule {
            method: Some("GET".into()),
            path_prefix: "/v1/blueprints".into(),
            status: 503,
            times: Some(1),
        });
        let token = fetch_token(&http, &sim).await;
        assert_eq!(get(token.clone()).await.unwrap().status().as_u16(), 503);
        assert_eq!(get(token.clone()).await.unwrap().status().as_u16(), 404);
        sim.set_rate_limit(1, Duration::from_secs(60));
        assert_eq!(get(token.clone()).await.unwrap().status().as_u16(), 404);
        let limited = get(token).await.unwrap();
        assert_eq!(limited.status().as_u16(), 429);
        assert!(limited.headers().contains_key("retry-after"));
        assert_eq!(limited.headers()["x-ratelimit-remaining"], "0");
        let calls = sim.calls();
        assert_eq!((calls.faults_injected, calls.rate_limited_429), (1, 1));
    }

    #[tokio::test]
    async fn relations_need_existing_target_blueprints() {
        let sim = PortSim::start(PortSimConfig::default()).await;
        let client = Client::new(&sim).await;
        let group = json!({
            "identifier": "oktaGroup",
            "title": "Okta group",
            "schema": {"properties": {"name": {"type": "string"}}},
            "relations": {"members": {"target": "oktaUser", "many": true, "required": false}},
        });
        let (status, body) = client.post("/v1/blueprints", group).await;
        assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

        let bare = json!({"identifier": "oktaGroup", "title": "Okta group", "schema": {"properties": {}}});
        assert_eq!(client.post("/v1/blueprints", bare.clone()).await.0, 201);
        assert_eq!(client.post("/v1/blueprints", bare).await.0, 409);
        let bad_type =
            json!({"identifier": "x", "title": "X", "schema": {"properties": {"p": {"type": "date"}}}});
        assert_eq!(client.post("/v1/blueprints", bad_type).await.0, 422);

        setup_users(&client).await;
        let patch =
            json!({"relations": {"members": {"target": "oktaUser", "many": true, "required": false}}});
        let (status, body) = client
            .send(Method::PATCH, "/v1/blueprints/oktaGroup", Some(patch))
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["blueprint"]["relations"]["members"]["target"], "oktaUser");
        assert_eq!(
            sim.blueprint("oktaGroup").unwrap()["relations"]["members"]["many"],
            true
        );
    }

    #[tokio::test]
    async fn bulk_upsert_reports_errors_by_index() {
        let sim = PortSim::start(PortSimConfig::default()).await;
        let client = Client::new(&sim).await;
        setup_users(&client).await;
        let body = json!({"entities": [
            {"identifier": "ceo", "title": "CEO", "properties": {"email": "ceo@x.io"}, "relations": {"manager": "ceo"}},
            {"identifier": "a", "properties": {"email": "a@x.io"}, "relations": {"manager": "ghost"}},
            {"identifier": "b", "properties": {"email": "b@x.io", "status": "GONE"}},
            {"identifier": "c", "properties": {"email": "c@x.io", "lastLogin": null}, "relations": {"manager": "ceo"}},
        ]});
        let path = "/v1/blueprints/oktaUser/entities/bulk?upsert=true&merge=true";
        let (status, resp) = client.post(path, body).await;
        assert_eq!(status, 207);
        assert_eq!(resp["ok"], false);
        let ok: Vec<u64> = resp["entities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["index"].as_u64().unwrap())
            .collect();
        assert_eq!(ok, [0, 3]);
        let errors = resp["errors"].as_array().unwrap();
        assert_eq!(errors[0]["index"], 1);
        assert_eq!(errors[0]["statusCode"], 404);
        assert_eq!(errors[0]["error"], "not_found");
        assert_eq!(errors[1]["index"], 2);
        assert_eq!(errors[1]["statusCode"], 422);
        assert!(errors[1]["message"].as_str().unwrap().contains("status"));

        let ceo = sim.entity("oktaUser", "ceo").unwrap();
        assert_eq!(ceo["relations"]["manager"], "ceo");
        assert_eq!(
            sim.datasource_of("oktaUser", "c").as_deref(),
            Some("okta-port/test")
        );

        let stub_path =
            "/v1/blueprints/oktaUser/entities/bulk?upsert=true&create_missing_related_entities=true";
        let body = json!({"entities": [{"identifier": "a", "properties": {"email": "a@x.io"}, "relations": {"manager": "ghost"}}]});
        let (status, resp) = client.post(stub_path, body).await;
        assert_eq!((status, resp["ok"].as_bool()), (200, Some(true)));
        assert!(sim.entity("oktaUser", "ghost").is_some());

        // Our own 413 envelope, not axum's default body-limit answer.
        let big = "x".repeat(MAX_BODY);
        let body = json!({"entities": [{"identifier": "big", "properties": {"email": big}}]});
        let (status, resp) = client.post(path, body).await;
        assert_eq!((status, resp["error"].as_str()), (413, Some("payload_too_large")));
    }

    #[tokio::test]
    async fn search_by_datasource_paginates() {
        let sim = PortSim::start(PortSimConfig::default()).await;
        let client = Client::new(&sim).await;
        setup_users(&client).await;
        for i in 0..25 {
            let entity =
                json!({"identifier": format!("u{i:02}"), "properties": {"email": format!("u{i}@x.io")}});
            let ua = if i % 5 == 0 {
                "other-tool"
            } else {
                "okta-port/test"
            };
            sim.seed_entity("oktaUser", entity, ua);
        }
        let mut seen = Vec::new();
        let mut from: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut body = json!({
                "query": {"combinator": "and", "rules": [
                    {"property": "$datasource", "operator": "beginsWith", "value": "okta-port"},
                ]},
                "include": ["$identifier"],
                "limit": 7,
            });
            if let Some(cursor) = &from {
                body["from"] = json!(cursor);
            }
            let (status, resp) = client.post("/v1/blueprints/oktaUser/entities/search", body).await;
            assert_eq!(status, 200);
            pages += 1;
            for e in resp["entities"].as_array().unwrap() {
                seen.push(e["identifier"].as_str().unwrap().to_string());
            }
            match resp.get("next").and_then(Value::as_str) {
                Some(next) => from = Some(next.to_string()),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let expected: Vec<String> = (0..25)
            .filter(|i| i % 5 != 0)
            .map(|i| format!("u{i:02}"))
            .collect();
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn bulk_delete_clears_or_cascades_references() {
        let sim = PortSim::start(PortSimConfig::default()).await;
        let client = Client::new(&sim).await;
        setup_users(&client).await;
        let group = json!({
            "identifier": "oktaGroup",
            "title": "Okta group",
            "schema": {"properties": {}},
            "relations": {"members": {"target": "oktaUser", "many": true}},
        });
        assert_eq!(client.post("/v1/blueprints", group).await.0, 201);
        for (id, manager) in [("boss", None), ("mid", Some("boss")), ("dev", Some("mid"))] {
            let entity = json!({"identifier": id, "properties": {"email": format!("{id}@x.io")}, "relations": {"manager": manager}});
            let (status, _) = client
                .post("/v1/blueprints/oktaUser/entities?upsert=true", entity)
                .await;
            assert_eq!(status, 201);
        }
        let g = json!({"identifier": "eng", "relations": {"members": ["boss", "mid", "dev"]}});
        assert_eq!(client.post("/v1/blueprints/oktaGroup/entities", g).await.0, 201);

        let (status, resp) = client
            .post(
                "/v1/blueprints/oktaUser/bulk/entities/delete?delete_dependents=false",
                json!({"entities": ["boss", "nobody"]}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(resp["deletedEntities"], json!(["boss"]));
        assert_eq!(
            sim.entity("oktaUser", "mid").unwrap()["relations"]["manager"],
            Value::Null
        );
        assert_eq!(
            sim.entity("oktaGroup", "eng").unwrap()["relations"]["members"],
            json!(["mid", "dev"])
        );

        let (status, _) = client
            .send(
                Method::DELETE,
                "/v1/blueprints/oktaUser/entities/mid?delete_dependents=true",
                None,
            )
            .await;
        assert_eq!(status, 200);
        // `dev` reports to `mid`, and the group relates to `mid`: both go with it.
        assert!(sim.entities("oktaUser").is_empty());
        assert!(sim.entities("oktaGroup").is_empty());
    }
}
