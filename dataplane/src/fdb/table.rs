//! The MAC table's storage: a hash table whose lookups read one cache line, and whose lines a batch can ask
//! the CPU to load before it handles any frame ([`MacTable::prefetch`]).
//!
//! - **Layout**: open addressing over 64-byte [`Bucket`]s of [`WAYS`] 32-byte [`Slot`]s. A slot holds the
//!   address (48 bits) and a 16-bit *tag* in one word — `0` empty (never used since the last rebuild), `1` a
//!   tombstone (removed), `port + 2` a live entry on `port` — then the entry's three times. Key, port and times
//!   share the line, so a lookup or a refresh reads and writes that one line: a general hash map reads its
//!   control bytes and then its bucket (two lines, the second dependent on the first) and cannot say where
//!   either is before it probes, so a batch could not prefetch them.
//! - **Probing**: an address lives in its home bucket (low hash bits) or, when that was full at insertion, in
//!   the next buckets in order. A bucket that still has an empty slot has never been full since the last
//!   rebuild, so no address was pushed past it: lookups stop there. Removal empties the slot when its bucket
//!   has an empty slot, and leaves a tombstone otherwise. Insertion takes the first empty or tombstone slot
//!   on the address's path.
//! - **Growth**: live slots plus tombstones stay at most half of all slots; beyond that the table is rebuilt
//!   for its live entries at no more than a quarter of the slots, rounded up to a power of two (from half
//!   full by live entries alone that is four times as many slots; with many tombstones, the same size or
//!   smaller, never below the size it was made with). More than half the slots are therefore empty and every
//!   probe ends; at a quarter full about 3 % of the addresses sit past their home line, at half full about
//!   11 %, and each of those is a second, dependent miss in a large table: doubling instead of quadrupling
//!   made a million addresses slower (`bench/README.md`, Flat cost at scale). The buckets live in memory advised
//!   for huge pages ([`crate::hugepage`]): a table of a million addresses (128 MiB, a quarter full) then costs
//!   one cache miss per lookup, not a miss and a page walk.
//! - **Hash**: a folded 64×64→128-bit multiply of the address under a per-table random seed, so a sender
//!   cannot choose source addresses that all land in one chain without knowing the seed. Placement never shows
//!   in any output (listings are sorted; eviction follows the owner's FIFO), so replay stays deterministic.
//!
//! Threads: owned by its [`super::Fdb`]; not shared.

use crate::ids::{Nanos, PortId};
use std::hash::{BuildHasher, Hasher};

/// Slots per bucket: two 32-byte slots fill one 64-byte cache line.
pub const WAYS: usize = 2;
/// The tag of a slot never used since the last rebuild.
const EMPTY: u64 = 0;
/// The tag of a slot whose entry was removed.
const TOMBSTONE: u64 = 1;
/// The low 48 bits of a slot's word: the address.
const MAC_BITS: u64 = (1 << 48) - 1;
/// The largest port id a slot can hold (tags 0 and 1 are taken).
pub const MAX_PORT: PortId = PortId::MAX - 2;

/// One learned address: where it was seen and when (see [`super::Fdb`] for what the times mean).
#[derive(Debug, Clone, Copy, Default)]
pub struct Slot {
    /// The address in the low 48 bits, the tag in the high 16.
    word: u64,
    /// When the address was last seen.
    pub last_seen: Nanos,
    /// `last_seen` when the entry's current record was queued on its port's FIFO.
    pub queued: Nanos,
    /// When the entry was last told to the other workers' replicas.
    pub announced: Nanos,
}

impl Slot {
    #[inline(always)]
    fn tag(&self) -> u64 {
        self.word >> 48
    }

    #[inline(always)]
    fn is_live(&self) -> bool {
        self.tag() > TOMBSTONE
    }

    #[inline(always)]
    fn holds(&self, mac: u64) -> bool {
        self.word & MAC_BITS == mac && self.is_live()
    }

    /// The address (48 bits).
    #[inline(always)]
    pub fn mac(&self) -> u64 {
        self.word & MAC_BITS
    }

