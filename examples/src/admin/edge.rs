//! `zt edge list|join|remove`: the edges sharing one state, through the admin API.

use std::net::IpAddr;
use std::process::ExitCode;

use hyper::Method;
use serde_json::{json, Value};

use super::args::{EdgeJoinArgs, EdgeListArgs, EdgeRemoveArgs};
use super::http::{enc, AdminClient};
use super::output::{arr, print_json, print_table, s};
use super::{finish, CliError};

/// `zt edge list`
pub(crate) fn list(args: EdgeListArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        let v = c.get("/v1/edges")?;
        if c.json() {
            print_json(&v);
            return Ok(());
        }
        let rows: Vec<Vec<String>> = arr(&v)
            .iter()
            .map(|e| {
                let p = &e["presence"];
                let state = match (e["member"].as_bool(), p.is_null()) {
                    (Some(false), _) => "not a member (removed?)".to_owned(),
                    (_, true) => "not heard of".to_owned(),
                    _ if p["this_edge"].as_bool() == Some(true) => "this edge".to_owned(),
                    _ if p["live"].as_bool() == Some(true) => "live".to_owned(),
                    _ => "dead".to_owned(),
                };
                let heartbeat = match p["last_heartbeat_ms"].as_u64() {
                    Some(ms) if !p.is_null() => format!("{:.1}s ago", ms as f64 / 1000.0),
                    _ => "-".to_owned(),
                };
                let addresses = arr(&p["addresses"])
                    .iter()
                    .map(s)
                    .collect::<Vec<_>>()
                    .join(",");
                vec![
                    s(&e["name"]),
                    s(&e["id"]),
                    state,
                    if addresses.is_empty() {
                        "-".into()
                    } else {
                        addresses
                    },
                    if p["peer_address"].is_null() {
                        "-".into()
                    } else {
                        s(&p["peer_address"])
                    },
                    heartbeat,
                    p["connections"]
                        .as_u64()
                        .map_or("-".into(), |n| n.to_string()),
                ]
            })
            .collect();
        print_table(
            &[
                "NAME",
                "ID",
                "STATE",
                "ADDRESSES",
                "PEERING",
                "HEARTBEAT",
                "CONNECTIONS",
            ],
            &rows,
        );
        Ok(())
    })())
}

/// `zt edge join`
pub(crate) fn join(args: EdgeJoinArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        let EdgeJoinArgs {
            name,
            out,
            server_names,
            ..
        } = args;
        let (mut dns, mut ips) = (Vec::new(), Vec::new());
        for n in &server_names {
            match n.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => dns.push(n.clone()),
            }
        }
        if out.join("edge.json").exists() {
            return Err(CliError::Local(format!(
                "{} already holds an edge's state; choose another --out",
                out.display()
            )));
        }
        let v = c.call(
            Method::POST,
            "/v1/edges",
            Some(&json!({ "name": name, "dns": dns, "ips": ips })),
        )?;
        let files = bundle_files(&v)?;
        let bundle = zt_edge::JoinBundle {
            edge_id: v["edge"]["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| CliError::Local("the edge sent no edge id".into()))?,
            peer_cert_sha256: [0; 32],
            files,
        };
        bundle.write_to(&out).map_err(|e| {
            CliError::Local(format!(
                "{e}. The edge has recorded {name} as a member already; remove it \
                 (`zt edge remove {name}`) and join again"
            ))
        })?;
        if c.json() {
            print_json(&json!({ "edge": v["edge"], "state_dir": out }));
        } else {
            println!(
                "Edge {name} joined (id {}); its state directory is {} (no CA key in it).",
                bundle.edge_id,
                out.display()
            );
            println!("Copy it to the new edge's machine as it is, then run there:");
            println!(
                "  zt edge run --state-dir {} --name {name} --store URL --peer-listen ADDR",
                out.display()
            );
        }
        Ok(())
    })())
}

/// `zt edge remove`
pub(crate) fn remove(args: EdgeRemoveArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        let edge = args.edge;
        let v = c.call(Method::DELETE, &format!("/v1/edges/{}", enc(&edge)), None)?;
        if c.json() {
            print_json(&v);
        } else {
            println!(
                "Removed edge {} ({}): peers refuse it from now on.",
                s(&v["name"]),
                s(&v["id"])
            );
        }
        Ok(())
    })())
}

/// The state files of a join answer: name → hex of the content.
fn bundle_files(v: &Value) -> Result<Vec<(String, Vec<u8>)>, CliError> {
    let files = v["files"]
        .as_object()
        .ok_or_else(|| CliError::Local("the edge sent no state files".into()))?;
    files
        .iter()
        .map(|(name, content)| {
            // Names are plain file names: nothing that could leave the directory.
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(CliError::Local(format!(
                    "the edge sent a state file with an unusable name {name:?}"
                )));
            }
            let bytes = content
                .as_str()
                .and_then(hex_decode)
                .ok_or_else(|| CliError::Local(format!("state file {name}: not hex")))?;
            Ok((name.clone(), bytes))
        })
        .collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
