//! Route lookup: zt-routes against a linear scan, `prefix-trie` and `poptrie`, all in the
//! same run over the same prefixes and addresses. Figures and commands: BENCHMARKS.md.
//!
//! - lookups: latency (each address depends on the previous answer, so lookups cannot
//!   overlap) and throughput (independent lookups), over 2^20 addresses half inside the
//!   routes and half uniformly random (the set is far larger than the caches), and over a
//!   hot set of 8 addresses;
//! - insert and remove on the mutable maps, at 1M routes;
//! - building the lookup structures from 1M routes;
//! - bytes per route of zt's lookup structure, printed while setting up.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashSet;
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::BitXor;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use uuid::Uuid;
use zt_routes::{PrefixMap, Route, RouteTable};

/// Deterministic xorshift64* so every contender sees the same tables and addresses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn wide(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

/// Prefix lengths of a BGP-like IPv4 table, per mille: most routes are /24, then /22 and
/// /23; a few short aggregates and a few long, specific routes.
#[rustfmt::skip]
const V4_MIX: &[(u8, u64)] = &[
    (8, 1), (12, 1), (14, 2), (15, 2), (16, 20), (17, 10), (18, 15), (19, 30), (20, 50),
    (21, 50), (22, 120), (23, 100), (24, 580), (25, 3), (26, 3), (27, 3), (28, 3), (29, 3),
    (30, 2), (32, 2),
];

/// Prefix lengths of an IPv6 table, per mille: mostly /48 sites and /64 subnets under
/// provider /32s.
#[rustfmt::skip]
const V6_MIX: &[(u8, u64)] = &[
    (29, 5), (32, 30), (36, 10), (40, 30), (44, 50), (48, 500), (52, 15), (56, 60), (60, 10),
    (64, 290),
];

fn pick(rng: &mut Rng, mix: &[(u8, u64)]) -> u8 {
    let mut r = rng.below(1000);
    for &(len, share) in mix {
        if r < share {
            return len;
        }
        r -= share;
    }
    mix[0].0
}

/// `n` distinct IPv4 prefixes in 1.0.0.0–223.255.255.255 with the BGP-like mix, or all
/// /32 when `hosts`.
fn v4_routes(n: usize, hosts: bool, rng: &mut Rng) -> Vec<Ipv4Net> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = if hosts { 32 } else { pick(rng, V4_MIX) };
        let addr = (1 + rng.below(223) as u32) << 24 | (rng.next() as u32 & 0x00FF_FFFF);
        let net = Ipv4Net::new_assert(Ipv4Addr::from_bits(addr), len).trunc();
        if seen.insert(net) {
            out.push(net);
        }
    }
    out
}

/// `n` distinct IPv6 prefixes under 2000::/3, clustered under provider /32s as real
/// tables are, with the mix above, or all /128 when `hosts`.
fn v6_routes(n: usize, hosts: bool, rng: &mut Rng) -> Vec<Ipv6Net> {
    let providers: Vec<u128> = (0..n / 20 + 1)
        .map(|_| (0x2000u128 << 112) | ((rng.wide() >> 3) & (0x1FFF_FFFFu128 << 96)))
        .collect();
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = if hosts { 128 } else { pick(rng, V6_MIX) };
        let base = providers[rng.below(providers.len() as u64) as usize];
        let addr = base | (rng.wide() >> 32);
        let net = Ipv6Net::new_assert(Ipv6Addr::from_bits(addr), len).trunc();
        if seen.insert(net) {
            out.push(net);
        }
    }
    out
}

/// An address family as the benchmarks need it.
trait Family: Copy + BitXor<Output = Self> + From<u8> + 'static {
    type Net: Copy;
    fn inside(net: Self::Net, host: u128) -> Self;
    fn uniform(rng: &mut Rng) -> Self;
}

impl Family for u32 {
    type Net = Ipv4Net;
    fn inside(net: Ipv4Net, host: u128) -> u32 {
        net.network().to_bits() | (host as u32 & net.hostmask().to_bits())
    }
    fn uniform(rng: &mut Rng) -> u32 {
        rng.next() as u32
    }
}

impl Family for u128 {
    type Net = Ipv6Net;
    fn inside(net: Ipv6Net, host: u128) -> u128 {
        net.network().to_bits() | (host & net.hostmask().to_bits())
    }
    fn uniform(rng: &mut Rng) -> u128 {
        rng.wide()
    }
}

/// 2^20 addresses, alternately inside a random route and uniformly random.
fn queries<A: Family>(routes: &[A::Net], rng: &mut Rng) -> Vec<A> {
    (0..1 << 20)
        .map(|i| {
            if i % 2 == 0 {
                A::inside(routes[rng.below(routes.len() as u64) as usize], rng.wide())
            } else {
                A::uniform(rng)
            }
        })
        .collect()
}

