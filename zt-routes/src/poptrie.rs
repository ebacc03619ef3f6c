//! The compiled, read-only longest-prefix-match structure: a poptrie.
//!
//! Layout (after Asai and Ohara, "Poptrie", SIGCOMM 2015):
//! - a direct-pointing table resolves the first `direct_bits` bits of the address in one
//!   array access; each entry is either a final answer (top bit set) or a node index;
//! - below it, every node resolves six more bits with two 64-bit bitmaps: `vector` marks
//!   which of the 64 slots continue into a child node, `leafvec` marks where a run of equal
//!   answers starts among the other slots. The children of a node are contiguous in `nodes`
//!   and its leaves contiguous in `leaves`, so the popcount of a bitmap below the slot is
//!   the offset from `base1`/`base0`. Runs of equal answers (a /20 seen from a six-bit node
//!   at /18 covers sixteen slots) are stored once.
//!
//! Answers are `u32` values with 0 meaning "no prefix covers this address"; the caller
//! keeps what they stand for (a route, a set membership) in its own table.
//!
//! Invariants the lookup relies on, established by [`Poptrie::build`]: every node index
//! stored in the direct table or reached through `base1` exists; every slot that is not a
//! child has a set `leafvec` bit at or below it (the first leaf slot of a node always
//! starts a run), so the popcount is at least one.

use std::marker::PhantomData;

use crate::bits::Bits;

/// Bits resolved per node: 64 slots fit the two `u64` bitmaps.
const STRIDE: u8 = 6;
/// Direct-table entries with this bit set are answers, the others node indices.
const LEAF_FLAG: u32 = 1 << 31;
/// The largest answer a trie can hold.
pub(crate) const MAX_VALUE: u32 = LEAF_FLAG - 1;

#[derive(Clone, Copy, Debug, Default)]
struct Node {
    /// Slot `i` continues into a child node.
    vector: u64,
    /// A run of equal answers starts at slot `i` (slots with children are skipped).
    leafvec: u64,
    /// Index in `leaves` of this node's first answer.
    base0: u32,
    /// Index in `nodes` of this node's first child.
    base1: u32,
}

/// One prefix to compile: network address (host bits clear), length, answer (non-zero).
pub(crate) type Entry<K> = (K, u8, u32);

/// A compiled longest-prefix-match table for one address family.
#[derive(Clone, Debug)]
pub(crate) struct Poptrie<K> {
    direct_bits: u8,
    direct: Box<[u32]>,
    nodes: Box<[Node]>,
    leaves: Box<[u32]>,
    family: PhantomData<K>,
}

