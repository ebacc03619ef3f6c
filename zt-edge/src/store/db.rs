//! The typed layer over a [`Store`]: records, uniqueness and references, written once for
//! every backend.
//!
//! Invariants kept by every committed transaction:
//! - each unique value (tunnel name among live tunnels, network per virtual network, names,
//!   slugs, emails, the default virtual network) maps to exactly one record, through an index
//!   in [`Table::UniqueIndex`] that is updated in the same transaction as the record;
//! - every reference (a route's tunnel and virtual network, a device's user) points to a
//!   record that exists and is live, so deleting a referenced record is refused.

use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::watch;
use uuid::Uuid;

use super::backend::{BackendError, Revision, Store, StoreRead, StoreWrite, Table};
use super::records::{
    List, Record, RecordKind, Reference, Route, Rule, Tunnel, UniqueKey, User, VirtualNetwork,
};

/// An error from a state operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A value that must be unique is taken.
    #[error("a {kind} with {field} {value:?} already exists ({existing})")]
    Conflict {
        /// The kind of record.
        kind: RecordKind,
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
        /// The id of the record that has it.
        existing: Uuid,
    },
    /// No record has this id.
    #[error("{kind} {id} not found")]
    NotFound {
        /// The kind looked for.
        kind: RecordKind,
        /// The id looked for.
        id: Uuid,
    },
    /// A record refers to one that does not exist or is deleted.
    #[error("{kind} {id}: {field} refers to {target_kind} {target}, which does not exist")]
    Dangling {
        /// The referring record's kind.
        kind: RecordKind,
        /// The referring record's id.
        id: Uuid,
        /// The referring field.
        field: &'static str,
        /// The kind referred to.
        target_kind: RecordKind,
        /// The id referred to.
        target: Uuid,
    },
    /// A record cannot be deleted while another refers to it.
    #[error("{kind} {id} is still used by {by_kind} {by_id}")]
    InUse {
        /// The kind of the record being deleted.
        kind: RecordKind,
        /// Its id.
        id: Uuid,
        /// The kind of a record referring to it.
        by_kind: RecordKind,
        /// That record's id.
        by_id: Uuid,
    },
    /// A record's fields are not acceptable.
    #[error("{kind} {id}: {reason}")]
    Invalid {
        /// The kind.
        kind: RecordKind,
        /// The id.
        id: Uuid,
        /// What is wrong, naming the field.
        reason: &'static str,
    },
    /// A stored record or index entry cannot be decoded.
    #[error("stored {table} entry {key} is unreadable: {reason}")]
    Corrupt {
        /// The table name.
        table: &'static str,
        /// The entry's key, printable.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// How many times [`Db::update`] runs a transaction that keeps losing commit races.
pub const MAX_ATTEMPTS: u32 = 5;

/// Typed access to the edge state through a [`Store`].
#[derive(Debug, Clone)]
pub struct Db {
    store: Arc<dyn Store>,
}

impl Db {
    /// Wraps a backend.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The backend.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Starts a read transaction on a consistent snapshot.
    pub fn read(&self) -> Result<ReadTxn<'_>, StoreError> {
        Ok(ReadTxn {
            inner: self.store.begin_read()?,
        })
    }

    /// Starts a write transaction; nothing is visible to others until
    /// [`WriteTxn::commit`], and dropping it discards every change.
    ///
    /// Write transactions are exclusive: this blocks while another is open, and a commit
    /// waits for the disk (fsync). Keep them short, never hold one across an `.await`, and
    /// call from `spawn_blocking` in async code.
    pub fn write(&self) -> Result<WriteTxn<'_>, StoreError> {
        Ok(WriteTxn {
            inner: self.store.begin_write()?,
        })
    }

    /// Runs `f` in a write transaction and commits it when `f` returns `Ok`.
    ///
    /// When the backend reports [`BackendError::Contention`] (a shared backend whose commit
    /// lost a race with another edge), `f` runs again on fresh state, up to
    /// [`MAX_ATTEMPTS`] times in all; so `f` must not have effects outside the transaction.
    pub fn update<T, E>(
        &self,
        mut f: impl FnMut(&mut WriteTxn<'_>) -> Result<T, E>,
    ) -> Result<(T, Revision), E>
    where
        E: From<StoreError>,
    {
        let mut attempt = 1;
        loop {
            let mut txn = self.write()?;
            let value = f(&mut txn)?;
            match txn.commit() {
                Ok(revision) => return Ok((value, revision)),
                Err(StoreError::Backend(BackendError::Contention { backend }))
                    if attempt < MAX_ATTEMPTS =>
                {
                    tracing::debug!(backend, attempt, "transaction lost a race; retrying");
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The latest committed revision.
    pub fn revision(&self) -> Revision {
        *self.store.subscribe().borrow()
    }

    /// A receiver that changes after every commit, for reloading routes and policy.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.store.subscribe()
    }
}

/// A read transaction.
pub struct ReadTxn<'a> {
    inner: Box<dyn StoreRead + 'a>,
}

/// A write transaction; see [`Db::write`].
pub struct WriteTxn<'a> {
    inner: Box<dyn StoreWrite + 'a>,
}

impl std::fmt::Debug for ReadTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTxn")
            .field("revision", &self.inner.revision())
            .finish()
    }
}

