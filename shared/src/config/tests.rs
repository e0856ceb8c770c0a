//! Unit tests of `config`.

use super::*;
use secrecy::ExposeSecret;
use std::collections::HashMap;

fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

const BASE: &[(&str, &str)] = &[
    ("OKTA_DOMAIN", "dev-123456.okta.com"),
    ("OKTA_API_TOKEN", "00abc-secret"),
    ("PORT_CLIENT_ID", "cid"),
    ("PORT_CLIENT_SECRET", "csecret"),
];

#[test]
fn bare_domain_and_defaults() {
    let c = Config::from_lookup(lookup(BASE)).unwrap();
    assert_eq!(c.okta.base_url.as_str(), "https://dev-123456.okta.com/");
    assert_eq!(c.port.api_url.as_str(), "https://api.port.io/");
    assert_eq!(c.port.installation_id, "okta-port");
    assert_eq!(c.resync.deletion_threshold, 0.5);
    assert_eq!(c.okta.api_token.expose_secret(), "00abc-secret");
    // Debug output never shows a secret.
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("00abc-secret") && !debug.contains("csecret"),
        "{debug}"
    );
}

#[test]
fn full_url_is_accepted() {
    let mut pairs = BASE.to_vec();
    pairs[0] = ("OKTA_DOMAIN", "http://127.0.0.1:8080/");
    let c = Config::from_lookup(lookup(&pairs)).unwrap();
    assert_eq!(c.okta.base_url.as_str(), "http://127.0.0.1:8080/");
}

#[test]
fn okta_domain_must_be_a_bare_https_origin() {
    for ok in [
        "dev-1.okta.com",
        "https://dev-1.okta.com",
        "https://dev-1.okta.com/",
        "http://localhost:9000",
        "http://127.0.0.2:80",
        "http://[::1]:8080",
    ] {
        assert!(okta_base_url(ok).is_ok(), "{ok} refused");
    }
    for (bad, says) in [
        ("http://dev-1.okta.com", "https"),
        ("http://10.0.0.1:8080", "https"),
        ("https://user:pw@dev-1.okta.com", "user information"),
        ("user@dev-1.okta.com", "user information"),
        ("https://dev-1.okta.com/api/v1", "path"),
        ("https://dev-1.okta.com/?x=1", "query"),
        ("https://dev-1.okta.com/#frag", "fragment"),
        ("ftp://dev-1.okta.com", "http(s)"),
    ] {
        let err = okta_base_url(bad).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("OKTA_DOMAIN") && text.contains(says),
            "{bad}: {text}"
        );
        assert!(!text.contains("pw@"), "{text}");
    }
}

#[test]
fn errors_name_the_variable() {
    let err = Config::from_lookup(lookup(&BASE[..3])).unwrap_err();
    assert_eq!(err, ConfigError::Missing("PORT_CLIENT_SECRET"));
    assert!(err.to_string().contains("PORT_CLIENT_SECRET"));
    let mut pairs = BASE.to_vec();
    pairs.push(("DELETION_THRESHOLD", "2"));
    assert!(matches!(
        Config::from_lookup(lookup(&pairs)),
        Err(ConfigError::Invalid {
            var: "DELETION_THRESHOLD",
            ..
        })
    ));
    let mut pairs = BASE.to_vec();
    pairs.push(("INSTALLATION_ID", "a/b"));
    assert!(matches!(
        Config::from_lookup(lookup(&pairs)),
        Err(ConfigError::Invalid {
            var: "INSTALLATION_ID",
            ..
        })
    ));
}
/// A fresh P-256 key as PKCS#8 PEM (test-only).
fn ec_pem() -> String {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let der = pair.to_pkcs8v1().unwrap();
    pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()))
}

fn service_app(pem: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OKTA_DOMAIN", "dev-123456.okta.com".into()),
        ("OKTA_CLIENT_ID", "0oa123".into()),
        ("OKTA_PRIVATE_KEY", pem.into()),
        ("OKTA_KEY_ID", "kid-1".into()),
        ("PORT_CLIENT_ID", "cid".into()),
        ("PORT_CLIENT_SECRET", "csecret".into()),
    ]
}

