//! The identity tests' harness proves itself: zt-testkit's real OpenID Provider
//! (oidc-provider on Node.js, over HTTPS with a test CA) and real browser (headless Chromium)
//! carry an authorization-code + PKCE login to a loopback listener, in both claim modes, and
//! a device-flow approval; the ID tokens verify with the test's own key; a key rotation shows
//! in the JWKS; a stopped provider closes its port and a restarted one answers again. Each
//! step's time is printed. Each test prints a SKIP line and passes when Node.js, the npm
//! modules (`npm ci` in zt-testkit/oidc) or Chromium are missing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use zt_testkit::oidc::{
    browser_unavailable, form_encode, https_get, https_get_bearer, https_post_form, pkce,
    provider_unavailable, skip, Account, Browser, OidcProvider, ProviderOptions, SigningKey,
};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn accounts() -> Vec<Account> {
    let mut alice = Account::new("alice", "alice@example.com").with_groups(&["eng", "ops"]);
    alice.name = Some("Alice Liddell".to_owned());
    let mut bob = Account::new("bob", "bob@example.com");
    bob.email_verified = false;
    vec![alice, bob]
}

/// Whether the test can run; prints a SKIP line when not.
fn available(test: &str) -> bool {
    match provider_unavailable().or_else(browser_unavailable) {
        None => true,
        Some(why) => {
            skip(test, &why);
            false
        }
    }
}

fn step(name: &str, since: Instant) -> Instant {
    eprintln!("idp_harness: {name}: {:?}", since.elapsed());
    Instant::now()
}

async fn get_json(op: &OidcProvider, url: &str) -> Value {
    let (status, body) = https_get(url, op.ca_pem()).await.unwrap();
    assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

async fn post_json(
    op: &OidcProvider,
    url: &str,
    fields: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Value) {
    let (status, body) = https_post_form(url, op.ca_pem(), fields, basic)
        .await
        .unwrap();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, value)
}

/// The query parameters of `url`, undecoded (the values the tests compare are URL-safe).
fn query(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A loopback listener standing in for `zt login`'s: answers one request and hands back its
/// request target.
async fn callback_listener() -> (u16, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the browser closed before its request ended");
            request.extend_from_slice(&buf[..n]);
            assert!(request.len() < 64 * 1024, "a request head over 64 KiB");
        }
        let body = "signed in; you can close this page";
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(reply.as_bytes()).await.unwrap();
        let head = String::from_utf8_lossy(&request).into_owned();
        let line = head.lines().next().unwrap_or_default().to_owned();
        let mut parts = line.split(' ');
        assert_eq!(parts.next(), Some("GET"), "{line}");
        parts.next().unwrap_or_default().to_owned()
    });
    (port, task)
}

