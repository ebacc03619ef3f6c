//! The connector's configuration: cloudflared's `config.yaml` keys plus zt's own.
//!
//! Reading happens in one pass over the YAML with a hand-written map visitor rather than a
//! derived one: each value is parsed where it stands, so an error carries that value's
//! line and column (a derived `flatten` would buffer the document and lose them), and keys
//! zt does not know are collected instead of failing the load, because cloudflared
//! configurations carry many keys (ingress, loglevel, …) that mean nothing here. A key that
//! is *almost* one of zt's is refused with a suggestion, since a misspelt `ha-connections`
//! silently falling back to its default is worse than an error.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tracing::warn;

use crate::duration::parse_duration;
use zt_creds::{CaFingerprint, PermissionMode, TunnelToken};

use crate::values::{
    parse_listen_addr, parse_prefix, DestinationAllowList, EdgeAddr, Protocol, TunnelRef,
    ValueError,
};

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
    /// `protocol`: accepted for compatibility; zt always uses QUIC.
    pub protocol: Protocol,
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
            protocol: Protocol::Quic,
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
    #[error("{}{}: {}{reason}", file.display(), Loc(*line, *column), KeyPrefix(key))]
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
        Loc(*line, *column)
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

struct Loc(Option<usize>, Option<usize>);

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(l), Some(c)) => write!(f, ":{l}:{c}"),
            (Some(l), None) => write!(f, ":{l}"),
            _ => Ok(()),
        }
    }
}

struct KeyPrefix<'a>(&'a str);

