use super::LocalAddrs;
use crate::buffer::NANOS_PER_SEC;
use crate::counters::DropReason;
use crate::testbed::Testbed;
use crate::wire::builder::{arp_reply, arp_request, Ipv4Opts, Ipv4Spec};
use crate::wire::checksum;
use crate::wire::{arp, ethernet, ethertype, icmpv4, ipv4, MacAddr};
use etherparse::{Icmpv4Type, NetSlice, SlicedPacket, TransportSlice};
use std::net::Ipv4Addr;

const CONFIG: &str = r#"
    [[network]]
    name = "red"
    subnet = "10.0.1.0/24"
    gateway = "10.0.1.1"
    [[network]]
    name = "blue"
    subnet = "10.0.2.0/24"
    gateway = "10.0.2.1"
    [[network]]
    name = "vault"
    subnet = "10.0.3.0/24"
    gateway = "10.0.3.1"
    internal = true
    [[port]]
    name = "r1"
    kind = "mem"
    network = "red"
    [[port]]
    name = "b1"
    kind = "mem"
    network = "blue"
    [[port]]
    name = "v1"
    kind = "mem"
    network = "vault"
    [[port]]
    name = "up"
    kind = "mem"
    address = "203.0.113.2/24"
    mtu = 1400
    [[route]]
    prefix = "0.0.0.0/0"
    via = "203.0.113.1"
"#;

const RED_HOST: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 1, 10]), Ipv4Addr::new(10, 0, 1, 10));
const BLUE_HOST: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 2, 20]), Ipv4Addr::new(10, 0, 2, 20));
const VAULT_HOST: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 3, 30]), Ipv4Addr::new(10, 0, 3, 30));
const UPSTREAM: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 9, 1]), Ipv4Addr::new(203, 0, 113, 1));
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn testbed() -> Testbed {
    Testbed::new(CONFIG).expect("router test config is valid")
}

fn rif_mac(tb: &Testbed, name: &str) -> MacAddr {
    tb.switch().topology().rifs.iter().find(|r| r.name == name).expect("interface exists").mac
}

fn from_red(tb: &Testbed, dst: Ipv4Addr, opts: Ipv4Opts) -> Ipv4Spec {
    Ipv4Spec::new(RED_HOST.0, rif_mac(tb, "network:red"), RED_HOST.1, dst).with_opts(opts)
}

fn ip_of(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, u8) {
    let p = SlicedPacket::from_ethernet(frame).expect("switch emits well-formed frames");
    match p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            assert!(checksum::verify(h.slice()), "IPv4 header checksum must be valid");
            (h.source_addr(), h.destination_addr(), h.ttl())
        }
        other => panic!("expected IPv4, got {other:?}"),
    }
}

/// (destination, source) MAC of a frame.
fn macs(frame: &[u8]) -> (MacAddr, MacAddr) {
    let eth = ethernet::Packet::new_checked(frame).unwrap();
    (eth.dst_addr(), eth.src_addr())
}

/// The address an ARP request asks for.
fn arp_target(frame: &[u8]) -> Ipv4Addr {
    let eth = ethernet::Packet::new_checked(frame).unwrap();
    assert_eq!(eth.ethertype(), ethertype::ARP);
    arp::Packet::new_checked(eth.payload()).unwrap().target_ip()
}

fn icmp_of(frame: &[u8]) -> Icmpv4Type {
    match SlicedPacket::from_ethernet(frame).unwrap().transport {
        Some(TransportSlice::Icmpv4(i)) => i.icmp_type(),
        other => panic!("expected ICMP, got {other:?}"),
    }
}

