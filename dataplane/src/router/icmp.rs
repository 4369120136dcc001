//! The switch's own ICMP (RFC 792, RFC 1812 §4.3.2): echo replies for its addresses and the errors it sends
//! about packets it cannot forward. Out of line: neither is per-packet work.

use super::{martian, set_macs, Router};
use crate::buffer::{Frame, Nanos};
use crate::counters::DropReason;
use crate::neigh::RifId;
use crate::offload::Offload;
use crate::packet::{ip_proto, Parsed};
use crate::stage::{Egress, Tracer};
use crate::wire::builder::MIN_FRAME_LEN;
use crate::wire::icmpv4::{self, msg_type, unreachable};
use crate::wire::{ethernet, ethertype, ipv4};

/// Bytes of the offending packet's payload an error quotes after its IP header (RFC 792: 64 bits).
const QUOTED_DATA: usize = 8;
/// Longest error the router sends: Ethernet, IPv4, ICMP, the quoted header (options included) and data.
const MAX_ERROR_LEN: usize =
    ethernet::HEADER_LEN + ipv4::HEADER_LEN + icmpv4::HEADER_LEN + ipv4::MAX_HEADER_LEN + QUOTED_DATA;

impl Router {
    /// Answers an echo request to the address of `rif` in place (any other packet for us is dropped).
    #[inline(never)]
    pub(super) fn local<T: Tracer>(
        &mut self,
        now: Nanos,
        rif: RifId,
        mut frame: Frame,
        parsed: &Parsed,
        out: &mut Egress<T>,
    ) {
        let (l3, l4, end) = (parsed.l3 as usize, parsed.l4 as usize, parsed.l3_end as usize);
        let d = frame.data();
        let msg = if parsed.ip_proto == ip_proto::ICMP && l4 != 0 { d.get(l4..end) } else { None };
        let Some(msg) = msg.and_then(|m| icmpv4::Packet::new_checked(m).ok()) else {
            return out.drop(frame, DropReason::LocalUnsupported);
        };
        if msg.msg_type() != msg_type::ECHO_REQUEST || msg.code() != 0 {
            return out.drop(frame, DropReason::LocalUnsupported);
        }
        if !msg.verify_checksum() {
            return out.drop(frame, DropReason::BadL4Checksum);
        }
        let (Some(eth), Some(ip)) = (ethernet::Header::at(d, 0), ipv4::Header::at(d, l3)) else {
            return out.drop(frame, DropReason::TruncatedIpHeader);
        };
        let (sender_mac, to_mac, sender) = (eth.src_addr(), eth.dst_addr(), ip.src_addr());
        if martian(sender) {
            return out.drop(frame, DropReason::NotRoutable);
        }
        if !self.echo.take(now) {
            self.stats.icmp_rate_limited += 1;
            return out.free(frame);
        }
        let our_addr = out.topo().rifs[rif as usize].addr;
        let in_mac = out.rif_of_port(frame.port).map(|r| out.topo().rifs[r as usize].mac);
        // The reply is the switch's own frame, its checksum verified above: it claims nothing of the request's.
        frame.offload = Offload::NONE;
        let d = frame.data_mut();
        // Ethernet: back to the sender, from the interface it reached.
        set_macs(d, sender_mac, in_mac.unwrap_or(to_mac));
        // IPv4 (option-less: the router drops packets with options first): swap addresses, fresh TTL, recompute
        // the header checksum.
        if let Some(mut ip) = ipv4::HeaderMut::at_mut(d, l3) {
            ip.set_src_addr(our_addr);
            ip.set_dst_addr(sender);
            ip.set_ttl(64);
            ip.fill_checksum();
        }
        // ICMP: echo request → reply, incremental checksum.
        if let Some(mut m) = icmpv4::HeaderMut::at_mut(d, l4) {
            m.rewrite_msg_type(msg_type::ECHO_REPLY);
        }
        self.stats.echo_replies += 1;
        out.note("router", || format!("echo reply to {sender}"));
        let port = frame.port;
        out.to_port(port, frame);
    }

