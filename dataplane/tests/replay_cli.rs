//! `vswitchd replay` through its real command line: outputs, determinism, and the input errors that must exit
//! with status 2 and write nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bridge").join(name)
}

fn vswitchd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vswitchd")).args(args).output().expect("vswitchd runs")
}

fn replay_example(out: &Path, extra: &[&str]) -> Output {
    let (cfg, c1, c2, up) = (example("config.toml"), example("c1.pcap"), example("c2.pcap"), example("up.pcap"));
    let mut args = vec![
        "replay".to_string(),
        "--config".into(),
        cfg.display().to_string(),
        "--in".into(),
        format!("c1={}", c1.display()),
        "--in".into(),
        format!("c2={}", c2.display()),
        "--in".into(),
        format!("up={}", up.display()),
        "--out-dir".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    vswitchd(&args)
}

#[test]
fn replay_writes_every_port_and_is_byte_identical_across_runs() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let stats = a.path().join("stats.json");
    let run1 = replay_example(a.path(), &["--stats-json", stats.to_str().unwrap()]);
    assert!(run1.status.success(), "{}", String::from_utf8_lossy(&run1.stderr));
    let run2 = replay_example(b.path(), &[]);
    assert!(run2.status.success());
    for port in ["c1", "c2", "up"] {
        let x = std::fs::read(a.path().join(format!("{port}.pcap"))).unwrap();
        let y = std::fs::read(b.path().join(format!("{port}.pcap"))).unwrap();
        assert!(x.len() > 24, "{port}.pcap has frames");
        assert_eq!(x, y, "{port}.pcap is byte-identical across runs");
    }
    let stdout = String::from_utf8_lossy(&run1.stdout);
    assert!(stdout.contains("ICMP echo reply"), "prints what was forwarded where:\n{stdout}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(stats).unwrap()).unwrap();
    assert_eq!(json["frames_in"], 9);
    assert_eq!(json["router"]["echo_replies"], 1);
}

#[test]
fn a_port_with_no_input_still_gets_an_empty_capture() {
    let out = tempfile::tempdir().unwrap();
    let cfg = example("config.toml");
    let c1 = format!("c1={}", example("c1.pcap").display());
    let r = vswitchd(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        "--in",
        &c1,
        "--out-dir",
        out.path().to_str().unwrap(),
    ]);
    assert!(r.status.success());
    for port in ["c1", "c2", "up"] {
        assert!(out.path().join(format!("{port}.pcap")).is_file(), "{port}.pcap exists");
    }
}

fn assert_usage_error(args: &[&str], out: &Path, needle: &str) {
    let r = vswitchd(args);
    assert_eq!(r.status.code(), Some(2), "exit status 2 for {args:?}");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains(needle), "stderr names the problem ({needle:?}): {err}");
    assert!(!out.exists(), "nothing was written");
}

#[test]
fn bad_inputs_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    let cfg = example("config.toml");
    let cfg_s = cfg.to_str().unwrap();
    let c1 = format!("c1={}", example("c1.pcap").display());

    let unknown = format!("nope={}", example("c1.pcap").display());
    assert_usage_error(
        &["replay", "--config", cfg_s, "--in", &unknown, "--out-dir", out_s],
        &out,
        "no port named \"nope\"",
    );

    let missing = format!("c2={}", dir.path().join("missing.pcap").display());
    assert_usage_error(
        &["replay", "--config", cfg_s, "--in", &c1, "--in", &missing, "--out-dir", out_s],
        &out,
        "missing.pcap",
    );

    let garbage = dir.path().join("garbage.pcap");
    std::fs::write(&garbage, b"this is not a capture").unwrap();
    let garbage_in = format!("c2={}", garbage.display());
    assert_usage_error(&["replay", "--config", cfg_s, "--in", &garbage_in, "--out-dir", out_s], &out, "garbage.pcap");

    // A valid pcap header with link type 101 (raw IP) instead of 1 (Ethernet).
    let raw_ip = dir.path().join("raw-ip.pcap");
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    hdr.extend_from_slice(&2u16.to_le_bytes());
    hdr.extend_from_slice(&4u16.to_le_bytes());
    hdr.extend_from_slice(&[0; 8]);
    hdr.extend_from_slice(&65535u32.to_le_bytes());
    hdr.extend_from_slice(&101u32.to_le_bytes());
    std::fs::write(&raw_ip, hdr).unwrap();
    let raw_in = format!("c2={}", raw_ip.display());
    assert_usage_error(&["replay", "--config", cfg_s, "--in", &raw_in, "--out-dir", out_s], &out, "not Ethernet");

    let dup = format!("c1={}", example("c2.pcap").display());
    assert_usage_error(
        &["replay", "--config", cfg_s, "--in", &c1, "--in", &dup, "--out-dir", out_s],
        &out,
        "more than one",
    );

    let bad_cfg = dir.path().join("bad.toml");
    std::fs::write(&bad_cfg, "[[port]]\nname = \"c1\"\nkind = \"pcap\"\nnetwork = \"brige\"\n").unwrap();
    assert_usage_error(
        &["replay", "--config", bad_cfg.to_str().unwrap(), "--in", &c1, "--out-dir", out_s],
        &out,
        "bad.toml:4",
    );
}

#[test]
fn overlay_state_is_installed_before_the_first_frame_and_checked() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcap-tests/cases/overlay-decap");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (cfg, state) = (case.join("config.toml"), case.join("overlay.json"));
    let under = format!("under={}", case.join("in/under.pcap").display());
    let stats = dir.path().join("stats.json");
    let args = |overlay: &Path| {
        let v: Vec<String> = vec![
            "replay".into(),
            "--config".into(),
            cfg.display().to_string(),
            "--in".into(),
            under.clone(),
            "--out-dir".into(),
            out.display().to_string(),
            "--stats-json".into(),
            stats.display().to_string(),
            "--overlay".into(),
            overlay.display().to_string(),
        ];
        v
    };
    let a = args(&state);
    let r = vswitchd(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(json["overlay"]["decapsulated"], 5, "{json}");
    std::fs::remove_dir_all(&out).unwrap();
    // A member with MTU 0: refused, naming the field; nothing written.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"members":[{"host":"b","vtep":"198.51.100.12","mtu":0,"networks":["red"]}]}"#).unwrap();
    let a = args(&bad);
    assert_usage_error(&a.iter().map(String::as_str).collect::<Vec<_>>(), &out, "--overlay: members[0].mtu");
}
