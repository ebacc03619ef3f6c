//! What the data path reads on every registration and flow, compiled from the database at
//! one revision: identities and keys, the route table, virtual networks, and the policy.
//!
//! Each store revision builds a new [`Snapshot`] beside the old one and swaps it in
//! atomically, routes and compiled policy together; a flow decides everything on the
//! snapshot it started with. A policy that does not compile never replaces the last good
//! one: the new snapshot carries the last good policy on, and the edge logs why.

use std::collections::HashMap;
use std::sync::Arc;

use ipnet::IpNet;
use uuid::Uuid;
use zt_creds::AuthKey;
use zt_policy::{CompiledPolicy, PolicyConfig};
use zt_proto::VerifyKey;
use zt_routes::RouteSnapshot;

use crate::store::{
    Db, Device, EdgeMember, IdentityProvider, List, Route, Rule, SecretSha256, ServiceToken,
    StoreError, Tunnel, User,
};
use crate::store::{Revision, VirtualNetwork};

/// A tunnel as registration needs it.
#[derive(Clone)]
pub(crate) struct TunnelEntry {
    pub(crate) account_tag: String,
    pub(crate) key: AuthKey,
    /// Set when the tunnel accepts cloudflared connectors (their protocol sends the secret).
    pub(crate) cloudflared: Option<SecretSha256>,
}

/// A device and its user as registration and policy need them.
#[derive(Clone)]
pub(crate) struct DeviceEntry {
    pub(crate) key: VerifyKey,
    pub(crate) identity: Arc<zt_policy::Identity>,
    /// For a device enrolled by a sign-in: the login session and when it ends.
    pub(crate) login: Option<LoginEntry>,
    /// When the credential stops working (a sign-in's end, a service token's expiry).
    pub(crate) expires_at: Option<crate::timestamp::Timestamp>,
    /// The service token's name, when this "device" is one.
    pub(crate) service_token: Option<String>,
}

/// A device's sign-in, as registration and audit need it.
#[derive(Clone, Debug)]
pub(crate) struct LoginEntry {
    pub(crate) session_id: Uuid,
    /// When the current stretch of the sign-in began: the sign-in, or its last renewal.
    pub(crate) since: crate::timestamp::Timestamp,
    /// Whether the edge keeps a refresh token to renew it with.
    pub(crate) renewable: bool,
}

/// A virtual network as sessions need it.
#[derive(Debug, Clone)]
pub(crate) struct VnetEntry {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) is_default: bool,
}

/// Everything the data path reads, at one revision.
pub(crate) struct Snapshot {
    pub(crate) revision: Revision,
    /// The revision's compiled policy, or the last good one when the revision's rules do
    /// not compile.
    pub(crate) policy: Arc<CompiledPolicy>,
    /// Live (not deleted) tunnels.
    pub(crate) tunnels: HashMap<Uuid, TunnelEntry>,
    /// Devices that are not revoked, whose user exists and (for a sign-in) whose identity
    /// provider exists, and live service tokens (which
    /// authenticate as devices do), by id.
    pub(crate) devices: HashMap<Uuid, DeviceEntry>,
    pub(crate) vnets: Vec<VnetEntry>,
    pub(crate) routes: RouteSnapshot,
    /// Route prefixes per virtual network, for the route push.
    pub(crate) prefixes: HashMap<Uuid, Vec<IpNet>>,
    /// The edges sharing this state, by edge id: who the peering listener accepts.
    pub(crate) members: HashMap<Uuid, EdgeMember>,
}

impl Snapshot {
    /// The virtual network a client asked for: by name or id, or the default when empty.
    pub(crate) fn resolve_vnet(&self, requested: &str) -> Option<&VnetEntry> {
        let requested = requested.trim();
        if requested.is_empty() {
            return self.vnets.iter().find(|v| v.is_default);
        }
        let by_id = Uuid::parse_str(requested).ok();
        self.vnets
            .iter()
            .find(|v| v.name == requested || Some(v.id) == by_id)
    }
}

/// Why the database could not be turned into a route table or policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The database could not be read.
    #[error("cannot read the edge state")]
    Store(#[from] StoreError),
    /// The routes do not form a valid table.
    #[error("the stored routes are invalid: {0}")]
    Routes(String),
    /// A list or rule is not valid for zt-policy.
    #[error("the stored policy does not compile: {0}")]
    Policy(String),
}

