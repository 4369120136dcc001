//! `vswitch-agent` (being written).

fn main() {}
