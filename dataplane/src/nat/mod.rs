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
//! - **Limits**: a new connection is refused when the table is full of connections that have all seen
//!   replies (`conntrack-full`; unreplied ones are evicted first, see [`crate::conntrack`]), its network holds
//!   its `conntrack_limit` (`conntrack-network-limit`; masqueraded and hairpin connections count against the
//!   client's network, published ones against the target's), the port range is exhausted towards the
//!   destination (`nat-port-exhausted`) or its translated tuple is already tracked (`nat-clash`).
//! - **Anti-spoofing**: a new connection from a masquerade network whose source is outside the network's
//!   subnet is dropped (`spoofed-source`), never masqueraded. Masquerade may give a connection a published port
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

mod icmp_error;
pub mod ports;
mod rewrite;
/// `proto src:port -> dst:port` (for traces).
fn show(t: &Tuple) -> String {
    format!("{:?} {}:{} -> {}:{}", t.proto, t.src, t.sport, t.dst, t.dport)
}

#[cfg(test)]
mod tests;

use crate::buffer::{Nanos, NANOS_PER_SEC};
use crate::config::PublishProto;
use crate::conntrack::{
    Conntrack, ConntrackStats, Direction, Entry, EntryId, InsertError, NatBinding, NatKind, Probe, Proto, ProtoState,
    TcpFlags, Tuple,
};
use crate::counters::DropReason;
use crate::neigh::RifId;
use crate::packet::{ip_proto, Parsed};
use crate::topology::Topology;
use crate::wire::tcp;
use icmp_error::is_icmp_error;
use ports::{NatProto, PortAllocator, SnatStats};
pub use rewrite::apply;
use rewrite::packet_tuple;
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
    /// New connections dropped because their network held its `conntrack_limit`.
    pub network_limit: u64,
    /// Packets from a masquerade network with a source outside its subnet, dropped (`spoofed-source`).
    pub spoofed: u64,
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
    group: Option<RifId>,
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
#[derive(Debug, Clone)]
pub struct Nat {
    /// Any masquerade network or publish rule: otherwise every method is a no-op.
    enabled: bool,
    ct: Conntrack,
    /// One per router interface: the ports in use on its address.
    allocators: Vec<PortAllocator>,
    /// `(rif, proto, external port)` → `(address, port, the target network's interface)`, see
    /// [`publish_key`].
    publish: FxHashMap<u32, (Ipv4Addr, u16, Option<RifId>)>,
    /// Per router interface, by [`RifId`].
    roles: Vec<RifRole>,
    stats: NatStats,
}

/// What the NAT stage needs to know of one router interface, kept together: a routed packet reads it for the
/// interface it came in on and the one it leaves by.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(8))]
struct RifRole {
    /// A network that masquerades or holds a publish target.
    inside: bool,
    /// A masquerade network.
    masquerade: bool,
    /// Its address if it is a routed port that is not a host port: where masquerade translates to (packets
    /// leaving through it leave the switch's networks).
    snat_to: Option<Ipv4Addr>,
}

fn publish_key(rif: RifId, proto: Proto, port: u16) -> u32 {
    (u32::from(rif) << 24) | (u32::from(proto as u8) << 16) | u32::from(port)
}

/// The ICMP echo identifier of a tuple (one of the two ports is it, the other is 0).
#[inline]
fn echo_id(t: &Tuple) -> u16 {
    t.sport | t.dport
}

/// A packet's flow as the router's batch lookup saw it ([`Nat::prefetch`]): its tuple, already hashed for the
/// connection table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    tuple: Tuple,
    probe: Probe,
}

impl Nat {
    /// The stage for `topo`: its publish rules, masquerade flags, port range and table size.
    pub fn new(topo: &Topology) -> Self {
        Nat::with_reserve(topo, topo.conntrack.limit.min(1 << 16))
    }

