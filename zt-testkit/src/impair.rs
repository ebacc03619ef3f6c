//! A userspace UDP impairment relay, for tests that need a bad network between two QUIC
//! endpoints on a kernel without `netem`.
//!
//! The relay listens on a loopback port and forwards to one target (the edge). A peer (a
//! connector or a client) is pointed at the relay's address instead of the edge's; for each
//! peer source address the relay opens its own upstream socket towards the target, so the
//! target sees one distinct address per peer and answers go back to the right one, like a
//! NAT. Each direction has its own [`Impairment`]: loss, duplication, reordering, one-way
//! delay with jitter, a bottleneck rate with a drop-tail buffer and a blackhole switch, all
//! changeable while traffic flows.
//!
//! Every random decision comes from a generator seeded from one printed seed; setting
//! `ZT_IMPAIR_SEED` to that value repeats the same decisions packet for packet in each
//! direction (thread timing still varies, so a run is reproducible in its impairment, not
//! to the microsecond).
//!
//! Bounds: at most [`MAX_QUEUED`] packets wait in the delay queue (more are dropped and
//! counted), at most [`MAX_PEERS`] peers at once, and a peer idle for [`PEER_IDLE`] is
//! forgotten with its socket.

use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Packets held in the delay queue at most; beyond, new packets are dropped (and counted
/// in [`DirStats::overflow`]). 20 ms of delay at 1 Gbit/s is about 1,700 full packets.
pub const MAX_QUEUED: usize = 50_000;
/// Peers (source addresses) served at once.
pub const MAX_PEERS: usize = 256;
/// A peer with no packet either way for this long is forgotten.
pub const PEER_IDLE: Duration = Duration::from_secs(60);
/// How often blocking receives wake up to look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// What happens to packets in one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Probability a packet is dropped (0.0–1.0).
    pub loss: f64,
    /// Probability a packet is sent twice (the copy right after the original).
    pub duplicate: f64,
    /// Probability a packet is held back by `reorder_gap` beyond its delay, so packets
    /// sent after it overtake it.
    pub reorder: f64,
    /// How long a reordered packet is held back.
    pub reorder_gap: Duration,
    /// One-way delay.
    pub delay: Duration,
    /// The delay varies uniformly within ± this. Jitter alone keeps the order of the
    /// packets (a packet never leaves before the one ahead of it, as netem does with a
    /// FIFO child queue); only `reorder` reorders, so the two can be set independently.
    pub jitter: Duration,
    /// Drop everything.
    pub blackhole: bool,
    /// A bottleneck of this many bits per second (`None`: unlimited): packets leave one
    /// after another at this rate, as on a link of that speed, before the `delay` (the
    /// path's propagation delay) is added. A 20 ms, 1 Gbit/s path is `rate_bps:
    /// Some(1_000_000_000)` with `delay: 10 ms` each way.
    pub rate_bps: Option<u64>,
    /// How much the bottleneck buffers, as waiting time at `rate_bps`; a packet that would
    /// wait longer is dropped (drop-tail, counted in [`DirStats::rate_dropped`]).
    pub buffer: Duration,
}

impl Impairment {
    /// A clean path: nothing dropped, duplicated, reordered or delayed.
    pub const NONE: Impairment = Impairment {
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        reorder_gap: Duration::from_millis(10),
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        blackhole: false,
        rate_bps: None,
        buffer: Duration::from_millis(20),
    };
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment::NONE
    }
}

/// Which way a packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the peers to the target (connector → edge).
    Up,
    /// From the target to the peers (edge → connector).
    Down,
}

/// Counters of one direction.
#[derive(Debug, Default)]
pub struct DirStats {
    /// Packets received.
    pub received: AtomicU64,
    /// Packets sent on (copies included).
    pub delivered: AtomicU64,
    /// Dropped by `loss`.
    pub lost: AtomicU64,
    /// Dropped by the blackhole.
    pub blackholed: AtomicU64,
    /// Extra copies sent.
    pub duplicated: AtomicU64,
    /// Packets held back for reordering.
    pub reordered: AtomicU64,
    /// Dropped by the bottleneck's full buffer (see [`Impairment::rate_bps`]).
    pub rate_dropped: AtomicU64,
    /// Dropped because the delay queue was full.
    pub overflow: AtomicU64,
}

