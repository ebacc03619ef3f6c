//! Policy test cases of a file, evaluated against the file's own lists and rules with the
//! edge's compiler and evaluator, so a case passes here exactly when the edge, once the
//! file is applied, decides the same flow the same way. No edge is needed.

use std::net::IpAddr;

use serde::Serialize;
use zt_policy::{Action as PolicyAction, FlowContext, Identity, NetProtocol, PolicyConfig};

use super::file::{ConfigFile, PolicyTest};
use crate::store::{List, Rule};

/// A test case's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Whether the decision is the one expected.
    pub passed: bool,
    /// The outcome the policy gave: `allow` or `block`.
    pub decision: String,
    /// The phase that decided (`l4`, `http`).
    pub phase: String,
    /// The deciding rule; `None` when a phase's default decided.
    pub rule: Option<String>,
    /// The http phase's result (`off`, `allow`, `block`), when l4 allowed.
    pub http: Option<String>,
    /// What was expected and differs, for people.
    pub mismatch: Option<String>,
}

/// The file's policy could not be compiled, so no case could run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the file's policy does not compile: {0}")]
pub struct PolicyTestError(pub String);

/// The file's lists and rules as the edge would store them (fresh ids).
pub(crate) fn records(file: &ConfigFile) -> (Vec<List>, Vec<Rule>) {
    let lists: Vec<List> = file
        .lists
        .iter()
        .map(|l| {
            let mut list = List::new(&l.name, l.kind, l.items.clone());
            list.slug = l.slug.clone();
            list
        })
        .collect();
    let rules: Vec<Rule> = file
        .rules
        .iter()
        .map(|r| {
            let mut rule = Rule::new(&r.name, r.precedence, &r.action, r.filters.clone());
            rule.description = r.description.clone();
            rule.enabled = r.enabled;
            rule.traffic = r.traffic.clone();
            rule.identity = r.identity.clone();
            rule.device_posture = r.device_posture.clone();
            rule
        })
        .collect();
    (lists, rules)
}

/// Runs every test case of `file` against its lists and rules.
pub fn run_policy_tests(file: &ConfigFile) -> Result<Vec<CaseResult>, PolicyTestError> {
    let (lists, rules) = records(file);
    let policy = crate::policy_records::compile_policy(&lists, &rules, PolicyConfig::default())
        .map_err(|e| PolicyTestError(e.to_string()))?;
    Ok(file
        .tests
        .iter()
        .map(|case| run_case(file, &policy, case))
        .collect())
}

fn run_case(
    file: &ConfigFile,
    policy: &zt_policy::CompiledPolicy,
    case: &PolicyTest,
) -> CaseResult {
    let identity = case.user.as_ref().map(|email| Identity {
        id: email.to_lowercase(),
        email: email.clone(),
        groups: case.groups.clone().unwrap_or_else(|| {
            file.users
                .iter()
                .find(|u| u.email.eq_ignore_ascii_case(email))
                .map(|u| u.groups.clone())
                .unwrap_or_default()
        }),
        idp: case.idp.clone(),
    });
    let source: IpAddr = case.source.unwrap_or(IpAddr::from([192, 0, 2, 1]));
    let protocol = if case.protocol == "udp" {
        NetProtocol::Udp
    } else {
        NetProtocol::Tcp
    };
    let mut ctx = FlowContext::new(
        source,
        case.destination.ip(),
        case.destination.port(),
        protocol,
    );
    ctx.identity = identity.as_ref();
    let l4 = policy.l4(&ctx);
    let name = |n: Option<&str>| n.map(str::to_owned);
    let (decision, phase, rule, http) = if l4.action == PolicyAction::Block {
        ("block", "l4", name(l4.rule_name), None)
    } else if protocol == NetProtocol::Udp {
        // UDP flows meet no http phase.
        ("allow", "l4", name(l4.rule_name), None)
    } else if policy.http_off(&ctx).is_some() {
        ("allow", "l4", name(l4.rule_name), Some("off"))
    } else {
        let mut inspect_ctx = ctx;
        inspect_ctx.sni = case.host.as_deref();
        let inspect = policy.http_inspect(&inspect_ctx);
        if inspect.action == PolicyAction::Block {
            ("block", "http", name(inspect.rule_name), Some("block"))
        } else {
            ("allow", "l4", name(l4.rule_name), Some("allow"))
        }
    };
    let mut mismatch = Vec::new();
    if decision != case.expect {
        mismatch.push(format!("expected {}, got {decision}", case.expect));
    }
    if let Some(want) = &case.rule {
        let got = rule.as_deref().unwrap_or("default");
        if want != got {
            mismatch.push(format!("expected rule `{want}`, decided by `{got}`"));
        }
    }
    if let Some(want) = &case.http {
        let got = http.unwrap_or("none (l4 blocked)");
        if want != got {
            mismatch.push(format!("expected http `{want}`, got `{got}`"));
        }
    }
    CaseResult {
        name: case.name.clone(),
        passed: mismatch.is_empty(),
        decision: decision.into(),
        phase: phase.into(),
        rule,
        http: http.map(str::to_owned),
        mismatch: (!mismatch.is_empty()).then(|| mismatch.join("; ")),
    }
}
