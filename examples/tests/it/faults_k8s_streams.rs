//! Kubernetes streams through the tunnel (issue 9, item 10), through the real binaries
//! (`zt client forward` → `zt edge run` → `zt tunnel … run` → origin). The origin speaks
//! the HTTP/1.1 the API server speaks for `kubectl exec`, `attach`, `port-forward` and
//! watches, and records every byte it receives:
//! - an `Upgrade: websocket` exchange and an `Upgrade: SPDY/3.1` exchange, each answered
//!   `101 Switching Protocols`, pass byte-exact both ways; in each, the client half-closes
//!   (stdin ends) while the origin keeps sending (stdout keeps flowing), and every stdout
//!   byte still arrives;
//! - a watch that stays silent for three times the idle timeout survives (QUIC keep-alives
//!   hold the connections) and its next event arrives;
//! - an upgrade request answered with a non-101 status (403 with a JSON body) is relayed
//!   exactly as sent, and the flow ends when the origin closes the connection.
//!
//! The edge runs with `--idle-timeout 3s` so that three idle timeouts take 9 s.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::faults::*;
use crate::support::*;
use base64::Engine as _;

const IDLE: Duration = Duration::from_secs(3);
const STDIN_LEN: usize = 64 * 1024;
const STDOUT_LEN: usize = 512 * 1024;
const FORBIDDEN_BODY: &str = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\
\"message\":\"pods \\\"web\\\" is forbidden: User \\\"alice\\\" cannot create resource \
\\\"pods/exec\\\"\",\"reason\":\"Forbidden\",\"code\":403}";

/// What the origin saw on one connection.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// The request head, byte for byte (up to and including the blank line).
    head: Vec<u8>,
    /// Everything after the head.
    body: Vec<u8>,
    /// How many stdout bytes the origin had sent when the client's FIN arrived.
    stdout_sent_at_eof: Option<usize>,
    /// When the origin closed the connection.
    closed_at: Option<Instant>,
}

fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    head
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn websocket_accept(key: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(d.as_ref())
}

/// The 101 answer the origin gives to an upgrade request for `protocol`.
fn switching(protocol: &str, head: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n"
    );
    if let Some(key) = header(head, "Sec-WebSocket-Key") {
        out.push_str(&format!(
            "Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n",
            websocket_accept(key)
        ));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn forbidden() -> Vec<u8> {
    format!(
        "HTTP/1.1 403 Forbidden\r\nAudit-Id: 7f1c2a9e-5d1b-4e0c-9a57-1f0b2d3c4e5f\r\n\
         Cache-Control: no-cache, private\r\nContent-Type: application/json\r\n\
         X-Content-Type-Options: nosniff\r\nContent-Length: {}\r\n\r\n{FORBIDDEN_BODY}",
        FORBIDDEN_BODY.len()
    )
    .into_bytes()
}

fn watch_events() -> (Vec<u8>, Vec<u8>) {
    let chunk = |s: &str| format!("{:x}\r\n{s}\r\n", s.len());
    let first = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        chunk("{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\",\"resourceVersion\":\"101\"}}}\n")
    );
    let second = format!(
        "{}0\r\n\r\n",
        chunk("{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\",\"resourceVersion\":\"102\"}}}\n")
    );
    (first.into_bytes(), second.into_bytes())
}

