//! The small typed values a connector configuration is made of.
//!
//! Each parses from the text a `config.yaml` or a command-line flag carries (`FromStr`),
//! so the YAML reader and the binary's flag parser refuse the same things with the same
//! words.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use uuid::Uuid;

/// Why a configuration value could not be parsed. The message names what was expected;
/// it never repeats a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub(crate) String);

impl ValueError {
    fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// The tunnel a connector serves: its UUID, or its name (resolved by the edge).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelRef {
    /// The tunnel's UUID, as `cloudflared tunnel list` and the credentials file show it.
    Id(Uuid),
    /// The tunnel's name.
    Name(String),
}

impl FromStr for TunnelRef {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(id) = Uuid::parse_str(s) {
            return Ok(Self::Id(id));
        }
        if s.is_empty() {
            return Err(ValueError::new(
                "empty tunnel (expected a tunnel UUID or name)",
            ));
        }
        if s.len() > 255 || s.chars().any(char::is_control) {
            return Err(ValueError::new(
                "invalid tunnel name (at most 255 printable characters)",
            ));
        }
        Ok(Self::Name(s.to_owned()))
    }
}

impl fmt::Display for TunnelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// The transport to the edge (`protocol:` / `--protocol`), with cloudflared's words.
///
/// `auto` (the default since zt/1 gained its TCP transport; it was `quic` before) starts
/// QUIC and races TLS over TCP in shortly after, so a network that drops UDP costs a
/// fraction of a second; `quic` and `tcp` force one. `http2` is cloudflared's name for its
/// TCP transport and means `tcp` here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum EdgeProtocol {
    /// QUIC, with TLS over TCP raced in after a short head start.
    #[default]
    Auto,
    /// QUIC only.
    Quic,
    /// zt/1 over TLS on TCP only (also spelt `http2`).
    Tcp,
}

impl FromStr for EdgeProtocol {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "quic" => Ok(Self::Quic),
            "tcp" | "http2" => Ok(Self::Tcp),
            "auto" => Ok(Self::Auto),
            _ => Err(ValueError::new(format!(
                "unknown protocol `{}` (expected auto, quic, tcp or http2)",
                s.trim()
            ))),
        }
    }
}

impl fmt::Display for EdgeProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Quic => "quic",
            Self::Tcp => "tcp",
            Self::Auto => "auto",
        })
    }
}

/// An edge address, `host:port`: an IPv4 address, a bracketed IPv6 address or a DNS name.
/// Names are resolved when the connector dials, so an edge can move behind its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EdgeAddr {
    host: String,
    port: u16,
}

impl EdgeAddr {
    /// The host part (an IP address without brackets, or a DNS name).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The UDP port of the edge's QUIC listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address itself when the host is an IP literal (no resolution needed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl FromStr for EdgeAddr {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = |why: &str| ValueError::new(format!("invalid edge address `{s}`: {why}"));
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or_else(|| bad("expected [IPv6]:port"))?;
            v6.parse::<Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address inside the brackets"))?;
            (v6, port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| bad("expected host:port"))?;
            if host.contains(':') {
                return Err(bad(
                    "put an IPv6 address in brackets, e.g. [2001:db8::1]:7844",
                ));
            }
            let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
            if host.is_empty() || host.len() > 253 || !host.chars().all(is_name_char) {
                return Err(bad("the host is not an IP address or DNS name"));
            }
            (host, port)
        };
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        if port == 0 {
            return Err(bad("port 0 cannot be dialled"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for EdgeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The metrics server's listen address: `host:port` with an IP host, `localhost:port`, or
/// `:port` (all IPv4 interfaces, as Go reads it).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, ValueError> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = || {
        ValueError::new(format!(
            "invalid listen address `{s}` (expected host:port, e.g. 0.0.0.0:8081)"
        ))
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let ip = match host {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => return Err(bad()),
    };
    Ok(SocketAddr::new(ip, port))
}

/// The destinations a connector may dial (`zt-allowed-destinations`): a list of CIDRs
/// (a bare address means just that address), or everything when not configured.
///
/// The edge's routes already decide which flows reach a tunnel; this list is the
/// connector's own guard, so a cluster operator can keep a connector from being used to
/// reach, say, the cloud metadata service, whatever the edge is told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationAllowList {
    // `None` allows every destination. Lists are short (a handful of cluster ranges), so a
    // linear scan costs less than building a trie.
    prefixes: Option<Vec<IpNet>>,
}

impl DestinationAllowList {
    /// Allows every destination (the default, as cloudflared does).
    pub fn allow_all() -> Self {
        Self { prefixes: None }
    }

    /// Allows only destinations inside one of `prefixes`.
    pub fn only(prefixes: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            prefixes: Some(prefixes.into_iter().map(|p| p.trunc()).collect()),
        }
    }

    /// Whether `ip` may be dialled. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is
    /// judged as the IPv4 address it is, so it cannot slip past an IPv4 list.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let Some(prefixes) = &self.prefixes else {
            return true;
        };
        let ip = canonical_ip(ip);
        prefixes.iter().any(|p| p.contains(&ip))
    }

    /// The configured prefixes, or `None` when everything is allowed.
    pub fn prefixes(&self) -> Option<&[IpNet]> {
        self.prefixes.as_deref()
    }
}

