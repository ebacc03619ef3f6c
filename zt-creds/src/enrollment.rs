//! The enrollment string an administrator hands to engineers (`zt idp enrollment`): where
//! the edges are and which CA they chain to, so `zt login` never trusts on first use.
//!
//! Form: `zt-enroll1.` followed by URL-safe base64 (no padding) of the JSON object
//! `{"e":["host:port",…],"f":"<CA SHA-256 hex>","i":"<provider name>"}` (`i` optional).
//! Nothing in it is secret.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;

use crate::fingerprint::CaFingerprint;
use crate::json::{Fields, ObjectWriter, Origin, ParseError};

/// Prefix of every enrollment string.
pub const ENROLLMENT_PREFIX: &str = "zt-enroll1.";
/// Longest enrollment string accepted.
pub const MAX_ENROLLMENT_LEN: usize = 4096;

const EDGE: &str = "e";
const FINGERPRINT: &str = "f";
const IDP: &str = "i";
const KEYS: &[&str] = &[EDGE, FINGERPRINT, IDP];

/// Where to sign in: edge addresses, the CA fingerprint, and optionally the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// Edge addresses, `host:port`; at least one.
    pub edge: Vec<String>,
    /// SHA-256 fingerprint of the edges' CA certificate.
    pub ca_fingerprint: CaFingerprint,
    /// The identity provider to sign in with, when the edge has several.
    pub idp: Option<String>,
}

/// An enrollment string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollmentError {
    /// Too long.
    #[error(
        "the enrollment string is {len} characters; at most {MAX_ENROLLMENT_LEN} are accepted"
    )]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Not starting with [`ENROLLMENT_PREFIX`].
    #[error("the enrollment string does not start with `{ENROLLMENT_PREFIX}`; ask the administrator for the output of `zt idp enrollment`")]
    Prefix,
    /// The part after the prefix is not URL-safe base64.
    #[error("the enrollment string is not URL-safe base64 after `{ENROLLMENT_PREFIX}` (at character {offset}); was it cut when copied?")]
    Base64 {
        /// Where decoding stopped, counted from the start of the string.
        offset: usize,
    },
    /// The JSON inside is wrong.
    #[error("the enrollment string's content: {0}")]
    Content(#[from] ParseError),
}

impl Enrollment {
    /// The string form.
    pub fn encode(&self) -> String {
        let text = self.edge.iter().map(|e| e.len() + 3).sum::<usize>()
            + self.idp.as_ref().map_or(0, String::len);
        let mut w = ObjectWriter::with_capacity(text * 6 + 512);
        w.str_list(EDGE, &self.edge);
        w.str(FINGERPRINT, &self.ca_fingerprint.to_string());
        if let Some(idp) = &self.idp {
            w.str(IDP, idp);
        }
        let json = w.finish();
        format!(
            "{ENROLLMENT_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.as_bytes())
        )
    }

    /// Reads the string form (surrounding whitespace ignored).
    pub fn parse(s: &str) -> Result<Self, EnrollmentError> {
        let s = s.trim();
        if s.len() > MAX_ENROLLMENT_LEN {
            return Err(EnrollmentError::TooLong { len: s.len() });
        }
        let body = s
            .strip_prefix(ENROLLMENT_PREFIX)
            .ok_or(EnrollmentError::Prefix)?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body.trim_end_matches('='))
            .map_err(|e| EnrollmentError::Base64 {
                offset: ENROLLMENT_PREFIX.len()
                    + match e {
                        base64::DecodeError::InvalidByte(i, _) => i,
                        base64::DecodeError::InvalidLastSymbol { offset, .. } => offset,
                        _ => body.len(),
                    },
            })?;
        let origin = Origin {
            kind: "enrollment string",
            path: None,
        };
        let mut f = Fields::parse(&json, KEYS, origin)?;
        let edge = f.edge_list(EDGE, true)?;
        let Some(ca_fingerprint) = f.fingerprint(FINGERPRINT, true)? else {
            return Err(ParseError::MissingField { field: FINGERPRINT }.into());
        };
        let idp = f.optional_str(IDP)?.filter(|i| !i.is_empty());
        Ok(Self {
            edge,
            ca_fingerprint,
            idp,
        })
    }
}

impl FromStr for Enrollment {
    type Err = EnrollmentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Enrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Enrollment {
        Enrollment {
            edge: vec!["edge.example:7844".into(), "[2001:db8::1]:7844".into()],
            ca_fingerprint: "00".repeat(32).parse().unwrap(),
            idp: Some("corp".into()),
        }
    }

    #[test]
    fn round_trips_and_names_what_is_wrong() {
        let e = sample();
        let s = e.encode();
        assert!(s.starts_with(ENROLLMENT_PREFIX));
        assert_eq!(Enrollment::parse(&format!("  {s}\n")).unwrap(), e);
        assert_eq!(Enrollment::parse("zt1.abc"), Err(EnrollmentError::Prefix));
        assert!(matches!(
            Enrollment::parse("zt-enroll1.ab$cd"),
            Err(EnrollmentError::Base64 { offset: 13 })
        ));
        let cut = &s[..s.len() - 10];
        assert!(Enrollment::parse(cut).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,300}") {
            let _ = Enrollment::parse(&format!("{ENROLLMENT_PREFIX}{s}"));
            let _ = Enrollment::parse(&s);
        }

        #[test]
        fn any_idp_round_trips(idp in "[a-z0-9\u{e9}\"\\\\]{1,40}") {
            let mut e = sample();
            e.idp = Some(idp);
            prop_assert_eq!(Enrollment::parse(&e.encode()).unwrap(), e);
        }
    }
}
