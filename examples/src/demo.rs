//! `zt demo`: the whole path on loopback, with real QUIC, TLS and TCP.
//!
//! An edge on a fresh state directory; the seed's tunnel, routes, list and rules (plus the
//! l4 allow rule that zero trust needs, since l4 blocks by default); three connector
//! replicas that dial out to the edge; a client with a port-forward and a SOCKS5 proxy;
//! and a stand-in Kubernetes API server that insists on client certificates. Requests go
//! through every hop and the demo prints what each hop did, taking the policy decision and
//! the serving connector from the edge's audit log rather than assuming them.
//!
//! The private address 198.51.100.101 is played by 127.0.0.101 (Linux routes all of
//! 127.0.0.0/8 to the loopback interface) and 2001:db8::101 by ::1, when IPv6 is there.
//! Everything lives in a temporary directory that is removed on exit.

mod https;
mod origin;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::Args;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use zt_client::{forward_tcp, serve_socks, Client, ClientOptions};
use zt_connector::{Connector, ConnectorConfig, ConnectorHandle};
use zt_creds::{DeviceCredentials, ExistingFile, TunnelCredentials, TunnelSecret};
use zt_edge::{
    AuditEvent, Device, Edge, EdgeConfig, EdgeHandle, FlowAction, FlowRecord, List, ListKind,
    Route, Rule, Tunnel, User,
};

use self::https::{Outcome, Path as Via};
use self::origin::{DemoPki, GIT_VERSION, ORIGIN_NAME};

/// `zt demo` arguments.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Run the checks once and exit (0 when every hop worked) instead of staying up with a
    /// kubeconfig for kubectl until Ctrl-C.
    #[arg(long)]
    once: bool,
}

/// The seed's tunnel name.
const TUNNEL_NAME: &str = "k8s_zero_trust_tunnel";
/// The seed's IP list.
const LIST_NAME: &str = "Kubernetes API IPs";
/// The seed's do-not-inspect rule.
const OFF_RULE: &str = "Don't inspect Kubernetes API";
/// The l4 rule that lets flows to the API server in at all.
const L4_RULE: &str = "Allow Kubernetes API";
/// The demo engineer.
const USER_EMAIL: &str = "engineer@example.com";
/// The loopback address that plays 198.51.100.101.
const API_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 101);
/// Connector replicas, as in the seed's Deployment.
const REPLICAS: usize = 3;
/// Bound on every wait (registration, readiness, audit lines): generous for a loaded
/// machine, and only reached when something is broken.
const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new()
        .prefix("zt-demo-")
        .tempdir()
        .context("creating the demo's temporary directory")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(demo(&args, dir.path()));
    // Origin connections run on blocking threads with I/O timeouts; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(2));
    let path = dir.path().to_owned();
    dir.close()
        .with_context(|| format!("removing {}", path.display()))?;
    say(format_args!("removed {}", path.display()));
    result
}

/// Prints one line at once, so progress shows even when stdout is a pipe.
fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the demo's clean-up.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn step(n: usize, what: &str) {
    say(format_args!("\n[{n}/7] {what}"));
}

