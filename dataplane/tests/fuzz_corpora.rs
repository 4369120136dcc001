//! Replays the committed corpora of the parser fuzz targets (`dataplane/fuzz/corpus/{control_request,
//! config_text, gso, pcap_reader}`) through the same bodies the fuzzer runs (`dataplane/fuzz/targets.rs`):
//! every seed and every committed finding must pass on every `cargo test`. This is a replay, not a fuzzing run
//! (see `dataplane/fuzz/README.md`). The `pipeline` corpus is replayed by `pipeline_props.rs`; the
//! `reconfigure` corpus here, through `dataplane/fuzz/reconfigure.rs`.
//!
//! The seeds are written by [`write_seeds`] (ignored; `VSWITCH_WRITE_FUZZ_CORPUS=1`), from the builders, so
//! they stay valid as the formats change; [`seeds_match_the_committed_corpus`] checks they were.

#[path = "../fuzz/targets.rs"]
mod targets;

#[path = "../fuzz/reconfigure.rs"]
mod reconfigure;

// Each of `reconfigure.rs` and `workers.rs` includes `harness.rs` as its own module (as the fuzz targets need).
#[allow(clippy::duplicate_mod)]
#[path = "../fuzz/workers.rs"]
mod workers;

use dataplane::port::gso::{GSO_TCPV4, GSO_UDP_L4};
use dataplane::wire::builder::{Ipv4Spec, TcpFlags, TcpSegment};
use dataplane::wire::virtio_net_hdr::{Packet as VnetPacket, Repr as VnetHdr, F_NEEDS_CSUM, HEADER_LEN};
use dataplane::wire::MacAddr;
use std::net::Ipv4Addr;
use std::path::PathBuf;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("control_request", targets::control_request),
    ("config_text", targets::config_text),
    ("gso", targets::gso),
    ("pcap_reader", targets::pcap_reader),
    ("reconfigure", reconfigure::reconfigure),
    ("workers", workers::workers),
];

/// `reconfigure` configurations (see `reconfigure::config_text`): `n1` masquerades out of routed port `p2` (a
/// default route via 203.0.115.1, TCP and UDP published, 8 NAT ports, a 16-entry table), `n0` has no gateway.
const MASQ_BEHIND_L2: [u8; 16] = [1, 0x00, 0x13, 0, 2, 0x01, 0x01, 0x03, 0, 0, 0, 1, 3, 7, 15, 0];
/// The same with `n0` given a gateway: `n1`'s router interface is renumbered (0 → 1), the routed port's (1 → 2).
const MASQ_BEHIND_PLAIN: [u8; 16] = [1, 0x01, 0x13, 0, 2, 0x01, 0x01, 0x03, 0, 0, 0, 1, 3, 7, 15, 0];
/// [`MASQ_BEHIND_PLAIN`] without `n1`'s connection limit (3 connections, which hold per worker).
const MASQ_BEHIND_PLAIN_NO_LIMIT: [u8; 16] = [1, 0x01, 0x03, 0, 2, 0x01, 0x01, 0x03, 0, 0, 0, 1, 3, 7, 15, 0];
/// One masquerade network `n0` with two ports and a host port `p2` (host = true), an uplink `p3`.
const MASQ_WITH_HOST_PORT: [u8; 16] = [0, 0x03, 0, 0, 3, 0x00, 0x00, 0x07, 0x03, 0, 0, 0, 0, 3, 15, 1];
/// The same with the ports renamed (`q0`…), smaller MTUs and the network isolated differently (internal).
const RENAMED_INTERNAL: [u8; 16] = [0, 0x05, 0, 0, 3, 0x18, 0x28, 0x0f, 0x3b, 0, 0, 0, 0, 0, 4, 2];

