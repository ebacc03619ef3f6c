//! Presence: which edges are live and which connector connections each holds, shared
//! through the store's unrevisioned rows (table `presence`, one row per edge, keyed by edge
//! id), so an edge without a connection of a tunnel knows where to forward its flows.
//!
//! Each edge rewrites its row every [`HEARTBEAT`] and at once when its registry changes;
//! the row carries a sequence number that grows with every write. Every edge reads the
//! table on the same beat and whenever another edge announces a change, and keeps, for
//! each other edge, the time *by its own clock* at which that edge's sequence number last
//! moved: an edge whose number has not moved for [`DEAD_AFTER`] is taken for dead
//! (clocks of different machines are never compared). A stopping edge removes its row.
//! Staleness is measured up to this edge's last successful read, so while the database is
//! unreachable the last view stands (no edge is declared dead for want of a read; a flow
//! forwarded to an edge that did die fails its dial and goes to the next).
//!
//! Without a shared store (one edge on its embedded database) there is no table: this
//! edge is the only one, and presence only answers for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::registry::Registry;
use crate::live::{ConnectionSummary, EdgeSummary, LiveView};
use crate::store::{EphemeralTable, Store};

/// How often an edge rewrites its row and reads the others'.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long an edge's sequence number may stand still before the others take it for dead.
pub(crate) const DEAD_AFTER: Duration = Duration::from_secs(5);

/// The most connections one row may list; a row with more is refused by readers.
const MAX_ROW_CONNECTIONS: usize = 65_536;

/// The largest row a reader accepts.
const MAX_ROW_BYTES: usize = 16 << 20;

/// One edge's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PresenceRow {
    pub(crate) edge_id: Uuid,
    pub(crate) name: String,
    /// Where connectors and clients reach it.
    #[serde(default)]
    pub(crate) addresses: Vec<String>,
    /// Its peering listener.
    #[serde(default)]
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) seq: u64,
    #[serde(default)]
    pub(crate) connections: Vec<PresentConnection>,
}

/// One connector connection in a row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PresentConnection {
    pub(crate) tunnel_id: Uuid,
    pub(crate) connection: ConnectionSummary,
}

impl PresenceRow {
    /// Reads a row, refusing one too large or listing too many connections.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_ROW_BYTES {
            return Err(format!("{} bytes, at most {MAX_ROW_BYTES}", bytes.len()));
        }
        let row: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if row.connections.len() > MAX_ROW_CONNECTIONS {
            return Err(format!(
                "{} connections, at most {MAX_ROW_CONNECTIONS}",
                row.connections.len()
            ));
        }
        Ok(row)
    }
}

/// Another edge as last read.
struct Seen {
    row: PresenceRow,
    /// When (by this edge's clock) its sequence number last moved.
    moved_at: Instant,
}

/// An edge a flow of a tunnel can be forwarded to.
#[derive(Debug, Clone)]
pub(crate) struct PeerTarget {
    pub(crate) edge_id: Uuid,
    pub(crate) name: String,
    pub(crate) peer: SocketAddr,
    /// Its usable connections of the tunnel.
    pub(crate) connections: usize,
}

/// What this edge knows of every edge, itself included.
pub(crate) struct Presence {
    edge_id: Uuid,
    name: String,
    addresses: Vec<String>,
    peer: Option<SocketAddr>,
    registry: Arc<Registry>,
    others: RwLock<HashMap<Uuid, Seen>>,
    seq: AtomicU64,
    /// When the table was last read successfully; staleness is measured up to then.
    last_read: RwLock<Option<Instant>>,
    /// The live edges' addresses (this edge's first; empty while it has no live peer),
    /// with a generation that grows with each change: what connectors and clients are
    /// pushed.
    edge_list: watch::Sender<(u64, Vec<String>)>,
}

