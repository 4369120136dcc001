//! One line per frame for humans, in the spirit of `tcpdump -e`: [`describe`].
//!
//! ```text
//! 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP who-has 10.0.0.2 tell 10.0.0.1, len 60
//! 02:00:00:00:00:01 > 02:00:00:00:00:02 vlan 10 IPv4 10.0.0.1 > 10.0.0.2 ttl 64 UDP 1000 > 2000 payload 18, len 64
//! 02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ttl 64 DF TCP 40000 > 80 [S.] seq 1 ack 2 win 65535 payload 0, len 60
//! 02:00:00:00:00:02 > 02:00:00:00:00:01 IPv4 10.0.0.2 > 10.0.0.1 ttl 64 ICMP echo reply id 7 seq 1 payload 56, len 98
//! 02:00:00:00:09:11 > 02:00:00:00:09:12 IPv4 198.51.100.11 > 198.51.100.12 ttl 64 DF UDP 57286 > 4789 payload 82 VXLAN vni 100: 02:00:00:00:00:11 > 02:00:00:0b:00:21 IPv4 10.1.0.11 > 10.1.0.21 ttl 64 UDP 1000 > 2000 payload 32, len 74, len 124
//! 02:00:00:00:00:01 > 02:00:00:00:00:02 truncated IPv4 header (have 10 of 20 bytes), len 24
//! runt 10 bytes
//! ```
//!
//! Layers are decoded outside in (Ethernet, 802.1Q/802.1ad tags, ARP / IPv4 / IPv6, UDP / TCP / ICMP / ICMPv6) with
//! etherparse's checked header slices (whose errors name what is wrong) and, for ARP and ICMP, this crate's
//! views ([`super::arp`], [`super::icmpv4`]). The first layer that cannot be decoded ends the
//! line with what is wrong with it (`truncated UDP header (have 3 of 8 bytes)`, `bad IPv4 IHL 3`, `truncated
//! (total length 100, have 46)`); checksums that do not verify are flagged (`bad ip cksum`, `bad cksum`) without
//! stopping. Every line but a runt's ends with `, len N`, the frame's length in bytes. A UDP datagram to port
//! 4789 is read as VXLAN: its VNI, then the inner frame described the same way (one tunnel deep: a VXLAN packet
//! inside the inner frame is shown as UDP only).
//!
//! [`describe`] never panics, whatever the bytes. It allocates, so it is for tools, tests and logs, not for the
//! forwarding path. No state: callable from any thread.

use super::{arp, ethertype, icmpv4, ipv4, tcp, MacAddr};
use etherparse::checksum::Sum16BitWords;
use etherparse::err::{ipv4 as ipv4_err, ipv6, ipv6_exts, tcp as tcp_err, LenError};
use etherparse::{
    Ethernet2HeaderSlice, Icmpv6Slice, IpNumber, Ipv4HeaderSlice, Ipv6ExtensionsSlice, Ipv6HeaderSlice,
    SingleVlanHeader, SingleVlanHeaderSlice, TcpHeaderSlice, UdpHeader, UdpHeaderSlice,
};
use std::fmt::Write;
use std::net::Ipv6Addr;

/// Appends formatted text to the line (writing to a `String` cannot fail).
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

/// One human-readable line describing `frame`, starting at the Ethernet header. See the module documentation.
pub fn describe(frame: &[u8]) -> String {
    let mut out = String::with_capacity(128);
    describe_into(frame, 0, &mut out);
    out
}

/// Most VXLAN layers decoded inside one another (a frame can nest many; a line shows the first).
const MAX_TUNNEL_DEPTH: u8 = 1;

/// [`describe`] of a frame `depth` tunnels deep, appended to `out`.
fn describe_into(frame: &[u8], depth: u8, out: &mut String) {
    let eth = match Ethernet2HeaderSlice::from_slice(frame) {
        Ok(eth) => eth,
        Err(e) => return put!(out, "runt {} bytes", e.len),
    };
    put!(out, "{} > {}", MacAddr(eth.source()), MacAddr(eth.destination()));
    let rest = frame.get(eth.slice().len()..).unwrap_or_default();
    ether_payload(eth.ether_type().0, rest, depth, out);
    put!(out, ", len {}", frame.len());
}

