//! vswitch's dataplane: buffers, ports, the forwarding pipeline and its tables, and the replay driver.
pub mod batch;
pub mod bridge;
pub mod buffer;
pub mod checksum;
pub mod config;
pub mod counters;
pub mod fdb;
pub mod ingress;
pub mod neigh;
pub mod packet;
pub mod pipeline;
pub mod port;
pub mod replay;
pub mod route;
pub mod router;
pub mod topology;
pub mod wire;
