//! Golden diagnostics: malformed expressions, each with its exact message and caret span.
//!
//! A change in wording or position shows up here as a diff; that is the point.

use uuid::Uuid;
use zt_policy::{check_expression, ExprSlot, Filter, List, ListSet, ListType};

const K8S_ID: &str = "4b2a7c1e95d34f0a8e6b2c9d1f3a5b70";

fn lists() -> ListSet {
    let list = |id: &str, slug: &str, t: ListType, items: &[&str]| List {
        id: Uuid::parse_str(id).unwrap(),
        name: slug.to_owned(),
        slug: Some(slug.to_owned()),
        list_type: t,
        items: items.iter().map(|s| s.to_string()).collect(),
        description: String::new(),
    };
    ListSet::build(&[
        list(
            K8S_ID,
            "k8s",
            ListType::Ip,
            &["198.51.100.101/32", "2001:db8::101/128"],
        ),
        list(
            "00000000-0000-4000-8000-000000000002",
            "admins",
            ListType::Email,
            &["ops@example.com"],
        ),
        list(
            "00000000-0000-4000-8000-000000000003",
            "hosts",
            ListType::Domain,
            &["api.example.com"],
        ),
    ])
    .unwrap()
}

/// (expression, filter, off step?, slot, message, caret span)
type Case = (
    &'static str,
    Filter,
    bool,
    ExprSlot,
    &'static str,
    std::ops::Range<usize>,
);

use ExprSlot::{DevicePosture as D, Identity as I, Traffic as T};
use Filter::{Dns, Http, L4};

