//! Admin commands: tunnels, routes, virtual networks, lists, rules, users, account.
//!
//! `zt tunnel run` (the connector) is dispatched to [`crate::connector`]; everything else
//! here talks to the edge's admin API over HTTP on loopback. The API's address and token
//! are read from the edge's state directory (`admin.addr`, `admin-token`) unless given with
//! `--admin-url` / `--admin-token-file` (or `ZT_ADMIN_URL` / `ZT_ADMIN_TOKEN_FILE`).
//!
//! Exit codes, for scripts:
//! - 0: done;
//! - 1: the edge refused the change (validation, conflict, not found) or a local step failed
//!   (a credentials file already exists);
//! - 2: the command line is wrong (usage);
//! - 3: the admin API cannot be reached or refused the token.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use zt_creds::{CaFingerprint, DeviceCredentials, ExistingFile, TunnelCredentials, TunnelToken};

const EXIT_REFUSED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;

/// How long a request may take; admin calls are small and local.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest reply accepted; a list of every route of a big edge is well below this.
const MAX_REPLY: u64 = 64 * 1024 * 1024;

const EXIT_CODES: &str = "Exit codes: 0 done, 1 refused by the edge or a local step failed, \
2 usage error, 3 the admin API cannot be reached or refused the token.";

/// Where to find the admin API, and how to print.
#[derive(Debug, Args, Clone)]
pub(crate) struct AdminOpts {
    /// The edge's state directory, where `admin.addr` and `admin-token` are
    /// (default: the edge's default state directory).
    #[arg(long, value_name = "DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// The admin API's URL, e.g. http://127.0.0.1:7800 (env ZT_ADMIN_URL).
    #[arg(long, value_name = "URL", global = true)]
    admin_url: Option<String>,
    /// A file holding the admin token (env ZT_ADMIN_TOKEN_FILE).
    #[arg(long, value_name = "FILE", global = true)]
    admin_token_file: Option<PathBuf>,
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns.
    Table,
    /// The admin API's JSON.
    Json,
}

/// `zt tunnel …`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct TunnelArgs {
    #[command(flatten)]
    pub(crate) connector: crate::connector::TunnelFlags,
    #[command(flatten)]
    admin: AdminOpts,
    #[command(subcommand)]
    pub(crate) command: TunnelCommand,
}

/// Subcommands of `zt tunnel`.
#[derive(Debug, Subcommand)]
pub(crate) enum TunnelCommand {
    /// Run the connector for a tunnel (cloudflared's `tunnel run`).
    Run(crate::connector::RunArgs),
    /// Create a tunnel and write its credentials file (or print a token).
    Create {
        /// The tunnel's name.
        name: String,
        /// Where to write the credentials JSON (default: ./TUNNEL-ID.json); never
        /// overwritten.
        #[arg(long, value_name = "PATH")]
        credentials_file: Option<PathBuf>,
        /// Print a token (with the edge address and CA fingerprint) instead of writing a file.
        #[arg(long)]
        token: bool,
        /// Edge address (HOST:PORT) to put in the token; repeat for several.
        #[arg(long = "edge", value_name = "HOST:PORT")]
        edge: Vec<String>,
        /// Also accept unmodified cloudflared connectors (the edge then keeps a SHA-256 of
        /// the secret, as their protocol sends the secret itself).
        #[arg(long)]
        allow_cloudflared: bool,
        /// Import an existing tunnel from its credentials file (cloudflared's, for
        /// instance one made by Cloudflare): the tunnel keeps that id, account tag and
        /// secret, so connectors holding the file keep working. No file is written.
        #[arg(long, value_name = "FILE", conflicts_with = "credentials_file")]
        from_credentials: Option<PathBuf>,
    },
    /// List tunnels with their live connections.
    List {
        /// Include deleted tunnels.
        #[arg(long)]
        include_deleted: bool,
    },
    /// Show a tunnel, its connections and its routes.
    Info {
        /// Tunnel id or name.
        tunnel: String,
    },
    /// Delete a tunnel (refused while routes use it).
    Delete {
        /// Tunnel id or name.
        tunnel: String,
    },
    /// Serve a tunnel with unmodified cloudflared: write the edge's CA file and print the
    /// exact cloudflared command line; `--enable`/`--disable` turn acceptance on or off.
    Cloudflared(CloudflaredArgs),
}

/// `zt tunnel cloudflared TUNNEL …`
#[derive(Debug, Args)]
pub(crate) struct CloudflaredArgs {
    /// Tunnel id or name.
    tunnel: String,
    /// Where to write the edge's CA certificate (PEM), passed to cloudflared as `--cacert`.
    #[arg(long, value_name = "PATH", default_value = "zt-edge-ca.pem")]
    ca_file: PathBuf,
    /// The tunnel's credentials file: printed in the command line (default
    /// ./TUNNEL-ID.json), and read by `--enable`.
    #[arg(long, value_name = "PATH")]
    credentials_file: Option<PathBuf>,
    /// Edge address (HOST:PORT) for cloudflared's `--edge` (default: the edge's advertised
    /// address).
    #[arg(long, value_name = "HOST:PORT")]
    edge: Option<String>,
    /// Also write a minimal cloudflared config file here (tunnel, credentials file, and
    /// `warp-routing: enabled: true`, which cloudflared versions that have the switch need
    /// to serve private-network flows) and pass it with `--config`; never overwritten.
    #[arg(long, value_name = "PATH")]
    config_file: Option<PathBuf>,
    /// Accept cloudflared connectors for this tunnel. Their protocol sends the secret
    /// itself, so the edge then keeps a SHA-256 of it (see docs/CLOUDFLARED.md); needs
    /// `--credentials-file`.
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    /// Stop accepting cloudflared connectors for this tunnel (connections already
    /// registered stay until they reconnect).
    #[arg(long)]
    disable: bool,
}

