//! [`Batch`]: up to [`BATCH_SIZE`] frames with inline storage, the unit that ports and pipeline stages work on.
//!
//! A batch holds frames, not copies: it owns them until they are drained into a transmit queue or freed. It lives
//! on the stack or inside a worker and never allocates.

use crate::buffer::Frame;
use arrayvec::ArrayVec;

/// The most frames a burst carries (as DPDK's and VPP's default vector sizes).
pub const BATCH_SIZE: usize = 32;

/// Up to [`BATCH_SIZE`] frames, stored inline.
#[derive(Debug, Default)]
pub struct Batch {
    frames: ArrayVec<Frame, BATCH_SIZE>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch { frames: ArrayVec::new() }
    }

    /// Number of frames held.
    #[inline]
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when no frame is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// How many more frames fit.
    #[inline]
    pub fn room(&self) -> usize {
        BATCH_SIZE - self.frames.len()
    }

    /// Adds a frame; gives it back if the batch is full.
    #[inline]
    pub fn push(&mut self, frame: Frame) -> Result<(), Frame> {
        self.frames.try_push(frame).map_err(|e| e.element())
    }

    /// Takes every frame out, in order.
    #[inline]
    pub fn drain(&mut self) -> arrayvec::Drain<'_, Frame, BATCH_SIZE> {
        self.frames.drain(..)
    }

    /// The frames, in order.
    #[inline]
    pub fn iter(&self) -> std::slice::Iter<'_, Frame> {
        self.frames.iter()
    }

    /// The frames, in order, writable.
    #[inline]
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Frame> {
        self.frames.iter_mut()
    }
}
