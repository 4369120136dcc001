//! TCP with the kernel's default offloads through a running `vswitchd` (issue 12's "done means"): vswitchd in a
//! namespace of its own, hosts in others, every host interface with its default offloads (TSO, GSO, tx checksum
//! offload on). Each test moves a byte-verified stream both ways (`common/transfer.rs`: every byte checked) and
//! then checks, from the counters vswitchd prints when stopped, that super-frames crossed whole (average frame
//! received from each host over 10 KB), and from `/proc/net/snmp` that no receiver saw a bad TCP or UDP checksum.
//!
//! - tap ↔ tap, veth ↔ veth over AF_PACKET, tap ↔ veth, on one L2 network;
//! - routed between two networks;
//! - masqueraded to a sink one kernel hop behind a namespace router whose egress has tx checksum offload off
//!   (`ethtool -K tx off`): the router's kernel completes in software every checksum vswitchd's NAT left
//!   partial, and segments its super-frames, so a wrong pseudo-header update shows as `TcpInCsumErrors` at the
//!   sink;
//! - the same with a 1400-byte link between vswitchd and that router: super-frames whose segments do not fit
//!   get ICMP Frag Needed (`needs-fragmentation`), the sender lowers its path MTU and the transfer completes;
//! - jumbo frames: MTU 9000 tap to tap and veth to veth (AF_PACKET), a 9000-byte ping with DF and TCP in
//!   9014-byte frames;
//! - `mss_clamp` on a port: tshark on both hosts reads the MSS of the SYN and SYN-ACK after the switch.
//!
//! Transfers are small (16 MiB each way): these run in CI. Live tests skip with a message when not root.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/transfer.rs"]
mod transfer;

use daemon::Daemon;
use netns::{skip_reason, Netns};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Bytes each way per transfer.
const LEN: usize = 16 << 20;

/// A test's namespaces (deleted when dropped, with every interface in them) and its vswitchd.
struct World {
    tag: String,
    sw: Netns,
    hosts: Vec<Netns>,
    dir: tempfile::TempDir,
    daemon: Option<Daemon>,
}

impl World {
    /// The switch's namespace and `hosts` host namespaces, named after `test` and this process.
    fn new(test: &str, hosts: usize) -> World {
        let tag = format!("vo{}{test}", std::process::id());
        let sw = Netns::create(&format!("{tag}s"));
        let hosts = (0..hosts).map(|i| Netns::create(&format!("{tag}h{i}"))).collect();
        World { tag, sw, hosts, dir: tempfile::tempdir().unwrap(), daemon: None }
    }

    fn host(&self, i: usize) -> &Netns {
        &self.hosts[i]
    }

    /// An interface name of this test (at most 15 bytes: `vo` + PID + test letter + `suffix`).
    fn ifname(&self, suffix: &str) -> String {
        let n = format!("{}{suffix}", self.tag);
        assert!(n.len() <= 15, "{n} is too long");
        n
    }

    /// A veth pair: `sw_end` in the switch's namespace (given to an AF_PACKET port, no address), `host_end` in
    /// host `h`; both up, MTU `mtu`.
    fn veth(&self, h: usize, sw_end: &str, host_end: &str, mtu: u16) {
        let host = &self.hosts[h].0;
        let mtu = mtu.to_string();
        netns::ip(&[
            "link", "add", sw_end, "netns", &self.sw.0, "mtu", &mtu, "type", "veth", "peer", "name", host_end, "netns",
            host, "mtu", &mtu,
        ]);
        self.sw.ip(&["link", "set", "dev", sw_end, "up"]);
        self.hosts[h].ip(&["link", "set", "dev", host_end, "up"]);
    }

    /// Starts vswitchd with `config` in the switch's namespace.
    fn start(&mut self, config: &str) {
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, format!("[switch]\nworkers = 1\n\n{config}")).unwrap();
        let socket = self.dir.path().join("ctl.sock");
        let args = ["run", "--config", path.to_str().unwrap(), "--socket", socket.to_str().unwrap()];
        self.daemon = Some(Daemon::spawn_in(&self.sw, args));
    }

    /// Stops vswitchd and returns its final counters.
    fn stop(&mut self) -> Value {
        let out = self.daemon.as_mut().expect("started").terminate();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("counters JSON on stdout")
    }
}

