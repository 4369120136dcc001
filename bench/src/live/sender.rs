//! A rate-controlled sender for the live benchmark's NDR/PDR search and frame-size sweep: one prepared frame
//! sent over an AF_PACKET socket (`PACKET_QDISC_BYPASS`: straight to the driver, as trafgen does) in batches
//! of up to [`BATCH`] with `sendmmsg`, either flat out or on a schedule of `rate` frames per second.
//!
//! Pacing: frame `k` is due at `start + k / rate`; the loop sends what is due (at most a batch), and sleeps
//! (timer slack 1 µs) when the next batch is more than [`SPIN`] away, spinning otherwise, so at moderate rates
//! the core is mostly free (the round-trip measurement shares it) and at high rates the schedule is kept to a
//! few microseconds. The clock (`Instant`) is read once per loop, never per frame.
//!
//! Counting: a frame the kernel refuses (`ENOBUFS`: the veth's peer queue, i.e. the forwarder's receive ring,
//! is full) is counted as offered and lost, not retried, as a frame put on a wire is. The receiver's count is
//! the caller's business ([`udp_received`]: every UDP datagram the receiver's stack saw, listener or not).
//!
//! Runs on a thread of its own that joins the sender's namespace and pins itself to a core.

use super::traffic::pin_to;
use std::time::{Duration, Instant};
use tools::lab::netns::{exec, in_netns};

/// Frames per `sendmmsg`.
pub const BATCH: usize = 32;
/// Below this gap to the next batch the sender spins instead of sleeping.
const SPIN: Duration = Duration::from_micros(60);

/// What to send.
#[derive(Debug, Clone)]
pub struct SendSpec {
    /// The sender's namespace.
    pub ns: String,
    /// Its interface.
    pub ifname: String,
    /// The whole Ethernet frame (without FCS).
    pub frame: Vec<u8>,
    /// Frames per second; `None` for flat out.
    pub rate: Option<f64>,
    /// How long.
    pub duration: Duration,
    /// The core to pin to.
    pub cpu: usize,
}

/// What the sender did.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Sent {
    /// Frames offered (sent + refused).
    pub offered: u64,
    /// Frames the kernel refused (counted as lost).
    pub refused: u64,
    /// Seconds from the first to the last send.
    pub secs: f64,
}

impl Sent {
    /// Offered frames per second.
    pub fn pps(&self) -> f64 {
        self.offered as f64 / self.secs.max(1e-9)
    }
}

/// Sends `spec`; returns what was offered.
pub fn send(spec: &SendSpec) -> anyhow::Result<Sent> {
    let spec = spec.clone();
    let ns = spec.ns.clone();
    let handle = in_netns(&ns, move || send_here(&spec));
    handle.join().map_err(|_| anyhow::anyhow!("sender thread panicked"))??
}

fn send_here(spec: &SendSpec) -> anyhow::Result<Sent> {
    pin_to(spec.cpu);
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
    let fd = Socket::open(&spec.ifname)?;
    let mut iov = [libc::iovec { iov_base: spec.frame.as_ptr() as *mut libc::c_void, iov_len: spec.frame.len() }];
    // SAFETY: mmsghdr is plain old data; all-zero is a valid value (no name, no control data).
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for m in msgs.iter_mut() {
        m.msg_hdr.msg_iov = iov.as_mut_ptr();
        m.msg_hdr.msg_iovlen = 1;
    }
    let start = Instant::now();
    let mut out = Sent::default();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= spec.duration {
            break;
        }
        let want = match spec.rate {
            None => BATCH as u64,
            Some(rate) => {
                let due = (elapsed.as_secs_f64() * rate) as u64;
                let backlog = due.saturating_sub(out.offered);
                if backlog == 0 {
                    // Next frame due at (offered + 1) / rate.
                    let next = Duration::from_secs_f64((out.offered + 1) as f64 / rate);
                    let gap = next.saturating_sub(elapsed);
                    if gap > SPIN {
                        std::thread::sleep(gap - SPIN / 2);
                    } else {
                        std::hint::spin_loop();
                    }
                    continue;
                }
                backlog.min(BATCH as u64)
            }
        };
        // SAFETY: `msgs` holds `want` ≤ BATCH valid headers pointing at `iov`, which points at `spec.frame`; all
        // outlive the call; `fd` is an open, bound packet socket.
        let n = unsafe { libc::sendmmsg(fd.0, msgs.as_mut_ptr(), want as libc::c_uint, 0) };
        if n >= 0 {
            out.offered += n as u64;
            if (n as u64) < want {
                // The next message failed: refused by the driver (its peer's queue is full). It is lost.
                let e = std::io::Error::last_os_error();
                if n == 0 || matches!(e.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::EAGAIN)) {
                    out.offered += 1;
                    out.refused += 1;
                }
            }
        } else {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => {
                    out.offered += 1;
                    out.refused += 1;
                }
                Some(libc::EINTR) => {}
                _ => anyhow::bail!("sendmmsg on {}: {e}", spec.ifname),
            }
        }
    }
    out.secs = start.elapsed().as_secs_f64();
    Ok(out)
}

