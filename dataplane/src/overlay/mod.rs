//! Overlay networks: bridge domains that span hosts, their remote members (VTEPs) and remote endpoints, and the
//! VXLAN encapsulation and decapsulation between them ([`vxlan`]).
//!
//! # Model
//! An overlay network (`scope = "overlay"` with a `vni`) is an ordinary bridge domain whose remote part is
//! reached through VXLAN tunnels from the switch's VTEP (a routed port's address, [`VtepInfo`]) to the VTEPs of
//! the other hosts that serve the network (**members**). Membership is not learnt from the data plane: the
//! control plane (`vswitch-agent`, reading etcd) pushes an [`OverlayState`] — the live members with their VTEP,
//! UDP port and underlay MTU, and the remote endpoints (MAC, IP, network, host) — and [`Overlay::update`]
//! replaces the tables with it in one step under the switch lock, without pausing the workers. So:
//! - **Nothing is learnt from decapsulated frames**: their source MACs are not put in the MAC table; a remote
//!   MAC is reachable only once the control plane lists it (or by flooding, as unknown unicast).
//! - **On conflict, the local MAC table wins**: a MAC learnt on a local port is switched there even if the control
//!   plane still lists it behind another host (the endpoint moved here; the registry catches up).
//! - The control plane's state wins over everything else: an update replaces members and endpoints whole; a
//!   member absent from it is gone (its frames are refused as `vxlan-unknown-vtep`).
//!
//! # Forwarding
//! - Known remote unicast: encapsulated to the endpoint's VTEP ([`Overlay::encap`]).
//! - Broadcast, multicast and unknown unicast from a local port: flooded to the local ports and replicated
//!   head-end to every member VTEP of the network, at most `bum_rate_pps` frames per second (a token bucket
//!   holding a tenth of a second's worth, at least 16; over it, local ports still get the frame and the
//!   replication is counted as `vxlan-bum-rate-limited`).
//! - **Split horizon**: a frame that came out of a tunnel is delivered to local ports only, never to another
//!   VTEP, and never handed to the local router (each host's gateway serves its own containers: the gateway's
//!   address and MAC are the same on every host, an anycast gateway; a decapsulated frame for the gateway MAC is
//!   dropped as `vxlan-gateway-mac`).
//! - **ARP suppression**: a local ARP request for the address of a known remote endpoint is answered by the
//!   switch with the endpoint's MAC ([`Overlay::arp_suppress`]) and not sent across.
//! - Decapsulation ([`Overlay::decap`]) accepts only a known VNI from a live member of that VNI's network.
//! - **MTU**: an overlay network's MTU is the smallest underlay MTU of its live members and of our own VTEP port,
//!   minus [`vxlan::OVERHEAD`] (50), recomputed by every update; a bridged frame longer than it allows is dropped
//!   (`vxlan-too-big`), and the gateway's interface MTU follows it, so the router sends Fragmentation Needed for
//!   routed DF packets that would not fit. The switch never fragments.
//! - The underlay next hop of a VTEP comes from the switch's own routes (computed at each update and
//!   configuration change; it must leave through a routed port, else `vxlan-no-underlay-route`) and its MAC from
//!   the router's neighbour table (ARP), like any routed packet: [`Overlay::encap`] queues the encapsulated
//!   frame with its next hop ([`Pending`]) and the pipeline hands it to the router's neighbour stage. Tunnel
//!   packets never pass the router's forwarding checks, NAT or connection tracking, in either direction.
//!
//! Threads: part of the `Switch`, used by whichever thread holds it (a worker per batch, the control thread for
//! updates and reads).

pub mod peers;
mod state;
pub mod vxlan;

pub use state::{
    EndpointInfo, Member, MemberInfo, OverlayError, OverlayInspect, OverlayState, PeerCounters, RemoteEndpoint,
    UpdateSummary,
};

