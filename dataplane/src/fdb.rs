//! The forwarding database (MAC table) of one network: which port each learned MAC address is behind.
//!
//! - **Learning**: the pipeline calls [`Fdb::learn`] with every frame's source address. Group (multicast,
//!   broadcast) and all-zero sources are refused by the caller before they get here.
//! - **Ageing**: an entry not refreshed for `aging` nanoseconds is treated as absent by [`Fdb::lookup`] at once
//!   (so forwarding decisions never depend on when the sweep ran), and removed by [`Fdb::expire`], which the
//!   driver calls off the hot path.
//! - **Limit and eviction** (MAC-flood resistance): the table holds at most `limit` entries. When it is full,
//!   a new address evicts the least recently used entry *of the port that holds the most entries* (the policy
//!   of Open vSwitch's `mac_learning_insert`). A port flooding random source addresses therefore only recycles
//!   its own entries once it is the largest holder; hosts behind other ports keep theirs. Ties go to the port
//!   with the lowest id. Least-recently-used is approximated with a per-port FIFO with second chance (CLOCK):
//!   an entry refreshed since it was queued goes to the back once before it can be evicted.
//! - **Moves**: a known address seen on another port moves there (the host moved, or a loop); moves are counted.
//! - **Storage** (`fdb/table.rs`): a hash table of cache lines holding two entries each, address, port and
//!   times together, so learning or looking up an address reads one line; [`Fdb::hash`] and [`Fdb::prefetch`]
//!   let a batch start loading every line its frames will touch before it handles the first (the bridge stage
//!   does, for sources and destinations), and [`Fdb::learn_hashed`] / [`Fdb::lookup_hashed`] use the hash
//!   computed then. In a table too large for the caches the misses of a whole burst then overlap instead of
//!   stalling one frame at a time.
//!
//! Threads: owned by the worker that runs the pipeline; not shared.

mod table;

use crate::ids::{Nanos, PortId};
use crate::wire::MacAddr;
use serde::Serialize;
use std::collections::VecDeque;
pub use table::MacHash;
use table::MacTable;

/// Entries reserved up front (at most the limit): 1,024 entries are a 128 KiB table, so a small network's
/// lines stay close together in the caches and the TLB; the table doubles as it fills.
const RESERVE: usize = 1024;

#[derive(Debug, Default, Clone)]
struct PortFifo {
    /// Entries currently on this port.
    count: usize,
    /// (mac, queued) records, oldest first; records whose entry changed since are stale and skipped.
    queue: VecDeque<(u64, Nanos)>,
}

/// What [`Fdb::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// A known address seen again on the same port.
    Refreshed,
    /// A known address seen again on the same port, last announced a quarter of the ageing time ago or more:
    /// with several workers, the caller tells the other replicas, so an address seen by one worker only does
    /// not age out of the others' tables (see `crate::pipeline::shard`).
    Renewed,
    /// A new address.
    New,
    /// A new address that evicted another one (table full).
    NewEvicted,
    /// A known address now seen on another port.
    Moved,
}

/// Counters of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FdbStats {
    /// Entries now.
    pub entries: usize,
    /// Addresses learned (new entries).
    pub learned: u64,
    /// Addresses that moved to another port.
    pub moved: u64,
    /// Entries evicted because the table was full.
    pub evicted: u64,
    /// Entries removed by ageing.
    pub aged: u64,
}

/// One learned address, as listed by [`Fdb::entries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FdbEntry {
    /// The address.
    pub mac: MacAddr,
    /// The port it was last seen on.
    pub port: PortId,
    /// When it was last seen.
    pub last_seen: Nanos,
}

/// The MAC table of one network. See the module documentation.
#[derive(Debug, Clone)]
pub struct Fdb {
    map: MacTable,
    ports: Vec<PortFifo>,
    limit: usize,
    aging: Nanos,
    /// A refresh this long after the entry was last announced is [`Learned::Renewed`].
    renew_every: Nanos,
    /// A lower bound of every entry's `last_seen` (`Nanos::MAX` when empty): nothing can have aged before
    /// `oldest + aging`, so [`Fdb::expire`] walks the table only when something may have.
    oldest: Nanos,
    stats: FdbStats,
}

