//! `vswitch-bench sweep`: one measurement over a range of one parameter, written as CSV (one row per point and
//! series) and an SVG plot ([`crate::plot`]).
//!
//! - `--mode pipeline` (default): [`crate::pipeline::run`] per point; `--over` replaces one option: `frame-size`,
//!   `flows`, `connections` (the `nat-established` scenario's connections), `routes` (`l3`), `workers`, or
//!   `load` (the latency phase's offered load; the curve is latency against load).
//! - `--mode live` (root; `--over frame-size` only): per frame size and forwarder, the delivered packets/s and
//!   Gbit/s with the sender flat out ([`crate::live::rates::sweep_frame_sizes`]), forwarders side by side.
//!
//! Points run one after the other on the caller's thread; a point that fails is reported and left out.

use crate::cli::SweepArgs;
use crate::pipeline::scenario::{FrameSize, Scenario};
use crate::plot::{self, Panel, Series};
use std::fmt::Write as _;
use std::time::Duration;

/// What varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Over {
    /// Frame size, bytes with FCS (or imix).
    FrameSize,
    /// Flows of the chosen scenario.
    Flows,
    /// Established NAT connections (scenario nat-established).
    Connections,
    /// Extra routes (scenario l3).
    Routes,
    /// Worker threads.
    Workers,
    /// The latency phase's offered load, percent of the maximum.
    Load,
}

/// Where the points are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SweepMode {
    /// Memory ports, `vswitch-bench pipeline`.
    Pipeline,
    /// The live veth topology, forwarders side by side.
    Live,
}

impl Over {
    /// The default values.
    pub fn defaults(self, mode: SweepMode) -> Vec<String> {
        let v: &[&str] = match (self, mode) {
            (Over::FrameSize, SweepMode::Live) => &["64", "128", "256", "512", "1024", "1280", "1518"],
            (Over::FrameSize, _) => &["64", "128", "256", "512", "1024", "1518", "imix"],
            (Over::Flows, _) => &["1", "100", "10000", "1000000"],
            (Over::Connections, _) => &["1", "10", "100", "1000", "10000", "100000", "1000000"],
            (Over::Routes, _) => &["0", "10", "1000", "100000", "1000000"],
            (Over::Workers, _) => &["1", "2"],
            (Over::Load, _) => &["10", "25", "50", "75", "90", "95", "99"],
        };
        v.iter().map(|s| s.to_string()).collect()
    }

    fn label(self) -> &'static str {
        match self {
            Over::FrameSize => "frame size (bytes with FCS)",
            Over::Flows => "flows",
            Over::Connections => "established connections",
            Over::Routes => "routes",
            Over::Workers => "workers",
            Over::Load => "offered load (% of the maximum rate)",
        }
    }

    fn log_x(self) -> bool {
        matches!(self, Over::Flows | Over::Connections | Over::Routes)
    }
}

/// A point's x value: numbers as themselves, imix as its mean frame size.
fn x_of(over: Over, v: &str) -> anyhow::Result<f64> {
    if over == Over::FrameSize {
        let fs: FrameSize = v.parse().map_err(anyhow::Error::msg)?;
        return Ok(fs.mean());
    }
    let x: f64 = v.parse().map_err(|_| anyhow::anyhow!("--values: {v:?} is not a number"))?;
    // The log axis cannot show 0 routes: plot it at 1.
    Ok(if over.log_x() { x.max(1.0) } else { x })
}

/// Runs the sweep, writes the CSV and the SVG.
pub fn run(args: &SweepArgs) -> anyhow::Result<()> {
    let values = if args.values.is_empty() { args.over.defaults(args.mode) } else { args.values.clone() };
    for v in &values {
        x_of(args.over, v)?;
    }
    match args.mode {
        SweepMode::Pipeline => pipeline(args, &values),
        SweepMode::Live => {
            anyhow::ensure!(args.over == Over::FrameSize, "--mode live sweeps --over frame-size only");
            crate::live::rates::sweep_frame_sizes(args, &values)
        }
    }
}

