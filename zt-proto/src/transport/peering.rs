//! Edge-to-edge peering over QUIC (`zt-peer/1`): one endpoint per edge that both listens
//! and dials, with mutual TLS, and the flow exchange of [`crate::peering`] over its streams.
//!
//! Who a peer is comes from its certificate alone. Both sides present a chain issued by the
//! fleet's peering CA (TLS 1.3, ALPN `zt-peer/1`, no 0-RTT, no resumption, so every
//! connection runs both checks): the chain must verify against that CA as the only trust
//! anchor, and then the edge's [`PeerVerifier`] turns the leaf into an edge id or refuses
//! it. The dialler checks the server inside the handshake (its id must be the one it
//! dialled); the accepting side checks the dialler right after it, and either refuses it
//! (application close [`CloseCode::PEER_REFUSED`], the reason as close text) or *admits*
//! it by opening the connection's first server-initiated stream with the single byte
//! `0x01`. [`PeeringEndpoint::connect`] returns only once admitted, so a dialler whose
//! certificate was refused gets a typed error rather than a connection that dies later.
//!
//! Invariants: nothing a peer sends can panic us; an open is read with at most what it
//! still needs (never the flow's bytes), bounded in size by the limits and in time by the
//! header timeout, on its own task; a bad open costs its own stream only.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, RootCertStore};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn, Instrument};
use uuid::Uuid;

use crate::error::EncodeError;
use crate::flow::{CloseCode, ResetCode};
use crate::peering::{wants, PeerDecodeError, PeerFlowAnswer, PeerFlowOpen, ALPN_PEERING};
use crate::transport::allowance::StreamAllowance;
use crate::transport::endpoint::{bind_socket, negotiated_alpn, SocketBuffers};
use crate::transport::error::{EndpointError, RespondError};
use crate::transport::settings::TransportSettings;
use crate::transport::stream::{FlowError, FlowRecvStream, FlowSendStream, FlowStream};
use crate::transport::tls::{provider, signatures_by_provider, ServerIdentity, TlsConfigError};

/// The byte the accepting edge sends, alone on its first stream, to admit the dialler.
const ADMIT: u8 = 0x01;

/// Handshakes (with the verifier and the admission) the endpoint runs or holds for
/// [`PeeringEndpoint::accept`] at once; beyond it, new attempts are refused without a
/// handshake. A fleet has a handful of edges, each
/// dialling once per peer; 64 leaves room for a whole fleet restarting at once and bounds
/// what anyone who can reach the port makes us hold.
const MAX_PENDING_HANDSHAKES: usize = 64;

/// Accepted connections waiting for [`PeeringEndpoint::accept`].
const INCOMING_QUEUE: usize = 16;

/// Read opens waiting for [`PeeringConnection::accept_flow`] before readers pause (as for
/// `zt/1` flows, see `serve`).
const FLOW_QUEUE: usize = 256;

/// Longest close reason sent with [`CloseCode::PEER_REFUSED`], in bytes: a log line's
/// worth, and well inside one packet.
const MAX_REFUSAL_REASON: usize = 256;

fn varint(code: CloseCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(code.0)
}

/// Decides who a peer is from its leaf certificate, after its chain verified against the
/// peering CA. Called on both sides of every connection: on the dialler for the server
/// (the id must be the one dialled), on the accepting side for the dialler.
///
/// The edge ids travel in the certificates as a URI subject alternative name spelled by
/// [`peer_edge_uri`](crate::peer_edge_uri).
pub trait PeerVerifier: Send + Sync + 'static {
    /// The peer's edge id, or why it is refused. The reason is logged on this side and, when
    /// accepting, sent to the peer as the close reason: keep secrets out of it.
    fn verify_peer(&self, leaf_der: &[u8]) -> Result<Uuid, String>;
}

