//! Super-frames and partial checksums through the pipeline, on memory ports (no privileges): each port hands
//! frames over with offload metadata, as the tap and AF_PACKET ports do, and sends what its capabilities allow
//! (`MemPort::set_caps`). What a port without the capability sends is checked as wire frames. Switched (L2),
//! then routed and masqueraded: NAT moves a partial checksum by the address change only, the router's MTU check
//! looks at a super-frame's segments.

use dataplane::counters::DropReason;
use dataplane::offload::{offloaded_form, Caps, GsoKind, Offload};
use dataplane::port::gso::complete_checksum;
use dataplane::testbed::Testbed;
use dataplane::wire::builder::{arp_reply, pattern, Ipv4Opts, Ipv4Spec, TcpFlags, TcpSegment};
use dataplane::wire::icmpv4::{msg_type, unreachable};
use dataplane::wire::{ethernet, ethertype, icmpv4, ip_proto, ipv4, tcp, MacAddr};
use std::net::Ipv4Addr;

const L2: &str = r#"
[[network]]
name = "lan"

[[port]]
name = "a"
kind = "mem"
network = "lan"

[[port]]
name = "b"
kind = "mem"
network = "lan"

[[port]]
name = "c"
kind = "mem"
network = "lan"

[[port]]
name = "small"
kind = "mem"
network = "lan"
mtu = 1400
"#;

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

fn spec(src: MacAddr, dst: MacAddr) -> Ipv4Spec {
    Ipv4Spec::new(src, dst, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
}

/// A TCP super-frame of `payload` bytes from A to `dst`, MSS 1448, as a sender with TSO hands it over.
fn super_frame(dst: MacAddr, payload: usize) -> (Vec<u8>, Offload) {
    let f = spec(A, dst).tcp(TcpSegment::new(40000, 80, TcpFlags::ACK).seq(7), payload);
    offloaded_form(&f, Some(1448)).unwrap()
}

/// The IPv4 packet of an Ethernet frame (untagged), its header checksum checked.
fn ip_of(f: &[u8]) -> ipv4::Packet<&[u8]> {
    assert_eq!(ethernet::Packet::new_checked(f).unwrap().ethertype(), ethertype::IPV4);
    let ip = ipv4::Packet::new_checked(&f[ethernet::HEADER_LEN..]).unwrap();
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    ip
}

/// The TCP payload of a frame, its checksum checked against the pseudo-header.
fn tcp_payload(f: &[u8]) -> Vec<u8> {
    let ip = ip_of(f);
    assert_eq!(ip.protocol(), ip_proto::TCP);
    let t = tcp::Packet::new_checked(ip.payload()).unwrap();
    assert!(t.verify_checksum_ipv4(ip.src_addr(), ip.dst_addr()), "TCP checksum");
    t.payload().to_vec()
}

/// Checks wire frames (complete checksums, at most `14 + mtu` bytes) and returns their TCP payloads joined.
fn wire_payload_mtu(frames: &[(Vec<u8>, Offload)], mtu: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (f, o) in frames {
        assert_eq!(*o, Offload::NONE, "a wire frame carries no metadata");
        assert!(f.len() <= 14 + mtu, "{} bytes", f.len());
        out.extend_from_slice(&tcp_payload(f));
    }
    out
}

/// [`wire_payload_mtu`] for a 1500-byte MTU.
fn wire_payload(frames: &[(Vec<u8>, Offload)]) -> Vec<u8> {
    wire_payload_mtu(frames, 1500)
}

fn testbed() -> Testbed {
    let mut tb = Testbed::new(L2).unwrap();
    tb.set_caps("b", Caps::ALL);
    // B's MAC learned on b.
    tb.send("b", &spec(B, A).udp(1, 2, 10));
    tb.take_all();
    tb
}

#[test]
fn a_known_unicast_super_frame_crosses_l2_whole_to_a_port_that_takes_it() {
    let mut tb = testbed();
    let (frame, o) = super_frame(B, 30_000);
    tb.send_with("a", &frame, o);
    assert_eq!(tb.take_frames("b"), vec![(frame, o)], "one frame, unchanged, metadata kept");
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.free_large_buffers(), 8, "the large buffer came back");
    let c = tb.switch().counters().port(tb.port("a"));
    assert_eq!((c.rx_packets, c.forwarded), (1, 1));
    // Counted as one frame and as the 21 segments a link without offloads would have carried.
    assert_eq!((c.rx_super_frames, c.rx_segments, c.rx_wire()), (1, 30_000u64.div_ceil(1448), 21));
    let b = tb.switch().counters().port(tb.port("b"));
    assert_eq!((b.tx_packets, b.tx_super_frames, b.tx_segments, b.tx_wire()), (1, 1, 21, 21));
    // An ordinary frame counts once in both.
    tb.send("a", &spec(A, B).udp(1, 2, 100));
    let c = tb.switch().counters().port(tb.port("a"));
    assert_eq!((c.rx_packets, c.rx_super_frames, c.rx_wire()), (2, 1, 22));
}

