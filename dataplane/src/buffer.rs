//! Packet buffers: the preallocated [`BufPool`] and the [`Frame`] that borrows one of its buffers.
//!
//! Every buffer is allocated once, when the pool is made; the hot path only moves them between the pool, ports,
//! batches and transmit queues (moving a `Frame` moves a pointer and its metadata, never the bytes). A frame's
//! bytes start [`HEADROOM`] bytes into its buffer, so encapsulations (VLAN, VXLAN) can be prepended without a copy.
//!
//! # Two sizes
//! - **Small buffers** ([`BUF_SIZE`], 2 KiB) carry every frame up to [`MAX_FRAME_LEN`] (1920 bytes): all
//!   standard-MTU traffic. [`BufPool::alloc`] hands them out; this is the 64-byte-frame fast path.
//! - **Large buffers** ([`LARGE_BUF_SIZE`], 64 KiB + headroom) carry what a port hands over that is longer: GSO
//!   super-frames (TCP/UDP up to 64 KiB, see [`crate::offload`]) and jumbo frames (MTU up to 9000). A pool has
//!   a few of them ([`BufPool::with_large`]; per worker, like the small ones) and [`BufPool::alloc_large`] hands
//!   them out only to a port that has such a frame. When none is left, a port segments a super-frame into small
//!   buffers on receive instead (so nothing is dropped; counted by the port), and drops a jumbo frame it cannot
//!   hold (counted).
//!
//! Why contiguous large buffers rather than chains of small ones (VPP's choice): every stage reads headers and
//! checksums from one `&[u8]`, so a super-frame goes through the pipeline exactly like any frame, and the ports
//! hand one slice to `write`/`sendmmsg`; chains would put a scatter/gather walk into every stage that looks past
//! the headers (checksum completion, segmentation, pcap) and into each port. The price is memory: a large buffer
//! holds one super-frame whatever its length, so a pool keeps only a few dozen of them (a few MiB per worker),
//! enough for the super-frames of one batch per port in flight; past that the ports fall back as above.
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
use crate::offload::Offload;
use std::ptr::NonNull;

/// The longest frame a small buffer can carry (the contract's, which the configuration's MTU limit is derived
/// from).
pub use vswitch_api::frame::MAX_FRAME_LEN;
/// Bytes kept free in front of the frame for encapsulation.
pub const HEADROOM: usize = 128;
/// Size of one small buffer in bytes: the headroom plus the longest frame (2048).
pub const BUF_SIZE: usize = HEADROOM + MAX_FRAME_LEN;
/// The longest frame a large buffer carries: 64 KiB - 1 (a frame's length is 16 bits; an IPv4 super-frame from
/// Linux stays below it, since the kernel caps TCP's at `gso_max_size` - 1 - `MAX_TCP_HEADER`).
pub const MAX_LARGE_FRAME_LEN: usize = u16::MAX as usize;
/// Size of one large buffer in bytes.
pub const LARGE_BUF_SIZE: usize = HEADROOM + MAX_LARGE_FRAME_LEN;
/// Large buffers in a pool unless told otherwise: 64 (4.2 MiB).
pub const DEFAULT_LARGE_BUFFERS: usize = 64;

pub use crate::ids::{Nanos, NANOS_PER_SEC};

/// A small buffer, as the pool keeps it.
type SmallBuf = Box<[u8; BUF_SIZE]>;
/// A large buffer, as the pool keeps it.
type LargeBuf = Box<[u8; LARGE_BUF_SIZE]>;

// A frame's head and length are kept in `u16`s: every offset into a buffer must fit one.
const _: () = assert!(BUF_SIZE <= u16::MAX as usize);

/// `n`, an offset or length within one buffer (`n <= BUF_SIZE`, which every caller has checked or holds by
/// construction), as the `u16` a [`Frame`] keeps. Cannot truncate: a frame's length is at most
/// `MAX_LARGE_FRAME_LEN` (`u16::MAX`) and its head at most `HEADROOM`.
#[inline(always)]
#[allow(clippy::cast_possible_truncation)]
const fn offset(n: usize) -> u16 {
    debug_assert!(n <= u16::MAX as usize);
    n as u16
}

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

