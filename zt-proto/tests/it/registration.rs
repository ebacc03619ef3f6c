//! Registration over real QUIC on loopback: who gets in and who is refused.
#![cfg(feature = "transport")]

use std::time::Duration;

use crate::common::*;
use uuid::Uuid;
use zt_creds::TunnelSecret;
use zt_proto::*;

fn expect_unauthorized(err: ConnectError) {
    match err {
        ConnectError::Refused(e) => {
            assert_eq!(e.code, RegisterErrorCode::Unauthorized);
            assert_eq!(e.retry, RetryAdvice::Never);
            assert_eq!(e.message, REFUSED_MESSAGE);
        }
        other => panic!("expected an unauthorized refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connector_registers_and_both_sides_agree_on_who_it_is() {
    let mut edge = edge();
    let tunnel = edge.add_identity();
    let ep = peer_endpoint(&edge.trust());
    let reg = connector_registration(tunnel.id, 3);
    let conn = ep
        .connect_connector(
            edge.addr,
            SERVER_NAME,
            reg.clone(),
            &tunnel.secret.derive_auth_key(),
        )
        .await
        .unwrap();
    assert_eq!(conn.registered().edge_name, "edge-test");
    assert_eq!(conn.registered().protocol_version, PROTOCOL_VERSION);
    let EdgePeer::Connector(link) = edge.next_peer().await.unwrap() else {
        panic!("expected a connector")
    };
    assert_eq!(link.claim(), &reg.claim);
    assert_eq!(link.connection_id(), conn.registered().connection_id);
    assert_eq!(link.software(), ("zt test", &["half-close".to_owned()][..]));
    assert!(edge.auth.refusals.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_secret_and_an_unknown_tunnel_get_the_same_refusal() {
    let mut edge = edge();
    let tunnel = edge.add_identity();
    let ep = peer_endpoint(&edge.trust());
    let wrong = TunnelSecret::generate().derive_auth_key();
    let e1 = ep
        .connect_connector(
            edge.addr,
            SERVER_NAME,
            connector_registration(tunnel.id, 0),
            &wrong,
        )
        .await
        .unwrap_err();
    expect_unauthorized(e1);
    let e2 = ep
        .connect_connector(
            edge.addr,
            SERVER_NAME,
            connector_registration(Uuid::new_v4(), 0),
            &tunnel.secret.derive_auth_key(),
        )
        .await
        .unwrap_err();
    expect_unauthorized(e2);
    // A right tunnel and secret under another account tag is refused the same way.
    let mut other_account = connector_registration(tunnel.id, 0);
    other_account.claim.account_tag = "00000000000000000000000000000000".into();
    let e3 = ep
        .connect_connector(
            edge.addr,
            SERVER_NAME,
            other_account,
            &tunnel.secret.derive_auth_key(),
        )
        .await
        .unwrap_err();
    expect_unauthorized(e3);
    for _ in 0..3 {
        assert!(edge.next_peer().await.is_err());
    }
    let reasons: Vec<_> = edge
        .auth
        .refusals
        .lock()
        .unwrap()
        .iter()
        .map(|(_, r)| *r)
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == RefusalReason::BadProof)
            .count(),
        1,
        "{reasons:?}"
    );
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == RefusalReason::UnknownIdentity)
            .count(),
        2,
        "{reasons:?}"
    );
}