#[test]
fn answers_arp_for_the_gateway_and_learns_the_sender() {
    let mut tb = testbed();
    tb.send("r1", &arp_request(RED_HOST.0, RED_HOST.1, Ipv4Addr::new(10, 0, 1, 1)));
    let out = tb.take("r1");
    assert_eq!(out.len(), 1, "one ARP reply");
    let gw = rif_mac(&tb, "network:red");
    let eth = ethernet::Packet::new_checked(&out[0][..]).unwrap();
    assert_eq!((eth.dst_addr(), eth.src_addr()), (RED_HOST.0, gw));
    let reply = arp::Repr::parse(&arp::Packet::new_checked(eth.payload()).unwrap()).unwrap();
    assert_eq!(reply.operation, arp::op::REPLY);
    assert_eq!(reply.sender_mac, gw, "sender hardware address is the gateway MAC");
    assert_eq!(
        (reply.sender_ip, reply.target_mac, reply.target_ip),
        (Ipv4Addr::new(10, 0, 1, 1), RED_HOST.0, RED_HOST.1)
    );
    let neigh = tb.switch().router().neighbours(0);
    assert_eq!(neigh.len(), 1);
    assert_eq!(neigh[0].mac, Some(RED_HOST.0));
}

#[test]
fn ignores_arp_for_addresses_that_are_not_ours() {
    let mut tb = testbed();
    tb.send("r1", &arp_request(RED_HOST.0, RED_HOST.1, Ipv4Addr::new(10, 0, 1, 77)));
    assert!(tb.take("r1").is_empty(), "no proxy ARP");
    assert!(tb.switch().router().neighbours(0).is_empty(), "a request not for us creates no entry");
    // ARP claiming an address of another network is refused.
    tb.send("r1", &arp_request(RED_HOST.0, Ipv4Addr::new(10, 0, 2, 20), Ipv4Addr::new(10, 0, 1, 1)));
    assert!(tb.take("r1").is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::BadArp), 1);
}

#[test]
fn a_refused_arp_broadcast_counts_its_reason_but_not_as_a_dropped_frame() {
    let mut tb = testbed();
    // Broadcast, so the bridge floods it and the router gets a copy; the sender is outside red's subnet.
    tb.send("r1", &arp_request(RED_HOST.0, Ipv4Addr::new(10, 0, 2, 20), Ipv4Addr::new(10, 0, 1, 1)));
    let c = tb.switch().counters();
    assert_eq!(c.drops(DropReason::BadArp), 1);
    let r1 = c.port(tb.port("r1"));
    assert_eq!((r1.rx_packets, r1.flooded, r1.dropped), (1, 1, 0), "the frame ends in exactly one place");
}

#[test]
fn internal_network_cannot_reach_other_interfaces_addresses() {
    let mut tb = testbed();
    let vault_gw = rif_mac(&tb, "network:vault");
    let ping = Ipv4Spec::new(VAULT_HOST.0, vault_gw, VAULT_HOST.1, Ipv4Addr::new(10, 0, 1, 1));
    tb.send("v1", &ping.icmp_echo_request(1, 1, 8));
    tb.send("r1", &from_red(&tb, Ipv4Addr::new(10, 0, 3, 1), Ipv4Opts::default()).icmp_echo_request(1, 1, 8));
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::InternalNetwork), 2);
}

#[test]
fn answers_ping_to_the_gateway() {
    let mut tb = testbed();
    tb.send("r1", &from_red(&tb, Ipv4Addr::new(10, 0, 1, 1), Ipv4Opts::default()).icmp_echo_request(7, 1, 32));
    let out = tb.take("r1");
    assert_eq!(out.len(), 1);
    assert_eq!(ip_of(&out[0]), (Ipv4Addr::new(10, 0, 1, 1), RED_HOST.1, 64));
    assert!(matches!(icmp_of(&out[0]), Icmpv4Type::EchoReply(e) if e.id == 7 && e.seq == 1));
}

