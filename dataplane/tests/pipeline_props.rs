//! Property tests of the whole pipeline: random sequences of frames (arbitrary bytes, valid frames from the
//! builders with addresses from small pools, and valid frames mutated) and clock steps, run through a
//! [`Testbed`](dataplane::testbed::Testbed) with every invariant of `dataplane/fuzz/harness.rs` checked after each
//! step (accounting, no leaked buffers, MAC table limits, isolation between networks, egress sizes).
//!
//! The same checker drives the `pipeline` fuzz target (`dataplane/fuzz`); this file also replays the fuzz seed
//! corpus and, with `VSWITCH_WRITE_FUZZ_CORPUS=1`, writes it:
//! `VSWITCH_WRITE_FUZZ_CORPUS=1 cargo test -p dataplane --test pipeline_props -- --ignored write_fuzz_corpus`.
//!
//! 256 cases per property by default (a few seconds); more with `PROPTEST_CASES=N`.

#[path = "../fuzz/harness.rs"]
mod harness;

use dataplane::buffer::{Nanos, NANOS_PER_SEC};
use dataplane::config::Config;
use dataplane::counters::DropReason;
use dataplane::port::PortId;
use dataplane::topology::derived_mac;
use dataplane::wire::builder::{arp, eth, with_vlan, Arp, ArpOp, Ipv4Opts, Ipv4Spec, Ipv6Spec, TcpFlags, TcpSegment};
use dataplane::wire::MacAddr;
use harness::{encode_records, run_records, Harness, L2_CONFIG, ROUTED_CONFIG};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRunner};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------------------------
// Generators.

/// Hosts in the MAC pool: more than the networks' `mac_limit` (8), so tables fill and evict.
const HOSTS: u8 = 12;

fn host_mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}

fn gw_mac(network: &str) -> MacAddr {
    derived_mac(&format!("network:{network}"))
}

/// The routed port `up`'s MAC.
fn up_mac() -> MacAddr {
    derived_mac("port:up")
}

/// The next hop behind `up` (203.0.113.1).
const UPSTREAM: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);

fn mac() -> BoxedStrategy<MacAddr> {
    prop_oneof![
        12 => (1..=HOSTS).prop_map(host_mac),
        2 => Just(MacAddr::BROADCAST),
        1 => Just(MacAddr([1, 0, 0x5e, 0, 0, 1])),
        1 => Just(MacAddr::ZERO),
        2 => Just(gw_mac("red")),
        2 => Just(gw_mac("blue")),
        1 => Just(up_mac()),
        1 => any::<[u8; 6]>().prop_map(MacAddr),
    ]
    .boxed()
}

/// Addresses of the routed configuration's subnets (hosts, gateways, the uplink's next hop and address,
/// broadcasts), addresses only the default route reaches, and martian ones.
fn ipv4() -> BoxedStrategy<Ipv4Addr> {
    prop_oneof![
        8 => (1..=HOSTS).prop_map(|n| Ipv4Addr::new(10, 1, 0, n)),
        8 => (1..=HOSTS).prop_map(|n| Ipv4Addr::new(10, 2, 0, n)),
        2 => Just(Ipv4Addr::new(10, 1, 0, 1)),
        2 => Just(Ipv4Addr::new(10, 2, 0, 1)),
        2 => prop::sample::select(vec![
            Ipv4Addr::new(203, 0, 113, 1),
            Ipv4Addr::new(203, 0, 113, 2),
            Ipv4Addr::new(203, 0, 113, 7),
            Ipv4Addr::new(198, 51, 100, 9),
        ]),
        1 => prop::sample::select(vec![
            Ipv4Addr::new(10, 1, 0, 255),
            Ipv4Addr::new(10, 2, 0, 255),
            Ipv4Addr::new(10, 3, 0, 5),
            Ipv4Addr::new(8, 8, 8, 8),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::new(224, 0, 0, 5),
            Ipv4Addr::BROADCAST,
        ]),
        1 => any::<u32>().prop_map(Ipv4Addr::from),
    ]
    .boxed()
}

fn payload_len() -> BoxedStrategy<usize> {
    prop_oneof![8 => 0usize..100, 1 => 100usize..1300, 2 => 1300usize..1480].boxed()
}

