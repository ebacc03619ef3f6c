//! Edge state storage: the backend trait, the typed records, the default redb backend and
//! the PostgreSQL backend for edges that share their state.

mod backend;
mod copy;
mod db;
mod edge_member;
mod idp;
mod postgres;
mod records;
mod redb_store;
mod seal;
mod token;

pub use backend::{
    BackendError, EphemeralStore, KeyValue, Revision, Store, StoreRead, StoreWrite, Table,
};
pub use copy::{copy_store, CopyError, CopyReport};
pub use db::{Db, ReadTxn, StoreError, WriteTxn, MAX_ATTEMPTS};
pub use edge_member::EdgeMember;
/// Runs a record's own field checks (what a write would refuse), for callers that validate
/// before a transaction, such as the configuration file's checks.
pub(crate) fn check_record<R: Record>(record: &R) -> Result<(), &'static str> {
    records::Sealed::check(record)
}
pub use idp::{
    IdentityProvider, IdentityProviderInfo, DEFAULT_GROUPS_CLAIM, DEFAULT_SESSION_LENGTH,
};
#[cfg(fuzzing)]
pub(crate) use postgres::{parse_notification, Notice};
pub use postgres::{
    EphemeralChange, EphemeralTable, NoticeError, OpenPostgresError, PostgresOptions,
    PostgresStore, SchemaError, SchemaStatus, TargetError, CONFIG_CHANNEL, EPHEMERAL_CHANNEL,
    FEED_APPLICATION_NAME, MAX_EPHEMERAL_KEY, OP_TIMEOUT, SCHEMA_VERSION,
};
pub use records::{
    Device, DeviceInfo, DeviceLogin, IdpSubject, List, ListKind, Record, RecordKind, Route, Rule,
    SecretSha256, Tunnel, TunnelInfo, User, VirtualNetwork, MAX_NAME_LEN,
};
pub use redb_store::{OpenDbError, RedbStore};
pub use seal::{SealError, SealedSecret, SecretsKey, SecretsKeyError, SECRETS_KEY_LEN};
pub use token::{ServiceToken, ServiceTokenInfo};
