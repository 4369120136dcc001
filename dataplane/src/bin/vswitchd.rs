//! `vswitchd`: the vswitch dataplane daemon.
//!
//! - `vswitchd run [--config FILE] [--socket PATH]`: the live switch (see `dataplane::live`): opens every
//!   configured port (none without `--config`), serves the control socket (`dataplane::control`; an agent or
//!   `vswitchctl` applies configurations and reads tables through it), forwards with `[switch] workers`
//!   poll-mode threads until SIGINT/SIGTERM, then stops cleanly and prints the counters.
//! - `vswitchd replay`: the forwarding pipeline over capture files on a virtual clock (see `dataplane::replay`).
//!
//! Exit status: 0 on success; 2 for a bad command line or configuration; 1 when a port cannot be opened or the
//! switch fails while running.

#![warn(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dataplane::config::{limits, Config};
use dataplane::config::{PortConfig, PortKind};
use dataplane::control::daemon::Daemon;
use dataplane::control::proto::DEFAULT_SOCKET;
use dataplane::control::server::ControlSocket;
use dataplane::live::StartError;
use dataplane::live::{LiveReport, RunOptions, Runtime};
use dataplane::overlay::OverlayState;
use dataplane::port::any::{open_port, AnyPort};
use dataplane::port::pcap::read_capture;
use dataplane::port::xdp_owned::XdpPrograms;
use dataplane::replay::{replay_with_overlay, ReplayInput, ReplayReport};
use dataplane::snapshot;
use dataplane::wire::decode::describe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "vswitchd", version, about = "vswitch dataplane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the live switch: open every configured port (none without --config; taps left by an earlier vswitchd
    /// are re-adopted), serve the control socket, forward with `[switch] workers` poll-mode threads until
    /// SIGINT/SIGTERM, then close the ports (taps stay, persistent, unless --cleanup), remove the socket and print the counters as JSON on stdout. Exit 0 after a clean stop, 2 for a
    /// bad configuration or command line, 1 when a port cannot be opened (the message names the port; nothing
    /// opened before it is left behind) or the control socket cannot be served (another vswitchd on it).
    ///
    /// The counters JSON: uptime_ns, frames_in, frames_out, ports.NAME.{kind, ifname, queues, mode, io,
    /// queue_io, pipeline}, drops, networks, bridge, router, neigh, nat, snat, conntrack, and workers[].{id, rx_queues, iterations,
    /// busy_iterations, busy_ns, rx_packets, rx_batches, switch_waits, sleeps, port_errors, buffers_added,
    /// cpu_ns, pool_available, pool_capacity}. Switch cost per received packet = sum(busy_ns) / sum(rx_packets) (wall time of busy
    /// iterations) or sum(cpu_ns) / sum(rx_packets) (thread CPU time, includes idle polling).
    Run {
        /// The switch configuration (TOML; generation 1). Without it vswitchd starts with no ports and no
        /// networks (generation 0) and waits for a configuration on the control socket (`apply`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The control socket (created mode 0600, its directory created if missing, removed at exit).
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Also let members of this group (numeric gid; primary or supplementary) use the control socket: it is
        /// then mode 0660, owned by that group. Without it only root and vswitchd's own uid may (checked per
        /// connection with SO_PEERCRED and SO_PEERGROUPS, and logged).
        #[arg(long, value_name = "GID")]
        socket_group: Option<u32>,
        /// Also write the counters JSON to this file at exit (and every --stats-interval while running; the
        /// file is replaced atomically, so a reader never sees half of it).
        #[arg(long, value_name = "FILE")]
        stats_json: Option<PathBuf>,
        /// Write --stats-json every SECS seconds while running (fractions allowed, e.g. 0.5).
        #[arg(long, value_name = "SECS", requires = "stats_json")]
        stats_interval: Option<f64>,
        /// Override `[switch] workers` (1..=64).
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
        /// Where the state snapshot lives (`DIR/vswitchd.state`: MAC tables, neighbours, connections with their
        /// NAT bindings; read at start, written every --state-interval and at exit) and the record of the XDP
        /// programs vswitchd attached (`DIR/xdp-programs.json`). Default: next to the control socket, named
        /// after it (`/run/vswitch/vswitchd.state` with the default socket), so two vswitchds never share one.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Write the state snapshot every SECS seconds while running (fractions allowed; 0: only at exit).
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        state_interval: f64,
        /// At exit, delete the taps of every port (by default they are persistent and outlive vswitchd, so
        /// that a restart re-adopts them and the containers keep their interfaces).
        #[arg(long)]
        cleanup: bool,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9477, an address of vswitchd's own
        /// network namespace). Off by default.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Run the pipeline over pcap files with a virtual clock; every configured port writes OUT_DIR/PORT.pcap.
    Replay {
        /// The switch configuration (TOML); every port in it becomes a pcap port.
        #[arg(long)]
        config: PathBuf,
        /// PORT=FILE.pcap: frames the port receives (repeatable).
        #[arg(long = "in", value_name = "PORT=FILE")]
        inputs: Vec<ReplayInput>,
        /// Where PORT.pcap files are written (created if missing).
        #[arg(long)]
        out_dir: PathBuf,
        /// Also write the counters as JSON to this file.
        #[arg(long)]
        stats_json: Option<PathBuf>,
        /// Decoded frames to print per output port (0: counters only).
        #[arg(long, default_value_t = 10)]
        show: usize,
        /// The overlay membership to install before the first frame: a JSON file in the form of the control
        /// socket's `overlay_update` state (`{"revision":1,"members":[…],"endpoints":[…]}`).
        #[arg(long, value_name = "FILE")]
        overlay: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // `info` unless RUST_LOG says otherwise: the start-up memory budget, each control connection's peer and
    // refusals are part of the security record (README § Security model). Nothing logs at info per frame.
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => tracing_subscriber::EnvFilter::new(v),
        _ => tracing_subscriber::EnvFilter::new("info"),
    };
    // Colours only on a terminal: logs kept in files (the lab's, a service manager's) stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            socket,
            socket_group,
            stats_json,
            stats_interval,
            workers,
            state_dir,
            state_interval,
            cleanup,
            metrics,
        } => {
            let state = match state_options(&socket, state_dir, state_interval) {
                Ok(s) => s,
                Err(e) => return usage_error(&e),
            };
            run(
                config.as_deref(),
                (&socket, socket_group),
                stats_json.as_deref(),
                stats_interval,
                workers,
                &state,
                cleanup,
                metrics,
            )
        }
        Command::Replay { config, inputs, out_dir, stats_json, show, overlay } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return usage_error(&e),
            };
            let overlay = match overlay.as_deref().map(load_overlay).transpose() {
                Ok(o) => o,
                Err(e) => return usage_error(&e),
            };
            let report = match replay_with_overlay(&cfg, overlay.as_ref(), &inputs, &out_dir) {
                Ok(r) => r,
                Err(e) => return usage_error(&e),
            };
            if let Err(e) = print_report(&report, show, stats_json.as_deref()) {
                // A reader that went away (`| head`) is not a failure of the replay.
                if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
                    return ExitCode::SUCCESS;
                }
                eprintln!("vswitchd: {e:#}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
    }
}

