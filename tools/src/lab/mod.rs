//! `vswitch-lab`: a switch and its hosts in network namespaces, for trying vswitchd by hand (`vswitch-lab
//! demo`) and for the live end-to-end tests.
//!
//! A **lab file** (TOML) names a switch configuration (a path relative to the lab file) and the hosts wired to its
//! ports:
//!
//! ```toml
//! switch = "switch.toml"
//!
//! [[host]]
//! name = "c1"                 # the host's namespace is PREFIX + name
//! port = "c1"                 # the switch port it is wired to
//! address = "172.30.0.2/24"   # its address on that link
//! gateway = "172.30.0.1"      # optional: its default route
//! external = false            # true: the "outside world" host behind a routed uplink (informational)
//! ```
//!
//! The wiring follows the port's `kind`: for `tap`, vswitchd creates the tap and moves it into the host's
//! namespace (the lab sets the port's `netns`); for `afpacket` and `afxdp`, the lab creates a veth pair whose
//! switch end (named the port's `ifname`) is in the switch's namespace and whose host end (`eth0`) is in the
//! host's. The host end keeps its default offloads for `afpacket` (the port carries super-frames and partial
//! checksums with a `virtio_net_hdr`); for `afxdp` they are turned off (AF_XDP in copy mode cannot see that a
//! frame's checksum is partial). [`LabOptions::offloads`] overrides both.
//!
//! # What a lab creates, and how it goes away
//!
//! Only namespaces named `PREFIX + "sw"` and `PREFIX + host` (the prefix defaults to `vsl-`; tests use one with
//! their PID), the veths inside them, and one vswitchd process, started inside the switch namespace with
//! `ip netns exec`. The root namespace gets no interface, address or route. A state file
//! (`STATE_DIR/PREFIX/state.json`, by default under `/run/vswitch-lab`) is written as soon as the first object
//! exists, so `vswitch-lab down` (or [`Lab::down_from_state`]) removes exactly what was created: the recorded
//! vswitchd PID (after checking it still is a vswitchd) gets SIGTERM, and the recorded namespaces are deleted by
//! name (their veths with them). A [`Lab`] value tears itself down when dropped unless [`Lab::detach`]ed.
//!
//! A lab file with `[[machine]]` is an **overlay lab** instead: several hosts, each with its own vswitchd,
//! `vswitch-agent` and etcd member, over an underlay bridge ([`overlay`]); its state file also records the
//! daemons' PIDs and etcd's data directory, which `down` stops and removes the same way.
//!
//! Needs root. Not for the forwarding path: everything here is set-up, run from the caller's thread.

pub mod demo;
pub mod netns;
pub mod overlay;
pub mod overlay_demo;
pub mod probe;

use serde::{Deserialize, Serialize};
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The default lab file, with its switch configuration ([`DEFAULT_SWITCH`]): two containers on one network over
/// taps, an external host behind a routed AF_PACKET uplink, masquerade and one published port.
pub const DEFAULT_LAB: &str = include_str!("../../../examples/lab/default.toml");
/// The switch configuration the default lab file names.
pub const DEFAULT_SWITCH: &str = include_str!("../../../examples/lab/switch.toml");

/// Where state directories go unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/run/vswitch-lab";

/// What can go wrong setting up, probing or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab needs root (it creates namespaces and interfaces).
    #[error("vswitch-lab needs root (it creates network namespaces, veths and taps); run it with sudo")]
    NotRoot,
    /// The lab file or the switch configuration it names is not usable.
    #[error("{0}")]
    Spec(String),
    /// A command failed.
    #[error("`{cmd}` failed: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its stderr, or why it could not run.
        detail: String,
    },
    /// Joining a namespace failed.
    #[error("namespace {ns}: {detail}")]
    Netns {
        /// The namespace.
        ns: String,
        /// What failed.
        detail: String,
    },
    /// vswitchd could not be started or stopped.
    #[error("vswitchd: {0}")]
    Switch(String),
    /// A probe (ping, TCP transfer) could not run.
    #[error("{0}")]
    Probe(String),
    /// A program the lab needs is missing.
    #[error("missing program: {0}")]
    Missing(String),
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io { path: path.to_path_buf(), source }
}

