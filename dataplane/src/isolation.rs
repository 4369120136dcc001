//! The isolation policy: which router interfaces the router may forward between *untranslated*, and the drop
//! reason of each refusal. Docker's model (its `DOCKER-ISOLATION` chains and the FORWARD policy that keeps
//! unpublished container ports unreachable), stated per router interface:
//!
//! | from \ to            | routed port | plain network | isolated network | internal network | host port |
//! |----------------------|-------------|---------------|------------------|------------------|-----------|
//! | routed port          | yes         | yes           | `not-published`  | `internal-network` | `network-isolation` |
//! | plain network        | yes         | yes           | `network-isolation` | `internal-network` | yes |
//! | isolated network     | yes (masqueraded) | `network-isolation` | `network-isolation` | `internal-network` | yes (untranslated) |
//! | internal network     | `internal-network` | `internal-network` | `internal-network` | `internal-network` | `internal-network` |
//! | host port            | `network-isolation` | yes     | yes              | `internal-network` | yes |
//!
//! - An **isolated** network is one with `masquerade = true` (a Docker bridge network); a **plain** network has
//!   a gateway without masquerade (Docker's routed gateway mode); an **internal** one has `internal = true`.
//! - A **host port** is a routed port with `host = true`: how the host stack reaches its containers, as through
//!   docker0's address in Docker, where the host's own traffic never meets the FORWARD chain. It reaches every
//!   network that is not internal, isolated ones included, and they reach it, untranslated (the NAT stage does
//!   not masquerade towards it). It is not a path between the outside and the networks' host: routed ports and
//!   host ports do not route to each other (`network-isolation`), and it carries the host's own traffic only:
//!   a packet routed to a host port must be addressed to its link (the host), one routed from it must come
//!   from its link ([`Isolation::host_link_refusal`], `network-isolation`; found by the `reconfigure` fuzz
//!   target: a route via the host would otherwise carry a container's unmasqueraded address beyond it).
//! - `network-isolation` and `not-published` refusals are lifted for packets the NAT stage translated or
//!   tracks (replies to a container's own connections, published ports and the replies to them, ICMP errors
//!   quoting a tracked connection): the router asks [`crate::nat::Nat::tracks`] only after a refusal, so
//!   allowed traffic pays one table read per packet and nothing more. `internal-network` is never lifted.
//! - `allow_routing_with` (configuration) lifts `network-isolation` between two named networks, both ways.
//!   It does not open an isolated network to routed ports.
//! - Traffic within one interface (bridged, or hairpinned back into its own network) is not routed between
//!   interfaces and never asks this policy; the switch's own addresses (ping to any gateway) are not
//!   forwarding either.
//!
//! Threads: plain data inside the immutable [`crate::topology::Topology`]; read by the worker running the
//! router.

use crate::counters::DropReason;
use crate::ids::RifId;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// What a router interface is, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RifClass {
    /// A routed port.
    Routed,
    /// A network routed plainly (a gateway, no masquerade, not internal).
    Plain,
    /// A network with `masquerade = true`.
    Isolated,
    /// A network with `internal = true`.
    Internal,
    /// A routed port with `host = true`: the host stack's way to the networks.
    Host,
}

/// The policy for one topology. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Isolation {
    /// Per router interface, by [`RifId`].
    class: Vec<RifClass>,
    /// Pairs of interfaces `allow_routing_with` connects, as `(low << 16) | high`, sorted.
    allowed: Vec<u32>,
    /// Per router interface: a host port's link (its subnet), `None` for other interfaces.
    host_link: Vec<Option<Ipv4Net>>,
    /// Some interface is a host port (else [`Isolation::host_link_refusal`] has nothing to check).
    any_host_link: bool,
    /// [`Isolation::refusal`] of every pair of the first `dense` interfaces, row by row (`from * dense + to`):
    /// one load per routed packet instead of two class lookups and a match (about 20 instructions, callgrind).
    decided: Vec<Option<DropReason>>,
    dense: usize,
}

/// The most interfaces whose pairwise answers are precomputed (a 4 KiB table); beyond them each is decided per
/// packet.
const DENSE_MAX: usize = 64;

fn pair(a: RifId, b: RifId) -> u32 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    (u32::from(lo) << 16) | u32::from(hi)
}

impl Isolation {
    /// The policy for interfaces of `class` (by [`RifId`]), with `allowed` pairs of interfaces connected.
    pub fn new(class: Vec<RifClass>, allowed: impl IntoIterator<Item = (RifId, RifId)>) -> Self {
        let mut allowed: Vec<u32> = allowed.into_iter().map(|(a, b)| pair(a, b)).collect();
        allowed.sort_unstable();
        allowed.dedup();
        let mut p =
            Isolation { class, allowed, host_link: Vec::new(), any_host_link: false, decided: Vec::new(), dense: 0 };
        let dense = p.class.len().min(DENSE_MAX);
        // `dense` ≤ DENSE_MAX < 2^16: every index is a RifId.
        #[allow(clippy::cast_possible_truncation)]
        let decided = (0..dense * dense).map(|i| p.decide((i / dense) as RifId, (i % dense) as RifId)).collect();
        (p.decided, p.dense) = (decided, dense);
        p
    }

    /// With the links of the host ports (by [`RifId`]; `None` for other interfaces).
    pub fn with_host_links(mut self, links: Vec<Option<Ipv4Net>>) -> Self {
        self.any_host_link = links.iter().any(Option::is_some);
        self.host_link = links;
        self
    }

