//! The HTTPS client the edge talks to its IdP with: one HTTP/1.1 request per connection over
//! rustls (ring, TLS 1.2 and 1.3, the server name checked against the system roots and the
//! optional CA file), one deadline over connect, handshake, request and response, a capped
//! body, and no redirects: a 3xx is an answer like any other error status.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::error::{bounded, OidcError};
use crate::settings::ProviderSettings;

/// Connect, TLS handshake, request and the whole response must fit in this. An IdP that
/// takes longer is treated as down, so a login never hangs on it.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response body read. Discovery documents and JWKS are a few KiB.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// Where a URL points: checked `https://` host, port and request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The host as written (an IPv6 literal without its brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The `Host` header: the authority as written.
    pub(crate) authority: String,
    /// Path and query, at least `/`.
    pub(crate) path_and_query: String,
}

impl Target {
    /// Parse an `https://` URL; the error says what is wrong with it.
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        if url.len() > 2048 {
            return Err("URL longer than 2048 bytes".into());
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("URL contains whitespace or control characters".into());
        }
        let Some(rest) = url.strip_prefix("https://") else {
            return Err("not an https:// URL".into());
        };
        if url.contains('#') {
            return Err("URL has a fragment".into());
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err("URL carries user info".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                return Err("unclosed IPv6 literal in the URL".into());
            };
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("junk after the IPv6 literal")?),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("URL has no host".into());
        }
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or("bad port in the URL")?,
        };
        if ServerName::try_from(host.to_owned()).is_err() {
            return Err("URL host is not a DNS name or IP address".into());
        }
        let path_and_query = if tail.starts_with('/') {
            tail.to_owned()
        } else {
            format!("/{tail}")
        };
        Ok(Target {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path_and_query,
        })
    }
}

/// A request body: a form (`application/x-www-form-urlencoded`) or nothing.
pub(crate) enum Body {
    Empty,
    Form(Vec<(&'static str, String)>),
}

/// How the request authenticates.
pub(crate) enum Auth<'a> {
    None,
    /// `client_secret_basic` (RFC 6749 §2.3.1): id and secret form-encoded, then Basic.
    Basic {
        client_id: &'a str,
        secret: &'a str,
    },
    /// A bearer access token (userinfo).
    Bearer(&'a str),
}

/// The IdP client: TLS configuration and the deadline.
#[derive(Clone)]
pub(crate) struct HttpClient {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl HttpClient {
    /// Trust the system roots and, when set, the CA file.
    pub(crate) fn new(settings: &ProviderSettings) -> Result<Self, OidcError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        if !native.errors.is_empty() {
            debug!(
                errors = native.errors.len(),
                "some system root certificates could not be loaded"
            );
        }
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if let Some(path) = &settings.ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| OidcError::Settings(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(OidcError::Settings(format!(
                    "CA file {}: no certificate in it",
                    path.display()
                )));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| OidcError::Settings(format!("CA file {}: {e}", path.display())))?;
            }
        }
        if let Some(pem) = &settings.ca_pem {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| OidcError::Settings(format!("the provider's CA PEM: {e}")))?;
            if certs.is_empty() {
                return Err(OidcError::Settings(
                    "the provider's CA PEM holds no certificate".into(),
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| OidcError::Settings(format!("the provider's CA PEM: {e}")))?;
            }
        }
        if settings.ca_file.is_none() && settings.ca_pem.is_none() && added == 0 {
            warn!("no system root certificates found and no CA file set: the IdP's certificate cannot be checked");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| OidcError::Settings(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpClient {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            timeout: TIMEOUT,
        })
    }

    /// One request; returns the status and the body (at most [`MAX_BODY`]). Transport
    /// failures and the deadline are [`OidcError::IdpUnreachable`]; an error status is
    /// [`OidcError::IdpError`] with the OAuth error fields when the body has them.
    pub(crate) async fn request(
        &self,
        document: &'static str,
        method: Method,
        url: &str,
        auth: Auth<'_>,
        body: Body,
    ) -> Result<Bytes, OidcError> {
        let target = Target::parse(url)
            .map_err(|reason| OidcError::Settings(format!("{document} URL {url}: {reason}")))?;
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(
            self.timeout,
            self.exchange(document, method, &target, auth, body),
        )
        .await;
        let (status, bytes) = match result {
            Ok(r) => r.map_err(|e| match e {
                Failure::Transport(cause) => OidcError::IdpUnreachable {
                    url: url.to_owned(),
                    cause,
                },
                Failure::Oidc(e) => e,
            })?,
            Err(_) => {
                return Err(OidcError::IdpUnreachable {
                    url: url.to_owned(),
                    cause: format!("no complete answer within {} s", self.timeout.as_secs()),
                })
            }
        };
        debug!(
            url,
            status,
            bytes = bytes.len(),
            ms = started.elapsed().as_millis() as u64,
            "IdP answered"
        );
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let (error, description) = oauth_error(&bytes);
        Err(OidcError::IdpError {
            url: url.to_owned(),
            status,
            error,
            description,
        })
    }

    async fn exchange(
        &self,
        document: &'static str,
        method: Method,
        target: &Target,
        auth: Auth<'_>,
        body: Body,
    ) -> Result<(u16, Bytes), Failure> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| Failure::Transport(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(target.host.clone())
            .map_err(|e| Failure::Transport(format!("server name: {e}")))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| Failure::Transport(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| Failure::Transport(format!("HTTP: {e}")))?;
        // The connection task ends with this function, whatever happens.
        let conn = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(cause = %e, "IdP connection ended");
            }
        }));
        let mut req = Request::builder()
            .method(method)
            .uri(target.path_and_query.as_str())
            .header(HOST, target.authority.as_str())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("zt-oidc/", env!("CARGO_PKG_VERSION")));
        match auth {
            Auth::None => {}
            Auth::Basic { client_id, secret } => {
                use base64::Engine as _;
                let pair = format!("{}:{}", form_encode(client_id), form_encode(secret));
                let value = zeroize::Zeroizing::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
                ));
                drop(zeroize::Zeroizing::new(pair));
                req = req.header(AUTHORIZATION, value.as_str());
            }
            Auth::Bearer(token) => {
                req = req.header(AUTHORIZATION, format!("Bearer {token}"));
            }
        }
        let payload = match body {
            Body::Empty => Bytes::new(),
            Body::Form(fields) => {
                req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                let encoded = fields
                    .iter()
                    .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                Bytes::from(encoded)
            }
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| Failure::Transport(format!("request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Failure::Transport(format!("HTTP: {e}")))?;
        let status = resp.status().as_u16();
        let collected = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    Failure::Oidc(OidcError::malformed(
                        document,
                        "-",
                        format!("response body larger than {MAX_BODY} bytes"),
                    ))
                } else {
                    Failure::Transport(format!("reading the response: {e}"))
                }
            })?;
        drop(conn);
        Ok((status, collected.to_bytes()))
    }
}

