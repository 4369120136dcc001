use crate::buffer::NANOS_PER_SEC;
use crate::conntrack::{NatKind, Proto, ProtoState, TcpState};
use crate::counters::DropReason;
use crate::packet::{ip_proto, parse};
use crate::testbed::Testbed;
use crate::wire::builder::{arp_request, Ipv4Opts, Ipv4Spec, TcpFlags, TcpSegment};
use crate::wire::{self, ethernet, ipv4, tcp, udp, MacAddr};
use etherparse::{icmpv4, Icmpv4Type};

use std::net::Ipv4Addr;

const CONFIG: &str = r#"
    [[network]]
    name = "bridge"
    subnet = "172.17.0.0/16"
    gateway = "172.17.0.1"
    masquerade = true
    [[network]]
    name = "blue"
    subnet = "10.0.2.0/24"
    gateway = "10.0.2.1"
    [[port]]
    name = "c1"
    kind = "mem"
    network = "bridge"
    [[port]]
    name = "c2"
    kind = "mem"
    network = "bridge"
    [[port]]
    name = "b1"
    kind = "mem"
    network = "blue"
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
    to = "172.17.0.2:80"
    [[publish]]
    port = "up"
    proto = "udp"
    external_port = 5353
    to = "172.17.0.2:53"
"#;

const C1: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 1, 2]), Ipv4Addr::new(172, 17, 0, 2));
const C2: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 1, 3]), Ipv4Addr::new(172, 17, 0, 3));
const B1: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 2, 20]), Ipv4Addr::new(10, 0, 2, 20));
const UPSTREAM: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 9, 1]), Ipv4Addr::new(203, 0, 113, 1));
const UP_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

fn rif_mac(tb: &Testbed, name: &str) -> MacAddr {
    tb.switch().topology().rifs.iter().find(|r| r.name == name).expect("interface exists").mac
}

/// A testbed for `config` whose neighbours (upstream, both containers, the blue host) are resolved.
fn testbed_with(config: &str) -> Testbed {
    let mut tb = Testbed::new(config).expect("NAT test config is valid");
    tb.send("up", &arp_request(UPSTREAM.0, UPSTREAM.1, UP_ADDR));
    tb.send("c1", &arp_request(C1.0, C1.1, GW));
    tb.send("c2", &arp_request(C2.0, C2.1, GW));
    tb.send("b1", &arp_request(B1.0, B1.1, Ipv4Addr::new(10, 0, 2, 1)));
    tb.take_all();
    tb
}

fn testbed() -> Testbed {
    testbed_with(CONFIG)
}

/// From a container to `dst`, through the gateway.
fn from(tb: &Testbed, host: (MacAddr, Ipv4Addr), dst: Ipv4Addr) -> Ipv4Spec {
    Ipv4Spec::new(host.0, rif_mac(tb, "network:bridge"), host.1, dst)
}

/// From `src` beyond the upstream router to `dst`, arriving on the uplink.
fn inbound(tb: &Testbed, src: Ipv4Addr, dst: Ipv4Addr) -> Ipv4Spec {
    Ipv4Spec::new(UPSTREAM.0, rif_mac(tb, "port:up"), src, dst)
}

/// The IPv4 packet of a frame, checked (ingress's parse, then the view's).
#[track_caller]
fn ipv4_of(frame: &[u8]) -> ipv4::Packet<&[u8]> {
    let p = parse(frame).expect("the switch emits well-formed frames");
    ipv4::Packet::new_checked(&frame[p.l3 as usize..p.l3_end as usize]).expect("a whole IPv4 packet")
}

/// An ICMP message, checked.
#[track_caller]
fn icmp_of(seg: &[u8]) -> wire::icmpv4::Packet<&[u8]> {
    wire::icmpv4::Packet::new_checked(seg).expect("a whole ICMP header")
}

/// The destination MAC of a frame.
fn eth_dst(frame: &[u8]) -> MacAddr {
    ethernet::Packet::new_checked(frame).expect("an Ethernet header").dst_addr()
}

/// (src, sport, dst, dport) of a TCP/UDP packet (ICMP echo: the identifier as both ports), after checking
/// the IPv4 and transport checksums.
#[track_caller]
fn ends(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let ip = ipv4_of(frame);
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    let (src, dst, seg) = (ip.src_addr(), ip.dst_addr(), ip.payload());
    match ip.protocol() {
        ip_proto::ICMP => {
            let m = icmp_of(seg);
            assert!(m.verify_checksum(), "ICMP checksum");
            (src, m.echo_ident(), dst, m.echo_ident())
        }
        ip_proto::UDP => {
            let u = udp::Packet::new_checked(seg).expect("a whole UDP datagram");
            assert!(u.verify_checksum_ipv4(src, dst), "UDP checksum");
            (src, u.src_port(), dst, u.dst_port())
        }
        _ => {
            let t = tcp::Packet::new_checked(seg).expect("a whole TCP header");
            assert!(t.verify_checksum_ipv4(src, dst), "TCP checksum");
            (src, t.src_port(), dst, t.dst_port())
        }
    }
}

fn seg(sport: u16, dport: u16, flags: TcpFlags) -> TcpSegment {
    TcpSegment::new(sport, dport, flags)
}

#[track_caller]
fn one(frames: Vec<Vec<u8>>) -> Vec<u8> {
    assert_eq!(frames.len(), 1, "exactly one frame expected");
    frames.into_iter().next().unwrap_or_default()
}

#[track_caller]
fn invariants(tb: &Testbed) {
    tb.switch().router().nat().check_invariants().expect("NAT invariants");
}

