//! The laptop's side of the enrollment exchange (see zt-proto's `enroll` module).

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use uuid::Uuid;
use zt_creds::{DeviceAuth, DeviceCredentials, DeviceKey, Enrollment};
use zt_proto::{
    from_hex, possession_message, to_hex, EdgeTrust, EnrollDecoder, EnrollFlow, EnrollMessage,
    PeerEndpoint, TcpDialer, TransportSettings, CHALLENGE_LEN, ENROLL_VERSION,
};

use crate::transport::{EdgeProtocol, HttpProxy, QUIC_HEAD_START};

use super::callback::{parse_callback, Callback, CallbackError, MAX_CALLBACK_HEAD};

/// How long the browser sign-in may take before `zt login` gives up.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);
const CALLBACK_PATH: &str = "/callback";

/// Which sign-in to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFlow {
    /// A browser on this machine and a loopback redirect.
    Browser,
    /// A code to approve on any browser (headless machines).
    DeviceCode,
}

/// What `zt login` needs.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// Where the edges are and the CA they chain to.
    pub enrollment: Enrollment,
    /// The provider, when the enrollment string names none and the edge has several.
    pub idp: Option<String>,
    /// The flow.
    pub flow: LoginFlow,
    /// A name for this device (its host name).
    pub device_name: String,
    /// How long the whole sign-in may take.
    pub timeout: Duration,
    /// Which transport reaches the edge: [`EdgeProtocol::Auto`] races QUIC and TLS over
    /// TCP as `zt client` does, so `zt login` works where UDP is blocked.
    pub protocol: EdgeProtocol,
    /// An HTTP CONNECT proxy for the TCP transport.
    pub proxy: Option<HttpProxy>,
}

/// What the person at the laptop must do, as the sign-in goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginEvent {
    /// Open this URL in a browser.
    OpenBrowser {
        /// The provider's authorization URL.
        url: String,
    },
    /// Show this code and where to enter it.
    DeviceCode {
        /// The code.
        user_code: String,
        /// Where to enter it.
        verification_uri: String,
        /// The same URL with the code filled in, when the provider gives one.
        verification_uri_complete: Option<String>,
        /// How long the code is valid.
        expires_in: Duration,
    },
}

/// Why a sign-in or logout failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// No edge of the enrollment answered.
    #[error("cannot reach any edge ({tried}): {last}")]
    Unreachable {
        /// The addresses tried.
        tried: String,
        /// The last error.
        last: String,
    },
    /// The edge refused, saying why.
    #[error("the edge refused the sign-in ({code}): {message}")]
    Refused {
        /// The edge's stable word for it.
        code: String,
        /// What it said.
        message: String,
    },
    /// The provider sent the browser back with an error.
    #[error("the identity provider refused the sign-in: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Provider {
        /// The OAuth error code.
        error: String,
        /// Its description.
        description: Option<String>,
    },
    /// Nothing came back in time.
    #[error("the sign-in timed out after {} s ({waiting_for})", .after.as_secs())]
    Timeout {
        /// How long it waited.
        after: Duration,
        /// For what.
        waiting_for: &'static str,
    },
    /// The redirect's state was not the one the edge sent: another page's redirect.
    #[error("the redirect carried a state this sign-in did not send; try `zt login` again")]
    State,
    /// The edge broke the exchange.
    #[error("the edge broke the enrollment exchange: {0}")]
    Protocol(String),
    /// A local step failed.
    #[error("{0}")]
    Local(String),
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random<const N: usize>() -> Result<[u8; N], LoginError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| LoginError::Local("the system's random source failed".into()))?;
    Ok(out)
}

/// An exchange on one connection: the stream, its framing and the exporter.
struct Exchange {
    // Keeps the QUIC connection (when the exchange runs over QUIC) open while the stream
    // is used.
    _conn: Option<(zt_proto::EnrollmentConnection, PeerEndpoint)>,
    send: Box<dyn AsyncWrite + Unpin + Send>,
    recv: Box<dyn AsyncRead + Unpin + Send>,
    decoder: EnrollDecoder,
    exporter: zt_proto::Exporter,
}

/// One way to reach an edge address for the exchange.
struct Target<'a> {
    addr: SocketAddr,
    host: &'a str,
    trust: &'a EdgeTrust,
    proxy: Option<&'a HttpProxy>,
}

