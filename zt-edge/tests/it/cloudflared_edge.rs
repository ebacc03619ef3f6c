//! The edge serving cloudflared-protocol connectors over real QUIC on loopback, beside zt
//! connectors: registration (accepted, refused alike for every bad credential), a TCP flow
//! from a zt client through the edge and the test connector to a real TCP origin, draining
//! on `unregisterConnection`, and a tunnel served by both kinds at once.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use uuid::Uuid;
use zt_edge::{ConnectorKind, Edge, EdgeConfig, EdgeHandle, Rule};
use zt_proto::{ClientConnection, FlowStatusCode, OpenError, PeerEndpoint, Protocol};
use zt_testkit::cloudflared::{self, CfdConnection, Creds, Registration};
use zt_testkit::data::{hex, pattern};
use zt_testkit::loopback::{
    audit_lines, connect_client, connect_connector, endpoint, provision, refused, serve_flows,
    test_config, Provision, Provisioned,
};
use zt_testkit::origin::{assert_hash_answer, framed_hashing_origin, Origin};
use zt_testkit::{wait_for, WAIT};

fn config(dir: &Path) -> EdgeConfig {
    let mut c = test_config(dir);
    c.edge_name = "cfd-test-edge".into();
    // Refuse a flow with no connector at once (within the client's open timeout), so the
    // drain test sees the refusal.
    c.connector_wait = Duration::from_millis(100);
    c
}

/// A tunnel (opted in to cloudflared when `cloudflared`), a device, a route for loopback
/// through the tunnel (only when opted in) and a rule allowing it.
async fn setup(edge: &EdgeHandle, name: &str, cloudflared: bool) -> Provisioned {
    let mut rule = Rule::new(
        format!("allow loopback for {name}"),
        100,
        "allow",
        vec!["l4".into()],
    );
    rule.traffic = Some("net.dst.port > 0".into());
    let email = format!("{name}@example.com");
    let routes: &[&str] = if cloudflared { &["127.0.0.0/8"] } else { &[] };
    provision(
        edge,
        Provision {
            tunnel: name,
            cloudflared,
            email: &email,
            groups: &[],
            routes,
            rules: vec![rule],
        },
    )
    .await
}

fn creds(edge: &EdgeHandle, s: &Provisioned) -> Creds {
    Creds {
        account_tag: edge.state().account_tag().to_owned(),
        tunnel_id: s.tunnel.id,
        secret: s.secret.expose_bytes().to_vec(),
    }
}

async fn cfd_connect(edge: &EdgeHandle, creds: &Creds, index: u8) -> CfdConnection {
    cloudflared::connect(edge.local_addr(), edge.state().ca_cert_der(), creds, index).await
}

/// Connection 0 of `s`'s tunnel with its own credentials, which must be registered.
async fn cfd_connected(edge: &EdgeHandle, s: &Provisioned) -> CfdConnection {
    let cfd = cfd_connect(edge, &creds(edge, s), 0).await;
    assert!(
        matches!(cfd.registration, Registration::Connected { .. }),
        "refused: {:?}",
        cfd.registration
    );
    cfd
}

async fn client(edge: &EdgeHandle, ep: &PeerEndpoint, s: &Provisioned) -> ClientConnection {
    connect_client(edge, ep, s.device.id, &s.device_secret)
        .await
        .unwrap()
}

/// An origin that needs no half-close (cloudflared has none): see
/// [`framed_hashing_origin`].
fn framed_origin(reply_len: usize) -> Origin {
    framed_hashing_origin("127.0.0.1:0", reply_len)
}

/// Sends the framed payload (in two parts, `pause` running between them), then checks the
/// origin's hash, reply and end of flow.
async fn framed_round_trip<F: std::future::Future<Output = ()>>(
    mut flow: zt_proto::FlowStream,
    payload: &[u8],
    reply_len: usize,
    pause: F,
) {
    flow.write_u64(payload.len() as u64).await.unwrap();
    let half = payload.len() / 2;
    flow.write_all(&payload[..half]).await.unwrap();
    pause.await;
    flow.write_all(&payload[half..]).await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, flow.read_to_end(&mut back))
        .await
        .expect("flow did not end")
        .unwrap();
    assert_hash_answer(&back, payload, reply_len);
}

async fn open(client: &ClientConnection, dest: SocketAddr) -> zt_proto::FlowStream {
    client.open_flow(dest, Protocol::Tcp, vec![]).await.unwrap()
}

/// Runs a test body on a current-thread runtime inside a `LocalSet` (capnp-rpc is
/// single-threaded).
pub(crate) fn run<F: std::future::Future<Output = ()>>(body: impl FnOnce() -> F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, body());
}

