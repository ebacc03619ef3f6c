//! Which transport a client (or connector) uses to reach the edge, and the HTTP `CONNECT`
//! proxy the TCP transport can go through.
//!
//! `auto` races: QUIC starts first and TCP follows after [`QUIC_HEAD_START`] (or at once
//! when QUIC fails sooner); the first registration wins. An authenticated refusal (bad
//! proof, revoked, rate-limited) from either is final: the other is not tried, so blocking
//! UDP never turns a refusal into a second chance. A connection that came up over TCP keeps
//! probing QUIC and moves new flows back once QUIC registers.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long QUIC runs alone before TCP joins the race: long enough for a QUIC handshake on
/// any sane path to win (a few round trips), short enough that a network dropping UDP
/// costs only this much.
pub const QUIC_HEAD_START: Duration = Duration::from_millis(300);

/// The transport choice (`--protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EdgeProtocol {
    /// QUIC, with TLS over TCP raced in shortly after (the default).
    #[default]
    Auto,
    /// QUIC only.
    Quic,
    /// TLS over TCP only.
    Tcp,
}

/// A `--protocol` value that is none of `auto`, `quic`, `tcp` (or `http2`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?}: expected auto, quic or tcp (http2 is an alias of tcp)")]
pub struct ProtocolParseError(pub String);

impl FromStr for EdgeProtocol {
    type Err = ProtocolParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "quic" => Ok(Self::Quic),
            // cloudflared's word for its TCP transport.
            "tcp" | "http2" => Ok(Self::Tcp),
            _ => Err(ProtocolParseError(s.to_owned())),
        }
    }
}

impl fmt::Display for EdgeProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Quic => "quic",
            Self::Tcp => "tcp",
        })
    }
}

/// An HTTP proxy URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Not `http://[user:password@]host:port`.
    #[error("proxy URL must be http://[user:password@]host:port (got {0})")]
    BadUrl(String),
}

/// Largest CONNECT answer read (status line and headers).
const MAX_PROXY_ANSWER: usize = 8 * 1024;

/// An HTTP proxy reached with `CONNECT`, with optional basic authentication. Its password
/// is never shown by `Debug` or in errors.
#[derive(Clone)]
pub struct HttpProxy {
    /// `host:port`.
    addr: String,
    user: Option<String>,
    password: Option<String>,
}

impl fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProxy")
            .field("addr", &self.addr)
            .field("user", &self.user.as_ref().map(|_| "[redacted]"))
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl HttpProxy {
    /// Parses `http://[user:password@]host:port` (what `HTTPS_PROXY` holds); the user
    /// information may be percent-encoded. The error never repeats the password.
    pub fn parse(url: &str) -> Result<Self, ProxyError> {
        let redacted = || match url.rsplit_once('@') {
            Some((_, host)) => format!("http://[redacted]@{host}"),
            None => url.to_owned(),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| ProxyError::BadUrl(redacted()))?;
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| ProxyError::BadUrl(redacted()))?;
        if host.is_empty() || port.parse::<u16>().is_err() || hostport.contains('/') {
            return Err(ProxyError::BadUrl(redacted()));
        }
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user).ok_or_else(|| ProxyError::BadUrl(redacted()))?;
                let pass = percent_decode(pass).ok_or_else(|| ProxyError::BadUrl(redacted()))?;
                (Some(user), Some(pass))
            }
        };
        Ok(Self {
            addr: hostport.to_owned(),
            user,
            password,
        })
    }

    /// The proxy's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A TCP stream to `target` through the proxy (`CONNECT target`), ready for TLS.
    pub async fn connect(&self, target: SocketAddr) -> io::Result<TcpStream> {
        let mut s = TcpStream::connect(self.addr.as_str()).await?;
        let _ = s.set_nodelay(true);
        let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(user) = &self.user {
            use base64::Engine as _;
            let mut cred = user.as_bytes().to_vec();
            cred.push(b':');
            if let Some(p) = &self.password {
                cred.extend_from_slice(p.as_bytes());
            }
            let b64 = base64::engine::general_purpose::STANDARD.encode(&cred);
            req.push_str(&format!("Proxy-Authorization: Basic {b64}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        // Byte by byte up to the blank line: nothing past the answer is ours to read.
        let mut answer = Vec::with_capacity(256);
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() >= MAX_PROXY_ANSWER {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the proxy at {} sent an answer over {MAX_PROXY_ANSWER} bytes",
                        self.addr
                    ),
                ));
            }
            let b = s.read_u8().await?;
            answer.push(b);
        }
        let status_line = answer.split(|&b| b == b'\r').next().unwrap_or_default();
        let status_line = String::from_utf8_lossy(status_line);
        let mut parts = status_line.split_whitespace();
        let version = parts.next().unwrap_or_default();
        let code = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") || code != "200" {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "the proxy at {} refused CONNECT {target}: {}",
                    self.addr,
                    status_line.chars().take(200).collect::<String>()
                ),
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_words() {
        assert_eq!("auto".parse::<EdgeProtocol>().unwrap(), EdgeProtocol::Auto);
        assert_eq!("QUIC".parse::<EdgeProtocol>().unwrap(), EdgeProtocol::Quic);
        assert_eq!("tcp".parse::<EdgeProtocol>().unwrap(), EdgeProtocol::Tcp);
        assert_eq!("http2".parse::<EdgeProtocol>().unwrap(), EdgeProtocol::Tcp);
        assert!("h3".parse::<EdgeProtocol>().is_err());
    }

    #[test]
    fn proxy_urls() {
        let p = HttpProxy::parse("http://proxy.example:3128/").unwrap();
        assert_eq!(p.addr(), "proxy.example:3128");
        assert!(p.user.is_none());
        let p = HttpProxy::parse("http://al%40ice:s3cr%3At@10.0.0.1:8080").unwrap();
        assert_eq!(p.user.as_deref(), Some("al@ice"));
        assert_eq!(p.password.as_deref(), Some("s3cr:t"));
        assert!(!format!("{p:?}").contains("s3cr"));
        for bad in [
            "https://p:1",
            "http://p",
            "http://:1",
            "http://p:x",
            "socks5://p:1",
        ] {
            assert!(HttpProxy::parse(bad).is_err(), "{bad}");
        }
        let e = HttpProxy::parse("ftp://u:hunter2@p:1").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
