//! Property test: the compiled evaluator agrees with the reference interpreter.
//!
//! A grammar-aware generator writes random well-typed policies — rules in random filters
//! with random actions, precedences and enabled flags, over expressions that use every
//! field type, operator, set form, list type, quantifier and `lower()` — and random flows
//! drawn from small pools so that comparisons and list lookups hit as often as they miss.
//! Every phase's decision must be identical, rule for rule.

use std::collections::HashMap;
use std::net::IpAddr;

use proptest::prelude::*;
use proptest::sample::select;
use uuid::Uuid;
use zt_policy::{
    Action, CompiledPolicy, DefaultAction, Device, Filter, FlowContext, Identity, List, ListSet,
    ListType, NetProtocol, PolicyConfig, ReferencePolicy, Rule,
};

const IPS: &[&str] = &[
    "10.0.0.1",
    "10.1.2.3",
    "192.0.2.10",
    "198.51.100.101",
    "198.51.100.7",
    "2001:db8::101",
    "2001:db8:1::5",
    "fd00::1",
];
const NETS: &[&str] = &[
    "10.0.0.0/8",
    "198.51.100.0/24",
    "2001:db8::/32",
    "fd00::/120",
    "0.0.0.0/0",
];
const PORTS: &[u16] = &[22, 80, 443, 6443, 8080];
const STRS: &[&str] = &[
    "",
    "tcp",
    "udp",
    "prod",
    "dev",
    "ops@example.com",
    "OPS@Example.com",
    "dev@example.com",
    "api.example.com",
    "API.example.COM",
    "evil.test",
    "dev-1",
    "u1",
    "eng",
    "Eng",
    "sre",
];
const PATTERNS: &[&str] = &[
    "^ops",
    "example\\.com$",
    "(?i)OPS",
    "^$",
    "e.v",
    "[0-9]",
    "^(prod|dev)$",
];
const POSTURE: &[&str] = &["disk", "firewall", "os_current"];

static WIDE: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    (0..40u32)
        .map(|i| format!("10.{}.0.0/16", i * 3))
        .chain([
            "198.51.100.101/32".into(),
            "2001:db8:1::/64".into(),
            "fd00::/120".into(),
        ])
        .collect()
});

fn lists() -> Vec<List> {
    let list = |id: u128, slug: &str, t: ListType, items: &[&str]| List {
        id: Uuid::from_u128(id),
        name: slug.to_owned(),
        slug: Some(slug.to_owned()),
        list_type: t,
        items: items.iter().map(|s| s.to_string()).collect(),
        description: String::new(),
    };
    vec![
        list(
            1,
            "k8s",
            ListType::Ip,
            &["198.51.100.101/32", "2001:DB8::101/128"],
        ),
        list(
            2,
            "nets",
            ListType::Ip,
            &["10.0.0.0/16", "2001:db8:1::/48", "192.0.2.0/25"],
        ),
        list(
            3,
            "admins",
            ListType::Email,
            &["ops@example.com", "root@example.com"],
        ),
        list(
            4,
            "hosts",
            ListType::Domain,
            &["api.example.com", "evil.test"],
        ),
        list(5, "devices", ListType::Device, &["dev-1", "dev-2"]),
        // Large enough to be looked up through the prefix trie rather than scanned.
        list(
            6,
            "wide",
            ListType::Ip,
            &WIDE.iter().map(String::as_str).collect::<Vec<_>>(),
        ),
    ]
}