impl Fdb {
    /// An empty table for ports `0..port_count`, holding at most `limit` entries that age after `aging` ns.
    pub fn new(port_count: usize, limit: usize, aging: Nanos) -> Self {
        assert!(port_count <= usize::from(table::MAX_PORT) + 1, "port ids beyond the MAC table's {}", table::MAX_PORT);
        Fdb {
            map: MacTable::with_capacity(limit.min(RESERVE)),
            ports: vec![PortFifo::default(); port_count],
            limit: limit.max(1),
            aging,
            renew_every: aging / 4,
            oldest: Nanos::MAX,
            stats: FdbStats::default(),
        }
    }

    /// Reports every refresh as [`Learned::Renewed`] (`true`), or one per quarter of the ageing time (`false`,
    /// the default). With every refresh announced, replicas age an address exactly when the worker seeing it
    /// would (deterministic drivers comparing N workers with one use this); with one per quarter, a replica may
    /// age it up to a quarter of the ageing time earlier, and floods to it meanwhile.
    pub fn set_renew_every_refresh(&mut self, every: bool) {
        self.renew_every = if every { 0 } else { self.aging / 4 };
    }

    /// The hash of `mac` in this table, for [`Fdb::prefetch`], [`Fdb::learn_hashed`] and [`Fdb::lookup_hashed`]
    /// (valid for this table whatever it does meanwhile).
    #[inline(always)]
    pub fn hash(&self, mac: MacAddr) -> MacHash {
        self.map.hash(mac.to_u64())
    }

    /// Asks the CPU to start loading the line that learning or looking up the address hashed to `h` reads first
    /// (a hint: nothing changes).
    #[inline(always)]
    pub fn prefetch(&self, h: MacHash) {
        self.map.prefetch(h);
    }

    /// Records that `mac` was seen on `port` at `now`.
    #[inline]
    pub fn learn(&mut self, mac: MacAddr, port: PortId, now: Nanos) -> Learned {
        self.learn_hashed(mac, self.hash(mac), port, now)
    }

    /// [`Fdb::learn`] for an address already hashed by [`Fdb::hash`].
    #[inline]
    pub fn learn_hashed(&mut self, mac: MacAddr, h: MacHash, port: PortId, now: Nanos) -> Learned {
        let key = mac.to_u64();
        let renew_every = self.renew_every;
        // Times normally only grow, but another worker's sighting or a carried-over entry may be older.
        if now < self.oldest {
            self.oldest = now;
        }
        if let Some(e) = self.map.get_mut(key, h) {
            if e.port() == port {
                e.last_seen = now;
                if now.saturating_sub(e.announced) >= renew_every {
                    e.announced = now;
                    return Learned::Renewed;
                }
                return Learned::Refreshed;
            }
            let old = e.port();
            e.set_port(port);
            e.last_seen = now;
            e.queued = now;
            e.announced = now;
            self.ports[old as usize].count -= 1;
            self.enqueue(port, key, now);
            self.stats.moved += 1;
            return Learned::Moved;
        }
        self.learn_new(key, h, port, now)
    }

    /// Adds an address the table does not hold, evicting one when full.
    #[inline(never)]
    fn learn_new(&mut self, key: u64, h: MacHash, port: PortId, now: Nanos) -> Learned {
        let evicted = self.map.len() >= self.limit && self.evict_fairly();
        if self.map.len() >= self.limit {
            // Nothing could be evicted (cannot happen while limit >= 1 and counts are right); refuse rather than
            // grow past the limit.
            return Learned::Refreshed;
        }
        self.map.insert(key, h, port, now);
        self.enqueue(port, key, now);
        self.stats.learned += 1;
        if evicted {
            self.stats.evicted += 1;
            Learned::NewEvicted
        } else {
            Learned::New
        }
    }

