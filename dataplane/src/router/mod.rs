//! The IPv4 router stage: the switch's own addresses (ARP, ping), longest-prefix routing between router
//! interfaces, neighbour resolution, TTL and checksum rewriting, and ICMP errors.
//!
//! A **router interface** ([`RifInfo`]) is either a network's gateway (frames reach it through the bridge when
//! addressed to the gateway MAC, and leave through the bridge to the neighbour's port) or a routed port (every
//! frame addressed to the port's MAC or broadcast). The bridge hands frames to this stage with
//! `Verdict::ToRouter(rif)`, and a copy of each broadcast ARP with `Verdict::FloodAndRoute`.
//!
//! What it does with a frame received on interface `rif`:
//! - **ARP** (RFC 826): validated (Ethernet/IPv4, lengths, sender inside the interface's subnet, not our own
//!   address, not a group MAC). A request for our address on that interface is answered, and its sender
//!   learned; a reply to us is learned and releases the frames waiting for it; anything else only refreshes an
//!   entry that already exists (gratuitous ARP), so no host can plant entries for other networks or make us
//!   answer for addresses that are not ours (no proxy ARP).
//! - **IPv4 to one of our addresses**: first the NAT stage ([`crate::nat`], when the configuration has
//!   masquerade networks or publish rules) may claim it — a reply of a masqueraded connection, a published port,
//!   a hairpin connection, an ICMP error about a tracked connection — and translate its destination; it is then
//!   forwarded like the next case, with a route lookup for the new destination. Otherwise ICMP echo requests are
//!   answered (rate limited); anything else is dropped and counted (`local-unsupported`).
//! - **IPv4 to elsewhere**: header checksum verified; packets with IP options are dropped (`ip-options`:
//!   source routing and record-route are not supported); broadcast, multicast, loopback and zero addresses are
//!   not routed (`not-routable`); TTL <= 1 → ICMP Time Exceeded; no route → ICMP Net Unreachable; a route
//!   the isolation policy refuses ([`crate::isolation`]: into or out of an `internal` network, between an
//!   isolated (masquerade) network and another network, from a routed port straight into an isolated network,
//!   unless the NAT stage translated or tracks the packet) → dropped (`internal-network`,
//!   `network-isolation`, `not-published`); a packet larger
//!   than the egress MTU → ICMP Fragmentation Needed if DF is set, else dropped as `fragmentation-unsupported`
//!   (the switch does not fragment: every host on the paths it serves does path-MTU discovery, and fragmenting
//!   in the forwarding path would cost buffers and complexity for traffic nobody sends); then the NAT
//!   translation is written (decided above for packets to our addresses; otherwise the NAT stage's outbound
//!   step looks up packets from masquerade/publish networks and creates masqueraded connections), TTL is
//!   decremented, the header checksum updated incrementally (RFC 1624), the MACs rewritten and the frame sent
//!   to the next hop's MAC, resolving it with ARP first if needed (see [`crate::neigh`]). Every check runs on
//!   the packet as it arrived, so the router's own ICMP errors quote the untranslated packet — except Host
//!   Unreachable for a packet that waited for ARP, which was already translated.
//! - ICMP errors (RFC 1812 §4.3.2.7) are never sent about ICMP errors, non-first fragments, or packets from or
//!   to broadcast/multicast/zero addresses, and are rate limited by kind, each kind with its own token bucket
//!   ([`ErrorClass`]: Time Exceeded 100/s burst 50, other Unreachables 100/s burst 50, Fragmentation Needed
//!   1000/s burst 200; echo replies have their own, 1000/s), so one host's TTL=1 flood cannot starve
//!   path-MTU discovery. The buckets are switch-wide, not per source. An error quotes the IP header and the first 8 bytes of the payload,
//!   comes from the address of the interface the packet arrived on, and goes back out of the port it came from
//!   to the MAC it came from (the previous hop).
//!
//! Time is passed in; housekeeping ([`Router::tick`]) retries ARP and fails unresolved neighbours.
//!
//! Files: this one holds the stage, its route lookup and the per-frame dispatch; `forward.rs` the forwarding
//! path (checks, NAT, TTL, neighbour, egress), `arp.rs` ARP (answering, learning, asking), `icmp.rs` the
//! switch's own ICMP (echo replies, errors). Every header is read and written through [`crate::wire`] views at
//! the offsets ingress found ([`Parsed`]).
//!
//! Code layout: [`Router::handle`] and what it calls for a forwarded packet (checks, NAT, neighbour, egress) are
//! `#[inline(always)]`, so the pipeline's loop is one body with no call per frame; ARP, the switch's own ICMP,
//! ICMP errors and the inbound-NAT forwarding path are `#[inline(never)]`, so that body stays small
//! (`bench/README.md` § NAT has the measurements behind both).
//! Threads: owned by the worker running the pipeline.

