//! Registered connections and the tasks that drive them.
//!
//! Each connection has one driver task that owns the control stream and its I/O-free state
//! machine: it feeds received bytes in, writes what the machine hands out, runs commands from
//! the connection's handle, and forwards events. Serving sides also run an acceptor task
//! that reads each incoming flow's header (bounded in size and time) on its own task, so a
//! slow or hostile opener cannot delay other flows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::VarInt;
use tokio::sync::{mpsc, oneshot, Mutex, Semaphore};
use tracing::{debug, warn, Instrument};

use crate::control::{
    ClientControl, ConnectorControl, ControlError, EdgeControl, EdgeEvent, PeerEvent,
};
use crate::flow::{
    CloseCode, Datagram, FlowHeader, FlowStatus, FlowStatusCode, Protocol, ResetCode,
    FLOW_HEADER_PREFIX_LEN, FLOW_STATUS_PREFIX_LEN,
};
use crate::frame::{ClientClaim, ConnectorClaim, GoAway, PostureReport, Registered, RoutePush};
use crate::transport::error::{ControlSendError, DatagramError, OpenError, RespondError};
use crate::transport::settings::TransportSettings;
use crate::transport::stream::{FlowError, FlowStream};

/// How many served flow requests wait for the application before header readers pause.
const ACCEPT_QUEUE: usize = 256;
/// Datagrams of no UDP flow queued for `recv_datagram` before new ones are dropped.
const UNROUTED_DATAGRAMS: usize = 1024;
/// Datagrams queued per UDP flow before new ones are dropped.
const UDP_FLOW_QUEUE: usize = 256;
/// Largest control-stream read at once.
const CONTROL_READ: usize = 64 * 1024;

pub(crate) fn varint(code: u32) -> VarInt {
    VarInt::from_u32(code)
}

// ---------------------------------------------------------------------------------------
// Machines behind one interface, for the driver.
// ---------------------------------------------------------------------------------------

pub(crate) trait Machine: Send + 'static {
    type Event: Send + 'static;
    fn handle_input(&mut self, data: &[u8]) -> Result<(), ControlError>;
    fn poll_transmit(&mut self) -> Option<Bytes>;
    fn poll_event(&mut self) -> Option<Self::Event>;
}

macro_rules! machine {
    ($t:ty, $e:ty) => {
        impl Machine for $t {
            type Event = $e;
            fn handle_input(&mut self, data: &[u8]) -> Result<(), ControlError> {
                <$t>::handle_input(self, data)
            }
            fn poll_transmit(&mut self) -> Option<Bytes> {
                <$t>::poll_transmit(self)
            }
            fn poll_event(&mut self) -> Option<$e> {
                <$t>::poll_event(self)
            }
        }
    };
}
machine!(EdgeControl, EdgeEvent);
machine!(ConnectorControl, PeerEvent);
machine!(ClientControl, PeerEvent);

type Command<M> = (
    Box<dyn FnOnce(&mut M) -> Result<(), ControlError> + Send>,
    oneshot::Sender<Result<(), ControlSendError>>,
);

/// A handle's way to act on the machine its driver owns.
pub(crate) struct ControlHandle<M: Machine> {
    commands: mpsc::UnboundedSender<Command<M>>,
    events: Mutex<mpsc::UnboundedReceiver<M::Event>>,
}

impl<M: Machine> ControlHandle<M> {
    pub(crate) async fn call(
        &self,
        f: impl FnOnce(&mut M) -> Result<(), ControlError> + Send + 'static,
    ) -> Result<(), ControlSendError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((Box::new(f), tx))
            .map_err(|_| ControlSendError::Closed)?;
        rx.await.map_err(|_| ControlSendError::Closed)?
    }

    pub(crate) async fn next_event(&self) -> Option<M::Event> {
        self.events.lock().await.recv().await
    }
}

