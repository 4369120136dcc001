//! The memory a configuration commits or may grow to, estimated from its sizes, for vswitchd to report at
//! start (`vswitchd run` logs it for its starting configuration; not yet for later applies). Figures are upper
//! bounds of the big items, not of every allocation.
//!
//! Included, per worker (each worker owns a shard: its own pools, queues and tables, so these grow with
//! `workers`): small buffers and large buffers (allocated at start), transmit queues (one per port), the
//! connection table at `[conntrack] limit` (a per-worker limit), the MAC tables at their `mac_limit` (each worker
//! keeps a replica) and the neighbour table full (a replica too). Once for the process: what control clients may
//! make vswitchd hold while requests are read and parsed (README § Security model).
//!
//! Left out: the parallel parses of small control lines and responses being written, the FIB, NAT port
//! bitmaps, overlay tables, the handoff rings between workers, thread stacks and the allocator's slack.
//!
//! Per-entry costs are the structures' own sizes plus their index overhead: a connection is one 64-byte slot
//! plus two 4-byte index references at ≤ 87.5 % load plus its eviction record (16 bytes), counted as 96 bytes;
//! a MAC entry as 64 bytes (key, port, time, hash-table overhead); a neighbour entry as 96 bytes (its frames
//! come from the pools).
//!
//! Threads: plain arithmetic, any thread.

use super::pool_buffers_for;
use crate::buffer::{Frame, BUF_SIZE, DEFAULT_LARGE_BUFFERS, LARGE_BUF_SIZE};
use crate::config::Config;
use crate::stage::TX_QUEUE_CAP;
use serde::Serialize;
use vswitch_api::proto::MAX_REQUEST_BYTES;

/// Bytes per connection-table entry (see the module documentation).
pub const CONNTRACK_ENTRY_BYTES: u64 = 96;
/// Bytes per MAC-table entry.
pub const FDB_ENTRY_BYTES: u64 = 64;
/// Bytes per neighbour entry.
pub const NEIGH_ENTRY_BYTES: u64 = 96;
/// Neighbour entries at most (the table's default).
pub const NEIGH_ENTRIES: u64 = 16_384;
/// What control clients may make vswitchd hold: 64 connections' small lines, the large-line budget, and one
/// parse of the largest line (its JSON tree up to ~22× the text).
pub const CONTROL_BYTES: u64 = 64 * 64 * 1024 + 2 * MAX_REQUEST_BYTES as u64 + 22 * MAX_REQUEST_BYTES as u64;

/// The estimate, in bytes, by item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryBudget {
    /// Packet buffers: every worker's pool of small buffers, allocated at start.
    pub buffers: u64,
    /// Every worker's large buffers (super-frames), allocated at start (their pages touched when first used).
    pub large_buffers: u64,
    /// Transmit queues: one per worker and port, allocated at start.
    pub tx_queues: u64,
    /// Every worker's connection table at `[conntrack] limit` (a per-worker limit).
    pub conntrack: u64,
    /// Every network's MAC table at its `mac_limit`, in every worker (each keeps a replica).
    pub fdb: u64,
    /// The neighbour table full, in every worker (each keeps a replica).
    pub neigh: u64,
    /// Control clients at their limits.
    pub control: u64,
    /// The sum.
    pub total: u64,
}

/// The estimate for `cfg` run with `workers` worker threads.
pub fn memory_budget(cfg: &Config, workers: usize) -> MemoryBudget {
    let (w, ports) = (workers.max(1) as u64, cfg.ports.len() as u64);
    let buffers = w * pool_buffers_for(cfg.ports.len()) as u64 * BUF_SIZE as u64;
    let large_buffers = w * DEFAULT_LARGE_BUFFERS as u64 * LARGE_BUF_SIZE as u64;
    let tx_queues = w * ports * TX_QUEUE_CAP as u64 * std::mem::size_of::<Frame>() as u64;
    let conntrack = w * cfg.conntrack.limit as u64 * CONNTRACK_ENTRY_BYTES;
    let fdb = w * cfg.networks.iter().map(|n| n.mac_limit as u64).sum::<u64>() * FDB_ENTRY_BYTES;
    let neigh = w * NEIGH_ENTRIES * NEIGH_ENTRY_BYTES;
    let control = CONTROL_BYTES;
    let total = buffers + large_buffers + tx_queues + conntrack + fdb + neigh + control;
    MemoryBudget { buffers, large_buffers, tx_queues, conntrack, fdb, neigh, control, total }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_and_queues_grow_with_ports_and_workers_tables_with_their_limits() {
        let small =
            Config::parse("[[network]]\nname = \"n\"\n[[port]]\nname = \"a\"\nkind = \"mem\"\nnetwork = \"n\"\n", "t")
                .unwrap();
        let b = memory_budget(&small, 1);
        assert_eq!(b.buffers, 4096 * BUF_SIZE as u64, "the smallest pool: 4096 buffers");
        assert_eq!(b.fdb, 8192 * FDB_ENTRY_BYTES);
        assert_eq!(b.conntrack, 262_144 * CONNTRACK_ENTRY_BYTES);
        assert_eq!(b.large_buffers, 64 * LARGE_BUF_SIZE as u64);
        assert_eq!(b.neigh, 16_384 * NEIGH_ENTRY_BYTES);
        assert_eq!(b.total, b.buffers + b.large_buffers + b.tx_queues + b.conntrack + b.fdb + b.neigh + b.control);
        // Two workers: every per-worker part doubles (each worker has its own pools, queues, connection table
        // and replicas of the MAC and neighbour tables); the control clients' part does not.
        let two = memory_budget(&small, 2);
        assert_eq!(
            (two.buffers, two.large_buffers, two.tx_queues, two.conntrack, two.fdb, two.neigh),
            (2 * b.buffers, 2 * b.large_buffers, 2 * b.tx_queues, 2 * b.conntrack, 2 * b.fdb, 2 * b.neigh)
        );
        assert_eq!(two.control, b.control);
        assert_eq!(two.total, 2 * (b.total - b.control) + b.control);
        let mut many = small.clone();
        for i in 0..100 {
            let mut p = many.ports[0].clone();
            p.name = format!("p{i}");
            many.ports.push(p);
        }
        let m = memory_budget(&many, 1);
        assert_eq!(m.buffers, (101 * TX_QUEUE_CAP as u64 + 128) * BUF_SIZE as u64);
        assert_eq!(m.tx_queues, 101 * b.tx_queues);
    }
}
