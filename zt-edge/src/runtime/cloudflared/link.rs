//! A registered cloudflared connection as a link the flow pipeline opens flows on. Over QUIC:
//! the preamble and `ConnectRequest` out, cloudflared's `ConnectResponse` back (it answers
//! once it has dialled the origin). Over HTTP/2: a request with `Cf-Cloudflared-Proxy-Src`
//! whose `:authority` is the destination, answered `200` once the origin is dialled or
//! `502` when it cannot be. Then cloudflared's splice, which ends the whole flow at the
//! first FIN from either side. Nothing here knows the registry or the runtime.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::warn;
use uuid::Uuid;
use zt_proto::{
    ArgotunnelConnection, ArgotunnelProtocol, FlowHeader, FlowRecvStream, FlowSendStream,
    FlowStatus, FlowStatusCode, FlowStream, OpenError, Protocol, RelayEnd, RelayOutcome, ResetCode,
};

use crate::cloudflared::{
    decode_connect_response, encode_connect_request, ConnectRequest, ConnectionType,
    MAX_FLOW_HEADER_BYTES,
};

/// A registered cloudflared connection, as the registry holds it.
pub(crate) struct CloudflaredLink {
    pub(crate) conn: ArgotunnelConnection,
    pub(crate) connection_id: Uuid,
}

/// Maps cloudflared's dial error text to the client's status code.
fn status_of(error: &str) -> FlowStatusCode {
    let e = error.to_ascii_lowercase();
    if e.contains("refused") {
        FlowStatusCode::ConnectRefused
    } else if e.contains("timeout") || e.contains("timed out") {
        FlowStatusCode::Timeout
    } else {
        FlowStatusCode::Unreachable
    }
}

/// Longest part of cloudflared's error text passed to the client.
const MAX_ERROR_DETAIL: usize = 200;

/// Opens a TCP flow on a cloudflared connection. Returns the stream and any payload bytes
/// that arrived with cloudflared's answer (they go to the client first).
pub(crate) async fn open_flow(
    link: &CloudflaredLink,
    header: &FlowHeader,
    answer_timeout: Duration,
) -> Result<(FlowStream, Option<Bytes>), OpenError> {
    if header.protocol == Protocol::Udp {
        return Err(OpenError::Refused(FlowStatus::new(
            FlowStatusCode::Unreachable,
            "UDP flows are not served through cloudflared connectors; use zt-connector",
        )));
    }
    if link.conn.protocol() == ArgotunnelProtocol::Http2 {
        return open_http2_flow(link, header, answer_timeout).await;
    }
    let mut stream = link.conn.open_stream().await?;
    let mut metadata = vec![("FlowID".to_owned(), Uuid::new_v4().to_string())];
    metadata.extend(header.metadata.iter().cloned());
    let request = encode_connect_request(&ConnectRequest {
        dest: header.dest.to_string(),
        connection_type: ConnectionType::Tcp,
        metadata,
    });
    stream.send_half().write_all(&request).await?;
    let read = async {
        let mut buf = BytesMut::new();
        loop {
            match decode_connect_response(&buf) {
                Ok(Some((resp, used))) => {
                    let rest = buf.split_off(used).freeze();
                    return Ok((resp, (!rest.is_empty()).then_some(rest)));
                }
                Ok(None) if buf.len() > MAX_FLOW_HEADER_BYTES + 8 => {
                    return Err(OpenError::Refused(FlowStatus::new(
                        FlowStatusCode::Internal,
                        "the cloudflared connector's flow answer is too large",
                    )))
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "invalid flow answer from a cloudflared connector");
                    return Err(OpenError::Refused(FlowStatus::new(
                        FlowStatusCode::Internal,
                        "the cloudflared connector sent an invalid flow answer",
                    )));
                }
            }
            match stream.recv_half().read_chunk().await? {
                Some(chunk) => buf.extend_from_slice(&chunk),
                None => {
                    return Err(OpenError::Refused(FlowStatus::new(
                        FlowStatusCode::Internal,
                        "the cloudflared connector closed the flow without answering",
                    )))
                }
            }
        }
    };
    let (resp, rest) = match tokio::time::timeout(answer_timeout, read).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            stream.reset(ResetCode::CANCELLED);
            return Err(e);
        }
        Err(_) => {
            stream.reset(ResetCode::CANCELLED);
            return Err(OpenError::Unanswered(answer_timeout));
        }
    };
    if !resp.error.is_empty() {
        stream.reset(ResetCode::CANCELLED);
        let detail: String = resp.error.chars().take(MAX_ERROR_DETAIL).collect();
        return Err(OpenError::Refused(FlowStatus::new(
            status_of(&resp.error),
            format!("cloudflared: {detail}"),
        )));
    }
    Ok((stream, rest))
}

/// The value of `Cf-Cloudflared-Proxy-Src` on the edge's flow requests: cloudflared only
/// needs it present (it marks a TCP flow); the client's address stays at the edge.
const PROXY_SRC: &str = "zt-edge";

