//! Renewing a device's sign-in before it ends, with the refresh token its identity provider
//! gave at `zt login` (RFC 6749 §6, OpenID Connect Core §12).
//!
//! The device's live sessions ask for the renewal when the end nears (see `clients`), so a
//! laptop that is not connected is never renewed and its sign-in ends on time. One renewal
//! runs per device at a time; the others wait for it and find the end already moved. The
//! provider answers with a new ID token, checked as a sign-in's is (same subject, email,
//! domain, groups), so a user the provider disabled or moved out of a group loses that at
//! the renewal. A refusal (`invalid_grant`: the token was revoked or expired at the
//! provider) is final: the token is forgotten and the session ends at its time, telling
//! the client to run `zt login`. An unreachable provider is tried again until the end.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};
use uuid::Uuid;
use zt_oidc::{ClientSecret, OidcError};

use super::shared::Shared;
use crate::audit::LoginRecord;
use crate::store::{Device, IdentityProvider, User};
use crate::timestamp::Timestamp;

/// The longest ahead of its end a sign-in is renewed.
const MAX_AHEAD: Duration = Duration::from_secs(300);

/// How long before `expires_at` a sign-in that began (or was last renewed) at `since` is
/// renewed: a fifth of its length, at most [`MAX_AHEAD`].
pub(crate) fn ahead(since: Timestamp, expires_at: Timestamp) -> Duration {
    let length = expires_at
        .to_system_time()
        .duration_since(since.to_system_time())
        .unwrap_or_default();
    (length / 5).min(MAX_AHEAD)
}

/// Why a renewal did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RenewError {
    /// It cannot succeed (no token, the provider refused it, the user changed): the
    /// sign-in ends at its time. The words are for the client.
    Final(String),
    /// It may succeed later (the provider is unreachable or failing).
    Transient(String),
}

/// Renews `device`'s sign-in when it is within [`ahead`] of its end. `Ok(Some(end))` is the
/// new end; `Ok(None)` says there was nothing to do (another session renewed it, or a new
/// sign-in replaced it). `source` and `transport` are the asking session's, for the audit.
pub(crate) async fn renew(
    shared: &Shared,
    device_id: Uuid,
    source: SocketAddr,
    transport: &str,
) -> Result<Option<Timestamp>, RenewError> {
    let began = std::time::Instant::now();
    let lock = shared.renewals.lock_of(device_id);
    let _one = lock.lock().await;
    let mut facts = Facts::default();
    let outcome = attempt(shared, device_id, &mut facts).await;
    if facts.audited {
        let (accepted, reason) = match &outcome {
            Ok(_) => (true, None),
            Err(RenewError::Final(r) | RenewError::Transient(r)) => (false, Some(r.clone())),
        };
        let record = LoginRecord {
            time: Timestamp::now(),
            source: source.ip(),
            idp: facts.idp,
            flow: "refresh".to_owned(),
            transport: transport.to_owned(),
            accepted,
            email: facts.email,
            subject: facts.subject,
            groups: facts.groups,
            device_id: Some(device_id),
            login_session: facts.login_session,
            reason,
        };
        if let Err(e) = shared.audit.record_login(&record) {
            warn!(error = %e, "cannot write the renewal's audit line");
        }
    }
    match &outcome {
        Ok(Some(end)) => {
            info!(device = %device_id, until = %end, took_ms = began.elapsed().as_millis() as u64, "sign-in renewed with the provider's refresh token")
        }
        Ok(None) => {}
        Err(RenewError::Final(why)) => {
            warn!(device = %device_id, reason = %why, "the sign-in cannot be renewed; it ends at its time")
        }
        Err(RenewError::Transient(why)) => {
            warn!(device = %device_id, reason = %why, "cannot renew the sign-in now; trying again")
        }
    }
    outcome
}

