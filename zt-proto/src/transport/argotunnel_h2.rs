//! cloudflared's HTTP/2 mode (`--protocol http2`), edge side: TLS over TCP with ALPN `h2`
//! and server name `h2.cftunnel.com`, where cloudflared is the HTTP/2 *server* and the edge
//! the client that sends it requests.
//!
//! Two kinds of request matter to a zt edge: the control stream (header
//! [`CLOUDFLARED_UPGRADE_HEADER`]` = control-stream`), whose request body carries the edge's Cap'n Proto
//! messages and whose response body cloudflared's, and one request per TCP flow (header
//! [`CLOUDFLARED_PROXY_SRC_HEADER`], `:authority` the destination), whose two bodies are the flow's two
//! directions. What a request means is the caller's business; this module only runs the
//! HTTP/2 client, bounded against a peer that misbehaves:
//!
//! - header blocks above [`MAX_HEADER_LIST`] (decoded size, so an HPACK bomb too) are refused
//!   by h2, which also caps the CONTINUATION frames of one block;
//! - SETTINGS and PING frames are answered one at a time, reading paused until the answer
//!   is written, so a flood backs up into the peer's own TCP window;
//! - no server push; a peer that resets every stream only fails the flows it resets;
//! - buffered sends per stream are bounded, and a PING every keep-alive interval without an
//!   answer within the idle timeout ends the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::transport::carrier::ConnectionLost;
use crate::transport::over_tcp::{
    client_builder, drive_client, halves, RecvState, State, TcpSessionError,
};
use crate::transport::settings::TransportSettings;
use crate::transport::stream::{FlowError, FlowStream};

/// The header whose value says what a request is: `control-stream`,
/// `update-configuration` or `websocket` (cloudflared's `Cf-Cloudflared-Proxy-Connection-Upgrade`).
pub const CLOUDFLARED_UPGRADE_HEADER: &str = "cf-cloudflared-proxy-connection-upgrade";

/// The header that makes a request a TCP flow (warp-routing); its value is the flow's source.
pub const CLOUDFLARED_PROXY_SRC_HEADER: &str = "cf-cloudflared-proxy-src";

/// The header cloudflared sets on its answers: `{"src":"origin"}` when the origin answered,
/// `{"src":"cloudflared"}` when cloudflared itself failed (with status 502).
pub const CLOUDFLARED_RESPONSE_META_HEADER: &str = "cf-cloudflared-response-meta";

/// Largest header block accepted from cloudflared. Its answers carry a status and two short
/// headers; 16 KiB leaves room and bounds what a hostile peer can make the edge decode.
pub(crate) const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Bytes of one stream the edge keeps queued for sending before a write waits.
const MAX_SEND_BUFFER: usize = 256 * 1024;

/// The HTTP/2 side of an [`crate::ArgotunnelConnection`].
pub(crate) struct Http2 {
    send: h2::client::SendRequest<Bytes>,
    pub(crate) state: Arc<State>,
    pub(crate) remote: SocketAddr,
    pub(crate) server_name: Option<String>,
}

impl std::fmt::Debug for Http2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Drop for Http2 {
    fn drop(&mut self) {
        self.state.end(quinn::ConnectionError::LocallyClosed);
    }
}

impl Http2 {
    /// Starts the HTTP/2 client over an accepted TLS connection (the caller bounds the time).
    pub(crate) async fn start<IO>(
        tls: IO,
        remote: SocketAddr,
        server_name: Option<String>,
        settings: &TransportSettings,
    ) -> Result<Self, TcpSessionError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = client_builder(settings, MAX_HEADER_LIST)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .max_local_error_reset_streams(Some(1024))
            .handshake::<_, Bytes>(tls)
            .await?;
        let state = drive_client(conn, settings, "cloudflared");
        Ok(Self {
            send,
            state,
            remote,
            server_name,
        })
    }

    async fn ready(&self) -> Result<h2::client::SendRequest<Bytes>, FlowError> {
        if let Some(lost) = self.state.lost() {
            return Err(FlowError::ConnectionLost(lost));
        }
        self.send
            .clone()
            .ready()
            .await
            .map_err(|e| FlowError::ConnectionLost(self.lost_by(&e)))
    }

    fn lost_by(&self, e: &h2::Error) -> ConnectionLost {
        self.state
            .lost()
            .unwrap_or_else(|| crate::transport::over_tcp::h2_lost(e))
    }

    /// Sends the control-stream request and returns its stream at once: the request body
    /// is the edge's direction, the response body cloudflared's (a refusal reads as a
    /// reset).
    pub(crate) async fn control_stream(&self) -> Result<FlowStream, FlowError> {
        let mut req = http::Request::new(());
        *req.uri_mut() = http::Uri::from_static("https://h2.cftunnel.com/");
        req.headers_mut().insert(
            CLOUDFLARED_UPGRADE_HEADER,
            http::HeaderValue::from_static("control-stream"),
        );
        let mut sr = self.ready().await?;
        let (resp, send) = sr
            .send_request(req, false)
            .map_err(|e| FlowError::ConnectionLost(self.lost_by(&e)))?;
        let id = u64::from(u32::from(send.stream_id()));
        let (send, recv) = halves(send, RecvState::Pending(resp), &self.state, None);
        Ok(FlowStream::new(id, send, recv))
    }

    /// Sends a request whose body stays open and waits for the response headers; the
    /// stream's halves are the two bodies. The caller bounds the wait.
    pub(crate) async fn request(
        &self,
        req: http::Request<()>,
    ) -> Result<(http::response::Parts, FlowStream), FlowError> {
        let mut sr = self.ready().await?;
        let (resp, send) = sr
            .send_request(req, false)
            .map_err(|e| FlowError::ConnectionLost(self.lost_by(&e)))?;
        let id = u64::from(u32::from(send.stream_id()));
        let resp = match resp.await {
            Ok(r) => r,
            Err(e) if e.is_reset() && e.is_remote() => {
                return Err(FlowError::Reset(crate::transport::over_tcp::reset_code(
                    e.reason().unwrap_or(h2::Reason::CANCEL),
                )))
            }
            Err(e) => return Err(FlowError::ConnectionLost(self.lost_by(&e))),
        };
        let (parts, body) = resp.into_parts();
        let (send, recv) = halves(send, RecvState::Open(body), &self.state, None);
        Ok((parts, FlowStream::new(id, send, recv)))
    }

    /// Ends the connection: its tasks stop and the TCP connection closes.
    pub(crate) fn close(&self) {
        self.state.end(quinn::ConnectionError::LocallyClosed);
    }

    /// Waits until the connection has ended, and says why.
    pub(crate) async fn closed(&self) -> ConnectionLost {
        self.state.wait_lost().await
    }
}
