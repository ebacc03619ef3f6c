//! The configuration file: its types (read from YAML by `zt`, sent as JSON to the edge),
//! its limits, and the checks that need the whole file (duplicate names, references by
//! name or `$slug`, networks, limits), each answered with the file, the key path, the line
//! and the column.
//!
//! The same types are the body of the admin API's `/v1/config/*` requests, read with
//! `deny_unknown_fields` there too, so the edge never trusts that the CLI checked anything.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use zt_diag::Location;

use crate::store::ListKind;

/// The format version this edge reads (`version: 1`).
pub const FORMAT_VERSION: u32 = 1;

/// Largest configuration file read, in bytes. It matches the admin API's body cap
/// ([`crate::MAX_ADMIN_BODY`], 1 MiB), which the resolved file must fit in anyway; lists
/// kept in `items_file` count towards [`MAX_RESOLVED_BYTES`] instead.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// Largest resolved file (lists from `items_file` included) as the JSON sent to the edge:
/// the admin API's body cap, less room for the request's other fields.
pub const MAX_RESOLVED_BYTES: usize = crate::MAX_ADMIN_BODY - 16 * 1024;

/// Most items in one list. 20,000 CIDRs compile into zt-routes' prefix set in a few
/// milliseconds and take about a megabyte at the edge; larger sets belong in routes.
pub const MAX_LIST_ITEMS: usize = 20_000;

/// Most list items in the whole file.
pub const MAX_TOTAL_ITEMS: usize = 50_000;

/// Most rules in the file. The edge compiles every rule on each change; 5,000 rules
/// compile in well under a second (see `BENCHMARKS.md`).
pub const MAX_RULES: usize = 5_000;

/// Most resources of any other kind (virtual networks, tunnels, routes, lists, users) and
/// most policy tests.
pub const MAX_RESOURCES: usize = 10_000;

/// Longest expression (`traffic`, `identity`, `device_posture`), in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 16 * 1024;

/// Deepest nesting of YAML collections accepted. The format itself nests four deep; the
/// reader's own recursion limit (128) guards the stack, this names the problem sooner.
pub const MAX_DEPTH: usize = 16;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConfigFile {
    /// The format version; must be [`FORMAT_VERSION`].
    pub version: u32,
    /// Virtual networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vnets: Vec<VnetSpec>,
    /// Tunnels, by name; their credentials are never in the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunnels: Vec<TunnelSpec>,
    /// Routes: a network in a virtual network, served by a tunnel named here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteSpec>,
    /// Gateway lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lists: Vec<ListSpec>,
    /// Gateway rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
    /// The users this file manages, with their groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserSpec>,
    /// Identity providers engineers sign in with (`zt login`). Client secrets are never in
    /// the file: a provider that needs one is given it with `zt idp add --client-secret-file`,
    /// and applying the file keeps it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_providers: Vec<IdpSpec>,
    /// Service tokens for pipelines, by name. Their secrets are never in the file: a token
    /// the apply creates has its credentials file written once, 0600, into
    /// `--credentials-dir`; one the file drops is revoked (with `--prune`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_tokens: Vec<ServiceTokenSpec>,
    /// Policy test cases, run before anything is applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<PolicyTest>,
}

/// A virtual network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VnetSpec {
    /// The name (its key).
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// Whether this is the default network (at most one is).
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
}

/// A tunnel, declared by name only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TunnelSpec {
    /// The name (its key).
    pub name: String,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteSpec {
    /// The network, such as `198.51.100.101/32`; no host bits.
    #[serde(deserialize_with = "network")]
    pub network: IpNet,
    /// The name of the tunnel serving it.
    pub tunnel: String,
    /// The virtual network's name; absent means the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnet: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

fn network<'de, D: serde::Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
    // Refused inside the reader's visitor, so the error points at the value itself.
    zt_diag::parse_scalar(d, |s| {
        let net = zt_routes::parse_network(s).map_err(|e| e.to_string())?;
        if net.trunc() != net {
            return Err(format!(
                "{s} has host bits set; routes name a network, so write {}",
                net.trunc()
            ));
        }
        Ok(net)
    })
}

