//! The live switch behind `vswitchd run`: opens the configured ports, starts the poll-mode [`crate::worker`]s,
//! reports counters while running, and stops them.
//!
//! Two separate steps, so that tests can run the worker machinery on memory ports without privileges:
//! 1. [`Runtime::open`] opens every configured port's queues with an opener
//!    ([`open_port`](crate::port::any::open_port) in the daemon), one port at a time. A port that fails to open
//!    is logged and kept as **failed**: stand-in queues that drop what is sent to them
//!    ([`crate::port::failed`]), its error in the report, retried with backoff ([`revive`]). Only a port that can
//!    never open ([`StartError::is_permanent`]) fails the start; everything opened before it is dropped (taps it
//!    created are deleted: a tap is made persistent only once it is part of the running switch, see
//!    `port::tap_persist`; a re-adopted tap stays). [`Runtime::new`] takes queues opened by the caller (memory
//!    ports made by a test).
//! 2. [`Runtime::start`] builds nothing more: it spawns the workers, returning a [`Running`] handle that can
//!    report ([`Running::report`]) and stop ([`Running::stop`]) them.
//!
//! # Queues and workers
//! A port has `q` queues, each an independent [`Port`](crate::port::Port) object behind its own `Mutex`: `q` = `port.queues` when
//! configured, else (for `tap` and `afpacket`) the number of workers when there are several (a multi-queue tap,
//! an AF_PACKET fanout group), else 1. Receive queues are dealt round-robin to the workers in configuration
//! order; any worker transmits on any port through the queue `worker % q`. See `docs/architecture.md` § Threads.
//!
//! # Configuration changes
//! [`Running::reconfigure`] moves a running switch to a new configuration as one transaction (the control
//! socket's `apply`), following a [`Plan`] that matches ports by name:
//! 1. Ports that are new, or whose back-end settings changed (kind, ifname, mtu, netns, mode, queue count), are
//!    opened first. A new one that fails is kept as failed (reported, retried), not a reason to refuse the
//!    apply; a changed one that fails keeps its old, working port and old settings (reported as
//!    [`Applied::change_failed`]; the running configuration keeps them); one that can never open refuses the
//!    apply (those opened are closed, nothing else happens, the error names the port). (A port that needs an
//!    interface an old port holds, e.g. a tap reopened with another queue count, can only be opened after the
//!    old one is closed: those are opened while the workers are paused, the old port closed without deleting
//!    its tap, and opened again with its old settings if the new ones fail.)
//! 2. An apply that keeps every port open at its index, the worker settings, the networks and router interfaces
//!    by name and order, and every connection's owner reaches the running workers without a pause
//!    (`Running::hot_commit`): the control thread builds the new tables ([`crate::pipeline::Prebuilt`]), each
//!    worker carries its own shard over at its next batch boundary ([`Switch::reconfigure_in_place`]). Any
//!    other: the workers are paused at a batch boundary (they flush and exit; a waker ends their idle sleep),
//!    every shard is rebuilt for the new topology with its learned state carried over ([`Switch::next_for`]
//!    then [`Switch::into_next`], or through a snapshot when the worker count or the owners change), the
//!    port list is rebuilt (ports whose back-end settings did not change keep their open queues: a tap does not
//!    flap), and new workers start, with the receive queues dealt again and the old workers' buffer pools
//!    handed over. The pause (reported as `pause_us`) measured 0.8–1.0 ms with two workers and three taps in a
//!    debug build (`tests/control_live.rs` prints it; 5.6–6.5 ms before the pools were handed over).
//! 3. Ports that are gone are closed (taps deleted, and the tap a port left in the namespace it moved out of).
//!
//! A panic in step 2 before the new switch takes over (opening a deferred port, computing the new tables, or
//! building them for the workers without a pause) is contained: the old shards were only read
//! ([`Switch::next_for`]), so they run on with the old configuration, and the apply fails
//! ([`ApplyError::Panicked`], counted as `control_panics`).
//!
//! Threads: [`Runtime`] and [`Running`] are used by the daemon's main or control thread (or a
//! test); [`Running::report`] may be called while the workers run (it takes each lock briefly). A
//! reconfiguration takes the `Running` by value, so nothing else can use it meanwhile (the daemon keeps it
//! behind a lock).

//!
//! # Where
//! This file holds the runtime (workers started, stopped, paused); [`reconfigure`] the transaction of a
//! configuration change ([`Plan`], [`Running::prepare`], [`Running::commit`]); [`report`] the counters
//! ([`LiveReport`]); [`revive`] failed ports brought up. Ports are opened by `crate::port::any`.

pub mod budget;
pub mod reconfigure;
pub mod report;
pub mod revive;

pub use reconfigure::{Applied, ApplyError, OpenPort, Plan, PortAction, Prepared, ShardRebuilt, HOT_APPLY_DEADLINE};
pub use report::{LivePortReport, LiveReport};

