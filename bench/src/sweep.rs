//! `vswitch-bench sweep`: one measurement over a range of one parameter, written as CSV (one row per point and
//! series) and an SVG plot ([`crate::plot`]).
//!
//! - `--mode pipeline` (default): [`crate::pipeline::run`] per point; `--over` replaces one option: `frame-size`,
//!   `flows`, `connections` (the `nat-established` scenario's connections), `routes` (`l3`), `workers`, or
//!   `load` (the latency phase's offered load; the curve is latency against load).
//! - `--over table-size` (pipeline only): how the rate falls as the tables grow, for one or more scenarios
//!   (`--scenarios l2,l3,nat-established`) measured in `--rounds` rounds; within a round every (size, scenario)
//!   point runs once, sizes in order and scenarios interleaved, so each point's ratio to the smallest size of
//!   its scenario in the same round compares minutes-apart runs on a shared machine as fairly as it can. A size
//!   `N` is `N` source MACs (`l2`), `N` routes with `N` destinations spread over them (`l3`: every lookup may go
//!   anywhere in the FIB), or `N` connections (`nat-*`). Prints a table of each point's range over the rounds.
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
    /// Table size: source MACs (l2), routes with as many destinations (l3), connections (nat-*); with
    /// `--scenarios` and `--rounds`.
    TableSize,
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
            (Over::TableSize, _) => &["1000", "10000", "100000", "1000000"],
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
            Over::TableSize => "table size (source MACs, routes, connections)",
        }
    }

    fn log_x(self) -> bool {
        matches!(self, Over::Flows | Over::Connections | Over::Routes | Over::TableSize)
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
    anyhow::ensure!(
        args.over == Over::TableSize || (args.scenarios.is_empty() && args.rounds == 1),
        "--scenarios and --rounds go with --over table-size"
    );
    match args.mode {
        SweepMode::Pipeline if args.over == Over::TableSize => table_size(args, &values),
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
            Over::TableSize => unreachable!("table_size() runs --over table-size"),
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

/// The options of one `--over table-size` point: `size` entries in the table `scenario` scales with.
pub fn table_size_options(
    base: &crate::pipeline::Options,
    scenario: Scenario,
    size: usize,
) -> crate::pipeline::Options {
    let mut o = base.clone();
    o.scenario = scenario;
    o.flows = size;
    if scenario == Scenario::L3 {
        o.routes = size;
    }
    o
}

/// One measured point of `--over table-size`.
#[derive(Debug, Clone)]
struct ScalePoint {
    round: usize,
    scenario: Scenario,
    size: usize,
    mpps: f64,
    ns_per_packet: f64,
    cpu_ns_per_packet: f64,
}

/// The median of `v` (not empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `--over table-size`: rounds × sizes × scenarios, interleaved; CSV, SVG and a table on stdout.
fn table_size(args: &SweepArgs, values: &[String]) -> anyhow::Result<()> {
    let scenarios = if args.scenarios.is_empty() { vec![args.pipeline.scenario] } else { args.scenarios.clone() };
    let sizes: Vec<usize> = values
        .iter()
        .map(|v| v.parse::<usize>().map_err(|_| anyhow::anyhow!("--values: {v:?} is not a table size")))
        .collect::<anyhow::Result<_>>()?;
    let base = args.pipeline.options();
    for &s in &scenarios {
        for &n in &sizes {
            table_size_options(&base, s, n).check().map_err(anyhow::Error::msg)?;
        }
    }
    let mut points: Vec<ScalePoint> = Vec::new();
    for round in 0..usize::from(args.rounds) {
        for &size in &sizes {
            for &scenario in &scenarios {
                let o = table_size_options(&base, scenario, size);
                eprintln!("sweep: round {}/{}, {} at {size}", round + 1, args.rounds, scenario.name());
                match crate::pipeline::run(&o) {
                    Ok(r) => points.push(ScalePoint {
                        round,
                        scenario,
                        size,
                        mpps: r.mpps,
                        ns_per_packet: r.ns_per_packet,
                        cpu_ns_per_packet: r.cpu_ns_per_packet,
                    }),
                    Err(e) => eprintln!("sweep: {} at {size}: {e:#}", scenario.name()),
                }
            }
        }
    }
    anyhow::ensure!(!points.is_empty(), "no point could be measured");
    // A point's ratio to the smallest size of its scenario in its own round.
    let ratio = |p: &ScalePoint| {
        points
            .iter()
            .find(|q| q.round == p.round && q.scenario == p.scenario && q.size == sizes[0])
            .map(|q| p.mpps / q.mpps)
    };
    let mut csv = String::from(
        "over,value,scenario,round,workers,flows,routes,frame_size,mpps,ns_per_packet,cpu_ns_per_packet,ratio_to_smallest\n",
    );
    for p in &points {
        let o = table_size_options(&base, p.scenario, p.size);
        let _ = writeln!(
            csv,
            "TableSize,{},{},{},{},{},{},{},{:.4},{:.2},{:.2},{}",
            p.size,
            p.scenario.name(),
            p.round + 1,
            o.workers,
            o.flows,
            if p.scenario == Scenario::L3 { o.routes } else { 0 },
            o.frame_size.json(),
            p.mpps,
            p.ns_per_packet,
            p.cpu_ns_per_packet,
            ratio(p).map_or(String::new(), |r| format!("{r:.3}")),
        );
    }
    std::fs::write(&args.csv, &csv).map_err(|e| anyhow::anyhow!("--csv {}: {e}", args.csv.display()))?;
    println!("{}", scale_table(&points, &scenarios, &sizes, &ratio));
    let mut rate = Vec::new();
    let mut ratios = Vec::new();
    let mut cpu = Vec::new();
    for &s in &scenarios {
        let of = |size: usize| points.iter().filter(move |p| p.scenario == s && p.size == size);
        let line = |f: &dyn Fn(&ScalePoint) -> Option<f64>| -> Vec<(f64, f64)> {
            sizes
                .iter()
                .filter_map(|&n| {
                    let v: Vec<f64> = of(n).filter_map(f).collect();
                    (!v.is_empty()).then(|| (n as f64, median(v)))
                })
                .collect()
        };
        rate.push(Series { name: s.name().into(), points: line(&|p| Some(p.mpps)) });
        ratios.push(Series { name: s.name().into(), points: line(&|p| ratio(p)) });
        cpu.push(Series { name: s.name().into(), points: line(&|p| Some(p.cpu_ns_per_packet)) });
    }
    let workers = base.workers;
    let panels = vec![
        Panel {
            title: format!("maximum rate by table size ({workers} worker(s), median of {} round(s))", args.rounds),
            y_label: "Mpps".into(),
            series: rate,
            log_y: false,
        },
        Panel {
            title: "rate relative to the smallest table, same round (median)".into(),
            y_label: "ratio".into(),
            series: ratios,
            log_y: false,
        },
        Panel { title: "thread CPU time per frame (median)".into(), y_label: "ns".into(), series: cpu, log_y: false },
    ];
    plot::draw(&args.svg, Over::TableSize.label(), true, &panels)?;
    eprintln!("sweep: wrote {} and {}", args.csv.display(), args.svg.display());
    Ok(())
}

/// The summary of `--over table-size`: per scenario and size, Mpps and the ratio to the smallest size over the
/// rounds (median, min–max).
fn scale_table(
    points: &[ScalePoint],
    scenarios: &[Scenario],
    sizes: &[usize],
    ratio: &dyn Fn(&ScalePoint) -> Option<f64>,
) -> String {
    let mut t = String::from("| scenario | size | Mpps median (min–max) | CPU ns/frame median | ratio to smallest, same round: median (min–max) |\n|---|---|---|---|---|\n");
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (median(v.to_vec()), lo, hi)
    };
    for &s in scenarios {
        for &n in sizes {
            let of: Vec<&ScalePoint> = points.iter().filter(|p| p.scenario == s && p.size == n).collect();
            if of.is_empty() {
                continue;
            }
            let (m, lo, hi) = range(&of.iter().map(|p| p.mpps).collect::<Vec<_>>());
            let cpu = median(of.iter().map(|p| p.cpu_ns_per_packet).collect());
            let r: Vec<f64> = of.iter().filter_map(|p| ratio(p)).collect();
            let rs = if r.is_empty() {
                "-".to_string()
            } else {
                let (rm, rlo, rhi) = range(&r);
                format!("{rm:.2} ({rlo:.2}–{rhi:.2})")
            };
            let _ = writeln!(t, "| {} | {n} | {m:.2} ({lo:.2}–{hi:.2}) | {cpu:.0} | {rs} |", s.name());
        }
    }
    t
}

/// How long a live point's measurement lasts by default.
pub const LIVE_POINT: Duration = Duration::from_secs(2);
