//! Several edges as one, through the real binary on a real PostgreSQL: the first edge holds
//! the CA key, two more join with `zt edge join`; a tunnel whose only connector is on e2 is
//! reached through e1 and e3 (forwarded over the mutual-TLS peering listener), byte-exact
//! with half-close, with one audit line at the client's edge naming both edges; a rule
//! changed through e1 blocks a new flow at e3 and a device revoked through e2 loses its
//! live flow on e1 (times printed, never asserted); peering refuses an edge id that is not
//! a member, the edge server certificate, a device-style certificate of the same CA and a
//! removed edge. Each test prints a SKIP line and passes when PostgreSQL is not installed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use zt_testkit::data::sha256;
use zt_testkit::postgres::PgServer;

use crate::support::*;

/// e1 (CA holder, made by its first start), then e2 and e3 joined through e1's admin API,
/// all on `url`, each with a peering listener on loopback.
fn three_edges(url: &str, extra: &[&str]) -> Vec<Edge> {
    let run = |name: &str| {
        let mut args = vec![
            "--store".to_owned(),
            url.to_owned(),
            "--name".to_owned(),
            name.to_owned(),
            "--peer-listen".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let args = run("e1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let e1 = Edge::start_with(&args);
    let mut out = vec![e1];
    for name in ["e2", "e3"] {
        let dir = tempfile::tempdir().unwrap();
        let said = out[0].admin(&[
            "edge",
            "join",
            name,
            "--out",
            dir.path().to_str().unwrap(),
            "--server-name",
            "127.0.0.1",
        ]);
        assert!(said.contains("joined"), "{said}");
        assert!(
            !dir.path().join("ca.key").exists(),
            "a joined edge must not get the CA key"
        );
        let args = run(name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        out.push(Edge::start_in(dir, &args));
    }
    out
}

/// The three edges on the shared test database, or `None` (after a SKIP line) without
/// PostgreSQL.
fn on_postgres(test: &str, extra: &[&str]) -> Option<Vec<Edge>> {
    let pg = PgServer::shared(test)?;
    Some(three_edges(&pg.database(), extra))
}

/// `zt edge list --output json` as seen from `edge`.
fn edge_list(edge: &Edge) -> Vec<serde_json::Value> {
    serde_json::from_str(&edge.admin(&["edge", "list", "--output", "json"])).unwrap()
}

/// A connector of tunnel `api-zt` given `edges` (its HA connections spread over them).
fn connector_on(edges: &[&Edge], tunnel_creds: &Path, name: &str, ha: u32) -> Connector {
    let addrs: Vec<SocketAddr> = edges.iter().map(|e| e.listen).collect();
    Connector::start_on(edges[0], &addrs, "api-zt", tunnel_creds, name, ha)
}

/// An origin that reads the request to EOF (the client's FIN must come through), then
/// answers with `n` deterministic bytes.
fn half_close_origin(n: usize) -> Origin {
    Origin::spawn("127.0.0.2:0", move |mut s| {
        let mut request = Vec::new();
        if s.read_to_end(&mut request).is_ok() {
            let _ = s.write_all(&zt_testkit::data::pattern(n));
        }
    })
}

/// Sends `request`, half-closes, reads the answer to EOF.
fn half_close_exchange(forward: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(forward)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request)?;
    s.shutdown(Shutdown::Write)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    Ok(answer)
}

#[test]
fn three_edges_serve_a_tunnel_held_by_one_and_changes_reach_every_edge() {
    let Some(edges) = on_postgres("three_edges_serve_a_tunnel_held_by_one", &[]) else {
        return;
    };
    let (e1, e2, e3) = (&edges[0], &edges[1], &edges[2]);

    // The tunnel, route, rule and a device on e1's address, made through e1; a second
    // user whose device names e3, made through e3 (the records are shared).
    let (creds, alice) = e1.api_zt();
    let bob = e3.user("bob@example.com", "sre");
    let connector = connector_on(&[e2], &creds, "c2", 2);
    connector.wait_ready(2);

    // Presence: every edge sees the three, live, and the connections on e2.
    let started = Instant::now();
    let listed = eventually("e1 lists three live edges", || {
        let list = edge_list(e1);
        (list.len() == 3
            && list
                .iter()
                .all(|e| e["member"] == true && e["presence"]["live"] == true))
        .then_some(list)
    });
    println!(
        "e1 saw all three edges live {:?} after the connector was ready: {}",
        started.elapsed(),
        serde_json::to_string(&listed).unwrap()
    );
    let info: serde_json::Value =
        serde_json::from_str(&e1.admin(&["tunnel", "info", "api-zt", "--output", "json"])).unwrap();
    let conns = info["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2, "e1 shows e2's two connections: {info}");
    assert!(
        conns.iter().all(|c| c["edge_name"] == "e2"),
        "each connection names its edge: {info}"
    );

    // Through e1 (no connector there): byte-exact, with the client's half-close carried.
    let answer_len = 1 << 20;
    let origin = half_close_origin(answer_len);
    let (_c1, forward1) = client_forward(&alice, origin.addr);
    let started = Instant::now();
    let answer = eventually("a forwarded flow through e1", || {
        half_close_exchange(forward1, b"GET /through-e1").ok()
    });
    println!(
        "first forwarded flow (e1 -> e2) done {:?} after the client started",
        started.elapsed()
    );
    assert_eq!(answer.len(), answer_len);
    assert_eq!(
        sha256(&answer),
        sha256(&zt_testkit::data::pattern(answer_len))
    );
    let line = eventually("e1's audit line for the forwarded flow", || {
        e1.flow_audit_lines()
            .into_iter()
            .find(|l| l["close_reason"] == "completed" && l["connector_edge"] == "e2")
    });
    assert_eq!(line["edge"], "e1", "{line}");
    assert_eq!(line["bytes_down"], answer_len as u64, "{line}");
    assert!(
        e2.flow_audit_lines().is_empty(),
        "the forwarding edge writes no flow line of its own"
    );

    // Through e3 too: bob's device names e3.
    let (_c3, forward3) = client_forward(&bob, origin.addr);
    let answer = eventually("a forwarded flow through e3", || {
        half_close_exchange(forward3, b"GET /through-e3").ok()
    });
    assert_eq!(answer.len(), answer_len);

    // A device revoked through e2 loses its live flow on e1.
    let hold = Origin::spawn("127.0.0.2:0", |mut s| {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let (_c1b, forward_hold) = client_forward(&alice, hold.addr);
    let mut live = eventually("a live echo flow through e1", || {
        let mut s = TcpStream::connect(forward_hold).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        s.write_all(b"ping").ok()?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).ok()?;
        (&buf == b"ping").then_some(s)
    });
    let alice_id = device_id(&alice);
    let revoked_at = Instant::now();
    e2.admin(&["device", "revoke", &alice_id]);
    let mut buf = [0u8; 16];
    let cut = matches!(live.read(&mut buf), Ok(0) | Err(_));
    assert!(
        cut,
        "the live flow on e1 outlived its device's revocation on e2"
    );
    println!(
        "a device revoked through e2 lost its live flow on e1 after {:?}",
        revoked_at.elapsed()
    );

    // A rule added through e1 blocks a new flow at e3 (which served one above).
    let changed_at = Instant::now();
    e1.rule(
        "Block the API",
        10,
        "block",
        "l4",
        "net.dst.ip == 127.0.0.2",
    );
    let blocked = eventually("e3 blocks a new flow after the rule change on e1", || {
        half_close_exchange(forward3, b"x")
            .map_or(true, |a| a.is_empty())
            .then(|| changed_at.elapsed())
    });
    println!("a rule added through e1 blocked a new flow at e3 after {blocked:?} (including one zt admin process)");
    drop(connector);
}

/// The device id in a credentials file.
fn device_id(creds: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(creds).unwrap()).unwrap();
    v["DeviceID"].as_str().unwrap().to_owned()
}

/// A test-side verifier of the edge dialled: it trusts the chain check (against the
/// CA) and names the edge the test means to reach.
struct Expect(uuid::Uuid);

impl zt_proto::PeerVerifier for Expect {
    fn verify_peer(&self, _leaf_der: &[u8]) -> Result<uuid::Uuid, String> {
        Ok(self.0)
    }
}

/// Dials `peer` (edge `id`) with `chain_pem`/`key_pem`; the error's text, or `None` when
/// admitted.
fn dial_with(
    rt: &tokio::runtime::Runtime,
    ca_der: &[u8],
    chain_pem: &str,
    key_pem: &str,
    peer: SocketAddr,
    id: uuid::Uuid,
) -> Option<String> {
    let identity =
        zt_proto::ServerIdentity::from_pem(chain_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    let config =
        zt_proto::PeeringConfig::new(identity, ca_der.to_vec(), std::sync::Arc::new(Expect(id)));
    rt.block_on(async {
        let endpoint =
            zt_proto::PeeringEndpoint::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
        match endpoint.connect(peer, id).await {
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        }
    })
}

/// A leaf under the edge's CA (read from e1's state directory, which holds the key):
/// `uri` as its URI SAN when given, client and server usages.
fn issue_under_ca(edge: &Edge, uri: Option<String>) -> (String, String) {
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(edge.path("ca.key")).unwrap()).unwrap();
    let ca_pem = std::fs::read_to_string(edge.path("ca.pem")).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = CertificateParams::new(vec!["device.example".to_owned()]).unwrap();
    if let Some(uri) = uri {
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    }
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (format!("{}{ca_pem}", cert.pem()), key.serialize_pem())
}

#[test]
fn peering_admits_members_only() {
    let Some(edges) = on_postgres("peering_admits_members_only", &[]) else {
        return;
    };
    let (e1, e3) = (&edges[0], &edges[2]);
    let list = eventually("e1 sees e2's peering address", || {
        let list = edge_list(e1);
        list.iter()
            .any(|e| e["name"] == "e2" && !e["presence"]["peer_address"].is_null())
            .then_some(list)
    });
    let e2_row = list.iter().find(|e| e["name"] == "e2").unwrap();
    let e2_id: uuid::Uuid = e2_row["id"].as_str().unwrap().parse().unwrap();
    let e2_peer: SocketAddr = e2_row["presence"]["peer_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ca_pem = std::fs::read_to_string(e1.path("ca.pem")).unwrap();
    let ca_der = abuse::rustls_pemfile_certs(ca_pem.as_bytes())
        .remove(0)
        .to_vec();
    let rt = runtime(1);
    let pem = |edge: &Edge, f: &str| std::fs::read_to_string(edge.path(f)).unwrap();

    // A member is admitted: e3's own peering certificate.
    assert_eq!(
        dial_with(
            &rt,
            &ca_der,
            &pem(e3, "peer.pem"),
            &pem(e3, "peer.key"),
            e2_peer,
            e2_id
        ),
        None,
        "a member edge is admitted"
    );
    // The edge's server certificate (what connectors and clients see): no client usage,
    // no edge id.
    let refused = dial_with(
        &rt,
        &ca_der,
        &pem(e1, "server.pem"),
        &pem(e1, "server.key"),
        e2_peer,
        e2_id,
    )
    .expect("the server certificate is refused");
    println!("server certificate: {refused}");
    // A device-style certificate from the same CA, both usages, no edge id.
    let (chain, key) = issue_under_ca(e1, None);
    let refused = dial_with(&rt, &ca_der, &chain, &key, e2_peer, e2_id)
        .expect("a device-style certificate is refused");
    assert!(refused.contains("names no edge"), "{refused}");
    println!("device-style certificate: {refused}");
    // A valid edge URI of an id that never joined.
    let stranger = uuid::Uuid::new_v4();
    let (chain, key) = issue_under_ca(e1, Some(format!("urn:zt:edge:{stranger}")));
    let refused = dial_with(&rt, &ca_der, &chain, &key, e2_peer, e2_id)
        .expect("an unknown edge id is refused");
    assert!(refused.contains("not a member"), "{refused}");
    println!("unknown edge id: {refused}");

    // Removed through e1: e2 refuses e3 from the next revision on, e3 restarting or not.
    e1.admin(&["edge", "remove", "e3"]);
    let refused = eventually("e2 refuses the removed e3", || {
        dial_with(
            &rt,
            &ca_der,
            &pem(e3, "peer.pem"),
            &pem(e3, "peer.key"),
            e2_peer,
            e2_id,
        )
    });
    assert!(refused.contains("not a member"), "{refused}");
    println!("removed edge: {refused}");
    let list = edge_list(e1);
    let e3_row = list.iter().find(|e| e["name"] == "e3").unwrap();
    assert_eq!(e3_row["member"], false, "{e3_row}");
}

#[test]
fn an_edge_killed_under_load_loses_its_clients_and_connections_to_the_others() {
    // A short idle timeout (which connectors and clients adopt) so the loss is noticed in
    // seconds, as it would be with the default in ten.
    let Some(mut edges) = on_postgres("an_edge_killed_under_load", &["--idle-timeout", "3s"])
    else {
        return;
    };
    let (creds, _) = edges[0].api_zt();
    // Credentials and a connector configuration naming e1 alone, as made before e2 and
    // e3 existed: they learn the others from the edge list e1 pushes.
    let carol = edges[0].path("device-carol.json");
    let e1_addr = edges[0].listen.to_string();
    edges[0].admin(&[
        "user",
        "add",
        "carol@example.com",
        "--group",
        "sre",
        "--output-file",
        carol.to_str().unwrap(),
        "--edge",
        &e1_addr,
    ]);
    // Three replicas given all three edges, and the one made for e1 alone.
    let replicas: Vec<Connector> = {
        let refs: Vec<&Edge> = edges.iter().collect();
        (1..=3)
            .map(|i| connector_on(&refs, &creds, &format!("c{i}"), 3))
            .collect()
    };
    let lone = connector_on(&[&edges[0]], &creds, "c-e1", 2);
    for c in &replicas {
        c.wait_ready(3);
    }
    lone.wait_ready(2);
    let origin = Origin::hello("127.0.0.2:0");
    let (client, forward) = client_forward(&carol, origin.addr);
    hello_through(forward, "warm-up").unwrap();
    client.wait_for("connected to edge e1 ");
    // The hashing path through each edge, from a client whose credentials name it.
    for (i, e) in edges.iter().enumerate() {
        let device = e.user(&format!("user{i}@example.com"), "sre");
        let (_c, f) = client_forward(&device, origin.addr);
        eventually("a flow through each edge", || {
            hello_through(f, &format!("through e{}", i + 1)).ok()
        });
    }
    // The connector made for e1 alone has learned the others from e1's push (its log
    // names them; it was configured with e1's address only).
    for e in &edges[1..] {
        lone.proc.wait_for(&e.listen.to_string());
    }

    let mut load = faults::Load::start(forward, 4, Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(3));
    let rate = load.ok.load(std::sync::atomic::Ordering::Relaxed) as f64 / 3.0;
    let killed_at = Instant::now();
    edges[0].proc.as_ref().unwrap().signal("KILL");
    let _ = edges[0].proc.as_mut().unwrap().wait_exit();
    let moved = eventually("a request through another edge after the kill", || {
        load.latencies
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t > killed_at)
            .map(|(t, took)| *t + *took)
            .min()
    });
    lone.wait_ready(2);
    let lone_back = killed_at.elapsed();
    for c in &replicas {
        c.wait_ready(3);
    }
    let replicas_back = killed_at.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    load.stop();
    let failures = load.failures();
    let at_kill = failures.iter().filter(|(t, _)| *t < moved).count();
    let after: Vec<_> = failures.iter().filter(|(t, _)| *t >= moved).collect();
    println!(
        "load {rate:.0} requests/s before the kill of e1; the client (credentials naming e1 \
         only) carried requests through another edge {:?} after it; {at_kill} request(s) \
         failed at the kill; the connector configured with e1 only had its 2 connections \
         again after {lone_back:?}, the three replicas their 3 each after {replicas_back:?}; \
         {} requests in all",
        moved.duration_since(killed_at),
        load.ok.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(
        after.is_empty(),
        "requests started after the first reconnection failed: {after:?}"
    );
    let out = client.output();
    assert!(
        out.contains("edge_name=e2") || out.contains("edge_name=e3"),
        "the client, whose credentials name e1 alone, moved to a pushed edge: {out}"
    );
}
