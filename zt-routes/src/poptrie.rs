//! The compiled, read-only longest-prefix-match structure: a poptrie.
//!
//! Layout (after Asai and Ohara, "Poptrie", SIGCOMM 2015):
//! - a direct-pointing table resolves the first `direct_bits` bits of the address in one
//!   array access; each entry is either a leaf word (top bit set) or a node index;
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
//! One addition to the paper: a subtree that holds a single prefix does not become a chain
//! of nodes but a *tail*, a leaf word pointing at `(prefix, answer, fallback)` — one
//! comparison instead of up to eighteen nodes for a lone IPv6 /128. Sparse tables (host
//! routes, IPv6 sites spread under provider blocks) are mostly such subtrees.
//!
//! Invariants the lookup relies on, established by [`Poptrie::build`]: every node index
//! stored in the direct table or reached through `base1` exists; every slot that is not a
//! child has a set `leafvec` bit at or below it (the first leaf slot of a node always
//! starts a run), so the popcount is at least one.

use std::marker::PhantomData;

use crate::bits::Bits;

/// Bits resolved per node: 64 slots fit the two `u64` bitmaps.
const STRIDE: u8 = 6;
/// Direct-table entries with this bit set hold a leaf word, the others a node index.
const NOT_NODE: u32 = 1 << 31;
/// Leaf words with this bit set index `tails`; the others are answers.
const TAIL: u32 = 1 << 30;
/// The largest answer a trie can hold.
pub(crate) const MAX_VALUE: u32 = TAIL - 1;

#[derive(Clone, Copy, Debug, Default)]
struct Node {
    /// Slot `i` continues into a child node.
    vector: u64,
    /// A run of equal leaf words starts at slot `i` (slots with children are skipped).
    leafvec: u64,
    /// Index in `leaves` of this node's first leaf word.
    base0: u32,
    /// Index in `nodes` of this node's first child.
    base1: u32,
}

/// The only prefix below one slot: `answer` if the address is inside it, else `fallback`
/// (the answer of the prefixes above the slot).
#[derive(Clone, Copy, Debug)]
struct Tail<K> {
    addr: K,
    answer: u32,
    fallback: u32,
    len: u8,
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
    tails: Box<[Tail<K>]>,
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
        let mut direct = vec![NOT_NODE; 1usize << direct_bits];
        // Sorted by (address, length), a prefix always comes before the prefixes nested in
        // it, so painting in order leaves each slot with its longest covering prefix.
        for &(addr, len, answer) in entries {
            if len <= direct_bits {
                let start = addr.extract(0, direct_bits) as usize;
                let count = 1usize << (direct_bits - len);
                direct[start..start + count].fill(NOT_NODE | answer);
            }
        }
        let mut builder = Builder::<K> {
            nodes: Vec::new(),
            leaves: Vec::new(),
            tails: Vec::new(),
            family: PhantomData,
        };
        for run in runs(entries, 0, direct_bits) {
            let slot = run[0].0.extract(0, direct_bits) as usize;
            let fallback = direct[slot] & MAX_VALUE;
            direct[slot] = match run {
                [only] => NOT_NODE | builder.tail(*only, fallback),
                _ => {
                    let index = builder.nodes.len();
                    builder.nodes.push(Node::default());
                    builder.node(index, run, direct_bits, fallback);
                    index as u32
                }
            };
        }
        Poptrie {
            direct_bits,
            direct: direct.into_boxed_slice(),
            nodes: builder.nodes.into_boxed_slice(),
            leaves: builder.leaves.into_boxed_slice(),
            tails: builder.tails.into_boxed_slice(),
        }
    }

    /// The answer of the longest prefix covering `key`, or 0.
    #[inline]
    pub(crate) fn lookup(&self, key: K) -> u32 {
        let entry = self.direct[key.extract(0, self.direct_bits) as usize];
        let word = if entry & NOT_NODE != 0 {
            entry & !NOT_NODE
        } else {
            self.descend(key, entry)
        };
        if word & TAIL == 0 {
            return word;
        }
        let tail = &self.tails[(word & !TAIL) as usize];
        if key.mask(tail.len) == tail.addr {
            tail.answer
        } else {
            tail.fallback
        }
    }

    /// The leaf word for `key` below node `index`, which sits after the direct table.
    #[inline]
    fn descend(&self, key: K, index: u32) -> u32 {
        let mut node = &self.nodes[index as usize];
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

    /// Heap bytes of the lookup structure (direct table, nodes, leaves, tails).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.direct.len() * size_of::<u32>()
            + self.nodes.len() * size_of::<Node>()
            + self.leaves.len() * size_of::<u32>()
            + self.tails.len() * size_of::<Tail<K>>()
    }
}

struct Builder<K> {
    nodes: Vec<Node>,
    leaves: Vec<u32>,
    tails: Vec<Tail<K>>,
    family: PhantomData<K>,
}

impl<K: Bits> Builder<K> {
    /// A tail for a lone prefix; returns its leaf word.
    fn tail(&mut self, (addr, len, answer): Entry<K>, fallback: u32) -> u32 {
        self.tails.push(Tail {
            addr,
            answer,
            fallback,
            len,
        });
        TAIL | (self.tails.len() - 1) as u32
    }

    /// Fills `nodes[index]` for the node at `offset` bits whose prefixes (all longer than
    /// `offset`, all inside the node) are `entries`; `fallback` is the answer inherited from
    /// the prefixes above the node.
    fn node(&mut self, index: usize, entries: &[Entry<K>], offset: u8, fallback: u32) {
        let end = offset + STRIDE;
        let mut answers = [fallback; 64];
        for &(addr, len, answer) in entries {
            if len <= end {
                let slot = addr.extract(offset, STRIDE) as usize;
                let count = 1usize << (end - len);
                answers[slot..slot + count].fill(answer);
            }
        }
        let mut words = answers;
        let mut vector = 0u64;
        for run in runs(entries, offset, end) {
            let slot = run[0].0.extract(offset, STRIDE) as usize;
            match run {
                [only] => words[slot] = self.tail(*only, answers[slot]),
                _ => vector |= 1u64 << slot,
            }
        }
        let base0 = self.leaves.len() as u32;
        let mut leafvec = 0u64;
        let mut last = None;
        for (slot, &word) in words.iter().enumerate() {
            if vector & (1u64 << slot) == 0 && last != Some(word) {
                leafvec |= 1u64 << slot;
                self.leaves.push(word);
                last = Some(word);
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
        let children = runs(entries, offset, end).filter(|run| run.len() > 1);
        for (child, run) in (base1..).zip(children) {
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
