//! The audit log: one JSON object per line, one line per flow and per refused
//! authentication.
//!
//! Flush policy: lines are buffered in memory up to [`AUDIT_BUFFER_BYTES`]; the buffer goes
//! to the file when it is full, when a line is written and the last flush is older than
//! [`AUDIT_FLUSH_INTERVAL`], after every authentication refusal (rare, and what an operator
//! looks for during an attack), on [`AuditLog::flush`] and when the log is dropped. So at most
//! one interval's worth of flow lines, bounded by the buffer size, is lost if the process is
//! killed; [`AuditLog::sync`] also asks the OS to put the file on disk. The runtime calls
//! `flush` from a timer so a quiet edge does not hold lines back.
//!
//! Lines are appended with `O_APPEND`, so an external rotation that renames the file and
//! lets the edge reopen it never interleaves partial lines. Records carry no secrets: only
//! ids, addresses, names and counters; text a peer controls is length-bounded before it is
//! written, and JSON escaping keeps it on its line.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::fsutil;
use crate::timestamp::Timestamp;

/// Size of the in-memory buffer: a few hundred flow lines.
pub const AUDIT_BUFFER_BYTES: usize = 64 * 1024;

/// Longest time a buffered line waits for the next write before it is flushed.
pub const AUDIT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Longest peer-supplied text (a claimed id) kept in a line, in bytes.
pub const MAX_CLAIMED_ID_LEN: usize = 128;

/// The transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FlowProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// The policy phase that decided a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PolicyPhase {
    /// Decided at open, on connection fields.
    L4,
    /// Decided on the first bytes (SNI, Host) or by a do-not-inspect rule.
    Http,
    /// Decided on a DNS query.
    Dns,
}

/// What policy did with a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FlowAction {
    /// Allowed.
    Allow,
    /// Blocked.
    Block,
    /// Passed through without inspection.
    Off,
}

/// The kind of connector that served a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ConnectorKind {
    /// zt's own connector.
    Zt,
    /// An unmodified cloudflared.
    Cloudflared,
}

/// Why a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloseReason {
    /// Both directions finished normally.
    Completed,
    /// The client reset the flow.
    ClientReset,
    /// The origin (or connector) reset the flow.
    OriginReset,
    /// A policy rule blocked it.
    Denied,
    /// No route covers the destination.
    NoRoute,
    /// The tunnel has no live connector.
    NoConnector,
    /// The connector could not reach the destination.
    ConnectFailed,
    /// A time limit (header, open, idle) ran out.
    Timeout,
    /// The client session reached its maximum lifetime.
    SessionExpired,
    /// The edge is shutting down.
    EdgeShutdown,
    /// The client's or the connector's connection was lost mid-flow (its idle timeout
    /// ran out, or it was reset).
    ConnectionLost,
    /// A protocol or internal error.
    Error,
}

/// One flow, written when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// When the flow ended.
    pub time: Timestamp,
    /// The user's email, when the client was authenticated as a user.
    pub identity_email: Option<String>,
    /// The client device.
    pub device_id: Option<Uuid>,
    /// The client's address as the edge saw it.
    pub source: SocketAddr,
    /// The private destination asked for.
    pub destination: SocketAddr,
    /// The virtual network of the flow.
    pub vnet: Option<Uuid>,
    /// TCP or UDP.
    pub protocol: FlowProtocol,
    /// The policy phase that decided, when policy decided.
    pub phase: Option<PolicyPhase>,
    /// The deciding rule's id, when a rule matched (none: a default applied).
    pub rule_id: Option<Uuid>,
    /// The deciding rule's name.
    pub rule_name: Option<String>,
    /// What policy did, when it ran.
    pub action: Option<FlowAction>,
    /// The tunnel the route chose.
    pub tunnel_id: Option<Uuid>,
    /// The connector that served the flow.
    pub connector_id: Option<Uuid>,
    /// Its kind.
    pub connector_kind: Option<ConnectorKind>,
    /// Its version string as it reported it.
    pub connector_version: Option<String>,
    /// Bytes from client to origin.
    pub bytes_up: u64,
    /// Bytes from origin to client.
    pub bytes_down: u64,
    /// From open to close.
    pub duration_ms: u64,
    /// Why it ended.
    pub close_reason: CloseReason,
    /// Set when the connector cannot keep one direction open after the other finished
    /// (cloudflared: the first FIN from either side ends the whole flow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_close: Option<HalfClose>,
}

/// How a flow's half-close (one direction finished, the other still open) was carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HalfClose {
    /// The connector was cloudflared, which ends the whole flow at the first FIN from
    /// either side; zt-connector keeps the other direction open.
    NotSupportedByCloudflared,
}

impl FlowRecord {
    /// A record stamped now for a flow from `source` to `destination`, with every optional
    /// field empty and counters at zero.
    pub fn new(
        source: SocketAddr,
        destination: SocketAddr,
        protocol: FlowProtocol,
        close_reason: CloseReason,
    ) -> Self {
        Self {
            time: Timestamp::now(),
            identity_email: None,
            device_id: None,
            source,
            destination,
            vnet: None,
            protocol,
            phase: None,
            rule_id: None,
            rule_name: None,
            action: None,
            tunnel_id: None,
            connector_id: None,
            connector_kind: None,
            connector_version: None,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            close_reason,
            half_close: None,
        }
    }
}

