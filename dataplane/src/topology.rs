//! [`Topology`]: the switch's ports and networks as numbered tables, built from a validated [`Config`].
//!
//! Ports and networks are referred to by index on the hot path ([`PortId`], [`NetId`]); names exist for the
//! control plane, stats and errors. A topology is immutable once built; a configuration change builds a new one.

use crate::buffer::NANOS_PER_SEC;
use crate::config::{Config, PortKind};
use crate::port::PortId;
use ethertype_len::ETH_HEADER_LEN;

/// A network's index in the topology.
pub type NetId = u16;

/// Lengths used by MTU checks.
pub mod ethertype_len {
    /// Ethernet II header (destination, source, EtherType).
    pub const ETH_HEADER_LEN: usize = 14;
    /// One 802.1Q / 802.1ad tag.
    pub const VLAN_TAG_LEN: usize = 4;
}

/// One port as the pipeline sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Configured name.
    pub name: String,
    /// Configured back-end.
    pub kind: PortKind,
    /// The network it is an access port of.
    pub network: Option<NetId>,
    /// IP MTU.
    pub mtu: u16,
}

impl PortInfo {
    /// Longest untagged frame the port carries (MTU plus the Ethernet header).
    #[inline]
    pub fn max_frame_len(&self) -> usize {
        self.mtu as usize + ETH_HEADER_LEN
    }
}

/// One network (bridge domain) as the pipeline sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Configured name.
    pub name: String,
    /// Its ports, in configuration order.
    pub ports: Vec<PortId>,
    /// MAC ageing time in nanoseconds.
    pub mac_aging: u64,
    /// Most MAC entries learned.
    pub mac_limit: usize,
}

/// The numbered ports and networks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    /// Ports by [`PortId`].
    pub ports: Vec<PortInfo>,
    /// Networks by [`NetId`].
    pub networks: Vec<NetworkInfo>,
}

impl Topology {
    /// Numbers a validated configuration's ports and networks in the order they are written.
    pub fn from_config(cfg: &Config) -> Topology {
        let mut networks: Vec<NetworkInfo> = cfg
            .networks
            .iter()
            .map(|n| NetworkInfo {
                name: n.name.clone(),
                ports: Vec::new(),
                mac_aging: n.mac_aging_secs.saturating_mul(NANOS_PER_SEC),
                mac_limit: n.mac_limit,
            })
            .collect();
        let ports = cfg
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let network = p.network.as_deref().and_then(|n| cfg.network_index(n)).map(|n| n as NetId);
                if let Some(n) = network {
                    networks[n as usize].ports.push(i as PortId);
                }
                PortInfo { name: p.name.clone(), kind: p.kind, network, mtu: p.mtu }
            })
            .collect();
        Topology { ports, networks }
    }

    /// The id of the port called `name`.
    pub fn port_id(&self, name: &str) -> Option<PortId> {
        self.ports.iter().position(|p| p.name == name).map(|i| i as PortId)
    }

    /// The id of the network called `name`.
    pub fn network_id(&self, name: &str) -> Option<NetId> {
        self.networks.iter().position(|n| n.name == name).map(|i| i as NetId)
    }
}
