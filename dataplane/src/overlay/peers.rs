//! Remote VTEPs ("peers"): each one's precomputed outer headers, underlay next hop and counters, and the token
//! bucket that limits head-end replication.
//!
//! A [`Peer`] is made by `Overlay::update` from a member of the control plane's state and lives until the next
//! update; its counters follow its VTEP address from one update to the next. Threads: as `crate::overlay`.

use super::vxlan::Template;
use super::{Member, PeerCounters};
use crate::ids::{Nanos, RifId, NANOS_PER_SEC};
use std::net::Ipv4Addr;

/// A peer's index in the overlay tables (valid until the next update).
pub type PeerId = u16;

pub use vswitch_api::overlay::{MAX_UNDERLAY_MTU, MIN_UNDERLAY_MTU};

/// One remote VTEP.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The host's name.
    pub host: String,
    /// Its VTEP address.
    pub vtep: Ipv4Addr,
    /// Its VXLAN UDP port.
    pub udp_port: u16,
    /// Its underlay MTU.
    pub mtu: u16,
    /// Outer headers from our VTEP to it.
    pub template: Template,
    /// The routed port's interface and next hop towards it; `None` without a route through a routed port.
    pub next_hop: Option<(RifId, Ipv4Addr)>,
    /// Counters.
    pub counters: PeerCounters,
}

impl Peer {
    /// The peer for `m`, reached through `next_hop` (interface, next hop, and our VTEP address as the source).
    pub fn new(m: &Member, next_hop: Option<(RifId, Ipv4Addr, Ipv4Addr)>, counters: PeerCounters) -> Peer {
        let src = next_hop.map_or(Ipv4Addr::UNSPECIFIED, |(_, _, src)| src);
        Peer {
            host: m.host.clone(),
            vtep: m.vtep,
            udp_port: m.udp_port,
            mtu: m.mtu,
            template: Template::new(src, m.vtep, m.udp_port),
            next_hop: next_hop.map(|(rif, target, _)| (rif, target)),
            counters,
        }
    }
}

/// A token bucket on the caller's clock: `rate` tokens per second, holding a tenth of a second's worth (at least
/// 16).
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: u64,
    /// Tokens scaled by one second in nanoseconds, so a refill needs no division.
    tokens: u128,
    cap: u128,
    last: Nanos,
}

impl TokenBucket {
    /// A full bucket for `rate` tokens per second.
    pub fn per_second(rate: u64) -> TokenBucket {
        let cap = u128::from((rate / 10).max(16)) * u128::from(NANOS_PER_SEC);
        TokenBucket { rate, tokens: cap, cap, last: 0 }
    }

    /// Takes a token if there is one.
    #[inline]
    pub fn take(&mut self, now: Nanos) -> bool {
        let elapsed = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        self.tokens = (self.tokens + u128::from(elapsed) * u128::from(self.rate)).min(self.cap);
        if self.tokens >= u128::from(NANOS_PER_SEC) {
            self.tokens -= u128::from(NANOS_PER_SEC);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_its_burst_then_its_rate() {
        let mut b = TokenBucket::per_second(1000);
        let burst = (0..1000).take_while(|_| b.take(0)).count();
        assert_eq!(burst, 100, "a tenth of a second's worth");
        assert!(!b.take(0));
        // 10 ms later: 10 more.
        let more = (0..100).take_while(|_| b.take(10_000_000)).count();
        assert_eq!(more, 10);
        let mut slow = TokenBucket::per_second(1);
        assert_eq!((0..100).take_while(|_| slow.take(0)).count(), 16, "at least 16");
    }
}
