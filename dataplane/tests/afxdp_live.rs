//! Live tests of `AfXdpPort` (feature `afxdp`) against the real kernel: need root (skipped otherwise, with a
//! message). Each test builds its own pair of uniquely named network namespaces joined by a veth: the "host"
//! end has an address, the "switch" end has none and carries the port. The port is opened, used and dropped on
//! a thread inside the switch namespace. Namespaces are deleted by exact name when the guards drop (also on
//! panic), which deletes the veths with them; nothing in the root namespace is touched.
#![cfg(feature = "afxdp")]

#[path = "common/netns.rs"]
mod netns;
#[path = "common/port_io.rs"]
mod port_io;
use port_io::{rx_until, send};

use dataplane::batch::Batch;
use dataplane::buffer::{BufPool, Frame};
use dataplane::config::XdpMode;
use dataplane::port::afxdp::{AfXdpConfig, AfXdpPort};
use dataplane::port::Port;
use dataplane::port::{IfName, OpenFailure};
use dataplane::wire::builder::{arp_reply, eth, Ipv4Spec};
use dataplane::wire::MacAddr;
use etherparse::{IcmpEchoHeader, Icmpv4Type};
use netns::{skip_reason, Netns};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

/// An interface name the test made (valid by construction).
fn ifname(name: &str) -> IfName {
    IfName::new(name).expect("a valid interface name")
}

/// Local experimental EtherType: the host stack ignores such frames.
const EXPERIMENTAL: u16 = 0x88b5;
const OUR_MAC: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x30, 0x00, 0x02]);

/// Two namespaces joined by a veth; the host end has `10.202.X.1/24`, the switch end no address.
struct Topo {
    host: Netns,
    sw: Netns,
    host_if: String,
    sw_if: String,
    host_ip: Ipv4Addr,
    host_mac: MacAddr,
    /// An address on the host's subnet that the test answers for through the port.
    peer_ip: Ipv4Addr,
}

impl Topo {
    fn new(test: u32, queues: u32) -> Topo {
        let pid = std::process::id();
        let x = (pid % 200) as u8 + 1;
        let host = Netns::create(&format!("vsxa{pid}h{test}"));
        let sw = Netns::create(&format!("vsxa{pid}s{test}"));
        // No IPv6 (router solicitations, MLD): every frame the tests see is one they caused.
        host.disable_ipv6();
        sw.disable_ipv6();
        let host_if = format!("vsx{pid}h{test}");
        let sw_if = format!("vsx{pid}s{test}");
        assert!(host_if.len() <= 15, "{host_if}");
        let q = queues.to_string();
        host.ip(&[
            "link",
            "add",
            &host_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &sw_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &sw.0,
        ]);
        let host_ip = Ipv4Addr::new(10, 202, x, 1);
        host.ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if]);
        host.ip(&["link", "set", "dev", &host_if, "up"]);
        sw.ip(&["link", "set", "dev", &sw_if, "up"]);
        let show = host.ip_stdout(&["link", "show", "dev", &host_if]);
        let mac = show
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC in {show}"));
        let host_mac: MacAddr = mac.parse().expect("MAC");
        Topo { host, sw, host_if, sw_if, host_ip, host_mac, peer_ip: Ipv4Addr::new(10, 202, x, 2) }
    }

    /// `ip link show` of the switch end: contains "xdp" while a program is attached.
    fn sw_link(&self) -> String {
        self.sw.ip_stdout(&["link", "show", "dev", &self.sw_if])
    }

    fn cfg(&self, mode: XdpMode) -> AfXdpConfig {
        let mut c = AfXdpConfig::new(ifname(&self.sw_if));
        c.mode = mode;
        c
    }
}

/// Whether `ip link show` output lists an XDP program: the mode word after the MTU ("xdp", "xdpgeneric",
/// "xdpoffload", "xdpmulti") or a "prog/xdp" line.
fn has_xdp(link_show: &str) -> bool {
    link_show.split_whitespace().any(|w| w.starts_with("xdp") || w.starts_with("prog/xdp"))
}

/// An AF_PACKET socket bound to `ifname` inside `ns` (created on a thread in that namespace; it stays there).
fn packet_socket(ns: &Netns, ifname: &str) -> OwnedFd {
    let ifname = ifname.to_string();
    ns.run(move || {
        let c = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        assert_ne!(ifindex, 0);
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: integer arguments only.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
        assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll for the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        fd
    })
}

