//! The edge-to-edge peering messages (`zt-peer/1`), free of I/O.
//!
//! When a client's flow reaches an edge that holds no connection of the flow's tunnel, that
//! edge (the *client's edge*) forwards the flow to an edge that does (the *forwarding
//! edge*), over one bidirectional stream of a mutually authenticated QUIC connection:
//!
//! ```text
//! client's edge → forwarding edge:  PeerFlowOpen   (tunnel, from_edge, the client's FlowHeader)
//! forwarding edge → client's edge:  PeerFlowAnswer (a FlowStatus, and the connector on ok)
//! then, if the status is ok: the flow's raw bytes both ways, as on any flow stream
//! ```
//!
//! Both messages are `length: u32 | version: u8 = 1 | fields`, the length counting every
//! byte after itself. A decoder refuses a length above its bound as soon as the four prefix
//! bytes are in and a wrong version as soon as the fifth is, so a hostile or confused peer
//! cannot make the reader buffer more than the bound. The open embeds the [`FlowHeader`]'s
//! own encoding (prefix included) and the answer the [`FlowStatus`]'s, so the flow travels
//! between edges exactly as the client sent it. Errors name the field and the byte offset
//! (from the first byte of the length prefix) at fault. The layout is specified in
//! docs/PROTOCOL.md, section 10.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::error::{DecodeError, EncodeError};
use crate::flow::{FlowHeader, FlowStatus, FLOW_HEADER_PREFIX_LEN};
use crate::limits::{Limits, MAX_TEXT_LEN};
use crate::wire::peek;

/// The TLS ALPN protocol id of edge-to-edge peering connections.
pub const ALPN_PEERING: &[u8] = b"zt-peer/1";

/// The prefix of the URI subject alternative name that carries an edge's id in its peering
/// certificate: `urn:zt:edge:` then the id, hyphenated and lowercase.
pub const PEER_EDGE_URI_PREFIX: &str = "urn:zt:edge:";

/// Longest connector transport name in a [`PeerConnectorInfo`], in bytes (`"http2"` and
/// the like; a one-byte length on the wire, kept short because it is only a label).
pub const MAX_PEER_TRANSPORT_LEN: usize = 16;

/// Bytes before a peering message's body: its length (4).
pub const PEER_FRAME_PREFIX_LEN: usize = 4;

/// The version byte of this protocol's messages.
const PEER_VERSION: u8 = 1;

/// Open fields before the embedded flow header: version, tunnel id, edge id.
const OPEN_FIXED_LEN: usize = 1 + 16 + 16;

/// Largest answer body: version, status (code, detail length, detail at its limit),
/// connector flag, connector id, index, kind, transport (length and bytes), flags.
pub const MAX_PEER_ANSWER_LEN: usize =
    1 + 4 + MAX_TEXT_LEN + 1 + 16 + 1 + 1 + 1 + MAX_PEER_TRANSPORT_LEN + 1;

/// Flag bit of a connector's answer: the flow ends at the first FIN (see
/// [`PeerConnectorInfo::first_fin_ends`]).
const FLAG_FIRST_FIN_ENDS: u8 = 0x01;

const OPEN: &str = "peer flow open";
const ANSWER: &str = "peer flow answer";

/// The URI subject alternative name that names `edge` in its peering certificate:
/// `urn:zt:edge:<uuid>`, the id hyphenated and lowercase.
pub fn peer_edge_uri(edge: Uuid) -> String {
    format!("{PEER_EDGE_URI_PREFIX}{}", edge.hyphenated())
}

/// The edge id a peering certificate's URI names, if the URI is exactly what
/// [`peer_edge_uri`] writes (any other spelling, an uppercase id say, is refused, so one id
/// has one URI).
pub fn peer_edge_from_uri(uri: &str) -> Option<Uuid> {
    let id = Uuid::try_parse(uri.strip_prefix(PEER_EDGE_URI_PREFIX)?).ok()?;
    (peer_edge_uri(id) == uri).then_some(id)
}

