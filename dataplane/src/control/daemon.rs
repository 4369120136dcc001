//! The daemon's side of the control socket: what each request does to the running switch.
//!
//! [`Daemon`] owns the [`Running`] switch (behind a `RwLock`), the running configuration's generation and
//! origin. Requests come parsed from [`crate::control::server`] connection threads; [`Daemon::handle`] answers
//! each one. Reads (`port_ls`, `fdb_show`, `conntrack_ls`, `stats`, …) take the read lock and then the switch's
//! mutex for as long as it takes to copy the table out, the same lock a worker takes per batch; they never
//! wait for the network. `apply` holds an apply lock throughout (applies are serialized), validates and opens
//! the new ports under the read lock ([`Running::prepare`]: reads go on while taps are created and sockets
//! bound), then takes the write lock for the switch-over ([`Running::commit`]: reads wait for about a
//! millisecond).
//!
//! # `apply`: what survives which change
//! The transaction is described in [`crate::live`] (new ports opened first, each on its own: one that fails is
//! applied as failed and retried, and a port whose changed settings fail keeps its old port and settings;
//! everything else all or nothing; a panic in the switch-over leaves the previous configuration running). Objects are
//! matched by name. Learned state is carried over as follows ([`crate::pipeline::Switch::reconfigure`]):
//!
//! | change | ports | MAC table entries | neighbours, connections, NAT bindings |
//! |--------|-------|-------------------|---------------------------------------|
//! | add a port, add a network | others stay open | kept | kept |
//! | remove a port | closed (tap deleted) | that port's entries dropped | kept (frames waiting for ARP at that moment are dropped) |
//! | move a port to another network | stays open | that port's entries dropped | kept unless they went through a router interface that changed |
//! | change a tap's mtu | stays open, MTU set in place | kept | kept |
//! | change a port's kind, ifname, netns, mode, queues or offload (or a non-tap's mtu) | reopened: the new one is opened before the old is closed unless it needs the same interface (same ifname and namespace, or a tap leaving vswitchd's namespace), in which case the old is closed first, its tap kept; if the new settings fail, the old port stays (or is opened again, its tap re-adopted) with its old settings (`ports_change_failed`) | kept (same name, same network) | kept |
//! | change a network's `mac_limit` / `mac_aging_secs` | stay open | kept (a smaller limit evicts as learning does: least recently seen of the port with the most entries) | kept |
//! | add, remove or change a gateway, routed port address, route, publish rule, `[nat]` or `[conntrack]` | as above | as above | the router is rebuilt and carries over what the change does not concern (`router/carry.rs`); the others are **flushed** and counted |
//! | change `[switch] workers` | taps and AF_PACKET ports reopened (their queue count follows the workers) | as above | as above |
//!
//! Pipeline counters follow a port while its name exists; worker counters are kept unless the number of
//! workers changes. The reply's [`ApplySummary`] lists what was kept, reattached, reopened and flushed.
//!
//! Threads: `Daemon` is `Sync`; any control thread may call [`Daemon::handle`]. The daemon's main thread uses
//! [`Daemon::report`] and, at exit, [`Daemon::shut_down`].

use crate::buffer::MAX_FRAME_LEN;
use crate::config::{Config, ConfigError, PortConfig};
use crate::control::proto::*;
use crate::ids::{table_id, NetId, NANOS_PER_SEC};
use crate::live::{ApplyError, LiveReport, Plan, PortAction, RunOptions, Running, StartError};
use crate::nat::ConnectionInfo;
use crate::pipeline::Switch;
use crate::port::any::AnyPort;
use crate::snapshot::Snapshot;
use crate::topology::Topology;
use crate::wire::decode::describe;
use crate::worker::panic_message;
use serde::Serialize;
use std::sync::{Mutex, PoisonError, RwLock};

/// Opens a port's queues: the daemon's is [`crate::port::any::open_port`]; tests pass memory ports.
pub type Opener = Box<dyn Fn(&PortConfig, usize) -> Result<Vec<AnyPort>, StartError> + Send + Sync>;

