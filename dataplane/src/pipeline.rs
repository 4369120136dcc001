//! The pipeline: runs a received batch through the stages and queues the results for transmission.
//!
//! `ingress` (validation) → `bridge` (learn, forward; frames for a gateway go to the router) → route lookup
//! (the router's FIB lookups for the whole batch) → dispatch: copy floods, run the `router` on frames for it, check egress MTU, queue per egress port. Each stage writes one
//! [`Verdict`] per frame; dispatch acts on them through [`Egress`], the one place frames are queued for
//! transmission and counted. Time comes in through [`Context::now`]; nothing here reads a clock or does I/O,
//! so replay and tests are deterministic.
//!
//! The caller (a worker, the replay driver, a test) owns the ports: it receives a batch from one port, calls
//! [`Switch::process`], then hands each port its [`TxQueues`] queue with `tx_burst`, and calls
//! [`Switch::housekeeping`] every [`HOUSEKEEPING_INTERVAL`].
//!
//! Threads: nothing in a `Switch` is shared or locked inside; it is used by one thread at a time. `vswitchd run`
//! puts it behind one mutex that a worker takes per received batch (see `crate::worker` and
//! docs/architecture.md § Threads); replay and tests own it outright.

use crate::batch::{Batch, BATCH_SIZE};
use crate::bridge::{Bridge, BridgeStats};
use crate::buffer::{BufPool, Frame, Nanos, NANOS_PER_SEC};
use crate::config::Config;
use crate::conntrack::Conntrack;
use crate::counters::{Counters, DropReason};
use crate::fdb::{Fdb, FdbStats};
use crate::ingress::Ingress;
use crate::nat::{ConnectionInfo, NatStats};
use crate::neigh::RifId;
use crate::packet::Parsed;
use crate::port::PortId;
use crate::route::NextHopId;
use crate::router::Router;
use crate::topology::{Attach, NetId, Topology};
use crate::wire::MacAddr;

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
    /// Hand to the router, as received on this router interface.
    ToRouter(RifId),
    /// Flood in the network and give the router a copy (broadcast ARP on a network with a gateway).
    FloodAndRoute(NetId, RifId),
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

/// How often drivers should call [`Switch::housekeeping`].
pub const HOUSEKEEPING_INTERVAL: Nanos = NANOS_PER_SEC / 10;

/// The one way frames leave the pipeline: queues them per egress port, frees what is dropped, and counts both.
/// Stages that emit frames (the router) get one for the duration of a call.
#[derive(Debug)]
pub struct Egress<'a> {
    topo: &'a Topology,
    bridge: &'a Bridge,
    counters: &'a mut Counters,
    tx: &'a mut TxQueues,
    pool: &'a mut BufPool,
    now: Nanos,
    last_fdb: Option<(NetId, MacAddr, PortId)>,
}

