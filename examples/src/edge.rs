//! `zt edge`.

use std::process::ExitCode;

use clap::Args;

/// `zt edge` arguments.
#[derive(Debug, Args)]
pub(crate) struct EdgeArgs {}

pub(crate) fn run(_args: EdgeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`zt edge` is not available in this build yet")
}
