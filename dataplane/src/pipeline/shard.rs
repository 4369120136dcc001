//! Several workers, one switch each: what a worker's [`Switch`](super::Switch) tells the others, and which
//! worker owns a routed frame's connection.
//!
//! With `N` workers, `vswitchd run` gives every worker a switch of its own (a *shard*, [`Shard`]) and no lock is
//! shared on the forwarding path. The shards hold the same configuration and converge on the same learned
//! state, except connections, which are partitioned:
//! - **MAC tables** are replicated. A shard that learns a new address, sees one move, or keeps seeing one it last
//!   announced a quarter of the ageing time ago ([`crate::fdb::Learned::Renewed`]) queues an [`Update::Mac`];
//!   the driver hands it to every other shard, which applies it at its next batch boundary
//!   ([`super::Switch::apply_update`]) unless its own entry was seen later (so crossing updates settle on the
//!   latest sighting). Until then a shard that has not heard of a MAC floods to it, which a bridge may always
//!   do. Lookups touch only the worker's own table: no lock, no shared cache line.
//! - **Neighbours** are replicated the same way ([`Update::Neigh`] with a [`NeighNote`]). The shard that first
//!   holds a frame for an unresolved address resolves it (requests, retries, timeout) and says so (`Pending`);
//!   the others hold their frames for it without asking again. The answer (`Confirmed`, whichever shard ARP
//!   reached) releases the frames every shard holds, so a frame waiting for ARP is never lost because another
//!   worker received the reply; a failure (`Failed`) answers them Host Unreachable; a probe of a stale entry
//!   (`Probed`) keeps the others from probing it again.
//! - **Connections and NAT bindings** are partitioned: a connection lives on one shard, its *owner*, computed
//!   by [`Owners::owner`] from addresses both directions of the connection share, before and after translation
//!   (below). A routed frame received by another shard is handed to the owner ([`Handoff`]) before the router
//!   touches it; the owner runs it through the pipeline again ([`super::Switch::process_handed`]) without
//!   counting it as received twice. Port allocation needs no partitioning: masquerade ports are unique per
//!   destination (endpoint-dependent, see `crate::nat::ports`), and every connection to one remote address has
//!   the same owner.
//! - **Counters** are per shard and summed on read.
//!
//! # The owner of a routed IPv4 frame
//! Each endpoint address is classified: *own* (an address of a router interface: a gateway's or a routed
//! port's), *target* (the `to` address of a publish rule), *inside* (in the subnet of a network with a
//! gateway), or *remote* (anything else: beyond a routed port). Then:
//! - exactly one remote endpoint: the owner is a hash of it (`remote % N`): masquerade out (inside → remote) and
//!   its replies (remote → own), a published port reached from outside (remote → own) and its replies
//!   (target → remote) all name the same remote address;
//! - one inside endpoint that is not a target, the other own or a target: a hash of the inside one (a publish
//!   rule reached from another network: client → own, and the reply target → client, and the translated reply
//!   as the client received it, routed port's address → client, which its ICMP errors quote) — except a
//!   hairpin (the client in the published target's own network, whose reply comes back to the gateway's
//!   address, naming no client): shard 0;
//! - no remote or non-target inside endpoint (hairpin replies, a target reaching another target's published
//!   port, pings to the switch from inside): shard 0;
//! - otherwise (both remote, or both inside non-targets): no connection can be tracked, the receiving shard
//!   routes it.
//!
//! ICMP errors are classified by the packet they quote (its addresses and ports are a direction of the
//! connection as it was on the wire, translated), and
//! a configuration without masquerade networks or publish rules hands nothing over. With one shard nothing is
//! ever handed over or announced, so replay and tests see exactly the single-switch pipeline.
//!
//! Threads: pure data and functions; each shard's queues are drained by its own worker.

use crate::buffer::Frame;
use crate::config::PublishProto;
use crate::ids::{Nanos, NetId, PortId};
use crate::neigh::NeighNote;
use crate::packet::{ip_proto, Parsed};
use crate::route::Ipv4Net;
use crate::topology::Topology;
use crate::wire::{ethertype, icmpv4, ipv4, tcp, udp, MacAddr};
use std::net::Ipv4Addr;

/// Which of how many workers' switches a switch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard (0-based).
    pub index: usize,
    /// Shards in all (at least 1).
    pub count: usize,
}

