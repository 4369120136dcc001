//! `vswitch-bench`: vswitch's benchmarks (see docs/PERFORMANCE.md and bench/README.md).
//!
//! - `vswitch-bench live` (also what `vswitch-bench` with no subcommand runs, as before subcommands existed):
//!   vswitchd against the Linux bridge, kernel MASQUERADE and Open vSwitch on the same veth/namespace topology,
//!   in one run (`bench::live`). Needs root.
//! - `vswitch-bench pipeline`: the pipeline and workers over memory ports: Mpps and latency percentiles
//!   (`bench::pipeline`).
//! - `vswitch-bench sweep`: one of those over a range of frame sizes, flows, connections, routes or workers,
//!   written as CSV and an SVG plot (`bench::sweep`).

use bench::live::{measure, traffic, BenchOptions, Forwarder, ForwarderResult, Sender};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "vswitch-bench", version, about = "vswitch benchmarks", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: `live` with these options.
    #[command(flatten)]
    live: LiveArgs,
}

#[derive(clap::Subcommand)]
enum Command {
    /// vswitchd vs the Linux bridge, kernel routing/MASQUERADE and OVS on one veth topology (root).
    Live(LiveArgs),
    /// The pipeline and its workers over memory ports: maximum rate and latency at a load.
    Pipeline(bench::cli::PipelineArgs),
    /// A curve: a pipeline or live measurement over a range of one parameter, as CSV and SVG.
    Sweep(bench::cli::SweepArgs),
}

#[derive(clap::Args)]
struct LiveArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Forwarders to measure, comma-separated (default: all; the vswitchd AF_XDP ones only when built with the
    /// `afxdp` feature, OVS only when installed): linux-bridge, linux-routing, linux-masquerade, ovs-afxdp,
    /// vswitchd-tap, vswitchd-afpacket, vswitchd-masquerade, vswitchd-afxdp-native, vswitchd-afxdp-generic,
    /// linux-vxlan, vswitchd-overlay (across two hosts: see bench::live::overlay).
    #[arg(long, value_delimiter = ',')]
    forwarders: Vec<String>,
    /// Skip the TCP measurements.
    #[arg(long)]
    no_tcp: bool,
    /// Skip the 64-byte UDP measurements (TCP only).
    #[arg(long)]
    no_udp: bool,
    /// The sender's (and TCP client's) core.
    #[arg(long, default_value_t = 0)]
    sender_cpu: usize,
    /// vswitchd's core.
    #[arg(long, default_value_t = 1)]
    switch_cpu: usize,
    /// The vswitchd executable (default: next to this executable, else from PATH).
    #[arg(long)]
    vswitchd: Option<PathBuf>,
    /// The UDP sender: trafgen or sendmmsg (default: trafgen when installed).
    #[arg(long)]
    sender: Option<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Skip the NDR/PDR search and the round-trip latencies.
    #[arg(long)]
    no_rates: bool,
    /// Seconds per NDR/PDR trial.
    #[arg(long, default_value_t = 1.0)]
    trial: f64,
    /// Round-trip requests per second (at most; one outstanding at a time).
    #[arg(long, default_value_t = 10_000.0)]
    rr_rate: f64,
    /// Seconds per round-trip measurement.
    #[arg(long, default_value_t = 2.0)]
    rr_duration: f64,
    /// The loaded round trips' background stream, percent of the forwarder's PDR.
    #[arg(long, default_value = "50%", value_parser = bench::cli::parse_percent)]
    load: f64,
    /// Measure every forwarder this many times, interleaved: round k starts with the k-th forwarder (A B C,
    /// B C A, C A B, ...); prints each round, then the median (min–max) of each ratio over the rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => live(cli.live),
        Some(Command::Live(args)) => live(args),
        Some(Command::Pipeline(args)) => bench::cli::pipeline(&args),
        Some(Command::Sweep(args)) => bench::cli::sweep(&args),
    }
}