    /// The port `mac` is behind, unless unknown or aged out at `now`.
    #[inline(always)]
    pub fn lookup(&self, mac: MacAddr, now: Nanos) -> Option<PortId> {
        self.lookup_hashed(mac, self.hash(mac), now)
    }

    /// [`Fdb::lookup`] for an address already hashed by [`Fdb::hash`].
    #[inline(always)]
    pub fn lookup_hashed(&self, mac: MacAddr, h: MacHash, now: Nanos) -> Option<PortId> {
        let e = self.map.get(mac.to_u64(), h)?;
        (now.saturating_sub(e.last_seen) <= self.aging).then_some(e.port())
    }

    /// When `mac` was last seen (aged entries included until the next [`Fdb::expire`]).
    pub fn last_seen(&self, mac: MacAddr) -> Option<Nanos> {
        self.map.get(mac.to_u64(), self.hash(mac)).map(|e| e.last_seen)
    }

    /// How many port ids this table has room for.
    pub fn port_slots(&self) -> usize {
        self.ports.len()
    }

    /// Removes entries older than the ageing time; returns how many.
    /// Walks the table only when something may have aged (see `oldest`), and compacts a port's FIFO only when
    /// its stale records outnumber its entries, as learning does: with a million addresses seen all the time,
    /// walking the table and every FIFO each housekeeping interval cost more than forwarding.
    pub fn expire(&mut self, now: Nanos) -> usize {
        let aging = self.aging;
        if now.saturating_sub(self.oldest) <= aging {
            return 0;
        }
        let ports = &mut self.ports;
        let before = self.map.len();
        let mut oldest = Nanos::MAX;
        self.map.retain(|e| {
            let keep = now.saturating_sub(e.last_seen) <= aging;
            if keep {
                oldest = oldest.min(e.last_seen);
            } else {
                ports[e.port() as usize].count -= 1;
            }
            keep
        });
        self.oldest = oldest;
        let removed = before - self.map.len();
        self.stats.aged += removed as u64;
        for p in 0..self.ports.len() {
            if self.ports[p].queue.len() > 2 * self.ports[p].count + 64 {
                self.compact(p);
            }
        }
        removed
    }

    /// Removes every entry on `port` (the port went away or changed network).
    pub fn flush_port(&mut self, port: PortId) {
        self.map.retain(|e| e.port() != port);
        if let Some(p) = self.ports.get_mut(port as usize) {
            *p = PortFifo::default();
        }
    }

    /// This table for a new numbering of the ports (a configuration change): an entry on old port `p` moves to
    /// `map[p]`, or is dropped when that is `None`; `port_count`, `limit` and `aging` are the new settings (a
    /// smaller limit evicts as learning would, oldest first). Entries keep when they were last seen; counters
    /// carry over. Returns the new table and how many entries were dropped.
    pub fn remapped(&self, map: &[Option<PortId>], port_count: usize, limit: usize, aging: Nanos) -> (Fdb, usize) {
        let mut kept: Vec<(Nanos, u64, PortId)> = self
            .map
            .iter()
            .filter_map(|e| map.get(e.port() as usize).copied().flatten().map(|p| (e.last_seen, e.mac(), p)))
            .collect();
        let dropped = self.map.len() - kept.len();
        kept.sort_unstable();
        let mut fdb = Fdb::new(port_count, limit, aging);
        for (last_seen, key, port) in kept {
            fdb.learn(MacAddr::from_u64(key), port, last_seen);
        }
        let evicted = fdb.stats.evicted;
        fdb.stats = FdbStats { evicted: self.stats.evicted + evicted, ..self.stats };
        (fdb, dropped)
    }

    /// Number of entries (aged ones included until the next [`Fdb::expire`]).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Entries on `port`.
    pub fn port_count(&self, port: PortId) -> usize {
        self.ports.get(port as usize).map_or(0, |p| p.count)
    }

