//! The certificate lifecycle of the state directory: the CA made on first start and
//! reloaded ever after, the server certificate issued under it (reissued when its names
//! change, when asked, or within 30 days of its end), and the certificate for cloudflared
//! connectors, issued on first use.
//!
//! Invariants: the CA is never replaced (connectors and clients pin its fingerprint), so
//! rotation only ever touches leaf certificates; a key is written before its certificate,
//! so a crash between the two leaves a mismatch the next start names, never a certificate
//! served with the wrong key; reissues are serialized so two never interleave their writes.

use std::path::Path;
use std::sync::{Arc, PoisonError};

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::dir::{
    read_private, write, CA_CERT, CA_KEY, CLOUDFLARED_CERT, CLOUDFLARED_KEY, SERVER_CERT,
    SERVER_KEY,
};
use super::{
    EdgeState, StateError, StateOptions, CLOUDFLARED_H2_SERVER_NAME, CLOUDFLARED_SERVER_NAME,
};
use crate::pki::{self, Ca, IssueError, LeafInfo, ServerNames, Which};
use crate::timestamp::Timestamp;

/// The subject of the edge's own server certificates.
pub(super) const SERVER_SUBJECT: &str = "zt edge";

/// The subject of the cloudflared certificate.
pub(super) const CLOUDFLARED_SUBJECT: &str = CLOUDFLARED_SERVER_NAME;

/// The names cloudflared asks for, over QUIC and HTTP/2.
pub(super) fn cloudflared_names() -> ServerNames {
    ServerNames {
        dns: vec![
            CLOUDFLARED_SERVER_NAME.to_owned(),
            CLOUDFLARED_H2_SERVER_NAME.to_owned(),
        ],
        ips: Vec::new(),
    }
}

/// A certificate chain and key to serve with rustls or quinn.
pub struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    pub(super) names: ServerNames,
    not_after: Timestamp,
}

impl ServerIdentity {
    pub(super) fn from_leaf(leaf: LeafInfo) -> Self {
        Self {
            chain: leaf.chain,
            key: leaf.key,
            names: leaf.names,
            not_after: leaf.not_after,
        }
    }

    /// The chain: the server certificate first, then the CA.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// A copy of the private key.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The names the certificate is valid for.
    pub fn names(&self) -> &ServerNames {
        &self.names
    }

    /// When the certificate expires.
    pub fn not_after(&self) -> Timestamp {
        self.not_after
    }
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn issue_error(what: &'static str, e: IssueError) -> StateError {
    StateError::Issue {
        what,
        detail: e.to_string(),
    }
}

/// First start: makes the CA and the server certificate and writes them, keys first.
pub(super) fn create(
    dir: &Path,
    account_tag: &str,
    options: &StateOptions,
) -> Result<(Ca, ServerIdentity), StateError> {
    let ca = Ca::generate(account_tag).map_err(|e| issue_error("the edge CA", e))?;
    write(
        &dir.join(CA_KEY),
        ca.key_pem().unwrap_or_default().as_bytes(),
    )?;
    write(&dir.join(CA_CERT), ca.cert_pem.as_bytes())?;
    let names = options
        .server_names
        .clone()
        .unwrap_or_else(ServerNames::defaults);
    let issued = ca
        .issue_server(&names, SERVER_SUBJECT)
        .map_err(|e| issue_error("the server certificate", e))?;
    write(&dir.join(SERVER_KEY), issued.key_pem.as_bytes())?;
    write(&dir.join(SERVER_CERT), issued.chain_pem.as_bytes())?;
    Ok((ca, ServerIdentity::from_leaf(issued.leaf)))
}

/// Later starts: the CA, its certificate and (with `with_key`, every edge but a joined
/// one) its key, checked against each other.
pub(super) fn load_ca(dir: &Path, with_key: bool) -> Result<Ca, StateError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    let key = if with_key {
        Some(read_private(&key_path)?)
    } else {
        None
    };
    Ca::load(&read_private(&cert_path)?, key.as_deref()).map_err(|(which, reason)| {
        StateError::Corrupt {
            path: if which == Which::Cert {
                cert_path.clone()
            } else {
                key_path.clone()
            },
            reason,
        }
    })
}

/// Later starts: the server certificate, checked against its key and the CA.
pub(super) fn load_server(ca: &Ca, dir: &Path) -> Result<ServerIdentity, StateError> {
    load_leaf(ca, dir, SERVER_CERT, SERVER_KEY).map(ServerIdentity::from_leaf)
}