/// `ZT_ROUTES_BENCH_ONLY=v4-1m,v6-1m` limits the lookup tables set up and measured (each
/// 1M-route table takes a while to generate); unset, all are.
fn wanted(label: &str) -> bool {
    std::env::var("ZT_ROUTES_BENCH_ONLY").map_or(true, |only| only.split(',').any(|l| l == label))
}

/// Lookups per criterion iteration.
const BATCH: usize = 1024;

/// Latency and throughput of `lookup` over the mixed addresses and the hot set.
fn lookups<A: Family>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    mixed: &[A],
    lookup: impl Fn(A) -> u32,
) {
    let hot: Vec<A> = mixed
        .iter()
        .step_by(2)
        .take(8)
        .copied()
        .cycle()
        .take(BATCH)
        .collect();
    for (set, addrs) in [("mixed", mixed), ("hot8", &hot[..])] {
        let mask = addrs.len() - 1;
        let mut pos = 0usize;
        group.bench_function(format!("{name}/latency-{set}"), |b| {
            b.iter(|| {
                // Flipping the low bit by the previous answer's low bit changes no route
                // in the mix below /32 but makes each lookup wait for the one before.
                let mut answer = 0u32;
                for i in 0..BATCH {
                    let a = addrs[(pos + i) & mask] ^ A::from((answer & 1) as u8);
                    answer = lookup(a);
                }
                pos = (pos + BATCH) & mask;
                answer
            })
        });
        let mut pos = 0usize;
        group.bench_function(format!("{name}/throughput-{set}"), |b| {
            b.iter(|| {
                let mut sum = 0u32;
                for i in 0..BATCH {
                    sum = sum.wrapping_add(lookup(addrs[(pos + i) & mask]));
                }
                pos = (pos + BATCH) & mask;
                sum
            })
        });
    }
}

/// The linear-scan baseline: prefixes sorted longest first, so the first hit is the answer.
fn linear_v4(routes: &[Ipv4Net]) -> Vec<(u32, u32, u32)> {
    let mut scan: Vec<(u32, u32, u32)> = routes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.network().to_bits(), n.netmask().to_bits(), i as u32 + 1))
        .collect();
    scan.sort_by_key(|&(_, mask, _)| std::cmp::Reverse(mask.count_ones()));
    scan
}

fn report_memory(what: &str, routes: usize, bytes: usize) {
    println!(
        "memory {what}: {routes} routes, {bytes} bytes of lookup structure, {:.1} bytes/route",
        bytes as f64 / routes as f64
    );
}

fn bench_v4(c: &mut Criterion, label: &str, routes: &[Ipv4Net], with_extras: bool) {
    let mut rng = Rng(0x5EED_0004);
    let addrs: Vec<u32> = queries(routes, &mut rng);
    let zt: PrefixMap<u32> = routes
        .iter()
        .enumerate()
        .map(|(i, n)| (IpNet::V4(*n), i as u32 + 1))
        .collect();
    let frozen = zt.freeze();
    report_memory(&format!("zt {label}"), routes.len(), frozen.lookup_bytes());
    let trie: prefix_trie::PrefixMap<Ipv4Net, u32> = routes
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i as u32 + 1))
        .collect();
    let pop: poptrie::Poptrie<(Ipv4Addr, u8), u32> = routes
        .iter()
        .enumerate()
        .map(|(i, n)| ((n.network(), n.prefix_len()), i as u32 + 1))
        .collect();

    let mut group = c.benchmark_group(format!("routes/{label}"));
    group.throughput(Throughput::Elements(BATCH as u64));
    // The trie's 4-byte answer (the route's position), as prefix-trie's inline value.
    lookups(&mut group, "zt", &addrs, |a| {
        frozen
            .lookup_position(Ipv4Addr::from_bits(a).into())
            .map_or(0, |p| p as u32 + 1)
    });
    if with_extras {
        // The same plus reading the matched prefix and value from the entry table.
        lookups(&mut group, "zt-with-entry", &addrs, |a| {
            frozen
                .lookup_v4(Ipv4Addr::from_bits(a))
                .map_or(0, |(_, v)| *v)
        });
    }
    lookups(&mut group, "prefix-trie", &addrs, |a| {
        let host = Ipv4Net::new_assert(Ipv4Addr::from_bits(a), 32);
        trie.get_lpm(&host).map_or(0, |(_, v)| *v)
    });
    lookups(&mut group, "poptrie", &addrs, |a| {
        pop.lookup(a).copied().unwrap_or(0)
    });
    if routes.len() <= 1000 {
        let scan = linear_v4(routes);
        lookups(&mut group, "linear", &addrs, |a| {
            scan.iter()
                .find(|&&(net, mask, _)| a & mask == net)
                .map_or(0, |&(_, _, v)| v)
        });
    }
    if with_extras {
        // The route table's snapshot: vnet selection, then the interned tunnel; four vnets.
        let mut table = RouteTable::new();
        for name in ["blue", "green", "red"] {
            table.add_vnet(name, "").unwrap();
        }
        let vnet = table.default_vnet();
        for (i, n) in routes.iter().enumerate() {
            table.insert(route(i, IpNet::V4(*n), vnet)).unwrap();
        }
        let snapshot = table.snapshot();
        report_memory(
            &format!("zt snapshot {label}"),
            routes.len(),
            snapshot.lookup_bytes(),
        );
        lookups(&mut group, "zt-snapshot-vnet", &addrs, |a| {
            snapshot
                .lookup_tunnel(vnet, Ipv4Addr::from_bits(a).into())
                .map_or(0, |t| t.as_u64_pair().1 as u32)
        });
    }
    group.finish();
}

