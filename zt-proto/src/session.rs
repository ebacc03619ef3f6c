//! The session stream of zt/1 over TLS on TCP: datagrams and the connection close, framed
//! on one reliable byte stream.
//!
//! QUIC gives zt unreliable datagrams and a connection close carrying a code; HTTP/2 gives
//! neither in a form zt can use (a GOAWAY code is an HTTP/2 error code, and only the server
//! side of the h2 crate can send one). So the TCP transport opens one dedicated HTTP/2
//! stream, the session stream, and frames both on it:
//!
//! ```text
//! frame    = type (u8) · length (u16, big-endian) · body (length bytes)
//! type 0   DATAGRAM: body = one zt datagram as QUIC would carry it (flow id varint · payload)
//! type 1   CLOSE:    body = code (u32, big-endian) · reason (UTF-8 not required, ≤ 1024 bytes)
//! ```
//!
//! The decoder returns `Ok(None)` until a whole frame is there and `Err` for bytes that can
//! never become one (unknown type, a body over its limit, a CLOSE shorter than its code).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;

/// Largest DATAGRAM body: any zt datagram (flow id varint plus the largest UDP payload a
/// peer may configure) fits, with room to spare; QUIC's path MTU bounds it lower there.
pub const MAX_SESSION_DATAGRAM: usize = 1500;

/// Largest CLOSE reason, as QUIC's close reasons are kept short.
pub const MAX_CLOSE_REASON: usize = 1024;

/// The bytes before a session frame's body.
pub const SESSION_FRAME_HEADER_LEN: usize = 3;

const TYPE_DATAGRAM: u8 = 0;
const TYPE_CLOSE: u8 = 1;
const FRAME: &str = "session frame";

/// One frame of the TCP transport's session stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionFrame {
    /// One datagram, as QUIC would carry it (flow id varint, then the payload).
    Datagram(Bytes),
    /// The sender closes the connection with this code and reason.
    Close {
        /// zt's close code ([`crate::CloseCode`]).
        code: u32,
        /// Why, for logs; short.
        reason: Bytes,
    },
}

impl SessionFrame {
    /// Appends the frame's bytes; a body over its limit is cut to the limit (a datagram so
    /// large is refused before it gets here, and a reason is only for logs).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Self::Datagram(d) => {
                let body = &d[..d.len().min(MAX_SESSION_DATAGRAM)];
                out.reserve(SESSION_FRAME_HEADER_LEN + body.len());
                out.put_u8(TYPE_DATAGRAM);
                out.put_u16(body.len() as u16);
                out.put_slice(body);
            }
            Self::Close { code, reason } => {
                let reason = &reason[..reason.len().min(MAX_CLOSE_REASON)];
                out.reserve(SESSION_FRAME_HEADER_LEN + 4 + reason.len());
                out.put_u8(TYPE_CLOSE);
                out.put_u16((4 + reason.len()) as u16);
                out.put_u32(*code);
                out.put_slice(reason);
            }
        }
    }

    /// Decodes the frame at the start of `buf`: `Ok(Some((frame, consumed)))`, `Ok(None)`
    /// when more bytes are needed, `Err` when the bytes can never be a frame.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, DecodeError> {
        let Some(&ty) = buf.first() else {
            return Ok(None);
        };
        let limit = match ty {
            TYPE_DATAGRAM => MAX_SESSION_DATAGRAM,
            TYPE_CLOSE => 4 + MAX_CLOSE_REASON,
            _ => return Err(DecodeError::UnknownFrameType { ty }),
        };
        if buf.len() < SESSION_FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([buf[1], buf[2]]));
        if len > limit {
            return Err(DecodeError::TooLong {
                frame: FRAME,
                field: "body",
                len,
                limit,
            });
        }
        let end = SESSION_FRAME_HEADER_LEN + len;
        let Some(body) = buf.get(SESSION_FRAME_HEADER_LEN..end) else {
            return Ok(None);
        };
        let frame = if ty == TYPE_DATAGRAM {
            Self::Datagram(Bytes::copy_from_slice(body))
        } else {
            let Some((code, reason)) = body.split_first_chunk::<4>() else {
                return Err(DecodeError::Truncated {
                    frame: FRAME,
                    field: "close code",
                });
            };
            Self::Close {
                code: u32::from_be_bytes(*code),
                reason: Bytes::copy_from_slice(reason),
            }
        };
        Ok(Some((frame, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn test_vectors() {
        let mut out = BytesMut::new();
        SessionFrame::Datagram(Bytes::from_static(b"\x05hi")).encode(&mut out);
        assert_eq!(&out[..], b"\x00\x00\x03\x05hi");
        out.clear();
        SessionFrame::Close {
            code: 7,
            reason: Bytes::from_static(b"bye"),
        }
        .encode(&mut out);
        assert_eq!(&out[..], b"\x01\x00\x07\x00\x00\x00\x07bye");
    }

    #[test]
    fn partial_and_invalid() {
        assert_eq!(SessionFrame::decode(b""), Ok(None));
        assert_eq!(SessionFrame::decode(b"\x00\x00"), Ok(None));
        assert_eq!(SessionFrame::decode(b"\x00\x00\x03\x05h"), Ok(None));
        assert!(matches!(
            SessionFrame::decode(b"\x09"),
            Err(DecodeError::UnknownFrameType { ty: 9 })
        ));
        assert!(matches!(
            SessionFrame::decode(b"\x00\xff\xff"),
            Err(DecodeError::TooLong { len: 65535, .. })
        ));
        assert!(matches!(
            SessionFrame::decode(b"\x01\x00\x02ab"),
            Err(DecodeError::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(body in proptest::collection::vec(any::<u8>(), 0..MAX_SESSION_DATAGRAM), code: u32, split in 0usize..1600) {
            let frames = [
                SessionFrame::Datagram(Bytes::from(body.clone())),
                SessionFrame::Close { code, reason: Bytes::from(body[..body.len().min(MAX_CLOSE_REASON)].to_vec()) },
            ];
            for f in frames {
                let mut out = BytesMut::new();
                f.encode(&mut out);
                let cut = split.min(out.len());
                if cut < out.len() {
                    prop_assert_eq!(SessionFrame::decode(&out[..cut]), Ok(None));
                }
                prop_assert_eq!(SessionFrame::decode(&out), Ok(Some((f, out.len()))));
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some((_, n))) = SessionFrame::decode(&bytes) {
                prop_assert!(n <= bytes.len());
            }
        }
    }
}