/// What a [`PeeringEndpoint`] needs: this edge's certificate and key, the CA that issues
/// every edge's peering certificate, the transport settings and the verifier.
pub struct PeeringConfig {
    /// This edge's chain (leaf first; it may include the CA) and key. The leaf serves as
    /// server and client certificate, so it needs both extended key usages.
    pub identity: ServerIdentity,
    /// The peering CA certificate (DER): the only trust anchor for peers' chains.
    pub ca_der: Vec<u8>,
    /// Windows, stream limits, keep-alive and idle timeout; `register_timeout` bounds the
    /// handshake with its admission, `header_timeout` each incoming open.
    pub settings: TransportSettings,
    /// Turns a verified leaf into an edge id.
    pub verifier: Arc<dyn PeerVerifier>,
}

impl PeeringConfig {
    /// A configuration with the default [`TransportSettings`].
    pub fn new(identity: ServerIdentity, ca_der: Vec<u8>, verifier: Arc<dyn PeerVerifier>) -> Self {
        Self {
            identity,
            ca_der,
            settings: TransportSettings::default(),
            verifier,
        }
    }
}

impl fmt::Debug for PeeringConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeeringConfig")
            .field("identity", &self.identity)
            .field("ca_der_len", &self.ca_der.len())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A peering connection or flow failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeeringError {
    /// Dialling: the TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// Dialling: the connection could not be started (endpoint closed, bad address).
    #[error("cannot connect to the peer edge at {addr}: {source}")]
    Start {
        /// The peer's address.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectError,
    },
    /// The QUIC or TLS handshake failed: the peer's chain does not verify against the
    /// peering CA, it sent no certificate, it does not speak `zt-peer/1`, or it refused our
    /// chain; or (dialling) the connection ended before the peer admitted us.
    #[error("peering handshake with {addr} failed: {source}")]
    Handshake {
        /// The peer's address.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectionError,
    },
    /// The handshake and admission took longer than the registration timeout.
    #[error("peering handshake with {addr} not done within {after:?}")]
    Timeout {
        /// The peer's address.
        addr: SocketAddr,
        /// The timeout.
        after: Duration,
    },
    /// Our [`PeerVerifier`] refused the peer's certificate. Accepting: the connection was
    /// closed with [`CloseCode::PEER_REFUSED`] and the reason. Dialling: the handshake was
    /// aborted.
    #[error("peer edge at {addr} refused: {reason}")]
    Refused {
        /// The peer's address.
        addr: SocketAddr,
        /// The verifier's reason.
        reason: String,
    },
    /// Dialling: the server is a valid edge, but not the one dialled.
    #[error("the edge at {addr} is {got}, not the expected {expected}")]
    WrongPeer {
        /// The peer's address.
        addr: SocketAddr,
        /// The edge dialled.
        expected: Uuid,
        /// The edge its certificate names.
        got: Uuid,
    },
    /// Dialling: the peer's verifier refused our certificate (it closed the connection with
    /// [`CloseCode::PEER_REFUSED`]).
    #[error("the edge at {addr} refused our certificate: {reason}")]
    RefusedByPeer {
        /// The peer's address.
        addr: SocketAddr,
        /// The reason it sent.
        reason: String,
    },
    /// Accepting: the peer sent no certificate (the TLS layer requires one, so this is a
    /// safety net: a missing chain is never taken as admitted).
    #[error("peer edge at {addr} presented no certificate")]
    NoCertificate {
        /// The peer's address.
        addr: SocketAddr,
    },
    /// The peer broke the protocol at the connection level (its admission was not the one
    /// byte `0x01`); the connection was closed with `protocol_violation`.
    #[error("peer edge at {addr} broke the protocol: {what}")]
    Protocol {
        /// The peer's address.
        addr: SocketAddr,
        /// What it did.
        what: &'static str,
    },
    /// The connection is lost.
    #[error("peering connection lost: {0}")]
    ConnectionLost(#[from] quinn::ConnectionError),
    /// Opening a flow: the open breaks a limit; nothing was sent.
    #[error("peer flow open not sent: {0}")]
    Encode(#[from] EncodeError),
    /// Opening a flow: no answer within the answer timeout; the stream was reset with
    /// [`ResetCode::CANCELLED`]. The peer may be overloaded: consider the connection
    /// unhealthy.
    #[error("peer flow open unanswered after {0:?}")]
    Unanswered(Duration),
    /// Opening a flow: the answer cannot be decoded; the stream was reset with
    /// [`ResetCode::PROTOCOL_ERROR`].
    #[error("invalid peer flow answer: {0}")]
    BadAnswer(#[source] PeerDecodeError),
    /// Opening a flow: the peer finished its side without answering; the stream was reset
    /// with [`ResetCode::PROTOCOL_ERROR`].
    #[error("the peer edge ended the flow stream without answering")]
    NoAnswer,
    /// The flow's stream failed before the exchange was done (the peer reset it: with
    /// [`ResetCode::BAD_HEADER`] for an open it could not decode, [`ResetCode::REFUSED`]
    /// when it dropped the open unanswered).
    #[error("peer flow stream failed: {0}")]
    Stream(#[from] FlowError),
    /// Accepting a flow: the open cannot be decoded; the stream was reset both ways with
    /// [`ResetCode::BAD_HEADER`]. The connection goes on.
    #[error("invalid peer flow open from {remote}: {source}")]
    BadOpen {
        /// The peer's address.
        remote: SocketAddr,
        /// What was wrong, and where.
        #[source]
        source: PeerDecodeError,
    },
    /// Accepting a flow: the open did not arrive within the header timeout; the stream was
    /// reset both ways with [`ResetCode::BAD_HEADER`]. The connection goes on.
    #[error("peer flow open from {remote} not received within {after:?}")]
    OpenTimeout {
        /// The peer's address.
        remote: SocketAddr,
        /// The header timeout.
        after: Duration,
    },
}

/// What the endpoint's handshakes share.
struct Shared {
    identity: ServerIdentity,
    roots: Arc<RootCertStore>,
    verifier: Arc<dyn PeerVerifier>,
    settings: TransportSettings,
    transport: Arc<quinn::TransportConfig>,
}

/// The accepting side's TLS: our chain, a client certificate required and verified against
/// the CA alone.
fn server_tls(
    identity: &ServerIdentity,
    roots: Arc<RootCertStore>,
) -> Result<QuicServerConfig, TlsConfigError> {
    let provider = provider();
    let clients = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsConfigError::Rustls {
            what: "peering client verifier",
            source: rustls::Error::General(e.to_string()),
        })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsConfigError::Rustls {
            what: "TLS versions",
            source,
        })?
        .with_client_cert_verifier(clients)
        .with_single_cert(identity.chain().to_vec(), identity.key())
        .map_err(|source| TlsConfigError::Rustls {
            what: "peering certificate and key",
            source,
        })?;
    cfg.alpn_protocols = vec![ALPN_PEERING.to_vec()];
    // No 0-RTT (replayable), and no resumption: a resumed handshake presents no
    // certificate, and every connection must pass the verifier.
    cfg.max_early_data_size = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    QuicServerConfig::try_from(cfg).map_err(|e| TlsConfigError::Rustls {
        what: "QUIC server configuration",
        source: rustls::Error::General(e.to_string()),
    })
}

/// Why the dialler's server check refused, kept for a typed error (the handshake itself
/// only reports a TLS alert).
#[derive(Debug)]
enum DialRefusal {
    Refused(String),
    Wrong(Uuid),
}

/// The dialler's check of the server: the chain against the CA alone (the name dialled is
/// not an identity and is not checked), then the verifier, whose id must be the one
/// dialled.
struct PeerServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn PeerVerifier>,
    expect: Uuid,
    refusal: Arc<Mutex<Option<DialRefusal>>>,
}

impl fmt::Debug for PeerServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerServerVerifier")
            .field("expect", &self.expect)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let refusal = match self.verifier.verify_peer(end_entity.as_ref()) {
            Ok(id) if id == self.expect => return Ok(ServerCertVerified::assertion()),
            Ok(id) => DialRefusal::Wrong(id),
            Err(reason) => DialRefusal::Refused(reason),
        };
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(refusal);
        }
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    signatures_by_provider!();
}