mod arp;
mod carry;
pub use carry::CarriedRouter;
mod forward;
mod icmp;
#[cfg(test)]
mod tests;

use crate::batch::{Batch, BATCH_SIZE};
use crate::buffer::{Frame, Nanos, NANOS_PER_SEC};
use crate::counters::DropReason;
use crate::fdb::Fdb;
use crate::ids::table_id;
use crate::nat::{self, Inbound, Nat, NewConnection, Rewrite};
use crate::neigh::{NeighConfig, NeighEntry, NeighNote, NeighStats, NeighTable, RifId, TickWork};
use crate::packet::Parsed;
use crate::route::{Fib, Ipv4Net, NextHopId};
use crate::stage::{Egress, Tracer, Verdict, Verdicts};
use crate::topology::{Attach, Topology};
use crate::wire::{ethernet, ethertype, icmpv4, ipv4, MacAddr};
use serde::Serialize;
use std::net::Ipv4Addr;

// `lookup_batch` keeps batch positions in bytes.
const _: () = assert!(BATCH_SIZE <= 1 << u8::BITS);

/// Where a route leads: out of `rif`, to `via` or (for a connected route) to the destination itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct NextHop {
    /// Egress interface.
    pub rif: RifId,
    /// Gateway; `None` for a connected route.
    pub via: Option<Ipv4Addr>,
}

/// A route as listed by [`Router::routes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteEntry {
    /// The prefix.
    pub prefix: Ipv4Net,
    /// Where it leads.
    pub next_hop: NextHop,
    /// `connected` or `static`.
    pub origin: &'static str,
}

/// Router outcomes that are not drops of a forwarded frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RouterStats {
    /// Packets routed and sent to their next hop (after resolution, for held ones), encapsulated overlay frames
    /// sent to their underlay next hop included.
    pub forwarded: u64,
    /// ARP requests for our addresses answered.
    pub arp_replies: u64,
    /// ARP requests sent.
    pub arp_requests: u64,
    /// ARP packets not for us (flood copies) ignored.
    pub arp_ignored: u64,
    /// Echo replies sent.
    pub echo_replies: u64,
    /// ICMP errors sent.
    pub icmp_errors: u64,
    /// ICMP messages not sent because of the rate limit.
    pub icmp_rate_limited: u64,
}

/// A token bucket on the caller's clock.
#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    rate_per_sec: u64,
    burst: u64,
    /// Tokens scaled by 1e9 so refill needs no division per call.
    tokens: u128,
    last: Nanos,
}

impl TokenBucket {
    fn new(rate_per_sec: u64, burst: u64) -> Self {
        TokenBucket { rate_per_sec, burst, tokens: u128::from(burst) * u128::from(NANOS_PER_SEC), last: 0 }
    }

    fn take(&mut self, now: Nanos) -> bool {
        let elapsed = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        let cap = u128::from(self.burst) * u128::from(NANOS_PER_SEC);
        self.tokens = (self.tokens + u128::from(elapsed) * u128::from(self.rate_per_sec)).min(cap);
        if self.tokens >= u128::from(NANOS_PER_SEC) {
            self.tokens -= u128::from(NANOS_PER_SEC);
            true
        } else {
            false
        }
    }
}

/// Which rate limit an ICMP error the router sends counts against: one bucket each, so no kind of error
/// starves another (a host sending TTL=1 traffic must not silence path-MTU discovery for everyone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// Time Exceeded (100/s, burst 50).
    TimeExceeded = 0,
    /// Destination Unreachable other than Fragmentation Needed (100/s, burst 50).
    Unreachable = 1,
    /// Fragmentation Needed (1000/s, burst 200: Linux does not rate-limit it at all; bounded here so a flood of
    /// oversized packets cannot turn the switch into an amplifier).
    FragNeeded = 2,
}