/// Everything the requests need once the pieces are up.
struct Running {
    edge: EdgeHandle,
    connectors: Vec<ConnectorHandle>,
    client: Arc<Client>,
    pki: Arc<DemoPki>,
    origin_v4: SocketAddr,
    origin_v6: Option<SocketAddr>,
    forward: SocketAddr,
    socks: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn demo(args: &DemoArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    say("zt demo: an edge, 3 connector replicas, a client and a mutual-TLS API server, all on loopback");
    say(format_args!("working directory {}", dir.display()));
    // Ctrl-C before the demo is up still ends in the clean-up in `run`.
    let running = tokio::select! {
        running = start(dir) => running?,
        _ = tokio::signal::ctrl_c() => return Ok(interrupted()),
    };
    let ok = tokio::select! {
        ok = check(&running) => ok,
        _ = tokio::signal::ctrl_c() => {
            stop(running).await;
            return Ok(interrupted());
        }
    };

    let code = if !ok {
        say("\nFAILED: at least one hop did not work; see the lines marked FAILED above");
        ExitCode::FAILURE
    } else if args.once {
        say("\nall checks passed");
        ExitCode::SUCCESS
    } else {
        stay_up(&running, dir).await?;
        ExitCode::SUCCESS
    };
    stop(running).await;
    Ok(code)
}

fn interrupted() -> ExitCode {
    say("\nCtrl-C: stopped before the checks finished");
    ExitCode::from(130)
}

async fn start(dir: &Path) -> anyhow::Result<Running> {
    let mut tasks = Vec::new();

    // 1. The edge.
    step(1, "edge");
    let mut config = EdgeConfig::new(dir.join("edge"));
    config.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.admin = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    config.edge_name = "zt-demo-edge".to_owned();
    config.shutdown_grace = Duration::from_secs(2);
    let edge = Edge::start(config).await.context("starting the edge")?;
    let state = edge.state();
    say(format_args!(
        "  edge up: QUIC on udp {}, admin API on {}",
        edge.local_addr(),
        edge.admin_addr()
            .map_or_else(|| "-".to_owned(), |a| a.to_string())
    ));
    say(format_args!(
        "  state {} (account tag {})",
        state.dir().display(),
        state.account_tag()
    ));
    say(format_args!(
        "  CA fingerprint (SHA-256) {}",
        state.ca_fingerprint()
    ));

    // The origin's addresses come first: the routes and the list name them.
    let v4_listener = origin::bind(IpAddr::V4(API_V4)).await.with_context(|| {
        format!("binding the stand-in API server on {API_V4} (Linux routes 127.0.0.0/8 to loopback; other systems may need `ifconfig lo0 alias {API_V4}`)")
    })?;
    let v6_listener = origin::bind(IpAddr::V6(Ipv6Addr::LOCALHOST)).await.ok();
    let origin_v4 = v4_listener.local_addr()?;
    let origin_v6 = match &v6_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };

    // 2. Tunnel, routes, list, rules, user.
    step(
        2,
        "tunnel, routes, list, rules and a user (through the edge's database)",
    );
    let secret = TunnelSecret::generate();
    let tunnel = Tunnel::new(TUNNEL_NAME, state.account_tag(), &secret);
    let mut networks = vec![(
        format!("{API_V4}/32"),
        "Kubernetes API Server (IPv4), playing 198.51.100.101",
    )];
    if origin_v6.is_some() {
        networks.push((
            "::1/128".to_owned(),
            "Kubernetes API Server (IPv6), playing 2001:db8::101",
        ));
    }
    let list = List::new(
        LIST_NAME,
        ListKind::Ip,
        networks.iter().map(|(n, _)| n.clone()).collect(),
    );
    let list_ref = format!("${}", list.id.simple());
    let mut l4 = Rule::new(L4_RULE, 100, "allow", vec!["l4".to_owned()]);
    l4.description = "Let flows to the API server's addresses in (l4 blocks by default)".into();
    l4.traffic = Some(format!("net.dst.ip in {list_ref}"));
    let mut off = Rule::new(OFF_RULE, 10000, "off", vec!["http".to_owned()]);
    off.description = "Allow connections from kubectl to API".into();
    off.traffic = Some(format!("any(http.conn.dst_ip[*] in {list_ref})"));
    let user = User::new(USER_EMAIL, vec!["sre".to_owned()]);
    let device_secret = TunnelSecret::generate();
    let device = Device::new(user.id, "laptop", &device_secret);

    let db = state.db();
    let vnet = db
        .read()?
        .default_vnet()?
        .context("the edge has no default virtual network")?
        .id;
    let mut routes = Vec::new();
    for (network, comment) in &networks {
        let mut route = Route::new(network.parse()?, vnet, tunnel.id);
        route.comment = (*comment).to_owned();
        routes.push(route);
    }
    let ((), revision) = db
        .update(|txn| {
            txn.put(&tunnel)?;
            for route in &routes {
                txn.put(route)?;
            }
            txn.put(&list)?;
            txn.put(&l4)?;
            txn.put(&off)?;
            txn.put(&user)?;
            txn.put(&device)?;
            Ok::<_, zt_edge::StoreError>(())
        })
        .context("writing the demo's configuration to the edge's database")?;
    tokio::time::timeout(WAIT, edge.wait_applied(revision))
        .await
        .context("the edge did not apply the new configuration")?;
    say(format_args!("  tunnel {TUNNEL_NAME} id {}", tunnel.id));
    for route in &routes {
        say(format_args!(
            "  route {} -> {TUNNEL_NAME} ({})",
            route.network, route.comment
        ));
    }
    say(format_args!(
        "  list \"{LIST_NAME}\" (IP) id {} items {}",
        list.id,
        list.items.join(", ")
    ));
    for rule in [&l4, &off] {
        say(format_args!(
            "  rule \"{}\" precedence {} action {} filters [{}] traffic {}",
            rule.name,
            rule.precedence,
            rule.action,
            rule.filters.join(","),
            rule.traffic.as_deref().unwrap_or("-")
        ));
    }
    say(format_args!(
        "  user {USER_EMAIL} (groups sre) with device \"laptop\" id {}",
        device.id
    ));
    say(format_args!("  applied at revision {revision:?}"));