/// `[[host]]` of a lab file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Name (its namespace is the prefix plus this).
    pub name: String,
    /// The switch port it is wired to.
    pub port: String,
    /// Its address and prefix length on the link.
    pub address: ipnet::Ipv4Net,
    /// Its default route, if any.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The "outside" host behind a routed uplink.
    #[serde(default)]
    pub external: bool,
}

impl HostSpec {
    /// The host's address without the prefix length.
    pub fn ip(&self) -> Ipv4Addr {
        self.address.addr()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabFile {
    switch: PathBuf,
    #[serde(default, rename = "host")]
    hosts: Vec<HostSpec>,
}

/// How a port reaches the kernel, as far as the lab is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wiring {
    /// vswitchd creates a tap and moves it into the host's namespace.
    Tap,
    /// The lab creates a veth; vswitchd attaches to its switch end (afpacket, afxdp).
    Veth,
}

/// A switch port as the lab sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchPort {
    /// `port.name`.
    pub name: String,
    /// `port.kind`.
    pub kind: String,
    /// `port.ifname`.
    pub ifname: String,
    /// `port.host`: the host port, through which the switch namespace's own stack reaches the networks.
    pub host: bool,
    /// `port.address`: a routed port's address.
    pub address: Option<ipnet::Ipv4Net>,
}

impl SwitchPort {
    /// How the lab wires a host to this port.
    pub fn wiring(&self) -> Option<Wiring> {
        match self.kind.as_str() {
            "tap" => Some(Wiring::Tap),
            "afpacket" | "afxdp" => Some(Wiring::Veth),
            _ => None,
        }
    }
}

/// A lab: the switch configuration (TOML text) and the hosts.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// The switch configuration, as vswitchd reads it (the lab adds `netns` to tap ports it wires).
    pub switch_config: String,
    /// Where the switch configuration came from (for messages).
    pub switch_origin: String,
    /// The hosts, in file order.
    pub hosts: Vec<HostSpec>,
}

impl LabSpec {
    /// Reads a lab file and the switch configuration it names.
    pub fn load(path: &Path) -> Result<LabSpec, LabError> {
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let file: LabFile = toml::from_str(&text).map_err(|e| LabError::Spec(format!("{}: {e}", path.display())))?;
        let switch_path = path.parent().unwrap_or(Path::new(".")).join(&file.switch);
        let switch_config = fs::read_to_string(&switch_path).map_err(io_err(&switch_path))?;
        let spec = LabSpec { switch_config, switch_origin: switch_path.display().to_string(), hosts: file.hosts };
        spec.check()?;
        Ok(spec)
    }

    /// The embedded default lab ([`DEFAULT_LAB`], [`DEFAULT_SWITCH`]).
    pub fn default_lab() -> LabSpec {
        let file: LabFile = toml::from_str(DEFAULT_LAB).expect("the embedded lab file parses");
        let spec = LabSpec {
            switch_config: DEFAULT_SWITCH.to_string(),
            switch_origin: "examples/lab/switch.toml (embedded)".into(),
            hosts: file.hosts,
        };
        spec.check().expect("the embedded lab is valid");
        spec
    }

    /// A lab from a switch configuration and hosts given directly (tests).
    pub fn new(switch_config: &str, hosts: Vec<HostSpec>) -> Result<LabSpec, LabError> {
        let spec = LabSpec { switch_config: switch_config.to_string(), switch_origin: "inline".into(), hosts };
        spec.check()?;
        Ok(spec)
    }

    /// The switch's ports (name, kind, ifname) from the configuration.
    pub fn ports(&self) -> Result<Vec<SwitchPort>, LabError> {
        let value: toml::Table =
            toml::from_str(&self.switch_config).map_err(|e| LabError::Spec(format!("{}: {e}", self.switch_origin)))?;
        let mut ports = Vec::new();
        if let Some(list) = value.get("port").and_then(|p| p.as_array()) {
            for p in list {
                let get = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
                ports.push(SwitchPort {
                    name: get("name"),
                    kind: get("kind"),
                    ifname: get("ifname"),
                    host: p.get("host").and_then(|v| v.as_bool()) == Some(true),
                    address: get("address").parse().ok(),
                });
            }
        }
        Ok(ports)
    }

