//! IPv4 headers (RFC 791).
//!
//! [`Packet::check_len`] checks, in this order (each failure names what ingress counts): the fixed header is
//! whole ([`Error::Truncated`]); version 4 and IHL >= 5 ([`Error::Malformed`]); the header with its options is
//! whole ([`Error::Truncated`]); the total length covers the header and lies within the buffer
//! ([`Error::BadLength`]). A checked view's [`Packet::payload`] is then exactly the packet's payload (the
//! buffer may hold padding after it).
//!
//! [`Header`] (a view over `&[u8; HEADER_LEN]`) is what the forwarding path uses: fixed fields without bounds
//! checks, [`Header::verify_checksum_fixed`] for the option-less header, and [`HeaderMut::decrement_ttl`].

use super::{be, checksum, Error, Field};
use std::net::Ipv4Addr;

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;
/// Length of the longest header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

/// Bits of the 16-bit flags and fragment offset word.
pub mod flags {
    /// Don't Fragment.
    pub const DF: u16 = 0x4000;
    /// More Fragments.
    pub const MF: u16 = 0x2000;
    /// The fragment offset (in 8-byte units).
    pub const OFFSET: u16 = 0x1fff;
}

mod field {
    use super::Field;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
    /// TTL and protocol, the 16-bit word a TTL change updates in the checksum.
    pub const TTL_PROTOCOL: Field = 8..10;
}

view!("A view of an IPv4 packet.", fixed);

impl<T: AsRef<[u8]>> Packet<T> {
    /// See the module documentation.
    #[inline(always)]
    pub fn check_len(&self) -> Result<(), Error> {
        self.check_header()?;
        let len = self.buffer.as_ref().len();
        let total = usize::from(self.total_len());
        if total < self.header_len() || total > len {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// [`Packet::check_len`] without the total length: the header, options included, is whole and
    /// well-formed. What a header quoted in an ICMP error (its payload cut after 8 bytes) can be checked for.
    #[inline(always)]
    pub fn check_header(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 || self.header_len() < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len < self.header_len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Version (4).
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP and ECN (the old type-of-service byte).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length: header and payload.
    #[inline(always)]
    pub fn total_len(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::IDENT)
    }

    /// The flags and fragment offset word ([`flags`]).
    #[inline(always)]
    pub fn flags_frag(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::FLG_OFF)
    }

    /// Don't Fragment.
    #[inline(always)]
    pub fn dont_frag(&self) -> bool {
        self.buffer.as_ref()[field::FLG_OFF.start] & (flags::DF >> 8) as u8 != 0
    }

    /// More Fragments.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & flags::MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> usize {
        usize::from(self.flags_frag() & flags::OFFSET) * 8
    }

