//! Live tests of `TapPort` against the real kernel: need root and /dev/net/tun (skipped otherwise, with a
//! message). Each test creates its own uniquely named network namespace and tap and deletes them afterwards,
//! even on failure; it touches no other interface.

use dataplane::batch::Batch;
use dataplane::buffer::{BufPool, Frame};
use dataplane::port::tap::{TapConfig, TapPort};
use dataplane::port::Port;
use dataplane::port::{IfName, OpenFailure};
use dataplane::wire::builder::arp_request;
use dataplane::wire::MacAddr;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// An interface name the test made (valid by construction).
fn ifname(name: &str) -> IfName {
    IfName::new(name).expect("a valid interface name")
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some(format!("not root (euid {euid})"));
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".to_string());
    }
    None
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A network namespace created by the test and deleted (by its exact name) when dropped.
struct Netns(String);

impl Netns {
    fn create(name: &str) -> Netns {
        ip(&["netns", "add", name]);
        Netns(name.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

/// Waits (up to 1 s) for interface `name` to disappear. Not immediate: a thread of this process that is
/// spawning a subprocess at the moment holds a copy of every fd between fork and exec (O_CLOEXEC closes it
/// only at exec), and the kernel deletes the tap when the last copy is closed.
fn gone(name: &str) -> bool {
    let path = format!("/sys/class/net/{name}");
    let deadline = Instant::now() + Duration::from_secs(1);
    while std::path::Path::new(&path).exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Distinct per test so that tests running in parallel in one process never share a name.
fn names(test: u32) -> (String, String, u8) {
    let pid = std::process::id();
    let ns = format!("vst{pid}n{test}");
    let tap = format!("vst{pid}t{test}");
    assert!(tap.len() <= 15, "{tap}");
    (ns, tap, (pid % 200) as u8 + 1)
}

#[test]
fn kernel_answers_arp_through_a_tap_moved_into_a_netns() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let (ns_name, tap_name, x) = names(0);
    let ns = Netns::create(&ns_name);
    let mut cfg = TapConfig::new(ifname(&tap_name));
    cfg.mtu = Some(1500);
    cfg.netns = Some(ns.0.clone());
    let mut port = TapPort::open("tap0", &cfg).expect("open tap");
    let tap_ip = Ipv4Addr::new(10, 199, x, 1);
    let our_ip = Ipv4Addr::new(10, 199, x, 2);
    let cidr = format!("{tap_ip}/24");
    ip(&["netns", "exec", &ns.0, "ip", "addr", "add", &cidr, "dev", &tap_name]);
    ip(&["netns", "exec", &ns.0, "ip", "link", "set", "dev", &tap_name, "up"]);

    let our_mac = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x00, x]);
    let req = arp_request(our_mac, our_ip, tap_ip);
    let mut pool = BufPool::new(64);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut reply = None;
    let mut last_send = None::<Instant>;
    while reply.is_none() && Instant::now() < deadline {
        // (Re)send every 200 ms: the link may still be settling when the first request goes out.
        if !matches!(last_send, Some(t) if t.elapsed() <= Duration::from_millis(200)) {
            let mut f = pool.alloc().expect("buffer");
            f.load(&req).unwrap();
            let mut out: Vec<Frame> = vec![f];
            port.tx_burst(&mut pool, &mut out).expect("tx");
            assert!(out.is_empty());
            last_send = Some(Instant::now());
        }
        let mut batch = Batch::new();
        port.rx_burst(7, &mut pool, &mut batch).expect("rx");
        for f in batch.drain() {
            let d = f.data();
            assert_eq!(f.ts, 7);
            // ARP (0x0806), Ethernet/IPv4, op 2 (reply), sender IP = tap's IP.
            if d.len() >= 42 && d[12..14] == [0x08, 0x06] && d[20..22] == [0, 2] && d[28..32] == tap_ip.octets() {
                reply = Some(d.to_vec());
            }
            pool.free(f);
        }
        if reply.is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let reply = reply.expect("no ARP reply from the kernel within 2 s");
    let tap_mac = port.mac().0;
    assert_eq!(reply[0..6], our_mac.0, "addressed to us");
    assert_eq!(reply[6..12], tap_mac, "Ethernet source is the tap's MAC");
    assert_eq!(reply[22..28], tap_mac, "ARP sender MAC is the tap's MAC");
    assert_eq!(reply[32..38], our_mac.0, "ARP target MAC is ours");
    assert_eq!(reply[38..42], our_ip.octets(), "ARP target IP is ours");
    let st = port.stats();
    assert!(st.tx_packets >= 1 && st.rx_packets >= 1, "{st:?}");
    assert_eq!(st.tx_dropped, 0);
    assert_eq!(st.rx_dropped, 0);
    assert_eq!(pool.available(), pool.capacity(), "every buffer came back");
    drop(port);
    drop(ns);
}

#[test]
fn opening_the_same_tap_twice_is_a_clear_error_and_closing_deletes_it() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let (_, tap_name, _) = names(1);
    // Guard: if the test fails while the tap exists, dropping `first` (unwinding) deletes it.
    let first = TapPort::open("a", &TapConfig::new(ifname(&tap_name))).expect("open tap");
    assert!(std::path::Path::new(&format!("/sys/class/net/{tap_name}")).exists());
    let err = TapPort::open("b", &TapConfig::new(ifname(&tap_name))).unwrap_err();
    assert!(matches!(err.failure, OpenFailure::Busy), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("port b") && msg.contains(&tap_name) && msg.contains("busy"), "{msg}");
    drop(first);
    assert!(gone(&tap_name), "a non-persistent tap disappears when its fd is closed");
}

#[test]
fn failed_netns_move_leaves_no_interface_behind() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let (ns_name, tap_name, _) = names(2);
    let mut cfg = TapConfig::new(ifname(&tap_name));
    // A namespace that does not exist (never created).
    cfg.netns = Some(format!("{ns_name}missing"));
    let err = TapPort::open("c", &cfg).unwrap_err();
    assert!(matches!(err.failure, OpenFailure::Netns { .. }), "{err:?}");
    assert!(gone(&tap_name), "the failed open closed its fd, so the kernel deleted the tap");
}

