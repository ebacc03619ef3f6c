//! TUN mode (Linux): a TUN device and routes so that ordinary programs — `kubectl`,
//! `curl`, a database client — reach the private addresses of the client's virtual network
//! with no proxy set-up.
//!
//! [`TunCapture::start`] creates a TUN device, gives it a private address of its own,
//! and routes the CIDRs the edge pushes ([`Client::routes`]) into it: a split-tunnel
//! include list, installed again whenever the edge's routes change, and never covering
//! the edge's own addresses (a pushed CIDR that holds one is installed as the pieces
//! around it). What the kernel routes into the device is handled in user space:
//!
//! - **TCP**: a user-space stack (smoltcp) terminates each connection, and each becomes
//!   one zt flow ([`Client::dial`]). The handshake completes only once the edge accepted
//!   the flow; a refusal (no route, denied, no connector) is an RST, so the caller sees
//!   "connection refused". A FIN either way is passed on while the other direction keeps
//!   flowing (half-close), and a reset either way resets the other side. The MSS the stack
//!   advertises follows the device MTU, so large transfers need no fragmentation.
//! - **UDP** to the resolvers given in [`TunOptions::dns`] (host routes are added for
//!   them): one UDP flow per local source port ([`Client::dial_udp`]), closed after
//!   [`TunOptions::udp_idle`]. Other UDP is dropped.
//! - **ICMP** (echo requests included) is not carried and gets no answer: `ping` to a
//!   routed address times out. The zt protocol carries TCP and UDP only, and answering
//!   echo locally would claim reachability nobody checked.
//!
//! [`TunCapture::shutdown`] deletes the routes and closes the device. The device is not
//! persistent, so the kernel removes it and every route through it when the descriptor
//! closes — also when the process is killed before it could clean up.
//!
//! Creating the device needs `CAP_NET_ADMIN` and access to `/dev/net/tun`; without them
//! [`TunError`] names what is missing.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use zt_client::tun::{TunCapture, TunOptions};
//! use zt_client::{Client, ClientOptions};
//! use zt_creds::{DeviceCredentials, PermissionMode};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let creds = DeviceCredentials::load("/etc/zt/device.json", PermissionMode::Default)?;
//! let client = Arc::new(Client::connect(&creds, ClientOptions::default()).await?);
//! let options = TunOptions {
//!     name: "zt0".into(),
//!     dns: vec!["198.51.100.53".parse()?],
//!     ..TunOptions::default()
//! };
//! let capture = TunCapture::start(client, options).await?;
//! // Plain sockets now reach the pushed routes, e.g. the API server at 198.51.100.101:443.
//! let api = tokio::net::TcpStream::connect("198.51.100.101:443").await?;
//! drop(api);
//! capture.shutdown().await?; // routes deleted, device gone
//! # Ok(())
//! # }
//! ```

mod packet;
mod routes;
mod stack;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ipnet::IpNet;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::client::{Client, ConnectionState};
use packet::Kind;

/// How [`TunCapture::start`] sets up the device. `Default` gives the documented values.
#[derive(Debug, Clone)]
pub struct TunOptions {
    /// The device name (default `zt0`; at most 15 bytes).
    pub name: String,
    /// The device MTU (default 1500; 1280 to 65535). The TCP MSS follows from it.
    pub mtu: u16,
    /// Resolvers whose UDP traffic is carried as UDP flows; each gets a host route.
    pub dns: Vec<IpAddr>,
    /// Addresses never routed into the device, besides the edges the client connects to.
    pub exclude: Vec<IpAddr>,
    /// The device's own IPv4 address, the source of captured connections
    /// (default 100.96.0.1, in the shared address space).
    pub address_v4: Ipv4Addr,
    /// The device's own IPv6 address (default fd7a:7a74:756e::1, a unique local address).
    pub address_v6: Ipv6Addr,
    /// TCP connections carried at once (default 1024); more are refused with RST.
    pub max_connections: usize,
    /// How long a resolver's UDP flow may stay silent before it closes (default 30 s).
    pub udp_idle: Duration,
}

impl Default for TunOptions {
    fn default() -> Self {
        Self {
            name: "zt0".to_owned(),
            mtu: 1500,
            dns: Vec::new(),
            exclude: Vec::new(),
            address_v4: Ipv4Addr::new(100, 96, 0, 1),
            address_v6: Ipv6Addr::new(0xfd7a, 0x7a74, 0x756e, 0, 0, 0, 0, 1),
            max_connections: 1024,
            udp_idle: Duration::from_secs(30),
        }
    }
}