    /// The table's counters.
    pub fn stats(&self) -> FdbStats {
        FdbStats { entries: self.map.len(), ..self.stats }
    }

    /// Every live entry at `now`, sorted by address.
    pub fn entries(&self, now: Nanos) -> Vec<FdbEntry> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .filter(|e| now.saturating_sub(e.last_seen) <= self.aging)
            .map(|e| FdbEntry { mac: MacAddr::from_u64(e.mac()), port: e.port(), last_seen: e.last_seen })
            .collect();
        v.sort_by_key(|e| e.mac);
        v
    }

    fn enqueue(&mut self, port: PortId, key: u64, queued: Nanos) {
        let p = &mut self.ports[port as usize];
        p.count += 1;
        p.queue.push_back((key, queued));
        if p.queue.len() > 2 * p.count + 64 {
            self.compact(port as usize);
        }
    }

    /// Drops stale records from a port's FIFO so it stays proportional to the port's entry count.
    fn compact(&mut self, port: usize) {
        let map = &self.map;
        self.ports[port]
            .queue
            .retain(|(k, q)| map.get(*k, map.hash(*k)).is_some_and(|e| e.port() as usize == port && e.queued == *q));
    }

    /// Evicts the least recently used entry of the port with the most entries. Returns false if none found.
    fn evict_fairly(&mut self) -> bool {
        let Some(victim_port) = (0..self.ports.len())
            .filter(|&p| self.ports[p].count > 0)
            .max_by_key(|&p| (self.ports[p].count, std::cmp::Reverse(p)))
        else {
            return false;
        };
        // Each live record is looked at most twice (second chance), stale ones once.
        let budget = 2 * self.ports[victim_port].queue.len() + 1;
        for _ in 0..budget {
            let Some((key, queued)) = self.ports[victim_port].queue.pop_front() else {
                break;
            };
            let h = self.map.hash(key);
            let Some(e) = self.map.get_mut(key, h) else {
                continue;
            };
            if e.port() as usize != victim_port || e.queued != queued {
                continue; // stale record
            }
            if e.last_seen > e.queued {
                e.queued = e.last_seen;
                let q = e.queued;
                self.ports[victim_port].queue.push_back((key, q));
                continue;
            }
            self.map.remove(key, h);
            self.ports[victim_port].count -= 1;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
    }

    const S: Nanos = 1_000_000_000;

    #[test]
    fn remapped_moves_entries_to_new_port_ids_drops_unmapped_ones_and_keeps_ages_and_counters() {
        let mut f = Fdb::new(3, 10, 300 * S);
        f.learn(mac(1), 0, S);
        f.learn(mac(2), 1, 2 * S);
        f.learn(mac(3), 2, 3 * S);
        // A move, counted.
        f.learn(mac(3), 0, 4 * S);
        // Port 0 becomes 1, port 1 goes away, port 2 becomes 0.
        let (g, dropped) = f.remapped(&[Some(1), None, Some(0)], 2, 10, 300 * S);
        assert_eq!(dropped, 1);
        assert_eq!(g.lookup(mac(1), 5 * S), Some(1));
        assert_eq!(g.lookup(mac(2), 5 * S), None);
        assert_eq!(g.lookup(mac(3), 5 * S), Some(1));
        assert_eq!(g.lookup(mac(1), 302 * S), None, "still ages from when it was last seen");
        assert_eq!((g.stats().learned, g.stats().moved, g.stats().entries), (3, 1, 2));
        // A smaller limit keeps the most recently seen entries.
        let (h, _) = f.remapped(&[Some(0), Some(1), Some(2)], 3, 1, 300 * S);
        assert_eq!(h.len(), 1);
        assert_eq!(h.lookup(mac(3), 5 * S), Some(0));
    }

    #[test]
    fn learn_lookup_refresh_and_age() {
        let mut f = Fdb::new(2, 10, 300 * S);
        assert_eq!(f.learn(mac(1), 0, 0), Learned::New);
        assert_eq!(f.lookup(mac(1), 300 * S), Some(0));
        assert_eq!(f.lookup(mac(1), 300 * S + 1), None, "aged out at lookup, before any sweep");
        assert_eq!(f.learn(mac(1), 0, 50 * S), Learned::Refreshed, "seen again within a quarter of the ageing time");
        assert_eq!(f.learn(mac(1), 0, 100 * S), Learned::Renewed, "a quarter of the ageing time since announced");
        assert_eq!(f.learn(mac(1), 0, 101 * S), Learned::Refreshed, "renewed once per quarter");
        assert_eq!(f.lookup(mac(1), 401 * S), Some(0));
        assert_eq!(f.expire(402 * S), 1);
        assert!(f.is_empty());
        assert_eq!(f.port_count(0), 0);
        assert_eq!(f.stats().aged, 1);
    }

    #[test]
    fn expiry_skips_the_walk_only_while_nothing_can_have_aged() {
        let mut f = Fdb::new(2, 10, 300 * S);
        f.learn(mac(1), 0, 100 * S);
        assert_eq!(f.expire(200 * S), 0);
        // Another worker's older sighting (or a carried-over entry) lowers the bound.
        f.learn(mac(2), 1, 0);
        assert_eq!(f.expire(301 * S), 1, "the older entry aged: the table was walked");
        assert_eq!((f.lookup(mac(1), 301 * S), f.last_seen(mac(2))), (Some(0), None));
        assert_eq!(f.expire(399 * S), 0);
        assert_eq!(f.expire(401 * S), 1, "the bound moved to the survivor's last sighting");
        assert!(f.is_empty());
        assert_eq!(f.stats().aged, 2);
    }

    #[test]
    fn move_updates_port_and_counts() {
        let mut f = Fdb::new(2, 10, 300 * S);
        f.learn(mac(1), 0, 0);
        assert_eq!(f.learn(mac(1), 1, S), Learned::Moved);
        assert_eq!(f.lookup(mac(1), S), Some(1));
        assert_eq!((f.port_count(0), f.port_count(1)), (0, 1));
        assert_eq!(f.stats().moved, 1);
    }

    #[test]
    fn flood_of_new_macs_on_one_port_spares_other_ports() {
        let mut f = Fdb::new(3, 100, 300 * S);
        for i in 0..10 {
            f.learn(mac(i), 0, 0);
            f.learn(mac(1000 + i), 1, 0);
        }
        for i in 0..10_000 {
            f.learn(mac(100_000 + i), 2, S + i as u64);
        }
        assert_eq!(f.len(), 100);
        for i in 0..10 {
            assert_eq!(f.lookup(mac(i), 2 * S), Some(0), "port 0's hosts survive");
            assert_eq!(f.lookup(mac(1000 + i), 2 * S), Some(1), "port 1's hosts survive");
        }
        assert_eq!(f.port_count(2), 80);
        assert!(f.stats().evicted >= 10_000 - 80);
    }

    #[test]
    fn eviction_prefers_least_recently_used_of_largest_port() {
        let mut f = Fdb::new(1, 3, 300 * S);
        f.learn(mac(1), 0, 0);
        f.learn(mac(2), 0, 1);
        f.learn(mac(3), 0, 2);
        f.learn(mac(1), 0, 10); // mac 1 is used again: it gets a second chance
        assert_eq!(f.learn(mac(4), 0, 11), Learned::NewEvicted);
        assert_eq!(f.lookup(mac(1), 11), Some(0));
        assert_eq!(f.lookup(mac(2), 11), None, "oldest unused entry went");
    }

    #[test]
    fn fifo_stays_bounded_under_moves() {
        let mut f = Fdb::new(2, 8, 300 * S);
        for i in 0..10_000u64 {
            f.learn(mac(1), (i % 2) as PortId, i);
        }
        assert!(f.ports.iter().all(|p| p.queue.len() <= 2 * p.count + 65));
        assert_eq!(f.len(), 1);
    }
}
