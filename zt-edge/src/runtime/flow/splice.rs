//! The splice stage: the bytes of an open flow, both ways, until it ends. A TCP flow first
//! gets what was read before the splice (the connector's early payload to the client, the
//! client's inspected first bytes to the connector), then the link's splice mode carries
//! the rest; a UDP flow relays datagrams until either side ends it.

use bytes::Bytes;
use tracing::debug;
use zt_proto::{relay, FlowRecvStream, FlowSendStream, RelayEnd, RelayOutcome, ResetCode, UdpFlow};

use super::super::link::SpliceMode;
use super::inspect::Inspected;
use super::record::close_reason;
use crate::audit::{CloseReason, FlowRecord};

/// The two streams of a TCP flow, split.
pub(super) struct TcpEnds {
    pub(super) client_send: FlowSendStream,
    pub(super) client_recv: FlowRecvStream,
    pub(super) origin_send: FlowSendStream,
    pub(super) origin_recv: FlowRecvStream,
}

impl TcpEnds {
    /// Ends both streams with the given codes (client side, connector side).
    pub(super) fn reset(&mut self, client: ResetCode, origin: ResetCode) {
        self.client_send.reset(client);
        self.client_recv.stop(client);
        self.origin_send.reset(origin);
        self.origin_recv.stop(origin);
    }
}

/// Sends the connector's early payload to the client. `false` when the client is gone
/// (the connector side is reset).
pub(super) async fn send_early(
    ends: &mut TcpEnds,
    early: Option<Bytes>,
    rec: &mut FlowRecord,
) -> bool {
    let Some(early) = early else { return true };
    let n = early.len() as u64;
    if ends.client_send.write_chunk(early).await.is_err() {
        ends.origin_send.reset(ResetCode::ABORTED);
        ends.origin_recv.stop(ResetCode::ABORTED);
        rec.close_reason = CloseReason::ClientReset;
        return false;
    }
    rec.bytes_down = n;
    true
}

/// Carries a TCP flow to its end: the inspected prefix first, then both directions.
pub(super) async fn tcp(
    mut ends: TcpEnds,
    inspected: Inspected,
    mode: SpliceMode,
    rec: &mut FlowRecord,
) {
    let down_early = rec.bytes_down;
    let mut up_prefix = 0u64;
    for chunk in inspected.prefix {
        let n = chunk.len() as u64;
        if ends.origin_send.write_chunk(chunk).await.is_err() {
            ends.client_send.reset(ResetCode::ABORTED);
            ends.client_recv.stop(ResetCode::ABORTED);
            rec.bytes_up = up_prefix;
            rec.close_reason = CloseReason::OriginReset;
            return;
        }
        up_prefix += n;
    }
    let TcpEnds {
        mut client_send,
        mut client_recv,
        mut origin_send,
        mut origin_recv,
    } = ends;
    let (up, down) = if inspected.client_finished {
        let _ = origin_send.finish();
        let down = relay(&mut origin_recv, &mut client_send).await;
        (
            RelayOutcome {
                bytes: 0,
                end: RelayEnd::Finished,
            },
            down,
        )
    } else {
        mode.splice(
            &mut client_recv,
            &mut client_send,
            &mut origin_recv,
            &mut origin_send,
        )
        .await
    };
    rec.bytes_up = up_prefix + up.bytes;
    rec.bytes_down = down_early + down.bytes;
    rec.close_reason = close_reason(&up.end, &down.end);
}

/// Relays a UDP flow's datagrams both ways until either side ends it.
pub(super) async fn udp(mut client: UdpFlow, mut origin: UdpFlow, rec: &mut FlowRecord) {
    let mut up = 0u64;
    let mut down = 0u64;
    loop {
        tokio::select! {
            p = client.recv() => match p {
                Some(p) => {
                    let n = p.len() as u64;
                    match origin.send(p) {
                        Ok(()) => up += n,
                        Err(e) => debug!(error = %e, "datagram to the connector dropped"),
                    }
                }
                None => break,
            },
            p = origin.recv() => match p {
                Some(p) => {
                    let n = p.len() as u64;
                    match client.send(p) {
                        Ok(()) => down += n,
                        Err(e) => debug!(error = %e, "datagram to the client dropped"),
                    }
                }
                None => break,
            },
        }
    }
    client.close();
    origin.close();
    rec.bytes_up = up;
    rec.bytes_down = down;
    rec.close_reason = CloseReason::Completed;
}