    /// A copy for tracing one frame `d` (`vswitchctl trace`, `Switch::scratch`): this stage's configuration for
    /// `topo` with only the connections the frame belongs to (its own, and the one an ICMP error quotes), so the
    /// trace shows conntrack's real verdict at a cost that does not grow with the table (it is made under the
    /// switch lock). Not reproduced: which NAT port a new connection would get, and eviction from a full table.
    pub fn copy_for_trace(&self, topo: &Topology, now: Nanos, d: &[u8]) -> Nat {
        let mut copy = Nat::with_reserve(topo, 0);
        let Ok(p) = crate::packet::parse(d) else { return copy };
        let own = packet_tuple(d, &p);
        let quoted = if is_icmp_error(d, &p) { icmp_error::quoted_tuple(d, &p).map(|t| t.inverse()) } else { None };
        for t in own.into_iter().chain(quoted) {
            if let Some(e) = self.ct.lookup(&t, now).and_then(|(id, _)| self.ct.get(id)) {
                if copy.ct.lookup(&e.orig, now).is_none() {
                    copy.restore(e, now);
                }
            }
        }
        copy
    }

    /// [`Nat::new`] with room for `reserve` connections before the table grows.
    fn with_reserve(topo: &Topology, reserve: usize) -> Self {
        let mut roles: Vec<RifRole> = topo
            .rifs
            .iter()
            .map(|r| RifRole {
                inside: r.masquerade,
                masquerade: r.masquerade,
                snat_to: (r.routed_port && !r.host).then_some(r.addr),
            })
            .collect();
        let mut publish = FxHashMap::default();
        for rule in &topo.publish {
            let proto = match rule.proto {
                PublishProto::Tcp => Proto::Tcp,
                PublishProto::Udp => Proto::Udp,
            };
            let target = topo.rifs.iter().position(|r| !r.routed_port && r.subnet.contains(&rule.to_addr));
            let key = publish_key(rule.rif, proto, rule.external_port);
            publish.insert(key, (rule.to_addr, rule.to_port, target.map(crate::ids::table_id)));
            if let Some(i) = target {
                roles[i].inside = true;
            }
        }
        let enabled = !publish.is_empty() || topo.rifs.iter().any(|r| r.masquerade);
        // Without NAT nothing is tracked: reserve nothing (the default table reserves several MB).
        let mut ct = Conntrack::with_reserve(topo.conntrack, if enabled { reserve } else { 0 });
        ct.set_group_limits(&topo.rifs.iter().map(|r| r.conntrack_limit).collect::<Vec<_>>());
        Nat {
            enabled,
            ct,
            allocators: topo.rifs.iter().map(|r| PortAllocator::new(r.addr, topo.nat_port_range)).collect(),
            publish,
            roles,
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
        let mut flow = None;
        self.prefetch_into(d, p, &mut flow);
        flow
    }

    /// [`Nat::prefetch`] into `flow`, which is left as it is (`None` in a fresh batch) when there is no flow. The
    /// router's batch pass uses this form: an `Option<Flow>` returned through the stack and copied on was
    /// reloaded whole right after being stored in parts, a load the CPU cannot forward (a stall of about a twelfth
    /// of the routed 64-byte path, criterion `router`).
    #[inline(always)]
    pub fn prefetch_into(&self, d: &[u8], p: &Parsed, flow: &mut Option<Flow>) {
        if !self.enabled {
            return;
        }
        if let Some(tuple) = packet_tuple(d, p) {
            *flow = Some(Flow { tuple, probe: self.ct.probe(&tuple) });
        }
    }

    /// Starts loading the connection entry a flow's index line points to (after [`Nat::prefetch`]), given the
    /// interface the packet came in on and the one its route leads out of. When the line holds nothing for the
    /// flow and it would be masqueraded, it is probably new: then the index line its reply tuple will be
    /// inserted into starts loading instead (predicted with the source port kept, the usual case).
    #[inline]
    pub fn prefetch_entry(&self, f: &mut Flow, in_rif: RifId, out_rif: Option<RifId>) {
        if self.ct.prefetch_entry(&mut f.probe) || !self.role(in_rif).masquerade {
            return;
        }
        if let Some(addr) = out_rif.and_then(|r| self.role(r).snat_to) {
            self.ct.prefetch_tuple(&Tuple { src: addr, ..f.tuple }.inverse());
        }
    }

    /// True when the entry the flow's index line points to (after [`Nat::prefetch_entry`]) is this packet's
    /// connection, live or not: with sharded workers, a connection is only ever in its owner's table, so the
    /// shard holding it owns the packet (`crate::pipeline::Owners::owner` need not be asked).
    #[inline]
    pub fn holds(&self, f: &Flow) -> bool {
        self.ct.peek(&f.tuple, &f.probe).is_some()
    }

    /// Where a tracked connection's packet (its `flow`, after [`Nat::prefetch_entry`]) will be sent once
    /// translated, when translation changes its destination (a reply un-NATed back to a masqueraded container,
    /// a packet to a published port): a hint for prefetching the route, neighbour and MAC-table lines it will
    /// need ([`crate::router::Router::lookup_batch`]). `None` when not known without a full lookup, or unchanged.
    #[inline]
    pub fn translated_dst(&self, f: &Flow) -> Option<Ipv4Addr> {
        let (e, dir) = self.ct.peek(&f.tuple, &f.probe)?;
        let to = e.tuple(dir.opposite()).src;
        (to != f.tuple.dst).then_some(to)
    }

    /// The packet's tuple and the connection it belongs to, from the batch's `flow` when given (it must be
    /// [`Nat::prefetch`] of this very packet, unchanged since), else computed; `None`: no tuple.
    ///
    /// The tuple is lent, from the flow or else from `scratch` (where it is read from the packet), not returned
    /// by value: a copy made here was spilled to the stack field by field and copied again (about 30
    /// instructions per packet, callgrind).
    #[inline(always)]
    fn track<'t>(
        &self,
        now: Nanos,
        d: &[u8],
        p: &Parsed,
        flow: Option<&'t Flow>,
        scratch: &'t mut Option<Tuple>,
    ) -> Option<(&'t Tuple, Option<(EntryId, Direction)>)> {
        match flow {
            Some(f) => Some((&f.tuple, self.ct.lookup_probe(&f.tuple, f.probe, now))),
            None => {
                let t = &*scratch.insert(packet_tuple(d, p)?);
                Some((t, self.ct.lookup(t, now)))
            }
        }
    }

