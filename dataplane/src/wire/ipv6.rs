//! IPv6 fixed headers (RFC 8200). Extension headers are not walked here: ingress leaves them to etherparse,
//! and segmentation and checksum completion refuse them (a next header that is not TCP or UDP).
//!
//! [`Packet::check_len`]: the fixed header is whole ([`Error::Truncated`]), version 6 ([`Error::Malformed`]),
//! the payload length lies within the buffer ([`Error::BadLength`]).

use super::{be, Error, Field};
use std::net::Ipv6Addr;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

mod field {
    use super::Field;
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

view!("A view of an IPv6 packet.", fixed);

impl<T: AsRef<[u8]>> Packet<T> {
    /// See the module documentation.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::Malformed);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// Version (6).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// Traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        ((be::u32_at(self.buffer.as_ref(), field::VER_TC_FLOW) >> 20) & 0xff) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length (extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::LENGTH)
    }

    /// Next header (an IP protocol number or an extension header).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        let b: [u8; 16] = self.buffer.as_ref()[field::SRC_ADDR].try_into().expect("a 16-byte field");
        Ipv6Addr::from(b)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        let b: [u8; 16] = self.buffer.as_ref()[field::DST_ADDR].try_into().expect("a 16-byte field");
        Ipv6Addr::from(b)
    }

    /// The payload: the payload length's bytes after the fixed header (what the buffer holds of them).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(d.len());
        d.get(HEADER_LEN..end).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 6, the traffic class and the flow label (low 20 bits).
    #[inline]
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        be::set_u32(self.buffer.as_mut(), field::VER_TC_FLOW, v);
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        be::set_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, proto: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = proto;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hops: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hops;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builder::ipv6_udp;
    use crate::wire::MacAddr;
    use proptest::prelude::*;

    #[test]
    fn reads_what_the_builder_wrote() {
        let (s, d): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let f = ipv6_udp(MacAddr::ZERO, MacAddr::ZERO, s, d, 1, 2, 4);
        let p = Packet::new_checked(&f[14..]).unwrap();
        assert_eq!((p.version(), p.payload_len(), p.next_header(), p.hop_limit()), (6, 12, 17, 64));
        assert_eq!((p.src_addr(), p.dst_addr(), p.payload().len()), (s, d, 12));
        assert_eq!(Packet::new_checked(&f[14..53]), Err(Error::Truncated));
        assert_eq!(Packet::new_checked(&f[14..14 + 51]), Err(Error::BadLength));
    }

    proptest! {
        #[test]
        fn checked_views_never_panic_and_setters_round_trip(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..80),
            tc: u8, flow: u32, plen: u16, nh: u8, hl: u8, src: u128, dst: u128,
        ) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.version(), p.traffic_class(), p.flow_label(), p.next_header(), p.hop_limit());
                let _ = (p.src_addr(), p.dst_addr());
                prop_assert_eq!(p.payload().len(), usize::from(p.payload_len()));
            }
            if bytes.len() >= 6 {
                let _ = Packet::new_unchecked(&bytes[..]).payload();
            }
            if bytes.len() >= HEADER_LEN {
                let mut p = Packet::new_unchecked(&mut bytes[..]);
                p.set_version_tc_flow(tc, flow);
                p.set_payload_len(plen);
                p.set_next_header(nh);
                p.set_hop_limit(hl);
                p.set_src_addr(src.into());
                p.set_dst_addr(dst.into());
                prop_assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, tc, flow & 0xfffff));
                prop_assert_eq!((p.payload_len(), p.next_header(), p.hop_limit()), (plen, nh, hl));
                prop_assert_eq!((p.src_addr(), p.dst_addr()), (Ipv6Addr::from(src), Ipv6Addr::from(dst)));
            }
        }
    }
}
