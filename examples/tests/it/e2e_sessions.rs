//! Sessions that end, through the real binaries: a service token used by a pipeline-like
//! script (kubectl through `zt client socks`) whose session expires while a kubectl watch
//! is open, a token revoked while its watch is open, and (with a real OpenID Provider and
//! Chromium) one of a user's two signed-in devices revoked while both have flows open,
//! then the user removed. Each flow's audit line gives the reason it ended
//! (`session_expired`, `revoked`); the tests print how long after the expiry or the
//! revocation each flow ended.
//!
//! The watch is `kubectl get --raw '/api/v1/namespaces/default/pods?watch=true'` against
//! a mutual-TLS stand-in API server that streams one watch event every 200 ms as chunked
//! JSON, as the API server does, until the connection ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use zt_testkit::origin::Origin;
use zt_testkit::pki::KubePki;

use crate::e2e_kubectl_path::{kubeconfig, kubectl_version, VERSION_JSON};
use crate::support::*;

/// The stand-in API server: `/version`, and watches that stream an event every 200 ms.
fn watch_server(bind: &str, config: Arc<rustls::ServerConfig>) -> Origin {
    Origin::spawn(bind, move |tcp| {
        let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
            return;
        };
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&req).into_owned();
        if head.contains("watch=true") {
            if tls
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                      Transfer-Encoding: chunked\r\n\r\n",
                )
                .is_err()
            {
                return;
            }
            for n in 0u64.. {
                let event = format!(
                    "{{\"type\":\"MODIFIED\",\"object\":{{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\
                     \"metadata\":{{\"name\":\"web\",\"namespace\":\"default\",\
                     \"resourceVersion\":\"{n}\"}}}}}}\n"
                );
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                if tls.write_all(chunk.as_bytes()).is_err() || tls.flush().is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            return;
        }
        let (status, body) = if head.starts_with("GET /version") {
            ("200 OK", VERSION_JSON)
        } else {
            ("404 Not Found", "{}")
        };
        let _ = write!(
            tls,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        tls.conn.send_close_notify();
        let _ = tls.flush();
    })
}

fn have_kubectl() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok()
}

/// A running `kubectl get --raw …?watch=true`: the time of its first event and, through
/// the channel, the time it ended.
struct Watch {
    started: SystemTime,
    ended: mpsc::Receiver<Instant>,
    events: Arc<std::sync::atomic::AtomicUsize>,
}

impl Watch {
    fn start(kubeconfig: &std::path::Path) -> Watch {
        let started = SystemTime::now();
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["get", "--raw", "/api/v1/namespaces/default/pods?watch=true"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl starts");
        let stdout = child.stdout.take().unwrap();
        let events = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, ended) = mpsc::channel();
        let (first_tx, first) = mpsc::channel();
        let counter = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("\"MODIFIED\"")
                    && counter.fetch_add(1, std::sync::atomic::Ordering::AcqRel) == 0
                {
                    let _ = first_tx.send(());
                }
            }
            let _ = child.wait();
            let _ = tx.send(Instant::now());
        });
        first
            .recv_timeout(DEADLINE)
            .expect("the watch's first event arrives");
        Watch {
            started,
            ended,
            events,
        }
    }

    fn events(&self) -> usize {
        self.events.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits (up to `within`) for the watch to end.
    fn wait_end(&self, within: Duration) -> Option<Instant> {
        self.ended.recv_timeout(within).ok()
    }
}

/// The edge (drain 1 s after a session's end), tunnel `api` to 127.0.0.2, one connector,
/// the stand-in API server, and a rule allowing group `ci` to it.
struct Rig {
    edge: Edge,
    _connector: Connector,
    pki: KubePki,
    api: Origin,
}

fn rig() -> Rig {
    let edge = Edge::start_with(&["--session-drain", "1s"]);
    let creds = edge.tunnel("api");
    edge.admin(&["route", "ip", "add", "127.0.0.2/32", "api"]);
    edge.rule(
        "Allow ci",
        100,
        "allow",
        "l4",
        "any(identity.groups[*] == \"ci\") and net.dst.ip == 127.0.0.2",
    );
    let connector = Connector::start(&edge, "api", &creds, "connector", 1);
    connector.wait_ready(1);
    let pki = KubePki::new("sessions kubernetes CA", &["127.0.0.2"]);
    let api = watch_server("127.0.0.2:0", pki.server_config());
    Rig {
        edge,
        _connector: connector,
        pki,
        api,
    }
}

