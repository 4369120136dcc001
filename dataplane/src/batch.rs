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

    /// Takes every frame out, in order, handing each to `f` with its index; the batch is left empty.
    ///
    /// What the pipeline's per-frame dispatch uses instead of [`Batch::drain`]: `drain` yields `Option<Frame>`,
    /// whose `None` check made the compiler copy each frame to the stack as an 8-byte pointer plus two 16-byte
    /// halves at other offsets than the 16-byte loads that move it on, a store the CPU cannot forward to those
    /// loads (a stall of about a sixth of the 64-byte path's time, criterion `l2`). Here each frame is read
    /// whole, once.
    #[inline(always)]
    pub fn drain_each(&mut self, mut f: impl FnMut(usize, Frame)) {
        let n = self.frames.len();
        // SAFETY: the batch forgets its frames first (`set_len` leaves the storage alone), so from here each of
        // the `n` initialised slots is owned by the loop below; if `f` panics, the frames not yet read leak (their
        // buffers do not return to the pool) but none is dropped twice.
        unsafe { self.frames.set_len(0) };
        let base = self.frames.as_ptr();
        for i in 0..n {
            // SAFETY: slot `i < n` was initialised and is read exactly once; the storage stays put because `f`
            // cannot reach this batch, borrowed mutably for the whole call.
            let frame = unsafe { std::ptr::read(base.wrapping_add(i)) };
            f(i, frame);
        }
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

/// Appends `frame` to `queue` when it has a free slot already allocated (never reallocates); gives the frame back
/// when it has none. For the per-frame transmit path: `Vec::push`, with its growth path, is not inlined there.
#[inline(always)]
pub fn push_within_capacity(queue: &mut Vec<Frame>, frame: Frame) -> Result<(), Frame> {
    let len = queue.len();
    if len == queue.capacity() {
        return Err(frame);
    }
    // `len < capacity`: slot `len` lies inside the vector's allocation and holds no element.
    let slot = queue.as_mut_ptr().wrapping_add(len);
    // SAFETY: `slot` is in bounds of the allocation (above), aligned (an element slot of the vector) and holds no
    // element, so writing moves the frame in without dropping anything.
    unsafe { slot.write(frame) };
    // SAFETY: slot `len` was initialised just above; the length grows by one to cover exactly it.
    unsafe { queue.set_len(len + 1) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::BufPool;

    #[test]
    fn push_within_capacity_fills_the_spare_slots_only() {
        let mut pool = BufPool::new(4);
        let mut q: Vec<Frame> = Vec::with_capacity(2);
        let cap = q.capacity();
        for i in 0..cap {
            let mut f = pool.alloc().expect("pool has room");
            f.load(&[i as u8]).expect("one byte fits");
            assert!(push_within_capacity(&mut q, f).is_ok());
        }
        let extra = pool.alloc().expect("pool has room");
        let back = push_within_capacity(&mut q, extra).expect_err("no spare slot: the frame comes back");
        assert_eq!(q.capacity(), cap, "never reallocates");
        let got: Vec<u8> = q.iter().map(|f| f.data()[0]).collect();
        assert_eq!(got, (0..cap as u8).collect::<Vec<_>>());
        pool.free(back);
        for f in q.drain(..) {
            pool.free(f);
        }
        assert_eq!(pool.available(), 4);
    }

    /// A batch of `n` frames from `pool`, frame `i` holding the single byte `i`.
    fn numbered(pool: &mut BufPool, n: u8) -> Batch {
        let mut batch = Batch::new();
        for i in 0..n {
            let mut f = pool.alloc().expect("pool has room");
            f.load(&[i]).expect("one byte fits");
            batch.push(f).expect("batch has room");
        }
        batch
    }

    #[test]
    fn drain_each_hands_over_every_frame_once_in_order_and_empties_the_batch() {
        let mut pool = BufPool::new(64);
        let mut batch = numbered(&mut pool, 32);
        let mut seen = Vec::new();
        batch.drain_each(|i, f| {
            seen.push((i, f.data()[0]));
            pool.free(f);
        });
        assert!(batch.is_empty());
        assert_eq!(seen, (0..32).map(|i| (usize::from(i), i)).collect::<Vec<_>>());
        assert_eq!(pool.available(), 64, "every buffer came back exactly once");
        // The batch is usable again afterwards.
        let mut again = numbered(&mut pool, 3);
        let mut n = 0;
        again.drain_each(|_, f| {
            n += 1;
            pool.free(f);
        });
        assert_eq!((n, pool.available()), (3, 64));
    }

    #[test]
    fn a_panic_while_draining_leaks_the_rest_but_drops_nothing_twice() {
        let mut pool = BufPool::new(8);
        let mut batch = numbered(&mut pool, 4);
        let taken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batch.drain_each(|i, f| {
                if i == 2 {
                    panic!("stage failed");
                }
                drop(f);
            });
        }));
        assert!(taken.is_err());
        assert!(batch.is_empty(), "the batch no longer claims the frames it handed out");
    }
}
