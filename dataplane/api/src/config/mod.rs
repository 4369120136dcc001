//! The configuration model: the user's TOML language (Docker-flavoured: networks, ports, static routes,
//! published ports, NAT and connection tracking, and the settings of the live port back-ends), parsed and
//! validated as a whole before anything is applied.
//!
//! This module owns the user's language and the rules that make a configuration valid. The public types
//! ([`Config`] and its parts) are also the configuration's wire form between `vswitch-agent` and `vswitchd`.
//! Nothing is applied here: the dataplane's `Topology::from_config` numbers a valid
//! configuration for the pipeline.
//!
//! # The language
//!
//! ```toml
//! [switch]                   # optional
//! workers = 1                # poll-mode worker threads
//! poll_idle_us = 200         # busy-poll this long without traffic before sleeping
//!
//! [[network]]                # an L2 bridge domain; any number of them
//! name = "bridge"
//! subnet = "172.17.0.0/16"
//! gateway = "172.17.0.1"     # the switch routes for this network
//! gateway_mac = "02:00:00:00:01:01"
//! internal = false           # true: never routed to or from another interface
//! masquerade = true          # SNAT what leaves through a routed port to that port's address; isolated
//! allow_routing_with = []    # networks routed to and from this one despite isolation
//! conntrack_limit = 65536    # most connections of this network's hosts (default: no own limit)
//! mac_aging_secs = 300
//! mac_limit = 8192
//!
//! [[port]]                   # any number of them; an access port of a network …
//! name = "c1"
//! kind = "tap"
//! ifname = "vs-c1"
//! network = "bridge"
//! mtu = 1500
//! netns = "ctr1"             # tap only: move the tap into this named network namespace
//! mss_clamp = 1360           # or "pmtu": lower the MSS of TCP SYNs crossing this port
//! queues = 1                 # tap, afxdp, afpacket
//!
//! [[port]]                   # … or a routed port, with the switch's own address on the link
//! name = "uplink"
//! kind = "afxdp"
//! ifname = "vs-up"
//! address = "203.0.113.2/24"
//! mac = "02:00:00:00:02:01"
//! mode = "auto"              # afxdp only: auto | native | generic
//!
//! [[port]]                   # … or the host port: the host stack's way to its containers (like docker0)
//! name = "host"
//! kind = "tap"               # no netns: the tap stays in vswitchd's own namespace
//! ifname = "vs-host"
//! address = "169.254.77.1/30"
//! host = true
//!
//! [[route]]                  # static routes; any number of them
//! prefix = "0.0.0.0/0"
//! via = "203.0.113.1"
//! port = "uplink"
//!
//! [[publish]]                # like `docker run -p 8080:80`; any number of them
//! port = "uplink"
//! proto = "tcp"
//! external_port = 8080
//! to = "172.17.0.2:80"
//!
//! [nat]                      # optional
//! port_range = "1024-65535"
//!
//! [conntrack]                # optional
//! limit = 262144
//! tcp_strict = false
//! tcp_established_secs = 432000
//!
//! [cluster]                  # optional: this host in a multi-host cluster (overlay networks)
//! name = "lab"
//! host = "h1"
//! etcd = ["http://10.9.0.1:2379"]
//! lease_ttl_secs = 10
//! vtep_port = "uplink"       # a routed port: its address is the VXLAN tunnel endpoint
//! vxlan_udp_port = 4789
//!
//! [[network]]                # an overlay network: one bridge domain across the cluster's hosts
//! name = "red"
//! scope = "overlay"          # local (default) | overlay
//! vni = 4096                 # omitted: vswitch-agent allocates one through etcd
//! bum_rate_pps = 1000        # broadcast/multicast/unknown unicast replicated to other hosts, per second
//!
//! [[port]]
//! name = "c2"
//! kind = "tap"
//! network = "red"
//! endpoint_mac = "02:42:0a:01:00:02"   # the container interface behind the port, registered in etcd
//! endpoint_ip = "10.1.0.2"
//! ```
//!
//! # Isolation
//!
//! What the router forwards between two router interfaces (a network's gateway or a routed port), untranslated:
//! - a network with `masquerade = true` is **isolated**, as a Docker bridge network is: nothing is routed
//!   between it and another network (`network-isolation`), and from a routed port only what the NAT stage
//!   translates or tracks reaches it — replies to its own (masqueraded) connections, published ports and ICMP
//!   errors about them; a packet routed straight to one of its addresses is dropped (`not-published`), even
//!   with a route to its subnet. It reaches routed ports (masqueraded) and the switch's own addresses;
//! - `internal = true` networks are never routed at all (`internal-network`);
//! - any other network is a plainly routed subnet (Docker's routed gateway mode): it reaches and is reached
//!   from routed ports and other non-isolated networks;
//! - `allow_routing_with` lifts isolation between two named networks (both ways), not from routed ports.
//! - a **host port** (a routed port with `host = true`) is how the host itself reaches its containers, as it
//!   does through docker0's address in Docker: the router forwards between it and every network that is not
//!   `internal` (isolated ones included), both ways and untranslated (no masquerade towards it, so the host
//!   sees the containers' own addresses and they see the host's); it is not a way between the outside and the
//!   switch: nothing is routed between a host port and another routed port, and only the host's own traffic
//!   crosses it: to addresses of its link, from addresses of its link (`network-isolation` otherwise). The host
//!   stack's side of the link (its address there, routes to the networks' subnets via the port's `address`) is
//!   the host's configuration, as for any interface of the host: with a tap left in vswitchd's namespace,
//!   `ip addr add 169.254.77.2/30 dev vs-host; ip route add 172.17.0.0/16 via 169.254.77.1`.
//!
//! A **router interface** is a network's `gateway` (with its `subnet`) or a routed port's `address` (with its
//! prefix length); the subnets of router interfaces are the connected subnets the switch routes between.
//!
//! | key | required | default | valid values |
//! |-----|----------|---------|--------------|
//! | `switch.workers` | no | 1 | 1..=64 ([`limits::WORKERS`]) |
//! | `switch.poll_idle_us` | no | 200 | 0..=1_000_000 ([`limits::POLL_IDLE_US`]): microseconds a worker busy-polls with no traffic before sleeping on epoll |
//! | `network.name` | yes | | 1..=64 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit; unique among networks; at most 4096 `[[network]]` tables ([`limits::NETWORKS_MAX`]) |
//! | `network.subnet` | no | none | an IPv4 prefix `A.B.C.D/N` without host bits; must not overlap another network's subnet, nor a routed port's subnet if the network has a gateway |
//! | `network.gateway` | no | none | an IPv4 address inside `subnet` (so `subnet` is required), not its network or broadcast address: the network's router interface |
//! | `network.gateway_mac` | no | derived from the name (the dataplane's `topology`) | a MAC `xx:xx:xx:xx:xx:xx` (or `-`-separated), unicast, not all-zero; requires `gateway`; unique among all `gateway_mac` and `mac` values |
//! | `network.internal` | no | false | a boolean; `true`: the router never routes between this network and another interface (meaningful with a `gateway`) |
//! | `network.masquerade` | no | false | a boolean; `true`: connections from this network leaving through a routed port get that port's address as source (the NAT stage, `nat.rs`); requires `gateway`; not with `internal = true` |
//! | `network.allow_routing_with` | no | `[]` | an array of names of other networks with a `gateway`, not `internal`, each at most once; requires `gateway`, not with `internal = true`: the router forwards between this network and each of them untranslated, both ways, even if one of them is isolated (§ Isolation) |
//! | `network.conntrack_limit` | no | none | 1..=16_777_216 ([`limits::CONNTRACK_LIMIT`]); requires `gateway`: most connections this network's hosts hold at once (masqueraded ones and those to its published ports); a new one beyond it is dropped (`conntrack-network-limit`), so one network's flood cannot fill the table for the others |
//! | `network.mac_aging_secs` | no | 300 | 1..=1_000_000 ([`limits::MAC_AGING_SECS`]) |
//! | `network.mac_limit` | no | 8192 | 1..=1_000_000 ([`limits::MAC_LIMIT`]) |
//! | `network.scope` | no | `local` | `local` or `overlay` ([`Scope`]); `overlay` requires `[cluster]` |
//! | `network.vni` | no | none (allocated by `vswitch-agent`) | 1..=16_777_215 ([`limits::VNI`]), unique among networks; only with `scope = "overlay"` |
//! | `network.bum_rate_pps` | no | 1000 | 1..=10_000_000 ([`limits::BUM_RATE_PPS`]); overlay networks only |
//! | `port.name` | yes | | 1..=15 characters (it may become an interface or file name), same alphabet as network names; unique among ports; at most 4096 `[[port]]` tables ([`limits::PORTS_MAX`]) |
//! | `port.kind` | yes | | `tap`, `afxdp`, `afpacket`, `pcap` or `mem` ([`PortKind`]) |
//! | `port.ifname` | for `tap`, `afxdp`, `afpacket` | none | a Linux interface name: 1..=15 bytes, no `/`, `:`, whitespace or NUL, not `.` or `..`; unique among ports. Allowed but unused for `pcap` and `mem`, so one file serves live and replay |
//! | `port.network` | either `network` or `address` | none | the name of a `[[network]]`: the port is an access port of that network |
//! | `port.address` | either `network` or `address` | none | `A.B.C.D/N`, N in 1..=32, host bits kept: the switch's own address on the link, making the port a routed port; for N < 31 not the network or broadcast address of its subnet; the subnet must not overlap that of another router interface |
//! | `port.mac` | no | derived from the name (the dataplane's `topology`) | a MAC, only on a routed port (`address` set); unicast, not all-zero; unique among all `gateway_mac` and `mac` values |
//! | `port.mtu` | no | 1500 | 68..=9000 ([`limits::MTU`]; jumbo frames above 1500); for kind `afxdp` 68..=1898 ([`limits::SMALL_FRAME_MTU`]: a frame is the MTU plus 14 bytes of Ethernet header and up to 8 bytes of VLAN tags, and must fit a UMEM chunk's [`MAX_FRAME_LEN`], 1920). A tap's MTU is set on the tap; an afpacket port's interface keeps its own (set it to match). Frames longer than 1920 bytes travel in the workers' large buffers |
//! | `port.offload` | no | true | only for kind `tap`: a boolean; `false` opens the tap without a `virtio_net_hdr`: no super-frames or partial checksums |
//! | `port.mss_clamp` | no | none | a number 536..=8960 ([`limits::MSS_CLAMP`]) or `"pmtu"` (the port's `mtu` - 40 for IPv4, - 60 for IPv6) ([`MssClamp`]): the MSS option of every TCP SYN and SYN-ACK that enters or leaves the switch through this port is lowered to it (never raised; no option, no change), with the checksum updated. For links or overlays with an MTU below the hosts': connections across the port then never send segments too long for it |
//! | `port.netns` | no | none | only for kind `tap`: an existing named network namespace (1..=255 bytes, no `/` or NUL, not `.` or `..`) the tap is moved into |
//! | `port.host` | no | false | a boolean; `true` requires `address`: the port is a host port (§ Isolation). Usually a `tap` without `netns` (left in vswitchd's own namespace, so the host stack is that namespace's), or an `afpacket`/`afxdp` port on a veth whose peer the host stack holds |
//! | `port.mode` | no | `auto` | only for kind `afxdp`: `auto`, `native` or `generic` ([`XdpMode`]) |
//! | `port.queues` | no | 1 | only for kinds `afxdp`, `afpacket`, `tap`: 1..=64 ([`limits::QUEUES`]) |
//! | `port.endpoint_mac` | no | none | only on an access port of an overlay network: the unicast MAC of the endpoint behind it, registered in etcd by `vswitch-agent` |
//! | `port.endpoint_ip` | no | none | with `endpoint_mac`: a host address of the network's subnet |
//! | `route.prefix` | yes | | an IPv4 prefix `A.B.C.D/N` (N in 0..=32) without host bits; unique among routes |
//! | `route.via` | yes | | the next hop: an IPv4 address inside a connected subnet (that of `port`, when given), not one of the switch's own addresses |
//! | `route.port` | no | the router interface whose subnet holds `via` | the name of a routed port |
//! | `publish.port` | yes | | the name of a routed port: connections to its address are translated |
//! | `publish.proto` | yes | | `tcp` or `udp` |
//! | `publish.external_port` | yes | | 1..=65535; (`port`, `proto`, `external_port`) unique among publish rules |
//! | `publish.to` | yes | | `A.B.C.D:PORT`, port not 0: an address inside the subnet of a network that has a `gateway` and is not `internal`, not the gateway itself nor the subnet's network or broadcast address |
//! | `nat.port_range` | no | `"1024-65535"` | `"A-B"`, 1 <= A <= B <= 65535: the external ports (and ICMP echo identifiers) masquerade hands out |
//! | `conntrack.limit` | no | 262144 | 1..=16_777_216 ([`limits::CONNTRACK_LIMIT`]): most tracked connections; when full, the oldest connection that has not seen a reply is evicted for a new one (`evicted`), and only when every one has seen replies is the new one dropped (`conntrack-full`) |
//! | `conntrack.tcp_strict` | no | false | a boolean; `false` (netfilter's loose policy) picks up TCP connections mid-stream, `true` only tracks from a SYN |
//! | `conntrack.tcp_syn_sent_secs` | no | 120 | 1..=2_592_000 ([`limits::TIMEOUT_SECS`]), as every timeout below |
//! | `conntrack.tcp_syn_recv_secs` | no | 60 | |
//! | `conntrack.tcp_established_secs` | no | 432000 (5 days) | |
//! | `conntrack.tcp_fin_wait_secs` | no | 120 | |
//! | `conntrack.tcp_close_wait_secs` | no | 60 | |
//! | `conntrack.tcp_last_ack_secs` | no | 30 | |
//! | `conntrack.tcp_time_wait_secs` | no | 120 | |
//! | `conntrack.tcp_close_secs` | no | 10 | |
//! | `conntrack.udp_secs` | no | 30 | a UDP flow with no reply yet |
//! | `conntrack.udp_assured_secs` | no | 120 | a UDP flow that has seen replies |
//! | `conntrack.icmp_secs` | no | 30 | an ICMP echo exchange |
//! | `conntrack.tcp_unreplied_secs` | no | 30 | a TCP connection picked up mid-stream (a plain ACK, loose policy) until it sees a packet in the reply direction (then `tcp_established_secs`); at most `tcp_established_secs` |
//! | `cluster.name` | yes (in `[cluster]`) | | like a network name: the etcd key prefix `/vswitch/v1/NAME/` |
//! | `cluster.host` | yes | | like a network name; unique in the cluster |
//! | `cluster.etcd` | yes | | 1..=16 URLs `http://HOST:PORT` |
//! | `cluster.lease_ttl_secs` | no | 10 | 2..=3600 ([`limits::LEASE_TTL_SECS`]): how long a host that died unannounced stays listed |
//! | `cluster.vtep_port` | yes | | the name of a routed port: its address is the VTEP |
//! | `cluster.vxlan_udp_port` | no | 4789 | 1..=65535 |
//!
//! **Counts**: at most 4096 networks ([`limits::NETWORKS_MAX`]), 4096 ports ([`limits::PORTS_MAX`]), 16,384
//! routes ([`limits::ROUTES_MAX`]) and 16,384 publish rules ([`limits::PUBLISH_MAX`]); more is one error on the
//! first object beyond the cap (`network #4097: …`), and no other rule is checked (they would cost time
//! quadratic in the count).
//!
//! Any other key or table is an error, not ignored: a misspelt key must not silently fall back to a default.
//! Integers are TOML integers (`1_500` is fine; `"1500"` and `1500.0` are not).
//!
//! # Errors
//!
//! Every error reads `ORIGIN:LINE: OBJECT: WHAT`, e.g.
//! `examples/x.toml:12: port c3: network "brige" does not exist; known networks: bridge`. The object is
//! `switch`, `network NAME`, `port NAME`, `route PREFIX`, `publish #N`, `nat`, `conntrack` or `cluster` (`network #N` /
//! `port #N` / `route #N`, counting from 1 in file order, when the name or prefix itself is missing or invalid); the line is that of the offending value,
//! or of the table's header when a field is missing. A rule between two objects (a duplicate name, overlapping
//! subnets, a MAC used twice) is reported on the one written later and names the other with its line.
//!
//! - Syntax errors, unknown keys and misshapen tables (`[port]` instead of `[[port]]`) stop the parse: that one
//!   error is reported.
//! - Otherwise every value and every rule is checked, and **all** errors are reported, sorted by line.
//!   [`Config::parse_all_errors`] returns them as a list. [`Config::parse`], [`Config::load`] and
//!   [`Config::validate`] return one [`ConfigError`] whose fields hold the first error and whose message
//!   continues with the others, one per line, each in the same `ORIGIN:LINE: …` form, so printing the error
//!   prints one error per line (at most [`MAX_LISTED_ERRORS`], then a count of the rest).
//! - A value that has the wrong type only produces its type error; rules that depend on it are skipped.
//!
//! Output is deterministic (same text, same result) and no input makes the parser panic.
//!
//! # Invariants
//!
//! A [`Config`] returned by [`Config::parse`] or [`Config::load`], or accepted by [`Config::validate`], satisfies
//! every rule in the table above; in particular every port is either an access port whose `network` names
//! exactly one network, so [`Config::network_index`] finds it, or a routed port with an `address`; router
//! interfaces' subnets are disjoint, so the interface whose subnet holds an address is unique; and every route's
//! `via` lies in exactly one connected subnet (that of its `port` when given). A `Config` deserialized directly with serde (e.g. from JSON on the
//! control socket) has only been shape-checked: call [`Config::validate`] before using it.
//!
//! # Where
//!
//! This file holds the model (the types, with their serde form) and the entry points. The text is read by
//! `parse` (spanned TOML → typed values, with lines), the rules are `check`'s, and both report through
//! `diag` (objects, lines, wording). The tests (`tests.rs`) go through the entry points only.
//!
//! # Threads
//!
//! Plain data and pure functions (only [`Config::load`] reads a file): call them from the control thread or the
//! agent, never from the forwarding hot path.

