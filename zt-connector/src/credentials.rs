//! Finding the tunnel's credentials: the `credentials-file` (read with the configured
//! permission check) or a `token`; a token's edge addresses and CA fingerprint fill in what
//! the configuration leaves unset, so a token alone is enough to run a connector.

use std::path::PathBuf;

use uuid::Uuid;
use zt_creds::{LoadError, TunnelCredentials};

use crate::config::ConnectorConfig;
use crate::values::{EdgeAddr, TunnelRef};

/// Why the tunnel's credentials could not be found or do not fit the configuration.
/// Messages name the file or the setting, never a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// Neither `credentials-file` nor `token` is set.
    #[error(
        "no tunnel credentials: set `credentials-file` in the config (or --credentials-file), \
         or give a token with `token` (or --token)"
    )]
    Missing,
    /// The credentials file could not be loaded (its message names the path and, for
    /// permissions, how to fix them).
    #[error("tunnel credentials: {0}")]
    Load(#[source] LoadError),
    /// The token names an edge address that is not `host:port`.
    #[error("the token's edge address #{index} is not a valid host:port: {reason}")]
    TokenEdge {
        /// 0-based position in the token's list.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The configured tunnel is not the one the credentials are for.
    #[error(
        "the config names tunnel {configured}, but the credentials{} are for tunnel {found}",
        file.as_ref().map(|f| format!(" in {}", f.display())).unwrap_or_default()
    )]
    TunnelMismatch {
        /// `tunnel` from the config or the command line.
        configured: Uuid,
        /// The credentials' `TunnelID`.
        found: Uuid,
        /// The credentials file, when they came from one.
        file: Option<PathBuf>,
    },
}

impl ConnectorConfig {
    /// Loads the tunnel's credentials: the `credentials-file` if set (checked with
    /// `credentials-permissions`), else the `token`. A token's `zt_edge` addresses and
    /// `zt_ca` fingerprint are copied into `edge` and `edge-ca-fingerprint` when the
    /// configuration has none of its own. A `tunnel` given as a UUID must match the
    /// credentials.
    pub fn load_credentials(&mut self) -> Result<TunnelCredentials, CredentialsError> {
        let (creds, file) = if let Some(path) = &self.credentials_file {
            let creds = TunnelCredentials::load(path, self.credentials_permissions)
                .map_err(CredentialsError::Load)?;
            (creds, Some(path.clone()))
        } else if let Some(token) = &self.token {
            if self.edge.is_empty() {
                let mut edges = Vec::with_capacity(token.edge.len());
                for (index, e) in token.edge.iter().enumerate() {
                    let addr: EdgeAddr = e.parse().map_err(|err: crate::ValueError| {
                        CredentialsError::TokenEdge {
                            index,
                            reason: err.to_string(),
                        }
                    })?;
                    edges.push(addr);
                }
                self.edge = edges;
            }
            if self.edge_ca_fingerprint.is_none() && self.cacert.is_none() {
                self.edge_ca_fingerprint = token.ca_fingerprint;
            }
            (token.credentials(), None)
        } else {
            return Err(CredentialsError::Missing);
        };
        if let Some(TunnelRef::Id(configured)) = &self.tunnel {
            if *configured != creds.tunnel_id {
                return Err(CredentialsError::TunnelMismatch {
                    configured: *configured,
                    found: creds.tunnel_id,
                    file,
                });
            }
        }
        Ok(creds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zt_creds::{ExistingFile, PermissionMode, TunnelSecret, TunnelToken};

    fn creds() -> TunnelCredentials {
        TunnelCredentials {
            account_tag: "0123456789abcdef0123456789abcdef".into(),
            tunnel_id: "8e343b13-a087-48ea-825f-9783931ff2a5".parse().unwrap(),
            tunnel_name: None,
            secret: TunnelSecret::generate(),
            endpoint: None,
        }
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_file_is_refused_by_default_and_loaded_when_lenient() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.json");
        let written = creds();
        written.write(&path, ExistingFile::Refuse).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut config = ConnectorConfig {
            credentials_file: Some(path.clone()),
            ..ConnectorConfig::default()
        };
        let err = config.load_credentials().unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, CredentialsError::Load(_)), "{err:?}");
        assert!(text.contains("credentials-permissions: lenient"), "{text}");
        assert!(text.contains("defaultMode: 0440"), "{text}");
        config.credentials_permissions = PermissionMode::Lenient;
        assert_eq!(config.load_credentials().unwrap(), written);
    }

    #[test]
    fn tunnel_must_match_the_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.json");
        creds().write(&path, ExistingFile::Refuse).unwrap();
        let other: Uuid = "00000000-0000-4000-8000-000000000001".parse().unwrap();
        let mut config = ConnectorConfig {
            credentials_file: Some(path),
            tunnel: Some(TunnelRef::Id(other)),
            ..ConnectorConfig::default()
        };
        let err = config.load_credentials().unwrap_err();
        assert!(
            matches!(err, CredentialsError::TunnelMismatch { configured, .. } if configured == other),
            "{err:?}"
        );
        assert!(err.to_string().contains("creds.json"));
    }

    #[test]
    fn token_fills_edge_and_fingerprint_but_not_over_configured_ones() {
        let mut token = TunnelToken::from_credentials(creds());
        token.edge = vec!["edge.example:7844".into(), "[2001:db8::1]:7844".into()];
        token.ca_fingerprint = Some("ab".repeat(32).parse().unwrap());
        let mut config = ConnectorConfig {
            token: Some(token.clone()),
            ..ConnectorConfig::default()
        };
        let loaded = config.load_credentials().unwrap();
        assert_eq!(loaded.tunnel_id, token.tunnel_id);
        assert_eq!(config.edge.len(), 2);
        assert_eq!(config.edge_ca_fingerprint, token.ca_fingerprint);

        let mine: EdgeAddr = "127.0.0.1:7844".parse().unwrap();
        let mut config = ConnectorConfig {
            token: Some(token.clone()),
            edge: vec![mine.clone()],
            cacert: Some("/etc/zt/ca.pem".into()),
            ..ConnectorConfig::default()
        };
        config.load_credentials().unwrap();
        assert_eq!(config.edge, vec![mine]);
        assert_eq!(
            config.edge_ca_fingerprint, None,
            "cacert is already the trust"
        );

        token.edge = vec!["no port".into()];
        let mut config = ConnectorConfig {
            token: Some(token),
            ..ConnectorConfig::default()
        };
        assert!(matches!(
            config.load_credentials(),
            Err(CredentialsError::TokenEdge { index: 0, .. })
        ));
        assert!(matches!(
            ConnectorConfig::default().load_credentials(),
            Err(CredentialsError::Missing)
        ));
    }
}
