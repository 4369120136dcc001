//! Source NAT (masquerade) port allocation: which external port, or ICMP echo identifier, a flow leaving a
//! masquerade network through a routed port gets on that port's address (the NAT stage holds one allocator
//! per router interface).
//!
//! - **What it owns**: one [`PortAllocator`] per external address. It hands out ports from a [`PortRange`]
//!   (default 1024–65535), separately for TCP, UDP and ICMP identifiers ([`NatProto`]), and remembers which
//!   ones are in use. It rewrites no packets and knows no flows: conntrack calls [`PortAllocator::allocate`]
//!   when it creates a masqueraded entry and [`PortAllocator::release`] when that entry dies (expiry, flush,
//!   RST). Every successful allocate (or [`PortAllocator::claim`]) must be paired with exactly one release.
//! - **Endpoint-dependent**, like netfilter's default: the unit of uniqueness is (external address, protocol,
//!   destination address, destination port, external port), which is exactly the reply tuple conntrack will
//!   look up. The same external port is reused towards different destinations, so one busy destination (a
//!   popular server) exhausts only its own range, not everybody's. For ICMP the destination port is ignored
//!   (echo replies are matched by address and identifier only): it is treated as 0 by every method.
//! - **Choice**: the flow's own source port (`preferred`) is kept when it is in the range and free towards that
//!   destination. Otherwise the search starts at an offset derived from the caller's flow hash and takes the
//!   first free port at or after it, wrapping around the range. No clock and no OS randomness are read: the
//!   same calls give the same ports (replay and tests are deterministic).
//! - **Exhaustion**: [`PortAllocator::allocate`] fails with [`Exhausted`] if and only if every port of the
//!   range is in use towards that destination — never spuriously (netfilter's bounded random probing can give
//!   up early), and never by handing out a tuple already in use. Each failure is counted
//!   ([`SnatStats::exhausted`]); the caller drops the packet with a named reason.
//! - **Cost**: per destination, the ports in use are a sorted `Vec<u16>` while there are at most
//!   [`SPARSE_MAX`] of them (most destinations see a handful of flows), and a two-level bitmap above that: one
//!   bit per port of the range, plus one bit per 64-port word saying "this word is full". Worst cases, whatever
//!   the load: sparse, a binary search, a walk along one run of consecutive used ports and a memmove of at most
//!   `2 × SPARSE_MAX` bytes; dense, one word for the start offset then at most two passes over the summary
//!   (≤ 16 words for a 65,535-port range) and one more word — O(1) in the number of flows. Converting between
//!   the two forms costs O(range / 64) and is amortised: a dense set goes back to sparse only below
//!   [`SPARSE_MIN`] ports, so a destination hovering at the threshold does not flap.
//! - **Memory**: a destination's state is freed when its last port is released, and the destination map and
//!   sparse vectors shrink when under a quarter full, so memory follows the ports in use, not their peak. A
//!   bitmap is at most 8 KiB + 128 B and exists only with more than [`SPARSE_MAX`] ports in use (≤ 33 bytes
//!   per port). There is no limit of its own: the ports in use are bounded by the conntrack table holding them.
//!
//! Threads: owned by the thread that owns the conntrack entries using this address; not shared. (With several
//! workers, either one worker owns the masqueraded flows of an address or each owns a disjoint sub-range.)

use crate::conntrack::Proto;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::fmt;
use std::net::Ipv4Addr;

/// Ports in use towards one destination above which its set becomes a bitmap.
pub const SPARSE_MAX: usize = 256;
/// Ports in use towards one destination below which a bitmap becomes a sorted vector again.
pub const SPARSE_MIN: usize = 64;

/// A translated protocol; each has its own port space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NatProto {
    /// TCP ports.
    Tcp,
    /// UDP ports.
    Udp,
    /// ICMP echo identifiers (the destination port is ignored).
    Icmp,
}

/// The port space a tracked protocol allocates from.
impl From<Proto> for NatProto {
    fn from(p: Proto) -> NatProto {
        match p {
            Proto::Icmp => NatProto::Icmp,
            Proto::Tcp => NatProto::Tcp,
            Proto::Udp => NatProto::Udp,
        }
    }
}

