//! `zt client`.

use std::process::ExitCode;

use clap::Args;

/// `zt client` arguments.
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {}

pub(crate) fn run(_args: ClientArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`zt client` is not available in this build yet")
}
