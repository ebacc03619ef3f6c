//! TUN mode against SOCKS mode, same client, same edge, same run: bulk throughput and
//! flow set-up latency (connect + 1-byte echo) to an origin behind the edge.
//!
//! It needs root, `/dev/net/tun` and network namespaces: two namespaces joined by a veth
//! pair, "cluster" (origins on 198.51.100.1, the edge on its veth address, a connector)
//! and "laptop" (the client with its TUN device and a SOCKS5 listener, and the bench's own
//! sockets). The cluster side runs on a thread that joined its namespace; the bench's main
//! thread joins the laptop namespace before it starts its runtime. Without the privilege
//! it prints a SKIPPED line and measures nothing.
//!
//! ```sh
//! cargo bench -p zt-benches --bench tun
//! ```
//!
//! `ZT_BENCH_TUN_BYTES` sets the bulk size (default 16 MiB); `ZT_BENCH_SETUP_SAMPLES`
//! the flows timed alone for p50/p99 (default 500); `ZT_BENCH_TUN_MTU` the device MTU
//! (default 1500).
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use zt_client::tun::{TunCapture, TunOptions};
use zt_client::{Client, ClientOptions};
use zt_creds::{DeviceCredentials, ExistingFile, TunnelCredentials, TunnelSecret};
use zt_edge::{Device, Edge, EdgeConfig, List, ListKind, Route, Rule, ServerNames, Tunnel, User};

const ORIGIN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const EDGE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const LAPTOP_IP: &str = "198.18.2.2/30";
const CHUNK: usize = 64 * 1024;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Why the bench cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Some("not running as root".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun does not exist".into());
    }
    let probe = format!("ztbenchprobe{}", std::process::id());
    if !Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("cannot create network namespaces (or the ip tool is missing)".into());
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    None
}

