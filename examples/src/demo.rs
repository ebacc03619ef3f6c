//! `zt demo`.

use std::process::ExitCode;

use clap::Args;

/// `zt demo` arguments.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {}

pub(crate) fn run(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`zt demo` is not available in this build yet")
}
