//! The TCP side of the endpoints: the edge's TLS-over-TCP listener and the peers' dial.
//!
//! Same TLS 1.3, same certificate, same CA pinning and the same registration as over QUIC;
//! only the carrier differs ([`Tcp`]). The listener dispatches on the negotiated ALPN, so
//! that other protocols on the same port (the pre-login enrollment exchange, cloudflared's
//! HTTP/2 mode) get their own handlers beside zt/1.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout_at;
use tracing::debug;
use zt_creds::AuthKey;

use crate::auth::{Exporter, ProofKey};
use crate::control::{ClientControl, ConnectorControl};
use crate::frame::ALPN_ZT1;
use crate::transport::argotunnel::ArgotunnelConnection;
use crate::transport::argotunnel_h2::Http2;
use crate::transport::carrier::Carrier;
use crate::transport::endpoint::{ClientRegistration, ConnectorRegistration, EdgePeer};
use crate::transport::error::{AcceptError, ConnectError, EndpointError};
use crate::transport::links::{ClientConnection, ConnectorConnection};
use crate::transport::over_tcp::Tcp;
use crate::transport::register::{
    register_at_edge, register_client, register_connector, Authenticator, EdgeRegistered,
};
use crate::transport::settings::TransportSettings;
use crate::transport::tls::{EdgeTrust, ServerIdentity, ALPN_H2, CLOUDFLARED_H2_SERVER_NAME};

/// Streams an unregistered peer may open (the control stream and a few early flows), as
/// over QUIC.
const UNREGISTERED_STREAMS: u32 = 16;

fn deadline(d: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(d)
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// The edge's TLS-over-TCP listener: zt/1 for networks that drop UDP, on the QUIC port
/// number by default.
pub struct EdgeTcpListener {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    settings: TransportSettings,
    edge_name: Arc<str>,
    cloudflared: bool,
}

impl std::fmt::Debug for EdgeTcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeTcpListener")
            .field("local", &self.listener.local_addr().ok())
            .finish()
    }
}

impl std::fmt::Debug for IncomingTcpPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingTcpPeer")
            .field("remote", &self.remote)
            .finish()
    }
}

impl std::fmt::Debug for TcpDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpDialer").finish_non_exhaustive()
    }
}

impl EdgeTcpListener {
    /// Binds `addr` (TCP) with the edge's identity.
    pub async fn bind(
        addr: SocketAddr,
        identity: &ServerIdentity,
        edge_name: &str,
        settings: TransportSettings,
    ) -> Result<Self, EndpointError> {
        Self::bind_inner(addr, identity, None, edge_name, settings).await
    }

    /// Like [`EdgeTcpListener::bind`], and also serves cloudflared's HTTP/2 mode on the
    /// same port: a client offering ALPN `h2` with server name
    /// [`CLOUDFLARED_H2_SERVER_NAME`](crate::CLOUDFLARED_H2_SERVER_NAME) gets `argotunnel`'s
    /// certificate and its connection is handed over as [`TcpPeer::Argotunnel`]; any other
    /// client offering `h2` fails the handshake.
    pub async fn bind_with_argotunnel(
        addr: SocketAddr,
        identity: &ServerIdentity,
        argotunnel: &ServerIdentity,
        edge_name: &str,
        settings: TransportSettings,
    ) -> Result<Self, EndpointError> {
        Self::bind_inner(addr, identity, Some(argotunnel), edge_name, settings).await
    }