/// Starts the driver task for a registered connection's control stream.
pub(crate) fn spawn_driver<M: Machine>(
    mut machine: M,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    conn: quinn::Connection,
    on_event: impl Fn(&M::Event) + Send + 'static,
) -> ControlHandle<M> {
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Command<M>>();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let span = tracing::debug_span!("zt_control", remote = %conn.remote_address());
    tokio::spawn(async move {
        loop {
            while let Some(bytes) = machine.poll_transmit() {
                if send.write_chunk(bytes).await.is_err() {
                    return;
                }
            }
            while let Some(ev) = machine.poll_event() {
                on_event(&ev);
                // The handle may be gone; the connection still runs until closed.
                let _ = ev_tx.send(ev);
            }
            tokio::select! {
                chunk = recv.read_chunk(CONTROL_READ, true) => match chunk {
                    Ok(Some(c)) => {
                        if let Err(e) = machine.handle_input(&c.bytes) {
                            warn!(error = %e, remote = %conn.remote_address(), "control stream protocol violation");
                            conn.close(varint(CloseCode::PROTOCOL_VIOLATION.0), b"control stream protocol violation");
                            return;
                        }
                    }
                    Ok(None) | Err(_) => {
                        debug!(remote = %conn.remote_address(), "control stream ended");
                        return;
                    }
                },
                cmd = cmd_rx.recv() => match cmd {
                    Some((f, reply)) => {
                        // Answer only once the frame is on the stream, so a caller that
                        // closes right after (say, after unregister) does not race it.
                        let result = f(&mut machine).map_err(ControlSendError::from);
                        while let Some(bytes) = machine.poll_transmit() {
                            if send.write_chunk(bytes).await.is_err() {
                                let _ = reply.send(Err(ControlSendError::Closed));
                                return;
                            }
                        }
                        let _ = reply.send(result);
                    }
                    // Every handle is gone: nobody can use the connection any more.
                    None => {
                        conn.close(varint(CloseCode::NO_ERROR.0), b"");
                        return;
                    }
                },
            }
        }
    }.instrument(span));
    ControlHandle {
        commands: cmd_tx,
        events: Mutex::new(ev_rx),
    }
}

// ---------------------------------------------------------------------------------------
// What every connection has: the QUIC connection, settings, flow ids, datagrams.
// ---------------------------------------------------------------------------------------

pub(crate) struct Shared {
    pub(crate) conn: quinn::Connection,
    pub(crate) settings: TransportSettings,
    pending: Semaphore,
    next_flow_id: AtomicU64,
    pub(crate) draining: AtomicBool,
    /// Where datagrams of open UDP flows go, by flow id.
    udp_flows: std::sync::Mutex<HashMap<u64, mpsc::Sender<Bytes>>>,
    /// Datagrams of no registered UDP flow, for [`Shared::recv_datagram`].
    unrouted: Mutex<mpsc::Receiver<Datagram>>,
}

impl Shared {
    /// Shared state of a registered connection; starts its datagram dispatcher.
    pub(crate) fn new(conn: quinn::Connection, settings: TransportSettings) -> Arc<Self> {
        let (unrouted_tx, unrouted_rx) = mpsc::channel(UNROUTED_DATAGRAMS);
        let shared = Arc::new(Self {
            conn,
            pending: Semaphore::new(settings.limits.max_pending_opens),
            settings,
            next_flow_id: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            udp_flows: std::sync::Mutex::new(HashMap::new()),
            unrouted: Mutex::new(unrouted_rx),
        });
        spawn_datagram_dispatcher(shared.clone(), unrouted_tx);
        shared
    }

