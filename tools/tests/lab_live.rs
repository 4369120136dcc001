//! Live end-to-end tests: vswitchd forwarding between the kernels of hosts in network namespaces, built with
//! `tools::lab`. Need root (skipped with a message otherwise; CI runs them as root).
//!
//! vswitchd is the binary built next to this test (`target/debug/vswitchd`, found by
//! `tools::lab::default_vswitchd`): `cargo test --workspace` builds it; alone, run
//! `cargo build -p dataplane --bin vswitchd` first (with `--features afxdp` for the AF_XDP tests, which run
//! with `cargo test -p tools --features afxdp`), or point `VSWITCHD=/path/to/vswitchd` at one.
//!
//! Every test builds its own lab with a prefix made of the PID and a test letter, so tests run in parallel and
//! never meet; the `Lab` value deletes its namespaces and stops its vswitchd when dropped, on success and on
//! failure alike. Nothing is created in the root namespace.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;
use tools::lab::probe::{ping, tcp_send, udp_echoed, TcpServer, UdpEcho};
use tools::lab::{default_vswitchd, HostSpec, Lab, LabOptions, LabSpec};

const BYTES: u64 = 2_000_000;
const TIMEOUT: Duration = Duration::from_secs(10);

fn vswitchd() -> PathBuf {
    std::env::var_os("VSWITCHD").map(PathBuf::from).unwrap_or_else(default_vswitchd)
}

/// Brings up a lab for test `letter`, or returns `None` (after saying why) when not root.
fn lab(letter: char, switch: &str, hosts: &[(&str, &str, &str, Option<&str>)]) -> Option<(Lab, tempfile::TempDir)> {
    lab_with(letter, switch, hosts, &[])
}

/// [`lab`], with more arguments for `vswitchd run`.
fn lab_with(
    letter: char,
    switch: &str,
    hosts: &[(&str, &str, &str, Option<&str>)],
    args: &[&str],
) -> Option<(Lab, tempfile::TempDir)> {
    if !tools::lab::is_root() {
        println!("skipped: not root (live tests create namespaces; CI runs them as root)");
        return None;
    }
    let vswitchd = vswitchd();
    assert!(
        vswitchd.is_file(),
        "no vswitchd at {}: run `cargo build -p dataplane --bin vswitchd` (or set VSWITCHD)",
        vswitchd.display()
    );
    let hosts = hosts
        .iter()
        .map(|(name, port, address, gateway)| HostSpec {
            name: name.to_string(),
            port: port.to_string(),
            address: address.parse().unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
            external: false,
        })
        .collect();
    let spec = LabSpec::new(switch, hosts).expect("lab spec");
    let state = tempfile::tempdir().expect("tempdir");
    let mut opts = LabOptions::new();
    opts.prefix = format!("vlt{}{letter}-", std::process::id());
    opts.vswitchd = vswitchd;
    opts.state_root = state.path().to_path_buf();
    opts.switch_args = args.iter().map(|a| a.to_string()).collect();
    // `VSWITCH_TEST_WORKERS=N` runs every lab with N workers (as the dataplane's live suites do).
    if let Ok(n) = std::env::var("VSWITCH_TEST_WORKERS") {
        opts.switch_args.extend(["--workers".to_string(), n]);
    }
    match Lab::up(&spec, &opts) {
        Ok(lab) => Some((lab, state)),
        // The one failure that is not the switch's fault: a vswitchd built without AF_XDP (e.g. `cargo test -p
        // tools --features afxdp` after a plain `cargo build -p dataplane`). CI builds with --all-features.
        Err(e) if e.to_string().contains("needs vswitchd built with --features afxdp") => {
            println!("skipped: {e}\n(build it with `cargo build -p dataplane --features afxdp --bin vswitchd`)");
            None
        }
        Err(e) => panic!("lab up: {e}"),
    }
}

/// Pings `to` from host `from` 3 times and expects a reply (one lost to a loaded CI machine is tolerated; a
/// switch that does not forward loses all three).
fn assert_ping(lab: &Lab, from: &str, to: &str) {
    let to_ip: Ipv4Addr = to.parse().unwrap();
    let r = ping(&lab.host_ns(from), to_ip, 3).unwrap_or_else(|e| panic!("ping {from} -> {to}: {e}"));
    assert!(r.received > 0, "ping {from} -> {to}: {r:?}");
}

