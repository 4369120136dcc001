//! Offload metadata: what a frame carries besides its bytes when a host stack handed it over with its checksum
//! or segmentation left to "the hardware" ([`Offload`]), and what a port can do of that work itself ([`Caps`]).
//!
//! # The model (Linux's, as a `virtio_net_hdr` describes it)
//! - A **super-frame** (GSO) is one TCP segment or UDP datagram train of up to 64 KiB with ordinary headers whose
//!   lengths cover the whole frame, plus a segment size: cut into `gso_size`-byte payloads it becomes the frames
//!   the wire would carry ([`crate::port::gso`] does the cutting, as the kernel's `tcp_gso_segment`).
//! - A **partial checksum**: the TCP/UDP checksum field at `csum_start + csum_offset` holds only the folded,
//!   uncomplemented sum of the pseudo-header (with the whole L4 length of the frame, super-frame or not); the
//!   sum over `csum_start..end` completes it. A super-frame always has one.
//! - A **verified** checksum: the kernel already checked it (`VIRTIO_NET_HDR_F_DATA_VALID`); a receiver may skip
//!   checking it again. The switch clears it whenever it rewrites the transport header (NAT), so only frames whose
//!   transport bytes are as the sender made them claim it.
//!
//! # Invariants (established by the port that receives a frame, kept by every stage that edits one)
//! - An ordinary frame (no GSO, complete checksum) has [`Offload::NONE`]: testing for it is one comparison, the
//!   only cost the offloads add to the small-frame path.
//! - A partial checksum's field lies inside the frame (`csum_start + csum_offset + 2 <= len`), `csum_offset` is
//!   even and `csum_start` is where the TCP/UDP header begins.
//! - A super-frame is IPv4 (`Tcp4`, `UdpL4`) or IPv6 (`Tcp6`, `UdpL4`) TCP/UDP whose headers agree with its
//!   length and GSO kind (checked with [`crate::port::gso::SuperFrame::plan`] when received), `gso_size > 0`,
//!   with a partial checksum at the transport header.
//! - Offsets count from the frame's first byte: a stage that adds or removes bytes in front of the transport
//!   header moves `csum_start` ([`crate::buffer::Frame::push_front`] and `pull_front` do).
//!
//! # Capabilities
//! [`Caps`] says what a port can send as is: a partial checksum (`csum`), TCP super-frames over IPv4 (`tso4`) or
//! IPv6 (`tso6`), UDP super-frames (`uso`). A port learns them when it opens (a tap from `TUNSETOFFLOAD`, an
//! AF_PACKET socket from `PACKET_VNET_HDR`). At transmit, [`Caps::needs_software`] says whether a frame must
//! first be completed or segmented in software ([`crate::port::soft_offload`]); everything else is handed to the
//! kernel as it is.
//!
//! Threads: plain values; any thread.

use crate::wire::checksum;
use crate::wire::virtio_net_hdr::{self, Repr as VnetRepr, F_DATA_VALID, F_NEEDS_CSUM, GSO_ECN};
use crate::wire::{ethernet, ethertype, ip_proto, ipv4, ipv6, tcp, udp};
use serde::{Deserialize, Serialize};

/// What kind of super-frame a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GsoKind {
    /// An ordinary frame.
    None = 0,
    /// TCP over IPv4 (`VIRTIO_NET_HDR_GSO_TCPV4`).
    Tcp4 = 1,
    /// TCP over IPv6 (`VIRTIO_NET_HDR_GSO_TCPV6`).
    Tcp6 = 4,
    /// UDP segmentation (`VIRTIO_NET_HDR_GSO_UDP_L4`, `UDP_SEGMENT`), IPv4 or IPv6.
    UdpL4 = 5,
}

/// The smallest segment size a super-frame may ask for: the default TCP MSS (RFC 9293). A smaller one would turn
/// one 64 KiB super-frame into thousands of frames; ports and the ingress stage drop such a super-frame and count
/// it (`gso-segment-too-small`).
pub const MIN_GSO_SIZE: u16 = 536;

