//! Configuration as code end to end: the real `zt plan`, `zt apply`, `zt export` and
//! `zt policy test` against a real edge runtime on loopback (zt-testkit's [`Loopback`]:
//! a connector connection serving flows and a client session), with its admin API on.
//!
//! The loopback harness provisions tunnel `prod` (with a live connector), user
//! `alice@example.com` with a device, the route `127.0.0.0/29` and the rule
//! `allow loopback`; files here adopt those by name or leave them unmanaged.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zt_testkit::loopback::{allow_all, refused, Loopback};
use zt_testkit::origin::Origin;

const SEED: &str = include_str!("../../config/seed.yaml");

/// A file adopting what the harness provisioned, plus `extra` YAML appended under the
/// given sections.
fn adopting(rules: &str) -> String {
    format!(
        "version: 1
tunnels:
  - name: prod
routes:
  - network: 127.0.0.0/29
    tunnel: prod
users:
  - email: alice@example.com
    groups: [sre]
rules:
  - name: allow loopback
    precedence: 100
    action: allow
    filters: [l4]
    traffic: net.dst.port > 0
{rules}"
    )
}

struct Harness {
    lb: Loopback,
    work: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let lb = Loopback::start(
            |c| c.admin = Some("127.0.0.1:0".parse().unwrap()),
            &["127.0.0.0/29"],
            vec![allow_all()],
        )
        .await;
        Harness {
            lb,
            work: tempfile::tempdir().unwrap(),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.lb.edge.state().dir().to_owned()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.work.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs `zt ARGS --state-dir DIR` in the work directory (off the async runtime).
    async fn zt(&self, args: &[&str], with_state: bool) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_zt"));
        cmd.args(args)
            .current_dir(self.work.path())
            .env_remove("ZT_ADMIN_URL")
            .env_remove("ZT_ADMIN_TOKEN_FILE")
            .env("NO_COLOR", "1");
        if with_state {
            cmd.arg("--state-dir").arg(self.state_dir());
        }
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    /// One admin API request; returns the status and the JSON body.
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let dir = self.state_dir();
        let addr = std::fs::read_to_string(dir.join(zt_edge::ADMIN_ADDR_FILE)).unwrap();
        let token = std::fs::read_to_string(dir.join("admin-token")).unwrap();
        let (method, path) = (method.to_owned(), path.to_owned());
        tokio::task::spawn_blocking(move || {
            let body = body.map(|b| b.to_string()).unwrap_or_default();
            let authority = addr.trim().trim_start_matches("http://").to_owned();
            let mut s = TcpStream::connect(&authority).unwrap();
            write!(
                s,
                "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                token.trim(),
                body.len()
            )
            .unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).unwrap();
            let status: u16 = reply[9..12].parse().unwrap();
            let body = reply.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
            (status, serde_json::from_str(body).unwrap_or(Value::Null))
        })
        .await
        .unwrap()
    }

    fn revision(&self) -> u64 {
        self.lb.edge.state().db().revision().get()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn show(what: &str, o: &Output) {
    println!(
        "--- {what}: exit {}\n{}{}",
        code(o),
        text(&o.stdout),
        text(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_file_applies_replans_clean_and_exports_the_same() {
    let h = Harness::start().await;
    let seed = h.write("seed.yaml", SEED);
    let seed_arg = seed.to_str().unwrap();

    let out = h.zt(&["policy", "test", "-f", seed_arg], false).await;
    show("policy test", &out);
    assert_eq!(code(&out), 0);
    assert!(text(&out.stdout).contains("4 passed, 0 failed"));

    let out = h.zt(&["plan", "-f", seed_arg], true).await;
    show("plan", &out);
    assert_eq!(code(&out), 4, "changes pending");
    let plan = text(&out.stdout);
    assert!(
        plan.contains("+ create tunnel/k8s_zero_trust_tunnel"),
        "{plan}"
    );
    assert!(!plan.contains("\x1b["), "no colour when piped");

    // The plan creates a tunnel: no credentials directory, no apply.
    let out = h.zt(&["apply", "-f", seed_arg], true).await;
    show("apply without --credentials-dir", &out);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("--credentials-dir"));
    assert!(h
        .lb
        .edge
        .state()
        .db()
        .read()
        .unwrap()
        .tunnel_by_name("k8s_zero_trust_tunnel")
        .unwrap()
        .is_none());

    std::fs::create_dir(h.work.path().join("creds")).unwrap();
    let out = h
        .zt(
            &["apply", "-f", seed_arg, "--credentials-dir", "creds"],
            true,
        )
        .await;
    show("apply", &out);
    assert_eq!(code(&out), 0);
    let creds_path = h.work.path().join("creds/k8s_zero_trust_tunnel.json");
    let mode = std::fs::metadata(&creds_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let creds =
        zt_creds::TunnelCredentials::from_json(&std::fs::read(&creds_path).unwrap()).unwrap();
    let secret_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(creds.secret.expose_bytes())
    };
    assert!(!text(&out.stdout).contains(&secret_b64), "secret printed");
    assert!(!text(&out.stderr).contains(&secret_b64), "secret printed");
    let stored =
        h.lb.edge
            .state()
            .db()
            .read()
            .unwrap()
            .tunnel_by_name("k8s_zero_trust_tunnel")
            .unwrap()
            .unwrap();
    assert_eq!(stored.id, creds.tunnel_id);

    let out = h
        .zt(&["plan", "-f", seed_arg, "--detect-drift"], true)
        .await;
    show("plan after apply", &out);
    assert_eq!(code(&out), 0, "nothing to do");
    assert!(text(&out.stdout).contains("no changes"));
    assert!(text(&out.stdout).contains("Drift: none since the last apply."));

    // Re-applying changes nothing and never touches the credentials file.
    let before = std::fs::read(&creds_path).unwrap();
    let rev = h.revision();
    let out = h
        .zt(
            &["apply", "-f", seed_arg, "--credentials-dir", "creds"],
            true,
        )
        .await;
    assert_eq!(code(&out), 0);
    assert_eq!(h.revision(), rev, "a no-op apply commits nothing");
    assert_eq!(std::fs::read(&creds_path).unwrap(), before);

    // One route's comment edited: exactly that update.
    let edited = h.write(
        "edited.yaml",
        &SEED.replace(
            "comment: Kubernetes API Server (IPv6)",
            "comment: Kubernetes API Server (IPv6, prod)",
        ),
    );
    let edited_arg = edited.to_str().unwrap();
    let out = h
        .zt(&["plan", "-f", edited_arg, "--output", "json"], true)
        .await;
    assert_eq!(code(&out), 4);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("plan: {plan:#}");
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["resource"], "route/default/2001:db8::101/128");
    assert_eq!(changes[0]["action"], "update");
    assert_eq!(
        changes[0]["fields"],
        json!([{ "field": "comment", "before": "Kubernetes API Server (IPv6)",
                 "after": "Kubernetes API Server (IPv6, prod)" }])
    );
    let out = h.zt(&["apply", "-f", edited_arg], true).await;
    show("apply edited", &out);
    assert_eq!(code(&out), 0);

    // Export → plan: no change (the harness's own records are in the export too).
    let out = h.zt(&["export", "--out", "exported.yaml"], true).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let exported = std::fs::read_to_string(h.work.path().join("exported.yaml")).unwrap();
    println!("exported:\n{exported}");
    let out = h.zt(&["plan", "-f", "exported.yaml"], true).await;
    show("plan of the export", &out);
    assert_eq!(code(&out), 0);
    let parsed = zt_edge::config::parse(Path::new("exported.yaml"), &exported).unwrap();
    let want = zt_edge::config::parse(
        Path::new("edited.yaml"),
        &std::fs::read_to_string(&edited).unwrap(),
    )
    .unwrap();
    for r in &want.routes {
        assert!(parsed.routes.contains(r), "{r:?} missing from the export");
    }
    for l in &want.lists {
        assert!(parsed.lists.contains(l), "{l:?} missing from the export");
    }
    for r in &want.rules {
        assert!(parsed.rules.contains(r), "{r:?} missing from the export");
    }
    for u in &want.users {
        assert!(parsed.users.contains(u), "{u:?} missing from the export");
    }

    // A change made outside the file is drift, named by resource.
    let (status, _) = h
        .api(
            "PATCH",
            "/v1/rules/k8s-admins%20reach%20the%20Kubernetes%20API",
            Some(json!({ "description": "edited by hand" })),
        )
        .await;
    assert_eq!(status, 200);
    let out = h
        .zt(&["plan", "-f", edited_arg, "--detect-drift"], true)
        .await;
    show("plan --detect-drift", &out);
    assert_eq!(code(&out), 5);
    assert!(text(&out.stdout).contains("! changed rule/k8s-admins reach the Kubernetes API"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_policy_test_or_a_hostile_file_changes_nothing_at_the_edge() {
    let h = Harness::start().await;
    let failing = h.write(
        "failing.yaml",
        &SEED.replace(
            "    destination: 198.51.100.101:22\n    expect: block",
            "    destination: 198.51.100.101:22\n    expect: allow",
        ),
    );
    let rev = h.revision();
    let out = h
        .zt(
            &[
                "apply",
                "-f",
                failing.to_str().unwrap(),
                "--credentials-dir",
                ".",
            ],
            true,
        )
        .await;
    show("apply with a failing policy test", &out);
    assert_eq!(code(&out), 1);
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "FAIL `alice cannot reach another port of the API server`: expected allow, got block"
        ),
        "{err}"
    );
    assert!(err.contains("by the default"), "{err}");
    assert!(err.contains("nothing was sent to the edge"), "{err}");
    let out = h
        .zt(&["policy", "test", "-f", failing.to_str().unwrap()], false)
        .await;
    assert_eq!(code(&out), 1);
    assert_eq!(h.revision(), rev);

    let hostile = [
        (
            "unknown.yaml",
            "version: 1\ntunnels:\n  - name: prod\n    secret: c2VjcmV0\n",
            "unknown.yaml:4:5: `tunnels[0].secret`: unknown field `secret`",
        ),
        (
            "dangling.yaml",
            "version: 1\nroutes:\n  - network: 10.0.0.0/8\n    tunnel: nowhere\n",
            "dangling.yaml:4:5: `routes[0].tunnel`: no tunnel named `nowhere`",
        ),
        (
            "cidr.yaml",
            "version: 1\ntunnels: [{name: t}]\nroutes:\n  - network: 10.0.0.1/33\n    tunnel: t\n",
            "cidr.yaml:4:14: `routes[0].network`",
        ),
    ];
    for (name, body, want) in hostile {
        h.write(name, body);
        let out = h
            .zt(&["apply", "-f", name, "--prune", "--force"], true)
            .await;
        show(name, &out);
        assert_eq!(code(&out), 1);
        assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains('^'), "underlined");
    }
    // The edge itself refuses the same file sent straight to its API.
    let (status, body) = h
        .api(
            "POST",
            "/v1/config/apply",
            Some(json!({
                "file": { "version": 1, "routes": [{ "network": "10.0.0.0/8", "tunnel": "nowhere" }] },
                "expected": [],
            })),
        )
        .await;
    println!("API: {status} {body}");
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_config");
    assert_eq!(h.revision(), rev, "nothing changed at the edge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_flow_survives_an_unrelated_apply_and_a_new_deny_rule_refuses_at_once() {
    let h = Harness::start().await;
    let echo = Origin::echo("127.0.0.2:0");
    let mut flow = h.lb.open(echo.addr).await.unwrap();
    let mut buf = [0u8; 5];
    flow.write_all(b"one..").await.unwrap();
    flow.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"one..");

    // An apply that adds a list and a rule for other traffic.
    let unrelated = h.write(
        "unrelated.yaml",
        &adopting(
            "  - name: block smtp
    precedence: 50
    action: block
    filters: [l4]
    traffic: net.dst.port == 25
lists:
  - name: mail servers
    slug: mail
    type: IP
    items: [192.0.2.25/32]
",
        ),
    );
    let out = h
        .zt(&["apply", "-f", unrelated.to_str().unwrap()], true)
        .await;
    show("unrelated apply", &out);
    assert_eq!(code(&out), 0);
    flow.write_all(b"two..").await.unwrap();
    flow.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"two..", "the live flow kept working");

    // A deny rule for the echo origin: new flows are refused as soon as the edge serves
    // the applied revision.
    let deny = h.write(
        "deny.yaml",
        &adopting(&format!(
            "  - name: deny echo
    precedence: 40
    action: block
    filters: [l4]
    traffic: net.dst.ip == {}
",
            echo.addr.ip()
        )),
    );
    let out = h
        .zt(
            &["apply", "-f", deny.to_str().unwrap(), "--output", "json"],
            true,
        )
        .await;
    show("deny apply", &out);
    assert_eq!(code(&out), 0);
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rev = zt_edge::Revision::new(reply["revision"].as_u64().unwrap());
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), h.lb.edge.wait_applied(rev))
        .await
        .unwrap();
    println!(
        "MEASURED the edge served the applied revision {:?} after the apply returned",
        t.elapsed()
    );
    let status = refused(h.lb.open(echo.addr).await);
    println!("refused: {status:?}");
    assert!(status.detail.contains("deny echo"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_admin_change_fails_the_apply_cleanly_and_an_unrelated_one_does_not() {
    let h = Harness::start().await;
    let db_origin = Origin::echo("127.0.0.3:0");
    let file: zt_edge::config::ConfigFile = zt_edge::config::parse(
        Path::new("f.yaml"),
        &adopting(&format!(
            "  - name: block database
    precedence: 40
    action: block
    filters: [l4]
    traffic: net.dst.ip == {}
",
            db_origin.addr.ip()
        ))
        .replace(
            "traffic: net.dst.port > 0",
            "traffic: net.dst.port > 0\n    description: every loopback flow",
        ),
    )
    .unwrap();
    let (status, plan) = h
        .api("POST", "/v1/config/plan", Some(json!({ "file": file })))
        .await;
    assert_eq!(status, 200, "{plan}");
    println!("plan: {plan:#}");
    assert_eq!(plan["changes"].as_array().unwrap().len(), 2);
    // Another admin edits the rule the plan updates.
    let (status, _) = h
        .api(
            "PATCH",
            "/v1/rules/allow%20loopback",
            Some(json!({ "description": "edited by hand" })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, reply) = h
        .api(
            "POST",
            "/v1/config/apply",
            Some(json!({ "file": file, "expected": plan["expected"] })),
        )
        .await;
    println!("apply: {status} {reply}");
    assert_eq!(status, 409);
    assert_eq!(reply["error"]["code"], "changed_since_plan");
    assert_eq!(reply["error"]["detail"]["resource"], "rule/allow loopback");
    // Nothing half-applied: no new rule, the user's groups unchanged, and the flow the
    // plan would block still works.
    let (_, rules) = h.api("GET", "/v1/rules", None).await;
    assert!(rules
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["name"] != "block database"));
    let mut flow = h.lb.open(db_origin.addr).await.unwrap();
    let mut buf = [0u8; 4];
    flow.write_all(b"ping").await.unwrap();
    flow.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    // Planned again; then a change to a resource the plan does not touch.
    let (_, plan) = h
        .api("POST", "/v1/config/plan", Some(json!({ "file": file })))
        .await;
    let (status, _) = h
        .api(
            "POST",
            "/v1/lists",
            Some(json!({ "name": "someone else's", "type": "IP", "items": ["192.0.2.7"] })),
        )
        .await;
    assert_eq!(status, 201);
    let (status, reply) = h
        .api(
            "POST",
            "/v1/config/apply",
            Some(json!({ "file": file, "expected": plan["expected"] })),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let rev = zt_edge::Revision::new(reply["revision"].as_u64().unwrap());
    tokio::time::timeout(Duration::from_secs(30), h.lb.edge.wait_applied(rev))
        .await
        .unwrap();
    let status = refused(h.lb.open(db_origin.addr).await);
    assert!(status.detail.contains("block database"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_spares_unmanaged_users_and_needs_force_for_a_connected_tunnel() {
    let h = Harness::start().await;
    let echo = Origin::echo("127.0.0.2:0");
    // The file manages bob only; alice (made by `zt user add` in effect) is not its.
    let only_bob = h.write(
        "bob.yaml",
        "version: 1\nusers:\n  - email: bob@example.com\n    groups: [sre]\n",
    );
    let bob_arg = only_bob.to_str().unwrap();
    let out = h.zt(&["apply", "-f", bob_arg], true).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));

    let out = h.zt(&["plan", "-f", bob_arg, "--prune"], true).await;
    show("plan --prune", &out);
    assert_eq!(code(&out), 4);
    let plan = text(&out.stdout);
    assert!(plan.contains("- delete rule/allow loopback"), "{plan}");
    assert!(
        plan.contains("- delete route/default/127.0.0.0/29"),
        "{plan}"
    );
    assert!(plan.contains("- delete tunnel/prod"), "{plan}");
    assert!(
        plan.contains("blocked: 1 live connector connection(s); pruning it needs --force"),
        "{plan}"
    );
    assert!(
        !plan.contains("alice"),
        "unmanaged users are never pruned: {plan}"
    );

    let rev = h.revision();
    let out = h.zt(&["apply", "-f", bob_arg, "--prune"], true).await;
    show("apply --prune", &out);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("tunnel/prod: 1 live connector connection(s)"));
    assert_eq!(h.revision(), rev, "nothing applied");
    let mut flow = h.lb.open(echo.addr).await.unwrap();
    let mut buf = [0u8; 4];
    flow.write_all(b"ping").await.unwrap();
    flow.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    let out = h
        .zt(&["apply", "-f", bob_arg, "--prune", "--force"], true)
        .await;
    show("apply --prune --force", &out);
    assert_eq!(code(&out), 0);
    let r = h.lb.edge.state().db().read().unwrap();
    assert!(r.tunnel_by_name("prod").unwrap().is_none());
    assert!(r.rule_by_name("allow loopback").unwrap().is_none());
    assert!(r.user_by_email("alice@example.com").unwrap().is_some());
    assert!(r.user_by_email("bob@example.com").unwrap().is_some());
    // alice's device survives too.
    assert_eq!(r.list::<zt_edge::Device>().unwrap().len(), 1);

    // bob leaves the file: pruned, being the file's.
    drop(r);
    let none = h.write("none.yaml", "version: 1\n");
    let out = h
        .zt(&["apply", "-f", none.to_str().unwrap(), "--prune"], true)
        .await;
    show("apply --prune of an empty file", &out);
    assert_eq!(code(&out), 0);
    let r = h.lb.edge.state().db().read().unwrap();
    assert!(r.user_by_email("bob@example.com").unwrap().is_none());
    assert!(r.user_by_email("alice@example.com").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_users_update_in_place() {
    let h = Harness::start().await;
    let (_, routes) = h.api("GET", "/v1/routes", None).await;
    let route = &routes.as_array().unwrap()[0];
    let id = route["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/routes/{id}");
    let (status, updated) = h
        .api(
            "PATCH",
            &path,
            Some(json!({ "comment": "the loopback cluster" })),
        )
        .await;
    println!("{status} {updated}");
    assert_eq!(status, 200);
    assert_eq!(updated["id"], route["id"], "same route, same id");
    assert_eq!(updated["comment"], "the loopback cluster");
    let stored =
        h.lb.edge
            .state()
            .db()
            .read()
            .unwrap()
            .get::<zt_edge::Route>(id.parse().unwrap())
            .unwrap()
            .unwrap();
    assert_eq!(stored.comment, "the loopback cluster");
    assert_eq!(stored.version, 2, "one write after the harness's");
    let (status, body) = h
        .api("PATCH", &path, Some(json!({ "tunnel": "nowhere" })))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = h
        .api("PATCH", &path, Some(json!({ "network": "10.0.0.0/8" })))
        .await;
    assert_eq!(status, 400, "{body}");

    let (status, user) = h
        .api(
            "PATCH",
            "/v1/users/ALICE@example.com",
            Some(json!({ "groups": ["sre", "k8s-admins", "sre"] })),
        )
        .await;
    println!("{status} {user}");
    assert_eq!(status, 200);
    assert_eq!(user["groups"], json!(["sre", "k8s-admins"]));
    assert_eq!(user["id"], json!(h.lb.records.device.user_id));
    // The user's device still authenticates: a new session of it connects.
    h.lb.connect_client().await.unwrap();
    let (status, body) = h
        .api(
            "PATCH",
            "/v1/users/alice@example.com",
            Some(json!({ "groups": [" "] })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_token_in_the_file_is_created_once_with_its_credentials_file_and_revoked_when_dropped(
) {
    let h = Harness::start().await;
    let file = h.write(
        "tokens.yaml",
        "version: 1\nservice_tokens:\n  - name: ci-deploy\n    groups: [ci]\n    expires_at: 2030-01-01T00:00:00Z\n",
    );
    let file_arg = file.to_str().unwrap();
    let out = h.zt(&["plan", "-f", file_arg], true).await;
    show("plan", &out);
    assert_eq!(code(&out), 4, "changes pending");
    assert!(text(&out.stdout).contains("+ create token/ci-deploy"));
    // A created token's secret exists only in the apply's answer: no directory, no apply.
    let out = h.zt(&["apply", "-f", file_arg], true).await;
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("service token ci-deploy")
            && text(&out.stderr).contains("--credentials-dir"),
        "{}",
        text(&out.stderr)
    );
    std::fs::create_dir(h.work.path().join("creds")).unwrap();
    let out = h
        .zt(
            &["apply", "-f", file_arg, "--credentials-dir", "creds"],
            true,
        )
        .await;
    show("apply", &out);
    assert_eq!(code(&out), 0);
    let path = h.work.path().join("creds/token-ci-deploy.json");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let creds = zt_creds::DeviceCredentials::from_json(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(creds.service_token.as_deref(), Some("ci-deploy"));
    let zt_creds::DeviceAuth::Secret(secret) = &creds.auth else {
        panic!("a token's credentials carry a secret");
    };
    let stored: zt_edge::ServiceToken =
        h.lb.edge
            .state()
            .db()
            .read()
            .unwrap()
            .get(creds.device_id)
            .unwrap()
            .expect("the token the file names");
    assert_eq!(stored.auth_key, secret.derive_auth_key());
    assert_eq!(stored.groups, ["ci"]);
    // Applied again: nothing changes and the file is left alone.
    let before = std::fs::read(&path).unwrap();
    let out = h
        .zt(
            &["apply", "-f", file_arg, "--credentials-dir", "creds"],
            true,
        )
        .await;
    assert_eq!(code(&out), 0);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Dropped from the file and pruned: revoked.
    let empty = h.write("empty.yaml", "version: 1\n");
    let out = h
        .zt(
            &["apply", "-f", empty.to_str().unwrap(), "--prune", "--force"],
            true,
        )
        .await;
    show("apply --prune", &out);
    assert_eq!(code(&out), 0);
    let stored: zt_edge::ServiceToken =
        h.lb.edge
            .state()
            .db()
            .read()
            .unwrap()
            .get(creds.device_id)
            .unwrap()
            .unwrap();
    assert!(stored.revoked);
}
