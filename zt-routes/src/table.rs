//! The route table: routes per virtual network, with the admin operations.
//!
//! This is the mutable, serialisable source of truth the edge edits from its admin API.
//! Invariants kept by every method and checked when deserialising: the default virtual
//! network exists; virtual network names are unique; every route's network has its host
//! bits clear, is unique within its virtual network, and its virtual network exists; route
//! ids are unique. The data path does not read this table but a [`RouteSnapshot`] built
//! from it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::map::PrefixMap;
use crate::snapshot::RouteSnapshot;

/// Id of the virtual network every new [`RouteTable`] starts with, named
/// [`DEFAULT_VNET_NAME`]: the nil UUID, so that every edge and every stored table agree on
/// it without coordination. Another network can be made the default later.
pub const DEFAULT_VNET_ID: Uuid = Uuid::nil();

/// Name of the virtual network every new [`RouteTable`] starts with.
pub const DEFAULT_VNET_NAME: &str = "default";

/// A route: addresses of `network` in virtual network `vnet` are served by `tunnel_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Unique id of the route.
    pub id: Uuid,
    /// The destination network, host bits clear.
    pub network: IpNet,
    /// The virtual network the route belongs to.
    pub vnet: Uuid,
    /// The tunnel that serves the network.
    pub tunnel_id: Uuid,
    /// Free text from the admin.
    #[serde(default)]
    pub comment: String,
    /// Creation time, in seconds since the Unix epoch (UTC).
    pub created_at: u64,
}

/// A virtual network: a separate address space, so that overlapping private ranges (two
/// clusters both on 10.0.0.0/8) can be routed to different tunnels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualNetwork {
    /// Unique id.
    pub id: Uuid,
    /// Unique, non-empty name.
    pub name: String,
    /// Free text from the admin.
    #[serde(default)]
    pub comment: String,
    /// Creation time, in seconds since the Unix epoch (UTC).
    pub created_at: u64,
}

/// What [`RouteTable::add`] needs to create a route; the table assigns the id and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoute {
    /// The destination network; host bits must be clear.
    pub network: IpNet,
    /// The virtual network; `None` means the table's default.
    pub vnet: Option<Uuid>,
    /// The tunnel that serves the network.
    pub tunnel_id: Uuid,
    /// Free text.
    pub comment: String,
}

impl NewRoute {
    /// A route of `network` to `tunnel_id` in the default virtual network, no comment.
    pub fn new(network: IpNet, tunnel_id: Uuid) -> Self {
        NewRoute {
            network,
            vnet: None,
            tunnel_id,
            comment: String::new(),
        }
    }

    /// Puts the route in virtual network `vnet`.
    pub fn in_vnet(mut self, vnet: Uuid) -> Self {
        self.vnet = Some(vnet);
        self
    }

    /// Sets the comment.
    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = comment.into();
        self
    }
}

/// Why [`RouteTable::add`] or [`RouteTable::insert`] refused a route.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AddRouteError {
    /// The network has host bits set, so it is ambiguous which network was meant.
    #[error("{network} has host bits set; did you mean {canonical}?")]
    HostBitsSet {
        /// The network as given.
        network: IpNet,
        /// The same prefix with host bits cleared.
        canonical: IpNet,
    },
    /// The virtual network already routes exactly this network.
    #[error("{network} is already routed in virtual network {vnet} by route {existing} (tunnel {tunnel_id})")]
    Duplicate {
        /// The network.
        network: IpNet,
        /// The virtual network.
        vnet: Uuid,
        /// Id of the route that has it.
        existing: Uuid,
        /// The tunnel of that route.
        tunnel_id: Uuid,
    },
    /// No virtual network has this id.
    #[error("no virtual network {vnet}")]
    UnknownVnet {
        /// The id given.
        vnet: Uuid,
    },
    /// Another route already has this id (only from [`RouteTable::insert`]).
    #[error("a route with id {id} already exists")]
    DuplicateId {
        /// The id.
        id: Uuid,
    },
}

