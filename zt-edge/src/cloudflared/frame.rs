//! Standard (unpacked) Cap'n Proto stream framing, with the limits every decoder applies.

use capnp::message::{Reader, ReaderOptions};
use capnp::serialize::{self, OwnedSegments};

/// The largest control-stream message accepted, in bytes. A registration call is about
/// 600 bytes and `updateLocalConfiguration` carries the connector's configuration as JSON
/// (about 700 bytes in a typical run); 64 KiB leaves room for large ingress rule sets while
/// bounding what one hostile frame can make the edge buffer.
pub const MAX_RPC_MESSAGE_BYTES: usize = 64 * 1024;

/// The largest flow header accepted, in bytes: the same bound zt's own flow headers have.
pub const MAX_FLOW_HEADER_BYTES: usize = 16 * 1024;

/// The most segments a frame may have. cloudflared's messages are single-segment; a few more
/// are allowed for other writers, and the bound keeps the segment table small.
pub const MAX_SEGMENTS: usize = 8;

/// Why bytes could not be decoded as a cloudflared message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame's segment table declares more segments than [`MAX_SEGMENTS`].
    #[error("frame declares {count} segments, at most {max} are accepted")]
    TooManySegments {
        /// Declared segment count.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// The frame is larger than the limit for its stream.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared frame length in bytes.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The bytes are framed correctly but are not a valid message of the expected schema.
    #[error("invalid Cap'n Proto message: {0}")]
    Capnp(#[from] capnp::Error),
    /// The flow preamble does not start with the expected signature.
    #[error("flow stream starts with {found:02x?}, not the cloudflared signature")]
    BadSignature {
        /// The six bytes found.
        found: [u8; 6],
    },
    /// The flow preamble names a protocol version this edge does not speak.
    #[error("flow stream version {found:?} is not supported")]
    BadVersion {
        /// The two version bytes found.
        found: [u8; 2],
    },
    /// A field holds a value outside its allowed range or length.
    #[error("field {field} is invalid: {reason}")]
    InvalidField {
        /// The schema name of the field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Length in bytes of the first complete frame in `bytes`, `Ok(None)` if more bytes are
/// needed to know or to hold it, an error if its header breaks the limits.
pub fn frame_len(bytes: &[u8], max: usize) -> Result<Option<usize>, DecodeError> {
    let Some(first) = bytes.get(0..4) else {
        return Ok(None);
    };
    let count = u64::from(le_u32(first)) + 1;
    if count > MAX_SEGMENTS as u64 {
        return Err(DecodeError::TooManySegments {
            count,
            max: MAX_SEGMENTS,
        });
    }
    // Header: the count word, one size word per segment, padded to a multiple of 8 bytes.
    let header = (4 + 4 * count).div_ceil(8) * 8;
    let Some(sizes) = bytes.get(4..4 + 4 * count as usize) else {
        return Ok(None);
    };
    let words: u64 = sizes.chunks_exact(4).map(|s| u64::from(le_u32(s))).sum();
    let len = header + words * 8;
    if len > max as u64 {
        return Err(DecodeError::TooLarge { len, max });
    }
    // `len <= max`, so it fits in usize.
    let len = len as usize;
    Ok((bytes.len() >= len).then_some(len))
}

fn le_u32(b: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&b[..4]);
    u32::from_le_bytes(word)
}

/// Reads the first frame of `bytes` (already known complete and within `max`) as a message.
pub(crate) fn read_frame(bytes: &[u8], max: usize) -> Result<Reader<OwnedSegments>, DecodeError> {
    let mut slice = bytes;
    let mut options = ReaderOptions::new();
    // Every word may be visited a few times by the decoders; anything beyond that is an
    // amplification attempt (pointers aliasing the same data).
    options.traversal_limit_in_words(Some((max / 8) * 4));
    options.nesting_limit(16);
    // `read_message` copies into aligned, owned segments, so any input slice works.
    Ok(serialize::read_message(&mut slice, options)?)
}

/// Writes a message in standard stream framing.
pub(crate) fn write_frame<A: capnp::message::Allocator>(
    message: &capnp::message::Builder<A>,
) -> Vec<u8> {
    serialize::write_message_to_words(message)
}
