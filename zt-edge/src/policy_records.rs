//! From stored records (strings, as the operator wrote them) to zt-policy's types.
//!
//! One conversion serves the admin API, which compiles a change before writing it, and the
//! runtime, which compiles on every store revision: a change the API accepts is then
//! always one the runtime can load.

use zt_policy::{
    Action, CompileError, CompiledPolicy, Filter, ListError, ListSet, ListType, PolicyConfig,
};

use crate::store::{List, ListKind, Rule};

/// Why stored lists and rules could not be turned into a compiled policy.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PolicyBuildError {
    /// A stored list's kind is one the policy engine cannot match on.
    #[error(
        "list \"{name}\" ({id}): lists of kind {kind:?} cannot be matched by policy; delete it"
    )]
    ListKind {
        name: String,
        id: uuid::Uuid,
        kind: ListKind,
    },
    /// A stored rule field is not usable.
    #[error("rule \"{name}\" ({id}): {what}")]
    RuleField {
        name: String,
        id: uuid::Uuid,
        what: String,
    },
    /// The lists themselves are invalid.
    #[error(transparent)]
    Lists(#[from] ListError),
    /// A rule did not compile (the error carries the caret diagnostic).
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// The zt-policy type of a stored list kind; `None` for kinds the policy engine cannot
/// match on (URL lists), which no rule can refer to.
pub(crate) fn list_type(kind: ListKind) -> Option<ListType> {
    match kind {
        ListKind::Ip => Some(ListType::Ip),
        ListKind::Domain => Some(ListType::Domain),
        ListKind::Email => Some(ListType::Email),
        // Device serial numbers are what `device.id` is compared with.
        ListKind::Serial => Some(ListType::Device),
        _ => None,
    }
}

/// The stored kind for a zt-policy list type.
pub(crate) fn list_kind(t: ListType) -> ListKind {
    match t {
        ListType::Ip => ListKind::Ip,
        ListType::Domain => ListKind::Domain,
        ListType::Email => ListKind::Email,
        ListType::Device => ListKind::Serial,
    }
}

/// Parses an action name as rules store it (any letter case).
pub(crate) fn parse_action(s: &str) -> Option<Action> {
    match s.to_ascii_lowercase().as_str() {
        "allow" => Some(Action::Allow),
        "block" => Some(Action::Block),
        "off" => Some(Action::Off),
        _ => None,
    }
}

/// Parses a filter name as rules store it (any letter case).
pub(crate) fn parse_filter(s: &str) -> Option<Filter> {
    match s.to_ascii_lowercase().as_str() {
        "l4" => Some(Filter::L4),
        "http" => Some(Filter::Http),
        "dns" => Some(Filter::Dns),
        _ => None,
    }
}

/// A stored list as zt-policy sees it.
pub(crate) fn policy_list(list: &List) -> Result<zt_policy::List, PolicyBuildError> {
    let list_type = list_type(list.kind).ok_or_else(|| PolicyBuildError::ListKind {
        name: list.name.clone(),
        id: list.id,
        kind: list.kind,
    })?;
    Ok(zt_policy::List {
        id: list.id,
        name: list.name.clone(),
        slug: list.slug.clone(),
        list_type,
        items: list.items.clone(),
        description: list.description.clone(),
    })
}

/// A stored rule as zt-policy sees it; the error says which field is unusable.
pub(crate) fn policy_rule(rule: &Rule) -> Result<zt_policy::Rule, PolicyBuildError> {
    let bad = |what: String| PolicyBuildError::RuleField {
        name: rule.name.clone(),
        id: rule.id,
        what,
    };
    let precedence = u32::try_from(rule.precedence).map_err(|_| {
        bad(format!(
            "precedence {} is outside 0..={}",
            rule.precedence,
            u32::MAX
        ))
    })?;
    let action = parse_action(&rule.action).ok_or_else(|| {
        bad(format!(
            "unknown action `{}`; use allow, block or off",
            rule.action
        ))
    })?;
    let filters = rule
        .filters
        .iter()
        .map(|f| {
            parse_filter(f).ok_or_else(|| bad(format!("unknown filter `{f}`; use l4, http or dns")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(zt_policy::Rule {
        id: rule.id,
        name: rule.name.clone(),
        description: rule.description.clone(),
        precedence,
        action,
        enabled: rule.enabled,
        filters,
        traffic: rule.traffic.clone(),
        identity: rule.identity.clone(),
        device_posture: rule.device_posture.clone(),
    })
}

/// Compiles stored lists and rules exactly as the edge serves them.
pub(crate) fn compile_policy(
    lists: &[List],
    rules: &[Rule],
    config: PolicyConfig,
) -> Result<CompiledPolicy, PolicyBuildError> {
    let lists = lists
        .iter()
        .map(policy_list)
        .collect::<Result<Vec<_>, _>>()?;
    let rules = rules
        .iter()
        .map(policy_rule)
        .collect::<Result<Vec<_>, _>>()?;
    let set = ListSet::build(&lists)?;
    Ok(CompiledPolicy::compile(&set, &rules, config)?)
}
