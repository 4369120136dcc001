//! Reading a packet's tuple and writing a translation into it: addresses, ports or ICMP echo identifier, with
//! the IPv4 header checksum and the transport checksum updated incrementally (RFC 1624, each folded once:
//! [`checksum::Delta`]). Every header is read and written through [`crate::wire`] views.
//!
//! [`apply`] is the per-packet writer: for the common case (an option-less IPv4 header followed by a whole
//! TCP or UDP header) it works on fixed-size views, with no bounds check per field; anything else (and the
//! packet an ICMP error quotes, whose transport header may be cut after 8 bytes) takes [`rewrite_at`].
//!
//! **Partial checksums** ([`Parsed::csum_partial`]: a sender with checksum offload left only the pseudo-header
//! sum in the TCP/UDP checksum field, to be completed by whoever transmits the frame): [`rewrite_partial`]
//! moves that sum by the address changes alone (the pseudo-header's part), since the ports are summed when the
//! checksum is completed; a UDP field of 0 is a sum like any other there, not "no checksum". Completing the
//! rewritten frame gives the same bytes as rewriting the completed frame (property-tested below).

use super::{echo_id, Rewrite, ZONE};
use crate::conntrack::{Proto, Tuple};
use crate::packet::{ip_proto, Parsed};
use crate::wire::icmpv4::{self, msg_type};
use crate::wire::{self, checksum, ipv4, tcp, udp};

/// Transport bytes a tuple needs: TCP/UDP ports, or the ICMP header with its echo identifier (all an ICMP
/// error is sure to quote, RFC 792).
pub(super) const TUPLE_L4_LEN: usize = 8;