/// One browser login through the provider's pages with PKCE (asking for a refresh token too
/// when `offline`); returns the token response.
async fn login(op: &OidcProvider, who: &str, secret: Option<&str>, offline: bool) -> Value {
    let client_id = op.options().client_id.clone();
    let discovery = get_json(
        op,
        &format!("{}/.well-known/openid-configuration", op.issuer()),
    )
    .await;
    let (port, listener) = callback_listener().await;
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let (verifier, challenge) = pkce();
    let state = format!("state-{port}");
    let (scope, prompt) = if offline {
        (
            "openid email profile groups offline_access",
            "&prompt=consent",
        )
    } else {
        ("openid email profile groups", "")
    };
    let url = format!(
        "{}?client_id={}&response_type=code&scope={}&redirect_uri={}&state={state}&nonce=n-{port}&code_challenge={challenge}&code_challenge_method=S256{prompt}",
        discovery["authorization_endpoint"].as_str().unwrap(),
        form_encode(&client_id),
        form_encode(scope),
        form_encode(&redirect_uri),
    );
    let t = Instant::now();
    let callback = Browser::login(&url, who).await.unwrap();
    let t = step(
        &format!("browser login as {who} to the loopback callback"),
        t,
    );
    let target = listener.await.unwrap();
    assert!(callback.starts_with(&redirect_uri), "{callback}");
    assert!(target.starts_with("/callback?"), "{target}");
    let params = query(&target);
    assert_eq!(params.get("state"), Some(&state), "{target}");
    let code = params.get("code").expect("a code in the callback");
    assert_eq!(query(&callback).get("code"), Some(code));

    let mut fields = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    if secret.is_none() {
        fields.push(("client_id", client_id.as_str()));
    }
    let token_endpoint = discovery["token_endpoint"].as_str().unwrap();
    let basic = secret.map(|s| (client_id.as_str(), s));
    let (status, tokens) = post_json(op, token_endpoint, &fields, basic).await;
    step("code redeemed at the token endpoint", t);
    assert_eq!(status, 200, "{tokens}");
    let claims = op
        .current_key()
        .verify(tokens["id_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims["iss"], op.issuer());
    assert_eq!(claims["aud"], client_id.as_str());
    assert_eq!(claims["sub"], who);
    assert_eq!(claims["nonce"], format!("n-{port}"));
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_login_with_pkce_gets_verified_tokens_in_both_claim_modes() {
    if !available("a_browser_login_with_pkce_gets_verified_tokens_in_both_claim_modes") {
        return;
    }
    // Claims in userinfo only (oidc-provider's default), a public client.
    let t = Instant::now();
    let op = OidcProvider::start(ProviderOptions {
        accounts: accounts(),
        ..ProviderOptions::default()
    })
    .await
    .unwrap();
    let t = step("provider started (claims in userinfo only)", t);
    let discovery = get_json(
        &op,
        &format!("{}/.well-known/openid-configuration", op.issuer()),
    )
    .await;
    assert_eq!(discovery["issuer"], op.issuer());
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        json!(["S256"])
    );
    let jwks = get_json(&op, discovery["jwks_uri"].as_str().unwrap()).await;
    assert_eq!(jwks["keys"], json!([op.current_key().public_jwk()]));
    step("discovery and JWKS over HTTPS with the test CA", t);

    // A code without PKCE is refused before any page shows.
    let (port, _unused) = callback_listener().await;
    let no_pkce = format!(
        "{}?client_id=zt&response_type=code&scope=openid&redirect_uri={}&state=s",
        discovery["authorization_endpoint"].as_str().unwrap(),
        form_encode(&format!("http://127.0.0.1:{port}/callback")),
    );
    let refused = Browser::login(&no_pkce, "alice").await.unwrap();
    assert!(refused.contains("error=invalid_request"), "{refused}");

    // An account the provider does not know: the error page's text, and the log says why.
    let (port, _unused) = callback_listener().await;
    let (_, challenge) = pkce();
    let unknown = format!(
        "{}?client_id=zt&response_type=code&scope=openid&redirect_uri={}&state=s&code_challenge={challenge}&code_challenge_method=S256",
        discovery["authorization_endpoint"].as_str().unwrap(),
        form_encode(&format!("http://127.0.0.1:{port}/callback")),
    );
    let err = Browser::login(&unknown, "mallory").await.unwrap_err();
    assert!(err.contains("error page"), "{err}");
    assert!(
        op.log().contains("no account with login \"mallory\""),
        "{}",
        op.log()
    );

    let tokens = login(&op, "alice", None, false).await;
    let id = op
        .current_key()
        .verify(tokens["id_token"].as_str().unwrap())
        .unwrap();
    for claim in ["email", "email_verified", "name", "groups"] {
        assert!(id.get(claim).is_none(), "{claim} in the ID token: {id}");
    }
    let t = Instant::now();
    let (status, body) = https_get_bearer(
        discovery["userinfo_endpoint"].as_str().unwrap(),
        op.ca_pem(),
        tokens["access_token"].as_str().unwrap(),
    )
    .await
    .unwrap();
    step("userinfo", t);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let userinfo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        userinfo,
        json!({"sub": "alice", "email": "alice@example.com", "email_verified": true,
               "name": "Alice Liddell", "groups": ["eng", "ops"]})
    );
    drop(op);

    // Claims in the ID token too, a confidential client, a custom groups claim; bob has no
    // groups claim at all and an unverified email.
    let t = Instant::now();
    let op = OidcProvider::start(ProviderOptions {
        accounts: accounts(),
        client_secret: Some("test-client-secret".to_owned()),
        claims_in_id_token: true,
        groups_claim: "roles".to_owned(),
        id_token_ttl: Duration::from_secs(120),
        ..ProviderOptions::default()
    })
    .await
    .unwrap();
    step("provider started (claims in the ID token)", t);
    let tokens = login(&op, "alice", Some("test-client-secret"), false).await;
    let id = op
        .current_key()
        .verify(tokens["id_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(id["email"], "alice@example.com");
    assert_eq!(id["email_verified"], true);
    assert_eq!(id["name"], "Alice Liddell");
    assert_eq!(id["roles"], json!(["eng", "ops"]));
    assert!(id.get("groups").is_none(), "{id}");
    assert_eq!(
        id["exp"].as_u64().unwrap() - id["iat"].as_u64().unwrap(),
        120
    );
    let tokens = login(&op, "bob", Some("test-client-secret"), true).await;
    let id = op
        .current_key()
        .verify(tokens["id_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(id["email"], "bob@example.com");
    assert_eq!(id["email_verified"], false);
    assert!(
        id.get("roles").is_none() && id.get("name").is_none(),
        "{id}"
    );

    // offline_access gave a refresh token; it gets a new ID token for the same account.
    let discovery = get_json(
        &op,
        &format!("{}/.well-known/openid-configuration", op.issuer()),
    )
    .await;
    let t = Instant::now();
    let refresh = tokens["refresh_token"].as_str().expect("a refresh token");
    let (status, refreshed) = post_json(
        &op,
        discovery["token_endpoint"].as_str().unwrap(),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        Some(("zt", "test-client-secret")),
    )
    .await;
    step("refresh_token grant", t);
    assert_eq!(status, 200, "{refreshed}");
    let id = op
        .current_key()
        .verify(refreshed["id_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (id["sub"].as_str(), id["email"].as_str()),
        (Some("bob"), Some("bob@example.com"))
    );

    // Without the secret the client is refused.
    let (status, reply) = post_json(
        &op,
        discovery["token_endpoint"].as_str().unwrap(),
        &[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("client_id", "zt"),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("invalid_client")),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_flow_key_rotation_and_restart() {
    if !available("device_flow_key_rotation_and_restart") {
        return;
    }
    let t = Instant::now();
    let mut op = OidcProvider::start(ProviderOptions {
        accounts: accounts(),
        claims_in_id_token: true,
        ..ProviderOptions::default()
    })
    .await
    .unwrap();
    let t = step("provider started", t);
    let discovery = get_json(
        &op,
        &format!("{}/.well-known/openid-configuration", op.issuer()),
    )
    .await;
    let device_endpoint = discovery["device_authorization_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let token_endpoint = discovery["token_endpoint"].as_str().unwrap().to_owned();

    // The device authorization request, the browser's approval, the poll.
    let (status, device) = post_json(
        &op,
        &device_endpoint,
        &[("client_id", "zt"), ("scope", "openid email groups")],
        None,
    )
    .await;
    assert_eq!(status, 200, "{device}");
    let device_code = device["device_code"].as_str().unwrap();
    let (status, pending) = post_json(
        &op,
        &token_endpoint,
        &[
            ("grant_type", DEVICE_GRANT),
            ("device_code", device_code),
            ("client_id", "zt"),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, pending["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let t = step("device authorization request and a pending poll", t);
    Browser::approve_device(
        device["verification_uri"].as_str().unwrap(),
        device["user_code"].as_str().unwrap(),
        "alice",
    )
    .await
    .unwrap();
    let t = step("browser approved the user code", t);
    let deadline = Instant::now() + Duration::from_secs(60);
    let tokens = loop {
        let (status, reply) = post_json(
            &op,
            &token_endpoint,
            &[
                ("grant_type", DEVICE_GRANT),
                ("device_code", device_code),
                ("client_id", "zt"),
            ],
            None,
        )
        .await;
        if status == 200 {
            break reply;
        }
        assert!(
            matches!(
                reply["error"].as_str(),
                Some("slow_down" | "authorization_pending")
            ),
            "{reply}"
        );
        assert!(
            Instant::now() < deadline,
            "the device poll never succeeded: {reply}"
        );
        tokio::time::sleep(Duration::from_secs(
            device["interval"].as_u64().unwrap_or(5),
        ))
        .await;
    };
    let t = step("token poll succeeded", t);
    let id = op
        .current_key()
        .verify(tokens["id_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (id["sub"].as_str(), id["email"].as_str()),
        (Some("alice"), Some("alice@example.com"))
    );
    assert_eq!(id["groups"], json!(["eng", "ops"]));

    // The verification_uri_complete way, for bob.
    let (_, device) = post_json(
        &op,
        &device_endpoint,
        &[("client_id", "zt"), ("scope", "openid")],
        None,
    )
    .await;
    Browser::approve_device(
        device["verification_uri_complete"].as_str().unwrap(),
        device["user_code"].as_str().unwrap(),
        "bob",
    )
    .await
    .unwrap();
    let (status, reply) = post_json(
        &op,
        &token_endpoint,
        &[
            ("grant_type", DEVICE_GRANT),
            ("device_code", device["device_code"].as_str().unwrap()),
            ("client_id", "zt"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let t = step("device approval through verification_uri_complete", t);

    // A wrong user code shows the provider's refusal, clearly.
    let err = Browser::approve_device(
        device["verification_uri"].as_str().unwrap(),
        "BCDF-GHJK",
        "bob",
    )
    .await
    .unwrap_err();
    assert!(err.contains("incorrect"), "{err}");
    let t = step("a wrong user code refused", t);

    // Rotation: the same issuer and port, the JWKS holds the new key only.
    let issuer = op.issuer().to_owned();
    let old = op.current_key().clone();
    op.rotate_key().await.unwrap();
    let t = step("rotate_key (RSA to RSA)", t);
    assert_eq!(op.issuer(), issuer);
    assert_ne!(op.current_key().kid, old.kid);
    let jwks = get_json(&op, discovery["jwks_uri"].as_str().unwrap()).await;
    assert_eq!(jwks["keys"], json!([op.current_key().public_jwk()]));
    op.rotate_to(SigningKey::generate_es256()).await.unwrap();
    let t = step("rotate_to ES256", t);
    let jwks = get_json(&op, discovery["jwks_uri"].as_str().unwrap()).await;
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"], json!([op.current_key().public_jwk()]));
    let discovery = get_json(&op, &format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );

    // A token the test signs itself verifies with the key that signed it, not another.
    let forged = op.current_key().sign(
        &json!({"alg": "ES256", "kid": op.current_key().kid}),
        &json!({"iss": issuer, "sub": "mallory"}),
    );
    assert_eq!(op.current_key().verify(&forged).unwrap()["sub"], "mallory");
    assert!(SigningKey::generate_es256()
        .with_kid(&op.current_key().kid)
        .verify(&forged)
        .is_err());
    let rsa = SigningKey::rs256_test(1);
    let forged = rsa.sign(
        &json!({"alg": "RS256", "kid": rsa.kid}),
        &json!({"sub": "x"}),
    );
    assert_eq!(rsa.verify(&forged).unwrap()["sub"], "x");
    assert!(SigningKey::rs256_test(0)
        .with_kid(&rsa.kid)
        .verify(&forged)
        .is_err());

    // Down: the port is closed. Up again: it answers on the same port.
    let authority = issuer.trim_start_matches("https://").to_owned();
    op.stop().await;
    let t = step("stop", t);
    let err = tokio::net::TcpStream::connect(&authority)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(https_get(&format!("{issuer}/jwks"), op.ca_pem())
        .await
        .is_err());
    op.restart().await.unwrap();
    step("restart", t);
    let discovery = get_json(&op, &format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(discovery["issuer"], issuer.as_str());
}