#[test]
fn masquerades_a_tcp_connection_both_ways_through_close() {
    let mut tb = testbed();
    let (syn, ack, fin) = (TcpFlags::SYN, TcpFlags::ACK, TcpFlags::FIN | TcpFlags::ACK);
    let out = from(&tb, C1, SERVER);
    let back = inbound(&tb, SERVER, UP_ADDR);
    tb.send("c1", &out.tcp(seg(40000, 80, syn), 0));
    let f = one(tb.take("up"));
    assert_eq!(ends(&f), (UP_ADDR, 40000, SERVER, 80), "source masqueraded, port kept");
    assert_eq!(eth_dst(&f), UPSTREAM.0);
    tb.send("up", &back.tcp(seg(80, 40000, syn | TcpFlags::ACK), 0));
    let f = one(tb.take("c1"));
    assert_eq!(ends(&f), (SERVER, 80, C1.1, 40000), "reply translated back to the container");
    assert_eq!(eth_dst(&f), C1.0);
    tb.send("c1", &out.tcp(seg(40000, 80, ack), 0));
    tb.send("c1", &out.tcp(seg(40000, 80, ack | TcpFlags::PSH), 100));
    tb.send("up", &back.tcp(seg(80, 40000, ack | TcpFlags::PSH), 1000));
    assert_eq!(tb.take("up").len(), 2);
    assert_eq!(ends(&one(tb.take("c1"))), (SERVER, 80, C1.1, 40000));
    let conns = tb.switch().connections(tb.now());
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].state, ProtoState::Tcp(TcpState::Established));
    assert_eq!(conns[0].nat, Some(NatKind::Snat));
    // Close: FIN from the server, ACK, FIN from the container, last ACK.
    tb.send("up", &back.tcp(seg(80, 40000, fin), 0));
    tb.send("c1", &out.tcp(seg(40000, 80, ack), 0));
    tb.send("c1", &out.tcp(seg(40000, 80, fin), 0));
    tb.send("up", &back.tcp(seg(80, 40000, ack), 0));
    assert_eq!(tb.take("up").len(), 2);
    assert_eq!(tb.take("c1").len(), 2);
    assert_eq!(tb.switch().connections(tb.now())[0].state, ProtoState::Tcp(TcpState::TimeWait));
    let s = tb.switch().nat_stats();
    assert_eq!((s.snat_created, s.hits_original, s.hits_reply), (1, 4, 4));
    assert_eq!(tb.switch().counters().total_drops(), 0);
    invariants(&tb);
    // A SYN from the container on the TIME_WAIT connection reopens it, with the same port.
    tb.send("c1", &out.tcp(seg(40000, 80, syn), 0));
    assert_eq!(ends(&one(tb.take("up"))), (UP_ADDR, 40000, SERVER, 80));
    assert_eq!(tb.switch().connections(tb.now())[0].state, ProtoState::Tcp(TcpState::SynSent));
    assert_eq!(tb.free_buffers(), tb.total_buffers());
}

#[test]
fn masquerades_udp_and_keeps_a_zero_checksum_zero() {
    let mut tb = testbed();
    tb.send("c1", &from(&tb, C1, SERVER).udp(5000, 53, 20));
    assert_eq!(ends(&one(tb.take("up"))), (UP_ADDR, 5000, SERVER, 53));
    tb.send("up", &inbound(&tb, SERVER, UP_ADDR).udp(53, 5000, 40));
    assert_eq!(ends(&one(tb.take("c1"))), (SERVER, 53, C1.1, 5000));
    // A datagram without a checksum keeps none.
    let mut f = from(&tb, C1, SERVER).udp(5000, 53, 20);
    udp::Packet::new_unchecked(&mut f[34..]).set_checksum(0);
    tb.send("c1", &f);
    let out = one(tb.take("up"));
    assert_eq!(udp::Packet::new_checked(ipv4_of(&out).payload()).unwrap().checksum(), 0);
    assert_eq!(ends(&out), (UP_ADDR, 5000, SERVER, 53));
    let c = &tb.switch().connections(tb.now())[0];
    assert_eq!((c.proto, c.expires_in_secs), (Proto::Udp, 120), "assured after the reply");
    invariants(&tb);
}

#[test]
fn masquerades_icmp_echo_and_the_port_address_still_answers_ping() {
    let mut tb = testbed();
    tb.send("c1", &from(&tb, C1, SERVER).icmp_echo_request(4000, 1, 32));
    let f = one(tb.take("up"));
    assert_eq!(ends(&f), (UP_ADDR, 4000, SERVER, 4000), "identifier kept: in the range and free");
    tb.send("up", &inbound(&tb, SERVER, UP_ADDR).icmp_echo_reply(4000, 1, 32));
    assert_eq!(ends(&one(tb.take("c1"))), (SERVER, 4000, C1.1, 4000));
    // An identifier outside the port range is remapped, and mapped back in the reply.
    tb.send("c1", &from(&tb, C1, SERVER).icmp_echo_request(77, 1, 32));
    let (_, id, _, _) = ends(&one(tb.take("up")));
    assert!(id >= 1024, "{id}");
    tb.send("up", &inbound(&tb, SERVER, UP_ADDR).icmp_echo_reply(id, 1, 32));
    assert_eq!(ends(&one(tb.take("c1"))), (SERVER, 77, C1.1, 77));
    // Ping to the port address from outside is answered by the switch, not NAT'd.
    tb.send("up", &inbound(&tb, SERVER, UP_ADDR).icmp_echo_request(77, 2, 8));
    let reply = one(tb.take("up"));
    assert_eq!(ends(&reply), (UP_ADDR, 77, SERVER, 77));
    assert!(tb.take("c1").is_empty());
    assert_eq!(tb.switch().router().stats().echo_replies, 1);
    invariants(&tb);
}

#[test]
fn two_containers_with_the_same_port_to_the_same_server_get_distinct_ports() {
    let mut tb = testbed();
    tb.send("c1", &from(&tb, C1, SERVER).tcp(seg(40000, 80, TcpFlags::SYN), 0));
    tb.send("c2", &from(&tb, C2, SERVER).tcp(seg(40000, 80, TcpFlags::SYN), 0));
    let out = tb.take("up");
    assert_eq!(out.len(), 2);
    let (a, b) = (ends(&out[0]), ends(&out[1]));
    assert_eq!(a, (UP_ADDR, 40000, SERVER, 80));
    assert_eq!((b.0, b.2, b.3), (UP_ADDR, SERVER, 80));
    assert_ne!(b.1, 40000, "the second gets another port");
    // Replies reach the right container.
    tb.send("up", &inbound(&tb, SERVER, UP_ADDR).tcp(seg(80, b.1, TcpFlags::SYN | TcpFlags::ACK), 0));
    assert_eq!(ends(&one(tb.take("c2"))), (SERVER, 80, C2.1, 40000));
    assert!(tb.take("c1").is_empty());
    invariants(&tb);
}