/// Operations of the `reconfigure` seeds: a container resolves its gateway, sends UDP out (the router resolves
/// the next hop: answered), gets the reply, opens TCP (answered SYN|ACK); then the other configuration; more
/// traffic; back; time passes.
const RECONFIGURE_OPS: [[u8; 4]; 16] = [
    [1, 0, 0, 4],
    [2, 0, 0, 0],
    [7, 0, 0, 0],
    [5, 0, 0, 0],
    [3, 0, 4, 0],
    [7, 0, 0, 0],
    [5, 0, 1, 0],
    [6, 0, 0, 0],
    [2, 1, 1, 0],
    [7, 0, 0, 0],
    [5, 0, 0, 0],
    [0, 40, 0, 0],
    [6, 0, 0, 0],
    [2, 0, 0, 0],
    [4, 1, 2, 8],
    [0, 200, 0, 0],
];

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

fn repo(path: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).expect(path)
}

fn vnet(gso_type: u8, gso_size: u16, frame: &[u8]) -> Vec<u8> {
    let h = VnetHdr { flags: F_NEEDS_CSUM, gso_type, gso_size, ..VnetHdr::default() };
    let mut out = vec![0u8; HEADER_LEN];
    h.emit(&mut VnetPacket::new_unchecked(&mut out[..]));
    out.extend_from_slice(frame);
    out
}

