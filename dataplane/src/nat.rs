//! The NAT stage: connection tracking ([`Conntrack`]) and address/port translation of routed IPv4 traffic —
//! masquerade (SNAT) of networks with `masquerade = true`, published ports (`[[publish]]`, DNAT) and hairpin.
//! The router ([`crate::router`]) calls it; it owns the connection table and one port allocator
//! ([`PortAllocator`]) per router interface.
//!
//! # Where it sits
//!
//! The router's order for an IPv4 packet is: header checks → own addresses → **NAT (inbound)** → TTL, route,
//! `internal`, MTU checks → **NAT (outbound)** → TTL decrement, MAC rewrite, neighbour. Concretely:
//! - **Inbound** ([`Nat::inbound`]): a packet addressed to one of the switch's own addresses (a routed port's
//!   or a gateway's) is looked up first: a reply of a masqueraded connection, a packet of a published-port
//!   (DNAT) connection, or a new connection matching a `[[publish]]` rule is translated (its destination
//!   changes) and then *forwarded* like any routed packet, with a fresh route lookup for the new destination
//!   (the batch lookup, [`crate::router::Router::lookup_batch`], saw the switch's own address: only that first
//!   lookup is wasted). A *new* connection is only decided inbound ([`Inbound::Open`]) and made
//!   ([`Nat::open`]) after the forwarding checks passed, so a packet the router drops (TTL 1, no route, too big)
//!   leaves no entry and holds no port. ICMP errors addressed to the switch that quote a packet of a tracked connection are
//!   translated (outer destination, quoted header and ports, all checksums) and forwarded the same way, so path
//!   MTU discovery (Fragmentation Needed) and traceroute work through NAT. Anything else goes to the router's
//!   own handling as before (ping to the port address keeps working; an unmatched ICMP error is counted in
//!   [`NatStats::no_translation`] and dropped as `local-unsupported`). The translation is *computed* inbound
//!   but written only after the forwarding checks, so an ICMP error the router sends itself (TTL exceeded, no
//!   route, Fragmentation Needed) quotes the packet as it arrived.
//! - **Outbound** ([`Nat::outbound`]): a packet being forwarded from a network that masquerades or holds a
//!   publish target ("inside" networks) is looked up by its tuple after every forwarding check passed: the
//!   original direction of a masqueraded connection or the reply direction of a published one is translated
//!   (its source changes; its destination never does, so the route stays right). A miss from a masquerade
//!   network whose route leaves through a routed port creates a masqueraded connection: the source becomes
//!   the port's address, the source port (ICMP echo identifier) is kept when free towards that destination,
//!   else allocated from `[nat] port_range` ([`PortAllocator`]). Other misses are forwarded untranslated and
//!   untracked (e.g. between two networks).
//!
//! # What is tracked
//!
//! Only connections that are translated: IPv4 TCP, UDP and ICMP echo that cross the router and are
//! masqueraded, published or hairpinned. Traffic between networks without NAT is routed untracked (no lookup
//! at all unless it comes from an inside network), and bridged traffic inside a network never reaches the
//! router. So TCP state policing (`conntrack-invalid`) applies to NAT'd connections only. All connections live
//! in **one zone (0)**: the subnets of router interfaces are disjoint (the configuration checks it) and every
//! tracked tuple has the switch's own address or an inside host on one side, so tuples of different
//! interfaces cannot collide.
//!
//! # Rules
//!
//! - **Masquerade**: from a `masquerade = true` network, out of a routed port; the new source is that port's
//!   address. Packets from such a network out of a routed port that cannot be tracked (another protocol, an
//!   ICMP error about nothing tracked) are dropped as `nat-unsupported` rather than leak the inside address.
//! - **Publish (DNAT)**: a new TCP/UDP connection to a routed port's address and a published `(proto,
//!   external_port)` goes to the rule's `to` address and port, from whichever interface it arrives.
//! - **Hairpin**: when the client is in the target's own network (it reached the published port through the
//!   routed port's address), the source is also translated, to the **network's gateway address** (port kept
//!   when free, else allocated from that address's allocator), so the reply comes back through the switch
//!   instead of going straight to the client on the bridge (which would not recognise it). Clients in other
//!   networks keep their address: their replies are routed back through the switch anyway.
//! - **TCP**: [`Conntrack::new_state`] decides whether a packet may open a connection (a SYN; also a plain ACK
//!   under the default loose policy, `[conntrack] tcp_strict = false`); [`Conntrack::update`] decides whether
//!   a packet fits its connection. Refused packets are dropped as `conntrack-invalid` (nothing is translated).
//!   A SYN from the original side on a TIME_WAIT or CLOSE connection reopens it (netfilter does the same).
//!   A RST moves the connection to CLOSE; it expires (and releases its port) after `tcp_close_secs`.
//! - **Fragments**: a first fragment carries the ports and is tracked and translated like a whole packet.
//!   Later fragments cannot be matched: they are dropped as `nat-fragment` when they would need translation —
//!   addressed to the switch's own addresses, or from an inside network out of a routed port. So fragmented
//!   datagrams do not cross NAT (the switch does not reassemble).
//! - **Limits**: a new connection is refused when the table is full (`conntrack-full`), the port range is
//!   exhausted towards the destination (`nat-port-exhausted`) or its translated tuple is already tracked
//!   (`nat-clash`). Existing connections are never evicted. Masquerade may give a connection a published port
//!   number as its external port (ports are unique per destination, not globally); a later connection from that
//!   very destination address and port to the published port then clashes — as in netfilter.
//! - **Expiry**: [`Nat::expire`], from the switch's housekeeping, removes expired connections and releases
//!   their ports ([`PortAllocator::release`]); [`Nat::check_invariants`] checks that the ports in use equal
//!   the connections holding one.
//!
//! # Cost
//!
//! One hash lookup per packet that may be NAT'd (none for traffic that cannot be), incremental checksum
//! updates (RFC 1624) of the IPv4 header and the TCP/UDP/ICMP checksum, no allocation for established
//! connections (the table and allocators grow only on new connections).
//!
//! Threads: owned by the router of one worker; not shared.

use crate::buffer::{Nanos, NANOS_PER_SEC};
use crate::config::PublishProto;
use crate::conntrack::{
    Conntrack, ConntrackStats, Direction, Entry, EntryId, InsertError, NatBinding, NatKind, Probe, Proto, ProtoState,
    TcpFlags, Tuple,
};
use crate::counters::DropReason;
use crate::neigh::RifId;
use crate::packet::{ip_proto, Parsed};
use crate::snat::{NatProto, PortAllocator, SnatStats};
use crate::topology::Topology;
use crate::wire::checksum;
use rustc_hash::{FxHashMap, FxHasher};
use serde::Serialize;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

/// The zone of every tracked connection (see the module documentation).
pub const ZONE: u16 = 0;

/// Counters of the NAT stage (the connection table has its own, [`ConntrackStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NatStats {
    /// Masqueraded connections created.
    pub snat_created: u64,
    /// Published-port connections created.
    pub dnat_created: u64,
    /// Hairpin connections created.
    pub hairpin_created: u64,
    /// Packets of tracked connections translated in their original direction.
    pub hits_original: u64,
    /// Packets of tracked connections translated in their reply direction.
    pub hits_reply: u64,
    /// Packets dropped as `conntrack-invalid`.
    pub invalid: u64,
    /// New connections dropped because the table was full.
    pub table_full: u64,
    /// New connections dropped because no port was free.
    pub port_exhausted: u64,
    /// New connections dropped because their translated tuple was taken.
    pub clash: u64,
    /// ICMP errors addressed to the switch that quote no tracked connection (left to the router).
    pub no_translation: u64,
    /// ICMP errors translated (either way).
    pub icmp_errors_translated: u64,
    /// Later fragments dropped (`nat-fragment`).
    pub fragments_dropped: u64,
    /// Packets from a masquerade network that could not be translated (`nat-unsupported`).
    pub unsupported: u64,
    /// Connections removed after expiry (their ports released).
    pub expired: u64,
}

/// One tracked connection, as listed by [`Nat::connections`] (and `vswitchctl conntrack ls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// The protocol.
    pub proto: Proto,
    /// The protocol state.
    pub state: ProtoState,
    /// What the first packet looked like.
    pub orig: Tuple,
    /// What replies look like.
    pub reply: Tuple,
    /// How it is translated.
    pub nat: Option<NatKind>,
    /// Whole seconds until it expires without traffic.
    pub expires_in_secs: u64,
}

/// A translation to write into one packet: its tuple `from` becomes `to` (addresses, ports or ICMP echo
/// identifier). Both are in the packet's own direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// The packet's tuple as it is.
    pub from: Tuple,
    /// The packet's tuple after translation.
    pub to: Tuple,
}

