//! The zt tunnel wire protocol (`zt/1`): how connectors, clients and the edge talk.
//!
//! The crate has two layers:
//!
//! - **An I/O-free core** — frames ([`ControlFrame`], [`FlowHeader`], [`FlowStatus`],
//!   [`Datagram`]) with `encode(&mut BytesMut)` and `decode(&mut impl Buf)` that tell "need
//!   more bytes" (`Ok(None)`) from "invalid" (`Err`); the control-stream state machines
//!   ([`ConnectorControl`], [`ClientControl`], [`EdgeControl`]) that take bytes and time in
//!   and hand bytes and events out; and the proof of possession ([`compute_proof`],
//!   [`verify_proof`]) bound to the TLS connection. No sockets, no clocks, no async.
//!   The flow-open exchange is a machine too: [`FlowOpener`] (header out, status in) and
//!   [`FlowAcceptor`] (header in), which take bytes in any pieces and never read past the
//!   exchange. Edges forwarding flows to each other (`zt-peer/1`) speak
//!   [`PeerFlowOpen`] and [`PeerFlowAnswer`] (with [`PeerConnectorInfo`]), whose errors
//!   ([`PeerDecodeError`]) name the byte offset at fault; [`peer_edge_uri`] spells the
//!   certificate name that carries an edge's id.
//! - **The transport** (cargo feature `transport`, on by default) that drives the core.
//!   One driver loop runs every control machine, during registration and after, over the
//!   [`Transport`] seam: bidirectional streams with half-close and reset, datagrams, the TLS
//!   exporter, the peer's address. QUIC ([`Quic`], quinn and rustls) implements it today.
//!   Above the seam: endpoints ([`EdgeListener`], [`PeerEndpoint`]), registration, the role
//!   handles ([`ConnectorLink`], [`ClientLink`], [`ConnectorConnection`],
//!   [`ClientConnection`], each over one [`Connection`] core), flows as tokio streams
//!   ([`FlowStream`]), datagrams, [`splice`] for relays, the tuned [`TransportSettings`],
//!   the [`ConnectionSet`] a client or connector holds its connections in, and the
//!   plumbing every peer runtime shares: the TCP ↔ flow splice ([`TcpSplice`], half-close
//!   and resets kept), the full-jitter reconnect [`Backoff`] (shaped by a
//!   [`BackoffPolicy`]) and the [`LearnedEdges`] a peer keeps of the edge lists the edges
//!   push. Between edges: the [`PeeringEndpoint`] (one QUIC endpoint that
//!   listens and dials, mutual TLS against one CA, a [`PeerVerifier`] that names the peer
//!   from its certificate), its [`PeeringConnection`]s and the [`PeerFlowResponder`] that
//!   answers a forwarded flow.
//!
//! The protocol itself is specified in `docs/PROTOCOL.md`, whose worked examples are this
//! crate's test vectors.
//!
//! What this crate is *not*: it knows nothing of routes, policy, identities or where a
//! connector dials — the runtimes (`zt-edge`, `zt-connector`, `zt-client`) decide those and
//! use this crate to move the bytes. It never installs a tracing subscriber.
//!
//! # Example: a registration, in memory
//!
//! ```
//! use std::time::{Duration, Instant};
//! use uuid::Uuid;
//! use zt_creds::TunnelSecret;
//! use zt_proto::{
//!     ConnectorClaim, ConnectorControl, EdgeControl, EdgeEvent, Limits, PeerEvent, ProofKey,
//!     VerifyKey,
//! };
//!
//! let secret = TunnelSecret::generate();
//! let key = secret.derive_auth_key(); // what the edge stores
//! // Both ends derive the same exporter value from their TLS connection.
//! let exporter = [7u8; 32];
//! let now = Instant::now();
//! let claim = ConnectorClaim {
//!     tunnel_id: Uuid::new_v4(),
//!     account_tag: "5ab4e9dfbd435d24068829fda0077963".into(),
//!     connector_id: Uuid::new_v4(),
//!     conn_index: 0,
//! };
//! let timeout = Duration::from_secs(5);
//! let mut connector =
//!     ConnectorControl::new(claim, "zt 0.1", vec![], &ProofKey::Shared(key.clone()), &exporter, now, timeout, Limits::default())?;
//! let mut edge = EdgeControl::new(exporter, Uuid::new_v4(), "edge-1", now, timeout, Limits::default());
//!
//! edge.handle_input(&connector.poll_transmit().expect("register frame"))?;
//! let Some(EdgeEvent::AuthRequired(_claim)) = edge.poll_event() else { unreachable!() };
//! edge.authenticate(Some(&VerifyKey::Shared(key))); // the edge looked the key up for the claim
//! connector.handle_input(&edge.poll_transmit().expect("answer"))?;
//! assert!(matches!(connector.poll_event(), Some(PeerEvent::Registered(r)) if r.edge_name == "edge-1"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Example: an edge and a client over QUIC on loopback
//!
//! The edge binds a [`EdgeListener`], registers each [`IncomingPeer`] with an
//! [`Authenticator`] it supplies, and serves the client's flows; the client dials with a
//! [`PeerEndpoint`] that trusts the edge's CA, and opens a [`FlowStream`].
//!
//! ```
//! # use std::sync::Arc;
//! # use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use zt_creds::{AuthKey, TunnelSecret};
//! use zt_proto::*;
//!
//! struct OneDevice(uuid::Uuid, AuthKey);
//! impl Authenticator for OneDevice {
//!     fn verify_key(&self, claim: &Claim) -> Option<VerifyKey> {
//!         match claim {
//!             Claim::Client(c) if c.device_id == self.0 => Some(VerifyKey::Shared(self.1.clone())),
//!             _ => None,
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let ca_key = KeyPair::generate()?;
//! # let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
//! # ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
//! # let ca = ca_params.self_signed(&ca_key)?;
//! # let key = KeyPair::generate()?;
//! # let cert = CertificateParams::new(vec!["edge.example".to_owned()])?
//! #     .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))?;
//! # let (chain_pem, key_pem, ca_der) = (cert.pem() + &ca.pem(), key.serialize_pem(), ca.der().to_vec());
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     // The edge: its chain (server certificate, then CA) and key, made elsewhere.
//!     let identity = ServerIdentity::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
//!     let edge = EdgeListener::bind("127.0.0.1:0".parse()?, &identity, "edge-1", TransportSettings::default())?;
//!     let edge_addr = edge.local_addr()?;
//!     let device = uuid::Uuid::new_v4();
//!     let secret = TunnelSecret::generate();
//!     let auth = OneDevice(device, secret.derive_auth_key());
//!     let server = tokio::spawn(async move {
//!         let incoming = edge.accept().await.expect("a connection");
//!         let Ok(EdgePeer::Client(link)) = incoming.register(&auth).await else { panic!() };
//!         let (header, responder) = link.accept_flow().await.expect("a flow");
//!         assert_eq!(header.dest.port(), 443);
//!         let mut flow = responder.accept().await?;
//!         flow.write_all(b"hello from the edge").await?;
//!         flow.shutdown().await?; // FIN: the client reads EOF
//!         flow.send_half().stopped().await?;
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//!     });
//!
//!     // The client: trusts the edge's CA (or its SHA-256 fingerprint) and registers.
//!     let endpoint = PeerEndpoint::bind("127.0.0.1:0".parse()?, &EdgeTrust::ca_der(ca_der), TransportSettings::default())?;
//!     let registration = ClientRegistration {
//!         claim: ClientClaim { device_id: device, vnet: String::new() },
//!         software_version: "example".into(),
//!         features: vec![],
//!     };
//!     let conn = endpoint.connect_client(edge_addr, "edge.example", registration, &ProofKey::Shared(secret.derive_auth_key())).await?;
//!     let mut flow = conn.open_flow("198.51.100.101:443".parse()?, Protocol::Tcp, vec![]).await?;
//!     let mut reply = String::new();
//!     flow.read_to_string(&mut reply).await?;
//!     assert_eq!(reply, "hello from the edge");
//!     server.await?.map_err(|e| e.to_string())?;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod control;
mod edges;
mod enroll;
mod error;
mod flow;
mod frame;
mod limits;
mod open;
mod peering;
mod session;
#[cfg(feature = "transport")]
mod transport;
mod wire;

