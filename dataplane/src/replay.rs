//! The replay driver behind `vswitchd replay`: runs the pipeline over capture files on a virtual clock.
//!
//! Every configured port becomes a [`PcapPort`]: ports named in the inputs receive that capture, every port
//! writes what it sends to `OUT_DIR/PORT.pcap` (an empty capture if it sent nothing). Input frames from all ports
//! are merged by timestamp (ties: the port written first in the configuration goes first; within a port, file
//! order), and the clock is the timestamp of the frame being processed. Each emitted frame carries the timestamp
//! of the input frame that caused it; frames made by housekeeping (ARP retries, Host Unreachable after an ARP
//! timeout) carry the virtual time of the housekeeping step. Housekeeping runs every
//! [`HOUSEKEEPING_INTERVAL`] of virtual time, and after the last input frame the clock keeps running in such
//! steps while the router still waits for ARP answers (at most a minute). Same inputs ⇒ byte-identical
//! outputs.
//!
//! Everything that can be wrong with the inputs (a port not in the configuration, a port given twice, an
//! unreadable capture, a link type other than Ethernet, an invalid overlay state) is found before any output file
//! is created.

use crate::batch::Batch;
use crate::bridge::BridgeStats;
use crate::buffer::{BufPool, DEFAULT_LARGE_BUFFERS};
use crate::config::Config;
use crate::conntrack::ConntrackStats;
use crate::counters::PortCounters;
use crate::fdb::FdbStats;
use crate::ids::{table_id, Nanos, NANOS_PER_SEC};
use crate::nat::ports::SnatStats;
use crate::nat::{ConnectionInfo, NatStats};
use crate::neigh::NeighStats;
use crate::overlay::{OverlayError, OverlayState, OverlayStats};
use crate::pipeline::shards::Shards;
use crate::pipeline::{Switch, TxQueues, HOUSEKEEPING_INTERVAL};
use crate::port::pcap::{read_capture, CaptureError, CaptureWriter, CapturedFrame, PcapPort};
use crate::port::{Port, PortError, PortStats};
use crate::router::RouterStats;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Buffers in the replay pool: a burst, floods of it to many ports, and full transmit queues.
const POOL_SIZE: usize = 8192;

/// One `--in PORT=FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayInput {
    /// The configured port that receives the capture.
    pub port: String,
    /// The capture file.
    pub path: PathBuf,
}

impl std::str::FromStr for ReplayInput {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((port, path)) if !port.is_empty() && !path.is_empty() => {
                Ok(ReplayInput { port: port.to_string(), path: PathBuf::from(path) })
            }
            _ => Err(format!("expected PORT=FILE.pcap, got {s:?}")),
        }
    }
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input names a port the configuration does not have.
    #[error("--in {port}=…: no port named {port:?} in the configuration; known ports: {known}")]
    UnknownPort {
        /// The name given.
        port: String,
        /// The configured port names, comma-separated.
        known: String,
    },
    /// Two inputs name the same port.
    #[error("--in {0}=…: port {0:?} is given more than one input capture")]
    DuplicateInput(String),
    /// An input capture cannot be used.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// An output file or directory could not be written.
    #[error("{path}: cannot write: {source}")]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A port failed while running.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The `--overlay` state was refused (nothing was replayed).
    #[error("--overlay: {0}")]
    Overlay(OverlayError),
}

/// What one port did during a replay.
#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    /// The port's own I/O counters.
    pub io: PortStats,
    /// The pipeline's counters for the port.
    pub pipeline: PortCounters,
}

/// What one network's bridge did.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkReport {
    /// MAC table counters.
    pub fdb: FdbStats,
}

/// What the pipeline and its tables counted: the part of the report that replay (`vswitchd replay
/// --stats-json`) and the live switch (`vswitchd run`) share, flattened into both so their JSON keys are the same.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchReport {
    /// Drops by reason name (zeros omitted).
    pub drops: BTreeMap<&'static str, u64>,
    /// Per network, by name.
    pub networks: BTreeMap<String, NetworkReport>,
    /// Bridge stage counters.
    pub bridge: BridgeStats,
    /// Router stage counters.
    pub router: RouterStats,
    /// Neighbour table counters.
    pub neigh: NeighStats,
    /// NAT stage counters.
    pub nat: NatStats,
    /// Masquerade port allocation counters, summed over every address.
    pub snat: SnatStats,
    /// Overlay counters (encapsulated, decapsulated, replicated, ARP suppressed, updates); absent while all zero,
    /// i.e. on a switch without overlay networks.
    #[serde(skip_serializing_if = "is_zero")]
    pub overlay: OverlayStats,
}

