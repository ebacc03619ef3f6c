//! Lists: named sets of IPs/CIDRs, domains, e-mail addresses or device ids that rules refer
//! to as `$<id without dashes>` or `$<slug>`.
//!
//! Items are stored as the operator wrote them (the edge keeps them that way) and parsed by
//! [`parse_list_item`], which is also how a list is validated. Domain, e-mail and device
//! items are normalised to ASCII lower case: lookups ignore ASCII case.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zt_routes::{FrozenPrefixSet, PrefixSet};

/// What a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListType {
    /// IPv4/IPv6 addresses and CIDRs.
    Ip,
    /// Domain names (exact match, ASCII case-insensitive).
    Domain,
    /// E-mail addresses (ASCII case-insensitive).
    Email,
    /// Device ids.
    Device,
}

impl fmt::Display for ListType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListType::Ip => "IP",
            ListType::Domain => "DOMAIN",
            ListType::Email => "EMAIL",
            ListType::Device => "DEVICE",
        })
    }
}

/// A list as the edge stores it.
///
/// ```
/// # use zt_policy::{List, ListType};
/// let list: List = serde_json::from_str(r#"{
///     "id": "0f5b1a8e-3c0d-4c52-9a43-2b7f3c1d9e10",
///     "name": "Kubernetes API IPs",
///     "type": "IP",
///     "items": ["198.51.100.101/32", "2001:DB8::101/128"]
/// }"#).unwrap();
/// assert_eq!(list.list_type, ListType::Ip);
/// list.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct List {
    /// Unique id; rules refer to it as `$` followed by the id's 32 hex digits.
    pub id: Uuid,
    /// Free-text name, e.g. "Kubernetes API IPs".
    pub name: String,
    /// Optional unique short name (`[a-z0-9_.]+`), usable as `$slug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// What the items are.
    #[serde(rename = "type")]
    pub list_type: ListType,
    /// The items, as written.
    #[serde(default)]
    pub items: Vec<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// One parsed list item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListItem {
    /// An address (as a /32 or /128) or a network.
    Net(IpNet),
    /// A domain name, lower case, without a trailing dot.
    Domain(String),
    /// An e-mail address, lower case.
    Email(String),
    /// A device id, lower case.
    Device(String),
}

/// A list item that does not parse as its list's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {list_type} list item `{item}`: {reason}")]
pub struct ListItemError {
    /// The list type the item was parsed as.
    pub list_type: ListType,
    /// The item as written.
    pub item: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Longest domain name (RFC 1035).
const MAX_DOMAIN_LEN: usize = 253;
/// Longest device id accepted; ids are UUIDs or similar short tokens.
const MAX_DEVICE_ID_LEN: usize = 128;

/// Parses one item of a list of type `list_type`, with an error naming the item.
///
/// ```
/// use zt_policy::{parse_list_item, ListItem, ListType};
///
/// assert_eq!(
///     parse_list_item(ListType::Ip, "2001:DB8::101/128").unwrap(),
///     ListItem::Net("2001:db8::101/128".parse().unwrap()),
/// );
/// assert_eq!(
///     parse_list_item(ListType::Domain, "API.Example.com.").unwrap(),
///     ListItem::Domain("api.example.com".into()),
/// );
/// let err = parse_list_item(ListType::Ip, "10.0.0.1/8").unwrap_err();
/// assert_eq!(err.to_string(), "invalid IP list item `10.0.0.1/8`: host bits are set; did you mean 10.0.0.0/8?");
/// ```
pub fn parse_list_item(list_type: ListType, item: &str) -> Result<ListItem, ListItemError> {
    let fail = |reason: String| ListItemError {
        list_type,
        item: item.to_owned(),
        reason,
    };
    let trimmed = item.trim();
    if trimmed.is_empty() {
        return Err(fail("empty item".into()));
    }
    match list_type {
        ListType::Ip => {
            if let Ok(ip) = trimmed.parse::<IpAddr>() {
                return Ok(ListItem::Net(IpNet::from(ip)));
            }
            let net: IpNet = trimmed
                .parse()
                .map_err(|_| fail("not an IP address or CIDR".into()))?;
            if net.trunc() != net {
                return Err(fail(format!(
                    "host bits are set; did you mean {}?",
                    net.trunc()
                )));
            }
            Ok(ListItem::Net(net))
        }
        ListType::Domain => {
            let d = trimmed.strip_suffix('.').unwrap_or(trimmed);
            check_domain(d).map_err(|r| fail(r.into()))?;
            Ok(ListItem::Domain(d.to_ascii_lowercase()))
        }
        ListType::Email => {
            let (local, domain) = trimmed
                .rsplit_once('@')
                .ok_or_else(|| fail("missing `@`".into()))?;
            if local.is_empty() || local.len() > 64 {
                return Err(fail(
                    "the part before `@` must be 1 to 64 characters".into(),
                ));
            }
            if !local.bytes().all(|b| {
                b.is_ascii_graphic()
                    && !matches!(
                        b,
                        b'@' | b'"' | b'(' | b')' | b',' | b';' | b'<' | b'>' | b'[' | b']' | b'\\'
                    )
            }) {
                return Err(fail(
                    "the part before `@` has a character e-mail addresses do not allow".into(),
                ));
            }
            check_domain(domain).map_err(|r| fail(format!("after `@`: {r}")))?;
            Ok(ListItem::Email(trimmed.to_ascii_lowercase()))
        }
        ListType::Device => {
            if trimmed.len() > MAX_DEVICE_ID_LEN
                || !trimmed
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
            {
                return Err(fail(format!(
                    "a device id is 1 to {MAX_DEVICE_ID_LEN} characters of letters, digits, `-`, `_`, `.` and `:`"
                )));
            }
            Ok(ListItem::Device(trimmed.to_ascii_lowercase()))
        }
    }
}

fn check_domain(d: &str) -> Result<(), &'static str> {
    if d.is_empty() || d.len() > MAX_DOMAIN_LEN {
        return Err("a domain name is 1 to 253 characters");
    }
    for label in d.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("labels may hold only letters, digits, `-` and `_`");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label may not start or end with `-`");
        }
    }
    Ok(())
}

