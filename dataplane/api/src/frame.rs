//! The frame geometry the configuration's limits are derived from: the longest frame the switch carries, and
//! the Ethernet and VLAN header lengths that turn it into the largest MTU
//! ([`limits::MAX_MTU`](crate::config::limits::MAX_MTU)).
//!
//! The dataplane's packet buffers are sized from [`MAX_FRAME_LEN`] (a buffer is its headroom plus the longest
//! frame) and its wire layer uses the header lengths from here, so the limit a configuration is checked against
//! and what the buffers hold cannot drift apart.

/// The longest frame the switch carries, headers included, without the FCS: a 2048-byte packet buffer minus
/// 128 bytes of headroom kept for encapsulation.
pub const MAX_FRAME_LEN: usize = 1920;

/// Ethernet II header: destination, source, EtherType.
pub const ETH_HEADER_LEN: usize = 14;

/// One IEEE 802.1Q / 802.1ad tag.
pub const VLAN_TAG_LEN: usize = 4;
