//! Between the stored records (strings, as the operator wrote them) and zt-policy's types,
//! so that the admin API checks a change by compiling the policy the edge would compile.

use hyper::StatusCode;
use serde_json::json;
use zt_policy::{
    Action, CompileError, CompiledPolicy, Filter, ListSet, ListType, PolicyConfig, RuleError,
};

use super::error::ApiError;
use crate::store::{List, ListKind, Rule};

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

/// A stored list as zt-policy sees it.
pub(crate) fn policy_list(list: &List) -> Option<zt_policy::List> {
    Some(zt_policy::List {
        id: list.id,
        name: list.name.clone(),
        slug: list.slug.clone(),
        list_type: list_type(list.kind)?,
        items: list.items.clone(),
        description: list.description.clone(),
    })
}

/// Parses an action name as rules store it.
pub(crate) fn parse_action(s: &str) -> Option<Action> {
    match s {
        "allow" => Some(Action::Allow),
        "block" => Some(Action::Block),
        "off" => Some(Action::Off),
        _ => None,
    }
}

/// Parses a filter name as rules store it.
pub(crate) fn parse_filter(s: &str) -> Option<Filter> {
    match s {
        "l4" => Some(Filter::L4),
        "http" => Some(Filter::Http),
        "dns" => Some(Filter::Dns),
        _ => None,
    }
}

/// A stored rule as zt-policy sees it; the error says which field is unusable.
pub(crate) fn policy_rule(rule: &Rule) -> Result<zt_policy::Rule, ApiError> {
    let bad = |what: String| {
        ApiError::bad_request("invalid_rule", format!("rule \"{}\": {what}", rule.name))
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

/// Compiles `rules` against `lists` exactly as the edge will, turning a failure into the
/// API error that names the rule, the list or the expression (with its caret diagnostic).
pub(crate) fn check_policy(lists: &[List], rules: &[Rule]) -> Result<(), ApiError> {
    // The runtime refuses a policy holding a list it cannot match on; so does this check,
    // so a change accepted here always reloads there.
    let lists = lists
        .iter()
        .map(|l| {
            policy_list(l).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_list",
                    format!(
                        "list \"{}\" ({}) is of kind {:?}, which the policy cannot match on; delete it",
                        l.name, l.id, l.kind
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let set =
        ListSet::build(&lists).map_err(|e| ApiError::bad_request("invalid_list", e.to_string()))?;
    let rules = rules
        .iter()
        .map(policy_rule)
        .collect::<Result<Vec<_>, _>>()?;
    match CompiledPolicy::compile(&set, &rules, PolicyConfig::default()) {
        Ok(_) => Ok(()),
        Err(e) => Err(compile_error(e)),
    }
}

fn compile_error(e: CompileError) -> ApiError {
    let message = e.to_string();
    match e {
        CompileError::Expression {
            rule,
            rule_id,
            slot,
            filter,
            error,
        } => {
            let span = error.span();
            ApiError::bad_request("invalid_expression", message).with_detail(json!({
                "rule": rule,
                "rule_id": rule_id,
                "slot": slot.to_string(),
                "filter": filter.to_string(),
                "span": [span.start, span.end],
                "diagnostic": error.to_string(),
            }))
        }
        CompileError::Rule(RuleError::DuplicatePrecedence {
            filter,
            precedence,
            first,
            second,
        }) => ApiError::new(StatusCode::CONFLICT, "duplicate_precedence", message).with_detail(
            json!({
                "filter": filter.to_string(),
                "precedence": precedence,
                "rules": [first, second],
            }),
        ),
        CompileError::Rule(_) => ApiError::bad_request("invalid_rule", message),
        CompileError::List(_) => ApiError::bad_request("invalid_list", message),
        _ => ApiError::bad_request("invalid_policy", message),
    }
}
