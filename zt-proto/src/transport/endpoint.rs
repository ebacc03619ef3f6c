//! Endpoints: the edge's listener (accept, authenticate, register) and the dialling side's
//! endpoint for connectors and clients (connect, prove, register).
//!
//! This module is QUIC's own part: sockets, handshakes, ALPN. Registration itself (the
//! I/O-free machines of `control` driven over the connection's first bidirectional stream)
//! is `register`'s, written against the transport seam; the whole exchange, handshake
//! included, is bounded by `TransportSettings::register_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::ProofKey;
use socket2::{Domain, Socket, Type};
use tokio::time::timeout_at;
use tracing::{debug, warn};
use zt_creds::AuthKey;

use crate::control::{ClientControl, ConnectorControl};
use crate::flow::CloseCode;
use crate::frame::{ClientClaim, ConnectorClaim};
use crate::transport::argotunnel::ArgotunnelConnection;
use crate::transport::carrier::{Carrier, Quic, Transport};
use crate::transport::enrollment::EnrollmentConnection;
use crate::transport::error::{AcceptError, ConnectError, EndpointError};
use crate::transport::links::{ClientConnection, ClientLink, ConnectorConnection, ConnectorLink};
use crate::transport::register::{
    register_at_edge, register_client, register_connector, Authenticator, EdgeRegistered,
};
use crate::transport::settings::TransportSettings;
use crate::transport::tls::{EdgeTrust, ServerIdentity, ALPN_ARGOTUNNEL};

/// Bidirectional streams a peer may open before it has registered: its control stream (a
/// cloudflared connector's too) with room to spare. quinn allocates the state of every
/// stream a peer may open when the connection starts, about 60 bytes each, so the full
/// limit (10,000 by default) would cost the edge some 0.6 MiB per handshake from anyone at
/// all; a registered client gets the full limit.
const UNREGISTERED_BIDI_STREAMS: u32 = 16;

fn varint(code: u32) -> quinn::VarInt {
    quinn::VarInt::from_u32(code)
}

/// The UDP socket buffer sizes an endpoint asked for and what the OS reports it granted
/// (Linux reports twice the usable size; `None` when the OS would not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketBuffers {
    /// Receive buffer asked for.
    pub receive_requested: usize,
    /// Receive buffer the OS reports.
    pub receive_granted: Option<usize>,
    /// Send buffer asked for.
    pub send_requested: usize,
    /// Send buffer the OS reports.
    pub send_granted: Option<usize>,
}

pub(super) fn bind_socket(
    addr: SocketAddr,
    settings: &TransportSettings,
) -> Result<(std::net::UdpSocket, SocketBuffers), EndpointError> {
    let bind_err = |source| EndpointError::Bind { addr, source };
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(bind_err)?;
    if addr.is_ipv6() {
        // Serve IPv4 too on a wildcard IPv6 address, where the OS allows it.
        let _ = socket.set_only_v6(false);
    }
    let buffers = SocketBuffers {
        receive_requested: settings.socket_receive_buffer,
        receive_granted: set_buffer(&socket, settings.socket_receive_buffer, true),
        send_requested: settings.socket_send_buffer,
        send_granted: set_buffer(&socket, settings.socket_send_buffer, false),
    };
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket.set_nonblocking(true).map_err(bind_err)?;
    Ok((socket.into(), buffers))
}

/// Asks for a socket buffer size and warns when the OS grants less. Linux caps requests at
/// `net.core.rmem_max`/`wmem_max` and reports twice the usable size, so a granted value at
/// least the requested one means the request was honoured.
fn set_buffer(socket: &Socket, want: usize, receive: bool) -> Option<usize> {
    let (set, name, sysctl) = if receive {
        (
            socket.set_recv_buffer_size(want),
            "receive",
            "net.core.rmem_max",
        )
    } else {
        (
            socket.set_send_buffer_size(want),
            "send",
            "net.core.wmem_max",
        )
    };
    if let Err(e) = set {
        warn!(buffer = name, requested = want, error = %e, "cannot set UDP socket buffer size");
    }
    let granted = if receive {
        socket.recv_buffer_size()
    } else {
        socket.send_buffer_size()
    };
    match granted {
        Ok(got) if got < want => warn!(
            buffer = name,
            requested = want,
            granted = got,
            "the OS granted a smaller UDP socket buffer than requested; raise {sysctl} for full throughput",
        ),
        Ok(got) => debug!(buffer = name, requested = want, granted = got, "UDP socket buffer set"),
        Err(ref e) => warn!(buffer = name, error = %e, "cannot read back UDP socket buffer size"),
    }
    granted.ok()
}