    /// Sends an ICMP error about `orig` (received on `in_rif`) back to its sender, if the rules allow.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn icmp_error<T: Tracer>(
        &mut self,
        now: Nanos,
        in_rif: RifId,
        orig: &Frame,
        parsed: &Parsed,
        kind: u8,
        code: u8,
        mtu: u16,
        out: &mut Egress<T>,
    ) {
        let (l3, end) = (parsed.l3 as usize, parsed.l3_end as usize);
        let d = orig.data();
        if parsed.ethertype != ethertype::IPV4 || parsed.later_fragment {
            return;
        }
        // The offending packet (its header whole: ingress checked, or the frame would not be IPv4 here).
        let Some(packet) = d.get(l3..end) else { return };
        let (Some(eth), Some(ip)) = (ethernet::Header::at(d, 0), ipv4::Header::at(packet, 0)) else { return };
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        // Nor about the tunnel packets the overlay sent (a VTEP's next hop that did not answer): the sender is
        // the switch itself. (Masqueraded packets also carry one of our addresses: they do get their errors.)
        if martian(src) || dst.is_broadcast() || dst.is_multicast() || out.is_tunnel_packet(src, dst) {
            return;
        }
        let about_an_error = parsed.ip_proto == ip_proto::ICMP
            && parsed.l4 != 0
            && icmpv4::Header::at(d, parsed.l4 as usize).is_some_and(|m| icmpv4::is_error(m.msg_type()));
        if about_an_error {
            return;
        }
        let sender_mac = eth.src_addr();
        if sender_mac.is_multicast() {
            return;
        }
        if !self.icmp_errors[super::ErrorClass::of(kind, code) as usize].take(now) {
            self.stats.icmp_rate_limited += 1;
            return;
        }
        let rif = &out.topo().rifs[in_rif as usize];
        let (our_mac, our_addr) = (rif.mac, rif.addr);
        let quoted = &packet[..(ip.header_len() + QUOTED_DATA).min(packet.len())];
        let msg_len = icmpv4::HEADER_LEN + quoted.len();
        let ip_len = ipv4::HEADER_LEN + msg_len;
        // At most MAX_ERROR_LEN, so this never fails.
        let Ok(total_len) = u16::try_from(ip_len) else { return };
        let mut buf = [0u8; MAX_ERROR_LEN];
        let (head, rest) = buf.split_at_mut(ethernet::HEADER_LEN);
        let mut e = ethernet::Packet::new_unchecked(head);
        e.set_dst_addr(sender_mac);
        e.set_src_addr(our_mac);
        e.set_ethertype(ethertype::IPV4);
        let (ip_hdr, rest) = rest.split_at_mut(ipv4::HEADER_LEN);
        let mut h = ipv4::Packet::new_unchecked(ip_hdr);
        h.set_version_and_header_len(ipv4::HEADER_LEN);
        h.set_total_len(total_len);
        h.set_ttl(64);
        h.set_protocol(ip_proto::ICMP);
        h.set_src_addr(our_addr);
        h.set_dst_addr(src);
        h.fill_checksum();
        let mut m = icmpv4::Packet::new_unchecked(&mut rest[..msg_len]);
        m.set_msg_type(kind);
        m.set_code(code);
        if kind == msg_type::DEST_UNREACHABLE && code == unreachable::FRAG_NEEDED {
            m.set_next_hop_mtu(mtu);
        }
        m.payload_mut().copy_from_slice(quoted);
        m.fill_checksum();
        let len = (ethernet::HEADER_LEN + ip_len).max(MIN_FRAME_LEN);
        let Some(mut f) = out.alloc() else { return };
        // Cannot fail: at most MAX_ERROR_LEN bytes.
        let _ = f.load(&buf[..len]);
        f.ts = orig.ts;
        f.port = orig.port;
        self.stats.icmp_errors += 1;
        out.note("router", || format!("ICMP error type {kind} code {code} to {src}"));
        out.to_port(orig.port, f);
    }
}
