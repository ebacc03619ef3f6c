//! Exhaustion, against the real `zt edge run` and `zt tunnel run` processes: flows beyond
//! the edge's per-session limit (`--max-flows-per-session`) and the connector's
//! `maxActiveFlows` are refused cleanly and the slots come back; an open/reset loop for
//! `ZT_OPEN_RESET_SECS` seconds (default 30) leaks no file descriptor and no memory; 1,000
//! flows that never finish their header (100 registered client sessions, 10 each) are cut
//! at the header timeout while a real client keeps working; an oversized header is refused
//! with a status and the session lives on. Edge and connector memory stay within bounds.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::abuse::*;
use crate::support::*;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zt_client::Client;
use zt_creds::{DeviceCredentials, PermissionMode};
use zt_proto::{
    FlowHeader, FlowStatus, FlowStatusCode, Protocol, ResetCode, DEFAULT_MAX_HEADER_LEN,
};

/// The connector must fit the seed's Deployment, whose memory limit is 100 MiB.
const CONNECTOR_RSS_BOUND_KIB: u64 = 100 * 1024;
/// The edge under these tests (a few hundred flows, 100 sessions): 256 MiB.
const EDGE_RSS_BOUND_KIB: u64 = 256 * 1024;

/// An origin that echoes until the client closes: a flow stays open as long as the test
/// holds it.
fn echo_origin(addr: &str) -> Origin {
    Origin::spawn(addr, |mut s| {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Opens a flow and proves it carries bytes; the stream stays open while held.
async fn open_held(client: &Client, dest: SocketAddr) -> Result<zt_client::ClientStream, String> {
    let mut s = client.dial(dest).await.map_err(|e| e.to_string())?;
    s.write_all(b"x").await.map_err(|e| e.to_string())?;
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await.map_err(|e| e.to_string())?;
    Ok(s)
}

fn connector_metric(c: &Connector, name: &str) -> f64 {
    let (_, page) = http_get(c.metrics, "/metrics").unwrap();
    metric(&page, name).unwrap_or_else(|| panic!("no {name} in {page}"))
}

#[test]
fn flows_beyond_the_session_and_connector_limits_are_refused_cleanly() {
    const SESSION_LIMIT: usize = 16;
    const CONNECTOR_LIMIT: usize = 24;
    let origin = echo_origin("127.0.0.2:0");
    let edge = Edge::start_with(&["--max-flows-per-session", &SESSION_LIMIT.to_string()]);
    let creds = edge.tunnel("private");
    edge.admin(&["route", "ip", "add", "127.0.0.0/29", "private"]);
    edge.rule("Allow", 10, "allow", "l4", "net.dst.ip in {127.0.0.0/29}");
    let connector = connector_with(
        &edge,
        &creds,
        "connector",
        2,
        &format!("  maxActiveFlows: {CONNECTOR_LIMIT}\n"),
    );
    connector.wait_ready(2);

    let rt = runtime(2);
    rt.block_on(async {
        let a = client_for(&edge, "a@example.com").await;
        let b = client_for(&edge, "b@example.com").await;
        // The edge's limit: session A may hold 16 flows; the 17th is refused.
        let mut held_a = Vec::new();
        for i in 0..SESSION_LIMIT {
            held_a.push(
                open_held(&a, origin.addr)
                    .await
                    .unwrap_or_else(|e| panic!("A flow {i}: {e}")),
            );
        }
        let e = open_held(&a, origin.addr).await.unwrap_err();
        assert!(e.contains("too many flows"), "A's flow 17: {e}");
        eprintln!(
            "MEASURED session limit: flow {} of one session refused with {e:?}",
            SESSION_LIMIT + 1
        );
        // The connector's limit: session B's 8 flows fill the connector's 24; B's 9th is
        // refused by the connector although B's session has room.
        let mut held_b = Vec::new();
        for i in 0..CONNECTOR_LIMIT - SESSION_LIMIT {
            held_b.push(
                open_held(&b, origin.addr)
                    .await
                    .unwrap_or_else(|e| panic!("B flow {i}: {e}")),
            );
        }
        let e = open_held(&b, origin.addr).await.unwrap_err();
        assert!(e.contains("too many flows"), "B's extra flow: {e}");
        assert_eq!(
            connector_metric(&connector, "zt_connector_active_flows"),
            CONNECTOR_LIMIT as f64
        );
        assert!(
            connector_metric(
                &connector,
                "zt_connector_dial_errors_total{kind=\"too_many_flows\"}"
            ) >= 1.0
        );
        eprintln!(
            "MEASURED connector limit: flow {} through the connector refused with {e:?}",
            CONNECTOR_LIMIT + 1
        );
        // The flows held all along still work.
        for s in held_a.iter_mut().chain(held_b.iter_mut()) {
            s.write_all(b"y").await.unwrap();
            let mut one = [0u8; 1];
            s.read_exact(&mut one).await.unwrap();
            assert_eq!(&one, b"y");
        }
        // Slots come back when flows end.
        for mut s in held_a.drain(..4) {
            s.shutdown().await.unwrap();
        }
        let again = eventually_async(|| open_held(&b, origin.addr)).await;
        drop(again);
        drop(held_a);
        drop(held_b);
        let fresh = eventually_async(|| open_held(&a, origin.addr)).await;
        drop(fresh);
        a.shutdown();
        b.shutdown();
    });
    // The refusals are audited as flows that ended in an error; nothing crashed.
    let (_, page) = http_get(edge.metrics, "/metrics").unwrap();
    eprintln!(
        "MEASURED limits: edge flows ended in error {:?}, connector refusals {}",
        metric(&page, "zt_edge_flows_total{outcome=\"error\"}"),
        connector_metric(
            &connector,
            "zt_connector_dial_errors_total{kind=\"too_many_flows\"}"
        )
    );
    eventually("the connector's flows all ended", || {
        (connector_metric(&connector, "zt_connector_active_flows") == 0.0).then_some(())
    });
}

#[test]
fn an_open_reset_loop_leaves_no_leak() {
    let secs: u64 = std::env::var("ZT_OPEN_RESET_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    // An origin that resets the connection when asked (it closes with unread data, which
    // makes the kernel send RST), and otherwise answers and closes.
    let origin = Origin::spawn("127.0.0.2:0", |mut s| {
        let mut buf = [0u8; 5];
        if s.read_exact(&mut buf).is_err() {
            return;
        }
        if &buf == b"reset" {
            // The rest of the request is still unread: closing now sends RST.
            std::thread::sleep(Duration::from_millis(5));
            return;
        }
        let _ = s.write_all(&buf);
    });
    let edge = Edge::start();
    let creds = edge.tunnel("private");
    edge.admin(&["route", "ip", "add", "127.0.0.0/29", "private"]);
    edge.rule("Allow", 10, "allow", "l4", "net.dst.ip in {127.0.0.0/29}");
    let connector = Connector::start(&edge, "private", &creds, "connector", 2);
    connector.wait_ready(2);
    let edge_pid = edge.proc.as_ref().unwrap().pid();
    let connector_pid = connector.proc.pid();

    let rt = runtime(2);
    let client = Arc::new(rt.block_on(client_for(&edge, "looper@example.com")));
    // Five ways a flow ends: the client resets it at once, in its request, in the answer;
    // the origin resets it; it completes.
    let run_loop = |for_: Duration| {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for t in 0..8usize {
            let (client, stop, count, dest) =
                (client.clone(), stop.clone(), count.clone(), origin.addr);
            tasks.push(rt.spawn(async move {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let Ok(mut s) = client.dial(dest).await else {
                        continue;
                    };
                    match i % 5 {
                        // The client resets the flow before sending anything,
                        0 => s.reset(ResetCode::CONNECTION_RESET),
                        // in the middle of its request,
                        1 => {
                            let _ = s.write_all(b"req").await;
                            s.reset(ResetCode::CONNECTION_RESET);
                        }
                        // or in the middle of the answer;
                        2 => {
                            let _ = s.write_all(b"hello").await;
                            let mut b = [0u8; 3];
                            let _ = s.read_exact(&mut b).await;
                            s.reset(ResetCode::CONNECTION_RESET);
                        }
                        // the origin resets it;
                        3 => {
                            let _ = s.write_all(b"reset me please").await;
                            let mut rest = Vec::new();
                            let _ = s.read_to_end(&mut rest).await;
                        }
                        // or it completes.
                        _ => {
                            let _ = s.write_all(b"hello").await;
                            let _ = s.shutdown().await;
                            let mut rest = Vec::new();
                            let _ = s.read_to_end(&mut rest).await;
                        }
                    }
                    drop(s);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        std::thread::sleep(for_);
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            rt.block_on(t).unwrap();
        }
        count.load(Ordering::Relaxed)
    };
    // Warm up (allocator pools, the connection's stream tables), then measure.
    run_loop(Duration::from_secs(2));
    std::thread::sleep(Duration::from_secs(2));
    let before = (
        fd_count(edge_pid),
        rss_kib(edge_pid),
        fd_count(connector_pid),
        rss_kib(connector_pid),
    );
    let started = Instant::now();
    let flows = run_loop(Duration::from_secs(secs));
    let took = started.elapsed();
    let during = (rss_kib(edge_pid), rss_kib(connector_pid));
    // Every flow has ended at the connector; give the edge's last resets a moment.
    eventually("the connector's flows all ended", || {
        (connector_metric(&connector, "zt_connector_active_flows") == 0.0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let after = (
        fd_count(edge_pid),
        rss_kib(edge_pid),
        fd_count(connector_pid),
        rss_kib(connector_pid),
    );
    // The tunnel still works.
    rt.block_on(async {
        let mut s = client.dial(origin.addr).await.unwrap();
        s.write_all(b"alive").await.unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"alive");
    });
    client.shutdown();
    let (_, page) = http_get(edge.metrics, "/metrics").unwrap();
    let outcome =
        |o: &str| metric(&page, &format!("zt_edge_flows_total{{outcome=\"{o}\"}}")).unwrap_or(0.0);
    eprintln!(
        "MEASURED open/reset loop: {flows} flows in {took:.1?} ({:.0} per second); edge outcomes: \
         completed {}, client_reset {}, origin_reset {}, error {}",
        flows as f64 / took.as_secs_f64(),
        outcome("completed"),
        outcome("client_reset"),
        outcome("origin_reset"),
        outcome("error"),
    );
    eprintln!(
        "MEASURED open/reset loop: edge fds {} -> {}, RSS {} -> {} KiB (during {}); \
         connector fds {} -> {}, RSS {} -> {} KiB (during {})",
        before.0,
        after.0,
        before.1,
        after.1,
        during.0,
        before.2,
        after.2,
        before.3,
        after.3,
        during.1
    );
    assert!(flows > 100, "only {flows} flows ran");
    assert!(
        after.0 <= before.0 + 4,
        "edge file descriptors {} -> {}",
        before.0,
        after.0
    );
    assert!(
        after.2 <= before.2 + 4,
        "connector file descriptors {} -> {}",
        before.2,
        after.2
    );
    assert!(
        during.1.max(after.3) <= CONNECTOR_RSS_BOUND_KIB,
        "connector RSS {} KiB",
        during.1.max(after.3)
    );
    assert!(
        during.0.max(after.1) <= EDGE_RSS_BOUND_KIB,
        "edge RSS {} KiB",
        during.0.max(after.1)
    );
}

#[test]
fn a_thousand_flows_that_never_finish_their_header_are_cut_at_the_header_timeout() {
    const SESSIONS: usize = 100;
    const FLOWS_EACH: usize = 10;
    let header_timeout = Duration::from_secs(2);
    let origin = Origin::hello("127.0.0.2:0");
    let edge = Edge::start_with(&["--header-timeout", "2s"]);
    let creds = edge.tunnel("private");
    edge.admin(&["route", "ip", "add", "127.0.0.0/29", "private"]);
    edge.rule("Allow", 10, "allow", "l4", "net.dst.ip in {127.0.0.0/29}");
    let connector = Connector::start(&edge, "private", &creds, "connector", 2);
    connector.wait_ready(2);
    let device_path = edge.user("slow@example.com", "dev");
    let device = DeviceCredentials::load(&device_path, PermissionMode::Default).unwrap();
    let edge_pid = edge.proc.as_ref().unwrap().pid();
    let rss_before = rss_kib(edge_pid);

    let rt = runtime(2);
    let (cut_after, rss_peak, good_flows) = rt.block_on(async {
        // 100 registered sessions of the device, each on its own raw QUIC connection.
        let ep = raw_endpoint(&edge, "127.0.0.1:0".parse().unwrap());
        let mut sessions = Vec::new();
        for _ in 0..SESSIONS {
            sessions.push(client_session(&ep, &edge, &device).await);
        }
        // On each, 10 flows that send the header's length and a few bytes, then nothing.
        let mut header = BytesMut::new();
        FlowHeader {
            flow_id: 1,
            protocol: Protocol::Tcp,
            dest: origin.addr,
            metadata: vec![],
        }
        .encode(&mut header)
        .unwrap();
        let partial = header[..header.len() - 3].to_vec();
        let mut waits = Vec::new();
        for (conn, _) in &sessions {
            for _ in 0..FLOWS_EACH {
                let (mut send, mut recv) = conn.open_bi().await.unwrap();
                send.write_all(&partial).await.unwrap();
                let sent = Instant::now();
                waits.push(tokio::spawn(async move {
                    // The edge resets the stream (and stops our sending half).
                    let mut buf = [0u8; 64];
                    let outcome = tokio::time::timeout(DEADLINE, recv.read(&mut buf)).await;
                    let code = match outcome {
                        Ok(Err(quinn::ReadError::Reset(code))) => u64::from(code),
                        other => panic!("a slow header's stream ended with {other:?}"),
                    };
                    let _keep = send;
                    (sent.elapsed(), code)
                }));
            }
        }
        // Meanwhile a real client's flows work.
        let client = client_for(&edge, "busy@example.com").await;
        let mut good = Vec::new();
        let mut peak = rss_kib(edge_pid);
        for i in 0..5 {
            let t = Instant::now();
            let mut s = client.dial(origin.addr).await.unwrap();
            s.write_all(format!("flow {i}").as_bytes()).await.unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, format!("hello flow {i}").as_bytes());
            good.push(t.elapsed());
            peak = peak.max(rss_kib(edge_pid));
        }
        let mut cut = Vec::new();
        for w in waits {
            let (after, code) = w.await.unwrap();
            assert_eq!(code, u64::from(ResetCode::BAD_HEADER.0), "reset code");
            cut.push(after);
        }
        peak = peak.max(rss_kib(edge_pid));
        // The sessions themselves live on: a complete header on one of them is answered.
        let (mut send, mut recv) = sessions[0].0.open_bi().await.unwrap();
        send.write_all(&header).await.unwrap();
        let status = read_status(&mut recv).await;
        assert_eq!(status.code, FlowStatusCode::Ok, "{status:?}");
        client.shutdown();
        for (conn, _) in &sessions {
            conn.close(0u32.into(), b"done");
        }
        (cut, peak, good)
    });
    let mut cut_after = cut_after;
    cut_after.sort();
    let (min, median, max) = (
        cut_after[0],
        cut_after[cut_after.len() / 2],
        cut_after[cut_after.len() - 1],
    );
    eprintln!(
        "MEASURED slow headers: {} flows on {SESSIONS} sessions cut after {min:.2?} (first), \
         {median:.2?} (median), {max:.2?} (last), header timeout {header_timeout:?}; \
         a real client's flows meanwhile took {good_flows:.1?}; edge RSS {rss_before} KiB before, \
         {rss_peak} KiB peak",
        cut_after.len()
    );
    assert_eq!(cut_after.len(), SESSIONS * FLOWS_EACH);
    assert!(
        min >= header_timeout - Duration::from_millis(100),
        "a stream was cut before the header timeout: {min:?}"
    );
    assert!(rss_peak <= EDGE_RSS_BOUND_KIB, "edge RSS {rss_peak} KiB");
    drop(connector);
}

/// Reads one flow status off a stream.
async fn read_status(recv: &mut quinn::RecvStream) -> FlowStatus {
    let mut raw = BytesMut::new();
    loop {
        let mut view = &raw[..];
        if let Some(s) = FlowStatus::decode(&mut view).unwrap() {
            return s;
        }
        let chunk = tokio::time::timeout(DEADLINE, recv.read_chunk(4096, true))
            .await
            .unwrap()
            .unwrap()
            .expect("a status before the end of the stream");
        raw.extend_from_slice(&chunk.bytes);
    }
}

#[test]
fn an_oversized_header_is_refused_and_the_session_lives_on() {
    let origin = Origin::hello("127.0.0.2:0");
    let edge = Edge::start();
    let creds = edge.tunnel("private");
    edge.admin(&["route", "ip", "add", "127.0.0.0/29", "private"]);
    edge.rule("Allow", 10, "allow", "l4", "net.dst.ip in {127.0.0.0/29}");
    let connector = Connector::start(&edge, "private", &creds, "connector", 1);
    connector.wait_ready(1);
    let device_path = edge.user("big@example.com", "dev");
    let device = DeviceCredentials::load(&device_path, PermissionMode::Default).unwrap();
    let rt = runtime(2);
    rt.block_on(async {
        let ep = raw_endpoint(&edge, "127.0.0.1:0".parse().unwrap());
        let (conn, _control) = client_session(&ep, &edge, &device).await;

        // A length prefix one byte over the limit, then that many bytes: refused on the
        // prefix, with a status naming the limit.
        let len = DEFAULT_MAX_HEADER_LEN + 1;
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut wire = (len as u32).to_be_bytes().to_vec();
        wire.extend(std::iter::repeat_n(0u8, len));
        let _ = send.write_all(&wire).await;
        let status = read_status(&mut recv).await;
        assert_eq!(status.code, FlowStatusCode::BadHeader, "{status:?}");
        assert!(
            status.detail.contains(&DEFAULT_MAX_HEADER_LEN.to_string()),
            "{status:?}"
        );
        eprintln!(
            "MEASURED oversized header ({len} bytes): {:?} {:?}",
            status.code, status.detail
        );

        // A length of 4 GiB - 1 in the prefix alone: the same.
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let status = read_status(&mut recv).await;
        assert_eq!(status.code, FlowStatusCode::BadHeader, "{status:?}");

        // A header whose metadata pushes it past the limit cannot even be built by the
        // library (the encoder checks too).
        let big = FlowHeader {
            flow_id: 9,
            protocol: Protocol::Tcp,
            dest: origin.addr,
            metadata: vec![("k".into(), "v".repeat(DEFAULT_MAX_HEADER_LEN))],
        };
        assert!(big.encode(&mut BytesMut::new()).is_err());

        // The session is still good: a valid header on the same connection opens a flow
        // that carries bytes.
        let mut header = BytesMut::new();
        FlowHeader {
            flow_id: 10,
            protocol: Protocol::Tcp,
            dest: origin.addr,
            metadata: vec![],
        }
        .encode(&mut header)
        .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&header).await.unwrap();
        let status = read_status(&mut recv).await;
        assert_eq!(status.code, FlowStatusCode::Ok, "{status:?}");
        send.write_all(b"after").await.unwrap();
        send.finish().unwrap();
        let back = recv.read_to_end(1024).await.unwrap();
        assert!(back.ends_with(b"hello after"), "{back:?}");
        conn.close(0u32.into(), b"done");
    });
}

#[test]
fn a_client_that_ends_its_control_stream_is_disconnected() {
    // Before the edge closed such a connection itself, it stayed open (flows refused,
    // stream tables allocated) for as long as the client kept it alive.
    let edge = Edge::start();
    let device_path = edge.user("gone@example.com", "dev");
    let device = DeviceCredentials::load(&device_path, PermissionMode::Default).unwrap();
    let rt = runtime(2);
    rt.block_on(async {
        let ep = raw_endpoint(&edge, "127.0.0.1:0".parse().unwrap());
        let (conn, (mut send, recv)) = client_session(&ep, &edge, &device).await;
        let ended = Instant::now();
        send.finish().unwrap();
        drop(recv);
        let why = tokio::time::timeout(DEADLINE, conn.closed())
            .await
            .expect("the edge closes the connection");
        eprintln!("MEASURED control stream ended: the edge closed the connection after {:?} with {why}", ended.elapsed());
        assert!(
            matches!(&why, quinn::ConnectionError::ApplicationClosed(c) if c.reason.as_ref() == b"control stream ended"),
            "{why:?}"
        );
    });
}