    /// The subnets the host stack reaches through a host port: those of the networks with a gateway that are
    /// not `internal`.
    pub fn host_port_routes(&self) -> Vec<ipnet::Ipv4Net> {
        let Ok(value) = toml::from_str::<toml::Table>(&self.switch_config) else { return Vec::new() };
        let networks = value.get("network").and_then(|n| n.as_array()).cloned().unwrap_or_default();
        networks
            .iter()
            .filter(|n| n.get("gateway").is_some() && n.get("internal").and_then(|i| i.as_bool()) != Some(true))
            .filter_map(|n| n.get("subnet").and_then(|s| s.as_str()).and_then(|s| s.parse().ok()))
            .collect()
    }

    /// Whether `host` is the switch namespace's own stack, wired to a host port (`host = true`).
    pub fn is_host_stack(&self, host: &HostSpec) -> bool {
        self.port_of(host).map(|p| p.host).unwrap_or(false)
    }

    /// The port host `host` is wired to.
    pub fn port_of(&self, host: &HostSpec) -> Result<SwitchPort, LabError> {
        self.ports()?.into_iter().find(|p| p.name == host.port).ok_or_else(|| {
            LabError::Spec(format!("host {}: port {:?} is not in {}", host.name, host.port, self.switch_origin))
        })
    }

    fn check(&self) -> Result<(), LabError> {
        let mut seen_hosts = std::collections::HashSet::new();
        let mut seen_ports = std::collections::HashSet::new();
        for h in &self.hosts {
            let ok_name = !h.name.is_empty()
                && h.name.len() <= 12
                && h.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && h.name != "sw";
            if !ok_name {
                return Err(LabError::Spec(format!(
                    "host {:?}: a name is 1..=12 characters of [A-Za-z0-9-], not \"sw\"",
                    h.name
                )));
            }
            if !seen_hosts.insert(h.name.clone()) {
                return Err(LabError::Spec(format!("host {}: defined twice", h.name)));
            }
            if !seen_ports.insert(h.port.clone()) {
                return Err(LabError::Spec(format!("host {}: port {} already has a host", h.name, h.port)));
            }
            let port = self.port_of(h)?;
            if port.wiring().is_none() {
                return Err(LabError::Spec(format!(
                    "host {}: port {} is of kind {:?}; a lab wires tap, afpacket and afxdp ports",
                    h.name, port.name, port.kind
                )));
            }
            if port.ifname.is_empty() {
                return Err(LabError::Spec(format!("host {}: port {} has no ifname", h.name, port.name)));
            }
            if port.host && (port.wiring() != Some(Wiring::Tap) || port.address.is_none()) {
                return Err(LabError::Spec(format!(
                    "host {}: host port {} must be a tap with an address (the lab leaves it in the switch's namespace)",
                    h.name, port.name
                )));
            }
        }
        Ok(())
    }

    /// The switch configuration with `netns` set on every tap port that has a host.
    fn switch_config_for(&self, prefix: &str) -> Result<String, LabError> {
        let mut value: toml::Table =
            toml::from_str(&self.switch_config).map_err(|e| LabError::Spec(format!("{}: {e}", self.switch_origin)))?;
        if let Some(list) = value.get_mut("port").and_then(|p| p.as_array_mut()) {
            for p in list.iter_mut() {
                let Some(t) = p.as_table_mut() else { continue };
                let name = t.get("name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
                // A host port's tap stays in vswitchd's namespace: that namespace's stack is "the host".
                let is_tap = t.get("kind").and_then(|v| v.as_str()) == Some("tap")
                    && t.get("host").and_then(|v| v.as_bool()) != Some(true);
                if let Some(h) = self.hosts.iter().find(|h| h.port == name) {
                    if is_tap {
                        t.insert("netns".into(), toml::Value::String(format!("{prefix}{}", h.name)));
                    }
                }
            }
        }
        toml::to_string(&value).map_err(|e| LabError::Spec(e.to_string()))
    }
}

/// How to run a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Prefix of every namespace name (default `vsl-`).
    pub prefix: String,
    /// The vswitchd executable.
    pub vswitchd: PathBuf,
    /// The vswitch-agent executable (overlay labs).
    pub agent: PathBuf,
    /// Parent of the lab's state directory.
    pub state_root: PathBuf,
    /// Checksum/segmentation offloads at the veth host ends: `Some(on)` for every veth, `None` (default) for
    /// each port kind's default (on for `afpacket`, off for `afxdp`).
    pub offloads: Option<bool>,
    /// Pin vswitchd to this CPU (`taskset -c`), e.g. away from a benchmark's sender.
    pub switch_cpu: Option<usize>,
    /// More arguments for `vswitchd run` (e.g. `--state-interval 0`).
    pub switch_args: Vec<String>,
}