/// Joins the calling thread to network namespace `name` (threads it starts later inherit it).
fn enter(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

/// The namespaces, deleted on drop.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// What the cluster thread hands the laptop side.
struct Cluster {
    echo: SocketAddr,
    sink: SocketAddr,
    device: DeviceCredentials,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

async fn serve_each<F, Fut>(port_of: Ipv4Addr, serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind((port_of, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// Origins, edge and connector inside `ns`, on a thread of their own.
fn start_cluster(ns: String) -> Cluster {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        enter(&ns);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let echo = serve_each(ORIGIN, |mut s| async move {
                let mut b = vec![0u8; CHUNK];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 || s.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = s.shutdown().await;
            })
            .await;
            let sink = serve_each(ORIGIN, |mut s| async move {
                let mut b = vec![0u8; CHUNK];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = s.write_all(b"k").await;
                let _ = s.shutdown().await;
            })
            .await;
            let dir = tempfile::Builder::new().prefix("zt-bench-tun").tempdir().unwrap();
            let mut config = EdgeConfig::new(dir.path().join("edge"));
            config.listen = SocketAddr::from((EDGE_IP, 0));
            config.admin = None;
            config.server_names = Some(ServerNames {
                dns: vec!["localhost".into()],
                ips: vec![IpAddr::V4(EDGE_IP)],
            });
            config.edge_name = "zt-bench-tun-edge".into();
            config.shutdown_grace = Duration::from_millis(200);
            let edge = Edge::start(config).await.unwrap();
            let state = Arc::clone(edge.state());
            let secret = TunnelSecret::generate();
            let tunnel = Tunnel::new("bench", state.account_tag(), &secret);
            let list = List::new("origins", ListKind::Ip, vec!["198.51.100.0/24".into()]);
            let mut rule = Rule::new("allow origins", 100, "allow", vec!["l4".into()]);
            rule.traffic = Some(format!("net.dst.ip in ${}", list.id.simple()));
            let user = User::new("bench@example.com", vec!["bench".into()]);
            let device_secret = TunnelSecret::generate();
            let device = Device::new(user.id, "bench", &device_secret);
            let db = state.db();
            let vnet = db.read().unwrap().default_vnet().unwrap().unwrap().id;
            let route = Route::new("198.51.100.0/24".parse().unwrap(), vnet, tunnel.id);
            let ((), revision) = db
                .update(|txn| {
                    txn.put(&tunnel)?;
                    txn.put(&route)?;
                    txn.put(&list)?;
                    txn.put(&rule)?;
                    txn.put(&user)?;
                    txn.put(&device)?;
                    Ok::<_, zt_edge::StoreError>(())
                })
                .unwrap();
            edge.wait_applied(revision).await;
            let creds_path = dir.path().join("creds.json");
            TunnelCredentials {
                account_tag: tunnel.account_tag.clone(),
                tunnel_id: tunnel.id,
                tunnel_name: Some(tunnel.name.clone()),
                secret,
                endpoint: None,
            }
            .write(&creds_path, ExistingFile::Refuse)
            .unwrap();
            let connector_config = dir.path().join("connector.yaml");
            std::fs::write(
                &connector_config,
                format!(
                    "tunnel: {}\ncredentials-file: {}\nwarp-routing:\n    enabled: true\nedge: {}\ncacert: {}\n",
                    tunnel.id,
                    serde_json::to_string(&creds_path).unwrap(),
                    edge.local_addr(),
                    serde_json::to_string(&state.ca_pem_path()).unwrap(),
                ),
            )
            .unwrap();
            let connector = zt_benches::path::start_connector(&connector_config)
                .await
                .unwrap();
            let device = DeviceCredentials {
                device_id: device.id,
                user_email: user.email.clone(),
                auth: zt_creds::DeviceAuth::Secret(device_secret),
                edge: vec![edge.local_addr().to_string()],
                ca_fingerprint: state.ca_fingerprint().parse().unwrap(),
                default_vnet: Some(vnet),
                identity_provider: None,
                service_token: None,
            };
            tx.send((echo, sink, device)).unwrap();
            let _ = stopped.await;
            connector.shutdown().await;
            edge.shutdown().await;
            drop(dir);
        });
    });
    let (echo, sink, device) = rx.recv().unwrap();
    Cluster {
        echo,
        sink,
        device,
        stop,
        thread,
    }
}

#[derive(Clone, Copy)]
enum Via {
    Tun,
    Socks(SocketAddr),
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Tun => "tun",
            Via::Socks(_) => "socks",
        }
    }
}

async fn open(via: Via, dest: SocketAddr) -> TcpStream {
    match via {
        Via::Tun => {
            let s = TcpStream::connect(dest).await.unwrap();
            s.set_nodelay(true).unwrap();
            s
        }
        Via::Socks(proxy) => {
            let mut s = TcpStream::connect(proxy).await.unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(&[5, 1, 0]).await.unwrap();
            let mut choice = [0u8; 2];
            s.read_exact(&mut choice).await.unwrap();
            let IpAddr::V4(ip) = dest.ip() else {
                unreachable!("the origins are IPv4")
            };
            let mut req = vec![5, 1, 0, 1];
            req.extend_from_slice(&ip.octets());
            req.extend_from_slice(&dest.port().to_be_bytes());
            s.write_all(&req).await.unwrap();
            let mut reply = [0u8; 10];
            s.read_exact(&mut reply).await.unwrap();
            assert_eq!(reply[1], 0, "SOCKS5 CONNECT refused");
            s
        }
    }
}

async fn bulk_once(via: Via, sink: SocketAddr, bytes: u64) {
    let mut s = open(via, sink).await;
    let buf = vec![0x5au8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..n]).await.unwrap();
        left -= n as u64;
    }
    s.shutdown().await.unwrap();
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await.unwrap();
}

