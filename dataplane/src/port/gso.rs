//! Software segmentation of GSO super-frames (the `virtio_net_hdr` a packet socket with `PACKET_VNET_HDR`
//! prepends to each frame), for ports that receive a host stack's TSO/GSO output unsegmented (a veth with default
//! offloads hands up to 64 KiB TCP "super-frames" to a packet socket).
//!
//! # What it owns
//! Nothing: [`VnetHdr`] decodes the 10-byte header, [`SuperFrame::plan`] checks a super-frame's headers and
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
//! `max_frame` bytes (a jumbo-MTU peer: [`GsoError::MssTooBig`]).
//!
//! Threads: pure functions; any thread.

use crate::wire::checksum;

/// Length of `struct virtio_net_hdr` (without `num_buffers`), as `PACKET_VNET_HDR` places it before each frame.
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` holds only the pseudo-header sum.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO: IP fragmentation of one datagram; not supported).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (`UDP_SEGMENT`: a train of datagrams).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`, or-ed into the type for TCP with ECN.
pub const GSO_ECN: u8 = 0x80;
/// Longest header block (Ethernet, two VLAN tags, IPv4 with options, TCP with options) a super-frame may have.
pub const MAX_HEADERS: usize = 14 + 8 + 60 + 60;

/// A decoded `struct virtio_net_hdr` (fields in host byte order, as the kernel writes them for a packet socket on
/// a little-endian or legacy host).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, possibly with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (advisory; not trusted here).
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS for TCP).
    pub gso_size: u16,
    /// Where the partial checksum's coverage starts, from the start of the frame as the kernel saw it.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Decodes the header's 10 bytes.
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr { flags: b[0], gso_type: b[1], hdr_len: u(2), gso_size: u(4), csum_start: u(6), csum_offset: u(8) }
    }

    /// Encodes the header (for tests and for building frames to send).
    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [(2, self.hdr_len), (4, self.gso_size), (6, self.csum_start), (8, self.csum_offset)] {
            b[i..i + 2].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// True if the frame is a super-frame to segment (any GSO type other than none).
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

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

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// [`checksum::sum`] eight bytes at a time (a 64-bit one's-complement sum folds to the same 16-bit sum), about
/// four times faster on a 1500-byte segment: this is the per-byte cost of segmentation.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let (s, carry) = acc.overflowing_add(u64::from_be_bytes(c.try_into().expect("8 bytes")));
        acc = s + u64::from(carry);
    }
    // The remainder starts at an even offset, so its 16-bit sum adds in directly.
    let (s, carry) = acc.overflowing_add(u64::from(checksum::sum(chunks.remainder())));
    acc = s + u64::from(carry);
    acc = (acc >> 32) + (acc & 0xffff_ffff);
    acc = (acc >> 32) + (acc & 0xffff_ffff);
    acc = (acc >> 16) + (acc & 0xffff);
    acc = (acc >> 16) + (acc & 0xffff);
    acc as u16
}

