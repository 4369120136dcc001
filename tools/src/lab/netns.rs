//! Network namespaces and interfaces for the lab, by exact name: create, configure, delete, and run code or a
//! command inside one.
//!
//! Everything here shells out to `ip` (iproute2) except [`in_netns`], which moves the *calling thread* into a
//! namespace with `setns(2)` (a network namespace is per thread), so sockets it opens live there. Nothing here
//! touches an object it was not given the exact name of; nothing touches the root namespace's interfaces.
//! Callable from any thread; needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN).

use super::LabError;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<(), LabError> {
    run("ip", args).map(|_| ())
}

/// Runs `PROGRAM ARGS`; a non-zero exit is an error that names the command and carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<Output, LabError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| LabError::Command { cmd: format!("{program} {}", args.join(" ")), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: format!("{program} {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// Runs `PROGRAM ARGS` inside namespace `ns` (`ip netns exec`).
pub fn exec(ns: &str, program: &str, args: &[&str]) -> Result<Output, LabError> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Whether namespace `name` exists (`/run/netns/NAME`, where `ip netns add` puts it).
pub fn exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Creates namespace `name` with loopback up and IPv6 off (no router solicitations or DAD noise on the links).
pub fn create(name: &str) -> Result<(), LabError> {
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    for key in ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"] {
        // Best effort: a kernel without IPv6 has no such key.
        let _ = exec(name, "sysctl", &["-qw", key]);
    }
    Ok(())
}

/// Deletes namespace `name` (its interfaces go with it; a veth's peer in another namespace too).
pub fn delete(name: &str) -> Result<(), LabError> {
    ip(&["netns", "delete", name])
}

/// Creates a veth pair: `a` in namespace `ns_a`, `b` in namespace `ns_b`, both up. The pair is created directly
/// inside `ns_a`, so the root namespace never sees either end.
pub fn veth(ns_a: &str, a: &str, ns_b: &str, b: &str) -> Result<(), LabError> {
    ip(&["-n", ns_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b])?;
    ip(&["-n", ns_a, "link", "set", a, "up"])?;
    ip(&["-n", ns_b, "link", "set", b, "up"])
}

/// Waits up to `timeout` for interface `ifname` to exist in namespace `ns`.
pub fn wait_for_link(ns: &str, ifname: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let ok = Command::new("ip")
            .args(["-n", ns, "link", "show", "dev", ifname])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Turns checksum offload and segmentation offloads off on `ifname` in `ns` (best effort: not every driver
/// lets every feature change). A veth with `tx on` hands frames with partial checksums to a packet socket.
pub fn offloads(ns: &str, ifname: &str, on: bool) -> Result<(), LabError> {
    let v = if on { "on" } else { "off" };
    exec(ns, "ethtool", &["-K", ifname, "tx", v, "tso", v, "gso", v, "gro", v]).map(|_| ())
}

/// Runs `f` on a new thread that first joins namespace `ns`; the thread's sockets live in `ns`. Failing to join
/// is reported when the handle is joined.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<Result<T, LabError>> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let err = |detail: String| LabError::Netns { ns: ns.clone(), detail };
        let file = File::open(Path::new("/run/netns").join(&ns)).map_err(|e| err(e.to_string()))?;
        // SAFETY: `file` is an open namespace file descriptor that outlives the call; setns only changes the
        // calling thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(err(std::io::Error::last_os_error().to_string()));
        }
        Ok(f())
    })
}
