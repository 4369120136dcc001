//! The neighbour (ARP) table: IPv4 address → MAC address for each router interface, with the frames waiting
//! for a resolution.
//!
//! States, all on the caller's clock:
//! - **Incomplete**: an ARP request went out; up to [`NeighConfig::queue_len`] frames wait in the entry (the
//!   oldest is dropped, and counted, when a newer one arrives on a full queue). The request is retried every
//!   [`NeighConfig::retry_interval`] up to [`NeighConfig::retries`] times; then the entry **fails**: its frames
//!   are handed back to the caller (who answers each with ICMP Host Unreachable) and the entry stays failed for
//!   `retry_interval` so a burst to a dead host does not become an ARP storm.
//! - **Reachable**: confirmed by an ARP reply or request from the neighbour within [`NeighConfig::reachable`].
//! - **Stale**: older than that; still used for forwarding, and the first use asks the caller to re-validate it
//!   with an ARP request (at most once per `retry_interval`). Not confirmed for [`NeighConfig::gc_after`]: removed.
//!
//! The number of entries is capped ([`NeighConfig::max_entries`]). When full, a new entry evicts one from the
//! interface holding the most entries (fairness between interfaces, like the MAC table's between ports): among
//! the oldest [`EVICT_SCAN`] entries of that interface, a failed one first, else a stale one, else one still
//! being resolved (its waiting frames are handed back through [`NeighTable::take_evicted`], counted
//! `neigh-evicted`). Reachable neighbours are never evicted; only when the scan finds none of the others is the
//! new resolution refused (`neigh-table-full`). So sweeping a /16 recycles its own unresolved entries instead of
//! making new hosts unreachable. Each interface keeps its entries' keys in creation order; records of removed
//! entries are skipped and compacted away when they outnumber the entries.
//!
//! Threads: owned by the worker running the router; housekeeping ([`NeighTable::tick`]) is called off the hot
//! path by the same thread.

use crate::buffer::Frame;
use crate::ids::{Nanos, NANOS_PER_SEC};
use crate::wire::MacAddr;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::VecDeque;
use std::net::Ipv4Addr;

pub use crate::ids::RifId;

/// Tunables of the neighbour table (defaults follow Linux's ARP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighConfig {
    /// Frames held per unresolved neighbour.
    pub queue_len: usize,
    /// Time between ARP requests for an unresolved neighbour.
    pub retry_interval: Nanos,
    /// ARP requests sent before giving up.
    pub retries: u32,
    /// How long a confirmation keeps an entry reachable.
    pub reachable: Nanos,
    /// How long an unconfirmed entry lives.
    pub gc_after: Nanos,
    /// Most entries in the table.
    pub max_entries: usize,
}

impl Default for NeighConfig {
    fn default() -> Self {
        NeighConfig {
            queue_len: 4,
            retry_interval: NANOS_PER_SEC,
            retries: 3,
            reachable: 30 * NANOS_PER_SEC,
            gc_after: 120 * NANOS_PER_SEC,
            max_entries: 16_384,
        }
    }
}

#[derive(Debug)]
enum State {
    Incomplete { sent: u32, next_retry: Nanos, queue: VecDeque<Frame> },
    Failed { until: Nanos },
    Resolved { mac: MacAddr, confirmed: Nanos, probed: Nanos },
}

/// What [`NeighTable::lookup`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Send to this MAC.
    Mac(MacAddr),
    /// Send to this MAC, and send an ARP request to re-validate the (stale) entry.
    MacProbe(MacAddr),
    /// Not resolved: hand the frame to [`NeighTable::hold`].
    Unresolved,
}

/// What [`NeighTable::hold`] did with a frame.
#[derive(Debug)]
pub enum Held {
    /// Queued; send the first ARP request for this neighbour.
    SendRequest,
    /// Queued behind an earlier request.
    Queued,
    /// Queued, pushing out this older frame (the caller frees and counts it).
    Overflow(Frame),
    /// The neighbour failed to answer recently: the frame is given back (answer Host Unreachable).
    Unreachable(Frame),
    /// The table is full: the frame is given back.
    TableFull(Frame),
}

