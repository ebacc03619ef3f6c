//! Gateway rules: show, create, update (absent fields unchanged), delete.
//!
//! A rule is written only after the rule set it would leave compiles with zt-policy
//! against the current lists, so an expression error comes back with its caret diagnostic
//! instead of reaching the running edge.

use serde::Deserialize;
use serde_json::{json, Value};

use super::lookup::find_rule;
use super::{created, ok, ApiRequest, Ctx, Reply};
use crate::admin::error::ApiError;
use crate::admin::policy::{check_policy, parse_action, parse_filter};
use crate::store::{List, Rule, WriteTxn};

fn rule_view(r: &Rule) -> Value {
    json!(r)
}

pub(super) fn all(ctx: &Ctx) -> Reply {
    let read = ctx.state.db().read()?;
    let mut rules = read.list::<Rule>()?;
    rules.sort_by(|a, b| a.precedence.cmp(&b.precedence).then(a.name.cmp(&b.name)));
    ok(json!(rules.iter().map(rule_view).collect::<Vec<_>>()))
}

pub(super) fn show(ctx: &Ctx, key: &str) -> Reply {
    let read = ctx.state.db().read()?;
    ok(rule_view(&find_rule(&read, key)?))
}

/// The fields of a rule; on update every one is optional and absent means unchanged
/// (an empty expression string clears it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    precedence: Option<u32>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    filters: Option<Vec<String>>,
    #[serde(default)]
    traffic: Option<String>,
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    device_posture: Option<String>,
}

impl RuleFields {
    fn apply(&self, rule: &mut Rule) -> Result<(), ApiError> {
        if let Some(n) = &self.name {
            rule.name = n.trim().to_owned();
        }
        if let Some(d) = &self.description {
            rule.description = d.clone();
        }
        if let Some(p) = self.precedence {
            rule.precedence = i64::from(p);
        }
        if let Some(a) = &self.action {
            let a = a.trim().to_ascii_lowercase();
            if parse_action(&a).is_none() {
                return Err(ApiError::bad_request(
                    "invalid_rule",
                    format!("unknown action `{a}`; use allow, block or off"),
                ));
            }
            rule.action = a;
        }
        if let Some(e) = self.enabled {
            rule.enabled = e;
        }
        if let Some(fs) = &self.filters {
            let mut out = Vec::new();
            for f in fs {
                let f = f.trim().to_ascii_lowercase();
                if parse_filter(&f).is_none() {
                    return Err(ApiError::bad_request(
                        "invalid_rule",
                        format!("unknown filter `{f}`; use l4, http or dns"),
                    ));
                }
                out.push(f);
            }
            rule.filters = out;
        }
        let set = |slot: &mut Option<String>, v: &Option<String>| {
            if let Some(v) = v {
                *slot = Some(v.clone()).filter(|s| !s.trim().is_empty());
            }
        };
        set(&mut rule.traffic, &self.traffic);
        set(&mut rule.identity, &self.identity);
        set(&mut rule.device_posture, &self.device_posture);
        Ok(())
    }
}

/// Writes `rule` after compiling the rule set it would leave.
fn write_rule(txn: &mut WriteTxn<'_>, rule: &Rule) -> Result<(), ApiError> {
    let lists = txn.list::<List>()?;
    let mut rules: Vec<Rule> = txn
        .list::<Rule>()?
        .into_iter()
        .filter(|r| r.id != rule.id)
        .collect();
    rules.push(rule.clone());
    check_policy(&lists, &rules)?;
    txn.put(rule)?;
    Ok(())
}

pub(super) fn create(ctx: &Ctx, req: &ApiRequest) -> Reply {
    let body: RuleFields = req.json()?;
    let (Some(name), Some(precedence), Some(action)) = (&body.name, body.precedence, &body.action)
    else {
        return Err(ApiError::bad_request(
            "missing_field",
            "a new rule needs a name, a precedence and an action",
        ));
    };
    let mut rule = Rule::new(
        name.trim(),
        i64::from(precedence),
        action.clone(),
        vec!["l4".to_owned()],
    );
    body.apply(&mut rule)?;
    ctx.state.db().update(|txn| write_rule(txn, &rule))?;
    tracing::info!(rule = %rule.name, "rule created");
    created(rule_view(&rule))
}

pub(super) fn update(ctx: &Ctx, req: &ApiRequest, key: &str) -> Reply {
    let body: RuleFields = req.json()?;
    let (rule, _) = ctx.state.db().update(|txn| {
        let mut rule = find_rule(txn, key)?;
        body.apply(&mut rule)?;
        write_rule(txn, &rule)?;
        Ok::<_, ApiError>(rule)
    })?;
    ok(rule_view(&rule))
}

pub(super) fn delete(ctx: &Ctx, key: &str) -> Reply {
    let (rule, _) = ctx.state.db().update(|txn| {
        let rule = find_rule(txn, key)?;
        txn.delete::<Rule>(rule.id)?;
        Ok::<_, ApiError>(rule)
    })?;
    ok(rule_view(&rule))
}
