//! The flow-open exchange as two small state machines, free of I/O.
//!
//! A flow stream starts with the opener's [`FlowHeader`] and the server's [`FlowStatus`];
//! whatever follows either is the flow's own bytes. [`FlowOpener`] is the opener's side
//! (header out, status in), [`FlowAcceptor`] the served side (header in). Each takes bytes in
//! any pieces and says how many it consumed, so the bytes after the exchange stay with the
//! caller; [`FlowOpener::wants`] and [`FlowAcceptor::wants`] say how many bytes can be read
//! now without reading past the exchange (the rest of the length prefix, then the rest of
//! the body), so a driver that reads at most that much never reads flow data.
//!
//! Both sides decide as soon as the bytes allow: an oversized length prefix is refused before
//! its body arrives, which is what keeps a hostile opener from making the edge buffer it.

use bytes::{Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::flow::{FlowHeader, FlowStatus, FlowStatusCode, FLOW_HEADER_PREFIX_LEN};
use crate::limits::{Limits, MAX_TEXT_LEN};

/// A length-prefixed item being read: a 4-byte prefix, then a body whose length the prefix
/// gives.
#[derive(Debug)]
struct Prefixed {
    buf: Vec<u8>,
    /// Prefix plus body length, once the prefix is in.
    total: Option<usize>,
}

impl Prefixed {
    const PREFIX: usize = 4;

    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(Self::PREFIX),
            total: None,
        }
    }

    fn wants(&self) -> usize {
        self.total.unwrap_or(Self::PREFIX) - self.buf.len()
    }

    /// Takes up to [`Prefixed::wants`] bytes of `data`; `body_len` turns the prefix into the
    /// body's length or refuses it. Returns the bytes consumed.
    fn feed(
        &mut self,
        data: &[u8],
        body_len: impl Fn([u8; 4]) -> Result<usize, DecodeError>,
    ) -> Result<usize, DecodeError> {
        let mut consumed = 0;
        while consumed < data.len() && self.wants() > 0 {
            let take = self.wants().min(data.len() - consumed);
            self.buf.extend_from_slice(&data[consumed..consumed + take]);
            consumed += take;
            if self.total.is_none() && self.buf.len() == Self::PREFIX {
                let prefix = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
                let total = Self::PREFIX + body_len(prefix)?;
                self.buf.reserve_exact(total - Self::PREFIX);
                self.total = Some(total);
            }
        }
        Ok(consumed)
    }

    fn is_complete(&self) -> bool {
        self.total == Some(self.buf.len())
    }
}

/// Where a side of the exchange stands.
#[derive(Debug)]
enum State<T> {
    Reading(Prefixed),
    Decided(Option<T>),
    Failed,
}

impl<T> State<T> {
    fn reading() -> Self {
        State::Reading(Prefixed::new())
    }

    fn wants(&self) -> usize {
        match self {
            State::Reading(p) => p.wants(),
            _ => 0,
        }
    }

    /// Feeds `data`: `body_len` reads the prefix, `decode` the complete item (prefix and
    /// body). Any error ends the exchange.
    fn feed(
        &mut self,
        data: &[u8],
        body_len: impl Fn([u8; 4]) -> Result<usize, DecodeError>,
        decode: impl FnOnce(Vec<u8>) -> Result<T, DecodeError>,
    ) -> Result<usize, DecodeError> {
        let State::Reading(reading) = self else {
            return Ok(0);
        };
        let outcome = match reading.feed(data, body_len) {
            Ok(consumed) if reading.is_complete() => {
                decode(std::mem::take(&mut reading.buf)).map(|item| (consumed, Some(item)))
            }
            Ok(consumed) => Ok((consumed, None)),
            Err(e) => Err(e),
        };
        match outcome {
            Ok((consumed, Some(item))) => {
                *self = State::Decided(Some(item));
                Ok(consumed)
            }
            Ok((consumed, None)) => Ok(consumed),
            Err(e) => {
                *self = State::Failed;
                Err(e)
            }
        }
    }

    fn take(&mut self) -> Option<T> {
        match self {
            State::Decided(item) => item.take(),
            _ => None,
        }
    }
}

