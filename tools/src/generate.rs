//! The capture generator behind `vswitch-pcap gen`: turns a small TOML description of hosts and frames into a
//! synthetic, deterministic capture ([`Spec::from_toml`], [`Spec::frames`], [`generate_file`]).
//!
//! # Spec format
//!
//! ```toml
//! # Hosts are named once; frames refer to them by name.
//! [[host]]
//! name = "a"
//! mac = "02:00:00:00:00:01"
//! ip = "10.0.0.1"            # optional: needed by IPv4 and ARP frames that use this host
//! ip6 = "fd00::1"            # optional: needed by ipv6-udp frames that use this host
//!
//! [[host]]
//! name = "b"
//! mac = "02:00:00:00:00:02"
//! ip = "10.0.0.2"
//!
//! # One [[frame]] table per frame or train of identical frames.
//! [[frame]]
//! kind = "arp-request"       # a asks who has b's IP, broadcast
//! from = "a"
//! to = "b"
//! at = 0.0
//!
//! [[frame]]
//! kind = "udp"
//! from = "a"
//! to = "b"
//! at = 0.001                 # seconds; time of the first frame
//! count = 3                  # three frames ...
//! interval = 0.0005          # ... 500 µs apart (or: rate = 2000, frames per second)
//! sport = 1000
//! dport = 2000
//! payload = 18               # UDP payload bytes (or: size = 60, the whole frame)
//! vlan = 10
//! ```
//!
//! ## `[[host]]`
//! `name` (unique), `mac`, and optionally `ip` (IPv4) and `ip6` (IPv6).
//!
//! ## `[[frame]]`
//! | field | meaning | default |
//! |---|---|---|
//! | `kind` | `arp-request`, `arp-reply`, `gratuitous-arp`, `icmp-echo`, `icmp-reply`, `icmp-error`, `udp`, `tcp`, `ipv6-udp`, `raw` | required |
//! | `from`, `to` | host names: Ethernet and IP source / destination | |
//! | `src_mac`, `dst_mac` | override the Ethernet addresses (e.g. `"ff:ff:ff:ff:ff:ff"`) | from the hosts |
//! | `src_ip`, `dst_ip` | override the IP addresses (e.g. a destination beyond a router) | from the hosts |
//! | `at` | time of the first frame, seconds (integer or float) | 0 |
//! | `count` | number of frames | 1 |
//! | `interval` / `rate` | seconds between frames / frames per second (one of them when `count` > 1) | |
//! | `payload` | bytes after the last header: UDP/TCP/ICMP data, or after the Ethernet header for `raw` | 0 |
//! | `size` | total frame length instead of `payload`: Ethernet header to the end, VLAN tag included, no FCS; at least 60 (64 with `vlan`) | |
//! | `sport`, `dport` | UDP/TCP ports | required for `udp`, `tcp`, `ipv6-udp` |
//! | `flags` | TCP flags, e.g. `["SYN"]`, `["SYN", "ACK"]`; names `SYN ACK FIN RST PSH`, any case | required for `tcp` |
//! | `seq` | TCP sequence number of the first frame (then advances by the payload, +1 for SYN and FIN, per frame); ICMP echo sequence (then +1 per frame) | 0 (TCP), 1 (ICMP) |
//! | `ack` | TCP acknowledgment number | 0 |
//! | `id` | ICMP echo identifier | 1 |
//! | `ttl` | IPv4 TTL or IPv6 hop limit | 64 |
//! | `df`, `ip_id` | IPv4 don't-fragment flag, identification | false, 0 |
//! | `mf`, `frag_offset` | IPv4 more-fragments flag and fragment offset in bytes (a multiple of 8), written over the finished packet (the header checksum is recomputed; the payload stays what the kind builds, e.g. a UDP header) | false, 0 (untouched when neither is given) |
//! | `icmp_type`, `icmp_code` | `icmp-error`: e.g. 11/0 (Time Exceeded), 3/4 (Fragmentation Needed), 3/3 (port unreachable) | required, 0 |
//! | `mtu` | `icmp-error` 3/4: the next-hop MTU (low 16 bits of the second word) | 0 |
//! | `quote` | `icmp-error`: the offending packet, an inline table in this same language (`udp`, `tcp`, `icmp-echo` or `icmp-reply`; `from`/`to` or `src_ip`/`dst_ip`, ports, `flags`, `ttl`, `ip_id`, `payload`, …); MACs are not needed | required |
//! | `quote_bytes` | `icmp-error`: bytes of the quoted packet after its IP header (RFC 792: 8) | 8 |
//! | `vlan` | VLAN ID of an 802.1Q tag to insert (0–4095) | untagged |
//! | `ethertype` | EtherType of a `raw` frame (TOML allows `0x88b5`) | required for `raw` |
//! | `random_src_mac`, `seed` | a fresh random locally administered unicast source MAC per frame (MAC flood), from a SplitMix64 stream seeded with `seed`; for ARP also the sender MAC | false, 0 |
//! | `set_bytes` | `[[offset, value], ...]`: overwrite bytes of the finished frame (checksums are not fixed: this is for malformed frames, e.g. `[[14, 0x43]]` for IHL 3) | |
//! | `truncate` | cut the frame to this many bytes (after `set_bytes`) | |
//! | `vxlan` | wrap the frame (the inner frame, VLAN tag included) in VXLAN, an inline table: `from`, `to` (hosts with `ip`: the outer Ethernet and IPv4 addresses, VTEP to VTEP), `vni`, and optionally `sport` (49152) and `dport` (4789). Outer IPv4 has DF set and TTL 64, outer UDP checksum 0. `set_bytes` and `truncate` then apply to the outer frame; `size`/`payload` describe the inner one | not wrapped |
//!
//! Per kind: `arp-request` is a broadcast (unless `dst_mac`) asking for `to`'s IP (or `dst_ip`) on behalf of
//! `from`; `arp-reply` tells `to` that `from`'s IP is at `from`'s MAC; `gratuitous-arp` announces `from`'s IP,
//! broadcast, and takes no `to`; the ARP sender MAC is always the Ethernet source. `icmp-echo` / `icmp-reply`
//! are echo request / reply. `icmp-error` is an ICMP message of `icmp_type`/`icmp_code` whose data is the
//! IP header and first `quote_bytes` bytes of the `quote` packet, checksums valid, e.g.
//! `quote = { kind = "udp", src_ip = "203.0.113.2", dst_ip = "198.51.100.10", sport = 40000, dport = 53, ttl = 1 }`.
//! `raw` is an Ethernet frame with `ethertype` and pattern payload, and takes no IP
//! fields. A field that does not apply to the kind is an error, as is an unknown field.
//!
//! Payload bytes are the pattern `0, 1, 2, …, 255, 0, …` and frames are zero-padded to 60 bytes (see
//! [`dataplane::wire::builder`]). Frame times are rounded to whole microseconds and the capture is written with
//! microsecond timestamps. Frames of all entries are ordered by time; frames with equal times keep the order of
//! the entries (and of repeats within an entry). Same spec, same bytes.
//!
//! Errors name the entry as `frame #N` (counting `[[frame]]` tables from 1, with its line) and the field.

