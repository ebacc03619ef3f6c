//! Scale and memory of the full path, with the edge and the connector in their own
//! processes (this binary started again as each; see `zt_benches::procs`) so that each
//! one's resident memory is read from `/proc/<pid>/status` on its own. The client and the
//! origins run in this process.
//!
//! Printed, in order (criterion has no memory figures, so this file has its own `main`):
//! 1. on a fresh edge and connector (4 HA connections), one bulk flow and then 8 parallel
//!    flows of `ZT_BENCH_BULK_MIB` MiB (default 256) in all: throughput and the
//!    connector's largest resident size, sampled every 10 ms, against the seed's 100 MiB
//!    container limit, and the CPU time (user + system) the edge and the connector spent
//!    per GiB, which a loaded machine disturbs far less than throughput;
//! 2. on another fresh edge and connector, their resident memory once started, and the
//!    set-up rate (64 callers, connect + 1-byte echo + close, `ZT_BENCH_SCALE_PROBE`
//!    flows, default 2,000) on the idle path;
//!    then `ZT_BENCH_SCALE_FLOWS` (default 10,000) concurrent idle flows, each opened with a
//!    1-byte echo and then left open, spread over `ZT_BENCH_SCALE_CLIENTS` (default 4)
//!    client connections (one connection may carry at most 10,000 flows): the edge's and
//!    the connector's resident memory per flow (growth of `VmRSS` over the count), and
//!    the set-up rate again while they are open, and the connector's peak;
//! 3. head-of-line isolation with every hop in a process of its own (`zt_benches::hol`,
//!    `ZT_BENCH_HOL_SAMPLES` samples, default 2,000): a 64-byte echo on an open flow and
//!    a fresh flow's connect + 1-byte echo, idle and then beside one bulk flow, on direct
//!    TCP, through a plain TCP relay process, and through zt (client here, edge and
//!    connector in their processes), with the load average.
//!
//! `ZT_BENCH_SCALE_PHASES` picks phases (default `bulk,scale,hol`);
//! `ZT_BENCH_CLIENT_CONNECTIONS` the bulk phase's client connection count (default 1).
//!
//! ```sh
//! cargo bench -p zt-benches --bench path_scale
//! ```
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use zt_benches::hol;
use zt_benches::path::{check_path, echo_server, sink_server, CHUNK};
use zt_benches::procs::{run_role_if_child, Memory, ProcRig, RelayProcess, Sampler};
use zt_client::{Client, ClientOptions, ClientStream};

const MIB: f64 = 1024.0 * 1024.0;
/// The seed's container memory limit for the connector.
const SEED_LIMIT: u64 = 100 * 1024 * 1024;
/// Concurrent callers of the set-up rate probe and of the idle flows' opening.
const CALLERS: usize = 64;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn show(what: &str, edge: Memory, connector: Memory) {
    println!(
        "MEASURED path_scale {what}: edge VmRSS {:.1} MiB (peak {:.1}), connector VmRSS {:.1} MiB (peak {:.1})",
        mib(edge.rss),
        mib(edge.peak),
        mib(connector.rss),
        mib(connector.peak),
    );
}

/// Opens a flow to the echo origin and proves it with a 1-byte echo.
async fn open_echo(client: &Client, echo: SocketAddr) -> ClientStream {
    let mut s = client.dial(echo).await.unwrap();
    s.write_all(b"i").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    s
}

/// `flows` set-ups (connect + 1-byte echo + close) by 64 callers; flows/s and p99.
async fn setup_rate(client: &Arc<Client>, echo: SocketAddr, flows: u64) -> (f64, Duration) {
    let left = Arc::new(AtomicU64::new(flows));
    let start = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let client = Arc::clone(client);
            let left = Arc::clone(&left);
            tokio::spawn(async move {
                let mut times = Vec::new();
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let t = Instant::now();
                    let mut s = open_echo(&client, echo).await;
                    s.shutdown().await.unwrap();
                    times.push(t.elapsed());
                }
                times
            })
        })
        .collect();
    let mut times = Vec::new();
    for c in callers {
        times.extend(c.await.unwrap());
    }
    let rate = flows as f64 / start.elapsed().as_secs_f64();
    times.sort_unstable();
    let p99 = times
        .get(((times.len() as f64 - 1.0) * 0.99).round() as usize)
        .copied()
        .unwrap_or_default();
    (rate, p99)
}

