//! Frame builders for fixtures and generators: whole, valid Ethernet frames with correct checksums.
//!
//! Ethernet, VLAN tags and ARP are written through this crate's views ([`super::ethernet`], [`super::vlan`],
//! [`super::arp`]); IP, UDP, TCP and ICMP by etherparse's `PacketBuilder` — on purpose an independent
//! implementation, so fixtures cross-check the views and the stages that read them. This module only chooses
//! the fields. Conventions shared by every builder:
//!
//! - Frames carry no FCS and are zero-padded to [`MIN_FRAME_LEN`] (60) bytes.
//! - `payload_len` counts the bytes after the last header (after the UDP / TCP / ICMP header; after the Ethernet
//!   header for [`eth`]). Payload bytes are the deterministic pattern of [`pattern`]: `0, 1, 2, …, 255, 0, 1, …`.
//! - IPv4 fields not given take [`Ipv4Opts::default`]: TTL 64, DF clear, identification 0. IPv6 hop limit 64.
//! - TCP segments carry a window of [`TCP_WINDOW`] and no options unless given ([`TcpSegment::options`]).
//!
//! The two-address-pairs-plus-options shape of every IPv4 frame is [`Ipv4Spec`]; the free functions
//! ([`udp`], [`tcp`], [`icmp_echo_request`], …) are shortcuts for it with default options:
//!
//! ```
//! # use dataplane::wire::{MacAddr, builder::*};
//! # use std::net::Ipv4Addr;
//! let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
//! let (ip_a, ip_b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
//! let probe = Ipv4Spec::new(a, b, ip_a, ip_b).with_opts(Ipv4Opts { ttl: 1, ..Ipv4Opts::default() }).udp(1000, 33434, 0);
//! let syn = tcp(a, b, ip_a, ip_b, TcpSegment::new(1000, 80, TcpFlags::SYN).seq(7), 0);
//! assert_eq!(probe.len(), 60);
//! # let _ = syn;
//! ```
//!
//! Pure functions without state, callable from any thread. They panic only when asked for a payload that cannot
//! fit one IP packet (more than 65 535 bytes with its headers) — a bug in the caller; the `vswitch-pcap`
//! generator checks sizes before calling.

use super::{arp as arp_view, ethernet, ethertype, vlan, MacAddr};
/// A TCP option for [`TcpSegment::options`] (etherparse's; `MaximumSegmentSize`, `Noop`, `WindowScale`, …).
pub use etherparse::TcpOptionElement as TcpOption;
use etherparse::{Icmpv4Type, IpHeaders, Ipv4Extensions, Ipv4Header, PacketBuilder, TcpHeader};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::{BitOr, BitOrAssign};

/// Shortest Ethernet frame without FCS; builders pad up to it.
pub const MIN_FRAME_LEN: usize = 60;
/// Ethernet II header length (two MACs and the EtherType).
pub const ETH_HEADER_LEN: usize = ethernet::HEADER_LEN;
/// Length of an 802.1Q tag.
pub const VLAN_TAG_LEN: usize = vlan::HEADER_LEN;
/// Length of an ARP message for Ethernet/IPv4.
pub const ARP_LEN: usize = arp_view::HEADER_LEN;
/// TCP window advertised by [`tcp`].
pub const TCP_WINDOW: u16 = 65535;

/// `len` bytes of the deterministic payload pattern `0, 1, 2, …, 255, 0, 1, …`.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..=u8::MAX).cycle().take(len).collect()
}

/// Zero-pads `frame` to [`MIN_FRAME_LEN`].
fn pad(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < MIN_FRAME_LEN {
        frame.resize(MIN_FRAME_LEN, 0);
    }
    frame
}

/// An Ethernet II frame `dst`, `src`, `ethertype` carrying `payload`, zero-padded to 60 bytes.
pub fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; ETH_HEADER_LEN + payload.len()];
    let mut e = ethernet::Packet::new_unchecked(&mut frame[..]);
    e.set_dst_addr(dst);
    e.set_src_addr(src);
    e.set_ethertype(ethertype);
    e.payload_mut().copy_from_slice(payload);
    pad(frame)
}

