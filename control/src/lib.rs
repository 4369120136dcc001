//! vswitch's control plane: the config agent (`vswitch-agent`) and the operator CLI (`vswitchctl`), both
//! clients of `vswitchd`'s control socket. The wire types (configuration model, requests, counters) are defined
//! once in the `dataplane` crate and shared from there.
//!
//! What exists so far is the presentation layer both tools share: [`table`] renders rows as the aligned,
//! human-readable tables `vswitchctl` prints by default (`--json` prints the wire types instead).

pub mod table;
