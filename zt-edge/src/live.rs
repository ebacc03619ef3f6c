//! What the running edge knows that the database does not: live connector connections.
//!
//! The admin API shows these (the CONNECTIONS column of `zt tunnel list`) without knowing
//! how the runtime keeps them; the runtime implements [`LiveView`] over its registry.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ConnectorKind, Timestamp};

/// One registered connector connection of a tunnel, as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConnectionSummary {
    /// The connection's id, assigned by the edge at registration.
    pub connection_id: Uuid,
    /// The connector (replica) that holds the connection.
    pub connector_id: Uuid,
    /// The connector's HA connection index.
    pub conn_index: u8,
    /// The name of the edge that holds the connection.
    pub edge_name: String,
    /// The connector's address as the edge sees it.
    pub remote: SocketAddr,
    /// Which protocol the connector speaks.
    pub kind: ConnectorKind,
    /// The connector's software version, as it reported it.
    pub version: String,
    /// When the connection registered.
    pub registered_at: Timestamp,
    /// Flows in flight on the connection.
    pub in_flight: u64,
    /// Whether the connection is draining (takes no new flows).
    pub draining: bool,
    /// Whether recent flow opens on it were answered in time.
    pub healthy: bool,
    /// The transport carrying it: `quic`, or `tcp` (zt/1 over TLS on TCP, for networks
    /// that drop UDP).
    #[serde(default = "quic")]
    pub transport: String,
}

fn quic() -> String {
    "quic".to_owned()
}

impl ConnectionSummary {
    /// Builds a summary; every field is required.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        connection_id: Uuid,
        connector_id: Uuid,
        conn_index: u8,
        edge_name: String,
        remote: SocketAddr,
        kind: ConnectorKind,
        version: String,
        registered_at: Timestamp,
        in_flight: u64,
        draining: bool,
        healthy: bool,
    ) -> Self {
        Self {
            connection_id,
            connector_id,
            conn_index,
            edge_name,
            remote,
            kind,
            version,
            registered_at,
            in_flight,
            draining,
            healthy,
            transport: quic(),
        }
    }

    /// The same summary with its transport word (`quic` or `tcp`).
    pub fn with_transport(mut self, transport: &str) -> Self {
        self.transport = transport.to_owned();
        self
    }
}

/// An edge as presence shows it: where it is and when it was last heard of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EdgeSummary {
    /// The edge id its peering certificate names.
    pub edge_id: Uuid,
    /// Its name.
    pub name: String,
    /// Where connectors and clients reach it.
    pub addresses: Vec<String>,
    /// Its peering listener, when it has one.
    pub peer_address: Option<SocketAddr>,
    /// Milliseconds since this edge last saw its heartbeat move (0 for itself).
    pub last_heartbeat_ms: u64,
    /// Whether it is live (its heartbeat moved within the bound).
    pub live: bool,
    /// Connector connections it holds.
    pub connections: usize,
    /// Whether this is the edge answering.
    pub this_edge: bool,
}

impl EdgeSummary {
    /// Builds a summary; every field is required.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        edge_id: Uuid,
        name: String,
        addresses: Vec<String>,
        peer_address: Option<SocketAddr>,
        last_heartbeat_ms: u64,
        live: bool,
        connections: usize,
        this_edge: bool,
    ) -> Self {
        Self {
            edge_id,
            name,
            addresses,
            peer_address,
            last_heartbeat_ms,
            live,
            connections,
            this_edge,
        }
    }
}

/// Live state of a running edge, for the admin API.
pub trait LiveView: Send + Sync {
    /// The registered connections of a tunnel (empty when none, or the tunnel is unknown),
    /// on this edge and, with shared state, on every live edge.
    fn tunnel_connections(&self, tunnel_id: Uuid) -> Vec<ConnectionSummary>;

    /// The edges presence knows of, this one included; empty without a running edge.
    fn edges(&self) -> Vec<EdgeSummary> {
        Vec::new()
    }
}

/// A [`LiveView`] with no connections: for an admin API served without a running edge.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLiveView;

impl LiveView for NoLiveView {
    fn tunnel_connections(&self, _tunnel_id: Uuid) -> Vec<ConnectionSummary> {
        Vec::new()
    }
}
