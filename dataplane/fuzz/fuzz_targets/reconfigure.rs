//! Fuzz target `reconfigure`: random configuration A → traffic → random configuration B → traffic (and back,
//! as often as the input says), every pipeline invariant checked after each step; see `../reconfigure.rs`.
#![no_main]

#[path = "../reconfigure.rs"]
mod reconfigure;

libfuzzer_sys::fuzz_target!(|data: &[u8]| reconfigure::reconfigure(data));