/// A list that fails validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// The name is empty.
    #[error("list {id} has an empty name")]
    EmptyName {
        /// The list's id.
        id: Uuid,
    },
    /// The slug does not match `[a-z0-9_.]+`, or looks like a list id.
    #[error("list \"{list}\": invalid slug `{slug}`: {reason}")]
    BadSlug {
        /// The list's name.
        list: String,
        /// The slug.
        slug: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An item does not parse as the list's type.
    #[error("list \"{list}\", item {index}: {source}")]
    BadItem {
        /// The list's name.
        list: String,
        /// Position of the item (0-based).
        index: usize,
        /// The item's error.
        source: ListItemError,
    },
    /// Two lists share an id.
    #[error("lists \"{first}\" and \"{second}\" share the id {id}")]
    DuplicateId {
        /// The id.
        id: Uuid,
        /// Name of the first list.
        first: String,
        /// Name of the second list.
        second: String,
    },
    /// Two lists share a slug.
    #[error("lists \"{first}\" and \"{second}\" share the slug `{slug}`")]
    DuplicateSlug {
        /// The slug.
        slug: String,
        /// Name of the first list.
        first: String,
        /// Name of the second list.
        second: String,
    },
}

impl List {
    /// Checks the name, the slug and every item.
    pub fn validate(&self) -> Result<(), ListError> {
        self.parse_items().map(|_| ())
    }

    /// The reference rules use for this list by id: `$` + 32 lower-case hex digits.
    pub fn id_reference(&self) -> String {
        format!("${}", self.id.simple())
    }

    fn parse_items(&self) -> Result<Vec<ListItem>, ListError> {
        if self.name.trim().is_empty() {
            return Err(ListError::EmptyName { id: self.id });
        }
        if let Some(slug) = &self.slug {
            let reason = if slug.is_empty() {
                Some("it is empty")
            } else if !slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
            {
                Some("only `a-z`, `0-9`, `_` and `.` are allowed")
            } else if slug.len() == 32 && slug.bytes().all(|b| b.is_ascii_hexdigit()) {
                Some("32 hex digits would read as a list id")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(ListError::BadSlug {
                    list: self.name.clone(),
                    slug: slug.clone(),
                    reason,
                });
            }
        }
        self.items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                parse_list_item(self.list_type, item).map_err(|source| ListError::BadItem {
                    list: self.name.clone(),
                    index,
                    source,
                })
            })
            .collect()
    }
}

