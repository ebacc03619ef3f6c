//! Fuzzes the JWT parser and the ID token checks against a fixed JWKS (RSA, P-256, Ed25519).
//! The first byte picks the mode: as it is, the input is the whole token (shape, header, alg
//! and key selection, signature checks); otherwise the input is the payload of a token this
//! target signs with the JWKS's Ed25519 key, so the claim checks see every input too.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents,
};
use zt_oidc::{jwt, verify_id_token, Checks, Jwks};

struct Fixture {
    keys: Jwks,
    ed: Ed25519KeyPair,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let rsa = RsaKeyPair::from_pkcs8(include_bytes!("../../zt-oidc/tests/data/rsa2048.pk8.der"))
            .expect("test RSA key");
        let c: RsaPublicKeyComponents<Vec<u8>> = rsa.public().into();
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("P-256 key");
        let ec = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("P-256 key");
        let p = ec.public_key().as_ref();
        let ed = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("Ed25519 key");
        let doc = format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"r","alg":"RS256","n":"{}","e":"{}"}},{{"kty":"EC","crv":"P-256","kid":"e","x":"{}","y":"{}"}},{{"kty":"OKP","crv":"Ed25519","kid":"d","x":"{}"}}]}}"#,
            b(&c.n),
            b(&c.e),
            b(&p[1..33]),
            b(&p[33..65]),
            b(ed.public_key().as_ref()),
        );
        Fixture { keys: Jwks::parse(doc.as_bytes()).expect("fixed JWKS"), ed }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let checks = Checks {
        issuer: "https://idp.test",
        client_id: "zt-edge",
        nonce: if mode & 2 == 0 { None } else { Some("n") },
        now: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        skew: Duration::from_secs(60),
    };
    let token = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","kid":"d"}"#),
            URL_SAFE_NO_PAD.encode(rest)
        );
        let sig = f.ed.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    };
    let _ = jwt::parse(&token);
    if let Ok(claims) = verify_id_token(&token, &f.keys, &checks) {
        assert_eq!(claims.issuer, "https://idp.test");
        assert!(claims.audience.iter().all(|a| a == "zt-edge"));
        assert!(claims.expires_at > checks.now - checks.skew);
    }
});
