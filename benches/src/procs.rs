//! The edge and the connector (and, as a baseline, a plain TCP relay) as separate
//! processes, so that each one's resident memory and CPU time can be read on its own
//! (`/proc/<pid>/status`, `/proc/<pid>/stat`) and none shares a runtime with the load.
//!
//! The benchmark binary runs itself again as the edge or the connector: a benchmark's
//! `main` calls [`run_role_if_child`] first, which runs the role named by the
//! `ZT_BENCH_ROLE` environment variable (and never returns) or returns at once in the
//! parent. The children run the same library runtimes as [`crate::path::PathRig`]
//! (`zt_edge::Edge`, `zt_connector::Connector`), one tokio runtime each, and exit when
//! their standard input closes, so a parent that dies takes them with it.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use zt_creds::{DeviceCredentials, ExistingFile, PermissionMode};

use crate::path::{start_connector, start_edge, tcp_relay, SetupError};

/// Names the role a child runs.
const ROLE_ENV: &str = "ZT_BENCH_ROLE";
/// The directory (edge) or configuration file (connector) the child works from.
const ARG_ENV: &str = "ZT_BENCH_ROLE_ARG";
/// The line a child prints once it is ready; the rest of the line is its answer.
const READY: &str = "ZT_BENCH_READY";

/// Runs the child role this process was started for, if any: then it never returns.
/// In the benchmark's own process (no `ZT_BENCH_ROLE`) it returns at once.
pub fn run_role_if_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let code = match run_role(&role) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("zt-bench {role} child: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn run_role(role: &str) -> Result<(), SetupError> {
    let arg = PathBuf::from(std::env::var(ARG_ENV).map_err(|_| format!("{ARG_ENV} is unset"))?);
    // `ZT_BENCH_ROLE_WORKERS` (a trial knob): the role's worker threads, 0 for tokio's
    // single-threaded runtime; default tokio's one per core.
    let workers = std::env::var("ZT_BENCH_ROLE_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let mut builder = match workers {
        Some(0) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = workers.filter(|&n| n > 0) {
        builder.worker_threads(n);
    }
    let rt = builder.enable_all().build()?;
    rt.block_on(async {
        // Standard input closing (the parent ended) is the signal to stop.
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().lock().read_to_end(&mut sink);
        });
        match role {
            "edge" => {
                let provisioned = start_edge(&arg).await?;
                provisioned
                    .device
                    .write(arg.join("device.json"), ExistingFile::Refuse)?;
                println!("{READY} {}", provisioned.connector_config.display());
                let _ = stdin_closed.await;
                provisioned.edge.shutdown().await;
            }
            "connector" => {
                let connector = start_connector(&arg).await?;
                println!("{READY}");
                let _ = stdin_closed.await;
                connector.shutdown().await;
            }
            "relay" => {
                // The argument names the echo and the sink origins: "ECHO SINK".
                let arg = arg.to_string_lossy().into_owned();
                let mut targets = arg.split_whitespace().map(str::parse::<SocketAddr>);
                let (Some(Ok(echo)), Some(Ok(sink))) = (targets.next(), targets.next()) else {
                    return Err(format!("relay wants \"ECHO SINK\" addresses, not {arg:?}").into());
                };
                let (relay_echo, _echo) = tcp_relay(echo).await?;
                let (relay_sink, _sink) = tcp_relay(sink).await?;
                println!("{READY} {relay_echo} {relay_sink}");
                let _ = stdin_closed.await;
            }
            other => return Err(format!("unknown role {other:?}").into()),
        }
        Ok(())
    })
}

/// One child process; killed and reaped on drop.
#[derive(Debug)]
pub struct RoleProcess {
    child: Child,
    _stdin: ChildStdin,
}

impl RoleProcess {
    fn spawn(role: &str, arg: &Path) -> Result<(Self, String), SetupError> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .env(ROLE_ENV, role)
            .env(ARG_ENV, arg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let mut proc = Self {
            child,
            _stdin: stdin,
        };
        let mut lines = BufReader::new(stdout).lines();
        let answer = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix(READY) {
                        break rest.trim().to_owned();
                    }
                }
                _ => {
                    let status = proc.child.try_wait()?;
                    return Err(
                        format!("the {role} child ended before it was ready ({status:?})").into(),
                    );
                }
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok((proc, answer))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the child has used so far, from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Result<Duration, SetupError> {
        cpu_time(self.pid())
    }

