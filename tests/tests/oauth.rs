//! Okta OAuth 2.0 service-app authentication end to end: okta-port's real client against
//! the Okta simulator's org authorization server (private_key_jwt client assertions, DPoP
//! with the nonce round trip, scopes), over HTTP on loopback.
//!
//! The keys are test-only fixtures (`tests/fixtures/oauth/README.md`).

use std::sync::Arc;

use jsonwebtoken::Algorithm;
use okta_port::config::Config;
use okta_port::okta::{Client, Listing, OktaSource};
use okta_port::sync::RunOverrides;
use okta_port::{App, Report};
use okta_port_tests::expected;
use okta_port_tests::harness::{self, Env, LogCapture, assert_catalog};
use okta_port_tests::okta_sim::{OAuthSimConfig, OktaSimConfig, SimClient};
use okta_port_tests::orggen::{Org, OrgSpec, generate};
use okta_port_tests::port_sim::PortSimConfig;

const CLIENT_ID: &str = "0oa-okta-port-test";
const ALL_SCOPES: [&str; 4] = [
    "okta.users.read",
    "okta.groups.read",
    "okta.apps.read",
    "okta.eventHooks.manage",
];

fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/oauth/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[derive(Clone, Copy, Debug)]
enum KeyKind {
    Rsa,
    Ec,
}

