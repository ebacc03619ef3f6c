//! The data path's view of the routes: immutable, compiled, swapped atomically.
//!
//! A [`RouteSnapshot`] holds one pair of tries (IPv4, IPv6) per virtual network; their
//! 4-byte answers index one shared table of [`RouteTarget`]s. It never changes once built,
//! so any number of threads read it without locks; [`SharedRoutes`] publishes a new one
//! with a single atomic pointer swap, and readers still holding the old one finish with it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use ipnet::IpNet;
use uuid::Uuid;

use crate::map::{compile, PrefixMap};
use crate::poptrie::{Poptrie, MAX_VALUE};
use crate::table::{Route, RouteTable};

/// What a lookup in a [`RouteSnapshot`] finds: the route and the tunnel that serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteTarget {
    /// Id of the matched route.
    pub route_id: Uuid,
    /// The tunnel to send the flow to.
    pub tunnel_id: Uuid,
    /// The matched route's network.
    pub network: IpNet,
}

struct VnetTries {
    id: Uuid,
    v4: Poptrie<u32>,
    v6: Poptrie<u128>,
}

/// An immutable, compiled copy of a [`RouteTable`] for lookups on the data path.
///
/// Built by [`RouteTable::snapshot`]; later changes to the table do not reach it.
///
/// ```
/// use zt_routes::{NewRoute, RouteTable};
/// use uuid::Uuid;
///
/// let tunnel = Uuid::new_v4();
/// let mut table = RouteTable::new();
/// table.add(NewRoute::new("198.51.100.101/32".parse().unwrap(), tunnel)).unwrap();
/// let snapshot = table.snapshot();
/// let hit = snapshot.lookup(table.default_vnet(), "198.51.100.101".parse().unwrap()).unwrap();
/// assert_eq!(hit.tunnel_id, tunnel);
/// assert_eq!(snapshot.lookup_tunnel(table.default_vnet(), "198.51.100.101".parse().unwrap()), Some(tunnel));
/// assert!(snapshot.lookup(table.default_vnet(), "198.51.100.102".parse().unwrap()).is_none());
/// ```
pub struct RouteSnapshot {
    default_vnet: Uuid,
    /// Sorted by id.
    vnets: Vec<VnetTries>,
    /// Answer `i` of any trie is `targets[i - 1]`.
    targets: Vec<RouteTarget>,
    /// For answer `i`, the index in `tunnels` of the route's tunnel: 4 bytes per route
    /// instead of a `RouteTarget`'s 56, so the hot path's extra read stays in cache more often.
    tunnel_of: Vec<u32>,
    /// Each tunnel id once.
    tunnels: Vec<Uuid>,
}

/// Above this many virtual networks a lookup binary-searches for the network's tries;
/// below it a scan of 16-byte ids is quicker.
const LINEAR_VNETS: usize = 8;

impl RouteSnapshot {
    pub(crate) fn build(default_vnet: Uuid, nets: &BTreeMap<Uuid, PrefixMap<Route>>) -> Self {
        let total: usize = nets.values().map(PrefixMap::len).sum();
        // Answers index one table shared by every virtual network.
        assert!(
            total <= MAX_VALUE as usize,
            "a route snapshot holds at most 2^30 - 1 routes"
        );
        let mut targets = Vec::with_capacity(total);
        let vnets = nets
            .iter()
            .map(|(&id, map)| {
                let (v4, v6) = map.families();
                let (v4, v6) = compile(v4, v6, |_, route| {
                    targets.push(RouteTarget {
                        route_id: route.id,
                        tunnel_id: route.tunnel_id,
                        network: route.network,
                    });
                    // At most `total`, checked above.
                    targets.len() as u32
                });
                VnetTries { id, v4, v6 }
            })
            .collect();
        let mut interned: HashMap<Uuid, u32> = HashMap::new();
        let mut tunnels = Vec::new();
        let tunnel_of = targets
            .iter()
            .map(|t| {
                *interned.entry(t.tunnel_id).or_insert_with(|| {
                    tunnels.push(t.tunnel_id);
                    // At most one per route, and routes are fewer than 2^30.
                    (tunnels.len() - 1) as u32
                })
            })
            .collect();
        RouteSnapshot {
            default_vnet,
            vnets,
            targets,
            tunnel_of,
            tunnels,
        }
    }

    /// A snapshot with no routes and only the default virtual network of a new table.
    pub fn empty() -> Self {
        RouteTable::new().snapshot()
    }

    #[inline]
    fn tries(&self, vnet: Uuid) -> Option<&VnetTries> {
        if self.vnets.len() <= LINEAR_VNETS {
            self.vnets.iter().find(|t| t.id == vnet)
        } else {
            let i = self.vnets.binary_search_by(|t| t.id.cmp(&vnet)).ok()?;
            self.vnets.get(i)
        }
    }

    #[inline]
    fn target(&self, answer: u32) -> Option<&RouteTarget> {
        self.targets.get((answer as usize).checked_sub(1)?)
    }

