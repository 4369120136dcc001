//! The IPv4 forwarding information base (FIB): longest-prefix match from a destination address to a next hop.
//!
//! [`Fib`] owns a set of routes, each an [`Ipv4Net`] prefix mapped to a [`NextHopId`]: a 24-bit index into a
//! next-hop table that the router owns (gateway, egress port, …). Keeping the leaves 4-byte indices keeps the
//! lookup tables small and lets the router change a next hop (say, a gateway's port) without touching the FIB.
//!
//! # Structure: DIR-16-8-8
//!
//! Two parts, kept in step by every [`Fib::insert`] and [`Fib::remove`]:
//!
//! - **The route set** (control side): a `BTreeMap` from prefix to next hop. It answers the exact operations
//!   ([`Fib::get`], [`Fib::iter`] in prefix order, [`Fib::len`]) and finds the covering route that a removed
//!   route falls back to.
//! - **The lookup tables** (data side), a multibit trie with fixed strides of 16, 8 and 8 bits — DIR-24-8
//!   (Gupta, Lin and McKeown, "Routing lookups in hardware at memory access speeds", and DPDK's `rte_lpm`)
//!   with a 16-bit first stride. Level 1 is an array of 2^16 `u32` entries indexed by the top 16 address bits;
//!   levels 2 and 3 are 256-entry chunks from one pool, indexed by the next 8 bits. Every entry is empty, a
//!   *leaf* (next hop plus the length of the prefix it came from, its *depth*), or *extended* (the index of
//!   the chunk one level down). A prefix of length `len` is expanded into every entry it covers at the level
//!   where `len` ends (`2^(16 - len)` level-1 entries, or `2^(24 - len)` / `2^(32 - len)` chunk entries),
//!   overwriting only entries whose depth is at most `len`, so longer prefixes keep theirs whatever the
//!   insertion order. Removing a prefix rewrites the entries whose depth is exactly its length (only that
//!   prefix can have put them there) with the leaf of its longest covering route, or empty if none. A chunk
//!   whose 256 entries become one identical leaf is folded back into its parent entry and its slot reused.
//!
//! **Lookup** ([`Fib::lookup`]) is one level-1 read, plus one chunk read if the address falls under a prefix
//! longer than /16, plus one more if it falls under a prefix longer than /24: at most 3 dependent memory
//! accesses, no branches beyond those two tests, no allocation, no hashing. **Updates** cost `O(log n)` in the
//! route set plus the entries expanded: at most 256 for a prefix longer than /16; a short prefix also visits
//! the chunks below its range (a /0 on a full table rewrites everything), which is why bulk loads should insert
//! shorter prefixes first (as [`Fib::from_iter`] does).
//!
//! **Memory**: 256 KiB for level 1, allocated (zeroed, so the OS maps pages on first write) when the `Fib` is
//! created; plus 1 KiB per chunk: one per /16 that holds a prefix longer than /16, and one per /24 that holds
//! a prefix longer than /24 (see [`Fib::table_bytes`]). Uniformly random prefixes are the worst case (nearly
//! every one lands in a /16 of its own); with `bench/benches/lpm.rs`'s mix (mostly /24, 5% longer than /24) the
//! lookup tables take 272 KiB for 10 routes, 16 MiB for 10k, 64 MiB for 100k and 128 MiB for 1M (pool capacity;
//! about 113 MiB in use: a chunk under each of the 65,536 /16s plus ~50k for the routes longer than /24). Real
//! tables cluster in allocated space and need fewer chunks. The route set adds an estimated 15–25 bytes per
//! route (B-tree nodes of up to 11 five-byte keys and four-byte values).
//!
//! Why 16-8-8 rather than DIR-24-8's 2^24-entry first level: a 64 MiB first level would make every `Fib` cost
//! 64 MiB as soon as a short prefix (a default route) is installed — too much for a test suite creating many
//! tables — and random lookups in a small table would miss the caches and TLB for nothing. With 16-8-8 a small
//! table sits in L2 cache, an address whose /16 holds no longer prefix is one access, and a /17–/24 match is two; in a 1M-route
//! table the extra access is to the 256 KiB level 1, which stays cache-resident, so the cost is still about one
//! DRAM (and TLB) miss per lookup, as with DIR-24-8. Routes longer than /24 take a third access, as in
//! DIR-24-8's second. Measured with `cargo bench -p bench --bench lpm` on a shared 2-vCPU KVM guest (4 KiB
//! pages, independent lookups), quietest run, uniform / routed destinations: 558 / 308 M lookups/s with 10
//! routes, 207 / 93 M/s with 10k, 25 / 28 M/s with 100k, 17 / 15 M/s with 1M (runs under load from parallel
//! builds were up to 2× slower). From 100k routes on the chunks no longer fit the caches, and with 4 KiB pages
//! each miss is likely a TLB miss too: the chunk pool is therefore grown in memory advised for transparent huge
//! pages ([`crate::hugepage`]), so a lookup in a large table costs its cache misses without page walks.
//!
//! Limits: next-hop indices up to [`NextHopId::MAX`] (2^24 - 1), and 2^24 chunks (16 GiB: memory runs out
//! first). Chunk slots freed by removals are reused but the pool does not shrink; build a fresh `Fib` to compact.
//!
//! # Threads
//!
//! A `Fib` is plain data (`Send + Sync`). It is built and changed on the control side (`&mut self`) and read by
//! workers through `&self`: the router publishes it as an immutable snapshot behind an `Arc` (swapped at batch
//! boundaries), changing a private copy ([`Clone`]) and publishing that. Lookups never write.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// The prefix type of the FIB's API, re-exported so that callers need no `ipnet` dependency of their own.
pub use ipnet::Ipv4Net;