impl Target<'_> {
    async fn quic(&self) -> Result<Exchange, String> {
        let bind: SocketAddr = if self.addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = PeerEndpoint::bind(bind, self.trust, TransportSettings::default())
            .map_err(|e| e.to_string())?;
        let conn = endpoint
            .connect_enrollment(self.addr, self.host)
            .await
            .map_err(|e| format!("QUIC: {e}"))?;
        let exporter = conn.exporter().ok_or("QUIC: no TLS exporter")?;
        let (send, recv) = conn.open_stream().await.map_err(|e| format!("QUIC: {e}"))?;
        Ok(Exchange {
            _conn: Some((conn, endpoint)),
            send: Box::new(send),
            recv: Box::new(recv),
            decoder: EnrollDecoder::new(),
            exporter,
        })
    }

    async fn tcp(&self) -> Result<Exchange, String> {
        let dialer =
            TcpDialer::new(self.trust, TransportSettings::default()).map_err(|e| e.to_string())?;
        let over = match self.proxy {
            Some(p) => Some(
                p.connect(self.addr)
                    .await
                    .map_err(|e| format!("TCP via the proxy {}: {e}", p.addr()))?,
            ),
            None => None,
        };
        let tcp = dialer
            .connect_enrollment(self.addr, self.host, over)
            .await
            .map_err(|e| format!("TCP: {e}"))?;
        let (recv, send) = tokio::io::split(tcp.stream);
        Ok(Exchange {
            _conn: None,
            send: Box::new(send),
            recv: Box::new(recv),
            decoder: EnrollDecoder::new(),
            exporter: tcp.exporter,
        })
    }

    /// As the client's `auto`: QUIC first, TLS over TCP after the head start or at once
    /// when QUIC fails; the first to connect carries the exchange.
    async fn auto(&self) -> Result<Exchange, String> {
        let quic = self.quic();
        tokio::pin!(quic);
        let head_start = tokio::time::sleep(QUIC_HEAD_START);
        tokio::pin!(head_start);
        let quic_error = tokio::select! {
            r = &mut quic => match r {
                Ok(ex) => return Ok(ex),
                Err(e) => Some(e),
            },
            _ = &mut head_start => None,
        };
        match quic_error {
            Some(q) => self.tcp().await.map_err(|t| format!("{q}; {t}")),
            None => {
                let tcp = self.tcp();
                tokio::pin!(tcp);
                tokio::select! {
                    r = &mut quic => match r {
                        Ok(ex) => Ok(ex),
                        Err(q) => tcp.await.map_err(|t| format!("{q}; {t}")),
                    },
                    r = &mut tcp => match r {
                        Ok(ex) => Ok(ex),
                        Err(t) => quic.await.map_err(|q| format!("{q}; {t}")),
                    },
                }
            }
        }
    }
}

