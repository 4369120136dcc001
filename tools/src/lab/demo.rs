//! `vswitch-lab demo`: brings a lab up, checks that it forwards (ping, TCP transfers, masquerade, published
//! ports), prints vswitchd's counters and tears the lab down. Each check prints one `PASS`/`FAIL` line.
//!
//! The checks are derived from the lab: the first non-external host ("the client") pings every other host and
//! its gateway, sends [`TRANSFER_BYTES`] over TCP to every other host (to an external host, the source the
//! server sees must be the uplink's address when the client's network masquerades, the client's own otherwise),
//! and every `[[publish]]` rule is exercised from the host on the publishing port. A host on a host port (the
//! switch namespace's own stack, `host = true`) pings and sends TCP to every container, which must see its own
//! address (no masquerade); an external host given a route to a masquerade network's subnet must not reach a
//! container's unpublished port. Runs on the caller's thread.

use super::probe::{ping, tcp_send, TcpServer};
use super::{HostSpec, Lab, LabError, LabOptions, LabSpec};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// Bytes of each TCP transfer.
pub const TRANSFER_BYTES: u64 = 10_000_000;
const TIMEOUT: Duration = Duration::from_secs(10);
const SERVER_PORT: u16 = 5001;

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub pass: bool,
    /// What was seen.
    pub detail: String,
}

/// What the switch configuration says about NAT, as far as the demo needs it.
#[derive(Debug, Default)]
struct NatView {
    /// Networks with `masquerade = true`, with their subnets.
    masquerading: Vec<ipnet::Ipv4Net>,
    /// Routed ports' addresses by port name (host ports excluded: nothing is masqueraded towards them).
    port_addr: Vec<(String, Ipv4Addr)>,
    /// Routed ports' addresses with their prefix length, host ports included.
    port_net: Vec<(String, ipnet::Ipv4Net)>,
    /// `[[publish]]`: (port, external_port, to).
    publish: Vec<(String, u16, SocketAddrV4)>,
}

fn nat_view(spec: &LabSpec) -> NatView {
    let mut v = NatView::default();
    let Ok(t) = toml::from_str::<toml::Table>(&spec.switch_config) else { return v };
    let arr = |k: &str| t.get(k).and_then(|x| x.as_array()).cloned().unwrap_or_default();
    for n in arr("network") {
        if n.get("masquerade").and_then(|m| m.as_bool()) == Some(true) {
            if let Some(s) = n.get("subnet").and_then(|s| s.as_str()).and_then(|s| s.parse().ok()) {
                v.masquerading.push(s);
            }
        }
    }
    for p in arr("port") {
        let name = p.get("name").and_then(|x| x.as_str()).unwrap_or_default();
        let addr: Option<ipnet::Ipv4Net> = p.get("address").and_then(|x| x.as_str()).and_then(|s| s.parse().ok());
        if let Some(a) = addr {
            if p.get("host").and_then(|h| h.as_bool()) != Some(true) {
                v.port_addr.push((name.to_string(), a.addr()));
            }
            v.port_net.push((name.to_string(), a));
        }
    }
    for p in arr("publish") {
        let port = p.get("port").and_then(|x| x.as_str()).unwrap_or_default().to_string();
        let ext = p.get("external_port").and_then(|x| x.as_integer()).and_then(|x| u16::try_from(x).ok());
        let to = p.get("to").and_then(|x| x.as_str()).and_then(|s| s.parse().ok());
        if let (Some(ext), Some(to)) = (ext, to) {
            v.publish.push((port, ext, to));
        }
    }
    v
}