/// Reads `vswitchd replay --overlay FILE`.
fn load_overlay(path: &Path) -> Result<OverlayState, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--overlay {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("--overlay {}: {e}", path.display()))
}

/// How often the main thread checks the stop flag and the workers while the switch runs.
const MAIN_TICK: Duration = Duration::from_millis(20);

/// `vswitchd run`.
#[allow(clippy::too_many_arguments)]
fn run(
    config: Option<&Path>,
    (socket, socket_group): (&Path, Option<u32>),
    stats_json: Option<&Path>,
    stats_interval: Option<f64>,
    workers: Option<usize>,
    state: &StateOptions,
    cleanup: bool,
    metrics: Option<std::net::SocketAddr>,
) -> ExitCode {
    let interval = match stats_interval {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 && s < 1e6 => Some(Duration::from_secs_f64(s)),
        Some(s) => return usage_error(&format!("run: --stats-interval {s}: expected a number of seconds > 0")),
    };
    let (cfg, generation, origin) = match config {
        Some(path) => match Config::load(path) {
            Ok(c) => (c, 1, Some(path.display().to_string())),
            Err(e) => return usage_error(&e),
        },
        None => (Config::default(), 0, None),
    };
    let mut opts = RunOptions::from_config(&cfg);
    if let Some(n) = workers {
        if !limits::WORKERS.contains(&n) {
            return usage_error(&format!(
                "run: --workers {n}: expected {}..={}",
                limits::WORKERS.start(),
                limits::WORKERS.end()
            ));
        }
        opts.workers = n;
    }
    // The socket before the ports: a second vswitchd on the same socket must not touch any interface.
    let control = match ControlSocket::bind(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vswitchd: run: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(gid) = socket_group {
        if let Err(e) = control.allow_group(gid) {
            eprintln!("vswitchd: run: control socket {}: group {gid}: {e}", socket.display());
            return ExitCode::FAILURE;
        }
    }

    // The metrics address too: a taken address fails before any port is touched.
    let metrics_listener = match metrics.map(std::net::TcpListener::bind).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vswitchd: run: --metrics {}: {e}", metrics.map(|a| a.to_string()).unwrap_or_default());
            return ExitCode::FAILURE;
        }
    };

    // Signals first: one that arrives while ports are being opened stops the switch as soon as it starts. A
    // second SIGINT/SIGTERM while stopping exits at once (status 1).
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let r = signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&stop)));
        if let Err(e) = r {
            eprintln!("vswitchd: run: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    }

    // Test hook: with VSWITCHD_TEST_HOOKS=1, SIGUSR1 makes a worker iteration panic (the worker recovers and
    // counts it in `worker_restarts`). Never installed otherwise.
    let inject_panic = Arc::new(AtomicBool::new(false));
    if std::env::var_os("VSWITCHD_TEST_HOOKS").is_some_and(|v| v == "1") {
        if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&inject_panic)) {
            eprintln!("vswitchd: run: cannot install the test hook: {e}");
            return ExitCode::FAILURE;
        }
        tracing::warn!("test hooks on: SIGUSR1 injects a worker panic");
    }

    // AF_XDP programs of ours left by a vswitchd that did not stop cleanly are replaced, others left alone.
    let xdp = Arc::new(XdpPrograms::load(&state.xdp));
    let opener = {
        let xdp = Arc::clone(&xdp);
        move |p: &PortConfig, n: usize| -> Result<Vec<AnyPort>, StartError> {
            let xdp_if = (p.kind == PortKind::Afxdp).then_some(p.ifname.as_deref()).flatten();
            let before = xdp_if.map(|i| xdp.before_open(i));
            let queues = open_port(p, n)?;
            if let (Some(i), Some(before)) = (xdp_if, before) {
                xdp.after_open(i, before);
            }
            Ok(queues)
        }
    };
    // A port that cannot be opened is logged, reported as failed and retried; the others come up.
    let runtime = match Runtime::open(&cfg, opts.clone(), &mut |p, n| opener(p, n)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vswitchd: run: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The learned state of the vswitchd that ran before: restored now when started with a configuration, else
    // after the first apply. A missing, corrupt or other-version file is ignored (with a warning).
    let snapshot = match snapshot::read(&state.path) {
        Ok(s) => Some(s),
        Err(snapshot::ReadError::Missing(_)) => None,
        Err(e) => {
            tracing::warn!(error = %e, "state snapshot not used");
            None
        }
    };
    let snapshot = match snapshot {
        Some(snap) if config.is_some() => {
            let r = runtime.restore(&snap);
            tracing::info!(restored = ?r, path = %state.path.display(), "state snapshot restored");
            None
        }
        other => other,
    };
    let worker_stop = runtime.stop_flag();
    let running = match runtime.start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vswitchd: run: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(workers = opts.workers, ports = cfg.ports.len(), generation, socket = %socket.display(), "forwarding");
    let b = dataplane::live::budget::memory_budget(&cfg, opts.workers);
    let mib = |x: u64| x >> 20;
    tracing::info!(
        total_mib = mib(b.total),
        workers = opts.workers,
        buffers_mib = mib(b.buffers),
        large_buffers_mib = mib(b.large_buffers),
        tx_queues_mib = mib(b.tx_queues),
        conntrack_mib = mib(b.conntrack),
        fdb_mib = mib(b.fdb),
        neigh_mib = mib(b.neigh),
        control_mib = mib(b.control),
        "memory budget (estimate of the configuration's big items, live::budget: pools, queues, connection, MAC \
         and neighbour tables of every worker, and control requests being read; not responses, the FIB, NAT \
         bitmaps or overlay tables)"
    );
    let daemon = Arc::new(Daemon::new(running, generation, origin, workers, Box::new(opener)));
    if let Some(snap) = snapshot {
        daemon.restore_after_first_apply(snap);
    }
    let control_stop = Arc::new(AtomicBool::new(false));
    let server = match control.serve(Arc::clone(&daemon), Arc::clone(&control_stop), socket_group) {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("vswitchd: run: control socket: {e}");
            stop.store(true, Ordering::Relaxed);
            None
        }
    };

    let metrics_stop = Arc::new(AtomicBool::new(false));
    let metrics_server = metrics_listener.and_then(|listener| {
        let d = Arc::clone(&daemon);
        let page = Box::new(move || metrics_page(&d));
        match dataplane::metrics::serve(listener, Arc::clone(&metrics_stop), page) {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("vswitchd: run: --metrics: {e}");
                stop.store(true, Ordering::Relaxed);
                None
            }
        }
    });
    if let Some(addr) = metrics.filter(|_| metrics_server.is_some()) {
        tracing::info!(%addr, "serving metrics at /metrics");
    }

    let mut next_stats = interval.map(|i| Instant::now() + i);
    let mut next_state = state.interval.map(|i| Instant::now() + i);
    let mut failed = server.is_none() || (metrics.is_some() && metrics_server.is_none());
    while !stop.load(Ordering::Relaxed) && !daemon.stopping() {
        std::thread::sleep(MAIN_TICK);
        daemon.retry_failed_ports();
        if inject_panic.swap(false, Ordering::Relaxed) {
            daemon.with_running(|r| r.inject_worker_panic());
        }
        if let (Some(at), Some(every)) = (next_state, state.interval) {
            if Instant::now() >= at {
                if let Some(snap) = daemon.snapshot() {
                    save_state(&state.path, &snap);
                }
                next_state = Some((at + every).max(Instant::now()));
            }
        }
        if let (Some(at), Some(path), Some(every)) = (next_stats, stats_json, interval) {
            if Instant::now() >= at {
                if let Some(Err(e)) = daemon.report().map(|r| write_stats(path, &r)) {
                    tracing::warn!(error = %format!("{e:#}"), "cannot write the stats file");
                }
                // Keep the cadence, but never try to catch up after a stall.
                next_stats = Some((at + every).max(Instant::now()));
            }
        }
    }
    if !stop.load(Ordering::Relaxed) {
        // The workers stopped by themselves: one of them panicked.
        failed = true;
    }
    worker_stop.store(true, Ordering::Relaxed);
    // No more requests; the socket file is removed when the server thread ends.
    control_stop.store(true, Ordering::Relaxed);
    if let Some(h) = server {
        let _ = h.join();
    }
    metrics_stop.store(true, Ordering::Relaxed);
    if let Some(h) = metrics_server {
        let _ = h.join();
    }
    let Some(running) = daemon.shut_down() else {
        eprintln!("vswitchd: run: the switch was already shut down");
        return ExitCode::FAILURE;
    };
    let stopped = running.stop();
    if !stopped.panicked.is_empty() {
        eprintln!("vswitchd: run: worker(s) {:?} panicked", stopped.panicked);
        failed = true;
    }
    // Close the ports before saying we are done: taps stay (persistent) unless --cleanup, and so does the state
    // snapshot, written now that nothing forwards any more.
    if cleanup {
        stopped.runtime.remove_ports_on_close();
        let _ = std::fs::remove_file(&state.xdp);
        if let Err(e) = std::fs::remove_file(&state.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, path = %state.path.display(), "cannot remove the state snapshot");
            }
        }
    } else {
        save_state(&state.path, &stopped.runtime.snapshot());
    }
    drop(stopped.runtime);
    let report = stopped.report;
    let w = &report.workers;
    tracing::info!(
        uptime_s = report.uptime_ns as f64 / 1e9,
        frames_in = report.frames_in,
        frames_out = report.frames_out,
        busy_ns = w.iter().map(|w| w.busy_ns).sum::<u64>(),
        rx_packets = w.iter().map(|w| w.rx_packets).sum::<u64>(),
        "stopped; ports closed"
    );
    let mut status = if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    match serde_json::to_string_pretty(&report) {
        Ok(json) => {
            use std::io::Write;
            // A reader that went away is not a failure of the switch.
            let _ = writeln!(std::io::stdout().lock(), "{json}");
        }
        Err(e) => eprintln!("vswitchd: run: {e}"),
    }
    if let Some(path) = stats_json {
        if let Err(e) = write_stats(path, &report) {
            eprintln!("vswitchd: run: {e:#}");
            status = ExitCode::FAILURE;
        }
    }
    status
}

