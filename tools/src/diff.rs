//! `vswitch-pcap diff` and the pcap regression harness's comparison: [`compare`] finds the first frame where two
//! captures differ (bytes, then timestamp, then a frame missing on one side), and [`Difference`]'s `Display`
//! shows it for humans — both sides decoded, the offset of the first differing byte, the bytes around it and
//! the frame counts:
//!
//! ```text
//! frame #2 differs at byte 22 (A: 60 bytes, B: 60 bytes)
//!   A: 0.001000 02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ttl 64 UDP 1000 > 2000 payload 18, len 60
//!   B: 0.001000 02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ttl 63 bad ip cksum UDP ..., len 60
//!   A[16..32]: 00 2e 00 00 00 00 40 11 66 bc 0a 00 00 01 0a 00
//!   B[16..32]: 00 2e 00 00 00 00 3f 11 66 bc 0a 00 00 01 0a 00
//!                                ^^
//! A has 3 frames, B has 3 frames
//! ```
//!
//! Frame numbers in messages count from 1 (as `vswitch-pcap dump` and Wireshark do); [`Difference::index`] is the
//! 0-based position in the slices.

use crate::dump::format_ts;
use dataplane::port::pcap::{read_capture, CaptureError, CapturedFrame};
use dataplane::wire::decode::describe;
use std::fmt;
use std::path::Path;

/// How the frames at [`Difference::index`] differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// The bytes differ, first at `offset` (equal to the shorter length when one frame is a prefix of the other).
    Bytes {
        /// 0-based offset of the first differing byte.
        offset: usize,
    },
    /// Same bytes, different timestamps.
    Timestamp,
    /// A has a frame here and B has ended.
    OnlyInA,
    /// B has a frame here and A has ended.
    OnlyInB,
}

/// The first difference between captures A and B.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// 0-based index of the first frame that differs.
    pub index: usize,
    /// How it differs.
    pub mismatch: Mismatch,
    /// A's frame at `index`, if A has one.
    pub a: Option<CapturedFrame>,
    /// B's frame at `index`, if B has one.
    pub b: Option<CapturedFrame>,
    /// Number of frames in A.
    pub a_count: usize,
    /// Number of frames in B.
    pub b_count: usize,
}

/// The first difference between `a` and `b`, or `None` if they hold the same frames with the same timestamps.
pub fn compare(a: &[CapturedFrame], b: &[CapturedFrame]) -> Option<Difference> {
    let diff = |index: usize, mismatch| Difference {
        index,
        mismatch,
        a: a.get(index).cloned(),
        b: b.get(index).cloned(),
        a_count: a.len(),
        b_count: b.len(),
    };
    for (index, (fa, fb)) in a.iter().zip(b).enumerate() {
        if fa.data != fb.data {
            let offset = fa.data.iter().zip(&fb.data).take_while(|(x, y)| x == y).count();
            return Some(diff(index, Mismatch::Bytes { offset }));
        }
        if fa.ts != fb.ts {
            return Some(diff(index, Mismatch::Timestamp));
        }
    }
    match a.len().cmp(&b.len()) {
        std::cmp::Ordering::Greater => Some(diff(b.len(), Mismatch::OnlyInA)),
        std::cmp::Ordering::Less => Some(diff(a.len(), Mismatch::OnlyInB)),
        std::cmp::Ordering::Equal => None,
    }
}

/// Reads both captures and [`compare`]s them.
pub fn compare_files(a: &Path, b: &Path) -> Result<Option<Difference>, CaptureError> {
    let a = read_capture(a)?;
    let b = read_capture(b)?;
    Ok(compare(&a.frames, &b.frames))
}

/// Bytes shown around the first differing byte.
const CONTEXT: usize = 16;

fn hex_row(data: &[u8], start: usize) -> String {
    let end = (start + CONTEXT).min(data.len());
    let bytes = data.get(start..end).unwrap_or_default();
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

impl Difference {
    /// The report with the two sides named `a` and `b` instead of `A` and `B` (e.g. "expected" and "actual").
    pub fn labelled<'a>(&'a self, a: &'a str, b: &'a str) -> Labelled<'a> {
        Labelled { diff: self, a, b }
    }
}

/// A [`Difference`] report with named sides; see [`Difference::labelled`].
#[derive(Debug, Clone, Copy)]
pub struct Labelled<'a> {
    diff: &'a Difference,
    a: &'a str,
    b: &'a str,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.labelled("A", "B"), f)
    }
}

