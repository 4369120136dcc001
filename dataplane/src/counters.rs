//! Named counters: why frames were dropped (VPP's error counters), and what each port saw.
//!
//! Every frame the pipeline receives ends in exactly one place: sent on at least one port (counted in the
//! ingress port's `forwarded` or `flooded`), dropped by the bridge (`dropped`), or handed to the router
//! (`routed`; the router counts its own outcomes, and a frame it drops also counts in `dropped`). Without a
//! router, per port `rx_packets == forwarded + flooded + dropped`. Drop reasons count copies: a flood copy that cannot go out one
//! egress port (`egress-too-long`, `no-buffer`, `tx-queue-full`) counts its reason even if other copies went out.
//! Counters are plain integers owned by the worker that updates them.

use crate::ids::PortId;
use std::collections::BTreeMap;

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Why the pipeline dropped a frame. Each has a stable kebab-case name used in stats and the CLI.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// The reason's stable name.
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header (14 bytes).
    Runt => "runt",
    /// Longer than the ingress port's MTU allows (MTU + Ethernet header + VLAN tags).
    TooLong => "too-long",
    /// A GSO super-frame whose segment size is under 536 bytes (it would become thousands of frames).
    GsoSegmentTooSmall => "gso-segment-too-small",
    /// A partial checksum (or super-frame) whose offsets do not point at the IPv4 packet's TCP or UDP checksum
    /// field: a later stage could neither update nor complete it.
    OffloadMismatch => "offload-mismatch",
    /// A VLAN tag cut short.
    TruncatedVlan => "truncated-vlan",
    /// An IPv4 or IPv6 header cut short.
    TruncatedIpHeader => "truncated-ip-header",
    /// An IP header whose version or header length is impossible.
    BadIpHeader => "bad-ip-header",
    /// An IP total/payload length that points past the end of the frame or inside the header.
    BadIpLength => "bad-ip-length",
    /// An IPv6 extension header (or IPv4 AH) that is cut short or malformed.
    BadIpExtension => "bad-ip-extension",
    /// A TCP, UDP or ICMP header cut short.
    TruncatedL4Header => "truncated-l4-header",
    /// A TCP header whose data offset is impossible.
    BadL4Header => "bad-l4-header",
    /// The ingress port belongs to no network.
    NoNetwork => "no-network",
    /// The destination was learned on the port the frame came in on (filtered, as a bridge does).
    SamePort => "same-port",
    /// A flood with no other port in the network to go to.
    FloodNoPorts => "flood-no-ports",
    /// Longer than the egress port's MTU allows.
    EgressTooLong => "egress-too-long",
    /// No free buffer for a flood copy.
    NoBuffer => "no-buffer",
    /// The egress port's transmit queue was full.
    TxQueueFull => "tx-queue-full",
    /// A frame on a routed port addressed to another MAC.
    NotForUs => "not-for-us",
    /// An ARP packet that is malformed, not Ethernet/IPv4, or from a sender outside the interface's subnet.
    BadArp => "bad-arp",
    /// A frame for the router that is neither IPv4 nor ARP, or carries VLAN tags.
    UnsupportedL3 => "unsupported-l3",
    /// An IPv4 header checksum that does not verify.
    BadIpChecksum => "bad-ip-checksum",
    /// An ICMP/TCP/UDP checksum that does not verify (on packets the switch itself answers or rewrites).
    BadL4Checksum => "bad-l4-checksum",
    /// IPv4 options (not supported by the router).
    IpOptions => "ip-options",
    /// A broadcast, multicast, loopback or zero address, which is never routed.
    NotRoutable => "not-routable",
    /// Time to live would reach zero (Time Exceeded sent).
    TtlExpired => "ttl-expired",
    /// No route to the destination (Net Unreachable sent).
    NoRoute => "no-route",
    /// Routing into or out of an `internal` network.
    InternalNetwork => "internal-network",
    /// Routed between two networks when one of them is isolated (`masquerade = true`) and no
    /// `allow_routing_with` connects them, untranslated and untracked (see `isolation.rs`).
    NetworkIsolation => "network-isolation",
    /// Routed from a routed port straight to an isolated network's address, not through a published port nor
    /// as a reply to a tracked connection (see `isolation.rs`).
    NotPublished => "not-published",
    /// Larger than the egress MTU with DF set (Fragmentation Needed sent).
    NeedsFragmentation => "needs-fragmentation",
    /// Larger than the egress MTU without DF: the switch does not fragment.
    FragmentationUnsupported => "fragmentation-unsupported",
    /// Pushed out of a full neighbour queue by a newer packet.
    NeighQueueOverflow => "neigh-queue-overflow",
    /// The next hop did not answer ARP (Host Unreachable sent).
    HostUnreachable => "host-unreachable",
    /// The neighbour table is full of reachable neighbours.
    NeighTableFull => "neigh-table-full",
    /// Waited for a neighbour whose unresolved entry was evicted to make room for another.
    NeighEvicted => "neigh-evicted",
    /// Addressed to the switch but not something it answers (only ARP and ICMP echo are).
    LocalUnsupported => "local-unsupported",
    /// A packet of a tracked (NAT'd) connection that does not fit its TCP state, or a TCP packet that cannot open
    /// a connection to be translated (e.g. a SYN-ACK with no connection).
    ConntrackInvalid => "conntrack-invalid",
    /// A new connection to translate while the connection table holds its limit and every connection in it has
    /// seen replies (unreplied ones are evicted first).
    ConntrackFull => "conntrack-full",
    /// A new connection from (or to a published port of) a network that holds its `conntrack_limit`.
    ConntrackNetworkLimit => "conntrack-network-limit",
    /// From a masquerade network with a source address outside the network's subnet (spoofed): never
    /// masqueraded.
    SpoofedSource => "spoofed-source",
    /// A new masqueraded (or hairpinned) connection with every port of the range in use towards its destination.
    NatPortExhausted => "nat-port-exhausted",
    /// A non-first IPv4 fragment that would need translation (it carries no ports to match a connection by).
    NatFragment => "nat-fragment",
    /// A new connection whose translated tuple is already that of another live connection.
    NatClash => "nat-clash",
    /// From a masquerade network out of a routed port, but not translatable: a protocol other than TCP, UDP and
    /// ICMP echo, or an ICMP error about no tracked connection (it would leak the inside address).
    NatUnsupported => "nat-unsupported",
    /// A VXLAN packet for our VTEP whose UDP payload is shorter than the VXLAN and inner Ethernet headers, or
    /// that is an IP fragment (VTEPs never fragment, so a fragment is a packet cut short).
    VxlanTruncated => "vxlan-truncated",
    /// A VXLAN header whose flags are not exactly "VNI valid" or whose reserved bits are set (as Linux refuses).
    VxlanBadFlags => "vxlan-bad-flags",
    /// A VXLAN packet whose VNI is not that of an overlay network here.
    VxlanUnknownVni => "vxlan-unknown-vni",
    /// A VXLAN packet from an address that is not a live member VTEP of the VNI's network.
    VxlanUnknownVtep => "vxlan-unknown-vtep",
    /// A decapsulated frame that is not a station's Ethernet frame (its source is a group or all-zero address).
    VxlanInnerNotEthernet => "vxlan-inner-not-ethernet",
    /// A decapsulated frame addressed to the anycast gateway: each host's gateway serves its own containers.
    VxlanGatewayMac => "vxlan-gateway-mac",
    /// A bridged frame longer than the overlay network's MTU (the smallest member underlay MTU - 50) allows:
    /// the switch never fragments.
    VxlanTooBig => "vxlan-too-big",
    /// The remote VTEP has no route through a routed port (or the outer packet cannot be built).
    VxlanNoUnderlayRoute => "vxlan-no-underlay-route",
    /// Broadcast, multicast or unknown unicast over the network's `bum_rate_pps`: not replicated to the other
    /// hosts (local ports still get it).
    VxlanBumRateLimited => "vxlan-bum-rate-limited",
}