use crate::frame::{ETH_HEADER_LEN, MAX_FRAME_LEN, VLAN_TAG_LEN};
use crate::mac::MacAddr;
use crate::port_range::PortRange;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

mod check;
mod diag;
mod parse;
#[cfg(test)]
mod tests;

/// The ranges and lengths the validator enforces.
pub mod limits {
    use super::{ETH_HEADER_LEN, MAX_FRAME_LEN, VLAN_TAG_LEN};
    use std::ops::RangeInclusive;

    /// `[switch] workers`.
    pub const WORKERS: RangeInclusive<usize> = 1..=64;
    /// `[switch] poll_idle_us`.
    pub const POLL_IDLE_US: RangeInclusive<u32> = 0..=1_000_000;
    /// `[[port]] queues`.
    pub const QUEUES: RangeInclusive<u16> = 1..=64;
    /// `[[publish]] external_port`.
    pub const EXTERNAL_PORT: RangeInclusive<u16> = 1..=65535;
    /// `[conntrack] limit`.
    pub const CONNTRACK_LIMIT: RangeInclusive<usize> = 1..=16_777_216;
    /// Every `[conntrack] *_secs` timeout: one second to 30 days.
    pub const TIMEOUT_SECS: RangeInclusive<u64> = 1..=2_592_000;
    /// Longest `[[port]] netns` name, in bytes (a file name under `/run/netns`).
    pub const NETNS_MAX: usize = 255;
    /// `[[network]] mac_aging_secs`.
    pub const MAC_AGING_SECS: RangeInclusive<u64> = 1..=1_000_000;
    /// `[[network]] mac_limit`.
    pub const MAC_LIMIT: RangeInclusive<usize> = 1..=1_000_000;
    /// The largest MTU whose frames, with two VLAN tags, still fit a small buffer: 1920 - 14 - 8 = 1898. The
    /// most an `afxdp` port carries (its UMEM chunks hold one small buffer's frame).
    pub const SMALL_FRAME_MTU: u16 = {
        let mtu = MAX_FRAME_LEN - ETH_HEADER_LEN - 2 * VLAN_TAG_LEN;
        assert!(mtu <= u16::MAX as usize);
        #[allow(clippy::cast_possible_truncation)] // Cannot truncate: the assertion above fails the build first.
        let mtu = mtu as u16;
        mtu
    };
    /// The largest MTU (jumbo frames): a frame of it, with two VLAN tags, is carried in a large buffer by tap,
    /// afpacket, pcap and mem ports.
    pub const MAX_MTU: u16 = 9000;
    /// `[[port]] mtu`: from the IPv4 minimum (RFC 791) to [`MAX_MTU`] ([`SMALL_FRAME_MTU`] for kind `afxdp`).
    pub const MTU: RangeInclusive<u16> = 68..=MAX_MTU;
    /// `[[port]] mss_clamp` as a number: from the IPv4 minimum MSS (RFC 9293's 536) to a 9000-byte MTU's
    /// IPv4 MSS (9000 - 40).
    pub const MSS_CLAMP: RangeInclusive<u16> = 536..=8960;
    /// `[[network]] vni`: 24 bits, 0 excluded.
    pub const VNI: RangeInclusive<u32> = 1..=0x00ff_ffff;
    /// `[[network]] bum_rate_pps`.
    pub const BUM_RATE_PPS: RangeInclusive<u32> = 1..=10_000_000;
    /// `[cluster] lease_ttl_secs` (etcd's minimum lease is about 2 s).
    pub const LEASE_TTL_SECS: RangeInclusive<u32> = 2..=3600;
    /// `[cluster] vxlan_udp_port`.
    pub const VXLAN_UDP_PORT: RangeInclusive<u16> = 1..=65535;
    /// Most `[cluster] etcd` endpoints.
    pub const ETCD_ENDPOINTS_MAX: usize = 16;
    /// Longest network name, in characters.
    pub const NETWORK_NAME_MAX: usize = 64;
    /// Longest port name, in characters (a port name may become an interface name).
    pub const PORT_NAME_MAX: usize = 15;
    /// Most `[[network]]`s (ids are 16-bit; each network's tables are set up front).
    pub const NETWORKS_MAX: usize = 4096;
    /// Most `[[port]]`s (ids are 16-bit; each port has a preallocated transmit queue per worker).
    pub const PORTS_MAX: usize = 4096;
    /// Most `[[route]]`s.
    pub const ROUTES_MAX: usize = 16_384;
    /// Most `[[publish]]` rules.
    pub const PUBLISH_MAX: usize = 16_384;
    /// Longest `ifname`, in bytes (the kernel's `IFNAMSIZ` minus the terminating NUL; see [`IfName`](crate::IfName)).
    pub const IFNAME_MAX: usize = crate::ifname::IfName::MAX_LEN;
}

