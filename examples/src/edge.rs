//! `zt edge`: runs the edge until SIGTERM or Ctrl-C, then shuts it down gracefully.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use zt_edge::{Edge, EdgeConfig, ServerNames};

/// `zt edge` arguments.
#[derive(Debug, Args)]
pub(crate) struct EdgeArgs {
    #[command(subcommand)]
    command: EdgeCommand,
}

#[derive(Debug, Subcommand)]
enum EdgeCommand {
    /// Run the edge: accept connectors and clients, route, enforce policy, audit.
    Run(Box<RunArgs>),
    /// Copy a single edge's records (its state directory's state.redb) into an empty
    /// PostgreSQL database, then check every record arrived. The source is only read.
    Migrate(MigrateArgs),
    /// Apply pending schema migrations to a PostgreSQL database (the edge also applies them
    /// when it starts).
    MigrateSchema(MigrateSchemaArgs),
    /// List the edges sharing this edge's state: members, addresses, last heartbeat.
    List(crate::admin::EdgeListArgs),
    /// Make a new edge's state directory (on the edge holding the CA key) and record it as
    /// a member: `zt edge join NAME --out DIR --server-name HOST`.
    Join(crate::admin::EdgeJoinArgs),
    /// Remove an edge: its peers refuse it from now on.
    Remove(crate::admin::EdgeRemoveArgs),
}

/// Where the edge keeps its records, when not in the state directory's redb file.
#[derive(Debug, Args)]
struct StoreArgs {
    /// Keep the records in PostgreSQL: `postgres://USER@HOST[:PORT]/DATABASE` (no password
    /// in it). Default: $ZT_STORE; without either, the redb file in the state directory.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// File holding the database password (mode 0600). Default: the PostgreSQL password
    /// file ($PGPASSFILE, else ~/.pgpass), when it exists.
    #[arg(long, value_name = "FILE")]
    store_password_file: Option<PathBuf>,
    /// CA certificate(s), PEM, that sign the database server's certificate; required
    /// when the server is not on loopback (TLS with full verification).
    #[arg(long, value_name = "FILE")]
    store_ca_file: Option<PathBuf>,
    /// Key file sealing the secrets the edge keeps (identity providers' refresh tokens; in
    /// the database every proof key and verifier too): 32 random bytes, 0600, created on
    /// first use; every edge of one database needs the same. Default: secrets.key in the
    /// state directory.
    #[arg(long, value_name = "FILE")]
    secrets_key_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The URL from `--store` or `$ZT_STORE`.
    fn url(&self) -> Option<String> {
        self.store
            .clone()
            .or_else(|| std::env::var("ZT_STORE").ok().filter(|s| !s.is_empty()))
    }

    fn options(&self, url: String, state_dir: &std::path::Path) -> zt_edge::PostgresOptions {
        let mut o = zt_edge::PostgresOptions::new(
            url,
            self.secrets_key_file
                .clone()
                .unwrap_or_else(|| state_dir.join("secrets.key")),
        );
        o.password_file = self.store_password_file.clone();
        o.ca_file = self.store_ca_file.clone();
        o
    }
}

