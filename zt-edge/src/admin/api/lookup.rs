//! Lookups by id or by name, on either kind of transaction, shared by every resource.
//!
//! A key is tried as an id first (a UUID, with or without dashes, as rules write list ids)
//! and then as the resource's other key (name, slug, email). A miss is a 404 that names
//! the key and the command that lists the records, so the person at the CLI knows what to
//! type next.

use std::collections::HashMap;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::admin::error::ApiError;
use crate::store::{
    List, ReadTxn, Route, Rule, StoreError, Tunnel, User, VirtualNetwork, WriteTxn,
};

/// The read methods both transaction kinds have, so lookups are written once.
pub(super) trait Lookup {
    fn get_tunnel(&self, id: Uuid) -> Result<Option<Tunnel>, StoreError>;
    fn tunnel_named(&self, name: &str) -> Result<Option<Tunnel>, StoreError>;
    fn get_vnet(&self, id: Uuid) -> Result<Option<VirtualNetwork>, StoreError>;
    fn vnet_named(&self, name: &str) -> Result<Option<VirtualNetwork>, StoreError>;
    fn the_default_vnet(&self) -> Result<Option<VirtualNetwork>, StoreError>;
    fn get_list(&self, id: Uuid) -> Result<Option<List>, StoreError>;
    fn list_named(&self, name: &str) -> Result<Option<List>, StoreError>;
    fn list_slugged(&self, slug: &str) -> Result<Option<List>, StoreError>;
    fn get_rule(&self, id: Uuid) -> Result<Option<Rule>, StoreError>;
    fn rule_named(&self, name: &str) -> Result<Option<Rule>, StoreError>;
    fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError>;
    fn user_emailed(&self, email: &str) -> Result<Option<User>, StoreError>;
    fn all_tunnels(&self) -> Result<Vec<Tunnel>, StoreError>;
    fn all_vnets(&self) -> Result<Vec<VirtualNetwork>, StoreError>;
}

macro_rules! impl_lookup {
    ($t:ty) => {
        impl Lookup for $t {
            fn get_tunnel(&self, id: Uuid) -> Result<Option<Tunnel>, StoreError> {
                self.get(id)
            }
            fn tunnel_named(&self, name: &str) -> Result<Option<Tunnel>, StoreError> {
                self.tunnel_by_name(name)
            }
            fn get_vnet(&self, id: Uuid) -> Result<Option<VirtualNetwork>, StoreError> {
                self.get(id)
            }
            fn vnet_named(&self, name: &str) -> Result<Option<VirtualNetwork>, StoreError> {
                self.vnet_by_name(name)
            }
            fn the_default_vnet(&self) -> Result<Option<VirtualNetwork>, StoreError> {
                self.default_vnet()
            }
            fn get_list(&self, id: Uuid) -> Result<Option<List>, StoreError> {
                self.get(id)
            }
            fn list_named(&self, name: &str) -> Result<Option<List>, StoreError> {
                self.list_by_name(name)
            }
            fn list_slugged(&self, slug: &str) -> Result<Option<List>, StoreError> {
                self.list_by_slug(slug)
            }
            fn get_rule(&self, id: Uuid) -> Result<Option<Rule>, StoreError> {
                self.get(id)
            }
            fn rule_named(&self, name: &str) -> Result<Option<Rule>, StoreError> {
                self.rule_by_name(name)
            }
            fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
                self.get(id)
            }
            fn user_emailed(&self, email: &str) -> Result<Option<User>, StoreError> {
                self.user_by_email(email)
            }
            fn all_tunnels(&self) -> Result<Vec<Tunnel>, StoreError> {
                self.list()
            }
            fn all_vnets(&self) -> Result<Vec<VirtualNetwork>, StoreError> {
                self.list()
            }
        }
    };
}

impl_lookup!(ReadTxn<'_>);
impl_lookup!(WriteTxn<'_>);

/// An id in either UUID form (with or without dashes, as rules write list ids).
pub(super) fn as_id(key: &str) -> Option<Uuid> {
    Uuid::try_parse(key).ok()
}

/// A live tunnel by id or name.
pub(super) fn find_tunnel(t: &impl Lookup, key: &str) -> Result<Tunnel, ApiError> {
    let found = match as_id(key) {
        Some(id) => t.get_tunnel(id)?.filter(Tunnel::is_active),
        None => None,
    };
    let found = match found {
        Some(f) => Some(f),
        None => t.tunnel_named(key)?,
    };
    found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no tunnel with id or name `{key}`; `zt tunnel list` shows the tunnels"
        ))
        .with_detail(json!({ "kind": "tunnel", "key": key }))
    })
}