#[derive(Debug, Clone)]
enum L4 {
    Udp(u16, u16),
    Tcp(u8),
    EchoRequest(u16),
    EchoReply(u16),
}

#[derive(Debug, Clone)]
enum Kind {
    Ipv4 { src_ip: Ipv4Addr, dst_ip: Ipv4Addr, ttl: u8, df: bool, l4: L4, len: usize },
    Arp { reply: bool, broadcast: bool, sender_ip: Ipv4Addr, target_ip: Ipv4Addr, target_mac: MacAddr },
    Ipv6Udp { src: u16, dst: u16, len: usize },
    Raw { ethertype: u16, payload: Vec<u8> },
}

/// A valid frame, described (so shrinking yields readable cases).
#[derive(Debug, Clone)]
struct Valid {
    src: MacAddr,
    dst: MacAddr,
    vlans: Vec<u16>,
    kind: Kind,
}

impl Valid {
    fn build(&self) -> Vec<u8> {
        let (src, dst) = (self.src, self.dst);
        let mut f = match &self.kind {
            Kind::Ipv4 { src_ip, dst_ip, ttl, df, l4, len } => {
                let spec = Ipv4Spec::new(src, dst, *src_ip, *dst_ip).with_opts(Ipv4Opts { ttl: *ttl, df: *df, id: 7 });
                match l4 {
                    L4::Udp(s, d) => spec.udp(*s, *d, *len),
                    L4::Tcp(flags) => spec.tcp(TcpSegment::new(40000, 80, tcp_flags(*flags)).seq(1), *len),
                    L4::EchoRequest(seq) => spec.icmp_echo_request(1, *seq, *len),
                    L4::EchoReply(seq) => spec.icmp_echo_reply(1, *seq, *len),
                }
            }
            Kind::Arp { reply, broadcast, sender_ip, target_ip, target_mac } => {
                let op = if *reply { ArpOp::Reply } else { ArpOp::Request };
                let msg =
                    Arp { op, sender_mac: src, sender_ip: *sender_ip, target_mac: *target_mac, target_ip: *target_ip };
                arp(if *broadcast { MacAddr::BROADCAST } else { dst }, &msg)
            }
            Kind::Ipv6Udp { src: s, dst: d, len } => {
                let a = |n: u16| Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, n);
                Ipv6Spec::new(src, dst, a(*s), a(*d)).udp(5353, 5353, *len)
            }
            Kind::Raw { ethertype, payload } => eth(dst, src, *ethertype, payload),
        };
        for vid in &self.vlans {
            f = with_vlan(&f, *vid);
        }
        f
    }
}

fn tcp_flags(bits: u8) -> TcpFlags {
    [TcpFlags::FIN, TcpFlags::SYN, TcpFlags::RST, TcpFlags::PSH, TcpFlags::ACK]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .fold(TcpFlags::NONE, |acc, (_, f)| acc | f)
}

fn l4() -> BoxedStrategy<L4> {
    prop_oneof![
        3 => (any::<u16>(), prop_oneof![Just(53u16), Just(33434), any::<u16>()]).prop_map(|(s, d)| L4::Udp(s, d)),
        2 => any::<u8>().prop_map(L4::Tcp),
        2 => any::<u16>().prop_map(L4::EchoRequest),
        1 => any::<u16>().prop_map(L4::EchoReply),
    ]
    .boxed()
}

fn kind() -> BoxedStrategy<Kind> {
    let ttl = prop_oneof![6 => Just(64u8), 1 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)];
    prop_oneof![
        8 => (ipv4(), ipv4(), ttl, any::<bool>(), l4(), payload_len())
            .prop_map(|(src_ip, dst_ip, ttl, df, l4, len)| Kind::Ipv4 { src_ip, dst_ip, ttl, df, l4, len }),
        4 => (any::<bool>(), any::<bool>(), ipv4(), ipv4(), mac()).prop_map(
            |(reply, broadcast, sender_ip, target_ip, target_mac)| Kind::Arp {
                reply,
                broadcast,
                sender_ip,
                target_ip,
                target_mac
            }
        ),
        1 => (1u16..5, 1u16..5, payload_len()).prop_map(|(src, dst, len)| Kind::Ipv6Udp { src, dst, len }),
        1 => (
            prop_oneof![Just(0x88ccu16), Just(0x0800), Just(0x86dd), Just(0x0806), Just(0x8100), any::<u16>()],
            prop::collection::vec(any::<u8>(), 0..80)
        )
            .prop_map(|(ethertype, payload)| Kind::Raw { ethertype, payload }),
    ]
    .boxed()
}