impl Shared {
    /// The dialler's TLS for one connection: built per dial because the expected edge is
    /// part of the server check (and so there is no session cache to resume from).
    fn client_tls(
        &self,
        expect: Uuid,
        refusal: Arc<Mutex<Option<DialRefusal>>>,
    ) -> Result<QuicClientConfig, TlsConfigError> {
        let provider = provider();
        let servers = PeerServerVerifier {
            roots: self.roots.clone(),
            provider: provider.clone(),
            verifier: self.verifier.clone(),
            expect,
            refusal,
        };
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|source| TlsConfigError::Rustls {
                what: "TLS versions",
                source,
            })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(servers))
            .with_client_auth_cert(self.identity.chain().to_vec(), self.identity.key())
            .map_err(|source| TlsConfigError::Rustls {
                what: "peering certificate and key",
                source,
            })?;
        cfg.alpn_protocols = vec![ALPN_PEERING.to_vec()];
        cfg.enable_early_data = false;
        cfg.resumption = rustls::client::Resumption::disabled();
        QuicClientConfig::try_from(cfg).map_err(|e| TlsConfigError::Rustls {
            what: "QUIC client configuration",
            source: rustls::Error::General(e.to_string()),
        })
    }
}

/// The reason text of a refusal, cut to [`MAX_REFUSAL_REASON`] bytes at a character
/// boundary.
fn refusal_reason(reason: &str) -> &str {
    let mut cut = reason.len().min(MAX_REFUSAL_REASON);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    &reason[..cut]
}

