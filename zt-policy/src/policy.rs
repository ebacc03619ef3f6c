//! Compiled policies, the phase semantics, and the atomically swapped current policy.
//!
//! A [`CompiledPolicy`] is immutable. A change (a rule edited, a list's items replaced)
//! builds a new one beside the old and swaps it into a [`SharedPolicy`]; flows already
//! holding the old one finish with it, and readers never wait for a rebuild.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use uuid::Uuid;

use crate::compile::{Compiler, Env, Memo, Node};
use crate::context::FlowContext;
use crate::expr::{parse, Checker, ExprError, ListNames, Stage, TExpr};
use crate::list::{CompiledList, List, ListError, ListType};
use crate::rule::{validate_rules, Action, ExprSlot, Filter, Rule, RuleError};

/// The phase that produced a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// At flow open.
    L4,
    /// The http filter (both its `off` step and its allow/block step).
    Http,
    /// A DNS query.
    Dns,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::L4 => "l4",
            Phase::Http => "http",
            Phase::Dns => "dns",
        })
    }
}

/// What the policy decided, and why, for the audit log.
///
/// The rule's name is borrowed from the policy that decided (copying it, or bumping a
/// reference count, would cost more than the evaluation itself); keep the policy while
/// the decision is in use, or copy the name out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision<'p> {
    /// Allow, block, or (http only) pass through uninspected.
    pub action: Action,
    /// The phase that decided.
    pub phase: Phase,
    /// The matching rule; `None` when the phase's default applied.
    pub rule_id: Option<Uuid>,
    /// The matching rule's name; `None` when the phase's default applied.
    pub rule_name: Option<&'p str>,
}

impl Decision<'_> {
    fn default_for(phase: Phase, action: Action) -> Self {
        Self {
            action,
            phase,
            rule_id: None,
            rule_name: None,
        }
    }

    /// Whether the flow may proceed (`allow` or `off`).
    pub fn permits(&self) -> bool {
        self.action != Action::Block
    }

    /// Whether no rule matched and the phase's default decided.
    pub fn is_default(&self) -> bool {
        self.rule_id.is_none()
    }
}

/// The action when no l4 rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultAction {
    /// Zero trust: refuse what no rule allows.
    #[default]
    Block,
    /// Permit what no rule blocks.
    Allow,
}

/// Policy-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyConfig {
    /// What the l4 phase decides when no rule matches; block unless configured.
    pub l4_default: DefaultAction,
}

/// A policy that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// A list or the list set fails validation.
    #[error(transparent)]
    List(#[from] ListError),
    /// A rule or the rule set fails validation.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// An expression of a rule does not parse or check.
    #[error("rule \"{rule}\" ({rule_id}), {slot} expression, {filter} filter: {error}")]
    Expression {
        /// The rule's name.
        rule: String,
        /// The rule's id.
        rule_id: Uuid,
        /// Which expression.
        slot: ExprSlot,
        /// The filter it was checked for.
        filter: Filter,
        /// The error, with its span.
        #[source]
        error: Box<ExprError>,
    },
}

/// A change to one list that cannot be applied without recompiling the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplaceListError {
    /// The policy has no list with this id.
    #[error("no list with id {0} in the policy")]
    Unknown(Uuid),
    /// The new list has another type; rules were checked against the old one.
    #[error("list \"{list}\" changes type from {from} to {to}; recompile the policy")]
    TypeChanged {
        /// The list's name.
        list: String,
        /// The old type.
        from: ListType,
        /// The new type.
        to: ListType,
    },
    /// The new list has another slug; rules were resolved with the old one.
    #[error("list \"{list}\" changes slug; recompile the policy")]
    SlugChanged {
        /// The list's name.
        list: String,
    },
    /// The new list is invalid.
    #[error(transparent)]
    Invalid(#[from] ListError),
}

#[derive(Debug)]
struct ListMeta {
    id: Uuid,
    slug: Option<String>,
    list_type: ListType,
}

/// Validated lists in the form evaluation uses, shared between policies.
///
/// Build it once, compile rules against it as often as they change, and replace single
/// lists in it without touching the rest.
#[derive(Clone)]
pub struct ListSet {
    lists: Vec<Arc<CompiledList>>,
    meta: Arc<[ListMeta]>,
    names: Arc<ListNames>,
}

impl fmt::Debug for ListSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListSet")
            .field("lists", &self.lists.len())
            .finish_non_exhaustive()
    }
}

