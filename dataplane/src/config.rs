//! The configuration model: the TOML language of DESIGN.md §2, parsed and validated as a whole.
//!
//! (Skeleton: full validation with file/line/field errors is being written.)

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::Path;

/// The whole desired state of a switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Switch-wide settings.
    #[serde(default)]
    pub switch: SwitchConfig,
    /// Bridge domains.
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkConfig>,
    /// Ports.
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
}

/// `[switch]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// Poll-mode worker threads.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig { workers: default_workers() }
    }
}

fn default_workers() -> usize {
    1
}

/// `[[network]]`: an L2 bridge domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Unique name.
    pub name: String,
    /// The network's IPv4 subnet.
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// The switch's address on this network.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Seconds a learned MAC stays without being seen.
    #[serde(default = "default_aging")]
    pub mac_aging_secs: u64,
    /// Most MAC entries this network learns.
    #[serde(default = "default_mac_limit")]
    pub mac_limit: usize,
}

fn default_aging() -> u64 {
    300
}
fn default_mac_limit() -> usize {
    8192
}

/// How a port reaches frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A Linux tap device the switch creates.
    Tap,
    /// An AF_XDP socket on an existing interface.
    Afxdp,
    /// An AF_PACKET (TPACKET_V3) socket on an existing interface.
    Afpacket,
    /// A pcap file (replay).
    Pcap,
    /// An in-memory port (tests, benchmarks).
    Mem,
}

/// `[[port]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Unique name.
    pub name: String,
    /// Back-end.
    pub kind: PortKind,
    /// Kernel interface to create or attach to.
    #[serde(default)]
    pub ifname: Option<String>,
    /// The network this is an access port of.
    #[serde(default)]
    pub network: Option<String>,
    /// IP MTU of the link.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

fn default_mtu() -> u16 {
    1500
}

/// A configuration that could not be read or is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file (or other source) the text came from.
    pub origin: String,
    /// 1-based line of the offending table or key, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the object and the field.
    pub message: String,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &origin)
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e: toml::de::Error| ConfigError {
            origin: origin.to_string(),
            line: e.span().map(|s| text[..s.start].lines().count().max(1)),
            message: e.message().to_string(),
        })
    }

    /// Index of the network called `name`.
    pub fn network_index(&self, name: &str) -> Option<usize> {
        self.networks.iter().position(|n| n.name == name)
    }
}