/// Validates lists together: each one, then ids and slugs unique across them.
pub fn validate_lists(lists: &[List]) -> Result<(), ListError> {
    let mut ids: HashMap<Uuid, &str> = HashMap::new();
    let mut slugs: HashMap<&str, &str> = HashMap::new();
    for l in lists {
        l.validate()?;
        if let Some(first) = ids.insert(l.id, &l.name) {
            return Err(ListError::DuplicateId {
                id: l.id,
                first: first.to_owned(),
                second: l.name.clone(),
            });
        }
        if let Some(slug) = &l.slug {
            if let Some(first) = slugs.insert(slug, &l.name) {
                return Err(ListError::DuplicateSlug {
                    slug: slug.clone(),
                    first: first.to_owned(),
                    second: l.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// A list in the form evaluation uses.
#[derive(Debug, Clone)]
pub(crate) enum CompiledList {
    Ip(IpMatcher),
    Names(HashSet<Box<str>>),
}

impl CompiledList {
    pub(crate) fn build(list: &List) -> Result<Self, ListError> {
        let items = list.parse_items()?;
        Ok(match list.list_type {
            ListType::Ip => {
                let set: PrefixSet = items
                    .into_iter()
                    .filter_map(|i| match i {
                        ListItem::Net(n) => Some(n),
                        _ => None,
                    })
                    .collect();
                CompiledList::Ip(IpMatcher::new(&set))
            }
            _ => CompiledList::Names(
                items
                    .into_iter()
                    .filter_map(|i| match i {
                        ListItem::Domain(s) | ListItem::Email(s) | ListItem::Device(s) => {
                            Some(s.into_boxed_str())
                        }
                        ListItem::Net(_) => None,
                    })
                    .collect(),
            ),
        })
    }

    /// Heap bytes of the lookup structure of an IP list (0 for other types).
    pub(crate) fn ip_lookup_bytes(&self) -> usize {
        match self {
            CompiledList::Ip(m) => m.lookup_bytes(),
            CompiledList::Names(_) => 0,
        }
    }

    pub(crate) fn contains_ip(&self, ip: IpAddr) -> bool {
        match self {
            CompiledList::Ip(m) => m.contains(ip),
            CompiledList::Names(_) => false,
        }
    }

    /// Whether the set holds `value`, ignoring ASCII case (items are stored lower case).
    pub(crate) fn contains_name(&self, value: &str) -> bool {
        match self {
            CompiledList::Names(set) => {
                if value.bytes().any(|b| b.is_ascii_uppercase()) {
                    set.contains(value.to_ascii_lowercase().as_str())
                } else {
                    set.contains(value)
                }
            }
            CompiledList::Ip(_) => false,
        }
    }
}

/// Few prefixes are tested one by one; a prefix trie is deep for a /128 (the seed's
/// list) and a short scan over masked addresses is faster up to about this many.
const SCAN_MAX: usize = 16;

/// An IP set in lookup form: a scan over (family, network, mask) for a few prefixes, the
/// compiled trie of `zt_routes` above that. Only the lookup form is kept, and it is built
/// here rather than on the first lookup so that cost stays off the first flow after a swap.
#[derive(Debug, Clone)]
pub(crate) enum IpMatcher {
    Scan(Box<[(bool, u128, u128)]>),
    Trie(Box<FrozenPrefixSet>),
}

fn bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(a.to_bits())),
        IpAddr::V6(a) => (true, a.to_bits()),
    }
}

impl IpMatcher {
    pub(crate) fn new(set: &PrefixSet) -> Self {
        if set.len() <= SCAN_MAX {
            IpMatcher::Scan(
                set.iter()
                    .map(|net| {
                        let (v6, addr) = bits(net.network());
                        let (_, mask) = bits(net.netmask());
                        (v6, addr, mask)
                    })
                    .collect(),
            )
        } else {
            IpMatcher::Trie(Box::new(set.frozen().clone()))
        }
    }

    #[inline]
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match self {
            IpMatcher::Scan(nets) => {
                let (v6, addr) = bits(ip);
                nets.iter()
                    .any(|&(f, net, mask)| f == v6 && addr & mask == net)
            }
            IpMatcher::Trie(t) => t.contains(ip),
        }
    }

    pub(crate) fn lookup_bytes(&self) -> usize {
        match self {
            IpMatcher::Scan(nets) => std::mem::size_of_val(&**nets),
            IpMatcher::Trie(t) => t.lookup_bytes(),
        }
    }
}
