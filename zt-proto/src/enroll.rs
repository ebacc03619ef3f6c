//! The enrollment exchange: how `zt login` enrolls a device through an identity provider
//! before it has any credential.
//!
//! It runs on its own ALPN ([`ALPN_ENROLL`]) on the edge's listeners, over one
//! bidirectional stream (QUIC) or the TLS stream itself (TCP). Every message is a 4-byte
//! big-endian length followed by that many bytes of one JSON object tagged by `"type"`, at
//! most [`MAX_ENROLL_MESSAGE_LEN`] bytes. The laptop speaks first:
//!
//! 1. laptop → edge [`EnrollMessage::Hello`]: the flow, the provider, the device's public
//!    key; for the browser flow the PKCE challenge and the loopback redirect URI.
//! 2. edge → laptop [`EnrollMessage::Challenge`]: 32 random bytes.
//! 3. laptop → edge [`EnrollMessage::Possession`]: the device key's Ed25519 signature over
//!    [`possession_message`] (domain, TLS exporter, challenge, public key), so the key that
//!    opened the exchange is the one on this connection.
//! 4. edge → laptop: [`EnrollMessage::Authorize`] (browser: the URL to open) or
//!    [`EnrollMessage::DeviceCode`] (device flow: the code and URL to show). The `nonce` the
//!    edge puts in the request is [`login_nonce`] of the challenge and public key, so an ID
//!    token made for this exchange names this device key.
//! 5. browser flow: laptop → edge [`EnrollMessage::Code`] with the code, the state and the
//!    PKCE verifier; the edge redeems the code itself. Device flow: the edge polls.
//! 6. edge → laptop [`EnrollMessage::Enrolled`] or [`EnrollMessage::Failed`], then the edge
//!    closes.
//!
//! `zt logout` uses the same steps 1–3 with flow `logout` and the device id, then gets
//! [`EnrollMessage::LoggedOut`].

use std::fmt;

use bytes::{Buf, BufMut, BytesMut};
use ring::digest;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Exporter;

/// ALPN protocol id of the enrollment exchange.
pub const ALPN_ENROLL: &[u8] = b"zt-enroll/1";
/// Version carried in [`EnrollMessage::Hello`].
pub const ENROLL_VERSION: u16 = 1;
/// Longest message accepted, in bytes after the length prefix.
pub const MAX_ENROLL_MESSAGE_LEN: usize = 16 * 1024;
/// Length of the edge's challenge.
pub const CHALLENGE_LEN: usize = 32;
/// Domain separator of the possession signature.
pub const POSSESSION_DOMAIN: &[u8] = b"zt/1 enroll possession\0";

/// Which sign-in flow the laptop asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollFlow {
    /// Authorization code with PKCE, through a browser on the laptop and a loopback
    /// redirect.
    Browser,
    /// The device-authorization grant (RFC 8628): the laptop shows a code, a person
    /// approves it on any browser; the edge polls.
    DeviceCode,
    /// Ends a device's sign-in: the edge revokes the device.
    Logout,
}

impl EnrollFlow {
    /// The flow's name as the audit log writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Browser => "browser",
            Self::DeviceCode => "device_code",
            Self::Logout => "logout",
        }
    }
}

/// One message of the enrollment exchange. Unknown fields are ignored; an unknown `type`
/// is an error.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EnrollMessage {
    /// Laptop → edge, first.
    Hello {
        /// [`ENROLL_VERSION`].
        version: u16,
        /// The flow asked for.
        flow: EnrollFlow,
        /// The provider's name; `None` asks for the edge's only provider.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idp: Option<String>,
        /// The device's Ed25519 public key, 64 hex digits.
        public_key: String,
        /// A name for the device (its host name).
        #[serde(default)]
        device_name: String,
        /// Browser flow: the loopback redirect URI the laptop listens on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        redirect_uri: Option<String>,
        /// Browser flow: the PKCE `S256` challenge of the laptop's verifier.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code_challenge: Option<String>,
        /// Logout: the device signing out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_id: Option<Uuid>,
    },
    /// Edge → laptop: the one-time challenge (64 hex digits).
    Challenge {
        /// [`CHALLENGE_LEN`] random bytes, hex.
        challenge: String,
    },
    /// Laptop → edge: the device key's signature over [`possession_message`], hex.
    Possession {
        /// 128 hex digits.
        signature: String,
    },
    /// Edge → laptop, browser flow: where to send the browser.
    Authorize {
        /// The provider's authorization URL with every parameter filled in.
        url: String,
        /// The `state` the redirect must carry back.
        state: String,
    },
    /// Edge → laptop, device flow: what to show the person.
    DeviceCode {
        /// The code to type in.
        user_code: String,
        /// Where to type it.
        verification_uri: String,
        /// The same with the code filled in, when the provider gives one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verification_uri_complete: Option<String>,
        /// How long the code is valid, in seconds.
        expires_in: u64,
    },
    /// Laptop → edge, browser flow: what came back on the redirect, and the PKCE verifier.
    Code {
        /// The authorization code.
        code: String,
        /// The `state` the redirect carried.
        state: String,
        /// The PKCE verifier whose challenge was in [`EnrollMessage::Hello`].
        code_verifier: String,
    },
    /// Edge → laptop: the device is enrolled.
    Enrolled {
        /// The new device's id.
        device_id: Uuid,
        /// The user's verified email.
        email: String,
        /// The provider's name.
        idp: String,
        /// Groups from the provider.
        #[serde(default)]
        groups: Vec<String>,
        /// When the sign-in ends (RFC 3339).
        expires_at: String,
        /// The virtual network the device uses by default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default_vnet: Option<Uuid>,
    },
    /// Edge → laptop: the device's sign-in is ended at the edge.
    LoggedOut {
        /// The device.
        device_id: Uuid,
    },
    /// Edge → laptop: the exchange failed.
    Failed {
        /// A stable word for programs (`issuer`, `clock_skew`, `domain_not_allowed`,
        /// `email_not_verified`, `groups_claim_missing`, `idp_unreachable`, `timeout`, …).
        code: String,
        /// What a person should know or do.
        message: String,
    },
}

