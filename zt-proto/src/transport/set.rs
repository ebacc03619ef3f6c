//! A connection set: the connections a client or connector holds at once — to one edge or
//! several, over one transport or several — defined once for every runtime.
//!
//! The set does no I/O. Its owner dials, and [`ConnectionSet::insert`]s each connection
//! that registered (with where it goes: [`Placement`]) and [`ConnectionSet::remove`]s it
//! when it is lost or draining; the owner replaces lost members itself. A new flow asks
//! [`ConnectionSet::pick`] (or [`ConnectionSet::wait_pick`], which waits for a member) for
//! the usable member with the fewest flows in flight and keeps the returned [`Pinned`]
//! handle for its whole life: a flow stays on the connection it started on, and the count
//! falls when the handle drops. [`ConnectionSet::members`] reports each member's edge,
//! transport and load.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// Where a member of a [`ConnectionSet`] is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Placement {
    /// The edge address as dialled (`host:port`).
    pub edge: String,
    /// The name the edge gave itself when it registered the connection.
    pub edge_name: String,
    /// The transport: `"quic"` today.
    pub transport: &'static str,
}

impl Placement {
    /// A placement for a connection to `edge` (registered by `edge_name`) over `transport`.
    pub fn new(
        edge: impl Into<String>,
        edge_name: impl Into<String>,
        transport: &'static str,
    ) -> Self {
        Self {
            edge: edge.into(),
            edge_name: edge_name.into(),
            transport,
        }
    }
}

/// One member as [`ConnectionSet::members`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberReport {
    /// The member's id in the set (grows with each insert; never reused).
    pub id: u64,
    /// Where it is connected.
    pub placement: Placement,
    /// Flows pinned to it now.
    pub in_flight: usize,
}

struct Member<C> {
    id: u64,
    placement: Placement,
    conn: C,
    in_flight: AtomicUsize,
}

/// A set of live connections of type `C` (a connection handle, say
/// `Arc<zt_proto::ClientConnection>`). Cloning shares the set.
pub struct ConnectionSet<C> {
    members: Arc<watch::Sender<Vec<Arc<Member<C>>>>>,
    next_id: Arc<AtomicU64>,
}

impl<C> Clone for ConnectionSet<C> {
    fn clone(&self) -> Self {
        Self {
            members: self.members.clone(),
            next_id: self.next_id.clone(),
        }
    }
}

impl<C> std::fmt::Debug for ConnectionSet<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSet")
            .field("members", &self.members.borrow().len())
            .finish()
    }
}

impl<C> Default for ConnectionSet<C> {
    fn default() -> Self {
        Self::new()
    }
}

/// A flow's hold on the member it was opened on: dereferences to the connection, and
/// counts as one flow in flight on it until dropped.
pub struct Pinned<C> {
    member: Arc<Member<C>>,
}

impl<C> Pinned<C> {
    /// The member's id in its set (for [`ConnectionSet::remove`]).
    pub fn id(&self) -> u64 {
        self.member.id
    }

    /// Where the member is connected.
    pub fn placement(&self) -> &Placement {
        &self.member.placement
    }
}

impl<C> Deref for Pinned<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.member.conn
    }
}

impl<C> Clone for Pinned<C> {
    fn clone(&self) -> Self {
        self.member.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            member: self.member.clone(),
        }
    }
}

impl<C> Drop for Pinned<C> {
    fn drop(&mut self) {
        self.member.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<C> std::fmt::Debug for Pinned<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinned")
            .field("id", &self.member.id)
            .field("placement", &self.member.placement)
            .finish()
    }
}

impl<C> ConnectionSet<C> {
    /// An empty set.
    pub fn new() -> Self {
        Self {
            members: Arc::new(watch::channel(Vec::new()).0),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Adds a registered connection; returns its id.
    pub fn insert(&self, conn: C, placement: Placement) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let member = Arc::new(Member {
            id,
            placement,
            conn,
            in_flight: AtomicUsize::new(0),
        });
        self.members.send_modify(|m| m.push(member));
        id
    }

    /// Takes a member out: new flows no longer pick it (flows pinned to it keep it until
    /// they end). Returns whether it was there.
    pub fn remove(&self, id: u64) -> bool {
        self.members.send_if_modified(|m| {
            let before = m.len();
            m.retain(|x| x.id != id);
            m.len() != before
        })
    }

    /// How many members the set has.
    pub fn len(&self) -> usize {
        self.members.borrow().len()
    }

    /// Whether the set has no member.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The usable member with the fewest flows in flight (the earliest inserted among
    /// equals), pinned for a new flow; `None` if no member is usable.
    pub fn pick(&self, usable: impl Fn(&C) -> bool) -> Option<Pinned<C>> {
        let members = self.members.borrow();
        let best = members
            .iter()
            .filter(|m| usable(&m.conn))
            .min_by_key(|m| m.in_flight.load(Ordering::Relaxed))?;
        best.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Pinned {
            member: best.clone(),
        })
    }

    /// Like [`ConnectionSet::pick`], waiting until `deadline` for a usable member when
    /// there is none (while the owner reconnects, say).
    pub async fn wait_pick(
        &self,
        deadline: tokio::time::Instant,
        usable: impl Fn(&C) -> bool,
    ) -> Option<Pinned<C>> {
        let mut rx = self.members.subscribe();
        loop {
            if let Some(p) = self.pick(&usable) {
                return Some(p);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The set cannot be dropped while `self` lives; only the deadline ends this.
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    /// Each member's id, placement and load, in insertion order.
    pub fn members(&self) -> Vec<MemberReport> {
        self.members
            .borrow()
            .iter()
            .map(|m| MemberReport {
                id: m.id,
                placement: m.placement.clone(),
                in_flight: m.in_flight.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Every member's id and connection, in insertion order (to drain them all, say).
    pub fn entries(&self) -> Vec<(u64, C)>
    where
        C: Clone,
    {
        self.members
            .borrow()
            .iter()
            .map(|m| (m.id, m.conn.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(edge: &str) -> Placement {
        Placement::new(edge, "edge", "quic")
    }

    #[test]
    fn a_pick_goes_to_the_least_loaded_usable_member_and_stays_pinned() {
        let set = ConnectionSet::new();
        let a = set.insert("a", at("a:1"));
        let _b = set.insert("b", at("b:1"));
        let first = set.pick(|_| true).unwrap();
        assert_eq!(*first, "a");
        let second = set.pick(|_| true).unwrap();
        assert_eq!(*second, "b", "the second flow goes to the idle member");
        drop(second);
        let third = set.pick(|c| *c != "a").unwrap();
        assert_eq!(*third, "b", "an unusable member is skipped");
        assert!(set.remove(a));
        assert!(!set.remove(a), "removing twice finds nothing");
        // The flow pinned to the removed member still has it.
        assert_eq!(*first, "a");
        assert_eq!(first.placement().edge, "a:1");
        let report = set.members();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].in_flight, 1, "the third flow is on b");
        drop(third);
        assert_eq!(set.members()[0].in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_pick_waits_for_a_member_or_the_deadline() {
        let set: ConnectionSet<&str> = ConnectionSet::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        assert!(set.wait_pick(deadline, |_| true).await.is_none());
        let waiter = {
            let set = set.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                set.wait_pick(deadline, |_| true).await.map(|p| *p)
            })
        };
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        set.insert("late", at("late:1"));
        assert_eq!(waiter.await.unwrap(), Some("late"));
    }
}
