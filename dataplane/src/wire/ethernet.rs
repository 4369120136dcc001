//! Ethernet II frames: destination and source MAC, EtherType, payload (no FCS: ports hand frames without it).
//!
//! [`Packet::layer3`] walks the VLAN tags (at most [`vlan::MAX_TAGS`]) to the network header: the one place
//! that does, for ingress, segmentation and checksum completion.

use super::{be, vlan, Error, Field, MacAddr};

/// Ethernet II header length (two MACs and the EtherType).
pub const HEADER_LEN: usize = vswitch_api::frame::ETH_HEADER_LEN;

mod field {
    use super::Field;
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: usize = 14;
}

view!("A view of an Ethernet II frame.", fixed);

/// Where a frame's network header is, after its VLAN tags: [`Packet::layer3`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer3 {
    /// The EtherType after the tags (of the third tag, if there are more than [`vlan::MAX_TAGS`]).
    pub ethertype: u16,
    /// Offset of the network header from the start of the frame.
    pub offset: usize,
    /// VLAN tags before it (0..=[`vlan::MAX_TAGS`]).
    pub vlan_tags: u8,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// [`Error::Truncated`] unless the buffer holds a whole header.
    #[inline(always)]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Destination MAC.
    #[inline(always)]
    pub fn dst_addr(&self) -> MacAddr {
        be::mac_at(self.buffer.as_ref(), field::DESTINATION)
    }

    /// Source MAC.
    #[inline(always)]
    pub fn src_addr(&self) -> MacAddr {
        be::mac_at(self.buffer.as_ref(), field::SOURCE)
    }

    /// The EtherType (a TPID if the frame is tagged).
    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(field::PAYLOAD..).unwrap_or_default()
    }

    /// The EtherType after up to [`vlan::MAX_TAGS`] VLAN tags (802.1Q or 802.1ad) and where its payload
    /// starts; `None` if a tag is cut short. A third tag is left as the payload of the second.
    #[inline(always)]
    pub fn layer3(&self) -> Option<Layer3> {
        let d = self.buffer.as_ref();
        let mut l3 = Layer3 { ethertype: self.ethertype(), offset: HEADER_LEN, vlan_tags: 0 };
        while vlan::is_tpid(l3.ethertype) && usize::from(l3.vlan_tags) < vlan::MAX_TAGS {
            let tag = vlan::Packet::new_checked(d.get(l3.offset..)?).ok()?;
            l3.ethertype = tag.ethertype();
            l3.offset += vlan::HEADER_LEN;
            l3.vlan_tags += 1;
        }
        Some(l3)
    }

    /// How many VLAN tags (up to [`vlan::MAX_TAGS`]) the frame's EtherType fields announce, without
    /// requiring the tags to be whole: what a length limit allows for.
    #[inline]
    pub fn vlan_tags_announced(&self) -> usize {
        let d = self.buffer.as_ref();
        let inner = d.get(HEADER_LEN..).and_then(|t| vlan::Packet::new_checked(t).ok()).map(|t| t.ethertype());
        match (vlan::is_tpid(self.ethertype()), inner.is_some_and(vlan::is_tpid)) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the destination MAC.
    #[inline(always)]
    pub fn set_dst_addr(&mut self, mac: MacAddr) {
        be::set_mac(self.buffer.as_mut(), field::DESTINATION, mac);
    }

    /// Sets the source MAC.
    #[inline(always)]
    pub fn set_src_addr(&mut self, mac: MacAddr) {
        be::set_mac(self.buffer.as_mut(), field::SOURCE, mac);
    }

    /// Sets the EtherType.
    #[inline(always)]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        be::set_u16(self.buffer.as_mut(), field::ETHERTYPE, ethertype);
    }

    /// Everything after the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(field::PAYLOAD..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builder::{eth, with_vlan};
    use crate::wire::ethertype;
    use proptest::prelude::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn reads_what_the_builder_wrote_and_finds_layer3_behind_tags() {
        let f = eth(B, A, ethertype::IPV4, &[0x45]);
        let p = Packet::new_checked(&f[..]).unwrap();
        assert_eq!((p.dst_addr(), p.src_addr(), p.ethertype()), (B, A, ethertype::IPV4));
        assert_eq!(p.layer3(), Some(Layer3 { ethertype: ethertype::IPV4, offset: 14, vlan_tags: 0 }));
        let tagged = with_vlan(&with_vlan(&with_vlan(&f, 10), 20), 30);
        let p = Packet::new_checked(&tagged[..]).unwrap();
        assert_eq!(p.layer3(), Some(Layer3 { ethertype: ethertype::VLAN, offset: 22, vlan_tags: 2 }), "third tag");
        assert_eq!(p.vlan_tags_announced(), 2);
        assert_eq!(Packet::new_unchecked(&tagged[..17]).layer3(), None, "first tag cut short");
        assert_eq!(Packet::new_unchecked(&tagged[..17]).vlan_tags_announced(), 1);
        assert_eq!(Packet::new_checked(&f[..13]), Err(Error::Truncated));
    }

    proptest! {
        /// No accessor of a checked view panics, whatever the bytes; setters write what getters read back.
        #[test]
        fn checked_views_never_panic_and_setters_round_trip(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..40),
            dst: [u8; 6], src: [u8; 6], et: u16,
        ) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.dst_addr(), p.src_addr(), p.ethertype(), p.payload(), p.layer3(), p.vlan_tags_announced());
            } else {
                prop_assert!(bytes.len() < HEADER_LEN);
            }
            let _ = Packet::new_unchecked(&bytes[..]).payload();
            if let Ok(mut p) = Packet::new_checked(&mut bytes[..]) {
                p.set_dst_addr(MacAddr(dst));
                p.set_src_addr(MacAddr(src));
                p.set_ethertype(et);
                let _ = p.payload_mut();
                prop_assert_eq!((p.dst_addr(), p.src_addr(), p.ethertype()), (MacAddr(dst), MacAddr(src), et));
                let h = Header::at(&bytes, 0).unwrap();
                prop_assert_eq!((h.dst_addr(), h.ethertype()), (MacAddr(dst), et));
            }
        }
    }
}
