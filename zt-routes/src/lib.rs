//! Route table and prefix sets for zt.
//!
//! This crate answers one question on every flow: which tunnel serves this destination
//! address in this virtual network (longest-prefix match over IPv4 and IPv6 CIDRs). The
//! same structure backs IP lists in `zt-policy` as a [`PrefixSet`].
//!
//! It knows nothing of QUIC, policy or tunnels beyond their ids.
//!
//! ```
//! use zt_routes::PrefixSet;
//!
//! let set: PrefixSet = ["198.51.100.101/32".parse().unwrap(), "2001:db8::101/128".parse().unwrap()]
//!     .into_iter()
//!     .collect();
//! assert!(set.contains("198.51.100.101".parse().unwrap()));
//! assert!(!set.contains("198.51.100.102".parse().unwrap()));
//! ```

use std::net::IpAddr;

use ipnet::IpNet;

/// A set of IPv4 and IPv6 prefixes: is this address inside any of them?
///
/// (Initial implementation: a linear scan. The route-table work replaces the internals
/// with the longest-prefix-match structure; the API stays.)
#[derive(Debug, Clone, Default)]
pub struct PrefixSet {
    nets: Vec<IpNet>,
}

impl PrefixSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a prefix (host bits are cleared). Returns `false` if it was already present.
    pub fn insert(&mut self, net: IpNet) -> bool {
        let net = net.trunc();
        if self.nets.contains(&net) {
            return false;
        }
        self.nets.push(net);
        true
    }

    /// Whether `ip` lies inside any prefix of the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Number of prefixes in the set.
    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// Whether the set has no prefixes.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

impl FromIterator<IpNet> for PrefixSet {
    fn from_iter<T: IntoIterator<Item = IpNet>>(iter: T) -> Self {
        let mut set = Self::new();
        for net in iter {
            set.insert(net);
        }
        set
    }
}
