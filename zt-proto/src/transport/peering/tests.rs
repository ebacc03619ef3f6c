//! Peering over real QUIC on 127.0.0.1, with certificates made here by rcgen: the edge id
//! in a `urn:zt:edge:` URI, both extended key usages, as the edge issues them.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::flow::{FlowHeader, FlowStatus, FlowStatusCode, Protocol};
use crate::peering::{
    peer_edge_from_uri, peer_edge_uri, PeerConnectorInfo, PeerConnectorKind, PEER_EDGE_URI_PREFIX,
};

/// A peering CA.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name per CA, as organisations' CAs have: two CAs of one name would make a
        // foreign chain fail on its signature rather than its issuer.
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("zt peering CA {}", Uuid::new_v4()),
        );
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self { params, key, der }
    }

    /// An edge's peering identity: its id as a URI SAN, serverAuth and clientAuth.
    fn identity(&self, edge: Uuid) -> ServerIdentity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI(peer_edge_uri(edge).try_into().unwrap()));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap();
        ServerIdentity::from_der(
            vec![cert.der().to_vec(), self.der.clone()],
            key.serialize_der(),
        )
        .unwrap()
    }
}

/// Finds the edge URI by its bytes in the DER (a test shortcut: the edge parses the SAN
/// extension properly), refusing the ids in `refuse`.
#[derive(Default)]
struct UriVerifier {
    refuse: Vec<Uuid>,
}

impl PeerVerifier for UriVerifier {
    fn verify_peer(&self, leaf_der: &[u8]) -> Result<Uuid, String> {
        let prefix = PEER_EDGE_URI_PREFIX.as_bytes();
        let at = leaf_der
            .windows(prefix.len())
            .position(|w| w == prefix)
            .ok_or("no edge URI in the certificate")?;
        let id = leaf_der
            .get(at..at + prefix.len() + 36)
            .and_then(|uri| std::str::from_utf8(uri).ok())
            .and_then(peer_edge_from_uri)
            .ok_or("malformed edge URI")?;
        if self.refuse.contains(&id) {
            return Err(format!("edge {id} is decommissioned"));
        }
        Ok(id)
    }
}

fn settings() -> TransportSettings {
    TransportSettings {
        socket_receive_buffer: 256 * 1024,
        socket_send_buffer: 256 * 1024,
        ..TransportSettings::default()
    }
}

struct Edge {
    id: Uuid,
    endpoint: PeeringEndpoint,
    addr: SocketAddr,
}

fn edge_with(
    id: Uuid,
    identity: ServerIdentity,
    ca: &Ca,
    verifier: UriVerifier,
    settings: TransportSettings,
) -> Edge {
    let config = PeeringConfig {
        identity,
        ca_der: ca.der.clone(),
        settings,
        verifier: Arc::new(verifier),
    };
    let endpoint = PeeringEndpoint::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
    let addr = endpoint.local_addr().unwrap();
    Edge { id, endpoint, addr }
}

fn edge(ca: &Ca) -> Edge {
    let id = Uuid::new_v4();
    edge_with(id, ca.identity(id), ca, UriVerifier::default(), settings())
}

/// Edge A dialled edge B: A's connection and B's.
async fn pair(a: &Edge, b: &Edge) -> (PeeringConnection, PeeringConnection) {
    let a_conn = a.endpoint.connect(b.addr, b.id).await.unwrap();
    let b_conn = b.endpoint.accept().await.unwrap().unwrap();
    assert_eq!(a_conn.peer_edge(), b.id);
    assert_eq!(b_conn.peer_edge(), a.id);
    assert_eq!(a_conn.remote_address(), b.addr);
    (a_conn, b_conn)
}

fn open_from(a: &Edge, flow_id: u64) -> PeerFlowOpen {
    PeerFlowOpen {
        tunnel_id: Uuid::new_v4(),
        from_edge: a.id,
        flow: FlowHeader {
            flow_id,
            protocol: Protocol::Tcp,
            dest: "198.51.100.101:443".parse().unwrap(),
            metadata: vec![("trace".into(), "abc".into())],
        },
    }
}

