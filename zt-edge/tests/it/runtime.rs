//! The edge runtime over real QUIC on loopback: connectors and clients are made directly
//! from zt-proto, connectors dial real TCP origins, and every test asserts the bytes and
//! the statuses that came out.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;
use zt_creds::TunnelSecret;
use zt_edge::{Edge, EdgeConfig, EdgeHandle, Route, Rule};
use zt_proto::{
    ConnectError, EdgeTrust, FlowStatusCode, OpenError, PeerEndpoint, PeerEvent, PostureCheck,
    PostureReport, TransportSettings,
};
use zt_testkit::data::pattern;
use zt_testkit::loopback::{
    allow_all, audit_lines, connect_client, connect_connector, endpoint, endpoint_with, l4_rule,
    open, provision, refused, round_trip, serve_flows, test_config, update, Loopback, Provision,
    Provisioned,
};
use zt_testkit::origin::hashing_origin;
use zt_testkit::{wait_for, WAIT};

/// The timing these tests want of the edge: a flow open unanswered for 400 ms is retried
/// on another connection, and a flow waits 300 ms for a connector.
fn tune(c: &mut EdgeConfig) {
    c.open_timeout = Duration::from_millis(400);
    // Shorter than the test clients' 1 s open bound, so "no live connector" arrives typed.
    c.connector_wait = Duration::from_millis(300);
}

fn config(dir: &Path) -> EdgeConfig {
    let mut c = test_config(dir);
    tune(&mut c);
    c
}

async fn start(dir: &Path) -> EdgeHandle {
    Edge::start(config(dir)).await.unwrap()
}

/// A tunnel `prod`, `alice@example.com`'s device, `routes` through the tunnel and `rules`.
async fn setup(edge: &EdgeHandle, routes: &[&str], rules: Vec<Rule>) -> Provisioned {
    provision(edge, Provision::new(routes, rules)).await
}

/// The set-up most of these tests share: an edge of [`config`] (then `configure`) routing
/// `routes` through a tunnel with `rules`, one connector connection serving flows, and a
/// client connected.
async fn served(
    configure: impl FnOnce(&mut EdgeConfig),
    routes: &[&str],
    rules: Vec<Rule>,
) -> Loopback {
    Loopback::start(
        |c| {
            tune(c);
            configure(c);
        },
        routes,
        rules,
    )
    .await
}

