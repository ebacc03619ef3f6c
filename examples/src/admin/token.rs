//! `zt token create|list|revoke`: service tokens, the credentials pipelines use with
//! `zt client` (written 0600, never overwritten; the secret is never shown again).

use std::path::PathBuf;
use std::process::ExitCode;

use hyper::Method;
use serde_json::json;
use zt_creds::{DeviceCredentials, ExistingFile};

use super::args::{TokenArgs, TokenCommand};
use super::http::{enc, AdminClient};
use super::idp::parse_duration;
use super::output::{arr, print_json, print_table, s};
use super::{finish, write_secret_file, CliError};

pub(crate) fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        match args.command {
            TokenCommand::Create {
                name,
                groups,
                expires,
                output_file,
                edge,
            } => {
                let path =
                    output_file.unwrap_or_else(|| PathBuf::from(format!("zt-token-{name}.json")));
                if path.exists() {
                    return Err(CliError::Local(format!(
                        "{} already exists; refusing to overwrite it (choose another --output-file)",
                        path.display()
                    )));
                }
                let expires_in_secs = match &expires {
                    Some(e) => Some(
                        parse_duration(e)
                            .map_err(|e| CliError::Local(format!("--expires: {e}")))?,
                    ),
                    None => None,
                };
                let v = c.call(
                    Method::POST,
                    "/v1/tokens",
                    Some(&json!({ "name": name, "groups": groups, "edge": edge,
                                  "expires_in_secs": expires_in_secs })),
                )?;
                let creds = DeviceCredentials::from_json(v["credentials"].to_string().as_bytes())
                    .map_err(|e| {
                    CliError::Local(format!("the edge sent unusable credentials: {e}"))
                })?;
                write_secret_file(&path, format!("service token {name}"), |p| {
                    creds.write(p, ExistingFile::Refuse)
                })?;
                if c.json() {
                    print_json(&json!({ "token": v["token"], "credentials_file": path }));
                } else {
                    let until = match v["token"]["expires_at"].as_str() {
                        Some(at) => format!("until {at}"),
                        None => "until revoked".to_owned(),
                    };
                    println!(
                        "Created service token {} ({}), valid {until}",
                        s(&v["token"]["name"]),
                        s(&v["token"]["id"])
                    );
                    println!(
                        "Credentials written to {} (the pipeline runs `zt client --credentials {} …`; keep it as a CI secret)",
                        path.display(),
                        path.display()
                    );
                }
            }
            TokenCommand::List => {
                let v = c.get("/v1/tokens")?;
                if c.json() {
                    print_json(&v);
                } else {
                    let rows: Vec<Vec<String>> = arr(&v)
                        .iter()
                        .map(|t| {
                            vec![
                                s(&t["name"]),
                                s(&t["id"]),
                                arr(&t["groups"])
                                    .iter()
                                    .map(s)
                                    .collect::<Vec<_>>()
                                    .join(","),
                                s(&t["created_at"]),
                                t["expires_at"].as_str().unwrap_or("never").to_owned(),
                                s(&t["state"]),
                            ]
                        })
                        .collect();
                    print_table(
                        &["NAME", "ID", "GROUPS", "CREATED", "EXPIRES", "STATE"],
                        &rows,
                    );
                }
            }
            TokenCommand::Revoke { token } => {
                let v = c.call(
                    Method::POST,
                    &format!("/v1/tokens/{}/revoke", enc(&token)),
                    None,
                )?;
                if c.json() {
                    print_json(&v);
                } else {
                    println!(
                        "Revoked service token {}: it is refused from now on and its open flows are ended",
                        s(&v["name"])
                    );
                }
            }
        }
        Ok(())
    })())
}
