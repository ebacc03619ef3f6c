//! The connector connections this edge holds, per tunnel, and the choice of one for a flow.
//!
//! This is deliberately only "which connections *this* edge holds". Which other edges hold
//! connections of a tunnel (to forward a flow to a peer edge) is presence's question
//! (`presence.rs`); the flow path asks this one first and presence when this one has
//! nothing.
//!
//! Choice: among the tunnel's connections that are not draining, the healthy one with the
//! fewest flows in flight (ties go to the earliest registered); a retry prefers a
//! replica other than the one that did not answer. A connection whose open
//! went unanswered is unhealthy until an open on it succeeds; unhealthy ones are chosen only
//! when no healthy one is left, so a connection that recovered gets traffic again.
//!
//! A flow for a tunnel with no connection at all may wait a short bound for one to
//! register ([`Registry::pick_or_wait`]): after an edge restart the clients often come back
//! before the connectors, whose reconnect backoff is longer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use uuid::Uuid;
use zt_proto::ConnectorLink;

use super::cloudflared::link::CloudflaredLink;
use super::link::ConnLink;
use super::metrics::ConnectionCounts;
use crate::audit::ConnectorKind;
use crate::live::ConnectionSummary;
use crate::timestamp::Timestamp;

/// One registered connector connection.
pub(crate) struct ConnEntry {
    pub(crate) link: ConnLink,
    pub(crate) tunnel_id: Uuid,
    pub(crate) connector_id: Uuid,
    pub(crate) conn_index: u8,
    pub(crate) remote: SocketAddr,
    pub(crate) version: String,
    pub(crate) registered_at: Timestamp,
    seq: u64,
    in_flight: AtomicU64,
    healthy: AtomicBool,
    draining: AtomicBool,
}

impl ConnEntry {
    pub(crate) fn connection_id(&self) -> Uuid {
        self.link.connection_id()
    }

    pub(crate) fn kind(&self) -> ConnectorKind {
        self.link.kind()
    }

    /// The zt link, for a zt connection.
    pub(crate) fn zt(&self) -> Option<&ConnectorLink> {
        match &self.link {
            ConnLink::Zt(l) => Some(l),
            ConnLink::Cloudflared(_) => None,
        }
    }

    pub(crate) fn mark_unhealthy(&self) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(tunnel = %self.tunnel_id, connection = %self.connection_id(), "flow open unanswered; connection marked unhealthy");
        }
    }

    pub(crate) fn mark_healthy(&self) {
        if !self.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!(tunnel = %self.tunnel_id, connection = %self.connection_id(), "connection answered again; healthy");
        }
    }

    pub(crate) fn mark_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) || self.link.is_draining()
    }

    /// Counts a flow in flight until the guard is dropped.
    pub(crate) fn begin_flow(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn summary(&self, edge_name: &str) -> ConnectionSummary {
        ConnectionSummary::new(
            self.connection_id(),
            self.connector_id,
            self.conn_index,
            edge_name.to_owned(),
            self.remote,
            self.kind(),
            self.version.clone(),
            self.registered_at,
            self.in_flight.load(Ordering::Acquire),
            self.is_draining(),
            self.healthy.load(Ordering::Acquire),
        )
        .with_transport(self.transport())
    }

    /// The transport word: `quic` or `tcp` for zt's connectors, `quic` or `http2` for
    /// cloudflared's (its own words).
    pub(crate) fn transport(&self) -> &'static str {
        match &self.link {
            ConnLink::Zt(l) => l.transport_word(),
            ConnLink::Cloudflared(l) => l.conn.protocol().word(),
        }
    }
}