impl Exchange {
    async fn open(
        enrollment: &Enrollment,
        protocol: EdgeProtocol,
        proxy: Option<&HttpProxy>,
    ) -> Result<Self, LoginError> {
        let trust = EdgeTrust::fingerprint(enrollment.ca_fingerprint);
        let mut last = String::from("no address");
        for edge in &enrollment.edge {
            let Some((host, _)) = edge.rsplit_once(':') else {
                last = format!("{edge:?} is not host:port");
                continue;
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(edge.as_str()).await {
                Ok(a) => a.collect(),
                Err(e) => {
                    last = format!("cannot resolve {edge}: {e}");
                    continue;
                }
            };
            for addr in addrs {
                let target = Target {
                    addr,
                    host,
                    trust: &trust,
                    proxy,
                };
                let opened = match protocol {
                    EdgeProtocol::Quic => target.quic().await,
                    EdgeProtocol::Tcp => target.tcp().await,
                    _ => target.auto().await,
                };
                match opened {
                    Ok(ex) => return Ok(ex),
                    Err(e) => last = format!("{edge} ({addr}): {e}"),
                }
            }
        }
        Err(LoginError::Unreachable {
            tried: enrollment.edge.join(", "),
            last,
        })
    }

    async fn send(&mut self, msg: &EnrollMessage) -> Result<(), LoginError> {
        let bytes = msg
            .encode()
            .map_err(|e| LoginError::Protocol(e.to_string()))?;
        self.send
            .write_all(&bytes)
            .await
            .map_err(|e| LoginError::Protocol(format!("cannot write to the edge: {e}")))
    }

    async fn next(
        &mut self,
        within: Duration,
        waiting_for: &'static str,
    ) -> Result<EnrollMessage, LoginError> {
        let mut buf = [0u8; 4096];
        let read = async {
            loop {
                if let Some(m) = self
                    .decoder
                    .next_message()
                    .map_err(|e| LoginError::Protocol(e.to_string()))?
                {
                    return match m {
                        EnrollMessage::Failed { code, message } => {
                            Err(LoginError::Refused { code, message })
                        }
                        m => Ok(m),
                    };
                }
                let n =
                    self.recv.read(&mut buf).await.map_err(|e| {
                        LoginError::Protocol(format!("cannot read from the edge: {e}"))
                    })?;
                if n == 0 {
                    return Err(LoginError::Protocol(format!(
                        "the edge closed the exchange before the {waiting_for}"
                    )));
                }
                self.decoder
                    .push(&buf[..n])
                    .map_err(|e| LoginError::Protocol(e.to_string()))?;
            }
        };
        tokio::time::timeout(within, read)
            .await
            .map_err(|_| LoginError::Timeout {
                after: within,
                waiting_for,
            })?
    }

    /// Steps 1–3: hello, challenge, possession.
    async fn prove(&mut self, hello: EnrollMessage, key: &DeviceKey) -> Result<(), LoginError> {
        self.send(&hello).await?;
        let EnrollMessage::Challenge { challenge } =
            self.next(Duration::from_secs(15), "challenge").await?
        else {
            return Err(LoginError::Protocol("expected a challenge".into()));
        };
        let challenge = from_hex::<CHALLENGE_LEN>(&challenge)
            .ok_or_else(|| LoginError::Protocol("the challenge is not 64 hex digits".into()))?;
        let signed = possession_message(&self.exporter, &challenge, &key.public_key().0);
        self.send(&EnrollMessage::Possession {
            signature: to_hex(&key.sign(&signed)),
        })
        .await
    }
}

/// Signs this device in through the edge's identity provider and returns its new
/// credentials (with a freshly made key), for the caller to write to a 0600 file.
/// `on_event` is told what the person must do (open a URL, enter a code).
pub async fn login(
    options: &LoginOptions,
    mut on_event: impl FnMut(LoginEvent),
) -> Result<DeviceCredentials, LoginError> {
    let key = DeviceKey::generate();
    let idp = options.idp.clone().or(options.enrollment.idp.clone());
    let mut ex = Exchange::open(
        &options.enrollment,
        options.protocol,
        options.proxy.as_ref(),
    )
    .await?;
    let public_key = key.public_key().to_hex();
    let enrolled = match options.flow {
        LoginFlow::Browser => {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
                LoginError::Local(format!(
                    "cannot listen on a loopback port for the redirect: {e}"
                ))
            })?;
            let port = listener
                .local_addr()
                .map_err(|e| LoginError::Local(e.to_string()))?
                .port();
            let redirect_uri = format!("http://127.0.0.1:{port}{CALLBACK_PATH}");
            let verifier = b64(&random::<32>()?);
            let challenge = b64(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref());
            ex.prove(
                EnrollMessage::Hello {
                    version: ENROLL_VERSION,
                    flow: EnrollFlow::Browser,
                    idp,
                    public_key,
                    device_name: options.device_name.clone(),
                    redirect_uri: Some(redirect_uri),
                    code_challenge: Some(challenge),
                    device_id: None,
                },
                &key,
            )
            .await?;
            let EnrollMessage::Authorize { url, state } = ex
                .next(Duration::from_secs(30), "authorization URL")
                .await?
            else {
                return Err(LoginError::Protocol("expected an authorization URL".into()));
            };
            on_event(LoginEvent::OpenBrowser { url });
            let (code, came) = tokio::time::timeout(options.timeout, wait_for_redirect(&listener))
                .await
                .map_err(|_| LoginError::Timeout {
                    after: options.timeout,
                    waiting_for: "the browser's redirect",
                })??;
            if came != state {
                return Err(LoginError::State);
            }
            ex.send(&EnrollMessage::Code {
                code,
                state,
                code_verifier: verifier,
            })
            .await?;
            ex.next(Duration::from_secs(60), "sign-in result").await?
        }
        LoginFlow::DeviceCode => {
            ex.prove(
                EnrollMessage::Hello {
                    version: ENROLL_VERSION,
                    flow: EnrollFlow::DeviceCode,
                    idp,
                    public_key,
                    device_name: options.device_name.clone(),
                    redirect_uri: None,
                    code_challenge: None,
                    device_id: None,
                },
                &key,
            )
            .await?;
            let EnrollMessage::DeviceCode {
                user_code,
                verification_uri,
                verification_uri_complete,
                expires_in,
            } = ex.next(Duration::from_secs(30), "device code").await?
            else {
                return Err(LoginError::Protocol("expected a device code".into()));
            };
            let expires_in = Duration::from_secs(expires_in);
            on_event(LoginEvent::DeviceCode {
                user_code,
                verification_uri,
                verification_uri_complete,
                expires_in,
            });
            ex.next(
                expires_in.min(options.timeout) + Duration::from_secs(30),
                "approval of the device code",
            )
            .await?
        }
    };
    let EnrollMessage::Enrolled {
        device_id,
        email,
        idp,
        default_vnet,
        ..
    } = enrolled
    else {
        return Err(LoginError::Protocol("expected the sign-in result".into()));
    };
    Ok(DeviceCredentials {
        device_id,
        user_email: email,
        auth: DeviceAuth::Key(key),
        edge: options.enrollment.edge.clone(),
        ca_fingerprint: options.enrollment.ca_fingerprint,
        default_vnet,
        identity_provider: Some(idp),
        service_token: None,
    })
}