impl fmt::Display for KeyPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "`{}`: ", self.0)
        }
    }
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
    protocol: Option<Protocol>,
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
    pub fn protocol(mut self, protocol: Protocol) -> Self {
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
        let raw: Option<RawConfig> = if is_blank(text) {
            None
        } else {
            let de = serde_norway::Deserializer::from_str(text);
            let seed = RootSeed {
                unknown: &mut unknown,
            };
            let mut track = serde_path_to_error::Track::new();
            let tracked = serde_path_to_error::Deserializer::new(de, &mut track);
            match seed.deserialize(tracked) {
                Ok(raw) => raw,
                Err(err) => return Err(invalid_from_yaml(text, file, &track.path(), &err)),
            }
        };

        let mut ignored = Vec::new();
        let mut unrecognised = Vec::new();
        for key in unknown {
            if let Some(suggestion) = key.suggestion {
                let (line, column) = locate_key(text, &key.name);
                return Err(ConfigError::UnknownKey {
                    file: file.to_owned(),
                    key: key.path(),
                    suggestion,
                    line,
                    column,
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
        if config.protocol != Protocol::Quic {
            warn!(
                file = %file.display(),
                protocol = %config.protocol,
                "zt always connects to its edge over QUIC; the protocol setting is ignored"
            );
        }
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
            if v != Protocol::Quic {
                warn!(protocol = %v, "zt always connects to its edge over QUIC; --protocol is ignored");
            }
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

/// Keys of cloudflared's configuration that have no meaning for zt's connector. They are
/// accepted so that a cloudflared `config.yaml` loads unchanged.
const CLOUDFLARED_KEYS_IGNORED: &[&str] = &[
    "ingress",
    "originRequest",
    "loglevel",
    "transport-loglevel",
    "logfile",
    "log-directory",
    "no-autoupdate",
    "autoupdate-freq",
    "origincert",
    "region",
    "retries",
    "tag",
    "pidfile",
    "edge-ip-version",
    "edge-bind-address",
    "post-quantum",
    "management-diagnostics",
    "max-fetch-size",
    "metrics-update-freq",
    "compression-quality",
    "no-tls-verify",
    "url",
    "hello-world",
    "label",
    "proxy-address",
    "proxy-port",
    "features",
    "diagnostic-logs",
];

const TOP_KEYS: &[&str] = &[
    "tunnel",
    "credentials-file",
    "token",
    "metrics",
    "warp-routing",
    "protocol",
    "grace-period",
    "ha-connections",
    "edge",
    "cacert",
    "edge-ca-fingerprint",
    "credentials-permissions",
    "zt-allowed-destinations",
];

const WARP_KEYS: &[&str] = &[
    "enabled",
    "connectTimeout",
    "tcpKeepAlive",
    "maxActiveFlows",
];

/// The known key a misspelt one most likely meant: equal after ignoring case, `-` and
/// `_` (`ha_connections`, `connect-timeout`), or within two edits of it.
fn suggest(name: &str, known: &'static [&'static str]) -> Option<&'static str> {
    let squash = |s: &str| {
        s.chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let wanted = squash(name);
    known
        .iter()
        .map(|k| (*k, strsim::damerau_levenshtein(&wanted, &squash(k))))
        .filter(|(k, d)| *d == 0 || (*d <= 2 && k.len() > 4))
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}

fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

/// Where a key is written: the first line whose text starts with it followed by `:`.
/// Used only for unknown keys, which the YAML reader skips without a position.
fn locate_key(text: &str, key: &str) -> (Option<usize>, Option<usize>) {
    locate_key_nth(text, key, 0)
}

/// Like [`locate_key`], for the `nth` (0-based) line that starts with the key.
fn locate_key_nth(text: &str, key: &str, mut nth: usize) -> (Option<usize>, Option<usize>) {
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        for quoted in [key.to_owned(), format!("\"{key}\""), format!("'{key}'")] {
            if let Some(rest) = trimmed.strip_prefix(quoted.as_str()) {
                if rest.trim_start().starts_with(':') {
                    if nth == 0 {
                        return (Some(i + 1), Some(indent + 1));
                    }
                    nth -= 1;
                }
            }
        }
    }
    (None, None)
}

fn invalid_from_yaml(
    text: &str,
    file: &Path,
    path: &serde_path_to_error::Path,
    err: &serde_norway::Error,
) -> ConfigError {
    let key = path.to_string();
    // "." is the document itself; "?" is where the reader failed before reaching a key.
    let key = if key == "." || key == "?" {
        String::new()
    } else {
        key
    };
    let (line, column) = match err.location() {
        Some(loc) => (Some(loc.line()), Some(loc.column())),
        None => (None, None),
    };
    // serde_norway's message repeats the key path and the position, which this error
    // carries as fields; keep only the reason.
    let mut reason = err.to_string();
    if let (Some(l), Some(c)) = (line, column) {
        if let Some(stripped) = reason.strip_suffix(&format!(" at line {l} column {c}")) {
            reason = stripped.to_owned();
        }
    }
    if !key.is_empty() {
        if let Some(stripped) = reason.strip_prefix(&format!("{key}: ")) {
            reason = stripped.to_owned();
        }
    }
    // A duplicate is found by the mapping's visitor, which only knows where the mapping
    // starts; point at the second occurrence instead.
    let (line, column) = match reason
        .strip_prefix("duplicate key `")
        .and_then(|r| r.strip_suffix('`'))
    {
        Some(dup) => match locate_key_nth(text, dup, 1) {
            (Some(l), Some(c)) => (Some(l), Some(c)),
            _ => (line, column),
        },
        None => (line, column),
    };
    ConfigError::Invalid {
        file: file.to_owned(),
        key,
        line,
        column,
        reason,
    }
}

/// A key the visitor did not recognise.
struct UnknownKey {
    section: Option<&'static str>,
    name: String,
    suggestion: Option<&'static str>,
}

impl UnknownKey {
    fn path(&self) -> String {
        match self.section {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

#[derive(Default)]
struct RawConfig {
    tunnel: Option<TunnelRef>,
    credentials_file: Option<PathBuf>,
    token: Option<TunnelToken>,
    metrics: Option<SocketAddr>,
    warp_routing: Option<WarpRouting>,
    protocol: Option<Protocol>,
    grace_period: Option<Duration>,
    ha_connections: Option<u8>,
    edge: Option<Vec<EdgeAddr>>,
    cacert: Option<PathBuf>,
    edge_ca_fingerprint: Option<CaFingerprint>,
    credentials_permissions: Option<PermissionMode>,
    allowed_destinations: Option<DestinationAllowList>,
}

impl RawConfig {
    fn into_config(self) -> ConnectorConfig {
        let d = ConnectorConfig::default();
        ConnectorConfig {
            tunnel: self.tunnel,
            credentials_file: self.credentials_file,
            token: self.token,
            metrics: self.metrics,
            warp_routing: self.warp_routing.unwrap_or(d.warp_routing),
            protocol: self.protocol.unwrap_or(d.protocol),
            grace_period: self.grace_period.unwrap_or(d.grace_period),
            ha_connections: self.ha_connections.unwrap_or(d.ha_connections),
            edge: self.edge.unwrap_or(d.edge),
            cacert: self.cacert,
            edge_ca_fingerprint: self.edge_ca_fingerprint,
            credentials_permissions: self
                .credentials_permissions
                .unwrap_or(d.credentials_permissions),
            allowed_destinations: self.allowed_destinations.unwrap_or(d.allowed_destinations),
        }
    }
}

struct RootSeed<'a> {
    unknown: &'a mut Vec<UnknownKey>,
}

impl<'de> DeserializeSeed<'de> for RootSeed<'_> {
    // `None` for a document that is just `null` or `~`.
    type Value = Option<RawConfig>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RootSeed<'_> {
    type Value = Option<RawConfig>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of connector settings")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawConfig::default();
        while let Some(key) = map.next_key::<String>()? {
            macro_rules! set {
                ($field:ident, $value:expr) => {{
                    if raw.$field.is_some() {
                        return Err(de::Error::custom(format!("duplicate key `{key}`")));
                    }
                    raw.$field = Some($value);
                }};
            }
            match key.as_str() {
                "tunnel" => set!(tunnel, map.next_value::<Parsed<TunnelRef>>()?.0),
                "credentials-file" => set!(credentials_file, map.next_value::<PathBuf>()?),
                "token" => set!(token, map.next_value::<Token>()?.0),
                "metrics" => set!(metrics, map.next_value::<ListenAddr>()?.0),
                "warp-routing" => {
                    let seed = WarpSeed {
                        unknown: &mut *self.unknown,
                    };
                    set!(warp_routing, map.next_value_seed(seed)?)
                }
                "protocol" => set!(protocol, map.next_value::<Parsed<Protocol>>()?.0),
                "grace-period" => set!(grace_period, map.next_value::<GoDuration>()?.0),
                "ha-connections" => set!(ha_connections, map.next_value::<HaConnections>()?.0),
                "edge" => set!(edge, map.next_value::<OneOrMany<EdgeAddr>>()?.0),
                "cacert" => set!(cacert, map.next_value::<PathBuf>()?),
                "edge-ca-fingerprint" => {
                    set!(edge_ca_fingerprint, map.next_value::<Fingerprint>()?.0)
                }
                "credentials-permissions" => {
                    set!(credentials_permissions, map.next_value::<Permissions>()?.0)
                }
                "zt-allowed-destinations" => {
                    set!(allowed_destinations, map.next_value::<AllowList>()?.0)
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    // cloudflared's own keys are never misspellings, even when one is
                    // close to a zt key (`retries` is two edits from `metrics`).
                    let suggestion = if CLOUDFLARED_KEYS_IGNORED.contains(&key.as_str()) {
                        None
                    } else {
                        suggest(&key, TOP_KEYS)
                    };
                    self.unknown.push(UnknownKey {
                        section: None,
                        name: key,
                        suggestion,
                    });
                }
            }
        }
        Ok(Some(raw))
    }
}

struct WarpSeed<'a> {
    unknown: &'a mut Vec<UnknownKey>,
}

impl<'de> DeserializeSeed<'de> for WarpSeed<'_> {
    type Value = WarpRouting;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for WarpSeed<'_> {
    type Value = WarpRouting;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping with enabled, connectTimeout, tcpKeepAlive or maxActiveFlows")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(WarpRouting::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = WarpRouting::default();
        let mut seen: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            match key.as_str() {
                "enabled" => out.enabled = map.next_value()?,
                "connectTimeout" => out.connect_timeout = map.next_value::<ConnectTimeout>()?.0,
                "tcpKeepAlive" => {
                    let d = map.next_value::<GoDuration>()?.0;
                    out.tcp_keep_alive = (!d.is_zero()).then_some(d);
                }
                "maxActiveFlows" => {
                    out.max_active_flows = NonZeroU64::new(map.next_value::<FlowCount>()?.0)
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    let suggestion = suggest(&key, WARP_KEYS);
                    self.unknown.push(UnknownKey {
                        section: Some("warp-routing"),
                        name: key.clone(),
                        suggestion,
                    });
                }
            }
            seen.push(key);
        }
        Ok(out)
    }
}

