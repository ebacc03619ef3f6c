//! The command line of the admin commands: clap types only. Their doc comments are the
//! `--help` text, so they are written for the person at the terminal.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::EXIT_CODES;

/// Where to find the admin API, and how to print.
#[derive(Debug, Args, Clone)]
pub(crate) struct AdminOpts {
    /// The edge's state directory, where `admin.addr` and `admin-token` are
    /// (default: the edge's default state directory).
    #[arg(long, value_name = "DIR", global = true)]
    pub(super) state_dir: Option<PathBuf>,
    /// The admin API's URL, e.g. http://127.0.0.1:7800 (env ZT_ADMIN_URL).
    #[arg(long, value_name = "URL", global = true)]
    pub(super) admin_url: Option<String>,
    /// A file holding the admin token (env ZT_ADMIN_TOKEN_FILE).
    #[arg(long, value_name = "FILE", global = true)]
    pub(super) admin_token_file: Option<PathBuf>,
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub(super) output: Output,
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
    pub(super) admin: AdminOpts,
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

/// cloudflared's `--protocol` values the edge serves.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum CloudflaredProtocol {
    /// QUIC over UDP (ALPN `argotunnel`).
    Quic,
    /// HTTP/2 over TLS on TCP (server name `h2.cftunnel.com`).
    Http2,
    /// QUIC first, HTTP/2 after a QUIC failure.
    Auto,
}

impl CloudflaredProtocol {
    pub(super) fn word(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Http2 => "http2",
            Self::Auto => "auto",
        }
    }
}

/// `zt tunnel cloudflared TUNNEL …`
#[derive(Debug, Args)]
pub(crate) struct CloudflaredArgs {
    /// Tunnel id or name.
    pub(super) tunnel: String,
    /// Where to write the edge's CA certificate (PEM), passed to cloudflared as `--cacert`.
    #[arg(long, value_name = "PATH", default_value = "zt-edge-ca.pem")]
    pub(super) ca_file: PathBuf,
    /// The tunnel's credentials file: printed in the command line (default
    /// ./TUNNEL-ID.json), and read by `--enable`.
    #[arg(long, value_name = "PATH")]
    pub(super) credentials_file: Option<PathBuf>,
    /// Edge address (HOST:PORT) for cloudflared's `--edge` (default: the edge's advertised
    /// address).
    #[arg(long, value_name = "HOST:PORT")]
    pub(super) edge: Option<String>,
    /// Also write a minimal cloudflared config file here (tunnel, credentials file, and
    /// `warp-routing: enabled: true`, which cloudflared versions that have the switch need
    /// to serve private-network flows) and pass it with `--config`; never overwritten.
    #[arg(long, value_name = "PATH")]
    pub(super) config_file: Option<PathBuf>,
    /// The transport cloudflared uses, printed as its `--protocol`: `quic` (UDP, the
    /// default), `http2` (TLS over TCP to the same address, for sites whose egress drops
    /// UDP) or `auto` (QUIC first, HTTP/2 after QUIC fails). UDP flows (warp-routing's UDP)
    /// are carried over QUIC only.
    #[arg(long, value_enum, default_value = "quic")]
    pub(super) protocol: CloudflaredProtocol,
    /// Accept cloudflared connectors for this tunnel. Their protocol sends the secret
    /// itself, so the edge then keeps a SHA-256 of it (see docs/CLOUDFLARED.md); needs
    /// `--credentials-file`.
    #[arg(long, conflicts_with = "disable")]
    pub(super) enable: bool,
    /// Stop accepting cloudflared connectors for this tunnel (connections already
    /// registered stay until they reconnect).
    #[arg(long)]
    pub(super) disable: bool,
}

/// `zt route …`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct RouteArgs {
    #[command(flatten)]
    pub(super) admin: AdminOpts,
    #[command(subcommand)]
    pub(super) command: RouteCommand,
}

