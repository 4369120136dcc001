//! The result of every op of the control protocol, as the `result` of a successful [`Response`] carries it;
//! the op → result table is in the [parent module](super)'s documentation. Clients must ignore fields they do
//! not know (new fields may be added without a new protocol version).
//!
//! Threads: plain data.

use crate::config::{Config, NetworkConfig, PortKind};
use crate::mac::MacAddr;
pub use crate::overlay::{OverlayInspect, OverlayState, UpdateSummary};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[cfg(doc)]
use super::{envelope::Response, PROTOCOL_VERSION};

/// `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResult {
    /// `"vswitchd"`.
    pub server: String,
    /// The daemon's version (its crate version).
    pub server_version: String,
    /// [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The daemon's process id.
    pub pid: u32,
    /// Nanoseconds since the daemon started forwarding.
    pub uptime_ns: u64,
    /// The running configuration's generation (0: started empty, nothing applied yet).
    pub generation: u64,
}

/// `get_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigResult {
    /// The running configuration's generation.
    pub generation: u64,
    /// Where it came from (`--config` path or the `origin` of the apply); absent at generation 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The running configuration (defaults filled in).
    pub config: Config,
}

/// `apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// The generation now running (unchanged for a dry run or a configuration equal to the running one).
    pub generation: u64,
    /// False when the configuration equals the running one (nothing done).
    pub changed: bool,
    /// True for a dry run (nothing done; the summary says what would be).
    pub dry_run: bool,
    /// What changed (or would).
    pub summary: ApplySummary,
}

/// What an `apply` changed, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplySummary {
    /// Ports opened.
    pub ports_added: Vec<String>,
    /// Ports closed.
    pub ports_removed: Vec<String>,
    /// Ports closed and opened again (kind, ifname, mtu, netns, mode or queue count changed).
    pub ports_reopened: Vec<String>,
    /// Ports kept open whose network, address or MAC changed (their learned MAC entries are flushed).
    pub ports_reattached: Vec<String>,
    /// Ports kept open, unchanged.
    pub ports_unchanged: Vec<String>,
    /// Networks created.
    pub networks_added: Vec<String>,
    /// Networks deleted (with their MAC tables).
    pub networks_removed: Vec<String>,
    /// Networks whose settings changed (their MAC tables are kept, with the new limit and ageing).
    pub networks_changed: Vec<String>,
    /// MAC table entries carried into the new configuration.
    pub fdb_entries_kept: usize,
    /// MAC table entries dropped (their port or network went away or changed).
    pub fdb_entries_flushed: usize,
    /// Whether the router's learned state (neighbours, tracked connections, NAT bindings) was kept or flushed.
    pub router_state: RouterState,
    /// Tracked connections dropped (non-zero only when `router_state` is `flushed`).
    pub connections_flushed: usize,
    /// The worker threads were restarted with a different count (`[switch] workers`).
    pub workers_changed: bool,
    /// Microseconds forwarding stood still while the workers switched over (0 when nothing was applied): the
    /// whole pause when the workers were stopped and restarted, else the longest any one worker spent carrying
    /// its tables over at a batch boundary while the others forwarded.
    #[serde(default)]
    pub pause_us: u64,
    /// The worker threads were stopped and restarted for this apply (ports opened, closed or reordered,
    /// networks or interfaces added, removed or renamed, other worker settings, other connection owners);
    /// false when they took the change at a batch boundary without stopping.
    #[serde(default)]
    pub workers_paused: bool,
    /// Ports of the new configuration that are down (they could not be opened, now or before): applied
    /// anyway, reported here and in `port_ls`, and retried by vswitchd with backoff. Per-port outcome: a port
    /// failing never refuses the apply.
    #[serde(default)]
    pub ports_failed: Vec<PortFailedRow>,
    /// Ports whose changed back-end settings (kind, ifname, mtu, netns, mode, queues, offload) could not be
    /// opened: each keeps its old, working port and its old back-end settings (as `get_config` then shows);
    /// applying the configuration again tries the change again (with `changed: false` and the generation kept
    /// when those changes were all there was and they failed again). Not in `ports_reopened`.
    #[serde(default)]
    pub ports_change_failed: Vec<PortFailedRow>,
    /// Workers whose shard of the switch panicked while carrying itself over to this configuration (applied
    /// without a pause): each was rebuilt for it with what it held restored (MAC entries, neighbours, its
    /// connections, as after a restart) while the other workers forwarded; the configuration is applied.
    /// Normally empty: a panic there is a bug, logged with its message.
    #[serde(default)]
    pub shards_rebuilt: Vec<ShardRebuiltRow>,
}

