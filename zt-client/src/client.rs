//! The client's connections to the edge and the flows it opens.
//!
//! The client holds a [`ConnectionSet`] of registered connections, one per slot
//! ([`ClientOptions::connections`], default 1). Each slot has a supervisor task that owns
//! its connection: it forwards route pushes, re-evaluates posture, and when the connection
//! is lost or the edge sends go-away it takes the connection out of the set and connects
//! again (at once after go-away, with capped full-jitter backoff after a loss). Slot `i`
//! starts at the `i`-th listed edge, so several edges share the slots. A go-away'd
//! connection stays open for its drain time so flows already on it finish.
//!
//! A new flow goes to the member with the fewest flows in flight and stays on it (the
//! stream holds its [`Pinned`] member); a dial that finds no member waits for one, up to
//! [`ClientOptions::connection_wait`]. Every connection of one client registers with the
//! same device session id (feature `session=<uuid>`), so the edge counts the flow cap,
//! session age and posture of the session across all of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};
use zt_creds::DeviceCredentials;
use zt_proto::{
    Backoff, ClientClaim, ClientConnection, ClientRegistration, CloseCode, ConnectionSet,
    EdgeTrust, FlowError, MemberReport, OpenError, PeerEndpoint, PeerEvent, Pinned, Placement,
    PostureReport, Protocol, RetryAdvice, RoutePush, TcpDialer, TransportSettings, UdpFlow,
};

use crate::backoff::RECONNECT_BACKOFF;
use crate::error::{ConnectError, DialError};
use crate::posture::{evaluate, PostureSpec};
use crate::stream::ClientStream;
use crate::transport::{EdgeProtocol, HttpProxy, QUIC_HEAD_START};

/// How a [`Client`] connects. `Default` gives the documented values.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The virtual network to use; `None` takes the credentials' default (and the edge's
    /// default network when that is absent too).
    pub vnet: Option<String>,
    /// Local posture checks, evaluated at each connect and every `posture_interval`.
    pub posture: Vec<PostureSpec>,
    /// How often posture is re-evaluated; a changed result is reported (default 60 s).
    pub posture_interval: Duration,
    /// Time bound for one posture check (default 5 s).
    pub posture_check_timeout: Duration,
    /// QUIC and protocol settings. The default differs from the protocol's in one way:
    /// `open_timeout` is 15 s, because the edge answers a client's open only after a
    /// connector dialled the destination (its connect timeout, plus one retry on another
    /// connector).
    pub transport: TransportSettings,
    /// Edge addresses (`host:port`) to use instead of the credentials' list.
    pub edges: Option<Vec<String>>,
    /// How to trust the edge instead of the credentials' CA fingerprint (say, a CA file).
    pub trust: Option<EdgeTrust>,
    /// How long a dial waits for a connection to the edge when there is none, for
    /// example while reconnecting (default 10 s).
    pub connection_wait: Duration,
    /// The software version reported to the edge.
    pub software_version: String,
    /// How many connections to the edge the client keeps at once (default 1; 1 to
    /// [`MAX_CONNECTIONS`]). Slot `i` starts at the `i`-th listed edge; new flows go to the
    /// least loaded connection.
    pub connections: usize,
    /// Which transport reaches the edge (default [`EdgeProtocol::Auto`]: QUIC, with TLS
    /// over TCP raced in after [`crate::QUIC_HEAD_START`]).
    pub protocol: EdgeProtocol,
    /// An HTTP `CONNECT` proxy for the TCP transport (`HTTPS_PROXY`); QUIC never uses it.
    pub proxy: Option<HttpProxy>,
    /// How often a connection that came up over TCP under `auto` tries QUIC again; new
    /// flows move to QUIC once it registers (default 15 s).
    pub quic_probe_interval: Duration,
}

/// The most connections one client keeps ([`ClientOptions::connections`]).
pub const MAX_CONNECTIONS: usize = 16;

