//! The mutable prefix map and its compiled, read-only form.
//!
//! [`PrefixMap`] keeps each family's prefixes in a hash map keyed by (network address,
//! length): exact get, insert and remove touch one bucket, which at a million routes is one
//! cache miss where a B-tree takes four or five. Iteration sorts by (address, length) on
//! the way out — the order people read and the order the poptrie builder needs — at
//! O(n log n), paid by listings and compiles, not by edits. Its own longest-prefix match
//! probes each prefix length in use, which is fine for an admin query but not for the data
//! path; [`PrefixMap::freeze`] compiles a [`FrozenPrefixMap`] for that.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::bits::Bits;
use crate::poptrie::{Entry, Poptrie, MAX_VALUE};

/// One address family's prefixes.
#[derive(Clone)]
pub(crate) struct Family<K, V> {
    entries: HashMap<(K, u8), V>,
    /// How many prefixes of each length are present, so a match skips unused lengths.
    by_len: Vec<u32>,
}

impl<K: Bits, V> Default for Family<K, V> {
    fn default() -> Self {
        Family {
            entries: HashMap::new(),
            by_len: vec![0; usize::from(K::WIDTH) + 1],
        }
    }
}

impl<K: Bits, V: PartialEq> PartialEq for Family<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl<K: Bits, V: Eq> Eq for Family<K, V> {}

impl<K: Bits, V> Family<K, V> {
    fn insert(&mut self, addr: K, len: u8, value: V) -> Option<V> {
        let old = self.entries.insert((addr.mask(len), len), value);
        if old.is_none() {
            self.by_len[usize::from(len)] += 1;
        }
        old
    }

    fn remove(&mut self, addr: K, len: u8) -> Option<V> {
        let old = self.entries.remove(&(addr.mask(len), len));
        if old.is_some() {
            self.by_len[usize::from(len)] -= 1;
        }
        old
    }

    fn get(&self, addr: K, len: u8) -> Option<&V> {
        self.entries.get(&(addr.mask(len), len))
    }

    fn get_mut(&mut self, addr: K, len: u8) -> Option<&mut V> {
        self.entries.get_mut(&(addr.mask(len), len))
    }

    /// Every prefix covering `addr`, longest first.
    fn matches(&self, addr: K) -> impl Iterator<Item = (K, u8, &V)> + '_ {
        (0..=K::WIDTH)
            .rev()
            .filter(|&len| self.by_len[usize::from(len)] > 0)
            .filter_map(move |len| {
                let net = addr.mask(len);
                self.entries.get(&(net, len)).map(|v| (net, len, v))
            })
    }

    /// The prefixes sorted by (address, length): a prefix before those nested in it.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (K, u8, &V)> + '_ {
        let mut sorted: Vec<(K, u8, &V)> =
            self.entries.iter().map(|(&(a, l), v)| (a, l, v)).collect();
        sorted.sort_unstable_by_key(|&(a, l, _)| (a, l));
        sorted.into_iter()
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A map from IPv4 and IPv6 prefixes to values, with longest-prefix match.
///
/// Prefixes are stored with their host bits cleared (`10.1.2.3/8` is `10.0.0.0/8`).
/// Iteration is ordered: IPv4 before IPv6, then by network address, then by length, so a
/// prefix comes before the prefixes nested in it.
///
/// Lookups here probe each prefix length in use (a hash probe per length); call
/// [`freeze`](Self::freeze) for a structure that answers in a few nanoseconds.
///
/// ```
/// use zt_routes::PrefixMap;
///
/// let mut map = PrefixMap::new();
/// map.insert("10.0.0.0/8".parse().unwrap(), "wide");
/// map.insert("10.1.0.0/16".parse().unwrap(), "narrow");
/// let (net, value) = map.longest_match("10.1.2.3".parse().unwrap()).unwrap();
/// assert_eq!((net.to_string().as_str(), *value), ("10.1.0.0/16", "narrow"));
///
/// let frozen = map.freeze();
/// assert_eq!(frozen.lookup("10.2.0.1".parse().unwrap()).map(|(_, v)| *v), Some("wide"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PrefixMap<V> {
    v4: Family<u32, V>,
    v6: Family<u128, V>,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        PrefixMap {
            v4: Family::default(),
            v6: Family::default(),
        }
    }
}

