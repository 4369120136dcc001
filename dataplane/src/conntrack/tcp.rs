//! The TCP state machine of connection tracking: netfilter's `nf_conntrack_proto_tcp` without window tracking
//! and without simultaneous open, as data — a transition table ([`TCP_TRANSITIONS`]) indexed by direction,
//! the packet's flag class ([`TcpFlags`] → its row) and the current state ([`TcpState`]), each cell giving the
//! step under the strict and the loose policy (see the `conntrack` module documentation for what the policies
//! mean). Pure data and functions; the table ([`super::Conntrack`]) applies the steps.

use super::Direction;
use crate::wire::tcp::flags;
use serde::{Deserialize, Serialize};

/// The flags byte of a TCP header (byte 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No flags (what UDP and ICMP pass to [`Conntrack::update`](super::Conntrack::update)).
    pub const NONE: TcpFlags = TcpFlags(0);
    /// FIN.
    pub const FIN: u8 = flags::FIN;
    /// SYN.
    pub const SYN: u8 = flags::SYN;
    /// RST.
    pub const RST: u8 = flags::RST;
    /// PSH.
    pub const PSH: u8 = flags::PSH;
    /// ACK.
    pub const ACK: u8 = flags::ACK;
    /// URG.
    pub const URG: u8 = flags::URG;
    /// ECE.
    pub const ECE: u8 = flags::ECE;
    /// CWR.
    pub const CWR: u8 = flags::CWR;

    /// The row of [`TCP_TRANSITIONS`] for these flags, or `None` for a combination no TCP sends (netfilter's
    /// `tcp_valid_flags`, after ignoring PSH, ECE and CWR): e.g. SYN+FIN, SYN+RST, FIN without ACK, no flags.
    fn event(self) -> Option<TcpEvent> {
        const SYN: u8 = TcpFlags::SYN;
        const SYN_URG: u8 = TcpFlags::SYN | TcpFlags::URG;
        const SYN_ACK: u8 = TcpFlags::SYN | TcpFlags::ACK;
        const RST: u8 = TcpFlags::RST;
        const RST_ACK: u8 = TcpFlags::RST | TcpFlags::ACK;
        const FIN_ACK: u8 = TcpFlags::FIN | TcpFlags::ACK;
        const FIN_ACK_URG: u8 = TcpFlags::FIN | TcpFlags::ACK | TcpFlags::URG;
        const ACK: u8 = TcpFlags::ACK;
        const ACK_URG: u8 = TcpFlags::ACK | TcpFlags::URG;
        match self.0 & !(TcpFlags::PSH | TcpFlags::ECE | TcpFlags::CWR) {
            SYN | SYN_URG => Some(TcpEvent::Syn),
            SYN_ACK => Some(TcpEvent::SynAck),
            FIN_ACK | FIN_ACK_URG => Some(TcpEvent::Fin),
            ACK | ACK_URG => Some(TcpEvent::Ack),
            RST | RST_ACK => Some(TcpEvent::Rst),
            _ => None,
        }
    }
}

/// TCP connection states (netfilter's, without LISTEN and SYN_SENT2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    /// SYN seen in the original direction.
    SynSent,
    /// SYN-ACK seen in the reply direction.
    SynRecv,
    /// Handshake completed (or picked up in the middle, loose policy).
    Established,
    /// FIN seen (in either direction).
    FinWait,
    /// An ACK seen after the FIN: one side has closed.
    CloseWait,
    /// FIN seen in both directions.
    LastAck,
    /// The last ACK seen.
    TimeWait,
    /// RST seen.
    Close,
}

impl TcpState {
    /// Every state, in declaration order.
    pub const ALL: [TcpState; 8] = [
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
    ];
}

// The TCP state machine, as data.

/// A TCP packet's class: the row of the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpEvent {
    Syn = 0,
    SynAck = 1,
    Fin = 2,
    Ack = 3,
    Rst = 4,
}

/// What a packet does to a connection under one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Accept; move to the state (possibly the same) and refresh the timeout.
    Go(TcpState),
    /// Accept; leave state and timeout alone (netfilter's sIG).
    Ignore,
    /// Invalid; leave the connection alone.
    Invalid,
}

/// One cell of the table: the step under the strict and under the loose policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    strict: Step,
    loose: Step,
}

const fn both(s: Step) -> Cell {
    Cell { strict: s, loose: s }
}
const fn loose_only(s: Step) -> Cell {
    Cell { strict: Step::Invalid, loose: s }
}

// Cell shorthands, named after netfilter's: go to the state under both policies.
const SS: Cell = both(Step::Go(TcpState::SynSent));
const SR: Cell = both(Step::Go(TcpState::SynRecv));
const ES: Cell = both(Step::Go(TcpState::Established));
const FW: Cell = both(Step::Go(TcpState::FinWait));
const CW: Cell = both(Step::Go(TcpState::CloseWait));
const LA: Cell = both(Step::Go(TcpState::LastAck));
const TW: Cell = both(Step::Go(TcpState::TimeWait));
const CL: Cell = both(Step::Go(TcpState::Close));
/// Accepted without a state change under both policies.
const IG: Cell = both(Step::Ignore);
/// Invalid under both policies.
const IV: Cell = both(Step::Invalid);
/// Loose: picked up as established; strict: invalid.
const L_ES: Cell = loose_only(Step::Go(TcpState::Established));
/// Loose: close started; strict: invalid.
const L_FW: Cell = loose_only(Step::Go(TcpState::FinWait));
/// Loose: accepted without a state change; strict: invalid.
const L_IG: Cell = loose_only(Step::Ignore);

