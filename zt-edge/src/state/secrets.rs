//! The secrets the state directory keeps besides keys: the admin API's bearer token and the
//! secret behind the QUIC stateless-reset key.
//!
//! Both are random (the system generator; a failure of it is an error, never a weaker
//! fallback), written as lowercase hex with a trailing newline, and checked for their exact
//! shape on load, so a truncated or edited file is refused with its name. Neither is ever
//! logged: `AdminToken`'s `Debug` is redacted and the reset secret is zeroed on drop.

use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use super::dir::{read_private, write, ADMIN_TOKEN, RESET_SECRET};
use super::StateError;
use crate::hex;

/// The bearer token of the admin API. `Debug` is redacted; compare with
/// [`AdminToken::verify`], which takes constant time.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// Whether `presented` is this token.
    pub fn verify(&self, presented: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// The token, for the admin CLI to send.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Makes a new token (32 random bytes) and writes it to `admin-token`.
    pub(super) fn create(dir: &Path) -> Result<Self, StateError> {
        let token = random_hex::<32>()?;
        write(&dir.join(ADMIN_TOKEN), format!("{token}\n").as_bytes())?;
        Ok(Self(token))
    }

    /// Reads `admin-token`: 64 lowercase hex digits and a newline.
    pub(super) fn load(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(ADMIN_TOKEN);
        let text = read_private(&path)?;
        let token = text.strip_suffix('\n').unwrap_or(&text);
        if !hex::is_lower_hex(token, 64) {
            return Err(StateError::Corrupt {
                path,
                reason: "expected 64 lowercase hex digits".to_owned(),
            });
        }
        Ok(Self(token.to_owned()))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

/// The secret behind the QUIC stateless-reset key: 32 random bytes kept in the state
/// directory, so that an edge restarted after a crash can end the connections the crashed
/// process left behind at the peers' first packet instead of after their idle timeout.
pub(super) struct ResetSecret(pub(super) [u8; 32]);

impl Drop for ResetSecret {
    fn drop(&mut self) {
        self.0.fill(0);
    }
}

impl ResetSecret {
    /// Reads the reset secret, or creates it (0600) when the directory predates it.
    pub(super) fn load_or_create(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(RESET_SECRET);
        if !path.exists() {
            let mut bytes = [0u8; 32];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| StateError::Issue {
                    what: "the stateless-reset secret",
                    detail: "the system random generator failed".to_owned(),
                })?;
            write(&path, format!("{}\n", hex::encode(&bytes)).as_bytes())?;
            return Ok(Self(bytes));
        }
        let text = read_private(&path)?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        match hex::decode_array::<32>(text) {
            Some(bytes) => Ok(Self(bytes)),
            None => Err(StateError::Corrupt {
                path,
                reason: "expected 64 lowercase hex digits".to_owned(),
            }),
        }
    }
}

/// `N` random bytes as `2 * N` lowercase hex digits.
pub(super) fn random_hex<const N: usize>() -> Result<String, StateError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StateError::Issue {
            what: "random identifiers",
            detail: "the system random generator failed".to_owned(),
        })?;
    Ok(hex::encode(&bytes))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::state::{EdgeState, StateOptions};

    #[test]
    fn the_reset_secret_is_private_kept_across_restarts_and_added_to_older_directories() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("edge");
        let first = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        let key = first.stateless_reset_key();
        let mode = fs::metadata(dir.join(RESET_SECRET))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(first);
        let again = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        assert_eq!(again.stateless_reset_key(), key);
        drop(again);

        // A directory made before the secret existed gets a new one, once.
        fs::remove_file(dir.join(RESET_SECRET)).unwrap();
        let upgraded = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        let new_key = upgraded.stateless_reset_key();
        assert_ne!(new_key, key);
        drop(upgraded);
        let reopened = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        assert_eq!(reopened.stateless_reset_key(), new_key);
        drop(reopened);

        // A damaged secret is refused, naming the file.
        write(&dir.join(RESET_SECRET), b"not hex\n").unwrap();
        let err = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap_err();
        assert!(err.to_string().contains(RESET_SECRET), "{err}");
    }
}
