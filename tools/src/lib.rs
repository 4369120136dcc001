//! vswitch's capture tools as a library: [`generate`] (synthetic captures from a TOML spec), [`dump`] (one decoded
//! line per frame) and [`diff`] (first difference between two captures). The `vswitch-pcap` binary is a thin
//! command-line wrapper over these, and the pcap regression harness calls them directly.
//!
//! [`lab`] builds a switch and its hosts in network namespaces (the `vswitch-lab` binary, the live end-to-end
//! tests and `vswitch-bench` use it); it needs root.
//!
//! The capture tools are synchronous, single-threaded and free of global state; capture I/O goes through
//! `dataplane::port::pcap`, frame building and decoding through `dataplane::wire`.

pub mod diff;
pub mod dump;
pub mod generate;
pub mod lab;