/// One's-complement addition of two folded sums.
#[inline]
fn add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
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
        let mut off = 12;
        let mut ethertype = be16(head, off).ok_or(bad)?;
        let mut tags = 0;
        while (ethertype == 0x8100 || ethertype == 0x88a8) && tags < 2 {
            off += 4;
            tags += 1;
            ethertype = be16(head, off).ok_or(bad)?;
        }
        let l3 = off + 2;
        let proto = if tcp { 6 } else { 17 };
        let (ipv4, l4, id0, pseudo) = match ethertype {
            0x0800 if want_v4 => {
                let vihl = *head.get(l3).ok_or(bad)?;
                let ihl = usize::from(vihl & 0x0f) * 4;
                let (total, id, frag) =
                    (be16(head, l3 + 2).ok_or(bad)?, be16(head, l3 + 4).ok_or(bad)?, be16(head, l3 + 6).ok_or(bad)?);
                let addrs = head.get(l3 + 12..l3 + 20).ok_or(bad)?;
                if vihl >> 4 != 4
                    || ihl < 20
                    || usize::from(total) != frame_len.saturating_sub(l3)
                    || frag & 0x3fff != 0
                    || head.get(l3 + 9) != Some(&proto)
                {
                    return Err(bad);
                }
                (true, l3 + ihl, id, add(checksum::sum(addrs), u16::from(proto)))
            }
            0x86dd if want_v6 => {
                let plen = be16(head, l3 + 4).ok_or(bad)?;
                let addrs = head.get(l3 + 8..l3 + 40).ok_or(bad)?;
                if head[l3] >> 4 != 6
                    || usize::from(plen) != frame_len.saturating_sub(l3 + 40)
                    || head.get(l3 + 6) != Some(&proto)
                {
                    return Err(bad);
                }
                (false, l3 + 40, 0, add(checksum::sum(addrs), u16::from(proto)))
            }
            _ => return Err(bad),
        };
        let (hdr_len, seq0, flags) = if tcp {
            let doff = usize::from(*head.get(l4 + 12).ok_or(bad)? >> 4) * 4;
            let seq = u32::from_be_bytes(head.get(l4 + 4..l4 + 8).ok_or(bad)?.try_into().map_err(|_| bad)?);
            if doff < 20 {
                return Err(bad);
            }
            (l4 + doff, seq, *head.get(l4 + 13).ok_or(bad)?)
        } else {
            if usize::from(be16(head, l4 + 4).ok_or(bad)?) != frame_len.saturating_sub(l4) {
                return Err(bad);
            }
            (l4 + 8, 0, 0)
        };
        let mss = usize::from(vnet.gso_size);
        if hdr_len > head.len() || hdr_len >= frame_len || mss == 0 {
            return Err(bad);
        }
        if hdr_len + mss > max_frame {
            return Err(GsoError::MssTooBig(hdr_len + mss));
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
    /// `hdr_len + payload.len()` bytes (at most `max_frame`, checked by `plan`).
    pub fn write_segment(&self, head: &[u8], index: usize, payload: &[u8], out: &mut [u8]) -> usize {
        let (h, l3, l4) = (self.hdr_len, self.l3, self.l4);
        let len = h + payload.len();
        let out = &mut out[..len];
        out[..h].copy_from_slice(&head[..h]);
        out[h..].copy_from_slice(payload);
        let l4_len = len - l4;
        if self.ipv4 {
            out[l3 + 2..l3 + 4].copy_from_slice(&((len - l3) as u16).to_be_bytes());
            out[l3 + 4..l3 + 6].copy_from_slice(&self.id0.wrapping_add(index as u16).to_be_bytes());
            out[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&out[l3..l4]);
            out[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        } else {
            out[l3 + 4..l3 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        let field = if self.tcp {
            let seq = self.seq0.wrapping_add((index * self.mss) as u32);
            out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let mut flags = self.flags;
            if index != 0 {
                flags &= !0x80; // CWR
            }
            if index + 1 != self.segments() {
                flags &= !(0x01 | 0x08); // FIN, PSH
            }
            out[l4 + 13] = flags;
            l4 + 16
        } else {
            out[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            l4 + 6
        };
        out[field..field + 2].copy_from_slice(&[0, 0]);
        let mut sum = add(self.pseudo, sum(&out[l4..]));
        // The pseudo-header's length: 16 bits for IPv4, 32 for IPv6 (an l4_len < 64 KiB has a zero upper half).
        sum = add(sum, l4_len as u16);
        let mut check = !sum;
        if !self.tcp && check == 0 {
            check = 0xffff; // 0 means "no checksum" in UDP
        }
        out[field..field + 2].copy_from_slice(&check.to_be_bytes());
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
    let mut check = !sum(&frame[csum_start..]);
    if check == 0 {
        check = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&check.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builder::{pattern, with_vlan, Ipv4Opts, Ipv4Spec, TcpFlags, TcpSegment};
    use crate::wire::MacAddr;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    use std::net::Ipv4Addr;

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
        frame[14 + 20 + 13] |= 0x80 | 0x08 | 0x01;
        frame[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&[0x12, 0x34]); // a partial checksum: ignored
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
            assert_eq!(u16::from_be_bytes([s[18], s[19]]), 0xfffeu16.wrapping_add(i as u16), "IPv4 id");
            assert_eq!(s[..12], frame[..12]);
            assert_eq!(u32::from_be_bytes(s[42..46].try_into().unwrap()), 77, "ack kept");
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
            assert_eq!(s[12..16], tagged[12..16], "tag kept");
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
        // Every truncation (the IPv4 length then disagrees) and every single-byte corruption of the headers.
        for cut in 0..good.len() {
            assert!(plan(&good[..cut], gso(GSO_TCPV4, 1448)).is_err(), "cut {cut}");
        }
        for at in 0..54 {
            for v in [0u8, 0xff, 0x45, 0x0f] {
                let mut f = good.clone();
                f[at] = v;
                if let Ok(p) = plan(&f, gso(GSO_TCPV4, 100)) {
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

    #[test]
    fn fast_sum_equals_the_reference_sum() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for start in 0..9 {
            for len in (0..200).chain([1499, 1500, 1501, 2991]) {
                let d = &data[start..start + len];
                assert_eq!(sum(d), checksum::sum(d), "start {start} len {len}");
            }
        }
        assert_eq!(sum(&[0xff; 4096]), checksum::sum(&[0xff; 4096]), "carries");
    }

    #[test]
    fn vnet_header_round_trips_and_completes_checksums() {
        let v = VnetHdr { flags: 1, gso_type: GSO_TCPV4, hdr_len: 66, gso_size: 1448, csum_start: 34, csum_offset: 16 };
        assert_eq!(VnetHdr::parse(&v.to_bytes()), v);
        assert!(v.is_gso());
        assert!(!VnetHdr { gso_type: GSO_ECN, ..v }.is_gso());
        let good = spec().udp(1, 2, 33);
        let mut f = good.clone();
        // The pseudo-header sum, as a sender with checksum offload leaves it.
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 17, 0, 41]);
        f[40..42].copy_from_slice(&checksum::sum(&pseudo).to_be_bytes());
        assert_ne!(f, good);
        assert!(complete_checksum(&mut f, 34, 6));
        assert_eq!(f, good);
        assert!(!complete_checksum(&mut f, 74, 6));
        assert!(!complete_checksum(&mut f, 34, 5));
        assert!(!complete_checksum(&mut f, 34, 8), "SCTP's CRC32c is not completed as a sum");
    }
}