    // 3. The stand-in API server.
    step(3, "stand-in Kubernetes API server (mutual TLS)");
    let mut origin_ips = vec![IpAddr::V4(API_V4)];
    origin_ips.extend(origin_v6.map(|a| a.ip()));
    let pki = Arc::new(DemoPki::generate(&origin_ips, USER_EMAIL)?);
    for listener in [Some(v4_listener), v6_listener].into_iter().flatten() {
        let pki = Arc::clone(&pki);
        tasks.push(tokio::spawn(async move {
            if let Err(err) = origin::serve(&pki, listener).await {
                tracing::error!("the stand-in API server stopped: {err:#}");
            }
        }));
    }
    for addr in std::iter::once(origin_v4).chain(origin_v6) {
        say(format_args!(
            "  https://{addr} certificate for {ORIGIN_NAME}, requires a client certificate from the demo CA"
        ));
    }

    // 4. The connectors.
    step(4, "3 connector replicas (dialing out to the edge)");
    let connectors = start_connectors(dir, &edge, &tunnel, &secret).await?;

    // 5. The client.
    step(5, "client");
    let creds = DeviceCredentials {
        device_id: device.id,
        user_email: USER_EMAIL.to_owned(),
        auth: zt_creds::DeviceAuth::Secret(device_secret),
        edge: vec![edge.local_addr().to_string()],
        ca_fingerprint: state
            .ca_fingerprint()
            .parse()
            .context("reading the edge's CA fingerprint")?,
        default_vnet: Some(vnet),
        identity_provider: None,
        service_token: None,
    };
    let client = Client::connect(&creds, ClientOptions::default())
        .await
        .context("connecting the client to the edge")?;
    let client = Arc::new(client);
    say(format_args!(
        "  connected to the edge {} as {USER_EMAIL} (device {}), virtual network {}",
        edge.local_addr(),
        device.id,
        client.vnet()
    ));
    let forward_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let forward = forward_listener.local_addr()?;
    let socks_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let socks = socks_listener.local_addr()?;
    {
        let fwd_client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            if let Err(err) = forward_tcp(fwd_client, forward_listener, origin_v4).await {
                tracing::error!("the port-forward stopped: {err}");
            }
        }));
        let socks_client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            if let Err(err) = serve_socks(socks_client, socks_listener).await {
                tracing::error!("the SOCKS5 proxy stopped: {err}");
            }
        }));
    }
    say(format_args!(
        "  forward 127.0.0.1:{} -> {origin_v4}",
        forward.port()
    ));
    say(format_args!("  SOCKS5 proxy on {socks}"));

    Ok(Running {
        edge,
        connectors,
        client,
        pki,
        origin_v4,
        origin_v6,
        forward,
        socks,
        tasks,
    })
}

