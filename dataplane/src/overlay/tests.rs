//! Unit tests of the overlay tables: updates, encapsulation, decapsulation and ARP suppression, on a topology
//! built by hand (the pipeline's tests drive the same code through `Switch`).

use super::*;
use crate::buffer::BufPool;
use crate::config::Config;
use crate::packet::parse;
use crate::topology::{OverlayNetInfo, VtepInfo};
use crate::wire::builder::{arp_request, Ipv4Spec};
use crate::wire::vxlan::outer;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

const OURS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
const C: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 13);
const FAR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const GW: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// red and blue are overlays (VNIs 100 and 200), plain is not; `under` is the VTEP port.
fn topo() -> Topology {
    let cfg = Config::parse(
        r#"
        [[network]]
        name = "red"
        subnet = "10.1.0.0/24"
        gateway = "10.1.0.1"
        [[network]]
        name = "blue"
        [[network]]
        name = "plain"
        [[port]]
        name = "c1"
        kind = "mem"
        network = "red"
        [[port]]
        name = "under"
        kind = "mem"
        address = "198.51.100.11/24"
        "#,
        "t",
    )
    .unwrap();
    let mut t = Topology::from_config(&cfg);
    t.networks[0].overlay = Some(OverlayNetInfo { vni: Some(100), bum_rate_pps: 1000 });
    t.networks[1].overlay = Some(OverlayNetInfo { vni: Some(200), bum_rate_pps: 1000 });
    let port = t.port_id("under").unwrap();
    t.vtep = Some(VtepInfo { port, rif: t.ports[port as usize].rif.unwrap(), addr: OURS, udp_port: 4789, mtu: 1500 });
    t
}

/// Connected 198.51.100.0/24 on the VTEP port; everything else via 198.51.100.1.
fn routes(t: &Topology) -> impl Fn(Ipv4Addr) -> Option<(RifId, Ipv4Addr)> + '_ {
    move |a: Ipv4Addr| {
        let rif = t.vtep.unwrap().rif;
        if a.octets()[..3] == [198, 51, 100] {
            Some((rif, a))
        } else {
            Some((rif, GW))
        }
    }
}

fn member(host: &str, vtep: Ipv4Addr, mtu: u16, nets: &[&str]) -> Member {
    Member { host: host.into(), vtep, udp_port: 4789, mtu, networks: nets.iter().map(|s| s.to_string()).collect() }
}

fn ep(net: &str, mac: u8, ip: Option<[u8; 4]>, host: &str) -> RemoteEndpoint {
    RemoteEndpoint {
        network: net.into(),
        mac: MacAddr([2, 0, 0, 0, 0, mac]),
        ip: ip.map(Ipv4Addr::from),
        host: host.into(),
    }
}

fn state() -> OverlayState {
    OverlayState {
        revision: 7,
        members: vec![
            member("a", OURS, 1500, &["red", "blue"]),
            member("b", B, 1500, &["red", "nowhere"]),
            member("c", C, 1400, &["red", "blue"]),
        ],
        endpoints: vec![
            ep("red", 0xb1, Some([10, 1, 0, 12]), "b"),
            ep("red", 0xc1, Some([10, 1, 0, 13]), "c"),
            ep("blue", 0xc2, None, "c"),
            ep("blue", 0xb2, None, "b"),
            ep("elsewhere", 0xb3, None, "b"),
        ],
    }
}

fn overlay() -> (Topology, Overlay) {
    let t = topo();
    let mut o = Overlay::new(&t);
    let s = o.update(&t, state(), &routes(&t)).unwrap();
    assert_eq!(
        s,
        UpdateSummary { members: 2, members_added: 2, members_removed: 0, endpoints: 3, ignored: 3 },
        "our own VTEP is skipped; `nowhere`, `elsewhere` and b's blue endpoint (b does not serve blue) ignored"
    );
    (t, o)
}

fn inner_udp(dst_mac: u8, len: usize) -> Vec<u8> {
    Ipv4Spec::new(
        MacAddr([2, 0, 0, 0, 0, 0xa1]),
        MacAddr([2, 0, 0, 0, 0, dst_mac]),
        Ipv4Addr::new(10, 1, 0, 11),
        Ipv4Addr::new(10, 1, 0, 12),
    )
    .udp(1234, 80, len)
}

