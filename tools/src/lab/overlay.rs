//! The overlay lab: several hosts, each with its own vswitchd, `vswitch-agent` and etcd member, joined by an
//! underlay bridge, with containers on overlay networks and an outside host behind the underlay's router — the
//! multi-host setup of the README in namespaces (`examples/lab/overlay.toml`).
//!
//! An **overlay lab file** has `[underlay]`, `[outside]`, `[etcd]` and one `[[machine]]` per host:
//!
//! ```toml
//! [underlay]
//! router = "198.51.100.1/24"    # the underlay namespace's address on the underlay bridge
//! mtu = 1500                    # the underlay links' MTU
//! management = "10.99.0.0/24"   # the management bridge's subnet (etcd, agents)
//!
//! [outside]
//! name = "ext"
//! address = "203.0.113.10/24"
//! router = "203.0.113.1/24"     # the underlay router's address on the outside link
//!
//! [etcd]
//! heartbeat_ms = 100
//! election_ms = 1000
//!
//! [[machine]]
//! name = "h1"
//! agent = "overlay/h1.toml"     # the agent's file (relative to the lab file): the configuration language + [cluster]
//! management = "10.99.0.11/24"
//! late = false                  # true: started only after the others forward (a host joining)
//!
//! [[machine.container]]
//! name = "c1"
//! port = "c1"                   # a tap port of the agent's file with endpoint_mac and endpoint_ip
//! ```
//!
//! # What it builds, by exact name
//! Namespaces `PREFIX u` (the underlay: bridges `br-under` with the router's address and `br-mgmt`, and the
//! outside link; IP forwarding on), `PREFIX machine` per host, `PREFIX container` per container and
//! `PREFIX outside`. Per host: a veth from the vtep port's `ifname` (the host's end, driven by vswitchd) to
//! `u-MACHINE` on `br-under`; a veth `mgmt0` (the management address) to `m-MACHINE` on `br-mgmt`; an etcd member
//! on the management address (ports 2379/2380, data under `/dev/shm/vswitch-lab-PREFIX/`), vswitchd (started
//! empty) and the agent, all three inside the host's namespace. vswitchd creates the containers' taps and moves
//! them into the containers' namespaces (the lab sets the ports' `netns`); the lab gives each the port's
//! `endpoint_mac`, `endpoint_ip` (with the network's prefix length), the overlay MTU (underlay MTU − 50) and a
//! default route via the network's gateway. The root namespace gets nothing.
//!
//! Every PID, namespace and directory is recorded in the lab's state file as soon as it exists
//! ([`super::LabState`]), so [`super::Lab::down_from_state`] (`vswitch-lab down`) and dropping an
//! [`OverlayLab`] remove exactly them, agents first (they revoke their leases), then the vswitchds, then etcd.
//! Needs root, `etcd` and `etcdctl` (Debian's `etcd-server`, `etcd-client`). Set-up code, run from the caller's
//! thread.

use super::{io_err, netns, LabError, LabOptions, LabState, ProcRecord};
use dataplane::config::{Config, PortKind};
use serde::Deserialize;
use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where etcd is installed (Debian's `etcd-server`).
pub const ETCD: &str = "/usr/bin/etcd";
/// The underlay namespace's suffix.
const UNDERLAY_NS: &str = "u";
/// The underlay bridge (in the underlay namespace).
const UNDER_BRIDGE: &str = "br-under";
/// The management bridge (in the underlay namespace).
const MGMT_BRIDGE: &str = "br-mgmt";
/// A host's management interface.
const MGMT_IF: &str = "mgmt0";
/// How long the lab waits for a daemon, a tap or etcd.
const WAIT: Duration = Duration::from_secs(20);

/// `[underlay]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnderlaySpec {
    /// The underlay namespace's address on the underlay bridge (the hosts' default route toward the outside).
    pub router: ipnet::Ipv4Net,
    /// The MTU of the underlay links.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// The management bridge's subnet.
    pub management: ipnet::Ipv4Net,
}

fn default_mtu() -> u16 {
    1500
}

/// `[outside]`: the outside host behind the underlay's router.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutsideSpec {
    /// Its name (namespace PREFIX + name).
    pub name: String,
    /// Its address.
    pub address: ipnet::Ipv4Net,
    /// The router's address on the outside link (the outside's default route).
    pub router: ipnet::Ipv4Net,
}

