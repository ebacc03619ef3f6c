//! The edge runtime's configuration, with the reason for each default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use zt_policy::DefaultAction;
use zt_proto::TransportSettings;

use crate::{AuditLimits, ServerNames};

/// The UDP port connectors and clients reach the edge on (cloudflared's QUIC port).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7844";

/// The admin API's default address: loopback only.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:7845";

/// Where the edge keeps its state when not told otherwise: `$ZT_EDGE_STATE_DIR`, else
/// `/var/lib/zt/edge` for root, else `$XDG_STATE_HOME/zt/edge`, else
/// `~/.local/state/zt/edge`, else `./zt-edge-state`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ZT_EDGE_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if is_root() {
        return PathBuf::from("/var/lib/zt/edge");
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("zt").join("edge");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/zt/edge");
    }
    PathBuf::from("zt-edge-state")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the effective user; no unsafe call to geteuid needed.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// How many bytes of a flow the http phase reads, and for how long, to find the TLS SNI
/// or the HTTP Host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FirstBytes {
    /// Most bytes read (default 16 KiB: a TLS ClientHello with post-quantum key shares
    /// is under 2 KiB, HTTP request heads rarely pass 8 KiB).
    pub max_bytes: usize,
    /// Longest wait (default 300 ms): a server-speaks-first protocol sends nothing, so
    /// this is the delay such a flow pays when no `off` rule exempts it.
    pub timeout: Duration,
}

impl Default for FirstBytes {
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024,
            timeout: Duration::from_millis(300),
        }
    }
}

/// Rate limit of failed authentications per source address (a /32, or a /64 for IPv6):
/// a token bucket of `burst` failures refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct AuthRateLimit {
    /// Failures allowed at once (default 10: a connector with a stale secret and four HA
    /// connections retrying twice stays under it).
    pub burst: u32,
    /// Failures forgiven per minute (default 6).
    pub per_minute: f64,
    /// Addresses tracked at once (default 4096, about 200 KiB); the least recently seen
    /// is forgotten when full, so memory stays bounded under a spoofed-source flood.
    pub table_size: usize,
}

impl Default for AuthRateLimit {
    fn default() -> Self {
        Self {
            burst: 10,
            per_minute: 6.0,
            table_size: 4096,
        }
    }
}