#[test]
fn port_exhaustion_drops_new_connections_counted() {
    let cfg = format!("{CONFIG}\n[nat]\nport_range = \"1024-1025\"\n");
    let mut tb = testbed_with(&cfg);
    for sport in [3000, 3001, 3002] {
        tb.send("c1", &from(&tb, C1, SERVER).udp(sport, 53, 8));
    }
    let out = tb.take("up");
    assert_eq!(out.len(), 2);
    let ports: Vec<u16> = out.iter().map(|f| ends(f).1).collect();
    assert!(ports.contains(&1024) && ports.contains(&1025), "{ports:?}");
    assert_eq!(tb.switch().counters().drops(DropReason::NatPortExhausted), 1);
    assert_eq!(tb.switch().nat_stats().port_exhausted, 1);
    // Another destination has its own ports.
    tb.send("c1", &from(&tb, C1, CLIENT).udp(3002, 53, 8));
    assert_eq!(tb.take("up").len(), 1);
    invariants(&tb);
}

#[test]
fn expiry_releases_the_port() {
    let cfg = format!("{CONFIG}\n[nat]\nport_range = \"1024-1024\"\n[conntrack]\nudp_secs = 5\n");
    let mut tb = testbed_with(&cfg);
    tb.send("c1", &from(&tb, C1, SERVER).udp(3000, 53, 8));
    assert_eq!(ends(&one(tb.take("up"))).1, 1024);
    tb.send("c2", &from(&tb, C2, SERVER).udp(3000, 53, 8));
    assert!(tb.take("up").is_empty(), "the only port is in use");
    tb.advance(6 * NANOS_PER_SEC);
    assert_eq!(tb.switch().conntrack().len(), 0, "housekeeping removed the expired connection");
    assert_eq!(tb.switch().nat_stats().expired, 1);
    invariants(&tb);
    tb.send("c2", &from(&tb, C2, SERVER).udp(3000, 53, 8));
    assert_eq!(ends(&one(tb.take("up"))), (UP_ADDR, 1024, SERVER, 53), "the released port is reused");
    invariants(&tb);
}

#[test]
fn a_full_table_evicts_unreplied_connections_and_drops_only_when_all_replied() {
    let cfg = format!("{CONFIG}\n[conntrack]\nlimit = 2\n");
    let mut tb = testbed_with(&cfg);
    for sport in [3000, 3001, 3002] {
        tb.send("c1", &from(&tb, C1, SERVER).udp(sport, 53, 8));
    }
    assert_eq!(tb.take("up").len(), 3, "the oldest unreplied connection made room for the third");
    assert_eq!(tb.switch().conntrack().stats().evicted, 1);
    // Both left get replies (assured): a new connection is then refused, the existing ones pass.
    for sport in [3001, 3002] {
        tb.send("up", &inbound(&tb, SERVER, UP_ADDR).udp(53, sport, 8));
    }
    assert_eq!(tb.take("c1").len(), 2);
    tb.send("c1", &from(&tb, C1, SERVER).udp(3003, 53, 8));
    assert!(tb.take("up").is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::ConntrackFull), 1);
    tb.send("c1", &from(&tb, C1, SERVER).udp(3001, 53, 8));
    assert_eq!(tb.take("up").len(), 1, "an existing connection still passes");
    tb.advance(NANOS_PER_SEC);
    invariants(&tb);
}

#[test]
fn an_ack_flood_to_a_silent_address_does_not_stop_another_containers_connection() {
    let cfg = format!("{CONFIG}\n[conntrack]\nlimit = 1000\n");
    let mut tb = testbed_with(&cfg);
    for sport in 0..1000u16 {
        tb.send("c1", &from(&tb, C1, SERVER).tcp(seg(10_000 + sport, 80, TcpFlags::ACK), 0));
    }
    assert_eq!(tb.take("up").len(), 1000);
    assert_eq!(tb.switch().conntrack().len(), 1000, "full");
    tb.send("c2", &from(&tb, C2, Ipv4Addr::new(198, 51, 100, 20)).tcp(seg(40_000, 443, TcpFlags::SYN), 0));
    assert_eq!(ends(&one(tb.take("up"))).0, UP_ADDR, "c2's SYN is masqueraded and sent");
    assert_eq!(tb.switch().counters().drops(DropReason::ConntrackFull), 0);
    assert_eq!(tb.switch().conntrack().stats().evicted, 1);
    // The picked-up connections expire after tcp_unreplied_secs (30 s), not five days.
    tb.advance(31 * NANOS_PER_SEC);
    assert_eq!(tb.switch().conntrack().len(), 1, "only c2's SYN_SENT (120 s) is left");
    assert_eq!(tb.switch().conntrack().stats().expired, 999);
    invariants(&tb);
}

#[test]
fn masquerade_refuses_sources_outside_the_network() {
    let mut tb = testbed();
    let spoofed = (C1.0, Ipv4Addr::new(10, 99, 0, 5));
    tb.send("c1", &from(&tb, spoofed, SERVER).udp(4000, 53, 8));
    tb.send("c1", &from(&tb, spoofed, SERVER).tcp(seg(4000, 80, TcpFlags::SYN), 0));
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::SpoofedSource), 2);
    assert_eq!(tb.switch().conntrack().len(), 0);
    tb.send("c1", &from(&tb, C1, SERVER).udp(4000, 53, 8));
    assert_eq!(tb.take("up").len(), 1, "its own address is masqueraded");
}

