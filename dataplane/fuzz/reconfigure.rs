//! The body of the `reconfigure` fuzz target (`fuzz_targets/reconfigure.rs`), shared with the test that replays
//! its corpus (`dataplane/tests/fuzz_corpora.rs`, which includes this file with `#[path]`).
//!
//! An input is two small random configurations, A and B, and a program of traffic and configuration changes:
//! the switch starts on A; the program sends frames between hosts it derives from the running configuration
//! (ARP, UDP, TCP with any flags, ping, replies to what the switch sent, answers to its ARP requests), moves the
//! clock, and switches A ↔ B with [`Harness::reconfigure`] (`Switch::reconfigure`, what `apply` runs) at any
//! point, as often as it likes. Every step is checked by the pipeline harness (`harness.rs`: accounting,
//! buffers, MAC tables, isolation, NAT), including that no table entry refers to an interface, port or network
//! that the change removed or renumbered.
//!
//! # Input
//! - bytes 0..16: configuration A, 16..32: configuration B ([`config_text`]);
//! - then 4-byte operations `[op, a, b, c]` ([`Program::step`]).
//!
//! A configuration byte string that does not make a valid configuration ends the input (nothing to test).

#![allow(dead_code)]

#[path = "harness.rs"]
mod harness;

use dataplane::buffer::Nanos;
use dataplane::config::Config;
use dataplane::packet::{ip_proto, parse};
use dataplane::port::PortId;
use dataplane::wire::builder::{arp_reply, arp_request, Ipv4Spec, TcpFlags, TcpSegment};
use dataplane::wire::MacAddr;
use harness::{Harness, FUZZ_TICK};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// Bytes of one configuration in the input.
pub const CONFIG_BYTES: usize = 16;

