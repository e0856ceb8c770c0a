//! The org authorization server of the Okta simulator (`POST /oauth2/v1/token`) and the
//! checks of OAuth access tokens on API calls.
//!
//! Client credentials with `private_key_jwt` only, as Okta allows for `okta.*` scopes: the
//! client assertion's signature is verified against the registered public key, with its
//! `kid`, `aud` (the token URL), `iss` = `sub` (the client id), `exp` (at most an hour
//! ahead) and `jti` (never twice). With `require_dpop`, the token request must carry a DPoP
//! proof with the server's current nonce (a first request without it gets Okta's
//! `use_dpop_nonce` 400 and a `dpop-nonce` header), and the token is bound to the proof's
//! key: every API call then needs `Authorization: DPoP <token>` and a fresh proof (signature
//! by the bound key, `htm`, `htu` without the query, `ath`, unused `jti`, recent `iat`).
//! Without `require_dpop` the server ignores proofs and issues Bearer tokens.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Method, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{Value, json};

pub const TOKEN_PATH: &str = "/oauth2/v1/token";
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How far a proof's `iat` may be from now.
const PROOF_IAT_WINDOW: u64 = 300;

/// A service app registered in the simulated org.
#[derive(Clone, Debug)]
pub struct SimClient {
    pub client_id: String,
    /// `kid` of the registered public key.
    pub key_id: String,
    /// The registered public key, SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
    /// RS256 or ES256.
    pub alg: Algorithm,
    /// Scopes granted to the app.
    pub scopes: Vec<String>,
}

/// The authorization server's settings (part of `OktaSimConfig`).
#[derive(Clone, Debug)]
pub struct OAuthSimConfig {
    pub clients: Vec<SimClient>,
    /// Okta's "Require DPoP" app setting, on by default for new service apps.
    pub require_dpop: bool,
    /// `expires_in` of issued tokens (Okta: one hour).
    pub token_lifetime: Duration,
    /// A new DPoP nonce on every token request (a misbehaving server): no proof ever
    /// carries the current one.
    pub rotate_nonce: bool,
}

impl Default for OAuthSimConfig {
    fn default() -> Self {
        Self {
            clients: Vec::new(),
            require_dpop: true,
            token_lifetime: Duration::from_secs(3600),
            rotate_nonce: false,
        }
    }
}

struct Issued {
    scopes: HashSet<String>,
    expires: Instant,
    /// Thumbprint of the DPoP key the token is bound to.
    jkt: Option<String>,
}

#[derive(Default)]
pub(super) struct OAuthState {
    tokens: HashMap<String, Issued>,
    assertion_jtis: HashSet<String>,
    proof_jtis: HashSet<String>,
    nonce: String,
    /// Expire every issued token once this many more API calls were authorized.
    expire_after: Option<u64>,
}

/// A token endpoint answer.
pub(super) struct TokenReply {
    pub status: StatusCode,
    pub body: Value,
    pub nonce: Option<String>,
    pub issued: bool,
}