/// Ends this device's sign-in at the edge (the device is revoked there), over `protocol`
/// (through `proxy` for TLS over TCP). The caller then deletes the credentials file.
pub async fn logout(
    credentials: &DeviceCredentials,
    protocol: EdgeProtocol,
    proxy: Option<&HttpProxy>,
) -> Result<Uuid, LoginError> {
    let DeviceAuth::Key(key) = &credentials.auth else {
        return Err(LoginError::Local(
            "these credentials were made by `zt user add`, not `zt login`; an administrator removes them with `zt user remove`".into(),
        ));
    };
    let enrollment = Enrollment {
        edge: credentials.edge.clone(),
        ca_fingerprint: credentials.ca_fingerprint,
        idp: credentials.identity_provider.clone(),
    };
    let mut ex = Exchange::open(&enrollment, protocol, proxy).await?;
    ex.prove(
        EnrollMessage::Hello {
            version: ENROLL_VERSION,
            flow: EnrollFlow::Logout,
            idp: None,
            public_key: key.public_key().to_hex(),
            device_name: String::new(),
            redirect_uri: None,
            code_challenge: None,
            device_id: Some(credentials.device_id),
        },
        key,
    )
    .await?;
    match ex.next(Duration::from_secs(30), "logout result").await? {
        EnrollMessage::LoggedOut { device_id } => Ok(device_id),
        _ => Err(LoginError::Protocol("expected the logout result".into())),
    }
}

/// Serves the loopback port until the provider's redirect arrives; other requests (a
/// favicon, a stray local process) get a 404 and are ignored.
async fn wait_for_redirect(listener: &TcpListener) -> Result<(String, String), LoginError> {
    loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .map_err(|e| LoginError::Local(format!("the loopback listener failed: {e}")))?;
        let head = match tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream)).await
        {
            Ok(Ok(h)) => h,
            _ => continue,
        };
        match parse_callback(&head, CALLBACK_PATH) {
            Ok(Callback::Code { code, state }) => {
                respond(
                    &mut stream,
                    "200 OK",
                    "Signed in to zt. You can close this window.",
                )
                .await;
                return Ok((code, state));
            }
            Ok(Callback::Error {
                error, description, ..
            }) => {
                respond(
                    &mut stream,
                    "400 Bad Request",
                    "The identity provider refused the sign-in; see the terminal.",
                )
                .await;
                return Err(LoginError::Provider { error, description });
            }
            Err(CallbackError::OtherPath(_)) => {
                respond(&mut stream, "404 Not Found", "Not found.").await
            }
            Err(_) => respond(&mut stream, "400 Bad Request", "Not a sign-in redirect.").await,
        }
    }
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(head);
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() >= MAX_CALLBACK_HEAD {
            head.truncate(MAX_CALLBACK_HEAD);
            return Ok(head);
        }
    }
}

async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, status: &str, text: &str) {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>zt login</title></head><body><p>{text}</p></body></html>"
    );
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}