    /// Any fragment (MF set or an offset): the packet is not a whole datagram.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (flags::MF | flags::OFFSET) != 0
    }

    /// Time to live.
    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload (an IP protocol number).
    #[inline(always)]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum.
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline(always)]
    pub fn src_addr(&self) -> Ipv4Addr {
        be::ipv4_at(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// Destination address.
    #[inline(always)]
    pub fn dst_addr(&self) -> Ipv4Addr {
        be::ipv4_at(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// The header, options included (what the buffer holds of it).
    #[inline]
    pub fn header(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        &d[..self.header_len().min(d.len())]
    }

    /// True if the header checksum (over the whole header, options included) is right; false if the buffer
    /// does not hold the whole header.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        self.buffer.as_ref().get(..self.header_len()).is_some_and(checksum::verify)
    }

    /// The payload: from the end of the header to the total length (what the buffer holds of it).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        let end = usize::from(self.total_len()).min(d.len());
        d.get(self.header_len()..end).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and the header length in bytes (a multiple of 4, 20..=60).
    #[inline]
    // Masked to the 4-bit IHL field before narrowing: cannot truncate.
    #[allow(clippy::cast_possible_truncation)]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) & 0x0f) as u8;
    }

    /// Sets DSCP and ECN.
    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    /// Sets the total length.
    #[inline(always)]
    pub fn set_total_len(&mut self, len: u16) {
        be::set_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the identification.
    #[inline(always)]
    pub fn set_ident(&mut self, id: u16) {
        be::set_u16(self.buffer.as_mut(), field::IDENT, id);
    }

    /// Sets the flags and fragment offset word.
    #[inline]
    pub fn set_flags_frag(&mut self, v: u16) {
        be::set_u16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Sets the time to live.
    #[inline(always)]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, proto: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = proto;
    }

    /// Sets the header checksum field.
    #[inline(always)]
    pub fn set_checksum(&mut self, c: u16) {
        be::set_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Sets the source address.
    #[inline(always)]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        be::set_ipv4(self.buffer.as_mut(), field::SRC_ADDR, a);
    }

    /// Sets the destination address.
    #[inline(always)]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        be::set_ipv4(self.buffer.as_mut(), field::DST_ADDR, a);
    }

    /// Computes and stores the header checksum over the header (options included, as far as the buffer holds
    /// it).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// Decrements the TTL (which must be at least 1) and updates the checksum incrementally (RFC 1624).
    #[inline(always)]
    pub fn decrement_ttl(&mut self) {
        let d = self.buffer.as_mut();
        let old = be::u16_at(d, field::TTL_PROTOCOL);
        // TTL is the high byte of the word: subtracting 0x100 decrements it alone (as the byte's wrapping_sub
        // would). Written back as the whole word: re-reading the word after a one-byte store of the TTL made
        // the CPU wait for the store (a store it cannot forward to a wider load; ~8 % of the NAT bench's time).
        let new = old.wrapping_sub(0x100);
        be::set_u16(d, field::TTL_PROTOCOL, new);
        let c = checksum::update16(be::u16_at(d, field::CHECKSUM), old, new);
        be::set_u16(d, field::CHECKSUM, c);
    }

    /// The payload, writable (see [`Packet::payload`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, total) = (self.header_len(), usize::from(self.total_len()));
        let d = self.buffer.as_mut();
        let end = total.min(d.len());
        d.get_mut(start..end).unwrap_or_default()
    }
}

impl<'a> Header<'a> {
    /// True if the checksum of an option-less header is right ([`checksum::verify_ipv4_header`]: five
    /// native-order words, a fixed fold). Meaningful only when [`Packet::header_len`] is [`HEADER_LEN`].
    #[inline(always)]
    pub fn verify_checksum_fixed(&self) -> bool {
        checksum::verify_ipv4_header(self.buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builder::{Ipv4Opts, Ipv4Spec};
    use crate::wire::MacAddr;
    use proptest::prelude::*;

    fn udp_packet() -> Vec<u8> {
        let spec = Ipv4Spec::new(MacAddr::ZERO, MacAddr::ZERO, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        spec.with_opts(Ipv4Opts { ttl: 9, df: true, id: 77 }).udp(1, 2, 30)[14..].to_vec()
    }

    #[test]
    fn reads_what_the_builder_wrote() {
        let b = udp_packet();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.version(), p.header_len(), p.total_len(), p.ident(), p.ttl(), p.protocol()),
            (4, 20, 58, 77, 9, 17)
        );
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment() && p.frag_offset() == 0);
        assert_eq!((p.src_addr(), p.dst_addr()), (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 38);
        assert!(Header::at(&b, 0).unwrap().verify_checksum_fixed());
    }

    #[test]
    fn check_len_names_what_is_wrong_in_order() {
        let b = udp_packet();
        assert_eq!(Packet::new_checked(&b[..19]), Err(Error::Truncated));
        let mut v6 = b.clone();
        v6[0] = 0x65;
        assert_eq!(Packet::new_checked(&v6[..]), Err(Error::Malformed));
        let mut ihl4 = b.clone();
        ihl4[0] = 0x44;
        assert_eq!(Packet::new_checked(&ihl4[..]), Err(Error::Malformed));
        let mut opts = b.clone();
        opts[0] = 0x4f;
        assert_eq!(Packet::new_checked(&opts[..40]), Err(Error::Truncated), "options cut short");
        assert_eq!(Packet::new_checked(&b[..57]), Err(Error::BadLength), "total length beyond the buffer");
        let mut short = b.clone();
        short[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&short[..]), Err(Error::BadLength));
    }

