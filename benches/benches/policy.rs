//! Policy evaluation: zt-policy's compiled evaluator against its reference tree-walking
//! interpreter, in the same run over the same policies and flows. Figures and commands:
//! BENCHMARKS.md.
//!
//! - the seed's rule (`any(http.conn.dst_ip[*] in $<list>)`, a 2-entry IP list) in the
//!   http `off` step, and the l4 phase with one allow rule beside it;
//! - 1,000 l4 rules, each `net.dst.ip in $<one of 10 lists of 10,000 CIDRs, IPv4 and IPv6
//!   mixed> and net.dst.port == P` with an identity condition: a flow in no list, a flow
//!   in one list that no rule's port/identity matches, and a flow matching the 6th rule;
//! - compiling those 1,000 rules with the lists already built; building one 10,000-entry
//!   list; replacing it in a shared policy;
//! - printed after the criterion groups (with `--bench`): per-evaluation latency
//!   percentiles, reader latency while lists are being swapped, and list memory.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use uuid::Uuid;
use zt_policy::{
    Action, CompiledPolicy, Filter, FlowContext, Identity, List, ListSet, ListType, NetProtocol,
    PolicyConfig, ReferencePolicy, Rule, SharedPolicy,
};

/// Deterministic xorshift64* so both evaluators see the same lists.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

const LISTS: usize = 10;
const LIST_LEN: usize = 10_000;
const RULES: usize = 1_000;

/// List `k`: 10,000 CIDRs, 70 % IPv4 inside 10.0.0.0/8 (/16 to /32) and 30 % IPv6 inside
/// 2001:db8::/32 (/40 to /128). The top bits of each prefix encode `k`, so a list's
/// addresses are in no other list, and 192.0.2.0/24 and 3fff::/20 are in none.
fn ip_list(k: usize, rng: &mut Rng) -> List {
    let items = (0..LIST_LEN)
        .map(|_| {
            if rng.next() % 10 < 7 {
                let len = 16 + (rng.next() % 17) as u8;
                let bits = (10u32 << 24) | ((k as u32) << 20) | (rng.next() as u32 & 0x000f_ffff);
                let net = ipnet::Ipv4Net::new(Ipv4Addr::from(bits), len.max(12)).unwrap();
                net.trunc().to_string()
            } else {
                let len = 40 + (rng.next() % 89) as u8;
                let bits = (0x2001_0db8u128 << 96)
                    | ((k as u128) << 88)
                    | (u128::from(rng.next()) << 24 >> 40);
                let net = ipnet::Ipv6Net::new(Ipv6Addr::from(bits), len).unwrap();
                net.trunc().to_string()
            }
        })
        .collect();
    List {
        id: Uuid::from_u128(k as u128 + 1),
        name: format!("list {k}"),
        slug: Some(format!("l{k}")),
        list_type: ListType::Ip,
        items,
        description: String::new(),
    }
}

fn big_lists() -> Vec<List> {
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    (0..LISTS).map(|k| ip_list(k, &mut rng)).collect()
}

fn big_rules() -> Vec<Rule> {
    (0..RULES)
        .map(|i| Rule {
            id: Uuid::from_u128(10_000 + i as u128),
            name: format!("rule {i}"),
            description: String::new(),
            precedence: i as u32 + 1,
            action: if i % 3 == 0 { Action::Block } else { Action::Allow },
            enabled: true,
            filters: vec![Filter::L4],
            traffic: Some(format!(
                "net.dst.ip in $l{} and net.dst.port == {}",
                i % LISTS,
                10_000 + i
            )),
            identity: Some(format!(
                "identity.email == \"user{i}@example.com\" or any(identity.groups[*] == \"team{}\")",
                i % 50
            )),
            device_posture: None,
        })
        .collect()
}

/// An address inside list `k` (the first item's network address).
fn addr_in(list: &List) -> IpAddr {
    let net: ipnet::IpNet = list.items[0].parse().unwrap();
    net.network()
}

fn seed() -> (Vec<List>, Vec<Rule>) {
    let list = List {
        id: Uuid::parse_str("4b2a7c1e-95d3-4f0a-8e6b-2c9d1f3a5b70").unwrap(),
        name: "Kubernetes API IPs".into(),
        slug: None,
        list_type: ListType::Ip,
        items: vec!["198.51.100.101/32".into(), "2001:DB8::101/128".into()],
        description: String::new(),
    };
    let rule = |name: &str, precedence, action, filter, traffic: String| Rule {
        id: Uuid::new_v4(),
        name: name.into(),
        description: String::new(),
        precedence,
        action,
        enabled: true,
        filters: vec![filter],
        traffic: Some(traffic),
        identity: None,
        device_posture: None,
    };
    let rules = vec![
        rule(
            "Don't inspect Kubernetes API",
            10000,
            Action::Off,
            Filter::Http,
            format!("any(http.conn.dst_ip[*] in {})", list.id_reference()),
        ),
        rule(
            "kubectl",
            100,
            Action::Allow,
            Filter::L4,
            "net.dst.port == 443".into(),
        ),
    ];
    (vec![list], rules)
}

