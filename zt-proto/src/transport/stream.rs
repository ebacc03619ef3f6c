//! A flow's byte stream after its status: tokio `AsyncRead`/`AsyncWrite` over one
//! bidirectional stream of the connection's transport (a QUIC stream, or an HTTP/2 stream
//! over TLS on TCP), with TCP's half-close (FIN) and reset-with-code semantics, plus the
//! split halves and a zero-copy splice for relays.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::future::Future as _;

use bytes::{Bytes, BytesMut};
use quinn::VarInt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::flow::ResetCode;
use crate::transport::allowance::StreamSlot;
use crate::transport::over_tcp::{H2Recv, H2Send};

/// A flow's stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The peer reset its sending side with this code.
    #[error("flow reset by peer: {0}")]
    Reset(ResetCode),
    /// The peer stopped reading (`STOP_SENDING`) with this code.
    #[error("peer stopped reading the flow: {0}")]
    Stopped(ResetCode),
    /// The connection carrying the flow was lost.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] quinn::ConnectionError),
    /// This side already finished or reset the stream.
    #[error("flow already closed on this side")]
    Closed,
}

impl FlowError {
    /// The peer's reset or stop code inside an `io::Error` produced by a [`FlowStream`].
    pub fn reset_code(err: &io::Error) -> Option<ResetCode> {
        match err.get_ref()?.downcast_ref::<FlowError>()? {
            FlowError::Reset(c) | FlowError::Stopped(c) => Some(*c),
            _ => None,
        }
    }
}

fn code(v: VarInt) -> ResetCode {
    // Codes above u32 never come from zt peers; saturate rather than fail.
    ResetCode(u32::try_from(v.into_inner()).unwrap_or(u32::MAX))
}

impl From<quinn::ReadError> for FlowError {
    fn from(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::Reset(c) => Self::Reset(code(c)),
            quinn::ReadError::ConnectionLost(c) => Self::ConnectionLost(c),
            _ => Self::Closed,
        }
    }
}

impl From<quinn::WriteError> for FlowError {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::Stopped(c) => Self::Stopped(code(c)),
            quinn::WriteError::ConnectionLost(c) => Self::ConnectionLost(c),
            _ => Self::Closed,
        }
    }
}

impl From<FlowError> for io::Error {
    fn from(e: FlowError) -> Self {
        let kind = match e {
            FlowError::Reset(_) => io::ErrorKind::ConnectionReset,
            FlowError::Stopped(_) => io::ErrorKind::BrokenPipe,
            FlowError::ConnectionLost(_) => io::ErrorKind::ConnectionAborted,
            FlowError::Closed => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, e)
    }
}

#[derive(Debug)]
enum RecvInner {
    /// The stream and, where known, its connection (to see the connection's loss without
    /// reading).
    Quic(quinn::RecvStream, Option<quinn::Connection>),
    Tcp(H2Recv),
}

#[derive(Debug)]
enum SendInner {
    Quic(quinn::SendStream),
    Tcp(H2Send),
}

/// The receiving half of a flow.
#[derive(Debug)]
pub struct FlowRecvStream {
    inner: RecvInner,
    /// The end (FIN or error) a [`FlowRecvStream::read_batch`] met after it already had
    /// bytes to return: the next read reports it.
    held_end: Option<Result<(), FlowError>>,
    /// For a stream the peer opened: its place in the connection's stream allowance,
    /// given back when this half is dropped.
    slot: Option<StreamSlot>,
}

impl FlowRecvStream {
    pub(crate) fn from_quic(inner: quinn::RecvStream, conn: Option<quinn::Connection>) -> Self {
        Self {
            inner: RecvInner::Quic(inner, conn),
            held_end: None,
            slot: None,
        }
    }

    pub(crate) fn from_h2(inner: H2Recv) -> Self {
        Self {
            inner: RecvInner::Tcp(inner),
            held_end: None,
            slot: None,
        }
    }

    /// Counts this stream against its connection's allowance while it lives.
    pub(crate) fn hold_slot(&mut self, slot: StreamSlot) {
        self.slot = Some(slot);
    }

