//! What the stages share, below them all: the per-call [`Context`], one [`Verdict`] per frame ([`Verdicts`]),
//! the per-port transmit queues ([`TxQueues`]), [`Egress`] (the one way frames leave: queued, dropped or freed,
//! and counted) and the [`Tracer`] they are generic over: [`Untraced`], or a [`Trace`] each stage writes its
//! decisions into.
//!
//! The stages (`ingress`, `bridge`, `router` with `nat`) import this module and nothing above them; the
//! pipeline (`crate::pipeline`) makes these values and calls the stages in order. `Egress` reaches the MAC
//! tables as a slice of [`Fdb`]s, not through the bridge stage, so the router can send through a network
//! without knowing the bridge.
//!
//! Tracing costs nothing when off: with [`Untraced`], [`Context::note`] and [`Egress::note`] compile to nothing
//! (the description is only built when a trace is attached). `vswitchctl trace` attaches one to a single frame
//! run through a scratch copy of the switch (`crate::pipeline`'s `trace.rs`), in the stages' `&Trace` copy.
//!
//! Threads: values made per call by the thread running the pipeline; nothing here is shared.

use crate::batch::BATCH_SIZE;
use crate::buffer::{BufPool, Frame};
use crate::counters::{Counters, DropReason};
use crate::fdb::Fdb;
use crate::ids::{table_id, Nanos, NetId, PortId, RifId};
use crate::mss_clamp::{self, Clamped, MssLimit};
use crate::offload::Caps;
use crate::overlay::peers::PeerId;
use crate::overlay::{Overlay, Pending};
use crate::packet::Parsed;
use crate::port::soft_offload::Emitted;
use crate::topology::{Attach, Topology};
use crate::wire::MacAddr;
use std::cell::RefCell;

