//! Route table and prefix sets for zt.
//!
//! This crate answers one question on every flow: which tunnel serves this destination
//! address in this virtual network — a longest-prefix match over IPv4 and IPv6 CIDRs. The
//! same structure backs IP lists in `zt-policy` as a [`PrefixSet`].
//!
//! - [`PrefixMap`] — a mutable map from prefixes to values: exact get, insert, remove,
//!   ordered iteration, longest-prefix match; [`PrefixMap::freeze`] compiles it into a
//!   [`FrozenPrefixMap`], a poptrie (direct-pointing root, then six-bit nodes indexed by
//!   popcount) that answers in a few memory accesses.
//! - [`PrefixSet`] — "is this address in any of these CIDRs?", compiled lazily.
//! - [`RouteTable`] — routes (`id`, `network`, `vnet`, `tunnel_id`, `comment`,
//!   `created_at`) per [`VirtualNetwork`], with the admin operations and their typed errors,
//!   the [`explain`](RouteTable::explain) query, and serde.
//! - [`RouteSnapshot`] and [`SharedRoutes`] — the immutable compiled table the data path
//!   reads without locks, swapped atomically when routes change.
//! - [`parse_network`] — networks as people type them, with errors that show the input.
//!
//! It is not a router: it knows nothing of QUIC, connectors, policy or health; a tunnel is
//! only a [`Uuid`](uuid::Uuid) here, and choosing one of the tunnel's connections is the
//! edge's job.
//!
//! ```
//! use zt_routes::{parse_network, NewRoute, RouteTable, SharedRoutes};
//! use uuid::Uuid;
//!
//! let k8s = Uuid::new_v4();
//! let mut table = RouteTable::new();
//! table.add(NewRoute::new(parse_network("198.51.100.101")?, k8s).with_comment("API server"))?;
//! table.add(NewRoute::new(parse_network("2001:DB8::101/128")?, k8s))?;
//!
//! // Host bits are refused with a suggestion.
//! let err = table.add(NewRoute::new(parse_network("10.0.0.1/8")?, k8s)).unwrap_err();
//! assert_eq!(err.to_string(), "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?");
//!
//! // The data path reads a compiled snapshot, swapped atomically on change.
//! let routes = SharedRoutes::new(table.snapshot());
//! let hit = routes.load().lookup_default("2001:db8::101".parse()?).copied();
//! assert_eq!(hit.map(|t| t.tunnel_id), Some(k8s));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bits;
mod map;
mod parse;
mod poptrie;
mod set;
mod snapshot;
mod table;

pub use map::{FrozenPrefixMap, PrefixMap};
pub use set::{FrozenPrefixSet, PrefixSet};

pub use snapshot::{RouteSnapshot, RouteTarget, SharedRoutes};
pub use table::{
    Explanation, NewRoute, Route, RouteTable, VirtualNetwork, DEFAULT_VNET_ID, DEFAULT_VNET_NAME,
};

pub use parse::{parse_network, ParseNetworkError};
pub use table::{
    AddRouteError, DeleteRouteError, DeleteVnetError, ExplainError, LoadTableError,
    SetDefaultVnetError, VnetNameError,
};
