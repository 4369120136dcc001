//! [`TapPort`]: a Linux tap interface (`/dev/net/tun`, `IFF_TAP | IFF_NO_PI`) as a [`Port`].
//!
//! # What it owns
//! One file descriptor on `/dev/net/tun` bound to one tap interface (one queue of it when opened with
//! [`TapConfig::multi_queue`]). The tap is not persistent: when the [`TapPort`] is dropped the fd is closed and
//! the kernel deletes the interface (for a multi-queue tap, when its last queue is closed). A failed
//! [`TapPort::open`] closes the fd it had opened, so it leaves no interface behind. The fd is `O_CLOEXEC`, but a
//! thread that forks a subprocess at that moment holds a copy until its exec, so deletion can lag the drop by
//! that long.
//!
//! # Buffer ownership
//! As in [`super`]: `rx_burst` `read()`s each frame straight into a pool buffer ([`Frame::room_mut`] +
//! [`Frame::set_len`]) and hands it to the caller; `tx_burst` `write()`s each frame (the kernel copies it) and
//! frees the buffer at once. A frame longer than a buffer's room is read (so it leaves the queue), dropped and
//! counted in [`PortStats::rx_dropped`]. A write that would block (`EAGAIN`, the tap's queue is full) or that
//! the kernel refuses for that frame drops it and counts [`PortStats::tx_dropped`]. When the pool is empty,
//! `rx_burst` stops and the frames wait in the tap's queue.
//!
//! # Costs
//! One system call per frame each way: a tap `read()` costs about 0.7 µs (0.64–0.89 µs measured on this
//! machine kind, see `shared/reference/port-io-feasibility.md`), so one queue tops out near 1.1–1.5 Mpps. An
//! empty `rx_burst` costs one `readv()` returning `EAGAIN` (≈1.0 µs measured, debug build); a `write()` of a
//! 60-byte frame the host stack then discards costs ≈1.7 µs (debug build, 2 vCPU; the host stack's receive
//! work runs inside the write). Both measured by `tests/tap_live.rs::measure_write_and_empty_read_cost`. The
//! fd is non-blocking; a worker that wants to sleep waits on [`AsRawFd::as_raw_fd`] (mio) instead.
//!
//! Oversized frames are detected with a one-byte spill iovec after the buffer's room: the kernel fills it (or
//! reports the full length) when a frame does not fit, and the frame is counted in `rx_dropped` (verified by
//! the live test with a 3042-byte frame on a 9000-byte MTU).
//!
//! # Checksums
//! The tap is opened without `IFF_VNET_HDR` and no offloads are enabled (`TUNSETOFFLOAD` is never called), so
//! the device advertises no checksum offload and the kernel completes `CHECKSUM_PARTIAL` checksums
//! (`validate_xmit_skb` → `skb_checksum_help`) before a frame reaches the tap's queue: every frame read here
//! carries full, valid checksums. This is the kernel's behaviour for a tap without offloads, and the live test
//! checks it for a UDP datagram sent by the host stack (its checksum is present and verifies). Frames written
//! to the tap must likewise carry complete checksums.
//!
//! # Network namespaces
//! [`TapConfig::netns`] moves the interface into an existing named namespace (`/var/run/netns/NAME`) by
//! running `ip link set dev IFNAME netns NAME` and then `ip -n NAME link set dev IFNAME up` (the move takes the
//! link down). The fd keeps working after the move. Requires the `ip` tool (iproute2).
//!
//! Threads: owned by one worker at a time; `Send`, not shared. All `unsafe` is confined to the libc calls below.

use super::{Backend, IfName, OpenError, OpenFailure, Port, PortError, PortStats};
use crate::batch::Batch;
use crate::buffer::{BufPool, Frame};
use crate::ids::Nanos;
use crate::wire::MacAddr;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;

/// How to open a tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// The interface name.
    pub ifname: IfName,
    /// Open with `IFF_MULTI_QUEUE` (each [`TapPort`] opened on the same name is then one more queue).
    pub multi_queue: bool,
    /// Set this MTU on the interface.
    pub mtu: Option<u32>,
    /// Move the interface into this existing named network namespace (see the module documentation).
    pub netns: Option<String>,
}

