//! Poll-mode workers: the threads that move frames in `vswitchd run`.
//!
//! # What a worker owns
//! Its own [`BufPool`], [`Batch`] and [`TxQueues`], a fixed list of receive queues (`(port, queue)` pairs,
//! assigned round-robin by [`crate::live`]), a `mio::Poll` with those queues' rx fds registered once at start,
//! and its own [`Switch`], a shard of the switch ([`crate::pipeline::shard`]), in its [`ShardLink`] with the
//! two bounded lock-free queues other workers write to it: learned-state [`Update`]s and frames handed to it
//! because it owns their connection. Everything else is [`Shared`]: every port queue behind its own mutex, the
//! stop flag, the clock, and the per-worker [`WorkerStats`].
//!
//! The shard's mutex is taken by its worker once per burst and by the control thread for reads (`vswitchctl`,
//! stats, the state snapshot) — never by another worker: no lock is shared between workers on the forwarding
//! path, and [`WorkerStats::switch_waits`] counts only a control read in the way.
//!
//! # One iteration
//! 1. Read the clock once (`now`, [`Clock::now`]); the pipeline never reads a clock.
//! 2. For each owned rx queue: lock it, `rx_burst` into the batch, unlock; if frames came, lock the shard,
//!    apply the updates other workers queued (so what they learned before the burst arrived is known),
//!    [`Switch::process`] the batch into this worker's [`TxQueues`], hand its outbox to the other workers
//!    ([`Worker::dispatch`]: updates to every other worker, handed frames to their owner; a full queue drops and
//!    counts, `updates_dropped` and `handoff-full`; a sleeping receiver is woken), unlock.
//! 3. The inbox (when there is mail: the transmit queues are flushed first): updates from the others applied,
//!    frames handed over run through the pipeline ([`Switch::run_handed_burst`]: bursts of consecutive frames
//!    with one ingress port), at most [`INBOX_BATCHES`] bursts per iteration. The frame that ended the last
//!    burst (another port's) is kept by the worker and runs first next time, so a port's frames keep their
//!    order.
//! 4. Housekeeping every [`HOUSEKEEPING_INTERVAL`], each worker on its own shard (MAC ageing, its connections'
//!    expiry, its ARP retries); its output goes through the same transmit queues.
//! 5. Flush: for every port with queued frames, lock the port's queue `worker_id % queues` and `tx_burst`.
//! 6. Idle handling: after `poll_idle` nanoseconds without a single frame, sleep on the registered fds (epoll via
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
//! worker's start-up time, and a configuration change wants the pause short.
//!
//! # Panics
//! A panic inside an iteration (the pipeline, a port) is caught: the frames the iteration held go back to the
//! pool, the panic is counted ([`Faults::worker_restarts`]) and logged with its message, and the worker goes on
//! (same queues, pool, fd registrations and waker; poisoned locks are used as they are). A panic outside an
//! iteration (sleeping, flushing at exit) still sets the stop flag, so the daemon stops (its taps and its state
//! snapshot survive it). A panic while the worker carries its shard over to a configuration applied without a
//! pause is contained there and reported to the apply waiting for it, which rebuilds the shard (`crate::live`).
//! [`Faults::inject_panic`] is the test hook ([`Faults::inject_apply_panic`] the one of a configuration
//! switch-over, contained by `crate::live`; [`Faults::inject_hot_apply_panic`] the worker's carrying over).
//!
//! Threads: [`Worker::run`] runs on its own thread; [`Shared`] is `Sync` and read by the stats reporter too.

mod stats;

use crate::batch::{Batch, BATCH_SIZE};
use crate::buffer::Frame;
use crate::buffer::{BufPool, DEFAULT_LARGE_BUFFERS};
use crate::ids::{Nanos, PortId, NANOS_PER_SEC};
use crate::pipeline::{Dispatched, Handoff, Inbox, Switch, TxQueues, Update, HOUSEKEEPING_INTERVAL};
use crate::port::any::AnyPort;
use crate::port::failed::PortFailure;
use crate::port::{Port, PortError};
use crossbeam_queue::ArrayQueue;
pub use stats::{BatchHistograms, WorkerReport, WorkerStats, BATCH_FRAMES_BOUNDS, BATCH_NS_BOUNDS};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::time::{Duration, Instant};