impl LabOptions {
    /// Defaults: prefix `vsl-`, vswitchd found by [`default_vswitchd`], state under [`DEFAULT_STATE_DIR`].
    pub fn new() -> LabOptions {
        LabOptions {
            prefix: "vsl-".into(),
            vswitchd: default_vswitchd(),
            agent: default_binary("vswitch-agent"),
            state_root: PathBuf::from(DEFAULT_STATE_DIR),
            offloads: None,
            switch_cpu: None,
            switch_args: Vec::new(),
        }
    }
}

impl Default for LabOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// The vswitchd next to the running executable, or one directory up (an integration test runs from
/// `target/debug/deps/`, next to which `target/debug/vswitchd` is built), else `vswitchd` from `PATH`.
pub fn default_vswitchd() -> PathBuf {
    default_binary("vswitchd")
}

/// Program `name` next to the running executable or one directory up, else `name` (from `PATH`).
pub fn default_binary(name: &str) -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent();
        for _ in 0..2 {
            let Some(d) = dir else { break };
            let candidate = d.join(name);
            if candidate.is_file() {
                return candidate;
            }
            dir = d.parent();
        }
    }
    PathBuf::from(name)
}

/// Whether the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// What `down` needs to undo a lab: written to `STATE_DIR/PREFIX/state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabState {
    /// The namespace prefix.
    pub prefix: String,
    /// Namespaces created, in creation order.
    pub namespaces: Vec<String>,
    /// vswitchd's PID, once started.
    pub pid: Option<u32>,
    /// Where vswitchd writes its counters on exit.
    pub stats_json: PathBuf,
    /// vswitchd's stdout and stderr.
    pub log: PathBuf,
    /// The hosts (for `status`).
    pub hosts: Vec<HostSpec>,
    /// Hosts that are the switch namespace's own stack, wired to a host port (no namespace of their own).
    #[serde(default)]
    pub host_stack: Vec<String>,
    /// Other daemons started (overlay labs: etcd members, vswitchds, agents), in start order.
    #[serde(default)]
    pub processes: Vec<ProcRecord>,
    /// Directories created outside the state directory (etcd's data), removed at the end.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
}

/// A daemon a lab started: stopped by its PID, after checking `/proc/PID/comm` still names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    /// Its PID.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`): `etcd`, `vswitchd`, `vswitch-agent`.
    pub comm: String,
    /// What it is, for messages (`etcd h1`).
    pub what: String,
}

/// Whether process `pid` still runs the program `comm` (guards against a recycled PID).
pub fn runs(pid: u32, comm: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim() == comm).unwrap_or(false)
}

