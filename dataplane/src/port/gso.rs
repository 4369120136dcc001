//! Software segmentation of GSO super-frames (the `virtio_net_hdr` a packet socket with `PACKET_VNET_HDR`
//! prepends to each frame), for ports that receive a host stack's TSO/GSO output unsegmented (a veth with default
//! offloads hands up to 64 KiB TCP "super-frames" to a packet socket).
//!
//! # What it owns
//! Nothing: [`VnetHdr`] ([`crate::wire::virtio_net_hdr::Repr`]) decodes the 10-byte header, [`SuperFrame::plan`] checks a super-frame's headers and
//! says how to cut it, [`SuperFrame::write_segment`] writes one segment (headers copied, lengths, IPv4
//! identification, TCP sequence number and flags patched, IPv4 header and TCP/UDP checksums computed in full)
//! into a caller's buffer. The caller (the AF_PACKET port) decides where the bytes come from (the receive ring)
//! and where they go (pool buffers), and may stop after any segment and continue later: segment `i` depends only
//! on the plan and its own payload bytes.
//!
//! # What is segmented (as the kernel's `tcp_gso_segment`/`__udp_gso_segment` + `inet_gso_segment` do)
//! - `VIRTIO_NET_HDR_GSO_TCPV4` (IPv4, options allowed, not a fragment), `..._TCPV6` (IPv6 without extension
//!   headers), `..._UDP_L4` (`UDP_SEGMENT`, IPv4 or IPv6), with the ECN bit or not; behind up to two VLAN tags.
//! - Every segment carries `gso_size` payload bytes (the last one the rest), so it is as long as the sender's MTU
//!   allowed. IPv4: total length, identification (first + segment index, like TSO hardware) and header checksum
//!   per segment. IPv6: payload length. TCP: sequence number + payload offset; CWR only on the first segment,
//!   FIN and PSH only on the last. UDP: length. The TCP/UDP checksum of each segment is computed over the
//!   pseudo-header and the whole segment (the super-frame's partial checksum is ignored).
//!
//! Refused (the caller drops and counts): UFO (`GSO_UDP`) and unknown types ([`GsoError::Unsupported`]); headers
//! that do not parse or disagree with the frame's length or the GSO type, IPv4 `tot_len` 0 (BIG TCP), IPv6
//! extension headers, a `gso_size` of 0 or no payload ([`GsoError::Malformed`]); a segment that would not fit in
//! `max_frame` bytes (a jumbo-MTU peer: [`GsoError::MssTooBig`]); a `gso_size` below [`MIN_GSO_SIZE`]
//! ([`GsoError::MssTooSmall`]: a 64 KiB super-frame would otherwise become up to 65,000 frames).
//!
//! Threads: pure functions; any thread.

use crate::wire::checksum::{self, add, sum_long};
use crate::wire::{ethernet, ethertype, ip_proto, ipv4, ipv6, tcp, udp};

pub use crate::wire::virtio_net_hdr::{
    Repr as VnetHdr, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4,
    HEADER_LEN as VNET_HDR_LEN,
};

/// Longest header block (Ethernet, two VLAN tags, IPv4 with options, TCP with options) a super-frame may have.
pub const MAX_HEADERS: usize =
    ethernet::HEADER_LEN + 2 * crate::wire::vlan::HEADER_LEN + ipv4::MAX_HEADER_LEN + tcp::MAX_HEADER_LEN;

/// Why a super-frame cannot be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// A GSO type this module does not segment (UFO, unknown).
    #[error("unsupported GSO type {0:#x}")]
    Unsupported(u8),
    /// Headers that do not parse or do not match the frame or the GSO type.
    #[error("malformed super-frame headers")]
    Malformed,
    /// Headers + `gso_size` exceed the longest frame the caller can hold.
    #[error("segment of {0} bytes does not fit in a buffer")]
    MssTooBig(usize),
    /// A `gso_size` below [`MIN_GSO_SIZE`]: one 64 KiB super-frame would become thousands of frames.
    #[error("gso_size {0} is below the minimum of {MIN_GSO_SIZE}")]
    MssTooSmall(usize),
}

