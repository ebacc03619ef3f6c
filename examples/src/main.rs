//! `zt`: one binary with a subcommand per role.

use clap::Parser;

/// zt — self-hosted Zero Trust access to private networks.
///
/// One binary, one subcommand per role: the connector (`zt tunnel run`), the edge
/// (`zt edge`), the client (`zt client`), the admin commands and a local demo.
#[derive(Debug, Parser)]
#[command(name = "zt", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
