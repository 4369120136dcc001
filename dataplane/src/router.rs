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
//!   between an `internal` network and any other interface → dropped (`internal-network`); a packet larger
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
//!   to broadcast/multicast/zero addresses, and are rate limited (a token bucket, default 100/s, burst 50;
//!   echo replies have their own, 1000/s). An error quotes the IP header and the first 8 bytes of the payload,
//!   comes from the address of the interface the packet arrived on, and goes back out of the port it came from
//!   to the MAC it came from (the previous hop).
//!
//! Time is passed in; housekeeping ([`Router::tick`]) retries ARP and fails unresolved neighbours.
//!
//! Code layout: [`Router::handle`] and what it calls for a forwarded packet (checks, NAT, neighbour, egress) are
//! `#[inline(always)]`, so the pipeline's loop is one body with no call per frame; ARP, the switch's own ICMP,
//! ICMP errors and the inbound-NAT forwarding path are `#[inline(never)]`, so that body stays small
//! (`bench/README.md` § NAT has the measurements behind both).
//! Threads: owned by the worker running the pipeline.

use crate::batch::{Batch, BATCH_SIZE};
use crate::buffer::{Frame, Nanos, NANOS_PER_SEC};
use crate::checksum;
use crate::counters::DropReason;
use crate::nat::{self, Inbound, Nat, NewConnection, Rewrite};
use crate::neigh::{Held, Lookup, NeighConfig, NeighEntry, NeighStats, NeighTable, RifId, TickWork};
use crate::packet::{ip_proto, Parsed};
use crate::pipeline::{Egress, Verdict, Verdicts};
use crate::route::{Fib, Ipv4Net, NextHopId};
use crate::topology::{RifInfo, Topology};
use crate::wire::{ethertype, MacAddr};
use serde::Serialize;
use std::net::Ipv4Addr;

/// Where a route leads: out of `rif`, to `via` or (for a connected route) to the destination itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// ICMP types and codes the router sends.
mod icmp {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const NET_UNREACHABLE: u8 = 0;
    pub const HOST_UNREACHABLE: u8 = 1;
    pub const FRAG_NEEDED: u8 = 4;
    /// Types that are errors (never answered with an error).
    pub fn is_error(t: u8) -> bool {
        matches!(t, 3 | 4 | 5 | 11 | 12)
    }
}

/// The router stage. See the module documentation.
#[derive(Debug)]
pub struct Router {
    fib: Fib,
    next_hops: Vec<NextHop>,
    origins: Vec<&'static str>,
    neigh: NeighTable,
    icmp_errors: TokenBucket,
    echo: TokenBucket,
    stats: RouterStats,
    released: Vec<Frame>,
    /// The last resolved neighbour, valid within one batch (cleared by [`Router::lookup_batch`] and by ARP).
    last_neigh: Option<(RifId, Ipv4Addr, MacAddr)>,
    /// Connection tracking and NAT.
    nat: Nat,
    /// Every router interface's address, by [`RifId`] (the topology's, packed for the per-packet "is this for
    /// us" scan; a router is rebuilt whenever an interface changes, see `Topology::same_router_as`).
    local_addrs: Vec<Ipv4Addr>,
}

/// The translation [`Nat::inbound`] decided for a packet to one of our addresses, applied by
/// [`Router::forward`] after the forwarding checks.
#[derive(Debug, Clone, Copy)]
enum Decided {
    /// A tracked connection's packet: write this.
    Rewrite(Rewrite),
    /// A new connection: open it, then write its first packet's rewrite.
    Open(NewConnection),
}

impl Decided {
    /// The packet's destination after translation.
    fn dst(&self) -> Ipv4Addr {
        match self {
            Decided::Rewrite(rw) => rw.to.dst,
            Decided::Open(c) => c.dst(),
        }
    }
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

/// Byte offsets inside an IPv4 header.
mod ip {
    pub const TOTAL_LEN: usize = 2;
    pub const FLAGS: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const HEADER_LEN: usize = 20;
    pub const DF: u8 = 0x40;
}

#[inline]
fn ipv4_at(d: &[u8], off: usize) -> Ipv4Addr {
    let a: [u8; 4] = d[off..off + 4].try_into().expect("a 4-byte range is 4 bytes");
    Ipv4Addr::from(a)
}

/// The IPv4 header (without options) at `l3`, which ingress checked is whole.
#[inline(always)]
fn header(d: &[u8], l3: usize) -> &[u8; ip::HEADER_LEN] {
    d[l3..l3 + ip::HEADER_LEN].try_into().expect("a 20-byte range is 20 bytes")
}

/// [`header`], writable.
#[inline(always)]
fn header_mut(d: &mut [u8], l3: usize) -> &mut [u8; ip::HEADER_LEN] {
    (&mut d[l3..l3 + ip::HEADER_LEN]).try_into().expect("a 20-byte range is 20 bytes")
}

/// Addresses never routed (as source or destination).
fn martian(a: Ipv4Addr) -> bool {
    a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback()
}

impl Router {
    /// A router for `topo`: connected routes for every interface, then the static routes.
    pub fn new(topo: &Topology) -> Self {
        let mut r = Router {
            fib: Fib::new(),
            next_hops: Vec::new(),
            origins: Vec::new(),
            neigh: NeighTable::new(NeighConfig::default()),
            icmp_errors: TokenBucket::new(100, 50),
            echo: TokenBucket::new(1000, 100),
            stats: RouterStats::default(),
            released: Vec::with_capacity(64),
            last_neigh: None,
            nat: Nat::new(topo),
            local_addrs: topo.rifs.iter().map(|r| r.addr).collect(),
        };
        for (i, rif) in topo.rifs.iter().enumerate() {
            r.add_route(rif.subnet.trunc(), NextHop { rif: i as RifId, via: None }, "connected");
        }
        for s in &topo.routes {
            r.add_route(s.prefix.trunc(), NextHop { rif: s.rif, via: Some(s.via) }, "static");
        }
        r
    }

