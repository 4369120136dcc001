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

use dataplane::buffer::{Nanos, MAX_FRAME_LEN, NANOS_PER_SEC};
use dataplane::config::Config;
#[allow(unused_imports)] // linked from the module documentation
use dataplane::conntrack::Conntrack;
use dataplane::counters::PortCounters;
use dataplane::neigh::NeighConfig;
use dataplane::port::PortId;
use dataplane::testbed::Testbed;
use dataplane::wire::MacAddr;

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
    /// What the last step sent, by port.
    last_sent: Vec<(PortId, Vec<u8>)>,
    /// Per port: its counters when this harness was made (a reconfiguration keeps them by name).
    base: Vec<PortCounters>,
    /// The switch-wide drops by reason when this harness was made.
    base_drops: u64,
    /// Frames the router held for ARP when this harness was made (a reconfiguration that kept the router): they
    /// were counted received before, and their drop, if they are dropped, is counted after.
    held_before: u64,
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
        let base = (0..topo.ports.len()).map(|p| tb.switch().counters().port(p as PortId)).collect();
        let base_drops = tb.switch().counters().total_drops();
        let held_before = (tb.total_buffers() - tb.free_buffers()) as u64;
        let h = Harness {
            held_before,
            base,
            base_drops,
            tb,
            step: 0,
            rif_mac,
            network,
            max_len,
            net_has_gw,
            net_ports,
            mac_limit,
            masquerading,
            routed,
            masquerade_subnets,
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
        self.network.len()
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
            let has_rif = self.rif_mac[q].is_some();
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
        self.check_tx(&what, &before, &after, &sent);
        // Isolation and unchanged copies.
        let mut copies = 0u64;
        for (q, f) in &sent {
            let q = *q as usize;
            if f.as_slice() == frame {
                copies += 1;
                assert!(q != p, "{what}: bridged copy sent back out of its ingress port");
                assert!(
                    self.network[q].is_some() && self.network[q] == self.network[p],
                    "{what}: unchanged frame left its network: out of port {q} ({:?}), in on {p} ({:?})",
                    self.network[q],
                    self.network[p]
                );
            } else {
                self.check_router_frame(&what, q, f);
                if self.masquerading[p] && self.routed[q] {
                    self.check_not_leaked(&what, q, f);
                }
            }
        }
        let d = Delta::new(&before[p], &after[p]);
        let max_copies = self.network[p].map_or(0, |n| self.net_ports[n as usize].len() as u64 - 1);
        assert!(copies <= max_copies, "{what}: {copies} copies, network has {max_copies} other ports");
        if d.forwarded == 1 {
            assert_eq!(copies, 1, "{what}: forwarded but {copies} copies sent");
        } else if d.flooded == 1 {
            let router_copy = self.network[p].is_some_and(|n| self.net_has_gw[n as usize]);
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
        self.tb.advance(dt);
        let after = self.counters();
        let sent = self.take_sent();
        for (q, (b, a)) in before.iter().zip(&after).enumerate() {
            let d = Delta::new(b, a);
            assert!(
                d.rx == 0 && d.forwarded == 0 && d.flooded == 0 && d.routed == 0,
                "{what}: ingress counters of port {q} moved: {b:?} -> {a:?}"
            );
            assert!(d.dropped == 0 || self.rif_mac[q].is_some(), "{what}: port {q} (no router) charged a drop");
        }
        self.check_cumulative(&what, &after);
        self.check_tx(&what, &before, &after, &sent);
        for (q, f) in &sent {
            self.check_router_frame(&what, *q as usize, f);
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
            if self.rif_mac[q].is_none() {
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

    /// Checks the tables and the buffer pool.
    fn check_state(&self, what: &str) {
        let sw = self.tb.switch();
        let now = self.tb.now();
        for (n, ports) in self.net_ports.iter().enumerate() {
            let fdb = sw.fdb(n as u16);
            assert!(fdb.len() <= self.mac_limit[n], "{what}: network {n} FDB has {} entries", fdb.len());
            for e in fdb.entries(now) {
                assert!(ports.contains(&e.port), "{what}: network {n} learned {:?} on foreign port {}", e.mac, e.port);
            }
        }
        let in_use = self.tb.total_buffers() - self.tb.free_buffers();
        let incomplete = sw.router().neighbours(now).iter().filter(|e| e.state == "incomplete").count();
        let queue_len = NeighConfig::default().queue_len;
        assert!(
            incomplete <= in_use && in_use <= incomplete * queue_len,
            "{what}: {in_use} buffers in use with {incomplete} unresolved neighbours (each holds 1..={queue_len})"
        );
        assert_eq!(incomplete > 0, sw.has_pending(), "{what}: has_pending disagrees with the neighbour table");
        let ct = sw.conntrack();
        assert!(ct.len() <= ct.config().limit, "{what}: {} connections, limit {}", ct.len(), ct.config().limit);
        if let Err(e) = sw.router().nat().check_invariants() {
            panic!("{what}: NAT invariant: {e}");
        }
        self.check_references(what);
    }

    /// No neighbour or connection names an interface that is not there, or the wrong one (invariant 7).
    fn check_references(&self, what: &str) {
        let sw = self.tb.switch();
        let rifs = &sw.topology().rifs;
        for n in sw.router().neighbours(self.tb.now()) {
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
                    r.is_some_and(
                        |r| !r.routed_port && (r.subnet.contains(&e.orig.src) || r.subnet.contains(&e.reply.src))
                    ),
                    "{what}: connection {e:?} counts against interface {g} ({r:?}), not its network"
                );
            }
        }
    }
}

/// Counter movement of one port over one step.
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
