//! A `vswitchd` child process for live tests: started inside a namespace of the test's (`ip netns exec` execs it,
//! so the child's PID is vswitchd's), signalled by that PID, waited for with a deadline, and killed and reaped
//! by its PID if the test ends first.
//!
//! Include with `#[path = "common/daemon.rs"] mod daemon;`, after `mod netns;`. Not every test file uses every
//! helper.
#![allow(dead_code)]

use crate::netns::Netns;
use std::ffi::OsStr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A vswitchd child process, killed (by its PID) and reaped if the test ends before it exits.
pub struct Daemon(Option<Child>);

/// `args`, with `--workers N` added to a `run` that does not choose its own when the environment variable
/// `VSWITCH_TEST_WORKERS=N` is set: the live suites run again with several workers that way
/// (`VSWITCH_TEST_WORKERS=2 cargo test -p dataplane --all-features`).
fn with_test_workers<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
    if let Ok(n) = std::env::var("VSWITCH_TEST_WORKERS") {
        let is_run = v.first().is_some_and(|a| a == "run");
        if is_run && !v.iter().any(|a| a == "--workers") {
            v.push("--workers".into());
            v.push(n.into());
        }
    }
    v
}

impl Daemon {
    /// Starts `vswitchd ARGS` inside namespace `ns`, stdout and stderr captured.
    pub fn spawn_in<S: AsRef<OsStr>>(ns: &Netns, args: impl IntoIterator<Item = S>) -> Daemon {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_vswitchd")])
            .args(with_test_workers(args))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vswitchd");
        Daemon(Some(child))
    }

    /// As [`Daemon::spawn_in`], with environment variables set for vswitchd (`ip netns exec` passes them on).
    pub fn spawn_in_env<S: AsRef<OsStr>>(
        ns: &Netns,
        args: impl IntoIterator<Item = S>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_vswitchd")])
            .args(with_test_workers(args))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vswitchd");
        Daemon(Some(child))
    }

    /// As [`Daemon::spawn_in`], with environment variables `remove` unset for vswitchd (the test's own
    /// `RUST_LOG`, say).
    pub fn spawn_in_env_removed<S: AsRef<OsStr>>(
        ns: &Netns,
        args: impl IntoIterator<Item = S>,
        remove: &[&str],
    ) -> Daemon {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_vswitchd")]).args(with_test_workers(args));
        for k in remove {
            cmd.env_remove(k);
        }
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn vswitchd");
        Daemon(Some(child))
    }

    /// The child's PID.
    pub fn pid(&self) -> i32 {
        self.0.as_ref().expect("running").id() as i32
    }

    /// Sends `sig` to the child.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill takes a PID (our own child's, not yet reaped, so not reused) and a signal number.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits up to `limit` for the child to exit and returns its output.
    pub fn wait(&mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        let child = self.0.as_mut().expect("running");
        while child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "vswitchd did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.0.take().expect("running").wait_with_output().expect("output")
    }

    /// SIGTERM, then waits up to 5 s for the exit.
    pub fn terminate(&mut self) -> Output {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(5))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
