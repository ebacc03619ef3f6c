//! The client's transports against the real edge: `tcp` forced, and `auto` on a path that
//! drops UDP (a userspace UDP relay in blackhole mode, with the edge's TCP listener
//! forwarded on the same port number): TCP within the head start, back to QUIC when UDP
//! passes again (flows already on TCP finish there), to TCP again when UDP is blocked.
//! Times are printed, never asserted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zt_client::*;
use zt_creds::DeviceCredentials;
use zt_testkit::data::{random_bytes, sha256};
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

/// Forwards TCP connections at `listener` to `to`.
fn tcp_forward(listener: TcpListener, to: SocketAddr) {
    tokio::spawn(async move {
        while let Ok((mut a, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut b) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
        }
    });
}

/// An echo round trip of `len` random bytes, hash-checked.
async fn echo(stream: &mut ClientStream, len: usize) {
    let msg = random_bytes(len);
    let (mut r, mut w) = tokio::io::split(stream);
    let send = async {
        w.write_all(&msg).await.unwrap();
    };
    let recv = async {
        let mut back = vec![0u8; len];
        r.read_exact(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::join!(send, recv);
    assert_eq!(sha256(&back), sha256(&msg), "the echo came back changed");
}

fn transports(client: &Client) -> Vec<String> {
    client
        .connections()
        .into_iter()
        .map(|m| m.placement.transport.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_forced_carries_flows_over_the_edges_tcp_listener() {
    let lb = Loopback::start(|_| {}, &["127.0.0.0/8"], vec![allow_all()]).await;
    assert_eq!(lb.edge.tcp_addrs()[0].port(), lb.edge.local_addr().port());
    let origin = Origin::echo("127.0.0.1:0");
    let mut options = client_options();
    options.protocol = EdgeProtocol::Tcp;
    let edge = format!("127.0.0.1:{}", lb.edge.local_addr().port());
    let started = Instant::now();
    let client = within(
        "client connect over TCP",
        Client::connect(&credentials(&lb, vec![edge]), options),
    )
    .await
    .unwrap();
    println!("connected over TCP in {:?}", started.elapsed());
    assert_eq!(transports(&client), ["tcp"]);
    let mut s = within("dial", client.dial(origin.addr)).await.unwrap();
    echo(&mut s, 1024 * 1024).await;
    // The edge's live view names the transport of the connector's connection (QUIC here).
    let conns = lb.edge.live_view().tunnel_connections(lb.records.tunnel.id);
    assert_eq!(conns[0].transport, "quic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_tcp_when_udp_is_dropped_and_moves_new_flows_back_to_quic() {
    let lb = Loopback::start(|_| {}, &["127.0.0.0/8"], vec![allow_all()]).await;
    let origin = Origin::echo("127.0.0.1:0");
    // One port number for both: UDP through a relay that can drop everything, TCP
    // forwarded to the edge's TCP listener.
    let path = Impair::start("udp-path", lb.edge.local_addr());
    let tcp = TcpListener::bind(SocketAddr::new(path.addr.ip(), path.addr.port()))
        .await
        .expect("the relay's port number is free for TCP");
    tcp_forward(tcp, lb.edge.tcp_addrs()[0]);
    path.blackhole(true);

    let mut options = client_options();
    assert_eq!(options.protocol, EdgeProtocol::Auto, "auto is the default");
    options.quic_probe_interval = Duration::from_millis(500);
    options.transport.idle_timeout = Duration::from_secs(2);
    options.transport.keep_alive_interval = Duration::from_millis(500);
    let started = Instant::now();
    let client = within(
        "client connect with UDP dropped",
        Client::connect(&credentials(&lb, vec![path.addr.to_string()]), options),
    )
    .await
    .unwrap();
    let fallback = started.elapsed();
    assert_eq!(transports(&client), ["tcp"]);
    let mut on_tcp = within("dial over TCP", client.dial(origin.addr))
        .await
        .unwrap();
    echo(&mut on_tcp, 64 * 1024).await;
    println!(
        "UDP dropped: connected over TCP in {fallback:?}, first answer after {:?}",
        started.elapsed()
    );

    // UDP passes again: the probe registers over QUIC and new flows go there.
    let unblocked = Instant::now();
    path.blackhole(false);
    wait_for("the connection moved to QUIC", || {
        transports(&client) == ["quic"]
    })
    .await;
    println!(
        "UDP back: new flows on QUIC after {:?}",
        unblocked.elapsed()
    );
    let mut on_quic = within("dial over QUIC", client.dial(origin.addr))
        .await
        .unwrap();
    echo(&mut on_quic, 256 * 1024).await;
    // The flow that started on TCP still runs there, nothing lost.
    echo(&mut on_tcp, 256 * 1024).await;
    drop(on_tcp);

    // UDP dropped again: the QUIC connection times out and the slot comes back over TCP.
    let blocked = Instant::now();
    path.blackhole(true);
    wait_for("the connection is back on TCP", || {
        transports(&client) == ["tcp"]
    })
    .await;
    println!(
        "UDP dropped again: new flows on TCP after {:?}",
        blocked.elapsed()
    );
    let mut again = within("dial over TCP again", client.dial(origin.addr))
        .await
        .unwrap();
    echo(&mut again, 256 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_takes_a_refusal_as_final_and_does_not_fall_back() {
    let lb = Loopback::start(|_| {}, &["127.0.0.0/8"], vec![allow_all()]).await;
    let mut creds = credentials(
        &lb,
        vec![format!("127.0.0.1:{}", lb.edge.local_addr().port())],
    );
    creds.auth = zt_creds::DeviceAuth::Secret(zt_creds::TunnelSecret::generate());
    let err = within("refused connect", Client::connect(&creds, client_options()))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Refused { .. }), "{err}");
    // The refusal was audited; the connect ended with it instead of trying TCP after it
    // (a TCP attempt already racing when QUIC's refusal came is dropped unfinished).
    wait_for("the refusal audited", || {
        !lb.audit_lines("auth_refusal").is_empty()
    })
    .await;
    println!("refusals audited: {}", lb.audit_lines("auth_refusal").len());
}

/// A Debian tinyproxy started for the test: CONNECT only to `connect_port`, basic
/// authentication `alice` / `s3cret`. Killed when dropped.
struct Tinyproxy {
    addr: SocketAddr,
    log: std::path::PathBuf,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    async fn start(connect_port: u16) -> Option<Tinyproxy> {
        if std::process::Command::new("tinyproxy")
            .arg("-v")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: tinyproxy is not installed (apt-get install tinyproxy)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nAllow 127.0.0.1\n\
                 ConnectPort {connect_port}\nBasicAuth alice s3cret\nLogLevel Connect\n"
            ),
        )
        .unwrap();
        let log = dir.path().join("tinyproxy.out");
        let out = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "tinyproxy never listened"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(Tinyproxy {
            addr,
            log,
            _child: child,
            _dir: dir,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_goes_through_a_real_http_connect_proxy_when_udp_is_dropped() {
    let lb = Loopback::start(|_| {}, &["127.0.0.0/8"], vec![allow_all()]).await;
    let origin = Origin::echo("127.0.0.1:0");
    let path = Impair::start("udp-path", lb.edge.local_addr());
    let tcp = TcpListener::bind(SocketAddr::new(path.addr.ip(), path.addr.port()))
        .await
        .expect("the relay's port number is free for TCP");
    tcp_forward(tcp, lb.edge.tcp_addrs()[0]);
    path.blackhole(true);
    let Some(proxy) = Tinyproxy::start(path.addr.port()).await else {
        return;
    };

    // Wrong password: a clear refusal that never repeats the password.
    let mut options = client_options();
    options.protocol = EdgeProtocol::Tcp;
    options.proxy =
        Some(HttpProxy::parse(&format!("http://alice:wrongpass@{}", proxy.addr)).unwrap());
    let err = within(
        "connect with a wrong proxy password",
        Client::connect(&credentials(&lb, vec![path.addr.to_string()]), options),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    println!("wrong proxy password: {text}");
    assert!(text.contains("407") || text.contains("401"), "{text}");
    assert!(!text.contains("wrongpass"), "{text}");

    let mut options = client_options();
    options.proxy = Some(HttpProxy::parse(&format!("http://alice:s3cret@{}", proxy.addr)).unwrap());
    let started = Instant::now();
    let client = within(
        "client connect through the proxy",
        Client::connect(&credentials(&lb, vec![path.addr.to_string()]), options),
    )
    .await
    .unwrap();
    assert_eq!(transports(&client), ["tcp"]);
    let mut s = within("dial", client.dial(origin.addr)).await.unwrap();
    echo(&mut s, 512 * 1024).await;
    println!(
        "through tinyproxy with UDP dropped: first answer after {:?}",
        started.elapsed()
    );
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(
        log.contains(&format!("127.0.0.1:{}", path.addr.port())) || log.contains("CONNECT"),
        "tinyproxy saw no CONNECT: {log}"
    );
}