fn bench_v6(c: &mut Criterion, label: &str, routes: &[Ipv6Net]) {
    let mut rng = Rng(0x5EED_0006);
    let addrs: Vec<u128> = queries(routes, &mut rng);
    let zt: PrefixMap<u32> = routes
        .iter()
        .enumerate()
        .map(|(i, n)| (IpNet::V6(*n), i as u32 + 1))
        .collect();
    let frozen = zt.freeze();
    report_memory(&format!("zt {label}"), routes.len(), frozen.lookup_bytes());
    let trie: prefix_trie::PrefixMap<Ipv6Net, u32> = routes
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i as u32 + 1))
        .collect();
    let pop: poptrie::Poptrie<(Ipv6Addr, u8), u32> = routes
        .iter()
        .enumerate()
        .map(|(i, n)| ((n.network(), n.prefix_len()), i as u32 + 1))
        .collect();

    let mut group = c.benchmark_group(format!("routes/{label}"));
    group.throughput(Throughput::Elements(BATCH as u64));
    lookups(&mut group, "zt", &addrs, |a| {
        frozen
            .lookup_position(Ipv6Addr::from_bits(a).into())
            .map_or(0, |p| p as u32 + 1)
    });
    lookups(&mut group, "prefix-trie", &addrs, |a| {
        let host = Ipv6Net::new_assert(Ipv6Addr::from_bits(a), 128);
        trie.get_lpm(&host).map_or(0, |(_, v)| *v)
    });
    lookups(&mut group, "poptrie", &addrs, |a| {
        pop.lookup(a).copied().unwrap_or(0)
    });
    group.finish();
}

fn route(i: usize, network: IpNet, vnet: Uuid) -> Route {
    Route {
        id: Uuid::from_u128(i as u128 + 1),
        network,
        vnet,
        tunnel_id: Uuid::from_u128(i as u128 % 16 + 1),
        comment: String::new(),
        created_at: 0,
    }
}

/// What one dependent random memory read costs on this machine, measured in the same run:
/// a pointer chase through a random cycle over 1 MiB (the size of the trie's root table)
/// and 16 MiB (the size of the whole IPv4 structure at 1M routes). A cold lookup cannot be
/// faster than the reads it depends on.
fn baseline_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("routes/baseline");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (label, bytes) in [
        ("random-read-1MiB", 1usize << 20),
        ("random-read-16MiB", 1 << 24),
    ] {
        let n = bytes / 4;
        // Sattolo's shuffle: one cycle through every slot, so the chase never settles.
        let mut next: Vec<u32> = (0..n as u32).collect();
        let mut rng = Rng(0x5EED_0005);
        for i in (1..n).rev() {
            let j = rng.below(i as u64) as usize;
            next.swap(i, j);
        }
        let mut at = 0u32;
        group.bench_function(label, |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    at = next[at as usize];
                }
                at
            })
        });
    }
    group.finish();
}

fn lookup_benches(c: &mut Criterion) {
    let v4 = [
        ("v4-1k", 1_000, false),
        ("v4-100k", 100_000, false),
        ("v4-1m", 1_000_000, false),
        ("v4-hosts-1m", 1_000_000, true),
    ];
    for (label, n, hosts) in v4 {
        if wanted(label) {
            let mut rng = Rng(0x5EED_0001 ^ n as u64);
            let routes = v4_routes(n, hosts, &mut rng);
            bench_v4(c, label, &routes, label == "v4-1m");
        }
    }
    for (label, hosts) in [("v6-1m", false), ("v6-hosts-1m", true)] {
        if wanted(label) {
            let mut rng = Rng(0x5EED_0061 ^ u64::from(hosts));
            bench_v6(c, label, &v6_routes(1_000_000, hosts, &mut rng));
        }
    }
}