/// An AF_PACKET socket bound to one interface, transmit only.
struct Socket(libc::c_int);

impl Socket {
    fn open(ifname: &str) -> anyhow::Result<Socket> {
        let name = std::ffi::CString::new(ifname)?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        anyhow::ensure!(ifindex != 0, "no interface {ifname}: {}", std::io::Error::last_os_error());
        // SAFETY: plain socket(2); protocol 0: the socket receives nothing.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        anyhow::ensure!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        let s = Socket(fd);
        let one: libc::c_int = 1;
        // SAFETY: `one` is a c_int that outlives the call, its size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        anyhow::ensure!(rc == 0, "PACKET_QDISC_BYPASS: {}", std::io::Error::last_os_error());
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed; `fd` is open.
        let rc = unsafe {
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        anyhow::ensure!(rc == 0, "bind to {ifname}: {}", std::io::Error::last_os_error());
        Ok(s)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// UDP datagrams namespace `ns`'s stack has received so far: `InDatagrams + NoPorts + InErrors` of
/// `/proc/net/snmp` (delivered, to no listener, or dropped for a bad checksum or a full buffer).
pub fn udp_received(ns: &str) -> anyhow::Result<u64> {
    let out = exec(ns, "cat", &["/proc/net/snmp"])?;
    parse_udp_received(&String::from_utf8_lossy(&out.stdout))
}

fn parse_udp_received(text: &str) -> anyhow::Result<u64> {
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { anyhow::bail!("no Udp lines") };
    let mut sum = 0;
    for want in ["InDatagrams", "NoPorts", "InErrors"] {
        let v = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == want)
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("no Udp {want}"))?;
        sum += v;
    }
    Ok(sum)
}

/// The MAC address of `ifname` in namespace `ns`.
pub fn link_mac(ns: &str, ifname: &str) -> anyhow::Result<[u8; 6]> {
    let out = exec(ns, "ip", &["-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let text = v[0]["address"].as_str().ok_or_else(|| anyhow::anyhow!("no address for {ifname}"))?;
    parse_mac(text)
}

/// `aa:bb:cc:dd:ee:ff` → bytes.
pub fn parse_mac(text: &str) -> anyhow::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.split(':').collect();
    anyhow::ensure!(parts.len() == 6, "not a MAC address: {text:?}");
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| anyhow::anyhow!("not a MAC address: {text:?}"))?;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_counters_are_summed_from_proc_net_snmp() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdp: 5 100 2 7 2\n\
                    UdpLite: InDatagrams NoPorts InErrors\nUdpLite: 9 9 9\n";
        assert_eq!(parse_udp_received(text).unwrap(), 107);
        assert!(parse_udp_received("Ip: a\nIp: 1\n").is_err());
        assert_eq!(parse_mac("02:00:0a:ff:00:01").unwrap(), [2, 0, 10, 255, 0, 1]);
        assert!(parse_mac("02:00").is_err());
    }
}