/// Stops `procs` together: SIGTERM to each, up to 5 s for all, then SIGKILL to what is left. A process whose
/// [`Child`] is in `children` is reaped through it (and removed from the map); the others are signalled only
/// while `/proc/PID/comm` still names them.
pub(crate) fn terminate_all(procs: &[ProcRecord], children: &mut std::collections::HashMap<u32, Child>) {
    let gone = |p: &ProcRecord, children: &mut std::collections::HashMap<u32, Child>| match children.get_mut(&p.pid) {
        Some(c) => matches!(c.try_wait(), Ok(Some(_)) | Err(_)),
        None => !runs(p.pid, &p.comm),
    };
    let signal = |p: &ProcRecord, sig: libc::c_int| {
        let Ok(pid) = libc::pid_t::try_from(p.pid) else { return };
        // SAFETY: kill has no memory-safety preconditions; `pid` is a daemon this lab started, checked just before.
        unsafe { libc::kill(pid, sig) };
    };
    for p in procs {
        if !gone(p, children) {
            signal(p, libc::SIGTERM);
        }
    }
    for (limit, sig) in [(Duration::from_secs(5), Some(libc::SIGKILL)), (Duration::from_secs(2), None)] {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !procs.iter().all(|p| gone(p, children)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(sig) = sig {
            for p in procs {
                if !gone(p, children) {
                    signal(p, sig);
                }
            }
        }
    }
    for p in procs {
        if let Some(mut c) = children.remove(&p.pid) {
            let _ = c.wait();
        }
    }
}

/// Stops every recorded daemon (agents first: they revoke their leases; then vswitchds, then etcd, then the
/// rest), deletes the recorded namespaces and directories, and on success the state directory `dir`.
pub(crate) fn remove_all(state: &mut LabState, dir: &Path) -> Result<(), LabError> {
    let mut children = std::collections::HashMap::new();
    for comm in ["vswitch-agent", "vswitchd", "etcd", ""] {
        let (now, later): (Vec<ProcRecord>, Vec<ProcRecord>) =
            std::mem::take(&mut state.processes).into_iter().partition(|p| comm.is_empty() || p.comm == comm);
        state.processes = later;
        terminate_all(&now, &mut children);
    }
    let mut first_err = None;
    while let Some(ns) = state.namespaces.pop() {
        if netns::exists(&ns) {
            if let Err(e) = netns::delete(&ns) {
                first_err.get_or_insert(e);
            }
        }
    }
    while let Some(d) = state.dirs.pop() {
        if d.exists() {
            if let Err(e) = fs::remove_dir_all(&d) {
                first_err.get_or_insert(LabError::Io { path: d.clone(), source: e });
            }
        }
    }
    if first_err.is_none() {
        let _ = fs::remove_dir_all(dir);
    } else {
        let text = serde_json::to_string_pretty(&*state).expect("plain data");
        let _ = fs::write(dir.join("state.json"), text);
    }
    first_err.map_or(Ok(()), Err)
}

/// Checks a namespace prefix: 1..=16 of `[A-Za-z0-9-]`.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), LabError> {
    if prefix.is_empty() || prefix.len() > 16 || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(LabError::Spec(format!("prefix {prefix:?}: 1..=16 characters of [A-Za-z0-9-]")));
    }
    Ok(())
}

/// A running lab. Dropping it tears it down (stops vswitchd, deletes the namespaces) unless detached.
#[derive(Debug)]
pub struct Lab {
    state: LabState,
    dir: PathBuf,
    child: Option<Child>,
    detached: bool,
}

impl Lab {
    /// The state directory of labs with `prefix`.
    pub fn state_dir(opts: &LabOptions) -> PathBuf {
        opts.state_root.join(opts.prefix.trim_end_matches('-'))
    }

    /// Builds the lab: namespaces, veths, vswitchd (in `PREFIX sw`), host addresses and routes. On failure,
    /// everything created so far is removed.
    pub fn up(spec: &LabSpec, opts: &LabOptions) -> Result<Lab, LabError> {
        if !is_root() {
            return Err(LabError::NotRoot);
        }
        let prefix = opts.prefix.clone();
        check_prefix(&prefix)?;
        let dir = Self::state_dir(opts);
        if dir.join("state.json").exists() {
            return Err(LabError::Spec(format!(
                "a lab with prefix {prefix:?} is already up (state in {}); run `vswitch-lab down --prefix {prefix}`",
                dir.display()
            )));
        }
        let config = spec.switch_config_for(&prefix)?;
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut lab = Lab {
            state: LabState {
                prefix: prefix.clone(),
                stats_json: dir.join("stats.json"),
                log: dir.join("vswitchd.log"),
                hosts: spec.hosts.clone(),
                host_stack: spec.hosts.iter().filter(|h| spec.is_host_stack(h)).map(|h| h.name.clone()).collect(),
                ..LabState::default()
            },
            dir,
            child: None,
            detached: false,
        };
        let _ = fs::remove_file(&lab.state.stats_json);
        lab.build(spec, opts, &config)?;
        Ok(lab)
    }

