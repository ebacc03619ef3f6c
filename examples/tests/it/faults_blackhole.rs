//! Blackholes on the edge↔connector path (issue 9, item 8), through the real binaries and
//! a userspace UDP relay (`zt_testkit::impair`) that drops every packet both ways while on.
//!
//! The edge runs with `--idle-timeout 4s` (connectors and clients use the shorter of
//! theirs and the edge's), so the test is quick and its outages are sized against it:
//! - outages of 2 s with 5 s of path between them, twice, while paced transfers run:
//!   the connections ride them out and every transfer completes with the right SHA-256;
//! - then one outage of 7 s, longer than the idle timeout: the transfers in flight fail
//!   with an error (they do not hang), the connections re-establish after the path heals
//!   (the time is printed), new flows succeed, and the edge's and connector's open file
//!   descriptors, flows and connections come back to what they were.

use std::time::{Duration, Instant};

use crate::support::faults::*;
use crate::support::*;
use zt_testkit::impair::Impair;

const IDLE: Duration = Duration::from_secs(4);
const STALL: Duration = Duration::from_secs(40);

/// A paced transfer: 1.5 MiB up in 48 KiB pieces every 100 ms (about 3 s of sending at
/// 0.5 MiB/s, longer when an outage stalls it), 256 KiB back.
fn paced(
    forward: std::net::SocketAddr,
    seed: u64,
) -> std::thread::JoinHandle<(Result<Duration, String>, Instant)> {
    std::thread::spawn(move || {
        let r = transfer_paced(
            forward,
            seed,
            1536 * 1024,
            256 * 1024,
            48 * 1024,
            Duration::from_millis(100),
            STALL,
        );
        (r, Instant::now())
    })
}

fn edge_metric(edge: &Edge, name: &str) -> f64 {
    http_get(edge.metrics, "/metrics")
        .and_then(|(_, page)| metric(&page, name))
        .unwrap_or(0.0)
}

fn connector_metric(c: &Connector, name: &str) -> f64 {
    http_get(c.metrics, "/metrics")
        .and_then(|(_, page)| metric(&page, name))
        .unwrap_or(-1.0)
}