/// Why a route could not be deleted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DeleteRouteError {
    /// No route has this id.
    #[error("no route {id}")]
    UnknownRoute {
        /// The id given.
        id: Uuid,
    },
    /// The virtual network does not route exactly this network.
    #[error("no route for {network} in virtual network {vnet}")]
    NoRouteForNetwork {
        /// The network given.
        network: IpNet,
        /// The virtual network searched.
        vnet: Uuid,
    },
    /// The network has host bits set; routes never do.
    #[error("{network} has host bits set; did you mean {canonical}?")]
    HostBitsSet {
        /// The network as given.
        network: IpNet,
        /// The same prefix with host bits cleared.
        canonical: IpNet,
    },
    /// No virtual network has this id.
    #[error("no virtual network {vnet}")]
    UnknownVnet {
        /// The id given.
        vnet: Uuid,
    },
}

/// Why [`RouteTable::explain`] could not answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ExplainError {
    /// No virtual network has this id.
    #[error("no virtual network {vnet}")]
    UnknownVnet {
        /// The id given.
        vnet: Uuid,
    },
}

/// Why a virtual network could not be added or renamed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VnetNameError {
    /// The name is empty or only blanks.
    #[error("a virtual network needs a non-empty name")]
    Empty,
    /// Another virtual network has this name.
    #[error("virtual network name `{name}` is already used by {existing}")]
    Taken {
        /// The name.
        name: String,
        /// The network that has it.
        existing: Uuid,
    },
    /// No virtual network has this id (rename only).
    #[error("no virtual network {vnet}")]
    UnknownVnet {
        /// The id given.
        vnet: Uuid,
    },
}

/// Why a virtual network could not be deleted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DeleteVnetError {
    /// No virtual network has this id.
    #[error("no virtual network {vnet}")]
    UnknownVnet {
        /// The id given.
        vnet: Uuid,
    },
    /// It is the default; make another one the default first.
    #[error(
        "virtual network `{name}` ({vnet}) is the default; make another one the default first"
    )]
    IsDefault {
        /// Its id.
        vnet: Uuid,
        /// Its name.
        name: String,
    },
    /// Routes still use it.
    #[error("virtual network `{name}` ({vnet}) still has {routes} route(s); delete them first")]
    InUse {
        /// Its id.
        vnet: Uuid,
        /// Its name.
        name: String,
        /// How many routes use it.
        routes: usize,
    },
}

/// Why a virtual network could not be made the default.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SetDefaultVnetError {
    /// No virtual network has this id.
    #[error("no virtual network {vnet}")]
    UnknownVnet {
        /// The id given.
        vnet: Uuid,
    },
}

/// Why a serialised table was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LoadTableError {
    /// `default_vnet` names no listed virtual network.
    #[error("default virtual network {vnet} is not among the virtual networks")]
    MissingDefaultVnet {
        /// The id.
        vnet: Uuid,
    },
    /// Two virtual networks share an id.
    #[error("virtual network {vnet} is listed twice")]
    DuplicateVnet {
        /// The id.
        vnet: Uuid,
    },
    /// A virtual network's name is empty or taken.
    #[error("virtual network {vnet}: {source}")]
    VnetName {
        /// The id.
        vnet: Uuid,
        /// What is wrong with the name.
        source: VnetNameError,
    },
    /// A route is invalid.
    #[error("route {route}: {source}")]
    Route {
        /// The route's id.
        route: Uuid,
        /// What is wrong with it.
        source: AddRouteError,
    },
}

