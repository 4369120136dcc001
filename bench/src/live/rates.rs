//! The live benchmark's loss-bounded rates and latencies, per forwarder, on a topology of its own: NDR and PDR
//! ([`ndr`]) with the rate-controlled [`sender`], then UDP round trips ([`rr`]) with nothing else on the path
//! and with a background stream at [`RateOptions::load`] of the forwarder's PDR. Also the ratios vswitchd /
//! peer for these figures, their table, and the live frame-size sweep.
//!
//! Kept apart from the throughput and TCP measurements of [`super`] (which have their own topologies), so the
//! two can change independently.

use super::ndr::{self, Path, Rates};
use super::rr::{self, RrResult, RrSpec};
use super::{sender, warm_up, BenchOptions, Forwarder, ForwarderResult, Topology, GATEWAY, SENDER};
use crate::cli::SweepArgs;
use crate::plot::{self, Panel, Series};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// How the rates and latencies are measured.
#[derive(Debug, Clone)]
pub struct RateOptions {
    /// One NDR/PDR trial.
    pub trial: Duration,
    /// Round-trip requests per second (at most; one outstanding).
    pub rr_rate: f64,
    /// Length of each round-trip measurement.
    pub rr_duration: Duration,
    /// The loaded round trips' background stream, as a fraction of the PDR.
    pub load: f64,
}

impl Default for RateOptions {
    fn default() -> Self {
        RateOptions { trial: Duration::from_secs(1), rr_rate: 10_000.0, rr_duration: Duration::from_secs(2), load: 0.5 }
    }
}

/// Rates and latencies of one forwarder.
#[derive(Debug, Clone, Serialize)]
pub struct RatesResult {
    /// NDR and PDR of 64-byte frames.
    pub rates: Option<Rates>,
    /// Round trips with nothing else on the path.
    pub rr_low: Option<RrResult>,
    /// Round trips beside a background stream at `load` × PDR.
    pub rr_loaded: Option<RrResult>,
    /// vswitchd's or OVS's own view (drops by reason, PMD statistics), when there is one.
    pub forwarder_stats: Option<serde_json::Value>,
}

impl Topology {
    /// The sender's frame of `bytes` bytes (with FCS) through this topology, and where to count it.
    fn rate_path(&self, bytes: usize, cpu: usize) -> anyhow::Result<Path> {
        let (tx_ns, sender_if) = (self.sender_ns(), self.sender_if().to_string());
        let dst = self.dst();
        let next_hop = if dst.octets()[..3] == [10, 71, 1] { dst } else { GATEWAY };
        let dst_mac = sender::parse_mac(&super::traffic::neighbour_mac(&tx_ns, next_hop)?)?;
        let src_mac = sender::link_mac(&tx_ns, &sender_if)?;
        let frame = crate::udp_frame(src_mac, dst_mac, SENDER, dst, 4000, 9, bytes - 4);
        Ok(Path { sender_ns: tx_ns, sender_if, receiver_ns: self.receiver_ns(), frame, cpu })
    }
}

/// Measures `f`'s rates and latencies into `r` (errors go to `r.errors`).
pub fn measure(f: Forwarder, prefix: &str, opts: &BenchOptions, ro: &RateOptions, r: &mut ForwarderResult) {
    let mut out = RatesResult { rates: None, rr_low: None, rr_loaded: None, forwarder_stats: None };
    if let Err(e) = measure_into(f, prefix, opts, ro, &mut out, &mut r.errors) {
        r.errors.push(format!("rates: {e:#}"));
    }
    r.rates = Some(out);
}

fn measure_into(
    f: Forwarder,
    prefix: &str,
    opts: &BenchOptions,
    ro: &RateOptions,
    out: &mut RatesResult,
    errors: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut topo = Topology::up(f, prefix, false, opts)?;
    warm_up(&topo)?;
    let path = topo.rate_path(64, opts.sender_cpu)?;
    match ndr::search(&path, ro.trial) {
        Ok(r) => out.rates = Some(r),
        Err(e) => errors.push(format!("ndr/pdr: {e:#}")),
    }
    let spec = RrSpec {
        client_ns: topo.sender_ns(),
        server_ns: topo.receiver_ns(),
        server: topo.dst(),
        rate: ro.rr_rate,
        duration: ro.rr_duration,
        cpu: opts.sender_cpu,
    };
    match rr::measure(&spec, None) {
        Ok(r) => out.rr_low = Some(r),
        Err(e) => errors.push(format!("round trips: {e:#}")),
    }
    if let Some(pdr) = out.rates.as_ref().map(|r| r.pdr_pps).filter(|&p| p > 0.0) {
        match rr::measure(&spec, Some((&path, pdr * ro.load))) {
            Ok(r) => out.rr_loaded = Some(r),
            Err(e) => errors.push(format!("round trips under load: {e:#}")),
        }
    }
    if let Topology::Kernel { ovs: Some(o), .. } = &topo {
        out.forwarder_stats = o.pmd_stats().map(serde_json::Value::String);
    }
    let (_, drops) = topo.stop_switch()?;
    if drops.is_some() {
        out.forwarder_stats = drops;
    }
    Ok(())
}