impl<'a> Egress<'a> {
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
        self.counters.count(reason);
        self.pool.free(frame);
    }

    /// Drops `frame` for `reason`, charging the port it came in on.
    #[inline]
    pub fn drop(&mut self, frame: Frame, reason: DropReason) {
        self.counters.drop(frame.port, reason);
        self.pool.free(frame);
    }

    /// Queues `frame` on port `p`; on failure counts the reason and frees it. True if queued.
    #[inline]
    pub fn to_port(&mut self, p: PortId, frame: Frame) -> bool {
        let len = frame.len();
        if len > self.topo.ports[p as usize].max_frame_len() + vlan_allowance(frame.data()) {
            self.counters.count(DropReason::EgressTooLong);
            self.pool.free(frame);
            return false;
        }
        match self.tx.push(p, frame) {
            Ok(()) => {
                let pc = self.counters.port_mut(p);
                pc.tx_packets += 1;
                pc.tx_bytes += len as u64;
                true
            }
            Err(frame) => {
                self.counters.count(DropReason::TxQueueFull);
                self.pool.free(frame);
                false
            }
        }
    }

    /// Sends a routed or generated frame out of a router interface: directly on a routed port, or through the
    /// network's bridge (to the port its destination MAC was learned on, else flooded to every port).
    pub fn to_attach(&mut self, attach: Attach, frame: Frame) {
        let dst = MacAddr::from_slice(frame.data()).unwrap_or(MacAddr::BROADCAST);
        self.to_attach_mac(attach, dst, frame);
    }

    /// As [`Egress::to_attach`] for a frame whose destination MAC the caller already knows.
    #[inline]
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
                        let p = self.bridge.fdb(net).lookup(dst, self.now);
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
                        self.flood(net, frame, None);
                    }
                }
            }
        }
    }

    /// Sends `frame` to every port of `net` except `except`; returns how many copies were queued.
    fn flood(&mut self, net: NetId, frame: Frame, except: Option<PortId>) -> u64 {
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
    fn settle_flood(&mut self, in_port: PortId, net: NetId, sent: u64) {
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

/// The forwarding pipeline with its tables and counters.
#[derive(Debug)]
pub struct Switch {
    topo: Topology,
    ingress: Ingress,
    bridge: Bridge,
    router: Router,
    counters: Counters,
    verdicts: Verdicts,
    parsed: [Parsed; BATCH_SIZE],
    routes: [Option<NextHopId>; BATCH_SIZE],
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
            router: Router::new(&topo),
            counters: Counters::new(topo.ports.len()),
            verdicts: Verdicts::default(),
            parsed: [Parsed::default(); BATCH_SIZE],
            routes: [None; BATCH_SIZE],
            topo,
        }
    }

    /// The switch for a new validated configuration, carrying over what is still valid (a configuration
    /// change at run time; the caller holds the switch, so no batch is in flight). Ports, networks and router
    /// interfaces are matched by name, since their ids are positions in the configuration and may change:
    /// - **MAC tables**: a network that still exists keeps its entries on ports that are still access ports of
    ///   it (with when they were last seen, under the new limit and ageing time); entries of removed ports, of
    ///   ports that moved to another network or became routed, and whole removed networks are dropped.
    /// - **Router** (neighbours, tracked connections, NAT bindings, router counters): kept whole when the
    ///   router would be built the same ([`Topology::same_router_as`]: same interfaces, routes, publish rules,
    ///   NAT and conntrack settings), unless frames wait for ARP while ports were removed or renumbered (they
    ///   name their ingress port by id); otherwise rebuilt empty.
    /// - **Counters**: a port keeps its pipeline counters while its name exists; drops by reason are kept.
    pub fn reconfigure(self, cfg: &Config) -> (Switch, Carried) {
        let topo = Topology::from_config(cfg);
        let old = &self.topo;
        let net_name = |t: &'_ Topology, n: Option<NetId>| n.map(|n| t.networks[n as usize].name.clone());
        let by_name: Vec<Option<PortId>> = old.ports.iter().map(|p| topo.port_id(&p.name)).collect();
        let same_network: Vec<Option<PortId>> = old
            .ports
            .iter()
            .zip(&by_name)
            .map(|(p, &new)| {
                new.filter(|&n| {
                    let was = net_name(old, p.network);
                    was.is_some() && was == net_name(&topo, topo.ports[n as usize].network)
                })
            })
            .collect();
        let old_entries: usize = (0..old.networks.len()).map(|n| self.bridge.fdb(n as NetId).len()).sum();
        let fdbs: Vec<Fdb> = topo
            .networks
            .iter()
            .map(|n| match old.network_id(&n.name) {
                Some(o) => self.bridge.fdb(o).remapped(&same_network, topo.ports.len(), n.mac_limit, n.mac_aging).0,
                None => Fdb::new(topo.ports.len(), n.mac_limit, n.mac_aging),
            })
            .collect();
        let fdb_kept: usize = fdbs.iter().map(Fdb::len).sum();
        let ports_stable = by_name.iter().enumerate().all(|(i, &n)| n == Some(i as PortId));
        let router_kept = old.same_router_as(&topo) && (ports_stable || !self.router.has_pending());
        let (router, connections_flushed) = if router_kept {
            (self.router, 0)
        } else {
            (Router::new(&topo), self.router.nat().conntrack().len())
        };
        let carried =
            Carried { fdb_kept, fdb_flushed: old_entries.saturating_sub(fdb_kept), router_kept, connections_flushed };
        let switch = Switch {
            ingress: Ingress,
            bridge: Bridge::with_tables(fdbs, self.bridge.stats()),
            router,
            counters: self.counters.remapped(&by_name, topo.ports.len()),
            verdicts: Verdicts::default(),
            parsed: [Parsed::default(); BATCH_SIZE],
            routes: [None; BATCH_SIZE],
            topo,
        };
        (switch, carried)
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
        self.bridge.process(&cx, &self.topo, batch, &self.parsed, &mut verdicts);
        self.routes = [None; BATCH_SIZE];
        self.router.lookup_batch(batch, &self.parsed, &verdicts, &mut self.routes);
        let mut out = Egress {
            topo: &self.topo,
            bridge: &self.bridge,
            counters: &mut self.counters,
            tx,
            pool,
            now,
            last_fdb: None,
        };
        for (i, mut frame) in batch.drain().enumerate() {
            frame.port = in_port;
            match verdicts.get(i) {
                Verdict::Output(p) => {
                    let pc = if out.to_port(p, frame) {
                        &mut out.counters.port_mut(in_port).forwarded
                    } else {
                        &mut out.counters.port_mut(in_port).dropped
                    };
                    *pc += 1;
                }
                Verdict::Flood(net) => {
                    let sent = out.flood(net, frame, Some(in_port));
                    out.settle_flood(in_port, net, sent);
                }
                Verdict::ToRouter(rif) => {
                    out.counters.port_mut(in_port).routed += 1;
                    self.router.handle(now, rif, frame, &self.parsed[i], self.routes[i], false, &mut out);
                }
                Verdict::FloodAndRoute(net, rif) => {
                    if let Some(copy) = out.pool.clone_frame(&frame) {
                        self.router.handle(now, rif, copy, &self.parsed[i], None, true, &mut out);
                    }
                    out.flood(net, frame, Some(in_port));
                    // The router took a copy, so the frame reached somewhere even with no other port.
                    out.counters.port_mut(in_port).flooded += 1;
                }
                Verdict::Drop(reason) => out.drop(frame, reason),
                Verdict::Continue => {
                    // Unreachable by construction: the bridge decides every frame it sees. Count rather than
                    // panic if a future stage forgets to.
                    out.drop(frame, DropReason::NoNetwork);
                }
            }
        }
        self.verdicts = verdicts;
    }

    /// Housekeeping off the hot path: ages out MAC entries, expires connections (releasing their NAT ports),
    /// retries ARP, fails unresolved neighbours (sending Host Unreachable). Call every [`HOUSEKEEPING_INTERVAL`]
    /// or so of (virtual) time.
    pub fn housekeeping(&mut self, now: Nanos, pool: &mut BufPool, tx: &mut TxQueues) {
        self.bridge.expire(now);
        self.router.nat_mut().expire(now);
        let mut out = Egress {
            topo: &self.topo,
            bridge: &self.bridge,
            counters: &mut self.counters,
            tx,
            pool,
            now,
            last_fdb: None,
        };
        self.router.tick(now, &mut out);
    }

    /// True while the router waits for ARP answers (a driver with a virtual clock keeps time moving until then).
    pub fn has_pending(&self) -> bool {
        self.router.has_pending()
    }

    /// The numbered ports, networks and router interfaces.
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

    /// The router stage (routes, neighbours, counters).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The connection-tracking table.
    pub fn conntrack(&self) -> &Conntrack {
        self.router.nat().conntrack()
    }

    /// The tracked connections live at `now`, sorted by original tuple.
    pub fn connections(&self, now: Nanos) -> Vec<ConnectionInfo> {
        self.router.nat().connections(now)
    }

    /// The NAT stage's counters.
    pub fn nat_stats(&self) -> NatStats {
        self.router.nat().stats()
    }

    /// Removes every tracked connection, releasing their NAT ports (`vswitchctl conntrack flush`); returns how
    /// many were removed.
    pub fn flush_conntrack(&mut self) -> usize {
        self.router.nat_mut().flush()
    }
}

/// What [`Switch::reconfigure`] carried over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Carried {
    /// MAC entries kept.
    pub fdb_kept: usize,
    /// MAC entries dropped (removed ports or networks, ports that changed network, a smaller limit).
    pub fdb_flushed: usize,
    /// The router's state (neighbours, connections, NAT bindings) was kept.
    pub router_kept: bool,
    /// Tracked connections dropped with the old router.
    pub connections_flushed: usize,
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
