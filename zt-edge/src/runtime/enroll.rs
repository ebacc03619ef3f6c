//! The edge's side of the enrollment exchange (`zt login`, `zt logout`): see zt-proto's
//! `enroll` module for the messages.
//!
//! Bounds: the exchange needs the source's failure budget (the one registrations spend);
//! at most [`MAX_ENROLLMENTS`] run at once; the hello must come within the registration
//! timeout; a browser sign-in has [`BROWSER_TIMEOUT`] and a device-code sign-in the code's
//! own lifetime (at most [`DEVICE_TIMEOUT`]). Every failure that is the laptop's doing
//! (malformed messages, a bad possession signature, a token that fails a check) spends one
//! failure of the source's budget and writes one audit line; an unreachable provider spends
//! nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info, warn};
use uuid::Uuid;
use zt_creds::DevicePublicKey;
use zt_oidc::OidcError;
use zt_proto::{
    from_hex, login_nonce, possession_message, to_hex, EnrollDecoder, EnrollFlow, EnrollMessage,
    Exporter, CHALLENGE_LEN, ENROLL_VERSION,
};

use super::auth::EdgeAuthenticator;
use super::shared::Shared;
use crate::audit::LoginRecord;
use crate::store::{Device, DeviceLogin, IdentityProvider, IdpSubject, User};
use crate::timestamp::Timestamp;

/// Most enrollment exchanges served at once.
pub(crate) const MAX_ENROLLMENTS: usize = 64;
/// How long a browser sign-in may take, from the hello to the code.
pub(crate) const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest a device-code sign-in may take, whatever the provider says.
pub(crate) const DEVICE_TIMEOUT: Duration = Duration::from_secs(900);

/// Why an exchange failed: what the laptop is told, and whether it spends the source's
/// failure budget.
struct Refusal {
    code: &'static str,
    message: String,
    counts: bool,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>, counts: bool) -> Self {
        Self {
            code,
            message: message.into(),
            counts,
        }
    }
}

impl From<OidcError> for Refusal {
    fn from(e: OidcError) -> Self {
        let (code, counts) = match &e {
            OidcError::WrongIssuer { .. } => ("issuer", true),
            OidcError::Expired { .. } | OidcError::NotYetValid { .. } => ("clock_skew", true),
            OidcError::WrongAudience { .. }
            | OidcError::UntrustedAudience { .. }
            | OidcError::AzpMismatch { .. } => ("audience", true),
            OidcError::AlgNotAllowed { .. }
            | OidcError::KeyMismatch { .. }
            | OidcError::UnknownKid { .. }
            | OidcError::BadSignature { .. } => ("signature", true),
            OidcError::NonceMismatch { .. } | OidcError::NonceReplayed => ("nonce", true),
            OidcError::EmailNotVerified { .. } => ("email_not_verified", true),
            OidcError::EmailMissing { .. } => ("email_missing", true),
            OidcError::DomainNotAllowed { .. } => ("domain_not_allowed", true),
            OidcError::GroupsClaimMissing { .. } | OidcError::GroupsClaimMalformed { .. } => {
                ("groups_claim_missing", true)
            }
            OidcError::IdpUnreachable { .. } => ("idp_unreachable", false),
            OidcError::IdpError { .. } => ("idp_error", true),
            OidcError::DeviceDenied => ("denied", false),
            OidcError::DeviceExpired { .. } => ("timeout", false),
            _ => ("idp", true),
        };
        Refusal::new(code, e.to_string(), counts)
    }
}

/// One exchange's facts for its audit line.
struct Facts {
    flow: Option<EnrollFlow>,
    idp: Option<String>,
    email: Option<String>,
    subject: Option<String>,
    groups: Vec<String>,
    device_id: Option<Uuid>,
    login_session: Option<Uuid>,
}