use dataplane::port::pcap::{CaptureWriter, CapturedFrame};
use dataplane::wire::builder::{
    self, Arp, ArpOp, Ipv4Opts, Ipv4Spec, Ipv6Spec, TcpFlags, TcpSegment, ETH_HEADER_LEN, MIN_FRAME_LEN, VLAN_TAG_LEN,
};
use dataplane::wire::vxlan::OUTER_LEN as VXLAN_OVERHEAD;
use dataplane::wire::MacAddr;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// Longest frame the generator writes (the capture's snap length).
pub const MAX_FRAME_LEN: usize = 65535;
/// Most frames one entry may produce.
pub const MAX_COUNT: u64 = 10_000_000;
/// Capture timestamps hold 32-bit seconds.
const MAX_SECONDS: f64 = u32::MAX as f64;

/// A parsed spec: hosts and frame entries, in file order.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The `[[host]]` tables.
    pub hosts: Vec<Host>,
    /// The `[[frame]]` tables.
    pub entries: Vec<Entry>,
}

/// A named host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Name frames refer to.
    pub name: String,
    /// Its MAC address.
    pub mac: MacAddr,
    /// Its IPv4 address.
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address.
    pub ip6: Option<Ipv6Addr>,
}

/// What an entry generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// ARP who-has.
    ArpRequest,
    /// ARP is-at.
    ArpReply,
    /// ARP announcement.
    GratuitousArp,
    /// ICMP echo request.
    IcmpEcho,
    /// ICMP echo reply.
    IcmpReply,
    /// UDP over IPv4.
    Udp,
    /// TCP over IPv4.
    Tcp,
    /// UDP over IPv6.
    Ipv6Udp,
    /// Ethernet frame with a given EtherType.
    Raw,
    /// ICMP error (Destination Unreachable, Time Exceeded, ...) quoting a packet.
    IcmpError,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ArpRequest => "arp-request",
            Kind::ArpReply => "arp-reply",
            Kind::GratuitousArp => "gratuitous-arp",
            Kind::IcmpEcho => "icmp-echo",
            Kind::IcmpReply => "icmp-reply",
            Kind::Udp => "udp",
            Kind::Tcp => "tcp",
            Kind::Ipv6Udp => "ipv6-udp",
            Kind::Raw => "raw",
            Kind::IcmpError => "icmp-error",
        }
    }

    /// Bytes before the payload: Ethernet, IP and transport headers (ARP: the whole message).
    fn header_len(self) -> usize {
        ETH_HEADER_LEN
            + match self {
                Kind::ArpRequest | Kind::ArpReply | Kind::GratuitousArp => builder::ARP_LEN,
                Kind::IcmpEcho | Kind::IcmpReply | Kind::Udp | Kind::IcmpError => 20 + 8,
                Kind::Tcp => 20 + 20,
                Kind::Ipv6Udp => 40 + 8,
                Kind::Raw => 0,
            }
    }

    /// Fields beyond the common ones that apply to this kind.
    fn specific_fields(self) -> &'static [&'static str] {
        match self {
            Kind::ArpRequest | Kind::ArpReply => &["to", "src_ip", "dst_ip"],
            Kind::GratuitousArp => &["src_ip"],
            Kind::IcmpEcho | Kind::IcmpReply => {
                &["to", "src_ip", "dst_ip", "ttl", "df", "ip_id", "mf", "frag_offset", "payload", "id", "seq"]
            }
            Kind::Udp => {
                &["to", "src_ip", "dst_ip", "ttl", "df", "ip_id", "mf", "frag_offset", "payload", "sport", "dport"]
            }
            Kind::Tcp => &[
                "to",
                "src_ip",
                "dst_ip",
                "ttl",
                "df",
                "ip_id",
                "mf",
                "frag_offset",
                "payload",
                "sport",
                "dport",
                "flags",
                "seq",
                "ack",
            ],
            Kind::IcmpError => &[
                "to",
                "src_ip",
                "dst_ip",
                "ttl",
                "df",
                "ip_id",
                "icmp_type",
                "icmp_code",
                "mtu",
                "quote",
                "quote_bytes",
            ],
            Kind::Ipv6Udp => &["to", "src_ip", "dst_ip", "ttl", "payload", "sport", "dport"],
            Kind::Raw => &["to", "ethertype", "payload"],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A number written as a TOML integer or float (seconds, or frames per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number(pub f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

/// One `[[frame]]` table. See the module documentation for the meaning of each field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub kind: Kind,
    pub from: Option<String>,
    pub to: Option<String>,
    pub src_mac: Option<MacAddr>,
    pub dst_mac: Option<MacAddr>,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub at: Option<Number>,
    pub count: Option<u64>,
    pub interval: Option<Number>,
    pub rate: Option<Number>,
    pub payload: Option<usize>,
    pub size: Option<usize>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub flags: Option<Vec<String>>,
    pub seq: Option<u32>,
    pub ack: Option<u32>,
    pub id: Option<u16>,
    pub ttl: Option<u8>,
    pub df: Option<bool>,
    pub ip_id: Option<u16>,
    pub vlan: Option<u16>,
    pub ethertype: Option<u16>,
    pub random_src_mac: Option<bool>,
    pub seed: Option<u64>,
    pub set_bytes: Option<Vec<(usize, u8)>>,
    pub truncate: Option<usize>,
    pub mf: Option<bool>,
    pub frag_offset: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub mtu: Option<u16>,
    pub quote: Option<Box<Entry>>,
    pub quote_bytes: Option<usize>,
    pub vxlan: Option<Tunnel>,
    /// Line of the table in the spec file (set by [`Spec::from_toml`]; used in error messages).
    #[serde(skip)]
    pub line: Option<usize>,
}

/// `vxlan = { ... }`: the outer headers a frame is wrapped in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tunnel {
    /// The sending VTEP (a host with `ip`).
    pub from: String,
    /// The receiving VTEP.
    pub to: String,
    /// The VXLAN network identifier (24 bits).
    pub vni: u32,
    /// Outer UDP source port.
    pub sport: Option<u16>,
    /// Outer UDP destination port.
    pub dport: Option<u16>,
}

/// Fields every kind accepts.
const COMMON_FIELDS: [&str; 15] = [
    "from",
    "src_mac",
    "dst_mac",
    "at",
    "count",
    "interval",
    "rate",
    "size",
    "vlan",
    "random_src_mac",
    "seed",
    "set_bytes",
    "truncate",
    "kind",
    "vxlan",
];

impl Entry {
    /// Names of the optional fields that are set.
    fn given_fields(&self) -> Vec<&'static str> {
        let set = [
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("src_mac", self.src_mac.is_some()),
            ("dst_mac", self.dst_mac.is_some()),
            ("src_ip", self.src_ip.is_some()),
            ("dst_ip", self.dst_ip.is_some()),
            ("at", self.at.is_some()),
            ("count", self.count.is_some()),
            ("interval", self.interval.is_some()),
            ("rate", self.rate.is_some()),
            ("payload", self.payload.is_some()),
            ("size", self.size.is_some()),
            ("sport", self.sport.is_some()),
            ("dport", self.dport.is_some()),
            ("flags", self.flags.is_some()),
            ("seq", self.seq.is_some()),
            ("ack", self.ack.is_some()),
            ("id", self.id.is_some()),
            ("ttl", self.ttl.is_some()),
            ("df", self.df.is_some()),
            ("ip_id", self.ip_id.is_some()),
            ("vlan", self.vlan.is_some()),
            ("ethertype", self.ethertype.is_some()),
            ("random_src_mac", self.random_src_mac.is_some()),
            ("seed", self.seed.is_some()),
            ("set_bytes", self.set_bytes.is_some()),
            ("truncate", self.truncate.is_some()),
            ("mf", self.mf.is_some()),
            ("frag_offset", self.frag_offset.is_some()),
            ("icmp_type", self.icmp_type.is_some()),
            ("icmp_code", self.icmp_code.is_some()),
            ("mtu", self.mtu.is_some()),
            ("quote", self.quote.is_some()),
            ("quote_bytes", self.quote_bytes.is_some()),
            ("vxlan", self.vxlan.is_some()),
        ];
        set.iter().filter(|(_, given)| *given).map(|(name, _)| *name).collect()
    }
}

/// A spec that cannot be turned into frames.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not TOML, or not this format: unknown or misspelt field, wrong type, unknown kind (the message has the line).
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// An unusable `[[host]]` table (counted from 1).
    #[error("host #{number} {name:?}: {message}")]
    Host {
        /// Position among the `[[host]]` tables, from 1.
        number: usize,
        /// Its name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// An unusable `[[frame]]` table (counted from 1).
    #[error("frame #{number} ({kind}{}): `{field}`: {message}", .line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Frame {
        /// Position among the `[[frame]]` tables, from 1.
        number: usize,
        /// Its line in the file, when known.
        line: Option<usize>,
        /// Its kind.
        kind: Kind,
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// `vswitch-pcap gen` failed.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// The spec file could not be read.
    #[error("{}: cannot read spec: {source}", path.display())]
    ReadSpec {
        /// The spec file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The spec is invalid.
    #[error("{}: {source}", path.display())]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// What is wrong.
        source: SpecError,
    },
    /// The capture could not be written.
    #[error("{}: cannot write capture: {source}", path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    host: Vec<Host>,
    #[serde(default)]
    frame: Vec<toml::Spanned<Entry>>,
}

impl Spec {
    /// Parses a spec from TOML text. Only the syntax and types are checked here; [`Spec::frames`] checks the rest.
    pub fn from_toml(text: &str) -> Result<Spec, SpecError> {
        let raw: RawSpec = toml::from_str(text)?;
        let line_of = |offset: usize| text.get(..offset).map(|t| t.matches('\n').count() + 1);
        let entries = raw
            .frame
            .into_iter()
            .map(|spanned| {
                let line = line_of(spanned.span().start);
                Entry { line, ..spanned.into_inner() }
            })
            .collect();
        Ok(Spec { hosts: raw.host, entries })
    }

    /// All frames of the spec, ordered by time (stable: equal times keep entry order).
    pub fn frames(&self) -> Result<Vec<CapturedFrame>, SpecError> {
        let mut hosts = HashMap::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let err = |message: &str| SpecError::Host { number: i + 1, name: h.name.clone(), message: message.into() };
            if h.name.is_empty() {
                return Err(err("`name` is empty"));
            }
            if hosts.insert(h.name.as_str(), h).is_some() {
                return Err(err("a host of this name is defined earlier"));
            }
        }
        let mut frames = Vec::new();
        for (i, entry) in self.entries.iter().enumerate() {
            let cx = EntryCx { number: i + 1, entry, hosts: &hosts };
            cx.generate(&mut frames)?;
        }
        frames.sort_by_key(|f: &CapturedFrame| f.ts);
        Ok(frames)
    }
}

