//! The configuration model: the TOML language of DESIGN.md §2 (switching, static routing, NAT and connection
//! tracking, and the settings of the live port back-ends), parsed and validated as a whole before anything is
//! applied.
//!
//! This module owns the user's language and the rules that make a configuration valid. The public types
//! ([`Config`] and its parts) are also the configuration's wire form between `vswitch-agent` and `vswitchd`.
//! Nothing is applied here: [`Topology::from_config`](crate::topology::Topology::from_config) numbers a valid
//! configuration for the pipeline.
//!
//! # The language
//!
//! ```toml
//! [switch]                   # optional
//! workers = 1                # poll-mode worker threads
//! poll_idle_us = 200         # busy-poll this long without traffic before sleeping
//!
//! [[network]]                # an L2 bridge domain; any number of them
//! name = "bridge"
//! subnet = "172.17.0.0/16"
//! gateway = "172.17.0.1"     # the switch routes for this network
//! gateway_mac = "02:00:00:00:01:01"
//! internal = false           # true: never routed to or from another interface
//! masquerade = true          # SNAT what leaves through a routed port to that port's address
//! mac_aging_secs = 300
//! mac_limit = 8192
//!
//! [[port]]                   # any number of them; an access port of a network …
//! name = "c1"
//! kind = "tap"
//! ifname = "vs-c1"
//! network = "bridge"
//! mtu = 1500
//! netns = "ctr1"             # tap only: move the tap into this named network namespace
//! queues = 1                 # tap, afxdp, afpacket
//!
//! [[port]]                   # … or a routed port, with the switch's own address on the link
//! name = "uplink"
//! kind = "afxdp"
//! ifname = "vs-up"
//! address = "203.0.113.2/24"
//! mac = "02:00:00:00:02:01"
//! mode = "auto"              # afxdp only: auto | native | generic
//!
//! [[route]]                  # static routes; any number of them
//! prefix = "0.0.0.0/0"
//! via = "203.0.113.1"
//! port = "uplink"
//!
//! [[publish]]                # like `docker run -p 8080:80`; any number of them
//! port = "uplink"
//! proto = "tcp"
//! external_port = 8080
//! to = "172.17.0.2:80"
//!
//! [nat]                      # optional
//! port_range = "1024-65535"
//!
//! [conntrack]                # optional
//! limit = 262144
//! tcp_strict = false
//! tcp_established_secs = 432000
//! ```
//!
//! A **router interface** is a network's `gateway` (with its `subnet`) or a routed port's `address` (with its
//! prefix length); the subnets of router interfaces are the connected subnets the switch routes between.
//!
//! | key | required | default | valid values |
//! |-----|----------|---------|--------------|
//! | `switch.workers` | no | 1 | 1..=64 ([`limits::WORKERS`]) |
//! | `switch.poll_idle_us` | no | 200 | 0..=1_000_000 ([`limits::POLL_IDLE_US`]): microseconds a worker busy-polls with no traffic before sleeping on epoll |
//! | `network.name` | yes | | 1..=64 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit; unique among networks |
//! | `network.subnet` | no | none | an IPv4 prefix `A.B.C.D/N` without host bits; must not overlap another network's subnet, nor a routed port's subnet if the network has a gateway |
//! | `network.gateway` | no | none | an IPv4 address inside `subnet` (so `subnet` is required), not its network or broadcast address: the network's router interface |
//! | `network.gateway_mac` | no | derived from the name ([`crate::topology`]) | a MAC `xx:xx:xx:xx:xx:xx` (or `-`-separated), unicast, not all-zero; requires `gateway`; unique among all `gateway_mac` and `mac` values |
//! | `network.internal` | no | false | a boolean; `true`: the router never routes between this network and another interface (meaningful with a `gateway`) |
//! | `network.masquerade` | no | false | a boolean; `true`: connections from this network leaving through a routed port get that port's address as source (the NAT stage, `nat.rs`); requires `gateway`; not with `internal = true` |
//! | `network.mac_aging_secs` | no | 300 | 1..=1_000_000 ([`limits::MAC_AGING_SECS`]) |
//! | `network.mac_limit` | no | 8192 | 1..=1_000_000 ([`limits::MAC_LIMIT`]) |
//! | `port.name` | yes | | 1..=15 characters (it may become an interface or file name), same alphabet as network names; unique among ports |
//! | `port.kind` | yes | | `tap`, `afxdp`, `afpacket`, `pcap` or `mem` ([`PortKind`]) |
//! | `port.ifname` | for `tap`, `afxdp`, `afpacket` | none | a Linux interface name: 1..=15 bytes, no `/`, `:`, whitespace or NUL, not `.` or `..`; unique among ports. Allowed but unused for `pcap` and `mem`, so one file serves live and replay |
//! | `port.network` | either `network` or `address` | none | the name of a `[[network]]`: the port is an access port of that network |
//! | `port.address` | either `network` or `address` | none | `A.B.C.D/N`, N in 1..=32, host bits kept: the switch's own address on the link, making the port a routed port; for N < 31 not the network or broadcast address of its subnet; the subnet must not overlap that of another router interface |
//! | `port.mac` | no | derived from the name ([`crate::topology`]) | a MAC, only on a routed port (`address` set); unicast, not all-zero; unique among all `gateway_mac` and `mac` values |
//! | `port.mtu` | no | 1500 | 68..=1898 ([`limits::MTU`]): a frame is the MTU plus 14 bytes of Ethernet header and up to 8 bytes of VLAN tags, and must fit [`MAX_FRAME_LEN`] (1920) |
//! | `port.netns` | no | none | only for kind `tap`: an existing named network namespace (1..=255 bytes, no `/` or NUL, not `.` or `..`) the tap is moved into |
//! | `port.mode` | no | `auto` | only for kind `afxdp`: `auto`, `native` or `generic` ([`XdpMode`]) |
//! | `port.queues` | no | 1 | only for kinds `afxdp`, `afpacket`, `tap`: 1..=64 ([`limits::QUEUES`]) |
//! | `route.prefix` | yes | | an IPv4 prefix `A.B.C.D/N` (N in 0..=32) without host bits; unique among routes |
//! | `route.via` | yes | | the next hop: an IPv4 address inside a connected subnet (that of `port`, when given), not one of the switch's own addresses |
//! | `route.port` | no | the router interface whose subnet holds `via` | the name of a routed port |
//! | `publish.port` | yes | | the name of a routed port: connections to its address are translated |
//! | `publish.proto` | yes | | `tcp` or `udp` |
//! | `publish.external_port` | yes | | 1..=65535; (`port`, `proto`, `external_port`) unique among publish rules |
//! | `publish.to` | yes | | `A.B.C.D:PORT`, port not 0: an address inside the subnet of a network that has a `gateway` and is not `internal`, not the gateway itself nor the subnet's network or broadcast address |
//! | `nat.port_range` | no | `"1024-65535"` | `"A-B"`, 1 <= A <= B <= 65535: the external ports (and ICMP echo identifiers) masquerade hands out |
//! | `conntrack.limit` | no | 262144 | 1..=16_777_216 ([`limits::CONNTRACK_LIMIT`]): most tracked connections; new ones beyond are dropped (`conntrack-full`) |
//! | `conntrack.tcp_strict` | no | false | a boolean; `false` (netfilter's loose policy) picks up TCP connections mid-stream, `true` only tracks from a SYN |
//! | `conntrack.tcp_syn_sent_secs` | no | 120 | 1..=2_592_000 ([`limits::TIMEOUT_SECS`]), as every timeout below |
//! | `conntrack.tcp_syn_recv_secs` | no | 60 | |
//! | `conntrack.tcp_established_secs` | no | 432000 (5 days) | |
//! | `conntrack.tcp_fin_wait_secs` | no | 120 | |
//! | `conntrack.tcp_close_wait_secs` | no | 60 | |
//! | `conntrack.tcp_last_ack_secs` | no | 30 | |
//! | `conntrack.tcp_time_wait_secs` | no | 120 | |
//! | `conntrack.tcp_close_secs` | no | 10 | |
//! | `conntrack.udp_secs` | no | 30 | a UDP flow with no reply yet |
//! | `conntrack.udp_assured_secs` | no | 120 | a UDP flow that has seen replies |
//! | `conntrack.icmp_secs` | no | 30 | an ICMP echo exchange |
//!
//! Any other key or table is an error, not ignored: a misspelt key must not silently fall back to a default.
//! Integers are TOML integers (`1_500` is fine; `"1500"` and `1500.0` are not).
//!
//! # Errors
//!
//! Every error reads `ORIGIN:LINE: OBJECT: WHAT`, e.g.
//! `examples/x.toml:12: port c3: network "brige" does not exist; known networks: bridge`. The object is
//! `switch`, `network NAME`, `port NAME`, `route PREFIX`, `publish #N`, `nat` or `conntrack` (`network #N` /
//! `port #N` / `route #N`, counting from 1 in file order, when the name or prefix itself is missing or invalid); the line is that of the offending value,
//! or of the table's header when a field is missing. A rule between two objects (a duplicate name, overlapping
//! subnets, a MAC used twice) is reported on the one written later and names the other with its line.
//!
//! - Syntax errors, unknown keys and misshapen tables (`[port]` instead of `[[port]]`) stop the parse: that one
//!   error is reported.
//! - Otherwise every value and every rule is checked, and **all** errors are reported, sorted by line.
//!   [`Config::parse_all_errors`] returns them as a list. [`Config::parse`], [`Config::load`] and
//!   [`Config::validate`] return one [`ConfigError`] whose fields hold the first error and whose message
//!   continues with the others, one per line, each in the same `ORIGIN:LINE: …` form, so printing the error
//!   prints one error per line (at most [`MAX_LISTED_ERRORS`], then a count of the rest).
//! - A value that has the wrong type only produces its type error; rules that depend on it are skipped.
//!
//! Output is deterministic (same text, same result) and no input makes the parser panic.
//!
//! # Invariants
//!
//! A [`Config`] returned by [`Config::parse`] or [`Config::load`], or accepted by [`Config::validate`], satisfies
//! every rule in the table above; in particular every port is either an access port whose `network` names
//! exactly one network, so [`Config::network_index`] finds it, or a routed port with an `address`; router
//! interfaces' subnets are disjoint, so the interface whose subnet holds an address is unique; and every route's
//! `via` lies in exactly one connected subnet (that of its `port` when given). A `Config` deserialized directly with serde (e.g. from JSON on the
//! control socket) has only been shape-checked: call [`Config::validate`] before using it.
//!
//! # Threads
//!
//! Plain data and pure functions (only [`Config::load`] reads a file): call them from the control thread or the
//! agent, never from the forwarding hot path.

use crate::buffer::{Nanos, MAX_FRAME_LEN, NANOS_PER_SEC};
use crate::conntrack::{ConntrackConfig, Timeouts};
use crate::snat::PortRange;
use crate::topology::ethertype_len::{ETH_HEADER_LEN, VLAN_TAG_LEN};
use crate::wire::MacAddr;
use ipnet::Ipv4Net;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::Path;
use std::str::FromStr;
use toml::Spanned;

/// The ranges and lengths the validator enforces.
pub mod limits {
    use super::{ETH_HEADER_LEN, MAX_FRAME_LEN, VLAN_TAG_LEN};
    use std::ops::RangeInclusive;

    /// `[switch] workers`.
    pub const WORKERS: RangeInclusive<usize> = 1..=64;
    /// `[switch] poll_idle_us`.
    pub const POLL_IDLE_US: RangeInclusive<u32> = 0..=1_000_000;
    /// `[[port]] queues`.
    pub const QUEUES: RangeInclusive<u16> = 1..=64;
    /// `[[publish]] external_port`.
    pub const EXTERNAL_PORT: RangeInclusive<u16> = 1..=65535;
    /// `[conntrack] limit`.
    pub const CONNTRACK_LIMIT: RangeInclusive<usize> = 1..=16_777_216;
    /// Every `[conntrack] *_secs` timeout: one second to 30 days.
    pub const TIMEOUT_SECS: RangeInclusive<u64> = 1..=2_592_000;
    /// Longest `[[port]] netns` name, in bytes (a file name under `/run/netns`).
    pub const NETNS_MAX: usize = 255;
    /// `[[network]] mac_aging_secs`.
    pub const MAC_AGING_SECS: RangeInclusive<u64> = 1..=1_000_000;
    /// `[[network]] mac_limit`.
    pub const MAC_LIMIT: RangeInclusive<usize> = 1..=1_000_000;
    /// The largest MTU whose frames, with two VLAN tags, still fit a buffer: 1920 - 14 - 8 = 1898.
    pub const MAX_MTU: u16 = {
        let mtu = MAX_FRAME_LEN - ETH_HEADER_LEN - 2 * VLAN_TAG_LEN;
        assert!(mtu <= u16::MAX as usize);
        mtu as u16
    };
    /// `[[port]] mtu`: from the IPv4 minimum (RFC 791) to [`MAX_MTU`].
    pub const MTU: RangeInclusive<u16> = 68..=MAX_MTU;
    /// `[[network]] vni`: 24 bits, 0 excluded.
    pub const VNI: RangeInclusive<u32> = 1..=0x00ff_ffff;
    /// `[[network]] bum_rate_pps`.
    pub const BUM_RATE_PPS: RangeInclusive<u32> = 1..=10_000_000;
    /// `[cluster] lease_ttl_secs` (etcd's minimum lease is about 2 s).
    pub const LEASE_TTL_SECS: RangeInclusive<u32> = 2..=3600;
    /// `[cluster] vxlan_udp_port`.
    pub const VXLAN_UDP_PORT: RangeInclusive<u16> = 1..=65535;
    /// Most `[cluster] etcd` endpoints.
    pub const ETCD_ENDPOINTS_MAX: usize = 16;
    /// Longest network name, in characters.
    pub const NETWORK_NAME_MAX: usize = 64;
    /// Longest port name, in characters (a port name may become an interface name).
    pub const PORT_NAME_MAX: usize = 15;
    /// Longest `ifname`, in bytes (the kernel's `IFNAMSIZ` minus the terminating NUL).
    pub const IFNAME_MAX: usize = 15;
}

/// The values of keys that are left out.
pub mod defaults {
    /// `[switch] workers`.
    pub const WORKERS: usize = 1;
    /// `[switch] poll_idle_us`.
    pub const POLL_IDLE_US: u32 = 200;
    /// `[[port]] queues`.
    pub const QUEUES: u16 = 1;
    /// `[conntrack] limit`.
    pub const CONNTRACK_LIMIT: usize = 262_144;
    /// `[[network]] mac_aging_secs`.
    pub const MAC_AGING_SECS: u64 = 300;
    /// `[[network]] mac_limit`.
    pub const MAC_LIMIT: usize = 8192;
    /// `[[port]] mtu`.
    pub const MTU: u16 = 1500;
    /// `[[network]] bum_rate_pps`.
    pub const BUM_RATE_PPS: u32 = 1000;
    /// `[cluster] lease_ttl_secs`.
    pub const LEASE_TTL_SECS: u32 = 10;
    /// `[cluster] vxlan_udp_port` (IANA's VXLAN port).
    pub const VXLAN_UDP_PORT: u16 = 4789;
}

/// The most errors a joined [`ConfigError`] lists before it only counts the rest.
pub const MAX_LISTED_ERRORS: usize = 20;

/// The whole desired state of a switch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Switch-wide settings.
    #[serde(default)]
    pub switch: SwitchConfig,
    /// Bridge domains, in file order.
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkConfig>,
    /// Ports, in file order.
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
    /// Static routes, in file order.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Published ports (inbound DNAT rules), in file order.
    #[serde(default)]
    pub publish: Vec<PublishConfig>,
    /// `[nat]`: masquerade settings.
    #[serde(default)]
    pub nat: NatConfig,
    /// `[conntrack]`: the connection table.
    #[serde(default)]
    pub conntrack: ConntrackTableConfig,
    /// `[cluster]`: the overlay's membership (etcd, read by `vswitch-agent`) and the VTEP (used by vswitchd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: which cluster this host belongs to and how its overlay traffic leaves. `vswitch-agent` uses every
/// key (it registers the host in etcd and follows the others); vswitchd uses `vtep_port` and `vxlan_udp_port`,
/// and only checks the others, so one file serves both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name (the etcd key prefix `/vswitch/v1/NAME/`).
    pub name: String,
    /// This host's name, unique in the cluster.
    pub host: String,
    /// etcd client URLs, `http://HOST:PORT`.
    pub etcd: Vec<String>,
    /// The host's etcd lease, in seconds: how long a host that died unannounced stays listed.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u32,
    /// The routed port whose address is this host's VTEP (outer source of VXLAN packets).
    pub vtep_port: String,
    /// The UDP port VXLAN is received on (and announced to the others).
    #[serde(default = "default_vxlan_port")]
    pub vxlan_udp_port: u16,
}

fn default_lease_ttl() -> u32 {
    defaults::LEASE_TTL_SECS
}
fn default_vxlan_port() -> u16 {
    defaults::VXLAN_UDP_PORT
}

/// A network's reach: this switch only, or an overlay across the cluster's hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// A bridge domain of this switch only.
    #[default]
    Local,
    /// A bridge domain spanning the hosts of the cluster, carried over VXLAN.
    Overlay,
}

impl Scope {
    /// The name in the language.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Overlay => "overlay",
        }
    }
}

/// `[switch]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// Poll-mode worker threads ([`limits::WORKERS`]).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Microseconds a worker keeps busy-polling without traffic before it sleeps on epoll
    /// ([`limits::POLL_IDLE_US`]; 0: sleep at once).
    #[serde(default = "default_poll_idle_us")]
    pub poll_idle_us: u32,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig { workers: default_workers(), poll_idle_us: default_poll_idle_us() }
    }
}

fn default_workers() -> usize {
    defaults::WORKERS
}
fn default_poll_idle_us() -> u32 {
    defaults::POLL_IDLE_US
}

/// `[[network]]`: an L2 bridge domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Unique name.
    pub name: String,
    /// The network's IPv4 subnet (no host bits set).
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// The switch's address on this network (inside `subnet`): the network's router interface.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The gateway's MAC (unicast, unique); derived from the network's name when absent (see
    /// [`crate::topology`]).
    #[serde(default)]
    pub gateway_mac: Option<MacAddr>,
    /// Never routed to or from another router interface.
    #[serde(default)]
    pub internal: bool,
    /// Traffic from this network leaving through a routed port gets that port's address as its source (SNAT);
    /// requires `gateway`.
    #[serde(default)]
    pub masquerade: bool,
    /// Seconds a learned MAC stays without being seen ([`limits::MAC_AGING_SECS`]).
    #[serde(default = "default_aging")]
    pub mac_aging_secs: u64,
    /// Most MAC entries this network learns ([`limits::MAC_LIMIT`]).
    #[serde(default = "default_mac_limit")]
    pub mac_limit: usize,
    /// `local` (default) or `overlay` (spans the cluster's hosts; needs `[cluster]`).
    #[serde(default, skip_serializing_if = "is_local")]
    pub scope: Scope,
    /// An overlay network's VXLAN network identifier; omitted: `vswitch-agent` allocates one through etcd (until
    /// it has one the network is bridged on this host only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// An overlay network's broadcast/multicast/unknown-unicast frames replicated to the other hosts per second,
    /// at most ([`limits::BUM_RATE_PPS`]).
    #[serde(default = "default_bum_rate", skip_serializing_if = "is_default_bum_rate")]
    pub bum_rate_pps: u32,
}