#[test]
fn a_cloudflared_connector_registers_and_serves_a_tcp_flow_end_to_end() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let edge = Edge::start(config(dir.path())).await.unwrap();
        let s = setup(&edge, "cfd", true).await;
        let t = Instant::now();
        let cfd = cfd_connect(&edge, &creds(&edge, &s), 0).await;
        println!("MEASURED cloudflared registration: {:?}", t.elapsed());
        let Registration::Connected { uuid, location } = &cfd.registration else {
            panic!("refused: {:?}", cfd.registration)
        };
        assert_eq!(location, "cfd-test-edge");
        cfd.update_configuration(br#"{"warp-routing":{"enabled":true}}"#)
            .await;

        let live = edge.live_view().tunnel_connections(s.tunnel.id);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].connection_id, *uuid);
        assert_eq!(live[0].kind, ConnectorKind::Cloudflared);
        assert_eq!(live[0].version, "cloudflared DEV");
        assert_eq!(live[0].conn_index, 0);

        let origin = framed_origin(100_000);
        let ep = endpoint(&edge);
        let client = client(&edge, &ep, &s).await;
        let payload = pattern(300_000);
        let t = Instant::now();
        framed_round_trip(open(&client, origin.addr).await, &payload, 100_000, async {
        })
        .await;
        println!(
            "MEASURED flow through a cloudflared-protocol connector (300 kB up, 100 kB down): {:?}",
            t.elapsed()
        );
        assert_eq!(cfd.served.load(Ordering::SeqCst), 1);

        // cloudflared's dial error comes back to the client as a typed refusal.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let status = refused(client.open_flow(closed_addr, Protocol::Tcp, vec![]).await);
        assert_eq!(status.code, FlowStatusCode::ConnectRefused, "{status}");
        assert!(status.detail.starts_with("cloudflared: "), "{status}");

        wait_for("two flow audit lines", || {
            audit_lines(&edge, "flow").len() >= 2
        })
        .await;
        let flows = audit_lines(&edge, "flow");
        assert_eq!(flows[0]["connector_kind"], "cloudflared");
        assert_eq!(flows[0]["connector_version"], "cloudflared DEV");
        assert_eq!(flows[0]["half_close"], "not_supported_by_cloudflared");
        assert_eq!(flows[0]["bytes_up"], 8 + 300_000);
        assert_eq!(flows[0]["bytes_down"], 32 + 100_000);
        assert_eq!(flows[0]["close_reason"], "completed");
        assert_eq!(flows[1]["close_reason"], "connect_failed");
        edge.shutdown().await;
    });
}

#[test]
fn wrong_secret_unknown_tunnel_and_no_opt_in_are_refused_alike() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let edge = Edge::start(config(dir.path())).await.unwrap();
        let opted = setup(&edge, "cfd", true).await;
        let not_opted = setup(&edge, "zt-only", false).await;

        let mut wrong_secret = creds(&edge, &opted);
        wrong_secret.secret[0] ^= 1;
        let mut unknown = creds(&edge, &opted);
        unknown.tunnel_id = Uuid::new_v4();
        let mut wrong_account = creds(&edge, &opted);
        wrong_account.account_tag = "0123456789abcdef0123456789abcdef".into();
        let cases = [
            ("wrong secret", wrong_secret, "secret does not match"),
            ("unknown tunnel", unknown, "no such tunnel"),
            ("not opted in", creds(&edge, &not_opted), "not opted in"),
            ("wrong account", wrong_account, "wrong account tag"),
        ];
        // All at once: each refusal lingers until the connector closes or 2 s pass.
        let refuse = |what: &'static str, creds: Creds| {
            let edge = &edge;
            async move {
                let cfd = cfd_connect(edge, &creds, 0).await;
                println!("{what}: {:?}", cfd.registration);
                let Registration::Error {
                    cause,
                    should_retry,
                } = &cfd.registration
                else {
                    panic!("{what}: accepted")
                };
                assert!(!should_retry, "{what}: cloudflared must not retry");
                // The edge closes a refused connection.
                let closed = tokio::time::timeout(WAIT, cfd.conn.closed()).await;
                assert!(closed.is_ok(), "{what}: connection left open");
                cause.clone()
            }
        };
        let (a, b, c, d) = tokio::join!(
            refuse(cases[0].0, cases[0].1.clone()),
            refuse(cases[1].0, cases[1].1.clone()),
            refuse(cases[2].0, cases[2].1.clone()),
            refuse(cases[3].0, cases[3].1.clone()),
        );
        let answers = [a, b, c, d];
        assert!(
            answers.iter().all(|a| a == &answers[0]),
            "answers differ: {answers:?}"
        );
        assert!(edge
            .live_view()
            .tunnel_connections(opted.tunnel.id)
            .is_empty());

        // One audit line per refusal, with the true reason and no secret.
        let refusals = audit_lines(&edge, "auth_refusal");
        assert_eq!(refusals.len(), cases.len(), "{refusals:?}");
        for (what, creds, reason) in &cases {
            let line = refusals
                .iter()
                .find(|l| l["reason"].as_str().unwrap().contains(reason))
                .unwrap_or_else(|| panic!("{what}: no audit line in {refusals:?}"));
            assert_eq!(line["role"], "connector", "{what}");
            assert_eq!(line["claimed_id"], creds.tunnel_id.to_string(), "{what}");
        }
        for line in &refusals {
            for (what, creds, _) in &cases {
                assert!(
                    !line.to_string().contains(&hex(&creds.secret)),
                    "{what}: secret in audit"
                );
            }
        }
        // The right secret still gets in.
        let ok = cfd_connect(&edge, &creds(&edge, &opted), 0).await;
        assert!(matches!(ok.registration, Registration::Connected { .. }));
        edge.shutdown().await;
    });
}

