//! [`OpenError`]: why a port on a kernel interface (tap, AF_PACKET, AF_XDP) could not be opened. One type for
//! every back-end: the port, the back-end, the interface, and the [`OpenFailure`], so callers (the live switch,
//! the control socket's `apply`, tests) handle them alike and every message reads
//! `port NAME: BACKEND IFNAME: WHAT` (e.g. `port c1: tap vs-c1: busy (…)`,
//! `port up: AF_XDP on vs-up: queue 1 is busy (…)`).
//!
//! Threads: plain data.

use crate::config::XdpMode;
use crate::port::IfName;
use std::fmt;
use std::io;

/// The back-end that was opening a port, as an error names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A tap the switch creates (`port::tap`).
    Tap,
    /// An AF_PACKET socket on an existing interface (`port::afpacket`).
    AfPacket,
    /// An AF_XDP socket on a queue of an existing interface (`port::afxdp`).
    AfXdp,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Tap => "tap",
            Backend::AfPacket => "AF_PACKET on",
            Backend::AfXdp => "AF_XDP on",
        })
    }
}

/// Why a port could not be opened. Opening fails as a whole: nothing the attempt created is left behind.
#[derive(Debug, thiserror::Error)]
#[error("port {port}: {backend} {ifname}: {failure}")]
pub struct OpenError {
    /// The port's name in the switch.
    pub port: String,
    /// The back-end.
    pub backend: Backend,
    /// The interface.
    pub ifname: IfName,
    /// What went wrong.
    pub failure: OpenFailure,
}

impl OpenError {
    /// `failure` while `backend` opened port `port` on `ifname`.
    pub fn new(port: &str, backend: Backend, ifname: &IfName, failure: OpenFailure) -> OpenError {
        OpenError { port: port.to_string(), backend, ifname: ifname.clone(), failure }
    }
}

/// What went wrong while opening a port. The first variants can happen to every back-end; the others name the
/// back-end they belong to.
#[derive(Debug, thiserror::Error)]
pub enum OpenFailure {
    /// No interface of that name in the calling thread's network namespace (AF_PACKET, AF_XDP).
    #[error("no such interface (in this network namespace)")]
    NoSuchInterface,
    /// The process lacks a privilege; `needs` says which.
    #[error("permission denied (needs {needs}): {source}")]
    PermissionDenied {
        /// The capabilities or access the back-end needs.
        needs: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The back-end's settings are impossible (ring or UMEM geometry).
    #[error("bad configuration: {0}")]
    BadConfig(String),
    /// A system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Tap: the name is taken: a single-queue tap of that name is already open (`EBUSY`), or an interface of
    /// that name exists that is not a tap with the requested flags (`EINVAL`, e.g. a veth, or a multi-queue
    /// mismatch).
    #[error("busy (already open, or the name belongs to an incompatible interface)")]
    Busy,
    /// Tap: an interface of that name exists that vswitchd did not make (no `vswitchd port …` alias) or that
    /// another process holds open: it is left alone.
    #[error("an interface of that name exists and is not a free vswitchd tap ({0}); left alone")]
    NotOurs(String),
    /// Tap: moving the interface into a network namespace failed.
    #[error("moving into netns {netns}: {message}")]
    Netns {
        /// The namespace name.
        netns: String,
        /// What went wrong (the `ip` tool's message).
        message: String,
    },
    /// AF_XDP: the kernel refused to pin the UMEM: locked-memory limit too low and no CAP_IPC_LOCK.
    #[error(
        "cannot register a {bytes}-byte UMEM (RLIMIT_MEMLOCK too low without CAP_IPC_LOCK; raise `ulimit -l` or \
         lower `frames`): {source}"
    )]
    Memlock {
        /// The UMEM's size.
        bytes: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// AF_XDP: the kernel has no AF_XDP support (`EAFNOSUPPORT`).
    #[error("AF_XDP sockets are not supported by this kernel: {source}")]
    Unsupported {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// AF_XDP: native mode was asked for explicitly and the driver refused it.
    #[error("native (driver) XDP mode is not supported (use generic or auto): {source}")]
    NativeUnsupported {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// AF_XDP: zero-copy was asked for and the driver cannot do it.
    #[error("zero-copy is not supported by the driver (use copy mode): {source}")]
    ZeroCopyUnsupported {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// AF_XDP: another AF_XDP socket is bound to this queue (`EBUSY` for longer than the half second `open`
    /// waits for a socket closed just before to be released: the kernel releases it from a work queue).
    #[error("queue {queue_id} is busy (another AF_XDP socket is bound to it)")]
    QueueBusy {
        /// The queue.
        queue_id: u32,
    },
    /// AF_XDP: the XDP program could not be attached.
    #[error("attaching the XDP program in {mode} mode failed{hint}: {source}")]
    AttachFailed {
        /// The mode tried.
        mode: XdpMode,
        /// What the error most likely means (e.g. another program is attached).
        hint: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// AF_XDP: an explicit mode was asked for but the interface's AF_XDP program runs in the other one (it was
    /// attached earlier by another socket on the interface and libxdp reuses it).
    #[error(
        "asked for {wanted} mode but the interface's XDP program is attached in {got} mode (by another AF_XDP \
         socket on it)"
    )]
    ModeMismatch {
        /// The mode asked for.
        wanted: XdpMode,
        /// The mode found.
        got: XdpMode,
    },
}