/// The seed inputs of each target, by file name.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let spec = Ipv4Spec::new(
        MacAddr([2, 0, 0, 0, 0, 1]),
        MacAddr([2, 0, 0, 0, 0, 2]),
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
    );
    let tcp = spec.tcp(TcpSegment::new(1000, 80, TcpFlags::ACK), 3000);
    let udp = spec.udp(1000, 53, 2500);
    vec![
        ("control_request", "seed-hello", br#"{"version":1,"id":1,"op":"hello"}"#.to_vec()),
        ("control_request", "seed-conntrack-ls", br#"{"version":1,"id":2,"op":"conntrack_ls","limit":10}"#.to_vec()),
        (
            "control_request",
            "seed-apply-toml",
            format!(
                "{{\"version\":1,\"id\":3,\"op\":\"apply\",\"dry_run\":true,\"toml\":{}}}",
                serde_json::to_string(&String::from_utf8(repo("dataplane/api/tests/config/full.toml")).unwrap())
                    .unwrap()
            )
            .into_bytes(),
        ),
        ("control_request", "seed-bad-version", br#"{"version":9,"id":4,"op":"hello"}"#.to_vec()),
        (
            "control_request",
            "seed-trace",
            br#"{"version":1,"id":5,"op":"trace","port":"c1","frame_hex":"ffff"}"#.to_vec(),
        ),
        ("config_text", "seed-full", repo("dataplane/api/tests/config/full.toml")),
        ("config_text", "seed-lab", repo("examples/lab/switch.toml")),
        ("config_text", "seed-isolation", repo("pcap-tests/cases/nat-isolation/config.toml")),
        ("config_text", "seed-invalid", repo("dataplane/api/tests/config/invalid.toml")),
        ("gso", "seed-tcpv4", vnet(GSO_TCPV4, 1448, &tcp)),
        ("gso", "seed-udp-l4", vnet(GSO_UDP_L4, 1000, &udp)),
        ("gso", "seed-too-small", vnet(GSO_TCPV4, 100, &tcp)),
        ("pcap_reader", "seed-nat-publish-up", repo("pcap-tests/cases/nat-publish/in/up.pcap")),
        ("pcap_reader", "seed-l2-vlan-expected", repo("pcap-tests/cases/l2-vlan-and-ipv6/expected/p2.pcap")),
        (
            "reconfigure",
            "seed-masquerade-renumbered",
            reconfigure::encode(MASQ_BEHIND_L2, MASQ_BEHIND_PLAIN, &RECONFIGURE_OPS),
        ),
        (
            "reconfigure",
            "seed-host-port-renamed",
            reconfigure::encode(MASQ_WITH_HOST_PORT, RENAMED_INTERNAL, &RECONFIGURE_OPS),
        ),
    ]
    .into_iter()
    .chain(workers_seeds().into_iter().map(|(name, data)| ("workers", name, data)))
    .collect()
}

/// `workers` header byte 0: `n` workers (2..=4), settled.
const fn settled(n: u8) -> u8 {
    n - 2
}

/// `workers` header byte 0: `n` workers, lagging delivery through queues of the workers' capacities (or of 4
/// entries, `small`).
const fn lagging(n: u8, small: bool) -> u8 {
    (n - 2) | 0x10 | if small { 0x20 } else { 0 }
}

/// `workers` operations on `ROUTED_CONFIG` (ports a 0, b 1: red, masquerading out of up 6; c 2, d 3: blue;
/// up publishes TCP 8080 to 10.1.0.2:80): a red host resolves its gateway, sends UDP, TCP (SYN, then ACK) and a
/// ping out through masquerade, each answered from outside (the next hop's ARP answered first); an outside host
/// opens the published port, answered by the red host. Frames are dealt to workers 0 and 1 in turn, and
/// replies often arrive on a worker that does not own their connection. `k` receives on worker `w`.
fn nat_ops(extra: impl Fn(usize) -> Vec<[u8; 4]>) -> Vec<[u8; 4]> {
    let k = |op: u8, w: u8| op | (w & 3) << 4;
    let base = [
        [k(1, 0), 0, 0, 1],   // ARP: 10.1.0.2 (port a) asks for its gateway
        [k(2, 1), 0, 0, 0],   // UDP 10.1.0.2 -> 198.51.100.7:53, masqueraded; the next hop is asked for
        [k(6, 0), 0, 0, 0],   // the next hop answers on up
        [k(5, 1), 0, 0, 0],   // the UDP reply
        [k(3, 0), 0, 0, 36],  // TCP SYN 10.1.0.2 -> 198.51.100.7:80
        [k(5, 1), 0, 1, 0],   // SYN|ACK
        [k(3, 1), 21, 0, 36], // ACK
        [k(4, 0), 0, 0, 0],   // ping 198.51.100.7
        [k(5, 1), 0, 0, 0],   // echo reply
        [k(3, 1), 6, 3, 97],  // SYN 198.51.100.9 -> 203.0.113.2:8080 (published to 10.1.0.2:80)
        [k(5, 0), 0, 1, 0],   // SYN|ACK from 10.1.0.2
        [0, 40, 0, 0],        // two seconds
        [k(2, 0), 0, 0, 0],   // UDP again (the connection is assured)
        [k(5, 0), 0, 0, 0],
    ];
    base.iter().enumerate().flat_map(|(i, op)| std::iter::once(*op).chain(extra(i))).collect()
}

/// The seeds of the `workers` target.
fn workers_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let plain = |ops: Vec<[u8; 4]>| ops.into_iter().map(|op| (op, &[][..])).collect::<Vec<_>>();
    let mut seeds = vec![
        ("seed-nat-2-settled", workers::encode(settled(2), 0, None, &plain(nat_ops(|_| vec![])))),
        ("seed-nat-3-settled", workers::encode(settled(3), 0, None, &plain(nat_ops(|_| vec![])))),
        ("seed-nat-4-settled", workers::encode(settled(4), 0, None, &plain(nat_ops(|_| vec![])))),
        // Lagging: the workers take their mail now and then (worker 1 its inbox, worker 0 its updates, one
        // handed burst), in a rotating order.
        (
            "seed-nat-2-lagging",
            workers::encode(
                lagging(2, false),
                0,
                None,
                &plain(nat_ops(|i| match i % 3 {
                    0 => vec![[10 | 1 << 4, 1, 0, 0]],
                    1 => vec![[11, 0, 0, 0], [12 | 1 << 4, 0, 0, 0]],
                    _ => vec![[14, i as u8, 0, 0]],
                })),
            ),
        ),
        // Four workers with queues of 4, mail taken only at the end (a poll applies the poller's updates):
        // twelve hosts announced from worker 0 overflow the update queue of worker 3, which never polls; then the
        // NAT scenario, its frames queued and polled in bursts.
        (
            "seed-nat-4-small-queues",
            workers::encode(
                lagging(4, true),
                0,
                None,
                &plain(
                    (0..12u8)
                        .map(|i| [1, [0, 2, 4][usize::from(i / 4)], i % 4, 1])
                        .chain(nat_ops(|i| if i % 4 == 3 { vec![[9, 0, 0, 0]] } else { vec![] }))
                        .collect(),
                ),
            ),
        ),
        // A random configuration (`reconfigure`'s masquerade network behind a plain one) with its traffic.
        (
            "seed-random-config-2-settled",
            workers::encode(
                settled(2),
                2,
                Some(MASQ_BEHIND_PLAIN_NO_LIMIT),
                &plain(
                    RECONFIGURE_OPS
                        .iter()
                        .filter(|op| op[0] % 8 != 6)
                        .map(|&[op, a, b, c]| {
                            let kind = match op % 8 {
                                7 => 6,
                                k => k,
                            };
                            [kind | (op & 1) << 4, a, b, c]
                        })
                        .collect(),
                ),
            ),
        ),
    ];
    // The `pipeline` seeds (raw frames on ROUTED_CONFIG), dealt to 2 workers in turn.
    let pipeline = corpus("pipeline");
    let mut names: Vec<String> = std::fs::read_dir(&pipeline)
        .expect("pipeline corpus")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("seed-"))
        .collect();
    names.sort();
    for name in names {
        let data = std::fs::read(pipeline.join(&name)).unwrap();
        let records = workers::harness::records(&data);
        let mut ops: Vec<([u8; 4], &[u8])> = Vec::new();
        for (i, (port, dt, frame)) in records.iter().enumerate() {
            ops.push(([0, *dt, 0, 0], &[]));
            ops.push(workers::raw(i as u8 % 2, *port, false, frame));
        }
        let seed: &'static str = Box::leak(format!("seed-pipeline-{}", &name["seed-".len()..]).into_boxed_str());
        seeds.push((seed, workers::encode(settled(2), 0, None, &ops)));
    }
    seeds
}

