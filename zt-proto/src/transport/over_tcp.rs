//! zt/1 over TLS 1.3 on TCP, with HTTP/2 (the `h2` crate) as the stream multiplexer.
//!
//! The peer (connector or client) is the HTTP/2 client, the edge the HTTP/2 server. What
//! QUIC gives zt and HTTP/2 does not, and how this transport makes up for it:
//!
//! - **Streams both ways.** Only an HTTP/2 client opens streams. A peer's `open_bi` is a
//!   `POST /zt/stream` request whose body and response body are the stream's two directions
//!   (the edge answers `200` at once). For the edge's `open_bi` the peer keeps a few
//!   `POST /zt/reverse` requests parked at the edge ([`PARKED_REVERSE`]); the edge answers
//!   one with `200` when it opens a stream, the peer's `accept_bi` returns it, and the peer
//!   parks another in its place.
//! - **Half-close and resets.** FIN is HTTP/2 END_STREAM on the DATA of that direction. A
//!   reset (QUIC RESET_STREAM) and a stop (QUIC STOP_SENDING) both become RST_STREAM, whose
//!   error code carries zt's [`ResetCode`] as `0x7a74_0000 + code`; RST_STREAM ends both
//!   directions, where QUIC's two frames end one each (zt resets both anyway).
//! - **Datagrams and close codes.** One `POST /zt/session` stream, opened first, carries
//!   [`SessionFrame`]s both ways: datagrams (reliable and in order here, so a lost TCP
//!   segment delays them and every stream behind it; none is dropped for congestion, only
//!   when the bounded queue is full) and the connection close with zt's code.
//! - **Idle timeout.** HTTP/2 PINGs every keep-alive interval; no answer within the idle
//!   timeout ends the connection as QUIC's idle timeout would. The PING also measures RTT.
//!
//! The TLS exporter is the same keying material export as over QUIC (RFC 5705 on TLS 1.3),
//! so the channel-bound proof is unchanged.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::Reason;
use quinn::VarInt;
use tokio::sync::{mpsc, watch, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tracing::debug;

use crate::auth::{Exporter, EXPORTER_CONTEXT, EXPORTER_LABEL, EXPORTER_LEN};
use crate::flow::{CloseCode, ResetCode};
use crate::session::{SessionFrame, MAX_SESSION_DATAGRAM};
use crate::transport::carrier::{ConnectionLost, Transport};
use crate::transport::error::DatagramError;
use crate::transport::settings::TransportSettings;
use crate::transport::stream::{FlowError, FlowRecvStream, FlowSendStream};

/// How many reverse requests a peer keeps parked at the edge: the edge can open this many
/// streams back to back without waiting a round trip for the peer to park more.
pub const PARKED_REVERSE: u32 = 32;

/// Datagrams queued for sending, and received but not yet read; beyond either, datagrams
/// are dropped (UDP's behaviour, and what QUIC's datagram buffers do).
const DATAGRAM_QUEUE: usize = 256;

/// How long a close waits for its CLOSE frame to reach the wire before the TCP connection
/// goes.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// HTTP/2 request paths of the three stream kinds.
pub(crate) const PATH_STREAM: &str = "/zt/stream";
pub(crate) const PATH_REVERSE: &str = "/zt/reverse";
pub(crate) const PATH_SESSION: &str = "/zt/session";

/// RST_STREAM error codes carrying a zt [`ResetCode`] are this plus the code.
pub(crate) const RESET_BASE: u32 = 0x7a74_0000;

/// Largest header block the edge and the peer accept (SETTINGS_MAX_HEADER_LIST_SIZE): zt's
/// requests carry a method and a path, nothing more.
pub(crate) const MAX_HEADER_LIST: u32 = 4 * 1024;

/// HTTP/2's largest initial window.
const MAX_WINDOW: u64 = (1 << 31) - 1;

/// DATA frames up to this size: fewer frames per byte than the 16 KiB default.
pub(crate) const MAX_FRAME: u32 = 64 * 1024;

pub(crate) fn h2_reason(code: ResetCode) -> Reason {
    Reason::from(RESET_BASE.saturating_add(code.0.min(0xffff)))
}

pub(crate) fn reset_code(reason: Reason) -> ResetCode {
    let r = u32::from(reason);
    if (RESET_BASE..=RESET_BASE + 0xffff).contains(&r) {
        ResetCode(r - RESET_BASE)
    } else if reason == Reason::NO_ERROR {
        ResetCode::STOPPED
    } else if reason == Reason::REFUSED_STREAM {
        ResetCode::REFUSED
    } else {
        // CANCEL (a stream dropped unfinished) and h2's own errors.
        ResetCode::ABORTED
    }
}

/// What every piece of one connection shares: how it ended, and its RTT.
#[derive(Debug)]
pub(crate) struct State {
    lost: watch::Sender<Option<ConnectionLost>>,
    rtt_nanos: AtomicU64,
    tasks: StdMutex<Vec<AbortHandle>>,
}

impl State {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            lost: watch::channel(None).0,
            rtt_nanos: AtomicU64::new(0),
            tasks: StdMutex::new(Vec::new()),
        })
    }

    pub(crate) fn lost(&self) -> Option<ConnectionLost> {
        self.lost.borrow().clone()
    }

    /// Records why the connection ended (the first reason wins) and stops its tasks.
    pub(crate) fn end(&self, why: ConnectionLost) {
        self.lost.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(why);
                true
            } else {
                false
            }
        });
        self.abort_tasks();
    }

    fn abort_tasks(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
    }

    pub(crate) fn track(&self, handle: AbortHandle) {
        if self.lost().is_some() {
            handle.abort();
            return;
        }
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    pub(crate) fn lost_or_reset(&self) -> ConnectionLost {
        self.lost().unwrap_or(quinn::ConnectionError::Reset)
    }

    /// Waits until the connection has ended, and says why.
    pub(crate) async fn wait_lost(&self) -> ConnectionLost {
        let mut rx = self.lost.subscribe();
        let lost = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone());
        lost.unwrap_or(quinn::ConnectionError::LocallyClosed)
    }
}

