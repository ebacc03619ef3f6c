//! Control-stream frames: the messages that register a connection and manage it afterwards.
//!
//! Layout of every frame: `type: u8 | length: u32 | payload[length]` (big-endian). A decoder
//! checks `length` against [`Limits::max_control_frame_len`] as soon as the five header bytes
//! are in, before waiting for the payload. Types `0x80..=0xff` are extensions a receiver
//! skips, so later versions can add frames without breaking `zt/1` peers.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use ipnet::IpNet;
use uuid::Uuid;

use crate::error::{DecodeError, EncodeError};
use crate::limits::{Limits, MAX_FEATURES, MAX_POSTURE_CHECKS, MAX_TEXT_LEN};
use crate::wire::{check_len, peek, put_ip, put_str16, put_str8, Reader};

/// The protocol version this crate speaks; also the digit in the ALPN id `zt/1`.
pub const PROTOCOL_VERSION: u16 = 1;

/// The prefix of a client's `register` feature that names the device session the
/// connection joins (`session=<uuid>`): every connection of one client carries the same id,
/// and the edge keeps one session per device and id across them.
pub const SESSION_FEATURE_PREFIX: &str = "session=";

/// The device session a client's features name (the `session=<uuid>` feature), if any.
pub fn session_feature(features: &[String]) -> Option<uuid::Uuid> {
    features
        .iter()
        .find_map(|f| f.strip_prefix(SESSION_FEATURE_PREFIX))
        .and_then(|id| uuid::Uuid::try_parse(id).ok())
}
/// The `register` feature a connector or client offers when it takes
/// [`ControlFrame::EdgeList`] pushes; the edge sends them to no other peer.
pub const EDGE_LIST_FEATURE: &str = "edge-list";

/// Most addresses one [`EdgeList`] carries.
pub const MAX_EDGE_LIST: usize = 64;

/// The TLS ALPN protocol id of this version.
pub const ALPN_ZT1: &[u8] = b"zt/1";
/// Length of the proof of possession carried by a register frame (an HMAC-SHA256).
pub const PROOF_LEN: usize = 32;
/// Bytes before a control frame's payload: type (1) and length (4).
pub const CONTROL_HEADER_LEN: usize = 5;

const T_REGISTER: u8 = 0x01;
const T_REGISTERED: u8 = 0x02;
const T_REGISTER_ERROR: u8 = 0x03;
const T_GO_AWAY: u8 = 0x04;
const T_UNREGISTER: u8 = 0x05;
const T_PING: u8 = 0x06;
const T_PONG: u8 = 0x07;
const T_ROUTE_PUSH: u8 = 0x08;
const T_POSTURE_REPORT: u8 = 0x09;
const T_EDGE_LIST: u8 = 0x0a;
const T_EXTENSION_MIN: u8 = 0x80;

/// Who a registering peer says it is. The edge looks the claim up to find the key the proof
/// must be made with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// A connector serving a tunnel.
    Connector(ConnectorClaim),
    /// A client device.
    Client(ClientClaim),
}

/// A connector's identity fields in its register frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorClaim {
    /// The tunnel the connector serves.
    pub tunnel_id: Uuid,
    /// The account the tunnel belongs to (32 hex characters on a zt edge).
    pub account_tag: String,
    /// This connector process (a replica); stable for its lifetime.
    pub connector_id: Uuid,
    /// Which of the replica's HA connections this is (0-based).
    pub conn_index: u8,
}

/// A client device's identity fields in its register frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientClaim {
    /// The device.
    pub device_id: Uuid,
    /// The virtual network the client asks to use; empty for the device's default.
    pub vnet: String,
}

/// First frame on the control stream, sent by a connector or client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// Protocol version the peer speaks ([`PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// The claimed identity.
    pub claim: Claim,
    /// The peer's software version, for logs and the admin view.
    pub software_version: String,
    /// Optional features the peer supports, by name.
    pub features: Vec<String>,
    /// Proof of possession of the claimed identity's secret or key, bound to this
    /// connection (see the crate's `auth` functions).
    pub proof: Proof,
}