#[derive(Debug, Subcommand)]
pub(super) enum RouteCommand {
    /// Private-network IP routes.
    Ip {
        #[command(subcommand)]
        command: IpCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum IpCommand {
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
    pub(super) admin: AdminOpts,
    #[command(subcommand)]
    pub(super) command: VnetCommand,
}

#[derive(Debug, Subcommand)]
pub(super) enum VnetCommand {
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
    pub(super) admin: AdminOpts,
    #[command(subcommand)]
    pub(super) command: ListCommand,
}

#[derive(Debug, Subcommand)]
pub(super) enum ListCommand {
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
    pub(super) admin: AdminOpts,
    #[command(subcommand)]
    pub(super) command: RuleCommand,
}

/// The fields of a rule, as flags.
#[derive(Debug, Args)]
pub(super) struct RuleFlags {
    /// Lower runs first; unique within a filter.
    #[arg(long)]
    pub(super) precedence: Option<u32>,
    /// allow, block or off (off: http filter only).
    #[arg(long)]
    pub(super) action: Option<String>,
    /// l4, http or dns; repeat for several (a new rule defaults to l4).
    #[arg(long = "filter", value_name = "FILTER")]
    pub(super) filters: Vec<String>,
    /// The traffic expression, e.g. `net.dst.ip in $k8s_api and net.dst.port == 443`.
    #[arg(long)]
    pub(super) traffic: Option<String>,
    /// The identity expression.
    #[arg(long)]
    pub(super) identity: Option<String>,
    /// The device posture expression.
    #[arg(long)]
    pub(super) device_posture: Option<String>,
    /// Free text.
    #[arg(long)]
    pub(super) description: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(super) enum RuleCommand {
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
    pub(super) admin: AdminOpts,
    #[command(subcommand)]
    pub(super) command: UserCommand,
}

#[derive(Debug, Subcommand)]
pub(super) enum UserCommand {
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

/// `zt device`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct DeviceArgs {
    #[command(flatten)]
    pub(super) admin: AdminOpts,
    #[command(subcommand)]
    pub(super) command: DeviceCommand,
}

#[derive(Debug, Subcommand)]
pub(super) enum DeviceCommand {
    /// List devices with their users (keys are never shown).
    List {
        /// Only this user's devices (email or id).
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke one device: it is refused at once and its live flows end (close reason
    /// `revoked`); the user's other devices go on.
    Revoke {
        /// The device id (`zt device list`).
        device: String,
    },
}

/// `zt token`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    pub(super) admin: AdminOpts,
    #[command(subcommand)]
    pub(super) command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
    /// Create a service token for a pipeline and write its credentials (0600), which
    /// `zt client --credentials FILE` uses exactly like a device's.
    Create {
        /// A unique name, as the audit log says it.
        name: String,
        /// A group policy sees (`identity.groups`); repeat for several.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// How long the token works (`30d`, `12h`, `90m`); default: until revoked.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        /// Where to write the credentials (default: ./zt-token-NAME.json); never
        /// overwritten.
        #[arg(long, value_name = "PATH")]
        output_file: Option<PathBuf>,
        /// Edge address (HOST:PORT) the pipeline reaches; repeat for several (default: the
        /// edge's own, when it knows them).
        #[arg(long = "edge", value_name = "HOST:PORT")]
        edge: Vec<String>,
    },
    /// List service tokens (secrets are never shown).
    List,
    /// Revoke a token: refused at once, its live flows end (close reason `revoked`).
    Revoke {
        /// Name or id.
        token: String,
    },
}

/// `zt account`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct AccountArgs {
    #[command(flatten)]
    pub(super) admin: AdminOpts,
}

/// The exit codes of `zt plan` and `zt apply`.
pub(super) const PLAN_EXIT_CODES: &str = "Exit codes: 0 nothing to do (plan) or applied \
(apply), 1 the file or one of its policy tests failed (both commands run them first) or the \
edge refused, 2 usage error, 3 the admin API \
cannot be reached or refused the token, 4 changes are pending (plan), 5 drift: changes made \
outside the file since the last apply (plan --detect-drift).";

/// The file and how to plan it.
#[derive(Debug, Args)]
pub(crate) struct FileOpts {
    /// The configuration file (YAML).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub(super) file: PathBuf,
    /// Also delete what the file does not name (never users no apply wrote, devices, or
    /// the default virtual network).
    #[arg(long)]
    pub(super) prune: bool,
    /// With --prune: delete tunnels even while connectors are connected.
    #[arg(long, requires = "prune")]
    pub(super) force: bool,
}

/// `zt plan -f FILE`
#[derive(Debug, Args)]
#[command(after_help = PLAN_EXIT_CODES)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    pub(super) file: FileOpts,
    /// Also report changes made outside the file since it was last applied, by resource.
    #[arg(long)]
    pub(super) detect_drift: bool,
    #[command(flatten)]
    pub(super) admin: AdminOpts,
}

/// `zt apply -f FILE`
#[derive(Debug, Args)]
#[command(after_help = PLAN_EXIT_CODES)]
pub(crate) struct ApplyArgs {
    #[command(flatten)]
    pub(super) file: FileOpts,
    /// Where to write the credentials of tunnels the apply creates (`NAME.json`, mode
    /// 0600, never overwritten); required when the plan creates a tunnel.
    #[arg(long, value_name = "DIR")]
    pub(super) credentials_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(super) admin: AdminOpts,
}

/// `zt export`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct ExportArgs {
    /// Write to this file instead of standard output (refused if it exists).
    #[arg(long = "out", value_name = "FILE")]
    pub(super) out: Option<PathBuf>,
    #[command(flatten)]
    pub(super) admin: AdminOpts,
}

/// `zt policy …`
#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    #[command(subcommand)]
    pub(super) command: PolicyCommand,
}

