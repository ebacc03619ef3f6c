//! The SIGTERM path with real signals sent to this test process: the first signal starts
//! the drain, a second one cuts it short. One test only, since signals reach the whole
//! process and parallel tests would see each other's.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use zt_connector::{
    AdmitError, ConnectorMetrics, Drain, DrainOutcome, FlowLimiter, ShutdownSignals,
};

const DEADLINE: Duration = Duration::from_secs(20);

fn send(signal: &str) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{signal} {}", std::process::id()))
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn first_signal_drains_second_signal_forces() {
    let mut signals = ShutdownSignals::new().unwrap();
    let metrics = Arc::new(ConnectorMetrics::new(uuid::Uuid::new_v4()));
    let flows = FlowLimiter::new(None, metrics);
    // A long grace period: only the second signal can end this drain.
    let drain = Drain::new(flows.clone(), Duration::from_secs(3600));
    let in_flight = flows.try_admit().unwrap();

    send("TERM");
    tokio::time::timeout(DEADLINE, signals.recv())
        .await
        .unwrap();
    assert!(drain.start());
    assert_eq!(flows.try_admit().unwrap_err(), AdmitError::Draining);

    send("INT");
    let outcome = tokio::time::timeout(DEADLINE, drain.wait(signals.recv()))
        .await
        .unwrap();
    assert_eq!(outcome, DrainOutcome::Forced { abandoned: 1 });
    drop(in_flight);
    assert_eq!(flows.in_flight(), 0);
}
