//! `struct virtio_net_hdr` (virtio 1.x §5.1.6; Linux `include/uapi/linux/virtio_net.h`): the header a tap with
//! `IFF_VNET_HDR` or a packet socket with `PACKET_VNET_HDR` puts before every frame, carrying checksum-offload
//! and segmentation (GSO) metadata.
//!
//! ```text
//! 0  flags (u8)       NEEDS_CSUM, DATA_VALID
//! 1  gso_type (u8)    NONE, TCPV4, UDP, TCPV6, UDP_L4, | ECN
//! 2  hdr_len (le16)   length of the headers to copy into each segment (advisory)
//! 4  gso_size (le16)  payload bytes per segment (the MSS)
//! 6  csum_start (le16)  where the partial checksum's coverage starts
//! 8  csum_offset (le16) the checksum field's offset from csum_start
//! 10 num_buffers (le16) only with VIRTIO_NET_F_MRG_RXBUF or a 12-byte header (TUNSETVNETHDRSZ 12)
//! ```
//!
//! **Byte order**: the 16-bit fields are **little-endian**, as virtio 1.x defines them and as Linux presents
//! them to a tap and a packet socket on little-endian hosts (x86-64, aarch64: the kernel uses the host's order
//! for "legacy" headers unless `TUNSETVNETLE`/`TUNSETVNETBE` says otherwise). This view always reads and writes
//! little-endian; on a big-endian host a tap must be set to `TUNSETVNETLE` for it to apply.
//!
//! [`Repr`] is the decoded header.

use super::{Error, Field};

/// Length of the header without `num_buffers`.
pub const HEADER_LEN: usize = 10;
/// Length of the header with `num_buffers` (mergeable receive buffers, or virtio 1.x).
pub const HEADER_LEN_MRG: usize = 12;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` holds only the pseudo-header sum.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified (receive side only).
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO: IP fragmentation of one datagram).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (`UDP_SEGMENT`: a train of datagrams).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`, or-ed into the type for TCP with ECN.
pub const GSO_ECN: u8 = 0x80;

mod field {
    use super::Field;
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Field = 2..4;
    pub const GSO_SIZE: Field = 4..6;
    pub const CSUM_START: Field = 6..8;
    pub const CSUM_OFFSET: Field = 8..10;
    pub const NUM_BUFFERS: Field = 10..12;
}

#[inline(always)]
fn le16(d: &[u8], f: Field) -> u16 {
    let b = &d[f];
    u16::from_le_bytes([b[0], b[1]])
}

#[inline(always)]
fn set_le16(d: &mut [u8], f: Field, v: u16) {
    d[f].copy_from_slice(&v.to_le_bytes());
}

view!("A view of a `virtio_net_hdr`.");

impl<T: AsRef<[u8]>> Packet<T> {
    /// [`Error::Truncated`] unless the buffer holds [`HEADER_LEN`] bytes.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// `VIRTIO_NET_HDR_F_*`.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// `VIRTIO_NET_HDR_GSO_*`, possibly with [`GSO_ECN`].
    #[inline]
    pub fn gso_type(&self) -> u8 {
        self.buffer.as_ref()[field::GSO_TYPE]
    }

    /// Length of the headers (advisory).
    #[inline]
    pub fn hdr_len(&self) -> u16 {
        le16(self.buffer.as_ref(), field::HDR_LEN)
    }

    /// Payload bytes per segment.
    #[inline]
    pub fn gso_size(&self) -> u16 {
        le16(self.buffer.as_ref(), field::GSO_SIZE)
    }

    /// Where the partial checksum's coverage starts (from the start of the frame).
    #[inline]
    pub fn csum_start(&self) -> u16 {
        le16(self.buffer.as_ref(), field::CSUM_START)
    }

    /// Offset of the checksum field from `csum_start`.
    #[inline]
    pub fn csum_offset(&self) -> u16 {
        le16(self.buffer.as_ref(), field::CSUM_OFFSET)
    }