impl Shard {
    /// The only shard: nothing is handed over or announced.
    pub const ONE: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count` (`count` at least 1, `index` below it).
    pub fn new(index: usize, count: usize) -> Shard {
        let count = count.max(1);
        Shard { index: index.min(count - 1), count }
    }

    /// More than one shard.
    #[inline(always)]
    pub fn is_sharded(self) -> bool {
        self.count > 1
    }
}

/// Learned state one shard tells the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// `mac` was seen on `port` in network `net` at `seen`.
    Mac {
        /// The network.
        net: NetId,
        /// The address.
        mac: MacAddr,
        /// The port it is behind.
        port: PortId,
        /// When it was seen.
        seen: Nanos,
    },
    /// A neighbour changed (confirmed, being resolved, probed, failed).
    Neigh(NeighNote),
}

/// A frame handed to the shard that owns its connection, with the port it was received on.
#[derive(Debug)]
pub struct Handoff {
    /// The owning shard.
    pub owner: usize,
    /// The ingress port.
    pub port: PortId,
    /// The frame, unchanged since it was received.
    pub frame: Frame,
}

/// What a shard produced for the others during one call: drained by the driver after each.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Learned state for every other shard.
    pub updates: Vec<Update>,
    /// Frames for their owners.
    pub handoffs: Vec<Handoff>,
}

/// A shard's inbox as its driver keeps it: what the other shards queued for it, oldest first (a worker's
/// lock-free queues, a test driver's `VecDeque`s). Drained at batch boundaries by
/// [`super::Switch::apply_updates`] and [`super::Switch::run_handed_burst`].
pub trait Inbox {
    /// The oldest learned-state update waiting.
    fn pop_update(&mut self) -> Option<Update>;
    /// The oldest frame handed over, with its ingress port.
    fn pop_handoff(&mut self) -> Option<(PortId, Frame)>;
}

/// What [`super::Switch::dispatch`] did with an outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dispatched {
    /// Frames queued for their owner.
    pub handed: u64,
    /// Frames whose owner's queue was full (dropped as `handoff-full`).
    pub handoffs_dropped: u64,
    /// Updates a full queue refused (one per refusing shard).
    pub updates_dropped: u64,
}

/// How an endpoint address relates to the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Own,
    Target,
    Inside,
    Remote,
}

/// A publish rule as the hairpin test needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Published {
    proto: u8,
    port: u16,
    /// The subnet of the target's network, when it has a gateway.
    target_net: Option<Ipv4Net>,
}

/// The addresses [`Owners::owner`] classifies endpoints by, taken from a topology. Two topologies with equal
/// `Owners` give every connection the same owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owners {
    /// Some masquerade network or publish rule: connections can be tracked.
    enabled: bool,
    routed_own: Vec<Ipv4Addr>,
    published: Vec<Published>,
    /// Router interface addresses (own), publish rules' targets and gateway networks' subnets (inside) as
    /// (network, mask, class), in that order of precedence: what [`Owners::class`] scans for every routed
    /// frame, as host-order integers.
    classes: Vec<(u32, u32, Class)>,
}

impl Owners {
    /// The classification for `topo`.
    pub fn new(topo: &Topology) -> Owners {
        let inside: Vec<Ipv4Net> = topo.rifs.iter().filter(|r| !r.routed_port).map(|r| r.subnet).collect();
        let host = |a: Ipv4Addr, class| (u32::from(a), u32::MAX, class);
        let classes = (topo.rifs.iter().map(|r| host(r.addr, Class::Own)))
            .chain(topo.publish.iter().map(|p| host(p.to_addr, Class::Target)))
            .chain(inside.iter().map(|n| (u32::from(n.network()), u32::from(n.netmask()), Class::Inside)))
            .collect();
        Owners {
            enabled: topo.rifs.iter().any(|r| r.masquerade) || !topo.publish.is_empty(),
            routed_own: topo.rifs.iter().filter(|r| r.routed_port).map(|r| r.addr).collect(),
            classes,
            published: topo
                .publish
                .iter()
                .map(|p| Published {
                    proto: match p.proto {
                        PublishProto::Tcp => ip_proto::TCP,
                        PublishProto::Udp => ip_proto::UDP,
                    },
                    port: p.external_port,
                    target_net: inside.iter().copied().find(|n| n.contains(&p.to_addr)),
                })
                .collect(),
        }
    }

    /// Own, else target, else inside, else remote.
    #[inline]
    fn class(&self, a: Ipv4Addr) -> Class {
        let a = u32::from(a);
        self.classes.iter().find(|&&(net, mask, _)| a & mask == net).map_or(Class::Remote, |&(_, _, class)| class)
    }

    /// The shard (of `count`) owning the connection of the IPv4 frame `data` (located by `parsed`) that the
    /// bridge handed to the router, or `None` if the receiving shard may route it (see the module
    /// documentation). Never panics on any input: what cannot be read is routed where it arrived, where the
    /// router drops and counts it.
    #[inline]
    pub fn owner(&self, data: &[u8], parsed: &Parsed, count: usize) -> Option<usize> {
        if !self.enabled || count <= 1 || parsed.ethertype != ethertype::IPV4 {
            return None;
        }
        let ip = ipv4::Header::at(data, usize::from(parsed.l3))?;
        let (src, dst, proto) = (ip.src_addr(), ip.dst_addr(), parsed.ip_proto);
        let l4 = (parsed.l4 != 0).then_some(usize::from(parsed.l4));
        if let (ip_proto::ICMP, Some(at)) = (proto, l4) {
            let icmp = icmpv4::Packet::new_checked(data.get(at..usize::from(parsed.l3_end))?).ok()?;
            if icmpv4::is_error(icmp.msg_type()) {
                // The quoted packet left in one direction of the connection: classify it instead, with its ports
                // (an error quotes the transport header's first 8 bytes).
                let quoted = icmp.payload();
                let inner = ipv4::Header::at(quoted, 0)?;
                let ports = quoted
                    .get(inner.header_len()..inner.header_len() + 4)
                    .filter(|_| matches!(inner.protocol(), ip_proto::TCP | ip_proto::UDP) && !inner.is_fragment());
                let port = |o: usize| ports.map(|p| u16::from_be_bytes([p[o], p[o + 1]]));
                return self.owner_of_ports(inner.src_addr(), inner.dst_addr(), inner.protocol(), count, || {
                    (port(0), port(2))
                });
            }
        }
        self.owner_of_ports(src, dst, proto, count, || {
            l4.map_or((None, None), |at| (src_port(data, at, proto), dst_port(data, at, proto)))
        })
    }

    /// The shard (of `count`) owning a connection whose packet goes from `src` to `dst` (`dport`: its TCP or
    /// UDP destination port, if known): [`Owners::owner`] without the frame (for connections restored from a
    /// snapshot, by their original tuple).
    pub fn owner_of(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, dport: Option<u16>, count: usize) -> Option<usize> {
        self.owner_of_ports(src, dst, proto, count, || (None, dport))
    }

    /// [`Owners::owner_of`] with both ports, `(source, destination)`, where known: `ports` reads them, only
    /// for the few cases that depend on them (a hairpin through a published port).
    #[inline]
    fn owner_of_ports(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        count: usize,
        ports: impl FnOnce() -> (Option<u16>, Option<u16>),
    ) -> Option<usize> {
        if !self.enabled || count <= 1 {
            return None;
        }
        let (cs, cd) = (self.class(src), self.class(dst));
        // The address's multiplicative hash mapped onto `0..count` by its high bits (a multiply, not a `%`: the
        // division was a fifth of this function's time with two workers, `perf annotate`).
        let hash = |a: Ipv4Addr| {
            let h = u64::from(u32::from(a).wrapping_mul(0x9e37_79b1));
            usize::try_from((h * count as u64) >> 32).unwrap_or(0)
        };
        // A client of the publish rule for `(proto, port)` at `client` is in the rule's target network.
        let hairpin = |port: Option<u16>, client: Ipv4Addr| {
            port.is_some_and(|port| {
                self.published
                    .iter()
                    .any(|p| p.proto == proto && p.port == port && p.target_net.is_some_and(|n| n.contains(&client)))
            })
        };
        match (cs, cd) {
            (Class::Remote, Class::Remote) | (Class::Inside, Class::Inside) => None,
            (Class::Remote, _) => Some(hash(src)),
            (_, Class::Remote) => Some(hash(dst)),
            (Class::Inside, Class::Own) if self.routed_own.contains(&dst) => {
                Some(if hairpin(ports().1, src) { 0 } else { hash(src) })
            }
            // The translated reply to a client of a published port, from the routed port's address and the
            // external port: what an ICMP error from that client quotes.
            (Class::Own, Class::Inside) if self.routed_own.contains(&src) => {
                Some(if hairpin(ports().0, dst) { 0 } else { hash(dst) })
            }
            (Class::Inside, Class::Own | Class::Target) => Some(hash(src)),
            (Class::Target, Class::Inside) => Some(hash(dst)),
            _ => Some(0),
        }
    }
}

/// The TCP or UDP source port at `l4`.
fn src_port(data: &[u8], l4: usize, proto: u8) -> Option<u16> {
    match proto {
        ip_proto::TCP => tcp::Header::at(data, l4).map(|h| h.src_port()),
        ip_proto::UDP => udp::Header::at(data, l4).map(|h| h.src_port()),
        _ => None,
    }
}

/// The TCP or UDP destination port at `l4`.
fn dst_port(data: &[u8], l4: usize, proto: u8) -> Option<u16> {
    match proto {
        ip_proto::TCP => tcp::Header::at(data, l4).map(|h| h.dst_port()),
        ip_proto::UDP => udp::Header::at(data, l4).map(|h| h.dst_port()),
        _ => None,
    }
}
