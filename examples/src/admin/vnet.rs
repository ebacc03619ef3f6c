//! `zt vnet add|list|rename|delete|default`: virtual networks.

use std::process::ExitCode;

use hyper::Method;
use serde_json::json;

use super::args::{VnetArgs, VnetCommand};
use super::finish;
use super::http::{enc, AdminClient};
use super::output::{arr, print_json, print_table, s};

pub(crate) fn run(args: VnetArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        let path = |v: &str| format!("/v1/vnets/{}", enc(v));
        let (v, said) = match args.command {
            VnetCommand::Add {
                name,
                comment,
                default,
            } => {
                let v = c.call(
                    Method::POST,
                    "/v1/vnets",
                    Some(&json!({ "name": name, "comment": comment, "default": default })),
                )?;
                let said = format!("Added virtual network {} ({})", s(&v["name"]), s(&v["id"]));
                (v, said)
            }
            VnetCommand::List => {
                let v = c.get("/v1/vnets")?;
                if !c.json() {
                    let rows: Vec<Vec<String>> = arr(&v)
                        .iter()
                        .map(|n| {
                            vec![
                                s(&n["id"]),
                                s(&n["name"]),
                                if n["is_default"] == true { "yes" } else { "" }.to_owned(),
                                s(&n["routes"]),
                                s(&n["comment"]),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "NAME", "DEFAULT", "ROUTES", "COMMENT"], &rows);
                    return Ok(());
                }
                (v, String::new())
            }
            VnetCommand::Rename { vnet, new_name } => {
                let v = c.call(
                    Method::PATCH,
                    &path(&vnet),
                    Some(&json!({ "name": new_name })),
                )?;
                let said = format!("Renamed virtual network {vnet} to {}", s(&v["name"]));
                (v, said)
            }
            VnetCommand::Delete { vnet } => {
                let v = c.call(Method::DELETE, &path(&vnet), None)?;
                let said = format!(
                    "Deleted virtual network {} ({})",
                    s(&v["name"]),
                    s(&v["id"])
                );
                (v, said)
            }
            VnetCommand::Default { vnet } => {
                let v = c.call(
                    Method::PATCH,
                    &path(&vnet),
                    Some(&json!({ "default": true })),
                )?;
                let said = format!("{} is now the default virtual network", s(&v["name"]));
                (v, said)
            }
        };
        if c.json() {
            print_json(&v);
        } else {
            println!("{said}");
        }
        Ok(())
    })())
}
