//! Receive and transmit helpers shared by the live tests of the port back-ends: drive any [`Port`] the way a
//! worker would, one burst at a time.
#![allow(dead_code)]

use dataplane::batch::Batch;
use dataplane::buffer::{BufPool, Frame, Nanos};
use dataplane::port::Port;
use std::time::{Duration, Instant};

/// The time the helpers stamp on received frames (checked, so a port that ignores `now` is caught).
pub const NOW: Nanos = 5;

/// Receives for up to `timeout`, passing each frame's bytes to `keep` (which returns true to stop early);
/// checks every frame is stamped with the time passed in, and gives every buffer back.
pub fn rx_until(port: &mut impl Port, pool: &mut BufPool, timeout: Duration, mut keep: impl FnMut(&[u8]) -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let mut batch = Batch::new();
        port.rx_burst(NOW, pool, &mut batch).expect("rx");
        let empty = batch.is_empty();
        let mut done = false;
        for f in batch.drain() {
            assert_eq!(f.ts, NOW, "stamped with now");
            done |= keep(f.data());
            pool.free(f);
        }
        if done {
            return;
        }
        if empty {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Sends `frames` in one `tx_burst`, which must take every one of them.
pub fn send(port: &mut impl Port, pool: &mut BufPool, frames: &[Vec<u8>]) {
    let mut out: Vec<Frame> = frames
        .iter()
        .map(|b| {
            let mut f = pool.alloc().expect("buffer");
            f.load(b).unwrap();
            f
        })
        .collect();
    port.tx_burst(pool, &mut out).expect("tx");
    assert!(out.is_empty());
}

/// As [`rx_until`], passing each whole frame (with its offload metadata) to `keep`.
pub fn rx_frames_until(
    port: &mut impl Port,
    pool: &mut BufPool,
    timeout: Duration,
    mut keep: impl FnMut(&Frame) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let mut batch = Batch::new();
        port.rx_burst(NOW, pool, &mut batch).expect("rx");
        let empty = batch.is_empty();
        let mut done = false;
        for f in batch.drain() {
            assert_eq!(f.ts, NOW, "stamped with now");
            done |= keep(&f);
            pool.free(f);
        }
        if done {
            return;
        }
        if empty {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// The bytes of an ordinary or partial-checksum frame as a link without offloads would carry them: the partial
/// checksum its metadata points at completed.
pub fn completed(f: &Frame) -> Vec<u8> {
    let mut d = f.data().to_vec();
    assert!(!f.offload.is_gso(), "a super-frame has no single wire form");
    if let Some((start, offset)) = f.offload.partial_csum() {
        assert!(dataplane::port::gso::complete_checksum(&mut d, usize::from(start), usize::from(offset)));
    }
    d
}
