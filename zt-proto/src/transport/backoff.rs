//! Reconnect delays: capped exponential growth with full jitter, one implementation for
//! every peer that reconnects to an edge.
//!
//! After the n-th consecutive failure a peer waits a uniformly random time in
//! `[0, min(cap, base × 2ⁿ)]` ("full jitter"). The randomness matters more than the
//! growth: when an edge restarts, every connection of every connector and client loses it
//! at the same instant, and full jitter spreads their handshakes over the whole window
//! instead of sending them in synchronized waves.
//!
//! A connection that stayed up for `reset_after` was healthy, so its loss starts again
//! from quick retries; one that drops right after registering (an edge refusing it, a
//! crash loop) keeps growing toward the cap. The values are the caller's
//! ([`BackoffPolicy`]): the connector and the client each document theirs.

use std::time::Duration;

use tokio::time::Instant;

/// The three numbers that shape a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    base: Duration,
    cap: Duration,
    reset_after: Duration,
}

impl BackoffPolicy {
    /// Delays whose ceiling starts at `base` after the first failure and doubles with each
    /// further one up to `cap` (a `cap` below `base` caps the first ceiling too); an
    /// uptime of `reset_after` or more starts the growth over.
    pub const fn new(base: Duration, cap: Duration, reset_after: Duration) -> Self {
        Self {
            base,
            cap,
            reset_after,
        }
    }

    /// Ceiling of the delay after the first failure.
    pub const fn base(&self) -> Duration {
        self.base
    }

    /// Largest delay.
    pub const fn cap(&self) -> Duration {
        self.cap
    }

    /// Uptime after which a connection's loss resets the growth.
    pub const fn reset_after(&self) -> Duration {
        self.reset_after
    }
}

/// Reconnect delay state for one connection: consecutive failures, when it last
/// registered, and its own random generator (so connections' delays are independent).
///
/// The clock is tokio's, so tests run it under `tokio::time::pause()`.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
    connected_at: Option<Instant>,
    rng: fastrand::Rng,
}

