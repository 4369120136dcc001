//! A configuration change of the running switch as one transaction ([`Running::reconfigure`], the control
//! socket's `apply`): the [`Plan`] (ports matched by name), the ports opened ahead ([`Running::prepare`]), the
//! switch-over with the workers paused ([`Running::commit`]), and what it did ([`Applied`]) or why it failed
//! ([`ApplyError`]). The steps and what survives them are in the [parent module](super)'s documentation.
//!
//! Threads: the daemon's control thread, which owns the [`Running`] (taken by value while the workers pause).

use super::{failed_ports, open_live, wake, Parts, RunOptions, Running, Runtime, StartError};
use crate::config::{Config, PortConfig, PortKind};
use crate::ids::Nanos;
use crate::pipeline::{Carried, NextSwitch, Owners, Prebuilt, Shard, Switch};
use crate::port::any::{queue_count, AnyPort};
use crate::port::tap_persist;
use crate::snapshot;
use crate::topology::Topology;
use crate::worker::HotItem;
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

    /// The plan to go from the running configuration to `cfg` with `workers`, comparing each port's queue count
    /// with the queues it really has (a port whose reopen failed keeps its old ones).
    pub fn plan(&self, cfg: &Config, workers: usize) -> Plan {
        let queues: Vec<usize> = self.rt.shared.ports.iter().map(|lp| lp.queues.len()).collect();
        Plan::new(&self.rt.cfg, &queues, cfg, workers)
    }

    /// Step 1 of a reconfiguration, which only needs `&self` (the daemon runs it while reads go on): opens the
    /// ports of `cfg` that are new or change back-end settings, except those that need an interface an old
    /// port holds. A new port that fails to open is kept as failed (stand-in queues, retried later); a port
    /// whose changed settings fail to open keeps its old, working port (reported in
    /// [`Applied::change_failed`]). Neither fails the apply.
    pub fn prepare(&self, cfg: &Config, opts: RunOptions, open: &mut OpenPort<'_>) -> Result<Prepared, ApplyError> {
        let workers = opts.workers.max(1);
        let opts = RunOptions { workers, ..opts };
        let base = self.rt.cfg.clone();
        let plan = self.plan(cfg, workers);
        // Interfaces this apply frees (old ports closed or reopened): a new port that needs one is opened only
        // after the old port is closed.
        let freed: HashSet<Iface> = plan
            .closed
            .iter()
            .copied()
            .chain(plan.actions.iter().filter_map(|a| match a {
                PortAction::Reopen(o) => Some(*o),
                _ => None,
            }))
            .filter_map(|o| held(&base.ports[o]))
            .collect();
        let deferred: Vec<bool> = cfg
            .ports
            .iter()
            .zip(&plan.actions)
            .map(|(pc, a)| {
                matches!(a, PortAction::Open | PortAction::Reopen(_)) && needs(pc).iter().any(|i| freed.contains(i))
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
        let mut change_failed: Vec<Option<String>> = vec![None; cfg.ports.len()];
        for (i, pc) in cfg.ports.iter().enumerate() {
            if deferred[i] {
                continue;
            }
            match plan.actions[i] {
                // The old port is up and runs on: a failure to open the new settings keeps it.
                PortAction::Reopen(o) if self.rt.shared.ports[o].failure().is_none() => {
                    match open(pc, queue_count(pc, workers)) {
                        Ok(queues) => opened[i] = Some(LivePort::up(&pc.name, queues)),
                        Err(e) if e.is_permanent() => return Err(ApplyError::port(&pc.name, &e)),
                        Err(e) => {
                            tracing::warn!(port = %pc.name, error = %e, "the port's new settings cannot be opened: it keeps its old ones");
                            change_failed[i] = Some(e.to_string());
                        }
                    }
                }
                // On a permanent error `opened` is dropped on the way out: what was opened is closed.
                PortAction::Open | PortAction::Reopen(_) => {
                    opened[i] = Some(
                        open_live(pc, queue_count(pc, workers), open).map_err(|e| ApplyError::port(&pc.name, &e))?,
                    );
                }
                PortAction::Keep(_) | PortAction::Reattach(_) => {}
            }
        }
        Ok(Prepared {
            base,
            base_workers: self.rt.opts.workers,
            cfg: cfg.clone(),
            opts,
            plan,
            opened,
            deferred,
            freed,
            change_failed,
        })
    }

    /// Steps 2 to 5 of a reconfiguration (see the module documentation): pauses the workers, opens the
    /// deferred ports, switches over and closes what is gone. `prepared` must come from [`Running::prepare`] on
    /// this configuration (otherwise nothing happens and the error says so).
    ///
    /// A panic before the new switch takes over (opening a deferred port, computing the new tables) is
    /// contained: the old switch, untouched, runs on with the old configuration and its ports (one closed for a
    /// deferred reopen is opened again with its old settings, or failed and retried), the panic is counted as a
    /// `control_panics` and the apply fails with [`ApplyError::Panicked`].
    pub fn commit(self, prepared: Prepared, open: &mut OpenPort<'_>) -> (Running, Result<Applied, ApplyError>) {
        if prepared.base != self.rt.cfg || prepared.base_workers != self.rt.opts.workers {
            return (self, Err(ApplyError::Stale));
        }
        if self.hot_eligible(&prepared) {
            return self.hot_commit(prepared);
        }
        let Prepared { base: old_cfg, cfg, opts, plan, mut opened, deferred, freed, mut change_failed, .. } = prepared;
        let old_opts = self.rt.opts.clone();
        let old_workers = old_opts.workers;
        let workers = opts.workers;

        // 2. Pause the workers at a batch boundary and take the runtime apart.
        let paused = std::time::Instant::now();
        let Parts { switches, ports, stop, clock, workers: stats, pools, faults } = self.pause();
        let now = clock.now();
        let old_queues: Vec<usize> = ports.iter().map(|lp| lp.queues.len()).collect();
        let old_up: Vec<bool> = ports.iter().map(|lp| lp.failure().is_none()).collect();
        let mut old_ports: Vec<Option<LivePort>> = ports.into_iter().map(Some).collect();
        // Taps left in a namespace a port moved out of: deleted once the new switch runs.
        let mut stale_taps: Vec<(Option<String>, String)> = Vec::new();

        // 3 and 4a, where a panic is contained: the deferred ports, then the new switch's tables (the old
        // switch is only read).
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            open_deferred(
                &Deferred { old_cfg: &old_cfg, cfg: &cfg, plan: &plan, deferred: &deferred, freed: &freed },
                (&old_queues, &old_up),
                workers,
                open,
                (&mut old_ports, &mut opened, &mut change_failed, &mut stale_taps),
            );
            let effective = effective_config(&cfg, &old_cfg, &plan, &change_failed);
            let next = reshard_next(&switches, &old_cfg, &effective, workers, now);
            if faults.inject_apply_panic.swap(false, Relaxed) {
                panic!("injected switch-over panic (test hook)");
            }
            (effective, next)
        }));
        let (effective, next) = match step {
            Ok(done) => done,
            Err(payload) => {
                let message = crate::worker::panic_message(&*payload);
                let n = faults.control_panics.fetch_add(1, Relaxed) + 1;
                tracing::error!(panic = %message, control_panics = n, "the apply's switch-over panicked: the previous configuration runs on");
                // The new ports are closed first (taps created for this apply deleted, re-adopted ones kept),
                // so that an old port closed for a deferred reopen can re-adopt its tap.
                drop(opened);
                let ports = old_ports
                    .into_iter()
                    .enumerate()
                    .map(|(o, slot)| slot.unwrap_or_else(|| reopen_old(&old_cfg.ports[o], old_queues[o], open)))
                    .collect();
                let parts = Parts { switches, ports, stop, clock, workers: stats, pools: Vec::new(), faults };
                let (running, spawn_err) = Runtime::from_parts(parts, old_cfg, old_opts).spawn(pools);
                let err = spawn_err.map_or(ApplyError::Panicked(message), ApplyError::Start);
                return (running, Err(err));
            }
        };

        // 4b. The point of no return (moves only): the new port list, the switch, the worker counters (when the
        // count is the same).
        let ports: Vec<LivePort> = (0..effective.ports.len())
            .map(|i| match plan.actions[i] {
                PortAction::Keep(o) | PortAction::Reattach(o) => {
                    old_ports[o].take().expect("a kept port is taken once")
                }
                PortAction::Open | PortAction::Reopen(_) if opened[i].is_some() => {
                    let lp = opened[i].take().expect("checked");
                    // Part of the running switch from now on: its tap outlives the process.
                    lp.persist();
                    lp
                }
                // Its new settings failed to open: the old port runs on.
                PortAction::Reopen(o) => old_ports[o].take().expect("an old port kept for a failed change"),
                PortAction::Open => unreachable!("a new port is opened (up or failed) before the switch-over"),
            })
            .collect();
        let failed = failed_ports(&ports);
        let (switches, carried) = reshard(switches, next);
        let stats = if workers == old_workers { stats } else { (0..workers).map(|_| WorkerStats::default()).collect() };
        let parts = Parts { switches, ports, stop, clock, workers: stats, pools: Vec::new(), faults };
        let (running, spawn_err) = Runtime::from_parts(parts, effective.clone(), opts).spawn(pools);
        let pause_ns = u64::try_from(paused.elapsed().as_nanos()).unwrap_or(u64::MAX);

        // 5. Close what is gone (taps deleted) now that the new workers run.
        for lp in old_ports.into_iter().flatten() {
            lp.remove_on_close();
        }
        for (netns, ifname) in stale_taps {
            match tap_persist::delete_ours(netns.as_deref(), &ifname) {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(ifname, netns = netns.as_deref().unwrap_or("-"), error = %e, "cannot delete the tap left in the namespace the port moved out of")
                }
            }
        }
        let change_failed: Vec<(String, String)> =
            effective.ports.iter().zip(change_failed).filter_map(|(pc, e)| e.map(|e| (pc.name.clone(), e))).collect();
        match spawn_err {
            Some(e) => (running, Err(ApplyError::Start(e))),
            None => (
                running,
                Ok(Applied {
                    plan,
                    carried,
                    pause_ns,
                    paused: true,
                    failed,
                    change_failed,
                    config: effective,
                    shards_rebuilt: Vec::new(),
                }),
            ),
        }
    }

    /// True when `prepared` can be applied without pausing the workers: the same worker options, every port kept
    /// open at its index (none opened, closed or reordered), the same networks and router interfaces by name
    /// and order (so every id the workers' queues carry keeps its meaning), and the same connection owners.
    fn hot_eligible(&self, prepared: &Prepared) -> bool {
        let same_ports = prepared.plan.closed.is_empty()
            && prepared.plan.actions.len() == self.rt.cfg.ports.len()
            && prepared
                .plan
                .actions
                .iter()
                .enumerate()
                .all(|(i, a)| matches!(*a, PortAction::Keep(o) | PortAction::Reattach(o) if o == i))
            && prepared.opened.iter().all(Option::is_none)
            && !prepared.deferred.iter().any(|&d| d);
        if prepared.opts != self.rt.opts || !same_ports {
            return false;
        }
        let (a, b) = (Topology::from_config(&prepared.base), Topology::from_config(&prepared.cfg));
        let names = |t: &Topology| {
            (
                t.networks.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
                t.rifs.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            )
        };
        names(&a) == names(&b) && Owners::new(&a) == Owners::new(&b)
    }

    /// Applies `prepared` (eligible: [`Running::hot_eligible`]) while the workers forward: the new topology and
    /// router are built here, one per worker, then handed over; each worker carries its own shard over at its
    /// next batch boundary ([`Switch::reconfigure_in_place`]) and goes on. No thread stops; `pause_ns` is the
    /// longest a worker spent carrying its shard over.
    fn hot_commit(mut self, prepared: Prepared) -> (Running, Result<Applied, ApplyError>) {
        let Prepared { cfg, plan, .. } = prepared;
        let shared = std::sync::Arc::clone(&self.rt.shared);
        let n = shared.shards.len();
        // The new tables are built here, before any worker sees them: a panic is contained (nothing changed yet,
        // the previous configuration runs on), as in the paused switch-over.
        let faults = Arc::clone(&shared.faults);
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let items: Vec<Option<HotItem>> = (0..n)
                .map(|_| Some(HotItem { pre: Prebuilt::new(&cfg), spare: Switch::new(&Config::default()) }))
                .collect();
            if faults.inject_apply_panic.swap(false, Relaxed) {
                panic!("injected switch-over panic (test hook)");
            }
            items
        }));
        let items = match built {
            Ok(items) => items,
            Err(payload) => {
                let message = crate::worker::panic_message(&*payload);
                let n = faults.control_panics.fetch_add(1, Relaxed) + 1;
                tracing::error!(panic = %message, control_panics = n, "the apply's new tables panicked: the previous configuration runs on");
                return (self, Err(ApplyError::Panicked(message)));
            }
        };
        {
            let mut hot = crate::worker::lock(&shared.hot);
            hot.items = items;
            hot.done = vec![None; n];
        }
        shared.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        wake(&self.wakers);
        let deadline = std::time::Instant::now() + HOT_APPLY_DEADLINE;
        let results = loop {
            {
                let hot = crate::worker::lock(&shared.hot);
                if hot.done.iter().all(Option::is_some) {
                    break hot.done.iter().flatten().cloned().collect::<Vec<_>>();
                }
            }
            if shared.stop.load(Relaxed) || self.handles.iter().any(std::thread::JoinHandle::is_finished) {
                return (
                    self,
                    Err(ApplyError::Start(StartError::Queues {
                        port: "*".to_string(),
                        message: "a worker stopped during the apply".to_string(),
                    })),
                );
            }
            if std::time::Instant::now() >= deadline {
                // A worker that never reaches a batch boundary is stuck in one: the others run the new
                // configuration, and it takes its part when it gets out, so that is the running configuration.
                let done = crate::worker::lock(&shared.hot).done.clone();
                let late: Vec<usize> = done.iter().enumerate().filter_map(|(k, d)| d.is_none().then_some(k)).collect();
                tracing::error!(workers = ?late, "workers did not take a configuration applied without a pause in time");
                for (k, d) in done.into_iter().enumerate() {
                    if let Some(Err(error)) = d {
                        rebuild_shard(&shared, k, &self.rt.cfg, &cfg, error);
                    }
                }
                self.rt.cfg = cfg;
                return (self, Err(ApplyError::WorkersLate { workers: late, after: HOT_APPLY_DEADLINE }));
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
            wake(&self.wakers);
        };
        let mut carried = Carried::default();
        let mut pause_ns = 0;
        let mut shards_rebuilt = Vec::new();
        let mut first = true;
        for (k, result) in results.into_iter().enumerate() {
            let c = match result {
                Ok((c, stall)) => {
                    pause_ns = pause_ns.max(stall);
                    c
                }
                Err(error) => {
                    let r = rebuild_shard(&shared, k, &self.rt.cfg, &cfg, error);
                    let c = Carried {
                        fdb_kept: r.fdb_kept,
                        fdb_flushed: 0,
                        router_kept: false,
                        connections_flushed: r.connections_lost,
                    };
                    shards_rebuilt.push(r);
                    c
                }
            };
            if first {
                carried = c;
                first = false;
            } else {
                carried.connections_flushed += c.connections_flushed;
                carried.router_kept &= c.router_kept;
            }
        }
        self.rt.cfg = cfg.clone();
        let failed = failed_ports(&shared.ports);
        // No port reopened, so none whose change failed: the configuration runs as applied.
        let applied = Applied {
            plan,
            carried,
            pause_ns,
            paused: false,
            failed,
            change_failed: Vec::new(),
            config: cfg,
            shards_rebuilt,
        };
        (self, Ok(applied))
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
            switches: shared
                .shards
                .into_iter()
                .map(|l| l.switch.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
                .collect(),
            ports: shared.ports,
            stop: shared.stop,
            clock: shared.clock,
            workers: shared.workers,
            pools,
            faults: shared.faults,
        }
    }
}

