//! Shared pieces of the end-to-end tests: the real `zt` binary as edge, connectors and
//! client (each a child process killed and reaped when its guard drops, panics included),
//! the admin commands, free loopback ports and a tiny HTTP/1.1 GET for `/ready`. Origins,
//! certificates and the impairment relay come from zt-testkit.
#![allow(dead_code, unreachable_pub)]

pub mod abuse;
pub mod faults;
pub mod netns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub use zt_testkit::origin::Origin;

/// How long any awaited event may take before the test gives up. Generous: the tests
/// fail only when the event never comes, and print the times they measured instead.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The `zt` binary under test.
pub fn zt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zt"))
}

/// A tokio runtime for a test's async half.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// A free TCP port on `ip`.
pub fn free_tcp(ip: &str) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// A free UDP port on `ip`.
/// A UDP port that is free now, and free for TCP too (the edge serves TLS over TCP on its
/// QUIC port number). Another process may still take it before the caller binds it; the
/// edge's start retries on that.
pub fn free_udp(ip: &str) -> SocketAddr {
    for _ in 0..50 {
        let udp = UdpSocket::bind((ip, 0)).unwrap();
        let addr = udp.local_addr().unwrap();
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}

/// Whether this host can bind `[::1]` (some containers have no IPv6 at all).
pub fn ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// Output lines of a child, kept for `wait_for` and echoed to the test's stderr.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

/// A running `zt` process: killed (SIGKILL) and reaped on drop.
pub struct Proc {
    name: String,
    child: Option<std::process::Child>,
    out: Arc<Lines>,
}

impl Proc {
    /// Starts `zt` with `args` and extra environment variables.
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, &Path)]) -> Proc {
        let mut cmd = zt();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::from_command(name, cmd)
    }

    /// Starts any prepared command (say, `zt` inside `ip netns exec`).
    pub fn from_command(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let out = Arc::new(Lines::default());
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for stream in streams {
            let out = out.clone();
            let name = name.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[{name}] {line}");
                    out.lines.lock().unwrap().push(line);
                    out.grew.notify_all();
                }
            });
        }
        Proc {
            name: name.to_owned(),
            child: Some(child),
            out,
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for an output line containing one of `needles` and returns it.
    pub fn wait_for_any(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut lines = self.out.lines.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| needles.iter().any(|n| l.contains(n))) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} printed no line containing any of {needles:?} within {DEADLINE:?}",
                self.name
            );
            lines = self.out.grew.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Waits for an output line containing `needle` and returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut lines = self.out.lines.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} printed no line containing {needle:?} within {DEADLINE:?}",
                self.name
            );
            lines = self.out.grew.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.out.lines.lock().unwrap().join("\n")
    }

    /// Sends a signal by number (`kill -s`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {} failed", self.name);
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {DEADLINE:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some`, panicking with `what` after [`DEADLINE`].
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Awaits `f` every 50 ms until it returns `Ok`, panicking with its last error after
/// [`DEADLINE`].
pub async fn eventually_async<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "still failing: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `contents` to a new file at `path` with mode 0600 (as credential files are).
pub fn write_0600(path: &Path, contents: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(contents.as_bytes()).unwrap();
}

/// A plain HTTP/1.1 GET; `None` when the server cannot be reached or answers garbage.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let status = reply.split_whitespace().nth(1)?.parse().ok()?;
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// `zt edge run` on loopback with its state in a directory that outlives restarts.
pub struct Edge {
    pub dir: tempfile::TempDir,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub proc: Option<Proc>,
}

impl Edge {
    /// Starts a fresh edge and waits until it says it runs.
    pub fn start() -> Edge {
        Edge::start_with(&[])
    }

    /// Like [`Edge::start`], with extra `zt edge run` arguments. A port taken by another
    /// test between choosing and binding it is chosen again (a few times).
    pub fn start_with(extra: &[&str]) -> Edge {
        Edge::start_in(tempfile::tempdir().unwrap(), extra)
    }

    /// Like [`Edge::start_with`], on a state directory made beforehand (`zt edge join`).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Edge {
        let mut edge = Edge {
            dir,
            listen: free_udp("127.0.0.1"),
            admin: free_tcp("127.0.0.1"),
            metrics: free_tcp("127.0.0.1"),
            proc: None,
        };
        for _ in 0..4 {
            if edge.try_run(extra) {
                return edge;
            }
            edge.listen = free_udp("127.0.0.1");
            edge.admin = free_tcp("127.0.0.1");
            edge.metrics = free_tcp("127.0.0.1");
        }
        edge.run_with(extra);
        edge
    }

    /// A fresh edge listening on `ip` (an address of a veth pair the test made), its
    /// certificate naming that address and advertising it; admin and metrics on loopback.
    pub fn start_on(ip: &str) -> Edge {
        let mut edge = Edge {
            dir: tempfile::tempdir().unwrap(),
            listen: free_udp(ip),
            admin: free_tcp("127.0.0.1"),
            metrics: free_tcp("127.0.0.1"),
            proc: None,
        };
        let listen = edge.listen.to_string();
        edge.run_with(&["--server-name", ip, "--advertise", &listen]);
        edge
    }

    /// (Re)starts the process on the same state directory and ports.
    pub fn run(&mut self) {
        self.run_with(&[]);
    }

    /// Like [`Edge::run`], with extra `zt edge run` arguments.
    pub fn run_with(&mut self, extra: &[&str]) {
        assert!(
            self.try_run(extra),
            "the edge could not bind its ports: {}",
            self.proc.as_ref().map(Proc::output).unwrap_or_default()
        );
    }

    /// Starts the process; `false` when one of its ports was taken meanwhile.
    fn try_run(&mut self, extra: &[&str]) -> bool {
        let (listen, admin, metrics) = (
            self.listen.to_string(),
            self.admin.to_string(),
            self.metrics.to_string(),
        );
        let mut args = vec![
            "edge",
            "run",
            "--listen",
            &listen,
            "--admin",
            &admin,
            "--metrics",
            &metrics,
        ];
        args.extend_from_slice(extra);
        let p = Proc::spawn("edge", &args, &[("ZT_EDGE_STATE_DIR", self.dir.path())]);
        let said = p.wait_for_any(&["zt edge is running", "Address already in use"]);
        if said.contains("Address already in use") {
            self.proc = Some(p);
            return false;
        }
        p.wait_for("Account tag");
        self.proc = Some(p);
        true
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `zt idp add NAME` for the test provider `idp` (client id `zt`, its CA), with `extra`
    /// flags; returns the enrollment string `zt login` takes.
    pub fn add_idp(
        &self,
        name: &str,
        idp: &zt_testkit::oidc::OidcProvider,
        extra: &[&str],
    ) -> String {
        let ca = idp.ca_file().to_str().unwrap().to_owned();
        let mut args = vec![
            "idp",
            "add",
            name,
            "--issuer",
            idp.issuer(),
            "--client-id",
            "zt",
            "--ca-file",
            &ca,
        ];
        args.extend_from_slice(extra);
        self.admin(&args);
        self.admin(&["idp", "enrollment", name]).trim().to_owned()
    }

    /// Runs an admin command against this edge; panics unless it succeeds; returns stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = zt()
            .args(args)
            .arg("--state-dir")
            .arg(self.dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "zt {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Creates a tunnel; returns its credentials file.
    pub fn tunnel(&self, name: &str) -> PathBuf {
        let creds = self.path(&format!("{name}.json"));
        self.admin(&[
            "tunnel",
            "create",
            name,
            "--credentials-file",
            creds.to_str().unwrap(),
        ]);
        creds
    }

    /// Creates an IP list; returns how rules refer to it (`$…`).
    pub fn ip_list(&self, name: &str, items: &[&str]) -> String {
        let mut args = vec!["list", "create", name, "--type", "IP", "--output", "json"];
        args.extend_from_slice(items);
        let v: serde_json::Value = serde_json::from_str(&self.admin(&args)).unwrap();
        v["reference"].as_str().unwrap().to_owned()
    }

    /// Creates a rule.
    pub fn rule(&self, name: &str, precedence: u32, action: &str, filter: &str, traffic: &str) {
        let p = precedence.to_string();
        self.admin(&[
            "rule",
            "create",
            name,
            "--precedence",
            &p,
            "--action",
            action,
            "--filter",
            filter,
            "--traffic",
            traffic,
        ]);
    }

    /// Adds a user with one device; returns the device credentials file.
    pub fn user(&self, email: &str, group: &str) -> PathBuf {
        let file = self.path(&format!("device-{email}.json"));
        self.admin(&[
            "user",
            "add",
            email,
            "--group",
            group,
            "--output-file",
            file.to_str().unwrap(),
        ]);
        file
    }

    /// The path most end-to-end tests use: tunnel `api-zt` with the route `127.0.0.2/32`,
    /// an l4 rule `Allow` (precedence 100) whose traffic expression `traffic` makes, and
    /// a device of `alice@example.com` (group `sre`). Returns the tunnel's credentials
    /// file and the device's.
    pub fn api_zt_with(&self, traffic: impl FnOnce(&Edge) -> String) -> (PathBuf, PathBuf) {
        let creds = self.tunnel("api-zt");
        self.admin(&["route", "ip", "add", "127.0.0.2/32", "api-zt"]);
        let traffic = traffic(self);
        self.rule("Allow", 100, "allow", "l4", &traffic);
        let device = self.user("alice@example.com", "sre");
        (creds, device)
    }

    /// [`Edge::api_zt_with`] allowing `net.dst.ip == 127.0.0.2`.
    pub fn api_zt(&self) -> (PathBuf, PathBuf) {
        self.api_zt_with(|_| "net.dst.ip == 127.0.0.2".to_owned())
    }

    /// [`Edge::api_zt_with`] allowing the IP list `Kubernetes API IPs` that holds
    /// `127.0.0.2/32`, as the seed's Terraform does.
    pub fn api_zt_via_list(&self) -> (PathBuf, PathBuf) {
        self.api_zt_with(|edge| {
            let list = edge.ip_list("Kubernetes API IPs", &["127.0.0.2/32"]);
            format!("net.dst.ip in {list}")
        })
    }

    /// The lines of the audit log that describe flows.
    pub fn flow_audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("destination").is_some() || v.get("dst").is_some())
            .collect()
    }
}

/// One `zt tunnel --config config.yaml run` replica with its own metrics port.
pub struct Connector {
    pub metrics: SocketAddr,
    pub proc: Proc,
}

impl Connector {
    /// Writes a config next to the credentials and starts the connector; does not wait.
    pub fn start(edge: &Edge, tunnel: &str, creds: &Path, name: &str, ha: u32) -> Connector {
        Connector::start_via(edge, edge.listen, tunnel, creds, name, ha)
    }

    /// Like [`Connector::start`], but dialling the edge at `via` (an impairment relay).
    pub fn start_via(
        edge: &Edge,
        via: SocketAddr,
        tunnel: &str,
        creds: &Path,
        name: &str,
        ha: u32,
    ) -> Connector {
        Connector::start_on(edge, &[via], tunnel, creds, name, ha)
    }

    /// Like [`Connector::start`], given the edge addresses `edges` (its HA connections
    /// spread over them); the config and CA come from `edge`'s state directory.
    pub fn start_on(
        edge: &Edge,
        edges: &[SocketAddr],
        tunnel: &str,
        creds: &Path,
        name: &str,
        ha: u32,
    ) -> Connector {
        let metrics = free_tcp("127.0.0.1");
        let config = edge.path(&format!("{name}.yaml"));
        let list: String = edges.iter().map(|e| format!("  - {e}\n")).collect();
        std::fs::write(
            &config,
            format!(
                "tunnel: {tunnel}\ncredentials-file: {}\nmetrics: {metrics}\nedge:\n{list}\
                 cacert: {}\nha-connections: {ha}\ngrace-period: 30s\n\
                 warp-routing:\n  enabled: true\n",
                creds.display(),
                edge.path("ca.pem").display()
            ),
        )
        .unwrap();
        let proc = Proc::spawn(
            name,
            &["tunnel", "--config", config.to_str().unwrap(), "run"],
            &[],
        );
        Connector { metrics, proc }
    }

    /// `/ready`'s status and `readyConnections`, or `None` while it does not answer.
    pub fn ready(&self) -> Option<(u16, u64)> {
        let (status, body) = http_get(self.metrics, "/ready")?;
        let n = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["readyConnections"].as_u64())
            .unwrap_or(0);
        Some((status, n))
    }

    /// Waits until `/ready` answers 200 with `n` connections; returns how long it took.
    pub fn wait_ready(&self, n: u64) -> Duration {
        let t = Instant::now();
        eventually("connector /ready", || {
            (self.ready() == Some((200, n))).then_some(())
        });
        t.elapsed()
    }
}

/// `zt client --credentials F forward --listen … --to …`; waits until it forwards.
pub fn client_forward(creds: &Path, to: SocketAddr) -> (Proc, SocketAddr) {
    let listen = free_tcp("127.0.0.1");
    let (l, t) = (listen.to_string(), to.to_string());
    let p = Proc::spawn(
        "client-forward",
        &[
            "client",
            "--credentials",
            creds.to_str().unwrap(),
            "forward",
            "--listen",
            &l,
            "--to",
            &t,
        ],
        &[],
    );
    p.wait_for("forwarding TCP");
    (p, listen)
}

/// `zt client --credentials F socks`; waits until it listens.
pub fn client_socks(creds: &Path) -> (Proc, SocketAddr) {
    let listen = free_tcp("127.0.0.1");
    let l = listen.to_string();
    let p = Proc::spawn(
        "client-socks",
        &[
            "client",
            "--credentials",
            creds.to_str().unwrap(),
            "socks",
            "--listen",
            &l,
        ],
        &[],
    );
    p.wait_for("SOCKS5 proxy listening");
    (p, listen)
}

/// Opens a SOCKS5 CONNECT to `dest` through `proxy`; returns the stream or the reply code.
pub fn socks_connect(proxy: SocketAddr, dest: SocketAddr) -> Result<TcpStream, u8> {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).unwrap();
    assert_eq!(choice, [5, 0]);
    let mut req = vec![5, 1, 0];
    match dest.ip() {
        IpAddr::V4(ip) => {
            req.push(1);
            req.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            req.push(4);
            req.extend_from_slice(&ip.octets());
        }
    }
    req.extend_from_slice(&dest.port().to_be_bytes());
    s.write_all(&req).unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).unwrap();
    let rest = match head[3] {
        1 => 6,
        4 => 18,
        _ => panic!("unexpected SOCKS5 address type {}", head[3]),
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip).unwrap();
    if head[1] == 0 {
        Ok(s)
    } else {
        Err(head[1])
    }
}

/// One request/answer through a forward port: sends `msg`, expects `hello msg` back.
pub fn hello_through(forward: SocketAddr, msg: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(forward).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    s.write_all(msg.as_bytes()).map_err(|e| e.to_string())?;
    let mut back = String::new();
    s.read_to_string(&mut back).map_err(|e| e.to_string())?;
    if back == format!("hello {msg}") {
        Ok(())
    } else {
        Err(format!("got {back:?}"))
    }
}
