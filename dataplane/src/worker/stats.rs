//! What each worker counts ([`WorkerStats`]: frames, batches, sleeps, busy time, handoffs, lock waits) and its
//! per-batch histograms ([`BatchHistograms`]), written by that worker alone with relaxed loads and stores, and
//! the plain copy a report reads ([`WorkerReport`]).
//!
//! Threads: written by one worker, read by any (the stats report, the metrics exporter).

use super::bump;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the batch-size histogram's buckets, frames (a burst holds at most 32).
pub const BATCH_FRAMES_BOUNDS: [u64; 6] = [1, 2, 4, 8, 16, 32];
/// Upper bounds of the per-batch processing time histogram's buckets, nanoseconds: 250 ns × 2^k up to about 1 ms;
/// a last bucket (not listed) takes the rest.
pub const BATCH_NS_BOUNDS: [u64; 13] =
    [250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000, 1_024_000];

/// Per-batch histograms of one worker: how many frames each received burst held, and how long the pipeline took
/// over it ([`Switch::process`], the switch lock's wait included). Fixed buckets of relaxed atomics, written by
/// the worker only (no lock, no allocation: one [`bump`] per histogram per batch), read by the metrics
/// exporter. Counts are per bucket, not cumulative.
#[derive(Debug, Default)]
pub struct BatchHistograms {
    /// Bursts by size, one bucket per [`BATCH_FRAMES_BOUNDS`] entry.
    pub frames: [AtomicU64; BATCH_FRAMES_BOUNDS.len()],
    /// Bursts by processing time, one bucket per [`BATCH_NS_BOUNDS`] entry and one above.
    pub ns: [AtomicU64; BATCH_NS_BOUNDS.len() + 1],
    /// Total processing time, nanoseconds.
    pub ns_sum: AtomicU64,
}

impl BatchHistograms {
    /// Records one burst of `frames` (1..=32) frames that took `ns` nanoseconds.
    #[inline]
    pub fn record(&self, frames: usize, ns: u64) {
        // ceil(log2(frames)): 1 → 0, 2 → 1, 3..=4 → 2, ... 17..=32 → 5.
        let f = (usize::BITS - frames.saturating_sub(1).leading_zeros()) as usize;
        bump(&self.frames[f.min(BATCH_FRAMES_BOUNDS.len() - 1)], 1);
        // ceil(log2(ns / 250)), clamped to the last bucket.
        let q = ns.div_ceil(250);
        let t = (u64::BITS - q.saturating_sub(1).leading_zeros()) as usize;
        bump(&self.ns[t.min(BATCH_NS_BOUNDS.len())], 1);
        bump(&self.ns_sum, ns);
    }
}

/// A worker's counters (relaxed atomics: written by the worker, read by the stats reporter; those the loop
/// writes per burst with [`bump`], as nothing else writes them, except `max_gap_ns`, which the reporter resets). Aligned to
/// [`CACHE_PAIR`] bytes so that two workers' counters, next to each other in [`Shared::workers`], never share a
/// cache line (each worker writes its own several times per burst).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    /// Loop iterations.
    pub iterations: AtomicU64,
    /// Iterations that received at least one frame.
    pub busy_iterations: AtomicU64,
    /// Nanoseconds spent in busy iterations (rx, pipeline, housekeeping, tx): the switch's CPU cost of the
    /// frames it moved.
    pub busy_ns: AtomicU64,
    /// Frames received from this worker's queues.
    pub rx_packets: AtomicU64,
    /// Non-empty bursts received (each one switch lock).
    pub rx_batches: AtomicU64,
    /// Times the worker found its shard locked (by the control thread reading it).
    pub switch_waits: AtomicU64,
    /// Frames this worker received and handed to the worker owning their connection.
    pub handed_off: AtomicU64,
    /// Frames handed to this worker by others (and run through its shard).
    pub handed_in: AtomicU64,
    /// Frames that could not be handed over (the owner's queue was full; dropped as `handoff-full`), or that
    /// were still queued when the workers stopped or paused.
    pub handoff_dropped: AtomicU64,
    /// Learned-state updates lost to a full queue of another worker (it learns the address itself later, or
    /// hears of it at the next renewal).
    pub updates_dropped: AtomicU64,
    /// [`Clock::now`] of the last iteration that moved frames (carried across a paused apply with the stats).
    pub last_busy_at: AtomicU64,
    /// The longest time between the starts of two consecutive iterations that moved frames, since it was last
    /// reset (stored 0): how long forwarding stood still, e.g. across an apply.
    pub max_gap_ns: AtomicU64,
    /// Times the worker went to sleep on its fds.
    pub sleeps: AtomicU64,
    /// Port I/O errors (not per-frame drops: a failing fd).
    pub port_errors: AtomicU64,
    /// Buffers allocated to top up the pool (see the module documentation).
    pub buffers_added: AtomicU64,
    /// CPU time the worker's thread has used (user + system, nanoseconds, from `/proc/thread-self/schedstat`;
    /// 0 where unavailable), as of the last check (every housekeeping interval, and at exit). Unlike
    /// `busy_ns` it excludes time the thread was preempted, and includes idle spinning.
    pub cpu_ns: AtomicU64,
    /// Free buffers in the pool at the last check (every housekeeping interval, and at exit).
    pub pool_available: AtomicU64,
    /// The pool's capacity.
    pub pool_capacity: AtomicU64,
    /// Batch sizes and per-batch processing times.
    pub batches: BatchHistograms,
}

