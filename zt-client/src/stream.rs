//! A dialled flow as a byte stream, and the splice between a local TCP connection and a
//! flow that the forwarder and the SOCKS5 proxy share.
//!
//! The splice is zt-proto's [`TcpSplice`], shared with the connector: it keeps TCP's
//! semantics both ways: a FIN from either side becomes a FIN on the other while the
//! opposite direction keeps flowing (half-close), and a reset on either side becomes a
//! reset on the other (a QUIC stream reset with [`ResetCode::CONNECTION_RESET`] one way, a
//! TCP RST the other).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use zt_proto::{FlowError, FlowStream, ResetCode, TcpSplice, TcpSpliceOutcome, WriteFailure};

/// A TCP flow opened by [`crate::Client::dial`].
///
/// `AsyncRead` returns the destination's bytes and EOF at its FIN; `shutdown()` sends FIN
/// (half-close) and reading goes on. A reset from the far side fails reads and writes with
/// `ConnectionReset` (the code is in [`ClientStream::reset_code`]). Dropping the stream
/// closes it like a TCP socket; [`ClientStream::reset`] aborts it.
pub struct ClientStream {
    flow: FlowStream,
    /// The connection the flow is pinned to, counted as one flow in flight on it while the
    /// stream lives.
    pin: Box<dyn std::any::Any + Send + Sync>,
}

impl ClientStream {
    pub(crate) fn new(flow: FlowStream, pin: Box<dyn std::any::Any + Send + Sync>) -> Self {
        Self { flow, pin }
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

    /// The underlying flow, for zero-copy relays. The flow stays on its connection, but
    /// the client no longer counts it when it picks the least loaded connection for a new
    /// flow (its own forwarders and proxy keep the stream whole for that reason).
    pub fn into_flow(self) -> FlowStream {
        self.flow
    }

    /// Splices the flow with a local TCP connection until both directions end, counted on
    /// its connection throughout. `early` holds bytes the local side sent before the flow
    /// opened.
    pub(crate) async fn splice(self, tcp: TcpStream, early: &[u8]) -> TcpSpliceOutcome {
        let Self { flow, pin } = self;
        let out = splice_tcp(tcp, flow, early).await;
        drop(pin);
        out
    }
}

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientStream")
            .field("flow_id", &self.flow.flow_id())
            .finish()
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

/// Splices a local TCP connection with a flow until both directions end. `early` holds
/// bytes the local side sent before the flow opened (pipelined after a SOCKS request).
///
/// A side that stops taking bytes ends only its direction: the local program may still
/// be sending when the far side stopped reading.
pub(crate) async fn splice_tcp(tcp: TcpStream, flow: FlowStream, early: &[u8]) -> TcpSpliceOutcome {
    TcpSplice::new()
        .on_write_failure(WriteFailure::EndDirection)
        .run_with(tcp, flow, early, &())
        .await
}
