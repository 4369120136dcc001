//! The rules a configuration must keep, over the typed [`Config`] (with lines when it came from text): ranges,
//! names, references between objects (a port's network, a route's port, a publish rule's target), subnets that
//! must not overlap, unique MACs, next hops in connected subnets. Each broken rule is reported on the object
//! written later in the file; every rule is checked, so all errors are reported at once.

use super::diag::{ifname_problem, label, name_problem, out_of_range, publish_named, show, Diags, Obj};
use super::{limits, Config, ConfigError, MssClamp, PortConfig, PortKind, PublishProto, Scope};
use crate::mac::MacAddr;
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Checks a configuration built in code or deserialized directly (e.g. from JSON): every error, without lines.
pub(super) fn validate(cfg: &Config, origin: &str) -> Result<(), Vec<ConfigError>> {
    let mut diags = Diags::default();
    check(cfg, &mut diags);
    diags.finish(origin)
}

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

pub(super) fn check(cfg: &Config, d: &mut Diags) {
    if !limits::WORKERS.contains(&cfg.switch.workers) {
        d.report(Obj::Switch, "workers", "switch", out_of_range("workers", cfg.switch.workers, &limits::WORKERS));
    }
    if !limits::POLL_IDLE_US.contains(&cfg.switch.poll_idle_us) {
        let message = out_of_range("poll_idle_us", cfg.switch.poll_idle_us, &limits::POLL_IDLE_US);
        d.report(Obj::Switch, "poll_idle_us", "switch", message);
    }
    if !check_counts(cfg, d) {
        return;
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
        if let Some(vni) = n.vni.filter(|v| !limits::VNI.contains(v)) {
            d.report(obj, "vni", &label, out_of_range("vni", vni, &limits::VNI));
            continue;
        }
        if n.scope == Scope::Local {
            if let Some(vni) = n.vni.filter(|_| !d.is_broken(obj, "scope")) {
                d.report(obj, "vni", &label, format!("vni {vni} requires scope = \"overlay\""));
            }
            continue;
        }
        if cfg.cluster.is_none() && !d.is_broken(obj, "scope") {
            let message = "scope \"overlay\" requires a [cluster] section (its vtep_port is the tunnel endpoint)";
            d.report(obj, "scope", &label, message.to_string());
        }
        if let Some(vni) = n.vni {
            if let Some(&j) = vnis.get(&vni) {
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

/// The number of each kind of object against its cap; false (reported on the first object beyond it) when one
/// is over.
fn check_counts(cfg: &Config, d: &mut Diags) -> bool {
    let counts = [
        (cfg.networks.len(), limits::NETWORKS_MAX, "network", "networks", Obj::Network(limits::NETWORKS_MAX)),
        (cfg.ports.len(), limits::PORTS_MAX, "port", "ports", Obj::Port(limits::PORTS_MAX)),
        (cfg.routes.len(), limits::ROUTES_MAX, "route", "routes", Obj::Route(limits::ROUTES_MAX)),
        (cfg.publish.len(), limits::PUBLISH_MAX, "publish", "publish rules", Obj::Publish(limits::PUBLISH_MAX)),
    ];
    let mut ok = true;
    for (n, max, field, what, first_over) in counts {
        if n > max {
            let label = label(cfg, d, first_over);
            d.report(first_over, field, &label, format!("too many {what}: {n}, at most {max}"));
            ok = false;
        }
    }
    ok
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
        if let Some(limit) = n.conntrack_limit {
            if !limits::CONNTRACK_LIMIT.contains(&limit) {
                let message = out_of_range("conntrack_limit", limit, &limits::CONNTRACK_LIMIT);
                d.report(obj, "conntrack_limit", &label, message);
            } else if n.gateway.is_none() && !d.is_broken(obj, "gateway") {
                let message = "conntrack_limit requires a gateway (only routed traffic is tracked)".to_string();
                d.report(obj, "conntrack_limit", &label, message);
            }
        }
        if !n.allow_routing_with.is_empty() {
            check_allow_routing(cfg, d, obj, &label, i);
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

/// `network.allow_routing_with`: names of other networks, each once, both ends routed and not internal.
fn check_allow_routing(cfg: &Config, d: &mut Diags, obj: Obj, label: &str, i: usize) {
    let n = &cfg.networks[i];
    let field = "allow_routing_with";
    if n.gateway.is_none() && !d.is_broken(obj, "gateway") {
        d.report(obj, field, label, "allow_routing_with requires a gateway (only routed traffic is isolated)".into());
        return;
    }
    if n.internal {
        d.report(obj, field, label, "allow_routing_with has no effect on an internal network (never routed)".into());
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for other in &n.allow_routing_with {
        let problem = match cfg.networks.iter().find(|m| &m.name == other) {
            _ if !seen.insert(other.as_str()) => Some(format!("network {} is listed twice", show(other))),
            _ if *other == n.name => Some("a network cannot list itself".to_string()),
            None => Some(format!("network {} does not exist", show(other))),
            Some(m) if m.gateway.is_none() => Some(format!("network {} has no gateway (nothing routes to it)", m.name)),
            Some(m) if m.internal => Some(format!("network {} is internal (never routed)", m.name)),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            d.report(obj, field, label, format!("allow_routing_with: {problem}"));
        }
    }
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
        if p.host && p.address.is_none() && !d.is_broken(obj, "address") {
            let message = "host = true requires an address (a host port is a routed port: the switch's address on the host's link)";
            d.report(obj, "host", &label, message.to_string());
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
        } else if p.kind == PortKind::Afxdp && p.mtu > limits::SMALL_FRAME_MTU && !d.is_broken(obj, "kind") {
            let most = limits::SMALL_FRAME_MTU;
            let message = format!("mtu {} is above {most}, the most kind afxdp carries (no jumbo frames)", p.mtu);
            d.report(obj, "mtu", &label, message);
        }
        if let Some(MssClamp::Mss(mss)) = p.mss_clamp {
            if !limits::MSS_CLAMP.contains(&mss) {
                d.report(obj, "mss_clamp", &label, out_of_range("mss_clamp", mss, &limits::MSS_CLAMP));
            }
        }
        check_port_backend(d, obj, &label, p);
    }
    by_name
}

/// The back-end keys: `netns` (tap), `mode` (afxdp), `queues` (afxdp, afpacket, tap), `offload` (tap).
fn check_port_backend(d: &mut Diags, obj: Obj, label: &str, p: &PortConfig) {
    let kind_ok = !d.is_broken(obj, "kind");
    if p.offload.is_some() && kind_ok && p.kind != PortKind::Tap {
        d.report(obj, "offload", label, format!("offload is only for kind tap, not {}", p.kind));
    }
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

/// The router interfaces, numbered as the dataplane's `Topology` numbers them: networks with a
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
