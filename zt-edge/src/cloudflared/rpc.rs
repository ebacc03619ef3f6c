//! The control stream: Cap'n Proto RPC messages to and from the `RegistrationServer`.
//!
//! cloudflared sends `Bootstrap`, then `Call`s on the bootstrap capability, each followed by
//! `Finish` once it has the `Return`. The edge answers the bootstrap with a capability and each
//! call with its results. This module only reads and writes those messages; it keeps no
//! question table, so a caller that drives a connection pairs questions and answers itself.

use std::net::IpAddr;
use std::time::Duration;

use capnp::message::{Builder, HeapAllocator};
use capnp::traits::ImbueMut;
use capnp_rpc::rpc_capnp::{message, return_};
use uuid::Uuid;
use zt_creds::TunnelSecret;

use super::frame::{frame_len, read_frame, write_frame, DecodeError, MAX_RPC_MESSAGE_BYTES};
use super::generated::tunnelrpc_capnp::{connection_response, registration_server};

/// Interface id of `RegistrationServer`, the edge's bootstrap capability.
pub const REGISTRATION_SERVER_ID: u64 = 0xf716_95ec_7fe8_5497;

const METHOD_REGISTER: u16 = 0;
const METHOD_UNREGISTER: u16 = 1;
const METHOD_UPDATE_CONFIG: u16 = 2;

/// One message read from a control stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum ControlMessage {
    /// The peer asks for the bootstrap capability.
    Bootstrap {
        /// The question this opens.
        question_id: u32,
    },
    /// A method call.
    Call {
        /// The question this opens; the `Return` answers it.
        question_id: u32,
        /// The call and its decoded parameters.
        call: RegistrationCall,
    },
    /// The answer to an earlier question.
    Return {
        /// The question answered.
        answer_id: u32,
        /// What it carries.
        body: ReturnBody,
    },
    /// The peer is done with the answer to a question.
    Finish {
        /// The question finished.
        question_id: u32,
    },
    /// Any other RPC message (release, resolve, abort, ...), by its schema name.
    Other {
        /// The name of the message's union member.
        kind: &'static str,
    },
}

/// A call on the control stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum RegistrationCall {
    /// `registerConnection`.
    Register(Box<RegisterConnection>),
    /// `unregisterConnection`: the connector is draining this connection.
    Unregister,
    /// `updateLocalConfiguration`: the connector's local configuration, as JSON bytes.
    UpdateLocalConfiguration {
        /// The JSON document, not parsed here.
        config: Vec<u8>,
    },
    /// A method or interface this edge does not serve.
    Unknown {
        /// Interface id of the call.
        interface_id: u64,
        /// Method ordinal.
        method_id: u16,
    },
}

/// The parameters of `registerConnection`.
#[derive(Debug)]
#[non_exhaustive]
pub struct RegisterConnection {
    /// The account tag from the credentials file.
    pub account_tag: String,
    /// The tunnel secret itself (redacted in `Debug`).
    pub tunnel_secret: TunnelSecret,
    /// The tunnel.
    pub tunnel_id: Uuid,
    /// The connection's index among the connector's HA connections.
    pub conn_index: u8,
    /// The connector's id (one per cloudflared process).
    pub client_id: Uuid,
    /// Feature names, in the order sent; compare them as a set.
    pub features: Vec<String>,
    /// cloudflared's version.
    pub version: String,
    /// `os_cpu`, e.g. `linux_amd64`.
    pub arch: String,
    /// The connector's local address, if it sent one.
    pub origin_local_ip: Option<IpAddr>,
    /// Whether an existing connection with this index should be replaced.
    pub replace_existing: bool,
    /// Cross-stream compression setting (0 off .. 3 high).
    pub compression_quality: u8,
    /// How many times the connector has tried to register before.
    pub num_previous_attempts: u8,
}

