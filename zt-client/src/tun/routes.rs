//! The routes TUN mode installs: the edge's pushed CIDRs plus the resolvers, minus the
//! addresses that must never enter the tunnel (the edge's own), kept in step with the
//! kernel's main table over rtnetlink.
//!
//! Route changes go through netlink in-process (the `rtnetlink` crate) rather than by
//! running `ip route`: no dependence on which `ip` is installed or on parsing its output,
//! errors come back as errno values that can be named (EPERM is a missing CAP_NET_ADMIN),
//! and the crate shares its only heavy dependency (`nix`) with the TUN crate.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rtnetlink::RouteMessageBuilder;
use tracing::{info, warn};

use super::TunError;

/// The CIDRs to route into the device: `pushed` and a host route per resolver in `dns`,
/// with every address in `exclude` cut out (a CIDR that holds one is replaced by the
/// pieces around it). Sorted, without duplicates.
pub(crate) fn plan(pushed: &[IpNet], dns: &[IpAddr], exclude: &[IpAddr]) -> BTreeSet<IpNet> {
    let mut nets: Vec<IpNet> = pushed.iter().map(IpNet::trunc).collect();
    nets.extend(dns.iter().map(|ip| IpNet::from(*ip)));
    for ip in exclude {
        nets = nets.into_iter().flat_map(|n| subtract(n, *ip)).collect();
    }
    nets.into_iter().collect()
}

/// `net` without the single address `ip`: the sibling halves along the path from `net`
/// down to `ip`'s host prefix (at most 32 or 128 of them), or `net` itself when it does
/// not hold `ip`.
pub(crate) fn subtract(net: IpNet, ip: IpAddr) -> Vec<IpNet> {
    if !net.contains(&ip) {
        return vec![net];
    }
    let mut out = Vec::new();
    let mut cur = net;
    while cur.prefix_len() < cur.max_prefix_len() {
        let Ok(mut halves) = cur.subnets(cur.prefix_len() + 1) else {
            break;
        };
        let (Some(a), Some(b)) = (halves.next(), halves.next()) else {
            break;
        };
        if a.contains(&ip) {
            out.push(b);
            cur = a;
        } else {
            out.push(a);
            cur = b;
        }
    }
    out.sort();
    out
}

/// The routes installed through one device, removed again by [`RouteTable::clear`].
pub(crate) struct RouteTable {
    handle: rtnetlink::Handle,
    device: String,
    index: u32,
    installed: BTreeSet<IpNet>,
}

fn message(net: &IpNet, index: u32) -> rtnetlink::packet_route::route::RouteMessage {
    match net {
        IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .output_interface(index)
            .build(),
        IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .output_interface(index)
            .build(),
    }
}

/// The errno inside a netlink error answer, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

const EPERM: i32 = 1;
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;
const EACCES: i32 = 13;

impl RouteTable {
    pub(crate) fn new(handle: rtnetlink::Handle, device: String, index: u32) -> Self {
        Self {
            handle,
            device,
            index,
            installed: BTreeSet::new(),
        }
    }

    /// The routes installed now.
    pub(crate) fn installed(&self) -> &BTreeSet<IpNet> {
        &self.installed
    }

    /// Makes the installed set `want`: removes what is no longer wanted, adds what is new.
    /// A CIDR that the main table already routes elsewhere (EEXIST) is left alone with a
    /// warning; a missing privilege is an error.
    pub(crate) async fn apply(&mut self, want: &BTreeSet<IpNet>) -> Result<(), TunError> {
        let gone: Vec<IpNet> = self.installed.difference(want).copied().collect();
        for net in gone {
            self.delete(&net).await?;
        }
        let new: Vec<IpNet> = want.difference(&self.installed).copied().collect();
        for net in new {
            match self
                .handle
                .route()
                .add(message(&net, self.index))
                .execute()
                .await
            {
                Ok(()) => {
                    self.installed.insert(net);
                }
                Err(e) if errno(&e) == Some(EEXIST) => {
                    warn!(route = %net, device = %self.device, "a route to this CIDR already exists in the main table; traffic to it is not captured");
                }
                Err(e) => return Err(self.route_error("add", &net, e)),
            }
        }
        info!(device = %self.device, routes = ?self.installed, "TUN routes installed");
        Ok(())
    }

