//! ICMP for IPv4 (RFC 792): the 8-byte header (type, code, checksum, four type-specific bytes) and what
//! follows it — echo data, or the packet an error quotes.
//!
//! [`is_error`] is the switch's one classification of ICMP types (see there); the router uses it so it never
//! answers an error with an error, NAT to decide which messages quote a packet to translate.

use super::{be, checksum, Error, Field};
use std::net::Ipv4Addr;

/// Header length (the quoted packet or echo data follows).
pub const HEADER_LEN: usize = 8;

/// Message types.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Source quench (deprecated by RFC 6633, still an error).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;
}

/// Codes of [`msg_type::DEST_UNREACHABLE`].
pub mod unreachable {
    /// Net unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Fragmentation needed and DF set (the next-hop MTU is in bytes 6..8, RFC 1191).
    pub const FRAG_NEEDED: u8 = 4;
}

/// True for the ICMP **error** types, which quote the offending packet: Destination Unreachable (3), Source
/// Quench (4), Redirect (5), Time Exceeded (11) and Parameter Problem (12) — RFC 1122 §3.2.2's list, and
/// netfilter's `icmp_is_err`. No error is ever sent about one of these (RFC 1812 §4.3.2.7); NAT translates
/// the ones that quote a tracked connection, except Redirects, which it drops as netfilter does for NAT'd
/// connections (their gateway would point a host past the translation).
#[inline(always)]
pub fn is_error(t: u8) -> bool {
    matches!(
        t,
        msg_type::DEST_UNREACHABLE
            | msg_type::SOURCE_QUENCH
            | msg_type::REDIRECT
            | msg_type::TIME_EXCEEDED
            | msg_type::PARAM_PROBLEM
    )
}

mod field {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const REST: Field = 4..8;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const POINTER: usize = 4;
    pub const GATEWAY: Field = 4..8;
    pub const MTU: Field = 6..8;
}

view!("A view of an ICMP message.", fixed);

impl<T: AsRef<[u8]>> Packet<T> {
    /// [`Error::Truncated`] unless the buffer holds a whole header.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Message type ([`msg_type`]).
    #[inline(always)]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Code.
    #[inline(always)]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum (over the whole message).
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The four type-specific bytes.
    #[inline]
    pub fn rest_of_header(&self) -> [u8; 4] {
        let b = &self.buffer.as_ref()[field::REST];
        [b[0], b[1], b[2], b[3]]
    }

    /// Echo identifier (echo request and reply).
    #[inline(always)]
    pub fn echo_ident(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (echo request and reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// Next-hop MTU (Fragmentation Needed).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::MTU)
    }

    /// Pointer to the problem (Parameter Problem).
    #[inline]
    pub fn pointer(&self) -> u8 {
        self.buffer.as_ref()[field::POINTER]
    }

    /// Gateway address (Redirect).
    #[inline]
    pub fn gateway(&self) -> Ipv4Addr {
        be::ipv4_at(self.buffer.as_ref(), field::GATEWAY)
    }

    /// What follows the header: echo data, or the quoted packet of an error.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or_default()
    }

    /// True if the checksum over the whole buffer (the message) verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    #[inline(always)]
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    /// Sets the code.
    #[inline]
    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    /// Sets the checksum field.
    #[inline(always)]
    pub fn set_checksum(&mut self, c: u16) {
        be::set_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Sets the four type-specific bytes.
    #[inline]
    pub fn set_rest_of_header(&mut self, rest: [u8; 4]) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&rest);
    }

    /// Sets the echo identifier.
    #[inline(always)]
    pub fn set_echo_ident(&mut self, id: u16) {
        be::set_u16(self.buffer.as_mut(), field::ECHO_IDENT, id);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, seq: u16) {
        be::set_u16(self.buffer.as_mut(), field::ECHO_SEQNO, seq);
    }

    /// Sets the next-hop MTU.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        be::set_u16(self.buffer.as_mut(), field::MTU, mtu);
    }

    /// Sets the message type and updates the checksum incrementally (RFC 1624; type and code are the
    /// message's first 16-bit word).
    #[inline]
    pub fn rewrite_msg_type(&mut self, t: u8) {
        let code = u16::from(self.code());
        let old = (u16::from(self.msg_type()) << 8) | code;
        self.set_msg_type(t);
        let c = checksum::update16(self.checksum(), old, (u16::from(t) << 8) | code);
        self.set_checksum(c);
    }

    /// Computes and stores the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// What follows the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(HEADER_LEN..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_error_types_are_rfc_1122s() {
        let errors: Vec<u8> = (0..=255).filter(|&t| is_error(t)).collect();
        assert_eq!(errors, vec![3, 4, 5, 11, 12]);
    }

    proptest! {
        #[test]
        fn checked_views_never_panic_and_setters_round_trip(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..40),
            t: u8, c: u8, id: u16, seq: u16, mtu: u16,
        ) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.msg_type(), p.code(), p.checksum(), p.rest_of_header(), p.echo_ident(), p.echo_seq_no());
                let _ = (p.next_hop_mtu(), p.pointer(), p.gateway(), p.verify_checksum());
                prop_assert_eq!(p.payload().len(), bytes.len() - HEADER_LEN);
            }
            let _ = Packet::new_unchecked(&bytes[..]).payload();
            if let Ok(mut p) = Packet::new_checked(&mut bytes[..]) {
                let _ = p.payload_mut();
                p.set_msg_type(t);
                p.set_code(c);
                p.set_echo_ident(id);
                p.set_echo_seq_no(seq);
                prop_assert_eq!((p.msg_type(), p.code(), p.echo_ident(), p.echo_seq_no()), (t, c, id, seq));
                p.set_next_hop_mtu(mtu);
                prop_assert_eq!(p.next_hop_mtu(), mtu);
                p.set_rest_of_header([1, 2, 3, 4]);
                prop_assert_eq!((p.pointer(), p.gateway()), (1, Ipv4Addr::new(1, 2, 3, 4)));
                p.fill_checksum();
                prop_assert!(p.verify_checksum());
                p.rewrite_msg_type(t ^ 0x08);
                prop_assert!(p.verify_checksum() || p.checksum() == 0, "type rewrite keeps the sum");
                // An incremental update of one word equals the full recompute.
                let before = p.checksum();
                let old = p.echo_ident();
                p.set_echo_ident(id ^ 0x5a5a);
                let incremental = checksum::update16(before, old, id ^ 0x5a5a);
                p.fill_checksum();
                let full = p.checksum();
                let zero = |c: u16| c == 0 || c == 0xffff;
                prop_assert!(incremental == full || zero(incremental) && zero(full), "{incremental:#x} vs {full:#x}");
            }
        }
    }
}