    /// One chunk of at most `max` bytes, as the transport received it.
    async fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>, FlowError> {
        match &mut self.inner {
            RecvInner::Quic(q, _) => Ok(q.read_chunk(max, true).await?.map(|c| c.bytes)),
            RecvInner::Tcp(t) => std::future::poll_fn(|cx| t.poll_chunk(cx, max)).await,
        }
    }

    /// At most `max` bytes as the transport received them; `None` at the peer's FIN. For
    /// exchanges that must not read past their own bytes (the flow open).
    pub(crate) async fn read_up_to(&mut self, max: usize) -> Result<Option<Bytes>, FlowError> {
        if let Some(end) = self.held_end.take() {
            return end.map(|()| None);
        }
        self.next_chunk(max).await
    }

    /// Next chunk of bytes as the transport received it, without copying; `None` at the
    /// peer's FIN.
    pub async fn read_chunk(&mut self) -> Result<Option<Bytes>, FlowError> {
        if let Some(end) = self.held_end.take() {
            return end.map(|()| None);
        }
        self.next_chunk(usize::MAX).await
    }

    /// The bytes received so far as one chunk, for relays: waits for the first chunk, then
    /// takes every further chunk the transport already holds, up to `max` bytes in all.
    /// A lone chunk is returned as it is (no copy); several are copied into one buffer, so
    /// that the next hop sees a few large chunks rather than one per ~1,400-byte packet
    /// (a QUIC send buffer of many small chunks costs a linear search per packet sent,
    /// and a TCP socket a system call per chunk). `None` at the peer's FIN.
    pub async fn read_batch(&mut self, max: usize) -> Result<Option<Bytes>, FlowError> {
        let Some(first) = self.read_chunk().await? else {
            return Ok(None);
        };
        let mut batch: Option<BytesMut> = None;
        let mut len = first.len();
        while len < max {
            // Poll once: take what has arrived, never wait for more.
            let next = {
                let mut read = std::pin::pin!(self.next_chunk(max - len));
                std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await
            };
            match next {
                Poll::Pending => break,
                Poll::Ready(Ok(Some(chunk))) => {
                    let b = batch.get_or_insert_with(|| {
                        let mut b = BytesMut::with_capacity(max);
                        b.extend_from_slice(&first);
                        b
                    });
                    b.extend_from_slice(&chunk);
                    len += chunk.len();
                }
                Poll::Ready(Ok(None)) => {
                    self.held_end = Some(Ok(()));
                    break;
                }
                Poll::Ready(Err(e)) => {
                    self.held_end = Some(Err(e));
                    break;
                }
            }
        }
        Ok(Some(match batch {
            None => first,
            // A batch that filled little of its buffer is copied out, so that a few small
            // chunks do not hold `max` bytes each until the next hop's peer acknowledges them.
            Some(b) if b.len() < b.capacity() / 4 => Bytes::copy_from_slice(&b),
            Some(b) => b.freeze(),
        }))
    }

    /// Waits, without reading, until the stream's connection is lost; returns what the
    /// next read would report. For relays whose next hop is slow: while they wait for room
    /// there, the connection's end (the edge ended the session, say) is seen at once. A
    /// reset of the one stream is seen by the next read.
    pub async fn interrupted(&mut self) -> FlowError {
        match &mut self.inner {
            // The connection's end, not the stream's reset: waiting for a reset registers a
            // reader that quinn expects to be gone once the data is read.
            RecvInner::Quic(_, Some(conn)) => FlowError::ConnectionLost(conn.closed().await),
            RecvInner::Quic(_, None) => std::future::pending().await,
            RecvInner::Tcp(t) => t.connection_lost().await,
        }
    }

    /// Asks the peer to stop sending, with a code.
    pub fn stop(&mut self, code: ResetCode) {
        match &mut self.inner {
            // Fails only if the stream is already finished or stopped: nothing left to do.
            RecvInner::Quic(q, _) => {
                let _ = q.stop(VarInt::from_u32(code.0));
            }
            RecvInner::Tcp(t) => t.stop(code),
        }
    }
}