/// `[etcd]`: raft timings of the lab's members.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSpec {
    /// `--heartbeat-interval`, ms.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u32,
    /// `--election-timeout`, ms.
    #[serde(default = "default_election")]
    pub election_ms: u32,
}

fn default_heartbeat() -> u32 {
    100
}

fn default_election() -> u32 {
    1000
}

impl Default for EtcdSpec {
    fn default() -> Self {
        EtcdSpec { heartbeat_ms: default_heartbeat(), election_ms: default_election() }
    }
}

/// `[[machine.container]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerFile {
    name: String,
    port: String,
}

/// `[[machine]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MachineFile {
    name: String,
    agent: PathBuf,
    management: ipnet::Ipv4Net,
    #[serde(default)]
    late: bool,
    #[serde(default, rename = "container")]
    containers: Vec<ContainerFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverlayFile {
    underlay: UnderlaySpec,
    outside: OutsideSpec,
    #[serde(default)]
    etcd: EtcdSpec,
    #[serde(rename = "machine")]
    machines: Vec<MachineFile>,
}

/// A container: a namespace holding one tap of its host's vswitchd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Name (namespace PREFIX + name).
    pub name: String,
    /// The host's port (a tap on an overlay network).
    pub port: String,
    /// The tap's name.
    pub ifname: String,
    /// The port's `endpoint_mac`.
    pub mac: String,
    /// `endpoint_ip` with the network's prefix length.
    pub address: ipnet::Ipv4Net,
    /// The network's gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The network.
    pub network: String,
}

impl ContainerSpec {
    /// Its address.
    pub fn ip(&self) -> Ipv4Addr {
        self.address.addr()
    }
}

/// A published port of a host: `(host's address):external_port` → `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The published address (the routed port's).
    pub address: Ipv4Addr,
    /// The published port.
    pub external_port: u16,
    /// Where it goes.
    pub to: std::net::SocketAddrV4,
}

/// A host of the overlay lab.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    /// Name (namespace PREFIX + name; the agent's `cluster.host` must match).
    pub name: String,
    /// The agent's file as written.
    pub agent_config: String,
    /// Where it came from.
    pub agent_origin: String,
    /// The management address.
    pub management: ipnet::Ipv4Net,
    /// Started after the others forward.
    pub late: bool,
    /// The vtep port's interface (the host's end of its underlay veth).
    pub underlay_if: String,
    /// The VTEP address with its prefix length.
    pub vtep: ipnet::Ipv4Net,
    /// Its containers.
    pub containers: Vec<ContainerSpec>,
    /// Its published ports.
    pub published: Vec<Published>,
    /// Its masquerading networks' subnets.
    pub masquerading: Vec<ipnet::Ipv4Net>,
}

/// An overlay lab as read from its file (see the module documentation).
#[derive(Debug, Clone)]
pub struct OverlaySpec {
    /// `[underlay]`.
    pub underlay: UnderlaySpec,
    /// `[outside]`.
    pub outside: OutsideSpec,
    /// `[etcd]`.
    pub etcd: EtcdSpec,
    /// The hosts, in file order.
    pub machines: Vec<MachineSpec>,
}