/// The peers a vswitchd forwarder is compared with: the kernel doing the same job, and OVS (for the L2 ones).
fn peers(f: Forwarder) -> Vec<Forwarder> {
    let mut v = vec![f.reference()];
    if !matches!(f, Forwarder::VswitchdMasquerade | Forwarder::VswitchdOverlay) {
        v.push(Forwarder::OvsAfxdp);
    }
    v
}

/// vswitchd / peer for NDR, PDR (higher is better) and round-trip p50, p99, p99.9 (lower is better), for every
/// vswitchd forwarder and every peer measured in the same run.
pub fn ratios(results: &[ForwarderResult]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let get = |f: Forwarder| results.iter().find(|r| r.forwarder == f).and_then(|r| r.rates.as_ref());
    for r in results.iter().filter(|r| r.forwarder.name().starts_with("vswitchd")) {
        let Some(me) = r.rates.as_ref() else { continue };
        let mut per = serde_json::Map::new();
        for p in peers(r.forwarder) {
            let Some(peer) = get(p) else { continue };
            let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => serde_json::json!(a / b),
                _ => serde_json::Value::Null,
            };
            let rate = |x: &RatesResult, pdr: bool| x.rates.as_ref().map(|r| if pdr { r.pdr_pps } else { r.ndr_pps });
            let lat = |x: &RatesResult, q: fn(&RrResult) -> u64| x.rr_low.as_ref().map(|r| q(r) as f64);
            per.insert(
                p.name().to_string(),
                serde_json::json!({
                    "ndr": div(rate(me, false), rate(peer, false)),
                    "pdr": div(rate(me, true), rate(peer, true)),
                    "rr_p50": div(lat(me, |r| r.latency_ns.p50), lat(peer, |r| r.latency_ns.p50)),
                    "rr_p99": div(lat(me, |r| r.latency_ns.p99), lat(peer, |r| r.latency_ns.p99)),
                    "rr_p999": div(lat(me, |r| r.latency_ns.p999), lat(peer, |r| r.latency_ns.p999)),
                }),
            );
        }
        out.insert(r.forwarder.name().to_string(), per.into());
    }
    out.into()
}

/// The ratios of several rounds ([`ratios`] of each) summarised per vswitchd forwarder, peer and figure: the
/// median, smallest and largest value and how many rounds had it. Rounds without a figure are left out of it.
pub fn summarize(rounds: &[serde_json::Value]) -> serde_json::Value {
    let mut values: std::collections::BTreeMap<(String, String, String), Vec<f64>> = Default::default();
    for r in rounds {
        for (name, per) in r.as_object().into_iter().flatten() {
            for (peer, v) in per.as_object().into_iter().flatten() {
                for (key, x) in v.as_object().into_iter().flatten() {
                    if let Some(x) = x.as_f64().filter(|x| x.is_finite()) {
                        values.entry((name.clone(), peer.clone(), key.clone())).or_default().push(x);
                    }
                }
            }
        }
    }
    let mut out = serde_json::Map::new();
    for ((name, peer, key), mut v) in values {
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
        let entry = out.entry(name).or_insert_with(|| serde_json::json!({}));
        let per = entry.as_object_mut().expect("an object").entry(peer).or_insert_with(|| serde_json::json!({}));
        per[key.as_str()] =
            serde_json::json!({ "median": median, "min": v[0], "max": v[v.len() - 1], "rounds": v.len() });
    }
    out.into()
}

