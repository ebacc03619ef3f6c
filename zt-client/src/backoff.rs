//! The client's reconnect delays. The full-jitter backoff itself is [`zt_proto::Backoff`],
//! shared with the connector; these are the client's values, and why:
//!
//! After the n-th consecutive failure the client waits a uniformly random time in
//! `[0, min(CAP, BASE × 2ⁿ)]`. When an edge restarts every client of a team loses it at
//! the same instant; the jitter spreads their handshakes instead of sending them in waves.
//! - `BASE` = 200 ms: a blip is ridden out almost at once.
//! - `CAP` = 5 s: a self-hosted edge restarts in a second or two; a person waiting for
//!   kubectl should not wait much longer than that once it is back.
//! - `RESET_AFTER` = 30 s: a connection that lived that long was healthy, so its loss
//!   starts again from quick retries; one dropped right after registering keeps growing.
//!
//! The client asks for a delay after a loss and after each failed attempt, and calls
//! [`zt_proto::Backoff::disconnected`] before each, so that the uptime of the connection
//! that ended (lost, or left after a go-away) is counted at the first delay after it.

use std::time::Duration;

use zt_proto::BackoffPolicy;

/// The client's reconnect delays: 200 ms base, 5 s cap, reset after 30 s of uptime.
pub(crate) const RECONNECT_BACKOFF: BackoffPolicy = BackoffPolicy::new(
    Duration::from_millis(200),
    Duration::from_secs(5),
    Duration::from_secs(30),
);
