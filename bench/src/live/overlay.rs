//! The cross-host topology of the overlay forwarders: two hosts (namespaces) on an underlay bridge, one
//! container on each, the containers on one L2 network (10.71.1.0/24: the sender 10.71.1.2, the receiver
//! 10.71.1.3, the same addresses as the one-host forwarders) carried over VXLAN (VNI 100, UDP 4789) between the
//! hosts' underlay addresses 198.51.100.11 and .12.
//!
//! - `linux-vxlan`: the kernel's own overlay, as Docker's overlay driver and flannel set it up: in each host a
//!   `vxlan` device (`dstport 4789 nolearning`, local = the host's underlay address), static fdb entries (the
//!   remote container's MAC, and all-zeros for flooding, to the other host's VTEP) and a Linux bridge joining it
//!   with the container's veth.
//! - `vswitchd-overlay`: a vswitchd in each host (started with `--config`: the container on a tap, the underlay
//!   on AF_PACKET, an overlay network with VNI 100), the other host and its container pushed with one
//!   `overlay_update` on the control socket (what `vswitch-agent` does from etcd; the benchmark leaves etcd out).
//!
//! The containers' MTU is the overlay's (1500 − 50) in both. Names: namespaces `PREFIX{u,ha,hb,tx,rx}`; inside
//! them fixed interface names. Everything is deleted on drop (vswitchds stopped by PID first). Needs root; runs
//! on the caller's thread.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tools::lab::netns;
use tools::lab::overlay::call;
use vswitch_api::overlay::{Member, OverlayState, RemoteEndpoint};
use vswitch_api::proto::Op;

/// The VNI of the benchmark's overlay.
pub const VNI: u32 = 100;
/// The containers' MTU: the underlay's 1500 minus VXLAN's 50.
pub const OVERLAY_MTU: u16 = 1450;

/// One side: host `h{a,b}`, container `tx`/`rx`.
struct Side {
    host: &'static str,
    container: &'static str,
    vtep: Ipv4Addr,
    ip: Ipv4Addr,
    mac: &'static str,
    /// The container's interface in the vswitchd variant (the tap).
    tap: &'static str,
}

const SIDES: [Side; 2] = [
    Side {
        host: "ha",
        container: "tx",
        vtep: Ipv4Addr::new(198, 51, 100, 11),
        ip: Ipv4Addr::new(10, 71, 1, 2),
        mac: "02:71:00:00:00:02",
        tap: "vs-a",
    },
    Side {
        host: "hb",
        container: "rx",
        vtep: Ipv4Addr::new(198, 51, 100, 12),
        ip: Ipv4Addr::new(10, 71, 1, 3),
        mac: "02:71:00:00:00:03",
        tap: "vs-b",
    },
];

/// The two-host topology; removed when dropped.
#[derive(Debug)]
pub struct OverlayTopo {
    prefix: String,
    namespaces: Vec<String>,
    switches: HashMap<&'static str, Child>,
    dir: Option<tempfile::TempDir>,
    /// Whether vswitchd forwards (else the kernel).
    pub vswitchd: bool,
}

impl Drop for OverlayTopo {
    fn drop(&mut self) {
        let _ = self.stop_switches();
        for ns in self.namespaces.iter().rev() {
            if netns::exists(ns) {
                let _ = netns::delete(ns);
            }
        }
    }
}

impl OverlayTopo {
    /// Builds the topology; `vswitchd` picks the forwarder (the vswitchd executable), `None` the kernel's.
    /// `offloads`: checksum/segmentation offloads on the veths (and vswitchd's taps) or not.
    pub fn up(prefix: &str, vswitchd: Option<&Path>, offloads: bool) -> anyhow::Result<OverlayTopo> {
        let mut t = OverlayTopo {
            prefix: prefix.to_string(),
            namespaces: Vec::new(),
            switches: HashMap::new(),
            dir: None,
            vswitchd: vswitchd.is_some(),
        };
        let u = t.create("u")?;
        netns::ip(&["-n", &u, "link", "add", "br0", "type", "bridge"])?;
        netns::ip(&["-n", &u, "link", "set", "br0", "up"])?;
        for s in &SIDES {
            let h = t.create(s.host)?;
            let c = t.create(s.container)?;
            let bridge_end = format!("u-{}", s.host);
            netns::veth(&h, "eth1", &u, &bridge_end)?;
            netns::ip(&["-n", &u, "link", "set", &bridge_end, "master", "br0"])?;
            if !offloads {
                netns::offloads(&h, "eth1", false)?;
                netns::offloads(&u, &bridge_end, false)?;
            }
            if vswitchd.is_none() {
                t.kernel_side(s, &h, &c, offloads)?;
            }
        }
        if let Some(bin) = vswitchd {
            let dir = tempfile::tempdir()?;
            for (i, s) in SIDES.iter().enumerate() {
                let other = &SIDES[1 - i];
                t.switch_side(bin, dir.path(), s, other, offloads)?;
            }
            t.dir = Some(dir);
        }
        Ok(t)
    }

    fn create(&mut self, name: &str) -> anyhow::Result<String> {
        let ns = format!("{}{name}", self.prefix);
        anyhow::ensure!(!netns::exists(&ns), "namespace {ns} already exists");
        netns::create(&ns)?;
        self.namespaces.push(ns.clone());
        Ok(ns)
    }