fn spawn_tracked<F>(state: &State, fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(fut);
    state.track(handle.abort_handle());
}

fn violation(reason: &str) -> ConnectionLost {
    quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
        error_code: quinn::TransportErrorCode::PROTOCOL_VIOLATION,
        frame_type: None,
        reason: Bytes::copy_from_slice(reason.as_bytes()),
    })
}

pub(crate) fn h2_lost(e: &h2::Error) -> ConnectionLost {
    if e.is_go_away() && e.is_remote() {
        let code = e.reason().map_or(0, u32::from);
        quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: VarInt::from_u32(code),
            reason: Bytes::new(),
        })
    } else if e.is_io() || e.is_go_away() {
        quinn::ConnectionError::Reset
    } else {
        violation(&e.to_string())
    }
}

/// A flow error from an h2 stream error; `reading` tells which half met it.
fn flow_error(e: &h2::Error, reading: bool, state: &State) -> FlowError {
    if e.is_reset() && e.is_remote() {
        if let Some(r) = e.reason() {
            let c = reset_code(r);
            return if reading {
                FlowError::Reset(c)
            } else {
                FlowError::Stopped(c)
            };
        }
    }
    if let Some(lost) = state.lost() {
        return FlowError::ConnectionLost(lost);
    }
    if e.is_io() || e.is_go_away() {
        return FlowError::ConnectionLost(h2_lost(e));
    }
    FlowError::Closed
}

// ---------------------------------------------------------------------------------------
// Stream halves.
// ---------------------------------------------------------------------------------------

type SharedSend = Arc<StdMutex<h2::SendStream<Bytes>>>;

fn lock(s: &SharedSend) -> std::sync::MutexGuard<'_, h2::SendStream<Bytes>> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sending half of a stream over HTTP/2.
#[derive(Debug)]
pub(crate) struct H2Send {
    stream: SharedSend,
    done: bool,
    state: Arc<State>,
}

impl H2Send {
    fn new(stream: SharedSend, state: Arc<State>) -> Self {
        Self {
            stream,
            done: false,
            state,
        }
    }

    /// Capacity to send up to `want` bytes now, as HTTP/2 flow control grants it.
    fn poll_capacity(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<Result<usize, FlowError>> {
        if self.done {
            return Poll::Ready(Err(FlowError::Closed));
        }
        let mut s = lock(&self.stream);
        loop {
            s.reserve_capacity(want);
            let cap = s.capacity();
            if cap > 0 {
                return Poll::Ready(Ok(cap.min(want)));
            }
            match ready!(s.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(flow_error(&e, false, &self.state))),
                None => {
                    // No longer sendable: reset by the peer, or the connection went.
                    return Poll::Ready(Err(match s.poll_reset(cx) {
                        Poll::Ready(Ok(r)) => FlowError::Stopped(reset_code(r)),
                        Poll::Ready(Err(e)) => flow_error(&e, false, &self.state),
                        Poll::Pending => match self.state.lost() {
                            Some(l) => FlowError::ConnectionLost(l),
                            None => FlowError::Closed,
                        },
                    }));
                }
            }
        }
    }

