//! A configuration change of the running switch as one transaction ([`Running::reconfigure`], the control
//! socket's `apply`): the [`Plan`] (ports matched by name), the ports opened ahead ([`Running::prepare`]), the
//! switch-over with the workers paused ([`Running::commit`]), and what it did ([`Applied`]) or why it failed
//! ([`ApplyError`]). The steps and what survives them are in the [parent module](super)'s documentation.
//!
//! Threads: the daemon's control thread, which owns the [`Running`] (taken by value while the workers pause).

use super::{failed_ports, open_live, wake, Parts, RunOptions, Running, Runtime, StartError};
use crate::config::{Config, PortConfig, PortKind};
use crate::pipeline::Carried;
use crate::port::any::{queue_count, AnyPort};
use crate::port::tap_persist;
use crate::worker::{LivePort, WorkerStats};
use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

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
    /// port holds. A port that fails to open is kept as failed (stand-in queues, retried later): it does not
    /// fail the apply.
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
        // Taps kept open whose MTU changes: set in place (index, MAC, addresses stay). If one fails, the apply is
        // refused and the port keeps its old settings (an MTU set before it in this apply stays set).
        for (pc, a) in cfg.ports.iter().zip(&plan.actions) {
            if let PortAction::Reattach(o) | PortAction::Keep(o) = *a {
                let old = &base.ports[o];
                // A failed port has no tap yet: it is opened with the new MTU when it comes up.
                let failed = self.rt.shared.ports[o].failure().is_some();
                if pc.kind == PortKind::Tap && old.mtu != pc.mtu && !failed {
                    let ifname = pc.ifname.as_deref().unwrap_or_default();
                    tap_persist::set_mtu(pc.netns.as_deref(), ifname, pc.mtu).map_err(|e| ApplyError::Port {
                        port: pc.name.clone(),
                        message: format!("port {}: setting the MTU of tap {ifname} to {}: {e}", pc.name, pc.mtu),
                    })?;
                    tracing::info!(port = %pc.name, ifname, from = old.mtu, to = pc.mtu, "tap MTU changed in place");
                }
            }
        }
        let mut opened: Vec<Option<LivePort>> = (0..cfg.ports.len()).map(|_| None).collect();
        for (i, pc) in cfg.ports.iter().enumerate() {
            if matches!(plan.actions[i], PortAction::Open | PortAction::Reopen(_)) && !deferred[i] {
                // On a permanent error `opened` is dropped on the way out: what was opened is closed.
                opened[i] =
                    Some(open_live(pc, queue_count(pc, workers), open).map_err(|e| ApplyError::port(&pc.name, &e))?);
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
        let old_workers = self.rt.opts.workers;
        let workers = opts.workers;
        let deferred = |i: usize| deferred[i];

        // 2. Pause the workers at a batch boundary and take the runtime apart.
        let paused = std::time::Instant::now();
        let parts = self.pause();
        let mut old_ports: Vec<Option<LivePort>> = parts.ports.into_iter().map(Some).collect();

        // 3. Deferred ports: close (and delete) the old ports holding their interfaces, then open them.
        for (old, slot) in old_cfg.ports.iter().zip(old_ports.iter_mut()) {
            let name = old.ifname.as_deref();
            let holds = freed.contains(name.unwrap_or(""))
                && (0..cfg.ports.len()).any(|i| deferred(i) && cfg.ports[i].ifname.as_deref() == name);
            if holds {
                if let Some(lp) = slot.take() {
                    lp.remove_on_close();
                }
            }
        }
        for (i, pc) in cfg.ports.iter().enumerate() {
            if deferred(i) {
                // A permanent error here (the old port on this interface opened, so it is unlikely) is kept as
                // failed like any other: the old port is already closed.
                let n = queue_count(pc, workers);
                opened[i] = Some(open_live(pc, n, open).unwrap_or_else(|e| {
                    let lp = LivePort::up(&pc.name, crate::port::failed::stand_ins(&pc.name, n));
                    *crate::worker::lock(&lp.failure) =
                        Some(crate::port::failed::PortFailure::new(e.to_string(), std::time::Instant::now()));
                    lp
                }));
            }
        }

        // 4. The new port list, the switch carried over, the worker counters (when the count is the same).
        let ports: Vec<LivePort> = cfg
            .ports
            .iter()
            .enumerate()
            .map(|(i, _)| match plan.actions[i] {
                PortAction::Keep(o) | PortAction::Reattach(o) => {
                    old_ports[o].take().expect("a kept port is taken once")
                }
                PortAction::Open | PortAction::Reopen(_) => {
                    let lp = opened[i].take().expect("opened above");
                    // Part of the running switch from now on: its tap outlives the process.
                    lp.persist();
                    lp
                }
            })
            .collect();
        let failed = failed_ports(&ports);
        let (switch, carried) = parts.switch.reconfigure(cfg);
        let stats =
            if workers == old_workers { parts.workers } else { (0..workers).map(|_| WorkerStats::default()).collect() };
        let mut parts = Parts { switch, ports, workers: stats, ..parts };
        let pools = std::mem::take(&mut parts.pools);
        let (running, spawn_err) = Runtime::from_parts(parts, cfg.clone(), opts).spawn(pools);
        let pause_ns = u64::try_from(paused.elapsed().as_nanos()).unwrap_or(u64::MAX);

        // 5. Close what is gone (taps deleted) now that the new workers run.
        for lp in old_ports.into_iter().flatten() {
            lp.remove_on_close();
        }
        match spawn_err {
            Some(e) => (running, Err(ApplyError::Start(e))),
            None => (running, Ok(Applied { plan, carried, pause_ns, failed })),
        }
    }

    /// Sets the pause flag, wakes and joins the workers, and takes the runtime apart.
    pub(super) fn pause(self) -> Parts {
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
            faults: shared.faults,
        }
    }
}

