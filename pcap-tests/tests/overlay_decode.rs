//! The overlay goldens read by decoders that are not the switch's: etherparse for every field of the outer
//! headers (and `tshark`, when installed, for the same fields once more), so a bug shared by the encapsulation
//! code and the wire views cannot bless itself into `expected/`.
//!
//! - `overlay-encap`: every frame the switch sent on the underlay that is not ARP is VXLAN as RFC 7348 and the
//!   issue ask: outer IPv4 198.51.100.11 > a member VTEP, DF set, not a fragment, TTL 64, a valid header
//!   checksum, UDP to 4789 with checksum 0 and the right length, a source port in 49152..=65535 that is one per
//!   inner flow (five flows to r1, five ports; the repeated flow, the same port), VXLAN flags exactly I, VNI 100,
//!   and an inner frame equal to one c1 sent. The broadcast is replicated once to each member.
//! - `overlay-decap`: every frame delivered to c1 is the inner frame of a VXLAN packet from the input capture.
//! - `overlay-frag-needed`: the ICMP error to x1 is Fragmentation Needed with next-hop MTU 1450.

use dataplane::port::pcap::read_capture;
use etherparse::{Icmpv4Type, LinkSlice, NetSlice, SlicedPacket, TransportSlice};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

const OURS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
const C: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 13);

fn case(name: &str) -> PathBuf {
    pcap_tests::cases_dir().join(name)
}

fn frames(path: PathBuf) -> Vec<Vec<u8>> {
    read_capture(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .frames
        .into_iter()
        .map(|f| f.data)
        .collect()
}

/// What etherparse finds in one VXLAN frame.
#[derive(Debug)]
struct Outer {
    dst: Ipv4Addr,
    sport: u16,
    vni: u32,
    inner: Vec<u8>,
}

/// Decodes `f` with etherparse and checks every fixed field of the outer headers.
fn decode_outer(f: &[u8]) -> Outer {
    let p = SlicedPacket::from_ethernet(f).expect("etherparse decodes the outer frame");
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else { panic!("outer Ethernet II") };
    assert!(p.vlan.is_none(), "outer frame untagged");
    assert_eq!(eth.source(), [2, 0, 0, 0, 9, 0x11], "our VTEP port's MAC");
    let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("outer IPv4") };
    let h = ip.header();
    assert_eq!((h.ihl(), h.ttl(), h.protocol().0), (5, 64, 17), "no options, TTL 64, UDP");
    assert!(h.dont_fragment(), "DF set (RFC 7348 §4.3)");
    assert!(!h.more_fragments() && h.fragments_offset().value() == 0, "not a fragment");
    assert_eq!(h.source_addr(), OURS);
    assert_eq!(usize::from(h.total_len()), f.len() - 14, "outer IP length is the frame's");
    assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum(), "outer IPv4 header checksum");
    let dst = h.destination_addr();
    let mac = if dst == B { [2, 0, 0, 0, 9, 0x12] } else { [2, 0, 0, 0, 9, 0x13] };
    assert_eq!(eth.destination(), mac, "the member VTEP's MAC, from the underlay ARP");
    let Some(TransportSlice::Udp(u)) = &p.transport else { panic!("outer UDP") };
    assert_eq!(u.destination_port(), 4789);
    assert_eq!(u.checksum(), 0, "outer UDP checksum 0 on IPv4 (RFC 7348 §5)");
    assert!(u.source_port() >= 49152, "source port {} in the dynamic range", u.source_port());
    assert_eq!(usize::from(u.length()), f.len() - 34);
    let vx = u.payload();
    assert!(vx.len() >= 8 + 14, "VXLAN header and an inner Ethernet header");
    assert_eq!(vx[..4], [0x08, 0, 0, 0], "flags exactly I, reserved zero");
    assert_eq!(vx[7], 0, "reserved byte after the VNI");
    Outer { dst, sport: u.source_port(), vni: u32::from_be_bytes([0, vx[4], vx[5], vx[6]]), inner: vx[8..].to_vec() }
}

/// The inner flow of a frame: etherparse's (source, destination, protocol, ports / ICMP id), or the MACs.
fn flow(inner: &[u8]) -> String {
    let p = SlicedPacket::from_ethernet(inner).expect("inner frame decodes");
    let ports = match &p.transport {
        Some(TransportSlice::Udp(u)) => format!("udp {} {}", u.source_port(), u.destination_port()),
        Some(TransportSlice::Tcp(t)) => format!("tcp {} {}", t.source_port(), t.destination_port()),
        Some(TransportSlice::Icmpv4(_)) => "icmp".to_string(),
        _ => String::new(),
    };
    match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            format!("{} > {} {ports}", ip.header().source_addr(), ip.header().destination_addr())
        }
        _ => format!("{:?}", &inner[..12]),
    }
}

fn is_arp(f: &[u8]) -> bool {
    f.get(12..14) == Some(&[0x08, 0x06])
}

