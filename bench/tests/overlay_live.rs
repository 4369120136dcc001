//! `vswitch-bench live --forwarders linux-vxlan,vswitchd-overlay`, as a user runs it: both cross-host topologies
//! come up, carry TCP between the containers on the two hosts, and the ratio vswitchd / kernel is reported. A
//! smoke test of the benchmark's plumbing, not a performance claim (it asserts no figure beyond "moved data").
//! Root only (skipped with a message otherwise); vswitchd comes from this test's target directory (built by
//! `cargo test --workspace`, or here when missing).

use std::path::Path;
use std::process::Command;

/// vswitchd next to vswitch-bench, built if missing.
fn vswitchd() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_vswitch-bench")).parent().unwrap().to_path_buf();
    let bin = dir.join("vswitchd");
    if !bin.exists() {
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(other) => other.to_string(),
        };
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", "dataplane", "--bin", "vswitchd", "--profile", &profile, "--target-dir"])
            .arg(dir.parent().unwrap())
            .status()
            .expect("run cargo build")
            .success();
        assert!(ok && bin.exists(), "could not build {}", bin.display());
    }
    bin
}

#[test]
fn the_overlay_forwarders_carry_tcp_across_hosts_and_report_the_ratio() {
    if !tools::lab::is_root() {
        println!("skipped: not root (the benchmark creates namespaces)");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_vswitch-bench"))
        .args(["live", "--forwarders", "linux-vxlan,vswitchd-overlay", "--no-udp", "--no-rates", "--duration", "1"])
        .arg("--vswitchd")
        .arg(vswitchd())
        .arg("--json")
        .output()
        .expect("run vswitch-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let results = v["results"].as_array().expect("results");
    for name in ["linux-vxlan", "vswitchd-overlay"] {
        let r = results.iter().find(|r| r["forwarder"] == name).unwrap_or_else(|| panic!("{name} measured: {v}"));
        assert_eq!(r["errors"], serde_json::json!([]), "{name}: {r}");
        for key in ["tcp_offloads_off", "tcp_offloads_on"] {
            let g = r[key]["gbit_per_s"].as_f64().unwrap_or(0.0);
            assert!(g > 0.0, "{name} {key}: TCP moved data across hosts: {r}");
        }
    }
    let ratio = &v["ratios_vs_kernel"]["vswitchd-overlay"];
    assert!(ratio["tcp_offloads_off"].as_f64().is_some_and(|x| x > 0.0), "ratio reported: {v}");
}