/// Number of columns: "no connection yet" (NO) and the eight states.
const COLUMNS: usize = 9;

/// `TCP_TRANSITIONS[direction][event][column]`: columns are NO (the packet would create the connection), then
/// SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE. Derived from netfilter's
/// `tcp_conntracks`, minus SYN_SENT2 (simultaneous open) and minus everything that needs sequence numbers.
#[rustfmt::skip]
pub static TCP_TRANSITIONS: [[[Cell; COLUMNS]; 5]; 2] = [
    // ORIGINAL direction (client → server).
    [
        //NO    SS    SR    ES    FW    CW    LA    TW    CL
        // SYN: opens (NO), is retransmitted (SS) or reopens a closed tuple (TW, CL). After the SYN-ACK a
        // retransmitted SYN is harmless (SR). Once established it can only be a stale or forged packet; loose
        // accepts it without a change (netfilter ignores it), strict refuses it.
        [SS,   SS,   IG,   L_IG, L_IG, L_IG, L_IG, SS,   SS],
        // SYN-ACK: the client never sends one (no simultaneous open), with or without a SYN before.
        [IV,   IV,   IV,   IV,   IV,   IV,   IV,   IV,   IV],
        // FIN: not before the SYN-ACK (NO, SS); a FIN|ACK may complete the handshake (SR → FW); the first
        // FIN of an established connection (FW), the second one (LA), retransmissions (LA, TW, CL stay).
        [IV,   IV,   FW,   FW,   LA,   LA,   LA,   TW,   CL],
        // ACK (and data): picks up a connection mid-stream only under the loose policy (NO); nothing to
        // acknowledge before the SYN-ACK (SS); completes the handshake (SR); acknowledges a FIN (FW → CW) or
        // the last FIN (LA → TW).
        [L_ES, IV,   ES,   ES,   CW,   CW,   TW,   TW,   CL],
        // RST: never opens; closes from any state.
        [IV,   CL,   CL,   CL,   CL,   CL,   CL,   CL,   CL],
    ],
    // REPLY direction (server → client).
    [
        //NO    SS    SR    ES    FW    CW    LA    TW    CL
        // SYN: a reply never opens (NO). In SS it is a simultaneous open, which is not tracked: loose lets it
        // through unchanged. Anywhere else it is invalid (a server reopening a closed tuple in the other
        // role needs a new entry: the caller removes this one).
        [IV,   L_IG, IV,   IV,   IV,   IV,   IV,   IV,   IV],
        // SYN-ACK: the handshake's second step (SS → SR); later ones are retransmissions (lost final ACK),
        // accepted without a change.
        [IV,   SR,   IG,   IG,   IG,   IG,   IG,   IG,   IG],
        // FIN: not before the SYN-ACK (SS); before the client's final ACK only under the loose policy (SR);
        // then as in the original direction.
        [IV,   IV,   L_FW, FW,   LA,   LA,   LA,   TW,   CL],
        // ACK (and data): before the handshake completes the server has nothing to send (SS: half-open from
        // an old connection; SR: data before the final ACK) — loose accepts without a change, strict refuses;
        // then as in the original direction.
        [IV,   L_IG, L_IG, ES,   CW,   CW,   TW,   TW,   CL],
        // RST: a refused connection (SS) or an abort; closes from any state.
        [IV,   CL,   CL,   CL,   CL,   CL,   CL,   CL,   CL],
    ],
];

/// The column of a state in [`TCP_TRANSITIONS`] (NO is 0).
fn column(s: Option<TcpState>) -> usize {
    match s {
        None => 0,
        Some(TcpState::SynSent) => 1,
        Some(TcpState::SynRecv) => 2,
        Some(TcpState::Established) => 3,
        Some(TcpState::FinWait) => 4,
        Some(TcpState::CloseWait) => 5,
        Some(TcpState::LastAck) => 6,
        Some(TcpState::TimeWait) => 7,
        Some(TcpState::Close) => 8,
    }
}

/// The step a TCP packet with `flags` going `dir` takes from `state` (None: no connection yet).
#[inline(always)]
pub(super) fn tcp_step(state: Option<TcpState>, dir: Direction, flags: TcpFlags, strict: bool) -> Step {
    let Some(ev) = flags.event() else {
        return Step::Invalid;
    };
    let cell = TCP_TRANSITIONS[dir as usize][ev as usize][column(state)];
    if strict {
        cell.strict
    } else {
        cell.loose
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table_rows_match_flag_classes() {
        assert_eq!(TcpFlags(TcpFlags::SYN | TcpFlags::ECE | TcpFlags::CWR).event(), Some(TcpEvent::Syn));
        assert_eq!(TcpFlags(TcpFlags::FIN).event(), None, "FIN without ACK");
        assert_eq!(TcpFlags(TcpFlags::SYN | TcpFlags::RST).event(), None);
        assert_eq!(TcpFlags(TcpFlags::RST | TcpFlags::ACK).event(), Some(TcpEvent::Rst));
        // RST never opens; a reply never opens.
        assert!(TCP_TRANSITIONS[1].iter().all(|row| row[0] == IV));
        assert_eq!(TCP_TRANSITIONS[0][TcpEvent::Rst as usize][0], IV);
    }
}