fn is_zero(s: &OverlayStats) -> bool {
    *s == OverlayStats::default()
}

/// `a.f += b.f` for every listed field.
macro_rules! add_fields {
    ($a:expr, $b:expr; $($f:ident),* $(,)?) => { $( $a.$f += $b.$f; )* };
}

impl SwitchReport {
    /// The report of one switch.
    pub fn of(switch: &Switch) -> SwitchReport {
        let networks = (switch.topology().networks.iter().zip(switch.fdb_stats()))
            .map(|(n, fdb)| (n.name.clone(), NetworkReport { fdb }))
            .collect();
        SwitchReport {
            drops: switch.counters().drops_by_name(),
            networks,
            bridge: switch.bridge_stats(),
            router: switch.router().stats(),
            neigh: switch.router().neigh_stats(),
            nat: switch.nat_stats(),
            snat: switch.router().nat().snat_stats(),
            overlay: switch.overlay().stats(),
        }
    }

    /// The report of a switch made of `shards` (`crate::pipeline::shard`): what counts frames and connections
    /// is summed; what the shards replicate (MAC tables, neighbour entries and their ageing) is shard 0's.
    pub fn of_shards(shards: &[&Switch]) -> SwitchReport {
        let Some((first, rest)) = shards.split_first() else {
            return SwitchReport::of(&Switch::new(&Config::default()));
        };
        let mut r = SwitchReport::of(first);
        for s in rest {
            r.add_shard(SwitchReport::of(s));
        }
        r
    }

    /// Adds the report of another shard of the same switch (`self` being shard 0's, or already a sum starting
    /// with it): what counts frames and connections is summed; the replicated tables stay shard 0's.
    pub fn add_shard(&mut self, o: SwitchReport) {
        let r = self;
        for (k, v) in o.drops {
            *r.drops.entry(k).or_default() += v;
        }
        add_fields!(r.bridge, o.bridge; learn_skipped);
        add_fields!(r.router, o.router; forwarded, arp_replies, arp_requests, arp_ignored, echo_replies,
            icmp_errors, icmp_rate_limited);
        add_fields!(r.neigh, o.neigh; queued, queue_overflow, failed);
        add_fields!(r.nat, o.nat; snat_created, dnat_created, hairpin_created, hits_original, hits_reply,
            invalid, table_full, network_limit, spoofed, port_exhausted, clash, no_translation,
            icmp_errors_translated, fragments_dropped, unsupported, expired);
        add_fields!(r.snat, o.snat; in_use, destinations, allocated, preferred_kept, remapped, exhausted,
            claimed, released, stray_releases);
        // Every shard applies every membership update: counted once.
        add_fields!(r.overlay, o.overlay; encapsulated, decapsulated, replicated, arp_suppressed);
    }
}

/// `c += o`, field by field (every field: the pattern names them all, so a counter added to `PortCounters`
/// does not compile until it is summed here).
pub fn add_port(c: &mut PortCounters, o: &PortCounters) {
    let PortCounters {
        rx_packets: _,
        rx_bytes: _,
        forwarded: _,
        flooded: _,
        routed: _,
        dropped: _,
        tx_packets: _,
        tx_bytes: _,
        rx_super_frames: _,
        rx_segments: _,
        tx_super_frames: _,
        tx_segments: _,
        mss_clamped: _,
    } = o;
    add_fields!(c, o; rx_packets, rx_bytes, forwarded, flooded, routed, dropped, tx_packets, tx_bytes,
        rx_super_frames, rx_segments, tx_super_frames, tx_segments, mss_clamped);
}

/// `c += o`, field by field.
pub fn add_conntrack(c: &mut ConntrackStats, o: &ConntrackStats) {
    add_fields!(c, o; entries, created, expired, invalid, table_full, clash, evicted, group_full);
}

/// The pipeline counters of port `port`, summed over `shards`.
pub fn port_counters(shards: &[&Switch], port: crate::ids::PortId) -> PortCounters {
    let mut c = PortCounters::default();
    for s in shards {
        add_port(&mut c, &s.counters().port(port));
    }
    c
}

/// The connection-table counters summed over `shards`.
pub fn conntrack_stats(shards: &[&Switch]) -> ConntrackStats {
    let mut c = ConntrackStats::default();
    for s in shards {
        add_conntrack(&mut c, &s.conntrack().stats());
    }
    c
}

/// Every shard's live connections at `now`, sorted by original tuple.
pub fn connections(shards: &[&Switch], now: Nanos) -> Vec<ConnectionInfo> {
    let mut v: Vec<ConnectionInfo> = shards.iter().flat_map(|s| s.connections(now)).collect();
    v.sort_by_key(|c| c.orig);
    v
}

