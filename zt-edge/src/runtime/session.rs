//! A client session: one registered client connection, from registration until it closes.
//!
//! The session records its start (for `session.age_seconds`), the latest posture report and
//! the virtual network it asked for; it pushes that network's routes on connect and after
//! every reload that changes them, ends itself with go-away at the configured maximum
//! lifetime, and hands each flow to its own task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::Semaphore;
use tracing::{debug, info, Instrument};
use uuid::Uuid;
use zt_proto::{ClientLink, CloseCode, EdgeEvent, RoutePush};

use super::Inner;

/// One client session.
pub(crate) struct Session {
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

impl Session {
    /// The checks of the latest posture report.
    pub(crate) fn posture(&self) -> Arc<HashMap<String, bool>> {
        self.posture
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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

    /// Pushes the routes of the session's virtual network if they differ from the last push.
    async fn push_routes(&self, inner: &Inner) {
        let snapshot = inner.snapshot.load_full();
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

/// Serves a registered client until its connection ends.
pub(crate) async fn serve(inner: Arc<Inner>, link: ClientLink) {
    let claim = link.claim().clone();
    let session = Arc::new(Session {
        device_id: claim.device_id,
        remote: link.remote_address(),
        started: Instant::now(),
        vnet_requested: claim.vnet.clone(),
        posture: Mutex::new(Arc::new(HashMap::new())),
        flows: Semaphore::new(inner.config.max_flows_per_session),
        closing: AtomicBool::new(false),
        pushed: Mutex::new(None),
        link,
    });
    let connection = session.link.connection_id();
    let span = tracing::info_span!("client", device = %session.device_id, connection = %connection);
    run(inner, session, connection).instrument(span).await
}

async fn run(inner: Arc<Inner>, session: Arc<Session>, connection: Uuid) {
    info!(remote = %session.remote, vnet = %session.vnet_requested, "client session started");
    inner.metrics.session_started();
    inner
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(connection, session.clone());
    session.push_routes(&inner).await;

    let mut revisions = inner.revision.subscribe();
    let mut stop = inner.stop.subscribe();
    let lifetime = inner.config.max_session_lifetime;
    let expiry = tokio::time::sleep(lifetime.unwrap_or(Duration::from_secs(86_400 * 365)));
    tokio::pin!(expiry);
    let mut expired = lifetime.is_none();
    let drain = tokio::time::sleep(Duration::from_secs(86_400 * 365));
    tokio::pin!(drain);
    loop {
        tokio::select! {
            request = session.link.accept_flow() => match request {
                Some((header, responder)) => {
                    let inner = inner.clone();
                    let session = session.clone();
                    let span = tracing::info_span!("flow", id = header.flow_id, dest = %header.dest, protocol = %header.protocol);
                    tokio::spawn(super::flow::serve(inner, session, header, responder).instrument(span));
                }
                None => break,
            },
            event = session.link.next_event() => match event {
                Some(EdgeEvent::Posture(report)) => {
                    let checks: HashMap<String, bool> = report.checks.into_iter().map(|c| (c.name, c.passed)).collect();
                    debug!(checks = checks.len(), "posture reported");
                    *session.posture.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(checks);
                }
                Some(_) => {}
                None => {
                    // The client ended its control stream: the session is over. Close the
                    // connection as well, or it would stay open (refusing every flow, with
                    // its stream tables allocated) for as long as the client keeps it alive.
                    session.link.close(CloseCode::NO_ERROR, "control stream ended");
                    break;
                }
            },
            changed = revisions.changed() => {
                if changed.is_ok() {
                    session.push_routes(&inner).await;
                }
            }
            _ = &mut expiry, if !expired => {
                expired = true;
                let grace = inner.config.session_drain;
                info!(age_s = session.started.elapsed().as_secs(), "session reached its maximum lifetime; asking the client to re-authenticate");
                session.go_away(grace, "session lifetime reached; reconnect to re-authenticate").await;
                drain.as_mut().reset(tokio::time::Instant::now() + grace);
            }
            _ = &mut drain => {
                session.link.close(CloseCode::GOING_AWAY, "session ended");
                break;
            }
            _ = session.link.closed() => break,
            _ = stop.changed() => break,
        }
    }
    inner
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&connection);
    inner.metrics.session_ended();
    info!("client session ended");
}
