//! The zt edge runtime.

mod audit;
mod fsutil;
mod hex;
mod pki;
mod state;
mod store;
mod timestamp;

pub use audit::{
    AuditError, AuditEvent, AuditLog, AuthRefusal, CloseReason, ConnectorKind, FlowAction,
    FlowProtocol, FlowRecord, PeerRole, PolicyPhase, AUDIT_BUFFER_BYTES, AUDIT_FLUSH_INTERVAL,
    MAX_CLAIMED_ID_LEN,
};
pub use pki::ServerNames;
pub use state::{
    AdminToken, EdgeState, ServerIdentity, StateError, StateOptions, CLOUDFLARED_SERVER_NAME,
    DEFAULT_VNET_NAME,
};
pub use store::{
    BackendError, Db, Device, KeyValue, List, ListKind, OpenDbError, ReadTxn, Record, RecordKind,
    RedbStore, Revision, Route, Rule, SecretSha256, Store, StoreError, StoreRead, StoreWrite,
    Table, Tunnel, User, VirtualNetwork, WriteTxn, MAX_NAME_LEN,
};
pub use timestamp::Timestamp;