/// Which fields an expression may use, from the filters of its rule.
#[derive(Debug, Clone, Copy)]
struct Avail {
    http_conn: bool,
    inspect: bool,
    dns: bool,
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

fn ip_cmp(field: &'static str) -> BoxedStrategy<String> {
    prop_oneof![
        (select(&["==", "!=", "<", ">=", "eq"][..]), select(IPS))
            .prop_map(move |(op, ip)| format!("{field} {op} {ip}")),
        proptest::collection::vec(prop_oneof![select(IPS), select(NETS)], 1..24)
            .prop_map(move |items| format!("{field} in {{{}}}", items.join(" "))),
        select(
            &[
                "$k8s",
                "$nets",
                "$wide",
                "$00000000000000000000000000000001"
            ][..]
        )
        .prop_map(move |l| format!("{field} in {l}")),
    ]
    .boxed()
}

fn int_cmp(field: &'static str) -> BoxedStrategy<String> {
    prop_oneof![
        (
            select(&["==", "!=", "<", "<=", ">", ">=", "ge"][..]),
            select(PORTS)
        )
            .prop_map(move |(op, p)| format!("{field} {op} {p}")),
        proptest::collection::vec(
            prop_oneof![
                select(PORTS).prop_map(|p| p.to_string()),
                (select(PORTS), 0u16..500).prop_map(|(p, w)| format!("{p}..{}", p + w)),
            ],
            1..4
        )
        .prop_map(move |items| format!("{field} in {{{}}}", items.join(", "))),
    ]
    .boxed()
}

/// A string comparison on `lhs`; `list` is the list that fits the field, if any.
fn str_cmp(lhs: String, list: Option<&'static str>) -> BoxedStrategy<String> {
    let lower = any::<bool>();
    let lhs2 = lhs.clone();
    let lhs3 = lhs.clone();
    let plain = (
        lower,
        select(&["==", "!=", "<", ">=", "contains"][..]),
        select(STRS),
    )
        .prop_map(move |(lower, op, s)| format!("{} {op} {}", lowered(&lhs, lower), q(s)));
    let matches = (any::<bool>(), select(PATTERNS)).prop_map(move |(raw, p)| {
        if raw {
            format!("{} matches r\"{p}\"", lhs2)
        } else {
            format!("{} ~ {}", lhs2, q(p))
        }
    });
    let set = (
        any::<bool>(),
        proptest::collection::vec(select(STRS), 1..12),
    )
        .prop_map(move |(lower, items)| {
            let items: Vec<String> = items.iter().map(|s| q(s)).collect();
            format!("{} in {{{}}}", lowered(&lhs3, lower), items.join(" "))
        });
    match list {
        Some(l) => {
            let field = lhs_field_only(list);
            prop_oneof![plain, matches, set, Just(format!("{field} in {l}"))].boxed()
        }
        None => prop_oneof![plain, matches, set].boxed(),
    }
}

fn lhs_field_only(list: Option<&'static str>) -> &'static str {
    match list {
        Some("$admins") => "identity.email",
        Some("$devices") => "device.id",
        _ => "FIELD",
    }
}

fn lowered(lhs: &str, lower: bool) -> String {
    if lower {
        format!("lower({lhs})")
    } else {
        lhs.to_owned()
    }
}

fn host_cmp(field: &'static str) -> BoxedStrategy<String> {
    prop_oneof![
        str_cmp(field.to_owned(), None),
        Just(format!("{field} in $hosts")),
    ]
    .boxed()
}

fn leaf(a: Avail) -> BoxedStrategy<String> {
    let mut leaves: Vec<BoxedStrategy<String>> = vec![
        ip_cmp("net.src.ip"),
        ip_cmp("net.dst.ip"),
        int_cmp("net.dst.port"),
        int_cmp("session.age_seconds"),
        str_cmp("net.protocol".into(), None),
        str_cmp("net.vnet".into(), None),
        str_cmp("identity.email".into(), Some("$admins")),
        str_cmp("identity.id".into(), None),
        str_cmp("device.id".into(), Some("$devices")),
        (
            select(&["any", "all"][..]),
            any::<bool>(),
            any::<bool>(),
            select(&["==", "contains", "!=", "<"][..]),
            select(STRS),
        )
            .prop_map(|(qf, neg, lower, op, s)| {
                let lhs = lowered("identity.groups[*]", lower);
                let not = if neg { "not " } else { "" };
                format!("{qf}({not}{lhs} {op} {})", q(s))
            })
            .boxed(),
        (
            select(POSTURE),
            select(&["", " == true", " == false", " != true"][..]),
        )
            .prop_map(|(p, cmp)| format!("device.posture.{p}{cmp}"))
            .boxed(),
    ];
    // List lookups are where the compiled path differs most (memo, guard groups), so the
    // same lists are looked up from several fields and appear often.
    leaves.push(
        (
            select(&["net.src.ip", "net.dst.ip"][..]),
            select(&["$k8s", "$nets"][..]),
        )
            .prop_map(|(f, l)| format!("{f} in {l}"))
            .boxed(),
    );
    leaves.push(
        (
            select(&["identity.email", "lower(identity.email)"][..]),
            any::<bool>(),
        )
            .prop_map(|(f, l)| {
                if l {
                    "identity.email in $admins".to_owned()
                } else {
                    format!("{f} == \"ops@example.com\"")
                }
            })
            .boxed(),
    );
    if a.http_conn {
        leaves.push(
            (
                select(&["any", "all"][..]),
                any::<bool>(),
                select(&["http.conn.dst_ip", "http.conn.src_ip"][..]),
                ip_cmp("X"),
            )
                .prop_map(|(qf, neg, f, cmp)| {
                    let not = if neg { "not " } else { "" };
                    format!("{qf}({not}{})", cmp.replacen('X', &format!("{f}[*]"), 1))
                })
                .boxed(),
        );
    }
    if a.inspect {
        leaves.push(host_cmp("http.request.host"));
        leaves.push(host_cmp("net.sni"));
    }
    if a.dns {
        leaves.push(host_cmp("dns.fqdn"));
    }
    proptest::strategy::Union::new(leaves).boxed()
}

fn expr(a: Avail) -> BoxedStrategy<String> {
    leaf(a)
        .prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                (
                    inner.clone(),
                    select(&["and", "&&", "or", "||", "xor", "^^"][..]),
                    inner.clone()
                )
                    .prop_map(|(l, op, r)| format!("({l} {op} {r})")),
                proptest::collection::vec(inner.clone(), 3..5).prop_map(|ts| ts.join(" and ")),
                (select(&["not ", "!"][..]), inner).prop_map(|(n, e)| format!("{n}({e})")),
            ]
        })
        .boxed()
}