/// The poll token of a worker's waker (rx queues use their index).
const WAKE_TOKEN: mio::Token = mio::Token(usize::MAX);

/// Longest a worker sleeps in one wait (also bounds how long a stop takes to be noticed).
pub const MAX_SLEEP: Nanos = 100 * NANOS_PER_SEC / 1000;
/// Longest a worker sleeps while a port it transmits on still holds frames the kernel pushed back on.
const TX_PENDING_SLEEP: Nanos = 50_000;
/// Longest a worker sleeps while it owns a queue without an fd, or its pool is short of buffers.
pub const FDLESS_SLEEP: Nanos = NANOS_PER_SEC / 1000;

/// Capacity of a worker's queue of learned-state updates from the others.
pub const UPDATE_QUEUE: usize = 8192;
/// What state written by one worker is aligned to, so that no two workers write the same cache line: two
/// 64-byte lines, as x86's adjacent-line prefetcher fetches them in pairs (`crossbeam_utils::CachePadded`'s
/// choice on x86-64). `#[repr(align)]` needs a literal; the types that use it say so.
pub const CACHE_PAIR: usize = 128;

/// Capacity of a worker's queue of frames handed to it (frames, not bursts).
pub const HANDOFF_QUEUE: usize = 2048;
/// Most bursts of handed frames a worker runs per iteration (then it flushes and polls its own queues again):
/// with the transmit queues flushed just before, 4 bursts fit any port's queue (`TX_QUEUE_CAP` is 8 bursts).
pub const INBOX_BATCHES: usize = 4;

/// One worker's shard of the switch and the queues the other workers write to it. Aligned to [`CACHE_PAIR`]
/// bytes: the worker locks its shard once per burst, and its neighbour in [`Shared::shards`] must not share
/// that line.
#[derive(Debug)]
#[repr(align(128))]
pub struct ShardLink {
    /// The worker's own switch: locked by its worker per burst, by the control thread for reads.
    pub switch: Mutex<Switch>,
    /// Learned state from the other workers, applied at the next batch boundary.
    pub updates: ArrayQueue<Update>,
    /// Frames handed over (with their ingress port) because this worker owns their connection.
    pub handoffs: ArrayQueue<(PortId, Frame)>,
    /// Set while the worker sleeps (or is about to): a writer then wakes it.
    pub sleeping: AtomicBool,
    /// The worker's waker, once it has one.
    pub waker: OnceLock<Arc<mio::Waker>>,
}

impl ShardLink {
    /// A link around `switch`.
    pub fn new(switch: Switch) -> ShardLink {
        ShardLink {
            switch: Mutex::new(switch),
            updates: ArrayQueue::new(UPDATE_QUEUE),
            handoffs: ArrayQueue::new(HANDOFF_QUEUE),
            sleeping: AtomicBool::new(false),
            waker: OnceLock::new(),
        }
    }

    /// Something waits in the inbox.
    fn has_mail(&self) -> bool {
        !self.updates.is_empty() || !self.handoffs.is_empty()
    }

    /// Wakes the worker if it sleeps (after something was queued for it).
    fn nudge(&self) {
        if self.sleeping.load(SeqCst) {
            if let Some(w) = self.waker.get() {
                let _ = w.wake();
            }
        }
    }
}

/// One worker's part of a configuration change applied without a pause (`crate::live`): its new topology and
/// router, built by the control thread, and a stand-in switch for the moment its own is carried over.
#[derive(Debug)]
pub struct HotItem {
    /// The new topology and router.
    pub pre: crate::pipeline::Prebuilt,
    /// Any switch.
    pub spare: Switch,
}

