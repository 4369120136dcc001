//! The live benchmark behind `vswitch-bench`: one topology — sender namespace → forwarder → receiver
//! namespace, joined by veths (or vswitchd's taps) — with the forwarder swapped between the Linux bridge,
//! kernel routing with nftables/iptables MASQUERADE, and vswitchd over each of its live port kinds, measured in
//! the same run so the ratios mean something.
//!
//! Per forwarder: (a) 64-byte UDP frames per second offered by the sender (its interface's `tx_packets`) and
//! delivered to the receiver (its interface's `rx_packets`), with the sender pinned to one core; (b) TCP
//! throughput of one stream, with the veths' checksum/segmentation offloads off and on; (c) CPU per delivered
//! packet: softirq time from `/proc/stat` (the kernel's forwarding work, which runs on the sender's core) and,
//! for vswitchd, the workers' `busy_ns` divided by their packets from its stats JSON.
//!
//! Two more forwarders compare overlays across hosts ([`overlay`]): `linux-vxlan` (the kernel's vxlan device and
//! bridge in each of two host namespaces) and `vswitchd-overlay` (a vswitchd per host), the sender and receiver
//! being containers on different hosts, the same addresses as above, VXLAN between 198.51.100.11 and .12.
//!
//! Every object is created inside namespaces named with the benchmark's PID and deleted afterwards (Drop
//! guards); the root namespace is never touched. Addresses: 10.71.1.0/24 for the sender's link (and the whole
//! L2 network), 198.51.100.0/24 behind the masquerading router. Runs on the caller's thread; needs root.

pub mod ndr;
pub mod overlay;
pub mod ovs;
pub mod rates;
pub mod rr;
pub mod sender;
pub mod traffic;

use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;
use tools::lab::netns;
use tools::lab::probe::{ping, TcpServer};
use tools::lab::{demo::find_u64, HostSpec, Lab, LabOptions, LabSpec};

/// What forwards between the sender and the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Forwarder {
    /// A Linux bridge (docker0-like).
    LinuxBridge,
    /// Kernel routing with a MASQUERADE rule (nftables, else iptables).
    LinuxMasquerade,
    /// Kernel routing (the `linux-masquerade` topology without the rule).
    LinuxRouting,
    /// Open vSwitch's userspace datapath, AF_XDP ports in native mode (see [`ovs`]).
    OvsAfxdp,
    /// vswitchd, both hosts on taps.
    VswitchdTap,
    /// vswitchd, AF_PACKET on the switch ends of veths.
    VswitchdAfpacket,
    /// vswitchd routing and masquerading (the `linux-masquerade` topology), AF_PACKET on veths.
    VswitchdMasquerade,
    /// vswitchd, AF_XDP in native mode on veths.
    VswitchdAfxdpNative,
    /// vswitchd, AF_XDP in generic (SKB) mode on veths.
    VswitchdAfxdpGeneric,
    /// The kernel's overlay across two hosts: a vxlan device, static fdb entries and a bridge per host.
    LinuxVxlan,
    /// vswitchd's overlay across two hosts: a vswitchd per host (taps, AF_PACKET underlay), membership pushed
    /// with `overlay_update`.
    VswitchdOverlay,
}

impl Forwarder {
    /// Every forwarder, in table order.
    pub const ALL: [Forwarder; 11] = [
        Forwarder::LinuxBridge,
        Forwarder::LinuxRouting,
        Forwarder::LinuxMasquerade,
        Forwarder::OvsAfxdp,
        Forwarder::VswitchdTap,
        Forwarder::VswitchdAfpacket,
        Forwarder::VswitchdMasquerade,
        Forwarder::VswitchdAfxdpNative,
        Forwarder::VswitchdAfxdpGeneric,
        Forwarder::LinuxVxlan,
        Forwarder::VswitchdOverlay,
    ];

