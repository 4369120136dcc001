//! The control plane of `vswitchd run`: the control socket's wire protocol ([`proto`], defined in the contract
//! crate `vswitch_api` and shared with the clients in the `control` crate), what each request does to the
//! running switch ([`daemon`], including which learned state survives which `apply`), and the socket itself
//! ([`server`]).
//!
//! Threads: [`proto`] is plain data and pure functions, usable from any thread (never the forwarding hot path);
//! [`server`] runs an accept thread and a thread per connection, which call the `Sync` [`daemon::Daemon`].
pub mod daemon;
pub mod server;

/// The control protocol (defined in the contract crate, `vswitch_api`, which the clients share).
pub use vswitch_api::proto;