impl ErrorClass {
    fn of(kind: u8, code: u8) -> ErrorClass {
        match (kind, code) {
            (icmpv4::msg_type::DEST_UNREACHABLE, icmpv4::unreachable::FRAG_NEEDED) => ErrorClass::FragNeeded,
            (icmpv4::msg_type::DEST_UNREACHABLE, _) => ErrorClass::Unreachable,
            _ => ErrorClass::TimeExceeded,
        }
    }
}

/// The router stage. See the module documentation.
#[derive(Debug)]
pub struct Router {
    fib: Fib,
    /// The distinct next hops, by the [`NextHopId`] the FIB's leaves hold: one per (interface, gateway), not
    /// one per route, so the table stays a few cache lines however many routes share a gateway (a per-route
    /// table of a million routes was a second cache miss per packet after the FIB's, and not batched).
    next_hops: Vec<NextHop>,
    neigh: NeighTable,
    /// ICMP error buckets by [`ErrorClass`].
    icmp_errors: [TokenBucket; 3],
    echo: TokenBucket,
    stats: RouterStats,
    released: Vec<Frame>,
    /// The last resolved neighbour, valid within one batch (cleared by [`Router::lookup_batch`] and by ARP).
    last_neigh: Option<(RifId, Ipv4Addr, MacAddr)>,
    /// Connection tracking and NAT.
    nat: Nat,
    /// Every router interface's address, by [`RifId`] (the topology's, packed for the per-packet "is this for
    /// us" test; a router is rebuilt whenever an interface changes, see `Topology::same_router_as`).
    local_addrs: LocalAddrs,
    /// Note neighbour changes for the other workers (several workers only, see `crate::pipeline::shard`).
    announcing: bool,
    /// Neighbour changes since the last [`Router::take_notes`].
    notes: Vec<NeighNote>,
}

/// The translation [`Nat::inbound`] decided for a packet to one of our addresses, applied by
/// [`Router::forward`] after the forwarding checks.
#[derive(Debug, Clone, Copy)]
enum Decided {
    /// A tracked connection's packet: write this.
    Rewrite(Rewrite),
    /// A new connection: open it, then write its first packet's rewrite.
    Open(NewConnection),
    /// Already translated in place (an ICMP error about a tracked connection).
    Translated,
}

/// What [`Router::lookup_batch`] found for one frame of the batch: its route, and with NAT on its flow, hashed
/// for the connection table (valid while the frame is as it arrived: a frame the router rewrote before
/// forwarding is routed by its new destination instead, without a flow).
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchLookup {
    /// The next hop for the frame's destination, if a route matches.
    pub next_hop: Option<NextHopId>,
    /// The frame's flow ([`nat::Nat::prefetch`]).
    pub flow: Option<nat::Flow>,
}

/// Where a forwarded packet's route comes from.
#[derive(Debug, Clone, Copy)]
enum Route<'a> {
    /// What [`Router::lookup_batch`] found for it.
    Batch(&'a BatchLookup),
    /// Look up this (translated) destination.
    Lookup(Ipv4Addr),
}

/// Neighbour entries from which [`Router::prefetch_translated`] runs. The chain it follows (translated
/// destination → route → neighbour → MAC-table line) reads tables that grow with the hosts behind the switch,
/// not with its connections: with a few thousand hosts those lines stay in cache and the pass is pure cost
/// (about 190 instructions per reply frame; un-NATing replies to 64 containers, about 6 % lower rate at 10k
/// connections and no measurable difference either way at 1M: `steps nat N 200000 udp reply`, with and without
/// the pass, same minutes).
const CHAIN_PREFETCH_NEIGHBOURS: usize = 4096;

/// The router interfaces' addresses, by [`RifId`], with a one-word filter in front: most routed packets are for
/// none of them, and the filter says so without scanning (the scan was about 17 instructions per routed frame
/// with three interfaces, callgrind on the NAT bench).
#[derive(Debug, Clone)]
struct LocalAddrs {
    addrs: Vec<Ipv4Addr>,
    /// Bit [`LocalAddrs::bit`] of every address set.
    filter: u64,
}

impl LocalAddrs {
    fn new(addrs: Vec<Ipv4Addr>) -> Self {
        let filter = addrs.iter().fold(0, |f, &a| f | LocalAddrs::bit(a));
        LocalAddrs { addrs, filter }
    }