    /// The name used on the command line and in the output.
    pub fn name(self) -> &'static str {
        match self {
            Forwarder::LinuxBridge => "linux-bridge",
            Forwarder::LinuxMasquerade => "linux-masquerade",
            Forwarder::LinuxRouting => "linux-routing",
            Forwarder::OvsAfxdp => "ovs-afxdp",
            Forwarder::VswitchdTap => "vswitchd-tap",
            Forwarder::VswitchdAfpacket => "vswitchd-afpacket",
            Forwarder::VswitchdMasquerade => "vswitchd-masquerade",
            Forwarder::VswitchdAfxdpNative => "vswitchd-afxdp-native",
            Forwarder::VswitchdAfxdpGeneric => "vswitchd-afxdp-generic",
            Forwarder::LinuxVxlan => "linux-vxlan",
            Forwarder::VswitchdOverlay => "vswitchd-overlay",
        }
    }

    /// The kernel forwarder doing the same job, whose figures this one's are divided by.
    pub fn reference(self) -> Forwarder {
        match self {
            Forwarder::LinuxMasquerade | Forwarder::VswitchdMasquerade => Forwarder::LinuxMasquerade,
            Forwarder::LinuxVxlan | Forwarder::VswitchdOverlay => Forwarder::LinuxVxlan,
            _ => Forwarder::LinuxBridge,
        }
    }

    /// The forwarder called `name`.
    pub fn from_name(name: &str) -> Option<Forwarder> {
        Forwarder::ALL.into_iter().find(|f| f.name() == name)
    }

    /// vswitchd's port kind and extra port keys, for the vswitchd forwarders.
    fn port(self) -> Option<(&'static str, &'static str)> {
        match self {
            Forwarder::LinuxBridge
            | Forwarder::LinuxMasquerade
            | Forwarder::LinuxRouting
            | Forwarder::OvsAfxdp
            | Forwarder::LinuxVxlan
            | Forwarder::VswitchdOverlay => None,
            Forwarder::VswitchdTap => Some(("tap", "")),
            Forwarder::VswitchdAfpacket | Forwarder::VswitchdMasquerade => Some(("afpacket", "")),
            Forwarder::VswitchdAfxdpNative => Some(("afxdp", "mode = \"native\"\n")),
            Forwarder::VswitchdAfxdpGeneric => Some(("afxdp", "mode = \"generic\"\n")),
        }
    }
}

/// How to run the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Length of each measurement.
    pub duration: Duration,
    /// The sender's core.
    pub sender_cpu: usize,
    /// vswitchd's core.
    pub switch_cpu: usize,
    /// The vswitchd executable.
    pub vswitchd: PathBuf,
    /// Measure 64-byte UDP.
    pub udp: bool,
    /// Measure TCP (two runs per forwarder: offloads off and on).
    pub tcp: bool,
    /// The UDP sender.
    pub sender: Sender,
    /// Measure NDR/PDR and round-trip latency (`None`: skip).
    pub rates: Option<rates::RateOptions>,
}

/// What sends the 64-byte UDP frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sender {
    /// trafgen (netsniff-ng): a packet socket, no UDP stack on the sending side.
    Trafgen,
    /// The built-in `sendmmsg` blaster: through the sender's UDP/IP stack.
    Sendmmsg,
}

/// 64-byte UDP result.
#[derive(Debug, Clone, Serialize)]
pub struct UdpResult {
    /// Frames per second the sender's interface transmitted.
    pub offered_pps: f64,
    /// Frames per second the receiver's interface received.
    pub delivered_pps: f64,
    /// Softirq time (all CPUs) per delivered frame, ns.
    pub softirq_ns_per_pkt: f64,
    /// All non-idle CPU time (all CPUs, including a busy-polling vswitchd) per delivered frame, ns.
    pub cpu_ns_per_pkt: f64,
    /// vswitchd's workers' busy time per packet they handled, ns (from its stats JSON).
    pub vswitchd_busy_ns_per_pkt: Option<f64>,
    /// vswitchd's workers' CPU time (their threads' own clock, idle polling included) per packet, ns. Much
    /// less than the busy time means the workers were preempted while busy: another process had their core.
    pub vswitchd_cpu_ns_per_pkt: Option<f64>,
    /// What vswitchd lost: its ports' `rx_dropped`/`tx_dropped` (ring overflows, too-long frames) and the
    /// pipeline's drops by reason.
    pub vswitchd_drops: Option<serde_json::Value>,
}

/// TCP result.
#[derive(Debug, Clone, Serialize)]
pub struct TcpResult {
    /// Payload received by the server, Gbit/s.
    pub gbit_per_s: f64,
    /// Segments the sender retransmitted.
    pub retransmits: u64,
}

/// Everything measured for one forwarder; a failed measurement leaves its field empty and an error.
#[derive(Debug, Clone, Serialize)]
pub struct ForwarderResult {
    /// The forwarder.
    pub forwarder: Forwarder,
    /// 64-byte UDP.
    pub udp: Option<UdpResult>,
    /// TCP with checksum/segmentation offloads off on the veths.
    pub tcp_offloads_off: Option<TcpResult>,
    /// TCP with the veths' default offloads.
    pub tcp_offloads_on: Option<TcpResult>,
    /// NDR/PDR and round-trip latency (see [`rates`]).
    pub rates: Option<rates::RatesResult>,
    /// What went wrong.
    pub errors: Vec<String>,
}