/// The error for a connection that ended before it was admitted: the peer's refusal when
/// it said so, a failed handshake otherwise.
fn not_admitted(addr: SocketAddr, e: quinn::ConnectionError) -> PeeringError {
    match e {
        quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code == varint(CloseCode::PEER_REFUSED) =>
        {
            PeeringError::RefusedByPeer {
                addr,
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            }
        }
        source => PeeringError::Handshake { addr, source },
    }
}

/// This edge's peering endpoint: one UDP socket and one QUIC endpoint that accepts peers'
/// connections and dials them.
///
/// Incoming handshakes run on their own tasks (at most 64 at once), so a slow one never
/// delays the others; [`PeeringEndpoint::accept`] hands over their outcomes. Dropping the
/// endpoint stops accepting; [`PeeringEndpoint::close`] also closes every connection.
pub struct PeeringEndpoint {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Result<PeeringConnection, PeeringError>>>,
    acceptor: tokio::task::AbortHandle,
    buffers: SocketBuffers,
}

impl fmt::Debug for PeeringEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeeringEndpoint")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Drop for PeeringEndpoint {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl PeeringEndpoint {
    /// Binds the endpoint on `addr` and starts accepting. Must be called inside a tokio
    /// runtime. Fails if the CA, certificate or key is unusable, a setting is out of range
    /// or the socket cannot be bound.
    pub fn bind(addr: SocketAddr, config: PeeringConfig) -> Result<Self, EndpointError> {
        let PeeringConfig {
            identity,
            ca_der,
            settings,
            verifier,
        } = config;
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca_der))
            .map_err(|source| TlsConfigError::Rustls {
                what: "peering CA certificate",
                source,
            })?;
        let roots = Arc::new(roots);
        let transport = settings.quinn_config()?;
        let mut server =
            quinn::ServerConfig::with_crypto(Arc::new(server_tls(&identity, roots.clone())?));
        server.transport_config(transport.clone());
        let shared = Arc::new(Shared {
            identity,
            roots,
            verifier,
            settings,
            transport,
        });
        // The client side too, so a key that does not match fails here, not at first dial.
        shared.client_tls(Uuid::nil(), Arc::default())?;
        let (socket, buffers) = bind_socket(addr, &shared.settings)?;
        let endpoint = quinn::Endpoint::new(
            shared.settings.endpoint_config(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| EndpointError::Bind { addr, source })?;
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        let acceptor = tokio::spawn(accept_loop(endpoint.clone(), shared.clone(), tx));
        Ok(Self {
            endpoint,
            shared,
            incoming: tokio::sync::Mutex::new(rx),
            acceptor: acceptor.abort_handle(),
            buffers,
        })
    }

    /// The bound address (with the port the OS chose, if it was 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The socket buffer sizes asked for and granted.
    pub fn socket_buffers(&self) -> SocketBuffers {
        self.buffers
    }

    /// The next incoming connection, once its handshake passed and the verifier admitted
    /// it; `Err` for one that failed (to log: the peer has been refused and told so), `None`
    /// once the endpoint is closed.
    pub async fn accept(&self) -> Option<Result<PeeringConnection, PeeringError>> {
        self.incoming.lock().await.recv().await
    }

    /// Dials the edge `expect_edge` at `addr`: the server's chain must verify against the
    /// CA and the verifier must name `expect_edge`; then it must admit us. The whole is
    /// bounded by the settings' `register_timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expect_edge: Uuid,
    ) -> Result<PeeringConnection, PeeringError> {
        let after = self.shared.settings.register_timeout;
        let deadline = Instant::now() + after;
        let refusal = Arc::new(Mutex::new(None));
        let crypto = self.shared.client_tls(expect_edge, refusal.clone())?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(self.shared.transport.clone());
        // The name is not an identity here (the verifier is): an IP literal sends no SNI.
        let server_name = addr.ip().to_string();
        let connecting = self
            .endpoint
            .connect_with(config, addr, &server_name)
            .map_err(|source| PeeringError::Start { addr, source })?;
        let conn = match timeout_at(deadline, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(source)) => {
                let refused = refusal.lock().ok().and_then(|mut r| r.take());
                return Err(match refused {
                    Some(DialRefusal::Wrong(got)) => PeeringError::WrongPeer {
                        addr,
                        expected: expect_edge,
                        got,
                    },
                    Some(DialRefusal::Refused(reason)) => PeeringError::Refused { addr, reason },
                    None => PeeringError::Handshake { addr, source },
                });
            }
            Err(_) => return Err(PeeringError::Timeout { addr, after }),
        };
        match timeout_at(deadline, admission(&conn, addr)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                conn.close(varint(CloseCode::NO_ERROR), b"not admitted in time");
                return Err(PeeringError::Timeout { addr, after });
            }
        }
        debug!(remote = %addr, peer_edge = %expect_edge, "peering connection up");
        Ok(PeeringConnection::new(
            conn,
            expect_edge,
            &self.shared.settings,
        ))
    }

    /// Closes every connection of the endpoint with `code` and `reason`, and stops
    /// accepting.
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.endpoint.close(varint(code), reason.as_bytes());
    }

    /// Waits until every connection has been closed and its close delivered.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

