//! `zt tunnel [flags] run`: the connector, with cloudflared's argument shape.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Flags given before the subcommand, as cloudflared takes them (`zt tunnel --config F run`).
#[derive(Debug, Args)]
pub(crate) struct TunnelFlags {
    /// The connector's config.yaml (cloudflared's keys).
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) config: Option<PathBuf>,
}

/// `zt tunnel run [TUNNEL]`
#[derive(Debug, Args)]
pub(crate) struct RunArgs {}

pub(crate) fn run(_flags: TunnelFlags, _args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`zt tunnel run` is not available in this build yet")
}