fn is_local(s: &Scope) -> bool {
    *s == Scope::Local
}
fn default_bum_rate() -> u32 {
    defaults::BUM_RATE_PPS
}
fn is_default_bum_rate(r: &u32) -> bool {
    *r == defaults::BUM_RATE_PPS
}

fn default_aging() -> u64 {
    defaults::MAC_AGING_SECS
}
fn default_mac_limit() -> usize {
    defaults::MAC_LIMIT
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

impl PortKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [PortKind; 5] = [PortKind::Tap, PortKind::Afxdp, PortKind::Afpacket, PortKind::Pcap, PortKind::Mem];

    /// The kind's name in the configuration language.
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::Tap => "tap",
            PortKind::Afxdp => "afxdp",
            PortKind::Afpacket => "afpacket",
            PortKind::Pcap => "pcap",
            PortKind::Mem => "mem",
        }
    }

    /// The kind called `name` in the configuration language.
    pub fn from_name(name: &str) -> Option<PortKind> {
        PortKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the kind works on a kernel interface, so `ifname` is required.
    pub fn needs_ifname(self) -> bool {
        matches!(self, PortKind::Tap | PortKind::Afxdp | PortKind::Afpacket)
    }
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[port]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Unique name.
    pub name: String,
    /// Back-end.
    pub kind: PortKind,
    /// Kernel interface to create (tap) or attach to (afxdp, afpacket).
    #[serde(default)]
    pub ifname: Option<String>,
    /// The network this is an access port of; exactly one of `network` and `address` is set.
    #[serde(default)]
    pub network: Option<String>,
    /// The switch's own address on the link, with the link's prefix length (host bits kept): a routed port.
    #[serde(default)]
    pub address: Option<Ipv4Net>,
    /// A routed port's MAC (unicast, unique); derived from the port's name when absent (see
    /// [`crate::topology`]).
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// IP MTU of the link ([`limits::MTU`]).
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// `tap` only: the existing named network namespace to move the tap into.
    #[serde(default)]
    pub netns: Option<String>,
    /// `afxdp` only: how the XDP program is attached ([`PortConfig::xdp_mode`] gives the default).
    #[serde(default)]
    pub mode: Option<XdpMode>,
    /// `afxdp`, `afpacket`, `tap`: queues (and workers' rx rings) to use ([`limits::QUEUES`];
    /// [`PortConfig::queue_count`] gives the default).
    #[serde(default)]
    pub queues: Option<u16>,
    /// An access port of an overlay network: the MAC of the endpoint (container interface) behind it, which
    /// `vswitch-agent` registers in etcd so the other hosts reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_mac: Option<MacAddr>,
    /// With `endpoint_mac`: the endpoint's IPv4 address (inside the network's subnet), registered with it (the
    /// other hosts answer ARP for it locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_ip: Option<Ipv4Addr>,
}

impl PortConfig {
    /// The XDP attach mode: as configured, else [`XdpMode::Auto`].
    pub fn xdp_mode(&self) -> XdpMode {
        self.mode.unwrap_or(XdpMode::Auto)
    }

    /// The number of queues: as configured, else [`defaults::QUEUES`].
    pub fn queue_count(&self) -> u16 {
        self.queues.unwrap_or(defaults::QUEUES)
    }
}

/// `[[port]] mode`: how an AF_XDP port attaches its XDP program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode if the driver supports it, else generic.
    #[default]
    Auto,
    /// Driver mode only (fails if unsupported).
    Native,
    /// Generic (SKB) mode.
    Generic,
}

impl XdpMode {
    /// Every mode, in the order the documentation lists them.
    pub const ALL: [XdpMode; 3] = [XdpMode::Auto, XdpMode::Native, XdpMode::Generic];

    /// The mode's name in the configuration language.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// `[[publish]] proto`: a published port's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl PublishProto {
    /// The protocol's name in the configuration language.
    pub fn as_str(self) -> &'static str {
        match self {
            PublishProto::Tcp => "tcp",
            PublishProto::Udp => "udp",
        }
    }
}

impl fmt::Display for PublishProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[publish]]`: connections to a routed port's address on `external_port` are sent to `to` (DNAT), like
/// `docker run -p 8080:80`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// The routed port whose address is published.
    pub port: String,
    /// The protocol.
    pub proto: PublishProto,
    /// The port on the routed port's address ([`limits::EXTERNAL_PORT`]).
    pub external_port: u16,
    /// Where connections go: an address inside a network that has a gateway, and a port (not 0).
    pub to: SocketAddrV4,
}

/// `[nat]`: masquerade settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    /// The external ports (and ICMP echo identifiers) masquerade hands out, written `"A-B"` (default
    /// `"1024-65535"`).
    #[serde(default, with = "port_range_text")]
    pub port_range: PortRange,
}

/// A [`PortRange`] as `"A-B"` in the configuration's serde form.
mod port_range_text {
    use crate::snat::PortRange;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &PortRange, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(r)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PortRange, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `[conntrack]`: the connection-tracking table's size, TCP policy and timeouts (seconds; defaults are
/// netfilter's, see [`Timeouts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConntrackTableConfig {
    /// Most tracked connections ([`limits::CONNTRACK_LIMIT`]).
    pub limit: usize,
    /// TCP policy: `false` (netfilter's loose default) picks up connections mid-stream; `true` refuses them.
    pub tcp_strict: bool,
    /// TCP SYN_SENT.
    pub tcp_syn_sent_secs: u64,
    /// TCP SYN_RECV.
    pub tcp_syn_recv_secs: u64,
    /// TCP ESTABLISHED.
    pub tcp_established_secs: u64,
    /// TCP FIN_WAIT.
    pub tcp_fin_wait_secs: u64,
    /// TCP CLOSE_WAIT.
    pub tcp_close_wait_secs: u64,
    /// TCP LAST_ACK.
    pub tcp_last_ack_secs: u64,
    /// TCP TIME_WAIT.
    pub tcp_time_wait_secs: u64,
    /// TCP CLOSE (after a RST).
    pub tcp_close_secs: u64,
    /// UDP, no reply seen yet.
    pub udp_secs: u64,
    /// UDP, replies seen.
    pub udp_assured_secs: u64,
    /// ICMP echo.
    pub icmp_secs: u64,
}

impl Default for ConntrackTableConfig {
    fn default() -> Self {
        let t = Timeouts::default();
        let s = |n: Nanos| n / NANOS_PER_SEC;
        ConntrackTableConfig {
            limit: defaults::CONNTRACK_LIMIT,
            tcp_strict: false,
            tcp_syn_sent_secs: s(t.tcp_syn_sent),
            tcp_syn_recv_secs: s(t.tcp_syn_recv),
            tcp_established_secs: s(t.tcp_established),
            tcp_fin_wait_secs: s(t.tcp_fin_wait),
            tcp_close_wait_secs: s(t.tcp_close_wait),
            tcp_last_ack_secs: s(t.tcp_last_ack),
            tcp_time_wait_secs: s(t.tcp_time_wait),
            tcp_close_secs: s(t.tcp_close),
            udp_secs: s(t.udp_unreplied),
            udp_assured_secs: s(t.udp_assured),
            icmp_secs: s(t.icmp),
        }
    }
}

impl ConntrackTableConfig {
    /// The timeout keys with their values, in documentation order.
    pub fn timeouts_secs(&self) -> [(&'static str, u64); 11] {
        [
            ("tcp_syn_sent_secs", self.tcp_syn_sent_secs),
            ("tcp_syn_recv_secs", self.tcp_syn_recv_secs),
            ("tcp_established_secs", self.tcp_established_secs),
            ("tcp_fin_wait_secs", self.tcp_fin_wait_secs),
            ("tcp_close_wait_secs", self.tcp_close_wait_secs),
            ("tcp_last_ack_secs", self.tcp_last_ack_secs),
            ("tcp_time_wait_secs", self.tcp_time_wait_secs),
            ("tcp_close_secs", self.tcp_close_secs),
            ("udp_secs", self.udp_secs),
            ("udp_assured_secs", self.udp_assured_secs),
            ("icmp_secs", self.icmp_secs),
        ]
    }

    /// The table's tunables as [`crate::conntrack`] takes them.
    pub fn table_config(&self) -> ConntrackConfig {
        let ns = |secs: u64| secs.saturating_mul(NANOS_PER_SEC);
        ConntrackConfig {
            limit: self.limit,
            strict: self.tcp_strict,
            timeouts: Timeouts {
                tcp_syn_sent: ns(self.tcp_syn_sent_secs),
                tcp_syn_recv: ns(self.tcp_syn_recv_secs),
                tcp_established: ns(self.tcp_established_secs),
                tcp_fin_wait: ns(self.tcp_fin_wait_secs),
                tcp_close_wait: ns(self.tcp_close_wait_secs),
                tcp_last_ack: ns(self.tcp_last_ack_secs),
                tcp_time_wait: ns(self.tcp_time_wait_secs),
                tcp_close: ns(self.tcp_close_secs),
                udp_unreplied: ns(self.udp_secs),
                udp_assured: ns(self.udp_assured_secs),
                icmp: ns(self.icmp_secs),
            },
        }
    }
}

fn default_mtu() -> u16 {
    defaults::MTU
}

/// `[[route]]`: a static route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination prefix (no host bits set; unique among routes).
    pub prefix: Ipv4Net,
    /// The next hop: a neighbour in a connected subnet, not one of the switch's own addresses.
    pub via: Ipv4Addr,
    /// The routed port to leave by; when absent, the router interface whose subnet holds `via`.
    #[serde(default)]
    pub port: Option<String>,
}

/// A configuration that could not be read or is not valid.
///
/// When there are several errors, `origin` and `line` are those of the first, and `message` continues after
/// the first one's text with the others, one per line, each as `ORIGIN:LINE: MESSAGE` (see the module
/// documentation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file (or other source) the text came from.
    pub origin: String,
    /// 1-based line of the offending value, or of the table's header when a field is missing.
    pub line: Option<usize>,
    /// What is wrong, naming the object and the field.
    pub message: String,
}

impl Config {
    /// Reads and validates a configuration file; errors name the file as given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &origin)
    }

    /// Parses and validates configuration text; `origin` names it in errors. All errors are reported, joined
    /// into one [`ConfigError`] (see the module documentation).
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_all_errors(text, origin).map_err(|errors| join(errors, origin))
    }

    /// Parses and validates configuration text, returning every error separately, sorted by line.
    pub fn parse_all_errors(text: &str, origin: &str) -> Result<Config, Vec<ConfigError>> {
        let index = LineIndex::new(text);
        let raw: RawDoc = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => return Err(vec![fatal(text, &index, origin, &e)]),
        };
        let (cfg, mut diags) = convert(raw, &index);
        check(&cfg, &mut diags);
        diags.finish(origin).map(|()| cfg)
    }

    /// Checks a configuration built in code or deserialized directly (e.g. from JSON); errors carry no line.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let mut diags = Diags::default();
        check(self, &mut diags);
        diags.finish(origin).map_err(|errors| join(errors, origin))
    }

    /// Index of the network called `name`.
    pub fn network_index(&self, name: &str) -> Option<usize> {
        self.networks.iter().position(|n| n.name == name)
    }

    /// Index of the port called `name`.
    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }
}

/// One error from a list, with the rest appended to its message (at most [`MAX_LISTED_ERRORS`] in all).
fn join(errors: Vec<ConfigError>, origin: &str) -> ConfigError {
    let total = errors.len();
    let mut iter = errors.into_iter();
    let Some(mut first) = iter.next() else {
        return ConfigError { origin: origin.to_string(), line: None, message: "invalid configuration".to_string() };
    };
    for e in iter.by_ref().take(MAX_LISTED_ERRORS - 1) {
        first.message.push('\n');
        first.message.push_str(&e.to_string());
    }
    if total > MAX_LISTED_ERRORS {
        first.message.push_str(&format!("\n{origin}: … and {} more errors", total - MAX_LISTED_ERRORS));
    }
    first
}

// ---------------------------------------------------------------------------------------------------------
// Raw, spanned form: what serde sees. Only the shape (tables, arrays, known keys) is checked by serde; every
// value is taken as a `Scalar` of any type and typed by `convert`, which knows which object and field it is.
// ---------------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoc {
    #[serde(default)]
    switch: Option<OnlyTable<RawSwitch>>,
    #[serde(default)]
    network: ArrayOfTables<RawNetwork>,
    #[serde(default)]
    port: ArrayOfTables<RawPort>,
    #[serde(default)]
    route: ArrayOfTables<RawRoute>,
    #[serde(default)]
    publish: ArrayOfTables<RawPublish>,
    #[serde(default)]
    nat: Option<OnlyTable<RawNat>>,
    #[serde(default)]
    conntrack: Option<OnlyTable<RawConntrack>>,
    #[serde(default)]
    cluster: Option<Spanned<OnlyTable<RawCluster>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwitch {
    workers: Option<Spanned<Scalar>>,
    poll_idle_us: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    port: Option<Spanned<Scalar>>,
    proto: Option<Spanned<Scalar>>,
    external_port: Option<Spanned<Scalar>>,
    to: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNat {
    port_range: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConntrack {
    limit: Option<Spanned<Scalar>>,
    tcp_strict: Option<Spanned<Scalar>>,
    tcp_syn_sent_secs: Option<Spanned<Scalar>>,
    tcp_syn_recv_secs: Option<Spanned<Scalar>>,
    tcp_established_secs: Option<Spanned<Scalar>>,
    tcp_fin_wait_secs: Option<Spanned<Scalar>>,
    tcp_close_wait_secs: Option<Spanned<Scalar>>,
    tcp_last_ack_secs: Option<Spanned<Scalar>>,
    tcp_time_wait_secs: Option<Spanned<Scalar>>,
    tcp_close_secs: Option<Spanned<Scalar>>,
    udp_secs: Option<Spanned<Scalar>>,
    udp_assured_secs: Option<Spanned<Scalar>>,
    icmp_secs: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    name: Option<Spanned<Scalar>>,
    subnet: Option<Spanned<Scalar>>,
    gateway: Option<Spanned<Scalar>>,
    gateway_mac: Option<Spanned<Scalar>>,
    internal: Option<Spanned<Scalar>>,
    masquerade: Option<Spanned<Scalar>>,
    mac_aging_secs: Option<Spanned<Scalar>>,
    mac_limit: Option<Spanned<Scalar>>,
    scope: Option<Spanned<Scalar>>,
    vni: Option<Spanned<Scalar>>,
    bum_rate_pps: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: Option<Spanned<Scalar>>,
    kind: Option<Spanned<Scalar>>,
    ifname: Option<Spanned<Scalar>>,
    network: Option<Spanned<Scalar>>,
    address: Option<Spanned<Scalar>>,
    mac: Option<Spanned<Scalar>>,
    mtu: Option<Spanned<Scalar>>,
    netns: Option<Spanned<Scalar>>,
    mode: Option<Spanned<Scalar>>,
    queues: Option<Spanned<Scalar>>,
    endpoint_mac: Option<Spanned<Scalar>>,
    endpoint_ip: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Option<Spanned<Scalar>>,
    host: Option<Spanned<Scalar>>,
    etcd: Option<Spanned<Scalar>>,
    lease_ttl_secs: Option<Spanned<Scalar>>,
    vtep_port: Option<Spanned<Scalar>>,
    vxlan_udp_port: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: Option<Spanned<Scalar>>,
    via: Option<Spanned<Scalar>>,
    port: Option<Spanned<Scalar>>,
}

/// How a table is written, for error messages.
trait TableKind {
    /// The key of the table (or array of tables).
    const KEY: &'static str;
    /// "a [KEY] table", or "a [[KEY]] table".
    const EXPECTING: &'static str;
}
impl TableKind for RawSwitch {
    const KEY: &'static str = "switch";
    const EXPECTING: &'static str = "a [switch] table";
}
impl TableKind for RawNetwork {
    const KEY: &'static str = "network";
    const EXPECTING: &'static str = "a [[network]] table";
}
impl TableKind for RawPort {
    const KEY: &'static str = "port";
    const EXPECTING: &'static str = "a [[port]] table";
}
impl TableKind for RawRoute {
    const KEY: &'static str = "route";
    const EXPECTING: &'static str = "a [[route]] table";
}
impl TableKind for RawPublish {
    const KEY: &'static str = "publish";
    const EXPECTING: &'static str = "a [[publish]] table";
}
impl TableKind for RawNat {
    const KEY: &'static str = "nat";
    const EXPECTING: &'static str = "a [nat] table";
}
impl TableKind for RawConntrack {
    const KEY: &'static str = "conntrack";
    const EXPECTING: &'static str = "a [conntrack] table";
}
impl TableKind for RawCluster {
    const KEY: &'static str = "cluster";
    const EXPECTING: &'static str = "a [cluster] table";
}

/// A struct that may only be written as a table: serde's derived `Deserialize` would also take a struct from an
/// array (`[[switch]]`, `port = [[1, 2]]`), field by field in order.
struct OnlyTable<T>(T);

impl<'de, T: Deserialize<'de> + TableKind> Deserialize<'de> for OnlyTable<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + TableKind> Visitor<'de> for V<T> {
            type Value = OnlyTable<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(OnlyTable)
            }
        }
        deserializer.deserialize_map(V(PhantomData))
    }
}

/// `[[KEY]]` tables, each with its span; says what it expected when given something else (e.g. `[port]`).
struct ArrayOfTables<T>(Vec<Spanned<OnlyTable<T>>>);

impl<T> Default for ArrayOfTables<T> {
    fn default() -> Self {
        ArrayOfTables(Vec::new())
    }
}

impl<'de, T: Deserialize<'de> + TableKind> Deserialize<'de> for ArrayOfTables<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + TableKind> Visitor<'de> for V<T> {
            type Value = ArrayOfTables<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of tables: write [[{}]], not [{}]", T::KEY, T::KEY)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(ArrayOfTables(items))
            }
        }
        deserializer.deserialize_seq(V(PhantomData))
    }
}

/// Any TOML value, as found; arrays and tables are only recognised, not kept.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Scalar>),
    Table,
}

/// The key under which toml hands a datetime to a visitor (toml_datetime's private protocol).
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Scalar>()? {
                    items.push(item);
                }
                Ok(Scalar::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                let mut datetime = None;
                let mut first = true;
                while let Some(key) = map.next_key::<String>()? {
                    if first && key == TOML_DATETIME_KEY {
                        datetime = Some(map.next_value::<String>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                        datetime = None;
                    }
                    first = false;
                }
                Ok(datetime.map_or(Scalar::Table, Scalar::Datetime))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl Scalar {
    /// "string \"x\"", "integer 5", … for "found …" in messages.
    fn describe(&self) -> String {
        match self {
            Scalar::Str(s) => format!("string {}", show(s)),
            Scalar::Int(i) => format!("integer {i}"),
            Scalar::Float(x) => format!("float {x}"),
            Scalar::Bool(b) => format!("boolean {b}"),
            Scalar::Datetime(d) => format!("datetime {}", truncate(d)),
            Scalar::Array(_) => "an array".to_string(),
            Scalar::Table => "a table".to_string(),
        }
    }
}

/// A lenient reading used only to say which object a fatal error is in.
#[derive(Deserialize)]
struct LenientDoc {
    #[serde(default)]
    network: Vec<Spanned<LenientObject>>,
    #[serde(default)]
    port: Vec<Spanned<LenientObject>>,
    #[serde(default)]
    route: Vec<Spanned<LenientRoute>>,
    #[serde(default)]
    publish: Vec<Spanned<IgnoredAny>>,
}

#[derive(Deserialize)]
struct LenientObject {
    #[serde(default)]
    name: Option<Scalar>,
}

#[derive(Deserialize)]
struct LenientRoute {
    #[serde(default)]
    prefix: Option<Scalar>,
}

/// Byte offset to 1-based line.
struct LineIndex {
    newlines: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        LineIndex { newlines: text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i).collect() }
    }

    fn line(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < offset) + 1
    }
}