/// Serves one enrollment exchange on a byte stream.
pub(crate) async fn serve<R, W>(
    shared: Arc<Shared>,
    auth: Arc<EdgeAuthenticator>,
    source: SocketAddr,
    transport: &'static str,
    exporter: Exporter,
    mut recv: R,
    mut send: W,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let gate = shared.enrollments.clone();
    let Ok(_permit) = gate.try_acquire() else {
        let _ = write(
            &mut send,
            &failed(
                "busy",
                "the edge is serving too many sign-ins; try again shortly",
            ),
        )
        .await;
        return;
    };
    if !auth.limiter.admits(source.ip()) {
        let _ = write(
            &mut send,
            &failed(
                "rate_limited",
                "too many failed sign-ins from this address; try again later",
            ),
        )
        .await;
        return;
    }
    let mut facts = Facts {
        flow: None,
        idp: None,
        email: None,
        subject: None,
        groups: Vec::new(),
        device_id: None,
        login_session: None,
    };
    let mut reader = Reader {
        decoder: EnrollDecoder::new(),
        buf: vec![0u8; 4096],
    };
    let outcome = exchange(
        &shared,
        source,
        &exporter,
        &mut reader,
        &mut recv,
        &mut send,
        &mut facts,
    )
    .await;
    let (accepted, reason) = match outcome {
        Ok(answer) => {
            let _ = write(&mut send, &answer).await;
            (true, None)
        }
        Err(refusal) => {
            // Within the source's budget every refusal is logged; past it (a flood), only
            // at debug level: the budget's refusal says the rest.
            let within = !refusal.counts || auth.limiter.record_failure(source.ip());
            let _ = write(&mut send, &failed(refusal.code, &refusal.message)).await;
            if within {
                info!(remote = %source, code = refusal.code, reason = %refusal.message, "sign-in refused");
            } else {
                debug!(remote = %source, code = refusal.code, reason = %refusal.message, "sign-in refused again");
            }
            (false, Some(refusal.message))
        }
    };
    let _ = send.shutdown().await;
    let Some(flow) = facts.flow else {
        // Nothing was said yet (a probe, a malformed hello): counted, not logged per line.
        return;
    };
    let record = LoginRecord {
        time: Timestamp::now(),
        source: source.ip(),
        idp: facts.idp,
        flow: flow.as_str().to_owned(),
        transport: transport.to_owned(),
        accepted,
        email: facts.email,
        subject: facts.subject,
        groups: facts.groups,
        device_id: facts.device_id,
        login_session: facts.login_session,
        reason,
    };
    if let Err(e) = shared.audit.record_login(&record) {
        warn!(error = %e, "cannot write the sign-in's audit line");
    }
}

fn failed(code: &str, message: &str) -> EnrollMessage {
    EnrollMessage::Failed {
        code: code.to_owned(),
        message: message.to_owned(),
    }
}

async fn write<W: AsyncWrite + Unpin>(send: &mut W, msg: &EnrollMessage) -> std::io::Result<()> {
    let bytes = msg.encode().map_err(std::io::Error::other)?;
    send.write_all(&bytes).await?;
    send.flush().await
}

struct Reader {
    decoder: EnrollDecoder,
    buf: Vec<u8>,
}

impl Reader {
    async fn next<R: AsyncRead + Unpin>(
        &mut self,
        recv: &mut R,
        within: Duration,
        waiting_for: &str,
    ) -> Result<EnrollMessage, Refusal> {
        let read = async {
            loop {
                match self.decoder.next_message() {
                    Ok(Some(m)) => return Ok(m),
                    Ok(None) => {}
                    Err(e) => return Err(Refusal::new("malformed", e.to_string(), true)),
                }
                let n = recv.read(&mut self.buf).await.map_err(|e| {
                    Refusal::new("closed", format!("the laptop went away: {e}"), false)
                })?;
                if n == 0 {
                    return Err(Refusal::new(
                        "closed",
                        format!("the laptop closed the exchange before the {waiting_for}"),
                        false,
                    ));
                }
                self.decoder
                    .push(&self.buf[..n])
                    .map_err(|e| Refusal::new("malformed", e.to_string(), true))?;
            }
        };
        tokio::time::timeout(within, read).await.map_err(|_| {
            Refusal::new(
                "timeout",
                format!("no {waiting_for} within {} s", within.as_secs()),
                false,
            )
        })?
    }
}

fn unexpected(got: &EnrollMessage, wanted: &str) -> Refusal {
    Refusal::new(
        "malformed",
        format!("expected a {wanted} message, got {}", got.kind()),
        true,
    )
}