    /// The kernel's overlay on one host: vxlan device, static fdb entries, a bridge with the container's veth.
    fn kernel_side(&self, s: &Side, h: &str, c: &str, offloads: bool) -> anyhow::Result<()> {
        let other = SIDES.iter().find(|o| o.host != s.host).expect("two sides");
        netns::ip(&["-n", h, "addr", "add", &format!("{}/24", s.vtep), "dev", "eth1"])?;
        let (vni, local) = (VNI.to_string(), s.vtep.to_string());
        netns::ip(&[
            "-n",
            h,
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            &vni,
            "dstport",
            "4789",
            "local",
            &local,
            "dev",
            "eth1",
            "nolearning",
        ])?;
        netns::ip(&["-n", h, "link", "add", "br0", "type", "bridge"])?;
        netns::veth(h, "vs-c", c, "eth0")?;
        if !offloads {
            netns::offloads(h, "vs-c", false)?;
            netns::offloads(c, "eth0", false)?;
        }
        for dev in ["vx0", "vs-c"] {
            netns::ip(&["-n", h, "link", "set", dev, "master", "br0"])?;
            netns::ip(&["-n", h, "link", "set", dev, "up"])?;
        }
        netns::ip(&["-n", h, "link", "set", "br0", "up"])?;
        let dst = other.vtep.to_string();
        for mac in ["00:00:00:00:00:00", other.mac] {
            netns::exec(h, "bridge", &["fdb", "append", mac, "dev", "vx0", "dst", &dst])?;
        }
        container(c, "eth0", s)
    }

    /// vswitchd on one host, then the other host pushed as its overlay membership.
    fn switch_side(&mut self, bin: &Path, dir: &Path, s: &Side, other: &Side, offloads: bool) -> anyhow::Result<()> {
        let (h, c) = (format!("{}{}", self.prefix, s.host), format!("{}{}", self.prefix, s.container));
        let cfg = format!(
            r#"[switch]
workers = 1

[cluster]
name = "bench"
host = "{host}"
etcd = ["http://127.0.0.1:2379"]
vtep_port = "under"

[[network]]
name = "red"
scope = "overlay"
vni = {VNI}
subnet = "10.71.1.0/24"

[[port]]
name = "c"
kind = "tap"
ifname = "{tap}"
netns = "{c}"
network = "red"
offload = {offloads}

[[port]]
name = "under"
kind = "afpacket"
ifname = "eth1"
address = "{vtep}/24"
"#,
            host = s.host,
            tap = s.tap,
            vtep = s.vtep,
        );
        let cfg_path = dir.join(format!("{}.toml", s.host));
        std::fs::write(&cfg_path, cfg)?;
        let socket = dir.join(format!("{}.sock", s.host));
        let stats = dir.join(format!("{}-stats.json", s.host));
        let log = std::fs::File::create(dir.join(format!("{}.log", s.host)))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &h])
            .arg(bin)
            .arg("run")
            .arg("--config")
            .arg(&cfg_path)
            .arg("--socket")
            .arg(&socket)
            .arg("--stats-json")
            .arg(&stats)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.switches.insert(s.host, child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while call(&socket, Op::Hello).is_none() {
            if let Some(Ok(Some(st))) = self.switches.get_mut(s.host).map(Child::try_wait) {
                anyhow::bail!("vswitchd in {h} exited ({st}); log in {}", dir.display());
            }
            anyhow::ensure!(Instant::now() < deadline, "vswitchd in {h} did not answer on {}", socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        let state = OverlayState {
            revision: 1,
            members: vec![Member {
                host: other.host.into(),
                vtep: other.vtep,
                udp_port: 4789,
                mtu: 1500,
                networks: vec!["red".into()],
            }],
            endpoints: vec![RemoteEndpoint {
                network: "red".into(),
                mac: other.mac.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?,
                ip: Some(other.ip),
                host: other.host.into(),
            }],
        };
        anyhow::ensure!(call(&socket, Op::OverlayUpdate { state }).is_some(), "overlay_update refused in {h}");
        anyhow::ensure!(netns::wait_for_link(&c, s.tap, Duration::from_secs(10)), "tap {} did not appear", s.tap);
        container(&c, s.tap, s)
    }

    /// The sender's namespace.
    pub fn sender_ns(&self) -> String {
        format!("{}tx", self.prefix)
    }

    /// The receiver's namespace.
    pub fn receiver_ns(&self) -> String {
        format!("{}rx", self.prefix)
    }

    /// The sender's interface.
    pub fn sender_if(&self) -> &'static str {
        if self.vswitchd {
            SIDES[0].tap
        } else {
            "eth0"
        }
    }

    /// The receiver's interface.
    pub fn receiver_if(&self) -> &'static str {
        if self.vswitchd {
            SIDES[1].tap
        } else {
            "eth0"
        }
    }

    /// The receiver's address.
    pub fn dst(&self) -> Ipv4Addr {
        SIDES[1].ip
    }

    /// Stops both vswitchds (SIGTERM, SIGKILL after 5 s); returns the counters each wrote.
    pub fn stop_switches(&mut self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for (host, mut child) in self.switches.drain() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on the PID of a child this benchmark started and has not reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            if let Some(dir) = &self.dir {
                let path: PathBuf = dir.path().join(format!("{host}-stats.json"));
                if let Some(v) = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()) {
                    out.push(v);
                }
            }
        }
        out
    }
}

/// Gives a container's interface its MAC, the overlay MTU, its address, and brings it up.
fn container(ns: &str, ifname: &str, s: &Side) -> anyhow::Result<()> {
    let mtu = OVERLAY_MTU.to_string();
    netns::ip(&["-n", ns, "link", "set", ifname, "address", s.mac, "mtu", &mtu])?;
    netns::ip(&["-n", ns, "addr", "add", &format!("{}/24", s.ip), "dev", ifname])?;
    netns::ip(&["-n", ns, "link", "set", ifname, "up"])?;
    Ok(())
}