/// Entry flag: the entry points to a chunk one level down (its payload is the chunk index).
const EXT: u32 = 1 << 31;
/// Entry flag: the entry is a leaf holding a route (its payload is the next hop, with the route's depth).
const VALID: u32 = 1 << 30;
/// Where a leaf keeps the length (0..=32) of the prefix it came from.
const DEPTH_SHIFT: u32 = 24;
/// Low 24 bits: next-hop index (leaf) or chunk index (extended entry).
const PAYLOAD: u32 = (1 << DEPTH_SHIFT) - 1;
/// No route.
const EMPTY: u32 = 0;
/// Level-1 entries: one per /16.
const L1_SIZE: usize = 1 << 16;
/// Entries per level-2 or level-3 chunk.
const CHUNK_SIZE: usize = 1 << 8;

type Chunk = [u32; CHUNK_SIZE];

/// Index of a next hop in the router's next-hop table: 24 bits, `0..=NextHopId::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NextHopId(u32);

impl NextHopId {
    /// The largest index a FIB leaf can hold.
    pub const MAX: u32 = PAYLOAD;

    /// `index` as a next-hop id, or `None` if it exceeds [`NextHopId::MAX`].
    pub const fn new(index: u32) -> Option<Self> {
        if index <= Self::MAX {
            Some(Self(index))
        } else {
            None
        }
    }

    /// The index.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The index, for indexing the next-hop table.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A leaf entry for a route of length `depth` to `next_hop`.
const fn leaf(next_hop: NextHopId, depth: u8) -> u32 {
    VALID | ((depth as u32) << DEPTH_SHIFT) | next_hop.0
}

/// The depth of a leaf entry.
const fn depth(entry: u32) -> u8 {
    ((entry & !(EXT | VALID)) >> DEPTH_SHIFT) as u8
}

/// A change to apply to the entries a prefix covers.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Install `leaf`, of length `depth`, wherever no longer prefix has an entry.
    Insert { leaf: u32, depth: u8 },
    /// Replace the entries of the removed route of length `depth` with `fallback`.
    Remove { depth: u8, fallback: u32 },
}

impl Op {
    /// The new value of a leaf or empty entry under the prefix.
    fn rewrite(self, entry: u32) -> u32 {
        match self {
            Op::Insert { leaf, depth: d } if entry & VALID == 0 || depth(entry) <= d => leaf,
            Op::Remove { depth: d, fallback } if entry & VALID != 0 && depth(entry) == d => fallback,
            _ => entry,
        }
    }
}

/// The IPv4 FIB. See the module documentation.
#[derive(Clone)]
pub struct Fib {
    /// Every route, by (normalized) prefix.
    routes: BTreeMap<Ipv4Net, NextHopId>,
    /// Level 1, indexed by the top 16 bits of the address.
    l1: Box<[u32; L1_SIZE]>,
    /// Level-2 and level-3 chunks. Slots listed in `free` are unused.
    chunks: Vec<Chunk>,
    /// Unused chunk slots, reused first.
    free: Vec<u32>,
}

impl Fib {
    /// An empty FIB (256 KiB of zeroed level-1 table; no chunks).
    pub fn new() -> Self {
        let l1: Box<[u32]> = vec![EMPTY; L1_SIZE].into_boxed_slice();
        let l1: Box<[u32; L1_SIZE]> = l1.try_into().unwrap_or_else(|_| unreachable!("allocated with L1_SIZE"));
        Fib { routes: BTreeMap::new(), l1, chunks: Vec::new(), free: Vec::new() }
    }