    /// True when the packet belongs to a tracked connection (either direction) or is an ICMP error quoting a
    /// packet of one: what lifts the isolation policy's refusals ([`crate::isolation`]). Off the fast path:
    /// the router asks only about packets the policy refused.
    #[inline(never)]
    pub fn tracks(&self, now: Nanos, d: &[u8], p: &Parsed, flow: Option<&Flow>) -> bool {
        if !self.enabled || p.later_fragment {
            return false;
        }
        match self.track(now, d, p, flow, &mut None) {
            Some((_, found)) => found.is_some(),
            None => is_icmp_error(d, p) && self.quotes_tracked(now, d, p),
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
        let mut scratch = None;
        let Some((&t, found)) = self.track(now, d, p, flow, &mut scratch) else {
            if is_icmp_error(d, p) {
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
            return match self.hit(now, d, p, &t, found) {
                Ok((from, back)) => Inbound::Translate(Rewrite { from: *from, to: back.inverse() }),
                Err(reason) => Inbound::Drop(reason),
            };
        }
        let Some(&(to_addr, to_port, target)) = self.publish.get(&publish_key(local_rif, t.proto, t.dport)) else {
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
                group: Some(in_rif),
            });
        }
        Inbound::Open(NewConnection {
            orig: t,
            translated: dnat,
            state,
            kind: NatKind::Dnat,
            alloc: None,
            group: target,
        })
    }