/// How long an apply without a pause waits for every worker to take its part (each does at its next batch
/// boundary, woken if it sleeps: microseconds to milliseconds); a worker later than that is stuck in a batch.
pub const HOT_APPLY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// A worker's shard that panicked while carrying itself over to `cfg` (applied without a pause), rebuilt by the
/// control thread: a new shard for `cfg` with what the old one held restored by name, as after a restart
/// (`snapshot::take_shards` then `restore_shards`: MAC entries, resolved neighbours, its connections; frames it
/// held for ARP are lost with it), put in its place under its lock; the worker forwards on it from its next
/// burst. The old shard is as the panic left it: as it was before the apply (`base`), or, had the panic come
/// while the new tables moved in, a stand-in that holds nothing. Should restoring panic too, the new shard
/// starts empty.
fn rebuild_shard(shared: &crate::worker::Shared, k: usize, base: &Config, cfg: &Config, error: String) -> ShardRebuilt {
    let n = shared.shards.len();
    let now = shared.clock.now();
    let mut sw = crate::worker::lock(&shared.shards[k].switch);
    let held = sw.conntrack().len();
    let restored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let snap = snapshot::take_shards(&[&*sw], base, now);
        let mut fresh = Switch::new(cfg).sharded(Shard::new(k, n));
        let r = snapshot::restore_shards(&mut [&mut fresh], cfg, &snap, now);
        (fresh, r)
    }));
    let (fresh, fdb_kept, kept) = match restored {
        Ok((fresh, r)) => (fresh, r.fdb, r.connections),
        Err(p) => {
            let message = crate::worker::panic_message(&*p);
            tracing::error!(worker = k, panic = %message, "restoring the shard's state panicked: it starts empty");
            (Switch::new(cfg).sharded(Shard::new(k, n)), 0, 0)
        }
    };
    *sw = fresh;
    let lost = held.saturating_sub(kept);
    tracing::warn!(
        worker = k,
        connections_kept = kept,
        connections_lost = lost,
        "the shard was rebuilt for the new configuration"
    );
    ShardRebuilt { worker: k, error, fdb_kept, connections_kept: kept, connections_lost: lost }
}