    async fn bind_inner(
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
        let cfg = identity.tcp_server_config(argotunnel)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EndpointError::Bind { addr, source })?;
        Ok(Self {
            listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
            settings,
            edge_name: edge_name.into(),
            cloudflared: argotunnel.is_some(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next TCP connection, before its TLS handshake: the caller checks its source
    /// (the shared per-source budget, the connection bound) before spending a handshake.
    pub async fn accept(&self) -> io::Result<IncomingTcpPeer> {
        let (stream, remote) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(IncomingTcpPeer {
            stream,
            remote,
            acceptor: self.acceptor.clone(),
            settings: self.settings.clone(),
            edge_name: self.edge_name.clone(),
            cloudflared: self.cloudflared,
        })
    }
}

/// A TCP connection to the edge, not yet through its TLS handshake.
pub struct IncomingTcpPeer {
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    settings: TransportSettings,
    edge_name: Arc<str>,
    cloudflared: bool,
}

/// A TLS connection over TCP whose ALPN is not zt/1, for the protocol's own handler: the
/// stream, the source address and the TLS exporter.
#[derive(Debug)]
pub struct OtherAlpn {
    /// The negotiated ALPN.
    pub alpn: Vec<u8>,
    /// The TLS stream after the handshake.
    pub stream: tokio_rustls::server::TlsStream<TcpStream>,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The connection's TLS exporter value (label [`crate::EXPORTER_LABEL`]).
    pub exporter: Exporter,
}

/// What a TCP connection turned out to be.
#[derive(Debug)]
#[non_exhaustive]
pub enum TcpPeer {
    /// A registered zt/1 connector or client.
    Zt(EdgePeer),
    /// An unmodified cloudflared in HTTP/2 mode (ALPN `h2`, server name `h2.cftunnel.com`),
    /// its HTTP/2 client started; only from a listener bound with
    /// [`EdgeTcpListener::bind_with_argotunnel`].
    Argotunnel(ArgotunnelConnection),
    /// Another protocol the listener offered (the pre-login enrollment exchange).
    Other(Box<OtherAlpn>),
}

impl IncomingTcpPeer {
    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.remote
    }

    /// Refuses the connection (closes the TCP socket before any TLS).
    pub fn refuse(self) {
        drop(self.stream);
    }

    /// Runs the TLS handshake and, for zt/1, the registration, both within the register
    /// timeout; dispatches on the negotiated ALPN.
    pub async fn register(self, auth: &dyn Authenticator) -> Result<TcpPeer, AcceptError> {
        let addr = self.remote;
        let settings = self.settings;
        let started = Instant::now();
        let end = started + settings.register_timeout;
        let tls = match timeout_at(deadline(end), self.acceptor.accept(self.stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(source)) => return Err(AcceptError::TcpHandshake { addr, source }),
            Err(_) => {
                return Err(AcceptError::TcpHandshake {
                    addr,
                    source: timed_out("TLS handshake"),
                })
            }
        };
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        match alpn.as_deref() {
            Some(ALPN_ZT1) => {}
            // cloudflared in HTTP/2 mode asks for `h2.cftunnel.com` and, in the releases
            // seen so far, offers no ALPN at all; `h2` with that name is accepted too.
            Some(ALPN_H2) | None => {
                let name = tls.get_ref().1.server_name().map(str::to_owned);
                if !self.cloudflared || name.as_deref() != Some(CLOUDFLARED_H2_SERVER_NAME) {
                    let why = if alpn.is_none() {
                        "no ALPN negotiated (only cloudflared, asking for h2.cftunnel.com, may \
                         offer none)"
                    } else {
                        "ALPN h2 is served to cloudflared (server name h2.cftunnel.com) only"
                    };
                    return Err(AcceptError::TcpHandshake {
                        addr,
                        source: io::Error::new(io::ErrorKind::InvalidData, why),
                    });
                }
                let start = Http2::start(tls, addr, name, &settings);
                return match timeout_at(deadline(end), start).await {
                    Ok(Ok(h)) => {
                        debug!(remote = %addr, "cloudflared over HTTP/2");
                        Ok(TcpPeer::Argotunnel(ArgotunnelConnection::http2(h)))
                    }
                    Ok(Err(source)) => Err(AcceptError::TcpSession { addr, source }),
                    Err(_) => Err(AcceptError::TcpHandshake {
                        addr,
                        source: timed_out("cloudflared's HTTP/2 preface"),
                    }),
                };
            }
            // The enrollment exchange (`zt-enroll/1`).
            Some(other) => {
                let exporter = crate::transport::over_tcp::tls_exporter(tls.get_ref().1)
                    .ok_or(AcceptError::Exporter(addr))?;
                return Ok(TcpPeer::Other(Box::new(OtherAlpn {
                    alpn: other.to_vec(),
                    stream: tls,
                    remote: addr,
                    exporter,
                })));
            }
        }
        let session = Tcp::server(tls, addr, &settings, UNREGISTERED_STREAMS);
        let tcp = match timeout_at(deadline(end), session).await {
            Ok(Ok(t)) => t,
            Ok(Err(source)) => return Err(AcceptError::TcpSession { addr, source }),
            Err(_) => {
                return Err(AcceptError::TcpHandshake {
                    addr,
                    source: timed_out("HTTP/2 session start"),
                })
            }
        };
        debug!(remote = %addr, "zt/1 over TCP");
        match register_at_edge(Carrier::Tcp(tcp), settings, &self.edge_name, started, auth).await? {
            EdgeRegistered::Connector(link) => Ok(TcpPeer::Zt(EdgePeer::Connector(link))),
            EdgeRegistered::Client(link) => Ok(TcpPeer::Zt(EdgePeer::Client(link))),
        }
    }
}

/// The peers' dial over TCP: connects, runs TLS (same trust as QUIC) and starts HTTP/2.
#[derive(Clone)]
pub struct TcpDialer {
    connector: tokio_rustls::TlsConnector,
    enroll_connector: tokio_rustls::TlsConnector,
    settings: TransportSettings,
}

/// A TLS-over-TCP connection for the enrollment exchange (ALPN `zt-enroll/1`), laptop side:
/// the exchange's messages run on the TLS stream itself.
#[derive(Debug)]
pub struct TcpEnrollment {
    /// The TLS stream after the handshake.
    pub stream: tokio_rustls::client::TlsStream<TcpStream>,
    /// The connection's TLS exporter value, which the possession signature covers.
    pub exporter: Exporter,
}

impl TcpDialer {
    /// A dialer trusting the edge as `trust` says.
    pub fn new(trust: &EdgeTrust, settings: TransportSettings) -> Result<Self, EndpointError> {
        let cfg = trust.tcp_client_config()?;
        let enroll = trust.tcp_client_config_for(crate::enroll::ALPN_ENROLL)?;
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            enroll_connector: tokio_rustls::TlsConnector::from(Arc::new(enroll)),
            settings,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &TransportSettings {
        &self.settings
    }

    async fn session<IO>(
        &self,
        io: IO,
        edge: SocketAddr,
        server_name: &str,
        end: Instant,
    ) -> Result<(Carrier, Exporter), ConnectError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let name =
            rustls::pki_types::ServerName::try_from(server_name.to_owned()).map_err(|e| {
                ConnectError::TcpHandshake {
                    addr: edge,
                    source: io::Error::new(io::ErrorKind::InvalidInput, e),
                }
            })?;
        let tls = match timeout_at(deadline(end), self.connector.connect(name, io)).await {
            Ok(Ok(t)) => t,
            Ok(Err(source)) => return Err(ConnectError::TcpHandshake { addr: edge, source }),
            Err(_) => return Err(ConnectError::Timeout(self.settings.register_timeout)),
        };
        if tls.get_ref().1.alpn_protocol() != Some(ALPN_ZT1) {
            return Err(ConnectError::TcpHandshake {
                addr: edge,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the edge did not agree to zt/1",
                ),
            });
        }
        let tcp = match timeout_at(deadline(end), Tcp::client(tls, edge, &self.settings)).await {
            Ok(Ok(t)) => t,
            Ok(Err(source)) => return Err(ConnectError::TcpSession { addr: edge, source }),
            Err(_) => return Err(ConnectError::Timeout(self.settings.register_timeout)),
        };
        let exp =
            crate::transport::carrier::Transport::exporter(&tcp).ok_or(ConnectError::Exporter)?;
        Ok((Carrier::Tcp(tcp), exp))
    }

    async fn tcp(
        &self,
        edge: SocketAddr,
        over: Option<TcpStream>,
        end: Instant,
    ) -> Result<TcpStream, ConnectError> {
        let stream = match over {
            Some(s) => s,
            None => match timeout_at(deadline(end), TcpStream::connect(edge)).await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => return Err(ConnectError::TcpConnect { addr: edge, source }),
                Err(_) => return Err(ConnectError::Timeout(self.settings.register_timeout)),
            },
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Connects for the enrollment exchange of `zt login` (ALPN `zt-enroll/1`), with the
    /// same trust as zt/1; `over` as for [`TcpDialer::connect_connector`].
    pub async fn connect_enrollment(
        &self,
        edge: SocketAddr,
        server_name: &str,
        over: Option<TcpStream>,
    ) -> Result<TcpEnrollment, ConnectError> {
        let end = Instant::now() + self.settings.register_timeout;
        let stream = self.tcp(edge, over, end).await?;
        let name =
            rustls::pki_types::ServerName::try_from(server_name.to_owned()).map_err(|e| {
                ConnectError::TcpHandshake {
                    addr: edge,
                    source: io::Error::new(io::ErrorKind::InvalidInput, e),
                }
            })?;
        let tls = match timeout_at(deadline(end), self.enroll_connector.connect(name, stream)).await
        {
            Ok(Ok(t)) => t,
            Ok(Err(source)) => return Err(ConnectError::TcpHandshake { addr: edge, source }),
            Err(_) => return Err(ConnectError::Timeout(self.settings.register_timeout)),
        };
        if tls.get_ref().1.alpn_protocol() != Some(crate::enroll::ALPN_ENROLL) {
            return Err(ConnectError::TcpHandshake {
                addr: edge,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the edge did not agree to the enrollment exchange (zt-enroll/1)",
                ),
            });
        }
        let exporter = crate::transport::over_tcp::tls_exporter(tls.get_ref().1)
            .ok_or(ConnectError::Exporter)?;
        Ok(TcpEnrollment {
            stream: tls,
            exporter,
        })
    }

    async fn dial(
        &self,
        edge: SocketAddr,
        server_name: &str,
        over: Option<TcpStream>,
        end: Instant,
    ) -> Result<(Carrier, Exporter), ConnectError> {
        let stream = self.tcp(edge, over, end).await?;
        self.session(stream, edge, server_name, end).await
    }

    /// Connects and registers a connector connection over TCP; `over` is an already
    /// connected stream to use (a proxy's tunnel), else the dialer connects to `edge`.
    pub async fn connect_connector(
        &self,
        edge: SocketAddr,
        server_name: &str,
        over: Option<TcpStream>,
        registration: ConnectorRegistration,
        key: &AuthKey,
    ) -> Result<ConnectorConnection, ConnectError> {
        let started = Instant::now();
        let end = started + self.settings.register_timeout;
        let (conn, exp) = self.dial(edge, server_name, over, end).await?;
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

    /// Connects and registers a client connection over TCP; `over` as for
    /// [`TcpDialer::connect_connector`].
    pub async fn connect_client(
        &self,
        edge: SocketAddr,
        server_name: &str,
        over: Option<TcpStream>,
        registration: ClientRegistration,
        key: &ProofKey,
    ) -> Result<ClientConnection, ConnectError> {
        let started = Instant::now();
        let end = started + self.settings.register_timeout;
        let (conn, exp) = self.dial(edge, server_name, over, end).await?;
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