/// Later starts: the cloudflared certificate when one was issued. Its certificate without
/// its key (or the reverse) is refused, saying which file to remove.
pub(super) fn load_cloudflared(
    ca: &Ca,
    dir: &Path,
) -> Result<Option<Arc<ServerIdentity>>, StateError> {
    match (
        dir.join(CLOUDFLARED_CERT).exists(),
        dir.join(CLOUDFLARED_KEY).exists(),
    ) {
        (false, false) => Ok(None),
        (true, true) => Ok(Some(Arc::new(ServerIdentity::from_leaf(load_leaf(
            ca,
            dir,
            CLOUDFLARED_CERT,
            CLOUDFLARED_KEY,
        )?)))),
        (has_cert, _) => {
            let (present, missing) = if has_cert {
                (CLOUDFLARED_CERT, CLOUDFLARED_KEY)
            } else {
                (CLOUDFLARED_KEY, CLOUDFLARED_CERT)
            };
            Err(StateError::Incomplete {
                dir: dir.to_path_buf(),
                reason: format!(
                    "{present} exists without {missing}; remove {present} to have it reissued"
                ),
            })
        }
    }
}

fn load_leaf(ca: &Ca, dir: &Path, cert: &str, key: &str) -> Result<LeafInfo, StateError> {
    let cert_path = dir.join(cert);
    let key_path = dir.join(key);
    ca.load_server(&read_private(&cert_path)?, &read_private(&key_path)?)
        .map_err(|(which, reason)| StateError::Corrupt {
            path: if which == Which::Cert {
                cert_path
            } else {
                key_path
            },
            reason,
        })
}

impl EdgeState {
    /// Reissues the server certificate on open when asked for other names or when it is
    /// close to expiry; the CA, and so every pin, stays the same.
    pub(super) fn refresh_server_cert(&self, options: &StateOptions) -> Result<(), StateError> {
        let current = self.server_identity();
        let wanted = options.server_names.clone().map(ServerNames::normalized);
        match wanted {
            Some(wanted) if wanted != current.names && !self.ca.has_key() => {
                tracing::warn!(dir = %self.dir.display(), "other server names asked for, but this joined edge holds no CA key: keeping its certificate (for other names, make its state directory again with `zt edge join` on the edge that holds the CA key)");
            }
            Some(wanted) if wanted != current.names => {
                tracing::info!(dir = %self.dir.display(), "server names changed; reissuing the server certificate");
                self.issue_server(&wanted)?;
            }
            _ => {
                self.renew_server_cert_if_due()?;
            }
        }
        Ok(())
    }

