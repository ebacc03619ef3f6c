//! `zt route ip add|show|get|delete`: private-network routes, and which route serves an
//! address.

use std::process::ExitCode;

use hyper::Method;
use serde_json::{json, Value};

use super::args::{IpCommand, RouteArgs, RouteCommand};
use super::finish;
use super::http::{enc, query, AdminClient};
use super::output::{arr, print_json, print_routes, print_table, route_rows, s, ROUTE_HEADER};

pub(crate) fn run(args: RouteArgs) -> anyhow::Result<ExitCode> {
    let RouteCommand::Ip { command } = args.command;
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        match command {
            IpCommand::Add {
                cidr,
                tunnel,
                vnet,
                comment,
            } => {
                let v = c.call(
                    Method::POST,
                    "/v1/routes",
                    Some(&json!({ "network": cidr, "tunnel": tunnel, "vnet": vnet, "comment": comment })),
                )?;
                if c.json() {
                    print_json(&v);
                } else {
                    println!(
                        "Routed {} to tunnel {} in virtual network {} (route {})",
                        s(&v["network"]),
                        s(&v["tunnel_name"]),
                        s(&v["vnet_name"]),
                        s(&v["id"])
                    );
                }
            }
            IpCommand::Show { vnet, tunnel } => {
                let v = c.get(&format!(
                    "/v1/routes{}",
                    query(&[("vnet", vnet.as_deref()), ("tunnel", tunnel.as_deref())])
                ))?;
                if c.json() {
                    print_json(&v);
                } else {
                    print_routes(&v);
                }
            }
            IpCommand::Get { ip, vnet } => {
                let v = c.get(&format!(
                    "/v1/routes/ip/{}{}",
                    enc(&ip),
                    query(&[("vnet", vnet.as_deref())])
                ))?;
                if c.json() {
                    print_json(&v);
                } else if v["matched"].is_null() {
                    println!(
                        "{} has no route in virtual network {}",
                        s(&v["address"]),
                        s(&v["vnet_name"])
                    );
                } else {
                    println!(
                        "{} in virtual network {} goes to tunnel {} by route {}",
                        s(&v["address"]),
                        s(&v["vnet_name"]),
                        s(&v["matched"]["tunnel_name"]),
                        s(&v["matched"]["network"])
                    );
                    let mut routes = vec![v["matched"].clone()];
                    routes.extend(arr(&v["also_covering"]).iter().cloned());
                    let mut rows = route_rows(&Value::Array(routes));
                    for (i, r) in rows.iter_mut().enumerate() {
                        r.insert(0, if i == 0 { "matched" } else { "also covers" }.to_owned());
                    }
                    println!();
                    let header: Vec<&str> = std::iter::once("").chain(ROUTE_HEADER).collect();
                    print_table(&header, &rows);
                }
            }
            IpCommand::Delete { route, vnet } => {
                let v = c.call(
                    Method::DELETE,
                    &format!(
                        "/v1/routes{}",
                        query(&[("route", Some(&route)), ("vnet", vnet.as_deref())])
                    ),
                    None,
                )?;
                if c.json() {
                    print_json(&v);
                } else {
                    println!(
                        "Deleted route {} ({} in virtual network {})",
                        s(&v["id"]),
                        s(&v["network"]),
                        s(&v["vnet_name"])
                    );
                }
            }
        }
        Ok(())
    })())
}
