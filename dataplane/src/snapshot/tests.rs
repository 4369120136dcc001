//! Snapshot tests: encode/decode and restore/take round trips over random tables (proptest), refusal of
//! corrupt, truncated and other-version files without panicking, entries of removed objects dropped, and (ignored)
//! the cost for 100,000 connections.

use super::*;
use crate::conntrack::{NatKind, Proto, TcpState, UdpState};
use proptest::prelude::*;

const CONFIG: &str = r#"
[[network]]
name = "lan"
subnet = "10.0.0.0/16"
gateway = "10.0.0.1"
masquerade = true

[[port]]
name = "a"
kind = "mem"
network = "lan"

[[port]]
name = "b"
kind = "mem"
network = "lan"

[[port]]
name = "up"
kind = "mem"
address = "203.0.113.2/24"

[[route]]
prefix = "0.0.0.0/0"
via = "203.0.113.1"

[conntrack]
limit = 262144
"#;

/// The switch clock's time in these tests (a new process's clock starts at one second).
const NOW: Nanos = 5_000_000_000;

fn config() -> Config {
    Config::parse(CONFIG, "test").unwrap()
}

fn up_rif(sw: &Switch) -> RifId {
    let t = sw.topology();
    t.rif_of_port(t.port_id("up").unwrap()).unwrap()
}

/// A masqueraded TCP or UDP connection from 10.0.x.y:sport to 198.51.100.z:dport, through port `nat_port`,
/// replied, in no limit group.
fn conn(i: u32, proto: Proto, nat_port: u16, up: RifId, age_ns: u64, remaining_ns: u64) -> ConnRecord {
    let inside = Ipv4Addr::from(0x0a00_0000 | ((i & 0xfffd) + 2));
    let server = Ipv4Addr::new(198, 51, 100, 1 + (i % 200) as u8);
    let sport = 1024 + (i % 50_000) as u16;
    let state = match proto {
        Proto::Tcp => ProtoState::Tcp(TcpState::Established),
        _ => ProtoState::Udp(UdpState::Assured),
    };
    ConnRecord {
        orig: Tuple::new(0, proto, (inside, sport), (server, 443)),
        reply: Tuple::new(0, proto, (server, 443), (Ipv4Addr::new(203, 0, 113, 2), nat_port)),
        state,
        nat: Some(NatBinding { kind: NatKind::Snat, allocator: Some(up), group: None }),
        age_ns,
        remaining_ns,
        replied: true,
    }
}

/// The router interface of network `lan` (a connection's limit group).
fn lan_rif(sw: &Switch) -> RifId {
    let t = sw.topology();
    t.networks[t.network_id("lan").unwrap() as usize].rif.unwrap()
}

fn sorted(mut s: Snapshot) -> Snapshot {
    s.fdb.sort_by(|a, b| (&a.network, a.mac).cmp(&(&b.network, b.mac)));
    s.neighbours.sort_by_key(|n| (n.rif, n.ip));
    s.connections.sort_by_key(|c| c.orig);
    s
}

prop_compose! {
    /// Random tables: MAC entries on a and b, neighbours on the uplink, connections with distinct NAT ports.
    fn tables()(
        macs in proptest::collection::btree_map(1u64..1 << 40, (any::<bool>(), 0u64..200_000_000_000), 0..40),
        neigh in proptest::collection::btree_set(3u8..250, 0..5),
        conns in proptest::collection::btree_map(0u32..60_000, ((any::<bool>(), any::<bool>(), any::<bool>()), 0u64..10_000_000_000_000, 1u64..500_000_000_000_000), 0..200),
    ) -> (Vec<(u64, bool, u64)>, Vec<u8>, Vec<(u32, (bool, bool, bool), u64, u64)>) {
        (
            macs.into_iter().map(|(m, (b, age))| (m, b, age)).collect(),
            neigh.into_iter().collect(),
            conns.into_iter().map(|(i, (flags, age, rem))| (i, flags, age, rem)).collect(),
        )
    }
}

