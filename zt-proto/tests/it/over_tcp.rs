//! zt/1 over TLS on TCP (HTTP/2 streams) on loopback: registration and its refusals, many
//! flows, half-close both ways, reset codes, the edge's opens on a connector, datagrams,
//! the close code, and the trust checks an intercepting middlebox meets.
#![cfg(feature = "transport")]

use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zt_proto::*;

fn spawn_echo(link: std::sync::Arc<ClientLink>) {
    tokio::spawn(async move {
        while let Some((_header, responder)) = link.accept_flow().await {
            tokio::spawn(async move {
                let Ok(mut flow) = responder.accept().await else {
                    return;
                };
                let mut data = Vec::new();
                if flow.read_to_end(&mut data).await.is_err() {
                    return;
                }
                if flow.write_all(&data).await.is_ok() && flow.shutdown().await.is_ok() {
                    let _ = flow.send_half().stopped().await;
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_a_client_registers_and_many_flows_carry_their_own_bytes() {
    let mut edge = tcp_edge().await;
    let started = Instant::now();
    let (_ep, conn, link) = client_pair(&mut edge).await;
    println!("TCP registration took {:?}", started.elapsed());
    assert_eq!(conn.transport_word(), "tcp");
    assert_eq!(link.transport_word(), "tcp");
    assert!(conn.stats().is_none());
    spawn_echo(std::sync::Arc::new(link));
    let conn = std::sync::Arc::new(conn);
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let data = random_bytes(1024 + (i as usize % 7) * 20_000);
            let dest = format!("198.51.100.{}:{}", i % 250, 1000 + i)
                .parse()
                .unwrap();
            let mut flow = loop {
                match conn.open_flow(dest, Protocol::Tcp, vec![]).await {
                    Ok(f) => break f,
                    Err(OpenError::Unanswered(_)) => continue,
                    Err(e) => panic!("flow {i}: {e}"),
                }
            };
            flow.write_all(&data).await.unwrap();
            flow.shutdown().await.unwrap();
            let mut back = Vec::new();
            flow.read_to_end(&mut back).await.unwrap();
            assert_eq!(sha256(&back), sha256(&data), "flow {i} came back different");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!("300 echoed flows over TCP took {:?}", started.elapsed());
}

#[tokio::test]
async fn tcp_half_close_from_the_opener_keeps_the_other_direction_flowing() {
    let mut edge = tcp_edge().await;
    let (_ep, conn, link) = client_pair(&mut edge).await;
    let reply = random_bytes(300 * 1024);
    let expected = reply.clone();
    let server = tokio::spawn(async move {
        let (_, responder) = link.accept_flow().await.unwrap();
        let mut flow = responder.accept().await.unwrap();
        let mut got = Vec::new();
        flow.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        flow.write_all(&reply).await.unwrap();
        flow.shutdown().await.unwrap();
        let _ = flow.send_half().stopped().await;
        link
    });
    let mut flow = conn
        .open_flow("127.0.0.1:9".parse().unwrap(), Protocol::Tcp, vec![])
        .await
        .unwrap();
    flow.write_all(b"request").await.unwrap();
    flow.shutdown().await.unwrap();
    let mut got = Vec::new();
    flow.read_to_end(&mut got).await.unwrap();
    assert_eq!(sha256(&got), sha256(&expected));
    let _link = server.await.unwrap();
}

#[tokio::test]
async fn tcp_half_close_from_the_server_keeps_the_opener_sending() {
    let mut edge = tcp_edge().await;
    let (_ep, conn, link) = client_pair(&mut edge).await;
    let upload = random_bytes(300 * 1024);
    let expected = sha256(&upload);
    let server = tokio::spawn(async move {
        let (_, responder) = link.accept_flow().await.unwrap();
        let mut flow = responder.accept().await.unwrap();
        flow.write_all(b"banner").await.unwrap();
        flow.shutdown().await.unwrap();
        let mut got = Vec::new();
        flow.read_to_end(&mut got).await.unwrap();
        (sha256(&got), link)
    });
    let mut flow = conn
        .open_flow("127.0.0.1:9".parse().unwrap(), Protocol::Tcp, vec![])
        .await
        .unwrap();
    let mut banner = Vec::new();
    flow.read_to_end(&mut banner).await.unwrap();
    assert_eq!(banner, b"banner");
    flow.write_all(&upload).await.unwrap();
    flow.shutdown().await.unwrap();
    let (got, _link) = server.await.unwrap();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn tcp_resets_carry_their_codes_both_ways() {
    let mut edge = tcp_edge().await;
    let (_ep, conn, link) = client_pair(&mut edge).await;
    let server = tokio::spawn(async move {
        let (_, r) = link.accept_flow().await.unwrap();
        let mut flow = r.accept().await.unwrap();
        let mut buf = [0u8; 16];
        let err = loop {
            match flow.read(&mut buf).await {
                Ok(0) => panic!("EOF instead of a reset"),
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(
            FlowError::reset_code(&err),
            Some(ResetCode::CONNECTION_RESET)
        );
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        let (_, r) = link.accept_flow().await.unwrap();
        let mut flow = r.accept().await.unwrap();
        let mut go = [0u8; 2];
        flow.read_exact(&mut go).await.unwrap();
        flow.reset(ResetCode(77));
        link
    });
    let mut f1 = conn
        .open_flow("127.0.0.1:9".parse().unwrap(), Protocol::Tcp, vec![])
        .await
        .unwrap();
    f1.write_all(b"some bytes").await.unwrap();
    f1.reset(ResetCode::CONNECTION_RESET);
    let mut f2 = conn
        .open_flow("127.0.0.1:9".parse().unwrap(), Protocol::Tcp, vec![])
        .await
        .unwrap();
    f2.write_all(b"go").await.unwrap();
    let mut buf = Vec::new();
    let err = f2.read_to_end(&mut buf).await.unwrap_err();
    assert_eq!(FlowError::reset_code(&err), Some(ResetCode(77)));
    let mut write_err = None;
    for _ in 0..100 {
        match f2.write_all(b"x").await {
            Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => {
                write_err = Some(e);
                break;
            }
        }
    }
    assert_eq!(
        FlowError::reset_code(&write_err.expect("writes keep failing after a reset")),
        Some(ResetCode(77))
    );
    let _link = server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_the_edge_opens_many_flows_on_a_connector_and_splices_them_to_a_client() {
    let mut edge = tcp_edge().await;
    let (_cep, connector, connector_link) = connector_pair(&mut edge).await;
    let (_uep, client, client_link) = client_pair(&mut edge).await;
    tokio::spawn(async move {
        while let Some((_header, responder)) = connector.accept_flow().await {
            tokio::spawn(async move {
                let mut flow = responder.accept().await.unwrap();
                let mut data = Vec::new();
                flow.read_to_end(&mut data).await.unwrap();
                flow.write_all(&data.to_ascii_uppercase()).await.unwrap();
                flow.shutdown().await.unwrap();
            });
        }
    });
    let connector_link = std::sync::Arc::new(connector_link);
    tokio::spawn(async move {
        while let Some((header, responder)) = client_link.accept_flow().await {
            let connector_link = connector_link.clone();
            tokio::spawn(async move {
                let upstream = connector_link
                    .open_flow(header.dest, header.protocol, header.metadata)
                    .await
                    .unwrap();
                let downstream = responder.accept().await.unwrap();
                splice(downstream, upstream).await
            });
        }
    });
    let client = std::sync::Arc::new(client);
    let mut tasks = Vec::new();
    // More flows than the peer keeps reverse requests parked: the pool refills.
    for i in 0..(3 * PARKED_REVERSE) {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut flow = client
                .open_flow("10.1.2.3:6443".parse().unwrap(), Protocol::Tcp, vec![])
                .await
                .unwrap();
            let msg = format!("hello through two hops {i}");
            flow.write_all(msg.as_bytes()).await.unwrap();
            flow.shutdown().await.unwrap();
            let mut back = Vec::new();
            flow.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, msg.to_ascii_uppercase().as_bytes());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn tcp_datagrams_carry_random_payloads_both_ways() {
    let mut edge = tcp_edge().await;
    let (_ep, conn, link) = client_pair(&mut edge).await;
    let max = conn.max_datagram_payload().unwrap();
    assert!(max >= 1000, "only {max} bytes");
    let payloads: Vec<Bytes> = (0..20)
        .map(|i| Bytes::from(random_bytes(1 + i * 50)))
        .collect();
    for (i, p) in payloads.iter().enumerate() {
        conn.send_datagram(i as u64 + 1, p.clone()).unwrap();
    }
    for (i, p) in payloads.iter().enumerate() {
        let d = tokio::time::timeout(Duration::from_secs(10), link.recv_datagram())
            .await
            .unwrap()
            .unwrap();
        // In order over TCP.
        assert_eq!((d.flow_id, &d.payload), (i as u64 + 1, p));
    }
    let answer = Bytes::from(random_bytes(900));
    link.send_datagram(7, answer.clone()).unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), conn.recv_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.flow_id, d.payload), (7, answer));
    let e = conn
        .send_datagram(1, Bytes::from(vec![0u8; 1351]))
        .unwrap_err();
    assert!(
        matches!(e, DatagramError::TooLarge { len: 1351, .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn tcp_a_close_reaches_the_peer_with_its_code() {
    let mut edge = tcp_edge().await;
    let (_ep, conn, link) = client_pair(&mut edge).await;
    link.close(CloseCode::GOING_AWAY, "maintenance");
    let why = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .unwrap();
    match why {
        ConnectionLost::ApplicationClosed(c) => {
            assert_eq!(
                c.error_code.into_inner(),
                u64::from(CloseCode::GOING_AWAY.0)
            );
            assert_eq!(&c.reason[..], b"maintenance");
        }
        other => panic!("expected the edge's close, got {other:?}"),
    }
}

#[tokio::test]
async fn tcp_a_bad_proof_is_refused_and_recorded() {
    let mut edge = tcp_edge().await;
    let tunnel = edge.add_identity();
    let wrong = zt_creds::TunnelSecret::generate().derive_auth_key();
    let err = tcp_dialer(&edge.trust())
        .connect_connector(
            edge.tcp.unwrap(),
            SERVER_NAME,
            None,
            connector_registration(tunnel.id, 0),
            &wrong,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Refused(_)), "{err}");
    assert!(edge.next_peer().await.is_err());
    let refusals = edge.auth.refusals.lock().unwrap().clone();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
}

#[tokio::test]
async fn tcp_an_edge_with_another_ca_fails_the_handshake_closed() {
    // An intercepting middlebox presents a certificate from its own CA: the pinned
    // fingerprint (and a CA file) refuse it, as over QUIC.
    let mut edge = tcp_edge().await;
    let tunnel = edge.add_identity();
    let other = pki();
    for trust in [
        other.trust(),
        EdgeTrust::fingerprint(other.ca_fingerprint()),
    ] {
        let err = tcp_dialer(&trust)
            .connect_connector(
                edge.tcp.unwrap(),
                SERVER_NAME,
                None,
                connector_registration(tunnel.id, 0),
                &tunnel.secret.derive_auth_key(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::TcpHandshake { .. }), "{err}");
    }
    // The pinned fingerprint of the right CA works.
    let conn = tcp_dialer(&edge.pin())
        .connect_connector(
            edge.tcp.unwrap(),
            SERVER_NAME,
            None,
            connector_registration(tunnel.id, 1),
            &tunnel.secret.derive_auth_key(),
        )
        .await
        .unwrap();
    assert_eq!(conn.transport_word(), "tcp");
    assert!(
        edge.next_peer().await.is_err(),
        "the handshake failures come first"
    );
}
