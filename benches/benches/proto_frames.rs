//! Frame encode and decode cost per frame (zt-proto's I/O-free core).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use uuid::Uuid;
use zt_creds::AuthKey;
use zt_proto::*;

fn register() -> ControlFrame {
    let mut r = Register {
        protocol_version: PROTOCOL_VERSION,
        claim: Claim::Connector(ConnectorClaim {
            tunnel_id: Uuid::from_u128(1),
            account_tag: "5ab4e9dfbd435d24068829fda0077963".into(),
            connector_id: Uuid::from_u128(2),
            conn_index: 1,
        }),
        software_version: "zt 0.1.0".into(),
        features: vec!["half-close".into()],
        proof: zt_proto::Proof::EMPTY,
    };
    sign_register(
        &mut r,
        &zt_proto::ProofKey::Shared(AuthKey::from_bytes([1; 32])),
        &[2; 32],
    )
    .unwrap();
    ControlFrame::Register(r)
}

fn header() -> FlowHeader {
    FlowHeader {
        flow_id: 12_345,
        protocol: Protocol::Tcp,
        dest: "198.51.100.101:443".parse().unwrap(),
        metadata: vec![("trace".into(), "4bf92f3577b34da6".into())],
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("proto_frames");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));

    let frames = [
        ("register", register()),
        ("ping", ControlFrame::Ping(7)),
        (
            "route_push_100",
            ControlFrame::RoutePush(RoutePush {
                generation: 1,
                vnet: "default".into(),
                routes: (0..100u32)
                    .map(|i| {
                        ipnet::IpNet::new(
                            std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)).into(),
                            24,
                        )
                        .unwrap()
                    })
                    .collect(),
            }),
        ),
    ];
    let mut out = BytesMut::with_capacity(4096);
    for (name, f) in &frames {
        g.bench_function(format!("encode_{name}"), |b| {
            b.iter(|| {
                out.clear();
                black_box(f).encode(&mut out).unwrap();
            })
        });
        let mut wire = BytesMut::new();
        f.encode(&mut wire).unwrap();
        let wire = wire.freeze();
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| {
                let mut buf = black_box(wire.clone());
                ControlFrame::decode(&mut buf).unwrap().unwrap()
            })
        });
    }

    let h = header();
    g.bench_function("encode_flow_header", |b| {
        b.iter(|| {
            out.clear();
            black_box(&h).encode(&mut out).unwrap();
        })
    });
    let mut wire = BytesMut::new();
    h.encode(&mut wire).unwrap();
    let wire = wire.freeze();
    g.bench_function("decode_flow_header", |b| {
        b.iter(|| {
            FlowHeader::decode(&mut black_box(wire.clone()))
                .unwrap()
                .unwrap()
        })
    });

    let s = FlowStatus::ok();
    g.bench_function("encode_flow_status", |b| {
        b.iter(|| {
            out.clear();
            black_box(&s).encode(&mut out).unwrap();
        })
    });
    g.bench_function("decode_flow_status", |b| {
        b.iter(|| {
            FlowStatus::decode(&mut black_box(Bytes::from_static(&[0, 0, 0, 0])))
                .unwrap()
                .unwrap()
        })
    });

    let d = Datagram {
        flow_id: 9,
        payload: Bytes::from(vec![0xab; 1200]),
    };
    let limits = Limits::default();
    g.bench_function("encode_datagram_1200", |b| {
        b.iter(|| {
            out.clear();
            black_box(&d).encode(&mut out, &limits).unwrap();
        })
    });
    let mut wire = BytesMut::new();
    d.encode(&mut wire, &limits).unwrap();
    let wire = wire.freeze();
    g.bench_function("decode_datagram_1200", |b| {
        b.iter(|| Datagram::decode(black_box(wire.clone()), &limits).unwrap())
    });

    let key = zt_proto::VerifyKey::Shared(AuthKey::from_bytes([1; 32]));
    let ControlFrame::Register(r) = register() else {
        unreachable!()
    };
    g.bench_function("verify_register_proof", |b| {
        b.iter(|| assert!(verify_proof(&key, black_box(&[2; 32]), black_box(&r))))
    });
    // The Ed25519 proof of a device enrolled by `zt login`, beside the HMAC one above.
    let device = zt_creds::DeviceKey::generate();
    let mut signed = r.clone();
    sign_register(
        &mut signed,
        &zt_proto::ProofKey::Device(device.clone()),
        &[2; 32],
    )
    .unwrap();
    let public = zt_proto::VerifyKey::Device(device.public_key());
    g.bench_function("verify_register_signature", |b| {
        b.iter(|| {
            assert!(verify_proof(
                &public,
                black_box(&[2; 32]),
                black_box(&signed)
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
