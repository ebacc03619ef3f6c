//! Graceful drain on SIGTERM.
//!
//! Kubernetes sends SIGTERM, waits `terminationGracePeriodSeconds`, then kills. A rolling
//! restart fails no request only if the connector, on SIGTERM, stops taking new flows at
//! once (the edge sends them to other replicas), lets the flows it already serves finish,
//! and exits when they have — or when the grace period says it must. A second SIGTERM (an
//! impatient operator) ends the wait at once.
//!
//! The order the runtime follows:
//! 1. first signal → [`Drain::start`] (new flows are refused from this instant);
//! 2. tell the edge on every connection that this connector is draining;
//! 3. [`Drain::wait`] with the next signal as the way to cut it short;
//! 4. close the edge connections and exit 0.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::flows::FlowLimiter;

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DrainOutcome {
    /// Every in-flight flow finished within the grace period.
    Drained,
    /// The grace period ran out with flows still in flight.
    GraceExpired {
        /// Flows still in flight when the grace period ended.
        abandoned: u64,
    },
    /// The wait was cut short (a second signal).
    Forced {
        /// Flows still in flight when the wait was cut short.
        abandoned: u64,
    },
}

/// Drains a connector's flows: refuses new ones, then waits for those in flight up to the
/// grace period.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use zt_connector::{ConnectorMetrics, Drain, DrainOutcome, FlowLimiter};
///
/// let metrics = Arc::new(ConnectorMetrics::new(uuid::Uuid::new_v4()));
/// let flows = FlowLimiter::new(None, metrics);
/// let drain = Drain::new(flows.clone(), Duration::from_secs(30));
///
/// let flow = flows.try_admit().unwrap();
/// drain.start();
/// assert!(flows.try_admit().is_err()); // no new flows once draining
/// drop(flow); // the last in-flight flow ends
/// assert_eq!(drain.wait(std::future::pending()).await, DrainOutcome::Drained);
/// # }
/// ```
#[derive(Debug)]
pub struct Drain {
    flows: FlowLimiter,
    grace: Duration,
    started: OnceLock<Instant>,
}

impl Drain {
    /// A drain of `flows` allowed to last `grace` (the config's `grace-period`).
    pub fn new(flows: FlowLimiter, grace: Duration) -> Self {
        Self {
            flows,
            grace,
            started: OnceLock::new(),
        }
    }

    /// Refuses new flows from now on and starts the grace period. Returns `false` if the
    /// drain had already started (the grace period is not restarted).
    pub fn start(&self) -> bool {
        let mut first = false;
        self.started.get_or_init(|| {
            first = true;
            Instant::now()
        });
        self.flows.stop_admitting();
        if first {
            info!(
                in_flight = self.flows.in_flight(),
                grace = %crate::duration::format_duration(self.grace),
                "draining: refusing new flows"
            );
        }
        first
    }

    /// Whether [`Drain::start`] has been called.
    pub fn is_started(&self) -> bool {
        self.started.get().is_some()
    }

    /// Waits until no flow is in flight, the grace period (counted from
    /// [`Drain::start`]) runs out, or `force` completes, whichever comes first. Starts the
    /// drain if it has not started.
    pub async fn wait(&self, force: impl Future<Output = ()>) -> DrainOutcome {
        self.start();
        let started = self.started.get().copied().unwrap_or_else(Instant::now);
        let deadline = started + self.grace;
        let outcome = tokio::select! {
            // Checked first so that an already idle connector reports `Drained` even when
            // the grace period is zero or the force signal is already there.
            biased;
            () = self.flows.idle() => DrainOutcome::Drained,
            () = tokio::time::sleep_until(deadline) => DrainOutcome::GraceExpired {
                abandoned: self.flows.in_flight(),
            },
            () = force => DrainOutcome::Forced {
                abandoned: self.flows.in_flight(),
            },
        };
        match outcome {
            DrainOutcome::Drained => info!("drained: no flows in flight"),
            DrainOutcome::GraceExpired { abandoned } => {
                warn!(abandoned, "grace period over with flows still in flight")
            }
            DrainOutcome::Forced { abandoned } => {
                warn!(abandoned, "drain cut short by a second signal")
            }
        }
        outcome
    }
}