    fn build(&mut self, spec: &LabSpec, opts: &LabOptions, config: &str) -> Result<(), LabError> {
        let sw = self.switch_ns();
        let own = spec.hosts.iter().filter(|h| !spec.is_host_stack(h)).map(|h| self.host_ns(&h.name));
        let names: Vec<String> = std::iter::once(sw.clone()).chain(own).collect();
        for ns in names {
            if netns::exists(&ns) {
                return Err(LabError::Spec(format!("namespace {ns} already exists; not touching it")));
            }
            netns::create(&ns)?;
            self.state.namespaces.push(ns);
            self.save()?;
        }
        // Veths first: afpacket/afxdp ports attach to an interface that must exist when vswitchd starts.
        for h in &spec.hosts {
            let port = spec.port_of(h)?;
            if port.wiring() == Some(Wiring::Veth) {
                let host_ns = self.host_ns(&h.name);
                netns::veth(&sw, &port.ifname, &host_ns, "eth0")?;
                let on = opts.offloads.unwrap_or(port.kind != "afxdp");
                if !on {
                    netns::offloads(&host_ns, "eth0", false)?;
                }
            }
        }
        let config_path = self.dir.join("switch.toml");
        fs::write(&config_path, config).map_err(io_err(&config_path))?;
        self.start_switch(&opts.vswitchd, &config_path, opts.switch_cpu, &opts.switch_args)?;
        for h in &spec.hosts {
            let port = spec.port_of(h)?;
            let host_ns = self.host_ns(&h.name);
            let ifname = match port.wiring() {
                Some(Wiring::Tap) => port.ifname.clone(),
                _ => "eth0".to_string(),
            };
            if !netns::wait_for_link(&host_ns, &ifname, Duration::from_secs(10)) {
                return Err(LabError::Switch(format!(
                    "tap {ifname} of port {} did not appear in {host_ns} within 10 s{}",
                    port.name,
                    self.log_tail()
                )));
            }
            let addr = h.address.to_string();
            netns::ip(&["-n", &host_ns, "addr", "add", &addr, "dev", &ifname])?;
            netns::ip(&["-n", &host_ns, "link", "set", &ifname, "up"])?;
            if let Some(gw) = h.gateway {
                netns::ip(&["-n", &host_ns, "route", "add", "default", "via", &gw.to_string()])?;
            }
            if let (true, Some(via)) = (port.host, port.address) {
                // As Docker's connected route on docker0: the networks' subnets via the switch's address.
                for subnet in spec.host_port_routes() {
                    let (subnet, via) = (subnet.to_string(), via.addr().to_string());
                    netns::ip(&["-n", &host_ns, "route", "add", &subnet, "via", &via, "dev", &ifname])?;
                }
            }
        }
        // A switch that failed after opening its ports (say, an AF_XDP bind) exits shortly after.
        std::thread::sleep(Duration::from_millis(300));
        self.check_switch_alive()
    }