    /// Why a packet from `src` to `dst`, routed from interface `from` to interface `to`, is not the host's own
    /// traffic on a host port: to a host port, `dst` must be on its link; from one, `src` must be. `None`: it is,
    /// or neither interface is a host port.
    #[inline(always)]
    pub fn host_link_refusal(&self, from: RifId, to: RifId, src: Ipv4Addr, dst: Ipv4Addr) -> Option<DropReason> {
        if !self.any_host_link {
            return None;
        }
        let off_link =
            |rif: RifId, a: Ipv4Addr| matches!(self.host_link.get(rif as usize), Some(Some(n)) if !n.contains(&a));
        (off_link(to, dst) || off_link(from, src)).then_some(DropReason::NetworkIsolation)
    }

    /// The class of interface `rif` (`Plain` for an unknown id).
    #[inline]
    pub fn class(&self, rif: RifId) -> RifClass {
        self.class.get(rif as usize).copied().unwrap_or(RifClass::Plain)
    }

    /// Why a packet may not be forwarded untranslated from interface `from` to another interface `to`, or
    /// `None` when it may. `InternalNetwork` is final; the other reasons yield to NAT (module documentation).
    #[inline(always)]
    pub fn refusal(&self, from: RifId, to: RifId) -> Option<DropReason> {
        let (f, t) = (usize::from(from), usize::from(to));
        if f < self.dense && t < self.dense {
            return self.decided[f * self.dense + t];
        }
        self.decide(from, to)
    }

    /// [`Isolation::refusal`], worked out from the classes.
    #[inline(never)]
    fn decide(&self, from: RifId, to: RifId) -> Option<DropReason> {
        use RifClass::*;
        match (self.class(from), self.class(to)) {
            (Routed | Plain, Routed | Plain) | (Isolated, Routed) => None,
            (Internal, _) | (_, Internal) => Some(DropReason::InternalNetwork),
            (Host, Host | Plain | Isolated) | (Plain | Isolated, Host) => None,
            (Host, Routed) | (Routed, Host) => Some(DropReason::NetworkIsolation),
            (Routed, Isolated) => Some(DropReason::NotPublished),
            (Plain | Isolated, Isolated) | (Isolated, Plain) => {
                if self.allowed.binary_search(&pair(from, to)).is_ok() {
                    None
                } else {
                    Some(DropReason::NetworkIsolation)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RifClass::*;

    #[test]
    fn a_host_port_carries_only_its_links_traffic() {
        let link: Ipv4Net = "169.254.77.0/30".parse().unwrap();
        let p = Isolation::new(vec![Isolated, Host], []).with_host_links(vec![None, Some(link)]);
        let (ctr, host, far) = ([172, 17, 0, 2].into(), [169, 254, 77, 2].into(), [198, 51, 100, 7].into());
        assert_eq!(p.host_link_refusal(0, 1, ctr, host), None);
        assert_eq!(p.host_link_refusal(1, 0, host, ctr), None);
        assert_eq!(p.host_link_refusal(0, 1, ctr, far), Some(DropReason::NetworkIsolation));
        assert_eq!(p.host_link_refusal(1, 0, far, ctr), Some(DropReason::NetworkIsolation));
    }

    #[test]
    fn interfaces_beyond_the_precomputed_ones_are_decided_alike() {
        // 70 interfaces, the precomputed table holds the first 64: the pairs across its edge and beyond it.
        let mut class = vec![Plain; 70];
        (class[3], class[66], class[67], class[68], class[69]) = (Isolated, Isolated, Isolated, Routed, Internal);
        let p = Isolation::new(class, [(66, 3)]);
        let ni = Some(DropReason::NetworkIsolation);
        assert_eq!(p.refusal(66, 3), None, "allowed pair, across the edge");
        assert_eq!(p.refusal(3, 66), None);
        assert_eq!(p.refusal(66, 67), ni);
        assert_eq!(p.refusal(68, 66), Some(DropReason::NotPublished));
        assert_eq!(p.refusal(66, 68), None);
        assert_eq!(p.refusal(1, 69), Some(DropReason::InternalNetwork));
        assert_eq!(p.refusal(3, 67), ni);
        assert_eq!(p.refusal(1, 2), None);
        for from in 0..70 {
            for to in 0..70 {
                assert_eq!(p.refusal(from, to), p.decide(from, to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_table_of_the_module_documentation() {
        // 0 routed, 1 plain, 2 isolated, 3 internal, 4 isolated, 5 plain, 6 host, 7 host; 2 and 5 are connected.
        let p = Isolation::new(vec![Routed, Plain, Isolated, Internal, Isolated, Plain, Host, Host], [(5, 2)]);
        let ni = Some(DropReason::NetworkIsolation);
        let np = Some(DropReason::NotPublished);
        let int = Some(DropReason::InternalNetwork);
        let expect: [[Option<DropReason>; 8]; 8] = [
            [None, None, np, int, np, None, ni, ni],
            [None, None, ni, int, ni, None, None, None],
            [None, ni, ni, int, ni, None, None, None],
            [int, int, int, int, int, int, int, int],
            [None, ni, ni, int, ni, ni, None, None],
            [None, None, None, int, ni, None, None, None],
            [ni, None, None, int, None, None, None, None],
            [ni, None, None, int, None, None, None, None],
        ];
        for (from, row) in expect.iter().enumerate() {
            for (to, want) in row.iter().enumerate() {
                if from != to {
                    assert_eq!(p.refusal(from as RifId, to as RifId), *want, "{from} -> {to}");
                }
            }
        }
    }
}
