//! The one error type of the crate. Every variant names the fact a person can act on; none
//! carries a token, code, verifier or secret (the IdP's own `error_description` is bounded and
//! stripped of control characters before it is kept).

use std::time::SystemTime;

/// Why an OpenID Connect step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// A setting is unusable (an `http://` issuer, an unreadable CA file).
    #[error("OIDC settings: {0}")]
    Settings(String),
    /// The discovery document or the ID token names another issuer than the one configured.
    #[error("wrong issuer: expected {expected:?}, got {got:?}")]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
        /// What the document or token said.
        got: String,
    },
    /// The token's `exp` is at or before now minus the allowed skew.
    #[error("ID token expired at {} (now {}, allowed clock skew {} s)", unix(*expired_at), unix(*now), skew_secs)]
    Expired {
        /// The token's `exp`.
        expired_at: SystemTime,
        /// The verifier's clock.
        now: SystemTime,
        /// The skew allowed.
        skew_secs: u64,
    },
    /// `nbf` or `iat` lies further in the future than the allowed skew: one of the clocks is wrong.
    #[error("ID token not yet valid: {claim} is {} but now is {} (allowed clock skew {} s); check the clocks of the edge and the IdP", unix(*at), unix(*now), skew_secs)]
    NotYetValid {
        /// `nbf` or `iat`.
        claim: &'static str,
        /// The claim's time.
        at: SystemTime,
        /// The verifier's clock.
        now: SystemTime,
        /// The skew allowed.
        skew_secs: u64,
    },
    /// `aud` does not contain the client id.
    #[error("wrong audience: the ID token is for {got:?}, not for client {client_id:?}")]
    WrongAudience {
        /// The configured client id.
        client_id: String,
        /// The token's audiences.
        got: Vec<String>,
    },
    /// `aud` holds an audience besides the client id, which this relying party does not trust.
    #[error("untrusted extra audience {extra:?} in the ID token (only {client_id:?} is trusted)")]
    UntrustedAudience {
        /// The configured client id.
        client_id: String,
        /// The first audience that is not the client id.
        extra: String,
    },
    /// Several audiences and `azp` missing or another party.
    #[error("azp mismatch: expected {expected:?}, got {got:?}")]
    AzpMismatch {
        /// The configured client id.
        expected: String,
        /// The token's `azp`, if any.
        got: Option<String>,
    },
    /// The JWT header's `alg` is not on the allow-list (never `none`, never HMAC).
    #[error("signature algorithm {alg:?} is not allowed (allowed: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)")]
    AlgNotAllowed {
        /// The header's `alg`.
        alg: String,
    },
    /// The key the header names is of another type than its `alg` needs.
    #[error("key {kid:?} is {key} but the token is signed with {alg}")]
    KeyMismatch {
        /// The key id.
        kid: String,
        /// The key's type (and curve).
        key: String,
        /// The header's `alg`.
        alg: String,
    },
    /// No JWKS key has the header's `kid` ([`Provider::verify`](crate::Provider::verify)
    /// refreshes the JWKS once before it says so).
    #[error("unknown signing key id {kid:?}: the IdP's JWKS has {known:?}")]
    UnknownKid {
        /// The header's `kid` (or `<none>`).
        kid: String,
        /// The key ids the JWKS holds.
        known: Vec<String>,
    },
    /// The signature does not verify with the key the header names.
    #[error("bad signature on the ID token (key {kid:?}, {alg})")]
    BadSignature {
        /// The key tried.
        kid: String,
        /// The algorithm.
        alg: String,
    },
    /// The token's nonce is missing or not the one this login sent.
    #[error("nonce mismatch: the ID token's nonce is {}", if *missing { "missing" } else { "not the one this login sent" })]
    NonceMismatch {
        /// The token had no nonce at all.
        missing: bool,
    },
    /// The nonce has been used by an earlier login.
    #[error("nonce replayed: this ID token's nonce was already used by an earlier login")]
    NonceReplayed,
    /// The nonce ledger is full of unexpired nonces; a login is refused rather than letting
    /// an old nonce be forgotten while its token is still valid.
    #[error("nonce ledger full ({capacity} unexpired logins); try again when older ID tokens have expired")]
    ReplayLedgerFull {
        /// The ledger's capacity.
        capacity: usize,
    },
    /// There is an email but the IdP does not say it is verified.
    #[error(
        "email address of {subject:?} is not verified at the IdP (email_verified is {verified})"
    )]
    EmailNotVerified {
        /// The token's subject.
        subject: String,
        /// What `email_verified` said (`false` or `missing`).
        verified: &'static str,
    },
    /// Neither the ID token nor userinfo has an email.
    #[error("no email for {subject:?} in the ID token or userinfo (ask for the \"email\" scope)")]
    EmailMissing {
        /// The token's subject.
        subject: String,
    },
    /// The verified email's domain is not on the allow-list.
    #[error("email domain {domain:?} is not allowed (allowed: {allowed:?})")]
    DomainNotAllowed {
        /// The domain.
        domain: String,
        /// The allow-list.
        allowed: Vec<String>,
    },
    /// The groups claim is in neither the ID token nor userinfo.
    #[error("groups claim missing: looked for {looked_for:?}, came: {came:?}")]
    GroupsClaimMissing {
        /// The claim name configured.
        looked_for: String,
        /// The claim names that came (ID token and userinfo).
        came: Vec<String>,
    },
    /// The groups claim has another shape than a string or an array of strings.
    #[error("groups claim {claim:?} is not a string or an array of strings")]
    GroupsClaimMalformed {
        /// The claim name.
        claim: String,
    },
    /// The userinfo response is about another subject than the ID token.
    #[error("userinfo subject {got:?} is not the ID token's subject {expected:?}")]
    UserinfoSubjectMismatch {
        /// The ID token's `sub`.
        expected: String,
        /// Userinfo's `sub`.
        got: String,
    },
    /// A refreshed ID token names another user than the sign-in it renews (OpenID Connect
    /// Core §12.2 requires the same `sub`).
    #[error("the refreshed ID token's subject {got:?} is not the signed-in subject {expected:?}")]
    RefreshSubjectChanged {
        /// The subject of the original sign-in.
        expected: String,
        /// The refreshed ID token's `sub`.
        got: String,
    },
    /// The IdP could not be reached (DNS, TCP, TLS, timeout, a cut connection).
    #[error("IdP unreachable at {url}: {cause}")]
    IdpUnreachable {
        /// The URL asked.
        url: String,
        /// What went wrong.
        cause: String,
    },
    /// The IdP answered with an error status.
    #[error("IdP answered {status} at {url}: {}{}", error.as_deref().unwrap_or("(no OAuth error code)"), description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    IdpError {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The OAuth `error` code, if the body had one.
        error: Option<String>,
        /// The OAuth `error_description`, bounded.
        description: Option<String>,
    },
    /// A document from the IdP (or a token) does not parse or lacks a field.
    #[error("malformed {document}{}{}: {reason}", if field == "-" { String::new() } else { format!(", field {field}") }, offset.map(|o| format!(" at byte {o}")).unwrap_or_default())]
    Malformed {
        /// Which document: `discovery document`, `JWKS`, `ID token`, `token response`, ...
        document: &'static str,
        /// Which field (or `-` for the document as a whole).
        field: String,
        /// The byte offset where the parser gave one.
        offset: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// The user (or the IdP) refused the device authorization.
    #[error("device authorization denied at the IdP")]
    DeviceDenied,
    /// The device code expired before the user approved.
    #[error("device authorization expired after {secs} s before it was approved")]
    DeviceExpired {
        /// The device code's lifetime.
        secs: u64,
    },
}

impl OidcError {
    pub(crate) fn malformed(
        document: &'static str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        OidcError::Malformed {
            document,
            field: field.into(),
            offset: None,
            reason: reason.into(),
        }
    }

    /// A serde_json failure on a whole document, with the byte offset it points at.
    pub(crate) fn json(document: &'static str, input: &[u8], err: &serde_json::Error) -> Self {
        OidcError::Malformed {
            document,
            field: "-".into(),
            offset: byte_offset(input, err.line(), err.column()),
            reason: err.to_string(),
        }
    }
}

/// serde_json reports line and column (1-based, column in bytes); turn them into an offset.
fn byte_offset(input: &[u8], line: usize, column: usize) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let mut start = 0usize;
    for _ in 1..line {
        let nl = input.get(start..)?.iter().position(|&b| b == b'\n')?;
        start += nl + 1;
    }
    Some(start + column.saturating_sub(1))
}

fn unix(t: SystemTime) -> String {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => format!("{} (unix)", d.as_secs()),
        Err(_) => "before 1970".into(),
    }
}

/// Keep at most `max` printable characters of text an IdP sent, for an error message.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}