/// The running switch and its configuration's identity, served over the control socket.
pub struct Daemon {
    state: RwLock<Option<State>>,
    /// Held for a whole `apply`: applies are serialized.
    apply_lock: Mutex<()>,
    /// `--workers`: overrides `[switch] workers` of every configuration applied.
    workers_override: Option<usize>,
    open: Opener,
    /// A snapshot read at start, restored after the first successful `apply` (vswitchd started without
    /// `--config`).
    pending_snapshot: Mutex<Option<Snapshot>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("workers_override", &self.workers_override).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    running: Running,
    generation: u64,
    origin: Option<String>,
}

/// A request's failure.
type Failed = ErrorBody;

impl Daemon {
    /// A daemon serving `running`, whose configuration has `generation` (0 when started empty, 1 with
    /// `--config`) and came from `origin`.
    pub fn new(
        running: Running,
        generation: u64,
        origin: Option<String>,
        workers_override: Option<usize>,
        open: Opener,
    ) -> Daemon {
        Daemon {
            state: RwLock::new(Some(State { running, generation, origin })),
            apply_lock: Mutex::new(()),
            workers_override,
            open,
            pending_snapshot: Mutex::new(None),
        }
    }

    /// Keeps `snap` to restore after the first successful `apply` (when vswitchd started empty).
    pub fn restore_after_first_apply(&self, snap: Snapshot) {
        *self.pending_snapshot.lock().unwrap_or_else(PoisonError::into_inner) = Some(snap);
    }

