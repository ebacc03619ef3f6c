//! The admin API against a client that sends its head and then stalls in the body: the
//! body read is bounded in time and answered with a typed 408, so such a client cannot
//! hold one of the API's connections (and a request task) for ever.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zt_edge::{AdminServer, EdgeState, NoLiveView, StateOptions};

/// Far above the server's 10 s body bound.
const DEADLINE: Duration = Duration::from_secs(40);

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(
        EdgeState::open_or_init(dir.path().join("edge"), &StateOptions::default()).unwrap(),
    );
    let server = AdminServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        state.clone(),
        Arc::new(NoLiveView),
    )
    .await
    .unwrap();
    let token = state.admin_token().expose().to_owned();

    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let head = format!(
        "POST /v1/lists HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\": "
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut reply = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut reply))
        .await
        .expect("the admin API waited past the deadline for the body")
        .unwrap();
    println!(
        "MEASURED stalled body answered after {:?}",
        started.elapsed()
    );
    let text = String::from_utf8(reply).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 408"), "{text}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "body_timeout", "{body}");

    server.shutdown().await;
}
