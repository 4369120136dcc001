//! Traffic and counters for the live benchmark: a 64-byte UDP blaster (`sendmmsg` on a connected socket,
//! pinned to one core), a timed TCP stream, and the kernel counters the benchmark reads (link statistics of an
//! interface in a namespace, `/proc/stat` softirq time, TCP retransmissions in a namespace).
//!
//! The blaster and the TCP client run on threads that joined the sender's namespace
//! ([`tools::lab::netns::in_netns`]). Counters are read by running `ip`/`cat` inside the namespace, since
//! `/sys` and `/proc/net` of this process show its own namespace. Set-up code, not a hot path except
//! [`blast`]'s send loop, which sends batches of [`BATCH`] datagrams per system call.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use tools::lab::netns::{exec, in_netns};

/// Datagrams per `sendmmsg` call.
pub const BATCH: usize = 64;
/// UDP payload giving a 60-byte frame (64 with the FCS): 14 Ethernet + 20 IPv4 + 8 UDP + 18.
pub const PAYLOAD: usize = 18;

/// Sends 64-byte UDP frames from namespace `ns` to `to` for `duration`, on a thread pinned to `cpu`; returns
/// the datagrams the kernel accepted.
pub fn blast(ns: &str, to: SocketAddrV4, duration: Duration, cpu: usize) -> anyhow::Result<u64> {
    let handle = in_netns(ns, move || -> anyhow::Result<u64> {
        pin_to(cpu);
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.connect(to)?;
        let payload = [0u8; PAYLOAD];
        let mut iov = [libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: PAYLOAD }; 1];
        // SAFETY: mmsghdr is plain old data; all-zero is a valid value (no name, no control data).
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for m in msgs.iter_mut() {
            m.msg_hdr.msg_iov = iov.as_mut_ptr();
            m.msg_hdr.msg_iovlen = 1;
        }
        let fd = sock.as_raw_fd();
        let deadline = Instant::now() + duration;
        let mut sent = 0u64;
        let mut calls = 0u32;
        loop {
            // SAFETY: `msgs` holds BATCH valid headers pointing at `iov`, which points at `payload`; all three
            // outlive the call; `fd` is the open socket.
            let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as libc::c_uint, 0) };
            if n > 0 {
                sent += n as u64;
            }
            calls = calls.wrapping_add(1);
            if calls & 63 == 0 && Instant::now() >= deadline {
                break;
            }
        }
        Ok(sent)
    });
    handle.join().map_err(|_| anyhow::anyhow!("blaster thread panicked"))??
}

/// Pins the calling thread to `cpu` (best effort).
pub fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside `set`; it ignores a cpu beyond the set's size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// Streams zeros over TCP from namespace `ns` to `to` for `duration`; returns the bytes written. The peer is a
/// [`tools::lab::probe::TcpServer`], which counts what arrived.
pub fn tcp_stream(ns: &str, to: SocketAddrV4, duration: Duration, cpu: usize) -> anyhow::Result<u64> {
    let handle = in_netns(ns, move || -> anyhow::Result<u64> {
        pin_to(cpu);
        let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        let buf = vec![0u8; 128 * 1024];
        let deadline = Instant::now() + duration;
        let mut sent = 0u64;
        while Instant::now() < deadline {
            match s.write(&buf) {
                Ok(n) => sent += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(anyhow::anyhow!("tcp write after {sent} bytes: {e}")),
            }
        }
        s.shutdown(std::net::Shutdown::Write)?;
        // Wait for the server's answer line so everything sent has been received.
        let mut line = String::new();
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&s), &mut line)
            .map_err(|e| anyhow::anyhow!("no answer from the server 10 s after the stream ended (stalled): {e}"))?;
        Ok(sent)
    });
    handle.join().map_err(|_| anyhow::anyhow!("tcp client thread panicked"))??
}

/// `(rx_packets, tx_packets)` of `ifname` in namespace `ns`.
pub fn link_packets(ns: &str, ifname: &str) -> anyhow::Result<(u64, u64)> {
    let out = exec(ns, "ip", &["-s", "-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let st = &v[0]["stats64"];
    let get = |dir: &str| st[dir]["packets"].as_u64().ok_or_else(|| anyhow::anyhow!("no {dir} packets for {ifname}"));
    Ok((get("rx")?, get("tx")?))
}

/// Softirq and total busy (non-idle) CPU time of the whole machine so far, in nanoseconds.
pub fn cpu_times() -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let line = text.lines().next().ok_or_else(|| anyhow::anyhow!("empty /proc/stat"))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    anyhow::ensure!(f.len() >= 8, "short /proc/stat cpu line");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let to_ns = |ticks: u64| ticks * 1_000_000_000 / hz;
    let busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
    Ok((to_ns(f[6]), to_ns(busy)))
}

/// `Tcp: RetransSegs` of namespace `ns`.
pub fn tcp_retransmits(ns: &str) -> anyhow::Result<u64> {
    let out = exec(ns, "cat", &["/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else { anyhow::bail!("no Tcp lines") };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RetransSegs")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no RetransSegs"))
}

/// Whether trafgen (netsniff-ng) is installed.
pub fn have_trafgen() -> bool {
    tools::lab::netns::run("sh", &["-c", "command -v trafgen"]).is_ok()
}

/// The MAC address namespace `ns` has resolved for `ip` (after traffic to it, e.g. a ping).
pub fn neighbour_mac(ns: &str, ip: Ipv4Addr) -> anyhow::Result<String> {
    let out = exec(ns, "ip", &["-j", "neigh", "show", &ip.to_string()])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v.as_array()
        .and_then(|a| a.iter().find_map(|e| e["lladdr"].as_str()))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no neighbour entry for {ip} in {ns}"))
}

/// What [`trafgen`] sends: 64-byte UDP frames from `src` to `dst` through the next hop at `dst_mac`.
#[derive(Debug, Clone)]
pub struct TrafgenFlow {
    /// Sending interface (in the sender's namespace).
    pub ifname: String,
    /// Ethernet destination (the receiver, or the gateway when routed).
    pub dst_mac: String,
    /// IPv4 source.
    pub src: Ipv4Addr,
    /// IPv4 destination.
    pub dst: Ipv4Addr,
}

/// Sends the flow with trafgen from namespace `ns` for `duration`, pinned to `cpu` (one process, packet socket
/// without the qdisc path; `--no-sock-mem`: it leaves the machine's socket memory settings alone).
pub fn trafgen(ns: &str, flow: &TrafgenFlow, duration: Duration, cpu: usize) -> anyhow::Result<()> {
    let conf = tempfile::NamedTempFile::new()?;
    let text = format!(
        "{{\n  eth(da={}, type=0x0800),\n  ipv4(saddr={}, daddr={}, ttl=64),\n  udp(sp=4000, dp=9),\n  fill(0x00, {PAYLOAD})\n}}\n",
        flow.dst_mac, flow.src, flow.dst
    );
    std::fs::write(conf.path(), text)?;
    let secs = format!("{:.3}", duration.as_secs_f64());
    let conf_path = conf.path().to_string_lossy().to_string();
    let cpu_s = cpu.to_string();
    let start = Instant::now();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "-s", "INT", &secs, "taskset", "-c", &cpu_s, "trafgen"])
        .args(["-o", &flow.ifname, "-c", &conf_path, "-P", "1", "--no-sock-mem", "--no-cpu-stats"])
        .output()?;
    anyhow::ensure!(
        start.elapsed() >= duration / 2,
        "trafgen stopped early ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}