impl<V> PrefixMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether the map has no prefixes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inserts `net` (host bits cleared) with `value`; returns the value it replaces.
    pub fn insert(&mut self, net: IpNet, value: V) -> Option<V> {
        match net {
            IpNet::V4(n) => self.v4.insert(n.addr().to_bits(), n.prefix_len(), value),
            IpNet::V6(n) => self.v6.insert(n.addr().to_bits(), n.prefix_len(), value),
        }
    }

    /// Removes `net` (host bits ignored); returns its value if it was present.
    pub fn remove(&mut self, net: &IpNet) -> Option<V> {
        match net {
            IpNet::V4(n) => self.v4.remove(n.addr().to_bits(), n.prefix_len()),
            IpNet::V6(n) => self.v6.remove(n.addr().to_bits(), n.prefix_len()),
        }
    }

    /// The value stored for exactly `net` (host bits ignored).
    pub fn get(&self, net: &IpNet) -> Option<&V> {
        match net {
            IpNet::V4(n) => self.v4.get(n.addr().to_bits(), n.prefix_len()),
            IpNet::V6(n) => self.v6.get(n.addr().to_bits(), n.prefix_len()),
        }
    }

    /// The value stored for exactly `net`, mutably.
    pub fn get_mut(&mut self, net: &IpNet) -> Option<&mut V> {
        match net {
            IpNet::V4(n) => self.v4.get_mut(n.addr().to_bits(), n.prefix_len()),
            IpNet::V6(n) => self.v6.get_mut(n.addr().to_bits(), n.prefix_len()),
        }
    }

    /// Whether exactly `net` is present.
    pub fn contains_key(&self, net: &IpNet) -> bool {
        self.get(net).is_some()
    }

    /// The longest prefix covering `ip`, with its value.
    pub fn longest_match(&self, ip: IpAddr) -> Option<(IpNet, &V)> {
        self.matches(ip).next()
    }

    /// Every prefix covering `ip`, longest first.
    pub fn matches(&self, ip: IpAddr) -> Box<dyn Iterator<Item = (IpNet, &V)> + '_> {
        match ip {
            IpAddr::V4(a) => Box::new(
                self.v4
                    .matches(a.to_bits())
                    .map(|(n, l, v)| (v4net(n, l), v)),
            ),
            IpAddr::V6(a) => Box::new(
                self.v6
                    .matches(a.to_bits())
                    .map(|(n, l, v)| (v6net(n, l), v)),
            ),
        }
    }

    /// All prefixes in order: IPv4 first, then by address, then by length.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &V)> + '_ {
        self.v4
            .iter()
            .map(|(n, l, v)| (v4net(n, l), v))
            .chain(self.v6.iter().map(|(n, l, v)| (v6net(n, l), v)))
    }

    /// The prefixes in the order of [`iter`](Self::iter).
    pub fn keys(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.iter().map(|(n, _)| n)
    }

    pub(crate) fn families(&self) -> (&Family<u32, V>, &Family<u128, V>) {
        (&self.v4, &self.v6)
    }

    /// Compiles the map into a read-only structure for fast lookups.
    ///
    /// Later changes to this map do not reach the frozen copy; freeze again to pick
    /// them up. Building takes time linear in the number of prefixes (well under a
    /// second for a million).
    ///
    /// # Panics
    ///
    /// If the map holds more than 2³⁰ − 1 prefixes or the compiled form would pass 4 GiB:
    /// some hundred million prefixes, far more than any route table or list.
    pub fn freeze(&self) -> FrozenPrefixMap<V>
    where
        V: Clone,
    {
        let entries: Vec<(IpNet, V)> = self.iter().map(|(n, v)| (n, v.clone())).collect();
        let (v4, v6) = compile(&self.v4, &self.v6, |i, _| i + 1);
        FrozenPrefixMap { v4, v6, entries }
    }
}