/// Insert and remove on the mutable maps holding 1M routes: each timed batch inserts (or
/// removes) fresh prefixes that the untimed half of the round then takes out (or puts back).
fn mutate_benches(c: &mut Criterion) {
    let mut rng = Rng(0x5EED_0002);
    let all = v4_routes(1_100_000, false, &mut rng);
    let (base, fresh) = all.split_at(1_000_000);
    let mut zt: PrefixMap<u32> = base.iter().map(|n| (IpNet::V4(*n), 1)).collect();
    let mut trie: prefix_trie::PrefixMap<Ipv4Net, u32> = base.iter().map(|n| (*n, 1)).collect();

    let mut group = c.benchmark_group("routes/mutate-v4-1m");
    group.throughput(Throughput::Elements(1));
    group.bench_function("zt/insert", |b| {
        b.iter_custom(|iters| {
            timed_rounds(iters, fresh.len(), |range, timed| {
                let start = Instant::now();
                for n in &fresh[range.clone()] {
                    black_box(zt.insert(IpNet::V4(*n), 2));
                }
                *timed += start.elapsed();
                for n in &fresh[range] {
                    zt.remove(&IpNet::V4(*n));
                }
            })
        })
    });
    group.bench_function("zt/remove", |b| {
        b.iter_custom(|iters| {
            timed_rounds(iters, fresh.len(), |range, timed| {
                for n in &fresh[range.clone()] {
                    zt.insert(IpNet::V4(*n), 2);
                }
                let start = Instant::now();
                for n in &fresh[range] {
                    black_box(zt.remove(&IpNet::V4(*n)));
                }
                *timed += start.elapsed();
            })
        })
    });
    group.bench_function("prefix-trie/insert", |b| {
        b.iter_custom(|iters| {
            timed_rounds(iters, fresh.len(), |range, timed| {
                let start = Instant::now();
                for n in &fresh[range.clone()] {
                    black_box(trie.insert(*n, 2));
                }
                *timed += start.elapsed();
                for n in &fresh[range] {
                    trie.remove(n);
                }
            })
        })
    });
    group.bench_function("prefix-trie/remove", |b| {
        b.iter_custom(|iters| {
            timed_rounds(iters, fresh.len(), |range, timed| {
                for n in &fresh[range.clone()] {
                    trie.insert(*n, 2);
                }
                let start = Instant::now();
                for n in &fresh[range] {
                    black_box(trie.remove(n));
                }
                *timed += start.elapsed();
            })
        })
    });
    group.finish();
}

/// Splits `iters` operations into rounds of at most `limit`, calling `round` with the index
/// range of each and an accumulator for the time it measures.
fn timed_rounds(
    iters: u64,
    limit: usize,
    mut round: impl FnMut(std::ops::Range<usize>, &mut Duration),
) -> Duration {
    let mut timed = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(limit);
        round(0..n, &mut timed);
        left -= n;
    }
    timed
}

/// Building each lookup structure from 1M IPv4 routes (and 1M IPv6 for zt).
fn build_benches(c: &mut Criterion) {
    let mut rng = Rng(0x5EED_0003);
    let v4 = v4_routes(1_000_000, false, &mut rng);
    let v6 = v6_routes(1_000_000, false, &mut rng);
    let map4: PrefixMap<u32> = v4.iter().map(|n| (IpNet::V4(*n), 1)).collect();
    let map6: PrefixMap<u32> = v6.iter().map(|n| (IpNet::V6(*n), 1)).collect();
    let mut table = RouteTable::new();
    let vnet = table.default_vnet();
    for (i, n) in v4.iter().enumerate() {
        table.insert(route(i, IpNet::V4(*n), vnet)).unwrap();
    }

    let mut group = c.benchmark_group("routes/build-1m");
    group.sample_size(10);
    group.throughput(Throughput::Elements(v4.len() as u64));
    group.bench_function("zt-snapshot-v4", |b| b.iter(|| table.snapshot()));
    group.bench_function("zt-freeze-v4", |b| b.iter(|| map4.freeze()));
    group.bench_function("zt-freeze-v6", |b| b.iter(|| map6.freeze()));
    group.bench_function("prefix-trie-v4", |b| {
        b.iter(|| {
            v4.iter()
                .map(|n| (*n, 1u32))
                .collect::<prefix_trie::PrefixMap<Ipv4Net, u32>>()
        })
    });
    group.bench_function("poptrie-v4", |b| {
        b.iter(|| {
            v4.iter()
                .map(|n| ((n.network(), n.prefix_len()), 1u32))
                .collect::<poptrie::Poptrie<(Ipv4Addr, u8), u32>>()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    baseline_benches,
    lookup_benches,
    mutate_benches,
    build_benches
);
criterion_main!(benches);
