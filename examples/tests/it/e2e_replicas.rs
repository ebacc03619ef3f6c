//! Three connector replicas of one tunnel, as the seed's Deployment runs them: three real
//! `zt tunnel --config … run` processes (2 HA connections each) behind a real `zt edge run`,
//! with a real `zt client forward` carrying continuous requests. One replica is killed with
//! SIGKILL (a node dies): the test prints how soon flows succeed again and asserts they do.
//! Another gets SIGTERM (a rolling restart): no request may fail while it drains, and it
//! exits 0.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// One request's outcome: when it started and ended (since the test began) and its error.
#[derive(Clone, Debug)]
struct Outcome {
    start: Duration,
    end: Duration,
    error: Option<String>,
}

/// Request loops running on threads until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Outcome>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(forward: std::net::SocketAddr, loops: usize, t0: Instant) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..loops)
            .map(|i| {
                let (stop, log) = (stop.clone(), log.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let start = t0.elapsed();
                        let error = hello_through(forward, &format!("req {i}-{n}")).err();
                        log.lock().unwrap().push(Outcome {
                            start,
                            end: t0.elapsed(),
                            error,
                        });
                        n += 1;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        Load { stop, log, threads }
    }

    fn snapshot(&self) -> Vec<Outcome> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `n` requests that started after `after` have succeeded.
    fn wait_successes_after(&self, after: Duration, n: usize) {
        eventually("requests succeeding", || {
            let ok = self
                .snapshot()
                .iter()
                .filter(|o| o.start >= after && o.error.is_none())
                .count();
            (ok >= n).then_some(())
        });
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// An origin that answers `hello <request>`; a request starting with `slow` is answered
/// after two seconds, so it is still in flight when a replica begins to drain.
fn origin() -> Origin {
    Origin::spawn("127.0.0.2:0", |mut s| {
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        if buf[..n].starts_with(b"slow") {
            std::thread::sleep(Duration::from_secs(2));
        }
        let _ = s.write_all(b"hello ");
        let _ = s.write_all(&buf[..n]);
    })
}

#[test]
fn replicas_survive_kill_and_drain_without_operator_action() {
    let t0 = Instant::now();
    let origin = origin();
    let edge = Edge::start();
    let (creds, device) = edge.api_zt_via_list();

    // `/ready` tracks registration: 200 with readyConnections 2 once both HA connections
    // of each replica are registered.
    let mut replicas: Vec<Option<Connector>> = (0..3)
        .map(|i| {
            Some(Connector::start(
                &edge,
                "api-zt",
                &creds,
                &format!("replica-{i}"),
                2,
            ))
        })
        .collect();
    for (i, r) in replicas.iter().enumerate() {
        let r = r.as_ref().unwrap();
        let took = r.wait_ready(2);
        eprintln!("replica-{i}: /ready 200 with 2 connections {took:?} after the check began");
    }
    let (_client, forward) = client_forward(&device, origin.addr);
    hello_through(forward, "first").unwrap();

    let load = Load::start(forward, 3, t0);
    load.wait_successes_after(t0.elapsed(), 30);

    // SIGKILL replica 0: its connections look alive to the edge until they time out, so
    // opens sent to them are retried on another replica.
    let killed_at = t0.elapsed();
    replicas[0].as_ref().unwrap().proc.signal("KILL");
    load.wait_successes_after(killed_at + Duration::from_secs(3), 30);
    let after_kill: Vec<Outcome> = load
        .snapshot()
        .into_iter()
        .filter(|o| o.end >= killed_at)
        .collect();
    let failed: Vec<&Outcome> = after_kill.iter().filter(|o| o.error.is_some()).collect();
    let first_ok = after_kill
        .iter()
        .filter(|o| o.start >= killed_at && o.error.is_none())
        .map(|o| o.end - killed_at)
        .min()
        .unwrap();
    let slowest = after_kill
        .iter()
        .filter(|o| o.start >= killed_at && o.error.is_none())
        .map(|o| o.end - o.start)
        .max()
        .unwrap();
    // A request that took about the open bound had its first open sent to the dead
    // replica and was retried on a live one.
    let retried = after_kill
        .iter()
        .filter(|o| o.error.is_none() && o.end - o.start >= Duration::from_millis(500))
        .count();
    eprintln!(
        "MEASURED kill -9: {} requests since, {} failed, {retried} slowed by a retry; first \
         new flow succeeded {first_ok:?} after the kill, slowest successful request {slowest:?}",
        after_kill.len(),
        failed.len()
    );
    for f in &failed {
        eprintln!("  failed: {f:?}");
    }
    replicas[0] = None;
    // Every flow that started once the dead replica could be noticed succeeded.
    let late_failures = load
        .snapshot()
        .into_iter()
        .filter(|o| o.start >= killed_at + Duration::from_secs(3) && o.error.is_some())
        .count();
    assert_eq!(late_failures, 0, "flows still fail 3 s after the kill");

    // SIGTERM replica 1 while requests run, some of them slow enough to be in flight
    // during the drain.
    let slow: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = hello_through(forward, &format!("slow {i}"));
                (r, t.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let term_at = t0.elapsed();
    let mut draining = replicas[1].take().unwrap();
    draining.proc.signal("TERM");
    let status = draining.proc.wait_exit();
    let exited_at = t0.elapsed();
    load.wait_successes_after(exited_at, 30);
    assert!(
        status.success(),
        "the drained replica exited with {status:?}"
    );
    for h in slow {
        let (r, took) = h.join().unwrap();
        eprintln!("in-flight slow request: {r:?} in {took:?}");
        r.unwrap();
    }
    load.stop.store(true, Ordering::Relaxed);
    let during: Vec<Outcome> = load
        .snapshot()
        .into_iter()
        .filter(|o| o.end >= term_at)
        .collect();
    let failed: Vec<&Outcome> = during.iter().filter(|o| o.error.is_some()).collect();
    eprintln!(
        "MEASURED SIGTERM drain: replica exited {:?} after SIGTERM (status {status}); \
         {} requests during and after the drain, {} failed",
        exited_at - term_at,
        during.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed during the drain: {failed:?}"
    );
    assert!(replicas[2].as_ref().unwrap().ready().unwrap().0 == 200);
}