impl fmt::Display for NatProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NatProto::Tcp => "tcp",
            NatProto::Udp => "udp",
            NatProto::Icmp => "icmp",
        })
    }
}

pub use vswitch_api::port_range::{BadPortRange, ParsePortRangeError, PortRange};

/// Every port of the range is in use towards the destination; the packet cannot be translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no free {proto} port on {external} towards {dst_ip}:{dst_port}: all of {range} in use")]
pub struct Exhausted {
    /// The external address.
    pub external: Ipv4Addr,
    /// The protocol.
    pub proto: NatProto,
    /// The destination address.
    pub dst_ip: Ipv4Addr,
    /// The destination port (0 for ICMP).
    pub dst_port: u16,
    /// The allocator's range.
    pub range: PortRange,
}

/// Counters of one allocator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SnatStats {
    /// Ports in use now, over all protocols and destinations.
    pub in_use: usize,
    /// Destinations (protocol, address, port) with at least one port in use now.
    pub destinations: usize,
    /// Successful allocations (`preferred_kept + remapped`).
    pub allocated: u64,
    /// Allocations that kept the flow's own source port.
    pub preferred_kept: u64,
    /// Allocations that chose another port.
    pub remapped: u64,
    /// Allocations refused because the range was exhausted for the destination (each one a dropped packet).
    pub exhausted: u64,
    /// Ports marked in use by [`PortAllocator::claim`].
    pub claimed: u64,
    /// Ports given back.
    pub released: u64,
    /// Releases of a port that was not in use (a caller bug; nothing changed).
    pub stray_releases: u64,
}

/// The external ports in use for one external address. See the module documentation.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    external: Ipv4Addr,
    range: PortRange,
    /// Key: [`dest_key`]; never holds an empty set.
    dests: FxHashMap<u64, Used>,
    stats: SnatStats,
    sparse_max: usize,
    sparse_min: usize,
}

impl PortAllocator {
    /// An allocator with nothing in use, handing out ports of `range` on `external`.
    pub fn new(external: Ipv4Addr, range: PortRange) -> Self {
        PortAllocator {
            external,
            range,
            dests: FxHashMap::default(),
            stats: SnatStats::default(),
            sparse_max: SPARSE_MAX,
            sparse_min: SPARSE_MIN,
        }
    }

    /// The external address.
    pub fn external(&self) -> Ipv4Addr {
        self.external
    }

    /// The port range.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Chooses an external port for a new flow of `proto` towards `dst` (address, port) whose own source port
    /// (or ICMP identifier) is `preferred`; `flow_hash` (any well-mixed hash of the flow, e.g. of its original
    /// tuple) picks where the search starts when `preferred` cannot be kept. The port stays in use until
    /// [`PortAllocator::release`].
    pub fn allocate(
        &mut self,
        proto: NatProto,
        preferred: u16,
        dst: (Ipv4Addr, u16),
        flow_hash: u64,
    ) -> Result<u16, Exhausted> {
        let range = self.range;
        let size = range.size();
        // A new entry is only created when nothing is in use towards `dst`, so allocation below succeeds and
        // the map never keeps an empty set.
        let used = self.dests.entry(dest_key(proto, dst)).or_insert_with(Used::new);
        let chosen = if used.len() >= size as usize {
            None
        } else {
            // The preferred port is tested and taken in one search; otherwise the first free one from the
            // flow's offset.
            match range.index(preferred) {
                Some(i) if used.insert_if_free(i, size, self.sparse_max) => Some((i, true)),
                _ => used.next_free(start_offset(flow_hash, size), size).map(|i| {
                    used.insert(i, size, self.sparse_max);
                    (i, false)
                }),
            }
        };
        let Some((index, kept)) = chosen else {
            self.stats.exhausted += 1;
            let dst_port = if proto == NatProto::Icmp { 0 } else { dst.1 };
            return Err(Exhausted { external: self.external, proto, dst_ip: dst.0, dst_port, range });
        };
        self.stats.in_use += 1;
        self.stats.allocated += 1;
        if kept {
            self.stats.preferred_kept += 1;
        } else {
            self.stats.remapped += 1;
        }
        Ok(range.first() + index)
    }

