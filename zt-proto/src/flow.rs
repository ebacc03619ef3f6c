//! Data-stream frames: the header that opens a flow, the status that answers it, the reset
//! codes that end it abnormally, and the datagram framing of UDP flows.
//!
//! A flow is one QUIC bidirectional stream: header, status, then raw bytes both ways. A FIN
//! on the stream is the flow's half-close and a stream reset carries a [`ResetCode`].

use std::fmt;
use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::limits::{Limits, MAX_TEXT_LEN};
use crate::wire::{check_len, get_varint, peek, put_ip, put_str16, put_str8, put_varint, Reader};

/// Bytes before a flow header's body: its length (4).
pub const FLOW_HEADER_PREFIX_LEN: usize = 4;
/// Bytes before a flow status's detail text: code (2) and detail length (2).
pub const FLOW_STATUS_PREFIX_LEN: usize = 4;
/// Version byte that starts every flow header body of this protocol version.
const HEADER_VERSION: u8 = 1;

/// The transport protocol of the flow's traffic beyond the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// A TCP connection: the flow's stream carries its bytes (IP protocol number 6).
    Tcp,
    /// A UDP association: its packets ride datagrams tagged with the flow id (17).
    Udp,
}

impl Protocol {
    /// The IP protocol number used on the wire.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// The first bytes on a flow's stream: where the flow goes and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowHeader {
    /// The opener's id for this flow, unique per connection; tags the flow's datagrams.
    pub flow_id: u64,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The private destination.
    pub dest: SocketAddr,
    /// Free-form key/value pairs (identity hints, trace ids); keys at most 255 bytes.
    pub metadata: Vec<(String, String)>,
}

impl FlowHeader {
    /// Appends the header, with its length prefix, using the default [`Limits`].
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_with(out, &Limits::default())
    }

    /// Appends the header with its length prefix. On error `out` is left as it was.
    pub fn encode_with(&self, out: &mut BytesMut, limits: &Limits) -> Result<(), EncodeError> {
        const F: &str = "flow header";
        // The count travels in one byte, whatever the configured limit.
        let max_entries = limits.max_metadata_entries.min(usize::from(u8::MAX));
        if self.metadata.len() > max_entries {
            return Err(EncodeError::TooMany {
                frame: F,
                field: "metadata",
                count: self.metadata.len(),
                limit: max_entries,
            });
        }
        let start = out.len();
        let result = (|| {
            out.put_u32(0); // length, patched below
            let body = out.len();
            out.put_u8(HEADER_VERSION);
            out.put_u64(self.flow_id);
            out.put_u8(self.protocol.number());
            put_ip(out, &self.dest.ip());
            out.put_u16(self.dest.port());
            out.put_u8(self.metadata.len() as u8);
            for (k, v) in &self.metadata {
                put_str8(out, F, "metadata key", k)?;
                put_str16(out, F, "metadata value", v, limits.max_header_len)?;
            }
            let len = out.len() - body;
            check_len(F, "header", len, limits.max_header_len)?;
            out[start..body].copy_from_slice(&(len as u32).to_be_bytes());
            Ok(())
        })();
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Takes one header off the front of `buf` using the default [`Limits`]: `Ok(None)` when
    /// more bytes are needed (nothing consumed), `Err` when the bytes can never be a header.
    pub fn decode(buf: &mut impl Buf) -> Result<Option<Self>, DecodeError> {
        Self::decode_with(buf, &Limits::default())
    }

    /// Takes one header off the front of `buf`; see [`FlowHeader::decode`].
    pub fn decode_with(buf: &mut impl Buf, limits: &Limits) -> Result<Option<Self>, DecodeError> {
        let Some(len) = Self::peek_len(buf, limits)? else {
            return Ok(None);
        };
        if buf.remaining() < FLOW_HEADER_PREFIX_LEN + len {
            return Ok(None);
        }
        buf.advance(FLOW_HEADER_PREFIX_LEN);
        Self::decode_body(buf.copy_to_bytes(len), limits).map(Some)
    }

    /// Reads the body length from the prefix and checks it against the limit, without
    /// consuming anything. Lets a reader refuse an oversized header before reading its body.
    pub fn peek_len(buf: &impl Buf, limits: &Limits) -> Result<Option<usize>, DecodeError> {
        let mut prefix = [0u8; FLOW_HEADER_PREFIX_LEN];
        if !peek(buf, &mut prefix) {
            return Ok(None);
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > limits.max_header_len {
            return Err(DecodeError::TooLong {
                frame: "flow header",
                field: "header",
                len,
                limit: limits.max_header_len,
            });
        }
        Ok(Some(len))
    }

    /// Decodes a header body (the bytes after the length prefix).
    pub fn decode_body(body: Bytes, limits: &Limits) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body, "flow header");
        let version = r.u8("version")?;
        if version != HEADER_VERSION {
            return Err(r.invalid("version", u64::from(version)));
        }
        let flow_id = r.u64("flow_id")?;
        let protocol = match r.u8("protocol")? {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            p => return Err(r.invalid("protocol", u64::from(p))),
        };
        let ip = r.ip("destination address")?;
        let port = r.u16("destination port")?;
        let count = usize::from(r.u8("metadata")?);
        if count > limits.max_metadata_entries {
            return Err(DecodeError::TooMany {
                frame: "flow header",
                field: "metadata",
                count,
                limit: limits.max_metadata_entries,
            });
        }
        let mut metadata = Vec::with_capacity(count);
        for _ in 0..count {
            let k = r.str8("metadata key")?;
            let v = r.str16("metadata value", limits.max_header_len)?;
            metadata.push((k, v));
        }
        r.finish()?;
        Ok(Self {
            flow_id,
            protocol,
            dest: SocketAddr::new(ip, port),
            metadata,
        })
    }
}