#[derive(Debug, Args)]
struct MigrateArgs {
    /// The state directory whose records to copy (the edge must be stopped).
    #[arg(long, value_name = "STATE_DIR")]
    from: PathBuf,
    /// The PostgreSQL database to copy into (empty; its schema is created).
    #[arg(long, value_name = "URL")]
    to: String,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
struct MigrateSchemaArgs {
    /// State directory, for the default secrets key path. Default as for `zt edge run`.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// State directory (CA, certificates, database, audit log). Default: $ZT_EDGE_STATE_DIR,
    /// else /var/lib/zt/edge for root, else ~/.local/state/zt/edge.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// UDP address for connectors and clients (QUIC).
    #[arg(long, value_name = "ADDR", default_value = zt_edge::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Admin API address (loopback only).
    #[arg(long, value_name = "ADDR", default_value = zt_edge::DEFAULT_ADMIN)]
    admin: SocketAddr,
    /// Address for /metrics and /ready; none by default.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// The edge's name, reported to connectors and clients. Default: the host name.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// A DNS name or IP address the server certificate must carry (repeatable). Changing
    /// them reissues the certificate under the same CA, so pins stay valid.
    #[arg(long = "server-name", value_name = "NAME")]
    server_names: Vec<String>,
    /// An address (`host:port`) clients reach this edge at, written into the device
    /// credentials the admin API issues (repeatable). Default: the listen address, unless
    /// it is a wildcard.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Vec<String>,
    /// Longest a client session may last (e.g. `8h`, `30m`); an older session is told to
    /// go away and its client authenticates again. Default: no limit.
    #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
    max_session_lifetime: Option<std::time::Duration>,
    /// How long a session that reached its end (its lifetime, its sign-in's or service
    /// token's expiry) keeps its open flows after the client is told to go away (e.g.
    /// `10s`, `0s` to cut them at once). Revocation never waits.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = zt_connector::parse_duration)]
    session_drain: std::time::Duration,
    /// How long a connection may stay silent before it counts as dead (e.g. `10s`).
    /// Keep-alives go every second, so this is how long a total outage connections ride
    /// out; connectors and clients use the shorter of theirs and this one.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_idle_timeout)]
    idle_timeout: std::time::Duration,
    /// One flow's receive window on the edge's connections (default 256KiB): a flow carries
    /// at most window ÷ round trip (about 105 Mbit/s at 20 ms). Raise it (e.g. 2MiB) for
    /// large single transfers over long paths; small flows then wait longer behind them.
    #[arg(long, value_name = "SIZE", value_parser = crate::window::parse_stream_window)]
    stream_window: Option<u64>,
    /// The largest UDP payload path MTU discovery probes for (default 1452, a 1500-byte
    /// Ethernet path). Where the edge and its connectors share a network with jumbo frames,
    /// up to 6550 on both cuts the CPU each byte costs; peers raise theirs to match.
    #[arg(long, value_name = "BYTES", value_parser = crate::mtu::parse_mtu_upper_bound)]
    mtu_upper_bound: Option<u16>,
    /// Do not offer ALPN `argotunnel`: unmodified cloudflared connectors cannot connect
    /// even for tunnels that opted in (see docs/CLOUDFLARED.md).
    #[arg(long)]
    no_cloudflared: bool,
    /// Also serve zt/1 over TLS on TCP at this address (say 0.0.0.0:443), beside the QUIC
    /// port number's own TCP listener (repeatable).
    #[arg(long = "tcp-listen", value_name = "ADDR")]
    tcp_listen: Vec<SocketAddr>,
    /// Do not serve zt/1 over TLS on TCP on the QUIC port number (--tcp-listen still
    /// applies).
    #[arg(long)]
    no_tcp: bool,
    /// Concurrent flows one client session may have open; more are refused with `too many
    /// flows`. Default: 4096.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_flows_per_session: Option<u32>,
    /// How long a client's flow header may take to arrive before its stream is reset (e.g.
    /// `5s`). Default: 5s.
    #[arg(long, value_name = "DURATION", value_parser = parse_header_timeout)]
    header_timeout: Option<std::time::Duration>,
    /// Size at which the audit log is rotated (`audit.jsonl` becomes `audit.jsonl.1`); 0
    /// leaves rotation to an external tool. Default: 104857600 (100 MiB).
    #[arg(long, value_name = "BYTES")]
    audit_max_bytes: Option<u64>,
    /// Rotated audit log files kept (`audit.jsonl.1` … `audit.jsonl.N`); the oldest is
    /// deleted at the next rotation. Default: 5.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    audit_keep: Option<u32>,
    /// Listen for peer edges on this UDP address (QUIC, mutual TLS with certificates from
    /// this organisation's CA): flows for tunnels whose connectors are on this edge are
    /// forwarded here by edges that hold none. Only edges sharing a store have peers.
    #[arg(long, value_name = "ADDR")]
    peer_listen: Option<SocketAddr>,
    /// The address other edges dial for peering, when it is not the --peer-listen address
    /// (a wildcard listen address, NAT).
    #[arg(long, value_name = "ADDR", requires = "peer_listen")]
    peer_advertise: Option<SocketAddr>,
    #[command(flatten)]
    store: StoreArgs,
}

fn parse_header_timeout(s: &str) -> Result<std::time::Duration, String> {
    match zt_connector::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("a header timeout must be longer than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_lifetime(s: &str) -> Result<std::time::Duration, String> {
    match zt_connector::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("a session lifetime must be longer than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_idle_timeout(s: &str) -> Result<std::time::Duration, String> {
    let keep_alive = zt_proto::TransportSettings::default().keep_alive_interval;
    match zt_connector::parse_duration(s) {
        Ok(d) if d <= keep_alive => Err(format!(
            "the idle timeout must be longer than the keep-alive interval ({keep_alive:?})"
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn run(args: EdgeArgs) -> anyhow::Result<ExitCode> {
    let args = match args.command {
        EdgeCommand::Run(args) => *args,
        EdgeCommand::Migrate(args) => return migrate(args),
        EdgeCommand::MigrateSchema(args) => return migrate_schema(args),
        EdgeCommand::List(args) => return crate::admin::edge_list(args),
        EdgeCommand::Join(args) => return crate::admin::edge_join(args),
        EdgeCommand::Remove(args) => return crate::admin::edge_remove(args),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

fn server_names(names: &[String]) -> Option<ServerNames> {
    if names.is_empty() {
        return None;
    }
    let mut out = ServerNames {
        dns: Vec::new(),
        ips: Vec::new(),
    };
    for n in names {
        match n.parse::<IpAddr>() {
            Ok(ip) => out.ips.push(ip),
            Err(_) => out.dns.push(n.clone()),
        }
    }
    Some(out)
}

async fn serve(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = EdgeConfig::new(
        args.state_dir
            .clone()
            .unwrap_or_else(zt_edge::default_state_dir),
    );
    config.listen = args.listen;
    config.admin = Some(args.admin);
    config.metrics = args.metrics;
    if let Some(name) = args.name {
        config.edge_name = name;
    }
    config.server_names = server_names(&args.server_names);
    config.advertise = args.advertise;
    config.max_session_lifetime = args.max_session_lifetime;
    config.session_drain = args.session_drain;
    config.transport.idle_timeout = args.idle_timeout;
    crate::window::apply(&mut config.transport, args.stream_window);
    crate::mtu::apply(&mut config.transport, args.mtu_upper_bound);
    config.cloudflared = !args.no_cloudflared;
    config.tcp_listen = args.tcp_listen;
    config.tcp_on_listen_port = !args.no_tcp;
    config.peer_listen = args.peer_listen;
    config.peer_advertise = args.peer_advertise;
    if let Some(n) = args.max_flows_per_session {
        config.max_flows_per_session = n as usize;
    }
    if let Some(t) = args.header_timeout {
        config.header_timeout = t;
    }
    if let Some(n) = args.audit_max_bytes {
        config.audit_limits.max_bytes = n;
    }
    if let Some(n) = args.audit_keep {
        config.audit_limits.keep = n;
    }
    let state_dir = config.state_dir.clone();
    config.secrets_key_file = args.store.secrets_key_file.clone();
    if let Some(url) = args.store.url() {
        let options = args.store.options(url, &state_dir);
        let store = tokio::task::spawn_blocking(move || zt_edge::PostgresStore::open(&options))
            .await
            .context("the store's opening task failed")??;
        println!("  State on PostgreSQL: {}.", store.url());
        config.store = Some(std::sync::Arc::new(store));
    }
    let edge = Edge::start(config).await.with_context(|| {
        format!(
            "cannot start the edge with state in {}",
            state_dir.display()
        )
    })?;

    let state = edge.state();
    println!("zt edge is running.");
    println!(
        "  Connectors and clients connect to UDP {}.",
        edge.local_addr()
    );
    println!(
        "  They trust this edge by its CA fingerprint {}",
        state.ca_fingerprint()
    );
    println!(
        "  or by the CA certificate in {}.",
        state.ca_pem_path().display()
    );
    match edge.admin_addr() {
        Some(addr) => println!(
            "  The admin API listens on http://{addr} (token in {}).",
            state.admin_token_path().display()
        ),
        None => println!("  No admin API is served."),
    }
    if let Some(addr) = edge.metrics_addr() {
        println!("  Metrics: http://{addr}/metrics, readiness: http://{addr}/ready.");
    }
    println!(
        "  Edge id: {}{}.",
        edge.edge_id(),
        if state.holds_ca_key() {
            ""
        } else {
            " (joined: no CA key here)"
        }
    );
    if let Some(addr) = edge.peer_addr() {
        println!("  Peer edges forward flows to UDP {addr} (mutual TLS).");
    }
    println!("  Account tag: {}.", state.account_tag());
    println!("Stop it with Ctrl-C or SIGTERM; open flows get a grace period to finish.");

    wait_for_signal().await?;
    println!("Shutting down: telling connectors and clients, draining open flows...");
    edge.shutdown().await;
    println!("zt edge stopped.");
    Ok(ExitCode::SUCCESS)
}

fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let db = args.from.join("state.redb");
    if !db.exists() {
        anyhow::bail!(
            "{} has no state.redb: give the state directory of an edge that kept its state \
             in redb (--from STATE_DIR)",
            args.from.display()
        );
    }
    let source = zt_edge::RedbStore::open(&db)
        .with_context(|| format!("cannot open the source database {}", db.display()))?;
    let options = args.store.options(args.to, &args.from);
    let dest = zt_edge::PostgresStore::open(&options)?;
    let report = zt_edge::copy_store(&source, &dest)
        .with_context(|| format!("cannot copy {} into {}", db.display(), dest.url()))?;
    println!(
        "Copied {} entries from {} into {} and checked them:",
        report.total(),
        db.display(),
        dest.url()
    );
    for (table, n) in &report.tables {
        println!("  {:8} {n}", table.name());
    }
    println!(
        "The source is unchanged. Start the edge on the database with\n  zt edge run \
         --state-dir {} --store {}",
        args.from.display(),
        dest.url()
    );
    Ok(ExitCode::SUCCESS)
}

fn migrate_schema(args: MigrateSchemaArgs) -> anyhow::Result<ExitCode> {
    let Some(url) = args.store.url() else {
        anyhow::bail!(
            "give the database with --store postgres://USER@HOST/DATABASE (or $ZT_STORE)"
        );
    };
    let state_dir = args.state_dir.unwrap_or_else(zt_edge::default_state_dir);
    let options = args.store.options(url, &state_dir);
    let status = zt_edge::PostgresStore::migrate_schema(&options)?;
    if status.before == status.after {
        println!(
            "The database schema is at version {}: nothing to do.",
            status.after
        );
    } else {
        println!(
            "Migrated the database schema from version {} to {}.",
            status.before, status.after
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
