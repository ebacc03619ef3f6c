//! Parsing networks the way people type them.
//!
//! `198.51.100.101` (a host), `198.51.100.0/24`, `2001:DB8::101/128` in either case, with
//! surrounding blanks. Host bits are kept: whether `10.0.0.1/8` is acceptable is the
//! caller's decision (the route table refuses it and suggests `10.0.0.0/8`).

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

/// Why a network did not parse. Each variant carries the input as given.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseNetworkError {
    /// Nothing but blanks.
    #[error(
        "empty network: expected an address like 198.51.100.101 or a CIDR like 198.51.100.0/24"
    )]
    Empty,
    /// The part before `/` is not an IP address.
    #[error("`{input}`: `{address}` is not an IPv4 or IPv6 address")]
    BadAddress {
        /// The whole input.
        input: String,
        /// The address part.
        address: String,
    },
    /// An IPv6 zone (`fe80::1%eth0`) names an interface, which means nothing to a route.
    #[error("`{input}`: a zone (`%...`) names a local interface and cannot be part of a route")]
    Zone {
        /// The whole input.
        input: String,
    },
    /// Nothing after the `/`.
    #[error("`{input}`: missing prefix length after `/`")]
    MissingPrefixLength {
        /// The whole input.
        input: String,
    },
    /// The prefix length is not a number within the family's width.
    #[error("`{input}`: prefix length `{len}` is not a whole number from 0 to {max}")]
    BadPrefixLength {
        /// The whole input.
        input: String,
        /// The text after `/`.
        len: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

/// Parses a network: an address (a /32 or /128 host route) or an address and prefix length.
///
/// Host bits are kept as typed; compare with [`IpNet::trunc`] to detect them.
///
/// ```
/// use zt_routes::parse_network;
///
/// assert_eq!(parse_network(" 2001:DB8::101 ").unwrap().to_string(), "2001:db8::101/128");
/// assert_eq!(parse_network("198.51.100.0/24").unwrap().to_string(), "198.51.100.0/24");
/// let err = parse_network("198.51.100.0/33").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "`198.51.100.0/33`: prefix length `33` is not a whole number from 0 to 32"
/// );
/// ```
pub fn parse_network(input: &str) -> Result<IpNet, ParseNetworkError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(ParseNetworkError::Empty);
    }
    let (address, len) = match trimmed.split_once('/') {
        Some((a, l)) => (a.trim_end(), Some(l.trim_start())),
        None => (trimmed, None),
    };
    if address.contains('%') {
        return Err(ParseNetworkError::Zone {
            input: trimmed.to_owned(),
        });
    }
    let ip: IpAddr = address.parse().map_err(|_| ParseNetworkError::BadAddress {
        input: trimmed.to_owned(),
        address: address.to_owned(),
    })?;
    let max = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let len = match len {
        None => max,
        Some("") => {
            return Err(ParseNetworkError::MissingPrefixLength {
                input: trimmed.to_owned(),
            })
        }
        Some(text) => {
            let bad = || ParseNetworkError::BadPrefixLength {
                input: trimmed.to_owned(),
                len: text.to_owned(),
                max,
            };
            // `u8::from_str` takes a leading `+`; a prefix length is digits only.
            if text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let len: u8 = text.parse().map_err(|_| bad())?;
            if len > max {
                return Err(bad());
            }
            len
        }
    };
    // Both checks above keep `len` within the family's width.
    IpNet::new(ip, len).map_err(|_| ParseNetworkError::BadPrefixLength {
        input: trimmed.to_owned(),
        len: len.to_string(),
        max,
    })
}
