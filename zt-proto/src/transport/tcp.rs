//! The splice between a TCP connection and a flow: what the client does between a local
//! program's socket and its flow, and the connector between its flow and the origin.
//!
//! TCP's semantics are kept both ways: a FIN from either side becomes a FIN on the other
//! while the opposite direction keeps flowing (half-close), and a reset on either side
//! becomes a reset on the other: toward the flow a QUIC stream reset (and stop) with
//! [`ResetCode::CONNECTION_RESET`], toward TCP an RST (the socket closed with zero
//! linger).
//!
//! Memory: the TCP → flow direction takes its read buffer only once the socket is
//! readable and hands it to the stream with its bytes (no copy), so an idle connection
//! holds no buffer at all; a short read is copied out instead, so that it does not pin a
//! whole buffer until the peer acknowledges it. The flow → TCP direction writes what the
//! transport received, gathered into batches ([`FlowRecvStream::read_batch`]).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tracing::debug;

use super::stream::{FlowRecvStream, FlowSendStream, FlowStream, RELAY_BATCH};
use crate::flow::ResetCode;

/// Read buffer for the TCP → flow direction. 64 KiB is loopback's TCP segment: one read
/// per segment keeps a fast flow's system calls few, and since the buffer is taken only
/// when the socket is readable, an idle connection costs none of it.
const TCP_READ_BUF: usize = 64 * 1024;

/// What a splice does when the side it writes to stops taking bytes: the TCP peer's
/// socket broke, or the flow's peer stopped reading or its connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WriteFailure {
    /// Only that direction ends: toward the flow nothing more is sent; toward TCP the
    /// flow's peer is asked to stop sending ([`ResetCode::CONNECTION_RESET`]). The other
    /// direction goes on until it ends by itself. The client's choice: the local program
    /// may still be sending when the far side stopped reading.
    #[default]
    EndDirection,
    /// The whole splice is aborted, as for a reset of the side being read. The
    /// connector's choice: an origin or an edge that stops taking bytes ends the flow.
    Reset,
}

/// Counts bytes as a splice moves them, for figures that must be live while a long flow
/// runs (a metrics scrape in the middle of a `kubectl cp`). Both methods default to
/// nothing; `()` counts nothing.
pub trait SpliceCounter: Sync {
    /// `n` bytes read from TCP were handed to the flow.
    fn to_flow(&self, n: u64) {
        let _ = n;
    }
    /// `n` bytes read from the flow were written to TCP.
    fn to_tcp(&self, n: u64) {
        let _ = n;
    }
}

impl SpliceCounter for () {}

/// Bytes moved by a [`TcpSplice`] and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpSpliceOutcome {
    /// Bytes read from TCP and handed to the flow (early data included).
    pub to_flow: u64,
    /// Bytes read from the flow and written to TCP.
    pub to_tcp: u64,
    /// Whether the splice ended in a reset (both sides were then aborted); `false` when
    /// each direction ended with a FIN or (with [`WriteFailure::EndDirection`]) a write
    /// failure.
    pub reset: bool,
}

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// FIN passed on.
    Finished,
    /// The splice is to be aborted both ways.
    Reset,
    /// The side being written stopped or broke; only this direction ends.
    WriteFailed,
}

/// Splices a TCP connection with a flow until both directions end (or one resets).
///
/// TCP's semantics are kept both ways: a FIN from either side becomes a FIN on the other
/// while the opposite direction keeps flowing (half-close); a reset on either side becomes
/// a reset on the other (toward the flow a stream reset and stop with
/// [`ResetCode::CONNECTION_RESET`], toward TCP an RST). A side that stops taking bytes is
/// handled as [`TcpSplice::on_write_failure`] says. An idle connection holds no read
/// buffer: one is taken only once the socket is readable and goes to the stream with its
/// bytes, without a copy.
///
/// ```no_run
/// # async fn run(tcp: tokio::net::TcpStream, flow: zt_proto::FlowStream) {
/// use std::time::Duration;
/// use zt_proto::{TcpSplice, WriteFailure};
///
/// let outcome = TcpSplice::new()
///     .on_write_failure(WriteFailure::Reset)
///     .wait_for_ack(Duration::from_secs(10))
///     .run(tcp, flow)
///     .await;
/// println!("{} bytes up, {} down, reset: {}", outcome.to_flow, outcome.to_tcp, outcome.reset);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpSplice {
    write_failure: WriteFailure,
    ack_wait: Option<Duration>,
}

impl TcpSplice {
    /// A splice that ends one direction on a write failure and does not wait for the
    /// flow's peer to acknowledge the last bytes.
    pub const fn new() -> Self {
        Self {
            write_failure: WriteFailure::EndDirection,
            ack_wait: None,
        }
    }

    /// What to do when the side being written stops taking bytes.
    pub const fn on_write_failure(mut self, write_failure: WriteFailure) -> Self {
        self.write_failure = write_failure;
        self
    }

    /// After a clean end, waits up to `bound` for the flow's peer to acknowledge every
    /// byte before the TCP connection is closed and the call returns, so that closing the
    /// QUIC connection right after (a finished drain) cannot cut the tail off.
    pub const fn wait_for_ack(mut self, bound: Duration) -> Self {
        self.ack_wait = Some(bound);
        self
    }

