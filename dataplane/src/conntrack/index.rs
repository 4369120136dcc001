//! The conntrack index: which entry, and which direction of it, a tuple's key belongs to — found by reading one
//! cache line of index plus the entry itself.
//!
//! - **Layout**: open addressing over 64-byte [`Bucket`]s of [`WAYS`] ways. A way holds a 16-bit *tag* (high
//!   bits of the key's hash) and a 32-bit *reference* (`entry id << 1 | direction`). The eight tags are two
//!   64-bit words, matched against a tag four lanes at a time with exact SWAR arithmetic (no branch per way, no
//!   SIMD intrinsics); a tag matches another key's with probability 2^-16 per way, costing one extra entry read. Keys are not stored: a tag
//!   match is confirmed by the caller against the entry it points to (which the caller reads next anyway), so
//!   a lookup costs one index line and the entry, where a general hash map with the 16-byte key inline costs
//!   its control bytes, its bucket and then the entry (three lines, the second dependent on the first).
//! - **Probing**: a key lives in its home bucket (low hash bits) or, when that was full at insertion, in the
//!   next buckets in order. A way is `EMPTY` (never used since the last rebuild), a `TOMBSTONE` (removed) or
//!   live. A bucket that still has an `EMPTY` way has never been full since the last rebuild, so no key was
//!   pushed past it: lookups stop there. Removal empties the way when its bucket has an `EMPTY` way, and leaves
//!   a tombstone otherwise. Insertion reuses the first `EMPTY` or tombstone way on the key's path.
//! - **Growth**: live ways plus tombstones stay at most 3/4 of all ways: beyond that the owner rebuilds the
//!   index from its entries ([`Index::rebuild`], which may double it). At least a quarter of the ways are
//!   therefore `EMPTY`, so every probe ends. The buckets live in memory advised for huge pages
//!   ([`crate::hugepage`]), so a large index costs its cache misses without page walks.
//! - **Hash**: a folded 64×64→128-bit multiply of the key's halves under a per-table random seed, so a sender
//!   cannot choose tuples that all land in one chain without knowing the seed. Placement never shows in any
//!   output (entries are listed in slot order), so replay stays deterministic.
//!
//! Threads: owned by its [`super::Conntrack`]; not shared.

use std::hash::{BuildHasher, Hasher};

/// Ways per bucket: 8 tags and 8 references in one 64-byte cache line.
pub const WAYS: usize = 8;
/// The tag of a way never used since the last rebuild.
const EMPTY: u16 = 0;
/// The tag of a way whose reference was removed.
const TOMBSTONE: u16 = 1;

/// One cache line of the index: way `w`'s tag is lane `w % 4` (bits `16 * (w % 4)`..) of `tags[w / 4]`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u64; 2],
    refs: [u32; WAYS],
}

/// The low bit of every 16-bit lane.
const LANE_LO: u64 = 0x0001_0001_0001_0001;
/// All but the high bit of every lane.
const LANE_LOW15: u64 = 0x7fff_7fff_7fff_7fff;

/// The high bit of every 16-bit lane of `x` that is zero, and no other bit (exact: no borrow crosses lanes).
#[inline(always)]
fn zero_lanes(x: u64) -> u64 {
    !(((x & LANE_LOW15) + LANE_LOW15) | x | LANE_LOW15)
}

/// Ways whose tag is `tag`, as the high bits of their lanes in two words (see [`Bucket::next_way`]).
#[derive(Debug, Clone, Copy)]
struct Ways([u64; 2]);

impl Ways {
    /// Takes the lowest way out of the set.
    #[inline(always)]
    fn next_way(&mut self) -> Option<usize> {
        for (half, m) in self.0.iter_mut().enumerate() {
            if *m != 0 {
                let w = half * 4 + (m.trailing_zeros() / 16) as usize;
                *m &= *m - 1;
                return Some(w);
            }
        }
        None
    }

    #[inline(always)]
    fn any(&self) -> bool {
        self.0[0] | self.0[1] != 0
    }
}

impl Bucket {
    #[inline(always)]
    fn ways_with(&self, tag: u16) -> Ways {
        let pattern = u64::from(tag) * LANE_LO;
        Ways([zero_lanes(self.tags[0] ^ pattern), zero_lanes(self.tags[1] ^ pattern)])
    }

