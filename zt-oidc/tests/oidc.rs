//! zt-oidc against hostile tokens signed here, and against an in-process HTTPS IdP stand-in.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use serde_json::json;
use support::*;
use zt_oidc::{
    jwt, login_nonce, pkce_challenge, pkce_verifier, verify_id_token, Checks, ClientSecret,
    Discovery, Jwks, OidcError, Provider, ProviderSettings, Tokens,
};

fn checks(nonce: Option<&str>) -> Checks<'_> {
    Checks {
        issuer: ISSUER,
        client_id: CLIENT_ID,
        nonce,
        now: SystemTime::now(),
        skew: Duration::from_secs(60),
    }
}

fn keys_of(signers: &[&Signer]) -> Jwks {
    Jwks::parse(jwks(signers).to_string().as_bytes()).unwrap()
}

/// Verify and return the error, printing it so the message can be read in the test log.
fn refused(token: &str, keys: &Jwks, nonce: Option<&str>) -> OidcError {
    let err = verify_id_token(token, keys, &checks(nonce)).expect_err("the token must be refused");
    println!("refused: {err}");
    err
}

// ---- good tokens -------------------------------------------------------------------------

#[test]
fn good_tokens_rs256_es256_eddsa() {
    for signer in [
        Signer::rsa("r1"),
        Signer::es256("e1"),
        Signer::ed25519("d1"),
    ] {
        let keys = keys_of(&[&signer]);
        let token = signer.sign(&good_claims(ISSUER, "n-1"));
        let c = verify_id_token(&token, &keys, &checks(Some("n-1"))).unwrap();
        assert_eq!(c.issuer, ISSUER);
        assert_eq!(c.subject, "user-123");
        assert_eq!(c.audience, vec![CLIENT_ID.to_owned()]);
        assert_eq!(c.nonce.as_deref(), Some("n-1"));
        assert_eq!(c.email.as_deref(), Some("Ada@Example.COM"));
        assert_eq!(c.email_verified, Some(true));
        assert_eq!(c.name.as_deref(), Some("Ada"));
        assert!(c.issued_at.is_some());
        assert_eq!(c.claims["groups"], json!(["k8s-admins", "staff"]));
        println!("{} verified", signer.alg());
    }
}

#[test]
fn token_without_kid_uses_the_only_key() {
    let s = Signer::es256("only");
    let token = s.sign_with_header(&json!({"alg": "ES256"}), &good_claims(ISSUER, "n"));
    verify_id_token(&token, &keys_of(&[&s]), &checks(None)).unwrap();
    let other = Signer::ed25519("two");
    let err = refused(&token, &keys_of(&[&s, &other]), None);
    assert!(
        matches!(err, OidcError::UnknownKid { ref kid, .. } if kid == "<none>"),
        "{err:?}"
    );
}

// ---- hostile tokens ----------------------------------------------------------------------

#[test]
fn wrong_signature() {
    let s = Signer::rsa("r1");
    let keys = keys_of(&[&s]);
    let token = s.sign(&good_claims(ISSUER, "n"));
    // Another payload under the same signature.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = b64(with(good_claims(ISSUER, "n"), |c| {
        c.insert("sub".into(), json!("admin"));
    })
    .to_string()
    .as_bytes());
    let err = refused(&parts.join("."), &keys, None);
    assert!(
        matches!(err, OidcError::BadSignature { ref kid, .. } if kid == "r1"),
        "{err:?}"
    );
    // Signed by another key that claims the same kid.
    let impostor = Signer::es256("e1");
    let good = Signer::es256("e1");
    let err = refused(
        &impostor.sign(&good_claims(ISSUER, "n")),
        &keys_of(&[&good]),
        None,
    );
    assert!(matches!(err, OidcError::BadSignature { .. }), "{err:?}");
    assert!(err.to_string().contains("bad signature"));
}

#[test]
fn alg_none_is_refused() {
    let s = Signer::rsa("r1");
    let claims = good_claims(ISSUER, "n");
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.{}.",
            b64(json!({"alg": alg, "kid": "r1"}).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let err = refused(&token, &keys_of(&[&s]), None);
        assert!(
            matches!(err, OidcError::AlgNotAllowed { alg: ref a } if a == alg),
            "{err:?}"
        );
    }
}

#[test]
fn hs256_with_the_rsa_public_key_as_secret_is_refused() {
    let s = Signer::rsa("r1");
    let keys = keys_of(&[&s]);
    let (n, e) = s.rsa_components();
    let header = json!({"alg": "HS256", "kid": "r1"});
    let claims = good_claims(ISSUER, "n");
    let mut n_e = n.clone();
    n_e.extend_from_slice(&e);
    let jwk_text = s.jwk().to_string();
    for secret in [n.clone(), n_e, s.rsa_der(), jwk_text.into_bytes()] {
        let err = refused(&hs256(&header, &claims, &secret), &keys, None);
        assert!(
            matches!(err, OidcError::AlgNotAllowed { alg: ref a } if a == "HS256"),
            "{err:?}"
        );
    }
    for alg in ["HS384", "HS512"] {
        let err = refused(
            &hs256(&json!({"alg": alg, "kid": "r1"}), &claims, &n),
            &keys,
            None,
        );
        assert!(matches!(err, OidcError::AlgNotAllowed { .. }), "{err:?}");
    }
}