use crate::batch::BATCH_SIZE;
use crate::buffer::{BufPool, DEFAULT_LARGE_BUFFERS};
use crate::config::Config;
use crate::config::{PortConfig, PortKind};
use crate::ids::{table_id, Nanos, PortId};
use crate::pipeline::{Shard, Switch, TX_QUEUE_CAP};
use crate::port::any::{queue_count, AnyPort, OpenPortError};
use crate::port::failed::{stand_ins, PortFailure};
use crate::snapshot::{self, Restored, Snapshot};
use crate::worker::{lock, Clock, Faults, HotApply, LivePort, ShardLink, Shared, Worker, WorkerStats};
use report::report;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Why the live switch could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configured port could not be opened.
    #[error(transparent)]
    Port(#[from] OpenPortError),
    /// The queues handed to [`Runtime::new`] do not match the configuration.
    #[error("port {port}: {message}")]
    Queues {
        /// The port's name (or `*` for the port list).
        port: String,
        /// What is wrong.
        message: String,
    },
    /// A worker thread could not be spawned.
    #[error("cannot start worker {worker}: {source}")]
    Spawn {
        /// The worker's index.
        worker: usize,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl StartError {
    /// An error no retry can cure: the configuration asks for something this vswitchd cannot open at all (a
    /// replay-only kind, a back-end not built in, a missing or invalid ifname). Such a port is refused (at start,
    /// in an `apply`) instead of being kept as failed and retried.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StartError::Port(
                OpenPortError::ReplayOnly { .. }
                    | OpenPortError::NotBuilt { .. }
                    | OpenPortError::NoIfname { .. }
                    | OpenPortError::BadIfname { .. }
            )
        )
    }
}

/// How the live switch runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Worker threads.
    pub workers: usize,
    /// Nanoseconds a worker busy-polls without traffic before it sleeps on its fds.
    pub poll_idle: Nanos,
    /// Buffers in each worker's pool.
    pub pool_buffers: usize,
}

impl RunOptions {
    /// The options a configuration asks for.
    pub fn from_config(cfg: &Config) -> Self {
        RunOptions {
            workers: cfg.switch.workers.max(1),
            poll_idle: u64::from(cfg.switch.poll_idle_us) * 1000,
            pool_buffers: pool_buffers_for(cfg.ports.len()),
        }
    }
}

/// Opens port `pc`'s `n` queues with `open`. A failure is logged and gives a failed port: stand-in queues
/// ([`crate::port::failed`]) and the error, retried later; a permanent one ([`StartError::is_permanent`]) is
/// returned.
pub(crate) fn open_live(pc: &PortConfig, n: usize, open: &mut OpenPort<'_>) -> Result<LivePort, StartError> {
    match open(pc, n) {
        Ok(queues) => Ok(LivePort::up(&pc.name, queues)),
        Err(e) if e.is_permanent() => Err(e),
        Err(e) => {
            let error = e.to_string();
            tracing::error!(port = %pc.name, error = %error, "port failed to open: the others go on; retrying it with backoff");
            let lp = LivePort::up(&pc.name, stand_ins(&pc.name, n));
            *lock(&lp.failure) = Some(PortFailure::new(error, Instant::now()));
            Ok(lp)
        }
    }
}

/// `(name, error)` of the ports of `ports` that are down.
pub(crate) fn failed_ports(ports: &[LivePort]) -> Vec<(String, String)> {
    ports.iter().filter_map(|lp| lp.failure().map(|f| (lp.name.clone(), f.error))).collect()
}

/// A worker's pool: a full transmit queue for every port (floods fill them all) plus a few bursts in flight,
/// and at least 4096 buffers (8 MiB).
pub fn pool_buffers_for(ports: usize) -> usize {
    (ports * TX_QUEUE_CAP + 4 * BATCH_SIZE).max(4096)
}

/// A live switch with its ports open, not yet forwarding.
#[derive(Debug)]
pub struct Runtime {
    shared: Arc<Shared>,
    meta: Vec<PortMeta>,
    opts: RunOptions,
    /// The configuration the ports and switch were made for.
    cfg: Config,
}

/// What the report says about a port besides its counters.
#[derive(Debug, Clone)]
struct PortMeta {
    kind: PortKind,
    ifname: Option<String>,
    mode: Option<String>,
}

impl Runtime {
    /// A runtime for `cfg` over already opened `ports` (`ports[i]` holds the queues of `cfg.ports[i]`, at least
    /// one each).
    pub fn new(cfg: &Config, ports: Vec<Vec<AnyPort>>, opts: RunOptions) -> Result<Runtime, StartError> {
        if ports.len() != cfg.ports.len() {
            return Err(StartError::Queues {
                port: "*".to_string(),
                message: format!("{} ports opened for {} configured", ports.len(), cfg.ports.len()),
            });
        }
        let mut live = Vec::with_capacity(ports.len());
        for (pc, queues) in cfg.ports.iter().zip(ports) {
            if queues.is_empty() {
                return Err(StartError::Queues { port: pc.name.clone(), message: "no queues".to_string() });
            }
            live.push(LivePort::up(&pc.name, queues));
        }
        Runtime::with_ports(cfg, live, opts)
    }

    /// A runtime for `cfg` whose ports are opened with `open`, one by one: a port that fails is reported, kept
    /// as failed (stand-in queues) and retried later ([`Running::prepare_retry`]); the others come up.
    pub fn open(cfg: &Config, opts: RunOptions, open: &mut OpenPort<'_>) -> Result<Runtime, StartError> {
        let workers = opts.workers.max(1);
        // On a permanent error the ports opened so far are dropped (taps created are deleted: not yet persistent).
        let live =
            cfg.ports.iter().map(|pc| open_live(pc, queue_count(pc, workers), open)).collect::<Result<_, _>>()?;
        Runtime::with_ports(cfg, live, opts)
    }

    /// A runtime for `cfg` over `live` (`live[i]` is `cfg.ports[i]`).
    fn with_ports(cfg: &Config, live: Vec<LivePort>, opts: RunOptions) -> Result<Runtime, StartError> {
        for lp in &live {
            // Part of the running switch: its tap outlives the process (`port::tap_persist`).
            lp.persist();
        }
        let workers = opts.workers.max(1);
        let clock = Clock::new();
        let parts = Parts {
            switches: (0..workers).map(|i| Switch::new(cfg).sharded(Shard::new(i, workers))).collect(),
            ports: live,
            stop: Arc::new(AtomicBool::new(false)),
            clock,
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
            pools: Vec::new(),
            faults: Arc::new(Faults::default()),
        };
        Ok(Runtime::from_parts(parts, cfg.clone(), RunOptions { workers, ..opts }))
    }

