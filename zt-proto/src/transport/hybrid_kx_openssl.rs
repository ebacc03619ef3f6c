//! X25519MLKEM768 against an independent implementation: OpenSSL (3.5 and later implement
//! the group), reached through pyOpenSSL by `zt-proto/tests/openssl_kx/peer.py`, over real
//! TLS 1.3 on loopback TCP. The key exchange is the same code whether TLS runs over TCP or
//! QUIC, and TCP is what pyOpenSSL speaks.
//!
//! OpenSSL is restricted to X25519MLKEM768 (`x25519mlkem768-only.cnf` as OPENSSL_CONF), so
//! a handshake can only succeed if both implementations derive the same shared secret from
//! each other's shares; then 100 kB each way must arrive intact. Both directions:
//!
//! - an OpenSSL client against the edge's provider (ours encapsulates to OpenSSL's ML-KEM
//!   key and validates it);
//! - our client (X25519MLKEM768 alone) against an OpenSSL server (ours decapsulates
//!   OpenSSL's ciphertext).
//!
//! Ignored by default: it needs Python with pyOpenSSL and a recent `cryptography`, named by
//! `ZT_OPENSSL_PYTHON`; `zt-proto/tests/openssl_kx/run.sh` installs those into a venv and
//! runs it. CI does not depend on the Python package index.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::NamedGroup;

use super::hybrid_kx::X25519_MLKEM768;

/// Must match `PAYLOAD_LEN` and the labels in peer.py.
const PAYLOAD_LEN: usize = 100_000;
const FROM_CLIENT: &[u8] = b"openssl/zt X25519MLKEM768 check, client to server\n";
const FROM_SERVER: &[u8] = b"openssl/zt X25519MLKEM768 check, server to client\n";
/// Socket reads and writes give up after this, so a stuck peer fails the test.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

fn pattern(label: &[u8], n: usize) -> Vec<u8> {
    label.iter().copied().cycle().take(n).collect()
}

fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openssl_kx")
}

/// The Python that runs peer.py, or `None` (with a loud SKIPPED line) if none is named.
fn python() -> Option<String> {
    match std::env::var("ZT_OPENSSL_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            println!(
                "SKIPPED: ZT_OPENSSL_PYTHON is not set (a Python with pyOpenSSL on OpenSSL 3.5+); \
                 run zt-proto/tests/openssl_kx/run.sh"
            );
            None
        }
    }
}

fn peer(python: &str) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(peer_dir().join("peer.py"))
        .env("OPENSSL_CONF", peer_dir().join("x25519mlkem768-only.cnf"))
        .stdin(Stdio::null());
    cmd
}

/// A CA and a `localhost` certificate it signed, in the forms each side loads.
struct Identity {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    /// The `localhost` certificate, then the CA's.
    chain_der: Vec<CertificateDer<'static>>,
    chain_pem: String,
    key_der: PrivateKeyDer<'static>,
    key_pem: String,
}

fn identity() -> Identity {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Distinct names: with rcgen's default name on both, OpenSSL takes the leaf for a
    // self-signed certificate.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "zt X25519MLKEM768 check CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&key, &issuer).unwrap();
    Identity {
        ca_der: ca.der().clone(),
        ca_pem: ca.pem(),
        chain_der: vec![leaf.der().clone(), ca.der().clone()],
        chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
        key_der: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        key_pem: key.serialize_pem(),
    }
}

/// A scratch directory for PEM files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("zt-kx-openssl-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lines peer.py printed, checked for the group, TLS 1.3 and the payload.
fn check_peer_output(side: &str, status: std::process::ExitStatus, stdout: &str, stderr: &str) {
    println!("{side} (OpenSSL) said:\n{stdout}");
    assert!(
        status.success(),
        "{side}: peer.py failed ({status}):\n{stdout}\n{stderr}"
    );
    let version = stdout
        .lines()
        .find_map(|l| l.strip_prefix("OPENSSL "))
        .unwrap_or_else(|| panic!("{side}: no OPENSSL line:\n{stdout}"));
    println!("MEASURED openssl_version={version:?}");
    for want in [
        "GROUP X25519MLKEM768",
        "PROTOCOL TLSv1.3",
        &format!("RECEIVED {PAYLOAD_LEN} bytes as expected"),
    ] {
        assert!(
            stdout.lines().any(|l| l == want),
            "{side}: expected the line {want:?} from peer.py:\n{stdout}\n{stderr}"
        );
    }
}

