//! Phase semantics, validation and list handling, through the public API.

use std::collections::HashMap;
use std::net::IpAddr;

use uuid::Uuid;
use zt_policy::{
    parse_list_item, validate_lists, validate_rules, Action, CompileError, CompiledPolicy,
    DefaultAction, Device, Filter, FlowContext, Identity, List, ListError, ListSet, ListType,
    NetProtocol, Phase, PolicyConfig, ReferencePolicy, ReplaceListError, Rule, RuleError,
    SharedPolicy,
};

const K8S_LIST_ID: &str = "4b2a7c1e-95d3-4f0a-8e6b-2c9d1f3a5b70";

fn seed_list() -> List {
    List {
        id: Uuid::parse_str(K8S_LIST_ID).unwrap(),
        name: "Kubernetes API IPs".into(),
        slug: None,
        list_type: ListType::Ip,
        items: vec!["198.51.100.101/32".into(), "2001:DB8::101/128".into()],
        description: String::new(),
    }
}

fn rule(name: &str, precedence: u32, action: Action, filters: &[Filter], traffic: &str) -> Rule {
    Rule {
        id: Uuid::new_v4(),
        name: name.into(),
        description: String::new(),
        precedence,
        action,
        enabled: true,
        filters: filters.to_vec(),
        traffic: Some(traffic.into()).filter(|t: &String| !t.is_empty()),
        identity: None,
        device_posture: None,
    }
}

/// The seed's rule, built exactly as its Terraform does: `$` + the id without dashes.
fn seed_rule() -> Rule {
    let mut r = rule(
        "Don't inspect Kubernetes API",
        10000,
        Action::Off,
        &[Filter::Http],
        &format!(
            "any(http.conn.dst_ip[*] in ${})",
            K8S_LIST_ID.replace('-', "")
        ),
    );
    r.description = "Allow connections from kubectl to API".into();
    r
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ctx(dst: &str, port: u16) -> FlowContext<'static> {
    FlowContext::new(ip("192.0.2.10"), ip(dst), port, NetProtocol::Tcp)
}

fn compile(lists: &[List], rules: &[Rule], config: PolicyConfig) -> CompiledPolicy {
    let set = ListSet::build(lists).unwrap();
    let compiled = CompiledPolicy::compile(&set, rules, config).unwrap();
    // Every policy in this file is also checked against the reference interpreter below.
    ReferencePolicy::new(lists, rules, config).unwrap();
    compiled
}

/// Both evaluators, all phases, one context: they must agree, and the compiled answers
/// are returned.
fn decide(
    lists: &[List],
    rules: &[Rule],
    config: PolicyConfig,
    c: &FlowContext<'_>,
) -> [String; 4] {
    let compiled = compile(lists, rules, config);
    let reference = ReferencePolicy::new(lists, rules, config).unwrap();
    let show = |d: Option<zt_policy::Decision<'_>>| match d {
        None => "none".to_owned(),
        Some(d) => format!(
            "{}:{}:{}",
            d.phase,
            d.action,
            d.rule_name.unwrap_or("default")
        ),
    };
    let got = [
        show(Some(compiled.l4(c))),
        show(compiled.http_off(c)),
        show(Some(compiled.http_inspect(c))),
        show(Some(compiled.dns(c))),
    ];
    let want = [
        show(Some(reference.l4(c))),
        show(reference.http_off(c)),
        show(Some(reference.http_inspect(c))),
        show(Some(reference.dns(c))),
    ];
    assert_eq!(got, want);
    got
}

#[test]
fn seed_list_and_rule_end_to_end() {
    let lists = [seed_list()];
    let rules = [
        seed_rule(),
        rule(
            "kubectl",
            100,
            Action::Allow,
            &[Filter::L4],
            "net.dst.port == 443",
        ),
    ];
    for dst in ["198.51.100.101", "2001:db8::101"] {
        let got = decide(&lists, &rules, PolicyConfig::default(), &ctx(dst, 443));
        assert_eq!(got[0], "l4:allow:kubectl");
        assert_eq!(got[1], "http:off:Don't inspect Kubernetes API");
    }
    // Another destination on 443: l4 allows, no off rule, http default allows.
    let got = decide(
        &lists,
        &rules,
        PolicyConfig::default(),
        &ctx("198.51.100.102", 443),
    );
    assert_eq!(got[..3], ["l4:allow:kubectl", "none", "http:allow:default"]);
    // Without the l4 rule, the seed's flow is blocked at l4 (zero trust default).
    let got = decide(
        &lists,
        &rules[..1],
        PolicyConfig::default(),
        &ctx("198.51.100.101", 443),
    );
    assert_eq!(got[0], "l4:block:default");
}