/// Sends [`BYTES`] over TCP from `from` to `dst:port` where host `server` listens on `listen`; checks the byte
/// count at both ends and returns the source address the server saw.
fn assert_tcp(lab: &Lab, from: &str, server: &str, listen: u16, dst: &str, port: u16) -> Ipv4Addr {
    let srv = TcpServer::start(&lab.host_ns(server), listen, TIMEOUT).expect("server");
    let dst = SocketAddrV4::new(dst.parse().unwrap(), port);
    let t = tcp_send(&lab.host_ns(from), dst, BYTES, TIMEOUT);
    let s = srv.finish();
    let t = t.unwrap_or_else(|e| panic!("tcp {from} -> {dst}: {e}"));
    let s = s.unwrap_or_else(|e| panic!("tcp {from} -> {dst}: {e}"));
    assert_eq!(s.bytes, BYTES, "server {server} received everything");
    assert_eq!(t.server_bytes, BYTES);
    *s.peer.ip()
}

fn two_hosts_one_network(kind: &str, extra: &str) -> String {
    format!(
        r#"
[[network]]
name = "net"
subnet = "10.61.0.0/24"

[[port]]
name = "a"
kind = "{kind}"
ifname = "vs-a"
network = "net"
{extra}
[[port]]
name = "b"
kind = "{kind}"
ifname = "vs-b"
network = "net"
{extra}
"#
    )
}

fn same_network(letter: char, kind: &str, extra: &str) {
    let hosts = [("a", "a", "10.61.0.2/24", None), ("b", "b", "10.61.0.3/24", None)];
    let Some((mut lab, _state)) = lab(letter, &two_hosts_one_network(kind, extra), &hosts) else { return };
    assert_ping(&lab, "a", "10.61.0.3");
    assert_ping(&lab, "b", "10.61.0.2");
    let seen = assert_tcp(&lab, "a", "b", 5001, "10.61.0.3", 5001);
    assert_eq!(seen, Ipv4Addr::new(10, 61, 0, 2), "switching does not change addresses");
    let seen = assert_tcp(&lab, "b", "a", 5002, "10.61.0.2", 5002);
    assert_eq!(seen, Ipv4Addr::new(10, 61, 0, 3));
    let stats = lab.stop_switch().expect("stop vswitchd");
    if let Some(v) = stats {
        let s = tools::lab::demo::summarize_stats(&v);
        println!("{s}");
    }
}

#[test]
fn switching_over_taps() {
    same_network('a', "tap", "");
}

#[test]
fn switching_over_afpacket_on_veths() {
    same_network('b', "afpacket", "");
}

#[cfg(feature = "afxdp")]
#[test]
fn switching_over_afxdp_native_on_veths() {
    same_network('c', "afxdp", "mode = \"native\"");
}

#[cfg(feature = "afxdp")]
#[test]
fn switching_over_afxdp_generic_on_veths() {
    same_network('g', "afxdp", "mode = \"generic\"");
}

#[test]
fn routing_between_two_networks() {
    let switch = r#"
[[network]]
name = "front"
subnet = "10.62.1.0/24"
gateway = "10.62.1.1"

[[network]]
name = "back"
subnet = "10.62.2.0/24"
gateway = "10.62.2.1"

[[port]]
name = "a"
kind = "tap"
ifname = "vs-a"
network = "front"

[[port]]
name = "b"
kind = "afpacket"
ifname = "vs-b"
network = "back"
"#;
    let hosts = [("a", "a", "10.62.1.2/24", Some("10.62.1.1")), ("b", "b", "10.62.2.2/24", Some("10.62.2.1"))];
    let Some((lab, _state)) = lab('d', switch, &hosts) else { return };
    assert_ping(&lab, "a", "10.62.1.1");
    assert_ping(&lab, "a", "10.62.2.2");
    assert_ping(&lab, "b", "10.62.1.2");
    let seen = assert_tcp(&lab, "a", "b", 5001, "10.62.2.2", 5001);
    assert_eq!(seen, Ipv4Addr::new(10, 62, 1, 2), "routing without masquerade keeps the source");
    let seen = assert_tcp(&lab, "b", "a", 5002, "10.62.1.2", 5002);
    assert_eq!(seen, Ipv4Addr::new(10, 62, 2, 2));
}

const NAT_SWITCH: &str = r#"
[[network]]
name = "bridge"
subnet = "172.30.0.0/24"
gateway = "172.30.0.1"
masquerade = true

[[port]]
name = "c1"
kind = "tap"
ifname = "vs-c1"
network = "bridge"

[[port]]
name = "c2"
kind = "tap"
ifname = "vs-c2"
network = "bridge"

[[port]]
name = "uplink"
kind = "afpacket"
ifname = "vs-up"
address = "203.0.113.2/24"

[[route]]
prefix = "0.0.0.0/0"
via = "203.0.113.1"

[[publish]]
port = "uplink"
proto = "tcp"
external_port = 8080
to = "172.30.0.3:80"
"#;

const NAT_HOSTS: [(&str, &str, &str, Option<&str>); 3] = [
    ("c1", "c1", "172.30.0.2/24", Some("172.30.0.1")),
    ("c2", "c2", "172.30.0.3/24", Some("172.30.0.1")),
    ("ext", "uplink", "203.0.113.1/24", None),
];