async fn setup_once(via: Via, echo: SocketAddr) {
    let mut s = open(via, echo).await;
    s.write_all(b"p").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    s.shutdown().await.unwrap();
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Some(why) = unavailable() {
        println!("SKIPPED: the tun bench needs root, /dev/net/tun and network namespaces: {why}");
        return;
    }
    let pid = std::process::id();
    let (laptop, cluster) = (format!("ztbL{pid}"), format!("ztbC{pid}"));
    let namespaces = Namespaces(vec![laptop.clone(), cluster.clone()]);
    for n in &namespaces.0 {
        ip(&["netns", "add", n]);
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    let (l_end, c_end) = (format!("ztbl{pid}"), format!("ztbc{pid}"));
    ip(&[
        "link", "add", &l_end, "netns", &laptop, "type", "veth", "peer", "name", &c_end, "netns",
        &cluster,
    ]);
    ip(&["-n", &laptop, "addr", "add", LAPTOP_IP, "dev", &l_end]);
    ip(&["-n", &laptop, "link", "set", &l_end, "up"]);
    ip(&[
        "-n",
        &cluster,
        "addr",
        "add",
        "198.18.2.1/30",
        "dev",
        &c_end,
    ]);
    ip(&["-n", &cluster, "link", "set", &c_end, "up"]);
    ip(&[
        "-n",
        &cluster,
        "addr",
        "add",
        "198.51.100.1/32",
        "dev",
        "lo",
    ]);

    let cl = start_cluster(cluster.clone());
    // From here on this thread, and every thread it starts, is in the laptop namespace.
    enter(&laptop);
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (capture, socks) = rt.block_on(async {
        let client = Arc::new(
            Client::connect(&cl.device, ClientOptions::default())
                .await
                .unwrap(),
        );
        let capture = TunCapture::start(
            client.clone(),
            TunOptions {
                name: format!("ztb{}", pid % 100_000),
                mtu: env_num("ZT_BENCH_TUN_MTU", 1500) as u16,
                ..TunOptions::default()
            },
        )
        .await
        .unwrap();
        let mut routes = capture.routes();
        tokio::time::timeout(Duration::from_secs(30), routes.wait_for(|r| !r.is_empty()))
            .await
            .unwrap()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socks = listener.local_addr().unwrap();
        tokio::spawn(zt_client::serve_socks(client, listener));
        (capture, socks)
    });

    let mut c = Criterion::default().configure_from_args();
    let modes = [Via::Tun, Via::Socks(socks)];
    let bytes = env_num("ZT_BENCH_TUN_BYTES", 16 * 1024 * 1024);
    let mut g = c.benchmark_group("tun/bulk");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    for via in modes {
        g.bench_function(via.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        bulk_once(via, cl.sink, bytes).await;
                    }
                    start.elapsed()
                })
            });
        });
    }
    g.finish();
    let mut g = c.benchmark_group("tun/setup");
    for via in modes {
        g.bench_function(via.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        setup_once(via, cl.echo).await;
                    }
                    start.elapsed()
                })
            });
        });
    }
    g.finish();
    let samples = env_num("ZT_BENCH_SETUP_SAMPLES", 500) as usize;
    for via in modes {
        if samples == 0 {
            break;
        }
        let mut times = rt.block_on(async {
            let mut times = Vec::with_capacity(samples);
            for _ in 0..samples {
                let t = Instant::now();
                setup_once(via, cl.echo).await;
                times.push(t.elapsed());
            }
            times
        });
        times.sort_unstable();
        let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        println!(
            "tun/setup/{} over {samples} flows: p50 {:.1} µs, p99 {:.1} µs",
            via.name(),
            at(0.5).as_secs_f64() * 1e6,
            at(0.99).as_secs_f64() * 1e6
        );
    }
    c.final_summary();

    rt.block_on(async {
        capture.shutdown().await.unwrap();
    });
    drop(rt);
    let _ = cl.stop.send(());
    let _ = cl.thread.join();
    drop(namespaces);
}