/// The error for text toml or serde refused: syntax, unknown keys, misshapen tables.
fn fatal(text: &str, index: &LineIndex, origin: &str, e: &toml::de::Error) -> ConfigError {
    let start = e.span().map(|s| s.start);
    let mut message = e.message().trim().replace('\n', "; ");
    if message.is_empty() {
        message = "invalid TOML".to_string();
    }
    if message.contains("expected a borrowed string") {
        // toml cannot give a span to a table made by a dotted key (`mtu.x = 1`) where a value is expected.
        message = "a dotted key cannot set this field: it takes a single value, not a table".to_string();
    }
    if let Some(object) = start.and_then(|s| object_at(text, s)) {
        message = format!("{object}: {message}");
    }
    ConfigError { origin: origin.to_string(), line: start.map(|s| index.line(s)), message }
}

/// "port c1" (or "port #2") when `offset` lies inside a `[[network]]`, `[[port]]` or `[[route]]` table.
fn object_at(text: &str, offset: usize) -> Option<String> {
    let doc: LenientDoc = toml::from_str(text).ok()?;
    if let Some((i, route)) = doc.route.iter().enumerate().find(|(_, r)| r.span().contains(&offset)) {
        let prefix = match &route.get_ref().prefix {
            Some(Scalar::Str(s)) => s.parse().ok(),
            _ => None,
        };
        return Some(route_named(i, prefix));
    }
    if let Some(i) = doc.publish.iter().position(|p| p.span().contains(&offset)) {
        return Some(publish_named(i));
    }
    let lists = [("network", &doc.network, limits::NETWORK_NAME_MAX), ("port", &doc.port, limits::PORT_NAME_MAX)];
    for (what, list, max) in lists {
        for (i, object) in list.iter().enumerate() {
            if object.span().contains(&offset) {
                let name = match &object.get_ref().name {
                    Some(Scalar::Str(s)) => s.as_str(),
                    _ => "",
                };
                return Some(named(what, i, name, max));
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------------------
// Diagnostics
// ---------------------------------------------------------------------------------------------------------

/// An object of the configuration, by position (ordered as the objects are numbered without lines: switch,
/// networks, ports, routes, publish rules, nat, conntrack).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Obj {
    Switch,
    Network(usize),
    Port(usize),
    Route(usize),
    Publish(usize),
    Nat,
    Conntrack,
    Cluster,
}

/// Collected errors, with the lines of tables and values (none for a configuration built in code) and the
/// fields whose value was unusable (rules about them are skipped).
#[derive(Default)]
struct Diags {
    tables: HashMap<Obj, usize>,
    fields: HashMap<(Obj, &'static str), usize>,
    broken: HashSet<(Obj, &'static str)>,
    errors: Vec<(Option<usize>, String)>,
}

impl Diags {
    /// The line of `field` of `obj`, or of its table when the field is not written.
    fn line(&self, obj: Obj, field: &'static str) -> Option<usize> {
        self.fields.get(&(obj, field)).or_else(|| self.tables.get(&obj)).copied()
    }

    fn is_broken(&self, obj: Obj, field: &'static str) -> bool {
        self.broken.contains(&(obj, field))
    }

    /// Reports a problem with `field` of `obj`, unless that field's value was already unusable.
    fn report(&mut self, obj: Obj, field: &'static str, label: &str, message: String) {
        if !self.is_broken(obj, field) {
            self.errors.push((self.line(obj, field), format!("{label}: {message}")));
        }
    }

    /// Reports an unusable value; later rules about `field` are skipped.
    fn report_broken(&mut self, obj: Obj, field: &'static str, label: &str, message: String) {
        self.report(obj, field, label, message);
        self.broken.insert((obj, field));
    }

    /// `label` followed by " (line N)" when known: names another object in a message.
    fn other(&self, obj: Obj, label: String) -> String {
        match self.tables.get(&obj) {
            Some(line) => format!("{label} (line {line})"),
            None => label,
        }
    }

    /// Where `obj` is in the file (objects built in code: in the order of [`Obj`]), to tell which of two
    /// objects comes later.
    fn position(&self, obj: Obj) -> (usize, Obj) {
        (self.tables.get(&obj).copied().unwrap_or(usize::MAX), obj)
    }

    fn finish(mut self, origin: &str) -> Result<(), Vec<ConfigError>> {
        if self.errors.is_empty() {
            return Ok(());
        }
        self.errors.sort_by_key(|(line, _)| line.unwrap_or(usize::MAX));
        Err(self
            .errors
            .into_iter()
            .map(|(line, message)| ConfigError { origin: origin.to_string(), line, message })
            .collect())
    }
}

/// "port c1", or "port #2" when the name is not a valid one (it is reported separately).
fn named(what: &str, index: usize, name: &str, max: usize) -> String {
    if name_problem(name, max).is_none() {
        format!("{what} {name}")
    } else {
        format!("{what} #{}", index + 1)
    }
}

/// "route 10.0.0.0/8" (the prefix as written), or "route #2" when the prefix is missing or unusable.
fn route_named(index: usize, prefix: Option<Ipv4Net>) -> String {
    match prefix {
        Some(prefix) => format!("route {prefix}"),
        None => format!("route #{}", index + 1),
    }
}

fn label(cfg: &Config, d: &Diags, obj: Obj) -> String {
    match obj {
        Obj::Switch => "switch".to_string(),
        Obj::Network(i) => {
            named("network", i, cfg.networks.get(i).map_or("", |n| n.name.as_str()), limits::NETWORK_NAME_MAX)
        }
        Obj::Port(i) => named("port", i, cfg.ports.get(i).map_or("", |p| p.name.as_str()), limits::PORT_NAME_MAX),
        Obj::Route(i) => route_named(i, cfg.routes.get(i).map(|r| r.prefix).filter(|_| !d.is_broken(obj, "prefix"))),
        Obj::Publish(i) => publish_named(i),
        Obj::Nat => "nat".to_string(),
        Obj::Conntrack => "conntrack".to_string(),
        Obj::Cluster => "cluster".to_string(),
    }
}

/// "publish #2": publish rules have no name; they are counted from 1 in file order.
fn publish_named(index: usize) -> String {
    format!("publish #{}", index + 1)
}

/// Longest part of a user's string quoted in a message, in characters.
const SHOW_MAX: usize = 40;

fn truncate(s: &str) -> String {
    if s.chars().count() > SHOW_MAX {
        format!("{}…", s.chars().take(SHOW_MAX).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A user's string, quoted and escaped, shortened if long.
fn show(s: &str) -> String {
    if s.chars().count() > SHOW_MAX {
        format!("{:?}…", s.chars().take(SHOW_MAX).collect::<String>())
    } else {
        format!("{s:?}")
    }
}

fn out_of_range<T: fmt::Display>(field: &str, value: impl fmt::Display, range: &RangeInclusive<T>) -> String {
    format!("{field} {value} is out of range {}..={}", range.start(), range.end())
}

fn kinds_list() -> String {
    PortKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

/// What is wrong with a network or port name, as "name …".
fn name_problem(name: &str, max: usize) -> Option<String> {
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() {
        Some("name must not be empty".to_string())
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Some(format!("name {} may only contain letters, digits, '_', '.' and '-'", show(name)))
    } else if !first_ok {
        Some(format!("name {} must start with a letter or digit", show(name)))
    } else if name.len() > max {
        Some(format!("name {} is longer than {max} characters", show(name)))
    } else {
        None
    }
}

/// What is wrong with an interface name, as "ifname …" (the rules of Linux's `dev_valid_name`).
fn ifname_problem(ifname: &str) -> Option<String> {
    if ifname.is_empty() {
        Some("ifname must not be empty".to_string())
    } else if ifname.len() > limits::IFNAME_MAX {
        Some(format!("ifname {} is longer than {} bytes", show(ifname), limits::IFNAME_MAX))
    } else if ifname == "." || ifname == ".." {
        Some(format!("ifname {} is not a valid interface name", show(ifname)))
    } else if ifname.chars().any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace()) {
        Some(format!("ifname {} must not contain '/', ':', whitespace or NUL", show(ifname)))
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------------------
// Raw → typed: every value gets its type checked, its line recorded; unusable values become placeholders
// marked broken.
// ---------------------------------------------------------------------------------------------------------

struct Converter<'a> {
    index: &'a LineIndex,
    diags: Diags,
}

impl Converter<'_> {
    /// Records where `field` is and hands back its value.
    fn take(&mut self, obj: Obj, field: &'static str, value: Option<Spanned<Scalar>>) -> Option<Scalar> {
        let value = value?;
        self.diags.fields.insert((obj, field), self.index.line(value.span().start));
        Some(value.into_inner())
    }

    fn wrong_type(&mut self, obj: Obj, field: &'static str, label: &str, expected: &str, found: &Scalar) {
        let message = format!("{field} must be {expected}, found {}", found.describe());
        self.diags.report_broken(obj, field, label, message);
    }

    fn string(&mut self, obj: Obj, field: &'static str, label: &str, value: Option<Spanned<Scalar>>) -> Option<String> {
        match self.take(obj, field, value)? {
            Scalar::Str(s) => Some(s),
            other => {
                self.wrong_type(obj, field, label, "a string", &other);
                None
            }
        }
    }

    fn boolean(&mut self, obj: Obj, field: &'static str, label: &str, value: Option<Spanned<Scalar>>) -> Option<bool> {
        match self.take(obj, field, value)? {
            Scalar::Bool(b) => Some(b),
            other => {
                self.wrong_type(obj, field, label, "a boolean", &other);
                None
            }
        }
    }

    /// An integer of type `T`; one that does not fit `T` is reported against `range`, as the rule would.
    fn integer<T>(
        &mut self,
        obj: Obj,
        field: &'static str,
        label: &str,
        value: Option<Spanned<Scalar>>,
        range: &RangeInclusive<T>,
    ) -> Option<T>
    where
        T: TryFrom<i64> + fmt::Display,
    {
        match self.take(obj, field, value)? {
            Scalar::Int(i) => match T::try_from(i) {
                Ok(v) => Some(v),
                Err(_) => {
                    self.diags.report_broken(obj, field, label, out_of_range(field, i, range));
                    None
                }
            },
            other => {
                self.wrong_type(obj, field, label, "an integer", &other);
                None
            }
        }
    }

    /// A string parsed as `T`; `what` completes "… is not …".
    fn parsed<T: FromStr>(
        &mut self,
        obj: Obj,
        field: &'static str,
        label: &str,
        value: Option<Spanned<Scalar>>,
        what: &str,
    ) -> Option<T> {
        match self.take(obj, field, value)? {
            Scalar::Str(s) => match s.parse() {
                Ok(v) => Some(v),
                Err(_) => {
                    self.diags.report_broken(obj, field, label, format!("{field} {} is not {what}", show(&s)));
                    None
                }
            },
            other => {
                self.wrong_type(obj, field, label, &format!("a string holding {what}"), &other);
                None
            }
        }
    }

    /// The `name` field, required; an unusable one becomes "" (so the object is labelled by position).
    fn name(&mut self, obj: Obj, what: &str, index: usize, value: Option<Spanned<Scalar>>) -> String {
        let position = format!("{what} #{}", index + 1);
        if value.is_none() {
            self.diags.report_broken(obj, "name", &position, "missing field \"name\"".to_string());
        }
        self.string(obj, "name", &position, value).unwrap_or_default()
    }

    fn table(&mut self, obj: Obj, span: std::ops::Range<usize>) {
        self.diags.tables.insert(obj, self.index.line(span.start));
    }

    fn network(&mut self, i: usize, raw: Spanned<OnlyTable<RawNetwork>>) -> NetworkConfig {
        let obj = Obj::Network(i);
        self.table(obj, raw.span());
        let raw = raw.into_inner().0;
        let name = self.name(obj, "network", i, raw.name);
        let label = named("network", i, &name, limits::NETWORK_NAME_MAX);
        NetworkConfig {
            subnet: self.parsed(obj, "subnet", &label, raw.subnet, WHAT_SUBNET),
            gateway: self.parsed(obj, "gateway", &label, raw.gateway, "an IPv4 address"),
            gateway_mac: self.parsed(obj, "gateway_mac", &label, raw.gateway_mac, WHAT_MAC),
            internal: self.boolean(obj, "internal", &label, raw.internal).unwrap_or(false),
            masquerade: self.boolean(obj, "masquerade", &label, raw.masquerade).unwrap_or(false),
            mac_aging_secs: self
                .integer(obj, "mac_aging_secs", &label, raw.mac_aging_secs, &limits::MAC_AGING_SECS)
                .unwrap_or(defaults::MAC_AGING_SECS),
            mac_limit: self
                .integer(obj, "mac_limit", &label, raw.mac_limit, &limits::MAC_LIMIT)
                .unwrap_or(defaults::MAC_LIMIT),
            scope: self.string(obj, "scope", &label, raw.scope).map_or(Scope::Local, |v| match v.as_str() {
                "local" => Scope::Local,
                "overlay" => Scope::Overlay,
                _ => {
                    let message = format!("scope {} is not one of local, overlay", show(&v));
                    self.diags.report_broken(obj, "scope", &label, message);
                    Scope::Local
                }
            }),
            vni: self.integer(obj, "vni", &label, raw.vni, &limits::VNI),
            bum_rate_pps: self
                .integer(obj, "bum_rate_pps", &label, raw.bum_rate_pps, &limits::BUM_RATE_PPS)
                .unwrap_or(defaults::BUM_RATE_PPS),
            name,
        }
    }

    fn cluster(&mut self, raw: Spanned<OnlyTable<RawCluster>>) -> ClusterConfig {
        let (obj, label) = (Obj::Cluster, "cluster");
        self.table(obj, raw.span());
        let raw = raw.into_inner().0;
        for (field, present, what) in [
            ("name", raw.name.is_some(), "the cluster's name"),
            ("host", raw.host.is_some(), "this host's name in the cluster"),
            ("etcd", raw.etcd.is_some(), "etcd client URLs like [\"http://198.51.100.11:2379\"]"),
            ("vtep_port", raw.vtep_port.is_some(), "the routed port whose address is the VTEP"),
        ] {
            if !present {
                self.diags.report_broken(obj, field, label, format!("missing field \"{field}\" ({what})"));
            }
        }
        let etcd = match self.take(obj, "etcd", raw.etcd) {
            None => Vec::new(),
            Some(Scalar::Array(items)) => {
                let mut urls = Vec::new();
                for item in items {
                    match item {
                        Scalar::Str(u) => urls.push(u),
                        other => {
                            self.wrong_type(obj, "etcd", label, "an array of strings", &other);
                            break;
                        }
                    }
                }
                urls
            }
            Some(other) => {
                self.wrong_type(obj, "etcd", label, "an array of URL strings", &other);
                Vec::new()
            }
        };
        ClusterConfig {
            name: self.string(obj, "name", label, raw.name).unwrap_or_default(),
            host: self.string(obj, "host", label, raw.host).unwrap_or_default(),
            etcd,
            lease_ttl_secs: self
                .integer(obj, "lease_ttl_secs", label, raw.lease_ttl_secs, &limits::LEASE_TTL_SECS)
                .unwrap_or(defaults::LEASE_TTL_SECS),
            vtep_port: self.string(obj, "vtep_port", label, raw.vtep_port).unwrap_or_default(),
            vxlan_udp_port: self
                .integer(obj, "vxlan_udp_port", label, raw.vxlan_udp_port, &limits::VXLAN_UDP_PORT)
                .unwrap_or(defaults::VXLAN_UDP_PORT),
        }
    }

    fn port(&mut self, i: usize, raw: Spanned<OnlyTable<RawPort>>) -> PortConfig {
        let obj = Obj::Port(i);
        self.table(obj, raw.span());
        let raw = raw.into_inner().0;
        let name = self.name(obj, "port", i, raw.name);
        let label = named("port", i, &name, limits::PORT_NAME_MAX);
        if raw.kind.is_none() {
            let message = format!("missing field \"kind\" (one of {})", kinds_list());
            self.diags.report_broken(obj, "kind", &label, message);
        }
        let kind = self.string(obj, "kind", &label, raw.kind).and_then(|k| match PortKind::from_name(&k) {
            Some(kind) => Some(kind),
            None => {
                let message = format!("kind {} is not one of {}", show(&k), kinds_list());
                self.diags.report_broken(obj, "kind", &label, message);
                None
            }
        });
        PortConfig {
            kind: kind.unwrap_or(PortKind::Mem),
            ifname: self.string(obj, "ifname", &label, raw.ifname),
            network: self.string(obj, "network", &label, raw.network),
            address: self.parsed(obj, "address", &label, raw.address, WHAT_ADDRESS),
            mac: self.parsed(obj, "mac", &label, raw.mac, WHAT_MAC),
            mtu: self.integer(obj, "mtu", &label, raw.mtu, &limits::MTU).unwrap_or(defaults::MTU),
            netns: self.string(obj, "netns", &label, raw.netns),
            mode: self.string(obj, "mode", &label, raw.mode).and_then(|m| {
                let mode = XdpMode::ALL.into_iter().find(|x| x.as_str() == m);
                if mode.is_none() {
                    let message = format!("mode {} is not one of auto, native, generic", show(&m));
                    self.diags.report_broken(obj, "mode", &label, message);
                }
                mode
            }),
            queues: self.integer(obj, "queues", &label, raw.queues, &limits::QUEUES),
            endpoint_mac: self.parsed(obj, "endpoint_mac", &label, raw.endpoint_mac, WHAT_MAC),
            endpoint_ip: self.parsed(obj, "endpoint_ip", &label, raw.endpoint_ip, "an IPv4 address"),
            name,
        }
    }

    fn publish(&mut self, i: usize, raw: Spanned<OnlyTable<RawPublish>>) -> PublishConfig {
        let obj = Obj::Publish(i);
        self.table(obj, raw.span());
        let raw = raw.into_inner().0;
        let label = publish_named(i);
        for (field, present, what) in [
            ("port", raw.port.is_some(), "the routed port whose address is published"),
            ("proto", raw.proto.is_some(), "tcp or udp"),
            ("external_port", raw.external_port.is_some(), "the port on the routed port's address"),
            ("to", raw.to.is_some(), "the internal \"A.B.C.D:PORT\""),
        ] {
            if !present {
                self.diags.report_broken(obj, field, &label, format!("missing field \"{field}\" ({what})"));
            }
        }
        let proto = self.string(obj, "proto", &label, raw.proto).and_then(|p| match p.as_str() {
            "tcp" => Some(PublishProto::Tcp),
            "udp" => Some(PublishProto::Udp),
            _ => {
                let message = format!("proto {} is not one of tcp, udp", show(&p));
                self.diags.report_broken(obj, "proto", &label, message);
                None
            }
        });
        PublishConfig {
            port: self.string(obj, "port", &label, raw.port).unwrap_or_default(),
            proto: proto.unwrap_or(PublishProto::Tcp),
            external_port: self
                .integer(obj, "external_port", &label, raw.external_port, &limits::EXTERNAL_PORT)
                .unwrap_or(0),
            to: self
                .parsed(obj, "to", &label, raw.to, "an IPv4 address and port like \"172.17.0.2:80\"")
                .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        }
    }

    fn nat(&mut self, raw: RawNat) -> NatConfig {
        let what = "a port range like \"1024-65535\" (A-B with 1 <= A <= B <= 65535)";
        NatConfig { port_range: self.parsed(Obj::Nat, "port_range", "nat", raw.port_range, what).unwrap_or_default() }
    }

    fn conntrack(&mut self, raw: RawConntrack) -> ConntrackTableConfig {
        let (obj, label) = (Obj::Conntrack, "conntrack");
        let d = ConntrackTableConfig::default();
        let mut secs = |field: &'static str, value: Option<Spanned<Scalar>>, default: u64| {
            self.integer(obj, field, label, value, &limits::TIMEOUT_SECS).unwrap_or(default)
        };
        let timeouts = ConntrackTableConfig {
            tcp_syn_sent_secs: secs("tcp_syn_sent_secs", raw.tcp_syn_sent_secs, d.tcp_syn_sent_secs),
            tcp_syn_recv_secs: secs("tcp_syn_recv_secs", raw.tcp_syn_recv_secs, d.tcp_syn_recv_secs),
            tcp_established_secs: secs("tcp_established_secs", raw.tcp_established_secs, d.tcp_established_secs),
            tcp_fin_wait_secs: secs("tcp_fin_wait_secs", raw.tcp_fin_wait_secs, d.tcp_fin_wait_secs),
            tcp_close_wait_secs: secs("tcp_close_wait_secs", raw.tcp_close_wait_secs, d.tcp_close_wait_secs),
            tcp_last_ack_secs: secs("tcp_last_ack_secs", raw.tcp_last_ack_secs, d.tcp_last_ack_secs),
            tcp_time_wait_secs: secs("tcp_time_wait_secs", raw.tcp_time_wait_secs, d.tcp_time_wait_secs),
            tcp_close_secs: secs("tcp_close_secs", raw.tcp_close_secs, d.tcp_close_secs),
            udp_secs: secs("udp_secs", raw.udp_secs, d.udp_secs),
            udp_assured_secs: secs("udp_assured_secs", raw.udp_assured_secs, d.udp_assured_secs),
            icmp_secs: secs("icmp_secs", raw.icmp_secs, d.icmp_secs),
            ..d
        };
        ConntrackTableConfig {
            limit: self.integer(obj, "limit", label, raw.limit, &limits::CONNTRACK_LIMIT).unwrap_or(d.limit),
            tcp_strict: self.boolean(obj, "tcp_strict", label, raw.tcp_strict).unwrap_or(false),
            ..timeouts
        }
    }

    fn route(&mut self, i: usize, raw: Spanned<OnlyTable<RawRoute>>) -> RouteConfig {
        let obj = Obj::Route(i);
        self.table(obj, raw.span());
        let raw = raw.into_inner().0;
        let position = route_named(i, None);
        if raw.prefix.is_none() {
            self.diags.report_broken(obj, "prefix", &position, "missing field \"prefix\"".to_string());
        }
        let prefix = self.parsed(obj, "prefix", &position, raw.prefix, WHAT_PREFIX);
        let label = route_named(i, prefix);
        if raw.via.is_none() {
            self.diags.report_broken(obj, "via", &label, "missing field \"via\" (the next hop)".to_string());
        }
        RouteConfig {
            prefix: prefix.unwrap_or_default(),
            via: self.parsed(obj, "via", &label, raw.via, "an IPv4 address").unwrap_or(Ipv4Addr::UNSPECIFIED),
            port: self.string(obj, "port", &label, raw.port),
        }
    }
}

/// What a `[[network]] subnet` must be, for "… is not …".
const WHAT_SUBNET: &str = "an IPv4 subnet like \"172.17.0.0/16\"";
/// What a `[[route]] prefix` must be.
const WHAT_PREFIX: &str = "an IPv4 prefix like \"10.0.0.0/8\"";
/// What a `[[port]] address` must be.
const WHAT_ADDRESS: &str = "an IPv4 address with its prefix length like \"203.0.113.2/24\"";
/// What a MAC must be.
const WHAT_MAC: &str = "a MAC address like \"02:00:00:00:00:01\"";

fn convert(raw: RawDoc, index: &LineIndex) -> (Config, Diags) {
    let mut conv = Converter { index, diags: Diags::default() };
    let mut switch = SwitchConfig::default();
    if let Some(OnlyTable(s)) = raw.switch {
        let (obj, label) = (Obj::Switch, "switch");
        switch.workers = conv.integer(obj, "workers", label, s.workers, &limits::WORKERS).unwrap_or(switch.workers);
        switch.poll_idle_us = conv
            .integer(obj, "poll_idle_us", label, s.poll_idle_us, &limits::POLL_IDLE_US)
            .unwrap_or(switch.poll_idle_us);
    }
    let networks = raw.network.0.into_iter().enumerate().map(|(i, n)| conv.network(i, n)).collect();
    let ports = raw.port.0.into_iter().enumerate().map(|(i, p)| conv.port(i, p)).collect();
    let routes = raw.route.0.into_iter().enumerate().map(|(i, r)| conv.route(i, r)).collect();
    let publish = raw.publish.0.into_iter().enumerate().map(|(i, p)| conv.publish(i, p)).collect();
    let nat = raw.nat.map(|n| conv.nat(n.0)).unwrap_or_default();
    let conntrack = raw.conntrack.map(|c| conv.conntrack(c.0)).unwrap_or_default();
    let cluster = raw.cluster.map(|c| conv.cluster(c));
    let cfg = Config { switch, networks, ports, routes, publish, nat, conntrack, cluster };
    (cfg, conv.diags)
}

// ---------------------------------------------------------------------------------------------------------
// The rules, over the typed configuration (with lines when it came from text).
// ---------------------------------------------------------------------------------------------------------

/// Most names listed in "known networks: …", "routed ports: …" or "connected: …".
const LISTED_MAX: usize = 10;

/// `items` as "HEAD: a, b, c" (at most [`LISTED_MAX`], then a count), or `none` when there are none.
fn listing(head: &str, items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_string()
    } else if items.len() > LISTED_MAX {
        format!("{head}: {}, … ({} in all)", items[..LISTED_MAX].join(", "), items.len())
    } else {
        format!("{head}: {}", items.join(", "))
    }
}

/// "FIELD A.B.C.D/N has host bits set (did you mean …?)" for a subnet or prefix that has them.
fn host_bits_problem(field: &str, net: Ipv4Net) -> Option<String> {
    (net.addr() != net.network()).then(|| format!("{field} {net} has host bits set (did you mean {}?)", net.trunc()))
}

/// A router interface as the rules see it: a network's gateway or a routed port's address.
struct Rif {
    obj: Obj,
    /// The field holding its subnet: `subnet` (network) or `address` (port).
    field: &'static str,
    /// The switch's address.
    addr: Ipv4Addr,
    /// The value of `field` as written.
    written: Ipv4Net,
    /// The connected subnet (host bits cleared).
    subnet: Ipv4Net,
}

fn check(cfg: &Config, d: &mut Diags) {
    if !limits::WORKERS.contains(&cfg.switch.workers) {
        d.report(Obj::Switch, "workers", "switch", out_of_range("workers", cfg.switch.workers, &limits::WORKERS));
    }
    if !limits::POLL_IDLE_US.contains(&cfg.switch.poll_idle_us) {
        let message = out_of_range("poll_idle_us", cfg.switch.poll_idle_us, &limits::POLL_IDLE_US);
        d.report(Obj::Switch, "poll_idle_us", "switch", message);
    }
    let networks = check_networks(cfg, d);
    let ports = check_ports(cfg, d, &networks);
    let rifs = router_interfaces(cfg);
    check_overlaps(cfg, d, &rifs);
    check_macs(cfg, d);
    check_routes(cfg, d, &ports, &rifs);
    check_publish(cfg, d, &ports);
    check_conntrack(cfg, d);
    check_overlay(cfg, d, &ports);
}

/// Overlay networks, their endpoints and `[cluster]`: an overlay needs a cluster whose `vtep_port` is a routed
/// port; VNIs are unique; endpoint keys only on access ports of overlay networks, the address inside the
/// network's subnet; the cluster's names usable in etcd keys and its endpoints `http://` URLs.
fn check_overlay(cfg: &Config, d: &mut Diags, ports: &HashMap<&str, usize>) {
    let mut vnis: HashMap<u32, usize> = HashMap::new();
    for (i, n) in cfg.networks.iter().enumerate() {
        let obj = Obj::Network(i);
        let label = label(cfg, d, obj);
        if n.scope == Scope::Local {
            if let Some(vni) = n.vni {
                d.report(obj, "vni", &label, format!("vni {vni} requires scope = \"overlay\""));
            }
            continue;
        }
        if cfg.cluster.is_none() && !d.is_broken(obj, "scope") {
            let message = "scope \"overlay\" requires a [cluster] section (its vtep_port is the tunnel endpoint)";
            d.report(obj, "scope", &label, message.to_string());
        }
        if let Some(vni) = n.vni {
            if !limits::VNI.contains(&vni) {
                d.report(obj, "vni", &label, out_of_range("vni", vni, &limits::VNI));
            } else if let Some(&j) = vnis.get(&vni) {
                let other = d.other(Obj::Network(j), self::label(cfg, d, Obj::Network(j)));
                d.report(obj, "vni", &label, format!("vni {vni} is already used by {other}"));
            } else {
                vnis.insert(vni, i);
            }
        }
        if !limits::BUM_RATE_PPS.contains(&n.bum_rate_pps) {
            let message = out_of_range("bum_rate_pps", n.bum_rate_pps, &limits::BUM_RATE_PPS);
            d.report(obj, "bum_rate_pps", &label, message);
        }
    }
    for (i, p) in cfg.ports.iter().enumerate() {
        let obj = Obj::Port(i);
        if p.endpoint_mac.is_none() && p.endpoint_ip.is_none() {
            continue;
        }
        let label = label(cfg, d, obj);
        let net = p.network.as_deref().and_then(|n| cfg.networks.iter().find(|x| x.name == n));
        let field = if p.endpoint_mac.is_some() { "endpoint_mac" } else { "endpoint_ip" };
        match net {
            Some(n) if n.scope == Scope::Overlay => {}
            _ if d.is_broken(obj, "network") => continue,
            _ => {
                let message = format!("{field} is only for access ports of overlay networks");
                d.report(obj, field, &label, message);
                continue;
            }
        }
        match (p.endpoint_mac, p.endpoint_ip) {
            (Some(mac), _) if mac.is_multicast() || mac.is_zero() => {
                d.report(obj, "endpoint_mac", &label, format!("endpoint_mac {mac} is not a unicast MAC"));
            }
            (None, Some(_)) if !d.is_broken(obj, "endpoint_mac") => {
                let message = "endpoint_ip requires endpoint_mac (an endpoint is registered by its MAC)";
                d.report(obj, "endpoint_ip", &label, message.to_string());
            }
            _ => {}
        }
        if let (Some(ip), Some(subnet)) = (p.endpoint_ip, net.and_then(|n| n.subnet)) {
            if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() {
                let message = format!("endpoint_ip {ip} is not a host address of subnet {subnet}");
                d.report(obj, "endpoint_ip", &label, message);
            }
        }
    }
    let Some(c) = &cfg.cluster else { return };
    let (obj, label) = (Obj::Cluster, "cluster");
    for (field, value) in [("name", &c.name), ("host", &c.host)] {
        if d.is_broken(obj, field) {
            continue;
        }
        if let Some(problem) = name_problem(value, limits::NETWORK_NAME_MAX) {
            d.report(obj, field, label, problem.replacen("name", field, 1));
        }
    }
    if !d.is_broken(obj, "etcd") {
        if c.etcd.is_empty() || c.etcd.len() > limits::ETCD_ENDPOINTS_MAX {
            let message =
                format!("etcd needs 1..={} endpoint URLs, found {}", limits::ETCD_ENDPOINTS_MAX, c.etcd.len());
            d.report(obj, "etcd", label, message);
        }
        for u in &c.etcd {
            let rest = u.strip_prefix("http://").unwrap_or("");
            let ok = rest.rsplit_once(':').is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                d.report(
                    obj,
                    "etcd",
                    label,
                    format!("etcd endpoint {} is not a URL like \"http://HOST:2379\"", show(u)),
                );
                break;
            }
        }
    }
    if !limits::LEASE_TTL_SECS.contains(&c.lease_ttl_secs) {
        let message = out_of_range("lease_ttl_secs", c.lease_ttl_secs, &limits::LEASE_TTL_SECS);
        d.report(obj, "lease_ttl_secs", label, message);
    }
    if !limits::VXLAN_UDP_PORT.contains(&c.vxlan_udp_port) {
        let message = out_of_range("vxlan_udp_port", c.vxlan_udp_port, &limits::VXLAN_UDP_PORT);
        d.report(obj, "vxlan_udp_port", label, message);
    }
    if !d.is_broken(obj, "vtep_port") {
        match ports.get(c.vtep_port.as_str()).map(|&i| &cfg.ports[i]) {
            Some(p) if p.address.is_some() => {}
            Some(_) => {
                let message = format!("vtep_port {} is not a routed port (it needs an address)", show(&c.vtep_port));
                d.report(obj, "vtep_port", label, message);
            }
            None => {
                let routed: Vec<String> =
                    cfg.ports.iter().filter(|p| p.address.is_some()).map(|p| p.name.clone()).collect();
                let known = listing("routed ports", &routed, "there are no routed ports");
                d.report(obj, "vtep_port", label, format!("vtep_port {} does not exist; {known}", show(&c.vtep_port)));
            }
        }
    }
}

/// Published ports: a routed port, a port number, a target inside a network with a gateway, and unique
/// (port, proto, external_port).
fn check_publish(cfg: &Config, d: &mut Diags, ports: &HashMap<&str, usize>) {
    let routed: Vec<String> =
        cfg.ports.iter().filter(|p| p.address.is_some() && p.network.is_none()).map(|p| p.name.clone()).collect();
    let routed = listing("routed ports", &routed, "no routed ports are defined");
    let mut seen: HashMap<(&str, PublishProto, u16), usize> = HashMap::new();
    for (i, p) in cfg.publish.iter().enumerate() {
        let obj = Obj::Publish(i);
        let label = label(cfg, d, obj);
        if !d.is_broken(obj, "port") {
            match ports.get(p.port.as_str()) {
                None => d.report(obj, "port", &label, format!("port {} does not exist; {routed}", show(&p.port))),
                Some(&j) => {
                    let q = &cfg.ports[j];
                    // A port with both `network` and `address` is reported on the port itself.
                    if q.address.is_none() && !d.is_broken(Obj::Port(j), "address") {
                        let message = format!("port {} is not a routed port (it has no \"address\"); {routed}", p.port);
                        d.report(obj, "port", &label, message);
                    }
                }
            }
        }
        if !d.is_broken(obj, "external_port") && !limits::EXTERNAL_PORT.contains(&p.external_port) {
            let message = out_of_range("external_port", p.external_port, &limits::EXTERNAL_PORT);
            d.report(obj, "external_port", &label, message);
        }
        if !d.is_broken(obj, "to") {
            let addr = *p.to.ip();
            let network = cfg.networks.iter().find(|n| n.subnet.is_some_and(|s| s.trunc().contains(&addr)));
            let problem = match network {
                _ if p.to.port() == 0 => Some(format!("to {} has port 0", p.to)),
                None => Some(format!("to {} is not inside any network's subnet", p.to)),
                Some(n) if n.gateway.is_none() => {
                    Some(format!("to {} is in network {}, which has no gateway (nothing routes to it)", p.to, n.name))
                }
                Some(n) if n.internal => {
                    Some(format!("to {} is in network {}, which is internal (never routed)", p.to, n.name))
                }
                Some(n) if n.gateway == Some(addr) => {
                    Some(format!("to {} is the gateway of network {} (the switch itself)", p.to, n.name))
                }
                Some(n) => {
                    let subnet = n.subnet.map(|s| s.trunc()).unwrap_or_default();
                    (subnet.prefix_len() < 31 && (addr == subnet.network() || addr == subnet.broadcast()))
                        .then(|| format!("to {} is the network or broadcast address of subnet {subnet}", p.to))
                }
            };
            if let Some(problem) = problem {
                d.report(obj, "to", &label, problem);
            }
        }
        let fields_ok = ["port", "proto", "external_port"].iter().all(|f| !d.is_broken(obj, f));
        if fields_ok {
            if let Some(&j) = seen.get(&(p.port.as_str(), p.proto, p.external_port)) {
                let other = d.other(Obj::Publish(j), publish_named(j));
                let message =
                    format!("{} port {} on port {} is already published by {other}", p.proto, p.external_port, p.port);
                d.report(obj, "external_port", &label, message);
            } else {
                seen.insert((p.port.as_str(), p.proto, p.external_port), i);
            }
        }
    }
}

/// `[conntrack]`: the limit and every timeout in range.
fn check_conntrack(cfg: &Config, d: &mut Diags) {
    let c = &cfg.conntrack;
    if !limits::CONNTRACK_LIMIT.contains(&c.limit) {
        d.report(Obj::Conntrack, "limit", "conntrack", out_of_range("limit", c.limit, &limits::CONNTRACK_LIMIT));
    }
    for (field, secs) in c.timeouts_secs() {
        if !limits::TIMEOUT_SECS.contains(&secs) {
            d.report(Obj::Conntrack, field, "conntrack", out_of_range(field, secs, &limits::TIMEOUT_SECS));
        }
    }
}

/// Checks the networks; returns the index of each validly named network by name.
fn check_networks<'c>(cfg: &'c Config, d: &mut Diags) -> HashMap<&'c str, usize> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, n) in cfg.networks.iter().enumerate() {
        let obj = Obj::Network(i);
        let label = label(cfg, d, obj);
        if let Some(problem) = name_problem(&n.name, limits::NETWORK_NAME_MAX) {
            d.report(obj, "name", &label, problem);
        } else if let Some(&j) = by_name.get(n.name.as_str()) {
            let other = d.other(Obj::Network(j), self::label(cfg, d, Obj::Network(j)));
            let message = format!("name {} is already used by {other}", show(&n.name));
            d.report(obj, "name", &label, message);
        } else {
            by_name.insert(&n.name, i);
        }
        if !limits::MAC_AGING_SECS.contains(&n.mac_aging_secs) {
            let message = out_of_range("mac_aging_secs", n.mac_aging_secs, &limits::MAC_AGING_SECS);
            d.report(obj, "mac_aging_secs", &label, message);
        }
        if !limits::MAC_LIMIT.contains(&n.mac_limit) {
            d.report(obj, "mac_limit", &label, out_of_range("mac_limit", n.mac_limit, &limits::MAC_LIMIT));
        }
        if let Some(problem) = n.subnet.and_then(|subnet| host_bits_problem("subnet", subnet)) {
            d.report(obj, "subnet", &label, problem);
        }
        if let Some(gateway) = n.gateway {
            check_gateway(d, obj, &label, gateway, n.subnet);
        }
        if let Some(mac) = n.gateway_mac {
            if n.gateway.is_none() && !d.is_broken(obj, "gateway") {
                d.report(obj, "gateway_mac", &label, format!("gateway_mac {mac} requires a gateway"));
            }
        }
        if n.masquerade {
            if n.gateway.is_none() && !d.is_broken(obj, "gateway") {
                let message = "masquerade requires a gateway (only routed traffic is translated)".to_string();
                d.report(obj, "masquerade", &label, message);
            } else if n.internal && !d.is_broken(obj, "internal") {
                let message = "masquerade has no effect on an internal network (it is never routed)".to_string();
                d.report(obj, "masquerade", &label, message);
            }
        }
    }
    by_name
}

fn check_gateway(d: &mut Diags, obj: Obj, label: &str, gateway: Ipv4Addr, subnet: Option<Ipv4Net>) {
    if d.is_broken(obj, "subnet") {
        return;
    }
    let Some(subnet) = subnet.map(|s| s.trunc()) else {
        d.report(obj, "gateway", label, format!("gateway {gateway} requires a subnet"));
        return;
    };
    let problem = if !subnet.contains(&gateway) {
        "is not inside"
    } else if gateway == subnet.network() {
        "is the network address of"
    } else if gateway == subnet.broadcast() {
        "is the broadcast address of"
    } else {
        return;
    };
    d.report(obj, "gateway", label, format!("gateway {gateway} {problem} subnet {subnet}"));
}

/// A routed port's address: a prefix length of at least 1, and (below /31, where RFC 3021 has no such
/// addresses) neither the network nor the broadcast address of its subnet.
fn check_address(d: &mut Diags, obj: Obj, label: &str, address: Ipv4Net) {
    let (addr, subnet) = (address.addr(), address.trunc());
    let problem = if address.prefix_len() == 0 {
        format!("address {address} has prefix length 0; the link's subnet needs a length of 1..=32")
    } else if address.prefix_len() < 31 && addr == subnet.network() {
        format!("address {address} is the network address of subnet {subnet}")
    } else if address.prefix_len() < 31 && addr == subnet.broadcast() {
        format!("address {address} is the broadcast address of subnet {subnet}")
    } else {
        return;
    };
    d.report(obj, "address", label, problem);
}

/// Checks the ports; returns the index of each validly named port by name.
fn check_ports<'c>(cfg: &'c Config, d: &mut Diags, networks: &HashMap<&str, usize>) -> HashMap<&'c str, usize> {
    let mut known: Vec<(usize, &str)> = networks.iter().map(|(&name, &i)| (i, name)).collect();
    known.sort_unstable();
    let known: Vec<String> = known.into_iter().map(|(_, name)| name.to_string()).collect();
    let known = listing("known networks", &known, "no networks are defined");
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut by_ifname: HashMap<&str, usize> = HashMap::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let obj = Obj::Port(i);
        let label = label(cfg, d, obj);
        if let Some(problem) = name_problem(&p.name, limits::PORT_NAME_MAX) {
            d.report(obj, "name", &label, problem);
        } else if let Some(&j) = by_name.get(p.name.as_str()) {
            let other = d.other(Obj::Port(j), self::label(cfg, d, Obj::Port(j)));
            let message = format!("name {} is already used by {other}", show(&p.name));
            d.report(obj, "name", &label, message);
        } else {
            by_name.insert(&p.name, i);
        }
        match (&p.network, p.address) {
            (None, None) if !d.is_broken(obj, "network") && !d.is_broken(obj, "address") => {
                let message = "needs either \"network\" (an access port) or \"address\" (a routed port)";
                d.report(obj, "network", &label, message.to_string());
            }
            (Some(_), Some(_)) => {
                let message = "has both \"network\" (an access port) and \"address\" (a routed port); set one";
                d.report(obj, "address", &label, message.to_string());
            }
            _ => {}
        }
        if let Some(network) = &p.network {
            if !networks.contains_key(network.as_str()) {
                d.report(obj, "network", &label, format!("network {} does not exist; {known}", show(network)));
            }
        }
        if let Some(address) = p.address {
            check_address(d, obj, &label, address);
        }
        if let Some(mac) = p.mac {
            if p.address.is_none() && !d.is_broken(obj, "address") {
                let message = format!("mac {mac} requires an address (only a routed port has a MAC of its own)");
                d.report(obj, "mac", &label, message);
            }
        }
        match &p.ifname {
            None if p.kind.needs_ifname() && !d.is_broken(obj, "kind") => {
                let purpose = if p.kind == PortKind::Tap { "the tap to create" } else { "the interface to attach to" };
                let message = format!("missing field \"ifname\" (kind {} needs {purpose})", p.kind);
                d.report(obj, "ifname", &label, message);
            }
            None => {}
            Some(ifname) => {
                if let Some(problem) = ifname_problem(ifname) {
                    d.report(obj, "ifname", &label, problem);
                } else if let Some(&j) = by_ifname.get(ifname.as_str()) {
                    let other = d.other(Obj::Port(j), self::label(cfg, d, Obj::Port(j)));
                    d.report(obj, "ifname", &label, format!("ifname {} is already used by {other}", show(ifname)));
                } else {
                    by_ifname.insert(ifname, i);
                }
            }
        }
        if !limits::MTU.contains(&p.mtu) {
            d.report(obj, "mtu", &label, out_of_range("mtu", p.mtu, &limits::MTU));
        }
        check_port_backend(d, obj, &label, p);
    }
    by_name
}