#[test]
fn masquerade_to_the_external_host() {
    let Some((lab, _state)) = lab('e', NAT_SWITCH, &NAT_HOSTS) else { return };
    assert_ping(&lab, "c1", "203.0.113.1");
    let seen = assert_tcp(&lab, "c1", "ext", 5001, "203.0.113.1", 5001);
    assert_eq!(seen, Ipv4Addr::new(203, 0, 113, 2), "the external host sees the uplink's address");
    // A second connection from the other container is translated too (its own conntrack entry).
    let seen = assert_tcp(&lab, "c2", "ext", 5002, "203.0.113.1", 5002);
    assert_eq!(seen, Ipv4Addr::new(203, 0, 113, 2));
}

#[test]
fn published_port_reaches_the_container() {
    let Some((lab, _state)) = lab('f', NAT_SWITCH, &NAT_HOSTS) else { return };
    let seen = assert_tcp(&lab, "ext", "c2", 80, "203.0.113.2", 8080);
    assert_eq!(seen, Ipv4Addr::new(203, 0, 113, 1), "a published port translates the destination only");
}

/// The drop counter `reason` in vswitchd's final stats.
fn drops(stats: &Option<serde_json::Value>, reason: &str) -> u64 {
    let v = stats.as_ref().expect("vswitchd printed its counters");
    v.pointer(&format!("/drops/{reason}")).and_then(|x| x.as_u64()).unwrap_or(0)
}

fn two_masquerade_networks(extra: &str) -> String {
    format!(
        r#"
[[network]]
name = "n1"
subnet = "172.31.1.0/24"
gateway = "172.31.1.1"
masquerade = true
{extra}
[[network]]
name = "n2"
subnet = "172.31.2.0/24"
gateway = "172.31.2.1"
masquerade = true

[[port]]
name = "a"
kind = "tap"
ifname = "vs-a"
network = "n1"

[[port]]
name = "b"
kind = "tap"
ifname = "vs-b"
network = "n2"
"#
    )
}

const TWO_NETWORK_HOSTS: [(&str, &str, &str, Option<&str>); 2] =
    [("a", "a", "172.31.1.2/24", Some("172.31.1.1")), ("b", "b", "172.31.2.2/24", Some("172.31.2.1"))];

/// Docker's isolation between bridge networks: two masquerade networks cannot reach each other (ping and UDP,
/// counted as `network-isolation`), while each still reaches its own gateway.
#[test]
fn masquerade_networks_cannot_reach_each_other() {
    let Some((mut lab, _state)) = lab('h', &two_masquerade_networks(""), &TWO_NETWORK_HOSTS) else { return };
    assert_ping(&lab, "a", "172.31.1.1");
    let r = ping(&lab.host_ns("a"), Ipv4Addr::new(172, 31, 2, 2), 3).expect("ping");
    assert_eq!(r.received, 0, "a reached b across isolated networks: {r:?}");
    let echo = UdpEcho::start(&lab.host_ns("b"), 7000, Duration::from_secs(3)).expect("udp echo");
    let to = SocketAddrV4::new(Ipv4Addr::new(172, 31, 2, 2), 7000);
    assert!(!udp_echoed(&lab.host_ns("a"), to, 3, Duration::from_millis(300)).expect("udp probe"));
    assert_eq!(echo.finish().expect("echo"), 0, "b received nothing");
    let stats = lab.stop_switch().expect("stop vswitchd");
    assert!(drops(&stats, "network-isolation") >= 6, "3 pings and 3 datagrams counted: {stats:?}");
}

/// `allow_routing_with` connects the same two networks: ping and UDP go through, untranslated.
#[test]
fn allow_routing_with_lets_two_masquerade_networks_talk() {
    let switch = two_masquerade_networks("allow_routing_with = [\"n2\"]");
    let Some((mut lab, _state)) = lab('i', &switch, &TWO_NETWORK_HOSTS) else { return };
    assert_ping(&lab, "a", "172.31.2.2");
    let echo = UdpEcho::start(&lab.host_ns("b"), 7000, Duration::from_secs(3)).expect("udp echo");
    let to = SocketAddrV4::new(Ipv4Addr::new(172, 31, 2, 2), 7000);
    assert!(udp_echoed(&lab.host_ns("a"), to, 3, Duration::from_millis(500)).expect("udp probe"));
    assert!(echo.finish().expect("echo") > 0);
    let stats = lab.stop_switch().expect("stop vswitchd");
    assert_eq!(drops(&stats, "network-isolation"), 0);
}

