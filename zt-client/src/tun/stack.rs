//! The user-space TCP stack: smoltcp terminates each TCP connection the kernel routes into
//! the device, and each connection is carried as one zt flow.
//!
//! One task owns the smoltcp interface and its sockets. A new connection's SYN is held
//! while the flow is dialled: when the edge accepts, a socket is made to listen on the
//! destination and the SYN is fed to it (the kernel sees SYN-ACK); when the edge refuses,
//! the SYN is fed with no socket and smoltcp answers RST (the caller sees "connection
//! refused"). Each connection then has a carrier task that moves bytes between two
//! bounded channels and the flow: a FIN either way becomes a FIN on the other side while
//! the opposite direction keeps flowing, and a channel that closes without a FIN is a
//! reset (smoltcp's `abort` sends RST; the flow gets a QUIC reset).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpListenEndpoint, Ipv4Address, Ipv6Address,
};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, info};
use zt_proto::{FlowStream, ResetCode};

use crate::client::Client;
use crate::error::DialError;

/// Per-connection socket buffers (each way). Large enough for a window that keeps a bulk
/// transfer moving; allocated lazily by the OS, so idle connections cost little.
const SOCKET_BUF: usize = 256 * 1024;
/// Chunks queued per direction between the stack and a connection's carrier.
const CHUNKS: usize = 16;
/// Largest chunk taken from a socket at once.
const CHUNK: usize = 64 * 1024;
/// A connection whose handshake has not completed after this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// One unit between the stack and a carrier. A channel that closes without `Fin` first
/// means the connection was reset.
#[derive(Debug)]
enum Chunk {
    Data(Bytes),
    Fin,
}

