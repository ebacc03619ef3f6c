//! `zt client`: the client on an engineer's device — a port forward or a SOCKS5 proxy into
//! the private network, over a self-healing set of connections to the edge (one unless
//! `--connections` says more).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tracing::{info, warn};
use zt_client::{Client, ClientOptions, EdgeProtocol, EdgeTrust, HttpProxy, PostureSpec};
use zt_creds::{DeviceCredentials, PermissionMode};

/// `zt client` arguments.
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// The device credentials file (default: $HOME/.zt/device.json).
    #[arg(long, value_name = "FILE", global = true)]
    credentials: Option<PathBuf>,

    /// How strictly the credentials file's permissions are checked.
    #[arg(long, value_name = "MODE", default_value = "default", global = true)]
    credentials_permissions: PermissionMode,

    /// The virtual network to use (default: the one in the credentials).
    #[arg(long, value_name = "VNET", global = true)]
    vnet: Option<String>,

    /// A device posture check: file:NAME=PATH, command:NAME=CMD or env:NAME=VAR[=VALUE].
    /// Repeat for several.
    #[arg(long = "posture", value_name = "SPEC", global = true)]
    posture: Vec<PostureSpec>,

    /// Edge address (host:port) to use instead of the credentials' list. Repeat for several.
    #[arg(long = "edge", value_name = "ADDR", global = true)]
    edges: Vec<String>,

    /// Trust the edge through this CA certificate file (PEM or DER) instead of the
    /// fingerprint in the credentials.
    #[arg(long, value_name = "FILE", global = true)]
    edge_ca: Option<PathBuf>,

    /// How many connections to the edge to keep at once (1 to 16): new flows go to the
    /// least loaded, and when one is lost the others carry new flows while it reconnects.
    /// With several --edge addresses, the connections start at different edges.
    #[arg(long, value_name = "N", default_value_t = 1, global = true,
          value_parser = clap::value_parser!(u8).range(1..=16))]
    connections: u8,

    #[command(flatten)]
    transport: TransportArgs,

    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Forward a local port to one private address.
    Forward {
        /// Local address to listen on.
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// The private address every connection goes to.
        #[arg(long, value_name = "ADDR")]
        to: SocketAddr,
        /// Forward UDP instead of TCP (each local peer gets its own flow).
        #[arg(long)]
        udp: bool,
        /// Seconds a UDP peer may stay silent before its flow closes.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        udp_idle: u64,
    },
    /// Run a SOCKS5 proxy (for kubectl: `proxy-url: socks5://127.0.0.1:1080`).
    Socks {
        /// Local address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1080")]
        listen: SocketAddr,
    },
    /// Capture the pushed private routes with a TUN device (Linux; needs CAP_NET_ADMIN):
    /// plain kubectl, curl and the like reach private addresses with no proxy set-up.
    Tun {
        /// The TUN device's name.
        #[arg(long, value_name = "NAME", default_value = "zt0")]
        name: String,
        /// The device MTU; the TCP MSS follows from it.
        #[arg(long, value_name = "N", default_value_t = 1500)]
        mtu: u16,
        /// A resolver whose UDP traffic is carried (it gets a host route). Repeat for several.
        #[arg(long = "dns", value_name = "IP")]
        dns: Vec<std::net::IpAddr>,
    },
}

pub(crate) fn credentials_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let home = std::env::var_os("HOME")
        .context("no --credentials given and $HOME is not set to find ~/.zt/device.json")?;
    Ok(PathBuf::from(home).join(".zt").join("device.json"))
}

