//! Overlay networks across hosts, live: a real three-member etcd cluster (on loopback, started and killed by
//! PID), and per host a namespace with its own `vswitchd run` (started empty) and `vswitch-agent` with a
//! `[cluster]` section; root only (skips otherwise), and only with etcd installed (`.ci/run` installs it).
//!
//! Topology of the first test (every name carries the test's PID; nothing is created in the root namespace but the agents'
//! processes, which only talk to the Unix sockets and to etcd on 127.0.0.1):
//! - namespace `vo{pid}u`: the underlay, a Linux bridge `vo{pid}br` with one veth per host (10.200.0.0/24);
//! - per host `hN`: namespace `vo{pid}hN` with vswitchd, whose routed port `under` (afpacket on the veth
//!   `vo{pid}uN`, 10.200.0.1N/24) is the VTEP; a container namespace `vo{pid}cN` holding the tap of port `c1`
//!   (overlay network `red`, 10.1.0.0/24, VNI allocated through etcd), MAC 02:00:00:00:01:0N, 10.1.0.1N;
//!   hosts 1 and 2 also have a container `vo{pid}dN` on network `blue` (same addresses 10.1.0.5N, VNI 200, no
//!   gateway);
//! - namespace `vo{pid}k`: a Linux kernel `vxlan` device (`dstport 4789 nolearning`) at 10.200.0.50, 10.1.0.60 in
//!   red, registered in etcd by hand (the interop check).
//!
//! The test (one, to share the cluster's start-up): members and endpoints appear on every host; cross-host ping
//! and a TCP transfer with its bytes compared; the underlay capture holds only ARP and VXLAN (UDP 4789, red's VNI,
//! DF, host addresses); a subnet broadcast and a multicast datagram reach the other hosts' containers; blue and
//! red do not leak into each other; the kernel VTEP and an overlay container ping each other both ways; a fourth
//! host joins with only its own configuration and is reachable within 5 s; SIGTERM of an agent removes its host
//! on the others within 1 s; SIGKILL of a host's agent and vswitchd removes it within TTL + 3 s. Lease TTL 2 s.
//!
//! A second test (names `vp{pid}…`, its own etcd): the etcd leader killed during a continuous ping loses at
//! most one ping; a third host joins with two members left; with two members down (no quorum) pings go on and
//! every host keeps its members and endpoints past the lease TTL (nothing is flushed).

mod common;
#[path = "../../dataplane/tests/common/netns.rs"]
mod netns;

use common::etcd::{etcd_missing, Etcd};
use netns::{skip_reason, Netns};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_vswitch-agent");
const CTL: &str = env!("CARGO_BIN_EXE_vswitchctl");
const WAIT: Duration = Duration::from_secs(15);
const TTL_SECS: u64 = 2;
const BLUE_VNI: u64 = 200;

/// The vswitchd binary next to this test's target directory, built if missing.
fn vswitchd_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).expect("test binary in target/PROFILE/deps");
    let bin = profile_dir.join("vswitchd");
    if !bin.exists() {
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(other) => other.to_string(),
        };
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", "dataplane", "--bin", "vswitchd", "--profile", &profile, "--target-dir"])
            .arg(profile_dir.parent().unwrap())
            .status()
            .expect("run cargo build")
            .success();
        assert!(ok && bin.exists(), "could not build {}", bin.display());
    }
    bin
}

/// A child process, ended by its PID (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the PID of a child this test started and has not yet waited for.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill {}", self.child.id());
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_now();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(CTL).arg("--socket").arg(socket).args(args).output().expect("run vswitchctl")
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

