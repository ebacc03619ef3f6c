//! One live IdP: its discovery document, the cached JWKS (refreshed on an unknown `kid`,
//! rate-limited, and on the edge's schedule), the code and device grants, and the login
//! checks that come after the ID token's own: userinfo, verified email, domain, groups, and
//! the nonce replay ledger.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use hyper::Method;
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use crate::discovery::{check_https_url, Discovery};
use crate::error::{bounded, OidcError};
use crate::http::{form_encode, Auth, Body, HttpClient};
use crate::jwks::Jwks;
use crate::settings::{ClientSecret, ProviderSettings};
use crate::verify::{email_verified, opt_str, verify_id_token, Checks, IdTokenClaims};

/// At most one JWKS refresh per this long is caused by unknown `kid`s, so a stream of tokens
/// with made-up key ids cannot make the edge hammer its IdP.
pub const DEFAULT_KEY_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(30);

/// Nonces remembered at once. A login claims one until its token expires (an hour at most
/// IdPs); this many concurrent valid logins is far beyond one edge's staff.
pub const NONCE_LEDGER_CAPACITY: usize = 100_000;

/// Longest device-code lifetime honoured; RFC 8628 suggests minutes.
const MAX_DEVICE_LIFETIME: Duration = Duration::from_secs(3600);
/// Device-grant polling interval when the IdP names none (RFC 8628 §3.2).
const DEFAULT_DEVICE_INTERVAL: Duration = Duration::from_secs(5);
/// Most groups taken from one login.
const MAX_GROUPS: usize = 1024;

/// Tokens from the token endpoint. `Debug` shows none of them.
#[derive(Clone)]
pub struct Tokens {
    /// The ID token (a JWS), still to be verified.
    pub id_token: String,
    /// The access token, for userinfo.
    pub access_token: Option<ClientSecret>,
    /// The refresh token, when the IdP issued one.
    pub refresh_token: Option<ClientSecret>,
    /// The access token's lifetime.
    pub expires_in: Option<Duration>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("id_token", &"<redacted>")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A started device-authorization grant (RFC 8628 §3.2).
#[derive(Clone, Debug)]
pub struct DeviceAuthorization {
    /// The device code the edge polls with (secret).
    pub device_code: ClientSecret,
    /// The code the user types at the IdP.
    pub user_code: String,
    /// Where the user goes.
    pub verification_uri: String,
    /// The same with the code filled in, when the IdP offers it.
    pub verification_uri_complete: Option<String>,
    /// How long the device code lives (capped at one hour).
    pub expires_in: Duration,
    /// How long to wait between polls.
    pub interval: Duration,
    /// When the IdP answered; polling gives up at `issued_at + expires_in`.
    pub issued_at: Instant,
}

/// A login that passed every check.
#[derive(Clone, Debug)]
pub struct VerifiedLogin {
    /// The issuer; with `subject`, the user's key.
    pub issuer: String,
    /// The IdP's stable user id.
    pub subject: String,
    /// The verified email (allowed domain).
    pub email: String,
    /// The groups from the configured claim.
    pub groups: Vec<String>,
    /// The display name, when the IdP gave one.
    pub name: Option<String>,
    /// The ID token's expiry.
    pub expires_at: SystemTime,
    /// The refresh token, when the IdP issued one.
    pub refresh_token: Option<ClientSecret>,
}

/// A live IdP. Cheap to clone; clones share the key cache and the nonce ledger.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ProviderSettings,
    discovery: Discovery,
    http: HttpClient,
    keys: RwLock<Arc<Jwks>>,
    /// When an unknown `kid` last caused a refresh.
    last_kid_refresh: Mutex<Option<Instant>>,
    min_refresh_millis: AtomicU64,
    ledger: Mutex<NonceLedger>,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.inner.settings.issuer)
            .field("kids", &self.keys().kids())
            .finish()
    }
}