impl AsyncRead for FlowRecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(end) = this.held_end.take() {
            // A FIN reads as no bytes; an error as itself.
            return Poll::Ready(end.map_err(io::Error::from));
        }
        match &mut this.inner {
            RecvInner::Quic(q, _) => q
                .poll_read_buf(cx, buf)
                .map_err(|e| FlowError::from(e).into()),
            RecvInner::Tcp(t) => match t.poll_chunk(cx, buf.remaining()) {
                Poll::Ready(Ok(Some(chunk))) => {
                    buf.put_slice(&chunk);
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Ok(None)) => Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// The sending half of a flow.
#[derive(Debug)]
pub struct FlowSendStream {
    inner: SendInner,
}

impl FlowSendStream {
    pub(crate) fn from_quic(inner: quinn::SendStream) -> Self {
        Self {
            inner: SendInner::Quic(inner),
        }
    }

    pub(crate) fn from_h2(inner: H2Send) -> Self {
        Self {
            inner: SendInner::Tcp(inner),
        }
    }

    /// Sends a chunk without copying it.
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), FlowError> {
        match &mut self.inner {
            SendInner::Quic(q) => Ok(q.write_chunk(chunk).await?),
            SendInner::Tcp(t) => t.write_chunk(chunk).await,
        }
    }

    /// Sends all of `buf`.
    pub async fn write_all(&mut self, buf: &[u8]) -> Result<(), FlowError> {
        match &mut self.inner {
            SendInner::Quic(q) => Ok(q.write_all(buf).await?),
            SendInner::Tcp(t) => t.write_chunk(Bytes::copy_from_slice(buf)).await,
        }
    }

    /// Half-closes the flow: sends FIN after the data already written.
    pub fn finish(&mut self) -> Result<(), FlowError> {
        match &mut self.inner {
            SendInner::Quic(q) => q.finish().map_err(|_| FlowError::Closed),
            SendInner::Tcp(t) => t.finish(),
        }
    }

    /// Abandons sending; the peer's reads fail with this code.
    pub fn reset(&mut self, code: ResetCode) {
        match &mut self.inner {
            // Fails only if already finished or reset, when there is nothing to abandon.
            SendInner::Quic(q) => {
                let _ = q.reset(VarInt::from_u32(code.0));
            }
            SendInner::Tcp(t) => t.reset(code),
        }
    }

    /// Waits until the peer has everything we sent (`Ok(None)`) or stopped reading
    /// (`Ok(Some(code))`). Over TCP, HTTP/2 acknowledges nothing per stream: a finished
    /// stream resolves at once, and an unfinished one when the peer resets it.
    pub async fn stopped(&mut self) -> Result<Option<ResetCode>, FlowError> {
        match &mut self.inner {
            SendInner::Quic(q) => match q.stopped().await {
                Ok(c) => Ok(c.map(code)),
                Err(quinn::StoppedError::ConnectionLost(c)) => Err(FlowError::ConnectionLost(c)),
                Err(_) => Err(FlowError::Closed),
            },
            SendInner::Tcp(t) => t.stopped().await,
        }
    }
}

impl AsyncWrite for FlowSendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            SendInner::Quic(q) => Pin::new(q)
                .poll_write(cx, buf)
                .map_err(|e| FlowError::from(e).into()),
            SendInner::Tcp(t) => t.poll_write(cx, buf).map_err(io::Error::from),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // QUIC sends as soon as congestion control allows, and h2 as soon as its connection
        // task writes: there is no buffer to flush here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Finishing twice (say, shutdown after finish) is not an error for a caller.
        let _ = self.get_mut().finish();
        Poll::Ready(Ok(()))
    }
}

