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
