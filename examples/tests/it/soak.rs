//! Soak (issue 9, item 14; not run in CI): the real edge, two connector replicas behind a
//! relay that loses 1 % of the packets each way, and a client, under steady load for a
//! long time, with one connector replica restarted (SIGTERM, drain, start) every interval.
//! It samples the resident memory, open file descriptors and threads of every process and
//! reports the memory growth after warm-up and the descriptor counts over the run.
//!
//! Run it with `benches/soak.sh [SECONDS] [RESTART_EVERY_SECONDS]` (defaults 1800 and 300),
//! or directly:
//! `ZT_SOAK_SECS=1800 cargo test -p zt-examples --test it -- --ignored --nocapture --exact
//! soak::soak_with_loss_and_connector_restarts`.
//! Warm-up is the first restart interval; the figures compare the end of warm-up with the
//! rest of the run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::faults::*;
use crate::support::*;
use zt_testkit::impair::{Impair, Impairment};

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default),
    )
}

const SAMPLE_EVERY: Duration = Duration::from_secs(10);

#[test]
#[ignore = "a long soak, run by benches/soak.sh"]
fn soak_with_loss_and_connector_restarts() {
    let duration = env_secs("ZT_SOAK_SECS", 1800);
    let restart_every = env_secs("ZT_SOAK_RESTART_SECS", 300);
    let warm_up = restart_every.min(duration / 2);
    eprintln!(
        "SOAK: {duration:?} with 1% loss each way on the edge-connector path, a connector \
         restart every {restart_every:?}, warm-up {warm_up:?}"
    );
    let hello = Origin::hello("127.0.0.2:0");
    let hashing = seeded_hashing_origin("127.0.0.2:0");
    let setup = Setup::new();
    let relay = Impair::start("soak", setup.edge.listen);
    relay.set_both(Impairment {
        loss: 0.01,
        ..Impairment::NONE
    });
    let mut generation = 0u32;
    let mut start_replica = |setup: &Setup| {
        generation += 1;
        let name = format!("replica-{generation}");
        let c = Connector::start_via(&setup.edge, relay.addr, "api-zt", &setup.creds, &name, 2);
        c.wait_ready(2);
        (name, c)
    };
    let mut replicas = vec![start_replica(&setup), start_replica(&setup)];
    let (client, forward) = client_forward(&setup.device, hello.addr);
    let (_client_t, forward_t) = client_forward(&setup.device, hashing.addr);
    hello_through(forward, "first").unwrap();

    // Load: requests from four threads (each a new flow; about 60 a second), and 1 MiB
    // checked transfers, one a second. Moderate on purpose: a soak looks for leaks and
    // drift over time, not for the peak rate.
    let mut load = Load::start(forward, 4, Duration::from_millis(50));
    let stop = Arc::new(AtomicBool::new(false));
    let transfers_ok = Arc::new(AtomicU64::new(0));
    let transfer_failures = Arc::new(Mutex::new(Vec::new()));
    let transfers = {
        let (stop, ok, failures) = (
            stop.clone(),
            transfers_ok.clone(),
            transfer_failures.clone(),
        );
        std::thread::spawn(move || {
            let mut seed = 1u64;
            while !stop.load(Ordering::Relaxed) {
                match transfer(forward_t, seed, 1024 * 1024, Duration::from_secs(30)) {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failures.lock().unwrap().push(e);
                        0
                    }
                };
                seed += 1;
                std::thread::sleep(Duration::from_millis(1000));
            }
        })
    };

    let edge_pid = setup.edge.proc.as_ref().unwrap().pid();
    let t0 = Instant::now();
    let mut next_restart = restart_every;
    let mut next_sample = Duration::ZERO;
    let mut edge_samples: Vec<(Duration, Resources)> = Vec::new();
    let mut client_samples: Vec<(Duration, Resources)> = Vec::new();
    // Each replica's last sample before it was stopped: (name, age, resources).
    let mut retired: Vec<(String, Resources)> = Vec::new();
    let mut connector_samples: Vec<(Duration, Vec<Resources>)> = Vec::new();
    while t0.elapsed() < duration {
        let now = t0.elapsed();
        if now >= next_sample {
            next_sample += SAMPLE_EVERY;
            let edge = Resources::of(edge_pid);
            let cl = Resources::of(client.pid());
            let conns: Vec<_> = replicas
                .iter()
                .map(|(_, c)| Resources::of(c.proc.pid()))
                .collect();
            eprintln!(
                "SOAK t={:>5}s edge rss {} KiB fds {} threads {} | client rss {} KiB fds {} | \
                 connectors {} | requests ok {} failed {} | transfers ok {} failed {}",
                now.as_secs(),
                edge.rss_kib,
                edge.fds,
                edge.threads,
                cl.rss_kib,
                cl.fds,
                replicas
                    .iter()
                    .zip(&conns)
                    .map(|((n, _), r)| format!("{n} rss {} KiB fds {}", r.rss_kib, r.fds))
                    .collect::<Vec<_>>()
                    .join(", "),
                load.ok.load(Ordering::Relaxed),
                load.failures().len(),
                transfers_ok.load(Ordering::Relaxed),
                transfer_failures.lock().unwrap().len(),
            );
            edge_samples.push((now, edge));
            client_samples.push((now, cl));
            connector_samples.push((now, conns));
        }
        if now >= next_restart {
            next_restart += restart_every;
            // The older replica goes, as a rolling update would replace it.
            let (name, mut old) = replicas.remove(0);
            let last = Resources::of(old.proc.pid());
            let t = Instant::now();
            old.proc.signal("TERM");
            let status = old.proc.wait_exit();
            eprintln!(
                "SOAK {name} stopped (SIGTERM) in {:?}, exit {status:?}",
                t.elapsed()
            );
            retired.push((name, last));
            drop(old);
            let t = Instant::now();
            replicas.push(start_replica(&setup));
            eprintln!("SOAK {} ready in {:?}", replicas[1].0, t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    load.stop();
    transfers.join().unwrap();

    // Figures: growth of the long-lived processes from the end of warm-up.
    let growth = |samples: &[(Duration, Resources)]| {
        let after: Vec<_> = samples.iter().filter(|(t, _)| *t >= warm_up).collect();
        let base = after.first().map(|(_, r)| r.rss_kib).unwrap_or(0).max(1);
        let end = after.last().map(|(_, r)| r.rss_kib).unwrap_or(0);
        let max = after.iter().map(|(_, r)| r.rss_kib).max().unwrap_or(0);
        let fds: Vec<_> = after.iter().map(|(_, r)| r.fds).collect();
        (
            base,
            end,
            max,
            (end as f64 - base as f64) * 100.0 / base as f64,
            fds.iter().min().copied().unwrap_or(0),
            fds.iter().max().copied().unwrap_or(0),
            fds.first().copied().unwrap_or(0),
            fds.last().copied().unwrap_or(0),
        )
    };
    let (eb, ee, em, eg, efmin, efmax, ef0, ef1) = growth(&edge_samples);
    let (cb, ce, cm, cg, cfmin, cfmax, cf0, cf1) = growth(&client_samples);
    let failures = load.failures();
    let tfail = transfer_failures.lock().unwrap().clone();
    eprintln!("relay counters: {}", relay.summary());
    eprintln!(
        "MEASURED soak {duration:?}: requests ok {} failed {}; 1 MiB transfers ok {} failed {}; \
         {} connector restarts",
        load.ok.load(Ordering::Relaxed),
        failures.len(),
        transfers_ok.load(Ordering::Relaxed),
        tfail.len(),
        retired.len()
    );
    eprintln!(
        "MEASURED soak edge: RSS {eb} KiB after warm-up, {ee} KiB at the end ({eg:+.1}%), \
         peak {em} KiB; fds {ef0} after warm-up, {ef1} at the end (range {efmin}–{efmax})"
    );
    eprintln!(
        "MEASURED soak client: RSS {cb} KiB after warm-up, {ce} KiB at the end ({cg:+.1}%), \
         peak {cm} KiB; fds {cf0} after warm-up, {cf1} at the end (range {cfmin}–{cfmax})"
    );
    eprintln!(
        "MEASURED soak connectors, each replica just before its SIGTERM: {}",
        retired
            .iter()
            .map(|(n, r)| format!("{n} rss {} KiB fds {}", r.rss_kib, r.fds))
            .collect::<Vec<_>>()
            .join("; ")
    );
    if let Some((_, last)) = connector_samples.last() {
        eprintln!(
            "MEASURED soak connectors at the end: {}",
            last.iter()
                .map(|r| format!("rss {} KiB fds {}", r.rss_kib, r.fds))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    assert!(
        failures.is_empty(),
        "failed requests: {:?}",
        &failures[..failures.len().min(20)]
    );
    assert!(tfail.is_empty(), "failed transfers: {tfail:?}");
    assert!(eg < 10.0, "edge memory grew {eg:.1}% after warm-up");
    assert!(
        ef1 <= efmin + 8,
        "edge file descriptors grew from {efmin} to {ef1}"
    );
}
