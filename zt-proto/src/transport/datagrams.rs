//! UDP flows: their packets ride the transport's datagrams tagged with the flow id, and one
//! dispatcher per connection routes each arriving datagram to its flow's bounded queue.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::debug;

use crate::flow::Datagram;
use crate::transport::carrier::Transport;
use crate::transport::error::DatagramError;
use crate::transport::shared::Shared;
use crate::transport::stream::FlowStream;

/// Datagrams of no UDP flow queued for `recv_datagram` before new ones are dropped.
pub(crate) const UNROUTED_DATAGRAMS: usize = 1024;

/// Reads every datagram of the connection and routes it: to its UDP flow if one is
/// registered under its flow id, else to the connection's `recv_datagram`. Queues are
/// bounded; when one is full the datagram is dropped, as a congested UDP path would.
pub(crate) fn spawn_datagram_dispatcher<T: Transport>(
    shared: Arc<Shared<T>>,
    unrouted: mpsc::Sender<Datagram>,
) {
    tokio::spawn(async move {
        while let Ok(raw) = shared.transport.read_datagram().await {
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
pub struct UdpFlow<T: Transport = crate::transport::carrier::Carrier> {
    flow_id: u64,
    stream: FlowStream,
    rx: mpsc::Receiver<Bytes>,
    shared: Arc<Shared<T>>,
}

impl<T: Transport> UdpFlow<T> {
    pub(crate) fn new(
        flow_id: u64,
        stream: FlowStream,
        rx: mpsc::Receiver<Bytes>,
        shared: Arc<Shared<T>>,
    ) -> Self {
        Self {
            flow_id,
            stream,
            rx,
            shared,
        }
    }

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

impl<T: Transport> Drop for UdpFlow<T> {
    fn drop(&mut self) {
        self.shared.udp_flows().remove(&self.flow_id);
    }
}