    /// The port the address is on.
    #[inline(always)]
    pub fn port(&self) -> PortId {
        // A live tag is `port + 2` with `port <= MAX_PORT`: the difference fits a PortId.
        #[allow(clippy::cast_possible_truncation)]
        let port = (self.tag() - 2) as PortId;
        port
    }

    /// Moves the entry to `port` (at most [`MAX_PORT`]).
    #[inline(always)]
    pub fn set_port(&mut self, port: PortId) {
        self.word = self.mac() | (u64::from(port) + 2) << 48;
    }
}

/// One cache line of the table.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    slots: [Slot; WAYS],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

impl Bucket {
    #[inline(always)]
    fn has_empty(&self) -> bool {
        self.slots.iter().any(|s| s.tag() == EMPTY)
    }
}

/// An address's hash: the bucket it starts in. Depends only on the address and the table's seed, so it stays
/// valid across inserts, removals and rebuilds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MacHash(u64);

/// The table. See the module documentation.
#[derive(Debug, Clone)]
pub struct MacTable {
    buckets: Vec<Bucket>,
    /// `buckets.len() - 1` (a power of two minus one).
    mask: usize,
    live: usize,
    tombstones: usize,
    /// The smallest size a rebuild may shrink to, in buckets.
    min_buckets: usize,
    seed: [u64; 2],
}

/// Buckets for `entries` at no more than a quarter of the slots (a power of two, at least 2), so they can
/// double before the next rebuild.
fn buckets_for(entries: usize) -> usize {
    (entries.saturating_mul(4) / WAYS).next_power_of_two().max(2)
}

impl MacTable {
    /// An empty table with room for `entries` addresses before its first rebuild.
    pub fn with_capacity(entries: usize) -> MacTable {
        let s = std::collections::hash_map::RandomState::new();
        let mut h = s.build_hasher();
        h.write_u64(0x4644_4221);
        let a = h.finish();
        h.write_u64(a);
        let b = h.finish();
        MacTable::with_seed(entries, [a, b | 1])
    }

    /// As [`MacTable::with_capacity`] with a given seed (tests).
    pub fn with_seed(entries: usize, seed: [u64; 2]) -> MacTable {
        let n = buckets_for(entries);
        MacTable {
            buckets: crate::hugepage::filled(n, Bucket::default()),
            mask: n - 1,
            live: 0,
            tombstones: 0,
            min_buckets: n,
            seed,
        }
    }

    /// The hash of address `mac` (48 bits).
    #[inline(always)]
    // Splits a 128-bit product into its 64-bit halves: dropping the other half is the intent.
    #[allow(clippy::cast_possible_truncation)]
    pub fn hash(&self, mac: u64) -> MacHash {
        let x = u128::from(mac ^ self.seed[0]).wrapping_mul(u128::from(self.seed[1]));
        MacHash((x as u64) ^ ((x >> 64) as u64))
    }

    #[inline(always)]
    // Only the low bits select a bucket, so a `usize` narrower than the hash loses nothing.
    #[allow(clippy::cast_possible_truncation)]
    fn home(&self, h: MacHash) -> usize {
        h.0 as usize & self.mask
    }

    /// Asks the CPU to start loading `h`'s home bucket (a hint; see [`crate::buffer::prefetch`]).
    #[inline(always)]
    pub fn prefetch(&self, h: MacHash) {
        crate::buffer::prefetch(&self.buckets[self.home(h)]);
    }

    /// Where `mac` (whose hash is `h`) is: (bucket, way).
    #[inline(always)]
    fn position(&self, mac: u64, h: MacHash) -> Option<(usize, usize)> {
        let mut b = self.home(h);
        loop {
            let bucket = &self.buckets[b];
            for (w, s) in bucket.slots.iter().enumerate() {
                if s.holds(mac) {
                    return Some((b, w));
                }
            }
            if bucket.has_empty() {
                return None;
            }
            b = (b + 1) & self.mask;
        }
    }

    /// The entry of `mac` (hash `h`).
    #[inline(always)]
    pub fn get(&self, mac: u64, h: MacHash) -> Option<&Slot> {
        let (b, w) = self.position(mac, h)?;
        Some(&self.buckets[b].slots[w])
    }

