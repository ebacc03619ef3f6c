//! The connector runtime: HA connections to the edge, each with its own reconnect loop,
//! serving the flows the edge opens on them.
//!
//! Connection `i` of `n` always dials edge address `i mod k` (of the `k` configured), so
//! four connections over two edges are two per edge, as cloudflared spreads its four over
//! two regions. Each connection is one task that loops: resolve, connect and register,
//! serve until the connection ends, wait a full-jitter backoff ([`RECONNECT_BACKOFF`]:
//! 250 ms base, 5 s cap), repeat.
//!
//! How a connection ends decides what comes next:
//! - **lost** (edge crashed or restarted, idle timeout): reconnect after the backoff;
//! - **go-away** (the edge is draining): a replacement is dialled at once, while the old
//!   connection stays open in the background for its in-flight flows;
//! - **refused with "never retry"** (unknown tunnel, wrong secret, unsupported version):
//!   that connection stops for good and says why in an error log. The process stays up,
//!   so `/healthcheck` stays 200 and `/ready` reports 503 with zero connections: the
//!   operator sees the problem on the readiness probe instead of a crash loop, and
//!   retrying a wrong secret would only feed the edge's failed-proof rate limit. This is
//!   cloudflared's choice for permanent registration errors too. Other refusals (rate
//!   limited, edge draining, internal) are retried with the backoff, or after the delay
//!   the edge asks for if that is longer.
//!
//! A drain ([`ConnectorHandle::drain`]) refuses new flows at once, sends `unregister` with
//! the grace period on every registered connection (so the edge moves new flows to other
//! replicas), stops reconnecting, and waits for in-flight flows up to the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn, Instrument};
use uuid::Uuid;
use zt_creds::{AuthKey, TunnelCredentials};
use zt_proto::{
    Backoff, CloseCode, ConnectError, ConnectionSet, ConnectorClaim, ConnectorConnection,
    ConnectorRegistration, EdgeTrust, EndpointError, MemberReport, PeerEndpoint, PeerEvent,
    Placement, RetryAdvice, TcpDialer, TlsConfigError, TransportSettings,
};

use crate::backoff::RECONNECT_BACKOFF;
use crate::config::ConnectorConfig;
use crate::dial::OriginDialer;
use crate::drain::{Drain, DrainOutcome};
use crate::flows::FlowLimiter;
use crate::metrics::ConnectorMetrics;
use crate::serve::{serve_flow, FlowServices};
use crate::server::{MetricsServer, ServeError};
use crate::values::{EdgeAddr, EdgeProtocol};

/// The software version sent to the edge at registration.
pub const SOFTWARE_VERSION: &str = concat!("zt-connector/", env!("CARGO_PKG_VERSION"));

/// Features this connector announces at registration: it relays TCP half-close and
/// resets, and UDP flows.
const FEATURES: [&str; 3] = ["half-close", "udp", zt_proto::EDGE_LIST_FEATURE];

/// A CA certificate file larger than this is refused: a CA file holds one certificate of a
/// few kilobytes.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// After a drain's `unregister` frames are queued, the round trips (bounded below and
/// above) to wait before the connections may be closed, so the frames reach the edge.
const UNREGISTER_SETTLE_RTTS: u32 = 3;
const UNREGISTER_SETTLE_MIN: Duration = Duration::from_millis(50);
const UNREGISTER_SETTLE_MAX: Duration = Duration::from_secs(1);

