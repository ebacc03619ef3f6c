//! Admission of flows: the `maxActiveFlows` limit, the draining switch, and the count of
//! flows in flight that a drain waits on.
//!
//! Every flow the connector serves holds a [`FlowGuard`] from admission to its end; the
//! guard's drop is the only way a flow leaves the count, so a flow that ends by error,
//! panic or cancellation is still counted out.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::metrics::{ConnectorMetrics, DialErrorKind};

/// Why a flow was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    /// `maxActiveFlows` flows are already in progress.
    #[error("too many active flows (maxActiveFlows is {limit})")]
    TooManyFlows {
        /// The configured limit.
        limit: u64,
    },
    /// The connector is draining and takes no new flows.
    #[error("connector is draining and accepts no new flows")]
    Draining,
}

impl AdmitError {
    /// The kind counted in `/metrics`.
    pub fn kind(&self) -> DialErrorKind {
        match self {
            Self::TooManyFlows { .. } => DialErrorKind::TooManyFlows,
            Self::Draining => DialErrorKind::Draining,
        }
    }
}

/// Admits flows up to `maxActiveFlows` and until a drain starts. Cheap to clone; clones
/// share one count.
#[derive(Debug, Clone)]
pub struct FlowLimiter {
    inner: Arc<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    // `None` when unlimited: then only the count below is kept.
    slots: Option<(Arc<Semaphore>, u64)>,
    draining: AtomicBool,
    // A plain counter and a `Notify` rather than a watch channel: admission is on every
    // flow's path, and a watch channel takes locks on each update. The drain's waiter is
    // only woken when the count reaches zero while draining. `SeqCst` on the counter and
    // the draining flag makes that hand-off free of lost wake-ups (see `idle`).
    in_flight: AtomicU64,
    idle: Notify,
    metrics: Arc<ConnectorMetrics>,
}

/// Proof that a flow was admitted; dropping it ends the flow's slot.
#[derive(Debug)]
pub struct FlowGuard {
    inner: Arc<LimiterState>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl FlowLimiter {
    /// A limiter allowing `max_active_flows` concurrent flows (`None`: no limit), counting
    /// admissions and refusals into `metrics`.
    pub fn new(max_active_flows: Option<NonZeroU64>, metrics: Arc<ConnectorMetrics>) -> Self {
        let slots = max_active_flows.map(|n| {
            // tokio's semaphore holds at most `Semaphore::MAX_PERMITS`; a limit beyond it
            // is no limit in practice (the process runs out of descriptors first).
            let permits = usize::try_from(n.get())
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS);
            (Arc::new(Semaphore::new(permits)), n.get())
        });
        Self {
            inner: Arc::new(LimiterState {
                slots,
                draining: AtomicBool::new(false),
                in_flight: AtomicU64::new(0),
                idle: Notify::new(),
                metrics,
            }),
        }
    }

    /// Admits one flow, or says why not. Never waits: a connector over its limit tells the
    /// edge at once, so the edge can try another replica.
    pub fn try_admit(&self) -> Result<FlowGuard, AdmitError> {
        let refuse = |err: AdmitError| {
            self.inner.metrics.dial_failed(err.kind());
            Err(err)
        };
        if self.inner.draining.load(Ordering::SeqCst) {
            return refuse(AdmitError::Draining);
        }
        let slot = match &self.inner.slots {
            Some((sem, limit)) => match Arc::clone(sem).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return refuse(AdmitError::TooManyFlows { limit: *limit }),
            },
            None => None,
        };
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        self.inner.metrics.flow_started();
        Ok(FlowGuard {
            inner: Arc::clone(&self.inner),
            _slot: slot,
        })
    }

    /// Flows admitted and not yet ended.
    pub fn in_flight(&self) -> u64 {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Refuses new flows from now on. Flows admitted before keep running.
    pub(crate) fn stop_admitting(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Resolves once no flow is in flight. Only called after [`Self::stop_admitting`]:
    /// guards notify only while draining.
    ///
    /// No wake-up is lost: a guard's drop decrements, then reads the flag; this function
    /// registers its interest, then reads the count. Either the drop saw the flag (and
    /// notifies an already registered waiter) or its decrement came first in the single
    /// `SeqCst` order, and the count read here sees it.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.inner.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        // Every guard was counted in by `try_admit`, so this never goes below zero.
        let before = self.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && self.inner.draining.load(Ordering::SeqCst) {
            self.inner.idle.notify_waiters();
        }
        self.inner.metrics.flow_finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn metrics() -> Arc<ConnectorMetrics> {
        Arc::new(ConnectorMetrics::new(Uuid::nil()))
    }

    #[test]
    fn limit_is_enforced_and_released_on_drop() {
        let m = metrics();
        let limiter = FlowLimiter::new(NonZeroU64::new(2), Arc::clone(&m));
        let a = limiter.try_admit().unwrap();
        let b = limiter.try_admit().unwrap();
        assert_eq!(
            limiter.try_admit().unwrap_err(),
            AdmitError::TooManyFlows { limit: 2 }
        );
        assert_eq!(limiter.in_flight(), 2);
        assert_eq!(m.active_flows(), 2);
        drop(a);
        assert_eq!(limiter.in_flight(), 1);
        let c = limiter.try_admit().unwrap();
        assert_eq!(m.total_flows(), 3);
        assert_eq!(m.dial_errors(DialErrorKind::TooManyFlows), 1);
        drop((b, c));
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(m.active_flows(), 0);
    }

    #[test]
    fn unlimited_counts_without_refusing() {
        let limiter = FlowLimiter::new(None, metrics());
        let guards: Vec<_> = (0..1000).map(|_| limiter.try_admit().unwrap()).collect();
        assert_eq!(limiter.in_flight(), 1000);
        drop(guards);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[test]
    fn huge_limit_is_accepted() {
        let limiter = FlowLimiter::new(NonZeroU64::new(u64::MAX), metrics());
        assert!(limiter.try_admit().is_ok());
    }

    #[test]
    fn draining_refuses_new_flows_but_keeps_old_ones() {
        let m = metrics();
        let limiter = FlowLimiter::new(None, Arc::clone(&m));
        let old = limiter.try_admit().unwrap();
        limiter.stop_admitting();
        assert!(limiter.is_draining());
        assert_eq!(limiter.try_admit().unwrap_err(), AdmitError::Draining);
        assert_eq!(limiter.in_flight(), 1);
        assert_eq!(m.dial_errors(DialErrorKind::Draining), 1);
        drop(old);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[test]
    fn guards_move_across_threads() {
        let limiter = FlowLimiter::new(NonZeroU64::new(8), metrics());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let g = limiter.try_admit().unwrap();
                std::thread::spawn(move || drop(g))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(limiter.in_flight(), 0);
    }
}
