//! The admin API client: HTTP/1.1 over a std TCP stream, one connection per request.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::args::{AdminOpts, Output};
use super::{CliError, CliResult};

/// How long a request may take; admin calls are small and local.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest reply accepted; a list of every route of a big edge is well below this.
const MAX_REPLY: u64 = 64 * 1024 * 1024;

pub(super) struct AdminClient {
    /// `host:port`.
    authority: String,
    token: String,
    output: Output,
}

impl AdminClient {
    pub(super) fn new(opts: &AdminOpts) -> CliResult<Self> {
        let env_path = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let state_dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(zt_edge::default_state_dir);
        let url = match opts
            .admin_url
            .clone()
            .or_else(|| std::env::var("ZT_ADMIN_URL").ok().filter(|v| !v.is_empty()))
        {
            Some(url) => url,
            None => {
                let path = state_dir.join(zt_edge::ADMIN_ADDR_FILE);
                std::fs::read_to_string(&path).map_err(|e| {
                    CliError::Unreachable(format!(
                        "cannot read the admin API address from {}: {e}; is the edge running \
                         (`zt edge run`)? Point at its state directory with --state-dir, or give \
                         --admin-url",
                        path.display()
                    ))
                })?
            }
        };
        let authority = parse_url(&url)?;
        let token_path = opts
            .admin_token_file
            .clone()
            .or_else(|| env_path("ZT_ADMIN_TOKEN_FILE"))
            .unwrap_or_else(|| state_dir.join("admin-token"));
        let token = std::fs::read_to_string(&token_path).map_err(|e| {
            CliError::Unreachable(format!(
                "cannot read the admin token from {}: {e}; give the edge's state directory with \
                 --state-dir or the token file with --admin-token-file",
                token_path.display()
            ))
        })?;
        Ok(Self {
            authority,
            token: token.trim().to_owned(),
            output: opts.output,
        })
    }

    pub(super) fn get(&self, path: &str) -> CliResult<Value> {
        self.call("GET", path, None)
    }

    pub(super) fn call(&self, method: &str, path: &str, body: Option<&Value>) -> CliResult<Value> {
        let unreachable = |e: std::io::Error| {
            CliError::Unreachable(format!(
                "cannot reach the edge's admin API at {}: {e}; is the edge running?",
                self.authority
            ))
        };
        let addrs: Vec<_> = self
            .authority
            .to_socket_addrs()
            .map_err(unreachable)?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, REQUEST_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut stream = stream.ok_or_else(|| {
            unreachable(last.unwrap_or_else(|| std::io::Error::other("no address")))
        })?;
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .map_err(unreachable)?;
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(unreachable)?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n",
            self.authority,
            self.token,
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str("\r\n");
        req.push_str(&body);
        stream.write_all(req.as_bytes()).map_err(unreachable)?;
        let mut reply = Vec::new();
        stream
            .take(MAX_REPLY)
            .read_to_end(&mut reply)
            .map_err(unreachable)?;
        let (status, value) = parse_reply(&reply).ok_or_else(|| {
            CliError::Unreachable(format!(
                "{} answered with something other than the admin API's JSON; is --admin-url right?",
                self.authority
            ))
        })?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the admin API answered HTTP {status}"));
        if status == 401 {
            return Err(CliError::Unreachable(format!(
                "{message} (--admin-token-file or --state-dir)"
            )));
        }
        Err(CliError::Refused { message })
    }

    pub(super) fn json(&self) -> bool {
        self.output == Output::Json
    }
}

fn parse_url(url: &str) -> CliResult<String> {
    let u = url.trim();
    if u.starts_with("https://") {
        return Err(CliError::Local(format!(
            "admin URL {u}: the admin API speaks plain HTTP on loopback; use http://"
        )));
    }
    let rest = u.strip_prefix("http://").unwrap_or(u);
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || !authority.contains(':') {
        return Err(CliError::Local(format!(
            "admin URL `{u}` has no host:port, e.g. http://127.0.0.1:7800"
        )));
    }
    Ok(authority.to_owned())
}

/// The status and JSON body of an HTTP/1.1 reply with a Content-Length or closed by the
/// server.
fn parse_reply(reply: &[u8]) -> Option<(u16, Value)> {
    let split = reply.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&reply[..split]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = &reply[split + 4..];
    let value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).ok()?
    };
    Some((status, value))
}

/// Percent-encodes a path segment or query value.
pub(super) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(super) fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}