// Frames and their errors.
pub use edges::LearnedEdges;
pub use error::{DecodeError, EncodeError};
pub use flow::{
    CloseCode, Datagram, FlowHeader, FlowStatus, FlowStatusCode, Protocol, ResetCode,
    FLOW_HEADER_PREFIX_LEN, FLOW_STATUS_PREFIX_LEN,
};
pub use frame::{
    session_feature, Claim, ClientClaim, ConnectorClaim, ControlFrame, EdgeList, GoAway,
    PostureCheck, PostureReport, Proof, Register, RegisterError, RegisterErrorCode, Registered,
    RetryAdvice, RoutePush, Unregister, ALPN_ZT1, CONTROL_HEADER_LEN, EDGE_LIST_FEATURE,
    MAX_EDGE_LIST, PROOF_LEN, PROTOCOL_VERSION, SESSION_FEATURE_PREFIX, SIGNATURE_PROOF_LEN,
};
pub use limits::{
    Limits, DEFAULT_MAX_CONTROL_FRAME_LEN, DEFAULT_MAX_DATAGRAM_PAYLOAD, DEFAULT_MAX_HEADER_LEN,
    DEFAULT_MAX_METADATA_ENTRIES, DEFAULT_MAX_PENDING_OPENS, MAX_FEATURES, MAX_KEY_LEN,
    MAX_POSTURE_CHECKS, MAX_TEXT_LEN,
};

