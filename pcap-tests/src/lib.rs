//! The golden pcap regression harness: every directory under `cases/` is one case, replayed through
//! `dataplane::replay::replay` (exactly what `vswitchd replay` runs) and compared with its expected outputs.
//!
//! A case is:
//! - `config.toml`: the switch configuration (every port becomes a pcap port);
//! - `in/PORT.toml` + `in/PORT.pcap`: a `vswitch-pcap gen` spec and the capture it makes, the frames port `PORT`
//!   receives (the harness checks that the committed capture is what the spec generates, so inputs stay
//!   reproducible: `vswitch-pcap gen in/PORT.toml -o in/PORT.pcap`);
//! - `expected/PORT.pcap` for every configured port (empty captures included), and `expected/counters.json`,
//!   every counter of the run (drops by reason, per-port, MAC tables, router);
//! - `README.md`: one paragraph saying what the case shows;
//! - optionally `overlay.json`: the overlay membership installed before the first frame (`vswitchd replay
//!   --overlay`), for cases with overlay networks.
//!
//! On a mismatch the first differing frame is printed decoded on both sides (`tools::diff`), and counters are
//! compared key by key. With `VSWITCH_BLESS=1` the expected files (and input captures) are rewritten instead;
//! review the diff before committing.

use dataplane::config::Config;
use dataplane::port::pcap::read_capture;
use dataplane::replay::{replay_with_overlay, ReplayInput};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The environment variable that makes the harness rewrite goldens instead of comparing.
pub const BLESS_VAR: &str = "VSWITCH_BLESS";

/// The directory holding the cases.
pub fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cases")
}

/// Every case directory, sorted by name.
pub fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("config.toml").is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// True when goldens should be rewritten.
pub fn blessing() -> bool {
    std::env::var_os(BLESS_VAR).is_some_and(|v| v != "0" && !v.is_empty())
}

/// Runs one case; `Err` holds a readable description of every mismatch.
pub fn run_case(dir: &Path, bless: bool) -> Result<(), String> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let fail = |msg: String| format!("case {name}: {msg}");
    let cfg = Config::load(&dir.join("config.toml")).map_err(|e| fail(e.to_string()))?;
    if !dir.join("README.md").is_file() {
        return Err(fail("README.md is missing (say in one paragraph what the case shows)".into()));
    }

    // Inputs: every in/PORT.toml spec, regenerated and compared with the committed capture.
    let mut inputs = Vec::new();
    let mut problems = String::new();
    let in_dir = dir.join("in");
    let mut specs: Vec<PathBuf> = std::fs::read_dir(&in_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect()
        })
        .unwrap_or_default();
    specs.sort();
    for spec in specs {
        let port = spec.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let pcap = spec.with_extension("pcap");
        let scratch = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
        let generated = scratch.path().join("gen.pcap");
        tools::generate::generate_file(&spec, &generated).map_err(|e| fail(format!("{}: {e}", spec.display())))?;
        if bless {
            std::fs::copy(&generated, &pcap).map_err(|e| fail(format!("{}: {e}", pcap.display())))?;
        } else {
            match tools::diff::compare_files(&generated, &pcap) {
                Ok(None) => {}
                Ok(Some(d)) => {
                    let _ =
                        writeln!(problems, "input {} is not what {} generates:\n{d}", pcap.display(), spec.display());
                }
                Err(e) => {
                    let _ = writeln!(problems, "input {}: {e}", pcap.display());
                }
            }
        }
        inputs.push(ReplayInput { port, path: pcap });
    }

    let out = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let overlay = match std::fs::read_to_string(dir.join("overlay.json")) {
        Ok(text) => Some(serde_json::from_str(&text).map_err(|e| fail(format!("overlay.json: {e}")))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail(format!("overlay.json: {e}"))),
    };
    let report = replay_with_overlay(&cfg, overlay.as_ref(), &inputs, out.path()).map_err(|e| fail(e.to_string()))?;
    let counters = report.counters_json();
    let expected_dir = dir.join("expected");
    if bless {
        std::fs::create_dir_all(&expected_dir).map_err(|e| fail(e.to_string()))?;
        for (port, path) in &report.outputs {
            std::fs::copy(path, expected_dir.join(format!("{port}.pcap"))).map_err(|e| fail(e.to_string()))?;
        }
        let json = serde_json::to_string_pretty(&counters).expect("plain data") + "\n";
        std::fs::write(expected_dir.join("counters.json"), json).map_err(|e| fail(e.to_string()))?;
        return Ok(());
    }

    for (port, path) in &report.outputs {
        let expected = expected_dir.join(format!("{port}.pcap"));
        let got = read_capture(path).map_err(|e| fail(e.to_string()))?;
        let want = match read_capture(&expected) {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(problems, "expected/{port}.pcap: {e}");
                continue;
            }
        };
        if let Some(d) = tools::diff::compare(&got.frames, &want.frames) {
            let _ = writeln!(
                problems,
                "port {port}: output (A) differs from expected/{port}.pcap (B):\n{}",
                d.labelled("got", "expected")
            );
        }
    }
    match std::fs::read_to_string(expected_dir.join("counters.json")) {
        Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(want) => compare_json("", &counters, &want, &mut problems),
            Err(e) => {
                let _ = writeln!(problems, "expected/counters.json: {e}");
            }
        },
        Err(e) => {
            let _ = writeln!(problems, "expected/counters.json: {e}");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(fail(format!("\n{problems}")))
    }
}

/// Appends one line per differing leaf between `got` and `want`.
fn compare_json(path: &str, got: &serde_json::Value, want: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            let mut keys: Vec<&String> = g.keys().chain(w.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                compare_json(&p, g.get(k).unwrap_or(&Value::Null), w.get(k).unwrap_or(&Value::Null), out);
            }
        }
        _ if got != want => {
            let _ = writeln!(out, "counter {path}: got {got}, expected {want}");
        }
        _ => {}
    }
}