use crate::buffer::Frame;
use crate::counters::DropReason;
use crate::ids::{table_id, Nanos, NetId, PortId, RifId};
use crate::packet::{ip_proto, Parsed};
use crate::port::soft_offload::{SoftOffload, SoftStats};
use crate::topology::{Attach, Topology, VtepInfo};
use crate::wire::{arp, ethernet, ethertype, ipv4, udp, vlan, MacAddr};
use peers::{Peer, PeerId, TokenBucket};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Overlay counters that are not drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayStats {
    /// Frames encapsulated (every replicated copy counts).
    pub encapsulated: u64,
    /// Frames decapsulated and delivered to the bridge.
    pub decapsulated: u64,
    /// Broadcast/multicast/unknown-unicast copies sent to member VTEPs.
    pub replicated: u64,
    /// ARP requests answered for remote endpoints.
    pub arp_suppressed: u64,
    /// Updates accepted.
    pub updates: u64,
}

/// An encapsulated frame waiting for the router's neighbour stage: send it out of `rif` to `target`'s MAC.
#[derive(Debug)]
pub struct Pending {
    /// The routed port's interface towards the peer.
    pub rif: RifId,
    /// The next hop: the peer's VTEP itself, or the gateway towards it.
    pub target: Ipv4Addr,
    /// The encapsulated frame.
    pub frame: Frame,
}

/// Most encapsulated frames waiting for the neighbour stage between two drains (the pipeline drains after every
/// received frame, so this bounds one frame's replication plus what the router emits meanwhile).
pub const PENDING_CAP: usize = 4096;

/// One overlay network's tables.
#[derive(Debug, Clone)]
struct NetOverlay {
    vni: u32,
    /// Member VTEPs serving it.
    members: Vec<PeerId>,
    /// Remote MAC → the peer it is behind.
    macs: FxHashMap<MacAddr, PeerId>,
    /// Remote IPv4 → MAC (ARP suppression, routing into the overlay).
    ips: FxHashMap<Ipv4Addr, MacAddr>,
    /// Overlay MTU (IP): the smallest member underlay MTU minus 50.
    mtu: u16,
    bum: TokenBucket,
}

/// The overlay tables. See the module documentation.
#[derive(Debug)]
pub struct Overlay {
    vtep: Option<VtepInfo>,
    /// By [`NetId`]; `None` for networks that are not overlays (or have no VNI yet).
    nets: Vec<Option<NetOverlay>>,
    vnis: FxHashMap<u32, NetId>,
    peers: Vec<Peer>,
    by_vtep: FxHashMap<Ipv4Addr, PeerId>,
    state: OverlayState,
    stats: OverlayStats,
    pending: Vec<Pending>,
    /// Completes checksums and cuts super-frames before encapsulation (made at the first such frame: 64 KiB).
    soft: Option<SoftOffload>,
}

/// How [`Overlay::update`] finds the underlay next hop of a VTEP: the router's route lookup, giving the egress
/// interface and the next hop (the gateway, or the address itself on a connected route).
pub trait UnderlayRoutes {
    /// The route to `addr`.
    fn route(&self, addr: Ipv4Addr) -> Option<(RifId, Ipv4Addr)>;
}

impl<F: Fn(Ipv4Addr) -> Option<(RifId, Ipv4Addr)>> UnderlayRoutes for F {
    fn route(&self, addr: Ipv4Addr) -> Option<(RifId, Ipv4Addr)> {
        self(addr)
    }
}