    /// `num_buffers`, if the buffer holds the 12-byte header.
    #[inline]
    pub fn num_buffers(&self) -> Option<u16> {
        let d = self.buffer.as_ref();
        (d.len() >= HEADER_LEN_MRG).then(|| le16(d, field::NUM_BUFFERS))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags.
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// Sets the GSO type.
    #[inline]
    pub fn set_gso_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::GSO_TYPE] = v;
    }

    /// Sets the header length.
    #[inline]
    pub fn set_hdr_len(&mut self, v: u16) {
        set_le16(self.buffer.as_mut(), field::HDR_LEN, v);
    }

    /// Sets the segment size.
    #[inline]
    pub fn set_gso_size(&mut self, v: u16) {
        set_le16(self.buffer.as_mut(), field::GSO_SIZE, v);
    }

    /// Sets the checksum start.
    #[inline]
    pub fn set_csum_start(&mut self, v: u16) {
        set_le16(self.buffer.as_mut(), field::CSUM_START, v);
    }

    /// Sets the checksum offset.
    #[inline]
    pub fn set_csum_offset(&mut self, v: u16) {
        set_le16(self.buffer.as_mut(), field::CSUM_OFFSET, v);
    }

    /// Sets `num_buffers` if the buffer holds the 12-byte header; returns whether it did.
    #[inline]
    pub fn set_num_buffers(&mut self, v: u16) -> bool {
        let d = self.buffer.as_mut();
        if d.len() < HEADER_LEN_MRG {
            return false;
        }
        set_le16(d, field::NUM_BUFFERS, v);
        true
    }
}

/// A decoded `virtio_net_hdr` (without `num_buffers`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, possibly with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (advisory; not trusted here).
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS for TCP).
    pub gso_size: u16,
    /// Where the partial checksum's coverage starts, from the start of the frame as the kernel saw it.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl Repr {
    /// Decodes a header.
    #[inline]
    pub fn from_packet<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            flags: p.flags(),
            gso_type: p.gso_type(),
            hdr_len: p.hdr_len(),
            gso_size: p.gso_size(),
            csum_start: p.csum_start(),
            csum_offset: p.csum_offset(),
        }
    }

    /// Decodes the header's 10 bytes.
    #[inline]
    pub fn parse(b: &[u8; HEADER_LEN]) -> Repr {
        Self::from_packet(&Packet::new_unchecked(b))
    }

    /// Writes the header into a view of at least [`HEADER_LEN`] bytes (`num_buffers`, if there, untouched).
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_flags(self.flags);
        p.set_gso_type(self.gso_type);
        p.set_hdr_len(self.hdr_len);
        p.set_gso_size(self.gso_size);
        p.set_csum_start(self.csum_start);
        p.set_csum_offset(self.csum_offset);
    }

    /// The header's 10 bytes.
    #[inline]
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        self.emit(&mut Packet::new_unchecked(&mut b));
        b
    }

    /// True if the frame is a super-frame to segment (any GSO type other than none).
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// True if the frame's checksum is partial ([`F_NEEDS_CSUM`]).
    #[inline]
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn little_endian_layout() {
        let r = Repr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(r.to_bytes(), [1, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0]);
        assert_eq!(Repr::parse(&r.to_bytes()), r);
        assert!(r.is_gso() && r.needs_csum());
        assert!(!Repr { gso_type: GSO_ECN, ..r }.is_gso());
        let mut b = [0u8; 12];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert!(p.set_num_buffers(3));
        assert_eq!(p.num_buffers(), Some(3));
        assert_eq!(Packet::new_checked(&b[..10]).unwrap().num_buffers(), None);
        assert_eq!(Packet::new_checked(&b[..9]), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn checked_views_never_panic_and_setters_round_trip(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..16),
            r in any::<(u8, u8, u16, u16, u16, u16)>(),
        ) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (Repr::from_packet(&p), p.num_buffers());
            }
            if let Ok(mut p) = Packet::new_checked(&mut bytes[..]) {
                let r = Repr { flags: r.0, gso_type: r.1, hdr_len: r.2, gso_size: r.3, csum_start: r.4, csum_offset: r.5 };
                let nb = p.num_buffers();
                r.emit(&mut p);
                prop_assert_eq!(Repr::from_packet(&p), r);
                prop_assert_eq!(p.num_buffers(), nb);
            }
        }
    }
}
