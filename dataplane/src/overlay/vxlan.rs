//! VXLAN (RFC 7348) on the wire: the outer headers the switch prepends ([`Template`]), the outer UDP source port
//! taken from the inner flow ([`source_port`]), and the checks a received VXLAN packet must pass before its inner
//! frame is looked at ([`parse`]).
//!
//! Encapsulation, as OVS's and VPP's userspace tunnels do it: one [`Template`] per remote VTEP, built when the
//! peer is learnt, holds the outer IPv4 + UDP + VXLAN headers (36 bytes) and the EtherType; encapsulating a
//! frame prepends [`OVERHEAD`] bytes in the buffer's headroom (no copy of the inner frame), copies the template,
//! and writes the four fields that vary per packet: the IPv4 total length and its header checksum (finished from
//! a sum precomputed without the length), the UDP length and source port, and the VNI. The outer Ethernet
//! addresses are left zero: the underlay next hop's MAC is written by the router's neighbour stage, which
//! resolves it with ARP like any next hop. Fixed choices:
//! - IPv4 DF set (RFC 7348 §4.3: VTEPs must not fragment; the overlay MTU leaves room for the 50 bytes);
//! - IPv4 identification 0 (an atomic datagram, RFC 6864 §4.1), TTL 64, TOS 0;
//! - UDP source port 49152 + (inner flow hash mod 16384), so the underlay's ECMP and RSS spread flows (§5);
//! - UDP checksum 0 (allowed for IPv4, §5: the inner frame carries its own checksums, and a zero checksum
//!   cannot be broken by a NAT in the underlay, flannel's recurring bug);
//! - VXLAN flags 0x08 (VNI valid), every reserved bit zero.
//!
//! Decapsulation ([`parse`]) is as strict as Linux's `vxlan_rcv`: the flags word must be exactly "VNI valid"
//! and the reserved bytes zero (`vxlan-bad-flags`); the UDP payload must hold the VXLAN header and an inner
//! Ethernet header, and the outer packet must not be a fragment (`vxlan-truncated`: VTEPs never fragment, so a
//! fragment is a packet cut short). A non-zero outer UDP checksum is not verified (RFC 7348 §5 lets the receiver
//! skip it): the inner frame's own checksums protect what the switch reads.
//!
//! Everything here is a pure function of its inputs: no state, no clock; callable from any thread.

use crate::buffer::Frame;
use crate::counters::DropReason;
use crate::packet::ip_proto;
use crate::wire::vxlan::{OuterMut, OUTER_LEN, TUNNEL_LEN};
use crate::wire::{checksum, ethernet, ethertype, ipv4, udp, vxlan};
use std::net::Ipv4Addr;

/// The VXLAN header's length.
pub const VXLAN_HEADER_LEN: usize = vxlan::HEADER_LEN;
/// Outer IPv4 header (no options) + UDP + VXLAN.
pub const TUNNEL_HEADER_LEN: usize = TUNNEL_LEN;
/// Bytes encapsulation adds to a frame: outer Ethernet, IPv4, UDP and VXLAN headers.
pub const OVERHEAD: usize = OUTER_LEN;
const _: () = assert!(OVERHEAD == vswitch_api::overlay::OVERHEAD as usize);
/// IANA's VXLAN port.
pub const DEFAULT_UDP_PORT: u16 = vswitch_api::overlay::DEFAULT_UDP_PORT;
/// First outer source port ([`source_port`]): the start of the dynamic range.
pub const SOURCE_PORT_BASE: u16 = 49152;
/// The outer IPv4 header's length as the UDP length field counts it (the template has no options).
const IPV4_HEADER_LEN: u16 = 20;
const _: () = assert!(IPV4_HEADER_LEN as usize == ipv4::HEADER_LEN);
/// Number of outer source ports used.
pub const SOURCE_PORT_SPAN: u16 = 16384;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = vxlan::MAX_VNI;
/// Outer TTL.
pub const TTL: u8 = 64;

/// The precomputed outer headers towards one remote VTEP (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    bytes: [u8; OVERHEAD],
    /// One's-complement sum of the IPv4 header with its total length and checksum zero.
    ip_sum: u16,
    dst: Ipv4Addr,
}

