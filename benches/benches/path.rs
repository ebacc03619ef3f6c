//! The full path client → edge → connector → origin on loopback, in one process, each
//! workload next to its baselines measured in the same run: a direct TCP connection to
//! the same origin and a plain single-hop TCP relay (tokio `copy_bidirectional`).
//!
//! - `path/bulk_1` and `path/bulk_8`: one flow, and 8 parallel flows sharing the bytes,
//!   write `ZT_BENCH_BULK_MIB` MiB (default 64) in 64 KiB chunks, FIN, then wait for the
//!   sink's 1-byte answer.
//! - `path/setup`: connect + 1-byte echo on a warm client connection; then a loop of
//!   `ZT_BENCH_SETUP_SAMPLES` (default 2,000) timed flows prints p50/p99.
//! - `path/rr64`: 64 concurrent callers, each flow fresh, 1 KiB request → 1 KiB response;
//!   criterion's elements/s is flows/s.
//! - `path/hol`: head-of-line isolation, printed (criterion has no percentiles): p50/p99 of a
//!   64-byte echo on an open flow and of a fresh flow's connect + 1-byte echo, first on an
//!   idle path, then while one bulk flow saturates the same path; `ZT_BENCH_HOL_SAMPLES`
//!   (default 2,000) samples each. The plain relay is measured the same way, as baseline.
//! - `path/wan_20ms_1g`: one bulk flow of `ZT_BENCH_WAN_MIB` MiB (default 32) from a second
//!   client whose leg to the edge crosses the impairment relay of zt-testkit: first with
//!   the relay unimpaired (its own cost: the baseline), then as a 20 ms, 1 Gbit/s path
//!   (10 ms each way, a 1 Gbit/s bottleneck with 20 ms of buffer). The connector stays on
//!   loopback. `ZT_BENCH_WAN_CC` (bbr, cubic, newreno), `_LOSS_PERMILLE`, `_JITTER_MS`,
//!   `_REORDER_PERCENT`, `_REORDER_GAP_MS` (default 5), `_PACKET_THRESHOLD` and
//!   `_TIME_THRESHOLD_PERMILLE` (the client's loss detection) shape other paths.
//!
//! The set-up (edge, connector, client, origins, relays) lives in `zt_benches::path`.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use zt_benches::hol;
use zt_benches::path::{PathRig, CHUNK};
use zt_client::Client;
use zt_testkit::impair::{Impair, Impairment};

/// How a flow reaches the origin.
#[derive(Clone, Copy)]
enum Via {
    /// Straight TCP to the origin.
    Direct,
    /// Through the plain relay.
    Relay,
    /// Through client → edge → connector.
    Zt,
}

impl Via {
    const ALL: [Via; 3] = [Via::Direct, Via::Relay, Via::Zt];

    fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct_tcp",
            Via::Relay => "tcp_relay",
            Via::Zt => "zt",
        }
    }
}

/// Opens one flow to the echo (`echo = true`) or the sink origin.
async fn open(rig: &Shared, via: Via, echo: bool) -> Box<dyn hol::Flow> {
    let (direct, relay) = if echo {
        (rig.echo, rig.relay_echo)
    } else {
        (rig.sink, rig.relay_sink)
    };
    match via {
        Via::Direct | Via::Relay => {
            let addr = if matches!(via, Via::Direct) {
                direct
            } else {
                relay
            };
            let s = TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            Box::new(s)
        }
        Via::Zt => Box::new(rig.client.dial(direct).await.unwrap()),
    }
}

/// What the workloads need from the rig, cheap to clone into tasks.
#[derive(Clone)]
struct Shared {
    client: Arc<Client>,
    echo: SocketAddr,
    sink: SocketAddr,
    relay_echo: SocketAddr,
    relay_sink: SocketAddr,
}

fn bulk_bytes() -> u64 {
    let mib: u64 = std::env::var("ZT_BENCH_BULK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    mib * 1024 * 1024
}

/// Writes `bytes` to the sink, FIN, and waits for its answer.
async fn bulk_flow(rig: Shared, via: Via, bytes: u64) {
    let mut s = open(&rig, via, false).await;
    let buf = vec![0x5au8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..n]).await.unwrap();
        left -= n as u64;
    }
    s.shutdown().await.unwrap();
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await.unwrap();
}

fn bulk(c: &mut Criterion, rt: &Runtime, rig: &Shared, flows: u64) {
    let total = bulk_bytes();
    let per_flow = total / flows;
    let mut g = c.benchmark_group(format!("path/bulk_{flows}"));
    g.throughput(Throughput::Bytes(per_flow * flows));
    g.sample_size(10);
    for via in Via::ALL {
        g.bench_function(via.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let tasks: Vec<_> = (0..flows)
                            .map(|_| tokio::spawn(bulk_flow(rig.clone(), via, per_flow)))
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    }
                    start.elapsed()
                })
            });
        });
    }
    g.finish();
}