/// A connection [`Nat::inbound`] decided to open (a published port, or a hairpin through one), made only by
/// [`Nat::open`] once the packet passed the forwarding checks: a packet the router then drops (TTL 1, no route,
/// too big) must not leave an entry, or a port held on the gateway, behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewConnection {
    orig: Tuple,
    translated: Tuple,
    state: ProtoState,
    kind: NatKind,
    alloc: Option<RifId>,
}

impl NewConnection {
    /// Where the first packet goes after translation.
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        self.translated.dst
    }
}

/// What [`Nat::inbound`] decided about a packet addressed to one of the switch's own addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Not NAT's: the router handles it as its own (ping, or `local-unsupported`).
    Local,
    /// Forward it to its new destination after writing `Rewrite` ([`apply`]) once the forwarding checks pass.
    Translate(Rewrite),
    /// Forward it to the connection's destination; once the forwarding checks pass, [`Nat::open`] the
    /// connection and write the rewrite it returns.
    Open(NewConnection),
    /// An ICMP error already translated in place: forward it to its new destination.
    Translated,
    /// Drop it.
    Drop(DropReason),
}

/// The NAT stage. See the module documentation.
#[derive(Debug)]
pub struct Nat {
    /// Any masquerade network or publish rule: otherwise every method is a no-op.
    enabled: bool,
    ct: Conntrack,
    /// One per router interface: the ports in use on its address.
    allocators: Vec<PortAllocator>,
    /// `(rif, proto, external port)` → `(address, port)`, see [`publish_key`].
    publish: FxHashMap<u32, (Ipv4Addr, u16)>,
    /// Per router interface: a network that masquerades or holds a publish target.
    inside: Vec<bool>,
    /// Per router interface: a masquerade network.
    masquerade: Vec<bool>,
    /// Per router interface: its address if it is a routed port (where masquerade translates to).
    snat_to: Vec<Option<Ipv4Addr>>,
    stats: NatStats,
}

fn publish_key(rif: RifId, proto: Proto, port: u16) -> u32 {
    (u32::from(rif) << 24) | (u32::from(proto as u8) << 16) | u32::from(port)
}

#[inline]
fn be16(d: &[u8], off: usize) -> u16 {
    u16::from_be_bytes(d[off..off + 2].try_into().expect("a 2-byte range is 2 bytes"))
}

#[inline]
fn put16(d: &mut [u8], off: usize, v: u16) {
    d[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
fn addr_at(d: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(d[off], d[off + 1], d[off + 2], d[off + 3])
}

/// ICMP types.
mod icmp {
    pub const ECHO_REPLY: u8 = 0;
    pub const ECHO_REQUEST: u8 = 8;
    /// Errors that quote a packet and are translated: Destination Unreachable, Source Quench, Time Exceeded,
    /// Parameter Problem.
    pub fn is_error(t: u8) -> bool {
        matches!(t, 3 | 4 | 11 | 12)
    }
}

/// The tuple of the IPv4 packet whose header is at `l3` and transport header at `l4` (inside `d[..end]`), if
/// it is TCP, UDP or ICMP echo; `None` otherwise.
#[inline]
fn tuple_at(d: &[u8], l3: usize, l4: usize, proto: u8, end: usize) -> Option<Tuple> {
    // Two slice checks up front (the addresses, the first 8 transport bytes); the reads below are then free of
    // bounds checks.
    let ip: &[u8; 8] = d.get(l3 + 12..l3 + 20)?.try_into().ok()?;
    let l4h: &[u8; 8] = d.get(..end)?.get(l4..l4 + 8)?.try_into().ok()?;
    let src = Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]);
    let dst = Ipv4Addr::new(ip[4], ip[5], ip[6], ip[7]);
    let (w0, w1, w2) = (
        u16::from_be_bytes([l4h[0], l4h[1]]),
        u16::from_be_bytes([l4h[2], l4h[3]]),
        u16::from_be_bytes([l4h[4], l4h[5]]),
    );
    match proto {
        ip_proto::TCP => Some(Tuple::new(ZONE, Proto::Tcp, (src, w0), (dst, w1))),
        ip_proto::UDP => Some(Tuple::new(ZONE, Proto::Udp, (src, w0), (dst, w1))),
        ip_proto::ICMP if l4h[1] == 0 => match l4h[0] {
            icmp::ECHO_REQUEST => Some(Tuple::icmp_echo_request(ZONE, src, dst, w2)),
            icmp::ECHO_REPLY => Some(Tuple::icmp_echo_reply(ZONE, src, dst, w2)),
            _ => None,
        },
        _ => None,
    }
}

/// The tuple of a parsed frame (not for later fragments: they carry no transport header).
#[inline]
fn packet_tuple(d: &[u8], p: &Parsed) -> Option<Tuple> {
    if p.l4 == 0 {
        return None;
    }
    tuple_at(d, p.l3 as usize, p.l4 as usize, p.ip_proto, p.l3_end as usize)
}

/// The ICMP echo identifier of a tuple (one of the two ports is it, the other is 0).
#[inline]
fn echo_id(t: &Tuple) -> u16 {
    t.sport | t.dport
}

/// Rewrites the IPv4 packet at `l3`/`l4` (ending at `end`) from tuple `from` to `to`, updating the IP header
/// checksum and the transport checksum incrementally. `l4_sum_at`: whether the transport checksum is inside
/// the data (it may not be in a quoted packet).
fn rewrite_at(d: &mut [u8], l3: usize, l4: usize, end: usize, from: &Tuple, to: &Tuple) {
    // Transport checksum offset, for those with a pseudo-header (TCP, UDP), when it lies inside the data.
    let l4_sum_at = match from.proto {
        Proto::Tcp if l4 + 18 <= end => Some(l4 + 16),
        Proto::Udp if l4 + 8 <= end && be16(d, l4 + 6) != 0 => Some(l4 + 6),
        _ => None,
    };
    // The address changes go into both checksums (the transport one through its pseudo-header), the port or
    // identifier changes into the transport one; each checksum is updated once, at the end.
    let mut ip_delta = checksum::Delta::default();
    for (off, old, new) in [(l3 + 12, from.src, to.src), (l3 + 16, from.dst, to.dst)] {
        if old != new {
            d[off..off + 4].copy_from_slice(&new.octets());
            ip_delta.add32(u32::from(old), u32::from(new));
        }
    }
    put16(d, l3 + 10, ip_delta.apply(be16(d, l3 + 10)));
    match from.proto {
        Proto::Tcp | Proto::Udp => {
            let mut l4_delta = ip_delta;
            for (off, old, new) in [(l4, from.sport, to.sport), (l4 + 2, from.dport, to.dport)] {
                if old != new {
                    put16(d, off, new);
                    l4_delta.add16(old, new);
                }
            }
            if let Some(off) = l4_sum_at {
                let mut c = l4_delta.apply(be16(d, off));
                if from.proto == Proto::Udp && c == 0 {
                    c = 0xffff; // 0 means "no checksum" in UDP
                }
                put16(d, off, c);
            }
        }
        Proto::Icmp => {
            let (old, new) = (echo_id(from), echo_id(to));
            if old != new {
                put16(d, l4 + 4, new);
                if l4 + 4 <= end {
                    let c = checksum::update16(be16(d, l4 + 2), old, new);
                    put16(d, l4 + 2, c);
                }
            }
        }
    }
}

/// A packet's flow as the router's batch lookup saw it ([`Nat::prefetch`]): its tuple, already hashed for the
/// connection table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    tuple: Tuple,
    probe: Probe,
}

/// Writes `rw` into the frame's packet (see [`Rewrite`]).
#[inline(always)]
pub fn apply(d: &mut [u8], p: &Parsed, rw: &Rewrite) {
    let (l3, l4, end) = (p.l3 as usize, p.l4 as usize, p.l3_end as usize);
    // The common case, a whole TCP or UDP header after a 20-byte IP header, on fixed-size views of the two
    // headers (no bounds check per field); anything else takes the general path.
    if l4 == l3 + 20 && end <= d.len() {
        let (head, tail) = d.split_at_mut(l4);
        if let Ok(ip) = <&mut [u8; 20]>::try_from(&mut head[l3..]) {
            match rw.from.proto {
                Proto::Tcp if end - l4 >= 18 => {
                    if let Ok(tcp) = <&mut [u8; 18]>::try_from(&mut tail[..18]) {
                        return rewrite_transport::<18, 16>(ip, tcp, &rw.from, &rw.to, false);
                    }
                }
                Proto::Udp if end - l4 >= 8 => {
                    if let Ok(udp) = <&mut [u8; 8]>::try_from(&mut tail[..8]) {
                        return rewrite_transport::<8, 6>(ip, udp, &rw.from, &rw.to, true);
                    }
                }
                _ => {}
            }
        }
    }
    rewrite_at(d, l3, l4, end, &rw.from, &rw.to);
}

