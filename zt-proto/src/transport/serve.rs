//! The served side of flows: one acceptor task per connection takes each stream the peer
//! opens and reads its header on its own task (bounded in size by the limits and in time by
//! the header timeout, with the I/O-free [`FlowAcceptor`]), so a slow or hostile opener
//! cannot delay other flows. The application answers each request with a [`FlowResponder`].

use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::{mpsc, Mutex};
use tracing::{debug, warn, Instrument};

use crate::flow::{FlowHeader, FlowStatus, ResetCode, FLOW_STATUS_PREFIX_LEN};
use crate::open::FlowAcceptor;
use crate::transport::allowance::StreamAllowance;
use crate::transport::carrier::Transport;
use crate::transport::datagrams::UdpFlow;
use crate::transport::error::RespondError;
use crate::transport::shared::Shared;
use crate::transport::stream::{FlowError, FlowRecvStream, FlowSendStream, FlowStream};

/// How many served flow requests wait for the application before header readers pause.
const ACCEPT_QUEUE: usize = 256;

/// The answer to a served flow request. Dropping it unanswered resets the stream with
/// [`ResetCode::REFUSED`].
#[derive(Debug)]
pub struct FlowResponder<T: Transport = crate::transport::carrier::Carrier> {
    flow_id: u64,
    streams: Option<(FlowSendStream, FlowRecvStream)>,
    shared: Arc<Shared<T>>,
}

impl<T: Transport> FlowResponder<T> {
    /// The flow's id.
    pub fn flow_id(&self) -> u64 {
        self.flow_id
    }

    /// Answers `ok` and hands back the flow's byte stream.
    pub async fn accept(mut self) -> Result<FlowStream, RespondError> {
        let Some((mut send, recv)) = self.streams.take() else {
            return Err(RespondError::Stream(FlowError::Closed));
        };
        let mut wire = BytesMut::with_capacity(FLOW_STATUS_PREFIX_LEN);
        FlowStatus::ok().encode(&mut wire)?;
        send.write_chunk(wire.freeze()).await?;
        Ok(FlowStream::new(self.flow_id, send, recv))
    }

    /// Answers `ok` to a UDP flow's request and hands back the flow, whose datagrams are
    /// routed to it from now on.
    pub async fn accept_udp(self) -> Result<UdpFlow<T>, RespondError> {
        let shared = self.shared.clone();
        let flow_id = self.flow_id;
        // Registered before the status goes out, so no early datagram is lost.
        let rx = shared.register_udp(flow_id);
        match self.accept().await {
            Ok(stream) => Ok(UdpFlow::new(flow_id, stream, rx, shared)),
            Err(e) => {
                shared.udp_flows().remove(&flow_id);
                Err(e)
            }
        }
    }

    /// Answers with an error status and ends the flow.
    pub async fn reject(mut self, status: FlowStatus) -> Result<(), RespondError> {
        let Some((mut send, _recv)) = self.streams.take() else {
            return Err(RespondError::Stream(FlowError::Closed));
        };
        let mut wire = BytesMut::new();
        status.encode(&mut wire)?;
        send.write_chunk(wire.freeze()).await?;
        let _ = send.finish();
        Ok(())
    }
}

impl<T: Transport> Drop for FlowResponder<T> {
    fn drop(&mut self) {
        if let Some((mut send, mut recv)) = self.streams.take() {
            send.reset(ResetCode::REFUSED);
            recv.stop(ResetCode::REFUSED);
        }
    }
}

/// A served flow: its header and the responder that answers it.
pub type FlowRequest<T = crate::transport::carrier::Carrier> = (FlowHeader, FlowResponder<T>);

/// Starts the task that accepts flow streams and reads their headers.
pub(crate) fn spawn_acceptor<T: Transport>(
    shared: Arc<Shared<T>>,
) -> Mutex<mpsc::Receiver<FlowRequest<T>>> {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    let span = tracing::debug_span!("zt_flows", remote = %shared.transport.remote_address());
    tokio::spawn(
        async move {
            let settings = &shared.settings;
            let allowance = StreamAllowance::new(
                shared.transport.initial_bi_streams(settings),
                settings.max_concurrent_bidi_streams,
            );
            while let Ok((send, mut recv)) = shared.transport.accept_bi().await {
                let (slot, raised) = allowance.admit();
                if let Some(n) = raised {
                    debug!(streams = n, "peer's stream allowance raised");
                    shared.transport.set_max_concurrent_bi_streams(n);
                }
                recv.hold_slot(slot);
                let tx = tx.clone();
                let shared = shared.clone();
                tokio::spawn(
                    async move {
                        if let Some(req) = read_request(&shared, send, recv).await {
                            // The application stopped accepting: the responder's drop
                            // refuses it.
                            let _ = tx.send(req).await;
                        }
                    }
                    .instrument(tracing::debug_span!("zt_flow")),
                );
            }
        }
        .instrument(span),
    );
    Mutex::new(rx)
}

/// Starts the task that refuses streams the peer may not open on this connection.
pub(crate) fn spawn_stream_refuser<T: Transport>(transport: T) {
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = transport.accept_bi().await {
            warn!(remote = %transport.remote_address(), "peer opened a stream it may not open; resetting it");
            send.reset(ResetCode::PROTOCOL_ERROR);
            recv.stop(ResetCode::PROTOCOL_ERROR);
        }
    });
}

/// Why a header was not read.
enum HeaderFailure {
    /// The stream ended or failed first: nothing to answer.
    Gone,
    /// The bytes can never be a header: answer `bad_header`.
    Bad(crate::error::DecodeError),
}

async fn read_request<T: Transport>(
    shared: &Arc<Shared<T>>,
    mut send: FlowSendStream,
    mut recv: FlowRecvStream,
) -> Option<FlowRequest<T>> {
    let settings = &shared.settings;
    let mut acceptor = FlowAcceptor::new(settings.limits);
    let read = async {
        loop {
            // Never more than the header still needs: what follows is the flow's.
            let chunk = match recv.read_up_to(acceptor.wants()).await {
                Ok(Some(c)) => c,
                Ok(None) | Err(_) => return Err(HeaderFailure::Gone),
            };
            acceptor.handle_input(&chunk).map_err(HeaderFailure::Bad)?;
            if let Some(header) = acceptor.poll_header() {
                return Ok(header);
            }
        }
    };
    match tokio::time::timeout(settings.header_timeout, read).await {
        Ok(Ok(header)) => {
            let responder = FlowResponder {
                flow_id: header.flow_id,
                streams: Some((send, recv)),
                shared: shared.clone(),
            };
            Some((header, responder))
        }
        Ok(Err(HeaderFailure::Bad(e))) => {
            warn!(error = %e, "refusing flow with a bad header");
            let mut wire = BytesMut::new();
            if FlowAcceptor::bad_header_status(&e)
                .encode(&mut wire)
                .is_ok()
            {
                let _ = send.write_chunk(wire.freeze()).await;
            }
            let _ = send.finish();
            recv.stop(ResetCode::BAD_HEADER);
            None
        }
        Ok(Err(HeaderFailure::Gone)) => None,
        Err(_) => {
            debug!("flow header not received in time; resetting the stream");
            send.reset(ResetCode::BAD_HEADER);
            recv.stop(ResetCode::BAD_HEADER);
            None
        }
    }
}
