//! A deliberately naive interpreter of the same policies, used as the oracle that the
//! compiled evaluator is tested and benchmarked against.
//!
//! It walks the syntax tree on every evaluation, resolves field names and list references
//! by string comparison, scans lists and sets linearly and compiles `matches` patterns on
//! use. It shares only the parser with the compiled path; everything the compiler
//! optimises (field resolution, list indices, memoised lookups, guard groups, prefix
//! sets, hashed sets, the `http.conn.*` scalar rewrite) is done the slow, obvious way here.

use std::net::IpAddr;

use ipnet::IpNet;
use regex::Regex;
use uuid::Uuid;

use crate::context::FlowContext;
use crate::expr::{parse, CmpOp, Expr, LitKind, LogicOp, Rhs};
use crate::list::{parse_list_item, List, ListItem};
use crate::policy::{
    CompileError, CompiledPolicy, Decision, DefaultAction, ListSet, Phase, PolicyConfig,
};
use crate::rule::{Action, Filter, Rule};

/// The reference interpreter: same policy, same answers as [`CompiledPolicy`], slowly.
///
/// ```
/// use zt_policy::{FlowContext, PolicyConfig, NetProtocol, ReferencePolicy, Action};
///
/// let reference = ReferencePolicy::new(&[], &[], PolicyConfig::default()).unwrap();
/// let ctx = FlowContext::new("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap(), 22, NetProtocol::Tcp);
/// assert_eq!(reference.l4(&ctx).action, Action::Block);
/// ```
#[derive(Debug)]
pub struct ReferencePolicy {
    rules: Vec<RefRule>,
    lists: Vec<RefList>,
    config: PolicyConfig,
}

#[derive(Debug)]
struct RefRule {
    id: Uuid,
    name: String,
    action: Action,
    precedence: u32,
    enabled: bool,
    filters: Vec<Filter>,
    exprs: Vec<Expr>,
}

#[derive(Debug)]
struct RefList {
    id_hex: String,
    slug: Option<String>,
    nets: Vec<IpNet>,
    names: Vec<String>,
}

/// Result of a boolean sub-expression: one value, or one per array element.
enum R {
    B(bool),
    A(Vec<bool>),
}

#[derive(Debug, Clone)]
enum V {
    Ip(IpAddr),
    Int(i64),
    Str(String),
    Bool(bool),
    Arr(Vec<V>),
    Absent,
}

impl ReferencePolicy {
    /// Builds the interpreter. The policy is first compiled (and the error returned if it
    /// does not compile), so the interpreter only ever runs well-typed expressions.
    pub fn new(lists: &[List], rules: &[Rule], config: PolicyConfig) -> Result<Self, CompileError> {
        let set = ListSet::build(lists)?;
        CompiledPolicy::compile(&set, rules, config)?;
        let lists = lists
            .iter()
            .map(|l| {
                let mut nets = Vec::new();
                let mut names = Vec::new();
                for item in &l.items {
                    match parse_list_item(l.list_type, item) {
                        Ok(ListItem::Net(n)) => nets.push(n),
                        Ok(ListItem::Domain(s) | ListItem::Email(s) | ListItem::Device(s)) => {
                            names.push(s)
                        }
                        Err(_) => {}
                    }
                }
                RefList {
                    id_hex: l.id.simple().to_string(),
                    slug: l.slug.clone(),
                    nets,
                    names,
                }
            })
            .collect();
        let mut out = Vec::new();
        for r in rules {
            let mut exprs = Vec::new();
            for (_, src) in r.expressions() {
                // Already known to parse: compile() above succeeded.
                if let Ok(e) = parse(src) {
                    exprs.push(e);
                }
            }
            out.push(RefRule {
                id: r.id,
                name: r.name.clone(),
                action: r.action,
                precedence: r.precedence,
                enabled: r.enabled,
                filters: r.filters.clone(),
                exprs,
            });
        }
        out.sort_by_key(|r| r.precedence);
        Ok(Self {
            rules: out,
            lists,
            config,
        })
    }