/// The edge's answer to `registerConnection`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationReply {
    /// Registered.
    Connected {
        /// The edge's id for this connection.
        uuid: Uuid,
        /// Shown by cloudflared as the location it connected to.
        location_name: String,
        /// Whether the tunnel's configuration is managed by the edge (zt: always false).
        tunnel_is_remotely_managed: bool,
    },
    /// Refused.
    Error {
        /// Shown by cloudflared.
        cause: String,
        /// How long cloudflared should wait before retrying.
        retry_after: Duration,
        /// Whether cloudflared should retry at all.
        should_retry: bool,
    },
}

/// What a `Return` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReturnBody {
    /// A capability (the answer to `Bootstrap`).
    Capability,
    /// Results with no fields (the answer to `unregisterConnection` and
    /// `updateLocalConfiguration`).
    Empty,
    /// `registerConnection`'s results. Recognised by shape: the only results struct of the
    /// `RegistrationServer` that has a pointer field.
    Registration(RegistrationReply),
    /// An exception, with its reason.
    Exception(String),
    /// Anything else (cancelled, sent elsewhere, ...).
    Other,
}

/// Decodes the first message in `bytes`: `Ok(None)` if more bytes are needed, otherwise the
/// message and the number of bytes it took.
pub fn decode_control(bytes: &[u8]) -> Result<Option<(ControlMessage, usize)>, DecodeError> {
    let Some(len) = frame_len(bytes, MAX_RPC_MESSAGE_BYTES)? else {
        return Ok(None);
    };
    let reader = read_frame(&bytes[..len], MAX_RPC_MESSAGE_BYTES)?;
    let root: message::Reader<'_> = reader.get_root()?;
    let decoded = match root.which().map_err(capnp::Error::from)? {
        message::Bootstrap(b) => ControlMessage::Bootstrap {
            question_id: b?.get_question_id(),
        },
        message::Call(call) => {
            let call = call?;
            ControlMessage::Call {
                question_id: call.get_question_id(),
                call: decode_call(call)?,
            }
        }
        message::Return(ret) => {
            let ret = ret?;
            ControlMessage::Return {
                answer_id: ret.get_answer_id(),
                body: decode_return(ret)?,
            }
        }
        message::Finish(f) => ControlMessage::Finish {
            question_id: f?.get_question_id(),
        },
        message::Unimplemented(_) => ControlMessage::Other {
            kind: "unimplemented",
        },
        message::Abort(_) => ControlMessage::Other { kind: "abort" },
        message::Resolve(_) => ControlMessage::Other { kind: "resolve" },
        message::Release(_) => ControlMessage::Other { kind: "release" },
        message::Disembargo(_) => ControlMessage::Other { kind: "disembargo" },
        _ => ControlMessage::Other {
            kind: "obsolete or three-party",
        },
    };
    Ok(Some((decoded, len)))
}

fn decode_call(
    call: capnp_rpc::rpc_capnp::call::Reader<'_>,
) -> Result<RegistrationCall, DecodeError> {
    let interface_id = call.get_interface_id();
    let method_id = call.get_method_id();
    if interface_id != REGISTRATION_SERVER_ID {
        return Ok(RegistrationCall::Unknown {
            interface_id,
            method_id,
        });
    }
    let content = call.get_params()?.get_content();
    Ok(match method_id {
        METHOD_REGISTER => {
            let params: registration_server::register_connection_params::Reader<'_> =
                content.get_as()?;
            RegistrationCall::Register(Box::new(decode_register(params)?))
        }
        METHOD_UNREGISTER => RegistrationCall::Unregister,
        METHOD_UPDATE_CONFIG => {
            let params: registration_server::update_local_configuration_params::Reader<'_> =
                content.get_as()?;
            let config = if params.has_config() {
                params.get_config()?.to_vec()
            } else {
                Vec::new()
            };
            RegistrationCall::UpdateLocalConfiguration { config }
        }
        _ => RegistrationCall::Unknown {
            interface_id,
            method_id,
        },
    })
}

fn text(
    r: capnp::Result<capnp::text::Reader<'_>>,
    field: &'static str,
) -> Result<String, DecodeError> {
    r?.to_str()
        .map(str::to_owned)
        .map_err(|_| DecodeError::InvalidField {
            field,
            reason: "not UTF-8",
        })
}