fn rule_strategy(index: u32) -> impl Strategy<Value = Rule> {
    let filters = prop_oneof![
        Just(vec![Filter::L4]),
        Just(vec![Filter::Http]),
        Just(vec![Filter::Dns]),
        Just(vec![Filter::L4, Filter::Http]),
        Just(vec![Filter::Http, Filter::Dns]),
    ];
    (filters, 0u32..3, any::<bool>(), 0u32..1000, 0u32..10)
        .prop_flat_map(move |(filters, action, _, prec, enabled)| {
            let only_http = filters == [Filter::Http];
            let action = match action {
                0 => Action::Allow,
                1 => Action::Block,
                _ if only_http => Action::Off,
                _ => Action::Allow,
            };
            let has = |f| filters.contains(&f);
            let a = Avail {
                http_conn: has(Filter::Http) && !has(Filter::L4) && !has(Filter::Dns),
                inspect: only_http && action != Action::Off,
                dns: filters == [Filter::Dns],
            };
            let traffic = prop_oneof![1 => Just(None), 6 => expr(a).prop_map(Some)];
            let identity = prop_oneof![
                3 => Just(None),
                1 => str_cmp("identity.email".into(), Some("$admins")).prop_map(Some),
            ];
            (
                Just(filters),
                Just(action),
                Just(prec * 1000 + index),
                Just(enabled != 0),
                traffic,
                identity,
            )
        })
        .prop_map(
            move |(filters, action, precedence, enabled, traffic, identity)| Rule {
                id: Uuid::from_u128(1000 + u128::from(index)),
                name: format!("rule{index}"),
                description: String::new(),
                precedence,
                action,
                enabled,
                filters,
                traffic: traffic.map(|t| t.replace("FIELD", "identity.email")),
                identity,
                device_posture: None,
            },
        )
}

fn policy_strategy() -> impl Strategy<Value = Vec<Rule>> {
    sized_policy(1..7)
}

fn sized_policy(n: std::ops::Range<u32>) -> impl Strategy<Value = Vec<Rule>> {
    n.prop_flat_map(|n| (0..n).map(rule_strategy).collect::<Vec<_>>())
}

/// A flow, as owned values (the context borrows them).
#[derive(Debug, Clone)]
struct Flow {
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    udp: bool,
    vnet: &'static str,
    identity: Option<Identity>,
    device: Option<Device>,
    age: Option<u64>,
    sni: Option<&'static str>,
    host: Option<&'static str>,
    fqdn: Option<&'static str>,
}

fn flow_strategy() -> impl Strategy<Value = Flow> {
    let identity = proptest::option::of(
        (
            select(STRS),
            select(STRS),
            proptest::collection::vec(select(STRS), 0..3),
        )
            .prop_map(|(id, email, groups)| Identity {
                id: id.into(),
                email: email.into(),
                groups: groups.into_iter().map(String::from).collect(),
                idp: None,
            }),
    );
    let device = proptest::option::of(
        (
            select(STRS),
            proptest::collection::vec((select(POSTURE), any::<bool>()), 0..3),
        )
            .prop_map(|(id, checks)| Device {
                id: id.into(),
                posture: checks
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<HashMap<_, _>>(),
            }),
    );
    let host = || proptest::option::of(select(STRS));
    (
        (
            select(IPS),
            select(IPS),
            select(PORTS),
            any::<bool>(),
            select(&["", "prod", "dev"][..]),
        ),
        identity,
        device,
        proptest::option::of(prop_oneof![
            Just(0u64),
            Just(443),
            Just(6443),
            Just(u64::MAX)
        ]),
        (host(), host(), host()),
    )
        .prop_map(
            |((src, dst, port, udp, vnet), identity, device, age, (sni, host, fqdn))| Flow {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                port,
                udp,
                vnet,
                identity,
                device,
                age,
                sni,
                host,
                fqdn,
            },
        )
}

