//! The typed records of the edge state.
//!
//! Expressions, list items and rule actions are kept as the strings the operator wrote:
//! zt-policy parses and checks them when the edge compiles its policy, so the store never
//! needs to know the expression language. Secrets are never stored: a tunnel or device keeps
//! the key derived from its secret ([`AuthKey`]), and a tunnel that opts in to cloudflared
//! connectors keeps a SHA-256 of its secret.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use ring::digest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use uuid::Uuid;
use zt_creds::{AuthKey, DevicePublicKey, TunnelSecret};

use super::backend::Table;
use super::seal::{SealError, SealedSecret, SecretsKey};
use crate::hex;
use crate::timestamp::Timestamp;

/// The kinds of record the state holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordKind {
    /// [`Tunnel`].
    Tunnel,
    /// [`VirtualNetwork`].
    VirtualNetwork,
    /// [`Route`].
    Route,
    /// [`List`].
    List,
    /// [`Rule`].
    Rule,
    /// [`User`].
    User,
    /// [`Device`].
    Device,
    /// [`IdentityProvider`](super::IdentityProvider).
    IdentityProvider,
    /// [`ServiceToken`](super::ServiceToken).
    ServiceToken,
    /// [`EdgeMember`](super::EdgeMember).
    Edge,
}

impl RecordKind {
    /// The table holding records of this kind.
    pub fn table(self) -> Table {
        match self {
            RecordKind::Tunnel => Table::Tunnels,
            RecordKind::VirtualNetwork => Table::VirtualNetworks,
            RecordKind::Route => Table::Routes,
            RecordKind::List => Table::Lists,
            RecordKind::Rule => Table::Rules,
            RecordKind::User => Table::Users,
            RecordKind::Device => Table::Devices,
            RecordKind::IdentityProvider => Table::IdentityProviders,
            RecordKind::ServiceToken => Table::ServiceTokens,
            RecordKind::Edge => Table::Edges,
        }
    }

    /// The kind's name as the admin commands say it.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Tunnel => "tunnel",
            RecordKind::VirtualNetwork => "virtual network",
            RecordKind::Route => "route",
            RecordKind::List => "list",
            RecordKind::Rule => "rule",
            RecordKind::User => "user",
            RecordKind::Device => "device",
            RecordKind::IdentityProvider => "identity provider",
            RecordKind::ServiceToken => "service token",
            RecordKind::Edge => "edge",
        }
    }

    /// A short, space-free tag used inside index keys.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            RecordKind::Tunnel => "tunnel",
            RecordKind::VirtualNetwork => "vnet",
            RecordKind::Route => "route",
            RecordKind::List => "list",
            RecordKind::Rule => "rule",
            RecordKind::User => "user",
            RecordKind::Device => "device",
            RecordKind::IdentityProvider => "idp",
            RecordKind::ServiceToken => "token",
            RecordKind::Edge => "edge",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// The sealed pattern: `Record` is public so callers can name `get::<Tunnel>`, while the
// consistency rules stay inside this crate. The supertrait must be `pub` to be a bound of a
// public trait, but it is unreachable from outside on purpose.
#[allow(unreachable_pub)]
mod sealed {
    use super::RecordKind;
    use uuid::Uuid;

    /// A value that must be unique among records of one kind.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct UniqueKey {
        pub field: &'static str,
        pub value: String,
    }

    /// A reference from one record to another that must exist (and be live).
    #[derive(Debug, Clone, Copy)]
    pub struct Reference {
        pub field: &'static str,
        pub kind: RecordKind,
        pub id: Uuid,
    }

    pub trait Sealed {
        /// Sets the version the store gives the record when writing it.
        fn set_version(&mut self, version: u64);
        fn unique_keys(&self) -> Vec<UniqueKey>;
        fn references(&self) -> Vec<Reference>;
        /// A record that is not live (a soft-deleted tunnel) may not be referenced.
        fn is_live(&self) -> bool {
            true
        }
        /// Checks the record's own fields; the reason names the field.
        fn check(&self) -> Result<(), &'static str>;
        /// Whether the record may be removed, apart from references to it.
        fn check_delete(&self) -> Result<(), &'static str> {
            Ok(())
        }
    }
}

