//! The running edge: the QUIC listener, registration, the connector registry, client
//! sessions and their flows, live reload, metrics and shutdown.
//!
//! Tasks: one accept loop; one task per registration; one per connector connection
//! (watching its control events, pushing the edge list); one per client session (flows,
//! posture, route and edge-list pushes, lifetime); one per flow; one reloading the snapshot
//! on each store revision; one flushing the audit log; with a shared store, the presence
//! heartbeat; with `--peer-listen`, the peering accept loop and one task per peering
//! connection and per forwarded flow; and the metrics server. They all watch one shutdown
//! signal.

//! Modules, each depending only on those listed before it (no import cycle): `config`;
//! `metrics` (counters); `snapshot` (one revision's routes, identities and policy); `auth`
//! (proofs and the failure budget); `cloudflared::link` and `link` (the link to a connector
//! connection); `registry` (the connections this edge holds); `presence` (which other edges
//! are live and what they hold, through the shared store); `peer_links` (the peering
//! endpoint and its connections to other edges); `session` (a client session's state);
//! `shared` (what every task shares); `flow` (one flow's stages, forwarding to a peer edge
//! included); `clients`, `cloudflared::register` and `peer_serve` (serving registered peers
//! and forwarded flows); this module (start, accept, reload, shutdown).

mod auth;
mod clients;
mod cloudflared;
mod config;
mod enroll;
mod flow;
mod link;
mod metrics;
mod peer_links;
mod peer_serve;
mod presence;
mod providers;
mod registry;
mod renew;
mod session;
mod shared;
mod snapshot;
pub(crate) mod sniff;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tracing::{error, info, warn};
use zt_policy::{CompiledPolicy, PolicyConfig};
use zt_proto::{CloseCode, EdgeListener, EdgePeer, EdgeTcpListener, TcpPeer};

pub use config::{
    default_state_dir, AuthRateLimit, EdgeConfig, FirstBytes, DEFAULT_ADMIN, DEFAULT_LISTEN,
};
pub use snapshot::ReloadError;

use self::auth::{EdgeAuthenticator, FailureLimiter};
use self::metrics::ConnectionCounts;
use self::metrics::Metrics;
use self::registry::Registry;
use self::shared::Shared;
use crate::admin::{AdminError, AdminOptions, AdminServer};
use crate::audit::{AuditError, AuditLog, AUDIT_FLUSH_INTERVAL};
use crate::live::LiveView;
use crate::state::{EdgeState, StateError, StateOptions};
use crate::store::Revision;

