//! The live switch behind `vswitchd run`: opens the configured ports, starts the poll-mode [`crate::worker`]s,
//! reports counters while running, and stops them.
//!
//! Two separate steps, so that tests can run the worker machinery on memory ports without privileges:
//! 1. [`open_ports`] opens every configured port's queues (taps, AF_PACKET, AF_XDP). On the first failure it
//!    returns an error naming the port, and every queue opened so far is dropped on the way out: taps it created
//!    are deleted (a non-persistent tap goes away with its last fd), sockets closed. Nothing is left half-made.
//! 2. [`Runtime::new`] takes the opened queues (from `open_ports`, or [`AnyPort::Mem`] ports made by a test),
//!    builds the [`Switch`], and [`Runtime::start`] spawns the workers, returning a [`Running`] handle that can
//!    report ([`Running::report`]) and stop ([`Running::stop`]) them.
//!
//! # Queues and workers
//! A port has `q` queues, each an independent [`Port`] object behind its own `Mutex`: `q` = `port.queues` when
//! configured, else (for `tap` and `afpacket`) the number of workers when there are several (a multi-queue tap,
//! an AF_PACKET fanout group), else 1. Receive queues are dealt round-robin to the workers in configuration
//! order; any worker transmits on any port through the queue `worker % q`. See `docs/architecture.md` § Threads.
//!
//! # Configuration changes
//! [`Running::reconfigure`] moves a running switch to a new configuration as one transaction (the control
//! socket's `apply`), following a [`Plan`] that matches ports by name:
//! 1. Ports that are new, or whose back-end settings changed (kind, ifname, mtu, netns, mode, queue count), are
//!    opened first. If one fails, those opened are closed and nothing else happens: the error names the port.
//!    (A port that needs an interface an old port holds, e.g. a tap reopened with another MTU, can only be
//!    opened after the old one is closed: those are opened while the workers are paused, and if one fails the
//!    old ports are opened again from the old configuration and the old topology resumes.)
//! 2. The workers are paused at a batch boundary (they flush and exit; a waker ends their idle sleep), the
//!    switch is rebuilt for the new topology with its learned state carried over ([`Switch::reconfigure`]), the
//!    port list is rebuilt (ports whose back-end settings did not change keep their open queues: a tap does not
//!    flap), and new workers start, with the receive queues dealt again and the old workers' buffer pools
//!    handed over. The pause (reported as `pause_us`) measured 0.8–1.0 ms with two workers and three taps in a
//!    debug build (`tests/control_live.rs` prints it; 5.6–6.5 ms before the pools were handed over).
//! 3. Ports that are gone are closed (taps deleted).
//!
//! Threads: [`open_ports`], [`Runtime`] and [`Running`] are used by the daemon's main or control thread (or a
//! test); [`Running::report`] may be called while the workers run (it takes each lock briefly). A
//! reconfiguration takes the `Running` by value, so nothing else can use it meanwhile (the daemon keeps it
//! behind a lock).

use crate::batch::{Batch, BATCH_SIZE};
use crate::buffer::{BufPool, Frame};
use crate::buffer::{Nanos, NANOS_PER_SEC};
use crate::config::{Config, PortConfig, PortKind};
use crate::conntrack::ConntrackStats;
use crate::counters::PortCounters;
use crate::pipeline::{Carried, Switch, TX_QUEUE_CAP};
use crate::port::afpacket::{AfPacketConfig, AfPacketError, AfPacketPort};
#[cfg(feature = "afxdp")]
use crate::port::afxdp::{AfXdpConfig, AfXdpError, AfXdpPort};
use crate::port::mem::MemPort;
use crate::port::tap::{TapConfig, TapError, TapPort};
use crate::port::{Port, PortError, PortId, PortStats};
use crate::replay::SwitchReport;
use crate::worker::{lock, Clock, LivePort, Shared, Worker, WorkerReport, WorkerStats};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Any port back-end `vswitchd run` can drive (enum dispatch: no `dyn` on the hot path).
#[derive(Debug)]
pub enum AnyPort {
    /// An in-memory port (tests, benchmarks).
    Mem(MemPort),
    /// A Linux tap.
    Tap(TapPort),
    /// An existing interface through an AF_PACKET socket (one fan-out member per queue).
    AfPacket(AfPacketPort),
    /// One queue of an existing interface through an AF_XDP socket (boxed: its rings make it large).
    #[cfg(feature = "afxdp")]
    AfXdp(Box<AfXdpPort>),
    /// A port implemented outside this crate (the benchmarks' paced generators and latency sinks, which must
    /// run through the real workers): dynamic dispatch, one virtual call per burst. Not made by
    /// [`open_ports`]; a caller of [`Runtime::new`] hands it in.
    External(Box<dyn ExternalPort>),
}