/// One flow after its status: bytes both ways.
///
/// `shutdown()` half-closes (QUIC FIN; the peer reads EOF and may keep sending); a read
/// returns EOF at the peer's FIN; [`FlowStream::reset`] abandons both directions with a
/// code, which the peer's reads and writes report (see [`FlowError::reset_code`]).
///
/// Dropping it behaves like closing a TCP socket: the send side is finished (FIN after the
/// data already written) and, if unread data remains, the receive side is stopped with
/// [`ResetCode::STOPPED`]. To abort instead, call [`FlowStream::reset`] first.
#[derive(Debug)]
pub struct FlowStream {
    flow_id: u64,
    send: FlowSendStream,
    recv: FlowRecvStream,
}

impl FlowStream {
    pub(crate) fn new(flow_id: u64, send: FlowSendStream, recv: FlowRecvStream) -> Self {
        Self {
            flow_id,
            send,
            recv,
        }
    }

    /// The flow's id (the one in its header; tags its datagrams).
    pub fn flow_id(&self) -> u64 {
        self.flow_id
    }

    /// Abandons the flow both ways with `code`.
    pub fn reset(&mut self, code: ResetCode) {
        self.send.reset(code);
        self.recv.stop(code);
    }

    /// The two halves, for relays that drive each direction separately.
    pub fn into_split(self) -> (FlowSendStream, FlowRecvStream) {
        (self.send, self.recv)
    }

    /// The sending half.
    pub fn send_half(&mut self) -> &mut FlowSendStream {
        &mut self.send
    }

    /// The receiving half.
    pub fn recv_half(&mut self) -> &mut FlowRecvStream {
        &mut self.recv
    }
}

impl AsyncRead for FlowStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for FlowStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().send).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_shutdown(cx)
    }
}

/// How one direction of a splice ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayEnd {
    /// The source finished (FIN) and the FIN was passed on.
    Finished,
    /// The source was reset with this code, passed on as a reset.
    Reset(ResetCode),
    /// The destination stopped reading with this code, passed back as a stop.
    Stopped(ResetCode),
    /// A connection was lost.
    ConnectionLost,
}

/// The result of one direction of a splice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOutcome {
    /// Bytes forwarded.
    pub bytes: u64,
    /// How it ended.
    pub end: RelayEnd,
}

/// Largest chunk a relay gathers from what one side has received before passing it on.
pub const RELAY_BATCH: usize = 64 * 1024;

/// Forwards one direction: what `from` received, gathered into chunks of up to
/// [`RELAY_BATCH`] bytes ([`FlowRecvStream::read_batch`]; a lone chunk is passed on without
/// a copy), then the FIN, the reset code, or (backwards) the stop code.
pub async fn relay(from: &mut FlowRecvStream, to: &mut FlowSendStream) -> RelayOutcome {
    let mut bytes = 0u64;
    let end = loop {
        match from.read_batch(RELAY_BATCH).await {
            Ok(Some(chunk)) => {
                let n = chunk.len() as u64;
                match to.write_chunk(chunk).await {
                    Ok(()) => bytes += n,
                    Err(FlowError::Stopped(c)) => {
                        from.stop(c);
                        break RelayEnd::Stopped(c);
                    }
                    Err(_) => {
                        from.stop(ResetCode::ABORTED);
                        break RelayEnd::ConnectionLost;
                    }
                }
            }
            Ok(None) => {
                let _ = to.finish();
                break RelayEnd::Finished;
            }
            Err(FlowError::Reset(c)) => {
                to.reset(c);
                break RelayEnd::Reset(c);
            }
            Err(_) => {
                to.reset(ResetCode::ABORTED);
                break RelayEnd::ConnectionLost;
            }
        }
    };
    RelayOutcome { bytes, end }
}

/// Splices two flows until both directions end, preserving half-close and reset codes.
/// Returns (a → b, b → a).
pub async fn splice(a: FlowStream, b: FlowStream) -> (RelayOutcome, RelayOutcome) {
    let (mut a_send, mut a_recv) = a.into_split();
    let (mut b_send, mut b_recv) = b.into_split();
    tokio::join!(
        relay(&mut a_recv, &mut b_send),
        relay(&mut b_recv, &mut a_send)
    )
}
