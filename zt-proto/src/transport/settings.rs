//! Transport tuning: every QUIC knob zt sets, with the reason for its default.
//!
//! The arithmetic behind the windows (what one flow and one connection carry at a given
//! round trip; four connections inside a 100 MiB container) is written out in
//! docs/PROTOCOL.md, section 7.

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::limits::Limits;

const MIB: u64 = 1024 * 1024;

/// The largest [`TransportSettings::mtu_upper_bound`]: quinn sends up to ten packets of
/// a connection in one segmentation-offload system call, and Linux refuses one whose
/// payloads add up to more than 65,507 bytes (IPv4's limit), dropping the whole batch.
pub const MAX_MTU_UPPER_BOUND: u16 = 6550;

/// The QUIC and protocol timing settings of an endpoint. `Default` gives the documented
/// values; every field can be changed before building an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportSettings {
    /// Per-stream receive window (default 256 KiB): what one flow may have in flight on a
    /// hop. It bounds one flow to window ÷ RTT (about 210 Mbit/s at 10 ms, 105 at 20 ms)
    /// and, as much, how long a small flow's packets queue behind a bulk flow's on the same
    /// connection: with 2 MiB a 64-byte echo's p99 beside one bulk flow was 12–16× its idle
    /// p99, with 256 KiB about 4× (BENCHMARKS.md). Raise it for single flows on long fat
    /// paths; many flows still fill the connection window together.
    pub stream_receive_window: u64,
    /// Per-connection receive window (default 6 MiB): bounds unread data per connection.
    pub connection_receive_window: u64,
    /// Per-connection send window (default 6 MiB): bounds unacknowledged sent data.
    pub send_window: u64,
    /// Queued incoming datagrams per connection, in bytes (default 512 KiB).
    pub datagram_receive_buffer: usize,
    /// Queued outgoing datagrams per connection, in bytes (default 512 KiB).
    pub datagram_send_buffer: usize,
    /// Concurrent bidirectional streams the peer may open, at most (default 10,000).
    pub max_concurrent_bidi_streams: u32,
    /// Concurrent bidirectional streams the peer may open at first (default 64): doubled
    /// each time its open flows reach three quarters of it, up to
    /// `max_concurrent_bidi_streams`, and never lowered. quinn keeps a receive state, and
    /// the buffer capacity it grew to, for every stream the peer may open, so this bounds
    /// a connection's memory by the concurrency it really had rather than by the maximum.
    pub initial_concurrent_bidi_streams: u32,
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
    /// The congestion controller (default [`Congestion::Bbr`]); see docs/PROTOCOL.md,
    /// section 7, for the measurements behind the choice.
    pub congestion: Congestion,
    /// Packets sent after one that must be acknowledged before it counts as lost (default
    /// 3, RFC 9002's `kPacketThreshold`). Higher tolerates more reordering, a real loss
    /// then being found by the time threshold. At least 3.
    pub loss_packet_threshold: u32,
    /// How long after a later packet's acknowledgement an unacknowledged one counts as
    /// lost, in thousandths of the round-trip time (default 1,125: RFC 9002's 9/8). At
    /// least 1,000.
    pub loss_time_threshold_permille: u32,
    /// The largest UDP payload path MTU discovery probes for, in bytes (default 1,452,
    /// quinn's: what a 1,500-byte Ethernet path carries under IPv6), from 1,200 (QUIC's
    /// minimum) to [`MAX_MTU_UPPER_BOUND`]. Much of a packet's cost does not depend on
    /// its size (a decryption, its share of acknowledgements and system calls), so on a
    /// network with jumbo frames (9,001 bytes inside an AWS VPC, 8,896 on Google Cloud)
    /// or on loopback a larger bound cuts a relay's CPU per byte; both ends of a hop must
    /// raise it, as each accepts datagrams only up to its own bound. A path that carries
    /// less is found by discovery: a lost probe costs one packet and is not congestion.
    pub mtu_upper_bound: u16,
    /// The key stateless resets are made with (default `None`: a random key per endpoint).
    /// An edge that keeps one across restarts lets its peers recognise a restarted
    /// process's reset at their first packet; with a random key they only notice the loss
    /// after the idle timeout. Only the edge's listener uses it.
    pub stateless_reset_key: Option<StatelessResetKey>,
}

/// The congestion controllers quinn offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Congestion {
    /// CUBIC (RFC 9438), quinn's default: halves its window on every loss quinn detects,
    /// and quinn counts a packet overtaken by three later ones as lost.
    Cubic,
    /// NewReno (RFC 9002's reference controller).
    NewReno,
    /// BBR (quinn marks its implementation experimental): paces to the measured
    /// bottleneck bandwidth and does not halve its rate on every loss, so random loss and
    /// reordering on a path cost retransmissions, not most of the throughput. zt's default.
    #[default]
    Bbr,
}