fn raw_send(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: `frame` is valid for the call; the socket is bound to its interface.
    let r = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(r, frame.len() as isize, "raw send: {}", std::io::Error::last_os_error());
}

/// Incoming frames (not our own outgoing copies) on a packet socket, for up to `timeout`.
fn raw_recv_incoming(fd: &OwnedFd, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while got.len() < want && Instant::now() < deadline {
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: `buf` and `sll` are writable for their stated lengths during the call.
        let r = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if r < 0 {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        if sll.sll_pkttype != libc::PACKET_OUTGOING {
            got.push(buf[..r as usize].to_vec());
        }
    }
    got
}

/// Answers ARP requests for `peer_ip` and ICMP echo requests to it, through the port, until `done` says stop.
fn serve_peer(
    t: &TopoInfo,
    port: &mut AfXdpPort,
    pool: &mut BufPool,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> (usize, usize) {
    let (mut arps, mut echoes) = (0, 0);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !done() {
        let mut replies = Vec::new();
        rx_until(port, pool, Duration::from_millis(5), |d| {
            if d.len() >= 42 && d[12..14] == [0x08, 0x06] && d[20..22] == [0, 1] && d[38..42] == t.peer_ip.octets() {
                arps += 1;
                replies.push(arp_reply(OUR_MAC, t.peer_ip, t.host_mac, t.host_ip));
            }
            if d.len() >= 42 && d[12..14] == [0x08, 0x00] && d[23] == 1 && d[30..34] == t.peer_ip.octets() {
                let ihl = usize::from(d[14] & 0x0f) * 4;
                let icmp = &d[14 + ihl..];
                let total = usize::from(u16::from_be_bytes([d[16], d[17]]));
                if icmp[0] == 8 {
                    echoes += 1;
                    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
                    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
                    let payload = &d[14 + ihl + 8..14 + total];
                    let spec = Ipv4Spec::new(OUR_MAC, t.host_mac, t.peer_ip, t.host_ip);
                    replies.push(spec.icmp(Icmpv4Type::EchoReply(IcmpEchoHeader { id, seq }), payload));
                }
            }
            false
        });
        if !replies.is_empty() {
            send(port, pool, &replies);
        }
    }
    (arps, echoes)
}

/// What a thread in the switch namespace needs to know about the topology.
#[derive(Clone)]
struct TopoInfo {
    host_ns: String,
    host_ip: Ipv4Addr,
    host_mac: MacAddr,
    peer_ip: Ipv4Addr,
}

impl Topo {
    fn info(&self) -> TopoInfo {
        TopoInfo { host_ns: self.host.0.clone(), host_ip: self.host_ip, host_mac: self.host_mac, peer_ip: self.peer_ip }
    }
}

/// Host pings the peer address: its ARP request and echo requests reach the port (rx), the port's ARP reply
/// lands in the host's neighbour table and its echo replies make ping succeed (tx). In both modes, each checked
/// with `mode()` and with no XDP program left after the drop.
#[test]
fn host_ping_is_answered_through_the_port_in_native_and_generic_mode() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    for (i, mode) in [XdpMode::Native, XdpMode::Generic].into_iter().enumerate() {
        let topo = Topo::new(i as u32, 1);
        let info = topo.info();
        let cfg = topo.cfg(mode);
        let (got_mode, arps, echoes, ping_ok, stats) = topo.sw.run(move || {
            let mut port = AfXdpPort::open("xdp0", &cfg).expect("open AF_XDP port");
            let mut pool = BufPool::new(256);
            let ping = Command::new("ip")
                .args(["netns", "exec", &info.host_ns, "ping", "-c", "3", "-i", "0.2", "-W", "2"])
                .arg(info.peer_ip.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn ping");
            let mut ping = ping;
            let mut status = None;
            let (arps, echoes) = serve_peer(&info, &mut port, &mut pool, Duration::from_secs(6), || {
                if status.is_none() {
                    status = ping.try_wait().expect("wait ping");
                }
                status.is_some()
            });
            let ping_ok = match status {
                Some(s) => s.success(),
                None => {
                    let _ = ping.kill();
                    let _ = ping.wait();
                    false
                }
            };
            assert_eq!(pool.available(), pool.capacity(), "every buffer came back");
            (port.mode(), arps, echoes, ping_ok, port.stats())
        });
        assert_eq!(got_mode, mode, "mode() reports the mode asked for");
        assert!(arps >= 1, "{mode}: the host's ARP request reached the port");
        assert!(echoes >= 3, "{mode}: the host's echo requests reached the port ({echoes})");
        assert!(ping_ok, "{mode}: ping got its replies through the port");
        let neigh = topo.host.ip_stdout(&["neigh", "show", "dev", &topo.host_if]);
        assert!(
            neigh.contains(&topo.peer_ip.to_string()) && neigh.contains(&OUR_MAC.to_string()),
            "{mode}: host learned our ARP reply: {neigh}"
        );
        assert!(stats.rx_packets >= 4 && stats.tx_packets >= 4, "{stats:?}");
        assert_eq!((stats.rx_dropped, stats.tx_dropped), (0, 0), "{stats:?}");
        assert!(!has_xdp(&topo.sw_link()), "{mode}: XDP program gone after drop: {}", topo.sw_link());
    }
}

/// 64 frames each way in one burst, all arrive with the right bytes; prints the port's per-frame cost
/// (`cargo test -p dataplane --features afxdp --test afxdp_live burst -- --nocapture`).
#[test]
fn burst_of_64_both_ways_and_costs() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    for (i, mode) in [XdpMode::Generic, XdpMode::Native].into_iter().enumerate() {
        let topo = Topo::new(10 + i as u32, 1);
        let raw = packet_socket(&topo.host, &topo.host_if);
        let frames: Vec<Vec<u8>> = (0..64u16)
            .map(|n| {
                let mut payload = vec![0u8; 84];
                payload[..2].copy_from_slice(&n.to_be_bytes());
                eth(topo.host_mac, OUR_MAC, EXPERIMENTAL, &payload)
            })
            .collect();
        let host_rx_before = topo.host.if_stat(&topo.host_if, "rx_packets");
        let cfg = topo.cfg(mode);
        let (port, mut pool, tx_ns) = {
            let frames = frames.clone();
            // Opened and used on the main thread too: the port is Send, and its drop re-enters its namespace.
            topo.sw.run(move || {
                let mut port = AfXdpPort::open("xdp0", &cfg).expect("open");
                let mut pool = BufPool::new(256);
                // Warm-up frame (first-touch costs), then the timed burst.
                send(&mut port, &mut pool, &frames[..1]);
                let mut out: Vec<Frame> = frames
                    .iter()
                    .map(|b| {
                        let mut f = pool.alloc().unwrap();
                        f.load(b).unwrap();
                        f
                    })
                    .collect();
                let t0 = Instant::now();
                port.tx_burst(&mut pool, &mut out).expect("tx");
                let tx_ns = t0.elapsed().as_nanos() as f64 / 64.0;
                (port, pool, tx_ns)
            })
        };
        let mut port = port;
        let arrived = raw_recv_incoming(&raw, 65, Duration::from_secs(2));
        let ours: Vec<&Vec<u8>> = arrived.iter().filter(|d| d[12..14] == EXPERIMENTAL.to_be_bytes()).collect();
        assert_eq!(ours.len(), 65, "{mode}: warm-up + 64 frames arrived at the host");
        for (n, d) in ours[1..].iter().enumerate() {
            assert_eq!(d.as_slice(), frames[n].as_slice(), "{mode}: frame {n} intact and in order");
        }
        assert_eq!(topo.host.if_stat(&topo.host_if, "rx_packets") - host_rx_before, 65);

        // Receive: the host sends 64 frames, which wait in the rx ring; then time draining them.
        let to_us: Vec<Vec<u8>> = (0..64u16)
            .map(|n| {
                let mut payload = vec![0u8; 84];
                payload[..2].copy_from_slice(&n.to_be_bytes());
                eth(OUR_MAC, topo.host_mac, EXPERIMENTAL, &payload)
            })
            .collect();
        for f in &to_us {
            raw_send(&raw, f);
        }
        std::thread::sleep(Duration::from_millis(50));
        let fd = port.rx_fd().expect("pollable fd");
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        assert!(ready == 1 && pfd.revents & libc::POLLIN != 0, "{mode}: rx_fd is readable with frames waiting");
        let mut got = Vec::new();
        let mut rx_time = Duration::ZERO;
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < 64 && Instant::now() < deadline {
            let mut batch = Batch::new();
            let t0 = Instant::now();
            let n = port.rx_burst(1, &mut pool, &mut batch).expect("rx");
            if n > 0 {
                rx_time += t0.elapsed();
            }
            for f in batch.drain() {
                if f.data()[12..14] == EXPERIMENTAL.to_be_bytes() {
                    got.push(f.data().to_vec());
                }
                pool.free(f);
            }
        }
        assert_eq!(got.len(), 64, "{mode}: all 64 frames from the host arrived");
        pfd.revents = 0;
        // SAFETY: one valid pollfd for the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        assert_eq!(ready, 0, "{mode}: rx_fd not readable once drained");
        assert_eq!(got, to_us, "{mode}: intact and in order");
        let rx_ns = rx_time.as_nanos() as f64 / 64.0;
        let xs = port.xdp_stats().expect("xdp stats");
        assert_eq!((xs.rx_ring_full, xs.fill_ring_empty_descs, xs.rx_dropped), (0, 0, 0), "{xs:?}");
        let st = port.stats();
        assert_eq!((st.rx_dropped, st.tx_dropped), (0, 0), "{st:?}");
        assert_eq!(pool.available(), pool.capacity());
        println!(
            "AF_XDP {mode} mode, 98-byte frames, {} build: tx_burst of 64 = {tx_ns:.0} ns/frame (includes the \
             kernel's veth transmit), rx_burst draining 64 = {rx_ns:.0} ns/frame",
            if cfg!(debug_assertions) { "debug" } else { "release" }
        );
        // Dropped here, on the main thread (root namespace): the port re-enters its namespace to detach.
        drop(port);
        assert!(!has_xdp(&topo.sw_link()), "{mode}: XDP program gone after a drop elsewhere: {}", topo.sw_link());
    }
}

/// Native and generic are both obtainable on veth and reported; Auto gets native here; zero-copy is refused
/// on veth with a named error; no program remains after a drop or a failed open.
#[test]
fn modes_are_reported_and_nothing_remains_after_drop_or_failure() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let topo = Topo::new(20, 1);
    let base = topo.cfg(XdpMode::Auto);
    let sw_if = topo.sw_if.clone();
    let links = topo.sw.run(move || {
        let show = |ifname: &str| {
            let out = Command::new("ip").args(["link", "show", "dev", ifname]).output().expect("ip");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let mut seen = Vec::new();
        for mode in [XdpMode::Native, XdpMode::Generic, XdpMode::Auto] {
            let mut cfg = base.clone();
            cfg.mode = mode;
            let port = AfXdpPort::open("m", &cfg).expect("open");
            let while_open = show(&sw_if);
            let (got, zero_copy) = (port.mode(), port.zero_copy());
            drop(port);
            seen.push((mode, got, zero_copy, while_open, show(&sw_if)));
        }
        let mut zc = base.clone();
        zc.zero_copy = true;
        zc.mode = XdpMode::Generic;
        let err = AfXdpPort::open("zc", &zc).unwrap_err();
        (seen, err.to_string(), matches!(err.failure, OpenFailure::ZeroCopyUnsupported { .. }), show(&sw_if))
    });
    let (seen, zc_msg, zc_kind, after_zc) = links;
    for (asked, got, zero_copy, open_link, closed_link) in &seen {
        let want = if *asked == XdpMode::Auto { XdpMode::Native } else { *asked };
        assert_eq!(*got, want, "asked {asked}");
        assert!(!zero_copy, "veth is copy mode");
        // `ip link show` prints the attach mode as a word after the MTU: "xdp" (driver) or "xdpgeneric".
        let tag = if want == XdpMode::Native { "xdp" } else { "xdpgeneric" };
        assert!(open_link.split_whitespace().any(|w| w == tag), "asked {asked}: `ip link` shows {tag}: {open_link}");
        assert!(!has_xdp(closed_link), "asked {asked}: no program after drop: {closed_link}");
    }
    assert!(zc_kind, "{zc_msg}");
    assert!(zc_msg.contains("port zc") && zc_msg.contains(&topo.sw_if) && zc_msg.contains("zero-copy"), "{zc_msg}");
    assert!(!has_xdp(&after_zc), "no program after a failed open: {after_zc}");
}

/// Errors name the port and the interface: a missing interface, a queue already bound, an explicit mode that
/// conflicts with the program another socket attached; the failed opens leave the first port's program alone
/// and nothing remains once it is dropped.
#[test]
fn errors_name_port_and_interface() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let topo = Topo::new(30, 2);
    let sw_if = topo.sw_if.clone();
    let base = topo.cfg(XdpMode::Generic);
    let (missing, busy, mismatch, during) = topo.sw.run(move || {
        let missing = AfXdpPort::open("gone", &AfXdpConfig::new(ifname("vsxnothere0"))).unwrap_err();
        let first = AfXdpPort::open("first", &base).expect("open first");
        let busy = AfXdpPort::open("second", &base).unwrap_err();
        let mut q1 = base.clone();
        q1.queue_id = 1;
        q1.mode = XdpMode::Native;
        let mismatch = AfXdpPort::open("third", &q1).unwrap_err();
        // Auto on queue 1 accepts the generic program already there and says so.
        q1.mode = XdpMode::Auto;
        let auto = AfXdpPort::open("fourth", &q1).expect("auto on queue 1");
        assert_eq!(auto.mode(), XdpMode::Generic);
        drop(auto);
        let out = Command::new("ip").args(["link", "show", "dev", &sw_if]).output().expect("ip");
        let during = String::from_utf8_lossy(&out.stdout).into_owned();
        drop(first);
        (missing, busy, mismatch, during)
    });
    let m = missing.to_string();
    assert!(matches!(missing.failure, OpenFailure::NoSuchInterface), "{m}");
    assert!(m.contains("port gone") && m.contains("vsxnothere0"), "{m}");
    let b = busy.to_string();
    assert!(matches!(busy.failure, OpenFailure::QueueBusy { .. }), "{b}");
    assert!(b.contains("port second") && b.contains(&topo.sw_if) && b.contains("queue 0"), "{b}");
    let mm = mismatch.to_string();
    assert!(
        matches!(mismatch.failure, OpenFailure::ModeMismatch { .. } | OpenFailure::AttachFailed { .. }),
        "explicit native on a generic-attached interface: {mm}"
    );
    assert!(mm.contains("port third") && mm.contains(&topo.sw_if), "{mm}");
    assert!(during.contains("xdpgeneric"), "the first port's program survived the failed opens: {during}");
    assert!(!has_xdp(&topo.sw_link()), "nothing remains: {}", topo.sw_link());
    println!("errors:\n  {m}\n  {b}\n  {mm}");
}