    /// One of 64 bits for `a` (a multiplicative hash's top six bits).
    #[inline(always)]
    fn bit(a: Ipv4Addr) -> u64 {
        1 << (u32::from(a).wrapping_mul(0x9e37_79b1) >> 26)
    }

    /// The interface whose address `a` is.
    #[inline(always)]
    fn position(&self, a: Ipv4Addr) -> Option<usize> {
        if self.filter & LocalAddrs::bit(a) == 0 {
            return None;
        }
        self.addrs.iter().position(|&x| x == a)
    }

    #[inline(always)]
    fn contains(&self, a: &Ipv4Addr) -> bool {
        self.position(*a).is_some()
    }

    fn len(&self) -> usize {
        self.addrs.len()
    }
}

/// Addresses never routed (as source or destination).
#[inline(always)]
fn martian(a: Ipv4Addr) -> bool {
    // Unspecified, broadcast, multicast (224/4) or loopback (127/8), without a branch per test (`|`, not `||`).
    let a = u32::from(a);
    (a == 0) | (a == u32::MAX) | (a >> 28 == 0xe) | (a >> 24 == 127)
}

/// Rewrites a frame's Ethernet addresses (a frame shorter than an Ethernet header is left alone: ingress let
/// none through).
#[inline(always)]
fn set_macs(d: &mut [u8], dst: MacAddr, src: MacAddr) {
    if let Some(mut eth) = ethernet::HeaderMut::at_mut(d, 0) {
        eth.set_dst_addr(dst);
        eth.set_src_addr(src);
    }
}

impl Router {
    /// A router for `topo`: connected routes for every interface, then the static routes.
    pub fn new(topo: &Topology) -> Self {
        let mut r = Router {
            fib: Fib::new(),
            next_hops: Vec::new(),
            neigh: NeighTable::new(NeighConfig::default()),
            icmp_errors: [TokenBucket::new(100, 50), TokenBucket::new(100, 50), TokenBucket::new(1000, 200)],
            echo: TokenBucket::new(1000, 100),
            stats: RouterStats::default(),
            released: Vec::with_capacity(64),
            last_neigh: None,
            nat: Nat::new(topo),
            local_addrs: LocalAddrs::new(topo.rifs.iter().map(|r| r.addr).collect()),
            announcing: false,
            notes: Vec::new(),
        };
        let mut ids = rustc_hash::FxHashMap::default();
        for (i, rif) in topo.rifs.iter().enumerate() {
            r.add_route(&mut ids, rif.subnet.trunc(), NextHop { rif: table_id(i), via: None });
        }
        for s in &topo.routes {
            r.add_route(&mut ids, s.prefix.trunc(), NextHop { rif: s.rif, via: Some(s.via) });
        }
        r
    }

