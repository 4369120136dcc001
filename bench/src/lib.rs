//! Shared set-up for vswitch's benchmarks: switches over [`MemPort`]s fed with synthetic 64-byte frames.

use dataplane::batch::Batch;
use dataplane::buffer::BufPool;
use dataplane::config::Config;
use dataplane::pipeline::{Switch, TxQueues};
use dataplane::port::mem::MemPort;
use dataplane::port::{Port, PortId};
use etherparse::PacketBuilder;

pub mod cli;
pub mod live;
pub mod nat;
pub mod overlay;
pub mod pipeline;
pub mod plot;
pub mod sweep;

/// A 64-byte (without FCS: 60 + 4) UDP frame: 14 Ethernet + 20 IPv4 + 8 UDP + 18 payload = 60 bytes.
pub fn udp64(src_mac: [u8; 6], dst_mac: [u8; 6], src_ip: [u8; 4], dst_ip: [u8; 4], sport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src_ip, dst_ip, 64).udp(sport, 9);
    let payload = [0u8; 18];
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).expect("writing to a Vec cannot fail");
    v
}

/// Frame lengths (without FCS) `udp_frame` can build: 60 (a 64-byte frame on the wire) to 1514.
pub const FRAME_LEN: std::ops::RangeInclusive<usize> = 60..=1514;

/// A UDP frame of `frame_len` bytes (without FCS; clamped to [`FRAME_LEN`]) with an all-zero payload and a valid
/// UDP checksum.
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: std::net::Ipv4Addr,
    dst_ip: std::net::Ipv4Addr,
    sport: u16,
    dport: u16,
    frame_len: usize,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src_ip.octets(), dst_ip.octets(), 64).udp(sport, dport);
    let payload = vec![0u8; frame_len.clamp(*FRAME_LEN.start(), *FRAME_LEN.end()) - 42];
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).expect("writing to a Vec cannot fail");
    v
}

/// Locally administered unicast MAC number `n`.
pub fn host_mac(n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x02, 0x00, b[0], b[1], b[2], b[3]]
}

/// A switch with two in-memory ports: `gen` (id 0) receives a cycle of template frames, `sink` (id 1) counts
/// what it is sent. Built by [`Rig::l2`] or [`Rig::routed`].
#[derive(Debug)]
pub struct Rig {
    /// The pipeline.
    pub switch: Switch,
    /// Generator port (id 0).
    pub gen: MemPort,
    /// Sink port (id 1).
    pub sink: MemPort,
    /// Buffers.
    pub pool: BufPool,
    /// Transmit queues.
    pub tx: TxQueues,
    batch: Batch,
}

impl Rig {
    fn with(switch: Switch, frames: Vec<Vec<u8>>) -> Self {
        Rig {
            switch,
            gen: MemPort::cycle("gen", frames),
            sink: MemPort::new("sink"),
            pool: BufPool::new(4096),
            tx: TxQueues::new(2, 256),
            batch: Batch::new(),
        }
    }

    /// The configuration of [`Rig::l2`] with `sources` source MACs. The MAC limit is room for every source and
    /// the sink's host; past the configuration language's range (`mac_limit` ≤ 1,000,000) it is set after
    /// validation, as [`Rig::routed`]'s routes are, so a table of 1M sources plus the sink's host is measured
    /// without evictions.
    pub fn l2_config(sources: u32) -> Config {
        let limit = (sources as usize + 16).max(1024);
        let max = *dataplane::config::limits::MAC_LIMIT.end();
        let mut cfg = Config::parse(
            &format!(
                "[[network]]\nname = \"bench\"\nmac_limit = {}\n\n\
                 [[port]]\nname = \"gen\"\nkind = \"mem\"\nnetwork = \"bench\"\n\n\
                 [[port]]\nname = \"sink\"\nkind = \"mem\"\nnetwork = \"bench\"\n",
                limit.min(max)
            ),
            "bench",
        )
        .expect("bench config is valid");
        cfg.networks[0].mac_limit = limit;
        cfg
    }