impl ListSet {
    /// Validates `lists` (items, slugs, unique ids and slugs) and builds their lookup form.
    pub fn build(lists: &[List]) -> Result<Self, ListError> {
        let mut names = ListNames::default();
        let mut by_id: HashMap<Uuid, &str> = HashMap::new();
        let mut by_slug: HashMap<&str, &str> = HashMap::new();
        let mut compiled = Vec::with_capacity(lists.len());
        let mut meta = Vec::with_capacity(lists.len());
        for (i, l) in lists.iter().enumerate() {
            compiled.push(Arc::new(CompiledList::build(l)?));
            if let Some(first) = by_id.insert(l.id, &l.name) {
                return Err(ListError::DuplicateId {
                    id: l.id,
                    first: first.to_owned(),
                    second: l.name.clone(),
                });
            }
            names.insert(l.id.simple().to_string(), i, l.list_type);
            if let Some(slug) = &l.slug {
                if let Some(first) = by_slug.insert(slug, &l.name) {
                    return Err(ListError::DuplicateSlug {
                        slug: slug.clone(),
                        first: first.to_owned(),
                        second: l.name.clone(),
                    });
                }
                names.insert(slug.clone(), i, l.list_type);
            }
            meta.push(ListMeta {
                id: l.id,
                slug: l.slug.clone(),
                list_type: l.list_type,
            });
        }
        Ok(Self {
            lists: compiled,
            meta: meta.into(),
            names: Arc::new(names),
        })
    }

    /// Number of lists.
    pub fn len(&self) -> usize {
        self.lists.len()
    }

    /// Whether there are no lists.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Heap bytes of the lookup structures of the IP lists (the compiled tries; the items
    /// as written are not kept).
    pub fn ip_lookup_bytes(&self) -> usize {
        self.lists.iter().map(|l| l.ip_lookup_bytes()).sum()
    }

    /// A copy of this set with the list of the same id replaced by `list`. Its type and
    /// slug must not change (rules were checked against them); other lists are shared.
    pub fn replace(&self, list: &List) -> Result<Self, ReplaceListError> {
        let i = self
            .meta
            .iter()
            .position(|m| m.id == list.id)
            .ok_or(ReplaceListError::Unknown(list.id))?;
        let m = &self.meta[i];
        if m.list_type != list.list_type {
            return Err(ReplaceListError::TypeChanged {
                list: list.name.clone(),
                from: m.list_type,
                to: list.list_type,
            });
        }
        if m.slug != list.slug {
            return Err(ReplaceListError::SlugChanged {
                list: list.name.clone(),
            });
        }
        let mut next = self.clone();
        next.lists[i] = Arc::new(CompiledList::build(list)?);
        Ok(next)
    }
}

struct CompiledRule {
    id: Uuid,
    name: Box<str>,
    action: Action,
    precedence: u32,
    node: Node,
}

/// The rules of one phase, by ascending precedence, indexed for skipping.
///
/// Rules whose top-level conjunction tests list membership of one (value, list) pair
/// share a *guard group*: if that lookup fails, none of them can match. Rules are walked
/// in chunks of 64 with a bit per rule; a group's bits are dropped from a chunk as soon as
/// its guard is known to fail, so a thousand rules over ten lists that a flow's address
/// is in none of cost ten lookups and a few bit operations per chunk, not a thousand rule
/// evaluations. Guards are memoised list tests, so each is looked up at most once.
#[derive(Default)]
struct PhaseRules {
    rules: Box<[CompiledRule]>,
    /// Per rule: its group's index in its chunk's `groups`, or `NO_GROUP`.
    rule_group: Box<[u16]>,
    /// Per group: the guard and its memo slot.
    guards: Box<[(Node, u32)]>,
    chunks: Box<[Chunk]>,
}

/// 64 consecutive rules: the bits of the unguarded ones, and per group present its bits.
struct Chunk {
    unguarded: u64,
    groups: Box<[(u32, u64)]>,
}

const NO_GROUP: u16 = u16::MAX;

