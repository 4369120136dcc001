//! [`AfXdpPort`]: one queue of a Linux interface as a [`Port`] through an AF_XDP socket (cargo feature `afxdp`).
//!
//! # What it owns
//! One UMEM (a shared memory area of [`AfXdpConfig::frames`] chunks registered with the kernel), one AF_XDP
//! socket bound to (`ifname`, `queue_id`) with its four rings (rx, tx, fill, completion), and, through libxdp,
//! the XDP program that redirects the queue's frames to the socket. Dropping the port deletes the socket and
//! detaches the program (libxdp keeps a reference count in a BPF map and detaches when the last socket on the
//! interface goes). A failed [`AfXdpPort::open`] leaves nothing behind either: libxdp detaches a program it
//! attached before failing, and the UMEM is unregistered when its handle drops. Each attach attempt gets a
//! fresh UMEM: when libxdp fails after the bind (at the attach), the UMEM's own socket stays bound to the queue
//! until the UMEM is dropped. The kernel frees a closed socket's queue from a work queue, so `open` retries a
//! busy queue (`EBUSY`) for up to half a second before reporting [`OpenFailure::QueueBusy`]. `tests/afxdp_live.rs`
//! checks with `ip link show` that no XDP program remains after a drop and after a failed open.
//!
//! # Crate
//! Built on `xsk-rs` 0.11 (libxdp 1.6 + libbpf 1.5 built from source by `libxdp-sys`, so it needs clang, llvm,
//! m4, libelf, zlib and libpcap headers). It was tried on this machine kind against the `afxdp` 0.4 crate and
//! chosen because it lets the caller choose the attach mode (`XdpFlags`) and bind flags (`BindFlags`), detaches
//! its program on drop, exposes the socket statistics, and is maintained; `afxdp` 0.4 is unmaintained since
//! 2022, hard-codes its attach flags, never detaches its program (the next open in another mode fails with
//! `EEXIST`) and reports negative errnos as "Unknown error -17". `libxdp-sys` (the same build xsk-rs links) is
//! used directly only for `bpf_xdp_query_id`, to read back the mode the program was really attached in.
//! libxdp prints "No bpffs found at /sys/fs/bpf" to stderr when bpffs is not mounted; that is harmless (it
//! falls back to attaching its program without the multi-program dispatcher).
//!
//! # Modes
//! [`XdpMode::Native`] attaches in driver mode (`XDP_FLAGS_DRV_MODE`), [`XdpMode::Generic`] in SKB mode
//! (`XDP_FLAGS_SKB_MODE`, works on every interface, frames have already been made into skbs). [`XdpMode::Auto`]
//! tries native first and falls back to generic; because a silent fallback costs performance without anyone
//! noticing, the fallback is logged with `tracing::warn!` and [`AfXdpPort::mode`] always reports the mode the
//! program is actually attached in, read back from the kernel (`bpf_xdp_query_id`) after the open: libxdp
//! reuses an AF_XDP program already attached to the interface by another socket whatever mode it is in, so a
//! second queue opened in another mode gets the first queue's mode. An explicit mode that the interface ends up
//! not having is an error ([`OpenFailure::ModeMismatch`]); `Auto` accepts and reports it. On veth both native and
//! generic mode work (kernel 6.18) and `Auto` gets native; on a bridge (no driver XDP) `Auto` falls back to
//! generic and an explicit `Native` fails with [`OpenFailure::NativeUnsupported`] (both live-tested).
//!
//! The socket is bound in copy mode (`XDP_COPY`) unless [`AfXdpConfig::zero_copy`] asks for zero-copy, which
//! needs driver support (veth has none: the bind fails with `EOPNOTSUPP`, reported as
//! [`OpenFailure::ZeroCopyUnsupported`]). `XDP_USE_NEED_WAKEUP` is always requested. [`AfXdpPort::zero_copy`]
//! reports what the kernel granted (`XDP_OPTIONS`).
//!
//! # Buffer ownership and copies
//! The pipeline's buffers are [`BufPool`] boxes, not UMEM chunks, so this first version copies each frame once
//! on receive (UMEM chunk → pool buffer) and once on transmit (pool buffer → UMEM chunk). Zero-copy between
//! AF_XDP ports that share one UMEM is a later optimisation. The UMEM is split in two fixed halves:
//! - receive half: every chunk is either in the fill ring or in the rx ring (owned by the kernel) or, for the
//!   length of one `rx_burst`, being copied out. `rx_burst` takes at most as many descriptors as the batch and
//!   the pool have room for, copies them out and puts every chunk straight back into the fill ring, so the fill
//!   ring is always full (an empty fill ring is where frames were lost in the trials; the kernel counts it in
//!   `fill_ring_empty_descs`). The fill ring is as large as the receive half, so the refill never fails.
//! - transmit half: chunks are free (in the port's free list) or in the tx/completion rings. `tx_burst` first
//!   reclaims completed chunks, then copies each frame into a free chunk and submits it; when no chunk is free,
//!   the tx ring is full or the frame is longer than a chunk, the frame is dropped and counted in
//!   [`PortStats::tx_dropped`]. It never blocks. Pool buffers go back to the pool at once.
//!
//! When the pool or the batch has no room, frames wait in the rx ring; once it is full the kernel drops and
//! counts them (`rx_ring_full`).
//!
//! A received frame longer than [`MAX_FRAME_LEN`] (possible with 4096-byte chunks) is dropped and counted in
//! [`PortStats::rx_dropped`]. Frames the kernel could not deliver (longer than a chunk, rx ring full, fill
//! ring empty) are counted by the kernel ([`AfXdpPort::xdp_stats`]) and added to `rx_dropped` by
//! [`Port::stats`]. Frames the interface dropped before its XDP program ran (a veth's queue towards XDP
//! overflowing) are the interface's own drops, visible in `ip -s link`, not the socket's.
//!
//! # Transmit kicks
//! In copy mode the kernel sends only from within a `sendto()` on the socket, at most 32 frames per call
//! (it returns `EAGAIN` while more wait). `tx_burst` therefore calls `sendto(MSG_DONTWAIT)` until the ring is
//! drained or the kernel says `EBUSY`/`ENOBUFS`/`ENETDOWN`, with a bound of `tx_ring_size / 32 + 2` calls. Frames
//! left in the tx ring are sent by the next kick, which the next `rx_burst` or `tx_burst` performs.
//! [`PortStats::tx_packets`] counts frames handed to the kernel's tx ring.
//!
//! # Costs
//! Measured by `tests/afxdp_live.rs::measure_costs` (`cargo test -p dataplane --release --features afxdp --test
//! afxdp_live measure -- --nocapture`; 2 vCPU VM, kernel 6.18, veth, 60-byte frames, release build). The test
//! times this thread's CPU time (the machine was shared with other builds, load average near 3): 200 rounds of
//! 64 frames each way (per-round average per frame, min / median; ranges over three runs), and 500 bursts of 32
//! transmitted back to back ("sustained", which includes building the frames):
//!
//! | mode    | `rx_burst` ns/frame | `tx_burst` ns/frame     | sustained tx ns/frame |
//! |---------|---------------------|-------------------------|-----------------------|
//! | generic | 126–134 / 182–222   | 1098–1252 / 1127–1606   | 1457–1586             |
//! | native  | 101–119 / 163–191   | 908–1168 / 1100–1279    | 1143–1357             |
//!
//! Receive is the port's own work: descriptor read, one copy into a pool buffer, fill-ring write (≈100–200 ns;
//! the trials measured 102–115 ns for bare xsk-rs). Transmit is almost all kernel time: in copy mode the
//! `sendto()` kick builds an skb per frame, copies the frame again and transmits it through `veth_xmit`, and the
//! peer's receive softirq then runs on the same core inside the same call; a profile of the test shows
//! `__xsk_generic_xmit` and the softirq under `__sys_sendto`, and the port's own `tx_burst` (copy + descriptor
//! writes) at a few percent of that. So one queue's transmit tops out near 0.7–0.9 Mpps per core in copy mode
//! on veth. An empty `rx_burst` makes no system call (a ring peek).
//!
//! # Checksums
//! AF_XDP carries no metadata: a frame from a veth whose peer sends with the default offloads may carry a
//! *partial* checksum (`CHECKSUM_PARTIAL`: only the pseudo-header sum is in the field) and nothing tells the
//! port so. This port passes frames through unchanged, so users must turn transmit checksum offload off on the
//! container side of each veth (`ethtool -K <container-veth> tx off`), as OVS with AF_XDP requires too. The live
//! test `partial_checksums_arrive_unless_tx_offload_is_off` shows both cases for a UDP datagram from the host
//! stack. (GSO super-frames never arrive: attaching XDP to a veth turns GSO off on its peer.)
//!
//! Transmit has no offloads either ([`Port::caps`] is none): a frame from another port with a partial checksum
//! or a super-frame is completed or cut in software ([`super::soft_offload`]) and each wire frame copied into
//! its own UMEM chunk (checksum offload through AF_XDP tx metadata is not used).
//!
//! # Memory and privileges
//! The UMEM is `frames * frame_size` bytes (8 MiB by default), pinned: without `CAP_IPC_LOCK` it counts against
//! `RLIMIT_MEMLOCK` (8 MiB by default on Debian), and registration fails with `ENOBUFS`
//! ([`OpenFailure::Memlock`]). Creating the socket needs `CAP_NET_RAW`, attaching XDP `CAP_NET_ADMIN` and
//! `CAP_BPF`/`CAP_SYS_ADMIN`; root has them all.
//!
//! # Network namespaces and threads
//! The interface is looked up and the program attached by interface index, in the network namespace of the
//! thread that calls [`AfXdpPort::open`]; the sockets stay in that namespace wherever the port is used. libxdp
//! also detaches by interface index, so the port records its namespace at open and, if it is dropped on a thread
//! in another namespace, enters its own for the deletion and comes back (`setns`, needs CAP_SYS_ADMIN; if that
//! fails it logs an error, and libxdp, which detaches only a program whose id it attached, leaves other
//! interfaces alone). The live tests open ports on a thread inside a namespace and drop some of them from the
//! root namespace.
//!
//! The port starts no threads. It is `Send` (every `xsk-rs` handle is; checked at compile time) and not `Sync`:
//! one worker owns it; the rings are only touched through `&mut self`. All `unsafe` here is ring/UMEM access or a libc call, each with its reason.