/// [`rewrite_at`] for a TCP or UDP packet whose IP header and first `N` transport bytes (checksum at `SUM`) are
/// given as arrays: the same bytes written, with the same checksums.
#[inline(always)]
fn rewrite_transport<const N: usize, const SUM: usize>(
    ip: &mut [u8; 20],
    l4: &mut [u8; N],
    from: &Tuple,
    to: &Tuple,
    udp: bool,
) {
    let mut ip_delta = checksum::Delta::default();
    if from.src != to.src {
        ip[12..16].copy_from_slice(&to.src.octets());
        ip_delta.add32(u32::from(from.src), u32::from(to.src));
    }
    if from.dst != to.dst {
        ip[16..20].copy_from_slice(&to.dst.octets());
        ip_delta.add32(u32::from(from.dst), u32::from(to.dst));
    }
    let ip_sum = ip_delta.apply(u16::from_be_bytes([ip[10], ip[11]]));
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let mut l4_delta = ip_delta;
    if from.sport != to.sport {
        l4[0..2].copy_from_slice(&to.sport.to_be_bytes());
        l4_delta.add16(from.sport, to.sport);
    }
    if from.dport != to.dport {
        l4[2..4].copy_from_slice(&to.dport.to_be_bytes());
        l4_delta.add16(from.dport, to.dport);
    }
    let sum = u16::from_be_bytes([l4[SUM], l4[SUM + 1]]);
    // A UDP checksum of 0 means "none": it stays 0; a computed 0 is sent as 0xffff.
    if !(udp && sum == 0) {
        let mut c = l4_delta.apply(sum);
        if udp && c == 0 {
            c = 0xffff;
        }
        l4[SUM..SUM + 2].copy_from_slice(&c.to_be_bytes());
    }
}

impl Nat {
    /// The stage for `topo`: its publish rules, masquerade flags, port range and table size.
    pub fn new(topo: &Topology) -> Self {
        let mut inside: Vec<bool> = topo.rifs.iter().map(|r| r.masquerade).collect();
        let mut publish = FxHashMap::default();
        for rule in &topo.publish {
            let proto = match rule.proto {
                PublishProto::Tcp => Proto::Tcp,
                PublishProto::Udp => Proto::Udp,
            };
            publish.insert(publish_key(rule.rif, proto, rule.external_port), (rule.to_addr, rule.to_port));
            if let Some(i) = topo.rifs.iter().position(|r| !r.routed_port && r.subnet.contains(&rule.to_addr)) {
                inside[i] = true;
            }
        }
        let enabled = !publish.is_empty() || topo.rifs.iter().any(|r| r.masquerade);
        Nat {
            enabled,
            // Without NAT nothing is tracked: reserve nothing (the default table reserves several MB).
            ct: Conntrack::with_reserve(topo.conntrack, if enabled { topo.conntrack.limit.min(1 << 16) } else { 0 }),
            allocators: topo.rifs.iter().map(|r| PortAllocator::new(r.addr, topo.nat_port_range)).collect(),
            publish,
            inside,
            masquerade: topo.rifs.iter().map(|r| r.masquerade).collect(),
            snat_to: topo.rifs.iter().map(|r| r.routed_port.then_some(r.addr)).collect(),
            stats: NatStats::default(),
        }
    }

    /// True when the configuration has masquerade networks or publish rules.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The flow of a packet the router is about to handle, hashed, with its conntrack index line starting to
    /// load (see [`Conntrack::probe`]); `None` when NAT is off or would not look the packet up.
    #[inline]
    pub fn prefetch(&self, d: &[u8], p: &Parsed) -> Option<Flow> {
        if !self.enabled {
            return None;
        }
        let tuple = packet_tuple(d, p)?;
        Some(Flow { tuple, probe: self.ct.probe(&tuple) })
    }

    /// Starts loading the connection entry a flow's index line points to (after [`Nat::prefetch`]), given the
    /// interface the packet came in on and the one its route leads out of. When the line holds nothing for the
    /// flow and it would be masqueraded, it is probably new: then the index line its reply tuple will be
    /// inserted into starts loading instead (predicted with the source port kept, the usual case).
    #[inline]
    pub fn prefetch_entry(&self, f: &mut Flow, in_rif: RifId, out_rif: Option<RifId>) {
        if self.ct.prefetch_entry(&mut f.probe) || !self.masquerade[in_rif as usize] {
            return;
        }
        if let Some(&Some(addr)) = out_rif.and_then(|r| self.snat_to.get(r as usize)) {
            self.ct.prefetch_tuple(&Tuple { src: addr, ..f.tuple }.inverse());
        }
    }

    /// The packet's tuple and the connection it belongs to, from the batch's `flow` when given (it must be
    /// [`Nat::prefetch`] of this very packet, unchanged since), else computed; `None`: no tuple.
    #[inline(always)]
    fn track(
        &self,
        now: Nanos,
        d: &[u8],
        p: &Parsed,
        flow: Option<&Flow>,
    ) -> Option<(Tuple, Option<(EntryId, Direction)>)> {
        match flow {
            Some(f) => Some((f.tuple, self.ct.lookup_probe(&f.tuple, f.probe, now))),
            None => {
                let t = packet_tuple(d, p)?;
                Some((t, self.ct.lookup(&t, now)))
            }
        }
    }

