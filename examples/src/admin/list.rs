//! `zt list create|show|update|delete`: gateway lists, with items from the command line
//! or a file.

use std::path::Path;
use std::process::ExitCode;

use hyper::Method;
use serde_json::{json, Value};

use super::args::{ListArgs, ListCommand};
use super::http::{enc, AdminClient};
use super::output::{arr, print_json, print_table, s};
use super::{finish, CliError, CliResult};

fn read_items(path: &Path) -> CliResult<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Local(format!("cannot read {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

fn print_list(l: &Value) {
    println!("ID:           {}", s(&l["id"]));
    println!("NAME:         {}", s(&l["name"]));
    println!("TYPE:         {}", s(&l["type"]));
    println!("SLUG:         {}", s(&l["slug"]));
    println!("REFERENCE:    {}", s(&l["reference"]));
    if l["description"].as_str().is_some_and(|d| !d.is_empty()) {
        println!("DESCRIPTION:  {}", s(&l["description"]));
    }
    println!("ITEMS:        {}", arr(&l["items"]).len());
    for i in arr(&l["items"]) {
        println!("  {}", s(i));
    }
}

pub(crate) fn run(args: ListArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let c = AdminClient::new(&args.admin)?;
        let path = |l: &str| format!("/v1/lists/{}", enc(l));
        let v = match args.command {
            ListCommand::Create {
                name,
                list_type,
                slug,
                description,
                file,
                mut items,
            } => {
                if let Some(f) = &file {
                    items.extend(read_items(f)?);
                }
                let v = c.call(
                    Method::POST,
                    "/v1/lists",
                    Some(&json!({ "name": name, "type": list_type, "slug": slug,
                                  "description": description, "items": items })),
                )?;
                if !c.json() {
                    println!(
                        "Created list {} with {} item(s); rules refer to it as {}{}",
                        s(&v["name"]),
                        arr(&v["items"]).len(),
                        s(&v["reference"]),
                        v["slug"]
                            .as_str()
                            .map(|sl| format!(" or ${sl}"))
                            .unwrap_or_default()
                    );
                }
                v
            }
            ListCommand::Show { list: Some(l) } => {
                let v = c.get(&path(&l))?;
                if !c.json() {
                    print_list(&v);
                }
                v
            }
            ListCommand::Show { list: None } => {
                let v = c.get("/v1/lists")?;
                if !c.json() {
                    let rows: Vec<Vec<String>> = arr(&v)
                        .iter()
                        .map(|l| {
                            vec![
                                s(&l["id"]),
                                s(&l["name"]),
                                s(&l["type"]),
                                s(&l["slug"]),
                                arr(&l["items"]).len().to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "NAME", "TYPE", "SLUG", "ITEMS"], &rows);
                }
                v
            }
            ListCommand::Update {
                list,
                add,
                remove,
                file,
                description,
            } => {
                let mut body = json!({ "add": add, "remove": remove });
                if let Some(f) = &file {
                    body["items"] = json!(read_items(f)?);
                }
                if let Some(d) = description {
                    body["description"] = json!(d);
                }
                let v = c.call(Method::PATCH, &path(&list), Some(&body))?;
                if !c.json() {
                    println!(
                        "Updated list {}: {} item(s)",
                        s(&v["name"]),
                        arr(&v["items"]).len()
                    );
                }
                v
            }
            ListCommand::Delete { list } => {
                let v = c.call(Method::DELETE, &path(&list), None)?;
                if !c.json() {
                    println!("Deleted list {} ({})", s(&v["name"]), s(&v["id"]));
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