#[test]
fn routes_between_networks_holding_the_first_packet_until_arp_resolves() {
    let mut tb = testbed();
    let pkt = from_red(&tb, BLUE_HOST.1, Ipv4Opts::default()).udp(1000, 2000, 20);
    tb.send("r1", &pkt);
    let req = tb.take("b1");
    assert_eq!(req.len(), 1, "an ARP request goes out on blue, the packet waits");
    assert_eq!(arp_target(&req[0]), BLUE_HOST.1, "asking for the destination");
    let blue_gw = rif_mac(&tb, "network:blue");
    tb.send("b1", &arp_reply(BLUE_HOST.0, BLUE_HOST.1, blue_gw, Ipv4Addr::new(10, 0, 2, 1)));
    let out = tb.take("b1");
    assert_eq!(out.len(), 1, "the held packet is delivered after the reply");
    assert_eq!(macs(&out[0]), (BLUE_HOST.0, blue_gw));
    assert_eq!(ip_of(&out[0]), (RED_HOST.1, BLUE_HOST.1, 63));
    // The next packet goes straight through.
    tb.send("r1", &pkt);
    assert_eq!(tb.take("b1").len(), 1);
    assert_eq!(tb.switch().router().stats().forwarded, 2);
}

#[test]
fn default_route_via_upstream_router_on_routed_port() {
    let mut tb = testbed();
    tb.send("r1", &from_red(&tb, EXTERNAL, Ipv4Opts::default()).udp(1000, 53, 20));
    let req = tb.take("up");
    assert_eq!(req.len(), 1);
    assert_eq!(arp_target(&req[0]), UPSTREAM.1, "ARP for the next hop, not the destination");
    let up_mac = rif_mac(&tb, "port:up");
    tb.send("up", &arp_reply(UPSTREAM.0, UPSTREAM.1, up_mac, Ipv4Addr::new(203, 0, 113, 2)));
    let out = tb.take("up");
    assert_eq!(out.len(), 1);
    assert_eq!(macs(&out[0]).0, UPSTREAM.0);
    assert_eq!(ip_of(&out[0]), (RED_HOST.1, EXTERNAL, 63));
}

#[test]
fn ttl_expiry_sends_time_exceeded() {
    let mut tb = testbed();
    let opts = Ipv4Opts { ttl: 1, ..Ipv4Opts::default() };
    tb.send("r1", &from_red(&tb, BLUE_HOST.1, opts).udp(1000, 33434, 12));
    let out = tb.take("r1");
    assert_eq!(out.len(), 1);
    assert_eq!(ip_of(&out[0]).0, Ipv4Addr::new(10, 0, 1, 1), "from the ingress interface's address");
    assert!(matches!(icmp_of(&out[0]), Icmpv4Type::TimeExceeded(_)));
    assert!(tb.take("b1").is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::TtlExpired), 1);
}

#[test]
fn no_route_sends_net_unreachable() {
    let cfg = CONFIG.replace("[[route]]\n    prefix = \"0.0.0.0/0\"\n    via = \"203.0.113.1\"", "");
    assert_ne!(cfg, CONFIG, "the default route was removed");
    let mut tb = Testbed::new(&cfg).unwrap();
    tb.send("r1", &from_red(&tb, EXTERNAL, Ipv4Opts::default()).udp(1000, 53, 20));
    let out = tb.take("r1");
    assert_eq!(out.len(), 1);
    assert!(matches!(
        icmp_of(&out[0]),
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Network)
    ));
    assert_eq!(tb.switch().counters().drops(DropReason::NoRoute), 1);
}

#[test]
fn unanswered_arp_gives_host_unreachable_and_drops_the_queue() {
    let mut tb = testbed();
    for seq in 0..6 {
        tb.send("r1", &from_red(&tb, BLUE_HOST.1, Ipv4Opts { id: seq, ..Ipv4Opts::default() }).udp(1, 2, 8));
    }
    assert_eq!(tb.take("b1").len(), 1, "one request, then retries");
    tb.advance(5 * NANOS_PER_SEC);
    assert_eq!(tb.take("b1").len(), 2, "two retries");
    let back = tb.take("r1");
    assert_eq!(back.len(), 4, "host unreachable for each of the 4 queued packets");
    assert!(back.iter().all(|f| matches!(
        icmp_of(f),
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Host)
    )));
    let c = tb.switch().counters();
    assert_eq!(c.drops(DropReason::HostUnreachable), 4);
    assert_eq!(c.drops(DropReason::NeighQueueOverflow), 2);
    assert_eq!(tb.free_buffers(), tb.total_buffers(), "no buffer left behind");
}