/// Ones'-complement sum of 16-bit big-endian words (odd trailing byte padded with zero).
fn csum_add(mut sum: u32, bytes: &[u8]) -> u32 {
    for c in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn oversized_frames_are_dropped_and_counted_and_udp_arrives_with_a_complete_checksum() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let (ns_name, tap_name, x) = names(3);
    let ns = Netns::create(&ns_name);
    let mut cfg = TapConfig::new(ifname(&tap_name));
    cfg.mtu = Some(9000);
    cfg.netns = Some(ns.0.clone());
    let mut port = TapPort::open("tap3", &cfg).expect("open tap");
    let tap_ip = Ipv4Addr::new(10, 199, x, 1);
    let peer_ip = Ipv4Addr::new(10, 199, x, 2);
    let peer_mac = "02:00:5e:10:01:02";
    let cidr = format!("{tap_ip}/24");
    let peer = peer_ip.to_string();
    ip(&["netns", "exec", &ns.0, "ip", "addr", "add", &cidr, "dev", &tap_name]);
    ip(&["netns", "exec", &ns.0, "ip", "link", "set", "dev", &tap_name, "up"]);
    ip(&["netns", "exec", &ns.0, "ip", "neigh", "replace", &peer, "lladdr", peer_mac, "dev", &tap_name]);
    // One 3000-byte UDP datagram (a 3042-byte frame, longer than a buffer), then a small one.
    let script =
        format!("head -c 3000 /dev/zero > /dev/udp/{peer}/9; sleep 0.05; printf 'hello tap' > /dev/udp/{peer}/9");
    let st = Command::new("ip").args(["netns", "exec", &ns.0, "bash", "-c", &script]).status().expect("bash");
    assert!(st.success());

    let mut pool = BufPool::new(64);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut small = None;
    while small.is_none() && Instant::now() < deadline {
        let mut batch = Batch::new();
        port.rx_burst(0, &mut pool, &mut batch).expect("rx");
        for f in batch.drain() {
            let d = f.data();
            // IPv4 (0x0800), UDP (17), to port 9.
            if d.len() >= 42 && d[12..14] == [0x08, 0x00] && d[23] == 17 && d[36..38] == [0, 9] {
                assert!(d.len() < 100, "the oversized datagram must not be handed over (got {} bytes)", d.len());
                small = Some(d.to_vec());
            }
            pool.free(f);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let d = small.expect("small UDP datagram not received within 2 s");
    assert_eq!(port.stats().rx_dropped, 1, "the 3042-byte frame is dropped and counted");
    let ihl = usize::from(d[14] & 0x0f) * 4;
    let udp = &d[14 + ihl..];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    assert_eq!(&udp[8..udp_len], b"hello tap");
    assert_ne!(u16::from_be_bytes([udp[6], udp[7]]), 0, "checksum present");
    let mut sum = csum_add(0, &d[26..34]); // source and destination address
    sum += 17 + udp_len as u32;
    sum = csum_add(sum, &udp[..udp_len]);
    assert_eq!(csum_fold(sum), 0, "UDP checksum is complete and valid");
    assert_eq!(pool.available(), pool.capacity());
}

/// Prints the cost of one tap write and one empty read (`cargo test -- --nocapture` to see it).
#[test]
fn measure_write_and_empty_read_cost() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let (_, tap_name, _) = names(4);
    let mut port = TapPort::open("tap4", &TapConfig::new(ifname(&tap_name))).expect("open tap");
    let mut pool = BufPool::new(64);
    // Broadcast frames of an unassigned EtherType: the host stack drops them at once.
    let mut frame = vec![0xffu8; 60];
    frame[6..12].copy_from_slice(&[0x02, 0, 0x5e, 0x10, 0x02, 0x01]);
    frame[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental EtherType
    let rounds = 200;
    let t = Instant::now();
    let mut out = Vec::with_capacity(32);
    for _ in 0..rounds {
        for _ in 0..32 {
            let mut f = pool.alloc().unwrap();
            f.load(&frame).unwrap();
            out.push(f);
        }
        port.tx_burst(&mut pool, &mut out).unwrap();
    }
    let per_write = t.elapsed().as_nanos() / (rounds * 32) as u128;
    let t = Instant::now();
    let mut batch = Batch::new();
    for _ in 0..rounds * 32 {
        port.rx_burst(0, &mut pool, &mut batch).unwrap();
        for f in batch.drain() {
            pool.free(f);
        }
    }
    let per_empty_read = t.elapsed().as_nanos() / (rounds * 32) as u128;
    let st = port.stats();
    println!("tap write: {per_write} ns/frame; empty rx_burst: {per_empty_read} ns; {st:?}");
    assert_eq!(st.tx_packets + st.tx_dropped, (rounds * 32) as u64);
    assert_eq!(pool.available(), pool.capacity());
}