/// How long shutdown waits after go-away before closing connections, at least: a few
/// round trips on any network a connector sits behind.
const GO_AWAY_LINGER: Duration = Duration::from_millis(300);

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The state directory could not be opened or created.
    #[error(transparent)]
    State(#[from] StateError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The stored state could not be loaded into routes.
    #[error(transparent)]
    Reload(#[from] ReloadError),
    /// The edge's certificate could not be used for TLS.
    #[error("cannot use the server certificate from {}: {source}", dir.display())]
    Tls {
        /// The state directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: zt_proto::TlsConfigError,
    },
    /// The QUIC listener could not be bound.
    #[error("cannot listen for connectors and clients: {0}")]
    Listen(#[from] zt_proto::EndpointError),
    /// The admin API could not be served.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The secrets key file could not be read or created.
    #[error(transparent)]
    SecretsKey(#[from] crate::store::SecretsKeyError),
    /// The metrics listener could not be bound.
    #[error("cannot serve metrics on {addr}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The edge runtime; see [`Edge::start`].
#[derive(Debug)]
pub struct Edge;

impl Edge {
    /// Opens (or creates) the state directory, binds the QUIC listener, the admin API and
    /// the metrics server, and starts serving. Must run inside a tokio runtime.
    pub async fn start(mut config: EdgeConfig) -> Result<EdgeHandle, StartError> {
        let mut options = StateOptions::default();
        if let Some(names) = config.server_names.clone() {
            options = options.with_server_names(names);
        }
        options.store = config.store.clone();
        let state = Arc::new(EdgeState::open_or_init(&config.state_dir, &options)?);
        let secrets = crate::store::SecretsKey::load_or_create(
            &config
                .secrets_key_file
                .clone()
                .unwrap_or_else(|| config.state_dir.join("secrets.key")),
        )?;
        let audit_path = config
            .audit_path
            .clone()
            .unwrap_or_else(|| state.audit_log_path());
        let audit = Arc::new(AuditLog::open_with_limits(
            &audit_path,
            config.audit_limits,
        )?);

        let policy_config = PolicyConfig {
            l4_default: config.l4_default,
        };
        // Subscribe before the first load, so no commit falls between the two.
        let revisions = state.db().subscribe();
        let no_rules = Arc::new(CompiledPolicy::empty(policy_config));
        let (first, policy_error) = snapshot::load(state.db(), policy_config, &no_rules)?;
        if let Some(e) = policy_error {
            error!(error = %e, "the stored policy does not compile; starting with no rules (the l4 default applies) until it is fixed");
        }
        let first_revision = first.revision;
        let snapshot = Arc::new(ArcSwap::from_pointee(first));

        config.transport.open_timeout = config.open_timeout;
        config.transport.header_timeout = config.header_timeout;
        config.transport.stateless_reset_key = Some(state.stateless_reset_key());
        let server = state.server_identity();
        let identity = zt_proto::ServerIdentity::from_der(
            server.cert_chain().iter().map(|c| c.to_vec()).collect(),
            server.private_key().secret_der().to_vec(),
        )
        .map_err(|source| StartError::Tls {
            dir: state.dir().to_path_buf(),
            source,
        })?;
        // With an ephemeral port (`--listen …:0`, tests), the TCP listener on the same port
        // number may find it taken by another process: choose another port pair, a few
        // times. A fixed port is bound once and its error reported.
        let cloudflared = cloudflared_identity(&state, &config)?;
        let ephemeral = config.listen.port() == 0 && config.tcp_on_listen_port;
        let mut attempt = 0;
        let (listener, local_addr, mut tcp_listeners) = loop {
            attempt += 1;
            let listener = Arc::new(bind_listener(&config, &identity, cloudflared.as_ref())?);
            let local_addr =
                listener
                    .local_addr()
                    .map_err(|source| zt_proto::EndpointError::Bind {
                        addr: config.listen,
                        source,
                    })?;
            if !config.tcp_on_listen_port {
                break (listener, local_addr, Vec::new());
            }
            match bind_tcp_listener(local_addr, &config, &identity, cloudflared.as_ref()).await {
                Ok(l) => break (listener, local_addr, vec![l]),
                Err(zt_proto::EndpointError::Bind { source, .. })
                    if ephemeral
                        && attempt < 16
                        && source.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    listener.close(CloseCode::NO_ERROR, "port taken for TCP");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        };
        for addr in config.tcp_listen.iter().copied() {
            let l = bind_tcp_listener(addr, &config, &identity, cloudflared.as_ref()).await?;
            tcp_listeners.push(l);
        }
        let tcp_local: Vec<SocketAddr> = tcp_listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();

        record_own_membership(&state, &config.edge_name).await;
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(Registry::new(config.edge_name.clone()));
        let mut advertised = config.advertise.clone();
        if advertised.is_empty() && !local_addr.ip().is_unspecified() {
            advertised.push(local_addr.to_string());
        }
        let peer_links = match config.peer_listen {
            Some(addr) => {
                if config.store.is_none() {
                    warn!("--peer-listen without a shared store: this edge has no peers to forward to or from");
                }
                let links = peer_links::PeerLinks::bind(
                    addr,
                    state.peer_identity(),
                    state.ca_cert_der().to_vec(),
                    config.transport.clone(),
                    snapshot.clone(),
                )?;
                Some(Arc::new(links))
            }
            None => None,
        };
        let peer_addr = match (&peer_links, config.peer_advertise) {
            (_, Some(a)) => Some(a),
            (Some(l), None) => l.local_addr().ok().filter(|a| !a.ip().is_unspecified()),
            (None, None) => None,
        };
        if let (Some(l), None) = (&peer_links, peer_addr) {
            warn!(listen = ?l.local_addr().ok(), "the peering listener has a wildcard address: give --peer-advertise, the address other edges dial");
        }
        let presence = Arc::new(presence::Presence::new(
            state.edge_id(),
            config.edge_name.clone(),
            advertised.clone(),
            peer_addr,
            registry.clone(),
        ));
        let draining = Arc::new(AtomicBool::new(false));
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: state.clone(),
            snapshot: snapshot.clone(),
            registry: registry.clone(),
            presence: presence.clone(),
            peer_links: peer_links.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
            draining: draining.clone(),
            sessions: Mutex::new(HashMap::new()),
            device_sessions: Default::default(),
            revision: watch::channel(first_revision).0,
            stop,
            client_flows: AtomicU64::new(0),
            providers: Default::default(),
            enrollments: Arc::new(tokio::sync::Semaphore::new(enroll::MAX_ENROLLMENTS)),
            secrets,
            renewals: Default::default(),
            config,
        });
        let authenticator = Arc::new(EdgeAuthenticator {
            snapshot,
            limiter: FailureLimiter::new(shared.config.auth_rate_limit),
            audit,
            metrics: metrics.clone(),
            draining,
        });

        let metrics_addr = match shared.config.metrics {
            Some(addr) => {
                let l = metrics::bind(addr)
                    .await
                    .map_err(|source| StartError::Metrics { addr, source })?;
                let bound = l
                    .local_addr()
                    .map_err(|source| StartError::Metrics { addr, source })?;
                let counts: Arc<dyn ConnectionCounts> = registry.clone();
                tokio::spawn(metrics::serve(
                    l,
                    metrics.clone(),
                    counts,
                    shared.stop.subscribe(),
                ));
                Some(bound)
            }
            None => None,
        };

        let admin = match shared.config.admin {
            Some(addr) => {
                let live: Arc<dyn LiveView> = presence.clone();
                // A joining edge gets the secrets key only when the store is shared.
                let secrets_key_file = shared.config.store.as_ref().map(|_| {
                    shared
                        .config
                        .secrets_key_file
                        .clone()
                        .unwrap_or_else(|| shared.config.state_dir.join("secrets.key"))
                });
                Some(
                    AdminServer::bind_with(
                        addr,
                        state.clone(),
                        live,
                        AdminOptions::default()
                            .with_edge_addresses(advertised)
                            .with_secrets_key_file(secrets_key_file)
                            .with_applied(shared.revision.subscribe()),
                    )
                    .await?,
                )
            }
            None => None,
        };
        let admin_addr = admin.as_ref().map(AdminServer::local_addr);

        // One authenticator, so one per-source failure budget, for every listener.
        let tcp_slots = Arc::new(tokio::sync::Semaphore::new(
            shared.config.max_tcp_connections,
        ));
        for l in tcp_listeners {
            tokio::spawn(tcp_accept_loop(
                shared.clone(),
                l,
                authenticator.clone(),
                tcp_slots.clone(),
            ));
        }
        tokio::spawn(accept_loop(shared.clone(), listener.clone(), authenticator));
        tokio::spawn(reload_loop(shared.clone(), revisions, policy_config));
        tokio::spawn(flush_loop(shared.clone()));
        tokio::spawn(key_refresh_loop(shared.clone()));
        if let Some(links) = &peer_links {
            tokio::spawn(peer_serve::accept_loop(shared.clone(), links.clone()));
        }
        let presence_task = shared.config.store.clone().map(|store| {
            tokio::spawn(presence::run(
                presence.clone(),
                store,
                shared.stop.subscribe(),
            ))
        });
        metrics.ready.store(true, Ordering::Release);
        info!(listen = %local_addr, tcp = ?tcp_local, peering = ?peer_addr, edge = %shared.config.edge_name, edge_id = %state.edge_id(), ca_fingerprint = %state.ca_fingerprint(), "edge started");
        Ok(EdgeHandle {
            shared,
            presence_task,
            listener,
            local_addr,
            tcp_local,
            admin_addr,
            metrics_addr,
            admin,
        })
    }
}

/// A running edge.
pub struct EdgeHandle {
    shared: Arc<Shared>,
    /// Keeps this edge's presence row; it removes the row when the edge stops.
    presence_task: Option<tokio::task::JoinHandle<()>>,
    listener: Arc<EdgeListener>,
    local_addr: SocketAddr,
    tcp_local: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    admin: Option<AdminServer>,
}

impl std::fmt::Debug for EdgeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeHandle")
            .field("local_addr", &self.local_addr)
            .field("admin_addr", &self.admin_addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl EdgeHandle {
    /// The QUIC address connectors and clients reach.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TCP addresses zt/1 over TLS is served on (the QUIC port number first, when on).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_local
    }

    /// The admin API's address, when it is served.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The metrics server's address, when it is served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The edge's persistent state.
    pub fn state(&self) -> &Arc<EdgeState> {
        &self.shared.state
    }

    /// The live connector connections (this edge's and, with a shared store, every live
    /// edge's) and the edges, as the admin API shows them.
    pub fn live_view(&self) -> Arc<dyn LiveView> {
        self.shared.presence.clone()
    }

    /// The peering listener's address, when it runs.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared
            .peer_links
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// This edge's id (the one its peering certificate names).
    pub fn edge_id(&self) -> uuid::Uuid {
        self.shared.state.edge_id()
    }

    /// The store revision whose routes and policy flows use now.
    pub fn applied_revision(&self) -> Revision {
        *self.shared.revision.borrow()
    }

    /// Waits until the routes and policy of `revision` (or a later one) are in use.
    pub async fn wait_applied(&self, revision: Revision) {
        let mut rx = self.shared.revision.subscribe();
        let _ = rx.wait_for(|r| *r >= revision).await;
    }

    /// Graceful shutdown: refuses new registrations, sends go-away to every connector and
    /// client, waits up to the configured grace for in-flight flows, then closes every
    /// connection and flushes the audit log.
    pub async fn shutdown(mut self) {
        if let Some(admin) = self.admin.take() {
            admin.shutdown().await;
        }
        let shared = &self.shared;
        shared.draining.store(true, Ordering::Release);
        shared.metrics.ready.store(false, Ordering::Release);
        let grace = shared.config.shutdown_grace;
        info!(grace_ms = grace.as_millis() as u64, "edge shutting down");
        for conn in shared.registry.all() {
            if !conn.link.go_away(grace, "edge shutting down").await {
                // No go-away in the connector's protocol: stop opening flows on it.
                conn.mark_draining();
            }
        }
        for session in shared.sessions() {
            session.go_away(grace, "edge shutting down").await;
        }
        let started = Instant::now();
        let deadline = started + grace;
        // Linger a little even with nothing in flight: closing the connections at once
        // would discard go-away frames the peers have received but not yet read.
        let linger = started + GO_AWAY_LINGER.min(grace);
        while Instant::now() < deadline
            && (Instant::now() < linger
                || shared.registry.in_flight() > 0
                || shared.client_flows.load(Ordering::Acquire) > 0)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = shared.stop.send(true);
        if let Some(task) = self.presence_task.take() {
            // It removes this edge's row, so the others stop forwarding here at once.
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        if let Some(links) = &shared.peer_links {
            links.close();
        }
        self.listener.close(CloseCode::GOING_AWAY, "edge shut down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.listener.wait_idle()).await;
        if let Err(e) = shared.audit.flush() {
            warn!(error = %e, "cannot flush the audit log");
        }
        // Every task holds the shared state; once they have all seen the stop signal and
        // returned, the database is closed and the state directory may be opened again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.shared) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&self.shared) > 1 {
            warn!(
                tasks = Arc::strong_count(&self.shared) - 1,
                "tasks still running after shutdown"
            );
        }
        info!("edge stopped");
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: Arc<EdgeListener>,
    auth: Arc<EdgeAuthenticator>,
) {
    let mut stop = shared.stop.subscribe();
    loop {
        let incoming = tokio::select! {
            i = listener.accept() => match i {
                Some(i) => i,
                None => return,
            },
            _ = stop.changed() => return,
        };
        let shared = shared.clone();
        let auth = auth.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.register(&*auth).await {
                Ok(EdgePeer::Connector(link)) => serve_connector(shared, link).await,
                Ok(EdgePeer::Client(link)) => clients::serve(shared, link).await,
                Ok(EdgePeer::Argotunnel(conn)) => {
                    cloudflared::register::serve(shared, auth, conn).await
                }
                Ok(EdgePeer::Enrollment(conn)) => serve_enrollment(shared, auth, conn).await,
                Ok(_) => warn!(remote = %remote, "peer of an unknown role"),
                Err(e) => tracing::debug!(remote = %remote, error = %e, "registration failed"),
            }
        });
    }
}

/// One `zt login` over QUIC: the exchange runs on the first stream the laptop opens.
async fn serve_enrollment(
    shared: Arc<Shared>,
    auth: Arc<EdgeAuthenticator>,
    conn: zt_proto::EnrollmentConnection,
) {
    let source = conn.remote_address();
    let Some(exporter) = conn.exporter() else {
        return;
    };
    let stream = tokio::time::timeout(
        shared.config.transport.register_timeout,
        conn.accept_stream(),
    )
    .await;
    let Ok(Ok((send, recv))) = stream else {
        auth.limiter.record_failure(source.ip());
        conn.close(
            CloseCode::PROTOCOL_VIOLATION,
            "no enrollment stream in time",
        );
        return;
    };
    enroll::serve(shared, auth, source, "quic", exporter, recv, send).await;
    // Let the last message reach the laptop before the connection goes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.close(CloseCode::NO_ERROR, "enrollment done");
}

/// Fetches the identity providers' signing keys on a schedule, so rotated keys are known
/// before the first token signed with them arrives.
async fn key_refresh_loop(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(providers::KEY_REFRESH_INTERVAL) => shared.providers.refresh_all().await,
            _ = stop.changed() => return,
        }
    }
}

/// One `zt login` over TLS on TCP (networks that drop UDP): the exchange runs on the TLS
/// stream itself, framed as on the QUIC stream.
async fn serve_enrollment_tcp(
    shared: Arc<Shared>,
    auth: Arc<EdgeAuthenticator>,
    other: zt_proto::OtherAlpn,
) {
    use tokio::io::AsyncWriteExt;
    let (recv, mut send) = tokio::io::split(other.stream);
    enroll::serve(
        shared,
        auth,
        other.remote,
        "tcp",
        other.exporter,
        recv,
        &mut send,
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), send.shutdown()).await;
}

