//! The overlay through the whole pipeline (`Switch` on memory ports): encapsulation after underlay ARP,
//! head-end replication with its rate limit, decapsulation with split horizon, ARP suppression, routing into the
//! overlay (remote MACs from the control plane, Fragmentation Needed at the overlay MTU), and tunnel traffic kept
//! away from NAT.

use super::*;
use crate::ids::NANOS_PER_SEC;
use crate::offload::offloaded_form;
use crate::testbed::Testbed;
use crate::wire::builder::{arp_reply, arp_request, Ipv4Opts, Ipv4Spec, TcpFlags, TcpSegment};
use crate::wire::vxlan::{outer, OUTER_LEN};
use etherparse::{Icmpv4Type, NetSlice, SlicedPacket, TransportSlice};

const CONFIG: &str = r#"
    [cluster]
    name = "t"
    host = "a"
    etcd = ["http://127.0.0.1:2379"]
    vtep_port = "under"
    [[network]]
    name = "red"
    scope = "overlay"
    vni = 100
    subnet = "10.1.0.0/24"
    gateway = "10.1.0.1"
    masquerade = true
    # A masquerade network is isolated from the others (Docker's policy); blue routes into it for the tests.
    allow_routing_with = ["blue"]
    bum_rate_pps = 10
    [[network]]
    name = "blue"
    subnet = "10.2.0.0/24"
    gateway = "10.2.0.1"
    [[port]]
    name = "c1"
    kind = "mem"
    network = "red"
    [[port]]
    name = "c2"
    kind = "mem"
    network = "red"
    [[port]]
    name = "x1"
    kind = "mem"
    network = "blue"
    [[port]]
    name = "under"
    kind = "mem"
    address = "198.51.100.11/24"
"#;

const OURS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
const C: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 13);
const B_MAC: MacAddr = MacAddr([2, 0xbb, 0, 0, 0, 1]);
const C_MAC: MacAddr = MacAddr([2, 0xcc, 0, 0, 0, 1]);
const C1: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 0, 0x11]), Ipv4Addr::new(10, 1, 0, 11));
const C2: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 0, 0x12]), Ipv4Addr::new(10, 1, 0, 12));
/// Behind B.
const R1: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 0xb, 0x21]), Ipv4Addr::new(10, 1, 0, 21));
const X1: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 0, 0x31]), Ipv4Addr::new(10, 2, 0, 31));

fn state() -> OverlayState {
    let m =
        |host: &str, vtep| Member { host: host.into(), vtep, udp_port: 4789, mtu: 1500, networks: vec!["red".into()] };
    OverlayState {
        revision: 1,
        members: vec![m("b", B), m("c", C)],
        endpoints: vec![RemoteEndpoint { network: "red".into(), mac: R1.0, ip: Some(R1.1), host: "b".into() }],
    }
}

fn testbed() -> Testbed {
    let mut tb = Testbed::new(CONFIG).unwrap();
    tb.switch_mut().update_overlay(state()).unwrap();
    tb
}

/// Answers the switch's underlay ARP requests for B and C; returns the frames the answers released.
fn resolve_underlay(tb: &mut Testbed) -> Vec<Vec<u8>> {
    let mac = tb.switch().topology().rifs.iter().find(|r| r.name == "port:under").unwrap().mac;
    let mut released = Vec::new();
    for f in tb.take("under") {
        let arp = ethernet::Header::at(&f, 0).filter(|e| e.ethertype() == ethertype::ARP);
        if arp.is_some() {
            let target = arp::Packet::new_checked(&f[ethernet::HEADER_LEN..]).unwrap().target_ip();
            let peer_mac = if target == B { B_MAC } else { C_MAC };
            tb.send("under", &arp_reply(peer_mac, target, mac, OURS));
            released.extend(tb.take("under"));
        } else {
            released.push(f);
        }
    }
    released
}

/// (outer destination MAC, outer destination IP, VNI, DF, inner frame) of a VXLAN frame, decoded by etherparse.
fn outer(f: &[u8]) -> (MacAddr, Ipv4Addr, u32, bool, Vec<u8>) {
    let p = SlicedPacket::from_ethernet(f).expect("a well-formed outer frame");
    let Some(NetSlice::Ipv4(ip)) = p.net else { panic!("outer IPv4") };
    let Some(TransportSlice::Udp(u)) = p.transport else { panic!("outer UDP") };
    assert_eq!(u.destination_port(), 4789);
    assert_eq!(ip.header().source_addr(), OURS);
    let vx = crate::wire::vxlan::Packet::new_checked(u.payload()).expect("a VXLAN header");
    let dst = ethernet::Header::at(f, 0).unwrap().dst_addr();
    (dst, ip.header().destination_addr(), vx.vni(), ip.header().dont_fragment(), vx.payload().to_vec())
}