/// Reads the spec at `spec`, writes its frames to a new microsecond capture at `out`, and returns how many.
pub fn generate_file(spec: &Path, out: &Path) -> Result<usize, GenError> {
    let text =
        std::fs::read_to_string(spec).map_err(|source| GenError::ReadSpec { path: spec.to_path_buf(), source })?;
    let frames = Spec::from_toml(&text)
        .and_then(|s| s.frames())
        .map_err(|source| GenError::Spec { path: spec.to_path_buf(), source })?;
    write_capture(out, &frames).map_err(|source| GenError::Write { path: out.to_path_buf(), source })?;
    Ok(frames.len())
}

/// Writes `frames` to a new microsecond capture at `path` (e.g. generated inputs for a replay).
pub fn write_capture(path: &Path, frames: &[CapturedFrame]) -> std::io::Result<()> {
    let mut w = CaptureWriter::create(path, false)?;
    for f in frames {
        w.write(f.ts, &f.data)?;
    }
    w.finish()
}

/// SplitMix64 (Steele, Lea, Flood 2014): a fixed, fully specified generator, so random MACs in a generated
/// capture are the same on every platform and with every version of every crate.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One entry being generated, with what its error messages need.
struct EntryCx<'a> {
    number: usize,
    entry: &'a Entry,
    hosts: &'a HashMap<&'a str, &'a Host>,
}

/// The addresses an entry's frames use.
struct Addrs {
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src_ip: IpAddr,
    dst_ip: IpAddr,
}

/// What the frames of one entry share, checked and resolved.
struct Plan {
    kind: Kind,
    addrs: Addrs,
    payload: usize,
    opts: Ipv4Opts,
    sport: u16,
    dport: u16,
    flags: TcpFlags,
    /// TCP sequence number or ICMP echo sequence of the first frame.
    seq: u32,
    ack: u32,
    icmp_id: u16,
    ethertype: u16,
    vlan: Option<u16>,
    /// IPv4 more-fragments flag and fragment offset in bytes, when given.
    frag: Option<(bool, u16)>,
    /// ICMP error: type, code, bytes 5-8 of the header, and the quoted packet.
    icmp_error: Option<(u8, u8, [u8; 4], Vec<u8>)>,
    /// VXLAN: the outer addresses, UDP ports and VNI.
    vxlan: Option<(Ipv4Spec, u16, u16, u32)>,
}

