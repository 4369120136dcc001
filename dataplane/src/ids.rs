//! The dataplane's small shared vocabulary: the indices the hot path uses instead of names, and time.
//!
//! Ports, networks and router interfaces are named in the configuration and numbered by
//! [`Topology`](crate::topology::Topology) in configuration order; every table and counter refers to them by
//! these indices. Time is a [`Nanos`] count passed in by the caller (a virtual clock in replay and tests, a
//! monotonic clock in `vswitchd run`): nothing in the pipeline reads a clock.
//!
//! This module imports nothing from the crate, so any module may use it without creating a cycle.
//! Threads: plain types and constants.

/// A port's index in the switch's port table.
pub type PortId = u16;

/// A network's (bridge domain's) index in the topology.
pub type NetId = u16;

/// A router interface's index: networks with a gateway first, then routed ports.
pub type RifId = u16;

/// The id ([`PortId`], [`NetId`] or [`RifId`]) of the entry at position `i` of a topology table, a configuration's
/// list, or anything numbered the same way. A validated configuration has at most `limits::PORTS_MAX` ports and
/// `limits::NETWORKS_MAX` networks (router interfaces: at most one per network and per port), all below 2^16, so
/// this holds for every such position; a larger `i` is a bug and panics here instead of wrapping to another
/// object's id. For the control plane and set-up: the per-frame path carries ids, it does not make them.
#[inline]
#[track_caller]
pub fn table_id(i: usize) -> u16 {
    u16::try_from(i).expect("table position beyond the configuration's limits on ports and networks")
}

/// Time in nanoseconds: a virtual clock in replay and tests, a monotonic clock in `vswitchd run`.
pub type Nanos = u64;

/// Nanoseconds per second.
pub const NANOS_PER_SEC: Nanos = 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids_cover_every_u16_position() {
        assert_eq!(table_id(0), 0);
        assert_eq!(table_id(usize::from(u16::MAX)), u16::MAX);
    }

    #[test]
    #[should_panic(expected = "beyond the configuration's limits")]
    fn a_position_past_u16_panics_instead_of_wrapping() {
        table_id(usize::from(u16::MAX) + 1);
    }
}