impl std::fmt::Debug for WriteTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTxn")
            .field("base_revision", &self.inner.revision())
            .finish()
    }
}

// The same read methods on both transaction kinds, without making callers import a trait.
macro_rules! read_methods {
    () => {
        /// The revision this transaction started from.
        pub fn revision(&self) -> Revision {
            self.raw().revision()
        }

        /// The record of kind `R` with this id.
        pub fn get<R: Record>(&self, id: Uuid) -> Result<Option<R>, StoreError> {
            get::<R>(self.raw(), id)
        }

        /// Every record of kind `R`, ordered by id.
        pub fn list<R: Record>(&self) -> Result<Vec<R>, StoreError> {
            list::<R>(self.raw())
        }

        /// The live (not deleted) tunnel with this name.
        pub fn tunnel_by_name(&self, name: &str) -> Result<Option<Tunnel>, StoreError> {
            by_unique::<Tunnel>(self.raw(), "name", name)
        }

        /// The virtual network with this name.
        pub fn vnet_by_name(&self, name: &str) -> Result<Option<VirtualNetwork>, StoreError> {
            by_unique::<VirtualNetwork>(self.raw(), "name", name)
        }

        /// The default virtual network.
        pub fn default_vnet(&self) -> Result<Option<VirtualNetwork>, StoreError> {
            by_unique::<VirtualNetwork>(self.raw(), "is_default", "true")
        }

        /// The route for exactly `network` in virtual network `vnet`.
        pub fn route_by_network(
            &self,
            vnet: Uuid,
            network: IpNet,
        ) -> Result<Option<Route>, StoreError> {
            let value = format!("{network} in virtual network {vnet}");
            by_unique::<Route>(self.raw(), "network", &value)
        }

        /// The list with this name.
        pub fn list_by_name(&self, name: &str) -> Result<Option<List>, StoreError> {
            by_unique::<List>(self.raw(), "name", name)
        }

        /// The list with this slug.
        pub fn list_by_slug(&self, slug: &str) -> Result<Option<List>, StoreError> {
            by_unique::<List>(self.raw(), "slug", slug)
        }

        /// The rule with this name.
        pub fn rule_by_name(&self, name: &str) -> Result<Option<Rule>, StoreError> {
            by_unique::<Rule>(self.raw(), "name", name)
        }

        /// The user with this email, in any letter case.
        pub fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
            by_unique::<User>(self.raw(), "email", &email.to_lowercase())
        }

        /// The JSON document stored under `key` in the configuration table (what the last
        /// `zt apply` left: the file's hash and the versions of the resources it wrote).
        pub fn config_entry(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
            match self.raw().get(Table::Config, key.as_bytes())? {
                None => Ok(None),
                Some(bytes) => {
                    serde_json::from_slice(&bytes)
                        .map(Some)
                        .map_err(|e| StoreError::Corrupt {
                            table: Table::Config.name(),
                            key: key.to_owned(),
                            reason: e.to_string(),
                        })
                }
            }
        }
    };
}

impl ReadTxn<'_> {
    fn raw(&self) -> &dyn StoreRead {
        &*self.inner
    }

    read_methods!();
}