/// A bridge has no native XDP: Auto falls back to generic and says so through `mode()`; explicit Native is a
/// named error; nothing stays attached.
#[test]
fn auto_falls_back_to_generic_where_native_is_unsupported() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let topo = Topo::new(40, 1);
    let br = format!("vsx{}b40", std::process::id());
    topo.sw.ip(&["link", "add", &br, "type", "bridge"]);
    topo.sw.ip(&["link", "set", "dev", &br, "up"]);
    let br2 = br.clone();
    let (auto_mode, native_err, link) = topo.sw.run(move || {
        let mut cfg = AfXdpConfig::new(ifname(&br2));
        let auto = AfXdpPort::open("br", &cfg).expect("auto on a bridge");
        let auto_mode = auto.mode();
        drop(auto);
        cfg.mode = XdpMode::Native;
        let err = AfXdpPort::open("br", &cfg).unwrap_err();
        let out = Command::new("ip").args(["link", "show", "dev", &br2]).output().expect("ip");
        (auto_mode, err, String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(auto_mode, XdpMode::Generic, "auto fell back to generic");
    let msg = native_err.to_string();
    assert!(matches!(native_err.failure, OpenFailure::NativeUnsupported { .. }), "{msg}");
    assert!(msg.contains("port br") && msg.contains(&br) && msg.contains("native"), "{msg}");
    assert!(!has_xdp(&link), "nothing attached: {link}");
    println!("explicit native on a bridge: {msg}");
}

/// Frames longer than a pool buffer are counted in rx_dropped (4096-byte chunks deliver them); with 2048-byte
/// chunks the kernel drops them and counts them in the socket statistics. Frames after them still arrive.
#[test]
fn too_long_frames_are_counted_on_receive() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let topo = Topo::new(50, 1);
    topo.host.ip(&["link", "set", "dev", &topo.host_if, "mtu", "3500"]);
    topo.sw.ip(&["link", "set", "dev", &topo.sw_if, "mtu", "3500"]);
    let raw = packet_socket(&topo.host, &topo.host_if);
    let big = eth(OUR_MAC, topo.host_mac, EXPERIMENTAL, &vec![7u8; 3028]);
    let small = eth(OUR_MAC, topo.host_mac, EXPERIMENTAL, &[9u8; 46]);
    assert_eq!(big.len(), 3042);
    for frame_size in [4096u32, 2048] {
        let mut cfg = topo.cfg(XdpMode::Generic);
        cfg.frame_size = frame_size;
        let mut port = topo.sw.run(move || AfXdpPort::open("big", &cfg).expect("open"));
        let mut pool = BufPool::new(64);
        raw_send(&raw, &big);
        raw_send(&raw, &small);
        let mut got_small = false;
        rx_until(&mut port, &mut pool, Duration::from_secs(2), |d| {
            assert!(d.len() < 3000, "no oversized frame handed over");
            got_small |= d == small.as_slice();
            got_small
        });
        assert!(got_small, "{frame_size}: the frame after the big one arrived");
        let st = port.stats();
        let xs = port.xdp_stats().expect("stats");
        // Either way the loss shows in the port's rx_dropped: the port's own refusal (4096-byte chunks hold
        // the frame, a pool buffer does not) or the kernel's (2048-byte chunks), which stats() adds.
        assert_eq!(st.rx_dropped, 1, "{st:?}");
        if frame_size == 2048 {
            assert_eq!(xs.rx_dropped, 1, "kernel dropped it: {xs:?}");
        }
        assert_eq!(pool.available(), pool.capacity());
        drop(port);
    }
    assert!(!has_xdp(&topo.sw_link()), "{}", topo.sw_link());
}

/// With 32 transmit chunks, a burst of 50 sends 32 and drops 18; a frame longer than a chunk is dropped; all
/// counted, nothing blocks, every buffer returns to the pool, and the chunks come back for the next burst.
#[test]
fn transmit_drops_when_chunks_run_out_or_frame_too_long() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let topo = Topo::new(60, 1);
    let raw = packet_socket(&topo.host, &topo.host_if);
    let mut cfg = topo.cfg(XdpMode::Generic);
    cfg.frames = 64;
    let mut port = topo.sw.run(move || AfXdpPort::open("few", &cfg).expect("open"));
    assert_eq!(port.max_frame_len(), 2048 - 256);
    let mut pool = BufPool::new(128);
    let frames: Vec<Vec<u8>> = (0..50u8).map(|n| eth(topo.host_mac, OUR_MAC, EXPERIMENTAL, &[n; 46])).collect();
    send(&mut port, &mut pool, &frames);
    let st = port.stats();
    assert_eq!((st.tx_packets, st.tx_dropped), (32, 18), "{st:?}");
    assert_eq!(pool.available(), pool.capacity());
    let arrived = raw_recv_incoming(&raw, 32, Duration::from_secs(2));
    let ours = arrived.iter().filter(|d| d[12..14] == EXPERIMENTAL.to_be_bytes()).count();
    assert_eq!(ours, 32);
    // Chunks come back through the completion ring: the next burst goes out whole.
    std::thread::sleep(Duration::from_millis(20));
    send(&mut port, &mut pool, &frames[..20]);
    let long = eth(topo.host_mac, OUR_MAC, EXPERIMENTAL, &vec![1u8; 1900 - 14]);
    send(&mut port, &mut pool, &[long]);
    let st = port.stats();
    assert_eq!((st.tx_packets, st.tx_dropped), (52, 19), "{st:?}");
    let arrived = raw_recv_incoming(&raw, 20, Duration::from_secs(2));
    assert_eq!(arrived.iter().filter(|d| d[12..14] == EXPERIMENTAL.to_be_bytes()).count(), 20);
    drop(port);
    assert!(!has_xdp(&topo.sw_link()), "{}", topo.sw_link());
}