#[tokio::test]
async fn failed_proofs_are_rate_limited_per_source_address() {
    let auth = TestAuth {
        rate_limit_after: Some(2),
        ..TestAuth::default()
    };
    let mut edge = edge_with(auth, test_settings());
    let tunnel = edge.add_identity();
    let ep = peer_endpoint(&edge.trust());
    let wrong = TunnelSecret::generate().derive_auth_key();
    for _ in 0..2 {
        let e = ep
            .connect_connector(
                edge.addr,
                SERVER_NAME,
                connector_registration(tunnel.id, 0),
                &wrong,
            )
            .await
            .unwrap_err();
        expect_unauthorized(e);
        assert!(edge.next_peer().await.is_err());
    }
    // Now even the right secret is turned away from this address, with retry advice.
    let e = connect_tunnel(&ep, edge.addr, SERVER_NAME, &tunnel)
        .await
        .unwrap_err();
    match e {
        ConnectError::Refused(r) => {
            assert_eq!(r.code, RegisterErrorCode::RateLimited);
            assert_eq!(r.retry, RetryAdvice::After(Duration::from_secs(10)));
        }
        other => panic!("expected rate limiting, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_registers_and_gets_routes_and_reports_posture() {
    let mut edge = edge();
    let (_ep, conn, link) = client_pair(&mut edge).await;
    let push = RoutePush {
        generation: 1,
        vnet: "default".into(),
        routes: vec![
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8::/64".parse().unwrap(),
        ],
    };
    link.push_routes(push.clone()).await.unwrap();
    assert_eq!(conn.next_event().await, Some(PeerEvent::RoutesPushed(push)));
    let report = PostureReport {
        checks: vec![PostureCheck {
            name: "disk-encrypted".into(),
            passed: true,
        }],
    };
    conn.report_posture(report.clone()).await.unwrap();
    assert_eq!(link.next_event().await, Some(EdgeEvent::Posture(report)));
    conn.ping(9).await.unwrap();
    assert_eq!(conn.next_event().await, Some(PeerEvent::Pong(9)));
    link.ping(10).await.unwrap();
    assert_eq!(link.next_event().await, Some(EdgeEvent::Pong(10)));
}

#[tokio::test]
async fn go_away_and_unregister_reach_the_other_side_and_stop_new_flows() {
    let mut edge = edge();
    let (_ep, conn, link) = connector_pair(&mut edge).await;
    link.go_away(Duration::from_secs(30), "restart")
        .await
        .unwrap();
    assert_eq!(
        conn.next_event().await,
        Some(PeerEvent::GoAway(GoAway {
            drain: Duration::from_secs(30),
            reason: "restart".into()
        }))
    );
    assert!(conn.is_draining());
    assert!(matches!(
        link.open_flow("127.0.0.1:1".parse().unwrap(), Protocol::Tcp, vec![])
            .await,
        Err(OpenError::Draining)
    ));

    let (_ep2, conn2, link2) = connector_pair(&mut edge).await;
    conn2.unregister(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        link2.next_event().await,
        Some(EdgeEvent::Unregister(Unregister {
            grace: Duration::from_secs(5)
        }))
    );
    assert!(link2.is_draining());
    assert!(matches!(
        link2
            .open_flow("127.0.0.1:1".parse().unwrap(), Protocol::Tcp, vec![])
            .await,
        Err(OpenError::Draining)
    ));
    conn2.close(CloseCode::UNREGISTERED, "drained");
    assert!(matches!(
        link2.closed().await,
        quinn::ConnectionError::ApplicationClosed(c) if c.error_code == quinn::VarInt::from_u32(4)
    ));
}

#[tokio::test]
async fn an_edge_certificate_from_another_ca_is_refused() {
    let edge = edge();
    let tunnel = edge.add_identity();
    let other = pki();
    let ep = peer_endpoint(&other.trust());
    let e = connect_tunnel(&ep, edge.addr, SERVER_NAME, &tunnel)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectError::Handshake { .. }), "{e:?}");
}

#[tokio::test]
async fn the_pinned_ca_fingerprint_is_accepted_and_a_wrong_pin_refused() {
    let mut edge = edge();
    let tunnel = edge.add_identity();
    let ok = connect_tunnel(&peer_endpoint(&edge.pin()), edge.addr, SERVER_NAME, &tunnel).await;
    assert!(ok.is_ok(), "{ok:?}");
    assert!(edge.next_peer().await.is_ok());
    let wrong = EdgeTrust::fingerprint(pki().ca_fingerprint());
    let e = connect_tunnel(&peer_endpoint(&wrong), edge.addr, SERVER_NAME, &tunnel)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectError::Handshake { .. }), "{e:?}");
    // The right pin but the wrong server name is refused too: the pin does not switch off
    // certificate validation.
    let e = connect_tunnel(
        &peer_endpoint(&edge.pin()),
        edge.addr,
        "other.test",
        &tunnel,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ConnectError::Handshake { .. }), "{e:?}");
}