/// Bytes that can never be a `zt-peer/1` message.
///
/// "Not enough bytes yet" is not an error: decoders return `Ok(None)` for it. Offsets count
/// from the message's first byte, the first byte of its length prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerDecodeError {
    /// The length prefix (at byte 0) announces more than the message's bound.
    #[error("{frame}: length {len} at byte 0 is above the limit of {limit}")]
    TooLong {
        /// The message being decoded.
        frame: &'static str,
        /// The length announced.
        len: usize,
        /// The bound in force.
        limit: usize,
    },
    /// The version byte (at byte 4) is not one this side speaks.
    #[error("{frame}: version {version} at byte 4 is not {PEER_VERSION}")]
    UnknownVersion {
        /// The message being decoded.
        frame: &'static str,
        /// The version received.
        version: u8,
    },
    /// The body ends inside a field.
    #[error("{frame}: body ends inside {field} at byte {offset}")]
    Truncated {
        /// The message being decoded.
        frame: &'static str,
        /// The field cut short.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("{frame}: {field} at byte {offset} has invalid value {value}")]
    InvalidValue {
        /// The message being decoded.
        frame: &'static str,
        /// The field at fault.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
        /// The value received.
        value: u64,
    },
    /// A text field holds a byte outside printable ASCII.
    #[error("{frame}: {field} at byte {offset} is not printable ASCII")]
    NotAscii {
        /// The message being decoded.
        frame: &'static str,
        /// The field at fault.
        field: &'static str,
        /// Where the field's text starts.
        offset: usize,
    },
    /// Fields that are valid alone contradict each other.
    #[error("{frame}: {field} at byte {offset} {rule}")]
    Inconsistent {
        /// The message being decoded.
        frame: &'static str,
        /// The field at fault.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The flow header embedded in an open is invalid.
    #[error("peer flow open: flow header at byte {offset}: {source}")]
    FlowHeader {
        /// Where the embedded header starts.
        offset: usize,
        /// What the flow header decoder said.
        #[source]
        source: DecodeError,
    },
    /// The flow status embedded in an answer is invalid.
    #[error("peer flow answer: status at byte {offset}: {source}")]
    FlowStatus {
        /// Where the embedded status starts.
        offset: usize,
        /// What the flow status decoder said.
        #[source]
        source: DecodeError,
    },
    /// The body is longer than its fields.
    #[error("{frame}: {extra} bytes after the last field, from byte {offset}")]
    TrailingBytes {
        /// The message being decoded.
        frame: &'static str,
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        extra: usize,
    },
}

impl PeerDecodeError {
    /// The byte offset at fault, from the message's first byte.
    pub fn offset(&self) -> usize {
        match self {
            Self::TooLong { .. } => 0,
            Self::UnknownVersion { .. } => PEER_FRAME_PREFIX_LEN,
            Self::Truncated { offset, .. }
            | Self::InvalidValue { offset, .. }
            | Self::NotAscii { offset, .. }
            | Self::Inconsistent { offset, .. }
            | Self::FlowHeader { offset, .. }
            | Self::FlowStatus { offset, .. }
            | Self::TrailingBytes { offset, .. } => *offset,
        }
    }
}

/// Checks the prefix (and version, once in) of the message at the front of `buf`: the
/// whole message's length when all of it is there, `Ok(None)` when more bytes are needed.
fn check_prefix(
    buf: &impl Buf,
    frame: &'static str,
    limit: usize,
) -> Result<Option<usize>, PeerDecodeError> {
    let mut prefix = [0u8; PEER_FRAME_PREFIX_LEN];
    if !peek(buf, &mut prefix) {
        return Ok(None);
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > limit {
        return Err(PeerDecodeError::TooLong { frame, len, limit });
    }
    if len == 0 {
        // The byte after an empty message is not its version: it belongs to what follows.
        return Err(PeerDecodeError::Truncated {
            frame,
            field: "version",
            offset: PEER_FRAME_PREFIX_LEN,
        });
    }
    let mut head = [0u8; PEER_FRAME_PREFIX_LEN + 1];
    if peek(buf, &mut head) && head[PEER_FRAME_PREFIX_LEN] != PEER_VERSION {
        return Err(PeerDecodeError::UnknownVersion {
            frame,
            version: head[PEER_FRAME_PREFIX_LEN],
        });
    }
    let total = PEER_FRAME_PREFIX_LEN + len;
    Ok((buf.remaining() >= total).then_some(total))
}

/// How many more bytes the message at the start of `received` needs (the rest of the
/// prefix, then the rest of the body), so a reader that reads at most that much never
/// reads past the message. Only meaningful while the decoder answers `Ok(None)`.
// The transport's readers are its only users.
#[cfg_attr(not(feature = "transport"), allow(dead_code))]
pub(crate) fn wants(received: &[u8]) -> usize {
    match received.get(..PEER_FRAME_PREFIX_LEN) {
        None => PEER_FRAME_PREFIX_LEN - received.len(),
        Some(p) => {
            let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
            (PEER_FRAME_PREFIX_LEN + len).saturating_sub(received.len())
        }
    }
}

/// A reader over one complete message (prefix included) that knows each field's offset.
struct Fields {
    buf: Bytes,
    at: usize,
    frame: &'static str,
}

impl Fields {
    /// Starts after the prefix and the (already checked) version byte.
    fn new(frame_bytes: Bytes, frame: &'static str) -> Self {
        Self {
            buf: frame_bytes,
            at: PEER_FRAME_PREFIX_LEN + 1,
            frame,
        }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, PeerDecodeError> {
        if self.buf.len().saturating_sub(self.at) < n {
            return Err(PeerDecodeError::Truncated {
                frame: self.frame,
                field,
                offset: self.at,
            });
        }
        let out = self.buf.slice(self.at..self.at + n);
        self.at += n;
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, PeerDecodeError> {
        Ok(self.take(1, field)?[0])
    }

    fn uuid(&mut self, field: &'static str) -> Result<Uuid, PeerDecodeError> {
        let raw = self.take(16, field)?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&raw);
        Ok(Uuid::from_bytes(id))
    }

    /// The rest of the body, to hand to an embedded decoder.
    fn rest(&self) -> Bytes {
        self.buf.slice(self.at.min(self.buf.len())..)
    }

    fn invalid(&self, field: &'static str, offset: usize, value: u8) -> PeerDecodeError {
        PeerDecodeError::InvalidValue {
            frame: self.frame,
            field,
            offset,
            value: u64::from(value),
        }
    }

    fn finish(self) -> Result<(), PeerDecodeError> {
        match self.buf.len().saturating_sub(self.at) {
            0 => Ok(()),
            extra => Err(PeerDecodeError::TrailingBytes {
                frame: self.frame,
                offset: self.at,
                extra,
            }),
        }
    }
}

/// Writes a message: prefix, version, then `body`. On error `out` is left as it was.
fn put_framed(
    out: &mut BytesMut,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.put_u32(0); // length, patched below
    out.put_u8(PEER_VERSION);
    if let Err(e) = body(out) {
        out.truncate(start);
        return Err(e);
    }
    let len = (out.len() - start - PEER_FRAME_PREFIX_LEN) as u32;
    out[start..start + PEER_FRAME_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// What the client's edge sends first on a new peering stream: which tunnel the flow is
/// for, which edge forwards it, and the client's flow header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFlowOpen {
    /// The tunnel whose connector should serve the flow.
    pub tunnel_id: Uuid,
    /// The edge sending the open (the client's edge), for the forwarding edge's logs.
    pub from_edge: Uuid,
    /// The client's flow header, as the client sent it.
    pub flow: FlowHeader,
}

impl PeerFlowOpen {
    /// Largest body accepted under `limits`: the fixed fields and a flow header (with its
    /// prefix) at `limits.max_header_len`.
    pub fn max_len(limits: &Limits) -> usize {
        OPEN_FIXED_LEN + FLOW_HEADER_PREFIX_LEN + limits.max_header_len
    }

    /// Appends the open, with its length prefix, using the default [`Limits`].
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_with(out, &Limits::default())
    }

    /// Appends the open with its length prefix; the flow header must meet `limits`. On
    /// error `out` is left as it was.
    pub fn encode_with(&self, out: &mut BytesMut, limits: &Limits) -> Result<(), EncodeError> {
        put_framed(out, |out| {
            out.put_slice(self.tunnel_id.as_bytes());
            out.put_slice(self.from_edge.as_bytes());
            self.flow.encode_with(out, limits)
        })
    }

    /// Takes one open off the front of `buf` using the default [`Limits`]: `Ok(None)` when
    /// more bytes are needed (nothing consumed), `Err` when the bytes can never be an open.
    /// Bytes after the open (the flow's early data) stay in `buf`.
    pub fn decode(buf: &mut impl Buf) -> Result<Option<Self>, PeerDecodeError> {
        Self::decode_with(buf, &Limits::default())
    }

    /// Takes one open off the front of `buf` under `limits`; see [`PeerFlowOpen::decode`].
    pub fn decode_with(
        buf: &mut impl Buf,
        limits: &Limits,
    ) -> Result<Option<Self>, PeerDecodeError> {
        let Some(total) = check_prefix(buf, OPEN, Self::max_len(limits))? else {
            return Ok(None);
        };
        let mut r = Fields::new(buf.copy_to_bytes(total), OPEN);
        let tunnel_id = r.uuid("tunnel_id")?;
        let from_edge = r.uuid("from_edge")?;
        let offset = r.at;
        let mut rest = r.rest();
        let flow = match FlowHeader::decode_with(&mut rest, limits) {
            Ok(Some(flow)) => flow,
            Ok(None) => {
                return Err(PeerDecodeError::Truncated {
                    frame: OPEN,
                    field: "flow header",
                    offset,
                })
            }
            Err(source) => return Err(PeerDecodeError::FlowHeader { offset, source }),
        };
        r.at = total - rest.remaining();
        r.finish()?;
        Ok(Some(Self {
            tunnel_id,
            from_edge,
            flow,
        }))
    }
}

/// The kind of connector that serves a forwarded flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerConnectorKind {
    /// A zt connector (`zt/1`; 1 on the wire).
    Zt,
    /// An unmodified cloudflared (2 on the wire).
    Cloudflared,
}

impl PeerConnectorKind {
    /// The kind's byte on the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Zt => 1,
            Self::Cloudflared => 2,
        }
    }

    /// The kind for a byte from the wire; `None` for a byte this version does not know.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Zt),
            2 => Some(Self::Cloudflared),
            _ => None,
        }
    }
}