impl Plan {
    /// The `i`th frame (from 0) of the entry, from `src_mac`, before faults are applied.
    fn frame(&self, i: u64, src_mac: MacAddr) -> Vec<u8> {
        let Plan { kind, ref addrs, payload, opts, sport, dport, flags, .. } = *self;
        // `addrs` has addresses of the family the kind needs (checked when resolved); the other arms are unused.
        let v4 = |ip: IpAddr| match ip {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let v6 = |ip: IpAddr| match ip {
            IpAddr::V6(ip) => ip,
            IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        };
        let ipv4 = Ipv4Spec::new(src_mac, addrs.dst_mac, v4(addrs.src_ip), v4(addrs.dst_ip)).with_opts(opts);
        let frame = match kind {
            Kind::ArpRequest | Kind::GratuitousArp | Kind::ArpReply => {
                let (op, target_mac) = if kind == Kind::ArpReply {
                    (ArpOp::Reply, addrs.dst_mac)
                } else {
                    (ArpOp::Request, MacAddr::ZERO)
                };
                let (sender_ip, target_ip) = (v4(addrs.src_ip), v4(addrs.dst_ip));
                let mut f =
                    builder::arp(addrs.dst_mac, &Arp { op, sender_mac: src_mac, sender_ip, target_mac, target_ip });
                f.resize((kind.header_len() + payload).max(MIN_FRAME_LEN), 0);
                f
            }
            Kind::IcmpEcho | Kind::IcmpReply => {
                let seq = (u64::from(self.seq) + i) as u16; // wraps, as ping's does
                if kind == Kind::IcmpEcho {
                    ipv4.icmp_echo_request(self.icmp_id, seq, payload)
                } else {
                    ipv4.icmp_echo_reply(self.icmp_id, seq, payload)
                }
            }
            Kind::Udp => ipv4.udp(sport, dport, payload),
            Kind::Tcp => {
                // Each segment uses sequence space for its payload, plus one for SYN and one for FIN.
                let step = payload as u64
                    + u64::from(flags.contains(TcpFlags::SYN))
                    + u64::from(flags.contains(TcpFlags::FIN));
                let seq = u64::from(self.seq).wrapping_add(step.wrapping_mul(i)) as u32;
                ipv4.tcp(TcpSegment::new(sport, dport, flags).seq(seq).ack(self.ack), payload)
            }
            Kind::Ipv6Udp => {
                let v6spec = Ipv6Spec::new(src_mac, addrs.dst_mac, v6(addrs.src_ip), v6(addrs.dst_ip));
                Ipv6Spec { hop_limit: opts.ttl, ..v6spec }.udp(sport, dport, payload)
            }
            Kind::Raw => builder::eth(addrs.dst_mac, src_mac, self.ethertype, &builder::pattern(payload)),
            Kind::IcmpError => {
                let (type_u8, code_u8, bytes5to8, quoted) = self.icmp_error.clone().unwrap_or_default();
                ipv4.icmp(etherparse::Icmpv4Type::Unknown { type_u8, code_u8, bytes5to8 }, &quoted)
            }
        };
        let mut frame = frame;
        if let Some((mf, offset)) = self.frag {
            // Flags and fragment offset (in 8-byte units), keeping DF; then the header checksum afresh.
            let l3 = ETH_HEADER_LEN;
            let df = frame[l3 + 6] & 0x40;
            let word = (u16::from(df) << 8) | (u16::from(mf) << 13) | (offset / 8);
            frame[l3 + 6..l3 + 8].copy_from_slice(&word.to_be_bytes());
            frame[l3 + 10..l3 + 12].fill(0);
            let ihl = usize::from(frame[l3] & 0x0f) * 4;
            let sum = dataplane::wire::checksum::checksum(&frame[l3..l3 + ihl]);
            frame[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
        }
        let frame = match self.vlan {
            Some(vid) => builder::with_vlan(&frame, vid),
            None => frame,
        };
        match self.vxlan {
            Some((outer, sport, dport, vni)) => outer.vxlan(sport, dport, vni, &frame),
            None => frame,
        }
    }
}

impl EntryCx<'_> {
    fn err(&self, field: &'static str, message: impl Into<String>) -> SpecError {
        let e = self.entry;
        SpecError::Frame { number: self.number, line: e.line, kind: e.kind, field, message: message.into() }
    }

    fn host(&self, field: &'static str, name: Option<&String>) -> Result<Option<&Host>, SpecError> {
        match name {
            None => Ok(None),
            Some(n) => match self.hosts.get(n.as_str()) {
                Some(h) => Ok(Some(h)),
                None => Err(self.err(field, format!("no [[host]] named {n:?}"))),
            },
        }
    }

    fn check_fields(&self) -> Result<(), SpecError> {
        let kind = self.entry.kind;
        for field in self.entry.given_fields() {
            if !COMMON_FIELDS.contains(&field) && !kind.specific_fields().contains(&field) {
                return Err(self.err(field, format!("does not apply to {kind} frames")));
            }
        }
        Ok(())
    }

    /// An IP address of the right family from the override field or the host.
    fn ip(
        &self,
        field: &'static str,
        host_field: &'static str,
        given: Option<IpAddr>,
        host: Option<&Host>,
    ) -> Result<IpAddr, SpecError> {
        let v6 = self.entry.kind == Kind::Ipv6Udp;
        let family = if v6 { "IPv6" } else { "IPv4" };
        if let Some(ip) = given {
            return if ip.is_ipv6() == v6 {
                Ok(ip)
            } else {
                Err(self.err(field, format!("{ip} is not an {family} address, which {} frames need", self.entry.kind)))
            };
        }
        let Some(h) = host else {
            return Err(self.err(field, format!("needs `{host_field}` (a host) or `{field}`")));
        };
        let ip = if v6 { h.ip6.map(IpAddr::V6) } else { h.ip.map(IpAddr::V4) };
        ip.ok_or_else(|| self.err(host_field, format!("host {:?} has no `{}`", h.name, if v6 { "ip6" } else { "ip" })))
    }

    fn addrs(&self) -> Result<Addrs, SpecError> {
        let e = self.entry;
        let from = self.host("from", e.from.as_ref())?;
        let to = self.host("to", e.to.as_ref())?;
        let src_mac = match (e.src_mac, from) {
            (Some(m), _) => m,
            (None, Some(h)) => h.mac,
            (None, None) if e.random_src_mac == Some(true) => MacAddr::ZERO, // replaced per frame
            (None, None) => return Err(self.err("from", "needs `from` (a host) or `src_mac`")),
        };
        let broadcast = matches!(e.kind, Kind::ArpRequest | Kind::GratuitousArp);
        let dst_mac = match (e.dst_mac, to) {
            (Some(m), _) => m,
            (None, _) if broadcast => MacAddr::BROADCAST,
            (None, Some(h)) => h.mac,
            (None, None) => return Err(self.err("to", "needs `to` (a host) or `dst_mac`")),
        };
        let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let (src_ip, dst_ip) = match e.kind {
            Kind::Raw => (unspecified, unspecified),
            Kind::GratuitousArp => {
                let ip = self.ip("src_ip", "from", e.src_ip, from)?;
                (ip, ip)
            }
            _ => (self.ip("src_ip", "from", e.src_ip, from)?, self.ip("dst_ip", "to", e.dst_ip, to)?),
        };
        Ok(Addrs { src_mac, dst_mac, src_ip, dst_ip })
    }

    /// Payload bytes per frame (for ARP: zero padding beyond the message), from `payload` or `size`.
    fn payload_len(&self) -> Result<usize, SpecError> {
        let e = self.entry;
        let tag = if e.vlan.is_some() { VLAN_TAG_LEN } else { 0 };
        let header = e.kind.header_len();
        let payload = match (e.size, e.payload) {
            (Some(_), Some(_)) => return Err(self.err("size", "give `size` or `payload`, not both")),
            (Some(size), None) => {
                let min = header.max(MIN_FRAME_LEN) + tag;
                if size < min {
                    return Err(self.err(
                        "size",
                        format!(
                            "{size} is below the shortest {} frame{}, {min} bytes (frames are padded to \
                             {MIN_FRAME_LEN} bytes; use `truncate` for shorter ones)",
                            e.kind,
                            if tag > 0 { " with a VLAN tag" } else { "" }
                        ),
                    ));
                }
                size - tag - header
            }
            (None, Some(p)) => p,
            (None, None) => 0,
        };
        let len = (header.saturating_add(payload)).max(MIN_FRAME_LEN).saturating_add(tag);
        if len > MAX_FRAME_LEN {
            let field = if e.size.is_some() { "size" } else { "payload" };
            return Err(self.err(field, format!("the frame would be {len} bytes; at most {MAX_FRAME_LEN} are allowed")));
        }
        Ok(payload)
    }

    /// Times of the frames, in nanoseconds (whole microseconds).
    fn times(&self) -> Result<Vec<u64>, SpecError> {
        let e = self.entry;
        let at = e.at.map_or(0.0, |n| n.0);
        if !(at.is_finite() && (0.0..MAX_SECONDS).contains(&at)) {
            return Err(self.err("at", format!("{at} is not a time in seconds between 0 and {MAX_SECONDS}")));
        }
        let count = e.count.unwrap_or(1);
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(self.err("count", format!("{count} is not between 1 and {MAX_COUNT}")));
        }
        let step = match (e.interval, e.rate) {
            (Some(_), Some(_)) => return Err(self.err("rate", "give `interval` or `rate`, not both")),
            (Some(Number(i)), None) if i.is_finite() && i >= 0.0 => i,
            (Some(Number(i)), None) => return Err(self.err("interval", format!("{i} is not a number of seconds >= 0"))),
            (None, Some(Number(r))) if r.is_finite() && r > 0.0 => 1.0 / r,
            (None, Some(Number(r))) => return Err(self.err("rate", format!("{r} is not a rate in frames/s > 0"))),
            (None, None) if count > 1 => {
                return Err(self.err("count", "repeated frames need `interval` (seconds) or `rate` (frames/s)"))
            }
            (None, None) => 0.0,
        };
        let last = at + (count - 1) as f64 * step;
        if last >= MAX_SECONDS {
            return Err(
                self.err("count", format!("the last frame would be at {last} s, past the capture format's limit"))
            );
        }
        Ok((0..count).map(|i| ((at + i as f64 * step) * 1e6).round() as u64 * 1_000).collect())
    }