/// Capability numbers (linux/capability.h).
const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;

/// Drops one capability from this thread's effective set (capabilities are per thread).
fn drop_effective_cap(cap: u32) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header { version: 0x2008_0522, pid: 0 };
    let mut d = [Data::default(); 2];
    // SAFETY: capget reads the header and writes two `Data` (version 3), both valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    d[(cap / 32) as usize].effective &= !(1 << (cap % 32));
    // SAFETY: capset reads the header and two `Data`; it changes only the calling thread's capabilities.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

/// Without CAP_IPC_LOCK a UMEM larger than RLIMIT_MEMLOCK is refused with a memlock error; without
/// CAP_NET_RAW the socket is refused with a permission error. Both name port and interface and leave nothing.
#[test]
fn memlock_and_permission_errors_are_named() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    // SAFETY: rlimit is plain data; getrlimit writes it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is valid for the call.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) }, 0);
    let topo = Topo::new(70, 1);
    let mut big = topo.cfg(XdpMode::Generic);
    big.frames = 16384; // 32 MiB
    let umem = u64::from(big.frames) * u64::from(big.frame_size);
    let plain = topo.cfg(XdpMode::Generic);
    let (memlock, perm) = topo.sw.run(move || {
        let memlock = (lim.rlim_cur < umem).then(|| {
            let r = std::thread::spawn(move || {
                drop_effective_cap(CAP_IPC_LOCK);
                AfXdpPort::open("big", &big).map(|_| ())
            });
            r.join().expect("thread")
        });
        let perm = std::thread::spawn(move || {
            drop_effective_cap(CAP_NET_RAW);
            AfXdpPort::open("noraw", &plain).map(|_| ())
        })
        .join()
        .expect("thread");
        (memlock, perm)
    });
    match memlock {
        None => println!("RLIMIT_MEMLOCK is {} bytes: memlock case not exercised", lim.rlim_cur),
        Some(r) => {
            let err = r.unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err.failure, OpenFailure::Memlock { .. }), "{msg}");
            assert!(msg.contains("port big") && msg.contains(&topo.sw_if) && msg.contains("MEMLOCK"), "{msg}");
            println!("{msg}");
        }
    }
    let err = perm.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err.failure, OpenFailure::PermissionDenied { .. }), "{msg}");
    assert!(msg.contains("port noraw") && msg.contains(&topo.sw_if) && msg.contains("permission"), "{msg}");
    println!("{msg}");
    assert!(!has_xdp(&topo.sw_link()), "{}", topo.sw_link());
}