    async fn delete(&mut self, net: &IpNet) -> Result<(), TunError> {
        match self
            .handle
            .route()
            .del(message(net, self.index))
            .execute()
            .await
        {
            // ESRCH: already gone (the device went away, or someone removed it).
            Ok(()) => {}
            Err(e) if errno(&e) == Some(ESRCH) => {}
            Err(e) => return Err(self.route_error("delete", net, e)),
        }
        self.installed.remove(net);
        Ok(())
    }

    /// Removes every route this table installed.
    pub(crate) async fn clear(&mut self) -> Result<(), TunError> {
        self.apply(&BTreeSet::new()).await
    }

    fn route_error(&self, op: &'static str, net: &IpNet, e: rtnetlink::Error) -> TunError {
        let privilege = matches!(errno(&e), Some(EPERM | EACCES));
        TunError::Route {
            op,
            route: *net,
            device: self.device.clone(),
            detail: if privilege {
                "permission denied: changing routes needs CAP_NET_ADMIN".to_owned()
            } else {
                e.to_string()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn subtract_leaves_a_net_without_the_address_alone() {
        let n: IpNet = "198.51.100.0/24".parse().unwrap();
        assert_eq!(subtract(n, "203.0.113.7".parse().unwrap()), vec![n]);
    }

    #[test]
    fn subtract_cuts_one_address_out_of_a_v4_net() {
        let n: IpNet = "10.0.0.0/30".parse().unwrap();
        let out = subtract(n, "10.0.0.1".parse().unwrap());
        assert_eq!(out, nets(&["10.0.0.0/32", "10.0.0.2/31"]));
        // Every other address of the /30 is still covered, the excluded one is not.
        for last in 0..4u8 {
            let ip: IpAddr = Ipv4Addr::new(10, 0, 0, last).into();
            assert_eq!(out.iter().any(|p| p.contains(&ip)), last != 1, "{ip}");
        }
    }

    #[test]
    fn subtract_from_a_default_route_keeps_everything_else() {
        let edge: IpAddr = "192.0.2.10".parse().unwrap();
        let out = subtract("0.0.0.0/0".parse().unwrap(), edge);
        assert_eq!(out.len(), 32);
        assert!(!out.iter().any(|p| p.contains(&edge)));
        for probe in [
            "192.0.2.11",
            "192.0.2.9",
            "0.0.0.1",
            "255.255.255.255",
            "8.8.8.8",
        ] {
            let ip: IpAddr = probe.parse().unwrap();
            assert!(out.iter().any(|p| p.contains(&ip)), "{probe} lost");
        }
        // The pieces do not overlap: their sizes add up to 2^32 - 1 addresses.
        let total: u64 = out.iter().map(|p| 1u64 << (32 - p.prefix_len())).sum();
        assert_eq!(total, (1u64 << 32) - 1);
    }

    #[test]
    fn subtract_works_for_v6() {
        let edge: IpAddr = "2001:db8::1".parse().unwrap();
        let out = subtract("2001:db8::/32".parse().unwrap(), edge);
        assert_eq!(out.len(), 96);
        assert!(!out.iter().any(|p| p.contains(&edge)));
        assert!(out
            .iter()
            .any(|p| p.contains(&"2001:db8::2".parse::<IpAddr>().unwrap())));
    }

    #[test]
    fn plan_adds_resolvers_truncates_and_excludes_the_edge() {
        let plan = plan(
            &nets(&["198.51.100.101/24", "2001:db8::/64", "203.0.113.0/30"]),
            &[
                "198.51.100.53".parse().unwrap(),
                "192.0.2.53".parse().unwrap(),
            ],
            &["203.0.113.2".parse().unwrap()],
        );
        let want: BTreeSet<IpNet> = nets(&[
            "198.51.100.0/24",
            "2001:db8::/64",
            "198.51.100.53/32",
            "192.0.2.53/32",
            "203.0.113.0/31",
            "203.0.113.3/32",
        ])
        .into_iter()
        .collect();
        assert_eq!(plan, want);
    }

    #[test]
    fn plan_of_nothing_is_empty() {
        assert!(plan(&[], &[], &["192.0.2.1".parse().unwrap()]).is_empty());
    }
}