    /// A snapshot of the running switch's learned state (`None` after shutdown).
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.with_running(Running::snapshot)
    }

    /// The options a configuration runs with (`--workers` applied).
    pub fn options_for(&self, cfg: &Config) -> RunOptions {
        let mut opts = RunOptions::from_config(cfg);
        if let Some(n) = self.workers_override {
            opts.workers = n;
        }
        opts
    }

    /// True once the switch is stopping (a signal, a panicking worker) or shut down.
    pub fn stopping(&self) -> bool {
        match self.state.read().unwrap_or_else(PoisonError::into_inner).as_ref() {
            Some(s) => s.running.stopping(),
            None => true,
        }
    }

    /// The counters now (`None` after shutdown).
    pub fn report(&self) -> Option<LiveReport> {
        self.state.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(|s| s.running.report())
    }

    /// Runs `f` on the running switch (`None` after shutdown); tests inject frames into memory ports this way.
    pub fn with_running<R>(&self, f: impl FnOnce(&Running) -> R) -> Option<R> {
        self.state.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(|s| f(&s.running))
    }

    /// Takes the running switch out (for stopping it); later requests get `shutting_down`.
    pub fn shut_down(&self) -> Option<Running> {
        self.state.write().unwrap_or_else(PoisonError::into_inner).take().map(|s| s.running)
    }

    /// Tries again the failed ports whose retry is due ([`Running::prepare_retry`], then
    /// [`Running::commit_retry`] if one opened); returns the names of the ports brought up. Cheap when nothing
    /// is due (one read lock). The daemon's main thread calls it every tick.
    pub fn retry_failed_ports(&self) -> Vec<String> {
        let due =
            self.state.read().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|s| s.running.retry_due());
        if !due {
            return Vec::new();
        }
        let _one_at_a_time = self.apply_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let retried = {
            let guard = self.state.read().unwrap_or_else(PoisonError::into_inner);
            let Some(st) = guard.as_ref() else { return Vec::new() };
            st.running.prepare_retry(&mut |p, n| (self.open)(p, n))
        };
        if retried.is_empty() {
            return Vec::new();
        }
        let mut guard = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let Some(State { running, generation, origin }) = guard.take() else { return Vec::new() };
        let (running, up) = running.commit_retry(retried);
        *guard = Some(State { running, generation, origin });
        up
    }

    /// Parses and answers one request line.
    pub fn handle_line(&self, line: &[u8]) -> Response {
        match Request::parse(line) {
            Ok(req) => self.handle(req),
            Err(rejected) => rejected.into_response(),
        }
    }

    /// Answers one request.
    pub fn handle(&self, req: Request) -> Response {
        let id = req.id;
        let name = req.op.name();
        // A panic while answering fails this request only (counted as `control_panics`, logged with its
        // message); the locks it poisoned are used as they are. A panic during an apply's switch-over, with the
        // workers paused and the switch taken apart, is contained by `Running::commit` itself, which hands the
        // previous switch back (an `ApplyError::Panicked`).
        let run = std::panic::AssertUnwindSafe(|| match req.op {
            Op::Apply(args) => self.apply(*args),
            op => self.read(op),
        });
        let result = std::panic::catch_unwind(run).unwrap_or_else(|payload| {
            let message = panic_message(&*payload);
            let n = self.with_running(Running::count_control_panic).unwrap_or(0);
            tracing::error!(op = name, panic = %message, control_panics = n, "control request panicked: it failed, the rest goes on");
            Err(ErrorBody::new(ErrorKind::Internal, format!("{name}: the request panicked: {message}")))
        });
        match result {
            Ok(v) => Response { version: PROTOCOL_VERSION, id: Some(id), ok: true, result: Some(v), error: None },
            Err(e) => {
                tracing::debug!(op = name, error = %e.message, "control request failed");
                Response::error(Some(id), e)
            }
        }
    }

    /// Every op but `apply`: under the read lock.
    fn read(&self, op: Op) -> Result<serde_json::Value, Failed> {
        let guard = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let st = guard.as_ref().ok_or_else(shutting_down)?;
        let r = &st.running;
        match op {
            Op::Hello => json(&HelloResult {
                server: "vswitchd".to_string(),
                server_version: env!("CARGO_PKG_VERSION").to_string(),
                protocol_version: PROTOCOL_VERSION,
                pid: std::process::id(),
                uptime_ns: r.now() - NANOS_PER_SEC,
                generation: st.generation,
            }),
            Op::GetConfig => {
                json(&ConfigResult { generation: st.generation, origin: st.origin.clone(), config: r.config().clone() })
            }
            Op::NetworkLs => {
                let cfg = r.config();
                json(
                    &r.with_switch(|sw| {
                        (0..cfg.networks.len()).map(|n| network_summary(cfg, sw, n)).collect::<Vec<_>>()
                    }),
                )
            }
            Op::NetworkInspect { name } => {
                let cfg = r.config();
                let n = cfg.network_index(&name).ok_or_else(|| no_network(cfg, &name, "name"))?;
                let now = r.now();
                json(&r.with_switch(|sw| {
                    let s = sw.fdb(table_id(n)).stats();
                    NetworkInspect {
                        summary: network_summary(cfg, sw, n),
                        config: cfg.networks[n].clone(),
                        fdb: FdbCounters {
                            entries: s.entries,
                            learned: s.learned,
                            moved: s.moved,
                            evicted: s.evicted,
                            aged: s.aged,
                        },
                        entries: fdb_rows(sw, table_id(n), now),
                        overlay: sw.overlay().inspect(table_id(n)),
                    }
                }))
            }
            Op::PortLs => {
                let report = r.report();
                let cfg = r.config();
                let rows: Vec<PortRow> = cfg
                    .ports
                    .iter()
                    .filter_map(|p| {
                        let lp = report.ports.get(&p.name)?;
                        let (io, c) = (&lp.io, &lp.pipeline);
                        Some(PortRow {
                            name: p.name.clone(),
                            kind: p.kind,
                            ifname: p.ifname.clone(),
                            mode: if p.network.is_some() { PortMode::Access } else { PortMode::Routed },
                            network: p.network.clone(),
                            address: p.address,
                            queues: lp.queues,
                            xdp_mode: lp.mode.clone(),
                            io: *io,
                            pipeline: *c,
                            offloads: lp.offloads.clone(),
                            state: if lp.error.is_some() { PortState::Failed } else { PortState::Up },
                            error: lp.error.clone(),
                        })
                    })
                    .collect();
                json(&rows)
            }
            Op::FdbShow { network } => {
                let cfg = r.config();
                let nets: Vec<usize> = match &network {
                    Some(name) => vec![cfg.network_index(name).ok_or_else(|| no_network(cfg, name, "network"))?],
                    None => (0..cfg.networks.len()).collect(),
                };
                let now = r.now();
                json(&r.with_switch(|sw| nets.iter().flat_map(|&n| fdb_rows(sw, table_id(n), now)).collect::<Vec<_>>()))
            }
            Op::RouteShow => json(&r.with_switch(|sw| {
                let topo = sw.topology();
                sw.router()
                    .routes()
                    .into_iter()
                    .map(|e| RouteRow {
                        prefix: e.prefix,
                        via: e.next_hop.via,
                        interface: rif_name(topo, e.next_hop.rif),
                        origin: e.origin.to_string(),
                    })
                    .collect::<Vec<_>>()
            })),
            Op::NeighShow => {
                let now = r.now();
                json(&r.with_switch(|sw| {
                    let topo = sw.topology();
                    sw.router()
                        .neighbours(now)
                        .into_iter()
                        .map(|e| NeighRow {
                            interface: rif_name(topo, e.rif),
                            ip: e.ip,
                            mac: e.mac,
                            state: e.state.to_string(),
                        })
                        .collect::<Vec<_>>()
                }))
            }
            Op::ConntrackLs { limit } => {
                let limit = limit.unwrap_or(DEFAULT_CONNTRACK_LIMIT);
                if limit > MAX_CONNTRACK_LIMIT {
                    return Err(ErrorBody::field(
                        ErrorKind::BadRequest,
                        "limit",
                        format!("{limit} is more than the {MAX_CONNTRACK_LIMIT} connections one request may list"),
                    ));
                }
                let now = r.now();
                // Every worker's shard (each holds the connections it owns), read in chunks of CONNTRACK_CHUNK
                // slots, each under its own short hold of that shard's lock (that worker forwards between them,
                // the others are never stopped), keeping only the `limit` first by original tuple: no lock is
                // held for a whole table, and memory is O(limit + chunk). Not a snapshot: a connection created or
                // removed meanwhile may or may not be listed.
                let mut first = FirstByOrig::new(limit);
                for k in 0..r.shards() {
                    let mut from = Some(0usize);
                    while let Some(start) = from {
                        let (chunk, next) = r.with_shard(k, |sw| sw.connections_chunk(now, start, CONNTRACK_CHUNK));
                        first.extend(chunk);
                        from = next;
                        // A whole table is many chunks of work on this thread: between two, a worker woken by
                        // traffic on this CPU gets it now rather than at the end of this thread's slice (3–4 ms;
                        // see `crate::sched`).
                        std::thread::yield_now();
                    }
                }
                let (total, kept) = first.finish();
                json(&ConntrackList {
                    total,
                    truncated: total > limit,
                    connections: kept.iter().map(conn_row).collect(),
                })
            }
            Op::ConntrackFlush => {
                let mut removed = 0;
                r.for_each_shard(|sw| removed += sw.flush_conntrack());
                json(&ConntrackFlushed { removed })
            }
            Op::OverlayUpdate { state } => {
                // Every worker's shard holds the membership (read-mostly, replicated): worker 0's is updated first
                // (an invalid state is refused there and changes nothing), then each other's in turn. Each shard
                // is locked only while its own tables are rebuilt (that worker waits as for any batch; the others
                // forward): no pause, no apply lock. `held_us` is the longest one shard was held.
                let (result, held) = r.with_shard(0, |sw| {
                    let t = std::time::Instant::now();
                    (sw.update_overlay(state.clone()), t.elapsed())
                });
                let summary = result.map_err(|e| {
                    ErrorBody::field(ErrorKind::BadRequest, &format!("state.{}", e.field), e.message.clone())
                })?;
                let mut held = held;
                for k in 1..r.shards() {
                    let t = std::time::Instant::now();
                    let res = r.with_shard(k, |sw| sw.update_overlay(state.clone()));
                    held = held.max(t.elapsed());
                    if let Err(e) = res {
                        tracing::error!(worker = k, error = %e.message, "overlay update accepted by worker 0 refused by another");
                    }
                }
                json(&OverlayUpdateResult { summary, held_us: u64::try_from(held.as_micros()).unwrap_or(u64::MAX) })
            }
            Op::Stats => json(&StatsResult { generation: st.generation, report: json(&r.report())? }),
            Op::Trace { port, frame_hex } => {
                let cfg = r.config();
                let in_port = cfg.port_index(&port).ok_or_else(|| {
                    let known: Vec<&str> = cfg.ports.iter().map(|p| p.name.as_str()).collect();
                    let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                    ErrorBody::field(ErrorKind::NotFound, "port", format!("no port {port:?}; known ports: {known}"))
                })?;
                let frame =
                    parse_hex(&frame_hex).map_err(|m| ErrorBody::field(ErrorKind::BadRequest, "frame_hex", m))?;
                let now = r.now();
                // The copy is made under the lock of the shard owning the frame's connection (which holds it; the
                // MAC tables and neighbours are the same in every shard), and holds only the connections the traced
                // frame belongs to; the trace runs on it after the lock is released.
                let owner = r.with_switch(|sw| sw.owner_of_frame(&frame, r.shards())).unwrap_or(0);
                let mut scratch = r.with_shard(owner, |sw| sw.scratch(now, &frame));
                let steps = scratch
                    .trace(now, table_id(in_port), &frame)
                    .map_err(|m| ErrorBody::field(ErrorKind::BadRequest, "frame_hex", m))?;
                let names = &scratch.topology().ports;
                json(&TraceResult {
                    port,
                    frame: describe(&frame),
                    stages: steps
                        .stages
                        .into_iter()
                        .map(|(stage, decision)| TraceStage { stage: stage.to_string(), decision })
                        .collect(),
                    outputs: steps
                        .outputs
                        .iter()
                        .map(|(p, f)| TraceOutput { port: names[*p as usize].name.clone(), frame: describe(f) })
                        .collect(),
                    drops: steps.drops.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                })
            }
            Op::Apply(_) => Err(ErrorBody::new(ErrorKind::Internal, "apply is not a read".to_string())),
        }
    }

    /// `apply`: validate, then one transaction under the write lock.
    fn apply(&self, args: ApplyArgs) -> Result<serde_json::Value, Failed> {
        let origin = args.origin.clone().unwrap_or_else(|| "apply".to_string());
        let cfg = match (args.config, &args.toml) {
            (Some(_), Some(_)) => {
                return Err(ErrorBody::field(
                    ErrorKind::BadRequest,
                    "toml",
                    "give the configuration as `config` or as `toml`, not both".to_string(),
                ))
            }
            (None, None) => {
                return Err(ErrorBody::field(
                    ErrorKind::BadRequest,
                    "config",
                    "missing field `config` (or `toml`): the configuration to apply".to_string(),
                ))
            }
            (Some(cfg), None) => {
                cfg.validate(&origin).map_err(|e| ErrorBody::invalid_config("config", &split(e)))?;
                cfg
            }
            (None, Some(text)) => {
                Config::parse_all_errors(text, &origin).map_err(|e| ErrorBody::invalid_config("toml", &e))?
            }
        };
        let opts = self.options_for(&cfg);
        // Applies are serialized; between them, the running configuration only changes under this lock.
        let _one_at_a_time = self.apply_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let err = |kind| {
            move |e: ApplyError| {
                tracing::warn!(error = %e, "apply failed; the running configuration is unchanged");
                Err(ErrorBody::new(kind, e.to_string()))
            }
        };
        // Checks and new ports under the read lock: reads go on meanwhile.
        let (prepared, mut summary) = {
            let guard = self.state.read().unwrap_or_else(PoisonError::into_inner);
            let st = guard.as_ref().ok_or_else(shutting_down)?;
            if let Some(expected) = args.expect_generation {
                if expected != st.generation {
                    return Err(ErrorBody::field(
                        ErrorKind::Conflict,
                        "expect_generation",
                        format!(
                            "the running configuration is generation {}, not {expected}: read it again (get_config)",
                            st.generation
                        ),
                    ));
                }
            }
            let old = st.running.config();
            let old_workers = st.running.options().workers;
            let plan = st.running.plan(&cfg, opts.workers);
            // A port that kept its old queue count after a failed change is reopened by the same apply again.
            let unchanged = *old == cfg
                && old_workers == opts.workers
                && plan.actions.iter().all(|a| matches!(a, PortAction::Keep(_)));
            let mut summary = summarize(old, &cfg, &plan, old_workers != opts.workers);
            if unchanged || args.dry_run {
                // What the router would do, for a dry run (MAC entry counts are only known when applied).
                summary.router_state = router_state(old, &cfg);
                return json(&ApplyResult {
                    generation: st.generation,
                    changed: !unchanged,
                    dry_run: args.dry_run,
                    summary,
                });
            }
            match st.running.prepare(&cfg, opts, &mut |p, n| (self.open)(p, n)) {
                Ok(p) => match p.only_failed_changes() {
                    // Every change failed, each port keeping its old settings: nothing to switch over to.
                    Some(failed) => {
                        for (port, error) in &failed {
                            tracing::warn!(port = %port, error = %error, "the port's change failed again: it keeps its old settings");
                        }
                        summary.ports_reopened.clear();
                        summary.ports_change_failed =
                            failed.into_iter().map(|(port, error)| PortFailedRow { port, error }).collect();
                        return json(&ApplyResult {
                            generation: st.generation,
                            changed: false,
                            dry_run: false,
                            summary,
                        });
                    }
                    None => (p, summary),
                },
                Err(e @ ApplyError::Port { .. }) => return err(ErrorKind::PortFailed)(e),
                Err(e) => return err(ErrorKind::Internal)(e),
            }
        };
        // The switch-over under the write lock: take the running switch out; it is always handed back.
        let mut guard = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let Some(State { running, generation, origin: old_origin }) = guard.take() else {
            return Err(shutting_down());
        };
        let (running, result) = running.commit(prepared, &mut |p, n| (self.open)(p, n));
        match result {
            Ok(applied) => {
                let c = applied.carried;
                summary.fdb_entries_kept = c.fdb_kept;
                summary.fdb_entries_flushed = c.fdb_flushed;
                summary.router_state = if c.router_kept { RouterState::Kept } else { RouterState::Flushed };
                summary.connections_flushed = c.connections_flushed;
                summary.pause_us = applied.pause_ns / 1000;
                summary.workers_paused = applied.paused;
                summary.ports_failed =
                    applied.failed.into_iter().map(|(port, error)| PortFailedRow { port, error }).collect();
                for f in &summary.ports_failed {
                    tracing::warn!(port = %f.port, error = %f.error, "applied with this port down: retrying it");
                }
                summary.ports_reopened.retain(|p| !applied.change_failed.iter().any(|(name, _)| name == p));
                summary.ports_change_failed =
                    applied.change_failed.into_iter().map(|(port, error)| PortFailedRow { port, error }).collect();
                for f in &summary.ports_change_failed {
                    tracing::warn!(port = %f.port, error = %f.error, "applied with this port on its old settings");
                }
                summary.shards_rebuilt = applied
                    .shards_rebuilt
                    .into_iter()
                    .map(|r| ShardRebuiltRow {
                        worker: r.worker,
                        error: r.error,
                        connections_kept: r.connections_kept,
                        connections_lost: r.connections_lost,
                    })
                    .collect();
                let generation = generation + 1;
                tracing::info!(generation, origin = %clipped(&origin), summary = ?summary, "configuration applied");
                if let Some(snap) = self.pending_snapshot.lock().unwrap_or_else(PoisonError::into_inner).take() {
                    let r = running.restore(&snap);
                    tracing::info!(restored = ?r, "state snapshot restored after the first apply");
                }
                *guard = Some(State { running, generation, origin: Some(origin) });
                json(&ApplyResult { generation, changed: true, dry_run: false, summary })
            }
            Err(e) => {
                // Late workers: the configuration is in place (the others run it, they will), so it is the
                // running one and counts as a generation; the error says why it is not yet everywhere.
                let (generation, origin) = match e {
                    ApplyError::WorkersLate { .. } => (generation + 1, Some(origin)),
                    _ => (generation, old_origin),
                };
                *guard = Some(State { running, generation, origin });
                err(ErrorKind::Internal)(e)
            }
        }
    }
}

