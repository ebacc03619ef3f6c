//! `zt tunnel [flags] run [TUNNEL]`: the connector, with cloudflared's argument shape, so
//! `zt tunnel --config /opt/zt/config/config.yaml run` (the seed's container arguments)
//! works as written.
//!
//! Settings come from the config file, then the flags given before `run`, then those
//! given after it (cloudflared accepts both places). `--config` and `--loglevel` may go
//! anywhere. A token may also come from the `TUNNEL_TOKEN` environment variable, as
//! cloudflared reads it.
//!
//! Exit codes:
//! - 0: stopped by SIGTERM or SIGINT (after draining, after the grace period ran out, or
//!   cut short by a second signal);
//! - 1: the connector could not start (bad config, credentials, CA or metrics address);
//!   the reason is printed on stderr;
//! - 2: bad command-line usage (printed by the argument parser).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tracing::{info, warn};
use zt_connector::{
    parse_duration, parse_listen_addr, ConfigOverrides, Connector, ConnectorConfig, DrainOutcome,
    EdgeAddr, EdgeProtocol, ShutdownSignals, TunnelRef,
};
use zt_creds::{CaFingerprint, PermissionMode, TunnelToken};

/// Flags given before the subcommand, as cloudflared takes them (`zt tunnel --config F run`).
#[derive(Debug, Args)]
pub(crate) struct TunnelFlags {
    /// The connector's config.yaml (cloudflared's keys).
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) config: Option<PathBuf>,

    /// Log level: debug, info, warn, error or fatal (cloudflared's names). `--log` wins
    /// when both are given.
    #[arg(long, value_name = "LEVEL", global = true)]
    pub(crate) loglevel: Option<String>,

    // Boxed: the flags are large, and they sit inside the command enums.
    #[command(flatten)]
    pub(crate) settings: Box<ConnectorFlags>,
}

/// The connector's settings as flags; accepted before and after `run`.
#[derive(Debug, Args, Default)]
pub(crate) struct ConnectorFlags {
    /// The tunnel's credentials file (cloudflared's JSON).
    #[arg(long, value_name = "FILE")]
    credentials_file: Option<PathBuf>,
    /// How strictly the credentials file's permissions are checked.
    #[arg(long, value_name = "strict|default|lenient", value_parser = parse_permissions)]
    credentials_permissions: Option<PermissionMode>,
    /// A tunnel token instead of a credentials file (also read from TUNNEL_TOKEN).
    #[arg(long, value_name = "TOKEN", value_parser = parse_token)]
    token: Option<TunnelToken>,
    /// Where the metrics and readiness server listens (e.g. 0.0.0.0:8081).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    metrics: Option<SocketAddr>,
    /// An edge address, host:port; repeat for several edges.
    #[arg(long, value_name = "HOST:PORT")]
    edge: Vec<EdgeAddr>,
    /// The edge's CA certificate (PEM or DER).
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// The SHA-256 fingerprint of the edge's CA certificate, instead of --cacert.
    #[arg(long, value_name = "HEX")]
    edge_ca_fingerprint: Option<CaFingerprint>,
    /// How to reach the edge: auto (default: QUIC, with TLS over TCP raced in after
    /// 300 ms for networks that drop UDP), quic, tcp, or cloudflared's http2 (= tcp).
    #[arg(long, value_name = "auto|quic|tcp|http2")]
    protocol: Option<EdgeProtocol>,
    /// How long in-flight flows may drain after SIGTERM (e.g. 30s, 1m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    grace_period: Option<Duration>,
    /// Edge connections to keep registered (1 to 16).
    #[arg(long, value_name = "N")]
    ha_connections: Option<u8>,
    /// Accepted for cloudflared compatibility; zt never updates itself.
    #[arg(long)]
    no_autoupdate: bool,
    /// One flow's receive window on the connector's connections (default 256KiB): a flow
    /// carries at most window ÷ round trip to the edge. Raise it (e.g. 2MiB) for large
    /// transfers toward the cluster over a long path.
    #[arg(long, value_name = "SIZE", value_parser = crate::window::parse_stream_window)]
    stream_window: Option<u64>,
    /// The largest UDP payload path MTU discovery probes for toward the edge (default
    /// 1452). Up to 6550 where the cluster and the edge share a network with jumbo frames
    /// and the edge runs with the same flag.
    #[arg(long, value_name = "BYTES", value_parser = crate::mtu::parse_mtu_upper_bound)]
    mtu_upper_bound: Option<u16>,
}

/// `zt tunnel run [TUNNEL]`
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The tunnel's UUID or name (overrides the config's `tunnel`).
    #[arg(value_name = "TUNNEL")]
    tunnel: Option<TunnelRef>,

    #[command(flatten)]
    settings: Box<ConnectorFlags>,
}

fn parse_permissions(s: &str) -> Result<PermissionMode, String> {
    s.trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|e: zt_creds::PermissionModeError| e.to_string())
}

