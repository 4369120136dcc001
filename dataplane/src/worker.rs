//! Poll-mode workers: the threads that move frames in `vswitchd run`.
//!
//! # What a worker owns
//! Its own [`BufPool`], [`Batch`] and [`TxQueues`], a fixed list of receive queues (`(port, queue)` pairs,
//! assigned round-robin by [`crate::live`]), and a `mio::Poll` with those queues' rx fds registered once at
//! start. Everything else is [`Shared`]: the [`Switch`] behind one mutex, every port queue behind its own mutex,
//! the stop flag, the clock, and the per-worker [`WorkerStats`].
//!
//! # One iteration
//! 1. Read the clock once (`now`, [`Clock::now`]); the pipeline never reads a clock.
//! 2. For each owned rx queue: lock it, `rx_burst` into the batch, unlock; if frames came, lock the switch,
//!    [`Switch::process`] the batch into this worker's [`TxQueues`], unlock. Locks are taken per burst, never per
//!    frame, and port I/O (system calls, copies) happens outside the switch lock.
//! 3. Housekeeping when due: the worker that wins the compare-and-swap on [`Shared::last_housekeeping`] runs
//!    [`Switch::housekeeping`]; its output goes through the same transmit queues.
//! 4. Flush: for every port with queued frames, lock the port's queue `worker_id % queues` and `tx_burst`.
//! 5. Idle handling: after `poll_idle` nanoseconds without a single frame, sleep on the registered fds (epoll via
//!    mio) for at most min(next housekeeping, [`MAX_SLEEP`]); [`FDLESS_SLEEP`] when a queue has no fd (memory
//!    ports) or the pool is short of buffers (frames may wait in a port without a new wake-up).
//!
//! mio's epoll registration is edge-triggered. That is enough: a worker sleeps only after an iteration in which
//! every owned queue was polled to empty, so any frame that arrives afterwards raises a new edge (an edge raised
//! between the last poll and the wait is kept in the ready list and ends the wait at once).
//!
//! # Buffers that change hands
//! A frame normally returns to the pool of the worker that received it (its `tx_burst` frees it there). A frame
//! held by the switch (a neighbour resolution queue) may be released by another worker and end in that worker's
//! pool. A pool never grows past its capacity ([`BufPool::free`] drops a buffer beyond it), so foreign frames
//! cost nothing lasting; the pool that lost them is topped up: every [`HOUSEKEEPING_INTERVAL`] a worker whose pool
//! has fewer than half its buffers free after a flush (when it holds none in flight) allocates the difference.
//! That is a rare, bounded allocation off the per-frame path; memory stays within `workers × capacity` plus the
//! frames the switch holds (bounded by the neighbour queue limits). [`WorkerStats::buffers_added`] counts it.
//!
//! # Stop and pause
//! [`Shared::stop`] (the daemon is stopping) and [`Shared::pause`] (a configuration change: the worker exits so
//! that the control thread can rebuild the switch and the port list, then start new workers) are checked once
//! per iteration, i.e. at a batch boundary. Whoever sets either wakes the worker through its [`Worker::waker`]
//! (a `mio::Waker` registered in the same poll as the rx fds), so a sleeping worker notices at once; sleeps are
//! bounded by [`MAX_SLEEP`] anyway. The worker then flushes and returns its pool, which the next worker
//! reuses ([`Worker::with_pool`]) when its capacity is still right: making thousands of buffers is most of a
//! worker's start-up time, and a configuration change wants the pause short. A worker that panics sets the
//! stop flag (so the others and the daemon stop too) and the poisoned locks are still used for the final
//! counters.
//!
//! Threads: [`Worker::run`] runs on its own thread; [`Shared`] is `Sync` and read by the stats reporter too.

use crate::batch::{Batch, BATCH_SIZE};
use crate::buffer::BufPool;
use crate::ids::{Nanos, PortId, NANOS_PER_SEC};
use crate::pipeline::{Switch, TxQueues, HOUSEKEEPING_INTERVAL};
use crate::port::any::AnyPort;
use crate::port::{Port, PortError};
use serde::Serialize;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

/// The poll token of a worker's waker (rx queues use their index).
const WAKE_TOKEN: mio::Token = mio::Token(usize::MAX);

/// Longest a worker sleeps in one wait (also bounds how long a stop takes to be noticed).
pub const MAX_SLEEP: Nanos = 100 * NANOS_PER_SEC / 1000;
/// Longest a worker sleeps while a port it transmits on still holds frames the kernel pushed back on.
const TX_PENDING_SLEEP: Nanos = 50_000;
/// Longest a worker sleeps while it owns a queue without an fd, or its pool is short of buffers.
pub const FDLESS_SLEEP: Nanos = NANOS_PER_SEC / 1000;

