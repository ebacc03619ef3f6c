//! The live edge against the bytes cloudflared 2023.7.3 actually sent
//! (tests/data/cloudflared/README.md says how they were recorded): over real QUIC with ALPN
//! `argotunnel` and server name `quic.cftunnel.com`, the recorded control stream is written
//! verbatim, message by message in the order cloudflared waits for answers, and the edge's
//! answers must decode to the reference edge's recorded ones; a flow from a zt client then
//! reaches this connection, its `ConnectRequest` must match the recorded one, and the recorded
//! `ConnectResponse` and payload written back must reach the client exactly.
//!
//! No capnp-rpc here: what goes on the wire is the recording, not an implementation of it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;
use zt_creds::TunnelSecret;
use zt_edge::cloudflared::{
    decode_connect_request, decode_connect_response, decode_control, ConnectResponse,
    ConnectionType, ControlMessage, RegistrationReply, ReturnBody,
};
use zt_edge::{ConnectorKind, Device, Edge, EdgeConfig, EdgeHandle, Route, Tunnel, User};
use zt_proto::{ClientConnection, FlowStatusCode, OpenError, PeerEndpoint, Protocol};
use zt_testkit::cloudflared::{argotunnel_endpoint, SERVER_NAME};
use zt_testkit::loopback::{
    allow_all, audit_lines, connect_client, endpoint as zt_endpoint, test_config, update,
};
use zt_testkit::{wait_for, WAIT};

const CONTROL_FROM_CLOUDFLARED: &[u8] =
    include_bytes!("../data/cloudflared/cloudflared-2023.7.3-control.from-cloudflared.bin");
const CONTROL_FROM_EDGE: &[u8] =
    include_bytes!("../data/cloudflared/cloudflared-2023.7.3-control.from-edge.bin");
const REGISTER: &[u8] =
    include_bytes!("../data/cloudflared/cloudflared-2023.7.3-register-stream0.bin");
const DATA_FROM_EDGE: &[u8] =
    include_bytes!("../data/cloudflared/cloudflared-2023.7.3-data.from-edge.bin");
const DATA_FROM_CLOUDFLARED: &[u8] =
    include_bytes!("../data/cloudflared/cloudflared-2023.7.3-data.from-cloudflared.bin");

/// The credentials the recording was made with (dummy values, README.md).
const ACCOUNT_TAG: &str = "0123456789abcdef0123456789abcdef";
const TUNNEL_ID: &str = "8e343b13-a087-48ea-825f-9783931ff2a5";
/// The reference edge's location name; this edge is given the same name.
const LOCATION: &str = "zt-test";

fn recorded_secret() -> TunnelSecret {
    TunnelSecret::from_bytes(&(0u8..32).collect::<Vec<u8>>()).unwrap()
}

fn config(dir: &Path) -> EdgeConfig {
    let mut c = test_config(dir);
    // The recorded tunnel is imported through the admin API, as an operator would.
    c.admin = Some("127.0.0.1:0".parse().unwrap());
    c.edge_name = LOCATION.into();
    c.shutdown_grace = Duration::from_secs(1);
    // Refuse a flow with no connector at once, so the drain check sees the refusal.
    c.connector_wait = Duration::from_millis(100);
    c
}

struct Setup {
    tunnel_id: Uuid,
    device: Device,
    device_secret: TunnelSecret,
}

/// The credentials file the recording was made with (README.md), as cloudflared writes it.
fn recorded_credentials() -> serde_json::Value {
    serde_json::json!({
        "AccountTag": ACCOUNT_TAG,
        "TunnelSecret": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "TunnelID": TUNNEL_ID,
        "TunnelName": "k8s_zero_trust_tunnel",
    })
}

