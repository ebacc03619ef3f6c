//! The connector's reconnect delays. The full-jitter backoff itself is
//! [`zt_proto::Backoff`], shared with the client; this module holds the connector's values
//! and the deprecated [`Backoff`] that kept them before the move.
//!
//! The values, and why:
//! - base 250 ms: a first retry after a blip comes back almost at once.
//! - cap 5 s: the edge is self-hosted and restarts in a second or two; once it is back, a
//!   connector reconnects within 5 s (2.5 s on average), and a cluster's few connectors
//!   cost an edge nothing at this rate even while it is down.
//! - reset after 30 s: a connection that stayed up that long (three times the protocol's
//!   ~10 s idle timeout) was healthy, so the next failure starts again from quick
//!   retries; one that drops right after registering (an edge refusing it, a crash loop)
//!   keeps growing toward the cap.

// The deprecated type's own definition and impls use it, which is no reason to warn.
#![allow(deprecated)]

use std::time::Duration;

use zt_proto::BackoffPolicy;

/// The connector's reconnect delays: 250 ms base, 5 s cap, reset after 30 s of uptime.
/// Each edge connection keeps its own `zt_proto::Backoff::new(RECONNECT_BACKOFF)`.
pub const RECONNECT_BACKOFF: BackoffPolicy = BackoffPolicy::new(
    Duration::from_millis(250),
    Duration::from_secs(5),
    Duration::from_secs(30),
);

/// Reconnect delay state for one edge connection, with the connector's values.
///
/// Kept for the services that used it before the backoff moved to zt-proto; it behaves
/// exactly as before, delegating to [`zt_proto::Backoff`] with [`RECONNECT_BACKOFF`].
#[deprecated(
    note = "use `zt_proto::Backoff::new(zt_connector::RECONNECT_BACKOFF)` (or `with_seed`); \
            the methods are the same"
)]
#[derive(Debug, Clone)]
pub struct Backoff {
    inner: zt_proto::Backoff,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// Delay ceiling after the first failure.
    pub const BASE: Duration = RECONNECT_BACKOFF.base();
    /// Largest delay.
    pub const CAP: Duration = RECONNECT_BACKOFF.cap();
    /// Uptime after which a connection's loss resets the growth.
    pub const RESET_AFTER: Duration = RECONNECT_BACKOFF.reset_after();

    /// A backoff with the documented values and a randomly seeded generator. Each
    /// connection should have its own, so their delays are independent.
    pub fn new() -> Self {
        Self {
            inner: zt_proto::Backoff::new(RECONNECT_BACKOFF),
        }
    }

    /// A backoff whose delays are a fixed function of `seed`, for tests and simulations.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            inner: zt_proto::Backoff::with_seed(RECONNECT_BACKOFF, seed),
        }
    }

    /// Consecutive failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.inner.failures()
    }

    /// The ceiling of the next delay: `min(CAP, BASE × 2^failures)`.
    pub fn ceiling(&self) -> Duration {
        self.inner.ceiling()
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.inner.next_delay()
    }

    /// Records a failure and sleeps for the delay it yields.
    pub async fn wait(&mut self) {
        self.inner.wait().await;
    }

    /// The connection registered: its uptime starts now.
    pub fn connected(&mut self) {
        self.inner.connected();
    }

    /// The connection was lost. If it had stayed up for [`Backoff::RESET_AFTER`] the
    /// failure count starts over, so the next delay is short again.
    pub fn disconnected(&mut self) {
        self.inner.disconnected();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The behaviour itself is tested with `zt_proto::Backoff`; this checks that the
    /// deprecated type still has the connector's values and is that backoff.
    #[tokio::test(start_paused = true)]
    async fn the_deprecated_backoff_is_the_shared_one_with_the_connector_values() {
        assert_eq!(
            (Backoff::BASE, Backoff::CAP, Backoff::RESET_AFTER),
            (
                Duration::from_millis(250),
                Duration::from_secs(5),
                Duration::from_secs(30)
            )
        );
        let mut old = Backoff::with_seed(11);
        let mut new = zt_proto::Backoff::with_seed(RECONNECT_BACKOFF, 11);
        for _ in 0..8 {
            assert_eq!(old.ceiling(), new.ceiling());
            assert_eq!(old.next_delay(), new.next_delay());
        }
        assert_eq!(old.failures(), 8);
        assert_eq!(old.ceiling(), Backoff::CAP);
        old.connected();
        tokio::time::advance(Backoff::RESET_AFTER).await;
        old.disconnected();
        assert_eq!(old.failures(), 0);
        assert_eq!(old.ceiling(), Backoff::BASE);
        let start = tokio::time::Instant::now();
        old.wait().await;
        assert!(start.elapsed() <= Backoff::BASE);
        assert_eq!(Backoff::default().failures(), 0);
    }
}