impl Rig {
    fn kubeconfig(&self, proxy: SocketAddr) -> std::path::PathBuf {
        kubeconfig(
            self.edge.dir.path(),
            &self.pki,
            &format!("https://{}", self.api.addr),
            &format!("    proxy-url: socks5://{proxy}\n"),
        )
    }

    /// The audit lines of flows to the API server from `device` (a device or token id).
    fn flows_of(&self, device: &str) -> Vec<serde_json::Value> {
        self.edge
            .flow_audit_lines()
            .into_iter()
            .filter(|l| l["destination"] == self.api.addr.to_string() && l["device_id"] == device)
            .collect()
    }

    /// Waits for the audit line of `watch`: of `device`'s flows that ended after the watch
    /// started (kubectl's own short requests end `completed` first), the one the edge cut,
    /// which must be the longest.
    fn watch_line(&self, device: &str, watch: &Watch) -> serde_json::Value {
        let after = || -> Vec<serde_json::Value> {
            self.flows_of(device)
                .into_iter()
                .filter(|l| {
                    l["time"]
                        .as_str()
                        .and_then(zt_edge::Timestamp::parse_rfc3339)
                        .is_some_and(|t| t.to_system_time() >= watch.started)
                })
                .collect()
        };
        let cut = eventually("the audit line of the flow the edge cut", || {
            let cut: Vec<_> = after()
                .into_iter()
                .filter(|l| l["close_reason"] != "completed")
                .collect();
            (!cut.is_empty()).then_some(cut)
        });
        assert_eq!(cut.len(), 1, "one flow cut: {cut:?}");
        let longest = after()
            .into_iter()
            .max_by_key(|l| l["duration_ms"].as_u64())
            .unwrap();
        assert_eq!(longest, cut[0], "the flow cut is the watch");
        longest
    }
}