/// Longest client-given text put in a log line as it is (an `apply`'s `origin` may be megabytes long).
const LOGGED_TEXT: usize = 256;

/// `text`, cut to about [`LOGGED_TEXT`] bytes (on a character boundary) with its full length said, for a log line.
fn clipped(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= LOGGED_TEXT {
        return text.into();
    }
    let end = (0..=LOGGED_TEXT).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}… ({} bytes)", &text[..end], text.len()).into()
}

/// Hex digits (whitespace, `:` and `-` between them allowed) to bytes: a whole Ethernet frame, 14 bytes to
/// [`MAX_FRAME_LEN`].
fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b':' && *b != b'-').collect();
    if digits.len() & 1 == 1 {
        return Err(format!("an odd number of hex digits ({})", digits.len()));
    }
    let frame = digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).unwrap_or("??");
            u8::from_str_radix(s, 16).map_err(|_| format!("not a hex byte: {s:?}"))
        })
        .collect::<Result<Vec<u8>, String>>()?;
    if frame.len() < 14 {
        return Err(format!("{} bytes is shorter than an Ethernet header (14)", frame.len()));
    }
    if frame.len() > MAX_FRAME_LEN {
        return Err(format!("{} bytes is longer than the largest frame ({MAX_FRAME_LEN})", frame.len()));
    }
    Ok(frame)
}

