//! The workspace's binaries for the lab tests: found next to this test's `vswitch-lab` (in the target
//! directory `cargo test --workspace` builds into), built there if missing.
//!
//! Include with `#[path = "common/binary.rs"] mod binary;`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `vswitch-lab` executable cargo built for this test.
pub const LAB: &str = env!("CARGO_BIN_EXE_vswitch-lab");

/// `name` (a binary of package `package`) in this test's target directory, built if missing.
pub fn binary(package: &str, name: &str) -> PathBuf {
    let profile_dir = Path::new(LAB).parent().expect("target/PROFILE").to_path_buf();
    let bin = profile_dir.join(name);
    if !bin.exists() {
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(other) => other.to_string(),
        };
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", package, "--bin", name, "--profile", &profile, "--target-dir"])
            .arg(profile_dir.parent().unwrap())
            .status()
            .expect("run cargo build")
            .success();
        assert!(ok && bin.exists(), "could not build {}", bin.display());
    }
    bin
}