/// The configuration TOML that 16 bytes describe: 1–3 networks (gateway, masquerade, internal,
/// `allow_routing_with` the next one, a connection limit, a MAC limit, one of two subnets), 1–6 ports (access
/// port of a network, or routed port with its own /24, possibly a host port; renamed by a bit; one of four
/// MTUs), up to two routes and two publish rules, a NAT range of 1–8 ports, a connection table of 1–16 entries
/// with second-long timeouts. Networks keep their names (`n0`…), so A → B carries state over by name.
pub fn config_text(b: &[u8; CONFIG_BYTES]) -> String {
    let nets = 1 + usize::from(b[0] % 3);
    let flags: Vec<u8> = (0..nets).map(|i| b[1 + i]).collect();
    let gw = |i: usize| flags[i] & 1 != 0;
    let internal = |i: usize| gw(i) && flags[i] & 4 != 0;
    let routable = |i: usize| gw(i) && !internal(i);
    let subnet = |i: usize| {
        let third = if flags[i] & 0x80 != 0 { 20 + i } else { 1 + i };
        format!("10.{third}.0")
    };
    let mut t = String::new();
    for (i, &f) in flags.iter().enumerate() {
        t += &format!("[[network]]\nname = \"n{i}\"\nsubnet = \"{}.0/24\"\n", subnet(i));
        if gw(i) {
            t += &format!("gateway = \"{}.1\"\n", subnet(i));
        }
        if internal(i) {
            t += "internal = true\n";
        } else if gw(i) && f & 2 != 0 {
            t += "masquerade = true\n";
        }
        let next = (i + 1) % nets;
        if f & 8 != 0 && next != i && routable(i) && routable(next) {
            t += &format!("allow_routing_with = [\"n{next}\"]\n");
        }
        if f & 16 != 0 && gw(i) {
            t += "conntrack_limit = 3\n";
        }
        t += &format!("mac_limit = {}\nmac_aging_secs = 5\n\n", [2, 4, 8, 16][usize::from((f >> 5) & 3)]);
    }
    let ports = 1 + usize::from(b[4] % 6);
    let mut routed = Vec::new();
    for j in 0..ports {
        let g = b[5 + j];
        let name = if g & 8 != 0 { format!("q{j}") } else { format!("p{j}") };
        let mtu = [1500, 1400, 1280, 576][usize::from((g >> 4) & 3)];
        t += &format!("[[port]]\nname = \"{name}\"\nkind = \"mem\"\nmtu = {mtu}\n");
        let role = usize::from(g & 3);
        if role < nets {
            t += &format!("network = \"n{role}\"\n\n");
        } else {
            t += &format!("address = \"203.0.{}.2/24\"\n", 113 + j);
            if g & 4 != 0 {
                t += "host = true\n";
            }
            t += "\n";
            routed.push((name, 113 + j));
        }
    }
    let r = b[11];
    if let (true, Some((_, third))) = (r & 1 != 0, routed.first()) {
        t += &format!("[[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"203.0.{third}.1\"\n\n");
    }
    if let (true, Some((_, third))) = (r & 2 != 0, routed.get(1)) {
        t += &format!("[[route]]\nprefix = \"198.51.100.0/24\"\nvia = \"203.0.{third}.1\"\n\n");
    }
    let p = b[12];
    if let (Some((port, _)), Some(n)) = (routed.get(usize::from(p >> 7)), (0..nets).find(|&i| routable(i))) {
        if p & 1 != 0 {
            t += &format!(
                "[[publish]]\nport = \"{port}\"\nproto = \"tcp\"\nexternal_port = 8080\nto = \"{}.2:80\"\n\n",
                subnet(n)
            );
        }
        if p & 2 != 0 {
            t += &format!(
                "[[publish]]\nport = \"{port}\"\nproto = \"udp\"\nexternal_port = 5353\nto = \"{}.3:53\"\n\n",
                subnet(n)
            );
        }
    }
    t += &format!("[nat]\nport_range = \"1024-{}\"\n\n", 1024 + u16::from(b[13] % 8));
    let s = 1 + u64::from(b[15] % 3);
    t += &format!(
        "[conntrack]\nlimit = {}\ntcp_strict = {}\ntcp_syn_sent_secs = {}\ntcp_established_secs = {}\n\
         tcp_fin_wait_secs = {s}\ntcp_time_wait_secs = {s}\ntcp_close_secs = {s}\nudp_secs = {}\n\
         udp_assured_secs = {}\nicmp_secs = {}\ntcp_unreplied_secs = {}\n",
        1 + b[14] % 16,
        b[14] & 0x80 != 0,
        3 * s,
        10 * s,
        2 * s,
        4 * s,
        2 * s,
        2 * s
    );
    t
}

/// The configuration 16 bytes describe, if valid.
pub fn config(b: &[u8; CONFIG_BYTES]) -> Option<Config> {
    Config::parse(&config_text(b), "reconfigure").ok()
}

/// Runs one input (see the module documentation).
pub fn reconfigure(data: &[u8]) {
    let Some((a, rest)) = data.split_first_chunk::<CONFIG_BYTES>() else { return };
    let Some((b, ops)) = rest.split_first_chunk::<CONFIG_BYTES>() else { return };
    let (Some(a), Some(b)) = (config(a), config(b)) else { return };
    let mut p = Program { h: Some(Harness::new(&a)), cfgs: [a, b], on: 0 };
    for op in ops.chunks_exact(4) {
        p.step([op[0], op[1], op[2], op[3]]);
    }
    p.h().finish();
}

/// A running input: the harness and the two configurations.
pub struct Program {
    h: Option<Harness>,
    cfgs: [Config; 2],
    /// Which configuration runs.
    on: usize,
}

/// A host the program sends from: its port, MAC and address.
#[derive(Debug, Clone, Copy)]
struct Host {
    port: PortId,
    mac: MacAddr,
    ip: Ipv4Addr,
}

impl Program {
    fn h(&mut self) -> &mut Harness {
        self.h.as_mut().expect("a harness between steps")
    }

    fn cfg(&self) -> &Config {
        &self.cfgs[self.on]
    }