impl fmt::Display for Labelled<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (d, a_name, b_name) = (self.diff, self.a, self.b);
        let number = d.index + 1;
        let width = a_name.len().max(b_name.len());
        let side = |name: &str, frame: &Option<CapturedFrame>| match frame {
            Some(fr) => format!("  {name:<width$}: {} {}", format_ts(fr.ts), describe(&fr.data)),
            None => format!("  {name:<width$}: (no frame #{number})"),
        };
        let len = |frame: &Option<CapturedFrame>| frame.as_ref().map_or(0, |fr| fr.data.len());
        match d.mismatch {
            Mismatch::Bytes { offset } => writeln!(
                f,
                "frame #{number} differs at byte {offset} ({a_name}: {} bytes, {b_name}: {} bytes)",
                len(&d.a),
                len(&d.b)
            )?,
            Mismatch::Timestamp => writeln!(f, "frame #{number} has the same bytes but a different timestamp")?,
            Mismatch::OnlyInA => writeln!(f, "frame #{number} is only in {a_name}")?,
            Mismatch::OnlyInB => writeln!(f, "frame #{number} is only in {b_name}")?,
        }
        writeln!(f, "{}", side(a_name, &d.a))?;
        writeln!(f, "{}", side(b_name, &d.b))?;
        if let (Mismatch::Bytes { offset }, Some(a), Some(b)) = (d.mismatch, &d.a, &d.b) {
            let start = offset / 8 * 8;
            let range = format!("[{start}..{}]", start + CONTEXT);
            let label = |name: &str| format!("  {:<w$}: ", format!("{name}{range}"), w = width + range.len());
            writeln!(f, "{}{}", label(a_name), hex_row(&a.data, start))?;
            writeln!(f, "{}{}", label(b_name), hex_row(&b.data, start))?;
            writeln!(f, "{}^^", " ".repeat(label(a_name).len() + (offset - start) * 3))?;
        }
        write!(f, "{a_name} has {} frames, {b_name} has {} frames", d.a_count, d.b_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::wire::builder;
    use dataplane::wire::MacAddr;
    use std::net::Ipv4Addr;

    fn capture() -> Vec<CapturedFrame> {
        let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let (ip_a, ip_b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        (0..3)
            .map(|i| CapturedFrame { ts: i * 1_000_000, data: builder::udp(a, b, ip_a, ip_b, 1000, 2000, 18) })
            .collect()
    }

    #[test]
    fn identical_captures_have_no_difference() {
        assert_eq!(compare(&capture(), &capture()), None);
        assert_eq!(compare(&[], &[]), None);
    }

    #[test]
    fn changed_byte_is_found_and_shown() {
        let mut b = capture();
        b[1].data[22] = 63;
        let d = compare(&capture(), &b).unwrap();
        assert_eq!((d.index, d.mismatch), (1, Mismatch::Bytes { offset: 22 }));
        let text = d.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "frame #2 differs at byte 22 (A: 60 bytes, B: 60 bytes)");
        assert!(lines[1]
            .starts_with("  A: 0.001000 02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ttl 64 UDP"));
        assert!(lines[2].contains("ttl 63 bad ip cksum UDP"));
        assert!(lines[3].starts_with("  A[16..32]: 00 2e 00 00 00 00 40 11"));
        assert!(lines[4].starts_with("  B[16..32]: 00 2e 00 00 00 00 3f 11"));
        assert_eq!(lines[5].find("^^"), lines[4].find("3f"));
        assert_eq!(lines[6], "A has 3 frames, B has 3 frames");
    }

    #[test]
    fn timestamps_lengths_and_counts() {
        let mut b = capture();
        b[2].ts += 1_000;
        assert_eq!(compare(&capture(), &b).map(|d| (d.index, d.mismatch)), Some((2, Mismatch::Timestamp)));

        let mut b = capture();
        b[0].data.push(0);
        assert_eq!(compare(&capture(), &b).map(|d| (d.index, d.mismatch)), Some((0, Mismatch::Bytes { offset: 60 })));

        let short = &capture()[..2];
        let d = compare(&capture(), short).unwrap();
        assert_eq!((d.index, d.mismatch), (2, Mismatch::OnlyInA));
        assert!(d.to_string().contains("frame #3 is only in A\n  A: 0.002000 "));
        assert!(d.to_string().contains("  B: (no frame #3)\nA has 3 frames, B has 2 frames"));
        assert_eq!(compare(short, &capture()).map(|d| d.mismatch), Some(Mismatch::OnlyInB));
    }

    #[test]
    fn sides_can_be_named() {
        let mut b = capture();
        b[0].data[59] = 1;
        let d = compare(&capture(), &b).unwrap();
        let text = d.labelled("expected", "actual").to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "frame #1 differs at byte 59 (expected: 60 bytes, actual: 60 bytes)");
        assert!(lines[1].starts_with("  expected: 0.000000 "));
        assert!(lines[2].starts_with("  actual  : 0.000000 "));
        assert_eq!(lines[5].find("^^"), lines[4].rfind("01"));
        assert_eq!(lines[6], "expected has 3 frames, actual has 3 frames");
    }
}
