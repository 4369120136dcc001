//! [`Parsed`]: where a frame's headers are, found once at ingress and read by every later stage.
//!
//! [`parse`] validates the headers the switch may look at and records their offsets; it never copies headers
//! into owned structs. Ethernet, VLAN tags and IPv4 with its transport header (the common case) are checked
//! with the [`crate::wire`] views; IPv6 goes through etherparse's full `SlicedPacket` (extension headers),
//! whose large result struct costs ~30 ns per frame, too much for the common path.
//!
//! What is checked: an Ethernet header; up to two VLAN tags whole; for IPv4 ([`ipv4::Packet::check_len`]):
//! version 4, IHL >= 5, header whole, total length covering the header and within the frame, and (unless a
//! non-first fragment) a whole TCP header with a sane data offset ([`tcp::Packet::check_len`]), or 8 bytes of
//! UDP or ICMP header; for IPv6: what `SlicedPacket` checks (header, extension headers, payload length, L4
//! header). Other EtherTypes pass with only the Ethernet header checked.
//!
//! Later stages trust these offsets: a view they build at `l3` or `l4` holds a whole header. Pure code, any
//! thread.

use crate::counters::DropReason;
use crate::wire::{ethernet, ethertype, icmpv4, ipv4, tcp, udp, vlan, vxlan, Error};
use etherparse::err::packet::SliceError;
use etherparse::err::Layer;
use etherparse::SlicedPacket;

pub use crate::wire::ip_proto;

/// Where a frame's headers are. Offsets are from the start of the frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parsed {
    /// EtherType after any VLAN tags.
    pub ethertype: u16,
    /// Number of VLAN tags (0..=2).
    pub vlan_tags: u8,
    /// Offset of the network header (the EtherType's payload).
    pub l3: u16,
    /// Offset of the transport header, or 0 if there is none to look at (not IPv4, or a later fragment).
    pub l4: u16,
    /// End of the IP packet (frames may carry padding after it); the frame length for non-IP.
    pub l3_end: u16,
    /// IP protocol (IPv4 only; 0 otherwise).
    pub ip_proto: u8,
    /// IPv4 fragment that is not the first (offset > 0).
    pub later_fragment: bool,
    /// The TCP/UDP checksum field at `l4` holds only the pseudo-header sum (a partial checksum, see
    /// [`crate::offload`]): set by ingress from the frame's metadata once it checked that the metadata points at
    /// this field; never set by [`parse`]. NAT updates such a field for address changes only.
    pub csum_partial: bool,
}

/// `n`, an offset into the frame being parsed (at most its length), as [`Parsed`] keeps it. Cannot truncate:
/// frames are parsed where they live, in pool buffers, whose offsets fit a `u16` (asserted in `crate::buffer`).
#[inline(always)]
#[allow(clippy::cast_possible_truncation)]
fn offset(n: usize) -> u16 {
    debug_assert!(n <= usize::from(u16::MAX));
    n as u16
}

/// Checks one frame against an untagged length limit of `max_len` bytes (plus its VLAN tags) and locates its
/// headers: what ingress does with every received frame, and the overlay with every decapsulated one. Always
/// inlined into the per-frame loop (it is also called from ingress's cold `check_offloaded`, which made the
/// compiler keep it out of line).
#[inline(always)]
pub fn check(data: &[u8], max_len: usize) -> Result<Parsed, DropReason> {
    let mut parsed = Parsed::default();
    check_into(data, max_len, &mut parsed)?;
    Ok(parsed)
}

/// [`check`] writing the offsets into `parsed` (left unspecified if the frame is refused). Ingress's per-frame
/// loop uses this form: returning the 12-byte [`Parsed`] by value had it built field by field on the stack and
/// then copied whole, a load the CPU cannot forward from those narrower stores (a stall that cost the 64-byte
/// path about an eighth of its time, criterion `l2`).
#[inline(always)]
pub fn check_into(data: &[u8], max_len: usize, parsed: &mut Parsed) -> Result<(), DropReason> {
    if data.len() < ethernet::HEADER_LEN {
        return Err(DropReason::Runt);
    }
    // Cheap early bound before parsing: no frame longer than two tags' worth can be valid.
    if data.len() > max_len + 2 * vlan::HEADER_LEN {
        return Err(DropReason::TooLong);
    }
    parse_into(data, parsed)?;
    if data.len() > max_len + usize::from(parsed.vlan_tags) * vlan::HEADER_LEN {
        return Err(DropReason::TooLong);
    }
    Ok(())
}

impl Parsed {
    /// What a frame the overlay encapsulated looks like (untagged IPv4 UDP at the fixed outer offsets of
    /// [`vxlan::outer`]), `len` bytes long: no need to parse what the switch just wrote.
    #[inline]
    pub fn vxlan_outer(len: usize) -> Parsed {
        Parsed {
            ethertype: ethertype::IPV4,
            vlan_tags: 0,
            l3: offset(vxlan::outer::IPV4),
            l4: offset(vxlan::outer::UDP),
            l3_end: offset(len),
            ip_proto: ip_proto::UDP,
            later_fragment: false,
            csum_partial: false,
        }
    }
}

/// Validates `data` as an Ethernet frame and locates its headers. Always inlined: ingress calls it from its
/// per-frame check and from the cold check of frames with offload metadata, and an out-of-line call here cost
/// the 64-byte path about a third of its rate (criterion `l2`).
#[inline(always)]
pub fn parse(data: &[u8]) -> Result<Parsed, DropReason> {
    let mut p = Parsed::default();
    parse_into(data, &mut p)?;
    Ok(p)
}

