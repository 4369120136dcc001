//! The overlay membership's wire form: what the control plane pushes to the switch (`overlay_update`, and
//! `vswitchd replay --overlay FILE`). Plain data, shared with the clients.

use crate::wire::MacAddr;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The IANA VXLAN port, a member's default.
pub const DEFAULT_UDP_PORT: u16 = 4789;

/// The membership the control plane pushes: every live remote host and every remote endpoint. The wire form of
/// the control socket's `overlay_update` and of `vswitchd replay --overlay FILE`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayState {
    /// Where it comes from (the agent sends the etcd revision it read); shown by `network inspect`.
    #[serde(default)]
    pub revision: u64,
    /// The other hosts (our own VTEP, if listed, is ignored).
    #[serde(default)]
    pub members: Vec<Member>,
    /// Endpoints behind the other hosts.
    #[serde(default)]
    pub endpoints: Vec<RemoteEndpoint>,
}

/// One remote host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The host's name (unique).
    pub host: String,
    /// Its VTEP address (unique).
    pub vtep: Ipv4Addr,
    /// The UDP port it receives VXLAN on.
    #[serde(default = "default_udp_port")]
    pub udp_port: u16,
    /// Its underlay MTU.
    pub mtu: u16,
    /// The overlay networks it serves, by name (networks not configured here are ignored).
    pub networks: Vec<String>,
}

fn default_udp_port() -> u16 {
    DEFAULT_UDP_PORT
}

/// One endpoint (a container's interface) behind a remote host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteEndpoint {
    /// The overlay network (ignored when not configured here).
    pub network: String,
    /// Its MAC address.
    pub mac: MacAddr,
    /// Its IPv4 address, when known (ARP suppression and routing into the overlay use it).
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// The member host it is behind.
    pub host: String,
}

/// An [`OverlayState`] that was refused; nothing changed. The message names the offending entry and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct OverlayError {
    /// The field, e.g. `members[2].vtep`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}