#[test]
fn encapsulated_frames_decode_as_rfc_7348_with_one_source_port_per_flow() {
    let dir = case("overlay-encap");
    let sent_by_c1 = frames(dir.join("in/c1.pcap"));
    let out = frames(dir.join("expected/under.pcap"));
    let vxlan: Vec<Outer> = out.iter().filter(|f| !is_arp(f)).map(|f| decode_outer(f)).collect();
    assert_eq!(vxlan.len(), 9, "six frames to b, one to c, the broadcast to both");
    let mut port_of_flow: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for o in &vxlan {
        assert_eq!(o.vni, 100);
        assert!(sent_by_c1.contains(&o.inner), "inner frame is one c1 sent, unchanged: {}", flow(&o.inner));
        if o.inner[0] & 1 == 0 {
            port_of_flow.entry(format!("{} {}", o.dst, flow(&o.inner))).or_default().insert(o.sport);
        }
    }
    // One port per flow (the repeated flow kept its port), and five flows to r1 on five different ports.
    assert!(port_of_flow.values().all(|p| p.len() == 1), "{port_of_flow:?}");
    let to_b: BTreeSet<u16> =
        port_of_flow.iter().filter(|(k, _)| k.starts_with("198.51.100.12")).flat_map(|(_, p)| p.clone()).collect();
    assert_eq!(to_b.len(), 5, "source-port entropy across flows: {port_of_flow:?}");
    let bum: Vec<&Outer> = vxlan.iter().filter(|o| o.inner[0] & 1 == 1).collect();
    assert_eq!(bum.iter().map(|o| o.dst).collect::<BTreeSet<_>>(), BTreeSet::from([B, C]), "replicated to both");
    assert_eq!(bum[0].inner, bum[1].inner);
}

#[test]
fn tshark_reads_the_same_outer_headers() {
    let pcap = case("overlay-encap").join("expected/under.pcap");
    let fields = ["ip.src", "ip.dst", "ip.flags.df", "ip.flags.mf", "ip.ttl", "ip.checksum.status"];
    let more = ["udp.dstport", "udp.checksum", "vxlan.flags", "vxlan.vni"];
    let mut cmd = std::process::Command::new("tshark");
    cmd.args(["-o", "ip.check_checksum:TRUE", "-r"]).arg(&pcap);
    cmd.args(["-Y", "vxlan", "-T", "fields", "-E", "separator=,", "-E", "occurrence=f"]);
    for f in fields.iter().chain(&more) {
        cmd.args(["-e", f]);
    }
    let out = match cmd.output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!("tshark failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("tshark not installed: skipping its cross-check (etherparse's still runs)");
            return;
        }
        Err(e) => panic!("tshark: {e}"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 9, "{text}");
    for l in lines {
        let v: Vec<&str> = l.split(',').collect();
        assert!(v[1] == "198.51.100.12" || v[1] == "198.51.100.13", "{l}");
        // src, DF, not MF, TTL 64, checksum good (1); UDP 4789 checksum 0; flags I (0x0800 of the 16-bit field);
        // VNI 100.
        assert_eq!(
            [v[0], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]],
            ["198.51.100.11", "1", "0", "64", "1", "4789", "0x0000", "0x0800", "100"],
            "{l}"
        );
    }
}

#[test]
fn decapsulated_frames_are_the_inner_frames_unchanged() {
    let dir = case("overlay-decap");
    let inners: Vec<Vec<u8>> = frames(dir.join("in/under.pcap"))
        .iter()
        .filter_map(|f| match SlicedPacket::from_ethernet(f).expect("input decodes").transport {
            // (The outer fragment has no transport for etherparse either.)
            Some(TransportSlice::Udp(u)) => Some(u.payload()[8..].to_vec()),
            _ => None,
        })
        .collect();
    let delivered = frames(dir.join("expected/c1.pcap"));
    assert_eq!(delivered.len(), 4);
    for f in &delivered {
        assert!(inners.contains(f), "delivered frame is an inner frame as sent: {}", flow(f));
    }
}

#[test]
fn too_big_for_the_overlay_gets_fragmentation_needed_with_the_overlay_mtu() {
    let out = frames(case("overlay-frag-needed").join("expected/x1.pcap"));
    assert_eq!(out.len(), 1);
    let p = SlicedPacket::from_ethernet(&out[0]).unwrap();
    let Some(TransportSlice::Icmpv4(icmp)) = p.transport else { panic!("ICMP") };
    match icmp.icmp_type() {
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu,
        }) => assert_eq!(next_hop_mtu, 1450),
        other => panic!("expected Fragmentation Needed, got {other:?}"),
    }
    let under = frames(case("overlay-frag-needed").join("expected/under.pcap"));
    let o = decode_outer(under.iter().find(|f| !is_arp(f)).expect("the fitting datagram, encapsulated"));
    assert_eq!((o.dst, o.vni, o.inner.len()), (B, 100, 1464), "1450 IP bytes inside, 1500 outside");
}