/// One connect + 1-byte echo, then close.
async fn setup_once(rig: &Shared, via: Via) {
    let mut s = open(rig, via, true).await;
    s.write_all(b"p").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    s.shutdown().await.unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn setup(c: &mut Criterion, rt: &Runtime, rig: &Shared) {
    let mut g = c.benchmark_group("path/setup");
    for via in [Via::Direct, Via::Zt] {
        g.bench_function(via.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        setup_once(rig, via).await;
                    }
                    start.elapsed()
                })
            });
        });
    }
    g.finish();

    // Percentiles, which criterion does not give: each flow timed alone.
    let samples: usize = std::env::var("ZT_BENCH_SETUP_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    if samples == 0 || !selected("path/setup") {
        return;
    }
    for via in [Via::Direct, Via::Zt] {
        let mut times = rt.block_on(async {
            for _ in 0..100 {
                setup_once(rig, via).await;
            }
            let mut times = Vec::with_capacity(samples);
            for _ in 0..samples {
                let t = Instant::now();
                setup_once(rig, via).await;
                times.push(t.elapsed());
            }
            times
        });
        times.sort_unstable();
        println!(
            "path/setup/{} over {samples} flows: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            via.name(),
            percentile(&times, 0.50).as_secs_f64() * 1e6,
            percentile(&times, 0.99).as_secs_f64() * 1e6,
            times[times.len() - 1].as_secs_f64() * 1e6,
        );
    }
}

/// Whether the filter given on the command line (its first argument that is not an
/// option) lets `name` run; used for the printed percentiles, which criterion does not
/// filter. Criterion's filters are regular expressions: this covers the usual ones (a
/// prefix such as `path/` or an alternation naming `setup` or `hol`) without a regex engine.
fn selected(name: &str) -> bool {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--bench" {
            continue;
        }
        if a.starts_with("--") {
            // Options that take a value consume the next argument.
            if matches!(
                a.as_str(),
                "--warm-up-time"
                    | "--measurement-time"
                    | "--sample-size"
                    | "--save-baseline"
                    | "--baseline"
                    | "--noise-threshold"
                    | "--significance-level"
                    | "--confidence-level"
                    | "--nresamples"
                    | "--output-format"
                    | "--color"
                    | "--profile-time"
            ) {
                args.next();
            }
            continue;
        }
        let last = name.rsplit('/').next().unwrap_or(name);
        return name.contains(a.as_str()) || a.contains(last);
    }
    true
}

/// Callers of the request/response workload, as the issue asks.
const CALLERS: u64 = 64;
/// Request and response size.
const RR_BYTES: usize = 1024;

async fn rr_once(rig: &Shared, via: Via) {
    let mut s = open(rig, via, true).await;
    let req = [0x33u8; RR_BYTES];
    s.write_all(&req).await.unwrap();
    let mut resp = [0u8; RR_BYTES];
    s.read_exact(&mut resp).await.unwrap();
    s.shutdown().await.unwrap();
}

fn rr64(c: &mut Criterion, rt: &Runtime, rig: &Shared) {
    let mut g = c.benchmark_group("path/rr64");
    // One iteration is one round of 64 flows, one per caller.
    g.throughput(Throughput::Elements(CALLERS));
    for via in [Via::Relay, Via::Zt] {
        g.bench_function(via.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let callers: Vec<_> = (0..CALLERS)
                        .map(|_| {
                            let rig = rig.clone();
                            tokio::spawn(async move {
                                for _ in 0..iters {
                                    rr_once(&rig, via).await;
                                }
                            })
                        })
                        .collect();
                    for t in callers {
                        t.await.unwrap();
                    }
                    start.elapsed()
                })
            });
        });
    }
    g.finish();
}

/// Suite 4: small flows' latency while one bulk flow saturates the path, against idle.
fn hol(rt: &Runtime, rig: &Shared) {
    let samples: usize = std::env::var("ZT_BENCH_HOL_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    if samples == 0 {
        return;
    }
    for via in [Via::Relay, Via::Zt] {
        let rig = rig.clone();
        let dial: hol::Dialer = Arc::new(move |echo| {
            let rig = rig.clone();
            Box::pin(async move { open(&rig, via, echo).await })
        });
        let figures = rt.block_on(hol::measure(dial, samples));
        figures.print(&format!("path/hol/{}", via.name()), samples);
    }
    println!("path/hol: load average {}", hol::load_average());
}