/// The values of keys that are left out.
pub mod defaults {
    /// `[switch] workers`.
    pub const WORKERS: usize = 1;
    /// `[switch] poll_idle_us`.
    pub const POLL_IDLE_US: u32 = 200;
    /// `[[port]] queues`.
    pub const QUEUES: u16 = 1;
    /// `[conntrack] limit`.
    pub const CONNTRACK_LIMIT: usize = 262_144;
    /// `[[network]] mac_aging_secs`.
    pub const MAC_AGING_SECS: u64 = 300;
    /// `[[network]] mac_limit`.
    pub const MAC_LIMIT: usize = 8192;
    /// `[[port]] mtu`.
    pub const MTU: u16 = 1500;
    /// `[[network]] bum_rate_pps`.
    pub const BUM_RATE_PPS: u32 = 1000;
    /// `[cluster] lease_ttl_secs`.
    pub const LEASE_TTL_SECS: u32 = 10;
    /// `[cluster] vxlan_udp_port` (IANA's VXLAN port).
    pub const VXLAN_UDP_PORT: u16 = 4789;
    /// `[conntrack] tcp_syn_sent_secs` (netfilter's timeouts, as every one below).
    pub const TCP_SYN_SENT_SECS: u64 = 120;
    /// `[conntrack] tcp_syn_recv_secs`.
    pub const TCP_SYN_RECV_SECS: u64 = 60;
    /// `[conntrack] tcp_established_secs` (5 days).
    pub const TCP_ESTABLISHED_SECS: u64 = 432_000;
    /// `[conntrack] tcp_fin_wait_secs`.
    pub const TCP_FIN_WAIT_SECS: u64 = 120;
    /// `[conntrack] tcp_close_wait_secs`.
    pub const TCP_CLOSE_WAIT_SECS: u64 = 60;
    /// `[conntrack] tcp_last_ack_secs`.
    pub const TCP_LAST_ACK_SECS: u64 = 30;
    /// `[conntrack] tcp_time_wait_secs`.
    pub const TCP_TIME_WAIT_SECS: u64 = 120;
    /// `[conntrack] tcp_close_secs`.
    pub const TCP_CLOSE_SECS: u64 = 10;
    /// `[conntrack] udp_secs`.
    pub const UDP_SECS: u64 = 30;
    /// `[conntrack] udp_assured_secs`.
    pub const UDP_ASSURED_SECS: u64 = 120;
    /// `[conntrack] icmp_secs`.
    pub const ICMP_SECS: u64 = 30;
    /// `[conntrack] tcp_unreplied_secs`.
    pub const TCP_UNREPLIED_SECS: u64 = 30;
}

