//! Configuration as code: one reviewed YAML file names every resource (virtual networks,
//! tunnels, routes, lists, rules, managed users) by name or slug, never by generated id,
//! holds no secret, and carries policy test cases.
//!
//! - [`load`] / [`parse`] read and check a file, every refusal naming the file, the key
//!   path, the line and the column with the text underlined ([`ConfigError`]); limits
//!   ([`MAX_FILE_BYTES`], [`MAX_LIST_ITEMS`], [`MAX_RULES`], …) are refused by name.
//! - [`run_policy_tests`] evaluates the file's test cases against the file's own policy,
//!   with the edge's compiler, and needs no edge.
//! - [`plan`] diffs the file against the edge's state; [`apply`] applies it in one
//!   transaction, refusing when a resource the plan touches changed since (per-resource
//!   versions, [`crate::Record::version`]); [`drift`] reports changes made outside the
//!   file since the last apply; [`export`] writes the live state in the file's format.
//!
//! What it is not: a general state reconciler. Devices, tunnels' secrets and anything the
//! file does not name are never touched unless the plan prunes, and pruning never deletes
//! users no earlier apply wrote, devices, or the default virtual network.
//!
//! Groups: a user's `groups` in the file are the groups the edge stores for that user.
//! Groups an identity provider supplies at login belong to the session, not to the user
//! record, so a login never shows as drift; identity expressions see both (the union).

mod file;
mod plan;
mod policy_tests;

pub use file::{
    check_json, file_hash, load, parse, to_yaml, ConfigError, ConfigFile, IdpSpec, ListSpec,
    PolicyTest, RouteSpec, RuleSpec, ServiceTokenSpec, TunnelSpec, UserSpec, VnetSpec,
    FORMAT_VERSION, MAX_DEPTH, MAX_EXPRESSION_BYTES, MAX_FILE_BYTES, MAX_LIST_ITEMS,
    MAX_RESOLVED_BYTES, MAX_RESOURCES, MAX_RULES, MAX_TOTAL_ITEMS,
};
pub use plan::{
    Action, Applied, ApplyError, Change, Drift, Expected, FieldChange, LiveCount, Outcome, Plan,
    PlanOptions,
};
pub use policy_tests::{run_policy_tests, CaseResult, PolicyTestError};

use crate::store::{Db, StoreError};

/// The plan of `file` against the state of `db`. `live_count` gives a tunnel's live
/// connector connections (pruning one that has some needs `force`).
pub fn plan(
    db: &Db,
    file: &ConfigFile,
    options: PlanOptions,
    live_count: LiveCount<'_>,
) -> Result<Plan, StoreError> {
    plan::plan_in(&db.read()?, file, options, live_count)
}

/// Applies `file` in one transaction, refusing (and writing nothing) unless the plan
/// computed in that transaction touches exactly the resources of `expected` at the same
/// versions ([`Plan::expected`] of the plan the caller showed).
pub fn apply(
    db: &Db,
    file: &ConfigFile,
    options: PlanOptions,
    expected: &[Expected],
    live_count: LiveCount<'_>,
    account_tag: &str,
) -> Result<Outcome, ApplyError> {
    let (mut outcome, revision) =
        db.update(|txn| plan::apply_in(txn, file, options, expected, live_count, account_tag))?;
    outcome.revision = revision.get();
    Ok(outcome)
}

/// The changes made outside the file since the last apply (`None`: no file was applied).
pub fn drift(db: &Db) -> Result<Option<(Applied, Vec<Drift>)>, StoreError> {
    plan::drift_in(&db.read()?)
}

/// The live state in the file's format.
pub fn export(db: &Db) -> Result<ConfigFile, StoreError> {
    plan::export_in(&db.read()?)
}
