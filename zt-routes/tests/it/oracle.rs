//! Property tests: every lookup structure against a linear scan over the same prefixes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;
use proptest::sample::Index;
use uuid::Uuid;
use zt_routes::{NewRoute, PrefixMap, PrefixSet, RouteTable};

/// IPv4 prefixes, half anywhere and half packed under 10.0.0.0/16 so that they nest.
fn v4_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32),
        (any::<u16>(), 8u8..=32).prop_map(|(low, len)| (0x0A00_0000 | u32::from(low), len)),
    ]
    .prop_map(|(a, len)| IpNet::new(IpAddr::V4(Ipv4Addr::from_bits(a)), len).unwrap())
}

/// IPv6 prefixes, half anywhere and half packed under 2001:db8::/32.
fn v6_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u128>(), 0u8..=128),
        (any::<u64>(), 16u8..=128).prop_map(|(low, len)| {
            (
                (0x2001_0db8u128 << 96) | (u128::from(low) << 16) | u128::from(low as u16),
                len,
            )
        }),
    ]
    .prop_map(|(a, len)| IpNet::new(IpAddr::V6(Ipv6Addr::from_bits(a)), len).unwrap())
}

fn any_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![v4_net(), v6_net()]
}

/// An address: uniform, or inside one of the prefixes (chosen later by `Index`).
#[derive(Debug, Clone)]
enum Query {
    Uniform(IpAddr),
    Inside(Index, u128),
}

fn query() -> impl Strategy<Value = Query> {
    prop_oneof![
        any::<u32>().prop_map(|a| Query::Uniform(Ipv4Addr::from_bits(a).into())),
        any::<u128>().prop_map(|a| Query::Uniform(Ipv6Addr::from_bits(a).into())),
        (any::<Index>(), any::<u128>()).prop_map(|(i, h)| Query::Inside(i, h)),
    ]
}

/// An address inside `net`: its network address with random host bits.
fn inside(net: IpNet, host: u128) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let hostmask = n.hostmask().to_bits();
            Ipv4Addr::from_bits(n.network().to_bits() | (host as u32 & hostmask)).into()
        }
        IpNet::V6(n) => {
            let hostmask = n.hostmask().to_bits();
            Ipv6Addr::from_bits(n.network().to_bits() | (host & hostmask)).into()
        }
    }
}

fn resolve(q: &Query, nets: &[IpNet]) -> IpAddr {
    match q {
        Query::Uniform(ip) => *ip,
        Query::Inside(i, host) if !nets.is_empty() => inside(nets[i.index(nets.len())], *host),
        Query::Inside(_, host) => Ipv4Addr::from_bits(*host as u32).into(),
    }
}

/// The oracle: a list of (prefix, value), scanned in full.
#[derive(Default)]
struct Linear<V>(Vec<(IpNet, V)>);

