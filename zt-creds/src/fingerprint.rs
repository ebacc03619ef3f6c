//! The SHA-256 fingerprint of the edge's CA certificate, by which connectors and clients
//! trust a self-hosted edge without a CA file.
//!
//! A fingerprint is not secret: `Debug` and `Display` show it in full, as lowercase hex.

use std::fmt;
use std::str::FromStr;

/// SHA-256 of the DER encoding of the edge's CA certificate.
///
/// Written as 64 lowercase hex digits. Parsing also accepts upper case and the
/// colon-separated pairs that `openssl x509 -fingerprint -sha256` prints.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaFingerprint([u8; 32]);

/// A string was not a SHA-256 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FingerprintError {
    /// The string held a character other than a hex digit (or a `:` between pairs).
    #[error("character {position} is not a hex digit")]
    NotHex {
        /// Zero-based character position of the offending character.
        position: usize,
    },
    /// The string had the wrong number of hex digits.
    #[error("{found} hex digits found; a SHA-256 fingerprint has 64")]
    WrongLength {
        /// How many hex digits there were.
        found: usize,
    },
}

impl CaFingerprint {
    /// Length of the fingerprint in bytes.
    pub const LEN: usize = 32;

    /// The fingerprint of a certificate given in DER.
    pub fn of_der(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// Wraps the 32 digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for CaFingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Colons are accepted anywhere between digits: this is lenient on placement but
        // never changes which digits are read.
        let mut out = [0u8; 32];
        let mut digits = 0usize;
        for (position, c) in s.chars().enumerate() {
            if c == ':' {
                continue;
            }
            let nibble = c
                .to_digit(16)
                .ok_or(FingerprintError::NotHex { position })?;
            if digits < 64 {
                // `to_digit(16)` is below 16, so the cast cannot truncate.
                out[digits / 2] |= (nibble as u8) << if digits % 2 == 0 { 4 } else { 0 };
            }
            digits += 1;
        }
        if digits != 64 {
            return Err(FingerprintError::WrongLength { found: digits });
        }
        Ok(Self(out))
    }
}

impl fmt::Display for CaFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CaFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaFingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_openssl_form() {
        let fp = CaFingerprint::of_der(b"not really DER, but any bytes hash");
        let hex = fp.to_string();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<CaFingerprint>().unwrap(), fp);
        let openssl: String = hex
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(openssl.parse::<CaFingerprint>().unwrap(), fp);
    }

    #[test]
    fn sha256_of_empty_input_is_the_known_value() {
        assert_eq!(
            CaFingerprint::of_der(b"").to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn bad_strings_are_refused_precisely() {
        assert_eq!(
            "ab".parse::<CaFingerprint>().unwrap_err(),
            FingerprintError::WrongLength { found: 2 }
        );
        let long = "0".repeat(66);
        assert_eq!(
            long.parse::<CaFingerprint>().unwrap_err(),
            FingerprintError::WrongLength { found: 66 }
        );
        let mut bad = "0".repeat(64);
        bad.replace_range(10..11, "g");
        assert_eq!(
            bad.parse::<CaFingerprint>().unwrap_err(),
            FingerprintError::NotHex { position: 10 }
        );
    }
}