fn owned_lookup(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
}

#[test]
fn a_service_app_is_configured_instead_of_a_token() {
    let pem = ec_pem();
    let c = Config::from_lookup(owned_lookup(service_app(&pem))).unwrap();
    let app = c.okta.service_app.as_ref().expect("service app");
    assert_eq!(app.client_id, "0oa123");
    assert_eq!(app.key_id, "kid-1");
    assert_eq!(app.scopes, DEFAULT_OKTA_SCOPES.map(String::from).to_vec());
    assert!(c.okta.api_token.expose_secret().is_empty());
    let body = pem.lines().nth(1).unwrap();
    assert!(!format!("{c:?}").contains(body), "the key shows in Debug");

    // Hook provisioning configured: the hook scope too. OKTA_SCOPES overrides.
    let mut pairs = service_app(&pem);
    pairs.push(("WEBHOOK_URL", "https://x.lambda-url.us-east-1.on.aws/".into()));
    let c = Config::from_lookup(owned_lookup(pairs.clone())).unwrap();
    assert!(
        c.okta
            .service_app
            .unwrap()
            .scopes
            .contains(&HOOK_SCOPE.to_owned())
    );
    // The catch-up configured: the log scope too.
    let mut with_state = pairs.clone();
    with_state.push(("STATE_URL", "s3://bucket/okta-port".into()));
    let scopes = Config::from_lookup(owned_lookup(with_state))
        .unwrap()
        .okta
        .service_app
        .unwrap()
        .scopes;
    assert!(scopes.contains(&LOGS_SCOPE.to_owned()) && scopes.contains(&HOOK_SCOPE.to_owned()));
    pairs.push(("OKTA_SCOPES", "okta.users.read okta.groups.read".into()));
    let c = Config::from_lookup(owned_lookup(pairs)).unwrap();
    assert_eq!(
        c.okta.service_app.unwrap().scopes,
        ["okta.users.read", "okta.groups.read"]
    );
}

#[test]
fn okta_credentials_are_one_kind_exactly() {
    let pem = ec_pem();
    let mut both = service_app(&pem);
    both.push(("OKTA_API_TOKEN", "00tok".into()));
    let err = Config::from_lookup(owned_lookup(both)).unwrap_err();
    assert_eq!(err, ConfigError::OktaCredentials("both kinds are set"));
    let text = err.to_string();
    for var in [
        "OKTA_API_TOKEN",
        "OKTA_CLIENT_ID",
        "OKTA_PRIVATE_KEY",
        "OKTA_KEY_ID",
    ] {
        assert!(text.contains(var), "{text}");
    }
    let err = Config::from_lookup(lookup(&[
        ("OKTA_DOMAIN", "dev-1.okta.com"),
        ("PORT_CLIENT_ID", "cid"),
        ("PORT_CLIENT_SECRET", "csecret"),
    ]))
    .unwrap_err();
    assert_eq!(err, ConfigError::OktaCredentials("none is set"));

    // An incomplete service app names what is missing.
    let mut pairs = service_app(&pem);
    pairs.retain(|(k, _)| *k != "OKTA_KEY_ID");
    let err = Config::from_lookup(owned_lookup(pairs)).unwrap_err();
    assert_eq!(err, ConfigError::Missing("OKTA_KEY_ID"));

    // A key that is no key: named, never quoted.
    let mut pairs =
        service_app("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----");
    pairs.retain(|(k, _)| *k != "OKTA_CLIENT_ID");
    pairs.push(("OKTA_CLIENT_ID", "0oa123".into()));
    let err = Config::from_lookup(owned_lookup(pairs)).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { var: "OKTA_PRIVATE_KEY", reason } if !reason.contains("c2VjcmV0")),
        "{err:?}"
    );
}