impl<K: Bits> Poptrie<K> {
    /// Compiles `entries`, which must be sorted by (address, length), free of duplicates,
    /// with host bits clear and answers in `1..=MAX_VALUE`.
    pub(crate) fn build(entries: &[Entry<K>]) -> Self {
        debug_assert!(entries
            .windows(2)
            .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        // A small table does not pay for a 1 MiB root: policy lists of a handful of CIDRs
        // are common and there may be many of them. Multiples of the stride keep the node
        // boundaries on /24 and /48 whatever the root size.
        let direct_bits = match entries.len() {
            0..=255 => STRIDE,
            256..=65_535 => 2 * STRIDE,
            _ => K::DIRECT_BITS,
        };
        let mut direct = vec![LEAF_FLAG; 1usize << direct_bits];
        // Sorted by (address, length), a prefix always comes before the prefixes nested in
        // it, so painting in order leaves each slot with its longest covering prefix.
        for &(addr, len, value) in entries {
            if len <= direct_bits {
                let start = addr.extract(0, direct_bits) as usize;
                let count = 1usize << (direct_bits - len);
                direct[start..start + count].fill(LEAF_FLAG | value);
            }
        }
        let mut builder = Builder::<K> {
            nodes: Vec::new(),
            leaves: Vec::new(),
            family: PhantomData,
        };
        for run in runs(entries, 0, direct_bits) {
            let slot = run[0].0.extract(0, direct_bits) as usize;
            let default = direct[slot] & MAX_VALUE;
            let index = builder.nodes.len();
            builder.nodes.push(Node::default());
            builder.node(index, run, direct_bits, default);
            direct[slot] = index as u32;
        }
        Poptrie {
            direct_bits,
            direct: direct.into_boxed_slice(),
            nodes: builder.nodes.into_boxed_slice(),
            leaves: builder.leaves.into_boxed_slice(),
            family: PhantomData,
        }
    }

    /// The answer of the longest prefix covering `key`, or 0.
    #[inline]
    pub(crate) fn lookup(&self, key: K) -> u32 {
        let entry = self.direct[key.extract(0, self.direct_bits) as usize];
        if entry & LEAF_FLAG != 0 {
            return entry & MAX_VALUE;
        }
        let mut node = &self.nodes[entry as usize];
        let mut offset = self.direct_bits;
        loop {
            let slot = key.extract(offset, STRIDE);
            let upto = u64::MAX >> (63 - slot);
            if node.vector & (1u64 << slot) != 0 {
                let child = node.base1 + (node.vector & upto).count_ones() - 1;
                node = &self.nodes[child as usize];
                offset += STRIDE;
            } else {
                let leaf = node.base0 + (node.leafvec & upto).count_ones() - 1;
                return self.leaves[leaf as usize];
            }
        }
    }

    /// Heap bytes of the lookup structure (direct table, nodes, leaves).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.direct.len() * size_of::<u32>()
            + self.nodes.len() * size_of::<Node>()
            + self.leaves.len() * size_of::<u32>()
    }
}

struct Builder<K> {
    nodes: Vec<Node>,
    leaves: Vec<u32>,
    family: PhantomData<K>,
}

impl<K: Bits> Builder<K> {
    /// Fills `nodes[index]` for the node at `offset` bits whose prefixes (all longer than
    /// `offset`, all inside the node) are `entries`; `default` is the answer inherited from
    /// the prefixes above the node.
    fn node(&mut self, index: usize, entries: &[Entry<K>], offset: u8, default: u32) {
        let end = offset + STRIDE;
        let mut answers = [default; 64];
        let mut vector = 0u64;
        for &(addr, len, value) in entries {
            let slot = addr.extract(offset, STRIDE) as usize;
            if len <= end {
                let count = 1usize << (end - len);
                answers[slot..slot + count].fill(value);
            } else {
                vector |= 1u64 << slot;
            }
        }
        let base0 = self.leaves.len() as u32;
        let mut leafvec = 0u64;
        let mut last = None;
        for (slot, &answer) in answers.iter().enumerate() {
            if vector & (1u64 << slot) == 0 && last != Some(answer) {
                leafvec |= 1u64 << slot;
                self.leaves.push(answer);
                last = Some(answer);
            }
        }
        let base1 = self.nodes.len();
        self.nodes
            .resize(base1 + vector.count_ones() as usize, Node::default());
        self.nodes[index] = Node {
            vector,
            leafvec,
            base0,
            base1: base1 as u32,
        };
        for (child, run) in (base1..).zip(runs(entries, offset, end)) {
            let slot = run[0].0.extract(offset, STRIDE) as usize;
            self.node(child, run, end, answers[slot]);
        }
    }
}

/// The groups of prefixes longer than `end` that share the slot `offset..end`, in order.
///
/// Each group is contiguous in `entries`: a prefix no longer than `end` whose address lies
/// in a slot is that slot's first address, so it sorts before every longer prefix there.
fn runs<K: Bits>(entries: &[Entry<K>], offset: u8, end: u8) -> impl Iterator<Item = &[Entry<K>]> {
    let width = end - offset;
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < entries.len() && entries[i].1 <= end {
            i += 1;
        }
        let start = i;
        let slot = entries.get(start)?.0.extract(offset, width);
        i += 1;
        while i < entries.len() && entries[i].0.extract(offset, width) == slot {
            i += 1;
        }
        Some(&entries[start..i])
    })
}