#[test]
fn update_builds_members_endpoints_and_the_smallest_mtu() {
    let (t, o) = overlay();
    let red = t.network_id("red").unwrap();
    let blue = t.network_id("blue").unwrap();
    assert!(o.is_overlay(red) && o.is_overlay(blue) && !o.is_overlay(2));
    assert_eq!(o.members(red).len(), 2);
    assert_eq!(o.members(blue).len(), 1, "only c serves blue");
    assert_eq!(o.mtu(red), Some(1350), "c's underlay MTU 1400 - 50");
    assert_eq!(o.mtu(blue), Some(1350));
    assert_eq!(o.endpoint_mac(red, Ipv4Addr::new(10, 1, 0, 12)), Some(MacAddr([2, 0, 0, 0, 0, 0xb1])));
    assert!(o.remote_mac(blue, MacAddr([2, 0, 0, 0, 0, 0xb2])).is_none());
    let i = o.inspect(red).unwrap();
    assert_eq!((i.vni, i.mtu, i.revision, i.members.len(), i.endpoints.len()), (100, 1350, 7, 2, 2));
    assert_eq!(i.members[0].host, "b");
    assert_eq!(i.members[0].state, "live");
}

#[test]
fn a_smaller_member_leaving_raises_the_mtu_again() {
    let (t, mut o) = overlay();
    let mut s = state();
    s.members.retain(|m| m.host != "c");
    s.endpoints.retain(|e| e.host != "c");
    let sum = o.update(&t, s, &routes(&t)).unwrap();
    assert_eq!((sum.members, sum.members_added, sum.members_removed), (1, 0, 1));
    assert_eq!(o.mtu(0), Some(1450));
    assert!(o.members(1).is_empty());
}

#[test]
fn an_invalid_state_is_refused_naming_the_field_and_changes_nothing() {
    let (t, mut o) = overlay();
    let mut s = state();
    s.members[2].vtep = B;
    let e = o.update(&t, s, &routes(&t)).unwrap_err();
    assert_eq!(e.field, "members[2].vtep");
    let mut s = state();
    s.endpoints[0].mac = MacAddr::BROADCAST;
    assert_eq!(o.update(&t, s, &routes(&t)).unwrap_err().field, "endpoints[0].mac");
    let mut s = state();
    s.members[1].mtu = 100;
    assert_eq!(o.update(&t, s, &routes(&t)).unwrap_err().field, "members[1].mtu");
    let mut s = state();
    s.members[1].host = "c".into();
    assert_eq!(o.update(&t, s, &routes(&t)).unwrap_err().field, "members[2].host");
    assert_eq!(o.inspect(0).unwrap().members.len(), 2, "unchanged");
    assert_eq!(o.stats().updates, 1);
}

#[test]
fn encap_queues_the_outer_frame_for_the_peers_next_hop() {
    let (_t, mut o) = overlay();
    let mut pool = BufPool::new(4);
    let mut f = pool.alloc().unwrap();
    let inner = inner_udp(0xb1, 100);
    f.load(&inner).unwrap();
    let peer = o.remote_mac(0, MacAddr([2, 0, 0, 0, 0, 0xb1])).unwrap();
    o.encap(0, peer, f).unwrap();
    let mut pending = o.take_pending();
    assert_eq!(pending.len(), 1);
    let Pending { rif, target, frame } = pending.pop().unwrap();
    o.restore_pending(pending);
    assert_eq!((rif, target), (o.vtep().unwrap().rif, B));
    let p = SlicedPacket::from_ethernet(frame.data()).unwrap();
    let Some(NetSlice::Ipv4(ip)) = p.net else { panic!() };
    assert_eq!((ip.header().source_addr(), ip.header().destination_addr()), (OURS, B));
    assert!(ip.header().dont_fragment());
    let Some(TransportSlice::Udp(u)) = p.transport else { panic!() };
    assert_eq!(u.destination_port(), 4789);
    assert_eq!(u.source_port(), vxlan::source_port(&inner));
    let vx = crate::wire::vxlan::Packet::new_checked(u.payload()).unwrap();
    assert_eq!(vx.vni(), 100, "red's VNI");
    assert_eq!(vx.payload(), &inner[..]);
    let i = o.inspect(0).unwrap();
    assert_eq!(i.members[0].counters.tx_packets, 1);
    assert_eq!(i.members[0].counters.tx_bytes, (inner.len() + vxlan::OVERHEAD) as u64);
}