/// The TLS-over-TCP listener's loop: bounded connections, the same authenticator (and so
/// the same per-source failure budget) as QUIC's, and a dispatch on the negotiated ALPN.
async fn tcp_accept_loop(
    shared: Arc<Shared>,
    listener: EdgeTcpListener,
    auth: Arc<EdgeAuthenticator>,
    slots: Arc<tokio::sync::Semaphore>,
) {
    let mut stop = shared.stop.subscribe();
    loop {
        let incoming = tokio::select! {
            i = listener.accept() => match i {
                Ok(i) => i,
                Err(e) => {
                    // EMFILE and the like: back off a little rather than spin.
                    warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(remote = %incoming.remote_address(), "too many TCP connections; refused");
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        let auth = auth.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let remote = incoming.remote_address();
            match incoming.register(&*auth).await {
                Ok(TcpPeer::Zt(EdgePeer::Connector(link))) => serve_connector(shared, link).await,
                Ok(TcpPeer::Zt(EdgePeer::Client(link))) => clients::serve(shared, link).await,
                Ok(TcpPeer::Argotunnel(conn)) => {
                    cloudflared::register::serve(shared, auth, conn).await
                }
                Ok(TcpPeer::Other(other)) if other.alpn == zt_proto::ALPN_ENROLL => {
                    serve_enrollment_tcp(shared, auth, *other).await
                }
                Ok(TcpPeer::Other(other)) => {
                    tracing::debug!(remote = %remote, alpn = ?String::from_utf8_lossy(&other.alpn), "no handler for this ALPN over TCP")
                }
                Ok(_) => warn!(remote = %remote, "peer of an unknown role over TCP"),
                Err(e) => {
                    tracing::debug!(remote = %remote, error = %e, "registration over TCP failed")
                }
            }
        });
    }
}

async fn serve_connector(shared: Arc<Shared>, link: zt_proto::ConnectorLink) {
    let entry = shared.registry.insert(link);
    let Some(link) = entry.zt() else { return };
    let span = tracing::info_span!("connector", tunnel = %entry.tunnel_id, connector = %entry.connector_id, conn_index = entry.conn_index, connection = %entry.connection_id());
    info!(parent: &span, remote = %entry.remote, version = %entry.version, "connector registered");
    let mut stop = shared.stop.subscribe();
    let mut edges = presence::edge_list_for(&shared.presence, link.software().1);
    loop {
        tokio::select! {
            list = presence::next_edge_list(&mut edges) => {
                if let Err(e) = link.push_edges(list).await {
                    tracing::debug!(parent: &span, error = %e, "cannot push the edge list");
                }
            }
            ev = link.next_event() => match ev {
                Some(zt_proto::EdgeEvent::Unregister(u)) => {
                    info!(parent: &span, grace_ms = u.grace.as_millis() as u64, "connector draining");
                    entry.mark_draining();
                }
                Some(_) => {}
                None => break,
            },
            _ = link.closed() => break,
            _ = stop.changed() => break,
        }
    }
    shared.registry.remove(&entry);
    info!(parent: &span, "connector connection gone");
}

/// The certificate cloudflared connectors are shown (`quic.cftunnel.com` and
/// `h2.cftunnel.com`), when they are served.
fn cloudflared_identity(
    state: &EdgeState,
    config: &EdgeConfig,
) -> Result<Option<zt_proto::ServerIdentity>, StartError> {
    if !config.cloudflared {
        return Ok(None);
    }
    let cf = state.cloudflared_identity()?;
    zt_proto::ServerIdentity::from_der(
        cf.cert_chain().iter().map(|c| c.to_vec()).collect(),
        cf.private_key().secret_der().to_vec(),
    )
    .map(Some)
    .map_err(|source| StartError::Tls {
        dir: state.dir().to_path_buf(),
        source,
    })
}

/// Binds the QUIC listener: with ALPN `argotunnel` beside `zt/1` when cloudflared
/// connectors are served, presenting the `quic.cftunnel.com` certificate to them.
fn bind_listener(
    config: &EdgeConfig,
    identity: &zt_proto::ServerIdentity,
    cloudflared: Option<&zt_proto::ServerIdentity>,
) -> Result<EdgeListener, StartError> {
    let (addr, name, settings) = (config.listen, &config.edge_name, config.transport.clone());
    Ok(match cloudflared {
        None => EdgeListener::bind(addr, identity, name, settings)?,
        Some(cf) => EdgeListener::bind_with_argotunnel(addr, identity, cf, name, settings)?,
    })
}

/// Binds one TLS-over-TCP listener: with ALPN `h2` for cloudflared's HTTP/2 mode when
/// cloudflared connectors are served, presenting the same certificate as over QUIC.
async fn bind_tcp_listener(
    addr: SocketAddr,
    config: &EdgeConfig,
    identity: &zt_proto::ServerIdentity,
    cloudflared: Option<&zt_proto::ServerIdentity>,
) -> Result<EdgeTcpListener, zt_proto::EndpointError> {
    let (name, settings) = (&config.edge_name, config.transport.clone());
    match cloudflared {
        None => EdgeTcpListener::bind(addr, identity, name, settings).await,
        Some(cf) => EdgeTcpListener::bind_with_argotunnel(addr, identity, cf, name, settings).await,
    }
}

async fn reload_loop(
    shared: Arc<Shared>,
    mut revisions: watch::Receiver<Revision>,
    policy_config: PolicyConfig,
) {
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            changed = revisions.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
        let db = shared.state.db().clone();
        let last_good = shared.snapshot.load().policy.clone();
        let loaded =
            tokio::task::spawn_blocking(move || snapshot::load(&db, policy_config, &last_good))
                .await;
        match loaded {
            Ok(Ok((snap, policy_error))) => {
                let revision = snap.revision;
                // Routes and policy change together, as one revision.
                let snap = Arc::new(snap);
                shared.snapshot.store(snap.clone());
                if let Some(links) = &shared.peer_links {
                    links.prune(&snap.members);
                }
                if let Some(e) = policy_error {
                    error!(revision = revision.get(), error = %e, "new policy refused; keeping the last good policy");
                }
                info!(revision = revision.get(), "routes and policy reloaded");
                shared.revision.send_replace(revision);
            }
            Ok(Err(e)) => {
                error!(error = %e, "cannot reload the edge state; keeping the current routes and policy")
            }
            Err(e) => error!(error = %e, "reload task failed"),
        }
    }
}