    #[inline(always)]
    fn has_empty(&self) -> bool {
        self.ways_with(EMPTY).any()
    }

    #[inline(always)]
    // Takes way `w`'s 16-bit lane out of a word of four: dropping the other lanes is the intent.
    #[allow(clippy::cast_possible_truncation)]
    fn tag(&self, w: usize) -> u16 {
        (self.tags[w / 4] >> (16 * (w % 4))) as u16
    }

    #[inline(always)]
    fn set_tag(&mut self, w: usize, tag: u16) {
        let shift = 16 * (w % 4);
        let word = &mut self.tags[w / 4];
        *word = (*word & !(0xffff << shift)) | u64::from(tag) << shift;
    }

    /// The first way that is free for an insertion (EMPTY or a tombstone: the lanes that are 0 or 1).
    #[inline(always)]
    fn free_way(&self) -> Option<usize> {
        Ways([zero_lanes(self.tags[0] & !LANE_LO), zero_lanes(self.tags[1] & !LANE_LO)]).next_way()
    }
}

/// A key's hash: the bucket it starts in and the tag it is stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hash(u64);

impl Hash {
    #[inline]
    fn tag(self) -> u16 {
        // Tags 0 and 1 are the EMPTY and TOMBSTONE markers.
        ((self.0 >> 48) as u16).max(2)
    }

    /// The home bucket in a table of `mask + 1` buckets.
    #[inline(always)]
    // Only the low bits select a bucket, so a `usize` narrower than the hash (a 32-bit target) loses nothing.
    #[allow(clippy::cast_possible_truncation)]
    fn bucket(self, mask: usize) -> usize {
        self.0 as usize & mask
    }
}

/// The index. See the module documentation.
#[derive(Debug, Clone)]
pub struct Index {
    buckets: Vec<Bucket>,
    /// `buckets.len() - 1` (a power of two minus one).
    mask: usize,
    /// Live references.
    live: usize,
    /// Tombstone ways.
    tombstones: usize,
    /// The smallest size a rebuild may shrink to, in buckets.
    min_buckets: usize,
    seed: [u64; 2],
}

impl Index {
    /// An empty index with room for `keys` references before its first rebuild.
    pub fn with_capacity(keys: usize) -> Index {
        let s = std::collections::hash_map::RandomState::new();
        let mut h = s.build_hasher();
        h.write_u64(0x5157_4954_4348);
        let a = h.finish();
        h.write_u64(a);
        let b = h.finish();
        Index::with_seed(keys, [a, b])
    }

    /// As [`Index::with_capacity`] with a given seed (tests).
    pub fn with_seed(keys: usize, seed: [u64; 2]) -> Index {
        let n = buckets_for(keys);
        let buckets = crate::hugepage::filled(n, Bucket::default());
        Index { buckets, mask: n - 1, live: 0, tombstones: 0, min_buckets: n, seed }
    }