fn connector() -> PeerConnectorInfo {
    PeerConnectorInfo {
        connector_id: Uuid::new_v4(),
        conn_index: 1,
        kind: PeerConnectorKind::Zt,
        transport: "quic".into(),
        first_fin_ends: false,
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_flow_carries_bytes_both_ways_with_half_close() {
    let ca = Ca::new();
    let (a, b) = (edge(&ca), edge(&ca));
    let (a_conn, b_conn) = pair(&a, &b).await;
    let open = open_from(&a, 7);
    let info = connector();
    let from_a = pattern(300_000, 1);
    let from_b = pattern(200_000, 2);

    let served = {
        let (open, info, from_a, from_b) =
            (open.clone(), info.clone(), from_a.clone(), from_b.clone());
        tokio::spawn(async move {
            let (got, responder) = b_conn.accept_flow().await.unwrap().unwrap();
            assert_eq!(got, open);
            assert_eq!(responder.flow_id(), 7);
            let mut flow = responder
                .answer(PeerFlowAnswer::ok(info))
                .await
                .unwrap()
                .expect("an ok answer hands back the stream");
            // A finishes first; B still sends afterwards, then finishes.
            let mut got = Vec::new();
            flow.read_to_end(&mut got).await.unwrap();
            assert!(got == from_a, "A's bytes arrived changed");
            flow.write_all(&from_b).await.unwrap();
            flow.shutdown().await.unwrap();
            assert_eq!(flow.send_half().stopped().await.unwrap(), None);
        })
    };

    let (answer, flow) = a_conn.open_flow(&open, ANSWER_TIMEOUT).await.unwrap();
    assert_eq!(answer, PeerFlowAnswer::ok(info));
    let mut flow = flow.expect("a stream for an ok answer");
    assert_eq!(flow.flow_id(), 7);
    flow.write_all(&from_a).await.unwrap();
    flow.shutdown().await.unwrap();
    let mut got = Vec::new();
    flow.read_to_end(&mut got).await.unwrap();
    assert!(got == from_b, "B's bytes arrived changed");
    served.await.unwrap();
}

#[tokio::test]
async fn a_refusal_reaches_the_opener_with_its_code_and_detail_and_no_stream() {
    let ca = Ca::new();
    let (a, b) = (edge(&ca), edge(&ca));
    let (a_conn, b_conn) = pair(&a, &b).await;
    let served = tokio::spawn(async move {
        let (_, responder) = b_conn.accept_flow().await.unwrap().unwrap();
        let refusal = PeerFlowAnswer::refused(FlowStatus::new(
            FlowStatusCode::NoConnector,
            "tunnel has no live connector here",
        ));
        assert!(responder.answer(refusal).await.unwrap().is_none());
        b_conn
    });
    let (answer, flow) = a_conn
        .open_flow(&open_from(&a, 1), ANSWER_TIMEOUT)
        .await
        .unwrap();
    assert!(flow.is_none());
    assert_eq!(answer.status.code, FlowStatusCode::NoConnector);
    assert_eq!(answer.status.detail, "tunnel has no live connector here");
    assert_eq!(answer.connector, None);
    let _b_conn = served.await.unwrap();
    assert!(
        !a_conn.is_closed(),
        "a refusal costs the flow, not the connection"
    );
}

#[tokio::test]
async fn a_dialler_the_verifier_refuses_gets_the_reason_in_a_typed_error() {
    let ca = Ca::new();
    let a = edge(&ca);
    let b_id = Uuid::new_v4();
    let verifier = UriVerifier { refuse: vec![a.id] };
    let b = edge_with(b_id, ca.identity(b_id), &ca, verifier, settings());

    let err = a.endpoint.connect(b.addr, b.id).await.unwrap_err();
    let expected = format!("edge {} is decommissioned", a.id);
    match &err {
        PeeringError::RefusedByPeer { addr, reason } => {
            assert_eq!(*addr, b.addr);
            assert_eq!(reason, &expected);
        }
        other => panic!("expected RefusedByPeer, got {other:?}"),
    }
    match b.endpoint.accept().await.unwrap() {
        Err(PeeringError::Refused { reason, .. }) => assert_eq!(reason, expected),
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dialler_with_a_certificate_from_another_ca_is_refused() {
    let (ca, other_ca) = (Ca::new(), Ca::new());
    let b = edge(&ca);
    // A trusts B's CA, so it is B that refuses A's chain.
    let a_id = Uuid::new_v4();
    let a = edge_with(
        a_id,
        other_ca.identity(a_id),
        &ca,
        UriVerifier::default(),
        settings(),
    );
    let err = a.endpoint.connect(b.addr, b.id).await.unwrap_err();
    assert!(matches!(err, PeeringError::Handshake { .. }), "{err:?}");
    let err = b.endpoint.accept().await.unwrap().unwrap_err();
    match &err {
        PeeringError::Handshake { source, .. } => {
            assert!(source.to_string().contains("UnknownIssuer"), "{source}")
        }
        other => panic!("expected Handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_with_a_certificate_from_another_ca_is_refused() {
    let (ca, other_ca) = (Ca::new(), Ca::new());
    let a = edge(&ca);
    let b_id = Uuid::new_v4();
    let b = edge_with(
        b_id,
        other_ca.identity(b_id),
        &other_ca,
        UriVerifier::default(),
        settings(),
    );
    match a.endpoint.connect(b.addr, b.id).await.unwrap_err() {
        PeeringError::Handshake { source, .. } => {
            assert!(source.to_string().contains("UnknownIssuer"), "{source}")
        }
        other => panic!("expected Handshake, got {other:?}"),
    }
    assert!(b.endpoint.accept().await.unwrap().is_err());
}

#[tokio::test]
async fn a_dialler_without_a_certificate_is_refused() {
    let ca = Ca::new();
    let b = edge(&ca);
    // A client that trusts B exactly as an edge would, but has no certificate to show.
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der.clone())).unwrap();
    let servers = PeerServerVerifier {
        roots: Arc::new(roots),
        provider: provider(),
        verifier: Arc::new(UriVerifier::default()),
        expect: b.id,
        refusal: Arc::default(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(servers))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_PEERING.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let attempt = client
        .connect_with(config, b.addr, "127.0.0.1")
        .unwrap()
        .await;
    // The client's side of the handshake may finish before the server sees the empty
    // certificate; either way it is never admitted.
    let err = match attempt {
        Err(e) => e,
        Ok(conn) => {
            assert!(
                conn.accept_bi().await.is_err(),
                "admitted without a certificate"
            );
            conn.closed().await
        }
    };
    assert!(
        matches!(err, quinn::ConnectionError::ConnectionClosed(_)),
        "{err:?}"
    );
    match b.endpoint.accept().await.unwrap() {
        Err(PeeringError::Handshake { source, .. }) => {
            assert!(
                source.to_string().to_lowercase().contains("certificate"),
                "{source}"
            )
        }
        other => panic!("expected Handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn the_dialler_refuses_a_server_that_is_not_the_edge_it_dialled() {
    let ca = Ca::new();
    let (a, b) = (edge(&ca), edge(&ca));
    let expected = Uuid::new_v4();
    match a.endpoint.connect(b.addr, expected).await.unwrap_err() {
        PeeringError::WrongPeer {
            addr,
            expected: e,
            got,
        } => {
            assert_eq!((addr, e, got), (b.addr, expected, b.id));
        }
        other => panic!("expected WrongPeer, got {other:?}"),
    }
    assert!(matches!(
        b.endpoint.accept().await.unwrap(),
        Err(PeeringError::Handshake { .. })
    ));

    // And a server the dialler's own verifier refuses: the verifier's reason.
    let a_id = Uuid::new_v4();
    let picky = edge_with(
        a_id,
        ca.identity(a_id),
        &ca,
        UriVerifier { refuse: vec![b.id] },
        settings(),
    );
    match picky.endpoint.connect(b.addr, b.id).await.unwrap_err() {
        PeeringError::Refused { reason, .. } => {
            assert_eq!(reason, format!("edge {} is decommissioned", b.id))
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_garbage_stream_is_reset_and_the_connection_keeps_serving() {
    let ca = Ca::new();
    let (a, b) = (edge(&ca), edge(&ca));
    let (a_conn, b_conn) = pair(&a, &b).await;

    // Raw bytes where an open belongs: its length prefix is far above the bound.
    let (mut send, mut recv) = a_conn.inner.conn.open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .unwrap();
    match b_conn.accept_flow().await.unwrap() {
        Err(PeeringError::BadOpen { source, remote }) => {
            assert!(
                matches!(source, PeerDecodeError::TooLong { .. }),
                "{source}"
            );
            assert_eq!(remote, a.addr);
        }
        other => panic!("expected BadOpen, got {other:?}"),
    }
    let mut buf = [0u8; 16];
    assert_eq!(
        recv.read(&mut buf).await.unwrap_err(),
        quinn::ReadError::Reset(quinn::VarInt::from_u32(ResetCode::BAD_HEADER.0))
    );
    assert_eq!(
        send.stopped().await.unwrap(),
        Some(quinn::VarInt::from_u32(ResetCode::BAD_HEADER.0))
    );

    // The next, well-formed flow is served as usual.
    let served = tokio::spawn(async move {
        let (_, responder) = b_conn.accept_flow().await.unwrap().unwrap();
        let mut flow = responder
            .answer(PeerFlowAnswer::ok(connector()))
            .await
            .unwrap()
            .unwrap();
        let mut got = Vec::new();
        flow.read_to_end(&mut got).await.unwrap();
        flow.write_all(&got).await.unwrap();
        flow.shutdown().await.unwrap();
        let _ = flow.send_half().stopped().await;
    });
    let (answer, flow) = a_conn
        .open_flow(&open_from(&a, 2), ANSWER_TIMEOUT)
        .await
        .unwrap();
    assert!(answer.is_ok());
    let mut flow = flow.unwrap();
    flow.write_all(b"still serving").await.unwrap();
    flow.shutdown().await.unwrap();
    let mut echo = Vec::new();
    flow.read_to_end(&mut echo).await.unwrap();
    assert_eq!(echo, b"still serving");
    served.await.unwrap();
    assert!(!a_conn.is_closed());
}

#[tokio::test]
async fn an_open_that_never_completes_is_reset_after_the_header_timeout() {
    let ca = Ca::new();
    let a = edge(&ca);
    let b_id = Uuid::new_v4();
    let slow = TransportSettings {
        header_timeout: Duration::from_millis(200),
        ..settings()
    };
    let b = edge_with(b_id, ca.identity(b_id), &ca, UriVerifier::default(), slow);
    let (a_conn, b_conn) = pair(&a, &b).await;
    let (mut send, mut recv) = a_conn.inner.conn.open_bi().await.unwrap();
    send.write_all(&[0, 0]).await.unwrap(); // half a length prefix, then nothing
    assert!(matches!(
        b_conn.accept_flow().await.unwrap(),
        Err(PeeringError::OpenTimeout { after, .. }) if after == Duration::from_millis(200)
    ));
    let mut buf = [0u8; 4];
    assert_eq!(
        recv.read(&mut buf).await.unwrap_err(),
        quinn::ReadError::Reset(quinn::VarInt::from_u32(ResetCode::BAD_HEADER.0))
    );
}

#[tokio::test]
async fn an_unanswered_open_is_cancelled_after_the_answer_timeout() {
    let ca = Ca::new();
    let (a, b) = (edge(&ca), edge(&ca));
    let (a_conn, b_conn) = pair(&a, &b).await;
    let timeout = Duration::from_millis(200);
    let open = open_from(&a, 3);
    let (opened, accepted) = tokio::join!(a_conn.open_flow(&open, timeout), b_conn.accept_flow());
    assert!(
        matches!(opened, Err(PeeringError::Unanswered(t)) if t == timeout),
        "{opened:?}"
    );
    // The responder, still holding the stream, learns that the opener gave up.
    let (_, responder) = accepted.unwrap().unwrap();
    let err = responder
        .answer(PeerFlowAnswer::ok(connector()))
        .await
        .map(|s| s.is_some());
    match err {
        // The answer may still fit in the stream before the stop arrives.
        Ok(true) | Err(RespondError::Stream(FlowError::Stopped(ResetCode::CANCELLED))) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn closing_the_endpoint_ends_accepting_and_the_connections() {
    let ca = Ca::new();
    let (a, b) = (edge(&ca), edge(&ca));
    let (a_conn, b_conn) = pair(&a, &b).await;
    b.endpoint.close(CloseCode::GOING_AWAY, "restart");
    match a_conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, varint(CloseCode::GOING_AWAY));
            assert_eq!(&close.reason[..], b"restart");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(b_conn.accept_flow().await.is_none());
    assert!(b.endpoint.accept().await.is_none());
    b.endpoint.wait_idle().await;
}

#[tokio::test]
async fn the_accepting_edge_may_open_flows_on_the_same_connection() {
    let ca = Ca::new();
    let (a, b) = (edge(&ca), edge(&ca));
    let (a_conn, b_conn) = pair(&a, &b).await;
    let served = tokio::spawn(async move {
        let (open, responder) = a_conn.accept_flow().await.unwrap().unwrap();
        let mut flow = responder
            .answer(PeerFlowAnswer::ok(connector()))
            .await
            .unwrap()
            .unwrap();
        flow.write_all(open.from_edge.as_bytes()).await.unwrap();
        flow.shutdown().await.unwrap();
        let _ = flow.send_half().stopped().await;
    });
    let open = PeerFlowOpen {
        from_edge: b.id,
        ..open_from(&a, 9)
    };
    let (answer, flow) = b_conn.open_flow(&open, ANSWER_TIMEOUT).await.unwrap();
    assert!(answer.is_ok());
    let mut got = Vec::new();
    flow.unwrap().read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b.id.as_bytes());
    served.await.unwrap();
}