/// `frame` with an 802.1Q tag (priority 0) for VLAN `vid` inserted after the MAC addresses. Only the low 12 bits
/// of `vid` are used. A frame shorter than an Ethernet header is returned unchanged.
pub fn with_vlan(frame: &[u8], vid: u16) -> Vec<u8> {
    let Ok(inner) = ethernet::Packet::new_checked(frame) else {
        return frame.to_vec();
    };
    let mut out = vec![0u8; frame.len() + VLAN_TAG_LEN];
    let mut e = ethernet::Packet::new_unchecked(&mut out[..]);
    e.set_dst_addr(inner.dst_addr());
    e.set_src_addr(inner.src_addr());
    e.set_ethertype(ethertype::VLAN);
    let mut tag = vlan::Packet::new_unchecked(e.payload_mut());
    tag.set_tci(0);
    tag.set_vid(vid);
    tag.set_ethertype(inner.ethertype());
    out[ETH_HEADER_LEN + VLAN_TAG_LEN..].copy_from_slice(inner.payload());
    out
}

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    /// who-has (1).
    Request,
    /// is-at (2).
    Reply,
}

/// One Ethernet/IPv4 ARP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// Request or reply.
    pub op: ArpOp,
    /// Sender hardware address; also the frame's Ethernet source.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (zero in requests).
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

/// A frame to `eth_dst` from `msg.sender_mac` carrying the ARP message `msg`.
pub fn arp(eth_dst: MacAddr, msg: &Arp) -> Vec<u8> {
    let repr = arp_view::Repr {
        operation: match msg.op {
            ArpOp::Request => arp_view::op::REQUEST,
            ArpOp::Reply => arp_view::op::REPLY,
        },
        sender_mac: msg.sender_mac,
        sender_ip: msg.sender_ip,
        target_mac: msg.target_mac,
        target_ip: msg.target_ip,
    };
    let mut body = [0u8; ARP_LEN];
    repr.emit(&mut arp_view::Packet::new_unchecked(&mut body[..]));
    eth(eth_dst, msg.sender_mac, ethertype::ARP, &body)
}

/// Broadcast "who has `target_ip`? tell `src_ip`" from `src_mac`.
pub fn arp_request(src_mac: MacAddr, src_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let msg = Arp { op: ArpOp::Request, sender_mac: src_mac, sender_ip: src_ip, target_mac: MacAddr::ZERO, target_ip };
    arp(MacAddr::BROADCAST, &msg)
}

/// Unicast "`src_ip` is at `src_mac`" to `dst_mac` / `dst_ip`.
pub fn arp_reply(src_mac: MacAddr, src_ip: Ipv4Addr, dst_mac: MacAddr, dst_ip: Ipv4Addr) -> Vec<u8> {
    let msg = Arp { op: ArpOp::Reply, sender_mac: src_mac, sender_ip: src_ip, target_mac: dst_mac, target_ip: dst_ip };
    arp(dst_mac, &msg)
}

/// Broadcast gratuitous ARP announcing `ip` at `mac`: a request whose sender and target address are both `ip`
/// (what Linux sends on address change and `arping -U` sends).
pub fn gratuitous_arp(mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    let msg = Arp { op: ArpOp::Request, sender_mac: mac, sender_ip: ip, target_mac: MacAddr::ZERO, target_ip: ip };
    arp(MacAddr::BROADCAST, &msg)
}

/// The IPv4 header fields a test usually wants to choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Opts {
    /// Time to live (default 64).
    pub ttl: u8,
    /// Don't-fragment flag (default clear).
    pub df: bool,
    /// Identification (default 0).
    pub id: u16,
}

impl Default for Ipv4Opts {
    fn default() -> Self {
        Ipv4Opts { ttl: 64, df: false, id: 0 }
    }
}