#[test]
fn a_flooded_super_frame_is_copied_whole_and_cut_for_ports_without_tso() {
    let mut tb = testbed();
    let unknown = MacAddr([2, 0, 0, 0, 0, 0xee]);
    let (frame, o) = super_frame(unknown, 20_000);
    tb.send_with("a", &frame, o);
    // b takes it whole; c (no capabilities) gets segments; small (MTU 1400) cannot carry 1448-byte segments.
    assert_eq!(tb.take_frames("b"), vec![(frame, o)]);
    let c = tb.take_frames("c");
    assert_eq!(c.len(), 20_000usize.div_ceil(1448));
    assert_eq!(wire_payload(&c), pattern(20_000), "the segments carry the payload in order");
    assert!(tb.take_frames("small").is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::EgressTooLong), 1, "the copy for the 1400-byte port");
    assert_eq!(tb.free_large_buffers(), 8);
    assert_eq!(tb.free_buffers(), tb.total_buffers());
}

#[test]
fn a_partial_checksum_is_completed_only_for_a_port_without_checksum_offload() {
    let mut tb = testbed();
    let full = spec(A, B).tcp(TcpSegment::new(40000, 80, TcpFlags::ACK), 500);
    let (partial, o) = offloaded_form(&full, None).unwrap();
    tb.send_with("a", &partial, o);
    assert_eq!(tb.take_frames("b"), vec![(partial.clone(), o)], "b takes the partial checksum as it is");
    tb.set_caps("b", Caps::NONE);
    tb.send_with("a", &partial, o);
    assert_eq!(tb.take_frames("b"), vec![(full, Offload::NONE)], "completed for b without checksum offload");
}

#[test]
fn super_frames_are_checked_per_segment_at_ingress() {
    let mut tb = testbed();
    // Segments of 536 bytes are allowed; of 535, not.
    let f = spec(A, B).tcp(TcpSegment::new(40000, 80, TcpFlags::ACK), 5000);
    let (frame, tiny) = offloaded_form(&f, Some(535)).unwrap();
    tb.send_with("a", &frame, tiny);
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::GsoSegmentTooSmall), 1);
    let (frame, ok) = offloaded_form(&f, Some(536)).unwrap();
    tb.send_with("a", &frame, ok);
    assert_eq!(tb.take_frames("b").len(), 1);
    // A segment longer than the ingress port's MTU: the 1400-byte port's sender cannot have sent it.
    let (frame, o) = super_frame(B, 5000);
    tb.send_with("small", &frame, o);
    assert_eq!(tb.switch().counters().drops(DropReason::TooLong), 1);
    assert_eq!(o.gso_kind(), GsoKind::Tcp4);
}

const ROUTED: &str = r#"
[[network]]
name = "red"
subnet = "10.0.1.0/24"
gateway = "10.0.1.1"
masquerade = true

[[port]]
name = "r1"
kind = "mem"
network = "red"

