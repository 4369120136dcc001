//! The AF_XDP programs this vswitchd attached, remembered across a crash so that a restarted vswitchd replaces
//! its own stale program and never touches anyone else's.
//!
//! libxdp attaches its AF_XDP program (`xsk_def_prog`) when the first socket binds to an interface and detaches
//! it when the port is dropped, but only a program it attached itself: one left by a vswitchd killed with
//! `kill -9` is *reused* by the next open and then never detached (checked on this machine: the program id
//! stays attached after a clean stop of the restarted vswitchd). So vswitchd records, in
//! `STATE_DIR/xdp-programs.json` (written at once, atomically), the id of every program that was not attached
//! before it opened a port and is attached after: **ours**. Before opening an AF_XDP port, if the interface's
//! attached program has the id recorded for it, the program is ours and stale (the control socket guarantees one
//! vswitchd per state directory, and program ids are not reused while the system runs): it is detached (`ip
//! link set dev IF xdpgeneric off` and `xdpdrv off`) so that the new open attaches, and later detaches, a
//! program of its own. A program with another id is left alone (libxdp reuses or refuses it, as before).
//!
//! Threads: the daemon's opener (main or control thread); the interface is looked up in the calling thread's
//! namespace, like the AF_XDP port itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The XDP program attached to `ifname` (in this thread's namespace), if any, from `ip -j link show`.
pub fn attached_prog(ifname: &str) -> Option<u32> {
    let out = Command::new("ip").args(["-j", "link", "show", "dev", ifname]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    prog_of(&v[0])
}

/// The program id in one element of `ip -j link show`'s array.
pub fn prog_of(link: &serde_json::Value) -> Option<u32> {
    link["xdp"]["prog"]["id"].as_u64().and_then(|id| u32::try_from(id).ok())
}

/// The programs recorded as ours, by interface name, and the file that keeps them.
#[derive(Debug)]
pub struct XdpPrograms {
    path: PathBuf,
    ours: Mutex<BTreeMap<String, u32>>,
}

impl XdpPrograms {
    /// The record at `path` (empty if missing or unreadable).
    pub fn load(path: &Path) -> XdpPrograms {
        let ours = std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        XdpPrograms { path: path.to_path_buf(), ours: Mutex::new(ours) }
    }

    /// The file in state directory `dir`.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("xdp-programs.json")
    }

    /// Before opening an AF_XDP port on `ifname`: detaches the attached program if it is our stale one. Returns
    /// the program attached now (after that), to pass to [`XdpPrograms::after_open`].
    pub fn before_open(&self, ifname: &str) -> Option<u32> {
        let attached = attached_prog(ifname);
        let recorded = self.ours.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(ifname).copied();
        match attached {
            Some(id) if Some(id) == recorded => {
                for mode in ["xdpgeneric", "xdpdrv"] {
                    let _ = Command::new("ip").args(["link", "set", "dev", ifname, mode, "off"]).output();
                }
                let now = attached_prog(ifname);
                match now {
                    None => tracing::warn!(
                        ifname,
                        prog_id = id,
                        "replacing a stale XDP program of ours (left by a vswitchd that did not stop cleanly)"
                    ),
                    Some(_) => tracing::error!(ifname, prog_id = id, "cannot detach our stale XDP program"),
                }
                now
            }
            other => other,
        }
    }

    /// After opening an AF_XDP port on `ifname` (`before` from [`XdpPrograms::before_open`]): records the
    /// attached program as ours if this open attached it.
    pub fn after_open(&self, ifname: &str, before: Option<u32>) {
        let Some(now) = attached_prog(ifname) else { return };
        if before == Some(now) {
            return; // reused a program that was there: not ours
        }
        let mut ours = self.ours.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ours.insert(ifname.to_string(), now);
        if let Err(e) = write_atomically(&self.path, &serde_json::to_vec(&*ours).unwrap_or_default()) {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot record our XDP program");
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_program_id_and_keeps_the_record_in_a_file() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"ifname":"u","xdp":{"mode":2,"prog":{"id":3398,"name":"xsk_def_prog"}}}"#)
                .unwrap();
        assert_eq!(prog_of(&v), Some(3398));
        assert_eq!(prog_of(&serde_json::json!({"ifname": "u"})), None);
        let dir = tempfile::tempdir().unwrap();
        let path = XdpPrograms::path_in(dir.path());
        let r = XdpPrograms::load(&path);
        r.ours.lock().unwrap().insert("u".into(), 7);
        write_atomically(&path, &serde_json::to_vec(&*r.ours.lock().unwrap()).unwrap()).unwrap();
        assert_eq!(XdpPrograms::load(&path).ours.lock().unwrap().get("u"), Some(&7));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(XdpPrograms::load(&path).ours.lock().unwrap().is_empty(), "an unreadable record is empty");
    }
}
