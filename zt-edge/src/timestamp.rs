//! Wall-clock instants, written as RFC 3339 in UTC everywhere (records, audit lines).

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// An instant in UTC with millisecond precision.
///
/// It serializes as an RFC 3339 string such as `2026-11-28T17:04:05.123Z`, and parses any
/// RFC 3339 string (converting other offsets to UTC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time, truncated to whole milliseconds.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts a [`SystemTime`], truncated to whole milliseconds.
    pub fn from_system_time(t: SystemTime) -> Self {
        let dt = OffsetDateTime::from(t);
        let millis = dt.millisecond();
        // Replacing the sub-second part cannot fail for a value taken from a valid instant.
        let dt = dt.replace_millisecond(millis).unwrap_or(dt);
        Self(dt)
    }

    /// The instant `seconds` after the Unix epoch, or `None` when outside years 1..=9999.
    pub fn from_unix_seconds(seconds: i64) -> Option<Self> {
        let dt = OffsetDateTime::from_unix_timestamp(seconds).ok()?;
        (1..=9999).contains(&dt.year()).then_some(Self(dt))
    }

    /// The same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        SystemTime::from(self.0)
    }

    /// Seconds since the Unix epoch (negative before it).
    pub fn unix_seconds(self) -> i64 {
        self.0.unix_timestamp()
    }

    /// Parses an RFC 3339 string.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let dt = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        // Same precision as every other timestamp, so a value equals its own reparse.
        let dt = dt.replace_millisecond(dt.millisecond()).ok()?;
        Some(Self(dt.to_offset(UtcOffset::UTC)))
    }

    pub(crate) fn from_offset_date_time(dt: OffsetDateTime) -> Self {
        Self(dt.to_offset(UtcOffset::UTC))
    }

    pub(crate) fn as_offset_date_time(self) -> OffsetDateTime {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        // Written by hand rather than with `Rfc3339` so the precision is always three
        // digits: log lines then sort and align as plain text.
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second(),
            d.millisecond()
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds() {
        let t = Timestamp::from_unix_seconds(1_764_349_445).unwrap();
        assert_eq!(t.to_string(), "2025-11-28T17:04:05.000Z");
        assert_eq!(t.unix_seconds(), 1_764_349_445);
    }

    #[test]
    fn parses_offsets_into_utc() {
        let t = Timestamp::parse_rfc3339("2025-11-28T18:04:05.250+01:00").unwrap();
        assert_eq!(t.to_string(), "2025-11-28T17:04:05.250Z");
        assert!(Timestamp::parse_rfc3339("yesterday").is_none());
        let fine = Timestamp::parse_rfc3339("2025-11-28T17:04:05.250999Z").unwrap();
        assert_eq!(Timestamp::parse_rfc3339(&fine.to_string()), Some(fine));
    }

    #[test]
    fn serde_round_trip() {
        let t = Timestamp::now();
        let json = serde_json::to_string(&t).unwrap();
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<Timestamp>("\"2025-13-01T00:00:00Z\"").is_err());
    }
}