/// What the audit line says.
#[derive(Default)]
struct Facts {
    /// Whether the renewal got far enough to say anything (a refresh was due).
    audited: bool,
    idp: Option<String>,
    email: Option<String>,
    subject: Option<String>,
    groups: Vec<String>,
    login_session: Option<Uuid>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> RenewError {
    RenewError::Transient(format!("{what}: {e}"))
}

async fn attempt(
    shared: &Shared,
    device_id: Uuid,
    facts: &mut Facts,
) -> Result<Option<Timestamp>, RenewError> {
    let db = shared.state.db();
    let (device, user, record) = {
        let txn = db
            .read()
            .map_err(|e| internal("cannot read the device", e))?;
        let device: Option<Device> = txn
            .get(device_id)
            .map_err(|e| internal("cannot read the device", e))?;
        let Some(device) = device.filter(|d| !d.revoked) else {
            return Err(RenewError::Final("the device is revoked or removed".into()));
        };
        let user: Option<User> = txn
            .get(device.user_id)
            .map_err(|e| internal("cannot read the user", e))?;
        let Some(user) = user else {
            return Err(RenewError::Final("the user is removed".into()));
        };
        let record: Option<IdentityProvider> = match &device.login {
            Some(l) => txn
                .get(l.provider_id)
                .map_err(|e| internal("cannot read the identity provider", e))?,
            None => None,
        };
        (device, user, record)
    };
    let Some(login) = device.login.clone() else {
        return Err(RenewError::Final(
            "the device has no sign-in to renew".into(),
        ));
    };
    let since = login.renewed_at.unwrap_or(login.signed_in_at);
    let left = login
        .expires_at
        .to_system_time()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    if left > ahead(since, login.expires_at) {
        return Ok(None);
    }
    facts.audited = true;
    facts.idp = Some(login.provider.clone());
    facts.login_session = Some(login.session_id);
    facts.email = Some(user.email.clone());
    let token = match device.refresh_token(&shared.secrets) {
        Ok(Some(t)) => ClientSecret::new(t),
        Ok(None) => {
            return Err(RenewError::Final(
                "the identity provider gave no refresh token at sign-in".into(),
            ))
        }
        Err(_) => {
            return Err(RenewError::Final(
                "the kept refresh token does not open with this edge's secrets key".into(),
            ))
        }
    };
    let Some(subject) = user.idp_subject.as_ref().map(|s| s.subject.clone()) else {
        return Err(RenewError::Final(
            "the user is not one of an identity provider".into(),
        ));
    };
    facts.subject = Some(subject.clone());
    let Some(record) = record else {
        return Err(RenewError::Final(format!(
            "the identity provider {} is removed from this edge",
            login.provider
        )));
    };
    let provider = shared
        .providers
        .get(&record)
        .await
        .map_err(|e| RenewError::Transient(e.to_string()))?;
    let tokens = provider.refresh(&token).await.map_err(|e| classify(&e))?;
    let verified = provider
        .verify_refreshed(&tokens, &subject)
        .await
        .map_err(|e| classify(&e))?;
    facts.email = Some(verified.email.clone());
    facts.groups = verified.groups.clone();

    let length = shared.sign_in_length(&record);
    let renewed_at = Timestamp::now();
    let end = Timestamp::from_system_time(renewed_at.to_system_time() + length);
    let rotated = verified
        .refresh_token
        .as_ref()
        .map(|t| t.expose().to_owned());
    let written = db.update(|txn| -> Result<_, crate::StoreError> {
        let current: Option<Device> = txn.get(device_id)?;
        let Some(mut d) = current.filter(|d| !d.revoked) else {
            return Ok(Err(RenewError::Final(
                "the device was revoked during the renewal".into(),
            )));
        };
        // A new sign-in meanwhile has its own end and token.
        let Some(l) = d
            .login
            .as_mut()
            .filter(|l| l.session_id == login.session_id)
        else {
            return Ok(Ok(false));
        };
        l.groups = verified.groups.clone();
        l.expires_at = end;
        l.renewed_at = Some(renewed_at);
        if let Some(t) = &rotated {
            if d.set_refresh_token(&shared.secrets, Some(t)).is_err() {
                return Ok(Err(RenewError::Transient(
                    "cannot seal the new refresh token".into(),
                )));
            }
        }
        txn.put(&d)?;
        Ok(Ok(true))
    });
    match written {
        Ok((Ok(true), _)) => Ok(Some(end)),
        Ok((Ok(false), _)) => Ok(None),
        Ok((Err(e), _)) => Err(e),
        Err(e) => Err(internal("cannot record the renewal", e)),
    }
}

/// A provider's refusal is final; its being unreachable or failing is not.
fn classify(e: &OidcError) -> RenewError {
    match e {
        OidcError::IdpUnreachable { .. } => RenewError::Transient(e.to_string()),
        OidcError::IdpError { error, status, .. } => {
            let refused = matches!(
                error.as_deref(),
                Some("invalid_grant" | "invalid_client" | "unauthorized_client" | "invalid_scope")
            );
            if refused || (400..500).contains(status) && error.is_some() {
                RenewError::Final(format!(
                    "the identity provider would not renew the sign-in ({e})"
                ))
            } else {
                RenewError::Transient(e.to_string())
            }
        }
        _ => RenewError::Final(format!("the renewed sign-in failed a check: {e}")),
    }
}

/// Forgets `device`'s refresh token after a final refusal, so no session asks again.
pub(crate) fn forget_token(shared: &Shared, device_id: Uuid) {
    let result = shared
        .state
        .db()
        .update(|txn| -> Result<(), crate::StoreError> {
            let d: Option<Device> = txn.get(device_id)?;
            if let Some(mut d) = d.filter(|d| d.refresh_token.is_some()) {
                d.refresh_token = None;
                txn.put(&d)?;
            }
            Ok(())
        });
    if let Err(e) = result {
        warn!(device = %device_id, error = %e, "cannot forget the refused refresh token");
    }
}