/// A frame's offload metadata: the fields of a `virtio_net_hdr` (without `hdr_len`, which is derived), checked
/// against the frame when it was received. Eight bytes, [`Offload::NONE`] for an ordinary frame. See the module
/// documentation for the invariants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Offload {
    flags: u8,
    gso_type: u8,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

impl Offload {
    /// An ordinary frame: complete checksums, no segmentation.
    pub const NONE: Offload = Offload { flags: 0, gso_type: 0, gso_size: 0, csum_start: 0, csum_offset: 0 };

    /// A frame whose transport checksum at `csum_start + csum_offset` is partial (pseudo-header sum only).
    #[inline]
    pub fn partial(csum_start: u16, csum_offset: u16) -> Offload {
        Offload { flags: F_NEEDS_CSUM, csum_start, csum_offset, ..Offload::NONE }
    }

    /// A frame whose transport checksum the kernel verified.
    #[inline]
    pub fn verified() -> Offload {
        Offload { flags: F_DATA_VALID, ..Offload::NONE }
    }

    /// A super-frame of `kind` (not [`GsoKind::None`]) cut into `gso_size`-byte payloads, its transport header at
    /// `l4` (where the partial checksum's coverage starts), with TCP's ECN flag handling (`ecn`, CWR on the first
    /// segment only) requested or not.
    #[inline]
    pub fn gso(kind: GsoKind, gso_size: u16, ecn: bool, l4: u16) -> Offload {
        let csum_offset = if kind == GsoKind::UdpL4 { udp::CHECKSUM_OFFSET } else { tcp::CHECKSUM_OFFSET };
        Offload {
            flags: F_NEEDS_CSUM,
            gso_type: kind as u8 | if ecn { GSO_ECN } else { 0 },
            gso_size,
            csum_start: l4,
            csum_offset,
        }
    }

    /// True for an ordinary frame (the one test the small-frame path pays).
    #[inline(always)]
    pub fn is_none(&self) -> bool {
        (self.flags | self.gso_type) == 0
    }

    /// True for a super-frame.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_type != 0
    }

    /// The super-frame's kind ([`GsoKind::None`] for an ordinary frame).
    #[inline]
    pub fn gso_kind(&self) -> GsoKind {
        match self.gso_type & !GSO_ECN {
            1 => GsoKind::Tcp4,
            4 => GsoKind::Tcp6,
            5 => GsoKind::UdpL4,
            _ => GsoKind::None,
        }
    }

    /// Payload bytes per segment of a super-frame (0 for an ordinary frame).
    #[inline]
    pub fn gso_size(&self) -> u16 {
        self.gso_size
    }

    /// True when TCP's ECN handling was requested (`VIRTIO_NET_HDR_GSO_ECN`).
    #[inline]
    pub fn ecn(&self) -> bool {
        self.gso_type & GSO_ECN != 0
    }

    /// `(csum_start, csum_offset)` when the transport checksum is partial.
    #[inline]
    pub fn partial_csum(&self) -> Option<(u16, u16)> {
        (self.flags & F_NEEDS_CSUM != 0).then_some((self.csum_start, self.csum_offset))
    }

    /// True when the kernel verified the transport checksum and nothing rewrote the transport header since.
    #[inline]
    pub fn is_verified(&self) -> bool {
        self.flags & F_DATA_VALID != 0
    }

    /// Forgets a verification (a stage rewrote the transport header: the receiver must check it again).
    #[inline]
    pub fn clear_verified(&mut self) {
        self.flags &= !F_DATA_VALID;
    }

    /// The metadata after `n` bytes were added (`n > 0`) or removed (`n < 0`) in front of the transport header.
    /// Offsets that would leave the frame make the metadata [`Offload::NONE`]; callers only move whole headers.
    #[inline]
    pub fn shifted(self, n: isize) -> Offload {
        if self.flags & F_NEEDS_CSUM == 0 {
            return self;
        }
        match u16::try_from(self.csum_start as isize + n) {
            Ok(csum_start) => Offload { csum_start, ..self },
            Err(_) => Offload::NONE,
        }
    }

    /// The raw `virtio_net_hdr` fields: `(flags, gso_type, gso_size, csum_start, csum_offset)`.
    #[inline]
    pub fn raw(&self) -> (u8, u8, u16, u16, u16) {
        (self.flags, self.gso_type, self.gso_size, self.csum_start, self.csum_offset)
    }

    /// Metadata from raw `virtio_net_hdr` fields, as a port read them from the kernel, checked against a frame of
    /// `len` bytes: `None` when the partial checksum's field is outside the frame or odd, or a GSO type is set
    /// without a partial checksum or with a zero `gso_size`, or is not one of [`GsoKind`]'s (UFO): the caller
    /// drops or segments such a frame. A super-frame's headers are checked separately (`gso::SuperFrame::plan`).
    pub fn from_raw(
        flags: u8,
        gso_type: u8,
        gso_size: u16,
        csum_start: u16,
        csum_offset: u16,
        len: usize,
    ) -> Option<Offload> {
        let needs = flags & F_NEEDS_CSUM != 0;
        if needs {
            let field = usize::from(csum_start) + usize::from(csum_offset);
            if field + 2 > len || !csum_offset.is_multiple_of(2) {
                return None;
            }
        }
        let o = if needs {
            Offload { flags: F_NEEDS_CSUM, gso_type, gso_size, csum_start, csum_offset }
        } else {
            Offload { flags: flags & F_DATA_VALID, gso_type, gso_size, csum_start: 0, csum_offset: 0 }
        };
        if gso_type != 0 && (!needs || gso_size == 0 || o.gso_kind() == GsoKind::None) {
            return None;
        }
        Some(o)
    }
}