    /// Creates the connection [`Nat::inbound`] decided on (its packet passed the forwarding checks) and returns
    /// the first packet's rewrite; a full table, exhausted ports or a clash is the packet's drop reason.
    #[inline]
    pub fn open(&mut self, now: Nanos, c: NewConnection) -> Result<Rewrite, DropReason> {
        self.create(now, c.orig, c.translated, c.state, c.kind, (c.alloc, c.group))
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
        if !self.enabled {
            return Ok(());
        }
        let (from, to) = (self.role(in_rif), self.role(out_rif));
        if !from.inside {
            return Ok(());
        }
        // Towards a host port nothing is masqueraded: the host sees its containers' own addresses.
        let leaves = to.snat_to.is_some();
        if p.later_fragment {
            if leaves {
                self.stats.fragments_dropped += 1;
                return Err(DropReason::NatFragment);
            }
            return Ok(());
        }
        // Where a new connection of this packet would be masqueraded to (`None`: it would not be).
        let masquerade = to.snat_to.filter(|_| from.masquerade);
        let mut scratch = None;
        let Some((t, found)) = self.track(now, d, p, flow, &mut scratch) else {
            if is_icmp_error(d, p) && self.translate_error(now, d, p, ErrorFrom::Inside)? {
                return Ok(());
            }
            if masquerade.is_some() {
                self.stats.unsupported += 1;
                return Err(DropReason::NatUnsupported);
            }
            return Ok(());
        };
        if let Some(found) = found {
            let (from, back) = self.hit(now, d, p, t, found)?;
            rewrite::apply_tuples(d, p, from, &back.inverse());
            return Ok(());
        }
        let Some(snat_to) = masquerade else {
            return Ok(());
        };
        if !topo.rifs[in_rif as usize].subnet.contains(&t.src) {
            // Anti-spoofing: masquerade would hide the forged source and send the replies to this network.
            self.stats.spoofed += 1;
            return Err(DropReason::SpoofedSource);
        }
        let Some(state) = self.ct.new_state(t.proto, flags(d, p)) else {
            self.stats.invalid += 1;
            return Err(DropReason::ConntrackInvalid);
        };
        let translated = Tuple { src: snat_to, ..*t };
        let rw = self.create(now, *t, translated, state, NatKind::Snat, (Some(out_rif), Some(in_rif)))?;
        apply(d, p, &rw);
        Ok(())
    }

    /// What interface `rif` is to the NAT stage (nothing, for an id out of range).
    #[inline(always)]
    fn role(&self, rif: RifId) -> RifRole {
        self.roles.get(usize::from(rif)).copied().unwrap_or_default()
    }

    /// A packet of a tracked connection: runs the state machine, returns its translation as the entry's tuples
    /// `(from, back)`: the packet's tuple, and the other direction's, whose inverse the packet becomes (lent from
    /// the entry, so the outbound path writes them into the packet without copying them first).
    #[inline(always)]
    fn hit(
        &mut self,
        now: Nanos,
        d: &[u8],
        p: &Parsed,
        t: &Tuple,
        (id, dir): (EntryId, Direction),
    ) -> Result<(&Tuple, &Tuple), DropReason> {
        let Some(e) = self.ct.update_entry(id, dir, flags(d, p), now) else {
            self.stats.invalid += 1;
            return Err(DropReason::ConntrackInvalid);
        };
        // `from` is the entry's copy of `t` (the lookup matched them): copied from the entry's line, not from
        // `t`'s fields as they were spilled to the stack one by one (copying those as words waited on the
        // narrower stores, ~3 % of the NAT bench's time, perf).
        let (from, back) = match dir {
            Direction::Original => {
                self.stats.hits_original += 1;
                (&e.orig, &e.reply)
            }
            Direction::Reply => {
                self.stats.hits_reply += 1;
                (&e.reply, &e.orig)
            }
        };
        debug_assert_eq!(from, t, "a connection's entry holds the tuple it was found by");
        Ok((from, back))
    }

