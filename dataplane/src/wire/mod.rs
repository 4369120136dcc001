//! Wire-level vocabulary shared by the pipeline, the tools and the tests: MAC addresses (defined in the contract
//! crate, `vswitch_api`), EtherTypes, framing lengths ([`ethernet`]), and (in
//! [`builder`]) helpers that build whole frames for fixtures and generators, and (in [`decode`]) a one-line
//! human description of any frame.
//!
//! Parsing on the hot path uses etherparse's zero-copy slices directly; this module adds only what etherparse
//! does not have.

pub mod builder;
pub mod decode;
pub mod ethernet;

pub use vswitch_api::mac::{BadMac, MacAddr};

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
