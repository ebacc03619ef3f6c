//! ID token validation (OpenID Connect Core §3.1.3.7), every step in order:
//!
//! 1. shape ([`jwt::parse`](crate::jwt::parse));
//! 2. `alg` on the allow-list: RSASSA-PKCS1 and PSS, ECDSA P-256/P-384, Ed25519. `none` and
//!    every `HS*` are refused before any key is looked at, so no public key is ever used as an
//!    HMAC secret;
//! 3. the key: by `kid` (or the only key when the token names none), whose type (and `alg`,
//!    when the JWKS gives one) must fit the header's `alg`;
//! 4. the signature, with ring;
//! 5. the claims: `iss` exact, `aud` holds the client id and nothing else, `azp` when present
//!    (or when there are several audiences) is the client id, `exp` after now minus skew,
//!    `nbf`/`iat` before now plus skew, and the nonce in constant time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq as _;

use crate::error::OidcError;
use crate::jwks::{Jwk, Jwks, KeyMaterial};
use crate::jwt;

const DOC: &str = "ID token";

/// The signature algorithms accepted, in the spelling of RFC 7518 / RFC 8037.
pub const ALLOWED_ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// What the ID token must say to be accepted.
#[derive(Clone, Copy, Debug)]
pub struct Checks<'a> {
    /// The exact issuer.
    pub issuer: &'a str,
    /// The client id (the only audience trusted).
    pub client_id: &'a str,
    /// The nonce this login sent, when the flow has one.
    pub nonce: Option<&'a str>,
    /// The verifier's clock.
    pub now: SystemTime,
    /// The skew allowed on `exp`, `nbf` and `iat`.
    pub skew: Duration,
}

/// The claims of a verified ID token.
#[derive(Clone, Debug)]
pub struct IdTokenClaims {
    /// `iss`.
    pub issuer: String,
    /// `sub`, the user's stable id at the IdP (with `iss`, the user's key).
    pub subject: String,
    /// `aud`, as a list.
    pub audience: Vec<String>,
    /// `exp`.
    pub expires_at: SystemTime,
    /// `iat`, when present.
    pub issued_at: Option<SystemTime>,
    /// `nonce`, when present.
    pub nonce: Option<String>,
    /// `email`, when present (not yet known to be verified).
    pub email: Option<String>,
    /// `email_verified` (`true`/`false`, or the strings some IdPs send).
    pub email_verified: Option<bool>,
    /// `name`, when present.
    pub name: Option<String>,
    /// Every claim, for the groups claim and anything else the caller reads.
    pub claims: Map<String, Value>,
}

/// Verify an ID token's signature against `keys` and its claims against `checks`.
pub fn verify_id_token(
    token: &str,
    keys: &Jwks,
    checks: &Checks<'_>,
) -> Result<IdTokenClaims, OidcError> {
    let compact = jwt::parse(token)?;
    let alg = compact.header.alg.as_str();
    if !ALLOWED_ALGS.contains(&alg) {
        return Err(OidcError::AlgNotAllowed {
            alg: crate::error::bounded(alg, 32),
        });
    }
    let key = find_key(keys, compact.header.kid.as_deref())?;
    let kid = key.kid.clone().unwrap_or_else(|| "<none>".into());
    if let Some(key_alg) = &key.alg {
        if key_alg != alg {
            return Err(OidcError::KeyMismatch {
                kid,
                key: format!(
                    "{} for {}",
                    key.key.describe(),
                    crate::error::bounded(key_alg, 32)
                ),
                alg: alg.to_owned(),
            });
        }
    }
    let signing_input = token
        .as_bytes()
        .get(..compact.signing_input_len)
        .unwrap_or_default();
    let ok = match (&key.key, alg) {
        (KeyMaterial::Rsa { n, e }, _) => {
            let params: &signature::RsaParameters = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
                _ => return Err(mismatch(kid, &key.key, alg)),
            };
            RsaPublicKeyComponents { n, e }
                .verify(params, signing_input, &compact.signature)
                .is_ok()
        }
        (KeyMaterial::P256(point), "ES256") => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(signing_input, &compact.signature)
                .is_ok()
        }
        (KeyMaterial::P384(point), "ES384") => {
            UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                .verify(signing_input, &compact.signature)
                .is_ok()
        }
        (KeyMaterial::Ed25519(x), "EdDSA") => UnparsedPublicKey::new(&signature::ED25519, x)
            .verify(signing_input, &compact.signature)
            .is_ok(),
        (other, _) => return Err(mismatch(kid, other, alg)),
    };
    if !ok {
        return Err(OidcError::BadSignature {
            kid,
            alg: alg.to_owned(),
        });
    }
    check_claims(compact.claims, checks)
}

fn mismatch(kid: String, key: &KeyMaterial, alg: &str) -> OidcError {
    OidcError::KeyMismatch {
        kid,
        key: key.describe().to_owned(),
        alg: alg.to_owned(),
    }
}

fn find_key<'k>(keys: &'k Jwks, kid: Option<&str>) -> Result<&'k Jwk, OidcError> {
    let found = match kid {
        Some(kid) => keys.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
        // Without a kid only an unambiguous JWKS will do (Core §10.1).
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    };
    found.ok_or_else(|| OidcError::UnknownKid {
        kid: kid
            .map(|k| crate::error::bounded(k, 64))
            .unwrap_or_else(|| "<none>".into()),
        known: keys.kids(),
    })
}