/// One joined [`ConfigError`] back into its lines (they are joined one per line; see `crate::config`).
fn split(e: ConfigError) -> Vec<ConfigError> {
    let mut lines = e.message.lines();
    let first = ConfigError { message: lines.next().unwrap_or_default().to_string(), ..e.clone() };
    std::iter::once(first)
        .chain(lines.map(|l| ConfigError { origin: e.origin.clone(), line: None, message: l.to_string() }))
        .collect()
}

fn router_state(old: &Config, new: &Config) -> RouterState {
    if Topology::from_config(old).same_router_as(&Topology::from_config(new)) {
        RouterState::Kept
    } else {
        RouterState::Flushed
    }
}

/// The summary of a plan, by name (MAC and connection counts are filled in after the apply).
fn summarize(old: &Config, new: &Config, plan: &Plan, workers_changed: bool) -> ApplySummary {
    let mut s = ApplySummary { workers_changed, ..ApplySummary::default() };
    for (p, a) in new.ports.iter().zip(&plan.actions) {
        let list = match a {
            PortAction::Keep(_) => &mut s.ports_unchanged,
            PortAction::Reattach(_) => &mut s.ports_reattached,
            PortAction::Open => &mut s.ports_added,
            PortAction::Reopen(_) => &mut s.ports_reopened,
        };
        list.push(p.name.clone());
    }
    s.ports_removed = plan.closed.iter().map(|&o| old.ports[o].name.clone()).collect();
    for n in &new.networks {
        match old.network_index(&n.name) {
            None => s.networks_added.push(n.name.clone()),
            Some(o) if old.networks[o] != *n => s.networks_changed.push(n.name.clone()),
            Some(_) => {}
        }
    }
    s.networks_removed =
        old.networks.iter().filter(|n| new.network_index(&n.name).is_none()).map(|n| n.name.clone()).collect();
    s
}