/// A change to one neighbour that the other workers' tables must hear of (several workers, see
/// `crate::pipeline::shard`): the worker that first holds a frame for an address resolves it (sends the
/// requests, times out); the others wait on its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighNote {
    /// ARP confirmed `ip` at `mac` (`create`: the entry was made, an answer to us; else only refreshed).
    Confirmed {
        /// Interface.
        rif: RifId,
        /// Address.
        ip: Ipv4Addr,
        /// Its MAC.
        mac: MacAddr,
        /// Make the entry if absent.
        create: bool,
    },
    /// A request for `ip` was sent: hold frames for it without asking again ([`NeighTable::pending_remote`]).
    Pending {
        /// Interface.
        rif: RifId,
        /// Address.
        ip: Ipv4Addr,
    },
    /// A stale entry was probed ([`NeighTable::probed_remote`]).
    Probed {
        /// Interface.
        rif: RifId,
        /// Address.
        ip: Ipv4Addr,
    },
    /// Resolution failed ([`NeighTable::fail_remote`]).
    Failed {
        /// Interface.
        rif: RifId,
        /// Address.
        ip: Ipv4Addr,
    },
}

/// Work for the caller after [`NeighTable::tick`].
#[derive(Debug, Default)]
pub struct TickWork {
    /// (interface, address) to send an ARP request for.
    pub requests: Vec<(RifId, Ipv4Addr)>,
    /// Frames whose neighbour failed to resolve, with the interface: answer Host Unreachable and free.
    pub failed: Vec<(RifId, Frame)>,
    /// The entries that failed.
    pub failed_entries: Vec<(RifId, Ipv4Addr)>,
}

/// How many of an interface's oldest records one eviction looks at.
pub const EVICT_SCAN: usize = 64;

/// Counters of the neighbour table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NeighStats {
    /// Entries now.
    pub entries: usize,
    /// Frames queued waiting for resolution.
    pub queued: u64,
    /// Queued frames pushed out by newer ones.
    pub queue_overflow: u64,
    /// Resolutions that failed (no answer).
    pub failed: u64,
    /// Entries removed unconfirmed.
    pub aged: u64,
    /// Entries evicted to make room for a new one.
    pub evicted: u64,
    /// New entries refused because the table was full of reachable neighbours.
    pub refused: u64,
}

/// One entry as listed by [`NeighTable::entries`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NeighEntry {
    /// Router interface.
    pub rif: RifId,
    /// Neighbour address.
    pub ip: Ipv4Addr,
    /// Its MAC, if resolved.
    pub mac: Option<MacAddr>,
    /// `incomplete`, `failed`, `reachable` or `stale`.
    pub state: &'static str,
}

/// The neighbour table. See the module documentation.
#[derive(Debug)]
pub struct NeighTable {
    cfg: NeighConfig,
    map: FxHashMap<(RifId, u32), State>,
    /// Per interface: its entries' addresses in creation order (with stale records, see the module docs).
    order: Vec<VecDeque<u32>>,
    /// Per interface: its entries.
    counts: Vec<usize>,
    /// Frames of evicted unresolved entries, for [`NeighTable::take_evicted`].
    evicted: Vec<Frame>,
    stats: NeighStats,
}

impl NeighTable {
    /// An empty table.
    pub fn new(cfg: NeighConfig) -> Self {
        NeighTable {
            cfg,
            map: FxHashMap::default(),
            order: Vec::new(),
            counts: Vec::new(),
            evicted: Vec::with_capacity(cfg.queue_len),
            stats: NeighStats::default(),
        }
    }

    /// Hands out the frames that waited in an entry evicted by the last [`NeighTable::hold`] or
    /// [`NeighTable::confirm`] (the caller drops them as `neigh-evicted`).
    pub fn take_evicted(&mut self, mut f: impl FnMut(Frame)) {
        self.evicted.drain(..).for_each(&mut f);
    }

