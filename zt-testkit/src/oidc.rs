//! A real OpenID Provider and a real browser for the identity tests.
//!
//! [`OidcProvider`] runs `zt-testkit/oidc/provider.mjs`: the npm package `oidc-provider`
//! (an OpenID Certified server, pinned by `zt-testkit/oidc/package-lock.json`) on Node.js,
//! over HTTPS on 127.0.0.1 with a certificate from a fresh test CA ([`crate::pki::Ca`]). Its
//! clients are native applications whose redirect URI is `http://127.0.0.1/callback`, any
//! port accepted (RFC 8252 §7.3, which oidc-provider implements); PKCE S256 is required; the
//! authorization-code, device-code (RFC 8628) and refresh-token grants are on; its own
//! development login and consent pages take any password for the accounts the test gives.
//! The ID-token signing key is the test's ([`SigningKey`]), so a test can rotate it and sign
//! hostile tokens with the same key. Everything lives in the provider's memory: a restart
//! forgets sessions, codes and tokens.
//!
//! [`Browser`] runs `zt-testkit/oidc/browser.mjs`: headless Chromium driven by
//! `playwright-core` through those pages, as a person signing in would.
//!
//! Both need Node.js, `npm ci` run in `zt-testkit/oidc` (CI's `.ci/run` does it; tests never
//! install anything), and for the browser Chromium (`/usr/bin/chromium`, or
//! `ZT_TEST_CHROMIUM`). [`provider_unavailable`] and [`browser_unavailable`] say what is
//! missing; a test prints it with [`skip`] and returns.
//!
//! [`https_get`] and [`https_post_form`] speak to the provider (or anything else on HTTPS)
//! trusting only a given CA, and [`pkce`] makes a verifier and its challenge.

use std::fmt;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
use serde_json::{json, Value};

use crate::pki::Ca;

/// The directory of `provider.mjs`, `browser.mjs` and their `node_modules`.
pub fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

fn node() -> String {
    std::env::var("ZT_TEST_NODE").unwrap_or_else(|_| "node".to_owned())
}

fn chromium() -> PathBuf {
    std::env::var_os("ZT_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn node_unavailable() -> Option<String> {
    match Command::new(node()).arg("--version").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`{} --version` failed: {}", node(), out.status)),
        Err(e) => Some(format!(
            "Node.js ({}) cannot run: {e}; install Debian's nodejs and npm",
            node()
        )),
    }
}

fn module_unavailable(module: &str) -> Option<String> {
    let dir = oidc_dir();
    if dir
        .join("node_modules")
        .join(module)
        .join("package.json")
        .is_file()
    {
        None
    } else {
        Some(format!(
            "the npm package {module} is not installed: run `npm ci` in {}",
            dir.display()
        ))
    }
}

/// `None` when the OpenID Provider can start (Node.js runs, `npm ci` was run in
/// [`oidc_dir`]); else why not.
pub fn provider_unavailable() -> Option<String> {
    node_unavailable().or_else(|| module_unavailable("oidc-provider"))
}

/// `None` when [`Browser`] can run (Node.js, `playwright-core` installed by `npm ci` in
/// [`oidc_dir`], Chromium at `/usr/bin/chromium` or `ZT_TEST_CHROMIUM`); else why not.
pub fn browser_unavailable() -> Option<String> {
    node_unavailable()
        .or_else(|| module_unavailable("playwright-core"))
        .or_else(|| {
            let path = chromium();
            (!path.is_file()).then(|| {
                format!(
                    "no Chromium at {} (install Debian's chromium or set ZT_TEST_CHROMIUM)",
                    path.display()
                )
            })
        })
}

/// Says loudly, on stderr (uncaptured), that `test` skipped because of `reason`.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "!!! SKIP {test}: needs a real OpenID Provider or browser: {reason}"
    );
}

