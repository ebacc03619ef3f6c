//! The edge process restarts under a live connector and a live client: `zt edge run` gets
//! SIGTERM, exits 0, and starts again on the same state directory and ports. Nobody touches
//! the connector (`zt tunnel --config … run`) or the client (`zt client forward`): they
//! reconnect by themselves and new flows work again. The CA and its fingerprint survive, so
//! the pin in the device credentials and the connector's `cacert` stay valid, and the
//! tunnels, routes, rules and users in the database survive too.

use std::time::Instant;

use crate::support::*;

fn normalise(fp: &str) -> String {
    fp.chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase()
}

fn ca_fingerprint(edge: &Edge) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&edge.admin(&["account", "--output", "json"])).unwrap();
    normalise(v["ca_fingerprint"].as_str().unwrap())
}

#[test]
fn connectors_and_clients_reconnect_after_an_edge_restart() {
    restart(false);
}

/// The client reconnects to a restarted edge before the connectors do (their backoff is
/// longer); the edge holds a flow asked for in that window until a connector of the tunnel
/// registers (a bound of 2 s) instead of refusing it with "no live connector".
#[test]
fn a_flow_asked_for_during_an_edge_restart_completes() {
    restart(true);
}

fn restart(assert_pending: bool) {
    let origin = Origin::hello("127.0.0.2:0");
    let mut edge = Edge::start();
    let (creds, device) = edge.api_zt_via_list();
    let connector = Connector::start(&edge, "api-zt", &creds, "connector", 2);
    connector.wait_ready(2);
    let (_client, forward) = client_forward(&device, origin.addr);
    hello_through(forward, "before").unwrap();

    let fingerprint = ca_fingerprint(&edge);
    let pinned: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&device).unwrap()).unwrap();
    let pinned = normalise(pinned["EdgeCAFingerprint"].as_str().unwrap());
    assert_eq!(
        pinned, fingerprint,
        "the device credentials pin the edge CA"
    );
    let ca_pem = std::fs::read(edge.path("ca.pem")).unwrap();

    // Stop the edge; it exits 0 and the connector's /ready goes to 503 without it.
    let stopped_at = Instant::now();
    let mut old = edge.proc.take().unwrap();
    old.signal("TERM");
    let status = old.wait_exit();
    assert!(status.success(), "edge exit status {status:?}");
    drop(old);
    let exit_took = stopped_at.elapsed();
    eventually("connector /ready leaves 200 while the edge is down", || {
        (connector.ready().map(|r| r.0) == Some(503)).then_some(())
    });
    let not_ready_after = stopped_at.elapsed();
    // A flow asked for while the edge is down: the client holds it while it reconnects,
    // and the new edge holds it until a connector is back.
    let pending = std::thread::spawn(move || {
        let t = Instant::now();
        (hello_through(forward, "while down"), t.elapsed())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));

    // Start it again: same state, same ports.
    let restart = Instant::now();
    edge.run();
    let edge_up = restart.elapsed();
    connector.wait_ready(2);
    let connector_back = restart.elapsed();
    eventually("a flow through the old client after the restart", || {
        hello_through(forward, "after").ok()
    });
    let traffic_back = restart.elapsed();
    let (pending, pending_took) = pending.join().unwrap();
    eprintln!("the flow asked for while the edge was down: {pending:?} after {pending_took:?}");
    if assert_pending {
        pending.expect("a flow asked for during the outage completes once the edge is back");
    }
    eprintln!(
        "MEASURED edge restart: old edge exited {exit_took:?} after SIGTERM; connector /ready \
         503 {not_ready_after:?} after SIGTERM; new edge up in {edge_up:?}; connector /ready 200 \
         (2 connections) {connector_back:?} and client traffic {traffic_back:?} after the \
         restart began"
    );

    // The CA survived: same file, same fingerprint, and a fresh client pinning it by the
    // old credentials file connects and carries a flow.
    assert_eq!(std::fs::read(edge.path("ca.pem")).unwrap(), ca_pem);
    assert_eq!(ca_fingerprint(&edge), fingerprint);
    let (_fresh, forward2) = client_forward(&device, origin.addr);
    hello_through(forward2, "fresh client").unwrap();
    for i in 0..20 {
        hello_through(forward, &format!("steady {i}")).unwrap();
    }
}

/// kill -9 of the edge right after an admin change: the change was committed when the
/// command returned, so after a restart on the same state directory the new route and rule
/// carry flows, the CA is the same, and the connector and client came back on their own.
#[test]
fn the_edge_survives_kill_9_with_its_last_change() {
    let origin = Origin::hello("127.0.0.2:0");
    let late = Origin::hello("127.0.0.3:0");
    let mut edge = Edge::start();
    let (creds, device) = edge.api_zt();
    let connector = Connector::start(&edge, "api-zt", &creds, "connector", 2);
    connector.wait_ready(2);
    let (_client, forward) = client_forward(&device, origin.addr);
    let (_client_late, forward_late) = client_forward(&device, late.addr);
    hello_through(forward, "before").unwrap();
    let fingerprint = ca_fingerprint(&edge);

    // The last change, then SIGKILL at once.
    edge.admin(&["route", "ip", "add", "127.0.0.3/32", "api-zt"]);
    edge.rule("Allow late", 101, "allow", "l4", "net.dst.ip == 127.0.0.3");
    let mut old = edge.proc.take().unwrap();
    old.signal("KILL");
    old.wait_exit();
    drop(old);

    let restart = Instant::now();
    edge.run();
    // The connector's /ready may still say 200 here: its connections to the killed
    // process have not timed out yet. Traffic is the measure.
    let ready_after_kill = connector.ready();
    eventually(
        "a flow through the old client after kill -9 and restart",
        || hello_through(forward, "after").ok(),
    );
    let traffic_back = restart.elapsed();
    eventually("a flow on the route added just before the kill", || {
        hello_through(forward_late, "late").ok()
    });
    connector.wait_ready(2);
    eprintln!(
        "MEASURED edge kill -9 and restart: connector /ready right after the restart \
         {ready_after_kill:?}; client traffic back {traffic_back:?} after the restart began"
    );
    assert_eq!(ca_fingerprint(&edge), fingerprint);
}
