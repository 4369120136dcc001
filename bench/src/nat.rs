//! NAT rigs: a masquerade network (`bridge`, 172.17.0.0/16, 64 container hosts behind the in-memory port `c`)
//! routed out of an uplink port (`up`, 203.0.113.2/24, default route via 203.0.113.1), for the `nat` benchmark
//! and the `steps` example.
//!
//! - [`Rig::nat`]: `flows` connections set up before measuring (TCP with a full handshake, or UDP with a reply
//!   so they are assured), then the generator cycles one steady-state frame per connection — either the
//!   container's (masqueraded on the way out) or the server's reply to the uplink address (un-NATed on the way
//!   in), see [`NatDirection`].
//! - [`NewFlows`]: every frame opens a new masqueraded connection; the table is flushed (outside the timed part)
//!   each time the generator's window of distinct flows wraps, so every measured frame really is a new one.
//!
//! Flow `i` goes from container `i % 64`, source port `1024 + i / 1000`, to destination `i % 1000` (250
//! servers in 198.51.100.0/24 × 4 ports): every (source port, destination) is unique, so masquerade keeps each
//! flow's own port and the replies are known in advance. The clock stays at 0 and housekeeping never runs, so
//! nothing expires while measuring.

use crate::Rig;
use dataplane::batch::Batch;
use dataplane::buffer::BufPool;
use dataplane::config::Config;
use dataplane::pipeline::{Switch, TxQueues};
use dataplane::port::mem::{MemPort, TxMode};
use dataplane::wire::builder::{arp_request, Ipv4Spec, TcpFlags, TcpSegment};
use dataplane::wire::MacAddr;
use std::net::Ipv4Addr;

/// Container hosts on the masquerade network.
pub const CONTAINERS: u32 = 64;
/// Distinct destinations (address, port) the flows go to.
pub const DESTINATIONS: u32 = 1000;
/// The uplink's address: every masqueraded packet leaves from it.
pub const UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The upstream router (the default route's next hop).
pub const UPSTREAM: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const UPSTREAM_MAC: MacAddr = MacAddr([0x02, 0xee, 0, 0, 0, 1]);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

/// Which protocol the rig's connections use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatProto {
    /// UDP datagrams with 18 bytes of payload.
    Udp,
    /// TCP: a SYN / SYN-ACK / ACK handshake before measuring, then ACK|PSH segments with 6 bytes of payload.
    Tcp,
}

/// Which way the measured frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatDirection {
    /// Container → server: source rewritten to the uplink address (masquerade).
    Outbound,
    /// Server → uplink address: destination rewritten back to the container (reply un-NAT).
    Reply,
}

/// One flow of the rig: container `(mac, ip)`, source port, server address and port.
#[derive(Debug, Clone, Copy)]
struct Flow {
    mac: MacAddr,
    ip: Ipv4Addr,
    sport: u16,
    server: Ipv4Addr,
    dport: u16,
}

fn container(k: u32) -> (MacAddr, Ipv4Addr) {
    (MacAddr(crate::host_mac(0xc0_0000 + k)), Ipv4Addr::new(172, 17, (k / 200) as u8, 10 + (k % 200) as u8))
}

fn flow(i: u32) -> Flow {
    let (mac, ip) = container(i % CONTAINERS);
    let d = i % DESTINATIONS;
    let sport = 1024 + i / DESTINATIONS;
    assert!(sport <= 65535, "at most {} flows", (65535 - 1024 + 1) * DESTINATIONS);
    Flow {
        mac,
        ip,
        sport: sport as u16,
        server: Ipv4Addr::new(198, 51, 100, 1 + (d % 250) as u8),
        dport: 1000 + (d / 250) as u16,
    }
}

/// The frames of one flow, given the gateway's and the uplink's MACs.
struct Frames {
    gw: MacAddr,
    up: MacAddr,
    proto: NatProto,
}

impl Frames {
    fn out(&self, f: &Flow) -> Ipv4Spec {
        Ipv4Spec::new(f.mac, self.gw, f.ip, f.server)
    }