[[port]]
name = "up"
kind = "mem"
address = "203.0.113.2/24"

[[port]]
name = "thin"
kind = "mem"
address = "198.51.100.2/24"
mtu = 1400

[[route]]
prefix = "0.0.0.0/0"
via = "203.0.113.1"
"#;

const RED_HOST: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 1, 10]), Ipv4Addr::new(10, 0, 1, 10));
const UPSTREAM: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 9, 1]), Ipv4Addr::new(203, 0, 113, 1));
const NEAR: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 8, 7]), Ipv4Addr::new(198, 51, 100, 7));
/// Reached through the upstream router.
const FAR: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 7);

fn rif_mac(tb: &Testbed, name: &str) -> MacAddr {
    tb.switch().topology().rifs.iter().find(|r| r.name == name).expect("interface exists").mac
}

/// The routed testbed with the upstream router and the near host resolved.
fn routed() -> Testbed {
    let mut tb = Testbed::new(ROUTED).unwrap();
    for (port, (mac, ip), ours) in [("up", UPSTREAM, [203, 0, 113, 2]), ("thin", NEAR, [198, 51, 100, 2])] {
        let dst = if port == "up" { FAR } else { ip };
        tb.send("r1", &from_red(&tb, dst, Ipv4Opts::default()).udp(5000, 53, 10));
        let rif = format!("port:{port}");
        tb.send(port, &arp_reply(mac, ip, rif_mac(&tb, &rif), Ipv4Addr::from(ours)));
        tb.take_all();
    }
    tb
}

fn from_red(tb: &Testbed, dst: Ipv4Addr, opts: Ipv4Opts) -> Ipv4Spec {
    Ipv4Spec::new(RED_HOST.0, rif_mac(tb, "network:red"), RED_HOST.1, dst).with_opts(opts)
}

/// A DF TCP super-frame of `payload` bytes from the red host to `dst`, segment size `mss`.
fn routed_super_frame(tb: &Testbed, dst: Ipv4Addr, payload: usize, mss: u16) -> (Vec<u8>, Offload) {
    let df = Ipv4Opts { df: true, ..Ipv4Opts::default() };
    let f = from_red(tb, dst, df).tcp(TcpSegment::new(40000, 80, TcpFlags::ACK).seq(7), payload);
    offloaded_form(&f, Some(mss)).unwrap()
}

#[test]
fn a_routed_super_frame_is_masqueraded_whole_with_its_partial_checksum_moved_by_the_address_change() {
    let mut tb = routed();
    tb.set_caps("up", Caps::ALL);
    let (frame, o) = routed_super_frame(&tb, FAR, 30_000, 1448);
    tb.send_with("r1", &frame, o);
    let out = tb.take_frames("up");
    assert_eq!(out.len(), 1, "one super-frame out");
    let (mut f, fo) = out.into_iter().next().unwrap();
    assert_eq!(fo, o, "carried whole, same segment size and checksum offsets");
    assert_eq!(f.len(), frame.len());
    let ip = ip_of(&f);
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.ttl()), (Ipv4Addr::new(203, 0, 113, 2), FAR, 63));
    let (start, offset) = fo.partial_csum().unwrap();
    assert!(complete_checksum(&mut f, start.into(), offset.into()));
    assert_eq!(tcp_payload(&f), pattern(30_000), "completed, the checksum is right for the new source");
    assert_eq!(tb.free_large_buffers(), 8);

    // To a port that takes no offloads: wire segments, each with the translated address and right checksums.
    tb.set_caps("up", Caps::NONE);
    tb.send_with("r1", &frame, o);
    let segs = tb.take_frames("up");
    assert_eq!(segs.len(), 30_000usize.div_ceil(1448));
    for (s, _) in &segs {
        assert_eq!((ip_of(s).src_addr(), ip_of(s).ttl()), (Ipv4Addr::new(203, 0, 113, 2), 63));
    }
    assert_eq!(wire_payload(&segs), pattern(30_000));
    assert_eq!(tb.switch().router().stats().forwarded, 2 + 2, "two resolving packets, two super-frames");
}

