//! The default backend: one redb file (ACID, copy-on-write B-trees, fsync on every commit),
//! which survives `kill -9` at any moment with either the old or the new state.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use redb::{ReadableTable, TableDefinition};
use tokio::sync::watch;

use super::backend::{BackendError, KeyValue, Revision, Store, StoreRead, StoreWrite, Table};
use crate::fsutil;

const BACKEND: &str = "redb";

/// Version of the layout of keys and values; a file from a newer version is refused.
const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_SCHEMA: &str = "schema";

/// The page cache redb may use. State is small (thousands of records); the default of 1 GiB
/// would only matter for memory accounting.
const CACHE_BYTES: usize = 32 << 20;

fn def(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

fn failed(operation: impl Into<String>, source: impl Into<redb::Error>) -> BackendError {
    let source: redb::Error = source.into();
    if let redb::Error::Corrupted(detail) = &source {
        return BackendError::Corrupted {
            backend: BACKEND,
            detail: detail.clone(),
        };
    }
    BackendError::Failed {
        backend: BACKEND,
        operation: operation.into(),
        source: Box::new(source),
    }
}

/// An error opening the database file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenDbError {
    /// The file could not be created or opened.
    #[error("cannot open database {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process (another edge) has the database open.
    #[error("database {path} is in use by another process")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The database failed while being opened.
    #[error("cannot open database {path}")]
    Backend {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: BackendError,
    },
    /// The file is not a readable database of a version this edge knows.
    #[error("database {path} is unreadable: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// The redb backend of [`Store`].
pub struct RedbStore {
    db: redb::Database,
    path: PathBuf,
    revision: watch::Sender<Revision>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("revision", &*self.revision.borrow())
            .finish()
    }
}

impl RedbStore {
    /// Opens the database at `path`, creating it (mode 0600) when absent.
    pub fn open(path: &Path) -> Result<Self, OpenDbError> {
        let path = path.to_path_buf();
        let corrupt = |detail: String| OpenDbError::Corrupt {
            path: path.clone(),
            detail,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(fsutil::FILE_MODE)
            .open(&path)
            .map_err(|source| OpenDbError::Io {
                path: path.clone(),
                source,
            })?;
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_file(file)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    OpenDbError::Locked { path: path.clone() }
                }
                redb::DatabaseError::Storage(redb::StorageError::Io(source))
                    if source.kind() == std::io::ErrorKind::InvalidData =>
                {
                    corrupt(format!("not a database file this edge can read ({source})"))
                }
                redb::DatabaseError::Storage(redb::StorageError::Io(source)) => OpenDbError::Io {
                    path: path.clone(),
                    source,
                },
                other => corrupt(other.to_string()),
            })?;
        // A file already set up is only read: opening then costs no commit (no fsync).
        let revision = match existing_revision(&db) {
            Ok(Some(revision)) => Ok(revision),
            Ok(None) => set_up(&db),
            Err(e) => Err(e),
        }
        .map_err(|source| match source {
            BackendError::Corrupted { detail, .. } => corrupt(detail),
            source => OpenDbError::Backend {
                path: path.clone(),
                source,
            },
        })?;
        let (tx, _) = watch::channel(revision);
        Ok(Self {
            db,
            path,
            revision: tx,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store for RedbStore {
    fn begin_read(&self) -> Result<Box<dyn StoreRead + '_>, BackendError> {
        let txn = self.db.begin_read().map_err(|e| failed("begin read", e))?;
        let revision = {
            let meta = txn.open_table(META).map_err(|e| failed("open meta", e))?;
            read_revision(&meta)?
        };
        Ok(Box::new(RedbRead { txn, revision }))
    }

    fn begin_write(&self) -> Result<Box<dyn StoreWrite + '_>, BackendError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| failed("begin write", e))?;
        let revision = {
            let meta = txn.open_table(META).map_err(|e| failed("open meta", e))?;
            read_revision(&meta)?
        };
        Ok(Box::new(RedbWrite {
            store: self,
            txn,
            revision,
            dirty: false,
        }))
    }

    fn subscribe(&self) -> watch::Receiver<Revision> {
        self.revision.subscribe()
    }
}

/// The revision of a file that has this schema and every table, `None` when it needs
/// setting up (a new file, or one from before a table was added).
fn existing_revision(db: &redb::Database) -> Result<Option<Revision>, BackendError> {
    let txn = db.begin_read().map_err(|e| failed("begin read", e))?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(failed("open meta", e)),
    };
    let schema = meta
        .get(META_SCHEMA)
        .map_err(|e| failed("read schema", e))?
        .map(|v| v.value());
    match schema {
        None => return Ok(None),
        Some(version) => check_schema(version)?,
    }
    for table in Table::ALL {
        match txn.open_table(def(table)) {
            Ok(_) => {}
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(failed(format!("open table {}", table.name()), e)),
        }
    }
    read_revision(&meta).map(Some)
}