    fn back(&self, f: &Flow) -> Ipv4Spec {
        Ipv4Spec::new(UPSTREAM_MAC, self.up, f.server, UPLINK_ADDR)
    }

    /// The container's first packet (SYN or datagram).
    fn first(&self, f: &Flow) -> Vec<u8> {
        match self.proto {
            NatProto::Udp => self.out(f).udp(f.sport, f.dport, 18),
            NatProto::Tcp => self.out(f).tcp(TcpSegment::new(f.sport, f.dport, TcpFlags::SYN), 0),
        }
    }

    /// The server's answer to the first packet (SYN-ACK or datagram), addressed to the uplink.
    fn answer(&self, f: &Flow) -> Vec<u8> {
        match self.proto {
            NatProto::Udp => self.back(f).udp(f.dport, f.sport, 18),
            NatProto::Tcp => self.back(f).tcp(TcpSegment::new(f.dport, f.sport, TcpFlags::SYN | TcpFlags::ACK), 0),
        }
    }

    /// The container's packet completing the handshake (TCP only).
    fn handshake_ack(&self, f: &Flow) -> Vec<u8> {
        self.out(f).tcp(TcpSegment::new(f.sport, f.dport, TcpFlags::ACK).seq(1).ack(1), 0)
    }

    /// A steady-state 64-byte frame (60 without FCS) going `dir`.
    fn steady(&self, f: &Flow, dir: NatDirection) -> Vec<u8> {
        let data = TcpFlags::ACK | TcpFlags::PSH;
        let v = match (self.proto, dir) {
            (NatProto::Udp, NatDirection::Outbound) => self.out(f).udp(f.sport, f.dport, 18),
            (NatProto::Udp, NatDirection::Reply) => self.back(f).udp(f.dport, f.sport, 18),
            (NatProto::Tcp, NatDirection::Outbound) => {
                self.out(f).tcp(TcpSegment::new(f.sport, f.dport, data).seq(1).ack(1), 6)
            }
            (NatProto::Tcp, NatDirection::Reply) => {
                self.back(f).tcp(TcpSegment::new(f.dport, f.sport, data).seq(1).ack(1), 6)
            }
        };
        debug_assert_eq!(v.len(), 60);
        v
    }
}

/// The rig's configuration: the generator port first (id 0), the sink second (id 1).
/// The rigs' configuration: ports `c` and `up` (the generator's first), connection limit `limit`.
pub fn config(generator_is_uplink: bool, limit: usize) -> Config {
    let c = "[[port]]\nname = \"c\"\nkind = \"mem\"\nnetwork = \"bridge\"\n";
    let up = "[[port]]\nname = \"up\"\nkind = \"mem\"\naddress = \"203.0.113.2/24\"\n";
    let (first, second) = if generator_is_uplink { (up, c) } else { (c, up) };
    Config::parse(
        &format!(
            "[[network]]\nname = \"bridge\"\nsubnet = \"172.17.0.0/16\"\ngateway = \"172.17.0.1\"\nmasquerade = true\n\
             {first}{second}\
             [[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"203.0.113.1\"\n\
             [conntrack]\nlimit = {limit}\n"
        ),
        "bench",
    )
    .expect("NAT bench config is valid")
}

fn rif_mac(switch: &Switch, name: &str) -> MacAddr {
    switch.topology().rifs.iter().find(|r| r.name == name).expect("the rig's interface exists").mac
}

/// The container side's and the uplink's ports of a rig (which one is `gen` depends on the direction).
fn ports(rig: &mut Rig, generator_is_uplink: bool) -> (&mut MemPort, &mut MemPort, u16, u16) {
    if generator_is_uplink {
        (&mut rig.sink, &mut rig.gen, 1, 0)
    } else {
        (&mut rig.gen, &mut rig.sink, 0, 1)
    }
}

