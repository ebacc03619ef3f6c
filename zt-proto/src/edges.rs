//! What a connector or client keeps of the edge lists the edges push
//! ([`ControlFrame::EdgeList`](crate::ControlFrame::EdgeList)): more places to move a lost
//! connection to, beside the addresses it was configured with, which are never dropped.

use std::sync::{Mutex, PoisonError};

use crate::frame::EdgeList;

/// The edges a peer was told of, with the generation of the push that told it; shared by
/// the peer's connection tasks (every method takes `&self`).
#[derive(Debug)]
pub struct LearnedEdges<T> {
    inner: Mutex<(u64, Vec<T>)>,
}

impl<T> Default for LearnedEdges<T> {
    fn default() -> Self {
        Self {
            inner: Mutex::new((0, Vec::new())),
        }
    }
}

impl<T: Clone + PartialEq> LearnedEdges<T> {
    /// Nothing learned yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in a push, each address read with `parse` (one it refuses is skipped). A push
    /// older than the last one taken is ignored. Returns the learned edges when they
    /// changed, for the caller's log.
    pub fn learn(&self, list: &EdgeList, parse: impl Fn(&str) -> Option<T>) -> Option<Vec<T>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if list.generation <= inner.0 && inner.0 != 0 {
            return None;
        }
        let edges: Vec<T> = list.edges.iter().filter_map(|e| parse(e)).collect();
        inner.0 = list.generation;
        if edges == inner.1 {
            return None;
        }
        inner.1 = edges.clone();
        Some(edges)
    }

    /// The edges learned, in the order pushed.
    pub fn edges(&self) -> Vec<T> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    /// Where a connection may go: `configured` first, then the learned edges not among them.
    pub fn candidates(&self, configured: &[T]) -> Vec<T> {
        let mut out = configured.to_vec();
        for e in self.edges() {
            if !out.contains(&e) {
                out.push(e);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(generation: u64, edges: &[&str]) -> EdgeList {
        EdgeList {
            generation,
            edges: edges.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    #[test]
    fn learns_newer_pushes_keeps_configured_first_and_skips_bad_addresses() {
        let l = LearnedEdges::<String>::new();
        let parse = |s: &str| s.contains(':').then(|| s.to_owned());
        assert!(l.learn(&push(3, &["a:1", "b:2", "junk"]), parse).is_some());
        assert_eq!(l.edges(), ["a:1".to_owned(), "b:2".to_owned()]);
        assert_eq!(l.candidates(&["b:2".to_owned()]), ["b:2", "a:1"]);
        // An older push is ignored; the same set again is no change.
        assert!(l.learn(&push(2, &["c:3"]), parse).is_none());
        assert!(l.learn(&push(4, &["a:1", "b:2"]), parse).is_none());
        assert!(l.learn(&push(5, &["c:3"]), parse).is_some());
        assert_eq!(l.candidates(&["a:1".to_owned()]), ["a:1", "c:3"]);
    }
}
