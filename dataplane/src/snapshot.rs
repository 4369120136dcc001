//! The state snapshot: what a restarted `vswitchd run` needs so that established connections go on where the
//! last one stopped: the MAC tables, the resolved neighbours, and the tracked connections with their NAT
//! bindings (the allocated source ports are claimed again from them) and their remaining timeouts.
//!
//! # The file
//! `STATE_DIR/vswitchd.state` (`--state-dir`, default `/run/vswitch/`): the 8 bytes [`MAGIC`], the format
//! [`VERSION`] as a little-endian `u32`, then one [`Snapshot`] in CBOR (RFC 8949, through `ciborium`). CBOR
//! because it is a standard, self-describing encoding (like JSON, a field added later with a default still reads,
//! and any CBOR tool can decode the file), while being smaller and cheaper to write than JSON; the crate is already
//! in the workspace's lock file. [`write`] writes a temporary file next to it, syncs it and renames it into place,
//! so a reader (the next vswitchd, after any crash) sees a whole snapshot or the previous one. [`read`] refuses
//! (and the caller logs and ignores) a file with another magic or an unknown version, or that does not decode: a
//! snapshot is an optimisation, never a reason not to start.
//!
//! # Versions
//! - **2** (written): connection records carry whether the connection has seen a reply (`replied`: assured,
//!   never evicted for room, and not on the short timeout of a connection picked up mid-stream) and the limit
//!   group its NAT binding counts against (`[conntrack]`/per-network limits).
//! - **1** (read, not written): the same without those two; its connections are restored as replied and in no
//!   group, as vswitchd 1's were. It is read rather than ignored so that upgrading vswitchd does not drop every
//!   NAT'd connection: nothing in it is ambiguous, and what it lacks has a safe default (a connection it held
//!   was live before the restart). Every other version (a newer vswitchd's) is ignored with a warning.
//!
//! # What is restored ([`restore`])
//! Times are stored as durations (an entry's age, a connection's remaining lifetime), since the switch clock
//! starts again at each start. Objects are matched by name:
//! - MAC entries whose network and port still exist, with the port still in that network;
//! - neighbours and connections by the rules an `apply` uses (`router/carry.rs`): all of them when the router is
//!   the same ([`Topology::same_router_as`]); otherwise those whose interfaces (matched by name), routes, NAT
//!   port and publish rule are unchanged. The others are dropped, and loose TCP tracking picks up what it can.
//!
//! A connection opened after the last snapshot is not in it; loose TCP tracking picks it up mid-stream when its
//! next packet leaves (a masqueraded connection keeps its port only if that port is still free).
//!
//! Threads: [`take`] and [`restore`] run with the switch locked (the daemon's main thread); encoding and the
//! file I/O happen outside the lock.

use crate::config::Config;
use crate::conntrack::{Entry, NatBinding, ProtoState, Tuple};
use crate::ids::{Nanos, PortId};
use crate::neigh::RifId;
use crate::pipeline::Switch;
use crate::router::Router;
use crate::topology::Topology;
use crate::wire::MacAddr;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The first bytes of a snapshot file.
pub const MAGIC: [u8; 8] = *b"VSWSTATE";
/// The format version this build writes (it reads this one and version 1; see the module documentation).
pub const VERSION: u32 = 2;
/// The file's name in the state directory.
pub const FILE_NAME: &str = "vswitchd.state";

/// The snapshot file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Learned state, by name and duration (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The configuration it was taken under (to match objects by name and the router as a whole).
    pub config: Config,
    /// MAC table entries.
    pub fdb: Vec<FdbRecord>,
    /// Resolved neighbours.
    pub neighbours: Vec<NeighRecord>,
    /// Tracked connections (one byte string of fixed-size records: see [`packed`]).
    #[serde(with = "packed")]
    pub connections: Vec<ConnRecord>,
}

/// One learned MAC address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbRecord {
    /// The network's name.
    pub network: String,
    /// The address.
    pub mac: MacAddr,
    /// The port's name.
    pub port: String,
    /// Nanoseconds since it was last seen.
    pub age_ns: u64,
}

/// One resolved neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighRecord {
    /// The router interface (valid because the router must be the same to restore it).
    pub rif: RifId,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: MacAddr,
}

/// One tracked connection (encoded by [`packed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRecord {
    /// What the first packet looked like.
    pub orig: Tuple,
    /// What replies look like (after NAT).
    pub reply: Tuple,
    /// Protocol state.
    pub state: ProtoState,
    /// Its translation, and the allocator holding its port.
    pub nat: Option<NatBinding>,
    /// Nanoseconds since it was created.
    pub age_ns: u64,
    /// Nanoseconds it has left to live.
    pub remaining_ns: u64,
    /// A packet was seen in the reply direction ([`Entry::replied`]).
    pub replied: bool,
}