// The TCP transport's session-stream frames (datagrams, close).
pub use session::{SessionFrame, MAX_CLOSE_REASON, MAX_SESSION_DATAGRAM, SESSION_FRAME_HEADER_LEN};

// The flow-open exchange.
pub use open::{FlowAcceptor, FlowOpener};

// Edge-to-edge peering messages (`zt-peer/1`).
pub use peering::{
    peer_edge_from_uri, peer_edge_uri, PeerConnectorInfo, PeerConnectorKind, PeerDecodeError,
    PeerFlowAnswer, PeerFlowOpen, ALPN_PEERING, MAX_PEER_ANSWER_LEN, MAX_PEER_TRANSPORT_LEN,
    PEER_EDGE_URI_PREFIX, PEER_FRAME_PREFIX_LEN,
};

// Proof of possession.
pub use auth::{
    compute_proof, sign_register, verify_proof, Exporter, ProofKey, VerifyKey, EXPORTER_CONTEXT,
    EXPORTER_LABEL, EXPORTER_LEN, PROOF_DOMAIN, SIGNATURE_DOMAIN,
};

// The enrollment exchange (`zt login`).
pub use enroll::{
    from_hex, login_nonce, parse_message, possession_message, to_hex, EnrollDecoder, EnrollError,
    EnrollFlow, EnrollMessage, ALPN_ENROLL, CHALLENGE_LEN, ENROLL_VERSION, MAX_ENROLL_MESSAGE_LEN,
    POSSESSION_DOMAIN,
};

// Control-stream state machines.
pub use control::{
    ClientControl, ClientRole, ConnectorControl, ConnectorRole, ControlError, EdgeControl,
    EdgeEvent, PeerControl, PeerEvent, PeerRole, RefusalReason, REFUSED_MESSAGE,
};

// The transport (feature `transport`).
#[cfg(feature = "transport")]
pub use transport::{
    argotunnel::{ArgotunnelConnection, ArgotunnelProtocol},
    argotunnel_h2::{
        CLOUDFLARED_PROXY_SRC_HEADER, CLOUDFLARED_RESPONSE_META_HEADER, CLOUDFLARED_UPGRADE_HEADER,
    },
    backoff::{Backoff, BackoffPolicy},
    carrier::{Carrier, ConnectionLost, Quic, Transport},
    datagrams::UdpFlow,
    endpoint::{
        ClientRegistration, ConnectorRegistration, EdgeListener, EdgePeer, IncomingPeer,
        PeerEndpoint, SocketBuffers,
    },
    enrollment::EnrollmentConnection,
    error::{
        AcceptError, ConnectError, ControlSendError, DatagramError, EndpointError, OpenError,
        RespondError,
    },
    links::{
        ClientConnection, ClientLink, Connection, ConnectorConnection, ConnectorLink, EdgeLink,
    },
    over_tcp::{Tcp, TcpSessionError, PARKED_REVERSE},
    peering::{
        PeerFlowResponder, PeerVerifier, PeeringConfig, PeeringConnection, PeeringEndpoint,
        PeeringError,
    },
    register::{Admission, Authenticator},
    serve::{FlowRequest, FlowResponder},
    set::{ConnectionSet, MemberReport, Pinned, Placement},
    settings::{
        Congestion, SettingsError, StatelessResetKey, TransportSettings, MAX_MTU_UPPER_BOUND,
    },
    stream::{
        relay, splice, FlowError, FlowRecvStream, FlowSendStream, FlowStream, RelayEnd,
        RelayOutcome, RELAY_BATCH,
    },
    tcp::{SpliceCounter, TcpSplice, TcpSpliceOutcome, WriteFailure},
    tcp_endpoint::{
        EdgeTcpListener, IncomingTcpPeer, OtherAlpn, TcpDialer, TcpEnrollment, TcpPeer,
    },
    tls::{
        EdgeTrust, ServerIdentity, TlsConfigError, ALPN_ARGOTUNNEL, ALPN_H2,
        CLOUDFLARED_H2_SERVER_NAME,
    },
};