impl TapConfig {
    /// A single-queue tap named `ifname`, default MTU, in the current namespace.
    pub fn new(ifname: IfName) -> Self {
        TapConfig { ifname, multi_queue: false, mtu: None, netns: None }
    }
}

/// What creating a tap needs (named in [`OpenFailure::PermissionDenied`]).
const NEEDS: &str = "CAP_NET_ADMIN and /dev/net/tun";

/// A tap interface as a port. See the module documentation.
#[derive(Debug)]
pub struct TapPort {
    name: String,
    ifname: String,
    mac: MacAddr,
    fd: OwnedFd,
    stats: PortStats,
}

/// `struct ifreq` with the interface name filled in.
fn ifreq_for(ifname: &str) -> libc::ifreq {
    // SAFETY: ifreq is a plain C struct (a name array and a union of integers/sockaddrs); all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr
}

/// Runs `ip ARGS`, mapping failure to its stderr.
fn run_ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl TapPort {
    /// Creates (or attaches to) the tap `cfg.ifname`, sets it non-blocking, applies the MTU, brings it up and
    /// optionally moves it into `cfg.netns`. `port` is the port's name in the switch, used in errors.
    pub fn open(port: &str, cfg: &TapConfig) -> Result<TapPort, OpenError> {
        let ifname = cfg.ifname.as_str();
        let fail = |failure: OpenFailure| OpenError::new(port, Backend::Tap, &cfg.ifname, failure);
        let io_err = |op: &'static str, source: io::Error| fail(OpenFailure::Io { op: op.to_string(), source });
        let denied = |source: io::Error| fail(OpenFailure::PermissionDenied { needs: NEEDS, source });

        let path: &CStr = c"/dev/net/tun";
        // SAFETY: `path` is a valid NUL-terminated string; open has no other memory effects.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => denied(e),
                _ => io_err("open /dev/net/tun", e),
            });
        }
        // SAFETY: `raw` is a fresh fd we own; from here on dropping `fd` closes it (and deletes the tap).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let mut ifr = ifreq_for(ifname);
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if cfg.multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is and which outlives the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut ifr as *mut libc::ifreq) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) | Some(libc::EINVAL) => fail(OpenFailure::Busy),
                Some(libc::EPERM) | Some(libc::EACCES) => denied(e),
                _ => io_err("TUNSETIFF", e),
            });
        }

        // Interface configuration goes through an AF_INET datagram socket in the current namespace.
        // SAFETY: socket takes only integer arguments.
        let sraw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if sraw < 0 {
            return Err(io_err("socket for interface ioctls", io::Error::last_os_error()));
        }
        // SAFETY: `sraw` is a fresh fd we own.
        let sock = unsafe { OwnedFd::from_raw_fd(sraw) };
        let sioc = |req: libc::c_ulong, ifr: &mut libc::ifreq, op: &'static str| -> Result<(), OpenError> {
            // SAFETY: the SIOC{G,S}IF* requests used here read/write one `struct ifreq`, which `ifr` points to.
            let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req as _, ifr as *mut libc::ifreq) };
            if rc < 0 {
                Err(io_err(op, io::Error::last_os_error()))
            } else {
                Ok(())
            }
        };

        if let Some(mtu) = cfg.mtu {
            let mut ifr = ifreq_for(ifname);
            ifr.ifr_ifru.ifru_mtu = mtu as libc::c_int;
            sioc(libc::SIOCSIFMTU, &mut ifr, "SIOCSIFMTU")?;
        }

        let mut ifr = ifreq_for(ifname);
        sioc(libc::SIOCGIFHWADDR, &mut ifr, "SIOCGIFHWADDR")?;
        // SAFETY: SIOCGIFHWADDR filled the `ifru_hwaddr` member of the union.
        let hw = unsafe { ifr.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (dst, src) in mac.iter_mut().zip(hw.sa_data.iter()) {
            *dst = *src as u8;
        }

        let mut ifr = ifreq_for(ifname);
        sioc(libc::SIOCGIFFLAGS, &mut ifr, "SIOCGIFFLAGS")?;
        // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
        let cur = unsafe { ifr.ifr_ifru.ifru_flags };
        ifr.ifr_ifru.ifru_flags = cur | libc::IFF_UP as libc::c_short;
        sioc(libc::SIOCSIFFLAGS, &mut ifr, "SIOCSIFFLAGS (up)")?;
        drop(sock);

        if let Some(ns) = &cfg.netns {
            let netns_err = |message: String| fail(OpenFailure::Netns { netns: ns.clone(), message });
            if ns.is_empty() || ns.contains('/') || ns.starts_with('.') {
                return Err(netns_err("invalid namespace name".to_string()));
            }
            run_ip(&["link", "set", "dev", ifname, "netns", ns]).map_err(netns_err)?;
            run_ip(&["-n", ns, "link", "set", "dev", ifname, "up"]).map_err(netns_err)?;
        }

        Ok(TapPort {
            name: port.to_string(),
            ifname: ifname.to_string(),
            mac: MacAddr(mac),
            fd,
            stats: PortStats::default(),
        })
    }

    /// The interface's name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface's MAC address as the kernel assigned it at open (the address the host stack uses as the
    /// source of frames it sends out of the tap, i.e. frames this port receives).
    pub fn mac(&self) -> MacAddr {
        self.mac
    }
}