/// Who failed to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PeerRole {
    /// A connector (zt or cloudflared).
    Connector,
    /// A client device.
    Client,
    /// A caller of the admin API.
    Admin,
}

/// One refused authentication. The peer was told only "refused"; `reason` says why, for the
/// operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRefusal {
    /// When.
    pub time: Timestamp,
    /// The peer's address.
    pub source: IpAddr,
    /// What it claimed to be.
    pub role: PeerRole,
    /// The id it claimed (tunnel or device id, as sent), cut to [`MAX_CLAIMED_ID_LEN`].
    pub claimed_id: Option<String>,
    /// Why it was refused (unknown id, bad proof, revoked, rate-limited…).
    pub reason: String,
}

impl AuthRefusal {
    /// A refusal stamped now.
    pub fn new(
        source: IpAddr,
        role: PeerRole,
        claimed_id: Option<&str>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            time: Timestamp::now(),
            source,
            role,
            claimed_id: claimed_id.map(str::to_owned),
            reason: reason.into(),
        }
    }
}

/// One line of the audit log, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// `{"type":"flow", …}`.
    Flow(FlowRecord),
    /// `{"type":"auth_refusal", …}`.
    AuthRefusal(AuthRefusal),
}

/// An error of the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The file could not be opened.
    #[error("cannot open audit log {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The existing file is readable by every user.
    #[error("audit log {} has mode {mode:o}, readable by every user; run `chmod 600 {}`", path.display(), path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Writing or flushing failed.
    #[error("cannot write audit log {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The borrowed twin of [`AuditEvent`], so writing a line copies nothing.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventRef<'a> {
    Flow(&'a FlowRecord),
    AuthRefusal(&'a AuthRefusal),
}

struct Inner {
    out: BufWriter<File>,
    last_flush: Instant,
}

/// A writer of audit lines, safe to share between tasks.
pub struct AuditLog {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

impl AuditLog {
    /// Opens `path` for appending, creating it with mode 0600. An existing file readable by
    /// all users is refused (group access is allowed, for log shippers).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(fsutil::FILE_MODE)
            .open(&path)
            .map_err(|source| AuditError::Open {
                path: path.clone(),
                source,
            })?;
        let mode = fsutil::loose_mode(&path).map_err(|source| AuditError::Open {
            path: path.clone(),
            source,
        })?;
        if let Some(mode) = mode.filter(|m| m & 0o007 != 0) {
            return Err(AuditError::Permissions { path, mode });
        }
        Ok(Self {
            path,
            inner: Mutex::new(Inner {
                out: BufWriter::with_capacity(AUDIT_BUFFER_BYTES, file),
                last_flush: Instant::now(),
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a finished flow.
    pub fn record_flow(&self, record: &FlowRecord) -> Result<(), AuditError> {
        self.write_event(&EventRef::Flow(record), false)
    }

    /// Records a refused authentication and flushes.
    pub fn record_auth_refusal(&self, record: &AuthRefusal) -> Result<(), AuditError> {
        match &record.claimed_id {
            Some(id) if id.len() > MAX_CLAIMED_ID_LEN => {
                let mut record = record.clone();
                record.claimed_id = Some(truncate_utf8(id, MAX_CLAIMED_ID_LEN).to_owned());
                self.write_event(&EventRef::AuthRefusal(&record), true)
            }
            _ => self.write_event(&EventRef::AuthRefusal(record), true),
        }
    }

    /// Writes buffered lines to the file.
    pub fn flush(&self) -> Result<(), AuditError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.last_flush = Instant::now();
        inner.out.flush().map_err(|source| self.write_error(source))
    }

    /// Writes buffered lines and waits until the OS has them on disk.
    pub fn sync(&self) -> Result<(), AuditError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.last_flush = Instant::now();
        inner
            .out
            .flush()
            .map_err(|source| self.write_error(source))?;
        inner
            .out
            .get_ref()
            .sync_data()
            .map_err(|source| self.write_error(source))
    }

    fn write_event(&self, event: &EventRef<'_>, flush_now: bool) -> Result<(), AuditError> {
        // Serialize outside the lock; serde_json escapes control characters, so a line is
        // always one line.
        let mut line =
            serde_json::to_vec(event).map_err(|e| self.write_error(io::Error::other(e)))?;
        line.push(b'\n');
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .out
            .write_all(&line)
            .map_err(|source| self.write_error(source))?;
        if flush_now || inner.last_flush.elapsed() >= AUDIT_FLUSH_INTERVAL {
            inner.last_flush = Instant::now();
            inner
                .out
                .flush()
                .map_err(|source| self.write_error(source))?;
        }
        Ok(())
    }

    fn write_error(&self, source: io::Error) -> AuditError {
        AuditError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = inner.out.flush() {
            tracing::warn!(path = %self.path.display(), error = %e, "audit log lines lost at close");
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}
