//! Taps that outlive vswitchd: how `vswitchd run` creates, marks, re-adopts and deletes the taps of its tap
//! ports, so that a restart (clean, `kill -9`, a crash) leaves every container's interface in place with its
//! interface index, MAC, addresses and routes.
//!
//! # The ownership marker
//! A tap vswitchd creates gets the interface alias (`IFLA_IFALIAS`, `ip link set dev IF alias …`) `vswitchd
//! port NAME` before it is moved into its namespace; the alias moves with it. An interface is **ours** when its
//! alias starts with [`ALIAS_PREFIX`]. The alias was chosen over the tap's owner/group (`TUNSETOWNER`,
//! `TUNSETGROUP`): vswitchd runs as root, so an owner of 0 would not tell its taps from any other root-made tap,
//! while an alias names vswitchd and the port, is shown by `ip link`, and is read by `ip -d -j link show` in any
//! namespace without entering it.
//!
//! # Opening a tap port ([`open`])
//! With `netns` = N (else vswitchd's own namespace), the interface IFNAME is looked for in N:
//! - **absent**: created in vswitchd's namespace (all queues attached), marked, moved into N and brought up;
//!   not yet persistent (see below).
//! - **ours, not held open by anyone** (`numqueues` 0), a tap with the wanted multi-queue flag: **re-adopted**:
//!   its queues are attached from a thread that entered N (`/dev/net/tun` binds to the namespace of the thread
//!   that opens it), the MTU is set in place, nothing else is touched: the container keeps its interface index,
//!   MAC, addresses and routes.
//! - ours but a different kind of tap (single- vs multi-queue: the kernel refuses to attach): deleted and
//!   created again (a worker-count change).
//! - **not ours**, or ours but held open by another process (another vswitchd): refused with
//!   [`OpenFailure::NotOurs`] and left alone.
//!
//! With a namespace configured, a tap of ours left in vswitchd's own namespace (a vswitchd killed between
//! creating and moving it) is deleted first; one that is not ours is refused the same way.
//!
//! # Persistence and deletion
//! A tap created by [`open`] is not persistent until [`persist`] is called, which the live switch does once the
//! port is part of the running switch (start-up, a committed `apply`, a failed port brought up). So a tap opened
//! for an `apply` that then fails is deleted when its fds close, as before, while a re-adopted tap (already
//! persistent) is only closed. [`remove`] clears the persistent flag so that closing the port deletes the tap:
//! the live switch calls it for ports a configuration removes (or reopens on another interface or namespace),
//! and for every port at exit under `vswitchd run --cleanup`.
//!
//! Threads: called from the daemon's main or control thread; [`open`] spawns a short-lived thread to enter a
//! namespace. Needs the `ip` tool (iproute2), like the namespace move of [`super::tap`].

use super::tap::{TapConfig, TapPort};
use super::{Backend, OpenError, OpenFailure};
use std::os::fd::AsRawFd;
use std::process::Command;

/// The start of the alias that marks a tap as vswitchd's.
pub const ALIAS_PREFIX: &str = "vswitchd port ";

/// The alias vswitchd gives the tap of port `port`.
pub fn alias_for(port: &str) -> String {
    format!("{ALIAS_PREFIX}{port}")
}

/// What `ip -d -j link show` says about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Its index in its namespace.
    pub ifindex: u32,
    /// Its alias, if any.
    pub alias: Option<String>,
    /// A tun/tap device of type tap.
    pub is_tap: bool,
    /// Opened with `IFF_MULTI_QUEUE`.
    pub multi_queue: bool,
    /// Queues attached now (by any process).
    pub queues: u32,
}

impl LinkInfo {
    /// Marked as vswitchd's (see the module documentation).
    pub fn ours(&self) -> bool {
        self.alias.as_deref().is_some_and(|a| a.starts_with(ALIAS_PREFIX))
    }

