//! Byte-level helpers shared by every frame: a bounds-checked reader over one complete frame
//! body, big-endian writers, QUIC variable-length integers, and a non-consuming peek.
//!
//! Invariant: nothing here panics on any input; every short read is a typed error naming the
//! field that was cut.

use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{Buf, BufMut, Bytes};
use uuid::Uuid;

use crate::error::{DecodeError, EncodeError};

/// Copies the first `N` bytes of `buf` without consuming them. Returns `false` when fewer
/// than `N` bytes are available.
pub(crate) fn peek<const N: usize>(buf: &impl Buf, out: &mut [u8; N]) -> bool {
    if buf.remaining() < N {
        return false;
    }
    let chunk = buf.chunk();
    if chunk.len() >= N {
        out.copy_from_slice(&chunk[..N]);
        return true;
    }
    // A segmented buffer (e.g. `Chain`): gather across its chunks.
    let mut slices = [IoSlice::new(&[]); 16];
    let n = buf.chunks_vectored(&mut slices);
    let mut filled = 0;
    for s in &slices[..n] {
        let take = (N - filled).min(s.len());
        out[filled..filled + take].copy_from_slice(&s[..take]);
        filled += take;
        if filled == N {
            return true;
        }
    }
    false
}

/// A reader over one complete, length-delimited frame body.
pub(crate) struct Reader {
    buf: Bytes,
    frame: &'static str,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, frame: &'static str) -> Self {
        Self { buf, frame }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            Err(DecodeError::Truncated {
                frame: self.frame,
                field,
            })
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.need(8, field)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        self.need(N, field)?;
        let mut out = [0u8; N];
        self.buf.copy_to_slice(&mut out);
        Ok(out)
    }

    pub(crate) fn uuid(&mut self, field: &'static str) -> Result<Uuid, DecodeError> {
        Ok(Uuid::from_bytes(self.array::<16>(field)?))
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, field)?;
        Ok(self.buf.split_to(n))
    }

    fn utf8(&self, raw: Bytes, field: &'static str) -> Result<String, DecodeError> {
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::InvalidUtf8 {
            frame: self.frame,
            field,
        })
    }

    /// A string with a one-byte length prefix.
    pub(crate) fn str8(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u8(field)?);
        let raw = self.bytes(len, field)?;
        self.utf8(raw, field)
    }

    /// A string with a two-byte length prefix, at most `limit` bytes.
    pub(crate) fn str16(
        &mut self,
        field: &'static str,
        limit: usize,
    ) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(field)?);
        if len > limit {
            return Err(DecodeError::TooLong {
                frame: self.frame,
                field,
                len,
                limit,
            });
        }
        let raw = self.bytes(len, field)?;
        self.utf8(raw, field)
    }

    /// An IP address: family byte (4 or 6) then 4 or 16 bytes.
    pub(crate) fn ip(&mut self, field: &'static str) -> Result<IpAddr, DecodeError> {
        match self.u8(field)? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>(field)?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>(field)?))),
            other => Err(DecodeError::InvalidValue {
                frame: self.frame,
                field,
                value: u64::from(other),
            }),
        }
    }

    pub(crate) fn invalid(&self, field: &'static str, value: u64) -> DecodeError {
        DecodeError::InvalidValue {
            frame: self.frame,
            field,
            value,
        }
    }

    /// Fails unless every byte of the body was consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.has_remaining() {
            Err(DecodeError::TrailingBytes {
                frame: self.frame,
                extra: self.buf.remaining(),
            })
        } else {
            Ok(())
        }
    }
}

pub(crate) fn check_len(
    frame: &'static str,
    field: &'static str,
    len: usize,
    limit: usize,
) -> Result<(), EncodeError> {
    if len > limit {
        Err(EncodeError::TooLong {
            frame,
            field,
            len,
            limit,
        })
    } else {
        Ok(())
    }
}

pub(crate) fn put_str8(
    out: &mut impl BufMut,
    frame: &'static str,
    field: &'static str,
    s: &str,
) -> Result<(), EncodeError> {
    check_len(frame, field, s.len(), usize::from(u8::MAX))?;
    out.put_u8(s.len() as u8);
    out.put_slice(s.as_bytes());
    Ok(())
}

pub(crate) fn put_str16(
    out: &mut impl BufMut,
    frame: &'static str,
    field: &'static str,
    s: &str,
    limit: usize,
) -> Result<(), EncodeError> {
    check_len(frame, field, s.len(), limit.min(usize::from(u16::MAX)))?;
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
    Ok(())
}

pub(crate) fn put_ip(out: &mut impl BufMut, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.put_u8(4);
            out.put_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.put_u8(6);
            out.put_slice(&v6.octets());
        }
    }
}

/// Largest value a QUIC variable-length integer holds (2^62 - 1).
pub(crate) const VARINT_MAX: u64 = (1 << 62) - 1;

/// Bytes a QUIC varint encoding of `v` takes.
pub(crate) fn varint_len(v: u64) -> usize {
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// Writes `v` as a QUIC variable-length integer (RFC 9000, section 16). `v` must be at most
/// [`VARINT_MAX`]; callers check.
pub(crate) fn put_varint(out: &mut impl BufMut, v: u64) {
    match varint_len(v) {
        1 => out.put_u8(v as u8),
        2 => out.put_u16(0x4000 | v as u16),
        4 => out.put_u32(0x8000_0000 | v as u32),
        _ => out.put_u64(0xc000_0000_0000_0000 | v),
    }
}

/// Reads a QUIC variable-length integer from the front of `buf`; `None` if `buf` is too short.
pub(crate) fn get_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_at_every_size_boundary() {
        for v in [
            0,
            63,
            64,
            16_383,
            16_384,
            (1 << 30) - 1,
            1 << 30,
            VARINT_MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(get_varint(&out), Some((v, out.len())));
            assert_eq!(get_varint(&out[..out.len() - 1]), None);
        }
    }

    #[test]
    fn varint_matches_rfc9000_examples() {
        // RFC 9000, appendix A.1.
        assert_eq!(
            get_varint(&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]),
            Some((151_288_809_941_952_652, 8))
        );
        assert_eq!(
            get_varint(&[0x9d, 0x7f, 0x3e, 0x7d]),
            Some((494_878_333, 4))
        );
        assert_eq!(get_varint(&[0x7b, 0xbd]), Some((15_293, 2)));
        assert_eq!(get_varint(&[0x25]), Some((37, 1)));
    }

    #[test]
    fn peek_gathers_across_chunks_without_consuming() {
        let a: &[u8] = &[1, 2];
        let b: &[u8] = &[3, 4, 5];
        let chain = a.chain(b);
        let mut out = [0u8; 4];
        assert!(peek(&chain, &mut out));
        assert_eq!(out, [1, 2, 3, 4]);
        assert_eq!(chain.remaining(), 5);
        let mut too_many = [0u8; 6];
        assert!(!peek(&chain, &mut too_many));
    }
}
