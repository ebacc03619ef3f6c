//! Tunnel tokens: one string that carries a tunnel's credentials, as `cloudflared tunnel
//! run --token` takes them, plus zt's extension keys for a self-hosted edge.
//!
//! A token is standard base64 of a JSON object. cloudflared's keys come first, in the
//! order cloudflared writes them (`a`, `s`, `t`, then `e` when set); zt's keys follow.
//! cloudflared ignores keys it does not know, so a zt token still works with cloudflared
//! (against Cloudflare's edge, which the zt keys do not describe).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::credentials::TunnelCredentials;
use crate::fingerprint::CaFingerprint;
use crate::json::{
    capacity_for, Fields, ObjectWriter, Origin, ParseError, BASE64_STANDARD_LENIENT,
};
use crate::secret::TunnelSecret;

/// Key of the account tag (cloudflared's).
const ACCOUNT_TAG: &str = "a";
/// Key of the base64 tunnel secret (cloudflared's).
const SECRET: &str = "s";
/// Key of the tunnel id (cloudflared's).
const TUNNEL_ID: &str = "t";
/// Key of the optional endpoint (cloudflared's).
const ENDPOINT: &str = "e";
/// zt extension: the list of edge addresses, each `host:port`.
pub const TOKEN_KEY_EDGE: &str = "zt_edge";
/// zt extension: the SHA-256 fingerprint (hex) of the edge's CA certificate (DER).
pub const TOKEN_KEY_CA: &str = "zt_ca";
const KEYS: &[&str] = &[
    ACCOUNT_TAG,
    SECRET,
    TUNNEL_ID,
    ENDPOINT,
    TOKEN_KEY_EDGE,
    TOKEN_KEY_CA,
];

/// Longest token accepted, in characters. Real tokens are a few hundred; the bound keeps a
/// stray file or environment variable from costing memory.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A tunnel token could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token was empty or only whitespace.
    #[error("the tunnel token is empty")]
    Empty,
    /// The token was longer than [`MAX_TOKEN_LEN`].
    #[error("the tunnel token is {len} characters long; at most {MAX_TOKEN_LEN} are accepted")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The token was not standard base64.
    #[error("the tunnel token is not standard base64 (alphabet A-Z a-z 0-9 + /, padded with =)")]
    NotBase64,
    /// The decoded token was not an acceptable JSON object.
    #[error("the tunnel token's JSON: {0}")]
    Payload(#[source] ParseError),
}

/// A tunnel token: the credentials a connector needs, and for a self-hosted edge where to
/// find it and how to trust it.
///
/// Keys: `a` account tag, `t` tunnel id, `s` base64 secret, `e` endpoint (cloudflared's);
/// [`TOKEN_KEY_EDGE`] (`zt_edge`) a list of `host:port` edge addresses and
/// [`TOKEN_KEY_CA`] (`zt_ca`) the edge CA's SHA-256 fingerprint in hex (zt's). `Debug`
/// never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelToken {
    /// The account the tunnel belongs to (`a`); never empty.
    pub account_tag: String,
    /// The tunnel's id (`t`).
    pub tunnel_id: Uuid,
    /// The tunnel secret (`s`).
    pub secret: TunnelSecret,
    /// cloudflared's endpoint (`e`); an empty string reads as `None`.
    pub endpoint: Option<String>,
    /// Edge addresses, each `host:port` (`zt_edge`); empty when the key is absent. Only
    /// valid addresses are parsed; [`TunnelToken::encode`] writes whatever is here.
    pub edge: Vec<String>,
    /// Fingerprint of the edge's CA certificate (`zt_ca`).
    pub ca_fingerprint: Option<CaFingerprint>,
}