fn udp(from: (MacAddr, Ipv4Addr), to: (MacAddr, Ipv4Addr), len: usize) -> Vec<u8> {
    Ipv4Spec::new(from.0, to.0, from.1, to.1).udp(1000, 2000, len)
}

#[test]
fn known_remote_unicast_is_encapsulated_to_its_vtep_after_underlay_arp() {
    let mut tb = testbed();
    let f = udp(C1, R1, 40);
    tb.send("c1", &f);
    assert!(tb.take("c2").is_empty(), "known remote unicast is not flooded locally");
    let out = resolve_underlay(&mut tb);
    assert_eq!(out.len(), 1, "the frame waited for B's MAC and then left");
    let (mac, dst, vni, df, inner) = outer(&out[0]);
    assert_eq!((mac, dst, vni, df), (B_MAC, B, 100, true));
    assert_eq!(inner, f);
    // Resolved now: the next frame goes straight out.
    tb.send("c1", &f);
    assert_eq!(tb.take("under").len(), 1);
    assert_eq!(tb.switch().conntrack().len(), 0, "tunnel traffic is never tracked, even from a masquerade network");
    assert_eq!(tb.free_buffers(), tb.total_buffers());
}

#[test]
fn broadcast_is_flooded_locally_and_replicated_to_every_member_within_the_rate_limit() {
    let mut tb = testbed();
    let mut bcast = udp(C1, (MacAddr::BROADCAST, Ipv4Addr::BROADCAST), 20);
    set_dst(&mut bcast, MacAddr::BROADCAST);
    tb.send("c1", &bcast);
    assert_eq!(tb.take("c2").len(), 1);
    let out = resolve_underlay(&mut tb);
    let mut dsts: Vec<Ipv4Addr> = out.iter().map(|f| outer(f).1).collect();
    dsts.sort();
    assert_eq!(dsts, vec![B, C], "one copy per member");
    // bum_rate_pps = 10: a burst of 16, then nothing until the bucket refills.
    for _ in 0..20 {
        tb.send("c1", &bcast);
    }
    assert_eq!(tb.take("c2").len(), 20, "local ports get every frame");
    assert_eq!(tb.take("under").len(), 2 * 15, "the burst's other 15 frames, to both members");
    assert_eq!(tb.switch().counters().drops(DropReason::VxlanBumRateLimited), 5);
    tb.advance(NANOS_PER_SEC);
    tb.send("c1", &bcast);
    assert_eq!(tb.take("under").len(), 2, "refilled");
}

/// A VXLAN frame from `src` carrying `inner`, addressed to our VTEP port.
fn from_peer(tb: &Testbed, src: Ipv4Addr, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut pool = crate::buffer::BufPool::new(1);
    let mut f = pool.alloc().unwrap();
    f.load(inner).unwrap();
    assert!(vxlan::Template::new(src, OURS, 4789).encap(&mut f, vni, 55555));
    let mac = tb.switch().topology().rifs.iter().find(|r| r.name == "port:under").unwrap().mac;
    let mut d = f.data().to_vec();
    let mut eth = ethernet::Packet::new_unchecked(&mut d[..]);
    eth.set_dst_addr(mac);
    eth.set_src_addr(B_MAC);
    d
}

fn set_dst(frame: &mut [u8], mac: MacAddr) {
    ethernet::Packet::new_unchecked(frame).set_dst_addr(mac);
}

#[test]
fn decapsulated_frames_reach_local_ports_only() {
    let mut tb = testbed();
    tb.send("c1", &udp(C1, C2, 10)); // learn c1 (flooded to c2 and both members: the underlay gets resolved)
    assert_eq!(resolve_underlay(&mut tb).len(), 2);
    tb.take_all();
    let to_c1 = udp(R1, C1, 30);
    tb.send("under", &from_peer(&tb, B, 100, &to_c1));
    assert_eq!(tb.take("c1"), vec![to_c1], "known local unicast");
    assert!(tb.take("c2").is_empty());
    let mut bcast = udp(R1, C1, 30);
    set_dst(&mut bcast, MacAddr::BROADCAST);
    tb.send("under", &from_peer(&tb, B, 100, &bcast));
    assert_eq!((tb.take("c1").len(), tb.take("c2").len()), (1, 1));
    assert!(tb.take("under").is_empty(), "split horizon: never back into a tunnel");
    assert!(tb.switch().fdb(0).lookup(R1.0, tb.now()).is_none(), "remote sources are not learnt");
    let under = tb.port("under");
    let c = tb.switch().counters().port(under);
    // Two ARP replies (routed) and the two tunnel packets (forwarded once, flooded once; never routed).
    assert_eq!((c.rx_packets, c.forwarded, c.flooded, c.routed), (4, 1, 1, 2));
    assert_eq!(tb.switch().overlay().stats().decapsulated, 2);
}