/// A worker's shard rebuilt after it panicked carrying itself over to a configuration applied without a pause
/// ([`Applied::shards_rebuilt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRebuilt {
    /// The worker.
    pub worker: usize,
    /// The panic's message.
    pub error: String,
    /// MAC entries restored into the new shard.
    pub fdb_kept: usize,
    /// Its connections restored into the new shard.
    pub connections_kept: usize,
    /// Its connections lost.
    pub connections_lost: usize,
}

/// The workers' shards for `cfg` (from `base`) with `workers` shards, computed from the old ones without
/// changing them (a panic here leaves them as they were), then put in place by [`reshard`].
enum NextShards {
    /// The worker count and the connections' owners stay: each shard carried over ([`Switch::next_for`]).
    InPlace(Vec<NextSwitch>),
    /// Otherwise the learned state moved through a snapshot ([`snapshot::take_shards`],
    /// [`snapshot::restore_shards`]) into new shards, so each connection lands on its owner for the new count and
    /// addresses.
    Fresh(Vec<Switch>, Carried),
}

/// The first half of a switch-over's shards: see [`NextShards`].
fn reshard_next(old: &[Switch], base: &Config, cfg: &Config, workers: usize, now: Nanos) -> NextShards {
    let owners_same = || {
        let (a, b) = (Topology::from_config(base), Topology::from_config(cfg));
        Owners::new(&a) == Owners::new(&b)
    };
    if old.len() == workers && (workers == 1 || owners_same()) {
        return NextShards::InPlace(old.iter().map(|sw| sw.next_for(cfg)).collect());
    }
    let refs: Vec<&Switch> = old.iter().collect();
    let snap = snapshot::take_shards(&refs, base, now);
    let mut out: Vec<Switch> = (0..workers).map(|i| Switch::new(cfg).sharded(Shard::new(i, workers))).collect();
    let mut targets: Vec<&mut Switch> = out.iter_mut().collect();
    let r = snapshot::restore_shards(&mut targets, cfg, &snap, now);
    let carried = Carried {
        fdb_kept: r.fdb,
        fdb_flushed: r.fdb_dropped,
        router_kept: r.router_matched && r.connections_dropped == 0,
        connections_flushed: r.connections_dropped,
    };
    NextShards::Fresh(out, carried)
}

