//! The ports `vswitch-bench pipeline` runs the real workers with: [`BenchPort`], a memory port that generates
//! timestamped frames (flat out or paced to a schedule) and records, for every frame it is given to send, how
//! long after its timestamp it got there.
//!
//! # Clocks
//! One clock, [`Control::now`]: nanoseconds since the benchmark's epoch (`Instant`, i.e. `CLOCK_MONOTONIC` via
//! the vDSO). It is read once per receive burst by a generating port and once per transmit burst by every port;
//! never per frame. A generated frame carries a timestamp in the first 8 bytes of its UDP payload (followed by
//! a 16-bit word that keeps the UDP checksum valid):
//! - flat out: the time of the receive burst that produced it;
//! - paced: its *scheduled* arrival time, `start + k / rate` for the k-th frame, even when the worker polls
//!   late. Latency is therefore measured open-loop, as a tester attached to a NIC would: a frame that waited in
//!   the "ring" (the backlog of frames due but not yet received) carries that wait in its latency, and a
//!   backlog beyond [`Control::ring`] frames is dropped and counted (`rx_dropped`), as a full receive ring drops.
//!
//! A frame's latency is the transmit burst's clock reading minus its timestamp: rx copy, the whole pipeline,
//! the worker's flush; all frames of one transmit burst share the reading. Frames without a plausible
//! timestamp (none in the benchmark's steady state) are counted in [`BenchPort::unstamped`].
//!
//! Threads: a port is driven by the one worker that owns its queue (receive) or transmits on it; the histogram
//! sits behind a mutex taken once per transmit burst (uncontended), read by the benchmark after the run.

use dataplane::batch::Batch;
use dataplane::buffer::{BufPool, Frame, Nanos};
use dataplane::port::{Port, PortError, PortStats};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where the timestamp sits in a generated frame: the UDP payload of an untagged IPv4 frame without options.
pub const STAMP_AT: usize = 14 + 20 + 8;
/// Bytes a template must have: the timestamp and the checksum-compensation word.
pub const STAMP_LEN: usize = 10;

/// Generators send nothing.
pub const STOPPED: u8 = 0;
/// Generators fill every receive burst.
pub const FLAT_OUT: u8 = 1;
/// Generators release frames on a schedule of `rate` frames per nanosecond per queue.
pub const PACED: u8 = 2;

/// What the benchmark tells its ports (shared by all of them).
#[derive(Debug)]
pub struct Control {
    epoch: Instant,
    state: AtomicU8,
    /// f64 bits: frames per nanosecond, per generating queue.
    rate: AtomicU64,
    /// Origin of the paced schedule (`now` time).
    start: AtomicU64,
    /// Bumped to release windowed generators (after a flush) and restart every schedule.
    generation: AtomicU64,
    record: AtomicBool,
    /// Frames a paced generator may fall behind its schedule before it drops (a receive ring's size).
    pub ring: u64,
}

impl Control {
    /// Stopped generators, nothing recorded; a ring of `ring` frames.
    pub fn new(ring: u64) -> Arc<Control> {
        Arc::new(Control {
            epoch: Instant::now(),
            state: AtomicU8::new(STOPPED),
            rate: AtomicU64::new(0),
            start: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            record: AtomicBool::new(false),
            ring,
        })
    }

    /// Nanoseconds since the epoch, plus one (0 is "no timestamp").
    #[inline]
    pub fn now(&self) -> Nanos {
        self.epoch.elapsed().as_nanos() as Nanos + 1
    }

    /// Stops the generators.
    pub fn stop(&self) {
        self.state.store(STOPPED, Relaxed);
    }

    /// Generators fill every burst.
    pub fn flat_out(&self) {
        self.state.store(FLAT_OUT, Relaxed);
    }

    /// Generators release `pps_per_queue` frames per second each, on a schedule starting now.
    pub fn paced(&self, pps_per_queue: f64) {
        self.rate.store((pps_per_queue / 1e9).to_bits(), Relaxed);
        self.start.store(self.now(), Relaxed);
        self.generation.fetch_add(1, Relaxed);
        self.state.store(PACED, Relaxed);
    }

    /// Releases parked (windowed) generators for another window; a paced schedule restarts now.
    pub fn release(&self) {
        self.start.store(self.now(), Relaxed);
        self.generation.fetch_add(1, Relaxed);
    }

    /// Whether ports record latencies.
    pub fn set_recording(&self, on: bool) {
        self.record.store(on, Relaxed);
    }
}

/// The generating half of a port.
#[derive(Debug)]
struct Generator {
    /// Templates back to back (one allocation, like a receive ring's buffers).
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
    next: usize,
    /// Frames released (or dropped as ring overflow) since the schedule (re)started.
    released: u64,
    generation: u64,
    /// Stop after one pass over the templates until released ([`Control::release`]): every frame opens a new
    /// connection, so the table is flushed between passes.
    windowed: bool,
    parked: Arc<AtomicBool>,
}

