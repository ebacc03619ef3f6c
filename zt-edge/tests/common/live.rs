//! Pieces of the tests that run a live edge on loopback: a payload pattern and a hashing
//! origin's answer to it, the edge's audit lines, the status of a refused flow, and a
//! connector's splice of a flow to TCP.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use zt_edge::EdgeHandle;
use zt_proto::{FlowStatus, FlowStream, OpenError};

/// `n` bytes of a fixed pattern both ends can produce.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// A hashing origin's answer to `got`: its SHA-256, then `reply_len` bytes of [`pattern`];
/// then the origin's end of the connection.
pub async fn answer_with_hash(s: &mut TcpStream, got: &[u8], reply_len: usize) {
    s.write_all(ring::digest::digest(&ring::digest::SHA256, got).as_ref())
        .await
        .unwrap();
    s.write_all(&pattern(reply_len)).await.unwrap();
    s.shutdown().await.unwrap();
}

/// Checks that `back` is [`answer_with_hash`]'s answer to `payload`.
pub fn assert_hash_answer(back: &[u8], payload: &[u8], reply_len: usize) {
    assert_eq!(back.len(), 32 + reply_len);
    assert_eq!(
        &back[..32],
        ring::digest::digest(&ring::digest::SHA256, payload).as_ref()
    );
    assert_eq!(&back[32..], &pattern(reply_len)[..]);
}

/// The edge's audit lines of type `kind`, in order.
pub fn audit_lines(edge: &EdgeHandle, kind: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(edge.state().audit_log_path()).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == kind)
        .collect()
}

/// The status a flow was refused with; panics if it was not refused.
pub fn refused(r: Result<FlowStream, OpenError>) -> FlowStatus {
    match r {
        Err(OpenError::Refused(status)) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Copies an accepted flow and a TCP connection both ways, passing each side's end on as
/// a half-close, until both directions have ended.
pub async fn splice(flow: FlowStream, tcp: TcpStream) {
    let (mut fr, mut fw) = tokio::io::split(flow);
    let (mut tr, mut tw) = tcp.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut fr, &mut tw).await;
        let _ = tw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut tr, &mut fw).await;
        let _ = fw.shutdown().await;
    };
    tokio::join!(up, down);
}