fn pipeline(args: &SweepArgs, values: &[String]) -> anyhow::Result<()> {
    let mut csv = String::from(
        "over,value,scenario,workers,flows,frame_size,routes,mpps,gbps,ns_per_packet,load_percent,\
         latency_p50_ns,latency_p90_ns,latency_p99_ns,latency_p999_ns,latency_max_ns,per_worker_mpps,\
         cpu_ns_per_packet,latency_offered_mpps,latency_delivered_mpps,latency_ring_dropped\n",
    );
    let (mut mpps, mut gbps, mut p50, mut p99, mut p999, mut nsp) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut cpu, mut offered, mut delivered) = (vec![], vec![], vec![]);
    let mut per_worker: Vec<Vec<(f64, f64)>> = vec![];
    for v in values {
        let mut o = args.pipeline.options();
        match args.over {
            Over::FrameSize => o.frame_size = v.parse().map_err(anyhow::Error::msg)?,
            Over::Flows => o.flows = v.parse()?,
            Over::Connections => {
                o.scenario = Scenario::NatEstablished;
                o.flows = v.parse()?;
            }
            Over::Routes => {
                o.scenario = Scenario::L3;
                o.routes = v.parse()?;
            }
            Over::Workers => o.workers = v.parse()?,
            Over::Load => o.load_percent = v.parse()?,
        }
        let x = x_of(args.over, v)?;
        eprintln!("sweep: {} = {v}", args.over.label());
        let r = match crate::pipeline::run(&o) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sweep: {v}: {e:#}");
                continue;
            }
        };
        let l = &r.latency_ns;
        let _ = writeln!(
            csv,
            "{:?},{v},{},{},{},{},{},{:.4},{:.4},{:.2},{},{},{},{},{},{},{},{:.2},{:.4},{:.4},{}",
            args.over,
            r.scenario.name(),
            r.workers,
            r.flows,
            r.frame_size,
            r.routes,
            r.mpps,
            r.gbps,
            r.ns_per_packet,
            o.load_percent,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            r.per_worker_mpps.iter().map(|m| format!("{m:.4}")).collect::<Vec<_>>().join(";"),
            r.cpu_ns_per_packet,
            r.latency_load.as_ref().map_or(0.0, |l| l.offered_mpps),
            r.latency_load.as_ref().map_or(0.0, |l| l.delivered_mpps),
            r.latency_load.as_ref().map_or(0, |l| l.ring_dropped),
        );
        mpps.push((x, r.mpps));
        gbps.push((x, r.gbps));
        nsp.push((x, r.ns_per_packet));
        cpu.push((x, r.cpu_ns_per_packet));
        if let Some(l) = &r.latency_load {
            offered.push((x, l.offered_mpps));
            delivered.push((x, l.delivered_mpps));
        }
        p50.push((x, l.p50 as f64 / 1e3));
        p99.push((x, l.p99 as f64 / 1e3));
        p999.push((x, l.p999 as f64 / 1e3));
        for (w, m) in r.per_worker_mpps.iter().enumerate() {
            if per_worker.len() <= w {
                per_worker.push(vec![]);
            }
            per_worker[w].push((x, *m));
        }
    }
    std::fs::write(&args.csv, &csv).map_err(|e| anyhow::anyhow!("--csv {}: {e}", args.csv.display()))?;
    anyhow::ensure!(!mpps.is_empty(), "no point could be measured");
    let o = args.pipeline.options();
    let what = match args.over {
        Over::Connections => "nat-established".to_string(),
        Over::Routes => "l3".to_string(),
        _ => o.scenario.name().to_string(),
    };
    let s = |name: &str, points: &Vec<(f64, f64)>| Series { name: name.into(), points: points.clone() };
    let latency = Panel {
        title: format!("{what}: latency through the pipeline at {}% load", o.load_percent),
        y_label: "µs".into(),
        series: vec![s("p50", &p50), s("p99", &p99), s("p99.9", &p999)],
        log_y: true,
    };
    let panels = match args.over {
        Over::Load => vec![
            Panel {
                title: format!("{what}: latency of delivered frames against offered load ({} worker(s))", o.workers),
                y_label: "µs".into(),
                series: vec![s("p50", &p50), s("p99", &p99), s("p99.9", &p999)],
                log_y: true,
            },
            Panel {
                title: format!("{what}: offered and delivered during the latency phase"),
                y_label: "Mpps".into(),
                series: vec![s("offered", &offered), s("delivered", &delivered)],
                log_y: false,
            },
        ],
        Over::FrameSize => vec![
            Panel {
                title: format!("{what}: maximum rate"),
                y_label: "Mpps".into(),
                series: vec![s("Mpps", &mpps)],
                log_y: false,
            },
            Panel {
                title: format!("{what}: throughput"),
                y_label: "Gbit/s".into(),
                series: vec![s("Gbit/s", &gbps)],
                log_y: false,
            },
        ],
        Over::Workers => {
            let mut series = vec![s("all workers", &mpps)];
            series.extend(per_worker.iter().enumerate().map(|(w, p)| s(&format!("worker {w}"), p)));
            vec![
                Panel {
                    title: format!("{what}: maximum rate by workers"),
                    y_label: "Mpps".into(),
                    series,
                    log_y: false,
                },
                latency,
            ]
        }
        _ => vec![
            Panel {
                title: format!("{what}: maximum rate"),
                y_label: "Mpps".into(),
                series: vec![s("Mpps", &mpps)],
                log_y: false,
            },
            Panel {
                title: format!("{what}: workers' time per frame at the maximum rate"),
                y_label: "ns".into(),
                series: vec![s("busy (wall) ns/frame", &nsp), s("thread CPU ns/frame", &cpu)],
                log_y: false,
            },
            latency,
        ],
    };
    plot::draw(&args.svg, args.over.label(), args.over.log_x(), &panels)?;
    eprintln!("sweep: wrote {} and {}", args.csv.display(), args.svg.display());
    Ok(())
}

/// How long a live point's measurement lasts by default.
pub const LIVE_POINT: Duration = Duration::from_secs(2);