/// Writes the seeds (only with `VSWITCH_WRITE_FUZZ_CORPUS=1`).
#[test]
#[ignore = "writes files; run with VSWITCH_WRITE_FUZZ_CORPUS=1 to regenerate the seed corpora"]
fn write_seeds() {
    if std::env::var("VSWITCH_WRITE_FUZZ_CORPUS").as_deref() != Ok("1") {
        return;
    }
    for (target, name, data) in seeds() {
        std::fs::create_dir_all(corpus(target)).unwrap();
        std::fs::write(corpus(target).join(name), data).unwrap();
    }
}

#[test]
fn seeds_match_the_committed_corpus() {
    for (target, name, data) in seeds() {
        let committed = std::fs::read(corpus(target).join(name))
            .unwrap_or_else(|e| panic!("{target}/{name}: {e}; regenerate with VSWITCH_WRITE_FUZZ_CORPUS=1"));
        assert_eq!(
            committed, data,
            "{target}/{name} differs from seeds(); regenerate with VSWITCH_WRITE_FUZZ_CORPUS=1"
        );
    }
}

/// Every committed input of every parser target passes (seeds and findings alike).
#[test]
fn corpora_replay_cleanly() {
    for (target, run) in TARGETS {
        let mut n = 0;
        for entry in std::fs::read_dir(corpus(target)).unwrap_or_else(|e| panic!("{target}: {e}")) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{} fails", path.display());
            n += 1;
        }
        assert!(n > 0, "{target}: empty corpus");
    }
}

/// The seeds reach what they are for: the GSO seed is planned and cut, the small one refused.
#[test]
fn seeds_do_what_they_are_named_for() {
    use dataplane::port::gso::{GsoError, SuperFrame, MAX_HEADERS};
    let all = seeds();
    let plan = |name: &str| {
        let data = &all.iter().find(|(_, n, _)| *n == name).unwrap().2;
        let (h, f) = data.split_first_chunk::<HEADER_LEN>().unwrap();
        SuperFrame::plan(&f[..f.len().min(MAX_HEADERS)], f.len(), &VnetHdr::parse(h), 1920)
    };
    assert_eq!(plan("seed-tcpv4").unwrap().segments(), 3);
    assert_eq!(plan("seed-udp-l4").unwrap().segments(), 3);
    assert_eq!(plan("seed-too-small"), Err(GsoError::MssTooSmall(100)));
    let pcap = &all.iter().find(|(_, n, _)| *n == "seed-nat-publish-up").unwrap().2;
    let c = dataplane::port::pcap::read_capture_from(&pcap[..], std::path::Path::new("x")).unwrap();
    assert!(!c.frames.is_empty());
}

