//! [`Topology`]: the switch's ports, networks and router interfaces as numbered tables, built from a validated
//! [`Config`].
//!
//! Ports, networks and router interfaces are referred to by index on the hot path ([`PortId`], [`NetId`],
//! [`RifId`]); names exist for the control plane, stats and errors. A topology is immutable once built; a
//! configuration change builds a new one.
//!
//! Router interfaces are numbered networks-with-a-gateway first (in configuration order), then routed ports.
//! An interface's MAC is the configured `gateway_mac` (network) or `mac` (routed port), or else derived from its
//! name: `02:76:73` ("vs", locally administered) followed by the low 24 bits of the FNV-1a hash of
//! `"network:NAME"` or `"port:NAME"`, so it is stable across restarts and configuration reorderings. With a
//! `[cluster]` section a routed port's key is `"port:NAME@HOST"`: hosts sharing an underlay segment then get
//! different MACs for their same-named ports, while an overlay network's gateway MAC stays the same on every host
//! (the anycast gateway).
//!
//! NAT facts are resolved here too: each network interface's `masquerade` flag ([`RifInfo::masquerade`]), the
//! publish rules resolved to their routed port's interface ([`PublishRule`]), the masquerade port range and the
//! connection table's tunables.

use crate::config::{Config, ConntrackTableConfig, PortKind, PublishProto};
use crate::conntrack::{ConntrackConfig, Timeouts};
use crate::ids::{table_id, PortId, RifId, NANOS_PER_SEC};
use crate::isolation::{Isolation, RifClass};
use crate::mss_clamp::MssLimit;
use crate::wire::ethernet::HEADER_LEN as ETH_HEADER_LEN;
use crate::wire::MacAddr;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use vswitch_api::port_range::PortRange;

pub use crate::ids::NetId;

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
    /// The router interface this port is (a routed port).
    pub rif: Option<RifId>,
    /// The largest MSS TCP SYNs entering or leaving through this port may announce (`mss_clamp`).
    pub mss_clamp: MssLimit,
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
    /// The network's gateway interface.
    pub rif: Option<RifId>,
    /// Set for an overlay network (`scope = "overlay"`): a bridge domain whose remote members are VTEPs.
    pub overlay: Option<OverlayNetInfo>,
}

/// What the pipeline needs of an overlay network's configuration (membership comes from the control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayNetInfo {
    /// Its VXLAN network identifier; `None` until one is configured (the agent allocates one through etcd):
    /// until then the network is bridged locally only.
    pub vni: Option<u32>,
    /// Broadcast, multicast and unknown-unicast frames replicated to the other hosts per second, at most.
    pub bum_rate_pps: u32,
}

/// The switch's VXLAN tunnel endpoint: a routed port's address (`[cluster] vtep_port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtepInfo {
    /// The routed port.
    pub port: PortId,
    /// Its router interface.
    pub rif: RifId,
    /// The outer source address.
    pub addr: Ipv4Addr,
    /// The UDP port VXLAN is received on (`[cluster] vxlan_udp_port`).
    pub udp_port: u16,
    /// The underlay MTU (the port's).
    pub mtu: u16,
}

/// Where a router interface sends and receives frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// Through the bridge of a network (the interface is its gateway).
    Network(NetId),
    /// Directly on a routed port.
    Port(PortId),
}

/// One router interface: an address of the switch's own on a network or routed port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RifInfo {
    /// `network:NAME` or `port:NAME`.
    pub name: String,
    /// The switch's address.
    pub addr: Ipv4Addr,
    /// The connected subnet (address and prefix length).
    pub subnet: Ipv4Net,
    /// The subnet's broadcast address (kept beside it: the router tests it on every packet).
    pub broadcast: Ipv4Addr,
    /// The interface's MAC.
    pub mac: MacAddr,
    /// Where its frames go.
    pub attach: Attach,
    /// IP MTU of the link.
    pub mtu: u16,
    /// Never routed to or from another interface (a network with `internal = true`).
    pub internal: bool,
    /// Connections from this interface's network leaving through a routed port are masqueraded (a network
    /// with `masquerade = true`; always false for routed ports).
    pub masquerade: bool,
    /// A routed port (as opposed to a network's gateway): where masquerade and publish rules apply.
    pub routed_port: bool,
    /// A host port (`port.host`): a routed port through which the host stack reaches the networks, untranslated
    /// (no masquerade towards it; see [`crate::isolation`]).
    pub host: bool,
    /// Most connections of this network's hosts tracked at once (`network.conntrack_limit`).
    pub conntrack_limit: Option<usize>,
}

