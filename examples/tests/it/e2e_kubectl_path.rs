//! The kubectl path of the seed, end to end through the real `zt` binary: `zt edge run`,
//! a connector (`zt tunnel --config … run`) and `zt client` forward and SOCKS5, all on
//! loopback. The origin stands in for a Kubernetes API server: TLS that requires a client
//! certificate from its own CA, `GET /version` answering Kubernetes-shaped JSON. The
//! tunnel never terminates TLS, so the origin's refusal of a caller without a certificate
//! must reach that caller; and `kubectl` itself gets the version when it is installed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use rustls::pki_types::ServerName;
use zt_testkit::pki::KubePki;

pub(crate) const VERSION_JSON: &str = r#"{"major":"1","minor":"24","gitVersion":"v1.24.1","gitCommit":"3ddd0f45aa91e2f30c70734b175631bec5b5825a","gitTreeState":"clean","buildDate":"2022-05-24T12:18:48Z","goVersion":"go1.18.2","compiler":"gc","platform":"linux/amd64"}"#;

/// The stand-in API server: mutual TLS, one HTTP/1.1 request per connection.
pub(crate) fn api_server(bind: &str, config: Arc<rustls::ServerConfig>) -> Origin {
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
        let head = String::from_utf8_lossy(&req);
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

/// A hand-written HTTPS `GET /version` over `tcp`, verifying the server as `name`.
pub(crate) fn get_version(
    tcp: TcpStream,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<String, String> {
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(config, server_name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET /version HTTP/1.1\r\nHost: {name}\r\nAccept: application/json\r\n\
         Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    match tls.read_to_end(&mut reply) {
        Ok(_) => {}
        Err(e) if reply.is_empty() => return Err(e.to_string()),
        Err(_) => {}
    }
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("status line {head:?}"));
    }
    Ok(body.to_owned())
}

pub(crate) fn assert_version(body: &str, how: &str) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["gitVersion"], "v1.24.1", "{how}: {body}");
    assert_eq!(body, VERSION_JSON, "{how}: the bytes the origin sent");
}

/// The edge, one tunnel with the seed's routes, list and rules, one connector, one user.
struct Setup {
    edge: Edge,
    _connector: Connector,
    device: std::path::PathBuf,
}

fn setup(v6: bool) -> Setup {
    let t = Instant::now();
    let edge = Edge::start();
    let creds = edge.tunnel("k8s_zero_trust_tunnel");
    edge.admin(&[
        "route",
        "ip",
        "add",
        "127.0.0.2/32",
        "k8s_zero_trust_tunnel",
        "--comment",
        "Kubernetes API Server (IPv4)",
    ]);
    let mut items = vec!["127.0.0.2/32"];
    if v6 {
        edge.admin(&[
            "route",
            "ip",
            "add",
            "::1/128",
            "k8s_zero_trust_tunnel",
            "--comment",
            "Kubernetes API Server (IPv6)",
        ]);
        items.push("::1/128");
    }
    let list = edge.ip_list("Kubernetes API IPs", &items);
    edge.rule(
        "Allow Kubernetes API",
        100,
        "allow",
        "l4",
        &format!("net.dst.ip in {list}"),
    );
    edge.rule(
        "Don't inspect Kubernetes API",
        10000,
        "off",
        "http",
        &format!("any(http.conn.dst_ip[*] in {list})"),
    );
    let device = edge.user("alice@example.com", "sre");
    let connector = Connector::start(&edge, "k8s_zero_trust_tunnel", &creds, "connector", 2);
    let ready = connector.wait_ready(2);
    eprintln!(
        "setup: edge, tunnel, routes, list, rules, user in {:?}; connector ready {ready:?} after its start",
        t.elapsed()
    );
    Setup {
        edge,
        _connector: connector,
        device,
    }
}

pub(crate) fn kubeconfig(
    dir: &std::path::Path,
    pki: &KubePki,
    server: &str,
    extra: &str,
) -> std::path::PathBuf {
    let ca = dir.join("k8s-ca.pem");
    let crt = dir.join("alice.crt");
    let key = dir.join("alice.key");
    std::fs::write(&ca, pki.ca.pem()).unwrap();
    std::fs::write(&crt, pki.client.pem()).unwrap();
    std::fs::write(&key, pki.client.key_pem()).unwrap();
    let path = dir.join(format!("kubeconfig-{}", fastrand_suffix()));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: private\n  cluster:\n    \
             server: {server}\n    certificate-authority: {}\n{extra}\
             users:\n- name: alice\n  user:\n    client-certificate: {}\n    client-key: {}\n\
             contexts:\n- name: private\n  context:\n    cluster: private\n    user: alice\n\
             current-context: private\n",
            ca.display(),
            crt.display(),
            key.display()
        ),
    )
    .unwrap();
    path
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub(crate) fn kubectl_version(kubeconfig: &std::path::Path, how: &str) {
    let t = Instant::now();
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["version", "-o", "json", "--request-timeout=10s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl version ({how}) failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        v["serverVersion"]["gitVersion"], "v1.24.1",
        "kubectl version ({how}): {stdout}"
    );
    eprintln!("kubectl version ({how}) took {:?}", t.elapsed());
}