impl Default for ClientOptions {
    fn default() -> Self {
        let mut transport = TransportSettings::default();
        transport.open_timeout = Duration::from_secs(15);
        Self {
            vnet: None,
            posture: Vec::new(),
            posture_interval: Duration::from_secs(60),
            posture_check_timeout: Duration::from_secs(5),
            transport,
            edges: None,
            trust: None,
            connection_wait: Duration::from_secs(10),
            software_version: concat!("zt-client ", env!("CARGO_PKG_VERSION")).to_owned(),
            connections: 1,
            protocol: EdgeProtocol::Auto,
            proxy: None,
            quic_probe_interval: Duration::from_secs(15),
        }
    }
}

/// Whether the client has a connection to the edge now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Registered with an edge.
    Connected {
        /// The address dialled, as configured.
        edge: String,
        /// The name the edge gave itself.
        edge_name: String,
    },
    /// Reconnecting; `last_error` says why the last connection or attempt failed.
    Connecting {
        /// The last failure, in words.
        last_error: String,
    },
    /// [`Client::shutdown`] was called.
    Shutdown,
}

/// One registered connection and the endpoint that carries it.
struct EdgeConnection {
    edge: String,
    /// The edge address dialled (QUIC probes go there again).
    addr: SocketAddr,
    conn: ClientConnection,
    /// The QUIC endpoint; `None` over TCP.
    endpoint: Option<PeerEndpoint>,
    /// The posture reported when the connection registered.
    posture: Option<PostureReport>,
}

impl Drop for EdgeConnection {
    fn drop(&mut self) {
        self.conn.close(CloseCode::NO_ERROR, "client closed");
        if let Some(ep) = &self.endpoint {
            ep.close(CloseCode::NO_ERROR, "client closed");
        }
    }
}

/// A member of the client's set.
type Member = Pinned<Arc<EdgeConnection>>;

/// Whether the client runs, and the last failure of any slot.
#[derive(Clone)]
enum Status {
    Running { last_error: Arc<str> },
    Shutdown,
}

struct ClientShared {
    set: ConnectionSet<Arc<EdgeConnection>>,
    status: watch::Sender<Status>,
    routes: watch::Sender<Option<RoutePush>>,
    /// The newest route generation seen on any connection.
    route_generation: Mutex<Option<u64>>,
    vnet: String,
    connection_wait: Duration,
}

impl ClientShared {
    /// A dial saw `member` fail: stop handing it out (its supervisor sees the loss too and
    /// reconnects).
    fn mark_lost(&self, member: &Member, why: &str) {
        if self.set.remove(member.id()) {
            self.note_error(why);
        }
    }

    fn note_error(&self, why: &str) {
        self.status.send_if_modified(|s| match s {
            Status::Running { last_error } => {
                *last_error = why.into();
                true
            }
            Status::Shutdown => false,
        });
    }

    fn is_shutdown(&self) -> bool {
        matches!(*self.status.borrow(), Status::Shutdown)
    }

    /// Publishes a route push unless a newer generation was already seen.
    fn routes_pushed(&self, push: RoutePush) {
        let mut seen = self
            .route_generation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.is_some_and(|g| push.generation < g) {
            debug!(generation = push.generation, "ignoring a stale route push");
            return;
        }
        if *seen == Some(push.generation) && self.routes.borrow().as_ref() == Some(&push) {
            return;
        }
        *seen = Some(push.generation);
        info!(
            generation = push.generation,
            vnet = %push.vnet,
            routes = push.routes.len(),
            "routes pushed by the edge"
        );
        self.routes.send_replace(Some(push));
    }
}