/// One admin API call over loopback HTTP/1.1 with the edge's admin token.
async fn admin(
    edge: &EdgeHandle,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let addr = edge.admin_addr().expect("admin API enabled");
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        body.len(),
        edge.state().admin_token().expose()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("admin API did not answer")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// The recorded tunnel, imported from its credentials file and opted in to cloudflared (so it
/// keeps the recording's id, account tag and secret), a device, a route for loopback
/// through the tunnel and a rule allowing it.
async fn setup(edge: &EdgeHandle) -> Setup {
    let (status, created) = admin(
        edge,
        "POST",
        "/v1/tunnels",
        serde_json::json!({
            "name": "k8s_zero_trust_tunnel",
            "allow_cloudflared": true,
            "credentials": recorded_credentials(),
        }),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["tunnel"]["id"], TUNNEL_ID);
    assert_eq!(created["tunnel"]["account_tag"], ACCOUNT_TAG);
    assert_eq!(created["tunnel"]["accepts_cloudflared"], true);
    let tunnel: Tunnel = edge
        .state()
        .db()
        .read()
        .unwrap()
        .get::<Tunnel>(TUNNEL_ID.parse().unwrap())
        .unwrap()
        .expect("the imported tunnel is stored");
    assert!(tunnel
        .cloudflared_secret_sha256
        .as_ref()
        .unwrap()
        .matches(recorded_secret().expose_bytes()));
    let device_secret = TunnelSecret::generate();
    let user = User::new("replay@example.com", vec![]);
    let device = Device::new(user.id, "laptop", &device_secret);
    let (t, d) = (tunnel.clone(), device.clone());
    update(edge, move |txn| {
        let vnet = txn.default_vnet().unwrap().unwrap().id;
        txn.put(&user).unwrap();
        txn.put(&d).unwrap();
        txn.put(&Route::new("127.0.0.0/8".parse().unwrap(), vnet, t.id))
            .unwrap();
        txn.put(&allow_all()).unwrap();
    })
    .await;
    Setup {
        tunnel_id: tunnel.id,
        device,
        device_secret,
    }
}

/// A QUIC client as cloudflared 2023.7.3 sets one up: ALPN `argotunnel`, server name
/// `quic.cftunnel.com`, the edge CA trusted as `--cacert` does, no client certificate, P-256
/// as the only key-exchange group (its TLS settings pin it unless post-quantum is on), 5 s
/// idle timeout with 1 s keep-alives.
async fn cloudflared_quic(edge: &EdgeHandle) -> (quinn::Endpoint, quinn::Connection) {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::SECP256R1];
    let ep = argotunnel_endpoint(edge.state().ca_cert_der(), provider);
    let conn = tokio::time::timeout(WAIT, ep.connect(edge.local_addr(), SERVER_NAME).unwrap())
        .await
        .expect("QUIC handshake with ALPN argotunnel timed out")
        .unwrap();
    assert_eq!(
        conn.handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol
            .as_deref(),
        Some(&b"argotunnel"[..])
    );
    (ep, conn)
}

/// A recorded control stream cut at its Cap'n Proto frame boundaries.
fn frames(mut bytes: &[u8]) -> Vec<(&[u8], ControlMessage)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (msg, used) = decode_control(bytes)
            .unwrap()
            .expect("recording ends inside a frame");
        out.push((&bytes[..used], msg));
        bytes = &bytes[used..];
    }
    out
}

/// The recorded messages in the batches cloudflared writes them: everything up to and
/// including a call, then (after that call's answer) the next batch. The bootstrap is not
/// awaited (the first call is pipelined on its promised answer, as the registration-only
/// recording shows: bootstrap and call were written before any reply). Each batch is its
/// bytes and the question id of its call, if it has one.
fn batches(recording: &[u8]) -> Vec<(Vec<u8>, Option<u32>)> {
    let mut out = Vec::new();
    let mut bytes = Vec::new();
    for (raw, msg) in frames(recording) {
        bytes.extend_from_slice(raw);
        if let ControlMessage::Call { question_id, .. } = msg {
            out.push((std::mem::take(&mut bytes), Some(question_id)));
        }
    }
    if !bytes.is_empty() {
        out.push((bytes, None));
    }
    out
}

/// What the edge wrote on the control stream: the messages, and their bytes.
#[derive(Default)]
struct Answers {
    buf: Vec<u8>,
    raw: Vec<u8>,
    got: Vec<ControlMessage>,
}