/// smoltcp's view of the device: packets fed in by the stack, packets it emits queued
/// for the stack to write to the TUN device.
struct Queue {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    mtu: usize,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for Queue {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((RxToken(p), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        // The advertised MSS follows: MTU minus the IP and TCP headers.
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// A connection between the kernel and a flow.
struct Conn {
    /// Bytes from the local caller towards the flow; `None` once FIN or reset was passed on.
    to_flow: Option<mpsc::Sender<Chunk>>,
    /// Bytes from the flow; `None` once its FIN arrived or it closed.
    from_flow: Option<mpsc::Receiver<Chunk>>,
    /// Part of a flow chunk that did not fit the socket's send buffer yet.
    pending: Option<Bytes>,
    /// The flow finished; close the socket once `pending` is written.
    flow_fin: bool,
    /// Set by the flow's task when the flow was reset or lost: the caller is reset at
    /// once, and bytes still queued for it are dropped, as a TCP reset does.
    flow_reset: Arc<AtomicBool>,
    /// `close()` was called on the socket.
    closed: bool,
    /// The handshake completed once.
    established: bool,
    /// The socket was seen in SYN-received.
    syn_seen: bool,
    /// Finished: removed at the next service, after a poll sent any RST or last ACK.
    done: bool,
    started: tokio::time::Instant,
}

/// A finished dial: the flow, or why there is none.
struct Dialed {
    src: SocketAddr,
    dst: SocketAddr,
    result: Result<FlowStream, DialError>,
}

/// Where the stack writes packets: the TUN device.
pub(crate) type Writer = Arc<tun_rs::AsyncDevice>;

pub(crate) struct Stack {
    iface: Interface,
    queue: Queue,
    sockets: SocketSet<'static>,
    conns: HashMap<SocketHandle, Conn>,
    by_tuple: HashMap<(SocketAddr, SocketAddr), SocketHandle>,
    /// SYNs held while their flow is dialled, by (source, destination).
    dialing: HashMap<(SocketAddr, SocketAddr), Vec<u8>>,
    dialed_tx: mpsc::Sender<Dialed>,
    dialed_rx: mpsc::Receiver<Dialed>,
    kick: Arc<Notify>,
    client: Arc<Client>,
    max_connections: usize,
}

fn now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::now()
}

impl Stack {
    pub(crate) fn new(client: Arc<Client>, mtu: usize, max_connections: usize) -> Self {
        let mut queue = Queue {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            mtu,
        };
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = fastrand::u64(..);
        let mut iface = Interface::new(config, &mut queue, now());
        // Accept segments for any destination: a catch-all address and default routes
        // through it, with any-IP on, make smoltcp take every routed destination as its own.
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::v4(0, 0, 0, 1), 0));
            let _ = addrs.push(IpCidr::new(IpAddress::v6(0, 0, 0, 0, 0, 0, 0, 1), 0));
        });
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(0, 0, 0, 1));
        let _ = iface
            .routes_mut()
            .add_default_ipv6_route(Ipv6Address::new(0, 0, 0, 0, 0, 0, 0, 1));
        iface.set_any_ip(true);
        let (dialed_tx, dialed_rx) = mpsc::channel(256);
        Self {
            iface,
            queue,
            sockets: SocketSet::new(Vec::new()),
            conns: HashMap::new(),
            by_tuple: HashMap::new(),
            dialing: HashMap::new(),
            dialed_tx,
            dialed_rx,
            kick: Arc::new(Notify::new()),
            client,
            max_connections,
        }
    }

    /// The number of connections open or being dialled.
    fn load(&self) -> usize {
        self.conns.len() + self.dialing.len()
    }

    /// Takes one TCP packet read from the device.
    pub(crate) fn ingress_tcp(
        &mut self,
        packet: Vec<u8>,
        src: SocketAddr,
        dst: SocketAddr,
        syn: bool,
    ) {
        let key = (src, dst);
        if syn && !self.by_tuple.contains_key(&key) {
            if self.dialing.contains_key(&key) {
                return; // a retransmitted SYN while the flow is dialled
            }
            if self.load() >= self.max_connections {
                info!(%src, %dst, limit = self.max_connections, "too many TUN connections; refusing");
                self.queue.rx.push_back(packet); // no socket: smoltcp answers RST
                return;
            }
            self.dialing.insert(key, packet);
            let client = self.client.clone();
            let done = self.dialed_tx.clone();
            tokio::spawn(async move {
                let result = client.dial(dst).await.map(|s| s.into_flow());
                let _ = done.send(Dialed { src, dst, result }).await;
            });
            return;
        }
        self.queue.rx.push_back(packet);
    }

    fn dialed(&mut self, d: Dialed) {
        let key = (d.src, d.dst);
        let Some(syn) = self.dialing.remove(&key) else {
            return;
        };
        let flow = match d.result {
            Ok(flow) => flow,
            Err(e) => {
                info!(src = %d.src, dst = %d.dst, error = %e, "TUN connection refused");
                self.queue.rx.push_back(syn); // no socket: smoltcp answers RST
                return;
            }
        };
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; SOCKET_BUF]),
            tcp::SocketBuffer::new(vec![0u8; SOCKET_BUF]),
        );
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(None);
        socket.set_keep_alive(Some(smoltcp::time::Duration::from_secs(60)));
        socket.set_timeout(Some(smoltcp::time::Duration::from_secs(300)));
        let endpoint = IpListenEndpoint {
            addr: Some(d.dst.ip().into()),
            port: d.dst.port(),
        };
        if let Err(e) = socket.listen(endpoint) {
            debug!(dst = %d.dst, error = ?e, "cannot listen for the held SYN");
            let mut flow = flow;
            flow.reset(ResetCode::CONNECTION_RESET);
            self.queue.rx.push_back(syn);
            return;
        }
        let handle = self.sockets.add(socket);
        let (to_flow, app_rx) = mpsc::channel(CHUNKS);
        let (flow_tx, from_flow) = mpsc::channel(CHUNKS);
        let flow_reset = Arc::new(AtomicBool::new(false));
        tokio::spawn(carry(
            flow,
            app_rx,
            flow_tx,
            self.kick.clone(),
            flow_reset.clone(),
        ));
        debug!(src = %d.src, dst = %d.dst, "TUN connection carried as a flow");
        self.conns.insert(
            handle,
            Conn {
                to_flow: Some(to_flow),
                from_flow: Some(from_flow),
                pending: None,
                flow_fin: false,
                flow_reset,
                closed: false,
                established: false,
                syn_seen: false,
                done: false,
                started: tokio::time::Instant::now(),
            },
        );
        self.by_tuple.insert(key, handle);
        self.queue.rx.push_back(syn);
    }

    /// Moves bytes between sockets and carriers; true if anything moved.
    fn service(&mut self) -> bool {
        let mut progress = false;
        let mut finished = Vec::new();
        for (&handle, conn) in &mut self.conns {
            if conn.done {
                finished.push(handle);
                continue;
            }
            let sock = self.sockets.get_mut::<tcp::Socket<'static>>(handle);
            let state = sock.state();
            if matches!(
                state,
                tcp::State::Established
                    | tcp::State::FinWait1
                    | tcp::State::FinWait2
                    | tcp::State::CloseWait
                    | tcp::State::Closing
                    | tcp::State::LastAck
                    | tcp::State::TimeWait
            ) {
                conn.established = true;
            }
            if !conn.established {
                if state == tcp::State::SynReceived {
                    conn.syn_seen = true;
                }
                // Back to Listen after SYN-received means the caller reset the handshake;
                // a listening socket left behind would take someone else's SYN.
                let reset = conn.syn_seen && state == tcp::State::Listen;
                if reset || conn.started.elapsed() > HANDSHAKE_TIMEOUT {
                    sock.abort();
                    conn.to_flow = None;
                    conn.done = true;
                    progress = true;
                }
                continue;
            }
            // Local caller → flow.
            if let Some(tx) = conn.to_flow.clone() {
                let mut passed_on = false;
                loop {
                    let permit = match tx.try_reserve() {
                        Ok(p) => p,
                        Err(mpsc::error::TrySendError::Full(())) => break,
                        Err(mpsc::error::TrySendError::Closed(())) => {
                            // The carrier is gone: the flow was reset.
                            sock.abort();
                            passed_on = true;
                            progress = true;
                            break;
                        }
                    };
                    match sock.recv(|buf| {
                        let n = buf.len().min(CHUNK);
                        (n, Bytes::copy_from_slice(&buf[..n]))
                    }) {
                        Ok(data) if data.is_empty() => break,
                        Ok(data) => {
                            permit.send(Chunk::Data(data));
                            progress = true;
                        }
                        Err(tcp::RecvError::Finished) => {
                            permit.send(Chunk::Fin);
                            passed_on = true;
                            progress = true;
                            break;
                        }
                        Err(tcp::RecvError::InvalidState) => {
                            // Reset by the local side (or the socket was aborted):
                            // closing the channel without a FIN resets the flow.
                            passed_on = true;
                            progress = true;
                            break;
                        }
                    }
                }
                if passed_on {
                    conn.to_flow = None;
                }
            }
            // Flow → local caller. A flow that was reset or lost resets the caller now, even
            // with bytes still queued for it (a slow reader must not delay the reset).
            if !conn.flow_fin && conn.from_flow.is_some() && conn.flow_reset.load(Ordering::Acquire)
            {
                sock.abort();
                conn.from_flow = None;
                conn.to_flow = None;
                conn.pending = None;
                progress = true;
            }
            loop {
                if conn.pending.is_none() {
                    let Some(rx) = &mut conn.from_flow else { break };
                    match rx.try_recv() {
                        Ok(Chunk::Data(b)) => conn.pending = Some(b),
                        Ok(Chunk::Fin) => {
                            conn.flow_fin = true;
                            conn.from_flow = None;
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            // Closed without FIN: the flow was reset; so is the caller.
                            conn.from_flow = None;
                            if !conn.flow_fin {
                                sock.abort();
                                conn.to_flow = None;
                                conn.pending = None;
                                progress = true;
                            }
                            break;
                        }
                    }
                }
                let Some(data) = &mut conn.pending else { break };
                if !sock.can_send() {
                    if !sock.may_send() {
                        // The caller's side is gone; nothing more can be delivered.
                        conn.pending = None;
                        conn.from_flow = None;
                    }
                    break;
                }
                match sock.send_slice(data) {
                    Ok(n) => {
                        bytes::Buf::advance(data, n);
                        progress |= n > 0;
                        if data.is_empty() {
                            conn.pending = None;
                        } else {
                            break;
                        }
                    }
                    Err(_) => {
                        conn.pending = None;
                        break;
                    }
                }
            }
            if conn.flow_fin && conn.pending.is_none() && !conn.closed {
                sock.close(); // FIN to the caller; its direction keeps flowing
                conn.closed = true;
                progress = true;
            }
            if matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait)
                && conn.to_flow.is_none()
            {
                conn.done = true;
                progress = true;
            }
        }
        for handle in finished {
            self.conns.remove(&handle);
            self.sockets.remove(handle);
            self.by_tuple.retain(|_, h| *h != handle);
        }
        progress
    }

    /// Runs smoltcp and the carriers until nothing moves, then writes what smoltcp emitted.
    async fn turn(&mut self, dev: &Writer) -> std::io::Result<()> {
        for _ in 0..16 {
            let polled = self.iface.poll(now(), &mut self.queue, &mut self.sockets);
            let moved = self.service();
            if polled == smoltcp::iface::PollResult::None && !moved && self.queue.rx.is_empty() {
                break;
            }
        }
        while let Some(p) = self.queue.tx.pop_front() {
            dev.send(&p).await?;
        }
        Ok(())
    }

    /// Runs until `stop` turns true or the device fails. `packets` are the TCP segments
    /// read from the device with their addresses.
    pub(crate) async fn run(
        mut self,
        dev: Writer,
        mut packets: mpsc::Receiver<(Vec<u8>, SocketAddr, SocketAddr, bool)>,
        mut stop: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let kick = self.kick.clone();
        loop {
            let delay = self
                .iface
                .poll_delay(now(), &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    if *stop.borrow() { break; }
                }
                p = packets.recv() => match p {
                    Some((p, src, dst, syn)) => {
                        self.ingress_tcp(p, src, dst, syn);
                        // Take what else is queued before polling, up to a bound.
                        for _ in 0..256 {
                            let Ok((p, src, dst, syn)) = packets.try_recv() else { break };
                            self.ingress_tcp(p, src, dst, syn);
                        }
                    }
                    None => break,
                },
                Some(d) = self.dialed_rx.recv() => self.dialed(d),
                _ = kick.notified() => {}
                _ = tokio::time::sleep(delay) => {}
            }
            self.turn(&dev).await?;
        }
        // Reset what is still open, so callers are not left waiting on a dead device.
        for &handle in self.conns.keys() {
            self.sockets.get_mut::<tcp::Socket<'static>>(handle).abort();
        }
        let _ = self.iface.poll(now(), &mut self.queue, &mut self.sockets);
        while let Some(p) = self.queue.tx.pop_front() {
            let _ = dev.try_send(&p);
        }
        Ok(())
    }
}