/// An account the provider knows. Its `login` is also its `sub`; any password signs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// What the login form takes, and the `sub` claim.
    pub login: String,
    /// The `email` claim (scope `email`).
    pub email: String,
    /// The `email_verified` claim (scope `email`).
    pub email_verified: bool,
    /// The groups claim (scope `groups`, named by [`ProviderOptions::groups_claim`]);
    /// `None` leaves the claim out altogether.
    pub groups: Option<Vec<String>>,
    /// The `name` claim (scope `profile`), left out when `None`.
    pub name: Option<String>,
}

impl Account {
    /// An account with a verified email, no groups claim and no name.
    pub fn new(login: &str, email: &str) -> Account {
        Account {
            login: login.to_owned(),
            email: email.to_owned(),
            email_verified: true,
            groups: None,
            name: None,
        }
    }

    /// The same account with the groups claim `groups`.
    pub fn with_groups(mut self, groups: &[&str]) -> Account {
        self.groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
        self
    }
}

/// How the provider is set up; see [`Default`] for the usual values. `Debug` leaves the
/// client secret out.
#[derive(Clone)]
pub struct ProviderOptions {
    /// The accounts that can sign in.
    pub accounts: Vec<Account>,
    /// The one client's id.
    pub client_id: String,
    /// The client's secret: `Some` makes it a confidential client authenticating with
    /// `client_secret_basic`, `None` a public one (`none`).
    pub client_secret: Option<String>,
    /// Whether the scope claims (email, name, groups) also go into the ID token, or only
    /// into the userinfo response (oidc-provider's default, `conformIdTokenClaims`).
    pub claims_in_id_token: bool,
    /// The name of the groups claim.
    pub groups_claim: String,
    /// How long an ID token is valid (whole seconds are used).
    pub id_token_ttl: Duration,
    /// The key that signs ID tokens, the only one in the JWKS.
    pub signing_key: SigningKey,
}

impl fmt::Debug for ProviderOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderOptions")
            .field("accounts", &self.accounts)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("claims_in_id_token", &self.claims_in_id_token)
            .field("groups_claim", &self.groups_claim)
            .field("id_token_ttl", &self.id_token_ttl)
            .field("signing_key", &self.signing_key)
            .finish()
    }
}

impl Default for ProviderOptions {
    /// No accounts, a public client `zt`, claims in userinfo only, a groups claim named
    /// `groups`, ID tokens valid for 5 minutes, signed with the first committed RSA key.
    fn default() -> Self {
        ProviderOptions {
            accounts: Vec::new(),
            client_id: "zt".to_owned(),
            client_secret: None,
            claims_in_id_token: false,
            groups_claim: "groups".to_owned(),
            id_token_ttl: Duration::from_secs(300),
            signing_key: SigningKey::rs256_test(0),
        }
    }
}

/// The two committed test-only RSA keys (ring cannot generate RSA keys), PKCS#8 PEM.
const RSA_TEST_KEYS: [&str; 2] = [
    include_str!("../data/oidc/rsa-test-0.pk8.pem"),
    include_str!("../data/oidc/rsa-test-1.pk8.pem"),
];

#[derive(Clone)]
enum KeyKind {
    /// One of [`RSA_TEST_KEYS`], by index.
    Rsa(usize),
    Ec,
}

/// A JWS signing key: RS256 (one of two committed test keys) or ES256 (fresh). The private
/// key never shows in `Debug`.
#[derive(Clone)]
pub struct SigningKey {
    /// The `kid` the JWKS and the provider's tokens carry.
    pub kid: String,
    /// `"RS256"` or `"ES256"`.
    pub alg: &'static str,
    kind: KeyKind,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl SigningKey {
    /// A fresh P-256 key, `kid` `es256-` and random hex.
    pub fn generate_es256() -> SigningKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        SigningKey {
            kid: format!("es256-{}", random_hex(8)),
            alg: "ES256",
            kind: KeyKind::Ec,
            pkcs8: pkcs8.as_ref().to_vec(),
        }
    }

