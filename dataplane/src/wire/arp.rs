//! ARP (RFC 826) for Ethernet and IPv4, the only kind the switch speaks: the one codec the router (answering,
//! learning, asking), the frame builders and the decoder use.
//!
//! The view's checked length is that of an Ethernet/IPv4 message ([`HEADER_LEN`], 28 bytes), so the typed
//! address accessors never panic; whether a message *is* Ethernet/IPv4 is [`Packet::is_ethernet_ipv4`]
//! ([`Repr::parse`] refuses any other).

use super::{be, ethertype, Error, Field, MacAddr};
use std::net::Ipv4Addr;

/// Length of an Ethernet/IPv4 ARP message.
pub const HEADER_LEN: usize = 28;
/// Hardware type Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

/// ARP operations.
pub mod op {
    /// who-has.
    pub const REQUEST: u16 = 1;
    /// is-at.
    pub const REPLY: u16 = 2;
}

mod field {
    use super::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

view!("A view of an ARP message.");

impl<T: AsRef<[u8]>> Packet<T> {
    /// [`Error::Truncated`] unless the buffer holds [`HEADER_LEN`] bytes.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Hardware type.
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::HTYPE)
    }

    /// Protocol type (an EtherType).
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::PTYPE)
    }

    /// Hardware address length.
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length.
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation ([`op`]).
    #[inline]
    pub fn operation(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::OPER)
    }

    /// True if the message is Ethernet/IPv4 (types and address lengths), the only kind the accessors below
    /// decode meaningfully.
    #[inline]
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.hardware_type() == HTYPE_ETHERNET
            && self.protocol_type() == ethertype::IPV4
            && self.hardware_len() == 6
            && self.protocol_len() == 4
    }

    /// Sender hardware address.
    #[inline]
    pub fn sender_mac(&self) -> MacAddr {
        be::mac_at(self.buffer.as_ref(), field::SHA)
    }

    /// Sender protocol address.
    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        be::ipv4_at(self.buffer.as_ref(), field::SPA)
    }

    /// Target hardware address.
    #[inline]
    pub fn target_mac(&self) -> MacAddr {
        be::mac_at(self.buffer.as_ref(), field::THA)
    }

    /// Target protocol address.
    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        be::ipv4_at(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the hardware type, protocol type and address lengths to Ethernet/IPv4's.
    #[inline]
    pub fn set_ethernet_ipv4(&mut self) {
        let d = self.buffer.as_mut();
        be::set_u16(d, field::HTYPE, HTYPE_ETHERNET);
        be::set_u16(d, field::PTYPE, ethertype::IPV4);
        d[field::HLEN] = 6;
        d[field::PLEN] = 4;
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, op: u16) {
        be::set_u16(self.buffer.as_mut(), field::OPER, op);
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sender_mac(&mut self, mac: MacAddr) {
        be::set_mac(self.buffer.as_mut(), field::SHA, mac);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_sender_ip(&mut self, ip: Ipv4Addr) {
        be::set_ipv4(self.buffer.as_mut(), field::SPA, ip);
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_mac(&mut self, mac: MacAddr) {
        be::set_mac(self.buffer.as_mut(), field::THA, mac);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_ip(&mut self, ip: Ipv4Addr) {
        be::set_ipv4(self.buffer.as_mut(), field::TPA, ip);
    }
}

/// An Ethernet/IPv4 ARP message, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Operation ([`op`]; others are carried as they are).
    pub operation: u16,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (zero in requests).
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl Repr {
    /// Decodes a checked message; [`Error::Malformed`] unless it is Ethernet/IPv4.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr, Error> {
        if !p.is_ethernet_ipv4() {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            operation: p.operation(),
            sender_mac: p.sender_mac(),
            sender_ip: p.sender_ip(),
            target_mac: p.target_mac(),
            target_ip: p.target_ip(),
        })
    }

    /// Writes the whole message (types and lengths included) into a view of at least [`HEADER_LEN`] bytes.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_ethernet_ipv4();
        p.set_operation(self.operation);
        p.set_sender_mac(self.sender_mac);
        p.set_sender_ip(self.sender_ip);
        p.set_target_mac(self.target_mac);
        p.set_target_ip(self.target_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emit_matches_smoltcp_and_parse_refuses_other_kinds() {
        use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress};
        let r = Repr {
            operation: op::REPLY,
            sender_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            sender_ip: Ipv4Addr::new(10, 0, 0, 1),
            target_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            target_ip: Ipv4Addr::new(10, 0, 0, 2),
        };
        let mut b = [0u8; HEADER_LEN];
        r.emit(&mut Packet::new_checked(&mut b[..]).unwrap());
        // An independent codec reads the same message.
        let theirs = ArpRepr::parse(&ArpPacket::new_checked(&b[..]).unwrap()).unwrap();
        assert_eq!(
            theirs,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: EthernetAddress(r.sender_mac.0),
                source_protocol_addr: r.sender_ip,
                target_hardware_addr: EthernetAddress(r.target_mac.0),
                target_protocol_addr: r.target_ip,
            }
        );
        assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), Ok(r));
        b[4] = 8;
        assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), Err(Error::Malformed));
        assert_eq!(Packet::new_checked(&b[..27]), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn checked_views_never_panic_and_setters_round_trip(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..40),
            opn: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4],
        ) {
            match Packet::new_checked(&bytes[..]) {
                Ok(p) => {
                    let _ = (p.hardware_type(), p.protocol_type(), p.hardware_len(), p.protocol_len());
                    let _ = (p.operation(), p.is_ethernet_ipv4(), Repr::parse(&p));
                    let _ = (p.sender_mac(), p.sender_ip(), p.target_mac(), p.target_ip());
                }
                Err(_) => prop_assert!(bytes.len() < HEADER_LEN),
            }
            if let Ok(mut p) = Packet::new_checked(&mut bytes[..]) {
                let r = Repr {
                    operation: opn,
                    sender_mac: MacAddr(sha),
                    sender_ip: spa.into(),
                    target_mac: MacAddr(tha),
                    target_ip: tpa.into(),
                };
                r.emit(&mut p);
                prop_assert_eq!(Repr::parse(&p), Ok(r));
            }
        }
    }
}
