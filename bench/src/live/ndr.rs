//! Loss-bounded rates (RFC 2544 § 26.1 throughput, as CSIT reports it): the highest offered rate of 64-byte
//! (or `size`-byte) UDP frames at which the forwarder loses nothing (**NDR**, no-drop rate) and at which it
//! loses at most [`PDR_LOSS`] (**PDR**, partial-drop rate), found by a binary search on the rate of the
//! [`sender`](super::sender).
//!
//! One trial: read the receiver's UDP counter, send at the rate for the trial's duration, wait
//! [`DRAIN`] for frames in flight, read the counter again; loss = offered − received. The search starts with a
//! flat-out trial (the sender's maximum, which bounds both results: a forwarder that loses nothing at it is
//! reported as limited by the sender), then halves the interval between the highest passing and the lowest
//! failing rate until it is narrower than [`PRECISION`] of the upper bound or [`MAX_TRIALS`] trials have run;
//! PDR first, then NDR within `[0, PDR]` (a rate that fails the PDR test fails the NDR test too). Every trial
//! is kept in the result. The rate reported is the rate the sender actually achieved in the passing trial.

use super::sender::{self, SendSpec, Sent};
use serde::Serialize;
use std::time::Duration;

/// The PDR loss bound: 0.5 %.
pub const PDR_LOSS: f64 = 0.005;
/// The search stops when the interval is narrower than this fraction of its upper bound.
pub const PRECISION: f64 = 0.02;
/// At most this many trials per search.
pub const MAX_TRIALS: usize = 9;
/// Wait after a trial for frames still in flight.
pub const DRAIN: Duration = Duration::from_millis(150);

/// Where to send: the sender's namespace and interface, the frame, and the receiver's namespace.
#[derive(Debug, Clone)]
pub struct Path {
    /// Sender namespace.
    pub sender_ns: String,
    /// Sender interface.
    pub sender_if: String,
    /// Receiver namespace.
    pub receiver_ns: String,
    /// The frame to send.
    pub frame: Vec<u8>,
    /// The sender's core.
    pub cpu: usize,
}

/// One trial.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Trial {
    /// The rate asked of the sender (frames/s; 0 = flat out).
    pub target_pps: f64,
    /// The rate it achieved.
    pub offered_pps: f64,
    /// Frames received per second of the trial.
    pub delivered_pps: f64,
    /// Frames offered.
    pub offered: u64,
    /// Frames received.
    pub received: u64,
    /// Fraction lost.
    pub loss: f64,
}

/// The result of a search.
#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    /// Highest rate with no loss, frames/s (0 when even the lowest tried rate lost frames).
    pub ndr_pps: f64,
    /// Highest rate with at most 0.5 % loss, frames/s.
    pub pdr_pps: f64,
    /// The sender's own maximum (the flat-out trial's offered rate).
    pub sender_max_pps: f64,
    /// True when the forwarder kept up with the sender's maximum within the PDR bound: PDR (and maybe NDR) are
    /// the sender's limit, not the forwarder's.
    pub sender_limited: bool,
    /// Frame size with FCS.
    pub frame_bytes: usize,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
}

/// Runs one trial at `rate` (`None`: flat out).
pub fn trial(path: &Path, rate: Option<f64>, duration: Duration) -> anyhow::Result<Trial> {
    let before = sender::udp_received(&path.receiver_ns)?;
    let spec = SendSpec {
        ns: path.sender_ns.clone(),
        ifname: path.sender_if.clone(),
        frame: path.frame.clone(),
        rate,
        duration,
        cpu: path.cpu,
    };
    let sent: Sent = sender::send(&spec)?;
    std::thread::sleep(DRAIN);
    let received = sender::udp_received(&path.receiver_ns)?.saturating_sub(before);
    let secs = sent.secs.max(1e-9);
    Ok(Trial {
        target_pps: rate.unwrap_or(0.0),
        offered_pps: sent.pps(),
        delivered_pps: received as f64 / secs,
        offered: sent.offered,
        received,
        loss: if sent.offered == 0 { 0.0 } else { sent.offered.saturating_sub(received) as f64 / sent.offered as f64 },
    })
}

/// The sender flat out for `duration`: what it offered and what arrived.
pub fn max_rate(path: &Path, duration: Duration) -> anyhow::Result<Trial> {
    trial(path, None, duration)
}

/// Searches NDR and PDR with trials of `duration`.
pub fn search(path: &Path, duration: Duration) -> anyhow::Result<Rates> {
    search_with(|rate| trial(path, rate, duration), path.frame.len() + 4)
}