/// With a route to the container subnet, the external host cannot reach a container's unpublished UDP port
/// (`not-published`), while the published port works.
#[test]
fn an_unpublished_udp_port_is_unreachable_from_outside_even_with_a_route() {
    let switch = format!(
        "{NAT_SWITCH}\n[[publish]]\nport = \"uplink\"\nproto = \"udp\"\nexternal_port = 5353\nto = \"172.30.0.3:53\"\n"
    );
    let Some((mut lab, _state)) = lab('j', &switch, &NAT_HOSTS) else { return };
    let ext = lab.host_ns("ext");
    tools::lab::netns::exec(&ext, "ip", &["route", "add", "172.30.0.0/24", "via", "203.0.113.2"]).expect("route");
    let c2 = lab.host_ns("c2");
    let unpublished = UdpEcho::start(&c2, 9999, Duration::from_secs(4)).expect("udp echo 9999");
    let published = UdpEcho::start(&c2, 53, Duration::from_secs(4)).expect("udp echo 53");
    let direct = SocketAddrV4::new(Ipv4Addr::new(172, 30, 0, 3), 9999);
    assert!(!udp_echoed(&ext, direct, 3, Duration::from_millis(300)).expect("udp probe"), "unpublished port reached");
    let direct53 = SocketAddrV4::new(Ipv4Addr::new(172, 30, 0, 3), 53);
    assert!(!udp_echoed(&ext, direct53, 2, Duration::from_millis(300)).expect("udp probe"), "target reached directly");
    let via = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 2), 5353);
    assert!(udp_echoed(&ext, via, 3, Duration::from_millis(500)).expect("udp probe"), "published port works");
    assert_eq!(unpublished.finish().expect("echo"), 0);
    assert!(published.finish().expect("echo") > 0);
    let stats = lab.stop_switch().expect("stop vswitchd");
    assert!(drops(&stats, "not-published") >= 5, "{stats:?}");
}

/// The host port: vswitchd's own namespace (the host) reaches a container of the masquerade network directly
/// through a tap left there (`host = true`), ping and TCP to an unpublished port, untranslated both ways, and the
/// container reaches the host; the external host, given a route to the container subnet, still cannot reach that
/// unpublished port (`not-published`), nor reach the host through the switch (`network-isolation`).
#[test]
fn the_host_reaches_its_containers_through_the_host_port_and_the_outside_still_cannot() {
    let switch = format!(
        "{NAT_SWITCH}\n[[port]]\nname = \"host\"\nkind = \"tap\"\nifname = \"vs-host\"\naddress = \"10.99.0.1/30\"\nhost = true\n"
    );
    let mut hosts = NAT_HOSTS.to_vec();
    hosts.push(("host", "host", "10.99.0.2/30", None));
    let Some((mut lab, _state)) = lab('m', &switch, &hosts) else { return };
    assert_eq!(lab.host_ns("host"), lab.switch_ns(), "the host port's host is vswitchd's own namespace");
    assert_ping(&lab, "host", "172.30.0.2");
    let seen = assert_tcp(&lab, "host", "c1", 5001, "172.30.0.2", 5001);
    assert_eq!(seen, Ipv4Addr::new(10, 99, 0, 2), "the container sees the host's own address");
    let seen = assert_tcp(&lab, "c2", "host", 5003, "10.99.0.2", 5003);
    assert_eq!(seen, Ipv4Addr::new(172, 30, 0, 3), "the host sees the container's own address (no masquerade)");
    // The outside, with a route to the container subnet: the same unpublished port is refused.
    let ext = lab.host_ns("ext");
    tools::lab::netns::exec(&ext, "ip", &["route", "add", "172.30.0.0/24", "via", "203.0.113.2"]).expect("route");
    tools::lab::netns::exec(&ext, "ip", &["route", "add", "10.99.0.0/30", "via", "203.0.113.2"]).expect("route");
    let srv = TcpServer::start(&lab.host_ns("c1"), 5002, Duration::from_secs(3)).expect("server");
    let t = tcp_send(&ext, SocketAddrV4::new(Ipv4Addr::new(172, 30, 0, 2), 5002), 1000, Duration::from_secs(2));
    assert!(t.is_err(), "the external host connected to an unpublished port: {t:?}");
    assert!(srv.finish().is_err(), "the container accepted a connection from outside");
    let r = ping(&ext, Ipv4Addr::new(10, 99, 0, 2), 2).expect("ping");
    assert_eq!(r.received, 0, "the outside reached the host through the switch: {r:?}");
    let stats = lab.stop_switch().expect("stop vswitchd");
    assert!(drops(&stats, "not-published") >= 1, "{stats:?}");
    assert!(drops(&stats, "network-isolation") >= 2, "{stats:?}");
}

