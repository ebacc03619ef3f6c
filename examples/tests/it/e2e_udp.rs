//! UDP through the real binaries: `zt client forward --udp` → `zt edge run` → `zt tunnel …
//! run` → a UDP echo origin on a private loopback address, over QUIC datagrams. Each
//! datagram comes back whole and in its own packet.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn udp_echo_through_forward_udp() {
    let origin = UdpSocket::bind("127.0.0.2:0").unwrap();
    let origin_addr = origin.local_addr().unwrap();
    origin
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((n, from)) = origin.recv_from(&mut buf) {
                let _ = origin.send_to(&buf[..n], from);
            }
        }
    });

    let edge = Edge::start();
    let creds = edge.tunnel("private");
    edge.admin(&["route", "ip", "add", "127.0.0.2/32", "private"]);
    edge.rule(
        "Allow DNS-like UDP",
        100,
        "allow",
        "l4",
        "net.dst.ip == 127.0.0.2 and net.protocol == \"udp\"",
    );
    let device = edge.user("alice@example.com", "sre");
    let connector = Connector::start(&edge, "private", &creds, "connector", 2);
    connector.wait_ready(2);

    let listen = free_udp("127.0.0.1");
    let (l, t) = (listen.to_string(), origin_addr.to_string());
    let client = Proc::spawn(
        "client-udp",
        &[
            "client",
            "--credentials",
            device.to_str().unwrap(),
            "forward",
            "--udp",
            "--listen",
            &l,
            "--to",
            &t,
        ],
        &[],
    );
    client.wait_for("forwarding UDP");

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..20u32 {
        let msg: Vec<u8> = (0..(100 + i * 50)).map(|b| (b ^ i) as u8).collect();
        let t = Instant::now();
        // UDP may drop a datagram: resend until the echo comes, up to the deadline.
        let got = eventually("a UDP echo", || {
            sock.send_to(&msg, listen).unwrap();
            sock.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
        });
        assert_eq!(got, msg, "datagram {i} came back whole");
        if i == 0 {
            eprintln!(
                "MEASURED first UDP round trip (opens the flow): {:?}",
                t.elapsed()
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    echo.join().unwrap();
}