/// The connection table at the end of a replay.
#[derive(Debug, Clone, Serialize)]
pub struct ConntrackReport {
    /// The table's counters.
    #[serde(flatten)]
    pub stats: ConntrackStats,
    /// The connections still live at the end (at the last frame's time), sorted by original tuple.
    pub connections: Vec<ConnectionInfo>,
}

/// The counters of a whole replay (printed, or written with `--stats-json`).
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// Frames read from all inputs.
    pub frames_in: u64,
    /// Frames written to all outputs.
    pub frames_out: u64,
    /// Per port, by name.
    pub ports: BTreeMap<String, PortReport>,
    /// The pipeline's and tables' counters.
    #[serde(flatten)]
    pub switch: SwitchReport,
    /// The connection table: its counters and the connections left at the end.
    pub conntrack: ConntrackReport,
    /// The output capture of each port.
    pub outputs: BTreeMap<String, PathBuf>,
}

impl ReplayReport {
    /// Every counter, without the output paths: what a regression test compares.
    pub fn counters_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("the report is plain data");
        if let Some(obj) = v.as_object_mut() {
            obj.remove("outputs");
        }
        v
    }
}

/// Replays `inputs` through a switch built from `cfg`, writing one capture per configured port into `out_dir`.
pub fn replay(cfg: &Config, inputs: &[ReplayInput], out_dir: &Path) -> Result<ReplayReport, ReplayError> {
    replay_with_overlay(cfg, None, inputs, out_dir)
}

/// [`replay`] with the overlay membership `overlay` installed before the first frame (what `overlay_update`
/// installs in a live switch; `vswitchd replay --overlay FILE`).
pub fn replay_with_overlay(
    cfg: &Config,
    overlay: Option<&OverlayState>,
    inputs: &[ReplayInput],
    out_dir: &Path,
) -> Result<ReplayReport, ReplayError> {
    replay_with_workers(cfg, overlay, inputs, out_dir, 1)
}

/// [`replay_with_overlay`] through `workers` shards of the switch (`crate::pipeline::shard`), driven on this
/// thread by [`Shards`]: received bursts are dealt to the shards round-robin (the harshest spread: consecutive
/// frames of one flow land on different shards), and after each burst everything the shards tell one another
/// is delivered. The outcome (frames per port, counters) must be one switch's, up to the order of frames of
/// different flows within a port's capture; `workers = 1` is exactly [`replay_with_overlay`].
pub fn replay_with_workers(
    cfg: &Config,
    overlay: Option<&OverlayState>,
    inputs: &[ReplayInput],
    out_dir: &Path,
    workers: usize,
) -> Result<ReplayReport, ReplayError> {
    let mut switches = Vec::with_capacity(workers.max(1));
    for i in 0..workers.max(1) {
        let mut switch = Switch::new(cfg).sharded(crate::pipeline::Shard::new(i, workers));
        if let Some(state) = overlay {
            switch.update_overlay(state.clone()).map_err(ReplayError::Overlay)?;
        }
        switches.push(switch);
    }
    let mut switches = switches.into_iter();
    let mut shards = Shards::new(workers, |_| switches.next().expect("one per shard"));
    let mut captures: BTreeMap<usize, Vec<CapturedFrame>> = BTreeMap::new();
    let mut nanosecond = false;
    for input in inputs {
        let Some(idx) = cfg.ports.iter().position(|p| p.name == input.port) else {
            let known = cfg.ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(ReplayError::UnknownPort { port: input.port.clone(), known });
        };
        if captures.contains_key(&idx) {
            return Err(ReplayError::DuplicateInput(input.port.clone()));
        }
        let capture = read_capture(&input.path)?;
        nanosecond |= capture.nanosecond;
        captures.insert(idx, capture.frames);
    }

    std::fs::create_dir_all(out_dir).map_err(|source| ReplayError::Output { path: out_dir.to_path_buf(), source })?;
    let mut outputs = BTreeMap::new();
    let mut ports = Vec::with_capacity(cfg.ports.len());
    for (idx, p) in cfg.ports.iter().enumerate() {
        let path = out_dir.join(format!("{}.pcap", p.name));
        let writer = CaptureWriter::create(&path, nanosecond)
            .map_err(|source| ReplayError::Output { path: path.clone(), source })?;
        ports.push(PcapPort::new(p.name.clone(), captures.remove(&idx).unwrap_or_default(), Some(writer)));
        outputs.insert(p.name.clone(), path);
    }

    let end = run(&mut shards, &mut ports)?;
    for p in &mut ports {
        p.finish()?;
    }
    let switches: Vec<&Switch> = shards.switches().iter().collect();
    Ok(report(&switches, &ports, outputs, end))
}

