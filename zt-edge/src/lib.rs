//! The zt edge: its runtime, persistent state, admin API and audit log.
//!
//! The edge accepts connectors and clients on one QUIC port, keeps the registry of live
//! connector connections per tunnel, the route table, the gateway policy, identities and an
//! audit log, and splices each client flow onto a connector of the right tunnel. This crate
//! holds:
//!
//! - **State directory** ([`EdgeState`]): created on first start with the edge's own CA, a
//!   server certificate signed by it, the account tag, the admin API token and the database;
//!   loaded on every later start so that the CA fingerprint that connectors and clients pin
//!   stays valid. Files are 0600 in a 0700 directory and replaced atomically; a damaged or
//!   incomplete directory is refused with the file at fault, never silently re-created.
//! - **Storage** ([`Store`], [`Db`]): the only way state is read or written. [`Store`] is a
//!   small transactional key-value trait with a revision counter and change notification, so
//!   a distributed backend can replace the embedded [`RedbStore`] (one ACID file that
//!   survives `kill -9`). [`Db`] puts typed records on top ([`Tunnel`], [`VirtualNetwork`],
//!   [`Route`], [`List`], [`Rule`], [`User`], [`Device`]) and keeps uniqueness and references
//!   consistent inside each transaction, for every backend alike; every record carries a
//!   version that only its own writes move ([`Record::version`]).
//! - **Configuration as code** ([`config`]): the YAML file naming every resource, its
//!   located errors and limits, offline policy tests, and plan, apply (one transaction
//!   against the planned versions), drift and export over a [`Db`].
//! - **Audit log** ([`AuditLog`]): one JSON line per flow ([`FlowRecord`]) and per refused
//!   authentication ([`AuthRefusal`]; repeats from one source beyond its failure budget
//!   share a line with a `count`), rotated by size within [`AuditLimits`].
//!
//! - **Runtime** ([`Edge::start`] → [`EdgeHandle`]): the QUIC listener for connectors and
//!   clients, registration against the stored keys (failures audited and rate-limited per
//!   source address), the registry of live connector connections (health, draining,
//!   in-flight counts; [`LiveView`] for the admin API), client sessions (posture, virtual
//!   network, route pushes, maximum lifetime), and per flow a pipeline of named stages:
//!   *decide* (one policy input, l4 policy, route lookup), *open* (a healthy connector
//!   connection; an unanswered open is retried once on another), *inspect* (the http phase
//!   on the first bytes), *splice* (half-close and resets kept) and *record* (one audit
//!   line). Routes and policy are recompiled on every store revision and swapped together
//!   as one snapshot; a flow decides on the snapshot it started with, and is refused with
//!   close reason `revoked` if its device is gone from the current one before it carries
//!   bytes. A session whose device, user or service token is revoked ends at that reload,
//!   with every flow it carries (close reason `revoked`); one that reaches its end (the
//!   sign-in's or token's expiry, the maximum lifetime) is told to go away and its open
//!   flows are closed after the drain period (`session_expired`). A policy that does not
//!   compile keeps the last good one. `/metrics` and `/ready` when asked.
//! - **The TLS-over-TCP listener** serves the same registration and flows as QUIC for
//!   networks that drop UDP, and the enrollment exchange of `zt login` on both.
//!
//! The store keeps policy expressions and list items as text; zt-policy parses them, and
//! zt-routes checks route prefixes. No secret is stored: tunnels, devices and service
//! tokens keep the key derived from their secret, and devices enrolled by `zt login` only
//! their public key.
//!
//! # Example
//!
//! ```
//! use zt_creds::TunnelSecret;
//! use zt_edge::{EdgeState, Route, StateOptions, Tunnel};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let state = EdgeState::open_or_init(dir.path().join("edge"), &StateOptions::default())?;
//! println!("account {} pins CA {}", state.account_tag(), state.ca_fingerprint());
//!
//! // Create a tunnel and a route in one transaction; the caller keeps the secret (in the
//! // connector's credentials file), the edge only its derived key.
//! let secret = TunnelSecret::generate();
//! let tunnel = Tunnel::new("prod-cluster", state.account_tag(), &secret);
//! let (_, revision) = state.db().update(|txn| {
//!     let vnet = txn.default_vnet()?.expect("created on first start");
//!     txn.put(&tunnel)?;
//!     txn.put(&Route::new("198.51.100.0/24".parse()?, vnet.id, tunnel.id))?;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//!
//! let read = state.db().read()?;
//! let tunnels = read.list::<Tunnel>()?;
//! assert_eq!(tunnels.len(), 1);
//! assert_eq!(tunnels[0].name, "prod-cluster");
//! assert_eq!(read.revision(), revision);
//! # Ok(())
//! # }
//! ```