#[test]
fn df_packet_over_egress_mtu_gets_frag_needed() {
    let mut tb = testbed();
    let opts = Ipv4Opts { df: true, ..Ipv4Opts::default() };
    tb.send("r1", &from_red(&tb, EXTERNAL, opts).udp(1000, 53, 1400));
    let out = tb.take("r1");
    assert_eq!(out.len(), 1);
    match icmp_of(&out[0]) {
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu,
        }) => assert_eq!(next_hop_mtu, 1400),
        other => panic!("expected frag needed, got {other:?}"),
    }
    assert!(tb.take("up").is_empty());
    tb.send("r1", &from_red(&tb, EXTERNAL, Ipv4Opts::default()).udp(1000, 53, 1400));
    assert_eq!(tb.switch().counters().drops(DropReason::FragmentationUnsupported), 1);
}

#[test]
fn internal_network_is_not_routed() {
    let mut tb = testbed();
    let vault_gw = rif_mac(&tb, "network:vault");
    let pkt = Ipv4Spec::new(VAULT_HOST.0, vault_gw, VAULT_HOST.1, RED_HOST.1).udp(1, 2, 8);
    tb.send("v1", &pkt);
    tb.send("r1", &from_red(&tb, VAULT_HOST.1, Ipv4Opts::default()).udp(1, 2, 8));
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::InternalNetwork), 2);
    // The gateway itself still answers on the internal network.
    tb.send(
        "v1",
        &Ipv4Spec::new(VAULT_HOST.0, vault_gw, VAULT_HOST.1, Ipv4Addr::new(10, 0, 3, 1)).icmp_echo_request(1, 1, 8),
    );
    assert_eq!(tb.take("v1").len(), 1);
}

#[test]
fn malformed_ipv4_to_the_router_is_dropped_with_reasons() {
    let mut tb = testbed();
    let mut bad_sum = from_red(&tb, BLUE_HOST.1, Ipv4Opts::default()).udp(1, 2, 8);
    bad_sum[24] ^= 0xff;
    tb.send("r1", &bad_sum);
    let good = from_red(&tb, BLUE_HOST.1, Ipv4Opts::default()).udp(1, 2, 8);
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    tb.send("r1", &bad_ihl);
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    tb.send("r1", &bad_version);
    let mut too_long = good.clone();
    ipv4::Packet::new_unchecked(&mut too_long[ethernet::HEADER_LEN..]).set_total_len(1000);
    tb.send("r1", &too_long);
    assert!(tb.take_all().is_empty());
    let c = tb.switch().counters();
    assert_eq!(c.drops(DropReason::BadIpChecksum), 1);
    assert_eq!(c.drops(DropReason::BadIpHeader), 2);
    assert_eq!(c.drops(DropReason::BadIpLength), 1);
}

#[test]
fn icmp_errors_are_rate_limited_and_never_about_icmp_errors() {
    let mut tb = testbed();
    let opts = Ipv4Opts { ttl: 1, ..Ipv4Opts::default() };
    for _ in 0..200 {
        tb.send("r1", &from_red(&tb, BLUE_HOST.1, opts).udp(1, 2, 8));
    }
    assert_eq!(tb.take("r1").len(), 50, "the burst of the ICMP error bucket");
    assert_eq!(tb.switch().router().stats().icmp_rate_limited, 150);
}

#[test]
fn a_ttl_flood_does_not_starve_frag_needed() {
    let mut tb = testbed();
    let ttl1 = Ipv4Opts { ttl: 1, ..Ipv4Opts::default() };
    for _ in 0..200 {
        tb.send("r1", &from_red(&tb, BLUE_HOST.1, ttl1).udp(1, 2, 8));
    }
    assert_eq!(tb.take("r1").len(), 50, "Time Exceeded's bucket is spent");
    let df = Ipv4Opts { df: true, ..Ipv4Opts::default() };
    tb.send("r1", &from_red(&tb, EXTERNAL, df).udp(1000, 53, 1400));
    let out = tb.take("r1");
    assert_eq!(out.len(), 1, "Frag Needed still sent");
    assert!(matches!(
        icmp_of(&out[0]),
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { .. })
    ));
}