/// A `[[publish]]` rule resolved for the pipeline: connections arriving on routed interface `rif` for its
/// address, protocol `proto`, port `external_port` go to `to_addr:to_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRule {
    /// The routed port's interface.
    pub rif: RifId,
    /// The protocol.
    pub proto: PublishProto,
    /// The port on the interface's address.
    pub external_port: u16,
    /// The internal address.
    pub to_addr: Ipv4Addr,
    /// The internal port.
    pub to_port: u16,
}

/// A static route, resolved to its egress interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRoute {
    /// Destination prefix.
    pub prefix: Ipv4Net,
    /// Gateway.
    pub via: Ipv4Addr,
    /// The interface whose subnet holds the gateway (or the one configured).
    pub rif: RifId,
}

/// The MAC derived for an interface called `key` (see the module documentation).
pub fn derived_mac(key: &str) -> MacAddr {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let b = h.to_be_bytes();
    MacAddr([0x02, 0x76, 0x73, b[1], b[2], b[3]])
}

/// The numbered ports and networks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    /// Ports by [`PortId`].
    pub ports: Vec<PortInfo>,
    /// Networks by [`NetId`].
    pub networks: Vec<NetworkInfo>,
    /// Router interfaces by [`RifId`].
    pub rifs: Vec<RifInfo>,
    /// Static routes.
    pub routes: Vec<StaticRoute>,
    /// Publish rules (inbound DNAT), in configuration order.
    pub publish: Vec<PublishRule>,
    /// The ports and ICMP identifiers masquerade hands out.
    pub nat_port_range: PortRange,
    /// The connection table's tunables.
    pub conntrack: ConntrackConfig,
    /// The VXLAN tunnel endpoint, when the configuration has overlay networks.
    pub vtep: Option<VtepInfo>,
    /// Which router interfaces may route to which untranslated.
    pub isolation: Isolation,
}

