//! The counters of a live switch ([`LiveReport`]): per port (with its kind, queues and AF_XDP mode), the
//! switch's tables, the connection table and every worker, in the shape of replay's counters JSON.
//!
//! Threads: a report (`Running::report`) may be taken while the workers forward: it takes each port queue's
//! lock, then the switch's, briefly.

use super::{queue_names, Runtime};
use crate::config::PortKind;
use crate::conntrack::ConntrackStats;
use crate::counters::PortCounters;
use crate::ids::{PortId, NANOS_PER_SEC};
use crate::port::{Port, PortStats};
use crate::replay::SwitchReport;
use crate::worker::{lock, WorkerReport};
use serde::Serialize;
use std::collections::BTreeMap;

/// What one port did, live.
#[derive(Debug, Clone, Serialize)]
pub struct LivePortReport {
    /// The port's kind.
    pub kind: PortKind,
    /// The interface it created or attached to.
    pub ifname: Option<String>,
    /// Number of queues.
    pub queues: usize,
    /// The AF_XDP attach mode obtained (AF_XDP ports only).
    pub mode: Option<String>,
    /// The port's own I/O counters, summed over its queues.
    pub io: PortStats,
    /// Per queue I/O counters.
    pub queue_io: Vec<PortStats>,
    /// The pipeline's counters for the port.
    pub pipeline: PortCounters,
}

/// The counters of a running (or stopped) live switch: the shape of the replay's counters JSON plus
/// per-port kind/queues/mode and per-worker counters.
#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    /// Nanoseconds since the workers' clock started.
    pub uptime_ns: u64,
    /// Frames received by all ports (including those the ports dropped).
    pub frames_in: u64,
    /// Frames sent by all ports.
    pub frames_out: u64,
    /// Per port, by name.
    pub ports: BTreeMap<String, LivePortReport>,
    /// The pipeline's and tables' counters (the same keys as replay's report).
    #[serde(flatten)]
    pub switch: SwitchReport,
    /// Connection table counters (the connections themselves are not listed: there may be hundreds of
    /// thousands; the control socket will page through them).
    pub conntrack: ConntrackStats,
    /// Per worker, by id.
    pub workers: Vec<WorkerReport>,
}

/// The counters now, `assignment` being the workers' receive queues.
pub(super) fn report(rt: &Runtime, assignment: &[Vec<(PortId, usize)>]) -> LiveReport {
    let shared = &rt.shared;
    let uptime_ns = shared.clock.now() - NANOS_PER_SEC;
    // Port counters first (each queue lock briefly), then the switch's under one lock.
    let io: Vec<Vec<PortStats>> =
        shared.ports.iter().map(|lp| lp.queues.iter().map(|q| lock(q).stats()).collect()).collect();
    let sw = lock(&shared.switch);
    let ports = shared
        .ports
        .iter()
        .enumerate()
        .map(|(i, lp)| {
            let queue_io = io[i].clone();
            let sum = queue_io.iter().fold(PortStats::default(), |a, s| PortStats {
                rx_packets: a.rx_packets + s.rx_packets,
                rx_bytes: a.rx_bytes + s.rx_bytes,
                rx_dropped: a.rx_dropped + s.rx_dropped,
                tx_packets: a.tx_packets + s.tx_packets,
                tx_bytes: a.tx_bytes + s.tx_bytes,
                tx_dropped: a.tx_dropped + s.tx_dropped,
            });
            let m = &rt.meta[i];
            let r = LivePortReport {
                kind: m.kind,
                ifname: m.ifname.clone(),
                queues: lp.queues.len(),
                mode: m.mode.clone(),
                io: sum,
                queue_io,
                pipeline: sw.counters().port(i as PortId),
            };
            (lp.name.clone(), r)
        })
        .collect::<BTreeMap<_, _>>();
    let (tables, conntrack) = (SwitchReport::of(&sw), sw.conntrack().stats());
    drop(sw);
    let workers = shared
        .workers
        .iter()
        .enumerate()
        .map(|(id, w)| w.report(id, queue_names(&shared.ports, &assignment[id])))
        .collect();
    LiveReport {
        uptime_ns,
        frames_in: ports.values().map(|p| p.io.rx_packets + p.io.rx_dropped).sum(),
        frames_out: ports.values().map(|p| p.io.tx_packets).sum(),
        ports,
        switch: tables,
        conntrack,
        workers,
    }
}