pub(super) fn negotiated_alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

fn tokio_deadline(d: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(d)
}

// ---------------------------------------------------------------------------------------
// Edge side.
// ---------------------------------------------------------------------------------------

/// A registered peer, by role.
#[derive(Debug)]
#[non_exhaustive]
pub enum EdgePeer {
    /// A connector connection.
    Connector(ConnectorLink),
    /// A client connection.
    Client(ClientLink),
    /// A connection that chose ALPN `argotunnel` (cloudflared's protocol), only offered by
    /// a listener bound with [`EdgeListener::bind_with_argotunnel`]. Nothing has been read
    /// from it and nothing authenticated: the caller runs cloudflared's registration.
    Argotunnel(ArgotunnelConnection),
    /// A connection that chose ALPN `zt-enroll/1`: a `zt login` before the device has any
    /// credential. Nothing has been read or authenticated; the caller runs the exchange.
    Enrollment(EnrollmentConnection),
}

/// The edge's QUIC listener.
#[derive(Debug)]
pub struct EdgeListener {
    endpoint: quinn::Endpoint,
    settings: TransportSettings,
    edge_name: Arc<str>,
    buffers: SocketBuffers,
}

impl EdgeListener {
    /// Binds a listener on `addr` with the edge's certificate and key.
    pub fn bind(
        addr: SocketAddr,
        identity: &ServerIdentity,
        edge_name: &str,
        settings: TransportSettings,
    ) -> Result<Self, EndpointError> {
        Self::bind_inner(addr, identity, None, edge_name, settings)
    }

    /// Like [`EdgeListener::bind`], and also offers ALPN `argotunnel` on the same port, so
    /// unmodified cloudflared connectors can connect: their handshakes present `argotunnel`
    /// (a certificate for the name cloudflared asks for, `quic.cftunnel.com`), and
    /// [`IncomingPeer::register`] hands their connections over as [`EdgePeer::Argotunnel`].
    pub fn bind_with_argotunnel(
        addr: SocketAddr,
        identity: &ServerIdentity,
        argotunnel: &ServerIdentity,
        edge_name: &str,
        settings: TransportSettings,
    ) -> Result<Self, EndpointError> {
        Self::bind_inner(addr, identity, Some(argotunnel), edge_name, settings)
    }