/// A latency histogram for nanoseconds from 1 ns to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// A memory port for `vswitch-bench pipeline`: see the module documentation. Aligned like the switch's own
/// ports (`dataplane::worker::CACHE_PAIR`): the workers' queues of one port are boxed one after the other, and
/// each worker writes its queue's counters per burst.
#[derive(Debug)]
#[repr(align(128))]
pub struct BenchPort {
    name: String,
    ctl: Arc<Control>,
    gen: Option<Generator>,
    hist: Arc<Mutex<Histogram<u64>>>,
    unstamped: Arc<AtomicU64>,
    stats: PortStats,
}

impl BenchPort {
    /// A port that only receives what the switch sends it.
    pub fn sink(name: &str, ctl: &Arc<Control>) -> BenchPort {
        BenchPort {
            name: name.to_string(),
            ctl: Arc::clone(ctl),
            gen: None,
            hist: Arc::new(Mutex::new(histogram())),
            unstamped: Arc::default(),
            stats: PortStats::default(),
        }
    }

    /// A port that also generates `templates` round-robin (each at least [`STAMP_AT`] + [`STAMP_LEN`] bytes,
    /// zero there). `windowed`: one pass per [`Control::release`].
    pub fn generator(name: &str, ctl: &Arc<Control>, templates: &[Vec<u8>], windowed: bool) -> BenchPort {
        assert!(!templates.is_empty(), "a generator needs templates");
        // Like a receive ring's memory: in huge pages, so a million templates cost no TLB misses of their own.
        let total: usize = templates.iter().map(|t| t.len().next_multiple_of(64)).sum();
        let mut bytes = dataplane::hugepage::with_capacity(total);
        let mut spans = Vec::with_capacity(templates.len());
        for t in templates {
            assert!(t.len() >= STAMP_AT + STAMP_LEN, "template of {} bytes has no room for a timestamp", t.len());
            bytes.resize(bytes.len().next_multiple_of(64), 0);
            spans.push((bytes.len(), t.len()));
            bytes.extend_from_slice(t);
        }
        let gen = Generator {
            bytes,
            spans,
            next: 0,
            released: 0,
            generation: ctl.generation.load(Relaxed),
            windowed,
            parked: Arc::default(),
        };
        BenchPort { gen: Some(gen), ..BenchPort::sink(name, ctl) }
    }

    /// The latency histogram this port records into.
    pub fn histogram(&self) -> Arc<Mutex<Histogram<u64>>> {
        Arc::clone(&self.hist)
    }

    /// Frames sent through this port without a plausible timestamp.
    pub fn unstamped(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.unstamped)
    }

    /// Set while a windowed generator waits for [`Control::release`] (`None` for a sink).
    pub fn parked(&self) -> Option<Arc<AtomicBool>> {
        self.gen.as_ref().map(|g| Arc::clone(&g.parked))
    }
}

/// Writes `stamp` at [`STAMP_AT`] and a word after it that cancels its contribution to the UDP checksum (the
/// template had zeros there), so the frame stays valid for any stage that checks.
#[inline]
fn write_stamp(d: &mut [u8], stamp: u64) {
    let b = stamp.to_be_bytes();
    let mut sum: u32 = 0;
    for w in b.chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let comp = !(sum as u16);
    d[STAMP_AT..STAMP_AT + 8].copy_from_slice(&b);
    d[STAMP_AT + 8..STAMP_AT + 10].copy_from_slice(&comp.to_be_bytes());
}

/// The timestamp a frame carries, if it has room for one.
#[inline]
pub fn read_stamp(d: &[u8]) -> Option<u64> {
    let b: &[u8; 8] = d.get(STAMP_AT..STAMP_AT + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(*b))
}