/// One bulk flow through a client whose edge leg crosses the impairment relay, unimpaired
/// and then as a 20 ms, 1 Gbit/s path.
fn wan(c: &mut Criterion, rt: &Runtime, rig: &PathRig, shared: &Shared) {
    let env = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mib = env("ZT_BENCH_WAN_MIB", 32);
    // The path's round trip and rate (0: no rate limit), for trying other shapes.
    let rtt_ms = env("ZT_BENCH_WAN_RTT_MS", 20);
    let mbit = env("ZT_BENCH_WAN_MBIT", 1000);
    let loss_permille = env("ZT_BENCH_WAN_LOSS_PERMILLE", 0);
    let bytes = mib * 1024 * 1024;
    let relay = Impair::start("bench-wan", rig.edge_addr().unwrap());
    // The far client's congestion controller (it is the sender): ZT_BENCH_WAN_CC = bbr
    // (zt's default), cubic or newreno; its windows as every hop's (`bench_transport`).
    let mut transport = zt_benches::path::bench_transport();
    let cc = std::env::var("ZT_BENCH_WAN_CC").unwrap_or_else(|_| "bbr".into());
    transport.congestion = match cc.as_str() {
        "cubic" => zt_proto::Congestion::Cubic,
        "newreno" => zt_proto::Congestion::NewReno,
        _ => zt_proto::Congestion::Bbr,
    };
    // Its loss detection (RFC 9002's thresholds), for trying reordering tolerance.
    let defaults = zt_proto::TransportSettings::default();
    transport.loss_packet_threshold = env(
        "ZT_BENCH_WAN_PACKET_THRESHOLD",
        u64::from(defaults.loss_packet_threshold),
    ) as u32;
    transport.loss_time_threshold_permille = env(
        "ZT_BENCH_WAN_TIME_THRESHOLD_PERMILLE",
        u64::from(defaults.loss_time_threshold_permille),
    ) as u32;
    let jitter_ms = env("ZT_BENCH_WAN_JITTER_MS", 0);
    let reorder_percent = env("ZT_BENCH_WAN_REORDER_PERCENT", 0);
    let reorder_gap_ms = env("ZT_BENCH_WAN_REORDER_GAP_MS", 5);
    let transport_thresholds = (
        transport.loss_packet_threshold,
        transport.loss_time_threshold_permille,
    );
    let client = Arc::new(rt.block_on(rig.client_via(relay.addr, transport)).unwrap());
    let far = Shared {
        client,
        ..shared.clone()
    };
    let path = Impairment {
        rate_bps: (mbit > 0).then_some(mbit * 1_000_000),
        delay: Duration::from_millis(rtt_ms) / 2,
        buffer: Duration::from_millis(20),
        loss: loss_permille as f64 / 1000.0,
        jitter: Duration::from_millis(jitter_ms),
        reorder: reorder_percent as f64 / 100.0,
        reorder_gap: Duration::from_millis(reorder_gap_ms),
        ..Impairment::NONE
    };
    let mut g = c.benchmark_group("path/wan_20ms_1g");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    for (name, impairment) in [
        ("zt_relay_unimpaired", Impairment::NONE),
        ("zt_20ms_1gbit", path),
    ] {
        relay.set_both(impairment);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        bulk_flow(far.clone(), Via::Zt, bytes).await;
                    }
                    start.elapsed()
                })
            });
        });
    }
    g.finish();
    println!(
        "path/wan_20ms_1g relay ({rtt_ms} ms ± {jitter_ms} ms, {mbit} Mbit/s, loss {loss_permille} permille, reorder {reorder_percent} % by {reorder_gap_ms} ms, client congestion {cc}, loss thresholds {} packets / {} permille RTT): {}",
        transport_thresholds.0,
        transport_thresholds.1,
        relay.summary()
    );
    far.client.shutdown();
}

fn path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rig = rt.block_on(PathRig::start()).unwrap();
    let shared = Shared {
        client: Arc::clone(&rig.client),
        echo: rig.echo,
        sink: rig.sink,
        relay_echo: rig.relay_echo,
        relay_sink: rig.relay_sink,
    };
    bulk(c, &rt, &shared, 1);
    bulk(c, &rt, &shared, 8);
    setup(c, &rt, &shared);
    rr64(c, &rt, &shared);
    if selected("path/hol") {
        hol(&rt, &shared);
    }
    if selected("path/wan_20ms_1g") {
        wan(c, &rt, &rig, &shared);
    }
    rt.block_on(rig.stop());
}

criterion_group!(benches, path);
criterion_main!(benches);