    /// Parses one element of `ip -d -j link show`'s array.
    pub fn from_json(v: &serde_json::Value) -> Option<LinkInfo> {
        let data = &v["linkinfo"]["info_data"];
        Some(LinkInfo {
            ifindex: u32::try_from(v["ifindex"].as_u64()?).ok()?,
            alias: v["ifalias"].as_str().map(str::to_string),
            is_tap: v["linkinfo"]["info_kind"] == "tun" && data["type"] == "tap",
            multi_queue: data["multi_queue"].as_bool().unwrap_or(false),
            queues: u32::try_from(data["numqueues"].as_u64().unwrap_or(0)).unwrap_or(0),
        })
    }
}

/// `ip [-n NETNS] ARGS`: stdout on success, else stderr.
fn ip(netns: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(args).output().map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let prefix = netns.map(|n| format!("-n {n} ")).unwrap_or_default();
        Err(format!("ip {prefix}{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The interface `ifname` in `netns` (vswitchd's own with `None`), `Ok(None)` if there is none; `Err` when the
/// namespace cannot be entered or `ip` fails otherwise.
pub fn link_info(netns: Option<&str>, ifname: &str) -> Result<Option<LinkInfo>, String> {
    match ip(netns, &["-d", "-j", "link", "show", "dev", ifname]) {
        Ok(out) => {
            let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("ip -j output: {e}"))?;
            Ok(v.as_array().and_then(|a| a.first()).and_then(LinkInfo::from_json))
        }
        Err(e) if e.contains("does not exist") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs `f` on a thread that entered the named namespace `netns` (`/run/netns/NETNS`).
fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    let path = format!("/run/netns/{netns}");
    let file = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns takes an fd that `file` keeps open across the call and a flag; it changes only this
            // (short-lived) thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| "the thread entering the namespace panicked".to_string())?
    })
}

/// How [`open`] got the tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Created now (not persistent until [`persist`]).
    Created,
    /// An existing tap of ours, re-adopted (persistent).
    Adopted,
}

/// Opens the `n` queues of tap port `port` (`cfg.multi_queue` is set from `n`), re-adopting the tap when it is
/// ours; see the module documentation. On failure nothing it created is left behind.
pub fn open(port: &str, cfg: &TapConfig, n: usize) -> Result<(Vec<TapPort>, Origin), OpenError> {
    let n = n.max(1);
    let ifname = cfg.ifname.as_str();
    let fail = |failure: OpenFailure| OpenError::new(port, Backend::Tap, &cfg.ifname, failure);
    let ns = cfg.netns.as_deref();
    if let Some(ns) = ns {
        if ns.is_empty() || ns.contains('/') || ns.starts_with('.') {
            return Err(fail(OpenFailure::Netns { netns: ns.to_string(), message: "invalid namespace name".into() }));
        }
    }
    let netns_err = |message: String| match ns {
        Some(ns) => fail(OpenFailure::Netns { netns: ns.to_string(), message }),
        None => fail(OpenFailure::Io { op: message, source: std::io::Error::other("ip link") }),
    };
    let mut here = TapConfig { multi_queue: n > 1, netns: None, ..cfg.clone() };

    // The interface where it should be.
    match link_info(ns, ifname).map_err(netns_err)? {
        Some(l) if !l.ours() => {
            let what = match &l.alias {
                Some(a) => format!("alias {a:?}"),
                None => "no vswitchd alias".to_string(),
            };
            return Err(fail(OpenFailure::NotOurs(what)));
        }
        Some(l) if l.queues > 0 => {
            return Err(fail(OpenFailure::NotOurs(format!(
                "ours, but {} queue(s) held open by another process",
                l.queues
            ))));
        }
        Some(l) if l.is_tap && l.multi_queue == (n > 1) => {
            let attach = || (0..n).map(|_| TapPort::open(port, &here)).collect::<Result<Vec<_>, _>>();
            let queues = match ns {
                Some(ns) => in_netns(ns, attach).map_err(netns_err)??,
                None => attach()?,
            };
            tracing::info!(port, ifname, netns = ns.unwrap_or("-"), ifindex = l.ifindex, "tap re-adopted");
            return Ok((queues, Origin::Adopted));
        }
        Some(_) => {
            tracing::info!(port, ifname, "tap of ours with other queue flags: deleting it to create it again");
            ip(ns, &["link", "del", "dev", ifname]).map_err(netns_err)?;
        }
        None => {}
    }
    // A tap of ours left in our own namespace before it was moved.
    if ns.is_some() {
        match link_info(None, ifname)
            .map_err(|m| fail(OpenFailure::Io { op: m, source: std::io::Error::other("ip") }))?
        {
            Some(l) if !l.ours() || l.queues > 0 => {
                return Err(fail(OpenFailure::NotOurs("in vswitchd's own namespace".to_string())));
            }
            Some(_) => {
                let _ = ip(None, &["link", "del", "dev", ifname]);
            }
            None => {}
        }
    }

    // Create: every queue attached here (dropping them deletes the tap: not persistent yet), mark, move, up.
    let queues = (0..n).map(|_| TapPort::open(port, &here)).collect::<Result<Vec<_>, _>>()?;
    here.netns = cfg.netns.clone();
    let alias = alias_for(port);
    ip(None, &["link", "set", "dev", ifname, "alias", &alias])
        .map_err(|m| fail(OpenFailure::Io { op: m, source: std::io::Error::other("ip link set alias") }))?;
    if let Some(ns) = ns {
        ip(None, &["link", "set", "dev", ifname, "netns", ns]).map_err(netns_err)?;
        ip(Some(ns), &["link", "set", "dev", ifname, "up"]).map_err(netns_err)?;
    }
    Ok((queues, Origin::Created))
}