    /// Records a new entry of `rif` (the caller inserts it into the map).
    fn record(&mut self, rif: RifId, ip: u32) {
        let r = usize::from(rif);
        if self.order.len() <= r {
            self.order.resize_with(r + 1, VecDeque::new);
            self.counts.resize(r + 1, 0);
        }
        self.counts[r] += 1;
        let (map, order) = (&self.map, &mut self.order[r]);
        if order.len() >= 2 * self.counts[r] + 64 {
            let mut seen = rustc_hash::FxHashSet::default();
            order.retain(|&a| map.contains_key(&(rif, a)) && seen.insert(a));
        }
        order.push_back(ip);
    }

    /// Makes room for one entry, if the table is full: see the module documentation. False: full of reachable
    /// neighbours (refused).
    fn make_room(&mut self, now: Nanos) -> bool {
        if self.map.len() < self.cfg.max_entries {
            return true;
        }
        let Some(rif) = (0..self.counts.len()).max_by_key(|&r| self.counts[r]) else { return false };
        let order = &mut self.order[rif];
        let mut best: Option<(u8, usize)> = None;
        let mut i = 0;
        while i < order.len() && i < EVICT_SCAN {
            let key = (crate::ids::table_id(rif), order[i]);
            let rank = match self.map.get(&key) {
                None => {
                    order.remove(i);
                    continue;
                }
                Some(State::Failed { .. }) => 0,
                Some(State::Resolved { confirmed, .. }) if now.saturating_sub(*confirmed) > self.cfg.reachable => 1,
                Some(State::Incomplete { .. }) => 2,
                Some(State::Resolved { .. }) => u8::MAX,
            };
            if rank != u8::MAX && best.is_none_or(|(b, _)| rank < b) {
                best = Some((rank, i));
            }
            i += 1;
        }
        let Some((_, i)) = best else {
            self.stats.refused += 1;
            return false;
        };
        let Some(ip) = order.remove(i) else { return false };
        if let Some(State::Incomplete { queue, .. }) = self.map.remove(&(crate::ids::table_id(rif), ip)) {
            self.evicted.extend(queue);
        }
        self.counts[rif] -= 1;
        self.stats.evicted += 1;
        true
    }

    /// The MAC to send to `ip` on `rif`, if known.
    #[inline(always)]
    pub fn lookup(&mut self, rif: RifId, ip: Ipv4Addr, now: Nanos) -> Lookup {
        match self.map.get_mut(&(rif, u32::from(ip))) {
            Some(State::Resolved { mac, confirmed, probed }) => {
                if now.saturating_sub(*confirmed) > self.cfg.reachable
                    && now.saturating_sub(*probed) >= self.cfg.retry_interval
                {
                    *probed = now;
                    Lookup::MacProbe(*mac)
                } else {
                    Lookup::Mac(*mac)
                }
            }
            _ => Lookup::Unresolved,
        }
    }

    /// Entries in the table, resolved or not.
    #[inline]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The MAC of `ip` on `rif` if resolved, without touching the entry (a hint for prefetching what sending
    /// to it will read; [`NeighTable::lookup`] decides).
    #[inline]
    pub fn peek(&self, rif: RifId, ip: Ipv4Addr) -> Option<MacAddr> {
        match self.map.get(&(rif, u32::from(ip))) {
            Some(State::Resolved { mac, .. }) => Some(*mac),
            _ => None,
        }
    }

