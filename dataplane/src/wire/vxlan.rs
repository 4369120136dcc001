//! VXLAN headers (RFC 7348): 8 bytes after the outer UDP header (destination port [`super::udp::VXLAN_PORT`]),
//! then the inner Ethernet frame.
//!
//! ```text
//! |R|R|R|R|I|R|R|R|          reserved (24)          |
//! |              VNI (24)                | reserved |
//! ```
//!
//! The I flag says the VNI is valid; receivers must ignore the reserved bits and senders must zero them
//! ([`Packet::set_header`] does). A strict receiver (Linux's `vxlan_rcv`, and the switch) refuses a header with any
//! other flag or reserved bit set ([`Packet::is_strict`]).
//!
//! An encapsulated frame as the switch sends it has fixed outer headers ([`outer`]): untagged Ethernet, IPv4
//! without options, UDP, VXLAN, then the inner frame at [`outer::INNER`] = [`OUTER_LEN`] bytes.

use super::{be, ethernet, ipv4, udp, Error, Field};

/// Header length.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;
/// Outer Ethernet, IPv4 (no options), UDP and VXLAN headers: what encapsulation adds to a frame.
pub const OUTER_LEN: usize = outer::INNER;
/// Outer IPv4 + UDP + VXLAN: what the outer IPv4 packet adds to the inner frame.
pub const TUNNEL_LEN: usize = OUTER_LEN - ethernet::HEADER_LEN;

/// Where each outer header starts in a frame the switch encapsulated (untagged, IPv4 without options).
pub mod outer {
    use super::{ethernet, ipv4, udp, HEADER_LEN};
    /// The outer IPv4 header.
    pub const IPV4: usize = ethernet::HEADER_LEN;
    /// The outer UDP header.
    pub const UDP: usize = IPV4 + ipv4::HEADER_LEN;
    /// The VXLAN header.
    pub const VXLAN: usize = UDP + udp::HEADER_LEN;
    /// The inner Ethernet frame.
    pub const INNER: usize = VXLAN + HEADER_LEN;
}

/// The offset of the inner frame in a VXLAN packet whose outer UDP header is at `udp_at`.
#[inline(always)]
pub const fn inner_offset(udp_at: usize) -> usize {
    udp_at + udp::HEADER_LEN + HEADER_LEN
}

/// The offset of the VXLAN header in a packet whose outer UDP header is at `udp_at`.
#[inline(always)]
pub const fn header_offset(udp_at: usize) -> usize {
    udp_at + udp::HEADER_LEN
}

mod field {
    use super::Field;
    pub const FLAGS: usize = 0;
    pub const FLAGS_RES: Field = 0..4;
    pub const VNI_RES: Field = 4..8;
}

view!("A view of a VXLAN header and the frame it carries.", fixed);

impl<T: AsRef<[u8]>> Packet<T> {
    /// [`Error::Truncated`] unless the buffer holds a whole header.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The flags byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// True if the I flag is set (the VNI is valid).
    #[inline]
    pub fn vni_valid(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The VXLAN network identifier (24 bits).
    #[inline]
    pub fn vni(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), field::VNI_RES) >> 8
    }

    /// True when the flags are exactly the I flag and every reserved bit is zero: the only header a strict
    /// receiver accepts.
    #[inline]
    pub fn is_strict(&self) -> bool {
        let d = self.buffer.as_ref();
        be::u32_at(d, field::FLAGS_RES) == u32::from(FLAG_I) << 24 && d[field::VNI_RES.end - 1] == 0
    }

    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes a whole header: the I flag, `vni` (low 24 bits), every reserved bit zero.
    #[inline]
    pub fn set_header(&mut self, vni: u32) {
        let d = self.buffer.as_mut();
        d[..HEADER_LEN].fill(0);
        d[field::FLAGS] = FLAG_I;
        self.set_vni(vni);
    }

    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the VNI (low 24 bits of `vni`), keeping the reserved byte after it.
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        let d = self.buffer.as_mut();
        let res = be::u32_at(d, field::VNI_RES) & 0xff;
        be::set_u32(d, field::VNI_RES, ((vni & MAX_VNI) << 8) | res);
    }

    /// The inner Ethernet frame, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(HEADER_LEN..).unwrap_or_default()
    }
}