/// The smallest `gso_size` segmented (RFC 879's default MSS, 536): bounds a 64 KiB super-frame to ~122
/// segments. Smaller ones are refused ([`GsoError::MssTooSmall`]).
pub const MIN_GSO_SIZE: usize = 536;

/// The longest segment [`SuperFrame::plan`] plans: its lengths must fit the 16-bit IP and UDP length fields.
const MAX_SEGMENT_LEN: usize = u16::MAX as usize;

/// A length within one planned segment as the 16-bit field that holds it.
#[inline(always)]
#[allow(clippy::cast_possible_truncation)] // <= hdr_len + mss <= MAX_SEGMENT_LEN: `plan` checked, `write_segment` cuts
fn seg_len16(n: usize) -> u16 {
    debug_assert!(n <= MAX_SEGMENT_LEN);
    n as u16
}

/// How to cut one super-frame: the result of [`SuperFrame::plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuperFrame {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// Length of all headers: the payload starts here.
    pub hdr_len: usize,
    /// Payload bytes of the whole super-frame.
    pub payload_len: usize,
    /// Payload bytes per segment.
    pub mss: usize,
    /// IPv4 (else IPv6).
    pub ipv4: bool,
    /// TCP (else UDP).
    pub tcp: bool,
    /// First segment's IPv4 identification / TCP sequence number.
    id0: u16,
    seq0: u32,
    /// Original TCP flags.
    flags: u8,
    /// One's-complement sum of the pseudo-header's addresses and protocol (the length is added per segment).
    pseudo: u16,
}

impl SuperFrame {
    /// Checks a super-frame and plans its segmentation. `head` holds the frame's first bytes (at least all its
    /// headers; [`MAX_HEADERS`] is always enough, fewer if the frame is shorter), `frame_len` is the whole
    /// frame's length, `max_frame` the longest segment the caller can hold.
    pub fn plan(head: &[u8], frame_len: usize, vnet: &VnetHdr, max_frame: usize) -> Result<SuperFrame, GsoError> {
        let kind = vnet.gso_type & !GSO_ECN;
        let (want_v4, want_v6, tcp) = match kind {
            GSO_TCPV4 => (true, false, true),
            GSO_TCPV6 => (false, true, true),
            GSO_UDP_L4 => (true, true, false),
            other => return Err(GsoError::Unsupported(other)),
        };
        let bad = GsoError::Malformed;
        let eth = ethernet::Packet::new_checked(head).map_err(|_| bad)?;
        let ethernet::Layer3 { ethertype, offset: l3, .. } = eth.layer3().ok_or(bad)?;
        let proto = if tcp { ip_proto::TCP } else { ip_proto::UDP };
        let (ipv4, l4, id0, pseudo) = match ethertype {
            ethertype::IPV4 if want_v4 => {
                let ip = ipv4::Header::at(head, l3).ok_or(bad)?;
                let ihl = ip.header_len();
                if ip.version() != 4
                    || ihl < ipv4::HEADER_LEN
                    || usize::from(ip.total_len()) != frame_len.saturating_sub(l3)
                    || ip.is_fragment()
                    || ip.protocol() != proto
                {
                    return Err(bad);
                }
                (true, l3 + ihl, ip.ident(), checksum::pseudo_ipv4(ip.src_addr(), ip.dst_addr(), proto, 0))
            }
            ethertype::IPV6 if want_v6 => {
                let ip = ipv6::Header::at(head, l3).ok_or(bad)?;
                if ip.version() != 6
                    || usize::from(ip.payload_len()) != frame_len.saturating_sub(l3 + ipv6::HEADER_LEN)
                    || ip.next_header() != proto
                {
                    return Err(bad);
                }
                let pseudo = checksum::pseudo_ipv6(&ip.src_addr(), &ip.dst_addr(), proto, 0);
                (false, l3 + ipv6::HEADER_LEN, 0, pseudo)
            }
            _ => return Err(bad),
        };
        let (hdr_len, seq0, flags) = if tcp {
            let t = tcp::Header::at(head, l4).ok_or(bad)?;
            if t.header_len() < tcp::HEADER_LEN {
                return Err(bad);
            }
            (l4 + t.header_len(), t.seq_number(), t.flags())
        } else {
            let u = udp::Header::at(head, l4).ok_or(bad)?;
            if usize::from(u.length()) != frame_len.saturating_sub(l4) {
                return Err(bad);
            }
            (l4 + udp::HEADER_LEN, 0, 0)
        };
        let mss = usize::from(vnet.gso_size);
        if hdr_len > head.len() || hdr_len >= frame_len || mss == 0 {
            return Err(bad);
        }
        // A segment's lengths are written into 16-bit fields: never plan one longer than 64 KiB - 1.
        if hdr_len + mss > max_frame.min(MAX_SEGMENT_LEN) {
            return Err(GsoError::MssTooBig(hdr_len + mss));
        }
        if mss < MIN_GSO_SIZE {
            return Err(GsoError::MssTooSmall(mss));
        }
        Ok(SuperFrame { l3, l4, hdr_len, payload_len: frame_len - hdr_len, mss, ipv4, tcp, id0, seq0, flags, pseudo })
    }