/// Reads a scalar as text and parses it *inside* the YAML reader's visitor, so that a
/// refusal carries the scalar's own line and column (an error raised after the reader
/// returned would only get the enclosing mapping's position).
fn parse_scalar<'de, D, T, E>(d: D, parse: impl FnOnce(&str) -> Result<T, E>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    struct V<F>(F);
    impl<'de, T, E, F> Visitor<'de> for V<F>
    where
        E: fmt::Display,
        F: FnOnce(&str) -> Result<T, E>,
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<Er: de::Error>(self, v: &str) -> Result<T, Er> {
            (self.0)(v).map_err(Er::custom)
        }
    }
    d.deserialize_str(V(parse))
}

/// A value parsed with its `FromStr`.
struct Parsed<T>(T);

impl<'de, T> de::Deserialize<'de> for Parsed<T>
where
    T: FromStr<Err = ValueError>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, str::parse).map(Parsed)
    }
}

/// `token`: parsed here, so a damaged token is reported at its line. The token's error
/// never quotes the token.
struct Token(TunnelToken);

impl<'de> de::Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, TunnelToken::parse).map(Token)
    }
}

/// `edge-ca-fingerprint`, in the credentials crate's form.
struct Fingerprint(CaFingerprint);

impl<'de> de::Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, |s| {
            s.trim()
                .parse::<CaFingerprint>()
                .map_err(|e| format!("not an edge CA fingerprint: {e}"))
        })
        .map(Fingerprint)
    }
}