/// The second half: the new shards in place of `old` (moves only), and what they carried over (the MAC tables
/// are the same in every shard; connections are counted over all of them).
fn reshard(old: Vec<Switch>, next: NextShards) -> (Vec<Switch>, Carried) {
    match next {
        NextShards::InPlace(next) => {
            let mut total = Carried::default();
            let mut out = Vec::with_capacity(next.len());
            for (i, (sw, n)) in old.into_iter().zip(next).enumerate() {
                let (sw, c) = sw.into_next(n);
                if i == 0 {
                    total = c;
                } else {
                    total.connections_flushed += c.connections_flushed;
                    total.router_kept &= c.router_kept;
                }
                out.push(sw);
            }
            (out, total)
        }
        NextShards::Fresh(out, carried) => (out, carried),
    }
}

/// An interface a port holds or needs: `(namespace, ifname)`, `None` for vswitchd's own namespace.
type Iface = (Option<String>, String);

/// The interface an open port holds: a tap in its namespace, any other kind in vswitchd's.
fn held(pc: &PortConfig) -> Option<Iface> {
    let ifname = pc.ifname.clone()?;
    Some(match pc.kind {
        PortKind::Tap => (pc.netns.clone(), ifname),
        _ => (None, ifname),
    })
}

/// The interfaces that must be free to open a port: its own, and for a tap going into a namespace also the name
/// in vswitchd's namespace, where it is created before it moves.
fn needs(pc: &PortConfig) -> Vec<Iface> {
    let Some(ifname) = pc.ifname.clone() else { return Vec::new() };
    let mut v = vec![(None, ifname.clone())];
    if pc.kind == PortKind::Tap && pc.netns.is_some() {
        v.push((pc.netns.clone(), ifname));
    }
    v
}

