//! The zt connector runtime.
//!
//! A connector runs inside a private network (for example as a Kubernetes Deployment),
//! dials *out* to the zt edge over QUIC, proves it owns a tunnel with its credentials
//! file, and serves the flows the edge hands it by dialing the requested private
//! address. It is cloudflared's role in Cloudflare Tunnel.
//!
//! The parts, in the order a connector uses them:
//! - [`ConnectorConfig`]: cloudflared's `config.yaml` keys plus zt's own, with errors that
//!   name the file, the key and the line; [`ConfigOverrides`] for command-line flags;
//!   [`ConnectorConfig::load_credentials`] reads the credentials file (with the
//!   `credentials-permissions` check) or the token.
//! - [`Connector::start`] → [`ConnectorHandle`]: keeps `ha-connections` QUIC connections
//!   registered with the edge (spread over the `edge` addresses, each reconnecting with a
//!   full-jitter [`zt_proto::Backoff`] shaped by [`RECONNECT_BACKOFF`]), serves the flows the
//!   edge opens on them, and answers go-away with a
//!   replacement connection. [`ConnectorHandle::drain`] and [`ConnectorHandle::shutdown`]
//!   stop it gracefully or at once.
//! - [`MetricsServer`] and [`ConnectorMetrics`]: `/ready`, `/healthcheck` and Prometheus
//!   `/metrics`.
//! - [`OriginDialer`] and [`UdpRelay`]: dialing destinations with the configured timeout,
//!   keep-alive and allow-list; [`FlowLimiter`] for `maxActiveFlows`.
//! - [`Drain`] and [`ShutdownSignals`]: on SIGTERM stop taking flows and wait for
//!   in-flight ones up to the grace period; a second signal cuts the wait short.
//!
//! TCP flows keep TCP's half-close both ways (a FIN from either side is passed on while
//! the other direction keeps flowing) and resets travel as resets. It is not the edge or
//! the wire protocol (`zt-edge`, `zt-proto`), and it never installs a tracing subscriber.
//!
//! # Example
//!
//! The configuration from the Kubernetes set-up zt was built for loads as written
//! (running it takes `Connector::start(config, config.load_credentials()?)` inside a
//! tokio runtime, and an `edge` with its CA):
//!
//! ```
//! use std::time::Duration;
//! use zt_connector::ConnectorConfig;
//!
//! let yaml = "\
//! tunnel: 8e343b13-a087-48ea-825f-9783931ff2a5
//! credentials-file: /opt/zt/creds/creds.json
//! metrics: 0.0.0.0:8081
//! warp-routing:
//!     enabled: true
//! ";
//! let config = ConnectorConfig::parse(yaml, "config.yaml")?;
//! assert_eq!(config.metrics, Some("0.0.0.0:8081".parse()?));
//! assert!(config.warp_routing.enabled);
//! assert_eq!(config.ha_connections, 4);
//! assert_eq!(config.grace_period, Duration::from_secs(30));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backoff;
mod config;
mod credentials;
mod dial;
mod drain;
mod duration;
mod flows;
mod metrics;
mod runtime;
mod serve;
mod server;
mod values;

// The runtime: start a connector, then drain and stop it.
pub use runtime::{Connector, ConnectorHandle, StartError, SOFTWARE_VERSION};
// What `ConnectorHandle::connections` reports.
pub use serve::UDP_IDLE_TIMEOUT;
pub use zt_proto::{MemberReport, Placement};

// Configuration: the file, its values, and command-line overrides.
pub use config::{
    ConfigError, ConfigOverrides, ConnectorConfig, OverrideError, WarpRouting,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_GRACE_PERIOD, DEFAULT_HA_CONNECTIONS, DEFAULT_TCP_KEEPALIVE,
    MAX_HA_CONNECTIONS,
};
pub use credentials::CredentialsError;
pub use duration::{parse_duration, DurationError};
pub use values::{
    parse_listen_addr, DestinationAllowList, EdgeAddr, EdgeProtocol, TunnelRef, ValueError,
};

/// The former name of [`EdgeProtocol`], kept so code written against it still builds.
#[deprecated(
    since = "0.1.0",
    note = "renamed `EdgeProtocol` (the `protocol:` key), apart from `zt_proto::Protocol`"
)]
pub type Protocol = EdgeProtocol;

// Observability: the figures and the server that reports them.
pub use metrics::{ConnectorMetrics, DialErrorKind};
pub use server::{MetricsServer, ServeError};

// Flows: admission, then dialing the destination.
pub use dial::{DialError, OriginDialer, RelayError, UdpRelay, DEFAULT_MAX_UDP_PAYLOAD};
pub use flows::{AdmitError, FlowGuard, FlowLimiter};

// Lifecycle: reconnecting to the edge and shutting down.
#[allow(deprecated)]
pub use backoff::Backoff;
pub use backoff::RECONNECT_BACKOFF;
pub use drain::{Drain, DrainOutcome, ShutdownSignals};
