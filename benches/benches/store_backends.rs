//! The state backends side by side, in one run: what one admin write costs and how long a
//! change takes to reach a subscriber, on the embedded redb file and on PostgreSQL (a server
//! zt-testkit starts on loopback, fsync on, as redb's commits are). Figures and command:
//! BENCHMARKS.md. Without PostgreSQL installed, the PostgreSQL half says SKIP and only redb
//! is measured.
//!
//! - admin_write: one tunnel and one route, uniqueness and references checked, committed;
//! - propagation: from the start of that commit to a subscriber seeing its revision — the
//!   same process's watch for redb (it cannot be shared), another edge's store (its own
//!   connections, LISTEN/NOTIFY) for PostgreSQL.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ipnet::{IpNet, Ipv4Net};
use zt_creds::TunnelSecret;
use zt_edge::{Db, PostgresOptions, PostgresStore, RedbStore, Route, Tunnel, VirtualNetwork};
use zt_testkit::postgres::PgServer;

const TAG: &str = "0123456789abcdef0123456789abcdef";

fn net(i: u32) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | ((i % 65_536) << 8)), 24).unwrap())
}

fn seed(db: &Db) -> VirtualNetwork {
    let mut vnet = VirtualNetwork::new("default");
    vnet.is_default = true;
    db.update(|t| t.put(&vnet)).unwrap();
    vnet
}

/// Benchmarks one backend: `writer` commits, `follower` is where the change must arrive.
fn backend(c: &mut Criterion, name: &str, writer: &Db, follower: &Db) {
    let vnet = seed(writer);
    let secret = TunnelSecret::generate();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("store_backends");
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(50);
    let mut n = 0u32;
    let commit = |n: u32| {
        let tunnel = Tunnel::new(format!("tunnel-{n}"), TAG, &secret);
        let ((), rev) = writer
            .update(|t| {
                t.put(&tunnel)?;
                t.put(&Route::new(net(n), vnet.id, tunnel.id))
            })
            .unwrap();
        rev
    };
    g.bench_function(format!("admin_write/{name}"), |b| {
        b.iter(|| {
            n += 1;
            commit(n)
        })
    });
    let mut rx = follower.subscribe();
    g.bench_function(format!("propagation/{name}"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let start = Instant::now();
                let rev = commit(n);
                rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|r| *r >= rev))
                        .await
                        .expect("the change arrived")
                        .unwrap();
                });
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn backends(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let redb = Db::new(Arc::new(
        RedbStore::open(&tmp.path().join("b.redb")).unwrap(),
    ));
    backend(c, "redb", &redb, &redb);

    let Some(pg) = PgServer::start("store_backends/postgres", true) else {
        return;
    };
    let url = pg.database();
    let options = PostgresOptions::new(&url, tmp.path().join("secrets.key"));
    let writer = Db::new(Arc::new(PostgresStore::open(&options).unwrap()));
    let follower = Db::new(Arc::new(PostgresStore::open(&options).unwrap()));
    backend(c, "postgres", &writer, &follower);
}

criterion_group!(benches, backends);
criterion_main!(benches);