/// Why an API call was refused.
pub(super) enum Denied {
    /// 401: unknown, expired or badly presented token, or a bad DPoP proof.
    Unauthorized(String),
    /// 403 E0000006: the token lacks `scope`.
    Forbidden(String),
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> TokenReply {
    TokenReply {
        status,
        body: json!({"error": error, "error_description": description}),
        nonce: None,
        issued: false,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn new_nonce() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

impl OAuthState {
    pub(super) fn expire_tokens_after(&mut self, calls: u64) {
        self.expire_after = Some(calls);
    }

    pub(super) fn issued_tokens(&self) -> Vec<String> {
        self.tokens.keys().cloned().collect()
    }

    pub(super) fn expire_all(&mut self) {
        let now = Instant::now();
        for token in self.tokens.values_mut() {
            token.expires = now;
        }
    }

    /// `POST /oauth2/v1/token`.
    pub(super) fn token(
        &mut self,
        cfg: &OAuthSimConfig,
        base_url: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> TokenReply {
        let token_url = format!("{base_url}{TOKEN_PATH}");
        let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
        if field("grant_type") != "client_credentials" {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            );
        }
        if field("client_assertion_type") != CLIENT_ASSERTION_TYPE || field("client_assertion").is_empty() {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Client authentication failed: private_key_jwt client assertion expected.",
            );
        }
        let client = match self.authenticate(cfg, &token_url, field("client_assertion")) {
            Ok(client) => client,
            Err(description) => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &description),
        };
        let requested: Vec<&str> = field("scope").split(' ').filter(|s| !s.is_empty()).collect();
        if requested.is_empty() {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "The authorization server requires the 'scope' parameter.",
            );
        }
        let missing: Vec<&str> = requested
            .iter()
            .copied()
            .filter(|s| !client.scopes.iter().any(|g| g == s))
            .collect();
        if !missing.is_empty() {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                &format!(
                    "The following scopes were requested, but not granted to the client: {}",
                    missing.join(" ")
                ),
            );
        }
        let jkt = if cfg.require_dpop {
            if cfg.rotate_nonce || self.nonce.is_empty() {
                self.nonce = new_nonce();
            }
            let Some(proof) = headers.get("dpop").and_then(|v| v.to_str().ok()) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_dpop_proof",
                    "The DPoP proof JWT header is missing.",
                );
            };
            match self.check_proof(proof, "POST", &token_url, None) {
                Err(description) => {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", &description);
                }
                Ok((jkt, nonce)) => {
                    if nonce.as_deref() != Some(self.nonce.as_str()) {
                        let mut reply = oauth_error(
                            StatusCode::BAD_REQUEST,
                            "use_dpop_nonce",
                            "Authorization server requires nonce in DPoP proof.",
                        );
                        reply.nonce = Some(self.nonce.clone());
                        return reply;
                    }
                    Some(jkt)
                }
            }
        } else {
            None
        };
        let access_token = format!("sim.{}", Alphanumeric.sample_string(&mut rand::rng(), 40));
        self.tokens.insert(
            access_token.clone(),
            Issued {
                scopes: requested.iter().map(|s| (*s).to_owned()).collect(),
                expires: Instant::now() + cfg.token_lifetime,
                jkt: jkt.clone(),
            },
        );
        TokenReply {
            status: StatusCode::OK,
            body: json!({
                "token_type": if jkt.is_some() { "DPoP" } else { "Bearer" },
                "expires_in": cfg.token_lifetime.as_secs().max(1),
                "access_token": access_token,
                "scope": requested.join(" "),
            }),
            nonce: None,
            issued: true,
        }
    }

    /// Verifies the client assertion; the registered client it names.
    fn authenticate<'c>(
        &mut self,
        cfg: &'c OAuthSimConfig,
        token_url: &str,
        assertion: &str,
    ) -> Result<&'c SimClient, String> {
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| "The client_assertion is not a valid JWT.".to_owned())?;
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
            .map_err(|_| "The client_assertion is not a valid JWT.".to_owned())?;
        let iss = claims["iss"].as_str().unwrap_or_default();
        let client = cfg
            .clients
            .iter()
            .find(|c| c.client_id == iss)
            .ok_or_else(|| "Invalid value for 'client_id' parameter.".to_owned())?;
        if header.alg != client.alg {
            return Err(format!(
                "The client_assertion algorithm {:?} is not allowed.",
                header.alg
            ));
        }
        if header.kid.as_deref() != Some(client.key_id.as_str()) {
            return Err("The client_assertion key id does not match a registered key.".into());
        }
        let key = match client.alg {
            Algorithm::ES256 => DecodingKey::from_ec_pem(client.public_key_pem.as_bytes()),
            _ => DecodingKey::from_rsa_pem(client.public_key_pem.as_bytes()),
        }
        .expect("registered public key is valid PEM");
        let mut validation = Validation::new(client.alg);
        validation.set_audience(&[token_url]);
        validation.set_issuer(&[client.client_id.as_str()]);
        validation.sub = Some(client.client_id.clone());
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Value>(assertion, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => "The client_assertion signature is invalid.".to_owned(),
                ErrorKind::ExpiredSignature => "The client_assertion token is expired.".to_owned(),
                ErrorKind::InvalidAudience => {
                    "The audience claim for client_assertion must be the endpoint invoked for the request."
                        .to_owned()
                }
                ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => {
                    "The issuer and subject claims of the client_assertion must be the client_id.".to_owned()
                }
                other => format!("The client_assertion is invalid: {other:?}."),
            }
        })?;
        let exp = data.claims["exp"].as_u64().unwrap_or_default();
        if exp > now_secs() + 3600 {
            return Err("The client_assertion token has an expiration too far into the future.".into());
        }
        let jti = data.claims["jti"].as_str().unwrap_or_default();
        if jti.is_empty() {
            return Err("The client_assertion token must carry a jti.".into());
        }
        if !self.assertion_jtis.insert(jti.to_owned()) {
            return Err("The client_assertion token has already been used.".into());
        }
        Ok(client)
    }

    /// Verifies a DPoP proof: its thumbprint and `nonce` claim.
    fn check_proof(
        &mut self,
        proof: &str,
        htm: &str,
        htu: &str,
        ath: Option<&str>,
    ) -> Result<(String, Option<String>), String> {
        let header = jsonwebtoken::decode_header(proof)
            .map_err(|_| "The DPoP proof is not a valid JWT.".to_owned())?;
        if header.typ.as_deref() != Some("dpop+jwt") {
            return Err("The DPoP proof typ must be dpop+jwt.".into());
        }
        let jwk = header
            .jwk
            .ok_or_else(|| "The DPoP proof has no jwk header.".to_owned())?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| "The DPoP proof jwk is invalid.".to_owned())?;
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Value>(proof, &key, &validation)
            .map_err(|_| "The DPoP proof signature is invalid.".to_owned())?
            .claims;
        if claims["htm"].as_str() != Some(htm) {
            return Err(format!("The DPoP proof htm does not match {htm}."));
        }
        if claims["htu"].as_str() != Some(htu) {
            return Err("The DPoP proof htu does not match the request URL.".into());
        }
        let iat = claims["iat"].as_u64().unwrap_or_default();
        if now_secs().abs_diff(iat) > PROOF_IAT_WINDOW {
            return Err("The DPoP proof iat is not recent.".into());
        }
        if claims["ath"].as_str() != ath {
            return Err("The DPoP proof ath does not match the access token.".into());
        }
        let jti = claims["jti"].as_str().unwrap_or_default();
        if jti.is_empty() || !self.proof_jtis.insert(jti.to_owned()) {
            return Err("The DPoP proof jti is missing or was already used.".into());
        }
        let jkt = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| "The DPoP proof jwk is invalid.".to_owned())?;
        Ok((jkt, claims["nonce"].as_str().map(str::to_owned)))
    }

    /// Whether the API call's `Authorization` is an OAuth token (else the SSWS check applies).
    pub(super) fn is_oauth(headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer ") || v.starts_with("DPoP "))
    }

    /// Checks an API call's token, DPoP proof and scope.
    pub(super) fn check_call(
        &mut self,
        base_url: &str,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        scope: Option<(&str, Option<&str>)>,
    ) -> Result<(), Denied> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (scheme, token) = authorization.split_once(' ').unwrap_or_default();
        let Some(issued) = self.tokens.get(token) else {
            return Err(Denied::Unauthorized("unknown access token".into()));
        };
        if Instant::now() >= issued.expires {
            return Err(Denied::Unauthorized("expired access token".into()));
        }
        let jkt = issued.jkt.clone();
        let granted = issued.scopes.clone();
        match (scheme, jkt) {
            ("Bearer", None) => {}
            ("DPoP", Some(jkt)) => {
                let proof = headers
                    .get("dpop")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| Denied::Unauthorized("DPoP proof missing".into()))?;
                let ath = B64.encode(aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    token.as_bytes(),
                ));
                let htu = format!("{base_url}{path}");
                let (proof_jkt, _) = self
                    .check_proof(proof, method.as_str(), &htu, Some(&ath))
                    .map_err(Denied::Unauthorized)?;
                if proof_jkt != jkt {
                    return Err(Denied::Unauthorized("DPoP proof key is not the token's".into()));
                }
            }
            _ => {
                return Err(Denied::Unauthorized(format!(
                    "token presented with the wrong scheme {scheme:?}"
                )));
            }
        }
        if let Some((needed, alternative)) = scope
            && !granted.contains(needed)
            && !alternative.is_some_and(|a| granted.contains(a))
        {
            return Err(Denied::Forbidden(needed.to_owned()));
        }
        if let Some(left) = self.expire_after.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.expire_after = None;
                self.expire_all();
            }
        }
        Ok(())
    }
}