/// The search itself, over any trial function (tests drive it with a model forwarder).
pub fn search_with(
    mut run: impl FnMut(Option<f64>) -> anyhow::Result<Trial>,
    frame_bytes: usize,
) -> anyhow::Result<Rates> {
    let mut trials = Vec::new();
    let first = run(None)?;
    trials.push(first);
    let max = first.offered_pps;
    anyhow::ensure!(max > 0.0, "the sender sent nothing");
    let mut pass_at = |trials: &mut Vec<Trial>, rate: f64, bound: f64| -> anyhow::Result<Option<f64>> {
        let t = run(Some(rate))?;
        trials.push(t);
        Ok((t.loss <= bound).then_some(t.offered_pps))
    };
    // PDR in [0, max].
    let (pdr, sender_limited) = if first.loss <= PDR_LOSS {
        (first.offered_pps, true)
    } else {
        bisect(&mut trials, 0.0, max, first.delivered_pps.min(max), PDR_LOSS, &mut pass_at)?
    };
    // NDR in [0, PDR]: a rate that loses more than 0.5 % loses something.
    let ndr = if first.loss == 0.0 {
        first.offered_pps
    } else if pdr > 0.0 {
        let pdr_trial_loss = trials.iter().filter(|t| t.offered_pps == pdr).map(|t| t.loss).next().unwrap_or(1.0);
        if pdr_trial_loss == 0.0 {
            pdr
        } else {
            bisect(&mut trials, 0.0, pdr, pdr * 0.9, 0.0, &mut pass_at)?.0
        }
    } else {
        0.0
    };
    Ok(Rates { ndr_pps: ndr, pdr_pps: pdr, sender_max_pps: max, sender_limited, frame_bytes, trials })
}

/// Binary search between `lo` (passing, or 0) and `hi` (failing), first trying `guess`; returns the highest
/// passing rate achieved (0 if none) and false (not sender-limited).
fn bisect(
    trials: &mut Vec<Trial>,
    mut lo: f64,
    mut hi: f64,
    guess: f64,
    bound: f64,
    pass_at: &mut impl FnMut(&mut Vec<Trial>, f64, f64) -> anyhow::Result<Option<f64>>,
) -> anyhow::Result<(f64, bool)> {
    let mut best = 0.0f64;
    let mut rate = if guess > lo && guess < hi { guess } else { (lo + hi) / 2.0 };
    for _ in 0..MAX_TRIALS {
        match pass_at(trials, rate, bound)? {
            Some(achieved) => {
                best = best.max(achieved);
                lo = rate;
            }
            None => hi = rate,
        }
        if hi - lo < PRECISION * hi {
            break;
        }
        rate = (lo + hi) / 2.0;
    }
    Ok((best, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forwarder that delivers everything up to `cap` frames/s and `leak` of what is above; a sender that
    /// reaches `sender` frames/s.
    fn model(cap: f64, sender: f64) -> impl FnMut(Option<f64>) -> anyhow::Result<Trial> {
        move |rate| {
            let offered_pps = rate.unwrap_or(sender).min(sender);
            let delivered_pps = offered_pps.min(cap);
            Ok(Trial {
                target_pps: rate.unwrap_or(0.0),
                offered_pps,
                delivered_pps,
                offered: offered_pps as u64,
                received: delivered_pps as u64,
                loss: 1.0 - delivered_pps / offered_pps,
            })
        }
    }

    #[test]
    fn search_finds_the_forwarders_capacity_within_the_precision() {
        let r = search_with(model(400_000.0, 1_000_000.0), 64).unwrap();
        assert!(!r.sender_limited);
        assert!(r.ndr_pps <= 400_000.0 && r.ndr_pps > 400_000.0 * (1.0 - 2.0 * PRECISION), "{r:?}");
        // PDR may be up to 0.5 % above the capacity.
        assert!(r.pdr_pps >= r.ndr_pps && r.pdr_pps <= 400_000.0 * 1.005 + 1.0, "{r:?}");
        assert!(r.trials.len() <= 1 + 2 * MAX_TRIALS);
    }

    #[test]
    fn a_forwarder_faster_than_the_sender_is_reported_as_sender_limited() {
        let r = search_with(model(2e6, 1e6), 64).unwrap();
        assert!(r.sender_limited);
        assert_eq!((r.ndr_pps, r.pdr_pps), (1e6, 1e6));
        assert_eq!(r.trials.len(), 1);
    }

    #[test]
    fn a_forwarder_that_always_loses_has_no_ndr() {
        let lossy = |rate: Option<f64>| {
            let offered_pps = rate.unwrap_or(1e6);
            Ok(Trial {
                target_pps: 0.0,
                offered_pps,
                delivered_pps: offered_pps * 0.9,
                offered: 1000,
                received: 900,
                loss: 0.1,
            })
        };
        let r = search_with(lossy, 64).unwrap();
        assert_eq!((r.ndr_pps, r.pdr_pps), (0.0, 0.0));
    }
}
