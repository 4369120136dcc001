//! The counters of a live switch ([`LiveReport`]): per port (with its kind, queues and AF_XDP mode), the
//! switch's tables, the connection table and every worker, in the shape of replay's counters JSON.
//!
//! Threads: a report (`Running::report`) may be taken while the workers forward: it takes each port queue's
//! lock, then each worker's shard in turn, briefly.

use super::{queue_names, Runtime};
use crate::config::PortKind;
use crate::conntrack::ConntrackStats;
use crate::counters::PortCounters;
use crate::ids::{table_id, PortId, NANOS_PER_SEC};
use crate::offload::Caps;
use crate::port::{Port, PortStats};
use crate::replay::{add_conntrack, add_port, conntrack_stats, port_counters, SwitchReport};
use crate::worker::{lock, WorkerReport};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

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
    /// What the port transmits as is, learned when it opened ([`crate::offload::Caps::names`]): `csum`,
    /// `tso4`, `tso6`, `uso`, or `-` (anything else is segmented or completed in software first).
    pub offloads: String,
    /// `up`, or `failed` when it could not be opened (it is retried with backoff; its queues are stand-ins that
    /// drop what is sent to them).
    pub state: &'static str,
    /// Why it is down (`state` = `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed attempts to open it so far (0 when up).
    pub open_attempts: u32,
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
    /// Worker iterations that panicked and were recovered from.
    pub worker_restarts: u64,
    /// Control requests that panicked (each failed alone).
    pub control_panics: u64,
}

/// The counters now, `assignment` being the workers' receive queues.
pub(super) fn report(rt: &Runtime, assignment: &[Vec<(PortId, usize)>]) -> LiveReport {
    let shared = &rt.shared;
    let uptime_ns = shared.clock.now() - NANOS_PER_SEC;
    // Port counters first (each queue lock briefly), then the switch's under one lock.
    let io: Vec<Vec<PortStats>> =
        shared.ports.iter().map(|lp| lp.queues.iter().map(|q| lock(q).stats()).collect()).collect();
    let caps: Vec<String> = shared
        .ports
        .iter()
        .map(|lp| lp.queues.first().map_or_else(|| Caps::NONE.names(), |q| lock(q).caps().names()))
        .collect();
    // One shard at a time, each locked only while its own counters are copied (that worker waits that long,
    // the others forward): the sums are not of one instant, as port counters never were.
    let mut tables: Option<SwitchReport> = None;
    let mut conntrack = ConntrackStats::default();
    let mut pipeline = vec![PortCounters::default(); shared.ports.len()];
    for link in &shared.shards {
        let sw = lock(&link.switch);
        let one = [&*sw];
        for (i, c) in pipeline.iter_mut().enumerate() {
            let o = port_counters(&one, table_id(i));
            add_port(c, &o);
        }
        let ct = conntrack_stats(&one);
        let r = SwitchReport::of(&sw);
        drop(sw);
        add_conntrack(&mut conntrack, &ct);
        match &mut tables {
            None => tables = Some(r),
            Some(t) => t.add_shard(r),
        }
    }
    let tables = tables.unwrap_or_else(|| SwitchReport::of_shards(&[]));
    let ports = shared
        .ports
        .iter()
        .enumerate()
        .map(|(i, lp)| {
            let queue_io = io[i].clone();
            let sum = queue_io.iter().fold(PortStats::default(), |a, s| a.merged(*s));
            let m = &rt.meta[i];
            let failure = lp.failure();
            let r = LivePortReport {
                state: if failure.is_some() { "failed" } else { "up" },
                open_attempts: failure.as_ref().map_or(0, |f| f.attempts),
                error: failure.map(|f| f.error),
                kind: m.kind,
                ifname: m.ifname.clone(),
                queues: lp.queues.len(),
                mode: m.mode.clone(),
                io: sum,
                queue_io,
                pipeline: pipeline[i],
                offloads: caps[i].clone(),
            };
            (lp.name.clone(), r)
        })
        .collect::<BTreeMap<_, _>>();
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
        worker_restarts: shared.faults.worker_restarts.load(Relaxed),
        control_panics: shared.faults.control_panics.load(Relaxed),
    }
}
