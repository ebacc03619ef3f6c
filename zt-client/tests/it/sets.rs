//! A client's connection set against the real edge, over real QUIC through userspace UDP
//! relays: flows spread over the set and stay on their connection; a connection whose path
//! dies ends its flows with a clear error while new flows move to another member; and the
//! edge's device session counts the flow cap across all of the client's connections.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zt_client::*;
use zt_creds::DeviceCredentials;
use zt_testkit::impair::Impair;
use zt_testkit::loopback::{allow_all, Loopback};
use zt_testkit::origin::Origin;
use zt_testkit::stand_in::client_options;
use zt_testkit::{wait_for, within};

fn credentials(lb: &Loopback, edges: Vec<String>) -> DeviceCredentials {
    DeviceCredentials {
        device_id: lb.records.device.id,
        user_email: "alice@example.com".into(),
        auth: zt_creds::DeviceAuth::Secret(lb.records.device_secret.clone()),
        edge: edges,
        ca_fingerprint: lb.edge.state().ca_fingerprint().parse().unwrap(),
        default_vnet: Some(lb.records.vnet),
        identity_provider: None,
        service_token: None,
    }
}

/// Writes `msg` and reads it back from an echo origin.
async fn echo(stream: &mut ClientStream, msg: &[u8]) -> std::io::Result<()> {
    stream.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).await?;
    assert_eq!(back, msg, "the echo came back changed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_ends_its_flows_and_new_flows_move_to_another_member() {
    let lb = Loopback::start(|_| {}, &["127.0.0.0/8"], vec![allow_all()]).await;
    let origin = Origin::echo("127.0.0.1:0");
    let paths = [
        Impair::start("path-0", lb.edge.local_addr()),
        Impair::start("path-1", lb.edge.local_addr()),
    ];
    let mut options = client_options();
    options.connections = 2;
    options.edges = Some(paths.iter().map(|p| p.addr.to_string()).collect());
    // Short enough that the test sees the loss quickly; the keep-alives stay well inside.
    options.transport.idle_timeout = Duration::from_secs(2);
    options.transport.keep_alive_interval = Duration::from_millis(500);
    let client = within(
        "client connect",
        Client::connect(&credentials(&lb, vec![]), options),
    )
    .await
    .unwrap();
    wait_for("both connections registered", || {
        client.connections().len() == 2
    })
    .await;
    let edges: HashSet<String> = client
        .connections()
        .into_iter()
        .map(|m| m.placement.edge)
        .collect();
    assert_eq!(edges.len(), 2, "each slot dialled its own path: {edges:?}");

    // Two flows: the second goes to the idle member, so one rides each path.
    let mut a = within("dial a", client.dial(origin.addr)).await.unwrap();
    let mut b = within("dial b", client.dial(origin.addr)).await.unwrap();
    let load: Vec<usize> = client.connections().iter().map(|m| m.in_flight).collect();
    assert_eq!(load, vec![1, 1], "one flow on each connection");
    echo(&mut a, b"a before").await.unwrap();
    echo(&mut b, b"b before").await.unwrap();

    // The path of the first connection dies (the relay drops everything both ways).
    let first = client.connections()[0].placement.edge.clone();
    let dead = paths.iter().find(|p| p.addr.to_string() == first).unwrap();
    dead.blackhole(true);
    let lost_at = Instant::now();

    // The flow on the dead connection ends with a clear error, not a hang or a clean EOF.
    let (mut dead_flow, mut live_flow) = (a, b);
    let err = within("the dead flow fails", async {
        loop {
            match echo(&mut dead_flow, b"a after").await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => break e,
            }
        }
    })
    .await;
    eprintln!(
        "flow on the lost connection failed {:?} after the path died: {err}",
        lost_at.elapsed()
    );
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionAborted,
        "the lost connection's flow says so: {err}"
    );

    // The flow on the other connection never noticed.
    echo(&mut live_flow, b"b after").await.unwrap();

    // New flows go to the surviving member (or to the slot's replacement, which can only
    // have come up over the live path).
    for i in 0..4 {
        let mut s = within("dial after the loss", client.dial(origin.addr))
            .await
            .unwrap();
        echo(&mut s, format!("new flow {i}").as_bytes())
            .await
            .unwrap();
    }
    wait_for("the lost slot is replaced over the live path", || {
        client.connections().len() == 2
    })
    .await;
    eprintln!(
        "the slot was replaced {:?} after the path died",
        lost_at.elapsed()
    );
    for m in client.connections() {
        assert_ne!(m.placement.edge, first, "no member rides the dead path");
        assert_eq!(m.placement.transport, "quic");
    }
    client.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_cap_counts_flows_across_all_of_a_clients_connections() {
    let lb = Loopback::start(
        |c| c.max_flows_per_session = 3,
        &["127.0.0.0/8"],
        vec![allow_all()],
    )
    .await;
    let origin = Origin::echo("127.0.0.1:0");
    let mut options = client_options();
    options.connections = 2;
    let edge = lb.edge.local_addr().to_string();
    let client = within(
        "client connect",
        Client::connect(&credentials(&lb, vec![edge]), options),
    )
    .await
    .unwrap();
    wait_for("both connections registered", || {
        client.connections().len() == 2
    })
    .await;

    let mut open = Vec::new();
    for i in 0..3 {
        let mut s = within("dial", client.dial(origin.addr)).await.unwrap();
        echo(&mut s, format!("flow {i}").as_bytes()).await.unwrap();
        open.push(s);
    }
    let load: Vec<usize> = client.connections().iter().map(|m| m.in_flight).collect();
    assert_eq!(load.iter().sum::<usize>(), 3);
    assert!(
        load.iter().all(|&n| n > 0),
        "flows on both connections: {load:?}"
    );

    // Three flows over two connections fill the session's cap of three.
    match within("the fourth dial", client.dial(origin.addr)).await {
        Err(e @ DialError::TooManyFlows { .. }) => eprintln!("fourth flow: {e}"),
        other => panic!("the fourth flow should hit the session's cap: {other:?}"),
    }
    // A flow ending frees its place, whichever connection it was on.
    drop(open.pop());
    let mut again = None;
    wait_for_async_dial(&client, origin.addr, &mut again).await;
    echo(again.as_mut().unwrap(), b"after one ended")
        .await
        .unwrap();
    drop(open);
    drop(again);

    // The audit lines of flows on both connections name one session.
    wait_for("the audit lines", || lb.audit_lines("flow").len() >= 4).await;
    let sessions: HashSet<String> = lb
        .audit_lines("flow")
        .iter()
        .filter(|l| l["device_id"] == lb.records.device.id.to_string())
        .filter_map(|l| l["session_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        sessions.len(),
        1,
        "one session id across connections: {sessions:?}"
    );
    client.shutdown();
}

/// Dials until the edge has seen the freed place (the flow's end reaches it a moment after
/// the stream is dropped).
async fn wait_for_async_dial(
    client: &Client,
    dest: std::net::SocketAddr,
    out: &mut Option<ClientStream>,
) {
    let deadline = Instant::now() + zt_testkit::WAIT;
    loop {
        match client.dial(dest).await {
            Ok(s) => {
                *out = Some(s);
                return;
            }
            Err(DialError::TooManyFlows { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("a dial after a flow ended: {e}"),
        }
    }
}
