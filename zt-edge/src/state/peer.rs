//! The edge's peering identity, and the state directory `zt edge join` makes for a new edge.
//!
//! Every edge has an id and a peering certificate naming it (`peer.pem`, `peer.key`),
//! issued under the organisation's CA: it serves the peering listener with it and dials its
//! peers with it, so both ends of a peering connection know which edge the other is. The
//! edge holding the CA key issues its own at its first start (or the first start of a
//! version that has them); a new edge gets its directory, certificates and all but the CA
//! key, from [`EdgeState::join_bundle`] on that edge.

use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

use super::certs::ServerIdentity;
use super::dir::{
    read_private, write, Marker, ADMIN_TOKEN, CA_CERT, CLOUDFLARED_CERT, CLOUDFLARED_KEY, MARKER,
    PEER_CERT, PEER_KEY, SERVER_CERT, SERVER_KEY,
};
use super::secrets::random_hex;
use super::{EdgeState, StateError};
use crate::pki::{self, Ca, ServerNames, Which};
use crate::timestamp::Timestamp;

/// The edge's id and peering certificate.
#[derive(Clone)]
pub struct PeerIdentity {
    edge_id: Uuid,
    identity: Arc<ServerIdentity>,
    cert_sha256: [u8; 32],
}

impl std::fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("edge_id", &self.edge_id)
            .finish_non_exhaustive()
    }
}

impl PeerIdentity {
    /// The edge id the certificate names.
    pub fn edge_id(&self) -> Uuid {
        self.edge_id
    }

    /// The certificate chain (leaf, CA) and key.
    pub fn identity(&self) -> &Arc<ServerIdentity> {
        &self.identity
    }

    /// SHA-256 of the leaf certificate's DER: what the edge's member row pins.
    pub fn cert_sha256(&self) -> [u8; 32] {
        self.cert_sha256
    }

    fn from_leaf(leaf: pki::LeafInfo, path: &Path) -> Result<Self, StateError> {
        let leaf_der = leaf.chain[0].clone();
        let edge_id = pki::peer_edge_id(&leaf_der).map_err(|reason| StateError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("not a peering certificate: {reason}"),
        })?;
        Ok(Self {
            edge_id,
            cert_sha256: pki::sha256(&leaf_der),
            identity: Arc::new(ServerIdentity::from_leaf(leaf)),
        })
    }
}

/// Loads `peer.pem`/`peer.key`, or issues them under a new edge id when neither exists and
/// this edge holds the CA key. Returns whether they were issued now.
pub(super) fn load_or_issue(ca: &Ca, dir: &Path) -> Result<(PeerIdentity, bool), StateError> {
    let cert_path = dir.join(PEER_CERT);
    let key_path = dir.join(PEER_KEY);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let leaf = ca
                .load_server(&read_private(&cert_path)?, &read_private(&key_path)?)
                .map_err(|(which, reason)| StateError::Corrupt {
                    path: if which == Which::Cert {
                        cert_path.clone()
                    } else {
                        key_path.clone()
                    },
                    reason,
                })?;
            Ok((PeerIdentity::from_leaf(leaf, &cert_path)?, false))
        }
        (false, false) => {
            let issued = ca
                .issue_peer(Uuid::new_v4())
                .map_err(|e| issue_error("the peering certificate", e))?;
            // Key first, as for the server certificate.
            write(&key_path, issued.key_pem.as_bytes())?;
            write(&cert_path, issued.chain_pem.as_bytes())?;
            let peer = PeerIdentity::from_leaf(issued.leaf, &cert_path)?;
            tracing::info!(edge_id = %peer.edge_id, "issued this edge's peering certificate");
            Ok((peer, true))
        }
        (has_cert, _) => {
            let (present, missing) = if has_cert {
                (PEER_CERT, PEER_KEY)
            } else {
                (PEER_KEY, PEER_CERT)
            };
            Err(StateError::Incomplete {
                dir: dir.to_path_buf(),
                reason: format!(
                    "{present} exists without {missing}; on the edge holding the CA key, \
                     remove {present} to have a new one issued (and run `zt edge remove` for \
                     the old id); on a joined edge, make its directory again with `zt edge join`"
                ),
            })
        }
    }
}

fn issue_error(what: &'static str, e: pki::IssueError) -> StateError {
    StateError::Issue {
        what,
        detail: e.to_string(),
    }
}

