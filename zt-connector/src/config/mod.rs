//! The connector's configuration: cloudflared's `config.yaml` keys plus zt's own.
//!
//! Reading happens in one pass over the YAML with a hand-written map visitor rather than a
//! derived one: each value is parsed where it stands, so an error carries that value's
//! line and column (a derived `flatten` would buffer the document and lose them), and keys
//! zt does not know are collected instead of failing the load, because cloudflared
//! configurations carry many keys (ingress, loglevel, …) that mean nothing here. A key that
//! is *almost* one of zt's is refused with a suggestion, since a misspelt `ha-connections`
//! silently falling back to its default is worse than an error.
//!
//! This module is the model (the settings, their defaults, overrides from the command
//! line) and the decisions about unknown keys; `read` is the reader itself. The pieces
//! that point at a line and a column (the reader's error split into key, position and
//! reason; locating a key the reader skipped; the did-you-mean) are zt-diag's, shared
//! with zt's other YAML files. Error texts are `FILE:LINE:COLUMN: `KEY`: REASON`.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::warn;
use zt_creds::{CaFingerprint, PermissionMode, TunnelToken};
use zt_diag::{KeyPrefix, Location};

use crate::values::{DestinationAllowList, EdgeAddr, EdgeProtocol, TunnelRef};

use self::read::{RawConfig, RootSeed, CLOUDFLARED_KEYS_IGNORED};

mod read;
#[cfg(test)]
mod tests;

/// A configuration file larger than this is refused before it is parsed: real ones are a
/// few hundred bytes, and the bound keeps a wrong path (a log file, a device) from being
/// read into memory.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Default `grace-period`, cloudflared's.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// Default `ha-connections`, cloudflared's.
pub const DEFAULT_HA_CONNECTIONS: u8 = 4;
/// Largest accepted `ha-connections`: each connection is a QUIC connection with its own
/// windows and keep-alives, and beyond this the edge gains nothing but load.
pub const MAX_HA_CONNECTIONS: u8 = 16;
/// Default `warp-routing.connectTimeout`, cloudflared's for private-network flows.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `warp-routing.tcpKeepAlive`, cloudflared's.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// A connector's configuration, from a cloudflared-style `config.yaml`, defaults and
/// command-line overrides.
///
/// Fields are public for reading; build one with [`ConnectorConfig::load`],
/// [`ConnectorConfig::parse`] or `Default`, then [`ConnectorConfig::apply`] overrides.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConnectorConfig {
    /// `tunnel`: the tunnel's UUID or name.
    pub tunnel: Option<TunnelRef>,
    /// `credentials-file`: path of the cloudflared-format credentials JSON (not read here).
    pub credentials_file: Option<PathBuf>,
    /// `token`: a tunnel token, an alternative to the credentials file.
    pub token: Option<TunnelToken>,
    /// `metrics`: where the metrics and readiness server listens; none when not set.
    pub metrics: Option<SocketAddr>,
    /// `warp-routing`: the private-network settings.
    pub warp_routing: WarpRouting,
    /// `protocol`: `auto` (default), `quic`, `tcp`, or cloudflared's `http2` (= `tcp`).
    pub protocol: EdgeProtocol,
    /// `grace-period`: how long in-flight flows may drain after SIGTERM.
    pub grace_period: Duration,
    /// `ha-connections`: edge connections to keep registered (1 to [`MAX_HA_CONNECTIONS`]).
    pub ha_connections: u8,
    /// `edge`: the edge addresses the HA connections are spread over.
    pub edge: Vec<EdgeAddr>,
    /// `cacert`: a PEM file with the edge's CA certificate.
    pub cacert: Option<PathBuf>,
    /// `edge-ca-fingerprint`: the edge CA certificate's SHA-256, instead of `cacert`.
    pub edge_ca_fingerprint: Option<CaFingerprint>,
    /// `credentials-permissions`: how strictly the credentials file's mode is checked.
    pub credentials_permissions: PermissionMode,
    /// `zt-allowed-destinations`: the destinations this connector may dial.
    pub allowed_destinations: DestinationAllowList,
}