/// Where the state snapshot and the XDP record are, and how often the snapshot is written.
struct StateOptions {
    path: PathBuf,
    xdp: PathBuf,
    interval: Option<Duration>,
}

/// With `--state-dir DIR`: `DIR/vswitchd.state` and `DIR/xdp-programs.json`; without: next to the control
/// socket, named after it (`/run/vswitch/vswitchd.state` for the default socket), so that vswitchds on
/// different sockets never share state.
fn state_options(socket: &Path, dir: Option<PathBuf>, interval: f64) -> Result<StateOptions, String> {
    let interval = match interval {
        0.0 => None,
        s if s.is_finite() && s > 0.0 && s < 1e6 => Some(Duration::from_secs_f64(s)),
        s => return Err(format!("run: --state-interval {s}: expected a number of seconds >= 0")),
    };
    let (path, xdp) = match dir {
        Some(dir) => (snapshot::path_in(&dir), XdpPrograms::path_in(&dir)),
        None => {
            let dir = socket.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let stem = socket.file_stem().map_or_else(|| "vswitchd".into(), |s| s.to_string_lossy().into_owned());
            (dir.join(format!("{stem}.state")), dir.join(format!("{stem}.xdp-programs.json")))
        }
    };
    Ok(StateOptions { path, xdp, interval })
}

