//! The demo's stand-in Kubernetes API server: HTTPS that requires a client certificate
//! (mutual TLS, as a real API server does for kubectl), with a demo CA that issues both the
//! server's and the client's certificate.
//!
//! Connections are served on blocking threads with plain rustls: the origin answers a
//! handful of requests in the whole demo, and a blocking loop keeps the TLS handling in
//! plain sight. Each connection has a read timeout, so a silent peer cannot hold a thread.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use tokio::net::TcpListener;

/// The DNS name on the origin's certificate, as `kubernetes.default.svc` is on a real one.
pub(crate) const ORIGIN_NAME: &str = "kubernetes.zt-demo.internal";

/// The version the stand-in reports: the one the seed's `kubectl version` shows.
pub(crate) const GIT_VERSION: &str = "v1.24.1";

/// Longest request head the origin reads.
const MAX_HEAD: usize = 16 * 1024;

/// How long the origin waits for a peer's bytes before giving up on the connection.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// One certificate with its private key, as PEM and DER.
pub(crate) struct Issued {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Issued {
    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }
}

/// The demo CA and the two certificates it issued.
pub(crate) struct DemoPki {
    pub(crate) ca_pem: String,
    pub(crate) ca_der: CertificateDer<'static>,
    pub(crate) server: Issued,
    pub(crate) client: Issued,
}

impl DemoPki {
    /// A fresh CA; a server certificate for [`ORIGIN_NAME`] and `ips`; a client certificate
    /// for `user` in group `system:masters` (how Kubernetes reads a client certificate).
    pub(crate) fn generate(ips: &[IpAddr], user: &str) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate().context("generating the demo CA key")?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = name("zt demo CA", None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).context("signing the demo CA")?;
        let issuer = Issuer::from_ca_cert_der(ca_cert.der(), &ca_key)
            .context("loading the demo CA as issuer")?;

        let mut server = CertificateParams::default();
        server.distinguished_name = name("kube-apiserver", None);
        server.subject_alt_names = vec![SanType::DnsName(
            ORIGIN_NAME.try_into().context("origin name")?,
        )];
        server
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = issue(server, &issuer).context("issuing the origin's certificate")?;

        let mut client = CertificateParams::default();
        client.distinguished_name = name(user, Some("system:masters"));
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = issue(client, &issuer).context("issuing the client certificate")?;

        Ok(Self {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            server,
            client,
        })
    }

    fn roots(&self) -> anyhow::Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .context("adding the demo CA to a trust store")?;
        Ok(roots)
    }

    /// A TLS client configuration that trusts the demo CA, presenting the client
    /// certificate when `with_cert`.
    pub(crate) fn client_config(&self, with_cert: bool) -> anyhow::Result<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(self.roots()?);
        Ok(if with_cert {
            builder
                .with_client_auth_cert(vec![self.client.cert_der.clone()], self.client.key())
                .context("loading the client certificate")?
        } else {
            builder.with_no_client_auth()
        })
    }

    fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .build()
                .context("building the client certificate verifier")?;
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server.cert_der.clone()], self.server.key())
            .context("loading the origin's certificate")
    }
}

fn name(common: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

fn issue(params: CertificateParams, issuer: &Issuer<'_, &KeyPair>) -> anyhow::Result<Issued> {
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
    })
}

/// Serves the stand-in API server on `listener` until the task is dropped.
pub(crate) async fn serve(pki: &DemoPki, listener: TcpListener) -> anyhow::Result<()> {
    let config = Arc::new(pki.server_config()?);
    loop {
        let (tcp, peer) = listener.accept().await?;
        let config = Arc::clone(&config);
        tokio::task::spawn_blocking(move || {
            let tcp = tcp.into_std()?;
            tcp.set_nonblocking(false)?;
            tcp.set_read_timeout(Some(IO_TIMEOUT))?;
            tcp.set_write_timeout(Some(IO_TIMEOUT))?;
            if let Err(err) = serve_connection(config, tcp) {
                tracing::debug!(%peer, "origin connection ended: {err}");
            }
            io::Result::Ok(())
        });
    }
}

fn serve_connection(config: Arc<ServerConfig>, tcp: std::net::TcpStream) -> io::Result<()> {
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    loop {
        let Some(head) = read_head(&mut tls)? else {
            return Ok(());
        };
        let path = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("/");
        let (status, body) = answer(path);
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(response.as_bytes())?;
        tls.flush()?;
        if head
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n")
        {
            tls.conn.send_close_notify();
            tls.flush()?;
            return Ok(());
        }
    }
}

/// Reads one request head; `None` when the peer closed between requests.
fn read_head(tls: &mut impl Read) -> io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(io::Error::other("request head too long"));
        }
        match tls.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && head.is_empty() => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

/// The stand-in's answers: `/version` as Kubernetes shapes it, and the minimal discovery
/// documents a client may ask for first.
fn answer(path: &str) -> (&'static str, String) {
    let path = path.split('?').next().unwrap_or(path);
    match path {
        // Written out rather than built with serde_json, whose maps sort their keys: this
        // keeps the order a real API server uses, so `major`, `minor` and `gitVersion` lead.
        "/version" => (
            "200 OK",
            format!(
                concat!(
                    r#"{{"major":"1","minor":"24","gitVersion":"{}","#,
                    r#""gitCommit":"0000000000000000000000000000000000000000","#,
                    r#""gitTreeState":"clean","buildDate":"2022-05-24T12:18:48Z","#,
                    r#""goVersion":"go1.18.2","compiler":"gc","platform":"linux/amd64"}}"#
                ),
                GIT_VERSION
            ),
        ),
        "/api" => (
            "200 OK",
            serde_json::json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": "198.51.100.101:443"}
                ]
            })
            .to_string(),
        ),
        "/apis" => (
            "200 OK",
            serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
                .to_string(),
        ),
        _ => (
            "404 Not Found",
            serde_json::json!({
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": format!("the zt demo's stand-in API server only serves /version, not {path}"),
                "reason": "NotFound",
                "code": 404
            })
            .to_string(),
        ),
    }
}

/// Binds the origin on `ip`, on a free port.
pub(crate) async fn bind(ip: IpAddr) -> io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(ip, 0)).await
}