use super::soft_offload::{Emitted, SoftOffload};
use super::{Backend, IfName, OpenError, OpenFailure, Port, PortError, PortStats};
use crate::batch::{Batch, BATCH_SIZE};
use crate::buffer::{BufPool, Frame, MAX_FRAME_LEN};
use crate::config::XdpMode;
use crate::ids::Nanos;
use crate::offload::Caps;
use std::ffi::CString;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};
use xsk_rs::config::{BindFlags, FrameSize, QueueSize, SocketConfig, UmemConfig, XdpFlags};
use xsk_rs::socket::{RxQueue, Socket, TxQueue};
use xsk_rs::umem::frame::FrameDesc;
use xsk_rs::umem::{CompQueue, FillQueue, Umem};

/// Frames the kernel sends per `sendto()` in copy mode (`TX_BATCH_SIZE` in net/xdp/xsk.c).
const KERNEL_TX_BATCH: u32 = 32;

/// How long `open` retries a queue that is busy (see [`OpenFailure::QueueBusy`]).
const QUEUE_BUSY_RETRY: Duration = Duration::from_millis(500);

/// How to open an AF_XDP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfXdpConfig {
    /// The interface (in the calling thread's network namespace).
    pub ifname: IfName,
    /// The interface's receive queue to bind to.
    pub queue_id: u32,
    /// How to attach the XDP program.
    pub mode: XdpMode,
    /// Ask for zero-copy (driver support needed; veth has none).
    pub zero_copy: bool,
    /// UMEM chunks, a power of two >= 64: half receive, half transmit.
    pub frames: u32,
    /// Bytes per UMEM chunk: 2048 or 4096 (256 of them are XDP headroom).
    pub frame_size: u32,
    /// Receive ring descriptors (power of two).
    pub rx_ring_size: u32,
    /// Transmit ring descriptors (power of two).
    pub tx_ring_size: u32,
}

