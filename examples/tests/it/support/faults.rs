//! Pieces shared by the network-fault tests: an edge with one routed and allowed tunnel,
//! a hashing origin and checked transfers through `zt client forward`, a request loop that
//! records every failure with its time, and process resource readings from /proc.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{hello_through, Edge};
pub use zt_testkit::data::{payload, sha256};
pub use zt_testkit::origin::seeded_hashing_origin;
use zt_testkit::origin::{seeded_reply, seeded_request};

/// An edge with tunnel `api-zt` routing and allowing `127.0.0.2/32`, and a user's device.
pub struct Setup {
    pub edge: Edge,
    pub creds: PathBuf,
    pub device: PathBuf,
}

impl Setup {
    pub fn new() -> Setup {
        let edge = Edge::start();
        let (creds, device) = edge.api_zt();
        Setup {
            edge,
            creds,
            device,
        }
    }
}

/// One checked transfer through `forward` to a [`seeded_hashing_origin`]: `len` bytes up (seeded
/// by `seed`), half-close, then the origin's hash of them and `len` bytes down. A read
/// or write that makes no progress for `stall` is a stall. Returns the time it took.
pub fn transfer(
    forward: SocketAddr,
    seed: u64,
    len: usize,
    stall: Duration,
) -> Result<Duration, String> {
    transfer_paced(forward, seed, len, len, len, Duration::ZERO, stall)
}

/// Like [`transfer`], with `up_len` bytes sent up in chunks of `chunk` with `pause`
/// between them (so the flow lasts), and `down_len` bytes asked for back.
pub fn transfer_paced(
    forward: SocketAddr,
    seed: u64,
    up_len: usize,
    down_len: usize,
    chunk: usize,
    pause: Duration,
    stall: Duration,
) -> Result<Duration, String> {
    let t = Instant::now();
    let up = seeded_request(seed, up_len, down_len);
    let mut s = TcpStream::connect(forward).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(stall)).unwrap();
    s.set_write_timeout(Some(stall)).unwrap();
    for (i, part) in up.chunks(chunk.max(1)).enumerate() {
        if i > 0 && !pause.is_zero() {
            std::thread::sleep(pause);
        }
        s.write_all(part).map_err(|e| {
            format!(
                "sending, after {} of {} bytes ({:?} in): {e}",
                i * chunk,
                up.len(),
                t.elapsed()
            )
        })?;
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("half-close: {e}"))?;
    let want = down_len + 32;
    let mut back = Vec::with_capacity(want);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => back.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Err(format!(
                    "stalled: no byte for {stall:?} after {} of {want} bytes back ({:?} in)",
                    back.len(),
                    t.elapsed()
                ))
            }
            Err(e) => {
                return Err(format!(
                    "receiving, after {} of {want} bytes back ({:?} in): {e}",
                    back.len(),
                    t.elapsed()
                ))
            }
        }
    }
    if back.len() != want {
        return Err(format!(
            "{} bytes back, expected {want} ({:?} in)",
            back.len(),
            t.elapsed()
        ));
    }
    if back[..32] != sha256(&up) {
        return Err("the origin's hash of the upload differs: bytes changed on the way up".into());
    }
    if sha256(&back[32..]) != sha256(&seeded_reply(seed, down_len)) {
        return Err("the download's hash differs: bytes changed on the way down".into());
    }
    Ok(t.elapsed())
}

/// The value of the first metric line starting with `name` (labels included in `name`
/// when given) on a Prometheus text page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Requests (`hello_through`) from `threads` threads, each pausing `pause` between
/// requests, until stopped; every failure is kept with when it started.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicU64>,
    pub failures: Arc<Mutex<Vec<(Instant, String)>>>,
    /// (started, took) of every successful request.
    pub latencies: Arc<Mutex<Vec<(Instant, Duration)>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(forward: SocketAddr, threads: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|i| {
                let (stop, ok, failures, latencies) = (
                    stop.clone(),
                    ok.clone(),
                    failures.clone(),
                    latencies.clone(),
                );
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        match hello_through(forward, &format!("req {i}-{n}")) {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                latencies.lock().unwrap().push((t, t.elapsed()));
                            }
                            Err(e) => failures.lock().unwrap().push((t, e)),
                        }
                        n += 1;
                        std::thread::sleep(pause);
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            latencies,
            threads,
        }
    }

    /// Stops the loops and waits for the requests in flight.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    pub fn failures(&self) -> Vec<(Instant, String)> {
        self.failures.lock().unwrap().clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Open file descriptors, resident memory and threads of a process, from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub fds: usize,
    pub rss_kib: u64,
    pub threads: u64,
}

impl Resources {
    pub fn of(pid: u32) -> Resources {
        Resources {
            fds: fd_count(pid),
            rss_kib: rss_kib(pid),
            threads: thread_count(pid),
        }
    }
}

/// Waits until `f` holds, checking every 20 ms, up to `limit`; returns how long it took
/// or `None` if it never held.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// /proc/PID/fd entries: the open file descriptors of a process (sockets included).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of a process in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Threads of a process (`Threads:` of /proc/PID/status): tokio's workers and blocking
/// threads, a coarse check that no task pinned a thread.
pub fn thread_count(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Threads:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
