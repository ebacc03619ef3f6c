//! The field scheme: every field an expression may name, its type, and when it is known.

use std::fmt;

use crate::list::ListType;

/// The type of a field in the expression language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FieldType {
    /// An IPv4 or IPv6 address.
    Ip,
    /// A non-negative integer (ports, seconds).
    Int,
    /// A UTF-8 string.
    String,
    /// A boolean; usable alone as a condition.
    Bool,
    /// An array of IP addresses, compared element-wise with `field[*]` inside `any`/`all`.
    IpArray,
    /// An array of strings, compared element-wise with `field[*]` inside `any`/`all`.
    StringArray,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::Ip => "IP",
            FieldType::Int => "integer",
            FieldType::String => "string",
            FieldType::Bool => "boolean",
            FieldType::IpArray => "IP array",
            FieldType::StringArray => "string array",
        })
    }
}

impl FieldType {
    /// The type of one element (`field[*]`), or the type itself for scalars.
    pub(crate) fn element(self) -> FieldType {
        match self {
            FieldType::IpArray => FieldType::Ip,
            FieldType::StringArray => FieldType::String,
            other => other,
        }
    }

    pub(crate) fn is_array(self) -> bool {
        matches!(self, FieldType::IpArray | FieldType::StringArray)
    }
}

/// A resolved field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum FieldId {
    SrcIp,
    DstIp,
    DstPort,
    Protocol,
    Vnet,
    Sni,
    SessionAge,
    DnsFqdn,
    HttpConnDstIp,
    HttpConnSrcIp,
    HttpHost,
    IdentityEmail,
    IdentityId,
    IdentityIdp,
    IdentityGroups,
    DeviceId,
    Posture(Box<str>),
}

/// The fixed fields, by name. `device.posture.<check>` is handled apart.
const FIXED: &[(&str, FieldId, FieldType)] = &[
    ("net.src.ip", FieldId::SrcIp, FieldType::Ip),
    ("net.dst.ip", FieldId::DstIp, FieldType::Ip),
    ("net.dst.port", FieldId::DstPort, FieldType::Int),
    ("net.protocol", FieldId::Protocol, FieldType::String),
    ("net.vnet", FieldId::Vnet, FieldType::String),
    ("net.sni", FieldId::Sni, FieldType::String),
    ("session.age_seconds", FieldId::SessionAge, FieldType::Int),
    ("dns.fqdn", FieldId::DnsFqdn, FieldType::String),
    (
        "http.conn.dst_ip",
        FieldId::HttpConnDstIp,
        FieldType::IpArray,
    ),
    (
        "http.conn.src_ip",
        FieldId::HttpConnSrcIp,
        FieldType::IpArray,
    ),
    ("http.request.host", FieldId::HttpHost, FieldType::String),
    ("identity.email", FieldId::IdentityEmail, FieldType::String),
    ("identity.id", FieldId::IdentityId, FieldType::String),
    ("identity.idp", FieldId::IdentityIdp, FieldType::String),
    (
        "identity.groups",
        FieldId::IdentityGroups,
        FieldType::StringArray,
    ),
    ("device.id", FieldId::DeviceId, FieldType::String),
];

const POSTURE_PREFIX: &str = "device.posture.";

/// The type of a field of the scheme, or `None` if there is no such field.
///
/// ```
/// use zt_policy::{field_type, FieldType};
///
/// assert_eq!(field_type("net.dst.port"), Some(FieldType::Int));
/// assert_eq!(field_type("device.posture.disk_encrypted"), Some(FieldType::Bool));
/// assert_eq!(field_type("net.dst.prot"), None);
/// ```
pub fn field_type(name: &str) -> Option<FieldType> {
    lookup(name).map(|(_, t)| t)
}

/// Names of the fixed fields of the scheme (`device.posture.<check>` is open-ended).
pub fn field_names() -> impl Iterator<Item = &'static str> {
    FIXED.iter().map(|(n, _, _)| *n)
}

pub(crate) fn lookup(name: &str) -> Option<(FieldId, FieldType)> {
    if let Some(check) = name.strip_prefix(POSTURE_PREFIX) {
        if !check.is_empty() && !check.contains('.') {
            return Some((FieldId::Posture(check.into()), FieldType::Bool));
        }
        return None;
    }
    FIXED
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, id, t)| (id.clone(), *t))
}

/// A known field whose name is within a small edit distance of `name`.
pub(crate) fn suggest(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("device.posture") {
        if rest.is_empty() || rest == "." {
            return Some("device.posture.<check name>".to_owned());
        }
    }
    let candidates = FIXED
        .iter()
        .map(|(n, _, _)| *n)
        .chain(["device.posture.<check>"]);
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Where in a flow's life an expression is evaluated; decides which fields are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Stage {
    /// At flow open: connection fields only.
    L4,
    /// The http `off` step: still nothing read from the flow.
    HttpOff,
    /// The http allow/block step: the first bytes have been read.
    HttpInspect,
    /// A DNS query.
    Dns,
}

impl Stage {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Stage::L4 => "in the l4 filter (it runs at flow open, before any bytes are read)",
            Stage::HttpOff => {
                "to `off` rules (they run before the first bytes are read; only connection, identity and device fields are known)"
            }
            Stage::HttpInspect => "in the http filter",
            Stage::Dns => "in the dns filter",
        }
    }
}

impl FieldId {
    pub(crate) fn available(&self, stage: Stage) -> bool {
        match self {
            FieldId::HttpConnDstIp | FieldId::HttpConnSrcIp => {
                matches!(stage, Stage::HttpOff | Stage::HttpInspect)
            }
            FieldId::HttpHost | FieldId::Sni => stage == Stage::HttpInspect,
            FieldId::DnsFqdn => stage == Stage::Dns,
            _ => true,
        }
    }

    pub(crate) fn is_identity(&self) -> bool {
        matches!(
            self,
            FieldId::IdentityEmail
                | FieldId::IdentityId
                | FieldId::IdentityIdp
                | FieldId::IdentityGroups
        )
    }

    pub(crate) fn is_device(&self) -> bool {
        matches!(self, FieldId::DeviceId | FieldId::Posture(_))
    }

    /// The list type `field in $list` accepts, if any.
    pub(crate) fn list_type(&self) -> Option<ListType> {
        match self {
            FieldId::SrcIp | FieldId::DstIp | FieldId::HttpConnDstIp | FieldId::HttpConnSrcIp => {
                Some(ListType::Ip)
            }
            FieldId::IdentityEmail => Some(ListType::Email),
            FieldId::DeviceId => Some(ListType::Device),
            FieldId::HttpHost | FieldId::Sni | FieldId::DnsFqdn => Some(ListType::Domain),
            _ => None,
        }
    }
}
