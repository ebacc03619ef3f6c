//! A flow forwarded between edges against the same flow served by the edge that holds the
//! connector, in one run on one PostgreSQL database (the rig is `zt_benches::edges`):
//!
//! - `edges/setup/{direct,forwarded}`: connect + 1-byte echo on a warm client; then
//!   `ZT_BENCH_EDGES_SAMPLES` (default 2,000) flows of each, interleaved, each timed alone,
//!   for p50/p99 (printed; criterion has no percentiles).
//! - `edges/rr/{direct,forwarded}`: a 64-byte echo on an open flow.
//! - `edges/bulk/{direct,forwarded}`: one flow writes `ZT_BENCH_EDGES_MIB` MiB (default 32)
//!   to the sink and waits for its answer; then `ZT_BENCH_EDGES_CPU_ROUNDS` (default 8)
//!   rounds of one transfer each way, interleaved, give the process's CPU time per GiB for
//!   each (every zt part runs in this process): the difference is what the hop costs.
//!
//! Skipped, saying so, when PostgreSQL is not installed.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::runtime::Runtime;
use zt_benches::edges::EdgesRig;
use zt_benches::path::CHUNK;
use zt_client::Client;
use zt_testkit::postgres::PgServer;

#[derive(Clone, Copy)]
enum Via {
    Direct,
    Forwarded,
}

impl Via {
    const ALL: [Via; 2] = [Via::Direct, Via::Forwarded];

    fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Forwarded => "forwarded",
        }
    }

    fn client(self, rig: &EdgesRig) -> &Client {
        match self {
            Via::Direct => &rig.direct,
            Via::Forwarded => &rig.forwarded,
        }
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) of this process so far, from /proc (ticks of 10 ms).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    Duration::from_millis((f[0] + f[1]) * 10)
}

async fn setup_once(client: &Client, echo: SocketAddr) {
    let mut s = client.dial(echo).await.unwrap();
    s.write_all(b"p").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    s.shutdown().await.unwrap();
}

async fn bulk_once(client: &Client, sink: SocketAddr, bytes: usize) {
    let mut s = client.dial(sink).await.unwrap();
    let chunk = vec![0x5a; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK);
        s.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    s.shutdown().await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn edges(c: &mut Criterion) {
    let Some(pg) = PgServer::start("edges", false) else {
        return;
    };
    let rt = Runtime::new().unwrap();
    let rig = rt.block_on(EdgesRig::start(&pg.database())).unwrap();

    let mut g = c.benchmark_group("edges/setup");
    for via in Via::ALL {
        g.bench_function(via.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        setup_once(via.client(&rig), rig.echo).await;
                    }
                    t.elapsed()
                })
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("edges/rr");
    for via in Via::ALL {
        let mut s = rt.block_on(via.client(&rig).dial(rig.echo)).unwrap();
        g.bench_function(via.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let msg = [7u8; 64];
                    let mut back = [0u8; 64];
                    let t = Instant::now();
                    for _ in 0..iters {
                        s.write_all(&msg).await.unwrap();
                        s.read_exact(&mut back).await.unwrap();
                    }
                    t.elapsed()
                })
            });
        });
    }
    g.finish();

    let mib = env("ZT_BENCH_EDGES_MIB", 32);
    let bytes = mib << 20;
    let mut g = c.benchmark_group("edges/bulk");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(10);
    for via in Via::ALL {
        g.bench_function(via.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        bulk_once(via.client(&rig), rig.sink, bytes).await;
                    }
                    t.elapsed()
                })
            });
        });
    }
    g.finish();

    // What criterion does not give: percentiles of single flows, interleaved so load and
    // noise fall on both alike, and CPU per GiB.
    let samples = env("ZT_BENCH_EDGES_SAMPLES", 2000);
    if samples > 0 {
        let mut times = [Vec::with_capacity(samples), Vec::with_capacity(samples)];
        rt.block_on(async {
            for _ in 0..samples {
                for (i, via) in Via::ALL.into_iter().enumerate() {
                    let t = Instant::now();
                    setup_once(via.client(&rig), rig.echo).await;
                    times[i].push(t.elapsed());
                }
            }
        });
        for (i, via) in Via::ALL.into_iter().enumerate() {
            times[i].sort();
            println!(
                "edges/setup/{}: p50 {:?}, p99 {:?} ({samples} flows)",
                via.name(),
                percentile(&times[i], 0.5),
                percentile(&times[i], 0.99)
            );
        }
        println!(
            "edges/setup: forwarded/direct p50 {:.2}x, p99 {:.2}x",
            percentile(&times[1], 0.5).as_secs_f64() / percentile(&times[0], 0.5).as_secs_f64(),
            percentile(&times[1], 0.99).as_secs_f64() / percentile(&times[0], 0.99).as_secs_f64()
        );
    }
    // CPU per GiB: rounds of one transfer each way, interleaved, summed per path.
    let rounds = env("ZT_BENCH_EDGES_CPU_ROUNDS", 8);
    let mut cpu_used = [Duration::ZERO; 2];
    let mut wall = [Duration::ZERO; 2];
    for _ in 0..rounds {
        for (i, via) in Via::ALL.into_iter().enumerate() {
            let (c0, t0) = (cpu(), Instant::now());
            rt.block_on(bulk_once(via.client(&rig), rig.sink, bytes));
            cpu_used[i] += cpu() - c0;
            wall[i] += t0.elapsed();
        }
    }
    let gib = (bytes * rounds) as f64 / f64::from(1u32 << 30);
    let mut per_gib = [0.0f64; 2];
    for (i, via) in Via::ALL.into_iter().enumerate() {
        per_gib[i] = cpu_used[i].as_secs_f64() / gib;
        println!(
            "edges/bulk/{}: {rounds} x {mib} MiB at {:.0} MiB/s, process CPU {:.2} s per GiB",
            via.name(),
            (mib * rounds) as f64 / wall[i].as_secs_f64(),
            per_gib[i]
        );
    }
    println!(
        "edges/bulk: the peering hop adds {:.2} CPU-seconds per GiB ({:.2}x direct)",
        per_gib[1] - per_gib[0],
        per_gib[1] / per_gib[0]
    );
    rt.block_on(rig.stop());
}

criterion_group!(benches, edges);
criterion_main!(benches);