/// A record kind of the edge state. Implemented by [`Tunnel`], [`VirtualNetwork`],
/// [`Route`], [`List`], [`Rule`], [`User`] and [`Device`]; sealed.
pub trait Record: Serialize + DeserializeOwned + Clone + fmt::Debug + sealed::Sealed {
    /// The record's kind.
    const KIND: RecordKind;
    /// The record's id (its key).
    fn id(&self) -> Uuid;
    /// The record's version: 1 when first written, one more with every write of it
    /// ([`WriteTxn::put`](super::WriteTxn::put) sets it); 0 for a record not yet written
    /// (and for records written before versions existed, until their next write).
    ///
    /// Unlike the store's revision, which every commit moves, a version only moves when
    /// this record is written, so `zt apply` can tell "someone changed a resource this
    /// plan touches" from "someone changed something else".
    fn version(&self) -> u64;
}

pub(crate) use sealed::{Reference, Sealed, UniqueKey};

/// Longest name accepted for tunnels, networks, lists, rules and devices.
pub const MAX_NAME_LEN: usize = 255;

pub(super) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        return Err("name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name is longer than 255 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("name contains control characters");
    }
    Ok(())
}

pub(super) fn unique(field: &'static str, value: impl Into<String>) -> UniqueKey {
    UniqueKey {
        field,
        value: value.into(),
    }
}

/// SHA-256 of a tunnel secret, kept only for tunnels that accept cloudflared connectors
/// (whose protocol sends the secret itself rather than a proof).
///
/// `Debug` is redacted and comparison is constant-time, like a password hash.
#[derive(Clone)]
pub struct SecretSha256([u8; 32]);

impl SecretSha256 {
    /// The digest of `secret`.
    pub fn of(secret: &TunnelSecret) -> Self {
        Self::of_bytes(secret.expose_bytes())
    }

    /// The digest of raw secret bytes, as a cloudflared connector presents them.
    pub fn of_bytes(secret: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, secret);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// Wraps stored digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest bytes.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `presented` hashes to this digest, compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        *self == Self::of_bytes(presented)
    }
}

impl PartialEq for SecretSha256 {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for SecretSha256 {}

impl fmt::Debug for SecretSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretSha256([redacted])")
    }
}

impl Serialize for SecretSha256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for SecretSha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode_array::<32>(&text)
            .map(Self)
            .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits"))
    }
}

/// Serde for [`AuthKey`] as 64 lowercase hex digits (zt-creds keeps the type serde-free).
pub(super) mod auth_key_hex {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(key: &AuthKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(key.expose_bytes()))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AuthKey, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode_array::<32>(&text)
            .map(AuthKey::from_bytes)
            .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits"))
    }
}

/// Serde for an optional [`AuthKey`] (absent for devices that prove with their own key).
mod opt_auth_key_hex {
    use super::*;

    pub(super) fn serialize<S: Serializer>(key: &Option<AuthKey>, s: S) -> Result<S::Ok, S::Error> {
        match key {
            Some(key) => auth_key_hex::serialize(key, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<AuthKey>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|text| {
            hex::decode_array::<32>(&text)
                .map(AuthKey::from_bytes)
                .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits"))
        })
        .transpose()
    }
}

/// Serde for an optional [`DevicePublicKey`] as 64 lowercase hex digits.
mod opt_public_key_hex {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        key: &Option<DevicePublicKey>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match key {
            Some(key) => s.serialize_str(&key.to_hex()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DevicePublicKey>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|text| {
            DevicePublicKey::from_hex(&text)
                .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits"))
        })
        .transpose()
    }
}

/// A tunnel: a named group of connectors that serve routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunnel {
    /// The record's version; see [`Record::version`]. Set by the store on every write.
    #[serde(default)]
    pub version: u64,
    /// The tunnel id (cloudflared's `TunnelID`).
    pub id: Uuid,
    /// The name, unique among tunnels that are not deleted.
    pub name: String,
    /// The edge's account tag, as carried in credentials.
    pub account_tag: String,
    /// Key derived from the tunnel secret; connectors prove possession of the secret with it.
    #[serde(with = "auth_key_hex")]
    pub auth_key: AuthKey,
    /// SHA-256 of the secret when the tunnel accepts cloudflared connectors (off by
    /// default: their protocol sends the secret itself).
    #[serde(default)]
    pub cloudflared_secret_sha256: Option<SecretSha256>,
    /// When the tunnel was created.
    pub created_at: Timestamp,
    /// When the tunnel was deleted; deleted tunnels keep their record for the audit trail.
    #[serde(default)]
    pub deleted_at: Option<Timestamp>,
}