impl Presence {
    pub(crate) fn new(
        edge_id: Uuid,
        name: String,
        addresses: Vec<String>,
        peer: Option<SocketAddr>,
        registry: Arc<Registry>,
    ) -> Self {
        Self {
            edge_id,
            name,
            peer,
            registry,
            others: RwLock::new(HashMap::new()),
            seq: AtomicU64::new(0),
            last_read: RwLock::new(None),
            edge_list: watch::channel((0, Vec::new())).0,
            addresses,
        }
    }

    /// The live edges' addresses, for pushing to connectors and clients.
    pub(crate) fn edge_list(&self) -> watch::Receiver<(u64, Vec<String>)> {
        self.edge_list.subscribe()
    }

    /// Recomputes the live edges' addresses; bumps the generation when they changed.
    fn refresh_edge_list(&self, others: &HashMap<Uuid, Seen>, at: Instant) {
        let mut live: Vec<&Seen> = others.values().filter(|s| Self::is_live(s, at)).collect();
        live.sort_by(|a, b| a.row.name.cmp(&b.row.name));
        // An edge alone pushes nothing: its peers reach it as configured.
        let mut list = if live.is_empty() {
            Vec::new()
        } else {
            self.addresses.clone()
        };
        for seen in live {
            for a in &seen.row.addresses {
                if !list.contains(a) && list.len() < zt_proto::MAX_EDGE_LIST {
                    list.push(a.clone());
                }
            }
        }
        self.edge_list.send_if_modified(|(generation, current)| {
            if *current == list {
                return false;
            }
            *generation += 1;
            *current = list;
            true
        });
    }

    pub(crate) fn edge_id(&self) -> Uuid {
        self.edge_id
    }

    /// This edge's row, with the next sequence number.
    fn own_row(&self) -> PresenceRow {
        PresenceRow {
            edge_id: self.edge_id,
            name: self.name.clone(),
            addresses: self.addresses.clone(),
            peer: self.peer,
            seq: self.seq.fetch_add(1, Ordering::AcqRel) + 1,
            connections: self
                .registry
                .summaries()
                .into_iter()
                .map(|(tunnel_id, connection)| PresentConnection {
                    tunnel_id,
                    connection,
                })
                .collect(),
        }
    }

    /// Takes in a fresh read of every row.
    fn absorb(&self, rows: Vec<(Vec<u8>, Vec<u8>)>, now: Instant) {
        *self
            .last_read
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(now);
        let mut others = self.others.write().unwrap_or_else(PoisonError::into_inner);
        let mut present = Vec::with_capacity(rows.len());
        for (key, value) in rows {
            let row = match PresenceRow::decode(&value) {
                Ok(row) => row,
                Err(e) => {
                    warn!(key = %crate::hex::encode(&key), error = %e, "ignoring an unreadable presence row");
                    continue;
                }
            };
            if row.edge_id == self.edge_id || key != row.edge_id.as_bytes() {
                continue;
            }
            present.push(row.edge_id);
            match others.get_mut(&row.edge_id) {
                Some(seen) if seen.row.seq == row.seq => {}
                Some(seen) => {
                    seen.row = row;
                    seen.moved_at = now;
                }
                None => {
                    info!(edge = %row.name, edge_id = %row.edge_id, peer = ?row.peer, "edge present");
                    others.insert(row.edge_id, Seen { row, moved_at: now });
                }
            }
        }
        others.retain(|id, seen| {
            let keep = present.contains(id);
            if !keep {
                info!(edge = %seen.row.name, edge_id = %id, "edge left");
            }
            keep
        });
        self.refresh_edge_list(&others, now);
    }

    /// The instant staleness is measured at: the last successful read.
    fn reference(&self) -> Instant {
        self.last_read
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or_else(Instant::now)
    }

    fn is_live(seen: &Seen, at: Instant) -> bool {
        at.saturating_duration_since(seen.moved_at) < DEAD_AFTER
    }