fn parse_token(s: &str) -> Result<TunnelToken, String> {
    TunnelToken::parse(s).map_err(|e| e.to_string())
}

/// The tracing filter `--loglevel` asks for, in cloudflared's level names.
pub(crate) fn log_filter(flags: &TunnelFlags) -> Option<String> {
    let level = flags.loglevel.as_deref()?.trim().to_ascii_lowercase();
    Some(match level.as_str() {
        "fatal" | "panic" => "error".to_owned(),
        "warning" => "warn".to_owned(),
        _ => level,
    })
}

impl ConnectorFlags {
    /// Applies these flags over `o`; set flags win.
    fn overrides(self, mut o: ConfigOverrides) -> ConfigOverrides {
        if let Some(v) = self.credentials_file {
            o = o.credentials_file(v);
        }
        if let Some(v) = self.credentials_permissions {
            o = o.credentials_permissions(v);
        }
        if let Some(v) = self.token {
            o = o.token(v);
        }
        if let Some(v) = self.metrics {
            o = o.metrics(v);
        }
        if !self.edge.is_empty() {
            o = o.edge(self.edge);
        }
        if let Some(v) = self.cacert {
            o = o.cacert(v);
        }
        if let Some(v) = self.edge_ca_fingerprint {
            o = o.edge_ca_fingerprint(v);
        }
        if let Some(v) = self.protocol {
            o = o.protocol(v);
        }
        if let Some(v) = self.grace_period {
            o = o.grace_period(v);
        }
        if let Some(v) = self.ha_connections {
            o = o.ha_connections(v);
        }
        o
    }
}

pub(crate) fn run(flags: TunnelFlags, args: RunArgs) -> anyhow::Result<ExitCode> {
    // Two workers at most: the seed gives the container one CPU and 100 MiB, and relaying
    // is I/O-bound.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("zt-connector")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_connector(flags, args))
}

async fn run_connector(flags: TunnelFlags, args: RunArgs) -> anyhow::Result<ExitCode> {
    // First, so that from here on SIGTERM is a request to drain, not an instant kill.
    let mut signals = ShutdownSignals::new().context("cannot install signal handlers")?;

    let mut config = match &flags.config {
        Some(path) => {
            info!(file = %path.display(), "reading the connector configuration");
            ConnectorConfig::load(path)?
        }
        None => {
            info!("no --config given; using flags and defaults only");
            ConnectorConfig::default()
        }
    };
    let no_autoupdate = flags.settings.no_autoupdate || args.settings.no_autoupdate;
    let stream_window = args.settings.stream_window.or(flags.settings.stream_window);
    let mtu_upper_bound = args
        .settings
        .mtu_upper_bound
        .or(flags.settings.mtu_upper_bound);
    let mut overrides = flags.settings.overrides(ConfigOverrides::default());
    overrides = args.settings.overrides(overrides);
    if let Some(tunnel) = args.tunnel {
        overrides = overrides.tunnel(tunnel);
    }
    config.apply(overrides)?;
    if config.token.is_none() && config.credentials_file.is_none() {
        if let Ok(text) = std::env::var("TUNNEL_TOKEN") {
            let token = TunnelToken::parse(&text).context("TUNNEL_TOKEN")?;
            config.token = Some(token);
        }
    }
    if no_autoupdate {
        info!("--no-autoupdate: zt never updates itself, nothing to turn off");
    }

    let credentials = config.load_credentials()?;
    let grace = config.grace_period;
    info!(
        tunnel = %credentials.tunnel_id,
        ha_connections = config.ha_connections,
        edges = config.edge.len(),
        "connecting to the edge"
    );
    let mut transport = zt_proto::TransportSettings::default();
    crate::window::apply(&mut transport, stream_window);
    crate::mtu::apply(&mut transport, mtu_upper_bound);
    let handle = Connector::start_with(config, credentials, transport).await?;
    match handle.metrics_addr() {
        Some(addr) => info!(
            connector_id = %handle.connector_id(),
            %addr,
            "connector running; readiness on /ready, liveness on /healthcheck, figures on /metrics"
        ),
        None => info!(
            connector_id = %handle.connector_id(),
            "connector running (no metrics server: set `metrics` to serve /ready)"
        ),
    }

    signals.recv().await;
    info!(
        grace = ?grace,
        "stopping: refusing new flows, telling the edge, and letting flows in progress finish \
         (send the signal again to stop at once)"
    );
    let outcome = handle.drain(signals.recv()).await;
    match outcome {
        DrainOutcome::Drained => info!("every flow finished; closing the edge connections"),
        DrainOutcome::GraceExpired { abandoned } => warn!(
            abandoned,
            "grace period over; closing the edge connections with flows still open"
        ),
        DrainOutcome::Forced { abandoned } => warn!(
            abandoned,
            "second signal: closing the edge connections at once"
        ),
        _ => {}
    }
    handle.shutdown().await;
    info!("connector stopped");
    Ok(ExitCode::SUCCESS)
}
