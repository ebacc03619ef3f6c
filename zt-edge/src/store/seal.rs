//! Secrets at rest: the edge's key file and the envelope that seals the values of the tables
//! holding proof keys and verifiers (tunnels, devices) in a shared backend.
//!
//! The key is 32 random bytes in a file of its own (mode 0600, created on first use); every
//! edge sharing one database needs the same file. A sealed value is
//! `0x01 ‖ nonce (12 bytes) ‖ ChaCha20-Poly1305 ciphertext and tag`, with the table name and
//! the record's key as associated data, so a value moved to another record or table does
//! not open. ring (already the workspace's crypto) provides the AEAD.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use super::backend::Table;
use crate::fsutil;

/// Length of the key file's content.
pub const SECRETS_KEY_LEN: usize = 32;

/// First byte of a sealed value: the envelope's format.
const FORMAT: u8 = 1;

/// An error loading or creating the secrets key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsKeyError {
    /// The file could not be read or created.
    #[error("secrets key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file grants access to group or others.
    #[error("secrets key file {path} has mode {mode:o}; it must be readable by its owner only (chmod 600 {path})")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold exactly 32 bytes.
    #[error("secrets key file {path} holds {len} bytes, expected {SECRETS_KEY_LEN} random bytes")]
    Length {
        /// The file.
        path: PathBuf,
        /// What it holds.
        len: usize,
    },
    /// No randomness for a new key.
    #[error("cannot draw random bytes for a new secrets key")]
    Random,
}

/// The key that seals secrets at rest. Its bytes are never printed.
pub struct SecretsKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey([redacted])")
    }
}

impl SecretsKey {
    /// Reads the key at `path`, creating it (32 random bytes, mode 0600) when absent.
    /// Refuses a file readable by group or others, and one of another length.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretsKeyError> {
        let io = |source| SecretsKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; SECRETS_KEY_LEN];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| SecretsKeyError::Random)?;
                // create_new: two edges starting at once never overwrite each other's key.
                match OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(fsutil::FILE_MODE)
                    .open(path)
                {
                    Ok(mut file) => {
                        file.write_all(&bytes).map_err(io)?;
                        file.sync_all().map_err(io)?;
                        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                            fsutil::sync_dir(dir).map_err(io)?;
                        }
                        tracing::info!(path = %path.display(), "created secrets key file");
                        return Ok(Self::from_bytes(&bytes));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io(e)),
                }
            }
            Err(e) => return Err(io(e)),
        }
        if let Some(mode) = fsutil::loose_mode(path).map_err(io)? {
            return Err(SecretsKeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut bytes = Vec::with_capacity(SECRETS_KEY_LEN + 1);
        std::fs::File::open(path)
            .and_then(|f| f.take(SECRETS_KEY_LEN as u64 + 1).read_to_end(&mut bytes))
            .map_err(io)?;
        let key: [u8; SECRETS_KEY_LEN] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| SecretsKeyError::Length {
                    path: path.to_path_buf(),
                    len: bytes.len(),
                })?;
        Ok(Self::from_bytes(&key))
    }

    /// A key from its raw bytes.
    pub fn from_bytes(bytes: &[u8; SECRETS_KEY_LEN]) -> Self {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            // ChaCha20-Poly1305 takes any 32-byte key: this cannot fail.
            .unwrap_or_else(|_| unreachable!("a 32-byte ChaCha20-Poly1305 key"));
        Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// Seals `plain` as the value of `key` in `table`.
    pub fn seal(&self, table: &str, key: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + aead::MAX_TAG_LEN);
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let mut body = out.split_off(1 + NONCE_LEN);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(table, key)),
                &mut body,
            )
            .map_err(|_| SealError)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a value sealed by [`SecretsKey::seal`] for the same table and key.
    pub fn open(&self, table: &str, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let (&format, rest) = sealed.split_first().ok_or(SealError)?;
        if format != FORMAT || rest.len() < NONCE_LEN + aead::MAX_TAG_LEN {
            return Err(SealError);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(table, key)), &mut body)
            .map_err(|_| SealError)?;
        let len = plain.len();
        body.truncate(len);
        Ok(body)
    }
}

/// One secret sealed with [`SecretsKey`] inside a record (a refresh token in a
/// [`Device`](super::Device)), stored as hex, so it is sealed on every backend, the embedded
/// file as well as a shared database. `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SealedSecret(String);

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedSecret({} bytes)", self.0.len() / 2)
    }
}

impl SecretsKey {
    /// Seals `plain` as the secret `purpose` (say `device.refresh_token`) of the record
    /// whose key is `record`; it opens only for the same purpose and record.
    pub fn seal_secret(
        &self,
        purpose: &str,
        record: &[u8],
        plain: &[u8],
    ) -> Result<SealedSecret, SealError> {
        self.seal(purpose, record, plain)
            .map(|v| SealedSecret(crate::hex::encode(&v)))
    }

    /// Opens a secret sealed by [`SecretsKey::seal_secret`].
    pub fn open_secret(
        &self,
        purpose: &str,
        record: &[u8],
        sealed: &SealedSecret,
    ) -> Result<Vec<u8>, SealError> {
        let bytes = crate::hex::decode(&sealed.0).ok_or(SealError)?;
        self.open(purpose, record, &bytes)
    }
}

/// A value did not seal or open: the wrong key, an altered value, or one moved from another
/// record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed value does not open with this secrets key")]
pub struct SealError;

fn aad(table: &str, key: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(16 + table.len() + key.len());
    a.extend_from_slice(b"zt-state-v1\0");
    a.extend_from_slice(table.as_bytes());
    a.push(0);
    a.extend_from_slice(key);
    a
}

/// Whether a table's values hold secrets (proof keys, verifiers) and are sealed at rest.
pub(crate) fn is_secret(table: Table) -> bool {
    matches!(
        table,
        Table::Tunnels | Table::Devices | Table::IdentityProviders | Table::ServiceTokens
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_bind_the_record() {
        let k = SecretsKey::from_bytes(&[7; 32]);
        let s = k.seal("tunnels", b"id-1", b"secret").unwrap();
        assert_eq!(k.open("tunnels", b"id-1", &s).unwrap(), b"secret");
        assert_eq!(k.open("tunnels", b"id-2", &s), Err(SealError));
        assert_eq!(k.open("devices", b"id-1", &s), Err(SealError));
        let other = SecretsKey::from_bytes(&[8; 32]);
        assert_eq!(other.open("tunnels", b"id-1", &s), Err(SealError));
        let mut bad = s.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(k.open("tunnels", b"id-1", &bad), Err(SealError));
        assert_eq!(k.open("tunnels", b"id-1", &s[..5]), Err(SealError));
    }
}