pub(crate) fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let path = credentials_path(args.credentials.clone())?;
    let creds = DeviceCredentials::load(&path, args.credentials_permissions)
        .with_context(|| format!("cannot use the device credentials {}", path.display()))?;
    let mut options = ClientOptions {
        vnet: args.vnet.clone(),
        posture: args.posture.clone(),
        connections: usize::from(args.connections),
        protocol: args.transport.protocol,
        ..ClientOptions::default()
    };
    options.proxy = args.transport.proxy()?;
    crate::window::apply(&mut options.transport, args.transport.stream_window);
    crate::mtu::apply(&mut options.transport, args.transport.mtu_upper_bound);
    if !args.edges.is_empty() {
        options.edges = Some(args.edges.clone());
    }
    if let Some(ca) = &args.edge_ca {
        let bytes = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        options.trust = Some(
            EdgeTrust::ca_file_contents(&bytes)
                .with_context(|| format!("cannot use {} as the edge CA", ca.display()))?,
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(creds, options, args.mode))
}

/// A forward or proxy reachable from other machines lends this device's identity to
/// anyone who can reach the port; say so.
fn warn_if_exposed(listen: SocketAddr) {
    if !listen.ip().is_loopback() {
        warn!("listening on {listen}, which is not a loopback address: anyone who can reach it uses this device's access");
    }
}

async fn serve(
    creds: DeviceCredentials,
    options: ClientOptions,
    mode: Mode,
) -> anyhow::Result<ExitCode> {
    // TUN mode waits for the signal itself, to remove its routes before exiting.
    let handles_signals = matches!(mode, Mode::Tun { .. });
    let edges = options.edges.clone().unwrap_or_else(|| creds.edge.clone());
    let client = Arc::new(
        Client::connect(&creds, options)
            .await
            .context("cannot connect to the edge")?,
    );
    if let zt_client::ConnectionState::Connected { edge, edge_name } = client.state() {
        let who = match &creds.service_token {
            Some(name) => format!("service token {name}"),
            None => creds.user_email.clone(),
        };
        info!("connected to edge {edge_name} at {edge} as {who}");
    }
    let work = async {
        match mode {
            Mode::Forward {
                listen,
                to,
                udp: false,
                ..
            } => {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let local = listener.local_addr()?;
                warn_if_exposed(local);
                info!("forwarding TCP {local} -> {to} through the edge; press Ctrl-C to stop");
                zt_client::forward_tcp(client.clone(), listener, to)
                    .await
                    .context("the TCP forward stopped")
            }
            Mode::Forward {
                listen,
                to,
                udp: true,
                udp_idle,
            } => {
                let socket = tokio::net::UdpSocket::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on UDP {listen}"))?;
                let local = socket.local_addr()?;
                warn_if_exposed(local);
                info!("forwarding UDP {local} -> {to} through the edge; press Ctrl-C to stop");
                zt_client::forward_udp(
                    client.clone(),
                    socket,
                    to,
                    Duration::from_secs(udp_idle.max(1)),
                )
                .await
                .context("the UDP forward stopped")
            }
            Mode::Socks { listen } => {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let local = listener.local_addr()?;
                warn_if_exposed(local);
                info!("SOCKS5 proxy listening on {local} (kubeconfig: proxy-url: socks5://{local}); press Ctrl-C to stop");
                zt_client::serve_socks(client.clone(), listener)
                    .await
                    .context("the SOCKS5 proxy stopped")
            }
            Mode::Tun { name, mtu, dns } => tun(client.clone(), &edges, name, mtu, dns).await,
        }
    };
    let result = if handles_signals {
        work.await.map(|()| ExitCode::SUCCESS)
    } else {
        tokio::select! {
        r = work => r.map(|()| ExitCode::SUCCESS),
        signal = stop_signal() => {
            info!("{signal} received; closing the forwarded connections and the edge connection");
            Ok(ExitCode::SUCCESS)
        }
        }
    };
    client.shutdown();
    result
}

/// Waits for Ctrl-C or SIGTERM and names which came.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "Ctrl-C",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the client");
                let _ = tokio::signal::ctrl_c().await;
                "Ctrl-C"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// `zt client tun`: runs the capture until a signal, then removes routes and device.