/// Waits for the accepting side's admission: its first stream, holding the byte `0x01`.
async fn admission(conn: &quinn::Connection, addr: SocketAddr) -> Result<(), PeeringError> {
    let (_send, mut recv) = conn.accept_bi().await.map_err(|e| not_admitted(addr, e))?;
    let violation = |what: &'static str| {
        conn.close(varint(CloseCode::PROTOCOL_VIOLATION), what.as_bytes());
        PeeringError::Protocol { addr, what }
    };
    match recv.read_to_end(1).await {
        Ok(bytes) if bytes == [ADMIT] => Ok(()),
        Ok(_) | Err(quinn::ReadToEndError::TooLong) => Err(violation("admission is not 0x01")),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e))) => {
            Err(not_admitted(addr, e))
        }
        Err(quinn::ReadToEndError::Read(_)) => Err(violation("admission stream reset")),
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<PeeringConnection, PeeringError>>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            warn!(remote = %remote, "too many peering handshakes in progress; refusing one");
            incoming.refuse();
            continue;
        };
        let (shared, tx) = (shared.clone(), tx.clone());
        tokio::spawn(
            async move {
                let outcome = accept_one(incoming, &shared).await;
                // Nobody accepts any more: dropping the connection closes it. The permit is
                // held until the outcome is taken, so an application that stops accepting
                // makes new attempts wait at the door, not pile up here.
                let _ = tx.send(outcome).await;
                drop(permit);
            }
            .instrument(tracing::debug_span!("zt_peer_accept", remote = %remote)),
        );
    }
}