    /// A runtime over `parts`, made for `cfg` (`parts.ports[i]` holds the queues of `cfg.ports[i]`).
    fn from_parts(parts: Parts, cfg: Config, opts: RunOptions) -> Runtime {
        let meta = cfg
            .ports
            .iter()
            .zip(&parts.ports)
            .map(|(pc, lp)| PortMeta {
                kind: pc.kind,
                ifname: pc.ifname.clone(),
                mode: lp.queues.first().and_then(|q| lock(q).xdp_mode()),
            })
            .collect();
        let shared = Shared {
            shards: parts.switches.into_iter().map(ShardLink::new).collect(),
            generation: AtomicU64::new(0),
            hot: Mutex::new(HotApply::default()),
            ports: parts.ports,
            stop: parts.stop,
            pause: AtomicBool::new(false),
            clock: parts.clock,
            poll_idle: opts.poll_idle,
            workers: parts.workers,
            faults: parts.faults,
        };
        Runtime { shared: Arc::new(shared), meta, opts, cfg }
    }

    /// The configuration this runtime was made for.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The flag that stops the workers (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shared.stop)
    }

    /// Runs `f` on queue `queue` of port `port` (tests inject frames into memory ports this way).
    pub fn with_queue<R>(&self, port: PortId, queue: usize, f: impl FnOnce(&mut AnyPort) -> R) -> R {
        f(&mut lock(&self.shared.ports[port as usize].queues[queue]))
    }

    /// Spawns the workers. If one cannot be spawned, those already running are stopped and joined.
    pub fn start(self) -> Result<Running, StartError> {
        match self.spawn(Vec::new()) {
            (_, Some(e)) => Err(e),
            (running, None) => Ok(running),
        }
    }

    /// Spawns the workers. If one cannot be spawned, the stop flag is set, those already running are joined,
    /// and the (stopping) `Running` is returned with the error.
    /// `pools` are those of the workers that ran before (a configuration change), reused when their capacity
    /// is still the one wanted.
    fn spawn(self, pools: Vec<BufPool>) -> (Running, Option<StartError>) {
        let assignment = assign(&self.shared.ports, self.opts.workers);
        let mut handles = Vec::with_capacity(assignment.len());
        let mut wakers = Vec::with_capacity(assignment.len());
        let mut pools = pools.into_iter().filter(|p| p.capacity() == self.opts.pool_buffers);
        for (id, rx) in assignment.iter().enumerate() {
            let pool =
                pools.next().unwrap_or_else(|| BufPool::with_large(self.opts.pool_buffers, DEFAULT_LARGE_BUFFERS));
            let worker = Worker::with_pool(id, Arc::clone(&self.shared), rx.clone(), pool);
            wakers.extend(worker.waker());
            match std::thread::Builder::new().name(format!("vsw-worker-{id}")).spawn(move || worker.run()) {
                Ok(h) => handles.push(h),
                Err(source) => {
                    self.shared.stop.store(true, Relaxed);
                    wake(&wakers);
                    for h in handles.drain(..) {
                        let _ = h.join();
                    }
                    let running = Running { rt: self, assignment, handles, wakers };
                    return (running, Some(StartError::Spawn { worker: id, source }));
                }
            }
        }
        for (id, rx) in assignment.iter().enumerate() {
            tracing::info!(worker = id, rx_queues = ?queue_names(&self.shared.ports, rx), "worker started");
        }
        (Running { rt: self, assignment, handles, wakers }, None)
    }
}

/// What a runtime is made of, taken apart while its workers are paused.
#[derive(Debug)]
struct Parts {
    /// One shard per worker, by worker id.
    switches: Vec<Switch>,
    ports: Vec<LivePort>,
    stop: Arc<AtomicBool>,
    clock: Clock,
    workers: Vec<WorkerStats>,
    /// The workers' buffer pools, for the next workers.
    pools: Vec<BufPool>,
    /// Panics contained so far.
    faults: Arc<Faults>,
}

fn wake(wakers: &[Arc<mio::Waker>]) {
    for w in wakers {
        // A failed wake only means the worker notices within MAX_SLEEP.
        let _ = w.wake();
    }
}

/// Deals every `(port, queue)` to the workers round-robin, in configuration order.
fn assign(ports: &[LivePort], workers: usize) -> Vec<Vec<(PortId, usize)>> {
    let mut out = vec![Vec::new(); workers];
    let all = ports.iter().enumerate().flat_map(|(p, lp)| (0..lp.queues.len()).map(move |q| (table_id(p), q)));
    for (i, pq) in all.enumerate() {
        out[i % workers].push(pq);
    }
    out
}

fn queue_names(ports: &[LivePort], rx: &[(PortId, usize)]) -> Vec<String> {
    rx.iter().map(|&(p, q)| format!("{}/{q}", ports[p as usize].name)).collect()
}

/// A running switch: workers forwarding until [`Running::stop`] (or the stop flag).
#[derive(Debug)]
pub struct Running {
    rt: Runtime,
    assignment: Vec<Vec<(PortId, usize)>>,
    handles: Vec<JoinHandle<BufPool>>,
    wakers: Vec<Arc<mio::Waker>>,
}

