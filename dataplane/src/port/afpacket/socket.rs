//! The packet sockets' system-call helpers (`setsockopt`, the `sockaddr_ll` and BPF constants) and the wake-up
//! socket ([`Wake`]) that makes a sleeping worker's epoll wait end on the first frame.
//!
//! Threads: owned by one port, used by the worker that receives from it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `AF_PACKET` as `sockaddr_ll::sll_family` holds it.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // the constant 17
pub(super) const SLL_FAMILY: libc::c_ushort = libc::AF_PACKET as libc::c_ushort;
/// `ETH_P_ALL` in network byte order, as `sockaddr_ll::sll_protocol` holds it.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // the constant 3
pub(super) const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();
/// `PACKET_MR_PROMISC` as `packet_mreq::mr_type` holds it.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // the constant 1
pub(super) const MR_PROMISC: libc::c_ushort = libc::PACKET_MR_PROMISC as libc::c_ushort;
/// A classic BPF "return constant" instruction's opcode.
#[allow(clippy::cast_possible_truncation)] // the constant 0x06
pub(super) const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// The size of `T` as a socket option's or address's length argument.
#[allow(clippy::cast_possible_truncation)] // only called with C structs of a few dozen bytes
pub(super) const fn socklen_of<T>() -> libc::socklen_t {
    std::mem::size_of::<T>() as libc::socklen_t
}

pub(super) fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points to a live, initialised `T` of the stated size for the duration of the call.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (val as *const T).cast(), socklen_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A second packet socket on the interface whose only job is to become readable when a frame arrives while the
/// worker sleeps (the ring's own fd signals only when a block is handed over). It stays bound, with a socket
/// filter that drops every frame (a few nanoseconds of the kernel's receive path per frame) until the worker
/// arms it before sleeping, when the filter is swapped for one that keeps one byte of each frame.
#[derive(Debug)]
pub(super) struct Wake {
    pub(super) fd: OwnedFd,
    pub(super) armed: bool,
}

impl Wake {
    /// A wake-up socket bound to interface `ifindex`, disarmed.
    pub(super) fn open(ifindex: u32) -> io::Result<Wake> {
        // SAFETY: socket takes only integer arguments.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let wake = Wake { fd, armed: true };
        wake.filter(0)?;
        let one: libc::c_int = 1;
        setsockopt(&wake.fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)?;
        let small: libc::c_int = 4096;
        setsockopt(&wake.fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &small)?;
        // SAFETY: sockaddr_ll is a plain C struct; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = SLL_FAMILY;
        sll.sll_protocol = ETH_P_ALL_BE;
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a valid sockaddr_ll of the stated length that outlives the call.
        let rc = unsafe {
            libc::bind(
                wake.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                socklen_of::<libc::sockaddr_ll>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut wake = wake;
        wake.armed = false;
        Ok(wake)
    }

    /// Attaches a one-instruction classic BPF filter that keeps `keep` bytes of each frame (0: none).
    pub(super) fn filter(&self, keep: u32) -> io::Result<()> {
        let mut insn = [libc::sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: keep }];
        let prog = libc::sock_fprog { len: 1, filter: insn.as_mut_ptr() };
        setsockopt(&self.fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
    }

    /// Lets the next frame wake the worker.
    pub(super) fn arm(&mut self) {
        if !self.armed && self.filter(1).is_ok() {
            self.armed = true;
        }
    }

    /// Back to dropping every frame, and empties the queue so that the next arming starts from silence.
    pub(super) fn disarm(&mut self) {
        if !self.armed {
            return;
        }
        if self.filter(0).is_ok() {
            self.armed = false;
        }
        let mut byte = [0u8; 1];
        loop {
            // SAFETY: `byte` is writable for one byte during the call; the fd is open.
            let r = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    byte.as_mut_ptr().cast(),
                    byte.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if r < 0 {
                break;
            }
        }
    }
}