impl WriteTxn<'_> {
    fn raw(&self) -> &dyn StoreRead {
        self.inner.as_read()
    }

    read_methods!();

    /// Inserts or replaces a record, keeping uniqueness and references. The stored copy's
    /// version is the previous one plus one (1 for a new record), whatever `record` says.
    pub fn put<R: Record>(&mut self, record: &R) -> Result<(), StoreError> {
        let id = record.id();
        record.check().map_err(|reason| StoreError::Invalid {
            kind: R::KIND,
            id,
            reason,
        })?;
        for reference in record.references() {
            self.check_reference(R::KIND, id, reference)?;
        }
        let old = get::<R>(self.raw(), id)?;
        if let Some(old) = &old {
            if old.is_live() && !record.is_live() {
                self.check_unreferenced(R::KIND, id)?;
            }
        }
        let new_keys = record.unique_keys();
        let old_keys = old.as_ref().map(|o| o.unique_keys()).unwrap_or_default();
        for key in old_keys.iter().filter(|k| !new_keys.contains(k)) {
            self.inner
                .remove(Table::UniqueIndex, &index_key(R::KIND, key))?;
        }
        for key in &new_keys {
            let ikey = index_key(R::KIND, key);
            match self.inner.get(Table::UniqueIndex, &ikey)? {
                Some(bytes) => {
                    let existing = decode_id(Table::UniqueIndex, &ikey, &bytes)?;
                    if existing != id {
                        return Err(StoreError::Conflict {
                            kind: R::KIND,
                            field: key.field,
                            value: key.value.clone(),
                            existing,
                        });
                    }
                }
                None => self.inner.put(Table::UniqueIndex, &ikey, id.as_bytes())?,
            }
        }
        // The stored copy carries the next version: callers never set it, so a version
        // only moves through this one place.
        let mut stored = record.clone();
        stored.set_version(old.as_ref().map_or(0, Record::version).saturating_add(1));
        let value = serde_json::to_vec(&stored).map_err(|e| StoreError::Corrupt {
            table: R::KIND.table().name(),
            key: id.to_string(),
            reason: format!("cannot encode: {e}"),
        })?;
        self.inner.put(R::KIND.table(), id.as_bytes(), &value)?;
        Ok(())
    }

    /// Removes a record and returns it; refused while another record refers to it, and for
    /// the default virtual network.
    pub fn delete<R: Record>(&mut self, id: Uuid) -> Result<R, StoreError> {
        let Some(old) = get::<R>(self.raw(), id)? else {
            return Err(StoreError::NotFound { kind: R::KIND, id });
        };
        old.check_delete().map_err(|reason| StoreError::Invalid {
            kind: R::KIND,
            id,
            reason,
        })?;
        self.check_unreferenced(R::KIND, id)?;
        for key in old.unique_keys() {
            self.inner
                .remove(Table::UniqueIndex, &index_key(R::KIND, &key))?;
        }
        self.inner.remove(R::KIND.table(), id.as_bytes())?;
        Ok(old)
    }

    /// Stores a JSON document under `key` in the configuration table.
    pub fn put_config_entry(
        &mut self,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
            table: Table::Config.name(),
            key: key.to_owned(),
            reason: format!("cannot encode: {e}"),
        })?;
        self.inner.put(Table::Config, key.as_bytes(), &bytes)?;
        Ok(())
    }

    /// Makes `id` the default virtual network (and the previous default not).
    pub fn set_default_vnet(&mut self, id: Uuid) -> Result<(), StoreError> {
        let Some(mut target) = self.get::<VirtualNetwork>(id)? else {
            return Err(StoreError::NotFound {
                kind: RecordKind::VirtualNetwork,
                id,
            });
        };
        if let Some(mut previous) = self.default_vnet()? {
            if previous.id == id {
                return Ok(());
            }
            previous.is_default = false;
            self.put(&previous)?;
        }
        target.is_default = true;
        self.put(&target)
    }

    /// Commits every change at once; returns the new revision.
    pub fn commit(self) -> Result<Revision, StoreError> {
        Ok(self.inner.commit()?)
    }

    fn check_reference(&self, kind: RecordKind, id: Uuid, r: Reference) -> Result<(), StoreError> {
        let live = match r.kind {
            RecordKind::Tunnel => get::<Tunnel>(self.raw(), r.id)?.map(|t| t.is_active()),
            RecordKind::VirtualNetwork => get::<VirtualNetwork>(self.raw(), r.id)?.map(|_| true),
            RecordKind::User => get::<User>(self.raw(), r.id)?.map(|_| true),
            _ => self
                .inner
                .get(r.kind.table(), r.id.as_bytes())?
                .map(|_| true),
        };
        if live == Some(true) {
            Ok(())
        } else {
            Err(StoreError::Dangling {
                kind,
                id,
                field: r.field,
                target_kind: r.kind,
                target: r.id,
            })
        }
    }

    /// Refuses when any record refers to `kind`/`id`. Scans the referring kinds: deletes are
    /// rare admin operations, and a scan needs no second index to keep consistent.
    fn check_unreferenced(&self, kind: RecordKind, id: Uuid) -> Result<(), StoreError> {
        let by = match kind {
            RecordKind::Tunnel => list::<Route>(self.raw())?
                .into_iter()
                .find(|r| r.tunnel_id == id)
                .map(|r| (RecordKind::Route, r.id)),
            RecordKind::VirtualNetwork => list::<Route>(self.raw())?
                .into_iter()
                .find(|r| r.vnet == id)
                .map(|r| (RecordKind::Route, r.id)),
            RecordKind::User => list::<super::records::Device>(self.raw())?
                .into_iter()
                .find(|d| d.user_id == id)
                .map(|d| (RecordKind::Device, d.id)),
            _ => None,
        };
        match by {
            Some((by_kind, by_id)) => Err(StoreError::InUse {
                kind,
                id,
                by_kind,
                by_id,
            }),
            None => Ok(()),
        }
    }
}