#[test]
fn a_super_frame_whose_segments_exceed_the_egress_mtu_gets_frag_needed_not_its_total_length() {
    let mut tb = routed();
    let red_gw = rif_mac(&tb, "network:red");
    // 20 + 20 + 1448 = 1488 bytes per segment: too long for the 1400-byte egress.
    let (frame, o) = routed_super_frame(&tb, NEAR.1, 20_000, 1448);
    tb.send_with("r1", &frame, o);
    assert!(tb.take_frames("thin").is_empty());
    let back = tb.take_frames("r1");
    assert_eq!(back.len(), 1, "an ICMP error back to the sender");
    let (err, eo) = &back[0];
    assert_eq!(*eo, Offload::NONE);
    assert_eq!(ethernet::Packet::new_checked(&err[..]).unwrap().src_addr(), red_gw);
    let ip = ip_of(err);
    assert_eq!((ip.protocol(), ip.dst_addr()), (ip_proto::ICMP, RED_HOST.1));
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.msg_type(), icmp.code()), (msg_type::DEST_UNREACHABLE, unreachable::FRAG_NEEDED));
    assert_eq!(icmp.next_hop_mtu(), 1400);
    assert_eq!(tb.switch().counters().drops(DropReason::NeedsFragmentation), 1);

    // 20 + 20 + 1360 = 1400: fits, although the super-frame is 20,000 bytes long. Cut for the port (no TSO).
    let (frame, o) = routed_super_frame(&tb, NEAR.1, 20_000, 1360);
    tb.send_with("r1", &frame, o);
    let segs = tb.take_frames("thin");
    assert_eq!(segs.len(), 20_000usize.div_ceil(1360));
    assert_eq!(wire_payload_mtu(&segs, 1400), pattern(20_000));
    assert!(tb.take_frames("r1").is_empty());

    // An ordinary DF frame longer than the MTU: Frag Needed as before.
    let df = Ipv4Opts { df: true, ..Ipv4Opts::default() };
    let big = from_red(&tb, NEAR.1, df).tcp(TcpSegment::new(40000, 80, TcpFlags::ACK), 1400);
    tb.send("r1", &big);
    assert!(tb.take_frames("thin").is_empty());
    assert_eq!(tb.take_frames("r1").len(), 1);
    assert_eq!(tb.switch().counters().drops(DropReason::NeedsFragmentation), 2);
}

#[test]
fn a_partial_checksum_that_does_not_point_at_the_transport_checksum_is_dropped_at_ingress() {
    let mut tb = routed();
    let f = from_red(&tb, FAR, Ipv4Opts::default()).tcp(TcpSegment::new(40000, 80, TcpFlags::ACK), 100);
    let (partial, _) = offloaded_form(&f, None).unwrap();
    // Offsets into the payload: NAT could neither update nor complete such a checksum correctly.
    tb.send_with("r1", &partial, Offload::partial(60, 16));
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::OffloadMismatch), 1);
}

/// A network whose port "edge" clamps the MSS of TCP SYNs crossing it (in both directions) to 1360, next to a
/// port without a clamp.
const CLAMP: &str = r#"
[[network]]
name = "lan"

[[port]]
name = "a"
kind = "mem"
network = "lan"

[[port]]
name = "edge"
kind = "mem"
network = "lan"
mss_clamp = 1360
"#;

/// A SYN with Linux's options (MSS 1460 first).
fn syn(src: MacAddr, dst: MacAddr, flags: TcpFlags) -> Vec<u8> {
    use dataplane::wire::builder::TcpOption;
    const OPTS: &[TcpOption] = &[
        TcpOption::MaximumSegmentSize(1460),
        TcpOption::SelectiveAcknowledgementPermitted,
        TcpOption::Timestamp(1, 0),
        TcpOption::Noop,
        TcpOption::WindowScale(7),
    ];
    spec(src, dst).tcp(TcpSegment::new(40000, 80, flags).options(OPTS), 0)
}