/// The `warp-routing` section: how private-network flows are dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WarpRouting {
    /// `enabled`: kept as written; cloudflared has ignored it since routing moved to the
    /// remote configuration, and zt's connector exists to serve private routes.
    pub enabled: bool,
    /// `connectTimeout`: how long a TCP dial to a destination may take.
    pub connect_timeout: Duration,
    /// `tcpKeepAlive`: idle time before TCP keep-alive probes; `None` (written `0`) turns
    /// keep-alive off.
    pub tcp_keep_alive: Option<Duration>,
    /// `maxActiveFlows`: concurrent flows allowed; `None` (written `0` or absent) is no limit.
    pub max_active_flows: Option<NonZeroU64>,
}

impl Default for WarpRouting {
    fn default() -> Self {
        Self {
            enabled: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tcp_keep_alive: Some(DEFAULT_TCP_KEEPALIVE),
            max_active_flows: None,
        }
    }
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            tunnel: None,
            credentials_file: None,
            token: None,
            metrics: None,
            warp_routing: WarpRouting::default(),
            protocol: EdgeProtocol::Auto,
            grace_period: DEFAULT_GRACE_PERIOD,
            ha_connections: DEFAULT_HA_CONNECTIONS,
            edge: Vec::new(),
            cacert: None,
            edge_ca_fingerprint: None,
            credentials_permissions: PermissionMode::Default,
            allowed_destinations: DestinationAllowList::allow_all(),
        }
    }
}

/// Why a configuration file could not be loaded. Every variant names the file; those about
/// a value name its key path (`warp-routing.connectTimeout`) and, where the YAML reader
/// knows it, the 1-based line and column.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read connector config {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is larger than any configuration should be.
    #[error("connector config {} is {size} bytes, more than the {limit} allowed", file.display())]
    TooLarge {
        /// The file.
        file: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The text is not valid YAML, or a value has the wrong shape or content.
    #[error("{}{}: {}{reason}", file.display(), Location::new(*line, *column), KeyPrefix(key))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The key path, e.g. `warp-routing.connectTimeout`; empty for the document itself.
        key: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A key that zt does not know but that looks like one it does.
    #[error(
        "{}{}: unknown key `{key}` (did you mean `{suggestion}`?)",
        file.display(),
        Location::new(*line, *column)
    )]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// The key path as written.
        key: String,
        /// The key zt expected.
        suggestion: &'static str,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
    },
}

/// Command-line settings in cloudflared's shape (`tunnel --metrics … run NAME`), applied
/// over a loaded configuration by [`ConnectorConfig::apply`]. A setting left unset keeps
/// the file's value.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    tunnel: Option<TunnelRef>,
    credentials_file: Option<PathBuf>,
    token: Option<TunnelToken>,
    metrics: Option<SocketAddr>,
    protocol: Option<EdgeProtocol>,
    grace_period: Option<Duration>,
    ha_connections: Option<u8>,
    edge: Option<Vec<EdgeAddr>>,
    cacert: Option<PathBuf>,
    edge_ca_fingerprint: Option<CaFingerprint>,
    credentials_permissions: Option<PermissionMode>,
}

impl ConfigOverrides {
    /// The tunnel named on the command line (`run NAME`).
    pub fn tunnel(mut self, tunnel: TunnelRef) -> Self {
        self.tunnel = Some(tunnel);
        self
    }
    /// `--credentials-file`.
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials_file = Some(path.into());
        self
    }
    /// `--token`.
    pub fn token(mut self, token: TunnelToken) -> Self {
        self.token = Some(token);
        self
    }
    /// `--metrics`.
    pub fn metrics(mut self, addr: SocketAddr) -> Self {
        self.metrics = Some(addr);
        self
    }
    /// `--protocol`.
    pub fn protocol(mut self, protocol: EdgeProtocol) -> Self {
        self.protocol = Some(protocol);
        self
    }
    /// `--grace-period`.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = Some(grace);
        self
    }
    /// `--ha-connections`; checked against the same bounds as the file's value by
    /// [`ConnectorConfig::apply`].
    pub fn ha_connections(mut self, n: u8) -> Self {
        self.ha_connections = Some(n);
        self
    }
    /// `--edge`, repeated: replaces the file's list.
    pub fn edge(mut self, edges: Vec<EdgeAddr>) -> Self {
        self.edge = Some(edges);
        self
    }
    /// `--cacert`.
    pub fn cacert(mut self, path: impl Into<PathBuf>) -> Self {
        self.cacert = Some(path.into());
        self
    }
    /// `--edge-ca-fingerprint`.
    pub fn edge_ca_fingerprint(mut self, fp: CaFingerprint) -> Self {
        self.edge_ca_fingerprint = Some(fp);
        self
    }
    /// `--credentials-permissions`.
    pub fn credentials_permissions(mut self, mode: PermissionMode) -> Self {
        self.credentials_permissions = Some(mode);
        self
    }
}

