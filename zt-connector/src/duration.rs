//! Durations written the way cloudflared's configuration writes them.
//!
//! cloudflared reads durations with Go's `time.ParseDuration`: a sequence of decimal numbers,
//! each with an optional fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), such as
//! `30s`, `1m30s`, `1.5h` or `500ms`; the bare string `0` is also accepted. Its remotely
//! managed configuration carries the same settings as integer seconds, so a plain integer
//! here means seconds. Negative durations make no sense for any connector setting and are
//! refused. The parser never panics and refuses values that overflow.

use std::time::Duration;

/// Why a duration could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The text was empty.
    #[error("empty duration (expected e.g. `30s`, `1m30s` or `500ms`)")]
    Empty,
    /// A leading `-`: no connector setting accepts a negative duration.
    #[error("negative duration `{0}` is not allowed")]
    Negative(String),
    /// A number was not followed by one of the known units.
    #[error("missing unit in duration `{0}` (use ns, us, ms, s, m or h, e.g. `30s`)")]
    MissingUnit(String),
    /// A unit that Go's duration syntax does not know.
    #[error("unknown unit `{unit}` in duration `{text}` (use ns, us, ms, s, m or h)")]
    UnknownUnit {
        /// The whole text that was parsed.
        text: String,
        /// The unit that was not recognised.
        unit: String,
    },
    /// Characters that are neither digits, a decimal point nor a unit.
    #[error("invalid duration `{0}` (expected e.g. `30s`, `1m30s` or `500ms`)")]
    Invalid(String),
    /// The value does not fit in a `Duration`.
    #[error("duration `{0}` is too large")]
    Overflow(String),
}

/// Parses a duration in Go's syntax (`30s`, `1m30s`, `1.5h`, `500ms`, `0`) or a plain
/// integer number of seconds (`30`).
///
/// ```
/// use std::time::Duration;
/// use zt_connector::parse_duration;
///
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
/// assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
/// assert!(parse_duration("30x").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(text.to_owned()));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s
            .parse()
            .map_err(|_| DurationError::Overflow(text.to_owned()))?;
        return Ok(Duration::from_secs(secs));
    }

    let mut total: u128 = 0; // nanoseconds
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::Invalid(text.to_owned()));
        }
        let unit_len = after_num
            .char_indices()
            .find(|&(_, c)| c.is_ascii_digit() || c == '.')
            .map_or(after_num.len(), |(i, _)| i);
        let (unit, after_unit) = after_num.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "" => return Err(DurationError::MissingUnit(text.to_owned())),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    text: text.to_owned(),
                    unit: other.to_owned(),
                })
            }
        };
        let overflow = || DurationError::Overflow(text.to_owned());
        // Digits beyond 30 cannot fit whatever the unit; refusing them early keeps the
        // arithmetic below inside u128.
        if int_part.len() > 30 {
            return Err(overflow());
        }
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut value = whole.checked_mul(unit_nanos).ok_or_else(overflow)?;
        // The fraction contributes at most one unit; only its first digits can matter
        // at nanosecond precision, so the rest is dropped (Go truncates the same way).
        let mut scale = unit_nanos;
        for digit in frac_part.bytes().take(20) {
            scale /= 10;
            if scale == 0 {
                break;
            }
            value += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(value).ok_or_else(overflow)?;
        rest = after_unit;
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| DurationError::Overflow(text.to_owned()))?;
    // The remainder of a division by 1e9 always fits in u32.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way [`parse_duration`] reads it back, for logs and messages.
pub(crate) fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn go_syntax() {
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("2h45m"), Duration::from_secs(2 * 3600 + 45 * 60));
        assert_eq!(ok("1us"), Duration::from_micros(1));
        assert_eq!(ok("1µs"), Duration::from_micros(1));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("+5s"), Duration::from_secs(5));
        assert_eq!(ok("1.000000001s"), Duration::new(1, 1));
        assert_eq!(ok("0.0000000019s"), Duration::from_nanos(1));
    }

    #[test]
    fn integers_are_seconds() {
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok(" 5 "), Duration::from_secs(5));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            parse_duration("1.5"),
            Err(DurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_duration("5s3"),
            Err(DurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_duration("30x"),
            Err(DurationError::UnknownUnit { ref unit, .. }) if unit == "x"
        ));
        assert!(matches!(
            parse_duration("s"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("."),
            Err(DurationError::Invalid(_))
        ));
        assert!(parse_duration("1..5s").is_err());
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration(&"9".repeat(200)),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::from_secs(30),
            Duration::from_millis(1500),
            Duration::from_nanos(7),
        ] {
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }
}