/// The secret behind QUIC stateless resets (RFC 9000, section 10.3): the reset token of a
/// connection id is an HMAC of the id under this key, so a process that restarts with the
/// same key can end the connections its predecessor left behind. `Debug` is redacted and
/// the bytes are wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct StatelessResetKey {
    hmac: [u8; 32],
}

impl StatelessResetKey {
    /// Derives the key from a long-lived secret (at least 32 random bytes, kept private by
    /// the caller) with HKDF-SHA256, so the secret itself is never used as a key.
    pub fn derive(secret: &[u8]) -> Self {
        let prk =
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"zt stateless reset").extract(secret);
        let mut hmac = [0u8; 32];
        expand(&prk, b"zt/1 quic stateless reset key", &mut hmac);
        Self { hmac }
    }

    fn hmac_key(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.hmac)
    }
}

/// Random 8-byte connection ids that any process accepts as possibly its own. quinn's
/// default generator tags its ids with a key drawn at random per process and drops packets
/// whose id fails that check before it would answer them with a stateless reset, so a
/// restarted edge would never reset its predecessor's connections. quinn does the same
/// with its `RandomConnectionIdGenerator`, which it does not re-export; the cost is that an
/// unknown id always gets a (rate-limited, smaller than the packet) reset.
struct RandomCids(ring::rand::SystemRandom, u64);

const CID_LEN: usize = 8;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        use ring::rand::SecureRandom;
        let mut cid = [0u8; CID_LEN];
        if self.0.fill(&mut cid).is_err() {
            // The system generator does not fail on Linux; should it, ids must still be
            // distinct (quinn retries until it finds an unused one).
            self.1 = self.1.wrapping_add(1);
            cid = self.1.to_le_bytes();
        }
        quinn::ConnectionId::new(&cid)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// HKDF-expands `prk` with `info` into `out` (at most 32 bytes here, far below
/// HKDF-SHA256's limit of 255 × 32, so it cannot fail).
fn expand(prk: &ring::hkdf::Prk, info: &[u8], out: &mut [u8]) {
    struct Len(usize);
    impl ring::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let info = [info];
    if let Ok(okm) = prk.expand(&info, Len(out.len())) {
        let _ = okm.fill(out);
    }
}

impl std::fmt::Debug for StatelessResetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatelessResetKey([redacted])")
    }
}

impl Drop for StatelessResetKey {
    fn drop(&mut self) {
        self.hmac.fill(0);
    }
}

impl TransportSettings {
    /// Sets the per-stream receive window to `bytes`, raising the connection receive
    /// window to hold at least one such stream.
    pub fn set_stream_receive_window(&mut self, bytes: u64) {
        self.stream_receive_window = bytes;
        self.connection_receive_window = self.connection_receive_window.max(bytes);
    }
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            stream_receive_window: 256 * 1024,
            connection_receive_window: 6 * MIB,
            send_window: 6 * MIB,
            datagram_receive_buffer: 512 * 1024,
            datagram_send_buffer: 512 * 1024,
            max_concurrent_bidi_streams: 10_000,
            initial_concurrent_bidi_streams: 64,
            keep_alive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            open_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(5),
            register_timeout: Duration::from_secs(5),
            socket_receive_buffer: 2 * MIB as usize,
            socket_send_buffer: 2 * MIB as usize,
            limits: Limits::default(),
            stateless_reset_key: None,
            congestion: Congestion::default(),
            loss_packet_threshold: 3,
            loss_time_threshold_permille: 1125,
            mtu_upper_bound: 1452,
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
    /// The quinn endpoint configuration: quinn's defaults, or, when a [`StatelessResetKey`]
    /// is set, that key and connection ids a restarted process will answer with a reset.
    /// Either way it accepts datagrams as large as its own path MTU bound, so that a peer
    /// with the same bound may probe up to it (quinn's default accepts 1,472 bytes).
    pub(crate) fn endpoint_config(&self) -> quinn::EndpointConfig {
        let mut config = match &self.stateless_reset_key {
            Some(key) => {
                let mut config = quinn::EndpointConfig::new(Arc::new(key.hmac_key()));
                config.cid_generator(|| Box::new(RandomCids(ring::rand::SystemRandom::new(), 0)));
                config
            }
            None => quinn::EndpointConfig::default(),
        };
        // Out of quinn's range (1,200 to 65,527) only if the bound is out of its own,
        // which the transport configuration refuses; the default is kept then.
        let _ = config.max_udp_payload_size(self.mtu_upper_bound.max(1472));
        config
    }

    /// What a peer may open at first: the initial allowance, within the maximum.
    pub(crate) fn initial_bidi_streams(&self) -> u32 {
        let max = self.max_concurrent_bidi_streams;
        self.initial_concurrent_bidi_streams.clamp(max.min(1), max)
    }