impl Runtime {
    /// Puts a snapshot's learned state into the switch (before it forwards, or between batches); see
    /// [`crate::snapshot::restore`].
    pub fn restore(&self, snap: &Snapshot) -> Restored {
        let now = self.shared.clock.now();
        let mut guards: Vec<_> = self.shared.shards.iter().map(|l| lock(&l.switch)).collect();
        let mut shards: Vec<&mut Switch> = guards.iter_mut().map(|g| &mut **g).collect();
        snapshot::restore_shards(&mut shards, &self.cfg, snap, now)
    }

    /// A snapshot of the switch's learned state now (every shard locked while it is copied).
    pub fn snapshot(&self) -> Snapshot {
        let now = self.shared.clock.now();
        let guards: Vec<_> = self.shared.shards.iter().map(|l| lock(&l.switch)).collect();
        let shards: Vec<&Switch> = guards.iter().map(|g| &**g).collect();
        snapshot::take_shards(&shards, &self.cfg, now)
    }

    /// Makes closing this runtime delete every port's interface (`vswitchd run --cleanup`).
    pub fn remove_ports_on_close(&self) {
        for lp in &self.shared.ports {
            lp.remove_on_close();
        }
    }
}

/// How the workers ended.
#[derive(Debug)]
pub struct Stopped {
    /// The final counters.
    pub report: LiveReport,
    /// Workers that panicked, by id.
    pub panicked: Vec<usize>,
    /// The runtime, ports still open (drop it to close them).
    pub runtime: Runtime,
}

impl Running {
    /// The flag that stops the workers.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.rt.stop_flag()
    }

    /// True once the stop flag is set (by a signal, [`Running::stop`], or a panicking worker).
    pub fn stopping(&self) -> bool {
        self.rt.shared.stop.load(Relaxed)
    }

    /// Runs `f` on queue `queue` of port `port` (tests inject frames into memory ports this way).
    pub fn with_queue<R>(&self, port: PortId, queue: usize, f: impl FnOnce(&mut AnyPort) -> R) -> R {
        self.rt.with_queue(port, queue, f)
    }

    /// Starts a new window for every worker's [`WorkerStats::max_gap_ns`](crate::worker::WorkerStats).
    pub fn reset_max_gaps(&self) {
        for w in &self.rt.shared.workers {
            w.max_gap_ns.store(0, Relaxed);
        }
    }

    /// The counters now.
    pub fn report(&self) -> LiveReport {
        report(&self.rt, &self.assignment)
    }

    /// Sets the stop flag, waits for every worker to flush and exit, and returns the final counters with the
    /// runtime (whose ports are still open, so their counters could be read; dropping it closes them).
    pub fn stop(self) -> Stopped {
        self.rt.shared.stop.store(true, Relaxed);
        wake(&self.wakers);
        let mut panicked = Vec::new();
        for (id, h) in self.handles.into_iter().enumerate() {
            if h.join().is_err() {
                panicked.push(id);
            }
        }
        let report = report(&self.rt, &self.assignment);
        Stopped { report, panicked, runtime: self.rt }
    }
}

/// Accessors for the control thread.
impl Running {
    /// The running configuration.
    pub fn config(&self) -> &Config {
        &self.rt.cfg
    }

    /// The options the workers run with.
    pub fn options(&self) -> &RunOptions {
        &self.rt.opts
    }

    /// The switch clock's time now (what the workers pass the pipeline).
    pub fn now(&self) -> Nanos {
        self.rt.shared.clock.now()
    }

    /// A snapshot of the switch's learned state now ([`Runtime::snapshot`]).
    pub fn snapshot(&self) -> Snapshot {
        self.rt.snapshot()
    }

    /// Test hook: makes the next worker iteration panic (the worker recovers; see `crate::worker`).
    pub fn inject_worker_panic(&self) {
        self.rt.shared.faults.inject_panic.store(true, Relaxed);
    }

    /// Test hook: makes the next configuration switch-over panic once the new switch is computed (the apply
    /// fails, the previous configuration runs on; see [`Running::commit`]).
    pub fn inject_apply_panic(&self) {
        self.rt.shared.faults.inject_apply_panic.store(true, Relaxed);
    }

    /// Test hook (feature `testing`): makes the next worker that carries its shard over to a configuration
    /// applied without a pause panic once its new tables are computed (the apply goes on: the control thread
    /// rebuilds that shard, see [`Applied::shards_rebuilt`]).
    #[cfg(feature = "testing")]
    pub fn inject_hot_apply_panic(&self) {
        self.rt.shared.faults.inject_hot_apply_panic.store(true, Relaxed);
    }

    /// Counts a control request that panicked (reported as `control_panics`).
    pub fn count_control_panic(&self) -> u64 {
        self.rt.shared.faults.control_panics.fetch_add(1, Relaxed) + 1
    }

    /// Puts a snapshot's learned state into the running switch ([`Runtime::restore`]).
    pub fn restore(&self, snap: &Snapshot) -> Restored {
        self.rt.restore(snap)
    }

    /// Runs `f` on worker 0's shard of the switch, locked: for what every shard holds the same (topology,
    /// routes, MAC tables and neighbours, which the shards replicate). Keep it short: worker 0 waits for it.
    pub fn with_switch<R>(&self, f: impl FnOnce(&mut Switch) -> R) -> R {
        self.with_shard(0, f)
    }

    /// The number of shards (one per worker).
    pub fn shards(&self) -> usize {
        self.rt.shared.shards.len()
    }

    /// Runs `f` on worker `k`'s shard, locked (only that worker waits).
    pub fn with_shard<R>(&self, k: usize, f: impl FnOnce(&mut Switch) -> R) -> R {
        f(&mut lock(&self.rt.shared.shards[k].switch))
    }