    fn udp_flows(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Bytes>>> {
        // The map holds no invariant a panicking holder could break; recover from poison.
        self.udp_flows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn register_udp(self: &Arc<Self>, flow_id: u64) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(UDP_FLOW_QUEUE);
        self.udp_flows().insert(flow_id, tx);
        rx
    }

    fn allocate_flow_id(&self) -> u64 {
        self.next_flow_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn open_udp_flow(
        self: &Arc<Self>,
        dest: SocketAddr,
        metadata: Vec<(String, String)>,
    ) -> Result<UdpFlow, OpenError> {
        let flow_id = self.allocate_flow_id();
        // Registered before the header goes out, so no early datagram is lost.
        let rx = self.register_udp(flow_id);
        match self
            .open_flow_with_id(flow_id, dest, Protocol::Udp, metadata)
            .await
        {
            Ok(stream) => Ok(UdpFlow {
                flow_id,
                stream,
                rx,
                shared: self.clone(),
            }),
            Err(e) => {
                self.udp_flows().remove(&flow_id);
                Err(e)
            }
        }
    }

    async fn open_flow(
        &self,
        dest: SocketAddr,
        protocol: Protocol,
        metadata: Vec<(String, String)>,
    ) -> Result<FlowStream, OpenError> {
        self.open_flow_with_id(self.allocate_flow_id(), dest, protocol, metadata)
            .await
    }

    async fn open_flow_with_id(
        &self,
        flow_id: u64,
        dest: SocketAddr,
        protocol: Protocol,
        metadata: Vec<(String, String)>,
    ) -> Result<FlowStream, OpenError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(OpenError::Draining);
        }
        let limits = &self.settings.limits;
        let _permit = self
            .pending
            .try_acquire()
            .map_err(|_| OpenError::TooManyPending(limits.max_pending_opens))?;
        let header = FlowHeader {
            flow_id,
            protocol,
            dest,
            metadata,
        };
        let mut wire = BytesMut::new();
        header.encode_with(&mut wire, limits)?;
        let timeout = self.settings.open_timeout;
        let mut streams: Option<(quinn::SendStream, quinn::RecvStream)> = None;
        let attempt = async {
            let (mut send, recv) = self.conn.open_bi().await.map_err(FlowError::from)?;
            send.write_chunk(wire.freeze())
                .await
                .map_err(FlowError::from)?;
            let (_, recv) = streams.insert((send, recv));
            read_status(recv).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Err(_) => {
                if let Some((mut send, mut recv)) = streams.take() {
                    let _ = send.reset(varint(ResetCode::CANCELLED.0));
                    let _ = recv.stop(varint(ResetCode::CANCELLED.0));
                }
                Err(OpenError::Unanswered(timeout))
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok(status)) => {
                let Some((mut send, recv)) = streams.take() else {
                    return Err(OpenError::Stream(FlowError::Closed));
                };
                if status.is_ok() {
                    Ok(FlowStream::new(flow_id, send, recv))
                } else {
                    let _ = send.finish();
                    Err(OpenError::Refused(status))
                }
            }
        }
    }

    fn send_datagram(&self, flow_id: u64, payload: Bytes) -> Result<(), DatagramError> {
        let limit = self.settings.limits.max_datagram_payload;
        let path = self
            .conn
            .max_datagram_size()
            .ok_or(DatagramError::Unsupported)?
            .saturating_sub(crate::wire::varint_len(flow_id));
        let max = limit.min(path);
        if payload.len() > max {
            return Err(DatagramError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let len = payload.len();
        let mut out = BytesMut::new();
        Datagram { flow_id, payload }.encode(&mut out, &self.settings.limits)?;
        match self.conn.send_datagram(out.freeze()) {
            Ok(()) => Ok(()),
            Err(quinn::SendDatagramError::ConnectionLost(e)) => {
                Err(DatagramError::ConnectionLost(e))
            }
            Err(quinn::SendDatagramError::TooLarge) => Err(DatagramError::TooLarge {
                len,
                max: self.conn.max_datagram_size().unwrap_or(0),
            }),
            Err(_) => Err(DatagramError::Unsupported),
        }
    }

    async fn recv_datagram(&self) -> Result<Datagram, DatagramError> {
        match self.unrouted.lock().await.recv().await {
            Some(d) => Ok(d),
            None => Err(DatagramError::ConnectionLost(
                self.conn
                    .close_reason()
                    .unwrap_or(quinn::ConnectionError::LocallyClosed),
            )),
        }
    }
}

/// Reads every datagram of the connection and routes it: to its UDP flow if one is
/// registered under its flow id, else to the connection's `recv_datagram`. Queues are
/// bounded; when one is full the datagram is dropped, as a congested UDP path would.
fn spawn_datagram_dispatcher(shared: Arc<Shared>, unrouted: mpsc::Sender<Datagram>) {
    tokio::spawn(async move {
        while let Ok(raw) = shared.conn.read_datagram().await {
            let d = match Datagram::decode(raw, &shared.settings.limits) {
                Ok(d) => d,
                // One bad datagram is the peer's loss, not a reason to end the connection.
                Err(e) => {
                    debug!(error = %e, "dropping invalid datagram");
                    continue;
                }
            };
            let flow = shared.udp_flows().get(&d.flow_id).cloned();
            match flow {
                Some(tx) => {
                    if tx.try_send(d.payload).is_err() {
                        debug!(
                            flow = d.flow_id,
                            "UDP flow queue full or closed; datagram dropped"
                        );
                    }
                }
                None => {
                    if unrouted.try_send(d).is_err() {
                        debug!("datagram queue full; datagram dropped");
                    }
                }
            }
        }
    });
}

/// A UDP flow: its packets ride datagrams tagged with its flow id, and its stream (kept open
/// while the flow lives) ends the flow when either side finishes or resets it.
#[derive(Debug)]
pub struct UdpFlow {
    flow_id: u64,
    stream: FlowStream,
    rx: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("remote", &self.conn.remote_address())
            .finish()
    }
}

impl UdpFlow {
    /// The flow's id.
    pub fn flow_id(&self) -> u64 {
        self.flow_id
    }