impl<V: Clone> Linear<V> {
    fn insert(&mut self, net: IpNet, v: V) {
        let net = net.trunc();
        match self.0.iter_mut().find(|(n, _)| *n == net) {
            Some(slot) => slot.1 = v,
            None => self.0.push((net, v)),
        }
    }
    fn remove(&mut self, net: IpNet) -> Option<V> {
        let i = self.0.iter().position(|(n, _)| *n == net)?;
        Some(self.0.swap_remove(i).1)
    }
    /// Every covering prefix, longest first.
    fn matches(&self, ip: IpAddr) -> Vec<(IpNet, V)> {
        let mut m: Vec<_> = self
            .0
            .iter()
            .filter(|(n, _)| n.contains(&ip))
            .cloned()
            .collect();
        m.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        m
    }
    fn longest(&self, ip: IpAddr) -> Option<(IpNet, V)> {
        self.matches(ip).into_iter().next()
    }
    fn sorted_keys(&self) -> Vec<IpNet> {
        let mut k: Vec<IpNet> = self.0.iter().map(|(n, _)| *n).collect();
        k.sort_by_key(|n| match n {
            IpNet::V4(n) => (0u8, u128::from(n.addr().to_bits()), n.prefix_len()),
            IpNet::V6(n) => (1u8, n.addr().to_bits(), n.prefix_len()),
        });
        k
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// PrefixMap (mutable and frozen) and PrefixSet agree with the linear scan after
    /// random inserts (with host bits, duplicates and overlaps) and random removes.
    #[test]
    fn map_and_set_match_linear_scan(
        nets in prop::collection::vec(any_net(), 0..400),
        removes in prop::collection::vec(any::<Index>(), 0..60),
        queries in prop::collection::vec(query(), 1..96),
    ) {
        let mut map = PrefixMap::new();
        let mut oracle = Linear::default();
        for (i, net) in nets.iter().enumerate() {
            map.insert(*net, i);
            oracle.insert(*net, i);
        }
        for r in &removes {
            if nets.is_empty() { break; }
            let net = nets[r.index(nets.len())].trunc();
            prop_assert_eq!(map.remove(&net), oracle.remove(net));
        }
        prop_assert_eq!(map.len(), oracle.0.len());
        prop_assert_eq!(map.keys().collect::<Vec<_>>(), oracle.sorted_keys());
        for (net, v) in &oracle.0 {
            prop_assert_eq!(map.get(net), Some(v));
        }

        let frozen = map.freeze();
        let set: PrefixSet = map.keys().collect();
        let frozen_set = set.frozen().clone();
        let live: Vec<IpNet> = oracle.0.iter().map(|(n, _)| *n).collect();
        for q in &queries {
            let ip = resolve(q, &live);
            let want = oracle.longest(ip);
            let got = map.longest_match(ip).map(|(n, v)| (n, *v));
            prop_assert_eq!(got, want, "mutable map, {}", ip);
            let got = frozen.lookup(ip).map(|(n, v)| (n, *v));
            prop_assert_eq!(got, want, "frozen map, {}", ip);
            let got = frozen.lookup_position(ip).and_then(|p| frozen.get_position(p)).map(|(n, v)| (n, *v));
            prop_assert_eq!(got, want, "frozen map by position, {}", ip);
            prop_assert_eq!(set.contains(ip), want.is_some(), "set, {}", ip);
            prop_assert_eq!(frozen_set.contains(ip), want.is_some(), "frozen set, {}", ip);
            let all: Vec<_> = map.matches(ip).map(|(n, v)| (n, *v)).collect();
            prop_assert_eq!(all, oracle.matches(ip), "all matches, {}", ip);
        }
    }

    /// A set stays correct when inserts and lookups interleave (the lazily compiled form
    /// must never be stale).
    #[test]
    fn set_is_never_stale(
        steps in prop::collection::vec((any_net(), any::<bool>(), query()), 1..60),
    ) {
        let mut set = PrefixSet::new();
        let mut oracle = Linear::default();
        let mut seen = Vec::new();
        for (net, remove, q) in &steps {
            if *remove && !seen.is_empty() {
                let victim: IpNet = seen[seen.len() / 2];
                prop_assert_eq!(set.remove(&victim), oracle.remove(victim).is_some());
            } else {
                prop_assert_eq!(set.insert(*net), !oracle.0.iter().any(|(n, _)| *n == net.trunc()));
                oracle.insert(*net, ());
                seen.push(net.trunc());
            }
            let ip = resolve(q, &seen);
            prop_assert_eq!(set.contains(ip), oracle.longest(ip).is_some(), "{}", ip);
        }
    }

    /// RouteTable and its snapshot agree with a linear scan per virtual network, across
    /// three virtual networks with overlapping routes, after deletes by id and by network.
    #[test]
    fn route_table_and_snapshot_match_linear_scan(
        routes in prop::collection::vec((any_net(), 0usize..3), 0..200),
        deletes in prop::collection::vec((any::<Index>(), any::<bool>()), 0..40),
        queries in prop::collection::vec((query(), 0usize..3), 1..64),
    ) {
        let mut table = RouteTable::new();
        let vnets = [
            table.default_vnet(),
            table.add_vnet("blue", "").unwrap().id,
            table.add_vnet("green", "").unwrap().id,
        ];
        let mut oracle: Vec<Linear<(Uuid, Uuid)>> = (0..3).map(|_| Linear::default()).collect();
        for (net, v) in &routes {
            let net = net.trunc();
            let tunnel = Uuid::new_v4();
            match table.add(NewRoute::new(net, tunnel).in_vnet(vnets[*v])) {
                Ok(route) => {
                    prop_assert!(oracle[*v].matches(net.network()).iter().all(|(n, _)| *n != net));
                    oracle[*v].insert(net, (route.id, tunnel));
                }
                Err(zt_routes::AddRouteError::Duplicate { existing, .. }) => {
                    let have = oracle[*v].0.iter().find(|(n, _)| *n == net).map(|(_, r)| r.0);
                    prop_assert_eq!(have, Some(existing));
                }
                Err(e) => prop_assert!(false, "unexpected error {}", e),
            }
        }
        for (i, by_id) in &deletes {
            let all: Vec<(usize, IpNet, Uuid)> = oracle.iter().enumerate()
                .flat_map(|(v, o)| o.0.iter().map(move |(n, r)| (v, *n, r.0)))
                .collect();
            if all.is_empty() { break; }
            let (v, net, id) = all[i.index(all.len())];
            let deleted = if *by_id {
                table.delete(id).unwrap()
            } else {
                table.delete_network(Some(vnets[v]), net).unwrap()
            };
            prop_assert_eq!(deleted.id, id);
            oracle[v].remove(net);
        }
        prop_assert_eq!(table.len(), oracle.iter().map(|o| o.0.len()).sum::<usize>());

        let snapshot = table.snapshot();
        for (q, v) in &queries {
            let live: Vec<IpNet> = oracle[*v].0.iter().map(|(n, _)| *n).collect();
            let ip = resolve(q, &live);
            let want = oracle[*v].longest(ip);
            let got = table.lookup(vnets[*v], ip).map(|r| (r.network, (r.id, r.tunnel_id)));
            prop_assert_eq!(got, want, "table, {}", ip);
            let got = snapshot.lookup(vnets[*v], ip).map(|t| (t.network, (t.route_id, t.tunnel_id)));
            prop_assert_eq!(got, want, "snapshot, {}", ip);
            let got = snapshot.lookup_tunnel(vnets[*v], ip);
            prop_assert_eq!(got, want.map(|w| w.1 .1), "snapshot tunnel, {}", ip);
            let explained = table.explain(Some(vnets[*v]), ip).unwrap();
            let mut chain: Vec<IpNet> = explained.matched.iter().map(|r| r.network).collect();
            chain.extend(explained.also_covering.iter().map(|r| r.network));
            let want_chain: Vec<IpNet> = oracle[*v].matches(ip).into_iter().map(|(n, _)| n).collect();
            prop_assert_eq!(chain, want_chain, "explain, {}", ip);
        }
    }
}

/// Large enough for the 2^18-entry root (over 65,535 prefixes): a deterministic table of
/// mixed lengths, checked against the mutable map (itself checked against the scan above).
#[test]
fn large_frozen_map_matches_mutable_map() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        // xorshift64*: a fixed, dependency-free sequence.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut map = PrefixMap::new();
    while map.len() < 70_000 {
        let r = next();
        let len = [8u8, 12, 16, 19, 20, 22, 23, 24, 24, 24, 24, 28, 32][(r % 13) as usize];
        let addr = Ipv4Addr::from_bits((r >> 32) as u32 & 0x3FFF_FFFF);
        map.insert(IpNet::new(addr.into(), len).unwrap().trunc(), r);
        if r % 7 == 0 {
            let addr6 = Ipv6Addr::from_bits((0x2001_0db8u128 << 96) | (u128::from(r) << 48));
            map.insert(
                IpNet::new(addr6.into(), 32 + (r % 97) as u8)
                    .unwrap()
                    .trunc(),
                r,
            );
        }
    }
    let frozen = map.freeze();
    for _ in 0..20_000 {
        let r = next();
        let ip4: IpAddr = Ipv4Addr::from_bits(r as u32 & 0x3FFF_FFFF).into();
        let ip6: IpAddr =
            Ipv6Addr::from_bits((0x2001_0db8u128 << 96) | (u128::from(r) << 40)).into();
        for ip in [ip4, ip6] {
            assert_eq!(
                frozen.lookup(ip).map(|(n, v)| (n, *v)),
                map.longest_match(ip).map(|(n, v)| (n, *v)),
                "{ip}"
            );
        }
    }
}