fn cases() -> Vec<Case> {
    vec![
        ("", L4, false, T,
            "empty expression",
            0..0),
        ("   ", L4, false, T,
            "empty expression",
            0..3),
        ("net.dst.prot == 443", L4, false, T,
            "unknown field `net.dst.prot`; did you mean `net.dst.port`?",
            0..12),
        ("net.dst.port == ", L4, false, T,
            "expected a value (number, IP address, CIDR, true/false or quoted string), found end of expression",
            16..16),
        ("net.dst.port 443", L4, false, T,
            "expected a comparison operator (==, !=, <, <=, >, >=, in, contains, matches), `and`, `or` or `xor`, found `443`",
            13..16),
        ("net.dst.port == 443 and", L4, false, T,
            "expected a field name, `not`, `(`, `any(`, `all(` or `lower(`, found end of expression",
            23..23),
        ("(net.dst.port == 443", L4, false, T,
            "expected `)`, found end of expression",
            20..20),
        ("net.dst.port == 443)", L4, false, T,
            "expected `and`, `or`, `xor` or the end of the expression, found `)`",
            19..20),
        ("net.dst.port == \"443\"", L4, false, T,
            "expected an integer to compare with `net.dst.port`, found a string",
            16..21),
        ("net.dst.port == 70000", L4, false, T,
            "integer `70000` is out of range",
            16..21),
        ("net.dst.port == 99999999999999999999", L4, false, T,
            "integer `99999999999999999999` is out of range",
            16..36),
        ("net.dst.port in {}", L4, false, T,
            "empty set `{}`",
            16..18),
        ("net.dst.port in {90..80}", L4, false, T,
            "range 90..80 is empty: its start is above its end",
            17..23),
        ("net.dst.port contains 4", L4, false, T,
            "operator `contains` is not defined for integer field `net.dst.port`",
            13..21),
        ("net.dst.ip == 10.0.0.0/8", L4, false, T,
            "expected an IP address (test a network with `in {...}`) to compare with `net.dst.ip`, found a CIDR",
            14..24),
        ("net.dst.ip in {10.0.0.1/8}", L4, false, T,
            "CIDR `10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?",
            15..25),
        ("net.dst.ip in {10.0.0.1 \"x\"}", L4, false, T,
            "expected an IP address or CIDR to compare with `net.dst.ip`, found a string",
            24..27),
        ("net.dst.ip == 300.1.1.1", L4, false, T,
            "invalid value `300.1.1.1`: expected a number, an IP address, a CIDR, true/false or a quoted string",
            14..23),
        ("net.dst.ip matches \"10.*\"", L4, false, T,
            "operator `matches` is not defined for IP field `net.dst.ip`; use `in {...}` for networks",
            11..18),
        ("net.dst.ip in $nosuch", L4, false, T,
            "unknown list `$nosuch`: refer to a list by its id without dashes or by its slug",
            14..21),
        ("net.dst.ip in $admins", L4, false, T,
            "list `$admins` has type EMAIL; `net.dst.ip` needs an IP list",
            14..21),
        ("identity.email in $k8s", L4, false, T,
            "list `$k8s` has type IP; `identity.email` needs an EMAIL list",
            18..22),
        ("net.dst.port in $k8s", L4, false, T,
            "list `$k8s` has type IP; `net.dst.port` needs no list (only IP, e-mail, device id and host fields take lists)",
            16..20),
        ("http.request.host == \"a\"", L4, false, T,
            "field `http.request.host` is not available in the l4 filter (it runs at flow open, before any bytes are read)",
            0..17),
        ("http.request.host == \"a\"", Http, true, T,
            "field `http.request.host` is not available to `off` rules (they run before the first bytes are read; only connection, identity and device fields are known)",
            0..17),
        ("any(http.conn.dst_ip[*] in $k8s)", L4, false, T,
            "field `http.conn.dst_ip` is not available in the l4 filter (it runs at flow open, before any bytes are read)",
            4..20),
        ("dns.fqdn == \"a\"", Http, false, T,
            "field `dns.fqdn` is not available in the http filter",
            0..8),
        ("http.conn.dst_ip in $k8s", Http, true, T,
            "`http.conn.dst_ip` is an array; write `any(http.conn.dst_ip[*] ...)` or `all(http.conn.dst_ip[*] ...)`",
            0..16),
        ("http.conn.dst_ip[*] in $k8s", Http, true, T,
            "a `[*]` comparison yields one result per element; wrap it in any(...) or all(...)",
            0..27),
        ("any(net.dst.ip in $k8s)", L4, false, T,
            "any(...) needs a `field[*]` comparison inside",
            0..23),
        ("net.dst.ip[*] == 10.0.0.1", L4, false, T,
            "`net.dst.ip` is not an array; remove `[*]`",
            0..13),
        ("any(http.conn.dst_ip[*] in $k8s) and http.conn.dst_ip[*] == 10.0.0.1", Http, true, T,
            "a `[*]` comparison yields one result per element; wrap it in any(...) or all(...)",
            37..68),
        ("net.dst.port", L4, false, T,
            "`net.dst.port` has type integer, not boolean: compare it with something to make a condition",
            0..12),
        ("device.posture.disk == 1", L4, false, T,
            "expected true or false to compare with `device.posture.disk`, found an integer",
            23..24),
        ("device.posture.disk > true", L4, false, T,
            "operator `>` is not defined for boolean field `device.posture.disk`; use the field alone as a condition, or `not field`",
            20..21),
        ("lower(net.dst.port) == 1", L4, false, T,
            "lower() takes a string, but `net.dst.port` has type integer",
            0..19),
        ("identity.email matches \"(\"", L4, false, T,
            "invalid regular expression: unclosed group",
            23..26),
        ("identity.email matches \"\\d+\"", L4, false, T,
            "unknown escape `\\d` in string; regular expressions are easier as raw strings: r\"...\"",
            24..26),
        ("identity.email == \"unterminated", L4, false, T,
            "unterminated string literal",
            18..31),
        ("identity.email == 'x'", L4, false, T,
            "unexpected character `'`",
            18..19),
        ("net.dst.port == 443", L4, false, I,
            "field `net.dst.port` cannot be used in the identity expression; put it in the traffic expression",
            0..12),
        ("identity.email == \"a@b.c\"", L4, false, D,
            "field `identity.email` cannot be used in the device_posture expression; identity fields belong in the identity expression",
            0..14),
        ("device.id == \"x\"", L4, false, I,
            "field `device.id` cannot be used in the identity expression; device fields belong in the device_posture expression",
            0..9),
        ("identity.email == alice", L4, false, T,
            "invalid value `alice`: expected a number, an IP address, a CIDR, true/false or a quoted string",
            18..23),
        ("net.dst.ip == 10.0.0.1 and or net.dst.port == 1", L4, false, T,
            "expected a field name, `not`, `(`, `any(`, `all(` or `lower(`, found `or`",
            27..29),
        (
            "any(http.conn.dst_ip[*] in $k8s)",
            Dns,
            false,
            T,
            "field `http.conn.dst_ip` is not available in the dns filter",
            4..20,
        ),
        ("not", L4, false, T,
            "expected a field name, `not`, `(`, `any(`, `all(` or `lower(`, found end of expression",
            3..3),
        ("net.dst.ip in 10.0.0.0/8", L4, false, T,
            "expected a set `{...}` or a list `$name` after `in`, found `10.0.0.0/8`",
            14..24),
        ("http.conn.dst_ip[0] in $k8s", Http, true, T,
            "expected `*` (only `[*]` is supported), found `0`",
            17..18),
        ("any(identity.groups[*] in $admins)", L4, false, T,
            "list `$admins` has type EMAIL; `identity.groups` needs no list (only IP, e-mail, device id and host fields take lists)",
            26..33),
        ("lower(identity.email) in $admins", L4, false, T,
            "lower() is not allowed before `in $admins`: list lookups already ignore ASCII case",
            0..21),
        ("net.dst.ip in $", L4, false, T,
            "expected a list id or slug after `$`, found end of expression",
            14..15),
        ("device.posture == true", L4, false, T,
            "unknown field `device.posture`; did you mean `device.posture.<check name>`?",
            0..14),
        ("identity.email matches \"a{1000}{1000}\"", L4, false, T,
            "regular expression is too large (compiled size limit 262144 bytes)",
            23..38),
    ]
}