/// One frame in one pool buffer, with the port it came in on, the time it arrived and its offload metadata.
///
/// The buffer is held through a thin pointer, its size told by `large`, so that a frame is 32 bytes (two vector
/// moves) rather than the 40 a `Box<[u8]>` made it: frames move between batches and transmit queues several
/// times per packet, and the 64-byte path paid for the extra word on every move.
///
/// `repr(C)`, pointer and timestamp first, then the 2-byte fields: in Rust's own order a frame written into a
/// transmit queue was copied with 8-byte loads straddling fields just stored as 2 bytes (store forwarding fails;
/// `perf annotate` put a fifth of a two-worker routed run's `Switch::process` samples on the two instructions
/// after those loads). In this order the copy stays aligned to the fields; two workers routed 1.88–1.93× one
/// worker's rate instead of 1.74–1.75× (`vswitch-bench pipeline --scenario l3 --flows 10000`, interleaved).
#[repr(C)]
pub struct Frame {
    /// Owns the buffer: a [`SmallBuf`], or a [`LargeBuf`] when `large`, turned into a pointer by `Box::leak`; given back
    /// as that box by [`Frame::into_small`]/[`Frame::into_large`] or freed by `drop`. Nothing else points into it.
    buf: NonNull<u8>,
    /// When the frame was received; frames the switch emits carry the time of the frame that caused them.
    pub ts: Nanos,
    head: u16,
    len: u16,
    /// The port this frame was received on (for frames the switch made itself, the port that caused it).
    pub port: PortId,
    /// Which box `buf` came from ([`LARGE_BUF_SIZE`] bytes, else [`BUF_SIZE`]); never changes.
    large: bool,
    /// Partial checksum and segmentation metadata ([`Offload::NONE`] for an ordinary frame). Set by the port
    /// that received the frame; see [`crate::offload`] for what a stage that edits the frame must keep true.
    pub offload: Offload,
}

/// A frame did not fit into a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes does not fit in a buffer of {room} bytes")]
pub struct TooLong {
    /// Length of the frame that was refused.
    pub len: usize,
    /// The most the buffer could hold.
    pub room: usize,
}

// SAFETY: a `Frame` owns its buffer exclusively, as the `Box` it was made from did (no other pointer into the
// buffer exists), so moving it to another thread, or sharing `&Frame` (which only reads the bytes), is as sound as
// it is for that `Box<[u8; N]>`.
unsafe impl Send for Frame {}
// SAFETY: as for `Send`: `&Frame` gives only shared reads of the owned buffer.
unsafe impl Sync for Frame {}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("len", &self.len)
            .field("head", &self.head)
            .field("large", &self.large)
            .field("port", &self.port)
            .field("offload", &self.offload)
            .field("ts", &self.ts)
            .finish_non_exhaustive()
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        // SAFETY (both blocks): `buf` came from `Box::leak` of the box type `large` names and is still owned by
        // this frame (`into_small`/`into_large` forget the frame instead of dropping it), so it is rebuilt and
        // freed once.
        if self.large {
            // SAFETY: see above.
            drop(unsafe { LargeBuf::from_raw(self.buf.as_ptr().cast::<[u8; LARGE_BUF_SIZE]>()) });
        } else {
            // SAFETY: see above.
            drop(unsafe { SmallBuf::from_raw(self.buf.as_ptr().cast::<[u8; BUF_SIZE]>()) });
        }
    }
}

// Casts of offsets and lengths to `u16`: every one is bounded by the buffer's capacity, checked by the
// method that does it (`load`, `set_len`, `push_front`, `pull_front`) before the cast.
#[allow(clippy::cast_possible_truncation)]
impl Frame {
    fn new_small(buf: SmallBuf) -> Self {
        let buf = NonNull::from(Box::leak(buf)).cast::<u8>();
        Frame { buf, head: HEADROOM as u16, len: 0, port: 0, large: false, offload: Offload::NONE, ts: 0 }
    }

    fn new_large(buf: LargeBuf) -> Self {
        let buf = NonNull::from(Box::leak(buf)).cast::<u8>();
        Frame { buf, head: HEADROOM as u16, len: 0, port: 0, large: true, offload: Offload::NONE, ts: 0 }
    }

    /// The buffer back as the box it was made from (a small frame's; see [`Frame::is_large`]).
    fn into_small(self) -> SmallBuf {
        debug_assert!(!self.large);
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `buf` came from `Box::leak` of a `SmallBuf` (the caller checked `!large`), and the frame is
        // forgotten, so ownership passes to the box exactly once.
        unsafe { SmallBuf::from_raw(me.buf.as_ptr().cast::<[u8; BUF_SIZE]>()) }
    }