fn valid() -> BoxedStrategy<Valid> {
    let vlans = prop_oneof![8 => Just(vec![]), 2 => prop::collection::vec(0u16..4096, 1..=2)];
    let random = (mac(), mac(), vlans, kind()).prop_map(|(src, dst, vlans, kind)| Valid { src, dst, vlans, kind });
    prop_oneof![3 => random, 2 => coherent()].boxed()
}

/// What a well-behaved host on `red` (10.1.0.0/24) or `blue` (10.2.0.0/24) sends: its own MAC and address,
/// via its gateway to other subnets (10.3.0.0/24 only by the default route, out of `up`), ARP for and answers
/// to the gateway; and what the upstream router behind `up` sends: ARP with the switch, traffic from the
/// internet to the hosts. These reach routing, neighbour resolution and ping far more often than random
/// addresses do.
fn coherent() -> BoxedStrategy<Valid> {
    (1..=HOSTS, 1..=HOSTS, any::<bool>(), 1..=3u8, 0..9u8, payload_len())
        .prop_map(|(n, m, from_blue, to_subnet, what, len)| {
            let (net, subnet) = if from_blue { ("blue", 2) } else { ("red", 1) };
            let (me, gw) = (Ipv4Addr::new(10, subnet, 0, n), Ipv4Addr::new(10, subnet, 0, 1));
            let peer = Ipv4Addr::new(10, to_subnet, 0, m);
            let gw_mac = gw_mac(net);
            let arp = |reply: bool, target_ip: Ipv4Addr| Kind::Arp {
                reply,
                broadcast: !reply,
                sender_ip: me,
                target_ip,
                target_mac: if reply { gw_mac } else { MacAddr::ZERO },
            };
            let ip = |l4: L4, dst_ip: Ipv4Addr| Kind::Ipv4 { src_ip: me, dst_ip, ttl: 64, df: true, l4, len };
            let upstream = Ipv4Addr::new(203, 0, 113, 1);
            let up_arp = |reply: bool| Kind::Arp {
                reply,
                broadcast: !reply,
                sender_ip: upstream,
                target_ip: Ipv4Addr::new(203, 0, 113, 2),
                target_mac: if reply { up_mac() } else { MacAddr::ZERO },
            };
            let inbound = Kind::Ipv4 {
                src_ip: Ipv4Addr::new(198, 51, 100, 9),
                dst_ip: me,
                ttl: 64,
                df: true,
                l4: L4::Udp(53, 1000),
                len,
            };
            let (src, dst, kind) = match what {
                6 => (UPSTREAM, MacAddr::BROADCAST, up_arp(false)),
                7 => (UPSTREAM, up_mac(), up_arp(true)),
                8 => (UPSTREAM, up_mac(), inbound),
                _ => (host_mac(n), MacAddr::ZERO, Kind::Raw { ethertype: 0, payload: vec![] }),
            };
            if what >= 6 {
                return Valid { src, dst, vlans: vec![], kind };
            }
            let (dst, kind) = match what {
                0 => (MacAddr::BROADCAST, arp(false, gw)),
                1 => (gw_mac, arp(true, gw)),
                2 => (gw_mac, ip(L4::EchoRequest(m.into()), gw)),
                3 => (gw_mac, ip(L4::Tcp(0x02), peer)),
                4 => (host_mac(m), ip(L4::Udp(1000, 2000), peer)),
                _ => (gw_mac, ip(L4::Udp(1000, 2000), peer)),
            };
            Valid { src: host_mac(n), dst, vlans: vec![], kind }
        })
        .boxed()
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    Flip(Index, u8),
}

fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
enum Input {
    Bytes(Vec<u8>),
    Valid(Valid, Vec<Mutation>),
}

impl Input {
    fn build(&self) -> Vec<u8> {
        match self {
            Input::Bytes(b) => b.clone(),
            Input::Valid(v, muts) => {
                let mut f = v.build();
                for m in muts {
                    match m {
                        Mutation::Truncate(i) => f.truncate(i.index(f.len() + 1)),
                        Mutation::Flip(i, x) if !f.is_empty() => {
                            let i = i.index(f.len());
                            f[i] ^= x;
                        }
                        Mutation::Flip(..) => {}
                    }
                }
                f
            }
        }
    }
}

fn input() -> BoxedStrategy<Input> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..1600).prop_map(Input::Bytes),
        6 => valid().prop_map(|v| Input::Valid(v, vec![])),
        3 => (valid(), prop::collection::vec(mutation(), 1..3)).prop_map(|(v, m)| Input::Valid(v, m)),
    ]
    .boxed()
}

fn time_step() -> BoxedStrategy<Nanos> {
    prop_oneof![
        6 => Just(0),
        2 => 0..10_000_000u64,
        2 => NANOS_PER_SEC / 20..3 * NANOS_PER_SEC / 2,
        1 => NANOS_PER_SEC..8 * NANOS_PER_SEC,
    ]
    .boxed()
}

/// One step: wait, then receive a frame on a port (index taken modulo the number of ports).
#[derive(Debug, Clone)]
struct Step {
    dt: Nanos,
    port: Index,
    input: Input,
}

fn steps() -> BoxedStrategy<Vec<Step>> {
    prop::collection::vec(
        (time_step(), any::<Index>(), input()).prop_map(|(dt, port, input)| Step { dt, port, input }),
        1..48,
    )
    .boxed()
}

fn run(cfg: &Config, steps: &[Step]) -> Harness {
    let mut h = Harness::new(cfg);
    for s in steps {
        h.advance(s.dt);
        let port = s.port.index(h.ports()) as PortId;
        h.send(port, &s.input.build());
    }
    h.finish();
    h
}

fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256);
    // XorShift: the default ChaCha costs most of the run time in an unoptimized test build.
    ProptestConfig { cases, rng_algorithm: RngAlgorithm::XorShift, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(proptest_config())]

    /// Two L2-only networks: every invariant after every frame and clock step.
    #[test]
    fn l2_pipeline_invariants(steps in steps()) {
        run(&harness::config(L2_CONFIG), &steps);
    }

    /// Two networks with gateways (routing, ARP, ping, ICMP errors, held frames) and one L2-only network.
    #[test]
    fn routed_pipeline_invariants(steps in steps()) {
        run(&harness::config(ROUTED_CONFIG), &steps);
    }
}

