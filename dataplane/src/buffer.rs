//! Packet buffers: the preallocated [`BufPool`] and the [`Frame`] that borrows one of its buffers.
//!
//! Every buffer is allocated once, when the pool is made; the hot path only moves them between the pool, ports,
//! batches and transmit queues (moving a `Frame` moves a pointer, never the bytes). A frame's bytes start
//! [`HEADROOM`] bytes into its buffer, so encapsulations (VLAN, VXLAN) can be prepended without a copy.
//!
//! Ownership: a `Frame` owns its buffer. Whoever holds a frame must either pass it on (to a batch, a transmit
//! queue, a port) or give it back with [`BufPool::free`]. Dropping a `Frame` instead only loses a pool slot
//! (the pool then reports fewer buffers in [`BufPool::available`]); it is never unsafe.
//!
//! Threads: a pool belongs to one worker thread; nothing here is shared. A frame may move to another worker
//! (frames held by the switch for ARP are released by whichever worker runs it next) and be freed into that
//! worker's pool: a pool never grows past its capacity ([`BufPool::free`] drops the extra buffer), and the
//! workers top up pools that lost buffers (`crate::worker`).

use crate::ids::PortId;

/// The longest frame a buffer can carry (the contract's, which the configuration's MTU limit is derived from).
pub use vswitch_api::frame::MAX_FRAME_LEN;
/// Bytes kept free in front of the frame for encapsulation.
pub const HEADROOM: usize = 128;
/// Size of one buffer in bytes: the headroom plus the longest frame (2048).
pub const BUF_SIZE: usize = HEADROOM + MAX_FRAME_LEN;

pub use crate::ids::{Nanos, NANOS_PER_SEC};

type Buf = Box<[u8; BUF_SIZE]>;

/// Asks the CPU to start loading the cache line holding `x` (a hint: it never faults and changes nothing),
/// so a batch can start the memory accesses of all its frames before it handles the first (tables do this
/// for the lines a lookup will read). A no-op where there is no prefetch instruction.
#[inline(always)]
pub fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache; it does not dereference the pointer in the language's sense
    // and cannot fault (here it is a valid reference anyway). SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((x as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// One frame in one pool buffer, with the port it came in on and the time it arrived.
#[derive(Debug)]
pub struct Frame {
    buf: Buf,
    head: u16,
    len: u16,
    /// The port this frame was received on (for frames the switch made itself, the port that caused it).
    pub port: PortId,
    /// When the frame was received; frames the switch emits carry the time of the frame that caused them.
    pub ts: Nanos,
}

/// A frame did not fit into a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes does not fit in a {MAX_FRAME_LEN}-byte buffer")]
pub struct TooLong {
    /// Length of the frame that was refused.
    pub len: usize,
}

impl Frame {
    fn new(buf: Buf) -> Self {
        Frame { buf, head: HEADROOM as u16, len: 0, port: 0, ts: 0 }
    }

    /// The frame's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head as usize..self.head as usize + self.len as usize]
    }

    /// The frame's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head as usize..self.head as usize + self.len as usize]
    }

    /// Length of the frame in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True for a frame of zero bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Replaces the frame's contents with `bytes`, placed after the headroom.
    #[inline]
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), TooLong> {
        if bytes.len() > MAX_FRAME_LEN {
            return Err(TooLong { len: bytes.len() });
        }
        self.head = HEADROOM as u16;
        self.len = bytes.len() as u16;
        self.buf[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    /// The whole space after the headroom, for a port that receives straight into the buffer; follow with
    /// [`Frame::set_len`].
    #[inline]
    pub fn room_mut(&mut self) -> &mut [u8] {
        self.head = HEADROOM as u16;
        &mut self.buf[HEADROOM..]
    }

    /// Sets the frame's length after writing into [`Frame::room_mut`].
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<(), TooLong> {
        if self.head as usize + len > BUF_SIZE {
            return Err(TooLong { len });
        }
        self.len = len as u16;
        Ok(())
    }

    /// Shortens the frame to `len` bytes (no-op if it is already shorter).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len as usize {
            self.len = len as u16;
        }
    }

    /// Grows the frame at the front by `n` bytes taken from the headroom; returns false (and changes nothing) if
    /// the headroom is too small.
    #[inline]
    pub fn push_front(&mut self, n: usize) -> bool {
        if n > self.head as usize {
            return false;
        }
        self.head -= n as u16;
        self.len += n as u16;
        true
    }

    /// Removes `n` bytes from the front; returns false (and changes nothing) if the frame is shorter.
    #[inline]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len as usize {
            return false;
        }
        self.head += n as u16;
        self.len -= n as u16;
        true
    }
}

/// A fixed set of buffers, allocated once.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<Buf>,
    capacity: usize,
}

impl BufPool {
    /// Allocates `capacity` buffers up front.
    pub fn new(capacity: usize) -> Self {
        let free = (0..capacity).map(|_| new_buf()).collect();
        BufPool { free, capacity }
    }

    /// Takes a buffer as an empty frame, or `None` when every buffer is in use.
    #[inline]
    pub fn alloc(&mut self) -> Option<Frame> {
        self.free.pop().map(Frame::new)
    }

    /// Takes a buffer and copies `src`'s bytes, port and timestamp into it.
    #[inline]
    pub fn clone_frame(&mut self, src: &Frame) -> Option<Frame> {
        let mut f = self.alloc()?;
        let (h, l) = (src.head as usize, src.len as usize);
        f.buf[h..h + l].copy_from_slice(&src.buf[h..h + l]);
        f.head = src.head;
        f.len = src.len;
        f.port = src.port;
        f.ts = src.ts;
        Some(f)
    }

    /// Gives a frame's buffer back.
    #[inline]
    pub fn free(&mut self, frame: Frame) {
        if self.free.len() < self.capacity {
            self.free.push(frame.buf);
        }
    }

    /// Buffers not in use.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Buffers the pool was made with.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

fn new_buf() -> Buf {
    vec![0u8; BUF_SIZE].into_boxed_slice().try_into().expect("vector has BUF_SIZE bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_load_free_round_trip() {
        let mut pool = BufPool::new(2);
        let mut f = pool.alloc().unwrap();
        f.load(&[1, 2, 3]).unwrap();
        assert_eq!(f.data(), &[1, 2, 3]);
        assert_eq!(pool.available(), 1);
        let g = pool.clone_frame(&f).unwrap();
        assert_eq!(g.data(), f.data());
        assert!(pool.alloc().is_none(), "pool of two is exhausted");
        pool.free(f);
        pool.free(g);
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn headroom_push_and_pull() {
        let mut pool = BufPool::new(1);
        let mut f = pool.alloc().unwrap();
        f.load(&[9; 10]).unwrap();
        assert!(f.push_front(4));
        assert_eq!(f.len(), 14);
        assert!(f.pull_front(4));
        assert_eq!(f.data(), &[9; 10]);
        assert!(!f.push_front(HEADROOM + 1));
        assert!(!f.pull_front(11));
    }

    #[test]
    fn oversize_load_is_refused() {
        let mut pool = BufPool::new(1);
        let mut f = pool.alloc().unwrap();
        assert_eq!(f.load(&[0; MAX_FRAME_LEN + 1]), Err(TooLong { len: MAX_FRAME_LEN + 1 }));
        assert!(f.load(&[0; MAX_FRAME_LEN]).is_ok());
    }
}