/// A [`Port`] that can run in a worker: what [`AnyPort::External`] holds.
pub trait ExternalPort: Port + Send + std::fmt::Debug {}

impl<T: Port + Send + std::fmt::Debug> ExternalPort for T {}

impl AnyPort {
    /// The AF_XDP attach mode obtained, for AF_XDP ports.
    pub fn xdp_mode(&self) -> Option<String> {
        match self {
            #[cfg(feature = "afxdp")]
            AnyPort::AfXdp(p) => Some(p.mode().to_string()),
            _ => None,
        }
    }

    /// The memory port, if this is one (tests inject frames through it).
    pub fn as_mem_mut(&mut self) -> Option<&mut MemPort> {
        match self {
            AnyPort::Mem(p) => Some(p),
            _ => None,
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            AnyPort::Mem($p) => $e,
            AnyPort::Tap($p) => $e,
            AnyPort::AfPacket($p) => $e,
            #[cfg(feature = "afxdp")]
            AnyPort::AfXdp($p) => $e,
            AnyPort::External($p) => $e,
        }
    };
}

impl Port for AnyPort {
    fn name(&self) -> &str {
        dispatch!(self, p => p.name())
    }

    #[inline]
    fn rx_burst(&mut self, now: Nanos, pool: &mut BufPool, batch: &mut Batch) -> Result<usize, PortError> {
        dispatch!(self, p => p.rx_burst(now, pool, batch))
    }

    #[inline]
    fn tx_burst(&mut self, pool: &mut BufPool, frames: &mut Vec<Frame>) -> Result<(), PortError> {
        dispatch!(self, p => p.tx_burst(pool, frames))
    }

    fn stats(&self) -> PortStats {
        dispatch!(self, p => p.stats())
    }

    fn rx_fd(&self) -> Option<std::os::fd::RawFd> {
        dispatch!(self, p => p.rx_fd())
    }

    fn tx_pending(&self) -> bool {
        dispatch!(self, p => p.tx_pending())
    }
}