    /// Sends one UDP payload.
    pub fn send(&self, payload: Bytes) -> Result<(), DatagramError> {
        self.shared.send_datagram(self.flow_id, payload)
    }

    /// The next UDP payload; `None` once the peer ended the flow (FIN or reset on its
    /// stream) or the connection is gone. Payloads that arrive while nobody reads queue up
    /// to 256, then are dropped.
    pub async fn recv(&mut self) -> Option<Bytes> {
        tokio::select! {
            payload = self.rx.recv() => payload,
            // Nothing but the end travels on a UDP flow's stream: any data or the end
            // (both are cancel-safe reads) finishes the flow.
            _ = self.stream.recv_half().read_chunk() => None,
        }
    }

    /// Ends the flow: finishes its stream so the peer's `recv` returns `None`.
    pub fn close(mut self) {
        let _ = self.stream.send_half().finish();
    }
}

impl Drop for UdpFlow {
    fn drop(&mut self) {
        self.shared.udp_flows().remove(&self.flow_id);
    }
}

async fn read_status(recv: &mut quinn::RecvStream) -> Result<FlowStatus, OpenError> {
    let mut buf = vec![0u8; FLOW_STATUS_PREFIX_LEN];
    read_exact(recv, &mut buf).await?;
    let detail_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if detail_len > crate::limits::MAX_TEXT_LEN {
        // Decoding reports the over-long detail as the typed error.
        return FlowStatus::decode(&mut &buf[..])?.ok_or(OpenError::Stream(FlowError::Closed));
    }
    buf.resize(FLOW_STATUS_PREFIX_LEN + detail_len, 0);
    read_exact(recv, &mut buf[FLOW_STATUS_PREFIX_LEN..]).await?;
    FlowStatus::decode(&mut &buf[..])?.ok_or(OpenError::Stream(FlowError::Closed))
}

async fn read_exact(recv: &mut quinn::RecvStream, buf: &mut [u8]) -> Result<(), FlowError> {
    recv.read_exact(buf).await.map_err(|e| match e {
        quinn::ReadExactError::ReadError(r) => FlowError::from(r),
        quinn::ReadExactError::FinishedEarly(_) => FlowError::Closed,
    })
}

// ---------------------------------------------------------------------------------------
// Serving flows.
// ---------------------------------------------------------------------------------------

/// The answer to a served flow request. Dropping it unanswered resets the stream with
/// [`ResetCode::REFUSED`].
#[derive(Debug)]
pub struct FlowResponder {
    flow_id: u64,
    streams: Option<(quinn::SendStream, quinn::RecvStream)>,
    shared: Arc<Shared>,
}

impl FlowResponder {
    /// The flow's id.
    pub fn flow_id(&self) -> u64 {
        self.flow_id
    }

