//! Pieces of the abuse tests (`abuse_*.rs`): a raw QUIC peer that speaks the control stream
//! by hand to the real edge (so a test chooses every field of the register frame and reads
//! the exact bytes and close the edge answers with), readings of a process's memory and
//! file descriptors from `/proc`, the admin API over plain HTTP, the audit log's lines, and
//! every encoding of a secret a leak could take.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::BytesMut;
use zt_creds::{AuthKey, DeviceCredentials};
use zt_proto::{
    sign_register, Claim, ClientClaim, ControlFrame, Exporter, Register, EXPORTER_CONTEXT,
    EXPORTER_LABEL, EXPORTER_LEN, PROTOCOL_VERSION,
};

use super::{Edge, DEADLINE};

/// The server name peers use for an edge on loopback (its certificate carries it).
pub const EDGE_NAME: &str = "127.0.0.1";

/// The ring-backed rustls provider (the one the product uses).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A QUIC client config that trusts the CA in `ca_pem` and offers ALPN `zt/1`, as the
/// product's peers do.
pub fn client_config(ca_pem: &Path) -> quinn::ClientConfig {
    let pem = std::fs::read(ca_pem).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![zt_proto::ALPN_ZT1.to_vec()];
    let mut cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(30).try_into().unwrap()));
    cfg.transport_config(Arc::new(transport));
    cfg
}

/// The certificates of a PEM file.
pub fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// A raw QUIC endpoint bound to `bind` that trusts the edge's CA.
pub fn raw_endpoint(edge: &Edge, bind: SocketAddr) -> quinn::Endpoint {
    let mut ep = quinn::Endpoint::client(bind)
        .unwrap_or_else(|e| panic!("cannot bind a QUIC endpoint to {bind}: {e}"));
    ep.set_default_client_config(client_config(&edge.path("ca.pem")));
    ep
}

/// The TLS exporter value both ends derive proofs from.
pub fn exporter_of(conn: &quinn::Connection) -> Exporter {
    let mut e = [0u8; EXPORTER_LEN];
    conn.export_keying_material(&mut e, EXPORTER_LABEL, EXPORTER_CONTEXT)
        .unwrap();
    e
}

/// A register frame for `claim`, signed with `key` over `exporter`.
pub fn signed_register(claim: Claim, key: &AuthKey, exporter: &Exporter) -> Register {
    let mut register = Register {
        protocol_version: PROTOCOL_VERSION,
        claim,
        software_version: "zt abuse test".into(),
        features: vec![],
        proof: zt_proto::Proof::EMPTY,
    };
    sign_register(
        &mut register,
        &zt_proto::ProofKey::Shared(key.clone()),
        exporter,
    )
    .unwrap();
    register
}

/// Everything the edge sent back to one register frame, as it came off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireAnswer {
    /// The bytes of the control stream the edge sent (up to its FIN for a refusal, the
    /// first frame for an acceptance).
    pub control_bytes: Vec<u8>,
    /// The frame those bytes decode to.
    pub frame: ControlFrame,
    /// The QUIC application close (code, reason) that followed, for a refusal.
    pub close: Option<(u64, Vec<u8>)>,
}

impl WireAnswer {
    /// Whether the edge accepted the registration.
    pub fn registered(&self) -> bool {
        matches!(self.frame, ControlFrame::Registered(_))
    }
}

/// Sends `register` on a new control stream of `conn` and reads the edge's whole answer:
/// for a refusal, the stream to its end and the connection close that follows. The control
/// stream ends when this returns (which ends a registered session).
pub async fn send_register(conn: &quinn::Connection, register: Register) -> WireAnswer {
    register_session(conn, register).await.0
}

/// The control stream of a registered session, kept open by whoever holds it.
pub type ControlStream = (quinn::SendStream, quinn::RecvStream);

/// Like [`send_register`], and hands back the control stream so that a registered session
/// lives as long as the caller keeps it.
pub async fn register_session(
    conn: &quinn::Connection,
    register: Register,
) -> (WireAnswer, ControlStream) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut wire = BytesMut::new();
    ControlFrame::Register(register).encode(&mut wire).unwrap();
    send.write_all(&wire).await.unwrap();
    let mut raw = Vec::new();
    let frame = loop {
        let mut view = &raw[..];
        if let Some(f) = ControlFrame::decode(&mut view).unwrap() {
            break f;
        }
        let chunk = tokio::time::timeout(DEADLINE, recv.read_chunk(4096, true))
            .await
            .expect("the edge answered within the deadline")
            .unwrap()
            .expect("an answer before the stream ended");
        raw.extend_from_slice(&chunk.bytes);
    };
    if matches!(frame, ControlFrame::Registered(_)) {
        let answer = WireAnswer {
            control_bytes: raw,
            frame,
            close: None,
        };
        return (answer, (send, recv));
    }
    // A refusal: read what follows up to the FIN (there should be nothing), then wait for
    // the edge to close the connection.
    while let Ok(Ok(Some(chunk))) =
        tokio::time::timeout(DEADLINE, recv.read_chunk(4096, true)).await
    {
        raw.extend_from_slice(&chunk.bytes);
    }
    let close = match tokio::time::timeout(DEADLINE, conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
            Some((u64::from(c.error_code), c.reason.to_vec()))
        }
        Ok(other) => panic!("the edge ended a refused connection with {other:?}"),
        Err(_) => panic!("the edge did not close a refused connection within {DEADLINE:?}"),
    };
    let answer = WireAnswer {
        control_bytes: raw,
        frame,
        close,
    };
    (answer, (send, recv))
}