/// `zt route …`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct RouteArgs {
    #[command(flatten)]
    admin: AdminOpts,
    #[command(subcommand)]
    command: RouteCommand,
}

#[derive(Debug, Subcommand)]
enum RouteCommand {
    /// Private-network IP routes.
    Ip {
        #[command(subcommand)]
        command: IpCommand,
    },
}

#[derive(Debug, Subcommand)]
enum IpCommand {
    /// Route a network to a tunnel.
    Add {
        /// The network, e.g. 198.51.100.0/24 or 2001:db8::101 (a host route).
        cidr: String,
        /// Tunnel id or name.
        tunnel: String,
        /// Virtual network (default: the default one).
        #[arg(long)]
        vnet: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Show routes.
    Show {
        /// Only this virtual network.
        #[arg(long)]
        vnet: Option<String>,
        /// Only this tunnel (id or name).
        #[arg(long)]
        tunnel: Option<String>,
    },
    /// Which route serves an address, and which shorter routes also cover it.
    Get {
        /// The address.
        ip: String,
        /// Virtual network (default: the default one).
        #[arg(long)]
        vnet: Option<String>,
    },
    /// Delete a route by id, or by network (in --vnet or the default).
    Delete {
        /// Route id or network.
        route: String,
        /// Virtual network of the network (default: the default one).
        #[arg(long)]
        vnet: Option<String>,
    },
}

/// `zt vnet …`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct VnetArgs {
    #[command(flatten)]
    admin: AdminOpts,
    #[command(subcommand)]
    command: VnetCommand,
}

#[derive(Debug, Subcommand)]
enum VnetCommand {
    /// Add a virtual network.
    Add {
        /// Its name.
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        comment: String,
        /// Make it the default.
        #[arg(long)]
        default: bool,
    },
    /// List virtual networks.
    List,
    /// Rename a virtual network.
    Rename {
        /// Id or name.
        vnet: String,
        /// The new name.
        new_name: String,
    },
    /// Delete a virtual network (refused while routes use it, or while it is the default).
    Delete {
        /// Id or name.
        vnet: String,
    },
    /// Make a virtual network the default.
    Default {
        /// Id or name.
        vnet: String,
    },
}

/// `zt list …`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    admin: AdminOpts,
    #[command(subcommand)]
    command: ListCommand,
}

#[derive(Debug, Subcommand)]
enum ListCommand {
    /// Create a list.
    Create {
        /// Its name.
        name: String,
        /// IP, DOMAIN, EMAIL or DEVICE.
        #[arg(long = "type", value_name = "TYPE")]
        list_type: String,
        /// Short name for rules (`$slug`): a-z, 0-9 and `_`.
        #[arg(long)]
        slug: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// A file with one item per line (blank lines and `#` comments skipped).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Items.
        items: Vec<String>,
    },
    /// Show one list with its items, or every list.
    Show {
        /// Id, name or slug; all lists when absent.
        list: Option<String>,
    },
    /// Change a list's items.
    Update {
        /// Id, name or slug.
        list: String,
        /// Add an item; repeat for several.
        #[arg(long, value_name = "ITEM")]
        add: Vec<String>,
        /// Remove an item; repeat for several.
        #[arg(long, value_name = "ITEM")]
        remove: Vec<String>,
        /// Replace every item with those of this file (one per line).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a list (refused while a rule refers to it).
    Delete {
        /// Id, name or slug.
        list: String,
    },
}

/// `zt rule …`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct RuleArgs {
    #[command(flatten)]
    admin: AdminOpts,
    #[command(subcommand)]
    command: RuleCommand,
}

/// The fields of a rule, as flags.
#[derive(Debug, Args)]
struct RuleFlags {
    /// Lower runs first; unique within a filter.
    #[arg(long)]
    precedence: Option<u32>,
    /// allow, block or off (off: http filter only).
    #[arg(long)]
    action: Option<String>,
    /// l4, http or dns; repeat for several (a new rule defaults to l4).
    #[arg(long = "filter", value_name = "FILTER")]
    filters: Vec<String>,
    /// The traffic expression, e.g. `net.dst.ip in $k8s_api and net.dst.port == 443`.
    #[arg(long)]
    traffic: Option<String>,
    /// The identity expression.
    #[arg(long)]
    identity: Option<String>,
    /// The device posture expression.
    #[arg(long)]
    device_posture: Option<String>,
    /// Free text.
    #[arg(long)]
    description: Option<String>,
}

impl RuleFlags {
    fn body(&self) -> Value {
        let mut b = json!({});
        let mut set = |k: &str, v: Value| {
            b[k] = v;
        };
        if let Some(p) = self.precedence {
            set("precedence", json!(p));
        }
        if let Some(a) = &self.action {
            set("action", json!(a));
        }
        if !self.filters.is_empty() {
            set("filters", json!(self.filters));
        }
        for (k, v) in [
            ("traffic", &self.traffic),
            ("identity", &self.identity),
            ("device_posture", &self.device_posture),
            ("description", &self.description),
        ] {
            if let Some(v) = v {
                set(k, json!(v));
            }
        }
        b
    }
}