#[test]
fn seed_rule_serde_matches_the_terraform_shape() {
    let json = format!(
        r#"{{"id":"{}","name":"Don't inspect Kubernetes API","description":"Allow connections from kubectl to API",
            "precedence":10000,"action":"off","enabled":true,"filters":["http"],
            "traffic":"any(http.conn.dst_ip[*] in ${})"}}"#,
        Uuid::new_v4(),
        K8S_LIST_ID.replace('-', "")
    );
    let r: Rule = serde_json::from_str(&json).unwrap();
    assert_eq!(r.action, Action::Off);
    assert_eq!(r.filters, vec![Filter::Http]);
    let back: Rule = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    let l: List = serde_json::from_str(&serde_json::to_string(&seed_list()).unwrap()).unwrap();
    assert_eq!(l, seed_list());
    assert!(serde_json::to_string(&seed_list())
        .unwrap()
        .contains(r#""type":"IP""#));
}

#[test]
fn l4_default_is_block_and_configurable() {
    let c = ctx("10.0.0.1", 22);
    assert_eq!(
        decide(&[], &[], PolicyConfig::default(), &c)[0],
        "l4:block:default"
    );
    let allow = PolicyConfig {
        l4_default: DefaultAction::Allow,
    };
    assert_eq!(decide(&[], &[], allow, &c)[0], "l4:allow:default");
    let policy = compile(&[], &[], PolicyConfig::default());
    let d = policy.l4(&c);
    assert!(d.is_default() && !d.permits() && d.phase == Phase::L4);
}

#[test]
fn first_match_by_precedence_not_by_order() {
    let rules = [
        rule(
            "late allow",
            300,
            Action::Allow,
            &[Filter::L4],
            "net.dst.port == 22",
        ),
        rule(
            "early block",
            200,
            Action::Block,
            &[Filter::L4],
            "net.dst.ip in {10.0.0.0/8}",
        ),
        rule(
            "earliest",
            100,
            Action::Allow,
            &[Filter::L4],
            "net.dst.port == 23",
        ),
    ];
    let got = decide(&[], &rules, PolicyConfig::default(), &ctx("10.1.2.3", 22));
    assert_eq!(got[0], "l4:block:early block");
    let got = decide(
        &[],
        &rules,
        PolicyConfig::default(),
        &ctx("192.168.1.1", 22),
    );
    assert_eq!(got[0], "l4:allow:late allow");
}

#[test]
fn off_runs_before_allow_and_block_whatever_their_precedence() {
    let rules = [
        rule("block all http", 1, Action::Block, &[Filter::Http], ""),
        rule(
            "off for 443",
            5000,
            Action::Off,
            &[Filter::Http],
            "net.dst.port == 443",
        ),
    ];
    let got = decide(&[], &rules, PolicyConfig::default(), &ctx("10.0.0.1", 443));
    assert_eq!(got[1], "http:off:off for 443");
    let got = decide(&[], &rules, PolicyConfig::default(), &ctx("10.0.0.1", 80));
    assert_eq!(got[1..3], ["none", "http:block:block all http"]);
}

#[test]
fn off_step_ignores_the_first_bytes_and_inspect_sees_them() {
    let lists = [List {
        id: Uuid::new_v4(),
        name: "hosts".into(),
        slug: Some("api_hosts".into()),
        list_type: ListType::Domain,
        items: vec!["api.example.com".into()],
        description: String::new(),
    }];
    let rules = [
        rule(
            "off",
            1,
            Action::Off,
            &[Filter::Http],
            "net.dst.port == 6443",
        ),
        rule(
            "block api",
            2,
            Action::Block,
            &[Filter::Http],
            "http.request.host in $api_hosts",
        ),
        rule(
            "block sni",
            3,
            Action::Block,
            &[Filter::Http],
            "net.sni matches r\"^evil\\.\"",
        ),
    ];
    let policy = compile(&lists, &rules, PolicyConfig::default());
    assert!(policy.inspects_http());
    let mut c = ctx("10.0.0.1", 443);
    assert!(policy.http_off(&c).is_none());
    // Host seen in the first bytes, matched case-insensitively against the domain list.
    c.http_host = Some("API.example.com");
    assert_eq!(
        decide(&lists, &rules, PolicyConfig::default(), &c)[2],
        "http:block:block api"
    );
    // The SNI wins over the Host for http.request.host.
    c.sni = Some("other.example.com");
    assert_eq!(
        decide(&lists, &rules, PolicyConfig::default(), &c)[2],
        "http:allow:default"
    );
    c.sni = Some("evil.example.com");
    assert_eq!(
        decide(&lists, &rules, PolicyConfig::default(), &c)[2],
        "http:block:block sni"
    );
    // Nothing seen (server-speaks-first protocol): host fields are absent, no match.
    let c = ctx("10.0.0.1", 443);
    assert_eq!(policy.http_inspect(&c).action, Action::Allow);
    // A policy with only off rules does not need the first bytes at all.
    assert!(!compile(&lists, &rules[..1], PolicyConfig::default()).inspects_http());
}

#[test]
fn disabled_rules_are_skipped_but_still_checked() {
    let mut r = rule(
        "disabled",
        1,
        Action::Allow,
        &[Filter::L4],
        "net.dst.port == 22",
    );
    r.enabled = false;
    let got = decide(
        &[],
        &[r.clone()],
        PolicyConfig::default(),
        &ctx("10.0.0.1", 22),
    );
    assert_eq!(got[0], "l4:block:default");
    r.traffic = Some("net.dst.prot == 22".into());
    let err = CompiledPolicy::compile(&ListSet::build(&[]).unwrap(), &[r], PolicyConfig::default())
        .unwrap_err();
    assert!(matches!(err, CompileError::Expression { .. }), "{err}");
}

#[test]
fn absent_identity_and_posture() {
    let mut r = rule("ops", 1, Action::Allow, &[Filter::L4], "");
    r.identity =
        Some("identity.email == \"ops@example.com\" or any(identity.groups[*] == \"sre\")".into());
    let mut nobody = rule("not ops", 2, Action::Block, &[Filter::L4], "");
    nobody.identity = Some("not identity.email == \"ops@example.com\"".into());
    let mut posture = rule("encrypted", 3, Action::Allow, &[Filter::L4], "");
    posture.device_posture =
        Some("device.posture.disk_encrypted and device.posture.firewall == false".into());
    let rules = [r, nobody, posture];

    // No identity: a comparison on an absent field is false, so `not (...)` is true.
    let c = ctx("10.0.0.1", 22);
    assert_eq!(
        decide(&[], &rules, PolicyConfig::default(), &c)[0],
        "l4:block:not ops"
    );

    let ops = Identity {
        id: "u1".into(),
        email: "ops@example.com".into(),
        groups: vec![],
        idp: None,
    };
    let c = FlowContext {
        identity: Some(&ops),
        ..ctx("10.0.0.1", 22)
    };
    assert_eq!(
        decide(&[], &rules, PolicyConfig::default(), &c)[0],
        "l4:allow:ops"
    );

    let sre = Identity {
        id: "u2".into(),
        email: "someone@example.com".into(),
        groups: vec!["dev".into(), "sre".into()],
        idp: None,
    };
    let c = FlowContext {
        identity: Some(&sre),
        ..ctx("10.0.0.1", 22)
    };
    assert_eq!(
        decide(&[], &rules, PolicyConfig::default(), &c)[0],
        "l4:allow:ops"
    );

    // Posture: a check not reported reads as false.
    let dev = Device {
        id: "d1".into(),
        posture: HashMap::from([("disk_encrypted".to_owned(), true)]),
    };
    let c = FlowContext {
        device: Some(&dev),
        ..ctx("10.0.0.1", 22)
    };
    let policy = compile(&[], &rules[2..], PolicyConfig::default());
    assert_eq!(policy.l4(&c).action, Action::Allow);
    let no_device = ctx("10.0.0.1", 22);
    assert_eq!(policy.l4(&no_device).action, Action::Block);
}

#[test]
fn quantifiers_over_groups() {
    let r = |traffic: &str| {
        let mut r = rule("r", 1, Action::Allow, &[Filter::L4], "");
        r.identity = Some(traffic.into());
        [r]
    };
    let eng = Identity {
        id: "u".into(),
        email: "e@example.com".into(),
        groups: vec!["Eng".into(), "eng-oncall".into()],
        idp: None,
    };
    let empty = Identity {
        groups: vec![],
        ..eng.clone()
    };
    let verdict = |expr: &str, who: &Identity| {
        let c = FlowContext {
            identity: Some(who),
            ..ctx("10.0.0.1", 22)
        };
        decide(&[], &r(expr), PolicyConfig::default(), &c)[0].clone()
    };
    let allow = "l4:allow:r";
    assert_eq!(
        verdict("any(identity.groups[*] == \"eng\")", &eng),
        "l4:block:default"
    );
    assert_eq!(
        verdict("any(lower(identity.groups[*]) == \"eng\")", &eng),
        allow
    );
    assert_eq!(
        verdict("all(identity.groups[*] contains \"ng\")", &eng),
        allow
    );
    assert_eq!(
        verdict("all(not identity.groups[*] contains \"x\")", &eng),
        allow
    );
    // all() over no elements is false: a vacuous truth must not grant access.
    assert_eq!(
        verdict("all(identity.groups[*] contains \"x\")", &empty),
        "l4:block:default"
    );
    assert_eq!(
        verdict("not any(identity.groups[*] == \"eng\")", &empty),
        allow
    );
}

#[test]
fn operators_and_literals() {
    let lists: [List; 0] = [];
    let allow_if = |traffic: &str, c: &FlowContext<'_>| {
        let rules = [rule("r", 1, Action::Allow, &[Filter::L4], traffic)];
        decide(&lists, &rules, PolicyConfig::default(), c)[0] == "l4:allow:r"
    };
    let c = FlowContext {
        vnet: "prod",
        session_age_seconds: Some(3600),
        ..ctx("2001:db8::101", 6443)
    };
    assert!(allow_if("net.dst.port in {443 6400..6500}", &c));
    assert!(allow_if("net.dst.port >= 6443 && net.dst.port lt 6444", &c));
    assert!(allow_if("net.dst.ip in {2001:db8::/32, 10.0.0.0/8}", &c));
    assert!(allow_if(
        "net.dst.ip == 2001:db8::101 and net.src.ip != 192.0.2.11",
        &c
    ));
    assert!(allow_if(
        "net.protocol == \"tcp\" ^^ net.vnet == \"staging\"",
        &c
    ));
    assert!(!allow_if(
        "net.protocol == \"tcp\" xor net.vnet == \"prod\"",
        &c
    ));
    assert!(allow_if("session.age_seconds < 28800", &c));
    assert!(allow_if(
        "net.vnet in {\"prod\" \"dev\"} and net.vnet ~ \"^pr\"",
        &c
    ));
    assert!(allow_if(
        "!(net.dst.port == 22) && (net.dst.port == 1 || net.dst.port == 6443)",
        &c
    ));
    let no_session = ctx("10.0.0.1", 22);
    assert!(!allow_if("session.age_seconds < 28800", &no_session));
    assert!(!allow_if("session.age_seconds >= 0", &no_session));
}