/// A worker's shard rebuilt during an `apply` (in [`ApplySummary::shards_rebuilt`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRebuiltRow {
    /// The worker.
    pub worker: usize,
    /// The panic's message.
    pub error: String,
    /// Its connections restored into the new shard.
    pub connections_kept: usize,
    /// Its connections lost (also counted in `connections_flushed`).
    pub connections_lost: usize,
}

/// What became of the router's learned state in an apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterState {
    /// Neighbours, connections and NAT bindings carried over.
    #[default]
    Kept,
    /// Emptied: a router interface, route, publish rule, NAT or conntrack setting changed (see
    /// `dataplane::control::daemon`).
    Flushed,
}

/// `network_ls`: one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSummary {
    /// Name.
    pub name: String,
    /// Subnet, if configured.
    pub subnet: Option<Ipv4Net>,
    /// The switch's gateway address on it, if any.
    pub gateway: Option<Ipv4Addr>,
    /// The gateway's MAC (configured or derived), when there is a gateway.
    pub gateway_mac: Option<MacAddr>,
    /// Never routed to or from another interface.
    pub internal: bool,
    /// Masqueraded when leaving through a routed port.
    pub masquerade: bool,
    /// Its ports, in configuration order.
    pub ports: Vec<String>,
    /// MAC entries now.
    pub mac_entries: usize,
    /// MAC entry limit.
    pub mac_limit: usize,
}

/// `network_inspect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkInspect {
    /// As in `network_ls`.
    pub summary: NetworkSummary,
    /// The network's configuration (defaults filled in).
    pub config: NetworkConfig,
    /// MAC table counters.
    pub fdb: FdbCounters,
    /// Its learned MAC entries.
    pub entries: Vec<FdbRow>,
    /// For an overlay network: the VNI, MTU, member VTEPs (with their state, MTU and counters) and remote
    /// endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayInspect>,
}

/// `overlay_update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayUpdateResult {
    /// What the tables hold now.
    pub summary: UpdateSummary,
    /// Microseconds the switch lock was held for the update (forwarding of every port waits that long at most).
    pub held_us: u64,
}

/// A MAC table's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbCounters {
    /// Entries now.
    pub entries: usize,
    /// Addresses learned.
    pub learned: u64,
    /// Addresses that moved to another port.
    pub moved: u64,
    /// Entries evicted (table full).
    pub evicted: u64,
    /// Entries aged out.
    pub aged: u64,
}

/// `fdb_show`: one learned MAC address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbRow {
    /// The network.
    pub network: String,
    /// The address.
    pub mac: MacAddr,
    /// The port it is behind.
    pub port: String,
    /// Milliseconds since it was last seen.
    pub age_ms: u64,
}