    /// The entry of `mac` (hash `h`), to change its times or port.
    #[inline(always)]
    pub fn get_mut(&mut self, mac: u64, h: MacHash) -> Option<&mut Slot> {
        let (b, w) = self.position(mac, h)?;
        Some(&mut self.buckets[b].slots[w])
    }

    /// Adds `mac` (hash `h`, not in the table) on `port` (at most [`MAX_PORT`]) seen at `now`, rebuilding first
    /// when the table is at its load limit.
    pub fn insert(&mut self, mac: u64, h: MacHash, port: PortId, now: Nanos) {
        debug_assert!(self.position(mac, h).is_none(), "insert of a present address");
        debug_assert!(port <= MAX_PORT);
        if (self.live + self.tombstones + 1) * 2 > self.buckets.len() * WAYS {
            self.rebuild();
        }
        let slot =
            Slot { word: (mac & MAC_BITS) | (u64::from(port) + 2) << 48, last_seen: now, queued: now, announced: now };
        self.place(h, slot);
    }

    /// Puts `slot` in the first free slot on `h`'s path (there is room: see the growth rule).
    fn place(&mut self, h: MacHash, slot: Slot) {
        let mut b = self.home(h);
        loop {
            let bucket = &mut self.buckets[b];
            if let Some(s) = bucket.slots.iter_mut().find(|s| !s.is_live()) {
                if s.tag() == TOMBSTONE {
                    self.tombstones -= 1;
                }
                *s = slot;
                self.live += 1;
                return;
            }
            b = (b + 1) & self.mask;
        }
    }

    /// Removes `mac` (hash `h`); returns its entry.
    pub fn remove(&mut self, mac: u64, h: MacHash) -> Option<Slot> {
        let (b, w) = self.position(mac, h)?;
        Some(self.clear_at(b, w))
    }

    /// Empties slot `w` of bucket `b` (live), by the removal rule; returns what it held.
    fn clear_at(&mut self, b: usize, w: usize) -> Slot {
        let bucket = &mut self.buckets[b];
        let old = bucket.slots[w];
        // A bucket with an empty slot was never full, so no probe goes past it: the slot can be empty too.
        bucket.slots[w] = if bucket.has_empty() {
            Slot::default()
        } else {
            self.tombstones += 1;
            Slot { word: TOMBSTONE << 48, ..Slot::default() }
        };
        self.live -= 1;
        old
    }

    /// Keeps the entries for which `keep(entry)` holds, removing the others; rebuilds when tombstones then
    /// outnumber the live entries.
    pub fn retain(&mut self, mut keep: impl FnMut(&Slot) -> bool) {
        for b in 0..self.buckets.len() {
            for w in 0..WAYS {
                let s = self.buckets[b].slots[w];
                if s.is_live() && !keep(&s) {
                    self.clear_at(b, w);
                }
            }
        }
        if self.tombstones > self.live {
            self.rebuild();
        }
    }

    /// Every live entry, in table order (which depends on the seed: callers sort what they show).
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.buckets.iter().flat_map(|b| b.slots.iter()).filter(|s| s.is_live())
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Rebuilds the table without tombstones, sized for its entries at no more than a quarter of the slots
    /// (never below the size it was made with).
    fn rebuild(&mut self) {
        let n = buckets_for(self.live + 1).max(self.min_buckets);
        let old = std::mem::replace(&mut self.buckets, crate::hugepage::filled(n, Bucket::default()));
        self.mask = n - 1;
        self.live = 0;
        self.tombstones = 0;
        for s in old.iter().flat_map(|b| b.slots.iter()).filter(|s| s.is_live()) {
            let h = self.hash(s.mac());
            self.place(h, *s);
        }
    }

