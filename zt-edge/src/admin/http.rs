//! The HTTP side of the admin API: connections, the token check, body limits, decoding of
//! paths and queries, and JSON replies. The operations themselves are in `api`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use zt_http::{BodyError, HttpServer, RequestBody, ServerConfig};

use super::api::{self, ApiRequest, Ctx};
use super::error::ApiError;
use super::MAX_ADMIN_BODY;

/// Concurrent admin connections; the CLI opens one per command, so this is generous.
const MAX_CONNECTIONS: usize = 64;
/// A client that has not sent its request head by then is cut off.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in progress.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a request head (line and headers); admin requests carry a handful of headers.
const MAX_HEAD: usize = 16 * 1024;

/// Serves the admin API on `listener` (on its own task) with the limits above, bodies up
/// to [`MAX_ADMIN_BODY`], and zt-http's defaults for the rest: a body must arrive within
/// 10 s of the handler starting to read it, and a response write that stalls for 10 s
/// closes its connection.
pub(super) fn spawn(listener: TcpListener, ctx: Arc<Ctx>) -> HttpServer {
    let config = ServerConfig::new("admin API")
        .with_max_connections(MAX_CONNECTIONS)
        .with_header_read_timeout(HEADER_READ_TIMEOUT)
        .with_max_request_head(MAX_HEAD)
        .with_max_body(MAX_ADMIN_BODY)
        .with_shutdown_timeout(SHUTDOWN_TIMEOUT);
    HttpServer::spawn(listener, config, move |req| serve(Arc::clone(&ctx), req))
}

async fn serve(ctx: Arc<Ctx>, req: Request<RequestBody>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let result = answer(ctx, req).await;
    let (status, body) = match result {
        Ok((status, body)) => (status, body),
        Err(e) => (e.status, e.body()),
    };
    tracing::debug!(%method, %path, status = status.as_u16(), "admin request");
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_else(|_| b"{}".to_vec());
    text.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

async fn answer(ctx: Arc<Ctx>, req: Request<RequestBody>) -> api::Reply {
    authorize(&ctx, &req)?;
    if let Some(len) = req.headers().get(CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::bad_request("bad_request", "invalid Content-Length"))?;
        if len > MAX_ADMIN_BODY as u64 {
            return Err(too_large());
        }
    }
    let (parts, body) = req.into_parts();
    let segments = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_decode(s).ok_or_else(|| {
                ApiError::bad_request("bad_request", "the path is not valid percent-encoded UTF-8")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let query = parse_query(parts.uri.query().unwrap_or(""))?;
    // The server bounds the body at MAX_ADMIN_BODY bytes and its arrival in time.
    let body = body.bytes().await.map_err(|e| match e {
        BodyError::TooLarge { .. } => too_large(),
        BodyError::TimedOut { after } => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                after.as_secs()
            ),
        ),
        BodyError::Read(e) => {
            ApiError::bad_request("bad_request", format!("cannot read the request body: {e}"))
        }
        e => ApiError::bad_request("bad_request", e.to_string()),
    })?;
    let request = ApiRequest {
        method: parts.method,
        segments,
        query,
        body,
    };
    let changes = request.method != hyper::Method::GET;
    // Store transactions block (a commit waits for fsync): keep them off the runtime.
    let handler = ctx.clone();
    let reply = tokio::task::spawn_blocking(move || api::handle(&handler, &request))
        .await
        .map_err(|e| ApiError::internal(format!("the request handler failed: {e}")))?;
    if changes && reply.is_ok() {
        if let Some(applied) = &ctx.applied {
            // The store's revision after the commit; the edge applies it (or a later one)
            // when its reload has run.
            let target = ctx.state.db().revision();
            let mut applied = applied.clone();
            let _ =
                tokio::time::timeout(super::APPLY_WAIT, applied.wait_for(|r| *r >= target)).await;
        }
    }
    reply
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is larger than {MAX_ADMIN_BODY} bytes"),
    )
}

fn authorize(ctx: &Ctx, req: &Request<RequestBody>) -> Result<(), ApiError> {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        Some(token) if ctx.state.admin_token().verify(token) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin token is wrong; use the one in the edge's state directory (admin-token)",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <token>`; the token is in the edge's state directory (admin-token)",
        )),
    }
}

fn parse_query(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (percent_decode(k), percent_decode(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(ApiError::bad_request(
                    "bad_request",
                    "the query is not valid percent-encoded UTF-8",
                )),
            }
        })
        .collect()
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
pub(super) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("10.0.0.0%2F8").as_deref(),
            Some("10.0.0.0/8")
        );
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
