//! `vswitch-bench`'s command line, run as a user would: bad options are refused naming the option (exit 2),
//! a short `pipeline` run writes the JSON report with its keys and sane numbers, a short `sweep` writes its CSV
//! and SVG. No privileges needed (memory ports only).

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vswitch-bench")).args(args).output().expect("run vswitch-bench")
}

#[test]
fn bad_options_are_refused_naming_the_option() {
    for (args, needle) in [
        (&["pipeline", "--workers", "0"][..], "--workers"),
        (&["pipeline", "--workers", "65"][..], "--workers"),
        (&["pipeline", "--frame-size", "63"][..], "64..=1518"),
        (&["pipeline", "--frame-size", "jumbo"][..], "64..=1518"),
        (&["pipeline", "--scenario", "l4"][..], "nat-established"),
        (&["pipeline", "--load", "120%"][..], "0..=100"),
        (&["pipeline", "--duration", "0"][..], "--duration"),
        (&["pipeline", "--flows", "0"][..], "--flows"),
        (&["sweep", "--over", "colour", "--csv", "x.csv", "--svg", "x.svg"][..], "--over"),
        (&["sweep", "--over", "flows"][..], "--csv"),
        (&["live", "--load", "abc"][..], "percentage"),
        (&["live", "--rounds", "0"][..], "--rounds"),
        (&["live", "--rounds", "21"][..], "--rounds"),
    ] {
        let out = bench(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn a_half_second_pipeline_run_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    for scenario in ["l2", "l3", "nat-established"] {
        let out = bench(&[
            "pipeline",
            "--scenario",
            scenario,
            "--flows",
            "100",
            "--duration",
            "0.5",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{scenario}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("Mpps") && text.contains("p99.9"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["scenario"], scenario);
        assert_eq!(
            (v["workers"].as_u64(), v["flows"].as_u64(), v["frame_size"].as_u64()),
            (Some(1), Some(100), Some(64))
        );
        let mpps = v["mpps"].as_f64().unwrap();
        assert!(mpps > 0.01 && mpps < 1e4, "{scenario}: {mpps} Mpps");
        let gbps = v["gbps"].as_f64().unwrap();
        assert!((gbps - mpps * 64.0 * 8.0 / 1e3).abs() < 1e-6);
        assert!(v["ns_per_packet"].as_f64().unwrap() > 0.0);
        assert_eq!(v["per_worker_mpps"].as_array().unwrap().len(), 1);
        let l = &v["latency_ns"];
        let q: Vec<u64> = ["p50", "p90", "p99", "p999", "max"].iter().map(|k| l[*k].as_u64().unwrap()).collect();
        assert!(q[0] > 0 && q.windows(2).all(|w| w[0] <= w[1]), "{scenario}: {l}");
    }
}

#[test]
fn a_hot_apply_with_two_workers_pauses_neither_and_drops_nothing() {
    // The "an apply during a 2-worker run loses no frame and pauses no worker": another MAC limit is taken
    // at a batch boundary; one more port pauses them. (The bench once gave its ports a queue per worker without
    // saying so in the configuration, so every apply planned a reopen and paused.)
    let dir = tempfile::tempdir().unwrap();
    for (kind, paused) in [("hot", false), ("pause", true)] {
        let json = dir.path().join(format!("{kind}.json"));
        let out = bench(&[
            "pipeline",
            "--scenario",
            "nat-established",
            "--workers",
            "2",
            "--flows",
            "1000",
            "--duration",
            "0.5",
            "--load",
            "0",
            "--apply",
            kind,
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let a = &v["apply"];
        assert_eq!(a["paused"].as_bool(), Some(paused), "{kind}: {a}");
        assert_eq!(a["drops"].as_object().map(serde_json::Map::len), Some(0), "{kind}: {a}");
        assert!(a["gap_ns_across"].as_u64().is_some_and(|g| g > 0), "{kind}: {a}");
    }
}

#[test]
fn a_sweep_writes_csv_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, svg) = (dir.path().join("s.csv"), dir.path().join("s.svg"));
    let out = bench(&[
        "sweep",
        "--over",
        "frame-size",
        "--values",
        "64,512,imix",
        "--duration",
        "0.2",
        "--load",
        "0",
        "--quiet",
        "--csv",
        csv.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows[0].starts_with("over,value,scenario"));
    assert!(rows[3].contains(",imix,"), "{text}");
    let columns = rows[0].split(',').count();
    assert!(rows.iter().all(|r| r.split(',').count() == columns), "{text}");
    assert!(rows[0].ends_with("latency_delivered_mpps,latency_ring_dropped"), "{text}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("maximum rate"));
}

#[test]
fn a_table_size_sweep_interleaves_scenarios_in_rounds_with_same_round_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, svg) = (dir.path().join("t.csv"), dir.path().join("t.svg"));
    let out = bench(&[
        "sweep",
        "--over",
        "table-size",
        "--scenarios",
        "l2,l3,nat-established",
        "--values",
        "10,100",
        "--rounds",
        "2",
        "--duration",
        "0.2",
        "--load",
        "0",
        "--quiet",
        "--csv",
        csv.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|r| r.split(',').collect()).collect();
    assert_eq!(rows.len(), 2 * 2 * 3, "rounds x sizes x scenarios: {text}");
    let head: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap_or_else(|| panic!("{name} in {head:?}"));
    let (scenario, round, value, routes, flows, ratio) =
        (col("scenario"), col("round"), col("value"), col("routes"), col("flows"), col("ratio_to_smallest"));
    // Interleaved: within a round, every scenario at the first size before any at the second.
    let order: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[round], r[value], r[scenario])).collect();
    assert_eq!(order[..3], [("1", "10", "l2"), ("1", "10", "l3"), ("1", "10", "nat-established")]);
    assert_eq!(order[3..6], [("1", "100", "l2"), ("1", "100", "l3"), ("1", "100", "nat-established")]);
    for r in &rows {
        let x: f64 = r[ratio].parse().unwrap();
        if r[value] == "10" {
            assert_eq!(x, 1.0, "the smallest size is its own reference: {r:?}");
        }
        assert!(x > 0.0 && x.is_finite(), "{r:?}");
        assert_eq!(r[flows], r[value], "a size is the scenario's flows: {r:?}");
        let expected_routes = if r[scenario] == "l3" { r[value] } else { "0" };
        assert_eq!(r[routes], expected_routes, "l3 scales its routes with its destinations: {r:?}");
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| nat-established | 100 |") && table.contains("ratio to smallest"), "{table}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("relative to the smallest table"));
    // --scenarios and --rounds belong to table-size.
    let out = bench(&["sweep", "--over", "flows", "--rounds", "2", "--csv", "x.csv", "--svg", "x.svg"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--over table-size"));
}