    /// How many segments the super-frame becomes.
    pub fn segments(&self) -> usize {
        self.payload_len.div_ceil(self.mss)
    }

    /// The payload range `[start, end)` (offsets into the payload) of segment `index`.
    pub fn segment_range(&self, index: usize) -> (usize, usize) {
        let start = index * self.mss;
        (start, (start + self.mss).min(self.payload_len))
    }

    /// Writes segment `index` into `out`: the headers from `head` (as given to [`SuperFrame::plan`]), then
    /// `payload` (that segment's payload bytes, [`SuperFrame::segment_range`]), then patches lengths, IDs,
    /// sequence number, flags and checksums. Returns the segment's length. `out` must hold
    /// `hdr_len + payload.len()` bytes (at most `max_frame`, checked by `plan`). A payload longer than `mss` is
    /// cut to `mss` (which keeps every length below 64 KiB, as `plan` checked).
    pub fn write_segment(&self, head: &[u8], index: usize, payload: &[u8], out: &mut [u8]) -> usize {
        let (h, l3, l4) = (self.hdr_len, self.l3, self.l4);
        let payload = &payload[..payload.len().min(self.mss)];
        let len = h + payload.len();
        let out = &mut out[..len];
        out[..h].copy_from_slice(&head[..h]);
        out[h..].copy_from_slice(payload);
        let l4_len = len - l4;
        if self.ipv4 {
            let mut ip = ipv4::Packet::new_unchecked(&mut out[l3..l4]);
            ip.set_total_len(seg_len16(len - l3));
            // IPv4 identifications count modulo 2^16.
            ip.set_ident(self.id0.wrapping_add((index as u64 & 0xffff) as u16));
            ip.fill_checksum();
        } else {
            ipv6::Packet::new_unchecked(&mut out[l3..l4]).set_payload_len(seg_len16(l4_len));
        }
        let seg = &mut out[l4..];
        if self.tcp {
            let mut t = tcp::Packet::new_unchecked(&mut seg[..]);
            // Sequence numbers count modulo 2^32.
            t.set_seq_number(self.seq0.wrapping_add(((index * self.mss) as u64 & 0xffff_ffff) as u32));
            let mut flags = self.flags;
            if index != 0 {
                flags &= !tcp::flags::CWR;
            }
            if index + 1 != self.segments() {
                flags &= !(tcp::flags::FIN | tcp::flags::PSH);
            }
            t.set_flags(flags);
            t.set_checksum(0);
        } else {
            let mut u = udp::Packet::new_unchecked(&mut seg[..]);
            u.set_length(seg_len16(l4_len));
            u.set_checksum(0);
        }
        let mut sum = add(self.pseudo, sum_long(seg));
        // The pseudo-header's length: 16 bits for IPv4, 32 for IPv6 (an l4_len < 64 KiB has a zero upper half).
        sum = add(sum, seg_len16(l4_len));
        let mut check = !sum;
        if self.tcp {
            tcp::Packet::new_unchecked(seg).set_checksum(check);
        } else {
            if check == 0 {
                check = 0xffff; // 0 means "no checksum" in UDP
            }
            udp::Packet::new_unchecked(seg).set_checksum(check);
        }
        len
    }
}