/// `port_ls`: one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRow {
    /// Name.
    pub name: String,
    /// Back-end.
    pub kind: PortKind,
    /// Kernel interface.
    pub ifname: Option<String>,
    /// `access` (of `network`) or `routed` (with `address`).
    pub mode: PortMode,
    /// The network, for an access port.
    pub network: Option<String>,
    /// The switch's address, for a routed port.
    pub address: Option<Ipv4Net>,
    /// Queues open.
    pub queues: usize,
    /// AF_XDP attach mode obtained.
    pub xdp_mode: Option<String>,
    /// The port's own I/O counters (summed over queues).
    pub io: PortIo,
    /// The pipeline's counters for the port.
    pub pipeline: PortPipeline,
    /// What the port transmits as is (learned when it opened): `csum`, `tso4`, `tso6`, `uso`, comma-separated,
    /// or `-`; a frame needing more is segmented or completed in software first.
    #[serde(default)]
    pub offloads: String,
    /// `up`, or `failed`: it could not be opened (vswitchd retries it with backoff; meanwhile what the switch
    /// sends it is dropped and the others forward).
    #[serde(default)]
    pub state: PortState,
    /// Why it is down (`state` = `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether a configured port is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    /// Open and forwarding.
    #[default]
    Up,
    /// It could not be opened; retried with backoff.
    Failed,
}

/// A port that is down after an `apply` (in [`ApplySummary::ports_failed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortFailedRow {
    /// The port.
    pub port: String,
    /// Why it could not be opened (names the port).
    pub error: String,
}

/// How a port is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortMode {
    /// An access port of a network.
    Access,
    /// A routed port with its own address.
    Routed,
}

/// A port's I/O counters, as the dataplane's ports count them (`dataplane::port::PortStats`).
pub type PortIo = PortStats;

/// The pipeline's counters for a port, as the dataplane counts them (`dataplane::counters::PortCounters`).
pub type PortPipeline = PortCounters;

/// What a port counts about its own I/O (what the switch decided is counted by the pipeline).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// Frames received and handed to the switch.
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames the port received but could not hand over (longer than a buffer).
    pub rx_dropped: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames given to the port that it could not send.
    pub tx_dropped: u64,
    /// GSO super-frames received whole (each also one of `rx_packets`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rx_super_frames: u64,
    /// GSO super-frames sent whole, for the kernel to segment if it must (each also one of `tx_packets`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tx_super_frames: u64,
    /// Super-frames the port cut into segments in software: on receive when no large buffer was free, on
    /// transmit when the link takes no super-frames (their segments count in `rx_packets` / `tx_packets`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sw_segmented: u64,
    /// Partial checksums the port completed in software (for a link without checksum offload).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sw_csum: u64,
}

/// Offload counters are left out of the JSON while zero, so ports and captures that never see offloads report
/// exactly what they did before those counters existed (`vswitchd replay` output, the golden files).
fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl PortStats {
    /// The sum of two sets of counters (the queues of one port).
    pub fn merged(self, o: PortStats) -> PortStats {
        PortStats {
            rx_packets: self.rx_packets + o.rx_packets,
            rx_bytes: self.rx_bytes + o.rx_bytes,
            rx_dropped: self.rx_dropped + o.rx_dropped,
            tx_packets: self.tx_packets + o.tx_packets,
            tx_bytes: self.tx_bytes + o.tx_bytes,
            tx_dropped: self.tx_dropped + o.tx_dropped,
            rx_super_frames: self.rx_super_frames + o.rx_super_frames,
            tx_super_frames: self.tx_super_frames + o.tx_super_frames,
            sw_segmented: self.sw_segmented + o.sw_segmented,
            sw_csum: self.sw_csum + o.sw_csum,
        }
    }
}

/// What the pipeline counted for one port (as ingress for rx/forwarded/flooded/dropped, as egress for tx).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounters {
    /// Frames received from the port.
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Received frames sent to one known port.
    pub forwarded: u64,
    /// Received frames flooded (broadcast, multicast, unknown unicast).
    pub flooded: u64,
    /// Received frames handed to the router (it counts what became of them; its drops also count in `dropped`).
    pub routed: u64,
    /// Received frames dropped (whatever the reason).
    pub dropped: u64,
    /// Frames queued for transmission on the port.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// GSO super-frames among `rx_packets` (each one frame there, however many segments it stands for).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rx_super_frames: u64,
    /// The segments those super-frames stand for: ceil(payload / gso_size) each. The packets a link without
    /// offloads would have carried are `rx_packets - rx_super_frames + rx_segments` ([`PortCounters::rx_wire`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rx_segments: u64,
    /// GSO super-frames among `tx_packets`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tx_super_frames: u64,
    /// The segments those super-frames stand for ([`PortCounters::tx_wire`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tx_segments: u64,
    /// TCP SYNs received or sent on the port whose MSS option its `mss_clamp` lowered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mss_clamped: u64,
}

