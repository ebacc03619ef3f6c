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
//! | `cloudflared.pem`, `cloudflared.key` | certificate for `quic.cftunnel.com` and `h2.cftunnel.com`, once issued |
//! | `admin-token` | bearer token of the admin API |
//! | `reset-secret` | secret the QUIC stateless-reset key is derived from (created on the first start that lacks it) |
//! | `state.redb` | the database (absent when the records live in PostgreSQL) |
//! | `secrets.key` | with a PostgreSQL store: the key sealing secrets at rest (default path) |
//!
//! `edge.json` is the commit point of a first start. Without it, any other state file means
//! an interrupted first start or a lost `edge.json`; the edge then refuses to start rather
//! than create a new CA, which would silently invalidate every pinned fingerprint.
//!
//! The parts: `dir` (file names, the marker, file modes and atomic writes), `certs` (the
//! CA and the certificates issued under it, and their rotation), `secrets` (the admin token
//! and the reset secret), `error` ([`StateError`]). This module puts them together in
//! [`EdgeState`], in the order a first start creates the files.

mod certs;
mod dir;
mod error;
mod peer;
mod secrets;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls_pki_types::CertificateDer;

pub use certs::ServerIdentity;
pub use error::StateError;
pub use peer::{JoinBundle, PeerIdentity};
pub use secrets::AdminToken;

use crate::pki::{self, Ca, ServerNames};
use crate::store::{Db, RedbStore, Store, VirtualNetwork};
use crate::timestamp::Timestamp;
use dir::Marker;
use secrets::ResetSecret;

/// The TLS server name cloudflared connectors ask for over QUIC.
pub const CLOUDFLARED_SERVER_NAME: &str = "quic.cftunnel.com";

/// The TLS server name cloudflared connectors ask for in HTTP/2 mode (`--protocol http2`).
pub const CLOUDFLARED_H2_SERVER_NAME: &str = zt_proto::CLOUDFLARED_H2_SERVER_NAME;

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
    /// The state backend; `None` opens (or creates) `state.redb` in the directory.
    pub store: Option<Arc<dyn Store>>,
}

impl StateOptions {
    /// Sets the names the server certificate must carry.
    pub fn with_server_names(mut self, names: ServerNames) -> Self {
        self.server_names = Some(names);
        self
    }

    /// Keeps the records in `store` (PostgreSQL, say) instead of `state.redb`.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
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
    /// The peering identity: edge id and certificate.
    peer: PeerIdentity,
    /// Whether the peering certificate was issued by this open (a first start, or the first
    /// start of a version that has them), so the edge records its own member row.
    peer_new: bool,
    admin_token: AdminToken,
    reset_secret: ResetSecret,
    db: Db,
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

impl EdgeState {
    /// Opens the state directory `dir`, creating it and everything in it on first start.
    ///
    /// Refuses (with the file and the reason) a directory or file open to other users, a
    /// damaged file, a key that does not match its certificate, and a directory where some
    /// state files exist but not all.
    pub fn open_or_init(dir: impl AsRef<Path>, options: &StateOptions) -> Result<Self, StateError> {
        let dir = dir.as_ref().to_path_buf();
        dir::create(&dir)?;
        if dir.join(dir::MARKER).exists() {
            return Self::load(dir, options);
        }
        dir::check_fresh(&dir)?;
        Self::init(dir, options)
    }

    /// First start: every file in creation order, the marker last.
    fn init(dir: PathBuf, options: &StateOptions) -> Result<Self, StateError> {
        dir::make_private(&dir)?;
        let account_tag = secrets::random_hex::<16>()?;
        let created_at = Timestamp::now();
        let (ca, server) = certs::create(&dir, &account_tag, options)?;
        let (peer, peer_new) = peer::load_or_issue(&ca, &dir)?;
        let admin_token = AdminToken::create(&dir)?;
        let reset_secret = ResetSecret::load_or_create(&dir)?;
        let db = match &options.store {
            Some(store) => Db::new(store.clone()),
            None => Db::new(Arc::new(RedbStore::open(&dir.join(dir::DATABASE))?)),
        };
        // A shared store may already have one, made by another edge's first start.
        db.update(|txn| {
            if txn.default_vnet()?.is_some() {
                return Ok(());
            }
            let mut vnet = VirtualNetwork::new(DEFAULT_VNET_NAME);
            vnet.is_default = true;
            vnet.comment = "created on first start".to_owned();
            txn.put(&vnet)
        })?;
        Marker::new(account_tag.clone(), created_at).write(&dir)?;
        let ca_fingerprint = pki::fingerprint_hex(&ca);
        tracing::info!(dir = %dir.display(), account_tag = %account_tag, ca_fingerprint = %ca_fingerprint, "created edge state");
        Ok(Self {
            dir,
            account_tag,
            created_at,
            ca,
            ca_fingerprint,
            server: RwLock::new(Arc::new(server)),
            server_issue: Mutex::new(()),
            cloudflared: Mutex::new(None),
            peer,
            peer_new,
            admin_token,
            reset_secret,
            db,
        })
    }

    /// Later starts: every file checked (mode, shape, keys against certificates), then the
    /// server certificate refreshed if due.
    fn load(dir: PathBuf, options: &StateOptions) -> Result<Self, StateError> {
        dir::check_mode(&dir, crate::fsutil::DIR_MODE)?;
        let marker = Marker::read(&dir)?;
        dir::check_complete(&dir, options.store.is_none(), marker.joined)?;
        let ca = certs::load_ca(&dir, !marker.joined)?;
        let (peer, peer_new) = peer::load_or_issue(&ca, &dir)?;
        let server = certs::load_server(&ca, &dir)?;
        let cloudflared = certs::load_cloudflared(&ca, &dir)?;
        let admin_token = AdminToken::load(&dir)?;
        let reset_secret = ResetSecret::load_or_create(&dir)?;
        let db = match &options.store {
            Some(store) => {
                if dir.join(dir::DATABASE).exists() {
                    tracing::warn!(
                        dir = %dir.display(),
                        "this state directory's state.redb is not used: the records come from \
                         the configured store (copy them with `zt edge migrate` if they belong there)"
                    );
                }
                Db::new(store.clone())
            }
            None => Db::new(Arc::new(RedbStore::open(&dir::database(&dir)?)?)),
        };

        let ca_fingerprint = pki::fingerprint_hex(&ca);
        let state = Self {
            dir,
            account_tag: marker.account_tag,
            created_at: marker.created_at,
            ca,
            ca_fingerprint,
            server: RwLock::new(Arc::new(server)),
            server_issue: Mutex::new(()),
            cloudflared: Mutex::new(cloudflared),
            peer,
            peer_new,
            admin_token,
            reset_secret,
            db,
        };
        state.refresh_server_cert(options)?;
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
        self.dir.join(dir::CA_CERT)
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
        self.dir.join(dir::ADMIN_TOKEN)
    }

    /// The default audit log file, inside the state directory.
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.join(dir::AUDIT_LOG)
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }
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
}