/// One incoming connection: handshake, verifier, admission.
async fn accept_one(
    incoming: quinn::Incoming,
    shared: &Shared,
) -> Result<PeeringConnection, PeeringError> {
    let addr = incoming.remote_address();
    let after = shared.settings.register_timeout;
    let deadline = Instant::now() + after;
    let handshake = async { incoming.accept()?.await };
    let conn = match timeout_at(deadline, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(source)) => return Err(PeeringError::Handshake { addr, source }),
        Err(_) => return Err(PeeringError::Timeout { addr, after }),
    };
    let refuse = |reason: String| {
        conn.close(
            varint(CloseCode::PEER_REFUSED),
            refusal_reason(&reason).as_bytes(),
        );
        reason
    };
    // rustls refuses a client that offers other protocols; one that offers none at all
    // would get here with none negotiated.
    if negotiated_alpn(&conn).as_deref() != Some(ALPN_PEERING) {
        let reason = refuse("zt-peer/1 not negotiated".into());
        return Err(PeeringError::Refused { addr, reason });
    }
    let leaf = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().cloned());
    let Some(leaf) = leaf else {
        refuse("no client certificate".into());
        return Err(PeeringError::NoCertificate { addr });
    };
    let peer_edge = match shared.verifier.verify_peer(leaf.as_ref()) {
        Ok(id) => id,
        Err(reason) => {
            let reason = refuse(reason);
            warn!(remote = %addr, reason = %reason, "peer edge refused");
            return Err(PeeringError::Refused { addr, reason });
        }
    };
    let admit = async {
        let (mut send, _recv) = conn.open_bi().await?;
        send.write_all(&[ADMIT])
            .await
            .map_err(|e| PeeringError::Stream(e.into()))?;
        send.finish()
            .map_err(|_| PeeringError::Stream(FlowError::Closed))?;
        Ok::<_, PeeringError>(())
    };
    match timeout_at(deadline, admit).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(PeeringError::Timeout { addr, after }),
    }
    debug!(remote = %addr, peer_edge = %peer_edge, "peering connection admitted");
    Ok(PeeringConnection::new(conn, peer_edge, &shared.settings))
}

type FlowItem = Result<(PeerFlowOpen, PeerFlowResponder), PeeringError>;

struct ConnInner {
    conn: quinn::Connection,
    peer_edge: Uuid,
    settings: TransportSettings,
    flows: tokio::sync::Mutex<mpsc::Receiver<FlowItem>>,
}

/// A verified connection to a peer edge. Either side may open flows on it
/// ([`PeeringConnection::open_flow`]) and serve the other's
/// ([`PeeringConnection::accept_flow`]). Clones share the connection; it closes when the
/// last clone and the last flow on it are dropped, or on [`PeeringConnection::close`].
#[derive(Clone)]
pub struct PeeringConnection {
    inner: Arc<ConnInner>,
}

impl fmt::Debug for PeeringConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeeringConnection")
            .field("peer_edge", &self.inner.peer_edge)
            .field("remote", &self.inner.conn.remote_address())
            .finish_non_exhaustive()
    }
}

impl PeeringConnection {
    fn new(conn: quinn::Connection, peer_edge: Uuid, settings: &TransportSettings) -> Self {
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        let span = tracing::debug_span!(
            "zt_peer",
            remote = %conn.remote_address(),
            peer_edge = %peer_edge
        );
        tokio::spawn(flow_acceptor(conn.clone(), settings.clone(), tx).instrument(span));
        Self {
            inner: Arc::new(ConnInner {
                conn,
                peer_edge,
                settings: settings.clone(),
                flows: tokio::sync::Mutex::new(rx),
            }),
        }
    }

    /// The peer's edge id, as its verifier-checked certificate names it.
    pub fn peer_edge(&self) -> Uuid {
        self.inner.peer_edge
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.conn.remote_address()
    }

