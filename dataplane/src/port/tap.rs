//! [`TapPort`]: a Linux tap interface (`/dev/net/tun`, `IFF_TAP | IFF_NO_PI`) as a [`Port`].
//!
//! # What it owns
//! One file descriptor on `/dev/net/tun` bound to one tap interface (one queue of it when opened with
//! [`TapConfig::multi_queue`]). [`TapPort::open`] makes the tap non-persistent: when the [`TapPort`] is dropped
//! the fd is closed and the kernel deletes the interface (for a multi-queue tap, when its last queue is closed).
//! `vswitchd run` makes its taps persistent ([`TapPort::set_persist`]), marks and re-adopts them: see
//! [`super::tap_persist`]. A failed
//! [`TapPort::open`] closes the fd it had opened, so it leaves no interface behind. The fd is `O_CLOEXEC`, but a
//! thread that forks a subprocess at that moment holds a copy until its exec, so deletion can lag the drop by
//! that long.
//!
//! # Buffer ownership
//! As in [`super`]: `rx_burst` `readv()`s each frame straight into a pool buffer ([`Frame::room_mut`] +
//! [`Frame::set_len`]) and hands it to the caller; `tx_burst` `write()`s each frame (the kernel copies it) and
//! frees the buffer at once. A frame longer than a buffer's room is read (so it leaves the queue), dropped and
//! counted in [`PortStats::rx_dropped`]. A write that would block (`EAGAIN`, the tap's queue is full) or that
//! the kernel refuses for that frame drops it and counts [`PortStats::tx_dropped`]. When the pool is empty,
//! `rx_burst` stops and the frames wait in the tap's queue.
//!
//! # Offloads (the default; [`TapConfig::offload`])
//! The tap is opened as QEMU opens one for a virtio NIC: `IFF_VNET_HDR` (after `TUNGETFEATURES` says the kernel
//! has it), `TUNSETVNETHDRSZ` 10, then `TUNSETOFFLOAD` probed from the most to the least it may hand us —
//! `CSUM|TSO4|TSO6|TSO_ECN|USO4|USO6`, without USO, without ECN, `CSUM` alone, nothing — keeping the first the
//! kernel accepts (an unknown bit is `EINVAL`; [`TapPort::rx_offloads`] says what was granted). The host
//! stack behind the tap then sends TCP (and UDP GSO) as super-frames of up to 64 KiB with partial checksums, as
//! it would to a virtio NIC, and every read starts with a `virtio_net_hdr` that says so:
//! - The frame is read into a small buffer and, past its room, into a large buffer from the pool (one iovec
//!   each; the small part is then copied in front, 1,920 bytes, so the frame is contiguous). Its metadata is
//!   checked against it ([`Offload::from_vnet`], and a super-frame's headers with [`SuperFrame::plan`]; a
//!   segment size under [`MIN_GSO_SIZE`] is refused) and it is handed over whole ([`PortStats::rx_super_frames`]).
//! - With no large buffer free, the frame goes into the port's scratch buffer instead and a super-frame is cut
//!   into small buffers there ([`PortStats::sw_segmented`]; over several bursts if it has more segments than the
//!   batch has room for), so nothing is lost; a long frame that is not a super-frame (jumbo) is dropped and
//!   counted ([`TapStats::no_large_buffer`]).
//! - Writes carry a `virtio_net_hdr` built from the frame's metadata ([`Offload::to_vnet`]): a tap accepts a
//!   super-frame or a partial checksum on write whatever `TUNSETOFFLOAD` said, and the stack behind it takes a
//!   super-frame like a GRO'd packet, so [`Port::caps`] is `csum, tso4, tso6` (and `uso` when the kernel knows
//!   USO). Frames keep a valid IPv4 header checksum (a zero one is dropped on the kernel's GSO path).
//!
//! With `offload = false` the tap is opened without `IFF_VNET_HDR` and no offloads: the kernel completes partial
//! checksums (`validate_xmit_skb` → `skb_checksum_help`) and segments before a frame reaches the tap's queue, so
//! every frame read carries full checksums and is wire-sized; frames with offload metadata from other ports are
//! completed or segmented in software before they are written ([`super::soft_offload`]).
//!
//! # Costs
//! One system call per frame each way: a tap `read()` costs about 0.7 µs (0.64–0.89 µs measured on this
//! machine kind, see `shared/reference/port-io-feasibility.md`), so one queue tops out near 1.1–1.5 Mpps. An
//! empty `rx_burst` costs one `readv()` returning `EAGAIN` (≈1.0 µs measured, debug build); a `write()` of a
//! 60-byte frame the host stack then discards costs ≈1.7 µs (debug build, 2 vCPU; the host stack's receive
//! work runs inside the write). Both measured by `tests/tap_live.rs::measure_write_and_empty_read_cost`. The
//! fd is non-blocking; a worker that wants to sleep waits on [`AsRawFd::as_raw_fd`] (mio) instead. With offloads
//! those costs are per super-frame: one read moves up to 64 KiB.
//!
//! Oversized frames are detected with a one-byte spill iovec after the last buffer: the kernel fills it (or
//! reports the full length) when a frame does not fit, and the frame is counted in `rx_dropped` (verified by
//! the live test with a 3042-byte frame on a 9000-byte MTU without offloads).
//!
//! # Network namespaces
//! [`TapConfig::netns`] moves the interface into an existing named namespace (`/var/run/netns/NAME`) by
//! running `ip link set dev IFNAME netns NAME` and then `ip -n NAME link set dev IFNAME up` (the move takes the
//! link down). The fd keeps working after the move. Requires the `ip` tool (iproute2).
//!
//! Threads: owned by one worker at a time; `Send`, not shared. All `unsafe` is confined to the libc calls below.

