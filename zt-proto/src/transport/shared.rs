//! What every registered connection has, whatever its role: the transport, the settings,
//! flow ids, the bound on unanswered opens, the draining flag, and the table that routes
//! datagrams to UDP flows. Flow opens run the I/O-free [`FlowOpener`] over a new stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, Mutex, Semaphore};

use crate::flow::{Datagram, FlowHeader, FlowStatus, Protocol, ResetCode};
use crate::open::FlowOpener;
use crate::transport::carrier::Transport;
use crate::transport::datagrams::{spawn_datagram_dispatcher, UdpFlow, UNROUTED_DATAGRAMS};
use crate::transport::error::{DatagramError, OpenError};
use crate::transport::settings::TransportSettings;
use crate::transport::stream::{FlowError, FlowRecvStream, FlowSendStream, FlowStream};

/// Datagrams queued per UDP flow before new ones are dropped.
const UDP_FLOW_QUEUE: usize = 256;

pub(crate) struct Shared<T: Transport> {
    pub(crate) transport: T,
    pub(crate) settings: TransportSettings,
    pending: Semaphore,
    next_flow_id: AtomicU64,
    pub(crate) draining: AtomicBool,
    /// Where datagrams of open UDP flows go, by flow id.
    udp_flows: std::sync::Mutex<HashMap<u64, mpsc::Sender<Bytes>>>,
    /// Datagrams of no registered UDP flow, for [`Shared::recv_datagram`].
    unrouted: Mutex<mpsc::Receiver<Datagram>>,
}

impl<T: Transport> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("remote", &self.transport.remote_address())
            .finish()
    }
}

impl<T: Transport> Shared<T> {
    /// Shared state of a registered connection; starts its datagram dispatcher.
    pub(crate) fn new(transport: T, settings: TransportSettings) -> Arc<Self> {
        let (unrouted_tx, unrouted_rx) = mpsc::channel(UNROUTED_DATAGRAMS);
        let shared = Arc::new(Self {
            transport,
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

    pub(crate) fn udp_flows(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Bytes>>> {
        // The map holds no invariant a panicking holder could break; recover from poison.
        self.udp_flows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn register_udp(&self, flow_id: u64) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(UDP_FLOW_QUEUE);
        self.udp_flows().insert(flow_id, tx);
        rx
    }

    fn allocate_flow_id(&self) -> u64 {
        self.next_flow_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) async fn open_udp_flow(
        self: &Arc<Self>,
        dest: SocketAddr,
        metadata: Vec<(String, String)>,
    ) -> Result<UdpFlow<T>, OpenError> {
        let flow_id = self.allocate_flow_id();
        // Registered before the header goes out, so no early datagram is lost.
        let rx = self.register_udp(flow_id);
        match self
            .open_flow_with_id(flow_id, dest, Protocol::Udp, metadata)
            .await
        {
            Ok(stream) => Ok(UdpFlow::new(flow_id, stream, rx, self.clone())),
            Err(e) => {
                self.udp_flows().remove(&flow_id);
                Err(e)
            }
        }
    }

    pub(crate) async fn open_flow(
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
        let mut opener = FlowOpener::new(&header, limits)?;
        let timeout = self.settings.open_timeout;
        let mut streams: Option<(FlowSendStream, FlowRecvStream)> = None;
        let attempt = async {
            let (mut send, recv) = self.transport.open_bi().await.map_err(FlowError::from)?;
            if let Some(wire) = opener.poll_transmit() {
                send.write_chunk(wire).await?;
            }
            let (_, recv) = streams.insert((send, recv));
            read_status(&mut opener, recv).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Err(_) => {
                if let Some((mut send, mut recv)) = streams.take() {
                    send.reset(ResetCode::CANCELLED);
                    recv.stop(ResetCode::CANCELLED);
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

    pub(crate) fn send_datagram(&self, flow_id: u64, payload: Bytes) -> Result<(), DatagramError> {
        let limit = self.settings.limits.max_datagram_payload;
        let path = self
            .transport
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
        let mut out = BytesMut::new();
        Datagram { flow_id, payload }.encode(&mut out, &self.settings.limits)?;
        self.transport.send_datagram(out.freeze())
    }

    pub(crate) async fn recv_datagram(&self) -> Result<Datagram, DatagramError> {
        match self.unrouted.lock().await.recv().await {
            Some(d) => Ok(d),
            None => Err(DatagramError::ConnectionLost(
                self.transport
                    .close_reason()
                    .unwrap_or(quinn::ConnectionError::LocallyClosed),
            )),
        }
    }
}

/// Reads the status with the opener, never past it: what follows is the flow's.
async fn read_status(
    opener: &mut FlowOpener,
    recv: &mut FlowRecvStream,
) -> Result<FlowStatus, OpenError> {
    loop {
        let Some(chunk) = recv.read_up_to(opener.wants()).await? else {
            return Err(OpenError::Stream(FlowError::Closed));
        };
        opener.handle_input(&chunk)?;
        if let Some(status) = opener.poll_status() {
            return Ok(status);
        }
    }
}