/// A configuration change in flight to the running workers: [`Shared::generation`] moved on, each worker takes
/// its item at its next batch boundary and reports what it carried over and how long it took.
#[derive(Debug, Default)]
pub struct HotApply {
    /// By worker id: its item, until taken.
    pub items: Vec<Option<HotItem>>,
    /// By worker id, once it took its item: what its shard carried over and the nanoseconds it spent, or the
    /// message of the panic that interrupted it.
    pub done: Vec<Option<Result<(crate::pipeline::Carried, u64), String>>>,
}

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
        // Saturates after 584 years of uptime instead of wrapping.
        Nanos::try_from(self.start.elapsed().as_nanos()).unwrap_or(Nanos::MAX).saturating_add(NANOS_PER_SEC)
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
    /// Set while the port could not be opened: its queues are stand-ins ([`crate::port::failed`]).
    pub failure: Mutex<Option<PortFailure>>,
}

impl LivePort {
    /// A port that is up, with its queues.
    pub fn up(name: &str, queues: Vec<AnyPort>) -> LivePort {
        LivePort {
            name: name.to_string(),
            queues: queues.into_iter().map(Mutex::new).collect(),
            failure: Mutex::new(None),
        }
    }

    /// The port's failure, if it is down.
    pub fn failure(&self) -> Option<PortFailure> {
        lock(&self.failure).clone()
    }

    /// Makes the port's interface outlive the process ([`AnyPort::persist`]).
    pub fn persist(&self) {
        if let Some(q) = self.queues.first() {
            lock(q).persist();
        }
    }

    /// Makes closing the port delete its interface ([`AnyPort::remove_on_close`]).
    pub fn remove_on_close(&self) {
        if let Some(q) = self.queues.first() {
            lock(q).remove_on_close();
        }
    }
}

/// Panics contained, and the test hook that causes one; shared by the workers and the control thread, and
/// carried across configuration changes.
#[derive(Debug, Default)]
pub struct Faults {
    /// Worker iterations that panicked and were recovered from (the worker goes on; see [`Worker::run`]).
    pub worker_restarts: AtomicU64,
    /// Control requests that panicked (that request failed; see `crate::control::daemon`), including an apply's
    /// switch-over and a failed port's retry (`crate::live`).
    pub control_panics: AtomicU64,
    /// Test hook: the next worker iteration that sees it set clears it and panics (`vswitchd run` sets it on
    /// SIGUSR1 when started with `VSWITCHD_TEST_HOOKS=1`).
    pub inject_panic: AtomicBool,
    /// Test hook: the next configuration switch-over that sees it set clears it and panics once the new switch
    /// is computed, before it takes over ([`crate::live::Running::commit`] contains it).
    pub inject_apply_panic: AtomicBool,
    /// Test hook: the next worker carrying its shard over to a configuration applied without a pause that sees
    /// it set clears it and panics once its new tables are computed, before they are moved in (the worker
    /// reports it; `crate::live` rebuilds the shard). Set only by `Running::inject_hot_apply_panic` (feature
    /// `testing`).
    pub inject_hot_apply_panic: AtomicBool,
}

/// The text of a panic's payload (`panic!` with a literal or a format).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_string())
}

/// What every worker (and the stats reporter) shares.
#[derive(Debug)]
pub struct Shared {
    /// Every worker's shard of the switch and its queues, by worker id.
    pub shards: Vec<ShardLink>,
    /// Moves on when a configuration change is waiting in [`Shared::hot`] (checked once per iteration).
    pub generation: AtomicU64,
    /// The configuration change in flight, if any.
    pub hot: Mutex<HotApply>,
    /// Ports by [`PortId`].
    pub ports: Vec<LivePort>,
    /// Set to stop every worker (signals, [`crate::live::Running::stop`], a panicking worker).
    pub stop: Arc<AtomicBool>,
    /// Set to make every worker exit at its next batch boundary for a configuration change
    /// ([`crate::live::Running::reconfigure`]).
    pub pause: AtomicBool,
    /// The clock every worker reads.
    pub clock: Clock,
    /// Nanoseconds without traffic before a worker sleeps.
    pub poll_idle: Nanos,
    /// Per worker, by id.
    pub workers: Vec<WorkerStats>,
    /// Panics contained.
    pub faults: Arc<Faults>,
}

