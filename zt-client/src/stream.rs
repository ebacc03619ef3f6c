//! A dialled flow as a byte stream, and the splice between a local TCP connection and a
//! flow that the forwarder and the SOCKS5 proxy share.
//!
//! The splice keeps TCP's semantics both ways: a FIN from either side becomes a FIN on
//! the other while the opposite direction keeps flowing (half-close), and a reset on
//! either side becomes a reset on the other (a QUIC stream reset with
//! [`ResetCode::CONNECTION_RESET`] one way, a TCP RST the other).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::ReadHalf;
use tokio::net::TcpStream;
use tracing::debug;
use zt_proto::{FlowError, FlowRecvStream, FlowSendStream, FlowStream, ResetCode, RELAY_BATCH};

/// A TCP flow opened by [`crate::Client::dial`].
///
/// `AsyncRead` returns the destination's bytes and EOF at its FIN; `shutdown()` sends FIN
/// (half-close) and reading goes on. A reset from the far side fails reads and writes with
/// `ConnectionReset` (the code is in [`ClientStream::reset_code`]). Dropping the stream
/// closes it like a TCP socket; [`ClientStream::reset`] aborts it.
#[derive(Debug)]
pub struct ClientStream {
    flow: FlowStream,
}

impl ClientStream {
    pub(crate) fn new(flow: FlowStream) -> Self {
        Self { flow }
    }

    /// The flow's id on its connection.
    pub fn flow_id(&self) -> u64 {
        self.flow.flow_id()
    }

    /// Aborts the flow both ways with `code`.
    pub fn reset(&mut self, code: ResetCode) {
        self.flow.reset(code);
    }

    /// The peer's reset code inside an error this stream returned.
    pub fn reset_code(err: &io::Error) -> Option<ResetCode> {
        FlowError::reset_code(err)
    }

    /// The underlying flow, for zero-copy relays.
    pub fn into_flow(self) -> FlowStream {
        self.flow
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().flow).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().flow).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().flow).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().flow).poll_shutdown(cx)
    }
}

/// How one direction of a TCP splice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// FIN passed on.
    Finished,
    /// The side being read reset: the whole connection is to be reset.
    Reset,
    /// The side being written stopped or broke; this direction ends.
    WriteFailed,
}

/// Bytes moved and how the splice ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpliceOutcome {
    pub(crate) up: u64,
    pub(crate) down: u64,
    pub(crate) reset: bool,
}

/// Local buffer per direction: large enough for bulk copies, small enough that thousands
/// of proxied connections cost little.
const COPY_BUF: usize = 64 * 1024;

/// Local → flow: reads the TCP side, writes the flow, then FIN or reset. A buffer is taken
/// only once the socket is readable and goes to the transport with its bytes (no copy), so
/// an idle connection holds none; a short read is copied out so that it does not pin the
/// whole buffer until the edge acknowledges it.
async fn up(tcp: &mut ReadHalf<'_>, flow: &mut FlowSendStream, bytes: &AtomicU64) -> End {
    loop {
        let got = match tcp.readable().await {
            Ok(()) => {
                let mut buf = BytesMut::with_capacity(COPY_BUF);
                tcp.try_read_buf(&mut buf).map(|n| (n, buf))
            }
            Err(e) => Err(e),
        };
        match got {
            Ok((0, _)) => {
                let _ = flow.finish();
                return End::Finished;
            }
            Ok((n, buf)) => {
                let chunk = if n < COPY_BUF / 4 {
                    Bytes::copy_from_slice(&buf)
                } else {
                    buf.freeze()
                };
                if flow.write_chunk(chunk).await.is_err() {
                    return End::WriteFailed;
                }
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                debug!(error = %e, "local connection failed; resetting the flow");
                flow.reset(ResetCode::CONNECTION_RESET);
                return End::Reset;
            }
        }
    }
}

/// Flow → local: reads the flow in batches, writes the TCP side, then FIN or reset.
async fn down(
    flow: &mut FlowRecvStream,
    tcp: &mut (impl AsyncWrite + Unpin),
    bytes: &AtomicU64,
) -> End {
    loop {
        // What has arrived, gathered: one write per batch rather than one per packet.
        match flow.read_batch(RELAY_BATCH).await {
            Ok(Some(chunk)) => {
                if tcp.write_all(&chunk).await.is_err() {
                    flow.stop(ResetCode::CONNECTION_RESET);
                    return End::WriteFailed;
                }
                bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok(None) => {
                let _ = tcp.shutdown().await;
                return End::Finished;
            }
            Err(e) => {
                debug!(error = %e, "flow reset or lost; resetting the local connection");
                return End::Reset;
            }
        }
    }
}

/// Splices a local TCP connection with a flow until both directions end. `early` holds
/// bytes the local side sent before the flow opened (pipelined after a SOCKS request).
pub(crate) async fn splice_tcp(
    mut tcp: TcpStream,
    flow: FlowStream,
    early: &[u8],
) -> SpliceOutcome {
    let (mut fsend, mut frecv) = flow.into_split();
    let mut out = SpliceOutcome {
        up: 0,
        down: 0,
        reset: false,
    };
    if !early.is_empty() {
        if fsend.write_all(early).await.is_err() {
            out.reset = true;
            let _ = tcp.set_zero_linger();
            return out;
        }
        out.up += early.len() as u64;
    }
    let reset = {
        let (mut r, mut w) = tcp.split();
        let up_bytes = AtomicU64::new(0);
        let down_bytes = AtomicU64::new(0);
        let up_fut = up(&mut r, &mut fsend, &up_bytes);
        let down_fut = down(&mut frecv, &mut w, &down_bytes);
        tokio::pin!(up_fut, down_fut);
        let (mut up_end, mut down_end) = (None, None);
        // Both directions run until each ends; a reset on either side ends both at once.
        let reset = loop {
            tokio::select! {
                e = &mut up_fut, if up_end.is_none() => {
                    if e == End::Reset { break true; }
                    up_end = Some(e);
                }
                e = &mut down_fut, if down_end.is_none() => {
                    if e == End::Reset { break true; }
                    down_end = Some(e);
                }
            }
            if up_end.is_some() && down_end.is_some() {
                break false;
            }
        };
        out.up += up_bytes.load(Ordering::Relaxed);
        out.down = down_bytes.load(Ordering::Relaxed);
        reset
    };
    if reset {
        out.reset = true;
        // Abort both ways: the flow with a reset code, the TCP side with an RST.
        fsend.reset(ResetCode::CONNECTION_RESET);
        frecv.stop(ResetCode::CONNECTION_RESET);
        let _ = tcp.set_zero_linger();
    }
    out
}