    /// Answers `ok` and hands back the flow's byte stream.
    pub async fn accept(mut self) -> Result<FlowStream, RespondError> {
        let Some((mut send, recv)) = self.streams.take() else {
            return Err(RespondError::Stream(FlowError::Closed));
        };
        let mut wire = BytesMut::with_capacity(FLOW_STATUS_PREFIX_LEN);
        FlowStatus::ok().encode(&mut wire)?;
        send.write_chunk(wire.freeze())
            .await
            .map_err(FlowError::from)?;
        Ok(FlowStream::new(self.flow_id, send, recv))
    }

    /// Answers `ok` to a UDP flow's request and hands back the flow, whose datagrams are
    /// routed to it from now on.
    pub async fn accept_udp(self) -> Result<UdpFlow, RespondError> {
        let shared = self.shared.clone();
        let flow_id = self.flow_id;
        // Registered before the status goes out, so no early datagram is lost.
        let rx = shared.register_udp(flow_id);
        match self.accept().await {
            Ok(stream) => Ok(UdpFlow {
                flow_id,
                stream,
                rx,
                shared,
            }),
            Err(e) => {
                shared.udp_flows().remove(&flow_id);
                Err(e)
            }
        }
    }

    /// Answers with an error status and ends the flow.
    pub async fn reject(mut self, status: FlowStatus) -> Result<(), RespondError> {
        let Some((mut send, _recv)) = self.streams.take() else {
            return Err(RespondError::Stream(FlowError::Closed));
        };
        let mut wire = BytesMut::new();
        status.encode(&mut wire)?;
        send.write_chunk(wire.freeze())
            .await
            .map_err(FlowError::from)?;
        let _ = send.finish();
        Ok(())
    }
}

impl Drop for FlowResponder {
    fn drop(&mut self) {
        if let Some((mut send, mut recv)) = self.streams.take() {
            let _ = send.reset(varint(ResetCode::REFUSED.0));
            let _ = recv.stop(varint(ResetCode::REFUSED.0));
        }
    }
}

/// A served flow: its header and the responder that answers it.
pub type FlowRequest = (FlowHeader, FlowResponder);

/// Starts the task that accepts flow streams and reads their headers.
pub(crate) fn spawn_acceptor(shared: Arc<Shared>) -> Mutex<mpsc::Receiver<FlowRequest>> {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    let span = tracing::debug_span!("zt_flows", remote = %shared.conn.remote_address());
    tokio::spawn(
        async move {
            while let Ok((send, recv)) = shared.conn.accept_bi().await {
                let tx = tx.clone();
                let shared = shared.clone();
                let flow_span = tracing::debug_span!("zt_flow", stream = %send.id());
                tokio::spawn(
                    async move {
                        if let Some(req) = read_request(&shared, send, recv).await {
                            // The application stopped accepting: the responder's drop
                            // refuses it.
                            let _ = tx.send(req).await;
                        }
                    }
                    .instrument(flow_span),
                );
            }
        }
        .instrument(span),
    );
    Mutex::new(rx)
}

/// Starts the task that refuses streams the peer may not open on this connection.
pub(crate) fn spawn_stream_refuser(conn: quinn::Connection) {
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            warn!(remote = %conn.remote_address(), "peer opened a stream it may not open; resetting it");
            let _ = send.reset(varint(ResetCode::PROTOCOL_ERROR.0));
            let _ = recv.stop(varint(ResetCode::PROTOCOL_ERROR.0));
        }
    });
}