/// The tuple of the IPv4 packet whose header is at `l3` and transport header at `l4` (inside `d[..end]`), if
/// it is TCP, UDP or ICMP echo; `None` otherwise, or if the headers are not there.
#[inline(always)]
pub(super) fn tuple_at(d: &[u8], l3: usize, l4: usize, proto: u8, end: usize) -> Option<Tuple> {
    // Two bounds checks up front (the fixed IP header, the first 8 transport bytes); the reads below are then
    // free of them.
    let ip = ipv4::Header::at(d, l3)?;
    let l4h: &[u8; TUPLE_L4_LEN] = wire::fixed(d.get(..end)?, l4)?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    match proto {
        ip_proto::TCP => {
            // Only the ports: an unchecked view of the first 8 bytes.
            let t = tcp::Packet::new_unchecked(l4h);
            Some(Tuple::new(ZONE, Proto::Tcp, (src, t.src_port()), (dst, t.dst_port())))
        }
        ip_proto::UDP => {
            let u = udp::Packet::new_unchecked(l4h);
            Some(Tuple::new(ZONE, Proto::Udp, (src, u.src_port()), (dst, u.dst_port())))
        }
        ip_proto::ICMP => {
            let m = icmpv4::Packet::new_unchecked(l4h);
            match (m.msg_type(), m.code()) {
                (msg_type::ECHO_REQUEST, 0) => Some(Tuple::icmp_echo_request(ZONE, src, dst, m.echo_ident())),
                (msg_type::ECHO_REPLY, 0) => Some(Tuple::icmp_echo_reply(ZONE, src, dst, m.echo_ident())),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The tuple of a parsed frame (not for later fragments: they carry no transport header).
#[inline]
pub(super) fn packet_tuple(d: &[u8], p: &Parsed) -> Option<Tuple> {
    if p.l4 == 0 {
        return None;
    }
    tuple_at(d, p.l3 as usize, p.l4 as usize, p.ip_proto, p.l3_end as usize)
}

/// Writes the address changes of `from` → `to` into the IPv4 header and its checksum; returns the changes, for
/// the transport checksum's pseudo-header.
#[inline(always)]
fn rewrite_addrs<T: AsRef<[u8]> + AsMut<[u8]>>(ip: &mut ipv4::Packet<T>, from: &Tuple, to: &Tuple) -> checksum::Delta {
    let mut delta = checksum::Delta::default();
    if from.src != to.src {
        ip.set_src_addr(to.src);
        delta.add32(u32::from(from.src), u32::from(to.src));
    }
    if from.dst != to.dst {
        ip.set_dst_addr(to.dst);
        delta.add32(u32::from(from.dst), u32::from(to.dst));
    }
    let c = delta.apply(ip.checksum());
    ip.set_checksum(c);
    delta
}

/// Rewrites the IPv4 packet at `l3`/`l4` (ending at `end`) from tuple `from` to `to`, updating the IP header
/// checksum and the transport checksum incrementally — the latter only when it lies inside `d[..end]` (a
/// quoted packet may stop before it) and, for UDP, is not 0 ("none"). Does nothing if the IP header or 8
/// transport bytes are not there (callers found the tuple in them).
pub(super) fn rewrite_at(d: &mut [u8], l3: usize, l4: usize, end: usize, from: &Tuple, to: &Tuple) {
    let Some(d) = d.get_mut(..end) else { return };
    if l4 > d.len() {
        return;
    }
    let (head, seg) = d.split_at_mut(l4);
    let (Some(mut ip), true) = (ipv4::HeaderMut::at_mut(head, l3), seg.len() >= TUPLE_L4_LEN) else { return };
    // The address changes go into both checksums (the transport one through its pseudo-header), the port or
    // identifier changes into the transport one; each checksum is updated once, at the end.
    let mut delta = rewrite_addrs(&mut ip, from, to);
    match from.proto {
        Proto::Tcp => {
            let mut t = tcp::Packet::new_unchecked(seg);
            if from.sport != to.sport {
                t.set_src_port(to.sport);
                delta.add16(from.sport, to.sport);
            }
            if from.dport != to.dport {
                t.set_dst_port(to.dport);
                delta.add16(from.dport, to.dport);
            }
            if t.holds_checksum() {
                let c = delta.apply(t.checksum());
                t.set_checksum(c);
            }
        }
        Proto::Udp => {
            let mut u = udp::Packet::new_unchecked(seg);
            if from.sport != to.sport {
                u.set_src_port(to.sport);
                delta.add16(from.sport, to.sport);
            }
            if from.dport != to.dport {
                u.set_dst_port(to.dport);
                delta.add16(from.dport, to.dport);
            }
            set_udp_checksum(&mut u, delta);
        }
        Proto::Icmp => {
            let (old, new) = (echo_id(from), echo_id(to));
            if old != new {
                let mut m = icmpv4::Packet::new_unchecked(seg);
                m.set_echo_ident(new);
                let c = checksum::update16(m.checksum(), old, new);
                m.set_checksum(c);
            }
        }
    }
}

/// A UDP checksum of 0 means "none": it stays 0; a computed 0 is sent as 0xffff.
#[inline(always)]
fn set_udp_checksum<T: AsRef<[u8]> + AsMut<[u8]>>(u: &mut udp::Packet<T>, delta: checksum::Delta) {
    let sum = u.checksum();
    if sum != 0 {
        let c = delta.apply(sum);
        u.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

/// Writes `rw` into the frame's packet (see [`Rewrite`]).
#[inline(always)]
pub fn apply(d: &mut [u8], p: &Parsed, rw: &Rewrite) {
    apply_tuples(d, p, &rw.from, &rw.to);
}

/// [`apply`] of the rewrite `from` → `to`, given as two tuples wherever they are.
#[inline(always)]
pub(super) fn apply_tuples(d: &mut [u8], p: &Parsed, from: &Tuple, to: &Tuple) {
    let (l3, l4, end) = (p.l3 as usize, p.l4 as usize, p.l3_end as usize);
    if p.csum_partial {
        return rewrite_partial(d, l3, l4, end, from, to);
    }
    // The common case, a whole TCP or UDP header after an option-less IP header, on fixed-size views of the two
    // headers (no bounds check per field); anything else takes the general path.
    if l4 == l3 + ipv4::HEADER_LEN && end <= d.len() {
        let (head, seg) = d.split_at_mut(l4);
        let seg = &mut seg[..end - l4];
        if let Some(mut ip) = ipv4::HeaderMut::at_mut(head, l3) {
            match from.proto {
                Proto::Tcp => {
                    if let Some(t) = tcp::HeaderMut::at_mut(seg, 0) {
                        return rewrite_tcp(&mut ip, t, from, to);
                    }
                }
                Proto::Udp => {
                    if let Some(u) = udp::HeaderMut::at_mut(seg, 0) {
                        return rewrite_udp(&mut ip, u, from, to);
                    }
                }
                Proto::Icmp => {}
            }
        }
    }
    rewrite_at(d, l3, l4, end, from, to);
}

/// [`rewrite_at`] for a TCP or UDP packet whose checksum field holds a partial checksum (see the module
/// documentation): addresses and ports written, the IP header checksum updated, the partial sum moved by the
/// address changes only. Does nothing if the headers are not there (ingress checked they are).
#[cold]
#[inline(never)]
fn rewrite_partial(d: &mut [u8], l3: usize, l4: usize, end: usize, from: &Tuple, to: &Tuple) {
    let Some(d) = d.get_mut(..end) else { return };
    if l4 > d.len() {
        return;
    }
    let (head, seg) = d.split_at_mut(l4);
    let Some(mut ip) = ipv4::HeaderMut::at_mut(head, l3) else { return };
    let delta = rewrite_addrs(&mut ip, from, to);
    match from.proto {
        Proto::Tcp => {
            let mut t = tcp::Packet::new_unchecked(seg);
            if !t.holds_checksum() {
                return;
            }
            t.set_src_port(to.sport);
            t.set_dst_port(to.dport);
            let c = delta.apply_to_partial(t.checksum());
            t.set_checksum(c);
        }
        Proto::Udp => {
            let mut u = udp::Packet::new_unchecked(seg);
            if !u.holds_checksum() {
                return;
            }
            u.set_src_port(to.sport);
            u.set_dst_port(to.dport);
            let c = delta.apply_to_partial(u.checksum());
            u.set_checksum(c);
        }
        // Ingress marks only TCP and UDP partial.
        Proto::Icmp => {}
    }
}

/// [`rewrite_at`] for a TCP packet given as fixed-size views: the same bytes written, with the same checksums.
#[inline(always)]
fn rewrite_tcp(ip: &mut ipv4::HeaderMut, mut t: tcp::HeaderMut, from: &Tuple, to: &Tuple) {
    let mut delta = rewrite_addrs(ip, from, to);
    if from.sport != to.sport {
        t.set_src_port(to.sport);
        delta.add16(from.sport, to.sport);
    }
    if from.dport != to.dport {
        t.set_dst_port(to.dport);
        delta.add16(from.dport, to.dport);
    }
    let c = delta.apply(t.checksum());
    t.set_checksum(c);
}

/// [`rewrite_at`] for a UDP packet given as fixed-size views: the same bytes written, with the same checksums.
#[inline(always)]
fn rewrite_udp(ip: &mut ipv4::HeaderMut, mut u: udp::HeaderMut, from: &Tuple, to: &Tuple) {
    let mut delta = rewrite_addrs(ip, from, to);
    if from.sport != to.sport {
        u.set_src_port(to.sport);
        delta.add16(from.sport, to.sport);
    }
    if from.dport != to.dport {
        u.set_dst_port(to.dport);
        delta.add16(from.dport, to.dport);
    }
    set_udp_checksum(&mut u, delta);
}

#[cfg(test)]
mod tests {
    use super::*;
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
                udp::Packet::new_unchecked(&mut fast[34..]).set_checksum(0);
            }
            let mut general = fast.clone();
            let p = Parsed { l3: 14, l4: 34, l3_end: 64, ip_proto: if tcp { 6 } else { 17 }, ..Default::default() };
            apply(&mut fast, &p, &Rewrite { from, to });
            rewrite_at(&mut general, 14, 34, 64, &from, &to);
            prop_assert_eq!(&fast, &general);
        }

        /// A rewrite keeps right checksums right: the incremental updates equal full recomputes, for TCP, UDP
        /// (with and without a checksum) and ICMP echo, through the fast and the general path.
        #[test]
        fn incremental_rewrite_equals_full_recompute(
            proto in 0u8..3,
            payload in 0usize..40,
            from in any::<([u8; 4], u16, [u8; 4], u16)>(),
            to in any::<([u8; 4], u16, [u8; 4], u16)>(),
            no_udp_sum: bool,
        ) {
            use crate::wire::builder::{Ipv4Spec, TcpFlags, TcpSegment};
            use crate::wire::MacAddr;
            let spec = Ipv4Spec::new(MacAddr::ZERO, MacAddr::ZERO, from.0.into(), from.2.into());
            let mut f = match proto {
                0 => spec.tcp(TcpSegment::new(from.1, from.3, TcpFlags::ACK), payload),
                1 => spec.udp(from.1, from.3, payload),
                _ => spec.icmp_echo_request(from.1, 1, payload),
            };
            if proto == 1 && no_udp_sum {
                udp::Packet::new_unchecked(&mut f[34..]).set_checksum(0);
            }
            let p = crate::packet::parse(&f).unwrap();
            let old = packet_tuple(&f, &p).unwrap();
            let mut new = Tuple { src: to.0.into(), dst: to.2.into(), ..old };
            match old.proto {
                Proto::Icmp => new.sport = to.1,
                _ => (new.sport, new.dport) = (to.1, to.3),
            }
            let mut general = f.clone();
            apply(&mut f, &p, &Rewrite { from: old, to: new });
            rewrite_at(&mut general, 14, 34, usize::from(p.l3_end), &old, &new);
            prop_assert_eq!(&f, &general);
            prop_assert_eq!(packet_tuple(&f, &p), Some(new));
            let ip = ipv4::Packet::new_checked(&f[14..usize::from(p.l3_end)]).unwrap();
            prop_assert!(ip.verify_checksum());
            let (s, d) = (ip.src_addr(), ip.dst_addr());
            let ok = match old.proto {
                Proto::Tcp => tcp::Packet::new_checked(ip.payload()).unwrap().verify_checksum_ipv4(s, d),
                Proto::Udp => {
                    let u = udp::Packet::new_checked(ip.payload()).unwrap();
                    prop_assert_eq!(u.checksum() == 0, no_udp_sum, "a zero UDP checksum stays zero, no other");
                    u.verify_checksum_ipv4(s, d)
                }
                Proto::Icmp => icmpv4::Packet::new_checked(ip.payload()).unwrap().verify_checksum(),
            };
            prop_assert!(ok, "transport checksum after the rewrite");
        }

        /// NAT of a frame with a partial checksum (as a sender with checksum offload hands it over), then
        /// completion, gives the same bytes as NAT of the completed frame: for TCP and UDP, short frames and
        /// super-frame-sized ones (a super-frame's partial checksum is the same kind of sum), whichever of the four
        /// fields change.
        #[test]
        fn nat_of_a_partial_checksum_then_completion_equals_nat_of_the_completed_frame(
            tcp in any::<bool>(),
            payload in prop_oneof![0usize..64, 1400usize..4000],
            from in any::<([u8; 4], u16, [u8; 4], u16)>(),
            to in any::<([u8; 4], u16, [u8; 4], u16)>(),
            keep in any::<[bool; 4]>(),
        ) {
            use crate::offload::offloaded_form;
            use crate::port::gso::complete_checksum;
            use crate::wire::builder::{Ipv4Spec, TcpFlags, TcpSegment};
            use crate::wire::MacAddr;
            let spec = Ipv4Spec::new(MacAddr::ZERO, MacAddr::ZERO, from.0.into(), from.2.into());
            let complete = if tcp {
                spec.tcp(TcpSegment::new(from.1, from.3, TcpFlags::ACK), payload)
            } else {
                spec.udp(from.1, from.3, payload)
            };
            let (mut partial, o) = offloaded_form(&complete, None).unwrap();
            let p = crate::packet::parse(&complete).unwrap();
            let old = packet_tuple(&complete, &p).unwrap();
            let mut new = Tuple { src: to.0.into(), dst: to.2.into(), sport: to.1, dport: to.3, ..old };
            if keep[0] { new.src = old.src; }
            if keep[1] { new.sport = old.sport; }
            if keep[2] { new.dst = old.dst; }
            if keep[3] { new.dport = old.dport; }
            let rw = Rewrite { from: old, to: new };

            let mut expected = complete.clone();
            apply(&mut expected, &p, &rw);
            apply(&mut partial, &Parsed { csum_partial: true, ..p }, &rw);
            let (start, offset) = o.partial_csum().unwrap();
            prop_assert!(complete_checksum(&mut partial, start.into(), offset.into()));
            prop_assert_eq!(&partial, &expected);
        }
    }
}
