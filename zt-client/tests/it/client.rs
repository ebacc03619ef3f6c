//! The client runtime against a test edge over real QUIC on 127.0.0.1, with real TCP and
//! UDP origins: dial, forward (TCP and UDP), SOCKS5, posture, route pushes, reconnects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use zt_client::socks::ReplyCode;
use zt_client::*;
use zt_testkit::socks::{connect as socks_connect, encode};

async fn connect(edge: &ClientEdge) -> Arc<Client> {
    Arc::new(
        within(
            "client connect",
            Client::connect(&edge.credentials(), client_options()),
        )
        .await
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_carries_data_both_ways_with_half_close() {
    let edge = ClientEdge::start();
    let origin_server = hashing_origin("127.0.0.1:0", 64 * 1024);
    let origin = origin_server.addr;
    let client = connect(&edge).await;
    assert!(matches!(client.state(), ConnectionState::Connected { .. }));

    let data = random_bytes(300 * 1024);
    let mut stream = within("dial", client.dial(origin)).await.unwrap();
    stream.write_all(&data).await.unwrap();
    // FIN: the origin reads EOF and only then answers, on the still-open direction.
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    within("answer", stream.read_to_end(&mut answer))
        .await
        .unwrap();
    assert_eq!(&answer[..32], &sha256(&data)[..], "origin saw other bytes");
    assert_eq!(&answer[32..], &pattern(64 * 1024)[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_carries_a_request_and_a_mebibyte_after_half_close() {
    let edge = ClientEdge::start();
    let origin_server = hashing_origin("127.0.0.1:0", 1024 * 1024);
    let origin = origin_server.addr;
    let client = connect(&edge).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let fwd = tokio::spawn(forward_tcp(client.clone(), listener, origin));

    for _ in 0..2 {
        let request = b"GET /version HTTP/1.1\r\nHost: 198.51.100.101\r\n\r\n";
        let mut s = TcpStream::connect(local).await.unwrap();
        s.write_all(request).await.unwrap();
        // The local program shuts its write side; the origin then sends 1 MiB.
        s.shutdown().await.unwrap();
        let mut answer = Vec::new();
        within("forwarded answer", s.read_to_end(&mut answer))
            .await
            .unwrap();
        assert_eq!(&answer[..32], &sha256(request)[..]);
        assert_eq!(answer.len(), 32 + 1024 * 1024, "every byte arrives");
        assert_eq!(sha256(&answer[32..]), sha256(&pattern(1024 * 1024)));
    }
    fwd.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_to_a_refused_destination_closes_the_local_connection() {
    let edge = ClientEdge::start();
    let client = connect(&edge).await;
    // A port with nothing listening.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    match within("dial", client.dial(closed)).await {
        Err(e @ DialError::ConnectRefused { .. }) => {
            assert_eq!(e.to_string(), format!("{closed} refused the connection"))
        }
        other => panic!("expected connect refused, got {other:?}"),
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let fwd = tokio::spawn(forward_tcp(client.clone(), listener, closed));
    // Reset (possibly seen already by connect) or EOF: either way no bytes and the
    // connection is over.
    if let Ok(mut s) = TcpStream::connect(local).await {
        let mut buf = [0u8; 16];
        let n = within("local close", s.read(&mut buf)).await.unwrap_or(0);
        assert_eq!(n, 0);
    }
    fwd.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_maps_resets_both_ways() {
    let edge = ClientEdge::start();
    let client = connect(&edge).await;

    // The origin resets: the local program sees its connection reset.
    let origin = resetting_origin(5).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let fwd = tokio::spawn(forward_tcp(client.clone(), listener, origin));
    let mut s = TcpStream::connect(local).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 16];
    let err = within("local reset", s.read(&mut buf)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    fwd.abort();

    // The local program resets: the origin sees its connection reset.
    let (origin, outcome) = watching_origin().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let fwd = tokio::spawn(forward_tcp(client.clone(), listener, origin));
    let mut s = TcpStream::connect(local).await.unwrap();
    s.write_all(b"abc").await.unwrap();
    // The origin's greeting proves the flow is open end to end; then reset.
    let mut greeting = [0u8; 1];
    within("origin greeting", s.read_exact(&mut greeting))
        .await
        .unwrap();
    assert_eq!(&greeting, b"!");
    s.set_zero_linger().unwrap();
    drop(s);
    let got = within("origin sees the reset", outcome).await.unwrap();
    assert_eq!(got, Err(std::io::ErrorKind::ConnectionReset));
    fwd.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_forward_echoes_for_each_local_peer() {
    let edge = ClientEdge::start();
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let client = connect(&edge).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = sock.local_addr().unwrap();
    let fwd = tokio::spawn(forward_udp(
        client.clone(),
        sock,
        echo_addr,
        Duration::from_secs(5),
    ));
    for peer in 0..2u8 {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.connect(local).await.unwrap();
        let mut buf = [0u8; 2048];
        // The first packets may be dropped while the flow opens; resend until one returns.
        let got = within("udp echo", async {
            loop {
                s.send(&[peer, 1, 2, 3]).await.unwrap();
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await
                {
                    break buf[..n].to_vec();
                }
            }
        })
        .await;
        assert_eq!(got, vec![peer, 1, 2, 3]);
    }
    fwd.abort();
}

// ----- SOCKS5 -------------------------------------------------------------------------

async fn socks_proxy(client: Arc<Client>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = serve_socks(client, listener).await;
    });
    (addr, task)
}

async fn echo_through(mut s: TcpStream) {
    let data = random_bytes(40 * 1024);
    s.write_all(&data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("echo", s.read_to_end(&mut back)).await.unwrap();
    assert_eq!(sha256(&back), sha256(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_connects_to_ipv4_ipv6_and_names() {
    let edge = ClientEdge::start();
    let client = connect(&edge).await;
    let (proxy, task) = socks_proxy(client).await;

    let v4_server = Origin::echo("127.0.0.1:0");
    let v4 = v4_server.addr;
    let (s, code) = socks_connect(proxy, &encode(v4)).await;
    assert_eq!(code, 0);
    echo_through(s).await;

    // By name: the proxy resolves `localhost` with the system resolver.
    let mut name = vec![3, 9];
    name.extend_from_slice(b"localhost");
    name.extend_from_slice(&v4.port().to_be_bytes());
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(("localhost", v4.port()))
        .await
        .unwrap()
        .collect();
    if resolved.first().is_some_and(|a| a.is_ipv4()) {
        let (s, code) = socks_connect(proxy, &name).await;
        assert_eq!(code, 0);
        echo_through(s).await;
    } else {
        eprintln!("SKIPPED: localhost resolves to {resolved:?} first, not 127.0.0.1");
    }

    match TcpListener::bind("[::1]:0").await {
        Ok(l) => {
            drop(l);
            let v6_server = Origin::echo("[::1]:0");
            let v6 = v6_server.addr;
            let (s, code) = socks_connect(proxy, &encode(v6)).await;
            assert_eq!(code, 0);
            echo_through(s).await;
        }
        Err(e) => eprintln!("SKIPPED: IPv6 CONNECT, ::1 is not available here ({e})"),
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_maps_every_edge_status_to_its_reply_code() {
    let edge = ClientEdge::start();
    let client = connect(&edge).await;
    let (proxy, task) = socks_proxy(client.clone()).await;
    let dest = encode("198.51.100.101:443".parse().unwrap());
    let cases = [
        (FlowStatusCode::NoRoute, ReplyCode::NetworkUnreachable),
        (FlowStatusCode::NoConnector, ReplyCode::NetworkUnreachable),
        (FlowStatusCode::Denied, ReplyCode::NotAllowed),
        (FlowStatusCode::Unreachable, ReplyCode::HostUnreachable),
        (FlowStatusCode::ConnectRefused, ReplyCode::ConnectionRefused),
        (FlowStatusCode::Timeout, ReplyCode::TtlExpired),
        (FlowStatusCode::TooManyFlows, ReplyCode::GeneralFailure),
        (FlowStatusCode::Internal, ReplyCode::GeneralFailure),
    ];
    for (status, reply) in cases {
        edge.set_answer(Answer::Refuse(FlowStatus::new(status, "rule-x")));
        let (mut s, code) = socks_connect(proxy, &dest).await;
        assert_eq!(code, reply.to_u8(), "status {status:?}");
        let mut rest = Vec::new();
        within("close after error reply", s.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(rest.is_empty());
    }
    // The denial names the rule for a person using dial directly.
    edge.set_answer(Answer::Refuse(FlowStatus::denied("block-prod")));
    let err = client
        .dial("198.51.100.101:443".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "flow to 198.51.100.101:443 denied by rule block-prod"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_answers_malformed_handshakes_with_a_clean_close() {
    let edge = ClientEdge::start();
    let client = connect(&edge).await;
    let (proxy, task) = socks_proxy(client).await;
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("socks4", vec![4, 1, 0, 80, 127, 0, 0, 1, 0], vec![]),
        ("http", b"GET / HTTP/1.1\r\n\r\n".to_vec(), vec![]),
        ("no methods", vec![5, 0], vec![]),
        ("only user/pass", vec![5, 1, 2], vec![5, 0xFF]),
        (
            "bad address type",
            vec![5, 1, 0, 5, 1, 0, 9, 1],
            vec![5, 0, 5, 8],
        ),
        (
            "reserved byte",
            vec![5, 1, 0, 5, 1, 1, 1, 127, 0, 0, 1, 0, 80],
            vec![5, 0, 5, 1],
        ),
        (
            "empty name",
            vec![5, 1, 0, 5, 1, 0, 3, 0, 0, 80],
            vec![5, 0, 5, 1],
        ),
        (
            "bind",
            vec![5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80],
            vec![5, 0, 5, 7],
        ),
        (
            "udp associate",
            vec![5, 1, 0, 5, 3, 0, 1, 127, 0, 0, 1, 0, 80],
            vec![5, 0, 5, 7],
        ),
        (
            "truncated then closed",
            vec![5, 1, 0, 5, 1, 0, 4, 0, 0],
            vec![5, 0],
        ),
    ];
    for (what, send, expect_prefix) in cases {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(&send).await.unwrap();
        if what == "truncated then closed" {
            s.shutdown().await.unwrap();
        }
        let mut got = Vec::new();
        // Reset or EOF both count as a clean close; what matters is that it closes.
        let _ = within(what, s.read_to_end(&mut got)).await;
        assert!(
            got.starts_with(&expect_prefix),
            "{what}: got {got:?}, expected it to start with {expect_prefix:?}"
        );
    }
    // The proxy still serves a good request afterwards.
    let echo_server = Origin::echo("127.0.0.1:0");
    let echo = echo_server.addr;
    let (s, code) = socks_connect(proxy, &encode(echo)).await;
    assert_eq!(code, 0);
    echo_through(s).await;
    task.abort();
}

// ----- posture, routes, reconnects ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posture_checks_are_reported_to_the_edge() {
    let mut edge = ClientEdge::start();
    let dir = std::env::temp_dir();
    let mut options = client_options();
    options.posture = vec![
        PostureSpec::parse(&format!("file:tmp_exists={}", dir.display())).unwrap(),
        PostureSpec::parse("file:disk_encrypted=/nonexistent/zt-test").unwrap(),
        PostureSpec::parse("command:ok=true").unwrap(),
    ];
    let _client = Client::connect(&edge.credentials(), options).await.unwrap();
    let report = within("posture report", edge.posture.recv()).await.unwrap();
    let got: Vec<(String, bool)> = report
        .checks
        .into_iter()
        .map(|c| (c.name, c.passed))
        .collect();
    assert_eq!(
        got,
        vec![
            ("tmp_exists".to_owned(), true),
            ("disk_encrypted".to_owned(), false),
            ("ok".to_owned(), true),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_pushes_are_observed_and_the_vnet_is_claimed() {
    let edge = ClientEdge::start();
    let mut options = client_options();
    options.vnet = Some("staging".into());
    let client = Client::connect(&edge.credentials(), options).await.unwrap();
    let link = within("registration seen", edge.wait_link()).await;
    assert_eq!(link.claim().vnet, "staging");
    let mut routes = client.routes();
    assert!(routes.borrow().is_none());
    let push = zt_proto::RoutePush {
        generation: 3,
        vnet: "staging".into(),
        routes: vec![
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8::/64".parse().unwrap(),
        ],
    };
    link.push_routes(push.clone()).await.unwrap();
    within("route push", routes.wait_for(|r| r.is_some()))
        .await
        .unwrap();
    assert_eq!(routes.borrow().as_ref(), Some(&push));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_dial_succeeds_after_the_edge_restarts() {
    let mut edge = ClientEdge::start();
    let origin_server = Origin::echo("127.0.0.1:0");
    let origin = origin_server.addr;
    let client = connect(&edge).await;
    echo_via_dial(&client, origin).await;

    edge.restart().await;
    let started = Instant::now();
    // The dial waits for the reconnect (up to the connection wait) and then succeeds.
    let stream = within("dial after restart", async {
        loop {
            match client.dial(origin).await {
                Ok(s) => break s,
                Err(e) => eprintln!("dial during reconnect: {e}"),
            }
        }
    })
    .await;
    eprintln!(
        "first flow after the edge restart opened in {:?}",
        started.elapsed()
    );
    drop(stream);
    echo_via_dial(&client, origin).await;
    assert!(matches!(client.state(), ConnectionState::Connected { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_away_moves_new_flows_to_a_new_connection() {
    let edge = ClientEdge::start();
    let origin_server = Origin::echo("127.0.0.1:0");
    let origin = origin_server.addr;
    let client = connect(&edge).await;
    let first = within("registration seen", edge.wait_link()).await;
    // A flow open across the go-away keeps working on the old connection.
    let mut old_flow = client.dial(origin).await.unwrap();
    first
        .go_away(Duration::from_secs(30), "max session lifetime")
        .await
        .unwrap();
    let started = Instant::now();
    within("second registration", async {
        while edge.links.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    echo_via_dial(&client, origin).await;
    eprintln!("new connection after go-away in {:?}", started.elapsed());
    old_flow.write_all(b"still here").await.unwrap();
    old_flow.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("old flow", old_flow.read_to_end(&mut back))
        .await
        .unwrap();
    assert_eq!(back, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_while_the_edge_is_down_fails_with_a_clear_error() {
    let mut edge = ClientEdge::start();
    let mut options = client_options();
    options.connection_wait = Duration::from_millis(500);
    let client = Client::connect(&edge.credentials(), options).await.unwrap();
    edge.stop().await;
    within("lost", async {
        while matches!(client.state(), ConnectionState::Connected { .. }) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let err = client
        .dial("198.51.100.101:443".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, DialError::NotConnected { .. }),
        "unexpected {err:?}"
    );
    assert!(
        err.to_string().starts_with("not connected to the edge"),
        "{err}"
    );
    client.shutdown();
    assert!(matches!(
        client.dial("198.51.100.101:443".parse().unwrap()).await,
        Err(DialError::Shutdown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_device_is_refused_at_connect() {
    let edge = ClientEdge::start();
    let mut creds = edge.credentials();
    creds.device_id = uuid::Uuid::new_v4();
    match Client::connect(&creds, client_options()).await {
        Err(ConnectError::Refused { .. }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn echo_via_dial(client: &Client, origin: SocketAddr) {
    let mut s = within("dial", client.dial(origin)).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("echo", s.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"ping");
}
