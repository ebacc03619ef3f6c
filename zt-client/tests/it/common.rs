//! Helpers of the client tests: the stand-in edge, origins and payloads from zt-testkit,
//! and two origins only these tests need (one that resets, one that reports how its
//! connection ended).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub use zt_testkit::data::{pattern, random_bytes, sha256};
pub use zt_testkit::origin::{hashing_origin, Origin};
pub use zt_testkit::stand_in::{client_options, Answer, ClientEdge};
pub use zt_testkit::within;

/// An origin that accepts one connection, reads `expect` bytes, then resets it (RST).
pub async fn resetting_origin(expect: usize) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; expect];
            let _ = s.read_exact(&mut buf).await;
            let _ = s.set_zero_linger();
        }
    });
    addr
}

/// An origin that greets its one connection with `!` and reports how it ended:
/// `Ok(bytes)` at EOF, or the read error's kind.
pub async fn watching_origin() -> (
    SocketAddr,
    tokio::sync::oneshot::Receiver<Result<usize, std::io::ErrorKind>>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(b"!").await;
            let mut got = Vec::new();
            let r = s.read_to_end(&mut got).await.map_err(|e| e.kind());
            let _ = tx.send(r);
        }
    });
    (addr, rx)
}