    fn tcp_flags(&self) -> Result<TcpFlags, SpecError> {
        let Some(names) = &self.entry.flags else {
            return Err(self.err("flags", "required for tcp, e.g. flags = [\"SYN\"]"));
        };
        let mut flags = TcpFlags::NONE;
        for name in names {
            flags |= TcpFlags::from_name(name)
                .ok_or_else(|| self.err("flags", format!("unknown flag {name:?}; known: SYN, ACK, FIN, RST, PSH")))?;
        }
        Ok(flags)
    }

    fn port(&self, field: &'static str, value: Option<u16>) -> Result<u16, SpecError> {
        value.ok_or_else(|| self.err(field, format!("required for {} frames", self.entry.kind)))
    }

    /// Checks the entry and resolves everything its frames share.
    fn plan(&self) -> Result<Plan, SpecError> {
        let e = self.entry;
        self.check_fields()?;
        let addrs = self.addrs()?;
        let payload = self.payload_len()?;
        if let Some(vid) = e.vlan.filter(|&v| v > 4095) {
            return Err(self.err("vlan", format!("{vid} is not a VLAN ID (0-4095)")));
        }
        let seq = match (e.kind, e.seq) {
            (Kind::IcmpEcho | Kind::IcmpReply, Some(s)) if s > u32::from(u16::MAX) => {
                return Err(self.err("seq", format!("{s} does not fit ICMP's 16-bit sequence")))
            }
            (Kind::IcmpEcho | Kind::IcmpReply, s) => s.unwrap_or(1),
            (_, s) => s.unwrap_or(0),
        };
        let (flags, sport, dport) = match e.kind {
            Kind::Tcp => (self.tcp_flags()?, self.port("sport", e.sport)?, self.port("dport", e.dport)?),
            Kind::Udp | Kind::Ipv6Udp => (TcpFlags::NONE, self.port("sport", e.sport)?, self.port("dport", e.dport)?),
            _ => (TcpFlags::NONE, 0, 0),
        };
        let ethertype = match e.kind {
            Kind::Raw => e.ethertype.ok_or_else(|| self.err("ethertype", "required for raw frames, e.g. 0x88b5"))?,
            _ => 0,
        };
        let frag = match (e.mf, e.frag_offset) {
            (None, None) => None,
            (_, Some(off)) if off % 8 != 0 || off > 0x1fff * 8 => {
                return Err(self.err("frag_offset", format!("{off} is not a multiple of 8 up to 65528")))
            }
            (mf, off) => Some((mf.unwrap_or(false), off.unwrap_or(0))),
        };
        let icmp_error = match e.kind {
            Kind::IcmpError => Some(self.icmp_error()?),
            _ => None,
        };
        let vxlan = e.vxlan.as_ref().map(|t| self.tunnel(t, payload)).transpose()?;
        Ok(Plan {
            kind: e.kind,
            addrs,
            payload,
            opts: Ipv4Opts { ttl: e.ttl.unwrap_or(64), df: e.df.unwrap_or(false), id: e.ip_id.unwrap_or(0) },
            sport,
            dport,
            flags,
            seq,
            ack: e.ack.unwrap_or(0),
            icmp_id: e.id.unwrap_or(1),
            ethertype,
            vlan: e.vlan,
            frag,
            icmp_error,
            vxlan,
        })
    }