/// One stage's decision about the traced frame: `(stage, what it decided)`.
pub type TraceStep = (&'static str, String);

/// The decisions recorded for one traced frame, in the order the stages made them. Stages write through a shared
/// reference ([`Context::note`], [`Egress::note`]) since they hold `Context` by value and `Egress` mutably.
#[derive(Debug, Default)]
pub struct Trace {
    steps: RefCell<Vec<TraceStep>>,
}

impl Trace {
    /// Records `what` for `stage`.
    pub fn record(&self, stage: &'static str, what: String) {
        self.steps.borrow_mut().push((stage, what));
    }

    /// The steps recorded so far.
    pub fn into_steps(self) -> Vec<TraceStep> {
        self.steps.into_inner()
    }
}

/// Where the stages' notes go: nowhere ([`Untraced`]: the forwarding path, where every note and `tracing()` check
/// compiles away; they were about 30 instructions per routed frame as a run-time test, callgrind on the NAT
/// bench), or into a [`Trace`] (`&Trace`: `vswitchctl trace`, one frame through a scratch switch). The pipeline
/// is generic over it, so each kind gets its own copy of the stages.
pub trait Tracer: Copy {
    /// The trace the notes go to, if any.
    fn trace(&self) -> Option<&Trace>;
}

/// No trace: the notes are never built.
#[derive(Debug, Clone, Copy, Default)]
pub struct Untraced;

impl Tracer for Untraced {
    #[inline(always)]
    fn trace(&self) -> Option<&Trace> {
        None
    }
}

impl Tracer for &Trace {
    #[inline(always)]
    fn trace(&self) -> Option<&Trace> {
        Some(self)
    }
}

/// Per-call facts every stage may read.
#[derive(Debug, Clone, Copy)]
pub struct Context<T: Tracer = Untraced> {
    /// The current time.
    pub now: Nanos,
    /// The port the batch was received on.
    pub in_port: PortId,
    /// Where stages record their decisions (see [`Tracer`]).
    pub trace: T,
    /// The batch was handed over by another worker (`crate::pipeline::shard`): received and learned there.
    pub handed: bool,
}

impl Context {
    /// A context without a trace.
    #[inline]
    pub fn new(now: Nanos, in_port: PortId) -> Context {
        Context { now, in_port, trace: Untraced, handed: false }
    }
}

impl<T: Tracer> Context<T> {
    /// Records `stage`'s decision if the batch is traced (`what` is only called then).
    #[inline(always)]
    pub fn note(&self, stage: &'static str, what: impl FnOnce() -> String) {
        if let Some(t) = self.trace.trace() {
            t.record(stage, what());
        }
    }
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
    /// Hand to the router, as received on this router interface.
    ToRouter(RifId),
    /// Flood in the network and give the router a copy (broadcast ARP on a network with a gateway).
    FloodAndRoute(NetId, RifId),
    /// A VXLAN packet for our VTEP: decapsulate and bridge the inner frame in its overlay network.
    Decap,
    /// Drop, counting the reason.
    Drop(DropReason),
}

impl Verdict {
    /// The verdict in words, with `topo`'s names (for traces).
    pub fn describe(&self, topo: &Topology) -> String {
        let port = |p: PortId| topo.ports.get(p as usize).map_or("?", |p| p.name.as_str()).to_string();
        let net = |n: NetId| topo.networks.get(n as usize).map_or("?", |n| n.name.as_str()).to_string();
        let rif = |r: RifId| topo.rifs.get(r as usize).map_or("?", |r| r.name.as_str()).to_string();
        match *self {
            Verdict::Continue => "undecided".to_string(),
            Verdict::Output(p) => format!("known unicast: to port {}", port(p)),
            Verdict::Flood(n) => format!("flood to the other ports of {}", net(n)),
            Verdict::ToRouter(r) => format!("to the router, interface {}", rif(r)),
            Verdict::FloodAndRoute(n, r) => {
                format!("flood in {} and a copy to the router, interface {}", net(n), rif(r))
            }
            Verdict::Decap => "VXLAN for our VTEP: decapsulate into its overlay network".to_string(),
            Verdict::Drop(reason) => format!("drop: {}", reason.name()),
        }
    }
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
    /// `queues.len()` as an id bound, checked once when made.
    ports: PortId,
    cap: usize,
}

impl TxQueues {
    /// Queues for `ports` ports, each holding up to `cap` frames.
    pub fn new(ports: usize, cap: usize) -> Self {
        TxQueues { queues: (0..ports).map(|_| Vec::with_capacity(cap)).collect(), ports: table_id(ports), cap }
    }

    #[inline(always)]
    fn push(&mut self, port: PortId, frame: Frame) -> Result<(), Frame> {
        let q = &mut self.queues[port as usize];
        if q.len() >= self.cap {
            return Err(frame);
        }
        // The queues are made with `cap` slots, so this is the path taken; `Vec::push` stayed out of line here
        // (a call per frame, and the frame rebuilt on the stack for it: a store-forwarding stall, perf).
        match crate::batch::push_within_capacity(q, frame) {
            Ok(()) => {}
            Err(frame) => push_growing(q, frame),
        }
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

    /// Every port's id, in order (`0..ports()`).
    pub fn port_ids(&self) -> std::ops::Range<PortId> {
        0..self.ports
    }

    /// True when no queue holds a frame.
    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(Vec::is_empty)
    }
}

/// `q.push(frame)` for a queue that a port left with fewer slots than the queue's capacity (out of line: never
/// taken while the ports keep the vectors they were given).
#[cold]
#[inline(never)]
fn push_growing(q: &mut Vec<Frame>, frame: Frame) {
    q.push(frame);
}

/// Default per-port transmit queue capacity: several bursts, since several ingress ports may feed one egress
/// port in one iteration.
pub const TX_QUEUE_CAP: usize = 8 * BATCH_SIZE;
// One burst's super-frames cut into segments (the overlay) fit a transmit queue, even when the last one is the
// largest super-frame at the smallest segment size.
const _: () = assert!(
    crate::port::RX_SEGMENT_BUDGET + crate::buffer::MAX_LARGE_FRAME_LEN.div_ceil(crate::offload::MIN_GSO_SIZE as usize)
        <= TX_QUEUE_CAP
);

/// The one way frames leave the pipeline: queues them per egress port, frees what is dropped, and counts both.
/// Stages that emit frames (the router) get one for the duration of a call.
#[derive(Debug)]
pub struct Egress<'a, T: Tracer = Untraced> {
    topo: &'a Topology,
    fdbs: &'a [Fdb],
    /// The pipeline's counters (the pipeline counts per-port outcomes through it while an `Egress` exists).
    pub counters: &'a mut Counters,
    tx: &'a mut TxQueues,
    /// The buffer pool frames come from and go back to.
    pub pool: &'a mut BufPool,
    /// The overlay tables: remote endpoints and members to encapsulate to, frames waiting for the underlay's
    /// neighbour stage.
    pub overlay: &'a mut Overlay,
    now: Nanos,
    last_fdb: Option<(NetId, MacAddr, PortId)>,
    trace: T,
}