#[test]
fn refused_tunnel_packets_are_dropped_with_their_reasons() {
    let mut tb = testbed();
    let inner = udp(R1, C1, 30);
    tb.send("under", &from_peer(&tb, B, 999, &inner));
    tb.send("under", &from_peer(&tb, Ipv4Addr::new(198, 51, 100, 99), 100, &inner));
    let mut flags = from_peer(&tb, B, 100, &inner);
    crate::wire::vxlan::Packet::new_unchecked(&mut flags[outer::VXLAN..]).set_flags(0x0c);
    tb.send("under", &flags);
    // Cut inside the inner Ethernet header, with outer lengths and checksum that agree (ingress accepts it).
    let mut short = from_peer(&tb, B, 100, &inner)[..OUTER_LEN + 10].to_vec();
    let len = (short.len() - ethernet::HEADER_LEN) as u16;
    let mut ip = ipv4::Packet::new_unchecked(&mut short[outer::IPV4..outer::UDP]);
    ip.set_total_len(len);
    ip.fill_checksum();
    udp::Packet::new_unchecked(&mut short[outer::UDP..]).set_length(len - ipv4::HEADER_LEN as u16);
    tb.send("under", &short);
    let mut gw = udp(R1, C1, 30);
    let gw_mac = tb.switch().topology().rifs.iter().find(|r| r.name == "network:red").unwrap().mac;
    ethernet::Packet::new_unchecked(&mut gw[..]).set_dst_addr(gw_mac);
    tb.send("under", &from_peer(&tb, B, 100, &gw));
    assert!(tb.take_all().is_empty());
    let c = tb.switch().counters();
    for r in [
        DropReason::VxlanUnknownVni,
        DropReason::VxlanUnknownVtep,
        DropReason::VxlanBadFlags,
        DropReason::VxlanTruncated,
        DropReason::VxlanGatewayMac,
    ] {
        assert_eq!(c.drops(r), 1, "{}", r.name());
    }
    assert_eq!(tb.switch().conntrack().len(), 0);
    assert_eq!(tb.free_buffers(), tb.total_buffers());
}

#[test]
fn arp_for_a_remote_endpoint_is_answered_by_the_switch() {
    let mut tb = testbed();
    tb.send("c1", &arp_request(C1.0, C1.1, R1.1));
    let back = tb.take("c1");
    assert_eq!(back.len(), 1);
    let reply = arp::Packet::new_checked(&back[0][ethernet::HEADER_LEN..]).unwrap();
    assert_eq!(reply.sender_mac(), R1.0, "the remote endpoint's MAC");
    assert!(tb.take("c2").is_empty() && tb.take("under").is_empty(), "not flooded anywhere");
    // Unknown addresses are flooded as usual, also to the members.
    tb.send("c1", &arp_request(C1.0, C1.1, Ipv4Addr::new(10, 1, 0, 77)));
    assert_eq!(tb.take("c2").len(), 1);
    assert_eq!(resolve_underlay(&mut tb).len(), 2);
}

#[test]
fn routing_into_the_overlay_uses_the_registered_mac_and_the_overlay_mtu() {
    let mut tb = testbed();
    let blue_gw = tb.switch().topology().rifs.iter().find(|r| r.name == "network:blue").unwrap().mac;
    let red_gw = tb.switch().topology().rifs.iter().find(|r| r.name == "network:red").unwrap().mac;
    let p = Ipv4Spec::new(X1.0, blue_gw, X1.1, R1.1);
    tb.send("x1", &p.udp(1, 2, 100));
    let out = resolve_underlay(&mut tb);
    assert_eq!(out.len(), 1, "no ARP on red for a registered endpoint: straight into the tunnel");
    let (_, dst, vni, _, inner) = outer(&out[0]);
    assert_eq!((dst, vni), (B, 100));
    let eth = ethernet::Header::at(&inner, 0).unwrap();
    assert_eq!((eth.dst_addr(), eth.src_addr()), (R1.0, red_gw));
    // 1450 = 1500 - 50 fits; 1451 with DF gets Fragmentation Needed (next-hop MTU 1450).
    let df = Ipv4Opts { df: true, ..Ipv4Opts::default() };
    tb.send("x1", &p.with_opts(df).udp(1, 2, 1450 - 28));
    assert_eq!(tb.take("under").len(), 1);
    tb.send("x1", &p.with_opts(df).udp(1, 2, 1451 - 28));
    let back = tb.take("x1");
    assert_eq!(back.len(), 1);
    match SlicedPacket::from_ethernet(&back[0]).unwrap().transport {
        Some(TransportSlice::Icmpv4(i)) => match i.icmp_type() {
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu,
            }) => assert_eq!(next_hop_mtu, 1450),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(tb.take("under").is_empty());
}

