//! The whole path on loopback, in one process, for the full-path benchmarks.
//!
//! [`PathRig::start`] brings up an edge on a temporary state directory, writes a tunnel, a
//! route to 127.0.0.1/32, an IP list, an l4 allow rule and an http `off` rule (as the seed
//! has for the Kubernetes API, so the edge does not wait for first bytes) and a user with a
//! device into the edge's database, then starts one connector (with its default HA
//! connections) and a client, and waits until all of them are registered. The origin servers
//! ([`echo_server`], [`sink_server`]) and the plain relay ([`tcp_relay`]) are plain tokio TCP
//! servers so that the same origins serve the zt path and the baselines.
//!
//! Everything runs on the caller's tokio runtime; call [`PathRig::start`] inside
//! `Runtime::block_on` and keep the runtime alive for as long as the rig.

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use zt_client::{Client, ClientOptions};
use zt_connector::{Connector, ConnectorConfig, ConnectorHandle};
use zt_creds::{DeviceCredentials, ExistingFile, TunnelCredentials, TunnelSecret};
use zt_edge::{Device, Edge, EdgeConfig, EdgeHandle, List, ListKind, Route, Rule, Tunnel, User};

/// Error type of the rig's set-up: benchmarks only report it.
pub type SetupError = Box<dyn Error + Send + Sync>;

/// Bound on every wait during set-up; reached only when something is broken.
const WAIT: Duration = Duration::from_secs(30);

/// Chunk size of the bulk writers: large enough that per-write overhead is noise.
pub const CHUNK: usize = 64 * 1024;

/// Edge, one connector, one client and the origin servers, all on loopback.
#[derive(Debug)]
pub struct PathRig {
    edge: Option<EdgeHandle>,
    connector: Option<ConnectorHandle>,
    /// The client, shared by every flow of a benchmark (one QUIC connection to the edge).
    pub client: Arc<Client>,
    /// Origin that echoes every byte back and closes its write side at the caller's FIN.
    pub echo: SocketAddr,
    /// Origin that discards everything and answers one byte after the caller's FIN.
    pub sink: SocketAddr,
    /// Plain single-hop TCP relay (tokio `copy_bidirectional`) to [`PathRig::echo`].
    pub relay_echo: SocketAddr,
    /// Plain single-hop TCP relay to [`PathRig::sink`].
    pub relay_sink: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    device: DeviceCredentials,
    _dir: tempfile::TempDir,
}

/// An edge on `dir` with the benchmark's records written, and what the connector and the
/// client need to reach it.
#[derive(Debug)]
pub struct ProvisionedEdge {
    /// The running edge.
    pub edge: EdgeHandle,
    /// The connector's `config.yaml` (next to its credentials file), pointing at the edge.
    pub connector_config: PathBuf,
    /// The client's device credentials.
    pub device: DeviceCredentials,
}

/// The transport settings every hop of the benchmark rigs uses: zt's defaults, or what
/// the environment asks for trials (`ZT_BENCH_STREAM_WINDOW_KIB`, `ZT_BENCH_SEND_WINDOW_KIB`,
/// `ZT_BENCH_CC`: `bbr`, `cubic` or `newreno`; `ZT_BENCH_MTU`: the path MTU discovery
/// bound), so a trial runs without a rebuild.
pub fn bench_transport() -> zt_proto::TransportSettings {
    let mut t = zt_proto::TransportSettings::default();
    let kib = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    if let Some(w) = kib("ZT_BENCH_STREAM_WINDOW_KIB") {
        t.set_stream_receive_window(w);
    }
    if let Some(w) = kib("ZT_BENCH_SEND_WINDOW_KIB") {
        t.send_window = w;
    }
    if let Some(m) = std::env::var("ZT_BENCH_MTU")
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
    {
        t.mtu_upper_bound = m;
    }
    match std::env::var("ZT_BENCH_CC").as_deref() {
        Ok("cubic") => t.congestion = zt_proto::Congestion::Cubic,
        Ok("newreno") => t.congestion = zt_proto::Congestion::NewReno,
        Ok("bbr") => t.congestion = zt_proto::Congestion::Bbr,
        _ => {}
    }
    t
}

