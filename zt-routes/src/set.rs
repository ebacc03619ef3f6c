//! The prefix set: "is this address inside any of these CIDRs?"
//!
//! A [`PrefixSet`] is a [`PrefixMap`] of `()` plus a compiled trie built on the first
//! `contains` after a change and kept until the next change, so a set that is built once
//! and queried on every flow (a policy list) pays for compiling once.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::map::{compile, PrefixMap};
use crate::poptrie::Poptrie;

/// A set of IPv4 and IPv6 prefixes: is this address inside any of them?
///
/// Inserting clears host bits. [`contains`](Self::contains) answers from a compiled trie in
/// a few nanoseconds; the trie is rebuilt lazily on the first `contains` after an insert
/// or remove (linear in the size of the set), so interleaving single inserts with lookups
/// on a large set is slow — insert in bulk, then query, or keep a [`FrozenPrefixSet`].
///
/// Serialised as a list of CIDR strings.
///
/// ```
/// use zt_routes::PrefixSet;
///
/// let mut set = PrefixSet::new();
/// assert!(set.insert("10.0.0.0/8".parse().unwrap()));
/// assert!(!set.insert("10.9.9.9/8".parse().unwrap())); // same prefix once host bits go
/// assert!(set.contains("10.1.2.3".parse().unwrap()));
/// assert!(!set.contains("11.0.0.1".parse().unwrap()));
/// ```
#[derive(Clone, Default)]
pub struct PrefixSet {
    map: PrefixMap<()>,
    frozen: OnceLock<FrozenPrefixSet>,
}

impl PrefixSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a prefix (host bits are cleared). Returns `false` if it was already present.
    pub fn insert(&mut self, net: IpNet) -> bool {
        let added = self.map.insert(net, ()).is_none();
        if added {
            self.frozen = OnceLock::new();
        }
        added
    }

    /// Removes a prefix (host bits ignored). Returns `false` if it was not present.
    pub fn remove(&mut self, net: &IpNet) -> bool {
        let removed = self.map.remove(net).is_some();
        if removed {
            self.frozen = OnceLock::new();
        }
        removed
    }

    /// Whether `ip` lies inside any prefix of the set.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.frozen().contains(ip)
    }

    /// Whether exactly `net` (host bits ignored) is in the set.
    pub fn contains_net(&self, net: &IpNet) -> bool {
        self.map.contains_key(net)
    }

    /// The compiled form of the set, built now if a change made the last one stale.
    pub fn frozen(&self) -> &FrozenPrefixSet {
        self.frozen
            .get_or_init(|| FrozenPrefixSet::build(&self.map))
    }

    /// Number of prefixes in the set.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the set has no prefixes.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The prefixes in order: IPv4 first, then by address, then by length.
    pub fn iter(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.map.keys()
    }
}

impl PartialEq for PrefixSet {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl Eq for PrefixSet {}

impl fmt::Debug for PrefixSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<IpNet> for PrefixSet {
    fn from_iter<T: IntoIterator<Item = IpNet>>(iter: T) -> Self {
        let mut set = Self::new();
        set.extend(iter);
        set
    }
}

impl Extend<IpNet> for PrefixSet {
    fn extend<T: IntoIterator<Item = IpNet>>(&mut self, iter: T) {
        for net in iter {
            self.insert(net);
        }
    }
}

impl Serialize for PrefixSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for PrefixSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<IpNet>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

/// The compiled, read-only form of a [`PrefixSet`].
///
/// Immutable and `Send + Sync`: share one behind an `Arc` across threads.
#[derive(Clone, Debug)]
pub struct FrozenPrefixSet {
    v4: Poptrie<u32>,
    v6: Poptrie<u128>,
    len: usize,
}

impl FrozenPrefixSet {
    fn build(map: &PrefixMap<()>) -> Self {
        let (v4, v6) = map.families();
        // Every member answers 1, so runs of members compress to single leaves.
        let (v4, v6) = compile(v4, v6, |_, _| 1);
        FrozenPrefixSet {
            v4,
            v6,
            len: map.len(),
        }
    }

    /// Whether `ip` lies inside any prefix of the set.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.contains_v4(a),
            IpAddr::V6(a) => self.contains_v6(a),
        }
    }

    /// [`contains`](Self::contains) for an IPv4 address.
    #[inline]
    pub fn contains_v4(&self, ip: Ipv4Addr) -> bool {
        self.v4.lookup(ip.to_bits()) != 0
    }

    /// [`contains`](Self::contains) for an IPv6 address.
    #[inline]
    pub fn contains_v6(&self, ip: Ipv6Addr) -> bool {
        self.v6.lookup(ip.to_bits()) != 0
    }

    /// Number of prefixes the set was built from.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set was built from no prefixes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes of the lookup structure.
    pub fn lookup_bytes(&self) -> usize {
        self.v4.heap_bytes() + self.v6.heap_bytes()
    }
}