fn ping(ns: &Netns, ip: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &ns.0, "ping", "-c", "1", "-W", "1", ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One host: its namespaces, vswitchd and agent.
struct Host {
    n: u8,
    pre: String,
    ns: Netns,
    red: Netns,
    blue: Option<Netns>,
    socket: PathBuf,
    cfg: PathBuf,
    /// Declared before `vswitchd`: dropped (stopped) first.
    agent: Option<Proc>,
    vswitchd: Option<Proc>,
}

struct World {
    /// `vo{pid}` or `vp{pid}`: every name of this test starts with it (two tests run at once in one process).
    pre: String,
    dir: tempfile::TempDir,
    etcd: Etcd,
    underlay: Netns,
}

impl World {
    /// The underlay namespace and bridge, and a three-member etcd.
    fn new(letters: &str) -> World {
        let pre = format!("{letters}{}", std::process::id());
        let underlay = Netns::create(&format!("{pre}u"));
        underlay.disable_ipv6();
        let br = format!("{pre}br");
        underlay.ip(&["link", "add", &br, "type", "bridge"]);
        underlay.ip(&["link", "set", "dev", &br, "up"]);
        World { pre, dir: tempfile::tempdir().unwrap(), etcd: Etcd::start(3), underlay }
    }

    fn tag(&self, what: &str, n: u8) -> String {
        format!("{}{what}{n}", self.pre)
    }

    /// A veth from namespace `ns` (end `inside`, up) to the underlay bridge.
    fn plug(&self, ns: &Netns, inside: &str, bridge_end: &str) {
        ns.ip(&["link", "add", inside, "type", "veth", "peer", "name", bridge_end, "netns", &self.underlay.0]);
        ns.ip(&["link", "set", "dev", inside, "up"]);
        let br = format!("{}br", self.pre);
        self.underlay.ip(&["link", "set", "dev", bridge_end, "master", &br]);
        self.underlay.ip(&["link", "set", "dev", bridge_end, "up"]);
    }

    fn config(&self, n: u8, blue: bool) -> String {
        let etcd = self.etcd.endpoints().iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
        let pre = &self.pre;
        let mut s = format!(
            r#"[cluster]
name = "{pre}"
host = "h{n}"
etcd = [{etcd}]
lease_ttl_secs = {TTL_SECS}
vtep_port = "under"

[[network]]
name = "red"
scope = "overlay"
subnet = "10.1.0.0/24"
gateway = "10.1.0.1"

[[port]]
name = "c1"
kind = "tap"
ifname = "{pre}t{n}"
network = "red"
netns = "{pre}c{n}"
endpoint_mac = "02:00:00:00:01:0{n}"
endpoint_ip = "10.1.0.1{n}"

[[port]]
name = "under"
kind = "afpacket"
ifname = "{pre}u{n}"
address = "10.200.0.1{n}/24"
"#
        );
        if blue {
            s += &format!(
                r#"
[[network]]
name = "blue"
scope = "overlay"
vni = {BLUE_VNI}

[[port]]
name = "b1"
kind = "tap"
ifname = "{pre}v{n}"
network = "blue"
netns = "{pre}d{n}"
endpoint_mac = "02:00:00:00:02:0{n}"
endpoint_ip = "10.1.0.5{n}"
"#
            );
        }
        s
    }

    /// Creates host `n`'s namespaces and underlay link and starts its vswitchd and agent.
    fn host(&self, n: u8, blue: bool) -> Host {
        let ns = Netns::create(&self.tag("h", n));
        let red = Netns::create(&self.tag("c", n));
        let blue_ns = blue.then(|| Netns::create(&self.tag("d", n)));
        for x in [Some(&ns), Some(&red), blue_ns.as_ref()].into_iter().flatten() {
            x.disable_ipv6();
        }
        self.plug(&ns, &self.tag("u", n), &self.tag("b", n));
        let socket = self.dir.path().join(format!("h{n}.sock"));
        let cfg = self.dir.path().join(format!("h{n}.toml"));
        std::fs::write(&cfg, self.config(n, blue)).unwrap();
        let mut h = Host { n, pre: self.pre.clone(), ns, red, blue: blue_ns, socket, cfg, agent: None, vswitchd: None };
        h.start_vswitchd(self.dir.path());
        h.start_agent(self.dir.path());
        h
    }
}

impl Host {
    fn start_vswitchd(&mut self, dir: &Path) {
        let log = std::fs::File::create(dir.join(format!("h{}-vswitchd.log", self.n))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.0])
            .arg(vswitchd_binary())
            .args(["run", "--socket"])
            .arg(&self.socket)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start vswitchd");
        self.vswitchd = Some(Proc { child });
        let socket = self.socket.clone();
        wait_until("vswitchd's socket", WAIT, || ctl(&socket, &["version"]).status.success());
    }

    fn start_agent(&mut self, dir: &Path) {
        let log = std::fs::File::create(dir.join(format!("h{}-agent.log", self.n))).unwrap();
        let child = Command::new(AGENT)
            .arg("--config")
            .arg(&self.cfg)
            .arg("--socket")
            .arg(&self.socket)
            .args(["--poll-ms", "20", "--settle-ms", "100", "--check-ms", "200"])
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start vswitch-agent");
        self.agent = Some(Proc { child });
    }

    /// `network inspect NET`'s overlay part.
    fn overlay(&self, net: &str) -> serde_json::Value {
        let out = ctl(&self.socket, &["--json", "network", "inspect", net]);
        if !out.status.success() {
            return serde_json::Value::Null;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["overlay"].clone()
    }

    /// The member hosts `net` has here, sorted.
    fn members(&self, net: &str) -> Vec<String> {
        let o = self.overlay(net);
        let mut v: Vec<String> = o["members"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["host"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn endpoint_count(&self, net: &str) -> usize {
        self.overlay(net)["endpoints"].as_array().map_or(0, Vec::len)
    }

    /// Gives the container's tap (once vswitchd moved it there) its registered MAC, address and default route.
    fn configure(&self) {
        let pre = &self.pre;
        let setups = [(Some(&self.red), format!("{pre}t{}", self.n), 1u8, true)]
            .into_iter()
            .chain(self.blue.as_ref().map(|b| (Some(b), format!("{pre}v{}", self.n), 2u8, false)));
        for (ns, ifname, kind, route) in setups {
            let ns = ns.unwrap();
            wait_until(&format!("tap {ifname}"), WAIT, || {
                netns::ip_output(&["-n", &ns.0, "link", "show", "dev", &ifname]).status.success()
            });
            let mac = format!("02:00:00:00:0{kind}:0{}", self.n);
            let addr = if kind == 1 { format!("10.1.0.1{}/24", self.n) } else { format!("10.1.0.5{}/24", self.n) };
            ns.ip(&["link", "set", "dev", &ifname, "address", &mac]);
            // The overlay MTU (1500 - 50), as `network inspect` shows it: what Docker gives overlay containers.
            ns.ip(&["link", "set", "dev", &ifname, "mtu", "1450"]);
            ns.ip(&["addr", "add", &addr, "dev", &ifname]);
            ns.ip(&["link", "set", "dev", &ifname, "up"]);
            if route {
                ns.ip(&["route", "add", "default", "via", "10.1.0.1"]);
            }
        }
    }
}

/// Frames seen on `ifname` in `ns` while `during` runs (an AF_PACKET socket on a thread inside the namespace).
fn capture(ns: &Netns, ifname: &str, during: impl FnOnce()) -> Vec<Vec<u8>> {
    let ifname = ifname.to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop);
    let handle = ns.spawn(move || {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket(2) with constant arguments; the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(index > 0, "no such interface");
        // SAFETY: zeroed sockaddr_ll is valid; the fields set are the ones bind(2) reads for AF_PACKET.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: bind(2) with a sockaddr_ll of the size given.
        let rc =
            unsafe { libc::bind(fd, std::ptr::addr_of!(sll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32) };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
        // SAFETY: setsockopt(2) with a timeval of the size given.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::addr_of!(tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        ready_tx.send(()).unwrap();
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: recv(2) into a buffer of the length given.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                frames.push(buf[..n as usize].to_vec());
            }
        }
        // SAFETY: closes the fd opened above, once.
        unsafe { libc::close(fd) };
        frames
    });
    ready_rx.recv().unwrap();
    during();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    handle.join().unwrap()
}

/// Every underlay frame is ARP or VXLAN between host addresses with DF, UDP port 4789 and one of `vnis`;
/// returns how many VXLAN frames carried each VNI.
fn check_underlay(frames: &[Vec<u8>], hosts: &[Ipv4Addr], vnis: &[u64]) -> std::collections::BTreeMap<u64, usize> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let mut seen = std::collections::BTreeMap::new();
    for f in frames {
        if f.get(12..14) == Some(&[0x08, 0x06]) {
            continue;
        }
        let p = SlicedPacket::from_ethernet(f).expect("underlay frame decodes");
        let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("non-IPv4, non-ARP frame on the underlay: {f:02x?}") };
        let h = ip.header();
        assert!(hosts.contains(&h.source_addr()) && hosts.contains(&h.destination_addr()), "{h:?}");
        assert!(h.dont_fragment(), "DF on every VXLAN packet: {h:?}");
        let Some(TransportSlice::Udp(u)) = &p.transport else { panic!("non-UDP on the underlay: {h:?}") };
        assert_eq!(u.destination_port(), 4789);
        let vx = u.payload();
        assert_eq!(vx[0], 0x08, "VXLAN I flag");
        let vni = u64::from(u32::from_be_bytes([0, vx[4], vx[5], vx[6]]));
        assert!(vnis.contains(&vni), "VNI {vni} is not one of {vnis:?}");
        *seen.entry(vni).or_insert(0) += 1;
    }
    seen
}

