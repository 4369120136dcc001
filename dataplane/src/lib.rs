//! vswitch's dataplane: buffers, ports, the forwarding pipeline and its tables, and the replay driver.
pub mod batch;
pub mod bridge;
pub mod buffer;
pub mod conntrack;
pub mod control;
pub mod counters;
pub mod fdb;
pub mod ids;
pub mod ingress;
pub mod live;
pub mod nat;
pub mod neigh;
pub mod overlay;
pub mod packet;
pub mod pipeline;
pub mod port;
pub mod replay;
pub mod route;
pub mod router;
#[cfg(any(test, feature = "testing"))]
pub mod simhost;
#[cfg(any(test, feature = "testing"))]
pub mod testbed;
pub mod topology;
pub mod wire;
pub mod worker;

/// The configuration language and model (defined in the contract crate, `vswitch_api`).
pub use vswitch_api::config;
