//! `vswitch-pcap` end to end: exit codes and output of `gen`, `dump` and `diff`.

use std::path::Path;
use std::process::{Command, Output};

const SPEC: &str = r#"
[[host]]
name = "a"
mac = "02:00:00:00:00:01"
ip = "10.0.0.1"

[[host]]
name = "b"
mac = "02:00:00:00:00:02"
ip = "10.0.0.2"

[[frame]]
kind = "arp-request"
from = "a"
to = "b"

[[frame]]
kind = "udp"
from = "a"
to = "b"
at = 0.001
count = 2
interval = 0.001
sport = 1000
dport = 2000
payload = 18
"#;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vswitch-pcap")).args(args).output().expect("run vswitch-pcap")
}

fn gen(dir: &Path, name: &str, spec: &str) -> String {
    let spec_path = dir.join(format!("{name}.toml"));
    std::fs::write(&spec_path, spec).unwrap();
    let out = dir.join(format!("{name}.pcap"));
    let o = run(&["gen", spec_path.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "gen failed: {}", String::from_utf8_lossy(&o.stderr));
    out.to_str().unwrap().to_string()
}

#[test]
fn gen_then_dump() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = gen(dir.path(), "a", SPEC);
    let o = run(&["dump", &pcap]);
    assert_eq!(o.status.code(), Some(0));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "   1 0.000000 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP who-has 10.0.0.2 tell 10.0.0.1, len 60",
            "   2 0.001000 02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ttl 64 UDP 1000 > 2000 \
             payload 18, len 60",
            "   3 0.002000 02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ttl 64 UDP 1000 > 2000 \
             payload 18, len 60",
        ]
    );
}

#[test]
fn diff_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen(dir.path(), "a", SPEC);
    let same = gen(dir.path(), "same", SPEC);
    let other = gen(dir.path(), "other", &SPEC.replace("payload = 18", "payload = 18\nttl = 63"));

    let o = run(&["diff", &a, &same]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), "identical: 3 frames\n");

    let o = run(&["diff", &a, &other]);
    assert_eq!(o.status.code(), Some(1));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(stdout.contains("frame #2 differs at byte 22"), "{stdout}");
    assert!(stdout.contains("ttl 63"), "{stdout}");

    let o = run(&["diff", &a, dir.path().join("missing.pcap").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8(o.stderr).unwrap().contains("missing.pcap"));
}

#[test]
fn errors_exit_2_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.toml");
    std::fs::write(&spec, SPEC.replace("dport = 2000\n", "")).unwrap();
    let out = dir.path().join("bad.pcap");
    let o = run(&["gen", spec.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(stderr.contains("bad.toml: frame #2 (udp, line 17): `dport`: required for udp frames"), "{stderr}");

    let o = run(&["dump", spec.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "a TOML file is not a capture");
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
}
