//! Origin dialing against real listeners on loopback.
//!
//! What is covered and how:
//! - success over IPv4 (and IPv6 where the host has `::1`), with the bytes checked and the
//!   keep-alive and no-delay options read back from the socket;
//! - refused: a port that was just released, so nothing listens there;
//! - timeout: a listener whose accept queue is full. Linux drops a SYN that finds the
//!   queue full (the client keeps retransmitting), so the dial hangs until our timeout;
//!   the test fills the queue until a connect stalls, then dials;
//! - not allowed / not dialable: decided before any packet is sent;
//! - unreachable: cannot be produced deterministically on loopback (it needs a missing
//!   route or an ICMP error from a router), so the mapping of the OS's errors is unit
//!   tested in the crate instead;
//! - UDP: echo through a connected socket, size bounds both ways, and the ICMP port
//!   unreachable that loopback returns for a closed port.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use uuid::Uuid;
use zt_connector::{
    ConnectorConfig, ConnectorMetrics, DialError, DialErrorKind, FlowLimiter, OriginDialer,
    RelayError,
};

const DEADLINE: Duration = Duration::from_secs(20);

fn dialer(yaml: &str) -> (OriginDialer, Arc<ConnectorMetrics>) {
    let config = ConnectorConfig::parse(yaml, "test.yaml").unwrap();
    let metrics = Arc::new(ConnectorMetrics::new(Uuid::new_v4()));
    (OriginDialer::new(&config, Arc::clone(&metrics)), metrics)
}

async fn echo_listener(addr: &str) -> Option<SocketAddr> {
    let listener = TcpListener::bind(addr).await.ok()?;
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });
    Some(local)
}

async fn round_trip(mut s: TcpStream) {
    s.write_all(b"ping through the connector").await.unwrap();
    let mut back = [0u8; 26];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"ping through the connector");
}

#[tokio::test]
async fn tcp_dial_applies_keepalive_and_nodelay() {
    let (d, metrics) = dialer("warp-routing:\n  tcpKeepAlive: 7s\n");
    let addr = echo_listener("127.0.0.1:0").await.unwrap();
    let s = d.dial_tcp(addr).await.unwrap();
    let sock = socket2::SockRef::from(&s);
    assert!(sock.keepalive().unwrap());
    assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
    assert!(s.nodelay().unwrap());
    round_trip(s).await;
    assert_eq!(metrics.dial_errors(DialErrorKind::Other), 0);
}

#[tokio::test]
async fn tcp_keepalive_zero_turns_it_off() {
    let (d, _) = dialer("warp-routing:\n  tcpKeepAlive: 0\n");
    let addr = echo_listener("127.0.0.1:0").await.unwrap();
    let s = d.dial_tcp(addr).await.unwrap();
    assert!(!socket2::SockRef::from(&s).keepalive().unwrap());
    round_trip(s).await;
}

#[tokio::test]
async fn tcp_dial_over_ipv6() {
    let (d, _) = dialer("");
    let Some(addr) = echo_listener("[::1]:0").await else {
        eprintln!("skipped: this host has no ::1");
        return;
    };
    round_trip(d.dial_tcp(addr).await.unwrap()).await;
}

#[tokio::test]
async fn closed_port_is_refused() {
    let (d, metrics) = dialer("");
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let err = d.dial_tcp(addr).await.unwrap_err();
    assert!(
        matches!(err, DialError::Refused { dst } if dst == addr),
        "{err:?}"
    );
    assert_eq!(err.kind(), DialErrorKind::Refused);
    assert_eq!(metrics.dial_errors(DialErrorKind::Refused), 1);
    assert!(err.to_string().contains(&addr.to_string()));
}

#[tokio::test]
async fn full_accept_queue_times_out() {
    let timeout = Duration::from_millis(300);
    let (d, metrics) = dialer("warp-routing:\n  connectTimeout: 300ms\n");
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    // Never accepted: with a backlog of 0 Linux queues one connection and drops the SYNs
    // that come after it.
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    let mut full = false;
    for _ in 0..16 {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("unexpected connect error {e}"),
            Err(_) => {
                full = true;
                break;
            }
        }
    }
    assert!(
        full,
        "accept queue never filled after {} connections",
        held.len()
    );
    let err = d.dial_tcp(addr).await.unwrap_err();
    assert!(
        matches!(err, DialError::Timeout { dst, after } if dst == addr && after == timeout),
        "{err:?}"
    );
    assert_eq!(metrics.dial_errors(DialErrorKind::Timeout), 1);
    drop(listener);
}

