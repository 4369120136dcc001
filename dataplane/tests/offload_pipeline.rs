//! Super-frames and partial checksums through the pipeline, on memory ports (no privileges): each port hands
//! frames over with offload metadata, as the tap and AF_PACKET ports do, and sends what its capabilities allow
//! (`MemPort::set_caps`). What a port without the capability sends is checked as wire frames.

use dataplane::counters::DropReason;
use dataplane::offload::{offloaded_form, Caps, GsoKind, Offload};
use dataplane::testbed::Testbed;
use dataplane::wire::builder::{pattern, Ipv4Spec, TcpFlags, TcpSegment};
use dataplane::wire::checksum;
use dataplane::wire::MacAddr;
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

/// Checks wire frames (complete checksums, at most 1514 bytes) and returns their TCP payloads joined.
fn wire_payload(frames: &[(Vec<u8>, Offload)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (f, o) in frames {
        assert_eq!(*o, Offload::NONE, "a wire frame carries no metadata");
        assert!(f.len() <= 1514, "{} bytes", f.len());
        assert!(checksum::verify(&f[14..34]), "IPv4 header checksum");
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((f.len() - 34) as u16).to_be_bytes());
        pseudo.extend_from_slice(&f[34..]);
        assert!(checksum::verify(&pseudo), "TCP checksum");
        out.extend_from_slice(&f[54..]);
    }
    out
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