impl Provider {
    /// Read the IdP's discovery document (checked against the configured issuer) and its JWKS.
    pub async fn discover(settings: ProviderSettings) -> Result<Provider, OidcError> {
        check_https_url("settings", "issuer", &settings.issuer)
            .map_err(|e| OidcError::Settings(format!("issuer {:?}: {e}", settings.issuer)))?;
        if settings.client_id.is_empty() {
            return Err(OidcError::Settings("client id is empty".into()));
        }
        let http = HttpClient::new(&settings)?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            settings.issuer.trim_end_matches('/')
        );
        let body = http
            .request(
                "discovery document",
                Method::GET,
                &url,
                Auth::None,
                Body::Empty,
            )
            .await?;
        let discovery = Discovery::parse(&body, &settings.issuer)?;
        if !discovery.code_challenge_methods_supported.is_empty()
            && !discovery
                .code_challenge_methods_supported
                .iter()
                .any(|m| m == "S256")
        {
            warn!(issuer = %settings.issuer, "the IdP does not list S256 in code_challenge_methods_supported; PKCE may fail");
        }
        let keys = fetch_jwks(&http, &discovery.jwks_uri).await?;
        info!(issuer = %settings.issuer, keys = keys.len(), "IdP discovered");
        Ok(Provider {
            inner: Arc::new(Inner {
                settings,
                discovery,
                http,
                keys: RwLock::new(Arc::new(keys)),
                last_kid_refresh: Mutex::new(None),
                min_refresh_millis: AtomicU64::new(
                    DEFAULT_KEY_REFRESH_MIN_INTERVAL.as_millis() as u64
                ),
                ledger: Mutex::new(NonceLedger::default()),
            }),
        })
    }

    /// The settings this provider was made with.
    pub fn settings(&self) -> &ProviderSettings {
        &self.inner.settings
    }

    /// The discovery document.
    pub fn discovery(&self) -> &Discovery {
        &self.inner.discovery
    }

    /// The cached JWKS.
    pub fn keys(&self) -> Arc<Jwks> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Change how often an unknown `kid` may cause a JWKS refresh (default 30 s).
    pub fn set_key_refresh_min_interval(&self, interval: Duration) {
        self.inner.min_refresh_millis.store(
            u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Fetch the JWKS again. On failure the cached keys stay.
    pub async fn refresh_keys(&self) -> Result<(), OidcError> {
        match fetch_jwks(&self.inner.http, &self.inner.discovery.jwks_uri).await {
            Ok(keys) => {
                debug!(issuer = %self.inner.settings.issuer, kids = ?keys.kids(), "JWKS refreshed");
                *self
                    .inner
                    .keys
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
                Ok(())
            }
            Err(e) => {
                warn!(issuer = %self.inner.settings.issuer, cause = %e, "JWKS refresh failed; cached keys stay");
                Err(e)
            }
        }
    }

    /// The URL the browser opens: the authorization-code request with PKCE (`S256`), every
    /// parameter percent-encoded.
    pub fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> String {
        let endpoint = &self.inner.discovery.authorization_endpoint;
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        let params = [
            ("response_type", "code"),
            ("client_id", self.inner.settings.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", &self.inner.settings.scope_param()),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", code_challenge),
            ("code_challenge_method", "S256"),
        ]
        .into_iter()
        // OpenID Connect Core §11: a request for offline access (a refresh token) asks for
        // consent, or providers drop the scope.
        .chain(
            self.inner
                .settings
                .scopes
                .iter()
                .any(|s| s == "offline_access")
                .then_some(("prompt", "consent")),
        )
        .collect::<Vec<_>>()
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
        format!("{endpoint}{sep}{params}")
    }

    /// Redeem an authorization code (RFC 6749 §4.1.3 with the RFC 7636 verifier).
    pub async fn redeem_code(
        &self,
        code: &str,
        code_verifier: &str,
        redirect_uri: &str,
    ) -> Result<Tokens, OidcError> {
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
            ("code_verifier", code_verifier.to_owned()),
        ];
        let body = self
            .post("token response", &self.inner.discovery.token_endpoint, form)
            .await?;
        parse_tokens(&body)
    }

    /// Redeem a refresh token (RFC 6749 §6). The answer must carry a new ID token, checked
    /// with [`Provider::verify_refreshed`]; when it carries no new refresh token the old one
    /// stays valid (the provider does not rotate them).
    pub async fn refresh(&self, refresh_token: &ClientSecret) -> Result<Tokens, OidcError> {
        let form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose().to_owned()),
        ];
        let body = self
            .post("token response", &self.inner.discovery.token_endpoint, form)
            .await?;
        parse_tokens(&body)
    }

    /// Start the device-authorization grant (RFC 8628 §3.1), sending the scope and the nonce.
    pub async fn start_device(&self, nonce: &str) -> Result<DeviceAuthorization, OidcError> {
        let Some(endpoint) = &self.inner.discovery.device_authorization_endpoint else {
            return Err(OidcError::Settings(format!(
                "the IdP {} has no device_authorization_endpoint in its discovery document",
                self.inner.settings.issuer
            )));
        };
        let form = vec![
            ("scope", self.inner.settings.scope_param()),
            ("nonce", nonce.to_owned()),
        ];
        let body = self
            .post("device authorization response", endpoint, form)
            .await?;
        parse_device(&body)
    }

    /// Poll the token endpoint until the user approves, refuses, or the code expires
    /// (RFC 8628 §3.4, §3.5): `authorization_pending` waits the interval, `slow_down` adds
    /// 5 s to it for good.
    pub async fn poll_device(&self, auth: &DeviceAuthorization) -> Result<Tokens, OidcError> {
        let deadline = auth.issued_at + auth.expires_in;
        let mut interval = auth.interval;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(OidcError::DeviceExpired {
                    secs: auth.expires_in.as_secs(),
                });
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            if Instant::now() >= deadline {
                return Err(OidcError::DeviceExpired {
                    secs: auth.expires_in.as_secs(),
                });
            }
            let form = vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:device_code".to_owned(),
                ),
                ("device_code", auth.device_code.expose().to_owned()),
            ];
            match self
                .post("token response", &self.inner.discovery.token_endpoint, form)
                .await
            {
                Ok(body) => return parse_tokens(&body),
                Err(OidcError::IdpError {
                    error: Some(code),
                    url,
                    status,
                    description,
                }) => match code.as_str() {
                    "authorization_pending" => debug!("device authorization pending"),
                    "slow_down" => {
                        interval += Duration::from_secs(5);
                        debug!(interval_secs = interval.as_secs(), "IdP asked to slow down");
                    }
                    "access_denied" => return Err(OidcError::DeviceDenied),
                    "expired_token" => {
                        return Err(OidcError::DeviceExpired {
                            secs: auth.expires_in.as_secs(),
                        })
                    }
                    _ => {
                        return Err(OidcError::IdpError {
                            url,
                            status,
                            error: Some(code),
                            description,
                        })
                    }
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// Check a login: the ID token (refreshing the JWKS once on an unknown `kid`), then
    /// email, `email_verified`, the domain allow-list and the groups claim (from the ID token,
    /// else from userinfo), and last the nonce, which is claimed until the token expires.
    pub async fn verify(
        &self,
        tokens: &Tokens,
        nonce: Option<&str>,
    ) -> Result<VerifiedLogin, OidcError> {
        let claims = self.verified_claims(tokens, nonce).await?;
        self.complete(claims, tokens, true).await
    }

    /// Check the tokens of a refresh (OpenID Connect Core §12.2): the new ID token as
    /// [`Provider::verify`] does, naming the same `subject` as the sign-in it renews, and
    /// the same email, domain and groups checks, so a user the provider has since moved out
    /// of a group or an allowed domain loses that at the refresh. A nonce, when the provider
    /// repeats the original one, is not claimed again.
    pub async fn verify_refreshed(
        &self,
        tokens: &Tokens,
        subject: &str,
    ) -> Result<VerifiedLogin, OidcError> {
        let claims = self.verified_claims(tokens, None).await?;
        if claims.subject != subject {
            return Err(OidcError::RefreshSubjectChanged {
                expected: bounded(subject, 100),
                got: bounded(&claims.subject, 100),
            });
        }
        self.complete(claims, tokens, false).await
    }

    async fn verified_claims(
        &self,
        tokens: &Tokens,
        nonce: Option<&str>,
    ) -> Result<IdTokenClaims, OidcError> {
        let settings = &self.inner.settings;
        let checks = |now| Checks {
            issuer: &settings.issuer,
            client_id: &settings.client_id,
            nonce,
            now,
            skew: settings.clock_skew,
        };
        let claims =
            match verify_id_token(&tokens.id_token, &self.keys(), &checks(SystemTime::now())) {
                Err(OidcError::UnknownKid { kid, known }) => {
                    if self.may_refresh_for_kid() {
                        debug!(kid = %kid, "unknown kid; refreshing the JWKS");
                        self.refresh_keys().await?;
                    } else {
                        debug!(kid = %kid, "unknown kid; JWKS refreshed recently, not again");
                        return Err(OidcError::UnknownKid { kid, known });
                    }
                    verify_id_token(&tokens.id_token, &self.keys(), &checks(SystemTime::now()))?
                }
                other => other?,
            };
        Ok(claims)
    }

    fn may_refresh_for_kid(&self) -> bool {
        let min = Duration::from_millis(self.inner.min_refresh_millis.load(Ordering::Relaxed));
        let mut last = self
            .inner
            .last_kid_refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < min => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    async fn complete(
        &self,
        claims: IdTokenClaims,
        tokens: &Tokens,
        claim_nonce: bool,
    ) -> Result<VerifiedLogin, OidcError> {
        let settings = &self.inner.settings;
        let group_claim = settings.groups_claim.as_str();
        let need_userinfo = claims.email.is_none()
            || claims.email_verified != Some(true)
            || !claims.claims.contains_key(group_claim);
        let userinfo = match (
            &self.inner.discovery.userinfo_endpoint,
            &tokens.access_token,
            need_userinfo,
        ) {
            (Some(endpoint), Some(access), true) => {
                Some(self.userinfo(endpoint, access, &claims.subject).await?)
            }
            _ => None,
        };
        // The email and its verified flag: the ID token's, else userinfo's; userinfo may
        // vouch for the ID token's email only when it names the same address.
        let (info_email, info_verified) = match &userinfo {
            Some(info) => (
                opt_str_doc(info, "email", "userinfo response")?,
                email_verified(info).map_err(|_| {
                    OidcError::malformed("userinfo response", "email_verified", "not a boolean")
                })?,
            ),
            None => (None, None),
        };
        let (email, verified) = match (claims.email.clone(), info_email) {
            (Some(id_email), Some(info_email))
                if claims.email_verified != Some(true) && id_email == info_email =>
            {
                (Some(id_email), info_verified.or(claims.email_verified))
            }
            (Some(id_email), _) => (Some(id_email), claims.email_verified),
            (None, info_email) => (info_email, info_verified),
        };
        let Some(email) = email else {
            return Err(OidcError::EmailMissing {
                subject: bounded(&claims.subject, 100),
            });
        };
        if verified != Some(true) {
            return Err(OidcError::EmailNotVerified {
                subject: bounded(&claims.subject, 100),
                verified: if verified == Some(false) {
                    "false"
                } else {
                    "missing"
                },
            });
        }
        let domain = email
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        if domain.is_empty() {
            return Err(OidcError::malformed(
                "ID token",
                "email",
                "no domain after @",
            ));
        }
        if !settings.allowed_domains.is_empty()
            && !settings.allowed_domains.iter().any(|d| {
                d.trim()
                    .trim_start_matches('@')
                    .eq_ignore_ascii_case(&domain)
            })
        {
            return Err(OidcError::DomainNotAllowed {
                domain: bounded(&domain, 255),
                allowed: settings.allowed_domains.clone(),
            });
        }
        let groups_value = claims
            .claims
            .get(group_claim)
            .or_else(|| userinfo.as_ref().and_then(|u| u.get(group_claim)));
        let groups = match groups_value {
            Some(v) => groups_of(v, group_claim)?,
            None => {
                let mut came: Vec<String> = claims.claims.keys().cloned().collect();
                if let Some(info) = &userinfo {
                    came.extend(info.keys().cloned());
                }
                came.sort();
                came.dedup();
                came.truncate(64);
                return Err(OidcError::GroupsClaimMissing {
                    looked_for: group_claim.to_owned(),
                    came: came.iter().map(|c| bounded(c, 64)).collect(),
                });
            }
        };
        let name = claims.name.clone().or_else(|| {
            userinfo
                .as_ref()
                .and_then(|u| u.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        if let Some(nonce) = claims.nonce.as_ref().filter(|_| claim_nonce) {
            let keep_until = claims
                .expires_at
                .checked_add(settings.clock_skew)
                .unwrap_or(claims.expires_at);
            self.inner
                .ledger
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .claim(nonce, keep_until, SystemTime::now())?;
        }
        info!(issuer = %claims.issuer, subject = %claims.subject, groups = groups.len(), "IdP login verified");
        Ok(VerifiedLogin {
            issuer: claims.issuer,
            subject: claims.subject,
            email,
            groups,
            name,
            expires_at: claims.expires_at,
            refresh_token: tokens.refresh_token.clone(),
        })
    }

    async fn userinfo(
        &self,
        endpoint: &str,
        access: &ClientSecret,
        subject: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let body = self
            .inner
            .http
            .request(
                "userinfo response",
                Method::GET,
                endpoint,
                Auth::Bearer(access.expose()),
                Body::Empty,
            )
            .await?;
        let map: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
            if body.first() == Some(&b'e') {
                OidcError::malformed(
                    "userinfo response",
                    "-",
                    "a signed (JWT) userinfo response, which is not supported",
                )
            } else {
                OidcError::json("userinfo response", &body, &e)
            }
        })?;
        let sub = opt_str_doc(&map, "sub", "userinfo response")?
            .ok_or_else(|| OidcError::malformed("userinfo response", "sub", "missing"))?;
        if sub != subject {
            return Err(OidcError::UserinfoSubjectMismatch {
                expected: bounded(subject, 100),
                got: bounded(&sub, 100),
            });
        }
        Ok(map)
    }

    async fn post(
        &self,
        document: &'static str,
        url: &str,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<bytes::Bytes, OidcError> {
        let settings = &self.inner.settings;
        let auth = match &settings.client_secret {
            Some(secret) => Auth::Basic {
                client_id: &settings.client_id,
                secret: secret.expose(),
            },
            None => {
                form.push(("client_id", settings.client_id.clone()));
                Auth::None
            }
        };
        self.inner
            .http
            .request(document, Method::POST, url, auth, Body::Form(form))
            .await
    }
}

fn opt_str_doc(
    map: &Map<String, Value>,
    name: &'static str,
    document: &'static str,
) -> Result<Option<String>, OidcError> {
    opt_str(map, name).map_err(|_| OidcError::malformed(document, name, "not a string"))
}

fn groups_of(v: &Value, claim: &str) -> Result<Vec<String>, OidcError> {
    let bad = || OidcError::GroupsClaimMalformed {
        claim: claim.to_owned(),
    };
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => {
            if items.len() > MAX_GROUPS {
                return Err(OidcError::malformed(
                    "ID token",
                    claim,
                    format!("more than {MAX_GROUPS} groups"),
                ));
            }
            items
                .iter()
                .map(|g| g.as_str().map(str::to_owned).ok_or_else(bad))
                .collect()
        }
        _ => Err(bad()),
    }
}

async fn fetch_jwks(http: &HttpClient, url: &str) -> Result<Jwks, OidcError> {
    let body = http
        .request("JWKS", Method::GET, url, Auth::None, Body::Empty)
        .await?;
    Jwks::parse(&body)
}

/// The token endpoint's success response (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
pub(crate) fn parse_tokens(body: &[u8]) -> Result<Tokens, OidcError> {
    const DOC: &str = "token response";
    let map: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| OidcError::json(DOC, body, &e))?;
    let id_token = opt_str_doc(&map, "id_token", DOC)?.ok_or_else(|| {
        OidcError::malformed(DOC, "id_token", "missing (was the openid scope granted?)")
    })?;
    let access_token = opt_str_doc(&map, "access_token", DOC)?.map(ClientSecret::new);
    let refresh_token = opt_str_doc(&map, "refresh_token", DOC)?.map(ClientSecret::new);
    let expires_in = match map.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(v) => Some(Duration::from_secs(seconds(v).ok_or_else(|| {
            OidcError::malformed(DOC, "expires_in", "not a number of seconds")
        })?)),
    };
    Ok(Tokens {
        id_token,
        access_token,
        refresh_token,
        expires_in,
    })
}

/// A number of seconds; some IdPs send it as a string.
fn seconds(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The device authorization response (RFC 8628 §3.2).
pub(crate) fn parse_device(body: &[u8]) -> Result<DeviceAuthorization, OidcError> {
    const DOC: &str = "device authorization response";
    let issued_at = Instant::now();
    let map: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| OidcError::json(DOC, body, &e))?;
    let req = |name: &'static str| -> Result<String, OidcError> {
        opt_str_doc(&map, name, DOC)?.ok_or_else(|| OidcError::malformed(DOC, name, "missing"))
    };
    let device_code = ClientSecret::new(req("device_code")?);
    let user_code = req("user_code")?;
    if user_code.len() > 64 || user_code.chars().any(char::is_control) {
        return Err(OidcError::malformed(
            DOC,
            "user_code",
            "longer than 64 bytes or with control characters",
        ));
    }
    // Some IdPs (Google) spell it verification_url.
    let verification_uri = match opt_str_doc(&map, "verification_uri", DOC)? {
        Some(u) => u,
        None => opt_str_doc(&map, "verification_url", DOC)?
            .ok_or_else(|| OidcError::malformed(DOC, "verification_uri", "missing"))?,
    };
    check_https_url(DOC, "verification_uri", &verification_uri)?;
    let verification_uri_complete = opt_str_doc(&map, "verification_uri_complete", DOC)?;
    if let Some(u) = &verification_uri_complete {
        check_https_url(DOC, "verification_uri_complete", u)?;
    }
    let expires_in = map
        .get("expires_in")
        .and_then(seconds)
        .filter(|&s| s > 0)
        .ok_or_else(|| {
            OidcError::malformed(
                DOC,
                "expires_in",
                "missing or not a positive number of seconds",
            )
        })?;
    let interval = match map.get("interval") {
        None | Some(Value::Null) => DEFAULT_DEVICE_INTERVAL,
        Some(v) => Duration::from_secs(
            seconds(v)
                .ok_or_else(|| OidcError::malformed(DOC, "interval", "not a number of seconds"))?
                .clamp(1, 300),
        ),
    };
    Ok(DeviceAuthorization {
        device_code,
        user_code,
        verification_uri,
        verification_uri_complete,
        expires_in: Duration::from_secs(expires_in).min(MAX_DEVICE_LIFETIME),
        interval,
        issued_at,
    })
}