/// Why the live switch could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A replay-only kind (`pcap`, `mem`) in a live configuration.
    #[error("port {port}: kind {kind} is replay-only; `vswitchd run` drives tap, afpacket and afxdp ports")]
    ReplayOnly {
        /// The port's name.
        port: String,
        /// Its kind.
        kind: PortKind,
    },
    /// The kind's back-end is not compiled into this binary.
    #[error("port {port}: port up: kind {kind} needs vswitchd built with --features {feature}")]
    NotBuilt {
        /// The port's name.
        port: String,
        /// Its kind.
        kind: PortKind,
        /// The cargo feature that provides it.
        feature: &'static str,
    },
    /// A port that needs an interface name has none (a configuration that skipped validation).
    #[error("port {port}: kind {kind} needs an ifname")]
    NoIfname {
        /// The port's name.
        port: String,
        /// Its kind.
        kind: PortKind,
    },
    /// A tap could not be opened.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// An AF_PACKET socket could not be opened.
    #[error(transparent)]
    AfPacket(#[from] AfPacketError),
    /// An AF_XDP socket could not be opened.
    #[cfg(feature = "afxdp")]
    #[error(transparent)]
    AfXdp(#[from] AfXdpError),
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

/// A worker's pool: a full transmit queue for every port (floods fill them all) plus a few bursts in flight,
/// and at least 4096 buffers (8 MiB).
pub fn pool_buffers_for(ports: usize) -> usize {
    (ports * TX_QUEUE_CAP + 4 * BATCH_SIZE).max(4096)
}

/// How many queues `port` gets with `workers` workers: `port.queues` when configured; else, for taps and
/// AF_PACKET ports, one per worker; else one.
pub fn queue_count(port: &PortConfig, workers: usize) -> usize {
    match port.queues {
        Some(q) => usize::from(q.max(1)),
        None if matches!(port.kind, PortKind::Tap | PortKind::Afpacket) => workers.max(1),
        None => 1,
    }
}

/// Opens every configured port's queues for `workers` workers, in configuration order. On error, everything
/// opened so far is closed (taps created are deleted) before returning.
pub fn open_ports(cfg: &Config, workers: usize) -> Result<Vec<Vec<AnyPort>>, StartError> {
    cfg.ports.iter().map(|p| open_port(p, queue_count(p, workers))).collect()
}

/// Opens the `n` queues of port `p` (on error, the queues opened so far are closed).
pub fn open_port(p: &PortConfig, n: usize) -> Result<Vec<AnyPort>, StartError> {
    let queues = open_queues(p, n)?;
    for (i, q) in queues.iter().enumerate() {
        tracing::info!(
            port = %p.name,
            kind = %p.kind,
            ifname = p.ifname.as_deref().unwrap_or(""),
            queue = i,
            queues = queues.len(),
            mode = q.xdp_mode().as_deref().unwrap_or("-"),
            "port up"
        );
    }
    Ok(queues)
}

/// Fan-out groups handed out so far: each AF_PACKET port opened gets a new one, so a port opened by a
/// configuration change never joins the group of a port still open.
static FANOUT_GROUPS: AtomicU16 = AtomicU16::new(0);

fn open_queues(p: &PortConfig, n: usize) -> Result<Vec<AnyPort>, StartError> {
    let ifname = || p.ifname.clone().ok_or(StartError::NoIfname { port: p.name.clone(), kind: p.kind });
    match p.kind {
        PortKind::Tap => {
            let mut cfg = TapConfig::new(ifname()?);
            cfg.multi_queue = n > 1;
            cfg.mtu = Some(u32::from(p.mtu));
            let mut queues = Vec::with_capacity(n);
            for i in 0..n {
                // Every queue attaches in this namespace; the last one moves the interface (and so the queues
                // already attached) into the configured namespace.
                cfg.netns = if i + 1 == n { p.netns.clone() } else { None };
                queues.push(AnyPort::Tap(TapPort::open(&p.name, &cfg)?));
            }
            Ok(queues)
        }
        PortKind::Afpacket => {
            let mut cfg = AfPacketConfig::new(ifname()?);
            // Fan-out group ids are per network namespace: derive one from the process and a counter.
            cfg.fanout = (n > 1).then(|| {
                (std::process::id() as u16).wrapping_mul(64).wrapping_add(FANOUT_GROUPS.fetch_add(1, Relaxed))
            });
            (0..n).map(|_| Ok(AnyPort::AfPacket(AfPacketPort::open(&p.name, &cfg)?))).collect()
        }
        #[cfg(feature = "afxdp")]
        PortKind::Afxdp => {
            use crate::config::XdpMode as Mode;
            use crate::port::afxdp::XdpMode;
            let mut cfg = AfXdpConfig::new(ifname()?);
            cfg.mode = match p.xdp_mode() {
                Mode::Auto => XdpMode::Auto,
                Mode::Native => XdpMode::Native,
                Mode::Generic => XdpMode::Generic,
            };
            (0..n)
                .map(|q| {
                    cfg.queue_id = q as u32;
                    Ok(AnyPort::AfXdp(Box::new(AfXdpPort::open(&p.name, &cfg)?)))
                })
                .collect()
        }
        #[cfg(not(feature = "afxdp"))]
        PortKind::Afxdp => Err(StartError::NotBuilt { port: p.name.clone(), kind: p.kind, feature: "afxdp" }),
        PortKind::Pcap | PortKind::Mem => Err(StartError::ReplayOnly { port: p.name.clone(), kind: p.kind }),
    }
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
            live.push(LivePort { name: pc.name.clone(), queues: queues.into_iter().map(Mutex::new).collect() });
        }
        let workers = opts.workers.max(1);
        let clock = Clock::new();
        let parts = Parts {
            switch: Switch::new(cfg),
            ports: live,
            stop: Arc::new(AtomicBool::new(false)),
            last_housekeeping: clock.now(),
            clock,
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
            pools: Vec::new(),
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
            switch: Mutex::new(parts.switch),
            ports: parts.ports,
            stop: parts.stop,
            pause: AtomicBool::new(false),
            last_housekeeping: AtomicU64::new(parts.last_housekeeping),
            clock: parts.clock,
            poll_idle: opts.poll_idle,
            workers: parts.workers,
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
            let pool = pools.next().unwrap_or_else(|| BufPool::new(self.opts.pool_buffers));
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
    switch: Switch,
    ports: Vec<LivePort>,
    stop: Arc<AtomicBool>,
    clock: Clock,
    last_housekeeping: Nanos,
    workers: Vec<WorkerStats>,
    /// The workers' buffer pools, for the next workers.
    pools: Vec<BufPool>,
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
    let all = ports.iter().enumerate().flat_map(|(p, lp)| (0..lp.queues.len()).map(move |q| (p as PortId, q)));
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

    /// Runs `f` with the switch locked: keep it short, the workers wait for it (one batch's worth at most).
    pub fn with_switch<R>(&self, f: impl FnOnce(&mut Switch) -> R) -> R {
        f(&mut lock(&self.rt.shared.switch))
    }

    /// Moves the running switch to `cfg` (validated) as one transaction; see the module documentation. `open`
    /// opens a port's queues ([`open_port`] in the daemon; tests pass memory ports). Always returns the
    /// `Running`: on success running `cfg`, on failure still the old configuration, unchanged. The same as
    /// [`Running::prepare`] then [`Running::commit`].
    pub fn reconfigure(
        self,
        cfg: &Config,
        opts: RunOptions,
        open: &mut OpenPort<'_>,
    ) -> (Running, Result<Applied, ApplyError>) {
        match self.prepare(cfg, opts, open) {
            Ok(prepared) => self.commit(prepared, open),
            Err(e) => (self, Err(e)),
        }
    }

    /// Step 1 of a reconfiguration, which only needs `&self` (the daemon runs it while reads go on): opens the
    /// ports of `cfg` that are new or change back-end settings, except those that need an interface an old
    /// port holds. On failure everything opened is closed and the error names the port.
    pub fn prepare(&self, cfg: &Config, opts: RunOptions, open: &mut OpenPort<'_>) -> Result<Prepared, ApplyError> {
        let workers = opts.workers.max(1);
        let opts = RunOptions { workers, ..opts };
        let base = self.rt.cfg.clone();
        let plan = Plan::new(&base, self.rt.opts.workers, cfg, workers);
        // Interfaces this apply frees (old ports closed or reopened): a new port on one of them is opened only
        // after the old port is closed.
        let freed: HashSet<String> = plan
            .closed
            .iter()
            .copied()
            .chain(plan.actions.iter().filter_map(|a| match a {
                PortAction::Reopen(o) => Some(*o),
                _ => None,
            }))
            .filter_map(|o| base.ports[o].ifname.clone())
            .collect();
        let deferred: Vec<bool> = cfg
            .ports
            .iter()
            .zip(&plan.actions)
            .map(|(pc, a)| {
                matches!(a, PortAction::Open | PortAction::Reopen(_))
                    && pc.ifname.as_ref().is_some_and(|n| freed.contains(n))
            })
            .collect();
        let mut opened: Vec<Option<Vec<AnyPort>>> = (0..cfg.ports.len()).map(|_| None).collect();
        for (i, pc) in cfg.ports.iter().enumerate() {
            if matches!(plan.actions[i], PortAction::Open | PortAction::Reopen(_)) && !deferred[i] {
                // On error `opened` is dropped on the way out: everything opened so far is closed.
                opened[i] = Some(open(pc, queue_count(pc, workers)).map_err(|e| ApplyError::port(&pc.name, &e))?);
            }
        }
        Ok(Prepared { base, base_workers: self.rt.opts.workers, cfg: cfg.clone(), opts, plan, opened, deferred, freed })
    }

    /// Steps 2 to 5 of a reconfiguration (see the module documentation): pauses the workers, opens the
    /// deferred ports, switches over and closes what is gone. `prepared` must come from [`Running::prepare`] on
    /// this configuration (otherwise nothing happens and the error says so).
    pub fn commit(self, prepared: Prepared, open: &mut OpenPort<'_>) -> (Running, Result<Applied, ApplyError>) {
        if prepared.base != self.rt.cfg || prepared.base_workers != self.rt.opts.workers {
            return (self, Err(ApplyError::Stale));
        }
        let Prepared { base: old_cfg, cfg, opts, plan, mut opened, deferred, freed, .. } = prepared;
        let cfg = &cfg;
        let old_opts = self.rt.opts.clone();
        let workers = opts.workers;
        let deferred = |i: usize| deferred[i];

        // 2. Pause the workers at a batch boundary and take the runtime apart.
        let paused = std::time::Instant::now();
        let parts = self.pause();
        let mut old_ports: Vec<Option<LivePort>> = parts.ports.into_iter().map(Some).collect();

        // 3. Deferred ports: close the old ports holding their interfaces, then open them.
        let holders: Vec<usize> = (0..old_cfg.ports.len())
            .filter(|&o| {
                let name = old_cfg.ports[o].ifname.as_deref();
                freed.contains(name.unwrap_or(""))
                    && (0..cfg.ports.len()).any(|i| deferred(i) && cfg.ports[i].ifname.as_deref() == name)
            })
            .collect();
        let mut closed_early = Vec::new();
        for &o in &holders {
            closed_early.push(o);
            drop(old_ports[o].take());
        }
        let mut failure = None;
        for (i, pc) in cfg.ports.iter().enumerate() {
            if deferred(i) {
                match open(pc, queue_count(pc, workers)) {
                    Ok(q) => opened[i] = Some(q),
                    Err(e) => {
                        failure = Some(ApplyError::port(&pc.name, &e));
                        break;
                    }
                }
            }
        }
        if let Some(mut err) = failure {
            // Put the old ports back as they were and resume the old topology.
            drop(opened);
            let mut lost = Vec::new();
            for o in closed_early {
                let pc = &old_cfg.ports[o];
                let n = queue_count(pc, old_opts.workers);
                let queues = open(pc, n).unwrap_or_else(|e| {
                    tracing::error!(port = %pc.name, error = %e, "cannot reopen a port after a failed apply");
                    lost.push(pc.name.clone());
                    (0..n).map(|_| dead_port(&pc.name)).collect()
                });
                old_ports[o] =
                    Some(LivePort { name: pc.name.clone(), queues: queues.into_iter().map(Mutex::new).collect() });
            }
            if !lost.is_empty() {
                if let ApplyError::Port { message, .. } = &mut err {
                    message.push_str(&format!(
                        "; could not reopen {} afterwards: they no longer pass traffic",
                        lost.join(", ")
                    ));
                }
            }
            let mut parts = Parts { ports: old_ports.into_iter().flatten().collect(), ..parts };
            let pools = std::mem::take(&mut parts.pools);
            let (running, spawn_err) = Runtime::from_parts(parts, old_cfg, old_opts).spawn(pools);
            return (running, Err(spawn_err.map_or(err, ApplyError::Start)));
        }

        // 4. The new port list, the switch carried over, the worker counters (when the count is the same).
        let ports: Vec<LivePort> = cfg
            .ports
            .iter()
            .enumerate()
            .map(|(i, pc)| match plan.actions[i] {
                PortAction::Keep(o) | PortAction::Reattach(o) => {
                    old_ports[o].take().expect("a kept port is taken once")
                }
                PortAction::Open | PortAction::Reopen(_) => LivePort {
                    name: pc.name.clone(),
                    queues: opened[i].take().expect("opened above").into_iter().map(Mutex::new).collect(),
                },
            })
            .collect();
        let (switch, carried) = parts.switch.reconfigure(cfg);
        let stats = if workers == old_opts.workers {
            parts.workers
        } else {
            (0..workers).map(|_| WorkerStats::default()).collect()
        };
        let mut parts = Parts { switch, ports, workers: stats, ..parts };
        let pools = std::mem::take(&mut parts.pools);
        let (running, spawn_err) = Runtime::from_parts(parts, cfg.clone(), opts).spawn(pools);
        let pause_ns = paused.elapsed().as_nanos() as u64;

        // 5. Close what is gone (taps deleted) now that the new workers run.
        drop(old_ports);
        match spawn_err {
            Some(e) => (running, Err(ApplyError::Start(e))),
            None => (running, Ok(Applied { plan, carried, pause_ns })),
        }
    }

    /// Sets the pause flag, wakes and joins the workers, and takes the runtime apart.
    fn pause(self) -> Parts {
        self.rt.shared.pause.store(true, Relaxed);
        wake(&self.wakers);
        let mut pools = Vec::new();
        for (id, h) in self.handles.into_iter().enumerate() {
            match h.join() {
                Ok(pool) => pools.push(pool),
                // The stop flag is set by the panic: the daemon stops after this apply.
                Err(_) => tracing::error!(worker = id, "worker panicked"),
            }
        }
        let shared = Arc::try_unwrap(self.rt.shared).expect("the workers, the only other owners, have exited");
        Parts {
            switch: shared.switch.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner),
            ports: shared.ports,
            stop: shared.stop,
            clock: shared.clock,
            last_housekeeping: shared.last_housekeeping.load(Relaxed),
            workers: shared.workers,
            pools,
        }
    }
}

/// Opens a port's queues for a reconfiguration: `(port, queues)` → the queues.
pub type OpenPort<'a> = dyn FnMut(&PortConfig, usize) -> Result<Vec<AnyPort>, StartError> + 'a;

/// A stand-in for a port that could not be reopened after a failed apply: receives nothing, counts and discards
/// what is sent.
fn dead_port(name: &str) -> AnyPort {
    let mut p = MemPort::new(name.to_string());
    p.set_tx_mode(crate::port::mem::TxMode::Count);
    AnyPort::Mem(p)
}

/// Ports opened ahead of a reconfiguration by [`Running::prepare`], for [`Running::commit`]; dropping it closes
/// them.
#[derive(Debug)]
pub struct Prepared {
    /// The configuration it was prepared from.
    base: Config,
    base_workers: usize,
    /// The configuration it goes to.
    cfg: Config,
    opts: RunOptions,
    plan: Plan,
    /// By new port index: its queues, when opened ahead.
    opened: Vec<Option<Vec<AnyPort>>>,
    /// By new port index: opened only once the old port holding its interface is closed.
    deferred: Vec<bool>,
    /// Interfaces of old ports closed or reopened.
    freed: HashSet<String>,
}

impl Prepared {
    /// What happens to each port.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
}

/// Why a reconfiguration failed (nothing changed, except as [`ApplyError::Start`] says).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A port could not be opened (the message names it).
    #[error("{message}")]
    Port {
        /// The port.
        port: String,
        /// Why.
        message: String,
    },
    /// [`Running::commit`] was given ports prepared for another configuration (nothing changed).
    #[error("the running configuration changed while the apply was prepared; nothing was changed")]
    Stale,
    /// The workers could not be restarted: the switch is stopping.
    #[error("{0}; the switch is stopping")]
    Start(#[source] StartError),
}

impl ApplyError {
    /// Port `port` could not be opened because of `e`.
    fn port(port: &str, e: &StartError) -> ApplyError {
        let text = e.to_string();
        let message = if text.starts_with(&format!("port {port}:")) { text } else { format!("port {port}: {text}") };
        ApplyError::Port { port: port.to_string(), message }
    }
}

/// What a successful reconfiguration did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// What happened to each port.
    pub plan: Plan,
    /// What the switch carried over.
    pub carried: Carried,
    /// How long forwarding stopped: from pausing the workers to the new ones started.
    pub pause_ns: u64,
}