    fn start_switch(
        &mut self,
        vswitchd: &Path,
        config: &Path,
        cpu: Option<usize>,
        args: &[String],
    ) -> Result<(), LabError> {
        let log = fs::File::create(&self.state.log).map_err(io_err(&self.state.log))?;
        let log2 = log.try_clone().map_err(io_err(&self.state.log))?;
        let mut cmd = Command::new("ip");
        cmd.arg("netns").arg("exec").arg(self.switch_ns());
        if let Some(cpu) = cpu {
            // taskset execs vswitchd too, so the PID stays vswitchd's.
            cmd.arg("taskset").arg("-c").arg(cpu.to_string());
        }
        let child = cmd
            .arg(vswitchd)
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--stats-json")
            .arg(&self.state.stats_json)
            // A control socket of the lab's own: the default one is machine-wide.
            .arg("--socket")
            .arg(self.state.log.with_file_name("vswitchd.sock"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| LabError::Switch(format!("starting {}: {e}", vswitchd.display())))?;
        // `ip netns exec` joins the namespace and execs vswitchd (via taskset): the child's PID is vswitchd's.
        self.state.pid = Some(child.id());
        self.child = Some(child);
        self.save()?;
        std::thread::sleep(Duration::from_millis(100));
        self.check_switch_alive()
    }

    fn check_switch_alive(&mut self) -> Result<(), LabError> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                self.state.pid = None;
                let _ = self.save();
                return Err(LabError::Switch(format!("exited at start ({status}){}", self.log_tail())));
            }
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.state.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n  ");
        if tail.is_empty() {
            String::new()
        } else {
            format!("; its log ({}):\n  {tail}", self.state.log.display())
        }
    }

    fn save(&self) -> Result<(), LabError> {
        let path = self.dir.join("state.json");
        let text = serde_json::to_string_pretty(&self.state).expect("plain data");
        fs::write(&path, text).map_err(io_err(&path))
    }

    /// The switch's namespace.
    pub fn switch_ns(&self) -> String {
        format!("{}sw", self.state.prefix)
    }

    /// The namespace of host `name` (the switch's own for a host on a host port).
    pub fn host_ns(&self, name: &str) -> String {
        if self.state.host_stack.iter().any(|h| h == name) {
            return self.switch_ns();
        }
        format!("{}{name}", self.state.prefix)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &HostSpec {
        self.state.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// vswitchd's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.state.pid
    }

    /// The state recorded for `down`.
    pub fn state(&self) -> &LabState {
        &self.state
    }

    /// Stops vswitchd (SIGTERM, then SIGKILL after 5 s) and returns the counters it wrote on exit, if any.
    pub fn stop_switch(&mut self) -> Result<Option<serde_json::Value>, LabError> {
        if let Some(mut child) = self.child.take() {
            terminate(child.id(), || matches!(child.try_wait(), Ok(Some(_))));
            let _ = child.wait();
        } else if let Some(pid) = self.state.pid {
            if is_vswitchd(pid) {
                terminate(pid, || !Path::new(&format!("/proc/{pid}")).exists() || !is_vswitchd(pid));
            }
        }
        self.state.pid = None;
        self.save()?;
        read_stats(&self.state.stats_json)
    }

    /// Stops vswitchd and deletes the namespaces; returns vswitchd's final counters, if it wrote any.
    pub fn down(mut self) -> Result<Option<serde_json::Value>, LabError> {
        let stats = self.stop_switch();
        let deleted = self.delete_all();
        self.detached = true;
        let stats = stats?;
        deleted?;
        Ok(stats)
    }

    fn delete_all(&mut self) -> Result<(), LabError> {
        remove_all(&mut self.state, &self.dir)
    }

    /// Leaves the lab running after this value is gone; `vswitch-lab down` (or [`Lab::down_from_state`]) with
    /// the same prefix removes it later.
    pub fn detach(mut self) {
        self.detached = true;
        self.child = None;
    }

    /// Tears down the lab with `opts.prefix` from its state file: what `vswitch-lab down` does.
    pub fn down_from_state(opts: &LabOptions) -> Result<Option<serde_json::Value>, LabError> {
        if !is_root() {
            return Err(LabError::NotRoot);
        }
        let dir = Self::state_dir(opts);
        let path = dir.join("state.json");
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let state: LabState = serde_json::from_str(&text)
            .map_err(|e| LabError::Spec(format!("{}: not a lab state file: {e}", path.display())))?;
        Lab { state, dir, child: None, detached: false }.down()
    }

    /// The state of the lab with `opts.prefix`, if one is up.
    pub fn load_state(opts: &LabOptions) -> Option<LabState> {
        let text = fs::read_to_string(Self::state_dir(opts).join("state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.detached {
            let _ = self.stop_switch();
            let _ = self.delete_all();
        }
    }
}

/// Whether process `pid` is a vswitchd (guards against a recycled PID).
pub fn is_vswitchd(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim() == "vswitchd").unwrap_or(false)
}