/// Locks `m`, using the data even if another thread panicked while holding it (the panic has already set the
/// stop flag; the counters are still worth reporting).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The monotonic clock of a running switch: nanoseconds since start, plus one second so that no timestamp is 0
/// (0 means "no timestamp" to some drivers).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Clock { start: Instant::now() }
    }

    /// Nanoseconds since the clock started, plus one second.
    #[inline]
    pub fn now(&self) -> Nanos {
        self.start.elapsed().as_nanos() as Nanos + NANOS_PER_SEC
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// One configured port as the workers see it: its queues, each an independent port object behind its own lock.
#[derive(Debug)]
pub struct LivePort {
    /// The port's configured name.
    pub name: String,
    /// Its queues (at least one).
    pub queues: Vec<Mutex<AnyPort>>,
}

/// A worker's counters (relaxed atomics: written by the worker, read by the stats reporter).
#[derive(Debug, Default)]
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
    /// Times the switch lock was found held by another thread (a worker, or the stats reporter now and then):
    /// the contention the shared tables cost.
    pub switch_waits: AtomicU64,
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
            sleeps: self.sleeps.load(Relaxed),
            port_errors: self.port_errors.load(Relaxed),
            buffers_added: self.buffers_added.load(Relaxed),
            cpu_ns: self.cpu_ns.load(Relaxed),
            pool_available: self.pool_available.load(Relaxed),
            pool_capacity: self.pool_capacity.load(Relaxed),
        }
    }
}

/// What every worker (and the stats reporter) shares.
#[derive(Debug)]
pub struct Shared {
    /// The pipeline and its tables; locked once per received batch and for housekeeping.
    pub switch: Mutex<Switch>,
    /// Ports by [`PortId`].
    pub ports: Vec<LivePort>,
    /// Set to stop every worker (signals, [`crate::live::Running::stop`], a panicking worker).
    pub stop: Arc<AtomicBool>,
    /// Set to make every worker exit at its next batch boundary for a configuration change
    /// ([`crate::live::Running::reconfigure`]).
    pub pause: AtomicBool,
    /// The clock every worker reads.
    pub clock: Clock,
    /// When housekeeping last ran ([`Clock::now`] time).
    pub last_housekeeping: AtomicU64,
    /// Nanoseconds without traffic before a worker sleeps.
    pub poll_idle: Nanos,
    /// Per worker, by id.
    pub workers: Vec<WorkerStats>,
}

impl Shared {
    /// Locks the switch for `worker`, counting in [`WorkerStats::switch_waits`] when another thread holds it.
    fn lock_switch(&self, worker: usize) -> MutexGuard<'_, Switch> {
        match self.switch.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.workers[worker].switch_waits.fetch_add(1, Relaxed);
                lock(&self.switch)
            }
        }
    }

    /// True (once per interval, for exactly one caller) when housekeeping is due at `now`.
    fn claim_housekeeping(&self, now: Nanos) -> bool {
        let last = self.last_housekeeping.load(Relaxed);
        now.saturating_sub(last) >= HOUSEKEEPING_INTERVAL
            && self.last_housekeeping.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
    }
}

/// Sets the stop flag if the worker's thread unwinds.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Relaxed);
        }
    }
}

/// One poll-mode worker. Made by [`crate::live`], consumed by [`Worker::run`] on its own thread.
#[derive(Debug)]
pub struct Worker {
    id: usize,
    shared: Arc<Shared>,
    rx: Vec<(PortId, usize)>,
    pool: BufPool,
    batch: Batch,
    tx: TxQueues,
    poll: Option<mio::Poll>,
    waker: Option<Arc<mio::Waker>>,
    events: mio::Events,
    /// Some owned queue has no fd to sleep on (or could not be registered).
    fdless: bool,
    last_error_log: Option<Nanos>,
}

impl Worker {
    /// A worker polling `rx` (`(port, queue)` pairs) with a pool of `pool_buffers` buffers. Registers the
    /// queues' rx fds with a new `mio::Poll` (a queue whose fd cannot be registered makes the worker sleep at
    /// most [`FDLESS_SLEEP`]).
    pub fn new(id: usize, shared: Arc<Shared>, rx: Vec<(PortId, usize)>, pool_buffers: usize) -> Worker {
        Worker::with_pool(id, shared, rx, BufPool::new(pool_buffers))
    }

