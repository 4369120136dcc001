//! The agent's membership session (`control::cluster`) against a real etcd (Debian's 3.4, started by the test
//! on 127.0.0.1 with data on tmpfs; no root needed): registration in one transaction under a lease, list then
//! watch, VNI allocation, lease loss, revocation on stop, outages without losing what was known, and the death
//! of the leader of a three-member cluster.

mod common;

use common::etcd::{etcd_missing, Etcd};
use control::cluster::schema::{EndpointRecord, HostRecord, Keys};
use control::cluster::{Membership, Registration, Settings, Snapshot};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use vswitch_api::MacAddr;

const TTL: i64 = 2;

macro_rules! need_etcd {
    () => {
        if let Some(why) = etcd_missing() {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

fn settings(etcd: &Etcd, host: &str) -> Settings {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    Settings {
        cluster: "test".into(),
        host: host.into(),
        endpoints: etcd.endpoints(),
        lease_ttl_secs: TTL,
        request_timeout: Duration::from_secs(1),
    }
}

fn registration(last: u8, nets: &[(&str, Option<u32>)], eps: &[(&str, u8)]) -> Registration {
    Registration {
        host: HostRecord {
            vtep: Ipv4Addr::new(198, 51, 100, last),
            udp_port: 4789,
            mtu: 1500,
            networks: nets.iter().map(|(n, _)| n.to_string()).collect(),
        },
        endpoints: eps
            .iter()
            .map(|(n, i)| EndpointRecord {
                network: n.to_string(),
                mac: MacAddr([2, 0, 0, 0, last, *i]),
                ip: Some(Ipv4Addr::new(10, 1, last, *i)),
            })
            .collect(),
        networks: nets.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
    }
}

fn sees(s: &Snapshot, host: &str) -> bool {
    s.view.hosts.contains_key(host)
}

fn endpoints_of(s: &Snapshot, host: &str) -> usize {
    s.view.endpoints.keys().filter(|(h, _, _)| h == host).count()
}

#[test]
fn two_hosts_see_each_other_and_share_a_vni() {
    need_etcd!();
    let etcd = Etcd::start(1);
    let mut a = Membership::start(settings(&etcd, "a"), registration(11, &[("red", None)], &[("red", 2)])).unwrap();
    let mut b =
        Membership::start(settings(&etcd, "b"), registration(12, &[("red", None)], &[("red", 3), ("red", 4)])).unwrap();
    let sa = a.wait_for(Duration::from_secs(10), |s| sees(s, "b") && endpoints_of(s, "b") == 2);
    assert!(sees(&sa, "b") && endpoints_of(&sa, "b") == 2, "a sees b and its endpoints: {sa:?}");
    let sb = b.wait_for(Duration::from_secs(10), |s| sees(s, "a") && endpoints_of(s, "a") == 1);
    assert!(sees(&sb, "a"));
    assert_eq!(sa.vnis.get("red"), Some(&4096), "the first allocated VNI");
    assert_eq!(sb.vnis.get("red"), Some(&4096), "one network, one VNI, whoever allocated it");
    let state = sa.view.overlay_state("a");
    assert_eq!(state.members.len(), 1);
    assert_eq!(state.members[0].vtep, Ipv4Addr::new(198, 51, 100, 12));
    assert_eq!(state.endpoints.len(), 2);
    // The keys are where the schema says, with their lease.
    let keys = Keys::new("test");
    let out = etcd.ctl(&["get", "--prefix", "--keys-only", keys.prefix()]).unwrap();
    for k in [keys.host("a"), keys.host("b"), keys.vni("red"), keys.vni_owner(4096)] {
        assert!(out.lines().any(|l| l == k), "{k} in\n{out}");
    }
    a.stop(Duration::from_secs(2));
    b.stop(Duration::from_secs(2));
}

#[test]
fn a_second_network_gets_the_next_vni_and_a_conflicting_one_is_refused() {
    need_etcd!();
    let etcd = Etcd::start(1);
    let mut a =
        Membership::start(settings(&etcd, "a"), registration(11, &[("red", None), ("blue", Some(5000))], &[])).unwrap();
    let s = a.wait_for(Duration::from_secs(10), |s| s.vnis.len() == 2);
    assert_eq!((s.vnis.get("red"), s.vnis.get("blue")), (Some(&4096), Some(&5000)));
    // b says red is 7000: the cluster's 4096 wins and b is told.
    let mut b =
        Membership::start(settings(&etcd, "b"), registration(12, &[("red", Some(7000)), ("green", Some(5000))], &[]))
            .unwrap();
    let s = b.wait_for(Duration::from_secs(10), |s| s.registered && s.vni_errors.len() == 2);
    assert_eq!(s.vni_errors.len(), 2, "{s:?}");
    assert!(s.vni_errors.iter().any(|e| e.starts_with("network green:") && e.contains("belongs to network \"blue\"")));
    assert!(s.vni_errors.iter().any(|e| e.starts_with("network red:") && e.contains("vni 4096")), "{s:?}");
    assert!(s.vnis.is_empty(), "neither network gets a VNI");
    a.stop(Duration::from_secs(2));
    b.stop(Duration::from_secs(2));
}

#[test]
fn stop_revokes_the_lease_so_the_others_drop_the_host_at_once() {
    need_etcd!();
    let etcd = Etcd::start(1);
    let mut a = Membership::start(settings(&etcd, "a"), registration(11, &[("red", None)], &[])).unwrap();
    let b = Membership::start(settings(&etcd, "b"), registration(12, &[("red", None)], &[("red", 3)])).unwrap();
    assert!(sees(&a.wait_for(Duration::from_secs(10), |s| sees(s, "b") && endpoints_of(s, "b") == 1), "b"));
    let t = Instant::now();
    b.stop(Duration::from_secs(2));
    let s = a.wait_for(Duration::from_secs(5), |s| !sees(s, "b"));
    assert!(!sees(&s, "b") && endpoints_of(&s, "b") == 0, "b's registration and endpoints went together");
    assert!(t.elapsed() < Duration::from_secs(1), "dropped in {:?}, not after the TTL", t.elapsed());
    a.stop(Duration::from_secs(2));
}

#[test]
fn a_host_that_stops_renewing_vanishes_after_its_ttl() {
    need_etcd!();
    let etcd = Etcd::start(1);
    let mut a = Membership::start(settings(&etcd, "a"), registration(11, &[("red", None)], &[])).unwrap();
    // A host registered by hand (as an operator would add a kernel VTEP), on a lease nobody renews.
    let keys = Keys::new("test");
    let lease = etcd.ctl(&["lease", "grant", "2"]).unwrap();
    let id = lease.split_whitespace().nth(1).unwrap().to_string();
    let rec = r#"{"vtep":"198.51.100.99","udp_port":4789,"mtu":1500,"networks":["red"]}"#;
    etcd.ctl(&["put", "--lease", &id, &keys.host("k"), rec]).unwrap();
    assert!(sees(&a.wait_for(Duration::from_secs(5), |s| sees(s, "k")), "k"));
    let t = Instant::now();
    let s = a.wait_for(Duration::from_secs(TTL as u64 + 3), |s| !sees(s, "k"));
    assert!(!sees(&s, "k"), "gone after the TTL");
    assert!(t.elapsed() <= Duration::from_secs(TTL as u64 + 2), "{:?}", t.elapsed());
    a.stop(Duration::from_secs(2));
}

#[test]
fn a_lost_lease_is_replaced_and_the_host_registered_again() {
    need_etcd!();
    let etcd = Etcd::start(1);
    let mut a = Membership::start(settings(&etcd, "a"), registration(11, &[("red", None)], &[("red", 2)])).unwrap();
    let s = a.wait_for(Duration::from_secs(10), |s| s.registered && sees(s, "a"));
    let old = s.lease.unwrap();
    // Someone revokes our lease: the registration disappears, and comes back under a new lease.
    etcd.ctl(&["lease", "revoke", &format!("{old:x}")]).unwrap();
    let s = a.wait_for(Duration::from_secs(5), |s| s.lease.is_some_and(|l| l != old) && sees(s, "a"));
    assert!(s.lease.is_some_and(|l| l != old), "a new lease: {s:?}");
    assert!(sees(&s, "a") && endpoints_of(&s, "a") == 1, "registered again with its endpoint");
    a.stop(Duration::from_secs(2));
}

#[test]
fn an_outage_keeps_what_was_known_and_the_session_resumes() {
    need_etcd!();
    let mut etcd = Etcd::start(1);
    let mut a = Membership::start(settings(&etcd, "a"), registration(11, &[("red", None)], &[])).unwrap();
    let _b = Membership::start(settings(&etcd, "b"), registration(12, &[("red", None)], &[("red", 3)])).unwrap();
    assert!(sees(&a.wait_for(Duration::from_secs(10), |s| sees(s, "b")), "b"));
    etcd.kill(0);
    let s = a.wait_for(Duration::from_secs(5), |s| !s.connected);
    assert!(!s.connected, "the outage is noticed");
    assert!(sees(&s, "b") && endpoints_of(&s, "b") == 1, "and nothing known is dropped");
    std::thread::sleep(Duration::from_millis(500));
    etcd.restart(0);
    let s = a.wait_for(Duration::from_secs(10), |s| s.connected);
    assert!(s.connected && sees(&s, "b"), "{s:?}");
    a.stop(Duration::from_secs(2));
}

#[test]
fn the_leader_of_three_dies_and_a_host_still_joins() {
    need_etcd!();
    let mut etcd = Etcd::start(3);
    let mut a = Membership::start(settings(&etcd, "a"), registration(11, &[("red", None)], &[])).unwrap();
    assert!(a.wait_for(Duration::from_secs(10), |s| s.registered).registered);
    let leader = etcd.leader().expect("a leader");
    etcd.kill(leader);
    let mut b = Membership::start(settings(&etcd, "b"), registration(12, &[("red", None)], &[("red", 3)])).unwrap();
    let t = Instant::now();
    let s = a.wait_for(Duration::from_secs(10), |s| sees(s, "b") && endpoints_of(s, "b") == 1);
    assert!(sees(&s, "b"), "a sees b join on two members: {s:?}");
    eprintln!("b seen after {:?}", t.elapsed());
    assert!(b.wait_for(Duration::from_secs(5), |s| sees(s, "a")).view.hosts.contains_key("a"));
    // a kept its registration through the leader change.
    std::thread::sleep(Duration::from_secs(TTL as u64 + 1));
    assert!(sees(&b.latest(), "a"), "a's lease survived the leader change");
    a.stop(Duration::from_secs(2));
    b.stop(Duration::from_secs(2));
}
