//! VXLAN headers (RFC 7348): 8 bytes after the outer UDP header (destination port [`super::udp::VXLAN_PORT`]),
//! then the inner Ethernet frame.
//!
//! ```text
//! |R|R|R|R|I|R|R|R|          reserved (24)          |
//! |              VNI (24)                | reserved |
//! ```
//!
//! The I flag says the VNI is valid; receivers must ignore the reserved bits and senders must zero them
//! ([`Packet::set_header`] does).

use super::{be, Error, Field};

/// Header length.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

mod field {
    use super::Field;
    pub const FLAGS: usize = 0;
    pub const VNI_RES: Field = 4..8;
}

/// A view of a VXLAN header and the frame it carries. See the [module documentation](super) for checked and
/// unchecked views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking it.
    #[inline(always)]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer` if it holds a whole header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// [`Error::Truncated`] unless the buffer holds a whole header.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