#[derive(Debug, Subcommand)]
enum RuleCommand {
    /// Create a rule (the expression is checked against the current lists).
    Create {
        /// Its name (shown in `denied by rule <name>`).
        name: String,
        #[command(flatten)]
        flags: RuleFlags,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List rules by precedence.
    List,
    /// Change a rule; flags not given are kept (an empty expression clears it).
    Update {
        /// Id or name.
        rule: String,
        #[command(flatten)]
        flags: RuleFlags,
        /// Rename it.
        #[arg(long)]
        name: Option<String>,
        /// Enable it.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Disable it.
        #[arg(long)]
        disable: bool,
    },
    /// Delete a rule.
    Delete {
        /// Id or name.
        rule: String,
    },
}

/// `zt user …`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct UserArgs {
    #[command(flatten)]
    admin: AdminOpts,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user with one device, and write the device credentials (0600).
    Add {
        /// The user's email.
        email: String,
        /// A group; repeat for several.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Where to write the device credentials (default: ./zt-device-DEVICE-ID.json);
        /// never overwritten.
        #[arg(long, value_name = "PATH")]
        output_file: Option<PathBuf>,
        /// Edge address (HOST:PORT) clients reach; repeat for several (default: the
        /// edge's own, when it knows them).
        #[arg(long = "edge", value_name = "HOST:PORT")]
        edge: Vec<String>,
        /// A name for the device, e.g. the laptop's host name.
        #[arg(long)]
        device_name: Option<String>,
    },
    /// List users and their devices.
    List,
    /// Remove a user and revoke every device of theirs.
    Remove {
        /// Id or email.
        user: String,
    },
}

/// `zt account`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct AccountArgs {
    #[command(flatten)]
    admin: AdminOpts,
}

// ---------------------------------------------------------------------------------------
// Errors and exit codes.

/// Why an admin command failed; each maps to an exit code.
#[derive(Debug)]
enum CliError {
    /// The admin API cannot be reached, or refused the token.
    Unreachable(String),
    /// The edge refused the request.
    Refused { message: String },
    /// A local step failed.
    Local(String),
}

impl CliError {
    fn report(&self) -> ExitCode {
        match self {
            CliError::Unreachable(m) => {
                eprintln!("error: {m}");
                ExitCode::from(EXIT_UNREACHABLE)
            }
            CliError::Refused { message } => {
                eprintln!("error: {message}");
                ExitCode::from(EXIT_REFUSED)
            }
            CliError::Local(m) => {
                eprintln!("error: {m}");
                ExitCode::from(EXIT_REFUSED)
            }
        }
    }
}

type CliResult<T> = Result<T, CliError>;

fn finish(result: CliResult<()>) -> anyhow::Result<ExitCode> {
    Ok(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    })
}

// ---------------------------------------------------------------------------------------
// The admin API client: HTTP/1.1 over a std TCP stream, one connection per request.

struct AdminClient {
    /// `host:port`.
    authority: String,
    token: String,
    output: Output,
}

impl AdminClient {
    fn new(opts: &AdminOpts) -> CliResult<Self> {
        let env_path = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let state_dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(zt_edge::default_state_dir);
        let url = match opts
            .admin_url
            .clone()
            .or_else(|| std::env::var("ZT_ADMIN_URL").ok().filter(|v| !v.is_empty()))
        {
            Some(url) => url,
            None => {
                let path = state_dir.join(zt_edge::ADMIN_ADDR_FILE);
                std::fs::read_to_string(&path).map_err(|e| {
                    CliError::Unreachable(format!(
                        "cannot read the admin API address from {}: {e}; is the edge running \
                         (`zt edge run`)? Point at its state directory with --state-dir, or give \
                         --admin-url",
                        path.display()
                    ))
                })?
            }
        };
        let authority = parse_url(&url)?;
        let token_path = opts
            .admin_token_file
            .clone()
            .or_else(|| env_path("ZT_ADMIN_TOKEN_FILE"))
            .unwrap_or_else(|| state_dir.join("admin-token"));
        let token = std::fs::read_to_string(&token_path).map_err(|e| {
            CliError::Unreachable(format!(
                "cannot read the admin token from {}: {e}; give the edge's state directory with \
                 --state-dir or the token file with --admin-token-file",
                token_path.display()
            ))
        })?;
        Ok(Self {
            authority,
            token: token.trim().to_owned(),
            output: opts.output,
        })
    }