/// A virtual network by id or name; `None` means the default one.
pub(super) fn find_vnet(t: &impl Lookup, key: Option<&str>) -> Result<VirtualNetwork, ApiError> {
    let Some(key) = key else {
        return t.the_default_vnet()?.ok_or_else(|| {
            ApiError::internal("the state has no default virtual network; make one the default")
        });
    };
    let found = match as_id(key) {
        Some(id) => t.get_vnet(id)?,
        None => None,
    };
    let found = match found {
        Some(f) => Some(f),
        None => t.vnet_named(key)?,
    };
    found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no virtual network with id or name `{key}`; `zt vnet list` shows them"
        ))
        .with_detail(json!({ "kind": "virtual network", "key": key }))
    })
}

pub(super) fn find_list(t: &impl Lookup, key: &str) -> Result<List, ApiError> {
    let key_trim = key.strip_prefix('$').unwrap_or(key);
    let mut found = match as_id(key_trim) {
        Some(id) => t.get_list(id)?,
        None => None,
    };
    if found.is_none() {
        found = t.list_named(key)?;
    }
    if found.is_none() {
        found = t.list_slugged(key_trim)?;
    }
    found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no list with id, name or slug `{key}`; `zt list show` shows them"
        ))
        .with_detail(json!({ "kind": "list", "key": key }))
    })
}

pub(super) fn find_rule(t: &impl Lookup, key: &str) -> Result<Rule, ApiError> {
    find_by_id_or(
        key,
        |id| t.get_rule(id),
        || t.rule_named(key),
        "rule",
        "name",
        "zt rule list",
    )
}

pub(super) fn find_user(t: &impl Lookup, key: &str) -> Result<User, ApiError> {
    find_by_id_or(
        key,
        |id| t.get_user(id),
        || t.user_emailed(key),
        "user",
        "email",
        "zt user list",
    )
}

/// Looks a record up by id when `key` is one, else by its other key; the not-found error
/// names what was tried and the command that lists them.
fn find_by_id_or<T>(
    key: &str,
    by_id: impl FnOnce(Uuid) -> Result<Option<T>, StoreError>,
    by_other: impl FnOnce() -> Result<Option<T>, StoreError>,
    kind: &str,
    other: &str,
    list_command: &str,
) -> Result<T, ApiError> {
    let found = match as_id(key) {
        Some(id) => by_id(id)?,
        None => None,
    };
    let found = match found {
        Some(f) => Some(f),
        None => by_other()?,
    };
    found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no {kind} with id or {other} `{key}`; `{list_command}` shows them"
        ))
        .with_detail(json!({ "kind": kind, "key": key }))
    })
}

/// Names by id, to show routes with their tunnel and network names.
pub(super) struct Names {
    pub(super) tunnels: HashMap<Uuid, String>,
    pub(super) vnets: HashMap<Uuid, String>,
}

impl Names {
    pub(super) fn load(t: &impl Lookup) -> Result<Self, ApiError> {
        Ok(Self {
            tunnels: t
                .all_tunnels()?
                .into_iter()
                .map(|x| (x.id, x.name))
                .collect(),
            vnets: t.all_vnets()?.into_iter().map(|x| (x.id, x.name)).collect(),
        })
    }

    pub(super) fn route(&self, r: &Route) -> Value {
        json!({
            "id": r.id,
            "network": r.network.to_string(),
            "vnet": r.vnet,
            "vnet_name": self.vnets.get(&r.vnet),
            "tunnel_id": r.tunnel_id,
            "tunnel_name": self.tunnels.get(&r.tunnel_id),
            "comment": r.comment,
            "created_at": r.created_at,
        })
    }

    pub(super) fn describe(&self, r: &Route) -> String {
        format!(
            "{} in virtual network {} (route {}, tunnel {})",
            r.network,
            self.vnets.get(&r.vnet).map_or("?", String::as_str),
            r.id,
            self.tunnels.get(&r.tunnel_id).map_or("?", String::as_str),
        )
    }
}

/// Refuses to delete what `using` routes still point at: a 409 `in_use` whose message
/// starts with `holder` (say "tunnel `prod` still serves") and lists those routes, and
/// whose detail carries them.
pub(super) fn refuse_if_routed(
    txn: &WriteTxn<'_>,
    holder: &str,
    using: impl Fn(&Route) -> bool,
) -> Result<(), ApiError> {
    let routes: Vec<Route> = txn.list::<Route>()?.into_iter().filter(using).collect();
    if routes.is_empty() {
        return Ok(());
    }
    let names = Names::load(txn)?;
    let list: Vec<String> = routes.iter().map(|r| names.describe(r)).collect();
    Err(ApiError::conflict(
        "in_use",
        format!(
            "{holder} {} route(s): {}; delete them first with `zt route ip delete`",
            routes.len(),
            list.join(", ")
        ),
    )
    .with_detail(json!({
        "routes": routes.iter().map(|r| names.route(r)).collect::<Vec<_>>()
    })))
}