    /// Opens a stream, sends `open` and waits at most `answer_timeout` (opening the stream
    /// included) for the answer. The flow's stream comes back only when the answer is ok;
    /// after a refusal this side's half is finished too. Nothing past the answer is read.
    pub async fn open_flow(
        &self,
        open: &PeerFlowOpen,
        answer_timeout: Duration,
    ) -> Result<(PeerFlowAnswer, Option<FlowStream>), PeeringError> {
        let mut wire = BytesMut::new();
        open.encode_with(&mut wire, &self.inner.settings.limits)?;
        let conn = &self.inner.conn;
        let deadline = Instant::now() + answer_timeout;
        let (send, recv) = match timeout_at(deadline, conn.open_bi()).await {
            Ok(Ok(streams)) => streams,
            Ok(Err(e)) => return Err(PeeringError::ConnectionLost(e)),
            Err(_) => return Err(PeeringError::Unanswered(answer_timeout)),
        };
        let mut send = FlowSendStream::from_quic(send);
        let mut recv = FlowRecvStream::from_quic(recv, Some(conn.clone()));
        let exchange = async {
            send.write_chunk(wire.freeze()).await?;
            read_answer(&mut recv).await
        };
        let answer = match timeout_at(deadline, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                let code = match e {
                    PeeringError::BadAnswer(_) | PeeringError::NoAnswer => {
                        ResetCode::PROTOCOL_ERROR
                    }
                    _ => ResetCode::CANCELLED,
                };
                send.reset(code);
                recv.stop(code);
                return Err(e);
            }
            Err(_) => {
                send.reset(ResetCode::CANCELLED);
                recv.stop(ResetCode::CANCELLED);
                return Err(PeeringError::Unanswered(answer_timeout));
            }
        };
        if answer.is_ok() {
            let flow = FlowStream::new(open.flow.flow_id, send, recv);
            Ok((answer, Some(flow)))
        } else {
            // The peer finished its side after the refusal; this side follows.
            let _ = send.finish();
            Ok((answer, None))
        }
    }

    /// The next open the peer sent, with the responder that answers it; `Err` for an open
    /// that was malformed or late (its stream already reset, the connection still up);
    /// `None` once the connection is closed.
    pub async fn accept_flow(
        &self,
    ) -> Option<Result<(PeerFlowOpen, PeerFlowResponder), PeeringError>> {
        self.inner.flows.lock().await.recv().await
    }

    /// Waits until the connection is closed and says why.
    pub async fn closed(&self) -> quinn::ConnectionError {
        self.inner.conn.closed().await
    }

    /// Closes the connection with `code` and `reason`; its flows fail.
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.inner.conn.close(varint(code), reason.as_bytes());
    }

    /// Whether the connection is closed (by either side, or lost).
    pub fn is_closed(&self) -> bool {
        self.inner.conn.close_reason().is_some()
    }
}

/// Reads the answer, never past it.
async fn read_answer(recv: &mut FlowRecvStream) -> Result<PeerFlowAnswer, PeeringError> {
    let mut received = BytesMut::new();
    loop {
        match PeerFlowAnswer::decode(&mut &received[..]) {
            Ok(Some(answer)) => return Ok(answer),
            Ok(None) => {}
            Err(e) => return Err(PeeringError::BadAnswer(e)),
        }
        match recv.read_up_to(wants(&received)).await? {
            Some(chunk) => received.extend_from_slice(&chunk),
            None => return Err(PeeringError::NoAnswer),
        }
    }
}

/// Takes the streams the peer opens and reads each open on its own task, until the
/// connection closes or nobody can accept flows any more.
async fn flow_acceptor(
    conn: quinn::Connection,
    settings: TransportSettings,
    tx: mpsc::Sender<FlowItem>,
) {
    let remote = conn.remote_address();
    let allowance = StreamAllowance::new(
        settings.initial_bidi_streams(),
        settings.max_concurrent_bidi_streams,
    );
    loop {
        let (send, recv) = tokio::select! {
            streams = conn.accept_bi() => match streams {
                Ok(streams) => streams,
                Err(e) => {
                    debug!(reason = %e, "peering connection closed");
                    return;
                }
            },
            // Every handle is gone: stop holding the connection open.
            () = tx.closed() => return,
        };
        let send = FlowSendStream::from_quic(send);
        let mut recv = FlowRecvStream::from_quic(recv, Some(conn.clone()));
        let (slot, raised) = allowance.admit();
        if let Some(n) = raised {
            debug!(streams = n, "peer edge's stream allowance raised");
            conn.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(n));
        }
        recv.hold_slot(slot);
        let (tx, settings) = (tx.clone(), settings.clone());
        tokio::spawn(
            async move {
                if let Some(item) = read_open(remote, &settings, send, recv).await {
                    // Nobody accepts any more: the responder's drop refuses the flow.
                    let _ = tx.send(item).await;
                }
            }
            .instrument(tracing::debug_span!("zt_peer_flow")),
        );
    }
}

