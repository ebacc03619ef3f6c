//! `zt rule create|list|update|delete`: gateway rules; the edge checks each expression
//! against the current lists and answers a mistake with its caret diagnostic.

use std::process::ExitCode;

use hyper::Method;
use serde_json::{json, Value};

use super::args::{RuleArgs, RuleCommand, RuleFlags};
use super::finish;
use super::http::{enc, AdminClient};
use super::output::{arr, print_json, print_table, s};

impl RuleFlags {
    fn body(&self) -> Value {
        let mut b = json!({});
        let mut set = |k: &str, v: Value| {
            b[k] = v;
        };
        if let Some(p) = self.precedence {
            set("precedence", json!(p));
        }
        if let Some(a) = &self.action {
            set("action", json!(a));
        }
        if !self.filters.is_empty() {
            set("filters", json!(self.filters));
        }
        for (k, v) in [
            ("traffic", &self.traffic),
            ("identity", &self.identity),
            ("device_posture", &self.device_posture),
            ("description", &self.description),
        ] {
            if let Some(v) = v {
                set(k, json!(v));
            }
        }
        b
    }
}

pub(crate) fn run(args: RuleArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        let path = |r: &str| format!("/v1/rules/{}", enc(r));
        let v = match args.command {
            RuleCommand::Create {
                name,
                flags,
                disabled,
            } => {
                let mut body = flags.body();
                body["name"] = json!(name);
                body["enabled"] = json!(!disabled);
                let v = c.call(Method::POST, "/v1/rules", Some(&body))?;
                if !c.json() {
                    println!(
                        "Created rule {} ({}): {} at precedence {} in {}",
                        s(&v["name"]),
                        s(&v["id"]),
                        s(&v["action"]),
                        s(&v["precedence"]),
                        arr(&v["filters"])
                            .iter()
                            .map(s)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                v
            }
            RuleCommand::List => {
                let v = c.get("/v1/rules")?;
                if !c.json() {
                    let rows: Vec<Vec<String>> = arr(&v)
                        .iter()
                        .map(|r| {
                            vec![
                                s(&r["precedence"]),
                                s(&r["name"]),
                                s(&r["action"]),
                                arr(&r["filters"])
                                    .iter()
                                    .map(s)
                                    .collect::<Vec<_>>()
                                    .join(","),
                                if r["enabled"] == true { "yes" } else { "no" }.to_owned(),
                                s(&r["traffic"]),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "PRECEDENCE",
                            "NAME",
                            "ACTION",
                            "FILTERS",
                            "ENABLED",
                            "TRAFFIC",
                        ],
                        &rows,
                    );
                }
                v
            }
            RuleCommand::Update {
                rule,
                flags,
                name,
                enable,
                disable,
            } => {
                let mut body = flags.body();
                if let Some(n) = name {
                    body["name"] = json!(n);
                }
                if enable || disable {
                    body["enabled"] = json!(enable);
                }
                let v = c.call(Method::PATCH, &path(&rule), Some(&body))?;
                if !c.json() {
                    println!("Updated rule {} ({})", s(&v["name"]), s(&v["id"]));
                }
                v
            }
            RuleCommand::Delete { rule } => {
                let v = c.call(Method::DELETE, &path(&rule), None)?;
                if !c.json() {
                    println!("Deleted rule {} ({})", s(&v["name"]), s(&v["id"]));
                }
                v
            }
        };
        if c.json() {
            print_json(&v);
        }
        Ok(())
    })())
}
