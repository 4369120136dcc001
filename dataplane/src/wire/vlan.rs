//! IEEE 802.1Q / 802.1ad VLAN tags: the 4 bytes after a TPID (the tag control information — priority, drop
//! eligible, VLAN id — and the encapsulated EtherType). The TPID itself is the EtherType field before the tag
//! ([`super::ethernet::Packet::ethertype`]).

use super::{be, ethertype, Error, Field};

/// Length of one tag after its TPID (TCI and inner EtherType).
pub const HEADER_LEN: usize = vswitch_api::frame::VLAN_TAG_LEN;
/// Most tags the switch looks through (802.1ad outer + 802.1Q inner); a third is payload.
pub const MAX_TAGS: usize = 2;

mod field {
    use super::Field;
    pub const TCI: Field = 0..2;
    pub const ETHERTYPE: Field = 2..4;
}

/// Where a tag goes in an Ethernet frame: after the two MAC addresses (its TPID takes the EtherType's place).
pub const TAG_OFFSET: usize = 12;

/// The 4 bytes a tag occupies in a frame at [`TAG_OFFSET`]: the TPID, then the tag control information.
#[inline]
pub fn tag_bytes(tpid: u16, tci: u16) -> [u8; 4] {
    let (p, t) = (tpid.to_be_bytes(), tci.to_be_bytes());
    [p[0], p[1], t[0], t[1]]
}

/// True for the EtherTypes that announce a tag (802.1Q, 802.1ad).
#[inline(always)]
pub fn is_tpid(ethertype: u16) -> bool {
    ethertype == ethertype::VLAN || ethertype == ethertype::QINQ
}

view!("A view of one VLAN tag.");

impl<T: AsRef<[u8]>> Packet<T> {
    /// [`Error::Truncated`] unless the buffer holds a whole tag.
    #[inline(always)]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The tag control information (priority, DEI, VLAN id).
    #[inline(always)]
    pub fn tci(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::TCI)
    }

    /// The VLAN id (12 bits).
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// The priority code point (3 bits).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// The drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// The encapsulated EtherType.
    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the tag.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the tag control information.
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        be::set_u16(self.buffer.as_mut(), field::TCI, tci);
    }

    /// Sets the VLAN id (low 12 bits of `vid`), keeping priority and DEI.
    #[inline]
    pub fn set_vid(&mut self, vid: u16) {
        let tci = (self.tci() & 0xf000) | (vid & 0x0fff);
        self.set_tci(tci);
    }

    /// Sets the priority code point (low 3 bits of `pcp`), keeping DEI and VLAN id.
    #[inline]
    pub fn set_pcp(&mut self, pcp: u8) {
        let tci = (self.tci() & 0x1fff) | (u16::from(pcp & 7) << 13);
        self.set_tci(tci);
    }

    /// Sets the encapsulated EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        be::set_u16(self.buffer.as_mut(), field::ETHERTYPE, ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn checked_views_never_panic_and_setters_round_trip(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..8), vid: u16, pcp: u8, et: u16,
        ) {
            match Packet::new_checked(&bytes[..]) {
                Ok(p) => { let _ = (p.tci(), p.vid(), p.pcp(), p.dei(), p.ethertype(), p.payload()); }
                Err(e) => prop_assert_eq!((e, bytes.len() < HEADER_LEN), (Error::Truncated, true)),
            }
            let _ = Packet::new_unchecked(&bytes[..]).payload();
            if let Ok(mut p) = Packet::new_checked(&mut bytes[..]) {
                let dei = p.dei();
                p.set_vid(vid);
                p.set_pcp(pcp);
                p.set_ethertype(et);
                prop_assert_eq!((p.vid(), p.pcp(), p.dei(), p.ethertype()), (vid & 0xfff, pcp & 7, dei, et));
            }
        }
    }
}
