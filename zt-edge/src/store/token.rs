//! Service tokens: non-human credentials for pipelines (`zt token create`).
//!
//! A token authenticates exactly as a device made by `zt user add` does (a key derived from
//! a secret that leaves the edge once, in the credentials file), but belongs to no user: its
//! identity is its name and its groups, and it expires on its own.

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zt_creds::{AuthKey, TunnelSecret};

use super::records::{auth_key_hex, check_name, unique, Reference, Sealed, UniqueKey};
use super::{Record, RecordKind};
use crate::timestamp::Timestamp;

/// Most groups on one token.
const MAX_GROUPS: usize = 64;

/// A service token. `Debug` and [`ServiceToken::info`] never show its key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceToken {
    /// The record's version; see [`Record::version`]. Set by the store on every write.
    #[serde(default)]
    pub version: u64,
    /// The id (the credentials file's `DeviceID`).
    pub id: Uuid,
    /// A unique name, as the audit log and `identity.id` say it.
    pub name: String,
    /// The groups policy sees (`identity.groups`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Key derived from the token's secret.
    #[serde(with = "auth_key_hex")]
    pub auth_key: AuthKey,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it stops working; `None` never (only by revocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// A revoked token is refused at once, and its live sessions end.
    #[serde(default)]
    pub revoked: bool,
}

impl ServiceToken {
    /// A new token for `secret` (which the caller hands out once).
    pub fn new(
        name: impl Into<String>,
        groups: Vec<String>,
        secret: &TunnelSecret,
        expires_at: Option<Timestamp>,
    ) -> Self {
        Self {
            version: 0,
            id: Uuid::new_v4(),
            name: name.into(),
            groups,
            auth_key: secret.derive_auth_key(),
            created_at: Timestamp::now(),
            expires_at,
            revoked: false,
        }
    }

    /// Whether it works at `now`: not revoked and not expired.
    pub fn is_live(&self, now: Timestamp) -> bool {
        !self.revoked && self.expires_at.is_none_or(|at| at > now)
    }

    /// What may be shown: everything but the key.
    pub fn info(&self) -> ServiceTokenInfo {
        ServiceTokenInfo {
            id: self.id,
            name: self.name.clone(),
            groups: self.groups.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked: self.revoked,
        }
    }
}

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceToken")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("groups", &self.groups)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// A [`ServiceToken`] without its key, for display and the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTokenInfo {
    /// The id.
    pub id: Uuid,
    /// The name.
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it expires, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Whether it is revoked.
    pub revoked: bool,
}

impl Sealed for ServiceToken {
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
        if self.groups.len() > MAX_GROUPS {
            return Err("more than 64 groups");
        }
        if self
            .groups
            .iter()
            .any(|g| g.trim().is_empty() || g.len() > 255 || g.chars().any(char::is_control))
        {
            return Err("a group name is empty, longer than 255 bytes or has control characters");
        }
        Ok(())
    }
}

impl Record for ServiceToken {
    const KIND: RecordKind = RecordKind::ServiceToken;
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
    fn checks_and_never_shows_the_key() {
        let secret = TunnelSecret::generate();
        let mut t = ServiceToken::new("ci-deploy", vec!["ci".into()], &secret, None);
        assert_eq!(t.check(), Ok(()));
        let key_hex = crate::hex::encode(t.auth_key.expose_bytes());
        assert!(!format!("{t:?}").contains(&key_hex));
        assert!(!serde_json::to_string(&t.info()).unwrap().contains(&key_hex));
        assert!(t.is_live(Timestamp::now()));
        t.expires_at = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() - 1);
        assert!(!t.is_live(Timestamp::now()));
        t.expires_at = None;
        t.revoked = true;
        assert!(!t.is_live(Timestamp::now()));
        t.name = "two words".into();
        assert!(t.check().is_err());
        t.name = "ok".into();
        t.groups = vec![" ".into()];
        assert!(t.check().is_err());
    }
}