    /// The subnet of port `q`: its network's, or its own address's for a routed port.
    fn subnet_of(&self, q: usize) -> Option<Ipv4Net> {
        let p = self.cfg().ports.get(q)?;
        match (&p.network, p.address) {
            (Some(n), _) => self.cfg().networks.iter().find(|x| &x.name == n)?.subnet,
            (None, Some(a)) => Some(a.trunc()),
            _ => None,
        }
    }

    /// Host `k` (0..4) behind port `a % ports`. Its MAC depends on its subnet and `k` only, so the same host
    /// seen on another port of its network is a MAC move.
    fn host(&self, a: u8, k: u8) -> Host {
        let q = usize::from(a) % self.cfg().ports.len();
        let k = k % 4;
        let subnet = self.subnet_of(q).unwrap_or_else(|| "10.99.0.0/24".parse().expect("a prefix"));
        let base = u32::from(subnet.network());
        let routed = self.cfg().ports[q].address.is_some();
        // Routed ports: .1 is the next hop the routes use, .2 the switch; a host beyond the link otherwise.
        let ip = match (routed, k) {
            (true, 0) => Ipv4Addr::from(base + 1),
            (true, 3) => Ipv4Addr::new(198, 51, 100, 9),
            (true, _) => Ipv4Addr::from(base + 2 + u32::from(k)),
            (false, _) => Ipv4Addr::from(base + 2 + u32::from(k)),
        };
        let o = subnet.network().octets();
        Host { port: q as PortId, mac: MacAddr([2, 0, o[1], o[2], k, 1]), ip }
    }

    /// Destination `c` from the addresses the configuration makes interesting.
    fn target(&self, c: u8) -> Ipv4Addr {
        let mut list = vec![Ipv4Addr::new(198, 51, 100, 7)];
        for n in &self.cfg().networks {
            if let Some(s) = n.subnet {
                let base = u32::from(s.network());
                list.extend([base + 1, base + 2, base + 3].map(Ipv4Addr::from));
            }
        }
        for p in &self.cfg().ports {
            if let Some(a) = p.address {
                list.extend([a.addr(), Ipv4Addr::from(u32::from(a.network()) + 1)]);
            }
        }
        list[usize::from(c) % list.len()]
    }

    /// The MAC `from` sends to for `dst`: the host's own on its subnet, else its port's router MAC (broadcast
    /// when the port has no router interface).
    fn next_mac(&self, from: &Host, dst: Ipv4Addr) -> MacAddr {
        let topo = self.h.as_ref().expect("harness").testbed().switch().topology();
        let rif = topo.rif_of_port(from.port).map(|r| &topo.rifs[r as usize]);
        match (self.subnet_of(from.port as usize), rif) {
            (_, Some(r)) if r.addr == dst => r.mac,
            (Some(s), _) if s.contains(&dst) => {
                let o = s.network().octets();
                let k = (u32::from(dst) - u32::from(s.network())).wrapping_sub(2) as u8;
                MacAddr([2, 0, o[1], o[2], k % 4, 1])
            }
            (_, Some(r)) => r.mac,
            _ => MacAddr([0xff; 6]),
        }
    }

