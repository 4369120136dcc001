//! The `TPACKET_V3` receive ring as the port reads it: the mapping ([`Ring`], unmapped on drop), where the port
//! is in it ([`RxPos`]), the layout constants of a frame in a block, and a frame seen through the ring with the
//! VLAN tag the kernel stripped put back ([`RingFrame`]). The walk over blocks is [`super::AfPacketPort`]'s.
//!
//! Threads: owned by one port, used by the worker that receives from it.

use crate::wire::vlan;
use std::ptr::NonNull;

/// The mapped receive ring; unmapped on drop.
#[derive(Debug)]
pub(super) struct Ring {
    pub(super) base: NonNull<u8>,
    pub(super) len: usize,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; nothing refers into the mapping after this (frames
        // are copied out of it).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// Where `rx_burst` is in the ring.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RxPos {
    /// Index of the block being walked (or waited for).
    pub(super) block: usize,
    /// True once that block was handed over and its header read.
    pub(super) open: bool,
    /// Frames of the open block not yet consumed.
    pub(super) left: u32,
    /// Offset in the block of the next frame's header.
    pub(super) off: usize,
    /// Index of the next segment to emit from that frame when it is a GSO super-frame (0: not started). A
    /// super-frame's segments may span several `rx_burst` calls; the frame stays in the ring until the last one.
    pub(super) seg_next: usize,
    /// Frames of the block taken while the kernel still filled it (peeked).
    pub(super) peeked: u32,
    /// Bytes of the open block the kernel wrote (`blk_len`).
    pub(super) used: usize,
    /// The open block was handed over by the timeout rather than full.
    pub(super) timed_out: bool,
}

/// Size of a frame header in the ring.
pub(super) const FRAME_HDR: usize = std::mem::size_of::<libc::tpacket3_hdr>();

/// Where the kernel puts the `sockaddr_ll` after a frame header (`TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`).
pub(super) const SLL_AT: usize = (FRAME_HDR + 15) & !15;

/// Whether blocks the kernel still fills are peeked (see the module documentation, Latency): relies on x86's
/// total store order for the frame's bytes to be visible before its header fields.
pub(super) const PEEK: bool = cfg!(target_arch = "x86_64");

/// A frame in the ring as the switch will see it: the ring's bytes with the VLAN tag the kernel stripped (if any)
/// put back after the MAC addresses.
pub(super) struct RingFrame<'a> {
    pub(super) data: &'a [u8],
    pub(super) tag: Option<[u8; 4]>,
}

impl RingFrame<'_> {
    pub(super) fn tag_len(&self) -> usize {
        if self.tag.is_some() {
            4
        } else {
            0
        }
    }

    pub(super) fn len(&self) -> usize {
        self.data.len() + self.tag_len()
    }

    /// Copies the frame's first `out.len()` bytes (at most `len()`) into `out`.
    pub(super) fn copy_head(&self, out: &mut [u8]) {
        match self.tag {
            Some(tag) => {
                const AT: usize = vlan::TAG_OFFSET;
                out[..AT].copy_from_slice(&self.data[..AT]);
                out[AT..AT + tag.len()].copy_from_slice(&tag);
                let n = out.len();
                out[AT + tag.len()..].copy_from_slice(&self.data[AT..n - tag.len()]);
            }
            None => out.copy_from_slice(&self.data[..out.len()]),
        }
    }

    /// The frame's bytes from `from` (at least 16, past any reinserted tag) to `to`, straight from the ring.
    pub(super) fn tail(&self, from: usize, to: usize) -> &[u8] {
        &self.data[from - self.tag_len()..to - self.tag_len()]
    }
}