/// Creates every table and the schema mark in one transaction, so a new file is either
/// fully set up or still empty.
fn set_up(db: &redb::Database) -> Result<Revision, BackendError> {
    let txn = db.begin_write().map_err(|e| failed("begin setup", e))?;
    let revision = {
        let mut meta = txn.open_table(META).map_err(|e| failed("open meta", e))?;
        let schema = meta
            .get(META_SCHEMA)
            .map_err(|e| failed("read schema", e))?
            .map(|v| v.value());
        match schema {
            None => {
                meta.insert(META_SCHEMA, SCHEMA_VERSION)
                    .map_err(|e| failed("write schema", e))?;
            }
            Some(version) => check_schema(version)?,
        }
        for table in Table::ALL {
            txn.open_table(def(table))
                .map_err(|e| failed(format!("create table {}", table.name()), e))?;
        }
        read_revision(&meta)?
    };
    txn.commit().map_err(|e| failed("commit setup", e))?;
    Ok(revision)
}

fn check_schema(version: u64) -> Result<(), BackendError> {
    if version == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(BackendError::Corrupted {
            backend: BACKEND,
            detail: format!("schema version {version}, this edge knows {SCHEMA_VERSION}"),
        })
    }
}

fn read_revision(meta: &impl ReadableTable<&'static str, u64>) -> Result<Revision, BackendError> {
    Ok(Revision::new(
        meta.get(META_REVISION)
            .map_err(|e| failed("read revision", e))?
            .map(|v| v.value())
            .unwrap_or(0),
    ))
}

fn scan_table(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    name: Table,
) -> Result<Vec<KeyValue>, BackendError> {
    let op = || format!("scan table {}", name.name());
    let mut out =
        Vec::with_capacity(usize::try_from(table.len().map_err(|e| failed(op(), e))?).unwrap_or(0));
    for entry in table.iter().map_err(|e| failed(op(), e))? {
        let (k, v) = entry.map_err(|e| failed(op(), e))?;
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

struct RedbRead {
    txn: redb::ReadTransaction,
    revision: Revision,
}

impl StoreRead for RedbRead {
    fn revision(&self) -> Revision {
        self.revision
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let op = || format!("read table {}", table.name());
        let t = self
            .txn
            .open_table(def(table))
            .map_err(|e| failed(op(), e))?;
        let value = t.get(key).map_err(|e| failed(op(), e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(&self, table: Table) -> Result<Vec<KeyValue>, BackendError> {
        let t = self
            .txn
            .open_table(def(table))
            .map_err(|e| failed(format!("scan table {}", table.name()), e))?;
        scan_table(&t, table)
    }
}

struct RedbWrite<'a> {
    store: &'a RedbStore,
    txn: redb::WriteTransaction,
    revision: Revision,
    dirty: bool,
}

impl StoreRead for RedbWrite<'_> {
    fn revision(&self) -> Revision {
        self.revision
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let op = || format!("read table {}", table.name());
        let t = self
            .txn
            .open_table(def(table))
            .map_err(|e| failed(op(), e))?;
        let value = t.get(key).map_err(|e| failed(op(), e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(&self, table: Table) -> Result<Vec<KeyValue>, BackendError> {
        let t = self
            .txn
            .open_table(def(table))
            .map_err(|e| failed(format!("scan table {}", table.name()), e))?;
        scan_table(&t, table)
    }
}

impl StoreWrite for RedbWrite<'_> {
    fn as_read(&self) -> &dyn StoreRead {
        self
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        let op = || format!("write table {}", table.name());
        let mut t = self
            .txn
            .open_table(def(table))
            .map_err(|e| failed(op(), e))?;
        t.insert(key, value).map_err(|e| failed(op(), e))?;
        self.dirty = true;
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, BackendError> {
        let op = || format!("write table {}", table.name());
        let mut t = self
            .txn
            .open_table(def(table))
            .map_err(|e| failed(op(), e))?;
        let was = t.remove(key).map_err(|e| failed(op(), e))?.is_some();
        self.dirty |= was;
        Ok(was)
    }

    fn commit(self: Box<Self>) -> Result<Revision, BackendError> {
        let this = *self;
        if !this.dirty {
            // Nothing changed: no new revision, and dropping the transaction aborts it.
            return Ok(this.revision);
        }
        let next = this
            .revision
            .next()
            .ok_or(BackendError::RevisionExhausted { backend: BACKEND })?;
        {
            let mut meta = this
                .txn
                .open_table(META)
                .map_err(|e| failed("open meta", e))?;
            meta.insert(META_REVISION, next.get())
                .map_err(|e| failed("write revision", e))?;
        }
        this.txn.commit().map_err(|e| failed("commit", e))?;
        // Commits are serialized by redb, but the notification is sent after the lock is
        // released, so only move forward.
        this.store.revision.send_if_modified(|current| {
            if next > *current {
                *current = next;
                true
            } else {
                false
            }
        });
        Ok(next)
    }
}