    /// As [`Frame::into_small`], for a large frame.
    fn into_large(self) -> LargeBuf {
        debug_assert!(self.large);
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: as in `into_small`, for a `LargeBuf` (the caller checked `large`).
        unsafe { LargeBuf::from_raw(me.buf.as_ptr().cast::<[u8; LARGE_BUF_SIZE]>()) }
    }

    /// The size of the whole buffer (headroom included).
    #[inline(always)]
    fn buf_len(&self) -> usize {
        if self.large {
            LARGE_BUF_SIZE
        } else {
            BUF_SIZE
        }
    }

    /// The whole buffer, headroom included.
    #[inline(always)]
    fn buf(&self) -> &[u8] {
        // SAFETY: `buf` points to the start of the `buf_len()` bytes this frame owns (see the field), initialised
        // (the pool zeroes them when made), and borrowed with `self`.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr(), self.buf_len()) }
    }

    /// The whole buffer, writable.
    #[inline(always)]
    fn buf_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `buf`; `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_ptr(), self.buf_len()) }
    }

    /// The frame's bytes.
    ///
    /// Unchecked slicing: every stage calls this (and [`Frame::data_mut`]) several times per frame, and the
    /// two bounds checks of `&buf[head..head + len]` were ~25 instructions per routed frame (callgrind, NAT
    /// bench). The invariant that makes it sound, `head + len <= buf.len()`, is kept by every method that
    /// changes `head`, `len` or `buf` (all in this file): `new` (len 0), `load` and `set_len` (checked),
    /// `room_mut` (len 0), `truncate` (shorter), `push_front`/`pull_front` (the sum unchanged), `clone_frame`
    /// (checked slicing of the new buffer first).
    #[inline]
    pub fn data(&self) -> &[u8] {
        let (head, len) = (self.head as usize, self.len as usize);
        debug_assert!(head + len <= self.buf_len());
        // SAFETY: `head + len <= self.buf_len()` is this type's invariant (see above), so the range is in
        // bounds, and `head <= head + len` (no overflow: both are u16 widened to usize).
        unsafe { self.buf().get_unchecked(head..head + len) }
    }

    /// The frame's bytes, writable (unchecked, as [`Frame::data`]).
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (head, len) = (self.head as usize, self.len as usize);
        debug_assert!(head + len <= self.buf_len());
        // SAFETY: as in `data`: the range is within the buffer by the type's invariant.
        unsafe { self.buf_mut().get_unchecked_mut(head..head + len) }
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

    /// True when the frame sits in a large buffer.
    #[inline]
    pub fn is_large(&self) -> bool {
        self.large
    }

    /// The longest frame this frame's buffer can hold after the headroom.
    #[inline]
    pub fn capacity(&self) -> usize {
        (self.buf_len() - HEADROOM).min(MAX_LARGE_FRAME_LEN)
    }

    /// Replaces the frame's contents with `bytes`, placed after the headroom, as an ordinary frame (no offload
    /// metadata).
    #[inline]
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), TooLong> {
        if bytes.len() > self.capacity() {
            return Err(TooLong { len: bytes.len(), room: self.capacity() });
        }
        self.head = HEADROOM as u16;
        self.len = bytes.len() as u16;
        self.offload = Offload::NONE;
        self.buf_mut()[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    /// The whole space after the headroom, for a port that receives straight into the buffer; follow with
    /// [`Frame::set_len`].
    #[inline]
    pub fn room_mut(&mut self) -> &mut [u8] {
        // The frame is empty until `set_len` (keeps `head + len <= buf.len()`, which `data` relies on).
        self.head = HEADROOM as u16;
        self.len = 0;
        let end = HEADROOM + self.capacity();
        &mut self.buf_mut()[HEADROOM..end]
    }

    /// Sets the frame's length after writing into [`Frame::room_mut`].
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<(), TooLong> {
        if len > self.capacity() || self.head as usize + len > self.buf_len() {
            return Err(TooLong { len, room: self.capacity() });
        }
        self.len = offset(len);
        Ok(())
    }

    /// Shortens the frame to `len` bytes (no-op if it is already shorter).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len as usize {
            self.len = offset(len);
        }
    }

    /// Grows the frame at the front by `n` bytes taken from the headroom (moving the offload metadata's offsets
    /// with it); returns false (and changes nothing) if the headroom is too small.
    #[inline]
    pub fn push_front(&mut self, n: usize) -> bool {
        if n > self.head as usize || self.len as usize + n > MAX_LARGE_FRAME_LEN {
            return false;
        }
        self.head -= n as u16;
        self.len += n as u16;
        if !self.offload.is_none() {
            self.offload = self.offload.shifted(n as isize);
        }
        true
    }

    /// Removes `n` bytes from the front (moving the offload metadata's offsets with it); returns false (and
    /// changes nothing) if the frame is shorter.
    #[inline]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len as usize {
            return false;
        }
        self.head += n as u16;
        self.len -= n as u16;
        if !self.offload.is_none() {
            self.offload = self.offload.shifted(-(n as isize));
        }
        true
    }
}

/// A fixed set of buffers, allocated once: [`BufPool::capacity`] small ones and [`BufPool::large_capacity`]
/// large ones.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<SmallBuf>,
    capacity: usize,
    large: Vec<LargeBuf>,
    large_capacity: usize,
}

impl BufPool {
    /// Allocates `capacity` small buffers up front, and no large ones.
    pub fn new(capacity: usize) -> Self {
        BufPool::with_large(capacity, 0)
    }

    /// Allocates `capacity` small and `large` large buffers up front (a large buffer's pages are only touched
    /// when a frame first uses it).
    pub fn with_large(capacity: usize, large: usize) -> Self {
        let free = (0..capacity).map(|_| new_buf()).collect();
        let large_bufs = (0..large).map(|_| new_buf()).collect();
        BufPool { free, capacity, large: large_bufs, large_capacity: large }
    }

    /// Takes a small buffer as an empty frame, or `None` when every small buffer is in use.
    #[inline]
    pub fn alloc(&mut self) -> Option<Frame> {
        self.free.pop().map(Frame::new_small)
    }

    /// Takes a large buffer as an empty frame, or `None` when every large buffer is in use (or the pool has
    /// none): the caller then falls back (see the module documentation).
    #[inline]
    pub fn alloc_large(&mut self) -> Option<Frame> {
        self.large.pop().map(Frame::new_large)
    }

    /// Takes a buffer that holds `len` bytes: a small one if it fits, else a large one.
    #[inline]
    pub fn alloc_for(&mut self, len: usize) -> Option<Frame> {
        if len <= MAX_FRAME_LEN {
            self.alloc()
        } else if len <= MAX_LARGE_FRAME_LEN {
            self.alloc_large()
        } else {
            None
        }
    }

    /// Takes a buffer as large as `src`'s needs and copies `src`'s bytes, metadata, port and timestamp into it.
    #[inline]
    pub fn clone_frame(&mut self, src: &Frame) -> Option<Frame> {
        let (h, l) = (src.head as usize, src.len as usize);
        let mut f = if h + l <= BUF_SIZE { self.alloc()? } else { self.alloc_large()? };
        f.buf_mut()[h..h + l].copy_from_slice(&src.buf()[h..h + l]);
        f.head = src.head;
        f.len = src.len;
        f.port = src.port;
        f.offload = src.offload;
        f.ts = src.ts;
        Some(f)
    }

    /// Gives a frame's buffer back (to the list of its size).
    #[inline]
    pub fn free(&mut self, frame: Frame) {
        if !frame.large {
            if self.free.len() < self.capacity {
                self.free.push(frame.into_small());
            }
        } else if self.large.len() < self.large_capacity {
            self.large.push(frame.into_large());
        }
    }

    /// Small buffers not in use.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Small buffers the pool was made with.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Large buffers not in use.
    pub fn large_available(&self) -> usize {
        self.large.len()
    }

    /// Large buffers the pool was made with.
    pub fn large_capacity(&self) -> usize {
        self.large_capacity
    }

    /// Allocates large buffers until the pool holds its capacity again (a worker topping up its pool, off the
    /// per-frame path); returns how many it made.
    pub fn top_up_large(&mut self) -> usize {
        let n = self.large_capacity - self.large.len().min(self.large_capacity);
        self.large.extend((0..n).map(|_| new_buf()));
        n
    }
}

/// A zeroed buffer of `N` bytes (made on the heap: a large one would not fit the stack).
fn new_buf<const N: usize>() -> Box<[u8; N]> {
    vec![0u8; N].into_boxed_slice().try_into().expect("a boxed slice of N bytes is a boxed [u8; N]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_four_words() {
        // Two 16-byte moves per frame move; a test so that a field added later is a decision, not an accident.
        assert_eq!(std::mem::size_of::<Frame>(), 32);
    }

    #[test]
    fn dropped_and_sent_frames_free_their_buffers_once() {
        // Frames dropped instead of freed (allowed: the pool only loses a slot), and frames moved to another
        // thread and freed into another pool, small and large.
        let mut pool = BufPool::with_large(3, 2);
        let mut small = pool.alloc().unwrap();
        small.load(&[7; 60]).unwrap();
        let big = pool.alloc_large().unwrap();
        drop(small);
        drop(big);
        let (s, l) = (pool.alloc().unwrap(), pool.alloc_large().unwrap());
        let mut other = std::thread::spawn(move || {
            let mut other = BufPool::with_large(2, 2);
            other.free(s);
            other.free(l);
            other
        })
        .join()
        .unwrap();
        assert_eq!((pool.available(), pool.large_available()), (1, 0));
        assert!(other.alloc().is_some() && other.alloc_large().is_some());
    }

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
        assert_eq!(f.load(&[0; MAX_FRAME_LEN + 1]), Err(TooLong { len: MAX_FRAME_LEN + 1, room: MAX_FRAME_LEN }));
        assert!(f.load(&[0; MAX_FRAME_LEN]).is_ok());
        assert_eq!(f.set_len(MAX_FRAME_LEN + 1), Err(TooLong { len: MAX_FRAME_LEN + 1, room: MAX_FRAME_LEN }));
    }

    #[test]
    fn large_buffers_carry_super_frames_and_go_back_to_their_own_list() {
        let mut pool = BufPool::with_large(2, 1);
        assert_eq!((pool.available(), pool.large_available()), (2, 1));
        let mut big = pool.alloc_large().unwrap();
        assert!(big.is_large());
        assert_eq!(big.capacity(), MAX_LARGE_FRAME_LEN);
        assert!(pool.alloc_large().is_none(), "one large buffer only");
        assert!(pool.alloc_for(MAX_FRAME_LEN + 1).is_none(), "no large buffer left");
        assert!(big.load(&vec![0; MAX_LARGE_FRAME_LEN + 1]).is_err());
        let payload: Vec<u8> = (0..60_000u32).map(|i| i as u8).collect();
        big.offload = Offload::partial(34, 16);
        big.load(&payload).unwrap();
        assert_eq!(big.offload, Offload::NONE, "load makes an ordinary frame");
        big.offload = Offload::partial(34, 16);
        assert!(pool.clone_frame(&big).is_none(), "a clone of a long frame needs a large buffer: none left");
        let small = pool.alloc_for(100).unwrap();
        assert!(!small.is_large());
        pool.free(small);
        pool.free(big);
        assert_eq!((pool.available(), pool.large_available()), (2, 1), "each buffer back to its own list");

        let mut big = pool.alloc_large().unwrap();
        big.load(&payload).unwrap();
        let mut other = BufPool::with_large(0, 1);
        let copy = other.clone_frame(&big).unwrap();
        assert!(copy.is_large());
        assert_eq!(copy.data(), big.data());
        // Freeing more than the capacity drops the extra buffer.
        pool.free(big);
        pool.free(copy);
        assert_eq!(pool.large_available(), 1);
        // Topping up refills what was lost.
        drop(pool.alloc_large().unwrap());
        assert_eq!(pool.top_up_large(), 1);
        assert_eq!(pool.large_available(), 1);
    }

    #[test]
    fn headroom_moves_carry_the_checksum_offsets() {
        let mut pool = BufPool::new(1);
        let mut f = pool.alloc().unwrap();
        f.load(&[0; 100]).unwrap();
        f.offload = Offload::partial(34, 16);
        assert!(f.push_front(4));
        assert_eq!(f.offload.partial_csum(), Some((38, 16)));
        assert!(f.pull_front(8));
        assert_eq!(f.offload.partial_csum(), Some((30, 16)));
        let mut g = pool_clone(&f);
        assert_eq!(g.offload, f.offload, "clones keep the metadata");
        g.offload = Offload::NONE;
    }

    fn pool_clone(f: &Frame) -> Frame {
        BufPool::new(1).clone_frame(f).unwrap()
    }
}