fn uuid(bytes: &[u8], field: &'static str) -> Result<Uuid, DecodeError> {
    Uuid::from_slice(bytes).map_err(|_| DecodeError::InvalidField {
        field,
        reason: "not 16 bytes",
    })
}

fn decode_register(
    params: registration_server::register_connection_params::Reader<'_>,
) -> Result<RegisterConnection, DecodeError> {
    let auth = params.get_auth()?;
    let tunnel_secret = TunnelSecret::from_bytes(auth.get_tunnel_secret()?).map_err(|_| {
        DecodeError::InvalidField {
            field: "auth.tunnelSecret",
            reason: "too short",
        }
    })?;
    let options = params.get_options()?;
    let client = options.get_client()?;
    let mut features = Vec::new();
    for feature in client.get_features()? {
        features.push(text(feature, "options.client.features")?);
    }
    let ip = options.get_origin_local_ip()?;
    let origin_local_ip = match ip.len() {
        0 => None,
        4 => <[u8; 4]>::try_from(ip).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(ip).ok().map(IpAddr::from),
        _ => {
            return Err(DecodeError::InvalidField {
                field: "options.originLocalIp",
                reason: "not 0, 4 or 16 bytes",
            })
        }
    };
    Ok(RegisterConnection {
        account_tag: text(auth.get_account_tag(), "auth.accountTag")?,
        tunnel_secret,
        tunnel_id: uuid(params.get_tunnel_id()?, "tunnelId")?,
        conn_index: params.get_conn_index(),
        client_id: uuid(client.get_client_id()?, "options.client.clientId")?,
        features,
        version: text(client.get_version(), "options.client.version")?,
        arch: text(client.get_arch(), "options.client.arch")?,
        origin_local_ip,
        replace_existing: options.get_replace_existing(),
        compression_quality: options.get_compression_quality(),
        num_previous_attempts: options.get_num_previous_attempts(),
    })
}

fn decode_return(ret: return_::Reader<'_>) -> Result<ReturnBody, DecodeError> {
    Ok(match ret.which().map_err(capnp::Error::from)? {
        return_::Results(payload) => {
            let payload = payload?;
            let content = payload.get_content();
            if content.is_null() {
                return Ok(ReturnBody::Empty);
            }
            match content.get_as::<registration_server::register_connection_results::Reader<'_>>() {
                Ok(results) if results.has_result() => {
                    ReturnBody::Registration(decode_response(results.get_result()?)?)
                }
                Ok(_) => ReturnBody::Empty,
                // Not a struct: with a capability table, it is the capability pointer a
                // bootstrap answer carries; otherwise the message is malformed.
                Err(_) if payload.has_cap_table() && !payload.get_cap_table()?.is_empty() => {
                    ReturnBody::Capability
                }
                Err(err) => return Err(err.into()),
            }
        }
        return_::Exception(e) => ReturnBody::Exception(text(e?.get_reason(), "exception.reason")?),
        _ => ReturnBody::Other,
    })
}

fn decode_response(r: connection_response::Reader<'_>) -> Result<RegistrationReply, DecodeError> {
    Ok(match r.get_result().which().map_err(capnp::Error::from)? {
        connection_response::result::Error(e) => {
            let e = e?;
            RegistrationReply::Error {
                cause: text(e.get_cause(), "error.cause")?,
                retry_after: Duration::from_nanos(u64::try_from(e.get_retry_after()).unwrap_or(0)),
                should_retry: e.get_should_retry(),
            }
        }
        connection_response::result::ConnectionDetails(d) => {
            let d = d?;
            RegistrationReply::Connected {
                uuid: uuid(d.get_uuid()?, "connectionDetails.uuid")?,
                location_name: text(d.get_location_name(), "connectionDetails.locationName")?,
                tunnel_is_remotely_managed: d.get_tunnel_is_remotely_managed(),
            }
        }
    })
}

