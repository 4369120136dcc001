//! [`PortRange`]: the external ports (and ICMP echo identifiers) masquerade hands out, written `"A-B"` in the
//! configuration's `[nat] port_range`. Never empty, never containing port 0.
//!
//! Threads: a plain `Copy` value.

use serde::Serialize;
use std::fmt;

/// The external ports an allocator may hand out, both ends included; never empty, never containing port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortRange {
    first: u16,
    last: u16,
}

/// A port range that is empty or contains port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid port range {first}-{last}: need 1 <= first <= last")]
pub struct BadPortRange {
    /// The first port asked for.
    pub first: u16,
    /// The last port asked for.
    pub last: u16,
}

impl PortRange {
    /// 1024–65535: the unprivileged ports.
    pub const DEFAULT: PortRange = PortRange { first: 1024, last: 65535 };

    /// The ports `first..=last`.
    pub fn new(first: u16, last: u16) -> Result<PortRange, BadPortRange> {
        if first == 0 || first > last {
            return Err(BadPortRange { first, last });
        }
        Ok(PortRange { first, last })
    }

    /// The first port.
    pub fn first(self) -> u16 {
        self.first
    }

    /// The last port.
    pub fn last(self) -> u16 {
        self.last
    }

    /// How many ports (1..=65535).
    pub fn size(self) -> u32 {
        u32::from(self.last - self.first) + 1
    }

    /// True when `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// `port`'s position in the range (0 for the first port), `None` outside it.
    #[inline]
    pub fn index(self, port: u16) -> Option<u16> {
        self.contains(port).then(|| port - self.first)
    }
}

/// Text that is not a port range `"A-B"` with 1 <= A <= B <= 65535.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a port range \"A-B\" with 1 <= A <= B <= 65535: {0:?}")]
pub struct ParsePortRangeError(pub String);

/// `"A-B"` (both ends included; a single port `"A"` is `A-A`).
impl std::str::FromStr for PortRange {
    type Err = ParsePortRangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParsePortRangeError(s.to_string());
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let port = |t: &str| -> Result<u16, ParsePortRangeError> {
            if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse().map_err(|_| bad())
        };
        PortRange::new(port(a)?, port(b)?).map_err(|_| bad())
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange::DEFAULT
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u16, last: u16) -> PortRange {
        PortRange::new(first, last).unwrap()
    }

    #[test]
    fn text_form_round_trips_and_refuses_what_is_not_a_range() {
        assert_eq!("1024-65535".parse(), Ok(PortRange::DEFAULT));
        assert_eq!("7".parse(), Ok(range(7, 7)));
        assert_eq!(range(10, 20).to_string(), "10-20");
        for bad in ["0-10", "10-5", "1-70000", "a-b", "", "-", "1 - 2", "+1-2"] {
            assert_eq!(bad.parse::<PortRange>(), Err(ParsePortRangeError(bad.to_string())), "{bad}");
        }
        assert_eq!(range(10, 20).index(10), Some(0));
        assert_eq!(range(10, 20).index(20), Some(10));
        assert_eq!(range(10, 20).index(21), None);
    }
}
