//! The connections of a snapshot as one CBOR byte string of fixed-size records ([`RECORD_LEN`] bytes each,
//! little-endian), instead of one CBOR map per connection: a table of 100,000 connections is written and read in
//! a few milliseconds instead of a second (field names and per-field tags dominated; see
//! `snapshot::tests::measure_snapshot_cost`). A record that does not decode (a wrong protocol, state or NAT
//! kind byte, a short string) fails the whole snapshot, which is then ignored.
//!
//! Record layout (format version 2, [`RECORD_LEN`] = 54 bytes): original tuple and reply tuple (zone u16,
//! protocol u8, source u32, destination u32, source port u16, destination port u16: 15 bytes each), state
//! (protocol kind u8, state index u8), NAT (kind u8: 0 none, 1 snat, 2 dnat, 3 hairpin; allocator u16, 0xffff
//! for none), age u64, remaining u64, flags u8 (bit 0: replied, netfilter's SEEN_REPLY; the other bits must be
//! 0), limit group u16 (0xffff for none; the NAT binding's `group`, only with a NAT kind).
//!
//! Format version 1 ([`V1_RECORD_LEN`] = 51 bytes) is the same without the last two fields: its connections
//! read as replied (they were tracked before the restart, so they count as assured) and in no limit group.

use super::ConnRecord;
use crate::conntrack::{IcmpState, NatBinding, NatKind, Proto, ProtoState, TcpState, Tuple, UdpState};
use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};
use std::net::Ipv4Addr;

/// Bytes per connection (format version 2).
pub const RECORD_LEN: usize = V1_RECORD_LEN + 3;
/// Bytes per connection in format version 1.
pub const V1_RECORD_LEN: usize = 15 * 2 + 2 + 3 + 16;

const TCP: [TcpState; 8] = TcpState::ALL;
const UDP: [UdpState; 2] = [UdpState::Unreplied, UdpState::Assured];
const ICMP: [IcmpState; 2] = [IcmpState::Requested, IcmpState::Replied];
const NAT: [NatKind; 3] = [NatKind::Snat, NatKind::Dnat, NatKind::Hairpin];

fn put_tuple(out: &mut Vec<u8>, t: &Tuple) {
    out.extend_from_slice(&t.zone.to_le_bytes());
    out.push(t.proto as u8);
    out.extend_from_slice(&u32::from(t.src).to_le_bytes());
    out.extend_from_slice(&u32::from(t.dst).to_le_bytes());
    out.extend_from_slice(&t.sport.to_le_bytes());
    out.extend_from_slice(&t.dport.to_le_bytes());
}

fn index_of<T: PartialEq>(all: &[T], v: &T) -> u8 {
    u8::try_from(all.iter().position(|x| x == v).unwrap_or(0)).unwrap_or(0)
}

/// Appends `c`'s record to `out`.
pub fn put(out: &mut Vec<u8>, c: &ConnRecord) {
    put_tuple(out, &c.orig);
    put_tuple(out, &c.reply);
    let (kind, i) = match &c.state {
        ProtoState::Tcp(s) => (1, index_of(&TCP, s)),
        ProtoState::Udp(s) => (2, index_of(&UDP, s)),
        ProtoState::Icmp(s) => (3, index_of(&ICMP, s)),
    };
    out.extend_from_slice(&[kind, i]);
    let (nat, allocator) = match c.nat {
        None => (0, u16::MAX),
        Some(b) => (index_of(&NAT, &b.kind) + 1, b.allocator.unwrap_or(u16::MAX)),
    };
    out.push(nat);
    out.extend_from_slice(&allocator.to_le_bytes());
    out.extend_from_slice(&c.age_ns.to_le_bytes());
    out.extend_from_slice(&c.remaining_ns.to_le_bytes());
    out.push(u8::from(c.replied));
    out.extend_from_slice(&c.nat.and_then(|b| b.group).unwrap_or(u16::MAX).to_le_bytes());
}

