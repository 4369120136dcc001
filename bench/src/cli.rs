//! The command lines of `vswitch-bench pipeline` and `vswitch-bench sweep` (the binary dispatches; `live`'s
//! own options stay in the binary). Validation errors name the option.

use crate::pipeline::scenario::{FrameSize, Scenario};
use crate::pipeline::{self, Options};
use crate::sweep::{self, Over, SweepMode};
use std::path::PathBuf;
use std::time::Duration;

/// A percentage: `50%` or `50`.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim_end_matches('%').parse().map_err(|_| format!("{s:?}: expected a percentage like 50%"))?;
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?}: expected 0..=100 %"))
    }
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: expected 0.1..=3600 seconds")),
    }
}

/// `vswitch-bench pipeline`.
#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// l2, l3, nat-established, nat-new or mixed.
    #[arg(long, default_value = "l2")]
    pub scenario: Scenario,
    /// Worker threads, as `vswitchd run --workers` (each polls its own queue of every port).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Flows: source MACs (l2), destinations (l3), connections (nat-*), new connections per window (nat-new).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=4_000_000))]
    pub flows: u32,
    /// Frame size in bytes with FCS (64..=1518), or imix (64/594/1518, 7:4:1).
    #[arg(long, default_value = "64")]
    pub frame_size: FrameSize,
    /// Extra routes in the FIB (l3).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=2_000_000))]
    pub routes: u32,
    /// Seconds per phase (maximum rate, then latency).
    #[arg(long, default_value = "3", value_parser = parse_secs)]
    pub duration: f64,
    /// The latency phase's offered load, percent of the measured maximum (0 skips it).
    #[arg(long, default_value = "50%", value_parser = parse_percent)]
    pub load: f64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// After the maximum-rate phase, apply a configuration change while the generators run flat out and report
    /// the longest gap between batches across it: `hot` (another MAC limit: taken at a batch boundary) or
    /// `pause` (one more port: the workers are stopped and restarted).
    #[arg(long)]
    pub apply: Option<pipeline::ApplyKind>,
}

impl PipelineArgs {
    /// The benchmark's options.
    pub fn options(&self) -> Options {
        let mut o = Options::new(self.scenario);
        o.workers = usize::from(self.workers);
        o.flows = self.flows as usize;
        o.frame_size = self.frame_size;
        o.routes = self.routes as usize;
        o.duration = Duration::from_secs_f64(self.duration);
        o.load_percent = self.load;
        o.progress = !self.quiet;
        o.apply = self.apply;
        o
    }
}

/// Runs `vswitch-bench pipeline`.
pub fn pipeline(args: &PipelineArgs) -> anyhow::Result<()> {
    let report = pipeline::run(&args.options())?;
    println!("{}", pipeline::summary(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .map_err(|e| anyhow::anyhow!("--json {}: {e}", path.display()))?;
    }
    Ok(())
}

/// `vswitch-bench sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// What varies: frame-size, flows, connections (nat-established flows), routes (l3), workers, or load
    /// (latency against offered load).
    #[arg(long)]
    pub over: Over,
    /// The values (default: a range suited to --over).
    #[arg(long, value_delimiter = ',')]
    pub values: Vec<String>,
    /// --over table-size: the scenarios to measure at every size, interleaved (default: --scenario).
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<Scenario>,
    /// --over table-size: rounds over every (size, scenario) point; ratios are taken within a round.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub rounds: u16,
    /// pipeline (memory ports) or live (veth topology, root; frame-size only).
    #[arg(long, default_value = "pipeline")]
    pub mode: SweepMode,
    /// The pipeline options used for every point (--over replaces one of them).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// live: forwarders to put side by side (default: vswitchd-afxdp-native, linux-bridge, ovs-afxdp).
    #[arg(long, value_delimiter = ',')]
    pub forwarders: Vec<String>,
    /// live: the vswitchd executable.
    #[arg(long)]
    pub vswitchd: Option<PathBuf>,
    /// live: the sender's core.
    #[arg(long, default_value_t = 0)]
    pub sender_cpu: usize,
    /// live: the forwarder's core.
    #[arg(long, default_value_t = 1)]
    pub switch_cpu: usize,
    /// The CSV file to write.
    #[arg(long)]
    pub csv: PathBuf,
    /// The SVG plot to write.
    #[arg(long)]
    pub svg: PathBuf,
}

/// Runs `vswitch-bench sweep`.
pub fn sweep(args: &SweepArgs) -> anyhow::Result<()> {
    sweep::run(args)
}