/// Why an open was not read.
enum OpenFailure {
    /// The stream ended or failed first: nothing to answer.
    Gone(Option<FlowError>),
    /// The bytes can never be an open.
    Bad(PeerDecodeError),
}

async fn read_open(
    remote: SocketAddr,
    settings: &TransportSettings,
    mut send: FlowSendStream,
    mut recv: FlowRecvStream,
) -> Option<FlowItem> {
    let limits = settings.limits;
    let read = async {
        let mut received = BytesMut::new();
        loop {
            match PeerFlowOpen::decode_with(&mut &received[..], &limits) {
                Ok(Some(open)) => return Ok(open),
                Ok(None) => {}
                Err(e) => return Err(OpenFailure::Bad(e)),
            }
            // Never more than the open still needs: what follows is the flow's.
            match recv.read_up_to(wants(&received)).await {
                Ok(Some(chunk)) => received.extend_from_slice(&chunk),
                Ok(None) => return Err(OpenFailure::Gone(None)),
                Err(e) => return Err(OpenFailure::Gone(Some(e))),
            }
        }
    };
    let after = settings.header_timeout;
    match tokio::time::timeout(after, read).await {
        Ok(Ok(open)) => {
            debug!(
                tunnel = %open.tunnel_id,
                from_edge = %open.from_edge,
                flow = open.flow.flow_id,
                "peer flow open"
            );
            let responder = PeerFlowResponder {
                flow_id: open.flow.flow_id,
                streams: Some((send, recv)),
            };
            Some(Ok((open, responder)))
        }
        Ok(Err(OpenFailure::Bad(source))) => {
            warn!(error = %source, "resetting a peer flow stream with a bad open");
            send.reset(ResetCode::BAD_HEADER);
            recv.stop(ResetCode::BAD_HEADER);
            Some(Err(PeeringError::BadOpen { remote, source }))
        }
        Ok(Err(OpenFailure::Gone(error))) => {
            debug!(error = ?error, "peer flow stream ended before its open");
            None
        }
        Err(_) => {
            debug!("peer flow open not received in time; resetting the stream");
            send.reset(ResetCode::BAD_HEADER);
            recv.stop(ResetCode::BAD_HEADER);
            Some(Err(PeeringError::OpenTimeout { remote, after }))
        }
    }
}

/// The answer to a peer's open. Dropping it unanswered resets the stream with
/// [`ResetCode::REFUSED`].
#[derive(Debug)]
pub struct PeerFlowResponder {
    flow_id: u64,
    streams: Option<(FlowSendStream, FlowRecvStream)>,
}

impl PeerFlowResponder {
    /// The flow's id (the one in the open's flow header).
    pub fn flow_id(&self) -> u64 {
        self.flow_id
    }

    /// Sends `answer`. An ok answer hands back the flow's byte stream; a refusal finishes
    /// the stream after the answer and returns `None`. Fails, refusing the flow with
    /// [`ResetCode::REFUSED`], when the answer cannot be encoded (see
    /// [`PeerFlowAnswer::encode`]).
    pub async fn answer(
        mut self,
        answer: PeerFlowAnswer,
    ) -> Result<Option<FlowStream>, RespondError> {
        let mut wire = BytesMut::new();
        answer.encode(&mut wire)?;
        let Some((mut send, recv)) = self.streams.take() else {
            return Err(RespondError::Stream(FlowError::Closed));
        };
        send.write_chunk(wire.freeze()).await?;
        if answer.is_ok() {
            Ok(Some(FlowStream::new(self.flow_id, send, recv)))
        } else {
            let _ = send.finish();
            Ok(None)
        }
    }
}

impl Drop for PeerFlowResponder {
    fn drop(&mut self) {
        if let Some((mut send, mut recv)) = self.streams.take() {
            send.reset(ResetCode::REFUSED);
            recv.stop(ResetCode::REFUSED);
        }
    }
}

#[cfg(test)]
mod tests;
