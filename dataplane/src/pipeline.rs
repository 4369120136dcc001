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
use crate::buffer::{BufPool, Frame};
use crate::config::Config;
use crate::conntrack::Conntrack;
use crate::counters::{Counters, DropReason};
use crate::fdb::{Fdb, FdbStats};
use crate::ids::{Nanos, NetId, PortId, RifId, NANOS_PER_SEC};
use crate::ingress::Ingress;
use crate::nat::{ConnectionInfo, NatStats};
use crate::overlay::{Overlay, OverlayError, OverlayState, Pending, UpdateSummary};
use crate::packet::Parsed;
use crate::router::{BatchLookup, Router};
use crate::topology::{Attach, Topology};
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
    /// A VXLAN packet for our VTEP: decapsulate and bridge the inner frame in its overlay network.
    Decap,
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

    #[inline(always)]
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
    overlay: &'a mut Overlay,
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
    #[inline(always)]
    pub fn to_port(&mut self, p: PortId, frame: Frame) -> bool {
        let len = frame.len();
        // The VLAN allowance is only looked at for a frame longer than the MTU allows untagged (rare).
        let max = self.topo.ports[p as usize].max_frame_len();
        if len > max && len > max + vlan_allowance(frame.data()) {
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

    /// Sends `frame` to every port of `net` except `except`, and on an overlay network to the remote endpoint it
    /// is addressed to, or else (broadcast, multicast, unknown unicast) to every member VTEP too; returns how many
    /// copies were queued.
    #[inline]
    fn flood(&mut self, net: NetId, frame: Frame, except: Option<PortId>) -> u64 {
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
                return u64::from(self.encap(net, peer, frame));
            }
        }
        let mut sent = 0;
        let members = self.overlay.members(net).len();
        if members > 0 {
            if self.overlay.take_bum_token(net, self.now) {
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
                self.counters.count(DropReason::VxlanBumRateLimited);
            }
        }
        sent + self.flood_local(net, frame, except)
    }

    /// Encapsulates `frame` towards `peer` (queued for the router's neighbour stage); on failure counts the
    /// reason and frees it. True if queued.
    #[inline]
    fn encap(&mut self, net: NetId, peer: crate::overlay::peers::PeerId, frame: Frame) -> bool {
        match self.overlay.encap(net, peer, frame) {
            Ok(()) => true,
            Err((frame, reason)) => {
                self.counters.count(reason);
                self.pool.free(frame);
                false
            }
        }
    }

    /// Decapsulates a VXLAN packet received on `in_port` and delivers the inner frame to the local ports of its
    /// overlay network (split horizon: never to another VTEP, never to the router), counting it.
    #[inline(never)]
    fn decap(&mut self, in_port: PortId, mut frame: Frame, parsed: &Parsed) {
        let net = match self.overlay.decap(&mut frame, parsed) {
            Ok((net, _)) => net,
            Err(reason) => return self.drop(frame, reason),
        };
        let dst = MacAddr::from_slice(frame.data()).unwrap_or(MacAddr::BROADCAST);
        let gateway = self.topo.networks[net as usize].rif.map(|r| self.topo.rifs[r as usize].mac);
        if gateway == Some(dst) {
            return self.drop(frame, DropReason::VxlanGatewayMac);
        }
        let known = if dst.is_multicast() { None } else { self.bridge.fdb(net).lookup(dst, self.now) };
        match known {
            Some(p) => {
                let ok = self.to_port(p, frame);
                let pc = self.counters.port_mut(in_port);
                if ok {
                    pc.forwarded += 1
                } else {
                    pc.dropped += 1
                }
            }
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

    /// Sends `frame` to every port of `net` except `except`; returns how many copies were queued.
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

    /// Sends an ARP reply the overlay made in place of a request (suppression) back out of `in_port`.
    #[inline(never)]
    fn arp_suppressed(&mut self, in_port: PortId, frame: Frame) {
        let ok = self.to_port(in_port, frame);
        let pc = self.counters.port_mut(in_port);
        if ok {
            pc.forwarded += 1;
        } else {
            pc.dropped += 1;
        }
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
    overlay: Overlay,
    counters: Counters,
    verdicts: Verdicts,
    parsed: [Parsed; BATCH_SIZE],
    routes: [BatchLookup; BATCH_SIZE],
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
            overlay: Overlay::new(&topo),
            counters: Counters::new(topo.ports.len()),
            verdicts: Verdicts::default(),
            parsed: [Parsed::default(); BATCH_SIZE],
            routes: [BatchLookup::default(); BATCH_SIZE],
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
        let (router, connections_flushed) =
            if router_kept { (self.router, 0) } else { (Router::new(&topo), self.router.nat().conntrack().len()) };
        let carried =
            Carried { fdb_kept, fdb_flushed: old_entries.saturating_sub(fdb_kept), router_kept, connections_flushed };
        let mut switch = Switch {
            ingress: Ingress,
            bridge: Bridge::with_tables(fdbs, self.bridge.stats()),
            router,
            overlay: Overlay::new(&topo),
            counters: self.counters.remapped(&by_name, topo.ports.len()),
            verdicts: Verdicts::default(),
            parsed: [Parsed::default(); BATCH_SIZE],
            routes: [BatchLookup::default(); BATCH_SIZE],
            topo,
        };
        // The overlay membership is the control plane's, not the configuration's: it carries over (per-peer
        // counters included), applied to the new networks and routes.
        let overlay = self.overlay.reconfigured(&switch.topo, &|a| switch.router.underlay_route(a));
        switch.overlay = overlay;
        switch.apply_overlay_mtu();
        (switch, carried)
    }

    /// Replaces the overlay membership (members and remote endpoints, from the control plane) in one step, and
    /// the overlay networks' MTU with it. Nothing else changes: MAC tables, neighbours and connections stay, and
    /// the caller holds the switch only as long as rebuilding the overlay tables takes (no worker pause). An
    /// invalid state changes nothing.
    pub fn update_overlay(&mut self, state: OverlayState) -> Result<UpdateSummary, OverlayError> {
        let router = &self.router;
        let summary = self.overlay.update(&self.topo, state, &|a| router.underlay_route(a))?;
        self.apply_overlay_mtu();
        Ok(summary)
    }

    /// The overlay tables (members, endpoints, counters).
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Sets the gateway MTU of every overlay network to the smaller of its ports' MTU and the overlay MTU, so the
    /// router sends Fragmentation Needed for routed DF packets that would not fit the tunnel.
    fn apply_overlay_mtu(&mut self) {
        for (n, net) in self.topo.networks.iter().enumerate() {
            let (Some(rif), Some(overlay_mtu)) = (net.rif, self.overlay.mtu(n as NetId)) else { continue };
            let ports = net.ports.iter().map(|&p| self.topo.ports[p as usize].mtu).min();
            let base = ports.unwrap_or(crate::config::defaults::MTU);
            self.topo.rifs[rif as usize].mtu = base.min(overlay_mtu);
        }
    }

    /// A scratch copy for [`Switch::trace`]: the same topology and MAC tables; the router's resolved neighbours
    /// re-learned (each one's ARP request for its interface's address is run through the copy); empty
    /// connection table (the router's state cannot be copied: a traced packet is treated as a connection's
    /// first); zero counters. Nothing done to the copy reaches this switch.
    pub fn scratch(&self, now: Nanos) -> Switch {
        use crate::wire::builder::arp_request;
        let mut s = Switch::with_topology(self.topo.clone());
        s.bridge = self.bridge.clone();
        s.overlay = self.overlay.reconfigured(&s.topo, &|a| s.router.underlay_route(a));
        let mut pool = BufPool::new(4 * BATCH_SIZE);
        let mut tx = s.tx_queues();
        let mut batch = Batch::new();
        for n in self.router.neighbours(now) {
            let (Some(mac), Some(rif)) = (n.mac, self.topo.rifs.get(n.rif as usize)) else { continue };
            let port = match rif.attach {
                Attach::Port(p) => Some(p),
                Attach::Network(net) => self
                    .bridge
                    .fdb(net)
                    .lookup(mac, now)
                    .or_else(|| self.topo.networks[net as usize].ports.first().copied()),
            };
            let (Some(port), Some(mut f)) = (port, pool.alloc()) else { continue };
            if f.load(&arp_request(mac, n.ip, rif.addr)).is_ok() && batch.push(f).is_ok() {
                s.process(now, port, &mut batch, &mut pool, &mut tx);
            }
            for p in 0..tx.ports() {
                for f in tx.queue_mut(p as PortId).drain(..) {
                    pool.free(f);
                }
            }
        }
        s.counters = Counters::new(s.topo.ports.len());
        s
    }

    /// Runs one frame (received on `in_port` at `now`) through the pipeline and reports each stage's decision,
    /// the frames that would be sent and the drops counted. Meant for a [`Switch::scratch`] copy: it learns,
    /// counts and tracks like any frame.
    pub fn trace(&mut self, now: Nanos, in_port: PortId, data: &[u8]) -> Result<TraceSteps, String> {
        if in_port as usize >= self.topo.ports.len() {
            return Err(format!("no port #{in_port}"));
        }
        let mut pool = BufPool::new(4 * BATCH_SIZE);
        let mut tx = self.tx_queues();
        let mut batch = Batch::new();
        let load = |pool: &mut BufPool, batch: &mut Batch| -> Result<(), String> {
            let mut f = pool.alloc().ok_or("no buffer")?;
            f.load(data).map_err(|e| format!("{e}"))?;
            f.ts = now;
            f.port = in_port;
            batch.push(f).map_err(|_| "batch full".to_string())
        };
        let mut stages = Vec::new();
        // The first stages one by one, for their verdicts.
        load(&mut pool, &mut batch)?;
        let cx = Context { now, in_port };
        let mut v = Verdicts::default();
        self.ingress.process(&cx, &self.topo, &batch, &mut self.parsed, &mut v);
        let parsed = self.parsed[0];
        stages.push((
            "ingress",
            match v.get(0) {
                Verdict::Continue => format!(
                    "valid: ethertype {:#06x}, {} VLAN tag(s), ip proto {}",
                    parsed.ethertype, parsed.vlan_tags, parsed.ip_proto
                ),
                other => self.describe(other),
            },
        ));
        if v.get(0) == Verdict::Continue {
            self.bridge.process(&cx, &self.topo, &batch, &self.parsed, &mut v);
            let port = &self.topo.ports[in_port as usize];
            let what = match port.network {
                Some(n) => format!("network {}: ", self.topo.networks[n as usize].name),
                None => "routed port: ".to_string(),
            };
            stages.push(("bridge", what + &self.describe(v.get(0))));
        }
        let routed = matches!(v.get(0), Verdict::ToRouter(_) | Verdict::FloodAndRoute(..));
        if routed && parsed.ethertype == crate::wire::ethertype::IPV4 {
            let d = batch.iter().next().map(|f| f.data().to_vec()).unwrap_or_default();
            if let Some(ip) = crate::wire::ipv4::Header::at(&d, parsed.l3 as usize) {
                let dst = ip.dst_addr();
                let best = self
                    .router
                    .routes()
                    .into_iter()
                    .filter(|r| r.prefix.contains(&dst))
                    .max_by_key(|r| r.prefix.prefix_len());
                stages.push((
                    "route",
                    match best {
                        Some(r) => format!(
                            "{dst}: {} ({}) via {} out {}",
                            r.prefix,
                            r.origin,
                            r.next_hop.via.map_or("the destination itself".to_string(), |v| v.to_string()),
                            self.topo.rifs[r.next_hop.rif as usize].name
                        ),
                        None => format!("{dst}: no route"),
                    },
                ));
            }
        }
        for f in batch.drain() {
            pool.free(f);
        }
        // Then the whole pipeline, for what it does.
        let stats = |s: &Switch| {
            serde_json::json!({
                "router": s.router.stats(),
                "nat": s.nat_stats(),
                "neigh": s.router.neigh_stats(),
                "conntrack": s.conntrack().stats(),
            })
        };
        let before = stats(self);
        load(&mut pool, &mut batch)?;
        self.process(now, in_port, &mut batch, &mut pool, &mut tx);
        if routed {
            let changes = diff(&before, &stats(self), "");
            stages
                .push(("router", if changes.is_empty() { "nothing counted".to_string() } else { changes.join(", ") }));
        }
        let mut outputs = Vec::new();
        for p in 0..tx.ports() {
            for f in tx.queue_mut(p as PortId).drain(..) {
                outputs.push((p as PortId, f.data().to_vec()));
                pool.free(f);
            }
        }
        let drops = self.counters.drops_by_name();
        Ok(TraceSteps { stages, outputs, drops })
    }

    fn describe(&self, v: Verdict) -> String {
        let port = |p: PortId| self.topo.ports.get(p as usize).map_or("?", |p| p.name.as_str()).to_string();
        let net = |n: NetId| self.topo.networks.get(n as usize).map_or("?", |n| n.name.as_str()).to_string();
        let rif = |r: RifId| self.topo.rifs.get(r as usize).map_or("?", |r| r.name.as_str()).to_string();
        match v {
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
        if let Some(vtep) = self.topo.vtep.filter(|v| v.port == in_port) {
            self.mark_decap(vtep.rif, in_port, batch, &mut verdicts);
        }
        self.routes = [BatchLookup::default(); BATCH_SIZE];
        self.router.lookup_batch(batch, &self.parsed, &verdicts, &mut self.routes);
        let mut out = Egress {
            topo: &self.topo,
            bridge: &self.bridge,
            counters: &mut self.counters,
            tx,
            pool,
            overlay: &mut self.overlay,
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
                    if out.overlay.is_overlay(net) && out.overlay.arp_suppress(net, &mut frame) {
                        out.arp_suppressed(in_port, frame);
                    } else {
                        let sent = out.flood(net, frame, Some(in_port));
                        out.settle_flood(in_port, net, sent);
                    }
                }
                Verdict::ToRouter(rif) => {
                    out.counters.port_mut(in_port).routed += 1;
                    self.router.handle(now, rif, frame, &self.parsed[i], &self.routes[i], &mut out);
                }
                Verdict::Decap => out.decap(in_port, frame, &self.parsed[i]),
                Verdict::FloodAndRoute(net, _)
                    if out.overlay.is_overlay(net) && out.overlay.arp_suppress(net, &mut frame) =>
                {
                    out.arp_suppressed(in_port, frame);
                }
                Verdict::FloodAndRoute(net, rif) => {
                    if let Some(copy) = out.pool.clone_frame(&frame) {
                        self.router.handle_copy(now, rif, copy, &self.parsed[i], &mut out);
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
            if out.overlay.has_pending() {
                self.router.send_encapsulated(now, &mut out);
            }
        }
        self.verdicts = verdicts;
    }

    /// Turns the bridge's `ToRouter` verdicts for the VTEP's interface into `Decap` for VXLAN packets to our VTEP
    /// (they never reach the router: no forwarding checks, no NAT, no connection tracking).
    #[inline(never)]
    fn mark_decap(&self, vtep_rif: RifId, in_port: PortId, batch: &Batch, verdicts: &mut Verdicts) {
        for (i, f) in batch.iter().enumerate() {
            if verdicts.get(i) == Verdict::ToRouter(vtep_rif)
                && self.overlay.is_vxlan(in_port, f.data(), &self.parsed[i])
            {
                verdicts.set(i, Verdict::Decap);
            }
        }
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
            overlay: &mut self.overlay,
            now,
            last_fdb: None,
        };
        self.router.tick(now, &mut out);
        if out.overlay.has_pending() {
            self.router.send_encapsulated(now, &mut out);
        }
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

/// What [`Switch::trace`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSteps {
    /// `(stage, decision)` in order: `ingress`, `bridge`, `route`, `router` (the stages the frame reached).
    pub stages: Vec<(&'static str, String)>,
    /// Frames that would be sent, by egress port.
    pub outputs: Vec<(PortId, Vec<u8>)>,
    /// Drops counted, by reason name.
    pub drops: std::collections::BTreeMap<&'static str, u64>,
}

/// The numeric fields of `after` that differ from `before`, as `path +delta` (or `path old → new` for gauges
/// that went down).
fn diff(before: &serde_json::Value, after: &serde_json::Value, path: &str) -> Vec<String> {
    use serde_json::Value;
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => b
            .iter()
            .flat_map(|(k, vb)| {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                a.get(k).map(|va| diff(va, vb, &p)).unwrap_or_default()
            })
            .collect(),
        (Value::Number(a), Value::Number(b)) if a != b => match (a.as_u64(), b.as_u64()) {
            (Some(x), Some(y)) if y > x => vec![format!("{path} +{}", y - x)],
            _ => vec![format!("{path} {a} → {b}")],
        },
        _ => Vec::new(),
    }
}

/// Extra length allowed on egress for the VLAN tags a frame carries.
#[inline]
fn vlan_allowance(data: &[u8]) -> usize {
    use crate::wire::{ethernet, vlan};
    ethernet::Packet::new_checked(data).map_or(0, |e| e.vlan_tags_announced() * vlan::HEADER_LEN)
}
