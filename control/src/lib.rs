//! vswitch's control plane: the config agent (`vswitch-agent`) and the operator CLI (`vswitchctl`), both
//! clients of `vswitchd`'s control socket. The wire types (configuration model, requests, counters) are defined
//! once in the contract crate `vswitch_api` (`dataplane/api`), which `vswitchd` uses too; this crate does not
//! depend on the dataplane itself.
//!
//! - [`cluster`] keeps the host registered in etcd and follows the other hosts (overlay membership).
//! - [`agent`] is the config agent's logic: load and validate the desired state, sync a switch to it.
//! - [`table`] renders rows as the aligned, human-readable tables `vswitchctl` prints by default (`--json`
//!   prints the wire types instead).
//! - [`client`] speaks the control protocol over the Unix socket, with errors in the operator's terms.
//! - [`diff`] computes and renders what changes between the running and the desired configuration.
//! - [`render`] turns each op's result into what `vswitchctl` prints by default.
//! - [`watch`] notices changes of the agent's configuration file (polling, with a debounce).

pub mod agent;
pub mod client;
pub mod cluster;
pub mod diff;
pub mod render;
pub mod table;
pub mod watch;
