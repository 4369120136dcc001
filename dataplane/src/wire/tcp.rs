//! TCP headers (RFC 9293).
//!
//! [`Packet::check_len`]: the fixed header is whole ([`Error::Truncated`]), the data offset is at least 5
//! ([`Error::Malformed`]), the header with its options is whole ([`Error::Truncated`]) — etherparse's order,
//! which ingress's drop reasons follow.
//!
//! A header quoted in an ICMP error is usually cut after 8 bytes (ports and sequence number): read it through
//! an unchecked view, and its checksum only if [`Packet::holds_checksum`].

use super::{be, checksum, Error, Field};
use std::net::Ipv4Addr;

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;
/// Offset of the checksum field from the start of the TCP header (a `virtio_net_hdr`'s `csum_offset`).
#[allow(clippy::cast_possible_truncation)] // a header offset below 20
pub const CHECKSUM_OFFSET: u16 = field::CHECKSUM.start as u16;
/// Length of the longest header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;

/// Option kinds (RFC 9293 § 3.2) the switch reads.
pub mod option {
    /// End of the option list.
    pub const END: u8 = 0;
    /// No operation (one byte of padding between options).
    pub const NOP: u8 = 1;
    /// Maximum segment size: kind, length 4, a 16-bit value.
    pub const MSS: u8 = 2;
    /// The length of an MSS option.
    pub const MSS_LEN: u8 = 4;
}

/// Bits of the flags byte ([`Packet::flags`]).
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

view!("A view of a TCP segment.", fixed);

impl<T: AsRef<[u8]>> Packet<T> {
    /// See the module documentation.
    #[inline(always)]
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.header_len() < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len < self.header_len() {
            return Err(Error::Truncated);
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

    /// Sequence number.
    #[inline(always)]
    pub fn seq_number(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset × 4), options included.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The flags byte ([`flags`]; the NS bit in the data offset byte is not included).
    #[inline(always)]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Window size.
    #[inline]
    pub fn window(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::WIN_SIZE)
    }