#[test]
fn encap_refuses_frames_over_the_overlay_mtu_and_peers_without_a_route() {
    let t = topo();
    let mut o = Overlay::new(&t);
    // B has no route; C does (through a gateway).
    let only_far = |a: Ipv4Addr| (a == C).then_some((t.vtep.unwrap().rif, GW));
    o.update(&t, state(), &only_far).unwrap();
    let mut pool = BufPool::new(4);
    let peer_b = o.remote_mac(0, MacAddr([2, 0, 0, 0, 0, 0xb1])).unwrap();
    let peer_c = o.remote_mac(0, MacAddr([2, 0, 0, 0, 0, 0xc1])).unwrap();
    let mut f = pool.alloc().unwrap();
    f.load(&inner_udp(0xb1, 100)).unwrap();
    let (f, why) = o.encap(0, peer_b, f).unwrap_err();
    assert_eq!(why, DropReason::VxlanNoUnderlayRoute);
    let mut big = pool.alloc().unwrap();
    // 1350 IP bytes fit red's MTU, 1351 do not.
    big.load(&inner_udp(0xc1, 1350 - 28)).unwrap();
    o.encap(0, peer_c, big).unwrap();
    let mut g = pool.alloc().unwrap();
    g.load(&inner_udp(0xc1, 1351 - 28)).unwrap();
    assert_eq!(o.encap(0, peer_c, g).unwrap_err().1, DropReason::VxlanTooBig);
    assert_eq!(o.take_pending()[0].target, GW, "the gateway is the next hop");
    drop(f);
    assert_eq!(o.inspect(0).unwrap().members.iter().find(|m| m.host == "b").unwrap().state, "no-underlay-route");
}

/// A VXLAN frame from `src` with `vni` carrying `inner`, as it arrives on the VTEP port.
fn vxlan_frame(src: Ipv4Addr, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut pool = BufPool::new(1);
    let mut f = pool.alloc().unwrap();
    f.load(inner).unwrap();
    assert!(vxlan::Template::new(src, OURS, 4789).encap(&mut f, vni, 50000));
    let mut d = f.data().to_vec();
    let mut eth = ethernet::Packet::new_unchecked(&mut d[..]);
    eth.set_dst_addr(MacAddr([2, 0x76, 0x73, 0, 0, 1]));
    eth.set_src_addr(MacAddr([2, 0, 0, 0, 0, 0xee]));
    d
}

fn decap(o: &mut Overlay, d: &[u8]) -> Result<(NetId, Vec<u8>), DropReason> {
    let p = parse(d).expect("outer is well-formed");
    assert!(o.is_vxlan(o.vtep().unwrap().port, d, &p));
    let mut pool = BufPool::new(1);
    let mut f = pool.alloc().unwrap();
    f.load(d).unwrap();
    o.decap(&mut f, &p).map(|(n, _)| (n, f.data().to_vec()))
}

#[test]
fn decap_accepts_a_known_vni_from_a_member_only() {
    let (_t, mut o) = overlay();
    let inner = inner_udp(0xa1, 40);
    assert_eq!(decap(&mut o, &vxlan_frame(B, 100, &inner)), Ok((0, inner.clone())));
    assert_eq!(decap(&mut o, &vxlan_frame(C, 200, &inner)), Ok((1, inner.clone())));
    assert_eq!(decap(&mut o, &vxlan_frame(B, 300, &inner)), Err(DropReason::VxlanUnknownVni));
    assert_eq!(decap(&mut o, &vxlan_frame(FAR, 100, &inner)), Err(DropReason::VxlanUnknownVtep));
    assert_eq!(decap(&mut o, &vxlan_frame(B, 200, &inner)), Err(DropReason::VxlanUnknownVtep), "b does not serve blue");
    let mut group_src = inner.clone();
    group_src[6] = 1;
    assert_eq!(decap(&mut o, &vxlan_frame(B, 100, &group_src)), Err(DropReason::VxlanInnerNotEthernet));
    let mut bad_ip = inner.clone();
    bad_ip[14] = 0x65;
    assert_eq!(decap(&mut o, &vxlan_frame(B, 100, &bad_ip)), Err(DropReason::BadIpHeader), "inner checked as ingress");
    let big = inner_udp(0xa1, 1351 - 28);
    assert_eq!(decap(&mut o, &vxlan_frame(B, 100, &big)), Err(DropReason::TooLong), "over the overlay MTU");
    let i = o.inspect(0).unwrap();
    let b = i.members.iter().find(|m| m.host == "b").unwrap();
    assert_eq!(b.counters.rx_packets, 1);
    assert_eq!(o.stats().decapsulated, 2);
}