    /// Keeps `frame` until `ip` on `rif` resolves (call after [`NeighTable::lookup`] said `Unresolved`).
    pub fn hold(&mut self, rif: RifId, ip: Ipv4Addr, frame: Frame, now: Nanos) -> Held {
        let key = (rif, u32::from(ip));
        match self.map.get_mut(&key) {
            Some(State::Incomplete { queue, .. }) => {
                self.stats.queued += 1;
                if queue.len() >= self.cfg.queue_len {
                    let old = queue.pop_front();
                    queue.push_back(frame);
                    self.stats.queue_overflow += 1;
                    return match old {
                        Some(old) => Held::Overflow(old),
                        None => Held::Queued,
                    };
                }
                queue.push_back(frame);
                Held::Queued
            }
            Some(State::Failed { until }) if now < *until => Held::Unreachable(frame),
            Some(State::Resolved { .. }) => Held::Unreachable(frame),
            existing => {
                let is_new = existing.is_none();
                if is_new && !self.make_room(now) {
                    return Held::TableFull(frame);
                }
                let mut queue = VecDeque::with_capacity(self.cfg.queue_len);
                queue.push_back(frame);
                self.stats.queued += 1;
                if is_new {
                    self.record(rif, key.1);
                }
                self.map.insert(key, State::Incomplete { sent: 1, next_retry: now + self.cfg.retry_interval, queue });
                Held::SendRequest
            }
        }
    }

    /// Records that `ip` on `rif` is at `mac` (an ARP reply or request from it addressed to us). Creates the
    /// entry only if `create`; otherwise only updates an existing one (gratuitous ARP, requests from hosts we
    /// never asked about). Returns the frames that were waiting for it, oldest first.
    pub fn confirm(
        &mut self,
        rif: RifId,
        ip: Ipv4Addr,
        mac: MacAddr,
        now: Nanos,
        create: bool,
        released: &mut Vec<Frame>,
    ) {
        let key = (rif, u32::from(ip));
        if let Some(state) = self.map.get_mut(&key) {
            if let State::Incomplete { queue, .. } = state {
                released.extend(queue.drain(..));
            }
            *state = State::Resolved { mac, confirmed: now, probed: now };
        } else if create && self.make_room(now) {
            self.record(rif, key.1);
            self.map.insert(key, State::Resolved { mac, confirmed: now, probed: now });
        }
    }

    /// Another worker sent a request for `ip` on `rif`: an absent entry becomes incomplete without a request of
    /// its own, so frames for it wait for that worker's answer ([`NeighTable::confirm`]) or failure
    /// ([`NeighTable::fail_remote`]). Should neither arrive (a lost update), the entry fails on its own after
    /// every retry the other worker could have made, and one more interval.
    pub fn pending_remote(&mut self, rif: RifId, ip: Ipv4Addr, now: Nanos) {
        let key = (rif, u32::from(ip));
        if !self.map.contains_key(&key) && self.make_room(now) {
            self.record(rif, key.1);
            let wait = self.cfg.retry_interval.saturating_mul(u64::from(self.cfg.retries) + 2);
            let queue = VecDeque::new();
            self.map.insert(key, State::Incomplete { sent: self.cfg.retries, next_retry: now + wait, queue });
        }
    }

    /// Another worker probed the stale entry for `ip` on `rif` at `now`: this table does not probe it again
    /// within the retry interval.
    pub fn probed_remote(&mut self, rif: RifId, ip: Ipv4Addr, now: Nanos) {
        if let Some(State::Resolved { probed, .. }) = self.map.get_mut(&(rif, u32::from(ip))) {
            *probed = (*probed).max(now);
        }
    }

    /// Another worker's resolution of `ip` on `rif` failed: the frames held here for it are moved to `failed`
    /// (answer Host Unreachable), and the entry fails as the other worker's did (not counted again).
    pub fn fail_remote(&mut self, rif: RifId, ip: Ipv4Addr, now: Nanos, failed: &mut Vec<Frame>) {
        if let Some(state) = self.map.get_mut(&(rif, u32::from(ip))) {
            if let State::Incomplete { queue, .. } = state {
                failed.extend(queue.drain(..));
                *state = State::Failed { until: now + self.cfg.retry_interval };
            }
        }
    }