/// Length of `struct virtio_net_hdr` (without `num_buffers`), as taps and packet sockets exchange it.
pub const VNET_HDR_LEN: usize = virtio_net_hdr::HEADER_LEN;

impl Offload {
    /// Decodes a `virtio_net_hdr` (host byte order, as the kernel writes it for a tap or packet socket on a
    /// little-endian host) read before a frame of `len` bytes: see [`Offload::from_raw`] for what is refused.
    pub fn from_vnet(b: &[u8; VNET_HDR_LEN], len: usize) -> Option<Offload> {
        let h = VnetRepr::parse(b);
        Offload::from_raw(h.flags, h.gso_type, h.gso_size, h.csum_start, h.csum_offset, len)
    }

    /// Length of the headers in front of the payload of `frame` (whose metadata this is): the end of the
    /// transport header for a super-frame (TCP's data offset read from the frame), the end of the checksum field
    /// for a partial checksum, 0 for an ordinary frame. Never more than the frame's length.
    #[inline]
    pub fn header_len(&self, frame: &[u8]) -> usize {
        let start = usize::from(self.csum_start);
        let len = match self.gso_kind() {
            GsoKind::None if self.flags & F_NEEDS_CSUM != 0 => start + usize::from(self.csum_offset) + 2,
            GsoKind::None => 0,
            GsoKind::UdpL4 => start + udp::HEADER_LEN,
            GsoKind::Tcp4 | GsoKind::Tcp6 => {
                start + tcp::Header::at(frame, start).map_or(tcp::HEADER_LEN, |t| t.header_len())
            }
        };
        len.min(frame.len())
    }

    /// The length of the longest frame a super-frame becomes when cut: its headers plus `gso_size` (the frame's
    /// own length if shorter, and for an ordinary frame). What MTU checks compare, as the kernel's
    /// `skb_gso_validate_network_len` does.
    #[inline]
    pub fn segment_len(&self, frame: &[u8]) -> usize {
        if self.gso_type == 0 {
            return frame.len();
        }
        (self.header_len(frame) + usize::from(self.gso_size)).min(frame.len())
    }

    /// How many wire packets `frame` (whose metadata this is) stands for: a super-frame's segments,
    /// ceil(payload / `gso_size`) with the payload what follows its headers ([`Offload::header_len`]); 1 for
    /// any other frame. What packet counters add, so they count what a link without offloads would carry.
    #[inline]
    pub fn segments(&self, frame: &[u8]) -> u64 {
        if self.gso_type == 0 || self.gso_size == 0 {
            return 1;
        }
        let payload = frame.len().saturating_sub(self.header_len(frame));
        (payload.div_ceil(usize::from(self.gso_size)) as u64).max(1)
    }