fn network_summary(cfg: &Config, sw: &Switch, n: usize) -> NetworkSummary {
    let nc = &cfg.networks[n];
    let topo = sw.topology();
    let info = &topo.networks[n];
    NetworkSummary {
        name: nc.name.clone(),
        subnet: nc.subnet,
        gateway: nc.gateway,
        gateway_mac: info.rif.map(|r| topo.rifs[r as usize].mac),
        internal: nc.internal,
        masquerade: nc.masquerade,
        ports: info.ports.iter().map(|&p| topo.ports[p as usize].name.clone()).collect(),
        mac_entries: sw.fdb(table_id(n)).len(),
        mac_limit: nc.mac_limit,
    }
}

fn fdb_rows(sw: &Switch, net: NetId, now: u64) -> Vec<FdbRow> {
    let topo = sw.topology();
    let network = &topo.networks[net as usize].name;
    sw.fdb(net)
        .entries(now)
        .into_iter()
        .map(|e| FdbRow {
            network: network.clone(),
            mac: e.mac,
            port: topo.ports.get(e.port as usize).map_or_else(|| format!("#{}", e.port), |p| p.name.clone()),
            age_ms: now.saturating_sub(e.last_seen) / 1_000_000,
        })
        .collect()
}

fn rif_name(topo: &Topology, rif: u16) -> String {
    topo.rifs.get(rif as usize).map_or_else(|| format!("#{rif}"), |r| r.name.clone())
}

