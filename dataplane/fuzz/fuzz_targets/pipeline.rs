//! Fuzz target: a sequence of frames and clock steps through a whole switch (L2 networks, networks with a
//! gateway, routing, ARP, ICMP, masquerade, published ports), with every pipeline invariant checked after each step (see `../harness.rs`).
//!
//! Input: records `[port: u8][dt: u8][len: u16 LE][len bytes]`; the clock moves `dt` × 50 ms before the frame
//! is received on port `port % 7` of `harness::ROUTED_CONFIG`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static CONFIG: LazyLock<dataplane::config::Config> = LazyLock::new(|| harness::config(harness::ROUTED_CONFIG));

fuzz_target!(|data: &[u8]| {
    harness::run_records(&CONFIG, data);
});