    fn add_route(&mut self, prefix: Ipv4Net, nh: NextHop, origin: &'static str) {
        let id = NextHopId::new(self.next_hops.len() as u32).expect("fewer than 2^24 routes");
        self.next_hops.push(nh);
        self.origins.push(origin);
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
    #[inline]
    pub fn lookup_batch(
        &mut self,
        batch: &Batch,
        parsed: &[Parsed; BATCH_SIZE],
        verdicts: &Verdicts,
        routes: &mut [BatchLookup; BATCH_SIZE],
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
            if let Some(dst) = d.get(p.l3 as usize + ip::DST..p.l3 as usize + ip::DST + 4) {
                which[n] = i as u8;
                rifs[n] = rif;
                dsts[n] = ipv4_at(dst, 0);
                routes[i].flow = self.nat.prefetch(d, p);
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
    }

    /// Handles one frame received on interface `rif` and addressed to it. `route` is what
    /// [`Router::lookup_batch`] found for the frame. Inlined into the pipeline's loop: this is the per-frame
    /// body of every routed packet.
    #[inline(always)]
    pub fn handle(
        &mut self,
        now: Nanos,
        rif: RifId,
        frame: Frame,
        parsed: &Parsed,
        route: &BatchLookup,
        out: &mut Egress,
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
    pub fn handle_copy(&mut self, now: Nanos, rif: RifId, frame: Frame, parsed: &Parsed, out: &mut Egress) {
        match parsed.ethertype {
            ethertype::ARP if parsed.vlan_tags == 0 => self.arp(now, rif, frame, parsed, true, out),
            _ => out.free(frame),
        }
    }

    // Out of line (as are `local`, `icmp_error` and `forward_translated`): the per-frame body inlined into the
    // pipeline's loop stays small enough for the instruction cache; these paths are not per-packet work.
    #[inline(never)]
    fn arp(&mut self, now: Nanos, rif_id: RifId, mut frame: Frame, parsed: &Parsed, copy: bool, out: &mut Egress) {
        use smoltcp::wire::{ArpHardware, ArpOperation, ArpPacket, EthernetProtocol};
        let rif = &out.topo().rifs[rif_id as usize];
        let l3 = parsed.l3 as usize;
        // The router's copy of a flooded ARP is not the frame itself: a refusal counts its reason, but the
        // ingress port's frame was flooded, not dropped.
        let refuse = |out: &mut Egress, frame: Frame| {
            if copy {
                out.discard(frame, DropReason::BadArp)
            } else {
                out.drop(frame, DropReason::BadArp)
            }
        };
        let (op, sha, spa, tpa) = {
            let Ok(arp) = ArpPacket::new_checked(&frame.data()[l3..]) else {
                return refuse(out, frame);
            };
            if arp.hardware_type() != ArpHardware::Ethernet
                || arp.protocol_type() != EthernetProtocol::Ipv4
                || arp.hardware_len() != 6
                || arp.protocol_len() != 4
            {
                return refuse(out, frame);
            }
            let sha = MacAddr::from_slice(arp.source_hardware_addr()).unwrap_or(MacAddr::ZERO);
            let spa = ipv4_at(arp.source_protocol_addr(), 0);
            let tpa = ipv4_at(arp.target_protocol_addr(), 0);
            (arp.operation(), sha, spa, tpa)
        };
        let sender_ok = rif.subnet.contains(&spa) && spa != rif.addr && !sha.is_multicast() && !sha.is_zero();
        if !sender_ok {
            return refuse(out, frame);
        }
        let for_us = tpa == rif.addr;
        self.last_neigh = None;
        let mut released = std::mem::take(&mut self.released);
        self.neigh.confirm(rif_id, spa, sha, now, for_us, &mut released);
        match op {
            ArpOperation::Request if for_us => {
                // Turn the request into the reply in place.
                let our_mac = rif.mac;
                let d = frame.data_mut();
                d[0..6].copy_from_slice(&sha.0);
                d[6..12].copy_from_slice(&our_mac.0);
                let mut arp = ArpPacket::new_unchecked(&mut d[l3..]);
                arp.set_operation(ArpOperation::Reply);
                arp.set_target_hardware_addr(&sha.0);
                arp.set_target_protocol_addr(&spa.octets());
                arp.set_source_hardware_addr(&our_mac.0);
                arp.set_source_protocol_addr(&tpa.octets());
                self.stats.arp_replies += 1;
                let port = frame.port;
                out.to_port(port, frame);
            }
            _ => {
                if !for_us {
                    self.stats.arp_ignored += 1;
                }
                out.free(frame);
            }
        }
        for mut f in released.drain(..) {
            // A held frame leaves when the answer that released it arrives.
            f.ts = now;
            self.send_to_mac(rif_id, sha, f, out);
        }
        self.released = released;
    }

    #[inline(always)]
    fn ipv4(
        &mut self,
        now: Nanos,
        in_rif: RifId,
        mut frame: Frame,
        parsed: &Parsed,
        route: &BatchLookup,
        out: &mut Egress,
    ) {
        let l3 = parsed.l3 as usize;
        let d = frame.data();
        // Ingress checked the header is whole; the usual option-less one is checked as a fixed-size array.
        let h = header(d, l3);
        let ihl = (h[0] & 0x0f) as usize * 4;
        if ihl != ip::HEADER_LEN {
            let reason =
                if checksum::verify(&d[l3..l3 + ihl]) { DropReason::IpOptions } else { DropReason::BadIpChecksum };
            return out.drop(frame, reason);
        }
        if !checksum::verify_ipv4_header(h) {
            return out.drop(frame, DropReason::BadIpChecksum);
        }
        let dst = ipv4_at(h, ip::DST);
        let topo = out.topo();
        if let Some(local) = self.local_addrs.iter().position(|&a| a == dst) {
            // Another interface's address is reached across the router: not from or to an internal network.
            let (a, b) = (&topo.rifs[in_rif as usize], &topo.rifs[local]);
            if local != in_rif as usize && (a.internal || b.internal) {
                return out.drop(frame, DropReason::InternalNetwork);
            }
            if self.nat.enabled() {
                let flow = route.flow.as_ref();
                match self.nat.inbound(now, in_rif, local as RifId, frame.data_mut(), parsed, flow, topo) {
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
                        let dst = ipv4_at(frame.data(), l3 + ip::DST);
                        return self.forward_translated(now, in_rif, frame, parsed, Route::Lookup(dst), None, out);
                    }
                    Inbound::Drop(reason) => return out.drop(frame, reason),
                }
            }
            return self.local(now, local as RifId, frame, parsed, out);
        }
        self.forward(now, in_rif, frame, parsed, Route::Batch(route), None, out)
    }

    /// [`Router::forward`] for a packet the inbound NAT stage translated (a reply, a published port, an ICMP
    /// error): one out-of-line copy of the forwarding body for those three callers.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn forward_translated(
        &mut self,
        now: Nanos,
        in_rif: RifId,
        frame: Frame,
        parsed: &Parsed,
        route: Route,
        nat: Option<Decided>,
        out: &mut Egress,
    ) {
        self.forward(now, in_rif, frame, parsed, route, nat, out)
    }

    /// Forwards a packet that is not (or no longer, after `nat`) for one of the switch's addresses: TTL, route,
    /// `internal` and MTU checks on the packet as it arrived, then the NAT translation (`nat`, decided inbound,
    /// or the outbound stage's), TTL decrement and the next hop.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn forward(
        &mut self,
        now: Nanos,
        in_rif: RifId,
        mut frame: Frame,
        parsed: &Parsed,
        route: Route,
        nat: Option<Decided>,
        out: &mut Egress,
    ) {
        let topo = out.topo();
        let l3 = parsed.l3 as usize;
        // Ingress checked the whole header is there; the fields are read from a fixed-size view of it.
        let h = header(frame.data(), l3);
        let src = ipv4_at(h, ip::SRC);
        let dst = nat.map_or_else(|| ipv4_at(h, ip::DST), |n| n.dst());
        let in_subnet = &topo.rifs[in_rif as usize].subnet;
        if martian(dst) || martian(src) || dst == in_subnet.broadcast() {
            return out.drop(frame, DropReason::NotRoutable);
        }
        let ttl = h[ip::TTL];
        if ttl <= 1 {
            self.icmp_error(now, in_rif, &frame, parsed, icmp::TIME_EXCEEDED, 0, 0, out);
            return out.drop(frame, DropReason::TtlExpired);
        }
        let (route, flow) = match route {
            Route::Batch(r) => (r.next_hop, r.flow.as_ref()),
            Route::Lookup(addr) => (self.fib.lookup(addr), None),
        };
        let Some(nh_id) = route else {
            self.icmp_error(now, in_rif, &frame, parsed, icmp::DEST_UNREACHABLE, icmp::NET_UNREACHABLE, 0, out);
            return out.drop(frame, DropReason::NoRoute);
        };
        let nh = self.next_hops[nh_id.index()];
        let (in_info, eg_info) = (&topo.rifs[in_rif as usize], &topo.rifs[nh.rif as usize]);
        if nh.rif != in_rif && (in_info.internal || eg_info.internal) {
            return out.drop(frame, DropReason::InternalNetwork);
        }
        if dst == eg_info.subnet.broadcast() && nh.via.is_none() {
            return out.drop(frame, DropReason::NotRoutable);
        }
        let total = u16::from_be_bytes([h[ip::TOTAL_LEN], h[ip::TOTAL_LEN + 1]]);
        if total > eg_info.mtu {
            if h[ip::FLAGS] & ip::DF != 0 {
                let mtu = u32::from(eg_info.mtu);
                self.icmp_error(now, in_rif, &frame, parsed, icmp::DEST_UNREACHABLE, icmp::FRAG_NEEDED, mtu, out);
                return out.drop(frame, DropReason::NeedsFragmentation);
            }
            return out.drop(frame, DropReason::FragmentationUnsupported);
        }
        match nat {
            Some(Decided::Rewrite(rw)) => nat::apply(frame.data_mut(), parsed, &rw),
            Some(Decided::Open(c)) => match self.nat.open(now, c) {
                Ok(rw) => nat::apply(frame.data_mut(), parsed, &rw),
                Err(reason) => return out.drop(frame, reason),
            },
            None if self.nat.enabled() => {
                if let Err(reason) = self.nat.outbound(now, in_rif, nh.rif, frame.data_mut(), parsed, flow, topo) {
                    return out.drop(frame, reason);
                }
            }
            None => {}
        }
        // Decrement TTL with an incremental checksum update.
        let h = header_mut(frame.data_mut(), l3);
        let old = u16::from_be_bytes([h[ip::TTL], h[ip::PROTO]]);
        h[ip::TTL] = ttl - 1;
        let new = u16::from_be_bytes([h[ip::TTL], h[ip::PROTO]]);
        let c = u16::from_be_bytes([h[ip::CHECKSUM], h[ip::CHECKSUM + 1]]);
        h[ip::CHECKSUM..ip::CHECKSUM + 2].copy_from_slice(&checksum::update16(c, old, new).to_be_bytes());
        let target = nh.via.unwrap_or(dst);
        self.send_to_neighbour(now, nh.rif, target, frame, parsed, out);
    }

