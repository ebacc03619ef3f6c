//! Port forwards: a local TCP listener or UDP socket whose traffic goes to one fixed
//! private address, each TCP connection or each UDP peer as its own flow.
//!
//! The serving futures own their per-connection tasks (a `JoinSet`): dropping the future
//! (say, on Ctrl-C) ends every forwarded connection with it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};
use zt_proto::UdpFlow;

use crate::client::Client;

/// Most local connections (TCP) or peers (UDP) one forward serves at once; beyond it new
/// ones are closed or their packets dropped, so a runaway local program cannot exhaust
/// the edge's flow budget for this device.
pub const MAX_FORWARDED: usize = 4096;
/// Default idle time after which a UDP peer's flow is closed.
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(60);
/// Packets queued per UDP peer while its flow opens or is slow.
const UDP_PEER_QUEUE: usize = 128;
/// Largest UDP packet read from the local socket.
const UDP_READ: usize = 64 * 1024;

/// Forwards every connection accepted on `listener` to `to` through the edge, as one flow
/// each, until the listener fails or the future is dropped.
pub async fn forward_tcp(
    client: Arc<Client>,
    listener: TcpListener,
    to: SocketAddr,
) -> io::Result<()> {
    let limit = Arc::new(Semaphore::new(MAX_FORWARDED));
    let mut tasks = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(%peer, limit = MAX_FORWARDED, "too many forwarded connections; closing the new one");
            continue;
        };
        let client = client.clone();
        let span = tracing::info_span!("zt_forward", %peer, %to);
        tasks.spawn(
            async move {
                let _permit = permit;
                forward_one(&client, tcp, to).await;
            }
            .instrument(span),
        );
    }
}

async fn forward_one(client: &Client, tcp: TcpStream, to: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    match client.dial(to).await {
        Ok(flow) => {
            let out = flow.splice(tcp, &[]).await;
            debug!(
                up = out.to_flow,
                down = out.to_tcp,
                reset = out.reset,
                "forwarded connection ended"
            );
        }
        Err(e) => {
            warn!(error = %e, "cannot open the flow; closing the local connection");
            // An RST tells the local program at once that the connection failed, as a
            // refused TCP connect would.
            let _ = tcp.set_zero_linger();
        }
    }
}

type Peers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>>;

fn lock(peers: &Peers) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::Sender<Bytes>>> {
    // The map holds no invariant a panicking holder could break.
    peers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Forwards UDP: each distinct local peer that sends to `socket` gets its own UDP flow to
/// `to`; replies go back to that peer. A peer's flow closes after `idle` without packets
/// either way.
pub async fn forward_udp(
    client: Arc<Client>,
    socket: UdpSocket,
    to: SocketAddr,
    idle: Duration,
) -> io::Result<()> {
    let socket = Arc::new(socket);
    let peers: Peers = Arc::default();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; UDP_READ];
    loop {
        let (n, peer) = tokio::select! {
            got = socket.recv_from(&mut buf) => got?,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let packet = Bytes::copy_from_slice(&buf[..n]);
        let existing = lock(&peers).get(&peer).cloned();
        let tx = match existing {
            Some(tx) => tx,
            None => {
                if lock(&peers).len() >= MAX_FORWARDED {
                    debug!(%peer, "too many UDP peers; packet dropped");
                    continue;
                }
                let (tx, rx) = mpsc::channel(UDP_PEER_QUEUE);
                lock(&peers).insert(peer, tx.clone());
                info!(%peer, %to, "new UDP peer; opening a flow");
                let span = tracing::info_span!("zt_forward_udp", %peer, %to);
                tasks.spawn(
                    udp_peer(
                        client.clone(),
                        socket.clone(),
                        peers.clone(),
                        peer,
                        to,
                        idle,
                        rx,
                    )
                    .instrument(span),
                );
                tx
            }
        };
        if tx.try_send(packet).is_err() {
            debug!(%peer, "UDP peer queue full; packet dropped");
        }
    }
}

async fn udp_peer(
    client: Arc<Client>,
    socket: Arc<UdpSocket>,
    peers: Peers,
    peer: SocketAddr,
    to: SocketAddr,
    idle: Duration,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let mut flow = match client.dial_udp(to).await {
        Ok(f) => f,
        Err(e) => {
            warn!(error = %e, "cannot open the UDP flow; dropping the peer's packets");
            lock(&peers).remove(&peer);
            return;
        }
    };
    let deliver = |p: Bytes| {
        let (socket, peer) = (&socket, peer);
        async move {
            if let Err(e) = socket.send_to(&p, peer).await {
                debug!(error = %e, "UDP reply not delivered to the local peer");
            }
        }
    };
    match pump_udp(&mut flow, &mut rx, idle, deliver).await {
        UdpEnd::Ended => debug!("UDP flow ended"),
        UdpEnd::Idle => debug!(?idle, "UDP peer idle; closing its flow"),
    }
    lock(&peers).remove(&peer);
    flow.close();
}

/// Why [`pump_udp`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UdpEnd {
    /// The local side's queue closed or the flow ended.
    Ended,
    /// Nothing went either way for the idle time.
    Idle,
}

/// Moves one UDP flow's packets until either side ends or `idle` passes with no packet
/// either way: packets from `rx` go out on the flow, and each reply from the flow is handed
/// to `deliver`.
pub(crate) async fn pump_udp<F, Fut>(
    flow: &mut UdpFlow,
    rx: &mut mpsc::Receiver<Bytes>,
    idle: Duration,
    mut deliver: F,
) -> UdpEnd
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let activity = tokio::time::timeout(idle, async {
            tokio::select! {
                packet = rx.recv() => match packet {
                    Some(p) => {
                        if let Err(e) = flow.send(p) {
                            debug!(error = %e, "UDP packet not sent");
                        }
                        true
                    }
                    None => false,
                },
                reply = flow.recv() => match reply {
                    Some(p) => {
                        deliver(p).await;
                        true
                    }
                    None => false,
                },
            }
        })
        .await;
        match activity {
            Ok(true) => {}
            Ok(false) => return UdpEnd::Ended,
            Err(_) => return UdpEnd::Idle,
        }
    }
}
