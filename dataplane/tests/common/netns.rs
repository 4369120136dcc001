//! Shared helpers for live tests: a root check, an `ip` runner, and named network namespaces that the test
//! creates, enters on dedicated threads (`setns`, so the test's other threads stay where they are) and deletes
//! by exact name when dropped (which also deletes every interface inside them).
//!
//! Include with `#[path = "common/netns.rs"] mod netns;`. Not every test file uses every helper.
#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::thread::JoinHandle;

/// Why a live test cannot run here (not root), or `None`.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some(format!("not root (euid {euid})"));
    }
    None
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Runs `ip ARGS` and returns its output (success or not).
pub fn ip_output(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// A network namespace created by the test and deleted (by its exact name) when dropped.
#[derive(Debug)]
pub struct Netns(pub String);

impl Netns {
    /// Creates namespace `name` (`ip netns add`), with its loopback up.
    pub fn create(name: &str) -> Netns {
        ip(&["netns", "add", name]);
        let ns = Netns(name.to_string());
        ip(&["-n", name, "link", "set", "dev", "lo", "up"]);
        ns
    }

    /// Turns IPv6 off in the namespace (no router solicitations or MLD), so every frame a test counts is one it
    /// sent.
    pub fn disable_ipv6(&self) {
        for key in ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"] {
            let ok = std::process::Command::new("ip")
                .args(["netns", "exec", &self.0, "sysctl", "-qw", key])
                .status()
                .expect("sysctl")
                .success();
            assert!(ok, "sysctl {key} in {}", self.0);
        }
    }

    /// Runs `ip -n NAME ARGS`, panicking on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Runs `ip -n NAME ARGS` and returns its standard output, panicking on failure.
    pub fn ip_stdout(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        let out = ip_output(&all);
        assert!(out.status.success(), "ip {}: {}", all.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a new thread that has entered this namespace; returns the thread's handle.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns takes an fd we keep open across the call and a flag; it changes only this thread's
            // network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// Runs `f` inside this namespace (on a dedicated thread) and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in netns panicked")
    }

    /// Reads `/sys/class/net/IF/statistics/STAT` of an interface inside this namespace.
    pub fn if_stat(&self, ifname: &str, stat: &str) -> u64 {
        let path = format!("/sys/class/net/{ifname}/statistics/{stat}");
        let out = Command::new("ip").args(["netns", "exec", &self.0, "cat", &path]).output().expect("ip netns exec");
        assert!(out.status.success(), "cat {path}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("a counter")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}
