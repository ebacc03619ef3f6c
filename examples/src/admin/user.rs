//! `zt user add|list|remove`: users and their device credentials (written 0600, never
//! overwritten).

use std::path::PathBuf;
use std::process::ExitCode;

use hyper::Method;
use serde_json::json;
use zt_creds::{DeviceCredentials, ExistingFile};

use super::args::{UserArgs, UserCommand};
use super::http::{enc, AdminClient};
use super::output::{arr, print_json, print_table, s};
use super::{finish, write_secret_file, CliError};

pub(crate) fn run(args: UserArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        match args.command {
            UserCommand::Add {
                email,
                groups,
                output_file,
                edge,
                device_name,
            } => {
                if let Some(p) = &output_file {
                    if p.exists() {
                        return Err(CliError::Local(format!(
                            "{} already exists; refusing to overwrite it (choose another --output-file)",
                            p.display()
                        )));
                    }
                }
                let v = c.call(
                    Method::POST,
                    "/v1/users",
                    Some(&json!({ "email": email, "groups": groups, "edge": edge,
                                  "device_name": device_name })),
                )?;
                let creds = DeviceCredentials::from_json(v["credentials"].to_string().as_bytes())
                    .map_err(|e| {
                    CliError::Local(format!("the edge sent unusable credentials: {e}"))
                })?;
                let path = output_file.unwrap_or_else(|| {
                    PathBuf::from(format!("zt-device-{}.json", creds.device_id))
                });
                write_secret_file(&path, format!("user {email}"), |p| {
                    creds.write(p, ExistingFile::Refuse)
                })?;
                if c.json() {
                    print_json(&json!({ "user": v["user"], "device": v["device"],
                                        "credentials_file": path }));
                } else {
                    println!(
                        "Added user {} with device {}",
                        s(&v["user"]["email"]),
                        creds.device_id
                    );
                    println!(
                        "Device credentials written to {} (give it to the user: `zt client --credentials {}`)",
                        path.display(),
                        path.display()
                    );
                }
            }
            UserCommand::List => {
                let v = c.get("/v1/users")?;
                if c.json() {
                    print_json(&v);
                } else {
                    let rows: Vec<Vec<String>> = arr(&v)
                        .iter()
                        .map(|u| {
                            vec![
                                s(&u["id"]),
                                s(&u["email"]),
                                arr(&u["groups"])
                                    .iter()
                                    .map(s)
                                    .collect::<Vec<_>>()
                                    .join(","),
                                arr(&u["devices"]).len().to_string(),
                                s(&u["created_at"]),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "EMAIL", "GROUPS", "DEVICES", "CREATED"], &rows);
                }
            }
            UserCommand::Remove { user } => {
                let v = c.call(Method::DELETE, &format!("/v1/users/{}", enc(&user)), None)?;
                if c.json() {
                    print_json(&v);
                } else {
                    println!(
                        "Removed user {}; revoked {} device(s)",
                        s(&v["user"]["email"]),
                        arr(&v["revoked_devices"]).len()
                    );
                }
            }
        }
        Ok(())
    })())
}