/// Length of an Ed25519 registration proof.
pub const SIGNATURE_PROOF_LEN: usize = 64;

/// A register frame's proof: the last bytes of the frame, whose length says the kind.
#[derive(Clone, PartialEq, Eq)]
pub enum Proof {
    /// HMAC-SHA256 with the key derived from a shared secret (32 bytes).
    Mac([u8; PROOF_LEN]),
    /// Ed25519 signature with a device's own key (64 bytes).
    Signature([u8; SIGNATURE_PROOF_LEN]),
}

impl Proof {
    /// An all-zero MAC, the placeholder before signing.
    pub const EMPTY: Proof = Proof::Mac([0; PROOF_LEN]);

    /// The proof's bytes as they go on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Mac(b) => b,
            Self::Signature(b) => b,
        }
    }
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not secret, but long and meaningless to a reader.
        match self {
            Self::Mac(_) => f.write_str("Proof::Mac(..)"),
            Self::Signature(_) => f.write_str("Proof::Signature(..)"),
        }
    }
}

/// The edge accepted a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The edge's id for this connection, for logs on both sides.
    pub connection_id: Uuid,
    /// The edge's name.
    pub edge_name: String,
    /// The protocol version the edge will speak on this connection.
    pub protocol_version: u16,
}

/// Why a registration was refused, as sent on the wire.
///
/// Every authentication failure (unknown tunnel, wrong account tag, wrong proof) is
/// [`RegisterErrorCode::Unauthorized`], so the answer reveals nothing about which field was
/// wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RegisterErrorCode {
    /// The claim or its proof is not valid (1).
    Unauthorized,
    /// The edge does not speak the requested protocol version (2).
    UnsupportedVersion,
    /// Too many failed attempts from this source address (3).
    RateLimited,
    /// The edge is shutting down and takes no new registrations (4).
    Draining,
    /// The edge failed internally (5).
    Internal,
    /// The register frame was malformed or did not come first (6).
    Malformed,
    /// The peer took too long to register (7).
    Timeout,
    /// A code this version does not know.
    Other(u16),
}

impl RegisterErrorCode {
    /// The code's number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Unauthorized => 1,
            Self::UnsupportedVersion => 2,
            Self::RateLimited => 3,
            Self::Draining => 4,
            Self::Internal => 5,
            Self::Malformed => 6,
            Self::Timeout => 7,
            Self::Other(c) => c,
        }
    }

    /// The code for a number received from the wire.
    pub fn from_u16(code: u16) -> Self {
        match code {
            1 => Self::Unauthorized,
            2 => Self::UnsupportedVersion,
            3 => Self::RateLimited,
            4 => Self::Draining,
            5 => Self::Internal,
            6 => Self::Malformed,
            7 => Self::Timeout,
            c => Self::Other(c),
        }
    }
}

/// What a refused peer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAdvice {
    /// Retrying cannot help (bad credentials, unsupported version): stop and tell the operator.
    Never,
    /// Retry with the usual exponential backoff.
    Backoff,
    /// Retry no sooner than this (millisecond precision on the wire).
    After(Duration),
}

/// The edge refused a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterError {
    /// What kind of refusal.
    pub code: RegisterErrorCode,
    /// What the peer should do next.
    pub retry: RetryAdvice,
    /// Human-readable text for the peer's log. Never names which credential field was wrong.
    pub message: String,
}

/// The edge is going away: the peer should open a replacement connection now, and this one
/// closes after `drain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// How long in-flight flows have before the edge closes the connection.
    pub drain: Duration,
    /// Why, for logs.
    pub reason: String,
}

/// A connector is draining: the edge must open no new flows on this connection; in-flight
/// flows have `grace` to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unregister {
    /// How long the connector lets in-flight flows run.
    pub grace: Duration,
}

