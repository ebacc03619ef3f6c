//! The edge's `/metrics` listener against clients that hold on to it: idle connections
//! past the connection cap, and a request head dribbled a byte at a time. A real edge
//! runtime serves it on loopback; every wait has a generous deadline and the times
//! measured are printed, never asserted tightly.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zt_edge::{Edge, EdgeConfig, EdgeHandle};

/// Bound on any single wait, far above the server's 5 s header timeout.
const DEADLINE: Duration = Duration::from_secs(30);
/// The metrics server's connection cap.
const CAP: usize = 64;

async fn start(dir: &Path) -> EdgeHandle {
    let mut c = EdgeConfig::new(dir);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.admin = None;
    c.metrics = Some("127.0.0.1:0".parse().unwrap());
    c.edge_name = "metrics-abuse".into();
    c.shutdown_grace = Duration::from_secs(1);
    Edge::start(c).await.unwrap()
}

/// Reads until the server closes `s` (a reset counts as closing), within the deadline.
async fn until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server kept the connection open past the deadline");
    String::from_utf8(out).unwrap()
}

/// One scrape on a fresh connection: the whole reply, or "" if the server closed it
/// without one.
async fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A server at its cap may close before reading; that is an answer too.
    let _ = s
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    until_closed(&mut s).await
}

fn assert_scraped(reply: &str) {
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        reply.contains("# TYPE zt_edge_flows_total counter"),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_cap_are_refused_until_the_idle_ones_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let edge = start(dir.path()).await;
    let addr = edge.metrics_addr().unwrap();
    assert_scraped(&scrape(addr).await);
    // The server frees that scrape's slot just after closing it; let it, so the slot
    // count below is exact.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Fill every slot with a connection that never sends a byte.
    let mut idle = Vec::new();
    for _ in 0..CAP {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let filled = Instant::now();
    // Scrapes beyond the cap are closed unanswered (without a cap they would get a 200).
    for i in 0..8 {
        let reply = scrape(addr).await;
        assert_eq!(reply, "", "scrape {i} beyond the cap was served");
    }
    println!(
        "MEASURED 8 scrapes past the cap refused within {:?} of filling it",
        filled.elapsed()
    );

    // The idle connections are cut off by the header timeout, not held for ever.
    let mut cut = Vec::new();
    for s in &mut idle {
        let reply = until_closed(s).await;
        // hyper may answer 408 or just close; it never serves a request nobody sent.
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
            "{reply}"
        );
        cut.push(filled.elapsed());
    }
    println!(
        "MEASURED {CAP} idle connections closed between {:?} and {:?} after the cap filled",
        cut.iter().min().unwrap(),
        cut.iter().max().unwrap()
    );

    // With their slots free, a normal scrape works again. The server frees a slot just
    // after closing the connection, so retry briefly.
    let freed = Instant::now();
    let reply = tokio::time::timeout(DEADLINE, async {
        loop {
            let reply = scrape(addr).await;
            if !reply.is_empty() {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no scrape was served after the idle connections were closed");
    println!(
        "MEASURED scrape served {:?} after the last idle one closed",
        freed.elapsed()
    );
    assert_scraped(&reply);
    drop(idle);

    // Shutting the edge down stops the metrics listener too.
    edge.shutdown().await;
    let stopped = tokio::time::timeout(DEADLINE, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        stopped.is_ok(),
        "the metrics port still accepts after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribbled_request_head_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let edge = start(dir.path()).await;
    let addr = edge.metrics_addr().unwrap();

    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = slow.split();
    // One more header byte every 250 ms: the head never completes, yet bytes keep coming,
    // which an idle timeout alone would not catch.
    let mut sent = 0u32;
    let dribble = async {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if wr.write_all(b"a").await.is_err() {
                // The server closed the connection; the read side reports how.
                std::future::pending::<()>().await;
            }
            sent += 1;
        }
    };
    let mut reply = Vec::new();
    tokio::select! {
        () = dribble => {}
        res = tokio::time::timeout(DEADLINE, rd.read_to_end(&mut reply)) => {
            assert!(res.is_ok(), "a dribbled head kept the connection open past the deadline");
        }
    }
    println!(
        "MEASURED dribbled head cut off after {:?} ({sent} bytes dribbled)",
        started.elapsed()
    );
    let reply = String::from_utf8(reply).unwrap();
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply}"
    );

    // The server goes on serving well-behaved scrapers.
    assert_scraped(&scrape(addr).await);
    edge.shutdown().await;
}