/// The stand-in API server. Each connection: read the head, then by path:
/// `/exec` upgrades (websocket or SPDY/3.1), streams stdout while reading stdin to EOF;
/// `/watch` sends an event, stays silent for 3 × the idle timeout, sends another;
/// `/forbidden` answers 403 and closes.
fn api_server(seen: mpsc::Sender<Seen>) -> Origin {
    let seen = Mutex::new(seen);
    Origin::spawn("127.0.0.2:0", move |mut s| {
        let head = read_head(&mut s);
        let text = String::from_utf8_lossy(&head).into_owned();
        let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut record = Seen {
            head: head.clone(),
            ..Seen::default()
        };
        if path.starts_with("/forbidden") {
            s.write_all(&forbidden()).unwrap();
            // Close at once: the flow must end with it, not wait for the client.
            drop(s);
            record.closed_at = Some(Instant::now());
        } else if path.starts_with("/watch") {
            let (first, second) = watch_events();
            s.write_all(&first).unwrap();
            std::thread::sleep(3 * IDLE + Duration::from_millis(500));
            s.write_all(&second).unwrap();
            let _ = s.shutdown(Shutdown::Write);
            let _ = s.read_to_end(&mut record.body);
        } else {
            let protocol = header(&text, "Upgrade").unwrap_or("").to_owned();
            s.write_all(&switching(&protocol, &text)).unwrap();
            // stdin is read on another thread while stdout flows on this one.
            let mut reader = s.try_clone().unwrap();
            let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let sent2 = sent.clone();
            let stdin = std::thread::spawn(move || {
                let mut got = Vec::new();
                let _ = reader.read_to_end(&mut got);
                (got, sent2.load(std::sync::atomic::Ordering::SeqCst))
            });
            let stdout = payload(0x5744, STDOUT_LEN);
            for part in stdout.chunks(16 * 1024) {
                s.write_all(part).unwrap();
                sent.fetch_add(part.len(), std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(40));
            }
            let (got, at_eof) = stdin.join().unwrap();
            record.body = got;
            record.stdout_sent_at_eof = Some(at_eof);
            let _ = s.shutdown(Shutdown::Both);
            record.closed_at = Some(Instant::now());
        }
        let _ = seen.lock().unwrap().send(record);
    })
}

struct Tunnel {
    _edge: Edge,
    _connector: Connector,
    _client: Proc,
    forward: SocketAddr,
    seen: mpsc::Receiver<Seen>,
    _origin: Origin,
}

fn tunnel() -> Tunnel {
    let (tx, seen) = mpsc::channel();
    let origin = api_server(tx);
    let idle = format!("{}s", IDLE.as_secs());
    let edge = Edge::start_with(&["--idle-timeout", &idle]);
    let (creds, device) = edge.api_zt();
    let connector = Connector::start(&edge, "api-zt", &creds, "connector", 2);
    connector.wait_ready(2);
    let (client, forward) = client_forward(&device, origin.addr);
    Tunnel {
        _edge: edge,
        _connector: connector,
        _client: client,
        forward,
        seen,
        _origin: origin,
    }
}

/// Reads exactly `n` bytes, or fails naming what was being read.
fn read_n(s: &mut TcpStream, n: usize, what: &str) -> Vec<u8> {
    let mut out = vec![0u8; n];
    s.read_exact(&mut out)
        .unwrap_or_else(|e| panic!("reading {what} ({n} bytes): {e}"));
    out
}