#[test]
fn unregister_drains_the_connection_and_in_flight_flows_finish() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let edge = Edge::start(config(dir.path())).await.unwrap();
        let s = setup(&edge, "cfd", true).await;
        let c = creds(&edge, &s);
        let a = cfd_connect(&edge, &c, 0).await;
        assert!(matches!(a.registration, Registration::Connected { .. }));
        let origin = framed_origin(10_000);
        let ep = endpoint(&edge);
        let client = client(&edge, &ep, &s).await;
        let payload = pattern(50_000);

        // A flow in flight on A while A unregisters; a second connection B registers.
        let flow = open(&client, origin.addr).await;
        assert_eq!(a.served.load(Ordering::SeqCst), 1);
        let mut b = None;
        framed_round_trip(flow, &payload, 10_000, async {
            a.unregister().await;
            let live = edge.live_view();
            wait_for("A draining", || {
                live.tunnel_connections(s.tunnel.id)
                    .iter()
                    .any(|c| c.draining)
            })
            .await;
            // With A draining and no other connection, new flows are refused.
            let status = refused(client.open_flow(origin.addr, Protocol::Tcp, vec![]).await);
            assert_eq!(status.code, FlowStatusCode::NoConnector, "{status}");
            let conn_b = cfd_connect(&edge, &c, 1).await;
            assert!(matches!(
                conn_b.registration,
                Registration::Connected { .. }
            ));
            b = Some(conn_b);
        })
        .await;
        let b = b.unwrap();

        // New flows go to B only.
        framed_round_trip(open(&client, origin.addr).await, &payload, 10_000, async {}).await;
        assert_eq!(b.served.load(Ordering::SeqCst), 1);
        assert_eq!(a.served.load(Ordering::SeqCst), 1);
        wait_for("two completed flows", || {
            audit_lines(&edge, "flow")
                .iter()
                .filter(|f| f["close_reason"] == "completed")
                .count()
                >= 2
        })
        .await;
        edge.shutdown().await;
    });
}

#[test]
fn a_zt_and_a_cloudflared_connector_on_one_tunnel_both_get_flows() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let edge = Edge::start(config(dir.path())).await.unwrap();
        let s = setup(&edge, "mixed", true).await;
        let cfd = cfd_connected(&edge, &s).await;
        let ep = endpoint(&edge);
        let zt = connect_connector(&edge, &ep, &s, 0).await.unwrap();
        serve_flows(Arc::new(zt));
        let live = edge.live_view();
        wait_for("both connections live", || {
            live.tunnel_connections(s.tunnel.id).len() == 2
        })
        .await;
        let kinds: Vec<ConnectorKind> = live
            .tunnel_connections(s.tunnel.id)
            .iter()
            .map(|c| c.kind)
            .collect();
        assert!(kinds.contains(&ConnectorKind::Zt) && kinds.contains(&ConnectorKind::Cloudflared));

        // Two flows held open at once: fewest-in-flight puts one on each connection.
        let origin = framed_origin(1_000);
        let client = client(&edge, &ep, &s).await;
        let payload = pattern(20_000);
        let first = open(&client, origin.addr).await;
        let second = open(&client, origin.addr).await;
        assert_eq!(cfd.served.load(Ordering::SeqCst), 1, "cloudflared got one");
        framed_round_trip(first, &payload, 1_000, async {}).await;
        framed_round_trip(second, &payload, 1_000, async {}).await;
        wait_for("two flow lines", || audit_lines(&edge, "flow").len() >= 2).await;
        let mut served_by: Vec<String> = audit_lines(&edge, "flow")
            .iter()
            .map(|f| f["connector_kind"].as_str().unwrap().to_owned())
            .collect();
        served_by.sort();
        assert_eq!(served_by, ["cloudflared", "zt"]);
        edge.shutdown().await;
    });
}