/// The most errors a joined [`ConfigError`] lists before it only counts the rest.
pub const MAX_LISTED_ERRORS: usize = 20;

/// The whole desired state of a switch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Switch-wide settings.
    #[serde(default)]
    pub switch: SwitchConfig,
    /// Bridge domains, in file order.
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkConfig>,
    /// Ports, in file order.
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
    /// Static routes, in file order.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Published ports (inbound DNAT rules), in file order.
    #[serde(default)]
    pub publish: Vec<PublishConfig>,
    /// `[nat]`: masquerade settings.
    #[serde(default)]
    pub nat: NatConfig,
    /// `[conntrack]`: the connection table.
    #[serde(default)]
    pub conntrack: ConntrackTableConfig,
    /// `[cluster]`: the overlay's membership (etcd, read by `vswitch-agent`) and the VTEP (used by vswitchd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: which cluster this host belongs to and how its overlay traffic leaves. `vswitch-agent` uses every
/// key (it registers the host in etcd and follows the others); vswitchd uses `vtep_port` and `vxlan_udp_port`,
/// and only checks the others, so one file serves both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name (the etcd key prefix `/vswitch/v1/NAME/`).
    pub name: String,
    /// This host's name, unique in the cluster.
    pub host: String,
    /// etcd client URLs, `http://HOST:PORT`.
    pub etcd: Vec<String>,
    /// The host's etcd lease, in seconds: how long a host that died unannounced stays listed.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u32,
    /// The routed port whose address is this host's VTEP (outer source of VXLAN packets).
    pub vtep_port: String,
    /// The UDP port VXLAN is received on (and announced to the others).
    #[serde(default = "default_vxlan_port")]
    pub vxlan_udp_port: u16,
}