impl PortCounters {
    /// Packets received as a link without offloads would have carried them: a super-frame counts as its
    /// segments.
    pub fn rx_wire(&self) -> u64 {
        self.rx_packets - self.rx_super_frames.min(self.rx_packets) + self.rx_segments
    }

    /// Packets queued for transmission as wire-sized packets (a super-frame counts as its segments).
    pub fn tx_wire(&self) -> u64 {
        self.tx_packets - self.tx_super_frames.min(self.tx_packets) + self.tx_segments
    }
}

/// `route_show`: one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRow {
    /// Destination.
    pub prefix: Ipv4Net,
    /// Gateway (none for a connected route).
    pub via: Option<Ipv4Addr>,
    /// Egress router interface (`network:NAME` or `port:NAME`).
    pub interface: String,
    /// `connected` or `static`.
    pub origin: String,
}

/// `neigh_show`: one neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighRow {
    /// Router interface (`network:NAME` or `port:NAME`).
    pub interface: String,
    /// Address.
    pub ip: Ipv4Addr,
    /// MAC, once resolved.
    pub mac: Option<MacAddr>,
    /// `incomplete`, `failed`, `reachable` or `stale`.
    pub state: String,
}

/// `conntrack_ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackList {
    /// Live connections in the table.
    pub total: usize,
    /// True when `connections` stops at the limit.
    pub truncated: bool,
    /// The first `limit` connections, sorted by original tuple.
    pub connections: Vec<ConnRow>,
}

/// One tracked connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRow {
    /// `tcp`, `udp` or `icmp`.
    pub proto: String,
    /// Protocol state (`established`, `syn_sent`, `assured`, …).
    pub state: String,
    /// The first packet's tuple.
    pub orig: ConnTuple,
    /// What replies look like.
    pub reply: ConnTuple,
    /// How it is translated (`snat`, `dnat`, `hairpin`), if at all.
    pub nat: Option<String>,
    /// Seconds until it expires without traffic.
    pub expires_in_secs: u64,
}

/// One direction of a connection. For ICMP echo, the ports are the identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnTuple {
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port.
    pub dport: u16,
}

/// `conntrack_flush`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackFlushed {
    /// Connections removed (their NAT ports released).
    pub removed: usize,
}

/// `stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsResult {
    /// The running configuration's generation.
    pub generation: u64,
    /// The counters, exactly as `vswitchd run --stats-json` writes them (documented there and in the README:
    /// `uptime_ns`, `frames_in`, `frames_out`, `ports`, `drops`, `networks`, `bridge`, `router`, `neigh`,
    /// `nat`, `snat`, `conntrack`, `workers`). Kept as JSON so the file and this op never drift apart.
    pub report: Value,
}

/// `trace`: what the pipeline did with one frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceResult {
    /// The ingress port.
    pub port: String,
    /// The frame, decoded.
    pub frame: String,
    /// Each stage's decision, in order.
    pub stages: Vec<TraceStage>,
    /// Frames the switch would send (the frame itself, copies, replies the router makes).
    pub outputs: Vec<TraceOutput>,
    /// Drops counted, by reason name.
    pub drops: BTreeMap<String, u64>,
}

/// One stage's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStage {
    /// `ingress`, `bridge`, `route`, `router`, …
    pub stage: String,
    /// What it decided.
    pub decision: String,
}

/// One frame the switch would send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceOutput {
    /// The egress port.
    pub port: String,
    /// The frame, decoded.
    pub frame: String,
}