fn return_message(answer_id: u32) -> Builder<HeapAllocator> {
    let mut msg = Builder::new_default();
    let mut ret = msg.init_root::<message::Builder<'_>>().init_return();
    ret.set_answer_id(answer_id);
    // cloudflared's parameters carry no capabilities, so this flag means nothing here; it
    // is false as in the answers cloudflared's own RPC server code writes (go-capnp), so
    // that the edge's answers are byte for byte the reference edge's.
    ret.set_release_param_caps(false);
    msg
}

/// Encodes the edge's answer to `Bootstrap`: the `RegistrationServer` capability, exported
/// by the edge as export id 0.
pub fn encode_bootstrap_return(answer_id: u32) -> Vec<u8> {
    let mut msg = return_message(answer_id);
    let mut caps = Vec::new();
    {
        let root = msg.get_root::<message::Builder<'_>>();
        if let Ok(message::Which::Return(Ok(ret))) = root
            .map(|r| r.which())
            .and_then(|w| w.map_err(capnp::Error::from))
        {
            let mut payload = ret.init_results();
            let mut content = payload.reborrow().init_content();
            content.imbue_mut(&mut caps);
            let client: registration_server::Client = capnp_rpc::new_client(Placeholder);
            content.set_as_capability(client.client.hook);
            payload.init_cap_table(1).get(0).set_sender_hosted(0);
        }
    }
    write_frame(&msg)
}

/// Stands in for the edge's `RegistrationServer` while the bootstrap answer is written: the
/// encoder needs a capability object to place the pointer, never one that is called.
struct Placeholder;
impl registration_server::Server for Placeholder {}

/// Encodes the edge's answer to a call with no results (`unregisterConnection`,
/// `updateLocalConfiguration`).
pub fn encode_empty_return(answer_id: u32) -> Vec<u8> {
    let mut msg = return_message(answer_id);
    set_results(&mut msg, |content| {
        content.init_as::<registration_server::unregister_connection_results::Builder<'_>>();
    });
    write_frame(&msg)
}

/// Encodes an exception as the answer to a call this edge does not serve (an unknown
/// method or interface), so the caller's promise fails instead of waiting forever.
pub fn encode_exception_return(answer_id: u32, reason: &str) -> Vec<u8> {
    let mut msg = return_message(answer_id);
    if let Ok(root) = msg.get_root::<message::Builder<'_>>() {
        if let Ok(message::Which::Return(Ok(ret))) = root.which() {
            let mut e = ret.init_exception();
            e.set_reason(reason);
            e.set_type(capnp_rpc::rpc_capnp::exception::Type::Unimplemented);
        }
    }
    write_frame(&msg)
}

/// Encodes the edge's answer to `registerConnection`.
pub fn encode_register_return(answer_id: u32, reply: &RegistrationReply) -> Vec<u8> {
    let mut msg = return_message(answer_id);
    set_results(&mut msg, |content| {
        let results =
            content.init_as::<registration_server::register_connection_results::Builder<'_>>();
        let result = results.init_result().init_result();
        match reply {
            RegistrationReply::Connected {
                uuid,
                location_name,
                tunnel_is_remotely_managed,
            } => {
                let mut d = result.init_connection_details();
                d.set_uuid(uuid.as_bytes());
                d.set_location_name(location_name.as_str());
                d.set_tunnel_is_remotely_managed(*tunnel_is_remotely_managed);
            }
            RegistrationReply::Error {
                cause,
                retry_after,
                should_retry,
            } => {
                let mut e = result.init_error();
                e.set_cause(cause.as_str());
                e.set_retry_after(i64::try_from(retry_after.as_nanos()).unwrap_or(i64::MAX));
                e.set_should_retry(*should_retry);
            }
        }
    });
    write_frame(&msg)
}

fn set_results(
    msg: &mut Builder<HeapAllocator>,
    fill: impl FnOnce(capnp::any_pointer::Builder<'_>),
) {
    if let Ok(root) = msg.get_root::<message::Builder<'_>>() {
        if let Ok(message::Which::Return(Ok(ret))) = root.which() {
            let mut payload = ret.init_results();
            fill(payload.reborrow().init_content());
            // An empty capability table rather than none, as go-capnp writes it.
            payload.init_cap_table(0);
        }
    }
}
