//! Secret hygiene of the real binaries: the edge, a connector from a credentials file and
//! one from a token, the client and the admin commands, all at debug log level, through a
//! full scenario (set-up, flows, refusals, errors). Every log line, audit line, metrics
//! page, admin API answer, error message and `Debug` rendering is searched for every
//! secret — the tunnel secrets, the device secret, the keys derived from them and the
//! admin token — raw, in base64 (both alphabets, padded or not) and in hex (both cases),
//! 16 characters at a time, so a cut or wrapped secret is found too. The outputs a user
//! asks for (the credentials files, `zt tunnel create --token`'s token) are the only ones
//! allowed to hold them. A credentials file others can read is refused.
//!
//! `zt-creds/tests/it/no_leak.rs` checks the library types' `Debug`/`Display` in isolation.

use std::process::Output;

use crate::support::abuse::*;
use crate::support::*;
use zt_creds::{DeviceCredentials, PermissionMode, TunnelCredentials, TunnelToken};

const DEBUG: &str = "debug";

/// A finished admin command's stdout and stderr.
fn admin_debug(edge: &Edge, args: &[&str]) -> Output {
    zt().args(args)
        .args(["--log", DEBUG, "--state-dir"])
        .arg(edge.dir.path())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn no_secret_appears_in_any_log_audit_line_metric_or_error() {
    let mut edge = Edge::start();
    // Restart the edge at debug level on the same state.
    drop(edge.proc.take());
    edge.run_with(&["--log", DEBUG]);

    // What the operator types, every command at debug level. (What goes to the
    // credentials file is exempt; what the command prints is not.)
    let mut collected: Vec<(String, Vec<u8>)> = Vec::new();
    let creds_path = edge.path("tunnel.json");
    let device_path = edge.path("device.json");
    let run = |collected: &mut Vec<(String, Vec<u8>)>, name: &str, args: &[&str]| {
        let out = admin_debug(&edge, args);
        assert!(out.status.success(), "zt {args:?}: {}", text(&out));
        collected.push((format!("zt {name}"), text(&out).into_bytes()));
        out
    };
    run(
        &mut collected,
        "tunnel create",
        &[
            "tunnel",
            "create",
            "private",
            "--credentials-file",
            creds_path.to_str().unwrap(),
        ],
    );
    run(
        &mut collected,
        "route ip add",
        &["route", "ip", "add", "127.0.0.0/29", "private"],
    );
    run(
        &mut collected,
        "list create",
        &["list", "create", "Apps", "--type", "IP", "127.0.0.2/32"],
    );
    run(
        &mut collected,
        "rule create",
        &[
            "rule",
            "create",
            "Allow all routed",
            "--precedence",
            "10",
            "--action",
            "allow",
            "--filter",
            "l4",
            "--traffic",
            "net.dst.ip in {127.0.0.0/29}",
        ],
    );
    run(
        &mut collected,
        "user add",
        &[
            "user",
            "add",
            "alice@example.com",
            "--group",
            "sre",
            "--output-file",
            device_path.to_str().unwrap(),
        ],
    );
    // The token is printed because it was asked for: its stdout is exempt, its logs not.
    let token_out = admin_debug(
        &edge,
        &[
            "tunnel",
            "create",
            "by-token",
            "--token",
            "--edge",
            &edge.listen.to_string(),
        ],
    );
    assert!(token_out.status.success(), "{}", text(&token_out));
    let token_text = String::from_utf8_lossy(&token_out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| TunnelToken::parse(l).is_ok())
        .unwrap_or_else(|| panic!("no token printed: {}", text(&token_out)))
        .to_owned();
    collected.push((
        "zt tunnel create --token (stderr)".into(),
        token_out.stderr.clone(),
    ));
    let token = TunnelToken::parse(&token_text).unwrap();

    let creds = TunnelCredentials::load(&creds_path, PermissionMode::Default).unwrap();
    let device = DeviceCredentials::load(&device_path, PermissionMode::Default).unwrap();
    let admin_token = std::fs::read_to_string(edge.path("admin-token")).unwrap();
    let admin_token = admin_token.trim();
    let mut secrets: Vec<(&str, Vec<u8>)> = vec![
        ("tunnel secret", creds.secret.expose_bytes().to_vec()),
        (
            "tunnel key",
            creds.secret.derive_auth_key().expose_bytes().to_vec(),
        ),
        ("token tunnel secret", token.secret.expose_bytes().to_vec()),
        (
            "token tunnel key",
            token.secret.derive_auth_key().expose_bytes().to_vec(),
        ),
        (
            "device secret",
            device
                .secret()
                .expect("a device with a secret")
                .expose_bytes()
                .to_vec(),
        ),
        (
            "device key",
            device
                .secret()
                .expect("a device with a secret")
                .derive_auth_key()
                .expose_bytes()
                .to_vec(),
        ),
        ("admin token", admin_token.as_bytes().to_vec()),
    ];
    if let Some(bytes) = hex_decode(admin_token) {
        secrets.push(("admin token bytes", bytes));
    }

    // Connectors at debug level: from the credentials file and from the token.
    let origin = Origin::hello("127.0.0.2:0");
    let connector = debug_connector(&edge, &creds_path, "connector-debug", 2);
    connector.wait_ready(2);
    let token_metrics = free_tcp("127.0.0.1");
    let token_connector = Proc::spawn(
        "connector-token-debug",
        &[
            "tunnel",
            "--loglevel",
            DEBUG,
            "--metrics",
            &token_metrics.to_string(),
            "--cacert",
            edge.path("ca.pem").to_str().unwrap(),
            "run",
            "--token",
            &token_text,
        ],
        &[],
    );
    eventually("the token connector registers", || {
        http_get(token_metrics, "/ready").filter(|(s, _)| *s == 200)
    });

    // The client at debug level, flows through it.
    let to = origin.addr.to_string();
    let forward_listen = free_tcp("127.0.0.1").to_string();
    let client = Proc::spawn(
        "client-debug",
        &[
            "client",
            "--log",
            DEBUG,
            "--credentials",
            device_path.to_str().unwrap(),
            "forward",
            "--listen",
            &forward_listen,
            "--to",
            &to,
        ],
        &[],
    );
    client.wait_for("forwarding TCP");
    for i in 0..5 {
        hello_through(forward_listen.parse().unwrap(), &format!("request {i}")).unwrap();
    }

    // Refusals and errors: a wrong secret, a revoked device, a wrong admin token.
    let mut wrong = creds.clone();
    wrong.secret = zt_creds::TunnelSecret::generate();
    let wrong_path = edge.path("wrong.json");
    wrong
        .write(&wrong_path, zt_creds::ExistingFile::Refuse)
        .unwrap();
    secrets.push(("wrong tunnel secret", wrong.secret.expose_bytes().to_vec()));
    let refused = debug_connector(&edge, &wrong_path, "connector-refused", 1);
    refused.proc.wait_for("the edge refused this connector");
    let bad_token = edge.path("bad-admin-token");
    std::fs::write(
        &bad_token,
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    secrets.push((
        "presented admin token",
        b"0123456789abcdef0123456789abcdef".to_vec(),
    ));
    let out = zt()
        .args(["tunnel", "list", "--log", DEBUG, "--admin-url"])
        .arg(format!("http://{}", edge.admin))
        .arg("--admin-token-file")
        .arg(&bad_token)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong admin token was accepted");
    collected.push((
        "zt tunnel list with a wrong token".into(),
        text(&out).into_bytes(),
    ));
    run(
        &mut collected,
        "user remove",
        &["user", "remove", "alice@example.com"],
    );
    let revoked = zt()
        .args([
            "client",
            "--log",
            DEBUG,
            "--credentials",
            device_path.to_str().unwrap(),
            "forward",
        ])
        .args(["--listen", &free_tcp("127.0.0.1").to_string(), "--to", &to])
        .output()
        .unwrap();
    assert!(!revoked.status.success());
    collected.push(("zt client (revoked)".into(), text(&revoked).into_bytes()));

    // What operators look at: listings, the admin API, metrics pages, the audit log.
    for args in [
        &["tunnel", "list", "--output", "json"][..],
        &["tunnel", "info", "private", "--output", "json"],
        &["user", "list", "--output", "json"],
        &["rule", "list"],
        &["account"],
    ] {
        run(&mut collected, &args.join(" "), args);
    }
    for path in [
        "/v1/tunnels",
        "/v1/tunnels/private",
        "/v1/users",
        "/v1/account",
        "/v1/rules",
    ] {
        let (status, body) = admin_call(&edge, "GET", path, None);
        assert_eq!(status, 200, "{path}: {body}");
        collected.push((format!("admin API GET {path}"), body.into_bytes()));
    }
    for (name, addr) in [
        ("edge", edge.metrics),
        ("connector", connector.metrics),
        ("token connector", token_metrics),
    ] {
        for path in ["/metrics", "/ready", "/healthcheck"] {
            if let Some((_, body)) = http_get(addr, path) {
                collected.push((format!("{name} {path}"), body.into_bytes()));
            }
        }
    }
    // `Debug` of every value that holds a secret, as a program embedding the crates would
    // print it.
    collected.push((
        "Debug output".into(),
        format!(
            "{creds:?} {creds:#?} {device:?} {device:#?} {token:?} {:?} {:?} {:?}",
            creds.secret,
            creds.secret.derive_auth_key(),
            device.secret().expect("a device with a secret")
        )
        .into_bytes(),
    ));

    // Every long-running process's output, once it has ended (so nothing is missed).
    for (name, proc) in [
        ("client", client),
        ("token connector", token_connector),
        ("refused connector", refused.proc),
        ("connector", connector.proc),
        ("edge", edge.proc.take().unwrap()),
    ] {
        proc.signal("TERM");
        let mut proc = proc;
        proc.wait_exit();
        let output = proc.output();
        assert!(
            output.contains("DEBUG"),
            "the {name} logged nothing at debug level"
        );
        collected.push((format!("{name} output"), output.into_bytes()));
    }
    collected.push((
        "audit.jsonl".into(),
        std::fs::read(edge.path("audit.jsonl")).unwrap(),
    ));

    let total: usize = collected.iter().map(|(_, b)| b.len()).sum();
    let mut leaks = Vec::new();
    for (source, haystack) in &collected {
        for (secret, value) in &secrets {
            if let Some(form) = find_secret(haystack, value) {
                leaks.push(format!("{secret} in {source} ({form})"));
            }
        }
    }
    eprintln!(
        "MEASURED secret hygiene: {} sources, {total} bytes searched for {} secrets in 7 forms each: {} found",
        collected.len(),
        secrets.len(),
        leaks.len()
    );
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
    // The search can fail: it finds the secret in the credentials file, which holds it.
    assert!(find_secret(
        &std::fs::read(&creds_path).unwrap(),
        creds.secret.expose_bytes()
    )
    .is_some());
}

/// `zt tunnel run` at debug level (cloudflared's `--loglevel`), from a credentials file.
fn debug_connector(edge: &Edge, creds: &std::path::Path, name: &str, ha: u32) -> Connector {
    let metrics = free_tcp("127.0.0.1");
    let proc = Proc::spawn(
        name,
        &[
            "tunnel",
            "--loglevel",
            DEBUG,
            "--credentials-file",
            creds.to_str().unwrap(),
            "--edge",
            &edge.listen.to_string(),
            "--cacert",
            edge.path("ca.pem").to_str().unwrap(),
            "--metrics",
            &metrics.to_string(),
            "--ha-connections",
            &ha.to_string(),
            "run",
        ],
        &[],
    );
    Connector { metrics, proc }
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

#[test]
fn a_credentials_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let edge = Edge::start();
    let creds = edge.tunnel("private");
    let device = edge.user("bob@example.com", "dev");
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let connector_args = |mode: &str| {
        vec![
            "tunnel".to_owned(),
            "--credentials-file".into(),
            creds.to_str().unwrap().into(),
            "--credentials-permissions".into(),
            mode.into(),
            "--edge".into(),
            edge.listen.to_string(),
            "--cacert".into(),
            edge.path("ca.pem").to_str().unwrap().into(),
            "--metrics".into(),
            free_tcp("127.0.0.1").to_string(),
            "--ha-connections".into(),
            "1".into(),
            "run".into(),
        ]
    };
    let refused = |args: Vec<String>| {
        let out = zt().args(&args).output().unwrap();
        assert!(!out.status.success(), "zt {args:?} ran");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let runs = |name: &str, args: Vec<String>, warning: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = Proc::spawn(name, &args, &[]);
        p.wait_for("registered");
        let warned = p.output().contains(warning);
        assert!(warned, "{name}: no warning containing {warning:?}");
    };

    // World-readable: refused by default and under strict, with the fix in the message.
    chmod(&creds, 0o644);
    for mode in ["default", "strict"] {
        let e = refused(connector_args(mode));
        let want = format!(
            "{}: has mode 0644, which gives other users access to it; fix it with `chmod 600",
            creds.display()
        );
        assert!(e.contains(&want), "{mode}: {e}");
        assert!(
            e.contains("credentials-permissions: lenient"),
            "{mode}: {e}"
        );
        eprintln!(
            "MEASURED world-readable credentials, {mode}: {}",
            e.lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or_default()
        );
    }
    // `lenient` is the operator's explicit choice for a Kubernetes Secret's 0644.
    runs("connector-lenient", connector_args("lenient"), "0644");
    // Group-readable (Kubernetes' fsGroup with defaultMode 0440): accepted with a warning
    // by default, refused under strict.
    chmod(&creds, 0o640);
    runs("connector-group", connector_args("default"), "0640");
    let e = refused(connector_args("strict"));
    assert!(
        e.contains("gives its group access to it, and credentials-permissions is strict"),
        "{e}"
    );

    // The client's device credentials: the same rule.
    chmod(&device, 0o604);
    let out = client_forward_output(&device);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("has mode 0604, which gives other users access to it"),
        "{e}"
    );
}
