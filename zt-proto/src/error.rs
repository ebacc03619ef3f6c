//! Errors of the I/O-free core: decoding what a peer sent and encoding what we send.

/// Bytes from a peer that can never become a valid frame.
///
/// "Not enough bytes yet" is not an error: decoders return `Ok(None)` for it. Every variant
/// names the frame and, where there is one, the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame type byte is not one this version knows and is not in the ignorable range.
    #[error("unknown control frame type 0x{ty:02x}")]
    UnknownFrameType {
        /// The type byte received.
        ty: u8,
    },
    /// A length prefix exceeds its limit.
    #[error("{frame}: {field} is {len} bytes, above the limit of {limit}")]
    TooLong {
        /// The frame being decoded.
        frame: &'static str,
        /// The field whose length is too large.
        field: &'static str,
        /// The length the peer announced.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A count exceeds its limit.
    #[error("{frame}: {field} has {count} entries, above the limit of {limit}")]
    TooMany {
        /// The frame being decoded.
        frame: &'static str,
        /// The field whose count is too large.
        field: &'static str,
        /// The count the peer announced.
        count: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The frame's body ended in the middle of a field.
    #[error("{frame}: body ends inside {field}")]
    Truncated {
        /// The frame being decoded.
        frame: &'static str,
        /// The field that was cut short.
        field: &'static str,
    },
    /// A field holds a value the protocol does not allow.
    #[error("{frame}: {field} has invalid value {value}")]
    InvalidValue {
        /// The frame being decoded.
        frame: &'static str,
        /// The field at fault.
        field: &'static str,
        /// The value received.
        value: u64,
    },
    /// A text field is not UTF-8.
    #[error("{frame}: {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The frame being decoded.
        frame: &'static str,
        /// The field at fault.
        field: &'static str,
    },
    /// The body is longer than its fields.
    #[error("{frame}: {extra} bytes after the last field")]
    TrailingBytes {
        /// The frame being decoded.
        frame: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
}

/// A frame we were asked to send breaks a protocol limit; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A field is longer than the wire format or the configured limit allows.
    #[error("{frame}: {field} is {len} bytes, above the limit of {limit}")]
    TooLong {
        /// The frame being encoded.
        frame: &'static str,
        /// The field at fault.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A list has more entries than allowed.
    #[error("{frame}: {field} has {count} entries, above the limit of {limit}")]
    TooMany {
        /// The frame being encoded.
        frame: &'static str,
        /// The field at fault.
        field: &'static str,
        /// Its number of entries.
        count: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A number does not fit its field.
    #[error("{frame}: {field} value {value} is out of range")]
    OutOfRange {
        /// The frame being encoded.
        frame: &'static str,
        /// The field at fault.
        field: &'static str,
        /// The value given.
        value: u64,
    },
    /// A field's value breaks a rule of its frame (a character it may not hold, a field that
    /// must or must not be present).
    #[error("{frame}: {field} {rule}")]
    Invalid {
        /// The frame being encoded.
        frame: &'static str,
        /// The field at fault.
        field: &'static str,
        /// The rule it breaks.
        rule: &'static str,
    },
}