/// `credentials-permissions`: `strict`, `default` or `lenient`, in any case.
struct Permissions(PermissionMode);

impl<'de> de::Deserialize<'de> for Permissions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, |s| {
            s.trim().to_ascii_lowercase().parse::<PermissionMode>()
        })
        .map(Permissions)
    }
}

struct ListenAddr(SocketAddr);

impl<'de> de::Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, parse_listen_addr).map(ListenAddr)
    }
}

struct GoDuration(Duration);

impl<'de> de::Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, parse_duration).map(GoDuration)
    }
}

/// `connectTimeout`: zero would fail every dial, so it is refused.
struct ConnectTimeout(Duration);

impl<'de> de::Deserialize<'de> for ConnectTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, |s| match parse_duration(s) {
            Ok(d) if d.is_zero() => Err("a zero connect timeout would fail every dial".to_owned()),
            Ok(d) => Ok(ConnectTimeout(d)),
            Err(e) => Err(e.to_string()),
        })
    }
}

/// `maxActiveFlows`: a count, 0 meaning no limit.
struct FlowCount(u64);

impl<'de> de::Deserialize<'de> for FlowCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of flows (0 for no limit)")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
                Ok(n)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("{n} is negative (use 0 for no limit)")))
            }
        }
        d.deserialize_any(V).map(FlowCount)
    }
}

struct HaConnections(u8);

impl<'de> de::Deserialize<'de> for HaConnections {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = u8;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a number from 1 to {MAX_HA_CONNECTIONS}")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<u8, E> {
                match u8::try_from(n) {
                    Ok(n) if (1..=MAX_HA_CONNECTIONS).contains(&n) => Ok(n),
                    _ => Err(E::custom(format!(
                        "{n} is out of range (1 to {MAX_HA_CONNECTIONS})"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<u8, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "{n} is out of range (1 to {MAX_HA_CONNECTIONS})"
                    ))),
                }
            }
        }
        d.deserialize_any(V).map(HaConnections)
    }
}

/// cloudflared accepts `edge` as one address or a list.
struct OneOrMany<T>(Vec<T>);

impl<'de, T> de::Deserialize<'de> for OneOrMany<T>
where
    T: FromStr<Err = ValueError>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: FromStr<Err = ValueError>> Visitor<'de> for V<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address or a list of addresses")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                // Raised inside the reader's visitor, so the position is the scalar's.
                v.parse().map(|x| vec![x]).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(Parsed(x)) = seq.next_element::<Parsed<T>>()? {
                    out.push(x);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("empty list of addresses"));
                }
                Ok(out)
            }
        }
        d.deserialize_any(V(PhantomData)).map(OneOrMany)
    }
}

struct AllowList(DestinationAllowList);

impl<'de> de::Deserialize<'de> for AllowList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Prefix(ipnet::IpNet);
        impl<'de> de::Deserialize<'de> for Prefix {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                parse_scalar(d, parse_prefix).map(Prefix)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<ipnet::IpNet>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CIDR or a list of CIDRs")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_prefix(v).map(|p| vec![p]).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(Prefix(p)) = seq.next_element()? {
                    out.push(p);
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "an empty list would refuse every destination; remove the key to allow all",
                    ));
                }
                Ok(out)
            }
        }
        let prefixes = d.deserialize_any(V)?;
        Ok(AllowList(DestinationAllowList::only(prefixes)))
    }
}

#[cfg(test)]
mod tests;