    /// Committed test RSA key `n` (0 or 1; panics otherwise), `kid` `rsa-test-N`.
    pub fn rs256_test(n: usize) -> SigningKey {
        let pem = RSA_TEST_KEYS
            .get(n)
            .unwrap_or_else(|| panic!("there are test RSA keys 0 and 1, not {n}"));
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        SigningKey {
            kid: format!("rsa-test-{n}"),
            alg: "RS256",
            kind: KeyKind::Rsa(n),
            pkcs8: der.secret_pkcs8_der().to_vec(),
        }
    }

    /// The same key under another `kid`.
    pub fn with_kid(mut self, kid: &str) -> SigningKey {
        kid.clone_into(&mut self.kid);
        self
    }

    /// The public JWK (`kty`, `kid`, `alg`, `use`, and `n`/`e` or `crv`/`x`/`y`).
    pub fn public_jwk(&self) -> Value {
        match self.kind {
            KeyKind::Rsa(_) => {
                let pair = RsaKeyPair::from_pkcs8(&self.pkcs8).unwrap();
                let public: signature::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
                json!({"kty": "RSA", "kid": self.kid, "alg": self.alg, "use": "sig",
                       "n": b64url(&public.n), "e": b64url(&public.e)})
            }
            KeyKind::Ec => {
                let point = self.ec_public();
                json!({"kty": "EC", "kid": self.kid, "alg": self.alg, "use": "sig",
                       "crv": "P-256", "x": b64url(&point[1..33]), "y": b64url(&point[33..65])})
            }
        }
    }

    fn ec_public(&self) -> Vec<u8> {
        let rng = SystemRandom::new();
        EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.pkcs8,
            &rng,
        )
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec()
    }

    /// A compact JWS of `claims` under `header`, signed with this key (RS256 or ES256 by the
    /// key's kind). The header goes out as given: its `alg` and `kid` may lie.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match self.kind {
            KeyKind::Rsa(_) => {
                let pair = RsaKeyPair::from_pkcs8(&self.pkcs8).unwrap();
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
            KeyKind::Ec => EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &self.pkcs8,
                &rng,
            )
            .unwrap()
            .sign(&rng, input.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec(),
        };
        format!("{input}.{}", b64url(&sig))
    }

    /// Checks a compact JWS's signature against this key's public key (the header's `alg`
    /// and `kid` must be this key's) and returns its claims. For tests to check what the
    /// provider issued; not the product's verifier.
    pub fn verify(&self, jws: &str) -> Result<Value, String> {
        let (header, claims) = decode_jws(jws)?;
        if header["alg"] != self.alg || header["kid"] != self.kid.as_str() {
            return Err(format!(
                "the JWS header {header} is not for key {} ({})",
                self.kid, self.alg
            ));
        }
        let (input, sig) = jws
            .rsplit_once('.')
            .ok_or_else(|| "a JWS has three parts".to_owned())?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|e| format!("the JWS signature is not base64url: {e}"))?;
        let ok = match self.kind {
            KeyKind::Rsa(_) => {
                let pair = RsaKeyPair::from_pkcs8(&self.pkcs8).unwrap();
                let public: signature::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
                public.verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    input.as_bytes(),
                    &sig,
                )
            }
            KeyKind::Ec => signature::UnparsedPublicKey::new(
                &signature::ECDSA_P256_SHA256_FIXED,
                self.ec_public(),
            )
            .verify(input.as_bytes(), &sig),
        };
        ok.map_err(|_| format!("the JWS signature does not verify with key {}", self.kid))?;
        Ok(claims)
    }

    /// The key that [`OidcProvider::rotate_key`] turns to after this one: the other
    /// committed RSA key, or a fresh ES256 key.
    fn next(&self) -> SigningKey {
        match self.kind {
            KeyKind::Rsa(n) => SigningKey::rs256_test(1 - n),
            KeyKind::Ec => SigningKey::generate_es256(),
        }
    }
}