impl AsRawFd for TapPort {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Port for TapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, now: Nanos, pool: &mut BufPool, batch: &mut Batch) -> Result<usize, PortError> {
        let mut n = 0;
        // One spare byte after the buffer's room: a read that reaches it was a frame too long for a buffer.
        let mut spill = [0u8; 1];
        while batch.room() > 0 {
            let Some(mut frame) = pool.alloc() else { break };
            let room = frame.room_mut();
            let room_len = room.len();
            let iov = [
                libc::iovec { iov_base: room.as_mut_ptr().cast(), iov_len: room_len },
                libc::iovec { iov_base: spill.as_mut_ptr().cast(), iov_len: spill.len() },
            ];
            // SAFETY: both iovecs point to writable memory of the stated lengths that lives across the call;
            // `self.fd` is an open fd.
            let r = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
            if r < 0 {
                pool.free(frame);
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(PortError::Io { port: self.name.clone(), op: "read from tap", source: e }),
                }
            }
            let len = r as usize;
            if len > room_len || frame.set_len(len).is_err() {
                self.stats.rx_dropped += 1;
                pool.free(frame);
                continue;
            }
            frame.ts = now;
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += len as u64;
            // Cannot fail: the loop runs only while the batch has room.
            let _ = batch.push(frame);
            n += 1;
        }
        Ok(n)
    }

    fn tx_burst(&mut self, pool: &mut BufPool, frames: &mut Vec<Frame>) -> Result<(), PortError> {
        let mut first_err = None;
        for frame in frames.drain(..) {
            let data = frame.data();
            let r = loop {
                // SAFETY: `data` is a readable slice that lives across the call; `self.fd` is an open fd.
                let r = unsafe { libc::write(self.fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break r;
            };
            if r >= 0 {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += data.len() as u64;
            } else {
                self.stats.tx_dropped += 1;
                let e = io::Error::last_os_error();
                // Per-frame refusals (queue full, link down, malformed frame) only drop the frame; anything
                // else (a broken fd) is reported once the vector is empty.
                let per_frame = matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN)
                        | Some(libc::EIO)
                        | Some(libc::EINVAL)
                        | Some(libc::ENOBUFS)
                        | Some(libc::ENOMEM)
                );
                if !per_frame && first_err.is_none() {
                    first_err = Some(e);
                }
            }
            pool.free(frame);
        }
        match first_err {
            None => Ok(()),
            Some(source) => Err(PortError::Io { port: self.name.clone(), op: "write to tap", source }),
        }
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}