/// Writable views of the outer headers of an encapsulated frame ([`outer`]), over its first [`OUTER_LEN`]
/// bytes.
#[derive(Debug)]
pub struct OuterMut<'a> {
    /// The outer Ethernet header.
    pub eth: ethernet::Packet<&'a mut [u8]>,
    /// The outer IPv4 header.
    pub ip: ipv4::Packet<&'a mut [u8]>,
    /// The outer UDP header.
    pub udp: udp::Packet<&'a mut [u8]>,
    /// The VXLAN header.
    pub vxlan: Packet<&'a mut [u8]>,
}

impl<'a> OuterMut<'a> {
    /// Splits `h` into the four headers.
    #[inline(always)]
    pub fn new(h: &'a mut [u8; OUTER_LEN]) -> OuterMut<'a> {
        let (eth, rest) = h.split_at_mut(outer::IPV4);
        let (ip, rest) = rest.split_at_mut(outer::UDP - outer::IPV4);
        let (udp, vxlan) = rest.split_at_mut(outer::VXLAN - outer::UDP);
        OuterMut {
            eth: ethernet::Packet::new_unchecked(eth),
            ip: ipv4::Packet::new_unchecked(ip),
            udp: udp::Packet::new_unchecked(udp),
            vxlan: Packet::new_unchecked(vxlan),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strict_headers_have_only_the_i_flag() {
        let mut b = [0u8; 8];
        Packet::new_unchecked(&mut b[..]).set_header(7);
        assert!(Packet::new_unchecked(&b[..]).is_strict());
        for (i, bit) in [(0, 0x04), (0, 0x80), (1, 1), (3, 1), (7, 1)] {
            let mut bad = b;
            bad[i] |= bit;
            assert!(!Packet::new_unchecked(&bad[..]).is_strict(), "byte {i} bit {bit:#x}");
        }
        b[0] = 0;
        assert!(!Packet::new_unchecked(&b[..]).is_strict(), "I flag missing");
    }

    #[test]
    fn outer_headers_sit_where_the_constants_say() {
        assert_eq!(
            (outer::IPV4, outer::UDP, outer::VXLAN, outer::INNER, OUTER_LEN, TUNNEL_LEN),
            (14, 34, 42, 50, 50, 36)
        );
        assert_eq!((header_offset(34), inner_offset(34)), (42, 50));
        let mut h = [0u8; OUTER_LEN];
        let mut o = OuterMut::new(&mut h);
        o.eth.set_ethertype(0x0800);
        o.ip.set_ttl(64);
        o.udp.set_dst_port(4789);
        o.vxlan.set_header(5);
        assert_eq!((h[12], h[13], h[14 + 8], h[36], h[37], h[42], h[48]), (8, 0, 64, 0x12, 0xb5, 8, 5));
    }

    #[test]
    fn rfc_7348_layout() {
        let mut b = [0xffu8; 10];
        Packet::new_checked(&mut b[..]).unwrap().set_header(0x12_3456);
        assert_eq!(b[..8], [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.vni_valid());
        assert_eq!((p.vni(), p.payload()), (0x12_3456, &[0xff, 0xff][..]));
        assert_eq!(Packet::new_checked(&b[..7]), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn checked_views_never_panic_and_setters_round_trip(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..20), vni: u32, flags: u8,
        ) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.flags(), p.vni_valid(), p.vni(), p.payload());
            }
            let _ = Packet::new_unchecked(&bytes[..]).payload();
            if let Ok(mut p) = Packet::new_checked(&mut bytes[..]) {
                let _ = p.payload_mut();
                p.set_vni(vni);
                p.set_flags(flags);
                prop_assert_eq!((p.vni(), p.flags()), (vni & MAX_VNI, flags));
                p.set_header(vni);
                prop_assert_eq!((p.vni(), p.flags(), p.vni_valid()), (vni & MAX_VNI, FLAG_I, true));
            }
        }
    }
}
