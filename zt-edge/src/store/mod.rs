//! Edge state storage: the backend trait, the typed records and the default redb backend.

mod backend;
mod db;
mod records;
mod redb_store;

pub use backend::{BackendError, KeyValue, Revision, Store, StoreRead, StoreWrite, Table};
pub use db::{Db, ReadTxn, StoreError, WriteTxn, MAX_ATTEMPTS};
pub use records::{
    Device, DeviceInfo, List, ListKind, Record, RecordKind, Route, Rule, SecretSha256, Tunnel,
    TunnelInfo, User, VirtualNetwork, MAX_NAME_LEN,
};
pub use redb_store::{OpenDbError, RedbStore};