    /// Checks the counts against the slots and that every live entry is on its hash's path with no bucket
    /// with an empty slot before it (tests).
    #[cfg(test)]
    pub fn check(&self) -> Result<(), String> {
        let (mut live, mut tombs) = (0, 0);
        for (b, bucket) in self.buckets.iter().enumerate() {
            for s in &bucket.slots {
                match s.tag() {
                    EMPTY => {}
                    TOMBSTONE => tombs += 1,
                    _ => {
                        live += 1;
                        let mut p = self.home(self.hash(s.mac()));
                        while p != b {
                            if self.buckets[p].has_empty() {
                                return Err(format!("{:x} in bucket {b} past bucket {p} with an empty slot", s.mac()));
                            }
                            p = (p + 1) & self.mask;
                        }
                    }
                }
            }
        }
        if (live, tombs) != (self.live, self.tombstones) {
            return Err(format!("counts {}/{} but holds {live}/{tombs}", self.live, self.tombstones));
        }
        if (live + tombs) * 2 > self.buckets.len() * WAYS {
            return Err(format!("{live} live + {tombs} tombstones over half of {} slots", self.buckets.len() * WAYS));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn a_bucket_is_one_cache_line_and_a_slot_half_of_one() {
        assert_eq!((std::mem::size_of::<Bucket>(), std::mem::align_of::<Bucket>()), (64, 64));
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }

    #[test]
    fn colliding_addresses_chain_past_full_buckets_and_removal_keeps_them_reachable() {
        // A 2-bucket table (room for 1 entry before it grows): every address collides with another.
        let mut t = MacTable::with_seed(0, [1, 3]);
        for mac in 0..200u64 {
            let h = t.hash(mac);
            t.insert(mac, h, (mac % 7) as PortId, mac);
            t.check().unwrap();
        }
        for mac in (0..200u64).step_by(2) {
            let h = t.hash(mac);
            assert_eq!(t.remove(mac, h).map(|s| s.last_seen), Some(mac));
            t.check().unwrap();
        }
        for mac in 0..200u64 {
            let h = t.hash(mac);
            assert_eq!(t.get(mac, h).map(|s| s.port()), (mac % 2 == 1).then_some((mac % 7) as PortId), "{mac}");
        }
        assert_eq!(t.len(), 100);
        t.retain(|s| s.mac() % 4 == 1);
        t.check().unwrap();
        assert_eq!(t.len(), 50);
        assert!(t.iter().all(|s| s.mac() % 4 == 1));
    }

    #[test]
    fn the_largest_port_and_address_round_trip() {
        let mut t = MacTable::with_seed(4, [7, 9]);
        let mac = MAC_BITS;
        let h = t.hash(mac);
        t.insert(mac, h, MAX_PORT, 5);
        let s = t.get_mut(mac, h).unwrap();
        assert_eq!((s.mac(), s.port()), (mac, MAX_PORT));
        s.set_port(0);
        assert_eq!(t.get(mac, h).unwrap().port(), 0);
        assert!(t.get(0, t.hash(0)).is_none(), "address 0 is not a live entry of empty slots");
    }

    proptest! {
        /// Random inserts, removals and retains against a `HashMap`, in a tiny seeded table so chains, tombstones
        /// and rebuilds all happen.
        #[test]
        fn matches_a_hash_map(ops in proptest::collection::vec((0u8..4, 0u64..64, 0u16..8), 1..400), seed in any::<u64>()) {
            let mut t = MacTable::with_seed(1, [seed, seed.rotate_left(17) | 1]);
            let mut m: HashMap<u64, (PortId, Nanos)> = HashMap::new();
            for (i, (op, mac, port)) in ops.into_iter().enumerate() {
                let now = i as Nanos;
                let h = t.hash(mac);
                match op {
                    0 | 1 => {
                        if let Some(s) = t.get_mut(mac, h) {
                            s.set_port(port);
                            s.last_seen = now;
                        } else {
                            t.insert(mac, h, port, now);
                        }
                        m.insert(mac, (port, now));
                    }
                    2 => prop_assert_eq!(t.remove(mac, h).map(|s| (s.port(), s.last_seen)), m.remove(&mac)),
                    _ => {
                        t.retain(|s| s.mac() % 3 != mac % 3);
                        m.retain(|k, _| k % 3 != mac % 3);
                    }
                }
                t.check().map_err(TestCaseError::fail)?;
                prop_assert_eq!(t.len(), m.len());
            }
            for (mac, (port, seen)) in &m {
                let s = t.get(*mac, t.hash(*mac));
                prop_assert_eq!(s.map(|s| (s.port(), s.last_seen)), Some((*port, *seen)));
            }
            prop_assert_eq!(t.iter().count(), m.len());
        }
    }
}