/// How long [`ConnectorHandle::shutdown`] waits for the edge to receive the closes.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Why a connector could not start. Each variant names the setting at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// No edge address is configured (and the token carried none).
    #[error(
        "no edge address: set `edge` in the config (or --edge), or use a token that names the edge"
    )]
    NoEdge,
    /// Neither `cacert` nor `edge-ca-fingerprint` is configured (and the token carried no
    /// fingerprint), so the edge could not be authenticated.
    #[error(
        "no way to trust the edge: set `cacert` (the edge's CA certificate file) or \
         `edge-ca-fingerprint` (its SHA-256) in the config, or use a token that carries it"
    )]
    NoTrust,
    /// The `cacert` file could not be read.
    #[error("cannot read the edge CA certificate {}: {source}", path.display())]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The `cacert` file holds no usable certificate.
    #[error("edge CA certificate {}: {source}", path.display())]
    CaCertificate {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        #[source]
        source: TlsConfigError,
    },
    /// The QUIC endpoint could not be created.
    #[error("cannot create the QUIC endpoint: {0}")]
    Endpoint(#[source] EndpointError),
    /// The metrics server could not listen.
    #[error(transparent)]
    Metrics(#[from] ServeError),
}

/// Starts connectors. See [`Connector::start`].
#[derive(Debug)]
pub struct Connector(());

impl Connector {
    /// Starts a connector with the default transport settings: binds the metrics server
    /// (if `metrics` is set) and starts `ha-connections` connection loops. Returns once
    /// they are started, not once they are registered; watch
    /// [`ConnectorHandle::ready_connections`] or `/ready` for that.
    ///
    /// `credentials` usually come from [`ConnectorConfig::load_credentials`].
    pub async fn start(
        config: ConnectorConfig,
        credentials: TunnelCredentials,
    ) -> Result<ConnectorHandle, StartError> {
        Self::start_with(config, credentials, TransportSettings::default()).await
    }

    /// [`Connector::start`] with explicit QUIC transport settings.
    pub async fn start_with(
        config: ConnectorConfig,
        credentials: TunnelCredentials,
        transport: TransportSettings,
    ) -> Result<ConnectorHandle, StartError> {
        if config.edge.is_empty() {
            return Err(StartError::NoEdge);
        }
        let trust = edge_trust(&config)?;
        let endpoint = bind_endpoint(&trust, transport.clone()).map_err(StartError::Endpoint)?;
        let tcp = match TcpDialer::new(&trust, transport) {
            Ok(d) => Some(d),
            Err(e) => {
                warn!(cause = %e, "the TCP transport is unavailable; QUIC only");
                None
            }
        };
        if !config.warp_routing.enabled {
            // Same as cloudflared, which ignores the key since routing moved to the remote
            // configuration; said once so an operator who meant "serve nothing" knows.
            warn!(
                "warp-routing.enabled is false, which zt's connector ignores: it serves the \
                 routes the edge assigns to its tunnel; limit what it may dial with \
                 zt-allowed-destinations"
            );
        }

        let connector_id = Uuid::new_v4();
        let metrics = Arc::new(ConnectorMetrics::new(connector_id));
        let metrics_server = match config.metrics {
            Some(addr) => Some(MetricsServer::bind(addr, Arc::clone(&metrics)).await?),
            None => None,
        };
        let flows = FlowLimiter::new(config.warp_routing.max_active_flows, Arc::clone(&metrics));
        let dialer = OriginDialer::new(&config, Arc::clone(&metrics));
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(ConnectorShared {
            connector_id,
            tunnel_id: credentials.tunnel_id,
            account_tag: credentials.account_tag.clone(),
            key: credentials.secret.derive_auth_key(),
            edges: config.edge.clone(),
            learned: zt_proto::LearnedEdges::new(),
            endpoint,
            tcp,
            protocol: config.protocol,
            grace: config.grace_period,
            flow: FlowServices {
                flows: flows.clone(),
                dialer,
                metrics: Arc::clone(&metrics),
            },
            stop,
            live: ConnectionSet::new(),
        });

        info!(
            connector_id = %connector_id,
            tunnel = %credentials.tunnel_id,
            connections = config.ha_connections,
            edges = %join(&config.edge),
            metrics = ?metrics_server.as_ref().map(MetricsServer::local_addr),
            "connector starting"
        );
        let mut tasks = JoinSet::new();
        for index in 0..config.ha_connections {
            let inner = Arc::clone(&inner);
            let edge = inner.edges[usize::from(index) % inner.edges.len()].clone();
            let span = tracing::info_span!("edge_connection", conn = index, edge = %edge);
            tasks.spawn(connection_loop(inner, index).instrument(span));
        }
        Ok(ConnectorHandle {
            drain: Drain::new(flows, config.grace_period),
            inner,
            metrics,
            metrics_server,
            tasks,
        })
    }
}

fn join(edges: &[EdgeAddr]) -> String {
    edges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn edge_trust(config: &ConnectorConfig) -> Result<EdgeTrust, StartError> {
    if let Some(path) = &config.cacert {
        use std::io::Read;
        let io_err = |source| StartError::CaFile {
            path: path.clone(),
            source,
        };
        let mut contents = Vec::new();
        std::fs::File::open(path)
            .map_err(io_err)?
            .take(MAX_CA_FILE_BYTES)
            .read_to_end(&mut contents)
            .map_err(io_err)?;
        return EdgeTrust::ca_file_contents(&contents).map_err(|source| {
            StartError::CaCertificate {
                path: path.clone(),
                source,
            }
        });
    }
    match config.edge_ca_fingerprint {
        Some(fp) => Ok(EdgeTrust::fingerprint(fp)),
        None => Err(StartError::NoTrust),
    }
}

/// One UDP socket for every connection: dual-stack where the host has IPv6 (quinn maps
/// IPv4 edges onto it), IPv4 only where it does not (containers without IPv6).
fn bind_endpoint(
    trust: &EdgeTrust,
    transport: TransportSettings,
) -> Result<PeerEndpoint, EndpointError> {
    let v6: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, 0).into();
    match PeerEndpoint::bind(v6, trust, transport.clone()) {
        Ok(ep) => Ok(ep),
        Err(EndpointError::Bind { .. }) => PeerEndpoint::bind(
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            trust,
            transport,
        ),
        Err(e) => Err(e),
    }
}

/// What every connection task shares.
pub(crate) struct ConnectorShared {
    connector_id: Uuid,
    tunnel_id: Uuid,
    account_tag: String,
    key: AuthKey,
    /// The edges the configuration names.
    edges: Vec<EdgeAddr>,
    /// The edges the edges pushed (`edge_list`), with the push's generation: more places to
    /// move a lost connection to, beside the configured ones.
    learned: zt_proto::LearnedEdges<EdgeAddr>,
    endpoint: PeerEndpoint,
    /// The TCP transport's dialer (`None` if its TLS configuration was refused).
    tcp: Option<TcpDialer>,
    protocol: EdgeProtocol,
    grace: Duration,
    flow: FlowServices,
    /// Set once a drain or shutdown starts: connections unregister and nothing reconnects.
    stop: watch::Sender<bool>,
    /// Registered connections that take new flows. A member is counted in
    /// `ha_connections` exactly while it is here; whoever removes it uncounts it.
    live: ConnectionSet<Arc<ConnectorConnection>>,
}

impl ConnectorShared {
    fn add_live(&self, edge: &EdgeAddr, conn: &Arc<ConnectorConnection>) -> u64 {
        let placement = Placement::new(
            edge.to_string(),
            conn.registered().edge_name.clone(),
            conn.transport_word(),
        );
        let tcp = placement.transport == "tcp";
        let id = self.live.insert(Arc::clone(conn), placement);
        self.flow.metrics.connection_registered();
        if tcp {
            self.flow.metrics.tcp_connection(true);
        }
        id
    }

    /// Removes member `id` from the live set if it is still there; true if this call did.
    fn take_live(&self, id: u64) -> bool {
        let tcp = self
            .live
            .members()
            .iter()
            .any(|m| m.id == id && m.placement.transport == "tcp");
        let taken = self.live.remove(id);
        if taken {
            self.flow.metrics.connection_lost();
            if tcp {
                self.flow.metrics.tcp_connection(false);
            }
        }
        taken
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// The edges a connection may use: the configured ones, then those the edges pushed.
    fn candidates(&self) -> Vec<EdgeAddr> {
        self.learned.candidates(&self.edges)
    }

    /// Takes in an edge list an edge pushed (an address that does not parse is skipped).
    fn learn_edges(&self, list: zt_proto::EdgeList) {
        if let Some(edges) = self.learned.learn(&list, |e| e.parse::<EdgeAddr>().ok()) {
            info!(edges = %join(&edges), "the edges told of their peers");
        }
    }
}

/// How a registered connection's service ended.
enum Ended {
    /// Lost or closed by the edge: reconnect after a backoff.
    Lost,
    /// The edge sent go-away: reconnect at once.
    GoAway,
    /// The connector is draining or shutting down: do not reconnect.
    Stopped,
    /// QUIC works again: serve this connection; the TCP one drains.
    Moved(ConnectorConnection),
}

/// Keeps connection `index` registered. It starts on edge `index % edges` (so the HA
/// connections spread over the edges given) and, when an attempt fails, moves to the next
/// edge of the list for the next attempt (the configured edges, then those the edges
/// pushed), so a connection lost with its edge comes back on a live one; a lost connection
/// is first tried again where it was (an edge restart is the common case).
async fn connection_loop(inner: Arc<ConnectorShared>, index: u8) {
    let mut backoff = Backoff::new(RECONNECT_BACKOFF);
    let mut stop = inner.stop.subscribe();
    let mut slot = usize::from(index) % inner.edges.len();
    let mut edge = inner.edges[slot].clone();
    // Which of the name's addresses to try next, so a dead address is not retried forever.
    let mut turn = 0usize;
    let mut moved: Option<(ConnectorConnection, SocketAddr)> = None;
    loop {
        if inner.stopping() {
            return;
        }
        let result = match moved.take() {
            Some(c) => Ok(c),
            None => {
                let attempt = connect(&inner, index, &edge, &mut turn);
                tokio::select! {
                    r = attempt => r,
                    () = stopped(&mut stop) => return,
                }
            }
        };
        let delay = match result {
            Ok((conn, addr)) => {
                let registered = conn.registered();
                info!(
                    %addr,
                    edge_name = %registered.edge_name,
                    connection_id = %registered.connection_id,
                    "registered with the edge"
                );
                backoff.connected();
                let ended =
                    serve_connection(&inner, index, &edge, addr, Arc::new(conn), &mut stop).await;
                backoff.disconnected();
                match ended {
                    Ended::Stopped => return,
                    Ended::Moved(quic) => {
                        moved = Some((quic, addr));
                        continue;
                    }
                    Ended::GoAway => continue,
                    Ended::Lost => backoff.next_delay(),
                }
            }
            Err(err) => {
                inner.flow.metrics.registration_failed();
                let delay = match &err {
                    Attempt::Connect(ConnectError::Refused(refusal)) => match refusal.retry {
                        RetryAdvice::Never => {
                            error!(
                                code = ?refusal.code,
                                message = %refusal.message,
                                "the edge refused this connector and says retrying cannot help; \
                                 check the tunnel id, account tag and secret in the credentials \
                                 (this connection stops; restart the connector once fixed)"
                            );
                            return;
                        }
                        RetryAdvice::After(at_least) => {
                            warn!(code = ?refusal.code, message = %refusal.message, retry_after = ?at_least, "the edge refused the registration for now");
                            backoff.next_delay().max(at_least)
                        }
                        RetryAdvice::Backoff => {
                            warn!(code = ?refusal.code, message = %refusal.message, "the edge refused the registration for now");
                            backoff.next_delay()
                        }
                    },
                    other => {
                        let delay = backoff.next_delay();
                        warn!(cause = %other, retry_in = ?delay, "cannot register with the edge");
                        delay
                    }
                };
                let candidates = inner.candidates();
                if candidates.len() > 1 {
                    slot = (slot + 1) % candidates.len();
                    edge = candidates[slot].clone();
                    turn = 0;
                    tracing::Span::current().record("edge", tracing::field::display(&edge));
                    info!(next = %edge, "trying the next edge for this connection");
                }
                delay
            }
        };
        debug!(?delay, "reconnecting after a delay");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once a drain or shutdown has started. The guard `wait_for` returns is dropped
/// here, so callers' futures stay `Send`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connect(
    inner: &ConnectorShared,
    index: u8,
    edge: &EdgeAddr,
    turn: &mut usize,
) -> Result<(ConnectorConnection, SocketAddr), Attempt> {
    let addr = resolve(edge, turn).await?;
    let registration = registration(inner, index);
    let conn = match inner.protocol {
        EdgeProtocol::Quic => connect_quic(inner, edge, addr, registration).await?,
        EdgeProtocol::Tcp => connect_tcp(inner, edge, addr, registration).await?,
        _ => connect_auto(inner, edge, addr, registration).await?,
    };
    Ok((conn, addr))
}

fn registration(inner: &ConnectorShared, index: u8) -> ConnectorRegistration {
    ConnectorRegistration {
        claim: ConnectorClaim {
            tunnel_id: inner.tunnel_id,
            account_tag: inner.account_tag.clone(),
            connector_id: inner.connector_id,
            conn_index: index,
        },
        software_version: SOFTWARE_VERSION.to_owned(),
        features: FEATURES.iter().map(|f| (*f).to_owned()).collect(),
    }
}

async fn connect_quic(
    inner: &ConnectorShared,
    edge: &EdgeAddr,
    addr: SocketAddr,
    registration: ConnectorRegistration,
) -> Result<ConnectorConnection, ConnectError> {
    inner
        .endpoint
        .connect_connector(addr, edge.host(), registration, &inner.key)
        .await
}

async fn connect_tcp(
    inner: &ConnectorShared,
    edge: &EdgeAddr,
    addr: SocketAddr,
    registration: ConnectorRegistration,
) -> Result<ConnectorConnection, ConnectError> {
    let Some(tcp) = &inner.tcp else {
        return Err(ConnectError::TcpConnect {
            addr,
            source: std::io::Error::other("the TCP transport's TLS configuration was refused"),
        });
    };
    tcp.connect_connector(addr, edge.host(), None, registration, &inner.key)
        .await
}

/// How long QUIC runs alone before TCP joins the race (as the client's `auto`).
const QUIC_HEAD_START: Duration = Duration::from_millis(300);

/// How often a connection that came up over TCP under `auto` tries QUIC again.
const QUIC_PROBE_INTERVAL: Duration = Duration::from_secs(15);

/// QUIC first, TCP after [`QUIC_HEAD_START`] or at once when QUIC fails; an authenticated
/// refusal from either ends the attempt (no fallback after a refusal).
async fn connect_auto(
    inner: &ConnectorShared,
    edge: &EdgeAddr,
    addr: SocketAddr,
    registration: ConnectorRegistration,
) -> Result<ConnectorConnection, ConnectError> {
    let quic = connect_quic(inner, edge, addr, registration.clone());
    let tcp = connect_tcp(inner, edge, addr, registration);
    tokio::pin!(quic, tcp);
    let head = tokio::time::sleep(QUIC_HEAD_START);
    tokio::pin!(head);
    let mut tcp_started = false;
    let mut quic_err: Option<ConnectError> = None;
    loop {
        tokio::select! {
            r = &mut quic, if quic_err.is_none() => match r {
                Ok(c) => return Ok(c),
                Err(e @ ConnectError::Refused(_)) => return Err(e),
                Err(e) => {
                    debug!(%addr, cause = %e, "QUIC attempt failed; TCP now");
                    tcp_started = true;
                    quic_err = Some(e);
                }
            },
            () = &mut head, if !tcp_started => tcp_started = true,
            r = &mut tcp, if tcp_started => match r {
                Ok(c) => return Ok(c),
                Err(e @ ConnectError::Refused(_)) => return Err(e),
                Err(e) => {
                    // QUIC may still come through; if it already failed, so has the round.
                    match quic_err.take() {
                        Some(q) => {
                            return Err(ConnectError::TcpConnect {
                                addr,
                                source: std::io::Error::other(format!("QUIC: {q}; TCP: {e}")),
                            })
                        }
                        None => {
                            debug!(%addr, cause = %e, "TCP attempt failed; QUIC still running");
                            return quic.await;
                        }
                    }
                }
            },
        }
    }
}

/// Why one connection attempt failed.
#[derive(Debug, thiserror::Error)]
enum Attempt {
    /// The edge's name has no address now; retried with the backoff like any failure.
    #[error("the edge's name does not resolve to any address")]
    Unresolved,
    /// Connecting or registering failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// The edge address to dial: the literal, or the next of the name's addresses.
async fn resolve(edge: &EdgeAddr, turn: &mut usize) -> Result<SocketAddr, Attempt> {
    if let Some(addr) = edge.socket_addr() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((edge.host(), edge.port())).await {
        Ok(a) => a.collect(),
        Err(err) => {
            warn!(cause = %err, "cannot resolve the edge's name");
            Vec::new()
        }
    };
    if addrs.is_empty() {
        return Err(Attempt::Unresolved);
    }
    let addr = addrs[*turn % addrs.len()];
    *turn = turn.wrapping_add(1);
    Ok(addr)
}

/// Serves one registered connection until it ends: hands each flow request to its own
/// task, watches the control stream for go-away, and unregisters when a drain starts.
async fn serve_connection(
    inner: &Arc<ConnectorShared>,
    index: u8,
    edge: &EdgeAddr,
    addr: SocketAddr,
    conn: Arc<ConnectorConnection>,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let member = inner.add_live(edge, &conn);
    let mut unregistered = false;
    let probing = inner.protocol == EdgeProtocol::Auto && conn.transport_word() == "tcp";
    let mut probe = tokio::time::interval(QUIC_PROBE_INTERVAL);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe.tick().await;
    let ended = loop {
        tokio::select! {
            biased;
            () = stopped(stop), if !unregistered => {
                unregistered = true;
                // The drain unregisters the connections it finds; one that registered
                // after it looked is unregistered here.
                if inner.take_live(member) {
                    if let Err(err) = conn.unregister(inner.grace).await {
                        debug!(cause = %err, "unregister not sent; the connection is gone");
                    }
                }
                // Keep answering (with "draining") until the connection closes.
            }
            ev = conn.next_event() => match ev {
                Some(PeerEvent::EdgesPushed(list)) => inner.learn_edges(list),
                Some(PeerEvent::GoAway(go)) => {
                    info!(drain = ?go.drain, reason = %go.reason, "the edge is going away; opening a replacement connection");
                    inner.take_live(member);
                    tokio::spawn(linger(Arc::clone(inner), Arc::clone(&conn), go.drain).in_current_span());
                    break if inner.stopping() { Ended::Stopped } else { Ended::GoAway };
                }
                Some(_) => {}
                None => break Ended::Lost,
            },
            _ = probe.tick(), if probing && !unregistered => {
                match connect_quic(inner, edge, addr, registration(inner, index)).await {
                    Ok(quic) => {
                        info!(%addr, "QUIC works again; new flows move to it, flows on TCP finish there");
                        inner.take_live(member);
                        if let Err(err) = conn.unregister(inner.grace).await {
                            debug!(cause = %err, "unregister not sent; the connection is gone");
                        }
                        tokio::spawn(linger(Arc::clone(inner), Arc::clone(&conn), inner.grace).in_current_span());
                        break Ended::Moved(quic);
                    }
                    Err(e) => debug!(cause = %e, "QUIC still unavailable; staying on TCP"),
                }
            }
            req = conn.accept_flow() => match req {
                Some((header, responder)) => {
                    let ctx = inner.flow.clone();
                    let conn = Arc::clone(&conn);
                    let span = tracing::info_span!("flow", flow = header.flow_id, dst = %header.dest, proto = %header.protocol);
                    tokio::spawn(serve_flow(ctx, conn, header, responder).instrument(span));
                }
                None => break Ended::Lost,
            },
        }
    };
    inner.take_live(member);
    if matches!(ended, Ended::Lost) {
        if unregistered || inner.stopping() {
            return Ended::Stopped;
        }
        // The control stream can end before the connection does; never wait long here,
        // the replacement matters more than the reason.
        match tokio::time::timeout(Duration::from_millis(200), conn.closed()).await {
            Ok(reason) => warn!(cause = %reason, "lost the connection to the edge"),
            Err(_) => warn!("the edge ended the control stream; reconnecting"),
        }
    }
    ended
}

/// Keeps a connection the edge is draining open for its in-flight flows (each holds the
/// connection) while answering any straggling flow request, until the edge closes it or
/// its drain time is over.
async fn linger(inner: Arc<ConnectorShared>, conn: Arc<ConnectorConnection>, drain: Duration) {
    let deadline = tokio::time::sleep(drain);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            req = conn.accept_flow() => match req {
                Some((header, responder)) => {
                    let span = tracing::info_span!("flow", flow = header.flow_id, dst = %header.dest, proto = %header.protocol);
                    tokio::spawn(serve_flow(inner.flow.clone(), Arc::clone(&conn), header, responder).instrument(span));
                }
                None => break,
            },
        }
    }
}

/// A running connector. Dropping it stops its connection loops at once; call
/// [`ConnectorHandle::drain`] then [`ConnectorHandle::shutdown`] to stop gracefully.
#[derive(Debug)]
pub struct ConnectorHandle {
    inner: Arc<ConnectorShared>,
    drain: Drain,
    metrics: Arc<ConnectorMetrics>,
    metrics_server: Option<MetricsServer>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for ConnectorShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorShared")
            .field("connector_id", &self.connector_id)
            .field("tunnel_id", &self.tunnel_id)
            .field("edges", &self.edges)
            .finish_non_exhaustive()
    }
}

impl ConnectorHandle {
    /// This process's connector id (a fresh UUID v4 per start), as sent to the edge and
    /// shown by `/ready`.
    pub fn connector_id(&self) -> Uuid {
        self.inner.connector_id
    }

    /// Edge connections registered and taking new flows now.
    pub fn ready_connections(&self) -> u64 {
        self.metrics.registered_connections()
    }

    /// Each registered connection taking new flows: its edge, transport and flows in
    /// flight, as the connector's connection set reports them.
    pub fn connections(&self) -> Vec<MemberReport> {
        self.inner.live.members()
    }

    /// Where the metrics server listens, if one was configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    /// The live figures `/metrics` reports.
    pub fn metrics(&self) -> &Arc<ConnectorMetrics> {
        &self.metrics
    }

    /// Drains: refuses new flows from now on, tells the edge on every registered
    /// connection (`unregister` with the grace period), stops reconnecting, and waits for
    /// in-flight flows until they end, the grace period runs out, or `force` completes
    /// (the binary passes its second signal). Connections stay open so in-flight flows
    /// keep working; [`ConnectorHandle::shutdown`] closes them.
    pub async fn drain(&self, force: impl Future<Output = ()>) -> DrainOutcome {
        self.drain.start();
        self.inner.stop.send_replace(true);
        let mut settle = Duration::ZERO;
        for (member, conn) in self.inner.live.entries() {
            if self.inner.take_live(member) {
                match conn.unregister(self.inner.grace).await {
                    Ok(()) => debug!(member, "told the edge this connector is draining"),
                    Err(err) => debug!(member, cause = %err, "unregister not sent"),
                }
                settle = settle.max(conn.rtt() * UNREGISTER_SETTLE_RTTS);
            }
        }
        let told = tokio::time::Instant::now();
        info!("the edge was told; waiting for in-flight flows");
        let outcome = self.drain.wait(force).await;
        // `unregister` returns once the frame is queued, not once it arrived; closing the
        // connections at once would drop it. Give it a few round trips (bounded), which
        // a drain with flows in flight has long spent anyway.
        let settle = settle.clamp(UNREGISTER_SETTLE_MIN, UNREGISTER_SETTLE_MAX);
        tokio::time::sleep_until(told + settle).await;
        outcome
    }

    /// Stops at once: closes every edge connection (in-flight flows end), stops the
    /// connection loops and the metrics server.
    pub async fn shutdown(mut self) {
        self.drain.start();
        self.inner.stop.send_replace(true);
        self.inner
            .endpoint
            .close(CloseCode::UNREGISTERED, "connector shutting down");
        let tasks = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(CLOSE_WAIT, tasks).await.is_err() {
            self.tasks.abort_all();
        }
        let _ = tokio::time::timeout(CLOSE_WAIT, self.inner.endpoint.wait_idle()).await;
        if let Some(server) = self.metrics_server.take() {
            server.shutdown().await;
        }
        info!(connector_id = %self.inner.connector_id, "connector stopped");
    }
}