/// The header and claims of a compact JWS, unverified.
pub fn decode_jws(jws: &str) -> Result<(Value, Value), String> {
    let parts: Vec<&str> = jws.split('.').collect();
    let [header, claims, _sig] = parts[..] else {
        return Err(format!(
            "a compact JWS has three dot-separated parts, this has {}",
            parts.len()
        ));
    };
    let part = |name: &str, text: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| format!("the JWS {name} is not base64url: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the JWS {name} is not JSON: {e}"))
    };
    Ok((part("header", header)?, part("claims", claims)?))
}

/// A PKCE verifier (43 base64url characters of 32 random bytes) and its S256 challenge.
pub fn pkce() -> (String, String) {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes).unwrap();
    let verifier = b64url(&bytes);
    let challenge =
        b64url(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
    (verifier, challenge)
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
pub fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// How long a provider start or one HTTPS exchange may take before it fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// The largest HTTPS reply read: far above any discovery document, JWKS or token response.
const MAX_REPLY: usize = 1 << 20;

/// GETs `url` (`https://HOST:PORT/PATH`) trusting only the CA certificates in `ca_pem`;
/// returns the status and the body.
pub async fn https_get(url: &str, ca_pem: &str) -> Result<(u16, Vec<u8>), String> {
    https_request(url, ca_pem, None, None).await
}

/// GETs `url` like [`https_get`] with `Authorization: Bearer TOKEN` (the userinfo endpoint).
pub async fn https_get_bearer(
    url: &str,
    ca_pem: &str,
    token: &str,
) -> Result<(u16, Vec<u8>), String> {
    https_request(url, ca_pem, None, Some(format!("Bearer {token}"))).await
}

/// POSTs `fields` form-encoded to `url`, with HTTP Basic authentication when `basic` is
/// given (`client_secret_basic`: both parts form-encoded first, RFC 6749 §2.3.1); returns the
/// status and the body.
pub async fn https_post_form(
    url: &str,
    ca_pem: &str,
    fields: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Result<(u16, Vec<u8>), String> {
    let authorization = basic.map(|(user, password)| {
        let credentials = format!("{}:{}", form_encode(user), form_encode(password));
        format!("Basic {}", STANDARD.encode(credentials))
    });
    https_request(url, ca_pem, Some(form_body(fields)), authorization).await
}

async fn https_request(
    url: &str,
    ca_pem: &str,
    form: Option<String>,
    authorization: Option<String>,
) -> Result<(u16, Vec<u8>), String> {
    tokio::time::timeout(DEADLINE, https_exchange(url, ca_pem, form, authorization))
        .await
        .unwrap_or_else(|_| Err(format!("{url}: no answer within {DEADLINE:?}")))
}

async fn https_exchange(
    url: &str,
    ca_pem: &str,
    form: Option<String>,
    authorization: Option<String>,
) -> Result<(u16, Vec<u8>), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url}: not an https:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::pki::pem_certs(ca_pem.as_bytes()) {
        roots
            .add(cert)
            .map_err(|e| format!("{url}: a CA certificate is unusable: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{url}: no CA certificate in the PEM given"));
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::pki::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{url}: {host:?} is not a server name: {e}"))?;
    let port_authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    };
    let tcp = tokio::net::TcpStream::connect(&port_authority)
        .await
        .map_err(|e| format!("{url}: cannot connect to {port_authority}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("{url}: TLS handshake failed: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("{url}: HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONNECTION, "close")
        .header(hyper::header::ACCEPT, "application/json");
    if let Some(authorization) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, authorization);
    }
    let body = match form {
        Some(form) => {
            request = request.method(hyper::Method::POST).header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
            Bytes::from(form)
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("{url}: cannot make the request: {e}"))?;
    let result = async {
        let reply = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{url}: request failed: {e}"))?;
        let status = reply.status().as_u16();
        let body = Limited::new(reply.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|e| format!("{url}: reading the reply failed: {e}"))?
            .to_bytes();
        Ok((status, body.to_vec()))
    }
    .await;
    driver.abort();
    result
}

/// A running OpenID Provider; see the module docs. Dropping it kills the Node.js process.
pub struct OidcProvider {
    // First, so it is dropped (killed) before the directory holding its files goes.
    process: Option<Running>,
    options: ProviderOptions,
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    ca_pem: String,
    port: u16,
    issuer: String,
}

/// The provider's process, and its standard input: the provider exits when that closes.
struct Running {
    child: Child,
    _stdin: Option<ChildStdin>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.issuer)
            .field("key", &self.options.signing_key)
            .field("running", &self.process.is_some())
            .finish_non_exhaustive()
    }
}