/// A gateway list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ListSpec {
    /// The name (its key).
    pub name: String,
    /// The short name rules use as `$slug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// What the items are: `IP`, `DOMAIN`, `EMAIL`, `URL` or `SERIAL`.
    #[serde(rename = "type")]
    pub kind: ListKind,
    /// The items.
    #[serde(default)]
    pub items: Vec<String>,
    /// A file of more items, one per line (`#` starts a comment), relative to the
    /// configuration file; read by `zt` and sent inline, so the edge never reads files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_file: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A gateway rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RuleSpec {
    /// The name (its key).
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Lower runs first; unique per filter.
    pub precedence: i64,
    /// `allow`, `block` or `off`.
    pub action: String,
    /// Whether the rule takes part in evaluation.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The phases: `l4`, `http`, `dns`.
    pub filters: Vec<String>,
    /// The traffic expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<String>,
    /// The identity expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The device posture expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_posture: Option<String>,
}

/// A user the file manages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UserSpec {
    /// The email (its key, in any letter case).
    pub email: String,
    /// The groups the file gives the user.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A service token: a credential for a pipeline, with groups and an optional expiry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServiceTokenSpec {
    /// The name (its key, in any letter case), as the audit log and `identity.id` say it.
    pub name: String,
    /// The groups policy sees (`identity.groups`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// When it stops working, RFC 3339 (`2027-06-30T00:00:00Z`); absent: only when
    /// revoked. A date, not a duration, so applying the file again moves nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// An OpenID Provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct IdpSpec {
    /// The name (its key), as policy sees it (`identity.idp`).
    pub name: String,
    /// The issuer URL, exactly as the provider says it.
    pub issuer: String,
    /// The client id zt is registered under.
    pub client_id: String,
    /// Scopes asked for (`openid` is always sent).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim holding the groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Email domains allowed to sign in; empty allows any verified email.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_domains: Vec<String>,
    /// How long a sign-in lasts, in seconds (capped by the edge's
    /// `--max-session-lifetime`).
    #[serde(default = "default_session_length")]
    pub session_length_secs: u64,
    /// Extra CA certificates (PEM) for a provider behind a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

fn default_scopes() -> Vec<String> {
    crate::store::IdentityProvider::new("x", "https://x", "x").scopes
}

fn default_groups_claim() -> String {
    crate::store::DEFAULT_GROUPS_CLAIM.to_owned()
}

fn default_session_length() -> u64 {
    crate::store::DEFAULT_SESSION_LENGTH.as_secs()
}

/// A policy test case: a flow, and the decision the file's policy must give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicyTest {
    /// The case's name, printed when it fails.
    pub name: String,
    /// The user of the flow (their groups come from `users`); absent means no identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Groups to use instead of the user's (as an identity provider would give them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// The identity provider the user signed in through (`identity.idp`); absent means a
    /// device enrolled with `zt user add`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// The flow's source address (default 192.0.2.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<std::net::IpAddr>,
    /// The destination, `IP:PORT` (`[v6]:PORT`).
    pub destination: std::net::SocketAddr,
    /// `tcp` (default) or `udp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// The TLS server name or HTTP host the first bytes carry, for http rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The expected outcome: `allow` or `block`.
    pub expect: String,
    /// The rule expected to decide (the blocking rule, or the l4 rule that allowed);
    /// `default` for the phase's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The expected http phase: `off` (passed through uninspected), `allow` or `block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

fn yes() -> bool {
    true
}

