//! The router's forwarding path: the checks on a packet as it arrived (martians, TTL, route, `internal`, MTU),
//! the NAT translation, the TTL decrement, the neighbour (resolving it with ARP if needed) and the MAC rewrite.
//! Inlined into the pipeline's loop (see the `router` module documentation).

use super::{martian, set_macs, Decided, Route, Router};
use crate::buffer::{Frame, Nanos};
use crate::counters::DropReason;
use crate::nat;
use crate::neigh::{Held, Lookup, RifId};
use crate::packet::Parsed;
use crate::pipeline::Egress;
use crate::wire::icmpv4::{msg_type, unreachable};
use crate::wire::{ipv4, MacAddr};
use std::net::Ipv4Addr;

impl Router {
    /// [`Router::forward`] for a packet the inbound NAT stage translated (a reply, a published port, an ICMP
    /// error): one out-of-line copy of the forwarding body for those three callers.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn forward_translated(
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
    pub(super) fn forward(
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
        let Some(h) = ipv4::Header::at(frame.data(), l3) else {
            return out.drop(frame, DropReason::TruncatedIpHeader);
        };
        let src = h.src_addr();
        let dst = nat.map_or_else(|| h.dst_addr(), |n| n.dst());
        let in_subnet = &topo.rifs[in_rif as usize].subnet;
        if martian(dst) || martian(src) || dst == in_subnet.broadcast() {
            return out.drop(frame, DropReason::NotRoutable);
        }
        if h.ttl() <= 1 {
            self.icmp_error(now, in_rif, &frame, parsed, msg_type::TIME_EXCEEDED, 0, 0, out);
            return out.drop(frame, DropReason::TtlExpired);
        }
        let (route, flow) = match route {
            Route::Batch(r) => (r.next_hop, r.flow.as_ref()),
            Route::Lookup(addr) => (self.fib.lookup(addr), None),
        };
        let Some(nh_id) = route else {
            self.icmp_error(now, in_rif, &frame, parsed, msg_type::DEST_UNREACHABLE, unreachable::NET, 0, out);
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
        if h.total_len() > eg_info.mtu {
            if h.dont_frag() {
                let mtu = u32::from(eg_info.mtu);
                let (unreach, frag) = (msg_type::DEST_UNREACHABLE, unreachable::FRAG_NEEDED);
                self.icmp_error(now, in_rif, &frame, parsed, unreach, frag, mtu, out);
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
        if let Some(mut h) = ipv4::HeaderMut::at_mut(frame.data_mut(), l3) {
            h.decrement_ttl();
        }
        let target = nh.via.unwrap_or(dst);
        self.send_to_neighbour(now, nh.rif, target, frame, parsed, out);
    }

    /// Sends a routed frame to `target` on `rif`, resolving its MAC first if needed.
    #[inline(always)]
    pub(super) fn send_to_neighbour(
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
                self.icmp_error(now, in_rif, &f, parsed, msg_type::DEST_UNREACHABLE, unreachable::HOST, 0, out);
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
            let outer = Parsed::vxlan_outer(p.frame.len());
            self.send_to_neighbour(now, p.rif, p.target, p.frame, &outer, out);
        }
        out.restore_pending(pending);
    }

    /// Rewrites the MACs and sends a routed frame out of `rif` to `mac`.
    #[inline(always)]
    pub(super) fn send_to_mac(&mut self, rif: RifId, mac: MacAddr, mut frame: Frame, out: &mut Egress) {
        self.stats.forwarded += 1;
        let info = &out.topo().rifs[rif as usize];
        set_macs(frame.data_mut(), mac, info.mac);
        let attach = info.attach;
        out.to_attach_mac(attach, mac, frame);
    }
}