impl<'a, T: Tracer> Egress<'a, T> {
    /// An egress for one call of the pipeline: frames go to `tx`, buffers back to `pool`, counts to `counters`;
    /// `fdbs` are the MAC tables by network id, `overlay` the overlay networks' tables.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        topo: &'a Topology,
        fdbs: &'a [Fdb],
        counters: &'a mut Counters,
        tx: &'a mut TxQueues,
        pool: &'a mut BufPool,
        overlay: &'a mut Overlay,
        now: Nanos,
        trace: T,
    ) -> Self {
        Egress { topo, fdbs, counters, tx, pool, overlay, now, last_fdb: None, trace }
    }

    /// True when the frames handled are traced (a stage may then gather what it will describe).
    #[inline(always)]
    pub fn tracing(&self) -> bool {
        self.trace.trace().is_some()
    }

    /// Records `stage`'s decision if the frame is traced (`what` is only called then).
    #[inline(always)]
    pub fn note(&self, stage: &'static str, what: impl FnOnce() -> String) {
        if let Some(t) = self.trace.trace() {
            t.record(stage, what());
        }
    }

    /// A port's name, for trace notes.
    pub fn port_name(&self, p: PortId) -> &'a str {
        self.topo.ports.get(p as usize).map_or("?", |p| p.name.as_str())
    }
    /// The topology.
    #[inline]
    pub fn topo(&self) -> &'a Topology {
        self.topo
    }

    /// The router interface a frame received on `port` reached.
    #[inline]
    pub fn rif_of_port(&self, port: PortId) -> Option<RifId> {
        self.topo.rif_of_port(port)
    }

    /// A free buffer for a frame the switch makes itself (none: counted as `no-buffer`).
    #[inline]
    pub fn alloc(&mut self) -> Option<Frame> {
        let f = self.pool.alloc();
        if f.is_none() {
            self.counters.count(DropReason::NoBuffer);
        }
        f
    }

    /// Gives back a frame that needs no counting (a router copy of a flood, a rate-limited reply).
    #[inline]
    pub fn free(&mut self, frame: Frame) {
        self.pool.free(frame);
    }

    /// Frees `frame`, counting `reason` without charging a port (a refused copy of a frame that went elsewhere).
    #[inline]
    pub fn discard(&mut self, frame: Frame, reason: DropReason) {
        self.note("egress", || format!("copy discarded: {}", reason.name()));
        self.counters.count(reason);
        self.pool.free(frame);
    }

    /// Drops `frame` for `reason`, charging the port it came in on.
    #[inline]
    pub fn drop(&mut self, frame: Frame, reason: DropReason) {
        self.note("drop", || reason.name().to_string());
        self.counters.drop(frame.port, reason);
        self.pool.free(frame);
    }

    /// Queues `frame` on port `p`; on failure counts the reason and frees it. True if queued.
    #[inline(always)]
    pub fn to_port(&mut self, p: PortId, mut frame: Frame) -> bool {
        let len = frame.len();
        // The VLAN allowance is only looked at for a frame longer than the MTU allows untagged (rare), and a
        // super-frame's segments for a super-frame.
        let info = &self.topo.ports[p as usize];
        let max = info.max_frame_len();
        if !info.mss_clamp.is_none() {
            self.clamp_mss(p, info.mss_clamp, &mut frame);
        }
        if len > max && !fits_egress(&frame, max) {
            self.note("egress", || format!("{len} bytes too long for port {}: egress-too-long", self.port_name(p)));
            self.counters.count(DropReason::EgressTooLong);
            self.pool.free(frame);
            return false;
        }
        let segments = if frame.offload.is_gso() { frame.offload.segments(frame.data()) } else { 0 };
        match self.tx.push(p, frame) {
            Ok(()) => {
                self.note("egress", || format!("queued on port {} ({len} bytes)", self.port_name(p)));
                let pc = self.counters.port_mut(p);
                pc.tx_packets += 1;
                pc.tx_bytes += len as u64;
                // Without a branch: zero for every frame but a super-frame.
                pc.tx_super_frames += u64::from(segments != 0);
                pc.tx_segments += segments;
                true
            }
            Err(frame) => {
                self.note("egress", || format!("port {}'s queue is full: tx-queue-full", self.port_name(p)));
                self.counters.count(DropReason::TxQueueFull);
                self.pool.free(frame);
                false
            }
        }
    }

    /// Port `p`'s MSS clamp on a frame queued for it (a port with `mss_clamp` only).
    #[cold]
    fn clamp_mss(&mut self, p: PortId, limit: MssLimit, frame: &mut Frame) {
        if let Clamped::Lowered { from, to } = mss_clamp::clamp(frame, limit) {
            self.note("mss-clamp", || format!("SYN's MSS {from} lowered to {to} for port {}", self.port_name(p)));
            self.counters.port_mut(p).mss_clamped += 1;
        }
    }

    /// Sends a routed or generated frame out of a router interface: directly on a routed port, or through the
    /// network's bridge (to the port its destination MAC was learned on, else flooded to every port).
    pub fn to_attach(&mut self, attach: Attach, frame: Frame) {
        let dst = MacAddr::from_slice(frame.data()).unwrap_or(MacAddr::BROADCAST);
        self.to_attach_mac(attach, dst, frame);
    }

    /// As [`Egress::to_attach`] for a frame whose destination MAC the caller already knows.
    #[inline(always)]
    pub fn to_attach_mac(&mut self, attach: Attach, dst: MacAddr, frame: Frame) {
        match attach {
            Attach::Port(p) => {
                self.to_port(p, frame);
            }
            Attach::Network(net) => {
                // The MAC tables cannot change while an Egress exists (it borrows them), so the last answer
                // stays right for the whole call.
                let known = match self.last_fdb {
                    Some((n, mac, port)) if n == net && mac == dst => Some(port),
                    _ if dst.is_multicast() => None,
                    _ => {
                        let p = self.fdbs[net as usize].lookup(dst, self.now);
                        if let Some(p) = p {
                            self.last_fdb = Some((net, dst, p));
                        }
                        p
                    }
                };
                match known {
                    Some(p) => {
                        self.to_port(p, frame);
                    }
                    None => {
                        self.note("egress", || format!("{dst} not in the MAC table: flooded"));
                        self.flood(net, frame, None);
                    }
                }
            }
        }
    }

    /// Sends `frame` to every port of `net` except `except`, and on an overlay network to the remote endpoint it
    /// is addressed to, or else (broadcast, multicast, unknown unicast) to every member VTEP too; returns how many
    /// copies were queued.
    #[inline]
    pub fn flood(&mut self, net: NetId, frame: Frame, except: Option<PortId>) -> u64 {
        if self.overlay.is_overlay(net) {
            return self.overlay_flood(net, frame, except);
        }
        self.flood_local(net, frame, except)
    }

    /// [`Egress::flood`] on an overlay network (see `crate::overlay`: known remote unicast is encapsulated to its
    /// VTEP; anything else is flooded locally and replicated head-end, within the network's rate limit).
    #[inline(never)]
    fn overlay_flood(&mut self, net: NetId, frame: Frame, except: Option<PortId>) -> u64 {
        let dst = MacAddr::from_slice(frame.data()).unwrap_or(MacAddr::BROADCAST);
        if !dst.is_multicast() {
            if let Some(peer) = self.overlay.remote_mac(net, dst) {
                self.note("overlay", || format!("{dst} is a remote endpoint: encapsulated to member #{peer}"));
                return u64::from(self.encap(net, peer, frame));
            }
        }
        let mut sent = 0;
        let members = self.overlay.members(net).len();
        if members > 0 {
            if self.overlay.take_bum_token(net, self.now) {
                self.note("overlay", || format!("{dst}: replicated head-end to {members} member(s)"));
                for k in 0..members {
                    let peer = self.overlay.members(net)[k];
                    match self.pool.clone_frame(&frame) {
                        Some(copy) => {
                            if self.encap(net, peer, copy) {
                                self.overlay.count_replicated();
                                sent += 1;
                            }
                        }
                        None => self.counters.count(DropReason::NoBuffer),
                    }
                }
            } else {
                self.note("overlay", || "replication over the network's rate: vxlan-bum-rate-limited".to_string());
                self.counters.count(DropReason::VxlanBumRateLimited);
            }
        }
        sent + self.flood_local(net, frame, except)
    }

    /// Encapsulates `frame` towards `peer` (queued for the router's neighbour stage); on failure counts the
    /// reason and frees it. True if queued.
    #[inline]
    fn encap(&mut self, net: NetId, peer: PeerId, frame: Frame) -> bool {
        if !frame.offload.is_none() {
            return self.encap_offloaded(net, peer, frame);
        }
        match self.overlay.encap(net, peer, frame) {
            Ok(()) => true,
            Err((frame, reason)) => {
                self.note("overlay", || format!("not encapsulated: {}", reason.name()));
                self.counters.count(reason);
                self.pool.free(frame);
                false
            }
        }
    }

    /// [`Egress::encap`] for a frame with offload metadata (a host stack's partial checksum or GSO super-frame):
    /// the tunnel carries wire-sized inner frames with complete checksums, as a VTEP without tunnel offloads must
    /// (the receiving host's kernel checks the inner checksum). A partial checksum is completed in place; a
    /// super-frame is cut into segments, each in a buffer of its own, each encapsulated. True if at least one
    /// frame was queued.
    #[cold]
    #[inline(never)]
    fn encap_offloaded(&mut self, net: NetId, peer: PeerId, mut frame: Frame) -> bool {
        let mut soft = self.overlay.take_soft();
        if !frame.offload.is_gso() {
            // Completed in place: the frame itself goes on.
            soft.emit(&mut frame, Caps::NONE, |_, _| true);
            self.overlay.restore_soft(soft);
            return self.encap(net, peer, frame);
        }
        let port = frame.port;
        let mut queued = false;
        let emitted = soft.emit(&mut frame, Caps::NONE, |segment, _| {
            let Some(mut f) = self.pool.alloc() else {
                self.counters.count(DropReason::NoBuffer);
                return false;
            };
            if f.load(segment).is_err() {
                self.pool.free(f);
                self.counters.count(DropReason::VxlanTooBig);
                return false;
            }
            f.port = port;
            queued |= self.encap(net, peer, f);
            true
        });
        if let Emitted::Malformed(_) = emitted {
            self.counters.count(DropReason::OffloadMismatch);
        }
        self.overlay.restore_soft(soft);
        self.pool.free(frame);
        queued
    }

    /// Decapsulates a VXLAN packet received on `in_port` and delivers the inner frame to the local ports of its
    /// overlay network (split horizon: never to another VTEP, never to the router), counting it.
    #[inline(never)]
    pub fn decap(&mut self, in_port: PortId, mut frame: Frame, parsed: &Parsed) {
        let net = match self.overlay.decap(&mut frame, parsed) {
            Ok((net, _)) => net,
            Err(reason) => return self.drop(frame, reason),
        };
        let dst = MacAddr::from_slice(frame.data()).unwrap_or(MacAddr::BROADCAST);
        self.note("overlay", || {
            let name = self.topo.networks.get(net as usize).map_or("?", |n| n.name.as_str());
            format!("decapsulated into {name}: inner frame to {dst}")
        });
        let gateway = self.topo.networks[net as usize].rif.map(|r| self.topo.rifs[r as usize].mac);
        if gateway == Some(dst) {
            return self.drop(frame, DropReason::VxlanGatewayMac);
        }
        let known = if dst.is_multicast() { None } else { self.fdbs[net as usize].lookup(dst, self.now) };
        match known {
            Some(p) => self.forward(in_port, p, frame),
            None => {
                let sent = self.flood_local(net, frame, None);
                self.settle_flood(in_port, net, sent);
            }
        }
    }

    /// The encapsulated frames waiting for the router's neighbour stage (give the vector back with
    /// [`Egress::restore_pending`]).
    #[inline]
    pub fn take_pending(&mut self) -> Vec<Pending> {
        self.overlay.take_pending()
    }

    /// See [`Egress::take_pending`].
    #[inline]
    pub fn restore_pending(&mut self, v: Vec<Pending>) {
        self.overlay.restore_pending(v)
    }

    /// True for a packet the overlay encapsulated (from our VTEP to a member's VTEP).
    pub fn is_tunnel_packet(&self, src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr) -> bool {
        self.overlay.is_tunnel(src, dst)
    }

    /// The MAC of the remote endpoint `ip` on router interface `rif`'s overlay network (the router uses it instead
    /// of ARP, which the endpoint's own host would answer).
    #[inline(never)]
    pub fn overlay_endpoint(&self, rif: RifId, ip: std::net::Ipv4Addr) -> Option<MacAddr> {
        match self.topo.rifs.get(rif as usize)?.attach {
            Attach::Network(net) => self.overlay.endpoint_mac(net, ip),
            Attach::Port(_) => None,
        }
    }

    /// Sends an ARP reply the overlay made in place of a request (suppression) back out of `in_port`.
    #[inline(never)]
    pub fn arp_suppressed(&mut self, in_port: PortId, frame: Frame) {
        self.note("overlay", || "ARP request for a remote endpoint: answered locally (suppression)".to_string());
        self.forward(in_port, in_port, frame);
    }

    /// Queues a frame received on `in_port` on port `p` and counts the outcome on `in_port` (`forwarded`, or
    /// `dropped` with the reason [`Egress::to_port`] counted).
    #[inline(always)]
    pub fn forward(&mut self, in_port: PortId, p: PortId, frame: Frame) {
        let pc = if self.to_port(p, frame) {
            &mut self.counters.port_mut(in_port).forwarded
        } else {
            &mut self.counters.port_mut(in_port).dropped
        };
        *pc += 1;
    }

    /// Sends `frame` to every port of `net` except `except` (this host's ports only); returns how many copies
    /// were queued.
    fn flood_local(&mut self, net: NetId, frame: Frame, except: Option<PortId>) -> u64 {
        let ports = &self.topo.networks[net as usize].ports;
        let Some(last) = ports.iter().rposition(|&p| Some(p) != except) else {
            self.pool.free(frame);
            return 0;
        };
        let mut sent = 0;
        for &p in &ports[..last] {
            if Some(p) == except {
                continue;
            }
            match self.pool.clone_frame(&frame) {
                Some(copy) => sent += u64::from(self.to_port(p, copy)),
                None => self.counters.count(DropReason::NoBuffer),
            }
        }
        sent + u64::from(self.to_port(ports[last], frame))
    }

    /// Counts what a flood of a frame received on `in_port` achieved.
    #[inline]
    pub fn settle_flood(&mut self, in_port: PortId, net: NetId, sent: u64) {
        if sent > 0 {
            self.counters.port_mut(in_port).flooded += 1;
        } else if self.topo.networks[net as usize].ports.iter().all(|&p| p == in_port) {
            self.counters.drop(in_port, DropReason::FloodNoPorts);
        } else {
            // Every copy failed; each copy's reason is already counted.
            self.counters.port_mut(in_port).dropped += 1;
        }
    }
}

/// True when a frame longer than `max` untagged bytes still fits an egress port: its VLAN tags allowed for, and for
/// a super-frame, each of its segments (as the kernel's `skb_gso_validate_mac_len`).
#[cold]
fn fits_egress(frame: &Frame, max: usize) -> bool {
    let d = frame.data();
    frame.offload.segment_len(d) <= max + vlan_allowance(d)
}

/// Extra length allowed on egress for the VLAN tags a frame carries.
#[inline]
fn vlan_allowance(data: &[u8]) -> usize {
    use crate::wire::{ethernet, vlan};
    ethernet::Packet::new_checked(data).map_or(0, |e| e.vlan_tags_announced() * vlan::HEADER_LEN)
}
