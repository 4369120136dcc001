//! The invariant checker shared by the `pipeline` fuzz target (`fuzz_targets/pipeline.rs`) and the property
//! tests (`dataplane/tests/pipeline_props.rs`, which includes this file with `#[path]`).
//!
//! [`Harness`] wraps a [`Testbed`] and checks, after every injected frame and every clock step, what must hold
//! whatever the input:
//!
//! 1. **Accounting** (the rule in `dataplane/src/counters.rs`): each frame received on a port ends in exactly one
//!    of `forwarded`, `flooded`, `routed`, or `dropped` by the bridge; the router's drops of a frame it was
//!    handed add to `dropped` too, so per port `rx <= forwarded + flooded + routed + dropped <= rx + routed`,
//!    and a port with no router interface has `rx == forwarded + flooded + dropped` and `routed == 0`.
//!    Checked per step as well (one frame in: exactly one outcome; extra `dropped` only when it was routed;
//!    other ports' counters move only by the router dropping their held frames); every port-charged drop has
//!    a named reason (`sum(dropped) <= total_drops()`); `tx_packets` moves by exactly the frames each port sent.
//! 2. **Buffers**: none leaked. Between steps the only frames out of the pool are those the neighbour table
//!    holds for unresolved next hops (1..=`queue_len` per incomplete entry); once nothing is pending, every
//!    buffer is back ([`Harness::finish`] runs the clock until then).
//! 3. **MAC tables**: no network's FDB holds more than its `mac_limit`, and every entry points at a port of
//!    that network.
//! 4. **Isolation**: a frame leaves a port only as an unchanged copy of the frame just received, on another port
//!    of the same network (never the ingress port), or as a frame the router made or rewrote, with the
//!    egress port's router-interface MAC as source (so a port with no router interface only ever carries
//!    bridged copies from its own network). Unchanged copies match the outcome: one for `forwarded`, none for a
//!    drop or `routed`, at least one for `flooded` (zero allowed when the router took a copy of a broadcast
//!    ARP), never more than the other ports of the network.
//! 5. **Egress size**: no frame leaves longer than the egress port's MTU + Ethernet header + its VLAN tags.
//! 6. **NAT**: the connection table's own invariants hold ([`Conntrack::check_invariants`]), it holds at most its
//!    limit, the masquerade ports in use equal the connections holding one (`Nat::check_invariants`), and no
//!    IPv4 packet received from a masquerade network leaves a routed port with a source address inside a
//!    masquerade network (translated or dropped, never leaked).
//! 7. **References**: no table entry names an object that is not there (after a reconfiguration too): every
//!    neighbour's interface exists and its subnet holds the neighbour; every connection's NAT port belongs to
//!    the interface whose address it translates to (`allocator`: that interface's address is the reply's
//!    destination), and the network it counts against (`group`) is a network interface whose subnet holds one
//!    of its inside ends.
//!
//! [`Harness::reconfigure`] changes the configuration between steps as `apply` does; the cumulative checks (1)
//! then start again from the counters at that moment, since a port that changed role (access ↔ routed) keeps
//! its counters.
//!
//! Panics (with the step number and a description) on the first violation; that is what the fuzzer and
//! proptest look for.

#![allow(dead_code)] // Each includer uses a different part.

use dataplane::batch::Batch;
use dataplane::buffer::{BufPool, Frame};
use dataplane::buffer::{Nanos, MAX_FRAME_LEN, NANOS_PER_SEC};
use dataplane::config::Config;
#[allow(unused_imports)] // linked from the module documentation
use dataplane::conntrack::Conntrack;
use dataplane::counters::PortCounters;
use dataplane::neigh::NeighConfig;
use dataplane::packet::{ip_proto, parse};
use dataplane::pipeline::{Inbox, Shard, Switch, TxQueues, Update, HOUSEKEEPING_INTERVAL};
use dataplane::port::mem::MemPort;
use dataplane::port::Port;
use dataplane::port::PortId;
use dataplane::testbed::Testbed;
use dataplane::topology::Topology;
use dataplane::wire::builder::{arp_reply, arp_request, Ipv4Spec, TcpFlags, TcpSegment};
use dataplane::wire::MacAddr;
use ipnet::Ipv4Net;
use std::collections::VecDeque;
use std::net::Ipv4Addr;

/// L2 only: two networks, four ports, tiny MAC tables (4 and 8 entries, against a pool of 12 hosts) with short
/// ageing, so eviction and ageing happen; one network with a single port (floods go nowhere).
pub const L2_CONFIG: &str = r#"
[[network]]
name = "red"
mac_limit = 4
mac_aging_secs = 5

[[network]]
name = "blue"
mac_limit = 8
mac_aging_secs = 5

[[port]]
name = "a"
kind = "mem"
network = "red"

[[port]]
name = "b"
kind = "mem"
network = "red"

[[port]]
name = "c"
kind = "mem"
network = "red"
mtu = 1400

[[port]]
name = "x"
kind = "mem"
network = "blue"
"#;

/// Two networks with gateways (the switch routes between them, answers ARP and ping), one L2-only network, and
/// a routed port `up` (203.0.113.2/24) carrying the default route via 203.0.113.1, with MAC tables as small as in
/// [`L2_CONFIG`]. Port `d` has a smaller MTU, so routing into `blue` can need fragmentation and flooding can fail
/// on egress. Ports by index: a 0, b 1 (red), c 2, d 3 (blue), e 4, f 5 (lab), up 6.
///
/// NAT: `red` masquerades out of `up` (isolated, but `allow_routing_with` blue, so red and blue route to each
/// other; `up` reaches red only through NAT, `not-published` otherwise); `up` publishes TCP 8080 to 10.1.0.2:80 (red, so red hosts hairpin) and
/// UDP 5353 to 10.2.0.3:53 (blue). The connection table holds 16 connections, masquerade has 8 ports
/// (1024-1031) and timeouts are seconds, so the table fills, ports run out and connections expire.
pub const ROUTED_CONFIG: &str = r#"
[[network]]
name = "red"
subnet = "10.1.0.0/24"
gateway = "10.1.0.1"
masquerade = true
allow_routing_with = ["blue"]
mac_limit = 4
mac_aging_secs = 5

[[network]]
name = "blue"
subnet = "10.2.0.0/24"
gateway = "10.2.0.1"
mac_limit = 8
mac_aging_secs = 5

[[network]]
name = "lab"
mac_limit = 8
mac_aging_secs = 5

[[port]]
name = "a"
kind = "mem"
network = "red"

[[port]]
name = "b"
kind = "mem"
network = "red"

[[port]]
name = "c"
kind = "mem"
network = "blue"

[[port]]
name = "d"
kind = "mem"
network = "blue"
mtu = 1400

[[port]]
name = "e"
kind = "mem"
network = "lab"

[[port]]
name = "f"
kind = "mem"
network = "lab"

[[port]]
name = "up"
kind = "mem"
address = "203.0.113.2/24"

[[route]]
prefix = "0.0.0.0/0"
via = "203.0.113.1"

[[publish]]
port = "up"
proto = "tcp"
external_port = 8080
to = "10.1.0.2:80"

[[publish]]
port = "up"
proto = "udp"
external_port = 5353
to = "10.2.0.3:53"

[nat]
port_range = "1024-1031"

[conntrack]
limit = 16
tcp_syn_sent_secs = 3
tcp_syn_recv_secs = 3
tcp_established_secs = 10
tcp_fin_wait_secs = 2
tcp_close_wait_secs = 2
tcp_last_ack_secs = 2
tcp_time_wait_secs = 2
tcp_close_secs = 1
udp_secs = 2
udp_assured_secs = 4
icmp_secs = 2
"#;

/// Parses one of the configurations above (panics on an invalid one: a bug in this file).
pub fn config(text: &str) -> Config {
    Config::parse(text, "harness").unwrap_or_else(|e| panic!("harness config: {e}"))
}

