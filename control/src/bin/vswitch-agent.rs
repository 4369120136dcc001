//! `vswitch-agent`: keeps a running `vswitchd` at the configuration in a file.
//!
//! ```text
//! vswitch-agent --config FILE [--socket PATH] [--once] [--dry-run]
//! ```
//!
//! - Reads and validates the whole file; every error is printed (`FILE:LINE: OBJECT: FIELD …`) and, when that
//!   happens at start, the agent exits 2 having sent nothing.
//! - Asks vswitchd for its running configuration, prints the difference (`+ network x`, `~ port c1: network
//!   a→b`, `- publish …`) on stdout and applies the whole desired configuration as **one** `apply` request (one
//!   transaction on the server, all or nothing, guarded by the generation it read).
//! - `--once`: does that and exits: 0 when the switch runs the file's configuration (applied or already so), 1
//!   when vswitchd cannot be reached or refused the apply, 2 for an invalid file. `--dry-run` (implies `--once`):
//!   prints the difference and sends nothing.
//! - Otherwise it keeps running: the file is polled every `--poll-ms` and re-read once it has stayed unchanged
//!   for `--settle-ms` (editors' write-rename saves are read once, complete), or at once on SIGHUP. An invalid
//!   edit is reported and the running configuration stays as it is. Every `--check-ms` it asks vswitchd for its
//!   generation; when vswitchd went away it reconnects with exponential backoff (100 ms up to 5 s) and, on
//!   reconnecting (a restarted vswitchd starts empty), compares and applies again. After each apply it compares
//!   once more (100 ms later, doubling to 5 s while it keeps applying): a port whose change vswitchd could not
//!   make keeps its old settings in the running configuration, so it is applied again until it is made, without
//!   a file change. SIGINT/SIGTERM stop it (exit 0).
//!
//! - With a `[cluster]` section (watch mode only), the agent also joins the cluster in etcd (`control::cluster`):
//!   it registers the host (VTEP = `vtep_port`'s address, VXLAN port, underlay MTU, overlay networks) and every
//!   port's `endpoint_mac`/`endpoint_ip` under its lease, runs the configuration with each overlay network's VNI
//!   as etcd allocated it, and pushes the other hosts and their endpoints to vswitchd with one `overlay_update`
//!   per change of the cluster (and again after vswitchd restarts). etcd unreachable: vswitchd keeps what it
//!   has. SIGINT/SIGTERM revoke the lease, so the other hosts drop this one at once.
//!
//! Logs go to stderr through `tracing` (`RUST_LOG`, default `info`); the difference goes to stdout.

use anyhow::Context as _;
use clap::Parser;
use control::agent::{load_desired, sync, SyncError, SyncOutcome};
use control::client::{ClientError, SocketSwitch, DEFAULT_SOCKET};
use control::cluster::{from_config, Membership, Settings};
use control::diff::{render, Change};
use control::watch::FileWatch;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vswitch_api::config::{Config, ConfigError};
use vswitch_api::overlay::OverlayState;
use vswitch_api::proto::{ErrorKind, HelloResult, Op, OverlayUpdateResult};

#[derive(Parser, Debug)]
#[command(name = "vswitch-agent", version, about = "Keep vswitchd at the configuration in a file")]
struct Cli {
    /// The desired configuration (TOML, the language of `vswitchd run --config`).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// vswitchd's control socket.
    #[arg(long, value_name = "PATH", env = "VSWITCH_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Apply once and exit (0 applied or already in sync, 1 vswitchd unreachable or apply refused, 2 invalid file).
    #[arg(long)]
    once: bool,
    /// Print the difference only; send nothing (implies --once).
    #[arg(long)]
    dry_run: bool,
    /// Watch mode: how often to look at the file, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    poll_ms: u64,
    /// Watch mode: how long a changed file must stay unchanged before it is read, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    settle_ms: u64,
    /// Watch mode: how often to ask vswitchd whether its configuration changed (or it restarted), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    check_ms: u64,
}