fn ctx(dst: IpAddr, port: u16, who: Option<&Identity>) -> FlowContext<'_> {
    let mut c = FlowContext::new("192.0.2.77".parse().unwrap(), dst, port, NetProtocol::Tcp);
    c.identity = who;
    c
}

fn identity() -> Identity {
    Identity {
        id: "u5".into(),
        email: "user5@example.com".into(),
        groups: vec!["team5".into(), "everyone".into()],
        idp: None,
    }
}

fn bench_seed(c: &mut Criterion) {
    let (lists, rules) = seed();
    let policy = CompiledPolicy::compile(
        &ListSet::build(&lists).unwrap(),
        &rules,
        PolicyConfig::default(),
    )
    .unwrap();
    let reference = ReferencePolicy::new(&lists, &rules, PolicyConfig::default()).unwrap();
    let hit = ctx("2001:db8::101".parse().unwrap(), 443, None);
    let miss = ctx("198.51.100.7".parse().unwrap(), 443, None);
    assert!(policy.http_off(&hit).is_some() && policy.http_off(&miss).is_none());

    let mut g = c.benchmark_group("policy/seed");
    g.bench_function("http_off_match/compiled", |b| {
        b.iter(|| policy.http_off(black_box(&hit)))
    });
    g.bench_function("http_off_match/reference", |b| {
        b.iter(|| reference.http_off(black_box(&hit)))
    });
    g.bench_function("http_off_miss/compiled", |b| {
        b.iter(|| policy.http_off(black_box(&miss)))
    });
    g.bench_function("http_off_miss/reference", |b| {
        b.iter(|| reference.http_off(black_box(&miss)))
    });
    g.bench_function("l4_then_off/compiled", |b| {
        b.iter(|| {
            let c = black_box(&hit);
            (policy.l4(c), policy.http_off(c))
        })
    });
    g.finish();
}

struct Big {
    lists: Vec<List>,
    rules: Vec<Rule>,
    set: ListSet,
    policy: CompiledPolicy,
}

fn big() -> Big {
    let lists = big_lists();
    let rules = big_rules();
    let set = ListSet::build(&lists).unwrap();
    let policy = CompiledPolicy::compile(&set, &rules, PolicyConfig::default()).unwrap();
    Big {
        lists,
        rules,
        set,
        policy,
    }
}