/// This thread's CPU time (user + system, including softirq work the kernel runs in its context), so that
/// other processes on a loaded machine do not inflate the numbers the way wall-clock time would.
fn thread_cpu() -> Duration {
    // SAFETY: timespec is plain data; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is valid for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Per-frame costs over 200 rounds of 64 frames each way, min / median / max of the per-round averages
/// (`cargo test -p dataplane --release --features afxdp --test afxdp_live measure -- --nocapture`). Transmit
/// includes the kernel's work inside `sendto()` (skb build, veth transmit); receive is the port's ring walk, copy
/// into pool buffers and refill (frames already waiting in the rx ring).
#[test]
fn measure_costs() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    const ROUNDS: usize = 200;
    for (i, mode) in [XdpMode::Generic, XdpMode::Native].into_iter().enumerate() {
        let topo = Topo::new(80 + i as u32, 1);
        let cfg = topo.cfg(mode);
        let mut port = topo.sw.run(move || AfXdpPort::open("cost", &cfg).expect("open"));
        let mut pool = BufPool::new(256);
        let out_frames: Vec<Vec<u8>> = (0..64u8).map(|n| eth(topo.host_mac, OUR_MAC, EXPERIMENTAL, &[n; 46])).collect();
        let in_frame = eth(OUR_MAC, topo.host_mac, EXPERIMENTAL, &[5u8; 46]);
        let (mut tx, mut rx) = (Vec::new(), Vec::new());
        // Transmit first, with nothing listening on the host side (the host stack drops the unknown EtherType).
        for _ in 0..ROUNDS {
            let mut out: Vec<Frame> = out_frames
                .iter()
                .map(|b| {
                    let mut f = pool.alloc().unwrap();
                    f.load(b).unwrap();
                    f
                })
                .collect();
            let t0 = thread_cpu();
            port.tx_burst(&mut pool, &mut out).expect("tx");
            tx.push((thread_cpu() - t0).as_nanos() as f64 / 64.0);
        }
        // Sustained: 500 bursts of 32 back to back (warm kernel path), total time over all frames.
        let t0 = thread_cpu();
        for _ in 0..500 {
            let mut out: Vec<Frame> = out_frames[..32]
                .iter()
                .map(|b| {
                    let mut f = pool.alloc().unwrap();
                    f.load(b).unwrap();
                    f
                })
                .collect();
            port.tx_burst(&mut pool, &mut out).expect("tx");
        }
        let sustained_tx = (thread_cpu() - t0).as_nanos() as f64 / 16_000.0;
        let raw = packet_socket(&topo.host, &topo.host_if);
        for _ in 0..ROUNDS {
            for _ in 0..64 {
                raw_send(&raw, &in_frame);
            }
            std::thread::sleep(Duration::from_millis(2));
            let (mut n, mut spent) = (0, Duration::ZERO);
            let deadline = Instant::now() + Duration::from_secs(1);
            while n < 64 && Instant::now() < deadline {
                let mut batch = Batch::new();
                let t0 = thread_cpu();
                let k = port.rx_burst(1, &mut pool, &mut batch).expect("rx");
                if k > 0 {
                    spent += thread_cpu() - t0;
                }
                n += k;
                for f in batch.drain() {
                    pool.free(f);
                }
            }
            assert_eq!(n, 64, "{mode}: every frame of the round arrived");
            rx.push(spent.as_nanos() as f64 / 64.0);
        }
        let st = port.stats();
        assert_eq!(st.rx_dropped, 0, "{st:?}");
        let summary = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            format!("{:.0}/{:.0}/{:.0}", v[0], v[v.len() / 2], v[v.len() - 1])
        };
        println!(
            "AF_XDP {mode} mode, 60-byte frames, {} build, thread CPU ns/frame min/median/max over {ROUNDS} rounds of 64: \
             tx_burst {} (incl. kernel veth transmit), rx_burst {}; sustained tx (500 x 32) {sustained_tx:.0} incl. \
             building the frames; dropped {}",
            if cfg!(debug_assertions) { "debug" } else { "release" },
            summary(&mut tx),
            summary(&mut rx),
            st.tx_dropped
        );
        drop(port);
    }
}