fn live(cli: LiveArgs) -> anyhow::Result<()> {
    anyhow::ensure!(tools::lab::is_root(), "vswitch-bench needs root (it creates namespaces and veths)");
    let forwarders: Vec<Forwarder> = if cli.forwarders.is_empty() {
        Forwarder::ALL
            .into_iter()
            .filter(|f| {
                cfg!(feature = "afxdp")
                    || !matches!(f, Forwarder::VswitchdAfxdpNative | Forwarder::VswitchdAfxdpGeneric)
            })
            .filter(|f| {
                let ok = *f != Forwarder::OvsAfxdp || bench::live::ovs::available();
                if !ok {
                    eprintln!("skipping ovs-afxdp: Open vSwitch is not installed (openvswitch-switch)");
                }
                ok
            })
            .collect()
    } else {
        cli.forwarders
            .iter()
            .map(|n| Forwarder::from_name(n).ok_or_else(|| anyhow::anyhow!("unknown forwarder {n:?}")))
            .collect::<anyhow::Result<_>>()?
    };
    let sender = match cli.sender.as_deref() {
        Some("trafgen") => Sender::Trafgen,
        Some("sendmmsg") => Sender::Sendmmsg,
        Some(other) => anyhow::bail!("unknown sender {other:?} (trafgen or sendmmsg)"),
        None if traffic::have_trafgen() => Sender::Trafgen,
        None => Sender::Sendmmsg,
    };
    let opts = BenchOptions {
        duration: Duration::from_secs_f64(cli.duration.max(0.5)),
        sender_cpu: cli.sender_cpu,
        switch_cpu: cli.switch_cpu,
        vswitchd: cli.vswitchd.unwrap_or_else(tools::lab::default_vswitchd),
        udp: !cli.no_udp,
        tcp: !cli.no_tcp,
        sender,
        rates: (!cli.no_rates).then(|| bench::live::rates::RateOptions {
            trial: Duration::from_secs_f64(cli.trial.clamp(0.2, 60.0)),
            rr_rate: cli.rr_rate.clamp(1.0, 1e6),
            rr_duration: Duration::from_secs_f64(cli.rr_duration.clamp(0.2, 600.0)),
            load: cli.load / 100.0,
        }),
    };
    // Other work on the machine skews every figure (2 vCPUs): record how busy it was.
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string();
    if !cli.json {
        eprintln!("load average before the run: {loadavg}; UDP sender: {:?}", opts.sender);
    }
    let n = forwarders.len();
    let rounds = cli.rounds as usize;
    let mut per_round = Vec::new();
    for round in 0..rounds {
        // Interleaved: each round starts one forwarder later, so no forwarder always runs first or last.
        let mut results: Vec<Option<ForwarderResult>> = vec![None; n];
        for k in 0..n {
            let i = (round + k) % n;
            if !cli.json {
                let of = if rounds > 1 { format!(" (round {}/{rounds})", round + 1) } else { String::new() };
                eprintln!("measuring {}{of} ...", forwarders[i].name());
            }
            results[i] = Some(measure(forwarders[i], round * n + i, &opts));
        }
        let results: Vec<ForwarderResult> = results.into_iter().flatten().collect();
        let ratios = ratios(&results);
        let rate_ratios = bench::live::rates::ratios(&results);
        if !cli.json {
            if rounds > 1 {
                let order: Vec<&str> = (0..n).map(|k| forwarders[(round + k) % n].name()).collect();
                println!("\n== round {}/{rounds} (in this order: {})", round + 1, order.join(", "));
            }
            print_table(&results, &ratios);
            print!("{}", bench::live::rates::table(&results, &rate_ratios));
        }
        per_round.push((results, ratios, rate_ratios));
    }
    let summary = bench::live::rates::summarize(&per_round.iter().map(|r| r.2.clone()).collect::<Vec<_>>());
    if cli.json {
        type Round = (Vec<ForwarderResult>, serde_json::Value, serde_json::Value);
        let round = |r: &Round| {
            let mut m = serde_json::Map::new();
            m.insert("results".into(), serde_json::json!(r.0));
            m.insert("ratios_vs_kernel".into(), r.1.clone());
            m.insert("ratios_vs_peers".into(), r.2.clone());
            serde_json::Value::Object(m)
        };
        let mut v = serde_json::json!({
            "duration_secs": opts.duration.as_secs_f64(),
            "sender_cpu": opts.sender_cpu,
            "switch_cpu": opts.switch_cpu,
            "loadavg_before": loadavg,
            "sender": opts.sender,
            "rounds": rounds,
        });
        // The first round's keys at the top level: without --rounds the output is what it was before.
        let first = round(&per_round[0]);
        for k in ["results", "ratios_vs_kernel", "ratios_vs_peers"] {
            v[k] = first[k].clone();
        }
        if rounds > 1 {
            v["per_round"] = per_round.iter().map(round).collect();
            v["ratios_vs_peers_over_rounds"] = summary;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if rounds > 1 {
        print!("{}", bench::live::rates::summary_table(&summary, rounds));
    }
    Ok(())
}

fn opt(v: Option<f64>, scale: f64, prec: usize) -> String {
    v.map(|x| format!("{:.*}", prec, x / scale)).unwrap_or_else(|| "-".into())
}

fn print_table(results: &[ForwarderResult], ratios: &serde_json::Value) {
    println!(
        "{:<24} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>16} {:>16}",
        "forwarder", "offered", "deliv.", "loss%", "softirq", "all-CPU", "vswitchd", "TCP off Gbit/s", "TCP on Gbit/s"
    );
    println!(
        "{:<24} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>16} {:>16}",
        "", "kpps", "kpps", "", "ns/pkt", "ns/pkt", "ns/pkt", "(retransmits)", "(retransmits)"
    );
    for r in results {
        let u = r.udp.as_ref();
        let loss = u.filter(|u| u.offered_pps > 0.0).map(|u| 100.0 * (1.0 - u.delivered_pps / u.offered_pps));
        let tcp = |t: &Option<bench::live::TcpResult>| {
            t.as_ref().map(|t| format!("{:.2} ({})", t.gbit_per_s, t.retransmits)).unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<24} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>16} {:>16}",
            r.forwarder.name(),
            opt(u.map(|u| u.offered_pps), 1e3, 0),
            opt(u.map(|u| u.delivered_pps), 1e3, 0),
            opt(loss, 1.0, 1),
            opt(u.map(|u| u.softirq_ns_per_pkt), 1.0, 0),
            opt(u.map(|u| u.cpu_ns_per_pkt), 1.0, 0),
            opt(u.and_then(|u| u.vswitchd_busy_ns_per_pkt), 1.0, 0),
            tcp(&r.tcp_offloads_off),
            tcp(&r.tcp_offloads_on),
        );
    }
    for r in results {
        if let Some(d) = r.udp.as_ref().and_then(|u| u.vswitchd_drops.as_ref()) {
            println!("  {}: UDP run drops {d}", r.forwarder.name());
        }
        if let Some(u) = r.udp.as_ref() {
            if let (Some(c), Some(b)) = (u.vswitchd_cpu_ns_per_pkt, u.vswitchd_busy_ns_per_pkt) {
                let ratio = b / c;
                let note = if ratio > 1.2 { " — preempted while busy: the machine is shared, rerun" } else { "" };
                println!("  {}: worker thread CPU {c:.0} ns/pkt; busy/CPU = {ratio:.2}{note}", r.forwarder.name());
            }
        }
        for e in &r.errors {
            println!("  {}: {e}", r.forwarder.name());
        }
    }
    if let Some(m) = ratios.as_object() {
        if !m.is_empty() {
            println!(
                "\nratios vswitchd / kernel doing the same job (linux-bridge; linux-masquerade for vswitchd-masquerade; \
                 linux-vxlan for vswitchd-overlay): delivered pps, TCP offloads off, TCP offloads on"
            );
            for (name, v) in m {
                println!(
                    "  {name:<24} {:>6} {:>6} {:>6}",
                    opt(v["delivered_pps"].as_f64(), 1.0, 2),
                    opt(v["tcp_offloads_off"].as_f64(), 1.0, 2),
                    opt(v["tcp_offloads_on"].as_f64(), 1.0, 2)
                );
            }
        }
    }
}

/// vswitchd's figures divided by those of the kernel doing the same job (the Linux bridge, or kernel
/// masquerade for `vswitchd-masquerade`), per vswitchd forwarder.
fn ratios(results: &[ForwarderResult]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => serde_json::json!(a / b),
        _ => serde_json::Value::Null,
    };
    for r in results.iter().filter(|r| r.forwarder.name().starts_with("vswitchd")) {
        let Some(base) = results.iter().find(|b| b.forwarder == r.forwarder.reference()) else { continue };
        out.insert(
            r.forwarder.name().to_string(),
            serde_json::json!({
                "delivered_pps": div(r.udp.as_ref().map(|u| u.delivered_pps), base.udp.as_ref().map(|u| u.delivered_pps)),
                "tcp_offloads_off": div(r.tcp_offloads_off.as_ref().map(|t| t.gbit_per_s), base.tcp_offloads_off.as_ref().map(|t| t.gbit_per_s)),
                "tcp_offloads_on": div(r.tcp_offloads_on.as_ref().map(|t| t.gbit_per_s), base.tcp_offloads_on.as_ref().map(|t| t.gbit_per_s)),
            }),
        );
    }
    out.into()
}