/// Waits up to 5 s for `ifname` to exist in `ns` (a tap vswitchd creates and moves there).
fn wait_link(ns: &Netns, ifname: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !netns::ip_output(&["-n", &ns.0, "link", "show", "dev", ifname]).status.success() {
        assert!(Instant::now() < deadline, "{ifname} did not appear in {}", ns.0);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gives `ifname` in `ns` address `cidr`, brings it up, and a default route via `gw` if given.
fn address(ns: &Netns, ifname: &str, cidr: &str, gw: Option<&str>) {
    ns.ip(&["addr", "add", cidr, "dev", ifname]);
    ns.ip(&["link", "set", "dev", ifname, "up"]);
    if let Some(gw) = gw {
        ns.ip(&["route", "add", "default", "via", gw]);
    }
}

/// Runs a command inside `ns`, panicking with its output on failure.
fn exec(ns: &Netns, args: &[&str]) {
    let out = Command::new("ip").args(["netns", "exec", &ns.0]).args(args).output().expect("ip netns exec");
    assert!(out.status.success(), "{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Port `name`'s I/O counters from a report.
fn io<'a>(report: &'a Value, name: &str) -> &'a Value {
    &report["ports"][name]["io"]
}

/// Asserts that the frames port `name` received averaged over 10 KB (super-frames carried whole) and that it
/// dropped none; returns the average.
fn assert_super_frames(report: &Value, name: &str) -> u64 {
    let io = io(report, name);
    let (packets, bytes) = (io["rx_packets"].as_u64().unwrap(), io["rx_bytes"].as_u64().unwrap());
    assert!(packets > 0, "{name}: {io}");
    let avg = bytes / packets;
    assert!(avg > 10_000, "{name}: average frame received {avg} bytes: {io}");
    assert!(io["rx_super_frames"].as_u64().unwrap() > 0, "{name}: {io}");
    assert_eq!(io["rx_dropped"], 0, "{name}: {io}");
    // One direction's data, the other's ACKs, headers and a few retransmissions: a port that hands frames over
    // twice (a receive ring walked wrongly) shows here, as the receiver silently drops the duplicates.
    assert!(bytes < (LEN as u64) * 5 / 4, "{name}: {bytes} bytes received for {LEN} bytes of data: {io}");
    avg
}

/// Asserts the switch dropped nothing for its size or offload metadata.
fn assert_no_size_drops(report: &Value) {
    let drops = &report["drops"];
    for reason in ["too-long", "egress-too-long", "offload-mismatch", "gso-segment-too-small"] {
        assert!(drops[reason].is_null(), "{reason}: {drops}");
    }
}

/// Moves [`LEN`] checked bytes each way between `client` and `server` (at `server_ip`), then checks both
/// receivers (and `also`) saw no checksum error. Returns the transfer.
fn transfer_both_ways(client: &Netns, server: &Netns, server_ip: Ipv4Addr, also: &[&Netns]) -> transfer::Transfer {
    let t = transfer::verified_transfer(client, server, server_ip, 5201, LEN, Duration::from_secs(60));
    for ns in [client, server].into_iter().chain(also.iter().copied()) {
        assert_eq!(transfer::csum_errors(ns), (0, 0), "TcpInCsumErrors/UdpInCsumErrors in {}", ns.0);
    }
    t
}

/// An L2 network with two host ports; `taps[i]` says whether host `i` is behind a tap (else a veth on an
/// AF_PACKET port), `extra[i]` is added to port `p{i}`'s table, `mtu` is the veths' MTU. Hosts get 10.60.0.1 and
/// .2/24 on the interfaces returned.
fn l2_world(test: &str, taps: [bool; 2], extra: [&str; 2], mtu: u16) -> (World, Vec<String>) {
    let mut w = World::new(test, 2);
    let mut ports = String::from("[[network]]\nname = \"lan\"\n\n");
    let mut host_if = Vec::new();
    for (i, &tap) in taps.iter().enumerate() {
        let extra = extra[i];
        if tap {
            let t = w.ifname(&format!("t{i}"));
            let ns = &w.host(i).0;
            ports += &format!(
                "[[port]]\nname = \"p{i}\"\nkind = \"tap\"\nifname = \"{t}\"\nnetwork = \"lan\"\nnetns = \"{ns}\"\n{extra}\n\n"
            );
            host_if.push(t);
        } else {
            let (s, h) = (w.ifname(&format!("s{i}")), w.ifname(&format!("h{i}")));
            w.veth(i, &s, &h, mtu);
            ports += &format!(
                "[[port]]\nname = \"p{i}\"\nkind = \"afpacket\"\nifname = \"{s}\"\nnetwork = \"lan\"\n{extra}\n\n"
            );
            host_if.push(h);
        }
    }
    w.start(&ports);
    for (i, ifname) in host_if.iter().enumerate() {
        wait_link(w.host(i), ifname);
        address(w.host(i), ifname, &format!("10.60.0.{}/24", i + 1), None);
    }
    (w, host_if)
}

/// [`l2_world`] with default ports and a transfer both ways. Returns the counters and the transfer's rate.
fn l2_pair(test: &str, taps: [bool; 2]) -> (Value, f64) {
    let (mut w, _) = l2_world(test, taps, ["", ""], 1500);
    let t = transfer_both_ways(w.host(0), w.host(1), Ipv4Addr::new(10, 60, 0, 2), &[]);
    let report = w.stop();
    for p in ["p0", "p1"] {
        assert_super_frames(&report, p);
    }
    assert_no_size_drops(&report);
    (report, t.gbit_per_s())
}

#[test]
fn live_tcp_tap_to_tap_carries_super_frames_both_ways() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let (report, gbit) = l2_pair("a", [true, true]);
    println!("tap <-> tap: {gbit:.2} Gbit/s; {} / {}", io(&report, "p0"), io(&report, "p1"));
    for p in ["p0", "p1"] {
        assert_eq!(io(&report, p)["sw_segmented"].as_u64().unwrap_or(0), 0, "{p}: nothing segmented between taps");
        let offloads = report["ports"][p]["offloads"].as_str().unwrap();
        assert!(offloads.starts_with("csum,tso4,tso6"), "{p}: what TUNSETOFFLOAD granted: {offloads}");
    }
}

#[test]
fn live_tcp_veth_to_veth_over_afpacket_carries_super_frames_both_ways() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let (report, gbit) = l2_pair("b", [false, false]);
    println!("veth <-> veth (AF_PACKET): {gbit:.2} Gbit/s; {} / {}", io(&report, "p0"), io(&report, "p1"));
    for p in ["p0", "p1"] {
        assert_eq!(io(&report, p)["sw_segmented"].as_u64().unwrap_or(0), 0, "{p}: nothing segmented (AF_PACKET)");
        assert!(io(&report, p)["tx_super_frames"].as_u64().unwrap() > 0, "{p}: sent whole with a vnet header");
        assert_eq!(report["ports"][p]["offloads"], "csum,tso4,tso6,uso", "{p}: an AF_PACKET socket takes them all");
    }
}

