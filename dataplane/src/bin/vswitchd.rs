//! `vswitchd`: the vswitch dataplane daemon. For now it has one mode, `replay`, which runs the forwarding
//! pipeline over capture files on a virtual clock (see `dataplane::replay`).

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dataplane::config::Config;
use dataplane::port::pcap::read_capture;
use dataplane::replay::{replay, ReplayInput, ReplayReport};
use dataplane::wire::decode::describe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "vswitchd", version, about = "vswitch dataplane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Replay { config, inputs, out_dir, stats_json, show } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return usage_error(&e),
            };
            let report = match replay(&cfg, &inputs, &out_dir) {
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
    if !report.drops.is_empty() {
        writeln!(w, "drops by reason:")?;
        for (reason, n) in &report.drops {
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