/// The answer to a flow header, by code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlowStatusCode {
    /// The flow is open; raw bytes follow (0).
    Ok,
    /// No route covers the destination in the client's virtual network (1).
    NoRoute,
    /// A policy rule denied the flow; the detail names the rule (2).
    Denied,
    /// The destination refused the connection (3).
    ConnectRefused,
    /// The destination did not answer in time (4).
    Timeout,
    /// The destination's network is unreachable (5).
    Unreachable,
    /// The serving side's flow limit is reached (6).
    TooManyFlows,
    /// The header broke a limit or was malformed; the detail says how (7).
    BadHeader,
    /// The serving side is draining and takes no new flows (8).
    Draining,
    /// No live connector serves the route's tunnel (9).
    NoConnector,
    /// The serving side failed internally (10).
    Internal,
    /// A code this version does not know.
    Other(u16),
}

impl FlowStatusCode {
    /// The code's number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Ok => 0,
            Self::NoRoute => 1,
            Self::Denied => 2,
            Self::ConnectRefused => 3,
            Self::Timeout => 4,
            Self::Unreachable => 5,
            Self::TooManyFlows => 6,
            Self::BadHeader => 7,
            Self::Draining => 8,
            Self::NoConnector => 9,
            Self::Internal => 10,
            Self::Other(c) => c,
        }
    }

    /// The code for a number from the wire.
    pub fn from_u16(code: u16) -> Self {
        match code {
            0 => Self::Ok,
            1 => Self::NoRoute,
            2 => Self::Denied,
            3 => Self::ConnectRefused,
            4 => Self::Timeout,
            5 => Self::Unreachable,
            6 => Self::TooManyFlows,
            7 => Self::BadHeader,
            8 => Self::Draining,
            9 => Self::NoConnector,
            10 => Self::Internal,
            c => Self::Other(c),
        }
    }
}

