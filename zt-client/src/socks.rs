//! The SOCKS5 wire format (RFC 1928), free of I/O: the method greeting, the request and
//! the reply.
//!
//! Decoders take the bytes received so far and return `Ok(None)` when more are needed,
//! `Err` when the bytes can never form a valid message, and otherwise the message with the
//! number of bytes it used (anything after belongs to the next message or, after a
//! request, to the proxied connection). Every message is bounded by its format: a greeting
//! is at most [`MAX_GREETING_LEN`] bytes and a request at most [`MAX_REQUEST_LEN`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The protocol version byte every SOCKS5 message starts with.
pub const SOCKS_VERSION: u8 = 5;
/// The "no authentication required" method.
pub const METHOD_NO_AUTH: u8 = 0x00;
/// The "no acceptable methods" answer.
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;
/// Longest greeting: version, count, 255 methods.
pub const MAX_GREETING_LEN: usize = 2 + 255;
/// Longest request: version, command, reserved, address type, a 255-byte name with its
/// length byte, port.
pub const MAX_REQUEST_LEN: usize = 4 + 1 + 255 + 2;

/// A SOCKS5 message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SocksError {
    /// The first byte is not 5 (a SOCKS4 client, or not SOCKS at all).
    #[error("SOCKS version byte is {0}, expected 5")]
    Version(u8),
    /// The greeting lists no method.
    #[error("SOCKS greeting offers no authentication method")]
    NoMethods,
    /// The request's reserved byte is not zero.
    #[error("SOCKS request reserved byte is {0}, expected 0")]
    Reserved(u8),
    /// The request's address type is not 1 (IPv4), 3 (name) or 4 (IPv6).
    #[error("SOCKS address type {0} is not supported")]
    AddressType(u8),
    /// The requested name is empty or not UTF-8 text.
    #[error("SOCKS destination name is empty or not valid text")]
    BadName,
}

impl SocksError {
    /// The reply code to send for this error, when the client got far enough to deserve
    /// a reply (a bad address type gets "address type not supported"; the rest are
    /// general failures).
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            Self::AddressType(_) => ReplyCode::AddressTypeNotSupported,
            _ => ReplyCode::GeneralFailure,
        }
    }
}

/// The client's method greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// The authentication methods the client offers.
    pub methods: Vec<u8>,
}

impl Greeting {
    /// Decodes a greeting from the front of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, SocksError> {
        let Some(&version) = buf.first() else {
            return Ok(None);
        };
        if version != SOCKS_VERSION {
            return Err(SocksError::Version(version));
        }
        let Some(&count) = buf.get(1) else {
            return Ok(None);
        };
        if count == 0 {
            return Err(SocksError::NoMethods);
        }
        let end = 2 + usize::from(count);
        match buf.get(2..end) {
            Some(methods) => Ok(Some((
                Self {
                    methods: methods.to_vec(),
                },
                end,
            ))),
            None => Ok(None),
        }
    }

    /// Whether the client accepts "no authentication".
    pub fn offers_no_auth(&self) -> bool {
        self.methods.contains(&METHOD_NO_AUTH)
    }
}

/// The server's method choice: `[5, method]`.
pub fn method_choice(method: u8) -> [u8; 2] {
    [SOCKS_VERSION, method]
}

/// What the client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Open a TCP connection (1).
    Connect,
    /// Accept one inbound TCP connection (2).
    Bind,
    /// Relay UDP datagrams (3).
    UdpAssociate,
    /// A command byte RFC 1928 does not define.
    Other(u8),
}

impl Command {
    fn from_u8(b: u8) -> Self {
        match b {
            1 => Self::Connect,
            2 => Self::Bind,
            3 => Self::UdpAssociate,
            other => Self::Other(other),
        }
    }
}

/// Where the client wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetAddr {
    /// An IPv4 or IPv6 address and port.
    Ip(SocketAddr),
    /// A host name and port, to be resolved by the proxy.
    Name(String, u16),
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Name(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

/// A SOCKS5 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// The destination.
    pub target: TargetAddr,
}