    /// Runs `f` on every shard in turn, each locked only while `f` runs on it (what counts or holds
    /// connections: `conntrack flush`, listing connections).
    pub fn for_each_shard(&self, mut f: impl FnMut(&mut Switch)) {
        for l in &self.rt.shared.shards {
            f(&mut lock(&l.switch));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::mem::{MemPort, TxMode};
    use crate::wire::builder::{eth, pattern};
    use crate::wire::MacAddr;
    use std::time::{Duration, Instant};

    const CONFIG: &str = r#"
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
"#;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn frame(dst: u8, src: u8, tag: u8) -> Vec<u8> {
        let mut payload = pattern(46);
        payload[0] = tag;
        eth(mac(dst), mac(src), 0x88b5, &payload)
    }

    /// `queues` memory queues per configured port.
    fn mem_ports(cfg: &Config, queues: usize) -> Vec<Vec<AnyPort>> {
        cfg.ports.iter().map(|p| (0..queues).map(|_| AnyPort::Mem(MemPort::new(p.name.clone()))).collect()).collect()
    }

    fn opts(workers: usize) -> RunOptions {
        RunOptions { workers, poll_idle: 50_000, pool_buffers: 1024 }
    }

    fn inject(r: &Running, port: PortId, queue: usize, f: &[u8]) {
        r.with_queue(port, queue, |p| p.as_mem_mut().expect("memory port").inject(f));
    }

    fn sent(r: &Running, port: PortId, queue: usize) -> Vec<Vec<u8>> {
        r.with_queue(port, queue, |p| p.as_mem_mut().expect("memory port").take_sent())
    }

    /// Polls `cond` for up to 2 s.
    fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    #[test]
    fn a_worker_that_panics_recovers_counts_it_and_keeps_forwarding() {
        let cfg = Config::parse(CONFIG, "t").unwrap();
        let running = Runtime::new(&cfg, mem_ports(&cfg, 1), opts(2)).unwrap().start().unwrap();
        inject(&running, 0, 0, &frame(2, 1, 1));
        assert!(eventually(|| !sent(&running, 1, 0).is_empty()), "a → flood");
        running.inject_worker_panic();
        assert!(eventually(|| running.report().worker_restarts == 1), "the panic is counted");
        assert!(!running.stopping(), "a contained panic does not stop the switch");
        // Both workers still forward: every port's queue is polled (a learned unicast b → a, then a → b).
        inject(&running, 1, 0, &frame(1, 2, 2));
        assert!(eventually(|| sent(&running, 0, 0).iter().any(|f| f[14] == 2)), "b → a after the panic");
        inject(&running, 0, 0, &frame(2, 1, 3));
        assert!(eventually(|| sent(&running, 1, 0).iter().any(|f| f[14] == 3)), "a → b after the panic");
        let stopped = running.stop();
        assert!(stopped.panicked.is_empty(), "no thread died");
        assert_eq!(stopped.report.worker_restarts, 1);
        assert!(
            stopped.report.workers.iter().all(|w| w.pool_available == w.pool_capacity),
            "no buffer lost: {:?}",
            stopped.report.workers
        );
    }

    #[test]
    fn one_worker_floods_then_forwards_learned_unicast_and_stops_with_every_buffer_back() {
        let cfg = Config::parse(CONFIG, "test").unwrap();
        let running = Runtime::new(&cfg, mem_ports(&cfg, 1), opts(1)).unwrap().start().unwrap();
        // 1 → 2 is unknown unicast: flooded to b and c. Then 2 → 1 from b is forwarded to a only.
        inject(&running, 0, 0, &frame(2, 1, 1));
        assert!(eventually(|| running.report().ports["a"].pipeline.flooded == 1));
        inject(&running, 1, 0, &frame(1, 2, 2));
        assert!(eventually(|| running.report().ports["b"].pipeline.forwarded == 1));
        assert_eq!(sent(&running, 0, 0), vec![frame(1, 2, 2)]);
        assert_eq!(sent(&running, 1, 0), vec![frame(2, 1, 1)]);
        assert_eq!(sent(&running, 2, 0), vec![frame(2, 1, 1)]);

        let t = Instant::now();
        let stopped = running.stop();
        assert!(t.elapsed() < Duration::from_millis(200), "stop took {:?}", t.elapsed());
        assert!(stopped.panicked.is_empty());
        let r = &stopped.report;
        assert_eq!((r.frames_in, r.frames_out), (2, 3));
        assert_eq!(r.workers.len(), 1);
        let w = &r.workers[0];
        assert_eq!(w.rx_packets, 2);
        assert_eq!(w.rx_batches, 2, "each frame was injected after the previous one was forwarded");
        assert_eq!(w.rx_queues, ["a/0", "b/0", "c/0"]);
        assert!(w.busy_iterations >= 1 && w.busy_iterations <= 2, "{w:?}");
        assert!(w.iterations >= w.busy_iterations);
        assert_eq!(w.pool_available, w.pool_capacity, "every buffer came back to the pool");
        assert_eq!(w.buffers_added, 0);
        assert!(w.cpu_ns > 0, "thread CPU time is read at exit");
        assert_eq!(r.ports["c"].io.tx_packets, 1);
        let json = serde_json::to_value(r).unwrap();
        for key in ["frames_in", "frames_out", "ports", "drops", "networks", "bridge", "router", "neigh", "workers"] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
    }

    #[test]
    fn two_workers_share_the_tables_and_split_the_queues() {
        let cfg = Config::parse(CONFIG, "test").unwrap();
        let running = Runtime::new(&cfg, mem_ports(&cfg, 2), opts(2)).unwrap().start().unwrap();
        let r = running.report();
        assert_eq!(r.workers[0].rx_queues, ["a/0", "b/0", "c/0"]);
        assert_eq!(r.workers[1].rx_queues, ["a/1", "b/1", "c/1"]);
        // Learned by worker 1 (queue a/1), used by worker 0 (queue b/0): the MAC tables are replicated, and what
        // worker 1 learned is applied by worker 0 before its next burst.
        inject(&running, 0, 1, &frame(2, 1, 1));
        assert!(eventually(|| running.report().ports["a"].pipeline.flooded == 1));
        const N: u8 = 100;
        for i in 0..N {
            inject(&running, 1, usize::from(i % 2), &frame(1, 2, i));
        }
        assert!(eventually(|| running.report().ports["b"].pipeline.forwarded == u64::from(N)));
        // Each worker transmits on queue `worker % 2`: both of a's queues carried some frames, and nothing was
        // lost or duplicated.
        let (q0, q1) = (sent(&running, 0, 0), sent(&running, 0, 1));
        assert!(!q0.is_empty() && !q1.is_empty(), "{} / {}", q0.len(), q1.len());
        let mut tags: Vec<u8> = q0.iter().chain(&q1).map(|f| f[14]).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..N).collect::<Vec<_>>());
        // The flood from a/1 (worker 1) went out on queue 1 of b and c.
        assert_eq!(sent(&running, 2, 1), vec![frame(2, 1, 1)]);

