//! Live tests of `TapPort` against the real kernel: need root and /dev/net/tun (skipped otherwise, with a
//! message). Each test creates its own uniquely named network namespace and tap and deletes them afterwards,
//! even on failure; it touches no other interface.

#[path = "common/netns.rs"]
mod netns;
#[path = "common/transfer.rs"]
mod transfer;

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

use netns::{ip, Netns};

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
    // Without offloads: the kernel completes checksums before the tap's queue, and the pool has no large
    // buffer for the jumbo frame.
    cfg.offload = false;
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
    assert_eq!(port.counters().no_large_buffer, 1);
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

/// Two taps with their hosts in two namespaces (10.199.X.1 and .2), joined by a thread of this test that moves
/// every frame received on one port to the other: the switch in miniature, so what the taps do with
/// super-frames and partial checksums is all that is tested.
struct TapPair {
    ns: [Netns; 2],
    ip: [Ipv4Addr; 2],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    forwarder: Option<std::thread::JoinHandle<[TapPort; 2]>>,
}

impl TapPair {
    /// Taps for test number `test` (two numbers: `test` and `test + 1`), with offloads on or off each, forwarded
    /// through a pool with `large` large buffers.
    fn new(test: u32, offload: [bool; 2], large: usize) -> TapPair {
        let (n0, t0, x) = names(test);
        let (n1, t1, _) = names(test + 1);
        let ns = [Netns::create(&n0), Netns::create(&n1)];
        let ip = [Ipv4Addr::new(10, 199, x, 1), Ipv4Addr::new(10, 199, x, 2)];
        let open = |i: usize, tap: &str| {
            let mut cfg = TapConfig::new(ifname(tap));
            cfg.netns = Some(ns[i].0.clone());
            cfg.offload = offload[i];
            let p = TapPort::open(&format!("p{i}"), &cfg).expect("open tap");
            ns[i].ip(&["addr", "add", &format!("{}/24", ip[i]), "dev", tap]);
            p
        };
        let ports = [open(0, &t0), open(1, &t1)];
        assert_eq!(ports[0].vnet(), offload[0]);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let forwarder = std::thread::spawn(move || {
            let mut ports = ports;
            let mut pool = BufPool::with_large(512, large);
            let mut out: Vec<Frame> = Vec::with_capacity(64);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let mut moved = 0;
                for from in 0..2 {
                    let mut batch = Batch::new();
                    ports[from].rx_burst(1, &mut pool, &mut batch).expect("rx");
                    moved += batch.len();
                    out.extend(batch.drain());
                    ports[1 - from].tx_burst(&mut pool, &mut out).expect("tx");
                }
                if moved == 0 {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
            assert_eq!((pool.available(), pool.large_available()), (512, large), "every buffer came back");
            ports
        });
        TapPair { ns, ip, stop, forwarder: Some(forwarder) }
    }

    /// Stops the forwarder and returns the ports (for their counters).
    fn stop(mut self) -> [TapPort; 2] {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.forwarder.take().unwrap().join().expect("forwarder")
    }
}

impl Drop for TapPair {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(f) = self.forwarder.take() {
            let _ = f.join();
        }
    }
}

#[test]
fn super_frames_cross_two_offloading_taps_whole_and_every_byte_arrives() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let pair = TapPair::new(10, [true, true], 64);
    let t = transfer::verified_transfer(&pair.ns[0], &pair.ns[1], pair.ip[1], 5001, 32 << 20, Duration::from_secs(60));
    let errors = [transfer::csum_errors(&pair.ns[0]), transfer::csum_errors(&pair.ns[1])];
    let ports = pair.stop();
    let (a, b) = (ports[0].stats(), ports[1].stats());
    println!("tap pair with offloads: {:.2} Gbit/s; {a:?}; {b:?}", t.gbit_per_s());
    assert_eq!(errors, [(0, 0), (0, 0)], "no checksum errors at either receiver");
    assert_ne!(ports[0].rx_offloads() & libc::TUN_F_TSO4, 0, "the kernel granted TSO4");
    assert!(ports[0].caps().tso4 && ports[0].caps().csum);
    // Super-frames both ways (data one way, the reply's data the other), handed over whole.
    for (rx, tx) in [(a, b), (b, a)] {
        assert!(rx.rx_super_frames > 0 && tx.tx_super_frames > 0, "{rx:?} {tx:?}");
        assert!(rx.rx_bytes / rx.rx_packets > 10_000, "average frame over 10 KB: {rx:?}");
        assert_eq!(rx.sw_segmented + rx.sw_csum + tx.sw_segmented + tx.sw_csum, 0, "nothing done in software");
        assert_eq!(rx.rx_dropped + tx.tx_dropped, 0);
    }
}

#[test]
fn without_large_buffers_super_frames_are_cut_on_receive_and_nothing_is_lost() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let pair = TapPair::new(12, [true, true], 0);
    let t = transfer::verified_transfer(&pair.ns[0], &pair.ns[1], pair.ip[1], 5002, 8 << 20, Duration::from_secs(60));
    let errors = [transfer::csum_errors(&pair.ns[0]), transfer::csum_errors(&pair.ns[1])];
    let ports = pair.stop();
    let (a, b) = (ports[0].stats(), ports[1].stats());
    println!("tap pair, no large buffers: {:.2} Gbit/s; {a:?}; {b:?}", t.gbit_per_s());
    assert_eq!(errors, [(0, 0), (0, 0)]);
    assert!(a.sw_segmented > 0 && b.sw_segmented > 0, "cut on receive: {a:?} {b:?}");
    // A GSO frame short enough for a small buffer (a short tail of a send) is still taken whole and counted in
    // `rx_super_frames` (seen: 1 against 196 cut); every longer one is cut, so whole ones are the exception.
    assert!(a.rx_super_frames + b.rx_super_frames < (a.sw_segmented + b.sw_segmented) / 10, "{a:?} {b:?}");
    assert_eq!(a.rx_dropped + b.rx_dropped, 0, "nothing dropped");
}

#[test]
fn a_tap_without_offloads_gets_frames_segmented_and_completed_in_software() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let pair = TapPair::new(14, [true, false], 64);
    let t = transfer::verified_transfer(&pair.ns[0], &pair.ns[1], pair.ip[1], 5003, 16 << 20, Duration::from_secs(60));
    // The host behind the tap without offloads checks every checksum it receives.
    let errors = [transfer::csum_errors(&pair.ns[0]), transfer::csum_errors(&pair.ns[1])];
    let ports = pair.stop();
    let (a, b) = (ports[0].stats(), ports[1].stats());
    println!("tap with offloads to tap without: {:.2} Gbit/s; {a:?}; {b:?}", t.gbit_per_s());
    assert_eq!(errors, [(0, 0), (0, 0)]);
    assert_eq!(ports[1].caps(), dataplane::offload::Caps::NONE);
    assert!(a.rx_super_frames > 0, "{a:?}");
    assert!(b.sw_segmented > 0 && b.sw_csum > 0, "segmented and completed on transmit: {b:?}");
    assert_eq!(b.tx_super_frames, 0);
    assert!(b.tx_bytes / b.tx_packets <= 1514, "wire-sized frames only: {b:?}");
    assert_eq!(b.rx_super_frames, 0, "the kernel segments before a tap without offloads");
}