impl fmt::Debug for EnrollMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The code and verifier are secrets until redeemed; never print them.
        match self {
            Self::Code { state, .. } => f
                .debug_struct("Code")
                .field("state", state)
                .field("code", &"[redacted]")
                .field("code_verifier", &"[redacted]")
                .finish(),
            Self::Hello { flow, idp, .. } => f
                .debug_struct("Hello")
                .field("flow", flow)
                .field("idp", idp)
                .finish_non_exhaustive(),
            Self::Challenge { .. } => f.write_str("Challenge"),
            Self::Possession { .. } => f.write_str("Possession"),
            Self::Authorize { .. } => f.write_str("Authorize"),
            Self::DeviceCode { user_code, .. } => f
                .debug_struct("DeviceCode")
                .field("user_code", user_code)
                .finish_non_exhaustive(),
            Self::Enrolled {
                device_id, email, ..
            } => f
                .debug_struct("Enrolled")
                .field("device_id", device_id)
                .field("email", email)
                .finish_non_exhaustive(),
            Self::LoggedOut { device_id } => f
                .debug_struct("LoggedOut")
                .field("device_id", device_id)
                .finish(),
            Self::Failed { code, message } => f
                .debug_struct("Failed")
                .field("code", code)
                .field("message", message)
                .finish(),
        }
    }
}

impl EnrollMessage {
    /// The message's `type`, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Challenge { .. } => "challenge",
            Self::Possession { .. } => "possession",
            Self::Authorize { .. } => "authorize",
            Self::DeviceCode { .. } => "device_code",
            Self::Code { .. } => "code",
            Self::Enrolled { .. } => "enrolled",
            Self::LoggedOut { .. } => "logged_out",
            Self::Failed { .. } => "failed",
        }
    }

    /// The message with its length prefix, ready to write.
    pub fn encode(&self) -> Result<Vec<u8>, EnrollError> {
        let body = serde_json::to_vec(self).map_err(|e| EnrollError::Malformed {
            offset: 0,
            reason: e.to_string(),
        })?;
        if body.len() > MAX_ENROLL_MESSAGE_LEN {
            return Err(EnrollError::TooLong { len: body.len() });
        }
        let mut out = Vec::with_capacity(4 + body.len());
        out.put_u32(body.len() as u32);
        out.extend_from_slice(&body);
        Ok(out)
    }
}

/// A malformed or oversized enrollment message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// The length prefix announced more than [`MAX_ENROLL_MESSAGE_LEN`] bytes.
    #[error("enrollment message of {len} bytes; at most {MAX_ENROLL_MESSAGE_LEN} are accepted")]
    TooLong {
        /// The announced length.
        len: usize,
    },
    /// The message was not one JSON object of a known type.
    #[error("malformed enrollment message at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset in the message body where the JSON parser stopped.
        offset: usize,
        /// What it expected or found (never the input itself).
        reason: String,
    },
}

/// Splits a byte stream into enrollment messages.
#[derive(Debug, Default)]
pub struct EnrollDecoder {
    buf: BytesMut,
}