/// A new edge's state directory, made on the edge that holds the CA key: every file but
/// the CA key and the records. Hand it to the new edge's machine over a channel fit for
/// private keys; [`JoinBundle::write_to`] writes it.
pub struct JoinBundle {
    /// The new edge's id.
    pub edge_id: Uuid,
    /// SHA-256 of its peering certificate.
    pub peer_cert_sha256: [u8; 32],
    /// File name → content.
    pub files: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for JoinBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinBundle")
            .field("edge_id", &self.edge_id)
            .field(
                "files",
                &self
                    .files
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl JoinBundle {
    /// Writes the files into `dir`, created 0700 (every file 0600, atomically); refuses a
    /// directory that already holds an edge's state.
    pub fn write_to(&self, dir: &Path) -> Result<(), StateError> {
        super::dir::create(dir)?;
        super::dir::make_private(dir)?;
        if dir.join(MARKER).exists() {
            return Err(StateError::Incomplete {
                dir: dir.to_path_buf(),
                reason: format!("{MARKER} exists: this directory already holds an edge's state"),
            });
        }
        super::dir::check_fresh(dir)?;
        // The marker last: it commits the directory.
        for (name, content) in self.files.iter().filter(|(n, _)| n != MARKER) {
            write(&dir.join(name), content)?;
        }
        if let Some((name, content)) = self.files.iter().find(|(n, _)| n == MARKER) {
            write(&dir.join(name), content)?;
        }
        Ok(())
    }
}

impl EdgeState {
    /// The edge's peering identity.
    pub fn peer_identity(&self) -> &PeerIdentity {
        &self.peer
    }

    /// This edge's id.
    pub fn edge_id(&self) -> Uuid {
        self.peer.edge_id
    }

    /// Whether this edge holds the CA key (it issues certificates for joined edges).
    pub fn holds_ca_key(&self) -> bool {
        self.ca.has_key()
    }

    /// Whether the peering certificate was issued by this start, so the edge's own member
    /// row is still to be written.
    pub fn peer_identity_is_new(&self) -> bool {
        self.peer_new
    }

    /// Makes a new edge's state directory, in memory: the CA certificate (not its key), a
    /// server certificate for `names`, the cloudflared certificate, a peering certificate
    /// under a new edge id, a new admin token and a marker saying it joined; `secrets_key`
    /// (the key sealing secrets in the shared store) is added as `secrets.key` when given.
    /// The caller records the new edge's member row.
    pub fn join_bundle(
        &self,
        names: &ServerNames,
        secrets_key: Option<&[u8]>,
    ) -> Result<JoinBundle, StateError> {
        let server = self
            .ca
            .issue_server(names, super::certs::SERVER_SUBJECT)
            .map_err(|e| issue_error("the joining edge's server certificate", e))?;
        let cloudflared = self
            .ca
            .issue_server(
                &super::certs::cloudflared_names(),
                super::certs::CLOUDFLARED_SUBJECT,
            )
            .map_err(|e| issue_error("the joining edge's cloudflared certificate", e))?;
        let edge_id = Uuid::new_v4();
        let peer = self
            .ca
            .issue_peer(edge_id)
            .map_err(|e| issue_error("the joining edge's peering certificate", e))?;
        let peer_cert_sha256 = pki::sha256(&peer.leaf.chain[0]);
        let marker = Marker::joined(self.account_tag.clone(), Timestamp::now())
            .to_json()
            .map_err(|e| StateError::Issue {
                what: "the joining edge's marker",
                detail: e.to_string(),
            })?;
        let mut files = vec![
            (CA_CERT.to_owned(), self.ca.cert_pem.clone().into_bytes()),
            (SERVER_KEY.to_owned(), server.key_pem.into_bytes()),
            (SERVER_CERT.to_owned(), server.chain_pem.into_bytes()),
            (CLOUDFLARED_KEY.to_owned(), cloudflared.key_pem.into_bytes()),
            (
                CLOUDFLARED_CERT.to_owned(),
                cloudflared.chain_pem.into_bytes(),
            ),
            (PEER_KEY.to_owned(), peer.key_pem.into_bytes()),
            (PEER_CERT.to_owned(), peer.chain_pem.into_bytes()),
            (
                ADMIN_TOKEN.to_owned(),
                format!("{}\n", random_hex::<32>()?).into_bytes(),
            ),
        ];
        if let Some(key) = secrets_key {
            files.push(("secrets.key".to_owned(), key.to_vec()));
        }
        files.push((MARKER.to_owned(), marker));
        Ok(JoinBundle {
            edge_id,
            peer_cert_sha256,
            files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateOptions;

    #[test]
    fn a_joined_directory_opens_without_the_ca_key_and_names_its_own_edge() {
        let tmp = tempfile::tempdir().unwrap();
        let first =
            EdgeState::open_or_init(tmp.path().join("e1"), &StateOptions::default()).unwrap();
        assert!(first.holds_ca_key());
        assert!(first.peer_identity_is_new());
        let names = ServerNames {
            dns: vec!["e2.example".into()],
            ips: vec![],
        };
        let bundle = first.join_bundle(&names, Some(&[9u8; 32])).unwrap();
        assert_ne!(bundle.edge_id, first.edge_id());
        assert!(bundle.files.iter().all(|(n, _)| n != "ca.key"));
        let dir = tmp.path().join("e2");
        bundle.write_to(&dir).unwrap();
        // A second write into the same directory is refused.
        assert!(bundle.write_to(&dir).is_err());

        // Without a shared store the joined directory is refused, saying why.
        let err = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap_err();
        assert!(err.to_string().contains("--store"), "{err}");
        let store =
            Arc::new(crate::store::RedbStore::open(&tmp.path().join("shared.redb")).unwrap());
        let joined =
            EdgeState::open_or_init(&dir, &StateOptions::default().with_store(store)).unwrap();
        assert!(!joined.holds_ca_key());
        assert!(!joined.peer_identity_is_new());
        assert_eq!(joined.edge_id(), bundle.edge_id);
        assert_eq!(
            joined.peer_identity().cert_sha256(),
            bundle.peer_cert_sha256
        );
        assert_eq!(joined.ca_fingerprint(), first.ca_fingerprint());
        // It cannot issue: a joined edge asked to make another gets the reason.
        let err = joined.join_bundle(&names, None).unwrap_err();
        assert!(err.to_string().contains("no CA key"), "{err}");
        // Its peering certificate names it, and the server certificate names no edge.
        let leaf = &joined.peer_identity().identity().cert_chain()[0];
        assert_eq!(pki::peer_edge_id(leaf).unwrap(), bundle.edge_id);
        let server = joined.server_identity();
        assert!(pki::peer_edge_id(&server.cert_chain()[0])
            .unwrap_err()
            .contains("names no edge"));
        assert_eq!(
            std::fs::read(dir.join("secrets.key")).unwrap(),
            vec![9u8; 32]
        );
    }
}