fn default_lease_ttl() -> u32 {
    defaults::LEASE_TTL_SECS
}
fn default_vxlan_port() -> u16 {
    defaults::VXLAN_UDP_PORT
}

/// A network's reach: this switch only, or an overlay across the cluster's hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// A bridge domain of this switch only.
    #[default]
    Local,
    /// A bridge domain spanning the hosts of the cluster, carried over VXLAN.
    Overlay,
}

impl Scope {
    /// The name in the language.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Overlay => "overlay",
        }
    }
}

/// `[switch]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// Poll-mode worker threads ([`limits::WORKERS`]).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Microseconds a worker keeps busy-polling without traffic before it sleeps on epoll
    /// ([`limits::POLL_IDLE_US`]; 0: sleep at once).
    #[serde(default = "default_poll_idle_us")]
    pub poll_idle_us: u32,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig { workers: default_workers(), poll_idle_us: default_poll_idle_us() }
    }
}

fn default_workers() -> usize {
    defaults::WORKERS
}
fn default_poll_idle_us() -> u32 {
    defaults::POLL_IDLE_US
}

/// `[[network]]`: an L2 bridge domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Unique name.
    pub name: String,
    /// The network's IPv4 subnet (no host bits set).
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// The switch's address on this network (inside `subnet`): the network's router interface.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The gateway's MAC (unicast, unique); derived from the network's name when absent (see
    /// the dataplane's `topology`).
    #[serde(default)]
    pub gateway_mac: Option<MacAddr>,
    /// Never routed to or from another router interface.
    #[serde(default)]
    pub internal: bool,
    /// Traffic from this network leaving through a routed port gets that port's address as its source (SNAT);
    /// requires `gateway`.
    #[serde(default)]
    pub masquerade: bool,
    /// Networks this one routes to and from untranslated despite isolation (see the module documentation,
    /// § Isolation); the relation is symmetric: naming it on either side is enough.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_routing_with: Vec<String>,
    /// Most connections from this network tracked at once (masqueraded, or to its published ports); `None`:
    /// only the table's `[conntrack] limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack_limit: Option<usize>,
    /// Seconds a learned MAC stays without being seen ([`limits::MAC_AGING_SECS`]).
    #[serde(default = "default_aging")]
    pub mac_aging_secs: u64,
    /// Most MAC entries this network learns ([`limits::MAC_LIMIT`]).
    #[serde(default = "default_mac_limit")]
    pub mac_limit: usize,
    /// `local` (default) or `overlay` (spans the cluster's hosts; needs `[cluster]`).
    #[serde(default, skip_serializing_if = "is_local")]
    pub scope: Scope,
    /// An overlay network's VXLAN network identifier; omitted: `vswitch-agent` allocates one through etcd (until
    /// it has one the network is bridged on this host only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// An overlay network's broadcast/multicast/unknown-unicast frames replicated to the other hosts per second,
    /// at most ([`limits::BUM_RATE_PPS`]).
    #[serde(default = "default_bum_rate", skip_serializing_if = "is_default_bum_rate")]
    pub bum_rate_pps: u32,
}

