//! Serving flows peer edges forward here: the peering listener's accept loop, one task per
//! peering connection and one per forwarded flow.
//!
//! A forwarded flow was decided at the client's edge, which writes its audit line; here it
//! is only opened on one of this edge's connections of its tunnel (never forwarded again,
//! so a flow crosses at most one peering hop) and spliced. The open must come from the
//! edge the connection's certificate names, for a live tunnel; with no usable connection
//! here it is refused at once (`no_connector`), so the client's edge tries another peer
//! rather than wait.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{debug, info, warn};
use zt_proto::{
    FlowStatus, FlowStatusCode, PeerConnectorInfo, PeerConnectorKind, PeerFlowAnswer, PeerFlowOpen,
    PeerFlowResponder, PeeringConnection, Protocol, ResetCode,
};

use super::flow::{open_local, OpenedFlow, Via};
use super::link::{OpenedStream, SpliceMode};
use super::peer_links::PeerLinks;
use super::shared::Shared;
use crate::audit::ConnectorKind;

/// Accepts peering connections until the endpoint closes.
pub(crate) async fn accept_loop(shared: Arc<Shared>, links: Arc<PeerLinks>) {
    while let Some(incoming) = links.accept().await {
        match incoming {
            Ok((n, conn)) => {
                info!(peer_edge = %conn.peer_edge(), peer = %conn.remote_address(), "peer edge connected");
                let shared = shared.clone();
                let links = links.clone();
                tokio::spawn(async move {
                    serve_connection(shared, conn).await;
                    links.forget_accepted(n);
                });
            }
            Err(e) => warn!(error = %e, "refused a peering connection"),
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, conn: PeeringConnection) {
    let peer = conn.peer_edge();
    while let Some(next) = conn.accept_flow().await {
        match next {
            Ok((open, responder)) => {
                tokio::spawn(serve_flow(shared.clone(), peer, open, responder));
            }
            Err(e) => {
                debug!(peer_edge = %peer, error = %e, "a forwarded open was malformed or late")
            }
        }
    }
    let reason = conn.closed().await;
    debug!(peer_edge = %peer, %reason, "peering connection closed");
}

async fn refuse(responder: PeerFlowResponder, code: FlowStatusCode, detail: String) {
    debug!(%detail, "forwarded flow refused");
    if let Err(e) = responder
        .answer(PeerFlowAnswer::refused(FlowStatus::new(code, detail)))
        .await
    {
        debug!(error = %e, "cannot send the refusal to the peer edge");
    }
}

async fn serve_flow(
    shared: Arc<Shared>,
    peer: uuid::Uuid,
    open: PeerFlowOpen,
    responder: PeerFlowResponder,
) {
    if open.from_edge != peer {
        let detail = format!(
            "the open says it comes from edge {}, but the connection is edge {peer}'s",
            open.from_edge
        );
        return refuse(responder, FlowStatusCode::Denied, detail).await;
    }
    if shared.draining.load(Ordering::Acquire) {
        let detail = format!("edge {} is draining", shared.config.edge_name);
        return refuse(responder, FlowStatusCode::Draining, detail).await;
    }
    if open.flow.protocol == Protocol::Udp {
        let detail = "UDP flows are not forwarded between edges".to_owned();
        return refuse(responder, FlowStatusCode::NoConnector, detail).await;
    }
    let tunnel = open.tunnel_id;
    if shared.registry.pick(tunnel, None, false).is_none() {
        let detail = format!(
            "edge {} holds no usable connection of tunnel {tunnel} now",
            shared.config.edge_name
        );
        return refuse(responder, FlowStatusCode::NoConnector, detail).await;
    }
    let opened: OpenedFlow = match open_local(&shared, tunnel, &open.flow).await {
        Ok(o) => o,
        Err(refusal) => {
            return refuse(
                responder,
                refusal.status.code,
                refusal.status.detail.clone(),
            )
            .await
        }
    };
    let Via::Local(conn) = &opened.via else {
        opened.abandon();
        return;
    };
    let OpenedStream::Tcp {
        stream,
        early,
        mode,
    } = opened.stream
    else {
        return;
    };
    let info = PeerConnectorInfo {
        connector_id: conn.connector_id,
        conn_index: conn.conn_index,
        kind: match conn.kind() {
            ConnectorKind::Cloudflared => PeerConnectorKind::Cloudflared,
            _ => PeerConnectorKind::Zt,
        },
        transport: conn.transport().to_owned(),
        first_fin_ends: mode == SpliceMode::FirstFinEnds,
    };
    let _in_flight = opened._in_flight;
    let mut origin = stream;
    let peer_stream = match responder.answer(PeerFlowAnswer::ok(info)).await {
        Ok(Some(s)) => s,
        Ok(None) | Err(_) => {
            origin.reset(ResetCode::CANCELLED);
            return;
        }
    };
    let (mut peer_send, mut peer_recv) = peer_stream.into_split();
    let (mut origin_send, mut origin_recv) = origin.into_split();
    if let Some(early) = early {
        if peer_send.write_chunk(early).await.is_err() {
            origin_send.reset(ResetCode::ABORTED);
            origin_recv.stop(ResetCode::ABORTED);
            return;
        }
    }
    let (up, down) = mode
        .splice(
            &mut peer_recv,
            &mut peer_send,
            &mut origin_recv,
            &mut origin_send,
        )
        .await;
    debug!(peer_edge = %peer, tunnel = %tunnel, bytes_up = up.bytes, bytes_down = down.bytes, "forwarded flow ended");
}
