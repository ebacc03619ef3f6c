//! The audit log: one JSON object per line, one line per flow and per refused
//! authentication (or per run of refusals, see below).
//!
//! Flush policy: lines are buffered in memory up to [`AUDIT_BUFFER_BYTES`]; the buffer goes
//! to the file when it is full, when a line is written and the last flush is older than
//! [`AUDIT_FLUSH_INTERVAL`], after every authentication refusal line (what an operator looks
//! for during an attack), on [`AuditLog::flush`] and when the log is dropped. So at most
//! one interval's worth of flow lines, bounded by the buffer size, is lost if the process is
//! killed; [`AuditLog::sync`] also asks the OS to put the file on disk. The runtime calls
//! `flush` from a timer so a quiet edge does not hold lines back.
//!
//! Bounded on disk ([`AuditLimits`]): when a line would take the file past
//! `max_bytes` (default 100 MiB), the file is renamed `audit.jsonl.1` (`.1` becomes `.2`
//! and so on, up to `keep` files, default 5; the oldest is replaced) and a new file is
//! started, 0600 like the first. Rotation happens between lines, so a line is never split
//! across files, and reading `.keep` … `.1` then the live file gives every kept line in
//! order. The log takes at most `max_bytes × (keep + 1)` plus one line. A rename that fails
//! is reported ([`AuditError::Rotate`]) and the edge keeps writing to the current file, so
//! no line is lost; it tries again a minute later.
//!
//! A refusal within its source's failure budget (a burst of 10, then 6 a minute, see the
//! edge's `AuthRateLimit`) gets a line of its own, written at once
//! ([`AuditLog::record_auth_refusal_at_once`]): a connector with a stale secret shows every
//! attempt. Beyond the budget, and for refusals that spend none (rate-limited, timed out,
//! draining), refusals are coalesced ([`AuditLog::record_auth_refusal`],
//! [`AuditLimits::refusal_interval`], default 10 s): the first from a source (an IPv4
//! address, an IPv6 /64) for a given role and reason is written at once; the further ones
//! in the same interval are counted, and when the interval has passed one line stands for
//! all of them: its `count` says how many refusals
//! it covers (1 for a line written at once), `since` when the first of them happened,
//! `time`, `source` and `claimed_id` are those of the last. The sum of `count` over the
//! refusal lines is the number of refusals; none goes uncounted, a flood from one source
//! writes a few lines per interval. The runtime's one-second flush writes the lines whose
//! interval has passed; the sources tracked at once are bounded (`refusal_sources`), the
//! least recently seen is written out and forgotten when the table is full.
//!
//! Lines are appended with `O_APPEND`, so an external rotation never interleaves partial
//! lines: `copytruncate` works as is, and after a rotation that renames the file away the
//! edge notices at its next flush (within a second) that the path names another file or
//! none, and reopens it (creating it 0600 when missing). Set `max_bytes` to 0 to leave
//! rotation entirely to such a tool. Records carry no secrets: only ids, addresses, names
//! and counters; text a peer controls is length-bounded before it is written, and JSON
//! escaping keeps it on its line.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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

/// How long the log waits before it tries a failed rotation again.
const ROTATE_RETRY: Duration = Duration::from_secs(60);

/// How big the audit log may grow and how often one source may add a refusal line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditLimits {
    /// Size at which the file is rotated (default 100 MiB: about 400,000 flow lines, a few
    /// days of a busy edge); 0 never rotates (an external tool does).
    pub max_bytes: u64,
    /// Rotated files kept, `audit.jsonl.1` to `audit.jsonl.<keep>` (default 5); at least 1
    /// is kept whatever is asked, so a rotation never deletes the lines it moves aside.
    pub keep: u32,
    /// Refusals from one source, role and reason within this interval share one line
    /// (default 10 s: a stale connector's burst shows at once and then as one line per
    /// interval; a flood adds a few lines per source per interval).
    pub refusal_interval: Duration,
    /// Sources tracked for coalescing at once (default 4096, like the failure limiter's
    /// table); the least recently seen is written out and forgotten when full.
    pub refusal_sources: usize,
}