impl Shared {
    /// Locks worker `worker`'s shard for it, counting in [`WorkerStats::switch_waits`] when the control thread
    /// holds it.
    fn lock_switch(&self, worker: usize) -> MutexGuard<'_, Switch> {
        let m = &self.shards[worker].switch;
        match m.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.workers[worker].switch_waits.fetch_add(1, Relaxed);
                lock(m)
            }
        }
    }
}

/// Adds `n` to a counter that only the calling worker writes (others only read it): a relaxed load and store, two
/// plain moves, instead of a locked read-modify-write, which costs tens of cycles a time and was a tenth of a
/// worker's time per burst with two workers forwarding (`vswitch-bench pipeline --scenario nat-established`).
/// A reader sees every value the counter takes, in order.
#[inline(always)]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
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
    /// When this worker's shard next runs housekeeping.
    next_housekeeping: Nanos,
    /// The last [`Shared::generation`] this worker applied.
    generation: u64,
    /// A handed frame read from the queue to end a burst of another port's, run first next time
    /// ([`Switch::run_handed_burst`]).
    carry: Option<(PortId, Frame)>,
}

/// A worker's queues as the [`Inbox`] its shard drains.
struct LinkInbox<'a>(&'a ShardLink);

impl Inbox for LinkInbox<'_> {
    fn pop_update(&mut self) -> Option<Update> {
        self.0.updates.pop()
    }

    fn pop_handoff(&mut self) -> Option<(PortId, Frame)> {
        self.0.handoffs.pop()
    }
}

impl Worker {
    /// A worker polling `rx` (`(port, queue)` pairs) with a pool of `pool_buffers` buffers. Registers the
    /// queues' rx fds with a new `mio::Poll` (a queue whose fd cannot be registered makes the worker sleep at
    /// most [`FDLESS_SLEEP`]).
    pub fn new(id: usize, shared: Arc<Shared>, rx: Vec<(PortId, usize)>, pool_buffers: usize) -> Worker {
        Worker::with_pool(id, shared, rx, BufPool::with_large(pool_buffers, DEFAULT_LARGE_BUFFERS))
    }

