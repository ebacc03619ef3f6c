//! `zt plan`, `zt apply`, `zt export` and `zt policy test`: configuration as code.
//!
//! The file is read and checked here (line, column and an underlined excerpt for every
//! refusal), its policy tests run here with the edge's own compiler, and only then is the
//! resolved file sent to the edge, which plans it against its state and applies it in one
//! transaction against the versions the plan showed. Secrets never pass through the file:
//! a tunnel the apply creates has its credentials written once, 0600, into
//! `--credentials-dir`, and never over an existing file.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hyper::Method;
use serde_json::{json, Value};
use zt_creds::{DeviceCredentials, ExistingFile, TunnelCredentials};
use zt_edge::config::{self, ConfigFile};

use super::args::{ApplyArgs, ExportArgs, FileOpts, Output, PlanArgs, PolicyArgs, PolicyCommand};
use super::http::AdminClient;
use super::output::{arr, print_json, s};
use super::{CliError, CliResult};

/// `zt plan`: changes are pending.
const EXIT_PENDING: u8 = 4;
/// `zt plan --detect-drift`: the edge changed outside the file since the last apply.
const EXIT_DRIFT: u8 = 5;

/// Colours on a terminal, plain text when piped (or with `NO_COLOR` set).
struct Paint(bool);

impl Paint {
    fn stdout() -> Self {
        Paint(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
    }
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn action(&self, action: &str) -> String {
        match action {
            "create" => self.wrap("32", "+ create"),
            "update" => self.wrap("33", "~ update"),
            "delete" => self.wrap("31", "- delete"),
            other => other.to_owned(),
        }
    }
}

/// Reads and checks the file; a refusal is printed with its underlined excerpt.
fn load(path: &Path) -> CliResult<ConfigFile> {
    let file = config::load(path).map_err(|e| CliError::Local(e.report()))?;
    let body = serde_json::to_vec(&file).unwrap_or_default();
    if body.len() > config::MAX_RESOLVED_BYTES {
        return Err(CliError::Local(format!(
            "{}: the resolved file (lists from items_file included) is {} bytes, over the limit \
             of {} bytes the edge accepts in one request",
            path.display(),
            body.len(),
            config::MAX_RESOLVED_BYTES
        )));
    }
    Ok(file)
}

/// Runs the file's policy tests; `Err` names every failing case with the decision it got
/// and the rule that decided.
fn policy_tests(path: &Path, file: &ConfigFile, quiet: bool) -> CliResult<Vec<config::CaseResult>> {
    let results = config::run_policy_tests(file)
        .map_err(|e| CliError::Local(format!("{}: {e}", path.display())))?;
    let failed: Vec<&config::CaseResult> = results.iter().filter(|r| !r.passed).collect();
    if !failed.is_empty() {
        let mut msg = format!(
            "{}: {} of {} policy test(s) failed; nothing was sent to the edge",
            path.display(),
            failed.len(),
            results.len()
        );
        for r in failed {
            msg.push_str(&format!(
                "\n  FAIL `{}`: {} ({} in phase {} by {})",
                r.name,
                r.mismatch.as_deref().unwrap_or(""),
                r.decision,
                r.phase,
                r.rule
                    .as_deref()
                    .map(|n| format!("rule `{n}`"))
                    .unwrap_or_else(|| "the default".into())
            ));
        }
        return Err(CliError::Local(msg));
    }
    if !quiet && !results.is_empty() {
        eprintln!("{} policy test(s) passed", results.len());
    }
    Ok(results)
}

fn options(f: &FileOpts) -> Value {
    json!({ "prune": f.prune, "force": f.force })
}

fn print_plan(paint: &Paint, path: &Path, plan: &Value) {
    let changes = arr(&plan["changes"]);
    println!(
        "Plan for {} (sha256 {}):",
        path.display(),
        s(&plan["file_hash"]).get(..12).unwrap_or("")
    );
    if changes.is_empty() {
        println!("  no changes: the edge matches the file");
    }
    let (mut c, mut u, mut d) = (0, 0, 0);
    for ch in changes {
        let action = s(&ch["action"]);
        match action.as_str() {
            "create" => c += 1,
            "update" => u += 1,
            _ => d += 1,
        }
        println!("  {} {}", paint.action(&action), s(&ch["resource"]));
        if action == "update" {
            for f in arr(&ch["fields"]) {
                println!(
                    "      {}: {} -> {}",
                    s(&f["field"]),
                    f["before"],
                    f["after"]
                );
            }
        }
        if let Some(b) = ch["blocked"].as_str() {
            println!("      {}", paint.wrap("31", &format!("blocked: {b}")));
        }
    }
    let kept = arr(&plan["unmanaged"]);
    if !kept.is_empty() {
        println!(
            "  {} resource(s) at the edge are not in the file and are kept (--prune deletes them)",
            kept.len()
        );
    }
    println!("{c} to create, {u} to update, {d} to delete.");
}

fn print_drift(paint: &Paint, drift: &Value) -> usize {
    let items = arr(&drift["drift"]);
    if drift["file_hash"].is_null() && drift["last_applied"].is_null() {
        println!("Drift: no file has been applied to this edge yet.");
        return 0;
    }
    if items.is_empty() {
        println!("Drift: none since the last apply.");
    } else {
        println!("Drift since the last apply ({} resource(s)):", items.len());
        for d in items {
            println!(
                "  {} {}",
                paint.wrap("35", &format!("! {}", s(&d["what"]))),
                s(&d["resource"])
            );
        }
    }
    items.len()
}

pub(crate) fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let r = (|| -> CliResult<u8> {
        let file = load(&args.file.file)?;
        // A plan of a file whose own tests fail is no plan to review.
        policy_tests(&args.file.file, &file, false)?;
        let c = AdminClient::new(&args.admin)?;
        let plan = c.call(
            Method::POST,
            "/v1/config/plan",
            Some(&json!({ "file": file, "options": options(&args.file) })),
        )?;
        let drift = if plan["last_applied"].is_null() {
            json!({ "last_applied": null, "drift": [] })
        } else {
            plan["last_applied"].clone()
        };
        let drifted = args.detect_drift && !arr(&drift["drift"]).is_empty();
        if c.json() {
            let mut v = plan.clone();
            if !args.detect_drift {
                v.as_object_mut().map(|o| o.remove("last_applied"));
            }
            print_json(&v);
        } else {
            let paint = Paint::stdout();
            print_plan(&paint, &args.file.file, &plan);
            if args.detect_drift {
                print_drift(&paint, &drift);
            }
        }
        Ok(if drifted {
            EXIT_DRIFT
        } else if arr(&plan["changes"]).is_empty() {
            0
        } else {
            EXIT_PENDING
        })
    })();
    Ok(match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => e.report(),
    })
}