use super::gso::{SuperFrame, MAX_HEADERS};
use super::soft_offload::{vnet_of, Emitted, SoftOffload};
use super::{Backend, IfName, OpenError, OpenFailure, Port, PortError, PortStats, RX_SEGMENT_BUDGET};
use crate::batch::Batch;
use crate::buffer::{BufPool, Frame, MAX_FRAME_LEN, MAX_LARGE_FRAME_LEN};
use crate::ids::Nanos;
use crate::offload::{Caps, Offload, MIN_GSO_SIZE, VNET_HDR_LEN};
use crate::wire::MacAddr;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;

/// The `TUNSETOFFLOAD` sets tried in order (QEMU's `tap_fd_set_offload` falls back the same way).
const OFFLOAD_PROBES: [libc::c_uint; 5] = [
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN | libc::TUN_F_USO4 | libc::TUN_F_USO6,
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN,
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
    libc::TUN_F_CSUM,
    0,
];

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
    /// Exchange super-frames and partial checksums with the kernel (`IFF_VNET_HDR` + `TUNSETOFFLOAD`; see the
    /// module documentation). Default true.
    pub offload: bool,
}

impl TapConfig {
    /// A single-queue tap named `ifname` with offloads, default MTU, in the current namespace.
    pub fn new(ifname: IfName) -> Self {
        TapConfig { ifname, multi_queue: false, mtu: None, netns: None, offload: true }
    }
}

/// What creating a tap needs (named in [`OpenFailure::PermissionDenied`]).
const NEEDS: &str = "CAP_NET_ADMIN and /dev/net/tun";

/// What a tap counts beyond [`PortStats`] (each also counted in `rx_dropped`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Frames longer than the largest buffer.
    pub too_long: u64,
    /// Frames whose `virtio_net_hdr` does not match them: checksum offsets outside the frame, a GSO type the
    /// switch does not carry (UFO), super-frame headers that do not parse or disagree with it.
    pub bad_vnet_hdr: u64,
    /// Super-frames whose segment size is under [`MIN_GSO_SIZE`].
    pub gso_too_small: u64,
    /// Frames longer than a small buffer that are not super-frames (jumbo), received while no large buffer was
    /// free.
    pub no_large_buffer: u64,
}