#[test]
fn a_network_conntrack_limit_stops_its_own_flood_only() {
    let cfg = CONFIG.replace("masquerade = true", "masquerade = true\n    conntrack_limit = 100")
        + "[[publish]]\nport = \"up\"\nproto = \"udp\"\nexternal_port = 6000\nto = \"10.0.2.20:60\"\n";
    let mut tb = testbed_with(&cfg);
    // c1 floods: 1,000 ACKs to a silent address, each a new (picked-up) connection.
    for sport in 0..1000u16 {
        tb.send("c1", &from(&tb, C1, SERVER).tcp(seg(10_000 + sport, 80, TcpFlags::ACK), 0));
    }
    assert_eq!(tb.take("up").len(), 100);
    assert_eq!(tb.switch().counters().drops(DropReason::ConntrackNetworkLimit), 900);
    // A published connection to bridge counts against the same limit; one to blue (another network) does not.
    tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).udp(5000, 5353, 8));
    assert!(tb.take("c1").is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::ConntrackNetworkLimit), 901);
    tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).udp(5000, 6000, 8));
    assert_eq!(ends(&one(tb.take("b1"))), (CLIENT, 5000, B1.1, 60));
    invariants(&tb);
}

#[test]
fn published_port_is_translated_to_the_container_and_back() {
    let mut tb = testbed();
    let client = inbound(&tb, CLIENT, UP_ADDR);
    tb.send("up", &client.tcp(seg(50000, 8080, TcpFlags::SYN), 0));
    let f = one(tb.take("c1"));
    assert_eq!(ends(&f), (CLIENT, 50000, C1.1, 80));
    assert_eq!(eth_dst(&f), C1.0);
    tb.send("c1", &from(&tb, C1, CLIENT).tcp(seg(80, 50000, TcpFlags::SYN | TcpFlags::ACK), 0));
    let f = one(tb.take("up"));
    assert_eq!(ends(&f), (UP_ADDR, 8080, CLIENT, 50000), "the reply comes from the published port");
    // UDP too.
    tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).udp(6000, 5353, 10));
    assert_eq!(ends(&one(tb.take("c1"))), (CLIENT, 6000, C1.1, 53));
    tb.send("c1", &from(&tb, C1, CLIENT).udp(53, 6000, 10));
    assert_eq!(ends(&one(tb.take("up"))), (UP_ADDR, 5353, CLIENT, 6000));
    // An unpublished port is the switch's own: refused as before.
    tb.send("up", &client.tcp(seg(50000, 8081, TcpFlags::SYN), 0));
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::LocalUnsupported), 1);
    let s = tb.switch().nat_stats();
    assert_eq!(s.dnat_created, 2);
    invariants(&tb);
}

#[test]
fn published_port_reached_from_another_network_keeps_the_client_address() {
    let mut tb = testbed();
    let blue_gw = rif_mac(&tb, "network:blue");
    let b = Ipv4Spec::new(B1.0, blue_gw, B1.1, UP_ADDR);
    tb.send("b1", &b.tcp(seg(41000, 8080, TcpFlags::SYN), 0));
    assert_eq!(ends(&one(tb.take("c1"))), (B1.1, 41000, C1.1, 80));
    tb.send("c1", &from(&tb, C1, B1.1).tcp(seg(80, 41000, TcpFlags::SYN | TcpFlags::ACK), 0));
    assert_eq!(ends(&one(tb.take("b1"))), (UP_ADDR, 8080, B1.1, 41000));
    invariants(&tb);
}

#[test]
fn hairpin_translates_both_ends_through_the_gateway_address() {
    let mut tb = testbed();
    // C2 reaches C1's published port through the uplink's address.
    tb.send("c2", &from(&tb, C2, UP_ADDR).tcp(seg(42000, 8080, TcpFlags::SYN), 0));
    let f = one(tb.take("c1"));
    assert_eq!(ends(&f), (GW, 42000, C1.1, 80), "source is the gateway, so C1 answers through the switch");
    tb.send("c1", &from(&tb, C1, GW).tcp(seg(80, 42000, TcpFlags::SYN | TcpFlags::ACK), 0));
    let f = one(tb.take("c2"));
    assert_eq!(ends(&f), (UP_ADDR, 8080, C2.1, 42000), "C2 sees the published address answering");
    assert_eq!(tb.switch().nat_stats().hairpin_created, 1);
    assert_eq!(tb.switch().connections(tb.now())[0].nat, Some(NatKind::Hairpin));
    invariants(&tb);
    // Ping to the gateway still works with NAT configured.
    tb.send("c1", &from(&tb, C1, GW).icmp_echo_request(5, 1, 8));
    assert_eq!(ends(&one(tb.take("c1"))), (GW, 5, C1.1, 5));
}

#[test]
fn a_published_or_hairpin_packet_the_router_drops_opens_no_connection() {
    let mut tb = testbed();
    let ttl1 = Ipv4Opts { ttl: 1, ..Ipv4Opts::default() };
    // From outside with TTL 1: Time Exceeded back to the client, nothing tracked.
    let client = inbound(&tb, CLIENT, UP_ADDR).with_opts(ttl1);
    tb.send("up", &client.tcp(seg(50000, 8080, TcpFlags::SYN), 0));
    assert!(tb.take("c1").is_empty());
    assert_eq!(one(tb.take("up")).len(), 70, "Time Exceeded quoting the SYN");
    // Hairpin with TTL 1: no entry, and no port held on the gateway's address.
    tb.send("c2", &from(&tb, C2, UP_ADDR).with_opts(ttl1).tcp(seg(42000, 8080, TcpFlags::SYN), 0));
    assert!(tb.take("c1").is_empty());
    tb.take_all();
    assert_eq!(tb.switch().counters().drops(DropReason::TtlExpired), 2);
    let s = tb.switch().nat_stats();
    assert_eq!((s.dnat_created, s.hairpin_created), (0, 0));
    assert!(tb.switch().connections(tb.now()).is_empty());
    invariants(&tb);
    // The same SYNs with a normal TTL open their connections.
    tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).tcp(seg(50000, 8080, TcpFlags::SYN), 0));
    assert_eq!(ends(&one(tb.take("c1"))), (CLIENT, 50000, C1.1, 80));
    tb.send("c2", &from(&tb, C2, UP_ADDR).tcp(seg(42000, 8080, TcpFlags::SYN), 0));
    assert_eq!(ends(&one(tb.take("c1"))), (GW, 42000, C1.1, 80), "the gateway port 42000 was still free");
    invariants(&tb);
}

