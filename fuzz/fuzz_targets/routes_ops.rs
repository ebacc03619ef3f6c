//! Random sequences of prefix-map, prefix-set and route-table operations, each result
//! checked against a linear scan over the same prefixes.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;
use zt_routes::{NewRoute, PrefixMap, PrefixSet, RouteTable};

/// Reads the fuzzer's bytes as a stream of small numbers.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes([
            self.byte()?,
            self.byte()?,
            self.byte()?,
            self.byte()?,
        ]))
    }
}

/// IPv4 addresses from a few bytes, packed under two /8s half the time so prefixes nest.
fn v4(input: &mut Input<'_>) -> Option<Ipv4Addr> {
    let raw = input.u32()?;
    let addr = if raw & 1 == 0 {
        raw
    } else {
        0x0A00_0000 | (raw >> 16) << 8 | (raw & 0xF0)
    };
    Some(Ipv4Addr::from_bits(addr))
}

/// IPv6 addresses under 2001:db8::/32 with four variable bytes spread over the address.
fn v6(input: &mut Input<'_>) -> Option<Ipv6Addr> {
    let raw = u128::from(input.u32()?);
    let spread =
        (raw & 0xFF00_0000) << 64 | (raw & 0xFF_0000) << 48 | (raw & 0xFF00) << 24 | (raw & 0xFF);
    Some(Ipv6Addr::from_bits((0x2001_0db8u128 << 96) | spread))
}

fn net(input: &mut Input<'_>) -> Option<IpNet> {
    let kind = input.byte()?;
    let len = input.byte()?;
    let net = if kind & 1 == 0 {
        IpNet::new(v4(input)?.into(), len % 33).ok()?
    } else {
        IpNet::new(v6(input)?.into(), len % 129).ok()?
    };
    Some(net.trunc())
}

fn ip(input: &mut Input<'_>) -> Option<IpAddr> {
    Some(if input.byte()? & 1 == 0 {
        v4(input)?.into()
    } else {
        v6(input)?.into()
    })
}

fn longest<'a, V>(oracle: &'a [(IpNet, V)], ip: IpAddr) -> Option<&'a (IpNet, V)> {
    oracle
        .iter()
        .filter(|(n, _)| n.contains(&ip))
        .max_by_key(|(n, _)| n.prefix_len())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut map = PrefixMap::new();
    let mut set = PrefixSet::new();
    let mut oracle: Vec<(IpNet, u32)> = Vec::new();
    let mut table = RouteTable::new();
    let blue = table.add_vnet("blue", "").map(|v| v.id).unwrap_or_default();
    let vnets = [table.default_vnet(), blue];
    let mut routes: Vec<(usize, IpNet, Uuid, Uuid)> = Vec::new();
    let mut queries: Vec<IpAddr> = Vec::new();
    let mut counter = 0u32;

    while let Some(op) = input.byte() {
        match op % 8 {
            0 | 1 => {
                let Some(n) = net(&mut input) else { break };
                counter += 1;
                let old = map.insert(n, counter);
                let want = oracle.iter().position(|(o, _)| *o == n);
                assert_eq!(old, want.map(|i| oracle[i].1));
                match want {
                    Some(i) => oracle[i].1 = counter,
                    None => oracle.push((n, counter)),
                }
                assert_eq!(set.insert(n), want.is_none());
            }
            2 => {
                let Some(i) = input.byte() else { break };
                if oracle.is_empty() {
                    continue;
                }
                let (n, v) = oracle.swap_remove(usize::from(i) % oracle.len());
                assert_eq!(map.remove(&n), Some(v));
                assert!(set.remove(&n));
                assert_eq!(map.remove(&n), None);
            }
            3 | 4 => {
                let Some(a) = ip(&mut input) else { break };
                let want = longest(&oracle, a).copied();
                assert_eq!(map.longest_match(a).map(|(n, v)| (n, *v)), want);
                assert_eq!(set.contains(a), want.is_some());
                if queries.len() < 64 {
                    queries.push(a);
                }
            }
            5 => {
                let frozen = map.freeze();
                for &a in &queries {
                    let want = longest(&oracle, a).copied();
                    assert_eq!(frozen.lookup(a).map(|(n, v)| (n, *v)), want);
                }
                let keys: Vec<IpNet> = map.keys().collect();
                let mut sorted: Vec<IpNet> = oracle.iter().map(|(n, _)| *n).collect();
                sorted.sort_by_key(|n| match n {
                    IpNet::V4(n) => (0u8, u128::from(n.addr().to_bits()), n.prefix_len()),
                    IpNet::V6(n) => (1u8, n.addr().to_bits(), n.prefix_len()),
                });
                assert_eq!(keys, sorted);
            }
            6 => {
                let (Some(v), Some(n)) = (input.byte(), net(&mut input)) else {
                    break;
                };
                let v = usize::from(v) % 2;
                let tunnel = Uuid::from_u128(u128::from(counter));
                counter += 1;
                let dup = routes.iter().find(|r| r.0 == v && r.1 == n).map(|r| r.2);
                match table.add(NewRoute::new(n, tunnel).in_vnet(vnets[v])) {
                    Ok(route) => {
                        assert!(dup.is_none());
                        routes.push((v, n, route.id, tunnel));
                    }
                    Err(zt_routes::AddRouteError::Duplicate { existing, .. }) => {
                        assert_eq!(Some(existing), dup);
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            _ => {
                let Some(i) = input.byte() else { break };
                if i & 1 == 0 && !routes.is_empty() {
                    let (_, _, id, _) = routes.swap_remove(usize::from(i) % routes.len());
                    assert_eq!(table.delete(id).map(|r| r.id), Ok(id));
                }
                let snapshot = table.snapshot();
                for &a in &queries {
                    for (v, vnet) in vnets.iter().enumerate() {
                        let want = routes
                            .iter()
                            .filter(|r| r.0 == v && r.1.contains(&a))
                            .max_by_key(|r| r.1.prefix_len())
                            .map(|r| (r.2, r.3));
                        let got = snapshot.lookup(*vnet, a).map(|t| (t.route_id, t.tunnel_id));
                        assert_eq!(got, want);
                        let got = table.lookup(*vnet, a).map(|r| (r.id, r.tunnel_id));
                        assert_eq!(got, want);
                    }
                }
            }
        }
    }
});