/// A super-frame in the scratch buffer being cut into small buffers (no large buffer was free).
#[derive(Debug, Clone, Copy)]
struct Pending {
    plan: SuperFrame,
    next: usize,
    ts: Nanos,
}

/// A tap interface as a port. See the module documentation.
#[derive(Debug)]
pub struct TapPort {
    name: String,
    ifname: String,
    mac: MacAddr,
    fd: OwnedFd,
    stats: PortStats,
    extra: TapStats,
    /// Frames are preceded by a `virtio_net_hdr` both ways.
    vnet: bool,
    /// Frames may be longer than a small buffer (offloads, or a jumbo MTU): read into a large buffer past it.
    large_rx: bool,
    /// The `TUN_F_*` set `TUNSETOFFLOAD` accepted.
    rx_offloads: libc::c_uint,
    caps: Caps,
    /// Where a long frame is read when no large buffer is free (the first [`MAX_FRAME_LEN`] bytes are copied in
    /// from the small buffer); empty unless `large_rx`.
    scratch: Box<[u8]>,
    pending: Option<Pending>,
    soft: SoftOffload,
}

/// `TUNSETVNETHDRSZ`'s argument: the header the port reads and writes before each frame.
#[allow(clippy::cast_possible_truncation)] // the constant 12
const VNET_HDR_SIZE: libc::c_int = VNET_HDR_LEN as libc::c_int;

/// Interface flags (`IFF_*`, all below bit 15) as `ifreq::ifru_flags` holds them.
#[allow(clippy::cast_possible_truncation)] // IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_VNET_HDR | IFF_UP < 0x8000
fn ifr_flags(flags: libc::c_int) -> libc::c_short {
    debug_assert!((0..=0x7fff).contains(&flags));
    flags as libc::c_short
}

