//! Rolling restart and kill -9 under load (issue 9, item 9), through the real binaries:
//! three connector replicas (2 HA connections each) serve one tunnel while about fifty
//! requests a second flow through `zt client forward`, each request a new flow.
//! - Each replica in turn gets SIGTERM, drains and exits 0, and its replacement starts and
//!   becomes ready before the next one goes: not one request may fail.
//! - Then one replica is killed with SIGKILL while long-lived flows are open through it:
//!   new requests keep succeeding (the edge retries an unanswered open on another
//!   connection), and the flows that were open through the dead replica fail with an
//!   error once the edge's idle timeout ends its connections; none hangs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::faults::*;
use crate::support::*;

/// Long-lived flows: each sends a byte and expects it back every 200 ms until it fails.
fn long_flow(
    forward: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Result<u64, (String, Instant)>> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(forward).map_err(|e| (e.to_string(), Instant::now()))?;
        s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        let mut rounds = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut b = [rounds as u8];
            let r = s
                .write_all(&b)
                .and_then(|()| s.read_exact(&mut b))
                .map_err(|e| (e.to_string(), Instant::now()));
            match r {
                Ok(()) if b[0] == rounds as u8 => rounds += 1,
                Ok(()) => return Err((format!("wrong echo {}", b[0]), Instant::now())),
                Err(e) => return Err(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(rounds)
    })
}

fn active_flows(c: &Connector) -> u64 {
    http_get(c.metrics, "/metrics")
        .and_then(|(_, page)| metric(&page, "zt_connector_active_flows"))
        .unwrap_or(0.0) as u64
}

#[test]
fn rolling_restart_fails_nothing_and_kill_9_orphans_fail_instead_of_hanging() {
    let hello = Origin::hello("127.0.0.2:0");
    let echo = Origin::spawn("127.0.0.2:0", |mut s| {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let setup = Setup::new();
    let edge = &setup.edge;
    let mut replicas: Vec<Connector> = (0..3)
        .map(|i| Connector::start(edge, "api-zt", &setup.creds, &format!("pod-{i}"), 2))
        .collect();
    for r in &replicas {
        r.wait_ready(2);
    }
    let (_client, forward) = client_forward(&setup.device, hello.addr);
    let (_client_echo, forward_echo) = client_forward(&setup.device, echo.addr);
    hello_through(forward, "first").unwrap();

    // About fifty requests a second: three loops, each request then 50 ms of pause.
    let mut load = Load::start(forward, 3, Duration::from_millis(50));
    std::thread::sleep(Duration::from_secs(1));

    let t0 = Instant::now();
    let mut steps = Vec::new();
    for i in 0..3 {
        let step = Instant::now();
        let mut old = replicas.remove(0);
        old.proc.signal("TERM");
        let status = old.proc.wait_exit();
        assert!(status.success(), "pod-{i} exited with {status:?}");
        let drained = step.elapsed();
        let new = Connector::start(edge, "api-zt", &setup.creds, &format!("pod-{}", i + 3), 2);
        new.wait_ready(2);
        steps.push((drained, step.elapsed()));
        replicas.push(new);
        std::thread::sleep(Duration::from_secs(1));
    }
    let rolled = t0.elapsed();
    let rolling_ok = load.ok.load(std::sync::atomic::Ordering::Relaxed);
    let rolling_failures = load.failures();
    let rate = rolling_ok as f64 / (rolled + Duration::from_secs(1)).as_secs_f64();
    eprintln!(
        "MEASURED rolling restart under load: 3 replicas in {rolled:?} (SIGTERM to exit, then \
         to the replacement ready: {steps:?}); {rolling_ok} requests succeeded (about {rate:.0} \
         a second), {} failed",
        rolling_failures.len()
    );
    assert!(
        rolling_failures.is_empty(),
        "failed requests: {rolling_failures:?}"
    );

    // Long-lived flows spread over the replicas, then kill -9 of one that carries some.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let long: Vec<_> = (0..12)
        .map(|_| long_flow(forward_echo, stop.clone()))
        .collect();
    // The connectors' active flows include the requests in flight, so this spread is
    // only used to pick a replica that surely carries long flows.
    let spread = eventually("the long flows reach the connectors", || {
        let n: Vec<u64> = replicas.iter().map(active_flows).collect();
        (n.iter().sum::<u64>() >= 12).then_some(n)
    });
    let victim = (0..replicas.len()).max_by_key(|&i| spread[i]).unwrap();
    let mut dead = replicas.remove(victim);
    let killed = Instant::now();
    let before_kill = load.ok.load(std::sync::atomic::Ordering::Relaxed);
    dead.proc.signal("KILL");
    dead.proc.wait_exit();

    // New flows keep working: wait for successes after the kill (below: the first
    // request started after it to succeed, and the slowest).
    let first_ok = wait_until(Duration::from_secs(60), || {
        load.ok.load(std::sync::atomic::Ordering::Relaxed) > before_kill + 1
    });
    // The orphans fail once the edge's idle timeout (10 s) ends the dead replica's
    // connections, while the others keep echoing; wait for the first, then a little more.
    let orphans_failed = wait_until(Duration::from_secs(60), || {
        long.iter().any(|h| h.is_finished())
    });
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.stop();
    let results: Vec<_> = long.into_iter().map(|h| h.join().unwrap()).collect();
    let failed_after: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|(_, at)| at.saturating_duration_since(killed))
        .collect();
    let errors: Vec<&String> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|(e, _)| e)
        .collect();
    let survivors: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let lost_in_audit = edge
        .flow_audit_lines()
        .iter()
        .filter(|v| {
            v["destination"] == echo.addr.to_string() && v["close_reason"] == "connection_lost"
        })
        .count();
    let after_kill: Vec<Duration> = load
        .latencies
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t >= killed)
        .map(|(_, d)| *d)
        .collect();
    let slowest = after_kill.iter().max().copied().unwrap_or_default();
    let first_new_ok = load
        .latencies
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t >= killed)
        .map(|(t, d)| (*t + *d).saturating_duration_since(killed))
        .min();
    let retried = after_kill
        .iter()
        .filter(|d| **d >= Duration::from_millis(500))
        .count();
    let failures = load.failures();
    eprintln!(
        "MEASURED kill -9 of one of three replicas under load: the first new request succeeded \
         {first_new_ok:?} after the kill; {} requests after it, {} failed, {retried} slowed by a \
         retry (≥ 0.5 s), the slowest {slowest:?}; of 12 long flows {} ran through the \
         killed replica and failed, {failed_after:?} after the kill, with {errors:?}; the \
         other {} kept echoing ({survivors:?} rounds)",
        after_kill.len(),
        failures.len(),
        failed_after.len(),
        survivors.len(),
    );
    assert!(
        failures.is_empty(),
        "requests failed after the kill: {failures:?}"
    );
    assert!(first_ok.is_some(), "no request succeeded after the kill");
    assert!(orphans_failed.is_some(), "the orphaned flows did not end");
    assert!(
        !failed_after.is_empty(),
        "no long flow ran through the killed replica"
    );
    assert!(
        failed_after.iter().all(|d| *d < Duration::from_secs(30)),
        "an orphaned flow took too long to fail: {failed_after:?}"
    );
    assert_eq!(
        lost_in_audit,
        failed_after.len(),
        "the edge audits each orphaned flow as connection_lost"
    );
    assert_eq!(survivors.len() + failed_after.len(), 12, "{results:?}");
}
