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

/// Time in nanoseconds: a virtual clock in replay and tests, a monotonic clock in `vswitchd run`.
pub type Nanos = u64;

/// Nanoseconds per second.
pub const NANOS_PER_SEC: Nanos = 1_000_000_000;