impl OidcProvider {
    /// Starts the provider on a free port of 127.0.0.1 with a fresh test CA, and waits
    /// until it listens.
    pub async fn start(options: ProviderOptions) -> Result<OidcProvider, String> {
        if let Some(why) = provider_unavailable() {
            return Err(why);
        }
        let dir = tempfile::tempdir().map_err(|e| format!("cannot make a directory: {e}"))?;
        let ca = Ca::new("zt test OpenID Provider CA");
        let leaf = ca.server(&["127.0.0.1"]);
        let ca_file = dir.path().join("ca.pem");
        write_private(&ca_file, ca.pem().as_bytes())?;
        write_private(&dir.path().join("cert.pem"), leaf.chain_pem().as_bytes())?;
        write_private(&dir.path().join("key.pem"), leaf.key_pem().as_bytes())?;
        let mut provider = OidcProvider {
            process: None,
            options,
            dir,
            ca_file,
            ca_pem: ca.pem(),
            port: 0,
            issuer: String::new(),
        };
        provider.launch().await?;
        Ok(provider)
    }

    /// The issuer, `https://127.0.0.1:PORT`, exactly as discovery and the tokens say it.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The PEM file of the test CA that signed the provider's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The PEM of that CA.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The key that signs the ID tokens now, the only one in the JWKS.
    pub fn current_key(&self) -> &SigningKey {
        &self.options.signing_key
    }

