//! The server over real TCP on 127.0.0.1: every bound is driven by a misbehaving client
//! and observed from the outside (what the client reads, whether a slot frees).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::BodyError;

/// Generous bound so a stuck server fails the test instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(20);

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp
}

/// Answers `/body` with the size of the body read (or the error's status), `/big` with
/// 256 KiB, `/slow` after 200 ms, `/stuck` never, anything else with "ok".
async fn handler(started: Arc<AtomicUsize>, req: Request<RequestBody>) -> Response<ResponseBody> {
    match req.uri().path() {
        "/body" => match req.into_body().bytes().await {
            Ok(b) => text(StatusCode::OK, format!("{} bytes", b.len())),
            Err(BodyError::TooLarge { limit }) => {
                text(StatusCode::PAYLOAD_TOO_LARGE, format!("over {limit}"))
            }
            Err(BodyError::TimedOut { .. }) => text(StatusCode::REQUEST_TIMEOUT, "slow body"),
            Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
        },
        "/big" => text(StatusCode::OK, Bytes::from(vec![b'x'; 256 * 1024])),
        "/slow" => {
            started.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            text(StatusCode::OK, "slow")
        }
        "/stuck" => {
            started.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
            text(StatusCode::OK, "never")
        }
        _ => text(StatusCode::OK, "ok"),
    }
}

struct Test {
    addr: SocketAddr,
    server: HttpServer,
    started: Arc<AtomicUsize>,
}

async fn start(config: ServerConfig) -> Test {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&started);
    let server = HttpServer::spawn(listener, config, move |req| {
        handler(Arc::clone(&counter), req)
    });
    Test {
        addr,
        server,
        started,
    }
}

/// Everything the server sends on `s` until it closes (a reset counts as the end too).
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let res = tokio::time::timeout(DEADLINE, async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(res.is_ok(), "the server kept the connection open");
    buf
}

async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A server may answer (or close) before it has read everything; that is an answer.
    let _ = s.write_all(raw).await;
    String::from_utf8(read_all(&mut s).await).unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// Retries `/` until one is answered, for slots that free asynchronously.
async fn served_eventually(addr: SocketAddr) -> String {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let reply = get(addr, "/").await;
            if !reply.is_empty() {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a request was served once a slot freed")
}

#[tokio::test]
async fn requests_are_answered_and_kept_alive() {
    let t = start(ServerConfig::new("test")).await;
    let reply = exchange(
        t.addr,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{reply}");
    assert!(reply.ends_with("\r\n\r\nok"), "{reply}");
    t.server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_until_one_frees() {
    let t = start(ServerConfig::new("test").with_max_connections(2)).await;
    // Two kept-alive connections, each served once so each is known to hold its slot.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut status = [0u8; 17];
        s.read_exact(&mut status).await.unwrap();
        assert_eq!(&status, b"HTTP/1.1 200 OK\r\n");
        held.push(s);
    }
    assert_eq!(get(t.addr, "/").await, "", "served beyond the cap");
    drop(held.pop());
    assert!(served_eventually(t.addr)
        .await
        .starts_with("HTTP/1.1 200 OK"));
    t.server.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_and_a_dribbled_head_are_cut_off() {
    let timeout = Duration::from_millis(400);
    let t = start(ServerConfig::new("test").with_header_read_timeout(timeout)).await;

    let mut idle = TcpStream::connect(t.addr).await.unwrap();
    let started = Instant::now();
    let reply = read_all(&mut idle).await;
    println!(
        "MEASURED idle connection closed after {:?}",
        started.elapsed()
    );
    let reply = String::from_utf8(reply).unwrap();
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply}"
    );

    // One header byte every 50 ms never completes a head; the server must give up.
    let mut slow = TcpStream::connect(t.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = slow.split();
    let dribble = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if wr.write_all(b"a").await.is_err() {
                // The server closed the connection: the read side will say how.
                std::future::pending::<()>().await;
            }
        }
    };
    let mut reply = Vec::new();
    tokio::select! {
        () = dribble => unreachable!(),
        res = tokio::time::timeout(DEADLINE, rd.read_to_end(&mut reply)) => {
            assert!(res.is_ok(), "a dribbled head kept the connection open");
        }
    }
    println!(
        "MEASURED dribbled head cut off after {:?}",
        started.elapsed()
    );
    let reply = String::from_utf8(reply).unwrap();
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply}"
    );
    assert!(!reply.contains("200 OK"), "{reply}");

    // The server still serves a well-behaved client.
    assert!(get(t.addr, "/").await.starts_with("HTTP/1.1 200 OK"));
    t.server.shutdown().await;
}