fn is_local(s: &Scope) -> bool {
    *s == Scope::Local
}
fn default_bum_rate() -> u32 {
    defaults::BUM_RATE_PPS
}
fn is_default_bum_rate(r: &u32) -> bool {
    *r == defaults::BUM_RATE_PPS
}

fn default_aging() -> u64 {
    defaults::MAC_AGING_SECS
}
fn default_mac_limit() -> usize {
    defaults::MAC_LIMIT
}

/// How a port reaches frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A Linux tap device the switch creates.
    Tap,
    /// An AF_XDP socket on an existing interface.
    Afxdp,
    /// An AF_PACKET (TPACKET_V3) socket on an existing interface.
    Afpacket,
    /// A pcap file (replay).
    Pcap,
    /// An in-memory port (tests, benchmarks).
    Mem,
}

impl PortKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [PortKind; 5] = [PortKind::Tap, PortKind::Afxdp, PortKind::Afpacket, PortKind::Pcap, PortKind::Mem];

    /// The kind's name in the configuration language.
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::Tap => "tap",
            PortKind::Afxdp => "afxdp",
            PortKind::Afpacket => "afpacket",
            PortKind::Pcap => "pcap",
            PortKind::Mem => "mem",
        }
    }

    /// The kind called `name` in the configuration language.
    pub fn from_name(name: &str) -> Option<PortKind> {
        PortKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the kind works on a kernel interface, so `ifname` is required.
    pub fn needs_ifname(self) -> bool {
        matches!(self, PortKind::Tap | PortKind::Afxdp | PortKind::Afpacket)
    }
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[port]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Unique name.
    pub name: String,
    /// Back-end.
    pub kind: PortKind,
    /// Kernel interface to create (tap) or attach to (afxdp, afpacket).
    #[serde(default)]
    pub ifname: Option<String>,
    /// The network this is an access port of; exactly one of `network` and `address` is set.
    #[serde(default)]
    pub network: Option<String>,
    /// The switch's own address on the link, with the link's prefix length (host bits kept): a routed port.
    #[serde(default)]
    pub address: Option<Ipv4Net>,
    /// A routed port's MAC (unicast, unique); derived from the port's name when absent (see
    /// the dataplane's `topology`).
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// IP MTU of the link ([`limits::MTU`]).
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// `tap` only: the existing named network namespace to move the tap into.
    #[serde(default)]
    pub netns: Option<String>,
    /// `afxdp` only: how the XDP program is attached ([`PortConfig::xdp_mode`] gives the default).
    #[serde(default)]
    pub mode: Option<XdpMode>,
    /// `afxdp`, `afpacket`, `tap`: queues (and workers' rx rings) to use ([`limits::QUEUES`];
    /// [`PortConfig::queue_count`] gives the default).
    #[serde(default)]
    pub queues: Option<u16>,
    /// `tap` only: exchange GSO super-frames and partial checksums with the kernel (`IFF_VNET_HDR`,
    /// `TUNSETOFFLOAD`); [`PortConfig::offloads`] gives the default (on). Off: wire-sized frames with complete
    /// checksums, as a tap without a vnet header.
    #[serde(default)]
    pub offload: Option<bool>,
    /// A routed port through which the host stack reaches the networks' containers (§ Isolation, the host
    /// port): the policy routes it to and from every network that is not `internal`, untranslated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host: bool,
    /// Lower the MSS option of TCP SYNs and SYN-ACKs that enter or leave the switch through this port to at
    /// most this ([`MssClamp`]); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mss_clamp: Option<MssClamp>,
    /// An access port of an overlay network: the MAC of the endpoint (container interface) behind it, which
    /// `vswitch-agent` registers in etcd so the other hosts reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_mac: Option<MacAddr>,
    /// With `endpoint_mac`: the endpoint's IPv4 address (inside the network's subnet), registered with it (the
    /// other hosts answer ARP for it locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_ip: Option<Ipv4Addr>,
}

