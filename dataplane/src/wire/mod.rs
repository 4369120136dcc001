//! The wire layer: every byte the switch reads or writes in a frame goes through this module.
//!
//! - **Vocabulary**: [`MacAddr`], [`ethertype`] values, [`Error`].
//! - **Checked zero-copy views**, one module per header, in the style of smoltcp's `wire` module:
//!   [`ethernet`], [`vlan`], [`arp`], [`ipv4`], [`ipv6`], [`udp`], [`tcp`], [`icmpv4`], [`vxlan`] and
//!   [`virtio_net_hdr`]. Each is a `Packet<T: AsRef<[u8]>>` over borrowed (or owned) bytes with a private
//!   `mod field` of byte ranges and typed `#[inline]` getters (setters when `T: AsMut<[u8]>`).
//!   `Packet::new_unchecked` wraps any buffer: the caller promises it is long enough for what it reads.
//!   `Packet::new_checked` is `new_unchecked` followed by `check_len`, which checks every length the
//!   accessors rely on, so **no accessor of a checked view can panic**, whatever the bytes (property tests in
//!   each module drive every accessor over arbitrary buffers). Accessors of variable-length parts (payloads,
//!   options) never panic even on an unchecked view: they return what the buffer holds.
//! - **Fixed-size views** for the hot path: `ipv4::Header`, `tcp::Header`, `udp::Header`, `icmpv4::Header`,
//!   ... are the same `Packet` over a `&[u8; HEADER_LEN]` (`Header::at(frame, offset)`, one bounds check), so
//!   after inlining every field access is a fixed offset with no bounds check — the code the router and NAT had
//!   written by hand with raw offsets.
//! - [`checksum`]: RFC 1071 sums and RFC 1624 incremental updates ([`checksum::Delta`]).
//! - [`builder`]: whole frames for fixtures and generators; [`decode`]: one human-readable line per frame.
//!
//! Which stage may trust which offsets is not this module's business: [`crate::packet::Parsed`] records where
//! ingress found (and checked) each header, and later stages build fixed-size views at those offsets.
//!
//! Byte order: network order (big-endian) everywhere except [`virtio_net_hdr`], whose fields are little-endian
//! (see there). Pure code, no state: callable from any thread.

/// Declares a module's header view: `pub struct Packet<T: AsRef<[u8]>>` over a buffer, with `new_unchecked`,
/// `new_checked` (`new_unchecked` followed by the module's own `check_len`) and `into_inner`; with `fixed`, also
/// the fixed-size views `Header`/`HeaderMut` over exactly the module's `HEADER_LEN` bytes, made with
/// `Header::at(buf, off)` / `HeaderMut::at_mut(buf, off)` (one bounds check). Each module adds its `check_len`,
/// its `mod field` and its accessors.
macro_rules! view {
    ($doc:literal) => {
        #[doc = $doc]
        #[doc = ""]
        #[doc = "See the [module documentation](super) for checked and unchecked views."]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Packet<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> Packet<T> {
            /// Wraps `buffer` without checking it: the caller promises it holds what the accessors it calls read.
            #[inline(always)]
            pub const fn new_unchecked(buffer: T) -> Packet<T> {
                Packet { buffer }
            }

            /// Wraps `buffer` if [`Packet::check_len`] accepts it; no accessor of the result can panic.
            #[inline(always)]
            pub fn new_checked(buffer: T) -> Result<Packet<T>, $crate::wire::Error> {
                let p = Self::new_unchecked(buffer);
                p.check_len()?;
                Ok(p)
            }

            /// The underlying buffer.
            #[inline]
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }
    };
    ($doc:literal, fixed) => {
        view!($doc);

        /// The fixed-size header: `Packet` over exactly [`HEADER_LEN`] bytes.
        pub type Header<'a> = Packet<&'a [u8; HEADER_LEN]>;
        /// [`Header`], writable.
        pub type HeaderMut<'a> = Packet<&'a mut [u8; HEADER_LEN]>;

        impl<'a> Header<'a> {
            /// The header at `off` in `buf`, if the buffer holds it whole.
            #[inline(always)]
            pub fn at(buf: &'a [u8], off: usize) -> Option<Self> {
                $crate::wire::fixed(buf, off).map(Packet::new_unchecked)
            }
        }

        impl<'a> HeaderMut<'a> {
            /// The header at `off` in `buf`, writable, if the buffer holds it whole.
            #[inline(always)]
            pub fn at_mut(buf: &'a mut [u8], off: usize) -> Option<Self> {
                $crate::wire::fixed_mut(buf, off).map(Packet::new_unchecked)
            }
        }
    };
}

