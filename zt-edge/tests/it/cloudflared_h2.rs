//! cloudflared's HTTP/2 mode against the edge's TCP listener, from peers that are not
//! cloudflared or that misbehave as its HTTP/2 *server*: who gets the `h2` path at all (the
//! server name `h2.cftunnel.com` only, never with `--no-cloudflared`), and raw HTTP/2 frames
//! from a hostile "cloudflared": rapid resets, a CONTINUATION flood, an HPACK bomb, SETTINGS
//! and PING floods, an oversized header block, a control stream that never answers and a
//! peer that sends nothing. Each is ended by the edge within a bound (printed: when, and
//! how many bytes the peer got in), while a well-behaved connector on the same edge
//! registers and carries a flow.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cloudflared_edge::run;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use zt_edge::{Edge, EdgeConfig, EdgeHandle, Rule};
use zt_proto::Protocol;
use zt_testkit::cloudflared::{self, Creds, Registration};
use zt_testkit::data::pattern;
use zt_testkit::loopback::{connect_client, endpoint, provision, test_config, Provision};
use zt_testkit::origin::{assert_hash_answer, framed_hashing_origin};
use zt_testkit::WAIT;

/// The edge's registration deadline in these tests: a peer that never registers is closed
/// this long after its handshake.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(3);

/// Hostile peers connect from here, so the per-source budget for failed registrations
/// they spend is not the well-behaved connector's (127.0.0.1).
const HOSTILE_SOURCE: &str = "127.0.0.9";

fn config(dir: &Path) -> EdgeConfig {
    let mut c = test_config(dir);
    c.edge_name = "h2-test-edge".into();
    c.transport.register_timeout = REGISTER_TIMEOUT;
    c
}

