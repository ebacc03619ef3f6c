//! A client session's state: one registered client connection, from registration until it
//! closes. It records its start (for `session.age_seconds`), the latest posture report and
//! the virtual network it asked for, caps its flows, and remembers the last route push so
//! a reload that does not change its routes sends nothing.
//!
//! The task that serves the session is in `clients`; flows read this state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::Semaphore;
use tracing::debug;
use uuid::Uuid;
use zt_proto::{ClientLink, RoutePush};

use super::snapshot::Snapshot;

/// One client session.
pub(crate) struct ClientSession {
    pub(crate) link: ClientLink,
    pub(crate) device_id: Uuid,
    pub(crate) remote: SocketAddr,
    pub(crate) started: Instant,
    /// The virtual network the client asked for (empty: the default).
    pub(crate) vnet_requested: String,
    posture: Mutex<Arc<HashMap<String, bool>>>,
    pub(crate) flows: Semaphore,
    closing: AtomicBool,
    pushed: Mutex<Option<(String, Vec<IpNet>)>>,
}

impl ClientSession {
    /// The session of a client that just registered on `link`.
    pub(crate) fn new(link: ClientLink, max_flows: usize) -> Self {
        let claim = link.claim().clone();
        Self {
            device_id: claim.device_id,
            remote: link.remote_address(),
            started: Instant::now(),
            vnet_requested: claim.vnet,
            posture: Mutex::new(Arc::new(HashMap::new())),
            flows: Semaphore::new(max_flows),
            closing: AtomicBool::new(false),
            pushed: Mutex::new(None),
            link,
        }
    }

    /// The checks of the latest posture report.
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