fn random<const N: usize>() -> Result<[u8; N], Refusal> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| Refusal::new("internal", "the edge's random source failed", false))?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn exchange<R, W>(
    shared: &Shared,
    source: SocketAddr,
    exporter: &Exporter,
    reader: &mut Reader,
    recv: &mut R,
    send: &mut W,
    facts: &mut Facts,
) -> Result<EnrollMessage, Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hello = reader
        .next(recv, shared.config.transport.register_timeout, "hello")
        .await?;
    let EnrollMessage::Hello {
        version,
        flow,
        idp,
        public_key,
        device_name,
        redirect_uri,
        code_challenge,
        device_id,
    } = hello
    else {
        return Err(unexpected(&hello, "hello"));
    };
    if version != ENROLL_VERSION {
        return Err(Refusal::new(
            "unsupported_version",
            format!("enrollment version {version}; this edge speaks {ENROLL_VERSION}"),
            true,
        ));
    }
    facts.flow = Some(flow);
    let public = from_hex::<32>(&public_key)
        .map(DevicePublicKey)
        .ok_or_else(|| Refusal::new("malformed", "public_key is not 64 hex digits", true))?;
    if device_name.len() > crate::store::MAX_NAME_LEN || device_name.chars().any(char::is_control) {
        return Err(Refusal::new(
            "malformed",
            "device_name is longer than 255 bytes or has control characters",
            true,
        ));
    }

    // Possession of the device key, on this connection.
    let challenge = random::<CHALLENGE_LEN>()?;
    write(
        send,
        &EnrollMessage::Challenge {
            challenge: to_hex(&challenge),
        },
    )
    .await
    .map_err(|e| Refusal::new("closed", e.to_string(), false))?;
    let possession = reader
        .next(
            recv,
            shared.config.transport.register_timeout,
            "possession signature",
        )
        .await?;
    let EnrollMessage::Possession { signature } = possession else {
        return Err(unexpected(&possession, "possession"));
    };
    let signed = possession_message(exporter, &challenge, &public.0);
    let ok = from_hex::<64>(&signature).is_some_and(|sig| public.verify(&signed, &sig));
    if !ok {
        return Err(Refusal::new(
            "possession",
            "the possession signature does not verify with the device's public key",
            true,
        ));
    }

    if flow == EnrollFlow::Logout {
        return logout(shared, public, device_id, facts);
    }

    let record = pick_provider(shared, idp.as_deref())?;
    facts.idp = Some(record.name.clone());
    let provider = shared.providers.get(&record).await.map_err(Refusal::from)?;
    let nonce = login_nonce(&challenge, &public.0);
    let tokens = match flow {
        EnrollFlow::Browser => {
            let (Some(redirect_uri), Some(code_challenge)) = (redirect_uri, code_challenge) else {
                return Err(Refusal::new(
                    "malformed",
                    "the browser flow needs redirect_uri and code_challenge",
                    true,
                ));
            };
            check_loopback_redirect(&redirect_uri)?;
            // The browser is about to be sent to the provider: make sure it answers (and
            // pick up a rotated key) rather than leave the person at an error page while
            // the laptop waits for a redirect that cannot come.
            provider.refresh_keys().await?;
            let state = to_hex(&random::<16>()?);
            let url = provider.authorization_url(&redirect_uri, &state, &nonce, &code_challenge);
            write(
                send,
                &EnrollMessage::Authorize {
                    url,
                    state: state.clone(),
                },
            )
            .await
            .map_err(|e| Refusal::new("closed", e.to_string(), false))?;
            let code = reader
                .next(
                    recv,
                    BROWSER_TIMEOUT,
                    "authorization code (browser sign-in)",
                )
                .await?;
            let EnrollMessage::Code {
                code,
                state: came,
                code_verifier,
            } = code
            else {
                return Err(unexpected(&code, "code"));
            };
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                came.as_bytes(),
                state.as_bytes(),
            )) {
                return Err(Refusal::new(
                    "state",
                    "the redirect's state is not the one this sign-in sent",
                    true,
                ));
            }
            provider
                .redeem_code(&code, &code_verifier, &redirect_uri)
                .await?
        }
        EnrollFlow::DeviceCode => {
            let auth = provider.start_device(&nonce).await?;
            write(
                send,
                &EnrollMessage::DeviceCode {
                    user_code: auth.user_code.clone(),
                    verification_uri: auth.verification_uri.clone(),
                    verification_uri_complete: auth.verification_uri_complete.clone(),
                    expires_in: auth.expires_in.as_secs(),
                },
            )
            .await
            .map_err(|e| Refusal::new("closed", e.to_string(), false))?;
            let within = auth.expires_in.min(DEVICE_TIMEOUT);
            match tokio::time::timeout(within, provider.poll_device(&auth)).await {
                Ok(tokens) => tokens?,
                Err(_) => {
                    return Err(Refusal::new(
                        "timeout",
                        format!(
                            "the device code was not approved within {} s",
                            within.as_secs()
                        ),
                        false,
                    ))
                }
            }
        }
        EnrollFlow::Logout => unreachable!("handled above"),
    };
    // The browser flow's request carries the nonce and the ID token must return it. The
    // device grant has no nonce of its own (RFC 8628): providers may drop it, and the binding
    // to this key is that the edge itself asked for and redeemed the device code on this
    // exchange.
    let expected_nonce = (flow == EnrollFlow::Browser).then_some(nonce.as_str());
    let login = provider.verify(&tokens, expected_nonce).await?;
    facts.email = Some(login.email.clone());
    facts.subject = Some(login.subject.clone());
    facts.groups = login.groups.clone();
    enroll(shared, &record, login, public, device_name, source, facts)
}