/// A snapshot of one worker's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkerReport {
    /// The worker's index.
    pub id: usize,
    /// The rx queues it polls, as `PORT/QUEUE`.
    pub rx_queues: Vec<String>,
    /// See [`WorkerStats`].
    pub iterations: u64,
    /// See [`WorkerStats`].
    pub busy_iterations: u64,
    /// See [`WorkerStats`].
    pub busy_ns: u64,
    /// See [`WorkerStats`].
    pub rx_packets: u64,
    /// See [`WorkerStats`].
    pub rx_batches: u64,
    /// See [`WorkerStats`].
    pub switch_waits: u64,
    /// See [`WorkerStats`].
    pub handed_off: u64,
    /// See [`WorkerStats`].
    pub handed_in: u64,
    /// See [`WorkerStats`].
    pub handoff_dropped: u64,
    /// See [`WorkerStats`].
    pub updates_dropped: u64,
    /// See [`WorkerStats`].
    pub max_gap_ns: u64,
    /// See [`WorkerStats`].
    pub sleeps: u64,
    /// See [`WorkerStats`].
    pub port_errors: u64,
    /// See [`WorkerStats`].
    pub buffers_added: u64,
    /// See [`WorkerStats`].
    pub cpu_ns: u64,
    /// See [`WorkerStats`].
    pub pool_available: u64,
    /// See [`WorkerStats`].
    pub pool_capacity: u64,
    /// Bursts by size: one count per [`BATCH_FRAMES_BOUNDS`] bucket (not cumulative).
    pub batch_frames: Vec<u64>,
    /// Bursts by processing time: one count per [`BATCH_NS_BOUNDS`] bucket and one above (not cumulative).
    pub batch_ns: Vec<u64>,
    /// Total processing time of all bursts, nanoseconds.
    pub batch_ns_sum: u64,
}

impl WorkerStats {
    /// A snapshot, labelled with the worker's id and queues.
    pub fn report(&self, id: usize, rx_queues: Vec<String>) -> WorkerReport {
        WorkerReport {
            id,
            rx_queues,
            iterations: self.iterations.load(Relaxed),
            busy_iterations: self.busy_iterations.load(Relaxed),
            busy_ns: self.busy_ns.load(Relaxed),
            rx_packets: self.rx_packets.load(Relaxed),
            rx_batches: self.rx_batches.load(Relaxed),
            switch_waits: self.switch_waits.load(Relaxed),
            handed_off: self.handed_off.load(Relaxed),
            handed_in: self.handed_in.load(Relaxed),
            handoff_dropped: self.handoff_dropped.load(Relaxed),
            updates_dropped: self.updates_dropped.load(Relaxed),
            max_gap_ns: self.max_gap_ns.load(Relaxed),
            sleeps: self.sleeps.load(Relaxed),
            port_errors: self.port_errors.load(Relaxed),
            buffers_added: self.buffers_added.load(Relaxed),
            cpu_ns: self.cpu_ns.load(Relaxed),
            pool_available: self.pool_available.load(Relaxed),
            pool_capacity: self.pool_capacity.load(Relaxed),
            batch_frames: self.batches.frames.iter().map(|c| c.load(Relaxed)).collect(),
            batch_ns: self.batches.ns.iter().map(|c| c.load(Relaxed)).collect(),
            batch_ns_sum: self.batches.ns_sum.load(Relaxed),
        }
    }
}
