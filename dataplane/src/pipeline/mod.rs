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
//! gives every worker a switch of its own, a [`Shard`]: the shards replicate MAC tables and neighbours and
//! partition connections, handing frames to the shard that owns their connection ([`shard`]; the driver moves
//! each shard's [`Outbox`] to the others after every call). Replay and tests own one switch outright (or
//! several, [`shards::Shards`], to check that N shards forward as one switch does).

pub mod shard;
pub mod shards;
mod trace;

use crate::batch::{Batch, BATCH_SIZE};
use crate::bridge::{Bridge, BridgeStats};
use crate::buffer::{BufPool, Frame};
use crate::config::Config;
use crate::conntrack::Conntrack;
use crate::counters::{Counters, DropReason};
use crate::fdb::{Fdb, FdbStats};
use crate::ids::{table_id, Nanos, NetId, PortId, RifId, NANOS_PER_SEC};
use crate::ingress::Ingress;
use crate::mss_clamp::{self, Clamped, MssLimit};
use crate::nat::{ConnectionInfo, NatStats};
use crate::overlay::{Overlay, OverlayError, OverlayState, UpdateSummary};
use crate::packet::Parsed;
use crate::router::{BatchLookup, Router};
use crate::topology::Topology;
pub use shard::{Dispatched, Handoff, Inbox, Outbox, Owners, Shard, Update};

pub use crate::stage::{Context, Egress, Trace, Tracer, TxQueues, Untraced, Verdict, Verdicts, TX_QUEUE_CAP};
pub use trace::TraceSteps;

/// How often drivers should call [`Switch::housekeeping`].
pub const HOUSEKEEPING_INTERVAL: Nanos = NANOS_PER_SEC / 10;

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
    /// Which worker's switch this is.
    shard: Shard,
    /// Who owns a routed frame's connection (several shards only).
    owners: Owners,
    /// What this shard produced for the others since the driver last drained it.
    outbox: Outbox,
}