/// The length of an iovec array (at most four) as `readv`/`writev`'s count.
#[inline]
#[allow(clippy::cast_possible_truncation)] // at most four iovecs
fn iov_count(iov: &[libc::iovec]) -> libc::c_int {
    debug_assert!(iov.len() <= 4);
    iov.len() as libc::c_int
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

        let mut vnet = false;
        if cfg.offload {
            let mut features: libc::c_uint = 0;
            // SAFETY: TUNGETFEATURES writes one unsigned int, which `features` is and which outlives the call.
            let rc =
                unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETFEATURES as _, &mut features as *mut libc::c_uint) };
            vnet = rc == 0 && features & libc::IFF_VNET_HDR as libc::c_uint != 0;
        }
        let mut ifr = ifreq_for(ifname);
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if cfg.multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        if vnet {
            flags |= libc::IFF_VNET_HDR;
        }
        ifr.ifr_ifru.ifru_flags = ifr_flags(flags);
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

        let mut rx_offloads = 0;
        let mut caps = Caps::NONE;
        if vnet {
            let size: libc::c_int = VNET_HDR_SIZE;
            // SAFETY: TUNSETVNETHDRSZ reads one int, which `size` is and which outlives the call.
            let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ as _, &size as *const libc::c_int) };
            if rc < 0 {
                return Err(io_err("TUNSETVNETHDRSZ", io::Error::last_os_error()));
            }
            for probe in OFFLOAD_PROBES {
                // SAFETY: TUNSETOFFLOAD takes its flags by value; no memory is passed.
                let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD as _, probe as libc::c_ulong) };
                if rc == 0 {
                    rx_offloads = probe;
                    break;
                }
            }
            // Writes with a virtio_net_hdr may carry super-frames and partial checksums whatever TUNSETOFFLOAD
            // granted; UDP super-frames only where the kernel knows USO.
            caps = Caps { csum: true, tso4: true, tso6: true, uso: rx_offloads & libc::TUN_F_USO4 != 0 };
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
            *dst = src.cast_unsigned();
        }

        let mut ifr = ifreq_for(ifname);
        sioc(libc::SIOCGIFFLAGS, &mut ifr, "SIOCGIFFLAGS")?;
        // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
        let cur = unsafe { ifr.ifr_ifru.ifru_flags };
        ifr.ifr_ifru.ifru_flags = cur | ifr_flags(libc::IFF_UP);
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

        // Small buffers hold the standard-MTU frames (and VLAN tags); longer ones need the large path.
        let large_rx = vnet || cfg.mtu.is_some_and(|m| m as usize + 14 + 8 > MAX_FRAME_LEN);
        Ok(TapPort {
            name: port.to_string(),
            ifname: ifname.to_string(),
            mac: MacAddr(mac),
            fd,
            stats: PortStats::default(),
            extra: TapStats::default(),
            vnet,
            large_rx,
            rx_offloads,
            caps,
            scratch: if large_rx { vec![0u8; MAX_LARGE_FRAME_LEN].into_boxed_slice() } else { Box::default() },
            pending: None,
            soft: SoftOffload::new(),
        })
    }

    /// The `TUN_F_*` offloads the kernel accepted (`TUNSETOFFLOAD`): what the stack behind the tap may send us.
    /// 0 without offloads.
    pub fn rx_offloads(&self) -> libc::c_uint {
        self.rx_offloads
    }

    /// True when frames are exchanged with a `virtio_net_hdr`.
    pub fn vnet(&self) -> bool {
        self.vnet
    }

    /// The port's counters beyond [`PortStats`].
    pub fn counters(&self) -> TapStats {
        self.extra
    }

    /// Makes the tap persistent (`TUNSETPERSIST 1`: it outlives this fd and the process) or not (`0`: it is
    /// deleted when its last fd closes). See [`super::tap_persist`] for who calls it when.
    pub fn set_persist(&self, persist: bool) -> io::Result<()> {
        // SAFETY: TUNSETPERSIST takes an integer argument (no memory is passed); `self.fd` is an open tap fd.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETPERSIST as _, libc::c_ulong::from(persist)) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
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

impl TapPort {
    /// `rx_burst` for frames that always fit a small buffer (no offloads, standard MTU): one `readv` per frame
    /// into the buffer, plus a one-byte spill that catches longer frames.
    fn rx_small(&mut self, now: Nanos, pool: &mut BufPool, batch: &mut Batch) -> Result<usize, PortError> {
        let mut n = 0;
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
            let r = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), iov_count(&iov)) };
            let Ok(len) = usize::try_from(r) else {
                pool.free(frame);
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(PortError::Io { port: self.name.clone(), op: "read from tap", source: e }),
                }
            };
            if len > room_len || frame.set_len(len).is_err() {
                self.stats.rx_dropped += 1;
                self.extra.too_long += 1;
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

    /// `rx_burst` when frames may be longer than a small buffer (offloads or a jumbo MTU): see the module
    /// documentation. One large buffer is taken from the pool per burst while there is one, and given back if no
    /// frame needed it.
    fn rx_large(&mut self, now: Nanos, pool: &mut BufPool, batch: &mut Batch) -> Result<usize, PortError> {
        let mut n = 0;
        let mut wire = 0;
        let mut spare: Option<Frame> = None;
        let hdr = if self.vnet { VNET_HDR_LEN } else { 0 };
        let result = loop {
            if batch.room() == 0 || wire >= RX_SEGMENT_BUDGET as u64 {
                break Ok(());
            }
            if self.pending.is_some() {
                if !self.cut_pending(pool, batch, &mut n) {
                    break Ok(());
                }
                continue;
            }
            let Some(mut frame) = pool.alloc() else { break Ok(()) };
            if spare.is_none() {
                spare = pool.alloc_large();
            }
            let mut vh = [0u8; VNET_HDR_LEN];
            let mut spill = [0u8; 1];
            let room = frame.room_mut();
            let small = room.len();
            let rest: &mut [u8] = match &mut spare {
                Some(big) => &mut big.room_mut()[small..],
                None => &mut self.scratch[small..],
            };
            let iov = [
                libc::iovec { iov_base: vh.as_mut_ptr().cast(), iov_len: vh.len() },
                libc::iovec { iov_base: room.as_mut_ptr().cast(), iov_len: small },
                libc::iovec { iov_base: rest.as_mut_ptr().cast(), iov_len: rest.len() },
                libc::iovec { iov_base: spill.as_mut_ptr().cast(), iov_len: spill.len() },
            ];
            let iov = &iov[if self.vnet { 0 } else { 1 }..];
            // SAFETY: every iovec points to writable memory of the stated length (the header array, the small
            // buffer's room, the large buffer's or the scratch's room past it, the spill byte) that lives and does
            // not move across the call; `self.fd` is an open fd.
            let r = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), iov_count(iov)) };
            let Ok(r) = usize::try_from(r) else {
                pool.free(frame);
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => break Err(PortError::Io { port: self.name.clone(), op: "read from tap", source: e }),
                }
            };
            if r < hdr || r - hdr > MAX_LARGE_FRAME_LEN {
                self.stats.rx_dropped += 1;
                self.extra.too_long += 1;
                pool.free(frame);
                continue;
            }
            let len = r - hdr;
            let mut frame = if len <= small {
                frame
            } else if let Some(mut big) = spare.take() {
                big.room_mut()[..small].copy_from_slice(&frame.room_mut()[..small]);
                pool.free(frame);
                big
            } else {
                // No large buffer: the frame is in the scratch buffer (its head still in the small buffer).
                self.scratch[..small].copy_from_slice(&frame.room_mut()[..small]);
                pool.free(frame);
                self.rx_into_scratch(&vh, len, now);
                continue;
            };
            // Cannot fail: len fits the buffer it was read into (checked against the spill above).
            let _ = frame.set_len(len);
            let offload = if self.vnet { self.check_vnet(&vh, frame.data()) } else { Some(Offload::NONE) };
            let Some(offload) = offload else {
                self.stats.rx_dropped += 1;
                pool.free(frame);
                continue;
            };
            frame.offload = offload;
            frame.ts = now;
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += len as u64;
            if offload.is_gso() {
                self.stats.rx_super_frames += 1;
            }
            wire += offload.segments(frame.data());
            // Cannot fail: the loop runs only while the batch has room.
            let _ = batch.push(frame);
            n += 1;
        };
        if let Some(big) = spare {
            pool.free(big);
        }
        result.map(|()| n)
    }

    /// Checks a frame's `virtio_net_hdr` against it; `None` (counted) when they disagree or the segment size is
    /// too small.
    fn check_vnet(&mut self, vh: &[u8; VNET_HDR_LEN], data: &[u8]) -> Option<Offload> {
        let Some(o) = Offload::from_vnet(vh, data.len()) else {
            self.extra.bad_vnet_hdr += 1;
            return None;
        };
        if o.is_gso() {
            if o.gso_size() < MIN_GSO_SIZE {
                self.extra.gso_too_small += 1;
                return None;
            }
            if SuperFrame::plan(&data[..data.len().min(MAX_HEADERS)], data.len(), &vnet_of(&o), MAX_LARGE_FRAME_LEN)
                .is_err()
            {
                self.extra.bad_vnet_hdr += 1;
                return None;
            }
        }
        Some(o)
    }

    /// A frame longer than a small buffer arrived while no large buffer was free and sits in the scratch buffer:
    /// a super-frame becomes [`Pending`] (cut into small buffers by [`TapPort::cut_pending`]); anything else is
    /// dropped and counted.
    fn rx_into_scratch(&mut self, vh: &[u8; VNET_HDR_LEN], len: usize, now: Nanos) {
        self.stats.rx_dropped += 1;
        let offload = if self.vnet { Offload::from_vnet(vh, len) } else { Some(Offload::NONE) };
        let Some(o) = offload else {
            self.extra.bad_vnet_hdr += 1;
            return;
        };
        if !o.is_gso() {
            self.extra.no_large_buffer += 1;
            return;
        }
        if o.gso_size() < MIN_GSO_SIZE {
            self.extra.gso_too_small += 1;
            return;
        }
        let data = &self.scratch[..len];
        match SuperFrame::plan(&data[..len.min(MAX_HEADERS)], len, &vnet_of(&o), MAX_FRAME_LEN) {
            Ok(plan) => {
                self.stats.rx_dropped -= 1;
                self.pending = Some(Pending { plan, next: 0, ts: now });
            }
            Err(super::gso::GsoError::MssTooBig(_)) => self.extra.no_large_buffer += 1,
            Err(_) => self.extra.bad_vnet_hdr += 1,
        }
    }

    /// Cuts the pending super-frame into small buffers pushed to `batch`; true when it is finished, false when the
    /// batch or the pool ran out first (the next burst goes on from there).
    fn cut_pending(&mut self, pool: &mut BufPool, batch: &mut Batch, n: &mut usize) -> bool {
        let Some(p) = &mut self.pending else { return true };
        let total = p.plan.hdr_len + p.plan.payload_len;
        let data = &self.scratch[..total];
        let head = &data[..total.min(MAX_HEADERS)];
        while p.next < p.plan.segments() {
            if batch.room() == 0 {
                return false;
            }
            let Some(mut f) = pool.alloc() else { return false };
            let (from, to) = p.plan.segment_range(p.next);
            let len =
                p.plan.write_segment(head, p.next, &data[p.plan.hdr_len + from..p.plan.hdr_len + to], f.room_mut());
            // Cannot fail: the plan was made for MAX_FRAME_LEN.
            let _ = f.set_len(len);
            f.ts = p.ts;
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += len as u64;
            // Cannot fail: checked room above.
            let _ = batch.push(f);
            *n += 1;
            p.next += 1;
        }
        self.pending = None;
        self.stats.sw_segmented += 1;
        true
    }
}