impl Request {
    /// Decodes a request from the front of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, SocksError> {
        let Some(head) = buf.get(..4) else {
            // Check what is there already, so garbage fails before more bytes arrive.
            if let Some(&v) = buf.first() {
                if v != SOCKS_VERSION {
                    return Err(SocksError::Version(v));
                }
            }
            return Ok(None);
        };
        if head[0] != SOCKS_VERSION {
            return Err(SocksError::Version(head[0]));
        }
        if head[2] != 0 {
            return Err(SocksError::Reserved(head[2]));
        }
        let command = Command::from_u8(head[1]);
        let rest = &buf[4..];
        let (ip, addr_len) = match head[3] {
            1 => {
                let Some(b) = rest.get(..4) else {
                    return Ok(None);
                };
                (Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))), 4)
            }
            4 => {
                let Some(b) = rest.get(..16) else {
                    return Ok(None);
                };
                let mut octets = [0u8; 16];
                octets.copy_from_slice(b);
                (Some(IpAddr::V6(Ipv6Addr::from(octets))), 16)
            }
            3 => {
                let Some(&len) = rest.first() else {
                    return Ok(None);
                };
                if len == 0 {
                    return Err(SocksError::BadName);
                }
                (None, 1 + usize::from(len))
            }
            other => return Err(SocksError::AddressType(other)),
        };
        let Some(port_bytes) = rest.get(addr_len..addr_len + 2) else {
            return Ok(None);
        };
        let port = u16::from_be_bytes([port_bytes[0], port_bytes[1]]);
        let target = match ip {
            Some(ip) => TargetAddr::Ip(SocketAddr::new(ip, port)),
            None => {
                let name =
                    std::str::from_utf8(&rest[1..addr_len]).map_err(|_| SocksError::BadName)?;
                // A name that is an address literal is taken as the address, as curl and
                // kubectl sometimes send IPs this way.
                match name.parse::<IpAddr>() {
                    Ok(ip) => TargetAddr::Ip(SocketAddr::new(ip, port)),
                    Err(_) => TargetAddr::Name(name.to_owned(), port),
                }
            }
        };
        Ok(Some((Self { command, target }, 4 + addr_len + 2)))
    }
}

/// A reply code (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplyCode {
    /// Succeeded (0).
    Succeeded,
    /// General SOCKS server failure (1).
    GeneralFailure,
    /// Connection not allowed by ruleset (2).
    NotAllowed,
    /// Network unreachable (3).
    NetworkUnreachable,
    /// Host unreachable (4).
    HostUnreachable,
    /// Connection refused (5).
    ConnectionRefused,
    /// TTL expired (6); used for timeouts.
    TtlExpired,
    /// Command not supported (7).
    CommandNotSupported,
    /// Address type not supported (8).
    AddressTypeNotSupported,
}

impl ReplyCode {
    /// The code's byte.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Succeeded => 0,
            Self::GeneralFailure => 1,
            Self::NotAllowed => 2,
            Self::NetworkUnreachable => 3,
            Self::HostUnreachable => 4,
            Self::ConnectionRefused => 5,
            Self::TtlExpired => 6,
            Self::CommandNotSupported => 7,
            Self::AddressTypeNotSupported => 8,
        }
    }

    /// The code for a byte, if RFC 1928 defines it.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Succeeded,
            1 => Self::GeneralFailure,
            2 => Self::NotAllowed,
            3 => Self::NetworkUnreachable,
            4 => Self::HostUnreachable,
            5 => Self::ConnectionRefused,
            6 => Self::TtlExpired,
            7 => Self::CommandNotSupported,
            8 => Self::AddressTypeNotSupported,
            _ => return None,
        })
    }
}