impl AfXdpConfig {
    /// Queue 0 of `ifname`, auto mode, copy mode, 4096 chunks of 2048 bytes, 2048-entry rings.
    pub fn new(ifname: IfName) -> Self {
        AfXdpConfig {
            ifname,
            queue_id: 0,
            mode: XdpMode::Auto,
            zero_copy: false,
            frames: 4096,
            frame_size: 2048,
            rx_ring_size: 2048,
            tx_ring_size: 2048,
        }
    }
}

/// What an AF_XDP socket needs (named in [`OpenFailure::PermissionDenied`]).
const NEEDS: &str = "CAP_NET_RAW, CAP_NET_ADMIN, CAP_BPF";

/// The kernel's counters for the socket (`XDP_STATISTICS`), read on demand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpSocketStats {
    /// Frames dropped on receive for other reasons (e.g. longer than a UMEM chunk).
    pub rx_dropped: u64,
    /// Frames dropped because the rx ring was full (the port did not keep up).
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty (frames lost for want of a free chunk).
    pub fill_ring_empty_descs: u64,
    /// Receive descriptors the kernel found invalid.
    pub rx_invalid_descs: u64,
    /// Transmit descriptors the kernel found invalid.
    pub tx_invalid_descs: u64,
    /// Times the kernel found the tx ring empty when woken.
    pub tx_ring_empty_descs: u64,
}

/// The xsk-rs handles: socket rings and UMEM. Dropping them deletes the socket and detaches the XDP program by
/// interface index, in the calling thread's network namespace.
#[derive(Debug)]
struct Xsk {
    rx_q: RxQueue,
    tx_q: TxQueue,
    fill_q: FillQueue,
    comp_q: CompQueue,
    umem: Umem,
}

/// One queue of an interface as a port, through AF_XDP. See the module documentation.
pub struct AfXdpPort {
    name: String,
    ifname: String,
    queue_id: u32,
    mode: XdpMode,
    zero_copy: bool,
    /// Dropped explicitly, inside `netns` (see [`Drop`]).
    xsk: ManuallyDrop<Xsk>,
    /// The network namespace the port was opened in (`/proc/thread-self/ns/net`).
    netns: Option<OwnedFd>,
    /// Transmit-half chunks not in the kernel's hands.
    tx_free: Vec<FrameDesc>,
    /// Scratch: descriptors taken off the rx ring in one burst (and handed back to the fill ring).
    rx_descs: Vec<FrameDesc>,
    /// Scratch: descriptors filled in one transmit chunk.
    tx_descs: Vec<FrameDesc>,
    /// Scratch: completed descriptors.
    comp_descs: Vec<FrameDesc>,
    /// Chunks taken from the rx ring that the fill ring did not take back yet (normally empty).
    fill_pending: Vec<FrameDesc>,
    /// Frames may wait in the tx ring for a kick.
    tx_pending: bool,
    max_kicks: u32,
    chunk_data_len: usize,
    stats: PortStats,
    /// Taken out for the duration of a `tx_burst` (its closure needs the rest of `self`); always `Some` between
    /// calls.
    soft: Option<Box<SoftOffload>>,
}

