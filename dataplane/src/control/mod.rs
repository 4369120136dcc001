//! The control plane of `vswitchd run`: the control socket's wire protocol ([`proto`], shared with the clients
//! in the `control` crate), what each request does to the running switch ([`daemon`], including which learned
//! state survives which `apply`), and the socket itself ([`server`]).
//!
//! Threads: [`proto`] is plain data and pure functions, usable from any thread (never the forwarding hot path);
//! [`server`] runs an accept thread and a thread per connection, which call the `Sync` [`daemon::Daemon`].
pub mod daemon;
pub mod proto;
pub mod server;