/// Sends SIGTERM to `pid`, waits up to 5 s for `gone()`, then SIGKILL.
fn terminate(pid: u32, mut gone: impl FnMut() -> bool) {
    let Ok(pid_t) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill has no memory-safety preconditions; `pid` is the vswitchd this lab started.
    unsafe { libc::kill(pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if gone() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid_t, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !gone() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_stats(path: &Path) -> Result<Option<serde_json::Value>, LabError> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LabError::Switch(format!("{}: not JSON: {e}", path.display()))),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, port: &str) -> HostSpec {
        HostSpec {
            name: name.into(),
            port: port.into(),
            address: "10.0.0.2/24".parse().unwrap(),
            gateway: None,
            external: false,
        }
    }

    const SWITCH: &str = "[[network]]\nname = \"n\"\n\n[[port]]\nname = \"a\"\nkind = \"tap\"\nifname = \"vs-a\"\n\
                          network = \"n\"\n\n[[port]]\nname = \"b\"\nkind = \"afpacket\"\nifname = \"vs-b\"\n\
                          network = \"n\"\n\n[[port]]\nname = \"p\"\nkind = \"pcap\"\nnetwork = \"n\"\n";

    #[test]
    fn the_default_lab_wires_taps_and_a_veth_uplink() {
        let spec = LabSpec::default_lab();
        let wiring: Vec<_> = spec.hosts.iter().map(|h| spec.port_of(h).unwrap().wiring().unwrap()).collect();
        assert_eq!(wiring, [Wiring::Tap, Wiring::Tap, Wiring::Veth, Wiring::Tap]);
        assert_eq!(spec.hosts.iter().filter(|h| spec.is_host_stack(h)).count(), 1, "the host port's host");
        assert!(spec.hosts.iter().any(|h| h.external));
        // The configuration vswitchd gets is valid for vswitchd itself.
        let cfg = spec.switch_config_for("vsl-").unwrap();
        dataplane::config::Config::parse(&cfg, "lab").expect("vswitchd accepts the lab's configuration");
    }

    #[test]
    fn tap_ports_with_a_host_get_the_hosts_namespace() {
        let spec = LabSpec::new(SWITCH, vec![host("x", "a"), host("y", "b")]).unwrap();
        let t: toml::Table = toml::from_str(&spec.switch_config_for("pre-").unwrap()).unwrap();
        let ports = t["port"].as_array().unwrap();
        assert_eq!(ports[0].get("netns").and_then(|v| v.as_str()), Some("pre-x"));
        assert_eq!(ports[1].get("netns"), None, "a veth port is attached in the switch's namespace");
    }

    #[test]
    fn bad_labs_are_refused_with_the_reason() {
        let err = |hosts: Vec<HostSpec>| LabSpec::new(SWITCH, hosts).unwrap_err().to_string();
        assert!(err(vec![host("x", "zz")]).contains("port \"zz\" is not in"));
        assert!(err(vec![host("x", "a"), host("x", "b")]).contains("defined twice"));
        assert!(err(vec![host("x", "a"), host("y", "a")]).contains("already has a host"));
        assert!(err(vec![host("x", "p")]).contains("a lab wires tap, afpacket and afxdp ports"));
        assert!(err(vec![host("sw", "a")]).contains("not \"sw\""));
    }

    #[test]
    fn a_lab_file_names_its_switch_relative_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.toml"), SWITCH).unwrap();
        let lab = "switch = \"s.toml\"\n\n[[host]]\nname = \"x\"\nport = \"a\"\naddress = \"10.0.0.2/24\"\n";
        std::fs::write(dir.path().join("lab.toml"), lab).unwrap();
        let spec = LabSpec::load(&dir.path().join("lab.toml")).unwrap();
        assert_eq!(spec.hosts, vec![host("x", "a")]);
        std::fs::write(dir.path().join("bad.toml"), "switch = \"s.toml\"\nhots = []\n").unwrap();
        let e = LabSpec::load(&dir.path().join("bad.toml")).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("hots"), "{e}");
    }
}
