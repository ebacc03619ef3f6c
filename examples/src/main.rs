//! `zt`: one binary with a subcommand per role.
//!
//! - `zt tunnel --config FILE run` — the connector, with cloudflared's argument shape;
//! - `zt edge run` — the edge;
//! - `zt client …` — the client (port-forward, SOCKS5);
//! - `zt tunnel create|list|info|delete`, `zt route ip …`, `zt vnet …`, `zt list …`,
//!   `zt rule …`, `zt user …`, `zt account` — admin commands against the edge's admin API;
//! - `zt demo` — a complete local demo on loopback.
//!
//! Each role lives in its own module; this file only parses the command line, installs
//! the tracing subscriber and dispatches.

mod admin;
mod client;
mod connector;
mod demo;
mod edge;
mod login;
mod mtu;
mod window;

use clap::{Parser, Subcommand};

/// zt — self-hosted Zero Trust access to private networks.
#[derive(Debug, Parser)]
#[command(
    name = "zt",
    version,
    about = "zt — self-hosted Zero Trust access to private networks",
    propagate_version = true
)]
struct Cli {
    /// Log filter, as RUST_LOG (e.g. `info`, `zt_edge=debug`). Overrides RUST_LOG.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a connector (`tunnel run`) or manage tunnels (`create`, `list`, `info`, `delete`).
    Tunnel(admin::TunnelArgs),
    /// Manage private-network routes (`zt route ip add|show|get|delete`).
    Route(admin::RouteArgs),
    /// Manage virtual networks.
    Vnet(admin::VnetArgs),
    /// Manage gateway lists (IPs, domains, emails, devices).
    List(admin::ListArgs),
    /// Manage gateway rules.
    Rule(admin::RuleArgs),
    /// Manage users and their device credentials.
    User(admin::UserArgs),
    /// List or revoke devices (`zt device list|revoke`).
    Device(admin::DeviceArgs),
    /// Manage service tokens for pipelines (`zt token create|list|revoke`).
    Token(admin::TokenArgs),
    /// Manage the identity providers engineers sign in with (`zt login`).
    Idp(admin::IdpArgs),
    /// Show the edge's account tag and CA fingerprint.
    Account(admin::AccountArgs),
    /// Show what applying a configuration file would change (exit 4 when changes are pending).
    Plan(admin::PlanArgs),
    /// Apply a configuration file in one transaction, after its policy tests pass.
    Apply(admin::ApplyArgs),
    /// Write the edge's live state in the configuration file's format.
    Export(admin::ExportArgs),
    /// Run a configuration file's policy tests, with no edge (`zt policy test -f FILE`).
    Policy(admin::PolicyArgs),
    /// Run the edge.
    Edge(edge::EdgeArgs),
    /// Run the client: port-forward or SOCKS5 proxy into the private network.
    Client(client::ClientArgs),
    /// Sign this device in through the edge's identity provider.
    Login(login::LoginArgs),
    /// End this device's sign-in at the edge and delete its credentials.
    Logout(login::LogoutArgs),
    /// Run a complete local demo on loopback.
    Demo(demo::DemoArgs),
}

fn init_tracing(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Colours only on a terminal (and not under NO_COLOR): a log piped to a file or a
    // collector stays plain text.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // cloudflared's `tunnel --loglevel` applies when `--log` is not given.
    let log = cli.log.clone().or_else(|| match &cli.command {
        Command::Tunnel(args) => connector::log_filter(&args.connector),
        // The demo narrates each hop on stdout; the runtimes' own logs would drown it.
        Command::Demo(_) => std::env::var("RUST_LOG").ok().or(Some("warn".to_owned())),
        _ => None,
    });
    init_tracing(log.as_deref());
    let result = match cli.command {
        Command::Tunnel(args) => admin::tunnel(args),
        Command::Route(args) => admin::route(args),
        Command::Vnet(args) => admin::vnet(args),
        Command::List(args) => admin::list(args),
        Command::Rule(args) => admin::rule(args),
        Command::User(args) => admin::user(args),
        Command::Device(args) => admin::device(args),
        Command::Token(args) => admin::token(args),
        Command::Idp(args) => admin::idp(args),
        Command::Account(args) => admin::account(args),
        Command::Plan(args) => admin::plan(args),
        Command::Apply(args) => admin::apply(args),
        Command::Export(args) => admin::export(args),
        Command::Policy(args) => admin::policy(args),
        Command::Edge(args) => edge::run(args),
        Command::Client(args) => client::run(args),
        Command::Login(args) => login::run_login(args),
        Command::Logout(args) => login::run_logout(args),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause only when the message so far does not already say
/// it: the libraries' errors carry their source's text in their own message, so `{:#}`
/// would print the same words two or three times.
fn describe(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