/// An exec through an upgraded stream: the request head, the 101, then stdin up and
/// stdout down at once, stdin half-closed early while stdout still flows.
fn exec(protocol: &str) {
    let t = tunnel();
    let ws = protocol == "websocket";
    let head = if ws {
        "GET /exec/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true&stdout=true \
         HTTP/1.1\r\nHost: 127.0.0.2\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: v4.channel.k8s.io\r\nUser-Agent: kubectl/v1.24.1\r\n\r\n"
            .to_owned()
    } else {
        "POST /exec/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true&stdout=true \
         HTTP/1.1\r\nHost: 127.0.0.2\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\nUser-Agent: kubectl/v1.24.1\r\n\
         Content-Length: 0\r\n\r\n"
            .to_owned()
    };
    let started = Instant::now();
    let mut s = TcpStream::connect(t.forward).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let expected_101 = switching(if ws { "websocket" } else { "SPDY/3.1" }, &head);
    let got_101 = read_n(&mut s, expected_101.len(), "the 101 answer");
    assert_eq!(
        String::from_utf8_lossy(&got_101),
        String::from_utf8_lossy(&expected_101),
        "the 101 answer arrived byte for byte"
    );
    let upgraded = started.elapsed();
    // stdin: frames that are not valid HTTP, sent at once, then EOF (half-close) while
    // stdout is still coming.
    let stdin = payload(if ws { 0x1157 } else { 0x5ad1 }, STDIN_LEN);
    s.write_all(&stdin).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let half_closed = started.elapsed();
    let mut stdout = Vec::new();
    s.read_to_end(&mut stdout).unwrap();
    let done = started.elapsed();
    let seen = t.seen.recv_timeout(DEADLINE).unwrap();
    eprintln!(
        "MEASURED {protocol} exec: 101 after {upgraded:?}; stdin ({STDIN_LEN} bytes) half-closed \
         after {half_closed:?}, when the origin had sent {} of {STDOUT_LEN} stdout bytes; all \
         stdout in {done:?}",
        seen.stdout_sent_at_eof.unwrap_or(0)
    );
    assert_eq!(
        seen.head,
        head.as_bytes(),
        "the request head reached the origin unchanged"
    );
    assert_eq!(
        seen.body.len(),
        STDIN_LEN,
        "every stdin byte reached the origin"
    );
    assert!(seen.body == stdin, "stdin arrived byte for byte");
    assert_eq!(stdout.len(), STDOUT_LEN, "every stdout byte arrived");
    assert!(
        stdout == payload(0x5744, STDOUT_LEN),
        "stdout arrived byte for byte"
    );
    let at_eof = seen.stdout_sent_at_eof.unwrap();
    assert!(
        at_eof < STDOUT_LEN,
        "the client's half-close reached the origin only after stdout ended ({at_eof} bytes)"
    );
}

#[test]
fn a_websocket_exec_passes_byte_exact_with_stdin_half_closed() {
    exec("websocket");
}

#[test]
fn a_spdy_exec_passes_byte_exact_with_stdin_half_closed() {
    exec("SPDY/3.1");
}

#[test]
fn a_watch_idle_for_three_idle_timeouts_survives() {
    let t = tunnel();
    let head = "GET /watch/api/v1/namespaces/default/pods?watch=true&resourceVersion=100 \
                HTTP/1.1\r\nHost: 127.0.0.2\r\nAccept: application/json\r\n\r\n";
    let (first, second) = watch_events();
    let mut s = TcpStream::connect(t.forward).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let got = read_n(&mut s, first.len(), "the first watch event");
    assert_eq!(got, first, "the first event arrived byte for byte");
    let quiet_from = Instant::now();
    let got = read_n(&mut s, second.len(), "the event after the silence");
    let silent = quiet_from.elapsed();
    assert_eq!(
        got, second,
        "the event after the silence arrived byte for byte"
    );
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let seen = t.seen.recv_timeout(DEADLINE).unwrap();
    assert_eq!(seen.head, head.as_bytes());
    eprintln!(
        "MEASURED watch: silent for {silent:?} (idle timeout {IDLE:?}, so {:.1} idle timeouts), \
         then the next event arrived",
        silent.as_secs_f64() / IDLE.as_secs_f64()
    );
    assert!(silent >= 3 * IDLE, "the silence was only {silent:?}");
}

#[test]
fn a_refused_upgrade_is_relayed_as_sent_and_ends_with_the_origin() {
    let t = tunnel();
    let head = "POST /forbidden/api/v1/namespaces/default/pods/web/exec?command=sh HTTP/1.1\r\n\
                Host: 127.0.0.2\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
                X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n";
    let mut s = TcpStream::connect(t.forward).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // No half-close from the client: only the origin's close may end the flow.
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let ended = Instant::now();
    let seen = t.seen.recv_timeout(DEADLINE).unwrap();
    let after_close = ended.saturating_duration_since(seen.closed_at.unwrap());
    eprintln!(
        "MEASURED refused upgrade: {} bytes of 403 relayed; the flow ended {after_close:?} \
         after the origin closed",
        got.len()
    );
    assert_eq!(seen.head, head.as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&forbidden()),
        "the 403 arrived exactly as sent"
    );
}