fn index_key(kind: RecordKind, key: &UniqueKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(kind.tag().len() + key.field.len() + key.value.len() + 2);
    k.extend_from_slice(kind.tag().as_bytes());
    k.push(0);
    k.extend_from_slice(key.field.as_bytes());
    k.push(0);
    k.extend_from_slice(key.value.as_bytes());
    k
}

fn printable(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "/")
}

fn decode_id(table: Table, key: &[u8], bytes: &[u8]) -> Result<Uuid, StoreError> {
    Uuid::from_slice(bytes).map_err(|_| StoreError::Corrupt {
        table: table.name(),
        key: printable(key),
        reason: format!("expected a 16-byte id, found {} bytes", bytes.len()),
    })
}

fn decode<R: Record>(key: &[u8], bytes: &[u8]) -> Result<R, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        table: R::KIND.table().name(),
        key: Uuid::from_slice(key)
            .map(|u| u.to_string())
            .unwrap_or_else(|_| printable(key)),
        reason,
    };
    let record: R = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if record.id().as_bytes() != key {
        return Err(corrupt(format!(
            "record id {} differs from its key",
            record.id()
        )));
    }
    Ok(record)
}

fn get<R: Record>(raw: &dyn StoreRead, id: Uuid) -> Result<Option<R>, StoreError> {
    match raw.get(R::KIND.table(), id.as_bytes())? {
        Some(bytes) => decode::<R>(id.as_bytes(), &bytes).map(Some),
        None => Ok(None),
    }
}

fn list<R: Record>(raw: &dyn StoreRead) -> Result<Vec<R>, StoreError> {
    raw.scan(R::KIND.table())?
        .iter()
        .map(|(k, v)| decode::<R>(k, v))
        .collect()
}

fn by_unique<R: Record>(
    raw: &dyn StoreRead,
    field: &'static str,
    value: &str,
) -> Result<Option<R>, StoreError> {
    let ikey = index_key(
        R::KIND,
        &UniqueKey {
            field,
            value: value.to_owned(),
        },
    );
    let Some(bytes) = raw.get(Table::UniqueIndex, &ikey)? else {
        return Ok(None);
    };
    let id = decode_id(Table::UniqueIndex, &ikey, &bytes)?;
    match get::<R>(raw, id)? {
        Some(r) => Ok(Some(r)),
        None => Err(StoreError::Corrupt {
            table: Table::UniqueIndex.name(),
            key: printable(&ikey),
            reason: format!("points to missing {} {id}", R::KIND),
        }),
    }
}