impl Default for AuditLimits {
    fn default() -> Self {
        Self {
            max_bytes: 100 * 1024 * 1024,
            keep: 5,
            refusal_interval: Duration::from_secs(10),
            refusal_sources: 4096,
        }
    }
}

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
    /// The client's device or user was removed while the flow was being opened: a flow
    /// sees one revision from its first decision to its audit line, and a device that is
    /// no longer live when the flow would start carrying bytes is refused.
    Revoked,
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
    /// The client's device session (one id across all of the connections that carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
    /// The identity provider the device signed in through (`zt login`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// The sign-in session (one per `zt login`), for devices enrolled through a provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_session: Option<Uuid>,
    /// The service token's name, when the client authenticated with one (`zt token
    /// create`) rather than as a user's device; `device_id` is then the token's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_token: Option<String>,
    /// The edge that served the client and wrote this line (its `--name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<String>,
    /// When the flow was forwarded to a peer edge because that edge held the tunnel's
    /// connector connection: that edge's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_edge: Option<String>,
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
    /// The transport of the connector connection: `quic` or `tcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_transport: Option<String>,
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
            session_id: None,
            idp: None,
            login_session: None,
            service_token: None,
            edge: None,
            connector_edge: None,
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
            connector_transport: None,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// How many refusals this line stands for: 1 for a refusal written at once, more for
    /// the line that sums up the repeats from one source (see the module docs). Lines
    /// written before coalescing existed have no `count` and read as 1.
    #[serde(default = "one")]
    pub count: u64,
    /// When the first of the refusals a summing-up line covers happened (`time` is the
    /// last); absent when `count` is 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
}

fn one() -> u64 {
    1
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
            count: 1,
            since: None,
        }
    }
}

