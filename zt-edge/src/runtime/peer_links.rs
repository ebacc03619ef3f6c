//! The peering endpoint of an edge (`zt-peer/1`: QUIC with mandatory mutual TLS) and the
//! connections it holds to other edges, dialled on first need and kept for later flows.
//!
//! Who a peer is comes from its certificate alone: its chain must verify against the
//! organisation's CA, it must name exactly one edge id (`urn:zt:edge:<id>`, with the
//! client-authentication usage), that id must have a member row in the current revision,
//! and the certificate must be the one the row pins. A server certificate of an edge, or
//! any other certificate of the CA, names no edge and is refused; so is an edge removed
//! with `zt edge remove` (its live peering connections are closed at the revision that
//! removed it). This module only dials, accepts and keeps connections; forwarding a flow
//! and serving a forwarded one are the flow pipeline's (`flow::forward`) and
//! `peer_serve`'s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tracing::info;
use uuid::Uuid;
use zt_proto::{
    CloseCode, PeerVerifier, PeeringConfig, PeeringConnection, PeeringEndpoint, PeeringError,
};

use super::snapshot::Snapshot;

/// Admits a peer whose certificate names a member edge and is the one its row pins.
pub(crate) struct MemberVerifier {
    pub(crate) snapshot: Arc<ArcSwap<Snapshot>>,
}

impl PeerVerifier for MemberVerifier {
    fn verify_peer(&self, leaf_der: &[u8]) -> Result<Uuid, String> {
        let id = crate::pki::peer_edge_id(leaf_der)?;
        let snapshot = self.snapshot.load();
        let Some(member) = snapshot.members.get(&id) else {
            return Err(format!(
                "edge {id} is not a member of this organisation (never joined, or removed; \
                 `zt edge list` shows the members)"
            ));
        };
        let presented = crate::hex::encode(&crate::pki::sha256(leaf_der));
        if presented != member.peer_cert_sha256 {
            return Err(format!(
                "the certificate presented for edge {} ({id}) is not the one it joined with",
                member.name
            ));
        }
        Ok(id)
    }
}

/// How long an edge whose dial or flow just failed is tried after the others.
const FAILED_FOR: Duration = Duration::from_secs(3);

/// One peer edge's kept connection; its lock is held while dialling, so flows to the same
/// edge wait for that one handshake while flows to other edges go on.
type Slot = Arc<tokio::sync::Mutex<Option<PeeringConnection>>>;

/// The peering endpoint and its connections.
pub(crate) struct PeerLinks {
    endpoint: PeeringEndpoint,
    /// Connections this edge dialled, by peer edge id.
    dialled: Mutex<HashMap<Uuid, Slot>>,
    /// When a dial to or a flow through an edge last failed.
    failed: Mutex<HashMap<Uuid, Instant>>,
    /// Connections peers dialled to this edge, by a local number, for closing the ones
    /// of removed edges.
    accepted: Mutex<HashMap<u64, PeeringConnection>>,
    next: std::sync::atomic::AtomicU64,
}

impl PeerLinks {
    /// Binds the peering endpoint with this edge's peering certificate.
    pub(crate) fn bind(
        addr: SocketAddr,
        identity: &crate::state::PeerIdentity,
        ca_der: Vec<u8>,
        settings: zt_proto::TransportSettings,
        snapshot: Arc<ArcSwap<Snapshot>>,
    ) -> Result<Self, zt_proto::EndpointError> {
        let leaf = identity.identity();
        let server = zt_proto::ServerIdentity::from_der(
            leaf.cert_chain().iter().map(|c| c.to_vec()).collect(),
            leaf.private_key().secret_der().to_vec(),
        )?;
        let mut config = PeeringConfig::new(server, ca_der, Arc::new(MemberVerifier { snapshot }));
        config.settings = settings;
        Ok(Self {
            endpoint: PeeringEndpoint::bind(addr, config)?,
            dialled: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            accepted: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The next peer that connected and was admitted; `Err` for one refused (already told
    /// why); `None` once the endpoint is closed.
    pub(crate) async fn accept(&self) -> Option<Result<(u64, PeeringConnection), PeeringError>> {
        let conn = match self.endpoint.accept().await? {
            Ok(conn) => conn,
            Err(e) => return Some(Err(e)),
        };
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(n, conn.clone());
        Some(Ok((n, conn)))
    }

    /// Forgets an accepted connection that closed.
    pub(crate) fn forget_accepted(&self, n: u64) {
        self.accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&n);
    }

    /// The connection to `edge` at `addr`: the one kept, or a new one.
    pub(crate) async fn connection(
        &self,
        edge: Uuid,
        addr: SocketAddr,
    ) -> Result<PeeringConnection, PeeringError> {
        let slot = self
            .dialled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(edge)
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.is_closed() && conn.remote_address() == addr {
                return Ok(conn.clone());
            }
        }
        *slot = None;
        match self.endpoint.connect(addr, edge).await {
            Ok(conn) => {
                info!(peer_edge = %edge, peer = %addr, "peering connection up");
                *slot = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                self.note_failure(edge);
                Err(e)
            }
        }
    }

    /// Remembers that a dial to or a flow through `edge` failed: it is tried last for a
    /// while.
    pub(crate) fn note_failure(&self, edge: Uuid) {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(edge, Instant::now());
    }

    /// Whether `edge` failed a dial or a flow within the last few seconds.
    pub(crate) fn recently_failed(&self, edge: Uuid) -> bool {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        failed.retain(|_, at| at.elapsed() < FAILED_FOR);
        failed.contains_key(&edge)
    }

    /// Drops a kept connection that failed a flow, so the next flow dials again.
    pub(crate) async fn drop_connection(&self, edge: Uuid) {
        self.note_failure(edge);
        let slot = self
            .dialled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&edge)
            .cloned();
        if let Some(slot) = slot {
            if let Some(conn) = slot.lock().await.take() {
                conn.close(CloseCode::NO_ERROR, "failed a flow; dialling again");
            }
        }
    }

    /// Closes every connection with an edge that is no longer a member.
    pub(crate) fn prune(&self, members: &HashMap<Uuid, crate::store::EdgeMember>) {
        let reason = "this edge is no longer a member (removed with `zt edge remove`)";
        self.dialled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, slot| {
                let keep = members.contains_key(id);
                if !keep {
                    // A dial under way is refused by the membership check itself.
                    if let Ok(mut conn) = slot.try_lock() {
                        if let Some(conn) = conn.take() {
                            conn.close(CloseCode::PEER_REFUSED, reason);
                        }
                    }
                }
                keep
            });
        self.accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, conn| {
                let keep = members.contains_key(&conn.peer_edge());
                if !keep {
                    info!(peer_edge = %conn.peer_edge(), "closing the peering connection of a removed edge");
                    conn.close(CloseCode::PEER_REFUSED, reason);
                }
                keep
            });
    }

    /// Closes the endpoint and every connection.
    pub(crate) fn close(&self) {
        self.endpoint.close(CloseCode::GOING_AWAY, "edge shut down");
    }
}
