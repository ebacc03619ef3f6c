//! Reading and writing files that hold secrets.
//!
//! Writing is atomic: a temporary file in the target's directory, created with mode 0600,
//! written and synced, then renamed (or hard-linked, when an existing file must not be
//! replaced) into place, and the directory synced. A crash leaves either the old file or
//! the new one, never half of one. An existing file is replaced only when the caller says
//! so.
//!
//! Reading refuses what cannot be a credentials file (a directory, a dangling symlink, a
//! device, anything over 1 MiB) and files others may read, by the [`PermissionMode`]
//! policy. Symlinks are followed, because a Kubernetes Secret volume presents each key as
//! a symlink into a timestamped directory; the checks apply to the file they point to.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use zeroize::Zeroizing;

/// Largest credentials file accepted, in bytes. Real ones are a few hundred bytes; the
/// bound keeps a wrong path (a log file, a disk image) from being read into memory.
pub const MAX_CREDENTIALS_FILE_LEN: u64 = 1024 * 1024;

/// Which permission bits a credentials file may have (config key
/// `credentials-permissions: strict | default | lenient`).
///
/// | mode | others may access (`o+r`, any "other" bit) | group may access (`g+r`, any "group" bit) |
/// |---|---|---|
/// | `Strict` | refused | refused |
/// | `Default` | refused | loaded, with a warning |
/// | `Lenient` | loaded, with a warning | loaded, with a warning |
///
/// `Default` accepts what Kubernetes produces with `defaultMode: 0440` and an `fsGroup`;
/// `Lenient` is for the 0644 default of a Kubernetes Secret volume.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PermissionMode {
    /// Only the owner may have any access.
    Strict,
    /// Group access is allowed with a warning; access by others is refused.
    #[default]
    Default,
    /// Any access is allowed, with a warning.
    Lenient,
}

impl PermissionMode {
    /// The config value: `strict`, `default` or `lenient`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Default => "default",
            Self::Lenient => "lenient",
        }
    }
}

impl fmt::Display for PermissionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `credentials-permissions` value was not one of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credentials-permissions is {found:?}; expected strict, default or lenient")]
pub struct PermissionModeError {
    /// The value found.
    pub found: String,
}

impl FromStr for PermissionMode {
    type Err = PermissionModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(Self::Strict),
            "default" => Ok(Self::Default),
            "lenient" => Ok(Self::Lenient),
            _ => Err(PermissionModeError {
                found: s.to_owned(),
            }),
        }
    }
}

/// What to do when the file to write already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExistingFile {
    /// Leave it alone and fail with [`WriteError::AlreadyExists`].
    Refuse,
    /// Replace it atomically.
    Replace,
}

/// A secret file could not be loaded. Every variant names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Nothing exists at the path.
    #[error("{}: no such file", path.display())]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The path is a symlink whose target does not exist.
    #[error("{}: is a symlink to {}, which does not exist", path.display(), target.display())]
    DanglingSymlink {
        /// The path given.
        path: PathBuf,
        /// Where the link points.
        target: PathBuf,
    },
    /// The path is a directory.
    #[error("{}: is a directory, not a credentials file", path.display())]
    Directory {
        /// The path given.
        path: PathBuf,
    },
    /// The path is neither a regular file nor a directory (a FIFO, socket or device).
    #[error("{}: is not a regular file", path.display())]
    NotRegularFile {
        /// The path given.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_CREDENTIALS_FILE_LEN`].
    #[error("{}: is {size} bytes; a credentials file is at most {MAX_CREDENTIALS_FILE_LEN} bytes", path.display())]
    TooLarge {
        /// The path given.
        path: PathBuf,
        /// Its size (at least, if it grew while being read).
        size: u64,
    },
    /// Users other than the owner and the group may access the file.
    #[error(
        "{p}: has mode {mode:04o}, which gives other users access to it; fix it with `chmod 600 {p}`. \
         For a Kubernetes Secret volume, set `defaultMode: 0440` on the volume together with \
         the pod's `fsGroup`, or set `credentials-permissions: lenient`",
        p = path.display()
    )]
    OthersCanAccess {
        /// The path given.
        path: PathBuf,
        /// The file's permission bits.
        mode: u32,
    },
    /// The file's group may access it and the policy is [`PermissionMode::Strict`].
    #[error(
        "{p}: has mode {mode:04o}, which gives its group access to it, and credentials-permissions \
         is strict; fix it with `chmod 600 {p}`, or set `credentials-permissions: default`",
        p = path.display()
    )]
    GroupCanAccess {
        /// The path given.
        path: PathBuf,
        /// The file's permission bits.
        mode: u32,
    },
    /// Reading failed.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The path given.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file was read but its contents are not acceptable.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The path given.
        path: PathBuf,
        /// What is wrong, naming the field (and line and column for JSON syntax).
        #[source]
        source: crate::json::ParseError,
    },
}