fn tcp() -> String {
    "tcp".into()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Why a configuration file was refused. `Display` starts with `FILE:LINE:COLUMN:` when
/// the position is known, then the key path and the reason; [`ConfigError::excerpt`] is
/// the underlined line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{location}: {}{reason}", file.display(), zt_diag::KeyPrefix(key))]
#[non_exhaustive]
pub struct ConfigError {
    /// The file.
    pub file: Box<Path>,
    /// The key path, such as `rules[3].traffic`; empty for the file as a whole.
    pub key: String,
    /// Where in the file.
    pub location: Location,
    /// What is wrong.
    pub reason: String,
    /// The underlined line, when the position is known.
    pub excerpt: Option<Box<str>>,
}

impl ConfigError {
    fn new(file: &Path, text: &str, key: String, location: Location, reason: String) -> Self {
        Self {
            file: file.into(),
            excerpt: zt_diag::underline(text, location).map(String::into_boxed_str),
            key,
            location,
            reason,
        }
    }

    /// The message and, on the following lines, the underlined excerpt.
    pub fn report(&self) -> String {
        match &self.excerpt {
            Some(e) => format!("{self}\n{e}"),
            None => self.to_string(),
        }
    }
}

/// A file's text with its name, for errors.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    /// The first place `value` is written on or after line `from` (1-based).
    fn locate_text(&self, value: &str, from: usize) -> Location {
        for (i, line) in self.text.lines().enumerate().skip(from.saturating_sub(1)) {
            if let Some(byte) = line.find(value) {
                let column = line[..byte].chars().count() + 1;
                return Location::new(Some(i + 1), Some(column));
            }
        }
        Location::default()
    }

    fn err(&self, key: impl Into<String>, at: Location, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(self.path, self.text, key.into(), at, reason.into())
    }

    /// The `nth` line setting `key` to `value` (as `key: value`, `- key: value`, quoted or
    /// not). Textual, like [`zt_diag::locate_key`]: it points a person at a line, and
    /// decides nothing.
    fn locate(&self, key: &str, value: &str, mut nth: usize) -> Location {
        for (i, line) in self.text.lines().enumerate() {
            let trimmed = line.trim_start();
            let body = trimmed.strip_prefix("- ").unwrap_or(trimmed).trim_start();
            let Some(rest) = body.strip_prefix(key) else {
                continue;
            };
            let Some(v) = rest.trim_start().strip_prefix(':') else {
                continue;
            };
            let v = v.split(" #").next().unwrap_or("").trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            if v == value || (!value.is_empty() && v.contains(value)) {
                if nth == 0 {
                    let column = line.len() - body.len() + 1;
                    return Location::new(Some(i + 1), Some(column));
                }
                nth -= 1;
            }
        }
        Location::default()
    }
}

/// How deep the YAML text nests flow and block collections, counted by indentation and
/// brackets without parsing: enough to refuse a hostile file before the reader builds it.
fn nesting_depth(text: &str) -> usize {
    let mut deepest = 0;
    let mut indents: Vec<usize> = Vec::new();
    // Inside a block scalar (`key: |`), the lines indented deeper than its key are text.
    let mut block_owner: Option<usize> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(owner) = block_owner {
            if trimmed.is_empty() || indent > owner {
                continue;
            }
            block_owner = None;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let value = trimmed.split(" #").next().unwrap_or("").trim_end();
        if let Some(last) = value.rsplit(' ').next() {
            let header = last.trim_start_matches(['|', '>']);
            let is_block = last.starts_with(['|', '>'])
                && header
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '-' || c == '+')
                && (value.len() == last.len()
                    || value[..value.len() - last.len()].ends_with(": ")
                    || value[..value.len() - last.len()].ends_with("- "));
            if is_block {
                block_owner = Some(indent);
            }
        }
        while indents.last().is_some_and(|&i| i >= indent) {
            indents.pop();
        }
        indents.push(indent);
        // A bracket opens a flow collection only where a value starts (after `key: `,
        // `- `, `[`, `{` or `,`) or inside one; in a plain scalar it is text, as in the
        // expression `any(http.conn.dst_ip[*] in $list)`.
        let mut flow = 0usize;
        let mut flow_max = 0usize;
        let mut in_quote: Option<char> = None;
        let mut value_start = true;
        let mut leading_dashes = true;
        let mut prev = ' ';
        for c in trimmed.chars() {
            if leading_dashes && c != '-' && c != ' ' {
                leading_dashes = false;
            }
            match (in_quote, c) {
                (Some(q), c) if c == q => in_quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') if value_start || flow > 0 => in_quote = Some(c),
                (None, '#') if prev == ' ' => break,
                (None, '[' | '{') if value_start || flow > 0 => {
                    flow += 1;
                    flow_max = flow_max.max(flow);
                    value_start = true;
                }
                (None, ']' | '}') if flow > 0 => flow -= 1,
                (None, ',') if flow > 0 => value_start = true,
                (None, ' ') => {
                    if prev == ':' || (prev == '-' && leading_dashes) {
                        value_start = true;
                    }
                }
                (None, ':') => value_start = false,
                _ => value_start = false,
            }
            prev = c;
        }
        // "- - - x" nests one sequence per dash.
        let dashes = trimmed
            .split(' ')
            .take_while(|t| *t == "-")
            .count()
            .saturating_sub(1);
        deepest = deepest.max(indents.len() + flow_max + dashes);
    }
    deepest
}