#[test]
fn oversized_bridged_frames_are_dropped_not_fragmented() {
    let mut tb = testbed();
    tb.send("c1", &udp(C1, R1, 1451 - 28));
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::VxlanTooBig), 1);
    tb.send("c1", &udp(C1, R1, 1450 - 28));
    assert_eq!(resolve_underlay(&mut tb).len(), 1);
}

#[test]
fn a_member_that_leaves_is_refused_and_not_replicated_to() {
    let mut tb = testbed();
    let mut s = state();
    s.members.retain(|m| m.host != "c");
    tb.switch_mut().update_overlay(s).unwrap();
    let mut bcast = udp(C1, C2, 20);
    set_dst(&mut bcast, MacAddr::BROADCAST);
    tb.send("c1", &bcast);
    let out = resolve_underlay(&mut tb);
    assert_eq!(out.iter().map(|f| outer(f).1).collect::<Vec<_>>(), vec![B]);
    tb.send("under", &from_peer(&tb, C, 100, &udp(R1, C1, 10)));
    assert_eq!(tb.switch().counters().drops(DropReason::VxlanUnknownVtep), 1);
}

#[test]
fn tunnel_packets_whose_underlay_arp_fails_are_dropped_without_icmp_errors() {
    let mut tb = testbed();
    tb.send("c1", &udp(C1, R1, 10));
    assert_eq!(tb.take("under").len(), 1, "the ARP request for b's VTEP");
    // Nobody answers: ARP retries, then the held tunnel packet is dropped (a minute of virtual time).
    tb.advance(60 * NANOS_PER_SEC);
    tb.take("under");
    assert!(tb.take("c1").is_empty(), "no ICMP error to the container: the switch sent the packet");
    assert_eq!(tb.switch().router().stats().icmp_errors, 0);
    assert_eq!(tb.switch().counters().drops(DropReason::HostUnreachable), 1);
    assert_eq!(tb.free_buffers(), tb.total_buffers());
}

/// True when a TCP/IPv4 frame's checksums are right, as the receiving host's kernel checks them (etherparse).
fn tcp_checksums_ok(frame: &[u8]) -> bool {
    let p = SlicedPacket::from_ethernet(frame).expect("a TCP/IPv4 frame");
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) = (p.net, p.transport) else { return false };
    let h = ip.header();
    let want = t.to_header().calc_checksum_ipv4_raw(h.source(), h.destination(), t.payload()).unwrap();
    h.to_header().calc_header_checksum() == h.header_checksum() && t.checksum() == want
}

#[test]
fn offloaded_frames_are_completed_and_cut_before_encapsulation() {
    let mut tb = testbed();
    let spec = Ipv4Spec::new(C1.0, R1.0, C1.1, R1.1);
    // A SYN as a host stack with checksum offload hands it over: only the pseudo-header sum in the field.
    let syn = spec.tcp(TcpSegment::new(40000, 7000, TcpFlags::SYN).seq(1), 0);
    let (partial, o) = offloaded_form(&syn, None).unwrap();
    tb.send_with("c1", &partial, o);
    let out = resolve_underlay(&mut tb);
    assert_eq!(out.len(), 1);
    let (_, dst, _, _, inner) = outer(&out[0]);
    assert_eq!(dst, B);
    assert_eq!(inner, syn, "the inner frame is the SYN with its checksum completed");
    // A 10,000-byte super-frame with a 1,400-byte segment size: eight wire-sized inner frames.
    let data = spec.tcp(TcpSegment::new(40000, 7000, TcpFlags::ACK | TcpFlags::PSH).seq(2).ack(9), 10_000);
    let (sup, o) = offloaded_form(&data, Some(1400)).unwrap();
    tb.send_with("c1", &sup, o);
    let out = tb.take("under");
    assert_eq!(out.len(), 8, "ceil(10000 / 1400) segments, each encapsulated");
    let mut payload = 0;
    for f in &out {
        let (_, dst, vni, df, inner) = outer(f);
        assert_eq!((dst, vni, df), (B, 100, true));
        assert!(inner.len() <= ethernet::HEADER_LEN + 20 + 20 + 1400, "wire-sized: {}", inner.len());
        assert!(tcp_checksums_ok(&inner), "every segment's checksums complete");
        payload += inner.len() - ethernet::HEADER_LEN - 40;
    }
    assert_eq!(payload, 10_000);
    assert_eq!(tb.switch().overlay().soft_stats().gso_segments, 8);
    assert_eq!(tb.free_buffers(), tb.total_buffers(), "the super-frame's buffer went back");
}
