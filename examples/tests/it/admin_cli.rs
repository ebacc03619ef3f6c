//! The admin commands of the real `zt` binary against a real admin API server started in
//! this process over a state directory in a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;
use zt_creds::{DeviceCredentials, PermissionMode, TunnelCredentials, TunnelToken};
use zt_edge::{
    AdminServer, ConnectionSummary, ConnectorKind, EdgeState, LiveView, NoLiveView, StateOptions,
    Timestamp,
};

struct Edge {
    dir: tempfile::TempDir,
    state_dir: PathBuf,
    state: Arc<EdgeState>,
    runtime: tokio::runtime::Runtime,
    server: Option<AdminServer>,
}

impl Edge {
    fn start() -> Self {
        Self::start_with(Arc::new(NoLiveView))
    }

    fn start_with(live: Arc<dyn LiveView>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("edge");
        let state =
            Arc::new(EdgeState::open_or_init(&state_dir, &StateOptions::default()).unwrap());
        let runtime = crate::support::runtime(1);
        let server = runtime
            .block_on(AdminServer::bind(
                "127.0.0.1:0".parse().unwrap(),
                state.clone(),
                live,
            ))
            .unwrap();
        Self {
            dir,
            state_dir,
            state,
            runtime,
            server: Some(server),
        }
    }

    /// Runs `zt ARGS --state-dir DIR` in the temporary directory.
    fn zt(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_zt"))
            .args(args)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .current_dir(self.dir.path())
            .env_remove("ZT_ADMIN_URL")
            .env_remove("ZT_ADMIN_TOKEN_FILE")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.zt(args);
        assert!(
            out.status.success(),
            "zt {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Runs a command that must fail with `code`; returns its stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.zt(args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(code), "zt {args:?}: {stderr}");
        stderr
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn tunnel_create_writes_private_credentials_and_list_shows_the_tunnel() {
    let edge = Edge::start();
    let out = edge.ok(&["tunnel", "create", "prod-cluster"]);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("Created tunnel prod-cluster with id "))
        .unwrap()
        .to_owned();
    let path = edge.dir.path().join(format!("{id}.json"));
    assert_eq!(mode(&path), 0o600);
    let creds = TunnelCredentials::load(&path, PermissionMode::Strict).unwrap();
    assert_eq!(creds.tunnel_id.to_string(), id);
    assert_eq!(creds.account_tag, edge.state.account_tag());

    // An explicit path is never overwritten, and no tunnel is created for nothing.
    let explicit = edge.dir.path().join("creds.json");
    edge.ok(&[
        "tunnel",
        "create",
        "second",
        "--credentials-file",
        explicit.to_str().unwrap(),
    ]);
    let before = std::fs::read(&explicit).unwrap();
    let stderr = edge.fails(
        &[
            "tunnel",
            "create",
            "third",
            "--credentials-file",
            explicit.to_str().unwrap(),
        ],
        1,
    );
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&explicit).unwrap(), before);