    /// Copies the resolved entries into `into` (a table for a rebuilt router), their interface renumbered by
    /// `map` (`None`: the interface is gone or changed; the entry is not copied), with their timers as they were.
    /// Unresolved entries and the frames they hold are not copied. Returns `(copied, dropped)`.
    pub fn carry_into(&self, into: &mut NeighTable, map: impl Fn(RifId) -> Option<RifId>) -> (usize, usize) {
        let (mut copied, mut dropped) = (0, 0);
        for (&(rif, ip), state) in &self.map {
            if let State::Resolved { mac, confirmed, probed } = state {
                match map(rif) {
                    Some(r) if into.map.len() < into.cfg.max_entries => {
                        into.map.insert((r, ip), State::Resolved { mac: *mac, confirmed: *confirmed, probed: *probed });
                        copied += 1;
                    }
                    _ => dropped += 1,
                }
            }
        }
        (copied, dropped)
    }

    /// Housekeeping: retries, failures and ageing at `now`.
    pub fn tick(&mut self, now: Nanos, work: &mut TickWork) {
        let cfg = self.cfg;
        let stats = &mut self.stats;
        let counts = &mut self.counts;
        self.map.retain(|&(rif, ip), state| {
            let keep = Self::tick_entry(&cfg, stats, work, now, rif, ip, state);
            if !keep {
                if let Some(c) = counts.get_mut(usize::from(rif)) {
                    *c = c.saturating_sub(1);
                }
            }
            keep
        });
    }

    /// One entry's housekeeping; false: remove it.
    fn tick_entry(
        cfg: &NeighConfig,
        stats: &mut NeighStats,
        work: &mut TickWork,
        now: Nanos,
        rif: RifId,
        ip: u32,
        state: &mut State,
    ) -> bool {
        match state {
            State::Incomplete { sent, next_retry, queue } => {
                if now < *next_retry {
                    return true;
                }
                if *sent < cfg.retries {
                    *sent += 1;
                    *next_retry = now + cfg.retry_interval;
                    work.requests.push((rif, Ipv4Addr::from(ip)));
                    return true;
                }
                stats.failed += 1;
                work.failed.extend(queue.drain(..).map(|f| (rif, f)));
                work.failed_entries.push((rif, Ipv4Addr::from(ip)));
                *state = State::Failed { until: now + cfg.retry_interval };
                true
            }
            State::Failed { until } => now < *until,
            State::Resolved { confirmed, .. } => {
                let keep = now.saturating_sub(*confirmed) <= cfg.gc_after;
                if !keep {
                    stats.aged += 1;
                }
                keep
            }
        }
    }