    /// The route serving `ip` in virtual network `vnet`, if any.
    #[inline]
    pub fn lookup(&self, vnet: Uuid, ip: IpAddr) -> Option<&RouteTarget> {
        match ip {
            IpAddr::V4(a) => self.lookup_v4(vnet, a),
            IpAddr::V6(a) => self.lookup_v6(vnet, a),
        }
    }

    /// [`lookup`](Self::lookup) for an IPv4 address.
    #[inline]
    pub fn lookup_v4(&self, vnet: Uuid, ip: Ipv4Addr) -> Option<&RouteTarget> {
        self.target(self.tries(vnet)?.v4.lookup(ip.to_bits()))
    }

    /// [`lookup`](Self::lookup) for an IPv6 address.
    #[inline]
    pub fn lookup_v6(&self, vnet: Uuid, ip: Ipv6Addr) -> Option<&RouteTarget> {
        self.target(self.tries(vnet)?.v6.lookup(ip.to_bits()))
    }

    /// The tunnel serving `ip` in `vnet`: the data path's question, answered without
    /// reading the route's full [`RouteTarget`].
    #[inline]
    pub fn lookup_tunnel(&self, vnet: Uuid, ip: IpAddr) -> Option<Uuid> {
        let tries = self.tries(vnet)?;
        let answer = match ip {
            IpAddr::V4(a) => tries.v4.lookup(a.to_bits()),
            IpAddr::V6(a) => tries.v6.lookup(a.to_bits()),
        };
        let tunnel = *self.tunnel_of.get((answer as usize).checked_sub(1)?)?;
        self.tunnels.get(tunnel as usize).copied()
    }

    /// [`lookup`](Self::lookup) in the default virtual network.
    #[inline]
    pub fn lookup_default(&self, ip: IpAddr) -> Option<&RouteTarget> {
        self.lookup(self.default_vnet, ip)
    }

    /// Id of the default virtual network when the snapshot was built.
    pub fn default_vnet(&self) -> Uuid {
        self.default_vnet
    }

    /// Number of routes, all virtual networks together.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Heap bytes of what [`lookup_tunnel`](Self::lookup_tunnel) reads: the tries, the
    /// 4-byte interned tunnel per route and the tunnel ids. The [`RouteTarget`] table is
    /// route metadata and not counted.
    pub fn lookup_bytes(&self) -> usize {
        self.vnets
            .iter()
            .map(|t| t.v4.heap_bytes() + t.v6.heap_bytes())
            .sum::<usize>()
            + self.tunnel_of.len() * size_of::<u32>()
            + self.tunnels.len() * size_of::<Uuid>()
    }
}

impl fmt::Debug for RouteSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteSnapshot")
            .field("default_vnet", &self.default_vnet)
            .field("vnets", &self.vnets.len())
            .field("routes", &self.targets.len())
            .field("lookup_bytes", &self.lookup_bytes())
            .finish()
    }
}

/// The current [`RouteSnapshot`], shared by every reader and replaced atomically.
///
/// Readers call [`load`](Self::load) per flow (no lock, no reference-count contention);
/// the writer builds a new snapshot off to the side and [`publish`](Self::publish)es it.
///
/// ```
/// use std::sync::Arc;
/// use zt_routes::{NewRoute, RouteTable, SharedRoutes};
/// use uuid::Uuid;
///
/// let mut table = RouteTable::new();
/// let shared = Arc::new(SharedRoutes::new(table.snapshot()));
/// let ip = "10.1.2.3".parse().unwrap();
/// assert!(shared.load().lookup_default(ip).is_none());
///
/// table.add(NewRoute::new("10.0.0.0/8".parse().unwrap(), Uuid::new_v4())).unwrap();
/// shared.publish(&table);
/// assert!(shared.load().lookup_default(ip).is_some());
/// ```
pub struct SharedRoutes {
    current: ArcSwap<RouteSnapshot>,
}

impl SharedRoutes {
    /// Starts with `snapshot` as the current one.
    pub fn new(snapshot: RouteSnapshot) -> Self {
        SharedRoutes {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The current snapshot, for a short read (one flow's lookups). Hold an
    /// [`Arc`] from [`load_full`](Self::load_full) instead for long-lived use.
    #[inline]
    pub fn load(&self) -> Guard<Arc<RouteSnapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned reference.
    pub fn load_full(&self) -> Arc<RouteSnapshot> {
        self.current.load_full()
    }

    /// Replaces the current snapshot; readers that loaded the old one keep it until done.
    pub fn store(&self, snapshot: RouteSnapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Builds a snapshot of `table` and makes it the current one.
    pub fn publish(&self, table: &RouteTable) {
        self.store(table.snapshot());
    }
}

impl Default for SharedRoutes {
    fn default() -> Self {
        Self::new(RouteSnapshot::empty())
    }
}

impl fmt::Debug for SharedRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedRoutes").field(&*self.load()).finish()
    }
}
