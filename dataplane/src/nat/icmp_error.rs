//! Translation of ICMP errors that quote a packet of a tracked connection (RFC 5508 §4; netfilter's
//! `nf_nat_icmp_reply_translation`): the quoted header and ports back to what the host behind the translation
//! sent or expects, the outer address that was translated, and every checksum — so path MTU discovery and
//! traceroute work through NAT.
//!
//! Which messages are errors is [`icmpv4::is_error`], the switch's one classification. Redirects are errors
//! but are not translated (netfilter drops them for NAT'd connections: their gateway would point a host past
//! the translation), so they fall through to the callers' handling of untranslated errors.

use super::rewrite::{rewrite_at, tuple_at};
use super::{ErrorFrom, Nat};
use crate::buffer::Nanos;
use crate::conntrack::Tuple;
use crate::counters::DropReason;
use crate::packet::{ip_proto, Parsed};
use crate::wire::icmpv4::{self, msg_type};
use crate::wire::ipv4;

/// True if the parsed packet is an ICMP error message ([`icmpv4::is_error`]).
#[inline(always)]
pub(super) fn is_icmp_error(d: &[u8], p: &Parsed) -> bool {
    p.ip_proto == ip_proto::ICMP
        && p.l4 != 0
        && icmpv4::Header::at(d, p.l4 as usize).is_some_and(|m| icmpv4::is_error(m.msg_type()))
}

/// The tuple of the packet an ICMP error (`d`, parsed as `p`) quotes, if it quotes a whole first fragment.
pub(super) fn quoted_tuple(d: &[u8], p: &Parsed) -> Option<Tuple> {
    let msg = d.get(p.l4 as usize..p.l3_end as usize)?;
    let msg = icmpv4::Packet::new_checked(msg).ok()?;
    let quoted = msg.payload();
    let q = ipv4::Packet::new_unchecked(quoted);
    if q.check_header().is_err() || q.frag_offset() != 0 {
        return None;
    }
    tuple_at(quoted, 0, q.header_len(), q.protocol(), quoted.len())
}

impl Nat {
    /// True if the ICMP error quotes a packet of a tracked connection (either direction), untranslated.
    pub(super) fn quotes_tracked(&self, now: Nanos, d: &[u8], p: &Parsed) -> bool {
        quoted_tuple(d, p).is_some_and(|t| self.ct.lookup(&t.inverse(), now).is_some())
    }

    /// Translates an ICMP error quoting a packet of a tracked connection: the quoted header and ports back to
    /// what they were before translation, the outer destination (source) when it was the quoted packet's
    /// source (destination), and every checksum. An error from outside must be addressed to the quoted
    /// packet's source (the switch's address), an error from inside must come from the quoted packet's
    /// destination (the host it was delivered to): otherwise an outer address would stay untranslated.
    /// Ok(false) when it quotes nothing tracked, breaks that rule or is a Redirect; the frame is then unchanged.
    #[inline(never)]
    pub(super) fn translate_error(
        &mut self,
        now: Nanos,
        d: &mut [u8],
        p: &Parsed,
        from: ErrorFrom,
    ) -> Result<bool, DropReason> {
        let (l3, l4, end) = (p.l3 as usize, p.l4 as usize, p.l3_end as usize);
        let (Some(outer), Some(msg)) = (ipv4::Header::at(d, l3), d.get(l4..end)) else { return Ok(false) };
        let Ok(msg) = icmpv4::Packet::new_checked(msg) else { return Ok(false) };
        if msg.msg_type() == msg_type::REDIRECT {
            return Ok(false);
        }
        // The quoted packet: an option-less or longer IPv4 header, not a later fragment, and 8 bytes after it.
        let quoted = msg.payload();
        let q = ipv4::Packet::new_unchecked(quoted);
        if q.check_header().is_err() || q.frag_offset() != 0 {
            return Ok(false);
        }
        let qhl = q.header_len();
        let Some(quoted_tuple) = tuple_at(quoted, 0, qhl, q.protocol(), quoted.len()) else {
            return Ok(false);
        };
        let (osrc, odst) = (outer.src_addr(), outer.dst_addr());
        let consistent = match from {
            ErrorFrom::Outside => odst == quoted_tuple.src,
            ErrorFrom::Inside => osrc == quoted_tuple.dst,
        };
        if !consistent {
            return Ok(false);
        }
        let Some((id, dir)) = self.ct.lookup(&quoted_tuple.inverse(), now) else {
            return Ok(false);
        };
        if !msg.verify_checksum() {
            return Err(DropReason::BadL4Checksum);
        }
        let Some(e) = self.ct.get(id) else { return Ok(false) };
        // The quoted packet went the other way from `dir`, and was translated from this.
        let before = *e.tuple(dir.opposite());
        let mut outer_to = Tuple { src: osrc, dst: odst, ..quoted_tuple };
        if odst == quoted_tuple.src {
            outer_to.dst = before.src;
        }
        if osrc == quoted_tuple.dst {
            outer_to.src = before.dst;
        }
        // The quoted packet, with its own checksums (as far as they are quoted).
        let (head, msg) = d.split_at_mut(l4);
        let mut msg = icmpv4::Packet::new_unchecked(&mut msg[..end - l4]);
        let quoted = msg.payload_mut();
        let quoted_len = quoted.len();
        rewrite_at(quoted, 0, qhl, quoted_len, &quoted_tuple, &before);
        // Outer addresses: the IP header only (ICMP has no pseudo-header); then the ICMP checksum afresh,
        // since the quoted bytes changed (the message was verified above).
        if let Some(mut ip) = ipv4::HeaderMut::at_mut(head, l3) {
            let mut delta = crate::wire::checksum::Delta::default();
            if osrc != outer_to.src {
                ip.set_src_addr(outer_to.src);
                delta.add32(u32::from(osrc), u32::from(outer_to.src));
            }
            if odst != outer_to.dst {
                ip.set_dst_addr(outer_to.dst);
                delta.add32(u32::from(odst), u32::from(outer_to.dst));
            }
            let c = delta.apply(ip.checksum());
            ip.set_checksum(c);
        }
        msg.fill_checksum();
        self.stats.icmp_errors_translated += 1;
        Ok(true)
    }
}
