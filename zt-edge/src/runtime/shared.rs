//! What every task of a running edge shares: its configuration and state, the snapshot of
//! the current revision, the registry, the audit log, the metrics, the client sessions and
//! the shutdown signal.
//!
//! It holds data only; the tasks that use it live in the modules beside it, so it imports
//! none of them (no module of the runtime depends on a module that depends on it back).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use uuid::Uuid;

use super::config::EdgeConfig;
use super::metrics::Metrics;
use super::peer_links::PeerLinks;
use super::presence::Presence;
use super::registry::Registry;
use super::session::{ClientSession, DeviceSessions};
use super::snapshot::Snapshot;
use crate::audit::AuditLog;
use crate::state::EdgeState;
use crate::store::Revision;

/// State shared by every task of a running edge.
pub(crate) struct Shared {
    pub(crate) config: EdgeConfig,
    pub(crate) state: Arc<EdgeState>,
    /// Routes, identities and the compiled policy of one revision, swapped as one.
    pub(crate) snapshot: Arc<ArcSwap<Snapshot>>,
    pub(crate) registry: Arc<Registry>,
    /// Which other edges are live and what they hold.
    pub(crate) presence: Arc<Presence>,
    /// The peering endpoint and its connections, when `--peer-listen` is given.
    pub(crate) peer_links: Option<Arc<PeerLinks>>,
    pub(crate) audit: Arc<AuditLog>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) draining: Arc<AtomicBool>,
    /// Client connections by connection id.
    pub(crate) sessions: Mutex<HashMap<Uuid, Arc<ClientSession>>>,
    /// Device sessions, which those connections carry.
    pub(crate) device_sessions: DeviceSessions,
    /// The revision of the snapshot in use; sessions push routes when it moves.
    pub(crate) revision: watch::Sender<Revision>,
    pub(crate) stop: watch::Sender<bool>,
    /// Client flows being served.
    pub(crate) client_flows: AtomicU64,
    /// Identity providers met by `zt login`, discovered on first use.
    pub(crate) providers: super::providers::Providers,
    /// Enrollment exchanges served at once.
    pub(crate) enrollments: Arc<tokio::sync::Semaphore>,
    /// Seals the refresh tokens kept in device records.
    pub(crate) secrets: crate::store::SecretsKey,
    /// Sign-in renewals under way, one per device at a time.
    pub(crate) renewals: Renewals,
}

impl Shared {
    /// How long a sign-in through `provider` lasts, from the sign-in or a renewal: the
    /// provider's session length, capped by `--max-session-lifetime`.
    pub(crate) fn sign_in_length(
        &self,
        provider: &crate::store::IdentityProvider,
    ) -> std::time::Duration {
        let length = provider.session_length();
        self.config
            .max_session_lifetime
            .map_or(length, |max| length.min(max))
    }

    /// The client sessions open now.
    pub(crate) fn sessions(&self) -> Vec<Arc<ClientSession>> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// One lock per device whose sign-in is being renewed, so the device's connections (each
/// of which asks when the end nears) cause one refresh at the provider, not one each.
#[derive(Default)]
pub(crate) struct Renewals {
    locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

impl Renewals {
    /// The lock of `device`'s renewal.
    pub(crate) fn lock_of(&self, device: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget locks nobody holds, so the map stays as small as the renewals under way.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(device).or_default().clone()
    }
}