#[test]
fn golden_diagnostics() {
    let lists = lists();
    let mut failures = Vec::new();
    let cases = cases();
    assert!(cases.len() >= 30);
    for (expr, filter, off, slot, message, span) in cases {
        let err = match check_expression(expr, filter, off, slot, &lists) {
            Ok(()) => {
                failures.push(format!("{expr:?}: accepted"));
                continue;
            }
            Err(e) => e,
        };
        let got = (err.kind().to_string(), err.span());
        if got != (message.to_owned(), span.clone()) {
            failures.push(format!(
                "{expr:?}\n   want {message:?} at {span:?}\n   got  {:?} at {:?}",
                got.0, got.1
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rendering_puts_the_caret_under_the_span() {
    let err = check_expression("net.dst.prot == 443", L4, false, T, &lists()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown field `net.dst.prot`; did you mean `net.dst.port`?\n  |\n1 | net.dst.prot == 443\n  | ^^^^^^^^^^^^"
    );
    // Multi-line expressions show the line of the error, numbered.
    let err = check_expression(
        "net.dst.port == 443\n  and net.protocol == tcp",
        L4,
        false,
        T,
        &lists(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value `tcp`: expected a number, an IP address, a CIDR, true/false or a quoted string\n  |\n2 |   and net.protocol == tcp\n  |                       ^^^"
    );
    // Carets count characters, not bytes.
    let err =
        check_expression("identity.email == \"é\" and é", L4, false, T, &lists()).unwrap_err();
    let want = format!(
        "\n1 | identity.email == \"é\" and é\n  | {}^",
        " ".repeat(26)
    );
    assert!(err.to_string().ends_with(&want), "{err}");
}

#[test]
fn end_of_input_errors_point_past_the_last_character() {
    let err = check_expression("net.dst.port ==", L4, false, T, &lists()).unwrap_err();
    assert_eq!(err.span(), 15..15);
    let want = format!("\n1 | net.dst.port ==\n  | {}^", " ".repeat(15));
    assert!(err.to_string().ends_with(&want), "{err}");
}