async fn read_request(
    shared: &Arc<Shared>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Option<FlowRequest> {
    let settings = &shared.settings;
    let limits = settings.limits;
    let read = async {
        let mut prefix = [0u8; FLOW_HEADER_PREFIX_LEN];
        read_exact(&mut recv, &mut prefix).await.map_err(|_| None)?;
        let len = match FlowHeader::peek_len(&&prefix[..], &limits) {
            Ok(Some(len)) => len,
            Ok(None) => return Err(None),
            Err(e) => return Err(Some(e)),
        };
        let mut body = vec![0u8; len];
        read_exact(&mut recv, &mut body).await.map_err(|_| None)?;
        FlowHeader::decode_body(Bytes::from(body), &limits).map_err(Some)
    };
    match tokio::time::timeout(settings.header_timeout, read).await {
        Ok(Ok(header)) => {
            let responder = FlowResponder {
                flow_id: header.flow_id,
                streams: Some((send, recv)),
                shared: shared.clone(),
            };
            Some((header, responder))
        }
        Ok(Err(Some(e))) => {
            warn!(error = %e, "refusing flow with a bad header");
            let mut wire = BytesMut::new();
            let mut detail = e.to_string();
            detail.truncate(crate::limits::MAX_TEXT_LEN);
            if FlowStatus::new(FlowStatusCode::BadHeader, detail)
                .encode(&mut wire)
                .is_ok()
            {
                let _ = send.write_chunk(wire.freeze()).await;
            }
            let _ = send.finish();
            let _ = recv.stop(varint(ResetCode::BAD_HEADER.0));
            None
        }
        Ok(Err(None)) => None,
        Err(_) => {
            debug!("flow header not received in time; resetting the stream");
            let _ = send.reset(varint(ResetCode::BAD_HEADER.0));
            let _ = recv.stop(varint(ResetCode::BAD_HEADER.0));
            None
        }
    }
}

// ---------------------------------------------------------------------------------------
// The four handles.
// ---------------------------------------------------------------------------------------

macro_rules! common_methods {
    () => {
        /// The peer's address.
        pub fn remote_address(&self) -> SocketAddr {
            self.shared.conn.remote_address()
        }

        /// The current round-trip time estimate.
        pub fn rtt(&self) -> Duration {
            self.shared.conn.rtt()
        }

        /// Sends one UDP payload of flow `flow_id` as a datagram.
        pub fn send_datagram(&self, flow_id: u64, payload: Bytes) -> Result<(), DatagramError> {
            self.shared.send_datagram(flow_id, payload)
        }

        /// The next valid datagram that belongs to no [`UdpFlow`] of this connection (invalid
        /// ones are dropped and logged).
        pub async fn recv_datagram(&self) -> Result<Datagram, DatagramError> {
            self.shared.recv_datagram().await
        }

        /// Largest datagram payload sendable now (the path's and the configured limit).
        pub fn max_datagram_payload(&self) -> Option<usize> {
            let path = self.shared.conn.max_datagram_size()?;
            Some(
                path.saturating_sub(8)
                    .min(self.shared.settings.limits.max_datagram_payload),
            )
        }

        /// Whether the connection is draining: no new flows may be opened on it.
        pub fn is_draining(&self) -> bool {
            self.shared.draining.load(Ordering::Acquire)
        }

        /// Closes the connection at once with a code.
        pub fn close(&self, code: CloseCode, reason: &str) {
            self.shared.conn.close(varint(code.0), reason.as_bytes());
        }

        /// Waits until the connection is closed, by either side or by the idle timeout.
        pub async fn closed(&self) -> quinn::ConnectionError {
            self.shared.conn.closed().await
        }

        /// The connection's QUIC statistics.
        pub fn stats(&self) -> quinn::ConnectionStats {
            self.shared.conn.stats()
        }
    };
}

/// The edge's handle on a registered connector connection.
pub struct ConnectorLink {
    pub(crate) shared: Arc<Shared>,
    pub(crate) control: ControlHandle<EdgeControl>,
    pub(crate) claim: ConnectorClaim,
    pub(crate) connection_id: uuid::Uuid,
    pub(crate) software_version: String,
    pub(crate) features: Vec<String>,
}

impl std::fmt::Debug for ConnectorLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorLink")
            .field("claim", &self.claim)
            .field("connection_id", &self.connection_id)
            .field("remote", &self.shared.conn.remote_address())
            .finish()
    }
}

impl ConnectorLink {
    common_methods!();

    /// Who the connector is.
    pub fn claim(&self) -> &ConnectorClaim {
        &self.claim
    }

    /// The id the edge gave this connection.
    pub fn connection_id(&self) -> uuid::Uuid {
        self.connection_id
    }

    /// The connector's software version and features.
    pub fn software(&self) -> (&str, &[String]) {
        (&self.software_version, &self.features)
    }

