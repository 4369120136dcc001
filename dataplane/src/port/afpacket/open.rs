//! Opening an [`AfPacketPort`]: the geometry checks, the packet socket, the `TPACKET_V3` ring and its mapping,
//! promiscuous membership, the fan-out group, the wake-up socket and the interface's MAC address. A failure
//! closes and unmaps whatever was made (the owned fd and [`Ring`] drop).
//!
//! Threads: the opening thread, in the network namespace holding the interface.

use super::ring::{Ring, RxPos};
use super::socket::{setsockopt, socklen_of, Wake, ETH_P_ALL_BE, MR_PROMISC, SLL_FAMILY};
use super::{AfPacketConfig, AfPacketPort, AfPacketStats, NEEDS, RING_FRAME_SIZE};
use crate::port::{Backend, OpenError, OpenFailure, PortStats};
use crate::wire::MacAddr;
use std::cell::Cell;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

fn check_geometry(cfg: &AfPacketConfig) -> Result<(), String> {
    // SAFETY: sysconf has no memory effects.
    let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096)).unwrap_or(u32::MAX);
    if cfg.block_size < page || !cfg.block_size.is_power_of_two() {
        return Err(format!("block_size {} is not a power of two of at least {page} bytes", cfg.block_size));
    }
    if cfg.block_size < RING_FRAME_SIZE {
        return Err(format!("block_size {} is smaller than a frame slot ({RING_FRAME_SIZE})", cfg.block_size));
    }
    if cfg.block_count == 0 {
        return Err("block_count is 0".to_string());
    }
    if u64::from(cfg.block_size) * u64::from(cfg.block_count) > 1 << 30 {
        return Err(format!("ring of {} x {} bytes exceeds 1 GiB", cfg.block_count, cfg.block_size));
    }
    if cfg.block_timeout_ms == 0 {
        return Err("block_timeout_ms is 0 (the kernel would pick its own, up to several ms)".to_string());
    }
    Ok(())
}

impl AfPacketPort {
    /// Attaches to the existing interface `cfg.ifname` (in the calling thread's network namespace): packet socket,
    /// `TPACKET_V3` ring, promiscuous membership, optional fan-out group. `port` is the port's name in the switch,
    /// used in errors.
    pub fn open(port: &str, cfg: &AfPacketConfig) -> Result<AfPacketPort, OpenError> {
        let ifname = cfg.ifname.as_str();
        let fail = |failure: OpenFailure| OpenError::new(port, Backend::AfPacket, &cfg.ifname, failure);
        let io_err = |op: &'static str, source: io::Error| fail(OpenFailure::Io { op: op.to_string(), source });
        check_geometry(cfg).map_err(|message| fail(OpenFailure::BadConfig(message)))?;
        let cname = CString::new(ifname).expect("an IfName has no NUL");
        // SAFETY: `cname` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ENXIO) => fail(OpenFailure::NoSuchInterface),
                _ => io_err("if_nametoindex", e),
            });
        }

        // Protocol 0: the socket receives nothing until the ring is ready and it is bound with ETH_P_ALL.
        // SAFETY: socket takes only integer arguments.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    fail(OpenFailure::PermissionDenied { needs: NEEDS, source: e })
                }
                _ => io_err("socket(AF_PACKET)", e),
            });
        }
        // SAFETY: `raw` is a fresh fd we own; dropping `fd` closes it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version)
            .map_err(|e| io_err("setsockopt PACKET_VERSION (TPACKET_V3)", e))?;
        let one: libc::c_int = 1;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)
            .map_err(|e| io_err("setsockopt PACKET_IGNORE_OUTGOING", e))?;
        if cfg.qdisc_bypass {
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one)
                .map_err(|e| io_err("setsockopt PACKET_QDISC_BYPASS", e))?;
        }
        // Before the ring (the kernel refuses it afterwards): a virtio_net_hdr before every received frame (GSO and
        // partial-checksum metadata) and expected before every transmitted one.
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one)
            .map_err(|e| io_err("setsockopt PACKET_VNET_HDR", e))?;
        let req = libc::tpacket_req3 {
            tp_block_size: cfg.block_size,
            tp_block_nr: cfg.block_count,
            tp_frame_size: RING_FRAME_SIZE,
            tp_frame_nr: cfg.block_size / RING_FRAME_SIZE * cfg.block_count,
            tp_retire_blk_tov: cfg.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(|e| io_err("setsockopt PACKET_RX_RING", e))?;
        let len = cfg.block_size as usize * cfg.block_count as usize;
        // SAFETY: maps `len` bytes of the socket's ring (just configured to exactly that size), shared with the
        // kernel; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io_err("mmap rx ring", io::Error::last_os_error()));
        }
        let ring = Ring { base: NonNull::new(base.cast()).expect("mmap does not return NULL on success"), len };

        // SAFETY: sockaddr_ll is a plain C struct; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = SLL_FAMILY;
        sll.sll_protocol = ETH_P_ALL_BE;
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a valid sockaddr_ll of the stated length that outlives the call.
        let rc = unsafe {
            libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), socklen_of::<libc::sockaddr_ll>())
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ENXIO) => fail(OpenFailure::NoSuchInterface),
                _ => io_err("bind", e),
            });
        }

        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as libc::c_int,
            mr_type: MR_PROMISC,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(|e| io_err("setsockopt PACKET_ADD_MEMBERSHIP (promiscuous)", e))?;

        if let Some(group) = cfg.fanout {
            let arg: libc::c_int = libc::c_int::from(group) | ((libc::PACKET_FANOUT_HASH as libc::c_int) << 16);
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)
                .map_err(|e| io_err("setsockopt PACKET_FANOUT (hash)", e))?;
        }

        let mac = interface_mac(&fd, ifname).map_err(|e| io_err("SIOCGIFHWADDR", e))?;
        let wake = Wake::open(ifindex).map_err(|e| io_err("wake-up socket", e))?;

        Ok(AfPacketPort {
            name: port.to_string(),
            ifname: ifname.to_string(),
            ifindex,
            mac,
            ring,
            fd,
            block_size: cfg.block_size as usize,
            block_count: cfg.block_count as usize,
            pos: RxPos::default(),
            stats: PortStats::default(),
            extra: AfPacketStats::default(),
            kernel: Cell::new((0, 0)),
            dirty: vec![0; cfg.block_count as usize],
            wake,
        })
    }
}

/// The interface's MAC address, through an ioctl on the (already bound) packet socket.
fn interface_mac(fd: &OwnedFd, ifname: &str) -> io::Result<MacAddr> {
    // SAFETY: ifreq is a plain C struct; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads and writes one `struct ifreq`, which `ifr` is and which outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR as _, &mut ifr as *mut libc::ifreq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR filled the `ifru_hwaddr` member of the union.
    let hw = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *dst = src.cast_unsigned();
    }
    Ok(MacAddr(mac))
}
