//! `zt idp add|list|remove|enrollment`: the OpenID Providers engineers sign in with.

use std::process::ExitCode;

use anyhow::Context as _;
use hyper::Method;
use serde_json::json;

use super::args::{IdpArgs, IdpCommand};
use super::http::{enc, AdminClient};
use super::output::{arr, print_json, print_table, s};
use super::{finish, CliError};

/// Reads `12h`, `30m`, `45s`, `7d` (or plain seconds).
pub(super) fn parse_duration(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = num.parse().with_context(|| {
        format!("duration {text:?}: expected a number and s, m, h or d, like 12h")
    })?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => anyhow::bail!("duration {text:?}: unknown unit {other:?}; use s, m, h or d"),
    };
    let secs = n.saturating_mul(mult);
    anyhow::ensure!(secs > 0, "duration {text:?} must be positive");
    Ok(secs)
}

pub(crate) fn run(args: IdpArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        let (v, said) = match args.command {
            IdpCommand::Add {
                name,
                issuer,
                client_id,
                client_secret_file,
                scopes,
                groups_claim,
                allowed_domains,
                session_length,
                ca_file,
            } => {
                let secret = match &client_secret_file {
                    Some(p) => Some(
                        std::fs::read_to_string(p)
                            .map_err(|e| {
                                CliError::Local(format!(
                                    "cannot read the client secret file {}: {e}",
                                    p.display()
                                ))
                            })?
                            .trim()
                            .to_owned(),
                    ),
                    None => None,
                };
                let ca_pem = match &ca_file {
                    Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                        CliError::Local(format!("cannot read the CA file {}: {e}", p.display()))
                    })?),
                    None => None,
                };
                let mut body = json!({
                    "name": name,
                    "issuer": issuer,
                    "client_id": client_id,
                    "groups_claim": groups_claim,
                    "allowed_domains": allowed_domains,
                    "session_length_secs": parse_duration(&session_length).map_err(|e| CliError::Local(e.to_string()))?,
                });
                if !scopes.is_empty() {
                    body["scopes"] = json!(scopes);
                }
                if let Some(secret) = secret {
                    body["client_secret"] = json!(secret);
                }
                if let Some(pem) = ca_pem {
                    body["ca_pem"] = json!(pem);
                }
                let v = c.call(Method::POST, "/v1/idps", Some(&body))?;
                let said = format!(
                    "Added identity provider {} ({}); `zt idp enrollment {}` prints the string engineers pass to `zt login`",
                    s(&v["name"]),
                    s(&v["issuer"]),
                    s(&v["name"])
                );
                (v, said)
            }
            IdpCommand::List => {
                let v = c.get("/v1/idps")?;
                if !c.json() {
                    let rows: Vec<Vec<String>> = arr(&v)
                        .iter()
                        .map(|p| {
                            vec![
                                s(&p["name"]),
                                s(&p["issuer"]),
                                s(&p["client_id"]),
                                s(&p["groups_claim"]),
                                arr(&p["allowed_domains"])
                                    .iter()
                                    .map(s)
                                    .collect::<Vec<_>>()
                                    .join(","),
                                format!("{}s", s(&p["session_length_secs"])),
                                if p["has_client_secret"] == true {
                                    "yes"
                                } else {
                                    "no"
                                }
                                .to_owned(),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "NAME",
                            "ISSUER",
                            "CLIENT ID",
                            "GROUPS CLAIM",
                            "DOMAINS",
                            "SESSION",
                            "SECRET",
                        ],
                        &rows,
                    );
                    return Ok(());
                }
                (v, String::new())
            }
            IdpCommand::Remove { idp } => {
                let v = c.call(Method::DELETE, &format!("/v1/idps/{}", enc(&idp)), None)?;
                let said = format!(
                    "Removed identity provider {}; {} device(s) signed in through it lost their sessions (they sign in again through another provider)",
                    s(&v["name"]),
                    v["devices_signed_out"].as_u64().unwrap_or(0)
                );
                (v, said)
            }
            IdpCommand::Enrollment { idp } => {
                let v = c.get(&format!("/v1/idps/{}/enrollment", enc(&idp)))?;
                let said = s(&v["enrollment"]);
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

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn session_lengths_read_like_people_write_them() {
        assert_eq!(parse_duration("12h").unwrap(), 43_200);
        assert_eq!(parse_duration("30m").unwrap(), 1_800);
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("12y").is_err());
        assert!(parse_duration("h").is_err());
    }
}