        let stopped = running.stop();
        let r = &stopped.report;
        assert_eq!(r.workers.iter().map(|w| w.rx_packets).sum::<u64>(), 1 + u64::from(N));
        assert!(r.workers.iter().all(|w| w.rx_packets > 0), "{:?}", r.workers);
        assert!(r.workers.iter().all(|w| w.pool_available == w.pool_capacity), "{:?}", r.workers);
        assert_eq!(r.ports["a"].queue_io.len(), 2);
        assert_eq!(r.ports["a"].io.tx_packets, u64::from(N));
    }

    #[test]
    fn idle_workers_sleep_and_still_notice_traffic_and_stop() {
        let cfg = Config::parse(CONFIG, "test").unwrap();
        let o = RunOptions { poll_idle: 0, ..opts(2) };
        let running = Runtime::new(&cfg, mem_ports(&cfg, 1), o).unwrap().start().unwrap();
        assert!(eventually(|| running.report().workers.iter().all(|w| w.sleeps >= 5)));
        let before = running.report().workers.iter().map(|w| w.iterations).sum::<u64>();
        std::thread::sleep(Duration::from_millis(100));
        let after = running.report().workers.iter().map(|w| w.iterations).sum::<u64>();
        // Memory ports have no fd, so a sleep lasts at most 1 ms: a few hundred iterations, not millions.
        assert!(after - before < 1_000, "{} iterations in 100 ms while idle", after - before);
        inject(&running, 2, 0, &frame(1, 3, 7));
        assert!(eventually(|| running.report().ports["c"].pipeline.flooded == 1));
        let t = Instant::now();
        let stopped = running.stop();
        assert!(t.elapsed() < Duration::from_millis(200));
        assert_eq!(stopped.report.frames_out, 2);
    }

    const ROUTED: &str = r#"
[[network]]
name = "lan"
subnet = "10.0.0.0/24"
gateway = "10.0.0.1"
gateway_mac = "02:00:00:00:01:01"

[[port]]
name = "a"
kind = "mem"
network = "lan"

[[port]]
name = "up"
kind = "mem"
address = "203.0.113.2/24"
mac = "02:00:00:00:02:01"
"#;

    #[test]
    fn frames_held_for_arp_by_one_worker_and_released_by_the_other_keep_pools_bounded() {
        use crate::wire::builder::{arp_reply, Ipv4Spec};
        use std::net::Ipv4Addr;
        let cfg = Config::parse(ROUTED, "test").unwrap();
        let o = RunOptions { pool_buffers: 96, ..opts(2) };
        let running = Runtime::new(&cfg, mem_ports(&cfg, 1), o).unwrap().start().unwrap();
        let r = running.report();
        assert_eq!(
            (r.workers[0].rx_queues.clone(), r.workers[1].rx_queues.clone()),
            (vec!["a/0".into()], vec!["up/0".into()])
        );
        // Worker 0 receives 60 packets for 60 unresolved neighbours on the uplink: the router holds them (buffers
        // of worker 0's pool) and sends 60 ARP requests (at most 32 + 32 buffers in use during one burst).
        let (host, gw) = (MacAddr([2, 0, 0, 0, 0, 5]), MacAddr([2, 0, 0, 0, 1, 1]));
        let target = |i: u8| Ipv4Addr::new(203, 0, 113, 10 + i);
        for i in 0..60 {
            let pkt = Ipv4Spec::new(host, gw, Ipv4Addr::new(10, 0, 0, 5), target(i)).udp(1000, 2000, 10);
            inject(&running, 0, 0, &pkt);
        }
        assert!(eventually(|| running.report().switch.router.arp_requests >= 60), "ARP requests");
        // Fewer than half of worker 0's buffers are free: it tops its pool up.
        assert!(eventually(|| running.report().workers[0].buffers_added > 0));
        // Worker 1 receives the answers and releases the held packets: they leave on the uplink and their
        // buffers end in worker 1's pool, which stays within its capacity.
        let up_mac = MacAddr([2, 0, 0, 0, 2, 1]);
        for i in 0..60 {
            let neigh = MacAddr([2, 0, 0, 0, 3, i]);
            inject(&running, 1, 0, &arp_reply(neigh, target(i), up_mac, Ipv4Addr::new(203, 0, 113, 2)));
        }
        assert!(eventually(|| running.report().switch.router.forwarded == 60), "held packets released");
        let stopped = running.stop();
        for w in &stopped.report.workers {
            assert!(w.pool_available <= w.pool_capacity, "{w:?}");
            assert_eq!(w.pool_capacity, 96);
        }
        assert_eq!(stopped.report.workers[1].pool_available, 96, "worker 1's pool is full, not over-full");
        assert_eq!(stopped.report.switch.drops.get("no-buffer"), None);
    }

    const MASQUERADE: &str = r#"