fn bench_big(c: &mut Criterion) {
    let b = big();
    let reference = ReferencePolicy::new(&b.lists, &b.rules, PolicyConfig::default()).unwrap();
    let who = identity();
    let nowhere_v4 = ctx("192.0.2.1".parse().unwrap(), 10_005, Some(&who));
    let nowhere_v6 = ctx("3fff::1".parse().unwrap(), 10_005, Some(&who));
    // In list 3 (rules 3, 13, 23, ...), but on a port no rule names.
    let listed = ctx(addr_in(&b.lists[3]), 443, Some(&who));
    // Rule 5: list 5, port 10005, identity user5.
    let top10 = ctx(addr_in(&b.lists[5]), 10_005, Some(&who));
    for (c, want) in [
        (&nowhere_v4, None),
        (&nowhere_v6, None),
        (&listed, None),
        (&top10, Some("rule 5")),
    ] {
        let d = b.policy.l4(c);
        assert_eq!(d.rule_name, want);
        assert_eq!(reference.l4(c), d);
    }

    let mut g = c.benchmark_group("policy/l4_1000_rules");
    for (name, flow) in [
        ("no_match_ip_in_no_list_v4", &nowhere_v4),
        ("no_match_ip_in_no_list_v6", &nowhere_v6),
        ("no_match_ip_in_one_list", &listed),
        ("first_match_rule_6", &top10),
    ] {
        g.bench_function(format!("{name}/compiled"), |bch| {
            bch.iter(|| b.policy.l4(black_box(flow)))
        });
    }
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(4));
    for (name, flow) in [
        ("no_match_ip_in_no_list_v4", &nowhere_v4),
        ("first_match_rule_6", &top10),
    ] {
        g.bench_function(format!("{name}/reference"), |bch| {
            bch.iter(|| reference.l4(black_box(flow)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("policy/build");
    g.sample_size(10);
    g.bench_function("compile_1000_rules", |bch| {
        bch.iter(|| {
            CompiledPolicy::compile(&b.set, black_box(&b.rules), PolicyConfig::default()).unwrap()
        })
    });
    g.bench_function("build_one_10k_list", |bch| {
        bch.iter(|| ListSet::build(black_box(&b.lists[..1])).unwrap())
    });
    let shared = SharedPolicy::new(b.policy.clone());
    let mut flip = false;
    g.bench_function("replace_one_10k_list_and_swap", |bch| {
        bch.iter(|| {
            // Alternate between two item orders so every swap installs a new list.
            let mut list = b.lists[4].clone();
            flip = !flip;
            if flip {
                list.items.reverse();
            }
            shared.replace_list(&list).unwrap()
        })
    });
    g.finish();
}

/// Latency percentiles of single evaluations (each timed alone; the cost of reading the
/// clock, measured the same way, is subtracted).
fn percentiles(mut f: impl FnMut(), n: usize) -> (f64, f64, f64, f64) {
    let clock = {
        let mut v: Vec<u64> = (0..n)
            .map(|_| {
                let t = Instant::now();
                black_box(());
                t.elapsed().as_nanos() as u64
            })
            .collect();
        v.sort_unstable();
        v[n / 2] as f64
    };
    let mut v: Vec<u64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as u64
        })
        .collect();
    v.sort_unstable();
    let at = |q: f64| (v[((n as f64 * q) as usize).min(n - 1)] as f64 - clock).max(0.0);
    (at(0.5), at(0.99), at(0.999), v[n - 1] as f64 - clock)
}

fn report() {
    println!("\n== policy: latency percentiles (ns per evaluation; clock cost subtracted) ==");
    let (lists, rules) = seed();
    let seed_policy = CompiledPolicy::compile(
        &ListSet::build(&lists).unwrap(),
        &rules,
        PolicyConfig::default(),
    )
    .unwrap();
    let hit = ctx("2001:db8::101".parse().unwrap(), 443, None);
    let (p50, p99, p999, max) = percentiles(
        || {
            black_box(seed_policy.http_off(black_box(&hit)));
        },
        200_000,
    );
    println!("seed/http_off_match                         p50 {p50:>7.0}  p99 {p99:>7.0}  p99.9 {p999:>7.0}  max {max:>9.0}");
    let b = big();
    let who = identity();
    let flows = [
        (
            "no_match_ip_in_no_list_v4",
            ctx("192.0.2.1".parse().unwrap(), 10_005, Some(&who)),
        ),
        (
            "no_match_ip_in_no_list_v6",
            ctx("3fff::1".parse().unwrap(), 10_005, Some(&who)),
        ),
        (
            "no_match_ip_in_one_list",
            ctx(addr_in(&b.lists[3]), 443, Some(&who)),
        ),
        (
            "first_match_rule_6",
            ctx(addr_in(&b.lists[5]), 10_005, Some(&who)),
        ),
    ];
    for (name, flow) in &flows {
        let (p50, p99, p999, max) = percentiles(
            || {
                black_box(b.policy.l4(black_box(flow)));
            },
            200_000,
        );
        println!("l4_1000_rules/{name:<28} p50 {p50:>7.0}  p99 {p99:>7.0}  p99.9 {p999:>7.0}  max {max:>9.0}");
    }

    // Readers while a writer replaces a 10,000-entry list over and over.
    let shared = SharedPolicy::new(b.policy.clone());
    let flow = flows[0].1;
    let quiet = percentiles(
        || {
            black_box(shared.load().l4(black_box(&flow)));
        },
        200_000,
    );
    let stop = AtomicBool::new(false);
    let (busy, swaps) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut swaps = 0u32;
            let mut list = b.lists[0].clone();
            while !stop.load(Ordering::Relaxed) {
                list.items.reverse();
                shared.replace_list(&list).unwrap();
                swaps += 1;
            }
            swaps
        });
        let r = percentiles(
            || {
                black_box(shared.load().l4(black_box(&flow)));
            },
            200_000,
        );
        stop.store(true, Ordering::Relaxed);
        (r, writer.join().unwrap())
    });
    println!(
        "reader (load + l4, no match) quiet:              p50 {:>7.0}  p99 {:>7.0}  p99.9 {:>7.0}  max {:>9.0}",
        quiet.0, quiet.1, quiet.2, quiet.3
    );
    println!(
        "reader during {swaps:>4} swaps of a 10k list:       p50 {:>7.0}  p99 {:>7.0}  p99.9 {:>7.0}  max {:>9.0}",
        busy.0, busy.1, busy.2, busy.3
    );

    let bytes = b.set.ip_lookup_bytes();
    let prefixes = LISTS * LIST_LEN;
    println!(
        "list memory: {} IP lists, {prefixes} prefixes, {bytes} bytes of lookup tries = {:.1} bytes/prefix",
        LISTS,
        bytes as f64 / prefixes as f64
    );
    let t = Instant::now();
    let p = CompiledPolicy::compile(&b.set, &b.rules, PolicyConfig::default()).unwrap();
    println!("one compile of 1,000 rules: {:?}", t.elapsed());
    drop(p);
}

criterion_group!(benches, bench_seed, bench_big);

fn main() {
    benches();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filtered = args.iter().any(|a| !a.starts_with('-'));
    if args.iter().any(|a| a == "--bench") && !filtered {
        report();
    }
    Criterion::default().configure_from_args().final_summary();
}
