//! The router's forwarding path: the checks on a packet as it arrived (martians, TTL, route, isolation, MTU),
//! the NAT translation, the TTL decrement, the neighbour (resolving it with ARP if needed) and the MAC rewrite.
//! Inlined into the pipeline's loop (see the `router` module documentation).

use super::{martian, set_macs, Decided, Route, Router};
use crate::buffer::{Frame, Nanos};
use crate::counters::DropReason;
use crate::nat;
use crate::neigh::{Held, Lookup, NeighNote, RifId};
use crate::packet::Parsed;
use crate::stage::{Egress, Tracer};
use crate::wire::icmpv4::{msg_type, unreachable};
use crate::wire::{ipv4, MacAddr};
use std::net::Ipv4Addr;

impl Router {
    /// [`Router::forward`] for a packet the inbound NAT stage translated (a reply, a published port, an ICMP
    /// error): one out-of-line copy of the forwarding body for those three callers.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn forward_translated<T: Tracer>(
        &mut self,
        now: Nanos,
        in_rif: RifId,
        frame: Frame,
        parsed: &Parsed,
        route: Route,
        nat: Option<Decided>,
        out: &mut Egress<T>,
    ) {
        self.forward(now, in_rif, frame, parsed, route, nat, out)
    }

    /// Forwards a packet that is not (or no longer, after `nat`) for one of the switch's addresses: TTL, route,
    /// isolation ([`crate::isolation`]) and MTU checks on the packet as it arrived, then the NAT translation (`nat`, decided inbound,
    /// or the outbound stage's), TTL decrement and the next hop.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn forward<T: Tracer>(
        &mut self,
        now: Nanos,
        in_rif: RifId,
        mut frame: Frame,
        parsed: &Parsed,
        route: Route,
        nat: Option<Decided>,
        out: &mut Egress<T>,
    ) {
        let topo = out.topo();
        let l3 = parsed.l3 as usize;
        // Ingress checked the whole header is there; the fields are read from a fixed-size view of it.
        let Some(h) = ipv4::Header::at(frame.data(), l3) else {
            return out.drop(frame, DropReason::TruncatedIpHeader);
        };
        let src = h.src_addr();
        let dst = match nat {
            Some(Decided::Rewrite(rw)) => rw.to.dst,
            Some(Decided::Open(c)) => c.dst(),
            Some(Decided::Translated) | None => h.dst_addr(),
        };
        let in_broadcast = topo.rifs[in_rif as usize].broadcast;
        if martian(dst) | martian(src) | (dst == in_broadcast) {
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
        out.note("route", || self.describe_route(dst, route, topo));
        let Some(nh_id) = route else {
            self.icmp_error(now, in_rif, &frame, parsed, msg_type::DEST_UNREACHABLE, unreachable::NET, 0, out);
            return out.drop(frame, DropReason::NoRoute);
        };
        let nh = self.next_hops[nh_id.index()];
        let eg_info = &topo.rifs[nh.rif as usize];
        if nh.rif != in_rif {
            if let Some(reason) = topo.isolation.refusal(in_rif, nh.rif) {
                // Isolation yields to NAT: translated packets, and those of tracked connections, pass.
                let lifted = reason != DropReason::InternalNetwork
                    && (nat.is_some() || self.nat.tracks(now, frame.data(), parsed, flow));
                if !lifted {
                    return out.drop(frame, reason);
                }
            }
            if let Some(reason) = topo.isolation.host_link_refusal(in_rif, nh.rif, src, dst) {
                return out.drop(frame, reason);
            }
        }
        if dst == eg_info.broadcast && nh.via.is_none() {
            return out.drop(frame, DropReason::NotRoutable);
        }
        if h.total_len() > eg_info.mtu && exceeds_mtu(&frame, l3, eg_info.mtu) {
            if h.dont_frag() {
                let (unreach, frag) = (msg_type::DEST_UNREACHABLE, unreachable::FRAG_NEEDED);
                self.icmp_error(now, in_rif, &frame, parsed, unreach, frag, eg_info.mtu, out);
                return out.drop(frame, DropReason::NeedsFragmentation);
            }
            return out.drop(frame, DropReason::FragmentationUnsupported);
        }
        if !frame.offload.is_none() {
            // NAT rewrites keep a verified checksum right, but the receiver checks it again all the same.
            frame.offload.clear_verified();
        }
        // Traced: the flow as it arrived, for conntrack's note (a packet translated inbound has had its note).
        let seen = if out.tracing() && nat.is_none() { self.nat.prefetch(frame.data(), parsed) } else { None };
        let inbound_decided = nat.is_some();
        match nat {
            Some(Decided::Translated) => {}
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
        if !inbound_decided {
            out.note("conntrack", || self.nat.explain(seen.as_ref(), now));
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
    pub(super) fn send_to_neighbour<T: Tracer>(
        &mut self,
        now: Nanos,
        rif: RifId,
        target: Ipv4Addr,
        frame: Frame,
        parsed: &Parsed,
        out: &mut Egress<T>,
    ) {
        // Consecutive packets mostly go to the same next hop: remember the last answer for this batch.
        if let Some((r, ip, mac)) = self.last_neigh {
            if r == rif && ip == target {
                return self.send_to_mac(rif, mac, frame, out);
            }
        }
        let found = self.neigh.lookup(rif, target, now);
        out.note("neighbour", || match found {
            Lookup::Mac(mac) => format!("{target} is at {mac}"),
            Lookup::MacProbe(mac) => format!("{target} is at {mac} (stale: sent, and ARP asks again)"),
            Lookup::Unresolved => format!("{target} unresolved: the frame waits for ARP"),
        });
        match found {
            Lookup::Mac(mac) => {
                self.last_neigh = Some((rif, target, mac));
                self.send_to_mac(rif, mac, frame, out)
            }
            Lookup::MacProbe(mac) => {
                self.send_to_mac(rif, mac, frame, out);
                self.arp_request(rif, target, now, out);
                self.note_neigh(NeighNote::Probed { rif, ip: target });
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
    fn hold_for_neighbour<T: Tracer>(
        &mut self,
        now: Nanos,
        rif: RifId,
        target: Ipv4Addr,
        frame: Frame,
        parsed: &Parsed,
        out: &mut Egress<T>,
    ) {
        match self.neigh.hold(rif, target, frame, now) {
            Held::SendRequest => {
                self.neigh.take_evicted(|f| out.drop(f, DropReason::NeighEvicted));
                self.arp_request(rif, target, now, out);
                self.note_neigh(NeighNote::Pending { rif, ip: target });
            }
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
    pub fn send_encapsulated<T: Tracer>(&mut self, now: Nanos, out: &mut Egress<T>) {
        let mut pending = out.take_pending();
        for p in pending.drain(..) {
            let outer = Parsed::vxlan_outer(p.frame.len());
            self.send_to_neighbour(now, p.rif, p.target, p.frame, &outer, out);
        }
        out.restore_pending(pending);
    }

    /// Rewrites the MACs and sends a routed frame out of `rif` to `mac`.
    #[inline(always)]
    pub(super) fn send_to_mac<T: Tracer>(&mut self, rif: RifId, mac: MacAddr, mut frame: Frame, out: &mut Egress<T>) {
        self.stats.forwarded += 1;
        let info = &out.topo().rifs[rif as usize];
        set_macs(frame.data_mut(), mac, info.mac);
        let attach = info.attach;
        out.to_attach_mac(attach, mac, frame);
    }
}

/// Whether an IPv4 packet (header at `l3`) longer than `mtu` really is too long for the egress: an ordinary one
/// is; a GSO super-frame is only if one of the segments it stands for (headers + `gso_size`) is, as the kernel's
/// `skb_gso_validate_network_len` decides. TTL and the header checksum are then handled once for the whole
/// super-frame; each segment gets a copy of the headers when it is cut (by the egress port or the kernel).
#[cold]
fn exceeds_mtu(frame: &Frame, l3: usize, mtu: u16) -> bool {
    if !frame.offload.is_gso() {
        return true;
    }
    frame.offload.segment_len(frame.data()).saturating_sub(l3) > usize::from(mtu)
}