    /// One operation `[op, a, b, c]`: `op % 8` picks it.
    /// 0 clock `a` × 50 ms; 1 ARP request from host (a, b) for target c; 2 UDP, 3 TCP (flags from `op`'s high
    /// bits), 4 ping from host (a, b) to target c; 5 a reply to the `a`-th frame the last step sent; 6 switch to
    /// the other configuration; 7 answer every ARP request the last step sent.
    pub fn step(&mut self, [op, a, b, c]: [u8; 4]) {
        match op % 8 {
            0 => self.h().advance(Nanos::from(a) * FUZZ_TICK),
            1..=4 => {
                let from = self.host(a, b);
                let dst = self.target(c);
                let spec = Ipv4Spec::new(from.mac, self.next_mac(&from, dst), from.ip, dst);
                let dport = [53, 80, 5353, 8080, 22, 9][usize::from(c >> 5) % 6];
                let sport = 40000 + u16::from(b >> 2);
                let frame = match op % 8 {
                    1 => arp_request(from.mac, from.ip, dst),
                    2 => spec.udp(sport, dport, usize::from(op >> 3)),
                    3 => spec.tcp(TcpSegment::new(sport, dport, tcp_flags(op >> 3)), usize::from(op >> 6)),
                    _ => spec.icmp_echo_request(sport, u16::from(b), 8),
                };
                self.h().send(from.port, &frame);
            }
            5 => {
                let sent = self.h().last_sent().to_vec();
                if let Some((q, f)) = sent.get(usize::from(a) % sent.len().max(1)) {
                    if let Some(reply) = reply_to(f, tcp_flags(b)) {
                        self.h().send(*q, &reply);
                    }
                }
            }
            6 => {
                self.on ^= 1;
                let cfg = self.cfgs[self.on].clone();
                let h = self.h.take().expect("a harness between steps");
                self.h = Some(h.reconfigure(&cfg).0);
            }
            _ => {
                let sent = self.h().last_sent().to_vec();
                for (q, f) in sent {
                    // An ARP request (broadcast, opcode 1): answered by the target with a MAC of its own.
                    if f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 1] {
                        let asker = MacAddr::from_slice(&f[22..28]).expect("6 bytes");
                        let asker_ip = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
                        let target = Ipv4Addr::new(f[38], f[39], f[40], f[41]);
                        let o = target.octets();
                        let mac = MacAddr([2, 1, o[0], o[1], o[2], o[3]]);
                        self.h().send(q, &arp_reply(mac, target, asker, asker_ip));
                    }
                }
            }
        }
    }
}

/// TCP flags from a byte's low three bits: SYN, SYN|ACK, ACK, PSH|ACK, FIN|ACK, RST, RST|ACK, none.
fn tcp_flags(x: u8) -> TcpFlags {
    use TcpFlags as F;
    [F::SYN, F::SYN | F::ACK, F::ACK, F::PSH | F::ACK, F::FIN | F::ACK, F::RST, F::RST | F::ACK, F::NONE]
        [usize::from(x % 8)]
}

/// A reply to an IPv4 UDP, TCP or ICMP echo frame the switch sent: addresses, MACs and ports swapped (TCP with
/// `flags`); `None` for anything else.
fn reply_to(f: &[u8], flags: TcpFlags) -> Option<Vec<u8>> {
    let p = parse(f).ok()?;
    let (l3, l4) = (usize::from(p.l3), usize::from(p.l4));
    if p.ethertype != 0x0800 || l4 <= l3 || p.later_fragment {
        return None;
    }
    let ip = |o: usize| Some(Ipv4Addr::new(*f.get(o)?, f[o + 1], f[o + 2], f[o + 3]));
    let (src, dst) = (ip(l3 + 12)?, ip(l3 + 16)?);
    let spec = Ipv4Spec::new(MacAddr::from_slice(&f[0..6])?, MacAddr::from_slice(&f[6..12])?, dst, src);
    let port = |o: usize| Some(u16::from_be_bytes([*f.get(o)?, *f.get(o + 1)?]));
    match p.ip_proto {
        ip_proto::UDP => Some(spec.udp(port(l4 + 2)?, port(l4)?, 4)),
        ip_proto::TCP => Some(spec.tcp(TcpSegment::new(port(l4 + 2)?, port(l4)?, flags), 0)),
        ip_proto::ICMP if f.get(l4) == Some(&8) => Some(spec.icmp_echo_reply(port(l4 + 4)?, port(l4 + 6)?, 8)),
        _ => None,
    }
}

/// Encodes an input: configurations A and B, then operations.
pub fn encode(a: [u8; CONFIG_BYTES], b: [u8; CONFIG_BYTES], ops: &[[u8; 4]]) -> Vec<u8> {
    let mut out = a.to_vec();
    out.extend_from_slice(&b);
    for op in ops {
        out.extend_from_slice(op);
    }
    out
}
