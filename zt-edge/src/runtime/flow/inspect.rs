//! The inspect stage: the http phase. An `off` rule that matches on the connection fields
//! passes the bytes through untouched without waiting for any; otherwise, when some rule
//! inspects, the client's first bytes are read (bounded in size and time) for a TLS server
//! name or an HTTP `Host`, and the `allow`/`block` rules decide. Bytes read for the decision
//! are handed on to be forwarded before anything else, never lost.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use zt_policy::{CompiledPolicy, FlowContext};
use zt_proto::FlowRecvStream;

use super::super::config::FirstBytes;
use super::super::sniff::{sniff, Sniffed};
use super::decide::FlowInput;
use super::record::note_decision;
use crate::audit::FlowRecord;

/// What the http phase let through.
#[derive(Default)]
pub(super) struct Inspected {
    /// The client's bytes read for the decision, to forward first.
    pub(super) prefix: Vec<Bytes>,
    /// Whether the client finished its side while they were read.
    pub(super) client_finished: bool,
}

/// Whether the flow may go on, and with which bytes already read.
pub(super) enum Verdict {
    Pass(Inspected),
    Block,
}

/// Runs the http phase of a TCP flow on `input`, reading from the client when a rule needs
/// its first bytes.
pub(super) async fn inspect(
    policy: &CompiledPolicy,
    input: &FlowInput,
    limits: FirstBytes,
    client: &mut FlowRecvStream,
    rec: &mut FlowRecord,
) -> Verdict {
    let ctx = input.context();
    if let Some(off) = policy.http_off(&ctx) {
        note_decision(rec, &off);
        return Verdict::Pass(Inspected::default());
    }
    if !policy.inspects_http() {
        return Verdict::Pass(Inspected::default());
    }
    let (prefix, sniffed, client_finished) =
        read_first_bytes(client, limits.max_bytes, limits.timeout).await;
    let (sni, host) = match &sniffed {
        Sniffed::Tls(sni) => (sni.as_deref(), None),
        Sniffed::Http(host) => (None, host.as_deref()),
        Sniffed::Other | Sniffed::NeedMore => (None, None),
    };
    let ctx = FlowContext {
        sni,
        http_host: host,
        ..ctx
    };
    let decision = policy.http_inspect(&ctx);
    if !decision.is_default() || !decision.permits() {
        note_decision(rec, &decision);
    }
    if decision.permits() {
        Verdict::Pass(Inspected {
            prefix,
            client_finished,
        })
    } else {
        Verdict::Block
    }
}

/// The first bytes of the client's flow, read until they name a host, the size bound is
/// reached, the time bound passes, or the client finishes its side.
async fn read_first_bytes(
    recv: &mut FlowRecvStream,
    max: usize,
    timeout: Duration,
) -> (Vec<Bytes>, Sniffed, bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunks = Vec::new();
    let mut seen = BytesMut::new();
    loop {
        let verdict = sniff(&seen);
        if verdict != Sniffed::NeedMore || seen.len() >= max {
            return (chunks, verdict, false);
        }
        match tokio::time::timeout_at(deadline, recv.read_chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let room = max.saturating_sub(seen.len());
                seen.extend_from_slice(&chunk[..chunk.len().min(room)]);
                chunks.push(chunk);
            }
            Ok(Ok(None)) => return (chunks, sniff(&seen), true),
            // A reset or lost connection shows again in the relay that follows.
            Ok(Err(_)) | Err(_) => return (chunks, sniff(&seen), false),
        }
    }
}