    /// A `vxlan` table's outer headers, checked: two hosts with IPv4 addresses, a 24-bit VNI, a frame that
    /// still fits once wrapped.
    fn tunnel(&self, t: &Tunnel, payload: usize) -> Result<(Ipv4Spec, u16, u16, u32), SpecError> {
        let host = |name: &String| {
            let h =
                self.hosts.get(name.as_str()).ok_or_else(|| self.err("vxlan", format!("no host named {name:?}")))?;
            let ip = h.ip.ok_or_else(|| self.err("vxlan", format!("host {name:?} has no `ip` (a VTEP address)")))?;
            Ok::<_, SpecError>((h.mac, ip))
        };
        let (from, to) = (host(&t.from)?, host(&t.to)?);
        if t.vni > dataplane::wire::vxlan::MAX_VNI {
            return Err(self.err("vxlan", format!("vni {} does not fit 24 bits", t.vni)));
        }
        let inner = (self.entry.kind.header_len() + payload).max(MIN_FRAME_LEN) + VLAN_TAG_LEN;
        if inner + VXLAN_OVERHEAD > MAX_FRAME_LEN {
            return Err(self.err("vxlan", format!("the wrapped frame would exceed {MAX_FRAME_LEN} bytes")));
        }
        let outer = Ipv4Spec::new(from.0, to.0, from.1, to.1).with_opts(Ipv4Opts { df: true, ..Ipv4Opts::default() });
        Ok((outer, t.sport.unwrap_or(49152), t.dport.unwrap_or(4789), t.vni))
    }

    /// An `icmp-error` entry's type, code, bytes 5-8 and quoted packet (its IP header and `quote_bytes` bytes
    /// after it).
    fn icmp_error(&self) -> Result<(u8, u8, [u8; 4], Vec<u8>), SpecError> {
        let e = self.entry;
        let t = e.icmp_type.ok_or_else(|| self.err("icmp_type", "required for icmp-error, e.g. 11 or 3"))?;
        let code = e.icmp_code.unwrap_or(0);
        let rest = match (t, code, e.mtu) {
            (3, 4, mtu) => {
                let [hi, lo] = mtu.unwrap_or(0).to_be_bytes();
                [0, 0, hi, lo]
            }
            (_, _, Some(_)) => return Err(self.err("mtu", "applies to icmp_type 3, icmp_code 4 only")),
            _ => [0; 4],
        };
        let Some(q) = &e.quote else {
            return Err(
                self.err("quote", "required for icmp-error: the offending packet, e.g. { kind = \"udp\", ... }")
            );
        };
        if !matches!(q.kind, Kind::Udp | Kind::Tcp | Kind::IcmpEcho | Kind::IcmpReply) {
            return Err(
                self.err("quote", format!("a quoted packet is udp, tcp, icmp-echo or icmp-reply, not {}", q.kind))
            );
        }
        if q.vlan.is_some() || q.quote.is_some() || q.vxlan.is_some() || q.count.is_some_and(|c| c != 1) {
            return Err(self.err("quote", "a quoted packet takes no `vlan`, `vxlan`, `quote` or `count`"));
        }
        let mut quoted = (**q).clone();
        quoted.src_mac = quoted.src_mac.or(Some(MacAddr::ZERO));
        quoted.dst_mac = quoted.dst_mac.or(Some(MacAddr::ZERO));
        let cx = EntryCx { number: self.number, entry: &quoted, hosts: self.hosts };
        let plan = cx.plan()?;
        let mut frame = plan.frame(0, plan.addrs.src_mac);
        cx.apply_faults(&mut frame)?;
        let ip = frame.get(ETH_HEADER_LEN..).unwrap_or_default();
        let total = ip.get(2..4).map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        let ihl = ip.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
        let keep = (ihl + e.quote_bytes.unwrap_or(8)).min(total).min(ip.len());
        Ok((t, code, rest, ip[..keep].to_vec()))
    }

    fn generate(&self, out: &mut Vec<CapturedFrame>) -> Result<(), SpecError> {
        let plan = self.plan()?;
        let times = self.times()?;
        let e = self.entry;
        let mut rng = e.random_src_mac.unwrap_or(false).then(|| SplitMix64(e.seed.unwrap_or(0)));
        for (i, ts) in times.into_iter().enumerate() {
            let src_mac = match rng.as_mut() {
                Some(rng) => {
                    let r = rng.next_u64().to_be_bytes();
                    // Unicast (I/G bit clear), locally administered (U/L bit set).
                    MacAddr([(r[0] & 0xfc) | 0x02, r[1], r[2], r[3], r[4], r[5]])
                }
                None => plan.addrs.src_mac,
            };
            let mut frame = plan.frame(i as u64, src_mac);
            self.apply_faults(&mut frame)?;
            out.push(CapturedFrame { ts, data: frame });
        }
        Ok(())
    }

    /// `set_bytes`, then `truncate`.
    fn apply_faults(&self, frame: &mut Vec<u8>) -> Result<(), SpecError> {
        let e = self.entry;
        for &(offset, value) in e.set_bytes.iter().flatten() {
            let len = frame.len();
            let byte = frame
                .get_mut(offset)
                .ok_or_else(|| self.err("set_bytes", format!("offset {offset} is beyond the {len}-byte frame")))?;
            *byte = value;
        }
        if let Some(n) = e.truncate {
            if n >= frame.len() {
                return Err(self.err("truncate", format!("{n} is not shorter than the {}-byte frame", frame.len())));
            }
            frame.truncate(n);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::wire::decode::describe;

    const HOSTS: &str = r#"
[[host]]
name = "a"
mac = "02:00:00:00:00:01"
ip = "10.0.0.1"
ip6 = "fd00::1"

[[host]]
name = "b"
mac = "02:00:00:00:00:02"
ip = "10.0.0.2"
ip6 = "fd00::2"
"#;

    fn frames(entries: &str) -> Result<Vec<CapturedFrame>, SpecError> {
        Spec::from_toml(&format!("{HOSTS}\n{entries}"))?.frames()
    }

    fn err(entries: &str) -> String {
        frames(entries).unwrap_err().to_string()
    }

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn arp_and_udp_train_match_the_builders() {
        let f = frames(
            r#"
[[frame]]
kind = "udp"
from = "a"
to = "b"
at = 1
count = 3
interval = 0.0005
sport = 1000
dport = 2000
payload = 18
vlan = 10

[[frame]]
kind = "arp-request"
from = "a"
to = "b"
"#,
        )
        .unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], CapturedFrame { ts: 0, data: builder::arp_request(A, IP_A, IP_B) });
        let udp = builder::with_vlan(&builder::udp(A, B, IP_A, IP_B, 1000, 2000, 18), 10);
        for (i, ts) in [1_000_000_000, 1_000_500_000, 1_001_000_000].into_iter().enumerate() {
            assert_eq!(f[i + 1], CapturedFrame { ts, data: udp.clone() });
        }
    }