/// The `reconfigure` seeds' configurations are valid (an invalid one would end the input at once) and differ
/// as their names say.
#[test]
fn reconfigure_seeds_are_valid_configurations() {
    for b in [MASQ_BEHIND_L2, MASQ_BEHIND_PLAIN, MASQ_WITH_HOST_PORT, RENAMED_INTERNAL] {
        let text = reconfigure::config_text(&b);
        if let Err(e) = dataplane::config::Config::parse(&text, "seed") {
            panic!("{e}\n{text}");
        }
    }
    let topo = |b| dataplane::topology::Topology::from_config(&reconfigure::config(&b).unwrap());
    let rif = |t: &dataplane::topology::Topology, name: &str| t.rifs.iter().position(|r| r.name == name);
    assert_eq!(rif(&topo(MASQ_BEHIND_L2), "network:n1"), Some(0));
    assert_eq!(rif(&topo(MASQ_BEHIND_PLAIN), "network:n1"), Some(1));
    assert!(topo(MASQ_WITH_HOST_PORT).rifs.iter().any(|r| r.host));
}

/// The `workers` seeds pass every check; the settled ones give one switch's outcome (compared), and between
/// them they hand frames to their connection's owner, create connections through masquerade and the published
/// port, and (queues of 4) lose updates or drop handed frames.
#[test]
fn workers_seeds_do_what_they_are_named_for() {
    let (mut handed, mut lost) = (0, 0);
    for (name, data) in workers_seeds() {
        let (w, compared) = workers::run(&data).unwrap_or_else(|| panic!("{name}: no valid configuration"));
        let settled = name.contains("settled") || name.starts_with("seed-pipeline-");
        eprintln!("{name}: compared {compared}, handed {}, lost {} + {}", w.handed, w.updates_lost, w.handoffs_lost);
        assert_eq!(compared, settled, "{name}: compared with one switch");
        if name.starts_with("seed-nat-") {
            let snat: u64 = w.switches().iter().map(|s| s.nat_stats().snat_created).sum();
            let dnat: u64 = w.switches().iter().map(|s| s.nat_stats().dnat_created).sum();
            assert!(snat >= 3 && dnat == 1, "{name}: {snat} masqueraded, {dnat} published");
            assert!(w.handed > 0, "{name}: nothing handed over");
        }
        handed += w.handed;
        if name.contains("small-queues") {
            lost += w.updates_lost + w.handoffs_lost;
        }
    }
    assert!(handed > 0 && lost > 0, "handed {handed}, lost {lost}");
}

/// Replays the `workers` input in the file `VSWITCH_FUZZ_INPUT` (a crash to look at, with the debug build's
/// overflow checks and backtraces), or every input in it if it is a directory (a fuzzing run's corpus, with a
/// summary: how many were settled and compared with one switch): `VSWITCH_FUZZ_INPUT=path cargo test -p
/// dataplane --test fuzz_corpora -- --ignored replay_a_workers_input --nocapture`.
#[test]
#[ignore = "replays the file or directory VSWITCH_FUZZ_INPUT names"]
fn replay_a_workers_input() {
    let Ok(path) = std::env::var("VSWITCH_FUZZ_INPUT") else { return };
    let path = PathBuf::from(path);
    let files: Vec<PathBuf> =
        if path.is_dir() { std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()).collect() } else { vec![path] };
    let (mut valid, mut settled, mut compared, mut handed, mut lost) = (0, 0, 0, 0, 0);
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let Some((w, c)) = workers::run(&data) else { continue };
        valid += 1;
        settled += u32::from(data[0] & 0x10 == 0);
        compared += u32::from(c);
        handed += u32::from(w.handed > 0);
        lost += u32::from(w.updates_lost + w.handoffs_lost > 0);
    }
    eprintln!(
        "{} inputs: {valid} with a valid configuration, {settled} settled, {compared} compared with one switch, \
         {handed} handed frames over, {lost} lost updates or frames to full queues",
        files.len()
    );
}