impl fmt::Display for PeerConnectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Zt => "zt",
            Self::Cloudflared => "cloudflared",
        })
    }
}

/// Which connector connection serves a forwarded flow, for the client's edge's logs and
/// for how it relays the flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConnectorInfo {
    /// The connector process (replica).
    pub connector_id: Uuid,
    /// Which of its HA connections carries the flow.
    pub conn_index: u8,
    /// zt or cloudflared.
    pub kind: PeerConnectorKind,
    /// The connection's transport, a label of at most [`MAX_PEER_TRANSPORT_LEN`] bytes of
    /// printable ASCII (`"quic"`, `"tcp"`, `"http2"`).
    pub transport: String,
    /// The flow ends at the first FIN in either direction (the connector cannot
    /// half-close, as cloudflared cannot), so the client's edge should not wait for the
    /// other direction's FIN.
    pub first_fin_ends: bool,
}

/// What the forwarding edge answers to a [`PeerFlowOpen`]: the flow's status and, when it
/// is ok (and only then), the connector that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFlowAnswer {
    /// Ok, or why the flow was refused (the detail says more).
    pub status: FlowStatus,
    /// The serving connector; present exactly when the status is ok.
    pub connector: Option<PeerConnectorInfo>,
}

impl PeerFlowAnswer {
    /// The flow is open, served by `connector`.
    pub fn ok(connector: PeerConnectorInfo) -> Self {
        Self {
            status: FlowStatus::ok(),
            connector: Some(connector),
        }
    }