    /// The configuration of [`Rig::routed`] without its extra routes (which are added after validation).
    pub fn routed_config() -> Config {
        Config::parse(
            "[[network]]\nname = \"a\"\nsubnet = \"10.0.1.0/24\"\ngateway = \"10.0.1.1\"\n\
             [[network]]\nname = \"b\"\nsubnet = \"10.0.2.0/24\"\ngateway = \"10.0.2.1\"\n\
             [[port]]\nname = \"gen\"\nkind = \"mem\"\nnetwork = \"a\"\n\
             [[port]]\nname = \"sink\"\nkind = \"mem\"\nnetwork = \"b\"\n",
            "bench",
        )
        .expect("bench config is valid")
    }

    /// One network, two ports: `gen` receives a cycle of frames from `sources` distinct source MACs, all
    /// addressed to a host already learned behind `sink`.
    pub fn l2(sources: u32) -> Self {
        let cfg = Rig::l2_config(sources);
        let dst = host_mac(0xffff_0001);
        let frames = (0..sources).map(|i| udp64(host_mac(i + 1), dst, [10, 0, 0, 1], [10, 0, 0, 2], 1000)).collect();
        let mut rig = Rig::with(Switch::new(&cfg), frames);
        rig.sink.inject(&udp64(dst, host_mac(1), [10, 0, 0, 2], [10, 0, 0, 1], 9));
        rig.sink.set_tx_mode(dataplane::port::mem::TxMode::Count);
        rig.step_port(1);
        // Warm the table: one pass over every source.
        for _ in 0..sources.div_ceil(32) {
            rig.step();
        }
        rig
    }

    fn step_port(&mut self, id: PortId) -> usize {
        let port = if id == 0 { &mut self.gen } else { &mut self.sink };
        let n = port.rx_burst(0, &mut self.pool, &mut self.batch).expect("mem ports do not fail");
        self.switch.process(0, id, &mut self.batch, &mut self.pool, &mut self.tx);
        for p in [0, 1] {
            let q = self.tx.queue_mut(p);
            if !q.is_empty() {
                let port = if p == 0 { &mut self.gen } else { &mut self.sink };
                port.tx_burst(&mut self.pool, q).expect("mem ports do not fail");
            }
        }
        n
    }

    /// One burst from the generator through the switch to the sink; returns frames received.
    #[inline]
    pub fn step(&mut self) -> usize {
        self.step_port(0)
    }

    /// Two networks with gateways and `routes` extra static routes (random /16–/28 prefixes, plus everything the
    /// traffic needs) via a router host on network `b`. The generator sends 64-byte UDP frames from a host on `a`
    /// to the gateway MAC, destined to addresses inside the installed routes (1024 distinct destinations cycled);
    /// the next hop's MAC is resolved before measuring. Every frame is routed: LPM, TTL, checksum, MAC rewrite.
    pub fn routed(routes: usize) -> Self {
        Rig::routed_with_prefixes(routes).0
    }