#[test]
fn key_with_mismatched_kty_is_refused() {
    let rsa = Signer::rsa("r1");
    let ec = Signer::es256("e1");
    let keys = keys_of(&[&rsa, &ec]);
    // An ES256 header naming the RSA key.
    let token = ec.sign_with_header(
        &json!({"alg": "ES256", "kid": "r1"}),
        &good_claims(ISSUER, "n"),
    );
    let err = refused(&token, &keys, None);
    assert!(
        matches!(err, OidcError::KeyMismatch { ref kid, ref alg, .. } if kid == "r1" && alg == "ES256"),
        "{err:?}"
    );
    // EdDSA naming the P-256 key.
    let ed = Signer::ed25519("d1");
    let token = ed.sign_with_header(
        &json!({"alg": "EdDSA", "kid": "e1"}),
        &good_claims(ISSUER, "n"),
    );
    let err = refused(&token, &keys, None);
    assert!(matches!(err, OidcError::KeyMismatch { .. }), "{err:?}");
    // The JWK says RS256 only; a PS256 header naming it is refused before any signature check.
    let token = rsa.sign_with_header(
        &json!({"alg": "PS256", "kid": "r1"}),
        &good_claims(ISSUER, "n"),
    );
    let err = refused(&token, &keys, None);
    assert!(matches!(err, OidcError::KeyMismatch { .. }), "{err:?}");
    println!("{err}");
}

#[test]
fn wrong_issuer() {
    let s = Signer::es256("e1");
    let token = s.sign(&good_claims("https://evil.test", "n"));
    let err = refused(&token, &keys_of(&[&s]), None);
    assert!(
        matches!(err, OidcError::WrongIssuer { ref expected, ref got } if expected == ISSUER && got == "https://evil.test"),
        "{err:?}"
    );
    // A trailing slash is another issuer.
    let token = s.sign(&good_claims("https://idp.test/", "n"));
    assert!(matches!(
        refused(&token, &keys_of(&[&s]), None),
        OidcError::WrongIssuer { .. }
    ));
}

#[test]
fn wrong_audience() {
    let s = Signer::es256("e1");
    let token = s.sign(&with(good_claims(ISSUER, "n"), |c| {
        c.insert("aud".into(), json!("someone-else"));
    }));
    let err = refused(&token, &keys_of(&[&s]), None);
    assert!(
        matches!(err, OidcError::WrongAudience { ref got, .. } if got == &["someone-else"]),
        "{err:?}"
    );
}

#[test]
fn extra_untrusted_audience() {
    let s = Signer::es256("e1");
    let token = s.sign(&with(good_claims(ISSUER, "n"), |c| {
        c.insert("aud".into(), json!([CLIENT_ID, "other-app"]));
        c.insert("azp".into(), json!(CLIENT_ID));
    }));
    let err = refused(&token, &keys_of(&[&s]), None);
    assert!(
        matches!(err, OidcError::UntrustedAudience { ref extra, .. } if extra == "other-app"),
        "{err:?}"
    );
}

#[test]
fn azp_mismatch() {
    let s = Signer::es256("e1");
    let keys = keys_of(&[&s]);
    let token = s.sign(&with(good_claims(ISSUER, "n"), |c| {
        c.insert("aud".into(), json!([CLIENT_ID, "other-app"]));
        c.insert("azp".into(), json!("other-app"));
    }));
    let err = refused(&token, &keys, None);
    assert!(
        matches!(err, OidcError::AzpMismatch { got: Some(ref g), .. } if g == "other-app"),
        "{err:?}"
    );
    // Several audiences and no azp at all.
    let token = s.sign(&with(good_claims(ISSUER, "n"), |c| {
        c.insert("aud".into(), json!([CLIENT_ID, "other-app"]));
    }));
    assert!(matches!(
        refused(&token, &keys, None),
        OidcError::AzpMismatch { got: None, .. }
    ));
}