#[test]
fn lists_by_id_in_any_case_and_by_slug() {
    let mut l = seed_list();
    l.slug = Some("k8s.api".into());
    let upper = l.id.simple().to_string().to_uppercase();
    for reference in [format!("${upper}"), "$k8s.api".into(), l.id_reference()] {
        let rules = [rule(
            "r",
            1,
            Action::Allow,
            &[Filter::L4],
            &format!("net.dst.ip in {reference}"),
        )];
        let got = decide(
            &[l.clone()],
            &rules,
            PolicyConfig::default(),
            &ctx("198.51.100.101", 443),
        );
        assert_eq!(got[0], "l4:allow:r", "{reference}");
    }
}

#[test]
fn many_distinct_lists_span_chunks_of_guard_groups() {
    // Every rule references its own list: guard groups over three 64-rule chunks, and more
    // (value, list) pairs than the memo holds, so the last rules run unguarded and unmemoised.
    let lists: Vec<List> = (0..150u32)
        .map(|i| List {
            id: Uuid::new_v4(),
            name: format!("l{i}"),
            slug: Some(format!("l{i}")),
            list_type: ListType::Ip,
            items: vec![format!("10.{i}.0.0/16")],
            description: String::new(),
        })
        .collect();
    let rules: Vec<Rule> = (0..150u32)
        .map(|i| {
            rule(
                &format!("r{i}"),
                i,
                Action::Allow,
                &[Filter::L4],
                &format!("net.dst.ip in $l{i} and net.dst.port == 22"),
            )
        })
        .collect();
    let got = decide(
        &lists,
        &rules,
        PolicyConfig::default(),
        &ctx("10.149.1.1", 22),
    );
    assert_eq!(got[0], "l4:allow:r149");
    let got = decide(
        &lists,
        &rules,
        PolicyConfig::default(),
        &ctx("10.149.1.1", 23),
    );
    assert_eq!(got[0], "l4:block:default");
}

