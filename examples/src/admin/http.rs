//! The admin API client: HTTP/1.1 on hyper's client connection over a tokio TCP stream,
//! one connection per request, driven from the synchronous CLI by a current-thread tokio
//! runtime that lives as long as the client.
//!
//! Why hyper: the edge already serves the admin API with it, so both ends share one
//! well-kept HTTP implementation; its client connection runs over any tokio byte stream
//! (through `TokioIo`), so a Unix socket (should the admin API listen on one) is one more arm in
//! `connect`, and fetching an identity provider's documents over HTTPS puts a tokio-rustls
//! stream under the same `exchange`. A pooling client (hyper-util's, reqwest) would buy
//! nothing for one request per process.
//!
//! Bounds, as with the hand-written client this replaces: each connection attempt, and
//! then the whole exchange (request, reply head, reply body), within `REQUEST_TIMEOUT`;
//! a reply body of at most `MAX_REPLY` bytes (hyper bounds the head). The admin token
//! only ever goes into the `Authorization` header, marked sensitive; no message here
//! carries it.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use super::args::{AdminOpts, Output};
use super::{CliError, CliResult};

/// How long a connection attempt, and then the rest of a request, may take; admin calls
/// are small and local.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest reply accepted; a list of every route of a big edge is well below this.
const MAX_REPLY: usize = 64 * 1024 * 1024;

/// A client of one edge's admin API, for one command.
pub(super) struct AdminClient {
    /// `host:port`.
    authority: String,
    /// `Bearer <token>`, marked sensitive so that it is never shown in a `Debug`.
    authorization: HeaderValue,
    output: Output,
    /// Runs each request to completion; current-thread, since a command makes its requests
    /// one after another.
    runtime: Runtime,
    /// [`REQUEST_TIMEOUT`], shorter in tests.
    timeout: Duration,
    /// [`MAX_REPLY`], smaller in tests.
    max_reply: usize,
}

