//! DPoP (RFC 9449): the per-process key pair and the proofs it signs, one per request.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{CommonParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde::Serialize;
use url::Url;

use crate::keys::KindName;
use crate::okta::OktaError;

/// The per-process DPoP key pair (P-256), separate from the client key.
pub(super) struct DpopKey {
    key: EncodingKey,
    jwk: Jwk,
}

impl DpopKey {
    pub(super) fn generate() -> Result<Self, OktaError> {
        let failed = || OktaError::Credentials("could not create the DPoP key".into());
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| failed())?;
        let der = pair.to_pkcs8v1().map_err(|_| failed())?;
        let key = EncodingKey::from_ec_der(der.as_ref());
        // The public point, uncompressed: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 0x04 {
            return Err(failed());
        }
        let jwk = serde_json::from_value(serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": B64.encode(&point[1..33]),
            "y": B64.encode(&point[33..]),
        }))
        .map_err(|_| failed())?;
        Ok(Self { key, jwk })
    }

    pub(super) fn proof(
        &self,
        htm: &Method,
        htu: &str,
        nonce: Option<&str>,
        ath: Option<&str>,
    ) -> Result<HeaderValue, OktaError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            jti: String,
            htm: &'a str,
            htu: &'a str,
            iat: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            nonce: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            ath: Option<&'a str>,
        }
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(Jwk {
            common: CommonParameters::default(),
            algorithm: self.jwk.algorithm.clone(),
        });
        let claims = Claims {
            jti: new_jti(),
            htm: htm.as_str(),
            htu,
            iat: unix_now(),
            nonce,
            ath,
        };
        let proof = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| OktaError::Credentials(format!("could not sign a DPoP proof: {}", e.kind_name())))?;
        HeaderValue::from_str(&proof)
            .map_err(|_| OktaError::Credentials("DPoP proof is not a header value".into()))
    }
}

/// The `htu` of a proof: the URL without query and fragment.
pub(super) fn htu(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

pub(super) fn new_jti() -> String {
    B64.encode(rand::random::<[u8; 18]>())
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_drops_query_and_fragment() {
        let url = Url::parse("https://x.okta.com/api/v1/users?limit=200&after=00u1#frag").unwrap();
        assert_eq!(htu(&url), "https://x.okta.com/api/v1/users");
    }

    #[tokio::test]
    async fn dpop_proofs_carry_the_claims() {
        let key = DpopKey::generate().unwrap();
        let url = Url::parse("https://x.okta.com/api/v1/users?limit=2").unwrap();
        let proof = key
            .proof(&Method::GET, &htu(&url), None, Some("ath-value"))
            .unwrap();
        let proof = proof.to_str().unwrap();
        let header = jsonwebtoken::decode_header(proof).unwrap();
        assert_eq!(header.typ.as_deref(), Some("dpop+jwt"));
        assert_eq!(header.alg, Algorithm::ES256);
        let jwk = header.jwk.expect("jwk");
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(proof, &decoding, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://x.okta.com/api/v1/users");
        assert_eq!(claims["ath"], "ath-value");
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 20));
        assert!(claims["iat"].as_u64().is_some());
        assert!(claims.get("nonce").is_none());
    }
}