impl TunnelToken {
    /// Parses a token. Surrounding whitespace (a trailing newline from a file or a
    /// `$(cat …)`) and line breaks inside (a wrapped `base64` output) are ignored, as
    /// cloudflared ignores them; unknown keys are ignored and named in a warning.
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        let token = token.trim_ascii();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong { len: token.len() });
        }
        // Line breaks inside are skipped, as Go's decoder skips them: `base64` without `-w0`
        // wraps its output at 76 columns.
        let unwrapped: Zeroizing<Vec<u8>> = Zeroizing::new(
            token
                .bytes()
                .filter(|b| *b != b'\n' && *b != b'\r')
                .collect(),
        );
        let mut json = Zeroizing::new(Vec::with_capacity(unwrapped.len()));
        BASE64_STANDARD_LENIENT
            .decode_vec(&*unwrapped, &mut json)
            .map_err(|_| TokenError::NotBase64)?;
        let origin = Origin {
            kind: "tunnel token",
            path: None,
        };
        let parse = || -> Result<Self, ParseError> {
            let mut f = Fields::parse(&json, KEYS, origin)?;
            Ok(Self {
                account_tag: f.required_nonempty_str(ACCOUNT_TAG)?,
                secret: f.required_secret(SECRET)?,
                tunnel_id: f.required_uuid(TUNNEL_ID)?,
                endpoint: f.optional_str(ENDPOINT)?.filter(|e| !e.is_empty()),
                edge: f.edge_list(TOKEN_KEY_EDGE, false)?,
                ca_fingerprint: f.fingerprint(TOKEN_KEY_CA, false)?,
            })
        };
        parse().map_err(TokenError::Payload)
    }

    /// The token string. It holds the secret and is zeroized when dropped.
    pub fn encode(&self) -> Zeroizing<String> {
        let text = self.account_tag.len()
            + self.endpoint.as_ref().map_or(0, String::len)
            + self.edge.iter().map(|e| e.len() + 3).sum::<usize>();
        let mut w = ObjectWriter::with_capacity(capacity_for(&self.secret, text));
        w.str(ACCOUNT_TAG, &self.account_tag);
        w.secret(SECRET, &self.secret);
        w.str(TUNNEL_ID, &self.tunnel_id.hyphenated().to_string());
        if let Some(endpoint) = self.endpoint.as_ref().filter(|e| !e.is_empty()) {
            w.str(ENDPOINT, endpoint);
        }
        if !self.edge.is_empty() {
            w.str_list(TOKEN_KEY_EDGE, &self.edge);
        }
        if let Some(ca) = &self.ca_fingerprint {
            w.str(TOKEN_KEY_CA, &ca.to_string());
        }
        let json = w.finish();
        let mut out = Zeroizing::new(String::with_capacity(json.len().div_ceil(3) * 4 + 4));
        base64::engine::general_purpose::STANDARD.encode_string(json.as_bytes(), &mut out);
        out
    }

    /// A token for these credentials, with no edge addresses or CA fingerprint.
    pub fn from_credentials(credentials: TunnelCredentials) -> Self {
        Self {
            account_tag: credentials.account_tag,
            tunnel_id: credentials.tunnel_id,
            secret: credentials.secret,
            endpoint: credentials.endpoint,
            edge: Vec::new(),
            ca_fingerprint: None,
        }
    }

    /// The credentials this token carries (a token has no tunnel name).
    pub fn credentials(&self) -> TunnelCredentials {
        TunnelCredentials {
            account_tag: self.account_tag.clone(),
            tunnel_id: self.tunnel_id,
            tunnel_name: None,
            secret: self.secret.clone(),
            endpoint: self.endpoint.clone(),
        }
    }
}

impl FromStr for TunnelToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for TunnelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelToken")
            .field("account_tag", &self.account_tag)
            .field("tunnel_id", &self.tunnel_id)
            .field("secret", &format_args!("[redacted]"))
            .field("endpoint", &self.endpoint)
            .field("edge", &self.edge)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token in cloudflared's exact shape: `{"a":…,"s":…,"t":…}`, as Go's
    /// `json.Marshal` orders the `TunnelToken` struct, in standard base64.
    #[test]
    fn cloudflared_shaped_token_round_trips_byte_for_byte() {
        let json = r#"{"a":"0123456789abcdef0123456789abcdef","s":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","t":"8e343b13-a087-48ea-825f-9783931ff2a5"}"#;
        let token = base64::engine::general_purpose::STANDARD.encode(json);
        let parsed = TunnelToken::parse(&token).unwrap();
        assert_eq!(parsed.account_tag, "0123456789abcdef0123456789abcdef");
        assert_eq!(
            parsed.secret.expose_bytes(),
            &(0u8..32).collect::<Vec<_>>()[..]
        );
        assert_eq!(
            parsed.tunnel_id,
            Uuid::parse_str("8e343b13-a087-48ea-825f-9783931ff2a5").unwrap()
        );
        assert_eq!(parsed.endpoint, None);
        assert!(parsed.edge.is_empty());
        assert_eq!(parsed.ca_fingerprint, None);
        assert_eq!(parsed.encode().as_str(), token);
    }

    #[test]
    fn extension_keys_follow_cloudflareds() {
        let token = TunnelToken {
            account_tag: "acct".into(),
            tunnel_id: Uuid::from_bytes([7; 16]),
            secret: TunnelSecret::from_bytes(&[1; 32]).unwrap(),
            endpoint: Some("fed".into()),
            edge: vec!["edge.example.com:7844".into(), "[::1]:7844".into()],
            ca_fingerprint: Some(CaFingerprint::from_bytes([0xab; 32])),
        };
        let encoded = token.encode();
        let json = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .unwrap();
        let json = String::from_utf8(json).unwrap();
        let expected = format!(
            r#"{{"a":"acct","s":"{}","t":"07070707-0707-0707-0707-070707070707","e":"fed","zt_edge":["edge.example.com:7844","[::1]:7844"],"zt_ca":"{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode([1; 32]),
            "ab".repeat(32)
        );
        assert_eq!(json, expected);
        assert_eq!(TunnelToken::parse(&encoded).unwrap(), token);
    }
}
