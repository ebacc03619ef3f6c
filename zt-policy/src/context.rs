//! What the edge knows about a flow when it asks for a decision.
//!
//! The context borrows everything: the edge keeps one [`Identity`] and one [`Device`] per
//! client session and fills a [`FlowContext`] per flow with a few copies and pointers, no
//! allocation.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

/// Transport protocol of a flow (`net.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetProtocol {
    /// TCP (`"tcp"`).
    Tcp,
    /// UDP (`"udp"`).
    Udp,
}

impl NetProtocol {
    /// The name expressions compare with.
    pub fn as_str(self) -> &'static str {
        match self {
            NetProtocol::Tcp => "tcp",
            NetProtocol::Udp => "udp",
        }
    }
}

impl fmt::Display for NetProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated user of a session (`identity.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `identity.id`.
    pub id: String,
    /// `identity.email`.
    pub email: String,
    /// `identity.groups`: the operator's groups for the user and, for a device enrolled
    /// through an identity provider, the provider's groups at sign-in.
    pub groups: Vec<String>,
    /// `identity.idp`: the name of the identity provider the device signed in through;
    /// `None` for devices enrolled with `zt user add`.
    pub idp: Option<String>,
}

/// The device of a session (`device.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    /// `device.id`.
    pub id: String,
    /// Posture check results by check name (`device.posture.<name>`); a check not listed
    /// reads as false.
    pub posture: HashMap<String, bool>,
}

/// One flow, as the policy sees it.
///
/// ```
/// use zt_policy::{FlowContext, NetProtocol};
///
/// let ctx = FlowContext::new(
///     "192.0.2.10".parse().unwrap(),
///     "198.51.100.101".parse().unwrap(),
///     443,
///     NetProtocol::Tcp,
/// );
/// assert!(ctx.identity.is_none());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FlowContext<'a> {
    /// `net.src.ip` and `http.conn.src_ip`: the client's address as the edge sees it.
    pub src_ip: IpAddr,
    /// `net.dst.ip` and `http.conn.dst_ip`: the private destination.
    pub dst_ip: IpAddr,
    /// `net.dst.port`.
    pub dst_port: u16,
    /// `net.protocol`.
    pub protocol: NetProtocol,
    /// `net.vnet`: the virtual network id (empty for the default network).
    pub vnet: &'a str,
    /// The session's user, if authenticated as one.
    pub identity: Option<&'a Identity>,
    /// The session's device, if known.
    pub device: Option<&'a Device>,
    /// `session.age_seconds`: time since the session authenticated.
    pub session_age_seconds: Option<u64>,
    /// `net.sni`: the TLS server name from the first bytes (http inspect step only).
    pub sni: Option<&'a str>,
    /// The HTTP `Host` from the first bytes (http inspect step only).
    pub http_host: Option<&'a str>,
    /// `dns.fqdn`: the queried name (dns phase only).
    pub dns_fqdn: Option<&'a str>,
}

impl<'a> FlowContext<'a> {
    /// A context with the connection fields set and everything else absent.
    pub fn new(src_ip: IpAddr, dst_ip: IpAddr, dst_port: u16, protocol: NetProtocol) -> Self {
        Self {
            src_ip,
            dst_ip,
            dst_port,
            protocol,
            vnet: "",
            identity: None,
            device: None,
            session_age_seconds: None,
            sni: None,
            http_host: None,
            dns_fqdn: None,
        }
    }

    /// `http.request.host`: the SNI when the first bytes were a TLS ClientHello that had
    /// one, else the HTTP `Host`.
    pub fn request_host(&self) -> Option<&'a str> {
        self.sni.or(self.http_host)
    }

    pub(crate) fn posture(&self, check: &str) -> bool {
        self.device
            .and_then(|d| d.posture.get(check).copied())
            .unwrap_or(false)
    }
}