/// Starts an edge whose state lives under `dir`, writes the tunnel, route, list, rules,
/// user and device, waits until the edge applied them, and writes the connector's
/// configuration and credentials files under `dir/connector`.
pub async fn start_edge(dir: &Path) -> Result<ProvisionedEdge, SetupError> {
    start_edge_with(dir, |_| {}).await
}

/// [`start_edge`], with `configure` changing the edge's configuration first (a store, a
/// peering listener).
pub async fn start_edge_with(
    dir: &Path,
    configure: impl FnOnce(&mut EdgeConfig),
) -> Result<ProvisionedEdge, SetupError> {
    let mut config = EdgeConfig::new(dir.join("edge"));
    config.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.admin = None;
    config.edge_name = "zt-bench-edge".to_owned();
    config.shutdown_grace = Duration::from_millis(200);
    config.transport = bench_transport();
    configure(&mut config);
    let edge = Edge::start(config).await?;
    let state = Arc::clone(edge.state());

    let secret = TunnelSecret::generate();
    let tunnel = Tunnel::new("bench", state.account_tag(), &secret);
    let list = List::new("origins", ListKind::Ip, vec!["127.0.0.1/32".to_owned()]);
    let list_ref = format!("${}", list.id.simple());
    let mut l4 = Rule::new("allow origins", 100, "allow", vec!["l4".to_owned()]);
    l4.traffic = Some(format!("net.dst.ip in {list_ref}"));
    let mut off = Rule::new(
        "do not inspect origins",
        10000,
        "off",
        vec!["http".to_owned()],
    );
    off.traffic = Some(format!("any(http.conn.dst_ip[*] in {list_ref})"));
    let user = User::new("bench@example.com", vec!["bench".to_owned()]);
    let device_secret = TunnelSecret::generate();
    let device = Device::new(user.id, "bench", &device_secret);
    let db = state.db();
    let vnet = db
        .read()?
        .default_vnet()?
        .ok_or("the edge has no default virtual network")?
        .id;
    let route = Route::new("127.0.0.1/32".parse()?, vnet, tunnel.id);
    let ((), revision) = db.update(|txn| {
        txn.put(&tunnel)?;
        txn.put(&route)?;
        txn.put(&list)?;
        txn.put(&l4)?;
        txn.put(&off)?;
        txn.put(&user)?;
        txn.put(&device)?;
        Ok::<_, zt_edge::StoreError>(())
    })?;
    tokio::time::timeout(WAIT, edge.wait_applied(revision)).await?;

    // The connector reads its configuration as the seed's Deployment gives it: a
    // config.yaml and a credentials file.
    let conf_dir = dir.join("connector");
    std::fs::create_dir(&conf_dir)?;
    let creds_path = conf_dir.join("creds.json");
    TunnelCredentials {
        account_tag: tunnel.account_tag.clone(),
        tunnel_id: tunnel.id,
        tunnel_name: Some(tunnel.name.clone()),
        secret,
        endpoint: None,
    }
    .write(&creds_path, ExistingFile::Refuse)?;
    let connector_config = conf_dir.join("config.yaml");
    std::fs::write(
        &connector_config,
        format!(
            "tunnel: {}\ncredentials-file: {}\nwarp-routing:\n    enabled: true\nedge: {}\ncacert: {}\n",
            tunnel.id,
            serde_json::to_string(&creds_path)?,
            edge.local_addr(),
            serde_json::to_string(&state.ca_pem_path())?,
        ),
    )?;
    let device = DeviceCredentials {
        device_id: device.id,
        user_email: user.email.clone(),
        auth: zt_creds::DeviceAuth::Secret(device_secret),
        edge: vec![edge.local_addr().to_string()],
        ca_fingerprint: state.ca_fingerprint().parse()?,
        default_vnet: Some(vnet),
        identity_provider: None,
        service_token: None,
    };
    Ok(ProvisionedEdge {
        edge,
        connector_config,
        device,
    })
}