/// Makes the tap of `queues` persistent (it outlives the process); idempotent.
pub fn persist(queues: &[TapPort]) -> std::io::Result<()> {
    match queues.first() {
        Some(q) => q.set_persist(true),
        None => Ok(()),
    }
}

/// Clears the tap's persistent flag: it is deleted when its last queue is closed (dropped).
pub fn remove(queues: &[TapPort]) -> std::io::Result<()> {
    match queues.first() {
        Some(q) => q.set_persist(false),
        None => Ok(()),
    }
}

/// Deletes the tap `ifname` in `netns` if it is ours and no process holds it open (a port moved to another
/// namespace, its old tap left behind by the move); `Ok(false)` when there is nothing of ours to delete.
pub fn delete_ours(netns: Option<&str>, ifname: &str) -> Result<bool, String> {
    match link_info(netns, ifname)? {
        Some(l) if l.ours() && l.is_tap && l.queues == 0 => ip(netns, &["link", "del", "dev", ifname]).map(|_| true),
        _ => Ok(false),
    }
}

/// Sets the MTU of the tap `ifname` in `netns` in place (no recreation: index, MAC and addresses stay).
pub fn set_mtu(netns: Option<&str>, ifname: &str, mtu: u16) -> Result<(), String> {
    ip(netns, &["link", "set", "dev", ifname, "mtu", &mtu.to_string()]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_info_reads_ip_json_and_the_marker() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"ifindex":7,"ifname":"vs-c1","linkinfo":{"info_kind":"tun","info_data":{"type":"tap",
            "multi_queue":true,"numqueues":0,"persist":true}},"ifalias":"vswitchd port c1"}"#,
        )
        .unwrap();
        let l = LinkInfo::from_json(&v).unwrap();
        assert_eq!(
            l,
            LinkInfo { ifindex: 7, alias: Some(alias_for("c1")), is_tap: true, multi_queue: true, queues: 0 }
        );
        assert!(l.ours());
        let veth: serde_json::Value =
            serde_json::from_str(r#"{"ifindex":3,"linkinfo":{"info_kind":"veth"},"ifalias":"uplink"}"#).unwrap();
        let l = LinkInfo::from_json(&veth).unwrap();
        assert!(!l.ours() && !l.is_tap);
        let bare: serde_json::Value = serde_json::from_str(r#"{"ifindex":4}"#).unwrap();
        assert!(!LinkInfo::from_json(&bare).unwrap().ours());
    }
}