/// What the pipeline counted for one port; defined with the control protocol, which carries it as it is.
pub use vswitch_api::proto::PortCounters;

/// All the pipeline's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    drops: [u64; DropReason::ALL.len()],
    ports: Vec<PortCounters>,
}

impl Counters {
    /// Zeroed counters for `ports` ports.
    pub fn new(ports: usize) -> Self {
        Counters { drops: [0; DropReason::ALL.len()], ports: vec![PortCounters::default(); ports] }
    }

    /// These counters for a new numbering of `ports` ports (a configuration change): port `p`'s counters move
    /// to `map[p]` (dropped when `None`); new ports start at zero; drops by reason carry over.
    pub fn remapped(&self, map: &[Option<PortId>], ports: usize) -> Self {
        let mut c = Counters { drops: self.drops, ports: vec![PortCounters::default(); ports] };
        for (old, new) in map.iter().enumerate() {
            if let Some(slot) = new.and_then(|n| c.ports.get_mut(n as usize)) {
                *slot = self.ports[old];
            }
        }
        c
    }

    /// Counts a frame of `port` dropped for `reason`.
    #[inline]
    pub fn drop(&mut self, port: PortId, reason: DropReason) {
        self.drops[reason as usize] += 1;
        if let Some(p) = self.ports.get_mut(port as usize) {
            p.dropped += 1;
        }
    }

    /// Counts one `reason` without charging a port (a flood copy that could not go out).
    #[inline]
    pub fn count(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// A port's counters, writable.
    #[inline]
    pub fn port_mut(&mut self, port: PortId) -> &mut PortCounters {
        &mut self.ports[port as usize]
    }

    /// A port's counters.
    pub fn port(&self, port: PortId) -> PortCounters {
        self.ports[port as usize]
    }

    /// How many frames were dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Drops by reason name, omitting zeros.
    pub fn drops_by_name(&self) -> BTreeMap<&'static str, u64> {
        DropReason::ALL
            .iter()
            .filter(|r| self.drops[**r as usize] > 0)
            .map(|r| (r.name(), self.drops[*r as usize]))
            .collect()
    }

    /// Total frames dropped.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_kebab_case() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '-' || c.is_ascii_digit())));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }

    #[test]
    fn drop_counts_reason_and_port() {
        let mut c = Counters::new(2);
        c.drop(1, DropReason::Runt);
        c.drop(1, DropReason::Runt);
        assert_eq!(c.drops(DropReason::Runt), 2);
        assert_eq!(c.port(1).dropped, 2);
        assert_eq!(c.port(0).dropped, 0);
        assert_eq!(c.drops_by_name().get("runt"), Some(&2));
        assert_eq!(c.total_drops(), 2);
    }
}