    /// The `virtio_net_hdr` to write before `frame` (whose metadata this is) on a tap or packet socket. `hdr_len`
    /// (how much the kernel puts in the skb's linear part) is the headers' length: the transport header's end
    /// for a super-frame, the checksum field's end for a partial checksum, 0 for an ordinary frame.
    pub fn to_vnet(&self, frame: &[u8]) -> [u8; VNET_HDR_LEN] {
        if self.is_none() {
            return [0; VNET_HDR_LEN];
        }
        VnetRepr {
            flags: self.flags,
            gso_type: self.gso_type,
            // A hint for the kernel (how much to put in the linear part): saturating is harmless.
            hdr_len: u16::try_from(self.header_len(frame)).unwrap_or(u16::MAX),
            gso_size: self.gso_size,
            csum_start: self.csum_start,
            csum_offset: self.csum_offset,
        }
        .to_bytes()
    }
}

/// The form in which a sender with checksum offload hands over `frame` (a TCP or UDP frame over IPv4 or IPv6
/// without extension headers, behind up to two VLAN tags, with a complete checksum): the transport checksum
/// replaced by the folded pseudo-header sum, and the metadata saying so. With `gso_size`, a super-frame of
/// that segment size (TCP or UDP segmentation by the IP version and protocol). `None` for anything else.
/// For fixtures, benchmarks and fuzzing: the ports get this form from the kernel.
pub fn offloaded_form(frame: &[u8], gso_size: Option<u16>) -> Option<(Vec<u8>, Offload)> {
    let l3 = ethernet::Packet::new_checked(frame).ok()?.layer3()?;
    let (v4, l4, proto, l4_len, pseudo) = match l3.ethertype {
        ethertype::IPV4 => {
            let ip = ipv4::Header::at(frame, l3.offset)?;
            let l4_len = ip.total_len().checked_sub(u16::try_from(ip.header_len()).ok()?)?;
            let pseudo = checksum::pseudo_ipv4(ip.src_addr(), ip.dst_addr(), ip.protocol(), l4_len);
            (true, l3.offset + ip.header_len(), ip.protocol(), usize::from(l4_len), pseudo)
        }
        ethertype::IPV6 => {
            let ip = ipv6::Header::at(frame, l3.offset)?;
            let l4_len = ip.payload_len();
            let pseudo = checksum::pseudo_ipv6(&ip.src_addr(), &ip.dst_addr(), ip.next_header(), u32::from(l4_len));
            (false, l3.offset + ipv6::HEADER_LEN, ip.next_header(), usize::from(l4_len), pseudo)
        }
        _ => return None,
    };
    let mut out = frame.to_vec();
    let seg = out.get_mut(l4..l4.checked_add(l4_len)?)?;
    // The checksum field holds the pseudo-header sum (folded, not inverted).
    let offset = match proto {
        ip_proto::TCP if tcp::Packet::new_unchecked(&*seg).holds_checksum() => {
            tcp::Packet::new_unchecked(seg).set_checksum(pseudo);
            tcp::CHECKSUM_OFFSET
        }
        ip_proto::UDP if udp::Packet::new_unchecked(&*seg).holds_checksum() => {
            udp::Packet::new_unchecked(seg).set_checksum(pseudo);
            udp::CHECKSUM_OFFSET
        }
        _ => return None,
    };
    let l4 = u16::try_from(l4).ok()?;
    let o = match gso_size {
        None => Offload::partial(l4, offset),
        Some(size) => {
            let kind = match (proto, v4) {
                (ip_proto::TCP, true) => GsoKind::Tcp4,
                (ip_proto::TCP, false) => GsoKind::Tcp6,
                _ => GsoKind::UdpL4,
            };
            Offload::gso(kind, size, false, l4)
        }
    };
    Some((out, o))
}