/// An OpenSSL client offering X25519MLKEM768 alone, against the edge's crypto provider.
#[test]
#[ignore = "needs Python with pyOpenSSL on OpenSSL 3.5+ (ZT_OPENSSL_PYTHON); see tests/openssl_kx/run.sh"]
fn openssl_client_against_the_edge_provider() {
    let Some(python) = python() else { return };
    let id = identity();
    let scratch = Scratch::new("client");
    let ca_path = scratch.write("ca.pem", &id.ca_pem);

    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(super::tls::server_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(id.chain_der.clone(), id.key_der.clone_key())
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut acceptor = rustls::server::Acceptor::default();
        let accepted = loop {
            acceptor.read_tls(&mut tcp).unwrap();
            if let Some(accepted) = acceptor.accept().map_err(|(e, _)| e).unwrap() {
                break accepted;
            }
        };
        let offered = accepted.client_hello().named_groups().map(<[_]>::to_vec);
        let conn = accepted
            .into_connection(config)
            .map_err(|(e, _)| e)
            .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut got = vec![0u8; PAYLOAD_LEN];
        tls.read_exact(&mut got).unwrap();
        tls.write_all(&pattern(FROM_SERVER, PAYLOAD_LEN)).unwrap();
        tls.flush().unwrap();
        let group = tls.conn.negotiated_key_exchange_group().map(|g| g.name());
        tls.conn.send_close_notify();
        let _ = tls.flush();
        (offered, group, got)
    });

    let out = peer(&python)
        .args(["client", &port.to_string()])
        .arg(&ca_path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    check_peer_output("client", out.status, &stdout, &stderr);

    let (offered, group, got) = server.join().expect("the zt server thread panicked");
    assert_eq!(
        offered.as_deref(),
        Some(&[NamedGroup::X25519MLKEM768][..]),
        "OpenSSL must offer X25519MLKEM768 alone"
    );
    assert_eq!(group, Some(NamedGroup::X25519MLKEM768), "zt server's group");
    assert!(
        got == pattern(FROM_CLIENT, PAYLOAD_LEN),
        "the zt server did not receive the client's {PAYLOAD_LEN} bytes intact"
    );
    println!(
        "MEASURED openssl_client_to_zt_server group=X25519MLKEM768 bytes_each_way={PAYLOAD_LEN}"
    );
}

/// Our client offering X25519MLKEM768 alone, against an OpenSSL server.
#[test]
#[ignore = "needs Python with pyOpenSSL on OpenSSL 3.5+ (ZT_OPENSSL_PYTHON); see tests/openssl_kx/run.sh"]
fn zt_client_against_an_openssl_server() {
    let Some(python) = python() else { return };
    let id = identity();
    let scratch = Scratch::new("server");
    let chain = scratch.write("chain.pem", &id.chain_pem);
    let key = scratch.write("key.pem", &id.key_pem);

    let mut child = peer(&python)
        .arg("server")
        .args([&chain, &key])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut said = String::new();
    let port: u16 = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let out = child.wait_with_output().unwrap();
            panic!(
                "peer.py server exited before naming its port:\n{said}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        said.push_str(&line);
        if let Some(port) = line.trim().strip_prefix("PORT ") {
            break port.parse().unwrap();
        }
    };

    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![X25519_MLKEM768];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(id.ca_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(&pattern(FROM_CLIENT, PAYLOAD_LEN)).unwrap();
    tls.flush().unwrap();
    let mut got = vec![0u8; PAYLOAD_LEN];
    tls.read_exact(&mut got).unwrap();
    let group = tls.conn.negotiated_key_exchange_group().map(|g| g.name());
    tls.conn.send_close_notify();
    let _ = tls.flush();

    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    said.push_str(&rest);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().unwrap();
    check_peer_output("server", status, &said, &stderr);

    assert_eq!(group, Some(NamedGroup::X25519MLKEM768), "zt client's group");
    assert!(
        got == pattern(FROM_SERVER, PAYLOAD_LEN),
        "the zt client did not receive the server's {PAYLOAD_LEN} bytes intact"
    );
    println!(
        "MEASURED zt_client_to_openssl_server group=X25519MLKEM768 bytes_each_way={PAYLOAD_LEN}"
    );
}
