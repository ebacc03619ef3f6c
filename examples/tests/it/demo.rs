//! `zt demo` as a user runs it: the real binary, with real QUIC, TLS and TCP on loopback.
//! The first test checks that `--once` shows the flow through every hop and exits 0; the
//! second points a real kubectl at the running demo, when kubectl is installed.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Generous: the demo takes seconds, but CI machines can be slow and busy.
const DEADLINE: Duration = Duration::from_secs(240);

/// Kills the demo if a test fails half-way, so no process outlives the test.
struct Demo {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zt"))
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one satisfies `pred`, returning it.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {what} within {DEADLINE:?}; output so far:\n{}",
                        self.output()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the demo closed stdout before {what}; output:\n{}",
                        self.output()
                    )
                }
            }
        }
    }

    /// Reads the rest of the output and waits for the exit.
    fn finish(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "the demo did not finish within {DEADLINE:?}; output:\n{}",
                        self.output()
                    )
                }
            }
        }
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo closed stdout but did not exit; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }

    fn working_dir(&self) -> PathBuf {
        let line = self
            .seen
            .iter()
            .find_map(|l| l.strip_prefix("working directory "))
            .expect("the demo names its working directory");
        PathBuf::from(line)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn demo_once_shows_every_hop() {
    let mut demo = Demo::start(&["--once"]);
    let status = demo.finish();
    let out = demo.output();
    assert!(status.success(), "zt demo --once failed ({status}):\n{out}");

    let has = |needle: &str| {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    };
    // The edge, with the fingerprint clients pin.
    has("edge up: QUIC on udp 127.0.0.1:");
    has("CA fingerprint (SHA-256) ");
    // The seed's configuration.
    has("tunnel k8s_zero_trust_tunnel id ");
    has("route 127.0.0.101/32 -> k8s_zero_trust_tunnel");
    has("list \"Kubernetes API IPs\" (IP)");
    has("rule \"Don't inspect Kubernetes API\" precedence 10000 action off filters [http] traffic any(http.conn.dst_ip[*] in $");
    // Three replicas, each with all four HA connections and a ready /ready.
    for replica in 1..=3 {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("replica {replica}: connector ")))
            .unwrap_or_else(|| panic!("no line for replica {replica} in:\n{out}"));
        assert!(
            line.contains("registered 4/4 HA connections") && line.contains("/ready -> 200"),
            "{line}"
        );
    }
    has("connected to the edge 127.0.0.1:");
    // Each request: the policy decision by name, the replica, the origin's answer, the
    // audit line.
    let requests = out
        .lines()
        .filter(|l| l.trim_start().starts_with("request "))
        .count();
    assert!(requests >= 3, "{out}");
    let decisions = out
        .lines()
        .filter(|l| {
            l.contains(
                "edge policy        http phase: off by rule \"Don't inspect Kubernetes API\"",
            )
        })
        .count();
    assert_eq!(decisions, requests, "{out}");
    let replicas = out
        .lines()
        .filter(|l| l.contains("edge -> connector  replica "))
        .count();
    assert_eq!(replicas, requests, "{out}");
    let audits: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("audit "))
        .map(|l| serde_json::from_str(l.trim()).unwrap())
        .collect();
    assert_eq!(audits.len(), requests, "{out}");
    for audit in &audits {
        assert_eq!(audit["type"], "flow");
        assert_eq!(audit["rule_name"], "Don't inspect Kubernetes API");
        assert_eq!(audit["action"], "off");
        assert_eq!(audit["identity_email"], "engineer@example.com");
    }
    let answers = out
        .lines()
        .filter(|l| {
            l.contains("origin -> caller   HTTP/1.1 200 OK")
                && l.contains(r#""gitVersion":"v1.24.1""#)
        })
        .count();
    assert_eq!(answers, requests - 1, "{out}");
    // Without a client certificate the origin's own TLS alert reaches the caller.
    has("WITHOUT a client certificate");
    has("TLS refused by the origin: received fatal alert: CertificateRequired");
    has(&format!(
        "{requests} of {requests} requests behaved as expected"
    ));
    has("all checks passed");
    // And it cleaned up after itself.
    let dir = demo.working_dir();
    has(&format!("removed {}", dir.display()));
    assert!(!dir.exists(), "{} is still there", dir.display());
}

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn kubectl_reaches_the_demo_api_server() {
    if !kubectl_available() {
        println!("SKIPPED: kubectl not on PATH");
        eprintln!("SKIPPED: kubectl not on PATH");
        return;
    }
    let mut demo = Demo::start(&[]);
    let line = demo.wait_for("kubeconfig", |l| l.starts_with("kubeconfig written to "));
    let kubeconfig = PathBuf::from(line.trim_start_matches("kubeconfig written to "));
    demo.wait_for("the running line", |l| l.starts_with("running;"));

    for context in ["zt-demo-forward", "zt-demo-socks"] {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--context", context])
            .args(["version", "--request-timeout=10s", "-o", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl version ({context}) failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            demo.output()
        );
        let version: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            version["serverVersion"]["gitVersion"], "v1.24.1",
            "{context}: {version}"
        );
    }

    // Ctrl-C: the demo stops and removes its directory.
    let dir = demo.working_dir();
    let killed = Command::new("kill")
        .args(["-INT", &demo.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = demo.finish();
    let out = demo.output();
    assert!(
        status.success(),
        "the demo exited with {status} after SIGINT:\n{out}"
    );
    assert!(out.contains(&format!("removed {}", dir.display())), "{out}");
    assert!(!dir.exists(), "{} is still there", dir.display());
}
