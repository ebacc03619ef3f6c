//! Pieces of the tests that run a live edge on loopback: a payload pattern, the edge's
//! audit lines, the status of a refused flow, and a connector's splice of a flow to TCP.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use zt_edge::EdgeHandle;
use zt_proto::{FlowStatus, FlowStream, OpenError};

/// `n` bytes of a fixed pattern both ends can produce.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
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