impl Port for BenchPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, now: Nanos, pool: &mut BufPool, batch: &mut Batch) -> Result<usize, PortError> {
        let Some(g) = self.gen.as_mut() else { return Ok(0) };
        let state = self.ctl.state.load(Relaxed);
        if state == STOPPED {
            return Ok(0);
        }
        let generation = self.ctl.generation.load(Relaxed);
        if g.generation != generation {
            g.generation = generation;
            g.released = 0;
            if g.windowed {
                g.next = 0;
            }
            g.parked.store(false, Relaxed);
        }
        let window_left = if g.windowed { (g.spans.len() as u64).saturating_sub(g.released) } else { u64::MAX };
        if window_left == 0 {
            g.parked.store(true, Relaxed);
            return Ok(0);
        }
        let t = self.ctl.now();
        let (rate, start) = (f64::from_bits(self.ctl.rate.load(Relaxed)), self.ctl.start.load(Relaxed));
        let mut want = batch.room() as u64;
        if state == PACED {
            let due = (t.saturating_sub(start) as f64 * rate) as u64;
            let mut backlog = due.saturating_sub(g.released);
            if backlog > self.ctl.ring {
                // The ring overflowed: the oldest frames are lost, as a NIC would lose them.
                let skip = (backlog - self.ctl.ring).min(window_left);
                g.released += skip;
                g.next = (g.next + (skip % g.spans.len() as u64) as usize) % g.spans.len();
                self.stats.rx_dropped += skip;
                backlog -= skip;
            }
            want = want.min(backlog);
        }
        let want = want.min(window_left);
        let mut n = 0;
        for _ in 0..want {
            let Some(mut frame) = pool.alloc() else { break };
            let (at, len) = g.spans[g.next];
            let stamp = if state == PACED { start + (g.released as f64 / rate) as u64 } else { t };
            if frame.load(&g.bytes[at..at + len]).is_err() {
                pool.free(frame);
                self.stats.rx_dropped += 1;
            } else {
                write_stamp(frame.data_mut(), stamp);
                frame.ts = now;
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += len as u64;
                // Cannot fail: at most `batch.room()` frames are pushed.
                let _ = batch.push(frame);
                n += 1;
            }
            g.released += 1;
            g.next += 1;
            if g.next == g.spans.len() {
                g.next = 0;
            }
        }
        // The next burst's templates start loading now, as a NIC's DMA would have put them in the cache before
        // the worker reads them: with a million templates the copy otherwise waits on memory for each, a cost
        // of the generator, not of the switch.
        let mut k = g.next;
        for _ in 0..want {
            dataplane::buffer::prefetch(&g.bytes[g.spans[k].0]);
            k = if k + 1 == g.spans.len() { 0 } else { k + 1 };
        }
        Ok(n)
    }

    fn tx_burst(&mut self, pool: &mut BufPool, frames: &mut Vec<Frame>) -> Result<(), PortError> {
        if frames.is_empty() {
            return Ok(());
        }
        if self.ctl.record.load(Relaxed) {
            let t = self.ctl.now();
            let mut hist = self.hist.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for f in frames.iter() {
                match read_stamp(f.data()) {
                    Some(s) if s > 0 && s <= t && t - s < 60_000_000_000 => hist.saturating_record(t - s),
                    _ => {
                        self.unstamped.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        for f in frames.drain(..) {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += f.len() as u64;
            pool.free(f);
        }
        Ok(())
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Vec<u8> {
        crate::udp_frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 1, 2, 60)
    }

    #[test]
    fn a_stamped_frame_keeps_a_valid_udp_checksum() {
        for stamp in [1u64, 0xffff_ffff_ffff_ffff, 0x0123_4567_89ab_cdef, 1_234_567_890_123] {
            let mut f = template();
            write_stamp(&mut f, stamp);
            assert_eq!(read_stamp(&f), Some(stamp));
            let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
            let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(udp))) =
                (p.net, p.transport)
            else {
                panic!("not UDP/IPv4")
            };
            let want = udp.to_header().calc_checksum_ipv4(&ip.header().to_header(), udp.payload()).unwrap();
            assert_eq!(udp.checksum(), want, "stamp {stamp:#x}");
        }
    }

    #[test]
    fn paced_generator_follows_its_schedule_and_drops_beyond_the_ring() {
        let ctl = Control::new(64);
        let mut port = BenchPort::generator("g", &ctl, &[template()], false);
        let mut pool = BufPool::new(256);
        let mut batch = Batch::new();
        assert_eq!(port.rx_burst(0, &mut pool, &mut batch).unwrap(), 0, "stopped");
        // 1 frame per microsecond: after ~2 ms, 2000 are due; the ring holds 64, so ~1936 are dropped.
        ctl.paced(1e6);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let n = port.rx_burst(0, &mut pool, &mut batch).unwrap();
        assert_eq!(n, 32, "a full burst");
        assert!(port.stats().rx_dropped >= 1900, "{:?}", port.stats());
        let stamps: Vec<u64> = batch.iter().map(|f| read_stamp(f.data()).unwrap()).collect();
        assert!(stamps.windows(2).all(|w| w[1] - w[0] == 1000), "scheduled 1 µs apart: {stamps:?}");
        let mut out: Vec<Frame> = batch.drain().collect();
        ctl.set_recording(true);
        let mut sink = BenchPort::sink("s", &ctl);
        sink.tx_burst(&mut pool, &mut out).unwrap();
        let h = sink.histogram();
        let h = h.lock().unwrap();
        assert_eq!(h.len(), 32);
        // They were due ~64 µs before the burst (the ring's depth) at the least.
        assert!(h.min() >= 60_000, "min latency {}", h.min());
        assert_eq!(pool.available(), 256);
    }

    #[test]
    fn windowed_generator_parks_after_one_pass_until_released() {
        let ctl = Control::new(1 << 20);
        let mut port = BenchPort::generator("g", &ctl, &vec![template(); 40], true);
        let parked = port.parked().unwrap();
        let mut pool = BufPool::new(256);
        ctl.flat_out();
        let mut got = 0;
        for _ in 0..5 {
            let mut batch = Batch::new();
            got += port.rx_burst(0, &mut pool, &mut batch).unwrap();
            for f in batch.drain() {
                pool.free(f);
            }
        }
        assert_eq!(got, 40, "one pass");
        assert!(parked.load(Relaxed));
        ctl.release();
        let mut batch = Batch::new();
        assert_eq!(port.rx_burst(0, &mut pool, &mut batch).unwrap(), 32);
        assert!(!parked.load(Relaxed));
    }
}