/// A port that is down with `error`: stand-in queues, retried later.
fn failed_port(name: &str, n: usize, error: String) -> LivePort {
    let lp = LivePort::up(name, crate::port::failed::stand_ins(name, n));
    *crate::worker::lock(&lp.failure) = Some(crate::port::failed::PortFailure::new(error, std::time::Instant::now()));
    lp
}

/// An old port closed during a switch-over that was then abandoned, opened again with its old settings (a tap
/// re-adopted), or failed (retried later) if that fails or panics.
fn reopen_old(pc: &PortConfig, n: usize, open: &mut OpenPort<'_>) -> LivePort {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open(pc, n))) {
        Ok(Ok(queues)) => {
            let lp = LivePort::up(&pc.name, queues);
            lp.persist();
            lp
        }
        Ok(Err(e)) => failed_port(&pc.name, n, e.to_string()),
        Err(p) => failed_port(&pc.name, n, format!("opening it again panicked: {}", crate::worker::panic_message(&*p))),
    }
}

/// What [`open_deferred`] works from.
struct Deferred<'a> {
    old_cfg: &'a Config,
    cfg: &'a Config,
    plan: &'a Plan,
    deferred: &'a [bool],
    freed: &'a HashSet<Iface>,
}

/// What [`open_deferred`] changes: the old ports (those it closes are taken out), the new ones by new index,
/// the ports whose change failed (by new index), taps to delete once the new switch runs.
type DeferredOut<'a> = (
    &'a mut [Option<LivePort>],
    &'a mut [Option<LivePort>],
    &'a mut [Option<String>],
    &'a mut Vec<(Option<String>, String)>,
);