fn token_create(edge: &Edge, name: &str, extra: &[&str]) -> (std::path::PathBuf, String) {
    let file = edge.path(&format!("token-{name}.json"));
    let mut args = vec![
        "token",
        "create",
        name,
        "--group",
        "ci",
        "--output-file",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let said = edge.admin(&args);
    assert!(said.contains("Created service token"), "{said}");
    let text = std::fs::read_to_string(&file).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ServiceToken"], name, "{text}");
    assert!(v.get("UserEmail").is_none(), "a token has no user: {text}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    (file, v["DeviceID"].as_str().unwrap().to_owned())
}

fn token_json(edge: &Edge, name: &str) -> serde_json::Value {
    let all: serde_json::Value =
        serde_json::from_str(&edge.admin(&["token", "list", "--output", "json"])).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("token {name} is listed: {all}"))
}

#[test]
fn a_service_token_s_session_expires_under_a_kubectl_watch_and_a_revoked_token_s_flows_end() {
    if !have_kubectl() {
        eprintln!("!!! SKIPPED: e2e_sessions needs kubectl, which is not installed");
        return;
    }
    let rig = rig();
    let edge = &rig.edge;

    // A pipeline's token, valid for 8 s.
    let (file, id) = token_create(edge, "ci-deploy", &["--expires", "8s"]);
    let secret = {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        v["DeviceSecret"].as_str().unwrap().to_owned()
    };
    let listed = edge.admin(&["token", "list"]);
    assert!(
        listed.contains("ci-deploy") && listed.contains("active"),
        "{listed}"
    );
    let listed_json = edge.admin(&["token", "list", "--output", "json"]);
    assert!(
        !listed.contains(&secret) && !listed_json.contains(&secret),
        "the secret is never listed"
    );
    let expires_at = zt_edge::Timestamp::parse_rfc3339(
        token_json(edge, "ci-deploy")["expires_at"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
    .to_system_time();

    // The pipeline: zt client with the token's file, kubectl through it.
    let (mut client, proxy) = client_socks(&file);
    let cfg = rig.kubeconfig(proxy);
    kubectl_version(&cfg, "a service token through zt client socks");
    let watch = Watch::start(&cfg);
    let ended = watch
        .wait_end(Duration::from_secs(30))
        .expect("the watch ends when the token's session expires");
    let ended_at = SystemTime::now() - ended.elapsed();
    let after = ended_at
        .duration_since(expires_at)
        .map(|d| format!("{d:?} after"))
        .unwrap_or_else(|e| format!("{:?} before", e.duration()));
    eprintln!(
        "service token ci-deploy: the kubectl watch ({} events) ended {after} the token's expiry (drain 1 s)",
        watch.events()
    );
    let line = rig.watch_line(&id, &watch);
    assert_eq!(line["close_reason"], "session_expired", "{line}");
    assert_eq!(line["service_token"], "ci-deploy", "{line}");
    assert!(line["identity_email"].is_null(), "{line}");
    for l in rig.flows_of(&id) {
        assert_eq!(l["service_token"], "ci-deploy", "{l}");
    }
    assert!(
        ended_at + Duration::from_millis(200) >= expires_at,
        "the session must not end before the token's expiry ({after})"
    );
    // Expired: listed so, and the client is refused when it reconnects, in plain words.
    assert_eq!(token_json(edge, "ci-deploy")["state"], "expired");
    client.wait_for("credentials may have expired or been revoked");
    client.signal("TERM");
    let _ = client.wait_exit();

    // A token without expiry, revoked while its watch is open.
    let (file, id) = token_create(edge, "ci-nightly", &[]);
    let (_client, proxy) = client_socks(&file);
    let cfg = rig.kubeconfig(proxy);
    let watch = Watch::start(&cfg);
    let revoked = Instant::now();
    let said = edge.admin(&["token", "revoke", "ci-nightly"]);
    assert!(said.contains("Revoked service token ci-nightly"), "{said}");
    let ended = watch
        .wait_end(DEADLINE)
        .expect("the watch ends when its token is revoked");
    eprintln!(
        "service token ci-nightly: the kubectl watch ended {:?} after `zt token revoke` was started",
        ended.duration_since(revoked)
    );
    let line = rig.watch_line(&id, &watch);
    assert_eq!(line["close_reason"], "revoked", "{line}");
    assert_eq!(line["service_token"], "ci-nightly", "{line}");
    assert_eq!(token_json(edge, "ci-nightly")["state"], "revoked");
}

#[test]
fn revoking_one_device_ends_its_flows_and_spares_the_user_s_other_device() {
    let Some((rt, idp)) = alice_at_a_provider("e2e_sessions::revoking_one_device") else {
        return;
    };
    let rig = rig();
    let edge = &rig.edge;
    let enrollment = edge.add_idp("corp", &idp, &[]);
    // Alice signs in on two machines: two devices of one user.
    let first = crate::e2e_idp_login::browser_login(&rt, edge, &enrollment, "alice");
    let desktop = edge.path("login-alice-desktop.json");
    std::fs::rename(&first, &desktop).unwrap();
    let desktop_id = device_id(&desktop);
    let laptop = crate::e2e_idp_login::browser_login(&rt, edge, &enrollment, "alice");
    let laptop_id = device_id(&laptop);
    assert_ne!(laptop_id, desktop_id);
    let listed = edge.admin(&["device", "list", "--user", "alice@example.com"]);
    assert!(
        listed.contains(&laptop_id) && listed.contains(&desktop_id),
        "{listed}"
    );

    let (_c1, p1) = client_socks(&laptop);
    let (_c2, p2) = client_socks(&desktop);
    let w1 = Watch::start(&rig.kubeconfig(p1));
    let w2 = Watch::start(&rig.kubeconfig(p2));

    // The laptop is revoked: its watch ends, the desktop's goes on.
    let revoked = Instant::now();
    let said = edge.admin(&["device", "revoke", &laptop_id]);
    assert!(said.contains("Revoked device"), "{said}");
    let ended = w1
        .wait_end(DEADLINE)
        .expect("the revoked device's watch ends");
    eprintln!(
        "zt device revoke: the device's kubectl watch ended {:?} after the command started",
        ended.duration_since(revoked)
    );
    let before = w2.events();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        w2.wait_end(Duration::ZERO).is_none() && w2.events() > before,
        "the user's other device keeps its watch"
    );
    let line = rig.watch_line(&laptop_id, &w1);
    assert_eq!(line["close_reason"], "revoked", "{line}");
    assert_eq!(line["identity_email"], "alice@example.com", "{line}");

    // The user is removed: the desktop's watch ends too.
    let removed = Instant::now();
    edge.admin(&["user", "remove", "alice@example.com"]);
    let ended = w2
        .wait_end(DEADLINE)
        .expect("the removed user's watch ends");
    eprintln!(
        "zt user remove: the other device's kubectl watch ended {:?} after the command started",
        ended.duration_since(removed)
    );
    let line = rig.watch_line(&desktop_id, &w2);
    assert_eq!(line["close_reason"], "revoked", "{line}");
}

/// Removing an identity provider signs out every device that came through it: a live
/// watch ends with `revoked`, and the device is refused when it reconnects.
#[test]
fn removing_the_identity_provider_ends_its_devices_sessions() {
    let Some((rt, idp)) = alice_at_a_provider("e2e_sessions::removing_the_identity_provider")
    else {
        return;
    };
    let rig = rig();
    let edge = &rig.edge;
    let enrollment = edge.add_idp("corp", &idp, &[]);
    let creds = crate::e2e_idp_login::browser_login(&rt, edge, &enrollment, "alice");
    let id = device_id(&creds);
    let (client, port) = client_socks(&creds);
    let watch = Watch::start(&rig.kubeconfig(port));
    let removed = Instant::now();
    let said = edge.admin(&["idp", "remove", "corp"]);
    assert!(said.contains("1 device(s) signed in through it"), "{said}");
    let ended = watch
        .wait_end(DEADLINE)
        .expect("the watch of a device of the removed provider ends");
    eprintln!(
        "zt idp remove: the device's kubectl watch ended {:?} after the command started",
        ended.duration_since(removed)
    );
    let line = rig.watch_line(&id, &watch);
    assert_eq!(line["close_reason"], "revoked", "{line}");
    client.wait_for("run `zt login`");
}

/// A runtime and a real OpenID Provider with one account, alice in group `ci`; `None`
/// (said loudly) when the provider, Chromium or kubectl is missing.
fn alice_at_a_provider(
    test: &str,
) -> Option<(tokio::runtime::Runtime, zt_testkit::oidc::OidcProvider)> {
    use zt_testkit::oidc::{
        browser_unavailable, provider_unavailable, skip, Account, OidcProvider, ProviderOptions,
    };
    if let Some(why) = provider_unavailable().or_else(browser_unavailable) {
        skip(test, &why);
        return None;
    }
    if !have_kubectl() {
        eprintln!("!!! SKIPPED: {test} needs kubectl, which is not installed");
        return None;
    }
    let rt = runtime(2);
    let idp = rt
        .block_on(OidcProvider::start(ProviderOptions {
            accounts: vec![Account::new("alice", "alice@example.com").with_groups(&["ci"])],
            ..ProviderOptions::default()
        }))
        .expect("the OpenID Provider starts");
    Some((rt, idp))
}

fn device_id(file: &std::path::Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    v["DeviceID"].as_str().unwrap().to_owned()
}

/// A sign-in whose provider gave a refresh token (scope `offline_access`) is renewed by the
/// edge before it ends, again and again, under an open kubectl watch that never notices;
/// a sign-in without one ends at its time with `session_expired`, and its client says
/// plainly that `zt login` is needed.
#[test]
fn a_sign_in_with_a_refresh_token_is_renewed_under_a_watch_and_one_without_asks_for_zt_login() {
    // Long enough that a browser sign-in on a loaded machine (6-7 s seen with the whole
    // suite running) still leaves the session time to reach the edge.
    const LENGTH: Duration = Duration::from_secs(12);
    let Some((rt, idp)) =
        alice_at_a_provider("e2e_sessions::a_sign_in_with_a_refresh_token_is_renewed")
    else {
        return;
    };
    let rig = rig();
    let edge = &rig.edge;
    // Two providers for one IdP: `corp` asks for offline access, `plain` does not.
    let length = format!("{}s", LENGTH.as_secs());
    let offline = [
        "--session-length",
        &length,
        "--scope",
        "openid",
        "--scope",
        "email",
        "--scope",
        "profile",
        "--scope",
        "groups",
        "--scope",
        "offline_access",
    ];
    let corp_enrollment = edge.add_idp("corp", &idp, &offline);
    let plain_enrollment = edge.add_idp("plain", &idp, &["--session-length", &length]);
    let renewable = crate::e2e_idp_login::browser_login(&rt, edge, &corp_enrollment, "alice");
    let kept = edge.path("login-alice-renewable.json");
    std::fs::rename(&renewable, &kept).unwrap();
    let kept_id = device_id(&kept);
    let signed_in = Instant::now();
    let plain = crate::e2e_idp_login::browser_login(&rt, edge, &plain_enrollment, "alice");
    let plain_id = device_id(&plain);
    let plain_signed_in = Instant::now();

    let (c1, p1) = client_socks(&kept);
    let (c2, p2) = client_socks(&plain);
    let w1 = Watch::start(&rig.kubeconfig(p1));
    let w2 = Watch::start(&rig.kubeconfig(p2));

    // The sign-in without a refresh token ends at its time (plus the 1 s drain).
    let ended = w2
        .wait_end(DEADLINE)
        .expect("the watch of the sign-in without a refresh token ends");
    eprintln!(
        "no refresh token: the kubectl watch ended {:?} after the sign-in ({LENGTH:?} long)",
        ended.duration_since(plain_signed_in)
    );
    let line = rig.watch_line(&plain_id, &w2);
    assert_eq!(line["close_reason"], "session_expired", "{line}");
    let said = c2.wait_for("zt login");
    assert!(said.contains("sign-in has ended"), "{said}");

    // The renewable one goes on past three session lengths, renewed each time.
    let until = signed_in + LENGTH * 3;
    while Instant::now() < until {
        assert!(
            w1.wait_end(Duration::from_millis(200)).is_none(),
            "the renewed sign-in's watch ended {:?} after the sign-in: {:?}",
            signed_in.elapsed(),
            rig.flows_of(&kept_id)
        );
    }
    let before = w1.events();
    std::thread::sleep(Duration::from_millis(600));
    assert!(w1.events() > before, "the renewed watch still streams");
    let renewals: Vec<serde_json::Value> = crate::support::abuse::audit_lines(edge, "login")
        .into_iter()
        .filter(|l| l["flow"] == "refresh" && l["device_id"] == kept_id.as_str())
        .collect();
    assert!(
        renewals.len() >= 3 && renewals.iter().all(|l| l["accepted"] == true),
        "three accepted renewals in three session lengths: {renewals:?}"
    );
    assert_eq!(renewals[0]["idp"], "corp", "{:?}", renewals[0]);
    assert_eq!(renewals[0]["email"], "alice@example.com");
    assert!(
        !crate::support::abuse::audit_lines(edge, "login")
            .iter()
            .any(|l| l["flow"] == "refresh" && l["device_id"] == plain_id.as_str()),
        "a sign-in without a refresh token is never renewed"
    );
    let listed: serde_json::Value = serde_json::from_str(&edge.admin(&[
        "device",
        "list",
        "--user",
        "alice@example.com",
        "--output",
        "json",
    ]))
    .unwrap();
    let device = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == kept_id.as_str())
        .cloned()
        .unwrap();
    assert!(
        device["login"]["renewed_at"].is_string(),
        "the device says when it was renewed: {device}"
    );
    assert!(
        !device.to_string().contains("refresh_token"),
        "the device list shows no refresh token: {device}"
    );
    eprintln!(
        "refresh: {} renewals in {:?}, the watch open throughout",
        renewals.len(),
        signed_in.elapsed()
    );

    // The provider forgets its refresh tokens (it restarts; they live in its memory): the
    // next renewal is refused, and the session ends at its time asking for `zt login`.
    // Right after a renewal, so the next one is seconds away and meets the restarted
    // provider, not one half up.
    let count = || {
        crate::support::abuse::audit_lines(edge, "login")
            .iter()
            .filter(|l| l["flow"] == "refresh" && l["device_id"] == kept_id.as_str())
            .count()
    };
    let seen = count();
    eventually("the next renewal", || (count() > seen).then_some(()));
    let mut idp = idp;
    rt.block_on(idp.restart())
        .expect("the OpenID Provider restarts");
    let restarted = Instant::now();
    let ended = w1
        .wait_end(DEADLINE)
        .expect("the watch ends once the provider refuses to renew");
    eprintln!(
        "refused refresh: the kubectl watch ended {:?} after the provider forgot its tokens",
        ended.duration_since(restarted)
    );
    let line = rig.watch_line(&kept_id, &w1);
    assert_eq!(line["close_reason"], "session_expired", "{line}");
    let refused = crate::support::abuse::audit_lines(edge, "login")
        .into_iter()
        .filter(|l| {
            l["flow"] == "refresh" && l["device_id"] == kept_id.as_str() && l["accepted"] == false
        })
        .collect::<Vec<_>>();
    assert!(!refused.is_empty(), "the failed renewal has its audit line");
    let said = c1.wait_for("the sign-in has ended and the identity provider");
    assert!(said.contains("zt login"), "{said}");
    // The provider normally answers again within the renewal's window and refuses the
    // token it forgot; on a machine so loaded that it did not, the edge says it could not
    // reach the provider instead.
    if refused.iter().any(|l| {
        l["reason"]
            .as_str()
            .is_some_and(|r| r.contains("invalid_grant"))
    }) {
        assert!(said.contains("would not renew"), "{said}");
    } else {
        eprintln!("the provider was not back within the renewal window: {refused:?}");
        assert!(said.contains("could not be reached"), "{said}");
    }
}