/// The answer to a flow header: a code and a detail text (the rule name for
/// [`FlowStatusCode::Denied`], the reason for [`FlowStatusCode::BadHeader`], else usually
/// empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowStatus {
    /// What happened.
    pub code: FlowStatusCode,
    /// Details for the opener's error message.
    pub detail: String,
}

impl FlowStatus {
    /// The flow is open.
    pub fn ok() -> Self {
        Self::new(FlowStatusCode::Ok, "")
    }

    /// A status with a code and detail.
    pub fn new(code: FlowStatusCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    /// Denied by the named rule.
    pub fn denied(rule: impl Into<String>) -> Self {
        Self::new(FlowStatusCode::Denied, rule)
    }

    /// Whether the flow was accepted.
    pub fn is_ok(&self) -> bool {
        self.code == FlowStatusCode::Ok
    }

    /// Appends the status. Fails only if the detail exceeds 1,024 bytes.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        check_len("flow status", "detail", self.detail.len(), MAX_TEXT_LEN)?;
        out.put_u16(self.code.to_u16());
        out.put_u16(self.detail.len() as u16);
        out.put_slice(self.detail.as_bytes());
        Ok(())
    }

    /// The detail's length from a status prefix, checked against its limit.
    pub(crate) fn detail_len(prefix: [u8; FLOW_STATUS_PREFIX_LEN]) -> Result<usize, DecodeError> {
        let len = usize::from(u16::from_be_bytes([prefix[2], prefix[3]]));
        if len > MAX_TEXT_LEN {
            return Err(DecodeError::TooLong {
                frame: "flow status",
                field: "detail",
                len,
                limit: MAX_TEXT_LEN,
            });
        }
        Ok(len)
    }

    /// Takes one status off the front of `buf`; `Ok(None)` when more bytes are needed.
    pub fn decode(buf: &mut impl Buf) -> Result<Option<Self>, DecodeError> {
        let mut prefix = [0u8; FLOW_STATUS_PREFIX_LEN];
        if !peek(buf, &mut prefix) {
            return Ok(None);
        }
        let code = u16::from_be_bytes([prefix[0], prefix[1]]);
        let len = Self::detail_len(prefix)?;
        if buf.remaining() < FLOW_STATUS_PREFIX_LEN + len {
            return Ok(None);
        }
        buf.advance(FLOW_STATUS_PREFIX_LEN);
        let detail = String::from_utf8(buf.copy_to_bytes(len).to_vec()).map_err(|_| {
            DecodeError::InvalidUtf8 {
                frame: "flow status",
                field: "detail",
            }
        })?;
        Ok(Some(Self {
            code: FlowStatusCode::from_u16(code),
            detail,
        }))
    }
}

impl fmt::Display for FlowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.detail;
        match self.code {
            FlowStatusCode::Ok => f.write_str("ok"),
            FlowStatusCode::NoRoute => f.write_str("no route"),
            FlowStatusCode::Denied => write!(f, "denied by rule {d}"),
            FlowStatusCode::ConnectRefused => f.write_str("connection refused by destination"),
            FlowStatusCode::Timeout => f.write_str("destination timed out"),
            FlowStatusCode::Unreachable => f.write_str("destination unreachable"),
            FlowStatusCode::TooManyFlows => f.write_str("too many flows"),
            FlowStatusCode::BadHeader => write!(f, "bad flow header: {d}"),
            FlowStatusCode::Draining => f.write_str("draining, no new flows"),
            FlowStatusCode::NoConnector => f.write_str("no live connector for the route"),
            FlowStatusCode::Internal => f.write_str("internal error"),
            FlowStatusCode::Other(c) => write!(f, "status {c}: {d}"),
        }?;
        if !d.is_empty()
            && !matches!(
                self.code,
                FlowStatusCode::Denied | FlowStatusCode::BadHeader | FlowStatusCode::Other(_)
            )
        {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// An application error code carried by a stream reset (`RESET_STREAM`/`STOP_SENDING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResetCode(pub u32);

impl ResetCode {
    /// The reader went away without an error (quinn stops a dropped receive stream with 0).
    pub const STOPPED: Self = Self(0);
    /// The far TCP connection was reset (an RST from the destination or the client app).
    pub const CONNECTION_RESET: Self = Self(1);
    /// The application aborted the flow.
    pub const ABORTED: Self = Self(2);
    /// The flow header was refused; the status said why.
    pub const BAD_HEADER: Self = Self(3);
    /// The opener gave up waiting for the status.
    pub const CANCELLED: Self = Self(4);
    /// The serving side dropped the request without answering it.
    pub const REFUSED: Self = Self(5);
    /// The peer broke the protocol on this stream.
    pub const PROTOCOL_ERROR: Self = Self(6);
}

impl fmt::Display for ResetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::STOPPED => "stopped",
            Self::CONNECTION_RESET => "connection reset",
            Self::ABORTED => "aborted",
            Self::BAD_HEADER => "bad header",
            Self::CANCELLED => "cancelled",
            Self::REFUSED => "refused",
            Self::PROTOCOL_ERROR => "protocol error",
            _ => return write!(f, "reset code {}", self.0),
        };
        write!(f, "{name} ({})", self.0)
    }
}