    /// A packet received on `in_rif` and addressed to `local_rif`'s address: see the module documentation.
    /// ICMP errors are translated in place (hence `&mut`); other translations are returned, to be written with
    /// [`apply`] after the forwarding checks.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn inbound(
        &mut self,
        now: Nanos,
        in_rif: RifId,
        local_rif: RifId,
        d: &mut [u8],
        p: &Parsed,
        flow: Option<&Flow>,
        topo: &Topology,
    ) -> Inbound {
        if !self.enabled {
            return Inbound::Local;
        }
        if p.later_fragment {
            self.stats.fragments_dropped += 1;
            return Inbound::Drop(DropReason::NatFragment);
        }
        let Some((t, found)) = self.track(now, d, p, flow) else {
            if p.ip_proto == ip_proto::ICMP && p.l4 != 0 && icmp::is_error(d[p.l4 as usize]) {
                return match self.translate_error(now, d, p, ErrorFrom::Outside) {
                    Ok(true) => Inbound::Translated,
                    Ok(false) => {
                        self.stats.no_translation += 1;
                        Inbound::Local
                    }
                    Err(reason) => Inbound::Drop(reason),
                };
            }
            return Inbound::Local;
        };
        if let Some(found) = found {
            return match self.hit(now, d, p, t, found) {
                Ok(rw) => Inbound::Translate(rw),
                Err(reason) => Inbound::Drop(reason),
            };
        }
        let Some(&(to_addr, to_port)) = self.publish.get(&publish_key(local_rif, t.proto, t.dport)) else {
            return Inbound::Local;
        };
        if t.proto == Proto::Icmp {
            return Inbound::Local;
        }
        let Some(state) = self.ct.new_state(t.proto, flags(d, p)) else {
            self.stats.invalid += 1;
            return Inbound::Drop(DropReason::ConntrackInvalid);
        };
        let dnat = Tuple { dst: to_addr, dport: to_port, ..t };
        let client = &topo.rifs[in_rif as usize];
        if !client.routed_port && client.subnet.contains(&to_addr) {
            // Hairpin: the source becomes the gateway's address, so the reply comes back to the switch.
            let translated = Tuple { src: client.addr, ..dnat };
            return Inbound::Open(NewConnection {
                orig: t,
                translated,
                state,
                kind: NatKind::Hairpin,
                alloc: Some(in_rif),
            });
        }
        Inbound::Open(NewConnection { orig: t, translated: dnat, state, kind: NatKind::Dnat, alloc: None })
    }

    /// Creates the connection [`Nat::inbound`] decided on (its packet passed the forwarding checks) and returns
    /// the first packet's rewrite; a full table, exhausted ports or a clash is the packet's drop reason.
    #[inline]
    pub fn open(&mut self, now: Nanos, c: NewConnection) -> Result<Rewrite, DropReason> {
        self.create(now, c.orig, c.translated, c.state, c.kind, c.alloc)
    }

    /// A packet received on `in_rif`, routed out of `out_rif`, every forwarding check passed: translates it in
    /// place when it belongs to a tracked connection or starts a masqueraded one. See the module documentation.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn outbound(
        &mut self,
        now: Nanos,
        in_rif: RifId,
        out_rif: RifId,
        d: &mut [u8],
        p: &Parsed,
        flow: Option<&Flow>,
        topo: &Topology,
    ) -> Result<(), DropReason> {
        if !self.enabled || !self.inside[in_rif as usize] {
            return Ok(());
        }
        let leaves = topo.rifs[out_rif as usize].routed_port;
        if p.later_fragment {
            if leaves {
                self.stats.fragments_dropped += 1;
                return Err(DropReason::NatFragment);
            }
            return Ok(());
        }
        let masquerade = leaves && topo.rifs[in_rif as usize].masquerade;
        let Some((t, found)) = self.track(now, d, p, flow) else {
            let error = p.ip_proto == ip_proto::ICMP && p.l4 != 0 && icmp::is_error(d[p.l4 as usize]);
            if error && self.translate_error(now, d, p, ErrorFrom::Inside)? {
                return Ok(());
            }
            if masquerade {
                self.stats.unsupported += 1;
                return Err(DropReason::NatUnsupported);
            }
            return Ok(());
        };
        if let Some(found) = found {
            let rw = self.hit(now, d, p, t, found)?;
            apply(d, p, &rw);
            return Ok(());
        }
        if !masquerade {
            return Ok(());
        }
        let Some(state) = self.ct.new_state(t.proto, flags(d, p)) else {
            self.stats.invalid += 1;
            return Err(DropReason::ConntrackInvalid);
        };
        let translated = Tuple { src: topo.rifs[out_rif as usize].addr, ..t };
        let rw = self.create(now, t, translated, state, NatKind::Snat, Some(out_rif))?;
        apply(d, p, &rw);
        Ok(())
    }

    /// A packet of a tracked connection: runs the state machine, returns its translation.
    #[inline(always)]
    fn hit(
        &mut self,
        now: Nanos,
        d: &[u8],
        p: &Parsed,
        t: Tuple,
        (id, dir): (EntryId, Direction),
    ) -> Result<Rewrite, DropReason> {
        let Some(e) = self.ct.update_entry(id, dir, flags(d, p), now) else {
            self.stats.invalid += 1;
            return Err(DropReason::ConntrackInvalid);
        };
        let to = e.tuple(dir.opposite()).inverse();
        match dir {
            Direction::Original => self.stats.hits_original += 1,
            Direction::Reply => self.stats.hits_reply += 1,
        }
        Ok(Rewrite { from: t, to })
    }

    /// Creates a connection whose first packet `orig` becomes `translated` (its source port/identifier
    /// allocated from allocator `alloc` when given), and returns the first packet's rewrite.
    fn create(
        &mut self,
        now: Nanos,
        orig: Tuple,
        mut translated: Tuple,
        state: ProtoState,
        kind: NatKind,
        alloc: Option<RifId>,
    ) -> Result<Rewrite, DropReason> {
        let nproto = NatProto::from(orig.proto);
        let mut held = None;
        if let Some(a) = alloc {
            let allocator = &mut self.allocators[a as usize];
            let dst = (translated.dst, translated.dport);
            let preferred = if orig.proto == Proto::Icmp { echo_id(&orig) } else { orig.sport };
            match allocator.allocate(nproto, preferred, dst, flow_hash(&orig)) {
                Ok(port) => {
                    // ICMP echo requests carry the identifier as `sport`.
                    translated.sport = port;
                    held = Some((a, dst, port));
                }
                Err(_) => {
                    self.stats.port_exhausted += 1;
                    return Err(DropReason::NatPortExhausted);
                }
            }
        }
        let reply = translated.inverse();
        let binding = NatBinding { kind, allocator: alloc };
        match self.ct.insert_nat(orig, reply, state, Some(binding), now) {
            Ok(_) => {
                match kind {
                    NatKind::Snat => self.stats.snat_created += 1,
                    NatKind::Dnat => self.stats.dnat_created += 1,
                    NatKind::Hairpin => self.stats.hairpin_created += 1,
                }
                Ok(Rewrite { from: orig, to: translated })
            }
            Err(e) => {
                if let Some((a, dst, port)) = held {
                    self.allocators[a as usize].release(nproto, dst, port);
                }
                Err(match e {
                    InsertError::Full => {
                        self.stats.table_full += 1;
                        DropReason::ConntrackFull
                    }
                    InsertError::Clash(_) | InsertError::BadTuples => {
                        self.stats.clash += 1;
                        DropReason::NatClash
                    }
                })
            }
        }
    }

    /// Translates an ICMP error quoting a packet of a tracked connection: the quoted header and ports back to
    /// what they were before translation, the outer destination (source) when it was the quoted packet's
    /// source (destination), and every checksum. An error from outside must be addressed to the quoted
    /// packet's source (the switch's address), an error from inside must come from the quoted packet's
    /// destination (the host it was delivered to): otherwise an outer address would stay untranslated. Ok(false)
    /// when it quotes nothing tracked or breaks that rule; the frame is then unchanged.
    #[inline(never)]
    fn translate_error(&mut self, now: Nanos, d: &mut [u8], p: &Parsed, from: ErrorFrom) -> Result<bool, DropReason> {
        let (l3, l4, end) = (p.l3 as usize, p.l4 as usize, p.l3_end as usize);
        let il3 = l4 + 8;
        if il3 + 20 > end || d[il3] >> 4 != 4 {
            return Ok(false);
        }
        let il4 = il3 + usize::from(d[il3] & 0x0f) * 4;
        let frag_offset = be16(d, il3 + 6) & 0x1fff;
        if il4 < il3 + 20 || frag_offset != 0 {
            return Ok(false);
        }
        let Some(quoted) = tuple_at(d, il3, il4, d[il3 + 9], end) else {
            return Ok(false);
        };
        let (osrc, odst) = (addr_at(d, l3 + 12), addr_at(d, l3 + 16));
        let consistent = match from {
            ErrorFrom::Outside => odst == quoted.src,
            ErrorFrom::Inside => osrc == quoted.dst,
        };
        if !consistent {
            return Ok(false);
        }
        let Some((id, dir)) = self.ct.lookup(&quoted.inverse(), now) else {
            return Ok(false);
        };
        if !checksum::verify(&d[l4..end]) {
            return Err(DropReason::BadL4Checksum);
        }
        let Some(e) = self.ct.get(id) else { return Ok(false) };
        // The quoted packet went the other way from `dir`, and was translated from this.
        let before = *e.tuple(dir.opposite());
        rewrite_at(d, il3, il4, end, &quoted, &before);
        let outer_from = Tuple { src: osrc, dst: odst, ..quoted };
        let mut outer_to = outer_from;
        if odst == quoted.src {
            outer_to.dst = before.src;
        }
        if osrc == quoted.dst {
            outer_to.src = before.dst;
        }
        // Outer addresses: the IP header only (ICMP has no pseudo-header); then the ICMP checksum afresh,
        // since the quoted bytes changed (the message was verified above).
        let mut ip_sum = be16(d, l3 + 10);
        for (off, old, new) in [(l3 + 12, osrc, outer_to.src), (l3 + 16, odst, outer_to.dst)] {
            if old != new {
                d[off..off + 4].copy_from_slice(&new.octets());
                ip_sum = checksum::update32(ip_sum, u32::from(old), u32::from(new));
            }
        }
        put16(d, l3 + 10, ip_sum);
        put16(d, l4 + 2, 0);
        let c = checksum::checksum(&d[l4..end]);
        put16(d, l4 + 2, c);
        self.stats.icmp_errors_translated += 1;
        Ok(true)
    }

    /// Removes the connections expired at `now` and releases their ports; returns how many. Call from
    /// housekeeping, off the hot path.
    pub fn expire(&mut self, now: Nanos) -> usize {
        let allocators = &mut self.allocators;
        let n = self.ct.expire_with(now, |e| release(allocators, &e));
        self.stats.expired += n as u64;
        n
    }

    /// Removes every connection and releases their ports (`vswitchctl conntrack flush`); returns how many.
    pub fn flush(&mut self) -> usize {
        let allocators = &mut self.allocators;
        self.ct.flush(|e| release(allocators, &e))
    }

    /// The connection table.
    pub fn conntrack(&self) -> &Conntrack {
        &self.ct
    }

    /// The stage's counters.
    pub fn stats(&self) -> NatStats {
        self.stats
    }

    /// The connection table's counters.
    pub fn conntrack_stats(&self) -> ConntrackStats {
        self.ct.stats()
    }

    /// The port allocators' counters summed over every address.
    pub fn snat_stats(&self) -> SnatStats {
        self.allocators.iter().map(PortAllocator::stats).fold(SnatStats::default(), |a, s| SnatStats {
            in_use: a.in_use + s.in_use,
            destinations: a.destinations + s.destinations,
            allocated: a.allocated + s.allocated,
            preferred_kept: a.preferred_kept + s.preferred_kept,
            remapped: a.remapped + s.remapped,
            exhausted: a.exhausted + s.exhausted,
            claimed: a.claimed + s.claimed,
            released: a.released + s.released,
            stray_releases: a.stray_releases + s.stray_releases,
        })
    }

    /// The live connections at `now`, sorted by original tuple (deterministic).
    pub fn connections(&self, now: Nanos) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = self
            .ct
            .entries(now)
            .map(|(_, e)| ConnectionInfo {
                proto: e.orig.proto,
                state: e.state,
                orig: e.orig,
                reply: e.reply,
                nat: e.nat.map(|n| n.kind),
                expires_in_secs: (e.expires - now) / NANOS_PER_SEC,
            })
            .collect();
        v.sort_by_key(|c| c.orig);
        v
    }

    /// Checks the table's invariants and that the ports in use equal the connections holding one (in the
    /// table or waiting to be handed out by the next expiry).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.ct.check_invariants()?;
        let holding = self.ct.all_entries().map(|(_, e)| e).chain(self.ct.pending_dead()).filter(|e| holds_port(e));
        let holding = holding.count();
        let in_use: usize = self.allocators.iter().map(|a| a.stats().in_use).sum();
        if holding != in_use {
            return Err(format!("{holding} connections hold a NAT port but {in_use} ports are in use"));
        }
        let stray: u64 = self.allocators.iter().map(|a| a.stats().stray_releases).sum();
        if stray != 0 {
            return Err(format!("{stray} releases of ports not in use"));
        }
        Ok(())
    }
}

