//! Client sessions. A **device session** ([`DeviceSession`]) is what policy and the audit
//! log know as the session: its id, its device, its start (for `session.age_seconds`), its
//! latest posture report and its flow cap. It is separate from any one connection: every
//! connection a client registers with the same session id (feature `session=<uuid>`) joins
//! the same device session, so the cap and the age hold across them, and the session lives
//! while any of its connections does. A connection without the feature is a session of its
//! own.
//!
//! A [`ClientSession`] is one registered client connection within its device session: it
//! remembers the virtual network it asked for and the last route push it sent (so a reload
//! that does not change its routes sends nothing), and whether it was told to go away.
//!
//! The task that serves a connection is in `clients`; flows read this state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::Semaphore;
use tracing::debug;
use uuid::Uuid;
use zt_proto::{ClientLink, RoutePush};

use super::snapshot::Snapshot;
use crate::audit::CloseReason;

/// One device session, shared by the connections that carry it.
pub(crate) struct DeviceSession {
    /// The session's id: the one the client named, or its first connection's id.
    pub(crate) id: Uuid,
    pub(crate) started: Instant,
    posture: Mutex<Arc<HashMap<String, bool>>>,
    /// Flows open across all of the session's connections.
    pub(crate) flows: Semaphore,
    /// Set once the session reached its maximum lifetime: a connection that names it again
    /// starts a new session rather than joining one that is ending.
    expired: AtomicBool,
    /// Why the edge ended the session (expiry, revocation), once it has: the close reason
    /// of every flow it cut.
    ended: Mutex<Option<CloseReason>>,
}

impl DeviceSession {
    fn new(id: Uuid, max_flows: usize) -> Self {
        Self {
            id,
            started: Instant::now(),
            posture: Mutex::new(Arc::new(HashMap::new())),
            flows: Semaphore::new(max_flows),
            expired: AtomicBool::new(false),
            ended: Mutex::new(None),
        }
    }

    /// Records why the edge is ending the session; the first reason stays.
    pub(crate) fn end(&self, reason: CloseReason) {
        self.expired.store(true, Ordering::Release);
        self.ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(reason);
    }

    /// Why the edge ended the session, if it has.
    pub(crate) fn end_reason(&self) -> Option<CloseReason> {
        *self.ended.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The checks of the latest posture report from any of the session's connections.
    pub(crate) fn posture(&self) -> Arc<HashMap<String, bool>> {
        self.posture
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the posture with the client's latest report.
    pub(crate) fn set_posture(&self, checks: HashMap<String, bool>) {
        *self.posture.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(checks);
    }
}

/// The device sessions alive now, by device and session id. Entries are weak: a session
/// ends when its last connection does.
#[derive(Default)]
pub(crate) struct DeviceSessions {
    by_key: Mutex<HashMap<(Uuid, Uuid), Weak<DeviceSession>>>,
}

impl DeviceSessions {
    /// The session a connection of `device` joins: the live one named `session_id`, or a
    /// new one (under `session_id`, or under `connection_id` when the client named none).
    pub(crate) fn join(
        &self,
        device: Uuid,
        session_id: Option<Uuid>,
        connection_id: Uuid,
        max_flows: usize,
    ) -> Arc<DeviceSession> {
        let id = session_id.unwrap_or(connection_id);
        let mut map = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(live) = map.get(&(device, id)).and_then(Weak::upgrade) {
            if !live.expired.load(Ordering::Acquire) {
                return live;
            }
        }
        let session = Arc::new(DeviceSession::new(id, max_flows));
        map.insert((device, id), Arc::downgrade(&session));
        session
    }

    /// Forgets sessions whose last connection has ended.
    pub(crate) fn sweep(&self) {
        self.by_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, s| s.strong_count() > 0);
    }

    /// How many device sessions are alive.
    pub(crate) fn len(&self) -> usize {
        self.by_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|s| s.strong_count() > 0)
            .count()
    }
}

/// One client connection within its device session.
pub(crate) struct ClientSession {
    pub(crate) link: ClientLink,
    pub(crate) device: Arc<DeviceSession>,
    pub(crate) device_id: Uuid,
    pub(crate) remote: SocketAddr,
    /// The virtual network the client asked for (empty: the default).
    pub(crate) vnet_requested: String,
    closing: AtomicBool,
    pushed: Mutex<Option<(String, Vec<IpNet>)>>,
}

impl ClientSession {
    /// The connection of a client that just registered on `link`, within `device`.
    pub(crate) fn new(link: ClientLink, device: Arc<DeviceSession>) -> Self {
        let claim = link.claim().clone();
        Self {
            device_id: claim.device_id,
            remote: link.remote_address(),
            vnet_requested: claim.vnet,
            closing: AtomicBool::new(false),
            pushed: Mutex::new(None),
            device,
            link,
        }
    }

    /// Whether the session was told to go away (it takes no new flows).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) async fn go_away(&self, drain: Duration, reason: &str) {
        self.closing.store(true, Ordering::Release);
        if let Err(e) = self.link.go_away(drain, reason).await {
            debug!(device = %self.device_id, error = %e, "cannot send go-away");
        }
    }

    /// Pushes the routes of the session's virtual network in `snapshot` if they differ from
    /// the last push.
    pub(crate) async fn push_routes(&self, snapshot: &Snapshot) {
        let (vnet_name, routes) = match snapshot.resolve_vnet(&self.vnet_requested) {
            Some(v) => (
                v.name.clone(),
                snapshot.prefixes.get(&v.id).cloned().unwrap_or_default(),
            ),
            None => (self.vnet_requested.clone(), Vec::new()),
        };
        {
            let mut pushed = self.pushed.lock().unwrap_or_else(PoisonError::into_inner);
            if pushed.as_ref() == Some(&(vnet_name.clone(), routes.clone())) {
                return;
            }
            *pushed = Some((vnet_name.clone(), routes.clone()));
        }
        let count = routes.len();
        let push = RoutePush {
            generation: snapshot.revision.get(),
            vnet: vnet_name,
            routes,
        };
        match self.link.push_routes(push).await {
            Ok(()) => debug!(device = %self.device_id, routes = count, "routes pushed"),
            Err(e) => debug!(device = %self.device_id, error = %e, "cannot push routes"),
        }
    }
}