/// Nonces already used, each until its token's expiry (plus skew). Bounded: when full of
/// unexpired nonces a new login is refused rather than forgetting one that could be replayed.
#[derive(Default)]
struct NonceLedger {
    /// SHA-256 of the nonce → when it may be forgotten.
    used: HashMap<[u8; 32], SystemTime>,
}

impl NonceLedger {
    fn claim(
        &mut self,
        nonce: &str,
        keep_until: SystemTime,
        now: SystemTime,
    ) -> Result<(), OidcError> {
        let mut key = [0u8; 32];
        key.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, nonce.as_bytes()).as_ref());
        if let Some(until) = self.used.get(&key) {
            if *until > now {
                return Err(OidcError::NonceReplayed);
            }
        }
        if self.used.len() >= NONCE_LEDGER_CAPACITY {
            self.used.retain(|_, until| *until > now);
            if self.used.len() >= NONCE_LEDGER_CAPACITY {
                return Err(OidcError::ReplayLedgerFull {
                    capacity: NONCE_LEDGER_CAPACITY,
                });
            }
        }
        self.used.insert(key, keep_until);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_refuses_replays_until_expiry() {
        let mut l = NonceLedger::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let until = now + Duration::from_secs(60);
        assert!(l.claim("n1", until, now).is_ok());
        assert!(matches!(
            l.claim("n1", until, now),
            Err(OidcError::NonceReplayed)
        ));
        assert!(l.claim("n2", until, now).is_ok());
        // After expiry the token itself is refused, so the nonce may be forgotten.
        assert!(l.claim("n1", until, until + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn device_response_parses_and_caps() {
        let d = parse_device(br#"{"device_code":"dc","user_code":"ABCD-EFGH","verification_uri":"https://idp.example/device","expires_in":99999,"interval":0}"#)
            .expect("parses");
        assert_eq!(d.expires_in, MAX_DEVICE_LIFETIME);
        assert_eq!(d.interval, Duration::from_secs(1));
        assert_eq!(format!("{:?}", d.device_code), "<redacted>");
        assert!(parse_device(br#"{"device_code":"dc","user_code":"A","verification_uri":"http://idp.example/device","expires_in":5}"#).is_err());
    }

    #[test]
    fn token_response_debug_redacts() {
        let t = parse_tokens(br#"{"id_token":"secret.jwt.value","access_token":"at-secret","refresh_token":"rt-secret","expires_in":"3600"}"#)
            .expect("parses");
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(t.expires_in, Some(Duration::from_secs(3600)));
        assert!(
            matches!(parse_tokens(br#"{"access_token":"x"}"#), Err(OidcError::Malformed { field, .. }) if field == "id_token")
        );
    }
}