    fn bind_inner(
        addr: SocketAddr,
        identity: &ServerIdentity,
        argotunnel: Option<&ServerIdentity>,
        edge_name: &str,
        settings: TransportSettings,
    ) -> Result<Self, EndpointError> {
        if edge_name.len() > crate::limits::MAX_KEY_LEN {
            return Err(EndpointError::EdgeName {
                len: edge_name.len(),
            });
        }
        let crypto = identity.quic_server_config_with(argotunnel)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut unregistered = settings.clone();
        unregistered.max_concurrent_bidi_streams = settings
            .max_concurrent_bidi_streams
            .min(UNREGISTERED_BIDI_STREAMS);
        server.transport_config(unregistered.quinn_config()?);
        let (socket, buffers) = bind_socket(addr, &settings)?;
        let endpoint = quinn::Endpoint::new(
            settings.endpoint_config(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| EndpointError::Bind { addr, source })?;
        Ok(Self {
            endpoint,
            settings,
            edge_name: edge_name.into(),
            buffers,
        })
    }

    /// The socket buffer sizes asked for and granted.
    pub fn socket_buffers(&self) -> SocketBuffers {
        self.buffers
    }

    /// The bound address (with the port the OS chose, if it was 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The next incoming connection attempt; `None` once the listener is closed.
    pub async fn accept(&self) -> Option<IncomingPeer> {
        let incoming = self.endpoint.accept().await?;
        Some(IncomingPeer {
            incoming,
            settings: self.settings.clone(),
            edge_name: self.edge_name.clone(),
        })
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.endpoint.close(varint(code.0), reason.as_bytes());
    }

    /// Waits until every connection has been closed and its close delivered.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

/// A connection attempt the edge has not yet accepted.
#[derive(Debug)]
pub struct IncomingPeer {
    incoming: quinn::Incoming,
    settings: TransportSettings,
    edge_name: Arc<str>,
}

impl IncomingPeer {
    /// Where the attempt comes from (before any handshake; a source address QUIC has not
    /// validated yet).
    pub fn remote_address(&self) -> SocketAddr {
        self.incoming.remote_address()
    }

    /// Drops the attempt without a handshake (for example when the source is blocked).
    pub fn refuse(self) {
        self.incoming.refuse();
    }

    /// Completes the handshake and runs registration: reads the peer's `register`, asks
    /// `auth` for the claim's key, checks the proof, and answers. Call it on its own task per
    /// connection. A connection that chose ALPN `argotunnel` is returned right after the
    /// handshake as [`EdgePeer::Argotunnel`], without consulting `auth`.
    pub async fn register(self, auth: &dyn Authenticator) -> Result<EdgePeer, AcceptError> {
        let addr = self.incoming.remote_address();
        let settings = self.settings;
        let started = Instant::now();
        let deadline = started + settings.register_timeout;
        let handshake = async {
            let connecting = self.incoming.accept()?;
            connecting.await
        };
        let conn = match timeout_at(tokio_deadline(deadline), handshake).await {
            Ok(Ok(c)) => c,
            Ok(Err(source)) => return Err(AcceptError::Handshake { addr, source }),
            Err(_) => {
                return Err(AcceptError::Handshake {
                    addr,
                    source: quinn::ConnectionError::TimedOut,
                })
            }
        };
        if negotiated_alpn(&conn).as_deref() == Some(ALPN_ARGOTUNNEL) {
            debug!(remote = %addr, "argotunnel connection");
            return Ok(EdgePeer::Argotunnel(ArgotunnelConnection::new(conn)));
        }
        if negotiated_alpn(&conn).as_deref() == Some(crate::enroll::ALPN_ENROLL) {
            debug!(remote = %addr, "enrollment connection");
            return Ok(EdgePeer::Enrollment(EnrollmentConnection::new(Quic(conn))));
        }
        match register_at_edge(
            Carrier::Quic(Quic(conn)),
            settings,
            &self.edge_name,
            started,
            auth,
        )
        .await?
        {
            EdgeRegistered::Connector(link) => Ok(EdgePeer::Connector(link)),
            EdgeRegistered::Client(link) => Ok(EdgePeer::Client(link)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Connector and client side.
// ---------------------------------------------------------------------------------------

/// What a connector says about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorRegistration {
    /// Tunnel, account, connector id and HA connection index.
    pub claim: ConnectorClaim,
    /// The connector's software version.
    pub software_version: String,
    /// Optional features it supports.
    pub features: Vec<String>,
}

/// What a client says about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRegistration {
    /// Device id and requested virtual network.
    pub claim: ClientClaim,
    /// The client's software version.
    pub software_version: String,
    /// Optional features it supports.
    pub features: Vec<String>,
}

/// A connector's or client's QUIC endpoint: one UDP socket that carries all of the process's
/// connections to edges.
#[derive(Debug)]
pub struct PeerEndpoint {
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    /// The same trust, offering ALPN `zt-enroll/1` (for `zt login`).
    enroll_config: quinn::ClientConfig,
    settings: TransportSettings,
    buffers: SocketBuffers,
}

impl PeerEndpoint {
    /// Binds the endpoint on `bind` (typically `0.0.0.0:0` or `[::]:0`), trusting edges
    /// through `trust`.
    pub fn bind(
        bind: SocketAddr,
        trust: &EdgeTrust,
        settings: TransportSettings,
    ) -> Result<Self, EndpointError> {
        let crypto = trust.quic_client_config()?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
        client_config.transport_config(settings.quinn_config()?);
        let crypto = trust.quic_client_config_for(crate::enroll::ALPN_ENROLL)?;
        let mut enroll_config = quinn::ClientConfig::new(Arc::new(crypto));
        enroll_config.transport_config(settings.quinn_config()?);
        let (socket, buffers) = bind_socket(bind, &settings)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| EndpointError::Bind { addr: bind, source })?;
        Ok(Self {
            endpoint,
            client_config,
            enroll_config,
            settings,
            buffers,
        })
    }

    /// The socket buffer sizes asked for and granted.
    pub fn socket_buffers(&self) -> SocketBuffers {
        self.buffers
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Closes every connection of this endpoint.
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.endpoint.close(varint(code.0), reason.as_bytes());
    }

    /// Waits until every connection has been closed and its close delivered.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }

    /// Connects to the edge's enrollment exchange (ALPN `zt-enroll/1`, the same trust as
    /// every other connection). Used by `zt login` before the device has a credential.
    pub async fn connect_enrollment(
        &self,
        edge: SocketAddr,
        server_name: &str,
    ) -> Result<EnrollmentConnection, ConnectError> {
        let deadline = Instant::now() + self.settings.register_timeout;
        let (conn, _) = self
            .handshake_with(&self.enroll_config, edge, server_name, deadline)
            .await?;
        Ok(EnrollmentConnection::new(conn))
    }

    async fn handshake(
        &self,
        edge: SocketAddr,
        server_name: &str,
        deadline: Instant,
    ) -> Result<(Carrier, crate::auth::Exporter), ConnectError> {
        let (conn, exp) = self
            .handshake_with(&self.client_config, edge, server_name, deadline)
            .await?;
        Ok((Carrier::Quic(conn), exp))
    }

    async fn handshake_with(
        &self,
        config: &quinn::ClientConfig,
        edge: SocketAddr,
        server_name: &str,
        deadline: Instant,
    ) -> Result<(Quic, crate::auth::Exporter), ConnectError> {
        let connecting = self
            .endpoint
            .connect_with(config.clone(), edge, server_name)
            .map_err(|source| ConnectError::Start { addr: edge, source })?;
        let conn = match timeout_at(tokio_deadline(deadline), connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(source)) => return Err(ConnectError::Handshake { addr: edge, source }),
            Err(_) => return Err(ConnectError::Timeout(self.settings.register_timeout)),
        };
        let conn = Quic(conn);
        let exp = conn.exporter().ok_or(ConnectError::Exporter)?;
        Ok((conn, exp))
    }

    /// Connects to the edge at `edge` (certificate checked for `server_name`) and registers
    /// a connector connection, proving possession of the tunnel secret behind `key`.
    pub async fn connect_connector(
        &self,
        edge: SocketAddr,
        server_name: &str,
        registration: ConnectorRegistration,
        key: &AuthKey,
    ) -> Result<ConnectorConnection, ConnectError> {
        let started = Instant::now();
        let deadline = started + self.settings.register_timeout;
        let (conn, exp) = self.handshake(edge, server_name, deadline).await?;
        let machine = ConnectorControl::new(
            registration.claim,
            registration.software_version,
            registration.features,
            &ProofKey::Shared(key.clone()),
            &exp,
            started,
            self.settings.register_timeout,
            self.settings.limits,
        )
        .map_err(|e| ConnectError::Control(e.into()))?;
        register_connector(conn, machine, &self.settings).await
    }

    /// Connects to the edge and registers a client connection for a device, proving
    /// possession of its secret or device key.
    pub async fn connect_client(
        &self,
        edge: SocketAddr,
        server_name: &str,
        registration: ClientRegistration,
        key: &ProofKey,
    ) -> Result<ClientConnection, ConnectError> {
        let started = Instant::now();
        let deadline = started + self.settings.register_timeout;
        let (conn, exp) = self.handshake(edge, server_name, deadline).await?;
        let machine = ClientControl::new(
            registration.claim,
            registration.software_version,
            registration.features,
            key,
            &exp,
            started,
            self.settings.register_timeout,
            self.settings.limits,
        )
        .map_err(|e| ConnectError::Control(e.into()))?;
        register_client(conn, machine, &self.settings).await
    }
}
