//! A real PostgreSQL server for tests: Debian's binaries (`/usr/lib/postgresql/*/bin`),
//! `initdb` and `pg_ctl` in a temporary directory, listening on a free loopback port and a
//! Unix socket in that directory, run as an unprivileged user (created if missing) when the
//! tests run as root, since `initdb` refuses root.
//!
//! [`PgServer::shared`] starts one server per test binary, with [`PgServer::database`] a
//! fresh database per test; [`PgServer::start`] a server of a test's own (to restart it).
//! A watchdog process stops the server and removes its directory when the test binary
//! exits, however it exits.
//!
//! Where PostgreSQL is not installed, both say so on stderr (uncaptured) with a `SKIP` line
//! and return `None`: the test passes without its PostgreSQL part and the rest still runs.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The unprivileged user the server runs as when the tests run as root.
pub const PG_USER: &str = "zt-pgtest";

/// A running PostgreSQL server; see the module docs.
#[derive(Debug)]
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<String>,
    next_db: AtomicU32,
    owned: bool,
}

/// The environment variable that puts every test edge of [`crate::loopback::test_config`]
/// (and the suites that call [`env_store`]) on PostgreSQL: `ZT_TEST_STORE=postgres`.
pub const STORE_ENV: &str = "ZT_TEST_STORE";

/// With `ZT_TEST_STORE=postgres`, a store on a database of the shared server for the
/// state directory `dir` (a fresh one the first time, the same one again when an edge
/// restarts on `dir`), or a SKIP line and `None` when PostgreSQL is missing; otherwise
/// `None` (the redb default).
pub fn env_store(test: &str, dir: &Path) -> Option<std::sync::Arc<dyn zt_edge::Store>> {
    static BY_DIR: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    match std::env::var(STORE_ENV).ok().as_deref() {
        Some("postgres") => {}
        Some("redb") | Some("") | None => return None,
        Some(other) => panic!("{STORE_ENV}={other}: expected postgres or redb"),
    }
    let server = PgServer::shared(test)?;
    let url = {
        let mut by_dir = BY_DIR.lock().unwrap_or_else(|p| p.into_inner());
        match by_dir.iter().find(|(d, _)| d == dir) {
            Some((_, url)) => url.clone(),
            None => {
                let url = server.database();
                by_dir.push((dir.to_path_buf(), url.clone()));
                url
            }
        }
    };
    let options = zt_edge::PostgresOptions::new(url, server.dir.join("secrets.key"));
    Some(std::sync::Arc::new(
        zt_edge::PostgresStore::open(&options).expect("open the PostgreSQL test store"),
    ))
}

/// Prints a SKIP line that the test harness does not capture.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: needs PostgreSQL ({}); install Debian's postgresql package",
        reason.lines().next().unwrap_or(reason).trim()
    );
}

