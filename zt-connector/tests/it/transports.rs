//! The connector over TLS on TCP against the real edge: `protocol: http2` (cloudflared's
//! word, an alias of `tcp`) registers every HA connection over TCP, `/ready` and the edge's
//! live view name the transport, and flows carry hash-checked bytes through it.

use std::net::SocketAddr;
use std::time::Instant;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zt_connector::{Connector, ConnectorConfig};
use zt_creds::TunnelCredentials;
use zt_proto::CloseCode;
use zt_proto::Protocol;
use zt_testkit::data::{random_bytes, sha256};
use zt_testkit::loopback::{allow_all, Loopback};
use zt_testkit::origin::Origin;
use zt_testkit::stand_in::test_settings;
use zt_testkit::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_means_tcp_and_flows_cross_a_connector_on_tcp() {
    let lb = Loopback::start(|_| {}, &["127.0.0.0/8"], vec![allow_all()]).await;
    let edge = &lb.edge;
    let rec = &lb.records;
    let at = SocketAddr::from(([127, 0, 0, 1], edge.local_addr().port()));
    let text = format!(
        "metrics: 127.0.0.1:0\nha-connections: 2\nedge: {at}\nedge-ca-fingerprint: {}\nprotocol: http2\n",
        edge.state().ca_fingerprint()
    );
    let config = ConnectorConfig::parse(&text, "test-config.yaml").unwrap();
    let creds = TunnelCredentials {
        account_tag: edge.state().account_tag().into(),
        tunnel_id: rec.tunnel.id,
        tunnel_name: None,
        secret: rec.secret.clone(),
        endpoint: None,
    };
    let started = Instant::now();
    let handle = Connector::start_with(config, creds, test_settings())
        .await
        .unwrap();
    let metrics = handle.metrics_addr().unwrap();
    wait_ready(metrics, |code, n| code == 200 && n == 2).await;
    println!("two HA connections over TCP in {:?}", started.elapsed());
    let (_, body) = http_get(metrics, "/ready").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["transports"]["tcp"], 2, "{body}");
    assert_eq!(v["transports"]["quic"], 0, "{body}");
    let (_, prom) = http_get(metrics, "/metrics").await;
    assert!(
        prom.contains("zt_connector_ha_connections_by_transport{transport=\"tcp\"} 2"),
        "{prom}"
    );
    assert!(handle
        .connections()
        .iter()
        .all(|m| m.placement.transport == "tcp"));
    // The loopback's own QUIC connector leaves, so every flow crosses the TCP ones.
    lb.connector.close(CloseCode::NO_ERROR, "test");
    let live = edge.live_view();
    wait_for(
        "only the two TCP connections in the edge's registry",
        || live.tunnel_connections(rec.tunnel.id).len() == 2,
    )
    .await;
    assert!(live
        .tunnel_connections(rec.tunnel.id)
        .iter()
        .all(|c| c.transport == "tcp"));

    // A client over QUIC; the edge opens each flow on a connector connection over TCP.
    let origin = Origin::echo("127.0.0.1:0");
    let client = &lb.client;
    for len in [1usize, 64 * 1024, 2 * 1024 * 1024] {
        let mut flow = client
            .open_flow(origin.addr, Protocol::Tcp, vec![])
            .await
            .unwrap();
        let data = random_bytes(len);
        let (mut r, mut w) = tokio::io::split(&mut flow);
        let send = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let recv = async {
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.unwrap();
            back
        };
        let ((), back) = tokio::join!(send, recv);
        assert_eq!(
            sha256(&back),
            sha256(&data),
            "{len} bytes came back changed"
        );
    }
    wait_for("the flows audited with their connector's transport", || {
        let flows = lb.audit_lines("flow");
        flows.len() >= 3 && flows.iter().all(|f| f["connector_transport"] == "tcp")
    })
    .await;
    handle.shutdown().await;
}