/// Time unit of the fuzz input's time-delta byte.
pub const FUZZ_TICK: Nanos = NANOS_PER_SEC / 20;
/// Longest frame a fuzz record may carry (longer ones are cut; the switch refuses them anyway).
pub const FUZZ_MAX_FRAME: usize = 2048;

/// Runs a fuzz input through a testbed for `cfg`, checking every invariant. The input is a sequence of records
/// `[port: u8][dt: u8][len: u16 LE][len bytes of frame]`: the clock moves `dt` × [`FUZZ_TICK`], then the frame is
/// received on port `port % ports`. A last record shorter than its `len` carries what is left.
pub fn run_records(cfg: &Config, data: &[u8]) {
    replay(Harness::new(cfg), data);
}

/// Runs a fuzz input (see [`run_records`]) through `h`, then [`Harness::finish`]es it; returns it for more checks.
pub fn replay(mut h: Harness, data: &[u8]) -> Harness {
    for (port, dt, frame) in records(data) {
        h.advance(Nanos::from(dt) * FUZZ_TICK);
        let port = usize::from(port) % h.ports();
        h.send(port as PortId, frame);
    }
    h.finish();
    h
}

/// Splits a fuzz input into `(port, dt, frame)` records (see [`run_records`]).
pub fn records(mut data: &[u8]) -> Vec<(u8, u8, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let (port, dt) = (data[0], data[1]);
        let len = usize::from(u16::from_le_bytes([data[2], data[3]])).min(FUZZ_MAX_FRAME);
        data = &data[4..];
        let (frame, rest) = data.split_at(len.min(data.len()));
        out.push((port, dt, frame));
        data = rest;
    }
    out
}

