//! ALPN `argotunnel` beside `zt/1` on one port, over real QUIC on loopback: cloudflared's
//! handshake gets the `quic.cftunnel.com` certificate and its connection is handed over raw;
//! zt peers register as before; a listener without argotunnel refuses it.
#![cfg(feature = "transport")]

use std::sync::Arc;

use crate::common::*;
use zt_proto::*;
use zt_testkit::pki::Ca;

const CFD_NAME: &str = "quic.cftunnel.com";

struct TwoIdentities {
    ca_der: Vec<u8>,
    zt: ServerIdentity,
    cfd: ServerIdentity,
}

/// One CA, and two leaves signed by it: the edge's own name and cloudflared's.
fn identities() -> TwoIdentities {
    let ca = Ca::new("zt test CA");
    TwoIdentities {
        ca_der: ca.der().to_vec(),
        zt: ca.server(&[SERVER_NAME]).identity(),
        cfd: ca.server(&[CFD_NAME]).identity(),
    }
}

/// A bare quinn client offering only `argotunnel`, trusting `ca_der`, as cloudflared does.
fn argotunnel_client(ca_der: &[u8]) -> quinn::Endpoint {
    quic_client(ca_der, ALPN_ARGOTUNNEL)
}

#[tokio::test]
async fn both_alpns_share_one_port_and_argotunnel_is_handed_over_raw() {
    let ids = identities();
    let listener = Arc::new(
        EdgeListener::bind_with_argotunnel(
            "127.0.0.1:0".parse().unwrap(),
            &ids.zt,
            &ids.cfd,
            "edge-test",
            test_settings(),
        )
        .unwrap(),
    );
    let addr = listener.local_addr().unwrap();
    let auth = Arc::new(TestAuth::default());
    let mut peers = accept_peers(listener.clone(), auth.clone());

    // cloudflared's side: ALPN argotunnel, server name quic.cftunnel.com. The handshake only
    // succeeds if the edge presented the certificate for that name.
    let client = argotunnel_client(&ids.ca_der);
    let conn = client.connect(addr, CFD_NAME).unwrap().await.unwrap();
    let alpn = conn
        .handshake_data()
        .unwrap()
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap()
        .protocol;
    assert_eq!(alpn.as_deref(), Some(ALPN_ARGOTUNNEL));
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"control stream bytes").await.unwrap();
    send.finish().unwrap();

    let EdgePeer::Argotunnel(cfd) = next_peer(&mut peers).await.unwrap() else {
        panic!("expected an argotunnel connection")
    };
    assert_eq!(cfd.server_name().as_deref(), Some(CFD_NAME));
    assert_eq!(cfd.remote_address(), client.local_addr().unwrap());
    let mut control = cfd.accept_stream().await.unwrap();
    let mut got = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut control, &mut got)
        .await
        .unwrap();
    assert_eq!(got, b"control stream bytes");
    tokio::io::AsyncWriteExt::write_all(&mut control, b"answer")
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::shutdown(&mut control)
        .await
        .unwrap();
    assert_eq!(recv.read_to_end(1024).await.unwrap(), b"answer");

    // The edge opens a stream (a flow, for cloudflared) and the peer accepts it.
    let mut flow = cfd.open_stream().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut flow, b"flow")
        .await
        .unwrap();
    let (_s, mut r) = conn.accept_bi().await.unwrap();
    let mut buf = [0u8; 4];
    r.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"flow");
    // Nobody was asked to authenticate anything.
    assert!(auth.refusals.lock().unwrap().is_empty());

    // A zt connector on the same port still registers, on the edge's own certificate.
    let tunnel = crate::common::Tunnel {
        id: uuid::Uuid::new_v4(),
        secret: zt_creds::TunnelSecret::generate(),
    };
    auth.keys
        .lock()
        .unwrap()
        .insert(tunnel.id, tunnel.secret.derive_auth_key());
    let ep = peer_endpoint(&EdgeTrust::ca_der(ids.ca_der.clone()));
    ep.connect_connector(
        addr,
        SERVER_NAME,
        connector_registration(tunnel.id, 0),
        &tunnel.secret.derive_auth_key(),
    )
    .await
    .unwrap();
    assert!(matches!(
        next_peer(&mut peers).await.unwrap(),
        EdgePeer::Connector(_)
    ));
    cfd.close(CloseCode::NO_ERROR, "test done");
    assert!(matches!(
        cfd.closed().await,
        quinn::ConnectionError::LocallyClosed
    ));
}

#[tokio::test]
async fn a_listener_without_argotunnel_refuses_that_alpn() {
    let ids = identities();
    let listener = Arc::new(
        EdgeListener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &ids.zt,
            "edge-test",
            test_settings(),
        )
        .unwrap(),
    );
    let addr = listener.local_addr().unwrap();
    let mut peers = accept_peers(listener, Arc::new(TestAuth::default()));
    let client = argotunnel_client(&ids.ca_der);
    let err = client.connect(addr, CFD_NAME).unwrap().await.unwrap_err();
    assert!(
        err.to_string().contains("no application protocol") || err.to_string().contains("120"),
        "{err}"
    );
    let outcome = next_peer(&mut peers).await;
    assert!(outcome.is_err(), "{outcome:?}");
}
