//! The reader of `config.yaml`: one pass with hand-written visitors, so each value is
//! parsed where it stands and a refusal carries that value's line and column (zt-diag
//! turns the reader's error into key path, position and reason).
//!
//! Keys zt does not know are collected into [`UnknownKey`]s rather than failing the load:
//! cloudflared configurations carry many (ingress, loglevel, …) that mean nothing here.
//! [`ConnectorConfig::parse`](super::ConnectorConfig::parse) decides which of them are
//! errors (likely misspellings) and which only warnings.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use zt_creds::{CaFingerprint, PermissionMode, TunnelToken};
use zt_diag::{parse_scalar, suggest};

use super::{ConnectorConfig, WarpRouting, MAX_HA_CONNECTIONS};
use crate::duration::parse_duration;
use crate::values::{
    parse_listen_addr, parse_prefix, DestinationAllowList, EdgeAddr, EdgeProtocol, TunnelRef,
    ValueError,
};

/// Keys of cloudflared's configuration that have no meaning for zt's connector. They are
/// accepted so that a cloudflared `config.yaml` loads unchanged.
pub(super) const CLOUDFLARED_KEYS_IGNORED: &[&str] = &[
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

pub(super) const TOP_KEYS: &[&str] = &[
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

pub(super) const WARP_KEYS: &[&str] = &[
    "enabled",
    "connectTimeout",
    "tcpKeepAlive",
    "maxActiveFlows",
];

/// A key the visitor did not recognise.
pub(super) struct UnknownKey {
    /// The section it is in (`warp-routing`), or `None` at the top level.
    pub(super) section: Option<&'static str>,
    /// The key as written.
    pub(super) name: String,
    /// The known key it most likely misspells, which makes it an error.
    pub(super) suggestion: Option<&'static str>,
}

impl UnknownKey {
    /// The key path, `section.name`.
    pub(super) fn path(&self) -> String {
        match self.section {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// What the file says: every key `None` until written, so that a repeated key is noticed
/// and an absent one gets its default in [`RawConfig::into_config`].
#[derive(Default)]
pub(super) struct RawConfig {
    tunnel: Option<TunnelRef>,
    credentials_file: Option<PathBuf>,
    token: Option<TunnelToken>,
    metrics: Option<SocketAddr>,
    warp_routing: Option<WarpRouting>,
    protocol: Option<EdgeProtocol>,
    grace_period: Option<Duration>,
    ha_connections: Option<u8>,
    edge: Option<Vec<EdgeAddr>>,
    cacert: Option<PathBuf>,
    edge_ca_fingerprint: Option<CaFingerprint>,
    credentials_permissions: Option<PermissionMode>,
    allowed_destinations: Option<DestinationAllowList>,
}

impl RawConfig {
    /// The configuration, with defaults for every key not written.
    pub(super) fn into_config(self) -> ConnectorConfig {
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

/// Reads the whole document; keys it does not know go into `unknown`.
pub(super) struct RootSeed<'a> {
    pub(super) unknown: &'a mut Vec<UnknownKey>,
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
                "protocol" => set!(protocol, map.next_value::<Parsed<EdgeProtocol>>()?.0),
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