/// The tables of a reconfigured switch, computed by [`Switch::next_for`] and put together by
/// [`Switch::into_next`].
#[derive(Debug)]
pub struct NextSwitch {
    topo: Topology,
    fdbs: Vec<Fdb>,
    /// `None`: the old router is kept whole.
    router: Option<Router>,
    overlay: Overlay,
    counters: Counters,
    carried: Carried,
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
            shard: Shard::ONE,
            owners: Owners::default(),
            outbox: Outbox::default(),
            topo,
        }
    }

    /// This switch as shard `shard` of several (a worker's own switch in `vswitchd run`): it announces what it
    /// learns and hands routed frames to their connection's owner through its [`Outbox`] (see [`shard`]).
    pub fn sharded(mut self, shard: Shard) -> Switch {
        self.set_shard(shard);
        self
    }

    fn set_shard(&mut self, shard: Shard) {
        self.shard = shard;
        self.owners = if shard.is_sharded() { Owners::new(&self.topo) } else { Owners::default() };
        self.bridge.set_announcing(shard.is_sharded());
        self.router.set_announcing(shard.is_sharded());
        self.outbox = Outbox::default();
    }

    /// Counts a frame received on `port` that this shard dropped for `reason` outside the pipeline (a handoff
    /// that found its owner's queue full).
    pub fn count_drop(&mut self, port: PortId, reason: DropReason) {
        self.counters.drop(port, reason);
    }

    /// The shard (of `count`) that would own the connection of `frame` if it reached the router (`None`: any,
    /// or not routed); for `vswitchctl trace`, which runs on a copy of the owner.
    pub fn owner_of_frame(&self, frame: &[u8], count: usize) -> Option<usize> {
        let parsed = crate::packet::parse(frame).ok()?;
        Owners::new(&self.topo).owner(frame, &parsed, count)
    }

    /// Announces every MAC refresh to the other shards, not one per quarter of the ageing time, so that every
    /// replica ages an address exactly when one switch would (see [`crate::fdb::Fdb::set_renew_every_refresh`]):
    /// for deterministic drivers ([`shards::Shards`]); the live workers keep the default.
    pub fn renew_every_refresh(&mut self) {
        self.bridge.set_renew_every_refresh(true);
    }

    /// Which shard this is.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// What this shard produced for the others: the driver takes it after every call and delivers it
    /// ([`Switch::apply_update`], [`Switch::process_handed`]).
    pub fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// Applies another shard's [`Update`] (at a batch boundary); frames it releases (held for ARP) are queued in
    /// `tx`.
    pub fn apply_update(&mut self, now: Nanos, update: Update, pool: &mut BufPool, tx: &mut TxQueues) {
        match update {
            Update::Mac { net, mac, port, seen } => self.bridge.learn_remote(net, mac, port, seen),
            Update::Neigh(note) => {
                let mut out = Egress::new(
                    &self.topo,
                    self.bridge.fdbs(),
                    &mut self.counters,
                    tx,
                    pool,
                    &mut self.overlay,
                    now,
                    Untraced,
                );
                self.router.apply_note(now, note, &mut out);
            }
        }
    }

    /// Applies every update waiting in `inbox` (at a batch boundary: before a received burst, so what the other
    /// shards learned before it arrived is known, and before the frames handed over). Returns how many.
    pub fn apply_updates(
        &mut self,
        now: Nanos,
        inbox: &mut impl Inbox,
        pool: &mut BufPool,
        tx: &mut TxQueues,
    ) -> usize {
        let mut n = 0;
        while let Some(u) = inbox.pop_update() {
            self.apply_update(now, u, pool, tx);
            n += 1;
        }
        n
    }

    /// Runs one burst of frames handed over ([`Switch::process_handed`]): the frame kept in `carry` by the last
    /// call, if any, else the oldest one queued, then the frames after it with the same ingress port, up to a
    /// burst. The first frame of another port, read to end the burst, is kept in `carry` for the next call: the
    /// queue cannot be peeked, and putting the frame back would queue it behind newer frames of its own port
    /// (its flow reordered). The caller keeps `carry` between calls (and frees it, counted, if it stops).
    /// Returns the frames run (0: nothing waited).
    pub fn run_handed_burst(
        &mut self,
        now: Nanos,
        inbox: &mut impl Inbox,
        carry: &mut Option<(PortId, Frame)>,
        batch: &mut Batch,
        pool: &mut BufPool,
        tx: &mut TxQueues,
    ) -> usize {
        let Some((port, first)) = carry.take().or_else(|| inbox.pop_handoff()) else { return 0 };
        if let Err(f) = batch.push(first) {
            // The caller's batch was not empty: a driver bug; the frame is not lost silently.
            self.count_drop(port, DropReason::HandoffFull);
            pool.free(f);
        }
        while batch.room() > 0 {
            match inbox.pop_handoff() {
                Some((p, f)) if p == port => {
                    let _ = batch.push(f);
                }
                Some(other) => {
                    *carry = Some(other);
                    break;
                }
                None => break,
            }
        }
        let n = batch.len();
        self.process_handed(now, port, batch, pool, tx);
        n
    }

    /// Hands this shard's outbox to the others (after each call that may fill it): every update to every other
    /// shard through `update(k, u)` (false: shard `k`'s queue was full and the update is lost; it learns the
    /// address itself later, or hears of it at the next renewal), every handed frame to its owner through
    /// `handoff` (an `Err` gives it back: the owner's queue was full, and the frame is dropped as
    /// `handoff-full`, charged to its ingress port here, its buffer freed).
    pub fn dispatch(
        &mut self,
        pool: &mut BufPool,
        mut update: impl FnMut(usize, Update) -> bool,
        mut handoff: impl FnMut(Handoff) -> Result<(), Handoff>,
    ) -> Dispatched {
        let mut d = Dispatched::default();
        let (me, count) = (self.shard.index, self.shard.count);
        for u in self.outbox.updates.drain(..) {
            for k in (0..count).filter(|&k| k != me) {
                if !update(k, u) {
                    d.updates_dropped += 1;
                }
            }
        }
        for h in self.outbox.handoffs.drain(..) {
            match handoff(h) {
                Ok(()) => d.handed += 1,
                Err(h) => {
                    d.handoffs_dropped += 1;
                    self.counters.drop(h.port, DropReason::HandoffFull);
                    pool.free(h.frame);
                }
            }
        }
        d
    }

    /// Runs frames another shard received on `in_port` and handed over ([`Handoff`]) through the pipeline: as
    /// [`Switch::process`], but not counted as received nor learned again (the receiving shard did both).
    pub fn process_handed(
        &mut self,
        now: Nanos,
        in_port: PortId,
        batch: &mut Batch,
        pool: &mut BufPool,
        tx: &mut TxQueues,
    ) {
        if usize::from(in_port) >= self.topo.ports.len() {
            for f in batch.drain() {
                pool.free(f);
            }
            return;
        }
        let mut cx = Context::new(now, in_port);
        cx.handed = true;
        self.process_traced(cx, batch, pool, tx);
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
        self.reconfigure_prebuilt(Prebuilt::new(cfg))
    }

    /// [`Switch::reconfigure_prebuilt`] in place: `spare` (any switch, built off the forwarding thread) stands in
    /// while this one is moved into the new one. The new tables are computed first ([`Switch::next_for_prebuilt`],
    /// reading this switch only), so a panic there leaves this switch as it was; `computed` runs then, before
    /// anything moves (a worker's test hook).
    pub fn reconfigure_in_place(&mut self, pre: Prebuilt, spare: Switch, computed: impl FnOnce()) -> Carried {
        let next = self.next_for_prebuilt(pre);
        computed();
        let old = std::mem::replace(self, spare);
        let (new, carried) = old.into_next(next);
        *self = new;
        carried
    }

    /// [`Switch::reconfigure`] with the new topology and router built beforehand ([`Prebuilt::new`], off the
    /// forwarding thread): what is left is carrying the learned state over (a worker does this at a batch
    /// boundary when an `apply` reaches it without a pause, see `crate::live`).
    pub fn reconfigure_prebuilt(self, pre: Prebuilt) -> (Switch, Carried) {
        let next = self.next_for_prebuilt(pre);
        self.into_next(next)
    }

    /// The first half of [`Switch::reconfigure`]: everything the new switch needs, computed from this one
    /// without changing it. A panic here leaves this switch as it was (the live switch-over relies on it to go
    /// back to the running configuration).
    pub fn next_for(&self, cfg: &Config) -> NextSwitch {
        self.next_for_prebuilt(Prebuilt::new(cfg))
    }

    /// [`Switch::next_for`] with the new topology and router built beforehand ([`Prebuilt::new`]).
    pub fn next_for_prebuilt(&self, pre: Prebuilt) -> NextSwitch {
        let Prebuilt { topo, router: fresh } = pre;
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
        let old_entries: usize = (0..old.networks.len()).map(|n| self.bridge.fdb(table_id(n)).len()).sum();
        let fdbs: Vec<Fdb> = topo
            .networks
            .iter()
            .map(|n| match old.network_id(&n.name) {
                Some(o) => self.bridge.fdb(o).remapped(&same_network, topo.ports.len(), n.mac_limit, n.mac_aging).0,
                None => Fdb::new(topo.ports.len(), n.mac_limit, n.mac_aging),
            })
            .collect();
        let fdb_kept: usize = fdbs.iter().map(Fdb::len).sum();
        let ports_stable = by_name.iter().enumerate().all(|(i, &n)| n == Some(table_id(i)));
        let same_router = old.same_router_as(&topo) && (ports_stable || !self.router.has_pending());
        // A changed router is rebuilt, carrying over the connections and neighbours the change does not concern
        // (`router/carry.rs`); "kept" when that was all of them.
        let (router, router_kept, connections_flushed) = if same_router {
            (None, true, 0)
        } else {
            let (r, c) = self.router.carried_into_new(old, &topo, fresh);
            (Some(r), c.connections_flushed == 0 && c.neighbours_dropped == 0, c.connections_flushed)
        };
        let carried =
            Carried { fdb_kept, fdb_flushed: old_entries.saturating_sub(fdb_kept), router_kept, connections_flushed };
        let counters = self.counters.remapped(&by_name, topo.ports.len());
        // The overlay membership is the control plane's, not the configuration's: it carries over (per-peer
        // counters included), applied to the new networks and routes (the new router's, or this one if kept).
        let overlay = {
            let r = router.as_ref().unwrap_or(&self.router);
            self.overlay.reconfigured(&topo, &|a| r.underlay_route(a))
        };
        NextSwitch { topo, fdbs, router, overlay, counters, carried }
    }

    /// The second half of [`Switch::reconfigure`]: the new switch from `next` (made by [`Switch::next_for`] on
    /// this switch), moving this one's router when it is kept, then the overlay networks' MTU set on the new
    /// tables. Nothing here is expected to panic (moves and a loop over the networks).
    pub fn into_next(self, next: NextSwitch) -> (Switch, Carried) {
        let NextSwitch { topo, fdbs, router, overlay, counters, carried } = next;
        let mut switch = Switch {
            ingress: Ingress,
            bridge: Bridge::with_tables(fdbs, self.bridge.stats()),
            router: router.unwrap_or(self.router),
            overlay,
            counters,
            verdicts: Verdicts::default(),
            parsed: [Parsed::default(); BATCH_SIZE],
            routes: [BatchLookup::default(); BATCH_SIZE],
            shard: Shard::ONE,
            owners: Owners::default(),
            outbox: Outbox::default(),
            topo,
        };
        switch.apply_overlay_mtu();
        switch.set_shard(self.shard);
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
            let (Some(rif), Some(overlay_mtu)) = (net.rif, self.overlay.mtu(table_id(n))) else { continue };
            let ports = net.ports.iter().map(|&p| self.topo.ports[p as usize].mtu).min();
            let base = ports.unwrap_or(crate::config::defaults::MTU);
            self.topo.rifs[rif as usize].mtu = base.min(overlay_mtu);
        }
    }

    /// Transmit queues sized for this switch's ports.
    pub fn tx_queues(&self) -> TxQueues {
        TxQueues::new(self.topo.ports.len(), TX_QUEUE_CAP)
    }

    /// Runs every frame of `batch` (all received on `in_port` at `now`) through the pipeline. The batch is left
    /// empty: each frame is queued in `tx` or dropped (buffer back to `pool`) and counted.
    #[inline]
    pub fn process(&mut self, now: Nanos, in_port: PortId, batch: &mut Batch, pool: &mut BufPool, tx: &mut TxQueues) {
        self.process_traced(Context::new(now, in_port), batch, pool, tx);
    }

    /// [`Switch::process`] with the context given whole: with `cx.trace` set, every stage records its decisions
    /// about the batch's frames there ([`Switch::trace`] runs one frame this way).
    #[inline(always)]
    fn process_traced<T: Tracer>(&mut self, cx: Context<T>, batch: &mut Batch, pool: &mut BufPool, tx: &mut TxQueues) {
        if batch.is_empty() {
            return;
        }
        let (now, in_port) = (cx.now, cx.in_port);
        let mut verdicts = std::mem::take(&mut self.verdicts);
        verdicts.reset();
        // Stamped here, long before the frames are moved out of the batch: stamping each one as it is taken out
        // made that move re-read 8 bytes just written as 2, which the CPU cannot forward from the store (a stall
        // worth about a sixth of the 64-byte path's time, criterion `l2`).
        for f in batch.iter_mut() {
            f.port = in_port;
        }
        if !cx.handed {
            let pc = self.counters.port_mut(in_port);
            for f in batch.iter() {
                pc.rx_packets += 1;
                pc.rx_bytes += f.len() as u64;
                if f.offload.is_gso() {
                    pc.rx_super_frames += 1;
                    pc.rx_segments += f.offload.segments(f.data());
                }
            }
        }
        self.ingress.process(&cx, &self.topo, batch, &mut self.parsed, &mut verdicts);
        let clamp = self.topo.ports[usize::from(in_port)].mss_clamp;
        if !clamp.is_none() {
            self.clamp_ingress(&cx, clamp, batch, &verdicts);
        }
        self.bridge.process(&cx, &self.topo, batch, &self.parsed, &mut verdicts);
        if let Some(vtep) = self.topo.vtep.filter(|v| v.port == in_port) {
            self.mark_decap(vtep.rif, in_port, batch, &mut verdicts);
        }
        self.routes = [BatchLookup::default(); BATCH_SIZE];
        self.router.lookup_batch(batch, &self.parsed, &verdicts, &mut self.routes, &self.topo, self.bridge.fdbs());
        let mut out =
            Egress::new(&self.topo, self.bridge.fdbs(), &mut self.counters, tx, pool, &mut self.overlay, now, cx.trace);
        let (shard, owners, outbox, router, parsed, routes) =
            (&self.shard, &self.owners, &mut self.outbox, &mut self.router, &self.parsed, &self.routes);
        batch.drain_each(
            #[inline(always)]
            |i, mut frame| {
                match verdicts.get(i) {
                    Verdict::Output(p) => out.forward(in_port, p, frame),
                    Verdict::Flood(net) => {
                        if out.overlay.is_overlay(net) && out.overlay.arp_suppress(net, &mut frame) {
                            out.arp_suppressed(in_port, frame);
                        } else {
                            let sent = out.flood(net, frame, Some(in_port));
                            out.settle_flood(in_port, net, sent);
                        }
                    }
                    Verdict::ToRouter(rif) => {
                        // A connection found in this shard's table is this shard's (connections live on their
                        // owner only): the owner is computed for the others.
                        if shard.is_sharded() && !cx.handed && !router.holds_connection(&routes[i]) {
                            let owner = owners.owner(frame.data(), &parsed[i], shard.count);
                            if let Some(owner) = owner.filter(|&o| o != shard.index) {
                                outbox.handoffs.push(Handoff { owner, port: in_port, frame });
                                return;
                            }
                        }
                        out.counters.port_mut(in_port).routed += 1;
                        router.handle(now, rif, frame, &parsed[i], &routes[i], &mut out);
                    }
                    Verdict::Decap => out.decap(in_port, frame, &parsed[i]),
                    Verdict::FloodAndRoute(net, _)
                        if out.overlay.is_overlay(net) && out.overlay.arp_suppress(net, &mut frame) =>
                    {
                        out.arp_suppressed(in_port, frame);
                    }
                    Verdict::FloodAndRoute(net, rif) => {
                        if let Some(copy) = out.pool.clone_frame(&frame) {
                            router.handle_copy(now, rif, copy, &parsed[i], &mut out);
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
                    router.send_encapsulated(now, &mut out);
                }
            },
        );
        self.verdicts = verdicts;
        if self.shard.is_sharded() {
            let updates = &mut self.outbox.updates;
            self.bridge.take_announced(|net, mac, port| updates.push(Update::Mac { net, mac, port, seen: now }));
            self.router.take_notes(|note| updates.push(Update::Neigh(note)));
        }
    }

    /// The ingress port's MSS clamp over the frames ingress accepted (a port with `mss_clamp` only).
    #[cold]
    fn clamp_ingress<T: Tracer>(&mut self, cx: &Context<T>, limit: MssLimit, batch: &mut Batch, verdicts: &Verdicts) {
        let mut lowered = 0;
        for (i, f) in batch.iter_mut().enumerate() {
            if matches!(verdicts.get(i), Verdict::Drop(_)) {
                continue;
            }
            if let Clamped::Lowered { from, to } = mss_clamp::clamp(f, limit) {
                cx.note("mss-clamp", || format!("SYN's MSS {from} lowered to {to}"));
                lowered += 1;
            }
        }
        self.counters.port_mut(cx.in_port).mss_clamped += lowered;
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
        let mut out =
            Egress::new(&self.topo, self.bridge.fdbs(), &mut self.counters, tx, pool, &mut self.overlay, now, Untraced);
        self.router.tick(now, &mut out);
        if out.overlay.has_pending() {
            self.router.send_encapsulated(now, &mut out);
        }
        if self.shard.is_sharded() {
            let updates = &mut self.outbox.updates;
            self.router.take_notes(|note| updates.push(Update::Neigh(note)));
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

    /// The bridge and the router, mutable: for restoring learned state from a snapshot (`crate::snapshot`) into
    /// a switch that is not forwarding yet.
    pub fn tables_mut(&mut self) -> (&mut Bridge, &mut Router) {
        (&mut self.bridge, &mut self.router)
    }

    /// The connection-tracking table.
    pub fn conntrack(&self) -> &Conntrack {
        self.router.nat().conntrack()
    }

    /// The tracked connections live at `now`, sorted by original tuple.
    pub fn connections(&self, now: Nanos) -> Vec<ConnectionInfo> {
        self.router.nat().connections(now)
    }

    /// The live connections in one chunk of the table's slots (see [`crate::nat::Nat::connections_chunk`]).
    pub fn connections_chunk(&self, now: Nanos, from: usize, len: usize) -> (Vec<ConnectionInfo>, Option<usize>) {
        self.router.nat().connections_chunk(now, from, len)
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

/// A configuration's topology and empty router (its FIB), built ahead of [`Switch::reconfigure_prebuilt`].
#[derive(Debug)]
pub struct Prebuilt {
    topo: Topology,
    router: Router,
}

impl Prebuilt {
    /// The topology and router for `cfg` (validated).
    pub fn new(cfg: &Config) -> Prebuilt {
        let topo = Topology::from_config(cfg);
        let router = Router::new(&topo);
        Prebuilt { topo, router }
    }

    /// The numbered topology.
    pub fn topology(&self) -> &Topology {
        &self.topo
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