/// Accepts any server certificate: for the checks where the edge's refusal, not the
/// client's, must be what ends the handshake.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
    verify: bool,
) -> Arc<rustls::ClientConfig> {
    let provider = zt_testkit::pki::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let mut cfg = if verify {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

/// TLS to the edge's TCP listener from [`HOSTILE_SOURCE`], asking for `server_name` and
/// offering `alpn`; the edge's certificate checked against its CA when `verify`.
async fn dial(
    edge: &EdgeHandle,
    server_name: &str,
    alpn: &[&[u8]],
    verify: bool,
) -> std::io::Result<TlsStream<TcpStream>> {
    let to = edge.tcp_addrs()[0];
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(HOSTILE_SOURCE.parse().unwrap(), 0))?;
    let tcp = sock.connect(to).await?;
    let connector =
        tokio_rustls::TlsConnector::from(tls_config(edge.state().ca_cert_der(), alpn, verify));
    connector
        .connect(ServerName::try_from(server_name.to_owned()).unwrap(), tcp)
        .await
}

// HTTP/2 frame types and flags (RFC 9113, section 6).
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn hpack_int(first: u8, n: u32, mut v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A literal header field (`index`: with incremental indexing), new name.
fn literal(name: &[u8], value: &[u8], index: bool) -> Vec<u8> {
    let mut out = vec![if index { 0x40 } else { 0x00 }];
    hpack_int(0, 7, name.len(), &mut out);
    out.extend_from_slice(name);
    hpack_int(0, 7, value.len(), &mut out);
    out.extend_from_slice(value);
    out
}

/// `:status: 200`, from the static table.
const STATUS_200: u8 = 0x88;

/// What the edge sent the hostile peer, as the reader saw it.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// The edge opened its control stream (HEADERS on stream 1).
    control_stream: bool,
    /// The error code of a GOAWAY from the edge.
    goaway: Option<u32>,
    /// The edge ended the connection (EOF or error) this long after the peer's handshake.
    closed_after: Option<Duration>,
}

/// Reads and parses the edge's frames until the connection ends, publishing what it saw.
/// The edge's preface is the client's: the 24-byte magic, then frames.
async fn read_frames(
    mut rd: ReadHalf<TlsStream<TcpStream>>,
    started: Instant,
    seen: watch::Sender<Seen>,
) {
    let mut magic = [0u8; 24];
    if rd.read_exact(&mut magic).await.is_ok() {
        assert_eq!(&magic, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let mut head = [0u8; 9];
        while rd.read_exact(&mut head).await.is_ok() {
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0; len];
            if rd.read_exact(&mut payload).await.is_err() {
                break;
            }
            match head[3] {
                HEADERS if stream == 1 => seen.send_modify(|s| s.control_stream = true),
                GOAWAY if payload.len() >= 8 => {
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    seen.send_modify(|s| s.goaway = Some(code));
                }
                _ => {}
            }
        }
    }
    seen.send_modify(|s| s.closed_after = Some(started.elapsed()));
}

/// The hostile peers, each a way to misbehave as cloudflared's HTTP/2 server.
#[derive(Debug, Clone, Copy)]
enum Attack {
    /// The control stream reset, then RST_STREAM after RST_STREAM on streams never opened.
    RapidReset,
    /// A response header block that never ends: CONTINUATION frames, 16 KiB each.
    ContinuationFlood,
    /// 4 KiB put in the HPACK table once, then referenced 2000 times (8 MB decoded).
    HpackBomb,
    /// SETTINGS frames without end, the peer reading none of the acknowledgements.
    SettingsFlood,
    /// PING frames without end, the peer reading none of the answers.
    PingFlood,
    /// One 48 KiB header in a HEADERS and two CONTINUATION frames.
    OversizedHeaders,
    /// A 200 response to the control stream, then nothing: no registration ever.
    SilentControlStream,
    /// A TLS handshake and then not a byte of HTTP/2.
    SilentPeer,
}

/// What a flood may push before the edge stops it; the writer gives up when a write has
/// waited this long (the edge stopped reading: the flood backed up into the peer's TCP
/// window).
const FLOOD_BYTES: usize = 256 << 20;
const WRITE_STALL: Duration = Duration::from_secs(2);

/// Writes `chunk` until the edge closes, stops reading, or at least `limit` bytes went in;
/// the bytes that went in.
async fn flood(wr: &mut WriteHalf<TlsStream<TcpStream>>, chunk: &[u8], limit: usize) -> usize {
    let mut sent = 0;
    while sent < limit {
        match tokio::time::timeout(WRITE_STALL, wr.write_all(chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    sent
}

/// Runs one attack; returns what the edge did and the bytes the peer got in.
async fn attack(edge: &EdgeHandle, attack: Attack) -> (Seen, usize) {
    let tls = dial(edge, "h2.cftunnel.com", &[], true).await.unwrap();
    let started = Instant::now();
    let (rd, mut wr) = tokio::io::split(tls);
    let (tx, mut seen) = watch::channel(Seen::default());
    let mut sent = 0;
    if let Attack::SettingsFlood | Attack::PingFlood = attack {
        // The floods read nothing while they flood: the edge's answers must back up
        // instead of queueing without end.
        let unit = match attack {
            Attack::SettingsFlood => frame(SETTINGS, 0, 0, &[]),
            _ => frame(PING, 0, 0, &[7; 8]),
        };
        let chunk = unit.repeat(1024);
        sent += flood(&mut wr, &frame(SETTINGS, 0, 0, &[]), 1).await;
        sent += flood(&mut wr, &chunk, FLOOD_BYTES).await;
        let reader = tokio::task::spawn_local(read_frames(rd, started, tx));
        let seen = closed(&mut seen).await;
        reader.await.unwrap();
        return (seen, sent);
    }
    let reader = tokio::task::spawn_local(read_frames(rd, started, tx));
    if !matches!(attack, Attack::SilentPeer) {
        let hello = [frame(SETTINGS, 0, 0, &[]), frame(SETTINGS, ACK, 0, &[])].concat();
        sent += flood(&mut wr, &hello, 1).await;
        // Stream 1 must be open (the edge's control-stream request) before it is answered.
        let _ = tokio::time::timeout(
            WAIT,
            seen.wait_for(|s| s.control_stream || s.closed_after.is_some()),
        )
        .await;
    }
    let rst = |id: u32| frame(RST_STREAM, 0, id, &8u32.to_be_bytes());
    match attack {
        Attack::RapidReset => {
            let mut chunk = rst(1);
            for id in (3u32..).step_by(2).take(10_000) {
                chunk.extend(rst(id));
            }
            sent += flood(&mut wr, &chunk, 1).await;
        }
        Attack::ContinuationFlood => {
            sent += flood(&mut wr, &frame(HEADERS, 0, 1, &[STATUS_200]), 1).await;
            let block = literal(b"x-flood", &[b'a'; 16_000], false);
            sent += flood(&mut wr, &frame(CONTINUATION, 0, 1, &block), FLOOD_BYTES).await;
        }
        Attack::HpackBomb => {
            let mut block = vec![STATUS_200];
            block.extend(literal(b"x", &[b'b'; 4000], true));
            // Index 62: the newest entry of the dynamic table, the 4000-byte one.
            block.extend(std::iter::repeat_n(0xbe, 2000));
            sent += flood(&mut wr, &frame(HEADERS, END_HEADERS, 1, &block), 1).await;
        }
        Attack::OversizedHeaders => {
            let part = |n: u8| literal(&[b'x', b'-', n], &[b'c'; 16_000], false);
            let mut first = vec![STATUS_200];
            first.extend(part(b'1'));
            let frames = [
                frame(HEADERS, 0, 1, &first),
                frame(CONTINUATION, 0, 1, &part(b'2')),
                frame(CONTINUATION, END_HEADERS, 1, &part(b'3')),
            ]
            .concat();
            sent += flood(&mut wr, &frames, 1).await;
        }
        Attack::SilentControlStream => {
            sent += flood(&mut wr, &frame(HEADERS, END_HEADERS, 1, &[STATUS_200]), 1).await;
        }
        Attack::SilentPeer | Attack::SettingsFlood | Attack::PingFlood => {}
    }
    let seen = closed(&mut seen).await;
    reader.await.unwrap();
    // The write half lives until here: dropping it would end the connection from this side.
    drop(wr);
    (seen, sent)
}

/// Waits (at most [`WAIT`] after the registration deadline) until the edge has ended the
/// connection.
async fn closed(seen: &mut watch::Receiver<Seen>) -> Seen {
    let wait = seen.wait_for(|s| s.closed_after.is_some());
    let done = tokio::time::timeout(REGISTER_TIMEOUT + WAIT, wait)
        .await
        .ok()
        .and_then(|r| r.ok().map(|s| s.clone()));
    done.unwrap_or_else(|| panic!("the edge did not end the connection: {:?}", *seen.borrow()))
}

#[test]
fn hostile_http2_servers_are_each_ended_in_bounded_time_while_a_connector_is_served() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let edge = Edge::start(config(dir.path())).await.unwrap();
        let mut rule = Rule::new("allow loopback", 100, "allow", vec!["l4".into()]);
        rule.traffic = Some("net.dst.port > 0".into());
        let s = provision(
            &edge,
            Provision {
                tunnel: "h2",
                cloudflared: true,
                email: "h2@example.com",
                groups: &[],
                routes: &["127.0.0.0/8"],
                rules: vec![rule],
            },
        )
        .await;

        let attacks = [
            Attack::RapidReset,
            Attack::ContinuationFlood,
            Attack::HpackBomb,
            Attack::SettingsFlood,
            Attack::PingFlood,
            Attack::OversizedHeaders,
            Attack::SilentControlStream,
            Attack::SilentPeer,
        ];
        let started = Instant::now();
        let hostile = futures::future::join_all(attacks.iter().map(|&a| {
            let edge = &edge;
            async move { (a, attack(edge, a).await) }
        }));
        // Meanwhile a well-behaved connector registers and carries a flow.
        let cfd_keep = std::cell::RefCell::new(None);
        let (hostile, ()) = tokio::join!(hostile, async {
            let creds = Creds {
                account_tag: edge.state().account_tag().to_owned(),
                tunnel_id: s.tunnel.id,
                secret: s.secret.expose_bytes().to_vec(),
            };
            let t = Instant::now();
            let cfd =
                cloudflared::connect(edge.local_addr(), edge.state().ca_cert_der(), &creds, 0)
                    .await;
            assert!(
                matches!(cfd.registration, Registration::Connected { .. }),
                "{:?}",
                cfd.registration
            );
            println!(
                "MEASURED registration beside eight hostile HTTP/2 peers: {:?}",
                t.elapsed()
            );
            let origin = framed_hashing_origin("127.0.0.1:0", 50_000);
            let ep = endpoint(&edge);
            let client = connect_client(&edge, &ep, s.device.id, &s.device_secret)
                .await
                .unwrap();
            let mut flow = client
                .open_flow(origin.addr, Protocol::Tcp, vec![])
                .await
                .unwrap();
            let payload = pattern(100_000);
            flow.write_u64(payload.len() as u64).await.unwrap();
            flow.write_all(&payload).await.unwrap();
            let mut back = Vec::new();
            tokio::time::timeout(WAIT, flow.read_to_end(&mut back))
                .await
                .unwrap()
                .unwrap();
            assert_hash_answer(&back, &payload, 50_000);
            println!(
                "MEASURED connector registered and flow carried, {:?} into the attacks",
                started.elapsed()
            );
            drop(client);
            cfd_keep.replace(Some(cfd));
        });

        for (a, (seen, sent)) in hostile {
            let after = seen.closed_after.unwrap();
            println!(
                "MEASURED {a:?}: ended by the edge after {after:?} (GOAWAY {:?}), {sent} bytes sent by the peer",
                seen.goaway
            );
            assert!(
                after < REGISTER_TIMEOUT + WAIT,
                "{a:?}: the connection outlived the registration deadline: {after:?}"
            );
            if matches!(a, Attack::ContinuationFlood) {
                assert!(
                    sent < 16 << 20,
                    "{a:?}: {sent} bytes accepted in one header block"
                );
            }
        }
        // Nothing of the hostile peers is left in the registry.
        let live = edge.live_view().tunnel_connections(s.tunnel.id);
        assert_eq!(live.len(), 1, "{live:?}");
        assert_eq!(live[0].transport, "quic");
        drop(cfd_keep);
        edge.shutdown().await;
    });
}

#[test]
fn only_cloudflared_asking_for_its_h2_name_gets_the_http2_path() {
    run(|| async {
        const MAGIC: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let dir = tempfile::tempdir().unwrap();
        let edge = Edge::start(config(dir.path())).await.unwrap();
        // A browser or any other HTTP/2 client: ALPN h2 for another name fails the
        // handshake at the edge, which has no certificate for it (access_denied; the
        // client here accepts any certificate, so the refusal is the edge's).
        let e = dial(&edge, "edge.example.com", &[b"h2"], false)
            .await
            .unwrap_err();
        println!("h2 for another name: {e}");
        assert!(e.to_string().contains("AccessDenied"), "{e}");
        // ALPN h2 with cloudflared's name: the HTTP/2 path, the edge speaking first, its
        // certificate valid for that name under the edge's CA.
        let mut tls = dial(&edge, "h2.cftunnel.com", &[b"h2"], true)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut magic = [0u8; 24];
        tls.read_exact(&mut magic).await.unwrap();
        assert_eq!(&magic, MAGIC);
        // No ALPN (what cloudflared sends) with its name: the same.
        let mut tls = dial(&edge, "h2.cftunnel.com", &[], true).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), None);
        tls.read_exact(&mut magic).await.unwrap();
        assert_eq!(&magic, MAGIC);
        // No ALPN for another name: the edge hangs up without a byte of HTTP/2.
        let mut tls = dial(&edge, "edge.example.com", &[], false).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "no bytes for a peer without a protocol");
        edge.shutdown().await;

        // With cloudflared off (`--no-cloudflared`), h2 is not offered at all, and a
        // no-ALPN peer asking for cloudflared's name gets nothing either.
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.cloudflared = false;
        let edge = Edge::start(c).await.unwrap();
        let e = dial(&edge, "h2.cftunnel.com", &[b"h2"], false)
            .await
            .unwrap_err();
        println!("h2 with cloudflared off: {e}");
        assert!(e.to_string().contains("NoApplicationProtocol"), "{e}");
        let mut tls = dial(&edge, "h2.cftunnel.com", &[], false).await.unwrap();
        let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "no HTTP/2 with cloudflared off");
        edge.shutdown().await;
    });
}