    #[test]
    fn ttl_decrement_updates_the_checksum() {
        let mut b = udp_packet();
        let mut h = HeaderMut::at_mut(&mut b, 0).unwrap();
        h.decrement_ttl();
        assert_eq!(h.ttl(), 8);
        assert!(Packet::new_checked(&b[..]).unwrap().verify_checksum());
    }

    proptest! {
        /// No accessor of a checked view panics, whatever the bytes; the variable-length ones do not panic on
        /// unchecked views either.
        #[test]
        fn checked_views_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..80), fill: bool) {
            if fill && bytes.len() >= 4 {
                // Plausible version, IHL and total length, so the checked path is exercised often.
                bytes[0] = 0x40 | (bytes[0] & 0x0f).max(5);
                let total = bytes.len() as u16 - u16::from(bytes[1] & 3);
                bytes[2..4].copy_from_slice(&total.to_be_bytes());
            }
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.version(), p.header_len(), p.dscp_ecn(), p.total_len(), p.ident(), p.flags_frag());
                let _ = (p.dont_frag(), p.more_frags(), p.frag_offset(), p.is_fragment(), p.ttl(), p.protocol());
                let _ = (p.checksum(), p.src_addr(), p.dst_addr(), p.verify_checksum());
                prop_assert_eq!(p.header().len(), p.header_len());
                prop_assert_eq!(p.payload().len(), usize::from(p.total_len()) - p.header_len());
            }
            let u = Packet::new_unchecked(&bytes[..]);
            if u.check_header().is_ok() {
                let _ = (u.ttl(), u.src_addr(), u.dst_addr(), u.verify_checksum());
                prop_assert_eq!(u.header().len(), u.header_len());
            }
            if !bytes.is_empty() {
                let _ = (u.header(), u.verify_checksum());
                if bytes.len() >= 4 {
                    let _ = u.payload();
                }
            }
            if let Ok(mut p) = Packet::new_checked(&mut bytes[..]) {
                let _ = p.payload_mut();
                p.fill_checksum();
                prop_assert!(p.verify_checksum());
            }
        }

        /// Setters write what getters read back; the header checksum filled after them verifies, and a TTL
        /// decrement's incremental update equals a full recompute.
        #[test]
        fn setters_round_trip(
            len in 20usize..60, tos: u8, total: u16, id: u16, ff: u16, ttl in 1u8.., proto: u8, src: u32, dst: u32,
        ) {
            let mut b = vec![0u8; len];
            let mut p = Packet::new_unchecked(&mut b[..]);
            p.set_version_and_header_len(20);
            p.set_dscp_ecn(tos);
            p.set_total_len(total);
            p.set_ident(id);
            p.set_flags_frag(ff);
            p.set_ttl(ttl);
            p.set_protocol(proto);
            p.set_src_addr(src.into());
            p.set_dst_addr(dst.into());
            p.fill_checksum();
            prop_assert_eq!((p.version(), p.header_len(), p.dscp_ecn(), p.total_len(), p.ident()), (4, 20, tos, total, id));
            prop_assert_eq!((p.flags_frag(), p.ttl(), p.protocol()), (ff, ttl, proto));
            prop_assert_eq!((p.src_addr(), p.dst_addr()), (Ipv4Addr::from(src), Ipv4Addr::from(dst)));
            prop_assert_eq!(p.dont_frag(), ff & flags::DF != 0);
            prop_assert!(p.verify_checksum());
            p.decrement_ttl();
            let incremental = p.checksum();
            p.fill_checksum();
            // Equal as one's-complement values (0x0000 and 0xffff are the same sum; RFC 1624 §3 never gives
            // -0 for a header with a non-zero field).
            prop_assert_eq!(incremental, p.checksum());
            let h = Header::at(&b, 0).unwrap();
            prop_assert!(h.verify_checksum_fixed());
        }
    }
}
