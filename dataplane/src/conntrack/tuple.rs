//! What a connection looks like: the [`Tuple`] of each direction (and the [`Direction`] a packet goes), and the
//! protocol states the table keeps ([`ProtoState`]; TCP's machine is in `tcp.rs`).
//!
//! Threads: plain values.

use super::TcpState;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// A tracked protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
// Two bytes, not one: with the zone it fills the first word of a [`Tuple`], so the addresses start 4-aligned.
#[repr(u16)]
pub enum Proto {
    /// ICMP echo (request/reply); other ICMP messages are not tracked.
    Icmp = 1,
    /// TCP.
    Tcp = 6,
    /// UDP.
    Udp = 17,
}

/// What one direction of a connection looks like. See the module documentation for ICMP echo.
///
/// Laid out as two aligned 8-byte words (zone, proto, src | dst, sport, dport): tuples are built field by field
/// and then copied as words (into a `Rewrite`, out of an entry). With the addresses at odd offsets (`Ipv4Addr`
/// is byte-aligned, `Proto` was one byte) the destination straddled the two words, and reading it after such a
/// copy waited for both stores (a store the CPU cannot forward; ~4 % of the NAT bench's time, perf).
// `PartialEq` is written out below (always inlined) and compares every field, as the derive would: `Hash` and
// `Ord` stay consistent with it.
#[allow(clippy::derived_hash_with_manual_eq)]
#[derive(Debug, Clone, Copy, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(C, align(8))]
pub struct Tuple {
    /// The network the packet is in.
    pub zone: u16,
    /// The protocol.
    pub proto: Proto,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port (ICMP echo request: the identifier; reply: 0).
    pub sport: u16,
    /// Destination port (ICMP echo request: 0; reply: the identifier).
    pub dport: u16,
}

/// Field by field, as the derive would (so `Hash` and `Ord` agree with it), but always inlined: the derived `eq`
/// stayed a call at the connection lookups, with the tuple stored to the stack for it (about 2 % of the NAT
/// bench's time, perf).
impl PartialEq for Tuple {
    #[inline(always)]
    fn eq(&self, o: &Tuple) -> bool {
        self.zone == o.zone
            && self.proto == o.proto
            && self.src == o.src
            && self.dst == o.dst
            && self.sport == o.sport
            && self.dport == o.dport
    }
}

impl Tuple {
    /// A TCP or UDP tuple.
    pub fn new(zone: u16, proto: Proto, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Tuple {
        Tuple { zone, proto, src: src.0, dst: dst.0, sport: src.1, dport: dst.1 }
    }

    /// The tuple of an ICMP echo request with identifier `id`.
    pub fn icmp_echo_request(zone: u16, src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Tuple {
        Tuple { zone, proto: Proto::Icmp, src, dst, sport: id, dport: 0 }
    }

    /// The tuple of an ICMP echo reply with identifier `id`.
    pub fn icmp_echo_reply(zone: u16, src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Tuple {
        Tuple { zone, proto: Proto::Icmp, src, dst, sport: 0, dport: id }
    }

    /// The other direction without translation: addresses and ports swapped, same zone and protocol.
    pub fn inverse(&self) -> Tuple {
        Tuple { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, ..*self }
    }

    /// The index key: every field packed into 120 bits.
    #[inline]
    pub(super) fn key(&self) -> u128 {
        (u128::from(u32::from(self.src)) << 96)
            | (u128::from(u32::from(self.dst)) << 64)
            | (u128::from(self.sport) << 48)
            | (u128::from(self.dport) << 32)
            | (u128::from(self.zone) << 16)
            | u128::from(self.proto as u8)
    }
}

/// Which way a packet goes relative to the packet that created its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Same way as the first packet.
    Original,
    /// The other way.
    Reply,
}

impl Direction {
    /// The other direction.
    #[inline]
    pub fn opposite(self) -> Direction {
        match self {
            Direction::Original => Direction::Reply,
            Direction::Reply => Direction::Original,
        }
    }
}

/// UDP connection states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UdpState {
    /// Packets seen in the original direction only.
    Unreplied,
    /// Packets seen in both directions.
    Assured,
}

/// ICMP echo states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IcmpState {
    /// Requests seen, no reply yet.
    Requested,
    /// A reply seen.
    Replied,
}

/// The protocol state of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtoState {
    /// A TCP connection.
    Tcp(TcpState),
    /// A UDP flow.
    Udp(UdpState),
    /// An ICMP echo exchange.
    Icmp(IcmpState),
}

impl ProtoState {
    /// The protocol this state belongs to.
    pub fn proto(self) -> Proto {
        match self {
            ProtoState::Tcp(_) => Proto::Tcp,
            ProtoState::Udp(_) => Proto::Udp,
            ProtoState::Icmp(_) => Proto::Icmp,
        }
    }
}