/// The routes a client should capture, re-sent whole whenever they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePush {
    /// Grows with every change, so a client can ignore a stale push.
    pub generation: u64,
    /// The virtual network these routes belong to.
    pub vnet: String,
    /// The CIDRs to capture.
    pub routes: Vec<IpNet>,
}

/// The addresses (`host:port`) of the organisation's live edges, pushed to connectors and
/// clients that offered [`EDGE_LIST_FEATURE`], so they can move to another edge when theirs
/// is lost even if their configuration names only one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeList {
    /// Grows with every change, so a peer can ignore a stale push.
    pub generation: u64,
    /// Every live edge's addresses, the sending edge's first; at most [`MAX_EDGE_LIST`],
    /// each at most 255 bytes.
    pub edges: Vec<String>,
}

/// One named device check a client evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostureCheck {
    /// The check's name, as configured on both the client and in policy.
    pub name: String,
    /// Whether the device passed it.
    pub passed: bool,
}

/// A client's device posture: the results of its configured local checks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostureReport {
    /// The checks and their results.
    pub checks: Vec<PostureCheck>,
}

/// One message on the control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlFrame {
    /// Peer → edge: who I am and my proof (0x01).
    Register(Register),
    /// Edge → peer: accepted (0x02).
    Registered(Registered),
    /// Edge → peer: refused (0x03).
    RegisterError(RegisterError),
    /// Edge → peer: the edge is draining (0x04).
    GoAway(GoAway),
    /// Connector → edge: the connector is draining (0x05).
    Unregister(Unregister),
    /// Either way: liveness probe carrying an opaque nonce (0x06).
    Ping(u64),
    /// Either way: answer to a ping, echoing its nonce (0x07).
    Pong(u64),
    /// Edge → client: routes to capture (0x08).
    RoutePush(RoutePush),
    /// Client → edge: device posture (0x09).
    PostureReport(PostureReport),
    /// Edge → connector or client: the live edges' addresses (0x0a), only to peers that
    /// offered [`EDGE_LIST_FEATURE`].
    EdgeList(EdgeList),
    /// A frame in the extension range `0x80..=0xff`, which receivers ignore.
    Extension {
        /// The type byte.
        ty: u8,
        /// The raw payload.
        payload: bytes::Bytes,
    },
}

