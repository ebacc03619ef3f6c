//! The edge's state directory: identity (account tag, CA, server certificates), the admin
//! token and the database, created on first start and loaded on every later one.
//!
//! Layout (directory 0700, every file 0600, every write atomic):
//!
//! | file | content |
//! |---|---|
//! | `edge.json` | format version, account tag, creation time — written last on first start |
//! | `ca.pem`, `ca.key` | the CA certificate (pinned by connectors and clients) and its key |
//! | `server.pem`, `server.key` | server certificate chain (leaf, CA) and key |
//! | `cloudflared.pem`, `cloudflared.key` | certificate for `quic.cftunnel.com`, once issued |
//! | `admin-token` | bearer token of the admin API |
//! | `reset-secret` | secret the QUIC stateless-reset key is derived from (created on the first start that lacks it) |
//! | `state.redb` | the database |
//!
//! `edge.json` is the commit point of a first start. Without it, any other state file means
//! an interrupted first start or a lost `edge.json`; the edge then refuses to start rather
//! than create a new CA, which would silently invalidate every pin handed out.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::fsutil;
use crate::hex;
use crate::pki::{self, Ca, IssueError, LeafInfo, ServerNames, Which};
use crate::store::{Db, OpenDbError, RedbStore, StoreError, VirtualNetwork};
use crate::timestamp::Timestamp;

const MARKER: &str = "edge.json";
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";
const CLOUDFLARED_CERT: &str = "cloudflared.pem";
const CLOUDFLARED_KEY: &str = "cloudflared.key";
const ADMIN_TOKEN: &str = "admin-token";
const RESET_SECRET: &str = "reset-secret";
const DATABASE: &str = "state.redb";

/// Files a first start creates, in creation order (the marker comes last).
const REQUIRED: [&str; 6] = [
    CA_KEY,
    CA_CERT,
    SERVER_KEY,
    SERVER_CERT,
    ADMIN_TOKEN,
    DATABASE,
];

/// Format of the state directory; a directory from a newer format is refused.
const FORMAT: u32 = 1;

/// The TLS server name cloudflared connectors ask for.
pub const CLOUDFLARED_SERVER_NAME: &str = "quic.cftunnel.com";

/// The name of the virtual network created on first start.
pub const DEFAULT_VNET_NAME: &str = "default";

/// Options for [`EdgeState::open_or_init`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StateOptions {
    /// Names for the server certificate. `None` uses [`ServerNames::defaults`] on first
    /// start and keeps the current certificate later; `Some` reissues the certificate
    /// (under the same CA) whenever its names differ.
    pub server_names: Option<ServerNames>,
}

impl StateOptions {
    /// Sets the names the server certificate must carry.
    pub fn with_server_names(mut self, names: ServerNames) -> Self {
        self.server_names = Some(names);
        self
    }
}

/// An error opening, creating or updating the state directory. Each names the file at
/// fault and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The directory could not be created.
    #[error("cannot create state directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file or the directory is open to other users.
    #[error("{} has mode {mode:o}, open to other users; run `chmod {expected:o} {}`", path.display(), path.display())]
    Permissions {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode it should have.
        expected: u32,
    },
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file's content is wrong.
    #[error("{} is corrupted: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Some state files exist and some do not.
    #[error("state directory {} is incomplete: {reason}", dir.display())]
    Incomplete {
        /// The directory.
        dir: PathBuf,
        /// Which files are missing and present, and what to do.
        reason: String,
    },
    /// A key or certificate could not be created.
    #[error("cannot create {what}: {detail}")]
    Issue {
        /// Which certificate.
        what: &'static str,
        /// The cause.
        detail: String,
    },
    /// The database file could not be opened.
    #[error(transparent)]
    Database(#[from] OpenDbError),
    /// The database could not be set up.
    #[error("cannot set up the state database")]
    Store(#[from] StoreError),
}

/// The content of `edge.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Marker {
    format: u32,
    account_tag: String,
    created_at: Timestamp,
}

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
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

/// A certificate chain and key to serve with rustls or quinn.
pub struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    names: ServerNames,
    not_after: Timestamp,
}

impl ServerIdentity {
    fn from_leaf(leaf: LeafInfo) -> Self {
        Self {
            chain: leaf.chain,
            key: leaf.key,
            names: leaf.names,
            not_after: leaf.not_after,
        }
    }