/// What happens to a port of the new configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortAction {
    /// The old port with this index, unchanged: stays open, keeps its state.
    Keep(usize),
    /// The old port with this index stays open, but its network, address or MAC changed.
    Reattach(usize),
    /// A new port: opened.
    Open,
    /// The old port with this index changes back-end settings: closed and opened again.
    Reopen(usize),
}

/// How a configuration change treats each port, matched by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One per port of the new configuration, in its order.
    pub actions: Vec<PortAction>,
    /// Indices of old ports that are closed (not in the new configuration).
    pub closed: Vec<usize>,
}

impl Plan {
    /// The plan to go from `old` (with `old_workers`) to `new` (with `new_workers`).
    pub fn new(old: &Config, old_workers: usize, new: &Config, new_workers: usize) -> Plan {
        let actions: Vec<PortAction> = new
            .ports
            .iter()
            .map(|p| match old.port_index(&p.name) {
                None => PortAction::Open,
                Some(o) => {
                    let q = &old.ports[o];
                    let same_io = q.kind == p.kind
                        && q.ifname == p.ifname
                        && q.mtu == p.mtu
                        && q.netns == p.netns
                        && q.mode == p.mode
                        && queue_count(q, old_workers) == queue_count(p, new_workers);
                    if !same_io {
                        PortAction::Reopen(o)
                    } else if q == p {
                        PortAction::Keep(o)
                    } else {
                        PortAction::Reattach(o)
                    }
                }
            })
            .collect();
        let closed = (0..old.ports.len()).filter(|&o| new.port_index(&old.ports[o].name).is_none()).collect();
        Plan { actions, closed }
    }
}

