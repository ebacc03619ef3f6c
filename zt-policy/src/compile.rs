//! The compiled form of an expression and its evaluator.
//!
//! Compilation turns the checked tree into nodes that read the flow context directly: each
//! field is resolved to where it lives in [`FlowContext`], list references are indices into
//! the policy's lists, IP sets are prefix sets, string sets are hashed (or scanned when
//! small), and `any`/`all` over the one-element `http.conn.*` arrays become plain scalar
//! tests. List membership goes through a per-evaluation memo keyed by (value source, list),
//! so a policy whose thousand rules share ten lists does at most ten lookups per flow.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use regex::Regex;
use zt_routes::PrefixSet;

use crate::context::FlowContext;
use crate::expr::{Cmp, CmpOp, ElemPred, FieldId, TExpr, Test};
use crate::list::{CompiledList, IpMatcher};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IpSrc {
    Src,
    Dst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IntSrc {
    DstPort,
    SessionAge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StrSrc {
    Protocol,
    Vnet,
    Sni,
    Fqdn,
    Host,
    Email,
    IdentityId,
    Idp,
    DeviceId,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    And(Box<[Node]>),
    Or(Box<[Node]>),
    Xor(Box<[Node]>),
    Not(Box<Node>),
    Ip {
        src: IpSrc,
        test: IpTest,
    },
    Int {
        src: IntSrc,
        test: IntTest,
    },
    Str {
        src: StrSrc,
        lower: bool,
        test: StrTest,
    },
    Posture {
        check: Box<str>,
        expect: bool,
    },
    Groups {
        all: bool,
        negate: bool,
        lower: bool,
        test: StrTest,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum IpTest {
    Cmp(CmpOp, IpAddr),
    Set(IpMatcher),
    List { list: u32, memo: u32 },
}

#[derive(Debug, Clone)]
pub(crate) enum IntTest {
    Cmp(CmpOp, i64),
    Set(Box<[(i64, i64)]>),
}

#[derive(Debug, Clone)]
pub(crate) enum StrTest {
    Cmp(CmpOp, Box<str>),
    Contains(Box<str>),
    Matches(Regex),
    /// Up to [`SMALL_SET`] strings: a scan beats hashing them.
    SmallSet(Box<[Box<str>]>),
    Set(HashSet<Box<str>>),
    List {
        list: u32,
        memo: u32,
    },
}

/// Below this many elements a string set is scanned rather than hashed: comparing a few
/// short strings costs less than SipHash over the value.
const SMALL_SET: usize = 8;

/// Memo slots per evaluation. A policy with more distinct (value, list) pairs than this
/// still evaluates correctly; the extra pairs are looked up every time and cannot serve
/// as guards.
pub(crate) const MEMO_SLOTS: usize = 128;

/// Per-evaluation memo of list membership, a byte per slot: 0 unknown, 1 false, 2 true.
/// (A pair of `u128` bit sets is cheaper to clear but slower to probe, and the rule walk
/// probes guard slots once per group per 64 rules; bytes measured faster.)
pub(crate) struct Memo([u8; MEMO_SLOTS]);

impl Memo {
    pub(crate) fn new() -> Self {
        Self([0; MEMO_SLOTS])
    }

    /// The memoised answer for `slot`, if already computed.
    #[inline]
    pub(crate) fn known(&self, slot: u32) -> Option<bool> {
        match self.0.get(slot as usize) {
            Some(1) => Some(false),
            Some(2) => Some(true),
            _ => None,
        }
    }

    #[inline]
    fn get_or(&mut self, slot: u32, f: impl FnOnce() -> bool) -> bool {
        match self.0.get_mut(slot as usize) {
            Some(m) if *m != 0 => *m == 2,
            Some(m) => {
                let v = f();
                *m = if v { 2 } else { 1 };
                v
            }
            None => f(),
        }
    }
}

/// Everything evaluation reads.
pub(crate) struct Env<'e, 'a> {
    pub(crate) ctx: &'e FlowContext<'a>,
    pub(crate) lists: &'e [Arc<CompiledList>],
    pub(crate) memo: Memo,
}

/// Assigns memo slots to distinct (value source, list) pairs across a whole policy.
#[derive(Debug, Default)]
pub(crate) struct Compiler {
    memo_keys: HashMap<(MemoKey, usize), u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum MemoKey {
    Ip(IpSrc),
    Str(StrSrc, bool),
}

impl Compiler {
    fn memo(&mut self, key: MemoKey, list: usize) -> u32 {
        let next = u32::try_from(self.memo_keys.len()).unwrap_or(u32::MAX);
        *self.memo_keys.entry((key, list)).or_insert(next)
    }

    pub(crate) fn compile(&mut self, e: &TExpr) -> Node {
        match e {
            TExpr::And(ts) => Node::And(self.flatten(ts, true)),
            TExpr::Or(ts) => Node::Or(self.flatten(ts, false)),
            TExpr::Xor(ts) => Node::Xor(ts.iter().map(|t| self.compile(t)).collect()),
            TExpr::Not(t) => Node::Not(Box::new(self.compile(t))),
            TExpr::Quant { all, pred } => self.quant(*all, pred),
            TExpr::Cmp(c) => self.cmp(c),
        }
    }

    /// Compiles the terms of an n-ary `and` (or `or`), splicing in nested ones.
    fn flatten(&mut self, ts: &[TExpr], and: bool) -> Box<[Node]> {
        let mut out = Vec::with_capacity(ts.len());
        for t in ts {
            match (self.compile(t), and) {
                (Node::And(inner), true) | (Node::Or(inner), false) => out.extend(inner.into_vec()),
                (n, _) => out.push(n),
            }
        }
        out.into_boxed_slice()
    }

    fn quant(&mut self, all: bool, pred: &ElemPred) -> Node {
        match pred.cmp.field {
            // One-element arrays: any() and all() both mean "the element satisfies it".
            FieldId::HttpConnDstIp | FieldId::HttpConnSrcIp => {
                let n = self.cmp(&pred.cmp);
                if pred.negate {
                    Node::Not(Box::new(n))
                } else {
                    n
                }
            }
            _ => Node::Groups {
                all,
                negate: pred.negate,
                lower: pred.cmp.lower,
                test: self.str_test(&pred.cmp.test, None),
            },
        }
    }

    fn cmp(&mut self, c: &Cmp) -> Node {
        match &c.field {
            FieldId::SrcIp | FieldId::HttpConnSrcIp => self.ip_node(IpSrc::Src, &c.test),
            FieldId::DstIp | FieldId::HttpConnDstIp => self.ip_node(IpSrc::Dst, &c.test),
            FieldId::DstPort => int_node(IntSrc::DstPort, &c.test),
            FieldId::SessionAge => int_node(IntSrc::SessionAge, &c.test),
            FieldId::Posture(check) => Node::Posture {
                check: check.clone(),
                expect: matches!(c.test, Test::Bool(true)),
            },
            FieldId::Protocol => self.str_node(StrSrc::Protocol, c),
            FieldId::Vnet => self.str_node(StrSrc::Vnet, c),
            FieldId::Sni => self.str_node(StrSrc::Sni, c),
            FieldId::DnsFqdn => self.str_node(StrSrc::Fqdn, c),
            FieldId::HttpHost => self.str_node(StrSrc::Host, c),
            FieldId::IdentityEmail => self.str_node(StrSrc::Email, c),
            FieldId::IdentityId => self.str_node(StrSrc::IdentityId, c),
            FieldId::IdentityIdp => self.str_node(StrSrc::Idp, c),
            FieldId::DeviceId => self.str_node(StrSrc::DeviceId, c),
            // Only reachable through any()/all(), handled in `quant`.
            FieldId::IdentityGroups => Node::Groups {
                all: false,
                negate: false,
                lower: c.lower,
                test: self.str_test(&c.test, None),
            },
        }
    }

    fn ip_node(&mut self, src: IpSrc, test: &Test) -> Node {
        let test = match test {
            Test::Ip(op, ip) => IpTest::Cmp(*op, *ip),
            Test::IpSet(nets) => {
                let set: PrefixSet = nets.iter().copied().collect();
                IpTest::Set(IpMatcher::new(&set))
            }
            Test::InList(list) => IpTest::List {
                list: u32::try_from(*list).unwrap_or(u32::MAX),
                memo: self.memo(MemoKey::Ip(src), *list),
            },
            // The checker only produces IP tests for IP fields.
            _ => IpTest::Set(IpMatcher::new(&PrefixSet::new())),
        };
        Node::Ip { src, test }
    }

    fn str_node(&mut self, src: StrSrc, c: &Cmp) -> Node {
        let test = self.str_test(&c.test, Some(MemoKey::Str(src, c.lower)));
        Node::Str {
            src,
            lower: c.lower,
            test,
        }
    }

    fn str_test(&mut self, t: &Test, memo_key: Option<MemoKey>) -> StrTest {
        match t {
            Test::Str(op, s) => StrTest::Cmp(*op, s.as_str().into()),
            Test::Contains(s) => StrTest::Contains(s.as_str().into()),
            Test::Matches(re) => StrTest::Matches(re.clone()),
            Test::StrSet(items) if items.len() <= SMALL_SET => {
                StrTest::SmallSet(items.iter().map(|s| s.as_str().into()).collect())
            }
            Test::StrSet(items) => StrTest::Set(items.iter().map(|s| s.as_str().into()).collect()),
            Test::InList(list) => StrTest::List {
                list: u32::try_from(*list).unwrap_or(u32::MAX),
                memo: memo_key.map_or(u32::MAX, |k| self.memo(k, *list)),
            },
            // The checker only produces string tests for string fields.
            _ => StrTest::SmallSet(Box::new([])),
        }
    }
}

fn int_node(src: IntSrc, test: &Test) -> Node {
    let test = match test {
        Test::Int(op, n) => IntTest::Cmp(*op, *n),
        Test::IntSet(ranges) => IntTest::Set(ranges.clone().into_boxed_slice()),
        // The checker only produces integer tests for integer fields.
        _ => IntTest::Set(Box::new([])),
    };
    Node::Int { src, test }
}

fn lowered(s: &str, lower: bool) -> std::borrow::Cow<'_, str> {
    if lower && (!s.is_ascii() || s.bytes().any(|b| b.is_ascii_uppercase())) {
        std::borrow::Cow::Owned(s.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

impl Node {
    /// If this node is a list membership test with a memo slot, that slot. Rules whose
    /// top-level conjunction holds one are grouped by it, so a failed lookup skips them all.
    pub(crate) fn guard_slot(&self) -> Option<u32> {
        match self {
            Node::Ip {
                test: IpTest::List { memo, .. },
                ..
            }
            | Node::Str {
                test: StrTest::List { memo, .. },
                ..
            } if (*memo as usize) < MEMO_SLOTS => Some(*memo),
            _ => None,
        }
    }

    /// This node with the guard conjunct for `slot` removed: the rule's remaining test,
    /// evaluated only once the guard is known to hold.
    pub(crate) fn without_guard(self, slot: u32) -> Node {
        match self {
            Node::And(terms) => {
                let mut terms = terms.into_vec();
                if let Some(i) = terms.iter().position(|t| t.guard_slot() == Some(slot)) {
                    terms.remove(i);
                }
                Node::And(terms.into_boxed_slice())
            }
            n if n.guard_slot() == Some(slot) => Node::And(Box::new([])),
            n => n,
        }
    }

    /// The first top-level conjunct usable as a guard.
    pub(crate) fn guard(&self) -> Option<(u32, Node)> {
        match self {
            Node::And(terms) => terms
                .iter()
                .find_map(|t| t.guard_slot().map(|s| (s, t.clone()))),
            other => other.guard_slot().map(|s| (s, other.clone())),
        }
    }

    pub(crate) fn eval(&self, env: &mut Env<'_, '_>) -> bool {
        match self {
            Node::And(ts) => ts.iter().all(|t| t.eval(env)),
            Node::Or(ts) => ts.iter().any(|t| t.eval(env)),
            Node::Xor(ts) => ts.iter().fold(false, |acc, t| acc ^ t.eval(env)),
            Node::Not(t) => !t.eval(env),
            Node::Ip { src, test } => {
                let ip = match src {
                    IpSrc::Src => env.ctx.src_ip,
                    IpSrc::Dst => env.ctx.dst_ip,
                };
                match test {
                    IpTest::Cmp(op, lit) => op.holds(ip.cmp(lit)),
                    IpTest::Set(set) => set.contains(ip),
                    IpTest::List { list, memo } => {
                        let lists = env.lists;
                        env.memo.get_or(*memo, || {
                            lists.get(*list as usize).is_some_and(|l| l.contains_ip(ip))
                        })
                    }
                }
            }
            Node::Int { src, test } => {
                let v = match src {
                    IntSrc::DstPort => Some(i64::from(env.ctx.dst_port)),
                    IntSrc::SessionAge => env
                        .ctx
                        .session_age_seconds
                        .map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
                };
                let Some(v) = v else { return false };
                match test {
                    IntTest::Cmp(op, lit) => op.holds(v.cmp(lit)),
                    IntTest::Set(ranges) => ranges.iter().any(|&(lo, hi)| lo <= v && v <= hi),
                }
            }
            Node::Str { src, lower, test } => {
                let ctx = env.ctx;
                let v = match src {
                    StrSrc::Protocol => Some(ctx.protocol.as_str()),
                    StrSrc::Vnet => Some(ctx.vnet),
                    StrSrc::Sni => ctx.sni,
                    StrSrc::Fqdn => ctx.dns_fqdn,
                    StrSrc::Host => ctx.request_host(),
                    StrSrc::Email => ctx.identity.map(|i| i.email.as_str()),
                    StrSrc::IdentityId => ctx.identity.map(|i| i.id.as_str()),
                    StrSrc::Idp => ctx.identity.and_then(|i| i.idp.as_deref()),
                    StrSrc::DeviceId => ctx.device.map(|d| d.id.as_str()),
                };
                let Some(v) = v else { return false };
                let v = lowered(v, *lower);
                str_test(test, &v, env)
            }
            Node::Posture { check, expect } => env.ctx.posture(check) == *expect,
            Node::Groups {
                all,
                negate,
                lower,
                test,
            } => {
                let groups = env.ctx.identity.map_or(&[][..], |i| &i.groups[..]);
                let mut each = groups
                    .iter()
                    .map(|g| str_test(test, &lowered(g, *lower), env) != *negate);
                if *all {
                    !groups.is_empty() && each.all(|b| b)
                } else {
                    each.any(|b| b)
                }
            }
        }
    }
}

fn str_test(test: &StrTest, v: &str, env: &mut Env<'_, '_>) -> bool {
    match test {
        StrTest::Cmp(op, lit) => op.holds(v.cmp(lit)),
        StrTest::Contains(lit) => v.contains(&**lit),
        StrTest::Matches(re) => re.is_match(v),
        StrTest::SmallSet(items) => items.iter().any(|i| **i == *v),
        StrTest::Set(set) => set.contains(v),
        StrTest::List { list, memo } => {
            let lists = env.lists;
            env.memo.get_or(*memo, || {
                lists
                    .get(*list as usize)
                    .is_some_and(|l| l.contains_name(v))
            })
        }
    }
}
