//! Reconnect delays: exponential growth with full jitter.
//!
//! After the n-th consecutive failure the connector waits a uniformly random time in
//! `[0, min(CAP, BASE × 2ⁿ)]` ("full jitter"). The randomness matters more than the
//! growth: when an edge restarts, every HA connection of every replica loses its edge at the
//! same instant, and full jitter spreads their handshakes over the whole window instead of
//! sending them in synchronized waves.
//!
//! The values, and why:
//! - [`Backoff::BASE`] = 250 ms: a first retry after a blip comes back almost at once.
//! - [`Backoff::CAP`] = 5 s: the edge is self-hosted and restarts in a second or two; once
//!   it is back, a connector reconnects within 5 s (2.5 s on average), and a cluster's few
//!   connectors cost an edge nothing at this rate even while it is down.
//! - [`Backoff::RESET_AFTER`] = 30 s: a connection that stayed up that long (three times
//!   the protocol's ~10 s idle timeout) was healthy, so the next failure starts again from
//!   quick retries; one that drops right after registering (an edge refusing it, a crash
//!   loop) keeps growing toward the cap.

use std::time::Duration;

use tokio::time::Instant;

/// Reconnect delay state for one edge connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    reset_after: Duration,
    failures: u32,
    connected_at: Option<Instant>,
    rng: fastrand::Rng,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// Delay ceiling after the first failure.
    pub const BASE: Duration = Duration::from_millis(250);
    /// Largest delay.
    pub const CAP: Duration = Duration::from_secs(5);
    /// Uptime after which a connection's loss resets the growth.
    pub const RESET_AFTER: Duration = Duration::from_secs(30);

    /// A backoff with the documented values and a randomly seeded generator. Each
    /// connection should have its own, so their delays are independent.
    pub fn new() -> Self {
        Self::with_rng(fastrand::Rng::new())
    }

    /// A backoff whose delays are a fixed function of `seed`, for tests and simulations.
    pub fn with_seed(seed: u64) -> Self {
        Self::with_rng(fastrand::Rng::with_seed(seed))
    }

    fn with_rng(rng: fastrand::Rng) -> Self {
        Self {
            base: Self::BASE,
            cap: Self::CAP,
            reset_after: Self::RESET_AFTER,
            failures: 0,
            connected_at: None,
            rng,
        }
    }

    /// Consecutive failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The ceiling of the next delay: `min(CAP, BASE × 2^failures)`.
    pub fn ceiling(&self) -> Duration {
        // Past 2^20 × BASE the cap has long been reached; stopping the shift there keeps
        // the multiplication from overflowing.
        let factor = 1u32 << self.failures.min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        self.connected_at = None;
        // Whole milliseconds: tokio's timers tick in milliseconds, so finer jitter would
        // be rounded away anyway. The ceiling is at most CAP, far below u64::MAX ms.
        let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.rng.u64(0..=ceiling_ms))
    }

    /// Records a failure and sleeps for the delay it yields.
    pub async fn wait(&mut self) {
        let delay = self.next_delay();
        tokio::time::sleep(delay).await;
    }

    /// The connection registered: its uptime starts now.
    pub fn connected(&mut self) {
        self.connected_at = Some(Instant::now());
    }

    /// The connection was lost. If it had stayed up for [`Backoff::RESET_AFTER`] the
    /// failure count starts over, so the next delay is short again.
    pub fn disconnected(&mut self) {
        if let Some(at) = self.connected_at.take() {
            if at.elapsed() >= self.reset_after {
                self.failures = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::with_seed(1);
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay();
        }
        assert_eq!(ceilings, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Backoff::CAP);
    }

    #[test]
    fn delays_stay_within_their_ceiling_and_are_jittered() {
        let mut b = Backoff::with_seed(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
            seen.insert(d);
        }
        // Full jitter: values are spread, not a fixed schedule.
        assert!(seen.len() > 150, "only {} distinct delays", seen.len());
    }

    #[test]
    fn full_jitter_is_uniform_over_the_window() {
        let mut b = Backoff::with_seed(42);
        for _ in 0..10 {
            b.next_delay();
        }
        let n = 10_000u32;
        let total: Duration = (0..n).map(|_| b.next_delay()).sum();
        let mean = total / n;
        // Uniform on [0, 5 s] has mean 2.5 s; 10 000 seeded samples land well within 5 %.
        assert!(
            mean > Duration::from_millis(2375) && mean < Duration::from_millis(2625),
            "{mean:?}"
        );
    }

    #[test]
    fn same_seed_same_delays() {
        let mut a = Backoff::with_seed(99);
        let mut b = Backoff::with_seed(99);
        let mut c = Backoff::with_seed(100);
        let xs: Vec<_> = (0..10).map(|_| a.next_delay()).collect();
        let ys: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        let zs: Vec<_> = (0..10).map(|_| c.next_delay()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_exactly_the_delay() {
        let mut twin = Backoff::with_seed(5);
        let mut b = Backoff::with_seed(5);
        for _ in 0..6 {
            let expected = twin.next_delay();
            let start = Instant::now();
            b.wait().await;
            assert_eq!(start.elapsed(), expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn long_uptime_resets_short_uptime_does_not() {
        let mut b = Backoff::with_seed(3);
        for _ in 0..5 {
            b.next_delay();
        }
        assert_eq!(b.failures(), 5);

        b.connected();
        tokio::time::advance(Duration::from_secs(29)).await;
        b.disconnected();
        assert_eq!(b.failures(), 5, "29 s of uptime is not enough to reset");
        assert_eq!(b.ceiling(), Backoff::CAP);

        b.connected();
        tokio::time::advance(Backoff::RESET_AFTER).await;
        b.disconnected();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.ceiling(), Backoff::BASE);
        assert!(b.next_delay() <= Backoff::BASE);

        // A disconnect without a registration in between changes nothing.
        b.disconnected();
        assert_eq!(b.failures(), 1);
    }
}