/// The client runtime: a self-healing set of authenticated connections to the edge, and the
/// flows opened over them.
///
/// Dropping it (or [`Client::shutdown`]) closes the connections; open flows end.
pub struct Client {
    inner: Arc<ClientShared>,
    supervisors: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("vnet", &self.inner.vnet)
            .field("state", &self.state())
            .finish()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the supervisor needs to connect again: never the device secret itself, only the
/// key derived from it.
struct Dialer {
    device_id: uuid::Uuid,
    key: zt_proto::ProofKey,
    vnet: String,
    /// The edges the credentials (or options) name.
    edges: Vec<String>,
    /// The edges the edges pushed (`edge_list`) and its generation: more places to move
    /// to when every configured edge is lost.
    learned: zt_proto::LearnedEdges<String>,
    trust: EdgeTrust,
    transport: TransportSettings,
    software_version: String,
    posture: Vec<PostureSpec>,
    posture_check_timeout: Duration,
    /// The device session every connection of this client joins.
    session_id: uuid::Uuid,
    protocol: EdgeProtocol,
    /// The TCP transport's dialer (`None` if its TLS configuration was refused).
    tcp: Option<TcpDialer>,
    proxy: Option<HttpProxy>,
    quic_probe_interval: Duration,
}

/// Why one round of connection attempts failed.
enum AttemptError {
    /// The edge refused the device and said retrying cannot help.
    Fatal { edge: String, message: String },
    /// Everything else: try again later.
    Retry { tried: usize, last: String },
}

impl AttemptError {
    fn describe(&self) -> String {
        match self {
            Self::Fatal { edge, message } => {
                format!("the edge at {edge} refused this device: {message}")
            }
            Self::Retry { last, .. } => last.clone(),
        }
    }
}

/// The TLS server name in `host:port` (`[v6]:port` too): the host, which for an address
/// literal the edge's certificate carries as an IP name.
fn server_name(edge: &str) -> Option<&str> {
    let (host, port) = edge.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

impl Dialer {
    /// Tries each edge address once, starting at `start` (so successive rounds begin at
    /// different edges).
    async fn connect_once(&self, start: usize) -> Result<EdgeConnection, AttemptError> {
        let mut last = String::from("no edge address could be resolved");
        let mut tried = 0;
        // The configured edges first, from `start`; the edges learned from pushes only
        // after them (a path the credentials name is preferred to one an edge told of).
        let n = self.edges.len();
        let learned: Vec<String> = self.candidates().split_off(n);
        let order = self.edges.iter().cycle().skip(start % n.max(1)).take(n);
        for edge in order.chain(learned.iter()) {
            let Some(name) = server_name(edge) else {
                last = format!("edge address {edge:?} is not host:port");
                continue;
            };
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(edge.as_str()).await {
                Ok(a) => a.collect(),
                Err(e) => {
                    last = format!("cannot resolve edge {edge}: {e}");
                    continue;
                }
            };
            for addr in addrs {
                tried += 1;
                match self.connect_addr(edge, name, addr).await {
                    Ok(s) => return Ok(s),
                    Err(AttemptError::Fatal { edge, message }) => {
                        return Err(AttemptError::Fatal { edge, message })
                    }
                    Err(AttemptError::Retry { last: why, .. }) => {
                        debug!(%edge, %addr, error = %why, "edge connection attempt failed");
                        last = format!("{edge} ({addr}): {why}");
                    }
                }
            }
        }
        Err(AttemptError::Retry { tried, last })
    }

    /// The configured edges, then those the edges pushed.
    fn candidates(&self) -> Vec<String> {
        self.learned.candidates(&self.edges)
    }

    /// Takes in an edge list an edge pushed (an address that is not `host:port` is skipped).
    fn learn_edges(&self, list: zt_proto::EdgeList) {
        let parse = |e: &str| server_name(e).map(|_| e.to_owned());
        if let Some(edges) = self.learned.learn(&list, parse) {
            debug!(?edges, "the edge told of its peers");
        }
    }

    fn registration(&self) -> ClientRegistration {
        ClientRegistration {
            claim: ClientClaim {
                device_id: self.device_id,
                vnet: self.vnet.clone(),
            },
            software_version: self.software_version.clone(),
            features: vec![
                "half-close".into(),
                zt_proto::EDGE_LIST_FEATURE.into(),
                format!("{}{}", zt_proto::SESSION_FEATURE_PREFIX, self.session_id),
            ],
        }
    }

    async fn register_quic(
        &self,
        name: &str,
        addr: SocketAddr,
    ) -> Result<(ClientConnection, Option<PeerEndpoint>), zt_proto::ConnectError> {
        let bind: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        // An endpoint per connection: its socket matches the edge's address family, and a
        // connection draining after go-away keeps its own socket until it is done.
        let endpoint =
            PeerEndpoint::bind(bind, &self.trust, self.transport.clone()).map_err(|e| {
                zt_proto::ConnectError::TcpConnect {
                    addr,
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
        let conn = endpoint
            .connect_client(addr, name, self.registration(), &self.key)
            .await?;
        Ok((conn, Some(endpoint)))
    }

    async fn register_tcp(
        &self,
        name: &str,
        addr: SocketAddr,
    ) -> Result<(ClientConnection, Option<PeerEndpoint>), zt_proto::ConnectError> {
        let Some(tcp) = &self.tcp else {
            return Err(zt_proto::ConnectError::TcpConnect {
                addr,
                source: std::io::Error::other("the TCP transport's TLS configuration was refused"),
            });
        };
        let over = match &self.proxy {
            Some(p) => Some(
                p.connect(addr)
                    .await
                    .map_err(|source| zt_proto::ConnectError::TcpConnect { addr, source })?,
            ),
            None => None,
        };
        let conn = tcp
            .connect_client(addr, name, over, self.registration(), &self.key)
            .await?;
        Ok((conn, None))
    }

    /// QUIC and TCP raced as [`EdgeProtocol::Auto`] says: QUIC first, TCP after the head
    /// start or at once when QUIC fails; an authenticated refusal from either is final.
    async fn register_auto(
        &self,
        name: &str,
        addr: SocketAddr,
    ) -> Result<(ClientConnection, Option<PeerEndpoint>), zt_proto::ConnectError> {
        let quic = self.register_quic(name, addr);
        let tcp = self.register_tcp(name, addr);
        tokio::pin!(quic, tcp);
        let head = tokio::time::sleep(QUIC_HEAD_START);
        tokio::pin!(head);
        let mut tcp_started = false;
        let mut quic_err = None;
        let mut tcp_err = None;
        loop {
            tokio::select! {
                r = &mut quic, if quic_err.is_none() => match r {
                    Ok(c) => return Ok(c),
                    Err(e @ zt_proto::ConnectError::Refused(_)) => return Err(e),
                    Err(e) => {
                        debug!(%addr, error = %e, "QUIC attempt failed; TCP now");
                        tcp_started = true;
                        quic_err = Some(e);
                    }
                },
                () = &mut head, if !tcp_started => tcp_started = true,
                r = &mut tcp, if tcp_started && tcp_err.is_none() => match r {
                    Ok(c) => return Ok(c),
                    Err(e @ zt_proto::ConnectError::Refused(_)) => return Err(e),
                    Err(e) => tcp_err = Some(e),
                },
            }
            if let (Some(_), Some(t)) = (&quic_err, &tcp_err) {
                let q = quic_err.take().map(|e| e.to_string()).unwrap_or_default();
                return Err(zt_proto::ConnectError::TcpConnect {
                    addr,
                    source: std::io::Error::other(format!("QUIC: {q}; TCP: {t}")),
                });
            }
        }
    }

    async fn connect_addr(
        &self,
        edge: &str,
        name: &str,
        addr: SocketAddr,
    ) -> Result<EdgeConnection, AttemptError> {
        let retry = |last: String| AttemptError::Retry { tried: 1, last };
        let attempt = match self.protocol {
            EdgeProtocol::Quic => self.register_quic(name, addr).await,
            EdgeProtocol::Tcp => self.register_tcp(name, addr).await,
            _ => self.register_auto(name, addr).await,
        };
        let (conn, endpoint) = match attempt {
            Ok(c) => c,
            Err(zt_proto::ConnectError::Refused(r)) if r.retry == RetryAdvice::Never => {
                // The edge says the same words for every refusal; what to do next depends
                // on how this device got its credentials.
                let next = match &self.key {
                    zt_proto::ProofKey::Device(_) => {
                        "the sign-in may have ended or been revoked: run `zt login` to sign in again"
                    }
                    _ => "the credentials may have expired or been revoked: ask an administrator for new ones",
                };
                return Err(AttemptError::Fatal {
                    edge: edge.to_owned(),
                    message: format!("{} ({next})", r.message),
                });
            }
            Err(e) => return Err(retry(e.to_string())),
        };
        self.finish_connection(edge, addr, conn, endpoint).await
    }

    async fn finish_connection(
        &self,
        edge: &str,
        addr: SocketAddr,
        conn: ClientConnection,
        endpoint: Option<PeerEndpoint>,
    ) -> Result<EdgeConnection, AttemptError> {
        // Posture goes out before any flow, so the edge decides the first flow with it.
        let mut posture = None;
        if !self.posture.is_empty() {
            let report = evaluate(&self.posture, self.posture_check_timeout).await;
            match conn.report_posture(report.clone()).await {
                Ok(()) => posture = Some(report),
                Err(e) => debug!(error = %e, "posture report not sent"),
            }
        }
        Ok(EdgeConnection {
            edge: edge.to_owned(),
            addr,
            conn,
            endpoint,
            posture,
        })
    }

    /// One QUIC attempt to the edge a TCP connection reached, for `auto`'s way back.
    async fn probe_quic(&self, over_tcp: &EdgeConnection) -> Option<EdgeConnection> {
        let name = server_name(&over_tcp.edge)?;
        match self.register_quic(name, over_tcp.addr).await {
            Ok((conn, endpoint)) => self
                .finish_connection(&over_tcp.edge, over_tcp.addr, conn, endpoint)
                .await
                .ok(),
            Err(e) => {
                debug!(edge = %over_tcp.edge, error = %e, "QUIC still unavailable; staying on TCP");
                None
            }
        }
    }
}

/// How a session ended, as the supervisor saw it.
enum SessionEnd {
    Shutdown,
    /// QUIC works again: new flows go to this connection, the TCP one keeps its flows.
    Moved(Box<EdgeConnection>),
    GoAway(Duration, String),
    Lost(String),
}

impl Client {
    /// Connects to the edge with `credentials`: tries each edge address in turn and returns
    /// once one registered. From then on the client keeps its connections up by itself
    /// (the other slots of [`ClientOptions::connections`] connect in the background).
    ///
    /// Must be called inside a tokio runtime.
    pub async fn connect(
        credentials: &DeviceCredentials,
        options: ClientOptions,
    ) -> Result<Self, ConnectError> {
        let edges = options
            .edges
            .clone()
            .unwrap_or_else(|| credentials.edge.clone());
        if edges.is_empty() {
            return Err(ConnectError::NoEdge);
        }
        if let Some(bad) = edges.iter().find(|e| server_name(e).is_none()) {
            return Err(ConnectError::BadEdgeAddress { addr: bad.clone() });
        }
        let vnet = match &options.vnet {
            Some(v) => v.clone(),
            None => credentials
                .default_vnet
                .map(|v| v.hyphenated().to_string())
                .unwrap_or_default(),
        };
        if vnet.len() > zt_proto::MAX_KEY_LEN {
            return Err(ConnectError::BadVnet { vnet });
        }
        if !(1..=MAX_CONNECTIONS).contains(&options.connections) {
            return Err(ConnectError::BadConnections {
                asked: options.connections,
                max: MAX_CONNECTIONS,
            });
        }
        let session_id = uuid::Uuid::new_v4();
        let trust = options
            .trust
            .clone()
            .unwrap_or_else(|| EdgeTrust::fingerprint(credentials.ca_fingerprint));
        let dialer = Arc::new(Dialer {
            device_id: credentials.device_id,
            key: match &credentials.auth {
                zt_creds::DeviceAuth::Secret(secret) => {
                    zt_proto::ProofKey::Shared(secret.derive_auth_key())
                }
                zt_creds::DeviceAuth::Key(key) => zt_proto::ProofKey::Device(key.clone()),
            },
            vnet: vnet.clone(),
            edges,
            learned: zt_proto::LearnedEdges::new(),
            trust: trust.clone(),
            transport: options.transport.clone(),
            software_version: options.software_version.clone(),
            posture: options.posture.clone(),
            posture_check_timeout: options.posture_check_timeout,
            session_id,
            protocol: options.protocol,
            tcp: match TcpDialer::new(&trust, options.transport.clone()) {
                Ok(d) => Some(d),
                Err(e) => {
                    warn!(error = %e, "the TCP transport is unavailable");
                    None
                }
            },
            proxy: options.proxy.clone(),
            quic_probe_interval: options.quic_probe_interval,
        });
        let first = match dialer.connect_once(0).await {
            Ok(s) => s,
            Err(AttemptError::Fatal { edge, message }) => {
                return Err(ConnectError::Refused { edge, message })
            }
            Err(AttemptError::Retry { tried, last }) => {
                return Err(ConnectError::Unreachable { tried, last })
            }
        };
        info!(
            edge = %first.edge,
            edge_name = %first.conn.registered().edge_name,
            device = %credentials.device_id,
            session = %session_id,
            vnet = %vnet,
            "connected to the edge"
        );
        let inner = Arc::new(ClientShared {
            set: ConnectionSet::new(),
            status: watch::channel(Status::Running {
                last_error: "".into(),
            })
            .0,
            routes: watch::channel(None).0,
            route_generation: Mutex::new(None),
            vnet,
            connection_wait: options.connection_wait,
        });
        let span = tracing::info_span!("zt_client", device = %credentials.device_id, session = %session_id);
        // In the set before `connect` returns, so the client is connected from the start.
        let first = Arc::new(first);
        let first_id = inner.set.insert(first.clone(), placement(&first));
        let mut first = Some((first, first_id));
        let supervisors = (0..options.connections)
            .map(|slot| {
                let task = supervise(
                    inner.clone(),
                    dialer.clone(),
                    slot,
                    first.take(),
                    options.posture_interval,
                );
                tokio::spawn(task.instrument(span.clone()))
            })
            .collect();
        Ok(Self { inner, supervisors })
    }

    /// The virtual network this client uses ("" for the edge's default).
    pub fn vnet(&self) -> &str {
        &self.inner.vnet
    }

    /// Whether the client is connected now, and to which edge (the first connection of its
    /// set; [`Client::connections`] lists them all).
    pub fn state(&self) -> ConnectionState {
        if let Status::Shutdown = &*self.inner.status.borrow() {
            return ConnectionState::Shutdown;
        }
        match self.inner.set.members().into_iter().next() {
            Some(m) => ConnectionState::Connected {
                edge: m.placement.edge,
                edge_name: m.placement.edge_name,
            },
            None => ConnectionState::Connecting {
                last_error: match &*self.inner.status.borrow() {
                    Status::Running { last_error } => last_error.to_string(),
                    Status::Shutdown => String::new(),
                },
            },
        }
    }

    /// Each connection of the client's set: its edge, transport and flows in flight.
    pub fn connections(&self) -> Vec<MemberReport> {
        self.inner.set.members()
    }

    /// The latest routes the edge pushed (the CIDRs to capture and their virtual network);
    /// `None` until the first push. A TUN mode follows this to set the device's routes.
    pub fn routes(&self) -> watch::Receiver<Option<RoutePush>> {
        self.inner.routes.subscribe()
    }

    /// Closes the connections and stops reconnecting. Dials fail with
    /// [`DialError::Shutdown`] from now on.
    pub fn shutdown(&self) {
        self.inner.status.send_replace(Status::Shutdown);
        for task in &self.supervisors {
            task.abort();
        }
        for m in self.inner.set.members() {
            self.inner.set.remove(m.id);
        }
    }

    /// Opens a TCP flow to `dest` through the edge. The stream is the flow: reads return
    /// the destination's bytes, `shutdown()` sends FIN and leaves the other direction open.
    pub async fn dial(&self, dest: SocketAddr) -> Result<ClientStream, DialError> {
        let deadline = Instant::now() + self.inner.connection_wait;
        loop {
            let member = self.member(deadline).await?;
            let span = tracing::debug_span!("zt_dial", %dest, edge = %member.edge);
            match member
                .conn
                .open_flow(dest, Protocol::Tcp, Vec::new())
                .instrument(span)
                .await
            {
                Ok(flow) => return Ok(ClientStream::new(flow, Box::new(member))),
                Err(e) => self.open_failed(dest, &member, e)?,
            }
        }
    }

    /// Opens a UDP flow to `dest` through the edge: each [`UdpFlow::send`] is one UDP
    /// packet to `dest`, each [`UdpFlow::recv`] one packet back.
    pub async fn dial_udp(&self, dest: SocketAddr) -> Result<UdpFlow, DialError> {
        let deadline = Instant::now() + self.inner.connection_wait;
        loop {
            let member = self.member(deadline).await?;
            match member.conn.open_udp_flow(dest, Vec::new()).await {
                Ok(flow) => return Ok(flow),
                Err(e) => self.open_failed(dest, &member, e)?,
            }
        }
    }

    /// Decides what a failed open means: `Ok(())` to retry on another connection (this
    /// one is draining or lost), else the error for the caller.
    fn open_failed(
        &self,
        dest: SocketAddr,
        member: &Member,
        e: OpenError,
    ) -> Result<(), DialError> {
        match e {
            OpenError::Refused(status) => {
                debug!(%dest, %status, "edge refused the flow");
                Err(DialError::from_status(dest, &self.inner.vnet, status))
            }
            OpenError::Unanswered(after) => Err(DialError::Unanswered { dest, after }),
            OpenError::TooManyPending(n) => Err(DialError::TooManyPending(n)),
            OpenError::Draining => {
                self.inner
                    .mark_lost(member, "the edge is draining the connection");
                Ok(())
            }
            OpenError::Stream(FlowError::ConnectionLost(reason)) => {
                self.inner
                    .mark_lost(member, &format!("connection to the edge lost: {reason}"));
                Ok(())
            }
            source => Err(DialError::Transport { dest, source }),
        }
    }

    /// The least loaded usable connection, waiting for one until `deadline`.
    async fn member(&self, deadline: Instant) -> Result<Member, DialError> {
        let started = Instant::now();
        let usable = |c: &Arc<EdgeConnection>| !c.conn.is_draining();
        match self.inner.set.wait_pick(deadline, usable).await {
            _ if self.inner.is_shutdown() => Err(DialError::Shutdown),
            Some(m) => Ok(m),
            None => Err(DialError::NotConnected {
                waited: started.elapsed(),
                last: match &*self.inner.status.borrow() {
                    Status::Running { last_error } if !last_error.is_empty() => {
                        last_error.to_string()
                    }
                    _ => "unknown".to_owned(),
                },
            }),
        }
    }
}

fn placement(c: &EdgeConnection) -> Placement {
    Placement::new(
        c.edge.clone(),
        c.conn.registered().edge_name.clone(),
        c.conn.transport_word(),
    )
}

/// Keeps one slot's connection up until shutdown. `first` is the connection the client
/// connected with (already in the set, under its id), for slot 0; the other slots dial
/// first.
async fn supervise(
    inner: Arc<ClientShared>,
    dialer: Arc<Dialer>,
    slot: usize,
    first: Option<(Arc<EdgeConnection>, u64)>,
    posture_interval: Duration,
) {
    let mut backoff = Backoff::new(RECONNECT_BACKOFF);
    let mut round = slot;
    let mut delay = Duration::ZERO;
    let mut next = first;
    loop {
        let (session, id) = match next.take() {
            Some(first) => first,
            None => loop {
                if !delay.is_zero() {
                    debug!(slot, ?delay, "waiting before reconnecting");
                    tokio::time::sleep(delay).await;
                }
                match dialer.connect_once(round).await {
                    Ok(s) => {
                        info!(
                            slot,
                            edge = %s.edge,
                            edge_name = %s.conn.registered().edge_name,
                            "connected to the edge"
                        );
                        if inner.is_shutdown() {
                            return;
                        }
                        let s = Arc::new(s);
                        let id = inner.set.insert(s.clone(), placement(&s));
                        break (s, id);
                    }
                    Err(e) => {
                        round += 1;
                        let why = e.describe();
                        match e {
                            AttemptError::Fatal { .. } => {
                                warn!(slot, error = %why, "the edge refused this device; still retrying at the slowest pace")
                            }
                            AttemptError::Retry { tried, .. } => {
                                debug!(slot, tried, error = %why, "connect attempt failed")
                            }
                        }
                        if inner.is_shutdown() {
                            return;
                        }
                        inner.note_error(&why);
                        backoff.disconnected();
                        delay = backoff.next_delay();
                    }
                }
            },
        };
        backoff.connected();
        let end = run_session(&inner, &dialer, &session, posture_interval).await;
        inner.set.remove(id);
        delay = match end {
            SessionEnd::Shutdown => return,
            SessionEnd::Moved(quic) => {
                info!(slot, edge = %quic.edge, "QUIC works again; new flows move to it, flows on TCP finish there");
                let quic = Arc::new(*quic);
                let id = inner.set.insert(quic.clone(), placement(&quic));
                // Flows still on the TCP connection hold it until they end.
                drop(session);
                next = Some((quic, id));
                continue;
            }
            SessionEnd::GoAway(drain, reason) => {
                if reason.contains("zt login") || reason.contains("expired") {
                    // The session itself ends (a sign-in or token at its end): the person
                    // at the keyboard has to act, so say it plainly.
                    warn!(slot, edge = %session.edge, ?drain, "the edge ends this session: {reason}");
                    inner.note_error(&reason);
                } else {
                    info!(slot, edge = %session.edge, ?drain, %reason, "edge sent go-away; reconnecting now");
                    inner.note_error("the edge is draining the connection");
                }
                // Flows already on the old connection keep it until they end or the
                // edge closes it after the drain time.
                let old = session.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(drain + Duration::from_secs(1), old.conn.closed())
                        .await;
                    drop(old);
                });
                Duration::ZERO
            }
            SessionEnd::Lost(why) => {
                warn!(slot, edge = %session.edge, reason = %why, "connection to the edge lost; reconnecting");
                inner.note_error(&format!("connection to the edge lost: {why}"));
                // The uptime of the connection that ended decides whether the growth
                // starts over (see the backoff module).
                backoff.disconnected();
                backoff.next_delay()
            }
        };
        // The next round starts at the edge after the one that served this slot.
        round += 1;
    }
}

/// Serves one connection's control events until it ends.
async fn run_session(
    inner: &ClientShared,
    dialer: &Dialer,
    session: &EdgeConnection,
    posture_interval: Duration,
) -> SessionEnd {
    let mut status = inner.status.subscribe();
    let mut last_posture = session.posture.clone();
    let mut posture_tick = tokio::time::interval(posture_interval.max(Duration::from_secs(1)));
    posture_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the connect already reported.
    posture_tick.tick().await;
    let probing = dialer.protocol == EdgeProtocol::Auto && session.endpoint.is_none();
    let mut probe_tick =
        tokio::time::interval(dialer.quic_probe_interval.max(Duration::from_millis(100)));
    probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe_tick.tick().await;
    loop {
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() || matches!(*status.borrow(), Status::Shutdown) {
                    return SessionEnd::Shutdown;
                }
            }
            reason = session.conn.closed() => return SessionEnd::Lost(reason.to_string()),
            event = session.conn.next_event() => match event {
                Some(PeerEvent::RoutesPushed(push)) => inner.routes_pushed(push),
                Some(PeerEvent::EdgesPushed(list)) => dialer.learn_edges(list),
                Some(PeerEvent::GoAway(g)) => return SessionEnd::GoAway(g.drain, g.reason),
                Some(_) => {}
                None => return SessionEnd::Lost("the control stream ended".to_owned()),
            },
            _ = probe_tick.tick(), if probing => {
                if let Some(quic) = dialer.probe_quic(session).await {
                    return SessionEnd::Moved(Box::new(quic));
                }
            }
            _ = posture_tick.tick(), if !dialer.posture.is_empty() => {
                let report = evaluate(&dialer.posture, dialer.posture_check_timeout).await;
                if last_posture.as_ref() != Some(&report) {
                    debug!(checks = report.checks.len(), "posture changed; reporting");
                    if session.conn.report_posture(report.clone()).await.is_ok() {
                        last_posture = Some(report);
                    }
                }
            }
        }
    }
}