#[test]
fn live_tcp_tap_to_veth_carries_super_frames_both_ways() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let (report, gbit) = l2_pair("c", [true, false]);
    println!("tap <-> veth (AF_PACKET): {gbit:.2} Gbit/s; {} / {}", io(&report, "p0"), io(&report, "p1"));
}

#[test]
fn live_tcp_routed_between_two_networks_carries_super_frames_both_ways() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let mut w = World::new("d", 2);
    let (s0, h0, s1, h1) = (w.ifname("s0"), w.ifname("h0"), w.ifname("s1"), w.ifname("h1"));
    w.veth(0, &s0, &h0, 1500);
    w.veth(1, &s1, &h1, 1500);
    w.start(&format!(
        "[[network]]\nname = \"red\"\nsubnet = \"10.61.1.0/24\"\ngateway = \"10.61.1.1\"\n\n\
         [[network]]\nname = \"blue\"\nsubnet = \"10.61.2.0/24\"\ngateway = \"10.61.2.1\"\n\n\
         [[port]]\nname = \"p0\"\nkind = \"afpacket\"\nifname = \"{s0}\"\nnetwork = \"red\"\n\n\
         [[port]]\nname = \"p1\"\nkind = \"afpacket\"\nifname = \"{s1}\"\nnetwork = \"blue\"\n"
    ));
    address(w.host(0), &h0, "10.61.1.10/24", Some("10.61.1.1"));
    address(w.host(1), &h1, "10.61.2.20/24", Some("10.61.2.1"));
    let t = transfer_both_ways(w.host(0), w.host(1), Ipv4Addr::new(10, 61, 2, 20), &[]);
    let report = w.stop();
    println!("routed: {:.2} Gbit/s; {} / {}", t.gbit_per_s(), io(&report, "p0"), io(&report, "p1"));
    for p in ["p0", "p1"] {
        assert_super_frames(&report, p);
    }
    assert!(report["router"]["forwarded"].as_u64().unwrap() > 0, "{}", report["router"]);
}

