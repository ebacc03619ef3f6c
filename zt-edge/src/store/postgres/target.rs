//! Where the PostgreSQL backend connects, and how: the URL, the password (from a file only)
//! and TLS (full verification whenever the server is not on loopback or a Unix socket).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_postgres::config::{Host, SslMode};

use crate::fsutil;

/// Where and how to reach the database; see [`PostgresOptions::new`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// `postgres://USER@HOST[:PORT]/DB[?…]` (or libpq's `key=value` form), without a
    /// password.
    pub url: String,
    /// A file holding the password (mode 0600). Without it, the standard PostgreSQL
    /// password file (`$PGPASSFILE`, else `~/.pgpass`) is read when it exists.
    pub password_file: Option<PathBuf>,
    /// PEM certificates of the CAs that sign the server's certificate; required when the
    /// server is reached over TCP at a non-loopback address.
    pub ca_file: Option<PathBuf>,
    /// The key file sealing proof keys and verifiers (created on first use).
    pub secrets_key_file: PathBuf,
    /// Apply pending schema migrations when opening (the edge does; `false` refuses an
    /// older schema instead).
    pub migrate: bool,
}

impl PostgresOptions {
    /// Options for `url`, sealing secrets with the key in `secrets_key_file`.
    pub fn new(url: impl Into<String>, secrets_key_file: impl Into<PathBuf>) -> Self {
        Self {
            url: url.into(),
            password_file: None,
            ca_file: None,
            secrets_key_file: secrets_key_file.into(),
            migrate: true,
        }
    }
}

/// A problem with the store's URL, password or TLS settings, found before connecting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The URL does not parse.
    #[error("store URL {url} is not a PostgreSQL connection string: {reason}")]
    Url {
        /// The URL with any password removed.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The URL holds a password.
    #[error(
        "the store URL holds a password, which would show in process lists and shell history; \
         remove it from the URL and put it in a file readable only by you, given with \
         --store-password-file FILE, or in the PostgreSQL password file ($PGPASSFILE or ~/.pgpass)"
    )]
    PasswordInUrl,
    /// The URL names no user.
    #[error("store URL {url} names no user: write it as postgres://USER@HOST/DATABASE")]
    NoUser {
        /// The URL.
        url: String,
    },
    /// A password file could not be read.
    #[error("password file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A password file is readable by group or others.
    #[error("password file {path} has mode {mode:o}; it must be readable by its owner only (chmod 600 {path})")]
    PasswordFileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The server is remote and no CA was given to verify it.
    #[error(
        "the database server {host} is not on loopback, so the connection uses TLS with full \
         certificate verification: give the CA certificate(s) that sign its certificate with \
         --store-ca-file FILE"
    )]
    TlsNeedsCa {
        /// The host.
        host: String,
    },
    /// The URL turns TLS off for a remote server.
    #[error("the store URL sets sslmode=disable for {host}, which is not on loopback; TLS cannot be turned off there")]
    TlsDisabled {
        /// The host.
        host: String,
    },
    /// The CA file is unreadable or holds no certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Clone)]
pub(super) enum Tls {
    None,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// A parsed, checked connection target, password included (never printed).
#[derive(Clone)]
pub(super) struct Target {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: Tls,
    /// The URL as shown in logs and errors: no password ever.
    pub(super) display: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.display)
            .finish_non_exhaustive()
    }
}

/// `url` with the part between `://` and `@` cut down to the user: for messages about a
/// URL that might hold a password.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            let user = userinfo.split(':').next().unwrap_or("");
            let tail = tail.split('?').next().unwrap_or("");
            return format!("{scheme}://{user}@{host}{tail}");
        }
        let tail = tail.split('?').next().unwrap_or("");
        return format!("{scheme}://{authority}{tail}");
    }
    // key=value form: only names the fields.
    "(connection string)".to_owned()
}

fn is_loopback(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(h) => {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h.eq_ignore_ascii_case("localhost")
                || h.parse::<IpAddr>()
                    .map(|ip| ip.is_loopback())
                    .unwrap_or(false)
        }
    }
}

fn host_name(host: &Host) -> String {
    match host {
        Host::Unix(p) => p.display().to_string(),
        Host::Tcp(h) => h.clone(),
    }
}