/// Sends `len` bytes from `from` (in its container) to `to_ip:7000` (a listener in `to`) and returns what
/// arrived.
fn tcp_transfer(from: &Netns, to: &Netns, to_ip: Ipv4Addr, len: usize) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = to.spawn(move || {
        let l = TcpListener::bind(SocketAddrV4::new(to_ip, 7000)).unwrap();
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        // A stall ends in a timeout: what arrived is compared (and found short).
        let _ = s.read_to_end(&mut got);
        got
    });
    rx.recv().unwrap();
    let sent = data.clone();
    from.run(move || {
        let mut s = TcpStream::connect_timeout(&SocketAddrV4::new(to_ip, 7000).into(), Duration::from_secs(5)).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&sent).and_then(|()| s.shutdown(std::net::Shutdown::Write));
    });
    (data, server.join().unwrap())
}

/// A subnet broadcast and a multicast datagram from `from` reach a receiver in each of `to`.
fn broadcast_and_multicast(from: &Netns, to: &[(&Netns, Ipv4Addr)]) -> Vec<Vec<String>> {
    let group = Ipv4Addr::new(239, 5, 5, 5);
    let mut receivers = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel();
    for &(ns, ip) in to {
        let tx = tx.clone();
        receivers.push(ns.spawn(move || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 5555)).unwrap();
            s.join_multicast_v4(&group, &ip).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            tx.send(()).unwrap();
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut buf = [0u8; 64];
            while got.len() < 2 && Instant::now() < deadline {
                if let Ok(n) = s.recv(&mut buf) {
                    let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if !got.contains(&m) {
                        got.push(m);
                    }
                }
            }
            got.sort();
            got
        }));
    }
    for _ in to {
        rx.recv().unwrap();
    }
    from.run(move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.set_broadcast(true).unwrap();
        s.set_multicast_ttl_v4(1).unwrap();
        // Repeated a few times: the first copies may wait for the underlay ARP.
        for _ in 0..10 {
            s.send_to(b"broadcast", (Ipv4Addr::new(10, 1, 0, 255), 5555)).unwrap();
            s.send_to(b"multicast", (group, 5555)).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    receivers.into_iter().map(|r| r.join().unwrap()).collect()
}

#[test]
fn overlay_hosts_join_reach_each_other_and_leave() {
    if let Some(why) = skip_reason().or_else(etcd_missing) {
        eprintln!("skipping the overlay live test: {why}");
        return;
    }
    let t0 = Instant::now();
    let world = World::new("vo");
    let pre = world.pre.clone();
    let mut hosts: Vec<Host> = (1..=3).map(|n| world.host(n, n <= 2)).collect();
    for h in &hosts {
        h.configure();
    }
    for h in &hosts {
        let others: Vec<String> = hosts.iter().filter(|o| o.n != h.n).map(|o| format!("h{}", o.n)).collect();
        wait_until(&format!("h{} to list {others:?} in red", h.n), WAIT, || h.members("red") == others);
        wait_until(&format!("h{}'s remote endpoints", h.n), WAIT, || h.endpoint_count("red") == 2);
    }
    let red_vni = hosts[0].overlay("red")["vni"].as_u64().expect("red has a VNI");
    assert!(red_vni >= 4096, "allocated through etcd from 4096: {red_vni}");
    assert!(hosts.iter().all(|h| h.overlay("red")["vni"].as_u64() == Some(red_vni)), "one VNI everywhere");

    // Cross-host ping, both ways, and a TCP transfer.
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    wait_until("c1 (h1) pings c2 (h2)", WAIT, || ping(&h1.red, "10.1.0.12"));
    wait_until("c3 (h3) pings c1 (h1)", WAIT, || ping(&h3.red, "10.1.0.11"));
    let (sent, got) = tcp_transfer(&h1.red, &h2.red, Ipv4Addr::new(10, 1, 0, 12), 1 << 20);
    assert!(got == sent, "TCP bytes arrive intact: sent {}, got {}", sent.len(), got.len());

    // The underlay carries only ARP and VXLAN between host addresses, DF set, red's VNI (and blue's).
    let vteps: Vec<Ipv4Addr> = (1..=4).map(|n| Ipv4Addr::new(10, 200, 0, 10 + n)).collect();
    let frames = capture(&world.underlay, &world.tag("b", 1), || {
        assert!(ping(&h1.red, "10.1.0.13"));
        assert!(ping(&h1.red, "10.1.0.12"));
    });
    let seen = check_underlay(&frames, &vteps, &[red_vni, BLUE_VNI]);
    assert!(seen.get(&red_vni).is_some_and(|&c| c >= 4), "pings crossed as VXLAN: {seen:?}");

    // Broadcast and multicast reach the containers of the other hosts.
    let got = broadcast_and_multicast(
        &h1.red,
        &[(&h2.red, Ipv4Addr::new(10, 1, 0, 12)), (&h3.red, Ipv4Addr::new(10, 1, 0, 13))],
    );
    assert_eq!(got, vec![vec!["broadcast".to_string(), "multicast".to_string()]; 2]);

    // Same addresses, another VNI: blue's containers reach each other, red's cannot reach blue's.
    let (b1, b2) = (h1.blue.as_ref().unwrap(), h2.blue.as_ref().unwrap());
    wait_until("b1 (h1, blue) pings b2 (h2, blue)", WAIT, || ping(b1, "10.1.0.52"));
    let frames = capture(&world.underlay, &world.tag("b", 1), || {
        assert!(!ping(&h1.red, "10.1.0.52"), "red must not reach blue");
        assert!(!ping(&h3.red, "10.1.0.51"), "red must not reach blue");
    });
    check_underlay(&frames, &vteps, &[red_vni, BLUE_VNI]);
    assert!(ping(b2, "10.1.0.51"));

    // Interop: a kernel vxlan device registered by hand pings a container both ways.
    let kns = Netns::create(&format!("{pre}k"));
    kns.disable_ipv6();
    let (kveth, kbr, kvx) = (format!("{pre}k0"), format!("{pre}bk"), format!("{pre}x"));
    world.plug(&kns, &kveth, &kbr);
    kns.ip(&["addr", "add", "10.200.0.50/24", "dev", &kveth]);
    let id = red_vni.to_string();
    kns.ip(&["link", "add", &kvx, "type", "vxlan", "id", &id, "dstport", "4789", "local", "10.200.0.50"]);
    kns.ip(&["link", "set", "dev", &kvx, "type", "vxlan", "nolearning"]);
    kns.ip(&["link", "set", "dev", &kvx, "address", "02:00:00:00:0a:01"]);
    kns.ip(&["addr", "add", "10.1.0.60/24", "dev", &kvx]);
    kns.ip(&["link", "set", "dev", &kvx, "up"]);
    let fdb = Command::new("ip")
        .args(["netns", "exec", &kns.0, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", &kvx])
        .args(["dst", "10.200.0.11"])
        .status()
        .unwrap();
    assert!(fdb.success(), "bridge fdb append");
    let prefix = format!("/vswitch/v1/{pre}/");
    let host = r#"{"vtep":"10.200.0.50","udp_port":4789,"mtu":1500,"networks":["red"]}"#;
    let ep = r#"{"network":"red","mac":"02:00:00:00:0a:01","ip":"10.1.0.60"}"#;
    world.etcd.ctl(&["put", &format!("{prefix}hosts/kvx"), host]).expect("etcdctl put host");
    world.etcd.ctl(&["put", &format!("{prefix}endpoints/kvx/red/02:00:00:00:0a:01"), ep]).expect("etcdctl put");
    wait_until("h1 lists the kernel VTEP", WAIT, || h1.members("red").contains(&"kvx".to_string()));
    wait_until("c1 pings the kernel vxlan device", WAIT, || ping(&h1.red, "10.1.0.60"));
    wait_until("the kernel vxlan device pings c1", WAIT, || ping(&kns, "10.1.0.11"));

    // A fourth host joins with only its own configuration: reachable within 5 s, nothing touched elsewhere.
    let joined = Instant::now();
    let h4 = world.host(4, false);
    h4.configure();
    wait_until("c4 (h4) pings c1 (h1)", Duration::from_secs(5).saturating_sub(joined.elapsed()), || {
        ping(&h4.red, "10.1.0.11")
    });
    let join_time = joined.elapsed();
    assert!(join_time <= Duration::from_secs(5), "joined in {join_time:?}");
    wait_until("h1 lists h4", WAIT, || h1.members("red").contains(&"h4".to_string()));
    hosts.push(h4);

    // SIGTERM of h4's agent: its lease is revoked, h1 drops it within a second.
    let a4 = hosts[3].agent.take();
    let stopped = Instant::now();
    drop(a4);
    wait_until("h1 to drop h4 (SIGTERM)", Duration::from_secs(3), || {
        !hosts[0].members("red").contains(&"h4".to_string())
    });
    let sigterm_time = stopped.elapsed();
    assert!(sigterm_time <= Duration::from_secs(1), "SIGTERM: removed after {sigterm_time:?}");

    // SIGKILL of h3's agent and vswitchd: h1 drops it after the lease's TTL, within TTL + 3 s.
    let killed = Instant::now();
    hosts[2].agent.as_mut().unwrap().kill_now();
    hosts[2].vswitchd.as_mut().unwrap().kill_now();
    wait_until("h1 to drop h3 (SIGKILL)", Duration::from_secs(TTL_SECS + 3), || {
        !hosts[0].members("red").contains(&"h3".to_string())
    });
    let sigkill_time = killed.elapsed();
    assert!(hosts[0].endpoint_count("red") >= 1, "h2's endpoint stays");
    assert!(ping(&hosts[0].red, "10.1.0.12"), "h1 and h2 still talk");
    eprintln!(
        "overlay live: join {join_time:?}, SIGTERM removal {sigterm_time:?}, SIGKILL removal {sigkill_time:?}, \
         total {:?}",
        t0.elapsed()
    );
    drop(kns);
}

/// `ping -i 0.1 -c COUNT` from `ns` to `ip` in the background; its (transmitted, received) when joined.
fn ping_loop(ns: &Netns, ip: &str, count: u32) -> std::thread::JoinHandle<(u32, u32)> {
    let (ns, ip) = (ns.0.clone(), ip.to_string());
    std::thread::spawn(move || {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "ping", "-n", "-q", "-i", "0.1", "-W", "1", "-c", &count.to_string(), &ip])
            .output()
            .expect("run ping");
        let text = String::from_utf8_lossy(&out.stdout);
        // "20 packets transmitted, 19 received, 5% packet loss, time 1905ms"
        let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_default().to_string();
        let nums: Vec<u32> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
        (nums.first().copied().unwrap_or(0), nums.get(1).copied().unwrap_or(0))
    })
}

#[test]
fn overlay_survives_the_etcd_leader_and_two_members_going_down() {
    if let Some(why) = skip_reason().or_else(etcd_missing) {
        eprintln!("skipping the overlay live test: {why}");
        return;
    }
    let mut world = World::new("vp");
    let hosts: Vec<Host> = (1..=2).map(|n| world.host(n, false)).collect();
    for h in &hosts {
        h.configure();
    }
    let (h1, h2) = (&hosts[0], &hosts[1]);
    wait_until("h1 lists h2", WAIT, || h1.members("red") == ["h2"]);
    wait_until("h2 lists h1", WAIT, || h2.members("red") == ["h1"]);
    wait_until("c1 pings c2", WAIT, || ping(&h1.red, "10.1.0.12"));

    // The etcd leader killed during a continuous ping: at most one ping lost.
    let pings = ping_loop(&h1.red, "10.1.0.12", 30);
    std::thread::sleep(Duration::from_millis(800));
    let leader = world.etcd.leader().expect("a leader");
    world.etcd.kill(leader);
    let (sent, received) = pings.join().unwrap();
    assert!(sent >= 30 && sent - received <= 1, "leader kill: {received} of {sent} pings answered");

    // A host still joins with two members left.
    let joined = Instant::now();
    let h3 = world.host(3, false);
    h3.configure();
    wait_until("c3 (h3) pings c1 (h1) with two etcd members", WAIT, || ping(&h3.red, "10.1.0.11"));
    let join_time = joined.elapsed();
    wait_until("h1 lists h3", WAIT, || h1.members("red") == ["h2", "h3"]);

    // Two members down (no quorum): forwarding goes on and nothing is flushed, even past the lease TTL.
    let second = (0..3).find(|&i| i != leader).unwrap();
    world.etcd.kill(second);
    let pings = ping_loop(&h1.red, "10.1.0.13", 10 * (TTL_SECS as u32 + 2));
    let (sent, received) = pings.join().unwrap();
    assert!(sent > 0 && received == sent, "without quorum: {received} of {sent} pings answered");
    for h in [h1, h2, &h3] {
        let others: Vec<String> = [1, 2, 3].iter().filter(|&&n| n != h.n).map(|n| format!("h{n}")).collect();
        assert_eq!(h.members("red"), others, "h{} keeps its members", h.n);
        assert_eq!(h.endpoint_count("red"), 2, "h{} keeps its endpoints", h.n);
    }
    eprintln!("overlay live (etcd failures): join on two members {join_time:?}");
}