/// Runs the demo on `spec`; writes progress and results to `out`; returns the checks.
pub fn run(spec: &LabSpec, opts: &LabOptions, out: &mut dyn Write) -> Result<Vec<Check>, LabError> {
    let mut lab = Lab::up(spec, opts)?;
    let _ = writeln!(out, "lab {} is up: vswitchd pid {:?} in namespace {}", opts.prefix, lab.pid(), lab.switch_ns());
    let mut checks = Vec::new();
    let mut record = |out: &mut dyn Write, c: Check| {
        let _ = writeln!(out, "{} {:<44} {}", if c.pass { "PASS" } else { "FAIL" }, c.name, c.detail);
        checks.push(c);
    };
    let nat = nat_view(spec);
    let hosts = spec.hosts.clone();
    let Some(client) = hosts.iter().find(|h| !h.external && !spec.is_host_stack(h)).cloned() else {
        return Err(LabError::Spec("the demo needs at least one host that is not external".into()));
    };
    let client_ns = lab.host_ns(&client.name);

    // Pings: every other host, then the gateway.
    let mut targets: Vec<(String, Ipv4Addr)> =
        hosts.iter().filter(|h| h.name != client.name).map(|h| (h.name.clone(), h.ip())).collect();
    if let Some(gw) = client.gateway {
        targets.insert(0, ("gateway".into(), gw));
    }
    for (name, ip) in &targets {
        let c = match ping(&client_ns, *ip, 3) {
            Ok(r) => Check {
                name: format!("ping {} -> {name} ({ip})", client.name),
                pass: r.received > 0,
                detail: format!(
                    "{}/{} replies{}",
                    r.received,
                    r.sent,
                    r.avg_ms.map(|a| format!(", avg {a:.3} ms")).unwrap_or_default()
                ),
            },
            Err(e) => Check { name: format!("ping {} -> {name}", client.name), pass: false, detail: e.to_string() },
        };
        record(out, c);
    }

    // TCP transfers from the client to every other host.
    for h in hosts.iter().filter(|h| h.name != client.name) {
        let expect_src = expected_source(&client, h, spec, &nat);
        record(out, transfer(&lab, &client, h, SERVER_PORT, h.ip(), SERVER_PORT, expect_src));
    }

    // Published ports, from the host on the publishing port.
    for (port, ext_port, to) in &nat.publish {
        let Some(outside) = hosts.iter().find(|h| &h.port == port) else { continue };
        let Some(inside) = hosts.iter().find(|h| h.ip() == *to.ip()) else { continue };
        let Some((_, port_ip)) = nat.port_addr.iter().find(|(n, _)| n == port) else { continue };
        let name = format!("published {port_ip}:{ext_port} -> {}:{}", inside.name, to.port());
        let mut c = transfer(&lab, outside, inside, to.port(), *port_ip, *ext_port, Some(outside.ip()));
        c.name = name;
        record(out, c);
    }

    // The host port: the switch namespace's own stack reaches the containers directly, untranslated.
    let containers: Vec<HostSpec> = hosts.iter().filter(|h| !h.external && !spec.is_host_stack(h)).cloned().collect();
    for h in hosts.iter().filter(|h| spec.is_host_stack(h)) {
        for c in &containers {
            let r = ping(&lab.host_ns(&h.name), c.ip(), 3);
            record(out, ping_check(&format!("ping {} (host port) -> {}", h.name, c.name), c.ip(), r));
            record(out, transfer(&lab, h, c, SERVER_PORT, c.ip(), SERVER_PORT, Some(h.ip())));
        }
    }

    // Isolation: an external host with a route to a masquerade network's subnet still cannot reach a
    // container's unpublished port.
    for ext in hosts.iter().filter(|h| h.external) {
        let Some((_, port_net)) = nat.port_net.iter().find(|(p, _)| p == &ext.port) else { continue };
        for subnet in &nat.masquerading {
            let Some(c) = containers.iter().find(|c| subnet.contains(&c.ip())) else { continue };
            record(out, unpublished(&lab, ext, c, *subnet, port_net.addr()));
        }
    }

    let stats = lab.stop_switch();
    let _ = writeln!(out, "\nvswitchd counters (stopped with SIGTERM):");
    match stats {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{}", summarize_stats(&v));
        }
        Ok(None) => {
            let _ = writeln!(out, "  (vswitchd wrote no stats file: {})", lab.state().stats_json.display());
        }
        Err(e) => {
            let _ = writeln!(out, "  {e}");
        }
    }
    lab.down()?;
    let _ = writeln!(out, "lab {} is down", opts.prefix);
    Ok(checks)
}

fn ping_check(name: &str, ip: Ipv4Addr, r: Result<super::probe::PingReport, LabError>) -> Check {
    match r {
        Ok(r) => Check {
            name: format!("{name} ({ip})"),
            pass: r.received > 0,
            detail: format!(
                "{}/{} replies{}",
                r.received,
                r.sent,
                r.avg_ms.map(|a| format!(", avg {a:.3} ms")).unwrap_or_default()
            ),
        },
        Err(e) => Check { name: name.to_string(), pass: false, detail: e.to_string() },
    }
}

/// Gives `ext` a route to `subnet` via the switch's address `via` on its link, then tries a TCP connection to
/// an unpublished port of container `c`: the check passes when it does not connect (dropped `not-published`).
fn unpublished(lab: &Lab, ext: &HostSpec, c: &HostSpec, subnet: ipnet::Ipv4Net, via: Ipv4Addr) -> Check {
    const PORT: u16 = 5002;
    let name = format!("{} -> {}:{PORT} unpublished, refused", ext.name, c.name);
    let ns = lab.host_ns(&ext.name);
    let route = super::netns::ip(&["-n", &ns, "route", "replace", &subnet.to_string(), "via", &via.to_string()]);
    if let Err(e) = route {
        return Check { name, pass: false, detail: e.to_string() };
    }
    let server = TcpServer::start(&lab.host_ns(&c.name), PORT, Duration::from_secs(3));
    let sent = tcp_send(&ns, SocketAddrV4::new(c.ip(), PORT), 1000, Duration::from_secs(2));
    let seen = server.and_then(|s| s.finish());
    match (sent, seen) {
        (Err(e), Err(_)) => Check { name, pass: true, detail: format!("no connection ({e})") },
        (_, Ok(s)) => {
            Check { name, pass: false, detail: format!("the container accepted a connection from {}", s.peer) }
        }
        (Ok(_), Err(e)) => Check { name, pass: false, detail: format!("the client connected somewhere: {e}") },
    }
}

