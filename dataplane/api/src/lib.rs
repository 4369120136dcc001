//! vswitch's contract with its users and clients, in a crate of its own so that the clients (`vswitch-agent`,
//! `vswitchctl`, in the `control` crate) depend on it and not on the whole dataplane:
//!
//! - [`config`]: the configuration language (TOML) and its model, validated as a whole; its serde form is also
//!   how a configuration travels over the control socket.
//! - [`proto`]: the control socket's protocol (requests, responses, every result row).
//! - [`overlay`]: the overlay membership the control plane pushes (`overlay_update`) and what inspect shows of it.
//! - the small values both of them use: [`MacAddr`], [`PortRange`], [`IfName`], and the frame geometry the
//!   MTU limit comes from ([`frame`]).
//!
//! The dataplane re-exports these modules at their old paths (`dataplane::config`, `dataplane::control::proto`,
//! `dataplane::wire::MacAddr`, …) and uses the values from here, so there is one definition of each.
//!
//! Threads: plain data and pure functions (only [`config::Config::load`] reads a file), usable from any thread;
//! nothing here is on the forwarding hot path.

// Casts that could truncate or drop a sign are conversions or carry a reason (issue 11 item 4); tests keep theirs.
#![cfg_attr(not(test), warn(clippy::cast_possible_truncation, clippy::cast_sign_loss))]

pub mod config;
pub mod frame;
pub mod ifname;
pub mod mac;
pub mod overlay;
pub mod port_range;
pub mod proto;

pub use ifname::IfName;
pub use mac::MacAddr;
pub use port_range::PortRange;