#[test]
fn expired() {
    let s = Signer::es256("e1");
    let now = now_secs();
    let token = s.sign(&with(good_claims(ISSUER, "n"), |c| {
        c.insert("exp".into(), json!(now - 61));
        c.insert("iat".into(), json!(now - 700));
        c.insert("nbf".into(), json!(now - 700));
    }));
    let err = refused(&token, &keys_of(&[&s]), None);
    assert!(
        matches!(err, OidcError::Expired { skew_secs: 60, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("skew 60 s"));
    // Within the skew it still counts.
    let token = s.sign(&with(good_claims(ISSUER, "n"), |c| {
        c.insert("exp".into(), json!(now - 30));
    }));
    verify_id_token(&token, &keys_of(&[&s]), &checks(None)).unwrap();
}

#[test]
fn not_yet_valid_nbf_and_iat() {
    let s = Signer::es256("e1");
    let keys = keys_of(&[&s]);
    let now = now_secs();
    for claim in ["nbf", "iat"] {
        let token = s.sign(&with(good_claims(ISSUER, "n"), |c| {
            c.insert(claim.into(), json!(now + 300));
        }));
        let err = refused(&token, &keys, None);
        assert!(
            matches!(err, OidcError::NotYetValid { claim: c, .. } if c == claim),
            "{err:?}"
        );
    }
    // 30 s ahead is within the skew.
    let token = s.sign(&with(good_claims(ISSUER, "n"), |c| {
        c.insert("iat".into(), json!(now + 30));
    }));
    verify_id_token(&token, &keys, &checks(None)).unwrap();
}

#[test]
fn nonce_mismatch() {
    let s = Signer::es256("e1");
    let keys = keys_of(&[&s]);
    let token = s.sign(&good_claims(
        ISSUER,
        &login_nonce(b"challenge", b"device-a"),
    ));
    let err = refused(&token, &keys, Some(&login_nonce(b"challenge", b"device-b")));
    assert!(
        matches!(err, OidcError::NonceMismatch { missing: false }),
        "{err:?}"
    );
    let token = s.sign(&with(good_claims(ISSUER, "n"), |c| {
        c.remove("nonce");
    }));
    assert!(matches!(
        refused(&token, &keys, Some("n")),
        OidcError::NonceMismatch { missing: true }
    ));
}

#[test]
fn unknown_kid_and_malformed_tokens() {
    let s = Signer::es256("e1");
    let keys = keys_of(&[&s]);
    let token = Signer::es256("e2").sign(&good_claims(ISSUER, "n"));
    let err = refused(&token, &keys, None);
    assert!(
        matches!(err, OidcError::UnknownKid { ref kid, ref known } if kid == "e2" && known == &["e1"]),
        "{err:?}"
    );
    for bad in [
        "",
        "a.b",
        "a.b.c.d.e",
        "!!.!!.!!",
        "e30.e30.e30=",
        &"a".repeat(70_000),
    ] {
        let err = verify_id_token(bad, &keys, &checks(None)).unwrap_err();
        assert!(
            matches!(err, OidcError::Malformed { .. }),
            "{bad:.20}: {err:?}"
        );
    }
    // A non-object payload names the part and the byte offset.
    let token = format!("{}.{}.", b64(br#"{"alg":"ES256"}"#), b64(b"{\"iss\": 5,,}"));
    match jwt::parse(&token) {
        Err(OidcError::Malformed { field, offset, .. }) => {
            assert_eq!(field, "payload");
            assert_eq!(offset, Some(10));
        }
        other => panic!("{other:?}"),
    }
    let token = s.sign_with_header(
        &json!({"alg": "ES256", "kid": "e1", "crit": ["exp"]}),
        &good_claims(ISSUER, "n"),
    );
    assert!(
        matches!(refused(&token, &keys, None), OidcError::Malformed { ref field, .. } if field == "header.crit")
    );
}

// ---- parsers -----------------------------------------------------------------------------

#[test]
fn discovery_checks_issuer_and_https() {
    let doc = |iss: &str, token: &str| {
        json!({"issuer": iss, "authorization_endpoint": "https://idp.test/auth", "token_endpoint": token,
               "jwks_uri": "https://idp.test/jwks"})
        .to_string()
    };
    let d = Discovery::parse(doc(ISSUER, "https://idp.test/token").as_bytes(), ISSUER).unwrap();
    assert_eq!(d.token_endpoint, "https://idp.test/token");
    assert!(d.device_authorization_endpoint.is_none());
    let err = Discovery::parse(
        doc("https://idp.test/", "https://idp.test/token").as_bytes(),
        ISSUER,
    )
    .unwrap_err();
    println!("{err}");
    assert!(matches!(err, OidcError::WrongIssuer { .. }));
    let err =
        Discovery::parse(doc(ISSUER, "http://idp.test/token").as_bytes(), ISSUER).unwrap_err();
    println!("{err}");
    assert!(matches!(err, OidcError::Malformed { ref field, .. } if field == "token_endpoint"));
    let err = Discovery::parse(b"{\"issuer\": \"x\",\n  \"jwks_uri\": 7 ]", ISSUER).unwrap_err();
    println!("{err}");
    assert!(matches!(
        err,
        OidcError::Malformed {
            offset: Some(_),
            ..
        }
    ));
    let err =
        Discovery::parse(json!({"issuer": ISSUER}).to_string().as_bytes(), ISSUER).unwrap_err();
    assert!(
        matches!(err, OidcError::Malformed { ref field, .. } if field == "authorization_endpoint")
    );
}

#[test]
fn jwks_skips_unusable_keys() {
    let rsa = Signer::rsa("r1");
    let (n, e) = rsa.rsa_components();
    let doc = json!({"keys": [
        rsa.jwk(),
        {"kty": "RSA", "use": "enc", "kid": "enc", "n": b64(&n), "e": b64(&e)},
        {"kty": "RSA", "kid": "short", "n": b64(&n[..128]), "e": b64(&e)},
        {"kty": "oct", "kid": "hmac", "k": b64(b"secret")},
        {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
        {"kty": "OKP", "crv": "X25519", "kid": "x", "x": b64(&[0u8; 32])},
        {"kty": "XYZ", "kid": "xyz"},
        Signer::es256("e1").jwk(),
        Signer::ed25519("d1").jwk(),
    ]});
    let keys = Jwks::parse(doc.to_string().as_bytes()).unwrap();
    assert_eq!(keys.kids(), vec!["r1", "e1", "d1"]);
    assert!(
        matches!(Jwks::parse(b"{}"), Err(OidcError::Malformed { ref field, .. }) if field == "keys")
    );
    assert!(matches!(
        Jwks::parse(b"[1]"),
        Err(OidcError::Malformed { .. })
    ));
}

#[test]
fn secrets_are_redacted() {
    let secret = ClientSecret::new("s3cr3t".into());
    assert_eq!(format!("{secret:?}"), "<redacted>");
    assert_eq!(secret.expose(), "s3cr3t");
    let mut settings = ProviderSettings::new(ISSUER, CLIENT_ID);
    settings.client_secret = Some(secret);
    assert!(!format!("{settings:?}").contains("s3cr3t"));
    let tokens = Tokens {
        id_token: "header.payload.sig".into(),
        access_token: Some(ClientSecret::new("at".into())),
        refresh_token: None,
        expires_in: None,
    };
    assert!(!format!("{tokens:?}").contains("payload"));
}

// ---- PKCE --------------------------------------------------------------------------------

#[test]
fn pkce_rfc7636_appendix_b() {
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

proptest! {
    #[test]
    fn pkce_verifier_charset_and_length(_round in 0u8..32) {
        let v = pkce_verifier();
        prop_assert!((43..=128).contains(&v.len()));
        prop_assert!(v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
        let c = pkce_challenge(&v);
        prop_assert_eq!(c.len(), 43);
        prop_assert!(c.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)));
    }

    #[test]
    fn login_nonce_binds_both_inputs(challenge in proptest::collection::vec(any::<u8>(), 32), a in proptest::collection::vec(any::<u8>(), 32), b in proptest::collection::vec(any::<u8>(), 32)) {
        prop_assume!(a != b);
        prop_assert_ne!(login_nonce(&challenge, &a), login_nonce(&challenge, &b));
        prop_assert_eq!(login_nonce(&challenge, &a), login_nonce(&challenge, &a));
    }
}

// ---- against the HTTPS IdP stand-in ------------------------------------------------------

fn tokens(id_token: String) -> Tokens {
    Tokens {
        id_token,
        access_token: Some(ClientSecret::new("access-1".into())),
        refresh_token: None,
        expires_in: None,
    }
}

#[tokio::test]
async fn discover_and_redeem_code_public_and_confidential() {
    let signer = Signer::rsa("r1");
    let idp = Idp::start(jwks(&[&signer])).await;
    let p = Provider::discover(idp.settings()).await.unwrap();
    assert_eq!(
        p.discovery().token_endpoint,
        format!("{}/token", idp.issuer)
    );
    assert_eq!(p.keys().kids(), vec!["r1"]);

    let url = p.authorization_url("http://127.0.0.1:5555/cb?x=1", "st&ate", "no nce", "chal");
    println!("{url}");
    assert!(url.starts_with(&format!(
        "{}/auth?response_type=code&client_id=zt-edge&",
        idp.issuer
    )));
    assert!(url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcb%3Fx%3D1"));
    assert!(url.contains("scope=openid%20email%20groups"));
    assert!(url
        .contains("state=st%26ate&nonce=no%20nce&code_challenge=chal&code_challenge_method=S256"));

    idp.state().code_response = json!({"id_token": signer.sign(&good_claims(&idp.issuer, "n1")),
        "access_token": "at", "refresh_token": "rt", "token_type": "Bearer", "expires_in": 300});
    let t = p
        .redeem_code("the-code", "the-verifier", "http://127.0.0.1:5555/cb")
        .await
        .unwrap();
    assert_eq!(t.expires_in, Some(Duration::from_secs(300)));
    assert_eq!(
        t.refresh_token.as_ref().map(ClientSecret::expose),
        Some("rt")
    );
    {
        let s = idp.state();
        let (endpoint, form, auth) = s.forms.last().unwrap();
        assert_eq!(endpoint, "token");
        assert_eq!(form["grant_type"], "authorization_code");
        assert_eq!(form["code"], "the-code");
        assert_eq!(form["code_verifier"], "the-verifier");
        assert_eq!(form["redirect_uri"], "http://127.0.0.1:5555/cb");
        assert_eq!(form["client_id"], CLIENT_ID);
        assert!(auth.is_none());
    }
    let login = p.verify(&t, Some("n1")).await.unwrap();
    assert_eq!(login.subject, "user-123");
    assert_eq!(login.groups, vec!["k8s-admins", "staff"]);
    assert_eq!(
        login.refresh_token.as_ref().map(ClientSecret::expose),
        Some("rt")
    );

    // A confidential client authenticates with HTTP Basic and sends no client_id in the body.
    let mut settings = idp.settings();
    settings.client_secret = Some(ClientSecret::new("s3cret:+/".into()));
    let p = Provider::discover(settings).await.unwrap();
    p.redeem_code("c2", "v2", "http://127.0.0.1:5555/cb")
        .await
        .unwrap();
    let s = idp.state();
    let (_, form, auth) = s.forms.last().unwrap();
    assert!(!form.contains_key("client_id"));
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode("zt-edge:s3cret%3A%2B%2F");
    assert_eq!(auth.as_deref(), Some(format!("Basic {expected}").as_str()));
}

#[tokio::test]
async fn a_refresh_renews_the_same_subject_and_repeats_its_checks() {
    let signer = Signer::rsa("r1");
    let idp = Idp::start(jwks(&[&signer])).await;
    let mut settings = idp.settings();
    settings.scopes.push("offline_access".into());
    let p = Provider::discover(settings).await.unwrap();
    // Offline access asks for consent (OpenID Connect Core §11).
    let url = p.authorization_url("http://127.0.0.1:5555/cb", "s", "n", "c");
    assert!(
        url.contains("offline_access") && url.ends_with("&prompt=consent"),
        "{url}"
    );

    // The first sign-in claims its nonce; a refreshed ID token may repeat it (the
    // provider keeps the original's) without counting as a replay.
    let first = tokens(signer.sign(&good_claims(&idp.issuer, "n-refresh")));
    p.verify(&first, Some("n-refresh")).await.unwrap();
    idp.state().refresh_response = json!({
        "id_token": signer.sign(&with(good_claims(&idp.issuer, "n-refresh"), |c| {
            c.insert("groups".into(), json!(["staff"]));
        })),
        "access_token": "at-2", "refresh_token": "rt-2", "token_type": "Bearer"});
    let t = p.refresh(&ClientSecret::new("rt-1".into())).await.unwrap();
    {
        let s = idp.state();
        let (endpoint, form, _) = s.forms.last().unwrap();
        assert_eq!(endpoint, "token");
        assert_eq!(form["grant_type"], "refresh_token");
        assert_eq!(form["refresh_token"], "rt-1");
        assert_eq!(form["client_id"], CLIENT_ID);
    }
    let renewed = p.verify_refreshed(&t, "user-123").await.unwrap();
    assert_eq!(
        renewed.groups,
        vec!["staff"],
        "the groups are the refresh's"
    );
    assert_eq!(
        renewed.refresh_token.as_ref().map(ClientSecret::expose),
        Some("rt-2"),
        "a rotated refresh token is handed on"
    );
    // The same nonce in a fresh sign-in is still a replay.
    assert!(matches!(
        p.verify(&first, Some("n-refresh")).await,
        Err(OidcError::NonceReplayed)
    ));

    // Another subject in the refreshed token is refused (Core §12.2).
    let other = tokens(signer.sign(&with(good_claims(&idp.issuer, "n-x"), |c| {
        c.insert("sub".into(), json!("someone-else"));
    })));
    match p.verify_refreshed(&other, "user-123").await {
        Err(e @ OidcError::RefreshSubjectChanged { .. }) => {
            let said = e.to_string();
            assert!(
                said.contains("someone-else") && said.contains("user-123"),
                "{said}"
            );
        }
        other => panic!("another subject was accepted: {other:?}"),
    }
    // A refreshed token that fails a sign-in check (email no longer verified) is refused.
    let mut unverified = tokens(signer.sign(&with(good_claims(&idp.issuer, "n-y"), |c| {
        c.insert("email_verified".into(), json!(false));
    })));
    // (No access token: userinfo, which would vouch again, is out of the picture.)
    unverified.access_token = None;
    assert!(matches!(
        p.verify_refreshed(&unverified, "user-123").await,
        Err(OidcError::EmailNotVerified { .. })
    ));
    // A refused refresh says the provider's words.
    idp.state().refresh_response = serde_json::Value::Null;
    match p.refresh(&ClientSecret::new("rt-2".into())).await {
        Err(OidcError::IdpError {
            error,
            status,
            description,
            ..
        }) => {
            assert_eq!(error.as_deref(), Some("invalid_grant"));
            assert_eq!(status, 400);
            assert_eq!(description.as_deref(), Some("refresh token revoked"));
        }
        other => panic!("a refused refresh: {other:?}"),
    }
}

#[tokio::test]
async fn idp_error_answers_are_reported() {
    let signer = Signer::rsa("r1");
    let idp = Idp::start(jwks(&[&signer])).await;
    let p = Provider::discover(idp.settings()).await.unwrap();
    idp.state().device_polls = [(
        400,
        json!({"error": "invalid_grant", "error_description": "code\nexpired"}),
    )]
    .into();
    let auth = zt_oidc::DeviceAuthorization {
        device_code: ClientSecret::new("dc".into()),
        user_code: "U".into(),
        verification_uri: format!("{}/device", idp.issuer),
        verification_uri_complete: None,
        expires_in: Duration::from_secs(30),
        interval: Duration::from_secs(1),
        issued_at: Instant::now(),
    };
    let err = p.poll_device(&auth).await.unwrap_err();
    println!("{err}");
    assert!(
        matches!(err, OidcError::IdpError { status: 400, error: Some(ref e), .. } if e == "invalid_grant")
    );
    assert!(err.to_string().contains("codeexpired"));
    // The wrong issuer at discovery.
    let mut settings = idp.settings();
    settings.issuer = format!("{}/", idp.issuer);
    let err = Provider::discover(settings).await.unwrap_err();
    println!("{err}");
    assert!(matches!(err, OidcError::WrongIssuer { .. }));
}

#[tokio::test]
async fn login_checks_through_the_provider() {
    let signer = Signer::es256("e1");
    let idp = Idp::start(jwks(&[&signer])).await;
    let mut settings = idp.settings();
    settings.allowed_domains = vec!["example.com".into()];
    let p = Provider::discover(settings).await.unwrap();
    let iss = idp.issuer.clone();

    // Good, then the same token again: the nonce is replayed.
    let t = tokens(signer.sign(&good_claims(&iss, "nonce-1")));
    let login = p.verify(&t, Some("nonce-1")).await.unwrap();
    assert_eq!(login.email, "Ada@Example.COM");
    assert_eq!(login.name.as_deref(), Some("Ada"));
    let err = p.verify(&t, Some("nonce-1")).await.unwrap_err();
    println!("{err}");
    assert!(matches!(err, OidcError::NonceReplayed));
    // A clone shares the ledger.
    assert!(matches!(
        p.clone().verify(&t, Some("nonce-1")).await,
        Err(OidcError::NonceReplayed)
    ));

    // email_verified false, and missing (userinfo does not vouch either).
    idp.state().userinfo = json!({"sub": "user-123"});
    let t = tokens(signer.sign(&with(good_claims(&iss, "nonce-2"), |c| {
        c.insert("email_verified".into(), json!(false));
    })));
    let err = p.verify(&t, Some("nonce-2")).await.unwrap_err();
    println!("{err}");
    assert!(matches!(
        err,
        OidcError::EmailNotVerified {
            verified: "false",
            ..
        }
    ));
    let t = tokens(signer.sign(&with(good_claims(&iss, "nonce-3"), |c| {
        c.remove("email_verified");
    })));
    let err = p.verify(&t, Some("nonce-3")).await.unwrap_err();
    println!("{err}");
    assert!(matches!(
        err,
        OidcError::EmailNotVerified {
            verified: "missing",
            ..
        }
    ));

    // Domain not allowed.
    let t = tokens(signer.sign(&with(good_claims(&iss, "nonce-4"), |c| {
        c.insert("email".into(), json!("eve@evil.example"));
    })));
    let err = p.verify(&t, Some("nonce-4")).await.unwrap_err();
    println!("{err}");
    assert!(
        matches!(err, OidcError::DomainNotAllowed { ref domain, ref allowed } if domain == "evil.example" && allowed == &["example.com"])
    );

    // Groups claim missing in the ID token and userinfo.
    let t = tokens(signer.sign(&with(good_claims(&iss, "nonce-5"), |c| {
        c.remove("groups");
        c.insert("roles".into(), json!(["a"]));
    })));
    let err = p.verify(&t, Some("nonce-5")).await.unwrap_err();
    println!("{err}");
    match err {
        OidcError::GroupsClaimMissing { looked_for, came } => {
            assert_eq!(looked_for, "groups");
            assert!(
                came.contains(&"roles".to_owned()) && came.contains(&"email".to_owned()),
                "{came:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A single string counts as one group.
    let t = tokens(signer.sign(&with(good_claims(&iss, "nonce-6"), |c| {
        c.insert("groups".into(), json!("k8s-admins"));
    })));
    assert_eq!(
        p.verify(&t, Some("nonce-6")).await.unwrap().groups,
        vec!["k8s-admins"]
    );
    // The wrong nonce through the provider.
    let t = tokens(signer.sign(&good_claims(&iss, "nonce-7")));
    assert!(matches!(
        p.verify(&t, Some("nonce-8")).await,
        Err(OidcError::NonceMismatch { .. })
    ));
}

#[tokio::test]
async fn userinfo_fills_in_email_and_groups() {
    let signer = Signer::ed25519("d1");
    let idp = Idp::start(jwks(&[&signer])).await;
    let p = Provider::discover(idp.settings()).await.unwrap();
    let bare = |nonce: &str| {
        with(good_claims(&idp.issuer, nonce), |c| {
            c.remove("email");
            c.remove("email_verified");
            c.remove("groups");
            c.remove("name");
        })
    };
    idp.state().userinfo = json!({"sub": "user-123", "email": "ada@example.com", "email_verified": true,
        "groups": ["k8s-admins"], "name": "Ada L."});
    let login = p
        .verify(&tokens(signer.sign(&bare("u1"))), Some("u1"))
        .await
        .unwrap();
    assert_eq!(login.email, "ada@example.com");
    assert_eq!(login.groups, vec!["k8s-admins"]);
    assert_eq!(login.name.as_deref(), Some("Ada L."));
    {
        let s = idp.state();
        assert_eq!(s.userinfo_hits, 1);
        assert_eq!(
            s.userinfo_auth.last().unwrap().as_deref(),
            Some("Bearer access-1")
        );
    }
    // The ID token has everything: userinfo is not asked.
    p.verify(
        &tokens(signer.sign(&good_claims(&idp.issuer, "u2"))),
        Some("u2"),
    )
    .await
    .unwrap();
    assert_eq!(idp.state().userinfo_hits, 1);
    // Userinfo about someone else.
    idp.state().userinfo = json!({"sub": "user-999", "email": "ada@example.com", "email_verified": true, "groups": []});
    let err = p
        .verify(&tokens(signer.sign(&bare("u3"))), Some("u3"))
        .await
        .unwrap_err();
    println!("{err}");
    assert!(matches!(err, OidcError::UserinfoSubjectMismatch { .. }));
    // Userinfo with an unverified email.
    idp.state().userinfo = json!({"sub": "user-123", "email": "ada@example.com", "email_verified": false, "groups": []});
    let err = p
        .verify(&tokens(signer.sign(&bare("u4"))), Some("u4"))
        .await
        .unwrap_err();
    assert!(matches!(err, OidcError::EmailNotVerified { .. }), "{err:?}");
}

#[tokio::test]
async fn unknown_kid_refreshes_the_jwks_exactly_once() {
    let signer = Signer::rsa("r1");
    let idp = Idp::start(jwks(&[&signer])).await;
    let p = Provider::discover(idp.settings()).await.unwrap();
    assert_eq!(idp.state().jwks_hits, 1);
    let stranger = Signer::es256("stranger");
    let t = tokens(stranger.sign(&good_claims(&idp.issuer, "k1")));
    let err = p.verify(&t, Some("k1")).await.unwrap_err();
    println!("{err}");
    assert!(matches!(err, OidcError::UnknownKid { ref kid, .. } if kid == "stranger"));
    assert_eq!(idp.state().jwks_hits, 2, "one refresh for the unknown kid");
    // Within the rate limit: refused again without asking the IdP.
    for _ in 0..5 {
        assert!(matches!(
            p.verify(&t, Some("k1")).await,
            Err(OidcError::UnknownKid { .. })
        ));
    }
    assert_eq!(
        idp.state().jwks_hits,
        2,
        "no more refreshes within the rate limit"
    );
}

#[tokio::test]
async fn key_rotation_new_kid_works_after_refresh_and_cached_keys_go_on() {
    let old = Signer::rsa("old");
    let idp = Idp::start(jwks(&[&old])).await;
    let p = Provider::discover(idp.settings()).await.unwrap();
    p.set_key_refresh_min_interval(Duration::ZERO);
    let new = Signer::es256("new");
    idp.state().jwks = jwks(&[&old, &new]);
    let login = p
        .verify(
            &tokens(new.sign(&good_claims(&idp.issuer, "r1"))),
            Some("r1"),
        )
        .await
        .unwrap();
    assert_eq!(login.subject, "user-123");
    assert_eq!(idp.state().jwks_hits, 2);
    assert_eq!(p.keys().kids(), vec!["old", "new"]);
    // Tokens under the old key go on verifying, with no further fetch.
    p.verify(
        &tokens(old.sign(&good_claims(&idp.issuer, "r2"))),
        Some("r2"),
    )
    .await
    .unwrap();
    assert_eq!(idp.state().jwks_hits, 2);
    // A scheduled refresh that fails (the JWKS turns into garbage) keeps the cached keys.
    idp.state().jwks = json!({"nope": 1});
    assert!(p.refresh_keys().await.is_err());
    assert_eq!(p.keys().kids(), vec!["old", "new"]);
    // A JWKS over the 1 MiB cap is refused as such, and the cached keys stay.
    idp.state().jwks = json!({"keys": [], "padding": "x".repeat(1024 * 1024 + 1)});
    let err = p.refresh_keys().await.unwrap_err();
    println!("{err}");
    assert!(
        matches!(err, OidcError::Malformed { document: "JWKS", ref reason, .. } if reason.contains("larger than"))
    );
    assert_eq!(p.keys().kids(), vec!["old", "new"]);
}

#[tokio::test]
async fn idp_down_cached_keys_work_and_nothing_hangs() {
    let signer = Signer::es256("e1");
    let idp = Idp::start(jwks(&[&signer])).await;
    let settings = idp.settings();
    let p = Provider::discover(settings.clone()).await.unwrap();
    let issuer = idp.issuer.clone();
    idp.stop().await;

    let started = Instant::now();
    let login = p
        .verify(
            &tokens(signer.sign(&good_claims(&issuer, "d1"))),
            Some("d1"),
        )
        .await
        .unwrap();
    assert_eq!(login.subject, "user-123");
    println!(
        "verify with cached keys while the IdP is down: {:?}",
        started.elapsed()
    );

    let deadline = Duration::from_secs(60);
    let started = Instant::now();
    let err = tokio::time::timeout(deadline, Provider::discover(settings))
        .await
        .expect("discover must not hang")
        .unwrap_err();
    println!("discover while down: {err} after {:?}", started.elapsed());
    assert!(
        matches!(err, OidcError::IdpUnreachable { ref url, .. } if url.ends_with("/.well-known/openid-configuration"))
    );

    let started = Instant::now();
    let err = tokio::time::timeout(deadline, p.redeem_code("c", "v", "http://127.0.0.1/cb"))
        .await
        .expect("redeem must not hang")
        .unwrap_err();
    println!("redeem while down: {err} after {:?}", started.elapsed());
    assert!(matches!(err, OidcError::IdpUnreachable { .. }));
    assert!(!err.to_string().contains("\"c\""));

    // An unknown kid while down: the refresh fails, the cached keys stay.
    let err = p
        .verify(
            &tokens(Signer::es256("e9").sign(&good_claims(&issuer, "d2"))),
            Some("d2"),
        )
        .await
        .unwrap_err();
    println!("unknown kid while down: {err}");
    assert!(matches!(err, OidcError::IdpUnreachable { .. }));
    assert_eq!(p.keys().kids(), vec!["e1"]);
}

#[tokio::test]
async fn device_flow_pending_slow_down_success() {
    let signer = Signer::es256("e1");
    let idp = Idp::start(jwks(&[&signer])).await;
    let p = Provider::discover(idp.settings()).await.unwrap();
    let nonce = login_nonce(&[7u8; 32], b"device public key");
    let id_token = signer.sign(&good_claims(&idp.issuer, &nonce));
    idp.state().device_polls = [
        (400, json!({"error": "authorization_pending"})),
        (400, json!({"error": "slow_down"})),
        (
            200,
            json!({"id_token": id_token, "access_token": "at", "token_type": "Bearer"}),
        ),
    ]
    .into();
    let auth = p.start_device(&nonce).await.unwrap();
    assert_eq!(auth.user_code, "WDJB-MJHT");
    assert_eq!(auth.interval, Duration::from_secs(1));
    assert!(!format!("{auth:?}").contains("device-code-secret"));
    {
        let s = idp.state();
        let (endpoint, form, _) = s.forms.last().unwrap();
        assert_eq!(endpoint, "device");
        assert_eq!(form["scope"], "openid email groups");
        assert_eq!(form["nonce"], nonce);
        assert_eq!(form["client_id"], CLIENT_ID);
    }
    let started = Instant::now();
    let t = p.poll_device(&auth).await.unwrap();
    let took = started.elapsed();
    println!("device flow: pending, slow_down, success in {took:?} (intervals 1 s, 1 s, then 6 s)");
    let polls: Vec<_> = idp
        .state()
        .forms
        .iter()
        .filter(|(e, f, _)| e == "token" && f["grant_type"].ends_with("device_code"))
        .cloned()
        .collect();
    assert_eq!(polls.len(), 3);
    assert!(polls
        .iter()
        .all(|(_, f, _)| f["device_code"] == "device-code-secret" && f["client_id"] == CLIENT_ID));
    assert!(
        took >= Duration::from_secs(8),
        "slow_down must add 5 s to the interval: {took:?}"
    );
    let login = p.verify(&t, Some(&nonce)).await.unwrap();
    assert_eq!(login.groups, vec!["k8s-admins", "staff"]);
}

#[tokio::test]
async fn device_flow_denied_and_expired() {
    let signer = Signer::es256("e1");
    let idp = Idp::start(jwks(&[&signer])).await;
    let p = Provider::discover(idp.settings()).await.unwrap();
    idp.state().device_polls = [(400, json!({"error": "access_denied"}))].into();
    let auth = p.start_device("n").await.unwrap();
    let err = p.poll_device(&auth).await.unwrap_err();
    println!("{err}");
    assert!(matches!(err, OidcError::DeviceDenied));

    idp.state().device_polls = [(400, json!({"error": "expired_token"}))].into();
    assert!(matches!(
        p.poll_device(&auth).await,
        Err(OidcError::DeviceExpired { .. })
    ));

    // The IdP keeps saying pending; polling gives up at expires_in.
    idp.state().device_polls = [(400, json!({"error": "authorization_pending"}))].into();
    idp.state().device_response["expires_in"] = json!(3);
    let auth = p.start_device("n").await.unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(60), p.poll_device(&auth))
        .await
        .unwrap()
        .unwrap_err();
    println!("{err} after {:?}", started.elapsed());
    assert!(matches!(err, OidcError::DeviceExpired { secs: 3 }));
}

#[test]
fn http_issuer_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(Provider::discover(ProviderSettings::new(
            "http://idp.test",
            CLIENT_ID,
        )))
        .unwrap_err();
    println!("{err}");
    assert!(matches!(err, OidcError::Settings(_)));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let idp = Idp::start(jwks(&[&Signer::es256("e1")])).await;
    let mut settings = idp.settings();
    settings.issuer = format!("{}/moved/here", idp.issuer);
    let err = Provider::discover(settings).await.unwrap_err();
    println!("{err}");
    assert!(
        matches!(err, OidcError::IdpError { status: 302, .. }),
        "{err:?}"
    );
    assert_eq!(
        idp.state().discovery_hits,
        0,
        "the redirect's target was not fetched"
    );
}

#[tokio::test]
async fn an_idp_that_never_answers_times_out() {
    // Accepts TCP connections and never says a word (not even the TLS handshake).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let idp = Idp::start(jwks(&[&Signer::es256("e1")])).await;
    let mut settings = idp.settings();
    settings.issuer = format!("https://{addr}");
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(60), Provider::discover(settings))
        .await
        .expect("discover must give up by itself")
        .unwrap_err();
    println!("silent IdP: {err} after {:?}", started.elapsed());
    assert!(
        matches!(err, OidcError::IdpUnreachable { ref cause, .. } if cause.contains("no complete answer")),
        "{err:?}"
    );
    hold.abort();
}