    /// The chain: the server certificate first, then the CA.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// A copy of the private key.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The names the certificate is valid for.
    pub fn names(&self) -> &ServerNames {
        &self.names
    }

    /// When the certificate expires.
    pub fn not_after(&self) -> Timestamp {
        self.not_after
    }
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The edge's persistent state: identity, admin token and database.
pub struct EdgeState {
    dir: PathBuf,
    account_tag: String,
    created_at: Timestamp,
    ca: Ca,
    ca_fingerprint: String,
    server: RwLock<Arc<ServerIdentity>>,
    /// Serializes reissuing the server certificate, so two rotations never interleave
    /// their key and certificate writes.
    server_issue: Mutex<()>,
    cloudflared: Mutex<Option<Arc<ServerIdentity>>>,
    admin_token: AdminToken,
    reset_secret: ResetSecret,
    db: Db,
}

/// The secret behind the QUIC stateless-reset key: 32 random bytes kept in the state
/// directory, so that an edge restarted after a crash can end the connections the crashed
/// process left behind at the peers' first packet instead of after their idle timeout.
struct ResetSecret([u8; 32]);

impl Drop for ResetSecret {
    fn drop(&mut self) {
        self.0.fill(0);
    }
}

/// Reads the reset secret, or creates it (0600) when the directory predates it.
fn load_or_create_reset_secret(dir: &Path) -> Result<ResetSecret, StateError> {
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
        return Ok(ResetSecret(bytes));
    }
    let text = read_private(&path)?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    match hex::decode_array::<32>(text) {
        Some(bytes) => Ok(ResetSecret(bytes)),
        None => Err(StateError::Corrupt {
            path,
            reason: "expected 64 lowercase hex digits".to_owned(),
        }),
    }
}

impl std::fmt::Debug for EdgeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeState")
            .field("dir", &self.dir)
            .field("account_tag", &self.account_tag)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

fn random_hex<const N: usize>() -> Result<String, StateError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StateError::Issue {
            what: "random identifiers",
            detail: "the system random generator failed".to_owned(),
        })?;
    Ok(hex::encode(&bytes))
}

fn issue_error(what: &'static str, e: IssueError) -> StateError {
    StateError::Issue {
        what,
        detail: e.to_string(),
    }
}