/// The answer of [`RouteTable::explain`]: which route serves an address and which shorter
/// routes also cover it (as `cloudflared tunnel route ip get` shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The address asked about.
    pub address: IpAddr,
    /// The virtual network searched.
    pub vnet: Uuid,
    /// The longest-prefix route, the one traffic takes.
    pub matched: Option<Route>,
    /// Shorter routes that cover the address too, longest first; traffic would fall back
    /// to them if the matched route were deleted.
    pub also_covering: Vec<Route>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.matched {
            None => write!(
                f,
                "{} in virtual network {}: no route",
                self.address, self.vnet
            ),
            Some(r) => {
                write!(
                    f,
                    "{} in virtual network {}: route {} ({}) to tunnel {}",
                    self.address, self.vnet, r.network, r.id, r.tunnel_id
                )?;
                for r in &self.also_covering {
                    write!(
                        f,
                        "; also covered by {} ({}) to tunnel {}",
                        r.network, r.id, r.tunnel_id
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// The route table: routes (CIDR → tunnel) per virtual network, with longest-prefix match.
///
/// Every operation here is for the control plane (admin API, state store). For the data
/// path, build a [`RouteSnapshot`] with [`snapshot`](Self::snapshot) and publish it through
/// a [`SharedRoutes`](crate::SharedRoutes).
///
/// Serialised as `{"default_vnet", "vnets": [...], "routes": [...]}`; deserialising checks
/// every invariant and names the first item that breaks one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TableData", into = "TableData")]
pub struct RouteTable {
    default_vnet: Uuid,
    vnets: BTreeMap<Uuid, VirtualNetwork>,
    /// Per virtual network (every one has an entry, maybe empty): network → route.
    nets: BTreeMap<Uuid, PrefixMap<Route>>,
    /// Route id → where the route lives.
    ids: HashMap<Uuid, (Uuid, IpNet)>,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::new()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl RouteTable {
    /// An empty table with one virtual network, [`DEFAULT_VNET_ID`] named
    /// [`DEFAULT_VNET_NAME`], which is the default.
    pub fn new() -> Self {
        let default = VirtualNetwork {
            id: DEFAULT_VNET_ID,
            name: DEFAULT_VNET_NAME.to_owned(),
            comment: String::new(),
            created_at: now(),
        };
        RouteTable {
            default_vnet: DEFAULT_VNET_ID,
            vnets: BTreeMap::from([(DEFAULT_VNET_ID, default)]),
            nets: BTreeMap::from([(DEFAULT_VNET_ID, PrefixMap::new())]),
            ids: HashMap::new(),
        }
    }

    /// Number of routes, all virtual networks together.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Adds a route with a fresh id, created now.
    ///
    /// Refuses a network with host bits set (suggesting the canonical form), an unknown
    /// virtual network, and a network the virtual network already routes (naming that
    /// route).
    pub fn add(&mut self, new: NewRoute) -> Result<&Route, AddRouteError> {
        let route = Route {
            id: Uuid::new_v4(),
            network: new.network,
            vnet: new.vnet.unwrap_or(self.default_vnet),
            tunnel_id: new.tunnel_id,
            comment: new.comment,
            created_at: now(),
        };
        let (vnet, network) = (route.vnet, route.network);
        self.insert(route)?;
        self.nets
            .get(&vnet)
            .and_then(|m| m.get(&network))
            .ok_or(AddRouteError::UnknownVnet { vnet })
    }

    /// Adds a complete route as given (id and time included), as when loading stored state.
    /// Same checks as [`add`](Self::add), plus a unique id.
    pub fn insert(&mut self, route: Route) -> Result<(), AddRouteError> {
        let canonical = route.network.trunc();
        if canonical != route.network {
            return Err(AddRouteError::HostBitsSet {
                network: route.network,
                canonical,
            });
        }
        if self.ids.contains_key(&route.id) {
            return Err(AddRouteError::DuplicateId { id: route.id });
        }
        let Some(map) = self.nets.get_mut(&route.vnet) else {
            return Err(AddRouteError::UnknownVnet { vnet: route.vnet });
        };
        if let Some(existing) = map.get(&route.network) {
            return Err(AddRouteError::Duplicate {
                network: route.network,
                vnet: route.vnet,
                existing: existing.id,
                tunnel_id: existing.tunnel_id,
            });
        }
        self.ids.insert(route.id, (route.vnet, route.network));
        map.insert(route.network, route);
        Ok(())
    }

    /// Deletes the route with this id and returns it.
    pub fn delete(&mut self, id: Uuid) -> Result<Route, DeleteRouteError> {
        let (vnet, network) = self
            .ids
            .remove(&id)
            .ok_or(DeleteRouteError::UnknownRoute { id })?;
        self.nets
            .get_mut(&vnet)
            .and_then(|m| m.remove(&network))
            .ok_or(DeleteRouteError::UnknownRoute { id })
    }

    /// Deletes the route of exactly `network` in `vnet` (`None`: the default) and returns it.
    pub fn delete_network(
        &mut self,
        vnet: Option<Uuid>,
        network: IpNet,
    ) -> Result<Route, DeleteRouteError> {
        let vnet = vnet.unwrap_or(self.default_vnet);
        let canonical = network.trunc();
        if canonical != network {
            return Err(DeleteRouteError::HostBitsSet { network, canonical });
        }
        let map = self
            .nets
            .get_mut(&vnet)
            .ok_or(DeleteRouteError::UnknownVnet { vnet })?;
        let route = map
            .remove(&network)
            .ok_or(DeleteRouteError::NoRouteForNetwork { network, vnet })?;
        self.ids.remove(&route.id);
        Ok(route)
    }

    /// The route with this id.
    pub fn get(&self, id: Uuid) -> Option<&Route> {
        let (vnet, network) = self.ids.get(&id)?;
        self.nets.get(vnet)?.get(network)
    }

    /// The route serving `ip` in `vnet`: the one with the longest prefix covering it.
    /// `None` when no route covers it or the virtual network does not exist.
    pub fn lookup(&self, vnet: Uuid, ip: IpAddr) -> Option<&Route> {
        self.nets.get(&vnet)?.longest_match(ip).map(|(_, r)| r)
    }

    /// Which route serves `ip` in `vnet` (`None`: the default), and which shorter routes
    /// also cover it.
    pub fn explain(&self, vnet: Option<Uuid>, ip: IpAddr) -> Result<Explanation, ExplainError> {
        let vnet = vnet.unwrap_or(self.default_vnet);
        let map = self
            .nets
            .get(&vnet)
            .ok_or(ExplainError::UnknownVnet { vnet })?;
        let mut covering = map.matches(ip).map(|(_, r)| r.clone());
        let matched = covering.next();
        Ok(Explanation {
            address: ip,
            vnet,
            matched,
            also_covering: covering.collect(),
        })
    }

    /// All routes, by virtual network id, then as [`PrefixMap::iter`] orders networks.
    pub fn routes(&self) -> impl Iterator<Item = &Route> + '_ {
        self.nets.values().flat_map(|m| m.iter().map(|(_, r)| r))
    }

    /// The routes of one virtual network (none if it does not exist), ordered by network.
    pub fn routes_in(&self, vnet: Uuid) -> impl Iterator<Item = &Route> + '_ {
        self.nets
            .get(&vnet)
            .into_iter()
            .flat_map(|m| m.iter().map(|(_, r)| r))
    }

    /// Id of the default virtual network, used when a route or query names none.
    pub fn default_vnet(&self) -> Uuid {
        self.default_vnet
    }

    /// The virtual networks, by id.
    pub fn vnets(&self) -> impl Iterator<Item = &VirtualNetwork> + '_ {
        self.vnets.values()
    }

    /// The virtual network with this id.
    pub fn vnet(&self, id: Uuid) -> Option<&VirtualNetwork> {
        self.vnets.get(&id)
    }

    /// The virtual network with this name.
    pub fn vnet_by_name(&self, name: &str) -> Option<&VirtualNetwork> {
        self.vnets.values().find(|v| v.name == name)
    }

    fn check_name(&self, name: &str, except: Option<Uuid>) -> Result<String, VnetNameError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(VnetNameError::Empty);
        }
        match self.vnet_by_name(name) {
            Some(v) if Some(v.id) != except => Err(VnetNameError::Taken {
                name: name.to_owned(),
                existing: v.id,
            }),
            _ => Ok(name.to_owned()),
        }
    }

    /// Adds a virtual network with a fresh id. Names are trimmed and must be unique.
    pub fn add_vnet(
        &mut self,
        name: &str,
        comment: impl Into<String>,
    ) -> Result<&VirtualNetwork, VnetNameError> {
        let name = self.check_name(name, None)?;
        let id = Uuid::new_v4();
        let vnet = VirtualNetwork {
            id,
            name,
            comment: comment.into(),
            created_at: now(),
        };
        self.nets.insert(id, PrefixMap::new());
        Ok(self.vnets.entry(id).or_insert(vnet))
    }

    /// Renames a virtual network.
    pub fn rename_vnet(&mut self, id: Uuid, name: &str) -> Result<(), VnetNameError> {
        let name = self.check_name(name, Some(id))?;
        let vnet = self
            .vnets
            .get_mut(&id)
            .ok_or(VnetNameError::UnknownVnet { vnet: id })?;
        vnet.name = name;
        Ok(())
    }

    /// Deletes a virtual network; refused for the default one and while routes use it.
    pub fn delete_vnet(&mut self, id: Uuid) -> Result<VirtualNetwork, DeleteVnetError> {
        let vnet = self
            .vnets
            .get(&id)
            .ok_or(DeleteVnetError::UnknownVnet { vnet: id })?;
        if id == self.default_vnet {
            return Err(DeleteVnetError::IsDefault {
                vnet: id,
                name: vnet.name.clone(),
            });
        }
        let routes = self.nets.get(&id).map_or(0, PrefixMap::len);
        if routes > 0 {
            return Err(DeleteVnetError::InUse {
                vnet: id,
                name: vnet.name.clone(),
                routes,
            });
        }
        self.nets.remove(&id);
        self.vnets
            .remove(&id)
            .ok_or(DeleteVnetError::UnknownVnet { vnet: id })
    }

    /// Makes `id` the default virtual network.
    pub fn set_default_vnet(&mut self, id: Uuid) -> Result<(), SetDefaultVnetError> {
        if !self.vnets.contains_key(&id) {
            return Err(SetDefaultVnetError::UnknownVnet { vnet: id });
        }
        self.default_vnet = id;
        Ok(())
    }

    /// Compiles the read-only structure the data path looks routes up in.
    ///
    /// Takes time about linear in the number of routes: 0.2–0.4 s for a million on the
    /// project's development machine (BENCHMARKS.md).
    ///
    /// # Panics
    ///
    /// If the table holds 2³⁰ routes or more, far past what fits in memory here.
    pub fn snapshot(&self) -> RouteSnapshot {
        RouteSnapshot::build(self.default_vnet, &self.nets)
    }
}