    fn get(&self, path: &str) -> CliResult<Value> {
        self.call("GET", path, None)
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> CliResult<Value> {
        let unreachable = |e: std::io::Error| {
            CliError::Unreachable(format!(
                "cannot reach the edge's admin API at {}: {e}; is the edge running?",
                self.authority
            ))
        };
        let addrs: Vec<_> = self
            .authority
            .to_socket_addrs()
            .map_err(unreachable)?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, REQUEST_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut stream = stream.ok_or_else(|| {
            unreachable(last.unwrap_or_else(|| std::io::Error::other("no address")))
        })?;
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .map_err(unreachable)?;
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(unreachable)?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n",
            self.authority,
            self.token,
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str("\r\n");
        req.push_str(&body);
        stream.write_all(req.as_bytes()).map_err(unreachable)?;
        let mut reply = Vec::new();
        stream
            .take(MAX_REPLY)
            .read_to_end(&mut reply)
            .map_err(unreachable)?;
        let (status, value) = parse_reply(&reply).ok_or_else(|| {
            CliError::Unreachable(format!(
                "{} answered with something other than the admin API's JSON; is --admin-url right?",
                self.authority
            ))
        })?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the admin API answered HTTP {status}"));
        if status == 401 {
            return Err(CliError::Unreachable(format!(
                "{message} (--admin-token-file or --state-dir)"
            )));
        }
        Err(CliError::Refused { message })
    }

    fn json(&self) -> bool {
        self.output == Output::Json
    }
}

fn parse_url(url: &str) -> CliResult<String> {
    let u = url.trim();
    if u.starts_with("https://") {
        return Err(CliError::Local(format!(
            "admin URL {u}: the admin API speaks plain HTTP on loopback; use http://"
        )));
    }
    let rest = u.strip_prefix("http://").unwrap_or(u);
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || !authority.contains(':') {
        return Err(CliError::Local(format!(
            "admin URL `{u}` has no host:port, e.g. http://127.0.0.1:7800"
        )));
    }
    Ok(authority.to_owned())
}

/// The status and JSON body of an HTTP/1.1 reply with a Content-Length or closed by the
/// server.
fn parse_reply(reply: &[u8]) -> Option<(u16, Value)> {
    let split = reply.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&reply[..split]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = &reply[split + 4..];
    let value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).ok()?
    };
    Some((status, value))
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