#[test]
fn rule_validation_errors() {
    let a = rule("a", 10, Action::Allow, &[Filter::L4, Filter::Http], "");
    let b = rule("b", 10, Action::Block, &[Filter::Http], "");
    assert_eq!(
        validate_rules(&[a.clone(), b]).unwrap_err(),
        RuleError::DuplicatePrecedence {
            filter: Filter::Http,
            precedence: 10,
            first: "a".into(),
            second: "b".into()
        }
    );
    // The same precedence in different filters is fine.
    let c = rule("c", 10, Action::Block, &[Filter::Dns], "");
    validate_rules(&[a, c]).unwrap();

    let off = rule("off", 1, Action::Off, &[Filter::Http, Filter::L4], "");
    assert_eq!(
        validate_rules(&[off]).unwrap_err().to_string(),
        "rule \"off\": action `off` (do not inspect) is only valid with the http filter, not l4"
    );
    let none = rule("none", 1, Action::Allow, &[], "");
    assert!(matches!(
        validate_rules(&[none]),
        Err(RuleError::NoFilters { .. })
    ));
    let twice = rule("twice", 1, Action::Allow, &[Filter::L4, Filter::L4], "");
    assert!(matches!(
        validate_rules(&[twice]),
        Err(RuleError::DuplicateFilter { .. })
    ));
    let unnamed = rule(" ", 1, Action::Allow, &[Filter::L4], "");
    assert!(matches!(
        validate_rules(&[unnamed]),
        Err(RuleError::EmptyName { .. })
    ));
    let x = rule("x", 1, Action::Allow, &[Filter::L4], "");
    let mut y = rule("y", 2, Action::Allow, &[Filter::L4], "");
    y.id = x.id;
    assert!(matches!(
        validate_rules(&[x, y]),
        Err(RuleError::DuplicateId { .. })
    ));
}