/// An origin that reads until EOF, then answers; with cloudflared the answer never comes,
/// because the client's FIN ends the whole flow.
async fn read_to_eof_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got).await;
                let _ = s.write_all(b"answer after the client's FIN").await;
            });
        }
    });
    addr
}

/// An origin that greets and closes at once.
async fn greeting_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s.write_all(b"hello and goodbye").await;
        }
    });
    addr
}

#[test]
fn the_first_fin_ends_a_cloudflared_flow_and_udp_is_not_sent_to_cloudflared() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let edge = Edge::start(config(dir.path())).await.unwrap();
        let s = setup(&edge, "cfd", true).await;
        let cfd = cfd_connected(&edge, &s).await;
        let ep = endpoint(&edge);
        let client = client(&edge, &ep, &s).await;

        // The client's FIN: the origin's answer to it never arrives (zt-connector would
        // deliver it), and the flow still ends.
        let mut flow = open(&client, read_to_eof_origin().await).await;
        flow.write_all(b"request").await.unwrap();
        flow.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(WAIT, flow.read_to_end(&mut back))
            .await
            .expect("flow did not end")
            .unwrap();
        assert!(back.is_empty(), "got {:?}", String::from_utf8_lossy(&back));

        // The origin's FIN: the edge stops the client's direction, so the client's writes
        // fail instead of going nowhere.
        let mut flow = open(&client, greeting_origin().await).await;
        let mut greeting = [0u8; 17];
        flow.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"hello and goodbye");
        let mut eof = Vec::new();
        flow.read_to_end(&mut eof).await.unwrap();
        let deadline = Instant::now() + WAIT;
        let err = loop {
            match flow.write_all(&[0u8; 1024]).await {
                Err(e) => break e,
                Ok(()) => assert!(Instant::now() < deadline, "writes never failed"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(
            zt_proto::FlowError::reset_code(&err),
            Some(zt_proto::ResetCode::STOPPED),
            "{err}"
        );
        drop(flow);

        wait_for("two flow audit lines", || {
            audit_lines(&edge, "flow").len() >= 2
        })
        .await;
        for line in audit_lines(&edge, "flow") {
            assert_eq!(line["half_close"], "not_supported_by_cloudflared", "{line}");
        }

        // UDP is never opened on a cloudflared connection: with no zt connector, the
        // tunnel has no connector for it, and the refusal says why.
        let udp = client
            .open_udp_flow("127.0.0.1:53".parse().unwrap(), vec![])
            .await;
        match udp {
            Err(OpenError::Refused(status)) => {
                assert_eq!(status.code, FlowStatusCode::NoConnector, "{status}");
                assert!(
                    status.detail.contains("no connector that carries UDP"),
                    "{status}"
                );
                assert!(status.detail.contains("cloudflared"), "{status}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(cfd.served.load(Ordering::SeqCst), 2);
        edge.shutdown().await;
    });
}

#[test]
fn failed_cloudflared_registrations_are_rate_limited_like_zt_proofs() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.auth_rate_limit.burst = 2;
        c.auth_rate_limit.per_minute = 0.0;
        let edge = Edge::start(c).await.unwrap();
        let s = setup(&edge, "cfd", true).await;
        let mut wrong = creds(&edge, &s);
        wrong.secret[31] ^= 0x80;
        let (a, b) = tokio::join!(cfd_connect(&edge, &wrong, 0), cfd_connect(&edge, &wrong, 1));
        for r in [&a.registration, &b.registration] {
            assert!(
                matches!(
                    r,
                    Registration::Error {
                        should_retry: false,
                        ..
                    }
                ),
                "{r:?}"
            );
        }
        // The budget of this address is spent: even the right secret is turned away, and
        // cloudflared is told to come back later rather than to give up.
        let limited = cfd_connect(&edge, &creds(&edge, &s), 0).await;
        match &limited.registration {
            Registration::Error {
                cause,
                should_retry,
            } => {
                assert!(should_retry, "{cause}");
                assert!(cause.contains("too many failed"), "{cause}");
            }
            other => panic!("expected rate limiting, got {other:?}"),
        }
        let refusals = audit_lines(&edge, "auth_refusal");
        assert_eq!(refusals.len(), 3, "{refusals:?}");
        assert!(refusals[2]["reason"]
            .as_str()
            .unwrap()
            .contains("rate-limited"));
        edge.shutdown().await;
    });
}