/// `snap` as vswitchd 1 wrote it: format version 1, connection records without the replied flag and the group.
fn encode_v1(snap: &Snapshot) -> Vec<u8> {
    fn v1_records<S: serde::Serializer>(conns: &[ConnRecord], s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::new();
        for c in conns {
            let mut rec = Vec::new();
            packed::put(&mut rec, c);
            out.extend_from_slice(&rec[..packed::V1_RECORD_LEN]);
        }
        s.serialize_bytes(&out)
    }
    #[derive(Serialize)]
    struct V1<'a> {
        config: &'a Config,
        fdb: &'a [FdbRecord],
        neighbours: &'a [NeighRecord],
        #[serde(serialize_with = "v1_records")]
        connections: &'a [ConnRecord],
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    let v1 = V1 { config: &snap.config, fdb: &snap.fdb, neighbours: &snap.neighbours, connections: &snap.connections };
    ciborium::into_writer(&v1, &mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random tables restored into a fresh switch and taken again are what they were (connections replied or
    /// not, in the lan network's limit group or none); the file encoding round-trips them byte for byte.
    #[test]
    fn random_tables_round_trip(t in tables()) {
        let cfg = config();
        let mut sw = Switch::new(&cfg);
        let (up, lan) = (up_rif(&sw), lan_rif(&sw));
        let (macs, neigh, conns) = t;
        let aging = cfg.networks[0].mac_aging_secs * 1_000_000_000;
        let snap = Snapshot {
            config: cfg.clone(),
            fdb: macs
                .iter()
                .map(|&(m, b, age)| FdbRecord {
                    network: "lan".into(),
                    mac: MacAddr::from_u64(m & !(1 << 40)),
                    port: if b { "b".into() } else { "a".into() },
                    // An age beyond the new clock (which starts at one second) is clamped to it.
                    age_ns: age.min(aging).min(NOW),
                })
                .collect(),
            neighbours: neigh
                .iter()
                .map(|&n| NeighRecord { rif: up, ip: Ipv4Addr::new(203, 0, 113, n), mac: MacAddr([2, 0, 0, 0, 1, n]) })
                .collect(),
            connections: conns
                .iter()
                .enumerate()
                .map(|(k, &(i, (tcp, replied, grouped), age, rem))| {
                    let proto = if tcp { Proto::Tcp } else { Proto::Udp };
                    let mut c = conn(i, proto, 2000 + k as u16, up, age.min(NOW), rem);
                    c.replied = replied;
                    if let Some(nat) = c.nat.as_mut() {
                        nat.group = grouped.then_some(lan);
                    }
                    c
                })
                .collect(),
        };
        prop_assert_eq!(decode(&encode(&snap)).unwrap(), snap.clone());
        let r = restore(&mut sw, &cfg, &snap, NOW);
        prop_assert!(r.router_matched);
        prop_assert_eq!((r.fdb, r.neighbours, r.connections), (snap.fdb.len(), snap.neighbours.len(), snap.connections.len()));
        sw.router().nat().check_invariants().map_err(TestCaseError::fail)?;
        prop_assert_eq!(sorted(take(&sw, &cfg, NOW)), sorted(snap.clone()));
        // A format version 1 file of the same tables reads with every connection replied and in no group.
        let v1 = decode(&encode_v1(&snap)).unwrap();
        let mut expected = snap;
        for c in &mut expected.connections {
            c.replied = true;
            if let Some(nat) = c.nat.as_mut() {
                nat.group = None;
            }
        }
        prop_assert_eq!(v1, expected);
    }

    /// No byte string after a valid header decodes into a panic; truncations of a valid file are refused.
    #[test]
    fn corrupt_files_are_refused_without_panicking(tail in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..400) {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&tail);
        let _ = decode(&bytes);
        let cfg = config();
        let sw = Switch::new(&cfg);
        let good = encode(&take(&sw, &cfg, NOW));
        if cut < good.len() {
            prop_assert!(decode(&good[..cut]).is_err());
        }
    }
}

proptest! {
    /// Any 54 bytes decode into a connection record or an error naming the bad field, never a panic; a record
    /// that decodes survives encoding and decoding again. Any 51 bytes, the same as a version 1 record.
    #[test]
    fn connection_records_decode_or_refuse(rec in proptest::collection::vec(any::<u8>(), packed::RECORD_LEN)) {
        if let Ok(c) = packed::get(&rec) {
            let mut again = Vec::new();
            packed::put(&mut again, &c);
            let (a, b) = (packed::get(&again).unwrap(), c);
            prop_assert_eq!(a, b);
        }
        prop_assert!(packed::get(&rec[1..]).is_err());
        let v1 = &rec[..packed::V1_RECORD_LEN];
        if let Ok(c) = packed::get_version(v1, 1) {
            prop_assert!(c.replied && c.nat.is_none_or(|n| n.group.is_none()));
            let mut again = Vec::new();
            packed::put(&mut again, &c);
            prop_assert_eq!(packed::get_version(&again[..packed::V1_RECORD_LEN], 1).unwrap(), c);
        }
        prop_assert!(packed::get_version(&rec, 1).is_err());
    }
}

#[test]
fn other_versions_and_other_files_are_refused_with_a_reason() {
    let cfg = config();
    let sw = Switch::new(&cfg);
    let mut bytes = encode(&take(&sw, &cfg, NOW));
    assert!(decode(&bytes).is_ok());
    bytes[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
    assert!(decode(&bytes).unwrap_err().contains(&format!("version {}", VERSION + 1)));
    bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert!(decode(&bytes).unwrap_err().contains("version 0"));
    // A version 2 body under a version 1 header: its records are not 51 bytes long: corrupt, refused.
    let cfg1 = config();
    let mut sw1 = Switch::new(&cfg1);
    let up = up_rif(&sw1);
    let snap = Snapshot {
        config: cfg1.clone(),
        fdb: vec![],
        neighbours: vec![],
        connections: vec![conn(1, Proto::Tcp, 5000, up, 1, 1)],
    };
    let mut v2 = encode(&snap);
    v2[8..12].copy_from_slice(&1u32.to_le_bytes());
    assert!(decode(&v2).unwrap_err().contains("corrupt snapshot (format version 1)"), "{:?}", decode(&v2));
    assert_eq!(restore(&mut sw1, &cfg1, &decode(&encode_v1(&snap)).unwrap(), NOW).connections, 1);
    assert!(decode(b"{\"json\": true}").unwrap_err().contains("bad magic"));

    let dir = tempfile::tempdir().unwrap();
    let path = path_in(dir.path());
    assert!(matches!(read(&path), Err(ReadError::Missing(_))));
    std::fs::write(&path, &bytes).unwrap();
    let e = read(&path).unwrap_err().to_string();
    assert!(e.contains("vswitchd.state") && e.contains("ignored"), "{e}");
    // A written file reads back, and the temporary file is gone.
    write(&path, &take(&sw, &cfg, NOW)).unwrap();
    assert!(read(&path).is_ok());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn entries_of_removed_objects_are_dropped_and_a_changed_router_keeps_what_it_does_not_concern() {
    let cfg = config();
    let mut sw = Switch::new(&cfg);
    let up = up_rif(&sw);
    let snap = Snapshot {
        config: cfg.clone(),
        fdb: vec![
            FdbRecord { network: "lan".into(), mac: MacAddr([2, 0, 0, 0, 0, 1]), port: "a".into(), age_ns: 1 },
            FdbRecord { network: "lan".into(), mac: MacAddr([2, 0, 0, 0, 0, 2]), port: "b".into(), age_ns: 1 },
            FdbRecord { network: "gone".into(), mac: MacAddr([2, 0, 0, 0, 0, 3]), port: "a".into(), age_ns: 1 },
        ],
        neighbours: vec![NeighRecord { rif: up, ip: Ipv4Addr::new(203, 0, 113, 1), mac: MacAddr([2, 0, 0, 0, 1, 1]) }],
        connections: vec![conn(1, Proto::Tcp, 5000, up, 1, 1_000_000_000)],
    };
    // Port b removed: its entry goes, a's stays; the router is the same: connections stay.
    let without_b =
        Config::parse(&CONFIG.replace("[[port]]\nname = \"b\"\nkind = \"mem\"\nnetwork = \"lan\"\n", ""), "t").unwrap();
    let mut sw2 = Switch::new(&without_b);
    let r = restore(&mut sw2, &without_b, &snap, NOW);
    assert_eq!((r.fdb, r.fdb_dropped, r.connections, r.neighbours), (1, 2, 1, 1), "{r:?}");
    // An unrelated route added: the router changed, but the connection (to 198.51.100.x) and the neighbour
    // are carried over, as an apply would.
    let routed =
        Config::parse(&format!("{CONFIG}\n[[route]]\nprefix = \"198.18.0.0/15\"\nvia = \"203.0.113.9\"\n"), "t")
            .unwrap();
    let mut sw3 = Switch::new(&routed);
    let r = restore(&mut sw3, &routed, &snap, NOW);
    assert_eq!((r.router_matched, r.connections, r.connections_dropped, r.neighbours), (false, 1, 0, 1), "{r:?}");
    assert_eq!(sw3.conntrack().len(), 1);
    assert_eq!(sw3.router().nat().snat_stats().in_use, 1);
    // A route that concerns it (its destination through another gateway): dropped, its port not held.
    let rerouted =
        Config::parse(&format!("{CONFIG}\n[[route]]\nprefix = \"198.51.100.0/24\"\nvia = \"203.0.113.9\"\n"), "t")
            .unwrap();
    let mut sw4 = Switch::new(&rerouted);
    let r = restore(&mut sw4, &rerouted, &snap, NOW);
    assert_eq!((r.router_matched, r.connections, r.connections_dropped, r.neighbours), (false, 0, 1, 1), "{r:?}");
    assert_eq!(sw4.conntrack().len(), 0);
    assert_eq!(sw4.router().nat().snat_stats().in_use, 0);
    // The same configuration: everything, and the NAT port is claimed again.
    let r = restore(&mut sw, &cfg, &snap, NOW);
    assert_eq!((r.fdb, r.connections), (2, 1));
    assert_eq!(sw.router().nat().snat_stats().in_use, 1, "the restored connection holds its port");
}

/// Not a test: what a snapshot of 100,000 masqueraded connections costs (taking it with the switch locked,
/// encoding, writing the file, reading and decoding it, restoring it).
/// `cargo test -p dataplane --release --lib snapshot::tests::measure -- --ignored --nocapture`
#[test]
#[ignore]
fn measure_snapshot_cost() {
    use std::time::Instant;
    let cfg = config();
    let mut sw = Switch::new(&cfg);
    let up = up_rif(&sw);
    let n = 100_000u32;
    // NAT ports repeat every 49,999 connections, each time towards another server (i % 200): all distinct.
    let conns: Vec<ConnRecord> =
        (0..n).map(|i| conn(i, Proto::Tcp, 1024 + (i % 49_999) as u16, up, 1, 3_600_000_000_000)).collect();
    let snap = Snapshot { config: cfg.clone(), fdb: Vec::new(), neighbours: Vec::new(), connections: conns };
    let t = Instant::now();
    let r = restore(&mut sw, &cfg, &snap, NOW);
    let restore_t = t.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let path = path_in(dir.path());
    for round in 0..3 {
        let t = Instant::now();
        let s = take(&sw, &cfg, NOW);
        let take_t = t.elapsed();
        let t = Instant::now();
        let bytes = encode(&s);
        let encode_t = t.elapsed();
        let t = Instant::now();
        let written = write(&path, &s).unwrap();
        let write_t = t.elapsed();
        let t = Instant::now();
        let back = read(&path).unwrap();
        let read_t = t.elapsed();
        assert_eq!(back.connections.len(), s.connections.len());
        let json = serde_json::to_vec(&s).unwrap().len();
        println!(
            "round {round}: {} connections ({} restored): take (switch locked) {:?}, encode {:?} ({} bytes, {:.0} B/conn; JSON would be {} bytes), write (encode + fsync + rename) {:?} ({written} bytes), read + decode {:?}, restore {:?}",
            s.connections.len(),
            r.connections,
            take_t,
            encode_t,
            bytes.len(),
            bytes.len() as f64 / s.connections.len() as f64,
            json,
            write_t,
            read_t,
            restore_t
        );
    }
}