async fn flush_loop(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut tick = tokio::time::interval(AUDIT_FLUSH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match shared.audit.flush() {
                    Ok(0) => {}
                    Ok(refusals) => {
                        info!(refusals, "authentication refusals repeated by the same sources, written as summing-up audit lines")
                    }
                    Err(e) => warn!(error = %e, "cannot flush the audit log"),
                }
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod layering;

/// Records this edge's own member row when its peering certificate was issued by this start
/// and it holds the CA key (the first edge of an organisation, or its first start on a
/// version with peering). Joined edges get theirs from `zt edge join`; no edge writes its
/// own later, so a removed edge stays removed.
async fn record_own_membership(state: &Arc<EdgeState>, name: &str) {
    if !state.peer_identity_is_new() || !state.holds_ca_key() {
        return;
    }
    let peer = state.peer_identity().clone();
    let member = crate::store::EdgeMember::new(peer.edge_id(), name, peer.cert_sha256());
    let st = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        st.db().update(|txn| {
            if txn.get::<crate::store::EdgeMember>(member.id)?.is_none() {
                txn.put(&member)?;
            }
            Ok::<_, crate::store::StoreError>(())
        })
    })
    .await;
    match result {
        Ok(Ok(_)) => {
            info!(edge = %name, edge_id = %peer.edge_id(), "recorded this edge as a member")
        }
        Ok(Err(e)) => {
            warn!(edge = %name, error = %e, "cannot record this edge as a member (is the name taken? `zt edge list`); peers will refuse it")
        }
        Err(e) => warn!(error = %e, "the membership task failed"),
    }
}
