//! Secret material: the tunnel secret and the authentication key derived from it.
//!
//! Invariants: secret bytes never appear in `Debug`, `Display` or an error; they are
//! zeroized when dropped; equality is decided in constant time.

use std::fmt;

use ring::hkdf;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// Fewest bytes a tunnel secret may have (cloudflared refuses shorter ones).
pub const MIN_SECRET_LEN: usize = 32;
/// Most bytes a tunnel secret may have. Longer user-supplied secrets are refused so that a
/// stray file cannot make us hold arbitrary amounts of secret memory.
pub const MAX_SECRET_LEN: usize = 128;
/// Length of a freshly generated secret, as `cloudflared tunnel create` makes them.
pub const GENERATED_SECRET_LEN: usize = 32;

/// HKDF-SHA256 salt used to derive an [`AuthKey`] from a secret.
///
/// Part of the wire protocol: changing it invalidates every stored verifier.
pub const AUTH_KEY_SALT: &[u8] = b"zt/1 auth-key salt";
/// HKDF-SHA256 `info` used to derive an [`AuthKey`] from a secret.
pub const AUTH_KEY_INFO: &[u8] = b"zt/1 auth-key";

const REDACTED: &str = "[redacted]";

/// A secret's length was outside `MIN_SECRET_LEN..=MAX_SECRET_LEN`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret is {found} bytes long; it must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes")]
pub struct SecretLengthError {
    /// The length that was found.
    pub found: usize,
}

/// A tunnel (or device) secret: 32 to 128 bytes.
///
/// `Debug` and `Display` print `[redacted]`; the bytes are zeroized on drop; `==` runs in
/// constant time. Use [`TunnelSecret::derive_auth_key`] to obtain the key that proves
/// possession of the secret without revealing it.
#[derive(Clone)]
pub struct TunnelSecret {
    bytes: Zeroizing<Vec<u8>>,
}

impl TunnelSecret {
    /// Generates a new 32-byte secret from the operating system's CSPRNG.
    ///
    /// # Panics
    /// Only if the operating system's random source fails, which leaves no safe way on.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; GENERATED_SECRET_LEN]);
        // `SystemRandom` reads the OS CSPRNG (getrandom(2) on Linux).
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .unwrap_or_else(|_| panic!("the operating system's random number generator failed"));
        Self { bytes }
    }

    /// Wraps existing secret bytes, checking their length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretLengthError> {
        Self::check_len(bytes.len())?;
        Ok(Self {
            bytes: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// Takes ownership of secret bytes, checking their length. The vector is zeroized on
    /// failure as well as on drop.
    pub fn from_vec(mut bytes: Vec<u8>) -> Result<Self, SecretLengthError> {
        if let Err(e) = Self::check_len(bytes.len()) {
            bytes.zeroize();
            return Err(e);
        }
        Ok(Self {
            bytes: Zeroizing::new(bytes),
        })
    }

    fn check_len(len: usize) -> Result<(), SecretLengthError> {
        if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len) {
            Ok(())
        } else {
            Err(SecretLengthError { found: len })
        }
    }

    /// Length of the secret in bytes.
    #[allow(clippy::len_without_is_empty)] // a secret is never empty
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The raw secret bytes.
    ///
    /// Needed only to write a credentials file or token that the user asked for, and for
    /// protocols that send the secret itself (cloudflared's). Everything else should use
    /// [`TunnelSecret::derive_auth_key`].
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Derives the authentication key: HKDF-SHA256 with salt [`AUTH_KEY_SALT`], the secret
    /// as input keying material and info [`AUTH_KEY_INFO`], 32 bytes of output.
    ///
    /// The edge stores only this key; a peer proves it knows the secret by computing an
    /// HMAC with this key over a value bound to its TLS connection.
    pub fn derive_auth_key(&self) -> AuthKey {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, AUTH_KEY_SALT);
        let prk = salt.extract(&self.bytes);
        let info = [AUTH_KEY_INFO];
        let mut out = [0u8; AuthKey::LEN];
        // `expand` and `fill` fail only for an output longer than 255 hash lengths; 32 bytes
        // never is.
        match prk.expand(&info, AuthKeyLen) {
            Ok(okm) => {
                if okm.fill(&mut out).is_err() {
                    unreachable!("HKDF-SHA256 can always produce 32 bytes");
                }
            }
            Err(_) => unreachable!("HKDF-SHA256 can always produce 32 bytes"),
        }
        AuthKey(out)
    }
}

struct AuthKeyLen;

impl hkdf::KeyType for AuthKeyLen {
    fn len(&self) -> usize {
        AuthKey::LEN
    }
}

impl PartialEq for TunnelSecret {
    fn eq(&self, other: &Self) -> bool {
        // Length is not secret (it is public in the file size); the contents are.
        self.bytes.len() == other.bytes.len() && bool::from(self.bytes.ct_eq(&other.bytes))
    }
}

impl Eq for TunnelSecret {}

impl fmt::Debug for TunnelSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for TunnelSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The 32-byte key derived from a secret (see [`TunnelSecret::derive_auth_key`]).
///
/// This is what the edge stores for a tunnel or device. It is as sensitive as a password
/// hash: `Debug` and `Display` print `[redacted]`, it is zeroized on drop and compared in
/// constant time.
#[derive(Clone)]
pub struct AuthKey([u8; 32]);

impl AuthKey {
    /// Length of the key in bytes.
    pub const LEN: usize = 32;

    /// Wraps a stored key.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes, for storing them or keying an HMAC.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for AuthKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PartialEq for AuthKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for AuthKey {}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked() {
        assert_eq!(
            TunnelSecret::from_bytes(&[0; 31]).unwrap_err(),
            SecretLengthError { found: 31 }
        );
        assert_eq!(
            TunnelSecret::from_bytes(&[0; 129]).unwrap_err(),
            SecretLengthError { found: 129 }
        );
        assert!(TunnelSecret::from_bytes(&[0; 32]).is_ok());
        assert!(TunnelSecret::from_bytes(&[0; 128]).is_ok());
    }

    #[test]
    fn generated_secrets_differ_and_are_32_bytes() {
        let a = TunnelSecret::generate();
        let b = TunnelSecret::generate();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_ne!(a.derive_auth_key(), b.derive_auth_key());
    }

    #[test]
    fn derivation_is_deterministic_and_redacted() {
        let s = TunnelSecret::from_bytes(&(0u8..32).collect::<Vec<_>>()).unwrap();
        let k1 = s.derive_auth_key();
        let k2 = s.clone().derive_auth_key();
        assert_eq!(k1, k2);
        assert_eq!(
            format!("{s:?} {s} {k1:?} {k1}"),
            "[redacted] [redacted] [redacted] [redacted]"
        );
    }
}