#[test]
fn https_with_client_certificate_through_forward_and_socks() {
    let v6 = ipv6_loopback();
    if !v6 {
        eprintln!("SKIPPED: the IPv6 route: this host cannot bind [::1]");
    }
    // The test PKI: a CA, the API server's certificate, and a client certificate.
    let pki = KubePki::new("e2e kubernetes CA", &["127.0.0.2", "::1"]);
    let api = api_server("127.0.0.2:0", pki.server_config());
    let api6 = v6.then(|| api_server("[::1]:0", pki.server_config()));
    let s = setup(v6);

    // Through `zt client forward`.
    let (_fwd, forward) = client_forward(&s.device, api.addr);
    let t = Instant::now();
    let body = get_version(
        TcpStream::connect(forward).unwrap(),
        "127.0.0.2",
        pki.client_config(true),
    )
    .unwrap();
    assert_version(&body, "forward");
    eprintln!("GET /version through forward: {:?}", t.elapsed());

    // Without the client certificate the origin refuses, and that refusal (a TLS alert from
    // the origin itself) is what the caller sees: nothing in between terminates TLS.
    let refused = get_version(
        TcpStream::connect(forward).unwrap(),
        "127.0.0.2",
        pki.client_config(false),
    )
    .unwrap_err();
    eprintln!("without a client certificate: {refused}");
    assert!(
        refused.contains("alert") || refused.contains("Certificate"),
        "the origin's TLS refusal should reach the caller, got: {refused}"
    );

    // Through `zt client socks`, to the private address itself.
    let (_socks, proxy) = client_socks(&s.device);
    let t = Instant::now();
    let tcp = socks_connect(proxy, api.addr).unwrap();
    let body = get_version(tcp, "127.0.0.2", pki.client_config(true)).unwrap();
    assert_version(&body, "socks5 IPv4");
    eprintln!("GET /version through SOCKS5 (IPv4): {:?}", t.elapsed());
    if let Some(api6) = &api6 {
        let t = Instant::now();
        let tcp = socks_connect(proxy, api6.addr).unwrap();
        let body = get_version(tcp, "::1", pki.client_config(true)).unwrap();
        assert_version(&body, "socks5 IPv6");
        eprintln!("GET /version through SOCKS5 (IPv6): {:?}", t.elapsed());
        let (_fwd6, forward6) = client_forward(&s.device, api6.addr);
        let body = get_version(
            TcpStream::connect(forward6).unwrap(),
            "::1",
            pki.client_config(true),
        )
        .unwrap();
        assert_version(&body, "forward IPv6");
    }
    let refused = get_version(
        socks_connect(proxy, api.addr).unwrap(),
        "127.0.0.2",
        pki.client_config(false),
    )
    .unwrap_err();
    assert!(
        refused.contains("alert") || refused.contains("Certificate"),
        "through SOCKS5 too, got: {refused}"
    );

    // Every one of those flows went through the tunnel and was passed by the seed's `off`
    // rule, as the edge's audit log says.
    let to_api = eventually("audit lines for the API flows", || {
        let lines: Vec<serde_json::Value> = s
            .edge
            .flow_audit_lines()
            .into_iter()
            .filter(|l| l["destination"] == api.addr.to_string())
            .collect();
        (lines.len() >= 4).then_some(lines)
    });
    for l in &to_api {
        assert_eq!(l["action"], "off", "{l}");
        assert_eq!(l["rule_name"], "Don't inspect Kubernetes API", "{l}");
    }

    // kubectl itself, when installed: once through the forward port (tls-server-name names
    // the API server), once through the SOCKS5 proxy to the private address.
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: kubectl not on PATH");
        return;
    }
    let dir = s.edge.dir.path();
    let forward_cfg = kubeconfig(
        dir,
        &pki,
        &format!("https://{forward}"),
        "    tls-server-name: kubernetes\n",
    );
    kubectl_version(&forward_cfg, "forward");
    let socks_cfg = kubeconfig(
        dir,
        &pki,
        &format!("https://{}", api.addr),
        &format!("    proxy-url: socks5://{proxy}\n"),
    );
    kubectl_version(&socks_cfg, "socks5");
    if let Some(api6) = &api6 {
        let cfg = kubeconfig(
            dir,
            &pki,
            &format!("https://{}", api6.addr),
            &format!("    proxy-url: socks5://{proxy}\n"),
        );
        kubectl_version(&cfg, "socks5 IPv6");
    }
}
