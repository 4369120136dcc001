//! The pipeline: runs a received batch through the stages and queues the results for transmission.
//!
//! `ingress` (validation) → `bridge` (learn, forward) → dispatch (copy floods, check egress MTU, queue per
//! egress port). Each stage writes one [`Verdict`] per frame; dispatch acts on them. Time comes in through
//! [`Context::now`]; nothing here reads a clock or does I/O, so replay and tests are deterministic.
//!
//! The caller (a worker, the replay driver, a test) owns the ports: it receives a batch from one port, calls
//! [`Switch::process`], then hands each port its [`TxQueues`] queue with `tx_burst`.
//!
//! Threads: a `Switch` is owned by one thread; nothing in it is shared or locked.

use crate::batch::{Batch, BATCH_SIZE};
use crate::bridge::{Bridge, BridgeStats};
use crate::buffer::{BufPool, Frame, Nanos};
use crate::config::Config;
use crate::counters::{Counters, DropReason};
use crate::fdb::{Fdb, FdbStats};
use crate::ingress::Ingress;
use crate::packet::Parsed;
use crate::port::PortId;
use crate::topology::{NetId, Topology};

/// Per-call facts every stage may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The current time.
    pub now: Nanos,
    /// The port the batch was received on.
    pub in_port: PortId,
}

/// What happens to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet: the next stage looks at it.
    Continue,
    /// Send on this port.
    Output(PortId),
    /// Send on every port of this network except the ingress port.
    Flood(NetId),
    /// Drop, counting the reason.
    Drop(DropReason),
}

/// One verdict per frame of a batch.
#[derive(Debug, Clone)]
pub struct Verdicts([Verdict; BATCH_SIZE]);

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts([Verdict::Continue; BATCH_SIZE])
    }
}

impl Verdicts {
    /// The verdict of frame `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Verdict {
        self.0[i]
    }

    /// Sets the verdict of frame `i`.
    #[inline]
    pub fn set(&mut self, i: usize, v: Verdict) {
        self.0[i] = v;
    }

    /// Every verdict back to `Continue`.
    #[inline]
    pub fn reset(&mut self) {
        self.0 = [Verdict::Continue; BATCH_SIZE];
    }
}

/// Frames waiting for transmission, one queue per port. Capacity is fixed when made; a full queue drops (and the
/// pipeline counts `tx-queue-full`).
#[derive(Debug)]
pub struct TxQueues {
    queues: Vec<Vec<Frame>>,
    cap: usize,
}

impl TxQueues {
    /// Queues for `ports` ports, each holding up to `cap` frames.
    pub fn new(ports: usize, cap: usize) -> Self {
        TxQueues { queues: (0..ports).map(|_| Vec::with_capacity(cap)).collect(), cap }
    }

    #[inline]
    fn push(&mut self, port: PortId, frame: Frame) -> Result<(), Frame> {
        let q = &mut self.queues[port as usize];
        if q.len() >= self.cap {
            return Err(frame);
        }
        q.push(frame);
        Ok(())
    }

    /// The queue of `port`, for its `tx_burst`.
    #[inline]
    pub fn queue_mut(&mut self, port: PortId) -> &mut Vec<Frame> {
        &mut self.queues[port as usize]
    }

    /// Number of ports.
    pub fn ports(&self) -> usize {
        self.queues.len()
    }

    /// True when no queue holds a frame.
    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(Vec::is_empty)
    }
}

/// Default per-port transmit queue capacity: several bursts, since several ingress ports may feed one egress
/// port in one iteration.
pub const TX_QUEUE_CAP: usize = 8 * BATCH_SIZE;

/// The forwarding pipeline with its tables and counters.
#[derive(Debug)]
pub struct Switch {
    topo: Topology,
    ingress: Ingress,
    bridge: Bridge,
    counters: Counters,
    verdicts: Verdicts,
    parsed: [Parsed; BATCH_SIZE],
}

impl Switch {
    /// A switch for a validated configuration, with empty tables.
    pub fn new(cfg: &Config) -> Self {
        Switch::with_topology(Topology::from_config(cfg))
    }

    /// A switch for an already numbered topology.
    pub fn with_topology(topo: Topology) -> Self {
        Switch {
            ingress: Ingress,
            bridge: Bridge::new(&topo),
            counters: Counters::new(topo.ports.len()),
            verdicts: Verdicts::default(),
            parsed: [Parsed::default(); BATCH_SIZE],
            topo,
        }
    }

    /// Transmit queues sized for this switch's ports.
    pub fn tx_queues(&self) -> TxQueues {
        TxQueues::new(self.topo.ports.len(), TX_QUEUE_CAP)
    }