/// Which way an ICMP error goes, for [`Nat::translate_error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorFrom {
    /// Addressed to the switch (inbound).
    Outside,
    /// From an inside network, being forwarded (outbound).
    Inside,
}

fn holds_port(e: &Entry) -> bool {
    e.nat.is_some_and(|n| n.allocator.is_some())
}

/// Gives a dead connection's port back to its allocator.
fn release(allocators: &mut [PortAllocator], e: &Entry) {
    if let Some(a) = e.nat.and_then(|n| n.allocator) {
        if let Some(allocator) = allocators.get_mut(usize::from(a)) {
            allocator.release(NatProto::from(e.reply.proto), (e.reply.src, e.reply.sport), e.reply.dport);
        }
    }
}

/// The TCP flags of a parsed frame (none for other protocols).
#[inline]
fn flags(d: &[u8], p: &Parsed) -> TcpFlags {
    if p.ip_proto == ip_proto::TCP && p.l4 != 0 {
        TcpFlags(d[p.l4 as usize + 13])
    } else {
        TcpFlags::NONE
    }
}

fn flow_hash(t: &Tuple) -> u64 {
    let mut h = FxHasher::default();
    t.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use crate::buffer::NANOS_PER_SEC;
    use crate::conntrack::{NatKind, Proto, ProtoState, TcpState, Tuple};
    use crate::counters::DropReason;
    use crate::packet::{ip_proto, parse};
    use crate::testbed::Testbed;
    use crate::wire::builder::{arp_request, Ipv4Opts, Ipv4Spec, TcpFlags, TcpSegment};
    use crate::wire::checksum;
    use crate::wire::MacAddr;
    use etherparse::{icmpv4, Icmpv4Type};
    use proptest::prelude::*;

    proptest! {
        /// The fixed-size fast path of `apply` writes exactly what the general `rewrite_at` writes, for TCP and
        /// UDP (zero checksum included), whichever of the four fields change.
        #[test]
        fn apply_fast_path_equals_the_general_rewrite(
            bytes in proptest::collection::vec(any::<u8>(), 64),
            tcp in any::<bool>(),
            zero_udp_sum in any::<bool>(),
            from in any::<([u8; 4], u16, [u8; 4], u16)>(),
            to in any::<([u8; 4], u16, [u8; 4], u16)>(),
            keep in any::<[bool; 4]>(),
        ) {
            let proto = if tcp { Proto::Tcp } else { Proto::Udp };
            let t = |x: ([u8; 4], u16, [u8; 4], u16)| Tuple::new(1, proto, (x.0.into(), x.1), (x.2.into(), x.3));
            let from = t(from);
            let mut to = t(to);
            if keep[0] { to.src = from.src; }
            if keep[1] { to.sport = from.sport; }
            if keep[2] { to.dst = from.dst; }
            if keep[3] { to.dport = from.dport; }
            let mut fast = bytes.clone();
            if !tcp && zero_udp_sum {
                fast[34 + 6] = 0;
                fast[34 + 7] = 0;
            }
            let mut general = fast.clone();
            let p = crate::packet::Parsed {
                l3: 14, l4: 34, l3_end: 64, ip_proto: if tcp { 6 } else { 17 }, ..Default::default()
            };
            super::apply(&mut fast, &p, &super::Rewrite { from, to });
            super::rewrite_at(&mut general, 14, 34, 64, &from, &to);
            prop_assert_eq!(fast, general);
        }
    }
    use std::net::Ipv4Addr;

    const CONFIG: &str = r#"
        [[network]]
        name = "bridge"
        subnet = "172.17.0.0/16"
        gateway = "172.17.0.1"
        masquerade = true
        [[network]]
        name = "blue"
        subnet = "10.0.2.0/24"
        gateway = "10.0.2.1"
        [[port]]
        name = "c1"
        kind = "mem"
        network = "bridge"
        [[port]]
        name = "c2"
        kind = "mem"
        network = "bridge"
        [[port]]
        name = "b1"
        kind = "mem"
        network = "blue"
        [[port]]
        name = "up"
        kind = "mem"
        address = "203.0.113.2/24"
        [[route]]
        prefix = "0.0.0.0/0"
        via = "203.0.113.1"
        [[publish]]
        port = "up"
        proto = "tcp"
        external_port = 8080
        to = "172.17.0.2:80"
        [[publish]]
        port = "up"
        proto = "udp"
        external_port = 5353
        to = "172.17.0.2:53"
    "#;

    const C1: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 1, 2]), Ipv4Addr::new(172, 17, 0, 2));
    const C2: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 1, 3]), Ipv4Addr::new(172, 17, 0, 3));
    const B1: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 2, 20]), Ipv4Addr::new(10, 0, 2, 20));
    const UPSTREAM: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 9, 1]), Ipv4Addr::new(203, 0, 113, 1));
    const UP_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
    const GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

    fn rif_mac(tb: &Testbed, name: &str) -> MacAddr {
        tb.switch().topology().rifs.iter().find(|r| r.name == name).expect("interface exists").mac
    }

    /// A testbed for `config` whose neighbours (upstream, both containers, the blue host) are resolved.
    fn testbed_with(config: &str) -> Testbed {
        let mut tb = Testbed::new(config).expect("NAT test config is valid");
        tb.send("up", &arp_request(UPSTREAM.0, UPSTREAM.1, UP_ADDR));
        tb.send("c1", &arp_request(C1.0, C1.1, GW));
        tb.send("c2", &arp_request(C2.0, C2.1, GW));
        tb.send("b1", &arp_request(B1.0, B1.1, Ipv4Addr::new(10, 0, 2, 1)));
        tb.take_all();
        tb
    }

    fn testbed() -> Testbed {
        testbed_with(CONFIG)
    }

    /// From a container to `dst`, through the gateway.
    fn from(tb: &Testbed, host: (MacAddr, Ipv4Addr), dst: Ipv4Addr) -> Ipv4Spec {
        Ipv4Spec::new(host.0, rif_mac(tb, "network:bridge"), host.1, dst)
    }

    /// From `src` beyond the upstream router to `dst`, arriving on the uplink.
    fn inbound(tb: &Testbed, src: Ipv4Addr, dst: Ipv4Addr) -> Ipv4Spec {
        Ipv4Spec::new(UPSTREAM.0, rif_mac(tb, "port:up"), src, dst)
    }

    /// (src, sport, dst, dport) of a TCP/UDP packet (ICMP echo: the identifier as both ports), after checking
    /// the IPv4 and transport checksums.
    fn ends(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
        let p = parse(frame).expect("the switch emits well-formed frames");
        let (l3, l4, end) = (p.l3 as usize, p.l4 as usize, p.l3_end as usize);
        assert!(checksum::verify(&frame[l3..l4]), "IPv4 header checksum");
        assert!(l4_checksum_ok(frame, l3, l4, end, p.ip_proto), "transport checksum");
        let a = |o: usize| Ipv4Addr::new(frame[o], frame[o + 1], frame[o + 2], frame[o + 3]);
        let w = |o: usize| u16::from_be_bytes([frame[o], frame[o + 1]]);
        match p.ip_proto {
            ip_proto::ICMP => (a(l3 + 12), w(l4 + 4), a(l3 + 16), w(l4 + 4)),
            _ => (a(l3 + 12), w(l4), a(l3 + 16), w(l4 + 2)),
        }
    }

    fn l4_checksum_ok(d: &[u8], l3: usize, l4: usize, end: usize, proto: u8) -> bool {
        if proto == ip_proto::ICMP {
            return checksum::verify(&d[l4..end]);
        }
        if proto == ip_proto::UDP && d[l4 + 6..l4 + 8] == [0, 0] {
            return true;
        }
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&d[l3 + 12..l3 + 20]);
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&((end - l4) as u16).to_be_bytes());
        pseudo.extend_from_slice(&d[l4..end]);
        checksum::verify(&pseudo)
    }

    fn seg(sport: u16, dport: u16, flags: TcpFlags) -> TcpSegment {
        TcpSegment::new(sport, dport, flags)
    }

    #[track_caller]
    fn one(frames: Vec<Vec<u8>>) -> Vec<u8> {
        assert_eq!(frames.len(), 1, "exactly one frame expected");
        frames.into_iter().next().unwrap_or_default()
    }

    #[track_caller]
    fn invariants(tb: &Testbed) {
        tb.switch().router().nat().check_invariants().expect("NAT invariants");
    }

    #[test]
    fn masquerades_a_tcp_connection_both_ways_through_close() {
        let mut tb = testbed();
        let (syn, ack, fin) = (TcpFlags::SYN, TcpFlags::ACK, TcpFlags::FIN | TcpFlags::ACK);
        let out = from(&tb, C1, SERVER);
        let back = inbound(&tb, SERVER, UP_ADDR);
        tb.send("c1", &out.tcp(seg(40000, 80, syn), 0));
        let f = one(tb.take("up"));
        assert_eq!(ends(&f), (UP_ADDR, 40000, SERVER, 80), "source masqueraded, port kept");
        assert_eq!(&f[0..6], &UPSTREAM.0 .0);
        tb.send("up", &back.tcp(seg(80, 40000, syn | TcpFlags::ACK), 0));
        let f = one(tb.take("c1"));
        assert_eq!(ends(&f), (SERVER, 80, C1.1, 40000), "reply translated back to the container");
        assert_eq!(&f[0..6], &C1.0 .0);
        tb.send("c1", &out.tcp(seg(40000, 80, ack), 0));
        tb.send("c1", &out.tcp(seg(40000, 80, ack | TcpFlags::PSH), 100));
        tb.send("up", &back.tcp(seg(80, 40000, ack | TcpFlags::PSH), 1000));
        assert_eq!(tb.take("up").len(), 2);
        assert_eq!(ends(&one(tb.take("c1"))), (SERVER, 80, C1.1, 40000));
        let conns = tb.switch().connections(tb.now());
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].state, ProtoState::Tcp(TcpState::Established));
        assert_eq!(conns[0].nat, Some(NatKind::Snat));
        // Close: FIN from the server, ACK, FIN from the container, last ACK.
        tb.send("up", &back.tcp(seg(80, 40000, fin), 0));
        tb.send("c1", &out.tcp(seg(40000, 80, ack), 0));
        tb.send("c1", &out.tcp(seg(40000, 80, fin), 0));
        tb.send("up", &back.tcp(seg(80, 40000, ack), 0));
        assert_eq!(tb.take("up").len(), 2);
        assert_eq!(tb.take("c1").len(), 2);
        assert_eq!(tb.switch().connections(tb.now())[0].state, ProtoState::Tcp(TcpState::TimeWait));
        let s = tb.switch().nat_stats();
        assert_eq!((s.snat_created, s.hits_original, s.hits_reply), (1, 4, 4));
        assert_eq!(tb.switch().counters().total_drops(), 0);
        invariants(&tb);
        // A SYN from the container on the TIME_WAIT connection reopens it, with the same port.
        tb.send("c1", &out.tcp(seg(40000, 80, syn), 0));
        assert_eq!(ends(&one(tb.take("up"))), (UP_ADDR, 40000, SERVER, 80));
        assert_eq!(tb.switch().connections(tb.now())[0].state, ProtoState::Tcp(TcpState::SynSent));
        assert_eq!(tb.free_buffers(), tb.total_buffers());
    }

    #[test]
    fn masquerades_udp_and_keeps_a_zero_checksum_zero() {
        let mut tb = testbed();
        tb.send("c1", &from(&tb, C1, SERVER).udp(5000, 53, 20));
        assert_eq!(ends(&one(tb.take("up"))), (UP_ADDR, 5000, SERVER, 53));
        tb.send("up", &inbound(&tb, SERVER, UP_ADDR).udp(53, 5000, 40));
        assert_eq!(ends(&one(tb.take("c1"))), (SERVER, 53, C1.1, 5000));
        // A datagram without a checksum keeps none.
        let mut f = from(&tb, C1, SERVER).udp(5000, 53, 20);
        f[14 + 20 + 6..14 + 20 + 8].fill(0);
        tb.send("c1", &f);
        let out = one(tb.take("up"));
        assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
        assert_eq!(ends(&out), (UP_ADDR, 5000, SERVER, 53));
        let c = &tb.switch().connections(tb.now())[0];
        assert_eq!((c.proto, c.expires_in_secs), (Proto::Udp, 120), "assured after the reply");
        invariants(&tb);
    }

    #[test]
    fn masquerades_icmp_echo_and_the_port_address_still_answers_ping() {
        let mut tb = testbed();
        tb.send("c1", &from(&tb, C1, SERVER).icmp_echo_request(4000, 1, 32));
        let f = one(tb.take("up"));
        assert_eq!(ends(&f), (UP_ADDR, 4000, SERVER, 4000), "identifier kept: in the range and free");
        tb.send("up", &inbound(&tb, SERVER, UP_ADDR).icmp_echo_reply(4000, 1, 32));
        assert_eq!(ends(&one(tb.take("c1"))), (SERVER, 4000, C1.1, 4000));
        // An identifier outside the port range is remapped, and mapped back in the reply.
        tb.send("c1", &from(&tb, C1, SERVER).icmp_echo_request(77, 1, 32));
        let (_, id, _, _) = ends(&one(tb.take("up")));
        assert!(id >= 1024, "{id}");
        tb.send("up", &inbound(&tb, SERVER, UP_ADDR).icmp_echo_reply(id, 1, 32));
        assert_eq!(ends(&one(tb.take("c1"))), (SERVER, 77, C1.1, 77));
        // Ping to the port address from outside is answered by the switch, not NAT'd.
        tb.send("up", &inbound(&tb, SERVER, UP_ADDR).icmp_echo_request(77, 2, 8));
        let reply = one(tb.take("up"));
        assert_eq!(ends(&reply), (UP_ADDR, 77, SERVER, 77));
        assert!(tb.take("c1").is_empty());
        assert_eq!(tb.switch().router().stats().echo_replies, 1);
        invariants(&tb);
    }

    #[test]
    fn two_containers_with_the_same_port_to_the_same_server_get_distinct_ports() {
        let mut tb = testbed();
        tb.send("c1", &from(&tb, C1, SERVER).tcp(seg(40000, 80, TcpFlags::SYN), 0));
        tb.send("c2", &from(&tb, C2, SERVER).tcp(seg(40000, 80, TcpFlags::SYN), 0));
        let out = tb.take("up");
        assert_eq!(out.len(), 2);
        let (a, b) = (ends(&out[0]), ends(&out[1]));
        assert_eq!(a, (UP_ADDR, 40000, SERVER, 80));
        assert_eq!((b.0, b.2, b.3), (UP_ADDR, SERVER, 80));
        assert_ne!(b.1, 40000, "the second gets another port");
        // Replies reach the right container.
        tb.send("up", &inbound(&tb, SERVER, UP_ADDR).tcp(seg(80, b.1, TcpFlags::SYN | TcpFlags::ACK), 0));
        assert_eq!(ends(&one(tb.take("c2"))), (SERVER, 80, C2.1, 40000));
        assert!(tb.take("c1").is_empty());
        invariants(&tb);
    }

    #[test]
    fn port_exhaustion_drops_new_connections_counted() {
        let cfg = format!("{CONFIG}\n[nat]\nport_range = \"1024-1025\"\n");
        let mut tb = testbed_with(&cfg);
        for sport in [3000, 3001, 3002] {
            tb.send("c1", &from(&tb, C1, SERVER).udp(sport, 53, 8));
        }
        let out = tb.take("up");
        assert_eq!(out.len(), 2);
        let ports: Vec<u16> = out.iter().map(|f| ends(f).1).collect();
        assert!(ports.contains(&1024) && ports.contains(&1025), "{ports:?}");
        assert_eq!(tb.switch().counters().drops(DropReason::NatPortExhausted), 1);
        assert_eq!(tb.switch().nat_stats().port_exhausted, 1);
        // Another destination has its own ports.
        tb.send("c1", &from(&tb, C1, CLIENT).udp(3002, 53, 8));
        assert_eq!(tb.take("up").len(), 1);
        invariants(&tb);
    }

    #[test]
    fn expiry_releases_the_port() {
        let cfg = format!("{CONFIG}\n[nat]\nport_range = \"1024-1024\"\n[conntrack]\nudp_secs = 5\n");
        let mut tb = testbed_with(&cfg);
        tb.send("c1", &from(&tb, C1, SERVER).udp(3000, 53, 8));
        assert_eq!(ends(&one(tb.take("up"))).1, 1024);
        tb.send("c2", &from(&tb, C2, SERVER).udp(3000, 53, 8));
        assert!(tb.take("up").is_empty(), "the only port is in use");
        tb.advance(6 * NANOS_PER_SEC);
        assert_eq!(tb.switch().conntrack().len(), 0, "housekeeping removed the expired connection");
        assert_eq!(tb.switch().nat_stats().expired, 1);
        invariants(&tb);
        tb.send("c2", &from(&tb, C2, SERVER).udp(3000, 53, 8));
        assert_eq!(ends(&one(tb.take("up"))), (UP_ADDR, 1024, SERVER, 53), "the released port is reused");
        invariants(&tb);
    }

    #[test]
    fn table_full_drops_new_connections_but_not_existing_ones() {
        let cfg = format!("{CONFIG}\n[conntrack]\nlimit = 2\n");
        let mut tb = testbed_with(&cfg);
        for sport in [3000, 3001, 3002] {
            tb.send("c1", &from(&tb, C1, SERVER).udp(sport, 53, 8));
        }
        assert_eq!(tb.take("up").len(), 2);
        assert_eq!(tb.switch().counters().drops(DropReason::ConntrackFull), 1);
        tb.send("c1", &from(&tb, C1, SERVER).udp(3000, 53, 8));
        assert_eq!(tb.take("up").len(), 1, "an existing connection still passes");
        invariants(&tb);
    }

    #[test]
    fn published_port_is_translated_to_the_container_and_back() {
        let mut tb = testbed();
        let client = inbound(&tb, CLIENT, UP_ADDR);
        tb.send("up", &client.tcp(seg(50000, 8080, TcpFlags::SYN), 0));
        let f = one(tb.take("c1"));
        assert_eq!(ends(&f), (CLIENT, 50000, C1.1, 80));
        assert_eq!(&f[0..6], &C1.0 .0);
        tb.send("c1", &from(&tb, C1, CLIENT).tcp(seg(80, 50000, TcpFlags::SYN | TcpFlags::ACK), 0));
        let f = one(tb.take("up"));
        assert_eq!(ends(&f), (UP_ADDR, 8080, CLIENT, 50000), "the reply comes from the published port");
        // UDP too.
        tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).udp(6000, 5353, 10));
        assert_eq!(ends(&one(tb.take("c1"))), (CLIENT, 6000, C1.1, 53));
        tb.send("c1", &from(&tb, C1, CLIENT).udp(53, 6000, 10));
        assert_eq!(ends(&one(tb.take("up"))), (UP_ADDR, 5353, CLIENT, 6000));
        // An unpublished port is the switch's own: refused as before.
        tb.send("up", &client.tcp(seg(50000, 8081, TcpFlags::SYN), 0));
        assert!(tb.take_all().is_empty());
        assert_eq!(tb.switch().counters().drops(DropReason::LocalUnsupported), 1);
        let s = tb.switch().nat_stats();
        assert_eq!(s.dnat_created, 2);
        invariants(&tb);
    }

    #[test]
    fn published_port_reached_from_another_network_keeps_the_client_address() {
        let mut tb = testbed();
        let blue_gw = rif_mac(&tb, "network:blue");
        let b = Ipv4Spec::new(B1.0, blue_gw, B1.1, UP_ADDR);
        tb.send("b1", &b.tcp(seg(41000, 8080, TcpFlags::SYN), 0));
        assert_eq!(ends(&one(tb.take("c1"))), (B1.1, 41000, C1.1, 80));
        tb.send("c1", &from(&tb, C1, B1.1).tcp(seg(80, 41000, TcpFlags::SYN | TcpFlags::ACK), 0));
        assert_eq!(ends(&one(tb.take("b1"))), (UP_ADDR, 8080, B1.1, 41000));
        invariants(&tb);
    }

    #[test]
    fn hairpin_translates_both_ends_through_the_gateway_address() {
        let mut tb = testbed();
        // C2 reaches C1's published port through the uplink's address.
        tb.send("c2", &from(&tb, C2, UP_ADDR).tcp(seg(42000, 8080, TcpFlags::SYN), 0));
        let f = one(tb.take("c1"));
        assert_eq!(ends(&f), (GW, 42000, C1.1, 80), "source is the gateway, so C1 answers through the switch");
        tb.send("c1", &from(&tb, C1, GW).tcp(seg(80, 42000, TcpFlags::SYN | TcpFlags::ACK), 0));
        let f = one(tb.take("c2"));
        assert_eq!(ends(&f), (UP_ADDR, 8080, C2.1, 42000), "C2 sees the published address answering");
        assert_eq!(tb.switch().nat_stats().hairpin_created, 1);
        assert_eq!(tb.switch().connections(tb.now())[0].nat, Some(NatKind::Hairpin));
        invariants(&tb);
        // Ping to the gateway still works with NAT configured.
        tb.send("c1", &from(&tb, C1, GW).icmp_echo_request(5, 1, 8));
        assert_eq!(ends(&one(tb.take("c1"))), (GW, 5, C1.1, 5));
    }

    #[test]
    fn a_published_or_hairpin_packet_the_router_drops_opens_no_connection() {
        let mut tb = testbed();
        let ttl1 = Ipv4Opts { ttl: 1, ..Ipv4Opts::default() };
        // From outside with TTL 1: Time Exceeded back to the client, nothing tracked.
        let client = inbound(&tb, CLIENT, UP_ADDR).with_opts(ttl1);
        tb.send("up", &client.tcp(seg(50000, 8080, TcpFlags::SYN), 0));
        assert!(tb.take("c1").is_empty());
        assert_eq!(one(tb.take("up")).len(), 70, "Time Exceeded quoting the SYN");
        // Hairpin with TTL 1: no entry, and no port held on the gateway's address.
        tb.send("c2", &from(&tb, C2, UP_ADDR).with_opts(ttl1).tcp(seg(42000, 8080, TcpFlags::SYN), 0));
        assert!(tb.take("c1").is_empty());
        tb.take_all();
        assert_eq!(tb.switch().counters().drops(DropReason::TtlExpired), 2);
        let s = tb.switch().nat_stats();
        assert_eq!((s.dnat_created, s.hairpin_created), (0, 0));
        assert!(tb.switch().connections(tb.now()).is_empty());
        invariants(&tb);
        // The same SYNs with a normal TTL open their connections.
        tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).tcp(seg(50000, 8080, TcpFlags::SYN), 0));
        assert_eq!(ends(&one(tb.take("c1"))), (CLIENT, 50000, C1.1, 80));
        tb.send("c2", &from(&tb, C2, UP_ADDR).tcp(seg(42000, 8080, TcpFlags::SYN), 0));
        assert_eq!(ends(&one(tb.take("c1"))), (GW, 42000, C1.1, 80), "the gateway port 42000 was still free");
        invariants(&tb);
    }

    /// The IPv4 packet inside a frame (from the IP header to its end).
    fn ip_packet(frame: &[u8]) -> Vec<u8> {
        let p = parse(frame).unwrap();
        frame[p.l3 as usize..p.l3_end as usize].to_vec()
    }

    #[test]
    fn icmp_errors_about_masqueraded_packets_are_translated_back() {
        let mut tb = testbed();
        let opts = Ipv4Opts { df: true, ..Ipv4Opts::default() };
        tb.send("c1", &from(&tb, C1, SERVER).with_opts(opts).udp(5000, 53, 1000));
        let sent = one(tb.take("up"));
        // A router beyond the uplink says the packet is too big (Fragmentation Needed, MTU 576), quoting the
        // IP header and 8 bytes of the packet as it saw it.
        let quoted = &ip_packet(&sent)[..28];
        let router = Ipv4Addr::new(198, 51, 100, 254);
        let kind = Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 576,
        });
        tb.send("up", &inbound(&tb, router, UP_ADDR).icmp(kind.clone(), quoted));
        let f = one(tb.take("c1"));
        let p = parse(&f).unwrap();
        let (l3, l4, end) = (p.l3 as usize, p.l4 as usize, p.l3_end as usize);
        assert!(checksum::verify(&f[l3..l4]), "outer IPv4 checksum");
        assert!(checksum::verify(&f[l4..end]), "ICMP checksum");
        assert_eq!(&f[l3 + 12..l3 + 16], &router.octets(), "from the router that sent it");
        assert_eq!(&f[l3 + 16..l3 + 20], &C1.1.octets(), "to the container");
        assert_eq!(u16::from_be_bytes([f[l4 + 6], f[l4 + 7]]), 576, "the MTU is kept");
        let inner = l4 + 8;
        assert!(checksum::verify(&f[inner..inner + 20]), "quoted IPv4 checksum");
        assert_eq!(&f[inner + 12..inner + 16], &C1.1.octets(), "quoted source is the container again");
        assert_eq!(&f[inner + 16..inner + 20], &SERVER.octets());
        assert_eq!(u16::from_be_bytes([f[inner + 20], f[inner + 21]]), 5000);
        // The quoted UDP checksum was updated as the original one was: equal to the container's packet's.
        let orig = from(&tb, C1, SERVER).with_opts(opts).udp(5000, 53, 1000);
        assert_eq!(&f[inner + 26..inner + 28], &orig[14 + 26..14 + 28]);
        assert_eq!(tb.switch().nat_stats().icmp_errors_translated, 1);
        // An error quoting something not tracked goes to the switch (and is not answered).
        let mut other = quoted.to_vec();
        other[20] ^= 0x55; // another source port
        tb.send("up", &inbound(&tb, router, UP_ADDR).icmp(kind.clone(), &other));
        assert!(tb.take_all().is_empty());
        assert_eq!(tb.switch().nat_stats().no_translation, 1);
        // Quoted garbage is harmless too.
        tb.send("up", &inbound(&tb, router, UP_ADDR).icmp(kind.clone(), &[0x45; 5]));
        assert!(tb.take_all().is_empty());
        invariants(&tb);
    }

    #[test]
    fn icmp_errors_about_published_replies_reach_the_container() {
        let mut tb = testbed();
        tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).udp(6000, 5353, 10));
        tb.take_all();
        tb.send("c1", &from(&tb, C1, CLIENT).udp(53, 6000, 10));
        let sent = one(tb.take("up"));
        // The client's host says port unreachable, about the reply it got from the published port.
        let kind = Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port);
        tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).icmp(kind.clone(), &ip_packet(&sent)[..28]));
        let f = one(tb.take("c1"));
        let p = parse(&f).unwrap();
        let (l4, inner) = (p.l4 as usize, p.l4 as usize + 8);
        assert!(checksum::verify(&f[l4..p.l3_end as usize]));
        assert_eq!(&f[p.l3 as usize + 16..p.l3 as usize + 20], &C1.1.octets());
        assert_eq!(&f[inner + 12..inner + 16], &C1.1.octets());
        assert_eq!(u16::from_be_bytes([f[inner + 20], f[inner + 21]]), 53);
        // And the container's own port-unreachable about a published request leaves from the published address.
        tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).udp(6001, 5353, 10));
        let req = one(tb.take("c1"));
        tb.send("c1", &from(&tb, C1, CLIENT).icmp(kind.clone(), &ip_packet(&req)[..28]));
        let f = one(tb.take("up"));
        let p = parse(&f).unwrap();
        let (l3, inner) = (p.l3 as usize, p.l4 as usize + 8);
        assert!(checksum::verify(&f[p.l4 as usize..p.l3_end as usize]));
        assert_eq!(&f[l3 + 12..l3 + 16], &UP_ADDR.octets(), "the error comes from the published address");
        assert_eq!(&f[inner + 16..inner + 20], &UP_ADDR.octets(), "about a packet sent to it");
        assert_eq!(u16::from_be_bytes([f[inner + 22], f[inner + 23]]), 5353);
        assert_eq!(tb.switch().nat_stats().icmp_errors_translated, 2);
    }

    #[test]
    fn an_inside_host_cannot_launder_its_address_through_an_icmp_error() {
        let mut tb = testbed();
        tb.send("c1", &from(&tb, C1, SERVER).udp(5000, 53, 10));
        let sent = one(tb.take("up"));
        // C2 sends an error about a packet it never received (the one the switch sent for C1): translating the
        // quote would leave C2's own address as the outer source, so it is not translated, and dropped.
        let kind = Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port);
        tb.send("c2", &from(&tb, C2, SERVER).icmp(kind, &ip_packet(&sent)[..28]));
        assert!(tb.take("up").is_empty());
        assert_eq!(tb.switch().counters().drops(DropReason::NatUnsupported), 1);
        assert_eq!(tb.switch().nat_stats().icmp_errors_translated, 0);
    }

    #[test]
    fn invalid_tcp_is_dropped_not_translated() {
        let mut tb = testbed();
        // A SYN-ACK to a published port opens nothing.
        tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).tcp(seg(50000, 8080, TcpFlags::SYN | TcpFlags::ACK), 0));
        // A SYN-ACK from a container with no connection does not leave masqueraded.
        tb.send("c1", &from(&tb, C1, SERVER).tcp(seg(40000, 80, TcpFlags::SYN | TcpFlags::ACK), 0));
        // A SYN-ACK from outside to the port address with no connection and no rule is the switch's.
        tb.send("up", &inbound(&tb, SERVER, UP_ADDR).tcp(seg(80, 40000, TcpFlags::SYN | TcpFlags::ACK), 0));
        assert!(tb.take_all().is_empty());
        let c = tb.switch().counters();
        assert_eq!(c.drops(DropReason::ConntrackInvalid), 2);
        assert_eq!(c.drops(DropReason::LocalUnsupported), 1);
        assert_eq!(tb.switch().conntrack().len(), 0);
        // On an established connection, a SYN from the server side is invalid.
        tb.send("c1", &from(&tb, C1, SERVER).tcp(seg(40000, 80, TcpFlags::SYN), 0));
        tb.send("up", &inbound(&tb, SERVER, UP_ADDR).tcp(seg(80, 40000, TcpFlags::SYN | TcpFlags::ACK), 0));
        tb.send("c1", &from(&tb, C1, SERVER).tcp(seg(40000, 80, TcpFlags::ACK), 0));
        assert_eq!((tb.take("up").len(), tb.take("c1").len()), (2, 1));
        tb.send("up", &inbound(&tb, SERVER, UP_ADDR).tcp(seg(80, 40000, TcpFlags::SYN), 0));
        assert!(tb.take("c1").is_empty());
        assert_eq!(tb.switch().counters().drops(DropReason::ConntrackInvalid), 3);
        invariants(&tb);
    }

    #[test]
    fn later_fragments_and_untrackable_protocols_are_not_leaked() {
        let mut tb = testbed();
        let mut frag = from(&tb, C1, SERVER).udp(5000, 53, 40);
        // Fragment offset 8 (64 bytes): a later fragment; fix the header checksum.
        frag[14 + 6..14 + 8].copy_from_slice(&8u16.to_be_bytes());
        frag[14 + 10..14 + 12].fill(0);
        let c = checksum::checksum(&frag[14..34]);
        frag[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
        tb.send("c1", &frag);
        let mut gre = from(&tb, C1, SERVER).udp(5000, 53, 40);
        gre[14 + 9] = 47;
        gre[14 + 10..14 + 12].fill(0);
        let c = checksum::checksum(&gre[14..34]);
        gre[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
        tb.send("c1", &gre);
        assert!(tb.take_all().is_empty());
        let c = tb.switch().counters();
        assert_eq!(c.drops(DropReason::NatFragment), 1);
        assert_eq!(c.drops(DropReason::NatUnsupported), 1);
    }

    #[test]
    fn traffic_between_networks_without_nat_is_not_tracked() {
        let mut tb = testbed();
        let blue_gw = rif_mac(&tb, "network:blue");
        tb.send("b1", &Ipv4Spec::new(B1.0, blue_gw, B1.1, C2.1).udp(7000, 7001, 8));
        assert_eq!(ends(&one(tb.take("c2"))), (B1.1, 7000, C2.1, 7001));
        tb.send("c2", &from(&tb, C2, B1.1).udp(7001, 7000, 8));
        assert_eq!(ends(&one(tb.take("b1"))), (C2.1, 7001, B1.1, 7000), "from a masquerade network, not translated");
        assert_eq!(tb.switch().conntrack().len(), 0);
    }
}