    /// The live edges holding a usable connection of `tunnel` that can take forwarded
    /// flows, most connections first.
    pub(crate) fn edges_holding(&self, tunnel: Uuid) -> Vec<PeerTarget> {
        let now = self.reference();
        let others = self.others.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<PeerTarget> = others
            .values()
            .filter(|s| Self::is_live(s, now))
            .filter_map(|s| {
                let connections = s
                    .row
                    .connections
                    .iter()
                    .filter(|c| c.tunnel_id == tunnel && !c.connection.draining)
                    .count();
                Some(PeerTarget {
                    edge_id: s.row.edge_id,
                    name: s.row.name.clone(),
                    peer: s.row.peer?,
                    connections,
                })
            })
            .filter(|t| t.connections > 0)
            .collect();
        out.sort_by_key(|t| std::cmp::Reverse(t.connections));
        out
    }
}

impl LiveView for Presence {
    fn tunnel_connections(&self, tunnel_id: Uuid) -> Vec<ConnectionSummary> {
        let mut out = self.registry.tunnel_connections(tunnel_id);
        let now = self.reference();
        let others = self.others.read().unwrap_or_else(PoisonError::into_inner);
        for seen in others.values().filter(|s| Self::is_live(s, now)) {
            out.extend(
                seen.row
                    .connections
                    .iter()
                    .filter(|c| c.tunnel_id == tunnel_id)
                    .map(|c| c.connection.clone()),
            );
        }
        out
    }

