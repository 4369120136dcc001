//! [`SoftOffload`]: the work a port's link cannot do, done in software at transmit — completing partial
//! checksums and cutting super-frames into wire-sized segments — for frames whose [`Offload`] metadata asks for
//! more than the port's [`Caps`].
//!
//! # When it runs
//! Only at transmit, and only for a frame the egress port cannot take as is ([`Caps::needs_software`]): a tap
//! opened without offloads, an AF_XDP socket (no GSO on that path), a capture. Ports that can take a frame's
//! metadata (a tap with `IFF_VNET_HDR`, an AF_PACKET socket) hand it to the kernel with a `virtio_net_hdr`, and
//! the kernel segments or completes later only if the final device needs it. So a super-frame is carried whole
//! from the port that received it to the port that sends it, and cut at most once, at the end. (The receive
//! side cuts only when a port has no large buffer to hold a super-frame: `crate::buffer`.)
//!
//! # What it produces
//! - A partial checksum is completed in place ([`gso::complete_checksum`], as the kernel's `skb_checksum_help`);
//!   the frame is then emitted as an ordinary frame.
//! - A super-frame is planned ([`SuperFrame::plan`]) and each segment written into the scratch buffer and
//!   emitted before the next is written (segment `i` depends only on the plan and its own payload), with every
//!   checksum computed in full. A super-frame that cannot be planned is dropped whole, never sent in part.
//!
//! What a capture shows: a pcap port has no capabilities, so it writes exactly the frames a link without
//! offloads would carry (complete checksums, segments), and replaying that capture is deterministic.
//!
//! Threads: one per port queue (it owns a scratch buffer); used by the worker that transmits on that queue.

use super::gso::{self, GsoError, SuperFrame, VnetHdr, MAX_HEADERS};
use crate::buffer::{Frame, MAX_LARGE_FRAME_LEN};
use crate::offload::{Caps, Offload};
use serde::{Deserialize, Serialize};

/// What software offloads did on one port's transmit side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftStats {
    /// Partial checksums completed in software.
    pub csum_completed: u64,
    /// Partial checksums left as they were (not TCP/UDP: SCTP's is a CRC32c).
    pub csum_unsupported: u64,
    /// Super-frames cut into segments in software.
    pub gso_segmented: u64,
    /// Segments made from them.
    pub gso_segments: u64,
    /// Super-frames dropped because they could not be cut (malformed headers).
    pub gso_dropped: u64,
}

/// Software checksum completion and segmentation for one port queue: a scratch buffer and counters.
#[derive(Debug)]
pub struct SoftOffload {
    scratch: Box<[u8]>,
    stats: SoftStats,
}

impl Default for SoftOffload {
    fn default() -> Self {
        SoftOffload::new()
    }
}

/// What became of one frame given to [`SoftOffload::emit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emitted {
    /// Every wire frame was emitted and accepted (`n` of them).
    All(usize),
    /// `sent` wire frames were accepted before `emit` refused one; the rest (`left`, the refused one included)
    /// were not sent.
    Stopped {
        /// Wire frames accepted.
        sent: usize,
        /// Wire frames not sent.
        left: usize,
    },
    /// The super-frame could not be segmented and was not sent at all.
    Malformed(GsoError),
}

/// The `virtio_net_hdr` [`SuperFrame::plan`] takes, from a frame's checked metadata.
pub fn vnet_of(o: &Offload) -> VnetHdr {
    let (flags, gso_type, gso_size, csum_start, csum_offset) = o.raw();
    VnetHdr { flags, gso_type, hdr_len: 0, gso_size, csum_start, csum_offset }
}

impl SoftOffload {
    /// A scratch buffer for the longest segment any port can send.
    pub fn new() -> Self {
        SoftOffload { scratch: vec![0u8; MAX_LARGE_FRAME_LEN].into_boxed_slice(), stats: SoftStats::default() }
    }