#[test]
fn compile_error_names_rule_slot_and_filter() {
    let mut r = rule(
        "ops only",
        5,
        Action::Allow,
        &[Filter::L4],
        "net.dst.port == 443",
    );
    r.identity = Some("identity.email == ops@example.com".into());
    let err = CompiledPolicy::compile(
        &ListSet::build(&[]).unwrap(),
        &[r.clone()],
        PolicyConfig::default(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("rule \"ops only\" ({}), identity expression, l4 filter: invalid value `ops@example.com`", r.id)),
        "{text}"
    );
    // The rendered caret sits under the bad value, column 18.
    assert!(
        text.ends_with(&format!("\n  | {}{}", " ".repeat(18), "^".repeat(15))),
        "{text}"
    );
}

#[test]
fn list_validation_errors() {
    let mut l = seed_list();
    l.items.push("10.0.0.1/8".into());
    assert_eq!(
        l.validate().unwrap_err().to_string(),
        "list \"Kubernetes API IPs\", item 2: invalid IP list item `10.0.0.1/8`: host bits are set; did you mean 10.0.0.0/8?"
    );
    for (t, bad) in [
        (ListType::Ip, "not-an-ip"),
        (ListType::Ip, ""),
        (ListType::Domain, "exa mple.com"),
        (ListType::Domain, "-bad.example.com"),
        (ListType::Domain, "a..b"),
        (ListType::Email, "no-at-sign"),
        (ListType::Email, "@example.com"),
        (ListType::Email, "a@b@"),
        (ListType::Device, "has space"),
        (ListType::Device, &"x".repeat(129)),
    ] {
        let err = parse_list_item(t, bad).unwrap_err();
        assert_eq!(err.item, bad);
        assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
    }
    assert!(parse_list_item(ListType::Email, "Ops@Example.COM").is_ok());
    assert!(parse_list_item(ListType::Device, "8e343b13-a087-48ea-825f-9783931ff2a5").is_ok());

    let mut bad_slug = seed_list();
    bad_slug.slug = Some("K8s".into());
    assert!(matches!(
        bad_slug.validate(),
        Err(ListError::BadSlug { .. })
    ));
    bad_slug.slug = Some("0123456789abcdef0123456789abcdef".into());
    assert!(matches!(
        bad_slug.validate(),
        Err(ListError::BadSlug { .. })
    ));

    let mut a = seed_list();
    a.slug = Some("same".into());
    let mut b = a.clone();
    b.id = Uuid::new_v4();
    b.name = "other".into();
    assert!(matches!(
        validate_lists(&[a.clone(), b.clone()]),
        Err(ListError::DuplicateSlug { .. })
    ));
    assert!(matches!(
        ListSet::build(&[a.clone(), b]),
        Err(ListError::DuplicateSlug { .. })
    ));
    let mut c = a.clone();
    c.slug = None;
    assert!(matches!(
        validate_lists(&[a, c]),
        Err(ListError::DuplicateId { .. })
    ));
}

