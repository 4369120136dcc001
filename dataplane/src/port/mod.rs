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
//! Threads: a port is owned by one worker at a time and is `Send` but not shared.

pub mod afpacket;
#[cfg(feature = "afxdp")]
pub mod afxdp;
pub mod gso;
pub mod mem;
pub mod pcap;
pub mod soft_offload;
pub mod tap;

use crate::batch::Batch;
use crate::buffer::{BufPool, Frame, Nanos};
use crate::offload::Caps;
use serde::{Deserialize, Serialize};

/// A port's index in the switch's port table.
pub type PortId = u16;

/// What a port counts about its own I/O (what the switch decided is counted by the pipeline).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// Frames received and handed to the switch.
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames the port received but could not hand over (longer than a buffer).
    pub rx_dropped: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames given to the port that it could not send.
    pub tx_dropped: u64,
    /// GSO super-frames received whole (each also one of `rx_packets`; see `crate::offload`).
    #[serde(default)]
    pub rx_super_frames: u64,
    /// GSO super-frames sent whole, for the kernel to segment if it must (each also one of `tx_packets`).
    #[serde(default)]
    pub tx_super_frames: u64,
    /// Super-frames the port cut into segments in software: on receive when no large buffer was free, on
    /// transmit when the link takes no super-frames (their segments count in `rx_packets` / `tx_packets`).
    #[serde(default)]
    pub sw_segmented: u64,
    /// Partial checksums the port completed in software (for a link without checksum offload).
    #[serde(default)]
    pub sw_csum: u64,
}

impl PortStats {
    /// The sum of two sets of counters (the queues of one port).
    pub fn merged(self, o: PortStats) -> PortStats {
        PortStats {
            rx_packets: self.rx_packets + o.rx_packets,
            rx_bytes: self.rx_bytes + o.rx_bytes,
            rx_dropped: self.rx_dropped + o.rx_dropped,
            tx_packets: self.tx_packets + o.tx_packets,
            tx_bytes: self.tx_bytes + o.tx_bytes,
            tx_dropped: self.tx_dropped + o.tx_dropped,
            rx_super_frames: self.rx_super_frames + o.rx_super_frames,
            tx_super_frames: self.tx_super_frames + o.tx_super_frames,
            sw_segmented: self.sw_segmented + o.sw_segmented,
            sw_csum: self.sw_csum + o.sw_csum,
        }
    }
}

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

/// True when `ifname` can name a Linux interface: 1 to [`tap::MAX_IFNAME_LEN`] bytes, no NUL or '/'. Checked
/// before any system call by the back-ends that take an interface name.
pub(crate) fn valid_ifname(ifname: &str) -> bool {
    !ifname.is_empty() && ifname.len() <= tap::MAX_IFNAME_LEN && !ifname.bytes().any(|b| b == 0 || b == b'/')
}

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