/// What one port did, live.
#[derive(Debug, Clone, Serialize)]
pub struct LivePortReport {
    /// The port's kind.
    pub kind: PortKind,
    /// The interface it created or attached to.
    pub ifname: Option<String>,
    /// Number of queues.
    pub queues: usize,
    /// The AF_XDP attach mode obtained (AF_XDP ports only).
    pub mode: Option<String>,
    /// The port's own I/O counters, summed over its queues.
    pub io: PortStats,
    /// Per queue I/O counters.
    pub queue_io: Vec<PortStats>,
    /// The pipeline's counters for the port.
    pub pipeline: PortCounters,
}

/// The counters of a running (or stopped) live switch: the shape of the replay's counters JSON plus
/// per-port kind/queues/mode and per-worker counters.
#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    /// Nanoseconds since the workers' clock started.
    pub uptime_ns: u64,
    /// Frames received by all ports (including those the ports dropped).
    pub frames_in: u64,
    /// Frames sent by all ports.
    pub frames_out: u64,
    /// Per port, by name.
    pub ports: BTreeMap<String, LivePortReport>,
    /// The pipeline's and tables' counters (the same keys as replay's report).
    #[serde(flatten)]
    pub switch: SwitchReport,
    /// Connection table counters (the connections themselves are not listed: there may be hundreds of
    /// thousands; the control socket will page through them).
    pub conntrack: ConntrackStats,
    /// Per worker, by id.
    pub workers: Vec<WorkerReport>,
}