/// TCP flags, combined with `|`: `TcpFlags::SYN | TcpFlags::ACK`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    /// No flags.
    pub const NONE: TcpFlags = TcpFlags(0);
    /// FIN.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// SYN.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// RST.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// PSH.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// ACK.
    pub const ACK: TcpFlags = TcpFlags(0x10);

    const NAMES: [(TcpFlags, &'static str); 5] = [
        (TcpFlags::SYN, "SYN"),
        (TcpFlags::FIN, "FIN"),
        (TcpFlags::RST, "RST"),
        (TcpFlags::PSH, "PSH"),
        (TcpFlags::ACK, "ACK"),
    ];

    /// The flags as the low byte of the TCP flags field.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// True if every flag of `other` is set in `self`.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flag named `name` (`SYN`, `ACK`, `FIN`, `RST`, `PSH`; any case).
    pub fn from_name(name: &str) -> Option<TcpFlags> {
        Self::NAMES.iter().find(|(_, n)| n.eq_ignore_ascii_case(name)).map(|(f, _)| *f)
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

/// `SYN|ACK`, or `none`.
impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                f.write_str(if first { "" } else { "|" })?;
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The TCP header fields of one segment: ports, flags, sequence and acknowledgment numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Flags.
    pub flags: TcpFlags,
    /// Sequence number (default 0).
    pub seq: u32,
    /// Acknowledgment number (default 0; meaningful with ACK).
    pub ack: u32,
    /// Options, in order (default none); padded with END to a multiple of 4 bytes.
    pub options: &'static [TcpOption],
}

impl TcpSegment {
    /// A segment between the ports with `flags`, sequence and acknowledgment numbers 0.
    pub fn new(sport: u16, dport: u16, flags: TcpFlags) -> Self {
        TcpSegment { sport, dport, flags, seq: 0, ack: 0, options: &[] }
    }

    /// With sequence number `seq`.
    pub fn seq(self, seq: u32) -> Self {
        TcpSegment { seq, ..self }
    }

    /// With acknowledgment number `ack`.
    pub fn ack(self, ack: u32) -> Self {
        TcpSegment { ack, ..self }
    }

    /// With these options (at most 40 bytes of them).
    pub fn options(self, options: &'static [TcpOption]) -> Self {
        TcpSegment { options, ..self }
    }
}

/// Everything below the transport layer of an IPv4 frame: Ethernet addresses, IPv4 addresses and header options.
/// Its methods build the frame with a given transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Spec {
    /// Ethernet source.
    pub src_mac: MacAddr,
    /// Ethernet destination.
    pub dst_mac: MacAddr,
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination.
    pub dst_ip: Ipv4Addr,
    /// TTL, DF, identification.
    pub opts: Ipv4Opts,
}

impl Ipv4Spec {
    /// From `src` to `dst` with default [`Ipv4Opts`].
    pub fn new(src_mac: MacAddr, dst_mac: MacAddr, src_ip: Ipv4Addr, dst_ip: Ipv4Addr) -> Self {
        Ipv4Spec { src_mac, dst_mac, src_ip, dst_ip, opts: Ipv4Opts::default() }
    }

    /// With IPv4 header options `opts`.
    pub fn with_opts(self, opts: Ipv4Opts) -> Self {
        Ipv4Spec { opts, ..self }
    }

    /// The opposite direction (addresses swapped, same options): what a reply uses.
    pub fn reversed(self) -> Self {
        Ipv4Spec { src_mac: self.dst_mac, dst_mac: self.src_mac, src_ip: self.dst_ip, dst_ip: self.src_ip, ..self }
    }

    fn ip_header(&self) -> IpHeaders {
        let header = Ipv4Header {
            time_to_live: self.opts.ttl,
            dont_fragment: self.opts.df,
            identification: self.opts.id,
            source: self.src_ip.octets(),
            destination: self.dst_ip.octets(),
            ..Ipv4Header::default()
        };
        IpHeaders::Ipv4(header, Ipv4Extensions::default())
    }

    fn base(&self) -> etherparse::PacketBuilderStep<IpHeaders> {
        PacketBuilder::ethernet2(self.src_mac.0, self.dst_mac.0).ip(self.ip_header())
    }

    /// ICMP echo request `id`/`seq` with `payload_len` pattern bytes of data.
    pub fn icmp_echo_request(&self, id: u16, seq: u16, payload_len: usize) -> Vec<u8> {
        let b = self.base().icmpv4_echo_request(id, seq);
        let payload = pattern(payload_len);
        let mut out = Vec::with_capacity(b.size(payload_len));
        b.write(&mut out, &payload).expect(TOO_BIG);
        pad(out)
    }

