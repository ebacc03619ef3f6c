//! The connector's per-flow costs: admitting a flow under `maxActiveFlows`, dialing an
//! origin (against a plain `TcpStream::connect` to the same listener, the baseline), and
//! the rarely hot paths: loading a config and rendering `/metrics`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tokio::net::{TcpListener, TcpStream};
use zt_connector::{ConnectorConfig, ConnectorMetrics, FlowLimiter, OriginDialer};

const SEED_CONFIG: &str = "\
tunnel: 8e343b13-a087-48ea-825f-9783931ff2a5
credentials-file: /opt/zt/creds/creds.json
metrics: 0.0.0.0:8081
warp-routing:
    enabled: true
";

fn metrics() -> Arc<ConnectorMetrics> {
    // A nil connector id: the id plays no part in these costs.
    Arc::new(ConnectorMetrics::new(Default::default()))
}

fn admission(c: &mut Criterion) {
    let mut g = c.benchmark_group("connector_admission");
    // Baseline: the two atomic updates any flow counter costs.
    let counter = AtomicU64::new(0);
    g.bench_function("baseline_atomic_inc_dec", |b| {
        b.iter(|| {
            counter.fetch_add(1, Ordering::Relaxed);
            black_box(&counter);
            counter.fetch_sub(1, Ordering::Relaxed);
        })
    });
    let unlimited = FlowLimiter::new(None, metrics());
    g.bench_function("admit_drop_unlimited", |b| {
        b.iter(|| drop(black_box(unlimited.try_admit().unwrap())))
    });
    let limited = FlowLimiter::new(NonZeroU64::new(10_000), metrics());
    g.bench_function("admit_drop_limited", |b| {
        b.iter(|| drop(black_box(limited.try_admit().unwrap())))
    });
    g.finish();
}

fn dial(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                drop(s);
            }
        });
        addr
    });
    let config = ConnectorConfig::parse(SEED_CONFIG, "config.yaml").unwrap();
    let dialer = OriginDialer::new(&config, metrics());
    let mut g = c.benchmark_group("connector_dial_loopback");
    // Each iteration is a real connection; keep the count well below the ephemeral port
    // range so the run does not exhaust it.
    g.sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    g.bench_function("baseline_tcpstream_connect", |b| {
        b.iter(|| rt.block_on(async { drop(TcpStream::connect(addr).await.unwrap()) }))
    });
    g.bench_function("origin_dialer_dial_tcp", |b| {
        b.iter(|| rt.block_on(async { drop(dialer.dial_tcp(addr).await.unwrap()) }))
    });
    g.finish();
}

fn config_and_metrics(c: &mut Criterion) {
    let mut g = c.benchmark_group("connector_cold_paths");
    g.bench_function("parse_seed_config", |b| {
        b.iter(|| ConnectorConfig::parse(black_box(SEED_CONFIG), "config.yaml").unwrap())
    });
    let m = metrics();
    g.bench_function("render_prometheus", |b| {
        b.iter(|| black_box(m.render_prometheus()))
    });
    g.finish();
}

criterion_group!(benches, admission, dial, config_and_metrics);
criterion_main!(benches);