/// A full connection table does not lock other containers out: with `[conntrack] limit = 1000`, c1 opens
/// 1,100 connections to an address that never answers (SYNs: the kernel's own TCP; each an unreplied entry),
/// then c2's new TCP connection to the external host still goes through, evicting the oldest unreplied one.
#[test]
fn a_flood_of_unanswered_connections_does_not_stop_another_containers_connection() {
    let switch = format!("{NAT_SWITCH}\n[conntrack]\nlimit = 1000\n");
    let Some((mut lab, _state)) = lab('k', &switch, &NAT_HOSTS) else { return };
    let silent = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 99), 80);
    let flood = tools::lab::netns::in_netns(&lab.host_ns("c1"), move || {
        // A tenth more than the limit: on a loaded machine a few SYNs are lost before the switch sees them (CI
        // once tracked 983 of 1,000 and the table never filled).
        for _ in 0..1100 {
            // Sends one SYN and gives up: nothing answers, so the switch tracks an unreplied connection.
            let _ = std::net::TcpStream::connect_timeout(&silent.into(), Duration::from_millis(1));
        }
    });
    flood.join().expect("flood thread").expect("join c1");
    std::thread::sleep(Duration::from_millis(300));
    let seen = assert_tcp(&lab, "c2", "ext", 5003, "203.0.113.1", 5003);
    assert_eq!(seen, Ipv4Addr::new(203, 0, 113, 2));
    let stats = lab.stop_switch().expect("stop vswitchd").expect("counters");
    let evicted = stats.pointer("/conntrack/evicted").and_then(|v| v.as_u64()).unwrap_or(0);
    assert!(evicted > 0, "the table filled and evicted: {}", stats["conntrack"]);
    assert_eq!(drops(&Some(stats.clone()), "conntrack-full"), 0);
}

/// A MAC address as `ip` prints it.
fn mac_of(text: &str) -> dataplane::wire::MacAddr {
    let b: Vec<u8> = text.split(':').map(|x| u8::from_str_radix(x, 16).expect("hex")).collect();
    dataplane::wire::MacAddr(b.try_into().expect("six bytes"))
}

/// The word after `key` in `ip`'s output for `args` in namespace `ns`.
fn ip_field(ns: &str, args: &[&str], key: &str) -> String {
    let out = tools::lab::netns::exec(ns, "ip", args).expect("ip");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    words.find(|w| *w == key).and_then(|_| words.next()).unwrap_or_else(|| panic!("no {key} in {text}")).to_string()
}