    /// ICMP echo reply `id`/`seq` with `payload_len` pattern bytes of data.
    pub fn icmp_echo_reply(&self, id: u16, seq: u16, payload_len: usize) -> Vec<u8> {
        let b = self.base().icmpv4_echo_reply(id, seq);
        let payload = pattern(payload_len);
        let mut out = Vec::with_capacity(b.size(payload_len));
        b.write(&mut out, &payload).expect(TOO_BIG);
        pad(out)
    }

    /// Any ICMP message (e.g. `Icmpv4Type::TimeExceeded(..)` quoting an offending packet in `payload`).
    pub fn icmp(&self, icmp_type: Icmpv4Type, payload: &[u8]) -> Vec<u8> {
        let b = self.base().icmpv4(icmp_type);
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, payload).expect(TOO_BIG);
        pad(out)
    }

    /// UDP datagram `sport` → `dport` with `payload_len` pattern bytes.
    pub fn udp(&self, sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
        let b = self.base().udp(sport, dport);
        let payload = pattern(payload_len);
        let mut out = Vec::with_capacity(b.size(payload_len));
        b.write(&mut out, &payload).expect(TOO_BIG);
        pad(out)
    }

    /// A VXLAN packet (RFC 7348) carrying `inner`: UDP `sport` → `dport` with checksum 0 (as VTEPs send it
    /// over IPv4), the VXLAN header with the I flag and `vni`, then the inner frame as it is. This spec's
    /// addresses are the outer ones (VTEP to VTEP).
    pub fn vxlan(&self, sport: u16, dport: u16, vni: u32, inner: &[u8]) -> Vec<u8> {
        let mut payload = vec![0u8; super::vxlan::HEADER_LEN];
        super::vxlan::Packet::new_unchecked(&mut payload[..]).set_header(vni);
        payload.extend_from_slice(inner);
        let b = self.base().udp(sport, dport);
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, &payload).expect(TOO_BIG);
        let udp_at = ETH_HEADER_LEN + super::ipv4::HEADER_LEN;
        if let Some(mut u) = super::udp::HeaderMut::at_mut(&mut out, udp_at) {
            u.set_checksum(0);
        }
        pad(out)
    }

    /// TCP segment `seg` with `payload_len` pattern bytes.
    pub fn tcp(&self, seg: TcpSegment, payload_len: usize) -> Vec<u8> {
        let b = self.base().tcp_header(tcp_header(seg));
        let payload = pattern(payload_len);
        let mut out = Vec::with_capacity(b.size(payload_len));
        b.write(&mut out, &payload).expect(TOO_BIG);
        pad(out)
    }
}

const TOO_BIG: &str = "payload too large for one IP packet";

fn tcp_header(seg: TcpSegment) -> TcpHeader {
    let mut h = TcpHeader::new(seg.sport, seg.dport, seg.seq, TCP_WINDOW);
    h.acknowledgment_number = seg.ack;
    h.fin = seg.flags.contains(TcpFlags::FIN);
    h.syn = seg.flags.contains(TcpFlags::SYN);
    h.rst = seg.flags.contains(TcpFlags::RST);
    h.psh = seg.flags.contains(TcpFlags::PSH);
    h.ack = seg.flags.contains(TcpFlags::ACK);
    h.set_options(seg.options).expect("TCP options longer than 40 bytes");
    h
}

/// ICMP echo request with default [`Ipv4Opts`]; see [`Ipv4Spec::icmp_echo_request`].
pub fn icmp_echo_request(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    id: u16,
    seq: u16,
    payload_len: usize,
) -> Vec<u8> {
    Ipv4Spec::new(src_mac, dst_mac, src_ip, dst_ip).icmp_echo_request(id, seq, payload_len)
}

/// ICMP echo reply with default [`Ipv4Opts`]; see [`Ipv4Spec::icmp_echo_reply`].
pub fn icmp_echo_reply(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    id: u16,
    seq: u16,
    payload_len: usize,
) -> Vec<u8> {
    Ipv4Spec::new(src_mac, dst_mac, src_ip, dst_ip).icmp_echo_reply(id, seq, payload_len)
}