/// The generators are only worth something if they reach the interesting paths: run a fixed sample of
/// sequences and require that learning, eviction, ageing, flooding, routing, ARP resolution and failure, ping
/// and a spread of drop reasons all happened somewhere.
#[test]
fn generators_reach_the_interesting_paths() {
    let cfg = harness::config(ROUTED_CONFIG);
    let mut runner = TestRunner::deterministic();
    let strategy = steps();
    let (mut evicted, mut aged, mut moved, mut routed, mut arp_replies, mut echo, mut failed, mut icmp_err) =
        (0, 0, 0, 0, 0, 0, 0, 0);
    let mut reasons = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let steps = strategy.new_tree(&mut runner).expect("generate").current();
        let h = run(&cfg, &steps);
        let sw = h.testbed().switch();
        for s in sw.fdb_stats() {
            evicted += s.evicted;
            aged += s.aged;
            moved += s.moved;
        }
        let r = sw.router().stats();
        routed += r.forwarded;
        arp_replies += r.arp_replies;
        echo += r.echo_replies;
        icmp_err += r.icmp_errors;
        failed += sw.router().neigh_stats().failed;
        for reason in DropReason::ALL {
            if sw.counters().drops(*reason) > 0 {
                reasons.insert(reason.name());
            }
        }
    }
    eprintln!("over 100 sequences: evicted {evicted}, aged {aged}, moved {moved}, routed {routed}, arp replies {arp_replies}, echo replies {echo}, failed resolutions {failed}, icmp errors {icmp_err}; drop reasons {reasons:?}");
    let counts = [evicted, aged, moved, routed, arp_replies, echo, failed, icmp_err];
    assert!(
        counts.iter().all(|&c| c > 0),
        "[evicted, aged, moved, routed, arp, echo, failed, icmp errors] = {counts:?}"
    );
    for r in ["runt", "bad-ip-length", "same-port", "bad-arp", "not-for-us", "ttl-expired", "host-unreachable"] {
        assert!(reasons.contains(r), "no case dropped for {r}; reached: {reasons:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Fuzz corpus: seeds, their replay, and reproducers of what the fuzzer found.

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pipeline")
}

/// Ports of `ROUTED_CONFIG`, the fuzz target's configuration, by index (f is `E + 1`).
const A: u8 = 0;
const B: u8 = 1;
const C: u8 = 2;
const D: u8 = 3;
const E: u8 = 4;
const UP: u8 = 6;

/// Small scenarios of valid frames (ARP, UDP, TCP, ICMP, VLAN, IPv6, routing) as fuzz records.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let h = |n: u8| host_mac(n);
    let red = |n: u8| Ipv4Addr::new(10, 1, 0, n);
    let blue = |n: u8| Ipv4Addr::new(10, 2, 0, n);
    let (gw_red, gw_blue) = (gw_mac("red"), gw_mac("blue"));
    let udp = |s: MacAddr, d: MacAddr, si: Ipv4Addr, di: Ipv4Addr| Ipv4Spec::new(s, d, si, di).udp(1000, 2000, 18);
    let arp_req = |s: MacAddr, si: Ipv4Addr, ti: Ipv4Addr| {
        arp(
            MacAddr::BROADCAST,
            &Arp { op: ArpOp::Request, sender_mac: s, sender_ip: si, target_mac: MacAddr::ZERO, target_ip: ti },
        )
    };
    let arp_rep = |s: MacAddr, si: Ipv4Addr, d: MacAddr, di: Ipv4Addr| {
        arp(d, &Arp { op: ArpOp::Reply, sender_mac: s, sender_ip: si, target_mac: d, target_ip: di })
    };
    let seed = |records: Vec<(u8, u8, Vec<u8>)>| {
        let refs: Vec<(u8, u8, &[u8])> = records.iter().map(|(p, t, f)| (*p, *t, f.as_slice())).collect();
        encode_records(&refs)
    };
    let tcp = |s: MacAddr, d: MacAddr, si: Ipv4Addr, di: Ipv4Addr, flags: TcpFlags| {
        Ipv4Spec::new(s, d, si, di).tcp(TcpSegment::new(40000, 80, flags).seq(1), 0)
    };
    vec![
        (
            "seed-arp-gateway",
            seed(vec![(A, 0, arp_req(h(2), red(2), red(1))), (A, 1, arp_rep(h(2), red(2), gw_red, red(1)))]),
        ),
        (
            "seed-udp-learn",
            seed(vec![
                (A, 0, udp(h(2), h(3), red(2), red(3))),
                (B, 1, udp(h(3), h(2), red(3), red(2))),
                (A, 1, udp(h(2), h(3), red(2), red(3))),
            ]),
        ),
        (
            "seed-tcp-handshake",
            seed(vec![
                (E, 0, tcp(h(4), h(5), red(4), red(5), TcpFlags::SYN)),
                (E + 1, 0, tcp(h(5), h(4), red(5), red(4), TcpFlags::SYN | TcpFlags::ACK)),
                (E, 0, tcp(h(4), h(5), red(4), red(5), TcpFlags::ACK)),
            ]),
        ),
        (
            "seed-vlan",
            seed(vec![
                (C, 0, with_vlan(&udp(h(6), MacAddr::BROADCAST, blue(6), blue(255)), 10)),
                (D, 2, with_vlan(&with_vlan(&udp(h(7), h(6), blue(7), blue(6)), 20), 30)),
            ]),
        ),
        (
            "seed-ping-gateway",
            seed(vec![(A, 0, Ipv4Spec::new(h(2), gw_red, red(2), red(1)).icmp_echo_request(1, 1, 32))]),
        ),
        (
            "seed-routed-resolved",
            seed(vec![
                (A, 0, udp(h(2), gw_red, red(2), blue(5))),
                (C, 2, arp_rep(h(5), blue(5), gw_blue, blue(1))),
                (C, 1, udp(h(5), gw_blue, blue(5), red(2))),
                (A, 1, arp_rep(h(2), red(2), gw_red, red(1))),
            ]),
        ),
        (
            "seed-routed-unanswered",
            seed(vec![
                (A, 0, udp(h(2), gw_red, red(2), blue(9))),
                (A, 5, udp(h(2), gw_red, red(2), blue(9))),
                (B, 80, vec![]),
            ]),
        ),
        (
            "seed-ttl-and-default-route",
            seed(vec![
                (
                    A,
                    0,
                    Ipv4Spec::new(h(2), gw_red, red(2), blue(5))
                        .with_opts(Ipv4Opts { ttl: 1, ..Ipv4Opts::default() })
                        .udp(1000, 33434, 0),
                ),
                (B, 1, udp(h(3), gw_red, red(3), Ipv4Addr::new(8, 8, 8, 8))),
            ]),
        ),
        (
            "seed-uplink",
            seed(vec![
                (A, 0, udp(h(2), gw_red, red(2), Ipv4Addr::new(198, 51, 100, 9))),
                (UP, 1, arp_rep(UPSTREAM, Ipv4Addr::new(203, 0, 113, 1), up_mac(), Ipv4Addr::new(203, 0, 113, 2))),
                (UP, 1, udp(UPSTREAM, up_mac(), Ipv4Addr::new(198, 51, 100, 9), red(2))),
                (A, 1, arp_rep(h(2), red(2), gw_red, red(1))),
            ]),
        ),
        (
            "seed-ipv6",
            seed(vec![(
                E,
                0,
                Ipv6Spec::new(
                    h(8),
                    MacAddr([0x33, 0x33, 0, 0, 0, 1]),
                    Ipv6Addr::LOCALHOST,
                    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                )
                .udp(5353, 5353, 20),
            )]),
        ),
        (
            "seed-mac-flood",
            seed((1..=HOSTS).map(|n| (B, 0, udp(h(n), MacAddr::BROADCAST, red(n), red(255)))).collect()),
        ),
        (
            "seed-oversize",
            seed(vec![(C, 0, Ipv4Spec::new(h(6), MacAddr::BROADCAST, blue(6), blue(255)).udp(1, 2, 1450))]),
        ),
    ]
}