/// Step 3 of a switch-over, with the workers paused: closes the old ports holding an interface a deferred port
/// needs, then opens the deferred ports. The old port a deferred port replaces (same kind, up) is closed but
/// not deleted (a tap stays, persistent), so that when the new settings fail it is opened again with its old
/// ones (a tap re-adopted: same index, MAC, addresses) instead of the port going down. `old` is, by old index,
/// `(queue count, up)`.
fn open_deferred(
    d: &Deferred<'_>,
    (old_queues, old_up): (&[usize], &[bool]),
    workers: usize,
    open: &mut OpenPort<'_>,
    (old_ports, opened, change_failed, stale_taps): DeferredOut<'_>,
) {
    let wanted: HashSet<Iface> =
        (0..d.cfg.ports.len()).filter(|&i| d.deferred[i]).flat_map(|i| needs(&d.cfg.ports[i])).collect();
    // By new index: the old port a deferred port replaces, when it is up (kept should the new settings fail).
    let fallback: Vec<Option<usize>> = (0..d.cfg.ports.len())
        .map(|i| match d.plan.actions[i] {
            PortAction::Reopen(o) if d.deferred[i] && old_up[o] => Some(o),
            _ => None,
        })
        .collect();
    for (o, old) in d.old_cfg.ports.iter().enumerate() {
        let Some(h) = held(old) else { continue };
        if !(d.freed.contains(&h) && wanted.contains(&h)) {
            continue;
        }
        if let Some(lp) = old_ports[o].take() {
            // Closed only (a tap, persistent, stays) when it may have to come back: the port it is the old one of
            // keeps its kind. Otherwise deleted as it closes.
            let comes_back = (0..d.cfg.ports.len()).any(|i| fallback[i] == Some(o) && d.cfg.ports[i].kind == old.kind);
            if !comes_back {
                lp.remove_on_close();
            }
        }
    }
    // A port whose new settings failed in `prepare` keeps its old port, unless that was just closed for another
    // port that needs its interface: then it is down with its new settings.
    for (i, pc) in d.cfg.ports.iter().enumerate() {
        if let PortAction::Reopen(o) = d.plan.actions[i] {
            if old_ports[o].is_none() && opened[i].is_none() && !d.deferred[i] {
                let why = change_failed[i].take().unwrap_or_default();
                let error = format!("{why}; its old interface went to another port");
                opened[i] = Some(failed_port(&pc.name, queue_count(pc, workers), error));
            }
        }
    }
    for (i, pc) in d.cfg.ports.iter().enumerate() {
        if !d.deferred[i] {
            continue;
        }
        let n = queue_count(pc, workers);
        let mut error = match open(pc, n) {
            Ok(queues) => {
                if let Some(o) = fallback[i] {
                    let old = &d.old_cfg.ports[o];
                    if old.kind == PortKind::Tap && held(old) != held(pc) {
                        stale_taps.extend(held(old));
                    }
                }
                opened[i] = Some(LivePort::up(&pc.name, queues));
                continue;
            }
            Err(e) => e.to_string(),
        };
        if fallback[i].is_some_and(|o| old_ports[o].is_some()) {
            // The old port was not in the way (it holds another interface): it simply stays.
            tracing::warn!(port = %pc.name, error = %error, "the port's new settings cannot be opened: it keeps its old ones");
            change_failed[i] = Some(error);
            continue;
        }
        if let Some(o) = fallback[i].filter(|&o| d.cfg.ports[i].kind == d.old_cfg.ports[o].kind) {
            match open(&d.old_cfg.ports[o], old_queues[o]) {
                Ok(queues) => {
                    tracing::warn!(port = %pc.name, error = %error, "the port's new settings cannot be opened: it keeps its old ones");
                    change_failed[i] = Some(error);
                    opened[i] = Some(LivePort::up(&pc.name, queues));
                    continue;
                }
                Err(e) => error = format!("{error}; its old settings could not be opened again either: {e}"),
            }
        }
        tracing::error!(port = %pc.name, error = %error, "port failed to open: the others go on; retrying it with backoff");
        opened[i] = Some(failed_port(&pc.name, n, error));
    }
}

