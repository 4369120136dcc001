//! Ethernet II and IEEE 802.1Q framing lengths, as the dataplane's MTU and parsing checks use them. They are
//! defined once, in the contract crate ([`vswitch_api::frame`]), because the configuration's MTU limit is
//! derived from them.

pub use vswitch_api::frame::{ETH_HEADER_LEN, VLAN_TAG_LEN};