impl AdminClient {
    /// Finds the admin API's address and token: flags, then the environment, then the
    /// edge's state directory.
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
        Self::with_token(authority, &token, &token_path, opts.output)
    }

    /// A client of the admin API at `authority` with the token read from `token_path`.
    fn with_token(
        authority: String,
        token: &str,
        token_path: &Path,
        output: Output,
    ) -> CliResult<Self> {
        // The error says which file, never what is in it.
        let mut authorization =
            HeaderValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
                CliError::Unreachable(format!(
                    "the admin token in {} has characters no HTTP header may carry; give the \
                     edge's state directory with --state-dir or the token file with \
                     --admin-token-file",
                    token_path.display()
                ))
            })?;
        authorization.set_sensitive(true);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| CliError::Local(format!("cannot start the admin API client: {e}")))?;
        Ok(Self {
            authority,
            authorization,
            output,
            runtime,
            timeout: REQUEST_TIMEOUT,
            max_reply: MAX_REPLY,
        })
    }

    /// `GET path`.
    pub(super) fn get(&self, path: &str) -> CliResult<Value> {
        self.call(Method::GET, path, None)
    }

    /// Sends one request and returns the reply's JSON (`null` for an empty body). A status
    /// other than 2xx is the edge's refusal (with its message), except 401: the token.
    pub(super) fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> CliResult<Value> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let (status, reply) = self.runtime.block_on(self.exchange(method, path, body))?;
        let value = parse_body(&reply).ok_or_else(|| self.not_the_admin_api())?;
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

    /// Whether to print JSON rather than tables.
    pub(super) fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// Connects, then sends the request and reads the whole reply within the timeout.
    async fn exchange(&self, method: Method, path: &str, body: String) -> CliResult<(u16, Bytes)> {
        let stream = self.connect().await?;
        // Built once connected, as the old client did: a bad address is "cannot reach".
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.authority.as_str())
            .header(CONNECTION, "close")
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_LENGTH, body.len());
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CliError::Local(format!("cannot make the request for {path}: {e}")))?;
        match tokio::time::timeout(self.timeout, self.send(TokioIo::new(stream), request)).await {
            Ok(result) => result,
            Err(_) => Err(self.unreachable(&format_args!(
                "no answer within {} s",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    /// A TCP connection to the first address of the authority that accepts one.
    async fn connect(&self) -> CliResult<TcpStream> {
        let addrs = tokio::net::lookup_host(self.authority.as_str())
            .await
            .map_err(|e| self.unreachable(&e))?;
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection timed out",
                    ))
                }
            }
        }
        Err(self.unreachable(&last.unwrap_or_else(|| io::Error::other("no address"))))
    }

    /// One request over one HTTP/1.1 connection on `io`: any byte stream, so TLS or a Unix
    /// socket can go under it unchanged.
    async fn send<T>(&self, io: T, request: Request<Full<Bytes>>) -> CliResult<(u16, Bytes)>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, connection) = http1::Builder::new()
            // The header names' case the hand-written client sent; servers must not care,
            // but proxies in between and packet captures read more easily.
            .title_case_headers(true)
            .handshake(io)
            .await
            .map_err(|e| self.failed(&e))?;
        // The connection does the reading and writing; it ends once the reply is read,
        // since the request asks to close. Aborted below in case it has not.
        let driver = tokio::spawn(connection);
        let result = async {
            let reply = sender
                .send_request(request)
                .await
                .map_err(|e| self.failed(&e))?;
            let status = reply.status().as_u16();
            let body = Limited::new(reply.into_body(), self.max_reply)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        CliError::Unreachable(format!(
                            "{} sent a reply larger than {} bytes, more than the admin API ever \
                             sends; is --admin-url right?",
                            self.authority, self.max_reply
                        ))
                    } else {
                        match e.downcast::<hyper::Error>() {
                            Ok(e) => self.failed(&e),
                            Err(e) => self.unreachable(&e),
                        }
                    }
                })?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        driver.abort();
        result
    }

    /// What a failed HTTP exchange means: a reply that is not HTTP (or stops half-way) is
    /// not the admin API; anything else (a reset, a refusal) is an unreachable edge.
    fn failed(&self, e: &hyper::Error) -> CliError {
        if e.is_parse() || e.is_incomplete_message() {
            return self.not_the_admin_api();
        }
        // hyper's own message is only "connection error" and the like; the innermost cause
        // (usually the I/O error) says what happened, as the old client's message did.
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            // A body that ends before its Content-Length is a reply cut short, not an
            // unreachable edge (the old client failed to parse it).
            if c.downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::UnexpectedEof)
            {
                return self.not_the_admin_api();
            }
            text = c.to_string();
            cause = c.source();
        }
        self.unreachable(&text)
    }

    fn unreachable(&self, cause: &dyn std::fmt::Display) -> CliError {
        CliError::Unreachable(format!(
            "cannot reach the edge's admin API at {}: {cause}; is the edge running?",
            self.authority
        ))
    }

    fn not_the_admin_api(&self) -> CliError {
        CliError::Unreachable(format!(
            "{} answered with something other than the admin API's JSON; is --admin-url right?",
            self.authority
        ))
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

/// The JSON of a reply body; `null` for an empty (or blank) one, `None` for one that is
/// not JSON.
fn parse_body(body: &[u8]) -> Option<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Some(Value::Null)
    } else {
        serde_json::from_slice(body).ok()
    }
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    use serde_json::json;

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A one-connection server: reads the request head (and the body its Content-Length
    /// announces), hands the request's bytes over, then writes `reply` and closes.
    fn serve_once(reply: Vec<u8>) -> (AdminClient, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
            let _ = stream.write_all(&reply);
        });
        (client(authority), rx)
    }

    fn client(authority: String) -> AdminClient {
        AdminClient::with_token(
            authority,
            &format!("{TOKEN}\n"),
            Path::new("admin-token"),
            Output::Json,
        )
        .unwrap()
    }

    fn http(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn unreachable_message(result: CliResult<Value>) -> String {
        match result {
            Err(CliError::Unreachable(m)) => m,
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[test]
    fn a_request_carries_the_token_and_the_json_body_and_gets_the_reply() {
        let (c, request) = serve_once(http("201 Created", "{\"id\": 7}\n"));
        let v = c
            .call(Method::POST, "/v1/vnets", Some(&json!({ "name": "lab" })))
            .unwrap();
        assert_eq!(v, json!({ "id": 7 }));
        let request = request.recv().unwrap();
        assert!(
            request.starts_with("POST /v1/vnets HTTP/1.1\r\n"),
            "{request}"
        );
        for header in [
            format!("Host: {}\r\n", c.authority),
            "Connection: close\r\n".to_owned(),
            format!("Authorization: Bearer {TOKEN}\r\n"),
            "Content-Length: 14\r\n".to_owned(),
            "Content-Type: application/json\r\n".to_owned(),
        ] {
            assert!(request.contains(&header), "{header:?} missing in {request}");
        }
        assert!(request.ends_with("\r\n\r\n{\"name\":\"lab\"}"), "{request}");
    }

    #[test]
    fn a_get_has_no_content_type_and_an_empty_reply_is_null() {
        let (c, request) = serve_once(http("200 OK", ""));
        assert_eq!(c.get("/v1/account").unwrap(), Value::Null);
        let request = request.recv().unwrap();
        assert!(request.contains("Content-Length: 0\r\n"), "{request}");
        assert!(!request.contains("Content-Type"), "{request}");
    }

    #[test]
    fn refusals_carry_the_edges_message_and_a_wrong_token_is_unreachable() {
        let (c, _) = serve_once(http(
            "409 Conflict",
            r#"{"error": {"code": "in_use", "message": "tunnel `a` still serves 1 route(s)"}}"#,
        ));
        match c.get("/v1/tunnels/a") {
            Err(CliError::Refused { message }) => {
                assert_eq!(message, "tunnel `a` still serves 1 route(s)")
            }
            other => panic!("{other:?}"),
        }
        let (c, _) = serve_once(http("500 Internal Server Error", "{}"));
        match c.get("/v1/account") {
            Err(CliError::Refused { message }) => {
                assert_eq!(message, "the admin API answered HTTP 500")
            }
            other => panic!("{other:?}"),
        }
        let (c, _) = serve_once(http(
            "401 Unauthorized",
            r#"{"error": {"message": "the admin token is wrong"}}"#,
        ));
        let m = unreachable_message(c.get("/v1/account"));
        assert_eq!(
            m,
            "the admin token is wrong (--admin-token-file or --state-dir)"
        );
    }

    #[test]
    fn something_other_than_the_admin_api_is_named() {
        let not_api = |reply: &[u8]| {
            let (c, _) = serve_once(reply.to_vec());
            let authority = c.authority.clone();
            let m = unreachable_message(c.get("/v1/account"));
            assert_eq!(
                m,
                format!(
                    "{authority} answered with something other than the admin API's JSON; is \
                     --admin-url right?"
                ),
                "{reply:?}"
            );
        };
        not_api(b"SSH-2.0-OpenSSH_9.6\r\n");
        not_api(b"");
        not_api(&http("200 OK", "<html></html>"));
        // Cut off in the middle of the body it announced.
        not_api(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"a\":");
    }

    #[test]
    fn a_reply_beyond_the_bound_is_refused() {
        let (mut c, _) = serve_once(http("200 OK", &format!("\"{}\"", "x".repeat(200))));
        c.max_reply = 100;
        let m = unreachable_message(c.get("/v1/routes"));
        assert!(m.contains("sent a reply larger than 100 bytes"), "{m}");
    }

    #[test]
    fn a_silent_server_times_out_and_a_closed_port_is_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = client(listener.local_addr().unwrap().to_string());
        c.timeout = Duration::from_millis(200);
        let m = unreachable_message(c.get("/v1/account"));
        assert!(
            m.starts_with("cannot reach the edge's admin API at "),
            "{m}"
        );
        assert!(m.contains("no answer within 0.2 s"), "{m}");
        drop(listener);

        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = client(format!("127.0.0.1:{port}"));
        let m = unreachable_message(c.get("/v1/account"));
        assert!(
            m.starts_with(&format!(
                "cannot reach the edge's admin API at 127.0.0.1:{port}: "
            )),
            "{m}"
        );
        assert!(m.ends_with("; is the edge running?"), "{m}");
    }

    #[test]
    fn the_token_is_never_in_an_error_or_a_debug() {
        let err = match AdminClient::with_token(
            "127.0.0.1:1".to_owned(),
            "secret\u{1}token",
            Path::new("/x/admin-token"),
            Output::Table,
        ) {
            Err(CliError::Unreachable(m)) => m,
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("a token with a control character was accepted"),
        };
        assert!(err.contains("/x/admin-token"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let c = client("127.0.0.1:1".to_owned());
        assert!(!format!("{:?}", c.authorization).contains(TOKEN));
    }

    #[test]
    fn urls_and_encoding() {
        assert_eq!(
            parse_url("http://127.0.0.1:7800/\n").unwrap(),
            "127.0.0.1:7800"
        );
        assert_eq!(parse_url("[::1]:7800").unwrap(), "[::1]:7800");
        assert!(matches!(parse_url("https://x:1"), Err(CliError::Local(_))));
        assert!(matches!(
            parse_url("http://localhost"),
            Err(CliError::Local(_))
        ));
        assert_eq!(enc("10.0.0.0/8 a~b"), "10.0.0.0%2F8%20a~b");
        assert_eq!(query(&[("a", None), ("b", Some("x y"))]), "?b=x%20y");
        assert_eq!(query(&[("a", None)]), "");
    }
}