/// Reads the edge's side of the control stream until it has answered `question`.
async fn read_until_answer(recv: &mut quinn::RecvStream, answers: &mut Answers, question: u32) {
    let Answers { buf, raw, got } = answers;
    let deadline = Instant::now() + WAIT;
    loop {
        while let Some((msg, used)) = decode_control(buf).unwrap() {
            raw.extend(buf.drain(..used));
            let done =
                matches!(msg, ControlMessage::Return { answer_id, .. } if answer_id == question);
            got.push(msg);
            if done {
                return;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, recv.read_chunk(64 * 1024, true))
            .await
            .unwrap_or_else(|_| panic!("no answer to question {question} within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("control stream failed before answer {question}: {e}"))
            .unwrap_or_else(|| panic!("control stream ended before answer {question}"));
        buf.extend_from_slice(&chunk.bytes);
    }
}

/// The (answer id, body) of every `Return`, in order.
fn returns(msgs: &[ControlMessage]) -> Vec<(u32, ReturnBody)> {
    msgs.iter()
        .filter_map(|m| match m {
            ControlMessage::Return { answer_id, body } => Some((*answer_id, body.clone())),
            _ => None,
        })
        .collect()
}

async fn client(edge: &EdgeHandle, ep: &PeerEndpoint, s: &Setup) -> ClientConnection {
    connect_client(edge, ep, s.device.id, &s.device_secret)
        .await
        .unwrap()
}

/// Reads the next chunk of a stream the edge opened into `buf`; panics naming `what` when
/// none comes within [`WAIT`] or the stream ends first.
async fn read_more(recv: &mut quinn::RecvStream, buf: &mut Vec<u8>, what: &str) {
    let chunk = tokio::time::timeout(WAIT, recv.read_chunk(4096, true))
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .unwrap_or_else(|| panic!("{what}: the stream ended first"));
    buf.extend_from_slice(&chunk.bytes);
}

/// Reads a whole stream the edge opened, with a deadline.
async fn read_all(recv: &mut quinn::RecvStream, what: &str) -> Vec<u8> {
    tokio::time::timeout(WAIT, recv.read_to_end(64 * 1024))
        .await
        .unwrap_or_else(|_| panic!("{what}: no end within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[tokio::test]
async fn the_recorded_control_stream_and_data_stream_replay_against_the_live_edge() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(config(dir.path())).await.unwrap();
    let s = setup(&edge).await;

    let t = Instant::now();
    let (_qep, conn) = cloudflared_quic(&edge).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let batches = batches(CONTROL_FROM_CLOUDFLARED);
    // [Bootstrap, registerConnection], [Finish, Finish, updateLocalConfiguration],
    // [Finish, unregisterConnection]; cloudflared wrote nothing after the last call.
    assert_eq!(
        batches.iter().filter(|(_, q)| q.is_some()).count(),
        3,
        "three calls in the recording"
    );
    let mut answers = Answers::default();

    // 1. Bootstrap + registerConnection.
    let (bytes, question) = &batches[0];
    send.write_all(bytes).await.unwrap();
    read_until_answer(&mut recv, &mut answers, question.unwrap()).await;
    println!(
        "MEASURED replayed registration (handshake + answer): {:?}",
        t.elapsed()
    );
    let uuid = match returns(&answers.got).last().unwrap() {
        (_, ReturnBody::Registration(RegistrationReply::Connected { uuid, .. })) => *uuid,
        other => panic!("registration refused: {other:?}"),
    };
    let live = edge.live_view().tunnel_connections(s.tunnel_id);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].connection_id, uuid);
    assert_eq!(live[0].kind, ConnectorKind::Cloudflared);
    assert_eq!(live[0].version, "cloudflared DEV");
    assert_eq!(live[0].conn_index, 0);
    assert!(!live[0].draining);

    // 2. updateLocalConfiguration (cloudflared sends it once registered on index 0).
    let (bytes, question) = &batches[1];
    send.write_all(bytes).await.unwrap();
    read_until_answer(&mut recv, &mut answers, question.unwrap()).await;

    // 3. A flow from a zt client reaches this connection: the edge opens a stream on it.
    let ep = zt_endpoint(&edge);
    let client = client(&edge, &ep, &s).await;
    // Nothing listens there: the only way bytes come back is through the stream below.
    let dest: SocketAddr = "127.0.0.1:19000".parse().unwrap();
    let opening = tokio::spawn(async move {
        let mut flow = client.open_flow(dest, Protocol::Tcp, vec![]).await.unwrap();
        let t = Instant::now();
        flow.write_all(b"hello through the tunnel\n").await.unwrap();
        let mut echo = [0u8; 25];
        tokio::time::timeout(WAIT, flow.read_exact(&mut echo))
            .await
            .expect("no echo through the replayed stream")
            .unwrap();
        // The edge's write side ends here, as in the recording.
        flow.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, flow.read_to_end(&mut rest))
            .await
            .expect("flow did not end after the connector's FIN")
            .unwrap();
        println!("MEASURED replayed flow round trip: {:?}", t.elapsed());
        (echo, rest, client)
    });
    let (mut fsend, mut frecv) = tokio::time::timeout(WAIT, conn.accept_bi())
        .await
        .expect("the edge opened no flow stream")
        .unwrap();
    // The preamble and ConnectRequest, read until they decode.
    let mut head = Vec::new();
    let (request, used) = loop {
        if let Some(done) = decode_connect_request(&head).unwrap() {
            break done;
        }
        read_more(&mut frecv, &mut head, "the flow's ConnectRequest").await;
    };
    let (recorded, recorded_used) = decode_connect_request(DATA_FROM_EDGE).unwrap().unwrap();
    assert_eq!(head[..8], DATA_FROM_EDGE[..8], "preamble");
    assert_eq!(request.dest, dest.to_string());
    assert_eq!(request.connection_type, recorded.connection_type);
    assert_eq!(request.connection_type, ConnectionType::Tcp);
    let keys = |r: &zt_edge::cloudflared::ConnectRequest| -> BTreeSet<String> {
        r.metadata.iter().map(|(k, _)| k.clone()).collect()
    };
    assert_eq!(keys(&request), keys(&recorded));
    let flow_id = |r: &zt_edge::cloudflared::ConnectRequest| -> String {
        r.metadata
            .iter()
            .find(|(k, _)| k == "FlowID")
            .map(|(_, v)| v.clone())
            .expect("a FlowID")
    };
    let (ours_id, recorded_id) = (flow_id(&request), flow_id(&recorded));
    ours_id
        .parse::<Uuid>()
        .unwrap_or_else(|_| panic!("FlowID {ours_id:?} is not a UUID, as the recorded one is"));
    // The destination is the recorded one, so the header is byte for byte the recorded
    // header but for the FlowID's text (a UUID, the same length).
    let mut expected = DATA_FROM_EDGE[..recorded_used].to_vec();
    let at = expected
        .windows(recorded_id.len())
        .position(|w| w == recorded_id.as_bytes())
        .expect("the recorded FlowID");
    expected[at..at + recorded_id.len()].copy_from_slice(ours_id.as_bytes());
    assert_eq!(
        head[..used],
        expected[..],
        "the edge's flow header differs from the recorded one"
    );
    // The recorded answer: preamble + empty ConnectResponse, then the origin's bytes.
    let (response, response_len) = decode_connect_response(DATA_FROM_CLOUDFLARED)
        .unwrap()
        .unwrap();
    assert_eq!(response, ConnectResponse::default());
    fsend
        .write_all(&DATA_FROM_CLOUDFLARED[..response_len])
        .await
        .unwrap();
    // What the edge relays after its request: exactly the recorded bytes.
    let want = &DATA_FROM_EDGE[recorded_used..];
    let mut payload = head[used..].to_vec();
    while payload.len() < want.len() {
        read_more(&mut frecv, &mut payload, "the client's bytes, relayed").await;
    }
    assert_eq!(payload, want);
    // The echo, as recorded; then the edge's FIN (the client finished) and nothing after
    // it, as in the recording; then cloudflared ends the flow.
    fsend
        .write_all(&DATA_FROM_CLOUDFLARED[response_len..])
        .await
        .unwrap();
    let after = read_all(&mut frecv, "the edge's side of the flow stream").await;
    assert!(
        after.is_empty(),
        "bytes after the recorded payload: {after:?}"
    );
    fsend.finish().unwrap();
    let (echo, rest, client) = opening.await.unwrap();
    assert_eq!(&echo[..], &DATA_FROM_CLOUDFLARED[response_len..]);
    assert!(
        rest.is_empty(),
        "bytes after the recorded payload: {rest:?}"
    );
    // The flow's audit line: the recorded payload each way, ended as cloudflared ends flows.
    wait_for("a flow audit line", || {
        !audit_lines(&edge, "flow").is_empty()
    })
    .await;
    let flow = audit_lines(&edge, "flow").remove(0);
    assert_eq!(flow["connector_kind"], "cloudflared", "{flow}");
    assert_eq!(flow["connector_version"], "cloudflared DEV", "{flow}");
    assert_eq!(flow["half_close"], "not_supported_by_cloudflared", "{flow}");
    assert_eq!(flow["bytes_up"], 25, "{flow}");
    assert_eq!(flow["bytes_down"], 25, "{flow}");

    // 4. unregisterConnection drains the connection.
    let (bytes, question) = &batches[2];
    send.write_all(bytes).await.unwrap();
    read_until_answer(&mut recv, &mut answers, question.unwrap()).await;
    let live = edge.live_view().tunnel_connections(s.tunnel_id);
    assert_eq!(live.len(), 1);
    assert!(live[0].draining, "unregisterConnection did not drain");
    match client.open_flow(dest, Protocol::Tcp, vec![]).await {
        Err(OpenError::Refused(st)) => assert_eq!(st.code, FlowStatusCode::NoConnector, "{st}"),
        other => panic!("a draining cloudflared connection got a new flow: {other:?}"),
    }
    // The rest of the recording, if any, then cloudflared exits.
    for (bytes, question) in &batches[3..] {
        assert!(question.is_none());
        send.write_all(bytes).await.unwrap();
    }
    send.finish().unwrap();
    conn.close(0u32.into(), b"");

    // The edge's answers decode to the reference edge's, but for the connection uuid; like
    // the reference edge, it sends nothing but answers.
    assert!(
        answers
            .got
            .iter()
            .all(|m| matches!(m, ControlMessage::Return { .. })),
        "{:?}",
        answers.got
    );
    let ours = returns(&answers.got);
    let mut reference = returns(
        &frames(CONTROL_FROM_EDGE)
            .into_iter()
            .map(|(_, m)| m)
            .collect::<Vec<_>>(),
    );
    for (_, body) in &mut reference {
        if let ReturnBody::Registration(RegistrationReply::Connected { uuid: u, .. }) = body {
            assert_eq!(
                *u,
                "11111111-2222-3333-4444-555555555555"
                    .parse::<Uuid>()
                    .unwrap()
            );
            *u = uuid;
        }
    }
    assert_eq!(ours, reference);
    // Byte for byte, too: the reference edge's answers with this connection's uuid in place
    // of the recorded one.
    let recorded_uuid = Uuid::parse_str("11111111-2222-3333-4444-555555555555").unwrap();
    let at = CONTROL_FROM_EDGE
        .windows(16)
        .position(|w| w == recorded_uuid.as_bytes())
        .expect("the recorded connection uuid");
    let mut expected = CONTROL_FROM_EDGE.to_vec();
    expected[at..at + 16].copy_from_slice(uuid.as_bytes());
    assert_eq!(
        answers.raw, expected,
        "the edge's answers differ from the reference edge's"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn the_recorded_registration_with_a_wrong_secret_is_refused_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(config(dir.path())).await.unwrap();
    let s = setup(&edge).await;

    // The recorded registration with the same framing, only the 32 secret bytes changed.
    let secret: Vec<u8> = (0u8..32).collect();
    let at = REGISTER
        .windows(32)
        .position(|w| w == &secret[..])
        .expect("the recorded secret bytes");
    let mut bytes = REGISTER.to_vec();
    for b in &mut bytes[at..at + 32] {
        *b ^= 0xa5;
    }
    let batches = batches(&bytes);
    assert_eq!(batches.len(), 1, "bootstrap + registerConnection");
    let (bytes, question) = &batches[0];

    let (_qep, conn) = cloudflared_quic(&edge).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let mut answers = Answers::default();
    read_until_answer(&mut recv, &mut answers, question.unwrap()).await;
    match returns(&answers.got).last().unwrap() {
        (
            _,
            ReturnBody::Registration(RegistrationReply::Error {
                cause,
                should_retry,
                ..
            }),
        ) => {
            assert!(!should_retry, "cloudflared would retry a wrong secret");
            assert!(cause.contains("unauthorized"), "{cause}");
        }
        other => panic!("a wrong secret was not refused: {other:?}"),
    }
    // The bootstrap was answered as the reference edge answers it.
    assert_eq!(returns(&answers.got)[0].1, ReturnBody::Capability);
    assert!(edge.live_view().tunnel_connections(s.tunnel_id).is_empty());
    // The edge closes the connection after its answer.
    tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("the edge kept a refused connection open");
    edge.shutdown().await;
}