    /// As [`Worker::new`] with a pool handed over from a worker that ran before (a configuration change: making
    /// a pool of thousands of buffers is most of a worker's start-up time).
    pub fn with_pool(id: usize, shared: Arc<Shared>, rx: Vec<(PortId, usize)>, pool: BufPool) -> Worker {
        let tx = lock(&shared.switch).tx_queues();
        let mut fdless = false;
        let mut waker = None;
        let poll = match mio::Poll::new() {
            Ok(poll) => {
                for (token, &(p, q)) in rx.iter().enumerate() {
                    let fd: Option<RawFd> = lock(&shared.ports[p as usize].queues[q]).rx_fd();
                    let registered = fd.is_some_and(|fd| {
                        poll.registry()
                            .register(&mut mio::unix::SourceFd(&fd), mio::Token(token), mio::Interest::READABLE)
                            .is_ok()
                    });
                    fdless |= !registered;
                }
                match mio::Waker::new(poll.registry(), WAKE_TOKEN) {
                    Ok(w) => waker = Some(Arc::new(w)),
                    // Without a waker, a stop or pause is noticed within MAX_SLEEP.
                    Err(e) => tracing::warn!(worker = id, error = %e, "cannot create a waker"),
                }
                Some(poll)
            }
            Err(e) => {
                tracing::warn!(worker = id, error = %e, "cannot create an epoll instance; idle sleeps are timed");
                fdless = true;
                None
            }
        };
        let stats = &shared.workers[id];
        stats.pool_capacity.store(pool.capacity() as u64, Relaxed);
        stats.pool_available.store(pool.available() as u64, Relaxed);
        Worker {
            id,
            rx,
            pool,
            batch: Batch::new(),
            tx,
            poll,
            waker,
            events: mio::Events::with_capacity(64),
            fdless,
            last_error_log: None,
            shared,
        }
    }

    /// Wakes this worker from its idle sleep (after setting [`Shared::stop`] or [`Shared::pause`]); `None` if
    /// no waker could be made.
    pub fn waker(&self) -> Option<Arc<mio::Waker>> {
        self.waker.clone()
    }

    /// Runs until the stop or pause flag is set, then flushes and returns its pool (for the next worker).
    pub fn run(mut self) -> BufPool {
        let shared = Arc::clone(&self.shared);
        let _guard = StopOnPanic(&shared.stop);
        let stats = &shared.workers[self.id];
        let mut idle_since: Option<Nanos> = None;
        // The clock is read once per iteration; a busy iteration's cost is measured up to the next reading.
        let mut busy_started: Option<Nanos> = None;
        let mut next_check = 0;
        while !shared.stop.load(Relaxed) && !shared.pause.load(Relaxed) {
            let now = shared.clock.now();
            if let Some(t) = busy_started.take() {
                stats.busy_ns.fetch_add(now.saturating_sub(t), Relaxed);
            }
            let moved = self.iteration(now);
            stats.iterations.fetch_add(1, Relaxed);
            if moved > 0 {
                stats.busy_iterations.fetch_add(1, Relaxed);
                stats.rx_packets.fetch_add(moved, Relaxed);
                busy_started = Some(now);
                idle_since = None;
            } else {
                let since = *idle_since.get_or_insert(now);
                if now.saturating_sub(since) >= shared.poll_idle {
                    self.sleep(now);
                }
            }
            if now >= next_check {
                self.check_pool();
                stats.cpu_ns.store(thread_cpu_ns(), Relaxed);
                next_check = now + HOUSEKEEPING_INTERVAL;
            }
        }
        if let Some(t) = busy_started {
            stats.busy_ns.fetch_add(shared.clock.now().saturating_sub(t), Relaxed);
        }
        self.flush(shared.clock.now());
        stats.pool_available.store(self.pool.available() as u64, Relaxed);
        stats.cpu_ns.store(thread_cpu_ns(), Relaxed);
        std::mem::replace(&mut self.pool, BufPool::new(0))
    }

    /// One pass over the owned queues, housekeeping if due, and a flush. Returns the frames received.
    fn iteration(&mut self, now: Nanos) -> u64 {
        let shared = Arc::clone(&self.shared);
        let mut moved = 0;
        for i in 0..self.rx.len() {
            let (p, q) = self.rx[i];
            let r = lock(&shared.ports[p as usize].queues[q]).rx_burst(now, &mut self.pool, &mut self.batch);
            if let Err(e) = r {
                self.port_error(now, e);
            }
            // A failing burst may still have delivered frames before the error.
            if !self.batch.is_empty() {
                moved += self.batch.len() as u64;
                shared.workers[self.id].rx_batches.fetch_add(1, Relaxed);
                shared.lock_switch(self.id).process(now, p, &mut self.batch, &mut self.pool, &mut self.tx);
            }
        }
        if shared.claim_housekeeping(now) {
            shared.lock_switch(self.id).housekeeping(now, &mut self.pool, &mut self.tx);
        }
        self.flush(now);
        moved
    }

