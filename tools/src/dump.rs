//! `vswitch-pcap dump`: one line per frame — its number, its timestamp and [`describe`]'s decoding.
//!
//! ```text
//!    1 0.000000 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP who-has 10.0.0.2 tell 10.0.0.1, len 60
//!    2 0.001000 02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ttl 64 UDP 1000 > 2000 payload 18, len 60
//! ```
//!
//! Frames are numbered from 1, as Wireshark numbers them. Timestamps are absolute capture times in seconds, as
//! stored in the file (so a generated capture shows the spec's `at` times, and a replay's output the times of
//! the input frames that caused each frame), with six decimals, or nine when the time is not a whole
//! microsecond (nanosecond captures).

use dataplane::port::pcap::{read_capture, CaptureError, CapturedFrame};
use dataplane::wire::decode::describe;
use std::io::Write;
use std::path::Path;

/// `secs.micros`, or `secs.nanos` when `ts_ns` is not a whole microsecond.
pub fn format_ts(ts_ns: u64) -> String {
    let secs = ts_ns / 1_000_000_000;
    let nanos = ts_ns % 1_000_000_000;
    if nanos.is_multiple_of(1_000) {
        format!("{secs}.{:06}", nanos / 1_000)
    } else {
        format!("{secs}.{nanos:09}")
    }
}

/// The dump line of the frame numbered `number` (from 1).
pub fn line(number: usize, frame: &CapturedFrame) -> String {
    format!("{number:>4} {} {}", format_ts(frame.ts), describe(&frame.data))
}

/// The dump lines of `frames`, numbered from 1.
pub fn lines(frames: &[CapturedFrame]) -> Vec<String> {
    frames.iter().enumerate().map(|(i, f)| line(i + 1, f)).collect()
}

/// `vswitch-pcap dump` failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The capture cannot be read.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The output cannot be written.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Writes the dump of the capture at `path` to `out` and returns the number of frames.
pub fn dump_file(path: &Path, out: &mut impl Write) -> Result<usize, DumpError> {
    let capture = read_capture(path)?;
    for l in lines(&capture.frames) {
        writeln!(out, "{l}")?;
    }
    Ok(capture.frames.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::wire::builder;
    use dataplane::wire::MacAddr;
    use std::net::Ipv4Addr;

    #[test]
    fn timestamps() {
        assert_eq!(format_ts(0), "0.000000");
        assert_eq!(format_ts(1_000_500_000), "1.000500");
        assert_eq!(format_ts(1_000_000_001), "1.000000001");
    }

    #[test]
    fn lines_are_numbered_from_one() {
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        let frames = vec![
            CapturedFrame {
                ts: 0,
                data: builder::arp_request(a, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)),
            },
            CapturedFrame { ts: 1_500_000, data: vec![1, 2, 3] },
        ];
        assert_eq!(
            lines(&frames),
            [
                "   1 0.000000 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP who-has 10.0.0.2 tell 10.0.0.1, len 60",
                "   2 0.001500 runt 3 bytes",
            ]
        );
    }
}