/// A masquerade network (host 0, AF_PACKET) routed out of an uplink (AF_PACKET, 203.0.113.2/24, MTU
/// `uplink_mtu`) to a namespace router (host 1: 203.0.113.1, and 198.51.100.1 towards the sink with tx checksum
/// offload off), behind which the sink (host 2, 198.51.100.7) serves. The router has no route to the masquerade
/// network: only translated packets can be answered.
fn masquerade_world(test: &str, uplink_mtu: u16) -> World {
    let mut w = World::new(test, 3);
    let (s0, h0, su, r0) = (w.ifname("s0"), w.ifname("h0"), w.ifname("su"), w.ifname("r0"));
    let (r1, k0) = (w.ifname("r1"), w.ifname("k0"));
    w.veth(0, &s0, &h0, 1500);
    w.veth(1, &su, &r0, uplink_mtu);
    let (rtr, sink) = (w.host(1), w.host(2));
    netns::ip(&["link", "add", &r1, "netns", &rtr.0, "type", "veth", "peer", "name", &k0, "netns", &sink.0]);
    address(w.host(0), &h0, "10.62.1.10/24", Some("10.62.1.1"));
    address(rtr, &r0, "203.0.113.1/24", None);
    address(rtr, &r1, "198.51.100.1/24", None);
    address(sink, &k0, "198.51.100.7/24", Some("198.51.100.1"));
    exec(rtr, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    exec(rtr, &["ethtool", "-K", &r1, "tx", "off"]);
    w.start(&format!(
        "[[network]]\nname = \"red\"\nsubnet = \"10.62.1.0/24\"\ngateway = \"10.62.1.1\"\nmasquerade = true\n\n\
         [[port]]\nname = \"p0\"\nkind = \"afpacket\"\nifname = \"{s0}\"\nnetwork = \"red\"\n\n\
         [[port]]\nname = \"up\"\nkind = \"afpacket\"\nifname = \"{su}\"\naddress = \"203.0.113.2/24\"\n\
         mtu = {uplink_mtu}\n\n\
         [[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"203.0.113.1\"\n"
    ));
    w
}

#[test]
fn live_tcp_masqueraded_to_a_sink_behind_a_router_without_tx_checksum_offload() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let mut w = masquerade_world("e", 1500);
    let t = transfer_both_ways(w.host(0), w.host(2), Ipv4Addr::new(198, 51, 100, 7), &[w.host(1)]);
    let report = w.stop();
    println!("masqueraded: {:.2} Gbit/s; {} / {}", t.gbit_per_s(), io(&report, "p0"), io(&report, "up"));
    for p in ["p0", "up"] {
        assert_super_frames(&report, p);
    }
    assert_no_size_drops(&report);
    assert!(report["nat"]["snat_created"].as_u64().unwrap() > 0, "{}", report["nat"]);
}

#[test]
fn live_tcp_through_a_1400_byte_uplink_gets_frag_needed_and_completes() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let mut w = masquerade_world("f", 1400);
    let t = transfer_both_ways(w.host(0), w.host(2), Ipv4Addr::new(198, 51, 100, 7), &[w.host(1)]);
    // The sender learned the path MTU from the switch's Frag Needed.
    let route = w.host(0).ip_stdout(&["route", "get", "198.51.100.7"]);
    let report = w.stop();
    println!("masqueraded, 1400-byte uplink: {:.2} Gbit/s; {route}", t.gbit_per_s());
    let drops = &report["drops"];
    assert!(drops["needs-fragmentation"].as_u64().unwrap_or(0) > 0, "Frag Needed sent: {drops}");
    assert!(report["router"]["icmp_errors"].as_u64().unwrap() > 0, "{}", report["router"]);
    assert!(route.contains("mtu 1400"), "path MTU learned: {route}");
    // After the first refusals, super-frames cut to the uplink's MTU still cross whole.
    assert_super_frames(&report, "p0");
}

/// `ping -c 3 -M do -s 8972` (a 9000-byte IP packet, DF set) from `from` to `to`: true if answered.
fn jumbo_ping(from: &Netns, to: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "exec", &from.0, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-M", "do", "-s", "8972", to])
        .output()
        .expect("ping");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    out.status.success()
}

/// Asserts that port `name` received frames averaging over 4000 bytes, which 1514-byte frames cannot (9014-byte
/// data frames among the ACKs of the other direction; no super-frames: the hosts send wire-sized frames), and
/// dropped none.
fn assert_jumbo_frames(report: &Value, name: &str) {
    let io = io(report, name);
    let (packets, bytes) = (io["rx_packets"].as_u64().unwrap(), io["rx_bytes"].as_u64().unwrap());
    assert!(packets > 0 && bytes / packets > 4000, "{name}: average frame {} bytes: {io}", bytes / packets.max(1));
    assert_eq!(io["rx_super_frames"].as_u64().unwrap_or(0), 0, "{name}: {io}");
    assert_eq!(io["rx_dropped"], 0, "{name}: {io}");
}

