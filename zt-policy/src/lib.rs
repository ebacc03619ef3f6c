//! Gateway policy for zt: lists, rules and a wirefilter-style filter expression language.
//!
//! The edge asks this crate one question per flow and phase: given what is known about the
//! flow ([`FlowContext`]), what does the policy say ([`Decision`])? Rules ([`Rule`]) have an
//! action, a precedence, the filters (phases) they apply to and up to three expressions
//! (`traffic`, `identity`, `device_posture`) over typed fields such as `net.dst.ip`,
//! `http.request.host` and `device.posture.<check>`; they may refer to [`List`]s of IPs,
//! domains, e-mail addresses or device ids. Expressions are parsed with byte spans,
//! checked against the field scheme, and compiled; errors point at the offending text
//! with a caret ([`ExprError`]).
//!
//! The phases, in the order a flow meets them (the first block ends it):
//! 1. [`CompiledPolicy::l4`] at flow open; no match → block (configurable).
//! 2. [`CompiledPolicy::http_off`] before reading any bytes (a match means pass through
//!    untouched), then [`CompiledPolicy::http_inspect`] on the SNI/Host from the first
//!    bytes; no match → allow.
//! 3. [`CompiledPolicy::dns`] for DNS queries; no match → allow.
//!
//! A [`CompiledPolicy`] is immutable; [`SharedPolicy`] holds the current one and swaps in
//! a new one atomically. [`ReferencePolicy`] is a slow tree-walking interpreter of the same
//! language, kept as the oracle for tests and benchmarks.
//!
//! This crate does no I/O and knows nothing of QUIC, sessions or audit logs: the edge
//! fills the context, calls the phases and records the decisions. It never terminates TLS;
//! `http.request.host` is only what the first bytes reveal.
//!
//! ```
//! use uuid::Uuid;
//! use zt_policy::{
//!     Action, CompiledPolicy, Filter, FlowContext, List, ListSet, ListType, PolicyConfig,
//!     NetProtocol, Rule,
//! };
//!
//! // The seed's list and rule: do not inspect traffic to the Kubernetes API servers.
//! let list = List {
//!     id: Uuid::parse_str("4b2a7c1e-95d3-4f0a-8e6b-2c9d1f3a5b70").unwrap(),
//!     name: "Kubernetes API IPs".into(),
//!     slug: None,
//!     list_type: ListType::Ip,
//!     items: vec!["198.51.100.101/32".into(), "2001:DB8::101/128".into()],
//!     description: String::new(),
//! };
//! let rule = |name: &str, precedence, action, filter, traffic: String| Rule {
//!     id: Uuid::new_v4(),
//!     name: name.into(),
//!     description: String::new(),
//!     precedence,
//!     action,
//!     enabled: true,
//!     filters: vec![filter],
//!     traffic: Some(traffic),
//!     identity: None,
//!     device_posture: None,
//! };
//! let rules = [
//!     rule("Don't inspect Kubernetes API", 10000, Action::Off, Filter::Http,
//!          format!("any(http.conn.dst_ip[*] in {})", list.id_reference())),
//!     // l4 blocks by default, so the flow also needs an l4 allow.
//!     rule("kubectl to the API", 100, Action::Allow, Filter::L4,
//!          "net.dst.port == 443".into()),
//! ];
//! let lists = ListSet::build(&[list]).unwrap();
//! let policy = CompiledPolicy::compile(&lists, &rules, PolicyConfig::default()).unwrap();
//!
//! let ctx = FlowContext::new(
//!     "192.0.2.10".parse().unwrap(),
//!     "2001:db8::101".parse().unwrap(),
//!     443,
//!     NetProtocol::Tcp,
//! );
//! assert_eq!(policy.l4(&ctx).action, Action::Allow);
//! let off = policy.http_off(&ctx).unwrap();
//! assert_eq!(off.action, Action::Off);
//! assert_eq!(off.rule_name, Some("Don't inspect Kubernetes API"));
//!
//! // A typo is an error with a caret, never a silent allow.
//! let mut bad = rules[1].clone();
//! bad.traffic = Some("net.dst.prot == 443".into());
//! let err = CompiledPolicy::compile(&lists, &[bad], PolicyConfig::default()).unwrap_err();
//! assert!(err.to_string().contains("did you mean `net.dst.port`?"));
//! ```

mod compile;
mod context;
mod expr;
mod list;
mod policy;
mod reference;
mod rule;

pub use context::{Device, FlowContext, Identity, NetProtocol};

/// The former name of [`NetProtocol`], kept so code written against it still builds.
#[deprecated(
    since = "0.1.0",
    note = "renamed `NetProtocol` (the `net.protocol` field), apart from `zt_proto::Protocol`"
)]
pub type Protocol = NetProtocol;
pub use expr::{field_names, field_type, ExprError, ExprErrorKind, FieldType, MAX_REGEX_SIZE};
pub use list::{
    parse_list_item, validate_lists, List, ListError, ListItem, ListItemError, ListType,
};
pub use policy::{
    CompileError, CompiledPolicy, Decision, DefaultAction, ListSet, Phase, PolicyConfig,
    PolicyGuard, ReplaceListError, SharedPolicy,
};
pub use reference::ReferencePolicy;
pub use rule::{validate_rules, Action, ExprSlot, Filter, Rule, RuleError};

/// Longest expression accepted, in bytes. Real rules are a few hundred bytes; the bound
/// keeps parsing and error rendering of hostile input cheap.
pub const MAX_EXPR_LEN: usize = 8 * 1024;

/// Deepest nesting of parentheses, `not`, `any`, `all` and `lower` in one expression; it
/// bounds the recursion of the parser, the checker and the evaluator.
pub const MAX_NESTING: usize = 32;

/// Checks one expression for the given filter and slot without building a policy, as an
/// admin API does when a rule is edited. `lists` resolves `$` references.
///
/// ```
/// use zt_policy::{check_expression, ExprSlot, Filter, ListSet};
///
/// let lists = ListSet::build(&[]).unwrap();
/// let err = check_expression("http.request.host == \"a\"", Filter::L4, false, ExprSlot::Traffic, &lists)
///     .unwrap_err();
/// assert_eq!(err.span(), 0..17);
/// ```
pub fn check_expression(
    expr: &str,
    filter: Filter,
    off: bool,
    slot: ExprSlot,
    lists: &ListSet,
) -> Result<(), ExprError> {
    policy::check_one(expr, filter, off, slot, lists)
}
