//! The SOCKS5 proxy: CONNECT to IPv4, IPv6 and names, each connection one flow.
//!
//! The handshake is bounded in bytes (the formats' own maxima) and in time
//! ([`HANDSHAKE_TIMEOUT`]); a client that breaks the format gets a reply where one is
//! defined and a closed connection, never a panic. BIND and UDP ASSOCIATE are answered
//! "command not supported".

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, warn, Instrument};

use crate::client::Client;
use crate::error::DialError;
use crate::forward::MAX_FORWARDED;
use crate::socks::{
    encode_reply, method_choice, Command, Greeting, ReplyCode, Request, TargetAddr,
    MAX_GREETING_LEN, MAX_REQUEST_LEN, METHOD_NONE_ACCEPTABLE, METHOD_NO_AUTH,
};

/// How long a SOCKS client has to send its greeting and request: generous for a person's
/// tool on the same machine, short enough that idle connections do not pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The SOCKS5 reply code for a failed dial, as RFC 1928 names them.
pub fn reply_code(err: &DialError) -> ReplyCode {
    match err {
        DialError::NoRoute { .. } | DialError::NoConnector { .. } => ReplyCode::NetworkUnreachable,
        DialError::Denied { .. } => ReplyCode::NotAllowed,
        DialError::Unreachable { .. } => ReplyCode::HostUnreachable,
        DialError::ConnectRefused { .. } => ReplyCode::ConnectionRefused,
        DialError::Timeout { .. } | DialError::Unanswered { .. } => ReplyCode::TtlExpired,
        _ => ReplyCode::GeneralFailure,
    }
}

/// Serves SOCKS5 on `listener` until it fails or the future is dropped.
pub async fn serve_socks(client: Arc<Client>, listener: TcpListener) -> io::Result<()> {
    let limit = Arc::new(Semaphore::new(MAX_FORWARDED));
    let mut tasks = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(%peer, limit = MAX_FORWARDED, "too many SOCKS connections; closing the new one");
            continue;
        };
        let client = client.clone();
        let span = tracing::info_span!("zt_socks", %peer);
        tasks.spawn(
            async move {
                let _permit = permit;
                if let Err(e) = socks_connection(&client, tcp).await {
                    debug!(error = %e, "SOCKS connection ended");
                }
            }
            .instrument(span),
        );
    }
}

/// Reads until `decode` yields a message; bytes past it stay in `buf`.
async fn read_message<T, E>(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
) -> io::Result<Result<T, E>> {
    loop {
        match decode(buf) {
            Ok(Some((msg, used))) => {
                buf.drain(..used);
                return Ok(Ok(msg));
            }
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
        if buf.len() >= max {
            // Cannot happen with a correct decoder; guards memory anyway.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "SOCKS message too long",
            ));
        }
        let mut chunk = [0u8; 512];
        let want = (max - buf.len()).min(chunk.len());
        let n = tcp.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

enum Handshake {
    /// Proceed to dial; `early` holds bytes sent after the request.
    Connect(TargetAddr, Vec<u8>),
    /// Answered and finished.
    Done,
}

async fn handshake(tcp: &mut TcpStream) -> io::Result<Handshake> {
    let none = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let mut buf = Vec::with_capacity(MAX_REQUEST_LEN);
    let greeting = match read_message(tcp, &mut buf, MAX_GREETING_LEN, Greeting::decode).await? {
        Ok(g) => g,
        Err(e) => {
            debug!(error = %e, "bad SOCKS greeting");
            return Ok(Handshake::Done);
        }
    };
    if !greeting.offers_no_auth() {
        tcp.write_all(&method_choice(METHOD_NONE_ACCEPTABLE))
            .await?;
        debug!(methods = ?greeting.methods, "SOCKS client offers no method we accept");
        return Ok(Handshake::Done);
    }
    tcp.write_all(&method_choice(METHOD_NO_AUTH)).await?;
    let request = match read_message(tcp, &mut buf, MAX_REQUEST_LEN, Request::decode).await? {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "bad SOCKS request");
            tcp.write_all(&encode_reply(e.reply_code(), none)).await?;
            return Ok(Handshake::Done);
        }
    };
    if request.command != Command::Connect {
        debug!(command = ?request.command, "SOCKS command not supported");
        tcp.write_all(&encode_reply(ReplyCode::CommandNotSupported, none))
            .await?;
        return Ok(Handshake::Done);
    }
    Ok(Handshake::Connect(request.target, buf))
}

async fn socks_connection(client: &Client, mut tcp: TcpStream) -> io::Result<()> {
    let none = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let (target, early) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut tcp)).await {
        Ok(Ok(Handshake::Connect(t, early))) => (t, early),
        Ok(Ok(Handshake::Done)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            debug!(timeout = ?HANDSHAKE_TIMEOUT, "SOCKS handshake not finished in time");
            return Ok(());
        }
    };
    let dest = match &target {
        TargetAddr::Ip(a) => *a,
        TargetAddr::Name(name, port) => {
            // The system resolver answers before the flow opens; the edge routes by address.
            match tokio::net::lookup_host((name.as_str(), *port)).await {
                Ok(mut addrs) => match addrs.next() {
                    Some(a) => a,
                    None => {
                        debug!(%target, "name has no address");
                        tcp.write_all(&encode_reply(ReplyCode::HostUnreachable, none))
                            .await?;
                        return Ok(());
                    }
                },
                Err(e) => {
                    debug!(%target, error = %e, "cannot resolve name");
                    tcp.write_all(&encode_reply(ReplyCode::HostUnreachable, none))
                        .await?;
                    return Ok(());
                }
            }
        }
    };
    let flow = match client.dial(dest).await {
        Ok(f) => f,
        Err(e) => {
            let code = reply_code(&e);
            warn!(%target, %dest, error = %e, reply = ?code, "SOCKS connect failed");
            tcp.write_all(&encode_reply(code, none)).await?;
            return Ok(());
        }
    };
    tcp.write_all(&encode_reply(ReplyCode::Succeeded, none))
        .await?;
    let _ = tcp.set_nodelay(true);
    debug!(%target, %dest, "SOCKS connect established");
    let out = flow.splice(tcp, &early).await;
    debug!(
        up = out.to_flow,
        down = out.to_tcp,
        reset = out.reset,
        "SOCKS connection ended"
    );
    Ok(())
}