    /// Opens a flow to `dest` through the connector. [`OpenError::Unanswered`] means the
    /// connector did not answer within the open timeout: retry on another connection.
    pub async fn open_flow(
        &self,
        dest: SocketAddr,
        protocol: Protocol,
        metadata: Vec<(String, String)>,
    ) -> Result<FlowStream, OpenError> {
        self.shared.open_flow(dest, protocol, metadata).await
    }

    /// Opens a UDP flow to `dest` through the connector; its datagrams are routed to the
    /// returned [`UdpFlow`].
    pub async fn open_udp_flow(
        &self,
        dest: SocketAddr,
        metadata: Vec<(String, String)>,
    ) -> Result<UdpFlow, OpenError> {
        self.shared.open_udp_flow(dest, metadata).await
    }

    /// Tells the connector the edge is draining; no new flows are opened on this link.
    pub async fn go_away(&self, drain: Duration, reason: &str) -> Result<(), ControlSendError> {
        self.shared.draining.store(true, Ordering::Release);
        let reason = reason.to_owned();
        self.control.call(move |m| m.go_away(drain, &reason)).await
    }

    /// Sends a ping; the answer arrives as [`EdgeEvent::Pong`].
    pub async fn ping(&self, nonce: u64) -> Result<(), ControlSendError> {
        self.control.call(move |m| m.ping(nonce)).await
    }

    /// The next control event ([`EdgeEvent::Unregister`], [`EdgeEvent::Pong`]); `None` once
    /// the control stream has ended.
    pub async fn next_event(&self) -> Option<EdgeEvent> {
        self.control.next_event().await
    }
}

/// The edge's handle on a registered client connection.
pub struct ClientLink {
    pub(crate) shared: Arc<Shared>,
    pub(crate) control: ControlHandle<EdgeControl>,
    pub(crate) flows: Mutex<mpsc::Receiver<FlowRequest>>,
    pub(crate) claim: ClientClaim,
    pub(crate) connection_id: uuid::Uuid,
    pub(crate) software_version: String,
    pub(crate) features: Vec<String>,
}

impl std::fmt::Debug for ClientLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLink")
            .field("claim", &self.claim)
            .field("connection_id", &self.connection_id)
            .field("remote", &self.shared.conn.remote_address())
            .finish()
    }
}

impl ClientLink {
    common_methods!();

    /// Who the client is.
    pub fn claim(&self) -> &ClientClaim {
        &self.claim
    }

    /// The id the edge gave this connection.
    pub fn connection_id(&self) -> uuid::Uuid {
        self.connection_id
    }

    /// The client's software version and features.
    pub fn software(&self) -> (&str, &[String]) {
        (&self.software_version, &self.features)
    }

    /// The next flow the client opens; `None` when the connection is gone.
    pub async fn accept_flow(&self) -> Option<FlowRequest> {
        self.flows.lock().await.recv().await
    }

    /// Sends the client the routes it should capture.
    pub async fn push_routes(&self, push: RoutePush) -> Result<(), ControlSendError> {
        self.control.call(move |m| m.push_routes(push)).await
    }

    /// Tells the client the edge is draining.
    pub async fn go_away(&self, drain: Duration, reason: &str) -> Result<(), ControlSendError> {
        self.shared.draining.store(true, Ordering::Release);
        let reason = reason.to_owned();
        self.control.call(move |m| m.go_away(drain, &reason)).await
    }

    /// Sends a ping; the answer arrives as [`EdgeEvent::Pong`].
    pub async fn ping(&self, nonce: u64) -> Result<(), ControlSendError> {
        self.control.call(move |m| m.ping(nonce)).await
    }

    /// The next control event ([`EdgeEvent::Posture`], [`EdgeEvent::Pong`]); `None` once
    /// the control stream has ended.
    pub async fn next_event(&self) -> Option<EdgeEvent> {
        self.control.next_event().await
    }
}

/// A connector's registered connection to the edge.
pub struct ConnectorConnection {
    pub(crate) shared: Arc<Shared>,
    pub(crate) control: ControlHandle<ConnectorControl>,
    pub(crate) flows: Mutex<mpsc::Receiver<FlowRequest>>,
    pub(crate) registered: Registered,
}