    fn first(
        &self,
        filter: Filter,
        action: impl Fn(Action) -> bool,
        ctx: &FlowContext<'_>,
        phase: Phase,
    ) -> Option<Decision<'_>> {
        self.rules
            .iter()
            .filter(|r| r.enabled && r.filters.contains(&filter) && action(r.action))
            .find(|r| {
                r.exprs
                    .iter()
                    .all(|e| matches!(self.eval(e, ctx), R::B(true)))
            })
            .map(|r| Decision {
                action: r.action,
                phase,
                rule_id: Some(r.id),
                rule_name: Some(&r.name),
            })
    }

    /// See [`CompiledPolicy::l4`].
    pub fn l4(&self, ctx: &FlowContext<'_>) -> Decision<'_> {
        self.first(Filter::L4, |_| true, ctx, Phase::L4)
            .unwrap_or(Decision {
                action: match self.config.l4_default {
                    DefaultAction::Block => Action::Block,
                    DefaultAction::Allow => Action::Allow,
                },
                phase: Phase::L4,
                rule_id: None,
                rule_name: None,
            })
    }

    /// See [`CompiledPolicy::http_off`].
    pub fn http_off(&self, ctx: &FlowContext<'_>) -> Option<Decision<'_>> {
        self.first(Filter::Http, |a| a == Action::Off, ctx, Phase::Http)
    }

    /// See [`CompiledPolicy::http_inspect`].
    pub fn http_inspect(&self, ctx: &FlowContext<'_>) -> Decision<'_> {
        self.first(Filter::Http, |a| a != Action::Off, ctx, Phase::Http)
            .unwrap_or(Decision {
                action: Action::Allow,
                phase: Phase::Http,
                rule_id: None,
                rule_name: None,
            })
    }

    /// See [`CompiledPolicy::dns`].
    pub fn dns(&self, ctx: &FlowContext<'_>) -> Decision<'_> {
        self.first(Filter::Dns, |_| true, ctx, Phase::Dns)
            .unwrap_or(Decision {
                action: Action::Allow,
                phase: Phase::Dns,
                rule_id: None,
                rule_name: None,
            })
    }

    fn eval(&self, e: &Expr, ctx: &FlowContext<'_>) -> R {
        let b = |r: R| matches!(r, R::B(true));
        match e {
            Expr::Logic { op, terms } => {
                let vals: Vec<bool> = terms.iter().map(|t| b(self.eval(t, ctx))).collect();
                R::B(match op {
                    LogicOp::And => vals.iter().all(|v| *v),
                    LogicOp::Or => vals.iter().any(|v| *v),
                    LogicOp::Xor => vals.iter().filter(|v| **v).count() % 2 == 1,
                })
            }
            Expr::Not { inner, .. } => match self.eval(inner, ctx) {
                R::B(v) => R::B(!v),
                R::A(vs) => R::A(vs.into_iter().map(|v| !v).collect()),
            },
            Expr::Quant { all, inner, .. } => match self.eval(inner, ctx) {
                R::A(vs) if *all => R::B(!vs.is_empty() && vs.iter().all(|v| *v)),
                R::A(vs) => R::B(vs.iter().any(|v| *v)),
                R::B(_) => R::B(false),
            },
            Expr::Compare { lhs, rhs } => {
                let mut v = field(&lhs.field, ctx);
                if lhs.lower {
                    v = lower(v);
                }
                let rhs = rhs.as_ref().map(|(op, _, rhs)| (*op, rhs));
                match (lhs.expand, v) {
                    (true, V::Arr(items)) => {
                        R::A(items.iter().map(|x| self.test(x, rhs)).collect())
                    }
                    (_, v) => R::B(self.test(&v, rhs)),
                }
            }
        }
    }

    fn list(&self, name: &str) -> Option<&RefList> {
        let lowered = name.to_ascii_lowercase();
        self.lists
            .iter()
            .find(|l| l.slug.as_deref() == Some(name) || l.id_hex == lowered)
    }

    fn test(&self, v: &V, rhs: Option<(CmpOp, &Rhs)>) -> bool {
        let Some((op, rhs)) = rhs else {
            return matches!(v, V::Bool(true));
        };
        match (v, rhs) {
            (V::Absent, _) => false,
            (_, Rhs::List(name, _)) => match (v, self.list(name)) {
                (V::Ip(ip), Some(l)) => l.nets.iter().any(|n| n.contains(ip)),
                (V::Str(s), Some(l)) => l.names.iter().any(|n| n.eq_ignore_ascii_case(s)),
                _ => false,
            },
            (_, Rhs::Set(items, _)) => items.iter().any(|lit| match (v, &lit.kind) {
                (V::Ip(ip), LitKind::Ip(x)) => ip == x,
                (V::Ip(ip), LitKind::Cidr(n)) => n.contains(ip),
                (V::Int(i), LitKind::Int(x)) => i == x,
                (V::Int(i), LitKind::IntRange(lo, hi)) => lo <= i && i <= hi,
                (V::Str(s), LitKind::Str(x)) => s == x,
                _ => false,
            }),
            (_, Rhs::Lit(lit)) => match (v, &lit.kind, op) {
                (V::Str(s), LitKind::Str(x), CmpOp::Contains) => s.contains(x.as_str()),
                (V::Str(s), LitKind::Str(x), CmpOp::Matches) => {
                    Regex::new(x).is_ok_and(|re| re.is_match(s))
                }
                (V::Str(s), LitKind::Str(x), op) => op.holds(s.as_str().cmp(x.as_str())),
                (V::Ip(ip), LitKind::Ip(x), op) => op.holds(ip.cmp(x)),
                (V::Int(i), LitKind::Int(x), op) => op.holds(i.cmp(x)),
                (V::Bool(b), LitKind::Bool(x), CmpOp::Eq) => b == x,
                (V::Bool(b), LitKind::Bool(x), CmpOp::Ne) => b != x,
                _ => false,
            },
        }
    }
}

fn lower(v: V) -> V {
    match v {
        V::Str(s) => V::Str(s.to_lowercase()),
        V::Arr(items) => V::Arr(items.into_iter().map(lower).collect()),
        other => other,
    }
}

fn opt_str(s: Option<&str>) -> V {
    s.map_or(V::Absent, |s| V::Str(s.to_owned()))
}

fn field(name: &str, ctx: &FlowContext<'_>) -> V {
    match name {
        "net.src.ip" => V::Ip(ctx.src_ip),
        "net.dst.ip" => V::Ip(ctx.dst_ip),
        "net.dst.port" => V::Int(i64::from(ctx.dst_port)),
        "net.protocol" => V::Str(ctx.protocol.as_str().to_owned()),
        "net.vnet" => V::Str(ctx.vnet.to_owned()),
        "net.sni" => opt_str(ctx.sni),
        "session.age_seconds" => ctx
            .session_age_seconds
            .map_or(V::Absent, |s| V::Int(i64::try_from(s).unwrap_or(i64::MAX))),
        "dns.fqdn" => opt_str(ctx.dns_fqdn),
        "http.conn.dst_ip" => V::Arr(vec![V::Ip(ctx.dst_ip)]),
        "http.conn.src_ip" => V::Arr(vec![V::Ip(ctx.src_ip)]),
        "http.request.host" => opt_str(ctx.sni.or(ctx.http_host)),
        "identity.email" => opt_str(ctx.identity.map(|i| i.email.as_str())),
        "identity.id" => opt_str(ctx.identity.map(|i| i.id.as_str())),
        "identity.idp" => opt_str(ctx.identity.and_then(|i| i.idp.as_deref())),
        "identity.groups" => V::Arr(
            ctx.identity
                .map(|i| i.groups.iter().map(|g| V::Str(g.clone())).collect())
                .unwrap_or_default(),
        ),
        "device.id" => opt_str(ctx.device.map(|d| d.id.as_str())),
        other => match other.strip_prefix("device.posture.") {
            Some(check) => V::Bool(
                ctx.device
                    .and_then(|d| d.posture.get(check).copied())
                    .unwrap_or(false),
            ),
            None => V::Absent,
        },
    }
}