/// [`parse`] writing the offsets into `p` (see [`check_into`] for why); `p` is unspecified if the frame is refused.
#[inline(always)]
pub fn parse_into(data: &[u8], p: &mut Parsed) -> Result<(), DropReason> {
    let eth = ethernet::Packet::new_checked(data).map_err(|_| DropReason::Runt)?;
    let Some(l3) = eth.layer3() else { return Err(DropReason::TruncatedVlan) };
    *p = Parsed {
        ethertype: l3.ethertype,
        vlan_tags: l3.vlan_tags,
        l3: offset(l3.offset),
        l3_end: offset(data.len()),
        ..Parsed::default()
    };
    match l3.ethertype {
        ethertype::IPV4 => parse_ipv4(data, p)?,
        ethertype::IPV6 => {
            SlicedPacket::from_ethernet(data).map_err(slice_error_reason)?;
        }
        _ => {}
    }
    Ok(())
}

#[inline]
fn parse_ipv4(data: &[u8], p: &mut Parsed) -> Result<(), DropReason> {
    let l3 = p.l3 as usize;
    let Some(packet) = data.get(l3..) else { return Err(DropReason::TruncatedIpHeader) };
    let ip = ipv4::Packet::new_checked(packet).map_err(|e| match e {
        Error::Truncated => DropReason::TruncatedIpHeader,
        Error::Malformed => DropReason::BadIpHeader,
        Error::BadLength => DropReason::BadIpLength,
    })?;
    let (header_len, total) = (ip.header_len(), usize::from(ip.total_len()));
    p.l3_end = offset(l3 + total);
    p.ip_proto = ip.protocol();
    if ip.frag_offset() > 0 {
        p.later_fragment = true;
        return Ok(());
    }
    // check_len guarantees header_len <= total <= packet.len().
    let l4_data = &packet[header_len..total];
    let whole = match p.ip_proto {
        ip_proto::TCP => match tcp::Packet::new_checked(l4_data) {
            Ok(_) => true,
            Err(Error::Malformed) => return Err(DropReason::BadL4Header),
            Err(_) => false,
        },
        ip_proto::UDP => l4_data.len() >= udp::HEADER_LEN,
        ip_proto::ICMP => l4_data.len() >= icmpv4::HEADER_LEN,
        _ => true,
    };
    // A first fragment may legitimately end before the whole L4 header only if it is tiny, which is an attack
    // pattern (RFC 1858); treat it as truncated like any other.
    if !whole {
        return Err(DropReason::TruncatedL4Header);
    }
    p.l4 = offset(l3 + header_len);
    Ok(())
}

/// Maps an etherparse slicing error (IPv6 frames) to the drop reason that names it.
pub fn slice_error_reason(e: SliceError) -> DropReason {
    match e {
        SliceError::Len(len) => match len.layer {
            Layer::Ethernet2Header => DropReason::Runt,
            Layer::VlanHeader => DropReason::TruncatedVlan,
            Layer::IpHeader | Layer::Ipv4Header | Layer::Ipv6Header => DropReason::TruncatedIpHeader,
            Layer::Ipv4Packet | Layer::Ipv6Packet => DropReason::BadIpLength,
            Layer::IpAuthHeader
            | Layer::Ipv6ExtHeader
            | Layer::Ipv6HopByHopHeader
            | Layer::Ipv6DestOptionsHeader
            | Layer::Ipv6RouteHeader
            | Layer::Ipv6FragHeader => DropReason::BadIpExtension,
            _ => DropReason::TruncatedL4Header,
        },
        SliceError::Ip(_) | SliceError::Ipv4(_) | SliceError::Ipv6(_) => DropReason::BadIpHeader,
        SliceError::Ipv4Exts(_) | SliceError::Ipv6Exts(_) => DropReason::BadIpExtension,
        SliceError::Tcp(_) => DropReason::BadL4Header,
        SliceError::LinuxSll(_) => DropReason::Runt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp_frame() -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2);
        let mut v = Vec::new();
        b.write(&mut v, &[0; 18]).unwrap();
        v
    }

    #[test]
    fn ipv4_udp_offsets() {
        let p = parse(&udp_frame()).unwrap();
        assert_eq!((p.ethertype, p.l3, p.l4, p.l3_end, p.ip_proto), (0x0800, 14, 34, 60, 17));
    }

    #[test]
    fn every_truncation_of_a_valid_frame_is_refused_or_parsed_without_panic() {
        let f = udp_frame();
        for n in 0..f.len() {
            let r = parse(&f[..n]);
            assert!(r.is_err(), "truncated to {n} bytes must not parse: {r:?}");
        }
    }

    #[test]
    fn named_reasons() {
        let f = udp_frame();
        assert_eq!(parse(&f[..10]), Err(DropReason::Runt));
        assert_eq!(parse(&f[..20]), Err(DropReason::TruncatedIpHeader));
        let mut bad_ihl = f.clone();
        bad_ihl[14] = 0x44;
        assert_eq!(parse(&bad_ihl), Err(DropReason::BadIpHeader));
        let mut bad_len = f.clone();
        ipv4::Packet::new_unchecked(&mut bad_len[14..]).set_total_len(2000);
        assert_eq!(parse(&bad_len), Err(DropReason::BadIpLength));
        let mut vlan = f[..12].to_vec();
        vlan.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(parse(&vlan), Err(DropReason::TruncatedVlan));
    }
}