impl Template {
    /// The outer headers from `src` (our VTEP) to `dst` (the peer's), UDP destination port `dst_port`.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, dst_port: u16) -> Template {
        let mut bytes = [0u8; OVERHEAD];
        let mut h = OuterMut::new(&mut bytes);
        h.eth.set_ethertype(ethertype::IPV4);
        h.ip.set_version_and_header_len(ipv4::HEADER_LEN);
        h.ip.set_flags_frag(ipv4::flags::DF);
        h.ip.set_ttl(TTL);
        h.ip.set_protocol(ip_proto::UDP);
        h.ip.set_src_addr(src);
        h.ip.set_dst_addr(dst);
        let ip_sum = checksum::sum(h.ip.header());
        h.udp.set_dst_port(dst_port);
        h.vxlan.set_header(0);
        Template { bytes, ip_sum, dst }
    }

    /// The peer's VTEP address.
    pub fn dst(&self) -> Ipv4Addr {
        self.dst
    }

    /// Prepends the outer headers to `frame` for `vni` with outer source port `sport`. Returns false, leaving
    /// the frame as it was, when the headroom is short or the outer packet would exceed 65535 bytes.
    #[inline]
    pub fn encap(&self, frame: &mut Frame, vni: u32, sport: u16) -> bool {
        let Ok(ip_len) = u16::try_from(frame.len() + TUNNEL_HEADER_LEN) else { return false };
        if !frame.push_front(OVERHEAD) {
            return false;
        }
        let Some(h) = crate::wire::fixed_mut::<OVERHEAD>(frame.data_mut(), 0) else { return false };
        *h = self.bytes;
        let mut h = OuterMut::new(h);
        h.ip.set_total_len(ip_len);
        h.ip.set_checksum(!checksum::add(self.ip_sum, ip_len));
        h.udp.set_src_port(sport);
        h.udp.set_length(ip_len - IPV4_HEADER_LEN);
        h.vxlan.set_vni(vni);
        true
    }
}

/// A 32-bit hash of the inner frame's flow: addresses, protocol and ports of an IPv4 TCP/UDP packet (addresses
/// and protocol for other IPv4, and for fragments, whose later pieces carry no ports); the MAC addresses and
/// EtherType of anything else. Deterministic (replay gives the same ports every run).
#[inline]
pub fn flow_hash(inner: &[u8]) -> u32 {
    #[inline(always)]
    fn mix(h: u32, w: u32) -> u32 {
        (h.rotate_left(5) ^ w).wrapping_mul(0x9e37_79b9)
    }
    let mut h = 0x811c_9dc5u32;
    let Some(eth) = ethernet::Header::at(inner, 0) else { return finish(h) };
    let ip = if eth.ethertype() == ethertype::IPV4 { ipv4::Header::at(inner, ethernet::HEADER_LEN) } else { None };
    match ip {
        Some(ip) => {
            let proto = ip.protocol();
            h = mix(h, u32::from(ip.src_addr()));
            h = mix(h, u32::from(ip.dst_addr()));
            h = mix(h, u32::from(proto));
            let ports = if (proto == ip_proto::TCP || proto == ip_proto::UDP) && !ip.is_fragment() {
                udp::Header::at(inner, ethernet::HEADER_LEN + ip.header_len())
            } else {
                None
            };
            if let Some(p) = ports {
                h = mix(h, u32::from(p.src_port()) << 16 | u32::from(p.dst_port()));
            }
        }
        None => {
            let (d, s) = (eth.dst_addr().0, eth.src_addr().0);
            h = mix(h, u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
            h = mix(h, u32::from_be_bytes([d[4], d[5], s[0], s[1]]));
            h = mix(h, u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
            h = mix(h, u32::from(eth.ethertype()));
        }
    }
    finish(h)
}

/// Final avalanche so the low bits depend on every input bit.
#[inline(always)]
fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^ (h >> 13)
}

/// The outer UDP source port for an inner frame: `49152 + flow_hash % 16384` (RFC 7348 §5).
#[inline]
pub fn source_port(inner: &[u8]) -> u16 {
    let offset = u16::try_from(flow_hash(inner) % u32::from(SOURCE_PORT_SPAN)).unwrap_or(0);
    SOURCE_PORT_BASE + offset
}

/// What [`parse`] found in a VXLAN packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decap {
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The sending VTEP (outer IPv4 source).
    pub src: Ipv4Addr,
    /// Offset of the inner Ethernet frame.
    pub inner: usize,
    /// End of the inner frame (the outer IPv4 packet's end: padding after it is not part of the inner frame).
    pub end: usize,
}