impl EnrollDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream. Refuses as soon as a length prefix is too large,
    /// so a peer can make it hold at most one message's worth.
    pub fn push(&mut self, data: &[u8]) -> Result<(), EnrollError> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 4 {
            let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            if len as usize > MAX_ENROLL_MESSAGE_LEN {
                return Err(EnrollError::TooLong { len: len as usize });
            }
        }
        if self.buf.len() > 4 + MAX_ENROLL_MESSAGE_LEN * 2 {
            // Only a peer that ignores the exchange's turns sends this much.
            return Err(EnrollError::TooLong {
                len: self.buf.len(),
            });
        }
        Ok(())
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<EnrollMessage>, EnrollError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_ENROLL_MESSAGE_LEN {
            return Err(EnrollError::TooLong { len });
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        self.buf.advance(4);
        let body = self.buf.split_to(len);
        parse_message(&body).map(Some)
    }
}

/// Parses one message body (without its length prefix).
pub fn parse_message(body: &[u8]) -> Result<EnrollMessage, EnrollError> {
    if body.len() > MAX_ENROLL_MESSAGE_LEN {
        return Err(EnrollError::TooLong { len: body.len() });
    }
    serde_json::from_slice(body).map_err(|e| EnrollError::Malformed {
        offset: byte_offset(body, e.line(), e.column()),
        reason: strip_position(&e.to_string()),
    })
}

/// serde_json reports line and column; turn them into a byte offset.
fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in body.split(|b| *b == b'\n').enumerate() {
        if i + 1 == line {
            return offset + column.saturating_sub(1).min(l.len());
        }
        offset += l.len() + 1;
    }
    body.len()
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// What the possession signature covers: domain, this connection's exporter, the edge's
/// challenge and the public key itself.
pub fn possession_message(
    exporter: &Exporter,
    challenge: &[u8; CHALLENGE_LEN],
    public_key: &[u8; 32],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(POSSESSION_DOMAIN.len() + 32 + CHALLENGE_LEN + 32);
    m.extend_from_slice(POSSESSION_DOMAIN);
    m.extend_from_slice(exporter);
    m.extend_from_slice(challenge);
    m.extend_from_slice(public_key);
    m
}

/// The OpenID `nonce` of an exchange: base64url without padding of
/// SHA-256(challenge ‖ device public key).
pub fn login_nonce(challenge: &[u8; CHALLENGE_LEN], public_key: &[u8; 32]) -> String {
    use base64::Engine as _;
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(challenge);
    ctx.update(public_key);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ctx.finish().as_ref())
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `N` bytes from hex, or `None`.
pub fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello() -> EnrollMessage {
        EnrollMessage::Hello {
            version: ENROLL_VERSION,
            flow: EnrollFlow::Browser,
            idp: Some("corp".into()),
            public_key: "00".repeat(32),
            device_name: "laptop".into(),
            redirect_uri: Some("http://127.0.0.1:5555/callback".into()),
            code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
            device_id: None,
        }
    }

    #[test]
    fn messages_round_trip_through_the_decoder_in_any_split() {
        let msgs = vec![
            hello(),
            EnrollMessage::Challenge {
                challenge: "ab".repeat(32),
            },
            EnrollMessage::Failed {
                code: "timeout".into(),
                message: "the browser sign-in timed out".into(),
            },
        ];
        let wire: Vec<u8> = msgs.iter().flat_map(|m| m.encode().unwrap()).collect();
        for split in [1, 3, 7, wire.len()] {
            let mut d = EnrollDecoder::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(split) {
                d.push(chunk).unwrap();
                while let Some(m) = d.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs);
        }
    }

    #[test]
    fn oversized_and_malformed_messages_are_refused_with_where() {
        let mut d = EnrollDecoder::new();
        let err = d.push(&(MAX_ENROLL_MESSAGE_LEN as u32 + 1).to_be_bytes());
        assert!(matches!(err, Err(EnrollError::TooLong { .. })));
        let err = parse_message(br#"{"type":"hello","version":"x"}"#).unwrap_err();
        let EnrollError::Malformed { offset, reason } = err else {
            panic!("{err:?}")
        };
        assert!(offset > 0 && offset <= 30, "{offset}");
        assert!(!reason.contains("at line"), "{reason}");
        assert!(parse_message(br#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn debug_never_shows_the_code_or_verifier() {
        let m = EnrollMessage::Code {
            code: "SECRET-CODE".into(),
            state: "s".into(),
            code_verifier: "SECRET-VERIFIER".into(),
        };
        let shown = format!("{m:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn the_nonce_binds_challenge_and_key() {
        let a = login_nonce(&[1; 32], &[2; 32]);
        assert_ne!(a, login_nonce(&[1; 32], &[3; 32]));
        assert_ne!(a, login_nonce(&[4; 32], &[2; 32]));
        assert_eq!(a.len(), 43);
        assert_eq!(from_hex::<2>("0aff"), Some([0x0a, 0xff]));
        assert_eq!(from_hex::<2>("0af"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut d = EnrollDecoder::new();
            for c in chunks {
                if d.push(&c).is_err() { break; }
                while let Ok(Some(_)) = d.next_message() {}
            }
        }
    }
}