    /// Checksum.
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// True if the buffer reaches the checksum field (a header quoted in an ICMP error may not).
    #[inline(always)]
    pub fn holds_checksum(&self) -> bool {
        self.buffer.as_ref().len() >= field::CHECKSUM.end
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::URGENT)
    }

    /// Where the value of the MSS option sits, as an offset from the start of the header: the first option of
    /// kind [`option::MSS`] and length 4, found by walking the options as RFC 9293 lays them out (END stops the
    /// walk, NOP is one byte, any other option carries a length of at least 2). `None` when there is none, or
    /// when the options before it are malformed or run past the header (or the buffer).
    #[inline]
    pub fn mss_option_at(&self) -> Option<usize> {
        let d = self.buffer.as_ref();
        let end = self.header_len().min(d.len());
        let mut at = HEADER_LEN;
        while at < end {
            match d[at] {
                option::END => return None,
                option::NOP => at += 1,
                kind => {
                    let len = usize::from(*d.get(at + 1).filter(|_| at + 1 < end)?);
                    if len < 2 || at + len > end {
                        return None;
                    }
                    if kind == option::MSS {
                        return (len == usize::from(option::MSS_LEN)).then_some(at + 2);
                    }
                    at += len;
                }
            }
        }
        None
    }

    /// The MSS option's value, if the header carries one ([`Packet::mss_option_at`]).
    #[inline]
    pub fn mss_option(&self) -> Option<u16> {
        let at = self.mss_option_at()?;
        Some(be::u16_at(self.buffer.as_ref(), at..at + 2))
    }

    /// The payload: everything after the header (empty if the buffer does not reach it).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or_default()
    }

    /// True if the checksum over the IPv4 pseudo-header and the whole buffer (the segment) verifies.
    #[inline]
    pub fn verify_checksum_ipv4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let seg = self.buffer.as_ref();
        let Ok(len) = u16::try_from(seg.len()) else { return false };
        let pseudo = checksum::pseudo_ipv4(src, dst, super::ip_proto::TCP, len);
        checksum::add(pseudo, checksum::sum_long(seg)) == 0xffff
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

    /// Sets the sequence number.
    #[inline(always)]
    pub fn set_seq_number(&mut self, seq: u32) {
        be::set_u32(self.buffer.as_mut(), field::SEQ_NUM, seq);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        be::set_u32(self.buffer.as_mut(), field::ACK_NUM, ack);
    }

    /// Sets the header length in bytes (a multiple of 4, 20..=60), clearing the reserved bits and NS.
    #[inline]
    // Masked to the 4-bit data offset field before narrowing: cannot truncate.
    #[allow(clippy::cast_possible_truncation)]
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::DATA_OFF] = (((len / 4) & 0x0f) as u8) << 4;
    }

    /// Sets the flags byte.
    #[inline(always)]
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    /// Sets the window size.
    #[inline]
    pub fn set_window(&mut self, w: u16) {
        be::set_u16(self.buffer.as_mut(), field::WIN_SIZE, w);
    }

    /// Sets the checksum field.
    #[inline(always)]
    pub fn set_checksum(&mut self, c: u16) {
        be::set_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent(&mut self, u: u16) {
        be::set_u16(self.buffer.as_mut(), field::URGENT, u);
    }

    /// Computes and stores the checksum over the IPv4 pseudo-header and the whole buffer (the segment).
    #[inline]
    pub fn fill_checksum_ipv4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let seg = self.buffer.as_ref();
        // A segment lies inside an IPv4 packet, whose 16-bit total length bounds it: cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let pseudo = checksum::pseudo_ipv4(src, dst, super::ip_proto::TCP, seg.len() as u16);
        let c = !checksum::add(pseudo, checksum::sum_long(seg));
        self.set_checksum(c);
    }

    /// Replaces the MSS option's value with `mss` if the header carries one ([`Packet::mss_option_at`]),
    /// returning where the value sits and what it was; nothing else changes (the checksum is the caller's).
    #[inline]
    pub fn set_mss_option(&mut self, mss: u16) -> Option<(usize, u16)> {
        let at = self.mss_option_at()?;
        let old = be::u16_at(self.buffer.as_ref(), at..at + 2);
        be::set_u16(self.buffer.as_mut(), at..at + 2, mss);
        Some((at, old))
    }

    /// The payload, writable (see [`Packet::payload`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builder::{Ipv4Spec, TcpFlags, TcpSegment};
    use crate::wire::MacAddr;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn reads_what_the_builder_wrote_and_refills_the_same_checksum() {
        let seg = TcpSegment::new(40000, 80, TcpFlags::SYN | TcpFlags::ACK).seq(7).ack(9);
        let mut f = Ipv4Spec::new(MacAddr::ZERO, MacAddr::ZERO, SRC, DST).tcp(seg, 10);
        let mut p = Packet::new_checked(&mut f[34..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.seq_number(), p.ack_number()), (40000, 80, 7, 9));
        assert_eq!(
            (p.header_len(), p.flags(), p.window(), p.payload().len()),
            (20, flags::SYN | flags::ACK, 65535, 10)
        );
        assert!(p.verify_checksum_ipv4(SRC, DST));
        let c = p.checksum();
        p.fill_checksum_ipv4(SRC, DST);
        assert_eq!(p.checksum(), c);
        assert_eq!(Packet::new_checked(&f[34..53]), Err(Error::Truncated));
        f[34 + 12] = 0x40;
        assert_eq!(Packet::new_checked(&f[34..]), Err(Error::Malformed));
        f[34 + 12] = 0xf0;
        assert_eq!(Packet::new_checked(&f[34..]), Err(Error::Truncated), "options beyond the buffer");
    }

    proptest! {
        #[test]
        fn checked_views_never_panic_and_setters_round_trip(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..80),
            sp: u16, dp: u16, seq: u32, ack: u32, fl: u8, win: u16, urg: u16,
        ) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.flags(), p.window());
                let _ = (p.checksum(), p.holds_checksum(), p.urgent(), p.verify_checksum_ipv4(SRC, DST));
                prop_assert_eq!(p.payload().len(), bytes.len() - p.header_len());
            }
            if bytes.len() > 12 {
                let _ = Packet::new_unchecked(&bytes[..]).payload();
            }
            if let Ok(mut p) = Packet::new_checked(&mut bytes[..]) {
                let hl = p.header_len();
                let _ = p.payload_mut();
                p.set_src_port(sp);
                p.set_dst_port(dp);
                p.set_seq_number(seq);
                p.set_ack_number(ack);
                p.set_flags(fl);
                p.set_window(win);
                p.set_urgent(urg);
                p.set_header_len(hl);
                prop_assert_eq!((p.src_port(), p.dst_port(), p.seq_number(), p.ack_number()), (sp, dp, seq, ack));
                prop_assert_eq!((p.flags(), p.window(), p.urgent(), p.header_len()), (fl, win, urg, hl));
                p.fill_checksum_ipv4(SRC, DST);
                prop_assert!(p.verify_checksum_ipv4(SRC, DST));
            }
        }
    }
}