/// The IPv4 packet inside a frame (from the IP header to its end).
/// The header and first 8 payload bytes of the IPv4 packet of `frame`: what an ICMP error quotes.
fn quote(frame: &[u8]) -> Vec<u8> {
    let ip = ipv4_of(frame);
    ip.into_inner()[..ip.header_len() + 8].to_vec()
}

#[test]
fn icmp_errors_about_masqueraded_packets_are_translated_back() {
    let mut tb = testbed();
    let opts = Ipv4Opts { df: true, ..Ipv4Opts::default() };
    tb.send("c1", &from(&tb, C1, SERVER).with_opts(opts).udp(5000, 53, 1000));
    let sent = one(tb.take("up"));
    // A router beyond the uplink says the packet is too big (Fragmentation Needed, MTU 576), quoting the
    // IP header and 8 bytes of the packet as it saw it.
    let quoted = &quote(&sent);
    let router = Ipv4Addr::new(198, 51, 100, 254);
    let kind =
        Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 576 });
    tb.send("up", &inbound(&tb, router, UP_ADDR).icmp(kind.clone(), quoted));
    let f = one(tb.take("c1"));
    let ip = ipv4_of(&f);
    let msg = icmp_of(ip.payload());
    assert!(ip.verify_checksum(), "outer IPv4 checksum");
    assert!(msg.verify_checksum(), "ICMP checksum");
    assert_eq!(ip.src_addr(), router, "from the router that sent it");
    assert_eq!(ip.dst_addr(), C1.1, "to the container");
    assert_eq!(msg.next_hop_mtu(), 576, "the MTU is kept");
    // The quote: a header whose total length goes beyond the 8 quoted bytes, so an unchecked view.
    let q = ipv4::Packet::new_unchecked(msg.payload());
    assert!(q.verify_checksum(), "quoted IPv4 checksum");
    assert_eq!(q.src_addr(), C1.1, "quoted source is the container again");
    assert_eq!(q.dst_addr(), SERVER);
    let qu = udp::Packet::new_unchecked(q.payload());
    assert_eq!(qu.src_port(), 5000);
    // The quoted UDP checksum was updated as the original one was: equal to the container's packet's.
    let orig = from(&tb, C1, SERVER).with_opts(opts).udp(5000, 53, 1000);
    assert_eq!(qu.checksum(), udp::Packet::new_checked(ipv4_of(&orig).payload()).unwrap().checksum());
    assert_eq!(tb.switch().nat_stats().icmp_errors_translated, 1);
    // An error quoting something not tracked goes to the switch (and is not answered).
    let mut other = quoted.to_vec();
    let hl = ipv4::Packet::new_unchecked(&other[..]).header_len();
    let mut u = udp::Packet::new_unchecked(&mut other[hl..]);
    u.set_src_port(u.src_port() ^ 0x5555); // another source port
    tb.send("up", &inbound(&tb, router, UP_ADDR).icmp(kind.clone(), &other));
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().nat_stats().no_translation, 1);
    // Quoted garbage is harmless too.
    tb.send("up", &inbound(&tb, router, UP_ADDR).icmp(kind.clone(), &[0x45; 5]));
    assert!(tb.take_all().is_empty());
    invariants(&tb);
}

#[test]
fn icmp_errors_about_published_replies_reach_the_container() {
    let mut tb = testbed();
    tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).udp(6000, 5353, 10));
    tb.take_all();
    tb.send("c1", &from(&tb, C1, CLIENT).udp(53, 6000, 10));
    let sent = one(tb.take("up"));
    // The client's host says port unreachable, about the reply it got from the published port.
    let kind = Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port);
    tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).icmp(kind.clone(), &quote(&sent)));
    let f = one(tb.take("c1"));
    let ip = ipv4_of(&f);
    let msg = icmp_of(ip.payload());
    assert!(msg.verify_checksum());
    assert_eq!(ip.dst_addr(), C1.1);
    let q = ipv4::Packet::new_unchecked(msg.payload());
    assert_eq!(q.src_addr(), C1.1);
    assert_eq!(udp::Packet::new_unchecked(q.payload()).src_port(), 53);
    // And the container's own port-unreachable about a published request leaves from the published address.
    tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).udp(6001, 5353, 10));
    let req = one(tb.take("c1"));
    tb.send("c1", &from(&tb, C1, CLIENT).icmp(kind.clone(), &quote(&req)));
    let f = one(tb.take("up"));
    let ip = ipv4_of(&f);
    let msg = icmp_of(ip.payload());
    assert!(msg.verify_checksum());
    assert_eq!(ip.src_addr(), UP_ADDR, "the error comes from the published address");
    let q = ipv4::Packet::new_unchecked(msg.payload());
    assert_eq!(q.dst_addr(), UP_ADDR, "about a packet sent to it");
    assert_eq!(udp::Packet::new_unchecked(q.payload()).dst_port(), 5353);
    assert_eq!(tb.switch().nat_stats().icmp_errors_translated, 2);
}

