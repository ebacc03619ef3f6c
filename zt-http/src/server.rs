//! The accept loop: one task per connection under a connection cap, hyper's HTTP/1.1 with
//! the configured bounds, backoff on accept errors, and a bounded graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn, Instrument};

use crate::body::RequestBody;
use crate::config::ServerConfig;
use crate::io::WriteTimeout;

/// A response body: the whole answer in one buffer. Every server this crate runs answers
/// with a few KiB at most, so streaming would buy nothing.
pub type ResponseBody = Full<Bytes>;

/// A server running on its own task. Stop it with [`HttpServer::shutdown`]; dropping it
/// stops accepting at once and lets the task finish the shutdown in the background.
#[derive(Debug)]
pub struct HttpServer {
    name: &'static str,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `listener` with `handler` on a new task, under the limits in `config`; see
    /// [`serve`]. Must be called inside a tokio runtime.
    pub fn spawn<H, F>(listener: TcpListener, config: ServerConfig, handler: H) -> Self
    where
        H: Fn(Request<RequestBody>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<ResponseBody>> + Send + 'static,
    {
        let name = config.name;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, config, handler, async move {
            // A stop request, or the handle dropped: either way, stop accepting.
            let _ = stopped.changed().await;
        }));
        Self {
            name,
            stop,
            task: Some(task),
        }
    }

    /// Stops accepting connections, lets requests in progress finish (up to the
    /// configured [`shutdown_timeout`](ServerConfig::shutdown_timeout)), closes idle
    /// connections and returns once the server and all its connections are gone.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                warn!(server = self.name, cause = %err, "HTTP server task failed");
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Serves HTTP/1.1 on `listener` with `handler` until `shutdown` completes, then shuts
/// down gracefully: the listener is closed at once, idle connections are closed, requests
/// in progress get up to [`ServerConfig::shutdown_timeout`] to finish, and whatever is
/// left is cut off, so no connection task outlives this future.
///
/// Each connection runs on its own task; at most [`ServerConfig::max_connections`] at a
/// time. The handler gets every request with its body wrapped in a [`RequestBody`] that
/// enforces the body bounds; what it answers is sent as it is.
pub async fn serve<H, F, S>(listener: TcpListener, config: ServerConfig, handler: H, shutdown: S)
where
    H: Fn(Request<RequestBody>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
    S: Future<Output = ()>,
{
    let name = config.name;
    let handler = Arc::new(handler);
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    let slots = Arc::new(Semaphore::new(config.connection_slots()));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.request_head())
        .keep_alive(true);
    let mut pause = AcceptPause::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => {
                pause.reset();
                conn
            }
            Err(err) if is_connection_error(&err) => {
                // That one connection went away before we took it; the listener is fine.
                debug!(server = name, cause = %err, "connection lost before it was accepted");
                continue;
            }
            Err(err) => {
                // Out of descriptors and the like: retrying at once would spin on the same
                // error while the connections that would free them cannot be served.
                let delay = pause.next_delay();
                warn!(server = name, cause = %err, pause = ?delay, "accept failed; pausing");
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(
                server = name,
                %peer,
                limit = config.max_connections,
                "at the connection limit; closing"
            );
            continue;
        };
        let handler = Arc::clone(&handler);
        let (max_body, body_timeout) = (config.max_body, config.body_read_timeout);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let answer = (*handler)(req.map(|body| RequestBody::new(body, max_body, body_timeout)));
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let io = TokioIo::new(WriteTimeout::new(stream, config.write_timeout));
        let conn = graceful.watch(http.serve_connection(io, service));
        let span = tracing::debug_span!("http_connection", server = name, %peer);
        conns.spawn(
            async move {
                if let Err(err) = conn.await {
                    debug!(cause = %err, "connection ended with an error");
                }
                drop(slot);
            }
            .instrument(span),
        );
    }
    // New connections are refused from here on.
    drop(listener);
    if tokio::time::timeout(config.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        debug!(
            server = name,
            after = ?config.shutdown_timeout,
            "stopped with requests still in progress; cutting them off"
        );
    }
    conns.shutdown().await;
}

/// Errors that concern one incoming connection (it was reset or aborted while it waited
/// in the backlog), not the listener: the next accept may succeed at once.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The pause after consecutive accept errors: 100 ms (what the servers this crate replaced
/// waited every time), doubling up to 2 s, back to 100 ms after an accept succeeds. A
/// descriptor shortage lasts until connections close, which takes at least a request's
/// time; the growth keeps a long one from filling the log ten times a second.
#[derive(Debug, Default)]
struct AcceptPause {
    failures: u32,
}

impl AcceptPause {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    fn next_delay(&mut self) -> Duration {
        // 2^5 × 100 ms is past the cap already; the bound keeps the shift small.
        let delay = Self::FIRST
            .saturating_mul(1 << self.failures.min(5))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests;
