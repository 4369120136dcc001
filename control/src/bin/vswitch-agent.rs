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
//! Logs go to stderr through `tracing` (`RUST_LOG`, default `info`); the difference goes to stdout.

use anyhow::Context as _;
use clap::Parser;
use control::agent::{load_desired, sync, SyncError, SyncOutcome};
use control::client::{ClientError, SocketSwitch, DEFAULT_SOCKET};
use control::diff::{render, Change};
use control::watch::FileWatch;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vswitch_api::config::{Config, ConfigError};
use vswitch_api::proto::{ErrorKind, HelloResult, Op};

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
    /// switch is found in sync.
    verify: Duration,
    /// Whether the switch was unreachable at the last attempt (to log an outage once, not every retry).
    down: bool,
    /// The switch's process id at the last check: a new one is a restarted switch.
    pid: Option<u32>,
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
        down: false,
        pid: None,
    };
    let mut next_check = now;
    tracing::info!(config = %cli.config.display(), socket = %cli.socket.display(), "watching");

    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let signalled = hup.swap(false, Ordering::Relaxed);
        if signalled {
            tracing::info!("SIGHUP: re-reading the configuration");
        }
        if file.poll(now) || signalled {
            reload(file.path(), &mut desired, &mut link);
        }
        if now >= next_check {
            next_check = now + check;
            if !link.must_sync {
                check_generation(switch, &mut link);
            }
        }
        if link.must_sync && now >= link.next_attempt {
            sync_once(switch, &desired, &mut link);
        }
        std::thread::sleep(poll);
    }
    tracing::info!("stopping");
    Ok(())
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
                }
                SyncOutcome::Applied { changes, generation } => {
                    print_changes(&changes);
                    tracing::info!(generation, changes = changes.len(), "applied");
                    link.generation = Some(generation);
                    // Compare once more: a port whose change failed (vswitchd kept its old port and settings)
                    // is applied again, with backoff, without waiting for a file change.
                    link.must_sync = true;
                    link.next_attempt = Instant::now() + link.verify;
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