/// A sender and a receiver joined through a forwarder; removed when dropped.
enum Topology {
    Kernel { namespaces: Vec<String>, dst: Ipv4Addr, ovs: Option<ovs::Ovs> },
    Switch { lab: Box<Lab>, _state: tempfile::TempDir, tap: bool, dst: Ipv4Addr },
    Overlay(Box<overlay::OverlayTopo>),
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Topology::Kernel { namespaces, ovs, .. } = self {
            // OVS first: it holds the namespace's interfaces.
            drop(ovs.take());
            for ns in namespaces.iter().rev() {
                if netns::exists(ns) {
                    let _ = netns::delete(ns);
                }
            }
        }
    }
}

impl Topology {
    fn up(f: Forwarder, prefix: &str, offloads: bool, opts: &BenchOptions) -> anyhow::Result<Topology> {
        match f {
            Forwarder::LinuxVxlan => {
                return Ok(Topology::Overlay(Box::new(overlay::OverlayTopo::up(prefix, None, offloads)?)))
            }
            Forwarder::VswitchdOverlay => {
                let t = overlay::OverlayTopo::up(prefix, Some(&opts.vswitchd), offloads)?;
                return Ok(Topology::Overlay(Box::new(t)));
            }
            _ => {}
        }
        match f.port() {
            None => Self::kernel(f, prefix, offloads, opts),
            Some((kind, extra)) => {
                let masq = f == Forwarder::VswitchdMasquerade;
                let switch = if masq {
                    MASQUERADE_SWITCH.to_string()
                } else {
                    format!(
                        "[switch]\nworkers = 1\n\n[[network]]\nname = \"net\"\nsubnet = \"10.71.1.0/24\"\n\n\
                     [[port]]\nname = \"a\"\nkind = \"{kind}\"\nifname = \"vs-a\"\nnetwork = \"net\"\n{extra}\n\
                     [[port]]\nname = \"b\"\nkind = \"{kind}\"\nifname = \"vs-b\"\nnetwork = \"net\"\n{extra}"
                    )
                };
                let host = |name: &str, port: &str, addr: &str, gw: Option<&str>| HostSpec {
                    name: name.into(),
                    port: port.into(),
                    address: addr.parse().expect("valid"),
                    gateway: gw.map(|g| g.parse().expect("valid")),
                    external: false,
                };
                let hosts = if masq {
                    vec![host("tx", "a", "10.71.1.2/24", Some("10.71.1.1")), host("rx", "b", "198.51.100.2/24", None)]
                } else {
                    vec![host("tx", "a", "10.71.1.2/24", None), host("rx", "b", "10.71.1.3/24", None)]
                };
                let spec = LabSpec::new(&switch, hosts)?;
                let state = tempfile::tempdir()?;
                let mut lo = LabOptions::new();
                lo.prefix = prefix.to_string();
                lo.vswitchd = opts.vswitchd.clone();
                lo.state_root = state.path().to_path_buf();
                lo.offloads = Some(offloads);
                lo.switch_cpu = Some(opts.switch_cpu);
                let lab = Lab::up(&spec, &lo)?;
                let dst = if masq { "198.51.100.2" } else { "10.71.1.3" }.parse()?;
                Ok(Topology::Switch { lab: Box::new(lab), _state: state, tap: kind == "tap", dst })
            }
        }
    }

