//! The control plane of `vswitchd run`: the control socket's wire protocol ([`proto`], shared with the clients
//! in the `control` crate).
//!
//! Threads: [`proto`] is plain data and pure functions, usable from any thread (never the forwarding hot path).
pub mod proto;