    /// As [`Worker::new`] with a pool handed over from a worker that ran before (a configuration change: making
    /// a pool of thousands of buffers is most of a worker's start-up time).
    pub fn with_pool(id: usize, shared: Arc<Shared>, rx: Vec<(PortId, usize)>, pool: BufPool) -> Worker {
        let tx = lock(&shared.shards[id].switch).tx_queues();
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
                    Ok(w) => {
                        let w = Arc::new(w);
                        let _ = shared.shards[id].waker.set(Arc::clone(&w));
                        waker = Some(w);
                    }
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
            next_housekeeping: shared.clock.now() + HOUSEKEEPING_INTERVAL,
            generation: shared.generation.load(SeqCst),
            carry: None,
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
                bump(&stats.busy_ns, now.saturating_sub(t));
            }
            let moved = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.iteration(&shared, now))) {
                Ok(moved) => moved,
                Err(payload) => {
                    self.recover(&*payload);
                    0
                }
            };
            bump(&stats.iterations, 1);
            if moved > 0 {
                bump(&stats.busy_iterations, 1);
                bump(&stats.rx_packets, moved);
                let last = stats.last_busy_at.load(Relaxed);
                stats.last_busy_at.store(now, Relaxed);
                let gap = if last == 0 { 0 } else { now.saturating_sub(last) };
                if gap > stats.max_gap_ns.load(Relaxed) {
                    stats.max_gap_ns.fetch_max(gap, Relaxed);
                }
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
        self.flush(&shared, shared.clock.now());
        // Frames handed to this worker after its last iteration are lost with the pause or stop: counted.
        while let Some((_, f)) = self.carry.take().or_else(|| shared.shards[self.id].handoffs.pop()) {
            self.pool.free(f);
            stats.handoff_dropped.fetch_add(1, Relaxed);
        }
        stats.pool_available.store(self.pool.available() as u64, Relaxed);
        stats.cpu_ns.store(thread_cpu_ns(), Relaxed);
        std::mem::replace(&mut self.pool, BufPool::new(0))
    }

    /// One pass over the owned queues, housekeeping if due, and a flush. Returns the frames received.
    ///
    /// `shared` is the worker's own clone of [`Worker::shared`], taken once by [`Worker::run`]: cloning it here
    /// would write the `Arc`'s count, a cache line every worker reads, on every iteration of every worker.
    fn iteration(&mut self, shared: &Shared, now: Nanos) -> u64 {
        if shared.faults.inject_panic.load(Relaxed) && shared.faults.inject_panic.swap(false, Relaxed) {
            panic!("injected worker panic (test hook)");
        }
        if shared.generation.load(Relaxed) != self.generation {
            self.hot_apply();
        }
        let mut moved = 0;
        for i in 0..self.rx.len() {
            let (p, q) = self.rx[i];
            let r = lock(&shared.ports[p as usize].queues[q]).rx_burst(now, &mut self.pool, &mut self.batch);
            if let Err(e) = r {
                self.port_error(now, e);
            }
            // A failing burst may still have delivered frames before the error.
            if !self.batch.is_empty() {
                let frames = self.batch.len();
                moved += frames as u64;
                let stats = &shared.workers[self.id];
                bump(&stats.rx_batches, 1);
                // Two clock reads per burst (not per frame) for the processing-time histogram.
                let t = Instant::now();
                let mut sw = shared.lock_switch(self.id);
                // What the other workers learned before this burst arrived is applied before it is switched (a
                // MAC another worker learned is not flooded to once that worker has moved on).
                sw.apply_updates(now, &mut LinkInbox(&shared.shards[self.id]), &mut self.pool, &mut self.tx);
                sw.process(now, p, &mut self.batch, &mut self.pool, &mut self.tx);
                self.dispatch(shared, &mut sw);
                drop(sw);
                stats.batches.record(frames, u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
        }
        moved += self.inbox(shared, now);
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            let mut sw = shared.lock_switch(self.id);
            sw.housekeeping(now, &mut self.pool, &mut self.tx);
            self.dispatch(shared, &mut sw);
        }
        self.flush(shared, now);
        moved
    }

    /// Carries this worker's shard over to the configuration waiting in [`Shared::hot`] (at a batch boundary) and
    /// reports the outcome there. A panic while doing so is contained here, whatever is in the way of the
    /// iteration's own containment: the worker reports it (the control thread then rebuilds this shard for the
    /// new configuration, see `crate::live`) and goes on, so the apply waiting for every worker's report is
    /// never left waiting.
    fn hot_apply(&mut self) {
        let shared = Arc::clone(&self.shared);
        self.generation = shared.generation.load(SeqCst);
        let item = lock(&shared.hot).items.get_mut(self.id).and_then(Option::take);
        let Some(HotItem { pre, spare }) = item else { return };
        let t = Instant::now();
        let faults = &shared.faults;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shared.lock_switch(self.id).reconfigure_in_place(pre, spare, || {
                if faults.inject_hot_apply_panic.load(Relaxed) && faults.inject_hot_apply_panic.swap(false, Relaxed) {
                    panic!("injected panic carrying a shard over (test hook)");
                }
            })
        }));
        let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let outcome = outcome.map(|carried| (carried, ns)).map_err(|payload| {
            let message = panic_message(&*payload);
            let n = faults.worker_restarts.fetch_add(1, Relaxed) + 1;
            tracing::error!(worker = self.id, panic = %message, worker_restarts = n, "worker panicked carrying its shard over to the new configuration: the shard is rebuilt, forwarding goes on");
            message
        });
        let mut hot = lock(&shared.hot);
        if let Some(slot) = hot.done.get_mut(self.id) {
            *slot = Some(outcome);
        }
    }

    /// Hands what this worker's shard produced for the others (its outbox) to them: updates to every other
    /// worker, frames to their owner ([`Switch::dispatch`]). A full queue drops (counted); a sleeping receiver
    /// is woken.
    fn dispatch(&mut self, shared: &Shared, sw: &mut Switch) {
        let stats = &shared.workers[self.id];
        let woken = std::cell::Cell::new(0u64);
        let d = sw.dispatch(
            &mut self.pool,
            |k, u| {
                woken.set(woken.get() | 1 << (k % 64));
                shared.shards[k].updates.push(u).is_ok()
            },
            |h| {
                let owner = h.owner;
                match shared.shards[owner].handoffs.push((h.port, h.frame)) {
                    Ok(()) => {
                        woken.set(woken.get() | 1 << (owner % 64));
                        Ok(())
                    }
                    Err((port, frame)) => Err(Handoff { owner, port, frame }),
                }
            },
        );
        if d == Dispatched::default() {
            return;
        }
        stats.handed_off.fetch_add(d.handed, Relaxed);
        stats.handoff_dropped.fetch_add(d.handoffs_dropped, Relaxed);
        stats.updates_dropped.fetch_add(d.updates_dropped, Relaxed);
        let woken = woken.get();
        for (k, link) in shared.shards.iter().enumerate() {
            if woken & (1 << (k % 64)) != 0 {
                link.nudge();
            }
        }
    }

    /// Applies the updates other workers sent and runs the frames they handed over (at most
    /// [`INBOX_BATCHES`] bursts, [`Switch::run_handed_burst`]). Returns the frames run.
    fn inbox(&mut self, shared: &Shared, now: Nanos) -> u64 {
        let link = &shared.shards[self.id];
        if !link.has_mail() && self.carry.is_none() {
            return 0;
        }
        // Room in the transmit queues for what the handed frames produce.
        self.flush(shared, now);
        let mut sw = shared.lock_switch(self.id);
        let mut queues = LinkInbox(link);
        sw.apply_updates(now, &mut queues, &mut self.pool, &mut self.tx);
        let mut ran = 0;
        for _ in 0..INBOX_BATCHES {
            let n =
                sw.run_handed_burst(now, &mut queues, &mut self.carry, &mut self.batch, &mut self.pool, &mut self.tx);
            if n == 0 {
                break;
            }
            ran += n as u64;
        }
        self.dispatch(shared, &mut sw);
        shared.workers[self.id].handed_in.fetch_add(ran, Relaxed);
        ran
    }

    /// After an iteration panicked: the frames it held (batch, transmit queues) go back to the pool unsent, the
    /// panic is counted ([`Faults::worker_restarts`]) and logged with its message, and the worker goes on with
    /// its queues, pool, registrations and waker. Locks the panic poisoned are used as they are ([`lock`]); a
    /// table the panic left half-updated stays so (the pipeline is written not to panic: this is a last resort
    /// that keeps the other ports and containers forwarding).
    fn recover(&mut self, payload: &(dyn std::any::Any + Send)) {
        for frame in self.batch.drain() {
            self.pool.free(frame);
        }
        for p in 0..self.tx.ports() {
            for frame in self.tx.queue_mut(crate::ids::table_id(p)).drain(..) {
                self.pool.free(frame);
            }
        }
        let n = self.shared.faults.worker_restarts.fetch_add(1, Relaxed) + 1;
        tracing::error!(worker = self.id, panic = %panic_message(payload), worker_restarts = n, "worker panicked: recovered, forwarding goes on");
    }

    /// Hands every port its queued frames, through the port's queue `worker id % queues`.
    fn flush(&mut self, shared: &Shared, now: Nanos) {
        for p in self.tx.port_ids() {
            let frames = self.tx.queue_mut(p);
            if frames.is_empty() {
                continue;
            }
            let port = &shared.ports[usize::from(p)];
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
        let mut timeout = self.next_housekeeping.saturating_sub(now).min(MAX_SLEEP);
        if self.fdless || self.pool.available() < BATCH_SIZE {
            timeout = timeout.min(FDLESS_SLEEP);
        }
        if tx_pending {
            timeout = timeout.min(TX_PENDING_SLEEP);
        }
        if timeout == 0 {
            return;
        }
        // The ports arm their wake-ups; one that already has frames cancels the sleep. So does mail from
        // another worker: `sleeping` is set before the inbox is checked, and a writer checks it after queueing.
        let link = &shared.shards[self.id];
        link.sleeping.store(true, SeqCst);
        let mut waiting = link.has_mail() || self.carry.is_some();
        for &(p, q) in &self.rx {
            waiting |= !lock(&shared.ports[p as usize].queues[q]).before_sleep();
        }
        if !waiting {
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
        link.sleeping.store(false, SeqCst);
        for &(p, q) in &self.rx {
            lock(&shared.ports[p as usize].queues[q]).after_sleep();
        }
    }

    /// Before sleeping: lets every port this worker transmits on push out frames the kernel pushed back on
    /// (AF_XDP); true if some are still waiting, so the sleep is kept short.
    fn push_pending_tx(&mut self, now: Nanos) -> bool {
        let shared = Arc::clone(&self.shared);
        let mut pending = false;
        for p in self.tx.port_ids() {
            let port = &shared.ports[usize::from(p)];
            let mut queue = lock(&port.queues[self.id % port.queues.len()]);
            if queue.tx_pending() {
                // The worker's queue for this port is empty after the flush: this only kicks.
                let r = queue.tx_burst(&mut self.pool, self.tx.queue_mut(p));
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
        if self.pool.large_available() < self.pool.large_capacity() / 2 {
            let n = self.pool.top_up_large();
            stats.buffers_added.fetch_add(n as u64, Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::port::mem::MemPort;
    use crate::wire::builder::{arp_reply, udp};
    use crate::wire::MacAddr;
    use std::net::Ipv4Addr;

    const CONFIG: &str = r#"
        [[network]]
        name = "lan"
        subnet = "10.0.1.0/24"
        gateway = "10.0.1.1"
        masquerade = true
        [[port]]
        name = "p1"
        kind = "mem"
        network = "lan"
        [[port]]
        name = "p2"
        kind = "mem"
        network = "lan"
        [[port]]
        name = "up"
        kind = "mem"
        address = "203.0.113.2/24"
        [[route]]
        prefix = "0.0.0.0/0"
        via = "203.0.113.1"
    "#;

    /// Two workers' shared state over memory ports (no thread runs).
    fn shared(cfg: &Config, n: usize) -> Arc<Shared> {
        Arc::new(Shared {
            shards: (0..n)
                .map(|i| ShardLink::new(Switch::new(cfg).sharded(crate::pipeline::Shard::new(i, n))))
                .collect(),
            generation: AtomicU64::new(0),
            hot: Mutex::new(HotApply::default()),
            ports: cfg
                .ports
                .iter()
                .map(|p| LivePort::up(&p.name, vec![AnyPort::Mem(MemPort::new(p.name.clone()))]))
                .collect(),
            stop: Arc::new(AtomicBool::new(false)),
            pause: AtomicBool::new(false),
            clock: Clock::new(),
            poll_idle: 0,
            workers: (0..n).map(|_| WorkerStats::default()).collect(),
            faults: Arc::new(Faults::default()),
        })
    }

    /// Frames handed to a worker from two ports, alternating, more than [`INBOX_BATCHES`] bursts' worth: each
    /// port's frames leave in the order they were handed, across inbox rounds. (The worker used to put the
    /// frame that ended its last burst back at the end of the queue, behind newer frames of its own port.)
    #[test]
    fn handed_frames_keep_their_order_within_a_port_across_inbox_rounds() {
        let cfg = Config::parse(CONFIG, "t").expect("valid");
        let shared = shared(&cfg, 2);
        let mut w = Worker::new(0, Arc::clone(&shared), Vec::new(), 256);
        let now = shared.clock.now();
        let (gw, up) = {
            let sw = lock(&shared.shards[0].switch);
            (sw.topology().rifs[0].mac, sw.topology().rifs[1].mac)
        };
        let host = MacAddr([2, 0, 0, 0, 1, 10]);
        let mut pool = BufPool::new(64);
        // The next hop is resolved on shard 0, so handed frames leave at once.
        let mut batch = Batch::new();
        let answer =
            arp_reply(MacAddr([2, 0, 0, 0, 9, 1]), Ipv4Addr::new(203, 0, 113, 1), up, Ipv4Addr::new(203, 0, 113, 2));
        let mut f = pool.alloc().expect("buffer");
        f.load(&answer).expect("fits");
        batch.push(f).expect("room");
        lock(&shared.shards[0].switch).process(now, 2, &mut batch, &mut w.pool, &mut w.tx);
        w.flush(&shared, now);
        lock(&shared.ports[2].queues[0]).as_mem_mut().expect("mem").take_sent();
        // Six frames from each of p1 and p2, alternating: source port 4000 + i from p1, 5000 + i from p2.
        for i in 0..6u16 {
            for (port, base) in [(0u16, 4000u16), (1, 5000)] {
                let frame = udp(host, gw, Ipv4Addr::new(10, 0, 1, 10), Ipv4Addr::new(198, 51, 100, 1), base + i, 53, 8);
                let mut f = pool.alloc().expect("buffer");
                f.load(&frame).expect("fits");
                shared.shards[0].handoffs.push((port, f)).expect("room");
            }
        }
        let mut rounds = 0;
        while shared.shards[0].has_mail() || w.carry.is_some() {
            w.inbox(&shared, now);
            w.flush(&shared, now);
            rounds += 1;
            assert!(rounds < 10, "the inbox drains");
        }
        assert!(rounds > 1, "more than one round of {INBOX_BATCHES} bursts");
        let sent = lock(&shared.ports[2].queues[0]).as_mem_mut().expect("mem").take_sent();
        let sport = |f: &Vec<u8>| u16::from_be_bytes([f[34], f[35]]);
        let order: Vec<u16> = sent.iter().map(sport).collect();
        assert_eq!(order.len(), 12, "every handed frame left: {order:?}");
        for base in [4000, 5000] {
            let flow: Vec<u16> = order.iter().copied().filter(|p| (base..base + 6).contains(p)).collect();
            assert_eq!(flow, (base..base + 6).collect::<Vec<_>>(), "port order kept: {order:?}");
        }
    }

    #[test]
    fn batch_histograms_put_each_burst_in_its_bucket() {
        let h = BatchHistograms::default();
        for (frames, ns) in [(1, 1), (2, 250), (3, 251), (4, 500), (17, 1_000), (32, 1_024_000), (32, 5_000_000)] {
            h.record(frames, ns);
        }
        let frames: Vec<u64> = h.frames.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(frames, [1, 1, 2, 0, 0, 3], "sizes 1 | 2 | 3, 4 | - | - | 17, 32, 32");
        let ns: Vec<u64> = h.ns.iter().map(|c| c.load(Relaxed)).collect();
        // ≤250: 1, 250 | ≤500: 251, 500 | ≤1000: 1000 | ... | ≤1.024 ms: 1_024_000 | above: 5 ms.
        assert_eq!(ns, [2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(h.ns_sum.load(Relaxed), 1 + 250 + 251 + 500 + 1_000 + 1_024_000 + 5_000_000);
    }
}