    /// Marks `port` in use towards `dst` without choosing, e.g. for a tuple an inbound (published) flow already
    /// occupies. Returns false, and changes nothing, if it is outside the range or already in use.
    pub fn claim(&mut self, proto: NatProto, dst: (Ipv4Addr, u16), port: u16) -> bool {
        let Some(index) = self.range.index(port) else {
            return false;
        };
        let used = self.dests.entry(dest_key(proto, dst)).or_insert_with(Used::new);
        if used.contains(index) {
            return false; // not empty, so nothing to clean up
        }
        used.insert(index, self.range.size(), self.sparse_max);
        self.stats.in_use += 1;
        self.stats.claimed += 1;
        true
    }

    /// Gives `port` back for `dst`. Returns false, counts a stray release and changes nothing if it was not in
    /// use. The destination's state is freed with its last port.
    pub fn release(&mut self, proto: NatProto, dst: (Ipv4Addr, u16), port: u16) -> bool {
        // Not `entry()`: it may grow the map for a destination that is not there.
        let key = dest_key(proto, dst);
        let removed = match (self.range.index(port), self.dests.get_mut(&key)) {
            (Some(index), Some(used)) => {
                let removed = used.remove(index, self.sparse_min);
                if used.len() == 0 {
                    self.dests.remove(&key);
                    self.shrink_map();
                }
                removed
            }
            _ => false,
        };
        if removed {
            self.stats.in_use -= 1;
            self.stats.released += 1;
        } else {
            self.stats.stray_releases += 1;
        }
        removed
    }

    /// Ports in use towards `dst`.
    pub fn in_use(&self, proto: NatProto, dst: (Ipv4Addr, u16)) -> usize {
        self.dests.get(&dest_key(proto, dst)).map_or(0, Used::len)
    }

    /// True when `port` is in use towards `dst`.
    pub fn is_in_use(&self, proto: NatProto, dst: (Ipv4Addr, u16), port: u16) -> bool {
        match (self.range.index(port), self.dests.get(&dest_key(proto, dst))) {
            (Some(i), Some(used)) => used.contains(i),
            _ => false,
        }
    }

    /// Destinations with at least one port in use.
    pub fn destinations(&self) -> usize {
        self.dests.len()
    }

    /// The allocator's counters.
    pub fn stats(&self) -> SnatStats {
        SnatStats { destinations: self.dests.len(), ..self.stats }
    }

    /// Halves the map when it is under a quarter full (amortised O(1): half the entries must go between two
    /// shrinks).
    fn shrink_map(&mut self) {
        let (len, cap) = (self.dests.len(), self.dests.capacity());
        if cap > 64 && len * 4 < cap {
            self.dests.shrink_to(len * 2);
        }
    }
}

/// (protocol, destination address, destination port) packed into one word; the port is 0 for ICMP.
fn dest_key(proto: NatProto, (ip, port): (Ipv4Addr, u16)) -> u64 {
    let port = if proto == NatProto::Icmp { 0 } else { port };
    (proto as u64) << 48 | u64::from(u32::from(ip)) << 16 | u64::from(port)
}

/// Where the search for a free port starts: the flow hash, mixed (splitmix64's finaliser, so that a poorly
/// mixed caller hash still spreads), scaled onto `0..size` by multiply-shift.
// The result is below `size`, a port range's size (at most 65535): cannot truncate.
#[allow(clippy::cast_possible_truncation)]
fn start_offset(flow_hash: u64, size: u32) -> u16 {
    let mut h = flow_hash;
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (((h >> 32) * u64::from(size)) >> 32) as u16
}

/// The ports in use towards one destination, as indices into the range (`port - first`). Never empty while
/// in the allocator's map.
#[derive(Debug, Clone)]
enum Used {
    /// Sorted, no duplicates; at most `sparse_max` long.
    Sparse(Vec<u16>),
    /// More than `sparse_min` ports.
    Dense(Box<Bitmap>),
}

impl Used {
    fn new() -> Used {
        Used::Sparse(Vec::new())
    }

    fn len(&self) -> usize {
        match self {
            Used::Sparse(v) => v.len(),
            Used::Dense(b) => b.count,
        }
    }

