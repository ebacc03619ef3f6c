//! The metrics server over real TCP on 127.0.0.1: the exact bytes of `/ready`, the
//! health check, the Prometheus exposition, refusals, limits and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;
use zt_connector::{ConnectorMetrics, DialErrorKind, MetricsServer, ServeError};

const ID: &str = "8e343b13-a087-48ea-825f-9783931ff2a5";

/// Generous bound so a stuck server fails the test instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(20);

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

async fn request(addr: SocketAddr, raw: &str) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    parse(&buf)
}

fn parse(buf: &[u8]) -> Reply {
    let text = String::from_utf8(buf.to_vec()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

async fn server() -> (MetricsServer, Arc<ConnectorMetrics>) {
    let metrics = Arc::new(ConnectorMetrics::new(Uuid::parse_str(ID).unwrap()));
    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics))
        .await
        .unwrap();
    (server, metrics)
}

#[tokio::test]
async fn ready_follows_registered_connections() {
    let (server, metrics) = server().await;
    let addr = server.local_addr();

    let r = get(addr, "/ready").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        format!("{{\"status\":503,\"readyConnections\":0,\"connectorId\":\"{ID}\",\"transports\":{{\"quic\":0,\"tcp\":0}}}}")
    );
    assert!(r.headers.contains("content-type: application/json"));

    metrics.connection_registered();
    metrics.connection_registered();
    let r = get(addr, "/ready").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        format!("{{\"status\":200,\"readyConnections\":2,\"connectorId\":\"{ID}\",\"transports\":{{\"quic\":2,\"tcp\":0}}}}")
    );

    metrics.connection_lost();
    metrics.connection_lost();
    assert_eq!(get(addr, "/ready").await.status, 503);
    server.shutdown().await;
}

#[tokio::test]
async fn healthcheck_is_ok_regardless_of_the_edge() {
    let (server, _metrics) = server().await;
    let r = get(server.local_addr(), "/healthcheck").await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK"));
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let (server, metrics) = server().await;
    metrics.connection_registered();
    metrics.registration_failed();
    metrics.dial_failed(DialErrorKind::Timeout);
    metrics.add_bytes_to_edge(4096);
    let r = get(server.local_addr(), "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .headers
        .contains("content-type: text/plain; version=0.0.4"));
    for line in [
        "# TYPE zt_connector_ha_connections gauge",
        "zt_connector_ha_connections 1",
        "zt_connector_registration_failures_total 1",
        "zt_connector_dial_errors_total{kind=\"timeout\"} 1",
        "zt_connector_bytes_total{direction=\"to_edge\"} 4096",
        "zt_connector_active_flows 0",
        "zt_connector_flows_total 0",
    ] {
        assert!(
            r.body.lines().any(|l| l == line),
            "missing {line:?}:\n{}",
            r.body
        );
    }
    assert!(r.body.contains(&format!(
        "zt_connector_build_info{{version=\"0.1.0\",connector_id=\"{ID}\"}} 1"
    )));
    server.shutdown().await;
}

#[tokio::test]
async fn head_has_no_body_and_query_strings_are_ignored() {
    let (server, _metrics) = server().await;
    let r = request(
        server.local_addr(),
        "HEAD /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    let r = get(server.local_addr(), "/ready?verbose=1").await;
    assert_eq!(r.status, 503);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused() {
    let (server, _metrics) = server().await;
    let addr = server.local_addr();
    assert_eq!(get(addr, "/").await.status, 404);
    assert_eq!(get(addr, "/ready/").await.status, 404);
    let r = request(
        addr,
        "POST /ready HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
    assert!(r.headers.contains("allow: get, head"));
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_request_head_is_refused() {
    let (server, _metrics) = server().await;
    let huge = "a".repeat(64 * 1024);
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    // The server may close before reading everything; a write error is an answer too.
    let _ = s
        .write_all(format!("GET /ready HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n").as_bytes())
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .unwrap();
    // Either a 431 or a closed connection; never a 200 for a 64 KiB head.
    if !buf.is_empty() {
        assert_eq!(parse(&buf).status, 431);
    }
    // And the server keeps serving.
    assert_eq!(get(server.local_addr(), "/healthcheck").await.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let (server, _metrics) = server().await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.write_all(
        b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\nGET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 1, "{text}");
    assert_eq!(text.matches("HTTP/1.1 503").count(), 1, "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_stops_listening() {
    let (server, _metrics) = server().await;
    let addr = server.local_addr();
    // An idle kept-alive connection must not hold the shutdown up.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 17];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200 OK\r\n");

    tokio::time::timeout(DEADLINE, server.shutdown())
        .await
        .expect("shutdown finished");
    // The idle connection was closed: reading drains the rest of the reply, then EOF.
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, idle.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

#[tokio::test]
async fn bind_failure_names_the_address() {
    let (server, metrics) = server().await;
    let taken = server.local_addr();
    let err = MetricsServer::bind(taken, metrics).await.unwrap_err();
    assert!(matches!(err, ServeError::Bind { addr, .. } if addr == taken));
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_until_one_frees() {
    let (server, _metrics) = server().await;
    let addr = server.local_addr();
    // Fill every slot with a kept-alive connection that has been served once, so each is
    // known to be accepted and holding its slot.
    let mut held = Vec::new();
    for _ in 0..64 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut status = [0u8; 17];
        tokio::time::timeout(DEADLINE, s.read_exact(&mut status))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&status, b"HTTP/1.1 200 OK\r\n");
        held.push(s);
    }
    // One more is accepted and closed without an answer.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, extra.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(buf.is_empty(), "served beyond the limit: {buf:?}");

    // Closing one held connection frees its slot; the server notices asynchronously, so
    // retry until a request is served (bounded by the deadline).
    drop(held.pop());
    let served = tokio::time::timeout(DEADLINE, async {
        loop {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s
                .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            if !buf.is_empty() {
                return parse(&buf).status;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert_eq!(served, 200);
    drop(held);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_request_is_cut_off() {
    let (server, _metrics) = server().await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // With the clock paused, tokio jumps to the server's header deadline as soon as
    // nothing else can run, so this returns without a real wait unless the server never
    // gives up, in which case the (virtual) deadline below fails the test.
    let mut buf = Vec::new();
    // The server's bound is 5 s; 10 s of virtual time tells it apart from hyper's own
    // 30 s default.
    let res = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(
        res.is_ok(),
        "connection still open after 10 s without a full request"
    );
    // hyper may answer 408 or just close; it must never serve the half request.
    if !buf.is_empty() {
        assert_eq!(parse(&buf).status, 408);
    }
    server.shutdown().await;
}
