//! Hostile peers against the edge's TLS-over-TCP listener: slow handshakes, protocols the
//! edge does not serve, stray requests, stream limits, and HTTP/2's own attacks (rapid
//! reset, CONTINUATION flood, HPACK bomb, SETTINGS and PING floods). After each, a
//! well-behaved client still registers and carries a flow. Times are printed.
#![cfg(feature = "transport")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zt_proto::*;

/// TLS to the edge's TCP listener offering `alpn`, trusting the test CA.
async fn tls(
    edge: &Edge,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(edge.pki.ca_der()))
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let tcp = TcpStream::connect(edge.tcp.unwrap()).await?;
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// A raw HTTP/2 client on zt/1.
async fn h2_client(edge: &Edge) -> h2::client::SendRequest<Bytes> {
    let io = tls(edge, &[ALPN_ZT1]).await.unwrap();
    let (sr, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sr
}

fn post(path: &str) -> http::Request<()> {
    http::Request::post(format!("https://zt{path}"))
        .body(())
        .unwrap()
}

/// A client registers over TCP and one flow round-trips: the edge is still fine.
async fn still_serves(edge: &mut Edge) {
    let device = edge.add_identity();
    let conn = tcp_dialer(&edge.trust())
        .connect_client(
            edge.tcp.unwrap(),
            SERVER_NAME,
            None,
            client_registration(device.id),
            &zt_proto::ProofKey::Shared(device.secret.derive_auth_key()),
        )
        .await
        .unwrap();
    // The attackers' outcomes (failed registrations) come first; skip them.
    let link = loop {
        match edge.next_peer().await {
            Ok(EdgePeer::Client(link)) => break link,
            Ok(_) => panic!("expected a client link"),
            Err(e) => println!("(an earlier connection's outcome: {e})"),
        }
    };
    tokio::spawn(async move {
        let (_, r) = link.accept_flow().await.unwrap();
        let mut f = r.accept().await.unwrap();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).await.unwrap();
        f.write_all(&buf).await.unwrap();
        f.shutdown().await.unwrap();
        let _ = link.closed().await;
    });
    let mut flow = conn
        .open_flow("127.0.0.1:9".parse().unwrap(), Protocol::Tcp, vec![])
        .await
        .unwrap();
    flow.write_all(b"still here").await.unwrap();
    flow.shutdown().await.unwrap();
    let mut back = Vec::new();
    flow.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"still here");
}

fn short_register() -> TransportSettings {
    let mut s = test_settings();
    s.register_timeout = Duration::from_secs(1);
    s
}

#[tokio::test]
async fn a_silent_tcp_connection_is_cut_at_the_register_timeout() {
    let mut edge = tcp_edge_with(TestAuth::default(), short_register()).await;
    let started = Instant::now();
    let mut s = TcpStream::connect(edge.tcp.unwrap()).await.unwrap();
    let outcome = edge.next_peer().await;
    println!(
        "silent connection ended after {:?}: {outcome:?}",
        started.elapsed()
    );
    assert!(outcome.unwrap_err().contains("timed out"));
    // The edge closed it.
    let mut buf = [0u8; 1];
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0),
        0
    );
    still_serves(&mut edge).await;
}

#[tokio::test]
async fn a_tls_handshake_that_stops_halfway_is_cut_too() {
    let mut edge = tcp_edge_with(TestAuth::default(), short_register()).await;
    let mut s = TcpStream::connect(edge.tcp.unwrap()).await.unwrap();
    // The first bytes of a ClientHello record, then nothing.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let started = Instant::now();
    let outcome = edge.next_peer().await;
    println!(
        "half a ClientHello ended after {:?}: {outcome:?}",
        started.elapsed()
    );
    assert!(outcome.is_err());
    still_serves(&mut edge).await;
}

#[tokio::test]
async fn protocols_the_edge_does_not_serve_fail_the_handshake() {
    let mut edge = tcp_edge().await;
    // cloudflared's HTTP/2 ALPN is refused for now, as is no ALPN at all.
    for alpn in [&[b"h2".as_slice()][..], &[]] {
        let r = tls(&edge, alpn).await;
        let outcome = edge.next_peer().await;
        println!(
            "ALPN {alpn:?}: client {:?}, edge {outcome:?}",
            r.as_ref().err()
        );
        assert!(outcome.is_err());
    }
    // (TLS 1.2 cannot even be offered: the workspace's rustls is built without it, and the
    // edge's configuration names TLS 1.3 alone.)
    still_serves(&mut edge).await;
}

#[tokio::test]
async fn stray_requests_are_refused_and_a_second_session_stream_ends_the_connection() {
    let mut edge = tcp_edge().await;
    let mut sr = h2_client(&edge).await;
    for req in [
        http::Request::get("https://zt/zt/stream").body(()).unwrap(),
        post("/admin"),
        post("/"),
    ] {
        let (resp, _send) = sr.send_request(req, false).unwrap();
        let e = resp.await.unwrap_err();
        assert_eq!(e.reason(), Some(h2::Reason::REFUSED_STREAM), "{e}");
    }
    let (resp, _s1) = sr.send_request(post("/zt/session"), false).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    let (resp, _s2) = sr.send_request(post("/zt/session"), false).unwrap();
    assert!(
        resp.await.is_err(),
        "a second session stream ends the connection"
    );
    still_serves(&mut edge).await;
}