/// Why command-line overrides could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverrideError {
    /// `--ha-connections` outside 1..=[`MAX_HA_CONNECTIONS`].
    #[error("--ha-connections {0} is out of range (1 to {MAX_HA_CONNECTIONS})")]
    HaConnections(u8),
}

impl ConnectorConfig {
    /// Reads and parses a `config.yaml`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        use std::io::Read;
        let path = path.as_ref();
        let read_err = |source| ConfigError::Read {
            file: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let size = file.metadata().map_err(read_err)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                file: path.to_owned(),
                size,
                limit: MAX_CONFIG_BYTES,
            });
        }
        let mut text = String::new();
        // `take` keeps a file that grows after the size check (or a FIFO) bounded too.
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                file: path.to_owned(),
                size: text.len() as u64,
                limit: MAX_CONFIG_BYTES,
            });
        }
        Self::parse(&text, path)
    }

    /// Parses configuration text; `file` is only used to name it in errors and warnings.
    ///
    /// Keys cloudflared knows but zt does not use are named in one warning; other unknown
    /// keys in another; an unknown key that looks like a misspelling of one of zt's keys is
    /// an error.
    pub fn parse(text: &str, file: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let file = file.as_ref();
        let mut unknown = Vec::new();
        let raw: Option<RawConfig> = if zt_diag::is_blank(text) {
            None
        } else {
            let seed = RootSeed {
                unknown: &mut unknown,
            };
            zt_diag::from_yaml_seed(text, seed).map_err(|e| ConfigError::Invalid {
                file: file.to_owned(),
                key: e.key,
                line: e.line,
                column: e.column,
                reason: e.reason,
            })?
        };

        let mut ignored = Vec::new();
        let mut unrecognised = Vec::new();
        for key in unknown {
            if let Some(suggestion) = key.suggestion {
                let at = zt_diag::locate_key(text, &key.name);
                return Err(ConfigError::UnknownKey {
                    file: file.to_owned(),
                    key: key.path(),
                    suggestion,
                    line: at.line,
                    column: at.column,
                });
            }
            if key.section.is_none() && CLOUDFLARED_KEYS_IGNORED.contains(&key.name.as_str()) {
                ignored.push(key.name);
            } else {
                unrecognised.push(key.path());
            }
        }
        if !ignored.is_empty() {
            warn!(
                file = %file.display(),
                keys = %ignored.join(", "),
                "ignoring cloudflared settings that zt does not use"
            );
        }
        if !unrecognised.is_empty() {
            warn!(
                file = %file.display(),
                keys = %unrecognised.join(", "),
                "ignoring unknown settings"
            );
        }

        let config = raw.map(RawConfig::into_config).unwrap_or_default();
        Ok(config)
    }

    /// Applies command-line overrides: each one that is set replaces the file's value.
    pub fn apply(&mut self, overrides: ConfigOverrides) -> Result<(), OverrideError> {
        if let Some(n) = overrides.ha_connections {
            if n == 0 || n > MAX_HA_CONNECTIONS {
                return Err(OverrideError::HaConnections(n));
            }
            self.ha_connections = n;
        }
        if let Some(v) = overrides.tunnel {
            self.tunnel = Some(v);
        }
        if let Some(v) = overrides.credentials_file {
            self.credentials_file = Some(v);
        }
        if let Some(v) = overrides.token {
            self.token = Some(v);
        }
        if let Some(v) = overrides.metrics {
            self.metrics = Some(v);
        }
        if let Some(v) = overrides.protocol {
            self.protocol = v;
        }
        if let Some(v) = overrides.grace_period {
            self.grace_period = v;
        }
        if let Some(v) = overrides.edge {
            self.edge = v;
        }
        if let Some(v) = overrides.cacert {
            self.cacert = Some(v);
        }
        if let Some(v) = overrides.edge_ca_fingerprint {
            self.edge_ca_fingerprint = Some(v);
        }
        if let Some(v) = overrides.credentials_permissions {
            self.credentials_permissions = v;
        }
        Ok(())
    }
}
