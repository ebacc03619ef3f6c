//! What the edge knows about one identity provider, and the secret type its credentials use.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

/// A credential string (client secret, access or refresh token, device code): zeroized on
/// drop, and its `Debug` prints `<redacted>`, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(Zeroizing<String>);

impl ClientSecret {
    /// Wrap a secret.
    pub fn new(secret: String) -> Self {
        ClientSecret(Zeroizing::new(secret))
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The default clock skew allowed on `exp`, `nbf` and `iat`.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// What the edge knows about one IdP (from `zt idp add`).
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    /// The exact issuer URL (`https://` only); discovery and ID tokens must name it byte for byte.
    pub issuer: String,
    /// The client id registered at the IdP.
    pub client_id: String,
    /// The client secret, only where the IdP insists on a confidential client.
    pub client_secret: Option<ClientSecret>,
    /// Scopes to ask for; `openid` is always sent even if absent here.
    pub scopes: Vec<String>,
    /// The claim holding the user's groups (default `groups`).
    pub groups_claim: String,
    /// Email domains allowed to sign in; empty allows any. Compared case-insensitively with the
    /// verified email's domain.
    pub allowed_domains: Vec<String>,
    /// Extra trust anchors (PEM) besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Extra trust anchors given as PEM text (as the edge stores them with the provider's
    /// record), besides the system roots and `ca_file`.
    pub ca_pem: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat` (default 60 s).
    pub clock_skew: Duration,
}

impl ProviderSettings {
    /// Settings with the defaults: scopes `openid email profile`, groups claim `groups`, any
    /// domain, system roots only, 60 s skew, a public client.
    pub fn new(issuer: impl Into<String>, client_id: impl Into<String>) -> Self {
        ProviderSettings {
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: None,
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            groups_claim: "groups".into(),
            allowed_domains: Vec::new(),
            ca_file: None,
            ca_pem: None,
            clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }

    /// The scope parameter: `openid` first, then the configured scopes without repeats.
    pub fn scope_param(&self) -> String {
        let mut out = vec!["openid"];
        for s in &self.scopes {
            let s = s.trim();
            if !s.is_empty() && !out.contains(&s) {
                out.push(s);
            }
        }
        out.join(" ")
    }
}