/// SIGTERM and SIGINT (Ctrl-C), as one stream of shutdown requests. Create it at start-up,
/// before the runtime does anything else: from then on these signals no longer kill the
/// process but are delivered here.
#[derive(Debug)]
pub struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers. Fails only if the OS refuses them.
    pub fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Resolves at the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => info!("SIGTERM received"),
                _ = self.int.recv() => info!("SIGINT received"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ConnectorMetrics;
    use std::sync::Arc;
    use tokio::sync::oneshot;

    fn flows() -> FlowLimiter {
        FlowLimiter::new(None, Arc::new(ConnectorMetrics::new(uuid::Uuid::nil())))
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connector_drains_at_once() {
        let drain = Drain::new(flows(), Duration::from_secs(30));
        let start = Instant::now();
        assert_eq!(
            drain.wait(std::future::pending()).await,
            DrainOutcome::Drained
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_in_flight_flows_to_finish() {
        let flows = flows();
        let drain = Drain::new(flows.clone(), Duration::from_secs(30));
        let a = flows.try_admit().unwrap();
        let b = flows.try_admit().unwrap();
        assert!(drain.start());
        assert!(!drain.start(), "a second start is not a new drain");
        assert!(flows.try_admit().is_err());
        let start = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(a);
            tokio::time::sleep(Duration::from_secs(4)).await;
            drop(b);
        });
        assert_eq!(
            drain.wait(std::future::pending()).await,
            DrainOutcome::Drained
        );
        assert_eq!(start.elapsed(), Duration::from_secs(7));
        assert_eq!(flows.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn grace_period_bounds_the_wait_from_start() {
        let flows = flows();
        let drain = Drain::new(flows.clone(), Duration::from_secs(30));
        let _stuck = flows.try_admit().unwrap();
        let _other = flows.try_admit().unwrap();
        let start = Instant::now();
        drain.start();
        // Telling the edge takes a while; the grace period already runs.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            drain.wait(std::future::pending()).await,
            DrainOutcome::GraceExpired { abandoned: 2 }
        );
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn second_signal_cuts_the_wait_short() {
        let flows = flows();
        let drain = Drain::new(flows.clone(), Duration::from_secs(30));
        let _stuck = flows.try_admit().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = tx.send(());
        });
        let start = Instant::now();
        let outcome = drain
            .wait(async {
                let _ = rx.await;
            })
            .await;
        assert_eq!(outcome, DrainOutcome::Forced { abandoned: 1 });
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flows_ending_on_other_threads_wake_the_drain() {
        // Many rounds of guards dropped on other threads while the drain waits: a lost
        // wake-up would leave `wait` hanging until the (hour-long) grace period.
        for _ in 0..50 {
            let flows = flows();
            let drain = Drain::new(flows.clone(), Duration::from_secs(3600));
            let guards: Vec<_> = (0..64).map(|_| flows.try_admit().unwrap()).collect();
            let mut chunks: Vec<Vec<_>> = (0..4).map(|_| Vec::new()).collect();
            for (i, g) in guards.into_iter().enumerate() {
                chunks[i % 4].push(g);
            }
            drain.start();
            let threads: Vec<_> = chunks
                .into_iter()
                .map(|chunk| std::thread::spawn(move || chunk.into_iter().for_each(drop)))
                .collect();
            let outcome =
                tokio::time::timeout(Duration::from_secs(20), drain.wait(std::future::pending()))
                    .await
                    .expect("drain finished");
            assert_eq!(outcome, DrainOutcome::Drained);
            for t in threads {
                t.join().unwrap();
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn zero_grace_with_flows_expires_at_once() {
        let flows = flows();
        let drain = Drain::new(flows.clone(), Duration::ZERO);
        let _stuck = flows.try_admit().unwrap();
        assert_eq!(
            drain.wait(std::future::pending()).await,
            DrainOutcome::GraceExpired { abandoned: 1 }
        );
    }
}