/// Opens a port's queues for a reconfiguration: `(port, queues)` → the queues.
pub type OpenPort<'a> = dyn FnMut(&PortConfig, usize) -> Result<Vec<AnyPort>, StartError> + 'a;

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
    /// By new port index: the port, when opened ahead (up, or failed with stand-in queues).
    opened: Vec<Option<LivePort>>,
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
    /// A port can never be opened by this vswitchd ([`StartError::is_permanent`]: a replay-only kind, a
    /// back-end not built in): refused, nothing changed. (A port that fails for a reason that may pass is
    /// applied as failed and retried instead.)
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
    /// Port `port` can never be opened because of `e`.
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
    /// Ports down after the apply, `(name, error)`: they could not be opened (now or before) and are retried.
    pub failed: Vec<(String, String)>,
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
                    // A tap's MTU changes in place (`Running::prepare`): not a reason to reopen it, unless a
                    // tap without offloads goes to jumbo frames (it reads frames over a small buffer only when
                    // opened for them).
                    let mtu_in_place = p.kind == PortKind::Tap && (!needs_large_rx(p) || needs_large_rx(q));
                    let same_io = q.kind == p.kind
                        && q.ifname == p.ifname
                        && (q.mtu == p.mtu || mtu_in_place)
                        && q.netns == p.netns
                        && q.mode == p.mode
                        && q.offloads() == p.offloads()
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

/// Whether a tap must be opened to read frames longer than a small buffer: without offloads (no super-frames) only
/// for a jumbo MTU.
fn needs_large_rx(p: &PortConfig) -> bool {
    !p.offloads() && p.mtu > crate::config::limits::SMALL_FRAME_MTU
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(mtu: u16, offload: bool) -> Config {
        let text = format!(
            "[[network]]\nname = \"n\"\n[[port]]\nname = \"t\"\nkind = \"tap\"\nifname = \"t\"\n\
             network = \"n\"\nmtu = {mtu}\noffload = {offload}\n"
        );
        Config::parse(&text, "t.toml").unwrap()
    }

    fn action(old: &Config, new: &Config) -> PortAction {
        Plan::new(old, 1, new, 1).actions[0]
    }

    #[test]
    fn a_tap_mtu_changes_in_place_unless_a_tap_without_offloads_goes_jumbo() {
        assert_eq!(action(&tap(1500, true), &tap(9000, true)), PortAction::Reattach(0));
        assert_eq!(action(&tap(1500, false), &tap(1400, false)), PortAction::Reattach(0));
        assert_eq!(action(&tap(9000, false), &tap(1500, false)), PortAction::Reattach(0));
        assert_eq!(action(&tap(1500, false), &tap(9000, false)), PortAction::Reopen(0));
        assert_eq!(action(&tap(1500, false), &tap(1500, false)), PortAction::Keep(0));
        let mut clamped = tap(1500, true);
        clamped.ports[0].mss_clamp = Some(crate::config::MssClamp::Pmtu);
        assert_eq!(action(&tap(1500, true), &clamped), PortAction::Reattach(0), "mss_clamp: no reopen");
    }
}