    /// The flow is refused with `status` (which should not be ok).
    pub fn refused(status: FlowStatus) -> Self {
        Self {
            status,
            connector: None,
        }
    }

    /// Whether the flow was accepted.
    pub fn is_ok(&self) -> bool {
        self.status.is_ok()
    }

    /// Appends the answer with its length prefix. Fails, leaving `out` as it was, when the
    /// detail is over 1,024 bytes, when the transport is not at most 16 bytes of printable
    /// ASCII, or when the connector is absent from an ok answer or present in a refusal.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match (&self.connector, self.status.is_ok()) {
            (None, true) => {
                return Err(EncodeError::Invalid {
                    frame: ANSWER,
                    field: "connector",
                    rule: "must be present when the status is ok",
                })
            }
            (Some(_), false) => {
                return Err(EncodeError::Invalid {
                    frame: ANSWER,
                    field: "connector",
                    rule: "must be absent when the status is a refusal",
                })
            }
            _ => {}
        }
        if let Some(c) = &self.connector {
            crate::wire::check_len(
                ANSWER,
                "connector transport",
                c.transport.len(),
                MAX_PEER_TRANSPORT_LEN,
            )?;
            if !c.transport.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(EncodeError::Invalid {
                    frame: ANSWER,
                    field: "connector transport",
                    rule: "must be printable ASCII without spaces",
                });
            }
        }
        put_framed(out, |out| {
            self.status.encode(out)?;
            match &self.connector {
                None => out.put_u8(0),
                Some(c) => {
                    out.put_u8(1);
                    out.put_slice(c.connector_id.as_bytes());
                    out.put_u8(c.conn_index);
                    out.put_u8(c.kind.to_u8());
                    out.put_u8(c.transport.len() as u8);
                    out.put_slice(c.transport.as_bytes());
                    out.put_u8(if c.first_fin_ends {
                        FLAG_FIRST_FIN_ENDS
                    } else {
                        0
                    });
                }
            }
            Ok(())
        })
    }

    /// Takes one answer off the front of `buf`: `Ok(None)` when more bytes are needed
    /// (nothing consumed), `Err` when the bytes can never be an answer. Bytes after the
    /// answer (the flow's first bytes) stay in `buf`.
    pub fn decode(buf: &mut impl Buf) -> Result<Option<Self>, PeerDecodeError> {
        let Some(total) = check_prefix(buf, ANSWER, MAX_PEER_ANSWER_LEN)? else {
            return Ok(None);
        };
        let mut r = Fields::new(buf.copy_to_bytes(total), ANSWER);
        let offset = r.at;
        let mut rest = r.rest();
        let status = match FlowStatus::decode(&mut rest) {
            Ok(Some(status)) => status,
            Ok(None) => {
                return Err(PeerDecodeError::Truncated {
                    frame: ANSWER,
                    field: "status",
                    offset,
                })
            }
            Err(source) => return Err(PeerDecodeError::FlowStatus { offset, source }),
        };
        r.at = total - rest.remaining();
        let flag_at = r.at;
        let present = match r.u8("connector")? {
            0 => false,
            1 => true,
            v => return Err(r.invalid("connector", flag_at, v)),
        };
        if present != status.is_ok() {
            return Err(PeerDecodeError::Inconsistent {
                frame: ANSWER,
                field: "connector",
                offset: flag_at,
                rule: if present {
                    "must be absent when the status is a refusal"
                } else {
                    "must be present when the status is ok"
                },
            });
        }
        let connector = if present {
            let connector_id = r.uuid("connector_id")?;
            let conn_index = r.u8("conn_index")?;
            let kind_at = r.at;
            let kind_byte = r.u8("connector kind")?;
            let kind = PeerConnectorKind::from_u8(kind_byte)
                .ok_or_else(|| r.invalid("connector kind", kind_at, kind_byte))?;
            let len_at = r.at;
            let len = usize::from(r.u8("connector transport")?);
            if len > MAX_PEER_TRANSPORT_LEN {
                return Err(r.invalid("connector transport length", len_at, len as u8));
            }
            let text_at = r.at;
            let raw = r.take(len, "connector transport")?;
            if !raw.iter().all(|b| b.is_ascii_graphic()) {
                return Err(PeerDecodeError::NotAscii {
                    frame: ANSWER,
                    field: "connector transport",
                    offset: text_at,
                });
            }
            // Graphic ASCII is UTF-8.
            let transport = raw.iter().map(|&b| char::from(b)).collect();
            let flags_at = r.at;
            let flags = r.u8("flags")?;
            if flags & !FLAG_FIRST_FIN_ENDS != 0 {
                return Err(r.invalid("flags", flags_at, flags));
            }
            Some(PeerConnectorInfo {
                connector_id,
                conn_index,
                kind,
                transport,
                first_fin_ends: flags & FLAG_FIRST_FIN_ENDS != 0,
            })
        } else {
            None
        };
        r.finish()?;
        Ok(Some(Self { status, connector }))
    }
}

#[cfg(test)]
mod tests;
