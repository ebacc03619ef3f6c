//! Test support of the edge's integration tests that no other crate needs: a store backend
//! held in memory, to check the store's logic apart from redb.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;
use zt_edge::{BackendError, KeyValue, Revision, Store, StoreRead, StoreWrite, Table};

type Tables = BTreeMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>>;

/// A backend holding everything in memory; a write transaction works on a copy and holds
/// the writer lock until it commits or is dropped.
#[derive(Debug)]
pub struct MemStore {
    committed: Mutex<(Tables, Revision)>,
    writer: Mutex<()>,
    tx: watch::Sender<Revision>,
    /// How many of the next commits fail with `Contention`, as a shared backend's would.
    pub contended_commits: AtomicU32,
}

impl MemStore {
    pub fn new() -> Self {
        Self {
            committed: Mutex::new((Tables::new(), Revision::ZERO)),
            writer: Mutex::new(()),
            tx: watch::channel(Revision::ZERO).0,
            contended_commits: AtomicU32::new(0),
        }
    }
}

struct MemRead {
    tables: Tables,
    revision: Revision,
}

struct MemWrite<'a> {
    store: &'a MemStore,
    _writer: MutexGuard<'a, ()>,
    read: MemRead,
    dirty: bool,
}

impl StoreRead for MemRead {
    fn revision(&self) -> Revision {
        self.revision
    }
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self
            .tables
            .get(table.name())
            .and_then(|t| t.get(key))
            .cloned())
    }
    fn scan(&self, table: Table) -> Result<Vec<KeyValue>, BackendError> {
        Ok(self
            .tables
            .get(table.name())
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }
}

impl StoreRead for MemWrite<'_> {
    fn revision(&self) -> Revision {
        self.read.revision
    }
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.read.get(table, key)
    }
    fn scan(&self, table: Table) -> Result<Vec<KeyValue>, BackendError> {
        self.read.scan(table)
    }
}

impl StoreWrite for MemWrite<'_> {
    fn as_read(&self) -> &dyn StoreRead {
        self
    }
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        self.read
            .tables
            .entry(table.name())
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        self.dirty = true;
        Ok(())
    }
    fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, BackendError> {
        let was = self
            .read
            .tables
            .get_mut(table.name())
            .and_then(|t| t.remove(key))
            .is_some();
        self.dirty |= was;
        Ok(was)
    }
    fn commit(self: Box<Self>) -> Result<Revision, BackendError> {
        if !self.dirty {
            return Ok(self.read.revision);
        }
        let contended = self
            .store
            .contended_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if contended {
            return Err(BackendError::Contention { backend: "memory" });
        }
        let next = self.read.revision.next().unwrap();
        *self.store.committed.lock().unwrap() = (self.read.tables, next);
        self.store.tx.send_replace(next);
        Ok(next)
    }
}

impl Store for MemStore {
    fn begin_read(&self) -> Result<Box<dyn StoreRead + '_>, BackendError> {
        let (tables, revision) = self.committed.lock().unwrap().clone();
        Ok(Box::new(MemRead { tables, revision }))
    }
    fn begin_write(&self) -> Result<Box<dyn StoreWrite + '_>, BackendError> {
        let writer = self.writer.lock().unwrap();
        let (tables, revision) = self.committed.lock().unwrap().clone();
        Ok(Box::new(MemWrite {
            store: self,
            _writer: writer,
            read: MemRead { tables, revision },
            dirty: false,
        }))
    }
    fn subscribe(&self) -> watch::Receiver<Revision> {
        self.tx.subscribe()
    }
}

/// State options for the suites that run on either backend: the redb default, or a fresh
/// PostgreSQL database with `ZT_TEST_STORE=postgres`.
pub fn state_options(dir: &std::path::Path) -> zt_edge::StateOptions {
    let options = zt_edge::StateOptions::default();
    match zt_testkit::postgres::env_store("admin API suite on PostgreSQL", dir) {
        Some(store) => options.with_store(store),
        None => options,
    }
}