/// Starts a connector from `config_path` and waits until all its HA connections are
/// registered.
pub async fn start_connector(config_path: &Path) -> Result<ConnectorHandle, SetupError> {
    let mut config = ConnectorConfig::load(config_path)?;
    let credentials = config.load_credentials()?;
    let ha = u64::from(config.ha_connections);
    let connector = Connector::start_with(config, credentials, bench_transport()).await?;
    let deadline = Instant::now() + WAIT;
    while connector.ready_connections() < ha {
        if Instant::now() > deadline {
            return Err("the connector did not register its HA connections".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(connector)
}

/// One flow end to end through `client` to the echo origin `echo`: proves the route,
/// the policy and the connector before any timing starts.
pub async fn check_path(client: &Client, echo: SocketAddr) -> Result<(), SetupError> {
    let mut s = client.dial(echo).await?;
    s.write_all(b"x").await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    if b != *b"x" {
        return Err("the echo origin answered another byte through the path".into());
    }
    Ok(())
}

impl PathRig {
    /// Starts everything and returns once the connector's HA connections and the client
    /// are registered at the edge and the policy is applied.
    pub async fn start() -> Result<Self, SetupError> {
        let dir = tempfile::Builder::new().prefix("zt-bench-path").tempdir()?;
        let mut tasks = Vec::new();

        let (echo, t) = echo_server().await?;
        tasks.push(t);
        let (sink, t) = sink_server().await?;
        tasks.push(t);
        let (relay_echo, t) = tcp_relay(echo).await?;
        tasks.push(t);
        let (relay_sink, t) = tcp_relay(sink).await?;
        tasks.push(t);

        let provisioned = start_edge(dir.path()).await?;
        let connector = start_connector(&provisioned.connector_config).await?;
        let options = ClientOptions {
            transport: bench_transport(),
            ..ClientOptions::default()
        };
        let client = Arc::new(Client::connect(&provisioned.device, options).await?);
        check_path(&client, echo).await?;
        Ok(Self {
            edge: Some(provisioned.edge),
            connector: Some(connector),
            client,
            echo,
            sink,
            relay_echo,
            relay_sink,
            tasks,
            device: provisioned.device,
            _dir: dir,
        })
    }

    /// The edge's QUIC address.
    pub fn edge_addr(&self) -> Option<SocketAddr> {
        self.edge.as_ref().map(EdgeHandle::local_addr)
    }

    /// Another client of the same device, reaching the edge at `edge` (say, through an
    /// impairment relay) with `transport`, its path checked.
    pub async fn client_via(
        &self,
        edge: SocketAddr,
        transport: zt_proto::TransportSettings,
    ) -> Result<Client, SetupError> {
        let options = ClientOptions {
            edges: Some(vec![edge.to_string()]),
            transport,
            ..ClientOptions::default()
        };
        let client = Client::connect(&self.device, options).await?;
        check_path(&client, self.echo).await?;
        Ok(client)
    }

    /// Stops the client, the connector and the edge, and the origin tasks.
    pub async fn stop(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.client.shutdown();
        if let Some(c) = self.connector.take() {
            c.shutdown().await;
        }
        if let Some(e) = self.edge.take() {
            e.shutdown().await;
        }
    }
}

/// Accepts connections forever, running `serve` on each in its own task.
async fn serve_each<F, Fut>(serve: F) -> Result<(SocketAddr, JoinHandle<()>), SetupError>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream));
        }
    });
    Ok((addr, task))
}

/// An origin that writes back whatever it reads; at the caller's FIN it sends its own.
pub async fn echo_server() -> Result<(SocketAddr, JoinHandle<()>), SetupError> {
    serve_each(|mut s: TcpStream| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// An origin that reads to the caller's FIN, then answers one byte and closes: the byte
/// tells a bulk writer that everything arrived.
pub async fn sink_server() -> Result<(SocketAddr, JoinHandle<()>), SetupError> {
    serve_each(|mut s: TcpStream| async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        let _ = s.write_all(b"k").await;
        let _ = s.shutdown().await;
    })
    .await
}

/// A plain single-hop TCP relay to `target` (tokio's `copy_bidirectional`): the baseline a
/// tunnel is compared with.
pub async fn tcp_relay(target: SocketAddr) -> Result<(SocketAddr, JoinHandle<()>), SetupError> {
    serve_each(move |mut inbound: TcpStream| async move {
        if let Ok(mut outbound) = TcpStream::connect(target).await {
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        }
    })
    .await
}