    fn kernel(f: Forwarder, prefix: &str, offloads: bool, opts: &BenchOptions) -> anyhow::Result<Topology> {
        let (tx, fw, rx) = (format!("{prefix}tx"), format!("{prefix}fw"), format!("{prefix}rx"));
        let masq = f == Forwarder::LinuxMasquerade;
        let routed = masq || f == Forwarder::LinuxRouting;
        let dst: Ipv4Addr = if routed { "198.51.100.2" } else { "10.71.1.3" }.parse()?;
        let mut topo = Topology::Kernel { namespaces: Vec::new(), dst, ovs: None };
        for ns in [&tx, &fw, &rx] {
            anyhow::ensure!(!netns::exists(ns), "namespace {ns} already exists");
            netns::create(ns)?;
            if let Topology::Kernel { namespaces, .. } = &mut topo {
                namespaces.push(ns.clone());
            }
        }
        netns::veth(&fw, "vs-a", &tx, "eth0")?;
        netns::veth(&fw, "vs-b", &rx, "eth0")?;
        if !offloads {
            for (ns, ifname) in [(&tx, "eth0"), (&fw, "vs-a"), (&fw, "vs-b"), (&rx, "eth0")] {
                netns::offloads(ns, ifname, false)?;
            }
        }
        if routed {
            netns::ip(&["-n", &fw, "addr", "add", "10.71.1.1/24", "dev", "vs-a"])?;
            netns::ip(&["-n", &fw, "addr", "add", "198.51.100.1/24", "dev", "vs-b"])?;
            netns::exec(&fw, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
            if masq {
                masquerade(&fw, "vs-b")?;
            }
            netns::ip(&["-n", &tx, "addr", "add", "10.71.1.2/24", "dev", "eth0"])?;
            netns::ip(&["-n", &tx, "route", "add", "default", "via", "10.71.1.1"])?;
            netns::ip(&["-n", &rx, "addr", "add", "198.51.100.2/24", "dev", "eth0"])?;
            if !masq {
                netns::ip(&["-n", &rx, "route", "add", "10.71.1.0/24", "via", "198.51.100.1"])?;
            }
        } else if f == Forwarder::OvsAfxdp {
            anyhow::ensure!(ovs::available(), "Open vSwitch is not installed (openvswitch-switch)");
            // AF_XDP reads frames as the peer wrote them: the hosts must not leave checksums to offloads.
            for (ns, ifname) in [(&tx, "eth0"), (&rx, "eth0")] {
                netns::exec(ns, "ethtool", &["-K", ifname, "tx", "off"])?;
            }
            netns::ip(&["-n", &tx, "addr", "add", "10.71.1.2/24", "dev", "eth0"])?;
            netns::ip(&["-n", &rx, "addr", "add", "10.71.1.3/24", "dev", "eth0"])?;
            let started = ovs::Ovs::start(&fw, &["vs-a", "vs-b"], "native", opts.switch_cpu)?;
            if let Topology::Kernel { ovs, .. } = &mut topo {
                *ovs = Some(started);
            }
        } else {
            netns::ip(&["-n", &fw, "link", "add", "br0", "type", "bridge"])?;
            netns::ip(&["-n", &fw, "link", "set", "vs-a", "master", "br0"])?;
            netns::ip(&["-n", &fw, "link", "set", "vs-b", "master", "br0"])?;
            netns::ip(&["-n", &fw, "link", "set", "br0", "up"])?;
            netns::ip(&["-n", &tx, "addr", "add", "10.71.1.2/24", "dev", "eth0"])?;
            netns::ip(&["-n", &rx, "addr", "add", "10.71.1.3/24", "dev", "eth0"])?;
        }
        Ok(topo)
    }

    fn sender_ns(&self) -> String {
        match self {
            Topology::Kernel { namespaces, .. } => namespaces[0].clone(),
            Topology::Switch { lab, .. } => lab.host_ns("tx"),
            Topology::Overlay(o) => o.sender_ns(),
        }
    }

    fn receiver_ns(&self) -> String {
        match self {
            Topology::Kernel { namespaces, .. } => namespaces[2].clone(),
            Topology::Switch { lab, .. } => lab.host_ns("rx"),
            Topology::Overlay(o) => o.receiver_ns(),
        }
    }

    fn sender_if(&self) -> &'static str {
        match self {
            Topology::Switch { tap: true, .. } => "vs-a",
            Topology::Overlay(o) => o.sender_if(),
            _ => "eth0",
        }
    }

    fn receiver_if(&self) -> &'static str {
        match self {
            Topology::Switch { tap: true, .. } => "vs-b",
            Topology::Overlay(o) => o.receiver_if(),
            _ => "eth0",
        }
    }

    fn dst(&self) -> Ipv4Addr {
        match self {
            Topology::Kernel { dst, .. } | Topology::Switch { dst, .. } => *dst,
            Topology::Overlay(o) => o.dst(),
        }
    }

    /// Stops vswitchd; returns its workers' (busy_ns, packets) and what it dropped.
    fn stop_switch(&mut self) -> anyhow::Result<(Option<BusyNs>, Option<serde_json::Value>)> {
        if let Topology::Overlay(o) = self {
            // Both hosts' vswitchds: busy time and packets summed, drops per host.
            let all = o.stop_switches();
            if all.is_empty() {
                return Ok((None, None));
            }
            let mut sum = (0, 0, 0);
            let mut drops = Vec::new();
            for v in &all {
                let (b, d) = busy_and_drops(v);
                if let Some((busy, cpu, packets)) = b {
                    sum = (sum.0 + busy, sum.1 + cpu, sum.2 + packets);
                }
                drops.push(d);
            }
            return Ok((Some(sum), Some(serde_json::Value::Array(drops))));
        }
        let Topology::Switch { lab, .. } = self else { return Ok((None, None)) };
        let Some(v) = lab.stop_switch()? else { return Ok((None, None)) };
        let (busy, drops) = busy_and_drops(&v);
        Ok((busy, Some(drops)))
    }
}

