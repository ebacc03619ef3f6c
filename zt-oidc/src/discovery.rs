//! The discovery document (OpenID Connect Discovery 1.0 §3), parsed and checked: the issuer
//! must be the configured one byte for byte (§4.3), and every endpoint must be `https://`.

use serde_json::{Map, Value};

use crate::error::OidcError;

const DOC: &str = "discovery document";

/// The parts of `/.well-known/openid-configuration` the edge uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// `issuer`, equal to the configured issuer.
    pub issuer: String,
    /// `authorization_endpoint`, where the browser goes.
    pub authorization_endpoint: String,
    /// `token_endpoint`, where the edge redeems codes and polls the device grant.
    pub token_endpoint: String,
    /// `jwks_uri`, the IdP's signing keys.
    pub jwks_uri: String,
    /// `userinfo_endpoint`, for claims the ID token does not carry.
    pub userinfo_endpoint: Option<String>,
    /// `device_authorization_endpoint` (RFC 8628), for headless logins.
    pub device_authorization_endpoint: Option<String>,
    /// `id_token_signing_alg_values_supported`.
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// `code_challenge_methods_supported` (RFC 8414); empty when the IdP does not say.
    pub code_challenge_methods_supported: Vec<String>,
}

impl Discovery {
    /// Parse a discovery document and check it belongs to `expected_issuer`.
    pub fn parse(json: &[u8], expected_issuer: &str) -> Result<Self, OidcError> {
        let map: Map<String, Value> =
            serde_json::from_slice(json).map_err(|e| OidcError::json(DOC, json, &e))?;
        let issuer = required_str(&map, "issuer")?;
        if issuer != expected_issuer {
            return Err(OidcError::WrongIssuer {
                expected: expected_issuer.to_owned(),
                got: crate::error::bounded(&issuer, 200),
            });
        }
        let endpoint = |field: &'static str| -> Result<String, OidcError> {
            let v = required_str(&map, field)?;
            check_https_url(DOC, field, &v)?;
            Ok(v)
        };
        let optional_endpoint = |field: &'static str| -> Result<Option<String>, OidcError> {
            match optional_str(&map, field)? {
                Some(v) => {
                    check_https_url(DOC, field, &v)?;
                    Ok(Some(v))
                }
                None => Ok(None),
            }
        };
        Ok(Discovery {
            authorization_endpoint: endpoint("authorization_endpoint")?,
            token_endpoint: endpoint("token_endpoint")?,
            jwks_uri: endpoint("jwks_uri")?,
            userinfo_endpoint: optional_endpoint("userinfo_endpoint")?,
            device_authorization_endpoint: optional_endpoint("device_authorization_endpoint")?,
            id_token_signing_alg_values_supported: str_array(
                &map,
                "id_token_signing_alg_values_supported",
            )?,
            code_challenge_methods_supported: str_array(&map, "code_challenge_methods_supported")?,
            issuer,
        })
    }
}

fn required_str(map: &Map<String, Value>, field: &'static str) -> Result<String, OidcError> {
    optional_str(map, field)?.ok_or_else(|| OidcError::malformed(DOC, field, "missing"))
}

fn optional_str(
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, OidcError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(OidcError::malformed(DOC, field, "not a string")),
    }
}

/// At most this many entries are kept from an array of names; a longer one is refused.
const MAX_ARRAY: usize = 256;

fn str_array(map: &Map<String, Value>, field: &'static str) -> Result<Vec<String>, OidcError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            if items.len() > MAX_ARRAY {
                return Err(OidcError::malformed(
                    DOC,
                    field,
                    format!("more than {MAX_ARRAY} entries"),
                ));
            }
            items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| OidcError::malformed(DOC, field, "not an array of strings"))
                })
                .collect()
        }
        Some(_) => Err(OidcError::malformed(DOC, field, "not an array of strings")),
    }
}

/// An `https://` URL with a host, no user info, no fragment, no whitespace or control
/// characters. The HTTP client parses it again before it dials.
pub(crate) fn check_https_url(
    document: &'static str,
    field: &str,
    url: &str,
) -> Result<(), OidcError> {
    crate::http::Target::parse(url)
        .map(|_| ())
        .map_err(|reason| OidcError::malformed(document, field, reason))
}
