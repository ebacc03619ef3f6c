//! The admin API's view of policy errors: it compiles a change with the same conversion
//! the runtime uses (`crate::policy_records`) and turns a failure into an API error that
//! names the rule, the list or the expression (with its caret diagnostic).

use hyper::StatusCode;
use serde_json::json;
use zt_policy::{CompileError, PolicyConfig, RuleError};

use super::error::ApiError;
use crate::policy_records::{compile_policy, PolicyBuildError};
pub(crate) use crate::policy_records::{list_kind, list_type, parse_action, parse_filter};
use crate::store::{List, Rule};

/// A stored list as zt-policy sees it; `None` for kinds the policy cannot match on.
pub(crate) fn policy_list(list: &List) -> Option<zt_policy::List> {
    crate::policy_records::policy_list(list).ok()
}

/// Compiles `rules` against `lists` exactly as the edge will, turning a failure into the
/// API error that names the rule, the list or the expression (with its caret diagnostic).
pub(crate) fn check_policy(lists: &[List], rules: &[Rule]) -> Result<(), ApiError> {
    match compile_policy(lists, rules, PolicyConfig::default()) {
        Ok(_) => Ok(()),
        Err(PolicyBuildError::Compile(e)) => Err(compile_error(e)),
        Err(e @ (PolicyBuildError::ListKind { .. } | PolicyBuildError::Lists(_))) => {
            Err(ApiError::bad_request("invalid_list", e.to_string()))
        }
        Err(e) => Err(ApiError::bad_request("invalid_rule", e.to_string())),
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