#[tokio::test]
async fn an_unregistered_peer_gets_at_most_sixteen_streams() {
    let mut edge = tcp_edge().await;
    let sr = h2_client(&edge).await;
    let mut pending = Vec::new();
    for _ in 0..40 {
        let mut ready = sr.clone().ready().await.unwrap();
        let (resp, send) = ready.send_request(post("/zt/stream"), false).unwrap();
        pending.push((resp, send));
    }
    let mut ok = 0;
    let mut refused = 0;
    for (resp, _send) in pending {
        match tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .unwrap()
        {
            Ok(r) if r.status() == 200 => ok += 1,
            Ok(r) => panic!("unexpected status {}", r.status()),
            Err(e) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    println!("unregistered: {ok} streams accepted, {refused} refused");
    assert_eq!(ok, 16);
    assert_eq!(refused, 24);
    still_serves(&mut edge).await;
}

#[tokio::test]
async fn rapid_reset_does_not_hurt_the_edge() {
    let mut edge = tcp_edge().await;
    let mut sr = h2_client(&edge).await;
    let started = Instant::now();
    let mut sent = 0;
    for _ in 0..5000 {
        let Ok(mut ready) = sr.clone().ready().await else {
            break;
        };
        let Ok((_resp, mut send)) = ready.send_request(post("/zt/stream"), false) else {
            break;
        };
        send.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), sr.clone().ready())
        .await
        .map(|r| r.is_err())
        .unwrap_or(false);
    println!(
        "rapid reset: {sent} streams opened and reset in {:?}; attacker connection closed: {closed}",
        started.elapsed()
    );
    let _ = &mut sr;
    still_serves(&mut edge).await;
}

/// An HTTP/2 frame header.
fn frame(len: usize, ty: u8, flags: u8, stream: u32) -> Vec<u8> {
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Writes `chunks` to a raw zt/1 TLS stream until the edge closes it or they run out;
/// returns (chunks written, whether the edge closed the connection).
async fn flood(edge: &Edge, first: Vec<u8>, chunk: Vec<u8>, count: usize) -> (usize, bool) {
    let io = tls(edge, &[ALPN_ZT1]).await.unwrap();
    let (mut r, mut w) = tokio::io::split(io);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    });
    let mut written = 0;
    let writes = async {
        if w.write_all(&first).await.is_err() {
            return;
        }
        for _ in 0..count {
            if w.write_all(&chunk).await.is_err() {
                return;
            }
            written += 1;
        }
        let _ = w.flush().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), writes).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .map(|r| r.unwrap_or(true))
        .unwrap_or(false);
    (written, closed)
}

fn preface_and_settings() -> Vec<u8> {
    let mut b = PREFACE.to_vec();
    b.extend(frame(0, 0x4, 0, 0)); // SETTINGS, empty
    b
}

#[tokio::test]
async fn a_continuation_flood_closes_the_attackers_connection() {
    let mut edge = tcp_edge().await;
    let mut first = preface_and_settings();
    // HEADERS on stream 1 without END_HEADERS (`:method POST`, indexed), then endless
    // CONTINUATION frames, none with END_HEADERS.
    first.extend(frame(1, 0x1, 0, 1));
    first.push(0x83);
    let mut cont = frame(1024, 0x9, 0, 1);
    cont.extend(std::iter::repeat_n(0x83, 1024));
    let (n, closed) = flood(&edge, first, cont, 100_000).await;
    println!("CONTINUATION flood: {n} frames of 1 KiB written; closed by the edge: {closed}");
    assert!(closed, "the edge must end a CONTINUATION flood");
    assert!(n < 100_000);
    still_serves(&mut edge).await;
}

#[tokio::test]
async fn an_hpack_bomb_is_refused() {
    let mut edge = tcp_edge().await;
    let mut block = vec![0x83, 0x87]; // :method POST, :scheme https
    block.push(0x44); // :path, literal with incremental indexing of an indexed name
    block.push(10);
    block.extend_from_slice(b"/zt/stream");
    // A 4,000-byte header added to the dynamic table (literal, incremental, new name)...
    block.push(0x40);
    block.push(1);
    block.push(b'x');
    block.extend([0x7f, 0xa1, 0x1e]); // 7-bit prefix integer 4000 (127 + 3873)
    block.extend(std::iter::repeat_n(b'a', 4000));
    // ...then referenced 10,000 times: 40 MB once decoded.
    block.extend(std::iter::repeat_n(0xbe, 10_000));
    let mut first = preface_and_settings();
    first.extend(frame(block.len(), 0x1, 0x4, 1)); // HEADERS, END_HEADERS
    first.extend(block);
    let started = Instant::now();
    let (_, closed) = flood(&edge, first, Vec::new(), 0).await;
    println!(
        "HPACK bomb: answered in {:?}; connection closed: {closed}",
        started.elapsed()
    );
    still_serves(&mut edge).await;
}

#[tokio::test]
async fn settings_and_ping_floods_do_not_hurt_the_edge() {
    let mut edge = tcp_edge().await;
    let settings = frame(0, 0x4, 0, 0);
    let (n, closed) = flood(&edge, preface_and_settings(), settings, 200_000).await;
    println!("SETTINGS flood: {n} frames written; closed by the edge: {closed}");
    let mut ping = frame(8, 0x6, 0, 0);
    ping.extend([0u8; 8]);
    let (n, closed) = flood(&edge, preface_and_settings(), ping, 200_000).await;
    println!("PING flood: {n} frames written; closed by the edge: {closed}");
    still_serves(&mut edge).await;
}