impl Tunnel {
    /// A new tunnel with a fresh id for `secret` (only its derived key is kept).
    pub fn new(
        name: impl Into<String>,
        account_tag: impl Into<String>,
        secret: &TunnelSecret,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            version: 0,
            name: name.into(),
            account_tag: account_tag.into(),
            auth_key: secret.derive_auth_key(),
            cloudflared_secret_sha256: None,
            created_at: Timestamp::now(),
            deleted_at: None,
        }
    }

    /// Whether the tunnel is not deleted.
    pub fn is_active(&self) -> bool {
        self.deleted_at.is_none()
    }

    /// What may be shown to an operator or returned by the admin API: everything but the
    /// verifiers, which are as sensitive as password hashes.
    pub fn info(&self) -> TunnelInfo {
        TunnelInfo {
            id: self.id,
            name: self.name.clone(),
            account_tag: self.account_tag.clone(),
            accepts_cloudflared: self.cloudflared_secret_sha256.is_some(),
            created_at: self.created_at,
            deleted_at: self.deleted_at,
        }
    }
}

/// A [`Tunnel`] without its verifiers, for display and the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelInfo {
    /// The tunnel id.
    pub id: Uuid,
    /// The name.
    pub name: String,
    /// The account tag.
    pub account_tag: String,
    /// Whether cloudflared connectors may serve it.
    pub accepts_cloudflared: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was deleted.
    pub deleted_at: Option<Timestamp>,
}

impl Sealed for Tunnel {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn unique_keys(&self) -> Vec<UniqueKey> {
        // A deleted tunnel frees its name, as cloudflared's do.
        if self.is_active() {
            vec![unique("name", self.name.clone())]
        } else {
            Vec::new()
        }
    }
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
    fn is_live(&self) -> bool {
        self.is_active()
    }
    fn check(&self) -> Result<(), &'static str> {
        check_name(&self.name)?;
        if !hex::is_lower_hex(&self.account_tag, 32) {
            return Err("account_tag is not 32 lowercase hex digits");
        }
        Ok(())
    }
}

impl Record for Tunnel {
    const KIND: RecordKind = RecordKind::Tunnel;
    fn id(&self) -> Uuid {
        self.id
    }
    fn version(&self) -> u64 {
        self.version
    }
}

/// A virtual network: a separate address space, so two clusters may both use 10.0.0.0/8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualNetwork {
    /// The record's version; see [`Record::version`]. Set by the store on every write.
    #[serde(default)]
    pub version: u64,
    /// The id.
    pub id: Uuid,
    /// The name, unique.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub comment: String,
    /// Whether clients and routes without an explicit network use this one; at most one is.
    pub is_default: bool,
    /// When it was created.
    pub created_at: Timestamp,
}

impl VirtualNetwork {
    /// A new, non-default virtual network with a fresh id.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            id: Uuid::new_v4(),
            version: 0,
            name: name.into(),
            comment: String::new(),
            is_default: false,
            created_at: Timestamp::now(),
        }
    }
}

impl Sealed for VirtualNetwork {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn unique_keys(&self) -> Vec<UniqueKey> {
        let mut keys = vec![unique("name", self.name.clone())];
        if self.is_default {
            // One index entry shared by every default network enforces "at most one".
            keys.push(unique("is_default", "true"));
        }
        keys
    }
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
    fn check(&self) -> Result<(), &'static str> {
        check_name(&self.name)
    }
    fn check_delete(&self) -> Result<(), &'static str> {
        if self.is_default {
            Err("the default virtual network cannot be deleted; make another one the default first")
        } else {
            Ok(())
        }
    }
}

