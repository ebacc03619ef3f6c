//! Transport tuning: every QUIC knob zt sets, with the reason for its default.
//!
//! The arithmetic behind the windows (one flow at 1 Gbit/s over 10 ms; four connections
//! inside a 100 MiB container) is written out in docs/PROTOCOL.md, section 7.

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::limits::Limits;

const MIB: u64 = 1024 * 1024;

/// The QUIC and protocol timing settings of an endpoint. `Default` gives the documented
/// values; every field can be changed before building an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportSettings {
    /// Per-stream receive window (default 2 MiB): one flow's bandwidth-delay product at
    /// 1 Gbit/s and 10 ms is 1.25 MB.
    pub stream_receive_window: u64,
    /// Per-connection receive window (default 6 MiB): bounds unread data per connection.
    pub connection_receive_window: u64,
    /// Per-connection send window (default 6 MiB): bounds unacknowledged sent data.
    pub send_window: u64,
    /// Queued incoming datagrams per connection, in bytes (default 512 KiB).
    pub datagram_receive_buffer: usize,
    /// Queued outgoing datagrams per connection, in bytes (default 512 KiB).
    pub datagram_send_buffer: usize,
    /// Concurrent bidirectional streams the peer may open (default 10,000).
    pub max_concurrent_bidi_streams: u32,
    /// QUIC keep-alive interval (default 1 s).
    pub keep_alive_interval: Duration,
    /// Idle timeout: a connection silent this long is dead (default 10 s).
    pub idle_timeout: Duration,
    /// How long a flow open waits for its status before it is reported unanswered
    /// (default 1 s).
    pub open_timeout: Duration,
    /// How long a served flow's header may take to arrive (default 5 s).
    pub header_timeout: Duration,
    /// How long registration may take, handshake included (default 5 s).
    pub register_timeout: Duration,
    /// UDP socket receive buffer asked of the OS (default 2 MiB).
    pub socket_receive_buffer: usize,
    /// UDP socket send buffer asked of the OS (default 2 MiB).
    pub socket_send_buffer: usize,
    /// Protocol limits (header size, metadata, datagrams, pending opens).
    pub limits: Limits,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            stream_receive_window: 2 * MIB,
            connection_receive_window: 6 * MIB,
            send_window: 6 * MIB,
            datagram_receive_buffer: 512 * 1024,
            datagram_send_buffer: 512 * 1024,
            max_concurrent_bidi_streams: 10_000,
            keep_alive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            open_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(5),
            register_timeout: Duration::from_secs(5),
            socket_receive_buffer: 2 * MIB as usize,
            socket_send_buffer: 2 * MIB as usize,
            limits: Limits::default(),
        }
    }
}

/// A setting is out of the range QUIC can express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The value does not fit a QUIC variable-length integer or timer.
    #[error("transport setting {field} = {value} is out of range")]
    OutOfRange {
        /// The field at fault.
        field: &'static str,
        /// Its value.
        value: u64,
    },
}

fn varint(field: &'static str, value: u64) -> Result<VarInt, SettingsError> {
    VarInt::from_u64(value).map_err(|_| SettingsError::OutOfRange { field, value })
}

impl TransportSettings {
    /// The quinn transport configuration these settings describe.
    pub(crate) fn quinn_config(&self) -> Result<Arc<TransportConfig>, SettingsError> {
        let mut t = TransportConfig::default();
        t.stream_receive_window(varint("stream_receive_window", self.stream_receive_window)?)
            .receive_window(varint(
                "connection_receive_window",
                self.connection_receive_window,
            )?)
            .send_window(self.send_window)
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            // Flows are bidirectional; nothing uses unidirectional streams.
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .datagram_receive_buffer_size(Some(self.datagram_receive_buffer))
            .datagram_send_buffer_size(self.datagram_send_buffer)
            .keep_alive_interval(Some(self.keep_alive_interval))
            .max_idle_timeout(Some(IdleTimeout::try_from(self.idle_timeout).map_err(
                |_| SettingsError::OutOfRange {
                    field: "idle_timeout",
                    value: self.idle_timeout.as_millis() as u64,
                },
            )?));
        Ok(Arc::new(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claims docs/PROTOCOL.md makes about the defaults, checked.
    #[test]
    fn defaults_meet_the_documented_targets() {
        let s = TransportSettings::default();
        // One flow at 1 Gbit/s over 10 ms: bandwidth-delay product 1.25 MB.
        let bdp = 1_000_000_000u64 / 8 / 100;
        assert!(s.stream_receive_window >= bdp);
        assert!(s.connection_receive_window >= s.stream_receive_window);
        // A connector with 4 HA connections on one endpoint stays well inside 100 MiB of
        // protocol buffers: 56 MiB as stated in the document.
        let per_conn = s.connection_receive_window
            + s.send_window
            + (s.datagram_receive_buffer + s.datagram_send_buffer) as u64;
        let total = 4 * per_conn + (s.socket_receive_buffer + s.socket_send_buffer) as u64;
        assert_eq!(total, 56 * MIB);
        assert!(s.max_concurrent_bidi_streams >= 10_000);
        assert!((Duration::from_secs(1)..=Duration::from_secs(2)).contains(&s.keep_alive_interval));
        assert!(s.keep_alive_interval < s.idle_timeout);
        assert!(s.quinn_config().is_ok());
    }

    #[test]
    fn an_idle_timeout_quic_cannot_express_is_refused() {
        let s = TransportSettings {
            idle_timeout: Duration::from_secs(u64::MAX / 2),
            ..TransportSettings::default()
        };
        assert!(matches!(
            s.quinn_config(),
            Err(SettingsError::OutOfRange {
                field: "idle_timeout",
                ..
            })
        ));
    }
}