/// Longest the clock keeps running after the last input frame while the router still waits for ARP answers.
const DRAIN_LIMIT: Nanos = 60 * NANOS_PER_SEC;

/// Drives `shards` over `ports` until every input is consumed, then lets virtual time run on (in housekeeping
/// steps, up to [`DRAIN_LIMIT`]) until the router has nothing pending, so timeouts after the last frame happen.
/// Returns the virtual time it ended at.
fn run(shards: &mut Shards, ports: &mut [PcapPort]) -> Result<Nanos, ReplayError> {
    let mut pool = BufPool::with_large(POOL_SIZE, DEFAULT_LARGE_BUFFERS);
    let mut tx = shards.switches()[0].tx_queues();
    let mut batch = Batch::new();
    let mut next_housekeeping: Option<Nanos> = None;
    let mut last = 0;
    let mut bursts = 0usize;
    loop {
        let next = ports.iter().enumerate().filter_map(|(i, p)| p.next_ts().map(|ts| (ts, i))).min();
        let Some((now, idx)) = next else { break };
        // Housekeeping due before this frame runs first, at its own (virtual) time.
        while let Some(t) = next_housekeeping.filter(|&t| t <= now) {
            shards.housekeeping(t, &mut pool, &mut tx);
            flush(ports, &mut pool, &mut tx, t)?;
            next_housekeeping = Some(t + HOUSEKEEPING_INTERVAL);
        }
        if next_housekeeping.is_none() {
            next_housekeeping = Some(now + HOUSEKEEPING_INTERVAL);
        }
        ports[idx].rx_burst(now, &mut pool, &mut batch)?;
        shards.process(bursts, now, table_id(idx), &mut batch, &mut pool, &mut tx);
        bursts += 1;
        flush(ports, &mut pool, &mut tx, now)?;
        last = now;
    }
    let mut end = last;
    if let Some(mut t) = next_housekeeping {
        while shards.has_pending() && t <= last + DRAIN_LIMIT {
            shards.housekeeping(t, &mut pool, &mut tx);
            flush(ports, &mut pool, &mut tx, t)?;
            end = t;
            t += HOUSEKEEPING_INTERVAL;
        }
    }
    Ok(end)
}

/// Hands every port its queued frames. Frames made by housekeeping carry its time `now` when they have none.
fn flush(ports: &mut [PcapPort], pool: &mut BufPool, tx: &mut TxQueues, now: Nanos) -> Result<(), ReplayError> {
    for (p, port) in ports.iter_mut().enumerate() {
        let q = tx.queue_mut(table_id(p));
        if !q.is_empty() {
            for f in q.iter_mut().filter(|f| f.ts == 0) {
                f.ts = now;
            }
            port.tx_burst(pool, q)?;
        }
    }
    Ok(())
}

fn report(shards: &[&Switch], ports: &[PcapPort], outputs: BTreeMap<String, PathBuf>, end: Nanos) -> ReplayReport {
    let ports_report: BTreeMap<_, _> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (p.name().to_string(), PortReport { io: p.stats(), pipeline: port_counters(shards, table_id(i)) })
        })
        .collect();
    ReplayReport {
        frames_in: ports_report.values().map(|p| p.io.rx_packets + p.io.rx_dropped).sum(),
        frames_out: ports_report.values().map(|p| p.io.tx_packets).sum(),
        ports: ports_report,
        switch: SwitchReport::of_shards(shards),
        conntrack: ConntrackReport { stats: conntrack_stats(shards), connections: connections(shards, end) },
        outputs,
    }
}

#[cfg(test)]
mod tests {
    use super::add_port;
    use crate::counters::PortCounters;

    /// Every per-port counter is summed over the shards (the merge of the offload counters into the sharded
    /// report once left the segment and MSS-clamp counters out).
    #[test]
    fn add_port_sums_every_counter() {
        let ones = |v: u64| {
            let mut json = serde_json::to_value(PortCounters::default()).unwrap();
            let names = [
                "rx_packets",
                "rx_bytes",
                "forwarded",
                "flooded",
                "routed",
                "dropped",
                "tx_packets",
                "tx_bytes",
                "rx_super_frames",
                "rx_segments",
                "tx_super_frames",
                "tx_segments",
                "mss_clamped",
            ];
            for n in names {
                json[n] = v.into();
            }
            serde_json::from_value::<PortCounters>(json).unwrap()
        };
        let mut c = ones(1);
        add_port(&mut c, &ones(1));
        assert_eq!(c, ones(2));
    }
}