/// An application error code carried by a QUIC `CONNECTION_CLOSE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u32);

impl CloseCode {
    /// Orderly close.
    pub const NO_ERROR: Self = Self(0);
    /// A frame was invalid or out of place.
    pub const PROTOCOL_VIOLATION: Self = Self(1);
    /// The registration was refused (sent after `register_error`).
    pub const REGISTRATION_REFUSED: Self = Self(2);
    /// The edge drained the connection after `go_away`.
    pub const GOING_AWAY: Self = Self(3);
    /// The connector drained the connection after `unregister`.
    pub const UNREGISTERED: Self = Self(4);
    /// The closing side failed.
    pub const INTERNAL_ERROR: Self = Self(5);
    /// `zt-peer/1` only: the accepting edge refused the dialling edge's certificate; the
    /// close reason says why.
    pub const PEER_REFUSED: Self = Self(6);
}

/// One UDP packet of a flow, carried as a QUIC datagram: `flow_id: varint | payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The flow the packet belongs to (the id in its flow header).
    pub flow_id: u64,
    /// The UDP payload.
    pub payload: Bytes,
}

impl Datagram {
    /// Appends the datagram, refusing payloads above `limits.max_datagram_payload` and ids
    /// above 2^62 - 1.
    pub fn encode(&self, out: &mut BytesMut, limits: &Limits) -> Result<(), EncodeError> {
        check_len(
            "datagram",
            "payload",
            self.payload.len(),
            limits.max_datagram_payload,
        )?;
        if self.flow_id > crate::wire::VARINT_MAX {
            return Err(EncodeError::OutOfRange {
                frame: "datagram",
                field: "flow_id",
                value: self.flow_id,
            });
        }
        out.reserve(crate::wire::varint_len(self.flow_id) + self.payload.len());
        put_varint(out, self.flow_id);
        out.put_slice(&self.payload);
        Ok(())
    }

    /// Decodes one datagram. A datagram always arrives whole, so there is no "need more"
    /// case: a short one is invalid. The payload shares `buf`'s memory.
    pub fn decode(mut buf: Bytes, limits: &Limits) -> Result<Self, DecodeError> {
        let Some((flow_id, n)) = get_varint(&buf) else {
            return Err(DecodeError::Truncated {
                frame: "datagram",
                field: "flow_id",
            });
        };
        buf.advance(n);
        if buf.len() > limits.max_datagram_payload {
            return Err(DecodeError::TooLong {
                frame: "datagram",
                field: "payload",
                len: buf.len(),
                limit: limits.max_datagram_payload,
            });
        }
        Ok(Self {
            flow_id,
            payload: buf,
        })
    }
}