    /// Sends a routed frame to `target` on `rif`, resolving its MAC first if needed.
    #[inline(always)]
    fn send_to_neighbour(
        &mut self,
        now: Nanos,
        rif: RifId,
        target: Ipv4Addr,
        frame: Frame,
        parsed: &Parsed,
        out: &mut Egress,
    ) {
        // Consecutive packets mostly go to the same next hop: remember the last answer for this batch.
        if let Some((r, ip, mac)) = self.last_neigh {
            if r == rif && ip == target {
                return self.send_to_mac(rif, mac, frame, out);
            }
        }
        match self.neigh.lookup(rif, target, now) {
            Lookup::Mac(mac) => {
                self.last_neigh = Some((rif, target, mac));
                self.send_to_mac(rif, mac, frame, out)
            }
            Lookup::MacProbe(mac) => {
                self.send_to_mac(rif, mac, frame, out);
                self.arp_request(rif, target, now, out);
            }
            Lookup::Unresolved => {
                if let Some(mac) = out.overlay_endpoint(rif, target) {
                    // A remote endpoint of an overlay network: its MAC comes from the control plane (its own host's
                    // gateway would answer its ARP replies, not us).
                    self.last_neigh = Some((rif, target, mac));
                    return self.send_to_mac(rif, mac, frame, out);
                }
                self.hold_for_neighbour(now, rif, target, frame, parsed, out)
            }
        }
    }