fn ok_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 12 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl OverlaySpec {
    /// Whether a lab file's text is an overlay lab (it has `[[machine]]`).
    pub fn is_overlay(text: &str) -> bool {
        toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key("machine"))
    }

    /// Reads an overlay lab file and the agents' files it names.
    pub fn load(path: &Path) -> Result<OverlaySpec, LabError> {
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::parse(&text, &path.display().to_string(), |agent| {
            let p = base.join(agent);
            fs::read_to_string(&p).map(|t| (t, p.display().to_string())).map_err(io_err(&p))
        })
    }

    /// Parses an overlay lab file; `read_agent` returns an agent file's text and origin.
    pub fn parse(
        text: &str,
        origin: &str,
        mut read_agent: impl FnMut(&Path) -> Result<(String, String), LabError>,
    ) -> Result<OverlaySpec, LabError> {
        let file: OverlayFile = toml::from_str(text).map_err(|e| LabError::Spec(format!("{origin}: {e}")))?;
        let spec_err = |what: String| LabError::Spec(format!("{origin}: {what}"));
        if !ok_name(&file.outside.name) || file.outside.name == UNDERLAY_NS {
            return Err(spec_err(format!("outside.name {:?}: 1..=12 of [A-Za-z0-9-], not \"u\"", file.outside.name)));
        }
        if file.underlay.management.contains(&file.underlay.router.addr()) {
            return Err(spec_err("underlay.router must not be on the management subnet".into()));
        }
        let mut names = vec![UNDERLAY_NS.to_string(), file.outside.name.clone()];
        let mut machines = Vec::new();
        for m in &file.machines {
            let (agent_config, agent_origin) = read_agent(&m.agent)?;
            let machine = Self::machine(m, agent_config, agent_origin, &file.underlay)?;
            for n in std::iter::once(&machine.name).chain(machine.containers.iter().map(|c| &c.name)) {
                if !ok_name(n) {
                    return Err(spec_err(format!("{n:?}: a machine or container name is 1..=12 of [A-Za-z0-9-]")));
                }
                if names.contains(n) {
                    return Err(spec_err(format!("{n:?}: the name is used twice (namespaces share one prefix)")));
                }
                names.push(n.clone());
            }
            machines.push(machine);
        }
        if machines.is_empty() {
            return Err(spec_err("at least one [[machine]]".into()));
        }
        if machines.iter().all(|m| m.late) {
            return Err(spec_err("at least one machine must not be late".into()));
        }
        Ok(OverlaySpec { underlay: file.underlay, outside: file.outside, etcd: file.etcd, machines })
    }

    fn machine(
        m: &MachineFile,
        agent_config: String,
        agent_origin: String,
        underlay: &UnderlaySpec,
    ) -> Result<MachineSpec, LabError> {
        let err = |what: String| LabError::Spec(format!("machine {}: {what}", m.name));
        let cfg = Config::parse(&agent_config, &agent_origin).map_err(|e| err(e.to_string()))?;
        let cluster = cfg.cluster.as_ref().ok_or_else(|| err(format!("{agent_origin} has no [cluster]")))?;
        if cluster.host != m.name {
            return Err(err(format!("{agent_origin}: cluster.host is {:?}, not the machine's name", cluster.host)));
        }
        if !underlay.management.contains(&m.management.addr()) {
            return Err(err(format!("management {} is outside underlay.management", m.management)));
        }
        let vtep_port = cfg
            .ports
            .iter()
            .find(|p| p.name == cluster.vtep_port)
            .ok_or_else(|| err(format!("no port {:?} (cluster.vtep_port)", cluster.vtep_port)))?;
        if !matches!(vtep_port.kind, PortKind::Afpacket | PortKind::Afxdp) {
            return Err(err(format!(
                "the vtep port {} must be afpacket or afxdp (the lab wires a veth)",
                vtep_port.name
            )));
        }
        let (Some(underlay_if), Some(vtep)) = (vtep_port.ifname.clone(), vtep_port.address) else {
            return Err(err(format!("the vtep port {} needs ifname and address", vtep_port.name)));
        };
        if !underlay.router.contains(&vtep.addr()) {
            return Err(err(format!("the VTEP {vtep} is not on the underlay router's subnet {}", underlay.router)));
        }
        let mut containers = Vec::new();
        for c in &m.containers {
            let cerr = |what: &str| err(format!("container {}: port {:?} {what}", c.name, c.port));
            let p = cfg.ports.iter().find(|p| p.name == c.port).ok_or_else(|| cerr("is not in the agent's file"))?;
            if p.kind != PortKind::Tap {
                return Err(cerr("is not a tap"));
            }
            let (Some(mac), Some(ip), Some(net)) = (p.endpoint_mac, p.endpoint_ip, p.network.as_ref()) else {
                return Err(cerr("needs network, endpoint_mac and endpoint_ip"));
            };
            let n = cfg.networks.iter().find(|n| &n.name == net).ok_or_else(|| cerr("names an unknown network"))?;
            let prefix = n.subnet.map_or(24, |s| s.prefix_len());
            containers.push(ContainerSpec {
                name: c.name.clone(),
                port: c.port.clone(),
                ifname: p.ifname.clone().unwrap_or_default(),
                mac: mac.to_string(),
                address: ipnet::Ipv4Net::new(ip, prefix).map_err(|e| cerr(&e.to_string()))?,
                gateway: n.gateway,
                network: net.clone(),
            });
        }
        let published = cfg
            .publish
            .iter()
            .filter_map(|p| {
                let port = cfg.ports.iter().find(|x| x.name == p.port)?;
                Some(Published { address: port.address?.addr(), external_port: p.external_port, to: p.to })
            })
            .collect();
        let masquerading = cfg.networks.iter().filter(|n| n.masquerade).filter_map(|n| n.subnet).collect();
        Ok(MachineSpec {
            name: m.name.clone(),
            agent_config,
            agent_origin,
            management: m.management,
            late: m.late,
            underlay_if,
            vtep,
            containers,
            published,
            masquerading,
        })
    }

    /// The machine called `name`.
    pub fn machine_named(&self, name: &str) -> Option<&MachineSpec> {
        self.machines.iter().find(|m| m.name == name)
    }

    /// The overlay MTU the containers get.
    pub fn overlay_mtu(&self) -> u16 {
        self.underlay.mtu.saturating_sub(50)
    }

    /// `--initial-cluster` of the lab's etcd: one member per machine.
    fn initial_cluster(&self) -> String {
        self.machines
            .iter()
            .map(|m| format!("{}=http://{}:2380", m.name, m.management.addr()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The agent's file with `netns` set on the containers' tap ports.
fn agent_config_for(m: &MachineSpec, prefix: &str) -> Result<String, LabError> {
    let mut value: toml::Table =
        toml::from_str(&m.agent_config).map_err(|e| LabError::Spec(format!("{}: {e}", m.agent_origin)))?;
    if let Some(list) = value.get_mut("port").and_then(|p| p.as_array_mut()) {
        for p in list.iter_mut() {
            let Some(t) = p.as_table_mut() else { continue };
            let name = t.get("name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
            if let Some(c) = m.containers.iter().find(|c| c.port == name) {
                t.insert("netns".into(), toml::Value::String(format!("{prefix}{}", c.name)));
            }
        }
    }
    toml::to_string(&value).map_err(|e| LabError::Spec(e.to_string()))
}

/// A running overlay lab. Dropping it tears everything down unless detached.
#[derive(Debug)]
pub struct OverlayLab {
    spec: OverlaySpec,
    opts: LabOptions,
    state: LabState,
    dir: PathBuf,
    data: PathBuf,
    children: HashMap<u32, Child>,
    started: Vec<String>,
    detached: bool,
}

impl OverlayLab {
    /// Builds the underlay, the outside host and every machine that is not `late`; on failure, everything
    /// created so far is removed.
    pub fn up(spec: &OverlaySpec, opts: &LabOptions) -> Result<OverlayLab, LabError> {
        if !super::is_root() {
            return Err(LabError::NotRoot);
        }
        super::check_prefix(&opts.prefix)?;
        for (prog, what) in [(ETCD, "etcd (install etcd-server)"), ("etcdctl", "etcdctl (install etcd-client)")] {
            if netns::run("sh", &["-c", &format!("command -v {prog}")]).is_err() {
                return Err(LabError::Missing(what.into()));
            }
        }
        let dir = super::Lab::state_dir(opts);
        if dir.join("state.json").exists() {
            return Err(LabError::Spec(format!(
                "a lab with prefix {:?} is already up (state in {}); run `vswitch-lab down --prefix {}`",
                opts.prefix,
                dir.display(),
                opts.prefix
            )));
        }
        let data = PathBuf::from(format!("/dev/shm/vswitch-lab-{}", opts.prefix.trim_end_matches('-')));
        if data.exists() {
            return Err(LabError::Spec(format!("{} already exists; not touching it", data.display())));
        }
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut lab = OverlayLab {
            spec: spec.clone(),
            opts: opts.clone(),
            state: LabState {
                prefix: opts.prefix.clone(),
                stats_json: dir.join("stats.json"),
                log: dir.join("lab.log"),
                ..LabState::default()
            },
            dir,
            data,
            children: HashMap::new(),
            started: Vec::new(),
            detached: false,
        };
        lab.underlay()?;
        let early: Vec<String> = spec.machines.iter().filter(|m| !m.late).map(|m| m.name.clone()).collect();
        for m in &early {
            lab.machine_world(m)?;
        }
        lab.wait_etcd()?;
        for m in &early {
            lab.machine_daemons(m)?;
        }
        Ok(lab)
    }

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.state.prefix)
    }

    /// The namespace of machine, container or outside host `name`.
    pub fn host_ns(&self, name: &str) -> String {
        self.ns(name)
    }

    /// The lab's description.
    pub fn spec(&self) -> &OverlaySpec {
        &self.spec
    }

    /// What `down` needs.
    pub fn state(&self) -> &LabState {
        &self.state
    }

    /// Machines whose daemons run, in start order.
    pub fn started(&self) -> &[String] {
        &self.started
    }

    fn save(&self) -> Result<(), LabError> {
        let path = self.dir.join("state.json");
        let text = serde_json::to_string_pretty(&self.state).expect("plain data");
        fs::write(&path, text).map_err(io_err(&path))
    }

    fn create_ns(&mut self, name: &str) -> Result<String, LabError> {
        let ns = self.ns(name);
        if netns::exists(&ns) {
            return Err(LabError::Spec(format!("namespace {ns} already exists; not touching it")));
        }
        netns::create(&ns)?;
        self.state.namespaces.push(ns.clone());
        self.save()?;
        Ok(ns)
    }

    /// The underlay namespace (bridges, router) and the outside host.
    fn underlay(&mut self) -> Result<(), LabError> {
        let u = self.create_ns(UNDERLAY_NS)?;
        let mtu = self.spec.underlay.mtu.to_string();
        for br in [UNDER_BRIDGE, MGMT_BRIDGE] {
            netns::ip(&["-n", &u, "link", "add", br, "type", "bridge"])?;
            netns::ip(&["-n", &u, "link", "set", br, "mtu", &mtu, "up"])?;
        }
        netns::ip(&["-n", &u, "addr", "add", &self.spec.underlay.router.to_string(), "dev", UNDER_BRIDGE])?;
        netns::exec(&u, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        let out = self.spec.outside.clone();
        let o = self.create_ns(&out.name)?;
        let link = format!("o-{}", out.name);
        netns::veth(&u, &link, &o, "eth0")?;
        netns::ip(&["-n", &u, "addr", "add", &out.router.to_string(), "dev", &link])?;
        netns::ip(&["-n", &o, "addr", "add", &out.address.to_string(), "dev", "eth0"])?;
        netns::ip(&["-n", &o, "route", "add", "default", "via", &out.router.addr().to_string()])?;
        Ok(())
    }

    /// A machine's namespaces, links and etcd member.
    fn machine_world(&mut self, name: &str) -> Result<(), LabError> {
        let m = self.spec.machine_named(name).cloned().ok_or_else(|| LabError::Spec(format!("no machine {name}")))?;
        let u = self.ns(UNDERLAY_NS);
        let h = self.create_ns(&m.name)?;
        for c in &m.containers {
            self.create_ns(&c.name)?;
        }
        let mtu = self.spec.underlay.mtu.to_string();
        let (ul, ml) = (format!("u-{}", m.name), format!("m-{}", m.name));
        netns::veth(&h, &m.underlay_if, &u, &ul)?;
        netns::veth(&h, MGMT_IF, &u, &ml)?;
        for (ns, ifname) in [(&h, m.underlay_if.as_str()), (&u, ul.as_str())] {
            netns::ip(&["-n", ns, "link", "set", ifname, "mtu", &mtu])?;
        }
        netns::ip(&["-n", &u, "link", "set", &ul, "master", UNDER_BRIDGE])?;
        netns::ip(&["-n", &u, "link", "set", &ml, "master", MGMT_BRIDGE])?;
        netns::ip(&["-n", &h, "addr", "add", &m.management.to_string(), "dev", MGMT_IF])?;
        self.start_etcd(&m)?;
        Ok(())
    }

    fn spawn(&mut self, what: &str, comm: &str, cmd: &mut Command, log_name: &str) -> Result<u32, LabError> {
        let log_path = self.dir.join(log_name);
        let log = fs::File::create(&log_path).map_err(io_err(&log_path))?;
        let log2 = log.try_clone().map_err(io_err(&log_path))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| LabError::Switch(format!("starting {what}: {e}")))?;
        // `ip netns exec` execs the program: the child's PID is the daemon's.
        let pid = child.id();
        self.children.insert(pid, child);
        self.state.processes.push(ProcRecord { pid, comm: comm.into(), what: what.into() });
        self.save()?;
        Ok(pid)
    }

    fn start_etcd(&mut self, m: &MachineSpec) -> Result<(), LabError> {
        if !self.state.dirs.contains(&self.data) {
            fs::create_dir_all(&self.data).map_err(io_err(&self.data))?;
            self.state.dirs.push(self.data.clone());
            self.save()?;
        }
        let ip = m.management.addr();
        let (client, peer) = (format!("http://{ip}:2379"), format!("http://{ip}:2380"));
        let data = self.data.join(&m.name);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(&m.name), ETCD, "--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.spec.initial_cluster(), "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &format!("vswitch-lab-{}", self.state.prefix)])
            .args(["--heartbeat-interval", &self.spec.etcd.heartbeat_ms.to_string()])
            .args(["--election-timeout", &self.spec.etcd.election_ms.to_string()]);
        self.spawn(&format!("etcd {}", m.name), "etcd", &mut cmd, &format!("{}-etcd.log", m.name))?;
        Ok(())
    }

    /// The client URLs of the members started so far.
    fn etcd_endpoints(&self) -> Vec<String> {
        self.spec
            .machines
            .iter()
            .filter(|m| self.state.namespaces.contains(&self.ns(&m.name)))
            .map(|m| format!("http://{}:2379", m.management.addr()))
            .collect()
    }

    /// `etcdctl ARGS` against the started members, from the first machine's namespace.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, LabError> {
        let first = self.spec.machines.iter().find(|m| !m.late).expect("checked at load");
        let ns = self.ns(&first.name);
        let eps = format!("--endpoints={}", self.etcd_endpoints().join(","));
        let mut full = vec!["netns", "exec", ns.as_str(), "env", "ETCDCTL_API=3", "etcdctl"];
        full.extend_from_slice(&[&eps, "--dial-timeout=1s", "--command-timeout=2s"]);
        full.extend_from_slice(args);
        netns::run("ip", &full).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Waits until every started member answers.
    fn wait_etcd(&mut self) -> Result<(), LabError> {
        let deadline = Instant::now() + WAIT;
        loop {
            self.check_alive()?;
            match self.etcdctl(&["endpoint", "health"]) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(LabError::Switch(format!("etcd did not become healthy within {WAIT:?}: {e}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn socket(&self, machine: &str) -> PathBuf {
        self.dir.join(format!("{machine}.sock"))
    }

    fn stats_path(&self, machine: &str) -> PathBuf {
        self.dir.join(format!("{machine}-stats.json"))
    }

    /// A machine's vswitchd (started empty) and agent; then its containers' addresses.
    fn machine_daemons(&mut self, name: &str) -> Result<(), LabError> {
        let m = self.spec.machine_named(name).cloned().ok_or_else(|| LabError::Spec(format!("no machine {name}")))?;
        let h = self.ns(&m.name);
        let socket = self.socket(&m.name);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h]);
        if let Some(cpu) = self.opts.switch_cpu {
            cmd.arg("taskset").arg("-c").arg(cpu.to_string());
        }
        cmd.arg(&self.opts.vswitchd).arg("run").arg("--socket").arg(&socket);
        cmd.arg("--stats-json").arg(self.stats_path(&m.name));
        self.spawn(&format!("vswitchd {}", m.name), "vswitchd", &mut cmd, &format!("{}-vswitchd.log", m.name))?;
        let deadline = Instant::now() + WAIT;
        while call(&socket, vswitch_api::proto::Op::Hello).is_none() {
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(LabError::Switch(format!("vswitchd of {} did not answer on {}", m.name, socket.display())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let cfg_path = self.dir.join(format!("{}.toml", m.name));
        let text = agent_config_for(&m, &self.state.prefix)?;
        fs::write(&cfg_path, text).map_err(io_err(&cfg_path))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h])
            .arg(&self.opts.agent)
            .arg("--config")
            .arg(&cfg_path)
            .arg("--socket")
            .arg(&socket)
            .args(["--poll-ms", "100", "--check-ms", "500"]);
        self.spawn(&format!("vswitch-agent {}", m.name), "vswitch-agent", &mut cmd, &format!("{}-agent.log", m.name))?;
        let mtu = self.spec.overlay_mtu().to_string();
        for c in &m.containers {
            let ns = self.ns(&c.name);
            let deadline = Instant::now() + WAIT;
            while !netns::wait_for_link(&ns, &c.ifname, Duration::from_millis(200)) {
                self.check_alive()?;
                if Instant::now() > deadline {
                    return Err(LabError::Switch(format!(
                        "tap {} of {} did not appear in {ns} within {WAIT:?} (logs in {})",
                        c.ifname,
                        m.name,
                        self.dir.display()
                    )));
                }
            }
            netns::ip(&["-n", &ns, "link", "set", &c.ifname, "address", &c.mac, "mtu", &mtu])?;
            netns::ip(&["-n", &ns, "addr", "add", &c.address.to_string(), "dev", &c.ifname])?;
            netns::ip(&["-n", &ns, "link", "set", &c.ifname, "up"])?;
            if let Some(gw) = c.gateway {
                netns::ip(&["-n", &ns, "route", "add", "default", "via", &gw.to_string()])?;
            }
        }
        self.started.push(m.name.clone());
        Ok(())
    }

    /// Starts a `late` machine (or any not yet started): its namespaces, etcd member, vswitchd and agent.
    pub fn join(&mut self, name: &str) -> Result<(), LabError> {
        if self.started.iter().any(|s| s == name) {
            return Err(LabError::Spec(format!("machine {name} is already up")));
        }
        self.machine_world(name)?;
        self.machine_daemons(name)
    }

    /// Starts every machine not started yet.
    pub fn join_all(&mut self) -> Result<(), LabError> {
        let late: Vec<String> =
            self.spec.machines.iter().filter(|m| !self.started.contains(&m.name)).map(|m| m.name.clone()).collect();
        for m in late {
            self.join(&m)?;
        }
        Ok(())
    }

    /// An error naming the first of the lab's daemons that exited, with its log's tail.
    fn check_alive(&mut self) -> Result<(), LabError> {
        for rec in &self.state.processes {
            if let Some(child) = self.children.get_mut(&rec.pid) {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = self.dir.join(log_file_of(&rec.what));
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(10)..].join("\n  ");
                    return Err(LabError::Switch(format!(
                        "{} exited ({status}); {}:\n  {tail}",
                        rec.what,
                        log.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// `network inspect NET`'s overlay part on machine `m`, if vswitchd answers.
    pub fn overlay(&self, machine: &str, network: &str) -> Option<serde_json::Value> {
        let v = call(&self.socket(machine), vswitch_api::proto::Op::NetworkInspect { name: network.into() })?;
        Some(v.get("overlay")?.clone())
    }

    /// The member hosts of `network` on `machine`, sorted.
    pub fn members(&self, machine: &str, network: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .overlay(machine, network)
            .and_then(|o| o["members"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m["host"].as_str().map(String::from))
            .collect();
        v.sort();
        v
    }

    /// Stops every agent, then every vswitchd (they write their counters); returns each machine's counters.
    pub fn stop_daemons(&mut self) -> Vec<(String, Option<serde_json::Value>)> {
        self.stop_kind("vswitch-agent");
        self.stop_kind("vswitchd");
        self.started
            .iter()
            .map(|m| {
                let stats = fs::read_to_string(self.stats_path(m)).ok().and_then(|t| serde_json::from_str(&t).ok());
                (m.clone(), stats)
            })
            .collect()
    }

    fn stop_kind(&mut self, comm: &str) {
        let (mine, rest): (Vec<ProcRecord>, Vec<ProcRecord>) =
            std::mem::take(&mut self.state.processes).into_iter().partition(|p| p.comm == comm);
        self.state.processes = rest;
        super::terminate_all(&mine, &mut self.children);
        let _ = self.save();
    }

    /// Stops everything and deletes what was created.
    pub fn down(mut self) -> Result<(), LabError> {
        self.detached = true;
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), LabError> {
        for comm in ["vswitch-agent", "vswitchd", "etcd"] {
            self.stop_kind(comm);
        }
        // Anything else recorded (none today).
        let rest = std::mem::take(&mut self.state.processes);
        super::terminate_all(&rest, &mut self.children);
        super::remove_all(&mut self.state, &self.dir)
    }

    /// Leaves the lab running; `vswitch-lab down` removes it later.
    pub fn detach(mut self) {
        self.detached = true;
        // The children are reaped by no one once we exit; they stay running.
        self.children.clear();
    }
}

impl Drop for OverlayLab {
    fn drop(&mut self) {
        if !self.detached {
            let _ = self.teardown();
        }
    }
}

fn log_file_of(what: &str) -> String {
    // "etcd h1" → "h1-etcd.log", "vswitchd h1" → "h1-vswitchd.log", "vswitch-agent h1" → "h1-agent.log".
    let mut words = what.split(' ');
    let (kind, machine) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let kind = if kind == "vswitch-agent" { "agent" } else { kind };
    format!("{machine}-{kind}.log")
}

/// One request on vswitchd's control socket; its result on success.
pub fn call(socket: &Path, op: vswitch_api::proto::Op) -> Option<serde_json::Value> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(vswitch_api::proto::Request::new(1, op).to_line().as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).ok()?;
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    if v["ok"].as_bool() != Some(true) {
        return None;
    }
    Some(v.get("result").cloned().unwrap_or(serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_example() -> OverlaySpec {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab/overlay.toml");
        OverlaySpec::load(&dir).expect("the example overlay lab loads")
    }

    #[test]
    fn the_example_overlay_lab_has_three_hosts_one_late_and_a_published_port() {
        let spec = load_example();
        let names: Vec<&str> = spec.machines.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["h1", "h2", "h3"]);
        assert_eq!(spec.machines.iter().filter(|m| m.late).count(), 1);
        assert_eq!(spec.overlay_mtu(), 1450);
        let c2 = &spec.machines[1].containers[0];
        assert_eq!((c2.name.as_str(), c2.ip(), c2.address.prefix_len()), ("c2", Ipv4Addr::new(10, 1, 0, 12), 24));
        assert_eq!(spec.machines[1].published[0].to, "10.1.0.12:80".parse().unwrap());
        assert_eq!(spec.machines[0].vtep.addr(), Ipv4Addr::new(198, 51, 100, 11));
        assert_eq!(
            spec.initial_cluster(),
            "h1=http://10.99.0.11:2380,h2=http://10.99.0.12:2380,h3=http://10.99.0.13:2380"
        );
        // Nothing in the lab touches the machine's own uplink range.
        let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab/overlay.toml"));
        assert!(!text.unwrap().contains("192.0.2."));
        for m in &spec.machines {
            assert!(!m.agent_config.contains("192.0.2."));
        }
    }

    #[test]
    fn the_agent_file_gets_the_containers_namespace() {
        let spec = load_example();
        let text = agent_config_for(&spec.machines[2], "pre-").unwrap();
        let cfg = Config::parse(&text, "t").unwrap();
        assert_eq!(cfg.ports.iter().find(|p| p.name == "c1").unwrap().netns.as_deref(), Some("pre-c3"));
        assert_eq!(cfg.ports.iter().find(|p| p.name == "under").unwrap().netns, None);
    }

    #[test]
    fn bad_overlay_labs_are_refused_with_the_reason() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab");
        let lab = fs::read_to_string(example.join("overlay.toml")).unwrap();
        let read = |p: &Path| {
            let path = example.join(p);
            Ok((fs::read_to_string(&path).unwrap(), path.display().to_string()))
        };
        let err = |text: &str| OverlaySpec::parse(text, "lab", read).unwrap_err().to_string();
        assert!(err(&lab.replace("name = \"c2\"", "name = \"c1\"")).contains("used twice"));
        assert!(err(
            &lab.replace("port = \"c1\"\n\n[[machine]]\nname = \"h2\"", "port = \"zz\"\n\n[[machine]]\nname = \"h2\"")
        )
        .contains("\"zz\" is not in the agent's file"));
        assert!(
            err(&lab.replace("agent = \"overlay/h2.toml\"", "agent = \"overlay/h1.toml\"")).contains("cluster.host")
        );
        assert!(err(&lab.replace("10.99.0.12/24", "10.98.0.12/24")).contains("outside underlay.management"));
        assert!(err(&lab.replace("late = true", "late = true\nbogus = 1")).contains("bogus"));
        assert!(OverlaySpec::is_overlay(&lab));
        assert!(!OverlaySpec::is_overlay(crate::lab::DEFAULT_LAB));
    }
}
