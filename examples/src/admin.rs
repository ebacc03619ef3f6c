//! Admin commands: tunnels, routes, virtual networks, lists, rules, users, account.
//!
//! `zt tunnel run` (the connector) is dispatched to [`crate::connector`]; everything else
//! here talks to the edge's admin API.

use std::process::ExitCode;

use clap::{Args, Subcommand};

/// `zt tunnel …`
#[derive(Debug, Args)]
pub(crate) struct TunnelArgs {
    #[command(flatten)]
    pub(crate) connector: crate::connector::TunnelFlags,
    #[command(subcommand)]
    pub(crate) command: TunnelCommand,
}

/// Subcommands of `zt tunnel`.
#[derive(Debug, Subcommand)]
pub(crate) enum TunnelCommand {
    /// Run the connector for a tunnel (cloudflared's `tunnel run`).
    Run(crate::connector::RunArgs),
}

/// `zt route …`
#[derive(Debug, Args)]
pub(crate) struct RouteArgs {}
/// `zt vnet …`
#[derive(Debug, Args)]
pub(crate) struct VnetArgs {}
/// `zt list …`
#[derive(Debug, Args)]
pub(crate) struct ListArgs {}
/// `zt rule …`
#[derive(Debug, Args)]
pub(crate) struct RuleArgs {}
/// `zt user …`
#[derive(Debug, Args)]
pub(crate) struct UserArgs {}
/// `zt account`
#[derive(Debug, Args)]
pub(crate) struct AccountArgs {}

fn not_built(what: &str) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`zt {what}` is not available in this build yet")
}

pub(crate) fn tunnel(args: TunnelArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TunnelCommand::Run(run) => crate::connector::run(args.connector, run),
    }
}

pub(crate) fn route(_args: RouteArgs) -> anyhow::Result<ExitCode> {
    not_built("route")
}
pub(crate) fn vnet(_args: VnetArgs) -> anyhow::Result<ExitCode> {
    not_built("vnet")
}
pub(crate) fn list(_args: ListArgs) -> anyhow::Result<ExitCode> {
    not_built("list")
}
pub(crate) fn rule(_args: RuleArgs) -> anyhow::Result<ExitCode> {
    not_built("rule")
}
pub(crate) fn user(_args: UserArgs) -> anyhow::Result<ExitCode> {
    not_built("user")
}
pub(crate) fn account(_args: AccountArgs) -> anyhow::Result<ExitCode> {
    not_built("account")
}