/// `have 3 of 8 bytes`.
fn have(e: &LenError) -> String {
    format!("have {} of {} bytes", e.len, e.required_len)
}

fn ether_payload(mut ether_type: u16, mut rest: &[u8], depth: u8, out: &mut String) {
    while ether_type == ethertype::VLAN || ether_type == ethertype::QINQ {
        let tag = match SingleVlanHeaderSlice::from_slice(rest) {
            Ok(tag) => tag,
            Err(e) => return put!(out, " truncated VLAN tag ({})", have(&e)),
        };
        put!(
            out,
            " {} {}",
            if ether_type == ethertype::QINQ { "svlan" } else { "vlan" },
            tag.vlan_identifier().value()
        );
        let pcp = tag.priority_code_point().value();
        if pcp != 0 {
            put!(out, " pcp {pcp}");
        }
        ether_type = tag.ether_type().0;
        rest = rest.get(SingleVlanHeader::LEN..).unwrap_or_default();
    }
    match ether_type {
        ethertype::ARP => arp_line(rest, out),
        ethertype::IPV4 => ipv4_line(rest, depth, out),
        ethertype::IPV6 => ipv6_line(rest, depth, out),
        t if t < 0x0600 => put!(out, " 802.3 length {t}"),
        t => put!(out, " ethertype 0x{t:04x} payload {}", rest.len()),
    }
}

fn arp_line(b: &[u8], out: &mut String) {
    let Ok(pkt) = arp::Packet::new_checked(b) else {
        return put!(out, " truncated ARP ({} bytes)", b.len());
    };
    match arp::Repr::parse(&pkt) {
        Ok(msg) => {
            let (spa, tpa) = (msg.sender_ip, msg.target_ip);
            match msg.operation {
                arp::op::REQUEST => put!(out, " ARP who-has {tpa} tell {spa}"),
                arp::op::REPLY => put!(out, " ARP reply {spa} is-at {}", msg.sender_mac),
                op => put!(out, " ARP op {op} {spa} > {tpa}"),
            }
            if spa == tpa {
                put!(out, " (gratuitous)");
            }
        }
        Err(_) => {
            put!(out, " ARP htype {} ptype 0x{:04x} op {}", pkt.hardware_type(), pkt.protocol_type(), pkt.operation())
        }
    }
}

