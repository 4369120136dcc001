//! A configuration change of the running switch as one transaction ([`Running::reconfigure`], the control
//! socket's `apply`): the [`Plan`] (ports matched by name), the ports opened ahead ([`Running::prepare`]), the
//! switch-over with the workers paused ([`Running::commit`]), and what it did ([`Applied`]) or why it failed
//! ([`ApplyError`]). The steps and what survives them are in the [parent module](super)'s documentation.
//!
//! Threads: the daemon's control thread, which owns the [`Running`] (taken by value while the workers pause).

use super::{wake, Parts, RunOptions, Running, Runtime, StartError};
use crate::config::{Config, PortConfig};
use crate::pipeline::Carried;
use crate::port::any::{queue_count, AnyPort};
use crate::port::mem::MemPort;
use crate::worker::{LivePort, WorkerStats};
use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

impl Running {
    /// Moves the running switch to `cfg` (validated) as one transaction; see the module documentation. `open`
    /// opens a port's queues ([`open_port`](crate::port::any::open_port) in the daemon; tests pass memory ports). Always returns the
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