impl Record for VirtualNetwork {
    const KIND: RecordKind = RecordKind::VirtualNetwork;
    fn id(&self) -> Uuid {
        self.id
    }
    fn version(&self) -> u64 {
        self.version
    }
}

/// A route: traffic to `network` in virtual network `vnet` goes to tunnel `tunnel_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The record's version; see [`Record::version`]. Set by the store on every write.
    #[serde(default)]
    pub version: u64,
    /// The id.
    pub id: Uuid,
    /// The destination prefix; unique per virtual network. Whether it has host bits set is
    /// zt-routes' check, made by the admin API before storing.
    pub network: IpNet,
    /// The virtual network the route lives in.
    pub vnet: Uuid,
    /// The tunnel that serves it.
    pub tunnel_id: Uuid,
    /// Free text.
    #[serde(default)]
    pub comment: String,
    /// When it was created.
    pub created_at: Timestamp,
}

impl Route {
    /// A new route with a fresh id.
    pub fn new(network: IpNet, vnet: Uuid, tunnel_id: Uuid) -> Self {
        Self {
            id: Uuid::new_v4(),
            version: 0,
            network,
            vnet,
            tunnel_id,
            comment: String::new(),
            created_at: Timestamp::now(),
        }
    }
}

impl Sealed for Route {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn unique_keys(&self) -> Vec<UniqueKey> {
        vec![unique(
            "network",
            format!("{} in virtual network {}", self.network, self.vnet),
        )]
    }
    fn references(&self) -> Vec<Reference> {
        vec![
            Reference {
                field: "vnet",
                kind: RecordKind::VirtualNetwork,
                id: self.vnet,
            },
            Reference {
                field: "tunnel_id",
                kind: RecordKind::Tunnel,
                id: self.tunnel_id,
            },
        ]
    }
    fn check(&self) -> Result<(), &'static str> {
        Ok(())
    }
}

impl Record for Route {
    const KIND: RecordKind = RecordKind::Route;
    fn id(&self) -> Uuid {
        self.id
    }
    fn version(&self) -> u64 {
        self.version
    }
}

/// What a gateway list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum ListKind {
    /// IP addresses and CIDR prefixes.
    Ip,
    /// Domain names.
    Domain,
    /// Email addresses.
    Email,
    /// URLs.
    Url,
    /// Device serial numbers.
    Serial,
}

/// A gateway list, referenced from rule expressions as `$<id without dashes>` or `$<slug>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct List {
    /// The record's version; see [`Record::version`]. Set by the store on every write.
    #[serde(default)]
    pub version: u64,
    /// The id.
    pub id: Uuid,
    /// The name, unique.
    pub name: String,
    /// An optional short name usable in expressions, unique.
    #[serde(default)]
    pub slug: Option<String>,
    /// What the items are.
    pub kind: ListKind,
    /// The items as written; zt-policy validates them against `kind`.
    pub items: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

impl List {
    /// A new list with a fresh id.
    pub fn new(name: impl Into<String>, kind: ListKind, items: Vec<String>) -> Self {
        Self {
            id: Uuid::new_v4(),
            version: 0,
            name: name.into(),
            slug: None,
            kind,
            items,
            description: String::new(),
        }
    }
}

impl Sealed for List {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn unique_keys(&self) -> Vec<UniqueKey> {
        let mut keys = vec![unique("name", self.name.clone())];
        if let Some(slug) = &self.slug {
            keys.push(unique("slug", slug.clone()));
        }
        keys
    }
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
    fn check(&self) -> Result<(), &'static str> {
        check_name(&self.name)?;
        if let Some(slug) = &self.slug {
            let ok = !slug.is_empty()
                && slug.len() <= 64
                && slug
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err("slug must be 1 to 64 ASCII letters, digits, '_' or '-'");
            }
        }
        Ok(())
    }
}