fn millis(d: Duration) -> u32 {
    // Durations beyond 49 days saturate: no drain or retry delay is meant to be that long.
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl Register {
    /// The register payload without the proof: the bytes the proof authenticates.
    pub fn signed_bytes(&self) -> Result<BytesMut, EncodeError> {
        let mut out = BytesMut::with_capacity(128);
        self.put_unsigned(&mut out)?;
        Ok(out)
    }

    fn put_unsigned(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        const F: &str = "register";
        out.put_u16(self.protocol_version);
        match &self.claim {
            Claim::Connector(c) => {
                out.put_u8(1);
                out.put_slice(c.tunnel_id.as_bytes());
                put_str8(out, F, "account_tag", &c.account_tag)?;
                out.put_slice(c.connector_id.as_bytes());
                out.put_u8(c.conn_index);
            }
            Claim::Client(c) => {
                out.put_u8(2);
                out.put_slice(c.device_id.as_bytes());
                put_str8(out, F, "vnet", &c.vnet)?;
            }
        }
        put_str16(
            out,
            F,
            "software_version",
            &self.software_version,
            MAX_TEXT_LEN,
        )?;
        if self.features.len() > MAX_FEATURES {
            return Err(EncodeError::TooMany {
                frame: F,
                field: "features",
                count: self.features.len(),
                limit: MAX_FEATURES,
            });
        }
        out.put_u8(self.features.len() as u8);
        for f in &self.features {
            put_str8(out, F, "feature", f)?;
        }
        Ok(())
    }

    fn decode_body(mut r: Reader) -> Result<Self, DecodeError> {
        let protocol_version = r.u16("protocol_version")?;
        let claim = match r.u8("role")? {
            1 => Claim::Connector(ConnectorClaim {
                tunnel_id: r.uuid("tunnel_id")?,
                account_tag: r.str8("account_tag")?,
                connector_id: r.uuid("connector_id")?,
                conn_index: r.u8("conn_index")?,
            }),
            2 => Claim::Client(ClientClaim {
                device_id: r.uuid("device_id")?,
                vnet: r.str8("vnet")?,
            }),
            other => return Err(r.invalid("role", u64::from(other))),
        };
        let software_version = r.str16("software_version", MAX_TEXT_LEN)?;
        let n = usize::from(r.u8("features")?);
        if n > MAX_FEATURES {
            return Err(DecodeError::TooMany {
                frame: "register",
                field: "features",
                count: n,
                limit: MAX_FEATURES,
            });
        }
        let mut features = Vec::with_capacity(n);
        for _ in 0..n {
            features.push(r.str8("feature")?);
        }
        let proof = if r.remaining() == SIGNATURE_PROOF_LEN {
            Proof::Signature(r.array::<SIGNATURE_PROOF_LEN>("proof")?)
        } else {
            Proof::Mac(r.array::<PROOF_LEN>("proof")?)
        };
        r.finish()?;
        Ok(Self {
            protocol_version,
            claim,
            software_version,
            features,
            proof,
        })
    }
}

impl ControlFrame {
    /// The frame's type byte.
    pub fn frame_type(&self) -> u8 {
        match self {
            Self::Register(_) => T_REGISTER,
            Self::Registered(_) => T_REGISTERED,
            Self::RegisterError(_) => T_REGISTER_ERROR,
            Self::GoAway(_) => T_GO_AWAY,
            Self::Unregister(_) => T_UNREGISTER,
            Self::Ping(_) => T_PING,
            Self::Pong(_) => T_PONG,
            Self::RoutePush(_) => T_ROUTE_PUSH,
            Self::PostureReport(_) => T_POSTURE_REPORT,
            Self::EdgeList(_) => T_EDGE_LIST,
            Self::Extension { ty, .. } => *ty,
        }
    }

    /// Appends the frame to `out` with the default [`Limits`].
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_with(out, &Limits::default())
    }

    /// Appends the frame to `out`. On error `out` is left as it was.
    pub fn encode_with(&self, out: &mut BytesMut, limits: &Limits) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_inner(out, limits);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_inner(&self, out: &mut BytesMut, limits: &Limits) -> Result<(), EncodeError> {
        if let Self::Extension { ty, .. } = self {
            if *ty < T_EXTENSION_MIN {
                return Err(EncodeError::OutOfRange {
                    frame: "extension",
                    field: "type",
                    value: u64::from(*ty),
                });
            }
        }
        let start = out.len();
        out.put_u8(self.frame_type());
        out.put_u32(0); // length, patched below
        let body = out.len();
        match self {
            Self::Register(r) => {
                r.put_unsigned(out)?;
                out.put_slice(r.proof.as_bytes());
            }
            Self::Registered(r) => {
                out.put_slice(r.connection_id.as_bytes());
                put_str8(out, "registered", "edge_name", &r.edge_name)?;
                out.put_u16(r.protocol_version);
            }
            Self::RegisterError(e) => {
                out.put_u16(e.code.to_u16());
                let (kind, ms) = match e.retry {
                    RetryAdvice::Never => (0, 0),
                    RetryAdvice::Backoff => (1, 0),
                    RetryAdvice::After(d) => (2, millis(d)),
                };
                out.put_u8(kind);
                out.put_u32(ms);
                put_str16(out, "register_error", "message", &e.message, MAX_TEXT_LEN)?;
            }
            Self::GoAway(g) => {
                out.put_u32(millis(g.drain));
                put_str16(out, "go_away", "reason", &g.reason, MAX_TEXT_LEN)?;
            }
            Self::Unregister(u) => out.put_u32(millis(u.grace)),
            Self::Ping(n) | Self::Pong(n) => out.put_u64(*n),
            Self::RoutePush(p) => {
                out.put_u64(p.generation);
                put_str8(out, "route_push", "vnet", &p.vnet)?;
                let count = u32::try_from(p.routes.len()).map_err(|_| EncodeError::OutOfRange {
                    frame: "route_push",
                    field: "routes",
                    value: p.routes.len() as u64,
                })?;
                out.put_u32(count);
                for net in &p.routes {
                    put_ip(out, &net.addr());
                    out.put_u8(net.prefix_len());
                }
            }
            Self::PostureReport(p) => {
                if p.checks.len() > MAX_POSTURE_CHECKS {
                    return Err(EncodeError::TooMany {
                        frame: "posture_report",
                        field: "checks",
                        count: p.checks.len(),
                        limit: MAX_POSTURE_CHECKS,
                    });
                }
                out.put_u16(p.checks.len() as u16);
                for c in &p.checks {
                    put_str8(out, "posture_report", "check name", &c.name)?;
                    out.put_u8(u8::from(c.passed));
                }
            }
            Self::EdgeList(l) => {
                if l.edges.len() > MAX_EDGE_LIST {
                    return Err(EncodeError::TooMany {
                        frame: "edge_list",
                        field: "edges",
                        count: l.edges.len(),
                        limit: MAX_EDGE_LIST,
                    });
                }
                out.put_u64(l.generation);
                out.put_u8(l.edges.len() as u8);
                for e in &l.edges {
                    put_str8(out, "edge_list", "edge", e)?;
                }
            }
            Self::Extension { payload, .. } => out.put_slice(payload),
        }
        let len = out.len() - body;
        check_len(
            "control frame",
            "payload",
            len,
            limits.max_control_frame_len,
        )?;
        // The limit is far below u32::MAX, so the cast cannot truncate.
        out[start + 1..body].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Takes one frame off the front of `buf` with the default [`Limits`].
    ///
    /// `Ok(None)`: not enough bytes yet, nothing consumed. `Err`: the bytes can never form a
    /// valid frame; the stream should be closed.
    pub fn decode(buf: &mut impl Buf) -> Result<Option<Self>, DecodeError> {
        Self::decode_with(buf, &Limits::default())
    }

    /// Takes one frame off the front of `buf`; see [`ControlFrame::decode`].
    pub fn decode_with(buf: &mut impl Buf, limits: &Limits) -> Result<Option<Self>, DecodeError> {
        let mut head = [0u8; CONTROL_HEADER_LEN];
        if !peek(buf, &mut head) {
            return Ok(None);
        }
        let ty = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(T_REGISTER..=T_EDGE_LIST).contains(&ty) && ty < T_EXTENSION_MIN {
            return Err(DecodeError::UnknownFrameType { ty });
        }
        if len > limits.max_control_frame_len {
            return Err(DecodeError::TooLong {
                frame: "control frame",
                field: "payload",
                len,
                limit: limits.max_control_frame_len,
            });
        }
        if buf.remaining() < CONTROL_HEADER_LEN + len {
            return Ok(None);
        }
        buf.advance(CONTROL_HEADER_LEN);
        let payload = buf.copy_to_bytes(len);
        Self::decode_payload(ty, payload).map(Some)
    }

    fn decode_payload(ty: u8, payload: bytes::Bytes) -> Result<Self, DecodeError> {
        let frame = match ty {
            T_REGISTER => {
                return Register::decode_body(Reader::new(payload, "register")).map(Self::Register)
            }
            T_REGISTERED => {
                let mut r = Reader::new(payload, "registered");
                let f = Self::Registered(Registered {
                    connection_id: r.uuid("connection_id")?,
                    edge_name: r.str8("edge_name")?,
                    protocol_version: r.u16("protocol_version")?,
                });
                r.finish()?;
                f
            }
            T_REGISTER_ERROR => {
                let mut r = Reader::new(payload, "register_error");
                let code = RegisterErrorCode::from_u16(r.u16("code")?);
                let kind = r.u8("retry kind")?;
                let ms = r.u32("retry after")?;
                let retry = match (kind, ms) {
                    (0, 0) => RetryAdvice::Never,
                    (1, 0) => RetryAdvice::Backoff,
                    (2, ms) => RetryAdvice::After(Duration::from_millis(u64::from(ms))),
                    (0 | 1, ms) => return Err(r.invalid("retry after", u64::from(ms))),
                    (k, _) => return Err(r.invalid("retry kind", u64::from(k))),
                };
                let message = r.str16("message", MAX_TEXT_LEN)?;
                r.finish()?;
                Self::RegisterError(RegisterError {
                    code,
                    retry,
                    message,
                })
            }
            T_GO_AWAY => {
                let mut r = Reader::new(payload, "go_away");
                let drain = Duration::from_millis(u64::from(r.u32("drain")?));
                let reason = r.str16("reason", MAX_TEXT_LEN)?;
                r.finish()?;
                Self::GoAway(GoAway { drain, reason })
            }
            T_UNREGISTER => {
                let mut r = Reader::new(payload, "unregister");
                let grace = Duration::from_millis(u64::from(r.u32("grace")?));
                r.finish()?;
                Self::Unregister(Unregister { grace })
            }
            T_PING | T_PONG => {
                let mut r = Reader::new(payload, if ty == T_PING { "ping" } else { "pong" });
                let n = r.u64("nonce")?;
                r.finish()?;
                if ty == T_PING {
                    Self::Ping(n)
                } else {
                    Self::Pong(n)
                }
            }
            T_ROUTE_PUSH => {
                let mut r = Reader::new(payload, "route_push");
                let generation = r.u64("generation")?;
                let vnet = r.str8("vnet")?;
                let count = r.u32("routes")? as usize;
                // Each route is at least 6 bytes; a count the payload cannot hold is a lie,
                // refused before allocating for it.
                let mut routes = Vec::with_capacity(count.min(r.remaining() / 6));
                for _ in 0..count {
                    let addr = r.ip("route address")?;
                    let prefix = r.u8("route prefix")?;
                    let net = IpNet::new(addr, prefix)
                        .map_err(|_| r.invalid("route prefix", u64::from(prefix)))?;
                    routes.push(net);
                }
                r.finish()?;
                Self::RoutePush(RoutePush {
                    generation,
                    vnet,
                    routes,
                })
            }
            T_POSTURE_REPORT => {
                let mut r = Reader::new(payload, "posture_report");
                let count = usize::from(r.u16("checks")?);
                if count > MAX_POSTURE_CHECKS {
                    return Err(DecodeError::TooMany {
                        frame: "posture_report",
                        field: "checks",
                        count,
                        limit: MAX_POSTURE_CHECKS,
                    });
                }
                let mut checks = Vec::with_capacity(count);
                for _ in 0..count {
                    let name = r.str8("check name")?;
                    let passed = match r.u8("check result")? {
                        0 => false,
                        1 => true,
                        v => return Err(r.invalid("check result", u64::from(v))),
                    };
                    checks.push(PostureCheck { name, passed });
                }
                r.finish()?;
                Self::PostureReport(PostureReport { checks })
            }
            T_EDGE_LIST => {
                let mut r = Reader::new(payload, "edge_list");
                let generation = r.u64("generation")?;
                let count = usize::from(r.u8("edges")?);
                if count > MAX_EDGE_LIST {
                    return Err(DecodeError::TooMany {
                        frame: "edge_list",
                        field: "edges",
                        count,
                        limit: MAX_EDGE_LIST,
                    });
                }
                let mut edges = Vec::with_capacity(count);
                for _ in 0..count {
                    edges.push(r.str8("edge")?);
                }
                r.finish()?;
                Self::EdgeList(EdgeList { generation, edges })
            }
            ty => Self::Extension { ty, payload },
        };
        Ok(frame)
    }
}
