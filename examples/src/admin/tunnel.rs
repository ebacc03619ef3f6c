//! `zt tunnel create|list|info|delete|cloudflared`, and `zt tunnel run` handed to the
//! connector.
//!
//! Creating a tunnel is the one time its secret leaves the edge: it goes to a new 0600
//! credentials file (never overwritten, checked before the tunnel exists) or, with
//! `--token`, to stdout alone.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use hyper::Method;
use serde_json::{json, Value};
use zt_creds::{CaFingerprint, ExistingFile, TunnelCredentials, TunnelToken};

use super::args::{AdminOpts, CloudflaredArgs, TunnelArgs, TunnelCommand};
use super::http::{enc, query, AdminClient};
use super::output::{arr, connections_summary, print_json, print_routes, print_table, s};
use super::{finish, write_secret_file, CliError, CliResult};

pub(crate) fn run(args: TunnelArgs) -> anyhow::Result<ExitCode> {
    let admin = args.admin;
    match args.command {
        TunnelCommand::Run(run) => crate::connector::run(args.connector, run),
        TunnelCommand::Create {
            name,
            credentials_file,
            token,
            edge,
            allow_cloudflared,
            from_credentials,
        } => finish(tunnel_create(
            &admin,
            &name,
            credentials_file,
            token,
            edge,
            allow_cloudflared,
            from_credentials,
        )),
        TunnelCommand::List { include_deleted } => finish((|| {
            let c = AdminClient::new(&admin)?;
            let v = c.get(&format!(
                "/v1/tunnels{}",
                query(&[("include_deleted", include_deleted.then_some("true"))])
            ))?;
            if c.json() {
                print_json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = arr(&v)
                .iter()
                .map(|t| {
                    let mut created = s(&t["created_at"]);
                    if !t["deleted_at"].is_null() {
                        created.push_str(" (deleted)");
                    }
                    vec![
                        s(&t["id"]),
                        s(&t["name"]),
                        created,
                        connections_summary(&t["connections"]),
                    ]
                })
                .collect();
            print_table(&["ID", "NAME", "CREATED", "CONNECTIONS"], &rows);
            Ok(())
        })()),
        TunnelCommand::Info { tunnel } => finish((|| {
            let c = AdminClient::new(&admin)?;
            let v = c.get(&format!("/v1/tunnels/{}", enc(&tunnel)))?;
            if c.json() {
                print_json(&v);
                return Ok(());
            }
            println!("ID:           {}", s(&v["id"]));
            println!("NAME:         {}", s(&v["name"]));
            println!("CREATED:      {}", s(&v["created_at"]));
            println!("CLOUDFLARED:  {}", s(&v["accepts_cloudflared"]));
            println!("CONNECTIONS:  {}", connections_summary(&v["connections"]));
            if !arr(&v["connections"]).is_empty() {
                println!();
                let rows: Vec<Vec<String>> = arr(&v["connections"])
                    .iter()
                    .map(|c| {
                        vec![
                            s(&c["connector_id"]),
                            s(&c["conn_index"]),
                            s(&c["edge_name"]),
                            s(&c["remote"]),
                            s(&c["version"]),
                            if c["transport"].is_string() {
                                s(&c["transport"])
                            } else {
                                "quic".to_owned()
                            },
                            s(&c["in_flight"]),
                            if c["draining"] == true {
                                "draining".to_owned()
                            } else if c["healthy"] == true {
                                "healthy".to_owned()
                            } else {
                                "unhealthy".to_owned()
                            },
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "CONNECTOR",
                        "INDEX",
                        "EDGE",
                        "ORIGIN",
                        "VERSION",
                        "TRANSPORT",
                        "FLOWS",
                        "STATE",
                    ],
                    &rows,
                );
            }
            if !arr(&v["routes"]).is_empty() {
                println!();
                print_routes(&v["routes"]);
            }
            Ok(())
        })()),
        TunnelCommand::Cloudflared(cf) => finish(tunnel_cloudflared(&admin, cf)),
        TunnelCommand::Delete { tunnel } => finish((|| {
            let c = AdminClient::new(&admin)?;
            let v = c.call(
                Method::DELETE,
                &format!("/v1/tunnels/{}", enc(&tunnel)),
                None,
            )?;
            if c.json() {
                print_json(&v);
            } else {
                println!("Deleted tunnel {} ({})", s(&v["name"]), s(&v["id"]));
            }
            Ok(())
        })()),
    }
}

fn tunnel_create(
    admin: &AdminOpts,
    name: &str,
    credentials_file: Option<PathBuf>,
    token: bool,
    edge: Vec<String>,
    allow_cloudflared: bool,
    from_credentials: Option<PathBuf>,
) -> CliResult<()> {
    if token && credentials_file.is_some() {
        return Err(CliError::Local(
            "--token prints the credentials instead of writing them; give either --token or \
             --credentials-file"
                .to_owned(),
        ));
    }
    // Refuse before the tunnel exists, so an existing file does not leave an orphan tunnel.
    if let Some(p) = &credentials_file {
        if p.exists() {
            return Err(CliError::Local(format!(
                "{} already exists; refusing to overwrite it (choose another --credentials-file)",
                p.display()
            )));
        }
    }
    let c = AdminClient::new(admin)?;
    let account = if token {
        Some(c.get("/v1/account")?)
    } else {
        None
    };
    let mut body = json!({ "name": name, "allow_cloudflared": allow_cloudflared });
    if let Some(file) = &from_credentials {
        let text = std::fs::read(file)
            .map_err(|e| CliError::Local(format!("cannot read {}: {e}", file.display())))?;
        // Checked here first, so a bad file is named before anything reaches the edge.
        TunnelCredentials::from_json(&text).map_err(|e| {
            CliError::Local(format!("{} is not a credentials file: {e}", file.display()))
        })?;
        let creds: Value = serde_json::from_slice(&text).map_err(|e| {
            CliError::Local(format!("{} is not a credentials file: {e}", file.display()))
        })?;
        body["credentials"] = creds;
    }
    let v = c.call(Method::POST, "/v1/tunnels", Some(&body))?;
    let creds = TunnelCredentials::from_json(v["credentials"].to_string().as_bytes())
        .map_err(|e| CliError::Local(format!("the edge sent unusable credentials: {e}")))?;
    let id = creds.tunnel_id;
    if let Some(account) = account {
        let edge = if edge.is_empty() {
            arr(&account["edge"]).iter().map(s).collect()
        } else {
            edge
        };
        let ca: Option<CaFingerprint> = account["ca_fingerprint"]
            .as_str()
            .and_then(|f| f.parse().ok());
        let mut token = TunnelToken::from_credentials(creds);
        token.edge = edge;
        token.ca_fingerprint = ca;
        // The token is the credential the user asked for; it goes to stdout only.
        println!("{}", token.encode().as_str());
        eprintln!("Created tunnel {name} with id {id}");
        return Ok(());
    }
    if let Some(file) = from_credentials {
        if c.json() {
            print_json(&json!({ "tunnel": v["tunnel"], "credentials_file": file }));
        } else {
            println!(
                "Imported tunnel {name} with id {id}; its connectors keep using {}",
                file.display()
            );
        }
        return Ok(());
    }
    let path = credentials_file.unwrap_or_else(|| PathBuf::from(format!("{id}.json")));
    write_secret_file(&path, format!("tunnel {name} ({id})"), |p| {
        creds.write(p, ExistingFile::Refuse)
    })?;
    if c.json() {
        print_json(&json!({ "tunnel": v["tunnel"], "credentials_file": path }));
    } else {
        println!("Tunnel credentials written to {}", path.display());
        println!("Created tunnel {name} with id {id}");
    }
    Ok(())
}

/// Quotes a command-line word for a POSIX shell when it needs it.
fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+[]".contains(&b));
    if plain {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

fn tunnel_cloudflared(admin: &AdminOpts, args: CloudflaredArgs) -> CliResult<()> {
    let c = AdminClient::new(admin)?;
    let path = format!("/v1/tunnels/{}/cloudflared", enc(&args.tunnel));
    if args.disable {
        let v = c.call(Method::PUT, &path, Some(&json!({ "enabled": false })))?;
        if c.json() {
            print_json(&v);
        } else {
            println!(
                "Tunnel {} ({}) no longer accepts cloudflared connectors",
                s(&v["name"]),
                s(&v["id"])
            );
        }
        return Ok(());
    }
    if args.enable {
        let Some(file) = &args.credentials_file else {
            return Err(CliError::Local(
                "--enable needs the tunnel's --credentials-file: the edge keeps only a key derived from the secret, and needs the secret once to accept cloudflared"
                    .to_owned(),
            ));
        };
        let creds = std::fs::read(file)
            .map_err(|e| CliError::Local(format!("cannot read {}: {e}", file.display())))?;
        let creds: Value = serde_json::from_slice(&creds).map_err(|e| {
            CliError::Local(format!("{} is not a credentials file: {e}", file.display()))
        })?;
        c.call(
            Method::PUT,
            &path,
            Some(&json!({ "enabled": true, "credentials": creds })),
        )?;
    }
    let tunnel = c.get(&format!("/v1/tunnels/{}", enc(&args.tunnel)))?;
    let id = s(&tunnel["id"]);
    if tunnel["accepts_cloudflared"] != true {
        return Err(CliError::Local(format!(
            "tunnel {} ({id}) does not accept cloudflared connectors; opt in with `zt tunnel              cloudflared {} --enable --credentials-file FILE` (see docs/CLOUDFLARED.md for the              risk)",
            s(&tunnel["name"]),
            args.tunnel
        )));
    }
    let account = c.get("/v1/account")?;
    let edge = match args.edge.or_else(|| arr(&account["edge"]).first().map(s)) {
        Some(e) => e,
        None => {
            return Err(CliError::Local(
                "the edge advertises no address; give --edge HOST:PORT".to_owned(),
            ))
        }
    };
    let ca = account["ca_pem"].as_str().ok_or_else(|| {
        CliError::Local("the edge did not send its CA certificate (older edge?)".to_owned())
    })?;
    std::fs::write(&args.ca_file, ca)
        .map_err(|e| CliError::Local(format!("cannot write {}: {e}", args.ca_file.display())))?;
    let creds = args
        .credentials_file
        .unwrap_or_else(|| PathBuf::from(format!("{id}.json")));
    let mut command: Vec<String> = vec![
        "cloudflared".into(),
        "tunnel".into(),
        "--no-autoupdate".into(),
    ];
    if let Some(config) = &args.config_file {
        let yaml = format!(
            "# cloudflared configuration for zt tunnel {id}, written by `zt tunnel cloudflared`.\n\
             tunnel: {id}\n\
             credentials-file: {}\n\
             warp-routing:\n  enabled: true\n",
            serde_json::to_string(&creds.display().to_string()).unwrap_or_default()
        );
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(config)
            .and_then(|mut f| f.write_all(yaml.as_bytes()))
            .map_err(|e| {
                CliError::Local(format!(
                    "cannot write {} (it is never overwritten): {e}",
                    config.display()
                ))
            })?;
        command.extend(["--config".into(), config.display().to_string()]);
    }
    // Tunnel-level flags (--edge is a hidden one) before `run`, run's own after it.
    command.extend([
        "--edge".into(),
        edge,
        "--cacert".into(),
        args.ca_file.display().to_string(),
        "--protocol".into(),
        args.protocol.word().into(),
        "run".into(),
        "--credentials-file".into(),
        creds.display().to_string(),
        id.clone(),
    ]);
    if c.json() {
        print_json(&json!({
            "tunnel": id,
            "ca_file": args.ca_file,
            "command": command,
        }));
    } else {
        eprintln!("CA certificate written to {}", args.ca_file.display());
        println!(
            "{}",
            command
                .iter()
                .map(|w| shell_word(w))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}
