//! The storage trait: the only way edge state is read or written.
//!
//! A backend is an ordered key-value store with a fixed set of tables, serializable
//! transactions and a revision number that grows by one with each commit that changed
//! something. Everything above it (typed records, uniqueness, references) is written once in
//! [`Db`](super::Db) against this trait, so a distributed backend (etcd, PostgreSQL) only has
//! to provide these few operations — plus a change feed that moves the revision when another
//! edge commits.

use std::error::Error as StdError;
use std::fmt;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::postgres::{EphemeralChange, EphemeralTable};

/// The tables a backend keeps. Keys and values are opaque bytes to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Table {
    /// Tunnel records, keyed by id.
    Tunnels,
    /// Virtual network records, keyed by id.
    VirtualNetworks,
    /// Route records, keyed by id.
    Routes,
    /// Gateway list records, keyed by id.
    Lists,
    /// Gateway rule records, keyed by id.
    Rules,
    /// User records, keyed by id.
    Users,
    /// Device records, keyed by id.
    Devices,
    /// Unique-value index: `kind \0 field \0 value` → record id.
    UniqueIndex,
    /// Configuration-as-code bookkeeping: a JSON document per key (the last applied file's
    /// hash and the versions of the resources it wrote, for drift detection).
    Config,
    /// Identity-provider records, keyed by id.
    IdentityProviders,
    /// Service-token records, keyed by id.
    ServiceTokens,
    /// Edge members (the edges sharing this state), keyed by edge id.
    Edges,
}

impl Table {
    /// Every table, for backends that create them up front.
    pub const ALL: [Table; 12] = [
        Table::Tunnels,
        Table::VirtualNetworks,
        Table::Routes,
        Table::Lists,
        Table::Rules,
        Table::Users,
        Table::Devices,
        Table::UniqueIndex,
        Table::Config,
        Table::IdentityProviders,
        Table::ServiceTokens,
        Table::Edges,
    ];

    /// A stable name for the table, usable as a table or key-prefix name in a backend.
    pub fn name(self) -> &'static str {
        match self {
            Table::Tunnels => "tunnels",
            Table::VirtualNetworks => "vnets",
            Table::Routes => "routes",
            Table::Lists => "lists",
            Table::Rules => "rules",
            Table::Users => "users",
            Table::Devices => "devices",
            Table::UniqueIndex => "unique",
            Table::Config => "config",
            Table::IdentityProviders => "idps",
            Table::ServiceTokens => "service_tokens",
            Table::Edges => "edges",
        }
    }
}

/// The state's revision: grows by one with every commit that changed something.
///
/// Subscribers compare revisions to know whether to reload routes and policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(u64);

impl Revision {
    /// The revision of an empty store.
    pub const ZERO: Revision = Revision(0);

    /// Wraps a number read from a backend.
    pub fn new(n: u64) -> Self {
        Self(n)
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The next revision, or `None` at `u64::MAX`.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A failure inside a storage backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend could not carry out an operation (I/O, lock, connection).
    #[error("{backend} storage: {operation} failed")]
    Failed {
        /// Which backend (for example `redb`).
        backend: &'static str,
        /// What was being done, such as "commit" or "read table routes".
        operation: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The backend's data is damaged or was written by an incompatible version.
    #[error("{backend} storage is corrupted: {detail}")]
    Corrupted {
        /// Which backend.
        backend: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The commit lost a race with another writer of a shared backend and was not applied;
    /// running the transaction again on fresh state is safe. The embedded backend never
    /// returns this (its writers are serialized).
    #[error("{backend} storage: transaction conflicted with a concurrent commit")]
    Contention {
        /// Which backend.
        backend: &'static str,
    },
    /// The revision counter would overflow.
    #[error("{backend} storage: revision counter exhausted")]
    RevisionExhausted {
        /// Which backend.
        backend: &'static str,
    },
}

/// A storage backend. Implementations must give serializable transactions: a write
/// transaction sees its own writes and commits all of them or none.
pub trait Store: Send + Sync + fmt::Debug {
    /// Starts a read transaction on a consistent snapshot.
    fn begin_read(&self) -> Result<Box<dyn StoreRead + '_>, BackendError>;

    /// Starts a write transaction. Dropping it without [`StoreWrite::commit`] discards it.
    fn begin_write(&self) -> Result<Box<dyn StoreWrite + '_>, BackendError>;

    /// A receiver of the latest committed revision, updated after every commit (including
    /// commits by other processes, for backends shared between edges).
    fn subscribe(&self) -> watch::Receiver<Revision>;

    /// The unrevisioned rows several edges share (presence heartbeats), for a backend that
    /// several edges share; `None` for one edge's own store.
    fn ephemeral(&self) -> Option<&dyn EphemeralStore> {
        None
    }
}

/// Fast-moving rows outside the configuration revision, shared by the edges of one store:
/// writing them moves no revision and reloads nothing.
pub trait EphemeralStore: Send + Sync {
    /// Stores a row (autocommitted) and announces it to every edge.
    fn put(&self, table: EphemeralTable, key: &[u8], value: &[u8]) -> Result<(), BackendError>;
    /// Removes a row; returns whether it was present.
    fn remove(&self, table: EphemeralTable, key: &[u8]) -> Result<bool, BackendError>;
    /// Every row of a table, in key order.
    fn scan(&self, table: EphemeralTable) -> Result<Vec<KeyValue>, BackendError>;
    /// Changes to rows, from this edge and every other.
    fn subscribe(&self) -> broadcast::Receiver<EphemeralChange>;
}

/// A key and its value, as a backend returns them from a scan.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Reads within one transaction.
pub trait StoreRead {
    /// The revision this transaction reads.
    fn revision(&self) -> Revision;

    /// The value stored under `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;

    /// Every entry of `table`, in key order.
    fn scan(&self, table: Table) -> Result<Vec<KeyValue>, BackendError>;
}

/// Writes within one transaction.
pub trait StoreWrite: StoreRead {
    /// This transaction as a reader (it sees its own uncommitted writes).
    fn as_read(&self) -> &dyn StoreRead;

    /// Stores `value` under `key`, replacing any previous value.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), BackendError>;

    /// Removes `key`; returns whether it was present.
    fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, BackendError>;

    /// Makes every write durable at once and returns the new revision (the old one when
    /// nothing was written). Subscribers see the new revision once this returns.
    fn commit(self: Box<Self>) -> Result<Revision, BackendError>;
}
