//! Unmodified cloudflared connectors: their registration and control stream (Cap'n Proto
//! RPC, driven with the I/O-free codec of [`crate::cloudflared`]).
//!
//! A connection (QUIC with ALPN `argotunnel`, or HTTP/2 over TLS on TCP with ALPN `h2`,
//! where the edge opens the control stream as a request) must register within the
//! registration timeout: `Bootstrap`, then `registerConnection` with the tunnel's account tag and secret.
//! The tunnel must exist, have opted in (a stored SHA-256 of its secret) and the secret must
//! hash to it, compared in constant time; every failure gets the same answer
//! (`ConnectionError`, `shouldRetry = false`) and one audit line with the true reason, and
//! counts against the source's failure budget like a failed zt proof. A registered
//! connection joins the registry beside zt connectors. `updateLocalConfiguration` is
//! acknowledged (its size is logged, never its contents: the JSON may hold origin
//! credentials); `unregisterConnection` drains the connection: no new flows, the ones in
//! flight finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, warn};
use uuid::Uuid;
use zt_proto::{Admission, ArgotunnelConnection, Authenticator, CloseCode, FlowStream, ResetCode};

use super::link::CloudflaredLink;
use crate::cloudflared::{
    decode_control, encode_bootstrap_return, encode_empty_return, encode_exception_return,
    encode_register_return, ControlMessage, RegisterConnection, RegistrationCall,
    RegistrationReply, MAX_RPC_MESSAGE_BYTES,
};
use crate::runtime::auth::EdgeAuthenticator;
use crate::runtime::registry::ConnEntry;
use crate::runtime::shared::Shared;
use crate::runtime::snapshot::Snapshot;
use crate::store::SecretSha256;

/// The cause every refused registration is told: the same for an unknown tunnel, a tunnel
/// that has not opted in and a wrong secret, so a prober learns nothing.
const REFUSED_CAUSE: &str = "unauthorized: tunnel credentials refused by this edge";

/// How long a refusing edge waits for cloudflared to read its answer before closing.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// What cloudflared is told to wait before retrying when the edge is draining or the
/// source is rate-limited; long enough not to hammer, short enough to come back soon.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Why a registration is refused, for the audit line (cloudflared is told
/// [`REFUSED_CAUSE`] whatever the reason). The secret is hashed before anything is looked
/// up, so an unknown tunnel costs the same time as a wrong secret.
fn refusal_reason(snapshot: &Snapshot, reg: &RegisterConnection) -> Result<(), &'static str> {
    let presented = SecretSha256::of(&reg.tunnel_secret);
    let Some(tunnel) = snapshot.tunnels.get(&reg.tunnel_id) else {
        return Err("cloudflared: no such tunnel, or deleted");
    };
    // Account tags are not secret; a plain comparison is fine.
    if tunnel.account_tag != reg.account_tag {
        return Err("cloudflared: wrong account tag");
    }
    let Some(verifier) = &tunnel.cloudflared else {
        return Err(
            "cloudflared: the tunnel does not accept cloudflared connectors (not opted in)",
        );
    };
    // Constant-time comparison of the digests.
    if *verifier != presented {
        return Err("cloudflared: tunnel secret does not match");
    }
    Ok(())
}

/// Serves one `argotunnel` connection until it closes: registration, then control calls,
/// while flows use it through the registry.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    auth: Arc<EdgeAuthenticator>,
    conn: ArgotunnelConnection,
) {
    let remote = conn.remote_address();
    let deadline = tokio::time::Instant::now() + shared.config.transport.register_timeout;
    let mut control = match tokio::time::timeout_at(deadline, conn.control_stream()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(remote = %remote, error = %e, "cloudflared connection lost before its control stream");
            return;
        }
        Err(_) => {
            auth.refused_cloudflared(remote, None, "cloudflared: did not register in time", false);
            conn.close(CloseCode::REGISTRATION_REFUSED, "no control stream in time");
            return;
        }
    };
    let mut driver = Driver {
        shared: &shared,
        auth: &auth,
        conn: &conn,
        remote,
        buf: BytesMut::new(),
        entry: None,
    };
    let outcome = driver.run(&mut control, deadline).await;
    if let Some(entry) = driver.entry.take() {
        shared.registry.remove(&entry);
        info!(tunnel = %entry.tunnel_id, connection = %entry.connection_id(), remote = %remote, "cloudflared connection gone");
    }
    if let Err(why) = outcome {
        debug!(remote = %remote, reason = why, "cloudflared connection ended");
    }
}

