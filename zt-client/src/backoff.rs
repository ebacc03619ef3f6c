//! Reconnect delays: capped exponential growth with full jitter.
//!
//! After the n-th consecutive failure the client waits a uniformly random time in
//! `[0, min(CAP, BASE × 2ⁿ)]`. When an edge restarts every client of a team loses it at
//! the same instant; the jitter spreads their handshakes instead of sending them in waves.
//! - `BASE` = 200 ms: a blip is ridden out almost at once.
//! - `CAP` = 5 s: a self-hosted edge restarts in a second or two; a person waiting for
//!   kubectl should not wait much longer than that once it is back.
//! - `RESET_AFTER` = 30 s: a connection that lived that long was healthy, so its loss
//!   starts again from quick retries; one dropped right after registering keeps growing.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Backoff {
    failures: u32,
    connected_at: Option<Instant>,
    rng: fastrand::Rng,
}

impl Backoff {
    pub(crate) const BASE: Duration = Duration::from_millis(200);
    pub(crate) const CAP: Duration = Duration::from_secs(5);
    pub(crate) const RESET_AFTER: Duration = Duration::from_secs(30);

    pub(crate) fn new() -> Self {
        Self {
            failures: 0,
            connected_at: None,
            rng: fastrand::Rng::new(),
        }
    }

    /// A connection registered now.
    pub(crate) fn connected(&mut self) {
        self.connected_at = Some(Instant::now());
    }

    /// The connection was lost or an attempt failed: the time to wait before the next try.
    pub(crate) fn next_delay(&mut self) -> Duration {
        if let Some(at) = self.connected_at.take() {
            if at.elapsed() >= Self::RESET_AFTER {
                self.failures = 0;
            }
        }
        // Past 2^16 × BASE the cap has long been reached; the bound keeps the shift small.
        let ceiling = Self::BASE
            .saturating_mul(1u32 << self.failures.min(16))
            .min(Self::CAP);
        self.failures = self.failures.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.rng.u64(0..=millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delays_grow_to_the_cap_and_reset_after_a_long_connection() {
        let mut b = Backoff::new();
        let mut ceiling = Backoff::BASE;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(d <= ceiling, "{d:?} above {ceiling:?}");
            ceiling = (ceiling * 2).min(Backoff::CAP);
        }
        assert_eq!(ceiling, Backoff::CAP);
        // A short-lived connection does not reset the growth.
        b.connected();
        tokio::time::advance(Duration::from_secs(1)).await;
        let _ = b.next_delay();
        assert!(b.failures > 10);
        // A long one does.
        b.connected();
        tokio::time::advance(Backoff::RESET_AFTER).await;
        assert!(b.next_delay() <= Backoff::BASE);
        assert_eq!(b.failures, 1);
    }
}
