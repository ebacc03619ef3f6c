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
//! Memory layout: nodes, leaf words and tails share one arena of `u32` words, laid out
//! depth first — a node's children block is followed by their leaves, and tails sit just
//! before the block that uses them — so one lookup below the root stays within a page or
//! two. On a machine where a TLB miss costs more than a cache miss (small pages, nested
//! paging), that is worth more than any saving in instructions.
//!
//! Invariants the lookup relies on, established by [`Poptrie::build`]: every node offset
//! stored in the direct table or reached through `base1` is a whole node in the arena;
//! every slot that is not a child has a set `leafvec` bit at or below it (the first leaf
//! slot of a node always starts a run), so the popcount is at least one; every tail word
//! points at a whole tail.

use std::marker::PhantomData;

use crate::bits::Bits;

/// Bits resolved per node: 64 slots fit the two `u64` bitmaps.
const STRIDE: u8 = 6;
/// Direct-table entries with this bit set hold a leaf word, the others a node offset.
const NOT_NODE: u32 = 1 << 31;
/// Leaf words with this bit set hold a tail's arena offset; the others are answers.
const TAIL: u32 = 1 << 30;
/// The largest answer a trie can hold.
pub(crate) const MAX_VALUE: u32 = TAIL - 1;

/// A node is six words: `vector` (low, high), `leafvec` (low, high), `base0` (arena offset
/// of its first leaf word), `base1` (arena offset of its first child; children are
/// `NODE_WORDS` apart).
const NODE_WORDS: usize = 6;

/// One prefix to compile: network address (host bits clear), length, answer (non-zero).
pub(crate) type Entry<K> = (K, u8, u32);

/// A compiled longest-prefix-match table for one address family.
///
/// A tail is `K::WORDS` words of prefix address, then its answer, the fallback answer (of
/// the prefixes above the slot), and its length.
#[derive(Clone, Debug)]
pub(crate) struct Poptrie<K> {
    direct_bits: u8,
    direct: Box<[u32]>,
    arena: Box<[u32]>,
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
            arena: Vec::new(),
            family: PhantomData,
        };
        for run in runs(entries, 0, direct_bits) {
            let slot = run[0].0.extract(0, direct_bits) as usize;
            let fallback = direct[slot] & MAX_VALUE;
            direct[slot] = match run {
                [only] => NOT_NODE | builder.tail(*only, fallback),
                _ => {
                    let root = builder.prepare(run, direct_bits, fallback);
                    builder.place(vec![root])
                }
            };
        }
        // Offsets share a word with the TAIL and NOT_NODE flags. Reaching 2^30 words (4 GiB)
        // takes some hundred million prefixes, far past any route table or list.
        assert!(
            builder.arena.len() < TAIL as usize,
            "a compiled prefix table is limited to 4 GiB"
        );
        Poptrie {
            direct_bits,
            direct: direct.into_boxed_slice(),
            arena: builder.arena.into_boxed_slice(),
            family: PhantomData,
        }
    }

    /// The answer of the longest prefix covering `key`, or 0.
    #[inline]
    pub(crate) fn lookup(&self, key: K) -> u32 {
        let entry = self.direct[key.extract(0, self.direct_bits) as usize];
        let word = if entry & NOT_NODE != 0 {
            entry & !NOT_NODE
        } else {
            self.descend(key, entry as usize)
        };
        if word & TAIL == 0 {
            return word;
        }
        let at = (word & !TAIL) as usize;
        let tail = &self.arena[at..at + K::WORDS + 3];
        let (answer, fallback, len) = (tail[K::WORDS], tail[K::WORDS + 1], tail[K::WORDS + 2]);
        if key.mask(len as u8) == K::from_words(tail) {
            answer
        } else {
            fallback
        }
    }

    /// The leaf word for `key` below the node at arena offset `at`, which sits right
    /// after the direct table.
    #[inline]
    fn descend(&self, key: K, mut at: usize) -> u32 {
        let mut offset = self.direct_bits;
        loop {
            let node = &self.arena[at..at + NODE_WORDS];
            let vector = u64::from(node[0]) | (u64::from(node[1]) << 32);
            let slot = key.extract(offset, STRIDE);
            let upto = u64::MAX >> (63 - slot);
            if vector & (1u64 << slot) != 0 {
                let rank = (vector & upto).count_ones() as usize - 1;
                at = node[5] as usize + rank * NODE_WORDS;
                offset += STRIDE;
            } else {
                let leafvec = u64::from(node[2]) | (u64::from(node[3]) << 32);
                let rank = (leafvec & upto).count_ones() as usize - 1;
                return self.arena[node[4] as usize + rank];
            }
        }
    }

    /// Heap bytes of the lookup structure (direct table and arena).
    pub(crate) fn heap_bytes(&self) -> usize {
        (self.direct.len() + self.arena.len()) * size_of::<u32>()
    }
}