/// Encodes records in the format [`run_records`] reads (for seed corpora and reproducers).
pub fn encode_records(records: &[(u8, u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (port, dt, frame) in records {
        out.push(*port);
        out.push(*dt);
        out.extend_from_slice(&(frame.len() as u16).to_le_bytes());
        out.extend_from_slice(frame);
    }
    out
}

/// A testbed whose every step is checked. See the module documentation.
#[derive(Debug)]
pub struct Harness {
    tb: Testbed,
    step: u64,
    meta: Meta,
    /// What the last step sent, by port.
    last_sent: Vec<(PortId, Vec<u8>)>,
    /// Per port: its counters when this harness was made (a reconfiguration keeps them by name).
    base: Vec<PortCounters>,
    /// The switch-wide drops by reason when this harness was made.
    base_drops: u64,
    /// Frames the router held for ARP when this harness was made (a reconfiguration that kept the router): they
    /// were counted received before, and their drop, if they are dropped, is counted after.
    held_before: u64,
    /// Of `held_before`, how many may still be dropped against a port that has no router interface now: a frame
    /// received on a port of a network with a gateway, held for ARP, and carried over by a reconfiguration that
    /// took the gateway away, is answered Host Unreachable when its neighbour fails, and that drop is charged to
    /// the port it was received on (found by the `reconfigure` target: `crash-drop-charged-to-a-port-without-router`).
    held_from_before: u64,
}

/// What the checks need to know of a topology's ports and networks.
#[derive(Debug, Clone)]
struct Meta {
    /// Per port: the MAC of its router interface (own or its network's gateway), if any.
    rif_mac: Vec<Option<MacAddr>>,
    /// Per port: its network.
    network: Vec<Option<u16>>,
    /// Per port: longest untagged frame it may send.
    max_len: Vec<usize>,
    /// Per network: whether it has a gateway.
    net_has_gw: Vec<bool>,
    /// Per network: its ports.
    net_ports: Vec<Vec<PortId>>,
    /// Per network: its MAC limit.
    mac_limit: Vec<usize>,
    /// Per port: an access port of a masquerade network.
    masquerading: Vec<bool>,
    /// Per port: a routed port that is not a host port (where a masquerade network's address must not leak).
    routed: Vec<bool>,
    /// The subnets of masquerade networks.
    masquerade_subnets: Vec<(u32, u32)>,
}

impl Meta {
    fn of(topo: &Topology) -> Meta {
        let rif_mac =
            (0..topo.ports.len()).map(|p| topo.rif_of_port(p as PortId).map(|r| topo.rifs[r as usize].mac)).collect();
        let network = topo.ports.iter().map(|p| p.network).collect();
        let max_len = topo.ports.iter().map(|p| p.max_frame_len()).collect();
        let net_has_gw = topo.networks.iter().map(|n| n.rif.is_some()).collect();
        let net_ports = topo.networks.iter().map(|n| n.ports.clone()).collect();
        let mac_limit = topo.networks.iter().map(|n| n.mac_limit).collect();
        let masquerading = topo
            .ports
            .iter()
            .map(|p| {
                p.network.and_then(|n| topo.networks[n as usize].rif).is_some_and(|r| topo.rifs[r as usize].masquerade)
            })
            .collect();
        // Host ports excluded: the host sees its containers' own addresses (nothing is masqueraded towards it).
        let routed = topo.ports.iter().map(|p| p.rif.is_some_and(|r| !topo.rifs[r as usize].host)).collect();
        let masquerade_subnets = topo
            .rifs
            .iter()
            .filter(|r| r.masquerade)
            .map(|r| (u32::from(r.subnet.network()), u32::from(r.subnet.netmask())))
            .collect();
        Meta { rif_mac, network, max_len, net_has_gw, net_ports, mac_limit, masquerading, routed, masquerade_subnets }
    }

    fn ports(&self) -> usize {
        self.network.len()
    }

    /// A frame on port `q` that is not an unchanged bridged copy: the router made or rewrote it.
    fn check_router_frame(&self, what: &str, q: usize, f: &[u8]) {
        let src = MacAddr::from_slice(f.get(6..).unwrap_or_default());
        match self.rif_mac[q] {
            Some(mac) => assert!(
                src == Some(mac),
                "{what}: frame out of port {q} is neither an unchanged copy nor from its router MAC {mac:?}: {f:02x?}"
            ),
            None => panic!("{what}: port {q} has no router interface, yet sent a changed frame: {f:02x?}"),
        }
    }

    /// A frame from a masquerade network out of routed port `q`: if IPv4, its source is not an inside address.
    fn check_not_leaked(&self, what: &str, q: usize, f: &[u8]) {
        if f.get(12..14) != Some(&[0x08, 0x00]) || f.len() < 34 {
            return;
        }
        let src = u32::from_be_bytes([f[26], f[27], f[28], f[29]]);
        let leaked = self.masquerade_subnets.iter().any(|&(net, mask)| src & mask == net);
        assert!(!leaked, "{what}: masquerade network's address leaked out of routed port {q}: {f:02x?}");
    }

    /// `tx_packets` moved by exactly the frames each port sent, and none is longer than its port allows.
    fn check_tx(&self, what: &str, before: &[PortCounters], after: &[PortCounters], sent: &[(PortId, Vec<u8>)]) {
        for q in 0..self.ports() {
            let n = sent.iter().filter(|(p, _)| *p as usize == q).count() as u64;
            let d = after[q].tx_packets - before[q].tx_packets;
            assert_eq!(d, n, "{what}: port {q} counted {d} tx but sent {n}");
        }
        for (q, f) in sent {
            let limit = self.max_len[*q as usize] + vlan_allowance(f);
            assert!(f.len() <= limit, "{what}: {}-byte frame out of port {q} (limit {limit})", f.len());
        }
    }

    /// The tables of one switch (or shard): MAC tables within their limits and on their network's ports, the
    /// connection table within its limit with NAT's invariants, and no entry naming a missing interface.
    fn check_tables(&self, what: &str, sw: &Switch, now: Nanos) {
        for (n, ports) in self.net_ports.iter().enumerate() {
            let fdb = sw.fdb(n as u16);
            assert!(fdb.len() <= self.mac_limit[n], "{what}: network {n} FDB has {} entries", fdb.len());
            for e in fdb.entries(now) {
                assert!(ports.contains(&e.port), "{what}: network {n} learned {:?} on foreign port {}", e.mac, e.port);
            }
        }
        let ct = sw.conntrack();
        assert!(ct.len() <= ct.config().limit, "{what}: {} connections, limit {}", ct.len(), ct.config().limit);
        if let Err(e) = sw.router().nat().check_invariants() {
            panic!("{what}: NAT invariant: {e}");
        }
        check_references(what, sw, now);
    }
}

/// Buffers in the harness's pool: enough for every queue a small configuration holds at once (held ARP
/// frames, a flood), a fraction of the testbed's default 4096 (allocating and zeroing 8 MiB per input was the
/// fuzzer's whole cost).
pub const POOL: usize = 256;

impl Harness {
    /// A fresh testbed for `cfg`, with a pool of [`POOL`] buffers.
    pub fn new(cfg: &Config) -> Harness {
        Harness::with_testbed(Testbed::with_pool(cfg, POOL))
    }

    /// A harness around `tb`.
    pub fn with_testbed(tb: Testbed) -> Harness {
        let topo = tb.switch().topology();
        let meta = Meta::of(topo);
        let base = (0..topo.ports.len()).map(|p| tb.switch().counters().port(p as PortId)).collect();
        let base_drops = tb.switch().counters().total_drops();
        let held_before = (tb.total_buffers() - tb.free_buffers()) as u64;
        let h = Harness {
            held_before,
            held_from_before: held_before,
            base,
            base_drops,
            tb,
            step: 0,
            meta,
            last_sent: Vec::new(),
        };
        h.check_state("start");
        h
    }

    /// Changes the configuration to `cfg` now, as `apply` does (see [`Testbed::reconfigure`]), and checks the
    /// state the change left; the cumulative checks restart from here.
    pub fn reconfigure(self, cfg: &Config) -> (Harness, dataplane::pipeline::Carried) {
        let step = self.step + 1;
        let mut tb = self.tb;
        let carried = tb.reconfigure(cfg);
        let mut h = Harness::with_testbed(tb);
        h.step = step;
        (h, carried)
    }

    /// Number of ports.
    pub fn ports(&self) -> usize {
        self.meta.network.len()
    }

    /// The testbed (for extra checks by the caller).
    pub fn testbed(&self) -> &Testbed {
        &self.tb
    }

    fn counters(&self) -> Vec<PortCounters> {
        let c = self.tb.switch().counters();
        (0..self.ports()).map(|p| c.port(p as PortId)).collect()
    }

    /// Receives `frame` on port `port` now, then checks everything.
    pub fn send(&mut self, port: PortId, frame: &[u8]) {
        self.step += 1;
        let what = format!("step {}: {} bytes on port {port}", self.step, frame.len());
        let before = self.counters();
        // MemPort takes a frame longer than a small buffer into a large one while any is free, else refuses it
        // before the switch sees it.
        let fits = frame.len() <= MAX_FRAME_LEN || self.tb.free_large_buffers() > 0;
        self.tb.send_on(port, &[frame]);
        let after = self.counters();
        let sent = self.take_sent();
        let p = port as usize;
        let received = u64::from(fits);
        for (q, (b, a)) in before.iter().zip(&after).enumerate() {
            let d = Delta::new(b, a);
            let has_rif = self.meta.rif_mac[q].is_some();
            if q != p {
                assert!(
                    d.rx == 0 && d.forwarded == 0 && d.flooded == 0 && d.routed == 0,
                    "{what}: ingress counters of port {q} moved: {b:?} -> {a:?}"
                );
                assert!(d.dropped == 0 || has_rif, "{what}: port {q} (no router) charged a drop: {b:?} -> {a:?}");
                continue;
            }
            assert_eq!(d.rx, received, "{what}: rx_packets {b:?} -> {a:?}");
            let outcomes = d.forwarded + d.flooded + d.routed;
            assert!(outcomes <= 1, "{what}: more than one outcome: {b:?} -> {a:?}");
            let total = outcomes + d.dropped;
            assert!(
                total >= received && total - received <= d.routed,
                "{what}: frame not accounted exactly once (extra drops only for routed frames): {b:?} -> {a:?}"
            );
            assert!(has_rif || d.routed == 0, "{what}: routed on a port without router: {b:?} -> {a:?}");
        }
        self.check_cumulative(&what, &after);
        self.meta.check_tx(&what, &before, &after, &sent);
        // Isolation and unchanged copies.
        let mut copies = 0u64;
        for (q, f) in &sent {
            let q = *q as usize;
            if f.as_slice() == frame {
                copies += 1;
                assert!(q != p, "{what}: bridged copy sent back out of its ingress port");
                assert!(
                    self.meta.network[q].is_some() && self.meta.network[q] == self.meta.network[p],
                    "{what}: unchanged frame left its network: out of port {q} ({:?}), in on {p} ({:?})",
                    self.meta.network[q],
                    self.meta.network[p]
                );
            } else {
                self.meta.check_router_frame(&what, q, f);
                if self.meta.masquerading[p] && self.meta.routed[q] {
                    self.meta.check_not_leaked(&what, q, f);
                }
            }
        }
        let d = Delta::new(&before[p], &after[p]);
        let max_copies = self.meta.network[p].map_or(0, |n| self.meta.net_ports[n as usize].len() as u64 - 1);
        assert!(copies <= max_copies, "{what}: {copies} copies, network has {max_copies} other ports");
        if d.forwarded == 1 {
            assert_eq!(copies, 1, "{what}: forwarded but {copies} copies sent");
        } else if d.flooded == 1 {
            let router_copy = self.meta.network[p].is_some_and(|n| self.meta.net_has_gw[n as usize]);
            assert!(copies >= 1 || router_copy, "{what}: flooded but no copy sent");
        } else {
            assert_eq!(copies, 0, "{what}: not forwarded nor flooded, yet {copies} unchanged copies sent");
        }
        self.check_state(&what);
        self.last_sent = sent;
    }

    /// The frames the last [`Harness::send`] made the switch send, with their ports (for replies).
    pub fn last_sent(&self) -> &[(PortId, Vec<u8>)] {
        &self.last_sent
    }

    /// Moves the clock forward by `dt` (housekeeping runs at every interval boundary), then checks everything.
    pub fn advance(&mut self, dt: Nanos) {
        if dt == 0 {
            return;
        }
        self.step += 1;
        let what = format!("step {}: advance {dt} ns to {}", self.step, self.tb.now() + dt);
        let before = self.counters();
        let drops_before = self.tb.switch().counters().drops_by_name();
        self.tb.advance(dt);
        let after = self.counters();
        let sent = self.take_sent();
        for (q, (b, a)) in before.iter().zip(&after).enumerate() {
            let d = Delta::new(b, a);
            assert!(
                d.rx == 0 && d.forwarded == 0 && d.flooded == 0 && d.routed == 0,
                "{what}: ingress counters of port {q} moved: {b:?} -> {a:?}"
            );
            if self.meta.rif_mac[q].is_none() && d.dropped > 0 {
                // Only frames held since before a reconfiguration (see `held_from_before`).
                assert!(
                    d.dropped <= self.held_from_before,
                    "{what}: port {q} (no router) charged {} drops, {} frames held from before ({drops_before:?} -> {:?})",
                    d.dropped,
                    self.held_from_before,
                    self.tb.switch().counters().drops_by_name()
                );
                self.held_from_before -= d.dropped;
            }
        }
        self.check_cumulative(&what, &after);
        self.meta.check_tx(&what, &before, &after, &sent);
        for (q, f) in &sent {
            self.meta.check_router_frame(&what, *q as usize, f);
        }
        self.check_state(&what);
    }

    /// Runs the clock until no neighbour is being resolved (at most a minute of virtual time), then requires
    /// every buffer back in the pool.
    pub fn finish(&mut self) {
        let mut waited = 0;
        while self.tb.switch().has_pending() {
            assert!(waited < 60 * NANOS_PER_SEC, "step {}: neighbours still pending after 60 s", self.step);
            self.advance(NANOS_PER_SEC / 10);
            waited += NANOS_PER_SEC / 10;
        }
        assert_eq!(self.tb.free_buffers(), self.tb.total_buffers(), "step {}: buffers leaked at the end", self.step);
    }

    fn take_sent(&mut self) -> Vec<(PortId, Vec<u8>)> {
        let mut out = Vec::new();
        for q in 0..self.ports() {
            let name = self.tb.switch().topology().ports[q].name.clone();
            out.extend(self.tb.take(&name).into_iter().map(|f| (q as PortId, f)));
        }
        out
    }

    fn check_cumulative(&self, what: &str, now: &[PortCounters]) {
        let mut port_drops = 0;
        for (q, (c, b)) in now.iter().zip(&self.base).enumerate() {
            let c = PortCounters {
                rx_packets: c.rx_packets - b.rx_packets,
                forwarded: c.forwarded - b.forwarded,
                flooded: c.flooded - b.flooded,
                routed: c.routed - b.routed,
                dropped: c.dropped - b.dropped,
                ..*c
            };
            let handled = c.forwarded + c.flooded + c.routed + c.dropped;
            let held = self.held_before;
            if self.meta.rif_mac[q].is_none() {
                assert!(
                    c.routed == 0 && handled >= c.rx_packets && handled <= c.rx_packets + held,
                    "{what}: port {q} (L2 only): {c:?}"
                );
            } else {
                assert!(
                    c.rx_packets <= handled && handled <= c.rx_packets + c.routed + held,
                    "{what}: port {q}: rx <= forwarded + flooded + routed + dropped <= rx + routed fails: {c:?}"
                );
            }
            port_drops += c.dropped;
        }
        let reasons = self.tb.switch().counters().total_drops() - self.base_drops;
        assert!(port_drops <= reasons, "{what}: {port_drops} drops charged to ports but only {reasons} with a reason");
    }

    /// Checks the tables and the buffer pool.
    fn check_state(&self, what: &str) {
        let sw = self.tb.switch();
        let now = self.tb.now();
        self.meta.check_tables(what, sw, now);
        let in_use = self.tb.total_buffers() - self.tb.free_buffers();
        let incomplete = sw.router().neighbours(now).iter().filter(|e| e.state == "incomplete").count();
        let queue_len = NeighConfig::default().queue_len;
        assert!(
            incomplete <= in_use && in_use <= incomplete * queue_len,
            "{what}: {in_use} buffers in use with {incomplete} unresolved neighbours (each holds 1..={queue_len})"
        );
        assert_eq!(incomplete > 0, sw.has_pending(), "{what}: has_pending disagrees with the neighbour table");
    }
}

/// No neighbour or connection of `sw` names an interface that is not there, or the wrong one (invariant 7).
fn check_references(what: &str, sw: &Switch, now: Nanos) {
    let rifs = &sw.topology().rifs;
    for n in sw.router().neighbours(now) {
        let r = rifs.get(usize::from(n.rif));
        assert!(r.is_some_and(|r| r.subnet.contains(&n.ip)), "{what}: neighbour {n:?} on a foreign interface");
    }
    for (_, e) in sw.conntrack().all_entries() {
        let Some(nat) = e.nat else { continue };
        if let Some(a) = nat.allocator {
            let r = rifs.get(usize::from(a));
            assert!(
                r.is_some_and(|r| r.addr == e.reply.dst),
                "{what}: connection {e:?}: its NAT port is held by interface {a} ({r:?}), not the one it uses"
            );
        }
        if let Some(g) = nat.group {
            let r = rifs.get(usize::from(g));
            assert!(
                r.is_some_and(|r| !r.routed_port && (r.subnet.contains(&e.orig.src) || r.subnet.contains(&e.reply.src))),
                "{what}: connection {e:?} counts against interface {g} ({r:?}), not its network"
            );
        }
    }
}

/// Counter movement of one port over one step.
#[derive(Debug)]
struct Delta {
    rx: u64,
    forwarded: u64,
    flooded: u64,
    routed: u64,
    dropped: u64,
}

impl Delta {
    fn new(b: &PortCounters, a: &PortCounters) -> Delta {
        let d = |x: u64, y: u64| {
            assert!(y >= x, "a counter went backwards: {b:?} -> {a:?}");
            y - x
        };
        Delta {
            rx: d(b.rx_packets, a.rx_packets),
            forwarded: d(b.forwarded, a.forwarded),
            flooded: d(b.flooded, a.flooded),
            routed: d(b.routed, a.routed),
            dropped: d(b.dropped, a.dropped),
        }
    }
}

/// Extra egress length allowed for the VLAN tags (802.1Q / 802.1ad, at most two) a frame carries.
fn vlan_allowance(f: &[u8]) -> usize {
    let et = |off: usize| f.get(off..off + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let tag = |t: Option<u16>| matches!(t, Some(0x8100 | 0x88a8));
    match (tag(et(12)), tag(et(16))) {
        (true, true) => 8,
        (true, false) => 4,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Random configurations (the `reconfigure` and `workers` targets).

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
pub fn random_config(b: &[u8; CONFIG_BYTES]) -> Option<Config> {
    Config::parse(&config_text(b), "random").ok()
}

// ---------------------------------------------------------------------------------------------------------------
// Traffic derived from a configuration (the `reconfigure` and `workers` targets).

/// A host the traffic comes from: its port, MAC and address.
#[derive(Debug, Clone, Copy)]
pub struct Host {
    /// Its port.
    pub port: PortId,
    /// Its MAC.
    pub mac: MacAddr,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// Hosts, destinations and frames derived from a configuration and its topology, so that random operation
/// bytes make traffic the switch treats as real (ARP, TCP, UDP and ping between its networks and beyond).
pub struct Traffic<'a> {
    cfg: &'a Config,
    topo: &'a Topology,
}

impl<'a> Traffic<'a> {
    /// The traffic of `cfg`, numbered as `topo`.
    pub fn new(cfg: &'a Config, topo: &'a Topology) -> Traffic<'a> {
        Traffic { cfg, topo }
    }

    /// The subnet of port `q`: its network's, or its own address's for a routed port.
    fn subnet_of(&self, q: usize) -> Option<Ipv4Net> {
        let p = self.cfg.ports.get(q)?;
        match (&p.network, p.address) {
            (Some(n), _) => self.cfg.networks.iter().find(|x| &x.name == n)?.subnet,
            (None, Some(a)) => Some(a.trunc()),
            _ => None,
        }
    }

    /// Host `k` (0..4) behind port `a % ports`. Its MAC depends on its subnet and `k` only, so the same host
    /// seen on another port of its network is a MAC move.
    pub fn host(&self, a: u8, k: u8) -> Host {
        let q = usize::from(a) % self.cfg.ports.len().max(1);
        let k = k % 4;
        let subnet = self.subnet_of(q).unwrap_or_else(|| "10.99.0.0/24".parse().expect("a prefix"));
        let base = u32::from(subnet.network());
        let routed = self.cfg.ports.get(q).is_some_and(|p| p.address.is_some());
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
    pub fn target(&self, c: u8) -> Ipv4Addr {
        let mut list = vec![Ipv4Addr::new(198, 51, 100, 7)];
        for n in &self.cfg.networks {
            if let Some(s) = n.subnet {
                let base = u32::from(s.network());
                list.extend([base + 1, base + 2, base + 3].map(Ipv4Addr::from));
            }
        }
        for p in &self.cfg.ports {
            if let Some(a) = p.address {
                list.extend([a.addr(), Ipv4Addr::from(u32::from(a.network()) + 1)]);
            }
        }
        list[usize::from(c) % list.len()]
    }

    /// The MAC `from` sends to for `dst`: the host's own on its subnet, else its port's router MAC (broadcast
    /// when the port has no router interface).
    pub fn next_mac(&self, from: &Host, dst: Ipv4Addr) -> MacAddr {
        let rif = self.topo.rif_of_port(from.port).map(|r| &self.topo.rifs[r as usize]);
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

    /// A frame from host (a, b) to target `c`, by `op % 8`: 1 ARP request, 2 UDP (payload `op >> 3` bytes),
    /// 3 TCP (flags from `op >> 3`, payload `op >> 6` bytes), anything else a ping. Returns its port too.
    pub fn frame(&self, op: u8, a: u8, b: u8, c: u8) -> (PortId, Vec<u8>) {
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
        (from.port, frame)
    }
}

/// TCP flags from a byte's low three bits: SYN, SYN|ACK, ACK, PSH|ACK, FIN|ACK, RST, RST|ACK, none.
pub fn tcp_flags(x: u8) -> TcpFlags {
    use TcpFlags as F;
    [F::SYN, F::SYN | F::ACK, F::ACK, F::PSH | F::ACK, F::FIN | F::ACK, F::RST, F::RST | F::ACK, F::NONE]
        [usize::from(x % 8)]
}

/// A reply to an IPv4 UDP, TCP or ICMP echo frame the switch sent: addresses, MACs and ports swapped (TCP with
/// `flags`); `None` for anything else.
pub fn reply_to(f: &[u8], flags: TcpFlags) -> Option<Vec<u8>> {
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

/// The reply (TCP flags from `b`) to the `a`-th of `sent`, with the port it comes back on (the one the frame
/// left by).
pub fn reply_to_nth(sent: &[(PortId, Vec<u8>)], a: u8, b: u8) -> Option<(PortId, Vec<u8>)> {
    let (q, f) = sent.get(usize::from(a) % sent.len().max(1))?;
    Some((*q, reply_to(f, tcp_flags(b))?))
}

/// The answers to every ARP request (broadcast, opcode 1) in `sent`, each from the target with a MAC of its
/// own, with the port it comes back on.
pub fn arp_answers(sent: &[(PortId, Vec<u8>)]) -> Vec<(PortId, Vec<u8>)> {
    let mut out = Vec::new();
    for (q, f) in sent {
        if f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 1] {
            let asker = MacAddr::from_slice(&f[22..28]).expect("6 bytes");
            let asker_ip = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
            let target = Ipv4Addr::new(f[38], f[39], f[40], f[41]);
            let o = target.octets();
            let mac = MacAddr([2, 1, o[0], o[1], o[2], o[3]]);
            out.push((*q, arp_reply(mac, target, asker, asker_ip)));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Several workers: shards of one switch with their queues, on one thread, every step checked.

/// How [`Workers`] delivers what the shards tell one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Everything a step queued is delivered before the next step (each worker in turn, from the rotation, takes
    /// its mail until none is left), MAC refreshes announced every time (as `Shards` does): the outcome must be
    /// one switch's, up to the order of frames ([`Workers::check_same_as_one_switch`]).
    Settled,
    /// Delivered only when the program says (a worker's inbox, its updates, one handed burst, everything), as
    /// concurrent workers may, through queues of these capacities (full: the update is lost, the frame dropped
    /// as `handoff-full`), MAC refreshes announced as live workers do: the invariants must hold.
    Lagging {
        /// Capacity of each worker's update queue.
        updates: usize,
        /// Capacity of each worker's handoff queue.
        handoffs: usize,
    },
}

/// One burst a [`Workers`] run received (what the one-switch reference replays).
#[derive(Debug, Clone)]
pub struct Burst {
    /// When.
    pub now: Nanos,
    /// On which port.
    pub port: PortId,
    /// The frames' bytes as queued (a frame the port refuses is refused again in the replay).
    pub frames: Vec<Vec<u8>>,
}

/// A worker's queues as its shard drains them ([`Inbox`]).
#[derive(Debug, Default)]
struct Queues {
    updates: VecDeque<Update>,
    handoffs: VecDeque<(PortId, Frame)>,
}

impl Inbox for Queues {
    fn pop_update(&mut self) -> Option<Update> {
        self.updates.pop_front()
    }

    fn pop_handoff(&mut self) -> Option<(PortId, Frame)> {
        self.handoffs.pop_front()
    }
}

/// A worker's mail: its queues, and the handed frame it kept to start its next burst with.
#[derive(Debug, Default)]
struct Mail {
    q: Queues,
    carry: Option<(PortId, Frame)>,
}

impl Mail {
    fn is_empty(&self) -> bool {
        self.q.updates.is_empty() && self.q.handoffs.is_empty() && self.carry.is_none()
    }

    /// Handed frames waiting, by ingress port.
    fn in_flight(&self, by_port: &mut [u64]) {
        for (p, _) in self.q.handoffs.iter().chain(&self.carry) {
            by_port[usize::from(*p)] += 1;
        }
    }
}

/// What a checked step did, for [`Workers::checked`].
enum StepKind {
    /// A worker received a burst on `port`: `received` frames taken into buffers (`frames`: their bytes, and
    /// those of any frame the port refused).
    Burst { port: usize, received: u64, frames: Vec<Vec<u8>> },
    /// A worker ran `frames` frames handed over, received on `port`.
    Handed { port: usize, frames: u64 },
    /// Updates applied, or housekeeping: no frame received.
    Quiet,
}

/// `n` shards of one switch driven as `n` workers are, on one thread, with every step checked: each worker has
/// a receive queue per port (a frame is queued on one and taken by a [`Workers::poll`] of it, in bursts), an
/// update queue and a handoff queue that the others' outboxes fill ([`Switch::dispatch`]), drained as a
/// worker drains them ([`Switch::apply_updates`], [`Switch::run_handed_burst`]), and housekeeping at every
/// interval boundary in the rotation's order. With [`Delivery::Settled`] everything is delivered after each
/// step; with [`Delivery::Lagging`] only when asked.
///
/// The checks are [`Harness`]'s, for a switch made of shards: per step, the counters summed over the shards
/// move as one frame's outcome allows (a frame handed over is counted received where it arrived and routed or
/// dropped where it is handed, so between the two it is *in flight*); every shard's tables within their limits
/// and naming only what exists; no unchanged copy out of its network or back out of its ingress port, every
/// other frame from the router, none over the egress MTU, no masquerade network's address leaked; and, exactly,
/// every buffer in use either held for ARP by a shard or in flight. Settled, the shards' MAC tables and
/// resolved neighbours are the same once all is delivered. At the end ([`Workers::finish`]), every queue
/// delivered, the clock run until nothing is pending, every buffer is back.
pub struct Workers {
    meta: Meta,
    cfg: Config,
    shards: Vec<Switch>,
    pool: BufPool,
    tx: TxQueues,
    batch: Batch,
    /// Per port: the transmit side, collecting what the port sent.
    out: Vec<MemPort>,
    /// Per worker, per port: its receive queue and the bytes of the frames in it.
    rx: Vec<Vec<(MemPort, VecDeque<Vec<u8>>)>>,
    mail: Vec<Mail>,
    delivery: Delivery,
    now: Nanos,
    next_hk: Nanos,
    /// Where the order of housekeeping and of taking mail starts among the workers.
    rot: usize,
    step: u64,
    bursts: Vec<Burst>,
    sent: Vec<(PortId, Vec<u8>)>,
    /// A burst took fewer frames than were queued, for lack of buffers (the reference might not).
    starved: bool,
    /// Updates lost to a full queue.
    pub updates_lost: u64,
    /// Frames dropped because their owner's queue was full.
    pub handoffs_lost: u64,
    /// Frames handed to their owner.
    pub handed: u64,
    /// A housekeeping round is half done.
    in_tick: bool,
}

/// `VSWITCH_FUZZ_TRACE=1`: [`Workers`] prints every step, what it sent and the shards' neighbours (to read a
/// crash).
static TRACE: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var("VSWITCH_FUZZ_TRACE").is_ok_and(|v| v == "1"));

/// Large buffers in a [`Workers`] pool.
const LARGE_POOL: usize = 8;

impl Workers {
    /// `n` shards (at least 1) of a switch for `cfg`, with empty queues, at time 0.
    pub fn new(cfg: &Config, n: usize, delivery: Delivery) -> Workers {
        let n = n.max(1);
        let shards: Vec<Switch> = (0..n)
            .map(|i| {
                let mut s = Switch::new(cfg).sharded(Shard::new(i, n));
                if delivery == Delivery::Settled {
                    s.renew_every_refresh();
                }
                s
            })
            .collect();
        let meta = Meta::of(shards[0].topology());
        let tx = shards[0].tx_queues();
        let port = |p: &dataplane::config::PortConfig| MemPort::new(p.name.clone());
        let w = Workers {
            meta,
            cfg: cfg.clone(),
            tx,
            batch: Batch::new(),
            out: cfg.ports.iter().map(port).collect(),
            rx: (0..n).map(|_| cfg.ports.iter().map(|p| (port(p), VecDeque::new())).collect()).collect(),
            mail: (0..n).map(|_| Mail::default()).collect(),
            shards,
            pool: BufPool::with_large(POOL, LARGE_POOL),
            delivery,
            now: 0,
            next_hk: HOUSEKEEPING_INTERVAL,
            rot: 0,
            step: 0,
            bursts: Vec::new(),
            sent: Vec::new(),
            starved: false,
            updates_lost: 0,
            handoffs_lost: 0,
            handed: 0,
            in_tick: false,
        };
        w.check_state("start");
        w
    }

    /// Workers (shards).
    pub fn workers(&self) -> usize {
        self.shards.len()
    }

    /// Ports.
    pub fn ports(&self) -> usize {
        self.meta.ports()
    }

    /// The shards.
    pub fn switches(&self) -> &[Switch] {
        &self.shards
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The clock.
    pub fn now(&self) -> Nanos {
        self.now
    }

    /// Every frame sent so far, by port, in the order sent.
    pub fn sent(&self) -> &[(PortId, Vec<u8>)] {
        &self.sent
    }

    /// Every burst received so far, in order.
    pub fn bursts(&self) -> &[Burst] {
        &self.bursts
    }

    /// Makes the order of housekeeping and of taking mail start at worker `r`.
    pub fn rotate(&mut self, r: usize) {
        self.rot = r % self.workers();
    }

    /// Queues `frame` on worker `w`'s receive queue of port `port` (both taken modulo their count); a
    /// [`Workers::poll`] of that queue receives it.
    pub fn receive(&mut self, w: usize, port: usize, frame: &[u8]) {
        let (n, ports) = (self.workers(), self.ports());
        self.rx[w % n][port % ports].1.push_back(frame.to_vec());
    }

    /// Frames waiting in receive queues.
    pub fn queued(&self) -> usize {
        self.rx.iter().flatten().map(|(_, q)| q.len()).sum()
    }

    /// Worker `w` polls its receive queue of `port` (modulo their count): the updates waiting for it applied,
    /// then one burst (up to 32 frames, as many as buffers allow) through its shard, its outbox dispatched; then,
    /// settled, everything delivered. False if nothing was taken (an empty queue, or no buffer).
    ///
    /// Settled, a burst is cut where frames start or stop being handed to another worker: the owner runs a
    /// handed frame's routing after the receiver has routed every frame of its burst and told the others what
    /// that taught it (neighbours confirmed, failed), a reordering between flows that concurrent workers make
    /// and one switch, given the same burst, does not. Cut there, every frame is routed in its turn, and the
    /// outcome is one switch's with the same bursts. (Lagging, bursts are whole: only the invariants are
    /// checked.)
    pub fn poll(&mut self, w: usize, port: usize) -> bool {
        let (w, p) = (w % self.workers(), port % self.ports());
        let queued = self.rx[w][p].1.len();
        if queued == 0 {
            return false;
        }
        if !self.mail[w].q.updates.is_empty() {
            self.apply_updates(w);
        }
        if self.rx[w][p].0.pending() == 0 {
            let n = self.workers();
            let sw = &self.shards[w];
            let handed_to = |f: &[u8]| sw.owner_of_frame(f, n).filter(|&o| o != w);
            let (port_q, bytes) = &mut self.rx[w][p];
            let first = handed_to(&bytes[0]);
            let cut = self.delivery == Delivery::Settled;
            let burst =
                bytes.iter().take(dataplane::batch::BATCH_SIZE).take_while(|f| !cut || handed_to(f) == first).count();
            for f in bytes.iter().take(burst) {
                port_q.inject(f);
            }
        }
        let now = self.now;
        let took = self.checked(format!("worker {w} polls port {p} ({queued} queued)"), |me| {
            let (port_q, bytes) = &mut me.rx[w][p];
            let injected = port_q.pending();
            let received = port_q.rx_burst(now, &mut me.pool, &mut me.batch).expect("memory ports do not fail") as u64;
            let taken = injected - port_q.pending();
            let frames: Vec<Vec<u8>> = bytes.drain(..taken).collect();
            if taken < injected {
                me.starved = true;
            }
            if !me.batch.is_empty() {
                me.shards[w].process(now, p as PortId, &mut me.batch, &mut me.pool, &mut me.tx);
                me.dispatch(w);
            }
            let took = !frames.is_empty();
            if took {
                me.bursts.push(Burst { now, port: p as PortId, frames: frames.clone() });
            }
            (StepKind::Burst { port: p, received, frames }, took)
        });
        if self.delivery == Delivery::Settled {
            self.settle();
        }
        took
    }

    /// Every worker, in the rotation's order, polls every queue until all are empty or no buffer is left;
    /// returns whether anything was taken.
    pub fn poll_all(&mut self) -> bool {
        let mut any = false;
        loop {
            let mut progress = false;
            for i in 0..self.workers() {
                let w = (self.rot + i) % self.workers();
                for p in 0..self.ports() {
                    while self.poll(w, p) {
                        progress = true;
                    }
                }
            }
            any |= progress;
            if !progress || self.queued() == 0 {
                return any;
            }
        }
    }

    /// Worker `w` applies the updates waiting for it (a checked step).
    pub fn apply_updates(&mut self, w: usize) {
        let w = w % self.workers();
        let now = self.now;
        self.checked(format!("worker {w} applies {} updates", self.mail[w].q.updates.len()), |me| {
            me.shards[w].apply_updates(now, &mut me.mail[w].q, &mut me.pool, &mut me.tx);
            me.dispatch(w);
            (StepKind::Quiet, ())
        });
    }

    /// Worker `w` runs one burst of the frames handed to it (a checked step); false if none waited.
    pub fn handed_burst(&mut self, w: usize) -> bool {
        let w = w % self.workers();
        let mail = &self.mail[w];
        let Some(port) = mail.carry.as_ref().map(|c| c.0).or_else(|| mail.q.handoffs.front().map(|h| h.0)) else {
            return false;
        };
        let now = self.now;
        self.checked(format!("worker {w} runs frames handed over from port {port}"), |me| {
            let Mail { q, carry } = &mut me.mail[w];
            let n = me.shards[w].run_handed_burst(now, q, carry, &mut me.batch, &mut me.pool, &mut me.tx);
            me.dispatch(w);
            (StepKind::Handed { port: usize::from(port), frames: n as u64 }, ())
        });
        true
    }

    /// Worker `w` takes its mail as a worker's iteration does: its updates, then up to `bursts` bursts of handed
    /// frames.
    pub fn inbox(&mut self, w: usize, bursts: usize) {
        let w = w % self.workers();
        if !self.mail[w].q.updates.is_empty() {
            self.apply_updates(w);
        }
        for _ in 0..bursts {
            if !self.handed_burst(w) {
                break;
            }
        }
    }

    /// Delivers everything: each worker in turn, from the rotation, takes all its mail, until none is left.
    pub fn settle(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.workers() {
                let w = (self.rot + i) % self.workers();
                if !self.mail[w].is_empty() {
                    any = true;
                    self.inbox(w, usize::MAX);
                }
            }
            if !any {
                return;
            }
        }
    }

    /// Moves the clock forward by `dt`: at every housekeeping boundary passed, each worker in the rotation's
    /// order runs housekeeping on its shard (a checked step; settled, everything delivered after each).
    pub fn advance(&mut self, dt: Nanos) {
        let end = self.now + dt;
        while self.next_hk <= end {
            self.now = self.next_hk;
            // Until every worker did this tick's housekeeping, replicas differ by what it ages out.
            self.in_tick = true;
            for i in 0..self.workers() {
                let w = (self.rot + i) % self.workers();
                let now = self.now;
                self.checked(format!("worker {w}: housekeeping at {now}"), |me| {
                    me.shards[w].housekeeping(now, &mut me.pool, &mut me.tx);
                    me.dispatch(w);
                    (StepKind::Quiet, ())
                });
                if self.delivery == Delivery::Settled {
                    self.settle();
                }
            }
            self.in_tick = false;
            self.check_replicas(&format!("step {}: after the housekeeping at {}", self.step, self.now));
            self.next_hk += HOUSEKEEPING_INTERVAL;
        }
        self.now = end;
    }

    /// Receives what is still queued, delivers everything, runs the clock until no shard waits for ARP (at most
    /// a minute of virtual time), then requires every buffer back in the pool.
    pub fn finish(&mut self) {
        let mut waited = 0;
        loop {
            self.poll_all();
            self.settle();
            let pending = self.shards.iter().any(Switch::has_pending);
            if !pending && self.queued() == 0 {
                break;
            }
            assert!(waited < 60 * NANOS_PER_SEC, "step {}: still pending after 60 s", self.step);
            self.advance(NANOS_PER_SEC / 10);
            waited += NANOS_PER_SEC / 10;
        }
        let (p, step) = (&self.pool, self.step);
        assert_eq!(p.available(), p.capacity(), "step {step}: buffers leaked at the end");
        assert_eq!(p.large_available(), p.large_capacity(), "step {step}: large buffers leaked at the end");
    }

    /// Some per-worker limit, documented as such, was reached (a connection table or a network's connection
    /// limit full, ICMP rate-limited, a neighbour's hold queue overflowing), or the pool ran short: then `n`
    /// shards may rightly differ from one switch.
    pub fn reached_a_per_worker_limit(&self) -> bool {
        self.starved
            || self.shards.iter().any(|s| {
                let (ct, nat) = (s.conntrack().stats(), s.nat_stats());
                ct.evicted + ct.table_full + ct.group_full + nat.table_full + nat.network_limit > 0
                    || s.router().stats().icmp_rate_limited > 0
                    || s.router().neigh_stats().queue_overflow > 0
            })
    }

    /// Settled and finished: one switch, given the same bursts at the same times, sends the same frames on every
    /// port (as multisets) and counts the same (every counter `vswitchd` reports for a sharded switch), unless a
    /// per-worker limit was reached in either ([`Workers::reached_a_per_worker_limit`]). Returns whether the
    /// comparison was made.
    pub fn check_same_as_one_switch(&mut self) -> bool {
        if self.delivery != Delivery::Settled || self.reached_a_per_worker_limit() {
            return false;
        }
        let mut one = Workers::new(&self.cfg, 1, Delivery::Settled);
        for b in &self.bursts {
            one.advance(b.now - one.now);
            for f in &b.frames {
                one.receive(0, usize::from(b.port), f);
            }
            one.poll(0, usize::from(b.port));
            if one.queued() > 0 {
                return false; // the reference ran short of buffers: not comparable
            }
        }
        one.finish();
        if one.reached_a_per_worker_limit() {
            return false;
        }
        let end = self.now.max(one.now);
        self.advance(end - self.now);
        one.advance(end - one.now);
        let (mut mine, mut theirs) = (self.sent.clone(), one.sent.clone());
        mine.sort();
        theirs.sort();
        if mine != theirs {
            let only = |a: &[(PortId, Vec<u8>)], b: &[(PortId, Vec<u8>)]| {
                a.iter().filter(|x| !b.contains(x)).map(|(p, f)| format!("port {p}: {f:02x?}")).collect::<Vec<_>>()
            };
            let bursts: Vec<String> = self
                .bursts
                .iter()
                .map(|b| {
                    let frames: Vec<String> =
                        b.frames.iter().map(|f| f.iter().map(|x| format!("{x:02x}")).collect()).collect();
                    format!("at {} on port {}: {frames:?}", b.now, b.port)
                })
                .collect();
            panic!(
                "{} shards sent other frames than one switch: {} vs {}; only with shards: {:?}; only with one: \
                 {:?}\nbursts:\n{}\nshards:\n{}\none switch:\n{}",
                self.workers(),
                mine.len(),
                theirs.len(),
                only(&mine, &theirs),
                only(&theirs, &mine),
                bursts.join("\n"),
                self.report(),
                one.report()
            );
        }
        assert_eq!(self.report(), one.report(), "{} shards count otherwise than one switch", self.workers());
        true
    }

    /// What `vswitchd` reports of the switch these shards make: the switch-wide counters, every port's, and the
    /// connections.
    pub fn report(&self) -> String {
        let all: Vec<&Switch> = self.shards.iter().collect();
        let ports: Vec<_> = (0..self.ports()).map(|p| dataplane::replay::port_counters(&all, p as PortId)).collect();
        let connections: Vec<_> = dataplane::replay::connections(&all, self.now)
            .into_iter()
            .map(|c| serde_json::to_value(c).expect("serializes"))
            .collect();
        serde_json::to_string_pretty(&serde_json::json!({
            "switch": dataplane::replay::SwitchReport::of_shards(&all),
            "ports": ports,
            "connections": connections,
        }))
        .expect("serializes")
    }

    /// Hands worker `w`'s outbox to the others' queues, bounded as [`Delivery`] says.
    fn dispatch(&mut self, w: usize) {
        let (ucap, hcap) = match self.delivery {
            Delivery::Settled => (usize::MAX, usize::MAX),
            Delivery::Lagging { updates, handoffs } => (updates, handoffs),
        };
        let mail = std::cell::RefCell::new(&mut self.mail);
        let d = self.shards[w].dispatch(
            &mut self.pool,
            |k, u| {
                let q = &mut mail.borrow_mut()[k].q.updates;
                q.len() < ucap && {
                    q.push_back(u);
                    true
                }
            },
            |h| {
                let q = &mut mail.borrow_mut()[h.owner].q.handoffs;
                if q.len() < hcap {
                    q.push_back((h.port, h.frame));
                    Ok(())
                } else {
                    Err(h)
                }
            },
        );
        self.updates_lost += d.updates_dropped;
        self.handoffs_lost += d.handoffs_dropped;
        self.handed += d.handed;
    }

    fn counters(&self) -> Vec<PortCounters> {
        let all: Vec<&Switch> = self.shards.iter().collect();
        (0..self.ports()).map(|p| dataplane::replay::port_counters(&all, p as PortId)).collect()
    }

    fn in_flight(&self) -> Vec<u64> {
        let mut v = vec![0; self.ports()];
        for m in &self.mail {
            m.in_flight(&mut v);
        }
        v
    }

    /// Sends what the shards queued for transmission and takes what every port sent.
    fn flush(&mut self) -> Vec<(PortId, Vec<u8>)> {
        let mut sent = Vec::new();
        for (p, port) in self.out.iter_mut().enumerate() {
            let q = self.tx.queue_mut(p as PortId);
            if !q.is_empty() {
                port.tx_burst(&mut self.pool, q).expect("memory ports do not fail");
            }
            sent.extend(port.take_sent().into_iter().map(|f| (p as PortId, f)));
        }
        sent
    }

    /// Runs `f` as one step and checks everything (see the type's documentation).
    fn checked<R>(&mut self, what: String, f: impl FnOnce(&mut Self) -> (StepKind, R)) -> R {
        self.step += 1;
        let what = format!("step {} ({} workers): {what}", self.step, self.workers());
        let (before, flight_before) = (self.counters(), self.in_flight());
        let (kind, r) = f(self);
        let sent = self.flush();
        let (after, flight_after) = (self.counters(), self.in_flight());
        let meta = &self.meta;
        let ingress = match &kind {
            StepKind::Burst { port, .. } | StepKind::Handed { port, .. } => Some(*port),
            StepKind::Quiet => None,
        };
        for q in 0..meta.ports() {
            let (b, a) = (&before[q], &after[q]);
            let d = Delta::new(b, a);
            let flight = flight_after[q] as i64 - flight_before[q] as i64;
            let has_rif = meta.rif_mac[q].is_some();
            if ingress != Some(q) {
                assert!(
                    d.rx == 0 && d.forwarded == 0 && d.flooded == 0 && d.routed == 0 && flight == 0,
                    "{what}: ingress counters of port {q} moved ({flight} in flight): {b:?} -> {a:?}"
                );
                assert!(d.dropped == 0 || has_rif, "{what}: port {q} (no router) charged a drop: {b:?} -> {a:?}");
                continue;
            }
            match &kind {
                StepKind::Burst { received, .. } => {
                    assert_eq!(d.rx, *received, "{what}: rx_packets {b:?} -> {a:?}");
                    assert!(flight >= 0, "{what}: frames of port {q} left flight while receiving");
                    let handed = flight as u64;
                    let outcomes = d.forwarded + d.flooded + d.routed;
                    assert!(outcomes + handed <= *received, "{what}: more outcomes than frames: {b:?} -> {a:?}");
                    let total = outcomes + handed + d.dropped;
                    assert!(
                        total >= *received && total - received <= d.routed,
                        "{what}: frames not accounted exactly once ({handed} handed over): {b:?} -> {a:?}"
                    );
                    assert!(has_rif || (d.routed == 0 && handed == 0), "{what}: routed without a router: {a:?}");
                }
                StepKind::Handed { frames, .. } => {
                    assert!(
                        d.rx == 0 && d.forwarded == 0 && d.flooded == 0,
                        "{what}: a handed frame counted as received or bridged: {b:?} -> {a:?}"
                    );
                    assert_eq!(flight, -(*frames as i64), "{what}: handed frames run vs left flight");
                    let total = d.routed + d.dropped;
                    assert!(
                        d.routed <= *frames && total >= *frames && total - frames <= d.routed,
                        "{what}: handed frames not accounted exactly once: {b:?} -> {a:?}"
                    );
                }
                StepKind::Quiet => unreachable!("no ingress"),
            }
        }
        self.check_cumulative(&what, &after, &flight_after);
        meta.check_tx(&what, &before, &after, &sent);
        let mut copies = 0u64;
        for (q, f) in &sent {
            let q = usize::from(*q);
            match &kind {
                StepKind::Burst { port: p, frames, .. } if frames.iter().any(|x| x == f) => {
                    copies += 1;
                    assert!(q != *p, "{what}: bridged copy sent back out of its ingress port");
                    assert!(
                        meta.network[q].is_some() && meta.network[q] == meta.network[*p],
                        "{what}: unchanged frame left its network: out of port {q}, in on {p}"
                    );
                }
                _ => {
                    meta.check_router_frame(&what, q, f);
                    if ingress.is_some_and(|p| meta.masquerading[p] && meta.routed[q]) {
                        meta.check_not_leaked(&what, q, f);
                    }
                }
            }
        }
        if let StepKind::Burst { port: p, .. } = &kind {
            let d = Delta::new(&before[*p], &after[*p]);
            let others = meta.network[*p].map_or(0, |n| meta.net_ports[n as usize].len() as u64 - 1);
            assert!(copies >= d.forwarded, "{what}: {} forwarded but {copies} copies", d.forwarded);
            assert!(copies <= (d.forwarded + d.flooded) * others, "{what}: {copies} copies: {d:?}");
            if d.flooded == 0 {
                assert_eq!(copies, d.forwarded, "{what}: {copies} unchanged copies of {} forwarded", d.forwarded);
            }
        }
        if *TRACE {
            eprintln!("{what}: sent {} frames", sent.len());
            for (q, f) in &sent {
                eprintln!("  out of port {q}: {}", f.iter().map(|x| format!("{x:02x}")).collect::<String>());
            }
            for (i, sw) in self.shards.iter().enumerate() {
                let neigh: Vec<String> = sw
                    .router()
                    .neighbours(self.now)
                    .iter()
                    .map(|n| format!("{}@{} {}", n.ip, n.rif, n.state))
                    .collect();
                eprintln!("  shard {i}: neighbours {neigh:?}, drops {:?}", sw.counters().drops_by_name());
            }
        }
        self.sent.extend(sent);
        self.check_state(&what);
        r
    }

    fn check_cumulative(&self, what: &str, now: &[PortCounters], flight: &[u64]) {
        let mut port_drops = 0;
        for (q, c) in now.iter().enumerate() {
            let handled = c.forwarded + c.flooded + c.routed + c.dropped;
            if self.meta.rif_mac[q].is_none() {
                assert!(
                    c.routed == 0 && flight[q] == 0 && handled == c.rx_packets,
                    "{what}: port {q} (L2 only): {c:?}"
                );
            } else {
                assert!(
                    c.rx_packets <= handled + flight[q] && handled <= c.rx_packets + c.routed,
                    "{what}: port {q}: rx <= forwarded + flooded + routed + dropped + in flight ({}) <= rx + routed \
                     fails: {c:?}",
                    flight[q]
                );
            }
            port_drops += c.dropped;
        }
        let reasons: u64 = self.shards.iter().map(|s| s.counters().total_drops()).sum();
        assert!(port_drops <= reasons, "{what}: {port_drops} drops charged to ports but only {reasons} with a reason");
    }

    fn check_state(&self, what: &str) {
        for (i, sw) in self.shards.iter().enumerate() {
            self.meta.check_tables(&format!("{what}: shard {i}"), sw, self.now);
        }
        let p = &self.pool;
        let in_use = p.capacity() - p.available() + p.large_capacity() - p.large_available();
        let held: usize = self.shards.iter().map(|s| s.router().held_frames()).sum();
        let flight: u64 = self.in_flight().iter().sum();
        assert_eq!(
            in_use as u64,
            held as u64 + flight,
            "{what}: {in_use} buffers in use, {held} frames held for ARP and {flight} handed over"
        );
        self.check_replicas(what);
    }

    /// Settled, everything delivered and no housekeeping round half done: the shards' MAC tables and resolved
    /// neighbours are the same.
    fn check_replicas(&self, what: &str) {
        if self.delivery == Delivery::Settled && !self.in_tick && self.mail.iter().all(Mail::is_empty) {
            let first = &self.shards[0];
            let resolved = |s: &Switch| {
                let mut v: Vec<_> = s
                    .router()
                    .neighbours(self.now)
                    .into_iter()
                    .filter_map(|n| n.mac.map(|m| (n.rif, n.ip, m)))
                    .collect();
                v.sort();
                v
            };
            for (i, sw) in self.shards.iter().enumerate().skip(1) {
                for n in 0..self.meta.net_ports.len() {
                    let macs = |s: &Switch| {
                        s.fdb(n as u16).entries(self.now).into_iter().map(|e| (e.mac, e.port)).collect::<Vec<_>>()
                    };
                    assert_eq!(macs(sw), macs(first), "{what}: shard {i}'s MAC table of network {n} is not shard 0's");
                }
                assert_eq!(resolved(sw), resolved(first), "{what}: shard {i}'s neighbours are not shard 0's");
            }
        }
    }
}