/// The back-end keys: `netns` (tap), `mode` (afxdp), `queues` (afxdp, afpacket, tap).
fn check_port_backend(d: &mut Diags, obj: Obj, label: &str, p: &PortConfig) {
    let kind_ok = !d.is_broken(obj, "kind");
    if let Some(netns) = &p.netns {
        if kind_ok && p.kind != PortKind::Tap {
            d.report(obj, "netns", label, format!("netns is only for kind tap, not {}", p.kind));
        } else if let Some(problem) = netns_problem(netns) {
            d.report(obj, "netns", label, problem);
        }
    }
    if let Some(mode) = p.mode {
        if kind_ok && p.kind != PortKind::Afxdp {
            d.report(obj, "mode", label, format!("mode {} is only for kind afxdp, not {}", mode.as_str(), p.kind));
        }
    }
    if let Some(queues) = p.queues {
        if kind_ok && !matches!(p.kind, PortKind::Afxdp | PortKind::Afpacket | PortKind::Tap) {
            d.report(obj, "queues", label, format!("queues is only for kinds afxdp, afpacket and tap, not {}", p.kind));
        } else if !limits::QUEUES.contains(&queues) {
            d.report(obj, "queues", label, out_of_range("queues", queues, &limits::QUEUES));
        }
    }
}

