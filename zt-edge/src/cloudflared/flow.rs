//! Flow streams: the preamble and the `ConnectRequest` / `ConnectResponse` header.
//!
//! Both directions start with [`FLOW_SIGNATURE`] and [`FLOW_VERSION`], then one Cap'n Proto
//! message; raw bytes follow. The decoders return the header and the number of bytes it took,
//! so the caller relays the rest of its buffer as payload.

use capnp::message::Builder;

use super::frame::{frame_len, read_frame, write_frame, DecodeError, MAX_FLOW_HEADER_BYTES};
use super::generated::quic_metadata_capnp::{
    connect_request, connect_response, ConnectionType as Wire,
};

/// First bytes of every flow stream, in both directions.
pub const FLOW_SIGNATURE: [u8; 6] = [0x0A, 0x36, 0xCD, 0x12, 0xA1, 0x3E];
/// First bytes of an RPC stream the edge opens to cloudflared (UDP session registration).
pub const RPC_STREAM_SIGNATURE: [u8; 6] = [0x52, 0xBB, 0x82, 0x5C, 0xDB, 0x65];
/// The protocol version after the signature: ASCII "01".
pub const FLOW_VERSION: [u8; 2] = *b"01";

/// What kind of flow a [`ConnectRequest`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionType {
    /// An HTTP request (not used by zt).
    Http,
    /// A WebSocket (not used by zt).
    Websocket,
    /// A raw TCP flow (warp-routing).
    Tcp,
}

/// The header the edge sends on a flow stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Where cloudflared should connect: `ip:port` for TCP.
    pub dest: String,
    /// The kind of flow.
    pub connection_type: ConnectionType,
    /// Key/value pairs, in order (cloudflared reads `FlowID`, among others).
    pub metadata: Vec<(String, String)>,
}

/// cloudflared's answer on a flow stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectResponse {
    /// Empty when the origin was reached, else why not.
    pub error: String,
    /// Key/value pairs, in order.
    pub metadata: Vec<(String, String)>,
}

fn preamble(out: &mut Vec<u8>) {
    out.extend_from_slice(&FLOW_SIGNATURE);
    out.extend_from_slice(&FLOW_VERSION);
}

/// Checks the preamble and returns the header frame's bounds, or `None` if more bytes are
/// needed.
fn header(bytes: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let n = FLOW_SIGNATURE.len().min(bytes.len());
    if bytes[..n] != FLOW_SIGNATURE[..n] {
        let mut found = [0u8; 6];
        found[..n].copy_from_slice(&bytes[..n]);
        return Err(DecodeError::BadSignature { found });
    }
    let Some(version) = bytes.get(6..8) else {
        return Ok(None);
    };
    if version != FLOW_VERSION {
        return Err(DecodeError::BadVersion {
            found: [version[0], version[1]],
        });
    }
    Ok(frame_len(&bytes[8..], MAX_FLOW_HEADER_BYTES)?.map(|len| (8, 8 + len)))
}

fn text(
    r: capnp::Result<capnp::text::Reader<'_>>,
    field: &'static str,
) -> Result<String, DecodeError> {
    r?.to_str()
        .map(str::to_owned)
        .map_err(|_| DecodeError::InvalidField {
            field,
            reason: "not UTF-8",
        })
}

fn read_metadata(
    list: capnp::struct_list::Reader<'_, super::generated::quic_metadata_capnp::metadata::Owned>,
) -> Result<Vec<(String, String)>, DecodeError> {
    let mut out = Vec::with_capacity(list.len() as usize);
    for entry in list {
        out.push((
            text(entry.get_key(), "metadata.key")?,
            text(entry.get_val(), "metadata.val")?,
        ));
    }
    Ok(out)
}

/// Encodes the preamble and a `ConnectRequest`.
pub fn encode_connect_request(req: &ConnectRequest) -> Vec<u8> {
    let mut msg = Builder::new_default();
    let mut root = msg.init_root::<connect_request::Builder<'_>>();
    root.set_dest(req.dest.as_str());
    root.set_type(match req.connection_type {
        ConnectionType::Http => Wire::Http,
        ConnectionType::Websocket => Wire::Websocket,
        ConnectionType::Tcp => Wire::Tcp,
    });
    let mut list = root.init_metadata(len_u32(req.metadata.len()));
    for (i, (key, val)) in req.metadata.iter().enumerate() {
        let mut entry = list.reborrow().get(len_u32(i));
        entry.set_key(key.as_str());
        entry.set_val(val.as_str());
    }
    let mut out = Vec::new();
    preamble(&mut out);
    out.extend_from_slice(&write_frame(&msg));
    out
}

/// Encodes the preamble and a `ConnectResponse`.
pub fn encode_connect_response(resp: &ConnectResponse) -> Vec<u8> {
    let mut msg = Builder::new_default();
    let mut root = msg.init_root::<connect_response::Builder<'_>>();
    root.set_error(resp.error.as_str());
    let mut list = root.init_metadata(len_u32(resp.metadata.len()));
    for (i, (key, val)) in resp.metadata.iter().enumerate() {
        let mut entry = list.reborrow().get(len_u32(i));
        entry.set_key(key.as_str());
        entry.set_val(val.as_str());
    }
    let mut out = Vec::new();
    preamble(&mut out);
    out.extend_from_slice(&write_frame(&msg));
    out
}

// Lists built here are far below u32::MAX entries; saturating keeps the encoder total.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Decodes a preamble and `ConnectRequest` from the start of `bytes`: `Ok(None)` if more
/// bytes are needed, else the request and the bytes it took.
pub fn decode_connect_request(
    bytes: &[u8],
) -> Result<Option<(ConnectRequest, usize)>, DecodeError> {
    let Some((start, end)) = header(bytes)? else {
        return Ok(None);
    };
    let reader = read_frame(&bytes[start..end], MAX_FLOW_HEADER_BYTES)?;
    let root: connect_request::Reader<'_> = reader.get_root()?;
    let connection_type = match root.get_type().map_err(capnp::Error::from)? {
        Wire::Http => ConnectionType::Http,
        Wire::Websocket => ConnectionType::Websocket,
        Wire::Tcp => ConnectionType::Tcp,
    };
    let req = ConnectRequest {
        dest: text(root.get_dest(), "dest")?,
        connection_type,
        metadata: read_metadata(root.get_metadata()?)?,
    };
    Ok(Some((req, end)))
}

/// Decodes a preamble and `ConnectResponse` from the start of `bytes`: `Ok(None)` if more
/// bytes are needed, else the response and the bytes it took (payload follows).
pub fn decode_connect_response(
    bytes: &[u8],
) -> Result<Option<(ConnectResponse, usize)>, DecodeError> {
    let Some((start, end)) = header(bytes)? else {
        return Ok(None);
    };
    let reader = read_frame(&bytes[start..end], MAX_FLOW_HEADER_BYTES)?;
    let root: connect_response::Reader<'_> = reader.get_root()?;
    let resp = ConnectResponse {
        error: text(root.get_error(), "error")?,
        metadata: read_metadata(root.get_metadata()?)?,
    };
    Ok(Some((resp, end)))
}
