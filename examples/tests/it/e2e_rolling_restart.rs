//! A rolling restart of the seed's Deployment, done by hand with real processes: three
//! `zt tunnel --config … run` replicas (2 HA connections each); with `maxSurge: 0` and
//! `maxUnavailable: 1` each replica in turn gets SIGTERM, drains and exits 0, then its
//! replacement starts and becomes ready before the next one goes. Requests run without
//! pause through `zt client forward` the whole time, and not one may fail.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn a_rolling_restart_fails_no_request() {
    let origin = Origin::hello("127.0.0.2:0");
    let edge = Edge::start();
    let (creds, device) = edge.api_zt();
    let mut replicas: Vec<Connector> = (0..3)
        .map(|i| Connector::start(&edge, "api-zt", &creds, &format!("pod-{i}"), 2))
        .collect();
    for r in &replicas {
        r.wait_ready(2);
    }
    let (_client, forward) = client_forward(&device, origin.addr);
    hello_through(forward, "first").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let loops: Vec<_> = (0..3)
        .map(|i| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match hello_through(forward, &format!("req {i}-{n}")) {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.lock().unwrap().push(e);
                            0
                        }
                    };
                    n += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();
    // Stops and joins the loops even if an assertion below fails.
    struct StopOnDrop(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
            for t in self.1.drain(..) {
                let _ = t.join();
            }
        }
    }
    let guard = StopOnDrop(stop, loops);

    let t0 = Instant::now();
    for i in 0..3 {
        let step = Instant::now();
        let mut old = replicas.remove(0);
        old.proc.signal("TERM");
        let status = old.proc.wait_exit();
        assert!(status.success(), "pod-{i} exited with {status:?}");
        let drained = step.elapsed();
        let new = Connector::start(&edge, "api-zt", &creds, &format!("pod-{}", i + 3), 2);
        new.wait_ready(2);
        eprintln!(
            "pod-{i}: drained and exited in {drained:?}; pod-{} ready {:?} after the step began",
            i + 3,
            step.elapsed()
        );
        replicas.push(new);
        // Let requests run on each intermediate set of replicas for a while.
        std::thread::sleep(Duration::from_millis(500));
    }
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    drop(guard);
    let failures = failures.lock().unwrap().clone();
    eprintln!(
        "MEASURED rolling restart of 3 replicas in {took:?}: {} requests succeeded, {} failed",
        ok.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok.load(Ordering::Relaxed) > 0);
}