/// Slots of the connection table read per hold of the switch lock by `conntrack_ls`: small enough that a hold
/// is short next to a forwarding batch even in a debug build (1,024 entries copied), large enough that reading a
/// million-slot table takes ~1,000 holds.
const CONNTRACK_CHUNK: usize = 1024;

/// The first `limit` connections by original tuple among all given, in O(limit) memory (a max-heap of the
/// kept ones), and how many were given.
struct FirstByOrig {
    limit: usize,
    total: usize,
    heap: std::collections::BinaryHeap<OrderedConn>,
}

impl FirstByOrig {
    fn new(limit: usize) -> Self {
        FirstByOrig { limit, total: 0, heap: std::collections::BinaryHeap::new() }
    }

    fn extend(&mut self, chunk: impl IntoIterator<Item = ConnectionInfo>) {
        for c in chunk {
            self.total += 1;
            if self.heap.len() < self.limit {
                self.heap.push(OrderedConn(c));
            } else if self.heap.peek().is_some_and(|top| c.orig < top.0.orig) {
                self.heap.pop();
                self.heap.push(OrderedConn(c));
            }
        }
    }

    /// (how many were given, the first `limit` sorted by original tuple).
    fn finish(self) -> (usize, Vec<ConnectionInfo>) {
        let mut kept: Vec<ConnectionInfo> = self.heap.into_iter().map(|c| c.0).collect();
        kept.sort_by_key(|c| c.orig);
        (self.total, kept)
    }
}