fn write(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    fsutil::write_atomic(path, contents).map_err(|source| StateError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a state file after checking that only its owner can read it.
fn read_private(path: &Path) -> Result<String, StateError> {
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

fn check_mode(path: &Path, expected: u32) -> Result<(), StateError> {
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

impl EdgeState {
    /// Opens the state directory `dir`, creating it and everything in it on first start.
    ///
    /// Refuses (with the file and the reason) a directory or file open to other users, a
    /// damaged file, a key that does not match its certificate, and a directory where some
    /// state files exist but not all.
    pub fn open_or_init(dir: impl AsRef<Path>, options: &StateOptions) -> Result<Self, StateError> {
        let dir = dir.as_ref().to_path_buf();
        let existed = dir.is_dir();
        fsutil::create_private_dir(&dir).map_err(|source| StateError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        if !existed {
            // Make the new directory's own entry durable, not only the files inside it.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsutil::sync_dir(parent).map_err(|source| StateError::CreateDir {
                    path: dir.clone(),
                    source,
                })?;
            }
        }
        if dir.join(MARKER).exists() {
            return Self::load(dir, options);
        }
        let present: Vec<&str> = REQUIRED
            .iter()
            .chain([CLOUDFLARED_CERT, CLOUDFLARED_KEY].iter())
            .copied()
            .filter(|f| dir.join(f).exists())
            .collect();
        if !present.is_empty() {
            return Err(StateError::Incomplete {
                dir,
                reason: format!(
                    "{MARKER} is missing but {} exist; either a first start was interrupted or \
                     {MARKER} was lost. Refusing to create a new CA, which would invalidate every \
                     pinned fingerprint: restore {MARKER}, or remove these files to start afresh",
                    present.join(", ")
                ),
            });
        }
        Self::init(dir, options)
    }

    fn init(dir: PathBuf, options: &StateOptions) -> Result<Self, StateError> {
        // The directory may have existed (an empty mount point); it holds keys.
        fsutil::set_mode(&dir, fsutil::DIR_MODE).map_err(|source| StateError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let account_tag = random_hex::<16>()?;
        let created_at = Timestamp::now();
        let ca = Ca::generate(&account_tag).map_err(|e| issue_error("the edge CA", e))?;
        write(&dir.join(CA_KEY), ca.key_pem().as_bytes())?;
        write(&dir.join(CA_CERT), ca.cert_pem.as_bytes())?;
        let names = options
            .server_names
            .clone()
            .unwrap_or_else(ServerNames::defaults);
        let issued = ca
            .issue_server(&names, "zt edge")
            .map_err(|e| issue_error("the server certificate", e))?;
        write(&dir.join(SERVER_KEY), issued.key_pem.as_bytes())?;
        write(&dir.join(SERVER_CERT), issued.chain_pem.as_bytes())?;
        let token = random_hex::<32>()?;
        write(&dir.join(ADMIN_TOKEN), format!("{token}\n").as_bytes())?;
        let reset_secret = load_or_create_reset_secret(&dir)?;
        let db = Db::new(Arc::new(RedbStore::open(&dir.join(DATABASE))?));
        db.update(|txn| {
            let mut vnet = VirtualNetwork::new(DEFAULT_VNET_NAME);
            vnet.is_default = true;
            vnet.comment = "created on first start".to_owned();
            txn.put(&vnet)
        })?;
        let marker = Marker {
            format: FORMAT,
            account_tag: account_tag.clone(),
            created_at,
        };
        let marker_json = serde_json::to_vec_pretty(&marker).map_err(|e| StateError::Corrupt {
            path: dir.join(MARKER),
            reason: e.to_string(),
        })?;
        write(&dir.join(MARKER), &marker_json)?;
        let ca_fingerprint = pki::fingerprint_hex(&ca);
        tracing::info!(dir = %dir.display(), account_tag = %account_tag, ca_fingerprint = %ca_fingerprint, "created edge state");
        Ok(Self {
            dir,
            account_tag,
            created_at,
            ca,
            ca_fingerprint,
            server: RwLock::new(Arc::new(ServerIdentity::from_leaf(issued.leaf))),
            server_issue: Mutex::new(()),
            cloudflared: Mutex::new(None),
            admin_token: AdminToken(token),
            reset_secret,
            db,
        })
    }

    fn load(dir: PathBuf, options: &StateOptions) -> Result<Self, StateError> {
        check_mode(&dir, fsutil::DIR_MODE)?;
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|f| !dir.join(f).exists())
            .collect();
        if !missing.is_empty() {
            return Err(StateError::Incomplete {
                dir,
                reason: format!(
                    "{} missing; restore from a backup (a new CA would invalidate every pinned \
                     fingerprint)",
                    missing.join(", ")
                ),
            });
        }
        let marker_path = dir.join(MARKER);
        let marker: Marker = serde_json::from_str(&read_private(&marker_path)?).map_err(|e| {
            StateError::Corrupt {
                path: marker_path.clone(),
                reason: e.to_string(),
            }
        })?;
        if marker.format != FORMAT {
            return Err(StateError::Corrupt {
                path: marker_path,
                reason: format!(
                    "format {} is not {FORMAT}, the one this edge knows",
                    marker.format
                ),
            });
        }
        if !hex::is_lower_hex(&marker.account_tag, 32) {
            return Err(StateError::Corrupt {
                path: marker_path,
                reason: "account_tag is not 32 lowercase hex digits".to_owned(),
            });
        }

        let ca_cert_path = dir.join(CA_CERT);
        let ca_key_path = dir.join(CA_KEY);
        let ca = Ca::load(&read_private(&ca_cert_path)?, &read_private(&ca_key_path)?).map_err(
            |(which, reason)| StateError::Corrupt {
                path: if which == Which::Cert {
                    ca_cert_path.clone()
                } else {
                    ca_key_path.clone()
                },
                reason,
            },
        )?;

        let server = load_leaf(&ca, &dir, SERVER_CERT, SERVER_KEY)?;
        let cloudflared = match (
            dir.join(CLOUDFLARED_CERT).exists(),
            dir.join(CLOUDFLARED_KEY).exists(),
        ) {
            (false, false) => None,
            (true, true) => Some(Arc::new(ServerIdentity::from_leaf(load_leaf(
                &ca,
                &dir,
                CLOUDFLARED_CERT,
                CLOUDFLARED_KEY,
            )?))),
            (has_cert, _) => {
                let (present, missing) = if has_cert {
                    (CLOUDFLARED_CERT, CLOUDFLARED_KEY)
                } else {
                    (CLOUDFLARED_KEY, CLOUDFLARED_CERT)
                };
                return Err(StateError::Incomplete {
                    dir,
                    reason: format!(
                        "{present} exists without {missing}; remove {present} to have it reissued"
                    ),
                });
            }
        };

        let token_path = dir.join(ADMIN_TOKEN);
        let token_text = read_private(&token_path)?;
        let token = token_text.strip_suffix('\n').unwrap_or(&token_text);
        if !hex::is_lower_hex(token, 64) {
            return Err(StateError::Corrupt {
                path: token_path,
                reason: "expected 64 lowercase hex digits".to_owned(),
            });
        }
        let token = AdminToken(token.to_owned());
        let reset_secret = load_or_create_reset_secret(&dir)?;

        let db_path = dir.join(DATABASE);
        check_mode(&db_path, fsutil::FILE_MODE)?;
        let db = Db::new(Arc::new(RedbStore::open(&db_path)?));

        let ca_fingerprint = pki::fingerprint_hex(&ca);
        let state = Self {
            dir,
            account_tag: marker.account_tag,
            created_at: marker.created_at,
            ca,
            ca_fingerprint,
            server: RwLock::new(Arc::new(ServerIdentity::from_leaf(server))),
            server_issue: Mutex::new(()),
            cloudflared: Mutex::new(cloudflared),
            admin_token: token,
            reset_secret,
            db,
        };

        // Reissue when asked for other names or close to expiry; the CA, and so every pin,
        // stays the same.
        let current = state.server_identity();
        let wanted = options.server_names.clone().map(ServerNames::normalized);
        match wanted {
            Some(wanted) if wanted != current.names => {
                tracing::info!(dir = %state.dir.display(), "server names changed; reissuing the server certificate");
                state.issue_server(&wanted)?;
            }
            _ => {
                state.renew_server_cert_if_due()?;
            }
        }
        Ok(state)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The account tag: 32 lowercase hex digits, created on first start.
    pub fn account_tag(&self) -> &str {
        &self.account_tag
    }

    /// When the state was first created.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// SHA-256 of the CA certificate's DER, as 64 lowercase hex digits: the pin that tokens
    /// and device credentials carry.
    pub fn ca_fingerprint(&self) -> &str {
        &self.ca_fingerprint
    }

    /// The CA certificate.
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.ca.cert_der
    }

    /// The CA certificate in PEM, as written to [`EdgeState::ca_pem_path`].
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The CA certificate file, to hand to connectors (`cacert`) and clients.
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// The admin API's bearer token.
    pub fn admin_token(&self) -> &AdminToken {
        &self.admin_token
    }

    /// The key the QUIC listener makes stateless resets with, derived from the secret in
    /// the state directory: the same across restarts, so peers of a crashed edge learn at
    /// their first packet to the new process that their connections are gone.
    pub fn stateless_reset_key(&self) -> zt_proto::StatelessResetKey {
        zt_proto::StatelessResetKey::derive(&self.reset_secret.0)
    }

    /// The file holding the admin token, which the admin CLI reads.
    pub fn admin_token_path(&self) -> PathBuf {
        self.dir.join(ADMIN_TOKEN)
    }

    /// The default audit log file, inside the state directory.
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The current server certificate chain and key.
    pub fn server_identity(&self) -> Arc<ServerIdentity> {
        self.server
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Issues a new server certificate under the same CA, for the same names, and keeps it.
    /// Connections opened afterwards get the new one; pins stay valid.
    pub fn rotate_server_cert(&self) -> Result<Arc<ServerIdentity>, StateError> {
        let names = self.server_identity().names.clone();
        self.issue_server(&names)
    }

    /// Reissues the server certificate when it expires within 30 days, and returns the new
    /// one; `None` when the current one is good. Opening the state does this; a long-running
    /// edge calls it from a daily timer.
    pub fn renew_server_cert_if_due(&self) -> Result<Option<Arc<ServerIdentity>>, StateError> {
        let current = self.server_identity();
        let renew_at = current.not_after().as_offset_date_time() - pki::RENEW_BEFORE;
        if time::OffsetDateTime::now_utc() < renew_at {
            return Ok(None);
        }
        tracing::info!(dir = %self.dir.display(), not_after = %current.not_after(), "server certificate near expiry; reissuing");
        self.issue_server(&current.names).map(Some)
    }

    fn issue_server(&self, names: &ServerNames) -> Result<Arc<ServerIdentity>, StateError> {
        let _serial = self
            .server_issue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let issued = self
            .ca
            .issue_server(names, "zt edge")
            .map_err(|e| issue_error("the server certificate", e))?;
        // Key first: a crash between the two writes leaves a mismatch that the next start
        // reports with the file name, never a certificate served with the wrong key.
        write(&self.dir.join(SERVER_KEY), issued.key_pem.as_bytes())?;
        write(&self.dir.join(SERVER_CERT), issued.chain_pem.as_bytes())?;
        let identity = Arc::new(ServerIdentity::from_leaf(issued.leaf));
        *self.server.write().unwrap_or_else(PoisonError::into_inner) = identity.clone();
        tracing::info!(not_after = %identity.not_after(), "issued server certificate");
        Ok(identity)
    }

    /// The certificate for [`CLOUDFLARED_SERVER_NAME`], signed by the edge's CA, issued and
    /// kept in the state directory on first use. cloudflared connectors trust it through
    /// `--cacert` pointing at [`EdgeState::ca_pem_path`].
    pub fn cloudflared_identity(&self) -> Result<Arc<ServerIdentity>, StateError> {
        let mut slot = self
            .cloudflared
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(identity) = slot.as_ref() {
            return Ok(identity.clone());
        }
        let names = ServerNames {
            dns: vec![CLOUDFLARED_SERVER_NAME.to_owned()],
            ips: Vec::new(),
        };
        let issued = self
            .ca
            .issue_server(&names, CLOUDFLARED_SERVER_NAME)
            .map_err(|e| issue_error("the cloudflared certificate", e))?;
        write(&self.dir.join(CLOUDFLARED_KEY), issued.key_pem.as_bytes())?;
        write(
            &self.dir.join(CLOUDFLARED_CERT),
            issued.chain_pem.as_bytes(),
        )?;
        let identity = Arc::new(ServerIdentity::from_leaf(issued.leaf));
        *slot = Some(identity.clone());
        Ok(identity)
    }
}

fn load_leaf(ca: &Ca, dir: &Path, cert: &str, key: &str) -> Result<LeafInfo, StateError> {
    let cert_path = dir.join(cert);
    let key_path = dir.join(key);
    ca.load_server(&read_private(&cert_path)?, &read_private(&key_path)?)
        .map_err(|(which, reason)| StateError::Corrupt {
            path: if which == Which::Cert {
                cert_path
            } else {
                key_path
            },
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_shareable_between_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<EdgeState>();
        assert_send_sync::<ServerIdentity>();
    }

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

    #[test]
    fn a_certificate_near_expiry_is_renewed_on_open_under_the_same_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("edge");
        let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        let fingerprint = state.ca_fingerprint().to_owned();
        assert!(state.renew_server_cert_if_due().unwrap().is_none());
        let names = state.server_identity().names.clone();
        // Replace the server certificate with one that ends in ten days.
        let short = state
            .ca
            .issue_server_valid_for(&names, "zt edge", time::Duration::days(10))
            .unwrap();
        write(&dir.join(SERVER_KEY), short.key_pem.as_bytes()).unwrap();
        write(&dir.join(SERVER_CERT), short.chain_pem.as_bytes()).unwrap();
        let short_leaf = short.leaf.chain[0].clone();
        drop(state);

        let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        let renewed = state.server_identity();
        assert_ne!(renewed.cert_chain()[0], short_leaf);
        assert_eq!(renewed.names, names);
        let days_left =
            (renewed.not_after().unix_seconds() - Timestamp::now().unix_seconds()) / 86_400;
        assert!(days_left > 300, "{days_left} days left");
        assert_eq!(state.ca_fingerprint(), fingerprint);
        // The renewed certificate was written, not only held in memory.
        let on_disk = fs::read_to_string(dir.join(SERVER_CERT)).unwrap();
        assert!(on_disk.starts_with("-----BEGIN CERTIFICATE-----"));
        drop(state);
        let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        assert_eq!(
            state.server_identity().cert_chain()[0],
            renewed.cert_chain()[0]
        );
    }
}