/// Starts the replicas from one `config.yaml` and one credentials file, as the seed's
/// Deployment does, and waits until each has all its HA connections registered.
async fn start_connectors(
    dir: &Path,
    edge: &EdgeHandle,
    tunnel: &Tunnel,
    secret: &TunnelSecret,
) -> anyhow::Result<Vec<ConnectorHandle>> {
    let conf_dir = dir.join("connector");
    std::fs::create_dir(&conf_dir).with_context(|| format!("creating {}", conf_dir.display()))?;
    let creds_path = conf_dir.join("creds.json");
    TunnelCredentials {
        account_tag: tunnel.account_tag.clone(),
        tunnel_id: tunnel.id,
        tunnel_name: Some(tunnel.name.clone()),
        secret: secret.clone(),
        endpoint: None,
    }
    .write(&creds_path, ExistingFile::Refuse)
    .context("writing the tunnel credentials file")?;
    let config_path = conf_dir.join("config.yaml");
    // JSON strings are YAML strings, so the paths need no escaping rules of their own.
    let yaml = format!(
        "tunnel: {}\ncredentials-file: {}\nmetrics: 127.0.0.1:0\nwarp-routing:\n    enabled: true\nedge: {}\ncacert: {}\n",
        tunnel.id,
        serde_json::to_string(&creds_path)?,
        edge.local_addr(),
        serde_json::to_string(&edge.state().ca_pem_path())?,
    );
    std::fs::write(&config_path, yaml)
        .with_context(|| format!("writing {}", config_path.display()))?;
    say(format_args!(
        "  config {} (tunnel, credentials-file, metrics, warp-routing, edge, cacert)",
        config_path.display()
    ));

    let mut handles = Vec::new();
    for replica in 1..=REPLICAS {
        let mut config = ConnectorConfig::load(&config_path)?;
        let credentials = config.load_credentials()?;
        let ha = u64::from(config.ha_connections);
        let handle = Connector::start(config, credentials)
            .await
            .with_context(|| format!("starting connector replica {replica}"))?;
        handles.push((replica, ha, handle));
    }
    let mut out = Vec::new();
    for (replica, ha, handle) in handles {
        let deadline = Instant::now() + WAIT;
        while handle.ready_connections() < ha {
            if Instant::now() > deadline {
                bail!(
                    "connector replica {replica} registered {} of {ha} connections within {WAIT:?}",
                    handle.ready_connections()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let metrics = handle
            .metrics_addr()
            .context("the connector has no metrics server")?;
        let (status, body) = http_get(metrics, "/ready").await?;
        if status != 200 {
            bail!(
                "connector replica {replica}: GET http://{metrics}/ready answered {status}: {body}"
            );
        }
        say(format_args!(
            "  replica {replica}: connector {} registered {}/{ha} HA connections; GET http://{metrics}/ready -> {status} {}",
            handle.connector_id(),
            handle.ready_connections(),
            body.trim()
        ));
        out.push(handle);
    }
    Ok(out)
}

/// A plain HTTP/1.1 GET on loopback (the connector's metrics server).
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let answer = tokio::time::timeout(WAIT, async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await?;
        std::io::Result::Ok(raw)
    })
    .await
    .with_context(|| format!("GET http://{addr}{path} timed out"))?
    .with_context(|| format!("GET http://{addr}{path}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET http://{addr}{path}: no HTTP status in the answer"))?;
    Ok((status, body.to_owned()))
}

/// One request the demo sends, and what it expects.
struct Request {
    label: String,
    via: Via,
    target: SocketAddr,
    with_cert: bool,
}

async fn check(r: &Running) -> bool {
    step(6, "requests through the tunnel");
    let mut requests = vec![
        Request {
            label: format!(
                "GET /version via the port-forward 127.0.0.1:{}",
                r.forward.port()
            ),
            via: Via::Forward(r.forward),
            target: r.origin_v4,
            with_cert: true,
        },
        Request {
            label: format!("GET /version via SOCKS5 {} to {}", r.socks, r.origin_v4),
            via: Via::Socks {
                proxy: r.socks,
                target: r.origin_v4,
            },
            target: r.origin_v4,
            with_cert: true,
        },
    ];
    if let Some(v6) = r.origin_v6 {
        requests.push(Request {
            label: format!("GET /version via SOCKS5 {} to {v6}", r.socks),
            via: Via::Socks {
                proxy: r.socks,
                target: v6,
            },
            target: v6,
            with_cert: true,
        });
    }
    requests.push(Request {
        label: format!(
            "GET /version via the port-forward 127.0.0.1:{} WITHOUT a client certificate",
            r.forward.port()
        ),
        via: Via::Forward(r.forward),
        target: r.origin_v4,
        with_cert: false,
    });

    let mut audit = AuditTail::new(r.edge.state().audit_log_path());
    let mut passed = 0;
    for (i, request) in requests.iter().enumerate() {
        say(format_args!("\n  request {}: {}", i + 1, request.label));
        match one_request(r, request, &mut audit).await {
            Ok(()) => passed += 1,
            Err(err) => say(format_args!("    FAILED: {err:#}")),
        }
    }
    step(7, "result");
    say(format_args!(
        "  {passed} of {} requests behaved as expected",
        requests.len()
    ));
    passed == requests.len()
}

async fn one_request(r: &Running, request: &Request, audit: &mut AuditTail) -> anyhow::Result<()> {
    say(format_args!(
        "    client -> edge     {USER_EMAIL}'s flow to {} over QUIC",
        request.target
    ));
    let config = r.pki.client_config(request.with_cert)?;
    let via = request.via;
    let (outcome, carried) =
        tokio::task::spawn_blocking(move || https::get(via, config, ORIGIN_NAME, "/version"))
            .await
            .context("the request task failed")??;
    let (flow, line) = audit.next_flow(request.target, carried).await?;

    let lower = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
    let decision = match (&flow.phase, &flow.rule_name, &flow.action) {
        (Some(phase), Some(rule), Some(action)) => format!(
            "{} phase: {} by rule \"{rule}\"",
            lower(phase),
            lower(action)
        ),
        (Some(phase), None, Some(action)) => {
            format!("{} phase: {} (default)", lower(phase), lower(action))
        }
        _ => "no policy decision recorded".to_owned(),
    };
    say(format_args!("    edge policy        {decision}"));
    let replica = flow
        .connector_id
        .and_then(|id| r.connectors.iter().position(|c| c.connector_id() == id));
    match (flow.connector_id, replica) {
        (Some(id), Some(n)) => say(format_args!(
            "    edge -> connector  replica {} (connector {id})",
            n + 1
        )),
        (Some(id), None) => say(format_args!(
            "    edge -> connector  unknown connector {id}"
        )),
        (None, _) => say("    edge -> connector  none"),
    }
    say(format_args!(
        "    connector -> origin TCP to {} ({} bytes up, {} bytes down, {:?})",
        flow.destination, flow.bytes_up, flow.bytes_down, flow.close_reason
    ));

    let problem = match (outcome, request.with_cert) {
        (Outcome::Response { status, body }, true) => {
            say(format_args!(
                "    origin -> caller   {status}  {}",
                excerpt(&body)
            ));
            (!status.contains(" 200 ") || !body.contains(GIT_VERSION))
                .then(|| format!("expected 200 with gitVersion {GIT_VERSION}, got {status}"))
        }
        (Outcome::TlsRefused(why), false) => {
            say(format_args!(
                "    origin -> caller   TLS refused by the origin: {why} (the origin's own TLS alert crossed the tunnel: zt never terminates TLS)"
            ));
            None
        }
        (Outcome::Response { status, .. }, false) => {
            say(format_args!("    origin -> caller   {status}"));
            Some(format!(
                "the origin answered {status} to a caller without a client certificate"
            ))
        }
        (Outcome::TlsRefused(why), true) => {
            say(format_args!("    origin -> caller   TLS failed: {why}"));
            Some(format!("the TLS handshake with the origin failed: {why}"))
        }
    };
    say(format_args!("    audit              {line}"));

    if let Some(problem) = problem {
        bail!(problem);
    }
    if flow.rule_name.as_deref() != Some(OFF_RULE) || flow.action != Some(FlowAction::Off) {
        bail!("the edge did not pass the flow through under the rule \"{OFF_RULE}\"");
    }
    if replica.is_none() {
        bail!("the flow was not served by one of the demo's connector replicas");
    }
    Ok(())
}

fn excerpt(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", &body[..at]),
        None => body.to_owned(),
    }
}