/// A secret file could not be written. Every variant names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The file exists and [`ExistingFile::Refuse`] was asked for.
    #[error("{}: already exists; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The path given.
        path: PathBuf,
    },
    /// The path does not end in a file name (it is empty, `/` or ends in `..`).
    #[error("{}: does not name a file", path.display())]
    NotAFilePath {
        /// The path given.
        path: PathBuf,
    },
    /// A step of the write failed. The target is unchanged unless the step was the final
    /// directory sync.
    #[error("{}: cannot {step}: {source}", path.display())]
    Io {
        /// The path given.
        path: PathBuf,
        /// The step that failed, e.g. "create a temporary file in its directory".
        step: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// Reads a file that holds secrets, after checking that it is a regular file of at most
/// [`MAX_CREDENTIALS_FILE_LEN`] bytes whose permissions `permissions` allows.
///
/// Symlinks are followed and the target checked. The bytes come back in a buffer that is
/// zeroized when dropped.
pub fn read_private_file(
    path: &Path,
    permissions: PermissionMode,
) -> Result<Zeroizing<Vec<u8>>, LoadError> {
    let io_err = |source: io::Error| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    // Look before opening: opening a FIFO for reading would block.
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(match fs::read_link(path) {
                Ok(target) => LoadError::DanglingSymlink {
                    path: path.to_owned(),
                    target,
                },
                Err(_) => LoadError::NotFound {
                    path: path.to_owned(),
                },
            });
        }
        Err(e) => return Err(io_err(e)),
    };
    check_kind(path, &meta)?;

    let mut file = File::open(path).map_err(io_err)?;
    // Check what was opened, not what the path named a moment ago.
    let meta = file.metadata().map_err(io_err)?;
    check_kind(path, &meta)?;
    if meta.len() > MAX_CREDENTIALS_FILE_LEN {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
        });
    }
    check_mode(path, &meta, permissions)?;

    // Room for the whole file up front, so the buffer never reallocates and leaves an
    // unzeroized copy behind; one byte more to notice a file that grew.
    let capacity = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    let read = (&mut file)
        .take(MAX_CREDENTIALS_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if read as u64 > MAX_CREDENTIALS_FILE_LEN {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            size: read as u64,
        });
    }
    Ok(bytes)
}

fn check_kind(path: &Path, meta: &fs::Metadata) -> Result<(), LoadError> {
    if meta.is_dir() {
        return Err(LoadError::Directory {
            path: path.to_owned(),
        });
    }
    if !meta.is_file() {
        return Err(LoadError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    Ok(())
}

#[cfg(unix)]
fn check_mode(path: &Path, meta: &fs::Metadata, policy: PermissionMode) -> Result<(), LoadError> {
    use std::os::unix::fs::PermissionsExt;

    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o007 != 0 {
        if policy != PermissionMode::Lenient {
            return Err(LoadError::OthersCanAccess {
                path: path.to_owned(),
                mode,
            });
        }
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:04o}"),
            "credentials file is accessible to other users; loading it because credentials-permissions is lenient"
        );
    } else if mode & 0o070 != 0 {
        if policy == PermissionMode::Strict {
            return Err(LoadError::GroupCanAccess {
                path: path.to_owned(),
                mode,
            });
        }
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:04o}"),
            "credentials file is accessible to its group; `chmod 600` it unless the group is meant to read it"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_: &Path, _: &fs::Metadata, _: PermissionMode) -> Result<(), LoadError> {
    // No Unix permission bits to check; access is governed by the platform's ACLs.
    Ok(())
}

