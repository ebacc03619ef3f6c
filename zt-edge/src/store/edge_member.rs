//! Edge members: the edges that share this state and may forward flows to each other.
//!
//! A row names an edge by the id its peering certificate carries (a URI SAN
//! `urn:zt:edge:<id>`, issued under the organisation's CA) and pins that certificate by its
//! SHA-256. A peer is accepted on the peering listener only while its row exists and its
//! certificate is the pinned one: removing the row (`zt edge remove`) stops every peer
//! from accepting it, and an edge cannot pose as another, since its certificate names its
//! own id and the CA key is not on it. Rows are written by the edge that holds the CA key
//! (its own at first start, the others' by `zt edge join`), never by an edge for itself
//! later, so a removed edge does not come back by restarting.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{check_name, unique, Reference, Sealed, UniqueKey};
use super::{Record, RecordKind};
use crate::timestamp::Timestamp;

/// One edge of the organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeMember {
    /// The record's version; see [`Record::version`]. Set by the store on every write.
    #[serde(default)]
    pub version: u64,
    /// The edge id its peering certificate names.
    pub id: Uuid,
    /// A unique name, as logs, `zt edge list` and audit lines say it.
    pub name: String,
    /// SHA-256 of its peering certificate (DER), 64 lowercase hex digits.
    pub peer_cert_sha256: String,
    /// When it joined.
    pub created_at: Timestamp,
}

impl EdgeMember {
    /// A member row for the edge `id` whose peering certificate has this SHA-256.
    pub fn new(id: Uuid, name: impl Into<String>, peer_cert_sha256: [u8; 32]) -> Self {
        Self {
            version: 0,
            id,
            name: name.into(),
            peer_cert_sha256: crate::hex::encode(&peer_cert_sha256),
            created_at: Timestamp::now(),
        }
    }
}

impl Sealed for EdgeMember {
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
        if self
            .name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("name contains whitespace or control characters");
        }
        if !crate::hex::is_lower_hex(&self.peer_cert_sha256, 64) {
            return Err("peer_cert_sha256 is not 64 lowercase hex digits");
        }
        Ok(())
    }
}

impl Record for EdgeMember {
    const KIND: RecordKind = RecordKind::Edge;
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
    fn checks_name_and_pin() {
        let mut e = EdgeMember::new(Uuid::new_v4(), "edge-1", [7; 32]);
        assert_eq!(e.check(), Ok(()));
        e.name = "two words".into();
        assert!(e.check().unwrap_err().contains("whitespace"));
        e.name = "edge-1".into();
        e.peer_cert_sha256 = "AB".into();
        assert!(e.check().unwrap_err().contains("peer_cert_sha256"));
    }
}
