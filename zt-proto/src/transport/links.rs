//! The handles on a registered connection, one per role, over one core.
//!
//! [`Connection`] is what every registered zt connection offers whatever its role: the
//! peer's address, datagrams, draining, close. Each role's handle adds its own verbs and
//! dereferences to the core, so they are thin: the edge's [`EdgeLink`] — [`ConnectorLink`]
//! (opens flows to a connector) and [`ClientLink`] (serves a client's flows, pushes routes)
//! are its two kinds — and the peers' [`ConnectorConnection`] (serves the edge's flows,
//! unregisters) and [`ClientConnection`] (opens flows, reports posture).

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Mutex};

use crate::control::{ClientControl, ConnectorControl, EdgeControl, EdgeEvent, PeerEvent};
use crate::flow::{CloseCode, Datagram, Protocol};
use crate::frame::{
    ClientClaim, ConnectorClaim, EdgeList, GoAway, PostureReport, Registered, RoutePush,
};
use crate::transport::carrier::{Carrier, ConnectionLost, Quic, Transport};
use crate::transport::datagrams::UdpFlow;
use crate::transport::driver::ControlHandle;
use crate::transport::error::{ControlSendError, DatagramError, OpenError};
use crate::transport::serve::FlowRequest;
use crate::transport::shared::Shared;
use crate::transport::stream::FlowStream;

/// A registered zt connection over transport `T`: what every role's handle shares.
pub struct Connection<T: Transport = Carrier> {
    pub(crate) shared: Arc<Shared<T>>,
}

impl<T: Transport> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.remote_address())
            .finish()
    }
}

impl<T: Transport> Connection<T> {
    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.shared.transport.remote_address()
    }

    /// The current round-trip time estimate.
    pub fn rtt(&self) -> Duration {
        self.shared.transport.rtt()
    }

    /// The transport carrying the connection.
    pub fn transport(&self) -> &T {
        &self.shared.transport
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
        let path = self.shared.transport.max_datagram_size()?;
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
        self.shared.transport.close(code, reason.as_bytes());
    }

    /// Waits until the connection is closed, by either side or by the idle timeout.
    pub async fn closed(&self) -> ConnectionLost {
        self.shared.transport.closed().await
    }

    fn mark_draining(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }
}

impl Connection<Quic> {
    /// The connection's QUIC statistics.
    pub fn stats(&self) -> quinn::ConnectionStats {
        self.shared.transport.0.stats()
    }
}

impl Connection<Carrier> {
    /// The connection's QUIC statistics; `None` over TCP.
    pub fn stats(&self) -> Option<quinn::ConnectionStats> {
        match &self.shared.transport {
            Carrier::Quic(q) => Some(q.0.stats()),
            Carrier::Tcp(_) => None,
        }
    }

    /// The transport's word: `quic` or `tcp`.
    pub fn transport_word(&self) -> &'static str {
        self.shared.transport.word()
    }
}

macro_rules! deref_core {
    ($t:ident) => {
        impl<T: Transport> Deref for $t<T> {
            type Target = Connection<T>;
            fn deref(&self) -> &Connection<T> {
                &self.core
            }
        }
    };
}

/// The edge's handle on a registered peer whose claim is a `C`: a connector
/// ([`ConnectorLink`], whose flows the edge opens) or a client ([`ClientLink`], whose flows
/// the edge serves and to which it pushes routes).
pub struct EdgeLink<C, T: Transport = Carrier> {
    pub(crate) core: Connection<T>,
    pub(crate) control: ControlHandle<EdgeControl>,
    /// The peer's flow requests (clients only: a connector opens none). Boxed, so a
    /// connector's handle does not carry the empty slot's size.
    pub(crate) flows: Option<Box<Mutex<mpsc::Receiver<FlowRequest<T>>>>>,
    pub(crate) claim: C,
    pub(crate) connection_id: uuid::Uuid,
    pub(crate) software_version: String,
    pub(crate) features: Vec<String>,
}

/// The edge's handle on a registered connector connection.
pub type ConnectorLink<T = Carrier> = EdgeLink<ConnectorClaim, T>;

/// The edge's handle on a registered client connection.
pub type ClientLink<T = Carrier> = EdgeLink<ClientClaim, T>;

impl<C, T: Transport> Deref for EdgeLink<C, T> {
    type Target = Connection<T>;
    fn deref(&self) -> &Connection<T> {
        &self.core
    }
}

impl<C: std::fmt::Debug, T: Transport> std::fmt::Debug for EdgeLink<C, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeLink")
            .field("claim", &self.claim)
            .field("connection_id", &self.connection_id)
            .field("remote", &self.remote_address())
            .finish()
    }
}

impl<C, T: Transport> EdgeLink<C, T> {
    /// Who the peer is.
    pub fn claim(&self) -> &C {
        &self.claim
    }

    /// The id the edge gave this connection.
    pub fn connection_id(&self) -> uuid::Uuid {
        self.connection_id
    }

    /// The peer's software version and features.
    pub fn software(&self) -> (&str, &[String]) {
        (&self.software_version, &self.features)
    }

    /// Tells the peer the edge is draining; no new flows are opened on this link.
    pub async fn go_away(&self, drain: Duration, reason: &str) -> Result<(), ControlSendError> {
        self.core.mark_draining();
        let reason = reason.to_owned();
        self.control.call(move |m| m.go_away(drain, &reason)).await
    }