/// The MSS option of a TCP frame (its checksum checked).
fn mss_of(f: &[u8]) -> Option<u16> {
    tcp_payload(f);
    tcp::Packet::new_checked(ip_of(f).payload()).unwrap().mss_option()
}

#[test]
fn mss_clamp_lowers_syns_leaving_and_entering_through_the_port_only() {
    let mut tb = Testbed::new(CLAMP).unwrap();
    // Leaving through edge (flooded: the MAC is unknown): lowered; a port without a clamp gets none.
    tb.send("a", &syn(A, B, TcpFlags::SYN));
    let out = tb.take("edge");
    assert_eq!(out.iter().map(|f| mss_of(f)).collect::<Vec<_>>(), vec![Some(1360)]);
    // Entering through edge: the SYN-ACK is lowered before it is switched to a.
    tb.send("edge", &syn(B, A, TcpFlags::SYN | TcpFlags::ACK));
    assert_eq!(tb.take("a").iter().map(|f| mss_of(f)).collect::<Vec<_>>(), vec![Some(1360)]);
    // Not a SYN: untouched; a SYN between ports without a clamp: untouched.
    let ack = spec(A, B).tcp(TcpSegment::new(40000, 80, TcpFlags::ACK), 100);
    tb.send("a", &ack);
    assert_eq!(tb.take("edge"), vec![ack]);
    let counters = tb.switch().counters();
    assert_eq!(counters.port(tb.port("edge")).mss_clamped, 2, "one leaving, one entering");
    assert_eq!(counters.port(tb.port("a")).mss_clamped, 0);
}

#[test]
fn mss_clamp_pmtu_follows_the_port_mtu_and_keeps_a_partial_checksum_partial() {
    let mut tb = Testbed::new(&CLAMP.replace("mss_clamp = 1360", "mtu = 1400\nmss_clamp = \"pmtu\"")).unwrap();
    tb.set_caps("edge", Caps::ALL);
    let (partial, o) = offloaded_form(&syn(A, B, TcpFlags::SYN), None).unwrap();
    tb.send_with("a", &partial, o);
    let mut out = tb.take_frames("edge");
    assert_eq!(out.len(), 1);
    let (mut f, got) = out.pop().unwrap();
    assert_eq!(got, o, "still partial: the port completes nothing");
    let (start, offset) = o.partial_csum().unwrap();
    assert!(complete_checksum(&mut f, usize::from(start), usize::from(offset)));
    assert_eq!(mss_of(&f), Some(1360), "1400 - 40, and the checksum right once completed");
}

#[test]
fn jumbo_frames_cross_ports_with_a_9000_byte_mtu_and_not_others() {
    let cfg = r#"
[[network]]
name = "lan"

[[port]]
name = "a"
kind = "mem"
network = "lan"
mtu = 9000

[[port]]
name = "b"
kind = "mem"
network = "lan"
mtu = 9000

[[port]]
name = "std"
kind = "mem"
network = "lan"
"#;
    let mut tb = Testbed::new(cfg).unwrap();
    let jumbo = spec(A, B).udp(1, 2, 9000 - 28);
    assert_eq!(jumbo.len(), 9014);
    tb.send("a", &jumbo);
    assert_eq!(tb.take("b"), vec![jumbo.clone()], "a 9000-byte IP packet crosses whole");
    assert!(tb.take("std").is_empty(), "too long for a 1500-byte port");
    assert_eq!(tb.switch().counters().drops(DropReason::EgressTooLong), 1);
    // One byte more is too long at ingress.
    tb.send("a", &spec(A, B).udp(1, 2, 9001 - 28));
    assert!(tb.take_all().is_empty());
    assert_eq!(tb.switch().counters().drops(DropReason::TooLong), 1);
    assert_eq!(tb.free_buffers(), tb.total_buffers());
    assert_eq!(tb.free_large_buffers(), 8);
}