    /// Where a route to `nh` came from: connected routes lead to the destination itself, static ones (the only
    /// other kind) through a gateway.
    fn origin(nh: NextHop) -> &'static str {
        if nh.via.is_none() {
            "connected"
        } else {
            "static"
        }
    }

    /// A trace note for the FIB's answer about `dst`.
    fn describe_route(&self, dst: Ipv4Addr, found: Option<NextHopId>, topo: &Topology) -> String {
        let Some(id) = found else { return format!("{dst}: no route") };
        let nh = self.next_hops[id.index()];
        let via = nh.via.map_or("the destination itself".to_string(), |v| v.to_string());
        let out = topo.rifs.get(nh.rif as usize).map_or("?", |r| r.name.as_str());
        let prefix = self.fib.lookup_route(dst).map_or("?".to_string(), |(p, _)| p.to_string());
        format!("{dst}: {prefix} ({}) via {via} out {out}", Router::origin(nh))
    }

    /// Replaces the connection table and NAT bindings (a trace's scratch copy takes the live switch's).
    pub fn set_nat(&mut self, nat: Nat) {
        self.nat = nat;
    }

    /// Installs `prefix` → `nh`, giving `nh` an id the first time it is seen (`ids`).
    fn add_route(&mut self, ids: &mut rustc_hash::FxHashMap<NextHop, NextHopId>, prefix: Ipv4Net, nh: NextHop) {
        let next_hops = &mut self.next_hops;
        let id = *ids.entry(nh).or_insert_with(|| {
            let id = u32::try_from(next_hops.len()).ok().and_then(NextHopId::new).expect("fewer than 2^24 next hops");
            next_hops.push(nh);
            id
        });
        self.fib.insert(prefix, id);
    }

    /// The route lookup stage: finds the next hop of every IPv4 frame in `batch` headed for the router, in one
    /// batch ([`Fib::lookup_many`]) before any of them is handled. The lookups are independent, so their cache
    /// misses overlap (a FIB of 10k+ routes does not fit in L1); done one frame at a time inside `handle`, each
    /// miss stalls alone. This is VPP's `ip4-lookup` node.
    ///
    /// With NAT on, the same pass starts loading the connection-tracking lines of every frame's flow (index
    /// line first, then, after the FIB lookups, the entry it points to, or for what looks like a new
    /// masqueraded flow the index line its reply tuple will go to), so that the NAT stage's lookups and inserts
    /// in `handle` find them in cache: the misses of the whole batch overlap instead of stalling one by one.
    /// These are hints only (nothing is decided here; the flow's hash is kept for `handle`).
    ///
    /// Packets to one of our addresses that a tracked connection will translate (replies to masqueraded
    /// containers, published ports) then need a route, a neighbour and a MAC-table entry for their *new*
    /// destination, each lookup depending on the one before: a chain of misses per packet. A last pass follows
    /// that chain for the whole batch ([`Router::prefetch_translated`]) so that those lines too are loading
    /// together before the first packet is handled — once the neighbour table holds
    /// [`CHAIN_PREFETCH_NEIGHBOURS`] entries: with fewer hosts the chain's lines are in cache anyway.
    #[inline]
    pub fn lookup_batch(
        &mut self,
        batch: &Batch,
        parsed: &[Parsed; BATCH_SIZE],
        verdicts: &Verdicts,
        routes: &mut [BatchLookup; BATCH_SIZE],
        topo: &Topology,
        fdbs: &[Fdb],
    ) {
        self.last_neigh = None;
        let mut which = [0u8; BATCH_SIZE];
        let mut rifs = [0 as RifId; BATCH_SIZE];
        let mut dsts = [Ipv4Addr::UNSPECIFIED; BATCH_SIZE];
        let mut n = 0;
        for (i, frame) in batch.iter().enumerate() {
            let p = &parsed[i];
            let Verdict::ToRouter(rif) = verdicts.get(i) else { continue };
            if p.ethertype != ethertype::IPV4 {
                continue;
            }
            // Ingress checked that an IPv4 frame holds a whole header at `l3`.
            let d = frame.data();
            if let Some(ip) = ipv4::Header::at(d, p.l3 as usize) {
                // `i` indexes a batch (< BATCH_SIZE ≤ 256, asserted below the imports): cannot truncate.
                #[allow(clippy::cast_possible_truncation)]
                let slot = i as u8;
                which[n] = slot;
                rifs[n] = rif;
                dsts[n] = ip.dst_addr();
                self.nat.prefetch_into(d, p, &mut routes[i].flow);
                n += 1;
            }
        }
        let mut found = [None; BATCH_SIZE];
        self.fib.lookup_many(&dsts[..n], &mut found[..n]);
        for k in 0..n {
            let route = &mut routes[which[k] as usize];
            route.next_hop = found[k];
            if let Some(flow) = &mut route.flow {
                let out_rif = found[k].map(|id| self.next_hops[id.index()].rif);
                self.nat.prefetch_entry(flow, rifs[k], out_rif);
            }
        }
        if self.nat.enabled() && self.neigh.len() >= CHAIN_PREFETCH_NEIGHBOURS {
            self.prefetch_translated(&dsts[..n], &which[..n], routes, topo, fdbs);
        }
    }

    /// The batch's last pass (hints only): for each packet to one of our addresses whose connection entry is
    /// loading, the destination it will be translated to, then that destination's route, its neighbour entry,
    /// and the MAC-table line of the neighbour's address — each step for all packets before the next, so the
    /// misses of one step overlap.
    #[inline(never)]
    fn prefetch_translated(
        &self,
        dsts: &[Ipv4Addr],
        which: &[u8],
        routes: &[BatchLookup; BATCH_SIZE],
        topo: &Topology,
        fdbs: &[Fdb],
    ) {
        let mut to = [Ipv4Addr::UNSPECIFIED; BATCH_SIZE];
        let mut m = 0;
        for (k, dst) in dsts.iter().enumerate() {
            if !self.local_addrs.contains(dst) {
                continue;
            }
            if let Some(a) = routes[which[k] as usize].flow.as_ref().and_then(|f| self.nat.translated_dst(f)) {
                to[m] = a;
                m += 1;
            }
        }
        if m == 0 {
            return;
        }
        let mut found = [None; BATCH_SIZE];
        self.fib.lookup_many(&to[..m], &mut found[..m]);
        for (a, id) in to[..m].iter().zip(&found[..m]) {
            let Some(nh) = id.map(|id| self.next_hops[id.index()]) else { continue };
            let Some(mac) = self.neigh.peek(nh.rif, nh.via.unwrap_or(*a)) else { continue };
            if let Some(Attach::Network(net)) = topo.rifs.get(usize::from(nh.rif)).map(|r| r.attach) {
                if let Some(fdb) = fdbs.get(usize::from(net)) {
                    fdb.prefetch(fdb.hash(mac));
                }
            }
        }
    }

    /// True when this router's connection table holds the connection of the frame looked up as `route` (see
    /// [`Nat::holds`]): then this shard owns it.
    #[inline(always)]
    pub fn holds_connection(&self, route: &BatchLookup) -> bool {
        route.flow.as_ref().is_some_and(|f| self.nat.holds(f))
    }

    /// Handles one frame received on interface `rif` and addressed to it. `route` is what
    /// [`Router::lookup_batch`] found for the frame. Inlined into the pipeline's loop: this is the per-frame
    /// body of every routed packet.
    #[inline(always)]
    pub fn handle<T: Tracer>(
        &mut self,
        now: Nanos,
        rif: RifId,
        frame: Frame,
        parsed: &Parsed,
        route: &BatchLookup,
        out: &mut Egress<T>,
    ) {
        match parsed.ethertype {
            ethertype::ARP if parsed.vlan_tags == 0 => self.arp(now, rif, frame, parsed, false, out),
            ethertype::IPV4 if parsed.vlan_tags == 0 => self.ipv4(now, rif, frame, parsed, route, out),
            _ => out.drop(frame, DropReason::UnsupportedL3),
        }
    }

    /// Handles the router's copy of a frame flooded on `rif`'s network (a broadcast ARP): its fate is counted
    /// by the flood, so nothing here counts as its drop.
    #[inline(never)]
    pub fn handle_copy<T: Tracer>(
        &mut self,
        now: Nanos,
        rif: RifId,
        frame: Frame,
        parsed: &Parsed,
        out: &mut Egress<T>,
    ) {
        match parsed.ethertype {
            ethertype::ARP if parsed.vlan_tags == 0 => self.arp(now, rif, frame, parsed, true, out),
            _ => out.free(frame),
        }
    }

    #[inline(always)]
    fn ipv4<T: Tracer>(
        &mut self,
        now: Nanos,
        in_rif: RifId,
        mut frame: Frame,
        parsed: &Parsed,
        route: &BatchLookup,
        out: &mut Egress<T>,
    ) {
        let l3 = parsed.l3 as usize;
        let d = frame.data();
        // Ingress checked the header is whole; the usual option-less one is checked through a fixed-size view.
        let Some(ip) = ipv4::Header::at(d, l3) else { return out.drop(frame, DropReason::TruncatedIpHeader) };
        if ip.header_len() != ipv4::HEADER_LEN {
            let whole = ipv4::Packet::new_unchecked(&d[l3..]);
            let reason = if whole.verify_checksum() { DropReason::IpOptions } else { DropReason::BadIpChecksum };
            return out.drop(frame, reason);
        }
        if !ip.verify_checksum_fixed() {
            return out.drop(frame, DropReason::BadIpChecksum);
        }
        let dst = ip.dst_addr();
        let topo = out.topo();
        if let Some(local) = self.local_addrs.position(dst) {
            // `local_addrs` holds one address per router interface, so a position in it is a RifId (a topology has
            // fewer than 2^16 interfaces, see `ids::table_id`): cannot truncate, and costs no check per frame.
            #[allow(clippy::cast_possible_truncation)]
            let local_rif = local as RifId;
            out.note("router", || format!("{dst} is the address of interface {}", topo.rifs[local].name));
            // Another interface's address is reached across the router: not from or to an internal network.
            let (a, b) = (&topo.rifs[in_rif as usize], &topo.rifs[local]);
            if local != in_rif as usize && (a.internal || b.internal) {
                return out.drop(frame, DropReason::InternalNetwork);
            }
            if self.nat.enabled() {
                let flow = route.flow.as_ref();
                let seen = if out.tracing() { self.nat.prefetch(frame.data(), parsed) } else { None };
                let inbound = self.nat.inbound(now, in_rif, local_rif, frame.data_mut(), parsed, flow, topo);
                out.note("conntrack", || match inbound {
                    Inbound::Local => "not a tracked or published flow: for the switch itself".to_string(),
                    Inbound::Open(_) => format!("published port: opens {}", self.nat.describe_flow(seen.as_ref())),
                    Inbound::Translated => "ICMP error about a tracked connection: translated".to_string(),
                    Inbound::Drop(reason) => format!("refused: {}", reason.name()),
                    Inbound::Translate(_) => self.nat.explain(seen.as_ref(), now),
                });
                match inbound {
                    Inbound::Local => {}
                    Inbound::Translate(rw) => {
                        let route = Route::Lookup(rw.to.dst);
                        return self.forward_translated(
                            now,
                            in_rif,
                            frame,
                            parsed,
                            route,
                            Some(Decided::Rewrite(rw)),
                            out,
                        );
                    }
                    Inbound::Open(c) => {
                        let route = Route::Lookup(c.dst());
                        return self.forward_translated(now, in_rif, frame, parsed, route, Some(Decided::Open(c)), out);
                    }
                    Inbound::Translated => {
                        let Some(ip) = ipv4::Header::at(frame.data(), l3) else {
                            return out.drop(frame, DropReason::TruncatedIpHeader);
                        };
                        let dst = ip.dst_addr();
                        let route = Route::Lookup(dst);
                        return self.forward_translated(
                            now,
                            in_rif,
                            frame,
                            parsed,
                            route,
                            Some(Decided::Translated),
                            out,
                        );
                    }
                    Inbound::Drop(reason) => return out.drop(frame, reason),
                }
            }
            return self.local(now, local_rif, frame, parsed, out);
        }
        self.forward(now, in_rif, frame, parsed, Route::Batch(route), None, out)
    }

    /// Housekeeping at `now`: ARP retries, failed resolutions (Host Unreachable to their senders), ageing.
    pub fn tick<T: Tracer>(&mut self, now: Nanos, out: &mut Egress<T>) {
        let mut work = TickWork::default();
        self.neigh.tick(now, &mut work);
        for (rif, target) in work.requests {
            self.arp_request(rif, target, now, out);
        }
        for (_, f) in work.failed {
            self.unreachable_held(now, f, out);
        }
        for (rif, ip) in work.failed_entries {
            self.note_neigh(NeighNote::Failed { rif, ip });
        }
    }

    /// True while some neighbour is being resolved (replay keeps its clock running until this is false).
    pub fn has_pending(&self) -> bool {
        self.neigh.pending() > 0
    }

    /// The routing table, sorted by prefix.
    pub fn routes(&self) -> Vec<RouteEntry> {
        self.fib
            .iter()
            .map(|(prefix, id)| {
                let next_hop = self.next_hops[id.index()];
                RouteEntry { prefix, next_hop, origin: Router::origin(next_hop) }
            })
            .collect()
    }

    /// Distinct next hops the FIB's routes lead to (one per interface and gateway).
    pub fn next_hop_count(&self) -> usize {
        self.next_hops.len()
    }

    /// The resolved MAC of `ip` on `rif`, if any (what the batch's last pass prefetches the MAC-table line of).
    pub fn neighbour_mac(&self, rif: RifId, ip: Ipv4Addr) -> Option<MacAddr> {
        self.neigh.peek(rif, ip)
    }

    /// The neighbour table.
    pub fn neighbours(&self, now: Nanos) -> Vec<NeighEntry> {
        self.neigh.entries(now)
    }

    /// Frames held for unresolved neighbours (walks the table: for tests and the fuzz harness).
    pub fn held_frames(&self) -> usize {
        self.neigh.held()
    }

    /// Neighbour table counters.
    pub fn neigh_stats(&self) -> NeighStats {
        self.neigh.stats()
    }

    /// The router's counters.
    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// The NAT stage (connection table, NAT counters).
    pub fn nat(&self) -> &Nat {
        &self.nat
    }

    /// The NAT stage, for housekeeping (expiry) and flushes.
    pub fn nat_mut(&mut self) -> &mut Nat {
        &mut self.nat
    }

    /// Starts (or stops) noting neighbour changes for other workers' tables ([`NeighNote`]).
    pub fn set_announcing(&mut self, on: bool) {
        self.announcing = on;
        self.notes = Vec::with_capacity(if on { 4 * crate::batch::BATCH_SIZE } else { 0 });
    }

    /// Notes a neighbour change for the other workers (bounded: the caller drains after every batch).
    #[inline]
    pub(crate) fn note_neigh(&mut self, note: NeighNote) {
        if self.announcing && self.notes.len() < self.notes.capacity() {
            self.notes.push(note);
        }
    }

    /// The neighbour changes since the last call.
    pub fn take_notes(&mut self, mut f: impl FnMut(NeighNote)) {
        for n in self.notes.drain(..) {
            f(n);
        }
    }

    /// Applies another worker's neighbour change: a confirmation releases the frames held here for it (as if
    /// the answer had arrived here); a failure answers them Host Unreachable.
    pub fn apply_note<T: Tracer>(&mut self, now: Nanos, note: NeighNote, out: &mut Egress<T>) {
        let rif = match note {
            NeighNote::Confirmed { rif, .. }
            | NeighNote::Pending { rif, .. }
            | NeighNote::Probed { rif, .. }
            | NeighNote::Failed { rif, .. } => rif,
        };
        if usize::from(rif) >= self.local_addrs.len() {
            return;
        }
        self.last_neigh = None;
        let mut released = std::mem::take(&mut self.released);
        match note {
            NeighNote::Confirmed { rif, ip, mac, create } => {
                self.neigh.confirm(rif, ip, mac, now, create, &mut released);
                self.neigh.take_evicted(|f| out.drop(f, DropReason::NeighEvicted));
                for mut f in released.drain(..) {
                    f.ts = now;
                    self.send_to_mac(rif, mac, f, out);
                }
            }
            NeighNote::Pending { rif, ip } => {
                self.neigh.pending_remote(rif, ip, now);
                self.neigh.take_evicted(|f| out.drop(f, DropReason::NeighEvicted));
            }
            NeighNote::Probed { rif, ip } => self.neigh.probed_remote(rif, ip, now),
            NeighNote::Failed { rif, ip } => {
                self.neigh.fail_remote(rif, ip, now, &mut released);
                for f in released.drain(..) {
                    self.unreachable_held(now, f, out);
                }
            }
        }
        self.released = released;
    }

    /// A held frame whose neighbour failed: Host Unreachable to its sender, and the frame dropped.
    fn unreachable_held<T: Tracer>(&mut self, now: Nanos, mut f: Frame, out: &mut Egress<T>) {
        // The queued frame was already rewritten for forwarding (TTL - 1); ICMP quotes it as it is.
        let parsed = crate::packet::parse(f.data()).unwrap_or_default();
        let Some(in_rif) = out.rif_of_port(f.port) else {
            // The port it came in on has no router interface any more (a reconfiguration moved it to a network
            // without a gateway while the frame waited): no interface to answer from, and the router must not
            // send into that network. Dropped and counted only. (It used to answer from the egress interface,
            // its MAC into a gateway-less network: found by the `reconfigure` fuzz target.)
            return out.drop(f, DropReason::HostUnreachable);
        };
        f.ts = now;
        self.icmp_error(
            now,
            in_rif,
            &f,
            &parsed,
            icmpv4::msg_type::DEST_UNREACHABLE,
            icmpv4::unreachable::HOST,
            0,
            out,
        );
        out.drop(f, DropReason::HostUnreachable);
    }

    /// Records a resolved neighbour carried over from a snapshot (`crate::snapshot`) as confirmed at `now`.
    pub fn restore_neighbour(&mut self, rif: RifId, ip: Ipv4Addr, mac: MacAddr, now: Nanos) {
        let mut released = Vec::new();
        self.neigh.confirm(rif, ip, mac, now, true, &mut released);
        // A new table holds no frames; nothing can have been released.
        debug_assert!(released.is_empty());
    }
}