mod admin;
mod audit;
pub mod config;
mod fsutil;
mod hex;
mod live;
mod pki;
mod policy_records;
mod runtime;
mod state;
mod store;
mod timestamp;

// State directory and identity.
pub use pki::ServerNames;
pub use state::{
    AdminToken, EdgeState, JoinBundle, PeerIdentity, ServerIdentity, StateError, StateOptions,
    CLOUDFLARED_H2_SERVER_NAME, CLOUDFLARED_SERVER_NAME, DEFAULT_VNET_NAME,
};

// Typed records and their database.
pub use store::{
    Db, Device, DeviceInfo, DeviceLogin, EdgeMember, IdentityProvider, IdentityProviderInfo,
    IdpSubject, List, ListKind, ReadTxn, Record, RecordKind, Route, Rule, SecretSha256,
    ServiceToken, ServiceTokenInfo, StoreError, Tunnel, TunnelInfo, User, VirtualNetwork, WriteTxn,
    DEFAULT_GROUPS_CLAIM, DEFAULT_SESSION_LENGTH, MAX_ATTEMPTS, MAX_NAME_LEN,
};

// Storage backends.
pub use store::{
    BackendError, EphemeralStore, KeyValue, OpenDbError, RedbStore, Revision, Store, StoreRead,
    StoreWrite, Table,
};
// The PostgreSQL backend, secrets at rest and moving state between backends.
pub use store::{
    copy_store, CopyError, CopyReport, EphemeralChange, EphemeralTable, NoticeError,
    OpenPostgresError, PostgresOptions, PostgresStore, SchemaError, SchemaStatus, SealError,
    SealedSecret, SecretsKey, SecretsKeyError, TargetError, CONFIG_CHANNEL, EPHEMERAL_CHANNEL,
    FEED_APPLICATION_NAME, MAX_EPHEMERAL_KEY, OP_TIMEOUT, SCHEMA_VERSION, SECRETS_KEY_LEN,
};

// Audit log.
pub use audit::{
    AuditError, AuditEvent, AuditLimits, AuditLog, AuthRefusal, CloseReason, ConnectorKind,
    FlowAction, FlowProtocol, FlowRecord, HalfClose, LoginRecord, PeerRole, PolicyPhase,
    RefusalLogged, AUDIT_BUFFER_BYTES, AUDIT_FLUSH_INTERVAL, MAX_CLAIMED_ID_LEN,
};

// The admin API.
pub use admin::{
    AdminError, AdminOptions, AdminServer, ADMIN_ADDR_FILE, APPLY_WAIT, MAX_ADMIN_BODY,
};

// Live state of a running edge, for the admin API.
pub use live::{ConnectionSummary, EdgeSummary, LiveView, NoLiveView};

pub use timestamp::Timestamp;

// cloudflared's wire formats, as one namespace: its names (ConnectRequest, DecodeError, ...)
// would be ambiguous at the crate root.
pub mod cloudflared;

/// Entry points for the fuzz targets alone (`cargo fuzz` builds with `--cfg fuzzing`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    /// What a flow's first bytes reveal to the http phase: `None` while more bytes are
    /// needed, else the protocol (`"tls"`, `"http"` or `"other"`) and the host, if any.
    pub fn sniff(buf: &[u8]) -> Option<(&'static str, Option<String>)> {
        use crate::runtime::sniff::Sniffed;
        match crate::runtime::sniff::sniff(buf) {
            Sniffed::NeedMore => None,
            Sniffed::Tls(host) => Some(("tls", host)),
            Sniffed::Http(host) => Some(("http", host)),
            Sniffed::Other => Some(("other", None)),
        }
    }

    /// The PostgreSQL backend's reading of a notification on `channel`: the payload it
    /// would send for what it understood (a revision in decimal, or `TABLE:KEY_HEX`), or
    /// the error's message.
    pub fn notification(channel: &str, payload: &str) -> Result<String, String> {
        use crate::store::{parse_notification, Notice};
        match parse_notification(channel, payload) {
            Ok(Notice::Config(revision)) => Ok(revision.to_string()),
            Ok(Notice::Ephemeral(change)) => Ok(change.payload()),
            Err(e) => Err(e.to_string()),
        }
    }
}

// The running edge.
pub use runtime::{
    default_state_dir, AuthRateLimit, Edge, EdgeConfig, EdgeHandle, FirstBytes, ReloadError,
    StartError, DEFAULT_ADMIN, DEFAULT_LISTEN,
};