/// Checks a received frame that ingress accepted as an IPv4 UDP packet (header offsets `l3`, `l4`; IP packet
/// ending at `l3_end`) sent to the VXLAN port, and locates its inner frame. See the module documentation for the
/// checks and their drop reasons.
#[inline]
pub fn parse(data: &[u8], l3: usize, l4: usize, l3_end: usize) -> Result<Decap, DropReason> {
    let ip = ipv4::Header::at(data, l3).ok_or(DropReason::VxlanTruncated)?;
    // MF set or a non-zero offset: a fragment.
    if ip.is_fragment() {
        return Err(DropReason::VxlanTruncated);
    }
    let inner = vxlan::inner_offset(l4);
    if l4 == 0 || l3_end > data.len() || inner + ethernet::HEADER_LEN > l3_end {
        return Err(DropReason::VxlanTruncated);
    }
    let vx = vxlan::Header::at(data, vxlan::header_offset(l4)).ok_or(DropReason::VxlanTruncated)?;
    if !vx.is_strict() {
        return Err(DropReason::VxlanBadFlags);
    }
    Ok(Decap { vni: vx.vni(), src: ip.src_addr(), inner, end: l3_end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::BufPool;
    use crate::wire::builder::Ipv4Spec;
    use crate::wire::MacAddr;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
    const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);

    fn inner(sport: u16) -> Vec<u8> {
        Ipv4Spec::new(
            MacAddr([2, 0, 0, 0, 0, 1]),
            MacAddr([2, 0, 0, 0, 0, 2]),
            Ipv4Addr::new(10, 1, 0, 2),
            Ipv4Addr::new(10, 1, 0, 3),
        )
        .udp(sport, 53, 30)
    }

    #[test]
    fn encap_writes_headers_an_independent_decoder_accepts() {
        let mut pool = BufPool::new(1);
        let mut f = pool.alloc().unwrap();
        let orig = inner(1000);
        f.load(&orig).unwrap();
        let t = Template::new(A, B, DEFAULT_UDP_PORT);
        assert!(t.encap(&mut f, 0x12_3456, 50000));
        let d = f.data();
        assert_eq!(d.len(), orig.len() + OVERHEAD);
        let p = SlicedPacket::from_ethernet(d).expect("etherparse decodes the outer headers");
        let Some(NetSlice::Ipv4(ip)) = p.net else { panic!("outer IPv4 expected") };
        let h = ip.header();
        assert_eq!((h.source_addr(), h.destination_addr(), h.ttl()), (A, B, 64));
        assert!(h.dont_fragment() && !h.more_fragments());
        assert_eq!(usize::from(h.total_len()), orig.len() + TUNNEL_HEADER_LEN);
        assert!(checksum::verify(h.slice()), "outer IPv4 header checksum");
        let Some(TransportSlice::Udp(u)) = p.transport else { panic!("outer UDP expected") };
        assert_eq!((u.source_port(), u.destination_port(), u.checksum()), (50000, 4789, 0));
        assert_eq!(usize::from(u.length()), orig.len() + 16);
        let vx = u.payload();
        assert_eq!(vx[..8], [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(&vx[8..], &orig[..], "inner frame untouched");
        // The outer Ethernet addresses are the neighbour stage's to write.
        assert_eq!(&d[..12], &[0; 12]);
    }

    #[test]
    fn encap_needs_headroom() {
        let mut pool = BufPool::new(1);
        let mut f = pool.alloc().unwrap();
        f.load(&inner(1)).unwrap();
        assert!(f.pull_front(0));
        // Use up the headroom.
        assert!(f.push_front(crate::buffer::HEADROOM - 10));
        let before = f.data().to_vec();
        assert!(!Template::new(A, B, 4789).encap(&mut f, 1, SOURCE_PORT_BASE));
        assert_eq!(f.data(), &before[..]);
    }

    #[test]
    fn parse_round_trips_and_refuses_what_linux_refuses() {
        let mut pool = BufPool::new(1);
        let mut f = pool.alloc().unwrap();
        f.load(&inner(7)).unwrap();
        assert!(Template::new(A, B, 4789).encap(&mut f, 42, 50001));
        let d = f.data().to_vec();
        let end = d.len();
        assert_eq!(parse(&d, 14, 34, end), Ok(Decap { vni: 42, src: A, inner: 50, end }));
        let mut bad = d.clone();
        bad[42] = 0x0c; // another flag bit
        assert_eq!(parse(&bad, 14, 34, end), Err(DropReason::VxlanBadFlags));
        let mut bad = d.clone();
        bad[42] = 0; // I flag missing
        assert_eq!(parse(&bad, 14, 34, end), Err(DropReason::VxlanBadFlags));
        let mut bad = d.clone();
        bad[49] = 1; // reserved byte after the VNI
        assert_eq!(parse(&bad, 14, 34, end), Err(DropReason::VxlanBadFlags));
        assert_eq!(parse(&d[..60], 14, 34, 60), Err(DropReason::VxlanTruncated), "inner Ethernet header cut");
        let mut frag = d.clone();
        frag[20] |= 0x20; // MF
        assert_eq!(parse(&frag, 14, 34, end), Err(DropReason::VxlanTruncated));
        assert_eq!(parse(&d, 14, 34, end + 1), Err(DropReason::VxlanTruncated), "IP length past the frame");
    }

    #[test]
    fn source_ports_stay_in_range_and_spread_flows() {
        let mut seen = std::collections::HashSet::new();
        for sport in 0..2000u16 {
            let p = source_port(&inner(sport));
            assert!((SOURCE_PORT_BASE..=u16::MAX).contains(&p));
            seen.insert(p);
        }
        // 2000 flows into 16384 ports: a decent hash leaves few collisions (expected ~1880 distinct).
        assert!(seen.len() > 1800, "only {} distinct ports for 2000 flows", seen.len());
        assert_eq!(source_port(&inner(5)), source_port(&inner(5)), "one flow, one port");
        // Non-IP frames hash their MACs and EtherType.
        let arp = crate::wire::builder::arp_request(MacAddr([2, 0, 0, 0, 0, 9]), A, B);
        assert!(source_port(&arp) >= SOURCE_PORT_BASE);
        assert!(source_port(&[]) >= SOURCE_PORT_BASE);
    }
}
