//! Every bound the protocol enforces on what a peer may send.
//!
//! A decoder checks a length prefix against these limits as soon as the prefix arrives, so a
//! hostile peer cannot make us buffer more than the limit before we refuse it.

/// Largest flow header body accepted by default (16 KiB): room for 64 metadata entries of a
/// couple of hundred bytes, far above what a flow needs, small enough that 10,000 flows
/// opening at once cannot pin more than 160 MiB even before stream flow control applies.
pub const DEFAULT_MAX_HEADER_LEN: usize = 16 * 1024;
/// Most metadata entries a flow header may carry by default.
pub const DEFAULT_MAX_METADATA_ENTRIES: usize = 64;
/// Largest control frame payload accepted by default (256 KiB). A route push is the biggest
/// control frame: at 18 bytes per IPv6 route this holds over 14,000 routes.
pub const DEFAULT_MAX_CONTROL_FRAME_LEN: usize = 256 * 1024;
/// Largest UDP payload carried in one datagram by default. 1,350 bytes keeps a datagram with
/// its flow id and QUIC overhead inside a 1,500-byte Ethernet MTU over IPv6, which is what
/// DNS and most UDP protocols fit in; the path may still allow less (see the transport).
pub const DEFAULT_MAX_DATAGRAM_PAYLOAD: usize = 1350;
/// Most flow opens a side keeps unanswered at once by default. Beyond it, new opens fail at
/// once with a typed error instead of piling up behind a peer that stopped answering.
pub const DEFAULT_MAX_PENDING_OPENS: usize = 1024;

/// Length of a metadata key or any short name field, in bytes (fixed by the wire format's
/// one-byte length prefix).
pub const MAX_KEY_LEN: usize = 255;
/// Longest text field (a version string, an edge name, an error message), in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Most feature names a register frame may carry.
pub const MAX_FEATURES: usize = 32;
/// Most posture checks one report may carry.
pub const MAX_POSTURE_CHECKS: usize = 256;

/// The configurable bounds on what a peer may send.
///
/// Both sides check them: an encoder refuses to produce a frame its peer would refuse, and a
/// decoder refuses a length prefix above the bound before reading the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest flow header body, in bytes (default [`DEFAULT_MAX_HEADER_LEN`]).
    pub max_header_len: usize,
    /// Most metadata entries in one flow header (default [`DEFAULT_MAX_METADATA_ENTRIES`]).
    pub max_metadata_entries: usize,
    /// Largest control frame payload, in bytes (default [`DEFAULT_MAX_CONTROL_FRAME_LEN`]).
    pub max_control_frame_len: usize,
    /// Largest UDP payload per datagram, in bytes (default [`DEFAULT_MAX_DATAGRAM_PAYLOAD`]).
    pub max_datagram_payload: usize,
    /// Most unanswered flow opens per connection (default [`DEFAULT_MAX_PENDING_OPENS`]).
    pub max_pending_opens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_len: DEFAULT_MAX_HEADER_LEN,
            max_metadata_entries: DEFAULT_MAX_METADATA_ENTRIES,
            max_control_frame_len: DEFAULT_MAX_CONTROL_FRAME_LEN,
            max_datagram_payload: DEFAULT_MAX_DATAGRAM_PAYLOAD,
            max_pending_opens: DEFAULT_MAX_PENDING_OPENS,
        }
    }
}
