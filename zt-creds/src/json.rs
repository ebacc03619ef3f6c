//! JSON plumbing shared by the credentials file, the tunnel token and device credentials.
//!
//! Documents are parsed into a `serde_json::Value` first and the fields picked out by hand,
//! so that every error can name the field at fault and never has to quote a value (a value
//! may be a secret pasted into the wrong field). Keys match as Go's `encoding/json` matches
//! them, which is what cloudflared accepts: exactly, or else ignoring ASCII case. Strings
//! that held secrets are zeroized once read; leftovers are scrubbed on drop.
//!
//! Output is written by hand too, so that the key order is fixed and the secret goes
//! straight into a zeroizing buffer.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::Value;
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

use crate::fingerprint::{CaFingerprint, FingerprintError};
use crate::secret::{SecretLengthError, TunnelSecret};

/// Standard base64, read a little more forgivingly than cloudflared does: like Go's
/// `base64.StdEncoding`, non-zero trailing bits are accepted; unlike it, missing padding
/// is too, since refusing it would help no one. Output is always canonical and padded.
pub(crate) const BASE64_STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A JSON credentials document (file or token payload) was not acceptable.
///
/// No variant quotes a value from the document: it might be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The document was empty or only whitespace.
    #[error("the document is empty")]
    Empty,
    /// The document was not valid JSON.
    #[error("not valid JSON at line {line}, column {column}: {reason}")]
    Syntax {
        /// One-based line of the error.
        line: usize,
        /// One-based column (in bytes) of the error.
        column: usize,
        /// What the JSON parser expected or found, without quoting the input.
        reason: String,
    },
    /// The document was valid JSON but not an object.
    #[error("the document is {found}, not a JSON object")]
    NotAnObject {
        /// The JSON type that was found ("an array", "a string", ...).
        found: &'static str,
    },
    /// A required field was absent.
    #[error("field `{field}` is missing")]
    MissingField {
        /// The JSON key.
        field: &'static str,
    },
    /// A field had the wrong JSON type.
    #[error("field `{field}` is {found}; expected {expected}")]
    WrongType {
        /// The JSON key.
        field: &'static str,
        /// What the field must hold.
        expected: &'static str,
        /// The JSON type that was found.
        found: &'static str,
    },
    /// A field that must not be empty was an empty string.
    #[error("field `{field}` is an empty string")]
    EmptyField {
        /// The JSON key.
        field: &'static str,
    },
    /// A field that must hold a UUID did not.
    #[error("field `{field}` is not a UUID (expected 32 hex digits, as in 8e343b13-a087-48ea-825f-9783931ff2a5)")]
    NotUuid {
        /// The JSON key.
        field: &'static str,
    },
    /// A field that must hold standard base64 did not.
    #[error("field `{field}` is not standard base64 (alphabet A-Z a-z 0-9 + /, padded with =){hint}", hint = url_safe_hint(*.url_safe_chars))]
    NotBase64 {
        /// The JSON key.
        field: &'static str,
        /// Whether the value contained `-` or `_`: a sign it was URL-safe base64.
        url_safe_chars: bool,
    },
    /// The secret decoded to a length outside 32..=128 bytes.
    #[error("field `{field}`: {source}")]
    SecretLength {
        /// The JSON key.
        field: &'static str,
        /// The length that was found.
        #[source]
        source: SecretLengthError,
    },
    /// A field that must hold a SHA-256 fingerprint did not.
    #[error("field `{field}` is not a SHA-256 fingerprint: {source}")]
    NotFingerprint {
        /// The JSON key.
        field: &'static str,
        /// What is wrong with it.
        #[source]
        source: FingerprintError,
    },
    /// An item of an edge address list was not `host:port`.
    #[error("field `{field}`, item {index}: {reason}")]
    BadEdgeAddress {
        /// The JSON key.
        field: &'static str,
        /// Zero-based index of the item in the list.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A list that must not be empty was.
    #[error("field `{field}` is an empty list; at least one item is needed")]
    EmptyList {
        /// The JSON key.
        field: &'static str,
    },
    /// A field that must hold an email address did not look like one.
    #[error("field `{field}` is not an email address (expected local@domain)")]
    NotEmail {
        /// The JSON key.
        field: &'static str,
    },
    /// Exactly one of two fields must be present; both or neither were.
    #[error("exactly one of `{first}` and `{second}` must be present; {found}")]
    OneOf {
        /// The first JSON key.
        first: &'static str,
        /// The second JSON key.
        second: &'static str,
        /// "both are" or "neither is".
        found: &'static str,
    },
    /// A field that must hold a device key (base64 of an Ed25519 PKCS#8 document) did not.
    #[error("field `{field}`: {source}")]
    DeviceKey {
        /// The JSON key.
        field: &'static str,
        /// What is wrong with it.
        #[source]
        source: crate::device_key::DeviceKeyError,
    },
}