/// Moves one connection's bytes between the stack's channels and its flow.
async fn carry(
    flow: FlowStream,
    mut from_app: mpsc::Receiver<Chunk>,
    to_app: mpsc::Sender<Chunk>,
    kick: Arc<Notify>,
    reset: Arc<AtomicBool>,
) {
    let (mut send, mut recv) = flow.into_split();
    let clean = {
        let up = async {
            loop {
                let chunk = from_app.recv().await;
                kick.notify_one(); // room in the channel: the stack may read the socket again
                match chunk {
                    Some(Chunk::Data(b)) => {
                        if send.write_all(&b).await.is_err() {
                            return false;
                        }
                    }
                    Some(Chunk::Fin) => {
                        let _ = send.finish();
                        return true;
                    }
                    None => return false, // the caller reset
                }
            }
        };
        let down = async {
            loop {
                match recv.read_chunk().await {
                    Ok(Some(chunk)) => {
                        // While the caller reads slowly, a reset or a lost connection
                        // must still reset it at once.
                        let permit = tokio::select! {
                            p = to_app.reserve() => p,
                            e = recv.interrupted() => {
                                debug!(error = %e, "flow reset or lost while the caller was slow; resetting the TUN connection");
                                return false;
                            }
                        };
                        let Ok(permit) = permit else { return false };
                        permit.send(Chunk::Data(chunk));
                        kick.notify_one();
                    }
                    Ok(None) => {
                        let ok = to_app.send(Chunk::Fin).await.is_ok();
                        kick.notify_one();
                        return ok;
                    }
                    Err(e) => {
                        debug!(error = %e, "flow reset or lost; resetting the TUN connection");
                        return false;
                    }
                }
            }
        };
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                ok = &mut up, if !up_done => {
                    if !ok { break false; }
                    up_done = true;
                }
                ok = &mut down, if !down_done => {
                    if !ok { break false; }
                    down_done = true;
                }
            }
            if up_done && down_done {
                break true;
            }
        }
    };
    if !clean {
        send.reset(ResetCode::CONNECTION_RESET);
        recv.stop(ResetCode::CONNECTION_RESET);
        reset.store(true, Ordering::Release);
    }
    // Dropping `to_app` here without a FIN tells the stack to reset the caller.
    drop(to_app);
    kick.notify_one();
}