    #[test]
    fn every_kind_builds_what_it_says() {
        let f = frames(
            r#"
[[frame]]
kind = "arp-reply"
from = "b"
to = "a"
[[frame]]
kind = "gratuitous-arp"
from = "a"
at = 0.1
[[frame]]
kind = "icmp-echo"
from = "a"
to = "b"
id = 7
seq = 5
count = 2
rate = 10
at = 0.2
payload = 56
[[frame]]
kind = "icmp-reply"
from = "b"
to = "a"
id = 7
at = 0.5
[[frame]]
kind = "tcp"
from = "a"
to = "b"
sport = 40000
dport = 80
flags = ["syn"]
seq = 100
ttl = 1
df = true
ip_id = 9
at = 0.6
[[frame]]
kind = "ipv6-udp"
from = "a"
to = "b"
sport = 1
dport = 2
ttl = 5
at = 0.7
[[frame]]
kind = "raw"
from = "a"
dst_mac = "ff:ff:ff:ff:ff:ff"
ethertype = 0x88b5
size = 100
at = 0.8
"#,
        )
        .unwrap();
        let lines: Vec<String> = f.iter().map(|f| format!("{} {}", f.ts / 1000, describe(&f.data))).collect();
        let want = [
            "0 02:00:00:00:00:02 > 02:00:00:00:00:01 ARP reply 10.0.0.2 is-at 02:00:00:00:00:02, len 60",
            "100000 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP who-has 10.0.0.1 tell 10.0.0.1 (gratuitous), len 60",
            "200000 02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ttl 64 ICMP echo request id 7 seq 5 \
             payload 56, len 98",
            "300000 02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ttl 64 ICMP echo request id 7 seq 6 \
             payload 56, len 98",
            "500000 02:00:00:00:00:02 > 02:00:00:00:00:01 IPv4 10.0.0.2 > 10.0.0.1 ttl 64 ICMP echo reply id 7 seq 1 \
             payload 0, len 60",
            "600000 02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ttl 1 DF TCP 40000 > 80 [S] seq 100 \
             win 65535 payload 0, len 60",
            "700000 02:00:00:00:00:01 > 02:00:00:00:00:02 IPv6 fd00::1 > fd00::2 hlim 5 UDP 1 > 2 payload 0, len 62",
            "800000 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ethertype 0x88b5 payload 86, len 100",
        ];
        assert_eq!(lines, want);
        let tcp = &f[5].data;
        assert_eq!(u16::from_be_bytes([tcp[18], tcp[19]]), 9, "ip_id");
    }

    #[test]
    fn icmp_errors_quote_a_packet_and_fragments_are_marked() {
        let f = frames(
            r#"
[[frame]]
kind = "icmp-error"
from = "b"
to = "a"
icmp_type = 11
quote = { kind = "udp", from = "a", dst_ip = "198.51.100.10", sport = 40000, dport = 53, payload = 30, ttl = 1 }
[[frame]]
kind = "icmp-error"
from = "b"
to = "a"
icmp_type = 3
icmp_code = 4
mtu = 1400
quote_bytes = 20
quote = { kind = "tcp", src_ip = "10.0.0.1", dst_ip = "198.51.100.10", sport = 1, dport = 80, flags = ["ACK"], df = true }
[[frame]]
kind = "udp"
from = "a"
to = "b"
sport = 1
dport = 2
payload = 16
mf = true
ip_id = 5
[[frame]]
kind = "udp"
from = "a"
to = "b"
sport = 1
dport = 2
frag_offset = 24
df = true
"#,
        )
        .unwrap();
        let lines: Vec<String> = f.iter().map(|f| describe(&f.data)).collect();
        let ab = "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ttl 64";
        let ba = "02:00:00:00:00:02 > 02:00:00:00:00:01 IPv4 10.0.0.2 > 10.0.0.1 ttl 64";
        assert_eq!(
            lines,
            [
                format!("{ba} ICMP time-exceeded ttl for UDP 10.0.0.1:40000 > 198.51.100.10:53, len 70"),
                format!("{ba} ICMP unreachable frag-needed mtu 1400 for TCP 10.0.0.1:1 > 198.51.100.10:80, len 82"),
                format!("{ab} frag 0+ UDP 1 > 2 payload 16, len 60"),
                format!("{ab} DF frag 24 payload 8, len 60"),
            ]
        );
        // The quote: the offending packet's header (TTL 1, its own checksum) and 8 bytes of UDP.
        let quoted = &f[0].data[14 + 20 + 8..];
        let want = builder::udp(A, B, IP_A, Ipv4Addr::new(198, 51, 100, 10), 40000, 53, 30);
        assert_eq!(quoted[..8], want[14..22]);
        assert_eq!(quoted[8], 1, "ttl");
        assert_eq!(quoted[12..28], want[26..42]);
        assert_eq!(quoted.len(), 28);
        assert!(dataplane::wire::checksum::verify(&quoted[..20]), "quoted header checksum");
        assert_eq!(be(f[1].data[14 + 26], f[1].data[14 + 27]), 1400, "mtu");
        assert_eq!(f[1].data.len() - 14 - 28, 40, "quote_bytes 20 after the header");
    }

    fn be(hi: u8, lo: u8) -> u16 {
        u16::from_be_bytes([hi, lo])
    }

    #[test]
    fn icmp_error_fields_are_checked() {
        let base = "kind = \"icmp-error\"\nfrom = \"b\"\nto = \"a\"\n";
        let e = |rest: &str| err(&format!("[[frame]]\n{base}{rest}"));
        assert!(e("").contains("`icmp_type`: required"), "{}", e(""));
        assert!(e("icmp_type = 11").contains("`quote`: required"));
        assert!(e(
            "icmp_type = 11\nmtu = 1400\nquote = { kind = \"udp\", from = \"a\", to = \"b\", sport = 1, dport = 2 }"
        )
        .contains("`mtu`"));
        assert!(e("icmp_type = 11\nquote = { kind = \"raw\", from = \"a\", ethertype = 1 }").contains("`quote`"));
        assert!(err("[[frame]]\nkind = \"udp\"\nfrom = \"a\"\nto = \"b\"\nsport = 1\ndport = 2\nfrag_offset = 3")
            .contains("`frag_offset`"));
        assert!(err("[[frame]]\nkind = \"arp-request\"\nfrom = \"a\"\nto = \"b\"\nmf = true").contains("`mf`"));
    }

    #[test]
    fn tcp_sequence_advances_by_payload() {
        let f = frames(
            r#"
[[frame]]
kind = "tcp"
from = "a"
to = "b"
sport = 1
dport = 2
flags = ["PSH", "ACK"]
seq = 1000
ack = 5
payload = 10
count = 3
interval = 0
"#,
        )
        .unwrap();
        let seqs: Vec<u32> =
            f.iter().map(|f| u32::from_be_bytes([f.data[38], f.data[39], f.data[40], f.data[41]])).collect();
        assert_eq!(seqs, [1000, 1010, 1020]);
        assert!(f.iter().all(|f| f.ts == 0));
    }

    #[test]
    fn size_counts_the_whole_frame_including_the_tag() {
        let f = frames(
            r#"
[[frame]]
kind = "udp"
from = "a"
to = "b"
sport = 1
dport = 2
size = 128
vlan = 3
[[frame]]
kind = "arp-request"
from = "a"
to = "b"
size = 80
"#,
        )
        .unwrap();
        assert_eq!(f[0].data.len(), 128);
        let line = describe(&f[0].data);
        assert!(line.contains("vlan 3 IPv4 10.0.0.1 > 10.0.0.2 ttl 64 UDP 1 > 2 payload 82, len 128"), "{line}");
        assert_eq!(f[1].data.len(), 80);
    }

