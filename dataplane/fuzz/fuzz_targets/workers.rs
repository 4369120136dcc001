//! Fuzz target `workers`: the pipeline through 2–4 shards driven as workers, with the input choosing who
//! receives each frame and when each worker polls, takes its mail and does housekeeping; every step checked,
//! and the settled outcome compared with one switch's. See `../workers.rs`.
#![no_main]

#[path = "../workers.rs"]
mod workers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| workers::workers(data));