/// Completes a partial checksum as a `virtio_net_hdr` with [`F_NEEDS_CSUM`] describes it (the kernel's
/// `skb_checksum_help`): the one's-complement sum from `csum_start` to the end of the frame (whose checksum field
/// at `csum_start + csum_offset` holds the pseudo-header sum), folded, inverted (0 stored as 0xffff) and stored.
/// Returns false, changing nothing, if the offsets do not lie inside the frame, or for `csum_offset` 8: that is
/// SCTP, whose partial checksum (veth offers `NETIF_F_SCTP_CRC`) is a CRC32c, not a one's-complement sum.
pub fn complete_checksum(frame: &mut [u8], csum_start: usize, csum_offset: usize) -> bool {
    const SCTP_CRC_OFFSET: usize = 8;
    let field = csum_start + csum_offset;
    if field + 2 > frame.len() || !csum_offset.is_multiple_of(2) || csum_offset == SCTP_CRC_OFFSET {
        return false;
    }
    let mut check = !sum_long(&frame[csum_start..]);
    if check == 0 {
        check = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&check.to_be_bytes());
    true
}

/// Completes the partial (pseudo-header only) TCP or UDP checksum of an Ethernet frame, as the kernel's
/// `skb_checksum_help` does, finding the transport header by parsing (for when the `virtio_net_hdr` offsets do
/// not fit the frame): the one's-complement sum over the L4 header and payload (whose checksum field holds the
/// pseudo-header sum) is folded, inverted and stored. Handles up to two VLAN tags, IPv4 (not fragmented) and
/// IPv6 without extension headers. Returns false, changing nothing, for anything else or any malformed or
/// truncated frame.
pub fn complete_partial_checksum(frame: &mut [u8]) -> bool {
    let Some(l3) = ethernet::Packet::new_checked(&*frame).ok().and_then(|e| e.layer3()) else { return false };
    let (proto, l4, end) = match l3.ethertype {
        ethertype::IPV4 => {
            let Some(ip) = ipv4::Header::at(frame, l3.offset) else { return false };
            let (ihl, total) = (ip.header_len(), usize::from(ip.total_len()));
            if ip.version() != 4 || ihl < ipv4::HEADER_LEN || total < ihl || ip.is_fragment() {
                return false;
            }
            (ip.protocol(), l3.offset + ihl, l3.offset + total)
        }
        ethertype::IPV6 => {
            let Some(ip) = ipv6::Header::at(frame, l3.offset) else { return false };
            if ip.version() != 6 {
                return false;
            }
            let l4 = l3.offset + ipv6::HEADER_LEN;
            (ip.next_header(), l4, l4 + usize::from(ip.payload_len()))
        }
        _ => return false,
    };
    let Some(seg) = frame.get_mut(l4..end) else { return false };
    match proto {
        ip_proto::TCP if tcp::Packet::new_unchecked(&*seg).holds_checksum() => {
            let check = !sum_long(seg);
            tcp::Packet::new_unchecked(seg).set_checksum(check);
        }
        ip_proto::UDP if udp::Packet::new_unchecked(&*seg).holds_checksum() => {
            let check = !sum_long(seg);
            // 0 means "no checksum" in UDP.
            udp::Packet::new_unchecked(seg).set_checksum(if check == 0 { 0xffff } else { check });
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builder::{pattern, with_vlan, Ipv4Opts, Ipv4Spec, TcpFlags, TcpSegment};
    use crate::wire::MacAddr;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const MSS: u16 = 1448;

    fn spec() -> Ipv4Spec {
        Ipv4Spec::new(A, B, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .with_opts(Ipv4Opts { id: 0xfffe, ..Ipv4Opts::default() })
    }

    fn gso(kind: u8, mss: u16) -> VnetHdr {
        VnetHdr { gso_type: kind, gso_size: mss, flags: F_NEEDS_CSUM, ..VnetHdr::default() }
    }

    /// Segments `frame` completely, returning the segments.
    fn segment_all(frame: &[u8], vnet: &VnetHdr) -> Vec<Vec<u8>> {
        let head = &frame[..frame.len().min(MAX_HEADERS)];
        let plan = SuperFrame::plan(head, frame.len(), vnet, 1920).expect("plan");
        let payload = &frame[plan.hdr_len..];
        (0..plan.segments())
            .map(|i| {
                let (s, e) = plan.segment_range(i);
                let mut out = vec![0u8; 1920];
                let n = plan.write_segment(head, i, &payload[s..e], &mut out);
                out.truncate(n);
                out
            })
            .collect()
    }

    /// Checks every segment with etherparse (headers, lengths, checksums) and returns (payload, seq, flags) of each.
    /// A checked segment: payload, TCP sequence number, TCP (CWR, PSH, FIN).
    type Checked = (Vec<u8>, u32, (bool, bool, bool));

    fn check_segments(segs: &[Vec<u8>], hdr_len: usize) -> Vec<Checked> {
        segs.iter()
            .map(|s| {
                let p = SlicedPacket::from_ethernet(s).expect("segment parses");
                let payload = match (&p.net, &p.transport) {
                    (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) => {
                        let h = ip.header().to_header();
                        assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 header checksum");
                        assert_eq!(usize::from(h.total_len), s.len() - 14);
                        assert_eq!(s.len() - t.payload().len(), hdr_len);
                        let th = t.to_header();
                        assert_eq!(th.checksum, th.calc_checksum_ipv4(&h, t.payload()).unwrap(), "TCP checksum");
                        return (t.payload().to_vec(), t.sequence_number(), (t.cwr(), t.psh(), t.fin()));
                    }
                    (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Tcp(t))) => {
                        let h = ip.header().to_header();
                        let th = t.to_header();
                        assert_eq!(usize::from(h.payload_length), s.len() - 54);
                        assert_eq!(s.len() - t.payload().len(), hdr_len);
                        assert_eq!(th.checksum, th.calc_checksum_ipv6(&h, t.payload()).unwrap(), "TCP checksum");
                        return (t.payload().to_vec(), t.sequence_number(), (t.cwr(), t.psh(), t.fin()));
                    }
                    (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(u))) => {
                        let h = ip.header().to_header();
                        assert_eq!(h.header_checksum, h.calc_header_checksum());
                        let uh = u.to_header();
                        assert_eq!(uh.checksum, uh.calc_checksum_ipv4(&h, u.payload()).unwrap(), "UDP checksum");
                        assert_eq!(usize::from(uh.length), 8 + u.payload().len());
                        u.payload()
                    }
                    other => panic!("unexpected segment {other:?}"),
                };
                (payload.to_vec(), 0, (false, false, false))
            })
            .collect()
    }

    #[test]
    fn tcpv4_with_10k_payload_becomes_mss_sized_segments() {
        // CWR + PSH + FIN + ACK on the super-frame (as a sender may set them).
        let mut frame = spec().tcp(TcpSegment::new(40000, 80, TcpFlags::ACK).seq(0xffff_f000).ack(77), 10_000);
        let mut t = tcp::Packet::new_unchecked(&mut frame[34..]);
        t.set_flags(t.flags() | tcp::flags::CWR | tcp::flags::PSH | tcp::flags::FIN);
        t.set_checksum(0x1234); // a partial checksum: ignored
        let segs = segment_all(&frame, &gso(GSO_TCPV4, MSS));
        assert_eq!(segs.len(), 7, "10000 / 1448 rounded up");
        let parsed = check_segments(&segs, 54);
        let mut joined = Vec::new();
        for (i, (s, (payload, seq, flags))) in segs.iter().zip(&parsed).enumerate() {
            let expect_len = if i < 6 { 1448 } else { 10_000 - 6 * 1448 };
            assert_eq!(payload.len(), expect_len, "segment {i}");
            assert_eq!(s.len(), 54 + expect_len);
            assert!(s.len() <= 1514, "fits a 1500-byte MTU");
            assert_eq!(*seq, 0xffff_f000u32.wrapping_add((i * 1448) as u32), "sequence wraps");
            assert_eq!(*flags, (i == 0, i == 6, i == 6), "CWR first only, PSH/FIN last only");
            let ip = ipv4::Header::at(s, 14).unwrap();
            assert_eq!(ip.ident(), 0xfffeu16.wrapping_add(i as u16), "IPv4 id");
            assert_eq!(s[..12], frame[..12]);
            assert_eq!(tcp::Header::at(s, 34).unwrap().ack_number(), 77, "ack kept");
            joined.extend_from_slice(payload);
        }
        assert_eq!(joined, pattern(10_000), "concatenated payloads equal the original");
    }

    #[test]
    fn tcpv6_and_vlan_tagged_tcpv4_and_udp_l4() {
        // TCPv6 with options (timestamps), 5000 bytes.
        let payload = pattern(5000);
        let b = PacketBuilder::ethernet2(A.0, B.0)
            .ipv6(
                [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                64,
            )
            .tcp(1000, 2000, 5, 500)
            .options(&[etherparse::TcpOptionElement::Timestamp(1, 2)])
            .unwrap()
            .psh();
        let mut v6 = Vec::new();
        b.write(&mut v6, &payload).unwrap();
        let segs = segment_all(&v6, &gso(GSO_TCPV6 | GSO_ECN, 1428));
        assert_eq!(segs.len(), 4);
        let parsed = check_segments(&segs, 14 + 40 + 32);
        assert_eq!(parsed.iter().flat_map(|p| p.0.clone()).collect::<Vec<_>>(), payload);
        assert_eq!(parsed.iter().map(|p| p.1).collect::<Vec<_>>(), vec![5, 5 + 1428, 5 + 2856, 5 + 4284]);
        assert_eq!(parsed.iter().map(|p| p.2 .1).collect::<Vec<_>>(), vec![false, false, false, true], "PSH");

        // TCPv4 behind a VLAN tag: headers (tag included) copied into each segment.
        let tagged = with_vlan(&spec().tcp(TcpSegment::new(1, 2, TcpFlags::ACK), 3000), 42);
        let segs = segment_all(&tagged, &gso(GSO_TCPV4, 1000));
        assert_eq!(segs.len(), 3);
        for s in &segs {
            let tag = |f: &[u8]| ethernet::Packet::new_checked(f).unwrap().payload()[..4].to_vec();
            assert_eq!(tag(s), tag(&tagged), "tag kept");
            let p = SlicedPacket::from_ethernet(s).unwrap();
            let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) = (&p.net, &p.transport) else { panic!() };
            let h = ip.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum());
            assert_eq!(t.checksum(), t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap());
        }

        // UDP_L4 (UDP_SEGMENT): a train of datagrams.
        let u = spec().udp(5000, 6000, 2500);
        let segs = segment_all(&u, &gso(GSO_UDP_L4, 1000));
        let parsed = check_segments(&segs, 42);
        assert_eq!(parsed.iter().map(|p| p.0.len()).collect::<Vec<_>>(), vec![1000, 1000, 500]);
        assert_eq!(parsed.iter().flat_map(|p| p.0.clone()).collect::<Vec<_>>(), pattern(2500));
    }

    #[test]
    fn bad_super_frames_are_refused_without_panicking() {
        let good = spec().tcp(TcpSegment::new(1, 2, TcpFlags::ACK), 3000);
        let plan = |f: &[u8], v: VnetHdr| SuperFrame::plan(&f[..f.len().min(MAX_HEADERS)], f.len(), &v, 1920);
        assert!(plan(&good, gso(GSO_TCPV4, 1448)).is_ok());
        assert_eq!(plan(&good, gso(GSO_UDP, 1448)), Err(GsoError::Unsupported(GSO_UDP)));
        assert_eq!(plan(&good, gso(9, 1448)), Err(GsoError::Unsupported(9)));
        assert_eq!(plan(&good, gso(GSO_TCPV6, 1448)), Err(GsoError::Malformed), "IPv4 frame, TCPv6 type");
        assert_eq!(plan(&good, gso(GSO_UDP_L4, 1448)), Err(GsoError::Malformed), "TCP frame, UDP type");
        assert_eq!(plan(&good, gso(GSO_TCPV4, 0)), Err(GsoError::Malformed));
        assert_eq!(plan(&good, gso(GSO_TCPV4, 8948)), Err(GsoError::MssTooBig(54 + 8948)));
        assert_eq!(plan(&good, gso(GSO_TCPV4, 1)), Err(GsoError::MssTooSmall(1)), "one 64 KiB frame, 65k segments");
        assert_eq!(plan(&good, gso(GSO_TCPV4, 535)), Err(GsoError::MssTooSmall(535)));
        assert!(plan(&good, gso(GSO_TCPV4, 536)).is_ok());
        // However much the caller could hold, a segment's lengths must fit 16 bits.
        let head = &good[..MAX_HEADERS];
        let unbounded = |mss| SuperFrame::plan(head, good.len(), &gso(GSO_TCPV4, mss), usize::MAX);
        assert_eq!(unbounded(u16::MAX), Err(GsoError::MssTooBig(54 + 65_535)));
        assert!(unbounded(u16::MAX - 54).is_ok());
        // Every truncation (the IPv4 length then disagrees) and every single-byte corruption of the headers.
        for cut in 0..good.len() {
            assert!(plan(&good[..cut], gso(GSO_TCPV4, 1448)).is_err(), "cut {cut}");
        }
        for at in 0..54 {
            for v in [0u8, 0xff, 0x45, 0x0f] {
                let mut f = good.clone();
                f[at] = v;
                if let Ok(p) = plan(&f, gso(GSO_TCPV4, MIN_GSO_SIZE as u16)) {
                    // Whatever passes must be writable without panicking.
                    let mut out = vec![0u8; 1920];
                    for i in 0..p.segments() {
                        let (s, e) = p.segment_range(i);
                        p.write_segment(&f, i, &f[p.hdr_len + s..p.hdr_len + e], &mut out);
                    }
                }
            }
        }
    }

    /// Replaces a frame's TCP or UDP checksum with the pseudo-header sum, as a sender with checksum offload
    /// leaves it.
    fn make_partial(frame: &mut [u8]) {
        let p = crate::packet::parse(frame).expect("a valid frame");
        let (l3, l4, end) = (usize::from(p.l3), usize::from(p.l4), usize::from(p.l3_end));
        let pseudo = if p.ethertype == ethertype::IPV4 {
            let ip = ipv4::Header::at(frame, l3).unwrap();
            checksum::pseudo_ipv4(ip.src_addr(), ip.dst_addr(), ip.protocol(), (end - l4) as u16)
        } else {
            let ip = ipv6::Header::at(frame, l3).unwrap();
            checksum::pseudo_ipv6(&ip.src_addr(), &ip.dst_addr(), ip.next_header(), u32::from(ip.payload_len()))
        };
        let l4 = if p.l4 == 0 { l3 + ipv6::HEADER_LEN } else { l4 };
        let seg = &mut frame[l4..];
        match p.ip_proto {
            ip_proto::TCP => tcp::Packet::new_unchecked(seg).set_checksum(pseudo),
            _ => udp::Packet::new_unchecked(seg).set_checksum(pseudo),
        }
    }

    #[test]
    fn completes_ipv4_udp_and_tcp_and_vlan_tagged() {
        let (ia, ib) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let u = crate::wire::builder::udp(A, B, ia, ib, 1000, 53, 37);
        let t = crate::wire::builder::tcp(A, B, ia, ib, TcpSegment::new(1000, 80, TcpFlags::SYN).seq(9), 11);
        for good in [u.clone(), t.clone(), with_vlan(&u, 7), with_vlan(&with_vlan(&t, 7), 9)] {
            let mut f = good.clone();
            make_partial(&mut f);
            assert_ne!(f, good, "the partial checksum differs from the full one");
            assert!(complete_partial_checksum(&mut f));
            assert_eq!(f, good);
        }
    }

    #[test]
    fn completes_ipv6_udp() {
        let spec = crate::wire::builder::Ipv6Spec::new(A, B, Ipv6Addr::LOCALHOST, "2001:db8::2".parse().unwrap());
        let good = spec.udp(5000, 6000, 21);
        let mut f = good.clone();
        // IPv6 frames keep l4 = 0 in Parsed: make_partial finds the UDP header after the fixed header.
        make_partial(&mut f);
        assert_ne!(f, good);
        assert!(complete_partial_checksum(&mut f));
        assert_eq!(f, good);
    }

    #[test]
    fn refuses_what_it_cannot_complete_without_panicking() {
        let (ia, ib) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let u = crate::wire::builder::udp(A, B, ia, ib, 1000, 53, 37);
        // Every truncation of a valid frame: never panics; short ones are refused unchanged.
        for cut in 0..u.len() {
            let mut f = u[..cut].to_vec();
            let before = f.clone();
            if !complete_partial_checksum(&mut f) {
                assert_eq!(f, before);
            }
        }
        let mut frag = u.clone();
        ipv4::Packet::new_unchecked(&mut frag[ethernet::HEADER_LEN..]).set_flags_frag(ipv4::flags::MF);
        assert!(!complete_partial_checksum(&mut frag));
        let mut icmp = u.clone();
        ipv4::Packet::new_unchecked(&mut icmp[ethernet::HEADER_LEN..]).set_protocol(ip_proto::ICMP);
        assert!(!complete_partial_checksum(&mut icmp));
        let mut arp = u;
        ethernet::Packet::new_unchecked(&mut arp[..]).set_ethertype(ethertype::ARP);
        assert!(!complete_partial_checksum(&mut arp));
    }

    #[test]
    fn vnet_header_round_trips_and_completes_checksums() {
        let v = VnetHdr { flags: 1, gso_type: GSO_TCPV4, hdr_len: 66, gso_size: 1448, csum_start: 34, csum_offset: 16 };
        assert_eq!(VnetHdr::parse(&v.to_bytes()), v);
        assert!(v.is_gso());
        assert!(!VnetHdr { gso_type: GSO_ECN, ..v }.is_gso());
        let good = spec().udp(1, 2, 33);
        let mut f = good.clone();
        make_partial(&mut f);
        assert_ne!(f, good);
        assert!(complete_checksum(&mut f, 34, 6));
        assert_eq!(f, good);
        assert!(!complete_checksum(&mut f, 74, 6));
        assert!(!complete_checksum(&mut f, 34, 5));
        assert!(!complete_checksum(&mut f, 34, 8), "SCTP's CRC32c is not completed as a sum");
    }
}
