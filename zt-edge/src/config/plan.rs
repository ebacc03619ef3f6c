//! Plan, apply, drift and export: the file against the edge's state, in the store's
//! transactions.
//!
//! A plan is computed in one read (or write) transaction and lists, per resource, what
//! would be created, updated (with the fields that differ) or deleted, and the version of
//! each touched resource as the plan saw it. Applying runs in one write transaction: it
//! computes the plan again on the state it is about to change and refuses unless every
//! touched resource still has the version the caller planned against, so a concurrent
//! change to one of them fails the apply instead of being overwritten, while changes to
//! resources the plan does not touch (a login, another team's rule) do not. Every change
//! is then written, the whole policy and route table checked as the edge will load them,
//! and the result committed at once, or nothing is.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;
use zt_creds::{TunnelCredentials, TunnelSecret};

use super::file::{
    file_hash, ConfigFile, IdpSpec, ListSpec, RouteSpec, RuleSpec, ServiceTokenSpec, TunnelSpec,
    UserSpec, VnetSpec, FORMAT_VERSION,
};
use crate::store::{
    Device, IdentityProvider, List, Record, Route, Rule, ServiceToken, StoreError, Tunnel, User,
    VirtualNetwork, WriteTxn,
};
use crate::timestamp::Timestamp;

/// The configuration table's key for the last applied file.
const APPLIED_KEY: &str = "applied";

/// What a plan does to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Action {
    /// The file names it and the edge has none.
    Create,
    /// Both have it and some fields differ.
    Update,
    /// The edge has it, the file does not, and the plan prunes.
    Delete,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        })
    }
}

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The field's name in the file.
    pub field: String,
    /// The live value (`null` for a create).
    pub before: Value,
    /// The file's value (`null` for a delete).
    pub after: Value,
}

/// The change to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The resource's key: `KIND/NAME`, such as `rule/Don't inspect Kubernetes API` or
    /// `route/default/198.51.100.101/32`.
    pub resource: String,
    /// What happens to it.
    pub action: Action,
    /// The fields that differ.
    #[serde(default)]
    pub fields: Vec<FieldChange>,
    /// The live version the plan saw (`None` for a create).
    pub version: Option<u64>,
    /// Why the change cannot be applied as planned (a tunnel with live connectors pruned
    /// without `force`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

/// A plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The changes, in the order they are applied.
    pub changes: Vec<Change>,
    /// Resources at the edge the file does not name, kept because the plan does not prune.
    #[serde(default)]
    pub unmanaged: Vec<String>,
    /// The hash of the file planned ([`file_hash`]).
    pub file_hash: String,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The resources and versions an apply of this plan expects to find.
    pub fn expected(&self) -> Vec<Expected> {
        self.changes
            .iter()
            .map(|c| Expected {
                resource: c.resource.clone(),
                version: c.version,
            })
            .collect()
    }
}

/// A resource an apply expects at a version (`None`: expects it absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// The resource key.
    pub resource: String,
    /// The version.
    pub version: Option<u64>,
}

/// How to plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanOptions {
    /// Delete what the file does not name (never users the file did not manage, nor
    /// devices, nor the default virtual network).
    #[serde(default)]
    pub prune: bool,
    /// Prune tunnels even while connectors are connected.
    #[serde(default)]
    pub force: bool,
}

/// The last applied file, as the edge keeps it for drift detection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The file's hash.
    pub file_hash: String,
    /// When it was applied.
    pub applied_at: Option<Timestamp>,
    /// Every resource the file named, with its version right after the apply.
    pub resources: BTreeMap<String, u64>,
    /// The resources at the edge the file did not name, right after the apply: their later
    /// changes are not the file's business, and they are not "created since".
    #[serde(default)]
    pub unmanaged: std::collections::BTreeSet<String>,
}

/// A change made outside the file since the last apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The resource key.
    pub resource: String,
    /// `changed`, `deleted` or `created`.
    pub what: String,
    /// The version the apply left (`None` for a resource created since).
    pub applied_version: Option<u64>,
    /// The version now (`None` for a deleted one).
    pub live_version: Option<u64>,
}