    /// Splices `tcp` with `flow` until both directions end, as described above.
    pub async fn run(self, tcp: TcpStream, flow: FlowStream) -> TcpSpliceOutcome {
        self.run_with(tcp, flow, &[], &()).await
    }

    /// [`TcpSplice::run`], first sending `early` (bytes the TCP side sent before the flow
    /// opened, such as those pipelined after a SOCKS request) and reporting every byte
    /// moved to `counter` as it goes.
    pub async fn run_with<C>(
        self,
        mut tcp: TcpStream,
        flow: FlowStream,
        early: &[u8],
        counter: &C,
    ) -> TcpSpliceOutcome
    where
        C: SpliceCounter + ?Sized,
    {
        let (mut send, mut recv) = flow.into_split();
        let mut out = TcpSpliceOutcome {
            to_flow: 0,
            to_tcp: 0,
            reset: false,
        };
        if !early.is_empty() {
            if let Err(e) = send.write_all(early).await {
                debug!(cause = %e, "the flow refused the early bytes; resetting the TCP side");
                out.reset = true;
                abort_tcp(&tcp);
                return out;
            }
            let n = early.len() as u64;
            out.to_flow += n;
            counter.to_flow(n);
        }
        let reset = {
            let (rd, mut wr) = tcp.split();
            let (mut up, mut down) = (0u64, 0u64);
            let reset = {
                let up_fut = tcp_to_flow(self.write_failure, &rd, &mut send, &mut up, counter);
                let down_fut =
                    flow_to_tcp(self.write_failure, &mut recv, &mut wr, &mut down, counter);
                tokio::pin!(up_fut, down_fut);
                let (mut up_end, mut down_end) = (None, None);
                // Both directions run until each ends; a reset on either ends both at once.
                loop {
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
                }
            };
            out.to_flow += up;
            out.to_tcp = down;
            reset
        };
        if reset {
            out.reset = true;
            // Abort both ways: the flow with a reset code, the TCP side with an RST.
            send.reset(ResetCode::CONNECTION_RESET);
            recv.stop(ResetCode::CONNECTION_RESET);
            abort_tcp(&tcp);
        } else if let Some(bound) = self.ack_wait {
            let _ = tokio::time::timeout(bound, send.stopped()).await;
        }
        drop(tcp);
        out
    }
}

/// Makes the coming close of `tcp` an RST rather than a FIN.
fn abort_tcp(tcp: &TcpStream) {
    if let Err(e) = tcp.set_zero_linger() {
        debug!(cause = %e, "cannot set zero linger; the TCP peer sees a FIN instead of a reset");
    }
}

/// TCP → flow, then the FIN or the reset.
async fn tcp_to_flow<C: SpliceCounter + ?Sized>(
    write_failure: WriteFailure,
    tcp: &ReadHalf<'_>,
    flow: &mut FlowSendStream,
    bytes: &mut u64,
    counter: &C,
) -> End {
    loop {
        // Wait for bytes before taking a buffer, so an idle connection holds none.
        if let Err(e) = tcp.readable().await {
            debug!(cause = %e, "TCP connection failed; resetting the flow");
            return End::Reset;
        }
        let mut buf = BytesMut::with_capacity(TCP_READ_BUF);
        match tcp.try_read_buf(&mut buf) {
            Ok(0) => {
                // The TCP side's FIN: finish the stream, keep relaying the other way.
                let _ = flow.finish();
                return End::Finished;
            }
            Ok(n) => {
                let chunk = if n < TCP_READ_BUF / 4 {
                    Bytes::copy_from_slice(&buf)
                } else {
                    buf.freeze()
                };
                if let Err(e) = flow.write_chunk(chunk).await {
                    debug!(cause = %e, "the flow stopped taking bytes");
                    return match write_failure {
                        WriteFailure::EndDirection => End::WriteFailed,
                        WriteFailure::Reset => End::Reset,
                    };
                }
                let n = n as u64;
                *bytes += n;
                counter.to_flow(n);
            }
            // Readiness can be spurious; wait for the next one.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                debug!(cause = %e, "TCP connection failed; resetting the flow");
                return End::Reset;
            }
        }
    }
}

/// Flow → TCP, then the FIN or the reset.
async fn flow_to_tcp<C: SpliceCounter + ?Sized>(
    write_failure: WriteFailure,
    flow: &mut FlowRecvStream,
    tcp: &mut WriteHalf<'_>,
    bytes: &mut u64,
    counter: &C,
) -> End {
    loop {
        // What has arrived, gathered: one write per batch rather than one per packet.
        match flow.read_batch(RELAY_BATCH).await {
            Ok(Some(chunk)) => {
                if let Err(e) = tcp.write_all(&chunk).await {
                    debug!(cause = %e, "the TCP side stopped taking bytes");
                    return match write_failure {
                        WriteFailure::EndDirection => {
                            flow.stop(ResetCode::CONNECTION_RESET);
                            End::WriteFailed
                        }
                        WriteFailure::Reset => End::Reset,
                    };
                }
                let n = chunk.len() as u64;
                *bytes += n;
                counter.to_tcp(n);
            }
            Ok(None) => {
                // The flow's FIN: half-close toward TCP, keep reading it.
                let _ = tcp.shutdown().await;
                return End::Finished;
            }
            Err(e) => {
                debug!(cause = %e, "flow reset or lost; resetting the TCP side");
                return End::Reset;
            }
        }
    }
}