#[test]
fn connections_ride_out_short_outages_and_recover_from_a_long_one() {
    let origin = seeded_hashing_origin("127.0.0.2:0");
    let idle = format!("{}s", IDLE.as_secs());
    let edge = Edge::start_with(&["--idle-timeout", &idle]);
    let (creds, device) = edge.api_zt();
    let relay = Impair::start("edge-connector", edge.listen);
    let connector = Connector::start_via(&edge, relay.addr, "api-zt", &creds, "connector", 2);
    connector.wait_ready(2);
    let (_client, forward) = client_forward(&device, origin.addr);
    transfer(forward, 1, 64 * 1024, STALL).unwrap();
    let edge_pid = edge.proc.as_ref().unwrap().pid();
    let before = (Resources::of(edge_pid), Resources::of(connector.proc.pid()));
    let tunnel_conns = edge_metric(&edge, "zt_edge_connector_connections{");
    assert_eq!(
        tunnel_conns, 2.0,
        "the edge holds the connector's 2 connections"
    );

    // Short outages: 2 s off, 5 s on, twice, while four paced transfers run.
    let t = Instant::now();
    let flows: Vec<_> = (0..4).map(|i| paced(forward, 100 + i)).collect();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(500));
        relay.blackhole(true);
        std::thread::sleep(Duration::from_secs(2));
        relay.blackhole(false);
        std::thread::sleep(Duration::from_millis(4500));
    }
    let short: Vec<_> = flows.into_iter().map(|f| f.join().unwrap().0).collect();
    let short_took = t.elapsed();
    eprintln!("short outages: {short:?}; relay {}", relay.summary());
    let ready_after_short = connector.ready();
    for r in &short {
        assert!(r.is_ok(), "a transfer failed across 2 s outages: {r:?}");
    }
    assert_eq!(
        ready_after_short,
        Some((200, 2)),
        "the connections survived the short outages"
    );
    let flows_before_long = edge_metric(&edge, "zt_edge_flows_total{outcome=\"completed\"}");

    // One outage longer than the idle timeout, with transfers in flight.
    let flows: Vec<_> = (0..3).map(|i| paced(forward, 200 + i)).collect();
    std::thread::sleep(Duration::from_millis(800));
    let outage = Duration::from_secs(7);
    let went_dark = Instant::now();
    relay.blackhole(true);
    let not_ready = wait_until(Duration::from_secs(30), || {
        connector.ready().is_some_and(|(status, _)| status == 503)
    });
    let left = outage.saturating_sub(went_dark.elapsed());
    std::thread::sleep(left);
    relay.blackhole(false);
    let healed = Instant::now();
    let in_flight: Vec<_> = flows
        .into_iter()
        .map(|f| {
            let (r, done) = f.join().unwrap();
            (r, done.saturating_duration_since(went_dark))
        })
        .collect();
    eprintln!("transfers in flight during the long outage: {in_flight:?}");
    for (r, _) in &in_flight {
        let e = r
            .as_ref()
            .expect_err("a transfer survived an outage longer than the idle timeout");
        assert!(
            !e.starts_with("stalled"),
            "a transfer hung instead of failing: {e}"
        );
    }
    let reconnected = wait_until(Duration::from_secs(60), || {
        connector.ready() == Some((200, 2))
    })
    .expect("the connector re-registered after the path healed");
    let first_flow = Instant::now();
    eventually("a new flow after the outage", || {
        transfer(forward, 300, 64 * 1024, STALL).ok()
    });
    let traffic_back = healed.elapsed();
    let first_flow_took = first_flow.elapsed();
    for i in 0..10 {
        transfer(forward, 400 + i, 64 * 1024, STALL).unwrap();
    }

    // Nothing left behind: no flow in flight at the connector, the edge back to two
    // connections, and the descriptors of both processes back where they were.
    let settled = wait_until(Duration::from_secs(30), || {
        connector_metric(&connector, "zt_connector_active_flows") == 0.0
            && edge_metric(&edge, "zt_edge_connector_connections{") == 2.0
            && Resources::of(edge_pid).fds <= before.0.fds
            && Resources::of(connector.proc.pid()).fds <= before.1.fds
    });
    let after = (Resources::of(edge_pid), Resources::of(connector.proc.pid()));
    let outcomes: Vec<String> = http_get(edge.metrics, "/metrics")
        .map(|(_, p)| {
            p.lines()
                .filter(|l| l.starts_with("zt_edge_flows_total{"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let reasons: Vec<String> = edge
        .flow_audit_lines()
        .iter()
        .filter_map(|v| v["close_reason"].as_str().map(str::to_owned))
        .filter(|r| r != "completed")
        .collect();
    eprintln!(
        "edge flow outcomes: {outcomes:?}; audit close reasons other than completed: {reasons:?}"
    );
    eprintln!(
        "MEASURED blackhole (idle timeout {IDLE:?}, seed {}): 4 paced transfers across two \
         2 s outages completed in {short_took:?}; long outage {outage:?}: connector /ready 503 \
         after {not_ready:?}; the 3 transfers in flight failed {:?} after it began; after \
         healing the connector re-registered in {reconnected:?} and a new flow succeeded \
         {traffic_back:?} after healing (the flow itself {first_flow_took:?}); edge fds \
         {} -> {}, threads {} -> {}; connector fds {} -> {}, threads {} -> {}",
        relay.seed,
        in_flight.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        before.0.fds,
        after.0.fds,
        before.0.threads,
        after.0.threads,
        before.1.fds,
        after.1.fds,
        before.1.threads,
        after.1.threads,
    );
    assert!(
        not_ready.is_some(),
        "the connector never noticed the long outage"
    );
    assert_eq!(
        reasons, ["connection_lost"; 3],
        "the edge audits each flow cut by the outage as connection_lost"
    );
    assert!(
        settled.is_some(),
        "resources did not come back: edge {:?} -> {:?}, connector {:?} -> {:?}, connector \
         active flows {}, edge connections {}",
        before.0,
        after.0,
        before.1,
        after.1,
        connector_metric(&connector, "zt_connector_active_flows"),
        edge_metric(&edge, "zt_edge_connector_connections{")
    );
    assert!(
        edge_metric(&edge, "zt_edge_flows_total{outcome=\"completed\"}")
            >= flows_before_long + 11.0
    );
}