    /// Queues `frame` until `target` on `rif` resolves (sending the ARP request when it is the first).
    #[inline(never)]
    fn hold_for_neighbour(
        &mut self,
        now: Nanos,
        rif: RifId,
        target: Ipv4Addr,
        frame: Frame,
        parsed: &Parsed,
        out: &mut Egress,
    ) {
        match self.neigh.hold(rif, target, frame, now) {
            Held::SendRequest => self.arp_request(rif, target, now, out),
            Held::Queued => {}
            Held::Overflow(old) => out.drop(old, DropReason::NeighQueueOverflow),
            Held::Unreachable(f) => {
                let in_rif = out.rif_of_port(f.port).unwrap_or(rif);
                self.icmp_error(now, in_rif, &f, parsed, icmp::DEST_UNREACHABLE, icmp::HOST_UNREACHABLE, 0, out);
                out.drop(f, DropReason::HostUnreachable);
            }
            Held::TableFull(f) => out.drop(f, DropReason::NeighTableFull),
        }
    }

    /// The route to `addr` as (egress interface, next hop): the gateway, or `addr` itself on a connected route.
    /// The overlay uses it for the underlay next hop of each remote VTEP.
    pub fn underlay_route(&self, addr: Ipv4Addr) -> Option<(RifId, Ipv4Addr)> {
        let nh = self.next_hops[self.fib.lookup(addr)?.index()];
        Some((nh.rif, nh.via.unwrap_or(addr)))
    }

    /// Sends the frames the overlay encapsulated to their underlay next hop, resolving its MAC with ARP like any
    /// routed packet's (held meanwhile). They are counted in `forwarded` when sent.
    #[inline(never)]
    pub fn send_encapsulated(&mut self, now: Nanos, out: &mut Egress) {
        let mut pending = out.take_pending();
        for p in pending.drain(..) {
            let len = p.frame.len() as u16;
            let outer = Parsed {
                ethertype: ethertype::IPV4,
                vlan_tags: 0,
                l3: 14,
                l4: 34,
                l3_end: len,
                ip_proto: ip_proto::UDP,
                later_fragment: false,
            };
            self.send_to_neighbour(now, p.rif, p.target, p.frame, &outer, out);
        }
        out.restore_pending(pending);
    }

    /// Rewrites the MACs and sends a routed frame out of `rif` to `mac`.
    #[inline(always)]
    fn send_to_mac(&mut self, rif: RifId, mac: MacAddr, mut frame: Frame, out: &mut Egress) {
        self.stats.forwarded += 1;
        let info = &out.topo().rifs[rif as usize];
        let d = frame.data_mut();
        d[0..6].copy_from_slice(&mac.0);
        d[6..12].copy_from_slice(&info.mac.0);
        let attach = info.attach;
        out.to_attach_mac(attach, mac, frame);
    }

    fn arp_request(&mut self, rif: RifId, target: Ipv4Addr, _now: Nanos, out: &mut Egress) {
        let info: &RifInfo = &out.topo().rifs[rif as usize];
        let (mac, addr, attach) = (info.mac, info.addr, info.attach);
        let Some(mut f) = out.alloc() else { return };
        let mut buf = [0u8; 60];
        write_arp(&mut buf, 1, mac, addr, MacAddr::BROADCAST, MacAddr::ZERO, target);
        // Cannot fail: 60 bytes fit any buffer.
        let _ = f.load(&buf);
        self.stats.arp_requests += 1;
        out.to_attach(attach, f);
    }

