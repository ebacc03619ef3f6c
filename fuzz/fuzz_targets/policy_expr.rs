//! Fuzzes the policy expression pipeline: parse, check and compile of arbitrary input must
//! never panic and must stay bounded (input length, nesting depth and regex size are
//! limited by the crate). An error's span must lie inside the input and render. Whatever
//! compiles is evaluated by the compiled policy and the reference interpreter on a fixed
//! flow, and the two must agree.
//!
//! The first byte picks the filter, the `off` step and the expression slot; the rest is
//! the expression.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use uuid::Uuid;
use zt_policy::{
    check_expression, Action, CompiledPolicy, Device, ExprSlot, Filter, FlowContext, Identity,
    List, ListSet, ListType, NetProtocol, PolicyConfig, ReferencePolicy, Rule,
};

fn lists() -> &'static (Vec<List>, ListSet) {
    static LISTS: OnceLock<(Vec<List>, ListSet)> = OnceLock::new();
    LISTS.get_or_init(|| {
        let list = |id: u128, slug: &str, t: ListType, items: &[&str]| List {
            id: Uuid::from_u128(id),
            name: slug.to_owned(),
            slug: Some(slug.to_owned()),
            list_type: t,
            items: items.iter().map(|s| s.to_string()).collect(),
            description: String::new(),
        };
        let lists = vec![
            list(
                1,
                "k8s",
                ListType::Ip,
                &["198.51.100.101/32", "2001:db8::101/128"],
            ),
            list(2, "admins", ListType::Email, &["ops@example.com"]),
            list(3, "hosts", ListType::Domain, &["api.example.com"]),
            list(4, "devices", ListType::Device, &["dev-1"]),
        ];
        let set = ListSet::build(&lists).expect("fixed lists are valid");
        (lists, set)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(src) = std::str::from_utf8(rest) else {
        return;
    };
    let filter = match sel % 3 {
        0 => Filter::L4,
        1 => Filter::Http,
        _ => Filter::Dns,
    };
    let off = filter == Filter::Http && sel & 4 != 0;
    let slot = match (sel >> 3) % 3 {
        0 => ExprSlot::Traffic,
        1 => ExprSlot::Identity,
        _ => ExprSlot::DevicePosture,
    };
    let (lists, set) = lists();
    if let Err(e) = check_expression(src, filter, off, slot, set) {
        assert!(e.span().start <= e.span().end && e.span().end <= src.len());
        let _ = e.to_string();
        return;
    }
    let text = Some(src.to_owned());
    let rule = Rule {
        id: Uuid::from_u128(7),
        name: "fuzzed".into(),
        description: String::new(),
        precedence: 1,
        action: if off { Action::Off } else { Action::Allow },
        enabled: true,
        filters: vec![filter],
        traffic: if slot == ExprSlot::Traffic {
            text.clone()
        } else {
            None
        },
        identity: if slot == ExprSlot::Identity {
            text.clone()
        } else {
            None
        },
        device_posture: if slot == ExprSlot::DevicePosture {
            text
        } else {
            None
        },
    };
    let rules = [rule];
    let compiled = CompiledPolicy::compile(set, &rules, PolicyConfig::default())
        .unwrap_or_else(|e| panic!("checked expression failed to compile: {e}"));
    let reference = ReferencePolicy::new(lists, &rules, PolicyConfig::default())
        .unwrap_or_else(|e| panic!("reference refused a compiled policy: {e}"));
    let identity = Identity {
        id: "u1".into(),
        email: "Ops@example.com".into(),
        groups: vec!["eng".into(), "SRE".into()],
        idp: Some("corp".into()),
    };
    let device = Device {
        id: "dev-1".into(),
        posture: HashMap::from([("disk".to_owned(), true)]),
    };
    let mut ctx = FlowContext::new(
        "10.0.0.1".parse().expect("literal"),
        "198.51.100.101".parse().expect("literal"),
        443,
        NetProtocol::Tcp,
    );
    ctx.identity = Some(&identity);
    ctx.device = Some(&device);
    ctx.session_age_seconds = Some(60);
    ctx.sni = Some("api.example.com");
    ctx.dns_fqdn = Some("API.example.com");
    let key = |d: zt_policy::Decision<'_>| (d.action, d.phase, d.rule_id);
    assert_eq!(key(compiled.l4(&ctx)), key(reference.l4(&ctx)));
    assert_eq!(
        compiled.http_off(&ctx).map(key),
        reference.http_off(&ctx).map(key)
    );
    assert_eq!(
        key(compiled.http_inspect(&ctx)),
        key(reference.http_inspect(&ctx))
    );
    assert_eq!(key(compiled.dns(&ctx)), key(reference.dns(&ctx)));
});