/// Reproducers of known issues, kept in the corpus as `crash-*` (see the regression tests).
fn reproducers() -> Vec<(&'static str, Vec<u8>)> {
    let probe = arp_request_from(host_mac(1), Ipv4Addr::new(10, 2, 0, 1), Ipv4Addr::new(10, 1, 0, 1));
    vec![("crash-arp-flood-copy-double-count", encode_records(&[(A, 0, &probe)]))]
}

/// Writes the seed corpus of the `pipeline` fuzz target (only when `VSWITCH_WRITE_FUZZ_CORPUS=1`).
#[test]
#[ignore = "writes files; run with VSWITCH_WRITE_FUZZ_CORPUS=1 to regenerate the fuzz seed corpus"]
fn write_fuzz_corpus() {
    if std::env::var("VSWITCH_WRITE_FUZZ_CORPUS").as_deref() != Ok("1") {
        eprintln!("set VSWITCH_WRITE_FUZZ_CORPUS=1 to write {}", corpus_dir().display());
        return;
    }
    std::fs::create_dir_all(corpus_dir()).expect("create corpus dir");
    for (name, data) in seeds().into_iter().chain(reproducers()) {
        std::fs::write(corpus_dir().join(name), data).expect("write seed");
    }
}

/// The seeds pass every check (and the committed ones match what [`seeds`] makes).
#[test]
fn fuzz_seeds_replay_cleanly() {
    let cfg = harness::config(ROUTED_CONFIG);
    for (name, data) in seeds() {
        let h = harness::replay(Harness::new(&cfg), &data);
        let (sw, r) = (h.testbed().switch(), h.testbed().switch().router().stats());
        let c = sw.counters();
        let does = match name {
            "seed-arp-gateway" => r.arp_replies == 1,
            "seed-udp-learn" => c.port(0).forwarded == 1 && c.port(1).forwarded == 1,
            "seed-tcp-handshake" => c.port(4).forwarded == 1 && c.port(5).forwarded == 1,
            "seed-vlan" => c.port(2).flooded == 1 && c.port(3).forwarded == 1,
            "seed-ping-gateway" => r.echo_replies == 1,
            "seed-routed-resolved" => r.forwarded == 2 && r.arp_requests == 2 && c.total_drops() == 0,
            "seed-routed-unanswered" => c.drops(DropReason::HostUnreachable) == 2,
            "seed-ttl-and-default-route" => {
                c.drops(DropReason::TtlExpired) == 1 && c.drops(DropReason::HostUnreachable) == 1 && r.icmp_errors == 2
            }
            "seed-uplink" => r.forwarded == 2 && c.port(UP.into()).routed == 2 && c.total_drops() == 0,
            "seed-ipv6" => c.port(4).flooded == 1,
            "seed-mac-flood" => sw.fdb_stats()[0].evicted > 0,
            "seed-oversize" => c.drops(DropReason::EgressTooLong) == 1,
            _ => true,
        };
        assert!(does, "{name} does not do what it is named for: {:?} {r:?}", c.drops_by_name());
        if let Ok(committed) = std::fs::read(corpus_dir().join(name)) {
            assert_eq!(committed, data, "{name} differs from seeds(); regenerate with VSWITCH_WRITE_FUZZ_CORPUS=1");
        }
    }
}

