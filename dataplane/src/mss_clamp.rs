//! TCP MSS clamping: lowering the maximum segment size a TCP SYN or SYN-ACK announces, so that neither end of a
//! connection sends segments too long for a link on its path (a port whose MTU is below the hosts', an overlay).
//! What iptables' `TCPMSS --set-mss N` / `--clamp-mss-to-pmtu` does; configured per port (`[[port]] mss_clamp`),
//! applied to the SYNs that enter the switch through the port and to those that leave through it, so both ends
//! of a connection crossing the port learn the lower value.
//!
//! One function over one whole Ethernet frame, [`clamp`], so any stage can use it (the egress queueing in
//! `stage.rs`, the ingress of a port; an overlay for the inner frame before encapsulating). It reads and writes
//! through the `wire` views only.
//!
//! # Invariants
//! - Only an unfragmented TCP SYN (with or without ACK, without RST) over IPv4 or IPv6 (no extension headers),
//!   behind up to two VLAN tags, whose header carries a well-formed MSS option above the limit is changed; the
//!   MSS is never raised, no option is added, the frame's length never changes. Anything else, malformed
//!   included, is left as it is (cannot panic).
//! - The TCP checksum stays right: a complete checksum gets the RFC 1624 incremental update for the 16 bits that
//!   changed (byte-swapped when the value sits at an odd offset from the header's start, as after a single
//!   NOP); a partial checksum (checksum offload: the field holds only the pseudo-header sum, the header's bytes
//!   are summed when it is completed) needs none. A "verified" mark is dropped, as after any rewrite.
//!
//! Threads: pure functions; any thread.

use crate::buffer::Frame;
use crate::wire::{checksum, ethernet, ethertype, ip_proto, ipv4, ipv6, tcp};

/// The largest MSS a port lets SYNs announce, per IP version; 0 means no clamp for that version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MssLimit {
    /// For TCP over IPv4.
    pub v4: u16,
    /// For TCP over IPv6.
    pub v6: u16,
}

impl MssLimit {
    /// No clamp.
    pub const NONE: MssLimit = MssLimit { v4: 0, v6: 0 };

    /// True when nothing is clamped (the one test a port without a clamp pays per frame).
    #[inline(always)]
    pub fn is_none(&self) -> bool {
        (self.v4 | self.v6) == 0
    }
}

/// What [`clamp`] did to a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamped {
    /// Not a TCP SYN the clamp applies to (or not parseable as one): untouched.
    NotSyn,
    /// A SYN without an MSS option, or with one already at most the limit: untouched.
    Kept,
    /// The MSS option was lowered from `from` to `to` and the checksum updated.
    Lowered {
        /// What the sender announced.
        from: u16,
        /// What the frame announces now.
        to: u16,
    },
}

/// Lowers the MSS option of `frame` to `limit` if it is a TCP SYN announcing more (see the module
/// documentation); returns what it did.
#[inline]
pub fn clamp(frame: &mut Frame, limit: MssLimit) -> Clamped {
    let partial = frame.offload.partial_csum().is_some();
    let done = clamp_bytes(frame.data_mut(), limit, partial);
    if matches!(done, Clamped::Lowered { .. }) {
        frame.offload.clear_verified();
    }
    done
}