    #[test]
    fn faults_and_random_macs() {
        let spec = r#"
[[frame]]
kind = "udp"
from = "a"
to = "b"
sport = 1
dport = 2
set_bytes = [[14, 0x43]]
[[frame]]
kind = "udp"
from = "a"
to = "b"
sport = 1
dport = 2
truncate = 30
[[frame]]
kind = "raw"
to = "b"
ethertype = 0x0800
random_src_mac = true
seed = 42
count = 100
interval = 0.001
"#;
        let f = frames(spec).unwrap();
        assert!(describe(&f[0].data).contains("bad IPv4 IHL 3"));
        assert_eq!(f[1].data.len(), 30);
        let macs: Vec<MacAddr> = f[2..].iter().map(|f| MacAddr::from_slice(&f.data[6..]).unwrap()).collect();
        assert!(macs.iter().all(|m| m.0[0] & 0x03 == 0x02), "unicast, locally administered");
        let distinct: std::collections::HashSet<_> = macs.iter().collect();
        assert_eq!(distinct.len(), 100);
        assert_eq!(frames(spec).unwrap(), f, "deterministic");
    }

    #[test]
    fn vxlan_wraps_the_frame_and_faults_apply_to_the_outer_one() {
        let spec = r#"
[[frame]]
kind = "udp"
from = "a"
to = "b"
sport = 1
dport = 2
vxlan = { from = "b", to = "a", vni = 100, sport = 50000 }
set_bytes = [[42, 0x0c]]
"#;
        let f = &frames(spec).unwrap()[0].data;
        let inner = builder::udp(A, B, IP_A, IP_B, 1, 2, 0);
        let outer = Ipv4Spec::new(B, A, IP_B, IP_A).with_opts(Ipv4Opts { df: true, ..Ipv4Opts::default() });
        let mut want = outer.vxlan(50000, 4789, 100, &inner);
        want[42] = 0x0c;
        assert_eq!(f, &want);
        let bad = spec.replace("vni = 100", "vni = 16777216");
        assert!(err(&bad).contains("`vxlan`: vni 16777216 does not fit 24 bits"), "{}", err(&bad));
        let bad = spec.replace("to = \"a\", vni", "to = \"z\", vni");
        assert!(err(&bad).contains("no host named \"z\""), "{}", err(&bad));
    }

    #[test]
    fn frames_are_sorted_stably_by_time() {
        let f = frames(
            r#"
[[frame]]
kind = "raw"
from = "a"
to = "b"
ethertype = 0x0001
at = 0.002
[[frame]]
kind = "raw"
from = "a"
to = "b"
ethertype = 0x0002
count = 2
interval = 0.002
[[frame]]
kind = "raw"
from = "a"
to = "b"
ethertype = 0x0003
at = 0.002
"#,
        )
        .unwrap();
        let order: Vec<(u64, u8)> = f.iter().map(|f| (f.ts / 1000, f.data[13])).collect();
        assert_eq!(order, [(0, 2), (2000, 1), (2000, 2), (2000, 3)]);
    }

    #[test]
    fn generated_file_reads_back_as_the_same_frames() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("s.toml");
        let body = "[[frame]]\nkind = \"icmp-echo\"\nfrom = \"a\"\nto = \"b\"\ncount = 3\nrate = 3\nat = 1.5\n";
        std::fs::write(&spec, format!("{HOSTS}\n{body}")).unwrap();
        let out = dir.path().join("s.pcap");
        assert_eq!(generate_file(&spec, &out).unwrap(), 3);
        let capture = dataplane::port::pcap::read_capture(&out).unwrap();
        assert!(!capture.nanosecond);
        assert_eq!(capture.frames, frames(body).unwrap());
        let ts: Vec<u64> = capture.frames.iter().map(|f| f.ts).collect();
        assert_eq!(ts, [1_500_000_000, 1_833_333_000, 2_166_667_000], "rounded to whole microseconds");
    }

    #[test]
    fn errors_name_the_entry_and_field() {
        let base = "[[frame]]\nkind = \"udp\"\nfrom = \"a\"\nto = \"b\"\nsport = 1\n";
        assert_eq!(err(base), "frame #1 (udp, line 14): `dport`: required for udp frames");
        assert_eq!(
            err(&format!("{base}dport = 2\nflags = [\"SYN\"]\n")),
            "frame #1 (udp, line 14): `flags`: does not apply to udp frames"
        );
        assert!(
            err(&format!("{base}dport = 2\nsize = 50\n")).contains("`size`: 50 is below the shortest udp frame, 60")
        );
        assert!(err(&format!("{base}dport = 2\ncount = 2\n")).contains("`count`: repeated frames need `interval`"));
        assert!(err(&format!("{base}dport = 2\ntruncate = 60\n")).contains("`truncate`: 60 is not shorter"));
        assert!(err(&format!("{base}dport = 2\nset_bytes = [[60, 1]]\n")).contains("`set_bytes`: offset 60 is beyond"));
        assert!(err(&format!("{base}dport = 2\nvlan = 5000\n")).contains("`vlan`: 5000 is not a VLAN ID"));
        assert!(err(&format!("{base}dport = 2\ndst_ip = \"fd00::9\"\n")).contains("`dst_ip`: fd00::9 is not an IPv4"));
        assert!(err("[[frame]]\nkind = \"udp\"\nfrom = \"c\"\n").contains("`from`: no [[host]] named \"c\""));
        assert!(err("[[frame]]\nkind = \"tcp\"\nfrom = \"a\"\nto = \"b\"\nsport = 1\ndport = 2\nflags = [\"URG\"]\n")
            .contains("`flags`: unknown flag \"URG\""));
        let no_ip6 =
            "[[host]]\nname = \"c\"\nmac = \"02:00:00:00:00:03\"\n[[frame]]\nkind = \"ipv6-udp\"\nfrom = \"c\"\nto = \"c\"\n";
        assert!(err(no_ip6).contains("`from`: host \"c\" has no `ip6`"), "{}", err(no_ip6));
        assert!(err("[[frame]]\nkind = \"icmp-echo\"\nfrom = \"a\"\nto = \"b\"\nseq = 70000\n")
            .contains("`seq`: 70000 does not fit"));
        // Serde-level errors carry TOML's line and column.
        let typo = err("[[frame]]\nkind = \"udp\"\nsprot = 1\n");
        assert!(typo.contains("unknown field `sprot`") && typo.contains("line 16"), "{typo}");
        assert!(err("[[frame]]\nkind = \"udpp\"\n").contains("unknown variant `udpp`"));
        let dup = Spec::from_toml(&format!("{HOSTS}\n[[host]]\nname = \"a\"\nmac = \"02:00:00:00:00:09\"\n"))
            .unwrap()
            .frames()
            .unwrap_err();
        assert_eq!(dup.to_string(), "host #3 \"a\": a host of this name is defined earlier");
    }
}