/// Writes `bytes` to the sink origin, FIN, and waits for its 1-byte answer.
async fn bulk_flow(client: Arc<Client>, sink: SocketAddr, bytes: u64) {
    let mut s = client.dial(sink).await.unwrap();
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

fn main() {
    // In a child started as the edge or the connector, this runs that role and exits.
    run_role_if_child();

    let flows = env_or("ZT_BENCH_SCALE_FLOWS", 10_000);
    let clients_n = env_or("ZT_BENCH_SCALE_CLIENTS", 4).max(1);
    let probe = env_or("ZT_BENCH_SCALE_PROBE", 2_000);
    let bulk_bytes = env_or("ZT_BENCH_BULK_MIB", 256) * 1024 * 1024;
    let phases = std::env::var("ZT_BENCH_SCALE_PHASES").unwrap_or_else(|_| "bulk,scale,hol".into());
    let phase = |name: &str| phases.split(',').any(|p| p.trim() == name);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    if phase("bulk") {
        bulk_phase(&rt, bulk_bytes);
    }
    if phase("scale") {
        scale_phase(&rt, flows, clients_n, probe);
    }
    if phase("hol") {
        hol_phase(&rt, env_or("ZT_BENCH_HOL_SAMPLES", 2_000) as usize);
    }
}

/// Phase 1: bulk throughput, memory and CPU per GiB.
fn bulk_phase(rt: &tokio::runtime::Runtime, bulk_bytes: u64) {
    // Bulk first, on a rig of its own, so that memory it leaves in the allocator does not
    // hide the idle flows' growth below.
    let rig = ProcRig::start().unwrap();
    rt.block_on(async {
        let (sink, _sink_task) = sink_server().await.unwrap();
        let (echo, _echo_task) = echo_server().await.unwrap();
        // The client's connection set (`ZT_BENCH_CLIENT_CONNECTIONS`, default 1): new
        // flows go to its least loaded connection.
        let options = ClientOptions {
            transport: zt_benches::path::bench_transport(),
            connections: env_or("ZT_BENCH_CLIENT_CONNECTIONS", 1).clamp(1, 16) as usize,
            ..ClientOptions::default()
        };
        let client = Arc::new(Client::connect(&rig.device, options).await.unwrap());
        check_path(&client, echo).await.unwrap();
        let clients = [Arc::clone(&client)];
        for n in [1u64, 8] {
            let sampler = Sampler::start(rig.connector.pid(), Duration::from_millis(10));
            let (edge_cpu, conn_cpu) = (
                rig.edge.cpu_time().unwrap(),
                rig.connector.cpu_time().unwrap(),
            );
            let start = Instant::now();
            let tasks: Vec<_> = (0..n)
                .map(|_| tokio::spawn(bulk_flow(Arc::clone(&clients[0]), sink, bulk_bytes / n)))
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let took = start.elapsed();
            let max = sampler.finish();
            let gib = bulk_bytes as f64 / (1024.0 * MIB);
            println!(
                "MEASURED path_scale bulk {n} flow(s): CPU time per GiB: edge {:.0} ms, connector {:.0} ms",
                (rig.edge.cpu_time().unwrap() - edge_cpu).as_secs_f64() * 1e3 / gib,
                (rig.connector.cpu_time().unwrap() - conn_cpu).as_secs_f64() * 1e3 / gib,
            );
            println!(
                "MEASURED path_scale bulk {n} flow(s), {} MiB: {:.2} Gbit/s; connector VmRSS at most {:.1} MiB ({:.0} % of the seed's 100 MiB limit)",
                bulk_bytes / (1024 * 1024),
                (bulk_bytes / n * n) as f64 * 8.0 / took.as_secs_f64() / 1e9,
                mib(max),
                100.0 * max as f64 / SEED_LIMIT as f64
            );
        }
        show(
            "after the bulk flows",
            rig.edge.memory().unwrap(),
            rig.connector.memory().unwrap(),
        );
        client.shutdown();
    });
    drop(rig);
}

/// Phase 2: idle flows, memory per flow and the set-up rate.
fn scale_phase(rt: &tokio::runtime::Runtime, flows: u64, clients_n: u64, probe: u64) {
    let rig = ProcRig::start().unwrap();
    rt.block_on(async {
        let (echo, _echo_task) = echo_server().await.unwrap();
        let mut clients = Vec::new();
        for _ in 0..clients_n {
            let c = Arc::new(
                Client::connect(&rig.device, ClientOptions::default())
                    .await
                    .unwrap(),
            );
            check_path(&c, echo).await.unwrap();
            clients.push(c);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        show(
            "started (4 HA connections, no flow)",
            rig.edge.memory().unwrap(),
            rig.connector.memory().unwrap(),
        );

        let (rate, p99) = setup_rate(&clients[0], echo, probe).await;
        println!(
            "MEASURED path_scale set-up rate, idle path: {rate:.0} flows/s ({CALLERS} callers, {probe} flows), p99 {:.0} µs",
            p99.as_secs_f64() * 1e6
        );

        tokio::time::sleep(Duration::from_millis(500)).await;
        let (edge0, conn0) = (rig.edge.memory().unwrap(), rig.connector.memory().unwrap());
        show("before the idle flows", edge0, conn0);

        // The idle flows: CALLERS openers, round robin over the clients.
        let start = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let openers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let clients = clients.clone();
                let next = Arc::clone(&next);
                tokio::spawn(async move {
                    let mut held = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= flows {
                            break held;
                        }
                        let client = &clients[(i % clients.len() as u64) as usize];
                        held.push(open_echo(client, echo).await);
                    }
                })
            })
            .collect();
        let mut idle = Vec::with_capacity(flows as usize);
        for o in openers {
            idle.extend(o.await.unwrap());
        }
        let opened_in = start.elapsed();
        println!(
            "MEASURED path_scale opened {flows} idle flows over {clients_n} client connections in {:.2} s ({:.0} flows/s)",
            opened_in.as_secs_f64(),
            flows as f64 / opened_in.as_secs_f64()
        );
        // Let acknowledgements and buffers settle before reading memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (edge1, conn1) = (rig.edge.memory().unwrap(), rig.connector.memory().unwrap());
        show(&format!("with {flows} idle flows open"), edge1, conn1);
        let per = |a: Memory, b: Memory| b.rss.saturating_sub(a.rss) as f64 / flows as f64 / 1024.0;
        println!(
            "MEASURED path_scale memory per idle flow: edge {:.2} KiB, connector {:.2} KiB (growth of VmRSS over {flows} flows; target 8 KiB each)",
            per(edge0, edge1),
            per(conn0, conn1),
        );

        let (rate, p99) = setup_rate(&clients[0], echo, probe).await;
        println!(
            "MEASURED path_scale set-up rate with {flows} idle flows open: {rate:.0} flows/s ({CALLERS} callers, {probe} flows), p99 {:.0} µs",
            p99.as_secs_f64() * 1e6
        );
        // Every idle flow still works.
        for s in &mut idle {
            s.write_all(b"j").await.unwrap();
        }
        for s in &mut idle {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"j", "an idle flow echoed another byte");
        }
        let conn = rig.connector.memory().unwrap();
        println!(
            "MEASURED path_scale connector peak during the scale workload: {:.1} MiB ({:.0} % of the seed's 100 MiB limit)",
            mib(conn.peak),
            100.0 * conn.peak as f64 / SEED_LIMIT as f64
        );
        for mut s in idle {
            let _ = s.shutdown().await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        show(
            "after the idle flows closed",
            rig.edge.memory().unwrap(),
            rig.connector.memory().unwrap(),
        );

        for c in &clients {
            c.shutdown();
        }
    });
    drop(rig);
}