/// A connection ordered by its original tuple (for keeping the first `limit` in a heap).
struct OrderedConn(ConnectionInfo);

impl PartialEq for OrderedConn {
    fn eq(&self, other: &Self) -> bool {
        self.0.orig == other.0.orig
    }
}
impl Eq for OrderedConn {}
impl PartialOrd for OrderedConn {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedConn {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.orig.cmp(&other.0.orig)
    }
}

fn conn_row(c: &ConnectionInfo) -> ConnRow {
    let tuple = |t: &crate::conntrack::Tuple| ConnTuple { src: t.src, sport: t.sport, dst: t.dst, dport: t.dport };
    ConnRow {
        proto: word(&c.proto),
        state: word(&c.state),
        orig: tuple(&c.orig),
        reply: tuple(&c.reply),
        nat: c.nat.as_ref().map(word),
        expires_in_secs: c.expires_in_secs,
    }
}

/// A serde enum value as one lowercase word (`{"tcp":"ESTABLISHED"}` → `established`).
fn word<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s.to_lowercase(),
        Ok(serde_json::Value::Object(m)) if m.len() == 1 => match m.values().next() {
            Some(serde_json::Value::String(s)) => s.to_lowercase(),
            Some(other) => other.to_string(),
            None => String::new(),
        },
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn json<T: Serialize>(v: &T) -> Result<serde_json::Value, Failed> {
    serde_json::to_value(v).map_err(|e| ErrorBody::new(ErrorKind::Internal, format!("encoding the result: {e}")))
}

fn shutting_down() -> ErrorBody {
    ErrorBody::new(ErrorKind::ShuttingDown, "vswitchd is stopping".to_string())
}

fn no_network(cfg: &Config, name: &str, field: &str) -> ErrorBody {
    let known: Vec<&str> = cfg.networks.iter().map(|n| n.name.as_str()).collect();
    let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
    ErrorBody::field(ErrorKind::NotFound, field, format!("no network {name:?}; known networks: {known}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{Proto, ProtoState, Tuple, UdpState};
    use std::net::Ipv4Addr;

    fn conn(sport: u16) -> ConnectionInfo {
        let orig = Tuple::new(0, Proto::Udp, (Ipv4Addr::new(10, 0, 0, 2), sport), (Ipv4Addr::new(10, 0, 0, 9), 53));
        ConnectionInfo {
            proto: Proto::Udp,
            state: ProtoState::Udp(UdpState::Unreplied),
            orig,
            reply: orig.inverse(),
            nat: None,
            expires_in_secs: 1,
        }
    }

    #[test]
    fn long_client_text_is_clipped_for_logs_on_a_character_boundary() {
        assert_eq!(clipped("agent.toml"), "agent.toml");
        let long = "é".repeat(1000);
        let c = clipped(&long);
        assert!(c.len() < LOGGED_TEXT + 32, "{}", c.len());
        assert!(c.ends_with("… (2000 bytes)"), "{c}");
    }

    #[test]
    fn the_first_by_tuple_are_kept_across_chunks_whatever_their_order() {
        // 1,000 connections in a scrambled order, given in chunks of 7: the 10 smallest ports are kept.
        let ports: Vec<u16> = (0..1000u32).map(|i| ((i * 379) % 1000) as u16).collect();
        let mut first = FirstByOrig::new(10);
        for chunk in ports.chunks(7) {
            first.extend(chunk.iter().map(|&p| conn(p)));
        }
        let (total, kept) = first.finish();
        assert_eq!(total, 1000);
        assert_eq!(kept.iter().map(|c| c.orig.sport).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
        let (total, kept) = FirstByOrig::new(0).finish();
        assert_eq!((total, kept.len()), (0, 0));
    }
}