    /// The counters.
    pub fn stats(&self) -> SoftStats {
        self.stats
    }

    /// Calls `emit(bytes, offload)` for each wire frame `frame` becomes on a port with `caps`, in order: the
    /// frame itself with its metadata when the port takes it, otherwise the frame completed in place, or its
    /// segments one after the other (each with [`Offload::NONE`]). `emit` returns false to refuse a frame (a full
    /// queue): the rest are then not emitted.
    pub fn emit(&mut self, frame: &mut Frame, caps: Caps, mut emit: impl FnMut(&[u8], Offload) -> bool) -> Emitted {
        let o = frame.offload;
        if !caps.needs_software(&o) {
            return if emit(frame.data(), o) { Emitted::All(1) } else { Emitted::Stopped { sent: 0, left: 1 } };
        }
        if !o.is_gso() {
            if let Some((start, offset)) = o.partial_csum() {
                if gso::complete_checksum(frame.data_mut(), usize::from(start), usize::from(offset)) {
                    self.stats.csum_completed += 1;
                } else {
                    self.stats.csum_unsupported += 1;
                }
            }
            frame.offload = Offload::NONE;
            return if emit(frame.data(), Offload::NONE) {
                Emitted::All(1)
            } else {
                Emitted::Stopped { sent: 0, left: 1 }
            };
        }
        let data = frame.data();
        let head = &data[..data.len().min(MAX_HEADERS)];
        let plan = match SuperFrame::plan(head, data.len(), &vnet_of(&o), self.scratch.len()) {
            Ok(plan) => plan,
            Err(e) => {
                self.stats.gso_dropped += 1;
                return Emitted::Malformed(e);
            }
        };
        let segments = plan.segments();
        self.stats.gso_segmented += 1;
        for i in 0..segments {
            let (from, to) = plan.segment_range(i);
            let payload = &data[plan.hdr_len + from..plan.hdr_len + to];
            let n = plan.write_segment(head, i, payload, &mut self.scratch);
            self.stats.gso_segments += 1;
            if !emit(&self.scratch[..n], Offload::NONE) {
                return Emitted::Stopped { sent: i, left: segments - i };
            }
        }
        Emitted::All(segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::BufPool;
    use crate::offload::GsoKind;
    use crate::wire::builder::{pattern, Ipv4Spec, TcpFlags, TcpSegment};
    use crate::wire::checksum;
    use crate::wire::{ethernet, ip_proto, ipv4, tcp, MacAddr};
    use std::net::Ipv4Addr;

    fn spec() -> Ipv4Spec {
        Ipv4Spec::new(
            MacAddr([2, 0, 0, 0, 0, 1]),
            MacAddr([2, 0, 0, 0, 0, 2]),
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
        )
    }

    /// Replaces a TCP/IPv4 frame's checksum by the pseudo-header sum, as a sender with checksum offload leaves it.
    fn make_partial(f: &mut Vec<u8>) {
        *f = crate::offload::offloaded_form(f, None).expect("a TCP frame").0;
    }

    fn frame(pool: &mut BufPool, bytes: &[u8], o: Offload) -> Frame {
        let mut f = pool.alloc_for(bytes.len()).unwrap();
        f.load(bytes).unwrap();
        f.offload = o;
        f
    }

    #[test]
    fn frames_the_port_takes_pass_untouched_with_their_metadata() {
        let mut pool = BufPool::with_large(4, 2);
        let mut soft = SoftOffload::new();
        let mut sup = spec().tcp(TcpSegment::new(1, 2, TcpFlags::ACK), 20_000);
        make_partial(&mut sup);
        let o = Offload::gso(GsoKind::Tcp4, 1448, false, 34);
        let mut f = frame(&mut pool, &sup, o);
        let mut got = Vec::new();
        assert_eq!(
            soft.emit(&mut f, Caps::ALL, |b, o| {
                got.push((b.to_vec(), o));
                true
            }),
            Emitted::All(1)
        );
        assert_eq!(got, vec![(sup, o)]);
        assert_eq!(soft.stats(), SoftStats::default());
    }

    #[test]
    fn partial_checksums_are_completed_for_ports_without_checksum_offload() {
        let mut pool = BufPool::new(4);
        let mut soft = SoftOffload::new();
        let good = spec().tcp(TcpSegment::new(1, 2, TcpFlags::ACK), 100);
        let mut partial = good.clone();
        make_partial(&mut partial);
        assert_ne!(partial, good);
        let mut f = frame(&mut pool, &partial, Offload::partial(34, 16));
        let mut got = Vec::new();
        assert_eq!(
            soft.emit(&mut f, Caps::NONE, |b, o| {
                got.push((b.to_vec(), o));
                true
            }),
            Emitted::All(1)
        );
        assert_eq!(got, vec![(good, Offload::NONE)]);
        assert_eq!(soft.stats().csum_completed, 1);
        // A port with checksum offload takes the partial checksum as it is.
        let mut f = frame(&mut pool, &partial, Offload::partial(34, 16));
        let csum_only = Caps { csum: true, ..Caps::NONE };
        assert_eq!(soft.emit(&mut f, csum_only, |b, _| b == partial), Emitted::All(1));
    }

    #[test]
    fn super_frames_are_cut_for_ports_without_tso_and_a_refusal_stops_the_rest() {
        let mut pool = BufPool::with_large(4, 4);
        let mut soft = SoftOffload::new();
        let mut sup = spec().tcp(TcpSegment::new(1, 2, TcpFlags::ACK).seq(1000), 10_000);
        make_partial(&mut sup);
        let o = Offload::gso(GsoKind::Tcp4, 1448, false, 34);
        let mut f = frame(&mut pool, &sup, o);
        let mut segs = Vec::new();
        let csum_only = Caps { csum: true, ..Caps::NONE };
        assert_eq!(
            soft.emit(&mut f, csum_only, |b, o| {
                segs.push((b.to_vec(), o));
                true
            }),
            Emitted::All(7)
        );
        let mut payload = Vec::new();
        for (i, (s, o)) in segs.iter().enumerate() {
            assert_eq!(*o, Offload::NONE);
            assert!(s.len() <= 1514);
            let eth = ethernet::Packet::new_checked(&s[..]).unwrap();
            let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
            assert!(ip.verify_checksum(), "IPv4 header checksum of segment {i}");
            let seg = ip.payload();
            let pseudo = checksum::pseudo_ipv4(ip.src_addr(), ip.dst_addr(), ip_proto::TCP, seg.len() as u16);
            assert_eq!(checksum::add(pseudo, checksum::sum(seg)), 0xffff, "TCP checksum of segment {i}");
            let t = tcp::Packet::new_checked(seg).unwrap();
            assert_eq!(t.seq_number(), 1000 + (i * 1448) as u32);
            payload.extend_from_slice(t.payload());
        }
        assert_eq!(payload, pattern(10_000));
        assert_eq!((soft.stats().gso_segmented, soft.stats().gso_segments), (1, 7));

        let mut f = frame(&mut pool, &sup, o);
        let mut n = 0;
        assert_eq!(
            soft.emit(&mut f, Caps::NONE, |_, _| {
                n += 1;
                n <= 3
            }),
            Emitted::Stopped { sent: 3, left: 4 }
        );

        // Headers that disagree with the metadata: dropped whole.
        let mut f = frame(&mut pool, &sup, Offload::gso(GsoKind::Tcp6, 1448, false, 34));
        let mut called = false;
        assert!(matches!(
            soft.emit(&mut f, Caps::NONE, |_, _| {
                called = true;
                true
            }),
            Emitted::Malformed(_)
        ));
        assert!(!called);
        assert_eq!(soft.stats().gso_dropped, 1);
    }
}
