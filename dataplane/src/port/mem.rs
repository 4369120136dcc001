//! [`MemPort`]: an in-memory port for tests and benchmarks.
//!
//! Receive side: either a queue of frames injected by the test ([`MemPort::inject`]), or a fixed set of frames
//! replayed round-robin forever ([`MemPort::cycle`]), which is what benchmarks use: it copies a template into a
//! pool buffer per frame, like a NIC DMA, and allocates nothing; the templates lie back to back in one
//! allocation, as a receive ring's buffers would. Transmit side: either keep copies of what was
//! sent ([`TxMode::Capture`], tests) or only count ([`TxMode::Count`], benchmarks).
//!
//! Offloads: injected frames may carry [`Offload`] metadata ([`MemPort::inject_with`]; a long one goes into a
//! large buffer). In capture mode the port keeps what a port with its [`MemPort::set_caps`] capabilities
//! (none by default) would put on the wire: frames with metadata it cannot take are completed or segmented in
//! software first ([`super::soft_offload`]), so tests see wire frames, or super-frames with their metadata
//! ([`MemPort::take_sent_frames`]) when the capabilities allow them. Count mode counts frames as given.

use super::soft_offload::SoftOffload;
use super::{Port, PortError, PortStats};
use crate::batch::Batch;
use crate::buffer::{BufPool, Frame, MAX_FRAME_LEN};
use crate::ids::Nanos;
use crate::offload::{Caps, Offload};
use std::collections::VecDeque;

/// What a [`MemPort`] does with transmitted frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxMode {
    /// Keep a copy of every frame, for [`MemPort::take_sent`].
    Capture,
    /// Count and free.
    Count,
    /// Free, counting each frame as dropped (`tx_dropped`): the stand-in of a port that is down.
    Discard,
}

#[derive(Debug)]
enum RxSource {
    Queue(VecDeque<(Vec<u8>, Offload)>),
    /// The frames back to back in one allocation, each at a multiple of [`CYCLE_SLOT_ALIGN`] (like the
    /// descriptors of a NIC's receive ring: consecutive frames are consecutive memory, which the CPU streams).
    Cycle {
        bytes: Vec<u8>,
        spans: Vec<(usize, usize)>,
        next: usize,
    },
}

/// Where each cycled frame starts: a cache-line multiple.
const CYCLE_SLOT_ALIGN: usize = 64;

/// An in-memory port.
#[derive(Debug)]
pub struct MemPort {
    name: String,
    rx: RxSource,
    tx_mode: TxMode,
    sent: Vec<(Vec<u8>, Offload)>,
    stats: PortStats,
    caps: Caps,
    /// Made on the first frame that needs it (most memory ports never do).
    soft: Option<Box<SoftOffload>>,
}

impl MemPort {
    /// A port with an empty receive queue that captures what it sends.
    pub fn new(name: impl Into<String>) -> Self {
        MemPort {
            name: name.into(),
            rx: RxSource::Queue(VecDeque::new()),
            tx_mode: TxMode::Capture,
            sent: Vec::new(),
            stats: PortStats::default(),
            caps: Caps::NONE,
            soft: None,
        }
    }

    /// A port that receives `frames` round-robin, forever, and only counts what it sends.
    pub fn cycle(name: impl Into<String>, frames: Vec<Vec<u8>>) -> Self {
        assert!(!frames.is_empty(), "a cycling port needs at least one frame");
        let mut bytes = Vec::new();
        let mut spans = Vec::with_capacity(frames.len());
        for f in &frames {
            bytes.resize(bytes.len().next_multiple_of(CYCLE_SLOT_ALIGN), 0);
            spans.push((bytes.len(), f.len()));
            bytes.extend_from_slice(f);
        }
        MemPort { rx: RxSource::Cycle { bytes, spans, next: 0 }, tx_mode: TxMode::Count, ..MemPort::new(name) }
    }

    /// Sets what happens to transmitted frames.
    pub fn set_tx_mode(&mut self, mode: TxMode) {
        self.tx_mode = mode;
    }

    /// Queues a frame for receive (queue ports only; a cycling port ignores it).
    pub fn inject(&mut self, frame: &[u8]) {
        self.inject_with(frame, Offload::NONE);
    }

    /// Queues a frame with offload metadata for receive (as a port that read it from a host stack would hand
    /// it over; the caller vouches that the metadata matches the frame).
    pub fn inject_with(&mut self, frame: &[u8], offload: Offload) {
        if let RxSource::Queue(q) = &mut self.rx {
            q.push_back((frame.to_vec(), offload));
        }
    }

    /// Sets what the port can send as is (see the module documentation).
    pub fn set_caps(&mut self, caps: Caps) {
        self.caps = caps;
    }

    /// Frames waiting to be received.
    pub fn pending(&self) -> usize {
        match &self.rx {
            RxSource::Queue(q) => q.len(),
            RxSource::Cycle { .. } => usize::MAX,
        }
    }

    /// Takes the frames sent so far (in [`TxMode::Capture`]).
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.sent).into_iter().map(|(f, _)| f).collect()
    }

    /// Takes the frames sent so far with the offload metadata they were sent with (in [`TxMode::Capture`]).
    pub fn take_sent_frames(&mut self) -> Vec<(Vec<u8>, Offload)> {
        std::mem::take(&mut self.sent)
    }
}

/// One burst's receive counts, added to the port's statistics once at its end.
#[derive(Default)]
struct RxSums {
    packets: usize,
    bytes: u64,
    super_frames: u64,
    dropped: u64,
}