pub mod arp;
pub mod builder;
pub mod checksum;
pub mod decode;
pub mod ethernet;
pub mod icmpv4;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod virtio_net_hdr;
pub mod vlan;
pub mod vxlan;

pub use vswitch_api::mac::{BadMac, MacAddr};

/// Why a buffer is not a valid header of a view's kind (`new_checked` / `check_len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer ends before the header (or the part a length field says is there) does.
    #[error("truncated header")]
    Truncated,
    /// A field that fixes the header's shape is impossible: a wrong version, a header length below the minimum.
    #[error("malformed header")]
    Malformed,
    /// A length field disagrees with the buffer or the header: shorter than the header, longer than the buffer.
    #[error("length field out of range")]
    BadLength,
}

/// A byte range inside a header (the `mod field` constants of every view).
pub(crate) type Field = std::ops::Range<usize>;

/// The `N` bytes of `buf` at `off`, as an array reference (`None` if `buf` is shorter): the one bounds check
/// a fixed-size view needs.
#[inline(always)]
pub fn fixed<const N: usize>(buf: &[u8], off: usize) -> Option<&[u8; N]> {
    buf.get(off..off + N)?.try_into().ok()
}

/// [`fixed`], writable.
#[inline(always)]
pub fn fixed_mut<const N: usize>(buf: &mut [u8], off: usize) -> Option<&mut [u8; N]> {
    buf.get_mut(off..off + N)?.try_into().ok()
}

/// Big-endian field accessors shared by the views (the only place that turns byte ranges into numbers).
pub(crate) mod be {
    use super::Field;
    use std::net::Ipv4Addr;

    /// The `N` bytes of field `f` (which is `N` bytes long), copied out with one bounds check: slicing a constant
    /// length lets the compiler drop the per-byte checks that indexing the field byte by byte kept (a MAC read
    /// that way cost about 8 instructions, callgrind on the NAT bench).
    #[inline(always)]
    fn bytes<const N: usize>(d: &[u8], f: Field) -> [u8; N] {
        debug_assert_eq!(f.len(), N, "field {f:?} read as {N} bytes");
        let b: &[u8; N] = d[f.start..f.start + N].try_into().expect("a slice of N bytes is an [u8; N]");
        *b
    }

    #[inline(always)]
    pub fn u16_at(d: &[u8], f: Field) -> u16 {
        u16::from_be_bytes(bytes(d, f))
    }

    #[inline(always)]
    pub fn set_u16(d: &mut [u8], f: Field, v: u16) {
        d[f].copy_from_slice(&v.to_be_bytes());
    }

    #[inline(always)]
    pub fn u32_at(d: &[u8], f: Field) -> u32 {
        u32::from_be_bytes(bytes(d, f))
    }

    #[inline(always)]
    pub fn set_u32(d: &mut [u8], f: Field, v: u32) {
        d[f].copy_from_slice(&v.to_be_bytes());
    }

    #[inline(always)]
    pub fn ipv4_at(d: &[u8], f: Field) -> Ipv4Addr {
        Ipv4Addr::from(bytes::<4>(d, f))
    }

    #[inline(always)]
    pub fn set_ipv4(d: &mut [u8], f: Field, a: Ipv4Addr) {
        d[f].copy_from_slice(&a.octets());
    }

    #[inline(always)]
    pub fn mac_at(d: &[u8], f: Field) -> super::MacAddr {
        super::MacAddr(bytes(d, f))
    }

    #[inline(always)]
    pub fn set_mac(d: &mut [u8], f: Field, m: super::MacAddr) {
        d[f].copy_from_slice(&m.0);
    }
}

/// IP protocol numbers the switch looks at.
pub mod ip_proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// EtherType values the switch looks at.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service VLAN tag.
    pub const QINQ: u16 = 0x88a8;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}
