//! One hardened HTTP/1.1 server loop for zt's small local servers: the connector's
//! metrics and health server, the edge's `/metrics` server and the edge's admin API.
//!
//! Each of those ports may be reachable by a whole cluster, so everything a client can
//! hold is bounded, in one place rather than once per server:
//!
//! - **connections**: at most [`ServerConfig::max_connections`] are served at once; one
//!   accepted beyond that is closed at once, so a flood cannot exhaust descriptors;
//! - **the request head**: it must arrive within [`ServerConfig::header_read_timeout`]
//!   (which also bounds how long a kept-alive connection may sit idle) and fit in
//!   [`ServerConfig::max_request_head`] bytes;
//! - **the request body**: handlers read it through [`RequestBody`], which fails with a
//!   typed [`BodyError`] past [`ServerConfig::max_body`] bytes or
//!   [`ServerConfig::body_read_timeout`];
//! - **the response**: a write that makes no progress for
//!   [`ServerConfig::write_timeout`] (a client that stopped reading) ends the connection;
//! - **shutdown**: [`HttpServer::shutdown`] (or the signal given to [`serve`]) stops
//!   accepting at once, lets requests in progress finish for up to
//!   [`ServerConfig::shutdown_timeout`], closes idle connections and cuts off the rest;
//! - **accept errors** (out of descriptors, say) pause the loop, growing from 100 ms to
//!   2 s, instead of spinning on the error.
//!
//! What this crate is *not*: a router or a framework. A handler is one async function from
//! a request to a complete response ([`ResponseBody`] is a whole buffer); the servers it
//! runs answer a few fixed paths. It speaks HTTP/1.1 only, over TCP, and never installs a
//! tracing subscriber.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::Response;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use zt_http::{HttpServer, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let config = ServerConfig::new("hello").with_max_connections(8);
//! let server = HttpServer::spawn(listener, config, |_request| async {
//!     Response::new(Full::new(Bytes::from_static(b"hello\n")))
//! });
//!
//! let mut client = tokio::net::TcpStream::connect(addr).await?;
//! client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await?;
//! let mut reply = String::new();
//! client.read_to_string(&mut reply).await?;
//! assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(reply.ends_with("\r\n\r\nhello\n"));
//!
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod body;
mod config;
mod io;
mod server;

pub use body::{BodyError, RequestBody};
pub use config::{
    ServerConfig, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUEST_HEAD, DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT, MIN_REQUEST_HEAD,
};
pub use server::{serve, HttpServer, ResponseBody};