/// Copies `bytes` into a pool buffer and adds it to `batch` (counted in `sums`; a frame too long for any buffer is
/// dropped and counted); false when the pool has no buffer left. A function rather than a closure so that both
/// sources' loops inline it: as a closure called from two places it stayed out of line (about 20 instructions of
/// call and register saves per frame, callgrind).
#[inline(always)]
fn take(sums: &mut RxSums, now: Nanos, bytes: &[u8], offload: Offload, pool: &mut BufPool, batch: &mut Batch) -> bool {
    let frame = if bytes.len() <= MAX_FRAME_LEN { pool.alloc() } else { pool.alloc_large().or_else(|| pool.alloc()) };
    let Some(mut frame) = frame else { return false };
    let ok = frame.load(bytes).is_ok();
    frame.offload = offload;
    if !ok {
        sums.dropped += 1;
        pool.free(frame);
        return true;
    }
    frame.ts = now;
    sums.bytes += bytes.len() as u64;
    sums.super_frames += u64::from(offload.is_gso());
    // Cannot fail: the callers run only while the batch has room.
    let _ = batch.push(frame);
    sums.packets += 1;
    true
}

impl Port for MemPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, now: Nanos, pool: &mut BufPool, batch: &mut Batch) -> Result<usize, PortError> {
        // The counters are summed in locals and added once per burst, and the source's kind is matched once: this
        // port feeds the criterion benches, whose per-frame figure includes it.
        let mut sums = RxSums::default();
        match &mut self.rx {
            RxSource::Queue(q) => {
                while batch.room() > 0 {
                    let Some((b, o)) = q.front() else { break };
                    if !take(&mut sums, now, b, *o, pool, batch) {
                        break;
                    }
                    q.pop_front();
                }
            }
            RxSource::Cycle { bytes, spans, next } => {
                while batch.room() > 0 {
                    let (at, len) = spans[*next];
                    if !take(&mut sums, now, &bytes[at..at + len], Offload::NONE, pool, batch) {
                        break;
                    }
                    *next += 1;
                    if *next == spans.len() {
                        *next = 0;
                    }
                }
            }
        }
        self.stats.rx_packets += sums.packets as u64;
        self.stats.rx_bytes += sums.bytes;
        self.stats.rx_super_frames += sums.super_frames;
        self.stats.rx_dropped += sums.dropped;
        Ok(sums.packets)
    }

    fn tx_burst(&mut self, pool: &mut BufPool, frames: &mut Vec<Frame>) -> Result<(), PortError> {
        if self.tx_mode == TxMode::Discard {
            self.stats.tx_dropped += frames.len() as u64;
            for frame in frames.drain(..) {
                pool.free(frame);
            }
            return Ok(());
        }
        // Counted in locals, added once per burst (as in `rx_burst`).
        let (mut tx_packets, mut tx_bytes, mut super_frames) = (0u64, 0u64, 0u64);
        for mut frame in frames.drain(..) {
            if self.tx_mode == TxMode::Count || !self.caps.needs_software(&frame.offload) {
                tx_packets += 1;
                tx_bytes += frame.len() as u64;
                super_frames += u64::from(frame.offload.is_gso());
                if self.tx_mode == TxMode::Capture {
                    self.sent.push((frame.data().to_vec(), frame.offload));
                }
            } else {
                let soft = self.soft.get_or_insert_with(|| Box::new(SoftOffload::new()));
                let (sent, stats) = (&mut self.sent, &mut self.stats);
                if let super::soft_offload::Emitted::Malformed(_) = soft.emit(&mut frame, self.caps, |b, o| {
                    stats.tx_packets += 1;
                    stats.tx_bytes += b.len() as u64;
                    sent.push((b.to_vec(), o));
                    true
                }) {
                    stats.tx_dropped += 1;
                }
            }
            pool.free(frame);
        }
        self.stats.tx_packets += tx_packets;
        self.stats.tx_bytes += tx_bytes;
        self.stats.tx_super_frames += super_frames;
        Ok(())
    }

    fn stats(&self) -> PortStats {
        let soft = self.soft.as_ref().map(|s| s.stats()).unwrap_or_default();
        PortStats { sw_segmented: soft.gso_segmented, sw_csum: soft.csum_completed, ..self.stats }
    }

    fn caps(&self) -> Caps {
        self.caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_receive_send_capture() {
        let mut pool = BufPool::new(8);
        let mut p = MemPort::new("a");
        p.inject(&[1; 60]);
        p.inject(&[2; 60]);
        let mut batch = Batch::new();
        assert_eq!(p.rx_burst(5, &mut pool, &mut batch).unwrap(), 2);
        let mut out: Vec<Frame> = batch.drain().collect();
        assert_eq!(out[0].ts, 5);
        p.tx_burst(&mut pool, &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(p.take_sent(), vec![vec![1; 60], vec![2; 60]]);
        assert_eq!(pool.available(), 8, "every buffer came back");
        assert_eq!(p.stats().rx_packets, 2);
        assert_eq!(p.stats().tx_bytes, 120);
    }

    #[test]
    fn cycle_fills_whole_batches_and_stops_when_pool_is_empty() {
        let mut pool = BufPool::new(40);
        let mut p = MemPort::cycle("gen", vec![vec![7; 64], vec![8; 64]]);
        let mut batch = Batch::new();
        assert_eq!(p.rx_burst(0, &mut pool, &mut batch).unwrap(), 32);
        let mut second = Batch::new();
        assert_eq!(p.rx_burst(0, &mut pool, &mut second).unwrap(), 8, "pool had 8 buffers left");
        assert_eq!(batch.iter().nth(1).unwrap().data()[0], 8);
    }
}