/// Queues `frames` on port `id` of `rig` (a queue port) and runs them all through the switch, 32 at a time.
fn run(rig: &mut Rig, generator_is_uplink: bool, on_uplink: bool, frames: impl Iterator<Item = Vec<u8>>) {
    let mut frames = frames.peekable();
    while frames.peek().is_some() {
        let (c, up, c_id, up_id) = ports(rig, generator_is_uplink);
        let (port, id) = if on_uplink { (up, up_id) } else { (c, c_id) };
        for f in frames.by_ref().take(32) {
            port.inject(&f);
        }
        while (if id == 0 { rig.gen.pending() } else { rig.sink.pending() }) > 0 {
            rig.step_port(id);
        }
    }
}

/// A rig without templates yet: both ports are queues; neighbours (upstream router, every container) resolved.
fn base(generator_is_uplink: bool, limit: usize) -> Rig {
    let switch = Switch::new(&config(generator_is_uplink, limit));
    let mut rig = Rig {
        switch,
        gen: MemPort::new(if generator_is_uplink { "up" } else { "c" }),
        sink: MemPort::new(if generator_is_uplink { "c" } else { "up" }),
        pool: BufPool::new(4096),
        tx: TxQueues::new(2, 256),
        batch: Batch::new(),
    };
    rig.gen.set_tx_mode(TxMode::Count);
    rig.sink.set_tx_mode(TxMode::Count);
    run(&mut rig, generator_is_uplink, true, std::iter::once(arp_request(UPSTREAM_MAC, UPSTREAM, UPLINK_ADDR)));
    let announce = (0..CONTAINERS).map(|k| {
        let (mac, ip) = container(k);
        arp_request(mac, ip, GATEWAY)
    });
    run(&mut rig, generator_is_uplink, false, announce);
    rig
}

impl Rig {
    /// `flows` established connections of `proto` through masquerade, measured going `dir` (see the module
    /// documentation of `bench::nat`). Each step is one burst of 32 steady-state 64-byte frames, one per
    /// connection in turn. Panics if setting up the connections did not go as planned (a broken rig).
    pub fn nat(flows: u32, proto: NatProto, dir: NatDirection) -> Rig {
        let generator_is_uplink = dir == NatDirection::Reply;
        let mut rig = base(generator_is_uplink, flows as usize + 1024);
        let fr = Frames { gw: rif_mac(&rig.switch, "network:bridge"), up: rif_mac(&rig.switch, "port:up"), proto };
        run(&mut rig, generator_is_uplink, false, (0..flows).map(|i| fr.first(&flow(i))));
        run(&mut rig, generator_is_uplink, true, (0..flows).map(|i| fr.answer(&flow(i))));
        if proto == NatProto::Tcp {
            run(&mut rig, generator_is_uplink, false, (0..flows).map(|i| fr.handshake_ack(&flow(i))));
        }
        let s = rig.switch.nat_stats();
        assert_eq!(s.snat_created, u64::from(flows), "every flow was masqueraded");
        assert_eq!(rig.switch.router().nat().snat_stats().remapped, 0, "every flow kept its port");
        assert_eq!(rig.switch.conntrack().len(), flows as usize);
        assert_eq!(rig.switch.counters().total_drops(), 0, "{:?}", rig.switch.counters().drops_by_name());
        let templates: Vec<Vec<u8>> = (0..flows).map(|i| fr.steady(&flow(i), dir)).collect();
        rig.gen = MemPort::cycle(if generator_is_uplink { "up" } else { "c" }, templates);
        rig
    }
}

/// The steady-state UDP frames of a rig made by `Rig::nat(flows, NatProto::Udp, dir)` (or the first packets of
/// [`NewFlows`] when `first`), `frame_len` bytes each (without FCS), with zeros in the first 10 payload bytes
/// (where `vswitch-bench pipeline` writes its timestamps) and a valid UDP checksum.
pub fn udp_frames(switch: &Switch, flows: std::ops::Range<u32>, dir: NatDirection, frame_len: usize) -> Vec<Vec<u8>> {
    let (gw, up) = (rif_mac(switch, "network:bridge"), rif_mac(switch, "port:up"));
    flows
        .map(|i| {
            let f = flow(i);
            match dir {
                NatDirection::Outbound => crate::udp_frame(f.mac.0, gw.0, f.ip, f.server, f.sport, f.dport, frame_len),
                NatDirection::Reply => {
                    crate::udp_frame(UPSTREAM_MAC.0, up.0, f.server, UPLINK_ADDR, f.dport, f.sport, frame_len)
                }
            }
        })
        .collect()
}