/// Why TUN mode cannot start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunError {
    /// The process may not create the device.
    #[error("cannot create TUN device {name}: {detail}")]
    Privilege {
        /// The device name asked for.
        name: String,
        /// What is missing (CAP_NET_ADMIN or access to /dev/net/tun) and how to grant it.
        detail: String,
    },
    /// The kernel offers no TUN devices here.
    #[error("cannot create TUN device {name}: /dev/net/tun is missing; load the tun module (modprobe tun) or, in a container, pass the device in (--device /dev/net/tun)")]
    NoTunDevice {
        /// The device name asked for.
        name: String,
    },
    /// The options are unusable.
    #[error("invalid TUN options: {0}")]
    Options(String),
    /// Creating, configuring, reading or writing the device failed.
    #[error("TUN device {name}: {what}: {source}")]
    Device {
        /// The device name.
        name: String,
        /// The step that failed.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A route could not be added or deleted.
    #[error("cannot {op} the route {route} via {device}: {detail}")]
    Route {
        /// "add" or "delete".
        op: &'static str,
        /// The CIDR.
        route: IpNet,
        /// The device name.
        device: String,
        /// The netlink answer, in words.
        detail: String,
    },
}

/// A running capture: the device, its routes and the tasks that carry its traffic.
///
/// Dropping it stops the capture too, but only [`TunCapture::shutdown`] waits until the
/// routes are deleted (the kernel removes them with the device either way).
#[derive(Debug)]
pub struct TunCapture {
    name: String,
    stop: watch::Sender<bool>,
    routes: watch::Receiver<BTreeSet<IpNet>>,
    task: Option<JoinHandle<Result<(), TunError>>>,
}