/// A vswitchd stats JSON's workers' (busy_ns, cpu_ns, packets) and its drops (ports' rx/tx_dropped, the
/// pipeline's by reason).
fn busy_and_drops(v: &serde_json::Value) -> (Option<BusyNs>, serde_json::Value) {
    let busy = v.get("workers").and_then(|w| w.as_array()).map(|workers| {
        let busy = workers.iter().map(|w| find_u64(w, "busy_ns")).sum();
        let cpu = workers.iter().map(|w| find_u64(w, "cpu_ns")).sum();
        let packets = workers.iter().map(|w| find_u64(w, "rx_packets")).sum();
        (busy, cpu, packets)
    });
    let mut port_drops = serde_json::Map::new();
    if let Some(ports) = v.get("ports").and_then(|p| p.as_object()) {
        for (name, p) in ports {
            let io = &p["io"];
            port_drops.insert(
                name.clone(),
                serde_json::json!({"rx_dropped": io["rx_dropped"], "tx_dropped": io["tx_dropped"]}),
            );
        }
    }
    let drops = serde_json::json!({"ports": port_drops, "pipeline": v.get("drops").cloned().unwrap_or_default()});
    (busy, drops)
}

/// vswitchd's workers' busy nanoseconds, CPU nanoseconds and packets.
type BusyNs = (u64, u64, u64);

/// The sender's address.
const SENDER: Ipv4Addr = Ipv4Addr::new(10, 71, 1, 2);
/// The sender's gateway in the routed topologies.
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 71, 1, 1);

/// vswitchd doing what `linux-masquerade`'s namespace does: route 10.71.1.0/24 to 198.51.100.0/24, masquerading.
const MASQUERADE_SWITCH: &str = r#"
[switch]
workers = 1

[[network]]
name = "inside"
subnet = "10.71.1.0/24"
gateway = "10.71.1.1"
masquerade = true

[[port]]
name = "a"
kind = "afpacket"
ifname = "vs-a"
network = "inside"

[[port]]
name = "b"
kind = "afpacket"
ifname = "vs-b"
address = "198.51.100.1/24"
"#;

/// Adds a MASQUERADE rule for traffic leaving `oif` in namespace `ns`: nftables if installed, else iptables.
fn masquerade(ns: &str, oif: &str) -> anyhow::Result<()> {
    if netns::run("sh", &["-c", "command -v nft"]).is_ok() {
        netns::exec(ns, "nft", &["add", "table", "ip", "vsbench"])?;
        netns::exec(
            ns,
            "nft",
            &["add", "chain", "ip", "vsbench", "post", "{ type nat hook postrouting priority 100 ; }"],
        )?;
        netns::exec(ns, "nft", &["add", "rule", "ip", "vsbench", "post", "oifname", oif, "masquerade"])?;
        Ok(())
    } else if netns::run("sh", &["-c", "command -v iptables"]).is_ok() {
        netns::exec(ns, "iptables", &["-t", "nat", "-A", "POSTROUTING", "-o", oif, "-j", "MASQUERADE"])?;
        Ok(())
    } else {
        anyhow::bail!("neither nft (nftables) nor iptables is installed")
    }
}

/// Measures `f`; `idx` makes its namespace names unique within the run.
pub fn measure(f: Forwarder, idx: usize, opts: &BenchOptions) -> ForwarderResult {
    let mut r = ForwarderResult {
        forwarder: f,
        udp: None,
        tcp_offloads_off: None,
        tcp_offloads_on: None,
        rates: None,
        errors: vec![],
    };
    let prefix = |run: char| format!("vsb{}{idx}{run}-", std::process::id());
    if opts.udp {
        match udp(f, &prefix('u'), opts) {
            Ok(u) => r.udp = Some(u),
            Err(e) => r.errors.push(format!("udp: {e:#}")),
        }
    }
    if opts.tcp {
        match tcp(f, &prefix('t'), false, opts) {
            Ok(t) => r.tcp_offloads_off = Some(t),
            Err(e) => r.errors.push(format!("tcp, offloads off: {e:#}")),
        }
        match tcp(f, &prefix('o'), true, opts) {
            Ok(t) => r.tcp_offloads_on = Some(t),
            Err(e) => r.errors.push(format!("tcp, offloads on: {e:#}")),
        }
    }
    if let Some(ro) = &opts.rates {
        rates::measure(f, &prefix('n'), opts, ro, &mut r);
    }
    r
}