    /// The next hop of the longest prefix containing `addr`, or `None` if no route does (not even a default
    /// route). The hot path: at most three memory reads, no allocation.
    #[inline]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<NextHopId> {
        let e = self.entry(u32::from(addr));
        if e & VALID != 0 {
            Some(NextHopId(e & PAYLOAD))
        } else {
            None
        }
    }

    /// Looks up every address of `addrs` into `out` (up to the shorter of the two), level by level: all
    /// first-level reads, then all second-level, then all third-level. The reads of one level are independent,
    /// so their cache misses overlap instead of forming one dependent chain per address; this is what makes a
    /// batch of lookups in a large table several times cheaper than the same lookups one by one.
    #[inline]
    pub fn lookup_many(&self, addrs: &[Ipv4Addr], out: &mut [Option<NextHopId>]) {
        const WAVE: usize = 32;
        for (addrs, out) in addrs.chunks(WAVE).zip(out.chunks_mut(WAVE)) {
            let n = addrs.len().min(out.len());
            let mut a = [0u32; WAVE];
            let mut e = [0u32; WAVE];
            for i in 0..n {
                a[i] = u32::from(addrs[i]);
                e[i] = self.l1[(a[i] >> 16) as usize];
            }
            for i in 0..n {
                if e[i] & EXT != 0 {
                    e[i] = self.chunks[(e[i] & PAYLOAD) as usize][((a[i] >> 8) & 0xff) as usize];
                }
            }
            for i in 0..n {
                if e[i] & EXT != 0 {
                    e[i] = self.chunks[(e[i] & PAYLOAD) as usize][(a[i] & 0xff) as usize];
                }
            }
            for i in 0..n {
                out[i] = (e[i] & VALID != 0).then_some(NextHopId(e[i] & PAYLOAD));
            }
        }
    }

    /// Like [`Fib::lookup`], also returning the matching prefix (for tracing and `route get`).
    pub fn lookup_route(&self, addr: Ipv4Addr) -> Option<(Ipv4Net, NextHopId)> {
        let e = self.entry(u32::from(addr));
        if e & VALID == 0 {
            return None;
        }
        let prefix = Ipv4Net::new(addr, depth(e)).ok()?.trunc();
        Some((prefix, NextHopId(e & PAYLOAD)))
    }

    /// The entry deciding `addr`: a leaf or empty, never extended.
    #[inline(always)]
    fn entry(&self, addr: u32) -> u32 {
        let mut e = self.l1[(addr >> 16) as usize];
        if e & EXT != 0 {
            e = self.chunks[(e & PAYLOAD) as usize][((addr >> 8) & 0xff) as usize];
            if e & EXT != 0 {
                e = self.chunks[(e & PAYLOAD) as usize][(addr & 0xff) as usize];
            }
        }
        e
    }

    /// Adds a route, or changes its next hop; returns the previous next hop. Host bits of `prefix` are ignored
    /// (`10.1.2.3/8` is `10.0.0.0/8`).
    pub fn insert(&mut self, prefix: Ipv4Net, next_hop: NextHopId) -> Option<NextHopId> {
        let prefix = prefix.trunc();
        let old = self.routes.insert(prefix, next_hop);
        if old != Some(next_hop) {
            let depth = prefix.prefix_len();
            self.apply(prefix, Op::Insert { leaf: leaf(next_hop, depth), depth });
        }
        old
    }

    /// Removes a route and returns its next hop; addresses it covered fall back to the longest remaining route
    /// covering it. Host bits of `prefix` are ignored.
    pub fn remove(&mut self, prefix: Ipv4Net) -> Option<NextHopId> {
        let prefix = prefix.trunc();
        let old = self.routes.remove(&prefix)?;
        let fallback = self.covering(prefix).map_or(EMPTY, |(net, nh)| leaf(nh, net.prefix_len()));
        self.apply(prefix, Op::Remove { depth: prefix.prefix_len(), fallback });
        Some(old)
    }

    /// The next hop of exactly `prefix` (host bits ignored), if it is a route.
    pub fn get(&self, prefix: Ipv4Net) -> Option<NextHopId> {
        self.routes.get(&prefix.trunc()).copied()
    }

    /// Every route, sorted by network address, then prefix length.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Net, NextHopId)> + '_ {
        self.routes.iter().map(|(&net, &nh)| (net, nh))
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Bytes held by the lookup tables (level 1 and the chunk pool, including free slots), not counting the
    /// route set.
    pub fn table_bytes(&self) -> usize {
        std::mem::size_of::<[u32; L1_SIZE]>() + self.chunks.capacity() * std::mem::size_of::<Chunk>()
    }

    /// The longest route strictly shorter than `prefix` that contains it.
    fn covering(&self, prefix: Ipv4Net) -> Option<(Ipv4Net, NextHopId)> {
        (0..prefix.prefix_len()).rev().find_map(|len| {
            let net = Ipv4Net::new(prefix.addr(), len).ok()?.trunc();
            self.routes.get(&net).map(|&nh| (net, nh))
        })
    }

    /// Applies `op` to every entry `prefix` covers, at the level where the prefix ends, splitting leaves on the
    /// way down into chunks and folding uniform chunks back on the way up.
    fn apply(&mut self, prefix: Ipv4Net, op: Op) {
        let addr = u32::from(prefix.addr());
        let len = prefix.prefix_len();
        let i = (addr >> 16) as usize;
        if len <= 16 {
            for i in i..i + (1 << (16 - len)) {
                self.l1[i] = self.update(self.l1[i], op);
            }
            return;
        }
        let c2 = self.descend(self.l1[i]);
        self.l1[i] = EXT | chunk_ref(c2);
        let j = ((addr >> 8) & 0xff) as usize;
        if len <= 24 {
            for j in j..j + (1 << (24 - len)) {
                self.chunks[c2][j] = self.update(self.chunks[c2][j], op);
            }
        } else {
            let c3 = self.descend(self.chunks[c2][j]);
            let k = (addr & 0xff) as usize;
            for k in k..k + (1 << (32 - len)) {
                self.chunks[c3][k] = op.rewrite(self.chunks[c3][k]);
            }
            self.chunks[c2][j] = self.fold(c3);
        }
        self.l1[i] = self.fold(c2);
    }

    /// Applies `op` to one entry covered by the prefix, and to everything below it if it is extended; returns the
    /// entry's new value.
    fn update(&mut self, entry: u32, op: Op) -> u32 {
        if entry & EXT == 0 {
            return op.rewrite(entry);
        }
        let c = (entry & PAYLOAD) as usize;
        for k in 0..CHUNK_SIZE {
            self.chunks[c][k] = self.update(self.chunks[c][k], op);
        }
        self.fold(c)
    }

    /// The chunk below `entry`: the one it points to, or a new one filled with the leaf (or empty) `entry`.
    fn descend(&mut self, entry: u32) -> usize {
        if entry & EXT != 0 {
            return (entry & PAYLOAD) as usize;
        }
        match self.free.pop() {
            Some(c) => {
                self.chunks[c as usize] = [entry; CHUNK_SIZE];
                c as usize
            }
            None => {
                assert!(self.chunks.len() <= PAYLOAD as usize, "FIB chunk pool exhausted (2^24 chunks)");
                // Grown into huge pages (`crate::hugepage`): a large FIB's lookups then miss the cache, not the TLB.
                crate::hugepage::push(&mut self.chunks, [entry; CHUNK_SIZE]);
                self.chunks.len() - 1
            }
        }
    }

    /// The entry that should stand for chunk `c`: the chunk's single leaf if all its entries are that same leaf
    /// (or all empty), in which case the chunk is freed; otherwise an extended entry pointing to it.
    fn fold(&mut self, c: usize) -> u32 {
        let first = self.chunks[c][0];
        if first & EXT == 0 && self.chunks[c].iter().all(|&e| e == first) {
            self.free.push(chunk_ref(c));
            first
        } else {
            EXT | chunk_ref(c)
        }
    }
}