// ---------------------------------------------------------------------------------------
// Printing.

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Prints rows under a header, columns padded to their widest cell.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ", w = widths[i]);
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// `4xedge-a, 2xedge-b`: connections counted per edge name, as cloudflared shows them.
fn connections_summary(conns: &Value) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for c in arr(conns) {
        let name = s(&c["edge_name"]);
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, k)) => *k += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
        .iter()
        .map(|(n, k)| format!("{k}x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn route_rows(routes: &Value) -> Vec<Vec<String>> {
    arr(routes)
        .iter()
        .map(|r| {
            vec![
                s(&r["id"]),
                s(&r["network"]),
                s(&r["vnet_name"]),
                s(&r["tunnel_name"]),
                s(&r["comment"]),
                s(&r["created_at"]),
            ]
        })
        .collect()
}

const ROUTE_HEADER: [&str; 6] = ["ID", "NETWORK", "VNET", "TUNNEL", "COMMENT", "CREATED"];

fn print_routes(routes: &Value) {
    print_table(&ROUTE_HEADER, &route_rows(routes));
}

// ---------------------------------------------------------------------------------------
// Commands.

pub(crate) fn tunnel(args: TunnelArgs) -> anyhow::Result<ExitCode> {
    let admin = args.admin;
    match args.command {
        TunnelCommand::Run(run) => crate::connector::run(args.connector, run),
        TunnelCommand::Create {
            name,
            credentials_file,
            token,
            edge,
            allow_cloudflared,
            from_credentials,
        } => finish(tunnel_create(
            &admin,
            &name,
            credentials_file,
            token,
            edge,
            allow_cloudflared,
            from_credentials,
        )),
        TunnelCommand::List { include_deleted } => finish((|| {
            let c = AdminClient::new(&admin)?;
            let v = c.get(&format!(
                "/v1/tunnels{}",
                query(&[("include_deleted", include_deleted.then_some("true"))])
            ))?;
            if c.json() {
                print_json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = arr(&v)
                .iter()
                .map(|t| {
                    let mut created = s(&t["created_at"]);
                    if !t["deleted_at"].is_null() {
                        created.push_str(" (deleted)");
                    }
                    vec![
                        s(&t["id"]),
                        s(&t["name"]),
                        created,
                        connections_summary(&t["connections"]),
                    ]
                })
                .collect();
            print_table(&["ID", "NAME", "CREATED", "CONNECTIONS"], &rows);
            Ok(())
        })()),
        TunnelCommand::Info { tunnel } => finish((|| {
            let c = AdminClient::new(&admin)?;
            let v = c.get(&format!("/v1/tunnels/{}", enc(&tunnel)))?;
            if c.json() {
                print_json(&v);
                return Ok(());
            }
            println!("ID:           {}", s(&v["id"]));
            println!("NAME:         {}", s(&v["name"]));
            println!("CREATED:      {}", s(&v["created_at"]));
            println!("CLOUDFLARED:  {}", s(&v["accepts_cloudflared"]));
            println!("CONNECTIONS:  {}", connections_summary(&v["connections"]));
            if !arr(&v["connections"]).is_empty() {
                println!();
                let rows: Vec<Vec<String>> = arr(&v["connections"])
                    .iter()
                    .map(|c| {
                        vec![
                            s(&c["connector_id"]),
                            s(&c["conn_index"]),
                            s(&c["edge_name"]),
                            s(&c["remote"]),
                            s(&c["version"]),
                            s(&c["in_flight"]),
                            if c["draining"] == true {
                                "draining".to_owned()
                            } else if c["healthy"] == true {
                                "healthy".to_owned()
                            } else {
                                "unhealthy".to_owned()
                            },
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "CONNECTOR",
                        "INDEX",
                        "EDGE",
                        "ORIGIN",
                        "VERSION",
                        "FLOWS",
                        "STATE",
                    ],
                    &rows,
                );
            }
            if !arr(&v["routes"]).is_empty() {
                println!();
                print_routes(&v["routes"]);
            }
            Ok(())
        })()),
        TunnelCommand::Cloudflared(cf) => finish(tunnel_cloudflared(&admin, cf)),
        TunnelCommand::Delete { tunnel } => finish((|| {
            let c = AdminClient::new(&admin)?;
            let v = c.call("DELETE", &format!("/v1/tunnels/{}", enc(&tunnel)), None)?;
            if c.json() {
                print_json(&v);
            } else {
                println!("Deleted tunnel {} ({})", s(&v["name"]), s(&v["id"]));
            }
            Ok(())
        })()),
    }
}

fn tunnel_create(
    admin: &AdminOpts,
    name: &str,
    credentials_file: Option<PathBuf>,
    token: bool,
    edge: Vec<String>,
    allow_cloudflared: bool,
    from_credentials: Option<PathBuf>,
) -> CliResult<()> {
    if token && credentials_file.is_some() {
        return Err(CliError::Local(
            "--token prints the credentials instead of writing them; give either --token or \
             --credentials-file"
                .to_owned(),
        ));
    }
    // Refuse before the tunnel exists, so an existing file does not leave an orphan tunnel.
    if let Some(p) = &credentials_file {
        if p.exists() {
            return Err(CliError::Local(format!(
                "{} already exists; refusing to overwrite it (choose another --credentials-file)",
                p.display()
            )));
        }
    }
    let c = AdminClient::new(admin)?;
    let account = if token {
        Some(c.get("/v1/account")?)
    } else {
        None
    };
    let mut body = json!({ "name": name, "allow_cloudflared": allow_cloudflared });
    if let Some(file) = &from_credentials {
        let text = std::fs::read(file)
            .map_err(|e| CliError::Local(format!("cannot read {}: {e}", file.display())))?;
        // Checked here first, so a bad file is named before anything reaches the edge.
        TunnelCredentials::from_json(&text).map_err(|e| {
            CliError::Local(format!("{} is not a credentials file: {e}", file.display()))
        })?;
        let creds: Value = serde_json::from_slice(&text).map_err(|e| {
            CliError::Local(format!("{} is not a credentials file: {e}", file.display()))
        })?;
        body["credentials"] = creds;
    }
    let v = c.call("POST", "/v1/tunnels", Some(&body))?;
    let creds = TunnelCredentials::from_json(v["credentials"].to_string().as_bytes())
        .map_err(|e| CliError::Local(format!("the edge sent unusable credentials: {e}")))?;
    let id = creds.tunnel_id;
    if let Some(account) = account {
        let edge = if edge.is_empty() {
            arr(&account["edge"]).iter().map(s).collect()
        } else {
            edge
        };
        let ca: Option<CaFingerprint> = account["ca_fingerprint"]
            .as_str()
            .and_then(|f| f.parse().ok());
        let mut token = TunnelToken::from_credentials(creds);
        token.edge = edge;
        token.ca_fingerprint = ca;
        // The token is the credential the user asked for; it goes to stdout only.
        println!("{}", token.encode().as_str());
        eprintln!("Created tunnel {name} with id {id}");
        return Ok(());
    }
    if let Some(file) = from_credentials {
        if c.json() {
            print_json(&json!({ "tunnel": v["tunnel"], "credentials_file": file }));
        } else {
            println!(
                "Imported tunnel {name} with id {id}; its connectors keep using {}",
                file.display()
            );
        }
        return Ok(());
    }
    let path = credentials_file.unwrap_or_else(|| PathBuf::from(format!("{id}.json")));
    write_secret_file(&path, format!("tunnel {name} ({id})"), |p| {
        creds.write(p, ExistingFile::Refuse)
    })?;
    if c.json() {
        print_json(&json!({ "tunnel": v["tunnel"], "credentials_file": path }));
    } else {
        println!("Tunnel credentials written to {}", path.display());
        println!("Created tunnel {name} with id {id}");
    }
    Ok(())
}

/// Quotes a command-line word for a POSIX shell when it needs it.
fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+[]".contains(&b));
    if plain {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

fn tunnel_cloudflared(admin: &AdminOpts, args: CloudflaredArgs) -> CliResult<()> {
    let c = AdminClient::new(admin)?;
    let path = format!("/v1/tunnels/{}/cloudflared", enc(&args.tunnel));
    if args.disable {
        let v = c.call("PUT", &path, Some(&json!({ "enabled": false })))?;
        if c.json() {
            print_json(&v);
        } else {
            println!(
                "Tunnel {} ({}) no longer accepts cloudflared connectors",
                s(&v["name"]),
                s(&v["id"])
            );
        }
        return Ok(());
    }
    if args.enable {
        let Some(file) = &args.credentials_file else {
            return Err(CliError::Local(
                "--enable needs the tunnel's --credentials-file: the edge keeps only a key                  derived from the secret, and needs the secret once to accept cloudflared"
                    .to_owned(),
            ));
        };
        let creds = std::fs::read(file)
            .map_err(|e| CliError::Local(format!("cannot read {}: {e}", file.display())))?;
        let creds: Value = serde_json::from_slice(&creds).map_err(|e| {
            CliError::Local(format!("{} is not a credentials file: {e}", file.display()))
        })?;
        c.call(
            "PUT",
            &path,
            Some(&json!({ "enabled": true, "credentials": creds })),
        )?;
    }
    let tunnel = c.get(&format!("/v1/tunnels/{}", enc(&args.tunnel)))?;
    let id = s(&tunnel["id"]);
    if tunnel["accepts_cloudflared"] != true {
        return Err(CliError::Local(format!(
            "tunnel {} ({id}) does not accept cloudflared connectors; opt in with `zt tunnel              cloudflared {} --enable --credentials-file FILE` (see docs/CLOUDFLARED.md for the              risk)",
            s(&tunnel["name"]),
            args.tunnel
        )));
    }
    let account = c.get("/v1/account")?;
    let edge = match args.edge.or_else(|| arr(&account["edge"]).first().map(s)) {
        Some(e) => e,
        None => {
            return Err(CliError::Local(
                "the edge advertises no address; give --edge HOST:PORT".to_owned(),
            ))
        }
    };
    let ca = account["ca_pem"].as_str().ok_or_else(|| {
        CliError::Local("the edge did not send its CA certificate (older edge?)".to_owned())
    })?;
    std::fs::write(&args.ca_file, ca)
        .map_err(|e| CliError::Local(format!("cannot write {}: {e}", args.ca_file.display())))?;
    let creds = args
        .credentials_file
        .unwrap_or_else(|| PathBuf::from(format!("{id}.json")));
    let mut command: Vec<String> = vec![
        "cloudflared".into(),
        "tunnel".into(),
        "--no-autoupdate".into(),
    ];
    if let Some(config) = &args.config_file {
        let yaml = format!(
            "# cloudflared configuration for zt tunnel {id}, written by `zt tunnel cloudflared`.\n\
             tunnel: {id}\n\
             credentials-file: {}\n\
             warp-routing:\n  enabled: true\n",
            serde_json::to_string(&creds.display().to_string()).unwrap_or_default()
        );
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(config)
            .and_then(|mut f| f.write_all(yaml.as_bytes()))
            .map_err(|e| {
                CliError::Local(format!(
                    "cannot write {} (it is never overwritten): {e}",
                    config.display()
                ))
            })?;
        command.extend(["--config".into(), config.display().to_string()]);
    }
    // Tunnel-level flags (--edge is a hidden one) before `run`, run's own after it.
    command.extend([
        "--edge".into(),
        edge,
        "--cacert".into(),
        args.ca_file.display().to_string(),
        "--protocol".into(),
        "quic".into(),
        "run".into(),
        "--credentials-file".into(),
        creds.display().to_string(),
        id.clone(),
    ]);
    if c.json() {
        print_json(&json!({
            "tunnel": id,
            "ca_file": args.ca_file,
            "command": command,
        }));
    } else {
        eprintln!("CA certificate written to {}", args.ca_file.display());
        println!(
            "{}",
            command
                .iter()
                .map(|w| shell_word(w))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}

/// Writes a credentials file; on failure says that the record was created on the edge
/// anyway and how to undo it.
fn write_secret_file(
    path: &Path,
    what: String,
    write: impl FnOnce(&Path) -> Result<(), zt_creds::WriteError>,
) -> CliResult<()> {
    write(path).map_err(|e| {
        CliError::Local(format!(
            "{e}. The edge has created {what} already; its secret is lost with this failure, so \
             delete it and create it again"
        ))
    })
}

pub(crate) fn route(args: RouteArgs) -> anyhow::Result<ExitCode> {
    let RouteCommand::Ip { command } = args.command;
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        match command {
            IpCommand::Add {
                cidr,
                tunnel,
                vnet,
                comment,
            } => {
                let v = c.call(
                    "POST",
                    "/v1/routes",
                    Some(&json!({ "network": cidr, "tunnel": tunnel, "vnet": vnet, "comment": comment })),
                )?;
                if c.json() {
                    print_json(&v);
                } else {
                    println!(
                        "Routed {} to tunnel {} in virtual network {} (route {})",
                        s(&v["network"]),
                        s(&v["tunnel_name"]),
                        s(&v["vnet_name"]),
                        s(&v["id"])
                    );
                }
            }
            IpCommand::Show { vnet, tunnel } => {
                let v = c.get(&format!(
                    "/v1/routes{}",
                    query(&[("vnet", vnet.as_deref()), ("tunnel", tunnel.as_deref())])
                ))?;
                if c.json() {
                    print_json(&v);
                } else {
                    print_routes(&v);
                }
            }
            IpCommand::Get { ip, vnet } => {
                let v = c.get(&format!(
                    "/v1/routes/ip/{}{}",
                    enc(&ip),
                    query(&[("vnet", vnet.as_deref())])
                ))?;
                if c.json() {
                    print_json(&v);
                } else if v["matched"].is_null() {
                    println!(
                        "{} has no route in virtual network {}",
                        s(&v["address"]),
                        s(&v["vnet_name"])
                    );
                } else {
                    println!(
                        "{} in virtual network {} goes to tunnel {} by route {}",
                        s(&v["address"]),
                        s(&v["vnet_name"]),
                        s(&v["matched"]["tunnel_name"]),
                        s(&v["matched"]["network"])
                    );
                    let mut routes = vec![v["matched"].clone()];
                    routes.extend(arr(&v["also_covering"]).iter().cloned());
                    let mut rows = route_rows(&Value::Array(routes));
                    for (i, r) in rows.iter_mut().enumerate() {
                        r.insert(0, if i == 0 { "matched" } else { "also covers" }.to_owned());
                    }
                    println!();
                    let header: Vec<&str> = std::iter::once("").chain(ROUTE_HEADER).collect();
                    print_table(&header, &rows);
                }
            }
            IpCommand::Delete { route, vnet } => {
                let v = c.call(
                    "DELETE",
                    &format!(
                        "/v1/routes{}",
                        query(&[("route", Some(&route)), ("vnet", vnet.as_deref())])
                    ),
                    None,
                )?;
                if c.json() {
                    print_json(&v);
                } else {
                    println!(
                        "Deleted route {} ({} in virtual network {})",
                        s(&v["id"]),
                        s(&v["network"]),
                        s(&v["vnet_name"])
                    );
                }
            }
        }
        Ok(())
    })())
}

pub(crate) fn vnet(args: VnetArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        let path = |v: &str| format!("/v1/vnets/{}", enc(v));
        let (v, said) = match args.command {
            VnetCommand::Add {
                name,
                comment,
                default,
            } => {
                let v = c.call(
                    "POST",
                    "/v1/vnets",
                    Some(&json!({ "name": name, "comment": comment, "default": default })),
                )?;
                let said = format!("Added virtual network {} ({})", s(&v["name"]), s(&v["id"]));
                (v, said)
            }
            VnetCommand::List => {
                let v = c.get("/v1/vnets")?;
                if !c.json() {
                    let rows: Vec<Vec<String>> = arr(&v)
                        .iter()
                        .map(|n| {
                            vec![
                                s(&n["id"]),
                                s(&n["name"]),
                                if n["is_default"] == true { "yes" } else { "" }.to_owned(),
                                s(&n["routes"]),
                                s(&n["comment"]),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "NAME", "DEFAULT", "ROUTES", "COMMENT"], &rows);
                    return Ok(());
                }
                (v, String::new())
            }
            VnetCommand::Rename { vnet, new_name } => {
                let v = c.call("PATCH", &path(&vnet), Some(&json!({ "name": new_name })))?;
                let said = format!("Renamed virtual network {vnet} to {}", s(&v["name"]));
                (v, said)
            }
            VnetCommand::Delete { vnet } => {
                let v = c.call("DELETE", &path(&vnet), None)?;
                let said = format!(
                    "Deleted virtual network {} ({})",
                    s(&v["name"]),
                    s(&v["id"])
                );
                (v, said)
            }
            VnetCommand::Default { vnet } => {
                let v = c.call("PATCH", &path(&vnet), Some(&json!({ "default": true })))?;
                let said = format!("{} is now the default virtual network", s(&v["name"]));
                (v, said)
            }
        };
        if c.json() {
            print_json(&v);
        } else {
            println!("{said}");
        }
        Ok(())
    })())
}

/// Items from a file: one per line, blank lines and `#` comments skipped.
fn read_items(path: &Path) -> CliResult<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Local(format!("cannot read {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

fn print_list(l: &Value) {
    println!("ID:           {}", s(&l["id"]));
    println!("NAME:         {}", s(&l["name"]));
    println!("TYPE:         {}", s(&l["type"]));
    println!("SLUG:         {}", s(&l["slug"]));
    println!("REFERENCE:    {}", s(&l["reference"]));
    if l["description"].as_str().is_some_and(|d| !d.is_empty()) {
        println!("DESCRIPTION:  {}", s(&l["description"]));
    }
    println!("ITEMS:        {}", arr(&l["items"]).len());
    for i in arr(&l["items"]) {
        println!("  {}", s(i));
    }
}

pub(crate) fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        let path = |l: &str| format!("/v1/lists/{}", enc(l));
        let v = match args.command {
            ListCommand::Create {
                name,
                list_type,
                slug,
                description,
                file,
                mut items,
            } => {
                if let Some(f) = &file {
                    items.extend(read_items(f)?);
                }
                let v = c.call(
                    "POST",
                    "/v1/lists",
                    Some(&json!({ "name": name, "type": list_type, "slug": slug,
                                  "description": description, "items": items })),
                )?;
                if !c.json() {
                    println!(
                        "Created list {} with {} item(s); rules refer to it as {}{}",
                        s(&v["name"]),
                        arr(&v["items"]).len(),
                        s(&v["reference"]),
                        v["slug"]
                            .as_str()
                            .map(|sl| format!(" or ${sl}"))
                            .unwrap_or_default()
                    );
                }
                v
            }
            ListCommand::Show { list: Some(l) } => {
                let v = c.get(&path(&l))?;
                if !c.json() {
                    print_list(&v);
                }
                v
            }
            ListCommand::Show { list: None } => {
                let v = c.get("/v1/lists")?;
                if !c.json() {
                    let rows: Vec<Vec<String>> = arr(&v)
                        .iter()
                        .map(|l| {
                            vec![
                                s(&l["id"]),
                                s(&l["name"]),
                                s(&l["type"]),
                                s(&l["slug"]),
                                arr(&l["items"]).len().to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "NAME", "TYPE", "SLUG", "ITEMS"], &rows);
                }
                v
            }
            ListCommand::Update {
                list,
                add,
                remove,
                file,
                description,
            } => {
                let mut body = json!({ "add": add, "remove": remove });
                if let Some(f) = &file {
                    body["items"] = json!(read_items(f)?);
                }
                if let Some(d) = description {
                    body["description"] = json!(d);
                }
                let v = c.call("PATCH", &path(&list), Some(&body))?;
                if !c.json() {
                    println!(
                        "Updated list {}: {} item(s)",
                        s(&v["name"]),
                        arr(&v["items"]).len()
                    );
                }
                v
            }
            ListCommand::Delete { list } => {
                let v = c.call("DELETE", &path(&list), None)?;
                if !c.json() {
                    println!("Deleted list {} ({})", s(&v["name"]), s(&v["id"]));
                }
                v
            }
        };
        if c.json() {
            print_json(&v);
        }
        Ok(())
    })())
}