/// The source address host `to` should see for a connection from `from`: the uplink's address when `from`'s
/// network masquerades and `to` is behind a routed port; `from`'s own otherwise.
fn expected_source(from: &HostSpec, to: &HostSpec, spec: &LabSpec, nat: &NatView) -> Option<Ipv4Addr> {
    let masq = nat.masquerading.iter().any(|n| n.contains(&from.ip()));
    if masq {
        if let Some((_, a)) = nat.port_addr.iter().find(|(p, _)| p == &to.port) {
            return Some(*a);
        }
    }
    let _ = spec;
    Some(from.ip())
}

/// A TCP transfer of [`TRANSFER_BYTES`] from `from` to a server in `to` listening on `listen_port`, connecting
/// to `dst:dst_port`; checks the byte count and, when given, the source address the server saw.
pub fn transfer(
    lab: &Lab,
    from: &HostSpec,
    to: &HostSpec,
    listen_port: u16,
    dst: Ipv4Addr,
    dst_port: u16,
    expect_src: Option<Ipv4Addr>,
) -> Check {
    let name = format!("tcp {} -> {} ({dst}:{dst_port}) 10 MB", from.name, to.name);
    transfer_between(name, &lab.host_ns(&from.name), &lab.host_ns(&to.name), listen_port, dst, dst_port, expect_src)
}

/// [`transfer`] between namespaces: a server in `to_ns` on `listen_port`, a client in `from_ns` connecting to
/// `dst:dst_port`; the check is called `name`.
pub fn transfer_between(
    name: String,
    from_ns: &str,
    to_ns: &str,
    listen_port: u16,
    dst: Ipv4Addr,
    dst_port: u16,
    expect_src: Option<Ipv4Addr>,
) -> Check {
    let result = (|| {
        let server = TcpServer::start(to_ns, listen_port, TIMEOUT)?;
        let t = tcp_send(from_ns, SocketAddrV4::new(dst, dst_port), TRANSFER_BYTES, TIMEOUT);
        let s = server.finish();
        Ok::<_, LabError>((t?, s?))
    })();
    match result {
        Ok((t, s)) => {
            let bytes_ok = t.server_bytes == TRANSFER_BYTES && s.bytes == TRANSFER_BYTES;
            let src_ok = !matches!(expect_src, Some(e) if *s.peer.ip() != e);
            Check {
                name,
                pass: bytes_ok && src_ok,
                detail: format!(
                    "{} bytes, {:.0} Mbit/s, server saw {}{}",
                    s.bytes,
                    t.mbit_per_s(),
                    s.peer.ip(),
                    expect_src.filter(|_| !src_ok).map(|e| format!(" (expected {e})")).unwrap_or_default()
                ),
            }
        }
        Err(e) => Check { name, pass: false, detail: e.to_string() },
    }
}

/// A short human summary of vswitchd's stats JSON: per port rx/tx, drops by reason, per-worker busy time.
pub fn summarize_stats(v: &serde_json::Value) -> String {
    let mut s = String::new();
    if let Some(ports) = v.get("ports").and_then(|p| p.as_object()) {
        s.push_str(&format!("  {:<12} {:>12} {:>12} {:>10}\n", "port", "rx_packets", "tx_packets", "dropped"));
        for (name, p) in ports {
            let rx = find_u64(p, "rx_packets");
            let tx = find_u64(p, "tx_packets");
            let dr = find_u64(p, "dropped");
            s.push_str(&format!("  {name:<12} {rx:>12} {tx:>12} {dr:>10}\n"));
        }
    }
    if let Some(drops) = v.get("drops").and_then(|d| d.as_object()) {
        let list: Vec<String> = drops.iter().map(|(k, n)| format!("{k}={n}")).collect();
        s.push_str(&format!("  drops: {}\n", if list.is_empty() { "none".into() } else { list.join(" ") }));
    }
    if let Some(workers) = v.get("workers").and_then(|w| w.as_array()) {
        for (i, w) in workers.iter().enumerate() {
            let busy = find_u64(w, "busy_ns");
            let pk = find_u64(w, "rx_packets");
            let per = if pk > 0 { format!(", {:.0} ns/packet", busy as f64 / pk as f64) } else { String::new() };
            s.push_str(&format!("  worker {i}: busy {:.3} s, {pk} packets{per}\n", busy as f64 / 1e9));
        }
    }
    if s.is_empty() {
        s = serde_json::to_string_pretty(v).unwrap_or_default();
    }
    s.trim_end().to_string()
}

/// The first number under key `key` anywhere in `v` (depth first), or 0.
pub fn find_u64(v: &serde_json::Value, key: &str) -> u64 {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(n) = m.get(key).and_then(|n| n.as_u64()) {
                return n;
            }
            m.values().map(|x| find_u64(x, key)).find(|&n| n > 0).unwrap_or(0)
        }
        serde_json::Value::Array(a) => a.iter().map(|x| find_u64(x, key)).find(|&n| n > 0).unwrap_or(0),
        _ => 0,
    }
}
