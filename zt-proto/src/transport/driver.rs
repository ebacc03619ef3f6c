//! The one driver of every control machine, over any [`Transport`].
//!
//! [`Driver::next`] is the loop body quinn's connection driver is to quinn-proto: write what
//! the machine hands out, hand the owner the machine's next event, and otherwise wait for the
//! first of: bytes from the control stream, a command from a handle, or the machine's timer.
//! Registration (edge, connector and client alike) calls it until the machine says
//! registered or refused; a registered connection's task calls it until the connection ends.
//! Nothing about a role lives here: the edge's authenticator and the peers' outcome handling
//! are in `register`, driven by the events this loop returns.

use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Mutex};
use tracing::{debug, warn, Instrument};

use crate::control::{ControlError, EdgeControl, EdgeEvent, PeerControl, PeerEvent, PeerRole};
use crate::flow::CloseCode;
use crate::transport::carrier::Transport;
use crate::transport::error::ControlSendError;
use crate::transport::stream::{FlowRecvStream, FlowSendStream};

/// Largest control-stream read at once.
const CONTROL_READ: usize = 64 * 1024;

/// The verbs every control machine has, for the driver.
pub(crate) trait Machine: Send + 'static {
    type Event: Send + 'static;
    fn handle_input(&mut self, data: &[u8]) -> Result<(), ControlError>;
    fn handle_timeout(&mut self, now: Instant);
    fn poll_timeout(&self) -> Option<Instant>;
    fn poll_transmit(&mut self) -> Option<Bytes>;
    fn poll_event(&mut self) -> Option<Self::Event>;
}