#[test]
fn never_sends_an_error_about_an_icmp_error_and_only_then() {
    // The one classification: every ICMP type the router routes with TTL 1 gets Time Exceeded unless
    // wire::icmpv4::is_error says it is an error itself (the list NAT uses too).
    for t in 0..=255u8 {
        let mut tb = testbed();
        let opts = Ipv4Opts { ttl: 1, ..Ipv4Opts::default() };
        let kind = Icmpv4Type::Unknown { type_u8: t, code_u8: 0, bytes5to8: [0; 4] };
        tb.send("r1", &from_red(&tb, BLUE_HOST.1, opts).icmp(kind, &[0x45; 28]));
        let answered = tb.take("r1").len();
        assert_eq!(answered == 0, icmpv4::is_error(t), "ICMP type {t}");
        assert_eq!(tb.switch().counters().drops(DropReason::TtlExpired), 1);
    }
}

#[test]
fn routes_sharing_a_gateway_share_one_next_hop_and_keep_their_origin() {
    // Next hops are interned per (interface, gateway): a million routes via one gateway are one entry, and the
    // listing still tells connected from static routes, each with its own prefix.
    let cfg = format!(
        "{CONFIG}\n[[route]]\nprefix = \"198.51.100.0/24\"\nvia = \"203.0.113.1\"\n\
         [[route]]\nprefix = \"192.168.0.0/16\"\nvia = \"203.0.113.1\"\n\
         [[route]]\nprefix = \"172.16.0.0/12\"\nvia = \"10.0.2.254\"\n"
    );
    let tb = Testbed::new(&cfg).unwrap();
    let r = tb.switch().router();
    let listed: Vec<(String, &str, Option<Ipv4Addr>)> =
        r.routes().iter().map(|e| (e.prefix.to_string(), e.origin, e.next_hop.via)).collect();
    let up = Some(UPSTREAM.1);
    assert_eq!(
        listed,
        [
            ("0.0.0.0/0".to_string(), "static", up),
            ("10.0.1.0/24".to_string(), "connected", None),
            ("10.0.2.0/24".to_string(), "connected", None),
            ("10.0.3.0/24".to_string(), "connected", None),
            ("172.16.0.0/12".to_string(), "static", Some(Ipv4Addr::new(10, 0, 2, 254))),
            ("192.168.0.0/16".to_string(), "static", up),
            ("198.51.100.0/24".to_string(), "static", up),
            ("203.0.113.0/24".to_string(), "connected", None),
        ]
    );
    assert_eq!(r.next_hop_count(), 6, "4 connected interfaces and 2 gateways, not 8 routes");
    assert_eq!(r.underlay_route(Ipv4Addr::new(192, 168, 3, 4)).map(|(_, via)| via), up);
    assert_eq!(r.underlay_route(Ipv4Addr::new(10, 0, 2, 9)).map(|(_, via)| via), Some(Ipv4Addr::new(10, 0, 2, 9)));
}

#[test]
fn local_addresses_are_found_through_their_filter_and_others_are_not() {
    // Enough addresses that some share a filter bit: a shared bit must still scan, and find the right one.
    let addrs: Vec<Ipv4Addr> = (0..200u32).map(|i| Ipv4Addr::from(0x0a00_0001 + (i << 8))).collect();
    let local = LocalAddrs::new(addrs.clone());
    for (i, a) in addrs.iter().enumerate() {
        assert_eq!(local.position(*a), Some(i), "{a}");
    }
    for i in 0..10_000u32 {
        let other = Ipv4Addr::from(0xcb00_7100 + i * 7 + 2);
        assert_eq!(local.position(other), None, "{other}");
    }
    // With a few interfaces, most other addresses skip the scan.
    let few = LocalAddrs::new(addrs[..3].to_vec());
    let skipped = (0..10_000u32).filter(|i| few.filter & LocalAddrs::bit(Ipv4Addr::from(0xcb00_7100 + i)) == 0).count();
    assert!(skipped > 9_000, "{skipped} of 10,000 skipped the scan with three addresses");
}
