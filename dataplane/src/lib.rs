//! vswitch's dataplane: buffers, ports, the forwarding pipeline and its tables, and the replay driver.
// Casts that could truncate or drop a sign are conversions or carry a reason (issue 11 item 4); tests keep theirs.
#![cfg_attr(not(test), warn(clippy::cast_possible_truncation, clippy::cast_sign_loss))]

pub mod batch;
pub mod bridge;
pub mod buffer;
pub mod conntrack;
pub mod control;
pub mod counters;
pub mod fdb;
pub mod hugepage;
pub mod ids;
pub mod ingress;
pub mod isolation;
pub mod live;
pub mod metrics;
pub mod mss_clamp;
pub mod nat;
pub mod neigh;
pub mod offload;
pub mod overlay;
pub mod packet;
pub mod pipeline;
pub mod port;
pub mod replay;
pub mod route;
pub mod router;
pub mod sched;
#[cfg(any(test, feature = "testing"))]
pub mod simhost;
pub mod snapshot;
pub mod stage;
#[cfg(any(test, feature = "testing"))]
pub mod testbed;
pub mod topology;
pub mod wire;
pub mod worker;

/// The configuration language and model (defined in the contract crate, `vswitch_api`).
pub use vswitch_api::config;
