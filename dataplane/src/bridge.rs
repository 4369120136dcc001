//! The L2 bridge stage: MAC learning and forwarding within a network (bridge domain).
//!
//! For each frame that passed ingress: learn the source address on the ingress port (unless it is a group or
//! all-zero address, which are never learned, and are counted), then forward by destination: group addresses
//! and unknown unicast are flooded to every other port of the network; a known unicast destination goes to its
//! port, or is dropped as `same-port` if that is the ingress port. Frames never leave their network.
//!
//! Learning happens before forwarding within a batch (as VPP's `l2-learn` precedes `l2-fwd`): a reply in the
//! same batch as the first frame of a new host is already switched to it. The cost is that a frame whose
//! source and destination are the same address is dropped as `same-port`, which is what a bridge should do.
//!
//! State: one [`Fdb`] per network. Owned by the worker running the pipeline.

use crate::batch::Batch;
use crate::buffer::Nanos;
use crate::counters::DropReason;
use crate::fdb::{Fdb, FdbStats};
use crate::pipeline::{Context, Verdict, Verdicts};
use crate::topology::{NetId, Topology};
use crate::wire::MacAddr;
use serde::Serialize;

/// Learning outcomes that are not drops, counted per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BridgeStats {
    /// Frames whose source address was a group or all-zero address (forwarded, not learned).
    pub learn_skipped: u64,
}

/// The bridge stage and its MAC tables.
#[derive(Debug, Clone)]
pub struct Bridge {
    fdbs: Vec<Fdb>,
    stats: BridgeStats,
}

impl Bridge {
    /// Empty MAC tables for every network of `topo`.
    pub fn new(topo: &Topology) -> Self {
        let fdbs = topo.networks.iter().map(|n| Fdb::new(topo.ports.len(), n.mac_limit, n.mac_aging)).collect();
        Bridge { fdbs, stats: BridgeStats::default() }
    }

    /// Learns and decides for every frame whose verdict is still `Continue`.
    #[inline]
    pub fn process(&mut self, cx: &Context, topo: &Topology, batch: &Batch, verdicts: &mut Verdicts) {
        let Some(net) = topo.ports[cx.in_port as usize].network else {
            for i in 0..batch.len() {
                if verdicts.get(i) == Verdict::Continue {
                    verdicts.set(i, Verdict::Drop(DropReason::NoNetwork));
                }
            }
            return;
        };
        let fdb = &mut self.fdbs[net as usize];
        for (i, frame) in batch.iter().enumerate() {
            if verdicts.get(i) != Verdict::Continue {
                continue;
            }
            let data = frame.data();
            // Ingress guaranteed at least an Ethernet header.
            let (Some(dst), Some(src)) = (MacAddr::from_slice(data), MacAddr::from_slice(&data[6..])) else {
                verdicts.set(i, Verdict::Drop(DropReason::Runt));
                continue;
            };
            if src.is_multicast() || src.is_zero() {
                self.stats.learn_skipped += 1;
            } else {
                fdb.learn(src, cx.in_port, cx.now);
            }
            let v = if dst.is_multicast() {
                Verdict::Flood(net)
            } else {
                match fdb.lookup(dst, cx.now) {
                    Some(p) if p == cx.in_port => Verdict::Drop(DropReason::SamePort),
                    Some(p) => Verdict::Output(p),
                    None => Verdict::Flood(net),
                }
            };
            verdicts.set(i, v);
        }
    }

    /// Removes aged entries from every table.
    pub fn expire(&mut self, now: Nanos) {
        for f in &mut self.fdbs {
            f.expire(now);
        }
    }

    /// The MAC table of network `net`.
    pub fn fdb(&self, net: NetId) -> &Fdb {
        &self.fdbs[net as usize]
    }

    /// Counters of every table, by network id.
    pub fn fdb_stats(&self) -> Vec<FdbStats> {
        self.fdbs.iter().map(Fdb::stats).collect()
    }

    /// The stage's own counters.
    pub fn stats(&self) -> BridgeStats {
        self.stats
    }
}