    /// [`Rig::routed`], with the extra routes' prefixes (for callers that make their own frames: the source is
    /// host [`host_mac`]`(1)` at 10.0.1.10 on network `a`, sent to the gateway MAC, `switch.topology().rifs[0]`).
    pub fn routed_with_prefixes(routes: usize) -> (Self, Vec<dataplane::route::Ipv4Net>) {
        use dataplane::config::RouteConfig;
        use std::net::Ipv4Addr;
        let via = Ipv4Addr::new(10, 0, 2, 254);
        let mut rng = SplitMix(routes as u64 + 1);
        let mut prefixes = std::collections::BTreeSet::new();
        while prefixes.len() < routes {
            let r = rng.next_u64();
            let len = 16 + (r % 13) as u8; // /16../28
                                           // Unicast space only: first octet 1..=223, not 10 (the rig's own) nor 127 (loopback).
            let first = 1 + ((r >> 56) as u32 % 223);
            if first == 10 || first == 127 {
                continue;
            }
            let addr = Ipv4Addr::from((first << 24) | ((r >> 32) as u32 & 0x00ff_ffff));
            if let Ok(p) = ipnet_of(addr, len) {
                if !p.contains(&Ipv4Addr::new(10, 0, 1, 1)) && !p.contains(&via) {
                    prefixes.insert(p);
                }
            }
        }
        let mut cfg = Rig::routed_config();
        // Routes are added after validation: checking a million of them is not what is measured here.
        cfg.routes = prefixes.iter().map(|p| RouteConfig { prefix: *p, via, port: None }).collect();
        let switch = Switch::new(&cfg);
        let rifs = &switch.topology().rifs;
        let gw_a = rifs[0].mac.0;
        // Destinations: 1024 addresses inside the installed routes (or 10.0.2.x when there are none).
        let prefixes: Vec<_> = prefixes.into_iter().collect();
        let kept = prefixes.clone();
        let frames = (0..1024u32)
            .map(|i| {
                let dst = if prefixes.is_empty() {
                    [10, 0, 2, (i % 200) as u8 + 2]
                } else {
                    let p = prefixes[rng.next_u64() as usize % prefixes.len()];
                    let host = (rng.next_u64() as u32) & !u32::from(p.netmask());
                    (u32::from(p.network()) | host).to_be_bytes()
                };
                udp64(host_mac(1), gw_a, [10, 0, 1, 10], dst, 1000 + (i as u16 % 64))
            })
            .collect();
        let mut rig = Rig::with(switch, frames);
        // The next-hop router and the (connected) hosts of b announce themselves: ARP requests for gateway b.
        let mut announce = vec![arp_request(host_mac(0xb0_0000), via, Ipv4Addr::new(10, 0, 2, 1))];
        for h in 2..202u8 {
            announce.push(arp_request(
                host_mac(0xb0_0000 + u32::from(h)),
                Ipv4Addr::new(10, 0, 2, h),
                Ipv4Addr::new(10, 0, 2, 1),
            ));
        }
        for f in &announce {
            rig.sink.inject(f);
        }
        while rig.sink.pending() > 0 {
            rig.step_port(1);
        }
        rig.sink.set_tx_mode(dataplane::port::mem::TxMode::Count);
        rig.step();
        (rig, kept)
    }
}

/// A small deterministic generator (SplitMix64) so benchmarks need no extra dependency.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn ipnet_of(addr: std::net::Ipv4Addr, len: u8) -> Result<dataplane::route::Ipv4Net, ()> {
    dataplane::route::Ipv4Net::new(addr, len).map(|n| n.trunc()).map_err(|_| ())
}

/// A broadcast ARP request from `mac`/`ip` for `target`.
pub fn arp_request(mac: [u8; 6], ip: std::net::Ipv4Addr, target: std::net::Ipv4Addr) -> Vec<u8> {
    dataplane::wire::builder::arp_request(dataplane::wire::MacAddr(mac), ip, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rig_forwards_every_frame_to_the_sink_without_flooding() {
        let mut rig = Rig::l2(100);
        let before = rig.sink.stats().tx_packets;
        for _ in 0..10 {
            assert_eq!(rig.step(), 32);
        }
        assert_eq!(rig.sink.stats().tx_packets - before, 320);
        assert_eq!(rig.gen.stats().tx_packets, 1, "only the sink host's first frame was flooded back");
        assert_eq!(rig.switch.counters().total_drops(), 0);
        assert_eq!(rig.pool.available(), 4096, "no buffer leaked");
    }

    #[test]
    fn router_rig_routes_every_frame() {
        for routes in [0, 10, 1000] {
            let mut rig = Rig::routed(routes);
            let before = rig.sink.stats().tx_packets;
            for _ in 0..10 {
                assert_eq!(rig.step(), 32);
            }
            assert_eq!(rig.sink.stats().tx_packets - before, 320, "{routes} routes: every frame reached the sink");
            assert_eq!(rig.switch.counters().total_drops(), 0, "{:?}", rig.switch.counters().drops_by_name());
            assert_eq!(rig.pool.available(), 4096, "no buffer leaked");
        }
    }
}