fn find_bin() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("ZT_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "no /usr/lib/postgresql".to_owned())?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_owned())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl PgServer {
    /// The server shared by this test binary, started on first use; `None` (after a SKIP
    /// line naming `test`) when PostgreSQL is not installed.
    pub fn shared(test: &str) -> Option<&'static PgServer> {
        static SHARED: OnceLock<Result<PgServer, String>> = OnceLock::new();
        match SHARED.get_or_init(|| Self::launch(false, false, None)) {
            Ok(s) => Some(s),
            Err(reason) => {
                skip(test, reason);
                None
            }
        }
    }

    /// A server of the caller's own, stopped and removed when dropped; `durable` keeps
    /// PostgreSQL's fsync on (for benchmarks), else it is off (tests need no crash safety
    /// of the test server). `None` after a SKIP line when PostgreSQL is not installed.
    pub fn start(test: &str, durable: bool) -> Option<PgServer> {
        match Self::launch(true, durable, None) {
            Ok(s) => Some(s),
            Err(reason) => {
                skip(test, &reason);
                None
            }
        }
    }

    /// Like [`PgServer::start`], with TLS on: the server presents `cert_pem` (with its
    /// `key_pem`) to clients that ask for TLS.
    pub fn start_tls(test: &str, cert_pem: &str, key_pem: &str) -> Option<PgServer> {
        match Self::launch(true, false, Some((cert_pem, key_pem))) {
            Ok(s) => Some(s),
            Err(reason) => {
                skip(test, &reason);
                None
            }
        }
    }

    fn launch(owned: bool, durable: bool, tls: Option<(&str, &str)>) -> Result<PgServer, String> {
        let bin = find_bin()?;
        let run_as = if is_root() {
            let exists = Command::new("id")
                .arg("-u")
                .arg(PG_USER)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !exists {
                // Two test binaries may race here: a failure is fine if the user now exists.
                let _ = Command::new("useradd")
                    .args(["-r", "-M", "-s", "/usr/sbin/nologin", PG_USER])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            Some(PG_USER.to_owned())
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("zt-pg-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?
            .keep();
        if let Some(user) = &run_as {
            run(
                Command::new("chown").arg(format!("{user}:")).arg(&dir),
                "chown the server directory",
            )?;
        }
        let server = PgServer {
            dir,
            bin,
            port: free_port(),
            run_as,
            next_db: AtomicU32::new(0),
            owned,
        };
        server.watchdog();
        run(
            &mut server.command(
                "initdb",
                &[
                    "-D",
                    &server.data().display().to_string(),
                    "-A",
                    "trust",
                    "-U",
                    "zt",
                    "--no-sync",
                ],
            ),
            "initdb",
        )?;
        let mut opts = format!(
            "-k {} -c listen_addresses=127.0.0.1 -p {} -c max_connections=200",
            server.dir.display(),
            server.port
        );
        if !durable {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        if let Some((cert, key)) = tls {
            let (cert_path, key_path) =
                (server.dir.join("server.crt"), server.dir.join("server.key"));
            std::fs::write(&cert_path, cert).map_err(|e| e.to_string())?;
            std::fs::write(&key_path, key).map_err(|e| e.to_string())?;
            run(
                Command::new("chmod").arg("600").arg(&key_path),
                "chmod the server key",
            )?;
            if let Some(user) = &server.run_as {
                run(
                    Command::new("chown")
                        .arg(format!("{user}:"))
                        .arg(&cert_path)
                        .arg(&key_path),
                    "chown the server certificate",
                )?;
            }
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_path.display(),
                key_path.display()
            ));
        }
        std::fs::write(server.dir.join("opts"), &opts).map_err(|e| e.to_string())?;
        server.pg_ctl_start()?;
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let path = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        cmd.args(args).current_dir(&self.dir);
        cmd
    }

    /// A process that outlives this one for as long as it runs, then stops the server and
    /// removes its directory.
    fn watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = match &self.run_as {
            Some(u) => format!("runuser -u {u} -- {}", pg_ctl.display()),
            None => pg_ctl.display().to_string(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {stop} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            data = self.data().display(),
            dir = self.dir.display(),
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let opts = std::fs::read_to_string(self.dir.join("opts")).map_err(|e| e.to_string())?;
        run(
            &mut self.command(
                "pg_ctl",
                &[
                    "-D",
                    &self.data().display().to_string(),
                    "-l",
                    &self.dir.join("log").display().to_string(),
                    "-o",
                    &opts,
                    "-w",
                    "start",
                ],
            ),
            "pg_ctl start",
        )
        .map(|_| ())
    }

    /// Stops the server (fast shutdown: connections are cut, as in a database failover).
    pub fn stop(&self) {
        run(
            &mut self.command(
                "pg_ctl",
                &[
                    "-D",
                    &self.data().display().to_string(),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ],
            ),
            "pg_ctl stop",
        )
        .expect("pg_ctl stop");
    }

    /// Starts the server again after [`PgServer::stop`], on the same port.
    pub fn resume(&self) {
        self.pg_ctl_start().expect("pg_ctl start");
    }

    /// The TCP port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` as user `zt` over loopback TCP (trust authentication).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://zt@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn database(&self) -> String {
        let name = format!("zt_test_{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs `sql` in database `db` with psql and returns its unaligned, tuples-only output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        run(
            Command::new(self.bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                ])
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", "zt", "-d", db, "-c", sql]),
            "psql",
        )
        .expect("psql")
    }

    /// The database name at the end of a URL made by [`PgServer::url`].
    pub fn db_name(url: &str) -> &str {
        url.rsplit('/').next().unwrap_or(url)
    }

    /// The server's directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.owned {
            let _ = self
                .command(
                    "pg_ctl",
                    &[
                        "-D",
                        &self.data().display().to_string(),
                        "-m",
                        "immediate",
                        "stop",
                    ],
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