impl std::fmt::Debug for AfXdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpPort")
            .field("name", &self.name)
            .field("ifname", &self.ifname)
            .field("queue_id", &self.queue_id)
            .field("mode", &self.mode)
            .field("zero_copy", &self.zero_copy)
            .field("fd", &self.xsk.rx_q.fd().as_raw_fd())
            .field("tx_free", &self.tx_free.len())
            .field("fill_pending", &self.fill_pending.len())
            .field("tx_pending", &self.tx_pending)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

// Compile-time check that the port can be moved to a worker thread: every xsk-rs handle is `Send` (its ring
// pointers are owned per queue and the shared socket/UMEM state sits behind an `Arc<Mutex<..>>`).
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<AfXdpPort>();
};

/// The ifindex of `ifname` in the calling thread's namespace, or 0.
fn ifindex(ifname: &str) -> u32 {
    let Ok(c) = CString::new(ifname) else { return 0 };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// The mode in which an XDP program is attached to `ifindex`, if any (queried by netlink through libbpf).
pub(crate) fn attached_mode(ifindex: u32) -> io::Result<Option<XdpMode>> {
    let query = |flags: u32| -> io::Result<u32> {
        let mut id: u32 = 0;
        // SAFETY: bpf_xdp_query_id writes one u32 through the pointer, which is valid for the call.
        let rc = unsafe { libxdp_sys::bpf_xdp_query_id(ifindex as libc::c_int, flags as libc::c_int, &mut id) };
        if rc < 0 {
            Err(io::Error::from_raw_os_error(-rc))
        } else {
            Ok(id)
        }
    };
    if query(XdpFlags::XDP_FLAGS_DRV_MODE.bits())? != 0 {
        return Ok(Some(XdpMode::Native));
    }
    if query(XdpFlags::XDP_FLAGS_SKB_MODE.bits())? != 0 {
        return Ok(Some(XdpMode::Generic));
    }
    Ok(None)
}

/// The errno inside an xsk-rs error, if any.
fn errno_of(e: &(dyn std::error::Error + 'static)) -> Option<io::Error> {
    let src = e.source()?;
    let io = src.downcast_ref::<io::Error>()?;
    Some(match io.raw_os_error() {
        Some(n) => io::Error::from_raw_os_error(n),
        None => io::Error::new(io.kind(), io.to_string()),
    })
}

impl AfXdpPort {
    /// Creates the UMEM, binds an AF_XDP socket to `cfg.ifname` queue `cfg.queue_id`, attaches the XDP program in
    /// the requested mode and fills the fill ring. `port` is the port's name in the switch, used in errors.
    pub fn open(port: &str, cfg: &AfXdpConfig) -> Result<AfXdpPort, OpenError> {
        let ifname = cfg.ifname.as_str();
        let fail = |failure: OpenFailure| OpenError::new(port, Backend::AfXdp, &cfg.ifname, failure);
        let bad = |message: String| fail(OpenFailure::BadConfig(message));
        if !cfg.frames.is_power_of_two() || cfg.frames < 64 {
            return Err(bad(format!("frames = {} must be a power of two >= 64", cfg.frames)));
        }
        if cfg.frame_size != 2048 && cfg.frame_size != 4096 {
            return Err(bad(format!("frame_size = {} must be 2048 or 4096", cfg.frame_size)));
        }
        let rx_ring = QueueSize::new(cfg.rx_ring_size).map_err(|e| bad(format!("rx_ring_size: {e}")))?;
        let tx_ring = QueueSize::new(cfg.tx_ring_size).map_err(|e| bad(format!("tx_ring_size: {e}")))?;
        let index = ifindex(ifname);
        if index == 0 {
            return Err(fail(OpenFailure::NoSuchInterface));
        }

        let rx_frames = cfg.frames / 2;
        let tx_frames = cfg.frames - rx_frames;
        let umem_bytes = u64::from(cfg.frames) * u64::from(cfg.frame_size);
        let io_err = |op: String, source: io::Error| fail(OpenFailure::Io { op, source });
        // Both powers of two (checked above), so these cannot fail.
        let fill_size = QueueSize::new(rx_frames).map_err(|e| bad(e.to_string()))?;
        let comp_size = QueueSize::new(tx_frames).map_err(|e| bad(e.to_string()))?;
        let frame_size = FrameSize::new(cfg.frame_size).map_err(|e| bad(e.to_string()))?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(frame_size)
            .fill_queue_size(fill_size)
            .comp_queue_size(comp_size)
            .frame_headroom(0)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let frame_count = NonZeroU32::new(cfg.frames).ok_or_else(|| bad("frames = 0".to_string()))?;
        let chunk_data_len = umem_cfg.mtu() as usize;
        let new_umem = || {
            Umem::new(umem_cfg, frame_count, false).map_err(|e| {
                let source = errno_of(&e).unwrap_or_else(|| io::Error::other(e.to_string()));
                match source.raw_os_error() {
                    Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
                        fail(OpenFailure::Memlock { bytes: umem_bytes, source })
                    }
                    Some(libc::EPERM) | Some(libc::EACCES) => {
                        fail(OpenFailure::PermissionDenied { needs: NEEDS, source })
                    }
                    Some(libc::EAFNOSUPPORT) => fail(OpenFailure::Unsupported { source }),
                    _ => io_err(format!("creating the UMEM ({e})"), source),
                }
            })
        };

        let iface: xsk_rs::config::Interface =
            ifname.parse().map_err(|_| bad("interface name contains NUL".to_string()))?;
        let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
        bind |= if cfg.zero_copy { BindFlags::XDP_ZEROCOPY } else { BindFlags::XDP_COPY };
        let attempts: &[XdpMode] = match cfg.mode {
            XdpMode::Auto => &[XdpMode::Native, XdpMode::Generic],
            XdpMode::Native => &[XdpMode::Native],
            XdpMode::Generic => &[XdpMode::Generic],
        };
        let mut last_err = None;
        let mut queues = None;
        for &mode in attempts {
            let flags = match mode {
                XdpMode::Native => XdpFlags::XDP_FLAGS_DRV_MODE,
                _ => XdpFlags::XDP_FLAGS_SKB_MODE,
            };
            let sock_cfg = SocketConfig::builder()
                .rx_queue_size(rx_ring)
                .tx_queue_size(tx_ring)
                .xdp_flags(flags)
                .bind_flags(bind)
                .build();
            // A fresh UMEM per attempt: when libxdp fails after the bind (the attach), the UMEM's own socket stays
            // bound to the queue until the UMEM is dropped.
            let (umem, descs) = new_umem()?;
            // The kernel releases a closed socket's hold on its queue from a work queue, so a queue closed a
            // moment ago can still be busy: retry EBUSY for up to QUEUE_BUSY_RETRY.
            let started = Instant::now();
            let result = loop {
                // SAFETY: the UMEM was created just above and is not shared with any other socket, so the
                // `XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD` requirement for shared UMEMs does not apply.
                let r = unsafe { Socket::new(sock_cfg, &umem, &iface, cfg.queue_id) };
                match &r {
                    Err(e)
                        if errno_of(e).and_then(|e| e.raw_os_error()) == Some(libc::EBUSY)
                            && started.elapsed() < QUEUE_BUSY_RETRY =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    _ => break r,
                }
            };
            match result {
                Ok(q) => {
                    queues = Some((mode, q, umem, descs));
                    break;
                }
                Err(e) => {
                    let source = errno_of(&e).unwrap_or_else(|| io::Error::other(e.to_string()));
                    let err = fail(classify_socket_error(ifname, cfg, mode, source));
                    let fall_back = cfg.mode == XdpMode::Auto
                        && mode == XdpMode::Native
                        && matches!(
                            err.failure,
                            OpenFailure::NativeUnsupported { .. } | OpenFailure::AttachFailed { .. }
                        );
                    if fall_back {
                        tracing::warn!(
                            port, ifname, error = %err,
                            "AF_XDP: native XDP mode refused, falling back to generic (SKB) mode: slower"
                        );
                        last_err = Some(err);
                        continue;
                    }
                    return Err(err);
                }
            }
        }
        let Some((tried, (tx_q, rx_q, fq_cq), umem, mut descs)) = queues else {
            return Err(last_err.unwrap_or_else(|| io_err("no attach mode to try".to_string(), io::Error::other("?"))));
        };
        let Some((mut fill_q, comp_q)) = fq_cq else {
            return Err(io_err("socket came without fill/completion rings".to_string(), io::Error::other("xsk-rs")));
        };

        // What the kernel really gave: the attach mode (libxdp may have reused a program another socket attached)
        // and whether the bind is zero-copy.
        let mode = match attached_mode(index) {
            Ok(Some(m)) => m,
            Ok(None) => tried,
            Err(e) => return Err(io_err("querying the attached XDP program".to_string(), e)),
        };
        if mode != tried {
            if cfg.mode != XdpMode::Auto {
                return Err(fail(OpenFailure::ModeMismatch { wanted: cfg.mode, got: mode }));
            }
            tracing::warn!(port, ifname, "AF_XDP: interface's XDP program was already attached in {mode} mode");
        }
        let fd = rx_q.fd().as_raw_fd();
        let zero_copy = socket_zero_copy(fd).map_err(|e| io_err("getsockopt XDP_OPTIONS".to_string(), e))?;
        if cfg.mode == XdpMode::Auto && mode == XdpMode::Generic {
            tracing::warn!(port, ifname, "AF_XDP: running in generic (SKB) mode");
        }
        tracing::info!(port, ifname, queue = cfg.queue_id, %mode, zero_copy, "AF_XDP port open");

        let netns = match std::fs::File::open("/proc/thread-self/ns/net") {
            Ok(f) => Some(OwnedFd::from(f)),
            Err(e) => {
                tracing::warn!(
                    port,
                    ifname,
                    "AF_XDP: cannot record the network namespace ({e}); drop the port in this one"
                );
                None
            }
        };
        let tx_descs_free = descs.split_off(rx_frames as usize);
        // SAFETY: the receive half's chunks belong to this UMEM and none is in use anywhere: after this call
        // they belong to the kernel until they come back on the rx ring.
        let filled = unsafe { fill_q.produce(&descs) };
        if filled != descs.len() {
            return Err(io_err(
                format!("filling the fill ring ({filled} of {} accepted)", descs.len()),
                io::Error::other("fill ring too small"),
            ));
        }
        Ok(AfXdpPort {
            name: port.to_string(),
            ifname: ifname.to_string(),
            queue_id: cfg.queue_id,
            mode,
            zero_copy,
            xsk: ManuallyDrop::new(Xsk { rx_q, tx_q, fill_q, comp_q, umem }),
            netns,
            tx_free: tx_descs_free,
            rx_descs: vec![FrameDesc::default(); BATCH_SIZE],
            tx_descs: Vec::with_capacity(BATCH_SIZE),
            comp_descs: vec![FrameDesc::default(); tx_frames as usize],
            fill_pending: Vec::with_capacity(rx_frames as usize),
            tx_pending: false,
            max_kicks: cfg.tx_ring_size / KERNEL_TX_BATCH + 2,
            chunk_data_len,
            stats: PortStats::default(),
            soft: Some(Box::new(SoftOffload::new())),
        })
    }

    /// The interface's name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The queue the socket is bound to.
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// The mode the XDP program is actually attached in (never [`XdpMode::Auto`]).
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Whether the kernel bound the socket in zero-copy mode (`XDP_OPTIONS_ZEROCOPY`); false means copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The longest frame a UMEM chunk holds (chunk size minus the 256-byte XDP headroom).
    pub fn max_frame_len(&self) -> usize {
        self.chunk_data_len.min(MAX_FRAME_LEN)
    }

    /// The kernel's counters for the socket (one `getsockopt`).
    pub fn xdp_stats(&self) -> io::Result<XdpSocketStats> {
        let s = self.xsk.rx_q.fd().xdp_statistics()?;
        Ok(XdpSocketStats {
            rx_dropped: s.rx_dropped(),
            rx_ring_full: s.rx_ring_full(),
            fill_ring_empty_descs: s.rx_fill_ring_empty_descs(),
            rx_invalid_descs: s.rx_invalid_descs(),
            tx_invalid_descs: s.tx_invalid_descs(),
            tx_ring_empty_descs: s.tx_ring_empty_descs(),
        })
    }

    /// Puts received chunks back into the fill ring.
    fn refill(&mut self) {
        if self.fill_pending.is_empty() {
            return;
        }
        // SAFETY: every descriptor in `fill_pending` is a receive-half chunk of this UMEM that the kernel handed
        // back on the rx ring and whose bytes were already copied out; nothing refers to it any more.
        let n = unsafe { self.xsk.fill_q.produce(&self.fill_pending) };
        self.fill_pending.drain(..n);
        let xsk = &mut *self.xsk;
        if xsk.fill_q.needs_wakeup() {
            // Only zero-copy drivers ask for this; a zero-timeout poll is the documented wake-up.
            let _ = xsk.fill_q.wakeup(xsk.rx_q.fd_mut(), 0);
        }
    }

    /// Takes completed transmit chunks back into the free list.
    fn reclaim(&mut self) {
        loop {
            // SAFETY: the completion ring only returns chunks of this UMEM that this port submitted on its tx ring.
            let n = unsafe { self.xsk.comp_q.consume(&mut self.comp_descs) };
            if n == 0 {
                break;
            }
            self.tx_free.extend_from_slice(&self.comp_descs[..n]);
        }
    }

    /// Makes the kernel send what waits in the tx ring (see the module documentation). Returns an error only for
    /// an unexpected errno.
    fn kick(&mut self) -> io::Result<()> {
        if self.zero_copy && !self.xsk.tx_q.needs_wakeup() {
            // A zero-copy driver that is polling anyway needs no wake-up; copy mode always does.
            self.tx_pending = false;
            return Ok(());
        }
        let fd = self.xsk.tx_q.fd().as_raw_fd();
        self.tx_pending = false;
        for _ in 0..self.max_kicks {
            // SAFETY: a zero-length sendto with null buffers and no address is the AF_XDP transmit wake-up; the
            // fd is this port's open socket.
            let r = unsafe { libc::sendto(fd, std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // More frames wait (the kernel sends 32 per call), or the device queue is busy.
                Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                // Another sender holds the queue / no skb memory / link down: retry on the next call.
                Some(libc::EBUSY) | Some(libc::ENOBUFS) | Some(libc::ENETDOWN) => {
                    self.tx_pending = true;
                    return Ok(());
                }
                _ => return Err(e),
            }
        }
        self.tx_pending = true;
        Ok(())
    }
}

/// Maps an errno from socket creation/bind/attach to a failure naming its likely cause.
fn classify_socket_error(ifname: &str, cfg: &AfXdpConfig, mode: XdpMode, source: io::Error) -> OpenFailure {
    match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => OpenFailure::PermissionDenied { needs: NEEDS, source },
        Some(libc::EAFNOSUPPORT) => OpenFailure::Unsupported { source },
        Some(libc::EBUSY) => OpenFailure::QueueBusy { queue_id: cfg.queue_id },
        Some(libc::EOPNOTSUPP) if cfg.zero_copy => OpenFailure::ZeroCopyUnsupported { source },
        Some(libc::EOPNOTSUPP) if mode == XdpMode::Native => OpenFailure::NativeUnsupported { source },
        Some(libc::EEXIST) => OpenFailure::AttachFailed {
            hint: format!(
                " (another XDP program is already attached to {ifname}, or one in another mode; \
                 see `ip link show {ifname}`)"
            ),
            mode,
            source,
        },
        Some(libc::EINVAL) => OpenFailure::AttachFailed {
            hint: format!(" (queue {} out of range for the interface, or flags refused)", cfg.queue_id),
            mode,
            source,
        },
        Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
            OpenFailure::Memlock { bytes: u64::from(cfg.frames) * u64::from(cfg.frame_size), source }
        }
        _ => OpenFailure::AttachFailed { mode, hint: String::new(), source },
    }
}