/// Every file of the committed corpus passes every check, except `crash-*` reproducers, which have their own
/// tests below.
#[test]
fn fuzz_corpus_replays_cleanly() {
    let cfg = harness::config(ROUTED_CONFIG);
    let Ok(dir) = std::fs::read_dir(corpus_dir()) else { return };
    for entry in dir {
        let path = entry.expect("corpus entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if name.starts_with("crash-") || name.starts_with('.') {
            continue;
        }
        let data = std::fs::read(&path).expect("read corpus file");
        if let Err(e) = std::panic::catch_unwind(|| run_records(&cfg, &data)) {
            std::panic::resume_unwind(Box::new(format!("corpus file {name}: {:?}", e.downcast_ref::<String>())));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Regressions.

/// Found by `routed_pipeline_invariants`: a broadcast ARP request on a network with a gateway whose sender address is outside the subnet — here
/// 10.2.0.1 asking for 10.1.0.1 on `red` (10.1.0.0/24); an RFC 5227 probe from 0.0.0.0 does the same — is
/// flooded (`flooded` += 1) and the router's copy was dropped as `bad-arp`, which also charged the ingress port
/// (`dropped` += 1): one frame counted twice. `Router::arp` called `out.drop(frame, BadArp)` without checking
/// `copy` (`Router::handle` documents that nothing counts as a copy's drop). Fixed in router.rs (a refused copy
/// counts its reason without charging the port); this test guards the fix.
#[test]
fn regression_flooded_bad_arp_is_counted_once() {
    let cfg = harness::config(ROUTED_CONFIG);
    let data = std::fs::read(corpus_dir().join("crash-arp-flood-copy-double-count")).expect("reproducer");
    harness::replay(Harness::new(&cfg), &data);
    // The same, spelled out: a probe from 0.0.0.0 on port `a`.
    let mut tb = dataplane::testbed::Testbed::from_config(&cfg);
    tb.send("a", &arp_request_from(host_mac(1), Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(10, 1, 0, 7)));
    let c = tb.switch().counters().port(0);
    assert_eq!((c.rx_packets, c.flooded, c.dropped), (1, 1, 0), "{c:?}");
}

fn arp_request_from(mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let msg = Arp { op: ArpOp::Request, sender_mac: mac, sender_ip, target_mac: MacAddr::ZERO, target_ip };
    arp(MacAddr::BROADCAST, &msg)
}