/// Reads a configuration file from disk: its size is checked before reading it all, and
/// `items_file` lists are read relative to it.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let io = |p: &Path, e: std::io::Error, what: &str| ConfigError {
        file: p.into(),
        key: String::new(),
        location: Location::default(),
        reason: format!("cannot {what}: {e}"),
        excerpt: None,
    };
    let text = read_bounded(path, MAX_FILE_BYTES).map_err(|e| io(path, e, "read the file"))?;
    let mut file = parse(path, &text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let source = Source { path, text: &text };
    let mut total: usize = file.lists.iter().map(|l| l.items.len()).sum();
    for (i, list) in file.lists.iter_mut().enumerate() {
        let Some(rel) = list.items_file.take() else {
            continue;
        };
        let key = format!("lists[{i}].items_file");
        let at = source.locate("items_file", &rel, 0);
        let items_path = base.join(&rel);
        let items_text = read_bounded(&items_path, MAX_RESOLVED_BYTES).map_err(|e| {
            source.err(
                &key,
                at,
                format!("cannot read {}: {e}", items_path.display()),
            )
        })?;
        for line in items_text.lines() {
            let item = line.split('#').next().unwrap_or("").trim();
            if item.is_empty() {
                continue;
            }
            if list.items.len() >= MAX_LIST_ITEMS || total >= MAX_TOTAL_ITEMS {
                return Err(source.err(
                    &key,
                    at,
                    format!(
                        "list `{}` is over the limit of {MAX_LIST_ITEMS} items per list ({MAX_TOTAL_ITEMS} in the whole file) with {}",
                        list.name,
                        items_path.display()
                    ),
                ));
            }
            list.items.push(item.to_owned());
            total += 1;
        }
    }
    check_list_items(&source, &file)?;
    Ok(file)
}

fn read_bounded(path: &Path, limit: usize) -> Result<String, std::io::Error> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(limit as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than the limit of {limit} bytes"),
        ));
    }
    String::from_utf8(buf)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8"))
}

/// Parses and checks a configuration file's text (`path` is only used in errors).
/// Lists' `items_file` are left unread; [`load`] reads them.
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
    let source = Source { path, text };
    if text.len() > MAX_FILE_BYTES {
        return Err(source.err(
            "",
            Location::default(),
            format!(
                "the file is {} bytes, over the limit of {MAX_FILE_BYTES} bytes",
                text.len()
            ),
        ));
    }
    let depth = nesting_depth(text);
    if depth > MAX_DEPTH {
        return Err(source.err(
            "",
            Location::default(),
            format!("the file nests {depth} levels deep, over the limit of {MAX_DEPTH}"),
        ));
    }
    let file: ConfigFile = zt_diag::from_yaml_str(text).map_err(|e| {
        let mut at = e.location();
        if !at.is_known() {
            // Unknown keys come without a position; point at the key.
            if let Some(k) = e
                .reason
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
            {
                at = zt_diag::locate_key(text, k);
            }
        }
        // The reader names the enclosing mapping in the reason of an unknown field,
        // which the key path already says.
        let mut reason = e.reason.clone();
        if let Some((head, rest)) = reason.split_once(": ") {
            if !head.is_empty() && e.key.starts_with(head) {
                reason = rest.to_owned();
            }
        }
        source.err(e.key.clone(), at, reason)
    })?;
    check(&source, &file)?;
    check_list_items(&source, &file)?;
    check_policy(&source, &file)?;
    Ok(file)
}

/// Checks a file received as JSON by the admin API: the same checks as [`parse`], with
/// `request` naming the body in errors.
pub fn check_json(file: &ConfigFile) -> Result<(), ConfigError> {
    let source = Source {
        path: Path::new("request"),
        text: "",
    };
    check(&source, file)?;
    check_list_items(&source, file)
}