#[test]
fn redirects_are_errors_but_are_not_translated() {
    // One classification (wire::icmpv4::is_error): a Redirect quoting a masqueraded packet is an error — not
    // a flow, never answered — but NAT does not translate it (netfilter drops redirects about NAT'd
    // connections): it goes to the switch, which drops it. The same quote in a Time Exceeded is translated.
    let mut tb = testbed();
    tb.send("c1", &from(&tb, C1, SERVER).udp(5000, 53, 10));
    let sent = one(tb.take("up"));
    let router = Ipv4Addr::new(198, 51, 100, 254);
    let redirect = Icmpv4Type::Redirect(icmpv4::RedirectHeader {
        code: icmpv4::RedirectCode::RedirectForHost,
        gateway_internet_address: [198, 51, 100, 253],
    });
    tb.send("up", &inbound(&tb, router, UP_ADDR).icmp(redirect, &quote(&sent)));
    assert!(tb.take_all().is_empty(), "not forwarded to the container");
    assert_eq!(tb.switch().counters().drops(DropReason::LocalUnsupported), 1);
    assert_eq!(tb.switch().nat_stats().icmp_errors_translated, 0);
    let expired = Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit);
    tb.send("up", &inbound(&tb, router, UP_ADDR).icmp(expired, &quote(&sent)));
    assert_eq!(ipv4_of(&one(tb.take("c1"))).dst_addr(), C1.1);
    assert_eq!(tb.switch().nat_stats().icmp_errors_translated, 1);
    // From inside, a Redirect quoting the container's own connection is not translated either: dropped rather
    // than leak the inside address.
    tb.send("up", &inbound(&tb, SERVER, UP_ADDR).udp(53, 5000, 10));
    let reply = one(tb.take("c1"));
    let redirect = Icmpv4Type::Redirect(icmpv4::RedirectHeader {
        code: icmpv4::RedirectCode::RedirectForHost,
        gateway_internet_address: C2.1.octets(),
    });
    tb.send("c1", &from(&tb, C1, SERVER).icmp(redirect, &quote(&reply)));
    assert!(tb.take("up").is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::NatUnsupported), 1);
    invariants(&tb);
}

#[test]
fn an_inside_host_cannot_launder_its_address_through_an_icmp_error() {
    let mut tb = testbed();
    tb.send("c1", &from(&tb, C1, SERVER).udp(5000, 53, 10));
    let sent = one(tb.take("up"));
    // C2 sends an error about a packet it never received (the one the switch sent for C1): translating the
    // quote would leave C2's own address as the outer source, so it is not translated, and dropped.
    let kind = Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port);
    tb.send("c2", &from(&tb, C2, SERVER).icmp(kind, &quote(&sent)));
    assert!(tb.take("up").is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::NatUnsupported), 1);
    assert_eq!(tb.switch().nat_stats().icmp_errors_translated, 0);
}

#[test]
fn invalid_tcp_is_dropped_not_translated() {
    let mut tb = testbed();
    // A SYN-ACK to a published port opens nothing.
    tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).tcp(seg(50000, 8080, TcpFlags::SYN | TcpFlags::ACK), 0));
    // A SYN-ACK from a container with no connection does not leave masqueraded.
    tb.send("c1", &from(&tb, C1, SERVER).tcp(seg(40000, 80, TcpFlags::SYN | TcpFlags::ACK), 0));
    // A SYN-ACK from outside to the port address with no connection and no rule is the switch's.
    tb.send("up", &inbound(&tb, SERVER, UP_ADDR).tcp(seg(80, 40000, TcpFlags::SYN | TcpFlags::ACK), 0));
    assert!(tb.take_all().is_empty());
    let c = tb.switch().counters();
    assert_eq!(c.drops(DropReason::ConntrackInvalid), 2);
    assert_eq!(c.drops(DropReason::LocalUnsupported), 1);
    assert_eq!(tb.switch().conntrack().len(), 0);
    // On an established connection, a SYN from the server side is invalid.
    tb.send("c1", &from(&tb, C1, SERVER).tcp(seg(40000, 80, TcpFlags::SYN), 0));
    tb.send("up", &inbound(&tb, SERVER, UP_ADDR).tcp(seg(80, 40000, TcpFlags::SYN | TcpFlags::ACK), 0));
    tb.send("c1", &from(&tb, C1, SERVER).tcp(seg(40000, 80, TcpFlags::ACK), 0));
    assert_eq!((tb.take("up").len(), tb.take("c1").len()), (2, 1));
    tb.send("up", &inbound(&tb, SERVER, UP_ADDR).tcp(seg(80, 40000, TcpFlags::SYN), 0));
    assert!(tb.take("c1").is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::ConntrackInvalid), 3);
    invariants(&tb);
}

#[test]
fn later_fragments_and_untrackable_protocols_are_not_leaked() {
    let mut tb = testbed();
    let mut frag = from(&tb, C1, SERVER).udp(5000, 53, 40);
    // Fragment offset 8 (64 bytes): a later fragment; fix the header checksum.
    let mut ip = ipv4::Packet::new_checked(&mut frag[ethernet::HEADER_LEN..]).unwrap();
    ip.set_flags_frag(8);
    ip.fill_checksum();
    tb.send("c1", &frag);
    let mut gre = from(&tb, C1, SERVER).udp(5000, 53, 40);
    let mut ip = ipv4::Packet::new_checked(&mut gre[ethernet::HEADER_LEN..]).unwrap();
    ip.set_protocol(47);
    ip.fill_checksum();
    tb.send("c1", &gre);
    assert!(tb.take_all().is_empty());
    let c = tb.switch().counters();
    assert_eq!(c.drops(DropReason::NatFragment), 1);
    assert_eq!(c.drops(DropReason::NatUnsupported), 1);
}

#[test]
fn an_isolated_network_is_not_routed_to_or_from_another_network() {
    let mut tb = testbed();
    let blue_gw = rif_mac(&tb, "network:blue");
    tb.send("b1", &Ipv4Spec::new(B1.0, blue_gw, B1.1, C2.1).udp(7000, 7001, 8));
    tb.send("b1", &Ipv4Spec::new(B1.0, blue_gw, B1.1, C2.1).icmp_echo_request(7, 1, 4));
    tb.send("c2", &from(&tb, C2, B1.1).udp(7001, 7000, 8));
    tb.send("c2", &from(&tb, C2, B1.1).tcp(seg(7001, 7000, TcpFlags::SYN), 0));
    assert!(tb.take_all().is_empty(), "nothing crosses between bridge (masquerade) and blue");
    assert_eq!(tb.switch().counters().drops(DropReason::NetworkIsolation), 4);
    assert_eq!(tb.switch().conntrack().len(), 0);
}

