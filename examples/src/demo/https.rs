//! The demo's caller: one HTTPS `GET` with a hand-written HTTP/1.1 request over rustls,
//! reaching the origin either through the client's forwarded port or through its SOCKS5
//! proxy. TLS runs end to end between this caller and the origin; the tunnel only carries
//! the bytes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// How long the caller waits on any one read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// How the caller reaches the origin.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Path {
    /// Connect to a local port that the client forwards to the origin.
    Forward(SocketAddr),
    /// Ask the client's SOCKS5 proxy at `proxy` for a CONNECT to `target`.
    Socks {
        proxy: SocketAddr,
        target: SocketAddr,
    },
}

/// The bytes the caller moved through the tunnel on its connection (after any SOCKS5
/// handshake, which the proxy consumes): what the edge's audit line for this flow must
/// count, so the demo can tell its own flow's line from another flow's to the same
/// destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Carried {
    /// Bytes written towards the origin.
    pub(crate) up: u64,
    /// Bytes read from the origin.
    pub(crate) down: u64,
}

/// A TCP stream that counts what passes through it.
struct Counting {
    tcp: TcpStream,
    carried: Carried,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.read(buf)?;
        self.carried.down += n as u64;
        Ok(n)
    }
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.tcp.write(buf)?;
        self.carried.up += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// What came back.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// An HTTP response: its status line and body.
    Response { status: String, body: String },
    /// The TLS handshake or the first read failed: the origin's refusal as rustls saw it.
    TlsRefused(String),
}

/// Sends `GET path`, reads the whole answer, and says how many bytes crossed the tunnel.
pub(crate) fn get(
    via: Path,
    config: ClientConfig,
    server_name: &str,
    path: &str,
) -> anyhow::Result<(Outcome, Carried)> {
    let tcp = match via {
        Path::Forward(addr) => TcpStream::connect(addr)
            .with_context(|| format!("connecting to the forwarded port {addr}"))?,
        Path::Socks { proxy, target } => socks_connect(proxy, target)?,
    };
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let name = ServerName::try_from(server_name.to_owned()).context("origin name")?;
    let conn = ClientConnection::new(Arc::new(config), name)?;
    let mut tls = StreamOwned::new(
        conn,
        Counting {
            tcp,
            carried: Carried::default(),
        },
    );
    let outcome = exchange(&mut tls, server_name, path);
    // Closing ends the flow, so its audit line can be written.
    let carried = tls.sock.carried;
    drop(tls);
    Ok((outcome?, carried))
}

fn exchange(
    tls: &mut StreamOwned<ClientConnection, Counting>,
    server_name: &str,
    path: &str,
) -> anyhow::Result<Outcome> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {server_name}\r\nUser-Agent: zt-demo\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    if let Err(err) = tls.write_all(request.as_bytes()).and_then(|()| tls.flush()) {
        return refusal_or(err);
    }
    let mut raw = Vec::new();
    if let Err(err) = tls.read_to_end(&mut raw) {
        // A peer that closes without close_notify after a full response is tolerated.
        if raw.is_empty() || err.kind() != io::ErrorKind::UnexpectedEof {
            return refusal_or(err);
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!(
            "the origin's answer has no complete HTTP head ({} bytes)",
            raw.len()
        );
    };
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok(Outcome::Response {
        status,
        body: body.to_owned(),
    })
}

/// A TLS error is the outcome being looked for; any other I/O error is a failure.
fn refusal_or(err: io::Error) -> anyhow::Result<Outcome> {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Ok(Outcome::TlsRefused(tls.to_string())),
        None => Err(err).context("talking to the origin"),
    }
}

/// SOCKS5 with no authentication, CONNECT to an IP address (RFC 1928).
fn socks_connect(proxy: SocketAddr, target: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut tcp = TcpStream::connect(proxy)
        .with_context(|| format!("connecting to the SOCKS5 proxy {proxy}"))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.write_all(&[5, 1, 0])?;
    let mut choice = [0u8; 2];
    tcp.read_exact(&mut choice)
        .context("reading the SOCKS5 method choice")?;
    if choice != [5, 0] {
        bail!("the SOCKS5 proxy refused the no-authentication method ({choice:?})");
    }
    let mut request = vec![5, 1, 0];
    match target {
        SocketAddr::V4(a) => {
            request.push(1);
            request.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            request.push(4);
            request.extend_from_slice(&a.ip().octets());
        }
    }
    request.extend_from_slice(&target.port().to_be_bytes());
    tcp.write_all(&request)?;
    let mut reply = [0u8; 4];
    tcp.read_exact(&mut reply)
        .context("reading the SOCKS5 reply")?;
    if reply[1] != 0 {
        bail!(
            "the SOCKS5 proxy answered CONNECT {target} with reply code {} ({})",
            reply[1],
            socks_reply_text(reply[1])
        );
    }
    let rest = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        other => bail!("the SOCKS5 reply has an unexpected address type {other}"),
    };
    let mut bound = vec![0u8; rest];
    tcp.read_exact(&mut bound)
        .context("reading the SOCKS5 bound address")?;
    Ok(tcp)
}

fn socks_reply_text(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown",
    }
}