/// Compiles both families; `answer(position, value)` gives the non-zero answer of the
/// prefix at `position` in [`PrefixMap::iter`] order.
pub(crate) fn compile<V>(
    v4: &Family<u32, V>,
    v6: &Family<u128, V>,
    mut answer: impl FnMut(u32, &V) -> u32,
) -> (Poptrie<u32>, Poptrie<u128>) {
    assert!(
        v4.len() + v6.len() <= MAX_VALUE as usize,
        "a prefix map compiles at most 2^30 - 1 prefixes"
    );
    let mut position = 0u32;
    let mut next = |v: &V| {
        let a = answer(position, v);
        position += 1;
        a
    };
    let e4: Vec<Entry<u32>> = v4.iter().map(|(n, l, v)| (n, l, next(v))).collect();
    let e6: Vec<Entry<u128>> = v6.iter().map(|(n, l, v)| (n, l, next(v))).collect();
    (Poptrie::build(&e4), Poptrie::build(&e6))
}

pub(crate) fn v4net(addr: u32, len: u8) -> IpNet {
    // `len` comes from a stored `Ipv4Net`, so it is at most 32.
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from_bits(addr), len))
}

pub(crate) fn v6net(addr: u128, len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from_bits(addr), len))
}

impl<V: fmt::Debug> fmt::Debug for PrefixMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> FromIterator<(IpNet, V)> for PrefixMap<V> {
    fn from_iter<T: IntoIterator<Item = (IpNet, V)>>(iter: T) -> Self {
        let mut map = Self::new();
        map.extend(iter);
        map
    }
}

impl<V> Extend<(IpNet, V)> for PrefixMap<V> {
    fn extend<T: IntoIterator<Item = (IpNet, V)>>(&mut self, iter: T) {
        for (net, value) in iter {
            self.insert(net, value);
        }
    }
}

/// The read-only, compiled form of a [`PrefixMap`]: longest-prefix match in a few memory
/// accesses.
///
/// Built by [`PrefixMap::freeze`]. It is `Send + Sync` and never changes, so readers on
/// many threads share it (behind an `Arc`) with no locking.
#[derive(Clone)]
pub struct FrozenPrefixMap<V> {
    v4: Poptrie<u32>,
    v6: Poptrie<u128>,
    /// Answer `i` of the tries stands for `entries[i - 1]`.
    entries: Vec<(IpNet, V)>,
}

impl<V> FrozenPrefixMap<V> {
    /// The longest prefix covering `ip`, with its value.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<(IpNet, &V)> {
        match ip {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    /// [`lookup`](Self::lookup) for an IPv4 address.
    #[inline]
    pub fn lookup_v4(&self, ip: Ipv4Addr) -> Option<(IpNet, &V)> {
        self.entry(self.v4.lookup(ip.to_bits()))
    }

    /// [`lookup`](Self::lookup) for an IPv6 address.
    #[inline]
    pub fn lookup_v6(&self, ip: Ipv6Addr) -> Option<(IpNet, &V)> {
        self.entry(self.v6.lookup(ip.to_bits()))
    }

    /// The position, in [`PrefixMap::iter`] order, of the longest prefix covering `ip`.
    ///
    /// This is the trie's own 4-byte answer; it does not read the table of prefixes and
    /// values, which for a large map is one more cache miss. Callers that keep a compact
    /// side table by position (a tunnel index per route, say) use it on their hot path,
    /// then [`get_position`](Self::get_position) when they need the prefix and value.
    #[inline]
    pub fn lookup_position(&self, ip: IpAddr) -> Option<usize> {
        let answer = match ip {
            IpAddr::V4(a) => self.v4.lookup(a.to_bits()),
            IpAddr::V6(a) => self.v6.lookup(a.to_bits()),
        };
        (answer as usize).checked_sub(1)
    }

    /// The prefix and value at `position` in [`PrefixMap::iter`] order.
    pub fn get_position(&self, position: usize) -> Option<(IpNet, &V)> {
        let (net, value) = self.entries.get(position)?;
        Some((*net, value))
    }

    #[inline]
    fn entry(&self, answer: u32) -> Option<(IpNet, &V)> {
        let (net, value) = self.entries.get((answer as usize).checked_sub(1)?)?;
        Some((*net, value))
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no prefixes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes of the lookup structure alone: the tries, whose answers are 4-byte
    /// indices. The prefixes and values they point to are not counted.
    pub fn lookup_bytes(&self) -> usize {
        self.v4.heap_bytes() + self.v6.heap_bytes()
    }
}

impl<V: fmt::Debug> fmt::Debug for FrozenPrefixMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(n, v)| (n, v)))
            .finish()
    }
}