/// What is wrong with a network namespace name (a file under `/run/netns`), as "netns …".
fn netns_problem(netns: &str) -> Option<String> {
    if netns.is_empty() {
        Some("netns must not be empty".to_string())
    } else if netns.len() > limits::NETNS_MAX {
        Some(format!("netns {} is longer than {} bytes", show(netns), limits::NETNS_MAX))
    } else if netns == "." || netns == ".." || netns.contains('/') || netns.contains('\0') {
        Some(format!("netns {} is not a valid namespace name (no '/', NUL, '.' or '..')", show(netns)))
    } else {
        None
    }
}

/// The router interfaces, numbered as [`Topology`](crate::topology::Topology) numbers them: networks with a
/// gateway (and a subnet), then routed ports (with an address of length 1..=32 and no network).
fn router_interfaces(cfg: &Config) -> Vec<Rif> {
    let networks = cfg.networks.iter().enumerate().filter_map(|(i, n)| {
        let (addr, written) = (n.gateway?, n.subnet?);
        Some(Rif { obj: Obj::Network(i), field: "subnet", addr, written, subnet: written.trunc() })
    });
    let ports = cfg.ports.iter().enumerate().filter_map(|(i, p)| {
        let address = p.address.filter(|a| a.prefix_len() > 0 && p.network.is_none())?;
        Some(Rif {
            obj: Obj::Port(i),
            field: "address",
            addr: address.addr(),
            written: address,
            subnet: address.trunc(),
        })
    });
    networks.chain(ports).collect()
}

/// Subnets must not overlap: those of any two networks, and those of a routed port and any other router
/// interface. Each overlap is reported on whichever of the two objects comes later in the file.
fn check_overlaps(cfg: &Config, d: &mut Diags, rifs: &[Rif]) {
    let subnets: Vec<Rif> = cfg
        .networks
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let written = n.subnet?;
            let addr = written.addr();
            Some(Rif { obj: Obj::Network(i), field: "subnet", addr, written, subnet: written.trunc() })
        })
        .collect();
    let mut pairs: Vec<(&Rif, &Rif)> = nested_pairs(&subnets);
    // Pairs of networks were found above, with or without gateways.
    let is_port = |r: &Rif| matches!(r.obj, Obj::Port(_));
    pairs.extend(nested_pairs(rifs).into_iter().filter(|(a, b)| is_port(a) || is_port(b)));
    let mut pairs: Vec<(&Rif, &Rif)> =
        pairs.into_iter().map(|(a, b)| if d.position(a.obj) > d.position(b.obj) { (a, b) } else { (b, a) }).collect();
    pairs.sort_by_key(|(later, earlier)| (d.position(later.obj), d.position(earlier.obj)));
    for (later, earlier) in pairs {
        let other = d.other(earlier.obj, label(cfg, d, earlier.obj));
        let value = if later.field == "subnet" { later.subnet } else { later.written };
        let message = format!("{} {value} overlaps subnet {} of {other}", later.field, earlier.subnet);
        d.report(later.obj, later.field, &label(cfg, d, later.obj), message);
    }
}

/// Pairs of items whose subnets overlap. Two prefixes overlap exactly when one contains the other, so after
/// sorting by (address, length) each prefix is checked against the innermost open one: O(n log n). Of three
/// nested prefixes, the outer and inner pairs are found (every overlapping item is in some pair).
fn nested_pairs(items: &[Rif]) -> Vec<(&Rif, &Rif)> {
    let mut sorted: Vec<(usize, &Rif)> = items.iter().enumerate().collect();
    sorted.sort_by_key(|&(i, r)| (r.subnet.network(), r.subnet.prefix_len(), i));
    let mut open: Vec<&Rif> = Vec::new();
    let mut pairs = Vec::new();
    for (_, r) in sorted {
        while open.last().is_some_and(|outer| !outer.subnet.contains(&r.subnet)) {
            open.pop();
        }
        if let Some(&outer) = open.last() {
            pairs.push((outer, r));
        }
        open.push(r);
    }
    pairs
}

