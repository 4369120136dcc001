//! The router's ARP (RFC 826): answering requests for its addresses, learning senders, asking for next hops.
//! Every message is read and written through [`crate::wire::arp`], the switch's one ARP codec. Out of line:
//! ARP is not per-packet work.

use super::{set_macs, Router};
use crate::buffer::{Frame, Nanos};
use crate::counters::DropReason;
use crate::neigh::{NeighNote, RifId};
use crate::packet::Parsed;
use crate::stage::{Egress, Tracer};
use crate::topology::RifInfo;
use crate::wire::builder::MIN_FRAME_LEN;
use crate::wire::{arp, ethernet, ethertype, MacAddr};
use std::net::Ipv4Addr;

impl Router {
    // Out of line (as are `local`, `icmp_error` and `forward_translated`): the per-frame body inlined into the
    // pipeline's loop stays small enough for the instruction cache; these paths are not per-packet work.
    #[inline(never)]
    pub(super) fn arp<T: Tracer>(
        &mut self,
        now: Nanos,
        rif_id: RifId,
        mut frame: Frame,
        parsed: &Parsed,
        copy: bool,
        out: &mut Egress<T>,
    ) {
        let rif = &out.topo().rifs[rif_id as usize];
        let l3 = parsed.l3 as usize;
        // The router's copy of a flooded ARP is not the frame itself: a refusal counts its reason, but the
        // ingress port's frame was flooded, not dropped.
        let refuse = |out: &mut Egress<T>, frame: Frame| {
            if copy {
                out.discard(frame, DropReason::BadArp)
            } else {
                out.drop(frame, DropReason::BadArp)
            }
        };
        let msg =
            arp::Packet::new_checked(frame.data().get(l3..).unwrap_or_default()).and_then(|p| arp::Repr::parse(&p));
        let Ok(msg) = msg else {
            return refuse(out, frame);
        };
        let (sha, spa, tpa) = (msg.sender_mac, msg.sender_ip, msg.target_ip);
        let sender_ok = rif.subnet.contains(&spa) && spa != rif.addr && !sha.is_multicast() && !sha.is_zero();
        if !sender_ok {
            return refuse(out, frame);
        }
        let for_us = tpa == rif.addr;
        self.last_neigh = None;
        let mut released = std::mem::take(&mut self.released);
        self.neigh.confirm(rif_id, spa, sha, now, for_us, &mut released);
        self.note_neigh(NeighNote::Confirmed { rif: rif_id, ip: spa, mac: sha, create: for_us });
        self.neigh.take_evicted(|f| out.drop(f, DropReason::NeighEvicted));
        match msg.operation {
            arp::op::REQUEST if for_us => {
                // Turn the request into the reply in place.
                let our_mac = rif.mac;
                let d = frame.data_mut();
                set_macs(d, sha, our_mac);
                let reply = arp::Repr {
                    operation: arp::op::REPLY,
                    sender_mac: our_mac,
                    sender_ip: tpa,
                    target_mac: sha,
                    target_ip: spa,
                };
                reply.emit(&mut arp::Packet::new_unchecked(&mut d[l3..]));
                self.stats.arp_replies += 1;
                out.note("router", || format!("ARP: {tpa} is-at {our_mac}, answered to {spa}"));
                let port = frame.port;
                out.to_port(port, frame);
            }
            _ => {
                if !for_us {
                    self.stats.arp_ignored += 1;
                }
                out.note("router", || format!("ARP from {spa}: learned or ignored, no answer"));
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

    /// Broadcasts a request for `target` on `rif`.
    pub(super) fn arp_request<T: Tracer>(&mut self, rif: RifId, target: Ipv4Addr, _now: Nanos, out: &mut Egress<T>) {
        let info: &RifInfo = &out.topo().rifs[rif as usize];
        let (mac, addr, attach) = (info.mac, info.addr, info.attach);
        let Some(mut f) = out.alloc() else { return };
        let request = arp::Repr {
            operation: arp::op::REQUEST,
            sender_mac: mac,
            sender_ip: addr,
            target_mac: MacAddr::ZERO,
            target_ip: target,
        };
        let buf = arp_frame(MacAddr::BROADCAST, &request);
        // Cannot fail: 60 bytes fit any buffer.
        let _ = f.load(&buf);
        self.stats.arp_requests += 1;
        out.note("router", || format!("ARP request for {target}"));
        out.to_attach(attach, f);
    }
}

/// An Ethernet frame (60 bytes, zero-padded) to `eth_dst` from the message's sender carrying `msg`.
fn arp_frame(eth_dst: MacAddr, msg: &arp::Repr) -> [u8; MIN_FRAME_LEN] {
    let mut buf = [0u8; MIN_FRAME_LEN];
    let (head, body) = buf.split_at_mut(ethernet::HEADER_LEN);
    let mut eth = ethernet::Packet::new_unchecked(head);
    eth.set_dst_addr(eth_dst);
    eth.set_src_addr(msg.sender_mac);
    eth.set_ethertype(ethertype::ARP);
    msg.emit(&mut arp::Packet::new_unchecked(body));
    buf
}