/// Encodes a reply with the bound address (`0.0.0.0:0` when there is none to report).
pub fn encode_reply(code: ReplyCode, bound: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(22);
    out.extend_from_slice(&[SOCKS_VERSION, code.to_u8(), 0]);
    match bound.ip() {
        IpAddr::V4(ip) => {
            out.push(1);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&bound.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_needs_all_its_methods() {
        assert_eq!(Greeting::decode(&[]), Ok(None));
        assert_eq!(Greeting::decode(&[5]), Ok(None));
        assert_eq!(Greeting::decode(&[5, 2, 0]), Ok(None));
        let (g, used) = Greeting::decode(&[5, 2, 2, 0, 9]).unwrap().unwrap();
        assert_eq!(used, 4);
        assert!(g.offers_no_auth());
        assert_eq!(Greeting::decode(&[4, 1, 0]), Err(SocksError::Version(4)));
        assert_eq!(Greeting::decode(&[5, 0]), Err(SocksError::NoMethods));
    }

    #[test]
    fn requests_of_each_address_type() {
        let v4 = [5, 1, 0, 1, 198, 51, 100, 101, 1, 187];
        let (r, used) = Request::decode(&v4).unwrap().unwrap();
        assert_eq!(used, v4.len());
        assert_eq!(r.command, Command::Connect);
        assert_eq!(
            r.target,
            TargetAddr::Ip("198.51.100.101:443".parse().unwrap())
        );
        // Every proper prefix needs more bytes.
        for n in 0..v4.len() {
            assert_eq!(Request::decode(&v4[..n]), Ok(None), "prefix {n}");
        }

        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&"2001:db8::101".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 80, 0xAA]);
        let (r, used) = Request::decode(&v6).unwrap().unwrap();
        assert_eq!(
            used,
            v6.len() - 1,
            "the trailing byte is left for the connection"
        );
        assert_eq!(
            r.target,
            TargetAddr::Ip("[2001:db8::101]:80".parse().unwrap())
        );

        let mut name = vec![5, 1, 0, 3, 9];
        name.extend_from_slice(b"localhost");
        name.extend_from_slice(&[0x1F, 0x90]);
        let (r, _) = Request::decode(&name).unwrap().unwrap();
        assert_eq!(r.target, TargetAddr::Name("localhost".into(), 8080));

        let mut literal = vec![5, 1, 0, 3, 8];
        literal.extend_from_slice(b"10.0.0.1");
        literal.extend_from_slice(&[0, 22]);
        let (r, _) = Request::decode(&literal).unwrap().unwrap();
        assert_eq!(r.target, TargetAddr::Ip("10.0.0.1:22".parse().unwrap()));
    }

    #[test]
    fn bad_requests_name_the_fault() {
        assert_eq!(
            Request::decode(&[5, 1, 0, 2, 0, 0]),
            Err(SocksError::AddressType(2))
        );
        assert_eq!(Request::decode(&[5, 1, 7, 1]), Err(SocksError::Reserved(7)));
        assert_eq!(Request::decode(&[5, 1, 0, 3, 0]), Err(SocksError::BadName));
        assert_eq!(
            Request::decode(&[5, 1, 0, 3, 2, 0xFF, 0xFE, 0, 1]),
            Err(SocksError::BadName)
        );
        assert_eq!(Request::decode(&[1]), Err(SocksError::Version(1)));
        let (r, _) = Request::decode(&[5, 2, 0, 1, 1, 2, 3, 4, 0, 1])
            .unwrap()
            .unwrap();
        assert_eq!(r.command, Command::Bind);
        assert_eq!(
            SocksError::AddressType(9).reply_code(),
            ReplyCode::AddressTypeNotSupported
        );
    }

    #[test]
    fn replies_round_trip_their_codes() {
        let r = encode_reply(ReplyCode::TtlExpired, "[::1]:1080".parse().unwrap());
        assert_eq!(r.len(), 22);
        assert_eq!(&r[..4], &[5, 6, 0, 4]);
        assert_eq!(ReplyCode::from_u8(r[1]), Some(ReplyCode::TtlExpired));
        let r = encode_reply(ReplyCode::Succeeded, "127.0.0.1:80".parse().unwrap());
        assert_eq!(r, vec![5, 0, 0, 1, 127, 0, 0, 1, 0, 80]);
        for b in 0..=8 {
            assert_eq!(ReplyCode::from_u8(b).map(ReplyCode::to_u8), Some(b));
        }
        assert_eq!(ReplyCode::from_u8(9), None);
    }
}