    /// The current server certificate chain and key.
    pub fn server_identity(&self) -> Arc<ServerIdentity> {
        self.server
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Issues a new server certificate under the same CA, for the same names, and keeps it.
    /// Connections opened afterwards get the new one; pins stay valid.
    pub fn rotate_server_cert(&self) -> Result<Arc<ServerIdentity>, StateError> {
        let names = self.server_identity().names.clone();
        self.issue_server(&names)
    }

    /// Reissues the server certificate when it expires within 30 days, and returns the new
    /// one; `None` when the current one is good. Opening the state does this; a long-running
    /// edge calls it from a daily timer.
    pub fn renew_server_cert_if_due(&self) -> Result<Option<Arc<ServerIdentity>>, StateError> {
        let current = self.server_identity();
        let renew_at = current.not_after().as_offset_date_time() - pki::RENEW_BEFORE;
        if time::OffsetDateTime::now_utc() < renew_at {
            return Ok(None);
        }
        if !self.ca.has_key() {
            tracing::warn!(dir = %self.dir.display(), not_after = %current.not_after(), "server certificate near expiry, and this joined edge holds no CA key: make its state directory again with `zt edge join` on the edge that holds it, then `zt edge remove` the old member");
            return Ok(None);
        }
        tracing::info!(dir = %self.dir.display(), not_after = %current.not_after(), "server certificate near expiry; reissuing");
        self.issue_server(&current.names).map(Some)
    }

    fn issue_server(&self, names: &ServerNames) -> Result<Arc<ServerIdentity>, StateError> {
        let _serial = self
            .server_issue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let issued = self
            .ca
            .issue_server(names, SERVER_SUBJECT)
            .map_err(|e| issue_error("the server certificate", e))?;
        // Key first: a crash between the two writes leaves a mismatch that the next start
        // reports with the file name, never a certificate served with the wrong key.
        write(&self.dir.join(SERVER_KEY), issued.key_pem.as_bytes())?;
        write(&self.dir.join(SERVER_CERT), issued.chain_pem.as_bytes())?;
        let identity = Arc::new(ServerIdentity::from_leaf(issued.leaf));
        *self.server.write().unwrap_or_else(PoisonError::into_inner) = identity.clone();
        tracing::info!(not_after = %identity.not_after(), "issued server certificate");
        Ok(identity)
    }

    /// The certificate for [`CLOUDFLARED_SERVER_NAME`] and [`CLOUDFLARED_H2_SERVER_NAME`],
    /// signed by the edge's CA, issued and kept in the state directory on first use (and
    /// reissued when an older one lacks a name). cloudflared connectors trust it through
    /// `--cacert` pointing at [`EdgeState::ca_pem_path`].
    pub fn cloudflared_identity(&self) -> Result<Arc<ServerIdentity>, StateError> {
        let mut slot = self
            .cloudflared
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let names = cloudflared_names();
        if let Some(identity) = slot.as_ref() {
            if names.dns.iter().all(|n| identity.names().dns.contains(n)) {
                return Ok(identity.clone());
            }
            tracing::info!(dir = %self.dir.display(), "the cloudflared certificate lacks h2.cftunnel.com; reissuing it");
        }
        let issued = self
            .ca
            .issue_server(&names, CLOUDFLARED_SUBJECT)
            .map_err(|e| issue_error("the cloudflared certificate", e))?;
        write(&self.dir.join(CLOUDFLARED_KEY), issued.key_pem.as_bytes())?;
        write(
            &self.dir.join(CLOUDFLARED_CERT),
            issued.chain_pem.as_bytes(),
        )?;
        let identity = Arc::new(ServerIdentity::from_leaf(issued.leaf));
        *slot = Some(identity.clone());
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn a_cloudflared_certificate_without_the_h2_name_is_reissued_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("edge");
        let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        // What an edge from before HTTP/2 mode left: the QUIC name alone.
        let quic_only = ServerNames {
            dns: vec![CLOUDFLARED_SERVER_NAME.to_owned()],
            ips: Vec::new(),
        };
        let old = state
            .ca
            .issue_server(&quic_only, CLOUDFLARED_SERVER_NAME)
            .unwrap();
        write(&dir.join(CLOUDFLARED_KEY), old.key_pem.as_bytes()).unwrap();
        write(&dir.join(CLOUDFLARED_CERT), old.chain_pem.as_bytes()).unwrap();
        drop(state);

        let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        let cf = state.cloudflared_identity().unwrap();
        assert!(cf
            .names()
            .dns
            .contains(&CLOUDFLARED_H2_SERVER_NAME.to_owned()));
        assert!(cf.names().dns.contains(&CLOUDFLARED_SERVER_NAME.to_owned()));
        let on_disk = fs::read(dir.join(CLOUDFLARED_CERT)).unwrap();
        assert_ne!(on_disk, old.chain_pem.as_bytes(), "the file was rewritten");
        drop(state);
        // Once reissued, it is kept.
        let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        assert_eq!(
            state.cloudflared_identity().unwrap().cert_chain()[0],
            cf.cert_chain()[0]
        );
        assert_eq!(fs::read(dir.join(CLOUDFLARED_CERT)).unwrap(), on_disk);
    }

    #[test]
    fn a_certificate_near_expiry_is_renewed_on_open_under_the_same_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("edge");
        let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        let fingerprint = state.ca_fingerprint().to_owned();
        assert!(state.renew_server_cert_if_due().unwrap().is_none());
        let names = state.server_identity().names.clone();
        // Replace the server certificate with one that ends in ten days.
        let short = state
            .ca
            .issue_server_valid_for(&names, SERVER_SUBJECT, time::Duration::days(10))
            .unwrap();
        write(&dir.join(SERVER_KEY), short.key_pem.as_bytes()).unwrap();
        write(&dir.join(SERVER_CERT), short.chain_pem.as_bytes()).unwrap();
        let short_leaf = short.leaf.chain[0].clone();
        drop(state);

        let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        let renewed = state.server_identity();
        assert_ne!(renewed.cert_chain()[0], short_leaf);
        assert_eq!(renewed.names, names);
        let days_left =
            (renewed.not_after().unix_seconds() - Timestamp::now().unix_seconds()) / 86_400;
        assert!(days_left > 300, "{days_left} days left");
        assert_eq!(state.ca_fingerprint(), fingerprint);
        // The renewed certificate was written, not only held in memory.
        let on_disk = fs::read_to_string(dir.join(SERVER_CERT)).unwrap();
        assert!(on_disk.starts_with("-----BEGIN CERTIFICATE-----"));
        drop(state);
        let state = EdgeState::open_or_init(&dir, &StateOptions::default()).unwrap();
        assert_eq!(
            state.server_identity().cert_chain()[0],
            renewed.cert_chain()[0]
        );
    }
}