/// The opener's side: sends a header, then reads the status.
///
/// ```
/// use zt_proto::{FlowHeader, FlowOpener, FlowStatus, Limits, Protocol};
/// # use bytes::BytesMut;
/// let header = FlowHeader {
///     flow_id: 1,
///     protocol: Protocol::Tcp,
///     dest: "198.51.100.101:443".parse()?,
///     metadata: vec![],
/// };
/// let mut open = FlowOpener::new(&header, &Limits::default())?;
/// let wire = open.poll_transmit().expect("the header");
/// // ... the server reads `wire` and answers ok, then sends flow data at once:
/// let mut answer = BytesMut::new();
/// FlowStatus::ok().encode(&mut answer)?;
/// answer.extend_from_slice(b"flow data");
/// let consumed = open.handle_input(&answer)?;
/// assert_eq!(&answer[consumed..], b"flow data");
/// assert_eq!(open.poll_status(), Some(FlowStatus::ok()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FlowOpener {
    header: Option<Bytes>,
    state: State<FlowStatus>,
}

impl FlowOpener {
    /// Starts an open: the encoded header is ready in [`FlowOpener::poll_transmit`]. Fails
    /// if the header breaks `limits` (too much metadata, say).
    pub fn new(header: &FlowHeader, limits: &Limits) -> Result<Self, EncodeError> {
        let mut wire = BytesMut::new();
        header.encode_with(&mut wire, limits)?;
        Ok(Self {
            header: Some(wire.freeze()),
            state: State::reading(),
        })
    }

    /// The header's bytes, once.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.header.take()
    }

    /// How many bytes can be read now without reading past the status (0 once decided).
    pub fn wants(&self) -> usize {
        self.state.wants()
    }

    /// Feeds bytes read from the stream; returns how many belong to the status (the rest
    /// are the flow's). An error means the answer can never be a valid status.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, DecodeError> {
        let decode = |bytes: Vec<u8>| {
            FlowStatus::decode(&mut &bytes[..])?.ok_or(DecodeError::Truncated {
                frame: "flow status",
                field: "detail",
            })
        };
        self.state.feed(data, FlowStatus::detail_len, decode)
    }

    /// The server's answer, once it is complete (returned once).
    pub fn poll_status(&mut self) -> Option<FlowStatus> {
        self.state.take()
    }
}

/// The served side: reads a flow's header.
///
/// A header that can never be valid ends the exchange with the error; answer it with
/// [`FlowAcceptor::bad_header_status`] and end the stream.
#[derive(Debug)]
pub struct FlowAcceptor {
    limits: Limits,
    state: State<FlowHeader>,
}