pub(crate) fn rule(args: RuleArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        let path = |r: &str| format!("/v1/rules/{}", enc(r));
        let v = match args.command {
            RuleCommand::Create {
                name,
                flags,
                disabled,
            } => {
                let mut body = flags.body();
                body["name"] = json!(name);
                body["enabled"] = json!(!disabled);
                let v = c.call("POST", "/v1/rules", Some(&body))?;
                if !c.json() {
                    println!(
                        "Created rule {} ({}): {} at precedence {} in {}",
                        s(&v["name"]),
                        s(&v["id"]),
                        s(&v["action"]),
                        s(&v["precedence"]),
                        arr(&v["filters"])
                            .iter()
                            .map(s)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                v
            }
            RuleCommand::List => {
                let v = c.get("/v1/rules")?;
                if !c.json() {
                    let rows: Vec<Vec<String>> = arr(&v)
                        .iter()
                        .map(|r| {
                            vec![
                                s(&r["precedence"]),
                                s(&r["name"]),
                                s(&r["action"]),
                                arr(&r["filters"])
                                    .iter()
                                    .map(s)
                                    .collect::<Vec<_>>()
                                    .join(","),
                                if r["enabled"] == true { "yes" } else { "no" }.to_owned(),
                                s(&r["traffic"]),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "PRECEDENCE",
                            "NAME",
                            "ACTION",
                            "FILTERS",
                            "ENABLED",
                            "TRAFFIC",
                        ],
                        &rows,
                    );
                }
                v
            }
            RuleCommand::Update {
                rule,
                flags,
                name,
                enable,
                disable,
            } => {
                let mut body = flags.body();
                if let Some(n) = name {
                    body["name"] = json!(n);
                }
                if enable || disable {
                    body["enabled"] = json!(enable);
                }
                let v = c.call("PATCH", &path(&rule), Some(&body))?;
                if !c.json() {
                    println!("Updated rule {} ({})", s(&v["name"]), s(&v["id"]));
                }
                v
            }
            RuleCommand::Delete { rule } => {
                let v = c.call("DELETE", &path(&rule), None)?;
                if !c.json() {
                    println!("Deleted rule {} ({})", s(&v["name"]), s(&v["id"]));
                }
                v
            }
        };
        if c.json() {
            print_json(&v);
        }
        Ok(())
    })())
}