/// True if the IPv4 UDP/TCP segment in `d` carries a complete, valid checksum.
fn l4_checksum_ok(d: &[u8]) -> bool {
    let ihl = usize::from(d[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([d[16], d[17]]));
    let seg = &d[14 + ihl..14 + total];
    let mut buf = d[26..34].to_vec();
    buf.extend_from_slice(&[0, d[23]]);
    buf.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    buf.extend_from_slice(seg);
    dataplane::wire::checksum::verify(&buf)
}

/// What the module documentation says about checksums: with the veth's default offloads the host stack's UDP
/// datagrams reach the port with a partial checksum (AF_XDP says nothing about it and the port passes frames
/// unchanged); after `ethtool -K <host veth> tx off` they carry complete checksums.
#[test]
fn partial_checksums_arrive_unless_tx_offload_is_off() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let topo = Topo::new(90, 1);
    let peer = topo.peer_ip.to_string();
    let mac = OUR_MAC.to_string();
    topo.host.ip(&["neigh", "replace", &peer, "lladdr", &mac, "dev", &topo.host_if, "nud", "permanent"]);
    let cfg = topo.cfg(XdpMode::Generic);
    let mut port = topo.sw.run(move || AfXdpPort::open("csum", &cfg).expect("open"));
    let mut pool = BufPool::new(64);
    let (host_ip, peer_ip) = (topo.host_ip, topo.peer_ip);
    let mut results = Vec::new();
    for offload_off in [false, true] {
        if offload_off {
            let ok = Command::new("ip")
                .args(["netns", "exec", &topo.host.0, "ethtool", "-K", &topo.host_if, "tx", "off"])
                .stdout(std::process::Stdio::null())
                .status()
                .expect("ethtool")
                .success();
            assert!(ok, "ethtool -K tx off");
        }
        topo.host.run(move || {
            let s = std::net::UdpSocket::bind((host_ip, 0)).expect("bind");
            s.send_to(&[0x42; 100], (peer_ip, 9999)).expect("send");
        });
        let mut seen = None;
        rx_until(&mut port, &mut pool, Duration::from_secs(2), |d| {
            let udp = d.len() >= 42 && d[12..14] == [0x08, 0x00] && d[23] == 17 && d[30..34] == peer_ip.octets();
            if udp {
                seen = Some(l4_checksum_ok(d));
            }
            udp
        });
        results.push(seen.expect("the datagram arrived"));
    }
    println!("UDP checksum complete on arrival: offloads on = {}, tx off = {}", results[0], results[1]);
    assert!(!results[0], "default veth offloads: the checksum is partial (the documented caveat)");
    assert!(results[1], "with tx checksum offload off the checksum is complete");
    drop(port);
}