/// Exit status for an invalid configuration file.
const EXIT_INVALID: u8 = 2;
/// Reconnect backoff: first delay and ceiling.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let desired = match load_desired(&cli.config) {
        Ok(c) => c,
        Err(errors) => {
            report_invalid(&errors);
            eprintln!("vswitch-agent: {}: invalid, nothing sent", cli.config.display());
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let origin = cli.config.display().to_string();
    let mut switch = SocketSwitch::new(&cli.socket, &origin);
    if cli.once || cli.dry_run {
        return once(&mut switch, &desired, cli.dry_run);
    }
    match watch(&cli, &mut switch, desired) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitch-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints every configuration error, one per line (`FILE:LINE: OBJECT: …`).
fn report_invalid(errors: &[ConfigError]) {
    for e in errors {
        eprintln!("{e}");
    }
}

/// Prints the plan on stdout (flushed: the tests and operators read it as it comes).
fn print_changes(changes: &[Change]) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the agent; the log has the same information.
    let _ = out.write_all(render(changes).as_bytes()).and_then(|()| out.flush());
}

fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// `--once` / `--dry-run`.
fn once(switch: &mut SocketSwitch, desired: &Config, dry_run: bool) -> ExitCode {
    match sync(switch, desired, dry_run) {
        Ok(SyncOutcome::InSync { generation }) => {
            print_line(&format!("in sync (generation {generation}): nothing to do"));
            ExitCode::SUCCESS
        }
        Ok(SyncOutcome::WouldApply { changes }) => {
            print_changes(&changes);
            print_line(&format!("dry run: {} change(s), nothing sent", changes.len()));
            ExitCode::SUCCESS
        }
        Ok(SyncOutcome::Applied { changes, generation }) => {
            print_changes(&changes);
            print_line(&format!("applied {} change(s): generation {generation}", changes.len()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let SyncError::Apply { changes, .. } = &e {
                print_changes(changes);
            }
            eprintln!("vswitch-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The watch loop's view of the switch.
#[derive(Debug)]
struct Link {
    /// The generation seen after the last sync (applied or found in sync, or refused); `None` until one
    /// succeeded on the current connection.
    generation: Option<u64>,
    /// The desired configuration must be compared with the running one (file changed, reconnected, or the
    /// switch's generation moved).
    must_sync: bool,
    /// When the next attempt to reach the switch may be made, and the delay after a failure.
    next_attempt: Instant,
    backoff: Duration,
    /// The delay before comparing again after an apply (a port whose change failed keeps its old settings in
    /// the running configuration, so the comparison finds it and applies again), doubled each time until the
    /// switch is found in sync; and when that comparison is due.
    verify: Duration,
    verify_at: Option<Instant>,
    /// Whether the switch was unreachable at the last attempt (to log an outage once, not every retry).
    down: bool,
    /// The switch's process id at the last check: a new one is a restarted switch.
    pid: Option<u32>,
    /// The overlay state vswitchd was last given (`None`: it must be given the current one: never sent, or
    /// vswitchd restarted or was unreachable).
    overlay_sent: Option<OverlayState>,
}

/// The agent in a cluster: the etcd session and what it last published.
struct Cluster {
    membership: Membership,
    settings: Settings,
    /// The VNIs etcd holds for our overlay networks, once the session allocated them.
    vnis: Option<std::collections::BTreeMap<String, u32>>,
    /// The other hosts and their endpoints, as vswitchd must know them.
    overlay: OverlayState,
}

impl Cluster {
    /// Joins the cluster of `cfg`'s `[cluster]` section, if it has one.
    fn start(cfg: &Config) -> anyhow::Result<Option<Cluster>> {
        let (Some(settings), Some(registration)) = (from_config::settings(cfg), from_config::registration(cfg)) else {
            return Ok(None);
        };
        tracing::info!(cluster = %settings.cluster, host = %settings.host, etcd = ?settings.endpoints,
            lease_ttl_secs = settings.lease_ttl_secs, "joining the cluster");
        let membership = Membership::start(settings.clone(), registration).context("starting the etcd session")?;
        Ok(Some(Cluster { membership, settings, vnis: None, overlay: OverlayState::default() }))
    }

    /// The configuration vswitchd must run.
    fn effective(&self, desired: &Config) -> Config {
        from_config::effective(desired, self.vnis.as_ref())
    }

    /// Takes the session's latest snapshot: returns true when the VNIs changed (the configuration to run did).
    fn poll(&mut self) -> bool {
        let Some(snap) = self.membership.changed(false) else { return false };
        for e in &snap.vni_errors {
            tracing::error!(error = %e, "overlay network without a VNI: bridged on this host only");
        }
        let state = snap.view.overlay_state(&self.settings.host);
        if state.members != self.overlay.members || state.endpoints != self.overlay.endpoints {
            tracing::info!(
                revision = state.revision,
                members = state.members.len(),
                endpoints = state.endpoints.len(),
                connected = snap.connected,
                "cluster changed"
            );
        }
        self.overlay = state;
        let vnis = snap.registered.then_some(snap.vnis);
        if vnis.is_some() && vnis != self.vnis {
            tracing::info!(vnis = ?vnis, "overlay VNIs");
            self.vnis = vnis;
            return true;
        }
        false
    }
}

/// Watch mode: runs until SIGINT/SIGTERM.
fn watch(cli: &Cli, switch: &mut SocketSwitch, mut desired: Config) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing the SIGINT/SIGTERM handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .context("installing the SIGHUP handler")?;

    let poll = Duration::from_millis(cli.poll_ms);
    let check = Duration::from_millis(cli.check_ms);
    let mut file = FileWatch::new(&cli.config, Duration::from_millis(cli.settle_ms));
    let now = Instant::now();
    let mut link = Link {
        generation: None,
        must_sync: true,
        next_attempt: now,
        backoff: BACKOFF_MIN,
        verify: BACKOFF_MIN,
        verify_at: None,
        down: false,
        pid: None,
        overlay_sent: None,
    };
    let mut cluster = Cluster::start(&desired)?;
    let mut next_check = now;
    tracing::info!(config = %cli.config.display(), socket = %cli.socket.display(), "watching");

    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let signalled = hup.swap(false, Ordering::Relaxed);
        if signalled {
            tracing::info!("SIGHUP: re-reading the configuration");
        }
        if file.poll(now) || signalled {
            let before = desired.clone();
            reload(file.path(), &mut desired, &mut link);
            if desired != before {
                cluster = rejoin(cluster, &before, &desired)?;
            }
        }
        if cluster.as_mut().is_some_and(Cluster::poll) {
            link.must_sync = true;
        }
        if now >= next_check {
            next_check = now + check;
            if !link.must_sync {
                check_generation(switch, &mut link);
            }
        }
        if link.verify_at.is_some_and(|at| now >= at) {
            link.verify_at = None;
            link.must_sync = true;
        }
        if link.must_sync && now >= link.next_attempt {
            let effective = cluster.as_ref().map_or_else(|| desired.clone(), |c| c.effective(&desired));
            sync_once(switch, &effective, &mut link);
        }
        if let Some(c) = &cluster {
            if !link.must_sync && link.generation.is_some() && link.overlay_sent.as_ref() != Some(&c.overlay) {
                push_overlay(switch, &c.overlay, &mut link);
            }
        }
        // In a cluster, membership changes are pushed within a few milliseconds of the watch event.
        std::thread::sleep(if cluster.is_some() { poll.min(Duration::from_millis(20)) } else { poll });
    }
    tracing::info!("stopping");
    if let Some(c) = cluster {
        c.membership.stop(Duration::from_secs(2));
    }
    Ok(())
}

/// After a configuration change: the same session with the new registration, or a new session when the
/// `[cluster]` section itself changed (another cluster, host or etcd), or none without one.
fn rejoin(cluster: Option<Cluster>, before: &Config, desired: &Config) -> anyhow::Result<Option<Cluster>> {
    match cluster {
        Some(c) if before.cluster == desired.cluster => {
            if let Some(r) = from_config::registration(desired) {
                c.membership.register(r);
            }
            Ok(Some(c))
        }
        other => {
            if let Some(c) = other {
                tracing::info!("[cluster] changed: leaving the cluster (lease revoked)");
                c.membership.stop(Duration::from_secs(2));
            }
            Cluster::start(desired)
        }
    }
}

/// Gives vswitchd the cluster's members and endpoints (one `overlay_update`).
fn push_overlay(switch: &mut SocketSwitch, state: &OverlayState, link: &mut Link) {
    match switch.call::<OverlayUpdateResult>(Op::OverlayUpdate { state: state.clone() }) {
        Ok(r) => {
            tracing::info!(
                revision = state.revision,
                members = r.summary.members,
                endpoints = r.summary.endpoints,
                ignored = r.summary.ignored,
                held_us = r.held_us,
                "overlay updated"
            );
            link.overlay_sent = Some(state.clone());
        }
        Err(e) if e.is_unreachable() => unreachable_switch(link, &e),
        Err(e) => {
            // Refused (the state names something vswitchd will not take): report it once per state.
            tracing::error!(error = %e, "overlay update refused");
            link.overlay_sent = Some(state.clone());
        }
    }
}

/// Reads the file again; a valid and different configuration becomes the desired one.
fn reload(path: &Path, desired: &mut Config, link: &mut Link) {
    match load_desired(path) {
        Ok(c) if c == *desired => tracing::info!(config = %path.display(), "configuration unchanged"),
        Ok(c) => {
            tracing::info!(config = %path.display(), "configuration changed");
            *desired = c;
            link.must_sync = true;
            link.next_attempt = Instant::now();
        }
        Err(errors) => {
            report_invalid(&errors);
            tracing::error!(
                config = %path.display(),
                errors = errors.len(),
                "invalid configuration: not applied, the running configuration stays as it is"
            );
        }
    }
}

/// Asks for the switch's generation: a different one (another writer, or a restarted switch) or a lost
/// connection means comparing again.
fn check_generation(switch: &mut SocketSwitch, link: &mut Link) {
    match switch.call::<HelloResult>(Op::Hello) {
        Ok(hello) => {
            // A new process (restarted between two checks) or a generation other than the one last seen.
            let restarted = link.pid.is_some_and(|pid| pid != hello.pid);
            if restarted {
                link.overlay_sent = None;
            }
            if restarted || link.generation != Some(hello.generation) {
                tracing::info!(generation = hello.generation, pid = hello.pid, "vswitchd changed: comparing");
                link.must_sync = true;
            }
            link.pid = Some(hello.pid);
        }
        Err(e) => unreachable_switch(link, &e),
    }
}

fn unreachable_switch(link: &mut Link, e: &ClientError) {
    if !link.down {
        tracing::warn!(error = %e, "vswitchd unreachable: retrying with backoff");
    } else {
        tracing::debug!(error = %e, delay_ms = link.backoff.as_millis() as u64, "still unreachable");
    }
    link.down = true;
    link.must_sync = true;
    link.generation = None;
    link.overlay_sent = None;
    // Whoever answers next is compared anyway; its PID is learnt at the next check.
    link.pid = None;
    link.next_attempt = Instant::now() + link.backoff;
    link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
}

/// One comparison (and apply when different).
fn sync_once(switch: &mut SocketSwitch, desired: &Config, link: &mut Link) {
    tracing::debug!("comparing with the running configuration");
    match sync(switch, desired, false) {
        Ok(outcome) => {
            if link.down {
                tracing::info!("vswitchd reachable again");
            }
            link.down = false;
            link.backoff = BACKOFF_MIN;
            link.must_sync = false;
            match outcome {
                SyncOutcome::InSync { generation } => {
                    tracing::info!(generation, "in sync");
                    link.generation = Some(generation);
                    link.verify = BACKOFF_MIN;
                    link.verify_at = None;
                }
                SyncOutcome::Applied { changes, generation } => {
                    print_changes(&changes);
                    tracing::info!(generation, changes = changes.len(), "applied");
                    link.generation = Some(generation);
                    // Compare once more: a port whose change failed (vswitchd kept its old port and settings)
                    // is applied again, with backoff, without waiting for a file change.
                    link.verify_at = Some(Instant::now() + link.verify);
                    link.verify = (link.verify * 2).min(BACKOFF_MAX);
                }
                SyncOutcome::WouldApply { .. } => {}
            }
        }
        Err(SyncError::Running(e)) | Err(SyncError::Apply { error: e, .. }) if e.is_unreachable() => {
            unreachable_switch(link, &e)
        }
        Err(SyncError::Apply { error: ClientError::Server(body), .. }) if body.kind == ErrorKind::Conflict => {
            // Someone else applied between our read and our apply: read again and retry.
            tracing::warn!(error = %body.message, "conflict: the switch changed meanwhile; comparing again");
            link.next_attempt = Instant::now();
        }
        Err(e) => {
            // Refused (a port that cannot be opened, …): report it and keep the running configuration. Retry only
            // when the file or the switch changes, not in a loop.
            if let SyncError::Apply { changes, generation, .. } = &e {
                print_changes(changes);
                link.generation = Some(*generation);
            }
            tracing::error!(error = %e, "not applied");
            link.must_sync = false;
        }
    }
}