impl Record for List {
    const KIND: RecordKind = RecordKind::List;
    fn id(&self) -> Uuid {
        self.id
    }
    fn version(&self) -> u64 {
        self.version
    }
}

/// A gateway rule, stored as written; zt-policy compiles the rule set at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// The record's version; see [`Record::version`]. Set by the store on every write.
    #[serde(default)]
    pub version: u64,
    /// The id.
    pub id: Uuid,
    /// The name, unique (refusals say `denied by rule <name>`).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Lower runs first.
    pub precedence: i64,
    /// The action, such as `allow`, `block` or `off`.
    pub action: String,
    /// Whether the rule takes part in evaluation.
    pub enabled: bool,
    /// The phases it applies to, such as `l4` or `http`.
    pub filters: Vec<String>,
    /// The traffic expression; absent means true.
    #[serde(default)]
    pub traffic: Option<String>,
    /// The identity expression; absent means true.
    #[serde(default)]
    pub identity: Option<String>,
    /// The device posture expression; absent means true.
    #[serde(default)]
    pub device_posture: Option<String>,
}

impl Rule {
    /// A new enabled rule with a fresh id and no expressions.
    pub fn new(
        name: impl Into<String>,
        precedence: i64,
        action: impl Into<String>,
        filters: Vec<String>,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            version: 0,
            name: name.into(),
            description: String::new(),
            precedence,
            action: action.into(),
            enabled: true,
            filters,
            traffic: None,
            identity: None,
            device_posture: None,
        }
    }
}

impl Sealed for Rule {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn unique_keys(&self) -> Vec<UniqueKey> {
        vec![unique("name", self.name.clone())]
    }
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
    fn check(&self) -> Result<(), &'static str> {
        check_name(&self.name)
    }
}

impl Record for Rule {
    const KIND: RecordKind = RecordKind::Rule;
    fn id(&self) -> Uuid {
        self.id
    }
    fn version(&self) -> u64 {
        self.version
    }
}

/// A user, known by email, in groups that identity expressions test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The record's version; see [`Record::version`]. Set by the store on every write.
    #[serde(default)]
    pub version: u64,
    /// The id.
    pub id: Uuid,
    /// The email, unique regardless of letter case.
    pub email: String,
    /// Group names set by the operator (`zt user add`, the configuration file). Groups
    /// from an identity provider are kept apart, on each device's [`DeviceLogin`].
    #[serde(default)]
    pub groups: Vec<String>,
    /// When the user was added.
    pub created_at: Timestamp,
    /// The identity-provider account this user is, for users created by `zt login`:
    /// users are keyed by (issuer, subject), never by email alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_subject: Option<IdpSubject>,
}

/// An account at an identity provider: the ID token's `iss` and `sub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpSubject {
    /// The issuer URL.
    pub issuer: String,
    /// The subject, unique at the issuer.
    pub subject: String,
}

impl User {
    /// A new user with a fresh id.
    pub fn new(email: impl Into<String>, groups: Vec<String>) -> Self {
        Self {
            id: Uuid::new_v4(),
            version: 0,
            email: email.into(),
            groups,
            created_at: Timestamp::now(),
            idp_subject: None,
        }
    }
}

impl Sealed for User {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn unique_keys(&self) -> Vec<UniqueKey> {
        let mut keys = vec![unique("email", self.email.to_lowercase())];
        if let Some(s) = &self.idp_subject {
            keys.push(unique(
                "idp_subject",
                format!("{}\0{}", s.issuer, s.subject),
            ));
        }
        keys
    }
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
    fn check(&self) -> Result<(), &'static str> {
        let ok = self.email.len() <= 254
            && matches!(self.email.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty())
            && !self
                .email
                .chars()
                .any(|c| c.is_whitespace() || c.is_control());
        if ok {
            Ok(())
        } else {
            Err("email is not an address like name@example.com")
        }
    }
}

impl Record for User {
    const KIND: RecordKind = RecordKind::User;
    fn id(&self) -> Uuid {
        self.id
    }
    fn version(&self) -> u64 {
        self.version
    }
}