/// Configured MACs: unicast, not all-zero, and unique among all `gateway_mac` and `mac` values. Duplicates are
/// reported on the later one in the file.
fn check_macs(cfg: &Config, d: &mut Diags) {
    let networks =
        cfg.networks.iter().enumerate().filter_map(|(i, n)| Some((Obj::Network(i), "gateway_mac", n.gateway_mac?)));
    let ports = cfg.ports.iter().enumerate().filter_map(|(i, p)| Some((Obj::Port(i), "mac", p.mac?)));
    let mut macs: Vec<(Obj, &'static str, MacAddr)> = networks.chain(ports).collect();
    macs.sort_by_key(|&(obj, _, _)| d.position(obj));
    let mut seen: HashMap<MacAddr, Obj> = HashMap::new();
    for (obj, field, mac) in macs {
        let problem = if mac.is_broadcast() {
            "the broadcast address"
        } else if mac.is_multicast() {
            "a group (multicast) address"
        } else if mac.is_zero() {
            "the all-zero address"
        } else {
            ""
        };
        let message = if !problem.is_empty() {
            format!("{field} {mac} is {problem}; a router interface needs a unicast MAC")
        } else if let Some(&other) = seen.get(&mac) {
            format!("{field} {mac} is already used by {}", d.other(other, label(cfg, d, other)))
        } else {
            seen.insert(mac, obj);
            continue;
        };
        d.report(obj, field, &label(cfg, d, obj), message);
    }
}

/// Routes: prefixes without host bits and unique; `port`, when given, a routed port; `via` a neighbour in a
/// connected subnet (that port's, when given), not one of the switch's own addresses.
fn check_routes(cfg: &Config, d: &mut Diags, ports: &HashMap<&str, usize>, rifs: &[Rif]) {
    let connected: Vec<String> =
        rifs.iter().map(|rif| format!("{} ({})", rif.subnet, label(cfg, d, rif.obj))).collect();
    let connected =
        listing("connected", &connected, "no subnet is connected (give a network a gateway, or a port an address)");
    let routed: Vec<String> = rifs
        .iter()
        .filter_map(|r| match r.obj {
            Obj::Port(i) => Some(cfg.ports[i].name.clone()),
            _ => None,
        })
        .collect();
    let routed = listing("routed ports", &routed, "no routed ports are defined");
    let mut by_prefix: HashMap<Ipv4Net, usize> = HashMap::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let obj = Obj::Route(i);
        let label = label(cfg, d, obj);
        if !d.is_broken(obj, "prefix") {
            if let Some(problem) = host_bits_problem("prefix", r.prefix) {
                d.report(obj, "prefix", &label, problem);
            } else if let Some(&j) = by_prefix.get(&r.prefix) {
                let other = d.other(Obj::Route(j), self::label(cfg, d, Obj::Route(j)));
                d.report(obj, "prefix", &label, format!("prefix {} is already routed by {other}", r.prefix));
            } else {
                by_prefix.insert(r.prefix, i);
            }
        }
        // The interface `via` must be in: Some(Some(rif)) for a valid `port`, Some(None) for an invalid one
        // (already reported: skip the check), None for any.
        let egress: Option<Option<&Rif>> = r.port.as_ref().map(|name| {
            let Some(&j) = ports.get(name.as_str()) else {
                d.report(obj, "port", &label, format!("port {} does not exist; {routed}", show(name)));
                return None;
            };
            let port = Obj::Port(j);
            if cfg.ports[j].address.is_none() && !d.is_broken(port, "address") {
                let message = format!("port {name} is not a routed port (it has no \"address\"); {routed}");
                d.report(obj, "port", &label, message);
            }
            rifs.iter().find(|rif| rif.obj == port)
        });
        if d.is_broken(obj, "via") {
            continue;
        }
        let via = r.via;
        let message = if let Some(own) = rifs.iter().find(|rif| rif.addr == via) {
            format!("next hop {via} is the switch's own address on {}", self::label(cfg, d, own.obj))
        } else {
            match egress {
                None if !rifs.iter().any(|rif| rif.subnet.contains(&via)) => {
                    format!("next hop {via} is not in any connected subnet; {connected}")
                }
                Some(Some(rif)) if !rif.subnet.contains(&via) => {
                    format!("next hop {via} is not in subnet {} of {}", rif.subnet, self::label(cfg, d, rif.obj))
                }
                _ => continue,
            }
        };
        d.report(obj, "via", &label, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neigh::RifId;
    use proptest::prelude::*;

    /// Lines joined with '\n': line numbers in assertions are positions in the slice, counting from 1.
    fn text(lines: &[&str]) -> String {
        lines.join("\n")
    }

    /// The first error's message (what `Display` prints before the first newline) for `t.toml`.
    fn first_error(lines: &[&str]) -> String {
        match Config::parse(&text(lines), "t.toml") {
            Ok(cfg) => panic!("expected an error, got {cfg:?}"),
            Err(e) => e.to_string().lines().next().unwrap_or_default().to_string(),
        }
    }

    /// Every error, as printed.
    fn all_errors(lines: &[&str]) -> Vec<String> {
        match Config::parse_all_errors(&text(lines), "t.toml") {
            Ok(cfg) => panic!("expected errors, got {cfg:?}"),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[track_caller]
    fn assert_first(lines: &[&str], expected: &str) {
        let got = first_error(lines);
        assert!(got.starts_with(expected), "\n     got: {got}\nexpected: {expected}…");
    }

    /// A valid network (lines 1-2) followed by one port whose body is `port` (starting on line 4, header on 3).
    fn with_port(port: &[&str]) -> Vec<String> {
        let mut lines = vec!["[[network]]".to_string(), "name = \"bridge\"".to_string(), "[[port]]".to_string()];
        lines.extend(port.iter().map(|l| l.to_string()));
        lines
    }

    /// Asserts that one of the errors of a config with this port starts with `expected`.
    #[track_caller]
    fn assert_port(port: &[&str], expected: &str) {
        let lines = with_port(port);
        let errors = match Config::parse_all_errors(&lines.join("\n"), "t.toml") {
            Ok(cfg) => panic!("expected an error, got {cfg:?}"),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        };
        assert!(errors.iter().any(|e| e.starts_with(expected)), "\n     got: {errors:#?}\nexpected: {expected}…");
    }

    #[track_caller]
    fn assert_port_ok(port: &[&str]) -> Config {
        let lines = with_port(port);
        match Config::parse(&lines.join("\n"), "t.toml") {
            Ok(cfg) => cfg,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    const FULL: &str = include_str!("../tests/config/full.toml");

    /// A network with the defaults of everything but its name.
    fn network(name: &str) -> NetworkConfig {
        NetworkConfig {
            name: name.into(),
            subnet: None,
            gateway: None,
            gateway_mac: None,
            internal: false,
            masquerade: false,
            mac_aging_secs: defaults::MAC_AGING_SECS,
            mac_limit: defaults::MAC_LIMIT,
            scope: Scope::Local,
            vni: None,
            bum_rate_pps: defaults::BUM_RATE_PPS,
        }
    }

    /// A `mem` access port of `network` with the defaults of everything else.
    fn access_port(name: &str, network: &str) -> PortConfig {
        PortConfig {
            name: name.into(),
            kind: PortKind::Mem,
            ifname: None,
            network: Some(network.into()),
            address: None,
            mac: None,
            mtu: defaults::MTU,
            netns: None,
            mode: None,
            queues: None,
            endpoint_mac: None,
            endpoint_ip: None,
        }
    }

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    fn full_config() -> Config {
        Config {
            switch: SwitchConfig { workers: 2, poll_idle_us: 100 },
            networks: vec![
                NetworkConfig {
                    subnet: Some("172.17.0.0/16".parse().unwrap()),
                    gateway: Some(Ipv4Addr::new(172, 17, 0, 1)),
                    gateway_mac: Some(mac("02:00:00:00:01:01")),
                    masquerade: true,
                    mac_aging_secs: 600,
                    mac_limit: 4096,
                    ..network("bridge")
                },
                NetworkConfig {
                    subnet: Some("10.10.0.0/24".parse().unwrap()),
                    gateway: Some(Ipv4Addr::new(10, 10, 0, 1)),
                    ..network("apps")
                },
                NetworkConfig {
                    subnet: Some("10.20.0.0/24".parse().unwrap()),
                    gateway: Some(Ipv4Addr::new(10, 20, 0, 1)),
                    internal: true,
                    ..network("backend")
                },
                network("lab"),
            ],
            ports: vec![
                PortConfig {
                    kind: PortKind::Tap,
                    ifname: Some("vs-c1".into()),
                    mtu: 1400,
                    netns: Some("ctr1".into()),
                    queues: Some(2),
                    ..access_port("c1", "bridge")
                },
                PortConfig { kind: PortKind::Pcap, ..access_port("c2", "lab") },
                access_port("web", "apps"),
                access_port("db", "backend"),
                PortConfig {
                    name: "uplink".into(),
                    kind: PortKind::Afxdp,
                    ifname: Some("vs-up".into()),
                    network: None,
                    address: Some("203.0.113.2/24".parse().unwrap()),
                    mac: Some(mac("02:00:00:00:02:01")),
                    mtu: 1500,
                    netns: None,
                    mode: Some(XdpMode::Native),
                    queues: Some(4),
                    endpoint_mac: None,
                    endpoint_ip: None,
                },
            ],
            routes: vec![
                RouteConfig { prefix: "0.0.0.0/0".parse().unwrap(), via: Ipv4Addr::new(203, 0, 113, 1), port: None },
                RouteConfig {
                    prefix: "198.51.100.0/24".parse().unwrap(),
                    via: Ipv4Addr::new(203, 0, 113, 254),
                    port: Some("uplink".into()),
                },
                RouteConfig { prefix: "10.99.0.0/16".parse().unwrap(), via: Ipv4Addr::new(10, 10, 0, 254), port: None },
            ],
            publish: vec![
                PublishConfig {
                    port: "uplink".into(),
                    proto: PublishProto::Tcp,
                    external_port: 8080,
                    to: "172.17.0.2:80".parse().unwrap(),
                },
                PublishConfig {
                    port: "uplink".into(),
                    proto: PublishProto::Udp,
                    external_port: 5353,
                    to: "10.10.0.5:53".parse().unwrap(),
                },
            ],
            nat: NatConfig { port_range: PortRange::new(20000, 29999).unwrap() },
            conntrack: ConntrackTableConfig {
                limit: 100_000,
                tcp_strict: true,
                tcp_syn_sent_secs: 60,
                tcp_syn_recv_secs: 30,
                tcp_established_secs: 86_400,
                tcp_fin_wait_secs: 60,
                tcp_close_wait_secs: 30,
                tcp_last_ack_secs: 20,
                tcp_time_wait_secs: 60,
                tcp_close_secs: 5,
                udp_secs: 20,
                udp_assured_secs: 90,
                icmp_secs: 10,
            },
            cluster: None,
        }
    }

    #[test]
    fn full_example_parses_with_defaults_filled_in() {
        let cfg = Config::parse(FULL, "full.toml").unwrap();
        assert_eq!(cfg, full_config());
        assert_eq!(cfg.network_index("lab"), Some(3));
        assert_eq!(cfg.port_index("c2"), Some(1));
        assert_eq!(cfg.validate("again"), Ok(()));
        // The address keeps its host bits.
        assert_eq!(cfg.ports[4].address.map(|a| a.addr()), Some(Ipv4Addr::new(203, 0, 113, 2)));
    }

    #[test]
    fn full_example_numbers_router_interfaces_and_routes() {
        use crate::topology::{derived_mac, Attach, Topology};
        let topo = Topology::from_config(&Config::parse(FULL, "full.toml").unwrap());
        let rifs: Vec<(&str, Ipv4Addr, String, MacAddr, bool)> =
            topo.rifs.iter().map(|r| (r.name.as_str(), r.addr, r.subnet.to_string(), r.mac, r.internal)).collect();
        assert_eq!(
            rifs,
            [
                (
                    "network:bridge",
                    Ipv4Addr::new(172, 17, 0, 1),
                    "172.17.0.1/16".into(),
                    mac("02:00:00:00:01:01"),
                    false
                ),
                (
                    "network:apps",
                    Ipv4Addr::new(10, 10, 0, 1),
                    "10.10.0.1/24".into(),
                    derived_mac("network:apps"),
                    false
                ),
                (
                    "network:backend",
                    Ipv4Addr::new(10, 20, 0, 1),
                    "10.20.0.1/24".into(),
                    derived_mac("network:backend"),
                    true
                ),
                (
                    "port:uplink",
                    Ipv4Addr::new(203, 0, 113, 2),
                    "203.0.113.2/24".into(),
                    mac("02:00:00:00:02:01"),
                    false
                ),
            ]
        );
        assert_eq!(topo.rifs[3].attach, Attach::Port(4));
        assert_eq!(topo.ports[4].rif, Some(3));
        assert_eq!(topo.ports[4].network, None);
        assert_eq!(topo.rif_of_port(2), Some(1));
        assert_eq!(topo.rifs[1].mtu, defaults::MTU);
        let routes: Vec<(String, Ipv4Addr, RifId)> =
            topo.routes.iter().map(|r| (r.prefix.to_string(), r.via, r.rif)).collect();
        assert_eq!(
            routes,
            [
                ("0.0.0.0/0".to_string(), Ipv4Addr::new(203, 0, 113, 1), 3),
                ("198.51.100.0/24".to_string(), Ipv4Addr::new(203, 0, 113, 254), 3),
                ("10.99.0.0/16".to_string(), Ipv4Addr::new(10, 10, 0, 254), 1),
            ]
        );
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config");
        assert_eq!(Config::load(&dir.join("full.toml")).unwrap(), full_config());

        let err = Config::load(&dir.join("invalid.toml")).unwrap_err();
        let origin = dir.join("invalid.toml").display().to_string();
        assert_eq!(err.origin, origin);
        assert_eq!(err.line, Some(4));
        assert_eq!(
            err.to_string(),
            [
                format!("{origin}:4: network bridge: gateway 172.17.0.1 requires a subnet"),
                format!("{origin}:6: port c1: missing field \"ifname\" (kind tap needs the tap to create)"),
                format!("{origin}:9: port c1: network \"brige\" does not exist; known networks: bridge"),
            ]
            .join("\n")
        );

        let err = Config::load(&dir.join("no-such-file.toml")).unwrap_err();
        assert_eq!(err.line, None);
        assert!(err.to_string().contains("no-such-file.toml: cannot read: "), "{err}");
    }

    #[test]
    fn empty_text_is_an_empty_switch() {
        assert_eq!(Config::parse("", "t.toml"), Ok(Config::default()));
        assert_eq!(Config::parse("# nothing\n[switch]\n", "t.toml"), Ok(Config::default()));
        assert_eq!(Config::default().switch.workers, 1);
    }

    #[test]
    fn dotted_and_inline_forms_are_the_same_language() {
        let cfg = Config::parse(
            "switch.workers = 3\nnetwork = [{ name = \"n\", mac_limit = 1_000 }]\n\
             port = [{ name = \"p\", kind = \"mem\", network = \"n\" }]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(cfg.switch.workers, 3);
        assert_eq!(cfg.networks[0].mac_limit, 1000);
        assert_eq!(cfg.ports[0].network.as_deref(), Some("n"));
    }

    #[test]
    fn unknown_keys_are_errors_naming_key_object_and_line() {
        assert_port(
            &["name = \"c1\"", "kind = \"mem\"", "network = \"bridge\"", "mtux = 1500"],
            "t.toml:7: port c1: unknown field `mtux`, expected one of `name`, `kind`, `ifname`, `network`, `address`, `mac`, `mtu`",
        );
        assert_first(
            &["[[network]]", "name = \"bridge\"", "masquerad = true"],
            "t.toml:3: network bridge: unknown field `masquerad`",
        );
        assert_first(
            &["[switch]", "workers = 1", "threads = 2"],
            "t.toml:3: unknown field `threads`, expected `workers`",
        );
        assert_first(&["", "[[publsh]]", "port = \"uplink\""], "t.toml:2: unknown field `publsh`");
        assert_first(&["[[publish]]", "port = \"up\"", "prot = \"tcp\""], "t.toml:3: publish #1: unknown field `prot`");
        assert_first(&["[nat]", "range = \"1-2\""], "t.toml:2: unknown field `range`, expected `port_range`");
        assert_first(&["[conntrack]", "limit = 5", "udp_timeout = 5"], "t.toml:3: unknown field `udp_timeout`");
        assert_first(
            &["[[route]]", "prefix = \"0.0.0.0/0\"", "vai = \"10.0.0.1\""],
            "t.toml:3: route 0.0.0.0/0: unknown field `vai`, expected one of `prefix`, `via`, `port`",
        );
        assert_first(&["[[route]]", "prefix = 5", "vai = \"10.0.0.1\""], "t.toml:3: route #1: unknown field `vai`");
        assert_first(
            &["[route]", "prefix = \"0.0.0.0/0\""],
            "t.toml:1: invalid type: map, expected an array of tables: write [[route]], not [route]",
        );
        // An unnamed object is named by its position.
        assert_first(&["[[port]]", "[[port]]", "nmae = \"c1\""], "t.toml:3: port #2: unknown field `nmae`");
    }

    #[test]
    fn misshapen_tables_are_errors() {
        assert_first(
            &["[port]", "name = \"c1\""],
            "t.toml:1: invalid type: map, expected an array of tables: write [[port]], not [port]",
        );
        assert_first(&["[[switch]]", "workers = 1"], "t.toml:1: invalid type: sequence, expected a [switch] table");
        assert_first(&["network = [1]"], "t.toml:1: invalid type: integer `1`, expected a [[network]] table");
        assert_port(
            &["name = \"c1\"", "mtu.x = 1"],
            "t.toml:5: port c1: a dotted key cannot set this field: it takes a single value, not a table",
        );
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        assert_port(&["name = \"c1\"", "kind = "], "t.toml:5: ");
        // (toml refuses the whole text here, so the object cannot be named.)
        assert_port(&["name = \"c1\"", "name = \"c2\""], "t.toml:5: duplicate key `name` in table `port`");
        // toml's multi-line messages are folded onto one line.
        let e = Config::parse("a = 1\n[x\n", "t.toml").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(!e.message.contains('\n'), "{e}");
    }

    #[test]
    fn wrong_types_name_object_field_and_line() {
        assert_port(
            &["name = \"c1\"", "kind = \"mem\"", "network = \"bridge\"", "mtu = \"big\""],
            "t.toml:7: port c1: mtu must be an integer, found string \"big\"",
        );
        assert_port(&["name = \"c1\"", "mtu = 1500.0"], "t.toml:5: port c1: mtu must be an integer, found float 1500");
        assert_port(&["name = 7"], "t.toml:4: port #1: name must be a string, found integer 7");
        assert_port(&["name = \"c1\"", "kind = true"], "t.toml:5: port c1: kind must be a string, found boolean true");
        assert_port(&["name = \"c1\"", "ifname = [1]"], "t.toml:5: port c1: ifname must be a string, found an array");
        assert_port(&["name = \"c1\"", "network = {}"], "t.toml:5: port c1: network must be a string, found a table");
        assert_first(
            &["[[network]]", "name = \"n\"", "subnet = 1979-05-27"],
            "t.toml:3: network n: subnet must be a string holding an IPv4 subnet like \"172.17.0.0/16\", found datetime 1979-05-27",
        );
        assert_first(
            &["[switch]", "workers = \"2\""],
            "t.toml:2: switch: workers must be an integer, found string \"2\"",
        );
    }

    #[test]
    fn a_wrong_type_is_reported_once() {
        // No "missing field network" after the type error, no "gateway requires a subnet" after a bad subnet.
        let lines = with_port(&["name = \"c1\"", "kind = \"mem\"", "network = 5"]);
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(all_errors(&lines), ["t.toml:6: port c1: network must be a string, found integer 5"]);
        assert_eq!(
            all_errors(&["[[network]]", "name = \"n\"", "subnet = \"10.0.0.0/33\"", "gateway = \"10.0.0.1\""]),
            ["t.toml:3: network n: subnet \"10.0.0.0/33\" is not an IPv4 subnet like \"172.17.0.0/16\""]
        );
        // A port of unknown kind is not also told it needs an ifname.
        assert_eq!(
            all_errors(&[
                "[[network]]",
                "name = \"n\"",
                "[[port]]",
                "name = \"p\"",
                "kind = \"tun\"",
                "network = \"n\""
            ]),
            ["t.toml:5: port p: kind \"tun\" is not one of tap, afxdp, afpacket, pcap, mem"]
        );
    }

    #[test]
    fn ranges() {
        let port = |mtu: &str| {
            vec!["name = \"c1\"".to_string(), "kind = \"mem\"".into(), "network = \"bridge\"".into(), mtu.into()]
        };
        for (mtu, ok) in [("mtu = 68", true), ("mtu = 1898", true), ("mtu = 67", false), ("mtu = 1899", false)] {
            let lines = port(mtu);
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            if ok {
                assert_port_ok(&lines);
            } else {
                let value = mtu.trim_start_matches("mtu = ");
                assert_port(&lines, &format!("t.toml:7: port c1: mtu {value} is out of range 68..=1898"));
            }
        }
        // Values that do not even fit the field's type read the same.
        for value in ["70000", "-1"] {
            let lines = port(&format!("mtu = {value}"));
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            assert_port(&lines, &format!("t.toml:7: port c1: mtu {value} is out of range 68..=1898"));
        }
        assert_eq!(limits::MAX_MTU as usize + ETH_HEADER_LEN + 2 * VLAN_TAG_LEN, MAX_FRAME_LEN);

        assert_first(&["[switch]", "workers = 0"], "t.toml:2: switch: workers 0 is out of range 1..=64");
        assert_first(&["[switch]", "workers = 65"], "t.toml:2: switch: workers 65 is out of range 1..=64");
        assert_first(&["[switch]", "workers = -3"], "t.toml:2: switch: workers -3 is out of range 1..=64");
        assert_eq!(Config::parse("[switch]\nworkers = 64", "t").unwrap().switch.workers, 64);

        let net = |kv: &str| ["[[network]]".to_string(), "name = \"n\"".into(), kv.into()];
        for (kv, expected) in [
            ("mac_aging_secs = 0", Some("mac_aging_secs 0 is out of range 1..=1000000")),
            ("mac_aging_secs = 1000001", Some("mac_aging_secs 1000001 is out of range 1..=1000000")),
            ("mac_aging_secs = 1", None),
            ("mac_aging_secs = 1_000_000", None),
            ("mac_limit = 0", Some("mac_limit 0 is out of range 1..=1000000")),
            ("mac_limit = 1000001", Some("mac_limit 1000001 is out of range 1..=1000000")),
            ("mac_limit = -1", Some("mac_limit -1 is out of range 1..=1000000")),
            ("mac_limit = 1", None),
        ] {
            let lines = net(kv);
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            match expected {
                Some(message) => assert_first(&lines, &format!("t.toml:3: network n: {message}")),
                None => assert!(Config::parse(&text(&lines), "t").is_ok(), "{kv}"),
            }
        }
    }

    #[test]
    fn names() {
        assert_port(&["name = \"\""], "t.toml:4: port #1: name must not be empty");
        assert_port(
            &["name = \"c 1\""],
            "t.toml:4: port #1: name \"c 1\" may only contain letters, digits, '_', '.' and '-'",
        );
        assert_port(&["name = \"c/1\""], "t.toml:4: port #1: name \"c/1\" may only contain");
        assert_port(&["name = \"é\""], "t.toml:4: port #1: name \"é\" may only contain");
        assert_port(&["name = \"-c1\""], "t.toml:4: port #1: name \"-c1\" must start with a letter or digit");
        assert_port(&["name = \"..\""], "t.toml:4: port #1: name \"..\" must start with a letter or digit");
        assert_port(
            &["name = \"abcdefghijklmnop\""],
            "t.toml:4: port #1: name \"abcdefghijklmnop\" is longer than 15 characters",
        );
        assert_port_ok(&["name = \"abcdefghijklmno\"", "kind = \"mem\"", "network = \"bridge\""]);
        assert_port_ok(&["name = \"C_1.x-2\"", "kind = \"mem\"", "network = \"bridge\""]);
        assert_port(&["kind = \"mem\"", "network = \"bridge\""], "t.toml:3: port #1: missing field \"name\"");

        let long = "n".repeat(65);
        let line = format!("name = \"{long}\"");
        assert_first(
            &["[[network]]", &line],
            "t.toml:2: network #1: name \"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\"… is longer than 64 characters",
        );
        let line = format!("name = \"{}\"", "n".repeat(64));
        assert!(Config::parse(&text(&["[[network]]", &line]), "t").is_ok());
        assert_first(&["[[network]]", "subnet = \"10.0.0.0/8\""], "t.toml:1: network #1: missing field \"name\"");
        // Networks and ports have separate namespaces.
        assert_port_ok(&["name = \"bridge\"", "kind = \"mem\"", "network = \"bridge\""]);
    }

    #[test]
    fn duplicate_names() {
        assert_first(
            &["[[network]]", "name = \"n\"", "", "[[network]]", "name = \"n\""],
            "t.toml:5: network n: name \"n\" is already used by network n (line 1)",
        );
        assert_port(
            &[
                "name = \"c1\"",
                "kind = \"mem\"",
                "network = \"bridge\"",
                "[[port]]",
                "name = \"c1\"",
                "kind = \"mem\"",
                "network = \"bridge\"",
            ],
            "t.toml:8: port c1: name \"c1\" is already used by port c1 (line 3)",
        );
    }

    #[test]
    fn port_network() {
        assert_first(
            &[
                "[[network]]",
                "name = \"bridge\"",
                "[[port]]",
                "name = \"c3\"",
                "kind = \"mem\"",
                "",
                "network = \"brige\"",
            ],
            "t.toml:7: port c3: network \"brige\" does not exist; known networks: bridge",
        );
        assert_first(
            &["[[port]]", "name = \"c3\"", "kind = \"mem\"", "network = \"brige\""],
            "t.toml:4: port c3: network \"brige\" does not exist; no networks are defined",
        );
        assert_port(
            &["name = \"c1\"", "kind = \"mem\""],
            "t.toml:3: port c1: needs either \"network\" (an access port) or \"address\" (a routed port)",
        );
        // Many networks are listed up to a limit, in file order.
        let mut lines: Vec<String> = (0..12).map(|i| format!("[[network]]\nname = \"n{i}\"")).collect();
        lines.push("[[port]]\nname = \"p\"\nkind = \"mem\"\nnetwork = \"x\"".into());
        let err = Config::parse(&lines.join("\n"), "t").unwrap_err();
        assert_eq!(
            err.message,
            "port p: network \"x\" does not exist; known networks: n0, n1, n2, n3, n4, n5, n6, n7, n8, n9, … (12 in all)"
        );
    }

    #[test]
    fn kind_and_ifname() {
        assert_port(
            &["name = \"c1\"", "network = \"bridge\""],
            "t.toml:3: port c1: missing field \"kind\" (one of tap, afxdp, afpacket, pcap, mem)",
        );
        assert_port(
            &["name = \"c1\"", "kind = \"Tap\""],
            "t.toml:5: port c1: kind \"Tap\" is not one of tap, afxdp, afpacket, pcap, mem",
        );
        assert_port(
            &["name = \"c1\"", "kind = \"tap\"", "network = \"bridge\""],
            "t.toml:3: port c1: missing field \"ifname\" (kind tap needs the tap to create)",
        );
        for kind in ["afxdp", "afpacket"] {
            let line = format!("kind = \"{kind}\"");
            assert_port(
                &["name = \"c1\"", &line, "network = \"bridge\""],
                &format!("t.toml:3: port c1: missing field \"ifname\" (kind {kind} needs the interface to attach to)"),
            );
        }
        for kind in PortKind::ALL {
            assert_eq!(PortKind::from_name(kind.as_str()), Some(kind));
            let line = format!("kind = \"{kind}\"");
            let cfg = assert_port_ok(&["name = \"c1\"", &line, "ifname = \"eth0\"", "network = \"bridge\""]);
            assert_eq!(cfg.ports[0].kind, kind);
            if !kind.needs_ifname() {
                assert_port_ok(&["name = \"c1\"", &line, "network = \"bridge\""]);
            }
        }
        let port = |ifname: &str| format!("ifname = {ifname:?}");
        for (ifname, problem) in [
            ("abcdefghijklmnop", "is longer than 15 bytes"),
            ("ééééééééé", "is longer than 15 bytes"),
            ("", "must not be empty"),
            (".", "is not a valid interface name"),
            ("a/b", "must not contain '/', ':', whitespace or NUL"),
            ("eth0:1", "must not contain"),
            ("a b", "must not contain"),
        ] {
            let line = port(ifname);
            let expected = if ifname.is_empty() {
                "t.toml:7: port c1: ifname must not be empty".to_string()
            } else {
                format!("t.toml:7: port c1: ifname {ifname:?} {problem}")
            };
            assert_port(&["name = \"c1\"", "kind = \"tap\"", "network = \"bridge\"", &line], &expected);
        }
        assert_port_ok(&["name = \"c1\"", "kind = \"tap\"", "network = \"bridge\"", "ifname = \"abcdefghijklmno\""]);
        assert_port(
            &[
                "name = \"c1\"",
                "kind = \"tap\"",
                "ifname = \"vs0\"",
                "network = \"bridge\"",
                "[[port]]",
                "name = \"c2\"",
                "kind = \"afpacket\"",
                "ifname = \"vs0\"",
                "network = \"bridge\"",
            ],
            "t.toml:11: port c2: ifname \"vs0\" is already used by port c1 (line 3)",
        );
    }

    #[test]
    fn subnet_and_gateway() {
        let net = |lines: &[&str]| {
            let mut all = vec!["[[network]]", "name = \"n\""];
            all.extend_from_slice(lines);
            first_error(&all)
        };
        assert_eq!(net(&["gateway = \"10.0.0.1\""]), "t.toml:3: network n: gateway 10.0.0.1 requires a subnet");
        assert_eq!(
            net(&["subnet = \"10.0.0.0/24\"", "gateway = \"10.0.1.1\""]),
            "t.toml:4: network n: gateway 10.0.1.1 is not inside subnet 10.0.0.0/24"
        );
        assert_eq!(
            net(&["subnet = \"10.0.0.0/24\"", "gateway = \"10.0.0.0\""]),
            "t.toml:4: network n: gateway 10.0.0.0 is the network address of subnet 10.0.0.0/24"
        );
        assert_eq!(
            net(&["subnet = \"10.0.0.0/24\"", "gateway = \"10.0.0.255\""]),
            "t.toml:4: network n: gateway 10.0.0.255 is the broadcast address of subnet 10.0.0.0/24"
        );
        assert_eq!(
            net(&["subnet = \"10.0.0.1/24\""]),
            "t.toml:3: network n: subnet 10.0.0.1/24 has host bits set (did you mean 10.0.0.0/24?)"
        );
        assert_eq!(
            net(&["subnet = \"10.0.0.0\""]),
            "t.toml:3: network n: subnet \"10.0.0.0\" is not an IPv4 subnet like \"172.17.0.0/16\""
        );
        assert_eq!(
            net(&["gateway = \"10.0.0.300\""]),
            "t.toml:3: network n: gateway \"10.0.0.300\" is not an IPv4 address"
        );
        let cfg = Config::parse(
            &text(&["[[network]]", "name = \"n\"", "subnet = \"10.0.0.0/30\"", "gateway = \"10.0.0.2\""]),
            "t",
        );
        assert_eq!(cfg.unwrap().networks[0].gateway, Some(Ipv4Addr::new(10, 0, 0, 2)));
    }

    #[test]
    fn overlapping_subnets() {
        let nets = |subnets: &[&str]| {
            let lines: Vec<String> = subnets
                .iter()
                .enumerate()
                .map(|(i, s)| format!("[[network]]\nname = \"n{}\"\nsubnet = \"{s}\"", i + 1))
                .collect();
            match Config::parse_all_errors(&lines.join("\n"), "t.toml") {
                Ok(_) => Vec::new(),
                Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
            }
        };
        assert_eq!(
            nets(&["10.0.0.0/8", "10.1.0.0/16"]),
            ["t.toml:6: network n2: subnet 10.1.0.0/16 overlaps subnet 10.0.0.0/8 of network n1 (line 1)"]
        );
        assert_eq!(
            nets(&["10.1.0.0/16", "10.0.0.0/8"]),
            ["t.toml:6: network n2: subnet 10.0.0.0/8 overlaps subnet 10.1.0.0/16 of network n1 (line 1)"]
        );
        assert_eq!(
            nets(&["10.0.0.0/24", "10.0.0.0/24"]),
            ["t.toml:6: network n2: subnet 10.0.0.0/24 overlaps subnet 10.0.0.0/24 of network n1 (line 1)"]
        );
        assert_eq!(nets(&["10.0.0.0/24", "10.0.1.0/24", "10.0.0.0/23", "192.168.0.0/16"]).len(), 2);
        assert!(nets(&["10.0.0.0/24", "10.0.1.0/24", "172.16.0.0/12", "192.168.0.0/16"]).is_empty());
    }

    #[test]
    fn all_errors_are_reported_in_line_order() {
        let lines = [
            "[[port]]",       // 1: neither network nor address
            "name = \"c1\"",  // 2
            "kind = \"mem\"", // 3
            "mtu = 9000",     // 4
            "[[network]]",    // 5
            "name = \"n\"",   // 6
            "mac_limit = 0",  // 7
            "[switch]",       // 8
            "workers = 100",  // 9
        ];
        assert_eq!(
            all_errors(&lines),
            [
                "t.toml:1: port c1: needs either \"network\" (an access port) or \"address\" (a routed port)",
                "t.toml:4: port c1: mtu 9000 is out of range 68..=1898",
                "t.toml:7: network n: mac_limit 0 is out of range 1..=1000000",
                "t.toml:9: switch: workers 100 is out of range 1..=64",
            ]
        );
        let joined = Config::parse(&text(&lines), "t.toml").unwrap_err();
        assert_eq!(joined.line, Some(1));
        assert_eq!(joined.to_string(), all_errors(&lines).join("\n"));
    }

    #[test]
    fn long_error_lists_are_cut_short() {
        let ports: String = (0..30).map(|i| format!("[[port]]\nname = \"p{i}\"\nkind = \"mem\"\n")).collect();
        assert_eq!(Config::parse_all_errors(&ports, "t").unwrap_err().len(), 30);
        let err = Config::parse(&ports, "t").unwrap_err().to_string();
        assert_eq!(err.lines().count(), MAX_LISTED_ERRORS + 1);
        assert_eq!(err.lines().last(), Some("t: … and 10 more errors"));
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(10_000);
        let line = format!("kind = \"{long}\"");
        let err = first_error(&with_port(&["name = \"p\"", &line]).iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn validate_checks_configurations_built_in_code() {
        let mut cfg = full_config();
        cfg.ports[1].network = None;
        cfg.networks[0].mac_limit = 0;
        let err = cfg.validate("pushed").unwrap_err();
        assert_eq!(err.line, None);
        assert_eq!(
            err.to_string(),
            "pushed: network bridge: mac_limit 0 is out of range 1..=1000000\n\
             pushed: port c2: needs either \"network\" (an access port) or \"address\" (a routed port)"
        );
        // Deserializing directly (the wire form) only checks the shape.
        let json = serde_json::to_string(&full_config()).unwrap();
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, full_config());
    }

    /// A routed network (lines 1-4), an access port (5-8) and a routed port (9-12), then `extra` from line 13.
    fn l3(extra: &[&str]) -> Vec<String> {
        let mut lines = vec![
            "[[network]]",
            "name = \"bridge\"",
            "subnet = \"172.17.0.0/16\"",
            "gateway = \"172.17.0.1\"",
            "[[port]]",
            "name = \"c1\"",
            "kind = \"mem\"",
            "network = \"bridge\"",
            "[[port]]",
            "name = \"uplink\"",
            "kind = \"mem\"",
            "address = \"203.0.113.2/24\"",
        ];
        lines.extend_from_slice(extra);
        match Config::parse_all_errors(&text(&lines), "t.toml") {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn l3_base_is_valid() {
        assert_eq!(l3(&[]), Vec::<String>::new());
    }

    #[test]
    fn masquerade() {
        assert_eq!(
            l3(&["[[network]]", "name = \"m\"", "masquerade = true"]),
            ["t.toml:15: network m: masquerade requires a gateway (only routed traffic is translated)"]
        );
        let internal = [
            "[[network]]",
            "name = \"m\"",
            "subnet = \"10.5.0.0/24\"",
            "gateway = \"10.5.0.1\"",
            "internal = true",
            "masquerade = true",
        ];
        assert_eq!(
            l3(&internal),
            ["t.toml:18: network m: masquerade has no effect on an internal network (it is never routed)"]
        );
        assert_eq!(
            l3(&["[[network]]", "name = \"m\"", "masquerade = 1"]),
            ["t.toml:15: network m: masquerade must be a boolean, found integer 1"]
        );
        let ok = Config::parse(
            &text(&[
                "[[network]]",
                "name = \"m\"",
                "subnet = \"10.5.0.0/24\"",
                "gateway = \"10.5.0.1\"",
                "masquerade = true",
            ]),
            "t",
        )
        .unwrap();
        assert!(ok.networks[0].masquerade);
    }

    /// `[[publish]]` lines start at line 13.
    fn publish(fields: &[&str]) -> Vec<String> {
        let mut lines = vec!["[[publish]]"];
        lines.extend_from_slice(fields);
        l3(&lines)
    }

    #[test]
    fn publish_rules() {
        let good = ["port = \"uplink\"", "proto = \"tcp\"", "external_port = 8080", "to = \"172.17.0.2:80\""];
        assert_eq!(publish(&good), Vec::<String>::new());
        assert_eq!(
            publish(&["proto = \"tcp\""]),
            [
                "t.toml:13: publish #1: missing field \"port\" (the routed port whose address is published)",
                "t.toml:13: publish #1: missing field \"external_port\" (the port on the routed port's address)",
                "t.toml:13: publish #1: missing field \"to\" (the internal \"A.B.C.D:PORT\")",
            ]
        );
        let with = |i: usize, line: &str| {
            let mut f = good.to_vec();
            f[i] = line;
            publish(&f)
        };
        assert_eq!(
            with(0, "port = \"c1\""),
            ["t.toml:14: publish #1: port c1 is not a routed port (it has no \"address\"); routed ports: uplink"]
        );
        assert_eq!(
            with(0, "port = \"nope\""),
            ["t.toml:14: publish #1: port \"nope\" does not exist; routed ports: uplink"]
        );
        assert_eq!(with(1, "proto = \"sctp\""), ["t.toml:15: publish #1: proto \"sctp\" is not one of tcp, udp"]);
        assert_eq!(with(2, "external_port = 0"), ["t.toml:16: publish #1: external_port 0 is out of range 1..=65535"]);
        assert_eq!(
            with(2, "external_port = 70000"),
            ["t.toml:16: publish #1: external_port 70000 is out of range 1..=65535"]
        );
        assert_eq!(
            with(3, "to = \"172.17.0.2\""),
            ["t.toml:17: publish #1: to \"172.17.0.2\" is not an IPv4 address and port like \"172.17.0.2:80\""]
        );
        assert_eq!(with(3, "to = \"172.17.0.2:0\""), ["t.toml:17: publish #1: to 172.17.0.2:0 has port 0"]);
        assert_eq!(
            with(3, "to = \"10.9.9.9:80\""),
            ["t.toml:17: publish #1: to 10.9.9.9:80 is not inside any network's subnet"]
        );
        assert_eq!(
            with(3, "to = \"172.17.0.1:80\""),
            ["t.toml:17: publish #1: to 172.17.0.1:80 is the gateway of network bridge (the switch itself)"]
        );
        assert_eq!(
            with(3, "to = \"172.17.255.255:80\""),
            ["t.toml:17: publish #1: to 172.17.255.255:80 is the network or broadcast address of subnet 172.17.0.0/16"]
        );
        // Unique per (port, proto, external_port); the same number in the other protocol is fine.
        let mut twice = vec!["[[publish]]"];
        twice.extend_from_slice(&good);
        twice.push("[[publish]]");
        twice.extend_from_slice(&good);
        assert_eq!(
            l3(&twice),
            ["t.toml:21: publish #2: tcp port 8080 on port uplink is already published by publish #1 (line 13)"]
        );
        twice[7] = "proto = \"udp\"";
        assert_eq!(l3(&twice), Vec::<String>::new());
        // A network without a gateway cannot be a target.
        let mut lines = vec!["[[network]]", "name = \"l2\"", "subnet = \"10.7.0.0/24\"", "[[publish]]"];
        lines.extend_from_slice(&good[..3]);
        lines.push("to = \"10.7.0.5:80\"");
        assert_eq!(
            l3(&lines),
            ["t.toml:20: publish #1: to 10.7.0.5:80 is in network l2, which has no gateway (nothing routes to it)"]
        );
        // Nor an internal one.
        let mut lines = vec![
            "[[network]]",
            "name = \"vault\"",
            "subnet = \"10.7.0.0/24\"",
            "gateway = \"10.7.0.1\"",
            "internal = true",
            "[[publish]]",
        ];
        lines.extend_from_slice(&good[..3]);
        lines.push("to = \"10.7.0.5:80\"");
        assert_eq!(
            l3(&lines),
            ["t.toml:22: publish #1: to 10.7.0.5:80 is in network vault, which is internal (never routed)"]
        );
    }

    #[test]
    fn nat_and_conntrack_tables() {
        let cfg = Config::parse("", "t").unwrap();
        assert_eq!(cfg.nat.port_range, PortRange::new(1024, 65535).unwrap());
        assert_eq!(cfg.conntrack.limit, 262_144);
        assert!(!cfg.conntrack.tcp_strict);
        assert_eq!(cfg.conntrack.table_config().timeouts, Timeouts::default(), "netfilter's defaults");
        for bad in ["\"0-10\"", "\"10-5\"", "\"1-70000\"", "\"a-b\"", "\"\"", "\"-\"", "\"1 - 2\""] {
            let errors = l3(&["[nat]", &format!("port_range = {bad}")]);
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert!(errors[0].starts_with("t.toml:14: nat: port_range "), "{errors:?}");
        }
        assert_eq!(l3(&["[nat]", "port_range = 5"]), [
            "t.toml:14: nat: port_range must be a string holding a port range like \"1024-65535\" (A-B with 1 <= A <= B <= 65535), found integer 5"
        ]);
        let cfg = Config::parse("[nat]\nport_range = \"1024-1025\"", "t").unwrap();
        assert_eq!(cfg.nat.port_range.size(), 2);
        assert_eq!(
            l3(&["[conntrack]", "limit = 0", "tcp_strict = \"yes\"", "udp_secs = 0", "icmp_secs = 3000000"]),
            [
                "t.toml:14: conntrack: limit 0 is out of range 1..=16777216",
                "t.toml:15: conntrack: tcp_strict must be a boolean, found string \"yes\"",
                "t.toml:16: conntrack: udp_secs 0 is out of range 1..=2592000",
                "t.toml:17: conntrack: icmp_secs 3000000 is out of range 1..=2592000",
            ]
        );
        assert_eq!(
            l3(&["[conntrack]", "limit = 16_777_217"]),
            ["t.toml:14: conntrack: limit 16777217 is out of range 1..=16777216"]
        );
        assert_eq!(
            l3(&["[[conntrack]]", "limit = 1"]),
            ["t.toml:13: invalid type: sequence, expected a [conntrack] table"]
        );
        // The serde form round-trips, with the range as text.
        let cfg = Config::parse(FULL, "full.toml").unwrap();
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"port_range\":\"20000-29999\""), "{json}");
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        assert!(serde_json::from_str::<Config>(&json.replace("20000-29999", "0-1")).is_err());
    }

    #[test]
    fn live_port_keys() {
        let err = |lines: &[&str]| l3(lines);
        assert_eq!(
            err(&["[switch]", "poll_idle_us = 1_000_001"]),
            ["t.toml:14: switch: poll_idle_us 1000001 is out of range 0..=1000000"]
        );
        assert_eq!(
            err(&["[switch]", "poll_idle_us = -1"]),
            ["t.toml:14: switch: poll_idle_us -1 is out of range 0..=1000000"]
        );
        let port = |kind: &str, key: &str| {
            let kind = format!("kind = \"{kind}\"");
            err(&["[[port]]", "name = \"p\"", &kind, "ifname = \"vs-p\"", "network = \"bridge\"", key])
        };
        assert_eq!(port("tap", "netns = \"ctr\""), Vec::<String>::new());
        assert_eq!(port("afxdp", "netns = \"ctr\""), ["t.toml:18: port p: netns is only for kind tap, not afxdp"]);
        assert_eq!(
            port("tap", "netns = \"a/b\""),
            ["t.toml:18: port p: netns \"a/b\" is not a valid namespace name (no '/', NUL, '.' or '..')"]
        );
        assert_eq!(port("tap", "netns = \"\""), ["t.toml:18: port p: netns must not be empty"]);
        assert_eq!(port("afxdp", "mode = \"generic\""), Vec::<String>::new());
        assert_eq!(
            port("afxdp", "mode = \"skb\""),
            ["t.toml:18: port p: mode \"skb\" is not one of auto, native, generic"]
        );
        assert_eq!(
            port("tap", "mode = \"native\""),
            ["t.toml:18: port p: mode native is only for kind afxdp, not tap"]
        );
        for kind in ["afxdp", "afpacket", "tap"] {
            assert_eq!(port(kind, "queues = 64"), Vec::<String>::new());
            assert_eq!(port(kind, "queues = 0"), ["t.toml:18: port p: queues 0 is out of range 1..=64"]);
        }
        assert_eq!(
            port("pcap", "queues = 2"),
            ["t.toml:18: port p: queues is only for kinds afxdp, afpacket and tap, not pcap"]
        );
        let cfg = Config::parse(FULL, "full.toml").unwrap();
        assert_eq!(cfg.ports[4].xdp_mode(), XdpMode::Native);
        assert_eq!(cfg.ports[1].xdp_mode(), XdpMode::Auto);
        assert_eq!((cfg.ports[0].queue_count(), cfg.ports[1].queue_count()), (2, 1));
    }

    #[test]
    fn gateway_mac_and_internal() {
        let net = |lines: &[&str]| {
            let mut all = vec!["[[network]]", "name = \"n\"", "subnet = \"10.0.0.0/24\""];
            all.extend_from_slice(lines);
            match Config::parse_all_errors(&text(&all), "t.toml") {
                Ok(cfg) => Ok(cfg.networks[0].clone()),
                Err(errors) => Err(errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()),
            }
        };
        let n = net(&["gateway = \"10.0.0.1\"", "gateway_mac = \"02:00:00:00:01:01\"", "internal = true"]).unwrap();
        assert_eq!((n.gateway_mac, n.internal), (Some(mac("02:00:00:00:01:01")), true));
        let n = net(&["gateway = \"10.0.0.1\"", "gateway_mac = \"02-00-00-00-01-0A\""]).unwrap();
        assert_eq!((n.gateway_mac, n.internal), (Some(mac("02:00:00:00:01:0a")), false));
        // internal needs nothing else.
        assert!(net(&["internal = true"]).unwrap().internal);
        assert!(net(&["internal = false"]).is_ok());
        assert_eq!(
            net(&["gateway_mac = \"02:00:00:00:01:01\""]).unwrap_err(),
            ["t.toml:4: network n: gateway_mac 02:00:00:00:01:01 requires a gateway"]
        );
        assert_eq!(
            net(&["gateway = \"10.0.0.1\"", "gateway_mac = \"02:00:00:00:01\""]).unwrap_err(),
            ["t.toml:5: network n: gateway_mac \"02:00:00:00:01\" is not a MAC address like \"02:00:00:00:00:01\""]
        );
        assert_eq!(
            net(&["gateway = \"10.0.0.1\"", "gateway_mac = 5"]).unwrap_err(),
            ["t.toml:5: network n: gateway_mac must be a string holding a MAC address like \"02:00:00:00:00:01\", found integer 5"]
        );
        assert_eq!(
            net(&["internal = \"yes\""]).unwrap_err(),
            ["t.toml:4: network n: internal must be a boolean, found string \"yes\""]
        );
        // A gateway of the wrong type does not also make gateway_mac an error.
        assert_eq!(
            net(&["gateway = 1", "gateway_mac = \"02:00:00:00:01:01\""]).unwrap_err(),
            ["t.toml:4: network n: gateway must be a string holding an IPv4 address, found integer 1"]
        );
    }

    #[test]
    fn access_or_routed_port() {
        // Neither: reported at the table header.
        assert_port(
            &["name = \"p\"", "kind = \"mem\"", "mtu = 1500"],
            "t.toml:3: port p: needs either \"network\" (an access port) or \"address\" (a routed port)",
        );
        // Both: reported at the address.
        assert_port(
            &["name = \"p\"", "kind = \"mem\"", "network = \"bridge\"", "address = \"10.0.0.2/24\""],
            "t.toml:7: port p: has both \"network\" (an access port) and \"address\" (a routed port); set one",
        );
        let cfg = assert_port_ok(&["name = \"p\"", "kind = \"mem\"", "address = \"10.0.0.2/24\""]);
        assert_eq!(cfg.ports[0].address, Some("10.0.0.2/24".parse().unwrap()));
        assert_eq!(cfg.ports[0].network, None);
        // An unusable address is not also "neither".
        let lines = with_port(&["name = \"p\"", "kind = \"mem\"", "address = \"10.0.0.2\""]);
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(
            all_errors(&lines),
            ["t.toml:6: port p: address \"10.0.0.2\" is not an IPv4 address with its prefix length like \"203.0.113.2/24\""]
        );
        assert_port(
            &["name = \"p\"", "kind = \"mem\"", "address = true"],
            "t.toml:6: port p: address must be a string holding an IPv4 address with its prefix length",
        );
    }

    #[test]
    fn routed_port_address() {
        let port = |address: &str| {
            let line = format!("address = \"{address}\"");
            let lines = with_port(&["name = \"up\"", "kind = \"mem\"", &line]);
            match Config::parse_all_errors(&lines.join("\n"), "t.toml") {
                Ok(_) => Vec::new(),
                Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
            }
        };
        assert_eq!(
            port("10.0.0.0/24"),
            ["t.toml:6: port up: address 10.0.0.0/24 is the network address of subnet 10.0.0.0/24"]
        );
        assert_eq!(
            port("10.0.0.255/24"),
            ["t.toml:6: port up: address 10.0.0.255/24 is the broadcast address of subnet 10.0.0.0/24"]
        );
        assert_eq!(
            port("10.0.0.1/0"),
            ["t.toml:6: port up: address 10.0.0.1/0 has prefix length 0; the link's subnet needs a length of 1..=32"]
        );
        assert_eq!(
            port("10.0.0.1/33"),
            ["t.toml:6: port up: address \"10.0.0.1/33\" is not an IPv4 address with its prefix length like \"203.0.113.2/24\""]
        );
        // /31 (RFC 3021) and /32 have no network or broadcast address; /1 is a (very large) subnet.
        for ok in ["10.0.0.0/31", "10.0.0.1/31", "10.0.0.1/32", "10.0.0.0/32", "10.0.0.1/30", "10.0.0.1/1"] {
            assert_eq!(port(ok), Vec::<String>::new(), "{ok}");
        }
    }

    #[test]
    fn port_mac() {
        let cfg = assert_port_ok(&[
            "name = \"up\"",
            "kind = \"mem\"",
            "address = \"10.0.0.2/24\"",
            "mac = \"02:aa:00:00:00:01\"",
        ]);
        assert_eq!(cfg.ports[0].mac, Some(mac("02:aa:00:00:00:01")));
        assert_port(
            &["name = \"c1\"", "kind = \"mem\"", "network = \"bridge\"", "mac = \"02:aa:00:00:00:01\""],
            "t.toml:7: port c1: mac 02:aa:00:00:00:01 requires an address (only a routed port has a MAC of its own)",
        );
        assert_port(
            &["name = \"up\"", "kind = \"mem\"", "address = \"10.0.0.2/24\"", "mac = \"02:aa:00:00:00\""],
            "t.toml:7: port up: mac \"02:aa:00:00:00\" is not a MAC address like \"02:00:00:00:00:01\"",
        );
        // An unusable address is not also "mac requires an address".
        let lines = with_port(&["name = \"up\"", "kind = \"mem\"", "address = 1", "mac = \"02:aa:00:00:00:01\""]);
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(all_errors(&lines).len(), 1);
    }

    #[test]
    fn macs_are_unicast_and_unique() {
        let up = |m: &str| format!("mac = \"{m}\"");
        for (m, problem) in [
            ("ff:ff:ff:ff:ff:ff", "the broadcast address"),
            ("01:00:5e:00:00:01", "a group (multicast) address"),
            ("03:00:00:00:00:01", "a group (multicast) address"),
            ("00:00:00:00:00:00", "the all-zero address"),
        ] {
            let line = up(m);
            assert_eq!(
                l3(&[&line]),
                [format!("t.toml:13: port uplink: mac {m} is {problem}; a router interface needs a unicast MAC")]
            );
        }
        assert_eq!(
            l3(&["[[network]]", "name = \"n\"", "subnet = \"10.0.0.0/24\"", "gateway = \"10.0.0.1\"", "gateway_mac = \"01:00:00:00:00:01\""]),
            ["t.toml:17: network n: gateway_mac 01:00:00:00:00:01 is a group (multicast) address; a router interface needs a unicast MAC"]
        );
        // Unique across gateway_mac and mac, reported on the later one in the file.
        let lines = [
            "mac = \"02:00:00:00:00:01\"",         // 13 (port uplink)
            "[[network]]",                         // 14
            "name = \"n\"",                        // 15
            "subnet = \"10.0.0.0/24\"",            // 16
            "gateway = \"10.0.0.1\"",              // 17
            "gateway_mac = \"02:00:00:00:00:01\"", // 18
            "[[port]]",                            // 19
            "name = \"up2\"",                      // 20
            "kind = \"mem\"",                      // 21
            "address = \"10.1.0.1/24\"",           // 22
            "mac = \"02:00:00:00:00:01\"",         // 23
        ];
        assert_eq!(
            l3(&lines),
            [
                "t.toml:18: network n: gateway_mac 02:00:00:00:00:01 is already used by port uplink (line 9)",
                "t.toml:23: port up2: mac 02:00:00:00:00:01 is already used by port uplink (line 9)",
            ]
        );
        // The same MAC written differently is the same MAC.
        assert_eq!(
            l3(&[
                "mac = \"02:00:00:00:00:0A\"",
                "[[port]]",
                "name = \"up2\"",
                "kind = \"mem\"",
                "address = \"10.1.0.1/24\"",
                "mac = \"02-00-00-00-00-0a\""
            ]),
            ["t.toml:18: port up2: mac 02:00:00:00:00:0a is already used by port uplink (line 9)"]
        );
    }

    #[test]
    fn router_interface_subnets_do_not_overlap() {
        // A routed port inside a routed network's subnet (the port comes later).
        assert_eq!(
            l3(&["[[port]]", "name = \"up2\"", "kind = \"mem\"", "address = \"172.17.5.1/24\""]),
            ["t.toml:16: port up2: address 172.17.5.1/24 overlaps subnet 172.17.0.0/16 of network bridge (line 1)"]
        );
        // A routed network around a routed port (the network comes later).
        assert_eq!(
            l3(&["[[network]]", "name = \"n\"", "subnet = \"203.0.0.0/8\"", "gateway = \"203.0.0.1\""]),
            ["t.toml:15: network n: subnet 203.0.0.0/8 overlaps subnet 203.0.113.0/24 of port uplink (line 9)"]
        );
        // Two routed ports on the same subnet.
        assert_eq!(
            l3(&["[[port]]", "name = \"up2\"", "kind = \"mem\"", "address = \"203.0.113.3/24\""]),
            ["t.toml:16: port up2: address 203.0.113.3/24 overlaps subnet 203.0.113.0/24 of port uplink (line 9)"]
        );
        // A network without a gateway is no router interface: its subnet may hold a routed port's...
        assert_eq!(l3(&["[[network]]", "name = \"n\"", "subnet = \"203.0.113.0/25\""]), Vec::<String>::new());
        // ...but networks' subnets never overlap each other.
        assert_eq!(
            l3(&["[[network]]", "name = \"n\"", "subnet = \"172.17.1.0/24\""]),
            ["t.toml:15: network n: subnet 172.17.1.0/24 overlaps subnet 172.17.0.0/16 of network bridge (line 1)"]
        );
        // Adjacent subnets are fine, and so is a /32 next to its neighbour.
        assert_eq!(
            l3(&[
                "[[port]]",
                "name = \"up2\"",
                "kind = \"mem\"",
                "address = \"203.0.114.1/24\"",
                "[[port]]",
                "name = \"up3\"",
                "kind = \"mem\"",
                "address = \"198.51.100.1/32\""
            ]),
            Vec::<String>::new()
        );
        // A port that is both access and routed only reports that.
        assert_eq!(
            l3(&["[[port]]", "name = \"p\"", "kind = \"mem\"", "network = \"bridge\"", "address = \"203.0.113.3/24\""]),
            ["t.toml:17: port p: has both \"network\" (an access port) and \"address\" (a routed port); set one"]
        );
    }

    #[test]
    fn routes() {
        let route = |lines: &[&str]| {
            let mut all = vec!["[[route]]"];
            all.extend_from_slice(lines);
            l3(&all)
        };
        assert_eq!(route(&["prefix = \"0.0.0.0/0\"", "via = \"203.0.113.1\""]), Vec::<String>::new());
        assert_eq!(
            route(&["prefix = \"10.0.0.0/8\"", "via = \"172.17.0.254\"", "port = \"uplink\""]),
            ["t.toml:15: route 10.0.0.0/8: next hop 172.17.0.254 is not in subnet 203.0.113.0/24 of port uplink"]
        );
        assert_eq!(
            route(&["prefix = \"10.0.0.0/8\"", "via = \"203.0.113.9\"", "port = \"uplink\""]),
            Vec::<String>::new()
        );
        assert_eq!(
            route(&["prefix = \"0.0.0.0/0\"", "via = \"198.51.100.1\""]),
            ["t.toml:15: route 0.0.0.0/0: next hop 198.51.100.1 is not in any connected subnet; \
              connected: 172.17.0.0/16 (network bridge), 203.0.113.0/24 (port uplink)"]
        );
        assert_eq!(
            route(&["prefix = \"0.0.0.0/0\"", "via = \"203.0.113.2\""]),
            ["t.toml:15: route 0.0.0.0/0: next hop 203.0.113.2 is the switch's own address on port uplink"]
        );
        assert_eq!(
            route(&["prefix = \"0.0.0.0/0\"", "via = \"172.17.0.1\""]),
            ["t.toml:15: route 0.0.0.0/0: next hop 172.17.0.1 is the switch's own address on network bridge"]
        );
        assert_eq!(
            route(&["prefix = \"10.0.0.1/8\"", "via = \"203.0.113.1\""]),
            ["t.toml:14: route 10.0.0.1/8: prefix 10.0.0.1/8 has host bits set (did you mean 10.0.0.0/8?)"]
        );
        assert_eq!(
            route(&["prefix = \"10.0.0.0/8\"", "via = \"203.0.113.1\"", "port = \"c1\""]),
            ["t.toml:16: route 10.0.0.0/8: port c1 is not a routed port (it has no \"address\"); routed ports: uplink"]
        );
        assert_eq!(
            route(&["prefix = \"10.0.0.0/8\"", "via = \"203.0.113.1\"", "port = \"upl1nk\""]),
            ["t.toml:16: route 10.0.0.0/8: port \"upl1nk\" does not exist; routed ports: uplink"]
        );
        // Missing fields are reported at the table header, by position while the prefix is unknown.
        assert_eq!(route(&["via = \"203.0.113.1\""]), ["t.toml:13: route #1: missing field \"prefix\""]);
        assert_eq!(
            route(&["prefix = \"10.0.0.0/8\""]),
            ["t.toml:13: route 10.0.0.0/8: missing field \"via\" (the next hop)"]
        );
        assert_eq!(
            route(&["prefix = \"10.0.0.0\"", "via = \"1.2.3\""]),
            [
                "t.toml:14: route #1: prefix \"10.0.0.0\" is not an IPv4 prefix like \"10.0.0.0/8\"",
                "t.toml:15: route #1: via \"1.2.3\" is not an IPv4 address",
            ]
        );
        assert_eq!(
            route(&["prefix = \"10.0.0.0/8\"", "via = \"203.0.113.1\"", "port = 3"]),
            ["t.toml:16: route 10.0.0.0/8: port must be a string, found integer 3"]
        );
        // Duplicate prefixes, reported on the later route.
        let lines = [
            "[[route]]",               // 13
            "prefix = \"10.0.0.0/8\"", // 14
            "via = \"203.0.113.1\"",   // 15
            "[[route]]",               // 16
            "prefix = \"10.0.0.0/8\"", // 17
            "via = \"172.17.0.2\"",    // 18
        ];
        assert_eq!(
            l3(&lines),
            ["t.toml:17: route 10.0.0.0/8: prefix 10.0.0.0/8 is already routed by route 10.0.0.0/8 (line 13)"]
        );
        // Without router interfaces.
        assert_eq!(
            first_error(&["[[route]]", "prefix = \"0.0.0.0/0\"", "via = \"10.0.0.1\""]),
            "t.toml:3: route 0.0.0.0/0: next hop 10.0.0.1 is not in any connected subnet; \
             no subnet is connected (give a network a gateway, or a port an address)"
        );
        assert_eq!(
            first_error(&["[[route]]", "prefix = \"0.0.0.0/0\"", "via = \"10.0.0.1\"", "port = \"x\""]),
            "t.toml:4: route 0.0.0.0/0: port \"x\" does not exist; no routed ports are defined"
        );
    }

    #[test]
    fn validate_checks_l3_rules_without_lines() {
        let mut cfg = full_config();
        cfg.ports[4].network = Some("lab".into());
        cfg.routes[0].via = Ipv4Addr::new(192, 0, 2, 1);
        cfg.networks[1].gateway_mac = cfg.ports[4].mac;
        assert_eq!(
            cfg.validate("pushed").unwrap_err().to_string(),
            "pushed: port uplink: has both \"network\" (an access port) and \"address\" (a routed port); set one\n\
             pushed: port uplink: mac 02:00:00:00:02:01 is already used by network apps\n\
             pushed: route 0.0.0.0/0: next hop 192.0.2.1 is not in any connected subnet; \
             connected: 172.17.0.0/16 (network bridge), 10.10.0.0/24 (network apps), 10.20.0.0/24 (network backend)"
        );
    }

    #[test]
    fn line_index() {
        let index = LineIndex::new("a\nbc\n\nd");
        assert_eq!([0, 1, 2, 3, 4, 5, 6, 99].map(|o| index.line(o)), [1, 1, 2, 2, 2, 3, 4, 4]);
    }

    /// Every prefix of a valid file: no panic, a line inside the text on every error.
    #[test]
    fn truncated_files_never_panic() {
        for end in (0..=FULL.len()).filter(|&i| FULL.is_char_boundary(i)) {
            check_any(&FULL[..end]);
        }
    }

    /// Parses `text` twice (the results must agree) and checks the errors' shape.
    fn check_any(text: &str) {
        let first = Config::parse_all_errors(text, "t.toml");
        assert_eq!(first, Config::parse_all_errors(text, "t.toml"), "not deterministic: {text:?}");
        match first {
            Ok(cfg) => assert_eq!(cfg.validate("t.toml"), Ok(()), "{text:?}"),
            Err(errors) => {
                assert!(!errors.is_empty());
                let last_line = text.lines().count() + 1;
                for e in &errors {
                    assert!(e.line.is_some_and(|l| (1..=last_line).contains(&l)), "{e} in {text:?}");
                    assert!(!e.message.is_empty() && !e.message.contains('\n'), "{e:?}");
                }
                assert!(errors.windows(2).all(|w| w[0].line <= w[1].line), "{errors:?}");
            }
        }
    }

    const TOKENS: &[&str] = &[
        "\n",
        "\n",
        "\n",
        " ",
        "=",
        "[switch]",
        "[[network]]",
        "[[port]]",
        "[port]",
        "name",
        "kind",
        "ifname",
        "network",
        "mtu",
        "subnet",
        "gateway",
        "workers",
        "mac_limit",
        "mac_aging_secs",
        "gateway_mac",
        "internal",
        "address",
        "mac",
        "[[route]]",
        "prefix",
        "via",
        "port",
        "bogus",
        "\"c1\"",
        "\"bridge\"",
        "\"tap\"",
        "\"mem\"",
        "\"10.0.0.0/8\"",
        "\"10.0.0.1\"",
        "\"10.0.0.2/8\"",
        "\"0.0.0.0/0\"",
        "\"02:00:00:00:00:01\"",
        "\"ff:ff:ff:ff:ff:ff\"",
        "\"\"",
        "0",
        "1500",
        "-1",
        "99999999999999999999",
        "1.5",
        "true",
        "1979-05-27",
        "[",
        "]",
        "{",
        "}",
        ",",
        ".",
        "#",
        "'",
        "\"",
        "\"\"\"",
        "é",
        "\\",
        "\0",
    ];

    proptest! {
        #[test]
        fn garbage_never_panics(text in "\\PC{0,300}") {
            check_any(&text);
        }

        #[test]
        fn toml_shaped_garbage_never_panics(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..80)) {
            check_any(&tokens.concat());
        }

        #[test]
        fn edited_valid_files_never_panic(cut in 0usize..600, len in 0usize..40, insert in prop::sample::select(TOKENS)) {
            let start = (0..=cut.min(FULL.len())).rev().find(|&i| FULL.is_char_boundary(i)).unwrap_or(0);
            let end = (start..=(start + len).min(FULL.len())).rev().find(|&i| FULL.is_char_boundary(i)).unwrap_or(start);
            check_any(&format!("{}{insert}{}", &FULL[..start], &FULL[end..]));
        }
    }
}