#[test]
fn replacing_a_list_swaps_atomically_and_keeps_held_policies() {
    let lists = [seed_list()];
    let rules = [rule(
        "k8s",
        1,
        Action::Allow,
        &[Filter::L4],
        &format!("net.dst.ip in {}", seed_list().id_reference()),
    )];
    let shared = SharedPolicy::new(compile(&lists, &rules, PolicyConfig::default()));
    let held = shared.load_full();
    let new_api = ctx("198.51.100.102", 443);
    assert_eq!(held.l4(&new_api).action, Action::Block);

    let mut grown = seed_list();
    grown.items.push("198.51.100.102".into());
    shared.replace_list(&grown).unwrap();
    assert_eq!(shared.load().l4(&new_api).action, Action::Allow);
    assert_eq!(held.l4(&new_api).action, Action::Block);

    let mut retyped = grown.clone();
    retyped.list_type = ListType::Domain;
    retyped.items = vec!["example.com".into()];
    assert!(matches!(
        shared.replace_list(&retyped),
        Err(ReplaceListError::TypeChanged { .. })
    ));
    let mut unknown = grown.clone();
    unknown.id = Uuid::new_v4();
    assert!(matches!(
        shared.replace_list(&unknown),
        Err(ReplaceListError::Unknown(_))
    ));
    let mut invalid = grown;
    invalid.items.push("nope".into());
    assert!(matches!(
        shared.replace_list(&invalid),
        Err(ReplaceListError::Invalid(_))
    ));
    // Failed replacements left the policy as it was.
    assert_eq!(shared.load().l4(&new_api).action, Action::Allow);
}

#[test]
fn concurrent_readers_see_one_policy_or_the_other() {
    let lists = [seed_list()];
    let rules = [rule(
        "k8s",
        1,
        Action::Allow,
        &[Filter::L4],
        &format!("net.dst.ip in {}", seed_list().id_reference()),
    )];
    let shared = SharedPolicy::new(compile(&lists, &rules, PolicyConfig::default()));
    let mut with = seed_list();
    with.items.push("198.51.100.102".into());
    let without = seed_list();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..2000 {
                    let p = shared.load();
                    // Within one loaded policy the answer is stable.
                    let a = p.l4(&ctx("198.51.100.102", 443)).action;
                    let b = p.l4(&ctx("198.51.100.102", 443)).action;
                    assert_eq!(a, b);
                    assert_eq!(p.l4(&ctx("198.51.100.101", 443)).action, Action::Allow);
                }
            });
        }
        for i in 0..200 {
            shared
                .replace_list(if i % 2 == 0 { &with } else { &without })
                .unwrap();
        }
    });
}