/// A node whose slots are decided but which has no place in the arena yet.
struct Prepared<'a, K> {
    vector: u64,
    leafvec: u64,
    leaves: Vec<u32>,
    /// The prefixes below each child slot, in slot order, with the slot's answer.
    children: Vec<(&'a [Entry<K>], u32)>,
    /// Bits resolved above the children.
    end: u8,
}

struct Builder<K> {
    arena: Vec<u32>,
    family: PhantomData<K>,
}

impl<K: Bits> Builder<K> {
    /// Writes a tail for a lone prefix; returns its leaf word.
    fn tail(&mut self, (addr, len, answer): Entry<K>, fallback: u32) -> u32 {
        let at = self.arena.len() as u32;
        addr.push_words(&mut self.arena);
        self.arena.extend([answer, fallback, u32::from(len)]);
        TAIL | at
    }

    /// Decides the slots of the node at `offset` bits whose prefixes (all longer than
    /// `offset`, all inside the node) are `entries`; `fallback` is the answer inherited
    /// from the prefixes above. Writes the tails of its lone-prefix slots.
    fn prepare<'a>(
        &mut self,
        entries: &'a [Entry<K>],
        offset: u8,
        fallback: u32,
    ) -> Prepared<'a, K> {
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
        let mut children = Vec::new();
        for run in runs(entries, offset, end) {
            let slot = run[0].0.extract(offset, STRIDE) as usize;
            match run {
                [only] => words[slot] = self.tail(*only, answers[slot]),
                _ => {
                    vector |= 1u64 << slot;
                    children.push((run, answers[slot]));
                }
            }
        }
        let mut leaves = Vec::new();
        let mut leafvec = 0u64;
        let mut last = None;
        for (slot, &word) in words.iter().enumerate() {
            if vector & (1u64 << slot) == 0 && last != Some(word) {
                leafvec |= 1u64 << slot;
                leaves.push(word);
                last = Some(word);
            }
        }
        Prepared {
            vector,
            leafvec,
            leaves,
            children,
            end,
        }
    }

    /// Writes a block of sibling nodes, then their leaves, then (depth first) what lies
    /// below each of them; returns the block's arena offset.
    fn place(&mut self, block: Vec<Prepared<'_, K>>) -> u32 {
        let base = self.arena.len();
        self.arena.resize(base + block.len() * NODE_WORDS, 0);
        for (i, node) in block.iter().enumerate() {
            let base0 = self.arena.len() as u32;
            self.arena.extend_from_slice(&node.leaves);
            let at = base + i * NODE_WORDS;
            self.arena[at..at + 5].copy_from_slice(&[
                node.vector as u32,
                (node.vector >> 32) as u32,
                node.leafvec as u32,
                (node.leafvec >> 32) as u32,
                base0,
            ]);
        }
        for (i, node) in block.into_iter().enumerate() {
            if node.children.is_empty() {
                continue;
            }
            let children = node
                .children
                .iter()
                .map(|&(run, fallback)| self.prepare(run, node.end, fallback))
                .collect();
            self.arena[base + i * NODE_WORDS + 5] = self.place(children);
        }
        base as u32
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
