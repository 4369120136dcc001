//! Fuzz target `gso`: see `../targets.rs` for what it drives and the properties it checks.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::gso(data));