fn report(rt: &Runtime, assignment: &[Vec<(PortId, usize)>]) -> LiveReport {
    let shared = &rt.shared;
    let uptime_ns = shared.clock.now() - NANOS_PER_SEC;
    // Port counters first (each queue lock briefly), then the switch's under one lock.
    let io: Vec<Vec<PortStats>> =
        shared.ports.iter().map(|lp| lp.queues.iter().map(|q| lock(q).stats()).collect()).collect();
    let sw = lock(&shared.switch);
    let ports = shared
        .ports
        .iter()
        .enumerate()
        .map(|(i, lp)| {
            let queue_io = io[i].clone();
            let sum = queue_io.iter().fold(PortStats::default(), |a, s| PortStats {
                rx_packets: a.rx_packets + s.rx_packets,
                rx_bytes: a.rx_bytes + s.rx_bytes,
                rx_dropped: a.rx_dropped + s.rx_dropped,
                tx_packets: a.tx_packets + s.tx_packets,
                tx_bytes: a.tx_bytes + s.tx_bytes,
                tx_dropped: a.tx_dropped + s.tx_dropped,
            });
            let m = &rt.meta[i];
            let r = LivePortReport {
                kind: m.kind,
                ifname: m.ifname.clone(),
                queues: lp.queues.len(),
                mode: m.mode.clone(),
                io: sum,
                queue_io,
                pipeline: sw.counters().port(i as PortId),
            };
            (lp.name.clone(), r)
        })
        .collect::<BTreeMap<_, _>>();
    let (tables, conntrack) = (SwitchReport::of(&sw), sw.conntrack().stats());
    drop(sw);
    let workers = shared
        .workers
        .iter()
        .enumerate()
        .map(|(id, w)| w.report(id, queue_names(&shared.ports, &assignment[id])))
        .collect();
    LiveReport {
        uptime_ns,
        frames_in: ports.values().map(|p| p.io.rx_packets + p.io.rx_dropped).sum(),
        frames_out: ports.values().map(|p| p.io.tx_packets).sum(),
        ports,
        switch: tables,
        conntrack,
        workers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::mem::TxMode;
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
        // Learned by worker 1 (queue a/1), used by worker 0 (queue b/0): the FDB is shared.
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

    #[test]
    fn open_ports_refuses_replay_only_kinds_naming_the_port() {
        let cfg = Config::parse(CONFIG, "test").unwrap();
        let err = open_ports(&cfg, 1).unwrap_err();
        assert!(err.to_string().starts_with("port a: kind mem is replay-only"), "{err}");
    }

    #[test]
    fn queue_counts_follow_the_workers_for_taps_and_afpacket() {
        let cfg = Config::parse(CONFIG, "test").unwrap();
        let mut p = cfg.ports[0].clone();
        p.kind = PortKind::Tap;
        assert_eq!((queue_count(&p, 1), queue_count(&p, 3)), (1, 3));
        p.kind = PortKind::Afpacket;
        assert_eq!(queue_count(&p, 2), 2);
        p.kind = PortKind::Afxdp;
        assert_eq!(queue_count(&p, 3), 1);
        p.queues = Some(4);
        assert_eq!(queue_count(&p, 3), 4);
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
}