#[cfg(target_os = "linux")]
async fn tun(
    client: Arc<Client>,
    edges: &[String],
    name: String,
    mtu: u16,
    dns: Vec<std::net::IpAddr>,
) -> anyhow::Result<()> {
    use zt_client::tun::{TunCapture, TunOptions};
    // Every configured edge stays outside the routes, not only the one in use now.
    let mut exclude = Vec::new();
    for edge in edges {
        if let Ok(addrs) = tokio::net::lookup_host(edge.as_str()).await {
            exclude.extend(addrs.map(|a| a.ip()));
        }
    }
    let options = TunOptions {
        name,
        mtu,
        dns,
        exclude,
        ..TunOptions::default()
    };
    let mut capture = TunCapture::start(client, options)
        .await
        .context("cannot start TUN mode")?;
    let mut routes = capture.routes();
    info!(
        "TUN device {} up; routes follow the edge's push; press Ctrl-C to stop",
        capture.name()
    );
    let watch_routes = async {
        loop {
            if routes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let now: Vec<String> = routes.borrow().iter().map(|r| r.to_string()).collect();
            info!("TUN routes now: {}", now.join(" "));
        }
    };
    let signal = tokio::select! {
        r = capture.closed() => return r.context("TUN mode stopped"),
        s = stop_signal() => s,
        () = watch_routes => return Ok(()),
    };
    info!("{signal} received; removing the TUN routes and device");
    capture
        .shutdown()
        .await
        .context("cannot remove the TUN routes cleanly")?;
    info!("TUN routes and device removed");
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn tun(
    _client: Arc<Client>,
    _edges: &[String],
    _name: String,
    _mtu: u16,
    _dns: Vec<std::net::IpAddr>,
) -> anyhow::Result<()> {
    anyhow::bail!("TUN mode is available on Linux only; use forward or socks here")
}

/// How `zt client`, `zt login` and `zt logout` reach the edge.
#[derive(Debug, clap::Args)]
pub(crate) struct TransportArgs {
    /// How to reach the edge: auto (QUIC, with TLS over TCP raced in after 300 ms, for
    /// networks that drop UDP; moves back to QUIC when it works), quic, or tcp.
    #[arg(
        long,
        value_name = "auto|quic|tcp",
        default_value = "auto",
        global = true
    )]
    pub(crate) protocol: EdgeProtocol,

    /// An HTTP CONNECT proxy for the TCP transport, `http://[user:password@]host:port`
    /// (default: $HTTPS_PROXY, then $https_proxy). QUIC never goes through it.
    #[arg(long, value_name = "URL", global = true)]
    pub(crate) proxy: Option<String>,

    /// One flow's receive window on the client's connections (default 256KiB): a
    /// download carries at most window ÷ round trip (about 105 Mbit/s at 20 ms). Raise it
    /// (e.g. 2MiB) for large transfers over a long path.
    #[arg(long, value_name = "SIZE", global = true,
          value_parser = crate::window::parse_stream_window)]
    pub(crate) stream_window: Option<u64>,

    /// The largest UDP payload path MTU discovery probes for toward the edge (default
    /// 1452, a 1500-byte Ethernet path); up to 6550 on a network with jumbo frames.
    #[arg(long, value_name = "BYTES", global = true,
          value_parser = crate::mtu::parse_mtu_upper_bound)]
    pub(crate) mtu_upper_bound: Option<u16>,
}

impl TransportArgs {
    /// The proxy from --proxy or the environment.
    pub(crate) fn proxy(&self) -> anyhow::Result<Option<HttpProxy>> {
        let url = self
            .proxy
            .clone()
            .or_else(|| std::env::var("HTTPS_PROXY").ok())
            .or_else(|| std::env::var("https_proxy").ok())
            .filter(|p| !p.is_empty());
        // The error never repeats the password.
        url.map(|u| HttpProxy::parse(&u).context("cannot use the HTTP proxy"))
            .transpose()
    }
}