/// The provider a hello names, or the only one.
fn pick_provider(shared: &Shared, name: Option<&str>) -> Result<IdentityProvider, Refusal> {
    let all: Vec<IdentityProvider> = shared
        .state
        .db()
        .read()
        .and_then(|txn| txn.list())
        .map_err(|e| Refusal::new("internal", format!("cannot read providers: {e}"), false))?;
    let names = || all.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    match name {
        Some(name) => all
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .cloned()
            .ok_or_else(|| {
                Refusal::new(
                    "unknown_idp",
                    format!(
                        "this edge has no identity provider {name:?} (it has {:?})",
                        names()
                    ),
                    true,
                )
            }),
        None => match all.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Refusal::new(
                "no_idp",
                "this edge has no identity provider; an administrator adds one with `zt idp add`",
                false,
            )),
            _ => Err(Refusal::new(
                "which_idp",
                format!(
                    "this edge has several identity providers; name one with --idp ({:?})",
                    names()
                ),
                false,
            )),
        },
    }
}

/// Only loopback redirects (RFC 8252 §7.3): the code must come back to the laptop itself.
fn check_loopback_redirect(uri: &str) -> Result<(), Refusal> {
    let rest = uri.strip_prefix("http://").unwrap_or("");
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => host,
    };
    if matches!(host, "127.0.0.1" | "[::1]") && uri.len() <= 512 {
        Ok(())
    } else {
        Err(Refusal::new(
            "malformed",
            "redirect_uri must be http://127.0.0.1:PORT/… or http://[::1]:PORT/…",
            true,
        ))
    }
}