impl Target {
    pub(super) fn new(options: &PostgresOptions) -> Result<Self, TargetError> {
        let display = redact(&options.url);
        let mut config =
            tokio_postgres::Config::from_str(&options.url).map_err(|e| TargetError::Url {
                url: display.clone(),
                reason: e.to_string(),
            })?;
        if config.get_password().is_some() {
            return Err(TargetError::PasswordInUrl);
        }
        let Some(user) = config.get_user().map(str::to_owned) else {
            return Err(TargetError::NoUser { url: display });
        };
        if config.get_hosts().is_empty() {
            return Err(TargetError::Url {
                url: display,
                reason: "no host".to_owned(),
            });
        }
        let dbname = config.get_dbname().unwrap_or(&user).to_owned();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let first_host = config.get_hosts()[0].clone();
        let password = match &options.password_file {
            Some(path) => Some(read_password_file(path)?),
            None => pgpass_lookup(&first_host, port, &dbname, &user)?,
        };
        if let Some(p) = password {
            config.password(p);
        }
        let remote: Vec<&Host> = config
            .get_hosts()
            .iter()
            .filter(|h| !is_loopback(h))
            .collect();
        let tls = if let Some(host) = remote.first() {
            if config.get_ssl_mode() == SslMode::Disable {
                return Err(TargetError::TlsDisabled {
                    host: host_name(host),
                });
            }
            let Some(ca) = &options.ca_file else {
                return Err(TargetError::TlsNeedsCa {
                    host: host_name(host),
                });
            };
            config.ssl_mode(SslMode::Require);
            Tls::Rustls(rustls_connector(ca)?)
        } else if let Some(ca) = &options.ca_file {
            // A CA on loopback: the user asked for verified TLS there too.
            config.ssl_mode(SslMode::Require);
            Tls::Rustls(rustls_connector(ca)?)
        } else {
            config.ssl_mode(SslMode::Disable);
            Tls::None
        };
        config.connect_timeout(std::time::Duration::from_secs(10));
        config.keepalives(true);
        config.keepalives_idle(std::time::Duration::from_secs(30));
        Ok(Self {
            config,
            tls,
            display,
        })
    }
}

/// A rustls client that verifies the chain against `ca` and the name against the host:
/// libpq's `sslmode=verify-full`.
fn rustls_connector(ca: &Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, TargetError> {
    let bad = |reason: String| TargetError::CaFile {
        path: ca.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".to_owned()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn check_private(path: &Path) -> Result<(), TargetError> {
    match fsutil::loose_mode(path) {
        Ok(Some(mode)) => Err(TargetError::PasswordFileMode {
            path: path.to_path_buf(),
            mode,
        }),
        Ok(None) => Ok(()),
        Err(source) => Err(TargetError::PasswordFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_password_file(path: &Path) -> Result<String, TargetError> {
    check_private(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| TargetError::PasswordFile {
        path: path.to_path_buf(),
        source,
    })?;
    let p = text.strip_suffix('\n').unwrap_or(&text);
    Ok(p.strip_suffix('\r').unwrap_or(p).to_owned())
}

/// The password for this connection in the PostgreSQL password file, as libpq finds it.
fn pgpass_lookup(
    host: &Host,
    port: u16,
    db: &str,
    user: &str,
) -> Result<Option<String>, TargetError> {
    let path = match std::env::var_os("PGPASSFILE") {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("HOME") {
            Some(home) => Path::new(&home).join(".pgpass"),
            None => return Ok(None),
        },
    };
    if !path.exists() {
        return Ok(None);
    }
    check_private(&path)?;
    let text = std::fs::read_to_string(&path).map_err(|source| TargetError::PasswordFile {
        path: path.clone(),
        source,
    })?;
    let host = match host {
        // libpq matches a socket directory as "localhost".
        Host::Unix(_) => "localhost".to_owned(),
        Host::Tcp(h) => h.clone(),
    };
    Ok(pgpass_find(&text, &host, &port.to_string(), db, user))
}

/// The password of the first line of a password file matching the four fields (`*`
/// matches anything; `\:` and `\\` escape).
pub(super) fn pgpass_find(
    text: &str,
    host: &str,
    port: &str,
    db: &str,
    user: &str,
) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::with_capacity(5);
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let want = [host, port, db, user];
        if fields[..4]
            .iter()
            .zip(want)
            .all(|(f, w)| f == "*" || f == w)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:pw@h:5/db?x=1"), "postgres://u@h:5/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("host=h password=pw"), "(connection string)");
    }

    #[test]
    fn pgpass_lines() {
        let text = "# comment\nother:*:*:*:no\nh:5432:db:u:p\\:w\n*:*:*:*:any\n";
        assert_eq!(
            pgpass_find(text, "h", "5432", "db", "u").as_deref(),
            Some("p:w")
        );
        assert_eq!(
            pgpass_find(text, "x", "1", "d", "v").as_deref(),
            Some("any")
        );
        assert_eq!(pgpass_find("h:1:d:u", "h", "1", "d", "u"), None);
    }

    #[test]
    fn refuses_passwords_and_unverified_remote_servers() {
        let opts = |url: &str| PostgresOptions::new(url, "/nonexistent/key");
        let err = Target::new(&opts("postgres://zt:hunter2@127.0.0.1/zt")).unwrap_err();
        assert!(matches!(err, TargetError::PasswordInUrl));
        assert!(!err.to_string().contains("hunter2"));
        let err = Target::new(&opts("postgres://zt@db.example.com/zt")).unwrap_err();
        assert!(err.to_string().contains("--store-ca-file"), "{err}");
        let err =
            Target::new(&opts("postgres://zt@db.example.com/zt?sslmode=disable")).unwrap_err();
        assert!(matches!(err, TargetError::TlsDisabled { .. }), "{err}");
        let err = Target::new(&opts("postgres://127.0.0.1/zt")).unwrap_err();
        assert!(matches!(err, TargetError::NoUser { .. }), "{err}");
    }
}