impl FlowAcceptor {
    /// Starts reading a header under `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::reading(),
        }
    }

    /// How many bytes can be read now without reading past the header (0 once decided).
    pub fn wants(&self) -> usize {
        self.state.wants()
    }

    /// Feeds bytes read from the stream; returns how many belong to the header (the rest are
    /// the flow's early data). An error means the bytes can never be a valid header.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, DecodeError> {
        let limits = self.limits;
        let body_len = |p: [u8; 4]| {
            FlowHeader::peek_len(&&p[..], &limits)?.ok_or(DecodeError::Truncated {
                frame: "flow header",
                field: "length",
            })
        };
        let decode = |bytes: Vec<u8>| {
            let body = Bytes::from(bytes).split_off(FLOW_HEADER_PREFIX_LEN);
            FlowHeader::decode_body(body, &limits)
        };
        self.state.feed(data, body_len, decode)
    }

    /// The header, once it is complete (returned once).
    pub fn poll_header(&mut self) -> Option<FlowHeader> {
        self.state.take()
    }

    /// The status that answers a header refused with `error`: `bad_header`, with the error
    /// (cut to the status' detail limit) as the detail.
    pub fn bad_header_status(error: &DecodeError) -> FlowStatus {
        let mut detail = error.to_string();
        if detail.len() > MAX_TEXT_LEN {
            let mut cut = MAX_TEXT_LEN;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        FlowStatus::new(FlowStatusCode::BadHeader, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Protocol;
    use proptest::prelude::*;

    fn header(metadata: usize) -> FlowHeader {
        FlowHeader {
            flow_id: 7,
            protocol: Protocol::Tcp,
            dest: "[2001:db8::101]:443".parse().unwrap(),
            metadata: (0..metadata)
                .map(|i| (format!("k{i}"), "v".repeat(i)))
                .collect(),
        }
    }

    /// Feeds `data` in pieces of the given sizes (cycled) and returns the decision and how
    /// many bytes the exchange took.
    fn accept_in_pieces(
        data: &[u8],
        sizes: &[usize],
    ) -> (Result<Option<FlowHeader>, DecodeError>, usize) {
        let mut acceptor = FlowAcceptor::new(Limits::default());
        let mut at = 0;
        let mut sizes = sizes.iter().cycle();
        while at < data.len() && acceptor.wants() > 0 {
            let n = (*sizes.next().unwrap()).max(1).min(data.len() - at);
            match acceptor.handle_input(&data[at..at + n]) {
                Ok(c) => {
                    assert!(c <= n);
                    at += c;
                    if c < n {
                        break;
                    }
                }
                Err(e) => return (Err(e), at),
            }
        }
        (Ok(acceptor.poll_header()), at)
    }

    fn open_in_pieces(
        data: &[u8],
        sizes: &[usize],
    ) -> (Result<Option<FlowStatus>, DecodeError>, usize) {
        let mut opener = FlowOpener::new(&header(0), &Limits::default()).unwrap();
        assert!(opener.poll_transmit().is_some());
        assert!(opener.poll_transmit().is_none(), "the header goes out once");
        let mut at = 0;
        let mut sizes = sizes.iter().cycle();
        while at < data.len() && opener.wants() > 0 {
            let n = (*sizes.next().unwrap()).max(1).min(data.len() - at);
            match opener.handle_input(&data[at..at + n]) {
                Ok(c) => {
                    at += c;
                    if c < n {
                        break;
                    }
                }
                Err(e) => return (Err(e), at),
            }
        }
        (Ok(opener.poll_status()), at)
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_its_body() {
        let mut acceptor = FlowAcceptor::new(Limits::default());
        let err = acceptor.handle_input(&u32::MAX.to_be_bytes()).unwrap_err();
        assert!(matches!(err, DecodeError::TooLong { .. }), "{err}");
        assert_eq!(acceptor.wants(), 0);
        let status = FlowAcceptor::bad_header_status(&err);
        assert_eq!(status.code, FlowStatusCode::BadHeader);
        assert!(status.detail.contains("flow header"), "{}", status.detail);
    }

    #[test]
    fn bytes_after_the_header_stay_with_the_caller() {
        let mut wire = BytesMut::new();
        header(3).encode(&mut wire).unwrap();
        let len = wire.len();
        wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (decided, consumed) = accept_in_pieces(&wire, &[wire.len()]);
        assert_eq!(decided.unwrap(), Some(header(3)));
        assert_eq!(consumed, len);
    }

    proptest! {
        /// Every split of a valid header and trailing data decides as the whole does, and
        /// takes exactly the header's bytes.
        #[test]
        fn any_split_of_a_header_decides_as_the_whole(
            metadata in 0usize..6,
            trailing in proptest::collection::vec(any::<u8>(), 0..64),
            sizes in proptest::collection::vec(1usize..40, 1..8),
        ) {
            let mut wire = BytesMut::new();
            header(metadata).encode(&mut wire).unwrap();
            let len = wire.len();
            wire.extend_from_slice(&trailing);
            let whole = accept_in_pieces(&wire, &[wire.len()]);
            let split = accept_in_pieces(&wire, &sizes);
            prop_assert_eq!(whole.0.clone().unwrap(), Some(header(metadata)));
            prop_assert_eq!(whole.1, len);
            prop_assert_eq!(split.0, whole.0);
            prop_assert_eq!(split.1, len);
        }

        /// Arbitrary bytes: the split never changes the decision (header, error or "need
        /// more"), nor how many bytes were taken before it.
        #[test]
        fn any_split_of_arbitrary_bytes_decides_as_the_whole(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            sizes in proptest::collection::vec(1usize..40, 1..8),
        ) {
            let whole = accept_in_pieces(&data, &[data.len().max(1)]);
            let split = accept_in_pieces(&data, &sizes);
            prop_assert_eq!(split.0.is_ok(), whole.0.is_ok());
            prop_assert_eq!(split.0.ok(), whole.0.ok());
            let whole = open_in_pieces(&data, &[data.len().max(1)]);
            let split = open_in_pieces(&data, &sizes);
            prop_assert_eq!(split.0.is_ok(), whole.0.is_ok());
            prop_assert_eq!(split.0.ok(), whole.0.ok());
        }

        /// Every status, split anywhere and followed by flow data, decides as the whole does.
        #[test]
        fn any_split_of_a_status_decides_as_the_whole(
            code in 0u16..12,
            detail in "[a-z ]{0,80}",
            trailing in proptest::collection::vec(any::<u8>(), 0..64),
            sizes in proptest::collection::vec(1usize..20, 1..8),
        ) {
            let status = FlowStatus::new(FlowStatusCode::from_u16(code), detail);
            let mut wire = BytesMut::new();
            status.encode(&mut wire).unwrap();
            let len = wire.len();
            wire.extend_from_slice(&trailing);
            let whole = open_in_pieces(&wire, &[wire.len()]);
            let split = open_in_pieces(&wire, &sizes);
            prop_assert_eq!(whole.0.clone().unwrap(), Some(status));
            prop_assert_eq!(split.0, whole.0);
            prop_assert_eq!((split.1, whole.1), (len, len));
        }
    }
}
