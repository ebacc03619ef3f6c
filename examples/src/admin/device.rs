//! `zt device list|revoke`: every device, and revoking one without removing its user.

use std::process::ExitCode;

use hyper::Method;

use super::args::{DeviceArgs, DeviceCommand};
use super::finish;
use super::http::{enc, AdminClient};
use super::output::{arr, print_json, print_table, s};

pub(crate) fn run(args: DeviceArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        match args.command {
            DeviceCommand::List { user } => {
                let path = match &user {
                    Some(u) => format!("/v1/devices?user={}", enc(u)),
                    None => "/v1/devices".to_owned(),
                };
                let v = c.get(&path)?;
                if c.json() {
                    print_json(&v);
                } else {
                    let rows: Vec<Vec<String>> = arr(&v)
                        .iter()
                        .map(|d| {
                            let how = if d["login"].is_object() {
                                format!("zt login ({})", s(&d["login"]["provider"]))
                            } else {
                                "zt user add".to_owned()
                            };
                            vec![
                                s(&d["id"]),
                                s(&d["user_email"]),
                                s(&d["name"]),
                                how,
                                s(&d["created_at"]),
                                if d["revoked"] == true {
                                    "revoked"
                                } else {
                                    "active"
                                }
                                .to_owned(),
                            ]
                        })
                        .collect();
                    print_table(
                        &["ID", "USER", "NAME", "ENROLLED BY", "CREATED", "STATE"],
                        &rows,
                    );
                }
            }
            DeviceCommand::Revoke { device } => {
                let v = c.call(
                    Method::POST,
                    &format!("/v1/devices/{}/revoke", enc(&device)),
                    None,
                )?;
                if c.json() {
                    print_json(&v);
                } else {
                    println!(
                        "Revoked device {}: it is refused from now on and its open flows are ended",
                        s(&v["id"])
                    );
                }
            }
        }
        Ok(())
    })())
}