    fn edges(&self) -> Vec<EdgeSummary> {
        let now = self.reference();
        let mut out = vec![EdgeSummary::new(
            self.edge_id,
            self.name.clone(),
            self.addresses.clone(),
            self.peer,
            0,
            true,
            self.registry.summaries().len(),
            true,
        )];
        let others = self.others.read().unwrap_or_else(PoisonError::into_inner);
        for seen in others.values() {
            let age = now.saturating_duration_since(seen.moved_at);
            out.push(EdgeSummary::new(
                seen.row.edge_id,
                seen.row.name.clone(),
                seen.row.addresses.clone(),
                seen.row.peer,
                u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                Self::is_live(seen, now),
                seen.row.connections.len(),
                false,
            ));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// The edge-list receiver for a peer that offered `features`, primed so the first wait
/// returns at once; `None` for a peer that did not ask for edge lists.
pub(crate) fn edge_list_for(presence: &Presence, features: &[String]) -> Option<EdgeListRx> {
    features
        .iter()
        .any(|f| f == zt_proto::EDGE_LIST_FEATURE)
        .then(|| {
            let mut rx = presence.edge_list();
            rx.mark_changed();
            rx
        })
}

/// A peer's subscription to the edge list.
pub(crate) type EdgeListRx = watch::Receiver<(u64, Vec<String>)>;

/// The next edge list to push to a peer; never resolves without a subscription.
/// An edge with no live peer has nothing to push; a peer told of others before keeps
/// them (they may be back).
pub(crate) async fn next_edge_list(rx: &mut Option<EdgeListRx>) -> zt_proto::EdgeList {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        let (generation, edges) = rx.borrow_and_update().clone();
        if !edges.is_empty() {
            return zt_proto::EdgeList { generation, edges };
        }
    }
}

/// Keeps this edge's row fresh and the others' read, until `stop`; then removes the row.
/// Does nothing without a shared store.
pub(crate) async fn run(
    presence: Arc<Presence>,
    store: Arc<dyn Store>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut changes) = store.ephemeral().map(|e| e.subscribe()) else {
        return;
    };
    let registry = presence.registry.clone();
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        // What woke the loop: the beat or a registry change (write and read), or another
        // edge's announcement (read only).
        let write = tokio::select! {
            _ = beat.tick() => true,
            () = registry.changed.notified() => true,
            change = changes.recv() => match change {
                Ok(c) if c.table == EphemeralTable::Presence => false,
                Ok(_) => continue,
                // Missed announcements: the read below catches up.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => false,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let p = presence.clone();
        let s = store.clone();
        let result = tokio::task::spawn_blocking(move || {
            let Some(e) = s.ephemeral() else {
                return Ok(());
            };
            if write {
                let row = p.own_row();
                let bytes = serde_json::to_vec(&row).map_err(|e| e.to_string())?;
                e.put(EphemeralTable::Presence, p.edge_id.as_bytes(), &bytes)
                    .map_err(|e| e.to_string())?;
            }
            let rows = e
                .scan(EphemeralTable::Presence)
                .map_err(|e| e.to_string())?;
            p.absorb(rows, Instant::now());
            Ok::<(), String>(())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match result {
            Ok(()) if failing => {
                info!("presence heartbeat works again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                warn!(error = %e, "presence heartbeat failed; other edges will take this one for dead if it goes on");
                failing = true;
            }
            Err(e) => debug!(error = %e, "presence heartbeat still failing"),
        }
    }
    let id = presence.edge_id;
    let removed = tokio::task::spawn_blocking(move || {
        store
            .ephemeral()
            .map(|e| e.remove(EphemeralTable::Presence, id.as_bytes()))
    })
    .await;
    if let Ok(Some(Err(e))) = removed {
        warn!(error = %e, "cannot remove this edge's presence row; the others will drop it when its heartbeat stops");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(edge: Uuid, seq: u64, tunnel: Uuid, draining: bool) -> (Vec<u8>, Vec<u8>) {
        let connection = ConnectionSummary::new(
            Uuid::new_v4(),
            Uuid::new_v4(),
            0,
            "e2".into(),
            "127.0.0.1:1".parse().unwrap(),
            crate::ConnectorKind::Zt,
            "zt".into(),
            crate::Timestamp::now(),
            0,
            draining,
            true,
        );
        let r = PresenceRow {
            edge_id: edge,
            name: "e2".into(),
            addresses: vec![],
            peer: Some("127.0.0.1:9".parse().unwrap()),
            seq,
            connections: vec![PresentConnection {
                tunnel_id: tunnel,
                connection,
            }],
        };
        (edge.as_bytes().to_vec(), serde_json::to_vec(&r).unwrap())
    }

    #[test]
    fn an_edge_whose_sequence_stands_still_is_dead_and_draining_connections_do_not_count() {
        let p = Presence::new(
            Uuid::new_v4(),
            "e1".into(),
            vec![],
            None,
            Arc::new(Registry::new("e1".into())),
        );
        let (e2, t) = (Uuid::new_v4(), Uuid::new_v4());
        let t0 = Instant::now();
        p.absorb(vec![row(e2, 1, t, false)], t0);
        assert_eq!(p.edges_holding(t).len(), 1);
        // The same number read again later: its clock does not move.
        p.absorb(vec![row(e2, 1, t, false)], t0 + Duration::from_secs(3));
        {
            let others = p.others.read().unwrap();
            let seen = &others[&e2];
            assert!(Presence::is_live(seen, t0 + Duration::from_secs(4)));
            assert!(!Presence::is_live(seen, t0 + DEAD_AFTER));
        }
        p.absorb(vec![row(e2, 2, t, true)], t0 + Duration::from_secs(4));
        assert!(
            p.edges_holding(t).is_empty(),
            "a draining connection takes no forwarded flow"
        );
        // A row that disappears is forgotten; a garbage row is ignored.
        p.absorb(vec![(vec![1], b"{".to_vec())], t0 + Duration::from_secs(5));
        assert!(p.others.read().unwrap().is_empty());
    }

    #[test]
    fn rows_are_bounded() {
        assert!(PresenceRow::decode(&vec![b' '; MAX_ROW_BYTES + 1])
            .unwrap_err()
            .contains("at most"));
        assert!(PresenceRow::decode(b"{\"edge_id\":1}").is_err());
    }
}