    fn send(&mut self, data: Bytes) -> Result<(), FlowError> {
        lock(&self.stream)
            .send_data(data, false)
            .map_err(|e| flow_error(&e, false, &self.state))
    }

    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, FlowError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(self.poll_capacity(cx, buf.len()))?;
        self.send(Bytes::copy_from_slice(&buf[..n]))?;
        Poll::Ready(Ok(n))
    }

    pub(crate) async fn write_chunk(&mut self, mut chunk: Bytes) -> Result<(), FlowError> {
        while !chunk.is_empty() {
            let want = chunk.len();
            let n = std::future::poll_fn(|cx| self.poll_capacity(cx, want)).await?;
            self.send(chunk.split_to(n))?;
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self) -> Result<(), FlowError> {
        if self.done {
            return Err(FlowError::Closed);
        }
        self.done = true;
        lock(&self.stream)
            .send_data(Bytes::new(), true)
            .map_err(|_| FlowError::Closed)
    }

    pub(crate) fn reset(&mut self, code: ResetCode) {
        if !self.done {
            self.done = true;
            lock(&self.stream).send_reset(h2_reason(code));
        }
    }

    /// Waits until the stream is reset by the peer (`Some(code)`) or the connection ends;
    /// HTTP/2 has no acknowledgement of a finished stream, so a finished stream whose peer
    /// never resets it resolves when the peer's END_STREAM arrives is not observable here:
    /// it resolves at once after [`H2Send::finish`].
    pub(crate) async fn stopped(&mut self) -> Result<Option<ResetCode>, FlowError> {
        if self.done {
            return Ok(None);
        }
        let state = self.state.clone();
        std::future::poll_fn(|cx| match lock(&self.stream).poll_reset(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(Ok(Some(reset_code(r)))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(flow_error(&e, false, &state))),
            Poll::Pending => Poll::Pending,
        })
        .await
    }
}

impl Drop for H2Send {
    fn drop(&mut self) {
        // As quinn does with a dropped send stream: finish it after what was written.
        if !self.done {
            let _ = lock(&self.stream).send_data(Bytes::new(), true);
        }
    }
}

pub(crate) enum RecvState {
    /// A peer-opened stream waits for the edge's response headers.
    Pending(h2::client::ResponseFuture),
    Open(h2::RecvStream),
    Done,
}

/// The receiving half of a stream over HTTP/2.
pub(crate) struct H2Recv {
    state: RecvState,
    held: Bytes,
    send: SharedSend,
    conn: Arc<State>,
    /// The edge's count of a peer's concurrent streams.
    _permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for H2Recv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Recv")
            .field("held", &self.held.len())
            .finish()
    }
}

impl H2Recv {
    fn new(
        state: RecvState,
        send: SharedSend,
        conn: Arc<State>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            state,
            held: Bytes::new(),
            send,
            conn,
            _permit: permit,
        }
    }

    /// Up to `max` bytes as they arrived; `None` at the peer's END_STREAM.
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, FlowError>> {
        if !self.held.is_empty() {
            let n = self.held.len().min(max);
            return Poll::Ready(Ok(Some(self.held.split_to(n))));
        }
        loop {
            match &mut self.state {
                RecvState::Pending(fut) => match ready!(Pin::new(fut).poll(cx)) {
                    Ok(resp) if resp.status() == http::StatusCode::OK => {
                        self.state = RecvState::Open(resp.into_body());
                    }
                    Ok(_) => {
                        self.state = RecvState::Done;
                        return Poll::Ready(Err(FlowError::Reset(ResetCode::REFUSED)));
                    }
                    Err(e) => {
                        self.state = RecvState::Done;
                        return Poll::Ready(Err(flow_error(&e, true, &self.conn)));
                    }
                },
                RecvState::Open(body) => match ready!(body.poll_data(cx)) {
                    Some(Ok(mut data)) => {
                        let _ = body.flow_control().release_capacity(data.len());
                        if data.is_empty() {
                            continue;
                        }
                        if data.len() > max {
                            self.held = data.split_off(max);
                        }
                        return Poll::Ready(Ok(Some(data)));
                    }
                    Some(Err(e)) => {
                        self.state = RecvState::Done;
                        return Poll::Ready(Err(flow_error(&e, true, &self.conn)));
                    }
                    None => {
                        self.state = RecvState::Done;
                        return Poll::Ready(Ok(None));
                    }
                },
                RecvState::Done => return Poll::Ready(Ok(None)),
            }
        }
    }

    /// Waits until the stream's connection is lost (an HTTP/2 reset of this one stream is
    /// seen by the next read).
    pub(crate) async fn connection_lost(&self) -> FlowError {
        let mut rx = self.conn.lost.subscribe();
        let lost = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone());
        match lost {
            Some(lost) => FlowError::ConnectionLost(lost),
            None => FlowError::Closed,
        }
    }

    pub(crate) fn stop(&mut self, code: ResetCode) {
        if !matches!(self.state, RecvState::Done) {
            self.state = RecvState::Done;
            self.held = Bytes::new();
            lock(&self.send).send_reset(h2_reason(code));
        }
    }
}