#[tokio::test]
async fn a_proof_replayed_from_another_connection_is_refused() {
    let mut edge = edge();
    let tunnel = edge.add_identity();
    let key = tunnel.secret.derive_auth_key();
    let reg = connector_registration(tunnel.id, 0);
    let first = raw_connection(&edge).await;
    let second = raw_connection(&edge).await;
    assert_ne!(exporter_of(&first), exporter_of(&second));
    let mut register = Register {
        protocol_version: PROTOCOL_VERSION,
        claim: Claim::Connector(reg.claim),
        software_version: reg.software_version,
        features: reg.features,
        proof: zt_proto::Proof::EMPTY,
    };
    sign_register(
        &mut register,
        &zt_proto::ProofKey::Shared(key.clone()),
        &exporter_of(&first),
    )
    .unwrap();
    // The proof made for `first`, sent on `second`: refused.
    let answer = send_register_and_read_answer(&second, register.clone()).await;
    assert!(
        matches!(&answer, ControlFrame::RegisterError(e) if e.code == RegisterErrorCode::Unauthorized),
        "{answer:?}"
    );
    // The same frame on the connection it was made for: accepted, so the refusal above was
    // the replay and nothing else.
    let answer = send_register_and_read_answer(&first, register).await;
    assert!(matches!(answer, ControlFrame::Registered(_)), "{answer:?}");
    let outcomes = [edge.next_peer().await, edge.next_peer().await];
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1);
    assert_eq!(
        edge.auth
            .refusals
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r)| *r)
            .collect::<Vec<_>>(),
        vec![RefusalReason::BadProof]
    );
}

#[tokio::test]
async fn a_peer_that_never_registers_is_cut_off() {
    let mut settings = test_settings();
    settings.register_timeout = Duration::from_secs(1);
    let mut edge = edge_with(TestAuth::default(), settings);
    let conn = raw_connection(&edge).await;
    let outcome = edge.next_peer().await;
    assert!(outcome.unwrap_err().contains("Timeout"));
    assert!(matches!(
        conn.closed().await,
        quinn::ConnectionError::ApplicationClosed(c) if c.error_code == quinn::VarInt::from_u32(2)
    ));
}

/// A UDP relay between one client and the edge that can start dropping everything, as a
/// dead connector's network would.
struct CuttableRelay {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

async fn cuttable_relay(edge: std::net::SocketAddr) -> CuttableRelay {
    use std::sync::atomic::{AtomicBool, Ordering};
    let front = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(edge).await.unwrap();
    let cut = std::sync::Arc::new(AtomicBool::new(false));
    let client: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>> = Default::default();
    let (f, b, c, k) = (front.clone(), back.clone(), client.clone(), cut.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            *c.lock().unwrap() = Some(from);
            if !k.load(Ordering::Relaxed) {
                let _ = b.send(&buf[..n]).await;
            }
        }
    });
    let (f, b, k) = (front.clone(), back, cut.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = b.recv(&mut buf).await {
            let to = *client.lock().unwrap();
            if let (false, Some(to)) = (k.load(Ordering::Relaxed), to) {
                let _ = f.send_to(&buf[..n], to).await;
            }
        }
    });
    CuttableRelay {
        addr: front.local_addr().unwrap(),
        cut,
    }
}