fn check(s: &Source<'_>, f: &ConfigFile) -> Result<(), ConfigError> {
    if f.version != FORMAT_VERSION {
        return Err(s.err(
            "version",
            zt_diag::locate_key(s.text, "version"),
            format!(
                "format version {} is not known; this zt reads version {FORMAT_VERSION}",
                f.version
            ),
        ));
    }
    let counts = [
        ("vnets", f.vnets.len(), MAX_RESOURCES),
        ("tunnels", f.tunnels.len(), MAX_RESOURCES),
        ("routes", f.routes.len(), MAX_RESOURCES),
        ("lists", f.lists.len(), MAX_RESOURCES),
        ("rules", f.rules.len(), MAX_RULES),
        ("users", f.users.len(), MAX_RESOURCES),
        (
            "identity_providers",
            f.identity_providers.len(),
            MAX_RESOURCES,
        ),
        ("service_tokens", f.service_tokens.len(), MAX_RESOURCES),
        ("tests", f.tests.len(), MAX_RESOURCES),
    ];
    for (key, n, limit) in counts {
        if n > limit {
            return Err(s.err(
                key,
                zt_diag::locate_key(s.text, key),
                format!("{n} entries, over the limit of {limit}"),
            ));
        }
    }
    let dup = |section: &str, field: &str, names: Vec<String>| -> Result<(), ConfigError> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, n) in names.iter().enumerate() {
            let folded = if field == "email" {
                n.to_lowercase()
            } else {
                n.clone()
            };
            if let Some(first) = seen.insert(folded, i) {
                return Err(s.err(
                    format!("{section}[{i}].{field}"),
                    s.locate(field, n, count_before(&names, i, n)),
                    format!("{field} `{n}` is used twice (also {section}[{first}])"),
                ));
            }
        }
        Ok(())
    };
    dup(
        "vnets",
        "name",
        f.vnets.iter().map(|v| v.name.clone()).collect(),
    )?;
    dup(
        "tunnels",
        "name",
        f.tunnels.iter().map(|v| v.name.clone()).collect(),
    )?;
    dup(
        "lists",
        "name",
        f.lists.iter().map(|v| v.name.clone()).collect(),
    )?;
    dup(
        "lists",
        "slug",
        f.lists.iter().filter_map(|v| v.slug.clone()).collect(),
    )?;
    dup(
        "rules",
        "name",
        f.rules.iter().map(|v| v.name.clone()).collect(),
    )?;
    dup(
        "users",
        "email",
        f.users.iter().map(|v| v.email.clone()).collect(),
    )?;
    dup(
        "identity_providers",
        "name",
        f.identity_providers
            .iter()
            .map(|v| v.name.to_lowercase())
            .collect(),
    )?;
    for (i, p) in f.identity_providers.iter().enumerate() {
        let mut record = crate::store::IdentityProvider::new(&p.name, &p.issuer, &p.client_id);
        record.scopes = p.scopes.clone();
        record.groups_claim = p.groups_claim.clone();
        record.allowed_domains = p.allowed_domains.clone();
        record.session_length_secs = p.session_length_secs;
        if let Err(reason) = crate::store::check_record(&record) {
            return Err(s.err(
                format!("identity_providers[{i}]"),
                s.locate("name", &p.name, 0),
                reason.to_owned(),
            ));
        }
    }
    dup(
        "service_tokens",
        "name",
        f.service_tokens
            .iter()
            .map(|v| v.name.to_lowercase())
            .collect(),
    )?;
    for (i, t) in f.service_tokens.iter().enumerate() {
        let expires_at = match &t.expires_at {
            None => None,
            Some(text) => match crate::timestamp::Timestamp::parse_rfc3339(text) {
                Some(at) => Some(at),
                None => {
                    return Err(s.err(
                        format!("service_tokens[{i}].expires_at"),
                        s.locate("expires_at", text, 0),
                        format!("`{text}` is not an RFC 3339 time such as 2027-06-30T00:00:00Z"),
                    ))
                }
            },
        };
        let record = crate::store::ServiceToken::new(
            t.name.clone(),
            t.groups.clone(),
            &zt_creds::TunnelSecret::generate(),
            expires_at,
        );
        if let Err(reason) = crate::store::check_record(&record) {
            return Err(s.err(
                format!("service_tokens[{i}]"),
                s.locate("name", &t.name, 0),
                reason.to_owned(),
            ));
        }
    }
    dup(
        "tests",
        "name",
        f.tests.iter().map(|v| v.name.clone()).collect(),
    )?;

    for (section, names) in [
        ("vnets", f.vnets.iter().map(|v| &v.name).collect::<Vec<_>>()),
        ("tunnels", f.tunnels.iter().map(|v| &v.name).collect()),
        ("lists", f.lists.iter().map(|v| &v.name).collect()),
        ("rules", f.rules.iter().map(|v| &v.name).collect()),
    ] {
        for (i, name) in names.iter().enumerate() {
            let bad = if name.trim().is_empty() {
                Some("is empty")
            } else if name.len() > crate::MAX_NAME_LEN {
                Some("is longer than 255 bytes")
            } else if name.chars().any(char::is_control) {
                Some("contains control characters")
            } else if name.trim() != name.as_str() {
                Some("starts or ends with white space")
            } else {
                None
            };
            if let Some(bad) = bad {
                return Err(s.err(
                    format!("{section}[{i}].name"),
                    s.locate("name", name, 0),
                    format!("the name {bad}"),
                ));
            }
        }
    }
    if f.vnets.iter().filter(|v| v.default).count() > 1 {
        let second = f.vnets.iter().filter(|v| v.default).nth(1).map(|v| &v.name);
        return Err(s.err(
            "vnets",
            s.locate("default", "true", 1),
            format!(
                "more than one virtual network is the default (`{}` too); at most one is",
                second.map(String::as_str).unwrap_or("")
            ),
        ));
    }
    let vnets: HashSet<&str> = f.vnets.iter().map(|v| v.name.as_str()).collect();
    let tunnel_names: HashSet<&str> = f.tunnels.iter().map(|t| t.name.as_str()).collect();
    let mut routes: HashSet<(Option<&str>, IpNet)> = HashSet::new();
    for (i, r) in f.routes.iter().enumerate() {
        if !tunnel_names.contains(r.tunnel.as_str()) {
            let known: Vec<&str> = f.tunnels.iter().map(|t| t.name.as_str()).collect();
            return Err(s.err(
                format!("routes[{i}].tunnel"),
                s.locate("tunnel", &r.tunnel, 0),
                format!(
                    "no tunnel named `{}` in `tunnels`{}",
                    r.tunnel,
                    did_you_mean(&r.tunnel, &known)
                ),
            ));
        }
        if let Some(v) = &r.vnet {
            if !vnets.contains(v.as_str()) {
                return Err(s.err(
                    format!("routes[{i}].vnet"),
                    s.locate("vnet", v, 0),
                    format!("no virtual network named `{v}` in `vnets`"),
                ));
            }
        }
        // A route without a vnet is in the default network, wherever that is.
        let vnet_key = r
            .vnet
            .as_deref()
            .filter(|v| !f.vnets.iter().any(|x| x.name == *v && x.default));
        if !routes.insert((vnet_key, r.network)) {
            return Err(s.err(
                format!("routes[{i}].network"),
                s.locate("network", &r.network.to_string(), 1),
                format!("{} is routed twice in the same virtual network", r.network),
            ));
        }
    }
    let slugs: Vec<&str> = f.lists.iter().filter_map(|l| l.slug.as_deref()).collect();
    for (i, l) in f.lists.iter().enumerate() {
        if let Some(slug) = &l.slug {
            let ok = !slug.is_empty()
                && slug.len() <= 64
                && slug
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(s.err(
                    format!("lists[{i}].slug"),
                    s.locate("slug", slug, 0),
                    "a slug is 1 to 64 ASCII letters, digits, '_' or '-'",
                ));
            }
        }
        if l.items.len() > MAX_LIST_ITEMS {
            return Err(s.err(
                format!("lists[{i}].items"),
                s.locate("name", &l.name, 0),
                format!(
                    "list `{}` has {} items, over the limit of {MAX_LIST_ITEMS} per list",
                    l.name,
                    l.items.len()
                ),
            ));
        }
    }
    let total: usize = f.lists.iter().map(|l| l.items.len()).sum();
    if total > MAX_TOTAL_ITEMS {
        return Err(s.err(
            "lists",
            zt_diag::locate_key(s.text, "lists"),
            format!("{total} list items in all, over the limit of {MAX_TOTAL_ITEMS}"),
        ));
    }
    for (i, r) in f.rules.iter().enumerate() {
        for (slot, expr) in [
            ("traffic", &r.traffic),
            ("identity", &r.identity),
            ("device_posture", &r.device_posture),
        ] {
            let Some(expr) = expr else { continue };
            if expr.len() > MAX_EXPRESSION_BYTES {
                return Err(s.err(
                    format!("rules[{i}].{slot}"),
                    s.locate("name", &r.name, 0),
                    format!(
                        "the expression is {} bytes, over the limit of {MAX_EXPRESSION_BYTES}",
                        expr.len()
                    ),
                ));
            }
            // `$name` references must name a list of this file (by slug, or by id when
            // the list is not in the file, which the edge then checks).
            for reference in dollar_refs(expr) {
                let is_id =
                    reference.len() == 32 && reference.bytes().all(|b| b.is_ascii_hexdigit());
                if !is_id && !slugs.contains(&reference) {
                    return Err(s.err(
                        format!("rules[{i}].{slot}"),
                        s.locate(slot, &format!("${reference}"), 0),
                        format!(
                            "`${reference}` names no list slug in `lists`{}",
                            did_you_mean(reference, &slugs)
                        ),
                    ));
                }
            }
        }
    }
    let users: HashSet<String> = f.users.iter().map(|u| u.email.to_lowercase()).collect();
    for (i, t) in f.tests.iter().enumerate() {
        if let Some(u) = &t.user {
            if !users.contains(&u.to_lowercase()) && t.groups.is_none() {
                return Err(s.err(
                    format!("tests[{i}].user"),
                    s.locate("user", u, 0),
                    format!("`{u}` is not in `users`; add it there or give the case `groups`"),
                ));
            }
        }
        if !matches!(t.expect.as_str(), "allow" | "block") {
            return Err(s.err(
                format!("tests[{i}].expect"),
                s.locate("expect", &t.expect, 0),
                format!("`{}`: expect `allow` or `block`", t.expect),
            ));
        }
        if !matches!(t.protocol.as_str(), "tcp" | "udp") {
            return Err(s.err(
                format!("tests[{i}].protocol"),
                s.locate("protocol", &t.protocol, 0),
                format!("`{}`: use `tcp` or `udp`", t.protocol),
            ));
        }
        if let Some(h) = &t.http {
            if !matches!(h.as_str(), "off" | "allow" | "block") {
                return Err(s.err(
                    format!("tests[{i}].http"),
                    s.locate("http", h, 0),
                    format!("`{h}`: expect `off`, `allow` or `block`"),
                ));
            }
        }
        if let Some(rule) = &t.rule {
            if rule != "default" && !f.rules.iter().any(|r| &r.name == rule) {
                let known: Vec<&str> = f.rules.iter().map(|r| r.name.as_str()).collect();
                return Err(s.err(
                    format!("tests[{i}].rule"),
                    s.locate("rule", rule, 0),
                    format!(
                        "no rule named `{rule}` in `rules`{}",
                        did_you_mean(rule, &known)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// List items checked as the edge's policy engine reads them (CIDRs, domains, emails), so
/// a bad item is named by list and index before anything is sent.
fn check_list_items(s: &Source<'_>, f: &ConfigFile) -> Result<(), ConfigError> {
    for (i, l) in f.lists.iter().enumerate() {
        if l.items.len() > MAX_LIST_ITEMS {
            return Err(s.err(
                format!("lists[{i}].items"),
                s.locate("name", &l.name, 0),
                format!(
                    "list `{}` has {} items, over the limit of {MAX_LIST_ITEMS} per list",
                    l.name,
                    l.items.len()
                ),
            ));
        }
        let Some(list_type) = crate::policy_records::list_type(l.kind) else {
            continue;
        };
        let candidate = zt_policy::List {
            id: uuid::Uuid::nil(),
            name: l.name.clone(),
            slug: None,
            list_type,
            items: l.items.clone(),
            description: String::new(),
        };
        if let Err(e) = zt_policy::ListSet::build(&[candidate]) {
            let text = e.to_string();
            let list_at = s.locate("name", &l.name, 0);
            let at = l
                .items
                .iter()
                .find(|item| text.contains(&format!("`{item}`")))
                .map(|item| s.locate_text(item, list_at.line.unwrap_or(1)))
                .filter(Location::is_known)
                .unwrap_or(list_at);
            return Err(s.err(format!("lists[{i}].items"), at, text));
        }
    }
    Ok(())
}

/// The file's rules compiled against its lists, as the edge will compile them; an
/// expression error points at the expression's line and the offending text in it.
fn check_policy(s: &Source<'_>, f: &ConfigFile) -> Result<(), ConfigError> {
    use crate::policy_records::PolicyBuildError;
    use zt_policy::{CompileError, ExprSlot, RuleError};
    let (lists, rules) = super::policy_tests::records(f);
    let err = match crate::policy_records::compile_policy(
        &lists,
        &rules,
        zt_policy::PolicyConfig::default(),
    ) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let rule_at = |name: &str| {
        let i = f.rules.iter().position(|r| r.name == name).unwrap_or(0);
        (i, s.locate("name", name, 0))
    };
    Err(match err {
        PolicyBuildError::Compile(CompileError::Expression {
            rule,
            slot,
            filter,
            error,
            ..
        }) => {
            let key = match slot {
                ExprSlot::Identity => "identity",
                ExprSlot::DevicePosture => "device_posture",
                _ => "traffic",
            };
            let (i, at) = rule_at(&rule);
            let span = error.span();
            let offending = error.source_text().get(span.clone()).unwrap_or("");
            // The slot's line after the rule's name, then the offending text on it.
            let slot_line = s
                .text
                .lines()
                .enumerate()
                .skip(at.line.unwrap_or(1))
                .find(|(_, l)| {
                    let t = l.trim_start();
                    t.strip_prefix(key)
                        .is_some_and(|r| r.trim_start().starts_with(':'))
                })
                .map(|(n, _)| n + 1);
            let loc = match slot_line {
                Some(n) if !offending.trim().is_empty() => {
                    let found = s.locate_text(offending.trim(), n);
                    if found.line == Some(n) {
                        found
                    } else {
                        Location::new(Some(n), None)
                    }
                }
                Some(n) => Location::new(Some(n), None),
                None => at,
            };
            s.err(
                format!("rules[{i}].{key}"),
                loc,
                format!("{} (rule `{rule}`, {filter} filter)", error.kind()),
            )
        }
        PolicyBuildError::Compile(CompileError::Rule(RuleError::DuplicatePrecedence {
            filter,
            precedence,
            first,
            second,
        })) => {
            let (i, at) = rule_at(&second);
            s.err(
                format!("rules[{i}].precedence"),
                at,
                format!(
                    "rules `{first}` and `{second}` both have precedence {precedence} in the {filter} filter"
                ),
            )
        }
        other => s.err(
            "rules",
            zt_diag::locate_key(s.text, "rules"),
            other.to_string(),
        ),
    })
}

fn count_before(names: &[String], i: usize, n: &str) -> usize {
    names[..i].iter().filter(|x| x.as_str() == n).count()
}

fn did_you_mean(name: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (strsim_like(name, k), *k))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, k)) => format!("; did you mean `{k}`?"),
        None => String::new(),
    }
}

/// Edit distance (Levenshtein), for did-you-mean on names the file defines (zt-diag's
/// `suggest` takes only static key tables).
fn strsim_like(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The `$name` references of an expression, outside string literals.
pub(crate) fn dollar_refs(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => in_str = !in_str,
            b'\\' if in_str => i += 1,
            b'$' if !in_str => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric()
                        || bytes[end] == b'_'
                        || bytes[end] == b'-')
                {
                    end += 1;
                }
                if end > start {
                    out.push(&expr[start..end]);
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The SHA-256 of a file's resolved content (its canonical JSON), as the edge stores it
/// after an apply: two files that say the same thing hash the same.
pub fn file_hash(file: &ConfigFile) -> String {
    let mut canonical = file.clone();
    canonical.tests.clear();
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    crate::hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref())
}

impl fmt::Display for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} virtual networks, {} tunnels, {} routes, {} lists, {} rules, {} users, {} identity providers, {} service tokens, {} tests",
            self.vnets.len(),
            self.tunnels.len(),
            self.routes.len(),
            self.lists.len(),
            self.rules.len(),
            self.users.len(),
            self.identity_providers.len(),
            self.service_tokens.len(),
            self.tests.len()
        )
    }
}

/// Writes `file` as YAML in the file's own format, resources in a stable order.
pub fn to_yaml(file: &ConfigFile) -> String {
    // serde_norway writes exactly the serde shape, which `parse` reads back.
    serde_norway::to_string(file).unwrap_or_default()
}