fn url_safe_hint(url_safe_chars: bool) -> &'static str {
    if url_safe_chars {
        "; it holds - or _, which only URL-safe base64 uses"
    } else {
        ""
    }
}

/// Where a document came from, for log lines.
#[derive(Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub(crate) kind: &'static str,
    pub(crate) path: Option<&'a Path>,
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The known fields of one parsed JSON object, by their canonical key.
pub(crate) struct Fields {
    map: BTreeMap<&'static str, Value>,
}

impl Fields {
    /// Parses `input` as a JSON object whose keys are among `known`.
    ///
    /// Unknown keys are dropped and named in a warning. A leading UTF-8 byte-order mark is
    /// skipped with a warning: editors on Windows add one, and it cannot be mistaken for
    /// anything else.
    pub(crate) fn parse(
        input: &[u8],
        known: &[&'static str],
        origin: Origin<'_>,
    ) -> Result<Self, ParseError> {
        let input = match input.strip_prefix(UTF8_BOM) {
            Some(rest) => {
                tracing::warn!(
                    kind = origin.kind,
                    path = ?origin.path,
                    "skipping a UTF-8 byte-order mark at the start of the document"
                );
                rest
            }
            None => input,
        };
        if input.iter().all(u8::is_ascii_whitespace) {
            return Err(ParseError::Empty);
        }
        let value: Value = serde_json::from_slice(input).map_err(syntax_error)?;
        let object = match value {
            Value::Object(object) => object,
            mut other => {
                let found = type_name(&other);
                scrub(&mut other);
                return Err(ParseError::NotAnObject { found });
            }
        };

        // Exact key matches win over case-insensitive ones. Among duplicates of one exact
        // key the last in the document wins (serde_json keeps the last); among several
        // case-insensitive spellings, one wins: a document that spells a key twice in
        // different cases gets what it deserves, deterministically.
        let mut map: BTreeMap<&'static str, (bool, Value)> = BTreeMap::new();
        for (key, mut value) in object {
            let exact = known.iter().find(|k| **k == key);
            let folded = exact.or_else(|| known.iter().find(|k| k.eq_ignore_ascii_case(&key)));
            let Some(&canonical) = folded else {
                tracing::warn!(
                    kind = origin.kind,
                    path = ?origin.path,
                    key = ?key,
                    "ignoring unknown key"
                );
                scrub(&mut value);
                continue;
            };
            let is_exact = exact.is_some();
            match map.get_mut(canonical) {
                Some((old_exact, old)) if *old_exact && !is_exact => scrub(&mut value),
                Some(slot) => {
                    scrub(&mut slot.1);
                    *slot = (is_exact, value);
                }
                None => {
                    map.insert(canonical, (is_exact, value));
                }
            }
        }
        Ok(Self {
            map: map.into_iter().map(|(k, (_, v))| (k, v)).collect(),
        })
    }

    /// Takes a field; JSON `null` counts as absent, as in Go.
    fn take(&mut self, field: &'static str) -> Option<Value> {
        match self.map.remove(field) {
            Some(Value::Null) | None => None,
            Some(v) => Some(v),
        }
    }

    fn take_required(&mut self, field: &'static str) -> Result<Value, ParseError> {
        match self.map.remove(field) {
            None => Err(ParseError::MissingField { field }),
            Some(v) => Ok(v),
        }
    }

    pub(crate) fn required_str(&mut self, field: &'static str) -> Result<String, ParseError> {
        let v = self.take_required(field)?;
        into_string(field, v, "a string")
    }

    pub(crate) fn required_nonempty_str(
        &mut self,
        field: &'static str,
    ) -> Result<String, ParseError> {
        let s = self.required_str(field)?;
        if s.is_empty() {
            return Err(ParseError::EmptyField { field });
        }
        Ok(s)
    }

    pub(crate) fn optional_str(
        &mut self,
        field: &'static str,
    ) -> Result<Option<String>, ParseError> {
        self.take(field)
            .map(|v| into_string(field, v, "a string"))
            .transpose()
    }

    pub(crate) fn required_uuid(&mut self, field: &'static str) -> Result<Uuid, ParseError> {
        let v = self.take_required(field)?;
        parse_uuid(field, v)
    }

    pub(crate) fn optional_uuid(
        &mut self,
        field: &'static str,
    ) -> Result<Option<Uuid>, ParseError> {
        self.take(field).map(|v| parse_uuid(field, v)).transpose()
    }

    /// Whether a field is present (not absent, not `null`).
    pub(crate) fn has(&self, field: &'static str) -> bool {
        !matches!(self.map.get(field), None | Some(Value::Null))
    }

    /// Takes a required field of secret bytes in standard base64, zeroizing every copy.
    pub(crate) fn required_secret_bytes(
        &mut self,
        field: &'static str,
    ) -> Result<Zeroizing<Vec<u8>>, ParseError> {
        let v = self.take_required(field)?;
        let text = Zeroizing::new(into_string(field, v, "a base64 string")?);
        let mut bytes = Zeroizing::new(Vec::with_capacity(text.len()));
        if BASE64_STANDARD_LENIENT
            .decode_vec(text.as_bytes(), &mut bytes)
            .is_err()
        {
            return Err(ParseError::NotBase64 {
                field,
                url_safe_chars: text.bytes().any(|b| b == b'-' || b == b'_'),
            });
        }
        Ok(bytes)
    }

    pub(crate) fn required_secret(
        &mut self,
        field: &'static str,
    ) -> Result<TunnelSecret, ParseError> {
        let v = self.take_required(field)?;
        let text = Zeroizing::new(into_string(field, v, "a base64 string")?);
        // Room for the decoded bytes up front, so the buffer never reallocates.
        let mut bytes = Zeroizing::new(Vec::with_capacity(text.len()));
        if BASE64_STANDARD_LENIENT
            .decode_vec(text.as_bytes(), &mut bytes)
            .is_err()
        {
            return Err(ParseError::NotBase64 {
                field,
                url_safe_chars: text.bytes().any(|b| b == b'-' || b == b'_'),
            });
        }
        TunnelSecret::from_bytes(&bytes)
            .map_err(|source| ParseError::SecretLength { field, source })
    }

    pub(crate) fn fingerprint(
        &mut self,
        field: &'static str,
        required: bool,
    ) -> Result<Option<CaFingerprint>, ParseError> {
        let v = if required {
            Some(self.take_required(field)?)
        } else {
            self.take(field)
        };
        v.map(|v| {
            into_string(field, v, "a hex string")?
                .parse()
                .map_err(|source| ParseError::NotFingerprint { field, source })
        })
        .transpose()
    }

    /// A list of edge addresses; absent means empty unless `required`.
    pub(crate) fn edge_list(
        &mut self,
        field: &'static str,
        required: bool,
    ) -> Result<Vec<String>, ParseError> {
        const EXPECTED: &str = "a list of \"host:port\" strings";
        let v = if required {
            Some(self.take_required(field)?)
        } else {
            self.take(field)
        };
        let Some(v) = v else {
            return Ok(Vec::new());
        };
        let items = match v {
            Value::Array(items) => items,
            other => {
                return Err(ParseError::WrongType {
                    field,
                    expected: EXPECTED,
                    found: type_name(&other),
                })
            }
        };
        if required && items.is_empty() {
            return Err(ParseError::EmptyList { field });
        }
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let Value::String(addr) = item else {
                return Err(ParseError::WrongType {
                    field,
                    expected: EXPECTED,
                    found: "a list holding a non-string",
                });
            };
            check_edge_address(&addr).map_err(|reason| ParseError::BadEdgeAddress {
                field,
                index,
                reason,
            })?;
            out.push(addr);
        }
        Ok(out)
    }
}