#[test]
fn live_jumbo_mtu_9000_between_taps_carries_9000_byte_packets_and_tcp() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    // Without offloads the hosts send wire-sized frames: 9014 bytes for a full TCP segment.
    let jumbo = "mtu = 9000\noffload = false";
    let (mut w, host_if) = l2_world("g", [true, true], [jumbo, jumbo], 9000);
    for (i, ifname) in host_if.iter().enumerate() {
        let link = w.host(i).ip_stdout(&["link", "show", "dev", ifname]);
        assert!(link.contains("mtu 9000"), "vswitchd set the tap's MTU: {link}");
    }
    assert!(jumbo_ping(w.host(0), "10.60.0.2"), "9000-byte packets with DF cross tap to tap");
    transfer_both_ways(w.host(0), w.host(1), Ipv4Addr::new(10, 60, 0, 2), &[]);
    let report = w.stop();
    for p in ["p0", "p1"] {
        assert_jumbo_frames(&report, p);
    }
    assert_no_size_drops(&report);
}

#[test]
fn live_jumbo_mtu_9000_between_veths_over_afpacket_carries_9000_byte_packets_and_tcp() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let (mut w, host_if) = l2_world("h", [false, false], ["mtu = 9000", "mtu = 9000"], 9000);
    // TSO and GSO off on the hosts: TCP leaves them in wire-sized 9014-byte frames.
    for (i, ifname) in host_if.iter().enumerate() {
        exec(w.host(i), &["ethtool", "-K", ifname, "tso", "off", "gso", "off"]);
    }
    assert!(jumbo_ping(w.host(0), "10.60.0.2"), "9000-byte packets with DF cross veth to veth");
    transfer_both_ways(w.host(0), w.host(1), Ipv4Addr::new(10, 60, 0, 2), &[]);
    let report = w.stop();
    for p in ["p0", "p1"] {
        assert_jumbo_frames(&report, p);
    }
    assert_no_size_drops(&report);
}

/// A `tshark` capture of TCP SYNs (with or without ACK) on `ifname` in `ns`, until `count` are seen.
struct SynCapture(std::process::Child);

impl SynCapture {
    fn start(ns: &Netns, ifname: &str, count: usize) -> SynCapture {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.0, "tshark", "-l", "-n", "-i", ifname, "-a", "duration:30"])
            .args(["-c", &count.to_string(), "-f", "tcp[tcpflags] & tcp-syn != 0"])
            .args(["-T", "fields", "-e", "tcp.flags.ack", "-e", "tcp.options.mss_val"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tshark");
        // tshark reports "Capture started" once dumpcap has the interface open with its filter ("Capturing on"
        // comes earlier, before dumpcap runs).
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("Capture started") {
            line.clear();
            if err.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("tshark ended before capturing: {line}");
            }
        }
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        SynCapture(child)
    }

    /// `(is SYN-ACK, MSS)` of each SYN captured, as tshark decoded them.
    fn finish(mut self) -> Vec<(bool, u16)> {
        use std::io::Read;
        let mut out = String::new();
        self.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let _ = self.0.wait();
        out.lines()
            .map(|l| {
                let mut f = l.split('\t');
                let ack = f.next().unwrap() == "1" || l.starts_with("True");
                (ack, f.next().and_then(|m| m.trim().parse().ok()).unwrap_or_else(|| panic!("no MSS in {l:?}")))
            })
            .collect()
    }
}

impl Drop for SynCapture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn live_mss_clamp_on_a_port_lowers_the_mss_both_ends_see_as_tshark_decodes_it() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let (mut w, host_if) = l2_world("i", [true, true], ["", "mss_clamp = 1360"], 1500);
    let caps = [SynCapture::start(w.host(0), &host_if[0], 2), SynCapture::start(w.host(1), &host_if[1], 2)];
    transfer_both_ways(w.host(0), w.host(1), Ipv4Addr::new(10, 60, 0, 2), &[]);
    let [c0, c1] = caps;
    let (seen0, seen1) = (c0.finish(), c1.finish());
    println!("host 0 (client) saw {seen0:?}; host 1 (server, behind the clamping port) saw {seen1:?}");
    // The client sends MSS 1460 and receives the server's SYN-ACK clamped as it entered through p1; the server
    // receives the SYN clamped as it left through p1, and sends its own 1460.
    assert_eq!(seen0, vec![(false, 1460), (true, 1360)]);
    assert_eq!(seen1, vec![(false, 1360), (true, 1460)]);
    let report = w.stop();
    let pipeline = &report["ports"]["p1"]["pipeline"];
    assert_eq!(pipeline["mss_clamped"], 2, "one SYN leaving, one SYN-ACK entering: {pipeline}");
}