#[test]
fn only_vxlan_to_our_address_and_port_on_the_vtep_port_is_decapsulated() {
    let (_t, o) = overlay();
    let d = vxlan_frame(B, 100, &inner_udp(1, 10));
    let p = parse(&d).unwrap();
    let port = o.vtep().unwrap().port;
    assert!(o.is_vxlan(port, &d, &p));
    assert!(!o.is_vxlan(port - 1, &d, &p), "another port");
    let mut other_port = d.clone();
    udp::Packet::new_unchecked(&mut other_port[outer::UDP..]).set_dst_port(4790);
    assert!(!o.is_vxlan(port, &other_port, &parse(&other_port).unwrap()));
    let mut other_addr = d.clone();
    ipv4::Packet::new_unchecked(&mut other_addr[outer::IPV4..]).set_dst_addr(Ipv4Addr::new(198, 51, 100, 99));
    assert!(!o.is_vxlan(port, &other_addr, &p));
}

#[test]
fn arp_for_a_remote_endpoint_is_answered_locally() {
    let (_t, mut o) = overlay();
    let mut pool = BufPool::new(2);
    let asker = MacAddr([2, 0, 0, 0, 0, 0xa1]);
    let mut f = pool.alloc().unwrap();
    f.load(&arp_request(asker, Ipv4Addr::new(10, 1, 0, 11), Ipv4Addr::new(10, 1, 0, 13))).unwrap();
    assert!(o.arp_suppress(0, &mut f));
    let d = f.data();
    let c1 = MacAddr([2, 0, 0, 0, 0, 0xc1]);
    let eth = ethernet::Header::at(d, 0).unwrap();
    assert_eq!((eth.dst_addr(), eth.src_addr()), (asker, c1));
    let a = arp::Packet::new_checked(&d[ethernet::HEADER_LEN..]).unwrap();
    assert_eq!(a.operation(), arp::op::REPLY);
    assert_eq!((a.sender_mac(), a.sender_ip()), (c1, Ipv4Addr::new(10, 1, 0, 13)));
    assert_eq!((a.target_mac(), a.target_ip()), (asker, Ipv4Addr::new(10, 1, 0, 11)));
    let mut g = pool.alloc().unwrap();
    g.load(&arp_request(asker, Ipv4Addr::new(10, 1, 0, 11), Ipv4Addr::new(10, 1, 0, 99))).unwrap();
    assert!(!o.arp_suppress(0, &mut g), "unknown address: flooded as usual");
    assert!(!o.arp_suppress(1, &mut g));
    assert_eq!(o.stats().arp_suppressed, 1);
}

#[test]
fn counters_follow_a_vtep_across_updates() {
    let (t, mut o) = overlay();
    let mut pool = BufPool::new(2);
    let mut f = pool.alloc().unwrap();
    f.load(&inner_udp(0xc1, 10)).unwrap();
    let c = o.remote_mac(0, MacAddr([2, 0, 0, 0, 0, 0xc1])).unwrap();
    o.encap(0, c, f).unwrap();
    let mut s = state();
    s.members.reverse();
    o.update(&t, s, &routes(&t)).unwrap();
    let i = o.inspect(0).unwrap();
    assert_eq!(i.members.iter().find(|m| m.host == "c").unwrap().counters.tx_packets, 1);
    assert_eq!(i.members.iter().find(|m| m.host == "b").unwrap().counters.tx_packets, 0);
}