fn check_claims(
    claims: Map<String, Value>,
    checks: &Checks<'_>,
) -> Result<IdTokenClaims, OidcError> {
    let issuer = req_str(&claims, "iss")?;
    if issuer != checks.issuer {
        return Err(OidcError::WrongIssuer {
            expected: checks.issuer.to_owned(),
            got: crate::error::bounded(&issuer, 200),
        });
    }
    let subject = req_str(&claims, "sub")?;
    if subject.is_empty() || subject.len() > 255 {
        return Err(OidcError::malformed(
            DOC,
            "sub",
            "empty or longer than 255 bytes",
        ));
    }
    let audience: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) if items.len() <= 64 => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                OidcError::malformed(DOC, "aud", "not a string or an array of strings")
            })?,
        Some(_) => {
            return Err(OidcError::malformed(
                DOC,
                "aud",
                "not a string or an array of at most 64 strings",
            ))
        }
        None => return Err(OidcError::malformed(DOC, "aud", "missing")),
    };
    if !audience.iter().any(|a| a == checks.client_id) {
        return Err(OidcError::WrongAudience {
            client_id: checks.client_id.to_owned(),
            got: audience
                .iter()
                .map(|a| crate::error::bounded(a, 100))
                .collect(),
        });
    }
    let azp = opt_str(&claims, "azp")?;
    if audience.len() > 1 || azp.is_some() {
        if azp.as_deref() != Some(checks.client_id) {
            return Err(OidcError::AzpMismatch {
                expected: checks.client_id.to_owned(),
                got: azp.map(|a| crate::error::bounded(&a, 100)),
            });
        }
        if let Some(extra) = audience.iter().find(|a| *a != checks.client_id) {
            return Err(OidcError::UntrustedAudience {
                client_id: checks.client_id.to_owned(),
                extra: crate::error::bounded(extra, 100),
            });
        }
    }
    let skew_secs = checks.skew.as_secs();
    let expires_at =
        time_claim(&claims, "exp")?.ok_or_else(|| OidcError::malformed(DOC, "exp", "missing"))?;
    // Valid while now - skew < exp, i.e. now < exp + skew.
    let exp_limit = expires_at.checked_add(checks.skew).unwrap_or(expires_at);
    if checks.now >= exp_limit {
        return Err(OidcError::Expired {
            expired_at: expires_at,
            now: checks.now,
            skew_secs,
        });
    }
    let future_limit = checks.now.checked_add(checks.skew).unwrap_or(checks.now);
    for name in ["nbf", "iat"] {
        if let Some(at) = time_claim(&claims, name)? {
            if at > future_limit {
                return Err(OidcError::NotYetValid {
                    claim: name,
                    at,
                    now: checks.now,
                    skew_secs,
                });
            }
        }
    }
    let issued_at = time_claim(&claims, "iat")?;
    let nonce = opt_str(&claims, "nonce")?;
    if let Some(expected) = checks.nonce {
        match &nonce {
            None => return Err(OidcError::NonceMismatch { missing: true }),
            Some(got) => {
                if !bool::from(got.as_bytes().ct_eq(expected.as_bytes())) {
                    return Err(OidcError::NonceMismatch { missing: false });
                }
            }
        }
    }
    let email = opt_str(&claims, "email")?;
    let email_verified = email_verified(&claims)?;
    let name = opt_str(&claims, "name").ok().flatten();
    Ok(IdTokenClaims {
        issuer,
        subject,
        audience,
        expires_at,
        issued_at,
        nonce,
        email,
        email_verified,
        name,
        claims,
    })
}

/// `email_verified` as a boolean; some IdPs send the strings `"true"`/`"false"`.
pub(crate) fn email_verified(claims: &Map<String, Value>) -> Result<Option<bool>, OidcError> {
    match claims.get("email_verified") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(_) => Err(OidcError::malformed(DOC, "email_verified", "not a boolean")),
    }
}

fn req_str(claims: &Map<String, Value>, name: &'static str) -> Result<String, OidcError> {
    opt_str(claims, name)?.ok_or_else(|| OidcError::malformed(DOC, name, "missing"))
}

pub(crate) fn opt_str(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, OidcError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(OidcError::malformed(DOC, name, "not a string")),
    }
}

/// Latest NumericDate accepted: 9999-12-31T23:59:59Z. Later values are refused, so no time
/// arithmetic can overflow.
const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

fn time_claim(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<SystemTime>, OidcError> {
    let Some(v) = claims.get(name) else {
        return Ok(None);
    };
    let secs = match v {
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Some(u),
            // NumericDate may have a fraction (RFC 7519 §2); whole seconds are enough here.
            (None, Some(f)) if f.is_finite() && f >= 0.0 && f <= MAX_NUMERIC_DATE as f64 => {
                Some(f as u64)
            }
            _ => None,
        },
        _ => None,
    };
    match secs {
        Some(s) if s <= MAX_NUMERIC_DATE => Ok(Some(UNIX_EPOCH + Duration::from_secs(s))),
        _ => Err(OidcError::malformed(
            DOC,
            name,
            "not a NumericDate (seconds since 1970, up to year 9999)",
        )),
    }
}
