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
//! The number of entries is capped ([`NeighConfig::max_entries`]); when full, new resolutions are refused (the
//! caller counts `neigh-table-full`) rather than evicting a neighbour in use.
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

/// Work for the caller after [`NeighTable::tick`].
#[derive(Debug, Default)]
pub struct TickWork {
    /// (interface, address) to send an ARP request for.
    pub requests: Vec<(RifId, Ipv4Addr)>,
    /// Frames whose neighbour failed to resolve, with the interface: answer Host Unreachable and free.
    pub failed: Vec<(RifId, Frame)>,
}

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
    stats: NeighStats,
}

impl NeighTable {
    /// An empty table.
    pub fn new(cfg: NeighConfig) -> Self {
        NeighTable { cfg, map: FxHashMap::default(), stats: NeighStats::default() }
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
                if is_new && self.map.len() >= self.cfg.max_entries {
                    return Held::TableFull(frame);
                }
                let mut queue = VecDeque::with_capacity(self.cfg.queue_len);
                queue.push_back(frame);
                self.stats.queued += 1;
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
        let room = self.map.len() < self.cfg.max_entries;
        match self.map.get_mut(&key) {
            Some(state) => {
                if let State::Incomplete { queue, .. } = state {
                    released.extend(queue.drain(..));
                }
                *state = State::Resolved { mac, confirmed: now, probed: now };
            }
            None if create && room => {
                self.map.insert(key, State::Resolved { mac, confirmed: now, probed: now });
            }
            None => {}
        }
    }

    /// Housekeeping: retries, failures and ageing at `now`.
    pub fn tick(&mut self, now: Nanos, work: &mut TickWork) {
        let cfg = self.cfg;
        let stats = &mut self.stats;
        self.map.retain(|&(rif, ip), state| match state {
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
        });
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
    fn table_full_refuses_new_entries() {
        let mut pool = BufPool::new(8);
        let mut t = NeighTable::new(NeighConfig { max_entries: 1, ..NeighConfig::default() });
        t.hold(0, IP, frame(&mut pool, 1), 0);
        assert!(matches!(t.hold(0, Ipv4Addr::new(10, 0, 0, 3), frame(&mut pool, 2), 0), Held::TableFull(_)));
    }
}