#[test]
fn allow_routing_with_routes_between_networks_untranslated_and_untracked() {
    let config = CONFIG.replace("masquerade = true", "masquerade = true\n    allow_routing_with = [\"blue\"]");
    let mut tb = testbed_with(&config);
    let blue_gw = rif_mac(&tb, "network:blue");
    tb.send("b1", &Ipv4Spec::new(B1.0, blue_gw, B1.1, C2.1).udp(7000, 7001, 8));
    assert_eq!(ends(&one(tb.take("c2"))), (B1.1, 7000, C2.1, 7001));
    tb.send("c2", &from(&tb, C2, B1.1).udp(7001, 7000, 8));
    assert_eq!(ends(&one(tb.take("b1"))), (C2.1, 7001, B1.1, 7000), "from a masquerade network, not translated");
    assert_eq!(tb.switch().conntrack().len(), 0);
    assert_eq!(tb.switch().counters().drops(DropReason::NetworkIsolation), 0);
    // Routed ports stay shut out: the allowance is between the two networks only.
    tb.send("up", &inbound(&tb, CLIENT, C2.1).udp(5000, 7001, 8));
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::NotPublished), 1);
}

#[test]
fn a_routed_port_reaches_an_isolated_network_only_through_nat() {
    let mut tb = testbed();
    // Straight to a container's address (the outside host has a route to the subnet): refused, every protocol.
    tb.send("up", &inbound(&tb, CLIENT, C1.1).udp(5000, 53, 8));
    tb.send("up", &inbound(&tb, CLIENT, C1.1).udp(5000, 9999, 8));
    tb.send("up", &inbound(&tb, CLIENT, C1.1).tcp(seg(50000, 80, TcpFlags::SYN), 0));
    tb.send("up", &inbound(&tb, CLIENT, C1.1).icmp_echo_request(9, 1, 4));
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::NotPublished), 4);
    // Through the published port: translated in, and the reply out.
    tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).udp(5000, 5353, 8));
    assert_eq!(ends(&one(tb.take("c1"))), (CLIENT, 5000, C1.1, 53));
    tb.send("c1", &from(&tb, C1, CLIENT).udp(53, 5000, 8));
    assert_eq!(ends(&one(tb.take("up"))), (UP_ADDR, 5353, CLIENT, 5000));
    // A container's own connection: its replies come back (addressed to the port, translated).
    tb.send("c2", &from(&tb, C2, SERVER).udp(6000, 53, 8));
    let (src, sport, ..) = ends(&one(tb.take("up")));
    assert_eq!(src, UP_ADDR);
    tb.send("up", &inbound(&tb, SERVER, UP_ADDR).udp(53, sport, 8));
    assert_eq!(ends(&one(tb.take("c2"))), (SERVER, 53, C2.1, 6000));
    // A reply-shaped packet sent straight to the container's address is still not let in.
    tb.send("up", &inbound(&tb, SERVER, C2.1).udp(53, 6000, 8));
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::NotPublished), 5);
    invariants(&tb);
}

#[test]
fn a_plain_network_stays_routed_both_ways() {
    let config = CONFIG.replace("masquerade = true", "masquerade = false");
    let mut tb = testbed_with(&config);
    tb.send("up", &inbound(&tb, CLIENT, C1.1).udp(5000, 9999, 8));
    assert_eq!(ends(&one(tb.take("c1"))), (CLIENT, 5000, C1.1, 9999));
    let blue_gw = rif_mac(&tb, "network:blue");
    tb.send("b1", &Ipv4Spec::new(B1.0, blue_gw, B1.1, C2.1).udp(7000, 7001, 8));
    assert_eq!(ends(&one(tb.take("c2"))), (B1.1, 7000, C2.1, 7001));
    let c = tb.switch().counters();
    assert_eq!(c.drops(DropReason::NotPublished) + c.drops(DropReason::NetworkIsolation), 0);
}

#[test]
fn connections_read_in_chunks_are_the_whole_table() {
    let mut tb = testbed();
    for sport in 0..300u16 {
        tb.send("c1", &from(&tb, C1, SERVER).udp(20_000 + sport, 53, 8));
    }
    tb.take_all();
    let now = tb.now();
    let nat = tb.switch().router().nat();
    let mut chunked = Vec::new();
    let mut from = Some(0);
    let mut chunks = 0;
    while let Some(start) = from {
        let (part, next) = nat.connections_chunk(now, start, 7);
        assert!(part.len() <= 7);
        chunked.extend(part);
        from = next;
        chunks += 1;
    }
    assert!(chunks >= 300 / 7);
    chunked.sort_by_key(|c| c.orig);
    assert_eq!(chunked, nat.connections(now));
    assert_eq!(chunked.len(), 300);
}

