//! What the backend reads from PostgreSQL notifications.
//!
//! Two channels, so fast-moving rows never move the configuration revision:
//! - `zt_config`: payload the committed revision in decimal (`"42"`, no sign, no leading
//!   zero); a listener moves its
//!   revision forward to it (never back: notifications of one commit may arrive after a
//!   catch-up read that already saw a later one).
//! - `zt_ephemeral`: payload `TABLE:KEY_HEX` naming the row of an unrevisioned table that
//!   changed (`"presence:0a1b"`).
//!
//! Any role that can connect may `NOTIFY` on these channels, so payloads are untrusted
//! input: parsing is strict and bounded, and a bad payload is logged and skipped.

use super::super::backend::Revision;

/// The channel that carries configuration revisions.
pub const CONFIG_CHANNEL: &str = "zt_config";
/// The channel that carries changes of unrevisioned rows.
pub const EPHEMERAL_CHANNEL: &str = "zt_ephemeral";

/// PostgreSQL caps payloads below 8000 bytes; a key longer than this is refused.
pub const MAX_EPHEMERAL_KEY: usize = 1024;

/// Tables of fast-moving state, outside the configuration revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EphemeralTable {
    /// Which edges hold connections of which tunnels, refreshed by heartbeats.
    Presence,
    /// Client sessions and refresh tokens.
    Sessions,
}

impl EphemeralTable {
    /// Every table.
    pub const ALL: [EphemeralTable; 2] = [EphemeralTable::Presence, EphemeralTable::Sessions];

    /// The table's name, in the database and in notifications.
    pub fn name(self) -> &'static str {
        match self {
            EphemeralTable::Presence => "presence",
            EphemeralTable::Sessions => "sessions",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// A row of an unrevisioned table changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EphemeralChange {
    /// The table.
    pub table: EphemeralTable,
    /// The row's key.
    pub key: Vec<u8>,
}

impl EphemeralChange {
    /// The notification payload for this change.
    pub fn payload(&self) -> String {
        let mut s = String::with_capacity(self.table.name().len() + 1 + 2 * self.key.len());
        s.push_str(self.table.name());
        s.push(':');
        for b in &self.key {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// A notification the backend understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// Another commit reached this revision.
    Config(Revision),
    /// A row of an unrevisioned table changed.
    Ephemeral(EphemeralChange),
}

/// A notification the backend does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoticeError {
    /// A channel this backend does not listen to.
    #[error("notification on unknown channel {0:?}")]
    UnknownChannel(String),
    /// The payload of a `zt_config` notification is not a revision.
    #[error(
        "zt_config notification {payload:?} is not a revision number (1 to 20 decimal digits)"
    )]
    BadRevision {
        /// The payload, cut to 64 characters.
        payload: String,
    },
    /// The payload of a `zt_ephemeral` notification is not `TABLE:KEY_HEX`.
    #[error("zt_ephemeral notification {payload:?}: {reason}")]
    BadEphemeral {
        /// The payload, cut to 64 characters.
        payload: String,
        /// What is wrong.
        reason: &'static str,
    },
}

fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Parses a notification received on `channel` with `payload`.
pub(crate) fn parse_notification(channel: &str, payload: &str) -> Result<Notice, NoticeError> {
    match channel {
        CONFIG_CHANNEL => {
            // Canonical decimal only (no sign, no leading zero), as the database writes it.
            let ok = !payload.is_empty()
                && payload.len() <= 20
                && payload.bytes().all(|b| b.is_ascii_digit())
                && (payload == "0" || !payload.starts_with('0'));
            let n = ok.then(|| payload.parse::<u64>().ok()).flatten();
            // i64 is the column's type: a larger number cannot come from a commit.
            match n.filter(|n| i64::try_from(*n).is_ok()) {
                Some(n) => Ok(Notice::Config(Revision::new(n))),
                None => Err(NoticeError::BadRevision {
                    payload: cut(payload),
                }),
            }
        }
        EPHEMERAL_CHANNEL => {
            let bad = |reason| NoticeError::BadEphemeral {
                payload: cut(payload),
                reason,
            };
            let (table, hex) = payload.split_once(':').ok_or(bad("no ':'"))?;
            let table = EphemeralTable::from_name(table).ok_or(bad("unknown table"))?;
            if hex.len() % 2 != 0 {
                return Err(bad("odd number of hex digits"));
            }
            if hex.len() / 2 > MAX_EPHEMERAL_KEY {
                return Err(bad("key too long"));
            }
            let digit = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            let key = hex
                .as_bytes()
                .chunks_exact(2)
                .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
                .collect::<Option<Vec<u8>>>()
                .ok_or(bad("key is not lowercase hex"))?;
            Ok(Notice::Ephemeral(EphemeralChange { table, key }))
        }
        other => Err(NoticeError::UnknownChannel(cut(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(
            parse_notification(CONFIG_CHANNEL, "42"),
            Ok(Notice::Config(Revision::new(42)))
        );
        for bad in [
            "",
            "-1",
            "+1",
            "1 ",
            "0x10",
            "99999999999999999999",
            "9223372036854775808",
        ] {
            assert!(parse_notification(CONFIG_CHANNEL, bad).is_err(), "{bad:?}");
        }
        let change = EphemeralChange {
            table: EphemeralTable::Presence,
            key: vec![0, 0xab, 0xff],
        };
        assert_eq!(change.payload(), "presence:00abff");
        assert_eq!(
            parse_notification(EPHEMERAL_CHANNEL, &change.payload()),
            Ok(Notice::Ephemeral(change))
        );
        for bad in [
            "presence",
            "nope:00",
            "presence:0",
            "presence:AB",
            "presence:zz",
        ] {
            assert!(
                parse_notification(EPHEMERAL_CHANNEL, bad).is_err(),
                "{bad:?}"
            );
        }
        assert!(parse_notification("other", "1").is_err());
    }
}