    /// What the provider said on stderr so far (its errors: a refused request, an unknown
    /// login), without its start-up warnings; for a failing test's message.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("provider.log"))
    }

    /// What the provider runs with.
    pub fn options(&self) -> &ProviderOptions {
        &self.options
    }

    /// Restarts the provider on the same port with a new signing key as the only one: the
    /// other committed RSA key after an RSA key, a fresh ES256 key after an ES256 key.
    pub async fn rotate_key(&mut self) -> Result<(), String> {
        let next = self.options.signing_key.next();
        self.rotate_to(next).await
    }

    /// Restarts the provider on the same port with `key` as the only signing key.
    pub async fn rotate_to(&mut self, key: SigningKey) -> Result<(), String> {
        self.stop().await;
        self.options.signing_key = key;
        self.launch().await
    }

    /// Stops the provider: once this returns, its port is closed.
    pub async fn stop(&mut self) {
        if let Some(running) = self.process.take() {
            // Kills and reaps the process (Drop), off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || drop(running)).await;
        }
    }

    /// Starts the provider again on the same port (a no-op restart when it runs: it is
    /// stopped first). Its memory starts empty.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.stop().await;
        self.launch().await
    }

    /// Writes the configuration, starts `provider.mjs` and waits for its `READY` line.
    async fn launch(&mut self) -> Result<(), String> {
        let dir = self.dir.path();
        let o = &self.options;
        let config = json!({
            "port": self.port,
            "cert_file": dir.join("cert.pem"),
            "key_file": dir.join("key.pem"),
            "groups_claim": o.groups_claim,
            "claims_in_id_token": o.claims_in_id_token,
            "id_token_ttl": o.id_token_ttl.as_secs().max(1),
            "clients": [{"client_id": o.client_id, "client_secret": o.client_secret}],
            "accounts": o.accounts.iter().map(|a| json!({
                "login": a.login, "email": a.email, "email_verified": a.email_verified,
                "groups": a.groups, "name": a.name,
            })).collect::<Vec<_>>(),
            "signing_keys": [{
                "kid": o.signing_key.kid,
                "alg": o.signing_key.alg,
                "pkcs8": STANDARD.encode(&o.signing_key.pkcs8),
            }],
        });
        let config_file = dir.join("provider.json");
        write_private(&config_file, config.to_string().as_bytes())?;
        let log_file = dir.join("provider.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_file)
            .map_err(|e| format!("cannot open {}: {e}", log_file.display()))?;
        let mut child = Command::new(node())
            .arg(oidc_dir().join("provider.mjs"))
            .arg(&config_file)
            .current_dir(oidc_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", node()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut running = Running {
            child,
            _stdin: stdin,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Some(stdout) = stdout {
            // Reads the READY line, then drains stdout until the process ends.
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let _ = tx.send(line);
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
            });
        }
        let log_tail = || {
            let text = read_log(&log_file);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(10)..].join("\n")
        };
        let line = match tokio::time::timeout(DEADLINE, rx).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => String::new(),
            Err(_) => {
                return Err(format!(
                    "the OpenID Provider did not say READY within {DEADLINE:?}: {}",
                    log_tail()
                ));
            }
        };
        let issuer = line
            .trim()
            .strip_prefix("READY ")
            .map(str::to_owned)
            .ok_or_else(|| {
                let status = running.child.try_wait().ok().flatten();
                format!(
                    "the OpenID Provider did not start (exit {status:?}, said {:?}): {}",
                    line.trim(),
                    log_tail()
                )
            })?;
        let port = issuer
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .ok_or_else(|| {
                format!("the OpenID Provider said an issuer without a port: {issuer}")
            })?;
        self.port = port;
        self.issuer = issuer;
        self.process = Some(running);
        Ok(())
    }
}

/// The provider's log without oidc-provider's start-up warnings (the Node.js version, the
/// development adapter and interactions), which every start prints.
fn read_log(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text.lines()
        .filter(|l| !l.starts_with("oidc-provider WARNING"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Headless Chromium through the provider's pages; see the module docs.
#[derive(Debug)]
pub struct Browser;

impl Browser {
    /// Opens `url` (an authorization request), signs in as `login`, accepts the consent and
    /// returns the loopback callback URL (`http://127.0.0.1:PORT/callback?...`) the browser
    /// was sent to, once whatever listens there has answered.
    pub async fn login(url: &str, login: &str) -> Result<String, String> {
        run_browser(&["login", url, login]).await
    }

    /// Opens `verification_uri` (or `verification_uri_complete`), enters `user_code` where
    /// asked, confirms, signs in as `login`, accepts the consent and waits for the success
    /// page.
    pub async fn approve_device(
        verification_uri: &str,
        user_code: &str,
        login: &str,
    ) -> Result<(), String> {
        run_browser(&["device", verification_uri, user_code, login])
            .await
            .map(drop)
    }
}

async fn run_browser(args: &[&str]) -> Result<String, String> {
    if let Some(why) = browser_unavailable() {
        return Err(why);
    }
    let mut command = Command::new(node());
    command
        .arg(oidc_dir().join("browser.mjs"))
        .args(args)
        .current_dir(oidc_dir())
        .stdin(Stdio::null());
    let what = args.first().copied().unwrap_or_default();
    // browser.mjs gives up after 30 s of pages and exits by itself within 60 s.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| format!("browser {what}: {e}"))?
        .map_err(|e| format!("browser {what}: cannot start {}: {e}", node()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        Ok(stdout.lines().last().unwrap_or_default().trim().to_owned())
    } else {
        Err(format!(
            "browser {what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
