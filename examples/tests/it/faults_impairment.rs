//! Integrity under a bad network (issue 9, item 7): twenty concurrent 1 MiB flows each way
//! through `zt client forward` → `zt edge run` → `zt tunnel … run` → origin, while the
//! edge↔connector path (a userspace UDP relay, `zt_testkit::impair`) loses 1 % of the packets,
//! reorders 10 %, duplicates 1 % and delays each by 20 ± 5 ms, in both directions. Every
//! upload and every download must arrive with the right SHA-256, and no flow may stall
//! (a read that sees no byte for 30 s is a stall). The congestion controller is zt's
//! default, BBR; docs/PROTOCOL.md, section 7, says why.

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::faults::*;
use crate::support::*;
use zt_testkit::impair::{Dir, Impair, Impairment};

const FLOWS: u64 = 20;
const FLOW_LEN: usize = 1024 * 1024;
const STALL: Duration = Duration::from_secs(30);

/// The relay itself on plain UDP: both directions relayed, per-direction settings,
/// duplication counted, and the blackhole drops everything until lifted.
#[test]
fn the_relay_relays_both_ways_and_impairs_each_direction() {
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    target
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let relay = Impair::start("self-test", target.local_addr().unwrap());
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 2048];
    peer.send_to(b"ping", relay.addr).unwrap();
    let (n, via) = target.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    target.send_to(b"pong", via).unwrap();
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"pong"[..], relay.addr));

    // Duplication upstream only: the target sees two copies, the peer one answer.
    relay.set(
        Dir::Up,
        Impairment {
            duplicate: 1.0,
            ..Impairment::NONE
        },
    );
    peer.send_to(b"twice", relay.addr).unwrap();
    for _ in 0..2 {
        let (n, _) = target.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"twice");
    }
    // Delay downstream only.
    relay.set(Dir::Up, Impairment::NONE);
    relay.set(
        Dir::Down,
        Impairment {
            delay: Duration::from_millis(200),
            ..Impairment::NONE
        },
    );
    let t = Instant::now();
    target.send_to(b"late", via).unwrap();
    let (n, _) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"late");
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    relay.set(Dir::Down, Impairment::NONE);

    // A bottleneck upstream: 3.2 Mbit/s with a 1 s buffer takes at least 100 ms for 40
    // packets of 1000 bytes, and keeps them all. (A burst of 40 fits the relay's socket
    // buffer, where each datagram costs about twice its size.)
    relay.set(
        Dir::Up,
        Impairment {
            rate_bps: Some(3_200_000),
            buffer: Duration::from_secs(1),
            ..Impairment::NONE
        },
    );
    let packet = [0x42u8; 1000];
    let t = Instant::now();
    for _ in 0..40 {
        peer.send_to(&packet, relay.addr).unwrap();
    }
    for i in 0..40 {
        let (n, _) = target
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("packet {i}: {e}; {}", relay.summary()));
        assert_eq!(n, 1000);
    }
    let took = t.elapsed();
    println!("MEASURED 40 kB through a 3.2 Mbit/s bottleneck: {took:?}");
    assert!(took >= Duration::from_millis(99), "{took:?}");
    // A burst of 40 into a 20 ms buffer at 800 kbit/s (10 ms a packet): the buffer holds
    // three packets, the rest of a burst faster than the link is dropped and counted.
    relay.set(
        Dir::Up,
        Impairment {
            rate_bps: Some(800_000),
            buffer: Duration::from_millis(20),
            ..Impairment::NONE
        },
    );
    for _ in 0..40 {
        peer.send_to(&packet, relay.addr).unwrap();
    }
    let dropped = &relay.stats(Dir::Up).rate_dropped;
    let deadline = Instant::now() + Duration::from_secs(10);
    while dropped.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("bottleneck drops: {}", relay.summary());
    assert!(dropped.load(Ordering::Relaxed) > 0, "{}", relay.summary());
    // Drain what the bottleneck let through before the next checks.
    target
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while target.recv_from(&mut buf).is_ok() {}
    target
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    relay.set(Dir::Up, Impairment::NONE);

    relay.blackhole(true);
    target.send_to(b"dropped", via).unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        peer.recv_from(&mut buf).is_err(),
        "the blackhole let a packet through"
    );
    relay.blackhole(false);
    target.send_to(b"again", via).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (n, _) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"again");
    assert_eq!(relay.stats(Dir::Up).duplicated.load(Ordering::Relaxed), 1);
    assert_eq!(relay.stats(Dir::Down).blackholed.load(Ordering::Relaxed), 1);
}

#[test]
fn twenty_flows_keep_every_byte_through_loss_reordering_duplication_and_delay() {
    let origin = seeded_hashing_origin("127.0.0.2:0");
    let setup = Setup::new();
    let relay = Impair::start("edge-connector", setup.edge.listen);
    let bad = Impairment {
        loss: 0.01,
        reorder: 0.10,
        reorder_gap: Duration::from_millis(10),
        duplicate: 0.01,
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(5),
        blackhole: false,
        ..Impairment::NONE
    };
    relay.set_both(bad);
    let connector = Connector::start_via(
        &setup.edge,
        relay.addr,
        "api-zt",
        &setup.creds,
        "connector",
        2,
    );
    let ready = connector.wait_ready(2);
    let (_client, forward) = client_forward(&setup.device, origin.addr);

    let t = Instant::now();
    let flows: Vec<_> = (0..FLOWS)
        .map(|i| std::thread::spawn(move || transfer(forward, 1000 + i, FLOW_LEN, STALL)))
        .collect();
    let results: Vec<_> = flows.into_iter().map(|f| f.join().unwrap()).collect();
    let took = t.elapsed();
    let mut times: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    times.sort();
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!("relay counters: {}", relay.summary());
    eprintln!(
        "MEASURED impairment (1% loss, 10% reordering, 1% duplication, 20±5 ms each way, seed \
         {}): connector ready in {ready:?}; {} of {FLOWS} flows of 1 MiB up + 1 MiB down \
         intact in {took:?} ({:.2} MiB/s in total); per flow fastest {:?}, median {:?}, \
         slowest {:?}",
        relay.seed,
        times.len(),
        (2 * FLOWS as usize * FLOW_LEN) as f64 / (1024.0 * 1024.0) / took.as_secs_f64(),
        times.first().copied().unwrap_or_default(),
        times.get(times.len() / 2).copied().unwrap_or_default(),
        times.last().copied().unwrap_or_default(),
    );
    assert!(
        failed.is_empty(),
        "flows failed under impairment: {failed:?}"
    );
    // The impairment really happened, both ways.
    for dir in [Dir::Up, Dir::Down] {
        let s = relay.stats(dir);
        assert!(s.lost.load(Ordering::Relaxed) > 0, "{dir:?}: nothing lost");
        assert!(
            s.reordered.load(Ordering::Relaxed) > 0,
            "{dir:?}: nothing reordered"
        );
        assert!(
            s.duplicated.load(Ordering::Relaxed) > 0,
            "{dir:?}: nothing duplicated"
        );
    }
}