/// `[[port]] mss_clamp`: the largest MSS a TCP SYN or SYN-ACK crossing the port may announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MssClampRepr", into = "MssClampRepr")]
pub enum MssClamp {
    /// `"pmtu"`: from the port's MTU, the most a segment may carry without fragmenting on the port's link:
    /// `mtu - 40` for IPv4 (20 bytes of IP and 20 of TCP header), `mtu - 60` for IPv6.
    Pmtu,
    /// A number ([`limits::MSS_CLAMP`]): this MSS for IPv4 and IPv6 alike.
    Mss(u16),
}

impl MssClamp {
    /// The largest MSS for `(IPv4, IPv6)` on a port with IP MTU `mtu`.
    pub fn limits(self, mtu: u16) -> (u16, u16) {
        match self {
            MssClamp::Pmtu => (mtu.saturating_sub(40), mtu.saturating_sub(60)),
            MssClamp::Mss(mss) => (mss, mss),
        }
    }
}

/// How [`MssClamp`] is written in the configuration and on the wire: a number or `"pmtu"`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum MssClampRepr {
    Mss(u16),
    Name(String),
}

impl TryFrom<MssClampRepr> for MssClamp {
    type Error = String;
    fn try_from(r: MssClampRepr) -> Result<Self, String> {
        match r {
            MssClampRepr::Mss(mss) => Ok(MssClamp::Mss(mss)),
            MssClampRepr::Name(name) if name == "pmtu" => Ok(MssClamp::Pmtu),
            MssClampRepr::Name(name) => Err(format!("mss_clamp {name:?} is neither a number nor \"pmtu\"")),
        }
    }
}

impl From<MssClamp> for MssClampRepr {
    fn from(c: MssClamp) -> Self {
        match c {
            MssClamp::Pmtu => MssClampRepr::Name("pmtu".to_string()),
            MssClamp::Mss(mss) => MssClampRepr::Mss(mss),
        }
    }
}

impl PortConfig {
    /// Whether a tap exchanges super-frames and partial checksums: as configured, else on.
    pub fn offloads(&self) -> bool {
        self.offload.unwrap_or(true)
    }

    /// The XDP attach mode: as configured, else [`XdpMode::Auto`].
    pub fn xdp_mode(&self) -> XdpMode {
        self.mode.unwrap_or(XdpMode::Auto)
    }

    /// The number of queues: as configured, else [`defaults::QUEUES`].
    pub fn queue_count(&self) -> u16 {
        self.queues.unwrap_or(defaults::QUEUES)
    }
}

/// `[[port]] mode`: how an AF_XDP port attaches its XDP program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode if the driver supports it, else generic (the fallback is logged).
    #[default]
    Auto,
    /// Driver mode only (`XDP_FLAGS_DRV_MODE`; fails if unsupported).
    Native,
    /// Generic (SKB) mode (`XDP_FLAGS_SKB_MODE`; works on every interface).
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl XdpMode {
    /// Every mode, in the order the documentation lists them.
    pub const ALL: [XdpMode; 3] = [XdpMode::Auto, XdpMode::Native, XdpMode::Generic];

    /// The mode's name in the configuration language.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// `[[publish]] proto`: a published port's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl PublishProto {
    /// The protocol's name in the configuration language.
    pub fn as_str(self) -> &'static str {
        match self {
            PublishProto::Tcp => "tcp",
            PublishProto::Udp => "udp",
        }
    }
}