use std::future::Future as _;

pub(crate) fn halves(
    send: h2::SendStream<Bytes>,
    recv: RecvState,
    state: &Arc<State>,
    permit: Option<OwnedSemaphorePermit>,
) -> (FlowSendStream, FlowRecvStream) {
    let send = Arc::new(StdMutex::new(send));
    (
        FlowSendStream::from_h2(H2Send::new(send.clone(), state.clone())),
        FlowRecvStream::from_h2(H2Recv::new(recv, send, state.clone(), permit)),
    )
}

// ---------------------------------------------------------------------------------------
// The transport.
// ---------------------------------------------------------------------------------------

enum Side {
    /// The peer: opens requests.
    Client(h2::client::SendRequest<Bytes>),
    /// The edge: takes parked reverse requests for its opens.
    Server {
        reverse: Mutex<mpsc::Receiver<(h2::RecvStream, h2::server::SendResponse<Bytes>)>>,
        streams: Arc<Semaphore>,
        allowed: AtomicU32,
    },
}

struct Inner {
    side: Side,
    remote: SocketAddr,
    exporter: Option<Exporter>,
    state: Arc<State>,
    accepted: Mutex<mpsc::Receiver<(FlowSendStream, FlowRecvStream)>>,
    datagrams_in: Mutex<mpsc::Receiver<Bytes>>,
    datagrams_out: mpsc::Sender<SessionFrame>,
    close_tx: StdMutex<Option<tokio::sync::oneshot::Sender<SessionFrame>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let closing = self
            .close_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none();
        // A close in progress ends the tasks itself once its frame is out.
        if !closing {
            self.state.end(quinn::ConnectionError::LocallyClosed);
        }
    }
}

/// zt/1 over TLS 1.3 on TCP, streams multiplexed by HTTP/2 (see the module docs).
///
/// A cheap handle: clones share the connection, which ends when the last one drops.
#[derive(Clone)]
pub struct Tcp(Arc<Inner>);

impl std::fmt::Debug for Tcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tcp")
            .field("remote", &self.0.remote)
            .field("edge_side", &matches!(self.0.side, Side::Server { .. }))
            .finish()
    }
}

/// The TLS keying material export zt's proofs bind to.
pub(crate) fn tls_exporter<C>(conn: &rustls::ConnectionCommon<C>) -> Option<Exporter> {
    let mut out = [0u8; EXPORTER_LEN];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, Some(EXPORTER_CONTEXT))
        .ok()?;
    Some(out)
}

pub(crate) fn window(v: u64) -> u32 {
    // Bounded by HTTP/2's largest window, so the cast cannot truncate.
    v.clamp(65_535, MAX_WINDOW) as u32
}