enum Failure {
    Transport(String),
    Oidc(OidcError),
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Characters sent as they are in URLs and forms: RFC 3986's unreserved set.
const ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode everything but the unreserved characters (valid in a query and in an
/// `application/x-www-form-urlencoded` body alike).
pub(crate) fn form_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, ENCODE).to_string()
}

/// The OAuth `error` and `error_description` of an error body (RFC 6749 §5.2), bounded and
/// stripped of control characters: they end up in error messages.
pub(crate) fn oauth_error(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let field = |name: &str, max: usize| {
        map.get(name)
            .and_then(Value::as_str)
            .map(|s| bounded(s, max))
    };
    (field("error", 64), field("error_description", 200))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("https://idp.example/realms/x/token?a=b").expect("parses");
        assert_eq!(
            (t.host.as_str(), t.port, t.path_and_query.as_str()),
            ("idp.example", 443, "/realms/x/token?a=b")
        );
        let t = Target::parse("https://[::1]:8443").expect("parses");
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.authority.as_str(),
                t.path_and_query.as_str()
            ),
            ("::1", 8443, "[::1]:8443", "/")
        );
        let t = Target::parse("https://127.0.0.1:9?x").expect("parses");
        assert_eq!(t.path_and_query, "/?x");
        for bad in [
            "http://idp.example/",
            "https://",
            "https://user:pw@idp.example/",
            "https://idp.example/#frag",
            "https://idp.example:0/",
            "https://idp.example:99999/",
            "https://idp.example/a b",
            "https://[::1/",
            "https://bad_host!/",
            "HTTPS://idp.example/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn oauth_errors_are_bounded() {
        let long = "x".repeat(5000);
        let body = serde_json::json!({"error": "invalid_grant\u{7}", "error_description": long})
            .to_string();
        let (e, d) = oauth_error(body.as_bytes());
        assert_eq!(e.as_deref(), Some("invalid_grant"));
        assert_eq!(d.map(|d| d.chars().count()), Some(201));
        assert_eq!(oauth_error(b"<html>"), (None, None));
    }

    #[test]
    fn form_encoding_keeps_only_unreserved() {
        assert_eq!(
            form_encode("a-b.c_d~e f&g=h+/:"),
            "a-b.c_d~e%20f%26g%3Dh%2B%2F%3A"
        );
    }
}
