//! The IdP's signing keys (RFC 7517), kept only in forms ring verifies with: RSA (n, e) of
//! 2048..=8192 bits, EC P-256/P-384 points, Ed25519 public keys. Keys for encryption, keys of
//! unknown types or curves, and symmetric (`oct`) keys are skipped with a debug log: an IdP's
//! JWKS never makes a shared secret out of anything, so `HS256` has nothing to verify with.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};
use tracing::debug;

use crate::error::OidcError;

const DOC: &str = "JWKS";

/// More keys than this in one JWKS are refused; IdPs publish a handful.
const MAX_KEYS: usize = 64;

/// The key material of one JWK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyMaterial {
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed P-256 point (`04 ‖ x ‖ y`).
    P256(Vec<u8>),
    /// An uncompressed P-384 point.
    P384(Vec<u8>),
    /// An Ed25519 public key.
    Ed25519(Vec<u8>),
}

impl KeyMaterial {
    /// The key's type as a person reads it in an error.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            KeyMaterial::Rsa { .. } => "an RSA key",
            KeyMaterial::P256(_) => "an EC P-256 key",
            KeyMaterial::P384(_) => "an EC P-384 key",
            KeyMaterial::Ed25519(_) => "an OKP Ed25519 key",
        }
    }
}

/// One usable signing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Jwk {
    pub(crate) kid: Option<String>,
    /// The key's own `alg`, when the JWKS names one: the token's must then be the same.
    pub(crate) alg: Option<String>,
    pub(crate) key: KeyMaterial,
}

/// A parsed JWKS: the signing keys the ID token checks may use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Jwks {
    pub(crate) keys: Vec<Jwk>,
}

impl Jwks {
    /// Parse a JWKS document. The document must be a JSON object with a `keys` array; keys
    /// that cannot be used for signature checks are skipped (debug log), not errors.
    pub fn parse(json: &[u8]) -> Result<Self, OidcError> {
        let map: Map<String, Value> =
            serde_json::from_slice(json).map_err(|e| OidcError::json(DOC, json, &e))?;
        let items = match map.get("keys") {
            Some(Value::Array(items)) => items,
            Some(_) => return Err(OidcError::malformed(DOC, "keys", "not an array")),
            None => return Err(OidcError::malformed(DOC, "keys", "missing")),
        };
        if items.len() > MAX_KEYS {
            return Err(OidcError::malformed(
                DOC,
                "keys",
                format!("more than {MAX_KEYS} keys"),
            ));
        }
        let mut keys = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(obj) = item.as_object() else {
                return Err(OidcError::malformed(
                    DOC,
                    format!("keys[{i}]"),
                    "not an object",
                ));
            };
            match parse_key(obj) {
                Ok(k) => keys.push(k),
                Err(why) => {
                    let kid = obj
                        .get("kid")
                        .and_then(Value::as_str)
                        .map(|k| crate::error::bounded(k, 64));
                    debug!(index = i, kid = ?kid, why, "JWKS key skipped");
                }
            }
        }
        Ok(Jwks { keys })
    }

    /// The ids of the usable keys (keys without a `kid` are left out).
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().filter_map(|k| k.kid.clone()).collect()
    }

    /// How many usable keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn str_field<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, &'static str> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err("a field is not a string"),
    }
}

fn b64_field(obj: &Map<String, Value>, field: &str) -> Result<Vec<u8>, &'static str> {
    let s = str_field(obj, field)?.ok_or("a key parameter is missing")?;
    // Some IdPs pad; RFC 7518 says they must not, but the value is the same.
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| "a key parameter is not base64url")
}

fn parse_key(obj: &Map<String, Value>) -> Result<Jwk, &'static str> {
    if let Some(u) = str_field(obj, "use")? {
        if u != "sig" {
            return Err("use is not \"sig\"");
        }
    }
    let kid = str_field(obj, "kid")?.map(str::to_owned);
    let alg = str_field(obj, "alg")?.map(str::to_owned);
    let kty = str_field(obj, "kty")?.ok_or("kty missing")?;
    let key = match kty {
        "RSA" => {
            let n = strip_zeros(b64_field(obj, "n")?);
            let e = strip_zeros(b64_field(obj, "e")?);
            let bits = bit_len(&n);
            if bits < 2048 {
                return Err("RSA modulus shorter than 2048 bits");
            }
            if bits > 8192 {
                return Err("RSA modulus longer than 8192 bits");
            }
            if e.is_empty() || e.len() > 4 {
                return Err("RSA exponent out of range");
            }
            KeyMaterial::Rsa { n, e }
        }
        "EC" => {
            let crv = str_field(obj, "crv")?.ok_or("crv missing")?;
            let size = match crv {
                "P-256" => 32,
                "P-384" => 48,
                _ => return Err("unknown EC curve"),
            };
            let x = b64_field(obj, "x")?;
            let y = b64_field(obj, "y")?;
            if x.len() != size || y.len() != size {
                return Err("EC coordinate of the wrong length");
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            if size == 32 {
                KeyMaterial::P256(point)
            } else {
                KeyMaterial::P384(point)
            }
        }
        "OKP" => {
            let crv = str_field(obj, "crv")?.ok_or("crv missing")?;
            if crv != "Ed25519" {
                return Err("unknown OKP curve");
            }
            let x = b64_field(obj, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 key of the wrong length");
            }
            KeyMaterial::Ed25519(x)
        }
        "oct" => return Err("symmetric (oct) keys are never accepted"),
        _ => return Err("unknown kty"),
    };
    Ok(Jwk { kid, alg, key })
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let lead = v.iter().take_while(|&&b| b == 0).count();
    v.drain(..lead);
    v
}

fn bit_len(be: &[u8]) -> usize {
    match be.first() {
        None => 0,
        Some(&top) => (be.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}
