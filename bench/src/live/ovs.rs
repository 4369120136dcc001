//! Open vSwitch's userspace datapath with AF_XDP ports, as a peer in the live benchmark: Debian's
//! `openvswitch-switch` binaries, started by the benchmark inside the forwarder's namespace with a private run
//! directory (its own database, sockets, pid and log files; nothing of a system OVS is read or touched), one
//! bridge `br0` with `datapath_type=netdev` (no kernel module), the two switch-side veths as `type=afxdp`
//! ports in the asked XDP mode, the PMD thread and the daemon pinned to the forwarder's core (like vswitchd).
//! The bridge's default flow is `NORMAL`: a MAC-learning switch, the same job as the Linux bridge and
//! vswitchd's L2 network.
//!
//! Stopped by PID (SIGTERM, then SIGKILL) when dropped; the run directory is removed with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The schema a new database is created from.
pub const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Whether OVS's binaries and schema are installed.
pub fn available() -> bool {
    Path::new(SCHEMA).exists()
        && ["ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl"]
            .iter()
            .all(|p| tools::lab::netns::run("sh", &["-c", &format!("command -v {p}")]).is_ok())
}

/// A private ovsdb-server and ovs-vswitchd.
#[derive(Debug)]
pub struct Ovs {
    dir: tempfile::TempDir,
    db: Option<Child>,
    vswitchd: Option<Child>,
}

impl Ovs {
    /// Starts OVS in namespace `ns` with `ports` (interfaces in `ns`) as AF_XDP ports of bridge `br0` in XDP
    /// mode `mode` (`native`, `generic`, `best-effort`), the PMD on core `cpu`.
    pub fn start(ns: &str, ports: &[&str], mode: &str, cpu: usize) -> anyhow::Result<Ovs> {
        let dir = tempfile::Builder::new().prefix("vsbench-ovs-").tempdir()?;
        let mut ovs = Ovs { dir, db: None, vswitchd: None };
        let d = ovs.dir.path().to_path_buf();
        let db = d.join("conf.db");
        let out = Command::new("ovsdb-tool").arg("create").arg(&db).arg(SCHEMA).output()?;
        anyhow::ensure!(out.status.success(), "ovsdb-tool create: {}", String::from_utf8_lossy(&out.stderr).trim());
        let sock = d.join("db.sock");
        ovs.db = Some(
            ovs.command(ns, None, "ovsdb-server")
                .arg(&db)
                .arg(format!("--remote=punix:{}", sock.display()))
                .arg(format!("--unixctl={}", d.join("ovsdb-server.ctl").display()))
                .arg(format!("--pidfile={}", d.join("ovsdb-server.pid").display()))
                .arg(format!("--log-file={}", d.join("ovsdb-server.log").display()))
                .arg("--no-chdir")
                .spawn()?,
        );
        wait_for(|| sock.exists(), "ovsdb-server's socket", &d)?;
        ovs.vsctl(&["--no-wait", "init"])?;
        ovs.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:pmd-cpu-mask={:#x}", 1u64 << cpu),
        ])?;
        ovs.vswitchd = Some(
            ovs.command(ns, Some(cpu), "ovs-vswitchd")
                .arg(format!("unix:{}", sock.display()))
                .arg(format!("--unixctl={}", d.join("ovs-vswitchd.ctl").display()))
                .arg(format!("--pidfile={}", d.join("ovs-vswitchd.pid").display()))
                .arg(format!("--log-file={}", d.join("ovs-vswitchd.log").display()))
                .arg("--no-chdir")
                .spawn()?,
        );
        ovs.vsctl(&["--timeout=20", "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"])?;
        for p in ports {
            ovs.vsctl(&[
                "--timeout=20",
                "add-port",
                "br0",
                p,
                "--",
                "set",
                "interface",
                p,
                "type=afxdp",
                &format!("options:xdp-mode={mode}"),
            ])?;
        }
        for p in ports {
            let out = ovs.vsctl(&["get", "interface", p, "error"]);
            if let Ok(e) = out {
                anyhow::ensure!(e.trim().is_empty() || e.trim() == "[]", "OVS port {p}: {}", e.trim());
            }
        }
        Ok(ovs)
    }

    fn command(&self, ns: &str, cpu: Option<usize>, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        if let Some(cpu) = cpu {
            // taskset execs the daemon: the child's PID stays the daemon's.
            c.arg("taskset").arg("-c").arg(cpu.to_string());
        }
        c.arg(program);
        let d = self.dir.path();
        c.env("OVS_RUNDIR", d).env("OVS_LOGDIR", d).env("OVS_DBDIR", d).env("OVS_SYSCONFDIR", d);
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        c
    }

    /// Runs `ovs-vsctl` against this database; returns its stdout.
    pub fn vsctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let sock = self.dir.path().join("db.sock");
        let out = Command::new("ovs-vsctl").arg(format!("--db=unix:{}", sock.display())).args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "ovs-vsctl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            log_tail(&self.dir.path().join("ovs-vswitchd.log"))
        );
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// The PMD's statistics (`ovs-appctl dpif-netdev/pmd-stats-show`).
    pub fn pmd_stats(&self) -> Option<String> {
        let ctl = self.dir.path().join("ovs-vswitchd.ctl");
        let out = Command::new("ovs-appctl")
            .arg(format!("--target={}", ctl.display()))
            .arg("dpif-netdev/pmd-stats-show")
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }
}

fn wait_for(mut cond: impl FnMut() -> bool, what: &str, dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out waiting for {what}{}",
            log_tail(&dir.join("ovsdb-server.log"))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn log_tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(6)..].join("\n  ");
    if tail.is_empty() {
        String::new()
    } else {
        format!("; {}:\n  {tail}", path.display())
    }
}

/// SIGTERM to the child, SIGKILL after 5 s; reaped.
fn terminate(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; `pid` is a child this process started and has not
        // reaped yet, so it cannot have been recycled.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Ovs {
    fn drop(&mut self) {
        if let Some(mut c) = self.vswitchd.take() {
            terminate(&mut c);
        }
        if let Some(mut c) = self.db.take() {
            terminate(&mut c);
        }
    }
}