    /// Creates a connection whose first packet `orig` becomes `translated` (its source port/identifier
    /// allocated from allocator `alloc` when given, counted against the limit of network interface `group`),
    /// and returns the first packet's rewrite.
    fn create(
        &mut self,
        now: Nanos,
        orig: Tuple,
        mut translated: Tuple,
        state: ProtoState,
        kind: NatKind,
        (alloc, group): (Option<RifId>, Option<RifId>),
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
        let binding = NatBinding { kind, allocator: alloc, group };
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
                    InsertError::GroupFull => {
                        self.stats.network_limit += 1;
                        DropReason::ConntrackNetworkLimit
                    }
                    InsertError::Clash(_) | InsertError::BadTuples => {
                        self.stats.clash += 1;
                        DropReason::NatClash
                    }
                })
            }
        }
    }

    /// Removes the connections expired at `now` and releases their ports; returns how many. Call from
    /// housekeeping, off the hot path.
    pub fn expire(&mut self, now: Nanos) -> usize {
        let allocators = &mut self.allocators;
        let n = self.ct.expire_with(now, |e| release(allocators, &e));
        self.stats.expired += n as u64;
        n
    }

    /// Tracks a connection carried over from a snapshot (`crate::snapshot`, see [`Conntrack::restore`]) and
    /// claims its allocated port again. False (nothing changed) if the table refuses it or the port is taken.
    pub fn restore(&mut self, e: &Entry, now: Nanos) -> bool {
        if let Some(a) = e.nat.and_then(|n| n.allocator) {
            let Some(allocator) = self.allocators.get_mut(usize::from(a)) else { return false };
            if !allocator.claim(NatProto::from(e.reply.proto), (e.reply.src, e.reply.sport), e.reply.dport) {
                return false;
            }
        }
        match self.ct.restore(e, now) {
            Ok(_) => true,
            Err(_) => {
                release(&mut self.allocators, e);
                false
            }
        }
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

    /// A trace note: conntrack's view of a packet whose tuple (as it arrived) is `flow`'s, after the stage ran
    /// on it at `now`.
    pub fn explain(&self, flow: Option<&Flow>, now: Nanos) -> String {
        if !self.enabled {
            return "off (no masquerade network or publish rule)".to_string();
        }
        let Some(f) = flow else { return "untracked (not TCP, UDP or ICMP echo, or a later fragment)".to_string() };
        let Some((id, dir)) = self.ct.lookup(&f.tuple, now) else {
            return format!(
                "{} not tracked (neither from a masquerade network nor to a published port)",
                show(&f.tuple)
            );
        };
        let Some(e) = self.ct.get(id) else { return "tracked entry vanished".to_string() };
        let to = e.tuple(dir.opposite()).inverse();
        let dir = match dir {
            Direction::Original => "original",
            Direction::Reply => "reply",
        };
        let nat = e.nat.map_or("not translated".to_string(), |b| {
            format!("{:?}: {} becomes {}", b.kind, show(&f.tuple), show(&to))
        });
        format!("{dir} direction of a tracked connection, state {:?}; {nat}", e.state)
    }

    /// A flow's tuple in words (for traces).
    pub fn describe_flow(&self, flow: Option<&Flow>) -> String {
        flow.map_or("an untracked flow".to_string(), |f| show(&f.tuple))
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
        let mut v: Vec<ConnectionInfo> = self.ct.entries(now).map(|(_, e)| connection_info(e, now)).collect();
        v.sort_by_key(|c| c.orig);
        v
    }

    /// The live connections at `now` in slots `from..from + len` of the table (unsorted), and the slot to
    /// continue from: for listing a large table in chunks, each under a short hold of the switch lock.
    pub fn connections_chunk(&self, now: Nanos, from: usize, len: usize) -> (Vec<ConnectionInfo>, Option<usize>) {
        let (it, next) = self.ct.entries_chunk(now, from, len);
        (it.map(|(_, e)| connection_info(e, now)).collect(), next)
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

fn connection_info(e: &Entry, now: Nanos) -> ConnectionInfo {
    ConnectionInfo {
        proto: e.orig.proto,
        state: e.state,
        orig: e.orig,
        reply: e.reply,
        nat: e.nat.map(|n| n.kind),
        expires_in_secs: e.expires.saturating_sub(now) / NANOS_PER_SEC,
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
#[inline(always)]
fn flags(d: &[u8], p: &Parsed) -> TcpFlags {
    if p.ip_proto != ip_proto::TCP || p.l4 == 0 {
        return TcpFlags::NONE;
    }
    tcp::Header::at(d, p.l4 as usize).map_or(TcpFlags::NONE, |t| TcpFlags(t.flags()))
}

fn flow_hash(t: &Tuple) -> u64 {
    let mut h = FxHasher::default();
    t.hash(&mut h);
    h.finish()
}