/// Whether the socket is bound in zero-copy mode.
fn socket_zero_copy(fd: RawFd) -> io::Result<bool> {
    let mut opts = libc::xdp_options { flags: 0 };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::xdp_options>()).expect("a 4-byte struct");
    // SAFETY: getsockopt writes at most `len` bytes into `opts`, which is that large and lives across the call.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_XDP, libc::XDP_OPTIONS, (&mut opts as *mut libc::xdp_options).cast(), &mut len)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
}

impl AsRawFd for AfXdpPort {
    fn as_raw_fd(&self) -> RawFd {
        self.xsk.rx_q.fd().as_raw_fd()
    }
}

impl Port for AfXdpPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, now: Nanos, pool: &mut BufPool, batch: &mut Batch) -> Result<usize, PortError> {
        if self.tx_pending {
            self.kick().map_err(|source| PortError::Io { port: self.name.clone(), op: "AF_XDP tx kick", source })?;
            self.reclaim();
        }
        // Take only what can be handed over: the rest stays in the rx ring.
        let want = batch.room().min(pool.available()).min(self.rx_descs.len());
        if want == 0 {
            return Ok(0);
        }
        // SAFETY: the rx ring only returns chunks of this UMEM; `rx_descs` is scratch space we own.
        let got = unsafe { self.xsk.rx_q.consume(&mut self.rx_descs[..want]) };
        let mut n = 0;
        for desc in &self.rx_descs[..got] {
            // SAFETY: the kernel handed this chunk to us on the rx ring and will not write it until it is back
            // in the fill ring (below); nothing else refers to it.
            let data = unsafe { self.xsk.umem.data(desc) };
            let bytes = data.contents();
            match pool.alloc() {
                Some(mut frame) if bytes.len() <= MAX_FRAME_LEN => {
                    // Cannot fail: the length was checked.
                    let _ = frame.load(bytes);
                    frame.ts = now;
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += bytes.len() as u64;
                    // Cannot fail: at most `batch.room()` descriptors were taken.
                    let _ = batch.push(frame);
                    n += 1;
                }
                Some(frame) => {
                    pool.free(frame);
                    self.stats.rx_dropped += 1;
                }
                // Not reached (at most `pool.available()` were taken), but never lose count.
                None => self.stats.rx_dropped += 1,
            }
            self.fill_pending.push(*desc);
        }
        self.refill();
        Ok(n)
    }

    fn tx_burst(&mut self, pool: &mut BufPool, frames: &mut Vec<Frame>) -> Result<(), PortError> {
        self.reclaim();
        let mut queued = 0usize;
        for mut frame in frames.drain(..) {
            // Each wire frame (the frame itself, or its segments when a super-frame) into its own chunk.
            let mut soft = self.soft.take().unwrap_or_else(|| Box::new(SoftOffload::new()));
            let emitted = soft.emit(&mut frame, Caps::NONE, |bytes, _| {
                let len = bytes.len();
                let Some(mut desc) = (if len <= self.chunk_data_len { self.tx_free.pop() } else { None }) else {
                    return false;
                };
                // SAFETY: `desc` is a transmit-half chunk of this UMEM from the free list: the kernel is done
                // with it (it came back on the completion ring, or was never submitted) and nothing else
                // refers to it.
                let mut data = unsafe { self.xsk.umem.data_mut(&mut desc) };
                let mut cur = data.cursor();
                cur.set_pos(0);
                // Cannot fail: the chunk holds `chunk_data_len` >= len bytes.
                let _ = cur.write_all(bytes);
                self.tx_descs.push(desc);
                self.stats.tx_bytes += len as u64;
                queued += 1;
                if self.tx_descs.len() == self.tx_descs.capacity() {
                    self.submit();
                }
                true
            });
            self.soft = Some(soft);
            match emitted {
                Emitted::All(_) => {}
                Emitted::Stopped { left, .. } => self.stats.tx_dropped += left as u64,
                Emitted::Malformed(_) => self.stats.tx_dropped += 1,
            }
            pool.free(frame);
        }
        self.submit();
        if queued > 0 || self.tx_pending {
            self.kick().map_err(|source| PortError::Io { port: self.name.clone(), op: "AF_XDP tx kick", source })?;
        }
        Ok(())
    }

    /// The port's counters, with the frames the kernel dropped on this socket's way in (rx ring full, no free
    /// chunk in the fill ring, longer than a chunk, invalid descriptors; one `getsockopt`) added to
    /// `rx_dropped`, so losses show in the same counter on every back-end.
    fn stats(&self) -> PortStats {
        let mut s = self.stats;
        if let Some(soft) = &self.soft {
            let soft = soft.stats();
            (s.sw_segmented, s.sw_csum) = (soft.gso_segmented, soft.csum_completed);
        }
        if let Ok(k) = self.xdp_stats() {
            s.rx_dropped += k.rx_dropped + k.rx_ring_full + k.rx_invalid_descs;
        }
        s
    }

    fn tx_pending(&self) -> bool {
        self.tx_pending
    }

    fn caps(&self) -> Caps {
        Caps::NONE
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.xsk.rx_q.fd().as_raw_fd())
    }
}