/// [`clamp`] over raw frame bytes; `partial` says the TCP checksum field holds only the pseudo-header sum.
pub fn clamp_bytes(data: &mut [u8], limit: MssLimit, partial: bool) -> Clamped {
    let Some(l3) = ethernet::Packet::new_checked(&*data).ok().and_then(|e| e.layer3()) else {
        return Clamped::NotSyn;
    };
    let (l4, max) = match l3.ethertype {
        ethertype::IPV4 => {
            let Some(ip) = ipv4::Header::at(data, l3.offset) else { return Clamped::NotSyn };
            if ip.protocol() != ip_proto::TCP || ip.is_fragment() || ip.header_len() < ipv4::HEADER_LEN {
                return Clamped::NotSyn;
            }
            (l3.offset + ip.header_len(), limit.v4)
        }
        ethertype::IPV6 => {
            let Some(ip) = ipv6::Header::at(data, l3.offset) else { return Clamped::NotSyn };
            if ip.next_header() != ip_proto::TCP {
                return Clamped::NotSyn;
            }
            (l3.offset + ipv6::HEADER_LEN, limit.v6)
        }
        _ => return Clamped::NotSyn,
    };
    let Some(seg) = data.get_mut(l4..) else { return Clamped::NotSyn };
    let Ok(mut t) = tcp::Packet::new_checked(seg) else { return Clamped::NotSyn };
    if t.flags() & (tcp::flags::SYN | tcp::flags::RST) != tcp::flags::SYN || max == 0 {
        return Clamped::NotSyn;
    }
    match t.mss_option() {
        Some(mss) if mss > max => {}
        _ => return Clamped::Kept,
    }
    let Some((at, from)) = t.set_mss_option(max) else { return Clamped::Kept };
    if !partial {
        // The value's bytes are summed as they fall in the header's 16-bit words: swapped at an odd offset.
        let (old, new) = if at % 2 == 0 { (from, max) } else { (from.swap_bytes(), max.swap_bytes()) };
        t.set_checksum(checksum::update16(t.checksum(), old, new));
    }
    Clamped::Lowered { from, to: max }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::BufPool;
    use crate::offload::{offloaded_form, Offload};
    use crate::port::gso;
    use crate::wire::builder::{with_vlan, Ipv4Spec, Ipv6Spec, TcpFlags, TcpOption, TcpSegment};
    use crate::wire::MacAddr;
    use etherparse::{SlicedPacket, TransportSlice};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const LIMIT: MssLimit = MssLimit { v4: 1360, v6: 1340 };

    /// A Linux-like SYN's options: MSS first (aligned), then SACK permitted, timestamps, NOP, window scale.
    const LINUX: &[TcpOption] = &[
        TcpOption::MaximumSegmentSize(1460),
        TcpOption::SelectiveAcknowledgementPermitted,
        TcpOption::Timestamp(1, 0),
        TcpOption::Noop,
        TcpOption::WindowScale(7),
    ];
    /// The MSS value at an odd offset (after one NOP).
    const ODD: &[TcpOption] = &[TcpOption::Noop, TcpOption::MaximumSegmentSize(8960), TcpOption::Noop];

    fn v4() -> Ipv4Spec {
        Ipv4Spec::new(A, B, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
    }

    fn v6() -> Ipv6Spec {
        Ipv6Spec::new(A, B, Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1), Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2))
    }

    fn syn(flags: TcpFlags, options: &'static [TcpOption]) -> TcpSegment {
        TcpSegment::new(40000, 80, flags).seq(7).options(options)
    }

    /// The MSS etherparse reads from `frame` and whether etherparse finds its TCP checksum right.
    fn decoded(frame: &[u8]) -> (Option<u16>, bool) {
        let p = SlicedPacket::from_ethernet(frame).expect("parses");
        let Some(TransportSlice::Tcp(t)) = p.transport else { panic!("not TCP") };
        let mss = t.options_iterator().find_map(|o| match o.expect("well-formed options") {
            TcpOption::MaximumSegmentSize(m) => Some(m),
            _ => None,
        });
        let ok = match p.net.expect("IP") {
            etherparse::NetSlice::Ipv4(ip) => {
                t.calc_checksum_ipv4(ip.header().source(), ip.header().destination()).unwrap() == t.checksum()
            }
            etherparse::NetSlice::Ipv6(ip) => {
                t.calc_checksum_ipv6(ip.header().source(), ip.header().destination()).unwrap() == t.checksum()
            }
        };
        (mss, ok)
    }

    fn clamped(mut frame: Vec<u8>, limit: MssLimit) -> (Clamped, Vec<u8>) {
        let r = clamp_bytes(&mut frame, limit, false);
        (r, frame)
    }

    #[test]
    fn syn_and_syn_ack_are_lowered_with_a_checksum_an_independent_decoder_accepts() {
        for flags in [TcpFlags::SYN, TcpFlags::SYN | TcpFlags::ACK] {
            for (frame, want) in [(v4().tcp(syn(flags, LINUX), 0), 1360), (v6().tcp(syn(flags, LINUX), 0), 1340)] {
                assert_eq!(decoded(&frame), (Some(1460), true));
                let (r, out) = clamped(frame.clone(), LIMIT);
                assert_eq!(r, Clamped::Lowered { from: 1460, to: want });
                assert_eq!(decoded(&out), (Some(want), true), "{flags:?}");
                let changed: Vec<usize> = (0..out.len()).filter(|&i| out[i] != frame[i]).collect();
                assert!(changed.len() <= 4, "only the MSS value and the checksum change: {changed:?}");
            }
        }
    }

    #[test]
    fn an_odd_offset_and_vlan_tags_keep_the_checksum_right() {
        let frame = v4().tcp(syn(TcpFlags::SYN, ODD), 0);
        let (r, out) = clamped(frame, LIMIT);
        assert_eq!(r, Clamped::Lowered { from: 8960, to: 1360 });
        assert_eq!(decoded(&out), (Some(1360), true));
        let tagged = with_vlan(&with_vlan(&v4().tcp(syn(TcpFlags::SYN, LINUX), 0), 20), 10);
        let (r, out) = clamped(tagged, LIMIT);
        assert_eq!(r, Clamped::Lowered { from: 1460, to: 1360 });
        assert_eq!(decoded(&out), (Some(1360), true));
    }

    #[test]
    fn what_is_not_a_syn_above_the_limit_is_untouched() {
        let keep = |frame: Vec<u8>, limit: MssLimit, want: Clamped| {
            let (r, out) = clamped(frame.clone(), limit);
            assert_eq!(r, want);
            assert_eq!(out, frame);
        };
        keep(v4().tcp(syn(TcpFlags::SYN, LINUX), 0), MssLimit { v4: 1460, v6: 1 }, Clamped::Kept);
        keep(v4().tcp(syn(TcpFlags::SYN, LINUX), 0), MssLimit { v4: 9000, v6: 0 }, Clamped::Kept);
        keep(v4().tcp(syn(TcpFlags::SYN, &[]), 0), LIMIT, Clamped::Kept);
        keep(v4().tcp(syn(TcpFlags::SYN, LINUX), 0), MssLimit { v4: 0, v6: 1200 }, Clamped::NotSyn);
        keep(v4().tcp(syn(TcpFlags::ACK, LINUX), 0), LIMIT, Clamped::NotSyn);
        keep(v4().tcp(syn(TcpFlags::SYN | TcpFlags::RST, LINUX), 0), LIMIT, Clamped::NotSyn);
        keep(v4().udp(1, 2, 30), LIMIT, Clamped::NotSyn);
        // A fragment carries no TCP header to read.
        let mut frag = v4().tcp(syn(TcpFlags::SYN, LINUX), 0);
        ipv4::Packet::new_unchecked(&mut frag[14..34]).set_flags_frag(0x2000);
        keep(frag, LIMIT, Clamped::NotSyn);
        // Malformed options: a length running past the header, a zero length, an MSS of length 3.
        for bad in [[2u8, 9, 5, 0xb4], [3, 0, 5, 0xb4], [2, 3, 5, 0xb4]] {
            let mut f = v4().tcp(syn(TcpFlags::SYN, &[TcpOption::MaximumSegmentSize(1460)]), 0);
            f[54..58].copy_from_slice(&bad);
            keep(f, LIMIT, Clamped::Kept);
        }
        // END before the MSS option.
        let mut f = v4().tcp(syn(TcpFlags::SYN, ODD), 0);
        f[54] = tcp::option::END;
        keep(f, LIMIT, Clamped::Kept);
    }

    #[test]
    fn every_truncation_and_corruption_is_survived() {
        let frame = v4().tcp(syn(TcpFlags::SYN, LINUX), 0);
        for cut in 0..frame.len() {
            let mut f = frame[..cut].to_vec();
            let _ = clamp_bytes(&mut f, LIMIT, false);
        }
        for at in 0..frame.len() {
            for v in [0u8, 1, 2, 4, 0x45, 0xff] {
                let mut f = frame.clone();
                f[at] = v;
                let _ = clamp_bytes(&mut f, LIMIT, false);
            }
        }
    }

    #[test]
    fn a_partial_checksum_is_left_for_completion_and_completes_right() {
        let complete = v4().tcp(syn(TcpFlags::SYN, ODD), 0);
        let (mut partial, offload) = offloaded_form(&complete, None).expect("offloadable");
        let mut pool = BufPool::new(1);
        let mut f = pool.alloc().unwrap();
        f.load(&partial).unwrap();
        f.offload = offload;
        let field = partial[50..52].to_vec();
        assert_eq!(clamp(&mut f, LIMIT), Clamped::Lowered { from: 8960, to: 1360 });
        assert_eq!(&f.data()[50..52], &field[..], "the pseudo-header sum stays as it is");
        partial.copy_from_slice(f.data());
        let (start, offset) = offload.partial_csum().unwrap();
        assert!(gso::complete_checksum(&mut partial, usize::from(start), usize::from(offset)));
        assert_eq!(decoded(&partial), (Some(1360), true), "completed after the clamp: right");
        assert_eq!(partial, clamped(complete, LIMIT).1, "same bytes as clamping the complete frame");
        // A verified mark does not survive a rewrite.
        let mut g = pool_frame(&v4().tcp(syn(TcpFlags::SYN, LINUX), 0));
        g.offload = Offload::verified();
        assert!(matches!(clamp(&mut g, LIMIT), Clamped::Lowered { .. }));
        assert!(!g.offload.is_verified());
    }

    fn pool_frame(bytes: &[u8]) -> Frame {
        let mut f = BufPool::new(1).alloc().unwrap();
        f.load(bytes).unwrap();
        f
    }
}