    fn contains(&self, i: u16) -> bool {
        match self {
            Used::Sparse(v) => v.binary_search(&i).is_ok(),
            Used::Dense(b) => b.contains(i),
        }
    }

    /// The first free index at or after `start`, wrapping at `size`; None only when all `size` are in use.
    fn next_free(&self, start: u16, size: u32) -> Option<u16> {
        match self {
            Used::Sparse(v) => sparse_next_free(v, start, size),
            Used::Dense(b) => b.next_free(start),
        }
    }

    /// Marks `i` (below `size`) in use if it is free; false if it was in use already.
    fn insert_if_free(&mut self, i: u16, size: u32, sparse_max: usize) -> bool {
        match self {
            Used::Sparse(v) if v.len() < sparse_max => match v.binary_search(&i) {
                Ok(_) => false,
                Err(pos) => {
                    v.insert(pos, i);
                    true
                }
            },
            _ if self.contains(i) => false,
            _ => {
                self.insert(i, size, sparse_max);
                true
            }
        }
    }

    /// Marks `i` (free, below `size`) in use.
    fn insert(&mut self, i: u16, size: u32, sparse_max: usize) {
        match self {
            Used::Sparse(v) if v.len() < sparse_max => {
                if let Err(pos) = v.binary_search(&i) {
                    v.insert(pos, i);
                }
            }
            Used::Sparse(v) => {
                let mut b = Bitmap::new(size);
                for &j in v.iter() {
                    b.insert(j);
                }
                b.insert(i);
                *self = Used::Dense(Box::new(b));
            }
            Used::Dense(b) => b.insert(i),
        }
    }

    /// Marks `i` free; false if it was not in use.
    fn remove(&mut self, i: u16, sparse_min: usize) -> bool {
        match self {
            Used::Sparse(v) => {
                let Ok(pos) = v.binary_search(&i) else {
                    return false;
                };
                v.remove(pos);
                if v.capacity() > 16 && v.len() * 4 < v.capacity() {
                    v.shrink_to(v.len() * 2);
                }
                true
            }
            Used::Dense(b) => {
                if !b.remove(i) {
                    return false;
                }
                if b.count < sparse_min {
                    *self = Used::Sparse(b.indices());
                }
                true
            }
        }
    }
}

/// The first index at or after `start` (wrapping at `size`) not in the sorted `v`. Walks one run of
/// consecutive used indices, twice at most (before and after wrapping).
// Only a `cand` below `size` (a port range's size, at most 65535) is narrowed: cannot truncate.
#[allow(clippy::cast_possible_truncation)]
fn sparse_next_free(v: &[u16], start: u16, size: u32) -> Option<u16> {
    if v.len() >= size as usize {
        return None;
    }
    let walk = |mut pos: usize, mut cand: u32| {
        while pos < v.len() && u32::from(v[pos]) == cand {
            pos += 1;
            cand += 1;
        }
        cand
    };
    let cand = walk(v.partition_point(|&x| x < start), u32::from(start));
    if cand < size {
        return Some(cand as u16);
    }
    // Everything from `start` to the end is in use; the first gap from 0 is before `start` (v is not full).
    let cand = walk(0, 0);
    (cand < size).then_some(cand as u16)
}

/// A set of indices `0..size` as a bitmap, with a summary bit per word saying the word is full. Padding bits
/// past `size` (and past the last word, in the summary) are set, so they are never free.
#[derive(Debug, Clone)]
struct Bitmap {
    words: Vec<u64>,
    full: Vec<u64>,
    count: usize,
    size: u32,
}

impl Bitmap {
    fn new(size: u32) -> Bitmap {
        let n = (size as usize).div_ceil(64);
        let mut words = vec![0u64; n];
        // (Remainders bound to names: `is_multiple_of` is newer than the workspace's rust-version.)
        let tail = size % 64;
        if tail != 0 {
            words[n - 1] = !0u64 << tail;
        }
        let mut full = vec![0u64; n.div_ceil(64)];
        let summary_tail = n % 64;
        if summary_tail != 0 {
            full[n / 64] = !0u64 << summary_tail;
        }
        Bitmap { words, full, count: 0, size }
    }