/// The table of [`summarize`]: median (min–max) per ratio.
pub fn summary_table(summary: &serde_json::Value, rounds: usize) -> String {
    let mut s = String::new();
    let Some(m) = summary.as_object().filter(|m| !m.is_empty()) else { return s };
    let _ = writeln!(
        s,
        "\nratios vswitchd / peer over {rounds} interleaved rounds, median (min-max): NDR, PDR (higher is better); \
         RR idle p50, p99, p99.9 (lower is better)"
    );
    for (name, per) in m {
        for (peer, v) in per.as_object().into_iter().flatten() {
            let f = |k: &str| {
                let x = &v[k];
                match (x["median"].as_f64(), x["min"].as_f64(), x["max"].as_f64()) {
                    (Some(m), Some(a), Some(b)) => format!("{m:.2} ({a:.2}-{b:.2})"),
                    _ => "-".into(),
                }
            };
            let _ = writeln!(s, "  {name} / {peer}");
            let _ = writeln!(
                s,
                "    NDR {}  PDR {}  |  p50 {}  p99 {}  p99.9 {}",
                f("ndr"),
                f("pdr"),
                f("rr_p50"),
                f("rr_p99"),
                f("rr_p999")
            );
        }
    }
    s
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e3)
}

/// The rates table, the round-trip table and the ratios, as printed by `vswitch-bench live`.
pub fn table(results: &[ForwarderResult], ratios: &serde_json::Value) -> String {
    let mut s = String::new();
    if results.iter().all(|r| r.rates.is_none()) {
        return s;
    }
    let _ = writeln!(
        s,
        "\n{:<24} {:>9} {:>9} {:>9} {:>7} | {:>25} | {:>25} {:>9}",
        "64-byte UDP",
        "NDR",
        "PDR",
        "sender",
        "trials",
        "RR idle p50/p90/p99/p99.9",
        "RR loaded p50/p99/p99.9",
        "loaded"
    );
    let _ = writeln!(
        s,
        "{:<24} {:>9} {:>9} {:>9} {:>7} | {:>25} | {:>25} {:>9}",
        "", "kpps", "kpps", "max kpps", "", "µs", "µs", "kpps bg"
    );
    for r in results {
        let Some(x) = &r.rates else { continue };
        let (ndr, pdr, max, trials) = match &x.rates {
            Some(n) => (
                format!("{:.0}", n.ndr_pps / 1e3),
                format!("{:.0}{}", n.pdr_pps / 1e3, if n.sender_limited { "*" } else { "" }),
                format!("{:.0}", n.sender_max_pps / 1e3),
                n.trials.len().to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let low = x.rr_low.as_ref().map_or("-".into(), |r| {
            let l = &r.latency_ns;
            format!("{}/{}/{}/{}", us(l.p50), us(l.p90), us(l.p99), us(l.p999))
        });
        let (loaded, bg) = x.rr_loaded.as_ref().map_or(("-".into(), "-".into()), |r| {
            let l = &r.latency_ns;
            (format!("{}/{}/{}", us(l.p50), us(l.p99), us(l.p999)), format!("{:.0}", r.background_pps / 1e3))
        });
        let _ = writeln!(
            s,
            "{:<24} {ndr:>9} {pdr:>9} {max:>9} {trials:>7} | {low:>25} | {loaded:>25} {bg:>9}",
            r.forwarder.name()
        );
    }
    let _ = writeln!(s, "  * the forwarder kept up with the sender's maximum: the figure is the sender's limit");
    if let Some(m) = ratios.as_object().filter(|m| !m.is_empty()) {
        let _ = writeln!(
            s,
            "\nratios vswitchd / peer, same run: NDR, PDR (higher is better); RR idle p50, p99, p99.9 (lower is better)"
        );
        for (name, per) in m {
            for (peer, v) in per.as_object().into_iter().flatten() {
                let f = |k: &str| v[k].as_f64().map_or("-".into(), |x| format!("{x:.2}"));
                let _ = writeln!(
                    s,
                    "  {name:<24} / {peer:<18} {:>6} {:>6} | {:>6} {:>6} {:>6}",
                    f("ndr"),
                    f("pdr"),
                    f("rr_p50"),
                    f("rr_p99"),
                    f("rr_p999")
                );
            }
        }
    }
    s
}

/// `vswitch-bench sweep --mode live --over frame-size`: per forwarder (one topology each, kept up over the
/// sizes), per frame size, the sender flat out for [`crate::sweep::LIVE_POINT`]: offered and delivered packets/s
/// and delivered Gbit/s (frames with FCS).
pub fn sweep_frame_sizes(args: &SweepArgs, values: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(tools::lab::is_root(), "--mode live needs root (it creates namespaces and veths)");
    let names: Vec<String> = if args.forwarders.is_empty() {
        vec!["vswitchd-afxdp-native".into(), "linux-bridge".into(), "ovs-afxdp".into()]
    } else {
        args.forwarders.clone()
    };
    let forwarders: Vec<Forwarder> = names
        .iter()
        .map(|n| Forwarder::from_name(n).ok_or_else(|| anyhow::anyhow!("--forwarders: unknown forwarder {n:?}")))
        .collect::<anyhow::Result<_>>()?;
    let sizes: Vec<usize> = values
        .iter()
        .map(|v| match v.parse::<usize>() {
            Ok(n) if (64..=1518).contains(&n) => Ok(n),
            _ => Err(anyhow::anyhow!("--values: {v:?}: live sweeps take frame sizes 64..=1518")),
        })
        .collect::<anyhow::Result<_>>()?;
    let opts = BenchOptions {
        duration: crate::sweep::LIVE_POINT,
        sender_cpu: args.sender_cpu,
        switch_cpu: args.switch_cpu,
        vswitchd: args.vswitchd.clone().unwrap_or_else(tools::lab::default_vswitchd),
        udp: true,
        tcp: false,
        sender: super::Sender::Sendmmsg,
        rates: None,
    };
    let mut csv = String::from("forwarder,frame_size,offered_pps,delivered_pps,delivered_gbps,loss\n");
    let (mut pps, mut gbps) = (Vec::new(), Vec::new());
    for (i, f) in forwarders.iter().enumerate() {
        eprintln!("sweep: {} ...", f.name());
        let prefix = format!("vsw{}{i}-", std::process::id());
        let topo = match Topology::up(*f, &prefix, false, &opts).and_then(|t| warm_up(&t).map(|_| t)) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("sweep: {}: {e:#}", f.name());
                continue;
            }
        };
        let (mut p, mut g) = (Vec::new(), Vec::new());
        for &size in &sizes {
            let t = topo.rate_path(size, opts.sender_cpu).and_then(|path| ndr::max_rate(&path, opts.duration));
            match t {
                Ok(t) => {
                    let gb = t.delivered_pps * size as f64 * 8.0 / 1e9;
                    let _ = writeln!(
                        csv,
                        "{},{size},{:.0},{:.0},{gb:.4},{:.5}",
                        f.name(),
                        t.offered_pps,
                        t.delivered_pps,
                        t.loss
                    );
                    eprintln!(
                        "  {size} B: offered {:.0} kpps, delivered {:.0} kpps, {gb:.2} Gbit/s",
                        t.offered_pps / 1e3,
                        t.delivered_pps / 1e3
                    );
                    p.push((size as f64, t.delivered_pps / 1e3));
                    g.push((size as f64, gb));
                }
                Err(e) => eprintln!("  {size} B: {e:#}"),
            }
        }
        drop(topo);
        pps.push(Series { name: f.name().into(), points: p });
        gbps.push(Series { name: f.name().into(), points: g });
    }
    std::fs::write(&args.csv, &csv).map_err(|e| anyhow::anyhow!("--csv {}: {e}", args.csv.display()))?;
    let panels = [
        Panel {
            title: "live, sender flat out: delivered packets/s".into(),
            y_label: "kpps".into(),
            series: pps,
            log_y: false,
        },
        Panel {
            title: "live, sender flat out: delivered Gbit/s (frames with FCS)".into(),
            y_label: "Gbit/s".into(),
            series: gbps,
            log_y: false,
        },
    ];
    plot::draw(&args.svg, "frame size (bytes with FCS)", false, &panels)?;
    eprintln!("sweep: wrote {} and {}", args.csv.display(), args.svg.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(ndr: f64, p50: Option<f64>) -> serde_json::Value {
        serde_json::json!({
            "vswitchd-afxdp-native": {
                "ovs-afxdp": { "ndr": ndr, "pdr": 1.0, "rr_p50": p50, "rr_p99": null, "rr_p999": 2.0 },
            },
        })
    }

    #[test]
    fn rounds_are_summarised_by_median_and_range_per_ratio() {
        let s = summarize(&[round(0.8, Some(1.0)), round(1.8, None), round(1.1, Some(0.5))]);
        let r = &s["vswitchd-afxdp-native"]["ovs-afxdp"];
        assert_eq!(r["ndr"], serde_json::json!({ "median": 1.1, "min": 0.8, "max": 1.8, "rounds": 3 }));
        // A figure missing from a round is left out of it; an even count takes the middle two's mean.
        assert_eq!(r["rr_p50"], serde_json::json!({ "median": 0.75, "min": 0.5, "max": 1.0, "rounds": 2 }));
        assert!(r.get("rr_p99").is_none(), "{r}");
        let t = summary_table(&s, 3);
        assert!(t.contains("over 3 interleaved rounds"), "{t}");
        assert!(t.contains("NDR 1.10 (0.80-1.80)") && t.contains("p99 -"), "{t}");
        assert!(summary_table(&summarize(&[]), 1).is_empty());
    }
}
