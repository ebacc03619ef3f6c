//! How many concurrent streams a peer may open on one connection: a small allowance at
//! first, doubled whenever the peer's open flows reach three quarters of it, up to
//! [`TransportSettings::max_concurrent_bidi_streams`](crate::TransportSettings).
//!
//! Why not grant the maximum at once: quinn keeps a receive-stream state for every stream
//! the peer may open and hands each state on to the next stream id in turn, keeping the
//! buffer capacity the state grew to. With 10,000 slots every lossy bulk transfer grows one
//! more state for good (docs/RELIABILITY.md, "memory over time"); with an allowance that
//! follows use, the number of states is bounded by the connection's peak concurrency
//! (rounded up to a power of two of the initial allowance), and a session that never holds
//! more than a few hundred flows never costs the table for 10,000.
//!
//! The allowance only grows: quinn keeps the states of a lowered limit in its pool, so
//! shrinking it would free nothing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// One connection's stream allowance and the streams the peer holds open on it.
#[derive(Debug)]
pub(crate) struct StreamAllowance {
    live: AtomicU32,
    granted: AtomicU32,
    max: u32,
}

impl StreamAllowance {
    /// An allowance of `initial` streams (at least one, at most `max`) that may grow to
    /// `max`; none at all if `max` is zero.
    pub(crate) fn new(initial: u32, max: u32) -> Arc<Self> {
        Arc::new(Self {
            live: AtomicU32::new(0),
            granted: AtomicU32::new(initial.clamp(max.min(1), max)),
            max,
        })
    }

    /// What the peer may open now.
    #[cfg(test)]
    fn granted(&self) -> u32 {
        self.granted.load(Ordering::Relaxed)
    }

    /// Counts a stream the peer opened. Returns the slot (dropping it counts the stream
    /// closed) and, when this stream brought the open ones to three quarters of the
    /// allowance, the new, doubled allowance to grant the peer.
    pub(crate) fn admit(self: &Arc<Self>) -> (StreamSlot, Option<u32>) {
        let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = StreamSlot(self.clone());
        let granted = self.granted.load(Ordering::Relaxed);
        if granted >= self.max || live < granted - granted / 4 {
            return (slot, None);
        }
        let next = granted.saturating_mul(2).min(self.max);
        // Another stream's admission may have raised it meanwhile: then that one grants.
        let raised = self
            .granted
            .compare_exchange(granted, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        (slot, raised.then_some(next))
    }

    #[cfg(test)]
    fn live(&self) -> u32 {
        self.live.load(Ordering::Relaxed)
    }
}

/// One stream the peer holds open, counted against its connection's allowance until
/// dropped (with the stream's receiving half, which holds it).
#[derive(Debug)]
pub(crate) struct StreamSlot(Arc<StreamAllowance>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_at_three_quarters_and_stops_at_the_maximum() {
        let a = StreamAllowance::new(8, 40);
        let mut slots = Vec::new();
        let mut grants = Vec::new();
        for _ in 0..40 {
            let (slot, grant) = a.admit();
            slots.push(slot);
            grants.extend(grant.map(|g| (slots.len(), g)));
        }
        // 6 of 8 open: 16; 12 of 16: 32; 24 of 32: 40 (the maximum), then no more.
        assert_eq!(grants, vec![(6, 16), (12, 32), (24, 40)]);
        assert_eq!(a.granted(), 40);
        assert_eq!(a.live(), 40);
    }

    #[test]
    fn closed_streams_leave_the_allowance_where_it_is() {
        let a = StreamAllowance::new(4, 1000);
        for _ in 0..1000 {
            // One stream at a time never comes near three quarters of four.
            let (slot, grant) = a.admit();
            assert_eq!(grant, None);
            drop(slot);
        }
        assert_eq!(a.granted(), 4);
        assert_eq!(a.live(), 0);
        let held: Vec<_> = (0..3).map(|_| a.admit()).collect();
        assert_eq!(held.last().unwrap().1, Some(8));
        drop(held);
        assert_eq!((a.granted(), a.live()), (8, 0));
    }

    #[test]
    fn odd_bounds_are_taken_in_range() {
        assert_eq!(StreamAllowance::new(0, 10).granted(), 1);
        assert_eq!(StreamAllowance::new(500, 10).granted(), 10);
        assert_eq!(StreamAllowance::new(5, 0).granted(), 0);
        let one = StreamAllowance::new(1, 3);
        // One open of one: the allowance doubles to two, then three.
        let (_a, g) = one.admit();
        assert_eq!(g, Some(2));
        let (_b, g) = one.admit();
        assert_eq!(g, Some(3));
        let (_c, g) = one.admit();
        assert_eq!(g, None);
    }
}