fn warm_up(topo: &Topology) -> anyhow::Result<()> {
    // Resolves ARP both ways and teaches a switch where both hosts are.
    let p = ping(&topo.sender_ns(), topo.dst(), 2)?;
    anyhow::ensure!(p.received > 0, "no connectivity: ping {} got no reply", topo.dst());
    Ok(())
}

fn udp(f: Forwarder, prefix: &str, opts: &BenchOptions) -> anyhow::Result<UdpResult> {
    let mut topo = Topology::up(f, prefix, false, opts)?;
    warm_up(&topo)?;
    let (tx_ns, rx_ns) = (topo.sender_ns(), topo.receiver_ns());
    let (_, tx0) = traffic::link_packets(&tx_ns, topo.sender_if())?;
    let (rx0, _) = traffic::link_packets(&rx_ns, topo.receiver_if())?;
    let (soft0, busy0) = traffic::cpu_times()?;
    match opts.sender {
        Sender::Sendmmsg => {
            traffic::blast(&tx_ns, SocketAddrV4::new(topo.dst(), 9), opts.duration, opts.sender_cpu)?;
        }
        Sender::Trafgen => {
            // The next hop: the receiver itself on one link (the overlay's too), the gateway when routed.
            let next_hop = if topo.dst().octets()[..3] == [10, 71, 1] { topo.dst() } else { GATEWAY };
            let flow = traffic::TrafgenFlow {
                ifname: topo.sender_if().to_string(),
                dst_mac: traffic::neighbour_mac(&tx_ns, next_hop)?,
                src: SENDER,
                dst: topo.dst(),
            };
            traffic::trafgen(&tx_ns, &flow, opts.duration, opts.sender_cpu)?;
        }
    }
    let (soft1, busy1) = traffic::cpu_times()?;
    std::thread::sleep(Duration::from_millis(300));
    let (_, tx1) = traffic::link_packets(&tx_ns, topo.sender_if())?;
    let (rx1, _) = traffic::link_packets(&rx_ns, topo.receiver_if())?;
    let secs = opts.duration.as_secs_f64();
    let delivered = rx1.saturating_sub(rx0).max(1) as f64;
    let (busy, drops) = topo.stop_switch()?;
    Ok(UdpResult {
        offered_pps: tx1.saturating_sub(tx0) as f64 / secs,
        delivered_pps: rx1.saturating_sub(rx0) as f64 / secs,
        softirq_ns_per_pkt: soft1.saturating_sub(soft0) as f64 / delivered,
        cpu_ns_per_pkt: busy1.saturating_sub(busy0) as f64 / delivered,
        vswitchd_busy_ns_per_pkt: busy.filter(|(_, _, p)| *p > 0).map(|(b, _, p)| b as f64 / p as f64),
        vswitchd_cpu_ns_per_pkt: busy.filter(|(_, c, p)| *p > 0 && *c > 0).map(|(_, c, p)| c as f64 / p as f64),
        vswitchd_drops: drops,
    })
}

fn tcp(f: Forwarder, prefix: &str, offloads: bool, opts: &BenchOptions) -> anyhow::Result<TcpResult> {
    let topo = Topology::up(f, prefix, offloads, opts)?;
    warm_up(&topo)?;
    let tx_ns = topo.sender_ns();
    let retr0 = traffic::tcp_retransmits(&tx_ns)?;
    let server = TcpServer::start(&topo.receiver_ns(), 5201, opts.duration + Duration::from_secs(20))?;
    let sent = traffic::tcp_stream(&tx_ns, SocketAddrV4::new(topo.dst(), 5201), opts.duration, opts.sender_cpu);
    let got = server.finish();
    let _sent = sent?;
    let got = got?;
    let retr1 = traffic::tcp_retransmits(&tx_ns)?;
    Ok(TcpResult {
        gbit_per_s: got.bytes as f64 * 8.0 / opts.duration.as_secs_f64() / 1e9,
        retransmits: retr1.saturating_sub(retr0),
    })
}