impl Machine for EdgeControl {
    type Event = EdgeEvent;
    fn handle_input(&mut self, data: &[u8]) -> Result<(), ControlError> {
        EdgeControl::handle_input(self, data)
    }
    fn handle_timeout(&mut self, now: Instant) {
        EdgeControl::handle_timeout(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        EdgeControl::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Bytes> {
        EdgeControl::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<EdgeEvent> {
        EdgeControl::poll_event(self)
    }
}

impl<R: PeerRole> Machine for PeerControl<R> {
    type Event = PeerEvent;
    fn handle_input(&mut self, data: &[u8]) -> Result<(), ControlError> {
        PeerControl::handle_input(self, data)
    }
    fn handle_timeout(&mut self, now: Instant) {
        PeerControl::handle_timeout(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        PeerControl::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Bytes> {
        PeerControl::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<PeerEvent> {
        PeerControl::poll_event(self)
    }
}

type Command<M> = (
    Box<dyn FnOnce(&mut M) -> Result<(), ControlError> + Send>,
    oneshot::Sender<Result<(), ControlSendError>>,
);

/// How the control stream ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The peer finished or reset the stream, or the connection went.
    ReadClosed,
    /// Writing to the stream failed.
    WriteFailed,
    /// The peer broke the protocol.
    Violation(ControlError),
    /// Every handle is gone: nobody can use the connection any more.
    Abandoned,
}

/// What one turn of the loop produced.
pub(crate) enum Step<E> {
    Event(E),
    Ended(Ended),
}

/// A handle's way to act on the machine its driver owns.
pub(crate) struct ControlHandle<M: Machine> {
    commands: mpsc::UnboundedSender<Command<M>>,
    events: Mutex<mpsc::UnboundedReceiver<M::Event>>,
}

impl<M: Machine> ControlHandle<M> {
    pub(crate) async fn call(
        &self,
        f: impl FnOnce(&mut M) -> Result<(), ControlError> + Send + 'static,
    ) -> Result<(), ControlSendError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((Box::new(f), tx))
            .map_err(|_| ControlSendError::Closed)?;
        rx.await.map_err(|_| ControlSendError::Closed)?
    }

    pub(crate) async fn next_event(&self) -> Option<M::Event> {
        self.events.lock().await.recv().await
    }
}

/// A control machine and the stream it runs on.
pub(crate) struct Driver<M: Machine, T: Transport> {
    pub(crate) machine: M,
    send: FlowSendStream,
    recv: FlowRecvStream,
    transport: T,
    commands: mpsc::UnboundedReceiver<Command<M>>,
    /// Kept until [`Driver::handle`] gives it out, so registration sees no `Abandoned`.
    command_tx: Option<mpsc::UnboundedSender<Command<M>>>,
    /// A protocol violation met while queued events were still to be handed out.
    violation: Option<ControlError>,
}

impl<M: Machine, T: Transport> Driver<M, T> {
    pub(crate) fn new(
        machine: M,
        send: FlowSendStream,
        recv: FlowRecvStream,
        transport: T,
    ) -> Self {
        let (command_tx, commands) = mpsc::unbounded_channel();
        Self {
            machine,
            send,
            recv,
            transport,
            commands,
            command_tx: Some(command_tx),
            violation: None,
        }
    }

    async fn flush(&mut self) -> Result<(), Ended> {
        while let Some(bytes) = self.machine.poll_transmit() {
            self.send
                .write_chunk(bytes)
                .await
                .map_err(|_| Ended::WriteFailed)?;
        }
        Ok(())
    }

    /// Runs the loop until the machine has an event or the stream ends.
    pub(crate) async fn next(&mut self) -> Step<M::Event> {
        loop {
            if let Err(end) = self.flush().await {
                return Step::Ended(end);
            }
            if let Some(ev) = self.machine.poll_event() {
                return Step::Event(ev);
            }
            if let Some(e) = self.violation.take() {
                return Step::Ended(Ended::Violation(e));
            }
            let timer = self.machine.poll_timeout();
            tokio::select! {
                chunk = self.recv.read_up_to(CONTROL_READ) => match chunk {
                    Ok(Some(bytes)) => {
                        // Events and answers the machine queued before the violation (an
                        // edge's `malformed` refusal) still go out first.
                        if let Err(e) = self.machine.handle_input(&bytes) {
                            self.violation = Some(e);
                        }
                    }
                    Ok(None) | Err(_) => return Step::Ended(Ended::ReadClosed),
                },
                cmd = self.commands.recv() => match cmd {
                    Some((f, reply)) => {
                        // Answer only once the frame is on the stream, so a caller that
                        // closes right after (say, after unregister) does not race it.
                        let result = f(&mut self.machine).map_err(ControlSendError::from);
                        if let Err(end) = self.flush().await {
                            let _ = reply.send(Err(ControlSendError::Closed));
                            return Step::Ended(end);
                        }
                        let _ = reply.send(result);
                    }
                    None => return Step::Ended(Ended::Abandoned),
                },
                () = sleep_until(timer), if timer.is_some() => {
                    // The timer's own instant, not the clock's: a paused or coarse clock
                    // must not leave the machine short of its deadline and the loop
                    // spinning on it.
                    let at = timer.unwrap_or_else(Instant::now).max(Instant::now());
                    self.machine.handle_timeout(at);
                }
            }
        }
    }

    /// Sends what the machine still has, finishes the stream, and waits up to `linger` for
    /// the peer to read it (a refusal's answer).
    pub(crate) async fn finish(&mut self, linger: std::time::Duration) {
        let _ = self.flush().await;
        let _ = self.send.finish();
        let _ = tokio::time::timeout(linger, self.send.stopped()).await;
    }

    /// Hands out the machine's handle, and keeps `on_event` for [`Driver::spawn`].
    pub(crate) fn spawn(
        mut self,
        on_event: impl Fn(&M::Event) + Send + 'static,
    ) -> ControlHandle<M> {
        let commands = self
            .command_tx
            .take()
            .expect("a driver is spawned once, right after registration");
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let remote = self.transport.remote_address();
        let span = tracing::debug_span!("zt_control", %remote);
        tokio::spawn(
            async move {
                loop {
                    match self.next().await {
                        Step::Event(ev) => {
                            on_event(&ev);
                            // The handle may be gone; the connection still runs until closed.
                            let _ = ev_tx.send(ev);
                        }
                        Step::Ended(Ended::Violation(e)) => {
                            warn!(error = %e, %remote, "control stream protocol violation");
                            self.transport.close(
                                CloseCode::PROTOCOL_VIOLATION,
                                b"control stream protocol violation",
                            );
                            return;
                        }
                        Step::Ended(Ended::Abandoned) => {
                            self.transport.close(CloseCode::NO_ERROR, b"");
                            return;
                        }
                        Step::Ended(Ended::ReadClosed | Ended::WriteFailed) => {
                            debug!(%remote, "control stream ended");
                            return;
                        }
                    }
                }
            }
            .instrument(span),
        );
        ControlHandle {
            commands,
            events: Mutex::new(ev_rx),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
