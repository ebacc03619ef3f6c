//! Test signers (RSA from the committed test key, EC and Ed25519 made by ring) and an
//! in-process HTTPS IdP stand-in: hyper over rustls with a CA made by rcgen, serving
//! discovery, JWKS, token, device and userinfo endpoints and recording what it received.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use ring::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

pub const CLIENT_ID: &str = "zt-edge";
pub const ISSUER: &str = "https://idp.test";

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key and its kid.
pub enum Signer {
    Rsa(RsaKeyPair, String),
    Es256(EcdsaKeyPair, String),
    Ed(Ed25519KeyPair, String),
}

impl Signer {
    pub fn rsa(kid: &str) -> Signer {
        let der = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/rsa2048.pk8.der"
        ))
        .unwrap();
        Signer::Rsa(RsaKeyPair::from_pkcs8(&der).unwrap(), kid.into())
    }

    pub fn es256(kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Signer::Es256(
            EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap(),
            kid.into(),
        )
    }

    pub fn ed25519(kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Signer::Ed(
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
            kid.into(),
        )
    }

    pub fn kid(&self) -> &str {
        match self {
            Signer::Rsa(_, k) | Signer::Es256(_, k) | Signer::Ed(_, k) => k,
        }
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Signer::Rsa(..) => "RS256",
            Signer::Es256(..) => "ES256",
            Signer::Ed(..) => "EdDSA",
        }
    }

    /// The RSA public key's (n, e), big-endian.
    pub fn rsa_components(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            Signer::Rsa(k, _) => {
                let c: RsaPublicKeyComponents<Vec<u8>> = k.public().into();
                (c.n, c.e)
            }
            _ => panic!("not RSA"),
        }
    }

    /// The RSA public key, DER (RSAPublicKey).
    pub fn rsa_der(&self) -> Vec<u8> {
        match self {
            Signer::Rsa(k, _) => k.public().as_ref().to_vec(),
            _ => panic!("not RSA"),
        }
    }

    pub fn jwk(&self) -> Value {
        match self {
            Signer::Rsa(..) => {
                let (n, e) = self.rsa_components();
                json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid(), "n": b64(&n), "e": b64(&e)})
            }
            Signer::Es256(k, kid) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
            Signer::Ed(k, kid) => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(k.public_key().as_ref())})
            }
        }
    }

    pub fn raw_sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa(k, _) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig)
                    .unwrap();
                sig
            }
            Signer::Es256(k, _) => k.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::Ed(k, _) => k.sign(input).as_ref().to_vec(),
        }
    }

    /// A token with this key's alg and kid.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": self.alg(), "kid": self.kid(), "typ": "JWT"}),
            claims,
        )
    }

    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.raw_sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }
}

pub fn jwks(signers: &[&Signer]) -> Value {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()})
}

/// HS256 over header.payload with `secret` as the key.
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// Claims a good login has.
pub fn good_claims(issuer: &str, nonce: &str) -> Value {
    let now = now_secs();
    json!({
        "iss": issuer, "sub": "user-123", "aud": CLIENT_ID, "exp": now + 600, "iat": now, "nbf": now,
        "nonce": nonce, "email": "Ada@Example.COM", "email_verified": true, "name": "Ada",
        "groups": ["k8s-admins", "staff"],
    })
}

pub fn with(mut claims: Value, f: impl FnOnce(&mut Map<String, Value>)) -> Value {
    f(claims.as_object_mut().unwrap());
    claims
}

/// What the stand-in IdP serves and what it saw.
#[derive(Default)]
pub struct IdpState {
    pub jwks: Value,
    pub jwks_hits: usize,
    pub discovery_hits: usize,
    /// The next answer of the token endpoint to an authorization_code grant.
    pub code_response: Value,
    /// The answer to a refresh-token grant; `null` refuses it with `invalid_grant`.
    pub refresh_response: Value,
    /// Answers to device_code polls, in order (status, body); the last repeats.
    pub device_polls: VecDeque<(u16, Value)>,
    pub device_response: Value,
    pub userinfo: Value,
    pub userinfo_hits: usize,
    /// Every form the token and device endpoints received, with their Authorization header.
    pub forms: Vec<(String, HashMap<String, String>, Option<String>)>,
    /// Authorization headers seen at userinfo.
    pub userinfo_auth: Vec<Option<String>>,
}