/// The session stream's two tasks: frames out (datagrams, then the close), frames in.
fn spawn_session(
    state: &Arc<State>,
    mut send: h2::SendStream<Bytes>,
    mut recv: h2::RecvStream,
    mut out: mpsc::Receiver<SessionFrame>,
    close: tokio::sync::oneshot::Receiver<SessionFrame>,
    datagrams_in: mpsc::Sender<Bytes>,
) {
    let st = state.clone();
    spawn_tracked(state, async move {
        let mut close = std::pin::pin!(close);
        let mut buf = BytesMut::new();
        loop {
            let (frame, last) = tokio::select! {
                biased;
                c = &mut close => match c {
                    Ok(f) => (f, true),
                    Err(_) => return,
                },
                f = out.recv() => match f {
                    Some(f) => (f, false),
                    None => return,
                },
            };
            buf.clear();
            frame.encode(&mut buf);
            let mut bytes = buf.split().freeze();
            while !bytes.is_empty() {
                send.reserve_capacity(bytes.len());
                let cap = send.capacity();
                let n = if cap > 0 {
                    cap
                } else {
                    match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                        Some(Ok(_)) => continue,
                        _ => return,
                    }
                };
                let n = n.min(bytes.len());
                if send.send_data(bytes.split_to(n), false).is_err() {
                    return;
                }
            }
            if last {
                let _ = send.send_data(Bytes::new(), true);
                // Give the connection task a moment to put the frame on the wire.
                tokio::time::sleep(CLOSE_LINGER).await;
                st.abort_tasks();
                return;
            }
        }
    });
    let st = state.clone();
    spawn_tracked(state, async move {
        let mut buf = BytesMut::new();
        loop {
            match recv.data().await {
                Some(Ok(data)) => {
                    let _ = recv.flow_control().release_capacity(data.len());
                    buf.extend_from_slice(&data);
                }
                Some(Err(e)) => return st.end(h2_lost(&e)),
                None => return st.end(st.lost_or_reset()),
            }
            loop {
                match SessionFrame::decode(&buf) {
                    Ok(Some((frame, n))) => {
                        let _ = buf.split_to(n);
                        match frame {
                            // A full queue drops the datagram, as UDP would.
                            SessionFrame::Datagram(d) => {
                                let _ = datagrams_in.try_send(d);
                            }
                            SessionFrame::Close { code, reason } => {
                                return st.end(quinn::ConnectionError::ApplicationClosed(
                                    quinn::ApplicationClose {
                                        error_code: VarInt::from_u32(code),
                                        reason,
                                    },
                                ));
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!(error = %e, "bad frame on the session stream");
                        return st.end(violation("bad frame on the session stream"));
                    }
                }
            }
        }
    });
}

/// The HTTP/2 client settings both of the edge's and peers' client roles use: no server
/// push, no server-opened streams, the transport's windows, header blocks up to
/// `max_header_list` decoded.
pub(crate) fn client_builder(
    settings: &TransportSettings,
    max_header_list: u32,
) -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.enable_push(false)
        .initial_window_size(window(settings.stream_receive_window))
        .initial_connection_window_size(window(settings.connection_receive_window))
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(max_header_list)
        .max_concurrent_streams(0);
    b
}

/// Drives an HTTP/2 client connection on a task of its own, tracked by the returned state
/// (its end recorded there, why included), and sends its keep-alive PINGs.
pub(crate) fn drive_client<T>(
    mut conn: h2::client::Connection<T, Bytes>,
    settings: &TransportSettings,
    what: &'static str,
) -> Arc<State>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = State::new();
    let ping = conn.ping_pong();
    let st = state.clone();
    let driver = tokio::spawn(async move {
        let why = match conn.await {
            Ok(()) => st.lost_or_reset(),
            Err(e) => {
                debug!(error = %e, protocol = what, "HTTP/2 connection ended");
                h2_lost(&e)
            }
        };
        st.end(why);
    });
    state.track(driver.abort_handle());
    if let Some(ping) = ping {
        spawn_keepalive(
            &state,
            ping,
            settings.keep_alive_interval,
            settings.idle_timeout,
        );
    }
    state
}

/// Pings every `interval`; no answer within `idle` ends the connection as timed out.
fn spawn_keepalive(state: &Arc<State>, mut ping: h2::PingPong, interval: Duration, idle: Duration) {
    let st = state.clone();
    spawn_tracked(state, async move {
        loop {
            let sent = std::time::Instant::now();
            match tokio::time::timeout(idle, ping.ping(h2::Ping::opaque())).await {
                Ok(Ok(_)) => {
                    let rtt = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    st.rtt_nanos.store(rtt, Ordering::Relaxed);
                }
                Ok(Err(e)) => return st.end(h2_lost(&e)),
                Err(_) => return st.end(quinn::ConnectionError::TimedOut),
            }
            tokio::time::sleep(interval).await;
        }
    });
}

/// Ends a connection's tasks when dropped, unless defused (a session start that failed or
/// was given up on).
struct EndOnDrop(Option<Arc<State>>);