/// Reads everything at one revision and compiles it into a snapshot. When the revision's
/// policy does not compile, the snapshot carries `last_good` instead and the error is
/// returned beside it, so a bad rule does not hold back a route change.
pub(crate) fn load(
    db: &Db,
    config: PolicyConfig,
    last_good: &Arc<CompiledPolicy>,
) -> Result<(Snapshot, Option<ReloadError>), ReloadError> {
    let txn = db.read()?;
    let revision = txn.revision();
    let tunnels: Vec<Tunnel> = txn.list()?;
    let users: Vec<User> = txn.list()?;
    let devices: Vec<Device> = txn.list()?;
    let vnets: Vec<VirtualNetwork> = txn.list()?;
    let routes: Vec<Route> = txn.list()?;
    let lists: Vec<List> = txn.list()?;
    let rules: Vec<Rule> = txn.list()?;
    let tokens: Vec<ServiceToken> = txn.list()?;
    let members: HashMap<Uuid, EdgeMember> = txn
        .list::<EdgeMember>()?
        .into_iter()
        .map(|m| (m.id, m))
        .collect();
    // A sign-in is only as good as the provider it came through: devices of a provider
    // removed from the edge (`zt idp remove`, a pruned file) lose their sessions.
    let providers: std::collections::HashSet<Uuid> = txn
        .list::<IdentityProvider>()?
        .into_iter()
        .map(|p| p.id)
        .collect();
    drop(txn);

    let tunnels = tunnels
        .into_iter()
        .filter(Tunnel::is_active)
        .map(|t| {
            (
                t.id,
                TunnelEntry {
                    account_tag: t.account_tag,
                    key: t.auth_key,
                    cloudflared: t.cloudflared_secret_sha256,
                },
            )
        })
        .collect();
    let users: HashMap<Uuid, User> = users.into_iter().map(|u| (u.id, u)).collect();
    let now = crate::timestamp::Timestamp::now();
    // Service tokens authenticate as devices do; their identity is their name and groups.
    let token_entries = tokens.into_iter().filter(|t| t.is_live(now)).map(|t| {
        (
            t.id,
            DeviceEntry {
                key: VerifyKey::Shared(t.auth_key),
                identity: Arc::new(zt_policy::Identity {
                    id: t.id.to_string(),
                    email: String::new(),
                    groups: t.groups,
                    idp: None,
                }),
                login: None,
                expires_at: t.expires_at,
                service_token: Some(t.name),
            },
        )
    });
    let devices = devices
        .into_iter()
        .filter(|d| !d.revoked)
        .filter(|d| {
            d.login
                .as_ref()
                .is_none_or(|l| providers.contains(&l.provider_id))
        })
        .filter_map(|d| {
            let user = users.get(&d.user_id)?;
            let key = match (d.auth_key, d.public_key) {
                (Some(k), _) => VerifyKey::Shared(k),
                (None, Some(pk)) => VerifyKey::Device(pk),
                (None, None) => return None,
            };
            // Operator groups first, then the provider's, each once.
            let mut groups = user.groups.clone();
            if let Some(login) = &d.login {
                for g in &login.groups {
                    if !groups.contains(g) {
                        groups.push(g.clone());
                    }
                }
            }
            Some((
                d.id,
                DeviceEntry {
                    key,
                    identity: Arc::new(zt_policy::Identity {
                        id: user.id.to_string(),
                        email: user.email.clone(),
                        groups,
                        idp: d.login.as_ref().map(|l| l.provider.clone()),
                    }),
                    expires_at: d.login.as_ref().map(|l| l.expires_at),
                    service_token: None,
                    login: d.login.map(|l| LoginEntry {
                        session_id: l.session_id,
                        since: l.renewed_at.unwrap_or(l.signed_in_at),
                        renewable: d.refresh_token.is_some(),
                    }),
                },
            ))
        })
        .chain(token_entries)
        .collect();

    let table = route_table(&vnets, &routes)?;
    let mut prefixes: HashMap<Uuid, Vec<IpNet>> = HashMap::new();
    for r in &routes {
        prefixes.entry(r.vnet).or_default().push(r.network);
    }
    for p in prefixes.values_mut() {
        p.sort();
    }
    let (policy, policy_error) = match compile_policy(&lists, &rules, config) {
        Ok(p) => (Arc::new(p), None),
        Err(e) => (last_good.clone(), Some(e)),
    };
    let snapshot = Snapshot {
        revision,
        policy,
        tunnels,
        devices,
        members,
        vnets: vnets
            .into_iter()
            .map(|v| VnetEntry {
                id: v.id,
                name: v.name,
                is_default: v.is_default,
            })
            .collect(),
        routes: table.snapshot(),
        prefixes,
    };
    Ok((snapshot, policy_error))
}

/// Builds a zt-routes table with the database's own virtual network ids, through the
/// table's documented serialised form (the only constructor that takes given ids).
fn route_table(
    vnets: &[VirtualNetwork],
    routes: &[Route],
) -> Result<zt_routes::RouteTable, ReloadError> {
    let default = vnets
        .iter()
        .find(|v| v.is_default)
        .map(|v| v.id)
        .ok_or_else(|| ReloadError::Routes("no default virtual network".to_owned()))?;
    let data = serde_json::json!({
        "default_vnet": default,
        "vnets": vnets.iter().map(|v| serde_json::json!({
            "id": v.id,
            "name": v.name,
            "comment": v.comment,
            "created_at": v.created_at.unix_seconds().max(0),
        })).collect::<Vec<_>>(),
        "routes": routes.iter().map(|r| serde_json::json!({
            "id": r.id,
            "network": r.network,
            "vnet": r.vnet,
            "tunnel_id": r.tunnel_id,
            "comment": r.comment,
            "created_at": r.created_at.unix_seconds().max(0),
        })).collect::<Vec<_>>(),
    });
    serde_json::from_value(data).map_err(|e| ReloadError::Routes(e.to_string()))
}

fn compile_policy(
    lists: &[List],
    rules: &[Rule],
    config: PolicyConfig,
) -> Result<CompiledPolicy, ReloadError> {
    crate::policy_records::compile_policy(lists, rules, config)
        .map_err(|e| ReloadError::Policy(e.to_string()))
}