/// UDP over IPv4 with default [`Ipv4Opts`]; see [`Ipv4Spec::udp`].
pub fn udp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload_len: usize,
) -> Vec<u8> {
    Ipv4Spec::new(src_mac, dst_mac, src_ip, dst_ip).udp(sport, dport, payload_len)
}

/// TCP over IPv4 with default [`Ipv4Opts`]; see [`Ipv4Spec::tcp`].
pub fn tcp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    seg: TcpSegment,
    payload_len: usize,
) -> Vec<u8> {
    Ipv4Spec::new(src_mac, dst_mac, src_ip, dst_ip).tcp(seg, payload_len)
}

/// Everything below the transport layer of an IPv6 frame. Its methods build the frame with a given transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Spec {
    /// Ethernet source.
    pub src_mac: MacAddr,
    /// Ethernet destination.
    pub dst_mac: MacAddr,
    /// IPv6 source.
    pub src_ip: Ipv6Addr,
    /// IPv6 destination.
    pub dst_ip: Ipv6Addr,
    /// Hop limit (default 64).
    pub hop_limit: u8,
}

impl Ipv6Spec {
    /// From `src` to `dst` with hop limit 64.
    pub fn new(src_mac: MacAddr, dst_mac: MacAddr, src_ip: Ipv6Addr, dst_ip: Ipv6Addr) -> Self {
        Ipv6Spec { src_mac, dst_mac, src_ip, dst_ip, hop_limit: 64 }
    }

    /// TCP segment `seg` with `payload_len` pattern bytes.
    pub fn tcp(&self, seg: TcpSegment, payload_len: usize) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(self.src_mac.0, self.dst_mac.0)
            .ipv6(self.src_ip.octets(), self.dst_ip.octets(), self.hop_limit)
            .tcp_header(tcp_header(seg));
        let payload = pattern(payload_len);
        let mut out = Vec::with_capacity(b.size(payload_len));
        b.write(&mut out, &payload).expect(TOO_BIG);
        pad(out)
    }

    /// UDP datagram `sport` → `dport` with `payload_len` pattern bytes.
    pub fn udp(&self, sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(self.src_mac.0, self.dst_mac.0)
            .ipv6(self.src_ip.octets(), self.dst_ip.octets(), self.hop_limit)
            .udp(sport, dport);
        let payload = pattern(payload_len);
        let mut out = Vec::with_capacity(b.size(payload_len));
        b.write(&mut out, &payload).expect(TOO_BIG);
        pad(out)
    }
}