[[network]]
name = "lan"
subnet = "10.0.0.0/24"
gateway = "10.0.0.1"
gateway_mac = "02:00:00:00:01:01"
masquerade = true

[[port]]
name = "a"
kind = "mem"
network = "lan"

[[port]]
name = "b"
kind = "mem"
network = "lan"

[[port]]
name = "up"
kind = "mem"
address = "203.0.113.2/24"
mac = "02:00:00:00:02:01"

[[route]]
prefix = "0.0.0.0/0"
via = "203.0.113.1"
"#;

    /// Four workers (on this two-core machine), every port with four queues so that every worker receives on
    /// every port: 32 masqueraded UDP flows from a container, each sent on one queue and answered on another, so
    /// most replies arrive on a worker that does not own their connection and are handed over. Every reply
    /// reaches the container exactly once, each connection lives on one shard, a MAC learned by one worker is
    /// forwarded to by the others, nothing is dropped, and every buffer comes back.
    #[test]
    fn four_workers_masquerade_hand_replies_to_their_owner_and_lose_nothing() {
        use crate::wire::builder::{arp_reply, arp_request, Ipv4Spec};
        use std::net::Ipv4Addr;
        let cfg = Config::parse(MASQUERADE, "test").unwrap();
        let running = Runtime::new(&cfg, mem_ports(&cfg, 4), opts(4)).unwrap().start().unwrap();
        let r = running.report();
        assert_eq!(r.workers.len(), 4);
        assert!(r.workers.iter().all(|w| w.rx_queues.len() == 3), "every worker polls one queue of each port");
        let (host, gw, up) = (MacAddr([2, 0, 0, 0, 0, 5]), MacAddr([2, 0, 0, 0, 1, 1]), MacAddr([2, 0, 0, 0, 2, 1]));
        let (inside, next_hop, outside) =
            (Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2));
        // The container asks for its gateway (worker 0), the next hop answers the switch (worker 3).
        inject(&running, 0, 0, &arp_request(host, inside, Ipv4Addr::new(10, 0, 0, 1)));
        inject(&running, 2, 3, &arp_reply(MacAddr([2, 0, 0, 0, 9, 1]), next_hop, up, outside));
        assert!(eventually(|| running.report().switch.router.arp_replies >= 1));
        assert!(eventually(|| (0..4).all(|k| running.with_shard(k, |s| s.router().neighbours(0).len() == 2))));
        const N: u8 = 32;
        let server = |i: u8| Ipv4Addr::new(198, 51, 100, 1 + i);
        // What a port sent on any of its queues, collected as it goes.
        let collected = std::cell::RefCell::new(vec![Vec::new(); 3]);
        let sent_on = |port: PortId| -> Vec<Vec<u8>> {
            let mut all = collected.borrow_mut();
            for q in 0..4 {
                all[usize::from(port)].extend(sent(&running, port, q));
            }
            all[usize::from(port)].clone()
        };
        for i in 0..N {
            let pkt = Ipv4Spec::new(host, gw, inside, server(i)).udp(4000 + u16::from(i), 53, 8);
            inject(&running, 0, usize::from(i % 4), &pkt);
        }
        assert!(eventually(|| sent_on(2).len() == usize::from(N)), "every flow leaves masqueraded");
        for i in 0..N {
            let reply =
                Ipv4Spec::new(MacAddr([2, 0, 0, 0, 9, 1]), up, server(i), outside).udp(53, 4000 + u16::from(i), 8);
            inject(&running, 2, usize::from((i + 1) % 4), &reply);
        }
        let back = || -> Vec<u16> {
            let mut v: Vec<u16> = sent_on(0)
                .iter()
                .filter(|f| f.len() > 37 && f[12..14] == [8, 0])
                .map(|f| u16::from_be_bytes([f[36], f[37]]))
                .collect();
            v.sort_unstable();
            v
        };
        assert!(eventually(|| back().len() >= usize::from(N)), "every reply back: {:?}", back());
        assert_eq!(back(), (4000..4000 + u16::from(N)).collect::<Vec<_>>(), "each reply once, to its own flow");
        // The container's MAC, learned by worker 0 (queue a/0), is forwarded to (not flooded) by the workers
        // polling b's other queues.
        for q in 1..4u8 {
            inject(&running, 1, usize::from(q), &eth(host, MacAddr([2, 0, 0, 0, 0, 6]), 0x88b5, &pattern(46)));
        }
        assert!(eventually(|| running.report().ports["b"].pipeline.forwarded == 3), "unicast to the container");
        let mut per_shard = Vec::new();
        running.for_each_shard(|s| per_shard.push(s.conntrack().len()));
        assert_eq!(per_shard.iter().sum::<usize>(), usize::from(N), "one connection per flow: {per_shard:?}");
        assert!(per_shard.iter().filter(|&&n| n > 0).count() >= 2, "the flows' owners spread: {per_shard:?}");
        let stopped = running.stop();
        let r = &stopped.report;
        assert!(stopped.panicked.is_empty());
        assert!(r.switch.drops.is_empty(), "{:?}", r.switch.drops);
        assert!(r.workers.iter().all(|w| w.rx_packets > 0), "every worker received: {:?}", r.workers);
        let handed: u64 = r.workers.iter().map(|w| w.handed_off).sum();
        assert!(handed > 0, "replies were handed to their owner");
        assert_eq!(handed, r.workers.iter().map(|w| w.handed_in).sum::<u64>());
        assert!(r.workers.iter().all(|w| w.handoff_dropped == 0 && w.updates_dropped == 0), "{:?}", r.workers);
        // A handed frame's buffer ends in the owner's pool, which keeps no more than its capacity: a worker is short
        // at most the buffers it handed away (topped up when below half), and none is over-full.
        for w in &r.workers {
            assert!(w.pool_available <= w.pool_capacity && w.pool_capacity - w.pool_available <= w.handed_off, "{w:?}");
        }
    }

    #[test]
    fn runtime_refuses_queues_that_do_not_match_the_configuration() {
        let cfg = Config::parse(CONFIG, "test").unwrap();
        let mut ports = mem_ports(&cfg, 1);
        ports.pop();
        assert!(matches!(Runtime::new(&cfg, ports, opts(1)), Err(StartError::Queues { .. })));
        let mut ports = mem_ports(&cfg, 1);
        ports[1].clear();
        let err = Runtime::new(&cfg, ports, opts(1)).unwrap_err();
        assert_eq!(err.to_string(), "port b: no queues");
    }

    /// Not a test: 1 vs 2 workers over cycling memory ports, where the shared switch lock is the bottleneck.
    /// `cargo test -p dataplane --release --lib live::tests::measure -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn measure_mem_throughput_one_vs_two_workers() {
        let cfg = Config::parse(CONFIG, "test").unwrap();
        for workers in [1, 2] {
            // Two cycling ports sending to each other's learned MACs (learned on the first frames).
            let ports: Vec<Vec<AnyPort>> = cfg
                .ports
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    (0..workers)
                        .map(|_| {
                            let mut m = match i {
                                0 => MemPort::cycle(p.name.clone(), vec![frame(2, 1, 0)]),
                                1 => MemPort::cycle(p.name.clone(), vec![frame(1, 2, 0)]),
                                _ => MemPort::new(p.name.clone()),
                            };
                            m.set_tx_mode(TxMode::Count);
                            AnyPort::Mem(m)
                        })
                        .collect()
                })
                .collect();
            let running = Runtime::new(&cfg, ports, opts(workers)).unwrap().start().unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let a = running.report();
            std::thread::sleep(Duration::from_secs(2));
            let b = running.stop().report;
            let pkts: u64 = b.workers.iter().map(|w| w.rx_packets).sum::<u64>()
                - a.workers.iter().map(|w| w.rx_packets).sum::<u64>();
            let busy: u64 =
                b.workers.iter().map(|w| w.busy_ns).sum::<u64>() - a.workers.iter().map(|w| w.busy_ns).sum::<u64>();
            let secs = (b.uptime_ns - a.uptime_ns) as f64 / 1e9;
            println!(
                "workers={workers}: {:.2} Mpps, {:.0} ns busy per packet",
                pkts as f64 / secs / 1e6,
                busy as f64 / pkts as f64
            );
        }
    }

    /// Opens memory ports for a reconfiguration.
    fn open_mem(pc: &crate::config::PortConfig, n: usize) -> Result<Vec<AnyPort>, StartError> {
        Ok((0..n).map(|_| AnyPort::Mem(MemPort::new(pc.name.clone()))).collect())
    }

    #[test]
    fn an_apply_that_keeps_every_port_reaches_the_workers_without_a_pause() {
        let cfg = Config::parse(CONFIG, "t").unwrap();
        let running = Runtime::new(&cfg, mem_ports(&cfg, 1), opts(2)).unwrap().start().unwrap();
        inject(&running, 0, 0, &frame(2, 1, 1));
        assert!(eventually(|| !sent(&running, 1, 0).is_empty()), "a → flood");
        let before: Vec<u64> = running.report().workers.iter().map(|w| w.iterations).collect();
        // Same ports, networks and owners; another MAC limit.
        let limited = Config::parse(&CONFIG.replace("name = \"lan\"", "name = \"lan\"\nmac_limit = 77"), "t").unwrap();
        let (running, r) = running.reconfigure(&limited, opts(2), &mut open_mem);
        let applied = r.expect("applied");
        assert!(!applied.paused, "taken at a batch boundary, no restart");
        assert_eq!(applied.carried.fdb_kept, 1, "the learned MAC stays");
        for k in 0..running.shards() {
            assert_eq!(running.with_shard(k, |sw| sw.topology().networks[0].mac_limit), 77, "shard {k}");
        }
        let after: Vec<u64> = running.report().workers.iter().map(|w| w.iterations).collect();
        assert!(after.iter().zip(&before).all(|(a, b)| a >= b), "the same workers went on: {before:?} → {after:?}");
        assert_eq!(running.config(), &limited);
        // Still forwarding, with what was learned before: b → a is unicast.
        inject(&running, 1, 0, &frame(1, 2, 2));
        assert!(eventually(|| sent(&running, 0, 0).iter().any(|f| f[14] == 2)), "b → a after the apply");
        // A new port needs the pause.
        let more = CONFIG.to_string() + "\n[[port]]\nname = \"d\"\nkind = \"mem\"\nnetwork = \"lan\"\n";
        let (running, r) = running.reconfigure(&Config::parse(&more, "t").unwrap(), opts(2), &mut open_mem);
        assert!(r.expect("applied").paused, "a port was opened");
        assert!(running.stop().panicked.is_empty());
    }
}
