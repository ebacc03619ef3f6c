//! ID token verification at the edge: `zt_oidc::verify_id_token` for RS256 (2048-bit) and
//! ES256 tokens, against a bare ring signature check of the same bytes in the same run, so
//! the ratio shows what the parsing and claim checks cost on top of the signature.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use ring::rand::SystemRandom;
use ring::signature::{
    self, EcdsaKeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents, UnparsedPublicKey,
};
use zt_oidc::{verify_id_token, Checks, Jwks};

const ISSUER: &str = "https://idp.example";
const CLIENT: &str = "zt-edge";

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

fn claims(now: u64) -> String {
    serde_json::json!({
        "iss": ISSUER, "sub": "248289761001", "aud": CLIENT, "exp": now + 600, "iat": now,
        "nonce": "n-0S6_WzA2Mj", "email": "ada@example.com", "email_verified": true,
        "groups": ["k8s-admins", "staff", "oncall"],
    })
    .to_string()
}

fn bench(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let payload = b64(claims(now).as_bytes());

    let rsa =
        RsaKeyPair::from_pkcs8(include_bytes!("../../zt-oidc/tests/data/rsa2048.pk8.der")).unwrap();
    let rsa_pub: RsaPublicKeyComponents<Vec<u8>> = rsa.public().into();
    let rs_input = format!("{}.{payload}", b64(br#"{"alg":"RS256","kid":"r1"}"#));
    let mut rs_sig = vec![0u8; rsa.public().modulus_len()];
    rsa.sign(
        &signature::RSA_PKCS1_SHA256,
        &rng,
        rs_input.as_bytes(),
        &mut rs_sig,
    )
    .unwrap();
    let rs_token = format!("{rs_input}.{}", b64(&rs_sig));

    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let point = ec.public_key().as_ref().to_vec();
    let es_input = format!("{}.{payload}", b64(br#"{"alg":"ES256","kid":"e1"}"#));
    let es_sig = ec.sign(&rng, es_input.as_bytes()).unwrap();
    let es_token = format!("{es_input}.{}", b64(es_sig.as_ref()));

    let jwks = serde_json::json!({"keys": [
        {"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig", "n": b64(&rsa_pub.n), "e": b64(&rsa_pub.e)},
        {"kty": "EC", "crv": "P-256", "kid": "e1", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
    ]});
    let keys = Jwks::parse(jwks.to_string().as_bytes()).unwrap();
    let checks = Checks {
        issuer: ISSUER,
        client_id: CLIENT,
        nonce: Some("n-0S6_WzA2Mj"),
        now: SystemTime::now(),
        skew: Duration::from_secs(60),
    };
    verify_id_token(&rs_token, &keys, &checks).unwrap();
    verify_id_token(&es_token, &keys, &checks).unwrap();

    let mut g = c.benchmark_group("oidc_verify");
    g.bench_function("rs256/verify_id_token", |b| {
        b.iter(|| verify_id_token(black_box(&rs_token), &keys, &checks).unwrap())
    });
    g.bench_function("rs256/ring_baseline", |b| {
        b.iter(|| {
            rsa_pub
                .verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    black_box(rs_input.as_bytes()),
                    &rs_sig,
                )
                .unwrap()
        })
    });
    g.bench_function("es256/verify_id_token", |b| {
        b.iter(|| verify_id_token(black_box(&es_token), &keys, &checks).unwrap())
    });
    let es_key = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point);
    g.bench_function("es256/ring_baseline", |b| {
        b.iter(|| {
            es_key
                .verify(black_box(es_input.as_bytes()), es_sig.as_ref())
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
