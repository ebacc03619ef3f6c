//! Copying every record from one backend to another (`zt edge migrate`), then checking that
//! the destination holds exactly what the source does. The source is only read.

use super::backend::{BackendError, Store, Table};

/// What [`copy_store`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Entries per table, in [`Table::ALL`] order.
    pub tables: Vec<(Table, usize)>,
    /// The destination's revision after the copy.
    pub revision: super::Revision,
}

impl CopyReport {
    /// Entries copied in all.
    pub fn total(&self) -> usize {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

/// A copy that did not happen or did not check out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// Reading the source or writing the destination failed; nothing was committed to the
    /// destination (the copy is one transaction).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The destination already holds records: refusing to mix two states.
    #[error(
        "the destination already holds state ({count} entries in table {table}): migrate \
         into an empty database"
    )]
    NotEmpty {
        /// The first non-empty table.
        table: &'static str,
        /// Its entries.
        count: usize,
    },
    /// Read back, the destination differs from the source.
    #[error("after the copy, table {table} differs: {detail}")]
    Mismatch {
        /// The table.
        table: &'static str,
        /// How.
        detail: String,
    },
}

/// Copies every table of `from` into the empty `to` in one transaction, then reads both
/// back and compares them entry by entry.
pub fn copy_store(from: &dyn Store, to: &dyn Store) -> Result<CopyReport, CopyError> {
    let source = from.begin_read()?;
    let mut dest = to.begin_write()?;
    for table in Table::ALL {
        let existing = dest.scan(table)?;
        if !existing.is_empty() {
            return Err(CopyError::NotEmpty {
                table: table.name(),
                count: existing.len(),
            });
        }
    }
    let mut tables = Vec::with_capacity(Table::ALL.len());
    for table in Table::ALL {
        let entries = source.scan(table)?;
        for (k, v) in &entries {
            dest.put(table, k, v)?;
        }
        tables.push((table, entries.len()));
    }
    let revision = dest.commit()?;
    let check = to.begin_read()?;
    for table in Table::ALL {
        let want = source.scan(table)?;
        let got = check.scan(table)?;
        if want.len() != got.len() {
            return Err(CopyError::Mismatch {
                table: table.name(),
                detail: format!("{} entries in the source, {} copied", want.len(), got.len()),
            });
        }
        if let Some(i) = want.iter().zip(&got).position(|(a, b)| a != b) {
            return Err(CopyError::Mismatch {
                table: table.name(),
                detail: format!("entry {i} in key order differs"),
            });
        }
    }
    Ok(CopyReport { tables, revision })
}