fn show(d: Option<zt_policy::Decision<'_>>) -> Option<(Action, zt_policy::Phase, Option<Uuid>)> {
    d.map(|d| (d.action, d.phase, d.rule_id))
}

fn agree(rules: &[Rule], flows: &[Flow], allow_default: bool) -> Result<(), TestCaseError> {
    let lists = lists();
    let config = PolicyConfig {
        l4_default: if allow_default {
            DefaultAction::Allow
        } else {
            DefaultAction::Block
        },
    };
    let set = ListSet::build(&lists).unwrap();
    let compiled = match CompiledPolicy::compile(&set, rules, config) {
        Ok(p) => p,
        Err(e) => panic!("generator produced an ill-typed policy: {e}\n{rules:#?}"),
    };
    let reference = ReferencePolicy::new(&lists, rules, config).unwrap();
    for f in flows {
        let mut ctx = FlowContext::new(
            f.src,
            f.dst,
            f.port,
            if f.udp {
                NetProtocol::Udp
            } else {
                NetProtocol::Tcp
            },
        );
        ctx.vnet = f.vnet;
        ctx.identity = f.identity.as_ref();
        ctx.device = f.device.as_ref();
        ctx.session_age_seconds = f.age;
        ctx.sni = f.sni;
        ctx.http_host = f.host;
        ctx.dns_fqdn = f.fqdn;
        prop_assert_eq!(
            show(Some(compiled.l4(&ctx))),
            show(Some(reference.l4(&ctx))),
            "l4 {:?}",
            f
        );
        prop_assert_eq!(
            show(compiled.http_off(&ctx)),
            show(reference.http_off(&ctx)),
            "http_off {:?}",
            f
        );
        prop_assert_eq!(
            show(Some(compiled.http_inspect(&ctx))),
            show(Some(reference.http_inspect(&ctx))),
            "http_inspect {:?}",
            f
        );
        prop_assert_eq!(
            show(Some(compiled.dns(&ctx))),
            show(Some(reference.dns(&ctx))),
            "dns {:?}",
            f
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Policies of 60 to 200 rules: guard groups spread over several 64-rule chunks.
    #[test]
    fn compiled_agrees_with_reference_on_large_policies(
        rules in sized_policy(60..200),
        flows in proptest::collection::vec(flow_strategy(), 24),
        allow_default in any::<bool>(),
    ) {
        agree(&rules, &flows, allow_default)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn compiled_agrees_with_reference(
        rules in policy_strategy(),
        flows in proptest::collection::vec(flow_strategy(), 12),
        allow_default in any::<bool>(),
    ) {
        agree(&rules, &flows, allow_default)?;
    }
}

/// The generator is only useful if its policies decide something: over a fixed sample,
/// rules must match (not only defaults), in every phase.
#[test]
fn generator_produces_matching_rules() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let lists = lists();
    let set = ListSet::build(&lists).unwrap();
    let mut matched = [0usize; 4];
    for _ in 0..200 {
        let rules = policy_strategy().new_tree(&mut runner).unwrap().current();
        let flow = flow_strategy().new_tree(&mut runner).unwrap().current();
        let p = CompiledPolicy::compile(&set, &rules, PolicyConfig::default()).unwrap();
        let mut ctx = FlowContext::new(flow.src, flow.dst, flow.port, NetProtocol::Tcp);
        ctx.identity = flow.identity.as_ref();
        ctx.device = flow.device.as_ref();
        ctx.http_host = flow.host;
        ctx.dns_fqdn = flow.fqdn;
        matched[0] += usize::from(!p.l4(&ctx).is_default());
        matched[1] += usize::from(p.http_off(&ctx).is_some());
        matched[2] += usize::from(!p.http_inspect(&ctx).is_default());
        matched[3] += usize::from(!p.dns(&ctx).is_default());
    }
    assert!(matched.iter().all(|&m| m >= 5), "{matched:?}");
}