    /// Every entry, sorted by interface and address.
    pub fn entries(&self, now: Nanos) -> Vec<NeighEntry> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .map(|(&(rif, ip), st)| {
                let (mac, state) = match st {
                    State::Incomplete { .. } => (None, "incomplete"),
                    State::Failed { .. } => (None, "failed"),
                    State::Resolved { mac, confirmed, .. } => (
                        Some(*mac),
                        if now.saturating_sub(*confirmed) > self.cfg.reachable { "stale" } else { "reachable" },
                    ),
                };
                NeighEntry { rif, ip: Ipv4Addr::from(ip), mac, state }
            })
            .collect();
        v.sort_by_key(|e| (e.rif, e.ip));
        v
    }

    /// Entries still being resolved.
    pub fn pending(&self) -> usize {
        self.map.values().filter(|s| matches!(s, State::Incomplete { .. })).count()
    }

    /// Frames waiting in incomplete entries (for the test harnesses' buffer accounting; walks the table).
    pub fn held(&self) -> usize {
        self.map
            .values()
            .map(|s| match s {
                State::Incomplete { queue, .. } => queue.len(),
                _ => 0,
            })
            .sum()
    }

    /// The table's counters.
    pub fn stats(&self) -> NeighStats {
        NeighStats { entries: self.map.len(), ..self.stats }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::BufPool;

    const S: Nanos = NANOS_PER_SEC;
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn frame(pool: &mut BufPool, tag: u8) -> Frame {
        let mut f = pool.alloc().unwrap();
        f.load(&[tag; 60]).unwrap();
        f
    }

    #[test]
    fn unresolved_frames_wait_and_are_released_in_order_on_reply() {
        let mut pool = BufPool::new(8);
        let mut t = NeighTable::new(NeighConfig::default());
        assert_eq!(t.lookup(0, IP, 0), Lookup::Unresolved);
        assert!(matches!(t.hold(0, IP, frame(&mut pool, 1), 0), Held::SendRequest));
        assert!(matches!(t.hold(0, IP, frame(&mut pool, 2), 0), Held::Queued));
        let mut out = Vec::new();
        t.confirm(0, IP, MAC, S / 2, false, &mut out);
        assert_eq!(out.iter().map(|f| f.data()[0]).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(t.lookup(0, IP, S), Lookup::Mac(MAC));
    }

    #[test]
    fn queue_is_bounded_drop_oldest() {
        let mut pool = BufPool::new(8);
        let mut t = NeighTable::new(NeighConfig { queue_len: 2, ..NeighConfig::default() });
        t.hold(0, IP, frame(&mut pool, 1), 0);
        t.hold(0, IP, frame(&mut pool, 2), 0);
        match t.hold(0, IP, frame(&mut pool, 3), 0) {
            Held::Overflow(old) => assert_eq!(old.data()[0], 1),
            other => panic!("expected overflow, got {other:?}"),
        }
        assert_eq!(t.stats().queue_overflow, 1);
    }

    #[test]
    fn retries_then_fails_and_returns_frames() {
        let mut pool = BufPool::new(8);
        let mut t = NeighTable::new(NeighConfig::default());
        t.hold(0, IP, frame(&mut pool, 1), 0);
        let mut w = TickWork::default();
        t.tick(S, &mut w);
        t.tick(2 * S, &mut w);
        assert_eq!(w.requests, vec![(0, IP), (0, IP)], "two retries after the first request");
        assert!(w.failed.is_empty());
        t.tick(3 * S, &mut w);
        assert_eq!(w.failed.len(), 1);
        assert!(matches!(t.hold(0, IP, frame(&mut pool, 2), 3 * S), Held::Unreachable(_)));
        // After the hold-down a new resolution starts.
        let mut w = TickWork::default();
        t.tick(4 * S + 1, &mut w);
        assert!(matches!(t.hold(0, IP, frame(&mut pool, 3), 4 * S + 1), Held::SendRequest));
    }

    #[test]
    fn stale_entries_are_probed_once_per_interval_and_aged() {
        let mut t = NeighTable::new(NeighConfig::default());
        t.confirm(0, IP, MAC, 0, true, &mut Vec::new());
        assert_eq!(t.lookup(0, IP, 31 * S), Lookup::MacProbe(MAC));
        assert_eq!(t.lookup(0, IP, 31 * S + 1), Lookup::Mac(MAC));
        let mut w = TickWork::default();
        t.tick(121 * S, &mut w);
        assert_eq!(t.lookup(0, IP, 121 * S), Lookup::Unresolved);
        assert_eq!(t.stats().aged, 1);
    }

    #[test]
    fn confirm_without_create_only_updates() {
        let mut t = NeighTable::new(NeighConfig::default());
        t.confirm(0, IP, MAC, 0, false, &mut Vec::new());
        assert_eq!(t.lookup(0, IP, 0), Lookup::Unresolved);
        t.confirm(0, IP, MAC, 0, true, &mut Vec::new());
        let other = MacAddr([2, 0, 0, 0, 0, 9]);
        t.confirm(0, IP, other, 1, false, &mut Vec::new());
        assert_eq!(t.lookup(0, IP, 1), Lookup::Mac(other));
    }

    #[test]
    fn a_full_table_evicts_failed_then_stale_then_unresolved_never_reachable() {
        let mut pool = BufPool::new(64);
        let cfg = NeighConfig { max_entries: 4, ..NeighConfig::default() };
        let mut t = NeighTable::new(cfg);
        let ip = |i: u8| Ipv4Addr::new(10, 0, 0, i);
        // 1 reachable (refreshed), 2 stale, 3 unresolved, 4 failed.
        t.confirm(0, ip(1), MAC, 0, true, &mut Vec::new());
        t.confirm(0, ip(2), MAC, 0, true, &mut Vec::new());
        t.hold(0, ip(4), frame(&mut pool, 4), 0);
        let mut w = TickWork::default();
        for s in 1..=3 {
            t.tick(s * S, &mut w);
        }
        t.hold(0, ip(3), frame(&mut pool, 3), 3 * S);
        t.confirm(0, ip(1), MAC, 31 * S, false, &mut Vec::new());
        let now = 3 * S + 1;
        let now_stale = 40 * S;
        assert!(matches!(t.hold(0, ip(5), frame(&mut pool, 5), now), Held::SendRequest));
        assert_eq!(t.lookup(0, ip(4), now), Lookup::Unresolved);
        assert_eq!(t.entries(now).iter().filter(|e| e.state == "failed").count(), 0, "the failed one went first");
        // Full again: at 40 s entry 2 is stale (1 was refreshed at 31 s): it goes next.
        assert!(matches!(t.hold(0, ip(6), frame(&mut pool, 6), now_stale), Held::SendRequest));
        assert_eq!(t.lookup(0, ip(2), now_stale), Lookup::Unresolved, "stale evicted");
        // Then the oldest unresolved one (3), its frame handed back.
        assert!(matches!(t.hold(0, ip(7), frame(&mut pool, 7), now_stale), Held::SendRequest));
        let mut dropped = Vec::new();
        t.take_evicted(|f| dropped.push(f.data()[0]));
        assert_eq!(dropped, vec![3]);
        assert_eq!(t.stats().evicted, 3);
        assert_eq!(t.lookup(0, ip(1), now_stale), Lookup::Mac(MAC), "the reachable one stays");
    }

    #[test]
    fn a_table_full_of_reachable_neighbours_refuses() {
        let mut pool = BufPool::new(8);
        let mut t = NeighTable::new(NeighConfig { max_entries: 1, ..NeighConfig::default() });
        t.confirm(0, IP, MAC, 0, true, &mut Vec::new());
        assert!(matches!(t.hold(0, Ipv4Addr::new(10, 0, 0, 3), frame(&mut pool, 2), 0), Held::TableFull(_)));
        assert_eq!(t.stats().refused, 1);
    }

    #[test]
    fn eviction_takes_from_the_interface_with_the_most_entries() {
        let mut pool = BufPool::new(64);
        let mut t = NeighTable::new(NeighConfig { max_entries: 4, ..NeighConfig::default() });
        t.hold(1, Ipv4Addr::new(10, 1, 0, 1), frame(&mut pool, 1), 0);
        for i in 1..=3 {
            t.hold(0, Ipv4Addr::new(10, 0, 0, i), frame(&mut pool, i), 0);
        }
        // Interface 1's only entry is the oldest, but interface 0 holds three: its oldest goes.
        t.hold(1, Ipv4Addr::new(10, 1, 0, 2), frame(&mut pool, 9), 0);
        let mut dropped = Vec::new();
        t.take_evicted(|f| dropped.push(f.data()[0]));
        assert_eq!(dropped, vec![1]);
        let left: Vec<_> = t.entries(0).iter().map(|e| (e.rif, e.ip)).collect();
        assert!(left.contains(&(1, Ipv4Addr::new(10, 1, 0, 1))));
        assert!(!left.contains(&(0, Ipv4Addr::new(10, 0, 0, 1))));
    }

    #[test]
    fn a_sweep_keeps_the_table_bounded_and_its_records_too() {
        let mut pool = BufPool::new(256);
        let mut t = NeighTable::new(NeighConfig { max_entries: 100, ..NeighConfig::default() });
        for i in 0..20_000u32 {
            let ip = Ipv4Addr::from(0x0a00_0000 + i);
            assert!(matches!(t.hold(0, ip, frame(&mut pool, 1), 0), Held::SendRequest), "{i}");
            t.take_evicted(|f| pool.free(f));
            assert!(t.map.len() <= 100);
            assert!(t.order[0].len() <= 2 * t.counts[0] + 65);
        }
    }
}