    /// Hands every port its queued frames, through the port's queue `worker id % queues`.
    fn flush(&mut self, now: Nanos) {
        let shared = Arc::clone(&self.shared);
        for p in 0..self.tx.ports() {
            let frames = self.tx.queue_mut(p as PortId);
            if frames.is_empty() {
                continue;
            }
            let port = &shared.ports[p];
            let q = self.id % port.queues.len();
            let r = lock(&port.queues[q]).tx_burst(&mut self.pool, frames);
            // The contract empties the vector even on error; never let a broken port wedge the queue.
            for f in frames.drain(..) {
                self.pool.free(f);
            }
            if let Err(e) = r {
                self.port_error(now, e);
            }
        }
    }

    /// Counts a port error and logs it (at most once a second per worker).
    fn port_error(&mut self, now: Nanos, e: PortError) {
        self.shared.workers[self.id].port_errors.fetch_add(1, Relaxed);
        if !matches!(self.last_error_log, Some(t) if now.saturating_sub(t) < NANOS_PER_SEC) {
            self.last_error_log = Some(now);
            tracing::warn!(worker = self.id, error = %e, "port I/O error");
        }
    }

    /// Sleeps until a registered fd is readable or the bounded timeout passes.
    fn sleep(&mut self, now: Nanos) {
        let tx_pending = self.push_pending_tx(now);
        let shared = &self.shared;
        let next_hk = shared.last_housekeeping.load(Relaxed).saturating_add(HOUSEKEEPING_INTERVAL);
        let mut timeout = next_hk.saturating_sub(now).min(MAX_SLEEP);
        if self.fdless || self.pool.available() < BATCH_SIZE {
            timeout = timeout.min(FDLESS_SLEEP);
        }
        if tx_pending {
            timeout = timeout.min(TX_PENDING_SLEEP);
        }
        if timeout == 0 {
            return;
        }
        shared.workers[self.id].sleeps.fetch_add(1, Relaxed);
        let timeout = Duration::from_nanos(timeout);
        match &mut self.poll {
            // An error (EINTR from a signal) just ends the sleep early.
            Some(poll) => {
                let _ = poll.poll(&mut self.events, Some(timeout));
            }
            None => std::thread::sleep(timeout),
        }
    }

    /// Before sleeping: lets every port this worker transmits on push out frames the kernel pushed back on
    /// (AF_XDP); true if some are still waiting, so the sleep is kept short.
    fn push_pending_tx(&mut self, now: Nanos) -> bool {
        let shared = Arc::clone(&self.shared);
        let mut pending = false;
        for p in 0..self.tx.ports() {
            let port = &shared.ports[p];
            let mut queue = lock(&port.queues[self.id % port.queues.len()]);
            if queue.tx_pending() {
                // The worker's queue for this port is empty after the flush: this only kicks.
                let r = queue.tx_burst(&mut self.pool, self.tx.queue_mut(p as PortId));
                pending |= queue.tx_pending();
                drop(queue);
                if let Err(e) = r {
                    self.port_error(now, e);
                }
            }
        }
        pending
    }

    /// Tops the pool up when buffers have migrated to other workers (see the module documentation).
    fn check_pool(&mut self) {
        let stats = &self.shared.workers[self.id];
        let (avail, cap) = (self.pool.available(), self.pool.capacity());
        if avail < cap / 2 {
            let mut extra = BufPool::new(cap - avail);
            while let Some(f) = extra.alloc() {
                self.pool.free(f);
            }
            stats.buffers_added.fetch_add((cap - avail) as u64, Relaxed);
        }
        stats.pool_available.store(self.pool.available() as u64, Relaxed);
    }
}

/// CPU time used by the calling thread in nanoseconds (first field of `/proc/thread-self/schedstat`), or 0.
/// Reads into a stack buffer: no allocation. (Also the benchmarks' CPU-time clock.)
pub fn thread_cpu_ns() -> u64 {
    use std::io::Read;
    let mut buf = [0u8; 96];
    let n = std::fs::File::open("/proc/thread-self/schedstat").and_then(|mut f| f.read(&mut buf)).unwrap_or(0);
    let text = std::str::from_utf8(&buf[..n]).unwrap_or("");
    text.split_ascii_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0)
}