impl Topology {
    /// Numbers a validated configuration's ports, networks and router interfaces in the order they are written.
    pub fn from_config(cfg: &Config) -> Topology {
        let mut rifs = Vec::new();
        let mut networks: Vec<NetworkInfo> = cfg
            .networks
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let rif = match (n.gateway, n.subnet) {
                    (Some(addr), Some(subnet)) => {
                        let name = format!("network:{}", n.name);
                        let subnet = Ipv4Net::new(addr, subnet.prefix_len()).unwrap_or(subnet);
                        rifs.push(RifInfo {
                            mac: n.gateway_mac.unwrap_or_else(|| derived_mac(&name)),
                            name,
                            addr,
                            subnet,
                            broadcast: subnet.broadcast(),
                            attach: Attach::Network(table_id(i)),
                            mtu: network_mtu(cfg, &n.name),
                            internal: n.internal,
                            masquerade: n.masquerade,
                            routed_port: false,
                            host: false,
                            conntrack_limit: n.conntrack_limit,
                        });
                        Some(table_id(rifs.len() - 1))
                    }
                    _ => None,
                };
                NetworkInfo {
                    name: n.name.clone(),
                    ports: Vec::new(),
                    mac_aging: n.mac_aging_secs.saturating_mul(NANOS_PER_SEC),
                    mac_limit: n.mac_limit,
                    rif,
                    overlay: (n.scope == crate::config::Scope::Overlay)
                        .then_some(OverlayNetInfo { vni: n.vni, bum_rate_pps: n.bum_rate_pps }),
                }
            })
            .collect();
        let ports = cfg
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let network = p.network.as_deref().and_then(|n| cfg.network_index(n)).map(table_id);
                if let Some(n) = network {
                    networks[usize::from(n)].ports.push(table_id(i));
                }
                let rif = p.address.filter(|_| network.is_none()).map(|address| {
                    let name = format!("port:{}", p.name);
                    // In a cluster every host has its own routed ports (often with the same names, on one
                    // underlay segment): their derived MACs take the host's name too, so they differ.
                    let key = match &cfg.cluster {
                        Some(c) => format!("{name}@{}", c.host),
                        None => name.clone(),
                    };
                    rifs.push(RifInfo {
                        mac: p.mac.unwrap_or_else(|| derived_mac(&key)),
                        name,
                        addr: address.addr(),
                        subnet: address,
                        broadcast: address.broadcast(),
                        attach: Attach::Port(table_id(i)),
                        mtu: p.mtu,
                        internal: false,
                        masquerade: false,
                        routed_port: true,
                        host: p.host,
                        conntrack_limit: None,
                    });
                    table_id(rifs.len() - 1)
                });
                let mss_clamp = p.mss_clamp.map_or(MssLimit::NONE, |c| {
                    let (v4, v6) = c.limits(p.mtu);
                    MssLimit { v4, v6 }
                });
                PortInfo { name: p.name.clone(), kind: p.kind, network, mtu: p.mtu, rif, mss_clamp }
            })
            .collect();
        let routes = cfg
            .routes
            .iter()
            .filter_map(|r| {
                let rif = match &r.port {
                    Some(port) => rifs.iter().position(|x| x.name == format!("port:{port}")),
                    None => rifs.iter().position(|x| x.subnet.contains(&r.via)),
                }?;
                Some(StaticRoute { prefix: r.prefix, via: r.via, rif: table_id(rif) })
            })
            .collect();
        let publish = cfg
            .publish
            .iter()
            .filter_map(|p| {
                let rif = rifs.iter().position(|x| x.routed_port && x.name == format!("port:{}", p.port))?;
                Some(PublishRule {
                    rif: table_id(rif),
                    proto: p.proto,
                    external_port: p.external_port,
                    to_addr: *p.to.ip(),
                    to_port: p.to.port(),
                })
            })
            .collect();
        let vtep = cfg.cluster.as_ref().and_then(|c| {
            let port = cfg.port_index(&c.vtep_port)?;
            let rif = ports_rif(&rifs, &c.vtep_port)?;
            let addr = rifs[rif as usize].addr;
            Some(VtepInfo { port: table_id(port), rif, addr, udp_port: c.vxlan_udp_port, mtu: cfg.ports[port].mtu })
        });
        let isolation = isolation(cfg, &networks, &rifs);
        Topology {
            ports,
            networks,
            rifs,
            routes,
            publish,
            nat_port_range: cfg.nat.port_range,
            conntrack: conntrack_config(&cfg.conntrack),
            vtep,
            isolation,
        }
    }

    /// The id of the port called `name`.
    pub fn port_id(&self, name: &str) -> Option<PortId> {
        self.ports.iter().position(|p| p.name == name).map(table_id)
    }

    /// The router interface a frame arriving on `port` reaches: the port's own, or its network's gateway.
    #[inline]
    pub fn rif_of_port(&self, port: PortId) -> Option<RifId> {
        let p = self.ports.get(port as usize)?;
        p.rif.or_else(|| p.network.and_then(|n| self.networks[n as usize].rif))
    }

    /// The id of the network called `name`.
    pub fn network_id(&self, name: &str) -> Option<NetId> {
        self.networks.iter().position(|n| n.name == name).map(table_id)
    }

    /// True when the router built for `other` would be the same as the one built for `self`: the same router
    /// interfaces in the same order (so the same [`RifId`]s; attachments compared by name, which the interface's
    /// name encodes, since network and port ids may be renumbered), routes, publish rules, NAT port range and
    /// connection-table settings. A configuration change that keeps this can keep the router's learned state
    /// (neighbours, connections, NAT bindings); see `Switch::reconfigure`.
    pub fn same_router_as(&self, other: &Topology) -> bool {
        let same_rif = |a: &RifInfo, b: &RifInfo| {
            let kind = |x: &Attach| matches!(x, Attach::Network(_));
            RifInfo { attach: b.attach, ..a.clone() } == *b && kind(&a.attach) == kind(&b.attach)
        };
        self.rifs.len() == other.rifs.len()
            && self.rifs.iter().zip(&other.rifs).all(|(a, b)| same_rif(a, b))
            && self.routes == other.routes
            && self.publish == other.publish
            && self.nat_port_range == other.nat_port_range
            && self.conntrack == other.conntrack
    }
}

/// The router interface of routed port `port`.
fn ports_rif(rifs: &[RifInfo], port: &str) -> Option<RifId> {
    rifs.iter().position(|r| r.routed_port && r.name == format!("port:{port}")).map(table_id)
}

