//! The one error type of the state directory: every variant names the file or directory
//! at fault and, where there is one, what to do about it.

use std::io;
use std::path::PathBuf;

use crate::store::{OpenDbError, StoreError};

/// An error opening, creating or updating the state directory. Each names the file at
/// fault and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The directory could not be created.
    #[error("cannot create state directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file or the directory is open to other users.
    #[error("{} has mode {mode:o}, open to other users; run `chmod {expected:o} {}`", path.display(), path.display())]
    Permissions {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode it should have.
        expected: u32,
    },
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file's content is wrong.
    #[error("{} is corrupted: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Some state files exist and some do not.
    #[error("state directory {} is incomplete: {reason}", dir.display())]
    Incomplete {
        /// The directory.
        dir: PathBuf,
        /// Which files are missing and present, and what to do.
        reason: String,
    },
    /// A key or certificate could not be created.
    #[error("cannot create {what}: {detail}")]
    Issue {
        /// Which certificate.
        what: &'static str,
        /// The cause.
        detail: String,
    },
    /// The database file could not be opened.
    #[error(transparent)]
    Database(#[from] OpenDbError),
    /// The database could not be set up.
    #[error("cannot set up the state database")]
    Store(#[from] StoreError),
}