/// Reads the edge's audit log from where it was last read.
struct AuditTail {
    path: PathBuf,
    offset: usize,
}

impl AuditTail {
    fn new(path: PathBuf) -> Self {
        let offset = std::fs::metadata(&path).map_or(0, |m| m.len() as usize);
        Self { path, offset }
    }

    /// The flow lines written since the last call; only whole lines, as the last one
    /// may still be in flight.
    fn read_new(&mut self) -> anyhow::Result<Vec<(FlowRecord, String)>> {
        let text = std::fs::read(&self.path)
            .with_context(|| format!("reading the audit log {}", self.path.display()))?;
        let new = text.get(self.offset..).unwrap_or_default();
        let complete = new.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.offset += complete;
        Ok(new[..complete]
            .split(|&b| b == b'\n')
            .filter_map(|line| {
                let line = String::from_utf8_lossy(line).trim().to_owned();
                match serde_json::from_str(&line) {
                    Ok(AuditEvent::Flow(flow)) => Some((flow, line)),
                    _ => None,
                }
            })
            .collect())
    }

    /// Waits for this request's own flow line: to `destination`, with exactly the bytes
    /// the caller moved (the edge writes a flow's line when it ends, and flushes the log
    /// about once a second). Lines of other flows, even to the same destination, are
    /// passed over and named if the request's own never comes.
    async fn next_flow(
        &mut self,
        destination: SocketAddr,
        carried: https::Carried,
    ) -> anyhow::Result<(FlowRecord, String)> {
        let deadline = Instant::now() + WAIT;
        let mut others = Vec::new();
        loop {
            for (flow, line) in self.read_new()? {
                if flow.destination == destination
                    && flow.bytes_up == carried.up
                    && flow.bytes_down == carried.down
                {
                    return Ok((flow, line));
                }
                others.push(format!(
                    "{} ({} bytes up, {} down)",
                    flow.destination, flow.bytes_up, flow.bytes_down
                ));
            }
            if Instant::now() > deadline {
                bail!(
                    "no audit line in {} within {WAIT:?} for the flow to {destination} that carried {} bytes up and {} down; other flows seen: {}",
                    self.path.display(),
                    carried.up,
                    carried.down,
                    if others.is_empty() { "none".to_owned() } else { others.join(", ") }
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One line per flow for the running demo: who, where, the decision, the replica.
fn flow_summary(r: &Running, flow: &FlowRecord) -> String {
    let replica = flow
        .connector_id
        .and_then(|id| r.connectors.iter().position(|c| c.connector_id() == id))
        .map_or_else(
            || "no connector".to_owned(),
            |n| format!("replica {}", n + 1),
        );
    let action = flow.action.map_or_else(
        || "no decision".to_owned(),
        |a| format!("{a:?}").to_lowercase(),
    );
    let decision = match &flow.rule_name {
        Some(rule) => format!("{action} by rule \"{rule}\""),
        None => format!("{action} (default)"),
    };
    format!(
        "  flow {} -> {}: {}, {replica}, {} bytes up, {} down, {:?}",
        flow.identity_email.as_deref().unwrap_or("?"),
        flow.destination,
        decision,
        flow.bytes_up,
        flow.bytes_down,
        flow.close_reason
    )
}

async fn stay_up(r: &Running, dir: &Path) -> anyhow::Result<()> {
    let path = write_kubeconfig(r, dir)?;
    say(format_args!("\nkubeconfig written to {}", path.display()));
    say(format_args!(
        "  context zt-demo-forward: server https://127.0.0.1:{} (tls-server-name {ORIGIN_NAME}) through the port-forward",
        r.forward.port()
    ));
    say(format_args!(
        "  context zt-demo-socks: server https://{} through proxy-url socks5://{}",
        r.origin_v4, r.socks
    ));
    say("  it embeds the demo CA, the client certificate and its key; it is removed on exit");
    say("try:");
    say(format_args!(
        "  kubectl --kubeconfig {} version",
        path.display()
    ));
    say(format_args!(
        "  kubectl --kubeconfig {} --context zt-demo-socks version",
        path.display()
    ));
    if let Some(admin) = r.edge.admin_addr() {
        say(format_args!(
            "  ZT_EDGE_STATE_DIR={} zt tunnel list    (admin API on {admin})",
            r.edge.state().dir().display()
        ));
    }
    say("\nrunning; press Ctrl-C to stop (each flow is shown as the edge audits it)");
    let mut audit = AuditTail::new(r.edge.state().audit_log_path());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            signal = &mut ctrl_c => {
                signal.context("waiting for Ctrl-C")?;
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                for (flow, _) in audit.read_new()? {
                    say(flow_summary(r, &flow));
                }
            }
        }
    }
    say("\nCtrl-C: stopping the client, the connectors and the edge");
    Ok(())
}

fn write_kubeconfig(r: &Running, dir: &Path) -> anyhow::Result<PathBuf> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let ca = b64(&r.pki.ca_pem);
    let cert = b64(&r.pki.client.cert_pem);
    let key = b64(&r.pki.client.key_pem);
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: zt-demo-forward
  cluster:
    server: https://127.0.0.1:{forward}
    tls-server-name: {ORIGIN_NAME}
    certificate-authority-data: {ca}
- name: zt-demo-socks
  cluster:
    server: https://{origin}
    tls-server-name: {ORIGIN_NAME}
    proxy-url: socks5://{socks}
    certificate-authority-data: {ca}
users:
- name: {USER_EMAIL}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: zt-demo-forward
  context:
    cluster: zt-demo-forward
    user: {USER_EMAIL}
- name: zt-demo-socks
  context:
    cluster: zt-demo-socks
    user: {USER_EMAIL}
current-context: zt-demo-forward
",
        forward = r.forward.port(),
        origin = r.origin_v4,
        socks = r.socks,
    );
    let path = dir.join("kubeconfig");
    zt_creds::write_private_file(&path, text.as_bytes(), ExistingFile::Refuse)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn stop(r: Running) {
    for task in &r.tasks {
        task.abort();
    }
    r.client.shutdown();
    for c in r.connectors {
        c.shutdown().await;
    }
    r.edge.shutdown().await;
}
