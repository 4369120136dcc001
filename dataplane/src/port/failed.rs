//! A configured port that could not be opened: [`PortFailure`] (its error and retry schedule) and the stand-in
//! queues ([`stand_ins`]) that take its place in the running switch, so that one bad port never keeps the others
//! from coming up.
//!
//! The stand-ins are memory ports that receive nothing and discard what is sent to them, counting it as
//! `tx_dropped`. The switch keeps the port in its topology (its id, network, MAC entries stay), so bringing it up
//! later only swaps the queues.
//!
//! Retry schedule: the first retry [`FIRST_RETRY`] after the failure, then doubling up to [`MAX_RETRY`].
//!
//! Threads: plain data; the live switch keeps one per port behind a lock (`crate::worker::LivePort`).

use super::any::AnyPort;
use super::mem::{MemPort, TxMode};
use std::time::{Duration, Instant};

/// Delay before the first retry.
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest delay between two retries.
pub const MAX_RETRY: Duration = Duration::from_secs(5);

/// Why a port is down, and when it is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFailure {
    /// The last error (names the port).
    pub error: String,
    /// Attempts so far that failed (the first open included).
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_retry: Instant,
}

impl PortFailure {
    /// The first failure, at `now`.
    pub fn new(error: String, now: Instant) -> PortFailure {
        PortFailure { error, attempts: 1, next_retry: now + FIRST_RETRY }
    }

    /// Another failed attempt at `now`: the delay doubles, up to [`MAX_RETRY`].
    pub fn again(&mut self, error: String, now: Instant) {
        self.attempts = self.attempts.saturating_add(1);
        self.error = error;
        let delay = FIRST_RETRY.saturating_mul(1u32 << self.attempts.saturating_sub(1).min(8)).min(MAX_RETRY);
        self.next_retry = now + delay;
    }

    /// An attempt is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_retry
    }
}

/// `n` stand-in queues for the failed port `name`: they receive nothing and discard what is sent.
pub fn stand_ins(name: &str, n: usize) -> Vec<AnyPort> {
    (0..n.max(1))
        .map(|_| {
            let mut p = MemPort::new(name.to_string());
            p.set_tx_mode(TxMode::Discard);
            AnyPort::Mem(p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let t = Instant::now();
        let mut f = PortFailure::new("port a: nope".into(), t);
        assert_eq!(f.next_retry - t, FIRST_RETRY);
        assert!(!f.due(t) && f.due(t + FIRST_RETRY));
        let mut delays = Vec::new();
        for _ in 0..8 {
            f.again("port a: still nope".into(), t);
            delays.push(f.next_retry - t);
        }
        assert_eq!(delays[0], FIRST_RETRY * 2);
        assert_eq!(delays[1], FIRST_RETRY * 4);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*delays.last().unwrap(), MAX_RETRY);
        assert_eq!(f.attempts, 9);
    }
}
