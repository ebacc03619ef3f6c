//! The connector runtime against a test edge over real QUIC on 127.0.0.1: registration of
//! HA connections, readiness, reconnects, go-away, flows to real TCP and UDP origins, the
//! flow limit, the allow-list, drains and refused credentials.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use zt_connector::{Connector, ConnectorHandle, DialErrorKind, DrainOutcome, SOFTWARE_VERSION};
use zt_proto::{FlowStatusCode, OpenError, Protocol};

async fn start(config: zt_connector::ConnectorConfig, tunnel: &Tunnel) -> ConnectorHandle {
    Connector::start_with(config, tunnel.credentials(), test_settings())
        .await
        .unwrap()
}

async fn registered(edge: &mut TestEdge, tunnel: &Tunnel, ha: u8, extra: &str) -> ConnectorHandle {
    let handle = start(config_yaml(edge.addr, &edge.pki, ha, extra), tunnel).await;
    edge.registrations(usize::from(ha)).await;
    wait_ready(handle.metrics_addr().unwrap(), |c, n| {
        c == 200 && n == u64::from(ha)
    })
    .await;
    handle
}

fn refusal(err: OpenError) -> FlowStatusCode {
    match err {
        OpenError::Refused(status) => status.code,
        other => panic!("expected a refusal status, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_connections_spread_over_edges_and_ready_reports_them() {
    let tunnel = Tunnel::new();
    let pki = pki();
    let mut a = TestEdge::start_on("127.0.0.1:0".parse().unwrap(), &tunnel, pki.clone()).await;
    let mut b = TestEdge::start_on("127.0.0.1:0".parse().unwrap(), &tunnel, pki.clone()).await;
    let text = format!(
        "metrics: 127.0.0.1:0\nedge: [{}, {}]\nedge-ca-fingerprint: {}\n",
        a.addr,
        b.addr,
        pki.ca_fingerprint()
    );
    let config = zt_connector::ConnectorConfig::parse(&text, "t.yaml").unwrap();
    assert_eq!(config.ha_connections, 4, "the default");
    let handle = start(config, &tunnel).await;

    let mut ids = Vec::new();
    for (edge, want) in [(&mut a, [0u8, 2]), (&mut b, [1, 3])] {
        let mut got = Vec::new();
        while got.len() < 2 {
            if let Note::Registered {
                conn_index,
                connector_id,
                version,
            } = edge.next_note().await
            {
                assert_eq!(version, SOFTWARE_VERSION);
                ids.push(connector_id);
                got.push(conn_index);
            }
        }
        got.sort_unstable();
        assert_eq!(got, want, "connection i goes to edge i mod 2");
    }
    assert!(ids.iter().all(|id| *id == handle.connector_id()));

    let metrics = handle.metrics_addr().unwrap();
    wait_ready(metrics, |c, n| c == 200 && n == 4).await;
    let (_, body) = http_get(metrics, "/ready").await;
    assert!(body.contains(&handle.connector_id().to_string()), "{body}");
    let (_, text) = http_get(metrics, "/metrics").await;
    assert!(
        text.lines().any(|l| l == "zt_connector_ha_connections 4"),
        "{text}"
    );
    assert_eq!(handle.ready_connections(), 4);
    // The connection set reports where each connection goes: two to each edge, over QUIC.
    let set = handle.connections();
    assert_eq!(set.len(), 4);
    for edge in [a.addr, b.addr] {
        let on = set
            .iter()
            .filter(|m| m.placement.edge == edge.to_string())
            .count();
        assert_eq!(on, 2, "two connections to {edge}: {set:?}");
    }
    assert!(set.iter().all(|m| m.placement.transport == "quic"));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_without_an_edge_and_follows_it_down_and_back() {
    let tunnel = Tunnel::new();
    let pki = pki();
    let addr = free_udp_addr();
    let handle = start(config_yaml(addr, &pki, 2, ""), &tunnel).await;
    let metrics = handle.metrics_addr().unwrap();

    // Nothing listens at the edge address yet.
    let (code, body) = http_get(metrics, "/ready").await;
    assert_eq!((code, ready_connections(&body)), (503, 0), "{body}");
    assert_eq!(http_get(metrics, "/healthcheck").await.0, 200);

    let mut edge = TestEdge::start_on(addr, &tunnel, pki.clone()).await;
    assert_eq!(edge.registrations(2).await, [0, 1]);
    wait_ready(metrics, |c, n| c == 200 && n == 2).await;

    // The edge disappears: readiness falls.
    edge.stop().await;
    wait_ready(metrics, |c, n| c == 503 && n == 0).await;
    assert_eq!(http_get(metrics, "/healthcheck").await.0, 200);

    // It comes back on the same address: the connector re-registers on its own.
    let back = Instant::now();
    let mut edge = TestEdge::start_on(addr, &tunnel, pki).await;
    assert_eq!(edge.registrations(2).await, [0, 1]);
    wait_ready(metrics, |c, n| c == 200 && n == 2).await;
    eprintln!(
        "re-registered {:?} after the edge came back",
        back.elapsed()
    );
    handle.shutdown().await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_away_gets_a_replacement_connection() {
    let tunnel = Tunnel::new();
    let mut edge = TestEdge::start(&tunnel).await;
    let handle = registered(&mut edge, &tunnel, 2, "").await;
    let metrics = handle.metrics_addr().unwrap();

    let old = edge.link();
    let index = old.claim().conn_index;
    old.go_away(Duration::from_secs(3), "test edge draining")
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        if let Note::Registered { conn_index, .. } = edge.next_note().await {
            assert_eq!(conn_index, index, "the replacement takes the same index");
            break;
        }
    }
    eprintln!(
        "replacement registered {:?} after go-away",
        started.elapsed()
    );
    wait_ready(metrics, |c, n| c == 200 && n == 2).await;
    handle.shutdown().await;
    edge.stop().await;
}

/// Origin that reads until the edge's FIN, then answers with what it read followed by a
/// tail of its own, then closes.
async fn echo_then_talk_origin(tail: Vec<u8>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                s.write_all(&got).await.unwrap();
                s.write_all(&tail).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_flow_keeps_half_close_both_ways() {
    let tunnel = Tunnel::new();
    let mut edge = TestEdge::start(&tunnel).await;
    let handle = registered(&mut edge, &tunnel, 2, "").await;

    // 1. The edge side half-closes first; the origin keeps sending after that.
    let sent = payload(7, 768 * 1024);
    let tail = payload(99, 256 * 1024);
    let origin = echo_then_talk_origin(tail.clone()).await;
    let mut flow = edge
        .link()
        .open_flow(origin, Protocol::Tcp, vec![])
        .await
        .unwrap();
    flow.write_all(&sent).await.unwrap();
    flow.shutdown().await.unwrap();
    let mut back = Vec::new();
    flow.read_to_end(&mut back).await.unwrap();
    let mut want = sent.clone();
    want.extend_from_slice(&tail);
    assert_eq!(back.len(), want.len());
    assert_eq!(sha256(&back), sha256(&want));

    // 2. The origin half-closes first; the edge keeps sending after that.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let greeting = payload(3, 300 * 1024);
    let g = greeting.clone();
    let origin_task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(&g).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut flow = edge
        .link()
        .open_flow(origin, Protocol::Tcp, vec![])
        .await
        .unwrap();
    let mut first = Vec::new();
    flow.read_to_end(&mut first).await.unwrap();
    assert_eq!(sha256(&first), sha256(&greeting));
    let reply = payload(5, 500 * 1024);
    flow.write_all(&reply).await.unwrap();
    flow.shutdown().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), origin_task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sha256(&got), sha256(&reply));

    let m = handle.metrics();
    let expect_up = (sent.len() + reply.len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while m.active_flows() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(m.active_flows(), 0);
    assert_eq!(m.total_flows(), 2);
    let (_, text) = http_get(handle.metrics_addr().unwrap(), "/metrics").await;
    assert!(
        text.lines().any(
            |l| l == format!("zt_connector_bytes_total{{direction=\"to_origin\"}} {expect_up}")
        ),
        "{text}"
    );
    handle.shutdown().await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_reset_reaches_the_edge_as_a_reset() {
    let tunnel = Tunnel::new();
    let mut edge = TestEdge::start(&tunnel).await;
    let handle = registered(&mut edge, &tunnel, 1, "").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // Once the flow is open end to end (the edge's first bytes arrived), abort it.
        let mut first = [0u8; 1];
        s.read_exact(&mut first).await.unwrap();
        // Zero linger: closing sends an RST.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    });
    let mut flow = edge
        .link()
        .open_flow(origin, Protocol::Tcp, vec![])
        .await
        .unwrap();
    flow.write_all(b"x").await.unwrap();
    let mut buf = [0u8; 16];
    let err = flow.read(&mut buf).await.unwrap_err();
    assert_eq!(
        zt_proto::FlowError::reset_code(&err),
        Some(zt_proto::ResetCode::CONNECTION_RESET),
        "{err}"
    );
    handle.shutdown().await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_port_and_disallowed_destination_get_their_statuses() {
    let tunnel = Tunnel::new();
    let mut edge = TestEdge::start(&tunnel).await;
    let handle = registered(
        &mut edge,
        &tunnel,
        1,
        "zt-allowed-destinations: [127.0.0.1/32]\n",
    )
    .await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let link = edge.link();
    let err = link
        .open_flow(closed, Protocol::Tcp, vec![])
        .await
        .unwrap_err();
    assert_eq!(refusal(err), FlowStatusCode::ConnectRefused);

    let outside = "127.0.0.2:80".parse().unwrap();
    let err = link
        .open_flow(outside, Protocol::Tcp, vec![])
        .await
        .unwrap_err();
    assert_eq!(refusal(err), FlowStatusCode::Denied);

    let m = handle.metrics();
    assert_eq!(m.dial_errors(DialErrorKind::Refused), 1);
    assert_eq!(m.dial_errors(DialErrorKind::NotAllowed), 1);
    handle.shutdown().await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_active_flows_refuses_the_extra_flow() {
    let tunnel = Tunnel::new();
    let mut edge = TestEdge::start(&tunnel).await;
    let handle = registered(
        &mut edge,
        &tunnel,
        1,
        "warp-routing:\n  maxActiveFlows: 1\n",
    )
    .await;
    let origin = echo_then_talk_origin(Vec::new()).await;
    let link = edge.link();
    let mut first = link.open_flow(origin, Protocol::Tcp, vec![]).await.unwrap();
    let err = link
        .open_flow(origin, Protocol::Tcp, vec![])
        .await
        .unwrap_err();
    assert_eq!(refusal(err), FlowStatusCode::TooManyFlows);
    assert_eq!(handle.metrics().dial_errors(DialErrorKind::TooManyFlows), 1);
    // The first flow still works, and once it ends a new one is admitted.
    first.write_all(b"ping").await.unwrap();
    first.shutdown().await.unwrap();
    let mut back = Vec::new();
    first.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"ping");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(30);
    while handle.metrics().active_flows() > 0 {
        assert!(Instant::now() < deadline, "the first flow never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = link.open_flow(origin, Protocol::Tcp, vec![]).await.unwrap();
    again.shutdown().await.unwrap();
    let mut back = Vec::new();
    again.read_to_end(&mut back).await.unwrap();
    handle.shutdown().await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flow_echoes() {
    let tunnel = Tunnel::new();
    let mut edge = TestEdge::start(&tunnel).await;
    let handle = registered(&mut edge, &tunnel, 1, "").await;
    let origin = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = origin.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = origin.recv_from(&mut buf).await {
            let _ = origin.send_to(&buf[..n], from).await;
        }
    });
    let mut flow = edge
        .link()
        .open_udp_flow(origin_addr, vec![])
        .await
        .unwrap();
    for i in 0..5u8 {
        let datagram = bytes::Bytes::from(payload(u64::from(i), 200 + usize::from(i)));
        // A datagram may be lost even on loopback; resend until the echo comes.
        let echoed = loop {
            flow.send(datagram.clone()).unwrap();
            match tokio::time::timeout(Duration::from_secs(2), flow.recv()).await {
                Ok(Some(p)) => break p,
                Ok(None) => panic!("the connector ended the UDP flow"),
                Err(_) => eprintln!("no echo within 2 s; resending"),
            }
        };
        assert_eq!(echoed, datagram);
    }
    assert!(handle.metrics().total_flows() >= 1);
    flow.close();
    handle.shutdown().await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_unregisters_and_waits_for_the_flow_in_flight() {
    let tunnel = Tunnel::new();
    let mut edge = TestEdge::start(&tunnel).await;
    let handle = Arc::new(registered(&mut edge, &tunnel, 2, "").await);
    let metrics = handle.metrics_addr().unwrap();
    let origin = echo_then_talk_origin(b" -- done".to_vec()).await;
    let link = edge.link();
    let mut flow = link.open_flow(origin, Protocol::Tcp, vec![]).await.unwrap();
    flow.write_all(b"before the drain").await.unwrap();

    let h = handle.clone();
    let drain = tokio::spawn(async move { h.drain(std::future::pending()).await });

    // The edge is told on both connections, with the configured grace period.
    let mut told = Vec::new();
    while told.len() < 2 {
        if let Note::Unregistered { conn_index, grace } = edge.next_note().await {
            assert_eq!(grace, Duration::from_secs(20));
            told.push(conn_index);
        }
    }
    told.sort_unstable();
    assert_eq!(told, [0, 1]);
    // No new flows go to this connector, and readiness drops.
    let err = link
        .open_flow(origin, Protocol::Tcp, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Draining), "{err}");
    wait_ready(metrics, |c, n| c == 503 && n == 0).await;

    // The flow in flight holds the drain open, then finishes normally.
    assert_eq!(handle.metrics().active_flows(), 1);
    assert!(
        !drain.is_finished(),
        "the drain ended with a flow in flight"
    );
    flow.write_all(b" and after it").await.unwrap();
    flow.shutdown().await.unwrap();
    let mut back = Vec::new();
    flow.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"before the drain and after it -- done");

    let outcome = tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, DrainOutcome::Drained);
    // Nothing reconnects after a drain.
    assert_eq!(handle.ready_connections(), 0);
    Arc::try_unwrap(handle).unwrap().shutdown().await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_refused_and_ready_stays_503() {
    let tunnel = Tunnel::new();
    let mut edge = TestEdge::start(&tunnel).await;
    let impostor = Tunnel {
        id: tunnel.id,
        secret: zt_creds::TunnelSecret::generate(),
    };
    let handle = start(config_yaml(edge.addr, &edge.pki, 2, ""), &impostor).await;
    for _ in 0..2 {
        match edge.next_note().await {
            Note::Refused(why) => eprintln!("edge refused: {why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while handle.metrics().registration_failures() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, body) = http_get(handle.metrics_addr().unwrap(), "/ready").await;
    assert_eq!((code, ready_connections(&body)), (503, 0), "{body}");
    assert_eq!(
        http_get(handle.metrics_addr().unwrap(), "/healthcheck")
            .await
            .0,
        200
    );
    handle.shutdown().await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_alone_names_the_edge_and_its_ca() {
    let tunnel = Tunnel::new();
    let mut edge = TestEdge::start(&tunnel).await;
    let mut token = zt_creds::TunnelToken::from_credentials(tunnel.credentials());
    token.edge = vec![edge.addr.to_string()];
    token.ca_fingerprint = Some(edge.pki.ca_fingerprint());
    let text = format!(
        "tunnel: {}\nmetrics: 127.0.0.1:0\nha-connections: 1\ntoken: {}\n",
        tunnel.id,
        &*token.encode()
    );
    let mut config = zt_connector::ConnectorConfig::parse(&text, "t.yaml").unwrap();
    let creds = config.load_credentials().unwrap();
    assert_eq!(config.edge.len(), 1);
    assert_eq!(config.edge_ca_fingerprint, Some(edge.pki.ca_fingerprint()));
    let handle = Connector::start_with(config, creds, test_settings())
        .await
        .unwrap();
    assert_eq!(edge.registrations(1).await, [0]);
    handle.shutdown().await;
    edge.stop().await;
}