impl Backoff {
    /// A backoff with `policy` and a randomly seeded generator. Each connection should
    /// have its own, so their delays are independent.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self::with_rng(policy, fastrand::Rng::new())
    }

    /// A backoff whose delays are a fixed function of `seed`, for tests and simulations.
    pub fn with_seed(policy: BackoffPolicy, seed: u64) -> Self {
        Self::with_rng(policy, fastrand::Rng::with_seed(seed))
    }

    fn with_rng(policy: BackoffPolicy, rng: fastrand::Rng) -> Self {
        Self {
            policy,
            failures: 0,
            connected_at: None,
            rng,
        }
    }

    /// The values this backoff uses.
    pub fn policy(&self) -> BackoffPolicy {
        self.policy
    }

    /// Consecutive failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The ceiling of the next delay: `min(cap, base × 2^failures)`.
    pub fn ceiling(&self) -> Duration {
        let cap = self.policy.cap;
        let mut ceiling = self.policy.base.min(cap);
        // Doubling step by step rather than multiplying by 2^failures: no factor to
        // overflow, whatever the base. A non-zero duration reaches any cap within 94
        // doublings (Duration::MAX is below 2^94 ns), so the loop stays short however
        // many failures there were.
        for _ in 0..self.failures {
            if ceiling.is_zero() || ceiling >= cap {
                break;
            }
            ceiling = ceiling.saturating_mul(2).min(cap);
        }
        ceiling
    }

    /// Records a failure and returns how long to wait before the next attempt. A
    /// registration in progress is forgotten: call [`Backoff::disconnected`] first when
    /// the failure is the loss of a registered connection, so its uptime counts.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        self.connected_at = None;
        // Whole milliseconds: tokio's timers tick in milliseconds, so finer jitter would
        // be rounded away anyway.
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

    /// The connection was lost. If it had stayed up for the policy's `reset_after`, the
    /// failure count starts over, so the next delay is short again.
    pub fn disconnected(&mut self) {
        if let Some(at) = self.connected_at.take() {
            if at.elapsed() >= self.policy.reset_after {
                self.failures = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The connector's values (zt-connector's `RECONNECT_BACKOFF`).
    const CONNECTOR: BackoffPolicy = BackoffPolicy::new(
        Duration::from_millis(250),
        Duration::from_secs(5),
        Duration::from_secs(30),
    );
    /// The client's values (zt-client's reconnect policy).
    const CLIENT: BackoffPolicy = BackoffPolicy::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
        Duration::from_secs(30),
    );

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::with_seed(CONNECTOR, 1);
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay();
        }
        assert_eq!(ceilings, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), CONNECTOR.cap());
    }

    #[test]
    fn extreme_policies_neither_overflow_nor_pass_the_cap() {
        // A nanosecond base takes 42 doublings to reach a one-hour cap: past 2^32 the
        // growth must neither wrap nor stop below the cap.
        let policy = BackoffPolicy::new(
            Duration::from_nanos(1),
            Duration::from_secs(3600),
            Duration::from_secs(30),
        );
        let mut b = Backoff::with_seed(policy, 2);
        let mut last = Duration::ZERO;
        for _ in 0..200 {
            let c = b.ceiling();
            assert!(c >= last && c <= policy.cap(), "{c:?} after {last:?}");
            last = c;
            assert!(b.next_delay() <= c);
        }
        assert_eq!(last, policy.cap());
        // A cap below the base caps the very first ceiling.
        let mut b = Backoff::with_seed(
            BackoffPolicy::new(
                Duration::from_secs(10),
                Duration::from_secs(1),
                Duration::from_secs(30),
            ),
            3,
        );
        assert_eq!(b.ceiling(), Duration::from_secs(1));
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn delays_stay_within_their_ceiling_and_are_jittered() {
        let mut b = Backoff::with_seed(CONNECTOR, 7);
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
        let mut b = Backoff::with_seed(CONNECTOR, 42);
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
        let mut a = Backoff::with_seed(CONNECTOR, 99);
        let mut b = Backoff::with_seed(CONNECTOR, 99);
        let mut c = Backoff::with_seed(CONNECTOR, 100);
        let xs: Vec<_> = (0..10).map(|_| a.next_delay()).collect();
        let ys: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        let zs: Vec<_> = (0..10).map(|_| c.next_delay()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_exactly_the_delay() {
        let mut twin = Backoff::with_seed(CONNECTOR, 5);
        let mut b = Backoff::with_seed(CONNECTOR, 5);
        for _ in 0..6 {
            let expected = twin.next_delay();
            let start = Instant::now();
            b.wait().await;
            assert_eq!(start.elapsed(), expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn long_uptime_resets_short_uptime_does_not() {
        let mut b = Backoff::with_seed(CONNECTOR, 3);
        for _ in 0..5 {
            b.next_delay();
        }
        assert_eq!(b.failures(), 5);

        b.connected();
        tokio::time::advance(Duration::from_secs(29)).await;
        b.disconnected();
        assert_eq!(b.failures(), 5, "29 s of uptime is not enough to reset");
        assert_eq!(b.ceiling(), CONNECTOR.cap());

        b.connected();
        tokio::time::advance(CONNECTOR.reset_after()).await;
        b.disconnected();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.ceiling(), CONNECTOR.base());
        assert!(b.next_delay() <= CONNECTOR.base());

        // A disconnect without a registration in between changes nothing.
        b.disconnected();
        assert_eq!(b.failures(), 1);
    }

    /// The client's sequence: a loss is `disconnected()` then `next_delay()`, a failed
    /// attempt `next_delay()` alone.
    #[tokio::test(start_paused = true)]
    async fn delays_grow_to_the_cap_and_reset_after_a_long_connection() {
        let mut b = Backoff::new(CLIENT);
        let mut ceiling = CLIENT.base();
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(d <= ceiling, "{d:?} above {ceiling:?}");
            ceiling = (ceiling * 2).min(CLIENT.cap());
        }
        assert_eq!(ceiling, CLIENT.cap());
        // A short-lived connection does not reset the growth.
        b.connected();
        tokio::time::advance(Duration::from_secs(1)).await;
        b.disconnected();
        let _ = b.next_delay();
        assert!(b.failures() > 10);
        // A long one does.
        b.connected();
        tokio::time::advance(CLIENT.reset_after()).await;
        b.disconnected();
        assert!(b.next_delay() <= CLIENT.base());
        assert_eq!(b.failures(), 1);
    }
}