    /// The hash of `key`.
    #[inline]
    // Splits 128-bit values into their 64-bit halves: dropping the other half is the intent.
    #[allow(clippy::cast_possible_truncation)]
    pub fn hash(&self, key: u128) -> Hash {
        let (lo, hi) = (key as u64, (key >> 64) as u64);
        let x = u128::from(lo ^ self.seed[0]).wrapping_mul(u128::from(hi ^ self.seed[1]));
        let h = (x as u64) ^ ((x >> 64) as u64);
        // One more multiply spreads every input bit over the low (bucket) bits as well as the high (tag) ones.
        let y = u128::from(h ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(u128::from(0xff51_afd7_ed55_8ccd_u64));
        Hash((y as u64) ^ ((y >> 64) as u64))
    }

    /// The reference stored under `h` for which `is_key` (which checks the referenced entry's key) holds.
    #[inline(always)]
    pub fn find(&self, h: Hash, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = h.tag();
        let mut b = h.bucket(self.mask);
        loop {
            let bucket = &self.buckets[b & self.mask];
            let mut hits = bucket.ways_with(tag);
            while let Some(w) = hits.next_way() {
                let r = bucket.refs[w % WAYS];
                if is_key(r) {
                    return Some(r);
                }
            }
            if bucket.has_empty() {
                return None;
            }
            b = b.wrapping_add(1);
        }
    }

    /// Hands `f` every reference in `h`'s home bucket whose tag matches (candidates for the key, unconfirmed):
    /// for prefetching the entries a lookup will read.
    #[inline]
    pub fn candidates(&self, h: Hash, mut f: impl FnMut(u32)) {
        let bucket = &self.buckets[h.bucket(self.mask)];
        let mut hits = bucket.ways_with(h.tag());
        while let Some(w) = hits.next_way() {
            f(bucket.refs[w % WAYS]);
        }
    }

    /// Asks the CPU to start loading `h`'s home bucket (a hint; see [`crate::buffer::prefetch`]).
    #[inline]
    pub fn prefetch(&self, h: Hash) {
        crate::buffer::prefetch(&self.buckets[h.bucket(self.mask)]);
    }

    /// True when `more` references do not fit without a [`Index::rebuild`].
    #[inline]
    pub fn needs_rebuild(&self, more: usize) -> bool {
        (self.live + self.tombstones + more) * 4 > self.buckets.len() * WAYS * 3
    }

    /// Stores reference `r` under `h`. The key must not be indexed already, and there must be room (see
    /// [`Index::needs_rebuild`]).
    #[inline]
    pub fn insert(&mut self, h: Hash, r: u32) {
        debug_assert!(!self.needs_rebuild(1), "insert without room");
        let mut b = h.bucket(self.mask);
        loop {
            let bucket = &mut self.buckets[b];
            if let Some(w) = bucket.free_way() {
                if bucket.tag(w) == TOMBSTONE {
                    self.tombstones -= 1;
                }
                bucket.set_tag(w, h.tag());
                bucket.refs[w] = r;
                self.live += 1;
                return;
            }
            b = (b + 1) & self.mask;
        }
    }

    /// Removes reference `r` stored under `h`; false if it is not there.
    #[inline]
    pub fn remove(&mut self, h: Hash, r: u32) -> bool {
        let tag = h.tag();
        let mut b = h.bucket(self.mask);
        loop {
            let bucket = &mut self.buckets[b];
            if let Some(w) = (0..WAYS).find(|&w| bucket.tag(w) == tag && bucket.refs[w] == r) {
                // A bucket with an EMPTY way was never full, so no probe goes past it: the way can be EMPTY too.
                if bucket.has_empty() {
                    bucket.set_tag(w, EMPTY);
                } else {
                    bucket.set_tag(w, TOMBSTONE);
                    self.tombstones += 1;
                }
                bucket.refs[w] = 0;
                self.live -= 1;
                return true;
            }
            if bucket.has_empty() {
                return false;
            }
            b = (b + 1) & self.mask;
        }
    }

    /// Rebuilds the index from every `(key, reference)` of its owner, sized for them plus `more`: no tombstones
    /// left, and at most half the ways used (never smaller than it was made).
    pub fn rebuild(&mut self, items: impl Iterator<Item = (u128, u32)>, live: usize, more: usize) {
        let n = buckets_for(live + more).max(self.min_buckets);
        if n > self.buckets.capacity() {
            // A new allocation, advised for huge pages before it is written (see `crate::hugepage`).
            self.buckets = crate::hugepage::filled(n, Bucket::default());
        } else {
            self.buckets.clear();
            self.buckets.resize(n, Bucket::default());
        }
        self.mask = n - 1;
        self.live = 0;
        self.tombstones = 0;
        for (k, r) in items {
            let h = self.hash(k);
            self.insert(h, r);
        }
    }

    /// Removes every reference, keeping the index's size (a table that was this big will likely be again).
    pub fn clear(&mut self) {
        self.buckets.fill(Bucket::default());
        self.live = 0;
        self.tombstones = 0;
    }

    /// Live references.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Checks the counts against the ways and that the probing rule holds for every live reference:
    /// `key_of(r)` gives the key reference `r` stands for.
    pub fn check(&self, key_of: impl Fn(u32) -> Option<u128>) -> Result<(), String> {
        let (mut live, mut tombs) = (0, 0);
        for (b, bucket) in self.buckets.iter().enumerate() {
            for w in 0..WAYS {
                match bucket.tag(w) {
                    EMPTY => {}
                    TOMBSTONE => tombs += 1,
                    t => {
                        live += 1;
                        let r = bucket.refs[w];
                        let Some(k) = key_of(r) else { return Err(format!("index ref {r:#x} dangles")) };
                        let h = self.hash(k);
                        if h.tag() != t {
                            return Err(format!("index ref {r:#x} under tag {t:#x}, its key hashes to {:#x}", h.tag()));
                        }
                        // Every bucket from the home one up to this one must be without EMPTY ways.
                        let mut p = h.bucket(self.mask);
                        while p != b {
                            if self.buckets[p].has_empty() {
                                return Err(format!("index ref {r:#x} in bucket {b} past bucket {p} with a free way"));
                            }
                            p = (p + 1) & self.mask;
                        }
                    }
                }
            }
        }
        if live != self.live || tombs != self.tombstones {
            return Err(format!("index counts {}/{} but holds {live}/{tombs}", self.live, self.tombstones));
        }
        Ok(())
    }
}

/// Buckets for `keys` references at no more than half the ways (a power of two, at least 2).
fn buckets_for(keys: usize) -> usize {
    (keys.saturating_mul(2) / WAYS).max(2).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A little owner: keys by reference, as the conntrack's entries are.
    struct Owner {
        index: Index,
        keys: HashMap<u32, u128>,
    }

    impl Owner {
        fn new(cap: usize) -> Owner {
            Owner { index: Index::with_seed(cap, [1, 2]), keys: HashMap::new() }
        }
        fn find(&self, k: u128) -> Option<u32> {
            self.index.find(self.index.hash(k), |r| self.keys.get(&r) == Some(&k))
        }
        fn insert(&mut self, k: u128, r: u32) {
            if self.index.needs_rebuild(1) {
                let items: Vec<_> = self.keys.iter().map(|(&r, &k)| (k, r)).collect();
                self.index.rebuild(items.into_iter(), self.keys.len(), 1);
            }
            self.index.insert(self.index.hash(k), r);
            self.keys.insert(r, k);
        }
        fn remove(&mut self, r: u32) -> bool {
            let Some(k) = self.keys.remove(&r) else { return false };
            self.index.remove(self.index.hash(k), r)
        }
        fn check(&self) {
            self.index.check(|r| self.keys.get(&r).copied()).unwrap();
            assert_eq!(self.index.len(), self.keys.len());
        }
    }

    /// Keys whose hashes share a home bucket in an index of `buckets` buckets, `n` of them.
    fn colliding(index: &Index, n: usize) -> Vec<u128> {
        let home = |k: u128| index.hash(k).0 as usize & index.mask;
        let want = home(0);
        (0u128..).filter(|&k| home(k) == want).take(n).collect()
    }

    #[test]
    fn a_full_home_bucket_spills_into_the_next_and_lookups_follow() {
        let mut o = Owner::new(64);
        let keys = colliding(&o.index, 3 * WAYS);
        for (r, &k) in keys.iter().enumerate() {
            o.insert(k, r as u32);
        }
        o.check();
        for (r, &k) in keys.iter().enumerate() {
            assert_eq!(o.find(k), Some(r as u32), "key {k}");
        }
        // Removing from the full home bucket leaves tombstones: the spilled keys are still found.
        for r in 0..WAYS as u32 {
            assert!(o.remove(r));
        }
        assert_eq!(o.index.tombstones, WAYS);
        o.check();
        for (r, &k) in keys.iter().enumerate().skip(WAYS) {
            assert_eq!(o.find(k), Some(r as u32));
        }
        assert_eq!(o.find(keys[0]), None);
        // New keys reuse the tombstones.
        o.insert(keys[0], 100);
        assert_eq!(o.index.tombstones, WAYS - 1);
        assert_eq!(o.find(keys[0]), Some(100));
        o.check();
    }

    #[test]
    fn removal_from_a_bucket_never_full_leaves_no_tombstone() {
        let mut o = Owner::new(64);
        let keys = colliding(&o.index, 3);
        for (r, &k) in keys.iter().enumerate() {
            o.insert(k, r as u32);
        }
        assert!(o.remove(1));
        assert_eq!(o.index.tombstones, 0);
        assert_eq!(o.find(keys[2]), Some(2));
        assert!(!o.remove(1), "already removed");
        o.check();
    }

    #[test]
    fn a_tag_match_with_another_key_is_not_a_hit() {
        let mut o = Owner::new(64);
        o.insert(7, 1);
        let h = o.index.hash(7);
        // The same hash but an owner that says the entry holds another key: no hit.
        assert_eq!(o.index.find(h, |_| false), None);
        let mut seen = vec![];
        o.index.candidates(h, |r| seen.push(r));
        assert_eq!(seen, [1]);
    }

    #[test]
    fn grows_by_rebuilding_and_keeps_every_key() {
        let mut o = Owner::new(4);
        let before = o.index.buckets.len();
        for r in 0..10_000u32 {
            o.insert(u128::from(r) * 0x1_0000_0001 + 5, r);
        }
        assert!(o.index.buckets.len() > before);
        o.check();
        for r in 0..10_000u32 {
            assert_eq!(o.find(u128::from(r) * 0x1_0000_0001 + 5), Some(r));
        }
    }

    #[test]
    fn churn_does_not_grow_an_index_of_constant_size() {
        // Insert and remove forever with 100 live keys: tombstones are cleared by same-size rebuilds.
        let mut o = Owner::new(128);
        let size = o.index.buckets.len();
        for r in 0..100_000u32 {
            o.insert(u128::from(r).wrapping_mul(0x9e37_79b9_7f4a_7c15_1234), r);
            if r >= 100 {
                assert!(o.remove(r - 100));
            }
        }
        assert_eq!(o.index.buckets.len(), size);
        o.check();
    }

    #[test]
    fn clear_forgets_everything_and_keeps_the_size() {
        let mut o = Owner::new(4);
        for r in 0..1000u32 {
            o.insert(u128::from(r) + 1, r);
        }
        let size = o.index.buckets.len();
        o.index.clear();
        o.keys.clear();
        assert_eq!((o.index.len(), o.index.buckets.len()), (0, size));
        assert_eq!(o.find(1), None);
        o.insert(1, 7);
        assert_eq!(o.find(1), Some(7));
        o.check();
    }

    #[test]
    fn seeds_change_placement() {
        let (a, b) = (Index::with_seed(64, [1, 2]), Index::with_seed(64, [3, 4]));
        assert!((0..64u128).any(|k| a.hash(k) != b.hash(k)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Remove(u16),
    }

    proptest! {
        /// The four-lanes-at-a-time tag match finds exactly the ways whose tag is the one sought, in order.
        #[test]
        fn tag_matching_is_exact(tags in proptest::array::uniform8(prop_oneof![0u16..4, any::<u16>()]), pick in 0usize..9) {
            let mut b = Bucket::default();
            for (w, &t) in tags.iter().enumerate() {
                b.set_tag(w, t);
            }
            for (w, &t) in tags.iter().enumerate() {
                prop_assert_eq!(b.tag(w), t);
            }
            let tag = if pick < WAYS { tags[pick] } else { 0x8000 };
            let mut found = vec![];
            let mut ways = b.ways_with(tag);
            while let Some(w) = ways.next_way() {
                found.push(w);
            }
            let want: Vec<usize> = (0..WAYS).filter(|&w| tags[w] == tag).collect();
            prop_assert_eq!(found, want);
            prop_assert_eq!(b.has_empty(), tags.contains(&EMPTY));
            let free = (0..WAYS).find(|&w| tags[w] == EMPTY || tags[w] == TOMBSTONE);
            prop_assert_eq!(b.free_way(), free);
        }

        /// Against a model: after any sequence of inserts and removals of keys drawn from a small set (so that
        /// they collide and churn), every present key is found with its reference, absent ones are not, and the
        /// index's own invariants hold.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(
            prop_oneof![(0u16..300).prop_map(Op::Insert), (0u16..300).prop_map(Op::Remove)], 1..400)) {
            let mut o = Owner::new(8);
            // A tiny key space mapped to keys that share few home buckets.
            let key = |i: u16| u128::from(i % 37) << 64 | u128::from(i);
            let mut model: HashMap<u16, u32> = HashMap::new();
            let mut next = 0u32;
            for op in ops {
                match op {
                    Op::Insert(i) => {
                        if let std::collections::hash_map::Entry::Vacant(v) = model.entry(i) {
                            v.insert(next);
                            o.insert(key(i), next);
                            next += 1;
                        }
                    }
                    Op::Remove(i) => {
                        if let Some(r) = model.remove(&i) {
                            prop_assert!(o.remove(r));
                        }
                    }
                }
                o.check();
            }
            for i in 0..300u16 {
                prop_assert_eq!(o.find(key(i)), model.get(&i).copied());
            }
        }
    }
}