impl AfXdpPort {
    /// Puts the filled descriptors on the tx ring; those the ring has no room for are dropped and counted.
    fn submit(&mut self) {
        if self.tx_descs.is_empty() {
            return;
        }
        // SAFETY: every descriptor is a transmit-half chunk of this UMEM holding a frame written above; from here
        // the kernel owns it until it comes back on the completion ring.
        let n = unsafe { self.xsk.tx_q.produce(&self.tx_descs) };
        self.stats.tx_packets += n as u64;
        for desc in self.tx_descs.drain(n..) {
            self.stats.tx_dropped += 1;
            self.stats.tx_bytes -= desc.lengths().data() as u64;
            self.tx_free.push(desc);
        }
        self.tx_descs.clear();
    }
}

/// The (device, inode) identity of a namespace file.
fn ns_id(fd: &impl AsFd) -> io::Result<(u64, u64)> {
    let f = std::fs::File::from(fd.as_fd().try_clone_to_owned()?);
    let m = f.metadata()?;
    Ok((std::os::unix::fs::MetadataExt::dev(&m), std::os::unix::fs::MetadataExt::ino(&m)))
}

fn setns(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: setns takes an open namespace fd and a flag; it changes only the calling thread's namespace.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for AfXdpPort {
    /// Deletes the socket and detaches the XDP program, from inside the namespace the port was opened in: libxdp
    /// finds the interface by index, which means another interface (or none) in another namespace. When the
    /// dropping thread is elsewhere it enters that namespace for the deletion and comes back.
    fn drop(&mut self) {
        let mut back = None;
        if let Some(ns) = &self.netns {
            let here = std::fs::File::open("/proc/thread-self/ns/net");
            match (here, ns_id(ns)) {
                (Ok(here), Ok(theirs)) if ns_id(&here).ok() != Some(theirs) => match setns(ns) {
                    Ok(()) => back = Some(here),
                    // libxdp detaches only the program it attached (it compares program ids), so deleting from
                    // here cannot touch another interface's program; ours may stay attached.
                    Err(e) => tracing::error!(
                        port = %self.name, ifname = %self.ifname,
                        "AF_XDP: cannot enter the port's network namespace to detach its XDP program ({e})"
                    ),
                },
                _ => {}
            }
        }
        // SAFETY: `xsk` is dropped exactly once, here, and never used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.xsk) };
        if let Some(here) = back {
            if let Err(e) = setns(&here) {
                tracing::error!(port = %self.name, "AF_XDP: cannot return to the thread's network namespace ({e})");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo() -> IfName {
        IfName::new("lo").unwrap()
    }

    #[test]
    fn bad_configs_are_refused_before_any_system_call() {
        let mut cfgs = Vec::new();
        let mut c = AfXdpConfig::new(lo());
        c.frames = 100;
        cfgs.push(c.clone());
        c.frames = 32;
        cfgs.push(c.clone());
        c = AfXdpConfig::new(lo());
        c.frame_size = 3000;
        cfgs.push(c.clone());
        c = AfXdpConfig::new(lo());
        c.rx_ring_size = 1000;
        cfgs.push(c);
        for cfg in cfgs {
            let err = AfXdpPort::open("p", &cfg).unwrap_err();
            assert!(matches!(err.failure, OpenFailure::BadConfig(_)), "{cfg:?}: {err}");
            assert!(err.to_string().contains("port p"), "{err}");
        }
    }

    #[test]
    fn missing_interface_is_named() {
        let err = AfXdpPort::open("p", &AfXdpConfig::new(IfName::new("vsnoexist0").unwrap())).unwrap_err();
        assert!(matches!(err.failure, OpenFailure::NoSuchInterface), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("port p") && msg.contains("vsnoexist0"), "{msg}");
    }
}