/// A device of a user, holding the key derived from its device credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The record's version; see [`Record::version`]. Set by the store on every write.
    #[serde(default)]
    pub version: u64,
    /// The id (carried in the device credential).
    pub id: Uuid,
    /// The owner.
    pub user_id: Uuid,
    /// A name for people, such as the host name.
    #[serde(default)]
    pub name: String,
    /// Key derived from the device secret, for devices made by `zt user add`.
    #[serde(
        default,
        with = "opt_auth_key_hex",
        skip_serializing_if = "Option::is_none"
    )]
    pub auth_key: Option<AuthKey>,
    /// The device's own Ed25519 public key, for devices enrolled by `zt login`; exactly one
    /// of this and `auth_key` is set.
    #[serde(
        default,
        with = "opt_public_key_hex",
        skip_serializing_if = "Option::is_none"
    )]
    pub public_key: Option<DevicePublicKey>,
    /// Labels set by the operator, visible to posture expressions.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the device was enrolled.
    pub created_at: Timestamp,
    /// A revoked device is refused at authentication.
    #[serde(default)]
    pub revoked: bool,
    /// The sign-in this device was enrolled by, for devices enrolled by `zt login`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<DeviceLogin>,
    /// The identity provider's refresh token for that sign-in, sealed with the edge's
    /// secrets key (see [`Device::refresh_token`]); never in [`DeviceInfo`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<SealedSecret>,
}

/// What a refresh token is sealed as, with the device id as the record.
const REFRESH_TOKEN_PURPOSE: &str = "device.refresh_token";

impl Device {
    /// Seals and keeps `token` (the provider's refresh token for this device's sign-in);
    /// `None` forgets any kept one.
    pub fn set_refresh_token(
        &mut self,
        key: &SecretsKey,
        token: Option<&str>,
    ) -> Result<(), SealError> {
        self.refresh_token = match token {
            Some(t) => {
                Some(key.seal_secret(REFRESH_TOKEN_PURPOSE, self.id.as_bytes(), t.as_bytes())?)
            }
            None => None,
        };
        Ok(())
    }

    /// The kept refresh token, opened with `key`.
    pub fn refresh_token(&self, key: &SecretsKey) -> Result<Option<String>, SealError> {
        let Some(sealed) = &self.refresh_token else {
            return Ok(None);
        };
        let plain = key.open_secret(REFRESH_TOKEN_PURPOSE, self.id.as_bytes(), sealed)?;
        String::from_utf8(plain).map(Some).map_err(|_| SealError)
    }
}

/// What a sign-in through an identity provider gave a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLogin {
    /// The provider's id.
    pub provider_id: Uuid,
    /// The provider's name, as policy sees it (`identity.idp`).
    pub provider: String,
    /// Groups from the provider's groups claim at this sign-in.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The login session's id, named in audit lines.
    pub session_id: Uuid,
    /// When the user signed in.
    pub signed_in_at: Timestamp,
    /// When the session ends: sign-in (or its last renewal) plus the provider's session
    /// length.
    pub expires_at: Timestamp,
    /// When the edge last renewed the sign-in with the provider's refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed_at: Option<Timestamp>,
}

impl Device {
    /// A new device of `user_id` with a fresh id, keeping only the key derived from `secret`.
    pub fn new(user_id: Uuid, name: impl Into<String>, secret: &TunnelSecret) -> Self {
        Self {
            id: Uuid::new_v4(),
            version: 0,
            user_id,
            name: name.into(),
            auth_key: Some(secret.derive_auth_key()),
            public_key: None,
            labels: BTreeMap::new(),
            created_at: Timestamp::now(),
            revoked: false,
            login: None,
            refresh_token: None,
        }
    }

    /// A new device of `user_id` enrolled by a sign-in, proving with its own key.
    pub fn enrolled(
        user_id: Uuid,
        name: impl Into<String>,
        public_key: DevicePublicKey,
        login: DeviceLogin,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            version: 0,
            user_id,
            name: name.into(),
            auth_key: None,
            public_key: Some(public_key),
            labels: BTreeMap::new(),
            created_at: Timestamp::now(),
            revoked: false,
            login: Some(login),
            refresh_token: None,
        }
    }
}