/// A little-endian reader over one record.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().unwrap_or([0; N])
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn tuple(&mut self) -> Result<Tuple, String> {
        let zone = self.u16();
        let proto = match self.u8() {
            1 => Proto::Icmp,
            6 => Proto::Tcp,
            17 => Proto::Udp,
            p => return Err(format!("connection record: protocol {p}")),
        };
        let (src, dst) = (Ipv4Addr::from(self.u32()), Ipv4Addr::from(self.u32()));
        let (sport, dport) = (self.u16(), self.u16());
        Ok(Tuple { zone, proto, src, dst, sport, dport })
    }
}

/// Decodes one record (exactly [`RECORD_LEN`] bytes).
pub fn get(rec: &[u8]) -> Result<ConnRecord, String> {
    get_version(rec, 2)
}

/// Decodes one record of format `version` (1: [`V1_RECORD_LEN`] bytes, 2: [`RECORD_LEN`]).
pub fn get_version(rec: &[u8], version: u32) -> Result<ConnRecord, String> {
    let len = if version == 1 { V1_RECORD_LEN } else { RECORD_LEN };
    if rec.len() != len {
        return Err(format!("connection record of {} bytes", rec.len()));
    }
    let mut r = Reader(rec);
    let (orig, reply) = (r.tuple()?, r.tuple()?);
    let (kind, i) = (r.u8(), usize::from(r.u8()));
    let bad = || format!("connection record: state {kind}/{i}");
    let state = match kind {
        1 => ProtoState::Tcp(*TCP.get(i).ok_or_else(bad)?),
        2 => ProtoState::Udp(*UDP.get(i).ok_or_else(bad)?),
        3 => ProtoState::Icmp(*ICMP.get(i).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    let (nat_kind, allocator) = (r.u8(), r.u16());
    let (age_ns, remaining_ns) = (r.u64(), r.u64());
    let (replied, group) = if version == 1 {
        // Not recorded by version 1: a connection tracked before the restart counts as assured.
        (true, u16::MAX)
    } else {
        let flags = r.u8();
        if flags > 1 {
            return Err(format!("connection record: flags {flags:#04x}"));
        }
        (flags == 1, r.u16())
    };
    let nat = match nat_kind {
        0 if group == u16::MAX => None,
        0 => return Err(format!("connection record: limit group {group} without NAT")),
        k => Some(NatBinding {
            kind: *NAT.get(usize::from(k) - 1).ok_or_else(|| format!("connection record: NAT kind {k}"))?,
            allocator: (allocator != u16::MAX).then_some(allocator),
            group: (group != u16::MAX).then_some(group),
        }),
    };
    Ok(ConnRecord { orig, reply, state, nat, age_ns, remaining_ns, replied })
}

/// `serialize_with` for [`super::Snapshot::connections`]: one byte string.
pub fn serialize<S: Serializer>(conns: &[ConnRecord], s: S) -> Result<S::Ok, S::Error> {
    let mut out = Vec::with_capacity(conns.len() * RECORD_LEN);
    for c in conns {
        put(&mut out, c);
    }
    s.serialize_bytes(&out)
}

/// `deserialize_with` for [`super::Snapshot::connections`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ConnRecord>, D::Error> {
    d.deserialize_byte_buf(Records(2))
}

/// `deserialize_with` for the connections of a format version 1 snapshot.
pub fn deserialize_v1<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ConnRecord>, D::Error> {
    d.deserialize_byte_buf(Records(1))
}

/// The visitor of a byte string of records of one format version.
struct Records(u32);

impl Visitor<'_> for Records {
    type Value = Vec<ConnRecord>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a byte string of version {} connection records", self.0)
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        let len = if self.0 == 1 { V1_RECORD_LEN } else { RECORD_LEN };
        if !v.len().is_multiple_of(len) {
            return Err(E::custom(format!("{} bytes of connection records", v.len())));
        }
        v.chunks(len).map(|rec| get_version(rec, self.0).map_err(E::custom)).collect()
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        self.visit_bytes(&v)
    }
}