impl Drop for TunCapture {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Maps the device creation error to one that says what is missing.
fn creation_error(name: &str, e: std::io::Error) -> TunError {
    const EPERM: i32 = 1;
    const ENOENT: i32 = 2;
    const ENXIO: i32 = 6;
    const EACCES: i32 = 13;
    const ENODEV: i32 = 19;
    match e.raw_os_error() {
        Some(EPERM) => TunError::Privilege {
            name: name.to_owned(),
            detail: "operation not permitted: creating a TUN device needs CAP_NET_ADMIN \
                     (run as root, or grant it: setcap cap_net_admin+ep on the zt binary)"
                .to_owned(),
        },
        Some(EACCES) => TunError::Privilege {
            name: name.to_owned(),
            detail: "permission denied opening /dev/net/tun: it needs read and write access \
                     for this user, and creating the device needs CAP_NET_ADMIN"
                .to_owned(),
        },
        Some(ENOENT | ENXIO | ENODEV) => TunError::NoTunDevice {
            name: name.to_owned(),
        },
        _ => TunError::Device {
            name: name.to_owned(),
            what: "creating the device",
            source: e,
        },
    }
}

/// Resolves `host:port` edge addresses to the IPs that must stay outside the routes.
async fn resolve(edges: &[String]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for edge in edges {
        match tokio::net::lookup_host(edge.as_str()).await {
            Ok(addrs) => out.extend(addrs.map(|a| a.ip())),
            Err(e) => debug!(%edge, error = %e, "cannot resolve the edge address to exclude it"),
        }
    }
    out
}

/// The edge this client is connected to now, resolved.
async fn current_edge(client: &Client) -> Vec<IpAddr> {
    match client.state() {
        ConnectionState::Connected { edge, .. } => resolve(&[edge]).await,
        _ => Vec::new(),
    }
}

impl TunCapture {
    /// Creates the device, starts carrying its traffic through `client` and installs the
    /// routes the edge pushed (now, if it has, and on every change).
    ///
    /// Must be called inside a tokio runtime. Errors name the missing privilege when the
    /// device cannot be created.
    pub async fn start(client: Arc<Client>, options: TunOptions) -> Result<Self, TunError> {
        if options.name.is_empty() || options.name.len() > 15 || options.name.contains('/') {
            return Err(TunError::Options(format!(
                "device name {:?} must be 1 to 15 bytes without '/'",
                options.name
            )));
        }
        if options.mtu < 1280 {
            return Err(TunError::Options(format!(
                "MTU {} is below 1280, the least IPv6 allows",
                options.mtu
            )));
        }
        let name = options.name.clone();
        let dev = tun_rs::DeviceBuilder::new()
            .name(&name)
            .mtu(options.mtu)
            .ipv4(options.address_v4, 32u8, None)
            .build_async()
            .map_err(|e| creation_error(&name, e))?;
        let dev = Arc::new(dev);
        let device_error = |what: &'static str| {
            let name = name.clone();
            move |source: std::io::Error| TunError::Device { name, what, source }
        };
        if let Err(e) = dev.add_address_v6(options.address_v6, 128u8) {
            // A host without IPv6 still gets IPv4 capture.
            warn!(device = %name, error = %e, "cannot give the device its IPv6 address; IPv6 routes may not be usable");
        }
        let index = dev
            .if_index()
            .map_err(device_error("reading the interface index"))?;
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(device_error("opening a netlink socket"))?;
        let netlink = tokio::spawn(conn);
        let table = routes::RouteTable::new(handle, name.clone(), index);
        let (stop, stop_rx) = watch::channel(false);
        let (routes_tx, routes_rx) = watch::channel(BTreeSet::new());
        let task = tokio::spawn(run(
            client, dev, options, table, stop_rx, routes_tx, netlink,
        ));
        info!(device = %name, "TUN device up");
        Ok(Self {
            name,
            stop,
            routes: routes_rx,
            task: Some(task),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The routes installed through the device now, updated as the edge's routes change.
    pub fn routes(&self) -> watch::Receiver<BTreeSet<IpNet>> {
        self.routes.clone()
    }

    /// Waits until the capture stops by itself (the device or a route change failed).
    /// Routes are removed by then.
    pub async fn closed(&mut self) -> Result<(), TunError> {
        match self.task.as_mut() {
            Some(t) => {
                let r = t.await.unwrap_or(Ok(()));
                self.task = None;
                r
            }
            None => Ok(()),
        }
    }

    /// Stops the capture: resets the connections still open, deletes the routes and
    /// closes the device.
    pub async fn shutdown(mut self) -> Result<(), TunError> {
        let _ = self.stop.send(true);
        self.closed().await
    }
}

/// A TCP segment for the stack: the packet, its source and destination, whether it is a SYN.
type Segment = (Vec<u8>, SocketAddr, SocketAddr, bool);

/// The capture's supervisor: reader, stack and route tasks; cleans up at the end.
async fn run(
    client: Arc<Client>,
    dev: Arc<tun_rs::AsyncDevice>,
    options: TunOptions,
    mut table: routes::RouteTable,
    mut stop: watch::Receiver<bool>,
    routes_tx: watch::Sender<BTreeSet<IpNet>>,
    netlink: JoinHandle<()>,
) -> Result<(), TunError> {
    let name = options.name.clone();
    let (seg_tx, seg_rx) = mpsc::channel::<Segment>(1024);
    let stack = stack::Stack::new(
        client.clone(),
        usize::from(options.mtu),
        options.max_connections,
    );
    let mut stack_task = tokio::spawn(stack.run(dev.clone(), seg_rx, stop.clone()));
    let mut reader = tokio::spawn(read_device(
        client.clone(),
        dev.clone(),
        seg_tx,
        options.dns.clone(),
        options.udp_idle,
        options.mtu,
    ));
    let mut pushes = client.routes();
    let mut exclude = options.exclude.clone();
    let mut result = Ok(());
    let mut client_gone = false;
    let stopping = stop.clone();
    loop {
        let push = pushes.borrow_and_update().clone();
        if let Some(push) = push {
            for ip in current_edge(&client).await {
                if !exclude.contains(&ip) {
                    exclude.push(ip);
                }
            }
            let want = routes::plan(&push.routes, &options.dns, &exclude);
            if let Err(e) = table.apply(&want).await {
                result = Err(e);
                break;
            }
            routes_tx.send_replace(table.installed().clone());
        }
        tokio::select! {
            changed = pushes.changed() => {
                if changed.is_err() {
                    client_gone = true;
                    break;
                }
            }
            _ = stop.wait_for(|s| *s) => break,
            r = &mut stack_task => {
                // The stack also ends at the stop; only an error or an unasked end counts.
                match r {
                    Ok(Err(source)) => {
                        result = Err(TunError::Device { name: name.clone(), what: "writing packets", source });
                    }
                    _ if *stopping.borrow() => {}
                    _ => {
                        result = Err(TunError::Device {
                            name: name.clone(),
                            what: "carrying TCP",
                            source: std::io::Error::other("the TCP stack stopped"),
                        });
                    }
                }
                break;
            }
            r = &mut reader => {
                result = Err(TunError::Device {
                    name: name.clone(),
                    what: "reading packets",
                    source: r.unwrap_or_else(|e| std::io::Error::other(e.to_string())),
                });
                break;
            }
        }
    }
    if client_gone {
        // The client is gone: keep the device until asked to stop.
        let _ = stop.wait_for(|s| *s).await;
    }
    reader.abort();
    // The stack resets open connections when it sees the stop.
    let _ = routes_tx.send_replace(BTreeSet::new());
    if let Err(e) = table.clear().await {
        warn!(device = %name, error = %e, "cannot delete a route; it goes with the device");
    }
    if !stack_task.is_finished() {
        // On a failure `stop` was not sent: bound the wait for the stack.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut stack_task).await;
        stack_task.abort();
    }
    netlink.abort();
    drop(dev);
    info!(device = %name, "TUN device closed; its routes are gone");
    result
}

/// Reads packets from the device: TCP goes to the stack, UDP to a resolver goes to its
/// UDP flow, everything else is dropped. Returns the error that stopped it.
async fn read_device(
    client: Arc<Client>,
    dev: Arc<tun_rs::AsyncDevice>,
    segments: mpsc::Sender<Segment>,
    dns: Vec<IpAddr>,
    udp_idle: Duration,
    mtu: u16,
) -> std::io::Error {
    let mut buf = vec![0u8; usize::from(mtu).max(1500) + 64];
    let mut udp: HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Bytes>> = HashMap::new();
    let mut dropped_icmp = 0u64;
    loop {
        let n = match dev.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => return e,
        };
        let Some(packet) = buf.get(..n) else { continue };
        match packet::classify(packet) {
            Kind::Tcp { src, dst, syn } => {
                if segments
                    .send((packet.to_vec(), src, dst, syn))
                    .await
                    .is_err()
                {
                    return std::io::Error::other("the TCP stack stopped");
                }
            }
            Kind::Udp { src, dst, payload } if dns.contains(&dst.ip()) => {
                udp.retain(|_, tx| !tx.is_closed());
                let key = (src, dst);
                let tx = match udp.get(&key) {
                    Some(tx) => tx.clone(),
                    None => {
                        if udp.len() >= crate::MAX_FORWARDED {
                            debug!(%src, %dst, "too many resolver flows; UDP packet dropped");
                            continue;
                        }
                        let (tx, rx) = mpsc::channel(64);
                        tokio::spawn(udp_flow(
                            client.clone(),
                            dev.clone(),
                            src,
                            dst,
                            udp_idle,
                            rx,
                        ));
                        udp.insert(key, tx.clone());
                        tx
                    }
                };
                if tx.try_send(Bytes::copy_from_slice(payload)).is_err() {
                    debug!(%src, %dst, "resolver flow queue full; UDP packet dropped");
                }
            }
            Kind::Udp { dst, .. } => {
                debug!(%dst, "UDP to an address that is not a configured resolver; dropped");
            }
            Kind::Icmp => {
                dropped_icmp += 1;
                if dropped_icmp.is_power_of_two() {
                    debug!(count = dropped_icmp, "ICMP is not carried; dropped");
                }
            }
            Kind::Other => {}
        }
    }
}

/// One local source's UDP flow to a resolver: packets out, answers written back to the
/// device as UDP packets from the resolver. Closes after `idle` without packets.
async fn udp_flow(
    client: Arc<Client>,
    dev: Arc<tun_rs::AsyncDevice>,
    src: SocketAddr,
    dst: SocketAddr,
    idle: Duration,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let mut flow = match client.dial_udp(dst).await {
        Ok(f) => f,
        Err(e) => {
            info!(%src, %dst, error = %e, "cannot open a UDP flow to the resolver; its packets are dropped");
            return;
        }
    };
    let deliver = |payload: Bytes| {
        let dev = &dev;
        async move {
            if let Some(pkt) = packet::udp_packet(dst, src, &payload) {
                if let Err(e) = dev.send(&pkt).await {
                    debug!(error = %e, "UDP answer not written to the device");
                }
            }
        }
    };
    crate::forward::pump_udp(&mut flow, &mut rx, idle, deliver).await;
    flow.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_errors_name_what_is_missing() {
        let e = creation_error("zt0", std::io::Error::from_raw_os_error(1)).to_string();
        assert!(e.contains("CAP_NET_ADMIN") && e.contains("zt0"), "{e}");
        let e = creation_error("zt0", std::io::Error::from_raw_os_error(13)).to_string();
        assert!(
            e.contains("/dev/net/tun") && e.contains("CAP_NET_ADMIN"),
            "{e}"
        );
        let e = creation_error("zt0", std::io::Error::from_raw_os_error(2)).to_string();
        assert!(e.contains("/dev/net/tun is missing"), "{e}");
        let e = creation_error("zt0", std::io::Error::from_raw_os_error(16)).to_string();
        assert!(e.contains("creating the device"), "{e}");
    }

    #[test]
    fn defaults_are_documented_values() {
        let o = TunOptions::default();
        assert_eq!(o.name, "zt0");
        assert_eq!(o.mtu, 1500);
        assert_eq!(o.address_v4, Ipv4Addr::new(100, 96, 0, 1));
        assert!(o.dns.is_empty() && o.exclude.is_empty());
    }
}