#[tokio::test]
async fn allow_list_is_enforced_before_dialing() {
    let (d, metrics) = dialer("zt-allowed-destinations: [10.0.0.0/8, '2001:db8::/32']\n");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let err = d.dial_tcp(addr).await.unwrap_err();
    assert!(
        matches!(err, DialError::NotAllowed { dst } if dst == addr),
        "{err:?}"
    );
    // The same host written as an IPv4-mapped IPv6 address is judged as IPv4.
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", addr.port())
        .parse()
        .unwrap();
    assert!(matches!(
        d.dial_tcp(mapped).await.unwrap_err(),
        DialError::NotAllowed { .. }
    ));
    assert_eq!(metrics.dial_errors(DialErrorKind::NotAllowed), 2);
    // No connection reached the listener: it has nothing to accept.
    assert!(futures_poll_once(listener.accept()).await.is_none());
}

/// Polls a future once: `None` if it is not ready.
async fn futures_poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| match f.as_mut().poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

#[tokio::test]
async fn undialable_destinations_are_refused() {
    let (d, _) = dialer("");
    for dst in [
        "0.0.0.0:80",
        "[::]:80",
        "127.0.0.1:0",
        "224.0.0.1:80",
        "255.255.255.255:80",
    ] {
        let dst: SocketAddr = dst.parse().unwrap();
        let err = d.dial_tcp(dst).await.unwrap_err();
        assert!(
            matches!(err, DialError::InvalidDestination { .. }),
            "{dst}: {err:?}"
        );
        assert_eq!(err.kind(), DialErrorKind::NotAllowed);
    }
}

#[tokio::test]
async fn flow_limit_maps_to_a_dial_error() {
    let metrics = Arc::new(ConnectorMetrics::new(Uuid::new_v4()));
    let flows = FlowLimiter::new(NonZeroU64::new(1), metrics);
    let _one = flows.try_admit().unwrap();
    let err = DialError::from(flows.try_admit().unwrap_err());
    assert_eq!(err.kind(), DialErrorKind::TooManyFlows);
    assert_eq!(
        err.to_string(),
        "too many active flows (maxActiveFlows is 1)"
    );
}

async fn udp_echo() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            // A request of "big" is answered with an oversized datagram.
            if &buf[..n] == b"big" {
                sock.send_to(&[7u8; 3000], from).await.unwrap();
            } else {
                sock.send_to(&buf[..n], from).await.unwrap();
            }
        }
    });
    addr
}

#[tokio::test]
async fn udp_relay_echoes_and_bounds_sizes() {
    let (d, _) = dialer("");
    let echo = udp_echo().await;
    let relay = d.dial_udp(echo, 1232).await.unwrap();
    assert_eq!(relay.destination(), echo);
    let mut buf = vec![0u8; relay.max_payload() + 1];

    relay.send(b"dns query").await.unwrap();
    let n = tokio::time::timeout(DEADLINE, relay.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"dns query");

    let err = relay.send(&[0u8; 1233]).await.unwrap_err();
    assert!(
        matches!(
            err,
            RelayError::TooLarge {
                len: 1233,
                max: 1232,
                ..
            }
        ),
        "{err:?}"
    );

    relay.send(b"big").await.unwrap();
    let err = tokio::time::timeout(DEADLINE, relay.recv(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, RelayError::TooLarge { max: 1232, .. }),
        "{err:?}"
    );

    // The relay keeps working after dropping an oversized reply.
    relay.send(&[1u8; 1232]).await.unwrap();
    let n = tokio::time::timeout(DEADLINE, relay.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1232);

    let mut small = [0u8; 16];
    assert!(matches!(
        relay.recv(&mut small).await,
        Err(RelayError::Io { .. })
    ));
}

#[tokio::test]
async fn udp_to_a_closed_port_is_refused() {
    let (d, _) = dialer("");
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.local_addr().unwrap()
    };
    let relay = d.dial_udp(closed, 512).await.unwrap();
    relay.send(b"anyone?").await.unwrap();
    let mut buf = [0u8; 513];
    let err = tokio::time::timeout(DEADLINE, relay.recv(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, RelayError::Refused { dst } if dst == closed),
        "{err:?}"
    );
}

#[tokio::test]
async fn udp_allow_list_applies_too() {
    let (d, metrics) = dialer("zt-allowed-destinations: [10.96.0.10]\n");
    let err = d
        .dial_udp("127.0.0.1:53".parse().unwrap(), 512)
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::NotAllowed { .. }));
    assert_eq!(metrics.dial_errors(DialErrorKind::NotAllowed), 1);
}