/// The device's registered session on a new raw connection from `ep`: the connection and
/// its control stream (the session lives as long as the caller keeps both).
pub async fn client_session(
    ep: &quinn::Endpoint,
    edge: &Edge,
    device: &DeviceCredentials,
) -> (quinn::Connection, ControlStream) {
    let conn = ep.connect(edge.listen, EDGE_NAME).unwrap().await.unwrap();
    let claim = Claim::Client(ClientClaim {
        device_id: device.device_id,
        vnet: String::new(),
    });
    let key = device
        .secret()
        .expect("a device with a secret")
        .derive_auth_key();
    let (answer, control) =
        register_session(&conn, signed_register(claim, &key, &exporter_of(&conn))).await;
    assert!(answer.registered(), "{:?}", answer.frame);
    (conn, control)
}

/// `zt client forward` with the device credentials at `device`, run to its end (for the
/// cases where it is refused before it listens).
pub fn client_forward_output(device: &Path) -> std::process::Output {
    super::zt()
        .args([
            "client",
            "--credentials",
            device.to_str().unwrap(),
            "forward",
        ])
        .args([
            "--listen",
            &super::free_tcp("127.0.0.1").to_string(),
            "--to",
            "127.0.0.2:80",
        ])
        .output()
        .unwrap()
}

/// The client of one device of a fresh user `email` at `edge`.
pub async fn client_for(edge: &Edge, email: &str) -> zt_client::Client {
    let device = edge.user(email, "dev");
    let creds = DeviceCredentials::load(&device, zt_creds::PermissionMode::Default).unwrap();
    zt_client::Client::connect(&creds, zt_client::ClientOptions::default())
        .await
        .unwrap()
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// The CPU time a process has used so far (user + system), from `/proc/PID/stat`, in
/// milliseconds (the kernel counts in clock ticks, usually 10 ms each).
pub fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on.
    ticks * 10
}

/// How many file descriptors a process has open.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// One admin API call with the edge's token; returns the status and body.
pub fn admin_call(edge: &Edge, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let token = std::fs::read_to_string(edge.path("admin-token")).unwrap();
    let mut s = TcpStream::connect(edge.admin).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        edge.admin,
        token.trim(),
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {reply:?}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The audit log's lines of one `"type"` (`flow`, `auth_refusal`).
pub fn audit_lines(edge: &Edge, kind: &str) -> Vec<serde_json::Value> {
    zt_testkit::loopback::read_audit_lines(&edge.path("audit.jsonl"), kind)
}

/// One Prometheus sample of a metrics page (`name` with its labels, as printed).
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Every form a secret could leak in: the raw bytes, standard and URL-safe base64 with and
/// without padding, lower- and upper-case hex. Each form is returned with a name.
pub fn secret_forms(secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("raw".into(), secret.to_vec()),
        ("base64".into(), STANDARD.encode(secret).into_bytes()),
        (
            "base64 (no pad)".into(),
            STANDARD_NO_PAD.encode(secret).into_bytes(),
        ),
        ("base64url".into(), URL_SAFE.encode(secret).into_bytes()),
        (
            "base64url (no pad)".into(),
            URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        ),
        ("hex".into(), hex.clone().into_bytes()),
        ("HEX".into(), hex.to_ascii_uppercase().into_bytes()),
    ]
}

/// Finds any 16-byte window of any form of `secret` in `haystack` (so a secret cut or
/// wrapped in a longer string is found too); returns the form's name.
pub fn find_secret(haystack: &[u8], secret: &[u8]) -> Option<String> {
    const WINDOW: usize = 16;
    let mut needles = std::collections::HashMap::new();
    for (name, form) in secret_forms(secret) {
        assert!(form.len() >= WINDOW, "a secret shorter than {WINDOW} bytes");
        for start in 0..=form.len() - WINDOW {
            needles
                .entry(form[start..start + WINDOW].to_vec())
                .or_insert_with(|| format!("{name}, bytes {start}..{}", start + WINDOW));
        }
    }
    haystack
        .windows(WINDOW)
        .find_map(|w| needles.get(w).cloned())
}

/// A connector like [`super::Connector::start`] whose config ends with `extra_yaml` (e.g.
/// `maxActiveFlows` under `warp-routing`).
pub fn connector_with(
    edge: &Edge,
    creds: &Path,
    name: &str,
    ha: u32,
    warp_routing_extra: &str,
) -> super::Connector {
    let metrics = super::free_tcp("127.0.0.1");
    let config = edge.path(&format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "credentials-file: {}\nmetrics: {metrics}\nedge: {}\ncacert: {}\n\
             ha-connections: {ha}\ngrace-period: 5s\nwarp-routing:\n  enabled: true\n{warp_routing_extra}",
            creds.display(),
            edge.listen,
            edge.path("ca.pem").display()
        ),
    )
    .unwrap();
    let proc = super::Proc::spawn(
        name,
        &["tunnel", "--config", config.to_str().unwrap(), "run"],
        &[],
    );
    super::Connector { metrics, proc }
}