/// What a port can transmit as is (see the module documentation). Shown by `vswitchctl port ls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Caps {
    /// Partial TCP/UDP checksums (the receiver or the kernel completes them).
    pub csum: bool,
    /// TCP super-frames over IPv4.
    pub tso4: bool,
    /// TCP super-frames over IPv6.
    pub tso6: bool,
    /// UDP super-frames (`UDP_SEGMENT`).
    pub uso: bool,
}

impl Caps {
    /// No offloads: every frame must be complete and wire-sized.
    pub const NONE: Caps = Caps { csum: false, tso4: false, tso6: false, uso: false };
    /// Everything a `virtio_net_hdr` can describe.
    pub const ALL: Caps = Caps { csum: true, tso4: true, tso6: true, uso: true };

    /// True when a frame with `o` must be completed or segmented in software before this port may send it.
    #[inline(always)]
    pub fn needs_software(&self, o: &Offload) -> bool {
        if o.is_none() {
            return false;
        }
        let gso_ok = match o.gso_kind() {
            GsoKind::None => true,
            GsoKind::Tcp4 => self.tso4,
            GsoKind::Tcp6 => self.tso6,
            GsoKind::UdpL4 => self.uso,
        };
        !gso_ok || (o.partial_csum().is_some() && !self.csum)
    }

    /// True when the port can take super-frames of `kind`.
    #[inline]
    pub fn takes(&self, kind: GsoKind) -> bool {
        match kind {
            GsoKind::None => true,
            GsoKind::Tcp4 => self.tso4,
            GsoKind::Tcp6 => self.tso6,
            GsoKind::UdpL4 => self.uso,
        }
    }

