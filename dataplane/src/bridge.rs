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
//! On a network with a gateway, frames addressed to the gateway MAC go to the router instead
//! (`Verdict::ToRouter`), and broadcast ARP is flooded *and* copied to the router, which answers if it asks
//! for the gateway address. Frames whose source is the gateway's own MAC are not learned (a host spoofing it
//! must not divert the router's traffic). Frames on a routed port (one with an address and no network) go to
//! the router if addressed to the port's MAC or broadcast, and are dropped as `not-for-us` otherwise.
//!
//! State: one [`Fdb`] per network. Owned by the worker running the pipeline.

use crate::batch::{Batch, BATCH_SIZE};
use crate::buffer::Nanos;
use crate::counters::DropReason;
use crate::fdb::{Fdb, FdbStats};
use crate::neigh::RifId;
use crate::packet::Parsed;
use crate::pipeline::{Context, Verdict, Verdicts};
use crate::topology::{NetId, Topology};
use crate::wire::{ethertype, MacAddr};
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
    pub fn process(
        &mut self,
        cx: &Context,
        topo: &Topology,
        batch: &Batch,
        parsed: &[Parsed; BATCH_SIZE],
        verdicts: &mut Verdicts,
    ) {
        let port = &topo.ports[cx.in_port as usize];
        let Some(net) = port.network else {
            return routed_port(port.rif, topo, batch, verdicts);
        };
        let gateway = topo.networks[net as usize].rif.map(|r| (r, topo.rifs[r as usize].mac));
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
            if src.is_multicast() || src.is_zero() || gateway.is_some_and(|(_, mac)| mac == src) {
                self.stats.learn_skipped += 1;
            } else {
                fdb.learn(src, cx.in_port, cx.now);
            }
            let v = match gateway {
                Some((rif, mac)) if dst == mac => Verdict::ToRouter(rif),
                Some((rif, _)) if dst.is_broadcast() && parsed[i].ethertype == ethertype::ARP => {
                    Verdict::FloodAndRoute(net, rif)
                }
                _ if dst.is_multicast() => Verdict::Flood(net),
                _ => match fdb.lookup(dst, cx.now) {
                    Some(p) if p == cx.in_port => Verdict::Drop(DropReason::SamePort),
                    Some(p) => Verdict::Output(p),
                    None => Verdict::Flood(net),
                },
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

/// Decides for frames on a routed port (no network): frames for the port's MAC, and broadcasts, go to the
/// router; anything else is not for us.
fn routed_port(rif: Option<RifId>, topo: &Topology, batch: &Batch, verdicts: &mut Verdicts) {
    let mac = rif.map(|r| topo.rifs[r as usize].mac);
    for (i, frame) in batch.iter().enumerate() {
        if verdicts.get(i) != Verdict::Continue {
            continue;
        }
        let dst = MacAddr::from_slice(frame.data()).unwrap_or(MacAddr::ZERO);
        let v = match (rif, mac) {
            (Some(rif), Some(mac)) if dst == mac || dst.is_broadcast() => Verdict::ToRouter(rif),
            (Some(_), _) => Verdict::Drop(DropReason::NotForUs),
            (None, _) => Verdict::Drop(DropReason::NoNetwork),
        };
        verdicts.set(i, v);
    }
}