impl std::fmt::Debug for ConnectorConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorConnection")
            .field("registered", &self.registered)
            .field("remote", &self.shared.conn.remote_address())
            .finish()
    }
}

impl ConnectorConnection {
    common_methods!();

    /// The edge's answer: connection id and edge name.
    pub fn registered(&self) -> &Registered {
        &self.registered
    }

    /// The next flow the edge opens; `None` when the connection is gone.
    pub async fn accept_flow(&self) -> Option<FlowRequest> {
        self.flows.lock().await.recv().await
    }

    /// Tells the edge this connector is draining: it opens no new flows here, and in-flight
    /// flows have `grace`. Requests that still arrive should be answered
    /// [`FlowStatusCode::Draining`].
    pub async fn unregister(&self, grace: Duration) -> Result<(), ControlSendError> {
        self.shared.draining.store(true, Ordering::Release);
        self.control.call(move |m| m.unregister(grace)).await
    }

    /// Sends a ping; the answer arrives as [`PeerEvent::Pong`].
    pub async fn ping(&self, nonce: u64) -> Result<(), ControlSendError> {
        self.control.call(move |m| m.ping(nonce)).await
    }

    /// The next control event ([`PeerEvent::GoAway`], [`PeerEvent::Pong`]); `None` once the
    /// control stream has ended.
    pub async fn next_event(&self) -> Option<PeerEvent> {
        self.control.next_event().await
    }
}

/// A client's registered connection to the edge.
pub struct ClientConnection {
    pub(crate) shared: Arc<Shared>,
    pub(crate) control: ControlHandle<ClientControl>,
    pub(crate) registered: Registered,
}

impl std::fmt::Debug for ClientConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnection")
            .field("registered", &self.registered)
            .field("remote", &self.shared.conn.remote_address())
            .finish()
    }
}

impl ClientConnection {
    common_methods!();

    /// The edge's answer: connection id and edge name.
    pub fn registered(&self) -> &Registered {
        &self.registered
    }

    /// Opens a flow to `dest` through the edge.
    pub async fn open_flow(
        &self,
        dest: SocketAddr,
        protocol: Protocol,
        metadata: Vec<(String, String)>,
    ) -> Result<FlowStream, OpenError> {
        self.shared.open_flow(dest, protocol, metadata).await
    }

    /// Opens a UDP flow to `dest` through the edge; its datagrams are routed to the
    /// returned [`UdpFlow`].
    pub async fn open_udp_flow(
        &self,
        dest: SocketAddr,
        metadata: Vec<(String, String)>,
    ) -> Result<UdpFlow, OpenError> {
        self.shared.open_udp_flow(dest, metadata).await
    }

    /// Sends the device's posture.
    pub async fn report_posture(&self, report: PostureReport) -> Result<(), ControlSendError> {
        self.control.call(move |m| m.report_posture(report)).await
    }

    /// Sends a ping; the answer arrives as [`PeerEvent::Pong`].
    pub async fn ping(&self, nonce: u64) -> Result<(), ControlSendError> {
        self.control.call(move |m| m.ping(nonce)).await
    }

    /// The next control event ([`PeerEvent::RoutesPushed`], [`PeerEvent::GoAway`],
    /// [`PeerEvent::Pong`]); `None` once the control stream has ended.
    pub async fn next_event(&self) -> Option<PeerEvent> {
        self.control.next_event().await
    }
}

/// Marks a peer-side connection draining when the edge sends go-away.
pub(crate) fn on_peer_event(shared: &Arc<Shared>) -> impl Fn(&PeerEvent) + Send + 'static {
    let shared = shared.clone();
    move |ev| {
        if let PeerEvent::GoAway(GoAway { .. }) = ev {
            shared.draining.store(true, Ordering::Release);
        }
    }
}

/// Marks an edge-side connection draining when the connector unregisters.
pub(crate) fn on_edge_event(shared: &Arc<Shared>) -> impl Fn(&EdgeEvent) + Send + 'static {
    let shared = shared.clone();
    move |ev| {
        if let EdgeEvent::Unregister(_) = ev {
            shared.draining.store(true, Ordering::Release);
        }
    }
}
