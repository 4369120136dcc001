//! `vswitchctl` (being written).

fn main() {}