pub struct Idp {
    pub addr: SocketAddr,
    pub issuer: String,
    pub ca_file: PathBuf,
    pub state: Arc<Mutex<IdpState>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Idp {
    pub async fn start(jwks: Value) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("https://{addr}");

        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "zt-oidc test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer_ca = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::default();
        leaf_params.subject_alt_names = vec![rcgen::SanType::IpAddress(addr.ip())];
        let leaf = leaf_params.signed_by(&leaf_key, &issuer_ca).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();

        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let state = Arc::new(Mutex::new(IdpState {
            jwks,
            code_response: Value::Null,
            refresh_response: Value::Null,
            device_response: json!({
                "device_code": "device-code-secret", "user_code": "WDJB-MJHT",
                "verification_uri": format!("{issuer}/device"),
                "verification_uri_complete": format!("{issuer}/device?user_code=WDJB-MJHT"),
                "expires_in": 120, "interval": 1,
            }),
            ..IdpState::default()
        }));
        let st = state.clone();
        let iss = issuer.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let st = st.clone();
                let iss = iss.clone();
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        let iss = iss.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(req, &st, &iss).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Idp {
            addr,
            issuer,
            ca_file,
            state,
            task,
            _dir: dir,
        }
    }

    pub fn settings(&self) -> zt_oidc::ProviderSettings {
        let mut s = zt_oidc::ProviderSettings::new(self.issuer.clone(), CLIENT_ID);
        s.ca_file = Some(self.ca_file.clone());
        s.scopes = vec!["openid".into(), "email".into(), "groups".into()];
        s
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, IdpState> {
        self.state.lock().unwrap()
    }

    /// Stop serving: the listener and every connection close.
    pub async fn stop(&self) {
        self.task.abort();
        while !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

pub fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    st: &Mutex<IdpState>,
    issuer: &str,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut s = st.lock().unwrap();
    match path.as_str() {
        "/.well-known/openid-configuration" => {
            s.discovery_hits += 1;
            reply(
                200,
                &json!({
                    "issuer": issuer,
                    "authorization_endpoint": format!("{issuer}/auth"),
                    "token_endpoint": format!("{issuer}/token"),
                    "jwks_uri": format!("{issuer}/jwks"),
                    "userinfo_endpoint": format!("{issuer}/userinfo"),
                    "device_authorization_endpoint": format!("{issuer}/device/auth"),
                    "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
                    "code_challenge_methods_supported": ["S256"],
                    "response_types_supported": ["code"],
                }),
            )
        }
        "/jwks" => {
            s.jwks_hits += 1;
            reply(200, &s.jwks.clone())
        }
        "/token" => {
            let form = parse_form(&body);
            s.forms.push(("token".into(), form.clone(), auth));
            match form.get("grant_type").map(String::as_str) {
                Some("authorization_code") => reply(200, &s.code_response.clone()),
                Some("refresh_token") if s.refresh_response.is_null() => reply(
                    400,
                    &json!({"error": "invalid_grant", "error_description": "refresh token revoked"}),
                ),
                Some("refresh_token") => reply(200, &s.refresh_response.clone()),
                Some("urn:ietf:params:oauth:grant-type:device_code") => {
                    let (status, body) = if s.device_polls.len() > 1 {
                        s.device_polls.pop_front().unwrap()
                    } else {
                        s.device_polls
                            .front()
                            .cloned()
                            .unwrap_or((400, json!({"error": "invalid_grant"})))
                    };
                    reply(status, &body)
                }
                _ => reply(400, &json!({"error": "unsupported_grant_type"})),
            }
        }
        "/device/auth" => {
            let form = parse_form(&body);
            s.forms.push(("device".into(), form, auth));
            reply(200, &s.device_response.clone())
        }
        "/userinfo" => {
            s.userinfo_hits += 1;
            s.userinfo_auth.push(auth);
            reply(200, &s.userinfo.clone())
        }
        p if p.starts_with("/moved/") => Response::builder()
            .status(302)
            .header(
                "location",
                format!("{issuer}/.well-known/openid-configuration"),
            )
            .body(Full::new(Bytes::new()))
            .unwrap(),
        _ => reply(404, &json!({"error": "not_found"})),
    }
}
