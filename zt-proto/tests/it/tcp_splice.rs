//! The TCP ↔ flow splice over real sockets: a TCP connection on loopback spliced with the
//! edge's end of a real QUIC flow, driven from the TCP program's side and from the far end
//! of the flow. Half-close both ways, resets both ways, early bytes, byte counts, and the
//! two answers to a side that stops taking bytes.
#![cfg(feature = "transport")]

use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use zt_proto::*;

/// Bound on every wait, so a stuck splice fails the test instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Counted {
    to_flow: AtomicU64,
    to_tcp: AtomicU64,
}

impl SpliceCounter for Counted {
    fn to_flow(&self, n: u64) {
        self.to_flow.fetch_add(n, Ordering::Relaxed);
    }
    fn to_tcp(&self, n: u64) {
        self.to_tcp.fetch_add(n, Ordering::Relaxed);
    }
}

/// A TCP program (`app`) whose connection is spliced with a flow whose far end is `far`.
struct Rig {
    app: TcpStream,
    far: FlowStream,
    splice: JoinHandle<TcpSpliceOutcome>,
    counted: Arc<Counted>,
    _keep: (Edge, PeerEndpoint, ClientConnection, Arc<ClientLink>),
}

async fn rig(splice: TcpSplice, early: &'static [u8]) -> Rig {
    let mut edge = edge();
    let (ep, conn, link) = client_pair(&mut edge).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let counted = Arc::new(Counted::default());
    let counter = Arc::clone(&counted);
    // The edge's end of the connection outlives the splice, as the runtimes' do, so bytes
    // still in flight when the splice returns are delivered.
    let link = Arc::new(link);
    let edge_link = Arc::clone(&link);
    let splice = tokio::spawn(async move {
        let link = edge_link;
        let (_, responder) = link.accept_flow().await.unwrap();
        let flow = responder.accept().await.unwrap();
        splice.run_with(tcp, flow, early, &*counter).await
    });
    let far = conn
        .open_flow("127.0.0.1:9".parse().unwrap(), Protocol::Tcp, vec![])
        .await
        .unwrap();
    Rig {
        app,
        far,
        splice,
        counted,
        _keep: (edge, ep, conn, link),
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after {DEADLINE:?}"))
}

#[tokio::test]
async fn a_fin_from_the_tcp_side_keeps_the_flow_side_sending() {
    let mut r = rig(TcpSplice::new(), b"").await;
    let request = random_bytes(200 * 1024);
    r.app.write_all(&request).await.unwrap();
    r.app.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("the request and its FIN", r.far.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(sha256(&got), sha256(&request));
    // Only after the FIN does the far end answer, as `kubectl cp`'s remote tar does.
    let reply = random_bytes(300 * 1024);
    r.far.write_all(&reply).await.unwrap();
    r.far.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("the reply and its FIN", r.app.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(sha256(&got), sha256(&reply));

    let out = within("the splice's end", r.splice).await.unwrap();
    assert!(!out.reset);
    assert_eq!((out.to_flow, out.to_tcp), (200 * 1024, 300 * 1024));
    assert_eq!(r.counted.to_flow.load(Ordering::Relaxed), out.to_flow);
    assert_eq!(r.counted.to_tcp.load(Ordering::Relaxed), out.to_tcp);
}

#[tokio::test]
async fn a_fin_from_the_flow_side_keeps_the_tcp_side_sending_and_early_bytes_go_first() {
    let mut r = rig(TcpSplice::new(), b"early:").await;
    r.far.write_all(b"banner").await.unwrap();
    r.far.shutdown().await.unwrap();
    let mut banner = Vec::new();
    within("the banner and its FIN", r.app.read_to_end(&mut banner))
        .await
        .unwrap();
    assert_eq!(banner, b"banner");
    let upload = random_bytes(300 * 1024);
    r.app.write_all(&upload).await.unwrap();
    r.app.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("the upload and its FIN", r.far.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(&got[..6], b"early:");
    assert_eq!(sha256(&got[6..]), sha256(&upload));

    let out = within("the splice's end", r.splice).await.unwrap();
    assert!(!out.reset);
    assert_eq!((out.to_flow, out.to_tcp), (6 + 300 * 1024, 6));
    assert_eq!(r.counted.to_flow.load(Ordering::Relaxed), out.to_flow);
}

#[tokio::test]
async fn a_flow_reset_becomes_a_tcp_rst() {
    let mut r = rig(TcpSplice::new(), b"").await;
    r.far.write_all(b"partial").await.unwrap();
    let mut got = [0u8; 7];
    within("the first bytes", r.app.read_exact(&mut got))
        .await
        .unwrap();
    r.far.reset(ResetCode(42));
    let out = within("the splice's end", r.splice).await.unwrap();
    assert!(out.reset);
    assert_eq!(out.to_tcp, 7);
    let mut rest = Vec::new();
    let err = within("the reset", r.app.read_to_end(&mut rest))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test]
async fn a_tcp_rst_becomes_a_flow_reset_with_connection_reset() {
    let mut r = rig(TcpSplice::new(), b"").await;
    r.app.write_all(b"partial").await.unwrap();
    let mut got = [0u8; 7];
    within("the first bytes", r.far.read_exact(&mut got))
        .await
        .unwrap();
    r.app.set_zero_linger().unwrap();
    drop(r.app);
    let out = within("the splice's end", r.splice).await.unwrap();
    assert!(out.reset);
    let mut rest = Vec::new();
    let err = within("the reset", r.far.read_to_end(&mut rest))
        .await
        .unwrap_err();
    assert_eq!(
        FlowError::reset_code(&err),
        Some(ResetCode::CONNECTION_RESET),
        "{err}"
    );
}

/// The far end stops reading; the TCP program keeps writing a little for a second, until
/// a write fails. Returns how many bytes it wrote and the error, if one stopped it.
async fn stop_reading_and_keep_writing(r: &mut Rig) -> (u64, Option<std::io::Error>) {
    r.far.recv_half().stop(ResetCode(7));
    let mut written = 0u64;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Err(e) = r.app.write_all(b"0123456789").await {
            return (written, Some(e));
        }
        written += 10;
    }
    (written, None)
}

#[tokio::test]
async fn ending_only_the_direction_whose_peer_stopped_reading() {
    let mut r = rig(
        TcpSplice::new().on_write_failure(WriteFailure::EndDirection),
        b"",
    )
    .await;
    let (written, failed) = stop_reading_and_keep_writing(&mut r).await;
    assert!(failed.is_none(), "the TCP side was aborted: {failed:?}");
    // The other direction is untouched: the far end still sends, and its FIN ends it.
    r.far.write_all(b"still here").await.unwrap();
    r.far.shutdown().await.unwrap();
    let mut got = [0u8; 10];
    within("the reply", r.app.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"still here");
    let out = within("the splice's end", r.splice).await.unwrap();
    // (Closing a socket with unread bytes, those written after the direction ended, makes
    // the kernel send an RST after the FIN; that is the close, not the splice's reset.)
    assert!(!out.reset, "{out:?}");
    assert!(
        out.to_flow < written,
        "{out:?} after {written} bytes written"
    );
    assert_eq!(out.to_tcp, 10);
}

#[tokio::test]
async fn resetting_everything_when_a_peer_stops_reading() {
    let mut r = rig(TcpSplice::new().on_write_failure(WriteFailure::Reset), b"").await;
    let (written, failed) = stop_reading_and_keep_writing(&mut r).await;
    let out = within("the splice's end", r.splice).await.unwrap();
    assert!(out.reset, "{out:?}");
    assert!(
        out.to_flow < written,
        "{out:?} after {written} bytes written"
    );
    // Both sides were aborted: the TCP program sees an RST (on the write it was doing when
    // it came, or else on its next read); the far end, whose receiving half is the one it
    // stopped, finds its sending half stopped with the reset code.
    let err = match failed {
        Some(e) => e,
        None => {
            let mut rest = Vec::new();
            within("the TCP reset", r.app.read_to_end(&mut rest))
                .await
                .unwrap_err()
        }
    };
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let err = within("the flow's stop", async {
        loop {
            if let Err(e) = r.far.write_all(b"anyone?").await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        FlowError::reset_code(&err),
        Some(ResetCode::CONNECTION_RESET),
        "{err}"
    );
}

#[tokio::test]
async fn waiting_for_the_ack_returns_once_the_far_end_has_every_byte() {
    let mut r = rig(TcpSplice::new().wait_for_ack(DEADLINE), b"").await;
    let data = random_bytes(100 * 1024);
    r.app.write_all(&data).await.unwrap();
    r.app.shutdown().await.unwrap();
    r.far.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("the data and its FIN", r.far.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(sha256(&got), sha256(&data));
    // Everything was read, so the splice returns well before its bound.
    let out = within("the splice's end", r.splice).await.unwrap();
    assert!(!out.reset);
    assert_eq!(out.to_flow, 100 * 1024);
}
