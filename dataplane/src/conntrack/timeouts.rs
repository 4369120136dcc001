//! How long each connection state lives ([`Timeouts`], netfilter's defaults) and the table's tunables
//! ([`ConntrackConfig`]).
//!
//! Threads: plain values, copied into each shard's table.

use super::{ProtoState, TcpState, UdpState};
use crate::buffer::{Nanos, NANOS_PER_SEC};

/// How long each state lives without an accepted packet. Defaults are netfilter's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP SYN_SENT (120 s).
    pub tcp_syn_sent: Nanos,
    /// TCP SYN_RECV (60 s).
    pub tcp_syn_recv: Nanos,
    /// TCP ESTABLISHED (5 days).
    pub tcp_established: Nanos,
    /// TCP FIN_WAIT (120 s).
    pub tcp_fin_wait: Nanos,
    /// TCP CLOSE_WAIT (60 s).
    pub tcp_close_wait: Nanos,
    /// TCP LAST_ACK (30 s).
    pub tcp_last_ack: Nanos,
    /// TCP TIME_WAIT (120 s).
    pub tcp_time_wait: Nanos,
    /// TCP CLOSE (10 s).
    pub tcp_close: Nanos,
    /// UDP, unreplied (30 s).
    pub udp_unreplied: Nanos,
    /// UDP, assured (120 s).
    pub udp_assured: Nanos,
    /// ICMP echo (30 s).
    pub icmp: Nanos,
    /// TCP ESTABLISHED picked up mid-stream, until a packet is seen in the reply direction (30 s; capped by
    /// `tcp_established`).
    pub tcp_unreplied: Nanos,
}

impl Default for Timeouts {
    fn default() -> Self {
        const S: Nanos = NANOS_PER_SEC;
        Timeouts {
            tcp_syn_sent: 120 * S,
            tcp_syn_recv: 60 * S,
            tcp_established: 432_000 * S,
            tcp_fin_wait: 120 * S,
            tcp_close_wait: 60 * S,
            tcp_last_ack: 30 * S,
            tcp_time_wait: 120 * S,
            tcp_close: 10 * S,
            udp_unreplied: 30 * S,
            udp_assured: 120 * S,
            icmp: 30 * S,
            tcp_unreplied: 30 * S,
        }
    }
}

impl Timeouts {
    /// The timeout of `state`.
    #[inline(always)]
    pub fn of(&self, state: ProtoState) -> Nanos {
        match state {
            ProtoState::Tcp(s) => match s {
                TcpState::SynSent => self.tcp_syn_sent,
                TcpState::SynRecv => self.tcp_syn_recv,
                TcpState::Established => self.tcp_established,
                TcpState::FinWait => self.tcp_fin_wait,
                TcpState::CloseWait => self.tcp_close_wait,
                TcpState::LastAck => self.tcp_last_ack,
                TcpState::TimeWait => self.tcp_time_wait,
                TcpState::Close => self.tcp_close,
            },
            ProtoState::Udp(UdpState::Unreplied) => self.udp_unreplied,
            ProtoState::Udp(UdpState::Assured) => self.udp_assured,
            ProtoState::Icmp(_) => self.icmp,
        }
    }

    /// The timeout of `state` for an entry that has (`replied`) or has not seen a packet in the reply
    /// direction: an ESTABLISHED connection without one was picked up mid-stream and gets `tcp_unreplied`.
    #[inline(always)]
    pub fn of_entry(&self, state: ProtoState, replied: bool) -> Nanos {
        match state {
            ProtoState::Tcp(TcpState::Established) if !replied => self.tcp_unreplied.min(self.tcp_established),
            _ => self.of(state),
        }
    }
}

/// The [`Timeouts`] laid out by state and by whether the entry has replied, so refreshing an entry's expiry on
/// every packet is a dense index and one load, not two nested matches (18 → 14 instructions per frame on the
/// NAT bench, callgrind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ExpiryTable([Nanos; 2 * STATES]);

/// How many [`ProtoState`]s there are (see [`state_index`]).
const STATES: usize = 12;

/// Every [`ProtoState`], in [`state_index`] order.
fn all_states() -> impl Iterator<Item = ProtoState> {
    use super::IcmpState;
    let udp = [UdpState::Unreplied, UdpState::Assured].map(ProtoState::Udp);
    let icmp = [IcmpState::Requested, IcmpState::Replied].map(ProtoState::Icmp);
    TcpState::ALL.map(ProtoState::Tcp).into_iter().chain(udp).chain(icmp)
}

/// A dense index of `state` in `0..STATES`.
#[inline(always)]
fn state_index(state: ProtoState) -> usize {
    match state {
        ProtoState::Tcp(s) => s as usize,
        ProtoState::Udp(s) => 8 + s as usize,
        ProtoState::Icmp(s) => 10 + s as usize,
    }
}

impl ExpiryTable {
    /// The table of `t`.
    pub(super) fn new(t: &Timeouts) -> Self {
        let mut table = [0; 2 * STATES];
        for state in all_states() {
            let i = state_index(state);
            table[i] = t.of_entry(state, false);
            table[STATES + i] = t.of_entry(state, true);
        }
        ExpiryTable(table)
    }

    /// [`Timeouts::of_entry`].
    #[inline(always)]
    pub(super) fn of_entry(&self, state: ProtoState, replied: bool) -> Nanos {
        self.0[state_index(state) + usize::from(replied) * STATES]
    }
}

/// Tunables of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Most live entries (default 65,536; at least 1).
    pub limit: usize,
    /// TCP policy: `false` (default, netfilter's) picks up connections in the middle and accepts, without a
    /// state change, packets that make no sense before the handshake completes; `true` refuses both.
    pub strict: bool,
    /// State timeouts.
    pub timeouts: Timeouts,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig { limit: 65_536, strict: false, timeouts: Timeouts::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_table_answers_as_the_timeouts_do_for_every_state() {
        // Distinct values, so a state read from the wrong slot shows.
        let t = Timeouts {
            tcp_syn_sent: 1,
            tcp_syn_recv: 2,
            tcp_established: 3,
            tcp_fin_wait: 4,
            tcp_close_wait: 5,
            tcp_last_ack: 6,
            tcp_time_wait: 7,
            tcp_close: 8,
            udp_unreplied: 9,
            udp_assured: 10,
            icmp: 11,
            tcp_unreplied: 2,
        };
        let table = ExpiryTable::new(&t);
        let states: Vec<ProtoState> = all_states().collect();
        assert_eq!(states.len(), STATES);
        let indexes: std::collections::BTreeSet<usize> = states.iter().map(|&s| state_index(s)).collect();
        assert_eq!(indexes, (0..STATES).collect(), "every state has its own index");
        for s in states {
            for replied in [false, true] {
                assert_eq!(table.of_entry(s, replied), t.of_entry(s, replied), "{s:?}, replied {replied}");
            }
        }
        assert_eq!(table.of_entry(ProtoState::Tcp(TcpState::Established), false), 2);
    }
}