/// The configuration that runs after an apply: `cfg`, except that a port whose change failed keeps its old
/// back-end settings (kind, ifname, mtu, netns, mode, queues, offload); its network, address and MAC are the new
/// ones.
fn effective_config(cfg: &Config, old_cfg: &Config, plan: &Plan, change_failed: &[Option<String>]) -> Config {
    let mut eff = cfg.clone();
    for (i, pc) in eff.ports.iter_mut().enumerate() {
        if let (Some(_), PortAction::Reopen(o)) = (&change_failed[i], plan.actions[i]) {
            let old = &old_cfg.ports[o];
            pc.kind = old.kind;
            pc.ifname.clone_from(&old.ifname);
            pc.mtu = old.mtu;
            pc.netns.clone_from(&old.netns);
            pc.mode = old.mode;
            pc.queues = old.queues;
            pc.offload = old.offload;
        }
    }
    eff
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
    freed: HashSet<Iface>,
    /// By new port index: why the port's new settings could not be opened (it keeps its old port).
    change_failed: Vec<Option<String>>,
}

impl Prepared {
    /// What happens to each port.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// When every change of this apply was a port whose new settings failed to open (each keeping its old
    /// port): those ports, `(name, error)`. Committing would only pause the workers to run the same
    /// configuration, so the caller can skip it (an agent retrying such a change costs no pause).
    pub fn only_failed_changes(&self) -> Option<Vec<(String, String)>> {
        let nothing_else = self.base_workers == self.opts.workers
            && self.plan.closed.is_empty()
            && !self.deferred.iter().any(|&d| d)
            && self.opened.iter().all(Option::is_none)
            && effective_config(&self.cfg, &self.base, &self.plan, &self.change_failed) == self.base;
        let failed: Vec<(String, String)> = self
            .cfg
            .ports
            .iter()
            .zip(&self.change_failed)
            .filter_map(|(pc, e)| e.clone().map(|e| (pc.name.clone(), e)))
            .collect();
        (nothing_else && !failed.is_empty()).then_some(failed)
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
    /// A panic during the switch-over, contained: the previous configuration runs on (counted as a
    /// `control_panics`).
    #[error("the switch-over panicked: {0}; the previous configuration runs on")]
    Panicked(String),
    /// The workers could not be restarted: the switch is stopping.
    #[error("{0}; the switch is stopping")]
    Start(#[source] StartError),
    /// Applied without a pause, but these workers did not take their part within `after`: each is stuck in a
    /// batch, and takes the configuration at its next batch boundary; the others run it (it is the running
    /// configuration).
    #[error("workers {workers:?} did not take the configuration within {after:?} (stuck in a batch?); the other workers run it, and they will at their next batch boundary")]
    WorkersLate {
        /// The late workers.
        workers: Vec<usize>,
        /// How long the apply waited.
        after: std::time::Duration,
    },
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
    /// How long forwarding stopped: from pausing the workers to the new ones started; without a pause, the
    /// longest one worker spent carrying its shard over.
    pub pause_ns: u64,
    /// The workers were stopped and restarted (false: they took the change at a batch boundary).
    pub paused: bool,
    /// Ports down after the apply, `(name, error)`: they could not be opened (now or before) and are retried.
    pub failed: Vec<(String, String)>,
    /// Ports whose changed back-end settings could not be opened, `(name, error)`: each keeps its old, working
    /// port and old settings (in [`Applied::config`]).
    pub change_failed: Vec<(String, String)>,
    /// The configuration now running: the one applied, except the old back-end settings of `change_failed`.
    pub config: Config,
    /// Workers whose shard panicked while carrying itself over without a pause, each rebuilt for the new
    /// configuration (the others forwarded throughout; see `rebuild_shard`).
    pub shards_rebuilt: Vec<ShardRebuilt>,
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
    /// The plan to go from `old` (whose ports have `old_queues` queues) to `new` (with `new_workers`).
    pub fn new(old: &Config, old_queues: &[usize], new: &Config, new_workers: usize) -> Plan {
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
                        && old_queues.get(o).copied() == Some(queue_count(p, new_workers));
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
        Plan::new(old, &[1], new, 1).actions[0]
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