impl KeyKind {
    fn key_id(self) -> &'static str {
        match self {
            KeyKind::Rsa => "test-rsa-key",
            KeyKind::Ec => "test-ec-key",
        }
    }

    fn client(self, scopes: &[&str]) -> SimClient {
        let (pem, alg) = match self {
            KeyKind::Rsa => (fixture("rsa-public.pem"), Algorithm::RS256),
            KeyKind::Ec => (fixture("ec-public.pem"), Algorithm::ES256),
        };
        SimClient {
            client_id: CLIENT_ID.into(),
            key_id: self.key_id().into(),
            public_key_pem: pem,
            alg,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

fn org(users: usize) -> Org {
    generate(&OrgSpec {
        users,
        groups: 20,
        apps: 8,
        seed: 11,
    })
}

async fn start(org: Org, oauth: OAuthSimConfig) -> Env {
    Env::start(
        org,
        OktaSimConfig {
            oauth,
            ..OktaSimConfig::default()
        },
        PortSimConfig::default(),
    )
    .await
}

/// okta-port's configuration for `env` with a service app instead of the SSWS token.
fn service_app_config(env: &Env, private_key: &str, key_id: &str, extra: &[(&'static str, &str)]) -> Config {
    let mut vars: Vec<(&'static str, String)> = env
        .variables()
        .into_iter()
        .filter(|(k, _)| *k != "OKTA_API_TOKEN")
        .collect();
    vars.push(("OKTA_CLIENT_ID", CLIENT_ID.into()));
    vars.push(("OKTA_PRIVATE_KEY", private_key.into()));
    vars.push(("OKTA_KEY_ID", key_id.into()));
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push((k, (*v).to_owned()));
    }
    Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
        .expect("service app configuration is valid")
}

/// No private key, client assertion, DPoP proof or access token text in any line.
fn assert_clean(logs: &LogCapture, env: &Env, private_key: &str) {
    let text = logs.text();
    assert!(!text.is_empty(), "nothing was logged: is the capture working?");
    // Every JWT (assertion, proof) starts with a base64url JSON header: `eyJ`.
    assert!(!text.contains("eyJ"), "a JWT reached the logs");
    for token in env.okta.issued_tokens() {
        assert!(!text.contains(&token), "an access token reached the logs");
    }
    for fragment in secret_fragments(private_key) {
        assert!(!text.contains(&fragment), "private key material reached the logs");
    }
}

/// Pieces of a private key (PEM body lines, JWK private members) that must never show.
fn secret_fragments(private_key: &str) -> Vec<String> {
    if private_key.trim_start().starts_with('{') {
        let jwk: serde_json::Value = serde_json::from_str(private_key).unwrap();
        ["d", "p", "q", "dp", "dq", "qi"]
            .iter()
            .filter_map(|m| jwk[*m].as_str())
            .map(|v| v[..v.len().min(24)].to_owned())
            .collect()
    } else {
        private_key
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
            .map(str::to_owned)
            .collect()
    }
}

fn outcome_text(result: &Result<Report, okta_port::sync::SyncError>) -> String {
    match result {
        Ok(report) => report.errors.join("\n"),
        Err(e) => e.to_string(),
    }
}

/// Serves the webhook handler on loopback, as its Function URL would.
async fn serve_webhook() -> String {
    use axum::body::to_bytes;
    use lambda_http::{Body, Request};
    use okta_port::queue::MemoryQueue;
    let config = Arc::new(harness::webhook_config());
    let queue = MemoryQueue::default();
    let handler = move |request: axum::extract::Request| {
        let (config, queue) = (config.clone(), queue.clone());
        async move {
            let (parts, body) = request.into_parts();
            let bytes = to_bytes(body, 2 * 1024 * 1024).await.unwrap_or_default();
            let request = Request::from_parts(parts, Body::from(bytes.to_vec()));
            let response = okta_port::webhook::handle(&request, &config, &queue).await;
            let (parts, body) = response.into_parts();
            axum::response::Response::from_parts(parts, axum::body::Body::from(body.as_ref().to_vec()))
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(handler)).await });
    url
}

#[tokio::test]
async fn resync_and_hook_provisioning_run_with_a_service_app() {
    let (logs, _guard) = LogCapture::install(tracing::Level::TRACE);
    // (key kind, key text, DPoP required by the app)
    let cases = [
        (KeyKind::Rsa, fixture("rsa-private.pem"), true),
        (KeyKind::Ec, fixture("ec-private.pem"), true),
        (KeyKind::Rsa, fixture("rsa-private.jwk.json"), true),
        // An app without DPoP: Bearer tokens.
        (KeyKind::Ec, fixture("ec-private.jwk.json"), false),
    ];
    for (kind, key, require_dpop) in cases {
        let label = format!("{kind:?} dpop={require_dpop}");
        let org = org(450);
        let expected = expected::catalog(&org);
        let env = start(
            org,
            OAuthSimConfig {
                clients: vec![kind.client(&ALL_SCOPES)],
                require_dpop,
                ..OAuthSimConfig::default()
            },
        )
        .await;
        let webhook = serve_webhook().await;
        // WEBHOOK_URL set: the default scopes include okta.eventHooks.manage.
        let mut config = service_app_config(&env, &key, kind.key_id(), &[("WEBHOOK_URL", &webhook)]);
        assert!(
            config
                .okta
                .service_app
                .as_ref()
                .unwrap()
                .scopes
                .contains(&"okta.eventHooks.manage".to_owned())
        );
        config.hook.secret = Some(harness::WEBHOOK_SECRET.to_string().into());
        let app = App::new(&config).unwrap();

        let report = app.resync(RunOverrides::default()).await.expect("resync runs");
        assert!(report.is_success(), "{label}: {}", report.to_text());
        assert_catalog(&env.catalog(), &expected);

        let hook = app.ensure_hook(None).await.expect("hook is provisioned");
        assert!(hook.created && hook.verified, "{label}: {hook:?}");
        assert_eq!(env.okta.hooks().len(), 1);

        let calls = env.okta.calls();
        assert!(
            calls.token_refusals.is_empty(),
            "{label}: {:?}",
            calls.token_refusals
        );
        assert!(
            calls.scope_denials.is_empty(),
            "{label}: {:?}",
            calls.scope_denials
        );
        assert_eq!(calls.tokens_issued, 1, "{label}: one token serves the whole run");
        // With DPoP: the first request learns the nonce, the second gets the token.
        assert_eq!(calls.token_requests, if require_dpop { 2 } else { 1 }, "{label}");
        assert_eq!(app.okta.token_requests(), calls.token_requests);
        assert_clean(&logs, &env, &key);
    }
}

#[tokio::test]
async fn refused_credentials_give_a_clear_error_without_a_retry_storm() {
    let (logs, _guard) = LogCapture::install(tracing::Level::TRACE);
    let read_scopes = &ALL_SCOPES[..3];
    struct Case {
        name: &'static str,
        oauth: OAuthSimConfig,
        key: String,
        kind: KeyKind,
        client_id: &'static str,
        scopes: Option<&'static str>,
        expect: &'static [&'static str],
        max_token_requests: u64,
    }
    let cases = [
        Case {
            name: "wrong key",
            oauth: OAuthSimConfig {
                clients: vec![KeyKind::Rsa.client(read_scopes)],
                ..OAuthSimConfig::default()
            },
            key: fixture("rsa-other-private.pem"),
            kind: KeyKind::Rsa,
            client_id: CLIENT_ID,
            scopes: None,
            expect: &["invalid_client", "signature is invalid"],
            max_token_requests: 1,
        },
        Case {
            name: "unknown client",
            oauth: OAuthSimConfig {
                clients: vec![KeyKind::Rsa.client(read_scopes)],
                ..OAuthSimConfig::default()
            },
            key: fixture("rsa-private.pem"),
            kind: KeyKind::Rsa,
            client_id: "0oa-nobody",
            scopes: None,
            expect: &["invalid_client", "client_id"],
            max_token_requests: 1,
        },
        Case {
            name: "scope not granted",
            oauth: OAuthSimConfig {
                clients: vec![KeyKind::Ec.client(&["okta.users.read", "okta.groups.read"])],
                ..OAuthSimConfig::default()
            },
            key: fixture("ec-private.pem"),
            kind: KeyKind::Ec,
            client_id: CLIENT_ID,
            scopes: None,
            expect: &["invalid_scope", "okta.apps.read"],
            max_token_requests: 1,
        },
        Case {
            name: "nonce that keeps changing",
            oauth: OAuthSimConfig {
                clients: vec![KeyKind::Ec.client(read_scopes)],
                rotate_nonce: true,
                ..OAuthSimConfig::default()
            },
            key: fixture("ec-private.pem"),
            kind: KeyKind::Ec,
            client_id: CLIENT_ID,
            scopes: None,
            expect: &["use_dpop_nonce", "giving up"],
            max_token_requests: u64::from(okta_port::okta::auth::MAX_TOKEN_ATTEMPTS),
        },
        Case {
            name: "token without the scope an endpoint needs",
            oauth: OAuthSimConfig {
                clients: vec![KeyKind::Ec.client(read_scopes)],
                ..OAuthSimConfig::default()
            },
            key: fixture("ec-private.pem"),
            kind: KeyKind::Ec,
            client_id: CLIENT_ID,
            scopes: Some("okta.users.read okta.groups.read"),
            expect: &["403", "E0000006", "/api/v1/apps"],
            max_token_requests: 2,
        },
    ];
    for case in cases {
        let env = start(org(50), case.oauth).await;
        let mut extra = vec![("OKTA_CLIENT_ID", case.client_id)];
        if let Some(scopes) = case.scopes {
            extra.push(("OKTA_SCOPES", scopes));
        }
        let config = service_app_config(&env, &case.key, case.kind.key_id(), &extra);
        let app = App::new(&config).unwrap();
        let result = app.resync(RunOverrides::default()).await;
        let text = outcome_text(&result);
        assert!(
            !matches!(&result, Ok(r) if r.is_success()),
            "{}: the run must fail",
            case.name
        );
        for needle in case.expect {
            assert!(text.contains(needle), "{}: {needle:?} not in {text}", case.name);
        }
        assert!(!text.contains("eyJ"), "{}: a JWT in the error", case.name);
        let calls = env.okta.calls();
        assert!(
            calls.token_requests <= case.max_token_requests,
            "{}: {} token requests (at most {} expected)",
            case.name,
            calls.token_requests,
            case.max_token_requests
        );
        assert_eq!(
            calls.tokens_issued,
            u64::from(case.scopes.is_some()),
            "{}",
            case.name
        );
        if case.scopes.is_none() {
            // Without a token nothing was read, so nothing was written.
            assert!(
                env.port.entities(expected::USER_BLUEPRINT).is_empty(),
                "{}",
                case.name
            );
        }
        assert_clean(&logs, &env, &case.key);
    }
}

#[tokio::test]
async fn a_token_expiring_mid_resync_is_replaced_once() {
    let (logs, _guard) = LogCapture::install(tracing::Level::TRACE);
    let org = org(900);
    let expected = expected::catalog(&org);
    let env = start(
        org,
        OAuthSimConfig {
            clients: vec![KeyKind::Ec.client(&ALL_SCOPES[..3])],
            ..OAuthSimConfig::default()
        },
    )
    .await;
    let key = fixture("ec-private.pem");
    let config = service_app_config(&env, &key, KeyKind::Ec.key_id(), &[]);
    // Okta revokes (or expires) the token after a few calls, before the client expects it.
    env.okta.expire_tokens_after(4);
    let app = App::new(&config).unwrap();
    let report = app.resync(RunOverrides::default()).await.expect("resync runs");
    assert!(report.is_success(), "{}", report.to_text());
    assert_catalog(&env.catalog(), &expected);
    let calls = env.okta.calls();
    assert_eq!(calls.tokens_issued, 2, "the expired token is replaced once");
    // Nonce round trip for the first token; the second reuses the nonce.
    assert_eq!(calls.token_requests, 3);
    assert!(!calls.token_refusals.is_empty());
    assert!(
        calls.token_refusals.iter().all(|r| r == "expired access token"),
        "{:?}",
        calls.token_refusals
    );
    // At most the requests in flight with the old token were refused.
    assert!(
        calls.token_refusals.len() <= config.okta.max_in_flight,
        "{:?}",
        calls.token_refusals
    );
    assert_clean(&logs, &env, &key);
}

#[tokio::test]
async fn short_lived_tokens_are_renewed_before_they_expire() {
    let (logs, _guard) = LogCapture::install(tracing::Level::TRACE);
    let env = start(
        org(30),
        OAuthSimConfig {
            clients: vec![KeyKind::Rsa.client(&ALL_SCOPES[..3])],
            token_lifetime: std::time::Duration::from_secs(1),
            ..OAuthSimConfig::default()
        },
    )
    .await;
    let key = fixture("rsa-private.pem");
    let config = service_app_config(&env, &key, KeyKind::Rsa.key_id(), &[]);
    let client = Client::new(&config.okta).unwrap();
    client.list_all(&Listing::Groups).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    client.list_all(&Listing::Groups).await.unwrap();
    let calls = env.okta.calls();
    assert_eq!(calls.tokens_issued, 2);
    assert!(
        calls.token_refusals.is_empty(),
        "renewed ahead: {:?}",
        calls.token_refusals
    );
    assert_clean(&logs, &env, &key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_trigger_one_token_request() {
    let env = start(
        org(200),
        OAuthSimConfig {
            clients: vec![KeyKind::Ec.client(&ALL_SCOPES[..3])],
            ..OAuthSimConfig::default()
        },
    )
    .await;
    let key = fixture("ec-private.pem");
    let config = service_app_config(&env, &key, KeyKind::Ec.key_id(), &[]);
    let client = Client::new(&config.okta).unwrap();
    let ids: Vec<String> = env.okta.with_org(|o| {
        o.users
            .iter()
            .take(40)
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect()
    });
    let reads = ids.iter().map(|id| {
        let client = client.clone();
        async move { client.user(id).await }
    });
    let (users, listed) = tokio::join!(futures::future::join_all(reads), client.list_all(&Listing::Users));
    assert!(users.iter().all(|u| matches!(u, Ok(Some(_)))));
    assert!(!listed.unwrap().is_empty());
    let calls = env.okta.calls();
    assert_eq!(calls.tokens_issued, 1);
    assert_eq!(
        calls.token_requests, 2,
        "one token request (and its nonce round trip)"
    );
    assert!(calls.token_refusals.is_empty(), "{:?}", calls.token_refusals);
}

#[tokio::test]
async fn ssws_keeps_working_next_to_the_authorization_server() {
    let env = start(
        org(20),
        OAuthSimConfig {
            clients: vec![KeyKind::Ec.client(&ALL_SCOPES)],
            ..OAuthSimConfig::default()
        },
    )
    .await;
    let client = Client::new(&env.config().okta).unwrap();
    assert!(!client.list_all(&Listing::Groups).await.unwrap().is_empty());
    assert_eq!(client.token_requests(), 0);
    assert_eq!(env.okta.calls().token_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_apps_read_fails_the_run_and_empties_no_relation() {
    let env = start(
        org(300),
        OAuthSimConfig {
            clients: vec![KeyKind::Ec.client(&ALL_SCOPES)],
            ..OAuthSimConfig::default()
        },
    )
    .await;
    let key = fixture("ec-private.pem");
    let full = service_app_config(&env, &key, KeyKind::Ec.key_id(), &[]);
    let report = App::new(&full)
        .unwrap()
        .resync(RunOverrides::default())
        .await
        .unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    let before = env.catalog();

    // Users leave and an assignment goes, while the token is issued without okta.apps.read
    // (granted to the app, but not requested): /api/v1/apps answers 403.
    let managers: std::collections::HashSet<String> = before[expected::USER_BLUEPRINT]
        .values()
        .filter_map(|u| u["relations"]["manager"].as_str().map(str::to_owned))
        .collect();
    env.okta.with_org(|org| {
        let gone: Vec<String> = org
            .users
            .iter()
            .filter(|u| u["status"] == "ACTIVE" && !managers.contains(u["id"].as_str().unwrap()))
            .take(3)
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect();
        for id in &gone {
            assert!(org.delete_user(id));
        }
        let (app, user) = org
            .app_user_assignments
            .iter()
            .find_map(|(a, users)| Some((a.clone(), users.iter().next()?.clone())))
            .unwrap();
        assert!(org.unassign_user(&app, &user));
    });
    let narrow = service_app_config(
        &env,
        &key,
        KeyKind::Ec.key_id(),
        &[("OKTA_SCOPES", "okta.users.read okta.groups.read")],
    );
    let report = App::new(&narrow)
        .unwrap()
        .resync(RunOverrides::default())
        .await
        .unwrap();
    assert!(!report.is_success());
    let errors = report.errors.join("\n");
    for needle in ["403", "/api/v1/apps", "okta.apps.read"] {
        assert!(errors.contains(needle), "{needle:?} not in {errors}");
    }
    assert!(
        report.blueprints.values().all(|b| b.deleted == 0),
        "{}",
        report.to_text()
    );
    let after = env.catalog();
    for (bp, entities) in &before {
        for (id, old) in entities {
            let new = after[bp]
                .get(id)
                .unwrap_or_else(|| panic!("{bp} {id} was deleted"));
            for relation in ["applications", "groups"] {
                assert_eq!(
                    new["relations"][relation], old["relations"][relation],
                    "{bp} {id}: {relation} changed on an incomplete picture"
                );
            }
        }
    }
}
