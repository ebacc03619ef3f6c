//! TCP half-close end to end through the real binaries: a program connected to
//! `zt client forward` sends its request and shuts down its write side; only after reading
//! that FIN does the origin answer, with 10 MiB. Every byte must arrive (SHA-256 checked),
//! through client → `zt edge run` → `zt tunnel … run` → origin and back. A relay that tore
//! the flow down on the first FIN (as cloudflared does) would deliver nothing.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::time::Instant;

use crate::support::*;
use zt_testkit::data::sha256;

const ANSWER_LEN: usize = 10 * 1024 * 1024;

/// Deterministic bytes that differ at every offset (a xorshift stream).
fn answer() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(ANSWER_LEN);
    while out.len() < ANSWER_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(ANSWER_LEN);
    out
}

#[test]
fn the_origin_answers_after_the_client_shuts_its_write_side() {
    let (saw_request, request_rx) = mpsc::channel();
    let saw_request = std::sync::Mutex::new(saw_request);
    let origin = Origin::spawn("127.0.0.2:0", move |mut s| {
        // Read until EOF: the client's FIN must come through before any answer is sent.
        let mut request = Vec::new();
        s.read_to_end(&mut request).unwrap();
        let _ = saw_request.lock().unwrap().send(request);
        s.write_all(&answer()).unwrap();
    });
    let edge = Edge::start();
    let (creds, device) = edge.api_zt_via_list();
    let connector = Connector::start(&edge, "api-zt", &creds, "connector", 2);
    connector.wait_ready(2);
    let (_client, forward) = client_forward(&device, origin.addr);

    let expected = sha256(&answer());
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(forward).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"tar cf - /var/log").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let request = request_rx.recv_timeout(DEADLINE).unwrap();
    let fin_took = t.elapsed();
    assert_eq!(
        request, b"tar cf - /var/log",
        "the origin read the request, then EOF"
    );
    let mut got = Vec::with_capacity(ANSWER_LEN);
    s.read_to_end(&mut got).unwrap();
    let took = t.elapsed();
    eprintln!(
        "MEASURED half-close: the FIN reached the origin {fin_took:?} after connect; \
         {} bytes back in {took:?} ({:.1} MiB/s)",
        got.len(),
        got.len() as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
    );
    assert_eq!(got.len(), ANSWER_LEN, "every byte of the answer arrived");
    assert_eq!(sha256(&got), expected, "and they are the origin's bytes");
}
