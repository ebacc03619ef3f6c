//! JWS compact serialization (RFC 7515 §7.1), split and decoded without trusting anything:
//! [`parse`] only checks the shape, the signature and claims are checked by
//! [`verify_id_token`](crate::verify_id_token).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::OidcError;

const DOC: &str = "ID token";

/// Longer tokens are refused before any decoding. ID tokens are a few KiB; 64 KiB leaves room
/// for IdPs that put many groups in them.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The JOSE header fields the checks use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// `alg`, the signature algorithm.
    pub alg: String,
    /// `kid`, the signing key's id.
    pub kid: Option<String>,
    /// `typ`, when present.
    pub typ: Option<String>,
}

/// A decoded, not yet verified, compact JWS.
#[derive(Clone, Debug)]
pub struct Compact {
    /// The JOSE header.
    pub header: Header,
    /// The claims (the payload, a JSON object).
    pub claims: Map<String, Value>,
    /// `BASE64URL(header) '.' BASE64URL(payload)`, the bytes the signature covers.
    pub(crate) signing_input_len: usize,
    /// The signature bytes.
    pub(crate) signature: Vec<u8>,
}

/// Split and decode a compact JWS. Refuses JWE (five parts), padding, a `crit` header (no
/// extension is understood) and tokens over [`MAX_TOKEN_LEN`].
pub fn parse(token: &str) -> Result<Compact, OidcError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(OidcError::malformed(
            DOC,
            "-",
            format!("longer than {MAX_TOKEN_LEN} bytes"),
        ));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        let n = token.split('.').count();
        let reason = if n == 5 {
            "an encrypted token (JWE), which is not supported".to_owned()
        } else {
            format!("{n} dot-separated parts, not 3")
        };
        return Err(OidcError::malformed(DOC, "-", reason));
    };
    let header_bytes = decode(h, "header")?;
    let header_map: Map<String, Value> = serde_json::from_slice(&header_bytes)
        .map_err(|e| OidcError::json(DOC, &header_bytes, &e).in_field("header"))?;
    let alg = match header_map.get("alg") {
        Some(Value::String(a)) => a.clone(),
        Some(_) => return Err(OidcError::malformed(DOC, "header.alg", "not a string")),
        None => return Err(OidcError::malformed(DOC, "header.alg", "missing")),
    };
    if header_map.contains_key("crit") {
        return Err(OidcError::malformed(
            DOC,
            "header.crit",
            "critical header extensions are not supported",
        ));
    }
    let opt = |name: &'static str| -> Result<Option<String>, OidcError> {
        match header_map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.clone())),
            Some(_) => Err(OidcError::malformed(
                DOC,
                format!("header.{name}"),
                "not a string",
            )),
        }
    };
    let header = Header {
        kid: opt("kid")?,
        typ: opt("typ")?,
        alg,
    };
    let payload = decode(p, "payload")?;
    let claims: Map<String, Value> = serde_json::from_slice(&payload)
        .map_err(|e| OidcError::json(DOC, &payload, &e).in_field("payload"))?;
    let signature = decode(s, "signature")?;
    Ok(Compact {
        header,
        claims,
        signing_input_len: h.len() + 1 + p.len(),
        signature,
    })
}

fn decode(part: &str, field: &'static str) -> Result<Vec<u8>, OidcError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|e| {
        OidcError::malformed(DOC, field, format!("not base64url without padding: {e}"))
    })
}

impl OidcError {
    /// Name the part of the token a JSON error was in.
    fn in_field(self, name: &'static str) -> Self {
        match self {
            OidcError::Malformed {
                document,
                offset,
                reason,
                ..
            } => OidcError::Malformed {
                document,
                field: name.into(),
                offset,
                reason,
            },
            other => other,
        }
    }
}