impl Default for Fib {
    fn default() -> Self {
        Fib::new()
    }
}

impl fmt::Debug for Fib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fib")
            .field("routes", &self.routes.len())
            .field("chunks", &(self.chunks.len() - self.free.len()))
            .field("table_bytes", &self.table_bytes())
            .finish()
    }
}

/// Builds a FIB from routes, inserting shorter prefixes first (a short prefix inserted late has to visit every
/// chunk below it) and each length in address order (the route set and the chunks are then walked in order, not
/// at random). For duplicate prefixes the last one wins.
impl FromIterator<(Ipv4Net, NextHopId)> for Fib {
    fn from_iter<I: IntoIterator<Item = (Ipv4Net, NextHopId)>>(iter: I) -> Self {
        let mut routes: Vec<(Ipv4Net, NextHopId)> = iter.into_iter().map(|(net, nh)| (net.trunc(), nh)).collect();
        // Stable: duplicates keep their order, so the last one is inserted last.
        routes.sort_by_key(|(net, _)| (net.prefix_len(), net.addr()));
        let mut fib = Fib::new();
        for (net, nh) in routes {
            fib.insert(net, nh);
        }
        fib
    }
}

/// Chunk `c`'s index as the payload of an extended entry. `Fib::descend` makes at most `PAYLOAD + 1` chunks
/// (it asserts before adding one), so every chunk index fits; this is the control path (route changes), where
/// a check costs nothing.
fn chunk_ref(c: usize) -> u32 {
    u32::try_from(c).expect("chunk indices stay within PAYLOAD (asserted in Fib::descend)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn nh(i: u32) -> NextHopId {
        NextHopId::new(i).unwrap()
    }

    /// Small deterministic PRNG (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn u32(&mut self) -> u32 {
            (self.next() >> 32) as u32
        }

        fn below(&mut self, n: u32) -> u32 {
            (((self.next() >> 32) * n as u64) >> 32) as u32
        }
    }

    /// The obviously correct answer: scan every route, keep the longest that contains `addr`.
    #[derive(Default)]
    struct Reference(BTreeMap<Ipv4Net, NextHopId>);

    impl Reference {
        fn lookup(&self, addr: Ipv4Addr) -> Option<(Ipv4Net, NextHopId)> {
            self.scan().lookup(addr)
        }

        /// The routes as a flat array, for many lookups.
        fn scan(&self) -> Scan {
            Scan(self.0.iter().map(|(&n, &h)| (u32::from(n.network()), u32::from(n.netmask()), n, h)).collect())
        }
    }

    /// Routes as (network, mask, prefix, next hop), scanned linearly.
    struct Scan(Vec<(u32, u32, Ipv4Net, NextHopId)>);

    impl Scan {
        fn lookup(&self, addr: Ipv4Addr) -> Option<(Ipv4Net, NextHopId)> {
            let a = u32::from(addr);
            let mut best: Option<(Ipv4Net, NextHopId)> = None;
            for &(network, mask, n, h) in &self.0 {
                if a & mask == network && best.map(|(b, _)| b.prefix_len()) < Some(n.prefix_len()) {
                    best = Some((n, h));
                }
            }
            best
        }
    }

    impl Fib {
        /// Checks the table invariants: every chunk in use is reachable exactly once, no reachable chunk is
        /// uniform (it would have been folded), level-3 chunks hold no extended entries, and free slots are
        /// unreachable.
        fn check_invariants(&self) {
            let mut seen = vec![false; self.chunks.len()];
            let visit = |c: usize, seen: &mut Vec<bool>| {
                assert!(!seen[c], "chunk {c} reachable twice");
                seen[c] = true;
                let first = self.chunks[c][0];
                assert!(first & EXT != 0 || self.chunks[c].iter().any(|&e| e != first), "chunk {c} is uniform");
            };
            for &e in self.l1.iter() {
                if e & EXT != 0 {
                    let c2 = (e & PAYLOAD) as usize;
                    visit(c2, &mut seen);
                    for &e2 in self.chunks[c2].iter() {
                        if e2 & EXT != 0 {
                            let c3 = (e2 & PAYLOAD) as usize;
                            visit(c3, &mut seen);
                            assert!(self.chunks[c3].iter().all(|&e3| e3 & EXT == 0));
                        }
                    }
                }
            }
            for &c in &self.free {
                assert!(!seen[c as usize], "free chunk {c} is reachable");
            }
            assert_eq!(seen.iter().filter(|&&s| s).count() + self.free.len(), self.chunks.len());
        }

        fn chunks_in_use(&self) -> usize {
            self.chunks.len() - self.free.len()
        }
    }

    /// Addresses worth probing for `prefix`: its first and last address and their neighbours outside it.
    fn edges(prefix: Ipv4Net) -> [Ipv4Addr; 4] {
        let lo = u32::from(prefix.network());
        let hi = u32::from(prefix.broadcast());
        [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)].map(Ipv4Addr::from)
    }

    #[test]
    fn empty_fib_matches_nothing() {
        let fib = Fib::new();
        assert!(fib.is_empty());
        assert_eq!(fib.len(), 0);
        for a in ["0.0.0.0", "10.0.0.1", "255.255.255.255"] {
            assert_eq!(fib.lookup(ip(a)), None);
            assert_eq!(fib.lookup_route(ip(a)), None);
        }
        assert_eq!(fib.table_bytes(), 256 * 1024);
    }

    #[test]
    fn default_route_matches_everything() {
        let mut fib = Fib::new();
        assert_eq!(fib.insert(net("0.0.0.0/0"), nh(7)), None);
        let mut rng = Rng(1);
        for a in (0..1000).map(|_| rng.u32()).chain([0, u32::MAX]) {
            assert_eq!(fib.lookup(Ipv4Addr::from(a)), Some(nh(7)));
        }
        assert_eq!(fib.lookup_route(ip("192.0.2.1")), Some((net("0.0.0.0/0"), nh(7))));
        assert_eq!(fib.remove(net("0.0.0.0/0")), Some(nh(7)));
        assert_eq!(fib.lookup(ip("192.0.2.1")), None);
        assert!(fib.is_empty());
    }

    #[test]
    fn host_routes_match_only_their_address() {
        let mut fib = Fib::new();
        fib.insert(net("0.0.0.0/0"), nh(0));
        fib.insert(net("10.0.0.1/32"), nh(1));
        fib.insert(net("10.0.0.2/32"), nh(2));
        fib.insert(net("255.255.255.255/32"), nh(3));
        fib.insert(net("0.0.0.0/32"), nh(4));
        assert_eq!(fib.lookup(ip("10.0.0.1")), Some(nh(1)));
        assert_eq!(fib.lookup(ip("10.0.0.2")), Some(nh(2)));
        assert_eq!(fib.lookup(ip("10.0.0.0")), Some(nh(0)));
        assert_eq!(fib.lookup(ip("10.0.0.3")), Some(nh(0)));
        assert_eq!(fib.lookup(ip("255.255.255.255")), Some(nh(3)));
        assert_eq!(fib.lookup(ip("255.255.255.254")), Some(nh(0)));
        assert_eq!(fib.lookup(ip("0.0.0.0")), Some(nh(4)));
        assert_eq!(fib.lookup(ip("0.0.0.1")), Some(nh(0)));
        assert_eq!(fib.lookup_route(ip("10.0.0.2")), Some((net("10.0.0.2/32"), nh(2))));
        fib.check_invariants();
    }

    #[test]
    fn longest_prefix_wins_in_any_insertion_order() {
        let routes = [("10.0.0.0/8", 8), ("10.1.0.0/16", 16), ("10.1.2.0/24", 24), ("10.1.2.128/25", 25)];
        let probes = [
            ("10.200.0.1", Some(8)),
            ("10.1.200.1", Some(16)),
            ("10.1.2.1", Some(24)),
            ("10.1.2.200", Some(25)),
            ("11.0.0.0", None),
            ("9.255.255.255", None),
        ];
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]] {
            let mut fib = Fib::new();
            for i in order {
                let (p, h) = routes[i];
                fib.insert(net(p), nh(h));
            }
            for (a, want) in probes {
                assert_eq!(fib.lookup(ip(a)), want.map(nh), "{a} after order {order:?}");
            }
            fib.check_invariants();
        }
    }

    #[test]
    fn removal_restores_the_covering_route() {
        let mut fib = Fib::new();
        fib.insert(net("0.0.0.0/0"), nh(0));
        fib.insert(net("10.0.0.0/8"), nh(8));
        fib.insert(net("10.1.0.0/16"), nh(16));
        fib.insert(net("10.1.2.0/24"), nh(24));
        fib.insert(net("10.1.2.3/32"), nh(32));

        // Removing a middle route: longer ones keep their addresses, its own fall back to the /8.
        assert_eq!(fib.remove(net("10.1.0.0/16")), Some(nh(16)));
        assert_eq!(fib.lookup(ip("10.1.2.3")), Some(nh(32)));
        assert_eq!(fib.lookup(ip("10.1.2.4")), Some(nh(24)));
        assert_eq!(fib.lookup(ip("10.1.3.0")), Some(nh(8)));
        fib.check_invariants();

        assert_eq!(fib.remove(net("10.1.2.3/32")), Some(nh(32)));
        assert_eq!(fib.lookup(ip("10.1.2.3")), Some(nh(24)));
        assert_eq!(fib.remove(net("10.1.2.0/24")), Some(nh(24)));
        assert_eq!(fib.lookup(ip("10.1.2.3")), Some(nh(8)));
        assert_eq!(fib.remove(net("10.0.0.0/8")), Some(nh(8)));
        assert_eq!(fib.lookup(ip("10.1.2.3")), Some(nh(0)));
        assert_eq!(fib.lookup_route(ip("10.1.2.3")), Some((net("0.0.0.0/0"), nh(0))));
        // Every chunk went back to the pool.
        assert_eq!(fib.chunks_in_use(), 0);
        fib.check_invariants();

        // Removing what is not there changes nothing.
        assert_eq!(fib.remove(net("10.0.0.0/8")), None);
        assert_eq!(fib.remove(net("10.0.0.0/9")), None);
        assert_eq!(fib.lookup(ip("10.1.2.3")), Some(nh(0)));
        assert_eq!(fib.len(), 1);
    }

    #[test]
    fn every_prefix_length_nested() {
        // a/0 ⊃ a/1 ⊃ … ⊃ a/32, route of length l → next hop l. Address a ^ (1 << (31 - l)) shares exactly l
        // leading bits with a, so it matches a/l and nothing longer.
        let a = u32::from(ip("172.16.33.77"));
        let probe = |l: u32| if l == 32 { a } else { a ^ (1 << (31 - l)) };
        let mut fib = Fib::new();
        for l in 0..=32u8 {
            fib.insert(Ipv4Net::new(Ipv4Addr::from(a), l).unwrap(), nh(l as u32));
        }
        assert_eq!(fib.len(), 33);
        for l in 0..=32 {
            let want = Ipv4Net::new(Ipv4Addr::from(a), l as u8).unwrap().trunc();
            assert_eq!(fib.lookup_route(Ipv4Addr::from(probe(l))), Some((want, nh(l))), "/{l}");
        }
        fib.check_invariants();

        // Remove the even lengths: each odd probe keeps its route, each even probe falls to the odd one below.
        for l in (0..=32u8).step_by(2) {
            assert_eq!(fib.remove(Ipv4Net::new(Ipv4Addr::from(a), l).unwrap()), Some(nh(l as u32)));
        }
        for l in 0..=32u32 {
            let want = if l % 2 == 1 { Some(nh(l)) } else { l.checked_sub(1).map(nh) };
            assert_eq!(fib.lookup(Ipv4Addr::from(probe(l))), want, "/{l}");
        }
        fib.check_invariants();
    }

    #[test]
    fn every_prefix_length_disjoint() {
        // One prefix of each length 1..=32, none containing another: p_l = (all ones for l-1 bits, then 0)/l.
        let mut fib = Fib::new();
        let mut reference = Reference::default();
        for l in 1..=32u8 {
            let addr = u32::MAX.checked_shl(33 - l as u32).unwrap_or(0);
            let p = Ipv4Net::new(Ipv4Addr::from(addr), l).unwrap().trunc();
            fib.insert(p, nh(l as u32));
            reference.0.insert(p, nh(l as u32));
        }
        for &p in reference.0.keys() {
            for a in edges(p) {
                assert_eq!(fib.lookup_route(a), reference.lookup(a), "{a} near {p}");
            }
        }
        fib.check_invariants();
    }

    #[test]
    fn replacing_a_next_hop_and_host_bits() {
        let mut fib = Fib::new();
        assert_eq!(fib.insert(net("10.1.2.3/8"), nh(1)), None);
        assert_eq!(fib.get(net("10.0.0.0/8")), Some(nh(1)));
        assert_eq!(fib.get(net("10.9.9.9/8")), Some(nh(1)));
        assert_eq!(fib.get(net("10.0.0.0/9")), None);
        assert_eq!(fib.insert(net("10.0.0.0/8"), nh(2)), Some(nh(1)));
        assert_eq!(fib.insert(net("10.0.0.0/8"), nh(2)), Some(nh(2)));
        assert_eq!(fib.lookup(ip("10.200.1.1")), Some(nh(2)));
        assert_eq!(fib.lookup_route(ip("10.200.1.1")), Some((net("10.0.0.0/8"), nh(2))));
        // A replaced next hop under a longer prefix only changes that prefix's addresses.
        fib.insert(net("10.1.1.0/24"), nh(3));
        fib.insert(net("10.1.1.0/24"), nh(4));
        assert_eq!(fib.lookup(ip("10.1.1.1")), Some(nh(4)));
        assert_eq!(fib.lookup(ip("10.1.2.1")), Some(nh(2)));
        assert_eq!(fib.len(), 2);
        fib.check_invariants();
    }

    #[test]
    fn iter_is_sorted_by_prefix() {
        let mut fib = Fib::new();
        for (i, p) in ["10.1.0.0/16", "0.0.0.0/0", "10.0.0.0/8", "192.168.1.0/24", "10.0.0.0/16"].iter().enumerate() {
            fib.insert(net(p), nh(i as u32));
        }
        let got: Vec<String> = fib.iter().map(|(n, h)| format!("{n}={}", h.get())).collect();
        assert_eq!(got, ["0.0.0.0/0=1", "10.0.0.0/8=2", "10.0.0.0/16=4", "10.1.0.0/16=0", "192.168.1.0/24=3"]);
        assert_eq!(fib.len(), 5);
    }

    #[test]
    fn next_hop_ids_are_24_bits() {
        assert_eq!(NextHopId::new(NextHopId::MAX).map(NextHopId::get), Some((1 << 24) - 1));
        assert_eq!(NextHopId::new(1 << 24), None);
        let mut fib = Fib::new();
        fib.insert(net("1.2.3.4/32"), nh(NextHopId::MAX));
        assert_eq!(fib.lookup(ip("1.2.3.4")), Some(nh(NextHopId::MAX)));
        assert_eq!(nh(5).index(), 5);
    }

    #[test]
    fn clones_are_independent() {
        let mut a = Fib::new();
        a.insert(net("10.0.0.0/24"), nh(1));
        let b = a.clone();
        a.remove(net("10.0.0.0/24"));
        a.insert(net("10.0.0.0/25"), nh(2));
        assert_eq!(b.lookup(ip("10.0.0.1")), Some(nh(1)));
        assert_eq!(a.lookup(ip("10.0.0.1")), Some(nh(2)));
        assert_eq!(a.lookup(ip("10.0.0.200")), None);
    }

    #[test]
    fn from_iter_matches_incremental_inserts() {
        let mut rng = Rng(99);
        let routes: Vec<(Ipv4Net, NextHopId)> = (0..2000)
            .map(|_| (Ipv4Net::new(Ipv4Addr::from(rng.u32()), rng.below(33) as u8).unwrap(), nh(rng.below(1000))))
            .collect();
        let built: Fib = routes.iter().copied().collect();
        let mut inserted = Fib::new();
        for &(p, h) in &routes {
            inserted.insert(p, h);
        }
        assert_eq!(built.iter().collect::<Vec<_>>(), inserted.iter().collect::<Vec<_>>());
        for _ in 0..20_000 {
            let a = Ipv4Addr::from(rng.u32());
            assert_eq!(built.lookup_route(a), inserted.lookup_route(a));
        }
        built.check_invariants();
    }

    /// A random prefix clustered around a few base addresses, so that prefixes overlap at every level.
    fn clustered_prefix(rng: &mut Rng, bases: &[u32]) -> Ipv4Net {
        let base = bases[rng.below(bases.len() as u32) as usize];
        // Perturb the low bits only, at a random scale: most prefixes share their top bits with others.
        let addr = base ^ (rng.u32() >> rng.below(33).min(31));
        let len = match rng.below(4) {
            0 => rng.below(33),
            1 => 16 + rng.below(9),
            _ => 20 + rng.below(13),
        };
        Ipv4Net::new(Ipv4Addr::from(addr), len as u8).unwrap().trunc()
    }

    #[test]
    fn randomized_against_linear_scan() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let bases: Vec<u32> = (0..8).map(|_| rng.u32()).collect();
        let mut fib = Fib::new();
        let mut reference = Reference::default();

        let check = |fib: &Fib, reference: &Reference, rng: &mut Rng| {
            let scan = reference.scan();
            for _ in 0..3000 {
                // Half near a base (dense, deep matches), half anywhere.
                let a = if rng.below(2) == 0 {
                    bases[rng.below(8) as usize] ^ (rng.u32() >> rng.below(32))
                } else {
                    rng.u32()
                };
                let a = Ipv4Addr::from(a);
                let want = scan.lookup(a);
                assert_eq!(fib.lookup_route(a), want, "{a}");
                assert_eq!(fib.lookup(a), want.map(|(_, h)| h));
            }
            for &p in reference.0.keys() {
                for a in edges(p) {
                    assert_eq!(fib.lookup_route(a), scan.lookup(a), "{a} near {p}");
                }
            }
            fib.check_invariants();
            assert_eq!(fib.len(), reference.0.len());
            assert!(fib.iter().eq(reference.0.iter().map(|(&n, &h)| (n, h))));
        };

        for _ in 0..3000 {
            let p = clustered_prefix(&mut rng, &bases);
            let h = nh(rng.below(64));
            assert_eq!(fib.insert(p, h), reference.0.insert(p, h));
        }
        check(&fib, &reference, &mut rng);

        // Remove about half, with some misses, and re-check.
        for _ in 0..2000 {
            let p = if rng.below(4) == 0 {
                clustered_prefix(&mut rng, &bases)
            } else {
                *reference.0.keys().nth(rng.below(reference.0.len() as u32) as usize).unwrap()
            };
            assert_eq!(fib.remove(p), reference.0.remove(&p));
        }
        check(&fib, &reference, &mut rng);

        // Then churn: mixed inserts and removes.
        for _ in 0..2000 {
            let p = clustered_prefix(&mut rng, &bases);
            if rng.below(2) == 0 {
                let h = nh(rng.below(64));
                assert_eq!(fib.insert(p, h), reference.0.insert(p, h));
            } else {
                assert_eq!(fib.remove(p), reference.0.remove(&p));
            }
        }
        check(&fib, &reference, &mut rng);

        // Remove everything: no route, no chunk left.
        let all: Vec<Ipv4Net> = reference.0.keys().copied().collect();
        for p in all {
            assert!(fib.remove(p).is_some());
        }
        assert!(fib.is_empty());
        assert_eq!(fib.chunks_in_use(), 0);
        assert_eq!(fib.lookup(ip("1.2.3.4")), None);
        fib.check_invariants();
    }

    proptest! {
        #[test]
        fn ops_match_linear_scan(
            ops in proptest::collection::vec((any::<bool>(), 0u32..4, any::<u32>(), 0u8..=32, 0u32..8), 1..60),
            probes in proptest::collection::vec((0u32..4, any::<u32>()), 32),
        ) {
            // Four bases 0x0a000000.. apart only in the top byte, so prefixes overlap a lot.
            let bases = [0x0a00_0000u32, 0x0a01_0000, 0x0a01_0200, 0xc0a8_0000];
            let mut fib = Fib::new();
            let mut reference = Reference::default();
            for (insert, b, bits, len, h) in ops {
                let addr = bases[b as usize] ^ (bits >> (bits % 32));
                let p = Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc();
                if insert {
                    prop_assert_eq!(fib.insert(p, nh(h)), reference.0.insert(p, nh(h)));
                } else {
                    prop_assert_eq!(fib.remove(p), reference.0.remove(&p));
                }
            }
            fib.check_invariants();
            let scan = reference.scan();
            for (b, bits) in probes {
                let a = Ipv4Addr::from(bases[b as usize] ^ (bits >> (bits % 32)));
                prop_assert_eq!(fib.lookup_route(a), scan.lookup(a));
            }
            for &p in reference.0.keys() {
                for a in edges(p) {
                    prop_assert_eq!(fib.lookup_route(a), scan.lookup(a));
                }
            }
        }
    }
}