/// A rig where every frame opens a new masqueraded connection (see the module documentation).
#[derive(Debug)]
pub struct NewFlows {
    /// The rig; its generator cycles `window` first packets of distinct flows.
    pub rig: Rig,
    window: u32,
    /// Bursts since the last flush.
    bursts: u32,
}

impl NewFlows {
    /// A rig cycling the first packets (UDP datagrams or TCP SYNs) of `window` distinct flows (a multiple of 32);
    /// the table's limit is above `window`.
    pub fn new(window: u32, proto: NatProto) -> NewFlows {
        assert!(window.is_multiple_of(32) && window > 0, "the window is a whole number of bursts");
        let mut rig = base(false, window as usize + 1024);
        let fr = Frames { gw: rif_mac(&rig.switch, "network:bridge"), up: rif_mac(&rig.switch, "port:up"), proto };
        rig.gen = MemPort::cycle("c", (0..window).map(|i| fr.first(&flow(i))).collect());
        NewFlows { rig, window, bursts: 0 }
    }

    /// Bursts left before the window wraps and the table must be flushed.
    pub fn room(&self) -> u32 {
        self.window / 32 - self.bursts
    }

    /// One burst of 32 new connections. Call only while [`NewFlows::room`] is not 0.
    #[inline]
    pub fn step(&mut self) -> usize {
        self.bursts += 1;
        self.rig.step()
    }

    /// Removes every connection (releasing their ports) once the window wrapped; returns true if it did.
    pub fn flush_if_full(&mut self) -> bool {
        if self.room() > 0 {
            return false;
        }
        self.rig.switch.flush_conntrack();
        self.bursts = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::port::Port;

    #[test]
    fn established_rigs_translate_every_frame() {
        for proto in [NatProto::Udp, NatProto::Tcp] {
            for dir in [NatDirection::Outbound, NatDirection::Reply] {
                let mut rig = Rig::nat(100, proto, dir);
                let before = (rig.sink.stats().tx_packets, rig.switch.nat_stats());
                for _ in 0..10 {
                    assert_eq!(rig.step(), 32);
                }
                let s = rig.switch.nat_stats();
                assert_eq!(rig.sink.stats().tx_packets - before.0, 320, "{proto:?} {dir:?}: all reached the sink");
                let hits = match dir {
                    NatDirection::Outbound => s.hits_original - before.1.hits_original,
                    NatDirection::Reply => s.hits_reply - before.1.hits_reply,
                };
                assert_eq!(hits, 320, "{proto:?} {dir:?}: every frame was translated");
                assert_eq!(s.snat_created, 100, "no new connection while measuring");
                assert_eq!(rig.switch.counters().total_drops(), 0, "{:?}", rig.switch.counters().drops_by_name());
                assert_eq!(rig.pool.available(), 4096, "no buffer leaked");
            }
        }
    }

    #[test]
    fn new_flow_rig_creates_a_connection_per_frame_across_flushes() {
        for proto in [NatProto::Udp, NatProto::Tcp] {
            let mut nf = NewFlows::new(256, proto);
            let base = nf.rig.sink.stats().tx_packets;
            let mut sent = 0;
            for _ in 0..20 {
                while nf.room() > 0 {
                    sent += nf.step();
                }
                assert_eq!(nf.rig.switch.conntrack().len(), 256);
                assert!(nf.flush_if_full());
                assert_eq!(nf.rig.switch.conntrack().len(), 0);
            }
            let s = nf.rig.switch.nat_stats();
            assert_eq!(s.snat_created, sent as u64, "{proto:?}: one connection per frame");
            assert_eq!(nf.rig.sink.stats().tx_packets - base, sent as u64);
            assert_eq!(nf.rig.switch.counters().total_drops(), 0);
            nf.rig.switch.router().nat().check_invariants().expect("ports released by the flushes");
        }
    }
}