/// Addresses of the pseudo-header that UDP, TCP and ICMPv6 checksums cover.
#[derive(Clone, Copy)]
enum Pseudo {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

impl Pseudo {
    /// True if the checksum over the pseudo-header and `segment` (its checksum field included) verifies.
    fn verifies(self, proto: u8, segment: &[u8]) -> bool {
        let sum = match self {
            Pseudo::V4(src, dst) => {
                let Ok(len) = u16::try_from(segment.len()) else { return false };
                Sum16BitWords::new()
                    .add_4bytes(src)
                    .add_4bytes(dst)
                    .add_2bytes([0, proto])
                    .add_2bytes(len.to_be_bytes())
            }
            Pseudo::V6(src, dst) => {
                let Ok(len) = u32::try_from(segment.len()) else { return false };
                Sum16BitWords::new()
                    .add_16bytes(src)
                    .add_16bytes(dst)
                    .add_4bytes(len.to_be_bytes())
                    .add_4bytes([0, 0, 0, proto])
            }
        };
        sum.add_slice(segment).ones_complement() == 0
    }
}

/// True if the Internet checksum over `b` (its checksum field included) verifies.
fn checksum_ok(b: &[u8]) -> bool {
    Sum16BitWords::new().add_slice(b).ones_complement() == 0
}

fn ipv4_line(b: &[u8], depth: u8, out: &mut String) {
    let h = match Ipv4HeaderSlice::from_slice(b) {
        Ok(h) => h,
        Err(ipv4_err::HeaderSliceError::Len(e)) => return put!(out, " truncated IPv4 header ({})", have(&e)),
        Err(ipv4_err::HeaderSliceError::Content(ipv4_err::HeaderError::UnexpectedVersion { version_number })) => {
            return put!(out, " bad IPv4 version {version_number}")
        }
        Err(ipv4_err::HeaderSliceError::Content(ipv4_err::HeaderError::HeaderLengthSmallerThanHeader { ihl })) => {
            return put!(out, " bad IPv4 IHL {ihl}")
        }
    };
    let hlen = h.slice().len();
    put!(out, " IPv4 {} > {} ttl {}", h.source_addr(), h.destination_addr(), h.ttl());
    if h.dont_fragment() {
        put!(out, " DF");
    }
    let offset = usize::from(h.fragments_offset().value()) * 8;
    if h.more_fragments() || offset != 0 {
        put!(out, " frag {offset}{}", if h.more_fragments() { "+" } else { "" });
    }
    if hlen > 20 {
        put!(out, " options {}", hlen - 20);
    }
    if !checksum_ok(h.slice()) {
        put!(out, " bad ip cksum");
    }
    let total = usize::from(h.total_len());
    if total < hlen {
        return put!(out, " bad total length {total}");
    }
    let Some(payload) = b.get(hlen..total) else {
        return put!(out, " truncated (total length {total}, have {})", b.len());
    };
    if offset != 0 {
        return put!(out, " payload {}", payload.len());
    }
    // A first fragment carries only part of the segment its transport checksum covers.
    let pseudo = (!h.more_fragments()).then_some(Pseudo::V4(h.source(), h.destination()));
    transport(h.protocol(), payload, pseudo, depth, out);
}

fn ipv6_line(b: &[u8], depth: u8, out: &mut String) {
    let h = match Ipv6HeaderSlice::from_slice(b) {
        Ok(h) => h,
        Err(ipv6::HeaderSliceError::Len(e)) => return put!(out, " truncated IPv6 header ({})", have(&e)),
        Err(ipv6::HeaderSliceError::Content(ipv6::HeaderError::UnexpectedVersion { version_number })) => {
            return put!(out, " bad IPv6 version {version_number}")
        }
    };
    put!(out, " IPv6 {} > {} hlim {}", h.source_addr(), h.destination_addr(), h.hop_limit());
    let hlen = h.slice().len();
    let plen = usize::from(h.payload_length());
    let Some(payload) = b.get(hlen..hlen + plen) else {
        return put!(out, " truncated (payload length {plen}, have {})", b.len().saturating_sub(hlen));
    };
    match Ipv6ExtensionsSlice::from_slice(h.next_header(), payload) {
        Ok((exts, next, rest)) => {
            if !exts.is_empty() {
                put!(out, " exts {}", payload.len() - rest.len());
            }
            if exts.is_fragmenting_payload() {
                return put!(out, " frag payload {}", rest.len());
            }
            transport(next, rest, Some(Pseudo::V6(h.source(), h.destination())), depth, out);
        }
        Err(ipv6_exts::HeaderSliceError::Len(e)) => put!(out, " truncated extension header ({})", have(&e)),
        Err(ipv6_exts::HeaderSliceError::Content(_)) => put!(out, " bad extension header"),
    }
}

/// Decodes an IP payload. `pseudo` is `None` when the payload is not a whole segment (a fragment), so checksums
/// are not checked.
fn transport(proto: IpNumber, seg: &[u8], pseudo: Option<Pseudo>, depth: u8, out: &mut String) {
    match proto {
        IpNumber::UDP => udp_line(seg, pseudo, depth, out),
        IpNumber::TCP => tcp_line(seg, pseudo, out),
        IpNumber::ICMP => icmp4_line(seg, pseudo.is_some(), out),
        IpNumber::IPV6_ICMP => icmp6_line(seg, pseudo, out),
        p => put!(out, " proto {} payload {}", p.0, seg.len()),
    }
}

fn udp_line(seg: &[u8], pseudo: Option<Pseudo>, depth: u8, out: &mut String) {
    let h = match UdpHeaderSlice::from_slice(seg) {
        Ok(h) => h,
        Err(e) => return put!(out, " truncated UDP header ({})", have(&e)),
    };
    put!(out, " UDP {} > {}", h.source_port(), h.destination_port());
    let len = usize::from(h.length());
    if len < UdpHeader::LEN {
        return put!(out, " bad length {len}");
    }
    let Some(datagram) = seg.get(..len) else {
        return put!(out, " truncated (length {len}, have {})", seg.len());
    };
    put!(out, " payload {}", len - UdpHeader::LEN);
    if len < seg.len() {
        put!(out, " trailing {}", seg.len() - len);
    }
    let unchecked = matches!(pseudo, Some(Pseudo::V4(..))) && h.checksum() == 0;
    if let Some(p) = pseudo.filter(|_| !unchecked) {
        if !p.verifies(IpNumber::UDP.0, datagram) {
            put!(out, " bad cksum");
        }
    }
    if h.destination_port() == super::udp::VXLAN_PORT && depth < MAX_TUNNEL_DEPTH {
        let Ok(vx) = super::vxlan::Packet::new_checked(&datagram[UdpHeader::LEN..]) else { return };
        put!(out, " VXLAN vni {}", vx.vni());
        if !vx.is_strict() {
            put!(out, " flags 0x{:02x} (not strict)", vx.flags());
        }
        out.push_str(": ");
        describe_into(vx.payload(), depth + 1, out);
    }
}

/// tcpdump's flag letters: `S`, `F`, `P`, `R`, `U`, `E`, `W`, and `.` for ACK.
fn tcp_flags(h: &TcpHeaderSlice<'_>) -> String {
    let letters = [
        (h.syn(), 'S'),
        (h.fin(), 'F'),
        (h.psh(), 'P'),
        (h.rst(), 'R'),
        (h.urg(), 'U'),
        (h.ece(), 'E'),
        (h.cwr(), 'W'),
        (h.ack(), '.'),
    ];
    let s: String = letters.iter().filter(|(set, _)| *set).map(|(_, c)| *c).collect();
    if s.is_empty() {
        "none".to_string()
    } else {
        s
    }
}

fn tcp_line(seg: &[u8], pseudo: Option<Pseudo>, out: &mut String) {
    let h = match TcpHeaderSlice::from_slice(seg) {
        Ok(h) => h,
        Err(tcp_err::HeaderSliceError::Len(e)) => return put!(out, " truncated TCP header ({})", have(&e)),
        Err(tcp_err::HeaderSliceError::Content(tcp_err::HeaderError::DataOffsetTooSmall { data_offset })) => {
            return put!(out, " TCP bad data offset {data_offset}")
        }
    };
    put!(out, " TCP {} > {} [{}] seq {}", h.source_port(), h.destination_port(), tcp_flags(&h), h.sequence_number());
    if h.ack() {
        put!(out, " ack {}", h.acknowledgment_number());
    }
    put!(out, " win {} payload {}", h.window_size(), seg.len().saturating_sub(h.slice().len()));
    if let Some(p) = pseudo {
        if !p.verifies(IpNumber::TCP.0, seg) {
            put!(out, " bad cksum");
        }
    }
}

fn icmp4_line(seg: &[u8], check: bool, out: &mut String) {
    let Ok(s) = icmpv4::Packet::new_checked(seg) else {
        return put!(out, " truncated ICMP (have {} of {} bytes)", seg.len(), icmpv4::HEADER_LEN);
    };
    let (t, code) = (s.msg_type(), s.code());
    put!(out, " ICMP");
    match t {
        icmpv4::msg_type::ECHO_REPLY | icmpv4::msg_type::ECHO_REQUEST => put!(
            out,
            " echo {} id {} seq {} payload {}",
            if t == icmpv4::msg_type::ECHO_REQUEST { "request" } else { "reply" },
            s.echo_ident(),
            s.echo_seq_no(),
            s.payload().len()
        ),
        icmpv4::msg_type::DEST_UNREACHABLE => {
            const CODES: [&str; 16] = [
                "net",
                "host",
                "protocol",
                "port",
                "frag-needed",
                "source-route-failed",
                "net-unknown",
                "host-unknown",
                "source-host-isolated",
                "net-prohibited",
                "host-prohibited",
                "net-tos",
                "host-tos",
                "admin-prohibited",
                "precedence-violation",
                "precedence-cutoff",
            ];
            match CODES.get(usize::from(code)) {
                Some(name) => put!(out, " unreachable {name}"),
                None => put!(out, " unreachable code {code}"),
            }
            if code == icmpv4::unreachable::FRAG_NEEDED {
                put!(out, " mtu {}", s.next_hop_mtu());
            }
            quoted(s.payload(), out);
        }
        icmpv4::msg_type::TIME_EXCEEDED => {
            match code {
                0 => put!(out, " time-exceeded ttl"),
                1 => put!(out, " time-exceeded reassembly"),
                c => put!(out, " time-exceeded code {c}"),
            }
            quoted(s.payload(), out);
        }
        icmpv4::msg_type::REDIRECT => {
            put!(out, " redirect code {code} to {}", s.gateway());
            quoted(s.payload(), out);
        }
        icmpv4::msg_type::PARAM_PROBLEM => {
            put!(out, " param-problem code {code} ptr {}", s.pointer());
            quoted(s.payload(), out);
        }
        t => put!(out, " type {t} code {code} payload {}", s.payload().len()),
    }
    if check && !s.verify_checksum() {
        put!(out, " bad cksum");
    }
}

/// The offending packet quoted by an ICMP error: `for UDP 10.0.0.1:1000 > 10.0.0.2:53`.
fn quoted(b: &[u8], out: &mut String) {
    // The quote is cut after 8 bytes of payload: only the header can be checked whole.
    let h = ipv4::Packet::new_unchecked(b);
    if h.check_header().is_err() {
        return put!(out, " for ({} bytes, no IPv4 header)", b.len());
    }
    let (src, dst) = (h.src_addr(), h.dst_addr());
    let l4 = b.get(h.header_len()..).unwrap_or_default();
    let name = match h.protocol() {
        super::ip_proto::UDP => "UDP",
        super::ip_proto::TCP => "TCP",
        super::ip_proto::ICMP => "ICMP",
        p => return put!(out, " for proto {p} {src} > {dst}"),
    };
    if h.protocol() != super::ip_proto::ICMP && l4.len() >= 4 {
        // TCP and UDP ports sit at the same place: an unchecked view of the quoted bytes reads them.
        let t = tcp::Packet::new_unchecked(l4);
        put!(out, " for {name} {src}:{} > {dst}:{}", t.src_port(), t.dst_port())
    } else {
        put!(out, " for {name} {src} > {dst}")
    }
}

fn icmp6_line(seg: &[u8], pseudo: Option<Pseudo>, out: &mut String) {
    let s = match Icmpv6Slice::from_slice(seg) {
        Ok(s) => s,
        Err(e) => return put!(out, " truncated ICMP6 ({})", have(&e)),
    };
    let (t, code, r) = (s.type_u8(), s.code_u8(), s.bytes5to8());
    let target = seg.get(8..24).and_then(|b| <[u8; 16]>::try_from(b).ok()).map(Ipv6Addr::from);
    put!(out, " ICMP6");
    match (t, target) {
        (128 | 129, _) => put!(
            out,
            " echo {} id {} seq {} payload {}",
            if t == 128 { "request" } else { "reply" },
            u16::from_be_bytes([r[0], r[1]]),
            u16::from_be_bytes([r[2], r[3]]),
            s.payload().len()
        ),
        (1, _) => put!(out, " unreachable code {code}"),
        (2, _) => put!(out, " packet-too-big mtu {}", u32::from_be_bytes(r)),
        (3, _) => put!(out, " time-exceeded code {code}"),
        (4, _) => put!(out, " param-problem code {code}"),
        (133, _) => put!(out, " router-solicit"),
        (134, _) => put!(out, " router-advert"),
        (135, Some(target)) => put!(out, " neighbor-solicit who-has {target}"),
        (136, Some(target)) => put!(out, " neighbor-advert {target}"),
        (137, _) => put!(out, " redirect"),
        (t, _) => put!(out, " type {t} code {code} payload {}", s.payload().len()),
    }
    if let Some(p @ Pseudo::V6(..)) = pseudo {
        if !p.verifies(IpNumber::IPV6_ICMP.0, seg) {
            put!(out, " bad cksum");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builder::*;
    use etherparse::{icmpv4, IcmpEchoHeader, Icmpv4Type};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const AB: &str = "02:00:00:00:00:01 > 02:00:00:00:00:02";

    fn samples() -> Vec<Vec<u8>> {
        let v4 = Ipv4Spec::new(A, B, IP_A, IP_B);
        let (s6, d6) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        vec![
            arp_request(A, IP_A, IP_B),
            arp_reply(B, IP_B, A, IP_A),
            gratuitous_arp(A, IP_A),
            v4.icmp_echo_request(1, 2, 56),
            v4.udp(1000, 2000, 18),
            with_vlan(&v4.udp(1000, 2000, 300), 10),
            v4.tcp(TcpSegment::new(40000, 80, TcpFlags::SYN | TcpFlags::ACK).seq(1).ack(2), 5),
            v4.reversed().icmp(
                Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit),
                &v4.udp(1000, 33434, 0)[14..42],
            ),
            ipv6_udp(A, B, s6, d6, 5000, 6000, 4),
            eth(B, A, 0x88b5, &[1, 2, 3]),
            v4.vxlan(50000, 4789, 100, &v4.udp(1000, 2000, 18)),
        ]
    }

    #[test]
    fn vxlan_shows_its_vni_and_one_inner_frame() {
        let v4 = Ipv4Spec::new(A, B, IP_A, IP_B);
        let inner = v4.udp(1000, 2000, 18);
        let line = describe(&v4.vxlan(50000, 4789, 100, &inner));
        assert_eq!(
            line,
            format!(
                "{AB} IPv4 10.0.0.1 > 10.0.0.2 ttl 64 UDP 50000 > 4789 payload 68 VXLAN vni 100: \
                 {AB} IPv4 10.0.0.1 > 10.0.0.2 ttl 64 UDP 1000 > 2000 payload 18, len 60, len 110"
            )
        );
        // Nested: the second tunnel is shown as plain UDP.
        let nested = describe(&v4.vxlan(50000, 4789, 7, &v4.vxlan(50001, 4789, 8, &inner)));
        assert!(nested.contains("VXLAN vni 7: ") && !nested.contains("vni 8"), "{nested}");
        let mut bad = v4.vxlan(50000, 4789, 100, &inner);
        bad[42] = 0x0c;
        assert!(describe(&bad).contains("VXLAN vni 100 flags 0x0c (not strict): "), "{}", describe(&bad));
    }

    #[test]
    fn describes_arp() {
        assert_eq!(
            describe(&arp_request(A, IP_A, IP_B)),
            "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP who-has 10.0.0.2 tell 10.0.0.1, len 60"
        );
        assert_eq!(
            describe(&arp_reply(B, IP_B, A, IP_A)),
            "02:00:00:00:00:02 > 02:00:00:00:00:01 ARP reply 10.0.0.2 is-at 02:00:00:00:00:02, len 60"
        );
        assert_eq!(
            describe(&gratuitous_arp(A, IP_A)),
            "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP who-has 10.0.0.1 tell 10.0.0.1 (gratuitous), len 60"
        );
    }

    #[test]
    fn describes_ipv4_transports() {
        let v4 = Ipv4Spec::new(A, B, IP_A, IP_B);
        assert_eq!(
            describe(&with_vlan(&v4.udp(1000, 2000, 18), 10)),
            format!("{AB} vlan 10 IPv4 10.0.0.1 > 10.0.0.2 ttl 64 UDP 1000 > 2000 payload 18, len 64")
        );
        let syn_ack = TcpSegment::new(40000, 80, TcpFlags::SYN | TcpFlags::ACK).seq(1).ack(2);
        assert_eq!(
            describe(&v4.with_opts(Ipv4Opts { df: true, ..Ipv4Opts::default() }).tcp(syn_ack, 0)),
            format!(
                "{AB} IPv4 10.0.0.1 > 10.0.0.2 ttl 64 DF TCP 40000 > 80 [S.] seq 1 ack 2 win 65535 payload 0, len 60"
            )
        );
        assert_eq!(
            describe(&v4.tcp(TcpSegment::new(1, 2, TcpFlags::RST).seq(9), 0)),
            format!("{AB} IPv4 10.0.0.1 > 10.0.0.2 ttl 64 TCP 1 > 2 [R] seq 9 win 65535 payload 0, len 60")
        );
        assert_eq!(
            describe(&v4.reversed().icmp_echo_reply(7, 1, 56)),
            "02:00:00:00:00:02 > 02:00:00:00:00:01 IPv4 10.0.0.2 > 10.0.0.1 ttl 64 ICMP echo reply id 7 seq 1 payload 56, \
             len 98"
        );
        let probe = v4.with_opts(Ipv4Opts { ttl: 1, ..Ipv4Opts::default() }).udp(1000, 33434, 0);
        let te = Ipv4Spec::new(B, A, Ipv4Addr::new(10, 0, 0, 254), IP_A)
            .icmp(Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit), &probe[14..42]);
        assert_eq!(
            describe(&te),
            "02:00:00:00:00:02 > 02:00:00:00:00:01 IPv4 10.0.0.254 > 10.0.0.1 ttl 64 ICMP time-exceeded ttl \
             for UDP 10.0.0.1:1000 > 10.0.0.2:33434, len 70"
        );
        let unreach = v4.icmp(
            Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: 1400,
            }),
            &probe[14..42],
        );
        assert!(describe(&unreach).contains("ICMP unreachable frag-needed mtu 1400 for UDP"), "{}", describe(&unreach));
        let echo = v4.icmp(Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 1, seq: 2 }), &[]);
        assert!(describe(&echo).contains("ICMP echo request id 1 seq 2 payload 0, len 60"));
    }

    #[test]
    fn describes_ipv6_and_other_ethertypes() {
        let (s6, d6) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        assert_eq!(
            describe(&ipv6_udp(A, B, s6, d6, 5000, 6000, 4)),
            format!("{AB} IPv6 fd00::1 > fd00::2 hlim 64 UDP 5000 > 6000 payload 4, len 66")
        );
        assert_eq!(describe(&eth(B, A, 0x88b5, &[1, 2, 3])), format!("{AB} ethertype 0x88b5 payload 46, len 60"));
        assert_eq!(describe(&eth(B, A, 46, &[0; 46])), format!("{AB} 802.3 length 46, len 60"));
    }

    #[test]
    fn describes_what_is_wrong() {
        assert_eq!(describe(&[0; 10]), "runt 10 bytes");
        let udp = udp(A, B, IP_A, IP_B, 1000, 2000, 18);
        assert_eq!(describe(&udp[..24]), format!("{AB} truncated IPv4 header (have 10 of 20 bytes), len 24"));
        assert_eq!(
            describe(&udp[..50]),
            format!("{AB} IPv4 10.0.0.1 > 10.0.0.2 ttl 64 truncated (total length 46, have 36), len 50")
        );
        let mut bad_ihl = udp.clone();
        bad_ihl[14] = 0x43;
        assert_eq!(describe(&bad_ihl), format!("{AB} bad IPv4 IHL 3, len 60"));
        let mut v6 = udp.clone();
        v6[14] = 0x65;
        assert_eq!(describe(&v6), format!("{AB} bad IPv4 version 6, len 60"));
        let mut bad_sum = udp.clone();
        bad_sum[22] = 63; // TTL changed without fixing either checksum (UDP's does not cover the TTL)
        assert!(describe(&bad_sum).contains("ttl 63 bad ip cksum UDP 1000 > 2000 payload 18, len 60"));
        let mut bad_udp = udp.clone();
        bad_udp[50] ^= 0xff;
        assert!(describe(&bad_udp).ends_with("payload 18 bad cksum, len 60"));
        let tagged = with_vlan(&udp, 7);
        assert_eq!(describe(&tagged[..16]), format!("{AB} truncated VLAN tag (have 2 of 4 bytes), len 16"));
        let arp = arp_request(A, IP_A, IP_B);
        assert_eq!(
            describe(&arp[..20]),
            "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff truncated ARP (6 bytes), len 20".to_string()
        );
    }

    #[test]
    fn every_truncation_and_byte_flip_of_valid_frames_is_described() {
        for frame in samples() {
            for n in 0..=frame.len() {
                let line = describe(&frame[..n]);
                assert!(!line.is_empty());
            }
            for i in 0..frame.len() {
                for v in [0x00, 0x01, 0x0f, 0x45, 0x80, 0xff] {
                    let mut f = frame.clone();
                    f[i] = v;
                    describe(&f);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            describe(&bytes);
        }

        #[test]
        fn random_bytes_after_plausible_headers_never_panic(
            which in 0usize..4,
            tail in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            // Keep the Ethernet header (and for IPv4 the first header byte) so decoding goes deep.
            let prefixes: [&[u8]; 4] = [
                &[0x08, 0x00, 0x45],
                &[0x86, 0xdd, 0x60],
                &[0x08, 0x06],
                &[0x81, 0x00, 0x00, 0x0a, 0x08, 0x00, 0x45],
            ];
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
            f.extend_from_slice(prefixes[which]);
            f.extend_from_slice(&tail);
            describe(&f);
        }
    }
}