/// The credentials file of a tunnel the apply creates.
fn credentials_path(dir: &Path, tunnel: &str) -> PathBuf {
    dir.join(format!("{}.json", safe_name(tunnel)))
}

/// The credentials file of a service token the apply creates.
fn token_credentials_path(dir: &Path, token: &str) -> PathBuf {
    dir.join(format!("token-{}.json", safe_name(token)))
}

fn safe_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    safe.trim_start_matches('.').to_owned()
}

pub(crate) fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    super::finish((|| {
        let path = &args.file.file;
        let file = load(path)?;
        policy_tests(path, &file, false)?;
        let c = AdminClient::new(&args.admin)?;
        let body = json!({ "file": file, "options": options(&args.file) });
        let plan = c.call(Method::POST, "/v1/config/plan", Some(&body))?;
        let paint = Paint::stdout();
        if !c.json() {
            print_plan(&paint, path, &plan);
        }
        if arr(&plan["changes"]).is_empty() {
            if c.json() {
                print_json(&json!({ "changes": [], "credentials_written": [] }));
            }
            return Ok(());
        }
        if let Some(b) = arr(&plan["changes"])
            .iter()
            .find(|c| c["blocked"].is_string())
        {
            return Err(CliError::Local(format!(
                "{}: {}; nothing was applied",
                s(&b["resource"]),
                s(&b["blocked"])
            )));
        }
        // Every credentials file is checked before anything changes at the edge, since a
        // tunnel's secret exists only in the apply's answer.
        let created = |prefix: &str| -> Vec<String> {
            arr(&plan["changes"])
                .iter()
                .filter(|c| s(&c["action"]) == "create")
                .filter_map(|c| s(&c["resource"]).strip_prefix(prefix).map(str::to_owned))
                .collect()
        };
        let creating: Vec<String> = created("tunnel/");
        // The plan names tokens by their key (the name in lower case); the files use the
        // file's own spelling.
        let creating_tokens: Vec<String> = created("token/")
            .into_iter()
            .map(|key| {
                file.service_tokens
                    .iter()
                    .find(|t| t.name.to_lowercase() == key)
                    .map_or(key, |t| t.name.clone())
            })
            .collect();
        if !creating.is_empty() || !creating_tokens.is_empty() {
            let what: Vec<String> = creating
                .iter()
                .map(|t| format!("tunnel {t}"))
                .chain(creating_tokens.iter().map(|t| format!("service token {t}")))
                .collect();
            let Some(dir) = &args.credentials_dir else {
                return Err(CliError::Local(format!(
                    "the plan creates {}; give --credentials-dir DIR for their \
                     credentials files (written once, mode 0600); nothing was applied",
                    what.join(", ")
                )));
            };
            let paths = creating.iter().map(|t| credentials_path(dir, t)).chain(
                creating_tokens
                    .iter()
                    .map(|t| token_credentials_path(dir, t)),
            );
            for p in paths {
                if p.exists() {
                    return Err(CliError::Local(format!(
                        "{} already exists and is never overwritten; move it away or choose \
                         another --credentials-dir; nothing was applied",
                        p.display()
                    )));
                }
            }
        }
        let mut apply_body = body;
        apply_body["expected"] = plan["expected"].clone();
        let outcome = c.call(Method::POST, "/v1/config/apply", Some(&apply_body))?;
        let mut written = Vec::new();
        for item in arr(&outcome["credentials"]) {
            let dir = args.credentials_dir.as_deref().unwrap_or(Path::new("."));
            if item["service_token"].is_string() {
                let name = s(&item["service_token"]);
                let p = token_credentials_path(dir, &name);
                let creds =
                    DeviceCredentials::from_json(item["credentials"].to_string().as_bytes())
                        .map_err(|e| {
                            CliError::Local(format!("the edge's credentials for token {name}: {e}"))
                        })?;
                super::write_secret_file(&p, format!("service token {name}"), |p| {
                    creds.write(p, ExistingFile::Refuse)
                })?;
                written.push(p.display().to_string());
                continue;
            }
            let name = s(&item["tunnel"]);
            let p = credentials_path(dir, &name);
            let creds = TunnelCredentials::from_json(item["credentials"].to_string().as_bytes())
                .map_err(|e| CliError::Local(format!("the edge's credentials for {name}: {e}")))?;
            super::write_secret_file(&p, format!("tunnel {name}"), |p| {
                creds.write(p, ExistingFile::Refuse)
            })?;
            written.push(p.display().to_string());
        }
        if c.json() {
            print_json(&json!({
                "changes": outcome["changes"],
                "revision": outcome["revision"],
                "credentials_written": written,
            }));
        } else {
            println!(
                "Applied {} change(s) in one transaction.",
                arr(&outcome["changes"]).len()
            );
            for p in &written {
                println!("Wrote credentials to {p} (mode 0600)");
            }
        }
        Ok(())
    })())
}