/// The isolation policy of the numbered interfaces: their classes and `allow_routing_with` pairs.
fn isolation(cfg: &Config, networks: &[NetworkInfo], rifs: &[RifInfo]) -> Isolation {
    let class = rifs
        .iter()
        .map(|r| match (r.routed_port, r.internal, r.masquerade) {
            (true, _, _) if r.host => RifClass::Host,
            (true, _, _) => RifClass::Routed,
            (false, true, _) => RifClass::Internal,
            (false, false, true) => RifClass::Isolated,
            (false, false, false) => RifClass::Plain,
        })
        .collect();
    let rif_of = |name: &str| cfg.network_index(name).and_then(|n| networks[n].rif);
    let allowed = cfg.networks.iter().flat_map(|n| {
        let a = rif_of(&n.name);
        n.allow_routing_with.iter().filter_map(move |m| Some((a?, rif_of(m)?)))
    });
    let host_links = rifs.iter().map(|r| r.host.then(|| r.subnet.trunc())).collect();
    Isolation::new(class, allowed.collect::<Vec<_>>()).with_host_links(host_links)
}

/// A network's MTU: the smallest MTU of its ports (the default port MTU, 1500, if it has none).
fn network_mtu(cfg: &Config, network: &str) -> u16 {
    cfg.ports
        .iter()
        .filter(|p| p.network.as_deref() == Some(network))
        .map(|p| p.mtu)
        .min()
        .unwrap_or(crate::config::defaults::MTU)
}

/// The `[conntrack]` table's tunables as [`crate::conntrack`] takes them (seconds to nanoseconds).
pub fn conntrack_config(c: &ConntrackTableConfig) -> ConntrackConfig {
    let ns = |secs: u64| secs.saturating_mul(NANOS_PER_SEC);
    ConntrackConfig {
        limit: c.limit,
        strict: c.tcp_strict,
        timeouts: Timeouts {
            tcp_syn_sent: ns(c.tcp_syn_sent_secs),
            tcp_syn_recv: ns(c.tcp_syn_recv_secs),
            tcp_established: ns(c.tcp_established_secs),
            tcp_fin_wait: ns(c.tcp_fin_wait_secs),
            tcp_close_wait: ns(c.tcp_close_wait_secs),
            tcp_last_ack: ns(c.tcp_last_ack_secs),
            tcp_time_wait: ns(c.tcp_time_wait_secs),
            tcp_close: ns(c.tcp_close_secs),
            udp_unreplied: ns(c.udp_secs),
            udp_assured: ns(c.udp_assured_secs),
            icmp: ns(c.icmp_secs),
            tcp_unreplied: ns(c.tcp_unreplied_secs),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::defaults;

    /// The configuration language's full example (`dataplane/api/tests/config/full.toml`).
    const FULL: &str = include_str!("../api/tests/config/full.toml");

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    #[test]
    fn conntrack_defaults_are_the_tables_own() {
        let cfg = Config::parse("", "t").unwrap();
        assert_eq!(conntrack_config(&cfg.conntrack).timeouts, Timeouts::default(), "netfilter's defaults");
        assert_eq!(conntrack_config(&cfg.conntrack).limit, defaults::CONNTRACK_LIMIT);
        let cfg = Config::parse("[conntrack]\ntcp_strict = true\nudp_secs = 7", "t").unwrap();
        let c = conntrack_config(&cfg.conntrack);
        assert!(c.strict);
        assert_eq!(c.timeouts.udp_unreplied, 7 * NANOS_PER_SEC);
    }

    #[test]
    fn in_a_cluster_routed_port_macs_differ_per_host_and_the_gateway_mac_does_not() {
        let host = |h: &str| {
            let text = format!(
                "[cluster]\nname = \"c\"\nhost = \"{h}\"\netcd = [\"http://10.9.0.1:2379\"]\nvtep_port = \"under\"\n\
                 [[network]]\nname = \"red\"\nscope = \"overlay\"\nsubnet = \"10.1.0.0/24\"\ngateway = \"10.1.0.1\"\n\
                 [[port]]\nname = \"under\"\nkind = \"mem\"\naddress = \"10.200.0.11/24\"\n"
            );
            let t = Topology::from_config(&Config::parse(&text, "t").unwrap());
            (t.rifs[0].mac, t.rifs[1].mac)
        };
        let ((gw_a, under_a), (gw_b, under_b)) = (host("a"), host("b"));
        assert_eq!(gw_a, gw_b, "anycast gateway");
        assert_eq!(gw_a, derived_mac("network:red"));
        assert_ne!(under_a, under_b, "one underlay segment, two hosts");
        assert_eq!(under_a, derived_mac("port:under@a"));
    }

    #[test]
    fn full_example_numbers_router_interfaces_and_routes() {
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
}
