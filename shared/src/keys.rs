//! The private key a service app signs its client assertions with, parsed from
//! `OKTA_PRIVATE_KEY` (PEM or JWK). Pure: no I/O, so the configuration can check a key
//! without the Okta client. Errors and `Debug` never show key material.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;

/// The private key a service app signs its client assertions with.
pub struct ClientKey {
    pub(crate) key: EncodingKey,
    pub(crate) alg: Algorithm,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// Parses `OKTA_PRIVATE_KEY`: a PEM private key (PKCS#8 `PRIVATE KEY`, PKCS#1
    /// `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`) or a private JWK (JSON, RSA or P-256).
    /// RSA keys sign RS256, P-256 keys ES256. Errors never quote the key.
    pub fn parse(text: &str) -> Result<Self, String> {
        // Environment variables and secrets often carry PEM with escaped newlines.
        let text = text.trim().replace("\\n", "\n");
        let key = if text.starts_with('{') {
            Self::from_jwk(&text)?
        } else if text.starts_with("-----BEGIN") {
            Self::from_pem(&text)?
        } else {
            return Err(
                "expected a PEM private key (-----BEGIN PRIVATE KEY-----) or a private JWK (JSON)".into(),
            );
        };
        // Prove the key signs now rather than at the first token request.
        jsonwebtoken::encode(&Header::new(key.alg), &serde_json::json!({}), &key.key)
            .map_err(|e| format!("the key cannot sign {:?}: {}", key.alg, e.kind_name()))?;
        Ok(key)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    fn from_pem(text: &str) -> Result<Self, String> {
        let block = pem::parse(text).map_err(|_| "the PEM block cannot be read".to_owned())?;
        match block.tag() {
            "PRIVATE KEY" => {
                if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, block.contents())
                {
                    return ec_key(&pair);
                }
                if aws_lc_rs::rsa::KeyPair::from_pkcs8(block.contents()).is_ok() {
                    return rsa_key(text.as_bytes());
                }
                Err("the PKCS#8 key is neither RSA nor EC P-256".into())
            }
            "RSA PRIVATE KEY" => rsa_key(text.as_bytes()),
            "EC PRIVATE KEY" => {
                let pair =
                    EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, block.contents())
                        .map_err(|_| "the EC key is not a valid P-256 private key".to_owned())?;
                ec_key(&pair)
            }
            "ENCRYPTED PRIVATE KEY" => {
                Err("encrypted private keys are not supported; give the key unencrypted".into())
            }
            other => Err(format!("a PEM {other:?} block is not a private key")),
        }
    }

    fn from_jwk(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct PrivateJwk {
            kty: String,
            crv: Option<String>,
            x: Option<String>,
            y: Option<String>,
            d: Option<String>,
            n: Option<String>,
            e: Option<String>,
            p: Option<String>,
            q: Option<String>,
            dp: Option<String>,
            dq: Option<String>,
            qi: Option<String>,
        }
        // serde's errors may quote the input: report only the position.
        let jwk: PrivateJwk = serde_json::from_str(text).map_err(|e| {
            format!(
                "the JWK is not valid JSON of a key (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        let field = |name: &str, value: &Option<String>| -> Result<Vec<u8>, String> {
            let value = value
                .as_deref()
                .ok_or_else(|| format!("the {} JWK has no \"{name}\" (a public key cannot sign)", jwk.kty))?;
            B64.decode(value.trim_end_matches('='))
                .map_err(|_| format!("the JWK's \"{name}\" is not base64url"))
        };
        match jwk.kty.as_str() {
            "EC" => {
                if jwk.crv.as_deref() != Some("P-256") {
                    return Err("only P-256 EC keys (ES256) are supported".into());
                }
                let d = field("d", &jwk.d)?;
                let mut public = vec![0x04];
                public.extend(field("x", &jwk.x)?);
                public.extend(field("y", &jwk.y)?);
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &d,
                    &public,
                )
                .map_err(|_| "the EC JWK is not a consistent P-256 key".to_owned())?;
                ec_key(&pair)
            }
            "RSA" => {
                let components = aws_lc_rs::rsa::KeyPairComponents {
                    public_key: aws_lc_rs::rsa::PublicKeyComponents {
                        n: field("n", &jwk.n)?,
                        e: field("e", &jwk.e)?,
                    },
                    d: field("d", &jwk.d)?,
                    p: field("p", &jwk.p)?,
                    q: field("q", &jwk.q)?,
                    dP: field("dp", &jwk.dp)?,
                    dQ: field("dq", &jwk.dq)?,
                    qInv: field("qi", &jwk.qi)?,
                };
                let pair = aws_lc_rs::rsa::KeyPair::from_components(&components)
                    .map_err(|_| "the RSA JWK is not a consistent RSA key (2048 bits or more)".to_owned())?;
                let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
                    .map_err(|_| "the RSA key cannot be encoded".to_owned())?;
                let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
                rsa_key(pem.as_bytes())
            }
            other => Err(format!("JWK kty {other:?} is not supported (RSA or EC)")),
        }
    }
}

fn ec_key(pair: &EcdsaKeyPair) -> Result<ClientKey, String> {
    let der = pair
        .to_pkcs8v1()
        .map_err(|_| "the EC key cannot be encoded".to_owned())?;
    Ok(ClientKey {
        key: EncodingKey::from_ec_der(der.as_ref()),
        alg: Algorithm::ES256,
    })
}

fn rsa_key(pem: &[u8]) -> Result<ClientKey, String> {
    let key = EncodingKey::from_rsa_pem(pem).map_err(|_| "the RSA key cannot be read".to_owned())?;
    Ok(ClientKey {
        key,
        alg: Algorithm::RS256,
    })
}

pub(crate) trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for jsonwebtoken::errors::Error {
    /// The error's kind only: never anything that could echo key material.
    fn kind_name(&self) -> String {
        let kind = format!("{:?}", self.kind());
        kind.split(['(', ' ']).next().unwrap_or_default().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_keys_are_refused_without_quoting_them() {
        for text in [
            "not a key at all SECRETSECRET",
            "-----BEGIN PRIVATE KEY-----\nU0VDUkVUU0VDUkVU\n-----END PRIVATE KEY-----",
            r#"{"kty":"EC","crv":"P-256","x":"SECRETSECRET","y":"SECRETSECRET"}"#,
            r#"{"kty":"EC","crv":"P-256","d":"SECRETSECRET","x":"AAAA","y":"AAAA"}"#,
            r#"{"kty":"oct","k":"SECRETSECRET"}"#,
            "{ SECRETSECRET",
        ] {
            let err = ClientKey::parse(text).unwrap_err();
            assert!(
                !err.contains("SECRETSECRET") && !err.contains("U0VDUkVU"),
                "{err}"
            );
        }
    }

    #[test]
    fn generated_ec_keys_parse_as_pem_and_jwk() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der = pair.to_pkcs8v1().unwrap();
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
        assert_eq!(ClientKey::parse(&pem).unwrap().algorithm(), Algorithm::ES256);
        // Escaped newlines, as an environment variable may hold them.
        assert_eq!(
            ClientKey::parse(&pem.replace('\n', "\\n")).unwrap().algorithm(),
            Algorithm::ES256
        );
    }
}
