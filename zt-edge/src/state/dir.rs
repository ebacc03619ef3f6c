//! The layout of the state directory and the rules every file in it follows.
//!
//! The directory is 0700 and every file 0600; a file or directory open to other users is
//! refused before it is read, with the `chmod` that fixes it. Every write replaces the
//! file atomically (write, fsync, rename, fsync the directory), so a crash leaves the old
//! content or the new, never half of one.
//!
//! `edge.json` (the marker) is the commit point of a first start: it is written last, and
//! its absence next to other state files means an interrupted first start or a lost
//! marker, which the edge refuses rather than create a new CA.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::fsutil;
use crate::hex;
use crate::timestamp::Timestamp;

pub(super) const MARKER: &str = "edge.json";
pub(super) const CA_CERT: &str = "ca.pem";
pub(super) const CA_KEY: &str = "ca.key";
pub(super) const SERVER_CERT: &str = "server.pem";
pub(super) const SERVER_KEY: &str = "server.key";
pub(super) const CLOUDFLARED_CERT: &str = "cloudflared.pem";
pub(super) const CLOUDFLARED_KEY: &str = "cloudflared.key";
pub(super) const PEER_CERT: &str = "peer.pem";
pub(super) const PEER_KEY: &str = "peer.key";
pub(super) const ADMIN_TOKEN: &str = "admin-token";
pub(super) const RESET_SECRET: &str = "reset-secret";
pub(super) const DATABASE: &str = "state.redb";
pub(super) const AUDIT_LOG: &str = "audit.jsonl";

/// Files a first start creates, in creation order (the marker comes last).
pub(super) const REQUIRED: [&str; 6] = [
    CA_KEY,
    CA_CERT,
    SERVER_KEY,
    SERVER_CERT,
    ADMIN_TOKEN,
    DATABASE,
];

/// Format of the state directory; a directory from a newer format is refused.
const FORMAT: u32 = 1;

/// The content of `edge.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Marker {
    format: u32,
    pub(super) account_tag: String,
    pub(super) created_at: Timestamp,
    /// Made by `zt edge join` on the edge holding the CA key: this directory has the CA
    /// certificate alone, and the records live in the shared store.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) joined: bool,
}

impl Marker {
    /// The marker of a directory created now, in this format.
    pub(super) fn new(account_tag: String, created_at: Timestamp) -> Self {
        Self {
            format: FORMAT,
            account_tag,
            created_at,
            joined: false,
        }
    }

    /// The marker of a directory made by `zt edge join`.
    pub(super) fn joined(account_tag: String, created_at: Timestamp) -> Self {
        Self {
            joined: true,
            ..Self::new(account_tag, created_at)
        }
    }

    /// The marker's JSON, as written.
    pub(super) fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }

    /// Writes the marker: the last step of a first start.
    pub(super) fn write(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(MARKER);
        let json = serde_json::to_vec_pretty(self).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write(&path, &json)
    }

    /// Reads and checks the marker: the format this edge knows and a well-formed account
    /// tag.
    pub(super) fn read(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(MARKER);
        let marker: Marker =
            serde_json::from_str(&read_private(&path)?).map_err(|e| StateError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if marker.format != FORMAT {
            return Err(StateError::Corrupt {
                path,
                reason: format!(
                    "format {} is not {FORMAT}, the one this edge knows",
                    marker.format
                ),
            });
        }
        if !hex::is_lower_hex(&marker.account_tag, 32) {
            return Err(StateError::Corrupt {
                path,
                reason: "account_tag is not 32 lowercase hex digits".to_owned(),
            });
        }
        Ok(marker)
    }
}

/// Creates the directory (0700) when it does not exist, making its own entry durable.
pub(super) fn create(dir: &Path) -> Result<(), StateError> {
    let existed = dir.is_dir();
    fsutil::create_private_dir(dir).map_err(|source| StateError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    if !existed {
        // Make the new directory's own entry durable, not only the files inside it.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsutil::sync_dir(parent).map_err(|source| StateError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Refuses a directory without a marker that holds state files anyway: creating a new
/// CA there would invalidate every pin handed out.
pub(super) fn check_fresh(dir: &Path) -> Result<(), StateError> {
    let present: Vec<&str> = REQUIRED
        .iter()
        .chain([CLOUDFLARED_CERT, CLOUDFLARED_KEY, PEER_CERT, PEER_KEY].iter())
        .copied()
        .filter(|f| dir.join(f).exists())
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    Err(StateError::Incomplete {
        dir: dir.to_path_buf(),
        reason: format!(
            "{MARKER} is missing but {} exist; either a first start was interrupted or \
             {MARKER} was lost. Refusing to create a new CA, which would invalidate every \
             pinned fingerprint: restore {MARKER}, or remove these files to start afresh",
            present.join(", ")
        ),
    })
}

/// Refuses a directory with a marker but without every file a first start creates.
/// `needs_database` is false when the records live in another backend (PostgreSQL);
/// a joined edge (`joined`) has no CA key and needs its peering certificate.
pub(super) fn check_complete(
    dir: &Path,
    needs_database: bool,
    joined: bool,
) -> Result<(), StateError> {
    if joined && needs_database {
        return Err(StateError::Incomplete {
            dir: dir.to_path_buf(),
            reason: "this edge joined an organisation with `zt edge join`: its records live \
                     in the shared store; start it with --store URL (or $ZT_STORE)"
                .to_owned(),
        });
    }
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|f| !joined || *f != CA_KEY)
        .chain(
            joined
                .then_some([PEER_CERT, PEER_KEY])
                .into_iter()
                .flatten(),
        )
        .filter(|f| needs_database || *f != DATABASE)
        .filter(|f| !dir.join(f).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if missing == [DATABASE] {
        return Err(StateError::Incomplete {
            dir: dir.to_path_buf(),
            reason: format!(
                "{DATABASE} missing: if this edge keeps its records in PostgreSQL, start it \
                 with --store URL (or $ZT_STORE); otherwise restore {DATABASE} from a backup"
            ),
        });
    }
    Err(StateError::Incomplete {
        dir: dir.to_path_buf(),
        reason: format!(
            "{} missing; restore from a backup (a new CA would invalidate every pinned \
             fingerprint)",
            missing.join(", ")
        ),
    })
}

/// Sets the directory's mode to 0700: it may have existed (an empty mount point), and it
/// is about to hold keys.
pub(super) fn make_private(dir: &Path) -> Result<(), StateError> {
    fsutil::set_mode(dir, fsutil::DIR_MODE).map_err(|source| StateError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Replaces `path` with `contents` atomically, 0600.
pub(super) fn write(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    fsutil::write_atomic(path, contents).map_err(|source| StateError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a state file after checking that only its owner can read it.
pub(super) fn read_private(path: &Path) -> Result<String, StateError> {
    check_mode(path, fsutil::FILE_MODE)?;
    let bytes = fs::read(path).map_err(|source| StateError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| StateError::Corrupt {
        path: path.to_path_buf(),
        reason: "not UTF-8 text".to_owned(),
    })
}

/// Refuses `path` when others may read or write it.
pub(super) fn check_mode(path: &Path, expected: u32) -> Result<(), StateError> {
    match fsutil::loose_mode(path) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(StateError::Permissions {
            path: path.to_path_buf(),
            mode,
            expected,
        }),
        Err(source) => Err(StateError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The database file, after checking its mode (it is opened by the store, not read here).
pub(super) fn database(dir: &Path) -> Result<PathBuf, StateError> {
    let path = dir.join(DATABASE);
    check_mode(&path, fsutil::FILE_MODE)?;
    Ok(path)
}