/// UDP over IPv6 with hop limit 64; see [`Ipv6Spec::udp`].
pub fn ipv6_udp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    sport: u16,
    dport: u16,
    payload_len: usize,
) -> Vec<u8> {
    Ipv6Spec::new(src_mac, dst_mac, src_ip, dst_ip).udp(sport, dport, payload_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice, VlanSlice};
    // smoltcp's ARP codec, as an independent reader of what wire::arp wrote.
    use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress};

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn macs(p: &SlicedPacket<'_>) -> (MacAddr, MacAddr) {
        match &p.link {
            Some(LinkSlice::Ethernet2(e)) => (MacAddr(e.source()), MacAddr(e.destination())),
            other => panic!("not ethernet: {other:?}"),
        }
    }

    fn ipv4<'a>(p: &'a SlicedPacket<'a>) -> &'a etherparse::Ipv4Slice<'a> {
        match &p.net {
            Some(NetSlice::Ipv4(ip)) => ip,
            other => panic!("not ipv4: {other:?}"),
        }
    }

    #[test]
    fn vxlan_wraps_the_inner_frame_with_a_zero_udp_checksum() {
        let inner = udp(A, B, IP_A, IP_B, 1000, 2000, 10);
        let outer_spec = Ipv4Spec::new(B, A, Ipv4Addr::new(198, 51, 100, 12), Ipv4Addr::new(198, 51, 100, 11));
        let f = outer_spec.with_opts(Ipv4Opts { df: true, ..Ipv4Opts::default() }).vxlan(50000, 4789, 0xabcdef, &inner);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        assert!(ipv4(&p).header().dont_fragment());
        let Some(TransportSlice::Udp(u)) = &p.transport else { panic!("udp") };
        assert_eq!((u.source_port(), u.destination_port(), u.checksum()), (50000, 4789, 0));
        assert_eq!(u.payload()[..8], [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        assert_eq!(&u.payload()[8..], &inner[..]);
    }

    fn parse_arp(frame: &[u8]) -> ArpRepr {
        assert_eq!(&frame[12..14], &ethertype::ARP.to_be_bytes());
        ArpRepr::parse(&ArpPacket::new_checked(&frame[14..]).unwrap()).unwrap()
    }

    #[test]
    fn eth_pads_to_minimum_and_keeps_long_payloads() {
        let f = eth(B, A, 0x88b5, &[1, 2, 3]);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[..6], &B.0);
        assert_eq!(&f[6..12], &A.0);
        assert_eq!(&f[12..14], &[0x88, 0xb5]);
        assert_eq!(&f[14..17], &[1, 2, 3]);
        assert!(f[17..].iter().all(|&b| b == 0));
        assert_eq!(eth(B, A, 0x88b5, &pattern(100)).len(), 114);
    }

    #[test]
    fn arp_builders() {
        let req = arp_request(A, IP_A, IP_B);
        assert_eq!(req.len(), 60);
        assert_eq!(&req[..6], &MacAddr::BROADCAST.0);
        assert_eq!(
            parse_arp(&req),
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: EthernetAddress(A.0),
                source_protocol_addr: IP_A,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: IP_B,
            }
        );
        let rep = arp_reply(B, IP_B, A, IP_A);
        assert_eq!(&rep[..6], &A.0);
        assert_eq!(&rep[6..12], &B.0);
        assert_eq!(
            parse_arp(&rep),
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: EthernetAddress(B.0),
                source_protocol_addr: IP_B,
                target_hardware_addr: EthernetAddress(A.0),
                target_protocol_addr: IP_A,
            }
        );
        let g = gratuitous_arp(A, IP_A);
        assert_eq!(&g[..6], &MacAddr::BROADCAST.0);
        let ArpRepr::EthernetIpv4 { operation, source_protocol_addr, target_protocol_addr, .. } = parse_arp(&g) else {
            unreachable!()
        };
        assert_eq!((operation, source_protocol_addr, target_protocol_addr), (ArpOperation::Request, IP_A, IP_A));
    }

    #[test]
    fn icmp_echo_round_trips_with_valid_checksums() {
        let f = icmp_echo_request(A, B, IP_A, IP_B, 7, 3, 56);
        assert_eq!(f.len(), 14 + 20 + 8 + 56);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        assert_eq!(macs(&p), (A, B));
        let ip = ipv4(&p);
        assert_eq!((ip.header().source_addr(), ip.header().destination_addr()), (IP_A, IP_B));
        assert_eq!(ip.header().ttl(), 64);
        assert!(!ip.header().dont_fragment());
        assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else { panic!("no icmp") };
        let Icmpv4Type::EchoRequest(echo) = icmp.icmp_type() else { panic!("not echo request") };
        assert_eq!((echo.id, echo.seq), (7, 3));
        assert_eq!(icmp.payload(), &pattern(56)[..]);
        assert_eq!(icmp.header().icmp_type.calc_checksum(icmp.payload()), icmp.checksum());

        let r = icmp_echo_reply(B, A, IP_B, IP_A, 7, 3, 0);
        assert_eq!(r.len(), 60);
        let p = SlicedPacket::from_ethernet(&r).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else { panic!("no icmp") };
        assert!(matches!(icmp.icmp_type(), Icmpv4Type::EchoReply(e) if e.id == 7 && e.seq == 3));
        assert_eq!(icmp.header().icmp_type.calc_checksum(icmp.payload()), icmp.checksum());
    }

    #[test]
    fn udp_with_options_round_trips() {
        let opts = Ipv4Opts { ttl: 1, df: true, id: 0x1234 };
        let f = Ipv4Spec::new(A, B, IP_A, IP_B).with_opts(opts).udp(1000, 2000, 18);
        assert_eq!(f.len(), 60);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let h = ipv4(&p).header();
        assert_eq!((h.ttl(), h.dont_fragment(), h.identification()), (1, true, 0x1234));
        assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
        let Some(TransportSlice::Udp(u)) = &p.transport else { panic!("no udp") };
        assert_eq!((u.source_port(), u.destination_port(), u.length()), (1000, 2000, 26));
        assert_eq!(u.payload(), &pattern(18)[..]);
        let want = u.to_header().calc_checksum_ipv4_raw(IP_A.octets(), IP_B.octets(), u.payload()).unwrap();
        assert_eq!(u.checksum(), want);
        // The shortcut is the same frame with default options.
        assert_eq!(udp(A, B, IP_A, IP_B, 1000, 2000, 18), Ipv4Spec::new(A, B, IP_A, IP_B).udp(1000, 2000, 18));
    }

    #[test]
    fn tcp_round_trips_flags_seq_ack() {
        let seg = TcpSegment::new(40000, 80, TcpFlags::SYN | TcpFlags::ACK).seq(100).ack(200);
        let f = tcp(A, B, IP_A, IP_B, seg, 10);
        assert_eq!(f.len(), 14 + 20 + 20 + 10);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Tcp(t)) = &p.transport else { panic!("no tcp") };
        assert_eq!((t.source_port(), t.destination_port()), (40000, 80));
        assert_eq!((t.sequence_number(), t.acknowledgment_number()), (100, 200));
        assert!(t.syn() && t.ack() && !t.fin() && !t.rst() && !t.psh());
        assert_eq!(t.payload(), &pattern(10)[..]);
        let want = t.to_header().calc_checksum_ipv4_raw(IP_A.octets(), IP_B.octets(), t.payload()).unwrap();
        assert_eq!(t.checksum(), want);
    }

    #[test]
    fn tcp_flags_names() {
        assert_eq!((TcpFlags::SYN | TcpFlags::ACK).to_string(), "SYN|ACK");
        assert_eq!(TcpFlags::NONE.to_string(), "none");
        assert_eq!(TcpFlags::from_name("psh"), Some(TcpFlags::PSH));
        assert_eq!(TcpFlags::from_name("urg"), None);
        let mut f = TcpFlags::FIN;
        f |= TcpFlags::RST;
        assert!(f.contains(TcpFlags::RST) && !f.contains(TcpFlags::SYN));
        assert_eq!(f.bits(), 0x05);
    }

    #[test]
    fn vlan_tag_is_inserted() {
        let f = with_vlan(&udp(A, B, IP_A, IP_B, 1, 2, 0), 10);
        assert_eq!(f.len(), 64);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(VlanSlice::SingleVlan(v)) = &p.vlan else { panic!("no vlan") };
        assert_eq!(v.vlan_identifier().value(), 10);
        assert_eq!(v.ether_type().0, ethertype::IPV4);
        assert!(matches!(p.transport, Some(TransportSlice::Udp(_))));
        assert_eq!(with_vlan(&[1, 2, 3], 10), vec![1, 2, 3]);
    }

    #[test]
    fn ipv6_udp_round_trips() {
        let (s, d): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let f = ipv6_udp(A, B, s, d, 5000, 6000, 4);
        assert_eq!(f.len(), 14 + 40 + 8 + 4);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &p.net else { panic!("not ipv6") };
        assert_eq!((ip.header().source_addr(), ip.header().destination_addr(), ip.header().hop_limit()), (s, d, 64));
        let Some(TransportSlice::Udp(u)) = &p.transport else { panic!("no udp") };
        assert_eq!((u.source_port(), u.destination_port()), (5000, 6000));
        let want = u.to_header().calc_checksum_ipv6_raw(s.octets(), d.octets(), u.payload()).unwrap();
        assert_eq!(u.checksum(), want);
    }

    #[test]
    fn payload_pattern_wraps() {
        let p = pattern(300);
        assert_eq!((p[0], p[255], p[256], p[299]), (0, 255, 0, 43));
    }
}