/// The serialised form of a [`RouteTable`].
#[derive(Serialize, Deserialize)]
struct TableData {
    default_vnet: Uuid,
    vnets: Vec<VirtualNetwork>,
    routes: Vec<Route>,
}

impl From<RouteTable> for TableData {
    fn from(table: RouteTable) -> Self {
        let routes = table.routes().cloned().collect();
        TableData {
            default_vnet: table.default_vnet,
            vnets: table.vnets.into_values().collect(),
            routes,
        }
    }
}

impl TryFrom<TableData> for RouteTable {
    type Error = LoadTableError;

    fn try_from(data: TableData) -> Result<Self, Self::Error> {
        let mut table = RouteTable {
            default_vnet: data.default_vnet,
            vnets: BTreeMap::new(),
            nets: BTreeMap::new(),
            ids: HashMap::new(),
        };
        for vnet in data.vnets {
            if table.vnets.contains_key(&vnet.id) {
                return Err(LoadTableError::DuplicateVnet { vnet: vnet.id });
            }
            let name =
                table
                    .check_name(&vnet.name, None)
                    .map_err(|source| LoadTableError::VnetName {
                        vnet: vnet.id,
                        source,
                    })?;
            table.nets.insert(vnet.id, PrefixMap::new());
            table.vnets.insert(vnet.id, VirtualNetwork { name, ..vnet });
        }
        if !table.vnets.contains_key(&table.default_vnet) {
            return Err(LoadTableError::MissingDefaultVnet {
                vnet: table.default_vnet,
            });
        }
        for route in data.routes {
            let id = route.id;
            table
                .insert(route)
                .map_err(|source| LoadTableError::Route { route: id, source })?;
        }
        Ok(table)
    }
}
