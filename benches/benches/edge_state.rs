//! Edge state: what a store commit, a lookup, an audit line and a state-directory open cost,
//! each next to a baseline measured in the same run. Figures and commands: BENCHMARKS.md.
//!
//! - commit: one admin change (a tunnel and a route, uniqueness and references checked) on
//!   redb, against the floor any durable store pays — writing and fsyncing a file of the same
//!   size;
//! - lookups on a store of 1000 tunnels and 1000 routes: a tunnel by name (through the unique
//!   index) and the whole route table (what the edge reads to rebuild its lookup structure),
//!   against decoding the same records from memory;
//! - audit: one flow line written (buffered), against serializing the record alone;
//! - state directory: opening an existing one (parse and check CA, certificate and keys, open
//!   the database), and rotating the server certificate.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ipnet::{IpNet, Ipv4Net};
use zt_creds::TunnelSecret;
use zt_edge::{
    AuditLog, CloseReason, Db, EdgeState, FlowProtocol, FlowRecord, RedbStore, Route, StateOptions,
    Tunnel, VirtualNetwork,
};

const TAG: &str = "0123456789abcdef0123456789abcdef";
const RECORDS: u32 = 1000;

fn net(i: u32) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (i << 8)), 24).unwrap())
}

fn store(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::new(Arc::new(
        RedbStore::open(&tmp.path().join("b.redb")).unwrap(),
    ));
    let mut vnet = VirtualNetwork::new("default");
    vnet.is_default = true;
    let secret = TunnelSecret::generate();
    db.update(|t| {
        t.put(&vnet)?;
        for i in 0..RECORDS {
            let tunnel = Tunnel::new(format!("tunnel-{i}"), TAG, &secret);
            t.put(&tunnel)?;
            t.put(&Route::new(net(i), vnet.id, tunnel.id))?;
        }
        Ok::<_, zt_edge::StoreError>(())
    })
    .unwrap();

    let mut g = c.benchmark_group("edge_store");
    g.measurement_time(Duration::from_secs(4));
    let mut n = RECORDS;
    g.bench_function("commit_tunnel_and_route", |b| {
        b.iter(|| {
            n += 1;
            let tunnel = Tunnel::new(format!("tunnel-{n}"), TAG, &secret);
            db.update(|t| {
                t.put(&tunnel)?;
                t.put(&Route::new(net(n % 65_536), vnet.id, tunnel.id))
            })
            .unwrap()
        })
    });
    // Baseline: the same number of bytes a commit writes at least (two JSON records),
    // written and fsynced to a file.
    let sample = {
        let tunnel = Tunnel::new("tunnel-x", TAG, &secret);
        let mut bytes = serde_json::to_vec(&tunnel).unwrap();
        bytes.extend(serde_json::to_vec(&Route::new(net(1), vnet.id, tunnel.id)).unwrap());
        bytes
    };
    let mut file = File::create(tmp.path().join("baseline")).unwrap();
    g.bench_function("baseline_write_fsync", |b| {
        b.iter(|| {
            file.write_all(&sample).unwrap();
            file.sync_data().unwrap();
        })
    });
    g.bench_function("tunnel_by_name_of_1000", |b| {
        let r = db.read().unwrap();
        b.iter(|| r.tunnel_by_name(black_box("tunnel-500")).unwrap().unwrap())
    });
    g.bench_function("list_routes_1000", |b| {
        let r = db.read().unwrap();
        b.iter(|| r.list::<Route>().unwrap().len())
    });
    // Baseline: decoding the same 1000 routes from JSON already in memory, which is the
    // least any store of JSON records pays to hand them out.
    let encoded: Vec<Vec<u8>> = db
        .read()
        .unwrap()
        .list::<Route>()
        .unwrap()
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap())
        .collect();
    g.bench_function("baseline_decode_1000_routes", |b| {
        b.iter(|| {
            for e in &encoded {
                black_box(serde_json::from_slice::<Route>(e).unwrap());
            }
        })
    });
    g.finish();
}

fn audit(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path().join("audit.jsonl")).unwrap();
    let mut record = FlowRecord::new(
        SocketAddr::from(([192, 0, 2, 10], 51_000)),
        SocketAddr::from(([198, 51, 100, 101], 443)),
        FlowProtocol::Tcp,
        CloseReason::Completed,
    );
    record.identity_email = Some("ada@example.com".into());
    record.rule_name = Some("allow k8s api".into());
    record.tunnel_id = Some(uuid::Uuid::new_v4());
    record.connector_id = Some(uuid::Uuid::new_v4());
    record.bytes_up = 12_345;
    record.bytes_down = 6_789_012;
    let mut g = c.benchmark_group("edge_audit");
    g.bench_function("record_flow", |b| {
        b.iter(|| log.record_flow(black_box(&record)).unwrap())
    });
    g.bench_function("baseline_serialize_only", |b| {
        b.iter(|| serde_json::to_vec(black_box(&record)).unwrap().len())
    });
    g.finish();
}

fn state_dir(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge");
    drop(EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap());
    let mut g = c.benchmark_group("edge_state_dir");
    g.sample_size(20);
    g.bench_function("open_existing", |b| {
        b.iter(|| EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap())
    });
    let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
    g.bench_function("rotate_server_cert", |b| {
        b.iter(|| state.rotate_server_cert().unwrap())
    });
    g.finish();
}

criterion_group!(benches, store, audit, state_dir);
criterion_main!(benches);