impl Overlay {
    /// Empty tables for `topo`'s overlay networks (no members yet).
    pub fn new(topo: &Topology) -> Overlay {
        let mut vnis = FxHashMap::default();
        let nets = topo
            .networks
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let o = n.overlay?;
                let vni = o.vni?;
                topo.vtep?;
                vnis.insert(vni, table_id(i));
                let mtu = topo.vtep.map_or(0, |v| v.mtu.saturating_sub(vswitch_api::overlay::OVERHEAD));
                Some(NetOverlay {
                    vni,
                    members: Vec::new(),
                    macs: FxHashMap::default(),
                    ips: FxHashMap::default(),
                    mtu,
                    bum: TokenBucket::per_second(u64::from(o.bum_rate_pps)),
                })
            })
            .collect();
        Overlay {
            vtep: topo.vtep,
            nets,
            vnis,
            peers: Vec::new(),
            by_vtep: FxHashMap::default(),
            state: OverlayState::default(),
            stats: OverlayStats::default(),
            pending: Vec::with_capacity(PENDING_CAP),
            soft: None,
        }
    }

    /// Replaces the members and remote endpoints with `state` (validated first: on error nothing changes).
    /// Per-peer counters follow a VTEP address across updates. `routes` resolves each VTEP's underlay next hop.
    pub fn update(
        &mut self,
        topo: &Topology,
        state: OverlayState,
        routes: &dyn UnderlayRoutes,
    ) -> Result<UpdateSummary, OverlayError> {
        state.validate()?;
        let mut summary = UpdateSummary::default();
        let own = self.vtep.map(|v| v.addr);
        let mut peers: Vec<Peer> = Vec::new();
        let mut by_vtep = FxHashMap::default();
        let mut by_host: FxHashMap<&str, PeerId> = FxHashMap::default();
        let mut nets: Vec<Option<NetOverlay>> = self.nets.clone();
        for n in nets.iter_mut().flatten() {
            n.members.clear();
            n.macs.clear();
            n.ips.clear();
        }
        for m in &state.members {
            if Some(m.vtep) == own {
                continue;
            }
            let id = table_id(peers.len());
            let counters = self.by_vtep.get(&m.vtep).map(|&p| self.peers[p as usize].counters).unwrap_or_default();
            let next_hop = self.vtep.and_then(|v| {
                let (rif, target) = routes.route(m.vtep)?;
                matches!(topo.rifs.get(rif as usize)?.attach, Attach::Port(_)).then_some((rif, target, v.addr))
            });
            for name in &m.networks {
                match topo.network_id(name).and_then(|n| nets[n as usize].as_mut()) {
                    Some(n) => n.members.push(id),
                    None => summary.ignored += 1,
                }
            }
            peers.push(Peer::new(m, next_hop, counters));
            by_vtep.insert(m.vtep, id);
            by_host.insert(m.host.as_str(), id);
        }
        for e in &state.endpoints {
            let net = topo.network_id(&e.network);
            let (Some(net), Some(&peer)) = (net, by_host.get(e.host.as_str())) else {
                summary.ignored += 1;
                continue;
            };
            match nets[net as usize].as_mut() {
                Some(n) if n.members.contains(&peer) => {
                    n.macs.insert(e.mac, peer);
                    if let Some(ip) = e.ip {
                        n.ips.insert(ip, e.mac);
                    }
                    summary.endpoints += 1;
                }
                _ => summary.ignored += 1,
            }
        }
        // The MTU: the smallest underlay MTU among the live members and our own VTEP port, minus the overhead.
        let own_mtu = self.vtep.map_or(0, |v| v.mtu);
        for n in nets.iter_mut().flatten() {
            let min = n.members.iter().map(|&p| peers[p as usize].mtu).fold(own_mtu, u16::min);
            n.mtu = min.saturating_sub(vswitch_api::overlay::OVERHEAD);
        }
        summary.members = peers.len();
        summary.members_added = by_vtep.keys().filter(|a| !self.by_vtep.contains_key(a)).count();
        summary.members_removed = self.by_vtep.keys().filter(|a| !by_vtep.contains_key(a)).count();
        self.nets = nets;
        self.peers = peers;
        self.by_vtep = by_vtep;
        self.state = state;
        self.stats.updates += 1;
        Ok(summary)
    }

    /// The tables for a new topology (a configuration change): the last state applied again, per-peer counters
    /// and statistics kept.
    pub fn reconfigured(&self, topo: &Topology, routes: &dyn UnderlayRoutes) -> Overlay {
        let mut o = Overlay::new(topo);
        o.stats = self.stats;
        o.peers = self.peers.clone();
        o.by_vtep = self.by_vtep.clone();
        // The state was valid when accepted and validation does not depend on the topology.
        let _ = o.update(topo, self.state.clone(), routes);
        o.stats.updates = self.stats.updates;
        o.soft = self.soft.as_ref().map(|_| SoftOffload::new());
        o
    }

    /// The software offload engine encapsulation uses for frames with offload metadata (give it back with
    /// [`Overlay::restore_soft`]): VXLAN carries wire-sized inner frames with complete checksums.
    #[cold]
    pub fn take_soft(&mut self) -> SoftOffload {
        self.soft.take().unwrap_or_default()
    }

    /// See [`Overlay::take_soft`].
    pub fn restore_soft(&mut self, soft: SoftOffload) {
        self.soft = Some(soft);
    }

    /// What software offloads did before encapsulation: checksums completed, super-frames cut, segments made.
    pub fn soft_stats(&self) -> SoftStats {
        self.soft.as_ref().map(SoftOffload::stats).unwrap_or_default()
    }

    /// True when `net` is an overlay network with a VNI.
    #[inline]
    pub fn is_overlay(&self, net: NetId) -> bool {
        matches!(self.nets.get(net as usize), Some(Some(_)))
    }

    /// The overlay MTU of `net` (IP bytes), if it is an overlay network.
    pub fn mtu(&self, net: NetId) -> Option<u16> {
        self.nets.get(net as usize)?.as_ref().map(|n| n.mtu)
    }

    /// The VTEP.
    pub fn vtep(&self) -> Option<VtepInfo> {
        self.vtep
    }

    /// True for a frame received on the VTEP's port that is a VXLAN packet for our VTEP address and port
    /// (untagged IPv4, UDP, to our address and VXLAN port). Called for frames the bridge gave the VTEP's router
    /// interface.
    #[inline]
    pub fn is_vxlan(&self, in_port: PortId, data: &[u8], p: &Parsed) -> bool {
        let Some(v) = self.vtep else { return false };
        if in_port != v.port || p.vlan_tags != 0 || p.ethertype != ethertype::IPV4 || p.ip_proto != ip_proto::UDP {
            return false;
        }
        if p.l4 == 0 {
            return false;
        }
        let dst = ipv4::Header::at(data, p.l3 as usize).map(|ip| ip.dst_addr());
        let port = udp::Header::at(data, p.l4 as usize).map(|u| u.dst_port());
        dst == Some(v.addr) && port == Some(v.udp_port)
    }

    /// Decapsulates a VXLAN packet ([`Overlay::is_vxlan`] was true): checks it, strips the outer headers, checks
    /// the inner frame as ingress checks a received one, and returns the network it belongs to and the inner
    /// frame's parse. On error the frame is unchanged and the reason says why it must be dropped.
    pub fn decap(&mut self, frame: &mut Frame, p: &Parsed) -> Result<(NetId, Parsed), DropReason> {
        let outer_len = frame.len();
        let d = vxlan::parse(frame.data(), p.l3 as usize, p.l4 as usize, p.l3_end as usize)?;
        let net = *self.vnis.get(&d.vni).ok_or(DropReason::VxlanUnknownVni)?;
        let peer = *self.by_vtep.get(&d.src).ok_or(DropReason::VxlanUnknownVtep)?;
        let n = self.nets[net as usize].as_ref().ok_or(DropReason::VxlanUnknownVni)?;
        if !n.members.contains(&peer) {
            return Err(DropReason::VxlanUnknownVtep);
        }
        let inner = &frame.data()[d.inner..d.end];
        let parsed = crate::packet::check(inner, usize::from(n.mtu) + ethernet::HEADER_LEN)?;
        let src = ethernet::Header::at(inner, 0).map_or(MacAddr::ZERO, |e| e.src_addr());
        if src.is_multicast() || src.is_zero() {
            return Err(DropReason::VxlanInnerNotEthernet);
        }
        frame.truncate(d.end);
        frame.pull_front(d.inner);
        let c = &mut self.peers[peer as usize].counters;
        c.rx_packets += 1;
        c.rx_bytes += outer_len as u64;
        self.stats.decapsulated += 1;
        Ok((net, parsed))
    }

    /// The peer a remote MAC of `net` is behind.
    #[inline]
    pub fn remote_mac(&self, net: NetId, mac: MacAddr) -> Option<PeerId> {
        self.nets.get(net as usize)?.as_ref()?.macs.get(&mac).copied()
    }

    /// True for a packet from our VTEP to a member's: one the overlay encapsulated (the router sends no ICMP
    /// errors about those).
    #[inline]
    pub fn is_tunnel(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.vtep.is_some_and(|v| v.addr == src) && self.by_vtep.contains_key(&dst)
    }

    /// The MAC of the remote endpoint with address `ip` on `net`.
    #[inline]
    pub fn endpoint_mac(&self, net: NetId, ip: Ipv4Addr) -> Option<MacAddr> {
        self.nets.get(net as usize)?.as_ref()?.ips.get(&ip).copied()
    }

    /// The member VTEPs of `net`.
    pub fn members(&self, net: NetId) -> &[PeerId] {
        self.nets.get(net as usize).and_then(Option::as_ref).map_or(&[], |n| &n.members[..])
    }

    /// Takes a replication token of `net`'s BUM rate limit.
    #[inline]
    pub fn take_bum_token(&mut self, net: NetId, now: Nanos) -> bool {
        match self.nets.get_mut(net as usize) {
            Some(Some(n)) => n.bum.take(now),
            _ => false,
        }
    }

    /// Encapsulates `frame` (an inner frame of `net`) towards `peer` and queues it for the neighbour stage
    /// ([`Overlay::take_pending`]). On error the frame is handed back with the reason to drop it for.
    #[inline]
    pub fn encap(&mut self, net: NetId, peer: PeerId, mut frame: Frame) -> Result<(), (Frame, DropReason)> {
        let Some(Some(n)) = self.nets.get(net as usize) else { return Err((frame, DropReason::VxlanUnknownVni)) };
        let vni = n.vni;
        if frame.len() > usize::from(n.mtu) + ethernet::HEADER_LEN + vlan_allowance(frame.data()) {
            return Err((frame, DropReason::VxlanTooBig));
        }
        let Some(p) = self.peers.get_mut(peer as usize) else { return Err((frame, DropReason::VxlanUnknownVtep)) };
        let Some((rif, target)) = p.next_hop else { return Err((frame, DropReason::VxlanNoUnderlayRoute)) };
        if self.pending.len() >= PENDING_CAP {
            return Err((frame, DropReason::TxQueueFull));
        }
        let sport = vxlan::source_port(frame.data());
        if !p.template.encap(&mut frame, vni, sport) {
            return Err((frame, DropReason::VxlanNoUnderlayRoute));
        }
        p.counters.tx_packets += 1;
        p.counters.tx_bytes += frame.len() as u64;
        self.stats.encapsulated += 1;
        self.pending.push(Pending { rif, target, frame });
        Ok(())
    }

    /// Counts one replicated copy (call after a successful [`Overlay::encap`] of a BUM copy).
    #[inline]
    pub fn count_replicated(&mut self) {
        self.stats.replicated += 1;
    }

    /// The encapsulated frames waiting for the neighbour stage, oldest first. Give the (emptied) vector back with
    /// [`Overlay::restore_pending`] so its capacity is kept.
    #[inline]
    pub fn take_pending(&mut self) -> Vec<Pending> {
        std::mem::take(&mut self.pending)
    }

    /// See [`Overlay::take_pending`].
    #[inline]
    pub fn restore_pending(&mut self, v: Vec<Pending>) {
        debug_assert!(v.is_empty());
        if self.pending.is_empty() {
            self.pending = v;
        }
    }

    /// True when encapsulated frames wait for the neighbour stage.
    #[inline]
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// ARP suppression: if `frame` (received on a local port of `net`) is an ARP request for a known remote
    /// endpoint's address, rewrites it in place into the reply that endpoint would send and returns true; the
    /// caller sends it back out of the port it came in on.
    pub fn arp_suppress(&mut self, net: NetId, frame: &mut Frame) -> bool {
        let d = frame.data();
        let is_arp = ethernet::Header::at(d, 0).is_some_and(|e| e.ethertype() == ethertype::ARP);
        let Some(a) = arp::Packet::new_checked(d.get(ethernet::HEADER_LEN..).unwrap_or_default()).ok() else {
            return false;
        };
        if !is_arp || !a.is_ethernet_ipv4() || a.operation() != arp::op::REQUEST {
            return false;
        }
        let (tpa, sha, spa) = (a.target_ip(), a.sender_mac(), a.sender_ip());
        let Some(mac) = self.endpoint_mac(net, tpa) else { return false };
        if sha.is_multicast() || sha.is_zero() {
            return false;
        }
        let d = frame.data_mut();
        let (eth, rest) = d.split_at_mut(ethernet::HEADER_LEN);
        let mut eth = ethernet::Packet::new_unchecked(eth);
        eth.set_dst_addr(sha);
        eth.set_src_addr(mac);
        let mut a = arp::Packet::new_unchecked(rest);
        a.set_operation(arp::op::REPLY);
        a.set_sender_mac(mac);
        a.set_sender_ip(tpa);
        a.set_target_mac(sha);
        a.set_target_ip(spa);
        self.stats.arp_suppressed += 1;
        true
    }

    /// The counters.
    pub fn stats(&self) -> OverlayStats {
        self.stats
    }

    /// The state last applied.
    pub fn state(&self) -> &OverlayState {
        &self.state
    }

    /// What `network inspect` shows of `net`: `None` when it is not an overlay network.
    pub fn inspect(&self, net: NetId) -> Option<OverlayInspect> {
        let n = self.nets.get(net as usize)?.as_ref()?;
        let mut members: Vec<MemberInfo> = n
            .members
            .iter()
            .map(|&p| {
                let p = &self.peers[p as usize];
                MemberInfo {
                    host: p.host.clone(),
                    vtep: p.vtep,
                    udp_port: p.udp_port,
                    mtu: p.mtu,
                    state: if p.next_hop.is_some() { "live" } else { "no-underlay-route" }.to_string(),
                    next_hop: p.next_hop.map(|(_, t)| t),
                    counters: p.counters,
                }
            })
            .collect();
        members.sort_by(|a, b| a.host.cmp(&b.host));
        let ip_of: FxHashMap<MacAddr, Ipv4Addr> = n.ips.iter().map(|(ip, mac)| (*mac, *ip)).collect();
        let mut endpoints: Vec<EndpointInfo> = n
            .macs
            .iter()
            .map(|(mac, &p)| EndpointInfo {
                mac: *mac,
                ip: ip_of.get(mac).copied(),
                host: self.peers[p as usize].host.clone(),
                vtep: self.peers[p as usize].vtep,
            })
            .collect();
        endpoints.sort_by(|a, b| (&a.host, a.ip, a.mac.0).cmp(&(&b.host, b.ip, b.mac.0)));
        Some(OverlayInspect {
            vni: n.vni,
            mtu: n.mtu,
            vtep: self.vtep.map(|v| v.addr),
            revision: self.state.revision,
            members,
            endpoints,
        })
    }
}

/// Extra length allowed for the VLAN tags an inner frame carries (at most two).
#[inline]
fn vlan_allowance(d: &[u8]) -> usize {
    ethernet::Header::at(d, 0).map_or(0, |e| e.vlan_tags_announced().min(2) * vlan::HEADER_LEN)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod switch_tests;