impl Drop for Fields {
    fn drop(&mut self) {
        for v in self.map.values_mut() {
            scrub(v);
        }
    }
}

fn syntax_error(e: serde_json::Error) -> ParseError {
    // serde_json's message is "<reason> at line L column C"; the reasons are fixed strings
    // that never quote the input when parsing into a `Value`.
    let full = e.to_string();
    let reason = match full.rfind(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    };
    ParseError::Syntax {
        line: e.line(),
        column: e.column(),
        reason,
    }
}

fn into_string(
    field: &'static str,
    v: Value,
    expected: &'static str,
) -> Result<String, ParseError> {
    match v {
        Value::String(s) => Ok(s),
        mut other => {
            let found = type_name(&other);
            scrub(&mut other);
            Err(ParseError::WrongType {
                field,
                expected,
                found,
            })
        }
    }
}

fn parse_uuid(field: &'static str, v: Value) -> Result<Uuid, ParseError> {
    let s = into_string(field, v, "a UUID string")?;
    // `Uuid::parse_str` takes the same forms as Go's `uuid.Parse`: hyphenated, simple,
    // braced and `urn:uuid:`.
    Uuid::parse_str(&s).map_err(|_| ParseError::NotUuid { field })
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Zeroizes every string in a value, in case one was a secret in the wrong place.
fn scrub(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => map.values_mut().for_each(scrub),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Checks that an edge address is `host:port` with a DNS name, an IPv4 address or a
/// bracketed IPv6 address, and a non-zero port.
pub(crate) fn check_edge_address(addr: &str) -> Result<(), &'static str> {
    if addr.is_empty() {
        return Err("the address is empty");
    }
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (v6, port) = rest
            .split_once("]:")
            .ok_or("a bracketed IPv6 address must be followed by :port")?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "the bracketed host is not an IPv6 address")?;
        (None, port)
    } else {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or("the address has no port (expected host:port)")?;
        if host.contains(':') {
            return Err("an IPv6 address must be in brackets, as in [2001:db8::1]:7844");
        }
        (Some(host), port)
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err("the address has no host (expected host:port)");
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err("the host holds characters that no DNS name or IPv4 address has");
        }
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err("the port is not a number from 1 to 65535"),
    }
}