/// Subcommands of `zt policy`.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Run a configuration file's policy tests against its own policy; needs no edge.
    /// Exit codes: 0 every case passed, 1 a case failed or the file is refused, 2 usage.
    Test {
        /// The configuration file (YAML).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// `table` for people, `json` for scripts.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// `zt idp …`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct IdpArgs {
    #[command(flatten)]
    pub(super) admin: AdminOpts,
    #[command(subcommand)]
    pub(super) command: IdpCommand,
}

#[derive(Debug, Subcommand)]
pub(super) enum IdpCommand {
    /// Trust an OpenID Provider for `zt login`.
    Add {
        /// A short name, as policy sees it (`identity.idp == "corp"`).
        name: String,
        /// The issuer URL, exactly as the provider's discovery document says it.
        #[arg(long)]
        issuer: String,
        /// The client id zt is registered under at the provider.
        #[arg(long)]
        client_id: String,
        /// A file holding the client secret, only where the provider insists on one.
        #[arg(long, value_name = "FILE")]
        client_secret_file: Option<std::path::PathBuf>,
        /// Scopes to ask for (repeatable; default `openid email profile groups`).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// The claim holding the user's groups.
        #[arg(long, default_value = "groups")]
        groups_claim: String,
        /// Email domains allowed to sign in (repeatable; none allows any verified email).
        #[arg(long = "allowed-domain", value_name = "DOMAIN")]
        allowed_domains: Vec<String>,
        /// How long a sign-in lasts (`12h`, `30m`, `7d`); capped by the edge's
        /// `--max-session-lifetime`.
        #[arg(long, default_value = "12h")]
        session_length: String,
        /// A PEM file of CA certificates for a provider behind a private CA.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<std::path::PathBuf>,
    },
    /// List the identity providers (client secrets are never shown).
    List,
    /// Stop trusting a provider.
    Remove {
        /// Name or id.
        idp: String,
    },
    /// Print the one-line enrollment string engineers pass to `zt login`.
    Enrollment {
        /// Name or id.
        idp: String,
    },
}

/// `zt edge list`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct EdgeListArgs {
    #[command(flatten)]
    pub(super) admin: AdminOpts,
}

/// `zt edge join`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct EdgeJoinArgs {
    #[command(flatten)]
    pub(super) admin: AdminOpts,
    /// The new edge's name, unique among the edges.
    pub(super) name: String,
    /// Where to write its state directory; must not hold an edge's state already.
    #[arg(long, value_name = "DIR")]
    pub(super) out: PathBuf,
    /// A DNS name or IP address connectors and clients reach the new edge at (repeatable;
    /// at least one).
    #[arg(long = "server-name", value_name = "NAME", required = true)]
    pub(super) server_names: Vec<String>,
}

/// `zt edge remove`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct EdgeRemoveArgs {
    #[command(flatten)]
    pub(super) admin: AdminOpts,
    /// Name or id.
    pub(super) edge: String,
}