/// Opens a TCP flow on a cloudflared connection in HTTP/2 mode: a `CONNECT` to the
/// destination with `Cf-Cloudflared-Proxy-Src`; `200` means the origin is dialled and the
/// two bodies are the flow, `502` that cloudflared could not dial it (HTTP/2 mode sends no
/// reason).
async fn open_http2_flow(
    link: &CloudflaredLink,
    header: &FlowHeader,
    answer_timeout: Duration,
) -> Result<(FlowStream, Option<Bytes>), OpenError> {
    let mut req = http::Request::new(());
    *req.method_mut() = http::Method::CONNECT;
    *req.uri_mut() = http::Uri::builder()
        .authority(header.dest.to_string())
        .build()
        .map_err(|_| {
            OpenError::Refused(FlowStatus::new(
                FlowStatusCode::BadHeader,
                "the destination is not a valid HTTP/2 authority",
            ))
        })?;
    req.headers_mut().insert(
        zt_proto::CLOUDFLARED_PROXY_SRC_HEADER,
        http::HeaderValue::from_static(PROXY_SRC),
    );
    let (parts, mut stream) =
        match tokio::time::timeout(answer_timeout, link.conn.request(req)).await {
            Ok(r) => r?,
            // Dropping the request resets its stream.
            Err(_) => return Err(OpenError::Unanswered(answer_timeout)),
        };
    match parts.status.as_u16() {
        200 => Ok((stream, None)),
        502 => {
            stream.reset(ResetCode::CANCELLED);
            Err(OpenError::Refused(FlowStatus::new(
                FlowStatusCode::Unreachable,
                "cloudflared: could not connect to the destination (its HTTP/2 mode gives no reason)",
            )))
        }
        status => {
            stream.reset(ResetCode::CANCELLED);
            warn!(
                status,
                "unexpected answer to a flow from a cloudflared connector"
            );
            Err(OpenError::Refused(FlowStatus::new(
                FlowStatusCode::Internal,
                format!("the cloudflared connector answered the flow with status {status}"),
            )))
        }
    }
}

/// Relays a flow to a cloudflared connector as cloudflared behaves: the client's FIN is
/// passed on (cloudflared then closes the origin connection and its side of the stream), and
/// once cloudflared has ended its direction (origin closed) it reads nothing more, so the
/// client's direction is stopped too ([`ResetCode::STOPPED`]) instead of waiting for a
/// half-close that will never be served. Returns (client → origin, origin → client).
pub(crate) async fn splice(
    client_recv: &mut FlowRecvStream,
    client_send: &mut FlowSendStream,
    origin_recv: &mut FlowRecvStream,
    origin_send: &mut FlowSendStream,
) -> (RelayOutcome, RelayOutcome) {
    let mut up = RelayOutcome {
        bytes: 0,
        end: RelayEnd::Finished,
    };
    let mut down = up.clone();
    let (mut up_open, mut down_open) = (true, true);
    while up_open || down_open {
        tokio::select! {
            chunk = client_recv.read_chunk(), if up_open => {
                if let Some(end) = forward(chunk, origin_send, client_recv, &mut up.bytes).await {
                    up.end = end;
                    up_open = false;
                }
            }
            chunk = origin_recv.read_chunk(), if down_open => {
                if let Some(end) = forward(chunk, client_send, origin_recv, &mut down.bytes).await {
                    down.end = end;
                    down_open = false;
                    if up_open {
                        client_recv.stop(ResetCode::STOPPED);
                        up.end = RelayEnd::Finished;
                        up_open = false;
                    }
                }
            }
        }
    }
    (up, down)
}

/// Forwards one read's outcome; `Some(end)` when that direction is over.
async fn forward(
    chunk: Result<Option<Bytes>, zt_proto::FlowError>,
    to: &mut FlowSendStream,
    from: &mut FlowRecvStream,
    bytes: &mut u64,
) -> Option<RelayEnd> {
    match chunk {
        Ok(Some(chunk)) => {
            let n = chunk.len() as u64;
            match to.write_chunk(chunk).await {
                Ok(()) => {
                    *bytes += n;
                    None
                }
                Err(zt_proto::FlowError::Stopped(c)) => {
                    from.stop(c);
                    Some(RelayEnd::Stopped(c))
                }
                Err(_) => {
                    from.stop(ResetCode::ABORTED);
                    Some(RelayEnd::ConnectionLost)
                }
            }
        }
        Ok(None) => {
            let _ = to.finish();
            Some(RelayEnd::Finished)
        }
        Err(zt_proto::FlowError::Reset(c)) => {
            to.reset(c);
            Some(RelayEnd::Reset(c))
        }
        Err(_) => {
            to.reset(ResetCode::ABORTED);
            Some(RelayEnd::ConnectionLost)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_errors_map_to_statuses() {
        assert_eq!(
            status_of("dial tcp 127.0.0.1:9: connect: connection refused"),
            FlowStatusCode::ConnectRefused
        );
        assert_eq!(
            status_of("dial tcp 10.0.0.1:80: i/o timeout"),
            FlowStatusCode::Timeout
        );
        assert_eq!(
            status_of("dial tcp: no route to host"),
            FlowStatusCode::Unreachable
        );
    }
}
