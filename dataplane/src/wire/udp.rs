//! UDP headers (RFC 768).
//!
//! [`Packet::check_len`]: the header is whole ([`Error::Truncated`]), the length field covers it
//! ([`Error::Malformed`]) and lies within the buffer ([`Error::BadLength`]). A checksum of 0 means "none" over
//! IPv4: a computed 0 is sent as 0xffff ([`Packet::fill_checksum_ipv4`] does).

use super::{be, checksum, Error, Field};
use std::net::Ipv4Addr;

/// Header length.
pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field from the start of the UDP header (a `virtio_net_hdr`'s `csum_offset`).
#[allow(clippy::cast_possible_truncation)] // a header offset below 20
pub const CHECKSUM_OFFSET: u16 = field::CHECKSUM.start as u16;
/// The IANA VXLAN port (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

view!("A view of a UDP datagram.", fixed);

impl<T: AsRef<[u8]>> Packet<T> {
    /// See the module documentation.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field = usize::from(self.length());
        if field < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if field > len {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// Source port.
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field: header and payload.
    #[inline(always)]
    pub fn length(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::LENGTH)
    }

    /// Checksum (0: none, over IPv4).
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// True if the buffer reaches the checksum field (a header quoted in an ICMP error may not).
    #[inline(always)]
    pub fn holds_checksum(&self) -> bool {
        self.buffer.as_ref().len() >= field::CHECKSUM.end
    }

    /// The payload: after the header, up to the length field (what the buffer holds of it).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        let end = usize::from(self.length()).min(d.len());
        d.get(HEADER_LEN..end).unwrap_or_default()
    }

    /// The datagram (header and payload) as far as the length field says and the buffer holds.
    #[inline]
    pub fn datagram(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        &d[..usize::from(self.length()).min(d.len())]
    }

    /// True if the checksum over the IPv4 pseudo-header and the datagram verifies (or is 0: none).
    #[inline]
    pub fn verify_checksum_ipv4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let dg = self.datagram();
        let Ok(len) = u16::try_from(dg.len()) else { return false };
        let pseudo = checksum::pseudo_ipv4(src, dst, super::ip_proto::UDP, len);
        checksum::add(pseudo, checksum::sum_long(dg)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    #[inline(always)]
    pub fn set_src_port(&mut self, port: u16) {
        be::set_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port.
    #[inline(always)]
    pub fn set_dst_port(&mut self, port: u16) {
        be::set_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Sets the length field.
    #[inline(always)]
    pub fn set_length(&mut self, len: u16) {
        be::set_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the checksum field.
    #[inline(always)]
    pub fn set_checksum(&mut self, c: u16) {
        be::set_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Computes and stores the checksum over the IPv4 pseudo-header and the datagram (as far as the length
    /// field says and the buffer holds); a computed 0 is stored as 0xffff.
    #[inline]
    pub fn fill_checksum_ipv4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let dg = self.datagram();
        // The datagram is at most its 16-bit length field long: cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let pseudo = checksum::pseudo_ipv4(src, dst, super::ip_proto::UDP, dg.len() as u16);
        let c = !checksum::add(pseudo, checksum::sum_long(dg));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// The payload, writable (see [`Packet::payload`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.length());
        let d = self.buffer.as_mut();
        let end = end.min(d.len());
        d.get_mut(HEADER_LEN..end).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builder::Ipv4Spec;
    use crate::wire::MacAddr;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn reads_what_the_builder_wrote_and_refills_the_same_checksum() {
        let mut f = Ipv4Spec::new(MacAddr::ZERO, MacAddr::ZERO, SRC, DST).udp(1000, 53, 11);
        let mut p = Packet::new_checked(&mut f[34..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.length(), p.payload().len()), (1000, 53, 19, 11));
        assert!(p.verify_checksum_ipv4(SRC, DST));
        let c = p.checksum();
        p.fill_checksum_ipv4(SRC, DST);
        assert_eq!(p.checksum(), c);
        assert!(!p.verify_checksum_ipv4(SRC, Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(Packet::new_checked(&f[34..41]), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn checked_views_never_panic_and_setters_round_trip(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..40),
            sp: u16, dp: u16, cs: u16, fit: bool,
        ) {
            if fit && bytes.len() >= HEADER_LEN {
                let n = bytes.len() as u16;
                bytes[4..6].copy_from_slice(&n.to_be_bytes());
            }
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.src_port(), p.dst_port(), p.checksum(), p.holds_checksum());
                let _ = p.verify_checksum_ipv4(SRC, DST);
                prop_assert_eq!(p.payload().len(), usize::from(p.length()) - HEADER_LEN);
                prop_assert_eq!(p.datagram().len(), usize::from(p.length()));
            }
            if bytes.len() >= 6 {
                let u = Packet::new_unchecked(&bytes[..]);
                let _ = (u.payload(), u.datagram());
            }
            if let Ok(mut p) = Packet::new_checked(&mut bytes[..]) {
                let _ = p.payload_mut();
                p.fill_checksum_ipv4(SRC, DST);
                prop_assert!(p.verify_checksum_ipv4(SRC, DST));
                p.set_src_port(sp);
                p.set_dst_port(dp);
                p.set_checksum(cs);
                prop_assert_eq!((p.src_port(), p.dst_port(), p.checksum()), (sp, dp, cs));
            }
        }
    }
}
