//! One flow's bulk throughput over one QUIC hop on loopback, against a direct TCP copy
//! measured in the same run; the same through two hops spliced at an edge; and flow
//! open+close rate.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use uuid::Uuid;
use zt_creds::{AuthKey, TunnelSecret};
use zt_proto::VerifyKey;
use zt_proto::*;

const BULK: usize = 16 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
const NAME: &str = "zt-edge.bench";

struct Keys(std::collections::HashMap<Uuid, AuthKey>);

impl Authenticator for Keys {
    fn verify_key(&self, claim: &Claim) -> Option<VerifyKey> {
        match claim {
            Claim::Client(c) => self.0.get(&c.device_id).cloned().map(VerifyKey::Shared),
            Claim::Connector(c) => self.0.get(&c.tunnel_id).cloned().map(VerifyKey::Shared),
            _ => None,
        }
    }
}

struct Setup {
    client: ClientConnection,
    _client_ep: PeerEndpoint,
    _connector_ep: PeerEndpoint,
    _edge: Arc<EdgeListener>,
}

/// An edge whose client flows either end at the edge (a sink that acks) or, for
/// destinations on port 2, are spliced to a connector whose flows are the sink.
async fn setup() -> Setup {
    let server = zt_testkit::pki::server(&[NAME]);
    let identity = server.identity();
    let device = (Uuid::new_v4(), TunnelSecret::generate());
    let tunnel = (Uuid::new_v4(), TunnelSecret::generate());
    let keys = Arc::new(Keys(
        [
            (device.0, device.1.derive_auth_key()),
            (tunnel.0, tunnel.1.derive_auth_key()),
        ]
        .into_iter()
        .collect(),
    ));
    let edge = Arc::new(
        EdgeListener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &identity,
            "bench",
            TransportSettings::default(),
        )
        .unwrap(),
    );
    let addr = edge.local_addr().unwrap();
    let (link_tx, mut link_rx) = tokio::sync::mpsc::unbounded_channel();
    {
        let edge = edge.clone();
        tokio::spawn(async move {
            while let Some(inc) = edge.accept().await {
                let keys = keys.clone();
                let tx = link_tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(inc.register(&*keys).await.unwrap());
                });
            }
        });
    }
    let trust = server.trust();
    let connector_ep = PeerEndpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        &trust,
        TransportSettings::default(),
    )
    .unwrap();
    let connector = connector_ep
        .connect_connector(
            addr,
            NAME,
            ConnectorRegistration {
                claim: ConnectorClaim {
                    tunnel_id: tunnel.0,
                    account_tag: "a".into(),
                    connector_id: Uuid::new_v4(),
                    conn_index: 0,
                },
                software_version: "bench".into(),
                features: vec![],
            },
            &tunnel.1.derive_auth_key(),
        )
        .await
        .unwrap();
    let Some(EdgePeer::Connector(connector_link)) = link_rx.recv().await else {
        panic!()
    };
    let client_ep = PeerEndpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        &trust,
        TransportSettings::default(),
    )
    .unwrap();
    let client = client_ep
        .connect_client(
            addr,
            NAME,
            ClientRegistration {
                claim: ClientClaim {
                    device_id: device.0,
                    vnet: String::new(),
                },
                software_version: "bench".into(),
                features: vec![],
            },
            &zt_proto::ProofKey::Shared(device.1.derive_auth_key()),
        )
        .await
        .unwrap();
    let Some(EdgePeer::Client(client_link)) = link_rx.recv().await else {
        panic!()
    };
    // Connector: every flow is a sink.
    tokio::spawn(async move {
        while let Some((_, r)) = connector.accept_flow().await {
            tokio::spawn(async move { sink(r.accept().await.unwrap()).await });
        }
    });
    // Edge: port 2 flows are spliced to the connector, others end here in a sink.
    let connector_link = Arc::new(connector_link);
    tokio::spawn(async move {
        while let Some((h, r)) = client_link.accept_flow().await {
            let connector_link = connector_link.clone();
            tokio::spawn(async move {
                if h.dest.port() == 2 {
                    let up = connector_link
                        .open_flow(h.dest, h.protocol, h.metadata)
                        .await
                        .unwrap();
                    let down = r.accept().await.unwrap();
                    splice(down, up).await;
                } else {
                    sink(r.accept().await.unwrap()).await;
                }
            });
        }
    });
    Setup {
        client,
        _client_ep: client_ep,
        _connector_ep: connector_ep,
        _edge: edge,
    }
}

/// Reads a flow to its end, then answers one byte and finishes.
async fn sink(flow: FlowStream) {
    let (mut send, mut recv) = flow.into_split();
    while let Ok(Some(_)) = recv.read_chunk().await {}
    let _ = send.write_all(b"k").await;
    let _ = send.finish();
    let _ = send.stopped().await;
}

async fn quic_bulk(client: &ClientConnection, dest: SocketAddr, data: &bytes::Bytes) -> Duration {
    let start = Instant::now();
    let flow = client.open_flow(dest, Protocol::Tcp, vec![]).await.unwrap();
    let (mut send, mut recv) = flow.into_split();
    for chunk in data.chunks(CHUNK) {
        send.write_chunk(data.slice_ref(chunk)).await.unwrap();
    }
    send.finish().unwrap();
    let ack = recv.read_chunk().await.unwrap().unwrap();
    assert_eq!(&ack[..], b"k");
    start.elapsed()
}

async fn tcp_bulk(addr: SocketAddr, data: &[u8]) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for chunk in data.chunks(CHUNK) {
        s.write_all(chunk).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await.unwrap();
    start.elapsed()
}

async fn tcp_sink_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = s.write_all(b"k").await;
            });
        }
    });
    addr
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let setup = rt.block_on(setup());
    let tcp = rt.block_on(tcp_sink_server());
    let data = bytes::Bytes::from(vec![0x5a; BULK]);

    let mut g = c.benchmark_group("proto_bulk_one_flow");
    g.throughput(Throughput::Bytes(BULK as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("tcp_direct", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += tcp_bulk(tcp, &data).await;
                }
                total
            })
        })
    });
    g.bench_function("quic_one_hop", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += quic_bulk(&setup.client, "10.0.0.1:1".parse().unwrap(), &data).await;
                }
                total
            })
        })
    });
    g.bench_function("quic_two_hops_spliced", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += quic_bulk(&setup.client, "10.0.0.1:2".parse().unwrap(), &data).await;
                }
                total
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("proto_flow_open_close");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    let empty = bytes::Bytes::new();
    g.bench_function("empty_flow_one_hop", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += quic_bulk(&setup.client, "10.0.0.1:1".parse().unwrap(), &empty).await;
                }
                total
            })
        })
    });
    g.bench_function("tcp_connect_close", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += tcp_bulk(tcp, &[]).await;
                }
                total
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