    fn contains(&self, i: u16) -> bool {
        let i = usize::from(i);
        self.words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Sets `i` (below `size`); no-op if already set.
    fn insert(&mut self, i: u16) {
        let i = usize::from(i);
        let Some(w) = self.words.get_mut(i / 64) else {
            return;
        };
        if *w & (1 << (i % 64)) != 0 {
            return;
        }
        *w |= 1 << (i % 64);
        self.count += 1;
        if *w == !0 {
            let wi = i / 64;
            self.full[wi / 64] |= 1 << (wi % 64);
        }
    }

    fn remove(&mut self, i: u16) -> bool {
        let i = usize::from(i);
        if u32::try_from(i).map_or(true, |i| i >= self.size) {
            return false;
        }
        let w = &mut self.words[i / 64];
        if *w & (1 << (i % 64)) == 0 {
            return false;
        }
        *w &= !(1 << (i % 64));
        self.count -= 1;
        let wi = i / 64;
        self.full[wi / 64] &= !(1 << (wi % 64));
        true
    }

    /// The first clear index at or after `start`, wrapping; None when full.
    // A clear bit is below `size` (padding bits are set), and `size` is a port range's (at most 65535): cannot
    // truncate.
    #[allow(clippy::cast_possible_truncation)]
    fn next_free(&self, start: u16) -> Option<u16> {
        let start = usize::from(start);
        let m = !*self.words.get(start / 64)? & (!0u64 << (start % 64));
        if m != 0 {
            return Some((start / 64 * 64 + m.trailing_zeros() as usize) as u16);
        }
        // Not in `start`'s word: the first word not full after it, else (wrapping) the first from word 0.
        let w = first_clear(&self.full, start / 64 + 1).or_else(|| first_clear(&self.full, 0))?;
        let bit = (!self.words[w]).trailing_zeros() as usize;
        Some((w * 64 + bit) as u16)
    }

    /// The set indices, ascending.
    fn indices(&self) -> Vec<u16> {
        let mut v = Vec::with_capacity(self.count * 2);
        for (wi, &w) in self.words.iter().enumerate() {
            let mut m = w;
            while m != 0 {
                let i = wi * 64 + m.trailing_zeros() as usize;
                // Padding bits (at or past `size`) are not indices.
                v.extend(u16::try_from(i).ok().filter(|&i| u32::from(i) < self.size));
                m &= m - 1;
            }
        }
        v
    }
}

/// The index of the first clear bit at or after `from` in `bits`, not wrapping.
fn first_clear(bits: &[u64], from: usize) -> Option<usize> {
    let mut wi = from / 64;
    let mut m = !*bits.get(wi)? & (!0u64 << (from % 64));
    loop {
        if m != 0 {
            return Some(wi * 64 + m.trailing_zeros() as usize);
        }
        wi += 1;
        m = !*bits.get(wi)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    const EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

    fn dst(last: u8, port: u16) -> (Ipv4Addr, u16) {
        (Ipv4Addr::new(198, 51, 100, last), port)
    }

    fn range(first: u16, last: u16) -> PortRange {
        PortRange::new(first, last).unwrap()
    }

    #[test]
    fn range_is_validated() {
        assert_eq!(PortRange::default(), range(1024, 65535));
        assert_eq!(PortRange::default().size(), 64512);
        assert_eq!(range(1, 65535).size(), 65535);
        assert_eq!(range(7, 7).size(), 1);
        assert_eq!(PortRange::new(0, 10), Err(BadPortRange { first: 0, last: 10 }));
        assert_eq!(PortRange::new(10, 9), Err(BadPortRange { first: 10, last: 9 }));
        assert_eq!(PortRange::new(10, 9).unwrap_err().to_string(), "invalid port range 10-9: need 1 <= first <= last");
    }

    #[test]
    fn keeps_preferred_port_when_free() {
        let mut a = PortAllocator::new(EXT, PortRange::default());
        assert_eq!(a.allocate(NatProto::Tcp, 40000, dst(1, 443), 1), Ok(40000));
        assert!(a.is_in_use(NatProto::Tcp, dst(1, 443), 40000));
        let s = a.stats();
        assert_eq!((s.allocated, s.preferred_kept, s.remapped, s.in_use, s.destinations), (1, 1, 0, 1, 1));
    }

    #[test]
    fn preferred_outside_range_is_remapped() {
        let mut a = PortAllocator::new(EXT, PortRange::default());
        let p = a.allocate(NatProto::Udp, 53, dst(1, 53), 99).unwrap();
        assert!(PortRange::default().contains(p));
        assert_eq!(a.stats().remapped, 1);
    }

    #[test]
    fn same_source_port_to_same_destination_gets_distinct_ports() {
        let mut a = PortAllocator::new(EXT, PortRange::default());
        let p1 = a.allocate(NatProto::Tcp, 40000, dst(1, 443), 1).unwrap();
        let p2 = a.allocate(NatProto::Tcp, 40000, dst(1, 443), 2).unwrap();
        assert_eq!(p1, 40000);
        assert_ne!(p2, p1);
        assert_eq!(a.in_use(NatProto::Tcp, dst(1, 443)), 2);
        assert_eq!((a.stats().preferred_kept, a.stats().remapped), (1, 1));
    }

    #[test]
    fn same_port_reused_towards_other_destinations_and_protocols() {
        let mut a = PortAllocator::new(EXT, PortRange::default());
        assert_eq!(a.allocate(NatProto::Tcp, 40000, dst(1, 443), 1), Ok(40000));
        assert_eq!(a.allocate(NatProto::Tcp, 40000, dst(2, 443), 1), Ok(40000), "other address");
        assert_eq!(a.allocate(NatProto::Tcp, 40000, dst(1, 80), 1), Ok(40000), "other port");
        assert_eq!(a.allocate(NatProto::Udp, 40000, dst(1, 443), 1), Ok(40000), "other protocol");
        assert_eq!(a.destinations(), 4);
    }

    #[test]
    fn icmp_ignores_destination_port() {
        let mut a = PortAllocator::new(EXT, PortRange::default());
        assert_eq!(a.allocate(NatProto::Icmp, 5000, dst(1, 0), 1), Ok(5000));
        assert_ne!(a.allocate(NatProto::Icmp, 5000, dst(1, 7), 1), Ok(5000));
        assert_eq!(a.in_use(NatProto::Icmp, dst(1, 1234)), 2);
        assert!(a.release(NatProto::Icmp, dst(1, 9), 5000));
    }

    #[test]
    fn narrow_range_exhausts_and_release_frees() {
        let r = range(2000, 2002);
        let mut a = PortAllocator::new(EXT, r);
        let d = dst(1, 443);
        let mut got: Vec<u16> = (0..3).map(|i| a.allocate(NatProto::Tcp, 40000, d, i).unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [2000, 2001, 2002]);
        let err = a.allocate(NatProto::Tcp, 40000, d, 3).unwrap_err();
        assert_eq!(err, Exhausted { external: EXT, proto: NatProto::Tcp, dst_ip: d.0, dst_port: 443, range: r });
        assert_eq!(
            err.to_string(),
            "no free tcp port on 203.0.113.2 towards 198.51.100.1:443: all of 2000-2002 in use"
        );
        assert_eq!(a.stats().exhausted, 1);
        assert_eq!(a.in_use(NatProto::Tcp, d), 3);
        // Other destinations are unaffected.
        assert_eq!(a.allocate(NatProto::Tcp, 2001, dst(2, 443), 0), Ok(2001));

        assert!(a.release(NatProto::Tcp, d, 2001));
        assert!(!a.release(NatProto::Tcp, d, 2001), "double release");
        assert!(!a.release(NatProto::Tcp, d, 3000), "outside the range");
        assert!(!a.release(NatProto::Tcp, dst(9, 443), 2001), "unknown destination");
        assert_eq!(a.destinations(), 2, "stray releases create no state");
        assert_eq!(a.stats().stray_releases, 3);
        assert_eq!(a.allocate(NatProto::Tcp, 40000, d, 7), Ok(2001), "the only free port");
        assert!(a.allocate(NatProto::Tcp, 40000, d, 8).is_err());
        assert_eq!(a.stats().exhausted, 2);
    }

    #[test]
    fn no_leak_after_releasing_everything() {
        let mut a = PortAllocator::new(EXT, PortRange::default());
        let mut held = Vec::new();
        for i in 0..5000u32 {
            let d = (Ipv4Addr::from(0x0a00_0000 + i), 80);
            for k in 0..3 {
                held.push((d, a.allocate(NatProto::Tcp, 40000, d, u64::from(i * 3 + k)).unwrap()));
            }
        }
        assert_eq!(a.destinations(), 5000);
        assert_eq!(a.stats().in_use, 15000);
        for (d, p) in held {
            assert!(a.release(NatProto::Tcp, d, p));
        }
        assert_eq!(a.destinations(), 0);
        assert_eq!(a.stats().in_use, 0);
        assert!(a.dests.capacity() <= 128, "map shrank, capacity {}", a.dests.capacity());
        assert_eq!(a.in_use(NatProto::Tcp, (Ipv4Addr::from(0x0a00_0000), 80)), 0);
    }

    #[test]
    fn whole_default_range_to_one_destination() {
        // Goes through the dense bitmap with all 16 summary words, exhausts, and comes back to sparse.
        let r = PortRange::default();
        let mut a = PortAllocator::new(EXT, r);
        let d = dst(1, 443);
        let mut seen = vec![false; 65536];
        for i in 0..r.size() {
            let p = a.allocate(NatProto::Tcp, 50000, d, u64::from(i)).unwrap();
            assert!(r.contains(p) && !seen[usize::from(p)], "port {p} handed out twice");
            seen[usize::from(p)] = true;
        }
        assert!(matches!(a.dests.values().next(), Some(Used::Dense(_))));
        assert!(a.allocate(NatProto::Tcp, 50000, d, 1).is_err());
        for p in [1024, 33333, 65535] {
            assert!(a.release(NatProto::Tcp, d, p));
        }
        let mut again: Vec<u16> = (0..3).map(|i| a.allocate(NatProto::Tcp, 1, d, i * 7919).unwrap()).collect();
        again.sort_unstable();
        assert_eq!(again, [1024, 33333, 65535]);
        for p in 1024..=65535 {
            assert!(a.release(NatProto::Tcp, d, p));
        }
        assert_eq!(a.destinations(), 0);
        let s = a.stats();
        assert_eq!((s.allocated, s.released, s.in_use), (u64::from(r.size()) + 3, u64::from(r.size()) + 3, 0));
    }

    #[test]
    fn dense_wraps_around() {
        let mut b = Bitmap::new(130);
        for i in 100..130 {
            b.insert(i);
        }
        b.insert(0);
        assert_eq!(b.next_free(100), Some(1));
        assert_eq!(b.next_free(0), Some(1));
        for i in 1..100 {
            b.insert(i);
        }
        assert_eq!(b.count, 130);
        assert_eq!(b.next_free(5), None);
        assert!(b.remove(64));
        assert_eq!(b.next_free(65), Some(64));
        assert_eq!(b.indices().len(), 129);
    }

    #[test]
    fn sparse_wraps_around() {
        assert_eq!(sparse_next_free(&[3, 4], 3, 5), Some(0));
        assert_eq!(sparse_next_free(&[0, 3, 4], 3, 5), Some(1));
        assert_eq!(sparse_next_free(&[0, 1, 2, 3, 4], 0, 5), None);
        assert_eq!(sparse_next_free(&[], 4, 5), Some(4));
        assert_eq!(sparse_next_free(&[1, 2], 0, 5), Some(0));
    }

    #[test]
    fn claim_blocks_allocation() {
        let mut a = PortAllocator::new(EXT, range(8080, 8081));
        let d = dst(1, 5555);
        assert!(a.claim(NatProto::Tcp, d, 8080));
        assert!(!a.claim(NatProto::Tcp, d, 8080), "already in use");
        assert!(!a.claim(NatProto::Tcp, d, 9000), "outside the range");
        assert_eq!(a.allocate(NatProto::Tcp, 8080, d, 0), Ok(8081));
        assert!(a.allocate(NatProto::Tcp, 8080, d, 0).is_err());
        assert!(a.release(NatProto::Tcp, d, 8080));
        assert_eq!(a.stats().claimed, 1);
    }

    #[test]
    fn deterministic() {
        let run = || {
            let mut a = PortAllocator::new(EXT, PortRange::default());
            (0..100).map(|i| a.allocate(NatProto::Udp, 40000, dst(1, 53), i).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate { proto: u8, dest: u8, preferred: u16, hash: u64 },
        Release { proto: u8, dest: u8, port: u16 },
    }

    fn op(first: u16, size: u16) -> impl Strategy<Value = Op> {
        // Ports a little outside the range too, to exercise the range checks.
        let ports = first.saturating_sub(2)..=first.saturating_add(size).saturating_add(1);
        prop_oneof![
            3 => (0u8..3, 0u8..3, ports.clone(), any::<u64>())
                .prop_map(|(proto, dest, preferred, hash)| Op::Allocate { proto, dest, preferred, hash }),
            2 => (0u8..3, 0u8..3, ports).prop_map(|(proto, dest, port)| Op::Release { proto, dest, port }),
        ]
    }

    fn scenario() -> impl Strategy<Value = (u16, u16, usize, Vec<Op>)> {
        (1u16..=65000, 1u16..=140, 1usize..=12).prop_flat_map(|(first, size, sparse_max)| {
            (Just(first), Just(size), Just(sparse_max), proptest::collection::vec(op(first, size), 1..600))
        })
    }

    proptest! {
        #[test]
        fn random_allocate_release_matches_model((first, size, sparse_max, ops) in scenario()) {
            let r = range(first, first + size - 1);
            let mut a = PortAllocator::new(EXT, r);
            // Small thresholds so sets switch between sparse and dense often.
            a.sparse_max = sparse_max;
            a.sparse_min = sparse_max / 2;
            let protos = [NatProto::Tcp, NatProto::Udp, NatProto::Icmp];
            // Two destinations differing only in port: distinct for TCP/UDP, the same one for ICMP.
            let dests = [dst(1, 80), dst(1, 81), dst(2, 80)];
            let norm = |p: usize, d: usize| if protos[p] == NatProto::Icmp && d == 1 { 0 } else { d };
            let mut model: BTreeMap<(usize, usize), BTreeSet<u16>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Allocate { proto, dest, preferred, hash } => {
                        let (p, d) = (usize::from(proto), usize::from(dest));
                        let set = model.entry((p, norm(p, d))).or_default();
                        let res = a.allocate(protos[p], preferred, dests[d], hash);
                        if (set.len() as u32) < r.size() {
                            let port = res.expect("a free port exists");
                            prop_assert!(r.contains(port));
                            prop_assert!(set.insert(port), "port {} handed out twice", port);
                            if r.contains(preferred) && port != preferred {
                                prop_assert!(set.contains(&preferred), "free preferred port not kept");
                            }
                        } else {
                            prop_assert!(res.is_err());
                        }
                        if set.is_empty() {
                            model.remove(&(p, norm(p, d)));
                        }
                    }
                    Op::Release { proto, dest, port } => {
                        let (p, d) = (usize::from(proto), usize::from(dest));
                        let key = (p, norm(p, d));
                        let expected = model.get_mut(&key).is_some_and(|s| s.remove(&port));
                        if model.get(&key).is_some_and(BTreeSet::is_empty) {
                            model.remove(&key);
                        }
                        prop_assert_eq!(a.release(protos[p], dests[d], port), expected);
                    }
                }
                for (&(p, d), set) in &model {
                    prop_assert_eq!(a.in_use(protos[p], dests[d]), set.len());
                }
            }
            for (&(p, d), set) in &model {
                for port in first.saturating_sub(2)..=first.saturating_add(size).saturating_add(1) {
                    prop_assert_eq!(a.is_in_use(protos[p], dests[d], port), set.contains(&port));
                }
            }
            let s = a.stats();
            let total: usize = model.values().map(BTreeSet::len).sum();
            prop_assert_eq!(s.in_use, total);
            prop_assert_eq!(s.destinations, model.len());
            prop_assert_eq!(a.destinations(), model.len());
            prop_assert_eq!(s.allocated, s.preferred_kept + s.remapped);
            prop_assert_eq!(s.allocated - s.released, total as u64);
        }
    }
}