/// Phase 3: small flows beside a bulk one, every hop in its own process.
fn hol_phase(rt: &tokio::runtime::Runtime, samples: usize) {
    if samples == 0 {
        return;
    }
    let (echo, sink, _origins) = rt.block_on(async {
        let (echo, e) = echo_server().await.unwrap();
        let (sink, s) = sink_server().await.unwrap();
        (echo, sink, (e, s))
    });
    let relay = RelayProcess::start(echo, sink).unwrap();
    let rig = ProcRig::start().unwrap();
    let client = rt.block_on(async {
        let options = ClientOptions {
            transport: zt_benches::path::bench_transport(),
            ..ClientOptions::default()
        };
        let client = Arc::new(Client::connect(&rig.device, options).await.unwrap());
        check_path(&client, echo).await.unwrap();
        client
    });
    let tcp = |echo: SocketAddr, sink: SocketAddr| -> hol::Dialer {
        Arc::new(move |to_echo| {
            Box::pin(async move {
                let s = tokio::net::TcpStream::connect(if to_echo { echo } else { sink })
                    .await
                    .unwrap();
                s.set_nodelay(true).unwrap();
                Box::new(s) as Box<dyn hol::Flow>
            })
        })
    };
    let zt: hol::Dialer = {
        let client = Arc::clone(&client);
        Arc::new(move |to_echo| {
            let client = Arc::clone(&client);
            Box::pin(async move {
                let s = client
                    .dial(if to_echo { echo } else { sink })
                    .await
                    .unwrap();
                Box::new(s) as Box<dyn hol::Flow>
            })
        })
    };
    for (name, dial) in [
        ("direct_tcp", tcp(echo, sink)),
        ("tcp_relay", tcp(relay.echo, relay.sink)),
        ("zt", zt),
    ] {
        let before = (
            rig.edge.cpu_time().unwrap(),
            rig.connector.cpu_time().unwrap(),
        );
        let figures = rt.block_on(hol::measure(dial, samples));
        figures.print(&format!("MEASURED path_scale hol/{name}"), samples);
        if name == "zt" {
            println!(
                "MEASURED path_scale hol/zt: edge and connector CPU during the run {:.2} s and {:.2} s",
                (rig.edge.cpu_time().unwrap() - before.0).as_secs_f64(),
                (rig.connector.cpu_time().unwrap() - before.1).as_secs_f64(),
            );
        }
        println!(
            "MEASURED path_scale hol/{name}: load average {}",
            hol::load_average()
        );
    }
    client.shutdown();
}