#[test]
fn a_host_port_reaches_an_isolated_network_untranslated_and_is_no_way_in_from_outside() {
    let host_cfg =
        format!("{CONFIG}\n[[port]]\nname = \"host\"\nkind = \"mem\"\naddress = \"169.254.77.1/30\"\nhost = true\n");
    let mut tb = testbed_with(&host_cfg);
    const HOST: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 7, 2]), Ipv4Addr::new(169, 254, 77, 2));
    tb.send("host", &arp_request(HOST.0, HOST.1, Ipv4Addr::new(169, 254, 77, 1)));
    tb.take_all();
    let to_ctr = |tb: &Testbed, dst| Ipv4Spec::new(HOST.0, rif_mac(tb, "port:host"), HOST.1, dst);
    // The host stack reaches an unpublished container port of the masquerade network, and ping, untranslated,
    // and the container's replies come back untranslated (no masquerade towards the host port).
    tb.send("host", &to_ctr(&tb, C1.1).tcp(seg(40000, 22, TcpFlags::SYN), 0));
    assert_eq!(ends(&one(tb.take("c1"))), (HOST.1, 40000, C1.1, 22));
    tb.send("c1", &from(&tb, C1, HOST.1).tcp(seg(22, 40000, TcpFlags::SYN | TcpFlags::ACK), 0));
    assert_eq!(ends(&one(tb.take("host"))), (C1.1, 22, HOST.1, 40000));
    tb.send("host", &to_ctr(&tb, C2.1).icmp_echo_request(7, 1, 4));
    assert_eq!(ends(&one(tb.take("c2"))), (HOST.1, 7, C2.1, 7));
    // ... and the plain network too; a container may open a connection to the host (as to docker0's address).
    tb.send("host", &to_ctr(&tb, B1.1).udp(5000, 53, 8));
    assert_eq!(ends(&one(tb.take("b1"))), (HOST.1, 5000, B1.1, 53));
    tb.send("c2", &from(&tb, C2, HOST.1).udp(6000, 53, 8));
    assert_eq!(ends(&one(tb.take("host"))), (C2.1, 6000, HOST.1, 53));
    // None of that was tracked or translated.
    assert!(tb.switch().router().nat().connections(1).is_empty());
    // The outside cannot use the host port as a way in, nor the host port as a way out.
    tb.send("up", &inbound(&tb, CLIENT, HOST.1).udp(5000, 53, 8));
    tb.send("host", &to_ctr(&tb, SERVER).udp(5000, 53, 8));
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::NetworkIsolation), 2);
    // And the outside still cannot reach the unpublished container port.
    tb.send("up", &inbound(&tb, CLIENT, C1.1).tcp(seg(50000, 22, TcpFlags::SYN), 0));
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::NotPublished), 1);
    invariants(&tb);
}

/// Found by the `reconfigure` fuzz target: with a route via the host, a container's packet beyond the host port
/// left it with the container's own address (the host would forward it on, unmasqueraded). A host port carries
/// the host's own traffic only: to and from addresses of its link.
#[test]
fn a_host_port_is_not_a_way_out_or_in_for_other_addresses() {
    let host_cfg = format!(
        "{CONFIG}\n[[port]]\nname = \"host\"\nkind = \"mem\"\naddress = \"169.254.77.1/30\"\nhost = true\n\
         [[route]]\nprefix = \"198.51.100.0/24\"\nvia = \"169.254.77.2\"\n"
    );
    let mut tb = testbed_with(&host_cfg);
    const HOST: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 7, 2]), Ipv4Addr::new(169, 254, 77, 2));
    tb.send("host", &arp_request(HOST.0, HOST.1, Ipv4Addr::new(169, 254, 77, 1)));
    tb.take_all();
    tb.send("c1", &from(&tb, C1, SERVER).udp(6000, 53, 8));
    tb.send("b1", &Ipv4Spec::new(B1.0, rif_mac(&tb, "network:blue"), B1.1, SERVER).udp(6000, 53, 8));
    let host_mac = rif_mac(&tb, "port:host");
    let from_host = |src| Ipv4Spec::new(HOST.0, host_mac, src, C1.1);
    tb.send("host", &from_host(CLIENT).udp(5000, 53, 8));
    assert!(tb.take_all().is_empty(), "nothing beyond the host's link crosses the host port");
    assert_eq!(tb.switch().counters().drops(DropReason::NetworkIsolation), 3);
    tb.send("host", &from_host(HOST.1).udp(5000, 53, 8));
    assert_eq!(ends(&one(tb.take("c1"))), (HOST.1, 5000, C1.1, 53), "the host's own still does");
    invariants(&tb);
}

#[test]
fn a_tracked_packets_translated_destination_is_known_before_it_is_handled() {
    // The batch's hint (`Nat::translated_dst`): where a packet will go once translated, read from the entry its
    // flow's index line points to; nothing for packets whose destination NAT leaves alone, or untracked ones.
    let mut tb = testbed();
    tb.send("c1", &from(&tb, C1, SERVER).udp(5000, 53, 20));
    tb.send("up", &inbound(&tb, CLIENT, UP_ADDR).tcp(seg(50000, 8080, TcpFlags::SYN), 0));
    tb.take_all();
    let hint = |tb: &Testbed, frame: &[u8], in_rif: &str| {
        let nat = tb.switch().router().nat();
        let rif = tb.switch().topology().rifs.iter().position(|r| r.name == in_rif).unwrap();
        let mut flow = nat.prefetch(frame, &parse(frame).unwrap())?;
        nat.prefetch_entry(&mut flow, crate::ids::table_id(rif), None);
        nat.translated_dst(&flow)
    };
    let reply = inbound(&tb, SERVER, UP_ADDR).udp(53, 5000, 40);
    assert_eq!(hint(&tb, &reply, "port:up"), Some(C1.1), "a reply goes back to the masqueraded container");
    let published = inbound(&tb, CLIENT, UP_ADDR).tcp(seg(50000, 8080, TcpFlags::ACK), 0);
    assert_eq!(hint(&tb, &published, "port:up"), Some(C1.1), "a published port's packet goes to its target");
    let out = from(&tb, C1, SERVER).udp(5000, 53, 20);
    assert_eq!(hint(&tb, &out, "network:bridge"), None, "masquerade keeps the destination");
    let unknown = inbound(&tb, SERVER, UP_ADDR).udp(53, 5001, 40);
    assert_eq!(hint(&tb, &unknown, "port:up"), None, "not tracked");
    // The neighbour and the MAC the chain continues with are the container's.
    let r = tb.switch().router();
    let bridge_rif = tb.switch().topology().rifs.iter().position(|r| r.name == "network:bridge").unwrap();
    assert_eq!(r.neighbour_mac(crate::ids::table_id(bridge_rif), C1.1), Some(C1.0));
    assert_eq!(r.neighbour_mac(crate::ids::table_id(bridge_rif), Ipv4Addr::new(172, 17, 0, 99)), None);
}