/// A flow counted against a connection.
pub(crate) struct InFlight(Arc<ConnEntry>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connections this edge holds.
pub(crate) struct Registry {
    edge_name: String,
    next_seq: AtomicU64,
    tunnels: RwLock<HashMap<Uuid, Vec<Arc<ConnEntry>>>>,
    /// Woken at every registration, for flows waiting on a tunnel with no connection.
    registered: Notify,
    /// Woken at every registration and removal, for the presence heartbeat.
    pub(crate) changed: Notify,
}

impl Registry {
    pub(crate) fn new(edge_name: String) -> Self {
        Self {
            edge_name,
            next_seq: AtomicU64::new(0),
            tunnels: RwLock::new(HashMap::new()),
            registered: Notify::new(),
            changed: Notify::new(),
        }
    }

    /// Adds a registered zt connection.
    pub(crate) fn insert(&self, link: ConnectorLink) -> Arc<ConnEntry> {
        let claim = link.claim().clone();
        let remote = link.remote_address();
        let version = link.software().0.to_owned();
        self.add(
            ConnLink::Zt(link),
            claim.tunnel_id,
            claim.connector_id,
            claim.conn_index,
            remote,
            version,
        )
    }

    /// Adds a registered cloudflared connection.
    pub(crate) fn insert_cloudflared(
        &self,
        link: CloudflaredLink,
        tunnel_id: Uuid,
        connector_id: Uuid,
        conn_index: u8,
        version: String,
    ) -> Arc<ConnEntry> {
        let remote = link.conn.remote_address();
        self.add(
            ConnLink::Cloudflared(link),
            tunnel_id,
            connector_id,
            conn_index,
            remote,
            version,
        )
    }

    fn add(
        &self,
        link: ConnLink,
        tunnel_id: Uuid,
        connector_id: Uuid,
        conn_index: u8,
        remote: SocketAddr,
        version: String,
    ) -> Arc<ConnEntry> {
        let entry = Arc::new(ConnEntry {
            tunnel_id,
            connector_id,
            conn_index,
            remote,
            version,
            registered_at: Timestamp::now(),
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            in_flight: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            link,
        });
        self.tunnels
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tunnel_id)
            .or_default()
            .push(entry.clone());
        self.registered.notify_waiters();
        self.changed.notify_one();
        entry
    }

    /// Removes a connection that closed.
    pub(crate) fn remove(&self, entry: &ConnEntry) {
        let mut tunnels = self.tunnels.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(conns) = tunnels.get_mut(&entry.tunnel_id) {
            conns.retain(|c| c.seq != entry.seq);
            if conns.is_empty() {
                tunnels.remove(&entry.tunnel_id);
            }
        }
        self.changed.notify_one();
    }

    /// The connection to open a flow of `tunnel` on, skipping `exclude`; for a UDP flow
    /// (`udp`), only connections that serve UDP (cloudflared's do not here).
    pub(crate) fn pick(
        &self,
        tunnel: Uuid,
        exclude: Option<&ConnEntry>,
        udp: bool,
    ) -> Option<Arc<ConnEntry>> {
        let tunnels = self.tunnels.read().unwrap_or_else(PoisonError::into_inner);
        let conns = tunnels.get(&tunnel)?;
        conns
            .iter()
            .filter(|c| !c.is_draining())
            .filter(|c| !udp || c.link.serves_udp())
            .filter(|c| exclude.is_none_or(|x| x.seq != c.seq))
            .min_by_key(|c| {
                (
                    // A retry goes to another replica when there is one: the connector
                    // that did not answer may be dead, and with it all its connections.
                    exclude.is_some_and(|x| x.connector_id == c.connector_id),
                    !c.healthy.load(Ordering::Acquire),
                    c.in_flight.load(Ordering::Acquire),
                    c.seq,
                )
            })
            .cloned()
    }

    /// Like [`Registry::pick`] with no exclusion, but when the tunnel has no usable
    /// connection, waits up to `bound` for one to register (woken by each registration, no
    /// polling). `None` once the bound has passed with still none.
    pub(crate) async fn pick_or_wait(
        &self,
        tunnel: Uuid,
        udp: bool,
        bound: Duration,
    ) -> Option<Arc<ConnEntry>> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            // Register interest before looking, so a registration between the look and
            // the wait is not missed.
            let notified = self.registered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(conn) = self.pick(tunnel, None, udp) {
                return Some(conn);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// How many of `tunnel`'s live connections cannot carry UDP (cloudflared's): a UDP flow
    /// that found no connection is told why when these are all it has.
    pub(crate) fn tcp_only(&self, tunnel: Uuid) -> usize {
        let tunnels = self.tunnels.read().unwrap_or_else(PoisonError::into_inner);
        tunnels.get(&tunnel).map_or(0, |conns| {
            conns
                .iter()
                .filter(|c| !c.is_draining() && !c.link.serves_udp())
                .count()
        })
    }

    /// Every connection, for go-away at shutdown.
    pub(crate) fn all(&self) -> Vec<Arc<ConnEntry>> {
        self.tunnels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .flatten()
            .cloned()
            .collect()
    }

    /// Flows in flight over every connection.
    pub(crate) fn in_flight(&self) -> u64 {
        self.all()
            .iter()
            .map(|c| c.in_flight.load(Ordering::Acquire))
            .sum()
    }
}

impl ConnectionCounts for Registry {
    fn counts(&self) -> Vec<(Uuid, usize)> {
        let mut out: Vec<_> = self
            .tunnels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(t, c)| (*t, c.len()))
            .collect();
        out.sort();
        out
    }
}

impl Registry {
    /// Every connection with its tunnel, as presence publishes them.
    pub(crate) fn summaries(&self) -> Vec<(Uuid, ConnectionSummary)> {
        self.tunnels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|(t, conns)| conns.iter().map(|c| (*t, c.summary(&self.edge_name))))
            .collect()
    }

    /// The connections of one tunnel.
    pub(crate) fn tunnel_connections(&self, tunnel_id: Uuid) -> Vec<ConnectionSummary> {
        self.tunnels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&tunnel_id)
            .map(|conns| conns.iter().map(|c| c.summary(&self.edge_name)).collect())
            .unwrap_or_default()
    }
}
