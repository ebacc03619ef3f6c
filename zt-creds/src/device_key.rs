//! Device keys: an Ed25519 key pair made on the laptop, whose private half never leaves it.
//!
//! A device enrolled through an identity provider proves possession with a signature the
//! edge checks against the public key alone, so nothing the edge stores is enough to pose
//! as the device. Devices made by `zt user add` keep their shared secret ([`TunnelSecret`]).
//!
//! [`TunnelSecret`]: crate::TunnelSecret

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Length of an Ed25519 public key.
pub const DEVICE_PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const DEVICE_SIGNATURE_LEN: usize = 64;
/// Longest PKCS#8 document accepted for a device key (ring's v2 documents are 85 bytes).
const MAX_PKCS8_LEN: usize = 128;

/// A device key was not an Ed25519 PKCS#8 document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device key is not an Ed25519 PKCS#8 document ({len} bytes)")]
pub struct DeviceKeyError {
    /// The length of what was given.
    pub len: usize,
}

/// A device's Ed25519 private key (with its public half).
///
/// `Debug` prints only the public key; the PKCS#8 bytes are zeroized on drop.
pub struct DeviceKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: Ed25519KeyPair,
}

impl DeviceKey {
    /// Generates a new key from the operating system's CSPRNG.
    ///
    /// # Panics
    /// Only if the operating system's random source fails, which leaves no safe way on.
    pub fn generate() -> Self {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .unwrap_or_else(|_| panic!("the operating system's random number generator failed"));
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        // A document ring just made always parses.
        Self::from_pkcs8(&pkcs8).unwrap_or_else(|_| panic!("ring made an unreadable key"))
    }

    /// Reads a PKCS#8 document (v1 or v2) holding an Ed25519 key.
    pub fn from_pkcs8(bytes: &[u8]) -> Result<Self, DeviceKeyError> {
        let err = DeviceKeyError { len: bytes.len() };
        if bytes.len() > MAX_PKCS8_LEN {
            return Err(err);
        }
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes).map_err(|_| err)?;
        Ok(Self {
            pkcs8: Zeroizing::new(bytes.to_vec()),
            pair,
        })
    }

    /// The PKCS#8 document, for writing to the device's 0600 credentials file only.
    pub fn expose_pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half.
    pub fn public_key(&self) -> DevicePublicKey {
        let mut out = [0u8; DEVICE_PUBLIC_KEY_LEN];
        out.copy_from_slice(self.pair.public_key().as_ref());
        DevicePublicKey(out)
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; DEVICE_SIGNATURE_LEN] {
        let mut out = [0u8; DEVICE_SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

impl Clone for DeviceKey {
    fn clone(&self) -> Self {
        // The document parsed once, so it parses again.
        Self::from_pkcs8(&self.pkcs8).unwrap_or_else(|_| panic!("a parsed device key re-parses"))
    }
}

impl PartialEq for DeviceKey {
    fn eq(&self, other: &Self) -> bool {
        self.pkcs8.as_slice().ct_eq(other.pkcs8.as_slice()).into()
    }
}

impl Eq for DeviceKey {}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("public", &self.public_key())
            .field("private", &"[redacted]")
            .finish()
    }
}

/// A device's Ed25519 public key: what the edge stores for a device enrolled through an
/// identity provider. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevicePublicKey(pub [u8; DEVICE_PUBLIC_KEY_LEN]);

impl DevicePublicKey {
    /// Reads 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; DEVICE_PUBLIC_KEY_LEN]>::try_from(bytes)
            .ok()
            .map(Self)
    }

    /// Whether `sig` is this key's Ed25519 signature over `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(message, sig)
            .is_ok()
    }

    /// Lower-case hex, for records and logs.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != DEVICE_PUBLIC_KEY_LEN * 2 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; DEVICE_PUBLIC_KEY_LEN];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevicePublicKey({})", self.to_hex())
    }
}

impl fmt::Display for DevicePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_what_its_public_key_verifies() {
        let key = DeviceKey::generate();
        let sig = key.sign(b"hello");
        assert!(key.public_key().verify(b"hello", &sig));
        assert!(!key.public_key().verify(b"hellO", &sig));
        assert!(!DeviceKey::generate().public_key().verify(b"hello", &sig));
        let again = DeviceKey::from_pkcs8(key.expose_pkcs8()).expect("re-reads");
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(again, key);
    }

    #[test]
    fn debug_shows_only_the_public_key() {
        let key = DeviceKey::generate();
        let shown = format!("{key:?}");
        assert!(shown.contains(&key.public_key().to_hex()), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn public_keys_round_trip_through_hex_and_bad_hex_is_refused() {
        let pk = DeviceKey::generate().public_key();
        assert_eq!(DevicePublicKey::from_hex(&pk.to_hex()), Some(pk));
        assert_eq!(DevicePublicKey::from_hex("00"), None);
        assert_eq!(DevicePublicKey::from_hex(&"zz".repeat(32)), None);
        assert!(DeviceKey::from_pkcs8(b"not a key").is_err());
        assert!(DeviceKey::from_pkcs8(&[0u8; 4096]).is_err());
    }
}