    /// Runs every frame of `batch` (all received on `in_port` at `now`) through the pipeline. The batch is left
    /// empty: each frame is queued in `tx` or dropped (buffer back to `pool`) and counted.
    pub fn process(&mut self, now: Nanos, in_port: PortId, batch: &mut Batch, pool: &mut BufPool, tx: &mut TxQueues) {
        if batch.is_empty() {
            return;
        }
        let cx = Context { now, in_port };
        let mut verdicts = std::mem::take(&mut self.verdicts);
        verdicts.reset();
        let pc = self.counters.port_mut(in_port);
        for f in batch.iter() {
            pc.rx_packets += 1;
            pc.rx_bytes += f.len() as u64;
        }
        self.ingress.process(&cx, &self.topo, batch, &mut self.parsed, &mut verdicts);
        self.bridge.process(&cx, &self.topo, batch, &mut verdicts);
        for (i, mut frame) in batch.drain().enumerate() {
            frame.port = in_port;
            match verdicts.get(i) {
                Verdict::Output(p) => {
                    if self.output(p, frame, pool, tx) {
                        self.counters.port_mut(in_port).forwarded += 1;
                    } else {
                        self.counters.port_mut(in_port).dropped += 1;
                    }
                }
                Verdict::Flood(net) => self.flood(net, frame, pool, tx),
                Verdict::Drop(reason) => {
                    self.counters.drop(in_port, reason);
                    pool.free(frame);
                }
                Verdict::Continue => {
                    // Unreachable by construction: the bridge decides every frame it sees. Count rather than
                    // panic if a future stage forgets to.
                    self.counters.drop(in_port, DropReason::NoNetwork);
                    pool.free(frame);
                }
            }
        }
        self.verdicts = verdicts;
    }

    /// Queues `frame` on port `p`; on failure counts the reason and frees it (the caller counts the ingress
    /// port's `dropped` if the frame went nowhere). True if queued.
    #[inline]
    fn output(&mut self, p: PortId, frame: Frame, pool: &mut BufPool, tx: &mut TxQueues) -> bool {
        let len = frame.len();
        if len > self.topo.ports[p as usize].max_frame_len() + vlan_allowance(frame.data()) {
            self.counters.count(DropReason::EgressTooLong);
            pool.free(frame);
            return false;
        }
        match tx.push(p, frame) {
            Ok(()) => {
                let pc = self.counters.port_mut(p);
                pc.tx_packets += 1;
                pc.tx_bytes += len as u64;
                true
            }
            Err(frame) => {
                self.counters.count(DropReason::TxQueueFull);
                pool.free(frame);
                false
            }
        }
    }

    fn flood(&mut self, net: NetId, frame: Frame, pool: &mut BufPool, tx: &mut TxQueues) {
        let in_port = frame.port;
        let ports = &self.topo.networks[net as usize].ports;
        let last = ports.iter().rposition(|&p| p != in_port);
        let Some(last) = last else {
            self.counters.drop(in_port, DropReason::FloodNoPorts);
            pool.free(frame);
            return;
        };
        let mut sent = 0;
        for idx in 0..last {
            let p = self.topo.networks[net as usize].ports[idx];
            if p == in_port {
                continue;
            }
            match pool.clone_frame(&frame) {
                Some(copy) => sent += self.output(p, copy, pool, tx) as u64,
                None => {
                    self.counters.count(DropReason::NoBuffer);
                }
            }
        }
        let p = self.topo.networks[net as usize].ports[last];
        sent += self.output(p, frame, pool, tx) as u64;
        let pc = self.counters.port_mut(in_port);
        if sent > 0 {
            pc.flooded += 1;
        } else {
            pc.dropped += 1;
        }
    }

    /// Housekeeping off the hot path: ages out MAC entries. Call every second or so of (virtual) time.
    pub fn expire(&mut self, now: Nanos) {
        self.bridge.expire(now);
    }

    /// The numbered ports and networks.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The pipeline's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The MAC table of a network.
    pub fn fdb(&self, net: NetId) -> &Fdb {
        self.bridge.fdb(net)
    }

    /// MAC table counters by network id.
    pub fn fdb_stats(&self) -> Vec<FdbStats> {
        self.bridge.fdb_stats()
    }

    /// The bridge stage's counters.
    pub fn bridge_stats(&self) -> BridgeStats {
        self.bridge.stats()
    }
}

/// Extra length allowed on egress for the VLAN tags a frame carries.
#[inline]
fn vlan_allowance(data: &[u8]) -> usize {
    use crate::topology::ethertype_len::VLAN_TAG_LEN;
    use crate::wire::ethertype::{QINQ, VLAN};
    let et = |off: usize| data.get(off..off + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match et(12) {
        Some(VLAN | QINQ) => match et(16) {
            Some(VLAN | QINQ) => 2 * VLAN_TAG_LEN,
            _ => VLAN_TAG_LEN,
        },
        _ => 0,
    }
}