/// Writes `contents` to `path` atomically, with mode 0600.
///
/// The bytes go to a temporary file (created with mode 0600 in the same directory), which
/// is synced and then moved into place; the directory is synced last. With
/// [`ExistingFile::Refuse`] an existing file (or symlink) at `path` is left untouched and
/// the call fails with [`WriteError::AlreadyExists`]; with [`ExistingFile::Replace`] it is
/// replaced. No temporary file is left behind on failure.
pub fn write_private_file(
    path: &Path,
    contents: &[u8],
    existing: ExistingFile,
) -> Result<(), WriteError> {
    let Some(name) = path.file_name() else {
        return Err(WriteError::NotAFilePath {
            path: path.to_owned(),
        });
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let io_err = |step: &'static str| {
        move |source: io::Error| WriteError::Io {
            path: path.to_owned(),
            step,
            source,
        }
    };
    let exists = || WriteError::AlreadyExists {
        path: path.to_owned(),
    };
    // An early, friendly answer; the hard link below is what makes refusal race-free.
    if existing == ExistingFile::Refuse && fs::symlink_metadata(path).is_ok() {
        return Err(exists());
    }

    let (temp_path, mut temp) =
        create_temp(dir, name).map_err(io_err("create a temporary file in its directory"))?;
    let mut guard = RemoveOnDrop(Some(temp_path.clone()));
    set_private_mode(&temp).map_err(io_err("set mode 0600 on the temporary file"))?;
    temp.write_all(contents)
        .map_err(io_err("write the temporary file"))?;
    temp.sync_all().map_err(io_err("sync the temporary file"))?;
    drop(temp);

    match existing {
        ExistingFile::Replace => {
            fs::rename(&temp_path, path).map_err(io_err("rename the temporary file into place"))?;
            guard.0 = None;
        }
        ExistingFile::Refuse => match fs::hard_link(&temp_path, path) {
            // link(2) fails if the name exists: an atomic "create, never replace".
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(exists()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
                ) =>
            {
                // A filesystem without hard links (vfat, some FUSE): check, then rename.
                // Another writer could slip in between; that is the best such a
                // filesystem allows.
                if fs::symlink_metadata(path).is_ok() {
                    return Err(exists());
                }
                fs::rename(&temp_path, path)
                    .map_err(io_err("rename the temporary file into place"))?;
                guard.0 = None;
            }
            Err(e) => return Err(io_err("link the temporary file into place")(e)),
        },
    }
    // After a hard link, dropping the guard removes the temporary name.
    drop(guard);
    sync_dir(dir).map_err(io_err("sync its directory"))?;
    Ok(())
}

fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    // A random suffix so that concurrent writers never collide; `create_new` makes a
    // collision an error rather than a shared file, and a few tries make it moot.
    let mut last = None;
    for _ in 0..4 {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
        let temp_path = dir.join(temp_name);
        match options.open(&temp_path) {
            Ok(file) => return Ok((temp_path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

#[cfg(unix)]
fn set_private_mode(file: &File) -> io::Result<()> {
    // The umask may have cleared bits of the 0600 asked for at creation (a umask of 0277
    // would leave a file its owner cannot read back); set it exactly.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn set_private_mode(_: &File) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    // The rename is durable only once the directory entry is.
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) -> io::Result<()> {
    Ok(())
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove temporary file");
            }
        }
    }
}