/// A kernel SNMP counter (`nstat -az NAME`) in namespace `ns`.
fn nstat(ns: &str, name: &str) -> u64 {
    let out = tools::lab::netns::exec(ns, "nstat", &["-az", name]).expect("nstat");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// The issue's flood exactly: bare TCP ACKs, no handshake (loose tracking picks each up mid-stream), 1,100 of
/// them from c1 to an address that never answers, each from another source port, sent as crafted frames on
/// c1's interface (the switch's own AF_PACKET port code, in c1's namespace). With `[conntrack] limit = 1000`
/// the table fills with mid-stream entries, and c2's new TCP connection to the external host still goes
/// through: the switch evicts an unreplied entry instead of refusing.
#[test]
fn a_flood_of_bare_acks_does_not_stop_another_containers_connection() {
    use dataplane::buffer::BufPool;
    use dataplane::port::afpacket::{AfPacketConfig, AfPacketPort};
    use dataplane::port::Port;
    use dataplane::wire::builder::{Ipv4Spec, TcpFlags, TcpSegment};
    let switch = format!("{NAT_SWITCH}\n[conntrack]\nlimit = 1000\n");
    let Some((mut lab, _state)) = lab('o', &switch, &NAT_HOSTS) else { return };
    let c1 = lab.host_ns("c1");
    assert_ping(&lab, "c1", "172.30.0.1");
    let own = mac_of(&ip_field(&c1, &["link", "show", "dev", "vs-c1"], "link/ether"));
    let gateway = mac_of(&ip_field(&c1, &["neigh", "show", "172.30.0.1"], "lladdr"));
    let sent = tools::lab::netns::in_netns(&c1, move || {
        let ifname = dataplane::port::IfName::new("vs-c1").expect("interface name");
        let mut port = AfPacketPort::open("flood", &AfPacketConfig::new(ifname)).expect("AF_PACKET socket");
        let mut pool = BufPool::new(128);
        let spec = Ipv4Spec::new(own, gateway, Ipv4Addr::new(172, 30, 0, 2), Ipv4Addr::new(198, 51, 100, 99));
        let mut sent = 0;
        for chunk in 0..11u16 {
            let mut out: Vec<_> = (0..100u16)
                .map(|i| {
                    let ack = TcpSegment::new(20_000 + chunk * 100 + i, 80, TcpFlags::ACK).seq(1).ack(1);
                    let mut f = pool.alloc().expect("buffer");
                    f.load(&spec.tcp(ack, 0)).expect("fits");
                    f
                })
                .collect();
            sent += out.len();
            port.tx_burst(&mut pool, &mut out).expect("send");
            std::thread::sleep(Duration::from_millis(5));
        }
        sent
    });
    assert_eq!(sent.join().expect("flood thread").expect("join c1"), 1100);
    std::thread::sleep(Duration::from_millis(300));
    let seen = assert_tcp(&lab, "c2", "ext", 5004, "203.0.113.1", 5004);
    assert_eq!(seen, Ipv4Addr::new(203, 0, 113, 2));
    let stats = lab.stop_switch().expect("stop vswitchd").expect("counters");
    let evicted = stats.pointer("/conntrack/evicted").and_then(|v| v.as_u64()).unwrap_or(0);
    assert!(evicted > 0, "the ACKs filled the table and one was evicted: {}", stats["conntrack"]);
    assert_eq!(drops(&Some(stats.clone()), "conntrack-full"), 0);
}

/// Path-MTU discovery survives another container's TTL=1 flood: with the uplink's MTU at 1,400, c2 sends 20
/// UDP datagrams of 1,428 bytes with DF set, 50 ms apart (crafted frames on its interface, so its kernel's
/// cached path MTU does not stop the later ones), while c1 sends TTL=1 datagrams as fast as it can, far beyond
/// the Time Exceeded bucket (c1's kernel counts how few Time Exceeded it got back, `IcmpInTimeExcds`). Nearly
/// every datagram must get its Fragmentation Needed (c2's kernel counts them, `IcmpInDestUnreachs`): with one
/// bucket for every kind of error, the flood took the tokens and c2 got none.
#[test]
fn a_ttl_flood_does_not_stop_another_container_getting_frag_needed() {
    use dataplane::buffer::BufPool;
    use dataplane::port::afpacket::{AfPacketConfig, AfPacketPort};
    use dataplane::port::Port;
    use dataplane::wire::builder::{Ipv4Opts, Ipv4Spec};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let switch = NAT_SWITCH.replacen("address = \"203.0.113.2/24\"", "address = \"203.0.113.2/24\"\nmtu = 1400", 1);
    assert_ne!(switch, NAT_SWITCH);
    let Some((lab, _state)) = lab('p', &switch, &NAT_HOSTS) else { return };
    let (c1, c2) = (lab.host_ns("c1"), lab.host_ns("c2"));
    assert_ping(&lab, "c1", "203.0.113.1");
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = Arc::clone(&stop);
    let flood = tools::lab::netns::in_netns(&c1, move || -> std::io::Result<u64> {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        sock.set_ttl(1)?;
        let mut sent = 0;
        while !flooding.load(Ordering::Relaxed) {
            if sock.send_to(b"ttl1", "203.0.113.1:9").is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_ping(&lab, "c2", "172.30.0.1");
    let own = mac_of(&ip_field(&c2, &["link", "show", "dev", "vs-c2"], "link/ether"));
    let gateway = mac_of(&ip_field(&c2, &["neigh", "show", "172.30.0.1"], "lladdr"));
    let before = nstat(&c2, "IcmpInDestUnreachs");
    let probes = tools::lab::netns::in_netns(&c2, move || {
        let ifname = dataplane::port::IfName::new("vs-c2").expect("interface name");
        let mut port = AfPacketPort::open("probe", &AfPacketConfig::new(ifname)).expect("AF_PACKET socket");
        let mut pool = BufPool::new(8);
        let df = Ipv4Opts { df: true, ..Ipv4Opts::default() };
        let spec = Ipv4Spec::new(own, gateway, Ipv4Addr::new(172, 30, 0, 3), Ipv4Addr::new(203, 0, 113, 1));
        for i in 0..20 {
            let mut f = pool.alloc().expect("buffer");
            f.load(&spec.with_opts(df).udp(30_000 + i, 9, 1400)).expect("fits");
            port.tx_burst(&mut pool, &mut vec![f]).expect("send");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    probes.join().expect("probe thread").expect("join c2");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().expect("flood thread").expect("join c1").expect("flood");
    let answered = nstat(&c1, "IcmpInTimeExcds");
    let frag_needed = nstat(&c2, "IcmpInDestUnreachs") - before;
    assert!(sent > 1000 && answered * 5 < sent, "the flood ({sent} sent, {answered} answered) outran its bucket");
    assert!(frag_needed >= 16, "{frag_needed} of 20 oversized DF datagrams got Frag Needed during the flood");
}

/// Anti-spoofing: c1 gives itself a second address outside its network's subnet and sends from it; the switch
/// does not masquerade it (`spoofed-source`), so the external host receives nothing, while c1's own address
/// still gets through.
#[test]
fn a_spoofed_source_is_not_masqueraded() {
    let Some((mut lab, _state)) = lab('l', NAT_SWITCH, &NAT_HOSTS) else { return };
    let c1 = lab.host_ns("c1");
    tools::lab::netns::exec(&c1, "ip", &["addr", "add", "10.99.0.5/32", "dev", "vs-c1"]).expect("second address");
    let echo = UdpEcho::start(&lab.host_ns("ext"), 7000, Duration::from_secs(3)).expect("udp echo");
    let spoof_sink = UdpEcho::start(&lab.host_ns("ext"), 7001, Duration::from_secs(3)).expect("udp echo");
    let to = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 7000);
    let spoof_to = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 7001);
    let sent = tools::lab::netns::in_netns(&c1, move || -> std::io::Result<()> {
        let spoofed = std::net::UdpSocket::bind("10.99.0.5:0")?;
        for _ in 0..3 {
            spoofed.send_to(b"spoofed", spoof_to)?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    });
    sent.join().expect("thread").expect("join c1").expect("send");
    std::thread::sleep(Duration::from_millis(300));
    assert!(udp_echoed(&c1, to, 3, Duration::from_millis(500)).expect("udp probe"), "c1's own address works");
    assert!(echo.finish().expect("echo") > 0);
    assert_eq!(spoof_sink.finish().expect("echo"), 0, "nothing from the spoofed address arrived");
    let stats = lab.stop_switch().expect("stop vswitchd");
    assert!(drops(&stats, "spoofed-source") >= 3, "{stats:?}");
}

/// `vswitch-lab up`, `status` and `down` through the binary: `up` leaves the default lab running after the
/// command exits, `down` finds it through the state file, stops exactly that vswitchd and deletes exactly its
/// namespaces.
#[test]
fn cli_up_status_down_leave_nothing_behind() {
    if !tools::lab::is_root() {
        println!("skipped: not root (live tests create namespaces; CI runs them as root)");
        return;
    }
    let state = tempfile::tempdir().expect("tempdir");
    let prefix = format!("vlt{}z-", std::process::id());
    let vswitchd = vswitchd();
    let run = |cmd: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vswitch-lab"))
            .args([cmd, "--prefix", &prefix, "--state-dir"])
            .arg(state.path())
            .arg("--vswitchd")
            .arg(&vswitchd)
            .output()
            .expect("run vswitch-lab");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    /// Takes the lab down if the test fails half way.
    struct Down<'a>(&'a dyn Fn(&str) -> (bool, String));
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)("down");
        }
    }
    let guard = Down(&run);
    let (ok, text) = run("up");
    assert!(ok, "up: {text}");
    let ns: Vec<String> = ["sw", "c1", "c2", "ext"].iter().map(|h| format!("{prefix}{h}")).collect();
    for n in &ns {
        assert!(tools::lab::netns::exists(n), "{n} exists after up");
    }
    let r = ping(&format!("{prefix}c1"), Ipv4Addr::new(172, 30, 0, 3), 3).expect("ping");
    assert!(r.received > 0, "the lab forwards after `up` returned: {r:?}");
    let (ok, text) = run("status");
    assert!(ok && text.contains(": running"), "status: {text}");
    let pid = text.split_whitespace().nth(2).and_then(|p| p.trim_end_matches(':').parse::<u32>().ok());
    let (ok, text) = run("down");
    assert!(ok && text.contains("is down"), "down: {text}");
    std::mem::forget(guard);
    for n in &ns {
        assert!(!tools::lab::netns::exists(n), "{n} deleted by down");
    }
    if let Some(pid) = pid {
        assert!(!tools::lab::is_vswitchd(pid), "vswitchd {pid} stopped");
    }
    let (_, text) = run("status");
    assert!(text.contains("no lab"), "status after down: {text}");
}

/// One control request (a JSON line) on vswitchd's socket; the response's `result`.
fn request(socket: &std::path::Path, line: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("control socket");
    s.write_all(format!("{line}\n").as_bytes()).expect("request");
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).expect("response");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("a JSON response");
    assert_eq!(v["ok"], true, "{answer}");
    v["result"].clone()
}

/// `ping -i 0.01` from `from` to `to`, `count` times: the maximum round trip in ms and the replies received.
fn ping_max(lab: &Lab, from: &str, to: &str, count: u32) -> (f64, u32) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.host_ns(from), "ping", "-n", "-q", "-i", "0.01", "-c", &count.to_string(), to])
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let max = text
        .lines()
        .find_map(|l| l.strip_prefix("rtt min/avg/max/mdev = "))
        .and_then(|r| r.split('/').nth(2))
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no rtt line: {text}"));
    let received = text
        .lines()
        .find(|l| l.contains("received"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|w| w.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (max, received)
}

/// With 200,000 tracked connections, reading the connection table (`conntrack ls --limit 10`, as fast as the
/// socket answers) and tracing a frame in a loop do not stall forwarding: a 10 ms ping between two containers
/// keeps its maximum round trip within 2 ms of the same ping without the reads (both measured in this run:
/// the machine is shared, so an absolute bound would measure the neighbours).
///
/// Ignored by default: it is a latency measurement, and on a shared 2-vCPU machine with a debug build the
/// ping's own maximum is tens of milliseconds (the scheduler, not the switch), so it cannot tell 2 ms apart.
/// Run it on a quiet machine with a release vswitchd:
/// `VSWITCHD=target/release/vswitchd cargo test -p tools --test lab_live -- --ignored reading_200k --nocapture`.
#[test]
#[ignore = "latency measurement: needs a quiet machine and a release vswitchd (see the doc comment)"]
fn reading_200k_connections_does_not_stall_forwarding() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    const CONNECTIONS: u32 = 200_000;
    let switch = format!("{NAT_SWITCH}\n[conntrack]\nudp_secs = 900\n");
    // Without the periodic state snapshot, which copies the whole table under the switch lock every second (a
    // stall of its own, not what this test measures; see README § Security model).
    let Some((mut lab, _state)) = lab_with('n', &switch, &NAT_HOSTS, &["--state-interval", "0"]) else { return };
    let socket = lab.state().log.with_file_name("vswitchd.sock");
    let total = |socket: &std::path::Path| {
        request(socket, r#"{"version":1,"id":1,"op":"conntrack_ls","limit":1}"#)["total"].as_u64().unwrap()
    };
    // 200k masqueraded UDP flows from c1: 4 destinations beyond the uplink × 50,000 ports, paced so the tap's
    // queue does not overflow; repeated (as hits) until all are tracked.
    for _ in 0..10 {
        let sent = tools::lab::netns::in_netns(&lab.host_ns("c1"), move || {
            let sock = std::net::UdpSocket::bind("0.0.0.0:40000").expect("bind");
            for i in 0..CONNECTIONS {
                let dst = Ipv4Addr::new(198, 51, 100, 1 + (i / 50_000) as u8);
                let _ = sock.send_to(b"x", SocketAddrV4::new(dst, 1 + (i % 50_000) as u16));
                if i % 100 == 99 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        sent.join().expect("sender").expect("in c1");
        println!("tracked: {}", total(&socket));
        if total(&socket) >= u64::from(CONNECTIONS) {
            break;
        }
    }
    let tracked = total(&socket);
    if tracked < u64::from(CONNECTIONS) {
        let stats = lab.stop_switch().expect("stop vswitchd");
        panic!("only {tracked} connections tracked: {stats:?}");
    }

    let (baseline, got) = ping_max(&lab, "c1", "172.30.0.3", 500);
    assert!(got >= 490, "baseline ping lost {} of 500", 500 - got);
    let frame = dataplane::wire::builder::Ipv4Spec::new(
        dataplane::wire::MacAddr([2, 0, 0, 0, 0, 0x11]),
        dataplane::wire::MacAddr([0xff; 6]),
        Ipv4Addr::new(172, 30, 0, 2),
        Ipv4Addr::new(198, 51, 100, 1),
    )
    .udp(40000, 7, 1);
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let mut results = Vec::new();
    for (what, line) in [
        ("conntrack ls --limit 10", r#"{"version":1,"id":2,"op":"conntrack_ls","limit":10}"#.to_string()),
        ("trace", format!(r#"{{"version":1,"id":3,"op":"trace","port":"c1","frame_hex":"{hex}"}}"#)),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let reader = {
            let (stop, reads, socket) = (stop.clone(), reads.clone(), socket.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = request(&socket, &line);
                    if let Some(t) = r.get("total") {
                        assert!(t.as_u64().unwrap() >= u64::from(CONNECTIONS));
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let (loaded, got) = ping_max(&lab, "c1", "172.30.0.3", 500);
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("reader");
        let reads = reads.load(Ordering::Relaxed);
        println!("{what}: {reads} reads during the ping; max RTT {loaded:.3} ms (without reads {baseline:.3} ms)");
        assert!(got >= 490, "{what}: ping lost {} of 500", 500 - got);
        assert!(reads >= 5, "{what}: only {reads} reads");
        results.push((what, loaded));
    }
    let stats = lab.stop_switch().expect("stop vswitchd");
    drop(stats);
    for (what, loaded) in results {
        assert!(
            loaded <= baseline + 2.0,
            "{what} in a loop raised the ping's maximum RTT from {baseline:.3} ms to {loaded:.3} ms"
        );
    }
}