struct Driver<'a> {
    shared: &'a Arc<Shared>,
    auth: &'a EdgeAuthenticator,
    conn: &'a ArgotunnelConnection,
    remote: SocketAddr,
    buf: BytesMut,
    entry: Option<Arc<ConnEntry>>,
}

impl Driver<'_> {
    async fn run(
        &mut self,
        control: &mut FlowStream,
        register_deadline: tokio::time::Instant,
    ) -> Result<(), &'static str> {
        let mut stop = self.shared.stop.subscribe();
        loop {
            // Everything already buffered first: one read may carry several messages.
            while let Some((msg, used)) = match decode_control(&self.buf) {
                Ok(m) => m,
                Err(e) => {
                    warn!(remote = %self.remote, error = %e, "invalid message on a cloudflared control stream");
                    if self.entry.is_none() {
                        self.auth.refused_cloudflared(
                            self.remote,
                            None,
                            "cloudflared: malformed control stream",
                            true,
                        );
                    }
                    self.conn
                        .close(CloseCode::PROTOCOL_VIOLATION, "bad control stream");
                    return Err("bad control stream");
                }
            } {
                let _ = self.buf.split_to(used);
                self.handle(control, msg).await?;
            }
            // Registered, the control stream may stay quiet for the connection's life;
            // before that, registration is bounded.
            let registered = self.entry.is_some();
            let read = async {
                let read = control.recv_half().read_chunk();
                if registered {
                    Ok(read.await)
                } else {
                    tokio::time::timeout_at(register_deadline, read).await
                }
            };
            tokio::select! {
                read = read => match read {
                    Ok(Ok(Some(chunk))) => {
                        if self.buf.len() + chunk.len() > MAX_RPC_MESSAGE_BYTES + 64 {
                            self.conn.close(CloseCode::PROTOCOL_VIOLATION, "control message too large");
                            return Err("control message too large");
                        }
                        self.buf.extend_from_slice(&chunk);
                    }
                    // The control stream ended: cloudflared is going away. Keep serving
                    // the flows in flight until it closes the connection.
                    Ok(Ok(None)) | Ok(Err(_)) => {
                        let Some(entry) = &self.entry else {
                            self.conn.close(CloseCode::PROTOCOL_VIOLATION, "control stream ended before registration");
                            return Err("control stream ended before registration");
                        };
                        entry.mark_draining();
                        self.wait_closed(&mut stop).await;
                        return Ok(());
                    }
                    // Only before registration: afterwards reads are not timed.
                    Err(_) => {
                        self.auth.refused_cloudflared(self.remote, None, "cloudflared: did not register in time", false);
                        self.conn.close(CloseCode::REGISTRATION_REFUSED, "registration timed out");
                        return Err("registration timed out");
                    }
                },
                // Nothing else comes from cloudflared on its own streams: refuse extras.
                extra = self.conn.accept_stream() => match extra {
                    Ok(mut s) => s.reset(ResetCode::REFUSED),
                    Err(_) => return Ok(()),
                },
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    async fn wait_closed(&self, stop: &mut tokio::sync::watch::Receiver<bool>) {
        tokio::select! {
            _ = self.conn.closed() => {}
            _ = stop.changed() => {}
        }
    }

    async fn send(&self, control: &mut FlowStream, bytes: Vec<u8>) -> Result<(), &'static str> {
        control
            .send_half()
            .write_chunk(Bytes::from(bytes))
            .await
            .map_err(|_| "control stream closed while answering")
    }

    async fn handle(
        &mut self,
        control: &mut FlowStream,
        msg: ControlMessage,
    ) -> Result<(), &'static str> {
        match msg {
            ControlMessage::Bootstrap { question_id } => {
                self.send(control, encode_bootstrap_return(question_id))
                    .await
            }
            ControlMessage::Call { question_id, call } => match call {
                RegistrationCall::Register(reg) => self.register(control, question_id, &reg).await,
                RegistrationCall::UpdateLocalConfiguration { config } => {
                    // The JSON may hold origin credentials (ingress rules, access keys): its
                    // size only.
                    info!(remote = %self.remote, bytes = config.len(), registered = self.entry.is_some(), "cloudflared sent its local configuration");
                    self.send(control, encode_empty_return(question_id)).await
                }
                RegistrationCall::Unregister => {
                    if let Some(entry) = &self.entry {
                        info!(tunnel = %entry.tunnel_id, connection = %entry.connection_id(), "cloudflared connection draining (unregistered)");
                        entry.mark_draining();
                    }
                    self.send(control, encode_empty_return(question_id)).await
                }
                RegistrationCall::Unknown {
                    interface_id,
                    method_id,
                } => {
                    debug!(remote = %self.remote, interface_id, method_id, "unserved cloudflared call");
                    self.send(
                        control,
                        encode_exception_return(question_id, "method not served by this edge"),
                    )
                    .await
                }
            },
            ControlMessage::Other { kind: "abort" } => {
                self.conn.close(CloseCode::NO_ERROR, "aborted by peer");
                Err("peer aborted the RPC session")
            }
            // Finish, Release and answers to nothing: no state kept for them.
            _ => Ok(()),
        }
    }

    async fn register(
        &mut self,
        control: &mut FlowStream,
        question_id: u32,
        reg: &RegisterConnection,
    ) -> Result<(), &'static str> {
        if self.entry.is_some() {
            let reply = RegistrationReply::Error {
                cause: "this connection is registered already".into(),
                retry_after: Duration::ZERO,
                should_retry: false,
            };
            return self
                .send(control, encode_register_return(question_id, &reply))
                .await;
        }
        let refusal = match self.auth.admit(self.remote) {
            Admission::Admit => match refusal_reason(&self.shared.snapshot.load(), reg) {
                Ok(()) => None,
                Err(why) => {
                    self.auth
                        .refused_cloudflared(self.remote, Some(reg.tunnel_id), why, true);
                    Some(RegistrationReply::Error {
                        cause: REFUSED_CAUSE.into(),
                        retry_after: Duration::ZERO,
                        should_retry: false,
                    })
                }
            },
            Admission::RateLimited => {
                self.auth.refused_cloudflared(
                    self.remote,
                    Some(reg.tunnel_id),
                    "cloudflared: rate-limited after repeated failures",
                    false,
                );
                Some(RegistrationReply::Error {
                    cause: "too many failed registrations from this address; retry later".into(),
                    retry_after: RETRY_AFTER,
                    should_retry: true,
                })
            }
            _ => Some(RegistrationReply::Error {
                cause: "edge is draining; connect to another edge".into(),
                retry_after: RETRY_AFTER,
                should_retry: true,
            }),
        };
        if let Some(reply) = refusal {
            self.send(control, encode_register_return(question_id, &reply))
                .await?;
            let _ = control.send_half().finish();
            // Give the answer a moment to arrive; cloudflared closes on reading it.
            let _ = tokio::time::timeout(REFUSAL_LINGER, self.conn.closed()).await;
            self.conn
                .close(CloseCode::REGISTRATION_REFUSED, "registration refused");
            return Err("registration refused");
        }
        let connection_id = Uuid::new_v4();
        let reply = RegistrationReply::Connected {
            uuid: connection_id,
            location_name: self.shared.config.edge_name.clone(),
            tunnel_is_remotely_managed: false,
        };
        self.send(control, encode_register_return(question_id, &reply))
            .await?;
        // The version string is the peer's; keep the audit and table columns short.
        let version: String = format!("cloudflared {}", reg.version)
            .chars()
            .take(64)
            .collect();
        let entry = self.shared.registry.insert_cloudflared(
            CloudflaredLink {
                conn: self.conn.clone(),
                connection_id,
            },
            reg.tunnel_id,
            reg.client_id,
            reg.conn_index,
            version,
        );
        info!(tunnel = %reg.tunnel_id, connector = %reg.client_id, conn_index = reg.conn_index, connection = %connection_id, remote = %self.remote, version = %entry.version, arch = %reg.arch, protocol = self.conn.protocol().word(), "cloudflared connector registered");
        self.entry = Some(entry);
        Ok(())
    }
}