pub(crate) fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    super::finish((|| {
        let c = AdminClient::new(&args.admin)?;
        let v = c.get("/v1/config/export")?;
        let file: ConfigFile = serde_json::from_value(v)
            .map_err(|e| CliError::Local(format!("the edge's export is not a file: {e}")))?;
        let text = format!(
            "# Exported from the edge by `zt export`; `zt plan -f` on it shows no change.\n{}",
            config::to_yaml(&file)
        );
        match &args.out {
            None => print!("{text}"),
            Some(p) => {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(p)
                    .map_err(|e| CliError::Local(format!("cannot create {}: {e}", p.display())))?;
                f.write_all(text.as_bytes())
                    .map_err(|e| CliError::Local(format!("cannot write {}: {e}", p.display())))?;
            }
        }
        Ok(())
    })())
}

pub(crate) fn policy(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PolicyCommand::Test { file, output } => super::finish((|| {
            let parsed = load(&file)?;
            let results = config::run_policy_tests(&parsed)
                .map_err(|e| CliError::Local(format!("{}: {e}", file.display())))?;
            if output == Output::Json {
                print_json(&json!(results));
            } else {
                let paint = Paint::stdout();
                for r in &results {
                    let by = r
                        .rule
                        .as_deref()
                        .map(|n| format!("rule `{n}`"))
                        .unwrap_or_else(|| "the default".into());
                    if r.passed {
                        println!(
                            "{} {}: {} by {by}",
                            paint.wrap("32", "ok  "),
                            r.name,
                            r.decision
                        );
                    } else {
                        println!(
                            "{} {}: {} ({} by {by})",
                            paint.wrap("31", "FAIL"),
                            r.name,
                            r.mismatch.as_deref().unwrap_or(""),
                            r.decision
                        );
                    }
                }
                println!(
                    "{} passed, {} failed",
                    results.iter().filter(|r| r.passed).count(),
                    results.iter().filter(|r| !r.passed).count()
                );
            }
            policy_tests(&file, &parsed, true).map(drop)
        })()),
    }
}
