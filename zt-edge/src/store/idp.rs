//! Identity providers the edge trusts for `zt login` (OpenID Connect).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{check_name, unique, Reference, Sealed, UniqueKey};
use super::{Record, RecordKind};
use crate::timestamp::Timestamp;

/// The claim read for groups unless told otherwise.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";
/// How long a sign-in lasts unless the provider's record says otherwise.
pub const DEFAULT_SESSION_LENGTH: Duration = Duration::from_secs(12 * 3600);
/// Longest issuer URL, client id or claim name accepted.
const MAX_FIELD_LEN: usize = 2048;
/// Most scopes, allowed domains.
const MAX_ITEMS: usize = 64;

/// An OpenID Provider the edge accepts sign-ins from.
///
/// `Debug` never shows the client secret; [`IdentityProvider::info`] leaves it out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityProvider {
    /// The record's version; see [`Record::version`]. Set by the store on every write.
    #[serde(default)]
    pub version: u64,
    /// The id.
    pub id: Uuid,
    /// A short name, unique, as policy sees it (`identity.idp`).
    pub name: String,
    /// The issuer URL exactly as the provider's discovery document and ID tokens say it.
    pub issuer: String,
    /// The client id zt is registered under at the provider.
    pub client_id: String,
    /// The client secret, only where the provider insists on one (sealed at rest with the
    /// edge's secrets key on PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Scopes asked for (`openid` is always sent).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The claim holding the user's groups.
    pub groups_claim: String,
    /// Email domains allowed to sign in; empty allows any verified email.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// How long a sign-in lasts, in seconds.
    pub session_length_secs: u64,
    /// Extra trust anchors for the provider's HTTPS certificate (PEM), for providers behind
    /// a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// When the provider was added.
    pub created_at: Timestamp,
}

impl IdentityProvider {
    /// A provider with the defaults: scopes `openid email profile groups`, groups from
    /// [`DEFAULT_GROUPS_CLAIM`], any domain, sessions of [`DEFAULT_SESSION_LENGTH`].
    pub fn new(
        name: impl Into<String>,
        issuer: impl Into<String>,
        client_id: impl Into<String>,
    ) -> Self {
        Self {
            version: 0,
            id: Uuid::new_v4(),
            name: name.into(),
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: None,
            scopes: ["openid", "email", "profile", "groups"]
                .map(String::from)
                .to_vec(),
            groups_claim: DEFAULT_GROUPS_CLAIM.to_owned(),
            allowed_domains: Vec::new(),
            session_length_secs: DEFAULT_SESSION_LENGTH.as_secs(),
            ca_pem: None,
            created_at: Timestamp::now(),
        }
    }

    /// The session length.
    pub fn session_length(&self) -> Duration {
        Duration::from_secs(self.session_length_secs)
    }

    /// What may be shown to an operator: everything but the client secret (whether there
    /// is one is shown).
    pub fn info(&self) -> IdentityProviderInfo {
        IdentityProviderInfo {
            id: self.id,
            name: self.name.clone(),
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            has_client_secret: self.client_secret.is_some(),
            scopes: self.scopes.clone(),
            groups_claim: self.groups_claim.clone(),
            allowed_domains: self.allowed_domains.clone(),
            session_length_secs: self.session_length_secs,
            has_ca: self.ca_pem.is_some(),
            created_at: self.created_at,
        }
    }
}

impl fmt::Debug for IdentityProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityProvider")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("scopes", &self.scopes)
            .field("groups_claim", &self.groups_claim)
            .field("allowed_domains", &self.allowed_domains)
            .field("session_length_secs", &self.session_length_secs)
            .finish_non_exhaustive()
    }
}

/// An [`IdentityProvider`] without its client secret, for display and the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityProviderInfo {
    /// The id.
    pub id: Uuid,
    /// The name.
    pub name: String,
    /// The issuer URL.
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// Whether a client secret is stored.
    pub has_client_secret: bool,
    /// Scopes asked for.
    pub scopes: Vec<String>,
    /// The groups claim.
    pub groups_claim: String,
    /// Allowed email domains (empty: any).
    pub allowed_domains: Vec<String>,
    /// Session length in seconds.
    pub session_length_secs: u64,
    /// Whether extra trust anchors are stored.
    pub has_ca: bool,
    /// When it was added.
    pub created_at: Timestamp,
}

fn bounded_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_FIELD_LEN && !s.chars().any(char::is_control)
}

impl Sealed for IdentityProvider {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn unique_keys(&self) -> Vec<UniqueKey> {
        vec![unique("name", self.name.to_lowercase())]
    }
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
    fn check(&self) -> Result<(), &'static str> {
        check_name(&self.name)?;
        if self.name.chars().any(char::is_whitespace) {
            return Err("name contains whitespace");
        }
        if !bounded_text(&self.issuer) || !self.issuer.starts_with("https://") {
            return Err("issuer is not an https:// URL");
        }
        if !bounded_text(&self.client_id) {
            return Err("client_id is empty, too long or has control characters");
        }
        if !bounded_text(&self.groups_claim) {
            return Err("groups_claim is empty, too long or has control characters");
        }
        if self.scopes.len() > MAX_ITEMS
            || self
                .scopes
                .iter()
                .any(|s| !bounded_text(s) || s.contains(' '))
        {
            return Err("scopes: at most 64, each one word");
        }
        if self.allowed_domains.len() > MAX_ITEMS
            || self
                .allowed_domains
                .iter()
                .any(|d| !bounded_text(d) || d.contains('@') || d.contains(' '))
        {
            return Err("allowed_domains: at most 64, each a domain such as example.com");
        }
        if self.session_length_secs == 0 {
            return Err("session_length_secs must be positive");
        }
        Ok(())
    }
}

impl Record for IdentityProvider {
    const KIND: RecordKind = RecordKind::IdentityProvider;
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
    fn checks_name_issuer_and_lists_and_hides_the_secret() {
        let mut p = IdentityProvider::new("corp", "https://idp.example", "zt");
        assert_eq!(p.check(), Ok(()));
        p.client_secret = Some("s3cr3t-value".into());
        assert!(!format!("{p:?}").contains("s3cr3t-value"));
        assert!(!serde_json::to_string(&p.info())
            .unwrap()
            .contains("s3cr3t-value"));
        p.issuer = "http://idp.example".into();
        assert_eq!(p.check(), Err("issuer is not an https:// URL"));
        p.issuer = "https://idp.example".into();
        p.allowed_domains = vec!["a@b".into()];
        assert!(p.check().is_err());
        p.allowed_domains.clear();
        p.name = "two words".into();
        assert!(p.check().is_err());
    }
}