pub(crate) fn user(args: UserArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        match args.command {
            UserCommand::Add {
                email,
                groups,
                output_file,
                edge,
                device_name,
            } => {
                if let Some(p) = &output_file {
                    if p.exists() {
                        return Err(CliError::Local(format!(
                            "{} already exists; refusing to overwrite it (choose another --output-file)",
                            p.display()
                        )));
                    }
                }
                let v = c.call(
                    "POST",
                    "/v1/users",
                    Some(&json!({ "email": email, "groups": groups, "edge": edge,
                                  "device_name": device_name })),
                )?;
                let creds = DeviceCredentials::from_json(v["credentials"].to_string().as_bytes())
                    .map_err(|e| {
                    CliError::Local(format!("the edge sent unusable credentials: {e}"))
                })?;
                let path = output_file.unwrap_or_else(|| {
                    PathBuf::from(format!("zt-device-{}.json", creds.device_id))
                });
                write_secret_file(&path, format!("user {email}"), |p| {
                    creds.write(p, ExistingFile::Refuse)
                })?;
                if c.json() {
                    print_json(&json!({ "user": v["user"], "device": v["device"],
                                        "credentials_file": path }));
                } else {
                    println!(
                        "Added user {} with device {}",
                        s(&v["user"]["email"]),
                        creds.device_id
                    );
                    println!(
                        "Device credentials written to {} (give it to the user: `zt client --credentials {}`)",
                        path.display(),
                        path.display()
                    );
                }
            }
            UserCommand::List => {
                let v = c.get("/v1/users")?;
                if c.json() {
                    print_json(&v);
                } else {
                    let rows: Vec<Vec<String>> = arr(&v)
                        .iter()
                        .map(|u| {
                            vec![
                                s(&u["id"]),
                                s(&u["email"]),
                                arr(&u["groups"])
                                    .iter()
                                    .map(s)
                                    .collect::<Vec<_>>()
                                    .join(","),
                                arr(&u["devices"]).len().to_string(),
                                s(&u["created_at"]),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "EMAIL", "GROUPS", "DEVICES", "CREATED"], &rows);
                }
            }
            UserCommand::Remove { user } => {
                let v = c.call("DELETE", &format!("/v1/users/{}", enc(&user)), None)?;
                if c.json() {
                    print_json(&v);
                } else {
                    println!(
                        "Removed user {}; revoked {} device(s)",
                        s(&v["user"]["email"]),
                        arr(&v["revoked_devices"]).len()
                    );
                }
            }
        }
        Ok(())
    })())
}

pub(crate) fn account(args: AccountArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        let v = c.get("/v1/account")?;
        if c.json() {
            print_json(&v);
        } else {
            println!("Account tag:          {}", s(&v["account_tag"]));
            println!("CA fingerprint:       {}", s(&v["ca_fingerprint"]));
            println!("CA certificate:       {}", s(&v["ca_pem_path"]));
            println!("Default vnet:         {}", s(&v["default_vnet"]["name"]));
            let edges: Vec<String> = arr(&v["edge"]).iter().map(s).collect();
            if !edges.is_empty() {
                println!("Edge addresses:       {}", edges.join(", "));
            }
        }
        Ok(())
    })())
}