/// Why an apply was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A resource the plan touches changed since it was planned.
    #[error("{resource} changed since the plan was made ({}); nothing was applied: run `zt plan` again", describe_versions(*planned, *now))]
    Changed {
        /// The resource key.
        resource: String,
        /// The version planned against.
        planned: Option<u64>,
        /// The version now.
        now: Option<u64>,
    },
    /// A resource the plan left alone (it matched the file) changed since the plan was
    /// made, so applying now would overwrite that change unseen.
    #[error("{resource} changed since the plan was made (it matched the file then{}); nothing was applied: run `zt plan` again", now.map(|v| format!(", version {v} now")).unwrap_or_default())]
    ChangedOutsidePlan {
        /// The resource key.
        resource: String,
        /// The version now.
        now: Option<u64>,
    },
    /// A change is blocked (a tunnel with live connectors, without `force`).
    #[error("{resource}: {reason}; nothing was applied")]
    Blocked {
        /// The resource key.
        resource: String,
        /// Why.
        reason: String,
    },
    /// The resulting state is not one the edge can load (an expression, a list item, a
    /// route); the message names the rule, list or route and the field.
    #[error("{resource}: {reason}; nothing was applied")]
    Invalid {
        /// The resource key, or `policy` for the rule set as a whole.
        resource: String,
        /// What is wrong.
        reason: String,
        /// Structured detail (an expression's span and diagnostic).
        detail: Value,
    },
    /// The store failed or refused a record.
    #[error("{resource}: {source}; nothing was applied")]
    Store {
        /// The resource being written.
        resource: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

fn describe_versions(planned: Option<u64>, now: Option<u64>) -> String {
    match (planned, now) {
        (Some(p), Some(n)) => format!("version {p} planned, {n} now"),
        (Some(p), None) => format!("version {p} planned, deleted since"),
        (None, Some(n)) => format!("absent when planned, version {n} now"),
        (None, None) => "its planned change is no longer needed".into(),
    }
}

impl From<StoreError> for ApplyError {
    fn from(source: StoreError) -> Self {
        ApplyError::Store {
            resource: "state".into(),
            source,
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The changes made.
    pub changes: Vec<Change>,
    /// The credentials of the tunnels created, by tunnel name: the only time their
    /// secrets leave the edge.
    #[serde(skip)]
    pub credentials: Vec<(String, TunnelCredentials)>,
    /// The service tokens created: name, id and secret, the only time the secret leaves
    /// the store (the caller wraps it in a device credentials file with the edge's
    /// addresses).
    #[serde(skip)]
    pub tokens: Vec<(String, Uuid, TunnelSecret)>,
    /// The store revision the apply committed; the edge serves it once
    /// [`EdgeHandle::applied_revision`](crate::EdgeHandle::applied_revision) reaches it.
    pub revision: u64,
}

/// The live connections of a tunnel, for pruning (the edge's registry; none in tests of
/// the store alone).
pub type LiveCount<'a> = &'a dyn Fn(Uuid) -> usize;

/// The live state, indexed by the file's keys.
struct Live {
    default_vnet: Option<VirtualNetwork>,
    vnets: BTreeMap<String, VirtualNetwork>,
    vnet_names: HashMap<Uuid, String>,
    tunnels: BTreeMap<String, Tunnel>,
    tunnel_names: HashMap<Uuid, String>,
    routes: BTreeMap<String, Route>,
    lists: BTreeMap<String, List>,
    rules: BTreeMap<String, Rule>,
    users: BTreeMap<String, User>,
    idps: BTreeMap<String, IdentityProvider>,
    /// Every service token, revoked ones too (a revoked name stays taken).
    tokens: BTreeMap<String, ServiceToken>,
}

/// The read side both transaction kinds offer.
pub(crate) trait Reader {
    fn all<R: Record>(&self) -> Result<Vec<R>, StoreError>;
    fn applied(&self) -> Result<Option<Applied>, StoreError>;
}

macro_rules! reader {
    ($t:ty) => {
        impl Reader for $t {
            fn all<R: Record>(&self) -> Result<Vec<R>, StoreError> {
                self.list::<R>()
            }
            fn applied(&self) -> Result<Option<Applied>, StoreError> {
                match self.config_entry(APPLIED_KEY)? {
                    None => Ok(None),
                    Some(v) => {
                        serde_json::from_value(v)
                            .map(Some)
                            .map_err(|e| StoreError::Corrupt {
                                table: "config",
                                key: APPLIED_KEY.into(),
                                reason: e.to_string(),
                            })
                    }
                }
            }
        }
    };
}

reader!(crate::store::ReadTxn<'_>);
reader!(WriteTxn<'_>);

fn route_key(vnet: &str, network: IpNet) -> String {
    format!("route/{vnet}/{network}")
}

/// The name the file gives the default virtual network when it does not name one: the
/// default's own name.
fn vnet_label(live: &Live, file: &ConfigFile, name: Option<&str>) -> String {
    match name {
        Some(n) => n.to_owned(),
        None => file
            .vnets
            .iter()
            .find(|v| v.default)
            .map(|v| v.name.clone())
            .or_else(|| live.default_vnet.as_ref().map(|v| v.name.clone()))
            .unwrap_or_else(|| "default".into()),
    }
}

impl Live {
    fn load(r: &impl Reader) -> Result<Self, StoreError> {
        let vnets_all = r.all::<VirtualNetwork>()?;
        let default_vnet = vnets_all.iter().find(|v| v.is_default).cloned();
        let vnet_names: HashMap<Uuid, String> =
            vnets_all.iter().map(|v| (v.id, v.name.clone())).collect();
        let tunnels_all: Vec<Tunnel> = r
            .all::<Tunnel>()?
            .into_iter()
            .filter(Tunnel::is_active)
            .collect();
        let tunnel_names: HashMap<Uuid, String> =
            tunnels_all.iter().map(|t| (t.id, t.name.clone())).collect();
        let routes = r
            .all::<Route>()?
            .into_iter()
            .map(|rt| {
                let vnet = vnet_names.get(&rt.vnet).cloned().unwrap_or_default();
                (route_key(&vnet, rt.network), rt)
            })
            .collect();
        Ok(Live {
            default_vnet,
            vnets: vnets_all
                .into_iter()
                .map(|v| (format!("vnet/{}", v.name), v))
                .collect(),
            vnet_names,
            tunnels: tunnels_all
                .into_iter()
                .map(|t| (format!("tunnel/{}", t.name), t))
                .collect(),
            tunnel_names,
            routes,
            lists: r
                .all::<List>()?
                .into_iter()
                .map(|l| (format!("list/{}", l.name), l))
                .collect(),
            rules: r
                .all::<Rule>()?
                .into_iter()
                .map(|l| (format!("rule/{}", l.name), l))
                .collect(),
            users: r
                .all::<User>()?
                .into_iter()
                .map(|u| (format!("user/{}", u.email.to_lowercase()), u))
                .collect(),
            idps: r
                .all::<IdentityProvider>()?
                .into_iter()
                .map(|p| (idp_key(&p.name), p))
                .collect(),
            tokens: r
                .all::<ServiceToken>()?
                .into_iter()
                .map(|t| (token_key(&t.name), t))
                .collect(),
        })
    }

    fn version_of(&self, key: &str) -> Option<u64> {
        self.vnets
            .get(key)
            .map(Record::version)
            .or_else(|| self.tunnels.get(key).map(Record::version))
            .or_else(|| self.routes.get(key).map(Record::version))
            .or_else(|| self.lists.get(key).map(Record::version))
            .or_else(|| self.rules.get(key).map(Record::version))
            .or_else(|| self.users.get(key).map(Record::version))
            .or_else(|| self.idps.get(key).map(Record::version))
            .or_else(|| self.tokens.get(key).map(Record::version))
    }

    /// The tokens that work or may again by the file's say: not revoked.
    fn live_tokens(&self) -> impl Iterator<Item = (&String, &ServiceToken)> {
        self.tokens.iter().filter(|(_, t)| !t.revoked)
    }
}

fn token_key(name: &str) -> String {
    format!("token/{}", name.to_lowercase())
}

/// An expiry as the plan compares it: the edge's own spelling of the instant.
fn expiry_text(text: Option<&str>) -> Value {
    json!(
        text.map(|t| Timestamp::parse_rfc3339(t).map_or_else(|| t.to_owned(), |at| at.to_string()))
    )
}

fn token_json(t: &ServiceTokenSpec) -> Value {
    json!({ "groups": t.groups, "expires_at": expiry_text(t.expires_at.as_deref()) })
}

fn token_record_json(t: &ServiceToken) -> Value {
    json!({ "groups": t.groups, "expires_at": t.expires_at.map(|at| at.to_string()) })
}

fn idp_key(name: &str) -> String {
    format!("idp/{}", name.to_lowercase())
}

/// What the file says of a provider, as the fields a plan compares.
fn idp_json(p: &IdpSpec) -> Value {
    json!({
        "issuer": p.issuer,
        "client_id": p.client_id,
        "scopes": p.scopes,
        "groups_claim": p.groups_claim,
        "allowed_domains": p.allowed_domains,
        "session_length_secs": p.session_length_secs,
        "ca_pem": p.ca_pem,
    })
}

fn idp_record_json(p: &IdentityProvider) -> Value {
    json!({
        "issuer": p.issuer,
        "client_id": p.client_id,
        "scopes": p.scopes,
        "groups_claim": p.groups_claim,
        "allowed_domains": p.allowed_domains,
        "session_length_secs": p.session_length_secs,
        "ca_pem": p.ca_pem,
    })
}

fn diff(fields: &mut Vec<FieldChange>, field: &str, before: Value, after: Value) {
    if before != after {
        fields.push(FieldChange {
            field: field.into(),
            before,
            after,
        });
    }
}

fn create_fields(v: Value) -> Vec<FieldChange> {
    match v {
        Value::Object(m) => m
            .into_iter()
            .map(|(k, v)| FieldChange {
                field: k,
                before: Value::Null,
                after: v,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn opt(v: &Option<String>) -> Value {
    json!(v)
}

fn rule_fields(live: &Rule, want: &RuleSpec) -> Vec<FieldChange> {
    let mut f = Vec::new();
    diff(
        &mut f,
        "description",
        json!(live.description),
        json!(want.description),
    );
    diff(
        &mut f,
        "precedence",
        json!(live.precedence),
        json!(want.precedence),
    );
    diff(
        &mut f,
        "action",
        json!(live.action.to_ascii_lowercase()),
        json!(want.action.to_ascii_lowercase()),
    );
    diff(&mut f, "enabled", json!(live.enabled), json!(want.enabled));
    let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
    diff(
        &mut f,
        "filters",
        json!(lower(&live.filters)),
        json!(lower(&want.filters)),
    );
    diff(&mut f, "traffic", opt(&live.traffic), opt(&want.traffic));
    diff(&mut f, "identity", opt(&live.identity), opt(&want.identity));
    diff(
        &mut f,
        "device_posture",
        opt(&live.device_posture),
        opt(&want.device_posture),
    );
    f
}

fn list_fields(live: &List, want: &ListSpec) -> Vec<FieldChange> {
    let mut f = Vec::new();
    diff(&mut f, "slug", opt(&live.slug), opt(&want.slug));
    diff(&mut f, "type", json!(live.kind), json!(want.kind));
    if live.items != want.items {
        // Thousands of items make a useless diff line: say what was added and removed.
        let before: std::collections::HashSet<&String> = live.items.iter().collect();
        let after: std::collections::HashSet<&String> = want.items.iter().collect();
        let added: Vec<&&String> = after.difference(&before).collect();
        let removed: Vec<&&String> = before.difference(&after).collect();
        let small = |v: &[&String]| v.len() <= 20;
        if small(&live.items.iter().collect::<Vec<_>>())
            && small(&want.items.iter().collect::<Vec<_>>())
        {
            diff(&mut f, "items", json!(live.items), json!(want.items));
        } else {
            f.push(FieldChange {
                field: "items".into(),
                before: json!(format!("{} items", live.items.len())),
                after: json!(format!(
                    "{} items ({} added, {} removed{})",
                    want.items.len(),
                    added.len(),
                    removed.len(),
                    if added.is_empty() && removed.is_empty() {
                        ", reordered"
                    } else {
                        ""
                    }
                )),
            });
        }
    }
    diff(
        &mut f,
        "description",
        json!(live.description),
        json!(want.description),
    );
    f
}

fn rule_spec_json(r: &RuleSpec) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

/// Computes the plan of `file` against the state `r` reads.
pub(crate) fn plan_in(
    r: &impl Reader,
    file: &ConfigFile,
    options: PlanOptions,
    live_count: LiveCount<'_>,
) -> Result<Plan, StoreError> {
    let live = Live::load(r)?;
    let applied = r.applied()?.unwrap_or_default();
    let mut changes = Vec::new();
    let mut unmanaged = Vec::new();
    let mut named = std::collections::HashSet::new();

    let push = |changes: &mut Vec<Change>, resource: String, action, fields, version| {
        changes.push(Change {
            resource,
            action,
            fields,
            version,
            blocked: None,
        });
    };

    for v in &file.vnets {
        let key = format!("vnet/{}", v.name);
        named.insert(key.clone());
        match live.vnets.get(&key) {
            None => push(
                &mut changes,
                key,
                Action::Create,
                create_fields(json!(v)),
                None,
            ),
            Some(l) => {
                let mut f = Vec::new();
                diff(&mut f, "comment", json!(l.comment), json!(v.comment));
                // Only a file that says `default: true` moves the default.
                if v.default && !l.is_default {
                    diff(&mut f, "default", json!(l.is_default), json!(v.default));
                }
                if !f.is_empty() {
                    push(&mut changes, key, Action::Update, f, Some(l.version));
                }
            }
        }
    }
    for t in &file.tunnels {
        let key = format!("tunnel/{}", t.name);
        named.insert(key.clone());
        if !live.tunnels.contains_key(&key) {
            push(
                &mut changes,
                key,
                Action::Create,
                create_fields(json!(t)),
                None,
            );
        }
    }
    for l in &file.lists {
        let key = format!("list/{}", l.name);
        named.insert(key.clone());
        match live.lists.get(&key) {
            None => {
                let mut v = json!(l);
                if l.items.len() > 20 {
                    v["items"] = json!(format!("{} items", l.items.len()));
                }
                push(&mut changes, key, Action::Create, create_fields(v), None)
            }
            Some(x) => {
                let f = list_fields(x, l);
                if !f.is_empty() {
                    push(&mut changes, key, Action::Update, f, Some(x.version));
                }
            }
        }
    }
    for u in &file.users {
        let key = format!("user/{}", u.email.to_lowercase());
        named.insert(key.clone());
        match live.users.get(&key) {
            None => push(
                &mut changes,
                key,
                Action::Create,
                create_fields(json!(u)),
                None,
            ),
            Some(x) => {
                let mut f = Vec::new();
                diff(&mut f, "groups", json!(x.groups), json!(u.groups));
                if !f.is_empty() {
                    push(&mut changes, key, Action::Update, f, Some(x.version));
                }
            }
        }
    }
    for p in &file.identity_providers {
        let key = idp_key(&p.name);
        named.insert(key.clone());
        match live.idps.get(&key) {
            None => push(
                &mut changes,
                key,
                Action::Create,
                create_fields(idp_json(p)),
                None,
            ),
            Some(x) => {
                let (before, after) = (idp_record_json(x), idp_json(p));
                let mut f = Vec::new();
                if let (Value::Object(b), Value::Object(a)) = (before, after) {
                    for (field, want) in a {
                        diff(
                            &mut f,
                            &field,
                            b.get(&field).cloned().unwrap_or(Value::Null),
                            want,
                        );
                    }
                }
                if !f.is_empty() {
                    push(&mut changes, key, Action::Update, f, Some(x.version));
                }
            }
        }
    }
    for rt in &file.routes {
        let vnet = vnet_label(&live, file, rt.vnet.as_deref());
        let key = route_key(&vnet, rt.network);
        named.insert(key.clone());
        match live.routes.get(&key) {
            None => push(
                &mut changes,
                key,
                Action::Create,
                create_fields(json!(rt)),
                None,
            ),
            Some(x) => {
                let mut f = Vec::new();
                let tunnel = live
                    .tunnel_names
                    .get(&x.tunnel_id)
                    .cloned()
                    .unwrap_or_default();
                diff(&mut f, "tunnel", json!(tunnel), json!(rt.tunnel));
                diff(&mut f, "comment", json!(x.comment), json!(rt.comment));
                if !f.is_empty() {
                    push(&mut changes, key, Action::Update, f, Some(x.version));
                }
            }
        }
    }
    for rule in &file.rules {
        let key = format!("rule/{}", rule.name);
        named.insert(key.clone());
        match live.rules.get(&key) {
            None => push(
                &mut changes,
                key,
                Action::Create,
                create_fields(rule_spec_json(rule)),
                None,
            ),
            Some(x) => {
                let f = rule_fields(x, rule);
                if !f.is_empty() {
                    push(&mut changes, key, Action::Update, f, Some(x.version));
                }
            }
        }
    }

    for t in &file.service_tokens {
        let key = token_key(&t.name);
        named.insert(key.clone());
        match live.tokens.get(&key) {
            None => push(
                &mut changes,
                key,
                Action::Create,
                create_fields(token_json(t)),
                None,
            ),
            Some(x) if x.revoked => changes.push(Change {
                resource: key,
                action: Action::Update,
                fields: Vec::new(),
                version: Some(x.version),
                blocked: Some(format!(
                    "the service token `{}` is revoked, and a revoked token stays revoked; \
                     give its successor another name",
                    x.name
                )),
            }),
            Some(x) => {
                let (before, after) = (token_record_json(x), token_json(t));
                let mut f = Vec::new();
                diff(
                    &mut f,
                    "groups",
                    before["groups"].clone(),
                    after["groups"].clone(),
                );
                diff(
                    &mut f,
                    "expires_at",
                    before["expires_at"].clone(),
                    after["expires_at"].clone(),
                );
                if !f.is_empty() {
                    push(&mut changes, key, Action::Update, f, Some(x.version));
                }
            }
        }
    }

    // What the file does not name, in the order deletes must run: rules and routes
    // before the lists, tunnels and networks they use.
    let mut deletes: Vec<(String, u64, Option<String>)> = Vec::new();
    for (k, x) in &live.rules {
        deletes.push((k.clone(), x.version, None));
    }
    for (k, x) in &live.routes {
        deletes.push((k.clone(), x.version, None));
    }
    for (k, x) in &live.lists {
        deletes.push((k.clone(), x.version, None));
    }
    for (k, x) in &live.users {
        // Only users an earlier apply of a file wrote are the file's to delete.
        if applied.resources.contains_key(k) {
            deletes.push((k.clone(), x.version, None));
        }
    }
    for (k, x) in &live.idps {
        deletes.push((k.clone(), x.version, None));
    }
    // A token the file drops is revoked, at once, with every live session it has.
    for (k, x) in live.live_tokens() {
        deletes.push((k.clone(), x.version, None));
    }
    for (k, x) in &live.tunnels {
        let n = live_count(x.id);
        let blocked = (n > 0 && !options.force)
            .then(|| format!("{n} live connector connection(s); pruning it needs --force"));
        deletes.push((k.clone(), x.version, blocked));
    }
    for (k, x) in &live.vnets {
        if !x.is_default {
            deletes.push((k.clone(), x.version, None));
        }
    }
    for (key, version, blocked) in deletes {
        if named.contains(&key) {
            continue;
        }
        if options.prune {
            changes.push(Change {
                resource: key,
                action: Action::Delete,
                fields: Vec::new(),
                version: Some(version),
                blocked,
            });
        } else {
            unmanaged.push(key);
        }
    }
    Ok(Plan {
        changes,
        unmanaged,
        file_hash: file_hash(file),
    })
}

fn store_err(resource: &str) -> impl Fn(StoreError) -> ApplyError + '_ {
    move |source| ApplyError::Store {
        resource: resource.to_owned(),
        source,
    }
}

/// Applies `file` in `txn`, refusing unless the plan computed here touches exactly the
/// resources of `expected` at the same versions.
pub(crate) fn apply_in(
    txn: &mut WriteTxn<'_>,
    file: &ConfigFile,
    options: PlanOptions,
    expected: &[Expected],
    live_count: LiveCount<'_>,
    account_tag: &str,
) -> Result<Outcome, ApplyError> {
    let plan = plan_in(txn, file, options, live_count)?;
    let planned: HashMap<&str, Option<u64>> = expected
        .iter()
        .map(|e| (e.resource.as_str(), e.version))
        .collect();
    for c in &plan.changes {
        match planned.get(c.resource.as_str()) {
            Some(v) if *v == c.version => {}
            Some(v) => {
                return Err(ApplyError::Changed {
                    resource: c.resource.clone(),
                    planned: *v,
                    now: c.version,
                })
            }
            None => {
                // Not in the plan: it was in step with the file when planned, and someone
                // changed it since (or created it).
                return Err(ApplyError::ChangedOutsidePlan {
                    resource: c.resource.clone(),
                    now: c.version,
                });
            }
        }
        if let Some(reason) = &c.blocked {
            return Err(ApplyError::Blocked {
                resource: c.resource.clone(),
                reason: reason.clone(),
            });
        }
    }
    let in_plan: std::collections::HashSet<&str> =
        plan.changes.iter().map(|c| c.resource.as_str()).collect();
    for e in expected {
        if !in_plan.contains(e.resource.as_str()) {
            let live = Live::load(txn)?;
            return Err(ApplyError::Changed {
                resource: e.resource.clone(),
                planned: e.version,
                now: live.version_of(&e.resource),
            });
        }
    }

    let mut credentials = Vec::new();
    let mut tokens = Vec::new();
    let touched: std::collections::HashSet<String> =
        plan.changes.iter().map(|c| c.resource.clone()).collect();
    let by_key = |c: &str| plan.changes.iter().find(|x| x.resource == c);

    // Creates and updates, in dependency order: networks, tunnels, lists, users, routes,
    // rules; then the deletes in the plan's order.
    let live = Live::load(txn)?;
    for v in &file.vnets {
        let key = format!("vnet/{}", v.name);
        if !touched.contains(&key) {
            continue;
        }
        let mut rec = live
            .vnets
            .get(&key)
            .cloned()
            .unwrap_or_else(|| VirtualNetwork::new(&v.name));
        rec.comment = v.comment.clone();
        txn.put(&rec).map_err(store_err(&key))?;
        if v.default && !rec.is_default {
            txn.set_default_vnet(rec.id).map_err(store_err(&key))?;
        }
    }
    for t in &file.tunnels {
        let key = format!("tunnel/{}", t.name);
        if !touched.contains(&key) {
            continue;
        }
        let secret = TunnelSecret::generate();
        let tunnel = Tunnel::new(&t.name, account_tag, &secret);
        txn.put(&tunnel).map_err(store_err(&key))?;
        credentials.push((
            t.name.clone(),
            TunnelCredentials {
                account_tag: tunnel.account_tag.clone(),
                tunnel_id: tunnel.id,
                tunnel_name: Some(tunnel.name.clone()),
                secret,
                endpoint: None,
            },
        ));
    }
    for l in &file.lists {
        let key = format!("list/{}", l.name);
        if !touched.contains(&key) {
            continue;
        }
        let mut rec = live
            .lists
            .get(&key)
            .cloned()
            .unwrap_or_else(|| List::new(&l.name, l.kind, Vec::new()));
        rec.slug = l.slug.clone();
        rec.kind = l.kind;
        rec.items = l.items.clone();
        rec.description = l.description.clone();
        txn.put(&rec).map_err(store_err(&key))?;
    }
    for u in &file.users {
        let key = format!("user/{}", u.email.to_lowercase());
        if !touched.contains(&key) {
            continue;
        }
        let mut rec = live
            .users
            .get(&key)
            .cloned()
            .unwrap_or_else(|| User::new(u.email.trim(), Vec::new()));
        rec.groups = u.groups.clone();
        txn.put(&rec).map_err(store_err(&key))?;
    }
    for p in &file.identity_providers {
        let key = idp_key(&p.name);
        if !touched.contains(&key) {
            continue;
        }
        // A client secret given with `zt idp add` stays: it is never in the file.
        let mut rec = live
            .idps
            .get(&key)
            .cloned()
            .unwrap_or_else(|| IdentityProvider::new(&p.name, &p.issuer, &p.client_id));
        rec.issuer = p.issuer.clone();
        rec.client_id = p.client_id.clone();
        rec.scopes = p.scopes.clone();
        rec.groups_claim = p.groups_claim.clone();
        rec.allowed_domains = p.allowed_domains.clone();
        rec.session_length_secs = p.session_length_secs;
        rec.ca_pem = p.ca_pem.clone();
        txn.put(&rec).map_err(store_err(&key))?;
    }
    for t in &file.service_tokens {
        let key = token_key(&t.name);
        if !touched.contains(&key) {
            continue;
        }
        let expires_at = match t.expires_at.as_deref() {
            None => None,
            Some(text) => {
                Some(
                    Timestamp::parse_rfc3339(text).ok_or_else(|| ApplyError::Invalid {
                        resource: key.clone(),
                        reason: format!("expires_at `{text}` is not an RFC 3339 time"),
                        detail: Value::Null,
                    })?,
                )
            }
        };
        match live.tokens.get(&key) {
            Some(x) => {
                let mut rec = x.clone();
                rec.groups = t.groups.clone();
                rec.expires_at = expires_at;
                txn.put(&rec).map_err(store_err(&key))?;
            }
            None => {
                let secret = TunnelSecret::generate();
                let rec = ServiceToken::new(t.name.trim(), t.groups.clone(), &secret, expires_at);
                txn.put(&rec).map_err(store_err(&key))?;
                tokens.push((rec.name.clone(), rec.id, secret));
            }
        }
    }
    // Deletes of routes and rules come before creates, so a route moved to another
    // network, or a rule renamed, never collides with its old self.
    delete_kind(txn, &plan, &live, "route/")?;
    delete_kind(txn, &plan, &live, "rule/")?;
    if plan
        .changes
        .iter()
        .any(|c| c.resource.starts_with("route/"))
    {
        let vnets_now: BTreeMap<String, VirtualNetwork> = txn
            .list::<VirtualNetwork>()?
            .into_iter()
            .map(|v| (v.name.clone(), v))
            .collect();
        for rt in &file.routes {
            let vnet_name = vnet_label(&live, file, rt.vnet.as_deref());
            let key = route_key(&vnet_name, rt.network);
            if !touched.contains(&key) || by_key(&key).is_some_and(|c| c.action == Action::Delete) {
                continue;
            }
            let vnet = vnets_now
                .get(&vnet_name)
                .ok_or_else(|| ApplyError::Invalid {
                    resource: key.clone(),
                    reason: format!("vnet: no virtual network named `{vnet_name}`"),
                    detail: Value::Null,
                })?;
            let tunnel = txn
                .tunnel_by_name(&rt.tunnel)
                .map_err(store_err(&key))?
                .ok_or_else(|| ApplyError::Invalid {
                    resource: key.clone(),
                    reason: format!("tunnel: no tunnel named `{}`", rt.tunnel),
                    detail: Value::Null,
                })?;
            let mut rec = live
                .routes
                .get(&key)
                .cloned()
                .unwrap_or_else(|| Route::new(rt.network, vnet.id, tunnel.id));
            rec.tunnel_id = tunnel.id;
            rec.comment = rt.comment.clone();
            txn.put(&rec).map_err(store_err(&key))?;
        }
    }
    for rule in &file.rules {
        let key = format!("rule/{}", rule.name);
        if !touched.contains(&key) {
            continue;
        }
        let mut rec =
            live.rules.get(&key).cloned().unwrap_or_else(|| {
                Rule::new(&rule.name, rule.precedence, &rule.action, Vec::new())
            });
        rec.description = rule.description.clone();
        rec.precedence = rule.precedence;
        rec.action = rule.action.clone();
        rec.enabled = rule.enabled;
        rec.filters = rule.filters.clone();
        rec.traffic = rule.traffic.clone();
        rec.identity = rule.identity.clone();
        rec.device_posture = rule.device_posture.clone();
        txn.put(&rec).map_err(store_err(&key))?;
    }
    delete_kind(txn, &plan, &live, "list/")?;
    delete_kind(txn, &plan, &live, "user/")?;
    delete_kind(txn, &plan, &live, "idp/")?;
    delete_kind(txn, &plan, &live, "token/")?;
    delete_kind(txn, &plan, &live, "tunnel/")?;
    delete_kind(txn, &plan, &live, "vnet/")?;

    // The state as the edge will load it: every rule compiles against every list, and
    // the routes form a table.
    check_loadable(txn)?;

    // What the file now manages, with the versions just written, for drift detection.
    let after = Live::load(txn)?;
    let mut resources = BTreeMap::new();
    let mut keys: Vec<String> = Vec::new();
    keys.extend(file.vnets.iter().map(|v| format!("vnet/{}", v.name)));
    keys.extend(file.tunnels.iter().map(|v| format!("tunnel/{}", v.name)));
    keys.extend(file.lists.iter().map(|v| format!("list/{}", v.name)));
    keys.extend(
        file.users
            .iter()
            .map(|v| format!("user/{}", v.email.to_lowercase())),
    );
    keys.extend(file.rules.iter().map(|v| format!("rule/{}", v.name)));
    keys.extend(file.identity_providers.iter().map(|p| idp_key(&p.name)));
    keys.extend(file.service_tokens.iter().map(|t| token_key(&t.name)));
    keys.extend(
        file.routes
            .iter()
            .map(|r| route_key(&vnet_label(&after, file, r.vnet.as_deref()), r.network)),
    );
    for k in keys {
        if let Some(v) = after.version_of(&k) {
            resources.insert(k, v);
        }
    }
    let unmanaged = after
        .vnets
        .keys()
        .chain(after.tunnels.keys())
        .chain(after.routes.keys())
        .chain(after.lists.keys())
        .chain(after.rules.keys())
        .chain(after.idps.keys())
        .chain(after.live_tokens().map(|(k, _)| k))
        .filter(|k| !resources.contains_key(*k))
        .cloned()
        .collect();
    let previous = txn.applied()?;
    let unchanged = plan.changes.is_empty()
        && previous.as_ref().is_some_and(|p| {
            p.file_hash == plan.file_hash && p.resources == resources && p.unmanaged == unmanaged
        });
    // Re-applying the same file to the same state writes nothing at all, so the
    // revision does not move and the edge reloads nothing.
    if !unchanged {
        let applied = Applied {
            file_hash: plan.file_hash.clone(),
            applied_at: Some(Timestamp::now()),
            resources,
            unmanaged,
        };
        txn.put_config_entry(APPLIED_KEY, &json!(applied))?;
    }
    Ok(Outcome {
        changes: plan.changes,
        credentials,
        tokens,
        revision: 0,
    })
}

fn delete_kind(
    txn: &mut WriteTxn<'_>,
    plan: &Plan,
    live: &Live,
    prefix: &str,
) -> Result<(), ApplyError> {
    for c in plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete && c.resource.starts_with(prefix))
    {
        let key = c.resource.as_str();
        let err = store_err(key);
        match prefix {
            "route/" => {
                txn.delete::<Route>(live.routes[key].id).map_err(err)?;
            }
            "rule/" => {
                txn.delete::<Rule>(live.rules[key].id).map_err(err)?;
            }
            "list/" => {
                txn.delete::<List>(live.lists[key].id).map_err(err)?;
            }
            "idp/" => {
                txn.delete::<IdentityProvider>(live.idps[key].id)
                    .map_err(err)?;
            }
            "token/" => {
                // Revoked, as `zt token revoke` does: the name stays taken and the audit
                // log's lines keep meaning something.
                let mut t = live.tokens[key].clone();
                t.revoked = true;
                txn.put(&t).map_err(err)?;
            }
            "user/" => {
                let id = live.users[key].id;
                // A user's devices go with it (their records are the credentials' only
                // verifiers), as `zt user remove` does.
                for d in txn
                    .list::<Device>()?
                    .into_iter()
                    .filter(|d| d.user_id == id)
                {
                    txn.delete::<Device>(d.id).map_err(store_err(key))?;
                }
                txn.delete::<User>(id).map_err(err)?;
            }
            "tunnel/" => {
                // Tunnels are soft-deleted, as `zt tunnel delete` does.
                let mut t = live.tunnels[key].clone();
                t.deleted_at = Some(Timestamp::now());
                txn.put(&t).map_err(err)?;
            }
            "vnet/" => {
                txn.delete::<VirtualNetwork>(live.vnets[key].id)
                    .map_err(err)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_loadable(txn: &WriteTxn<'_>) -> Result<(), ApplyError> {
    let lists = txn.list::<List>()?;
    let rules = txn.list::<Rule>()?;
    if let Err(e) =
        crate::policy_records::compile_policy(&lists, &rules, zt_policy::PolicyConfig::default())
    {
        let detail = match &e {
            crate::policy_records::PolicyBuildError::Compile(
                zt_policy::CompileError::Expression {
                    rule, slot, error, ..
                },
            ) => {
                let span = error.span();
                json!({
                    "rule": rule,
                    "slot": slot.to_string(),
                    "span": [span.start, span.end],
                    "diagnostic": error.to_string(),
                })
            }
            _ => Value::Null,
        };
        let resource = match &detail["rule"] {
            Value::String(r) => format!("rule/{r}"),
            _ => "policy".into(),
        };
        return Err(ApplyError::Invalid {
            resource,
            reason: e.to_string(),
            detail,
        });
    }
    Ok(())
}

/// The drift since the last apply: resources the file wrote that changed or went away, and
/// resources created since the apply (neither the file's nor there when it was applied). Users and the default virtual network
/// count only when a file wrote them (users come and go with `zt user add` and logins).
pub(crate) fn drift_in(r: &impl Reader) -> Result<Option<(Applied, Vec<Drift>)>, StoreError> {
    let Some(applied) = r.applied()? else {
        return Ok(None);
    };
    let live = Live::load(r)?;
    let mut out = Vec::new();
    for (k, v) in &applied.resources {
        match live.version_of(k) {
            None => out.push(Drift {
                resource: k.clone(),
                what: "deleted".into(),
                applied_version: Some(*v),
                live_version: None,
            }),
            Some(now) if now != *v => out.push(Drift {
                resource: k.clone(),
                what: "changed".into(),
                applied_version: Some(*v),
                live_version: Some(now),
            }),
            Some(_) => {}
        }
    }
    let created = live
        .vnets
        .iter()
        .filter(|(_, v)| !v.is_default)
        .map(|(k, v)| (k, v.version))
        .chain(live.tunnels.iter().map(|(k, v)| (k, v.version)))
        .chain(live.routes.iter().map(|(k, v)| (k, v.version)))
        .chain(live.lists.iter().map(|(k, v)| (k, v.version)))
        .chain(live.rules.iter().map(|(k, v)| (k, v.version)))
        .chain(live.idps.iter().map(|(k, v)| (k, v.version)))
        .chain(live.live_tokens().map(|(k, v)| (k, v.version)));
    for (k, v) in created {
        if !applied.resources.contains_key(k) && !applied.unmanaged.contains(k) {
            out.push(Drift {
                resource: k.clone(),
                what: "created".into(),
                applied_version: None,
                live_version: Some(v),
            });
        }
    }
    Ok(Some((applied, out)))
}

/// The live state in the file's format.
pub(crate) fn export_in(r: &impl Reader) -> Result<ConfigFile, StoreError> {
    let live = Live::load(r)?;
    let default_name = live.default_vnet.as_ref().map(|v| v.name.clone());
    let mut vnets: Vec<&VirtualNetwork> = live.vnets.values().collect();
    vnets.sort_by(|a, b| (!a.is_default, &a.name).cmp(&(!b.is_default, &b.name)));
    let mut tunnels: Vec<&Tunnel> = live.tunnels.values().collect();
    tunnels.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
    let mut routes: Vec<&Route> = live.routes.values().collect();
    routes.sort_by_key(|r| (live.vnet_names.get(&r.vnet).cloned(), r.network));
    let mut rules: Vec<&Rule> = live.rules.values().collect();
    rules.sort_by(|a, b| (a.precedence, &a.name).cmp(&(b.precedence, &b.name)));
    Ok(ConfigFile {
        version: FORMAT_VERSION,
        vnets: vnets
            .into_iter()
            .map(|v| VnetSpec {
                name: v.name.clone(),
                comment: v.comment.clone(),
                default: v.is_default,
            })
            .collect(),
        tunnels: tunnels
            .into_iter()
            .map(|t| TunnelSpec {
                name: t.name.clone(),
            })
            .collect(),
        routes: routes
            .into_iter()
            .map(|r| {
                let vnet = live.vnet_names.get(&r.vnet).cloned();
                RouteSpec {
                    network: r.network,
                    tunnel: live
                        .tunnel_names
                        .get(&r.tunnel_id)
                        .cloned()
                        .unwrap_or_default(),
                    vnet: vnet.filter(|v| Some(v) != default_name.as_ref()),
                    comment: r.comment.clone(),
                }
            })
            .collect(),
        lists: live
            .lists
            .values()
            .map(|l| ListSpec {
                name: l.name.clone(),
                slug: l.slug.clone(),
                kind: l.kind,
                items: l.items.clone(),
                items_file: None,
                description: l.description.clone(),
            })
            .collect(),
        rules: rules
            .into_iter()
            .map(|r| RuleSpec {
                name: r.name.clone(),
                description: r.description.clone(),
                precedence: r.precedence,
                action: r.action.clone(),
                enabled: r.enabled,
                filters: r.filters.clone(),
                traffic: r.traffic.clone(),
                identity: r.identity.clone(),
                device_posture: r.device_posture.clone(),
            })
            .collect(),
        users: live
            .users
            .values()
            // Users a sign-in created belong to their provider, not to a file.
            .filter(|u| u.idp_subject.is_none())
            .map(|u| UserSpec {
                email: u.email.clone(),
                groups: u.groups.clone(),
            })
            .collect(),
        identity_providers: live
            .idps
            .values()
            .map(|p| IdpSpec {
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                client_id: p.client_id.clone(),
                scopes: p.scopes.clone(),
                groups_claim: p.groups_claim.clone(),
                allowed_domains: p.allowed_domains.clone(),
                session_length_secs: p.session_length_secs,
                ca_pem: p.ca_pem.clone(),
            })
            .collect(),
        service_tokens: live
            .live_tokens()
            .map(|(_, t)| ServiceTokenSpec {
                name: t.name.clone(),
                groups: t.groups.clone(),
                expires_at: t.expires_at.map(|at| at.to_string()),
            })
            .collect(),
        tests: Vec::new(),
    })
}