/// IPv4-mapped IPv6 addresses reach IPv4 hosts, so they are treated as those hosts.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One entry of the allow-list: a CIDR or a bare address.
pub(crate) fn parse_prefix(s: &str) -> Result<IpNet, ValueError> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(ValueError::new(format!(
        "invalid destination prefix `{s}` (expected a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or an address)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_ref() {
        assert_eq!(
            "8e343b13-a087-48ea-825f-9783931ff2a5"
                .parse::<TunnelRef>()
                .unwrap(),
            TunnelRef::Id(Uuid::parse_str("8e343b13-a087-48ea-825f-9783931ff2a5").unwrap())
        );
        assert_eq!(
            "k8s_zero_trust_tunnel".parse::<TunnelRef>().unwrap(),
            TunnelRef::Name("k8s_zero_trust_tunnel".into())
        );
        assert!("".parse::<TunnelRef>().is_err());
        assert!("a\nb".parse::<TunnelRef>().is_err());
    }

    #[test]
    fn edge_addr() {
        let a: EdgeAddr = "edge.example.com:7844".parse().unwrap();
        assert_eq!((a.host(), a.port()), ("edge.example.com", 7844));
        assert_eq!(a.socket_addr(), None);
        let b: EdgeAddr = "[2001:db8::1]:7844".parse().unwrap();
        assert_eq!(b.host(), "2001:db8::1");
        assert_eq!(b.to_string(), "[2001:db8::1]:7844");
        assert_eq!(b.socket_addr(), Some("[2001:db8::1]:7844".parse().unwrap()));
        let c: EdgeAddr = "127.0.0.1:7844".parse().unwrap();
        assert_eq!(c.socket_addr(), Some("127.0.0.1:7844".parse().unwrap()));
        for bad in [
            "edge",
            "edge:",
            "edge:0",
            "edge:70000",
            "2001:db8::1:7844",
            "[2001:db8::1]",
            "[nope]:1",
            ":7844",
            "ed ge:1",
        ] {
            assert!(bad.parse::<EdgeAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_addr() {
        assert_eq!(
            parse_listen_addr("0.0.0.0:8081").unwrap(),
            "0.0.0.0:8081".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("localhost:2000").unwrap(),
            "127.0.0.1:2000".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr(":9090").unwrap(),
            "0.0.0.0:9090".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("[::1]:1").unwrap(),
            "[::1]:1".parse().unwrap()
        );
        assert!(parse_listen_addr("example.com:80").is_err());
        assert!(parse_listen_addr("8081").is_err());
    }

    #[test]
    fn allow_list() {
        let all = DestinationAllowList::allow_all();
        assert!(all.allows("192.0.2.1".parse().unwrap()));
        let list = DestinationAllowList::only([
            parse_prefix("198.51.100.101").unwrap(),
            parse_prefix("10.1.2.3/8").unwrap(),
            parse_prefix("2001:DB8::/32").unwrap(),
        ]);
        assert!(list.allows("198.51.100.101".parse().unwrap()));
        assert!(!list.allows("198.51.100.102".parse().unwrap()));
        assert!(list.allows("10.200.0.1".parse().unwrap()));
        assert!(list.allows("2001:db8::101".parse().unwrap()));
        assert!(!list.allows("2001:db9::1".parse().unwrap()));
        assert!(list.allows("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!list.allows("::ffff:169.254.169.254".parse().unwrap()));
        assert!(parse_prefix("10.0.0.0/33").is_err());
        assert!(parse_prefix("ten").is_err());
    }

    #[test]
    fn enums() {
        assert_eq!("QUIC".parse::<EdgeProtocol>().unwrap(), EdgeProtocol::Quic);
        assert_eq!("http2".parse::<EdgeProtocol>().unwrap(), EdgeProtocol::Tcp);
        assert!("h2mux".parse::<EdgeProtocol>().is_err());
    }
}