/// Writes the state snapshot (atomically); a failure is logged, never fatal.
fn save_state(path: &Path, snap: &dataplane::snapshot::Snapshot) {
    let t = Instant::now();
    match snapshot::write(path, snap) {
        Ok(bytes) => tracing::debug!(
            path = %path.display(),
            bytes,
            connections = snap.connections.len(),
            us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX),
            "state snapshot written"
        ),
        Err(e) => tracing::warn!(error = %e, path = %path.display(), "cannot write the state snapshot"),
    }
}

/// The metrics page: the live counters and the running configuration's limits (`None` once shut down).
fn metrics_page(daemon: &Daemon) -> Option<String> {
    let report = daemon.report()?;
    let (conntrack_limit, mac_limits, routes) = daemon.with_running(|r| {
        let c = r.config();
        (c.conntrack.limit, c.networks.iter().map(|n| (n.name.clone(), n.mac_limit)).collect(), c.routes.len())
    })?;
    Some(dataplane::metrics::render(dataplane::metrics::Snapshot { report, conntrack_limit, mac_limits, routes }))
}

/// Writes the counters JSON to `path` through a temporary file and a rename, so readers see whole files only.
fn write_stats(path: &Path, report: &LiveReport) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)? + "\n";
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Bad configuration or inputs: say why and exit with status 2.
fn usage_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("vswitchd: {e}");
    ExitCode::from(2)
}