    let table = edge.ok(&["tunnel", "list"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in ["ID", "NAME", "CREATED", "CONNECTIONS"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(
        table.contains("prod-cluster") && table.contains(&id),
        "{table}"
    );
    assert!(!table.contains("third"), "{table}");
    let list = edge.json(&["tunnel", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);

    let stderr = edge.fails(&["tunnel", "create", "prod-cluster"], 1);
    assert!(stderr.contains("already exists"), "{stderr}");

    let info = edge.json(&["tunnel", "info", "prod-cluster"]);
    assert_eq!(info["id"], id.as_str());
    edge.ok(&["tunnel", "delete", &id]);
    let stderr = edge.fails(&["tunnel", "info", "prod-cluster"], 1);
    assert!(stderr.contains("zt tunnel list"), "{stderr}");
}

#[test]
fn tunnel_create_token_carries_edge_and_ca_fingerprint() {
    let edge = Edge::start();
    let out = edge.ok(&[
        "tunnel",
        "create",
        "tok",
        "--token",
        "--edge",
        "127.0.0.1:7844",
    ]);
    let token = TunnelToken::parse(out.trim()).unwrap();
    assert_eq!(token.edge, vec!["127.0.0.1:7844".to_owned()]);
    assert_eq!(
        token.ca_fingerprint.unwrap().to_string(),
        edge.state.ca_fingerprint()
    );
    assert_eq!(token.account_tag, edge.state.account_tag());
    // No credentials file was written.
    let files: Vec<_> = std::fs::read_dir(edge.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, vec![std::ffi::OsString::from("edge")]);
}

#[test]
fn routes_vnets_and_their_refusals() {
    let edge = Edge::start();
    edge.ok(&["tunnel", "create", "k8s"]);
    edge.ok(&[
        "route",
        "ip",
        "add",
        "10.0.0.0/8",
        "k8s",
        "--comment",
        "all",
    ]);
    let added = edge.json(&["route", "ip", "add", "10.1.0.0/16", "k8s"]);
    let narrow = added["id"].as_str().unwrap().to_owned();

    let stderr = edge.fails(&["route", "ip", "add", "10.1.2.3/16", "k8s"], 1);
    assert!(stderr.contains("did you mean 10.1.0.0/16"), "{stderr}");
    let stderr = edge.fails(&["route", "ip", "add", "10.1.0.0/16", "k8s"], 1);
    assert!(stderr.contains(&narrow), "{stderr}");
    let stderr = edge.fails(&["route", "ip", "add", "192.0.2.0/24", "nope"], 1);
    assert!(stderr.contains("nope"), "{stderr}");

    let table = edge.ok(&["route", "ip", "show"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("10.0.0.0/8") && table.contains("10.1.0.0/16"));
    let got = edge.ok(&["route", "ip", "get", "10.1.2.3"]);
    assert!(got.contains("by route 10.1.0.0/16"), "{got}");
    assert!(got.contains("also covers"), "{got}");
    let got = edge.json(&["route", "ip", "get", "10.1.2.3"]);
    assert_eq!(got["also_covering"][0]["network"], "10.0.0.0/8");

    edge.ok(&["vnet", "add", "staging", "--comment", "test"]);
    edge.ok(&[
        "route",
        "ip",
        "add",
        "10.1.0.0/16",
        "k8s",
        "--vnet",
        "staging",
    ]);
    let stderr = edge.fails(&["vnet", "delete", "staging"], 1);
    assert!(stderr.contains("10.1.0.0/16"), "{stderr}");
    let shown = edge.json(&["route", "ip", "show", "--vnet", "staging"]);
    assert_eq!(shown.as_array().unwrap().len(), 1);
    edge.ok(&["route", "ip", "delete", "10.1.0.0/16", "--vnet", "staging"]);
    edge.ok(&["vnet", "rename", "staging", "lab"]);
    edge.ok(&["vnet", "default", "lab"]);
    let vnets = edge.ok(&["vnet", "list"]);
    assert!(
        vnets
            .lines()
            .any(|l| l.contains("lab") && l.contains("yes")),
        "{vnets}"
    );
    edge.ok(&["vnet", "default", "default"]);
    edge.ok(&["vnet", "delete", "lab"]);

    edge.ok(&["route", "ip", "delete", &narrow]);
    let stderr = edge.fails(&["tunnel", "delete", "k8s"], 1);
    assert!(stderr.contains("10.0.0.0/8"), "{stderr}");
}

#[test]
fn lists_and_rules_with_the_caret_diagnostic() {
    let edge = Edge::start();
    let items = edge.dir.path().join("ips.txt");
    std::fs::write(
        &items,
        "# the API server\n198.51.100.101\n\n2001:db8::101/128\n",
    )
    .unwrap();
    let out = edge.ok(&[
        "list",
        "create",
        "Kubernetes API IPs",
        "--type",
        "IP",
        "--slug",
        "k8s_api",
        "--file",
        items.to_str().unwrap(),
    ]);
    assert!(
        out.contains("2 item(s)") && out.contains("$k8s_api"),
        "{out}"
    );
    let stderr = edge.fails(&["list", "create", "bad", "--type", "IP", "10.0.0.1/8"], 1);
    assert!(stderr.contains("10.0.0.0/8"), "{stderr}");

    edge.ok(&[
        "rule",
        "create",
        "allow k8s",
        "--precedence",
        "10",
        "--action",
        "allow",
        "--filter",
        "l4",
        "--traffic",
        "net.dst.ip in $k8s_api and net.dst.port == 443",
    ]);
    let stderr = edge.fails(
        &[
            "rule",
            "create",
            "broken",
            "--precedence",
            "20",
            "--action",
            "block",
            "--traffic",
            "net.dst.port == == 22",
        ],
        1,
    );
    assert!(stderr.contains("net.dst.port == == 22"), "{stderr}");
    assert!(stderr.contains('^'), "{stderr}");
    let stderr = edge.fails(
        &[
            "rule",
            "create",
            "dup",
            "--precedence",
            "10",
            "--action",
            "block",
        ],
        1,
    );
    assert!(stderr.contains("allow k8s"), "{stderr}");

    edge.ok(&[
        "rule",
        "update",
        "allow k8s",
        "--precedence",
        "30",
        "--disable",
    ]);
    let rules = edge.json(&["rule", "list"]);
    assert_eq!(rules[0]["precedence"], 30);
    assert_eq!(rules[0]["enabled"], false);
    let table = edge.ok(&["rule", "list"]);
    assert!(table.contains("allow k8s"), "{table}");

    let stderr = edge.fails(&["list", "delete", "k8s_api"], 1);
    assert!(stderr.contains("allow k8s"), "{stderr}");
    edge.ok(&["list", "update", "k8s_api", "--add", "198.51.100.102"]);
    let shown = edge.ok(&["list", "show", "k8s_api"]);
    assert!(shown.contains("198.51.100.102"), "{shown}");
    edge.ok(&["rule", "delete", "allow k8s"]);
    edge.ok(&["list", "delete", "k8s_api"]);
    let lists = edge.json(&["list", "show"]);
    assert!(lists.as_array().unwrap().is_empty());
}

#[test]
fn user_add_writes_private_device_credentials_and_account_shows_the_pin() {
    let edge = Edge::start();
    let out = edge.ok(&[
        "user",
        "add",
        "ana@example.com",
        "--group",
        "sre",
        "--group",
        "dev",
        "--edge",
        "127.0.0.1:7844",
        "--output-file",
        "ana.json",
    ]);
    assert!(out.contains("ana.json"), "{out}");
    let path = edge.dir.path().join("ana.json");
    assert_eq!(mode(&path), 0o600);
    let creds = DeviceCredentials::load(&path, PermissionMode::Strict).unwrap();
    assert_eq!(creds.user_email, "ana@example.com");
    assert_eq!(
        creds.ca_fingerprint.to_string(),
        edge.state.ca_fingerprint()
    );
    let stderr = edge.fails(
        &[
            "user",
            "add",
            "bob@example.com",
            "--edge",
            "127.0.0.1:7844",
            "--output-file",
            "ana.json",
        ],
        1,
    );
    assert!(stderr.contains("already exists"), "{stderr}");

    let users = edge.json(&["user", "list"]);
    assert_eq!(users[0]["groups"], serde_json::json!(["sre", "dev"]));
    let table = edge.ok(&["user", "list"]);
    assert!(
        table.contains("ana@example.com") && table.contains("sre,dev"),
        "{table}"
    );
    let out = edge.ok(&["user", "remove", "ana@example.com"]);
    assert!(out.contains("revoked 1 device(s)"), "{out}");

    let account = edge.ok(&["account"]);
    assert!(account.contains(edge.state.account_tag()), "{account}");
    assert!(account.contains(edge.state.ca_fingerprint()), "{account}");
    let account = edge.json(&["account"]);
    assert_eq!(account["account_tag"], edge.state.account_tag());
}

#[test]
fn unreachable_edge_wrong_token_and_usage_errors_have_their_exit_codes() {
    let edge = Edge::start();
    let wrong = edge.dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let stderr = edge.fails(
        &["account", "--admin-token-file", wrong.to_str().unwrap()],
        3,
    );
    assert!(stderr.contains("token"), "{stderr}");

    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(["tunnel", "list", "--state-dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin.addr") && stderr.contains("--state-dir"),
        "{stderr}"
    );

    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let stderr = edge.fails(&["account", "--admin-url", &url], 3);
    assert!(stderr.contains("cannot reach"), "{stderr}");

    edge.fails(&["route", "ip", "add", "10.0.0.0/8"], 2);
    edge.fails(&["vnet", "frobnicate"], 2);
}

#[test]
fn the_admin_api_is_found_from_the_environment() {
    let edge = Edge::start();
    let url = format!("http://{}", edge.server.as_ref().unwrap().local_addr());
    let by_url = Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(["account", "--output", "json"])
        .env("ZT_ADMIN_URL", &url)
        .env("ZT_ADMIN_TOKEN_FILE", edge.state.admin_token_path())
        .env("ZT_EDGE_STATE_DIR", edge.dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert!(by_url.status.success(), "{by_url:?}");
    let v: Value = serde_json::from_slice(&by_url.stdout).unwrap();
    assert_eq!(v["account_tag"], edge.state.account_tag());

    // The edge's default state directory, when nothing else is given.
    let by_dir = Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(["vnet", "list"])
        .env_remove("ZT_ADMIN_URL")
        .env_remove("ZT_ADMIN_TOKEN_FILE")
        .env("ZT_EDGE_STATE_DIR", &edge.state_dir)
        .output()
        .unwrap();
    assert!(by_dir.status.success(), "{by_dir:?}");
    assert!(String::from_utf8_lossy(&by_dir.stdout).contains("default"));
}

/// Four connections on edge-a and one on edge-b, for whichever tunnel is asked about.
struct Connected;

impl LiveView for Connected {
    fn tunnel_connections(&self, _tunnel_id: Uuid) -> Vec<ConnectionSummary> {
        let connector = Uuid::new_v4();
        [
            (0, "edge-a"),
            (1, "edge-a"),
            (2, "edge-a"),
            (3, "edge-a"),
            (0, "edge-b"),
        ]
        .into_iter()
        .map(|(i, edge)| {
            ConnectionSummary::new(
                Uuid::new_v4(),
                connector,
                i,
                edge.to_owned(),
                "127.0.0.1:40000".parse().unwrap(),
                ConnectorKind::Zt,
                "test".to_owned(),
                Timestamp::now(),
                0,
                false,
                true,
            )
        })
        .collect()
    }
}

#[test]
fn tunnel_list_counts_connections_per_edge() {
    let edge = Edge::start_with(Arc::new(Connected));
    edge.ok(&["tunnel", "create", "prod-cluster"]);
    let table = edge.ok(&["tunnel", "list"]);
    let row = table.lines().find(|l| l.contains("prod-cluster")).unwrap();
    assert!(row.ends_with("4xedge-a, 1xedge-b"), "{table}");
    let info = edge.ok(&["tunnel", "info", "prod-cluster"]);
    assert!(info.contains("4xedge-a, 1xedge-b"), "{info}");
    assert_eq!(
        info.lines().filter(|l| l.contains("healthy")).count(),
        5,
        "{info}"
    );
}

#[test]
fn tunnel_cloudflared_opts_in_writes_the_ca_and_prints_the_command_line() {
    let edge = Edge::start();
    let creds = edge.dir.path().join("legacy.json");
    let creds_arg = creds.to_str().unwrap();
    edge.ok(&[
        "tunnel",
        "create",
        "legacy",
        "--credentials-file",
        creds_arg,
    ]);
    let id = TunnelCredentials::load(&creds, PermissionMode::Strict)
        .unwrap()
        .tunnel_id
        .to_string();

    // Not opted in: the command says how.
    let stderr = edge.fails(
        &[
            "tunnel",
            "cloudflared",
            "legacy",
            "--edge",
            "127.0.0.1:7844",
        ],
        1,
    );
    assert!(stderr.contains("--enable --credentials-file"), "{stderr}");
    // --enable needs the credentials.
    let stderr = edge.fails(&["tunnel", "cloudflared", "legacy", "--enable"], 1);
    assert!(stderr.contains("--credentials-file"), "{stderr}");

    let out = edge.ok(&[
        "tunnel",
        "cloudflared",
        "legacy",
        "--enable",
        "--credentials-file",
        creds_arg,
        "--ca-file",
        "edge-ca.pem",
        "--edge",
        "127.0.0.1:7844",
    ]);
    let line = out.trim();
    assert_eq!(
        line,
        format!(
            "cloudflared tunnel --no-autoupdate --edge 127.0.0.1:7844 --cacert edge-ca.pem \
             --protocol quic run --credentials-file {creds_arg} {id}"
        )
    );
    let ca = std::fs::read_to_string(edge.dir.path().join("edge-ca.pem")).unwrap();
    assert_eq!(ca, edge.state.ca_pem());
    let info = edge.json(&["tunnel", "info", "legacy"]);
    assert_eq!(info["accepts_cloudflared"], true);

    // JSON output for scripts: the argument vector.
    let v = edge.json(&[
        "tunnel",
        "cloudflared",
        "legacy",
        "--edge",
        "edge.example:7844",
    ]);
    assert_eq!(v["command"][0], "cloudflared");
    assert_eq!(v["command"][4], "edge.example:7844");
    assert_eq!(v["command"][12], id);

    // A minimal config file with warp-routing on, passed with --config; never overwritten.
    let args = [
        "tunnel",
        "cloudflared",
        "legacy",
        "--edge",
        "127.0.0.1:7844",
        "--ca-file",
        "edge-ca.pem",
        "--config-file",
        "cfd.yaml",
    ];
    let out = edge.ok(&args);
    assert!(
        out.starts_with("cloudflared tunnel --no-autoupdate --config cfd.yaml --edge "),
        "{out}"
    );
    let yaml = std::fs::read_to_string(edge.dir.path().join("cfd.yaml")).unwrap();
    assert!(yaml.contains(&format!("tunnel: {id}\n")), "{yaml}");
    assert!(yaml.contains("warp-routing:\n  enabled: true\n"), "{yaml}");
    assert!(
        yaml.contains(&format!("credentials-file: \"{id}.json\"")),
        "{yaml}"
    );
    let stderr = edge.fails(&args, 1);
    assert!(stderr.contains("never overwritten"), "{stderr}");

    edge.ok(&["tunnel", "cloudflared", "legacy", "--disable"]);
    let info = edge.json(&["tunnel", "info", "legacy"]);
    assert_eq!(info["accepts_cloudflared"], false);
}

#[test]
fn tunnel_create_from_credentials_imports_a_cloudflare_made_tunnel() {
    let edge = Edge::start();
    // A credentials file as Cloudflare's `cloudflared tunnel create` writes it.
    let file = edge.dir.path().join("cf-tunnel.json");
    std::fs::write(
        &file,
        r#"{"AccountTag":"0123456789abcdef0123456789abcdef","TunnelSecret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","TunnelID":"8e343b13-a087-48ea-825f-9783931ff2a5"}"#,
    )
    .unwrap();
    let before = std::fs::read(&file).unwrap();
    let out = edge.ok(&[
        "tunnel",
        "create",
        "k8s",
        "--from-credentials",
        file.to_str().unwrap(),
        "--allow-cloudflared",
    ]);
    assert!(
        out.contains("Imported tunnel k8s with id 8e343b13-a087-48ea-825f-9783931ff2a5"),
        "{out}"
    );
    // The file the connectors hold is left as it is, and no other file is written.
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert!(!edge
        .dir
        .path()
        .join("8e343b13-a087-48ea-825f-9783931ff2a5.json")
        .exists());
    let info = edge.json(&["tunnel", "info", "k8s"]);
    assert_eq!(info["id"], "8e343b13-a087-48ea-825f-9783931ff2a5");
    assert_eq!(info["account_tag"], "0123456789abcdef0123456789abcdef");
    assert_eq!(info["accepts_cloudflared"], true);

    // Importing it again is refused by the edge; a file that is not credentials is named.
    let stderr = edge.fails(
        &[
            "tunnel",
            "create",
            "k8s-2",
            "--from-credentials",
            file.to_str().unwrap(),
        ],
        1,
    );
    assert!(stderr.contains("already exists"), "{stderr}");
    let junk = edge.dir.path().join("junk.json");
    std::fs::write(&junk, "{}").unwrap();
    let stderr = edge.fails(
        &[
            "tunnel",
            "create",
            "k8s-3",
            "--from-credentials",
            junk.to_str().unwrap(),
        ],
        1,
    );
    assert!(
        stderr.contains("junk.json is not a credentials file"),
        "{stderr}"
    );
}