    /// Sends a ping; the answer arrives as [`EdgeEvent::Pong`].
    pub async fn ping(&self, nonce: u64) -> Result<(), ControlSendError> {
        self.control.call(move |m| m.ping(nonce)).await
    }

    /// The next control event ([`EdgeEvent::Unregister`] from a connector,
    /// [`EdgeEvent::Posture`] from a client, [`EdgeEvent::Pong`]); `None` once the control
    /// stream has ended.
    pub async fn next_event(&self) -> Option<EdgeEvent> {
        self.control.next_event().await
    }
}

impl<C, T: Transport> EdgeLink<C, T> {
    /// Sends the peer the live edges' addresses; only for peers that offered
    /// [`EDGE_LIST_FEATURE`](crate::EDGE_LIST_FEATURE) at registration.
    pub async fn push_edges(&self, list: EdgeList) -> Result<(), ControlSendError> {
        self.control.call(move |m| m.push_edges(list)).await
    }
}

impl<T: Transport> EdgeLink<ConnectorClaim, T> {
    /// Opens a flow to `dest` through the connector. [`OpenError::Unanswered`] means the
    /// connector did not answer within the open timeout: retry on another connection.
    pub async fn open_flow(
        &self,
        dest: SocketAddr,
        protocol: Protocol,
        metadata: Vec<(String, String)>,
    ) -> Result<FlowStream, OpenError> {
        self.core.shared.open_flow(dest, protocol, metadata).await
    }

    /// Opens a UDP flow to `dest` through the connector; its datagrams are routed to the
    /// returned [`UdpFlow`].
    pub async fn open_udp_flow(
        &self,
        dest: SocketAddr,
        metadata: Vec<(String, String)>,
    ) -> Result<UdpFlow<T>, OpenError> {
        self.core.shared.open_udp_flow(dest, metadata).await
    }
}

impl<T: Transport> EdgeLink<ClientClaim, T> {
    /// The next flow the client opens; `None` when the connection is gone.
    pub async fn accept_flow(&self) -> Option<FlowRequest<T>> {
        self.flows.as_ref()?.lock().await.recv().await
    }

    /// Sends the client the routes it should capture.
    pub async fn push_routes(&self, push: RoutePush) -> Result<(), ControlSendError> {
        self.control.call(move |m| m.push_routes(push)).await
    }
}

/// A connector's registered connection to the edge.
pub struct ConnectorConnection<T: Transport = Carrier> {
    pub(crate) core: Connection<T>,
    pub(crate) control: ControlHandle<ConnectorControl>,
    pub(crate) flows: Mutex<mpsc::Receiver<FlowRequest<T>>>,
    pub(crate) registered: Registered,
}
deref_core!(ConnectorConnection);

impl<T: Transport> std::fmt::Debug for ConnectorConnection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorConnection")
            .field("registered", &self.registered)
            .field("remote", &self.remote_address())
            .finish()
    }
}

impl<T: Transport> ConnectorConnection<T> {
    /// The edge's answer: connection id and edge name.
    pub fn registered(&self) -> &Registered {
        &self.registered
    }

    /// The next flow the edge opens; `None` when the connection is gone.
    pub async fn accept_flow(&self) -> Option<FlowRequest<T>> {
        self.flows.lock().await.recv().await
    }

    /// Tells the edge this connector is draining: it opens no new flows here, and in-flight
    /// flows have `grace`. Requests that still arrive should be answered
    /// [`crate::FlowStatusCode::Draining`].
    pub async fn unregister(&self, grace: Duration) -> Result<(), ControlSendError> {
        self.core.mark_draining();
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
pub struct ClientConnection<T: Transport = Carrier> {
    pub(crate) core: Connection<T>,
    pub(crate) control: ControlHandle<ClientControl>,
    pub(crate) registered: Registered,
}
deref_core!(ClientConnection);

impl<T: Transport> std::fmt::Debug for ClientConnection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnection")
            .field("registered", &self.registered)
            .field("remote", &self.remote_address())
            .finish()
    }
}

impl<T: Transport> ClientConnection<T> {
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
        self.core.shared.open_flow(dest, protocol, metadata).await
    }

    /// Opens a UDP flow to `dest` through the edge; its datagrams are routed to the
    /// returned [`UdpFlow`].
    pub async fn open_udp_flow(
        &self,
        dest: SocketAddr,
        metadata: Vec<(String, String)>,
    ) -> Result<UdpFlow<T>, OpenError> {
        self.core.shared.open_udp_flow(dest, metadata).await
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
pub(crate) fn on_peer_event<T: Transport>(
    shared: &Arc<Shared<T>>,
) -> impl Fn(&PeerEvent) + Send + 'static {
    let shared = shared.clone();
    move |ev| {
        if let PeerEvent::GoAway(GoAway { .. }) = ev {
            shared.draining.store(true, Ordering::Release);
        }
    }
}

/// Marks an edge-side connection draining when the connector unregisters.
pub(crate) fn on_edge_event<T: Transport>(
    shared: &Arc<Shared<T>>,
) -> impl Fn(&EdgeEvent) + Send + 'static {
    let shared = shared.clone();
    move |ev| {
        if let EdgeEvent::Unregister(_) = ev {
            shared.draining.store(true, Ordering::Release);
        }
    }
}