/// Everything [`Edge::start`](crate::Edge::start) needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EdgeConfig {
    /// QUIC listen address for connectors and clients (default [`DEFAULT_LISTEN`]).
    pub listen: SocketAddr,
    /// Admin API address (default [`DEFAULT_ADMIN`]); `None` serves no admin API.
    pub admin: Option<SocketAddr>,
    /// Addresses (`host:port`) clients reach this edge at, for the device credentials the
    /// admin API writes; empty means the listen address when it is not a wildcard.
    pub advertise: Vec<String>,
    /// Metrics and readiness address; `None` serves none.
    pub metrics: Option<SocketAddr>,
    /// The state directory (default [`default_state_dir`]).
    pub state_dir: PathBuf,
    /// Names for the server certificate; `None` keeps the current certificate.
    pub server_names: Option<ServerNames>,
    /// The edge's name, reported to peers at registration (default: the host name).
    pub edge_name: String,
    /// QUIC tuning. Its `open_timeout` and `header_timeout` are overridden by the fields
    /// below.
    pub transport: TransportSettings,
    /// How long a flow open to a connector may go unanswered before it is retried on
    /// another connection (default 1 s: longer than any sane RTT plus an origin dial).
    pub open_timeout: Duration,
    /// How long a client's flow header may take to arrive (default 5 s).
    pub header_timeout: Duration,
    /// How long a flow for a tunnel with no live connector waits for one to register
    /// before it is refused with `no live connector` (default 2 s: after an edge restart
    /// clients reconnect first, and connectors follow within a second or two).
    pub connector_wait: Duration,
    /// Longest client session; older sessions are sent go-away so the client
    /// re-authenticates (default none).
    pub max_session_lifetime: Option<Duration>,
    /// How long a session told to go away keeps its open flows before it is closed
    /// (default 10 s).
    pub session_drain: Duration,
    /// The http phase's bounded read.
    pub first_bytes: FirstBytes,
    /// The l4 action when no rule matches (default block: zero trust).
    pub l4_default: DefaultAction,
    /// Failed authentications per source address.
    pub auth_rate_limit: AuthRateLimit,
    /// Concurrent flows per client session (default 4096); more get `too many flows`.
    pub max_flows_per_session: usize,
    /// How long shutdown waits for in-flight flows after go-away (default 10 s).
    pub shutdown_grace: Duration,
    /// The audit log file (default `audit.jsonl` in the state directory).
    pub audit_path: Option<PathBuf>,
    /// The audit log's rotation size, rotated files kept and refusal coalescing (defaults:
    /// 100 MiB, 5 files, one line per source and reason per 10 s).
    pub audit_limits: AuditLimits,
    /// Offer ALPN `argotunnel` on the QUIC port so unmodified cloudflared connectors can
    /// connect (default true). Only tunnels that opted in accept them; see
    /// docs/CLOUDFLARED.md.
    pub cloudflared: bool,
    /// The state backend; `None` is the redb file in the state directory. The state
    /// directory keeps the CA, certificates and admin token either way.
    pub store: Option<std::sync::Arc<dyn crate::store::Store>>,
    /// Serve zt/1 over TLS on TCP on the QUIC listen address's port number too, for
    /// networks that drop UDP (default true).
    pub tcp_on_listen_port: bool,
    /// More TCP listen addresses for zt/1 over TLS (say `0.0.0.0:443`); default none.
    pub tcp_listen: Vec<SocketAddr>,
    /// Concurrent TCP connections over all TCP listeners, registered or not (default
    /// 10,000); more are closed at once. Each holds a socket, TLS state and HTTP/2 windows.
    pub max_tcp_connections: usize,
    /// The key file sealing the secrets the edge keeps in its records (identity providers'
    /// refresh tokens; on PostgreSQL every proof key too): 32 random bytes, mode 0600,
    /// created on first start. Default: `secrets.key` in the state directory. Every edge
    /// sharing one database needs the same file.
    pub secrets_key_file: Option<PathBuf>,
    /// The peering listener (QUIC, mutual TLS from the organisation's CA) other edges
    /// forward flows to; `None` (the default) takes no forwarded flows. Only edges on a
    /// shared store have peers.
    pub peer_listen: Option<SocketAddr>,
    /// The address other edges dial for peering, when it is not the listen address (NAT, a
    /// wildcard listen address). Default: the bound listen address.
    pub peer_advertise: Option<SocketAddr>,
}

impl EdgeConfig {
    /// The defaults, with state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7844)),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 7845))),
            advertise: Vec::new(),
            metrics: None,
            state_dir: state_dir.into(),
            server_names: None,
            edge_name: default_edge_name(),
            transport: TransportSettings::default(),
            open_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(5),
            connector_wait: Duration::from_secs(2),
            max_session_lifetime: None,
            session_drain: Duration::from_secs(10),
            first_bytes: FirstBytes::default(),
            l4_default: DefaultAction::Block,
            auth_rate_limit: AuthRateLimit::default(),
            max_flows_per_session: 4096,
            shutdown_grace: Duration::from_secs(10),
            audit_path: None,
            audit_limits: AuditLimits::default(),
            cloudflared: true,
            store: None,
            tcp_on_listen_port: true,
            tcp_listen: Vec::new(),
            max_tcp_connections: 10_000,
            secrets_key_file: None,
            peer_listen: None,
            peer_advertise: None,
        }
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self::new(default_state_dir())
    }
}

fn default_edge_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 255)
        .unwrap_or_else(|| "zt-edge".to_owned())
}