/// A format version 1 snapshot: the same fields, shorter connection records.
#[derive(Deserialize)]
struct SnapshotV1 {
    config: Config,
    fdb: Vec<FdbRecord>,
    neighbours: Vec<NeighRecord>,
    #[serde(deserialize_with = "packed::deserialize_v1")]
    connections: Vec<ConnRecord>,
}

/// Copies the learned state of `sw` (running `cfg`) at `now`. Runs with the switch locked: it copies, nothing
/// more (about 40 ns per connection, see `measure_snapshot_cost`).
pub fn take(sw: &Switch, cfg: &Config, now: Nanos) -> Snapshot {
    let topo = sw.topology();
    let mut fdb = Vec::new();
    for (n, net) in topo.networks.iter().enumerate() {
        for e in sw.fdb(crate::ids::table_id(n)).entries(now) {
            if let Some(p) = topo.ports.get(e.port as usize) {
                fdb.push(FdbRecord {
                    network: net.name.clone(),
                    mac: e.mac,
                    port: p.name.clone(),
                    age_ns: now.saturating_sub(e.last_seen),
                });
            }
        }
    }
    let neighbours = sw
        .router()
        .neighbours(now)
        .into_iter()
        .filter_map(|n| Some(NeighRecord { rif: n.rif, ip: n.ip, mac: n.mac? }))
        .collect();
    let connections = sw
        .conntrack()
        .entries(now)
        .map(|(_, e)| ConnRecord {
            orig: e.orig,
            reply: e.reply,
            state: e.state,
            nat: e.nat,
            age_ns: now.saturating_sub(e.created),
            remaining_ns: e.expires.saturating_sub(now),
            replied: e.replied,
        })
        .collect();
    Snapshot { config: cfg.clone(), fdb, neighbours, connections }
}

/// [`take`] of a switch made of `shards` (`crate::pipeline::shard`): the replicated tables (MAC, neighbours)
/// from shard 0, the connections from every shard.
pub fn take_shards(shards: &[&Switch], cfg: &Config, now: Nanos) -> Snapshot {
    let Some((first, rest)) = shards.split_first() else {
        return Snapshot { config: cfg.clone(), fdb: Vec::new(), neighbours: Vec::new(), connections: Vec::new() };
    };
    let mut snap = take(first, cfg, now);
    for s in rest {
        snap.connections.extend(take(s, cfg, now).connections);
    }
    snap
}

/// [`restore`] into a switch made of `shards`, each a switch for `cfg` in shard order: the MAC tables and
/// neighbours into every shard, each connection into the shard that owns it. Counts MAC entries and neighbours
/// once (shard 0's) and connections over all shards.
pub fn restore_shards(shards: &mut [&mut Switch], cfg: &Config, snap: &Snapshot, now: Nanos) -> Restored {
    let count = shards.len();
    let mut total = Restored::default();
    for (i, sw) in shards.iter_mut().enumerate() {
        let owners = crate::pipeline::Owners::new(sw.topology());
        let mine = |c: &&ConnRecord| {
            let (o, proto) = (c.orig, c.orig.proto as u8);
            owners.owner_of(o.src, o.dst, proto, Some(o.dport), count).unwrap_or(0) == i
        };
        let part = Snapshot {
            config: snap.config.clone(),
            fdb: snap.fdb.clone(),
            neighbours: snap.neighbours.clone(),
            connections: snap.connections.iter().filter(mine).cloned().collect(),
        };
        let r = restore(sw, cfg, &part, now);
        if i == 0 {
            total = r;
        } else {
            total.connections += r.connections;
            total.connections_dropped += r.connections_dropped;
        }
    }
    total
}

/// What [`restore`] put back, and what it dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Restored {
    /// MAC entries restored.
    pub fdb: usize,
    /// MAC entries dropped (their network or port is gone, or the port moved to another network).
    pub fdb_dropped: usize,
    /// Neighbours restored.
    pub neighbours: usize,
    /// Connections restored.
    pub connections: usize,
    /// Connections dropped (the router changed, or the table refused them).
    pub connections_dropped: usize,
    /// Whether the router is the same as the snapshot's (everything restored as it was); otherwise what the
    /// differences do not concern was carried over.
    pub router_matched: bool,
}