    /// The capabilities as a short list for tables (`csum,tso4,tso6,uso`, or `-`).
    pub fn names(&self) -> String {
        let names: Vec<&str> = [(self.csum, "csum"), (self.tso4, "tso4"), (self.tso6, "tso6"), (self.uso, "uso")]
            .into_iter()
            .filter_map(|(on, n)| on.then_some(n))
            .collect();
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_one_comparison_and_eight_bytes() {
        assert_eq!(std::mem::size_of::<Offload>(), 8);
        assert!(Offload::NONE.is_none());
        assert!(!Offload::partial(34, 16).is_none());
        assert!(!Offload::verified().is_none());
        assert!(Offload::gso(GsoKind::Tcp4, 1448, false, 34).is_gso());
    }

    #[test]
    fn raw_metadata_is_checked_against_the_frame() {
        // A TCP partial checksum at 34 + 16 in a 100-byte frame.
        let o = Offload::from_raw(1, 0, 0, 34, 16, 100).unwrap();
        assert_eq!(o.partial_csum(), Some((34, 16)));
        assert_eq!(Offload::from_raw(1, 0, 0, 34, 16, 51), None, "field past the end");
        assert_eq!(Offload::from_raw(1, 0, 0, 34, 15, 100), None, "odd offset");
        assert_eq!(Offload::from_raw(1, 0, 0, u16::MAX, u16::MAX, 100), None, "no overflow");
        assert_eq!(Offload::from_raw(0, 1, 1448, 0, 0, 3000), None, "GSO without a partial checksum");
        assert_eq!(Offload::from_raw(1, 1, 0, 34, 16, 3000), None, "GSO with gso_size 0");
        assert_eq!(Offload::from_raw(1, 3, 1448, 34, 6, 3000), None, "UFO is not supported");
        let g = Offload::from_raw(1, 0x81, 1448, 34, 16, 3000).unwrap();
        assert_eq!((g.gso_kind(), g.ecn(), g.gso_size()), (GsoKind::Tcp4, true, 1448));
        assert_eq!(g, Offload::gso(GsoKind::Tcp4, 1448, true, 34));
        let v = Offload::from_raw(2, 0, 0, 7, 7, 10).unwrap();
        assert!(v.is_verified() && v.partial_csum().is_none());
        assert_eq!(Offload::from_raw(0, 0, 0, 0, 0, 10), Some(Offload::NONE));
    }

    #[test]
    fn virtio_headers_round_trip_with_the_header_length_derived() {
        // 14 + 20 + 32 (TCP with options): data offset 8 words at byte 34 + 12.
        let mut frame = vec![0u8; 3000];
        frame[34 + 12] = 8 << 4;
        let o = Offload::gso(GsoKind::Tcp4, 1448, false, 34);
        let b = o.to_vnet(&frame);
        assert_eq!(Offload::from_vnet(&b, frame.len()), Some(o));
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), 66, "hdr_len");
        let u = Offload::gso(GsoKind::UdpL4, 1472, false, 34).to_vnet(&frame);
        assert_eq!(u16::from_ne_bytes([u[2], u[3]]), 42);
        let p = Offload::partial(34, 16).to_vnet(&frame);
        assert_eq!(u16::from_ne_bytes([p[2], p[3]]), 52);
        assert_eq!(Offload::NONE.to_vnet(&frame), [0; VNET_HDR_LEN]);
        assert_eq!(Offload::from_vnet(&Offload::verified().to_vnet(&frame), 10), Some(Offload::verified()));
        assert_eq!(o.segment_len(&frame), 66 + 1448);
        assert_eq!(o.segment_len(&frame[..1000]), 1000, "a short super-frame is one segment");
        assert_eq!(Offload::partial(34, 16).segment_len(&frame), 3000);
    }

    #[test]
    fn the_offloaded_form_completes_back_to_the_frame() {
        use crate::wire::builder::{Ipv4Spec, Ipv6Spec, TcpFlags, TcpSegment};
        use crate::wire::MacAddr;
        let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let v4 = Ipv4Spec::new(a, b, "10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let v6 = Ipv6Spec::new(a, b, "fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        for (frame, field) in [
            (v4.tcp(TcpSegment::new(1, 2, TcpFlags::ACK), 3000), 34 + 16),
            (v4.udp(1, 2, 3000), 34 + 6),
            (crate::wire::builder::with_vlan(&v4.udp(1, 2, 100), 9), 38 + 6),
            (v6.udp(1, 2, 3000), 54 + 6),
        ] {
            let (mut partial, o) = offloaded_form(&frame, None).unwrap();
            assert_ne!(partial, frame);
            assert_eq!(o.partial_csum().map(|(s, off)| usize::from(s + off)), Some(field));
            let (start, off) = o.partial_csum().unwrap();
            assert!(crate::port::gso::complete_checksum(&mut partial, usize::from(start), usize::from(off)));
            assert_eq!(partial, frame, "completing the partial checksum gives the frame back");
            let (_, g) = offloaded_form(&frame, Some(1000)).unwrap();
            assert!(g.is_gso() && g.gso_size() == 1000);
        }
        assert!(offloaded_form(&v4.icmp_echo_request(1, 1, 10), None).is_none());
    }

    #[test]
    fn shifting_moves_the_checksum_start_only_when_partial() {
        assert_eq!(Offload::partial(34, 16).shifted(4).partial_csum(), Some((38, 16)));
        assert_eq!(Offload::partial(34, 16).shifted(-4).partial_csum(), Some((30, 16)));
        assert_eq!(Offload::partial(2, 16).shifted(-4), Offload::NONE);
        assert_eq!(Offload::verified().shifted(4), Offload::verified());
    }

    #[test]
    fn capabilities_decide_what_needs_software() {
        let tcp4 = Offload::gso(GsoKind::Tcp4, 1448, false, 34);
        let udp = Offload::gso(GsoKind::UdpL4, 1472, false, 34);
        let partial = Offload::partial(34, 6);
        for o in [Offload::NONE, Offload::verified()] {
            assert!(!Caps::NONE.needs_software(&o));
        }
        assert!(Caps::NONE.needs_software(&partial));
        assert!(!Caps { csum: true, ..Caps::NONE }.needs_software(&partial));
        assert!(Caps { csum: true, ..Caps::NONE }.needs_software(&tcp4));
        assert!(!Caps { csum: true, tso4: true, ..Caps::NONE }.needs_software(&tcp4));
        assert!(Caps { csum: true, tso4: true, tso6: true, uso: false }.needs_software(&udp));
        assert!(!Caps::ALL.needs_software(&udp));
        assert_eq!(Caps::ALL.names(), "csum,tso4,tso6,uso");
        assert_eq!(Caps::NONE.names(), "-");
    }
}