/// Builds a compact JSON object in a fixed key order, in a zeroizing buffer.
pub(crate) struct ObjectWriter {
    out: Zeroizing<String>,
    empty: bool,
    initial_capacity: usize,
}

impl ObjectWriter {
    /// `capacity` should cover the whole document so that the buffer never reallocates
    /// (a reallocation would leave an unzeroized copy of the secret behind).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let mut out = Zeroizing::new(String::with_capacity(capacity));
        out.push('{');
        let initial_capacity = out.capacity();
        Self {
            out,
            empty: true,
            initial_capacity,
        }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        push_json_string(&mut self.out, key);
        self.out.push(':');
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_string(&mut self.out, value);
    }

    pub(crate) fn secret(&mut self, key: &str, secret: &TunnelSecret) {
        self.secret_bytes(key, secret.expose_bytes());
    }

    pub(crate) fn secret_bytes(&mut self, key: &str, bytes: &[u8]) {
        self.key(key);
        self.out.push('"');
        // Base64 needs no JSON escaping.
        base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut self.out);
        self.out.push('"');
    }

    pub(crate) fn str_list(&mut self, key: &str, values: &[String]) {
        self.key(key);
        self.out.push('[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            push_json_string(&mut self.out, v);
        }
        self.out.push(']');
    }

    pub(crate) fn finish(mut self) -> Zeroizing<String> {
        self.out.push('}');
        debug_assert_eq!(
            self.out.capacity(),
            self.initial_capacity,
            "the buffer reallocated; capacity_for() is too small"
        );
        self.out
    }
}

/// Room needed for a document holding `secret` and strings of total length `text`
/// (each may grow sixfold through `\u00XX` escapes). The constant covers the keys, UUIDs,
/// fingerprint and punctuation of the largest document (device credentials, about 260
/// bytes) with room to spare.
pub(crate) fn capacity_for(secret: &TunnelSecret, text: usize) -> usize {
    capacity_for_len(secret.len(), text)
}

/// Like [`capacity_for`], for a secret of `secret_len` bytes of any kind.
pub(crate) fn capacity_for_len(secret_len: usize, text: usize) -> usize {
    secret_len.div_ceil(3) * 4 + text.saturating_mul(6) + 512
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                out.push_str("\\u00");
                let n = c as u32;
                out.push(char::from(b"0123456789abcdef"[(n >> 4) as usize]));
                out.push(char::from(b"0123456789abcdef"[(n & 0xf) as usize]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_reads_them() {
        let nasty = "a\"b\\c\nd\u{1}e\u{7f}é\u{2028}";
        let mut out = String::new();
        push_json_string(&mut out, nasty);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, nasty);
    }

    #[test]
    fn edge_addresses() {
        for ok in [
            "edge.example.com:7844",
            "127.0.0.1:1",
            "[::1]:7844",
            "[2001:db8::1]:65535",
        ] {
            assert_eq!(check_edge_address(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "edge.example.com",
            ":7844",
            "::1:7844",
            "[::1]7844",
            "[nope]:7844",
            "host:0",
            "host:65536",
            "host:+80",
            "ho st:80",
            "host/x:80",
        ] {
            assert!(check_edge_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_match_exactly_first_then_ignoring_case() {
        let origin = Origin {
            kind: "test",
            path: None,
        };
        let mut f =
            Fields::parse(br#"{"tunnelid":"x","TunnelID":"y"}"#, &["TunnelID"], origin).unwrap();
        assert_eq!(f.required_str("TunnelID").unwrap(), "y");
        let mut f = Fields::parse(br#"{"TunnelId":"x"}"#, &["TunnelID"], origin).unwrap();
        assert_eq!(f.required_str("TunnelID").unwrap(), "x");
    }
}