fn print_report(report: &ReplayReport, show: usize, stats_json: Option<&Path>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut w = std::io::stdout().lock();
    writeln!(w, "replayed {} frames, emitted {}", report.frames_in, report.frames_out)?;
    writeln!(
        w,
        "{:<16} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
        "PORT", "RX", "TX", "FORWARDED", "FLOODED", "ROUTED", "DROPPED"
    )?;
    for (name, p) in &report.ports {
        let c = &p.pipeline;
        writeln!(
            w,
            "{:<16} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
            name, c.rx_packets, p.io.tx_packets, c.forwarded, c.flooded, c.routed, c.dropped
        )?;
    }
    if !report.switch.drops.is_empty() {
        writeln!(w, "drops by reason:")?;
        for (reason, n) in &report.switch.drops {
            writeln!(w, "  {reason:<24} {n}")?;
        }
    }
    if show > 0 {
        for (name, path) in &report.outputs {
            let frames = read_capture(path).with_context(|| format!("reading back {}", path.display()))?.frames;
            if frames.is_empty() {
                continue;
            }
            writeln!(w, "{name} sent {} frame(s) -> {}", frames.len(), path.display())?;
            for f in frames.iter().take(show) {
                writeln!(
                    w,
                    "  {:>6}.{:06}  {}",
                    f.ts / 1_000_000_000,
                    f.ts % 1_000_000_000 / 1_000,
                    describe(&f.data)
                )?;
            }
            if frames.len() > show {
                writeln!(w, "  ... {} more", frames.len() - show)?;
            }
        }
    }
    if let Some(path) = stats_json {
        let json = serde_json::to_string_pretty(report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