/// Puts `snap`'s state into `sw` (a switch for `cfg`, not forwarding yet or locked) at `now`; see the module
/// documentation for what is matched how.
pub fn restore(sw: &mut Switch, cfg: &Config, snap: &Snapshot, now: Nanos) -> Restored {
    let topo = sw.topology().clone();
    let mut r = Restored::default();
    let (bridge, router) = sw.tables_mut();
    for e in &snap.fdb {
        let net = topo.network_id(&e.network);
        let port: Option<PortId> = topo.port_id(&e.port);
        match (net, port) {
            (Some(n), Some(p)) if topo.ports[p as usize].network == Some(n) => {
                bridge.fdb_mut(n).learn(e.mac, p, now.saturating_sub(e.age_ns));
                r.fdb += 1;
            }
            _ => r.fdb_dropped += 1,
        }
    }
    r.router_matched = Topology::from_config(&snap.config).same_router_as(&Topology::from_config(cfg));
    if r.router_matched {
        restore_router(router, &topo, snap, now, &mut r);
        return r;
    }
    // Another router: rebuild the snapshot's own, then carry over into this one what the differences do not
    // concern (interfaces by name, routes, NAT ports, publish rules: the rules of an `apply`, `router/carry.rs`).
    let snap_topo = Topology::from_config(&snap.config);
    let mut theirs = Router::new(&snap_topo);
    let mut counted = Restored::default();
    restore_router(&mut theirs, &snap_topo, snap, now, &mut counted);
    let (carried, c) = theirs.carried_into(&snap_topo, &topo);
    *router = carried;
    r.neighbours = c.neighbours_kept;
    r.connections = c.connections_kept;
    r.connections_dropped = counted.connections_dropped + c.connections_flushed;
    r
}

/// Puts the snapshot's neighbours and connections into `router`, a router for the snapshot's own topology.
fn restore_router(router: &mut Router, topo: &Topology, snap: &Snapshot, now: Nanos, r: &mut Restored) {
    for n in &snap.neighbours {
        if (n.rif as usize) < topo.rifs.len() {
            router.restore_neighbour(n.rif, n.ip, n.mac, now);
            r.neighbours += 1;
        }
    }
    for c in &snap.connections {
        let e = Entry {
            orig: c.orig,
            reply: c.reply,
            state: c.state,
            created: now.saturating_sub(c.age_ns),
            expires: now.saturating_add(c.remaining_ns),
            nat: c.nat,
            replied: c.replied,
        };
        if router.nat_mut().restore(&e, now) {
            r.connections += 1;
        } else {
            r.connections_dropped += 1;
        }
    }
}

/// Why a snapshot file was not used.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// There is none.
    #[error("no snapshot at {0}")]
    Missing(PathBuf),
    /// It could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Not a snapshot file, or written by a vswitchd with another format version.
    #[error("{path}: {what}; ignored")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Encodes `snap` as the file's bytes (magic, version, CBOR).
pub fn encode(snap: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 64 * snap.connections.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    // Writing into a Vec cannot fail, and every type here serializes.
    ciborium::into_writer(snap, &mut out).expect("a snapshot encodes");
    out
}

/// Decodes a file's bytes; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    if bytes.len() < 12 || bytes[..8] != MAGIC {
        return Err("not a vswitchd state snapshot (bad magic)".to_string());
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let corrupt = |e: ciborium::de::Error<io::Error>| format!("corrupt snapshot (format version {version}): {e}");
    match version {
        VERSION => ciborium::from_reader(&bytes[12..]).map_err(corrupt),
        1 => {
            let v1: SnapshotV1 = ciborium::from_reader(&bytes[12..]).map_err(corrupt)?;
            tracing::info!(
                "reading a format version 1 snapshot: its connections are restored as replied, in no limit group"
            );
            Ok(Snapshot { config: v1.config, fdb: v1.fdb, neighbours: v1.neighbours, connections: v1.connections })
        }
        _ => Err(format!("snapshot format version {version}, this vswitchd reads versions 1 and {VERSION}")),
    }
}

/// Writes `snap` to `path` atomically: a temporary file in the same directory (created if missing), synced,
/// then renamed over `path`. Returns the bytes written.
pub fn write(path: &Path, snap: &Snapshot) -> io::Result<usize> {
    let bytes = encode(snap);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(bytes.len())
}

/// Reads the snapshot at `path`.
pub fn read(path: &Path) -> Result<Snapshot, ReadError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing(path.to_path_buf())),
        Err(source) => return Err(ReadError::Io { path: path.to_path_buf(), source }),
    };
    decode(&bytes).map_err(|what| ReadError::Format { path: path.to_path_buf(), what })
}

pub mod packed;
#[cfg(test)]
mod tests;