impl PhaseRules {
    fn build(mut rules: Vec<CompiledRule>) -> Self {
        rules.sort_by_key(|r| r.precedence);
        let mut guards: Vec<(Node, u32)> = Vec::new();
        let mut by_slot: HashMap<u32, u32> = HashMap::new();
        let mut group_of = Vec::with_capacity(rules.len());
        let rules: Vec<CompiledRule> = rules
            .into_iter()
            .map(|mut r| {
                let guard = r.node.guard();
                let guard_slot = guard.as_ref().map(|(slot, _)| *slot);
                group_of.push(guard.map(|(slot, node)| {
                    *by_slot.entry(slot).or_insert_with(|| {
                        guards.push((node, slot));
                        u32::try_from(guards.len() - 1).unwrap_or(u32::MAX)
                    })
                }));
                if let Some(slot) = guard_slot {
                    // first_match checks the guard before the rest of the rule.
                    r.node = r.node.without_guard(slot);
                }
                r
            })
            .collect();
        let mut chunks = Vec::with_capacity(rules.len().div_ceil(64));
        let mut rule_group = vec![NO_GROUP; rules.len()];
        for (c, slice) in group_of.chunks(64).enumerate() {
            let mut unguarded = 0u64;
            let mut groups: Vec<(u32, u64)> = Vec::new();
            for (bit, g) in slice.iter().enumerate() {
                match g {
                    None => unguarded |= 1 << bit,
                    Some(g) => {
                        let at = match groups.iter().position(|(x, _)| x == g) {
                            Some(at) => at,
                            None => {
                                groups.push((*g, 0));
                                groups.len() - 1
                            }
                        };
                        groups[at].1 |= 1 << bit;
                        // At most 64 groups per chunk, so the index fits.
                        rule_group[c * 64 + bit] = u16::try_from(at).unwrap_or(NO_GROUP);
                    }
                }
            }
            chunks.push(Chunk {
                unguarded,
                groups: groups.into_boxed_slice(),
            });
        }
        Self {
            rules: rules.into_boxed_slice(),
            rule_group: rule_group.into_boxed_slice(),
            guards: guards.into_boxed_slice(),
            chunks: chunks.into_boxed_slice(),
        }
    }

    /// The first rule, by precedence, whose expression holds.
    fn first_match(&self, env: &mut Env<'_, '_>) -> Option<&CompiledRule> {
        for (c, chunk) in self.chunks.iter().enumerate() {
            let mut alive = chunk.unguarded;
            for &(g, mask) in chunk.groups.iter() {
                let slot = self.guards.get(g as usize).map_or(u32::MAX, |(_, s)| *s);
                if env.memo.known(slot) != Some(false) {
                    alive |= mask;
                }
            }
            while alive != 0 {
                let bit = alive.trailing_zeros() as usize;
                alive &= alive - 1;
                let i = c * 64 + bit;
                let group = self.rule_group.get(i).copied().unwrap_or(NO_GROUP);
                if let Some(&(g, mask)) = chunk.groups.get(usize::from(group)) {
                    let Some((guard, slot)) = self.guards.get(g as usize) else {
                        continue;
                    };
                    if env.memo.known(*slot) != Some(true) && !guard.eval(env) {
                        alive &= !mask;
                        continue;
                    }
                }
                let rule = self.rules.get(i)?;
                if rule.node.eval(env) {
                    return Some(rule);
                }
            }
        }
        None
    }
}

/// An immutable compiled policy: lists, rules by phase, and the l4 default.
///
/// ```
/// use zt_policy::{Action, CompiledPolicy, Filter, FlowContext, ListSet, PolicyConfig, NetProtocol, Rule};
///
/// let rule = Rule {
///     id: uuid::Uuid::new_v4(),
///     name: "kubectl".into(),
///     description: String::new(),
///     precedence: 1,
///     action: Action::Allow,
///     enabled: true,
///     filters: vec![Filter::L4],
///     traffic: Some("net.dst.ip in {198.51.100.0/24} and net.dst.port == 443".into()),
///     identity: None,
///     device_posture: None,
/// };
/// let policy = CompiledPolicy::compile(&ListSet::build(&[]).unwrap(), &[rule], PolicyConfig::default()).unwrap();
/// let ctx = FlowContext::new("192.0.2.1".parse().unwrap(), "198.51.100.101".parse().unwrap(), 443, NetProtocol::Tcp);
/// assert_eq!(policy.l4(&ctx).action, Action::Allow);
/// let other = FlowContext { dst_port: 22, ..ctx };
/// assert_eq!(policy.l4(&other).action, Action::Block);
/// ```
#[derive(Clone)]
pub struct CompiledPolicy {
    lists: ListSet,
    phases: Arc<Phases>,
    config: PolicyConfig,
}

#[derive(Default)]
struct Phases {
    l4: PhaseRules,
    http_off: PhaseRules,
    http_inspect: PhaseRules,
    dns: PhaseRules,
}

impl fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("lists", &self.lists.len())
            .field("l4_rules", &self.phases.l4.rules.len())
            .field("http_off_rules", &self.phases.http_off.rules.len())
            .field("http_inspect_rules", &self.phases.http_inspect.rules.len())
            .field("dns_rules", &self.phases.dns.rules.len())
            .field("config", &self.config)
            .finish()
    }
}

