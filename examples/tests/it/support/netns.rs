//! Network namespaces for tests that need a machine of their own (TUN mode): created
//! with `ip netns add`, joined to the root namespace by veth pairs, removed again by a
//! guard's `Drop` (panics included).

use std::path::Path;
use std::process::Command;

use super::Proc;

/// Runs `ip ARGS…`; panics with its output unless it succeeds.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Why namespace tests cannot run here, or `None` when they can: root, `/dev/net/tun`
/// and the `ip` tool are needed.
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok();
    let root = uid.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Some("not running as root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun does not exist".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => {}
        _ => return Some("the ip tool (iproute2) is missing".into()),
    }
    // A namespace must be creatable (some sandboxes forbid it even to root).
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("ztprobe{}x{n}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return Some("cannot create a network namespace".into());
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    None
}

/// Namespaces and root-side veth ends, deleted on drop.
pub struct Netns {
    names: Vec<String>,
    links: Vec<String>,
}

impl Netns {
    pub fn new() -> Netns {
        Netns {
            names: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Adds namespace `name` with its loopback up.
    pub fn add(&mut self, name: &str) {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        self.names.push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    /// A veth pair: `root_end` (address `root_addr`) in the root namespace, `ns_end`
    /// (address `ns_addr`) in `ns`; both up.
    pub fn veth(&mut self, root_end: &str, root_addr: &str, ns: &str, ns_end: &str, ns_addr: &str) {
        let _ = Command::new("ip").args(["link", "del", root_end]).output();
        ip(&[
            "link", "add", root_end, "type", "veth", "peer", "name", ns_end, "netns", ns,
        ]);
        self.links.push(root_end.to_owned());
        ip(&["addr", "add", root_addr, "dev", root_end]);
        ip(&["link", "set", root_end, "up"]);
        ip(&["-n", ns, "addr", "add", ns_addr, "dev", ns_end]);
        ip(&["-n", ns, "link", "set", ns_end, "up"]);
    }

    /// `ip netns exec NS PROGRAM ARGS…` as a command.
    pub fn exec(ns: &str, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program).args(args);
        cmd
    }

    /// The `zt` binary inside `ns`, as a [`Proc`].
    pub fn spawn_zt(ns: &str, name: &str, args: &[&str]) -> Proc {
        Proc::from_command(
            name,
            Netns::exec(ns, Path::new(env!("CARGO_BIN_EXE_zt")), args),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for link in &self.links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// `nft` rules inside `ns` that drop every UDP packet it sends (`on`), or none (`!on`).
pub fn drop_udp(ns: &str, on: bool) {
    let nft = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "nft"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nft {args:?} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if on {
        nft(&["add", "table", "inet", "zt"]);
        nft(&[
            "add",
            "chain",
            "inet",
            "zt",
            "out",
            "{ type filter hook output priority 0; }",
        ]);
        nft(&[
            "add", "rule", "inet", "zt", "out", "meta", "l4proto", "udp", "drop",
        ]);
    } else {
        nft(&["delete", "table", "inet", "zt"]);
    }
}

/// Whether `tool` runs (`--version`, or `version --client` for kubectl).
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new(tool)
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success())
}