fn enroll(
    shared: &Shared,
    provider: &IdentityProvider,
    login: zt_oidc::VerifiedLogin,
    public: DevicePublicKey,
    device_name: String,
    source: SocketAddr,
    facts: &mut Facts,
) -> Result<EnrollMessage, Refusal> {
    let length = shared.sign_in_length(provider);
    let now = SystemTime::now();
    let session = DeviceLogin {
        provider_id: provider.id,
        provider: provider.name.clone(),
        groups: login.groups.clone(),
        session_id: Uuid::new_v4(),
        signed_in_at: Timestamp::from_system_time(now),
        expires_at: Timestamp::from_system_time(now + length),
        renewed_at: None,
    };
    let subject = IdpSubject {
        issuer: login.issuer.clone(),
        subject: login.subject.clone(),
    };
    let written = shared.state.db().update(|txn| -> Result<_, crate::StoreError> {
        let users: Vec<User> = txn.list()?;
        let mut user = match users
            .iter()
            .find(|u| u.idp_subject.as_ref() == Some(&subject))
        {
            Some(u) => u.clone(),
            None => {
                if let Some(other) = txn.user_by_email(&login.email)? {
                    return Ok(Err(Refusal::new(
                        "email_taken",
                        format!(
                            "a user {} exists that did not sign in through {} (made with `zt user add`?); users are matched by the provider's subject, never by email alone: an administrator removes or renames that user first",
                            other.email, provider.name
                        ),
                        false,
                    )));
                }
                let mut u = User::new(login.email.clone(), Vec::new());
                u.idp_subject = Some(subject.clone());
                u
            }
        };
        // The provider's email is the current one.
        user.email = login.email.clone();
        txn.put(&user)?;
        let devices: Vec<Device> = txn.list()?;
        let device = match devices.iter().find(|d| d.public_key == Some(public)) {
            Some(d) if d.user_id != user.id => {
                return Ok(Err(Refusal::new(
                    "key_taken",
                    "this device key is enrolled for another user; run `zt login` with a new key",
                    true,
                )))
            }
            Some(d) => {
                let mut d = d.clone();
                d.login = Some(session.clone());
                d.revoked = false;
                d
            }
            None => Device::enrolled(user.id, device_name.clone(), public, session.clone()),
        };
        let mut device = device;
        // The provider's refresh token renews this sign-in before it ends; kept sealed.
        let refresh = login.refresh_token.as_ref().map(|t| t.expose());
        if device.set_refresh_token(&shared.secrets, refresh).is_err() {
            return Ok(Err(Refusal::new(
                "internal",
                "cannot seal the refresh token",
                false,
            )));
        }
        txn.put(&device)?;
        Ok(Ok((user, device, txn.default_vnet()?.map(|v| v.id))))
    });
    let (user, device, vnet) = match written {
        Ok((Ok(done), _)) => done,
        Ok((Err(refusal), _)) => return Err(refusal),
        Err(e) => {
            return Err(Refusal::new(
                "internal",
                format!("cannot record the sign-in: {e}"),
                false,
            ))
        }
    };
    facts.device_id = Some(device.id);
    facts.login_session = Some(session.session_id);
    info!(remote = %source, user = %user.email, device = %device.id, idp = %provider.name, groups = ?login.groups, renewable = device.refresh_token.is_some(), "signed in");
    Ok(EnrollMessage::Enrolled {
        device_id: device.id,
        email: user.email,
        idp: provider.name.clone(),
        groups: login.groups,
        expires_at: session.expires_at.to_string(),
        default_vnet: vnet,
    })
}

fn logout(
    shared: &Shared,
    public: DevicePublicKey,
    device_id: Option<Uuid>,
    facts: &mut Facts,
) -> Result<EnrollMessage, Refusal> {
    let Some(device_id) = device_id else {
        return Err(Refusal::new("malformed", "logout needs device_id", true));
    };
    facts.device_id = Some(device_id);
    let written = shared
        .state
        .db()
        .update(|txn| -> Result<_, crate::StoreError> {
            let device: Option<Device> = txn.get(device_id)?;
            match device {
                // The signature was made with this key, so only the device itself gets here.
                Some(mut d) if d.public_key == Some(public) => {
                    facts.idp = d.login.as_ref().map(|l| l.provider.clone());
                    facts.login_session = d.login.as_ref().map(|l| l.session_id);
                    d.revoked = true;
                    txn.put(&d)?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        });
    match written {
        Ok((true, _)) => {
            debug!(device = %device_id, "logged out");
            Ok(EnrollMessage::LoggedOut { device_id })
        }
        Ok((false, _)) => Err(Refusal::new(
            "unknown_device",
            "no device with this id and key at this edge",
            true,
        )),
        Err(e) => Err(Refusal::new(
            "internal",
            format!("cannot record the logout: {e}"),
            false,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_redirects_are_accepted() {
        for ok in [
            "http://127.0.0.1:5000/callback",
            "http://[::1]:80/cb",
            "http://127.0.0.1/callback",
        ] {
            assert!(check_loopback_redirect(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://127.0.0.1:5000/callback",
            "http://127.0.0.1.evil.example/cb",
            "http://evil.example/cb",
            "http://127.0.0.1@evil.example/cb",
            "",
        ] {
            assert!(check_loopback_redirect(bad).is_err(), "{bad}");
        }
    }
}
