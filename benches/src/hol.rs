//! Head-of-line isolation, measured the same way on every path: a small echo on an open
//! flow and a fresh flow's connect + 1-byte echo, timed one by one, first on the idle path
//! and then while one bulk flow saturates the same path (`benches/benches/path.rs` in one
//! process, `benches/benches/path_scale.rs` with the edge, the connector and the plain
//! relay in processes of their own).
// A benchmark that cannot do its I/O has nothing to report: it stops there.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::path::CHUNK;

/// Size of the echo on an open flow.
pub const ECHO: usize = 64;

/// A flow of any path: a TCP stream or a zt client stream.
pub trait Flow: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Flow for T {}

/// A boxed future of a new flow.
pub type Dialing = Pin<Box<dyn Future<Output = Box<dyn Flow>> + Send>>;

/// Opens a flow on one path: to its echo origin (`true`) or its sink (`false`).
pub type Dialer = Arc<dyn Fn(bool) -> Dialing + Send + Sync>;

/// p50 and p99 of one kind of sample.
#[derive(Debug, Clone, Copy)]
pub struct Tail {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl Tail {
    fn of(times: &mut [Duration]) -> Self {
        times.sort_unstable();
        let at = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
        Self {
            p50: at(0.50),
            p99: at(0.99),
        }
    }
}

/// What one path measured.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Echo on an open flow, idle path.
    pub idle_echo: Tail,
    /// Fresh flow, idle path.
    pub idle_fresh: Tail,
    /// Echo on an open flow, under bulk.
    pub busy_echo: Tail,
    /// Fresh flow, under bulk.
    pub busy_fresh: Tail,
    /// What the bulk flow moved while the loaded samples ran, in MiB/s.
    pub bulk_mib_s: f64,
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl Figures {
    /// Prints the figures, one line per kind, prefixed with `label`.
    pub fn print(&self, label: &str, samples: usize) {
        let line = |what: &str, idle: Tail, busy: Tail| {
            println!(
                "{label}: {what}, {samples} samples: idle p50 {:.1} µs p99 {:.1} µs; under bulk p50 {:.1} µs p99 {:.1} µs; p99 ratio {:.2}",
                micros(idle.p50),
                micros(idle.p99),
                micros(busy.p50),
                micros(busy.p99),
                busy.p99.as_secs_f64() / idle.p99.as_secs_f64(),
            );
        };
        line(
            &format!("{ECHO}-byte echo on an open flow"),
            self.idle_echo,
            self.busy_echo,
        );
        line(
            "fresh flow connect + 1-byte echo",
            self.idle_fresh,
            self.busy_fresh,
        );
        println!(
            "{label}: the bulk flow moved {:.1} MiB/s during the loaded samples",
            self.bulk_mib_s
        );
    }
}

/// `samples` echoes on `s` and as many fresh flows, timed one by one.
async fn samples(dial: &Dialer, s: &mut Box<dyn Flow>, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let msg = [0x42u8; ECHO];
    let mut back = [0u8; ECHO];
    let mut echo = Vec::with_capacity(n);
    let mut fresh = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut back).await.unwrap();
        echo.push(t.elapsed());
        let t = Instant::now();
        let mut f = dial(true).await;
        f.write_all(b"p").await.unwrap();
        let mut b = [0u8; 1];
        f.read_exact(&mut b).await.unwrap();
        f.shutdown().await.unwrap();
        fresh.push(t.elapsed());
    }
    (echo, fresh)
}

/// Writes to the sink until `stop` is set (or 1 TiB), then FIN and the sink's answer;
/// the bytes written.
async fn saturate(dial: Dialer, stop: Arc<AtomicBool>) -> u64 {
    let mut s = dial(false).await;
    let buf = vec![0x5au8; CHUNK];
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && sent < 1 << 40 {
        s.write_all(&buf).await.unwrap();
        sent += CHUNK as u64;
    }
    s.shutdown().await.unwrap();
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await.unwrap();
    sent
}

/// Measures one path: 100 unmeasured samples, `n` on the idle path, then `n` while one
/// bulk flow (started 300 ms before the first) saturates it.
pub async fn measure(dial: Dialer, n: usize) -> Figures {
    let mut s = dial(true).await;
    samples(&dial, &mut s, 100).await;
    let (mut idle_echo, mut idle_fresh) = samples(&dial, &mut s, n).await;
    let stop = Arc::new(AtomicBool::new(false));
    let bulk = tokio::spawn(saturate(dial.clone(), Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (mut busy_echo, mut busy_fresh) = samples(&dial, &mut s, n).await;
    let busy_for = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = bulk.await.unwrap();
    s.shutdown().await.unwrap();
    Figures {
        idle_echo: Tail::of(&mut idle_echo),
        idle_fresh: Tail::of(&mut idle_fresh),
        busy_echo: Tail::of(&mut busy_echo),
        busy_fresh: Tail::of(&mut busy_fresh),
        bulk_mib_s: (sent as f64 / (1024.0 * 1024.0)) / (busy_for.as_secs_f64() + 0.3),
    }
}

/// The load average over the last minute, from `/proc/loadavg` (for the printed figures).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
