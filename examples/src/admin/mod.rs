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
//! - 3: the admin API cannot be reached or refused the token;
//! - 4: `zt plan`: changes are pending;
//! - 5: `zt plan --detect-drift`: the edge changed outside the file since the last apply.
//!
//! The parts: `args` (the clap types, whose doc comments are the help text), `http` (the
//! admin API client), `output` (tables and JSON), and one module per resource with its
//! handlers. Every handler returns a [`CliError`] that [`finish`] turns into the message on
//! stderr and the exit code above; the admin token is never printed.

mod account;
mod args;
mod config;
mod device;
mod edge;
mod http;
mod idp;
mod list;
mod output;
mod route;
mod rule;
mod token;
mod tunnel;
mod user;
mod vnet;

use std::path::Path;
use std::process::ExitCode;

pub(crate) use account::run as account;
pub(crate) use args::{
    AccountArgs, ApplyArgs, DeviceArgs, EdgeJoinArgs, EdgeListArgs, EdgeRemoveArgs, ExportArgs,
    IdpArgs, ListArgs, PlanArgs, PolicyArgs, RouteArgs, RuleArgs, TokenArgs, TunnelArgs, UserArgs,
    VnetArgs,
};
pub(crate) use config::{apply, export, plan, policy};
pub(crate) use device::run as device;
pub(crate) use edge::{join as edge_join, list as edge_list, remove as edge_remove};
pub(crate) use idp::run as idp;
pub(crate) use list::run as list;
pub(crate) use route::run as route;
pub(crate) use rule::run as rule;
pub(crate) use token::run as token;
pub(crate) use tunnel::run as tunnel;
pub(crate) use user::run as user;
pub(crate) use vnet::run as vnet;

const EXIT_REFUSED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;

/// The exit codes, for every admin command's `--help`.
const EXIT_CODES: &str = "Exit codes: 0 done, 1 refused by the edge or a local step failed, \
2 usage error, 3 the admin API cannot be reached or refused the token.";

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

/// What every handler returns.
type CliResult<T> = Result<T, CliError>;

/// The exit code of a handler's result, after printing its error.
fn finish(result: CliResult<()>) -> anyhow::Result<ExitCode> {
    Ok(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    })
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