    #[inline(never)]
    fn local(&mut self, now: Nanos, rif: RifId, mut frame: Frame, parsed: &Parsed, out: &mut Egress) {
        let (l3, l4, end) = (parsed.l3 as usize, parsed.l4 as usize, parsed.l3_end as usize);
        let d = frame.data();
        let is_echo = parsed.ip_proto == ip_proto::ICMP && l4 != 0 && d[l4] == icmp::ECHO_REQUEST && d[l4 + 1] == 0;
        if !is_echo {
            return out.drop(frame, DropReason::LocalUnsupported);
        }
        if !checksum::verify(&d[l4..end]) {
            return out.drop(frame, DropReason::BadL4Checksum);
        }
        if martian(ipv4_at(d, l3 + ip::SRC)) {
            return out.drop(frame, DropReason::NotRoutable);
        }
        if !self.echo.take(now) {
            self.stats.icmp_rate_limited += 1;
            return out.free(frame);
        }
        let our_addr = out.topo().rifs[rif as usize].addr;
        let in_mac = out.rif_of_port(frame.port).map(|r| out.topo().rifs[r as usize].mac);
        let d = frame.data_mut();
        // Ethernet: back to the sender, from the interface it reached.
        let sender_mac = MacAddr::from_slice(&d[6..12]).unwrap_or(MacAddr::ZERO);
        let from_mac = in_mac.unwrap_or_else(|| MacAddr::from_slice(&d[0..6]).unwrap_or(MacAddr::ZERO));
        d[0..6].copy_from_slice(&sender_mac.0);
        d[6..12].copy_from_slice(&from_mac.0);
        // IPv4: swap addresses, fresh TTL, recompute the header checksum.
        let src = ipv4_at(d, l3 + ip::SRC);
        d[l3 + ip::SRC..l3 + ip::SRC + 4].copy_from_slice(&our_addr.octets());
        d[l3 + ip::DST..l3 + ip::DST + 4].copy_from_slice(&src.octets());
        d[l3 + ip::TTL] = 64;
        d[l3 + ip::CHECKSUM..l3 + ip::CHECKSUM + 2].fill(0);
        let c = checksum::checksum(&d[l3..l3 + ip::HEADER_LEN]);
        d[l3 + ip::CHECKSUM..l3 + ip::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        // ICMP: echo request → reply (type 8 → 0), incremental checksum.
        let old = u16::from_be_bytes([d[l4], d[l4 + 1]]);
        d[l4] = icmp::ECHO_REPLY;
        let c = u16::from_be_bytes([d[l4 + 2], d[l4 + 3]]);
        d[l4 + 2..l4 + 4].copy_from_slice(&checksum::update16(c, old, 0).to_be_bytes());
        self.stats.echo_replies += 1;
        let port = frame.port;
        out.to_port(port, frame);
    }

    /// Sends an ICMP error about `orig` (received on `in_rif`) back to its sender, if the rules allow.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn icmp_error(
        &mut self,
        now: Nanos,
        in_rif: RifId,
        orig: &Frame,
        parsed: &Parsed,
        kind: u8,
        code: u8,
        mtu: u32,
        out: &mut Egress,
    ) {
        let (l3, end) = (parsed.l3 as usize, parsed.l3_end as usize);
        let d = orig.data();
        if parsed.ethertype != ethertype::IPV4 || parsed.later_fragment || end < l3 + ip::HEADER_LEN {
            return;
        }
        let (src, dst) = (ipv4_at(d, l3 + ip::SRC), ipv4_at(d, l3 + ip::DST));
        // Nor about packets the switch sent itself (encapsulated frames whose VTEP next hop did not answer).
        if martian(src) || dst.is_broadcast() || dst.is_multicast() || self.local_addrs.contains(&src) {
            return;
        }
        if parsed.ip_proto == ip_proto::ICMP && parsed.l4 != 0 && icmp::is_error(d[parsed.l4 as usize]) {
            return;
        }
        let Some(sender_mac) = MacAddr::from_slice(&d[6..12]) else { return };
        if sender_mac.is_multicast() {
            return;
        }
        if !self.icmp_errors.take(now) {
            self.stats.icmp_rate_limited += 1;
            return;
        }
        let rif = &out.topo().rifs[in_rif as usize];
        let (our_mac, our_addr) = (rif.mac, rif.addr);
        let ihl = (d[l3] & 0x0f) as usize * 4;
        let quoted = &d[l3..(l3 + ihl + 8).min(end)];
        let mut buf = [0u8; 14 + 20 + 8 + 60 + 8];
        let ip_len = 20 + 8 + quoted.len();
        buf[0..6].copy_from_slice(&sender_mac.0);
        buf[6..12].copy_from_slice(&our_mac.0);
        buf[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        let h = &mut buf[14..34];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        h[ip::TTL] = 64;
        h[ip::PROTO] = ip_proto::ICMP;
        h[ip::SRC..ip::SRC + 4].copy_from_slice(&our_addr.octets());
        h[ip::DST..ip::DST + 4].copy_from_slice(&src.octets());
        let c = checksum::checksum(h);
        h[ip::CHECKSUM..ip::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        let m = &mut buf[34..34 + 8 + quoted.len()];
        m[0] = kind;
        m[1] = code;
        if kind == icmp::DEST_UNREACHABLE && code == icmp::FRAG_NEEDED {
            m[6..8].copy_from_slice(&(mtu as u16).to_be_bytes());
        }
        m[8..].copy_from_slice(quoted);
        let c = checksum::checksum(m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let len = (14 + ip_len).max(60);
        let Some(mut f) = out.alloc() else { return };
        // Cannot fail: at most 110 bytes.
        let _ = f.load(&buf[..len]);
        f.ts = orig.ts;
        f.port = orig.port;
        self.stats.icmp_errors += 1;
        out.to_port(orig.port, f);
    }

    /// Housekeeping at `now`: ARP retries, failed resolutions (Host Unreachable to their senders), ageing.
    pub fn tick(&mut self, now: Nanos, out: &mut Egress) {
        let mut work = TickWork::default();
        self.neigh.tick(now, &mut work);
        for (rif, target) in work.requests {
            self.arp_request(rif, target, now, out);
        }
        for (rif, mut f) in work.failed {
            // The queued frame was already rewritten for forwarding (TTL - 1); ICMP quotes it as it is.
            let parsed = crate::packet::parse(f.data()).unwrap_or_default();
            let in_rif = out.rif_of_port(f.port).unwrap_or(rif);
            f.ts = now;
            self.icmp_error(now, in_rif, &f, &parsed, icmp::DEST_UNREACHABLE, icmp::HOST_UNREACHABLE, 0, out);
            out.drop(f, DropReason::HostUnreachable);
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
            .map(|(prefix, id)| RouteEntry {
                prefix,
                next_hop: self.next_hops[id.index()],
                origin: self.origins[id.index()],
            })
            .collect()
    }

    /// The neighbour table.
    pub fn neighbours(&self, now: Nanos) -> Vec<NeighEntry> {
        self.neigh.entries(now)
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
}

/// Writes an Ethernet + ARP frame (60 bytes, padded) into `buf`.
fn write_arp(buf: &mut [u8; 60], op: u16, sha: MacAddr, spa: Ipv4Addr, eth_dst: MacAddr, tha: MacAddr, tpa: Ipv4Addr) {
    buf[0..6].copy_from_slice(&eth_dst.0);
    buf[6..12].copy_from_slice(&sha.0);
    buf[12..14].copy_from_slice(&ethertype::ARP.to_be_bytes());
    let a = &mut buf[14..42];
    a[0..2].copy_from_slice(&1u16.to_be_bytes());
    a[2..4].copy_from_slice(&ethertype::IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&op.to_be_bytes());
    a[8..14].copy_from_slice(&sha.0);
    a[14..18].copy_from_slice(&spa.octets());
    a[18..24].copy_from_slice(&tha.0);
    a[24..28].copy_from_slice(&tpa.octets());
}

#[cfg(test)]
mod tests {
    use crate::buffer::NANOS_PER_SEC;
    use crate::checksum;
    use crate::counters::DropReason;
    use crate::testbed::Testbed;
    use crate::wire::builder::{arp_reply, arp_request, Ipv4Opts, Ipv4Spec};
    use crate::wire::MacAddr;
    use etherparse::{Icmpv4Type, NetSlice, SlicedPacket, TransportSlice};
    use std::net::Ipv4Addr;

    const CONFIG: &str = r#"
        [[network]]
        name = "red"
        subnet = "10.0.1.0/24"
        gateway = "10.0.1.1"
        [[network]]
        name = "blue"
        subnet = "10.0.2.0/24"
        gateway = "10.0.2.1"
        [[network]]
        name = "vault"
        subnet = "10.0.3.0/24"
        gateway = "10.0.3.1"
        internal = true
        [[port]]
        name = "r1"
        kind = "mem"
        network = "red"
        [[port]]
        name = "b1"
        kind = "mem"
        network = "blue"
        [[port]]
        name = "v1"
        kind = "mem"
        network = "vault"
        [[port]]
        name = "up"
        kind = "mem"
        address = "203.0.113.2/24"
        mtu = 1400
        [[route]]
        prefix = "0.0.0.0/0"
        via = "203.0.113.1"
    "#;

    const RED_HOST: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 1, 10]), Ipv4Addr::new(10, 0, 1, 10));
    const BLUE_HOST: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 2, 20]), Ipv4Addr::new(10, 0, 2, 20));
    const VAULT_HOST: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 3, 30]), Ipv4Addr::new(10, 0, 3, 30));
    const UPSTREAM: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 9, 1]), Ipv4Addr::new(203, 0, 113, 1));
    const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

    fn testbed() -> Testbed {
        Testbed::new(CONFIG).expect("router test config is valid")
    }

    fn rif_mac(tb: &Testbed, name: &str) -> MacAddr {
        tb.switch().topology().rifs.iter().find(|r| r.name == name).expect("interface exists").mac
    }

    fn from_red(tb: &Testbed, dst: Ipv4Addr, opts: Ipv4Opts) -> Ipv4Spec {
        Ipv4Spec::new(RED_HOST.0, rif_mac(tb, "network:red"), RED_HOST.1, dst).with_opts(opts)
    }

    fn ip_of(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, u8) {
        let p = SlicedPacket::from_ethernet(frame).expect("switch emits well-formed frames");
        match p.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header();
                assert!(checksum::verify(h.slice()), "IPv4 header checksum must be valid");
                (h.source_addr(), h.destination_addr(), h.ttl())
            }
            other => panic!("expected IPv4, got {other:?}"),
        }
    }

    fn icmp_of(frame: &[u8]) -> Icmpv4Type {
        match SlicedPacket::from_ethernet(frame).unwrap().transport {
            Some(TransportSlice::Icmpv4(i)) => i.icmp_type(),
            other => panic!("expected ICMP, got {other:?}"),
        }
    }

    #[test]
    fn answers_arp_for_the_gateway_and_learns_the_sender() {
        let mut tb = testbed();
        tb.send("r1", &arp_request(RED_HOST.0, RED_HOST.1, Ipv4Addr::new(10, 0, 1, 1)));
        let out = tb.take("r1");
        assert_eq!(out.len(), 1, "one ARP reply");
        let gw = rif_mac(&tb, "network:red");
        assert_eq!(&out[0][0..6], &RED_HOST.0 .0);
        assert_eq!(&out[0][6..12], &gw.0);
        assert_eq!(out[0][21], 2, "ARP op = reply");
        assert_eq!(&out[0][22..28], &gw.0, "sender hardware address is the gateway MAC");
        let neigh = tb.switch().router().neighbours(0);
        assert_eq!(neigh.len(), 1);
        assert_eq!(neigh[0].mac, Some(RED_HOST.0));
    }

    #[test]
    fn ignores_arp_for_addresses_that_are_not_ours() {
        let mut tb = testbed();
        tb.send("r1", &arp_request(RED_HOST.0, RED_HOST.1, Ipv4Addr::new(10, 0, 1, 77)));
        assert!(tb.take("r1").is_empty(), "no proxy ARP");
        assert!(tb.switch().router().neighbours(0).is_empty(), "a request not for us creates no entry");
        // ARP claiming an address of another network is refused.
        tb.send("r1", &arp_request(RED_HOST.0, Ipv4Addr::new(10, 0, 2, 20), Ipv4Addr::new(10, 0, 1, 1)));
        assert!(tb.take("r1").is_empty());
        assert_eq!(tb.switch().counters().drops(DropReason::BadArp), 1);
    }

    #[test]
    fn a_refused_arp_broadcast_counts_its_reason_but_not_as_a_dropped_frame() {
        let mut tb = testbed();
        // Broadcast, so the bridge floods it and the router gets a copy; the sender is outside red's subnet.
        tb.send("r1", &arp_request(RED_HOST.0, Ipv4Addr::new(10, 0, 2, 20), Ipv4Addr::new(10, 0, 1, 1)));
        let c = tb.switch().counters();
        assert_eq!(c.drops(DropReason::BadArp), 1);
        let r1 = c.port(tb.port("r1"));
        assert_eq!((r1.rx_packets, r1.flooded, r1.dropped), (1, 1, 0), "the frame ends in exactly one place");
    }

    #[test]
    fn internal_network_cannot_reach_other_interfaces_addresses() {
        let mut tb = testbed();
        let vault_gw = rif_mac(&tb, "network:vault");
        let ping = Ipv4Spec::new(VAULT_HOST.0, vault_gw, VAULT_HOST.1, Ipv4Addr::new(10, 0, 1, 1));
        tb.send("v1", &ping.icmp_echo_request(1, 1, 8));
        tb.send("r1", &from_red(&tb, Ipv4Addr::new(10, 0, 3, 1), Ipv4Opts::default()).icmp_echo_request(1, 1, 8));
        assert!(tb.take_all().is_empty());
        assert_eq!(tb.switch().counters().drops(DropReason::InternalNetwork), 2);
    }

    #[test]
    fn answers_ping_to_the_gateway() {
        let mut tb = testbed();
        tb.send("r1", &from_red(&tb, Ipv4Addr::new(10, 0, 1, 1), Ipv4Opts::default()).icmp_echo_request(7, 1, 32));
        let out = tb.take("r1");
        assert_eq!(out.len(), 1);
        assert_eq!(ip_of(&out[0]), (Ipv4Addr::new(10, 0, 1, 1), RED_HOST.1, 64));
        assert!(matches!(icmp_of(&out[0]), Icmpv4Type::EchoReply(e) if e.id == 7 && e.seq == 1));
    }

    #[test]
    fn routes_between_networks_holding_the_first_packet_until_arp_resolves() {
        let mut tb = testbed();
        let pkt = from_red(&tb, BLUE_HOST.1, Ipv4Opts::default()).udp(1000, 2000, 20);
        tb.send("r1", &pkt);
        let req = tb.take("b1");
        assert_eq!(req.len(), 1, "an ARP request goes out on blue, the packet waits");
        assert_eq!(&req[0][38..42], &BLUE_HOST.1.octets(), "asking for the destination");
        let blue_gw = rif_mac(&tb, "network:blue");
        tb.send("b1", &arp_reply(BLUE_HOST.0, BLUE_HOST.1, blue_gw, Ipv4Addr::new(10, 0, 2, 1)));
        let out = tb.take("b1");
        assert_eq!(out.len(), 1, "the held packet is delivered after the reply");
        assert_eq!(&out[0][0..6], &BLUE_HOST.0 .0);
        assert_eq!(&out[0][6..12], &blue_gw.0);
        assert_eq!(ip_of(&out[0]), (RED_HOST.1, BLUE_HOST.1, 63));
        // The next packet goes straight through.
        tb.send("r1", &pkt);
        assert_eq!(tb.take("b1").len(), 1);
        assert_eq!(tb.switch().router().stats().forwarded, 2);
    }

    #[test]
    fn default_route_via_upstream_router_on_routed_port() {
        let mut tb = testbed();
        tb.send("r1", &from_red(&tb, EXTERNAL, Ipv4Opts::default()).udp(1000, 53, 20));
        let req = tb.take("up");
        assert_eq!(req.len(), 1);
        assert_eq!(&req[0][38..42], &UPSTREAM.1.octets(), "ARP for the next hop, not the destination");
        let up_mac = rif_mac(&tb, "port:up");
        tb.send("up", &arp_reply(UPSTREAM.0, UPSTREAM.1, up_mac, Ipv4Addr::new(203, 0, 113, 2)));
        let out = tb.take("up");
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0][0..6], &UPSTREAM.0 .0);
        assert_eq!(ip_of(&out[0]), (RED_HOST.1, EXTERNAL, 63));
    }

    #[test]
    fn ttl_expiry_sends_time_exceeded() {
        let mut tb = testbed();
        let opts = Ipv4Opts { ttl: 1, ..Ipv4Opts::default() };
        tb.send("r1", &from_red(&tb, BLUE_HOST.1, opts).udp(1000, 33434, 12));
        let out = tb.take("r1");
        assert_eq!(out.len(), 1);
        assert_eq!(ip_of(&out[0]).0, Ipv4Addr::new(10, 0, 1, 1), "from the ingress interface's address");
        assert!(matches!(icmp_of(&out[0]), Icmpv4Type::TimeExceeded(_)));
        assert!(tb.take("b1").is_empty());
        assert_eq!(tb.switch().counters().drops(DropReason::TtlExpired), 1);
    }

    #[test]
    fn no_route_sends_net_unreachable() {
        let cfg = CONFIG.replace("[[route]]\n        prefix = \"0.0.0.0/0\"\n        via = \"203.0.113.1\"", "");
        let mut tb = Testbed::new(&cfg).unwrap();
        tb.send("r1", &from_red(&tb, EXTERNAL, Ipv4Opts::default()).udp(1000, 53, 20));
        let out = tb.take("r1");
        assert_eq!(out.len(), 1);
        assert!(matches!(
            icmp_of(&out[0]),
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Network)
        ));
        assert_eq!(tb.switch().counters().drops(DropReason::NoRoute), 1);
    }

    #[test]
    fn unanswered_arp_gives_host_unreachable_and_drops_the_queue() {
        let mut tb = testbed();
        for seq in 0..6 {
            tb.send("r1", &from_red(&tb, BLUE_HOST.1, Ipv4Opts { id: seq, ..Ipv4Opts::default() }).udp(1, 2, 8));
        }
        assert_eq!(tb.take("b1").len(), 1, "one request, then retries");
        tb.advance(5 * NANOS_PER_SEC);
        assert_eq!(tb.take("b1").len(), 2, "two retries");
        let back = tb.take("r1");
        assert_eq!(back.len(), 4, "host unreachable for each of the 4 queued packets");
        assert!(back.iter().all(|f| matches!(
            icmp_of(f),
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Host)
        )));
        let c = tb.switch().counters();
        assert_eq!(c.drops(DropReason::HostUnreachable), 4);
        assert_eq!(c.drops(DropReason::NeighQueueOverflow), 2);
        assert_eq!(tb.free_buffers(), tb.total_buffers(), "no buffer left behind");
    }

    #[test]
    fn df_packet_over_egress_mtu_gets_frag_needed() {
        let mut tb = testbed();
        let opts = Ipv4Opts { df: true, ..Ipv4Opts::default() };
        tb.send("r1", &from_red(&tb, EXTERNAL, opts).udp(1000, 53, 1400));
        let out = tb.take("r1");
        assert_eq!(out.len(), 1);
        match icmp_of(&out[0]) {
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu,
            }) => assert_eq!(next_hop_mtu, 1400),
            other => panic!("expected frag needed, got {other:?}"),
        }
        assert!(tb.take("up").is_empty());
        tb.send("r1", &from_red(&tb, EXTERNAL, Ipv4Opts::default()).udp(1000, 53, 1400));
        assert_eq!(tb.switch().counters().drops(DropReason::FragmentationUnsupported), 1);
    }

    #[test]
    fn internal_network_is_not_routed() {
        let mut tb = testbed();
        let vault_gw = rif_mac(&tb, "network:vault");
        let pkt = Ipv4Spec::new(VAULT_HOST.0, vault_gw, VAULT_HOST.1, RED_HOST.1).udp(1, 2, 8);
        tb.send("v1", &pkt);
        tb.send("r1", &from_red(&tb, VAULT_HOST.1, Ipv4Opts::default()).udp(1, 2, 8));
        assert!(tb.take_all().is_empty());
        assert_eq!(tb.switch().counters().drops(DropReason::InternalNetwork), 2);
        // The gateway itself still answers on the internal network.
        tb.send(
            "v1",
            &Ipv4Spec::new(VAULT_HOST.0, vault_gw, VAULT_HOST.1, Ipv4Addr::new(10, 0, 3, 1)).icmp_echo_request(1, 1, 8),
        );
        assert_eq!(tb.take("v1").len(), 1);
    }

    #[test]
    fn malformed_ipv4_to_the_router_is_dropped_with_reasons() {
        let mut tb = testbed();
        let mut bad_sum = from_red(&tb, BLUE_HOST.1, Ipv4Opts::default()).udp(1, 2, 8);
        bad_sum[24] ^= 0xff;
        tb.send("r1", &bad_sum);
        let good = from_red(&tb, BLUE_HOST.1, Ipv4Opts::default()).udp(1, 2, 8);
        let mut bad_ihl = good.clone();
        bad_ihl[14] = 0x43;
        tb.send("r1", &bad_ihl);
        let mut bad_version = good.clone();
        bad_version[14] = 0x65;
        tb.send("r1", &bad_version);
        let mut too_long = good.clone();
        too_long[16..18].copy_from_slice(&1000u16.to_be_bytes());
        tb.send("r1", &too_long);
        assert!(tb.take_all().is_empty());
        let c = tb.switch().counters();
        assert_eq!(c.drops(DropReason::BadIpChecksum), 1);
        assert_eq!(c.drops(DropReason::BadIpHeader), 2);
        assert_eq!(c.drops(DropReason::BadIpLength), 1);
    }

    #[test]
    fn icmp_errors_are_rate_limited_and_never_about_icmp_errors() {
        let mut tb = testbed();
        let opts = Ipv4Opts { ttl: 1, ..Ipv4Opts::default() };
        for _ in 0..200 {
            tb.send("r1", &from_red(&tb, BLUE_HOST.1, opts).udp(1, 2, 8));
        }
        assert_eq!(tb.take("r1").len(), 50, "the burst of the ICMP error bucket");
        assert_eq!(tb.switch().router().stats().icmp_rate_limited, 150);
    }
}