impl Device {
    /// What may be shown to an operator or returned by the admin API: everything but the
    /// derived key.
    pub fn info(&self) -> DeviceInfo {
        DeviceInfo {
            id: self.id,
            user_id: self.user_id,
            name: self.name.clone(),
            labels: self.labels.clone(),
            created_at: self.created_at,
            revoked: self.revoked,
            public_key: self.public_key,
            login: self.login.clone(),
        }
    }
}

/// A [`Device`] without its key, for display and the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The id.
    pub id: Uuid,
    /// The owner.
    pub user_id: Uuid,
    /// The name.
    pub name: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// When it was enrolled.
    pub created_at: Timestamp,
    /// Whether it is revoked.
    pub revoked: bool,
    /// The device's public key, for devices enrolled by `zt login` (not secret).
    #[serde(
        default,
        with = "opt_public_key_hex",
        skip_serializing_if = "Option::is_none"
    )]
    pub public_key: Option<DevicePublicKey>,
    /// The sign-in that enrolled it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<DeviceLogin>,
}

impl Sealed for Device {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn unique_keys(&self) -> Vec<UniqueKey> {
        Vec::new()
    }
    fn references(&self) -> Vec<Reference> {
        vec![Reference {
            field: "user_id",
            kind: RecordKind::User,
            id: self.user_id,
        }]
    }
    fn check(&self) -> Result<(), &'static str> {
        if self.name.len() > MAX_NAME_LEN {
            return Err("name is longer than 255 bytes");
        }
        match (&self.auth_key, &self.public_key) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err("exactly one of auth_key and public_key must be set"),
        }
    }
}

impl Record for Device {
    const KIND: RecordKind = RecordKind::Device;
    fn id(&self) -> Uuid {
        self.id
    }
    fn version(&self) -> u64 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_json_keeps_no_secret_and_round_trips() {
        let secret = TunnelSecret::generate();
        let mut t = Tunnel::new("prod", "0123456789abcdef0123456789abcdef", &secret);
        t.cloudflared_secret_sha256 = Some(SecretSha256::of(&secret));
        let json = serde_json::to_string(&t).unwrap();
        let secret_hex = hex::encode(secret.expose_bytes());
        assert!(!json.contains(&secret_hex), "raw secret leaked into {json}");
        let back: Tunnel = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert!(back
            .cloudflared_secret_sha256
            .as_ref()
            .unwrap()
            .matches(secret.expose_bytes()));
        assert!(!back.cloudflared_secret_sha256.unwrap().matches(b"wrong"));
        let debug = format!("{t:?}");
        assert!(!debug.contains(&hex::encode(t.auth_key.expose_bytes())));
        let info = serde_json::to_string(&t.info()).unwrap();
        assert!(
            !info.contains(&hex::encode(t.auth_key.expose_bytes())),
            "{info}"
        );
        assert!(!info.contains(&hex::encode(SecretSha256::of(&secret).expose_bytes())));
        assert!(t.info().accepts_cloudflared);
        let device = Device::new(Uuid::new_v4(), "laptop", &secret);
        let info = serde_json::to_string(&device.info()).unwrap();
        assert!(
            !info.contains(&hex::encode(
                device.auth_key.as_ref().unwrap().expose_bytes()
            )),
            "{info}"
        );
    }

    #[test]
    fn checks_name_email_slug() {
        let secret = TunnelSecret::generate();
        let mut t = Tunnel::new(" ", "0123456789abcdef0123456789abcdef", &secret);
        assert_eq!(t.check(), Err("name is empty"));
        t.name = "ok".into();
        t.account_tag = "XYZ".into();
        assert!(t.check().is_err());
        assert!(User::new("nobody", vec![]).check().is_err());
        assert!(User::new("a@b.example", vec![]).check().is_ok());
        let mut l = List::new("ips", ListKind::Ip, vec![]);
        l.slug = Some("bad slug".into());
        assert!(l.check().is_err());
        assert_eq!(serde_json::to_string(&ListKind::Ip).unwrap(), "\"IP\"");
    }
}