    /// The child's memory now, from `/proc/<pid>/status`.
    pub fn memory(&self) -> Result<Memory, SetupError> {
        Memory::of(self.pid())
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) process `pid` has used, from `/proc/<pid>/stat` (fields 14
/// and 15, in clock ticks of 1/100 s, the value Linux reports for `_SC_CLK_TCK`).
pub fn cpu_time(pid: u32) -> Result<Duration, SetupError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("/proc/{pid}/stat has no command name"))?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut tick = || -> Result<u64, SetupError> {
        Ok(fields
            .next()
            .ok_or_else(|| format!("/proc/{pid}/stat is too short"))?
            .parse()?)
    };
    let ticks = tick()? + tick()?;
    Ok(Duration::from_millis(ticks * 10))
}

/// Resident memory of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`), in bytes.
    pub rss: u64,
    /// Peak resident set size since the process started (`VmHWM`), in bytes.
    pub peak: u64,
}

impl Memory {
    /// Reads `VmRSS` and `VmHWM` of `pid`.
    pub fn of(pid: u32) -> Result<Self, SetupError> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> Result<u64, SetupError> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .ok_or_else(|| format!("/proc/{pid}/status has no {name}"))?;
            let kib: u64 = line
                .split_whitespace()
                .nth(1)
                .ok_or_else(|| format!("/proc/{pid}/status: {name} has no value"))?
                .parse()?;
            Ok(kib * 1024)
        };
        Ok(Self {
            rss: field("VmRSS:")?,
            peak: field("VmHWM:")?,
        })
    }
}

/// An edge and a connector (its default HA connections) in their own processes.
#[derive(Debug)]
pub struct ProcRig {
    /// The edge process.
    pub edge: RoleProcess,
    /// The connector process.
    pub connector: RoleProcess,
    /// The device credentials a client connects with.
    pub device: DeviceCredentials,
    _dir: tempfile::TempDir,
}

impl ProcRig {
    /// Starts the edge, then the connector, each in a child process, and returns once both
    /// are ready. Blocking: call it outside an async context.
    pub fn start() -> Result<Self, SetupError> {
        let dir = tempfile::Builder::new()
            .prefix("zt-bench-procs")
            .tempdir()?;
        let (edge, config) = RoleProcess::spawn("edge", dir.path())?;
        let (connector, _) = RoleProcess::spawn("connector", Path::new(&config))?;
        let device =
            DeviceCredentials::load(dir.path().join("device.json"), PermissionMode::Default)?;
        Ok(Self {
            edge,
            connector,
            device,
            _dir: dir,
        })
    }
}

/// A plain single-hop TCP relay (`path::tcp_relay`) in a process of its own, in front of
/// an echo and a sink origin: the baseline of the multi-process head-of-line figures.
#[derive(Debug)]
pub struct RelayProcess {
    /// The process.
    pub process: RoleProcess,
    /// The relay's address in front of the echo origin.
    pub echo: SocketAddr,
    /// The relay's address in front of the sink.
    pub sink: SocketAddr,
}

impl RelayProcess {
    /// Starts it. Blocking: call it outside an async context.
    pub fn start(echo: SocketAddr, sink: SocketAddr) -> Result<Self, SetupError> {
        let (process, answer) = RoleProcess::spawn("relay", Path::new(&format!("{echo} {sink}")))?;
        let mut addrs = answer.split_whitespace().map(str::parse::<SocketAddr>);
        let (Some(Ok(echo)), Some(Ok(sink))) = (addrs.next(), addrs.next()) else {
            return Err(format!("the relay child answered {answer:?}").into());
        };
        Ok(Self {
            process,
            echo,
            sink,
        })
    }
}

/// Samples a process's resident memory every `every` in a thread until the returned
/// guard is finished; [`Sampler::finish`] returns the largest resident size seen.
#[derive(Debug)]
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32, every: Duration) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(m) = Memory::of(pid) {
                    max = max.max(m.rss);
                }
                std::thread::sleep(every);
            }
            max
        });
        Self { stop, thread }
    }

    /// Stops sampling; the largest resident size seen, in bytes.
    pub fn finish(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}
