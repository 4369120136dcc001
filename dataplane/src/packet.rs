//! [`Parsed`]: where a frame's headers are, found once at ingress and read by every later stage.
//!
//! [`parse`] validates the headers the switch may look at and records their offsets; it never copies headers
//! into owned structs. IPv4 (the common case) is checked with etherparse's header slices (`Ipv4HeaderSlice`,
//! `TcpHeaderSlice`, ...), which cost a few nanoseconds; everything else goes through etherparse's full
//! `SlicedPacket`, whose large result struct cost ~30 ns per frame in the L2 benchmark, too much for the common
//! path.
//!
//! What is checked: an Ethernet header; up to two VLAN tags whole; for IPv4: version 4, IHL >= 5, header whole,
//! total length covering the header and within the frame, and (unless a non-first fragment) a whole TCP (with a
//! sane data offset), UDP or ICMP header; for IPv6: what `SlicedPacket` checks (header, extension headers,
//! payload length, L4 header). Other EtherTypes pass with only the Ethernet header checked.

use crate::counters::DropReason;
use crate::ingress::slice_error_reason;
use crate::wire::ethernet::{ETH_HEADER_LEN, VLAN_TAG_LEN};
use crate::wire::ethertype;
use etherparse::err::ipv4::HeaderSliceError;
use etherparse::{Ipv4HeaderSlice, SlicedPacket, TcpHeaderSlice};

/// IP protocol numbers the switch looks at.
pub mod ip_proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

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
}

#[inline]
fn be16(data: &[u8], off: usize) -> Option<u16> {
    data.get(off..off + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// Validates `data` as an Ethernet frame and locates its headers.
#[inline]
pub fn parse(data: &[u8]) -> Result<Parsed, DropReason> {
    let Some(mut et) = be16(data, 12) else { return Err(DropReason::Runt) };
    let mut l3 = ETH_HEADER_LEN;
    let mut tags = 0u8;
    while et == ethertype::VLAN || et == ethertype::QINQ {
        if tags == 2 {
            break; // a third tag is left as payload, as etherparse does
        }
        let Some(inner) = be16(data, l3 + 2) else { return Err(DropReason::TruncatedVlan) };
        et = inner;
        l3 += VLAN_TAG_LEN;
        tags += 1;
    }
    let mut p =
        Parsed { ethertype: et, vlan_tags: tags, l3: l3 as u16, l3_end: data.len() as u16, ..Parsed::default() };
    match et {
        ethertype::IPV4 => parse_ipv4(data, &mut p)?,
        ethertype::IPV6 => {
            SlicedPacket::from_ethernet(data).map_err(slice_error_reason)?;
        }
        _ => {}
    }
    Ok(p)
}

#[inline]
fn parse_ipv4(data: &[u8], p: &mut Parsed) -> Result<(), DropReason> {
    let l3 = p.l3 as usize;
    let ip = Ipv4HeaderSlice::from_slice(&data[l3..]).map_err(|e| match e {
        HeaderSliceError::Len(_) => DropReason::TruncatedIpHeader,
        HeaderSliceError::Content(_) => DropReason::BadIpHeader,
    })?;
    let header_len = ip.slice().len();
    let total = ip.total_len() as usize;
    if total < header_len || l3 + total > data.len() {
        return Err(DropReason::BadIpLength);
    }
    let l4 = l3 + header_len;
    let end = l3 + total;
    p.l3_end = end as u16;
    p.ip_proto = ip.protocol().0;
    if ip.fragments_offset().value() > 0 {
        p.later_fragment = true;
        return Ok(());
    }
    let l4_data = &data[l4..end];
    let ok = match p.ip_proto {
        ip_proto::TCP => match TcpHeaderSlice::from_slice(l4_data) {
            Ok(_) => true,
            Err(etherparse::err::tcp::HeaderSliceError::Len(_)) => false,
            Err(etherparse::err::tcp::HeaderSliceError::Content(_)) => return Err(DropReason::BadL4Header),
        },
        ip_proto::UDP | ip_proto::ICMP => l4_data.len() >= 8,
        _ => true,
    };
    // A first fragment may legitimately end before the whole L4 header only if it is tiny, which is an attack
    // pattern (RFC 1858); treat it as truncated like any other.
    if !ok {
        return Err(DropReason::TruncatedL4Header);
    }
    p.l4 = l4 as u16;
    Ok(())
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
        bad_len[16..18].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(parse(&bad_len), Err(DropReason::BadIpLength));
        let mut vlan = f[..12].to_vec();
        vlan.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(parse(&vlan), Err(DropReason::TruncatedVlan));
    }
}
