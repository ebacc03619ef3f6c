//! The identity providers the edge has talked to for `zt login`, discovered on first use
//! and again when their record changes; their signing keys refreshed on a schedule.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tracing::warn;
use uuid::Uuid;
use zt_oidc::{OidcError, Provider, ProviderSettings};

use crate::store::IdentityProvider;

/// How often the providers' signing keys are fetched again.
pub(crate) const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// The providers the edge has talked to, by record id; discovered on first use and again
/// when their record changes.
#[derive(Default)]
pub(crate) struct Providers {
    live: Mutex<HashMap<Uuid, (u64, Provider)>>,
}

impl Providers {
    /// The live provider for `record`: the cached one when the record has not changed,
    /// else a fresh discovery (whose failure is not cached).
    pub(crate) async fn get(&self, record: &IdentityProvider) -> Result<Provider, OidcError> {
        if let Some((version, p)) = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&record.id)
        {
            if *version == record.version {
                return Ok(p.clone());
            }
        }
        let provider = Provider::discover(settings_of(record)).await?;
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(record.id, (record.version, provider.clone()));
        Ok(provider)
    }

    /// Fetches every cached provider's keys again; a provider that is down keeps its keys.
    pub(crate) async fn refresh_all(&self) {
        let providers: Vec<Provider> = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|(_, p)| p.clone())
            .collect();
        for p in providers {
            if let Err(e) = p.refresh_keys().await {
                warn!(issuer = %p.settings().issuer, error = %e, "cannot refresh the provider's signing keys; keeping the cached ones");
            }
        }
    }
}

fn settings_of(record: &IdentityProvider) -> ProviderSettings {
    let mut s = ProviderSettings::new(record.issuer.clone(), record.client_id.clone());
    s.client_secret = record.client_secret.clone().map(zt_oidc::ClientSecret::new);
    s.scopes = record.scopes.clone();
    s.groups_claim = record.groups_claim.clone();
    s.allowed_domains = record.allowed_domains.clone();
    s.ca_pem = record.ca_pem.clone();
    s
}