fn setup_like(s: &Provisioned) -> Provisioned {
    Provisioned {
        tunnel: s.tunnel.clone(),
        secret: TunnelSecret::generate(),
        device: s.device.clone(),
        device_secret: TunnelSecret::generate(),
        vnet: s.vnet,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_flows_reach_v4_and_v6_origins_through_the_connector() {
    let lb = served(|_| {}, &["127.0.0.0/8", "::1/128"], vec![allow_all()]).await;
    assert_eq!(lb.connector.registered().edge_name, "test-edge");
    let live = lb.edge.live_view().tunnel_connections(lb.records.tunnel.id);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].version, "test-connector 1");

    let v4 = hashing_origin("127.0.0.1:0", 100_000);
    let v6 = hashing_origin("[::1]:0", 50_000);
    let payload = pattern(300_000);
    let t = Instant::now();
    round_trip(open(&lb.client, v4.addr).await.unwrap(), &payload, 100_000).await;
    round_trip(
        open(&lb.client, v6.addr).await.unwrap(),
        &payload[..1000],
        50_000,
    )
    .await;
    println!("two flows through the edge in {:?}", t.elapsed());

    // One audit line per flow, with bytes each way and the connector.
    wait_for("the audit lines", || {
        audit_lines(&lb.edge, "flow").len() >= 2
    })
    .await;
    let flows = audit_lines(&lb.edge, "flow");
    assert_eq!(flows.len(), 2);
    assert_eq!(flows[0]["bytes_up"], 300_000);
    assert_eq!(flows[0]["bytes_down"], 32 + 100_000);
    assert_eq!(flows[0]["close_reason"], "completed");
    assert_eq!(flows[0]["rule_name"], "allow loopback");
    assert_eq!(flows[0]["identity_email"], "alice@example.com");
    assert_eq!(flows[0]["connector_kind"], "zt");
    assert_eq!(flows[0]["connector_version"], "test-connector 1");
    assert_eq!(flows[1]["destination"], v6.addr.to_string());
    assert_eq!(flows[0]["vnet"], lb.records.vnet.to_string());
    lb.edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_alike_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let edge = start(dir.path()).await;
    let s = setup(&edge, &["127.0.0.0/8"], vec![]).await;
    let ep = endpoint(&edge);

    // A wrong tunnel secret.
    let wrong = setup_like(&s);
    let e1 = connect_connector(&edge, &ep, &wrong, 0).await.unwrap_err();
    // An unknown device.
    let e2 = connect_client(&edge, &ep, Uuid::new_v4(), &s.device_secret)
        .await
        .unwrap_err();
    // A deleted tunnel, with its right secret.
    let mut deleted = s.tunnel.clone();
    deleted.deleted_at = Some(zt_edge::Timestamp::now());
    update(&edge, move |txn| {
        for r in txn.list::<Route>().unwrap() {
            txn.delete::<Route>(r.id).unwrap();
        }
        txn.put(&deleted).unwrap();
    })
    .await;
    let e3 = connect_connector(&edge, &ep, &s, 0).await.unwrap_err();
    let msg = |e: &ConnectError| match e {
        ConnectError::Refused(r) => (r.code, r.message.clone()),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(msg(&e1), msg(&e2));
    assert_eq!(msg(&e1), msg(&e3));

    let refusals = audit_lines(&edge, "auth_refusal");
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert_eq!(refusals[0]["role"], "connector");
    assert_eq!(refusals[0]["claimed_id"], s.tunnel.id.to_string());
    assert_eq!(refusals[1]["role"], "client");
    assert_eq!(refusals[2]["claimed_id"], s.tunnel.id.to_string());
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_proofs_are_rate_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.auth_rate_limit.burst = 2;
    c.auth_rate_limit.per_minute = 0.0;
    let edge = Edge::start(c).await.unwrap();
    let s = setup(&edge, &[], vec![]).await;
    let ep = endpoint(&edge);
    for _ in 0..2 {
        let e = connect_client(&edge, &ep, Uuid::new_v4(), &s.device_secret).await;
        assert!(e.is_err());
    }
    // Now even the right secret is turned away from this address.
    let e = connect_client(&edge, &ep, s.device.id, &s.device_secret)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectError::Refused(_)), "{e:?}");
    let refusals = audit_lines(&edge, "auth_refusal");
    assert!(refusals[2]["reason"]
        .as_str()
        .unwrap()
        .contains("rate-limited"));
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failure_budget_per_source_serves_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.auth_rate_limit.burst = 2;
    c.auth_rate_limit.per_minute = 0.0;
    let edge = Edge::start(c).await.unwrap();
    let s = setup(&edge, &[], vec![]).await;
    let tcp_at = edge.tcp_addrs()[0];
    assert_eq!(
        tcp_at.port(),
        edge.local_addr().port(),
        "TCP on the QUIC port number"
    );
    let ep = endpoint(&edge);
    // Two failures over QUIC spend the source's budget...
    for _ in 0..2 {
        let e = connect_client(&edge, &ep, Uuid::new_v4(), &s.device_secret).await;
        assert!(e.is_err());
    }
    // ...so over TCP even the right secret is turned away from this address.
    let dialer = zt_proto::TcpDialer::new(
        &zt_proto::EdgeTrust::ca_der(edge.state().ca_cert_der().to_vec()),
        zt_proto::TransportSettings::default(),
    )
    .unwrap();
    let reg = zt_proto::ClientRegistration {
        claim: zt_proto::ClientClaim {
            device_id: s.device.id,
            vnet: String::new(),
        },
        software_version: "test".into(),
        features: vec![],
    };
    let e = dialer
        .connect_client(
            tcp_at,
            "localhost",
            None,
            reg.clone(),
            &zt_proto::ProofKey::Shared(s.device_secret.derive_auth_key()),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectError::Refused(_)), "{e:?}");
    let refusals = audit_lines(&edge, "auth_refusal");
    assert!(refusals[2]["reason"]
        .as_str()
        .unwrap()
        .contains("rate-limited"));
    edge.shutdown().await;

    // And the other way round, on a fresh edge: failures over TCP block QUIC.
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.auth_rate_limit.burst = 2;
    c.auth_rate_limit.per_minute = 0.0;
    let edge = Edge::start(c).await.unwrap();
    let s = setup(&edge, &[], vec![]).await;
    let dialer = zt_proto::TcpDialer::new(
        &zt_proto::EdgeTrust::ca_der(edge.state().ca_cert_der().to_vec()),
        zt_proto::TransportSettings::default(),
    )
    .unwrap();
    let wrong = zt_proto::ProofKey::Shared(TunnelSecret::generate().derive_auth_key());
    for _ in 0..2 {
        let mut r = reg.clone();
        r.claim.device_id = s.device.id;
        let e = dialer
            .connect_client(edge.tcp_addrs()[0], "localhost", None, r, &wrong)
            .await;
        assert!(matches!(e, Err(ConnectError::Refused(_))), "{e:?}");
    }
    let ep = endpoint(&edge);
    let e = connect_client(&edge, &ep, s.device.id, &s.device_secret)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectError::Refused(_)), "{e:?}");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_for_no_route_denied_default_block_and_no_connector() {
    let dir = tempfile::tempdir().unwrap();
    let edge = start(dir.path()).await;
    let deny = l4_rule("no ssh", 10, "block", "net.dst.port == 22");
    let allow = l4_rule("web", 20, "allow", "net.dst.port in {443 8443}");
    let s = setup(&edge, &["127.0.0.0/8"], vec![deny, allow]).await;
    let ep = endpoint(&edge);
    let client = connect_client(&edge, &ep, s.device.id, &s.device_secret)
        .await
        .unwrap();

    // Denied by a named rule.
    let st = refused(open(&client, "127.0.0.1:22".parse().unwrap()).await);
    assert_eq!(st.code, FlowStatusCode::Denied);
    assert_eq!(st.to_string(), "denied by rule no ssh");
    // No rule matches: the l4 default blocks.
    let st = refused(open(&client, "127.0.0.1:80".parse().unwrap()).await);
    assert_eq!(st.code, FlowStatusCode::Denied);
    // Allowed, but no route.
    let st = refused(open(&client, "192.0.2.1:443".parse().unwrap()).await);
    assert_eq!(st.code, FlowStatusCode::NoRoute);
    // Allowed and routed, but the tunnel has no connector.
    let st = refused(open(&client, "127.0.0.1:443".parse().unwrap()).await);
    assert_eq!(st.code, FlowStatusCode::NoConnector);
    // With a connector, the origin's refusal comes back typed.
    let conn = Arc::new(connect_connector(&edge, &ep, &s, 0).await.unwrap());
    serve_flows(conn.clone());
    let st = refused(open(&client, "127.0.0.1:8443".parse().unwrap()).await);
    assert_eq!(st.code, FlowStatusCode::ConnectRefused);

    wait_for("the audit lines", || audit_lines(&edge, "flow").len() >= 5).await;
    let reasons: Vec<_> = audit_lines(&edge, "flow")
        .iter()
        .map(|f| f["close_reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        reasons,
        [
            "denied",
            "denied",
            "no_route",
            "no_connector",
            "connect_failed"
        ]
    );
    edge.shutdown().await;
}

/// A flow for a tunnel whose connector has not registered yet (as after an edge restart,
/// when clients come back first) is held until one registers, within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_waits_for_a_connector_that_registers_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.connector_wait = Duration::from_secs(10);
    let edge = Edge::start(c).await.unwrap();
    let s = setup(&edge, &["127.0.0.0/8"], vec![allow_all()]).await;
    let origin = hashing_origin("127.0.0.1:0", 1000);
    let mut settings = TransportSettings::default();
    settings.open_timeout = Duration::from_secs(15);
    let client_ep = endpoint_with(&edge, settings);
    let client = Arc::new(
        connect_client(&edge, &client_ep, s.device.id, &s.device_secret)
            .await
            .unwrap(),
    );
    let asked = Instant::now();
    let pending = {
        let (client, dest) = (client.clone(), origin.addr);
        tokio::spawn(async move { open(&client, dest).await })
    };
    // The open is held, not refused: it is still pending when the connector arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !pending.is_finished(),
        "the open was answered with no connector registered"
    );
    let ep = endpoint(&edge);
    let conn = Arc::new(connect_connector(&edge, &ep, &s, 0).await.unwrap());
    serve_flows(conn);
    let flow = tokio::time::timeout(WAIT, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    println!(
        "the held open completed {:?} after it was asked for",
        asked.elapsed()
    );
    round_trip(flow, b"held", 1000).await;
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_off_rule_passes_a_server_speaks_first_flow_without_waiting() {
    let banner_origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = banner_origin.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = banner_origin.accept().await.unwrap();
            s.write_all(b"SSH-2.0-origin\r\n").await.unwrap();
        }
    });
    let mut off = Rule::new("Don't inspect the API", 10000, "off", vec!["http".into()]);
    off.traffic = Some(format!("any(http.conn.dst_ip[*] in {{{}}})", origin.ip()));
    // An http block rule exists, so without the off rule the edge would read first bytes.
    let mut block = Rule::new("no example.org", 5, "block", vec!["http".into()]);
    block.traffic = Some("http.request.host == \"example.org\"".into());
    let lb = served(
        |c| {
            // Long enough that waiting for first bytes would be plain in the measurement.
            c.first_bytes.timeout = Duration::from_secs(3);
        },
        &["127.0.0.0/8"],
        vec![allow_all(), off, block],
    )
    .await;
    let Loopback { edge, client, .. } = lb;
    let t = Instant::now();
    let mut flow = open(&client, origin).await.unwrap();
    let mut banner = [0u8; 16];
    tokio::time::timeout(WAIT, flow.read_exact(&mut banner))
        .await
        .unwrap()
        .unwrap();
    let took = t.elapsed();
    println!("server-speaks-first banner through an off rule in {took:?}");
    assert_eq!(&banner, b"SSH-2.0-origin\r\n");
    assert!(
        took < Duration::from_secs(3),
        "the edge waited for first bytes: {took:?}"
    );
    drop(flow);
    wait_for("the audit lines", || !audit_lines(&edge, "flow").is_empty()).await;
    let f = &audit_lines(&edge, "flow")[0];
    assert_eq!(f["action"], "off");
    assert_eq!(f["phase"], "http");
    assert_eq!(f["rule_name"], "Don't inspect the API");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_phase_reads_the_host_and_forwards_the_bytes_it_read() {
    let mut block = Rule::new("no example.org", 5, "block", vec!["http".into()]);
    block.traffic = Some("http.request.host == \"example.org\"".into());
    let lb = served(|_| {}, &["127.0.0.0/8"], vec![allow_all(), block]).await;
    let Loopback { edge, client, .. } = lb;
    let origin = hashing_origin("127.0.0.1:0", 10);
    // Allowed host: every byte, the ones the edge read included, reaches the origin.
    let req = b"GET / HTTP/1.1\r\nHost: kube.internal\r\n\r\nbody".to_vec();
    round_trip(open(&client, origin.addr).await.unwrap(), &req, 10).await;
    // Blocked host: the flow is reset.
    let mut flow = open(&client, origin.addr).await.unwrap();
    flow.write_all(b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(WAIT, flow.read_to_end(&mut buf))
        .await
        .unwrap();
    let err = r.unwrap_err();
    assert_eq!(
        zt_proto::FlowError::reset_code(&err),
        Some(zt_proto::ResetCode::REFUSED)
    );
    wait_for("the audit lines", || audit_lines(&edge, "flow").len() >= 2).await;
    let f = &audit_lines(&edge, "flow")[1];
    assert_eq!(f["rule_name"], "no example.org");
    assert_eq!(f["close_reason"], "denied");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_posture_rules_decide() {
    let mut sre = l4_rule("sre only", 10, "block", "net.dst.port == 7000");
    sre.identity = Some("not any(identity.groups[*] == \"admins\")".into());
    let mut posture = l4_rule("encrypted disks", 20, "allow", "net.dst.port > 0");
    posture.device_posture = Some("device.posture.disk_encrypted".into());
    let lb = served(|_| {}, &["127.0.0.0/8"], vec![sre, posture]).await;
    let Loopback { edge, client, .. } = lb;
    let origin = hashing_origin("127.0.0.1:0", 1);
    // Alice is in "sre", not "admins": the identity rule blocks port 7000.
    let st = refused(open(&client, "127.0.0.1:7000".parse().unwrap()).await);
    assert_eq!(st.to_string(), "denied by rule sre only");
    // No posture reported: the posture rule does not match, the default blocks.
    let st = refused(open(&client, origin.addr).await);
    assert_eq!(st.code, FlowStatusCode::Denied);
    client
        .report_posture(PostureReport {
            checks: vec![PostureCheck {
                name: "disk_encrypted".into(),
                passed: true,
            }],
        })
        .await
        .unwrap();
    // The report is applied by the session task; wait until a flow passes.
    let deadline = Instant::now() + WAIT;
    loop {
        match open(&client, origin.addr).await {
            Ok(flow) => {
                round_trip(flow, b"hi", 1).await;
                break;
            }
            Err(OpenError::Refused(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_past_its_lifetime_is_sent_away_and_age_feeds_policy() {
    // Flows of a session older than one second are blocked by rule.
    let old = l4_rule(
        "fresh sessions only",
        10,
        "block",
        "session.age_seconds >= 1",
    );
    let lb = served(
        |c| {
            c.max_session_lifetime = Some(Duration::from_secs(2));
            c.session_drain = Duration::from_millis(500);
        },
        &["127.0.0.0/8"],
        vec![old, allow_all()],
    )
    .await;
    let origin = hashing_origin("127.0.0.1:0", 1);
    round_trip(open(&lb.client, origin.addr).await.unwrap(), b"young", 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let st = refused(open(&lb.client, origin.addr).await);
    assert_eq!(st.to_string(), "denied by rule fresh sessions only");
    let t = Instant::now();
    let went_away = tokio::time::timeout(WAIT, async {
        loop {
            match lb.client.next_event().await {
                Some(PeerEvent::GoAway(g)) => return g,
                Some(_) => continue,
                None => panic!("control stream ended without go-away"),
            }
        }
    })
    .await
    .unwrap();
    println!("go-away {:?} after the lifetime check", t.elapsed());
    assert!(went_away.reason.contains("lifetime"));
    tokio::time::timeout(WAIT, lb.client.closed())
        .await
        .unwrap();
    // A new session authenticates again and is young.
    let again = connect_client(
        &lb.edge,
        &lb.endpoint,
        lb.records.device.id,
        &lb.records.device_secret,
    )
    .await
    .unwrap();
    round_trip(open(&again, origin.addr).await.unwrap(), b"again", 1).await;
    lb.edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_added_live_is_pushed_and_usable_while_open_flows_keep_flowing() {
    let lb = served(|_| {}, &["127.0.0.1/32"], vec![allow_all()]).await;
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let v6 = hashing_origin("[::1]:0", 5);
    let first = tokio::time::timeout(WAIT, lb.client.next_event())
        .await
        .unwrap();
    match first {
        Some(PeerEvent::RoutesPushed(p)) => {
            assert_eq!(
                p.routes,
                vec!["127.0.0.1/32".parse::<ipnet::IpNet>().unwrap()]
            )
        }
        other => panic!("expected the first route push, got {other:?}"),
    }
    let mut open_flow = open(&lb.client, echo_addr).await.unwrap();
    open_flow.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    open_flow.read_exact(&mut buf).await.unwrap();
    assert_eq!(
        refused(open(&lb.client, v6.addr).await).code,
        FlowStatusCode::NoRoute
    );

    let tunnel = lb.records.tunnel.id;
    let vnet = lb.records.vnet;
    let t = Instant::now();
    update(&lb.edge, move |txn| {
        txn.put(&Route::new("::1/128".parse().unwrap(), vnet, tunnel))
            .unwrap();
    })
    .await;
    let pushed = tokio::time::timeout(WAIT, lb.client.next_event())
        .await
        .unwrap();
    println!("route push {:?} after the commit", t.elapsed());
    match pushed {
        Some(PeerEvent::RoutesPushed(p)) => assert_eq!(p.routes.len(), 2),
        other => panic!("expected a route push, got {other:?}"),
    }
    round_trip(open(&lb.client, v6.addr).await.unwrap(), b"new route", 5).await;
    // The flow opened before the change still carries bytes.
    open_flow.write_all(b"after!").await.unwrap();
    open_flow.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after!");
    lb.edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_open_is_retried_on_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let edge = start(dir.path()).await;
    let s = setup(&edge, &["127.0.0.0/8"], vec![allow_all()]).await;
    let ep = endpoint(&edge);
    // The first connection accepts flow requests and never answers them.
    let silent = Arc::new(connect_connector(&edge, &ep, &s, 0).await.unwrap());
    let held = silent.clone();
    tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Some(req) = held.accept_flow().await {
            kept.push(req);
        }
    });
    let good = Arc::new(connect_connector(&edge, &ep, &s, 1).await.unwrap());
    serve_flows(good.clone());
    let origin = hashing_origin("127.0.0.1:0", 3);
    let client = connect_client(&edge, &ep, s.device.id, &s.device_secret)
        .await
        .unwrap();
    let t = Instant::now();
    round_trip(open(&client, origin.addr).await.unwrap(), b"retry me", 3).await;
    println!(
        "flow opened after one unanswered attempt in {:?}",
        t.elapsed()
    );
    let live = edge.live_view().tunnel_connections(s.tunnel.id);
    let silent_id = silent.registered().connection_id;
    let silent_view = live.iter().find(|c| c.connection_id == silent_id).unwrap();
    assert!(!silent_view.healthy, "{live:?}");
    // Later flows go to the healthy connection without waiting.
    round_trip(open(&client, origin.addr).await.unwrap(), b"again", 3).await;
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_travels_end_to_end() {
    let lb = served(|_| {}, &["127.0.0.0/8"], vec![allow_all()]).await;
    let Loopback { edge, client, .. } = lb;
    // The origin reads to EOF (the client's FIN), then sends 4 MiB.
    let origin = hashing_origin("127.0.0.1:0", 4 << 20);
    let t = Instant::now();
    round_trip(
        open(&client, origin.addr).await.unwrap(),
        b"request then FIN",
        4 << 20,
    )
    .await;
    println!("4 MiB after a half-close in {:?}", t.elapsed());
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_edge_keeps_its_ca_and_accepts_the_same_connector_secret() {
    let dir = tempfile::tempdir().unwrap();
    let edge = start(dir.path()).await;
    let s = setup(&edge, &["127.0.0.0/8"], vec![]).await;
    let fingerprint = edge.state().ca_fingerprint().to_owned();
    let ca = edge.state().ca_cert_der().to_vec();
    edge.shutdown().await;

    let edge = start(dir.path()).await;
    assert_eq!(edge.state().ca_fingerprint(), fingerprint);
    let ep = PeerEndpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        &EdgeTrust::ca_der(ca),
        TransportSettings::default(),
    )
    .unwrap();
    let _conn = connect_connector(&edge, &ep, &s, 0).await.unwrap();
    assert_eq!(edge.live_view().tunnel_connections(s.tunnel.id).len(), 1);
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flows_ride_datagrams_through_the_edge() {
    let lb = served(|_| {}, &["127.0.0.0/8"], vec![allow_all()]).await;
    let Loopback { edge, client, .. } = lb;
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = echo.recv_from(&mut buf).await.unwrap();
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            echo.send_to(&reply, from).await.unwrap();
        }
    });
    let mut flow = client.open_udp_flow(echo_addr, vec![]).await.unwrap();
    // Datagrams may be lost; send until an answer comes.
    let answer = tokio::time::timeout(WAIT, async {
        loop {
            flow.send(bytes::Bytes::from_static(b"dns?")).unwrap();
            if let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(200), flow.recv()).await
            {
                return p;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&answer[..], b"echo:dns?");
    flow.close();
    wait_for("the audit lines", || !audit_lines(&edge, "flow").is_empty()).await;
    let f = &audit_lines(&edge, "flow")[0];
    assert_eq!(f["protocol"], "udp");
    assert!(f["bytes_down"].as_u64().unwrap() >= 9);
    edge.shutdown().await;
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_flows_and_refusals_and_ready_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.metrics = Some("127.0.0.1:0".parse().unwrap());
    let edge = Edge::start(c).await.unwrap();
    let addr = edge.metrics_addr().unwrap();
    assert!(http_get(addr, "/ready").await.starts_with("HTTP/1.1 200"));
    let s = setup(&edge, &["127.0.0.0/8"], vec![allow_all()]).await;
    let ep = endpoint(&edge);
    let conn = Arc::new(connect_connector(&edge, &ep, &s, 0).await.unwrap());
    serve_flows(conn.clone());
    let client = connect_client(&edge, &ep, s.device.id, &s.device_secret)
        .await
        .unwrap();
    let origin = hashing_origin("127.0.0.1:0", 7);
    round_trip(open(&client, origin.addr).await.unwrap(), b"count me", 7).await;
    let _ = connect_client(&edge, &ep, Uuid::new_v4(), &s.device_secret).await;
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = http_get(addr, "/metrics").await;
        if text.contains("zt_edge_flows_total{outcome=\"completed\"} 1")
            || Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        text.contains(&format!(
            "zt_edge_connector_connections{{tunnel=\"{}\"}} 1",
            s.tunnel.id
        )),
        "{text}"
    );
    assert!(
        text.contains("zt_edge_flows_total{outcome=\"completed\"} 1"),
        "{text}"
    );
    assert!(text.contains("zt_edge_auth_refusals_total 1"), "{text}");
    assert!(text.contains("zt_edge_client_sessions 1"), "{text}");
    assert!(
        text.contains("zt_edge_flow_bytes_total{direction=\"up\"} 8"),
        "{text}"
    );
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_does_not_compile_keeps_the_last_good_policy() {
    let lb = served(|_| {}, &["127.0.0.0/8"], vec![allow_all()]).await;
    let origin = hashing_origin("127.0.0.1:0", 2);
    // A typo the admin API would have refused, written straight into the store.
    update(&lb.edge, |txn| {
        txn.put(&l4_rule("typo", 1, "block", "net.dst.prot == 443"))
            .unwrap();
    })
    .await;
    round_trip(
        open(&lb.client, origin.addr).await.unwrap(),
        b"still allowed",
        2,
    )
    .await;
    // Routes still reload alongside: a new route is usable.
    let (tunnel, vnet) = (lb.records.tunnel.id, lb.records.vnet);
    update(&lb.edge, move |txn| {
        txn.put(&Route::new("::1/128".parse().unwrap(), vnet, tunnel))
            .unwrap();
    })
    .await;
    let v6 = hashing_origin("[::1]:0", 2);
    round_trip(open(&lb.client, v6.addr).await.unwrap(), b"v6", 2).await;
    lb.edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_loses_its_session_at_once() {
    let lb = served(|_| {}, &["127.0.0.0/8"], vec![allow_all()]).await;
    let origin = hashing_origin("127.0.0.1:0", 2);
    round_trip(open(&lb.client, origin.addr).await.unwrap(), b"ok", 2).await;
    let mut revoked = lb.records.device.clone();
    revoked.revoked = true;
    update(&lb.edge, move |txn| txn.put(&revoked).unwrap()).await;
    // The edge ends the revoked device's session at once, not only its next flow.
    let lost = tokio::time::timeout(WAIT, lb.client.closed())
        .await
        .expect("the revoked device's connection is closed");
    assert!(format!("{lost:?}").contains("device revoked"), "{lost:?}");
    assert!(open(&lb.client, origin.addr).await.is_err());
    // And it does not register again.
    let again = connect_client(
        &lb.edge,
        &lb.endpoint,
        lb.records.device.id,
        &lb.records.device_secret,
    )
    .await;
    assert!(again.is_err(), "a revoked device registered again");
    lb.edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_go_away_to_connectors_and_clients() {
    let dir = tempfile::tempdir().unwrap();
    let edge = start(dir.path()).await;
    let s = setup(&edge, &["127.0.0.0/8"], vec![allow_all()]).await;
    let ep = endpoint(&edge);
    let conn = connect_connector(&edge, &ep, &s, 0).await.unwrap();
    let client = connect_client(&edge, &ep, s.device.id, &s.device_secret)
        .await
        .unwrap();
    // The first route push comes once the session is in place.
    let pushed = tokio::time::timeout(WAIT, client.next_event())
        .await
        .unwrap();
    assert!(
        matches!(pushed, Some(PeerEvent::RoutesPushed(_))),
        "{pushed:?}"
    );
    let stop = tokio::spawn(edge.shutdown());
    let to_connector = tokio::time::timeout(WAIT, async {
        loop {
            match conn.next_event().await {
                Some(PeerEvent::GoAway(g)) => return g,
                Some(_) => continue,
                None => panic!("no go-away"),
            }
        }
    })
    .await
    .unwrap();
    assert!(to_connector.reason.contains("shutting down"));
    let to_client = tokio::time::timeout(WAIT, async {
        loop {
            match client.next_event().await {
                Some(PeerEvent::GoAway(g)) => return g,
                Some(_) => continue,
                None => panic!("no go-away"),
            }
        }
    })
    .await
    .unwrap();
    assert!(to_client.reason.contains("shutting down"));
    tokio::time::timeout(WAIT, stop).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
}

/// A flow sees one revision from its first decision to its audit line: a device removed
/// while the connector has not yet answered the flow's open gets the flow refused, with
/// close reason `revoked` and one audit line decided in the l4 phase, never carried into
/// the http phase with no identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_removed_while_its_flow_opens_is_refused_not_inspected_without_identity() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // The connector's answer is held on purpose below: no retry on another connection.
    cfg.open_timeout = Duration::from_secs(15);
    let edge = Edge::start(cfg).await.unwrap();
    // An http rule that inspects, keyed on identity: on a flow whose identity went missing
    // it would block in the http phase.
    let mut http = Rule::new("only alice", 10, "block", vec!["http".into()]);
    http.traffic = Some("http.request.host != \"\"".into());
    http.identity = Some("not identity.email == \"alice@example.com\"".into());
    let s = setup(&edge, &["127.0.0.0/8"], vec![allow_all(), http]).await;
    let mut settings = TransportSettings::default();
    settings.open_timeout = Duration::from_secs(15);
    let ep = endpoint_with(&edge, settings);
    let conn = Arc::new(connect_connector(&edge, &ep, &s, 0).await.unwrap());
    let origin_server = hashing_origin("127.0.0.1:0", 2);
    let origin = origin_server.addr;

    // The connector takes the flow's open, tells the test, and answers only when told.
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let connector = conn.clone();
    tokio::spawn(async move {
        let (header, responder) = connector.accept_flow().await.unwrap();
        opened_tx.send(()).unwrap();
        release_rx.await.unwrap();
        let tcp = TcpStream::connect(header.dest).await.unwrap();
        if let Ok(flow) = responder.accept().await {
            zt_testkit::loopback::splice(flow, tcp).await;
        }
    });
    let client = connect_client(&edge, &ep, s.device.id, &s.device_secret)
        .await
        .unwrap();
    let before = audit_lines(&edge, "flow").len();
    let started = Instant::now();
    let flow = tokio::spawn(async move {
        let r = client
            .open_flow(origin, zt_proto::Protocol::Tcp, vec![])
            .await;
        (r, client)
    });
    tokio::time::timeout(WAIT, opened_rx)
        .await
        .unwrap()
        .unwrap();
    let device = s.device.id;
    update(&edge, move |txn| {
        txn.delete::<zt_edge::Device>(device).unwrap();
    })
    .await;
    release_tx.send(()).unwrap();
    let (result, _client) = tokio::time::timeout(WAIT, flow).await.unwrap().unwrap();
    // Either the flow's own check refuses it or the session, ended at once by the
    // removal, takes it down first; never does it open.
    match result {
        Err(zt_proto::OpenError::Refused(st)) => {
            assert_eq!(st.code, FlowStatusCode::Denied);
            assert!(st.detail.contains("no longer authorized"), "{}", st.detail);
        }
        Err(e) => assert!(format!("{e:?}").contains("device revoked"), "{e:?}"),
        Ok(_) => panic!("the flow of a removed device opened"),
    }
    println!(
        "MEASURED open held, device removed, flow ended after {:?}",
        started.elapsed()
    );

    let mut lines = Vec::new();
    wait_for("the flow's audit line", || {
        lines = audit_lines(&edge, "flow").split_off(before);
        !lines.is_empty()
    })
    .await;
    // The audit log is flushed about once a second: give a second line the time to show.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lines = audit_lines(&edge, "flow").split_off(before);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["close_reason"], "revoked", "{line}");
    assert_eq!(line["phase"], "l4", "{line}");
    assert_eq!(line["action"], "allow", "{line}");
    assert_eq!(line["identity_email"], "alice@example.com", "{line}");
    assert_eq!(line["destination"], origin.to_string(), "{line}");
    edge.shutdown().await;
}
