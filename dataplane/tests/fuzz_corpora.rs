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

use dataplane::port::gso::{GSO_TCPV4, GSO_UDP_L4};
use dataplane::wire::builder::{Ipv4Spec, TcpFlags, TcpSegment};
use dataplane::wire::virtio_net_hdr::{Packet as VnetPacket, Repr as VnetHdr, F_NEEDS_CSUM, HEADER_LEN};
use dataplane::wire::MacAddr;
use std::net::Ipv4Addr;
use std::path::PathBuf;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("control_request", targets::control_request),
    ("config_text", targets::config_text),
    ("gso", targets::gso),
    ("pcap_reader", targets::pcap_reader),
    ("reconfigure", reconfigure::reconfigure),
];

/// `reconfigure` configurations (see `reconfigure::config_text`): `n1` masquerades out of routed port `p2` (a
/// default route via 203.0.115.1, TCP and UDP published, 8 NAT ports, a 16-entry table), `n0` has no gateway.
const MASQ_BEHIND_L2: [u8; 16] = [1, 0x00, 0x13, 0, 2, 0x01, 0x01, 0x03, 0, 0, 0, 1, 3, 7, 15, 0];
/// The same with `n0` given a gateway: `n1`'s router interface is renumbered (0 → 1), the routed port's (1 → 2).
const MASQ_BEHIND_PLAIN: [u8; 16] = [1, 0x01, 0x13, 0, 2, 0x01, 0x01, 0x03, 0, 0, 0, 1, 3, 7, 15, 0];
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