impl fmt::Display for PublishProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[publish]]`: connections to a routed port's address on `external_port` are sent to `to` (DNAT), like
/// `docker run -p 8080:80`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// The routed port whose address is published.
    pub port: String,
    /// The protocol.
    pub proto: PublishProto,
    /// The port on the routed port's address ([`limits::EXTERNAL_PORT`]).
    pub external_port: u16,
    /// Where connections go: an address inside a network that has a gateway, and a port (not 0).
    pub to: SocketAddrV4,
}

/// `[nat]`: masquerade settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    /// The external ports (and ICMP echo identifiers) masquerade hands out, written `"A-B"` (default
    /// `"1024-65535"`).
    #[serde(default, with = "port_range_text")]
    pub port_range: PortRange,
}

/// A [`PortRange`] as `"A-B"` in the configuration's serde form.
mod port_range_text {
    use crate::port_range::PortRange;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &PortRange, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(r)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PortRange, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `[conntrack]`: the connection-tracking table's size, TCP policy and timeouts (seconds; defaults are
/// netfilter's, see [`defaults`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConntrackTableConfig {
    /// Most tracked connections ([`limits::CONNTRACK_LIMIT`]).
    pub limit: usize,
    /// TCP policy: `false` (netfilter's loose default) picks up connections mid-stream; `true` refuses them.
    pub tcp_strict: bool,
    /// TCP SYN_SENT.
    pub tcp_syn_sent_secs: u64,
    /// TCP SYN_RECV.
    pub tcp_syn_recv_secs: u64,
    /// TCP ESTABLISHED.
    pub tcp_established_secs: u64,
    /// TCP FIN_WAIT.
    pub tcp_fin_wait_secs: u64,
    /// TCP CLOSE_WAIT.
    pub tcp_close_wait_secs: u64,
    /// TCP LAST_ACK.
    pub tcp_last_ack_secs: u64,
    /// TCP TIME_WAIT.
    pub tcp_time_wait_secs: u64,
    /// TCP CLOSE (after a RST).
    pub tcp_close_secs: u64,
    /// UDP, no reply seen yet.
    pub udp_secs: u64,
    /// UDP, replies seen.
    pub udp_assured_secs: u64,
    /// ICMP echo.
    pub icmp_secs: u64,
    /// TCP ESTABLISHED picked up mid-stream (loose policy) until a packet is seen in the reply direction.
    pub tcp_unreplied_secs: u64,
}

impl Default for ConntrackTableConfig {
    fn default() -> Self {
        ConntrackTableConfig {
            limit: defaults::CONNTRACK_LIMIT,
            tcp_strict: false,
            tcp_syn_sent_secs: defaults::TCP_SYN_SENT_SECS,
            tcp_syn_recv_secs: defaults::TCP_SYN_RECV_SECS,
            tcp_established_secs: defaults::TCP_ESTABLISHED_SECS,
            tcp_fin_wait_secs: defaults::TCP_FIN_WAIT_SECS,
            tcp_close_wait_secs: defaults::TCP_CLOSE_WAIT_SECS,
            tcp_last_ack_secs: defaults::TCP_LAST_ACK_SECS,
            tcp_time_wait_secs: defaults::TCP_TIME_WAIT_SECS,
            tcp_close_secs: defaults::TCP_CLOSE_SECS,
            udp_secs: defaults::UDP_SECS,
            udp_assured_secs: defaults::UDP_ASSURED_SECS,
            icmp_secs: defaults::ICMP_SECS,
            tcp_unreplied_secs: defaults::TCP_UNREPLIED_SECS,
        }
    }
}

impl ConntrackTableConfig {
    /// The timeout keys with their values, in documentation order.
    pub fn timeouts_secs(&self) -> [(&'static str, u64); 12] {
        [
            ("tcp_syn_sent_secs", self.tcp_syn_sent_secs),
            ("tcp_syn_recv_secs", self.tcp_syn_recv_secs),
            ("tcp_established_secs", self.tcp_established_secs),
            ("tcp_fin_wait_secs", self.tcp_fin_wait_secs),
            ("tcp_close_wait_secs", self.tcp_close_wait_secs),
            ("tcp_last_ack_secs", self.tcp_last_ack_secs),
            ("tcp_time_wait_secs", self.tcp_time_wait_secs),
            ("tcp_close_secs", self.tcp_close_secs),
            ("udp_secs", self.udp_secs),
            ("udp_assured_secs", self.udp_assured_secs),
            ("icmp_secs", self.icmp_secs),
            ("tcp_unreplied_secs", self.tcp_unreplied_secs),
        ]
    }
}

fn default_mtu() -> u16 {
    defaults::MTU
}

/// `[[route]]`: a static route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination prefix (no host bits set; unique among routes).
    pub prefix: Ipv4Net,
    /// The next hop: a neighbour in a connected subnet, not one of the switch's own addresses.
    pub via: Ipv4Addr,
    /// The routed port to leave by; when absent, the router interface whose subnet holds `via`.
    #[serde(default)]
    pub port: Option<String>,
}

/// A configuration that could not be read or is not valid.
///
/// When there are several errors, `origin` and `line` are those of the first, and `message` continues after
/// the first one's text with the others, one per line, each as `ORIGIN:LINE: MESSAGE` (see the module
/// documentation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file (or other source) the text came from.
    pub origin: String,
    /// 1-based line of the offending value, or of the table's header when a field is missing.
    pub line: Option<usize>,
    /// What is wrong, naming the object and the field.
    pub message: String,
}

impl Config {
    /// Reads and validates a configuration file; errors name the file as given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &origin)
    }

    /// Parses and validates configuration text; `origin` names it in errors. All errors are reported, joined
    /// into one [`ConfigError`] (see the module documentation).
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_all_errors(text, origin).map_err(|errors| join(errors, origin))
    }

    /// Parses and validates configuration text, returning every error separately, sorted by line.
    pub fn parse_all_errors(text: &str, origin: &str) -> Result<Config, Vec<ConfigError>> {
        parse::parse(text, origin)
    }

    /// Checks a configuration built in code or deserialized directly (e.g. from JSON); errors carry no line.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        check::validate(self, origin).map_err(|errors| join(errors, origin))
    }

    /// Index of the network called `name`.
    pub fn network_index(&self, name: &str) -> Option<usize> {
        self.networks.iter().position(|n| n.name == name)
    }

    /// Index of the port called `name`.
    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }
}

/// One error from a list, with the rest appended to its message (at most [`MAX_LISTED_ERRORS`] in all).
fn join(errors: Vec<ConfigError>, origin: &str) -> ConfigError {
    let total = errors.len();
    let mut iter = errors.into_iter();
    let Some(mut first) = iter.next() else {
        return ConfigError { origin: origin.to_string(), line: None, message: "invalid configuration".to_string() };
    };
    for e in iter.by_ref().take(MAX_LISTED_ERRORS - 1) {
        first.message.push('\n');
        first.message.push_str(&e.to_string());
    }
    if total > MAX_LISTED_ERRORS {
        first.message.push_str(&format!("\n{origin}: … and {} more errors", total - MAX_LISTED_ERRORS));
    }
    first
}
