//! Ports: where frames enter and leave the switch. One trait, [`Port`], with batched receive and transmit, and
//! the back-ends that implement it ([`mem::MemPort`], [`pcap::PcapPort`], [`tap::TapPort`],
//! [`afpacket::AfPacketPort`], and `afxdp::AfXdpPort` with the cargo feature `afxdp`).
//!
//! # Buffer ownership (the contract every back-end keeps)
//! - `rx_burst` takes buffers from the caller's [`BufPool`], fills them and pushes them into the caller's
//!   [`Batch`]; from then on the caller owns them. A port never keeps a reference to a frame it has handed out.
//!   When the pool is empty the port stops receiving (the frames wait in the port's queue or ring) and counts
//!   nothing as lost unless it really lost a frame.
//! - `tx_burst` takes every frame out of the `frames` vector it is given: each is either sent or dropped (and
//!   counted in [`PortStats::tx_dropped`]), and its buffer goes back to the pool once the port no longer needs
//!   it (immediately for copying back-ends). The vector is left empty with its capacity intact.
//! - A frame a port cannot accept on receive (longer than a buffer) is dropped by the port and counted in
//!   [`PortStats::rx_dropped`].
//!
//! # Offloads (see [`crate::offload`])
//! A port that receives frames from a host stack with partial checksums or GSO super-frames hands them over
//! with their [`Frame::offload`] metadata, checked against the frame (it is the trust boundary for it), in a
//! large buffer when longer than a small one. At transmit, a port sends a frame's metadata to the kernel when
//! [`Port::caps`] covers it and otherwise completes or segments the frame itself ([`soft_offload`]), so the
//! pipeline never needs to know what a port can do.
//!
//! # Opening
//! The back-ends on kernel interfaces take an [`IfName`] (checked once) and fail with one error type,
//! [`OpenError`] ([`open`]). [`any::AnyPort`] is every back-end as one type, and [`any::open_port`] opens the
//! queues of a configured port with the back-end its kind names.
//!
//! Threads: a port is owned by one worker at a time and is `Send` but not shared.

pub mod afpacket;
#[cfg(feature = "afxdp")]
pub mod afxdp;
pub mod any;
pub mod failed;
pub mod gso;
pub mod mem;
pub mod open;
pub mod pcap;
pub mod soft_offload;
pub mod tap;
pub mod tap_persist;
pub mod xdp_owned;

use crate::batch::Batch;
use crate::buffer::{BufPool, Frame};
use crate::ids::Nanos;
use crate::offload::Caps;

pub use crate::ids::PortId;
pub use open::{Backend, OpenError, OpenFailure};

/// How many wire frames the super-frames of one receive burst may stand for: a port stops reading once the
/// frames it took add up to this many segments ([`crate::offload::Offload::segments`]; an ordinary frame is
/// one). A stage that cuts super-frames into buffers of their own (the overlay, before encapsulation: VXLAN
/// carries wire-sized frames) then queues at most about this many plus one super-frame's worth for one egress
/// port per burst, within its transmit queue (`crate::stage::TX_QUEUE_CAP`, 256) even with a few ports feeding
/// it in one iteration. Without the budget, one burst of 32 super-frames of 64 KiB became ~1,400 segments and
/// most were dropped (`tx-queue-full`), which held cross-host TCP to a tenth of the kernel's.
pub const RX_SEGMENT_BUDGET: usize = 2 * crate::batch::BATCH_SIZE;

/// What a port counts about its own I/O; defined with the control protocol, which carries it as it is.
pub use vswitch_api::proto::PortStats;

/// An error from a port's I/O that is not about a single frame (a file or socket failing).
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The operating system refused an operation.
    #[error("port {port}: {op}: {source}")]
    Io {
        /// The port's name.
        port: String,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A capture could not be read or written.
    #[error("port {port}: {message}")]
    Pcap {
        /// The port's name.
        port: String,
        /// What went wrong.
        message: String,
    },
}

/// A Linux interface name, valid by construction: the back-ends on kernel interfaces take one, so a name is
/// checked once (by the configuration, or by whoever makes the `IfName`), never by each back-end.
pub use vswitch_api::ifname::{BadIfName, IfName};

// The contract's limit is the kernel's: IFNAMSIZ minus the terminating NUL.
const _: () = assert!(IfName::MAX_LEN == libc::IFNAMSIZ - 1);

/// A source and sink of frames. See the module documentation for who owns a buffer when.
pub trait Port {
    /// The port's configured name.
    fn name(&self) -> &str;

    /// Receives up to `batch.room()` frames into `batch`, stamping them with `now` unless the port has its own
    /// timestamps (a capture). Returns how many were added.
    fn rx_burst(&mut self, now: Nanos, pool: &mut BufPool, batch: &mut Batch) -> Result<usize, PortError>;

    /// Sends (or drops and counts) every frame in `frames`, leaving it empty; buffers go back to `pool`.
    fn tx_burst(&mut self, pool: &mut BufPool, frames: &mut Vec<Frame>) -> Result<(), PortError>;

    /// The port's own counters.
    fn stats(&self) -> PortStats;

    /// What the port can transmit as is (partial checksums, super-frames), learned when it opened. Frames with
    /// metadata beyond it are completed or segmented by the port itself ([`soft_offload`]) at transmit.
    fn caps(&self) -> Caps {
        Caps::NONE
    }

    /// A file descriptor that becomes readable when frames wait to be received, for a worker that has gone
    /// idle to sleep on (with mio) instead of spinning. `None` for ports without one (memory, capture): the
    /// worker then never sleeps longer than its housekeeping interval while it owns such a port.
    fn rx_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Called by a worker about to sleep on [`Port::rx_fd`], after a burst found nothing: the port prepares
    /// whatever makes a new frame raise the fd (AF_PACKET arms its wake-up socket) and returns false when frames
    /// are already waiting (the worker then does not sleep). Every call is followed by [`Port::after_sleep`].
    fn before_sleep(&mut self) -> bool {
        true
    }

    /// Called by a worker after its sleep (or after deciding not to sleep) to undo [`Port::before_sleep`].
    fn after_sleep(&mut self) {}

    /// True when frames given to an earlier `tx_burst` are still waiting to be pushed to the link (AF_XDP in
    /// copy mode, when the kernel pushed back). A worker about to sleep calls `tx_burst` with no frames to push
    /// them, so an idle link does not hold them until its next wake-up.
    fn tx_pending(&self) -> bool {
        false
    }
}