impl CompiledPolicy {
    /// Validates and compiles `rules` against `lists`.
    ///
    /// Disabled rules are validated and checked too (so enabling one cannot fail later)
    /// but take no part in evaluation.
    pub fn compile(
        lists: &ListSet,
        rules: &[Rule],
        config: PolicyConfig,
    ) -> Result<Self, CompileError> {
        validate_rules(rules)?;
        let mut compiler = Compiler::default();
        let mut l4 = Vec::new();
        let mut http_off = Vec::new();
        let mut http_inspect = Vec::new();
        let mut dns = Vec::new();
        for rule in rules {
            let fail = |slot, filter, error| CompileError::Expression {
                rule: rule.name.clone(),
                rule_id: rule.id,
                slot,
                filter,
                error: Box::new(error),
            };
            let first_filter = rule.filters.first().copied().unwrap_or(Filter::L4);
            let parsed = rule
                .expressions()
                .map(|(slot, src)| {
                    parse(src)
                        .map(|e| (slot, src, e))
                        .map_err(|e| fail(slot, first_filter, e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            for &filter in &rule.filters {
                let stage = match (filter, rule.action) {
                    (Filter::L4, _) => Stage::L4,
                    (Filter::Http, Action::Off) => Stage::HttpOff,
                    (Filter::Http, _) => Stage::HttpInspect,
                    (Filter::Dns, _) => Stage::Dns,
                };
                let mut terms = Vec::with_capacity(parsed.len());
                for (slot, src, e) in &parsed {
                    let checker = Checker {
                        src,
                        stage,
                        slot: *slot,
                        lists: &lists.names,
                    };
                    terms.push(checker.check(e).map_err(|e| fail(*slot, filter, e))?);
                }
                if !rule.enabled {
                    continue;
                }
                let compiled = CompiledRule {
                    id: rule.id,
                    name: rule.name.as_str().into(),
                    action: rule.action,
                    precedence: rule.precedence,
                    node: compiler.compile(&TExpr::And(terms)),
                };
                match stage {
                    Stage::L4 => l4.push(compiled),
                    Stage::HttpOff => http_off.push(compiled),
                    Stage::HttpInspect => http_inspect.push(compiled),
                    Stage::Dns => dns.push(compiled),
                }
            }
        }
        Ok(Self {
            lists: lists.clone(),
            phases: Arc::new(Phases {
                l4: PhaseRules::build(l4),
                http_off: PhaseRules::build(http_off),
                http_inspect: PhaseRules::build(http_inspect),
                dns: PhaseRules::build(dns),
            }),
            config,
        })
    }

    /// A policy with no rules: l4 answers `config.l4_default`, http and dns allow.
    pub fn empty(config: PolicyConfig) -> Self {
        Self {
            lists: ListSet {
                lists: Vec::new(),
                meta: Arc::new([]),
                names: Arc::default(),
            },
            phases: Arc::default(),
            config,
        }
    }

    /// This policy with one list's items replaced (same id, type and slug), sharing the
    /// compiled rules: the cost is building that one list.
    pub fn with_list(&self, list: &List) -> Result<Self, ReplaceListError> {
        Ok(Self {
            lists: self.lists.replace(list)?,
            phases: self.phases.clone(),
            config: self.config,
        })
    }

    fn decide<'p>(&'p self, rules: &'p PhaseRules, ctx: &FlowContext<'_>) -> Option<Decision<'p>> {
        let mut env = Env {
            ctx,
            lists: &self.lists.lists,
            memo: Memo::new(),
        };
        rules.first_match(&mut env).map(|r| Decision {
            action: r.action,
            phase: Phase::L4,
            rule_id: Some(r.id),
            rule_name: Some(&r.name),
        })
    }

    /// The l4 phase, at flow open: the first matching l4 rule by precedence, else the
    /// configured default (block unless configured otherwise).
    pub fn l4(&self, ctx: &FlowContext<'_>) -> Decision<'_> {
        match self.decide(&self.phases.l4, ctx) {
            Some(d) => d,
            None => Decision::default_for(
                Phase::L4,
                match self.config.l4_default {
                    DefaultAction::Block => Action::Block,
                    DefaultAction::Allow => Action::Allow,
                },
            ),
        }
    }

    /// The http `off` step, after l4 allowed and before reading anything from the flow:
    /// `Some` (action [`Action::Off`]) when an `off` rule matches, meaning pass the bytes
    /// through untouched and stop evaluating; `None` means go on to
    /// [`http_inspect`](Self::http_inspect) (or skip reading when
    /// [`inspects_http`](Self::inspects_http) is false).
    pub fn http_off(&self, ctx: &FlowContext<'_>) -> Option<Decision<'_>> {
        self.decide(&self.phases.http_off, ctx).map(|d| Decision {
            phase: Phase::Http,
            ..d
        })
    }

    /// Whether any enabled http allow/block rule exists. When none does,
    /// [`http_inspect`](Self::http_inspect) always allows and the edge need not read the
    /// first bytes at all.
    pub fn inspects_http(&self) -> bool {
        !self.phases.http_inspect.rules.is_empty()
    }

    /// The http allow/block step, on what the first bytes revealed (`ctx.sni`,
    /// `ctx.http_host`): the first matching rule, else allow.
    pub fn http_inspect(&self, ctx: &FlowContext<'_>) -> Decision<'_> {
        self.decide(&self.phases.http_inspect, ctx).map_or(
            Decision::default_for(Phase::Http, Action::Allow),
            |d| Decision {
                phase: Phase::Http,
                ..d
            },
        )
    }

    /// The dns phase, for a query (`ctx.dns_fqdn`): the first matching rule, else allow.
    pub fn dns(&self, ctx: &FlowContext<'_>) -> Decision<'_> {
        self.decide(&self.phases.dns, ctx).map_or(
            Decision::default_for(Phase::Dns, Action::Allow),
            |d| Decision {
                phase: Phase::Dns,
                ..d
            },
        )
    }
}

/// A short-lived handle on the current policy, from [`SharedPolicy::load`].
pub struct PolicyGuard(arc_swap::Guard<Arc<CompiledPolicy>>);

impl std::ops::Deref for PolicyGuard {
    type Target = CompiledPolicy;

    fn deref(&self) -> &CompiledPolicy {
        &self.0
    }
}

impl fmt::Debug for PolicyGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// The current policy of an edge: read lock-free by every flow, replaced atomically.
///
/// ```
/// use zt_policy::{Action, CompiledPolicy, DefaultAction, FlowContext, PolicyConfig, NetProtocol, SharedPolicy};
///
/// let shared = SharedPolicy::new(CompiledPolicy::empty(PolicyConfig::default()));
/// let ctx = FlowContext::new("192.0.2.1".parse().unwrap(), "198.51.100.101".parse().unwrap(), 443, NetProtocol::Tcp);
/// let held = shared.load_full();
/// shared.store(CompiledPolicy::empty(PolicyConfig { l4_default: DefaultAction::Allow }));
/// assert_eq!(held.l4(&ctx).action, Action::Block); // a flow keeps the policy it started with
/// assert_eq!(shared.load().l4(&ctx).action, Action::Allow);
/// ```
pub struct SharedPolicy {
    current: ArcSwap<CompiledPolicy>,
    /// Serialises read-modify-write updates such as [`replace_list`](Self::replace_list);
    /// readers never take it.
    writer: Mutex<()>,
}

impl fmt::Debug for SharedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedPolicy")
            .field(&**self.current.load())
            .finish()
    }
}

impl SharedPolicy {
    /// Starts with `policy`.
    pub fn new(policy: CompiledPolicy) -> Self {
        Self {
            current: ArcSwap::from_pointee(policy),
            writer: Mutex::new(()),
        }
    }

    /// The current policy, for a short use (deciding one phase): no reference count is
    /// touched. A flow should load once and use that policy for all its phases; to keep it
    /// across awaits or for a long time, use [`load_full`](Self::load_full).
    pub fn load(&self) -> PolicyGuard {
        PolicyGuard(self.current.load())
    }

    /// The current policy as an owned handle, to keep for the life of a flow.
    pub fn load_full(&self) -> Arc<CompiledPolicy> {
        self.current.load_full()
    }

    /// Replaces the policy.
    pub fn store(&self, policy: CompiledPolicy) {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.current.store(Arc::new(policy));
    }

    /// Replaces one list's items in the current policy (see
    /// [`CompiledPolicy::with_list`]). The new list is built before the swap; readers keep
    /// evaluating the old policy meanwhile.
    pub fn replace_list(&self, list: &List) -> Result<(), ReplaceListError> {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let next = self.current.load().with_list(list)?;
        self.current.store(Arc::new(next));
        Ok(())
    }
}

pub(crate) fn check_one(
    src: &str,
    filter: Filter,
    off: bool,
    slot: ExprSlot,
    lists: &ListSet,
) -> Result<(), ExprError> {
    let stage = match (filter, off) {
        (Filter::L4, _) => Stage::L4,
        (Filter::Http, true) => Stage::HttpOff,
        (Filter::Http, false) => Stage::HttpInspect,
        (Filter::Dns, _) => Stage::Dns,
    };
    let e = parse(src)?;
    Checker {
        src,
        stage,
        slot,
        lists: &lists.names,
    }
    .check(&e)
    .map(|_| ())
}