impl Port for TapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, now: Nanos, pool: &mut BufPool, batch: &mut Batch) -> Result<usize, PortError> {
        if self.large_rx {
            self.rx_large(now, pool, batch)
        } else {
            self.rx_small(now, pool, batch)
        }
    }

    fn tx_burst(&mut self, pool: &mut BufPool, frames: &mut Vec<Frame>) -> Result<(), PortError> {
        let mut first_err = None;
        let (fd, vnet, caps) = (self.fd.as_raw_fd(), self.vnet, self.caps);
        let stats = &mut self.stats;
        for mut frame in frames.drain(..) {
            let emitted = self.soft.emit(&mut frame, caps, |data, o| {
                let vh = o.to_vnet(data);
                let iov = [
                    libc::iovec { iov_base: vh.as_ptr() as *mut libc::c_void, iov_len: vh.len() },
                    libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() },
                ];
                let iov = &iov[if vnet { 0 } else { 1 }..];
                let r = loop {
                    // SAFETY: the iovecs point to readable memory of the stated lengths (the header on the stack,
                    // the frame's bytes) that lives across the call; the kernel only reads it; `fd` is open.
                    let r = unsafe { libc::writev(fd, iov.as_ptr(), iov_count(iov)) };
                    if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    break r;
                };
                if r >= 0 {
                    stats.tx_packets += 1;
                    stats.tx_bytes += data.len() as u64;
                    if o.is_gso() {
                        stats.tx_super_frames += 1;
                    }
                    return true;
                }
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
                false
            });
            match emitted {
                Emitted::All(_) => {}
                Emitted::Stopped { left, .. } => stats.tx_dropped += left as u64,
                Emitted::Malformed(_) => stats.tx_dropped += 1,
            }
            pool.free(frame);
        }
        match first_err {
            None => Ok(()),
            Some(source) => Err(PortError::Io { port: self.name.clone(), op: "write to tap", source }),
        }
    }

    fn stats(&self) -> PortStats {
        let soft = self.soft.stats();
        PortStats {
            sw_segmented: self.stats.sw_segmented + soft.gso_segmented,
            sw_csum: soft.csum_completed,
            ..self.stats
        }
    }

    fn caps(&self) -> Caps {
        self.caps
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}