#[tokio::test]
async fn a_body_past_the_cap_is_refused_by_its_length_and_by_its_bytes() {
    let t = start(ServerConfig::new("test").with_max_body(1000)).await;
    let within = format!(
        "POST /body HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n{}",
        "b".repeat(1000)
    );
    let reply = exchange(t.addr, within.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.ends_with("1000 bytes"), "{reply}");

    // A declared length past the cap: refused without sending (or reading) the body.
    let reply = exchange(
        t.addr,
        b"POST /body HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1001\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.ends_with("over 1000"), "{reply}");

    // Chunked, so no length is declared: refused once the bytes pass the cap.
    let chunk = "c".repeat(600);
    let chunked = format!(
        "POST /body HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
         258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let reply = exchange(t.addr, chunked.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    t.server.shutdown().await;
}

#[tokio::test]
async fn a_dribbled_body_times_out() {
    let timeout = Duration::from_millis(400);
    let t = start(ServerConfig::new("test").with_body_read_timeout(timeout)).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(
        b"POST /body HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\nfirst",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let reply = String::from_utf8(read_all(&mut s).await).unwrap();
    println!(
        "MEASURED dribbled body refused after {:?}",
        started.elapsed()
    );
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.ends_with("slow body"), "{reply}");
    t.server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection() {
    let t = start(
        ServerConfig::new("test")
            .with_max_connections(1)
            .with_write_timeout(Duration::from_millis(500)),
    )
    .await;
    // A small receive window, and requests for far more than any socket buffers hold.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut greedy = socket.connect(t.addr).await.unwrap();
    let requests = "GET /big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(100);
    let _ = greedy.write_all(requests.as_bytes()).await;
    // Proof that it holds the only slot: another client is turned away.
    let mut status = [0u8; 17];
    greedy.read_exact(&mut status).await.unwrap();
    assert_eq!(&status, b"HTTP/1.1 200 OK\r\n");
    assert_eq!(get(t.addr, "/").await, "", "served beyond the cap");

    // It never reads another byte; the stalled writes must end its connection.
    let started = Instant::now();
    let reply = served_eventually(t.addr).await;
    println!(
        "MEASURED stalled reader's slot freed after {:?}",
        started.elapsed()
    );
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    drop(greedy);
    t.server.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_requests_in_progress_and_cuts_off_the_stuck_ones() {
    let t = start(ServerConfig::new("test").with_shutdown_timeout(Duration::from_secs(1))).await;
    let mut slow = TcpStream::connect(t.addr).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut stuck = TcpStream::connect(t.addr).await.unwrap();
    stuck
        .write_all(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(t.addr).await.unwrap();
    tokio::time::timeout(DEADLINE, async {
        while t.started.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();

    let started = Instant::now();
    tokio::time::timeout(DEADLINE, t.server.shutdown())
        .await
        .expect("shutdown finished");
    println!("MEASURED shutdown took {:?}", started.elapsed());
    // The request in progress was answered; the stuck one was cut off without an
    // answer; the idle connection was closed.
    let slow = String::from_utf8(read_all(&mut slow).await).unwrap();
    assert!(slow.starts_with("HTTP/1.1 200 OK"), "{slow}");
    assert!(slow.ends_with("slow"), "{slow}");
    assert_eq!(read_all(&mut stuck).await, b"");
    assert_eq!(read_all(&mut idle).await, b"");
    assert!(TcpStream::connect(t.addr).await.is_err(), "still listening");
}

#[test]
fn accept_errors_pause_longer_each_time_and_start_over_after_a_success() {
    let mut pause = AcceptPause::default();
    let delays: Vec<u128> = (0..7).map(|_| pause.next_delay().as_millis()).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
    for _ in 0..100 {
        pause.next_delay();
    }
    assert_eq!(pause.next_delay(), AcceptPause::MAX);
    pause.reset();
    assert_eq!(pause.next_delay(), AcceptPause::FIRST);

    // One connection's failure is not the listener's: no pause for those.
    for kind in [
        io::ErrorKind::ConnectionAborted,
        io::ErrorKind::ConnectionReset,
        io::ErrorKind::ConnectionRefused,
    ] {
        assert!(is_connection_error(&io::Error::from(kind)));
    }
    // EMFILE (24): out of descriptors is the listener's problem.
    assert!(!is_connection_error(&io::Error::from_raw_os_error(24)));
}