impl EndOnDrop {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            state.end(quinn::ConnectionError::LocallyClosed);
        }
    }
}

fn post(path: &str) -> http::Request<()> {
    let mut req = http::Request::new(());
    *req.method_mut() = http::Method::POST;
    // A fixed, valid URI: cannot fail.
    *req.uri_mut() = http::Uri::from_static(match path {
        PATH_SESSION => "https://zt/zt/session",
        PATH_REVERSE => "https://zt/zt/reverse",
        _ => "https://zt/zt/stream",
    });
    req
}

fn ok_response() -> http::Response<()> {
    http::Response::new(())
}

/// Why an HTTP/2 session over an established TLS connection could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TcpSessionError {
    /// The HTTP/2 handshake or the session stream failed.
    #[error("HTTP/2 over TLS: {0}")]
    H2(#[from] h2::Error),
    /// The TLS exporter was unavailable.
    #[error("the TLS exporter is unavailable on this connection")]
    Exporter,
}

impl Tcp {
    /// The peer side: HTTP/2 client over an established TLS 1.3 connection.
    pub(crate) async fn client<IO>(
        tls: tokio_rustls::client::TlsStream<IO>,
        remote: SocketAddr,
        settings: &TransportSettings,
    ) -> Result<Self, TcpSessionError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let exporter = tls_exporter(tls.get_ref().1).ok_or(TcpSessionError::Exporter)?;
        let (send_request, conn) = client_builder(settings, MAX_HEADER_LIST)
            .handshake::<_, Bytes>(tls)
            .await?;
        let state = drive_client(conn, settings, "zt/1");
        // The session stream first. A failure (or the caller's timeout dropping this
        // future) must not leave the connection's tasks running: `guard` ends them.
        let guard = EndOnDrop(Some(state.clone()));
        let mut sr = send_request.clone().ready().await?;
        let (resp, session_send) = sr.send_request(post(PATH_SESSION), false)?;
        let resp = resp.await?;
        if resp.status() != http::StatusCode::OK {
            state.end(violation("the edge refused the session stream"));
            return Err(TcpSessionError::H2(h2::Error::from(Reason::REFUSED_STREAM)));
        }
        let (dg_out_tx, dg_out_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (dg_in_tx, dg_in_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        spawn_session(
            &state,
            session_send,
            resp.into_body(),
            dg_out_rx,
            close_rx,
            dg_in_tx,
        );
        // The reverse pool: PARKED_REVERSE requests waiting for the edge to answer one.
        let (acc_tx, acc_rx) = mpsc::channel(PARKED_REVERSE as usize);
        let pool = Arc::new(Semaphore::new(PARKED_REVERSE as usize));
        let st = state.clone();
        let sr_pool = send_request.clone();
        spawn_tracked(&state, async move {
            loop {
                let Ok(permit) = pool.clone().acquire_owned().await else {
                    return;
                };
                let Ok(mut sr) = sr_pool.clone().ready().await else {
                    return;
                };
                let Ok((resp, send)) = sr.send_request(post(PATH_REVERSE), false) else {
                    return;
                };
                let acc = acc_tx.clone();
                let st2 = st.clone();
                spawn_tracked(&st, async move {
                    let claimed = resp.await;
                    drop(permit);
                    if let Ok(resp) = claimed {
                        if resp.status() == http::StatusCode::OK {
                            let pair = halves(send, RecvState::Open(resp.into_body()), &st2, None);
                            let _ = acc.send(pair).await;
                        }
                    }
                });
            }
        });
        guard.defuse();
        Ok(Self(Arc::new(Inner {
            side: Side::Client(send_request),
            remote,
            exporter: Some(exporter),
            state,
            accepted: Mutex::new(acc_rx),
            datagrams_in: Mutex::new(dg_in_rx),
            datagrams_out: dg_out_tx,
            close_tx: StdMutex::new(Some(close_tx)),
        })))
    }

    /// The edge side: HTTP/2 server over an established TLS 1.3 connection. Until
    /// [`Transport::set_max_concurrent_bi_streams`] raises it, the peer may hold
    /// `initial_streams` streams open at once.
    pub(crate) async fn server<IO>(
        tls: tokio_rustls::server::TlsStream<IO>,
        remote: SocketAddr,
        settings: &TransportSettings,
        initial_streams: u32,
    ) -> Result<Self, TcpSessionError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let exporter = tls_exporter(tls.get_ref().1).ok_or(TcpSessionError::Exporter)?;
        let limit = settings.max_concurrent_bidi_streams;
        let mut conn = h2::server::Builder::new()
            .initial_window_size(window(settings.stream_receive_window))
            .initial_connection_window_size(window(settings.connection_receive_window))
            .max_frame_size(MAX_FRAME)
            .max_header_list_size(MAX_HEADER_LIST)
            // The registered limit, the parked reverse requests and the session stream.
            .max_concurrent_streams(limit.saturating_add(PARKED_REVERSE + 1))
            // Rapid reset (CVE-2023-44487): streams reset before we accepted them.
            .max_pending_accept_reset_streams(PARKED_REVERSE as usize)
            // Streams the peer makes us reset by misbehaving (h2's default, stated).
            .max_local_error_reset_streams(Some(1024))
            .max_send_buffer_size(MAX_FRAME as usize * 4)
            .handshake::<_, Bytes>(tls)
            .await?;
        let state = State::new();
        if let Some(ping) = conn.ping_pong() {
            spawn_keepalive(
                &state,
                ping,
                settings.keep_alive_interval,
                settings.idle_timeout,
            );
        }
        let streams = Arc::new(Semaphore::new(initial_streams.min(limit) as usize));
        let (acc_tx, acc_rx) = mpsc::channel(limit.max(1) as usize);
        let (rev_tx, rev_rx) = mpsc::channel(PARKED_REVERSE as usize);
        let (dg_out_tx, dg_out_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (dg_in_tx, dg_in_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let sem = streams.clone();
        let driver = tokio::spawn(async move {
            let mut session = Some((dg_out_rx, close_rx, dg_in_tx));
            loop {
                let (req, mut respond) = match conn.accept().await {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => return st.end(h2_lost(&e)),
                    None => return st.end(st.lost_or_reset()),
                };
                if req.method() != http::Method::POST {
                    respond.send_reset(Reason::REFUSED_STREAM);
                    continue;
                }
                let path = req.uri().path().to_owned();
                let body = req.into_body();
                match path.as_str() {
                    PATH_STREAM => {
                        // Over the stream budget: refused, as QUIC's stream limit would hold
                        // the peer back.
                        let Ok(permit) = sem.clone().try_acquire_owned() else {
                            respond.send_reset(Reason::REFUSED_STREAM);
                            continue;
                        };
                        let Ok(send) = respond.send_response(ok_response(), false) else {
                            continue;
                        };
                        let pair = halves(send, RecvState::Open(body), &st, Some(permit));
                        if let Err(mpsc::error::TrySendError::Full(_)) = acc_tx.try_send(pair) {
                            debug!("accept queue full; stream dropped");
                        }
                    }
                    PATH_REVERSE => {
                        if let Err(e) = rev_tx.try_send((body, respond)) {
                            debug!("too many parked reverse streams; refused");
                            let (_, mut respond) = e.into_inner();
                            respond.send_reset(Reason::REFUSED_STREAM);
                        }
                    }
                    PATH_SESSION => match session.take() {
                        Some((out, close, dg_in)) => {
                            let Ok(send) = respond.send_response(ok_response(), false) else {
                                return st.end(st.lost_or_reset());
                            };
                            spawn_session(&st, send, body, out, close, dg_in);
                        }
                        None => return st.end(violation("a second session stream")),
                    },
                    _ => respond.send_reset(Reason::REFUSED_STREAM),
                }
            }
        });
        state.track(driver.abort_handle());
        Ok(Self(Arc::new(Inner {
            side: Side::Server {
                reverse: Mutex::new(rev_rx),
                streams,
                allowed: AtomicU32::new(initial_streams.min(limit)),
            },
            remote,
            exporter: Some(exporter),
            state,
            accepted: Mutex::new(acc_rx),
            datagrams_in: Mutex::new(dg_in_rx),
            datagrams_out: dg_out_tx,
            close_tx: StdMutex::new(Some(close_tx)),
        })))
    }
}

impl Transport for Tcp {
    async fn open_bi(&self) -> Result<(FlowSendStream, FlowRecvStream), ConnectionLost> {
        let state = &self.0.state;
        if let Some(lost) = state.lost() {
            return Err(lost);
        }
        match &self.0.side {
            Side::Client(sr) => {
                let mut sr = sr.clone().ready().await.map_err(|e| h2_lost(&e))?;
                let (resp, send) = sr
                    .send_request(post(PATH_STREAM), false)
                    .map_err(|e| h2_lost(&e))?;
                Ok(halves(send, RecvState::Pending(resp), state, None))
            }
            Side::Server { reverse, .. } => {
                let mut reverse = reverse.lock().await;
                let mut lost = state.lost.subscribe();
                loop {
                    let parked = tokio::select! {
                        p = reverse.recv() => p,
                        _ = lost.wait_for(|l| l.is_some()) => None,
                    };
                    let Some((body, mut respond)) = parked else {
                        return Err(state.lost_or_reset());
                    };
                    // A parked request the peer gave up on is skipped.
                    if let Ok(send) = respond.send_response(ok_response(), false) {
                        return Ok(halves(send, RecvState::Open(body), state, None));
                    }
                }
            }
        }
    }

    async fn accept_bi(&self) -> Result<(FlowSendStream, FlowRecvStream), ConnectionLost> {
        let state = &self.0.state;
        let mut accepted = self.0.accepted.lock().await;
        let mut lost = state.lost.subscribe();
        tokio::select! {
            biased;
            p = accepted.recv() => p.ok_or_else(|| state.lost_or_reset()),
            _ = lost.wait_for(|l| l.is_some()) => Err(state.lost_or_reset()),
        }
    }

    fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramError> {
        if let Some(lost) = self.0.state.lost() {
            return Err(DatagramError::ConnectionLost(lost));
        }
        if datagram.len() > MAX_SESSION_DATAGRAM {
            return Err(DatagramError::TooLarge {
                len: datagram.len(),
                max: MAX_SESSION_DATAGRAM,
            });
        }
        // A full queue drops the datagram, as a congested UDP path would.
        let _ = self
            .0
            .datagrams_out
            .try_send(SessionFrame::Datagram(datagram));
        Ok(())
    }

    async fn read_datagram(&self) -> Result<Bytes, ConnectionLost> {
        let state = &self.0.state;
        let mut rx = self.0.datagrams_in.lock().await;
        let mut lost = state.lost.subscribe();
        tokio::select! {
            biased;
            d = rx.recv() => d.ok_or_else(|| state.lost_or_reset()),
            _ = lost.wait_for(|l| l.is_some()) => Err(state.lost_or_reset()),
        }
    }

    fn max_datagram_size(&self) -> Option<usize> {
        Some(MAX_SESSION_DATAGRAM)
    }

    fn exporter(&self) -> Option<Exporter> {
        self.0.exporter
    }

    fn remote_address(&self) -> SocketAddr {
        self.0.remote
    }

    fn rtt(&self) -> Duration {
        Duration::from_nanos(self.0.state.rtt_nanos.load(Ordering::Relaxed))
    }

    fn set_max_concurrent_bi_streams(&self, n: u32) {
        if let Side::Server {
            streams, allowed, ..
        } = &self.0.side
        {
            // Only raised, as the edge does after registration.
            let before = allowed.fetch_max(n, Ordering::Relaxed);
            if n > before {
                streams.add_permits((n - before) as usize);
            }
        }
    }

    fn initial_bi_streams(&self, settings: &TransportSettings) -> u32 {
        // HTTP/2 keeps no state for streams not yet opened, and a stream over the limit is
        // refused rather than held: the whole limit at once.
        settings.max_concurrent_bidi_streams
    }

    fn close(&self, code: CloseCode, reason: &[u8]) {
        let state = &self.0.state;
        if state.lost().is_some() {
            return;
        }
        let frame = SessionFrame::Close {
            code: code.0,
            reason: Bytes::copy_from_slice(reason),
        };
        let tx = self
            .0
            .close_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // Recorded first, so nothing new starts; the session task still sends the frame and
        // then ends the connection's tasks.
        state.lost.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(quinn::ConnectionError::LocallyClosed);
                true
            } else {
                false
            }
        });
        let sent = tx.is_some_and(|tx| tx.send(frame).is_ok());
        if !sent {
            state.abort_tasks();
        }
    }

    fn close_reason(&self) -> Option<ConnectionLost> {
        self.0.state.lost()
    }

    async fn closed(&self) -> ConnectionLost {
        let mut lost = self.0.state.lost.subscribe();
        let _ = lost.wait_for(|l| l.is_some()).await;
        self.0
            .state
            .lost()
            .unwrap_or(quinn::ConnectionError::LocallyClosed)
    }
}