#[tokio::test]
async fn keep_alives_hold_an_idle_connection_and_the_idle_timeout_finds_a_dead_one() {
    let mut settings = test_settings();
    settings.keep_alive_interval = Duration::from_millis(150);
    settings.idle_timeout = Duration::from_millis(1_000);
    let mut edge = edge_with(TestAuth::default(), settings.clone());
    let tunnel = edge.add_identity();
    let relay = cuttable_relay(edge.addr).await;
    let ep = PeerEndpoint::bind("127.0.0.1:0".parse().unwrap(), &edge.trust(), settings).unwrap();
    let conn = connect_tunnel(&ep, relay.addr, SERVER_NAME, &tunnel)
        .await
        .unwrap();
    let EdgePeer::Connector(link) = edge.next_peer().await.unwrap() else {
        panic!("expected a connector")
    };
    // Idle for several idle timeouts: keep-alives hold the connection open.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    conn.ping(1).await.unwrap();
    assert_eq!(conn.next_event().await, Some(PeerEvent::Pong(1)));
    // The network goes dark: both sides find out through the idle timeout alone.
    relay.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    let edge_side = tokio::time::timeout(Duration::from_secs(20), link.closed())
        .await
        .unwrap();
    assert_eq!(edge_side, quinn::ConnectionError::TimedOut);
    let connector_side = tokio::time::timeout(Duration::from_secs(20), conn.closed())
        .await
        .unwrap();
    assert_eq!(connector_side, quinn::ConnectionError::TimedOut);
}

#[tokio::test]
async fn socket_buffer_requests_are_read_back() {
    let edge = edge();
    // test_settings asks for 256 KiB, which any Linux default allows.
    let small = edge.listener.socket_buffers();
    assert_eq!(small.receive_requested, 256 * 1024);
    assert!(
        small.receive_granted.unwrap() >= small.receive_requested,
        "{small:?}"
    );
    assert!(
        small.send_granted.unwrap() >= small.send_requested,
        "{small:?}"
    );
    // A request far beyond any sysctl limit is granted less, which the endpoint reports
    // (and logs as a warning) instead of failing.
    let mut huge = test_settings();
    huge.socket_receive_buffer = 1 << 30;
    let ep = PeerEndpoint::bind("127.0.0.1:0".parse().unwrap(), &edge.trust(), huge).unwrap();
    let b = ep.socket_buffers();
    assert!(b.receive_granted.unwrap() < b.receive_requested, "{b:?}");
}

#[tokio::test]
async fn a_peer_that_does_not_offer_zt1_fails_the_handshake() {
    let mut edge = edge();
    let err = raw_connection_with_alpn(&edge, b"zt/2").await.unwrap_err();
    // TLS alert 120, no_application_protocol, as a QUIC crypto error (0x100 + alert).
    assert!(
        matches!(&err, quinn::ConnectionError::ConnectionClosed(c) if u64::from(c.error_code) == 0x100 + 120),
        "{err:?}"
    );
    assert!(edge.next_peer().await.is_err());
}

#[tokio::test]
async fn four_ha_connections_share_one_endpoint() {
    let mut edge = edge();
    let tunnel = edge.add_identity();
    let ep = peer_endpoint(&edge.pin());
    let connector_id = Uuid::new_v4();
    let mut conns = Vec::new();
    for index in 0..4u8 {
        let mut reg = connector_registration(tunnel.id, index);
        reg.claim.connector_id = connector_id;
        conns.push(
            ep.connect_connector(
                edge.addr,
                SERVER_NAME,
                reg,
                &tunnel.secret.derive_auth_key(),
            )
            .await
            .unwrap(),
        );
    }
    let mut links = Vec::new();
    for _ in 0..4 {
        let EdgePeer::Connector(link) = edge.next_peer().await.unwrap() else {
            panic!("expected a connector")
        };
        links.push(link);
    }
    let mut indexes: Vec<u8> = links.iter().map(|l| l.claim().conn_index).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, vec![0, 1, 2, 3]);
    assert!(links.iter().all(|l| l.claim().connector_id == connector_id));
    let mut ids: Vec<Uuid> = conns.iter().map(|c| c.registered().connection_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each connection gets its own id");
    // All four came from the same UDP socket.
    let local = ep.local_addr().unwrap();
    assert!(links.iter().all(|l| l.remote_address() == local));
}