impl DirStats {
    fn snapshot(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "received {} delivered {} lost {} blackholed {} duplicated {} reordered {} rate-dropped {} overflow {}",
            g(&self.received),
            g(&self.delivered),
            g(&self.lost),
            g(&self.blackholed),
            g(&self.duplicated),
            g(&self.reordered),
            g(&self.rate_dropped),
            g(&self.overflow)
        )
    }
}

/// splitmix64: small, fast, and good enough to decide the fate of packets.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// The seed: `ZT_IMPAIR_SEED` when set, else drawn from the clock and the process id.
fn seed() -> u64 {
    if let Some(s) = std::env::var("ZT_IMPAIR_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return s;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut r = Rng(nanos ^ u64::from(std::process::id()).rotate_left(32));
    r.next_u64()
}

/// Where a queued packet goes.
#[derive(Clone)]
enum Out {
    /// To the target, on this peer's upstream socket.
    Up(Arc<UdpSocket>),
    /// To a peer, from the listening socket.
    Down(SocketAddr),
}

struct Queued {
    at: Instant,
    seq: u64,
    out: Out,
    bytes: Vec<u8>,
    dir: Dir,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// Reversed, so the max-heap pops the earliest packet first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct DirState {
    settings: Impairment,
    rng: Rng,
    /// When the last in-order packet leaves: jitter never sends a packet before it.
    last_at: Option<Instant>,
    /// When the bottleneck has sent everything admitted so far.
    link_free: Option<Instant>,
}

struct Shared {
    listen: Arc<UdpSocket>,
    target: SocketAddr,
    up: Mutex<DirState>,
    down: Mutex<DirState>,
    up_stats: DirStats,
    down_stats: DirStats,
    queue: Mutex<(BinaryHeap<Queued>, u64)>,
    queued: Condvar,
    peers: Mutex<HashMap<SocketAddr, Arc<Peer>>>,
    stop: AtomicBool,
    started: Instant,
}

struct Peer {
    upstream: Arc<UdpSocket>,
    /// Milliseconds since the relay started, of the last packet either way.
    last: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn stats(&self, dir: Dir) -> &DirStats {
        match dir {
            Dir::Up => &self.up_stats,
            Dir::Down => &self.down_stats,
        }
    }

    /// Applies the direction's impairment to one packet and queues what survives.
    fn admit(&self, dir: Dir, out: Out, bytes: &[u8]) {
        let stats = self.stats(dir);
        stats.received.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        // Decide everything under the direction's lock, in arrival order, so a seed
        // gives the same decisions for the same packet sequence.
        let plan = {
            let mut st = match dir {
                Dir::Up => self.up.lock().unwrap(),
                Dir::Down => self.down.lock().unwrap(),
            };
            let s = st.settings;
            if s.blackhole {
                stats.blackholed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if st.rng.chance(s.loss) {
                stats.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // The bottleneck: the packet leaves once the ones ahead of it have, at the
            // link's rate, unless it would wait beyond the buffer.
            let mut sent_at = now;
            if let Some(rate) = s.rate_bps.filter(|r| *r > 0) {
                let free = st.link_free.filter(|f| *f > now).unwrap_or(now);
                if free - now > s.buffer {
                    stats.rate_dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let on_the_wire = bytes.len() as f64 * 8.0 / rate as f64;
                sent_at = free + Duration::from_secs_f64(on_the_wire);
                st.link_free = Some(sent_at);
            }
            let mut delay = s.delay;
            if !s.jitter.is_zero() {
                let j = s.jitter.as_secs_f64() * (2.0 * st.rng.unit() - 1.0);
                delay = Duration::from_secs_f64((delay.as_secs_f64() + j).max(0.0));
            }
            let mut at = sent_at + delay;
            if st.rng.chance(s.reorder) {
                // Held back: packets sent after it overtake it.
                stats.reordered.fetch_add(1, Ordering::Relaxed);
                at += s.reorder_gap;
            } else {
                if let Some(last) = st.last_at.filter(|l| *l > at) {
                    at = last;
                }
                st.last_at = Some(at);
            }
            let copies = if st.rng.chance(s.duplicate) {
                stats.duplicated.fetch_add(1, Ordering::Relaxed);
                2
            } else {
                1
            };
            (at, copies)
        };
        let (at, copies) = plan;
        let mut q = self.queue.lock().unwrap();
        for _ in 0..copies {
            if q.0.len() >= MAX_QUEUED {
                stats.overflow.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            q.1 += 1;
            let seq = q.1;
            q.0.push(Queued {
                at,
                seq,
                out: out.clone(),
                bytes: bytes.to_vec(),
                dir,
            });
        }
        drop(q);
        self.queued.notify_one();
    }

    fn send(&self, p: Queued) {
        let sent = match &p.out {
            Out::Up(sock) => sock.send(&p.bytes),
            Out::Down(peer) => self.listen.send_to(&p.bytes, peer),
        };
        if sent.is_ok() {
            self.stats(p.dir).delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A running relay; its threads stop and its sockets close when it is dropped.
pub struct Impair {
    /// The address peers are pointed at.
    pub addr: SocketAddr,
    /// The seed of this relay's decisions.
    pub seed: u64,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Impair {
    /// Starts a relay on 127.0.0.1 that forwards to `target`, with a clean path both ways.
    /// Prints the seed (and how to repeat it).
    pub fn start(name: &str, target: SocketAddr) -> Impair {
        let seed = seed();
        eprintln!(
            "IMPAIR {name}: seed {seed} (set ZT_IMPAIR_SEED={seed} to repeat this run's \
             impairment decisions)"
        );
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind the relay socket"));
        listen.set_read_timeout(Some(POLL)).unwrap();
        let addr = listen.local_addr().unwrap();
        let shared = Arc::new(Shared {
            listen,
            target,
            up: Mutex::new(DirState {
                settings: Impairment::NONE,
                rng: Rng(seed ^ 0x5550_5550_5550_5550),
                last_at: None,
                link_free: None,
            }),
            down: Mutex::new(DirState {
                settings: Impairment::NONE,
                rng: Rng(seed ^ 0x444f_574e_444f_574e),
                last_at: None,
                link_free: None,
            }),
            up_stats: DirStats::default(),
            down_stats: DirStats::default(),
            queue: Mutex::new((BinaryHeap::new(), 0)),
            queued: Condvar::new(),
            peers: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            started: Instant::now(),
        });
        let s = shared.clone();
        let listener = std::thread::Builder::new()
            .name(format!("impair-{name}-listen"))
            .spawn(move || listen_loop(s))
            .unwrap();
        let s = shared.clone();
        let scheduler = std::thread::Builder::new()
            .name(format!("impair-{name}-sched"))
            .spawn(move || schedule_loop(s))
            .unwrap();
        Impair {
            addr,
            seed,
            shared,
            threads: vec![listener, scheduler],
        }
    }

    /// Sets the impairment of one direction.
    pub fn set(&self, dir: Dir, settings: Impairment) {
        match dir {
            Dir::Up => self.shared.up.lock().unwrap().settings = settings,
            Dir::Down => self.shared.down.lock().unwrap().settings = settings,
        }
    }

    /// Sets the same impairment both ways.
    pub fn set_both(&self, settings: Impairment) {
        self.set(Dir::Up, settings);
        self.set(Dir::Down, settings);
    }

    /// The current impairment of one direction.
    pub fn get(&self, dir: Dir) -> Impairment {
        match dir {
            Dir::Up => self.shared.up.lock().unwrap().settings,
            Dir::Down => self.shared.down.lock().unwrap().settings,
        }
    }

    /// Turns the blackhole on or off in both directions, keeping the other settings.
    pub fn blackhole(&self, on: bool) {
        for dir in [Dir::Up, Dir::Down] {
            let mut s = self.get(dir);
            s.blackhole = on;
            self.set(dir, s);
        }
    }

    /// The counters of one direction.
    pub fn stats(&self, dir: Dir) -> &DirStats {
        self.shared.stats(dir)
    }

    /// Both directions' counters, one line.
    pub fn summary(&self) -> String {
        format!(
            "up: {}; down: {}; peers {}",
            self.shared.up_stats.snapshot(),
            self.shared.down_stats.snapshot(),
            self.shared.peers.lock().unwrap().len()
        )
    }
}

impl Drop for Impair {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.queued.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Peer threads see the flag within one poll interval and close their sockets.
        let peers: Vec<_> = self.shared.peers.lock().unwrap().drain().collect();
        drop(peers);
    }
}

/// Receives from the peers; opens an upstream socket (and its receiving thread) per peer.
fn listen_loop(s: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    while !s.stop.load(Ordering::Relaxed) {
        let (n, from) = match s.listen.recv_from(&mut buf) {
            Ok(r) => r,
            Err(_) => continue, // read timeout: look at the stop flag again
        };
        let peer = {
            let mut peers = s.peers.lock().unwrap();
            match peers.get(&from) {
                Some(p) => Some(p.clone()),
                None if peers.len() >= MAX_PEERS => None,
                None => {
                    let upstream = UdpSocket::bind("127.0.0.1:0")
                        .and_then(|u| u.connect(s.target).map(|()| u))
                        .and_then(|u| u.set_read_timeout(Some(POLL)).map(|()| u));
                    match upstream {
                        Ok(u) => {
                            let p = Arc::new(Peer {
                                upstream: Arc::new(u),
                                last: AtomicU64::new(s.now_ms()),
                            });
                            peers.insert(from, p.clone());
                            let (s2, p2) = (s.clone(), p.clone());
                            let spawned = std::thread::Builder::new()
                                .name("impair-peer".into())
                                .spawn(move || peer_loop(s2, from, p2));
                            if spawned.is_err() {
                                peers.remove(&from);
                                None
                            } else {
                                Some(p)
                            }
                        }
                        Err(e) => {
                            eprintln!("IMPAIR: cannot open an upstream socket for {from}: {e}");
                            None
                        }
                    }
                }
            }
        };
        let Some(peer) = peer else { continue };
        peer.last.store(s.now_ms(), Ordering::Relaxed);
        s.admit(Dir::Up, Out::Up(peer.upstream.clone()), &buf[..n]);
    }
}

/// Receives the target's answers to one peer; ends when the relay stops or the peer idles.
fn peer_loop(s: Arc<Shared>, peer_addr: SocketAddr, peer: Arc<Peer>) {
    let mut buf = vec![0u8; 65_536];
    while !s.stop.load(Ordering::Relaxed) {
        match peer.upstream.recv(&mut buf) {
            Ok(n) => {
                peer.last.store(s.now_ms(), Ordering::Relaxed);
                s.admit(Dir::Down, Out::Down(peer_addr), &buf[..n]);
            }
            Err(_) => {
                let idle = s.now_ms().saturating_sub(peer.last.load(Ordering::Relaxed));
                if idle > PEER_IDLE.as_millis() as u64 {
                    s.peers.lock().unwrap().remove(&peer_addr);
                    return;
                }
            }
        }
    }
}

/// Sends queued packets when their time comes.
fn schedule_loop(s: Arc<Shared>) {
    let mut q = s.queue.lock().unwrap();
    loop {
        if s.stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        match q.0.peek().map(|p| p.at) {
            Some(at) if at <= now => {
                let p = q.0.pop().unwrap();
                drop(q);
                s.send(p);
                q = s.queue.lock().unwrap();
            }
            Some(at) => q = s.queued.wait_timeout(q, at - now).unwrap().0,
            None => q = s.queued.wait_timeout(q, POLL).unwrap().0,
        }
    }
}
