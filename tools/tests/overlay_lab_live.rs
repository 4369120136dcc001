//! The overlay lab end to end, through its real interface: `vswitch-lab demo --config
//! examples/lab/overlay.toml` (three hosts, each with vswitchd, vswitch-agent and an etcd member; h3 joins
//! late; masquerade and a published port through the outside host) must print only PASS lines, exit 0 and
//! leave nothing behind; a demo whose vswitchd cannot start must fail and leave nothing behind either. Root
//! only, and only with etcd installed (`.ci/run` installs etcd-server); skipped with a message otherwise.
//!
//! The binaries come from this test's target directory (`cargo test --workspace` builds them; missing ones are
//! built here). Prefixes carry the PID, so the namespaces are this test's own; the state directory is a
//! temporary one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/binary.rs"]
mod binary;

use binary::{binary, LAB};

/// Why the test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if !tools::lab::is_root() {
        return Some("not root (the lab creates namespaces; CI runs it as root)".into());
    }
    if !Path::new(tools::lab::overlay::ETCD).exists() {
        return Some(format!("{} not found (install etcd-server)", tools::lab::overlay::ETCD));
    }
    None
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab/overlay.toml")
}

fn demo(prefix: &str, state: &Path, vswitchd: &Path) -> Output {
    Command::new(LAB)
        .arg("demo")
        .arg("--config")
        .arg(example())
        .args(["--prefix", prefix])
        .arg("--state-dir")
        .arg(state)
        .arg("--vswitchd")
        .arg(vswitchd)
        .arg("--agent")
        .arg(binary("control", "vswitch-agent"))
        .output()
        .expect("run vswitch-lab")
}

/// What of a lab with `prefix` is still there: namespaces, daemons whose command line names the prefix's
/// files, etcd's data directory.
fn leftovers(prefix: &str) -> Vec<String> {
    let mut left = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) {
                left.push(format!("namespace {name}"));
            }
        }
    }
    let tag = prefix.trim_end_matches('-');
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(&format!("vswitch-lab-{tag}")) || text.contains(&format!("/{tag}/")) {
                left.push(format!("process {}: {text}", e.file_name().to_string_lossy()));
            }
        }
    }
    let data = PathBuf::from(format!("/dev/shm/vswitch-lab-{tag}"));
    if data.exists() {
        left.push(format!("directory {}", data.display()));
    }
    left
}

#[test]
fn the_overlay_lab_demo_passes_every_check_and_leaves_nothing_behind() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let prefix = format!("vlo{}-", std::process::id());
    let state = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = demo(&prefix, state.path(), &binary("dataplane", "vswitchd"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}\n(demo took {:?})", started.elapsed());
    let pass: Vec<&str> = stdout.lines().filter(|l| l.starts_with("PASS ")).collect();
    let fail: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert!(fail.is_empty(), "failed checks: {fail:#?}");
    assert!(out.status.success(), "exit status {:?}", out.status);
    // Every kind of check ran: the demo derives them from the lab, so an empty derivation must not pass.
    for wanted in [
        "etcd answers",
        "h1 lists [\"h2\"] in red",
        "ping c1 -> gateway on h1",
        "ping c1 -> c2 on h2",
        "tcp c1 -> c2 on h2",
        "h3 joins: c3 pings c1",
        "tcp c3 -> c1",
        "h1 lists [\"h2\", \"h3\"] in red",
        "tcp c1 -> ext (203.0.113.10) masquerade via h1",
        "tcp c3 -> ext (203.0.113.10) masquerade via h3",
        "published 198.51.100.12:8080 (h2) -> c2:80",
    ] {
        assert!(pass.iter().any(|l| l.contains(wanted)), "no PASS line for {wanted:?}");
    }
    assert!(pass.len() >= 15, "{} checks passed", pass.len());
    assert_eq!(leftovers(&prefix), Vec::<String>::new(), "the demo removes everything it created");
    assert!(!state.path().join(prefix.trim_end_matches('-')).exists(), "the state directory is removed");
}

#[test]
fn an_overlay_lab_that_fails_to_start_leaves_nothing_behind() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let prefix = format!("vlf{}-", std::process::id());
    let state = tempfile::tempdir().unwrap();
    // etcd, namespaces and links come up; then vswitchd cannot start.
    let out = demo(&prefix, state.path(), Path::new("/nonexistent/vswitchd"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a lab that cannot come up is an error: {stderr}");
    assert!(stderr.contains("vswitchd"), "the error names what failed: {stderr}");
    assert_eq!(leftovers(&prefix), Vec::<String>::new(), "a failed start removes what it created");
}