    /// The quinn transport configuration these settings describe.
    pub(crate) fn quinn_config(&self) -> Result<Arc<TransportConfig>, SettingsError> {
        let mut t = TransportConfig::default();
        t.stream_receive_window(varint("stream_receive_window", self.stream_receive_window)?)
            .receive_window(varint(
                "connection_receive_window",
                self.connection_receive_window,
            )?)
            .send_window(self.send_window)
            .max_concurrent_bidi_streams(VarInt::from_u32(self.initial_bidi_streams()))
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
        if self.loss_packet_threshold < 3 {
            return Err(SettingsError::OutOfRange {
                field: "loss_packet_threshold",
                value: u64::from(self.loss_packet_threshold),
            });
        }
        if self.loss_time_threshold_permille < 1000 {
            return Err(SettingsError::OutOfRange {
                field: "loss_time_threshold_permille",
                value: u64::from(self.loss_time_threshold_permille),
            });
        }
        if !(1200..=MAX_MTU_UPPER_BOUND).contains(&self.mtu_upper_bound) {
            return Err(SettingsError::OutOfRange {
                field: "mtu_upper_bound",
                value: u64::from(self.mtu_upper_bound),
            });
        }
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.mtu_upper_bound);
        t.mtu_discovery_config(Some(mtu));
        t.packet_threshold(self.loss_packet_threshold)
            .time_threshold(self.loss_time_threshold_permille as f32 / 1000.0);
        match self.congestion {
            Congestion::Cubic => {
                t.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
            }
            Congestion::NewReno => t.congestion_controller_factory(Arc::new(
                quinn::congestion::NewRenoConfig::default(),
            )),
            Congestion::Bbr => {
                t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()))
            }
        };
        Ok(Arc::new(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_thresholds_below_rfc_9002_are_refused_and_higher_ones_build() {
        let mut s = TransportSettings {
            loss_packet_threshold: 2,
            ..TransportSettings::default()
        };
        assert!(matches!(
            s.quinn_config(),
            Err(SettingsError::OutOfRange {
                field: "loss_packet_threshold",
                ..
            })
        ));
        s.loss_packet_threshold = 20;
        s.loss_time_threshold_permille = 999;
        assert!(matches!(
            s.quinn_config(),
            Err(SettingsError::OutOfRange {
                field: "loss_time_threshold_permille",
                ..
            })
        ));
        s.loss_time_threshold_permille = 2000;
        assert!(s.quinn_config().is_ok());
    }

    #[test]
    fn mtu_bounds_outside_what_a_segmented_send_carries_are_refused() {
        for bad in [0u16, 1199, MAX_MTU_UPPER_BOUND + 1, 9000, u16::MAX] {
            let s = TransportSettings {
                mtu_upper_bound: bad,
                ..TransportSettings::default()
            };
            assert_eq!(
                s.quinn_config().err(),
                Some(SettingsError::OutOfRange {
                    field: "mtu_upper_bound",
                    value: u64::from(bad)
                }),
                "{bad}"
            );
        }
        for good in [1200u16, 1452, MAX_MTU_UPPER_BOUND] {
            let s = TransportSettings {
                mtu_upper_bound: good,
                ..TransportSettings::default()
            };
            assert!(s.quinn_config().is_ok(), "{good}");
            // The endpoint accepts what its own bound lets a peer send, and never less
            // than quinn's 1,472.
            assert_eq!(
                s.endpoint_config().get_max_udp_payload_size(),
                u64::from(good.max(1472))
            );
        }
    }

    /// The claims docs/PROTOCOL.md makes about the defaults, checked.
    #[test]
    fn defaults_meet_the_documented_targets() {
        let s = TransportSettings::default();
        // One flow at 200 Mbit/s over 10 ms: bandwidth-delay product 250 kB; a connection's
        // flows together at 1 Gbit/s over 40 ms: 5 MB.
        assert!(s.stream_receive_window >= 200_000_000 / 8 / 100);
        assert!(
            s.stream_receive_window <= 256 * 1024,
            "small flows queue behind it"
        );
        assert!(s.connection_receive_window >= 1_000_000_000 / 8 / 25);
        assert!(s.connection_receive_window >= s.stream_receive_window);
        assert!(s.initial_bidi_streams() <= s.max_concurrent_bidi_streams);
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
    fn the_reset_key_is_derived_deterministically_and_never_shown() {
        let a = StatelessResetKey::derive(&[7u8; 32]);
        assert_eq!(a, StatelessResetKey::derive(&[7u8; 32]));
        assert_ne!(a, StatelessResetKey::derive(&[8u8; 32]));
        // Not the secret itself.
        assert_ne!(a.hmac, [7u8; 32]);
        let settings = TransportSettings {
            stateless_reset_key: Some(a),
            ..TransportSettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(shown.contains("StatelessResetKey([redacted])"), "{shown}");
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