/// One sign-in through an identity provider (`zt login`), accepted or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRecord {
    /// When.
    pub time: Timestamp,
    /// The laptop's address.
    pub source: IpAddr,
    /// The provider's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// `browser`, `device_code` or `logout`.
    pub flow: String,
    /// How the laptop reached the edge: `quic` or `tcp` (TLS over TCP).
    #[serde(default)]
    pub transport: String,
    /// Whether the sign-in enrolled a device (or the logout took effect).
    pub accepted: bool,
    /// The user's verified email, once the ID token was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The provider's subject for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The provider's groups the sign-in gave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The enrolled (or logged-out) device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<Uuid>,
    /// The sign-in session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_session: Option<Uuid>,
    /// Why it was refused, for the operator (the laptop is told the same words unless
    /// they would help an attacker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    /// `{"type":"login", …}`.
    Login(LoginRecord),
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
    /// Rotation failed (renaming `from` to `to`, or opening the new file); the lines go on
    /// into the current file and rotation is tried again later.
    #[error("cannot rotate audit log: renaming {} to {} failed; lines continue in the current file", from.display(), to.display())]
    Rotate {
        /// The file being moved aside (or created, when `from` and `to` are the same).
        from: PathBuf,
        /// Its new name.
        to: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What [`AuditLog::record_auth_refusal`] did with a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalLogged {
    /// Written as its own line (the first from its source, role and reason in the
    /// interval, or the line that sums up the earlier repeats).
    Written,
    /// Counted; a later line will stand for it.
    Coalesced,
}

/// The borrowed twin of [`AuditEvent`], so writing a line copies nothing.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventRef<'a> {
    Flow(&'a FlowRecord),
    AuthRefusal(&'a AuthRefusal),
    Login(&'a LoginRecord),
}

struct AuditFiles {
    out: BufWriter<File>,
    /// Bytes in the current file, buffered ones included.
    written: u64,
    /// Device and inode of the current file, to notice an external rotation.
    ident: (u64, u64),
    /// A file found at the path that was refused (readable by all), so the refusal is
    /// reported once, not at every flush.
    refused_ident: Option<(u64, u64)>,
    last_flush: Instant,
    /// After a failed rotation, when to try again.
    retry_rotate: Option<Instant>,
}

/// The refusals from one source, role and reason in the current interval.
struct Run {
    /// When the current interval started (its first line was written).
    window_start: Instant,
    last_seen: Instant,
    /// Refusals counted since the last line, and the last of them.
    pending: u64,
    first_pending: Option<Timestamp>,
    last: AuthRefusal,
}

type RunKey = (IpAddr, PeerRole, String);

/// A writer of audit lines, safe to share between tasks.
pub struct AuditLog {
    path: PathBuf,
    limits: AuditLimits,
    inner: Mutex<AuditFiles>,
    /// Taken before `inner` when both are needed, never after.
    runs: Mutex<HashMap<RunKey, Run>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("limits", &self.limits)
            .finish()
    }
}

/// The address block a source's refusals are coalesced under: the host for IPv4, the /64
/// for IPv6 (one IPv6 host usually owns a whole /64).
pub(crate) fn block_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(fsutil::FILE_MODE)
        .open(path)
}

fn ident_of(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

impl AuditLog {
    /// Opens `path` for appending with the default [`AuditLimits`], creating it with mode
    /// 0600. An existing file readable by all users is refused (group access is allowed,
    /// for log shippers).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        Self::open_with_limits(path, AuditLimits::default())
    }

    /// Like [`AuditLog::open`], with the given size and coalescing limits.
    pub fn open_with_limits(
        path: impl AsRef<Path>,
        limits: AuditLimits,
    ) -> Result<Self, AuditError> {
        let path = path.as_ref().to_path_buf();
        let open_error = |source| AuditError::Open {
            path: path.clone(),
            source,
        };
        let file = open_append(&path).map_err(open_error)?;
        let mode = fsutil::loose_mode(&path).map_err(open_error)?;
        if let Some(mode) = mode.filter(|m| m & 0o007 != 0) {
            return Err(AuditError::Permissions { path, mode });
        }
        let meta = file.metadata().map_err(open_error)?;
        Ok(Self {
            limits,
            inner: Mutex::new(AuditFiles {
                written: meta.len(),
                ident: ident_of(&meta),
                refused_ident: None,
                out: BufWriter::with_capacity(AUDIT_BUFFER_BYTES, file),
                last_flush: Instant::now(),
                retry_rotate: None,
            }),
            runs: Mutex::new(HashMap::new()),
            path,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The limits the log was opened with.
    pub fn limits(&self) -> AuditLimits {
        self.limits
    }

    /// The name of the `n`th rotated file: `audit.jsonl.1` is the most recent.
    pub fn rotated_path(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Records a finished flow.
    pub fn record_flow(&self, record: &FlowRecord) -> Result<(), AuditError> {
        self.write_event(&EventRef::Flow(record), false)
    }

    /// Records a sign-in or logout, flushed at once. Refused sign-ins count against the
    /// source's budget before they get here, so they cannot flood the log.
    pub fn record_login(&self, record: &LoginRecord) -> Result<(), AuditError> {
        self.write_event(&EventRef::Login(record), true)
    }

    /// Records a refused authentication: written (and flushed) at once when it is the first
    /// from its source, role and reason in the interval, else counted for a later line
    /// (see the module docs).
    pub fn record_auth_refusal(&self, record: &AuthRefusal) -> Result<RefusalLogged, AuditError> {
        let record = bounded(record);
        let count = record.count.max(1);
        let now = Instant::now();
        let key = (block_of(record.source), record.role, record.reason.clone());
        let mut evicted = None;
        let line = {
            let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
            match runs.get_mut(&key) {
                Some(run)
                    if now.duration_since(run.window_start) < self.limits.refusal_interval =>
                {
                    run.first_pending
                        .get_or_insert(record.since.unwrap_or(record.time));
                    run.pending += count;
                    run.last_seen = now;
                    run.last = record;
                    None
                }
                Some(run) => {
                    // The interval has passed: one line for the repeats and this one.
                    let mut line = record.clone();
                    line.count = run.pending + count;
                    line.since = run.first_pending.take().or(record.since);
                    run.pending = 0;
                    run.window_start = now;
                    run.last_seen = now;
                    run.last = record;
                    Some(line)
                }
                None => {
                    if runs.len() >= self.limits.refusal_sources.max(1) {
                        evicted = Self::evict_oldest(&mut runs);
                    }
                    runs.insert(
                        key,
                        Run {
                            window_start: now,
                            last_seen: now,
                            pending: 0,
                            first_pending: None,
                            last: record.clone(),
                        },
                    );
                    Some(record)
                }
            }
        };
        let mut lines: Vec<AuthRefusal> = evicted.into_iter().collect();
        let written = line.is_some();
        lines.extend(line);
        self.write_refusals(&lines)?;
        Ok(if written {
            RefusalLogged::Written
        } else {
            RefusalLogged::Coalesced
        })
    }

    /// Records a refused authentication as its own line, flushed at once, without
    /// coalescing: for refusals the caller already bounds (the edge uses it for failures
    /// within the source's failure budget, at most a burst plus a trickle per source).
    pub fn record_auth_refusal_at_once(&self, record: &AuthRefusal) -> Result<(), AuditError> {
        self.write_event(&EventRef::AuthRefusal(&bounded(record)), true)
    }

    /// Forgets the least recently seen run, returning the line its pending refusals need.
    fn evict_oldest(runs: &mut HashMap<RunKey, Run>) -> Option<AuthRefusal> {
        // A scan of a few thousand entries, only while the table is full of refusing
        // sources.
        let oldest = runs
            .iter()
            .min_by_key(|(_, r)| r.last_seen)
            .map(|(k, _)| k.clone())?;
        let run = runs.remove(&oldest)?;
        Self::summary(run)
    }

    fn summary(run: Run) -> Option<AuthRefusal> {
        (run.pending > 0).then(|| {
            let mut line = run.last;
            line.count = run.pending;
            line.since = run.first_pending.filter(|_| run.pending > 1);
            line
        })
    }

    fn write_refusals(&self, lines: &[AuthRefusal]) -> Result<(), AuditError> {
        let mut result = Ok(());
        for (i, line) in lines.iter().enumerate() {
            let last = i + 1 == lines.len();
            if let Err(e) = self.write_event(&EventRef::AuthRefusal(line), last) {
                // Keep writing the others; report the first failure.
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// Writes the refusal lines whose interval has passed, notices an external rotation,
    /// and writes buffered lines to the file. Returns how many refusals the written
    /// summing-up lines stand for (for logging).
    pub fn flush(&self) -> Result<u64, AuditError> {
        let now = Instant::now();
        let due: Vec<AuthRefusal> = {
            let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
            let interval = self.limits.refusal_interval;
            let mut due = Vec::new();
            runs.retain(|_, run| {
                if now.duration_since(run.window_start) < interval {
                    return true;
                }
                if run.pending == 0 {
                    // Quiet for a whole interval: the next refusal is a first again.
                    return false;
                }
                let mut line = run.last.clone();
                line.count = run.pending;
                line.since = run.first_pending.take().filter(|_| run.pending > 1);
                run.pending = 0;
                run.window_start = now;
                due.push(line);
                true
            });
            due
        };
        let summed = due.iter().map(|l| l.count).sum();
        let written = self.write_refusals(&due);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.last_flush = Instant::now();
        inner
            .out
            .flush()
            .map_err(|source| self.write_error(source))?;
        self.reopen_if_moved(&mut inner)?;
        written.map(|()| summed)
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
        let len = line.len() as u64;
        let mut rotation = Ok(());
        let max = self.limits.max_bytes;
        if max > 0
            && inner.written > 0
            && inner.written.saturating_add(len) > max
            && inner.retry_rotate.is_none_or(|t| Instant::now() >= t)
        {
            rotation = self.rotate(&mut inner, len);
            inner.retry_rotate = rotation.is_err().then(|| Instant::now() + ROTATE_RETRY);
        }
        inner
            .out
            .write_all(&line)
            .map_err(|source| self.write_error(source))?;
        inner.written = inner.written.saturating_add(len);
        if flush_now || inner.last_flush.elapsed() >= AUDIT_FLUSH_INTERVAL {
            inner.last_flush = Instant::now();
            inner
                .out
                .flush()
                .map_err(|source| self.write_error(source))?;
        }
        rotation
    }

    /// Moves the current file aside as `.1` (shifting the older ones) and starts a new one,
    /// unless the file turns out smaller than counted (an external `copytruncate`) or was
    /// already moved away by an external tool (then the path is simply reopened).
    fn rotate(&self, inner: &mut AuditFiles, next_line: u64) -> Result<(), AuditError> {
        inner
            .out
            .flush()
            .map_err(|source| self.write_error(source))?;
        let meta = inner
            .out
            .get_ref()
            .metadata()
            .map_err(|source| self.write_error(source))?;
        inner.written = meta.len();
        if meta.len().saturating_add(next_line) <= self.limits.max_bytes {
            return Ok(());
        }
        match std::fs::metadata(&self.path) {
            Ok(m) if ident_of(&m) == inner.ident => {}
            // Someone else rotated it: write to the file now at the path.
            _ => return self.reopen_if_moved(inner),
        }
        let rotate_error =
            |from: PathBuf, to: PathBuf| move |source| AuditError::Rotate { from, to, source };
        let keep = self.limits.keep.max(1);
        for n in (1..keep).rev() {
            let (from, to) = (self.rotated_path(n), self.rotated_path(n + 1));
            match std::fs::rename(&from, &to) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(rotate_error(from, to)(e))
                }
                _ => {}
            }
        }
        let first = self.rotated_path(1);
        std::fs::rename(&self.path, &first)
            .map_err(rotate_error(self.path.clone(), first.clone()))?;
        // From here the current file is `.1`; until the new one opens, lines still go there.
        let file = open_append(&self.path).map_err(rotate_error(first, self.path.clone()))?;
        let meta = file
            .metadata()
            .map_err(rotate_error(self.path.clone(), self.path.clone()))?;
        inner.ident = ident_of(&meta);
        inner.written = meta.len();
        inner.out = BufWriter::with_capacity(AUDIT_BUFFER_BYTES, file);
        Ok(())
    }

    /// When the path no longer names the file being written (an external rotation moved
    /// it), writes to the file at the path from now on, creating it 0600 when missing.
    /// A file there readable by all users is refused (reported once) and the current
    /// file kept.
    fn reopen_if_moved(&self, inner: &mut AuditFiles) -> Result<(), AuditError> {
        match std::fs::metadata(&self.path) {
            Ok(m) if ident_of(&m) == inner.ident => return Ok(()),
            Ok(m) if m.mode() & 0o007 != 0 => {
                if inner.refused_ident.replace(ident_of(&m)) == Some(ident_of(&m)) {
                    return Ok(());
                }
                return Err(AuditError::Permissions {
                    path: self.path.clone(),
                    mode: m.mode() & 0o777,
                });
            }
            _ => {}
        }
        inner
            .out
            .flush()
            .map_err(|source| self.write_error(source))?;
        let open_error = |source| AuditError::Open {
            path: self.path.clone(),
            source,
        };
        let file = open_append(&self.path).map_err(open_error)?;
        let meta = file.metadata().map_err(open_error)?;
        inner.ident = ident_of(&meta);
        inner.written = meta.len();
        inner.out = BufWriter::with_capacity(AUDIT_BUFFER_BYTES, file);
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
        // Refusals still counted get their line: none goes uncounted.
        let runs = std::mem::take(self.runs.get_mut().unwrap_or_else(PoisonError::into_inner));
        let pending: Vec<AuthRefusal> = runs.into_values().filter_map(Self::summary).collect();
        if let Err(e) = self.write_refusals(&pending) {
            tracing::warn!(path = %self.path.display(), error = %e, "audit log refusal counts lost at close");
        }
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = inner.out.flush() {
            tracing::warn!(path = %self.path.display(), error = %e, "audit log lines lost at close");
        }
    }
}

/// `record` with its peer-supplied text cut to size.
fn bounded(record: &AuthRefusal) -> AuthRefusal {
    let mut record = record.clone();
    if let Some(id) = &record.claimed_id {
        if id.len() > MAX_CLAIMED_ID_LEN {
            record.claimed_id = Some(truncate_utf8(id, MAX_CLAIMED_ID_LEN).to_owned());
        }
    }
    record
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
