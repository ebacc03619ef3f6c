//! The zt connector runtime.
//!
//! A connector runs inside a private network (for example as a Kubernetes Deployment),
//! dials *out* to the zt edge over QUIC, proves it owns a tunnel with its credentials
//! file, and serves the flows the edge hands it by dialing the requested private
//! address. It is cloudflared's role in Cloudflare Tunnel.
//!
//! This crate holds the connector's parts that stand without the wire protocol:
//! - [`ConnectorConfig`]: cloudflared's `config.yaml` keys plus zt's own, with errors that
//!   name the file, the key and the line; [`ConfigOverrides`] for command-line flags.
//! - [`MetricsServer`] and [`ConnectorMetrics`]: `/ready`, `/healthcheck` and Prometheus
//!   `/metrics`.
//! - [`OriginDialer`] and [`UdpRelay`]: dialing destinations with the configured timeout,
//!   keep-alive and allow-list; [`FlowLimiter`] for `maxActiveFlows`.
//! - [`Backoff`]: full-jitter exponential reconnect delays.
//! - [`Drain`] and [`ShutdownSignals`]: on SIGTERM stop taking flows and wait for
//!   in-flight ones up to the grace period; a second signal cuts the wait short.
//!
//! It is not (yet) the registration loop: keeping HA connections registered with the edge
//! arrives with the protocol crate. It does not read credential files either; it keeps
//! their path and permission mode for the credentials crate.
//!
//! # Example
//!
//! The configuration from the Kubernetes set-up zt was built for loads as written:
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
mod dial;
mod drain;
mod duration;
mod flows;
mod metrics;
mod server;
mod values;

// Configuration: the file, its values, and command-line overrides.
pub use config::{
    ConfigError, ConfigOverrides, ConnectorConfig, OverrideError, WarpRouting,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_GRACE_PERIOD, DEFAULT_HA_CONNECTIONS, DEFAULT_TCP_KEEPALIVE,
    MAX_HA_CONNECTIONS,
};
pub use duration::{parse_duration, DurationError};
pub use values::{
    CaFingerprint, CredentialsPermissions, DestinationAllowList, EdgeAddr, Protocol, TunnelRef,
    TunnelToken, ValueError,
};

// Observability: the figures and the server that reports them.
pub use metrics::{ConnectorMetrics, DialErrorKind};
pub use server::{MetricsServer, ServeError};

// Flows: admission, then dialing the destination.
pub use dial::{DialError, OriginDialer, RelayError, UdpRelay, DEFAULT_MAX_UDP_PAYLOAD};
pub use flows::{AdmitError, FlowGuard, FlowLimiter};

// Lifecycle: reconnecting to the edge and shutting down.
pub use backoff::Backoff;
pub use drain::{Drain, DrainOutcome, ShutdownSignals};
