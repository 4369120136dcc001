//! The control socket's `apply` and reads, in process, without privileges: a running switch on memory ports
//! (real workers), driven through the protocol ([`Daemon::handle_line`] with request lines as a client writes
//! them, and a real Unix socket for the server tests). Checks what survives which apply (MAC entries, the
//! router's neighbours and connections), that unchanged ports are not reopened, that a failing apply changes
//! nothing, and that bad request lines get clear errors while the connection keeps serving.

use dataplane::config::{Config, PortConfig};
use dataplane::control::daemon::Daemon;
use dataplane::control::proto::*;
use dataplane::control::server::{BindError, ControlSocket, Limits};
use dataplane::live::{RunOptions, Runtime, StartError};
use dataplane::port::any::AnyPort;
use dataplane::port::mem::MemPort;
use dataplane::topology::derived_mac;
use dataplane::wire::builder::{arp_reply, eth, pattern, Ipv4Spec};
use dataplane::wire::MacAddr;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BASE: &str = r#"
[[network]]
name = "lan"
subnet = "10.1.0.0/24"
gateway = "10.1.0.1"
masquerade = true

[[network]]
name = "dmz"

[[port]]
name = "a"
kind = "mem"
network = "lan"

[[port]]
name = "b"
kind = "mem"
network = "lan"

[[port]]
name = "x"
kind = "mem"
network = "dmz"

[[port]]
name = "up"
kind = "mem"
address = "203.0.113.2/24"

[[route]]
prefix = "0.0.0.0/0"
via = "203.0.113.1"
"#;

fn mem_port(name: &str) -> AnyPort {
    AnyPort::Mem(MemPort::new(name.to_string()))
}

/// A daemon running `cfg` (generation 1) on memory ports, with an opener that records what it opens and fails
/// for ports called `bad*` and ports with MTU 1234, and for `flaky*` ports the first time (and takes 600 ms for
/// ports called `slow*`, and panics for ports called `panic*`, and for `wobbly*` ports the second time, having
/// failed the first).
fn daemon(cfg: &str) -> (Arc<Daemon>, Arc<Mutex<Vec<String>>>) {
    let cfg = Config::parse(cfg, "base.toml").unwrap();
    let ports = cfg.ports.iter().map(|p| vec![mem_port(&p.name)]).collect();
    let opts = RunOptions { workers: 1, poll_idle: 50_000, pool_buffers: 1024 };
    let running = Runtime::new(&cfg, ports, opts).unwrap().start().unwrap();
    let opened = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&opened);
    let open = move |p: &PortConfig, n: usize| -> Result<Vec<AnyPort>, StartError> {
        log.lock().unwrap().push(p.name.clone());
        if p.name.starts_with("panic") {
            panic!("the opener of {} panicked (test)", p.name);
        }
        if p.name.starts_with("slow") {
            std::thread::sleep(Duration::from_millis(600));
        }
        // `flaky*` ports fail at their first open and open at the next; `wobbly*` ports fail at their first,
        // panic at their second and open at their third.
        let attempt = log.lock().unwrap().iter().filter(|n| **n == p.name).count();
        if p.name.starts_with("wobbly") && attempt == 2 {
            panic!("the opener of {} panicked at its second attempt (test)", p.name);
        }
        let first = (p.name.starts_with("flaky") || p.name.starts_with("wobbly")) && attempt == 1;
        if p.name.starts_with("bad") || p.mtu == 1234 || first {
            return Err(StartError::Queues { port: p.name.clone(), message: "no such device (test)".into() });
        }
        Ok((0..n).map(|_| mem_port(&p.name)).collect())
    };
    (Arc::new(Daemon::new(running, 1, Some("base.toml".into()), None, Box::new(open))), opened)
}

static IDS: AtomicU64 = AtomicU64::new(1);

/// Sends `op` (with its arguments) as a client would and returns the response.
fn call(d: &Daemon, op: serde_json::Value) -> Response {
    let mut req = op;
    req["version"] = json!(PROTOCOL_VERSION);
    req["id"] = json!(IDS.fetch_add(1, Ordering::Relaxed));
    let r = d.handle_line(req.to_string().as_bytes());
    assert_eq!(r.id, req["id"].as_u64());
    r
}

fn ok<T: DeserializeOwned>(d: &Daemon, op: serde_json::Value) -> T {
    let r = call(d, op.clone());
    r.into_result().unwrap_or_else(|e| panic!("{op}: {e:?}"))
}

fn fail(d: &Daemon, op: serde_json::Value) -> ErrorBody {
    let r = call(d, op.clone());
    assert!(!r.ok, "{op} succeeded: {r:?}");
    r.error.unwrap()
}

fn apply(d: &Daemon, toml: &str) -> ApplyResult {
    ok(d, json!({"op": "apply", "toml": toml, "origin": "test.toml"}))
}

fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}

fn inject(d: &Daemon, port: &str, frame: &[u8]) {
    d.with_running(|r| {
        let id = r.config().port_index(port).unwrap_or_else(|| panic!("no port {port}")) as u16;
        r.with_queue(id, 0, |p| p.as_mem_mut().expect("memory port").inject(frame));
    })
    .expect("running");
}

fn sent(d: &Daemon, port: &str) -> Vec<Vec<u8>> {
    d.with_running(|r| {
        let id = r.config().port_index(port).unwrap() as u16;
        r.with_queue(id, 0, |p| p.as_mem_mut().expect("memory port").take_sent())
    })
    .expect("running")
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn fdb(d: &Daemon) -> Vec<(String, MacAddr, String)> {
    let rows: Vec<FdbRow> = ok(d, json!({"op": "fdb_show"}));
    rows.into_iter().map(|r| (r.network, r.mac, r.port)).collect()
}

fn entry(net: &str, m: u8, port: &str) -> (String, MacAddr, String) {
    (net.to_string(), mac(m), port.to_string())
}

fn connections(d: &Daemon) -> usize {
    ok::<ConntrackList>(d, json!({"op": "conntrack_ls"})).total
}

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    eth(dst, src, 0x88b5, &pattern(46))
}

/// MACs learned on a, b (lan) and x (dmz); one masqueraded UDP connection from a through `up` with its next hop
/// resolved.
fn learn_and_connect(d: &Daemon) {
    inject(d, "a", &frame(mac(2), mac(1)));
    inject(d, "b", &frame(mac(1), mac(2)));
    inject(d, "x", &frame(MacAddr::BROADCAST, mac(9)));
    eventually("three MAC entries", || fdb(d).len() == 3);
    let gw = derived_mac("network:lan");
    let up = derived_mac("port:up");
    let pkt = Ipv4Spec::new(mac(1), gw, Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(198, 51, 100, 7)).udp(4000, 53, 20);
    inject(d, "a", &pkt);
    eventually("one connection", || connections(d) == 1);
    let next_hop = Ipv4Addr::new(203, 0, 113, 1);
    inject(d, "up", &arp_reply(MacAddr([2, 0, 0, 0, 9, 9]), next_hop, up, Ipv4Addr::new(203, 0, 113, 2)));
    eventually("the translated packet leaves on up", || {
        sent(d, "up").iter().any(|f| f.len() > 42 && f[12..14] == [0x08, 0x00])
    });
    let neigh: Vec<NeighRow> = ok(d, json!({"op": "neigh_show"}));
    assert!(neigh.iter().any(|n| n.ip == next_hop && n.mac.is_some()), "{neigh:?}");
}

/// A vswitchd started empty (agent-managed) restores the snapshot of the one before it at the first apply:
/// MAC entries, the resolved neighbour and the connection with its NAT port, matched by name.
#[test]
fn a_snapshot_is_restored_at_the_first_apply_of_an_empty_switch() {
    let (before, _) = daemon(BASE);
    learn_and_connect(&before);
    let snap = before.snapshot().expect("running");
    assert_eq!((snap.fdb.len(), snap.connections.len(), snap.neighbours.len()), (3, 1, 1), "{snap:?}");
    stop(before);

    let (d, _) = daemon("");
    d.restore_after_first_apply(snap);
    assert_eq!(connections(&d), 0);
    apply(&d, BASE);
    assert_eq!(connections(&d), 1, "the connection is back");
    assert_eq!(fdb(&d).len(), 3, "{:?}", fdb(&d));
    let neigh: Vec<NeighRow> = ok(&d, json!({"op": "neigh_show"}));
    assert!(neigh.iter().any(|n| n.ip == Ipv4Addr::new(203, 0, 113, 1) && n.mac.is_some()), "{neigh:?}");
    let stats: StatsResult = ok(&d, json!({"op": "stats"}));
    assert_eq!(stats.report["snat"]["in_use"], 1, "its NAT port is held again: {}", stats.report["snat"]);
    // Only once: a later apply does not restore it again.
    apply(&d, &(BASE.to_string() + "\n[[port]]\nname = \"z\"\nkind = \"mem\"\nnetwork = \"lan\"\n"));
    assert_eq!(connections(&d), 1);
    stop(d);
}

#[test]
fn apply_keeps_unchanged_ports_open_and_learned_state_of_what_it_does_not_touch() {
    let (d, opened) = daemon(BASE);
    learn_and_connect(&d);
    let before_fdb = fdb(&d);
    assert_eq!(before_fdb, vec![entry("lan", 1, "a"), entry("lan", 2, "b"), entry("dmz", 9, "x")]);

    // 1. A new port in front of the others (every port id shifts), one in dmz, and a new network with a port.
    let added = BASE.replace(
        "[[port]]\nname = \"a\"",
        "[[port]]\nname = \"c\"\nkind = \"mem\"\nnetwork = \"lan\"\n\n[[port]]\nname = \"a\"",
    ) + "\n[[network]]\nname = \"new\"\n\n[[port]]\nname = \"y\"\nkind = \"mem\"\nnetwork = \"dmz\"\n\n[[port]]\nname = \"n\"\nkind = \"mem\"\nnetwork = \"new\"\n";
    let r = apply(&d, &added);
    assert_eq!((r.generation, r.changed), (2, true));
    let s = &r.summary;
    assert_eq!(s.ports_added, ["c", "y", "n"]);
    assert_eq!(s.ports_unchanged, ["a", "b", "x", "up"]);
    assert!(s.ports_removed.is_empty() && s.ports_reopened.is_empty() && s.ports_reattached.is_empty(), "{s:?}");
    assert_eq!(s.networks_added, ["new"]);
    assert_eq!((s.fdb_entries_kept, s.fdb_entries_flushed), (3, 0));
    assert_eq!((s.router_state, s.connections_flushed), (RouterState::Kept, 0));
    assert_eq!(*opened.lock().unwrap(), ["c", "y", "n"], "only the new ports were opened");
    assert_eq!(fdb(&d), before_fdb, "MAC entries survive, on their ports (now renumbered)");
    assert_eq!(connections(&d), 1, "the NAT connection survives");
    // The carried entries are used: b → mac(1) goes to a alone, not flooded to the new port c.
    sent(&d, "a");
    sent(&d, "c");
    inject(&d, "b", &frame(mac(1), mac(2)));
    eventually("forwarded to a", || !sent(&d, "a").is_empty());
    assert!(sent(&d, "c").is_empty(), "known unicast is not flooded");
    // The kept connection still translates: a second packet of it leaves on up without a new connection.
    let gw = derived_mac("network:lan");
    let pkt = Ipv4Spec::new(mac(1), gw, Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(198, 51, 100, 7)).udp(4000, 53, 20);
    sent(&d, "up");
    inject(&d, "a", &pkt);
    eventually("second packet out", || !sent(&d, "up").is_empty());
    let stats: StatsResult = ok(&d, json!({"op": "stats"}));
    assert_eq!(stats.report["nat"]["snat_created"], 1, "{}", stats.report["nat"]);

    // 2. Remove b, move x from dmz to lan: their MAC entries go, a's stays; x is not reopened.
    let moved = added
        .replace("[[port]]\nname = \"b\"\nkind = \"mem\"\nnetwork = \"lan\"\n", "")
        .replace("name = \"x\"\nkind = \"mem\"\nnetwork = \"dmz\"", "name = \"x\"\nkind = \"mem\"\nnetwork = \"lan\"");
    let r = apply(&d, &moved);
    assert_eq!(r.generation, 3);
    let s = &r.summary;
    assert_eq!(
        (s.ports_removed.as_slice(), s.ports_reattached.as_slice()),
        (&["b".to_string()][..], &["x".to_string()][..])
    );
    assert_eq!((s.fdb_entries_kept, s.fdb_entries_flushed), (1, 2));
    assert_eq!(s.router_state, RouterState::Kept);
    assert_eq!(*opened.lock().unwrap(), ["c", "y", "n"], "nothing reopened");
    assert_eq!(fdb(&d), vec![entry("lan", 1, "a")]);
    assert_eq!(connections(&d), 1);
    let ports: Vec<PortRow> = ok(&d, json!({"op": "port_ls"}));
    let x = ports.iter().find(|p| p.name == "x").unwrap();
    assert_eq!((x.network.as_deref(), x.mode), (Some("lan"), PortMode::Access));
    assert_eq!(x.pipeline.rx_packets, 1, "x keeps its counters across the apply");

    // 3. An unrelated route is added: the router is rebuilt, but the connection (10.1.0.5 → 198.51.100.7, routed
    // as before) and the neighbour are carried over: nothing flushed.
    let routed = moved.clone() + "\n[[route]]\nprefix = \"10.9.0.0/16\"\nvia = \"203.0.113.1\"\n";
    let r = apply(&d, &routed);
    assert_eq!((r.summary.router_state, r.summary.connections_flushed), (RouterState::Kept, 0));
    assert_eq!(connections(&d), 1);
    assert_eq!(ok::<Vec<NeighRow>>(&d, json!({"op": "neigh_show"})).len(), 1);
    let routes: Vec<RouteRow> = ok(&d, json!({"op": "route_show"}));
    assert!(routes.iter().any(|r| r.prefix.to_string() == "10.9.0.0/16" && r.interface == "port:up"), "{routes:?}");
    let stats: StatsResult = ok(&d, json!({"op": "stats"}));
    assert_eq!(stats.report["snat"]["in_use"], 1, "its NAT port is still held: {}", stats.report["snat"]);

    // 4. A route that concerns it (its destination now goes through another gateway): that connection is
    // flushed, and its port released; the neighbour stays.
    let rerouted = routed + "\n[[route]]\nprefix = \"198.51.100.0/24\"\nvia = \"203.0.113.9\"\n";
    let r = apply(&d, &rerouted);
    assert_eq!((r.summary.router_state, r.summary.connections_flushed), (RouterState::Flushed, 1));
    assert_eq!(connections(&d), 0);
    assert_eq!(ok::<Vec<NeighRow>>(&d, json!({"op": "neigh_show"})).len(), 1);
    assert_eq!(fdb(&d), vec![entry("lan", 1, "a")], "MAC entries are not the router's");
    let stats: StatsResult = ok(&d, json!({"op": "stats"}));
    assert_eq!(stats.report["snat"]["in_use"], 0, "{}", stats.report["snat"]);
    stop(d);
}

/// An opener that panics while a failed port is retried fails that attempt only: counted, the port stays failed
/// with the panic as its error, the daemon goes on, and the next retry brings it up.
#[test]
fn a_panic_while_retrying_a_failed_port_fails_that_attempt_only() {
    let (d, _) = daemon(BASE);
    let more = BASE.to_string() + "\n[[port]]\nname = \"wobbly1\"\nkind = \"mem\"\nnetwork = \"lan\"\n";
    let r = apply(&d, &more);
    assert_eq!(r.summary.ports_failed.iter().map(|f| f.port.as_str()).collect::<Vec<_>>(), ["wobbly1"]);
    std::thread::sleep(dataplane::port::failed::FIRST_RETRY);
    assert!(d.retry_failed_ports().is_empty(), "the second attempt panicked");
    let stats: StatsResult = ok(&d, json!({"op": "stats"}));
    assert_eq!(stats.report["control_panics"], 1, "{}", stats.report);
    let ports: Vec<PortRow> = ok(&d, json!({"op": "port_ls"}));
    let w = ports.iter().find(|p| p.name == "wobbly1").unwrap();
    assert_eq!(w.state, PortState::Failed);
    assert!(w.error.as_deref().unwrap_or("").contains("panicked at its second attempt"), "{:?}", w.error);
    std::thread::sleep(2 * dataplane::port::failed::FIRST_RETRY);
    assert_eq!(d.retry_failed_ports(), ["wobbly1"]);
    assert_eq!(ok::<HelloResult>(&d, json!({"op": "hello"})).generation, 2);
    stop(d);
}

#[test]
fn a_port_that_fails_to_open_is_applied_as_failed_the_others_forward_and_it_is_retried() {
    let (d, opened) = daemon(BASE);
    learn_and_connect(&d);
    // A port that cannot be opened (yet), next to one that can: the apply goes through with a per-port outcome.
    let more = BASE.to_string()
        + "\n[[port]]\nname = \"good\"\nkind = \"mem\"\nnetwork = \"lan\"\n\n\
           [[port]]\nname = \"flaky1\"\nkind = \"mem\"\nnetwork = \"lan\"\n";
    let r = apply(&d, &more);
    assert_eq!(r.generation, 2);
    assert_eq!(r.summary.ports_added, ["good", "flaky1"]);
    assert_eq!(r.summary.ports_failed.len(), 1, "{:?}", r.summary);
    let f = &r.summary.ports_failed[0];
    assert!(f.port == "flaky1" && f.error.contains("port flaky1") && f.error.contains("no such device"), "{f:?}");
    assert_eq!(connections(&d), 1, "adding ports to a network without a new gateway keeps the connections");
    let ports: Vec<PortRow> = ok(&d, json!({"op": "port_ls"}));
    let state = |ports: &[PortRow], n: &str| {
        let p = ports.iter().find(|p| p.name == n).unwrap();
        (p.state, p.error.clone())
    };
    assert_eq!(state(&ports, "good"), (PortState::Up, None));
    let (st, err) = state(&ports, "flaky1");
    assert_eq!(st, PortState::Failed);
    assert!(err.unwrap().contains("no such device"));
    let stats: StatsResult = ok(&d, json!({"op": "stats"}));
    assert_eq!(stats.report["ports"]["flaky1"]["state"], "failed", "{}", stats.report);
    // The others forward: a flood from a reaches good; what goes to flaky1 is dropped by its stand-in.
    sent(&d, "good");
    inject(&d, "a", &frame(MacAddr::BROADCAST, mac(1)));
    eventually("a → good", || !sent(&d, "good").is_empty());

    // Retried with backoff, without a configuration change: not before the first delay, then it comes up.
    assert!(d.retry_failed_ports().is_empty(), "not due yet");
    std::thread::sleep(dataplane::port::failed::FIRST_RETRY);
    assert_eq!(d.retry_failed_ports(), ["flaky1"]);
    assert_eq!(opened.lock().unwrap().iter().filter(|n| *n == "flaky1").count(), 2);
    let ports: Vec<PortRow> = ok(&d, json!({"op": "port_ls"}));
    assert_eq!(state(&ports, "flaky1"), (PortState::Up, None));
    assert_eq!(ok::<HelloResult>(&d, json!({"op": "hello"})).generation, 2, "a retry is not a new generation");
    // Its real queues are in: a flood from a reaches it (its stand-in only dropped), and it receives.
    inject(&d, "a", &frame(MacAddr::BROADCAST, mac(1)));
    eventually("a → flaky1", || !sent(&d, "flaky1").is_empty());
    sent(&d, "good");
    inject(&d, "flaky1", &frame(MacAddr::BROADCAST, mac(3)));
    eventually("flaky1 → good", || !sent(&d, "good").is_empty());
    assert!(fdb(&d).contains(&entry("lan", 3, "flaky1")), "{:?}", fdb(&d));
    assert!(fdb(&d).contains(&entry("lan", 1, "a")), "the MAC table was kept");
    stop(d);
}

/// A panic while answering a request fails that request only: counted, the daemon goes on serving and
/// forwarding, later applies work.
#[test]
fn a_request_that_panics_fails_alone_and_is_counted() {
    let (d, _) = daemon(BASE);
    learn_and_connect(&d);
    let more = BASE.to_string() + "\n[[port]]\nname = \"panic1\"\nkind = \"mem\"\nnetwork = \"lan\"\n";
    let e = fail(&d, json!({"op": "apply", "toml": more}));
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(e.message.contains("apply: the request panicked: the opener of panic1 panicked"), "{}", e.message);
    let stats: StatsResult = ok(&d, json!({"op": "stats"}));
    assert_eq!(stats.report["control_panics"], 1, "{}", stats.report);
    assert_eq!(stats.report["worker_restarts"], 0);
    assert_eq!(ok::<HelloResult>(&d, json!({"op": "hello"})).generation, 1, "nothing applied");
    assert_eq!(connections(&d), 1);
    sent(&d, "b");
    inject(&d, "a", &frame(mac(2), mac(1)));
    eventually("a → b after the panic", || !sent(&d, "b").is_empty());
    let ok_more = BASE.to_string() + "\n[[port]]\nname = \"z\"\nkind = \"mem\"\nnetwork = \"lan\"\n";
    assert_eq!(apply(&d, &ok_more).generation, 2, "applies still work (the poisoned locks are used as they are)");
    stop(d);
}

#[test]
fn an_invalid_apply_changes_nothing() {
    let (d, opened) = daemon(BASE);
    learn_and_connect(&d);
    let before: ConfigResult = ok(&d, json!({"op": "get_config"}));

    // An invalid configuration: every error with its line, nothing changes.
    let e = fail(
        &d,
        json!({"op": "apply", "toml": "[[port]]\nname = \"p\"\nkind = \"tap\"\nnetwork = \"nope\"\n", "origin": "c.toml"}),
    );
    assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::InvalidConfig, Some("toml")));
    assert!(e.errors.iter().any(|i| i.origin == "c.toml" && i.line == Some(4) && i.message.contains("nope")), "{e:?}");
    // The same as JSON: validated too.
    let mut cfg = before.config.clone();
    cfg.ports[0].network = Some("nope".into());
    let e = fail(&d, json!({"op": "apply", "config": cfg}));
    assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::InvalidConfig, Some("config")));
    // Optimistic concurrency.
    let e = fail(&d, json!({"op": "apply", "config": before.config, "expect_generation": 7}));
    assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::Conflict, Some("expect_generation")));
    // Both forms at once, or none.
    assert_eq!(fail(&d, json!({"op": "apply", "config": before.config, "toml": ""})).kind, ErrorKind::BadRequest);
    assert_eq!(fail(&d, json!({"op": "apply"})).field.as_deref(), Some("config"));
    assert_eq!(ok::<HelloResult>(&d, json!({"op": "hello"})).generation, 1);
    assert!(opened.lock().unwrap().is_empty(), "nothing was opened");

    // The running configuration again: nothing to do, same generation. A dry run reports without applying.
    let r: ApplyResult = ok(&d, json!({"op": "apply", "config": before.config, "expect_generation": 1}));
    assert_eq!((r.generation, r.changed), (1, false));
    let more = BASE.to_string() + "\n[[port]]\nname = \"z\"\nkind = \"mem\"\nnetwork = \"lan\"\n";
    let r: ApplyResult = ok(&d, json!({"op": "apply", "toml": more, "dry_run": true}));
    assert_eq!((r.generation, r.changed, r.dry_run), (1, true, true));
    assert_eq!(r.summary.ports_added, ["z"]);
    assert_eq!(ok::<ConfigResult>(&d, json!({"op": "get_config"})), before);
    stop(d);
}

#[test]
fn reads_name_what_does_not_exist_and_conntrack_flush_empties_the_table() {
    let (d, _) = daemon(BASE);
    learn_and_connect(&d);
    let nets: Vec<NetworkSummary> = ok(&d, json!({"op": "network_ls"}));
    assert_eq!(nets.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["lan", "dmz"]);
    assert_eq!(nets[0].ports, ["a", "b"]);
    assert_eq!(nets[0].gateway_mac, Some(derived_mac("network:lan")));
    let lan: NetworkInspect = ok(&d, json!({"op": "network_inspect", "name": "lan"}));
    assert_eq!((lan.fdb.entries, lan.entries.len()), (2, 2));
    let e = fail(&d, json!({"op": "network_inspect", "name": "lna"}));
    assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::NotFound, Some("name")));
    assert!(e.message.contains("known networks: lan, dmz"), "{}", e.message);
    let e = fail(&d, json!({"op": "fdb_show", "network": "nope"}));
    assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::NotFound, Some("network")));
    let dmz: Vec<FdbRow> = ok(&d, json!({"op": "fdb_show", "network": "dmz"}));
    assert_eq!(dmz.len(), 1);
    let ct: ConntrackList = ok(&d, json!({"op": "conntrack_ls", "limit": 0}));
    assert_eq!((ct.total, ct.truncated, ct.connections.len()), (1, true, 0));
    // The server's maximum: accepted up to it, refused beyond, naming the field.
    let ct: ConntrackList = ok(&d, json!({"op": "conntrack_ls", "limit": MAX_CONNTRACK_LIMIT}));
    assert_eq!((ct.total, ct.truncated, ct.connections.len()), (1, false, 1));
    let e = fail(&d, json!({"op": "conntrack_ls", "limit": MAX_CONNTRACK_LIMIT + 1}));
    assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::BadRequest, Some("limit")));
    assert!(e.message.contains("10000"), "{}", e.message);
    let ct: ConntrackList = ok(&d, json!({"op": "conntrack_ls"}));
    let c = &ct.connections[0];
    assert_eq!((c.proto.as_str(), c.nat.as_deref()), ("udp", Some("snat")));
    assert_eq!((c.orig.src, c.orig.dport), (Ipv4Addr::new(10, 1, 0, 5), 53));
    let flushed: ConntrackFlushed = ok(&d, json!({"op": "conntrack_flush"}));
    assert_eq!(flushed.removed, 1);
    assert_eq!(connections(&d), 0);
    stop(d);
}

/// An empty daemon (as `vswitchd run` without --config) that gets its first configuration.
#[test]
fn an_empty_switch_starts_at_generation_0_and_takes_a_configuration() {
    let (d, opened) = daemon("");
    let c: ConfigResult = ok(&d, json!({"op": "get_config"}));
    assert_eq!(c.config, Config::default());
    let r = apply(&d, BASE);
    assert_eq!(r.summary.ports_added, ["a", "b", "x", "up"]);
    assert_eq!(opened.lock().unwrap().len(), 4);
    inject(&d, "a", &frame(mac(2), mac(1)));
    eventually("flooded to b", || !sent(&d, "b").is_empty());
    // Back to nothing: every port closed.
    let r = apply(&d, "");
    assert_eq!(r.summary.ports_removed, ["a", "b", "x", "up"]);
    assert_eq!(r.summary.networks_removed, ["lan", "dmz"]);
    assert!(ok::<Vec<PortRow>>(&d, json!({"op": "port_ls"})).is_empty());
    stop(d);
}

fn stop(d: Arc<Daemon>) {
    let running = d.shut_down().expect("running");
    let stopped = running.stop();
    assert!(stopped.panicked.is_empty());
    assert_eq!(call(&d, json!({"op": "hello"})).error.unwrap().kind, ErrorKind::ShuttingDown);
}

// ----------------------------------------------------------------------------------------------------------
// The socket.

struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    fn connect(path: &std::path::Path) -> Client {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Client { writer: s.try_clone().unwrap(), reader: BufReader::new(s) }
    }

    fn send(&mut self, line: &[u8]) -> Option<Response> {
        self.writer.write_all(line).unwrap();
        self.writer.write_all(b"\n").unwrap();
        let mut buf = String::new();
        match self.reader.read_line(&mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(Response::parse(buf.as_bytes()).unwrap()),
        }
    }
}

#[test]
fn the_socket_answers_bad_lines_with_errors_and_keeps_serving() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/vswitch/ctl.sock");
    // A stale socket file (nobody listening) is replaced.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let sock = ControlSocket::bind(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A second daemon on the same path is refused.
    assert!(matches!(ControlSocket::bind(&path), Err(BindError::InUse(_))));

    let (d, _) = daemon(BASE);
    let stop_flag = Arc::new(AtomicBool::new(false));
    let server = sock.serve(Arc::clone(&d), Arc::clone(&stop_flag), None).unwrap();

    let mut c = Client::connect(&path);
    let mut other = Client::connect(&path);
    let kinds = [
        (&b"not json"[..], ErrorKind::BadRequest),
        (br#"{"version":9,"id":1,"op":"hello"}"#, ErrorKind::VersionMismatch),
        (br#"{"version":1,"id":2,"op":"frobnicate"}"#, ErrorKind::UnknownOp),
        (br#"{"version":1,"id":3,"op":"network_inspect"}"#, ErrorKind::BadRequest),
        (br#"{"version":1,"id":4,"op":"port_ls","all":true}"#, ErrorKind::BadRequest),
    ];
    for (line, kind) in kinds {
        let r = c.send(line).expect("an answer");
        assert_eq!(r.error.as_ref().map(|e| e.kind), Some(kind), "{}", String::from_utf8_lossy(line));
        // Another client is served meanwhile.
        let h: HelloResult = other.send(br#"{"version":1,"id":5,"op":"hello"}"#).unwrap().into_result().unwrap();
        assert_eq!(h.generation, 1);
    }
    let r = c.send(br#"{"version":1,"id":6,"op":"hello"}"#).unwrap();
    assert_eq!((r.ok, r.id), (true, Some(6)), "the connection keeps serving after errors");

    // Pipelined requests are answered in order.
    c.writer
        .write_all(b"{\"version\":1,\"id\":7,\"op\":\"hello\"}\n{\"version\":1,\"id\":8,\"op\":\"route_show\"}\n")
        .unwrap();
    for id in [7, 8] {
        let mut buf = String::new();
        c.reader.read_line(&mut buf).unwrap();
        assert_eq!(Response::parse(buf.as_bytes()).unwrap().id, Some(id));
    }

    // An oversized line: too_large, then the connection is closed; others are unaffected.
    let mut big = Client::connect(&path);
    let line = vec![b'x'; MAX_REQUEST_BYTES + 10];
    let _ = big.writer.write_all(&line);
    let mut buf = String::new();
    big.reader.read_line(&mut buf).unwrap();
    let r = Response::parse(buf.as_bytes()).unwrap();
    assert_eq!(r.error.unwrap().kind, ErrorKind::TooLarge);
    buf.clear();
    assert_eq!(big.reader.read_line(&mut buf).unwrap_or(0), 0, "closed after too_large");
    assert!(other.send(br#"{"version":1,"id":9,"op":"hello"}"#).unwrap().ok);

    stop_flag.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert!(!path.exists(), "the socket file is removed at exit");
    stop(d);
}

/// A served socket in a temporary directory: (its path, the directory, the stop flag, the server thread).
fn served(d: &Arc<Daemon>) -> (std::path::PathBuf, tempfile::TempDir, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.sock");
    let sock = ControlSocket::bind(&path).unwrap();
    let stop_flag = Arc::new(AtomicBool::new(false));
    let server = sock.serve(Arc::clone(d), Arc::clone(&stop_flag), None).unwrap();
    (path, dir, stop_flag, server)
}

/// 64 clients that each send half a request line and then nothing take every slot; a new client (vswitchctl
/// port ls) is still answered within 1 s, because it evicts the connection idle the longest.
#[test]
fn half_line_clients_do_not_lock_out_a_new_client() {
    let (d, _) = daemon(BASE);
    let (path, _dir, stop_flag, server) = served(&d);
    let mut idle: Vec<UnixStream> = (0..64)
        .map(|_| {
            let mut s = UnixStream::connect(&path).unwrap();
            s.write_all(br#"{"version":1,"id":1,"#).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..3 {
        let t = Instant::now();
        let mut c = Client::connect(&path);
        let r = c.send(br#"{"version":1,"id":2,"op":"port_ls"}"#).expect("an answer");
        assert!(r.ok, "round {round}: {r:?}");
        assert!(t.elapsed() < Duration::from_secs(1), "round {round}: answered after {:?}", t.elapsed());
    }
    // The evicted ones were closed: reading them gives end of stream (or an error), not a hang.
    let mut closed = 0;
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 16];
        if matches!(std::io::Read::read(s, &mut buf), Ok(0)) {
            closed += 1;
        }
    }
    assert!(closed >= 1, "at least one idle connection was evicted");
    stop_flag.store(true, Ordering::Relaxed);
    server.join().unwrap();
    stop(d);
}

/// The nice value of each of this process's threads whose name starts with `prefix` (from `/proc/self/task`).
fn nice_of_threads(prefix: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis: state is field 3, nice field 19.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        if let Some(nice) = rest.split_whitespace().nth(16).and_then(|n| n.parse().ok()) {
            out.push(nice);
        }
    }
    out
}

/// The control socket's threads give way to the workers (`dataplane::sched`): the accept thread and every
/// connection's thread run at nice 10, the workers keep the process's priority.
#[test]
fn control_threads_run_nicer_than_the_workers() {
    let (d, _) = daemon(BASE);
    let (path, _dir, stop_flag, server) = served(&d);
    let mut client = UnixStream::connect(&path).unwrap();
    client.write_all(br#"{"version":1,"id":1,"#).unwrap();
    eventually("a connection thread", || !nice_of_threads("vsw-control-con").is_empty());
    let process = nice_of_threads("vsw-worker");
    assert!(!process.is_empty(), "the daemon runs workers");
    let expected = i64::from(dataplane::sched::CONTROL_NICE).max(process[0]);
    assert_eq!(nice_of_threads("vsw-control-con"), vec![expected], "the connection thread");
    assert!(nice_of_threads("vsw-control").iter().all(|&n| n == expected), "the accept thread");
    assert!(process.iter().all(|&n| n == process[0] && n < expected), "workers keep their priority: {process:?}");
    drop(client);
    stop_flag.store(true, Ordering::Relaxed);
    server.join().unwrap();
    stop(d);
}

/// As [`served`], with other limits than vswitchd's.
fn served_with(
    d: &Arc<Daemon>,
    limits: Limits,
) -> (std::path::PathBuf, tempfile::TempDir, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.sock");
    let sock = ControlSocket::bind(&path).unwrap();
    let stop_flag = Arc::new(AtomicBool::new(false));
    let server = sock.serve_with(Arc::clone(d), Arc::clone(&stop_flag), None, limits).unwrap();
    (path, dir, stop_flag, server)
}

/// A client that sends its request line a byte every 30 ms, never a newline, is closed once the line deadline
/// passes (1 s here; 10 s in vswitchd): the deadline is checked whenever bytes arrive, not only when the client
/// pauses for the read timeout (50 ms).
#[test]
fn a_client_dripping_a_line_is_closed_at_the_line_deadline() {
    let (d, _) = daemon(BASE);
    let limits = Limits { line_timeout: Duration::from_secs(1), ..Limits::default() };
    let (path, _dir, stop_flag, server) = served_with(&d, limits);
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
    let t = Instant::now();
    let closed_after = loop {
        if t.elapsed() > Duration::from_secs(5) {
            break None;
        }
        if s.write_all(b" ").is_err() {
            break Some(t.elapsed());
        }
        let mut buf = [0u8; 64];
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) => break Some(t.elapsed()),
            Ok(_) => panic!("an answer to half a line"),
            Err(_) => {} // the read timeout: 30 ms between bytes
        }
    };
    let closed_after = closed_after.expect("a dripping client was still connected after 5 s");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_millis(2500),
        "closed after {closed_after:?}, the deadline is 1 s"
    );
    stop_flag.store(true, Ordering::Relaxed);
    server.join().unwrap();
    stop(d);
}

/// Clients that read their (2 MiB) responses slowly but steadily (16 KiB every 100 ms: each write makes
/// progress) hold every slot only until the response deadline (1 s here; 10 s in vswitchd) cuts them: a new
/// client then gets in, instead of being refused "all busy" for as long as the responses would take (~13 s).
#[test]
fn slow_readers_are_cut_at_the_response_deadline_and_do_not_lock_out_others() {
    let (d, _) = daemon(BASE);
    // A configuration whose origin is 2 MiB long: get_config's answer carries it.
    let origin = "o".repeat(2 << 20);
    let bigger = format!("{BASE}\n[[network]]\nname = \"extra\"\n");
    let _: ApplyResult = ok(&d, json!({"op": "apply", "toml": bigger, "origin": origin}));
    let limits =
        Limits { max_connections: 8, reserved: 0, response_timeout: Duration::from_secs(1), ..Limits::default() };
    let (path, _dir, stop_flag, server) = served_with(&d, limits);
    let readers: Vec<std::thread::JoinHandle<usize>> = (0..8)
        .map(|_| {
            let mut s = UnixStream::connect(&path).unwrap();
            s.write_all(b"{\"version\":1,\"id\":1,\"op\":\"get_config\"}\n").unwrap();
            std::thread::spawn(move || {
                let mut got = 0;
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    match std::io::Read::read(&mut s, &mut buf) {
                        Ok(0) | Err(_) => return got,
                        Ok(n) => got += n,
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Every slot is busy writing a response now: a newcomer is refused.
    // (A refused client may find the socket closed before it writes: its answer is read all the same.)
    let hello = || {
        let mut c = Client::connect(&path);
        let _ = c.writer.write_all(b"{\"version\":1,\"id\":2,\"op\":\"hello\"}\n");
        let mut buf = String::new();
        c.reader.read_line(&mut buf).ok().and_then(|_| Response::parse(buf.as_bytes()).ok())
    };
    let r = hello().expect("an answer");
    assert!(!r.ok && r.error.unwrap().message.contains("all busy"), "the slow readers hold every slot");
    // Within the response deadline and a margin, one gets in.
    let t = Instant::now();
    let answered = loop {
        if hello().is_some_and(|r| r.ok) {
            break Some(t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(4) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(answered.is_some_and(|a| a < Duration::from_secs(3)), "a new client got in after {answered:?}");
    // The slow readers were cut before the end of their 2 MiB.
    for r in readers {
        let got = r.join().unwrap();
        assert!(got < 2 << 20, "a slow reader got its whole response ({got} bytes)");
    }
    stop_flag.store(true, Ordering::Relaxed);
    server.join().unwrap();
    stop(d);
}

/// A client that pipelines requests and never reads the answers fills the socket: the connection thread
/// blocks writing. Stopping the server still takes well under a second (it shuts the sockets down).
#[test]
fn a_client_that_never_reads_does_not_delay_stopping() {
    let (d, _) = daemon(BASE);
    let (path, _dir, stop_flag, server) = served(&d);
    let s = UnixStream::connect(&path).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut w = s.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let line = b"{\"version\":1,\"id\":1,\"op\":\"get_config\"}\n".repeat(64);
        while w.write_all(&line).is_ok() {}
    });
    // Until the writes block: the server is stuck writing answers nobody reads, and we are stuck behind it.
    flood.join().unwrap();
    let t = Instant::now();
    stop_flag.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "stopping took {:?}", t.elapsed());
    drop(s);
    stop(d);
}

/// Large request lines draw on a shared budget: while two clients each hold 7 MiB of unfinished lines, a
/// third large line is refused (too_large, "retry later") instead of being buffered; small requests go on.
#[test]
fn large_lines_share_a_bounded_budget() {
    let (d, _) = daemon(BASE);
    let (path, _dir, stop_flag, server) = served(&d);
    let chunk = vec![b' '; 7 << 20];
    let mut holders: Vec<UnixStream> = (0..2)
        .map(|_| {
            let mut s = UnixStream::connect(&path).unwrap();
            s.write_all(b"{").unwrap();
            s.write_all(&chunk).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = Client::connect(&path);
    let _ = third.writer.write_all(&chunk);
    let mut buf = String::new();
    third.reader.read_line(&mut buf).unwrap();
    let r = Response::parse(buf.as_bytes()).unwrap();
    let e = r.error.expect("refused");
    assert_eq!(e.kind, ErrorKind::TooLarge);
    assert!(e.message.contains("retry later"), "{}", e.message);
    let mut small = Client::connect(&path);
    assert!(small.send(br#"{"version":1,"id":3,"op":"hello"}"#).unwrap().ok);
    // The holders finish their lines: each gets an answer (a bad request: `{` + spaces + `}` has no fields).
    for h in &mut holders {
        h.write_all(b"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(h.try_clone().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(Response::parse(line.as_bytes()).unwrap().error.unwrap().kind, ErrorKind::BadRequest);
    }
    stop_flag.store(true, Ordering::Relaxed);
    server.join().unwrap();
    stop(d);
}

/// A port whose back-end settings change is reopened; when its new settings fail to open, it keeps its old,
/// working port and old settings (reported as `ports_change_failed`, not failed, not reopened), whether the new
/// port needed the old one's interface (closed first, then opened again with the old settings) or not (the old
/// one never closed). Applying the configuration again tries again; a change that works reopens it.
#[test]
fn a_port_whose_new_settings_fail_keeps_its_old_port_and_the_apply_says_why() {
    let base = BASE.replace("name = \"a\"\nkind = \"mem\"", "name = \"a\"\nkind = \"mem\"\nifname = \"m-a\"");
    let (d, opened) = daemon(&base);
    learn_and_connect(&d);
    let config = |d: &Daemon| ok::<ConfigResult>(d, json!({"op": "get_config"})).config;
    let a_config = |d: &Daemon| config(d).ports.into_iter().find(|p| p.name == "a").unwrap();
    let forwards = |d: &Daemon, what: &str| {
        sent(d, "b");
        inject(d, "a", &frame(mac(2), mac(1)));
        eventually(what, || !sent(d, "b").is_empty());
    };

    // The same interface (deferred: the old port is closed first), an MTU the opener refuses.
    let failing = base.replace("ifname = \"m-a\"", "ifname = \"m-a\"\nmtu = 1234");
    let r = apply(&d, &failing);
    assert_eq!(r.generation, 2);
    assert_eq!(r.summary.ports_change_failed.len(), 1, "{:?}", r.summary);
    assert_eq!(r.summary.ports_change_failed[0].port, "a");
    assert!(r.summary.ports_change_failed[0].error.contains("no such device"), "{:?}", r.summary);
    assert!(r.summary.ports_failed.is_empty() && r.summary.ports_reopened.is_empty(), "{:?}", r.summary);
    assert_eq!(*opened.lock().unwrap(), ["a", "a"], "tried with the new settings, then opened with the old");
    let ports: Vec<PortRow> = ok(&d, json!({"op": "port_ls"}));
    let a = ports.iter().find(|p| p.name == "a").unwrap();
    assert_eq!((a.state, a.error.clone()), (PortState::Up, None));
    assert_eq!(a_config(&d).mtu, 1500, "the running configuration says what runs: the old MTU");
    forwards(&d, "a → b on the old settings");
    assert!(fdb(&d).contains(&entry("lan", 1, "a")), "{:?}", fdb(&d));
    assert_eq!(connections(&d), 1);

    // Another interface (opened before the switch-over, while the old port runs on): the old is never closed.
    let elsewhere = base.replace("ifname = \"m-a\"", "ifname = \"m-a2\"\nmtu = 1234");
    let r = apply(&d, &elsewhere);
    assert_eq!(r.summary.ports_change_failed.iter().map(|f| f.port.as_str()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(opened.lock().unwrap().len(), 3, "one attempt, nothing reopened");
    assert_eq!(a_config(&d).ifname.as_deref(), Some("m-a"));
    forwards(&d, "a → b, the old port untouched");

    // The same configuration again: still a change (the old settings run), tried again; it fails again, and
    // that was all: nothing is switched over (no pause, the generation stays).
    let generation = r.generation;
    let r = apply(&d, &elsewhere);
    assert_eq!((r.changed, r.generation, r.summary.pause_us), (false, generation, 0), "{r:?}");
    assert_eq!(r.summary.ports_change_failed.iter().map(|f| f.port.as_str()).collect::<Vec<_>>(), ["a"]);
    assert!(r.summary.ports_reopened.is_empty(), "{:?}", r.summary);
    assert_eq!(opened.lock().unwrap().len(), 4);

    // The interface of a port removed by the same apply (deferred until that one is closed): a's old port, on
    // another interface, is not in the way and simply stays.
    let with_y = base.clone() + "\n[[port]]\nname = \"y\"\nkind = \"mem\"\nifname = \"m-y\"\nnetwork = \"dmz\"\n";
    apply(&d, &with_y);
    assert_eq!(opened.lock().unwrap().len(), 5);
    let onto_y = base.replace("ifname = \"m-a\"", "ifname = \"m-y\"\nmtu = 1234");
    let r = apply(&d, &onto_y);
    assert_eq!(r.summary.ports_change_failed.iter().map(|f| f.port.as_str()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(r.summary.ports_removed, ["y"]);
    assert_eq!(opened.lock().unwrap().len(), 6, "one attempt; the old port was never closed");
    assert_eq!(a_config(&d).ifname.as_deref(), Some("m-a"));
    forwards(&d, "a → b, the old port untouched");

    // A change that can be opened is made.
    let ok_mtu = base.replace("ifname = \"m-a\"", "ifname = \"m-a\"\nmtu = 1400");
    let r = apply(&d, &ok_mtu);
    assert_eq!(r.summary.ports_reopened, ["a"]);
    assert!(r.summary.ports_failed.is_empty() && r.summary.ports_change_failed.is_empty(), "{:?}", r.summary);
    assert_eq!(r.summary.ports_unchanged, ["b", "x", "up"]);
    assert_eq!(opened.lock().unwrap().len(), 7);
    assert_eq!(a_config(&d).mtu, 1400);
    forwards(&d, "a → b");
    assert!(fdb(&d).contains(&entry("lan", 1, "a")), "same name, same network: its MAC entries stay");
    // The gateway network's MTU (its smallest port MTU) changed: the router was rebuilt, its state carried over.
    assert_eq!((r.summary.router_state, r.summary.connections_flushed), (RouterState::Kept, 0));
    assert_eq!(connections(&d), 1);
    stop(d);
}

/// A port that is down and whose new settings fail stays down (failed, with the new error, retried): there is
/// no working old port to keep.
#[test]
fn a_failed_port_whose_new_settings_fail_stays_failed() {
    let base = BASE.to_string() + "\n[[port]]\nname = \"flaky1\"\nkind = \"mem\"\nnetwork = \"lan\"\n";
    let (d, _) = daemon(BASE);
    let r = apply(&d, &base);
    assert_eq!(r.summary.ports_failed.iter().map(|f| f.port.as_str()).collect::<Vec<_>>(), ["flaky1"]);
    let r =
        apply(&d, &base.replace("name = \"flaky1\"\nkind = \"mem\"", "name = \"flaky1\"\nkind = \"mem\"\nmtu = 1234"));
    assert_eq!(r.summary.ports_failed.iter().map(|f| f.port.as_str()).collect::<Vec<_>>(), ["flaky1"]);
    assert!(r.summary.ports_change_failed.is_empty(), "{:?}", r.summary);
    stop(d);
}

/// A panic during the switch-over (the workers paused, a port closed for a deferred reopen, the new tables
/// computed) fails that apply only: counted as a control panic, the previous configuration and learned state
/// run on (the closed port opened again), and later applies work. Injected through the test hook, and through
/// an opener that panics while the workers are paused.
#[test]
fn a_panic_during_the_switch_over_fails_the_apply_and_the_previous_configuration_runs_on() {
    let base = BASE.replace("name = \"a\"\nkind = \"mem\"", "name = \"a\"\nkind = \"mem\"\nifname = \"m-a\"");
    let (d, opened) = daemon(&base);
    learn_and_connect(&d);
    let before: ConfigResult = ok(&d, json!({"op": "get_config"}));
    let control_panics = |d: &Daemon| ok::<StatsResult>(d, json!({"op": "stats"})).report["control_panics"].clone();
    let unchanged = |d: &Daemon, what: &str| {
        let now: ConfigResult = ok(d, json!({"op": "get_config"}));
        assert_eq!((now.generation, &now.config), (1, &before.config), "{what}");
        assert_eq!(connections(d), 1, "{what}");
        assert!(fdb(d).contains(&entry("lan", 2, "b")), "{what}: {:?}", fdb(d));
        let ports: Vec<PortRow> = ok(d, json!({"op": "port_ls"}));
        assert!(ports.iter().all(|p| p.state == PortState::Up), "{what}: {ports:?}");
        sent(d, "b");
        inject(d, "a", &frame(mac(2), mac(1)));
        eventually(what, || !sent(d, "b").is_empty());
    };

    // The hook: a deferred reopen of a (closed, reopened with the new MTU) and a new network, then the panic.
    let more = base.replace("ifname = \"m-a\"", "ifname = \"m-a\"\nmtu = 1400") + "\n[[network]]\nname = \"new\"\n";
    d.with_running(|r| r.inject_apply_panic()).unwrap();
    let e = fail(&d, json!({"op": "apply", "toml": more}));
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(e.message.contains("switch-over panicked: injected switch-over panic"), "{}", e.message);
    assert!(e.message.contains("previous configuration runs on"), "{}", e.message);
    assert_eq!(control_panics(&d), 1);
    assert_eq!(*opened.lock().unwrap(), ["a", "a"], "opened with the new settings, then again with the old");
    unchanged(&d, "after the injected panic");

    // An opener that panics for the deferred port (a new port taking a's interface).
    let taken = base.replace(
        "name = \"a\"\nkind = \"mem\"\nifname = \"m-a\"",
        "name = \"panic1\"\nkind = \"mem\"\nifname = \"m-a\"",
    );
    let e = fail(&d, json!({"op": "apply", "toml": taken}));
    assert!(e.message.contains("switch-over panicked: the opener of panic1 panicked"), "{}", e.message);
    assert_eq!(control_panics(&d), 2);
    unchanged(&d, "after the opener's panic");

    assert_eq!(apply(&d, &more).generation, 2, "applies still work");
    stop(d);
}

/// An apply that goes without a pause (ports, networks and interfaces kept: here another MAC limit) builds its new
/// tables on the control thread before any worker sees them: a panic there fails that apply only, counted, and
/// the previous configuration and learned state run on; the same apply then goes through without a pause.
#[test]
fn a_panic_building_an_apply_without_a_pause_fails_it_and_the_previous_configuration_runs_on() {
    let (d, _) = daemon(BASE);
    learn_and_connect(&d);
    let limit = |n: u32| BASE.replace("masquerade = true\n", &format!("masquerade = true\nmac_limit = {n}\n"));
    // The test runtime started with other run options than the configuration's: this first apply restarts the
    // workers with the configuration's.
    assert!(apply(&d, &limit(100)).summary.workers_paused);
    let before: ConfigResult = ok(&d, json!({"op": "get_config"}));
    d.with_running(|r| r.inject_apply_panic()).unwrap();
    let e = fail(&d, json!({"op": "apply", "toml": limit(200)}));
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(e.message.contains("injected switch-over panic"), "{}", e.message);
    assert_eq!(ok::<StatsResult>(&d, json!({"op": "stats"})).report["control_panics"], 1);
    let now: ConfigResult = ok(&d, json!({"op": "get_config"}));
    assert_eq!((now.generation, &now.config), (2, &before.config));
    assert_eq!(connections(&d), 1);
    assert!(fdb(&d).contains(&entry("lan", 2, "b")), "{:?}", fdb(&d));
    sent(&d, "b");
    inject(&d, "a", &frame(mac(2), mac(1)));
    eventually("forwarding after the panic", || !sent(&d, "b").is_empty());

    let r = apply(&d, &limit(200));
    assert_eq!(r.generation, 3);
    assert!(!r.summary.workers_paused, "{r:?}");
    assert_eq!(connections(&d), 1, "the connection is carried over");
    stop(d);
}

/// A worker that panics while carrying its shard over to a configuration applied without a pause (two workers,
/// another MAC limit) does not hang the apply: the reply comes within a bounded time and says which worker's
/// shard was rebuilt, with the connection it held restored; the panic is counted; both workers forward
/// afterwards; the next apply goes through without a pause and rebuilds nothing. (Before, the apply waited
/// forever for the panicking worker's report, holding the apply lock.)
#[test]
fn a_worker_panicking_in_an_apply_without_a_pause_does_not_hang_it() {
    let two = format!("{BASE}\n[switch]\nworkers = 2\n");
    let (d, _) = daemon(&two);
    // The test runtime started with one worker: this apply restarts the workers with the configuration's two.
    assert!(apply(&d, &two).summary.workers_paused);
    learn_and_connect(&d);
    let limit = |n: u32| two.replace("masquerade = true\n", &format!("masquerade = true\nmac_limit = {n}\n"));
    d.with_running(|r| {
        assert_eq!(r.shards(), 2);
        r.inject_hot_apply_panic();
    })
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (d2, text) = (Arc::clone(&d), limit(100));
    std::thread::spawn(move || {
        let _ = tx.send(call(&d2, json!({"op": "apply", "toml": text})));
    });
    let r = rx.recv_timeout(Duration::from_secs(20)).expect("the apply answers within 20 s");
    let r: ApplyResult = r.into_result().unwrap_or_else(|e| panic!("{e:?}"));
    assert!(!r.summary.workers_paused, "{r:?}");
    assert_eq!(r.generation, 3);
    let rebuilt = &r.summary.shards_rebuilt;
    assert_eq!(rebuilt.len(), 1, "{r:?}");
    assert!(rebuilt[0].error.contains("injected panic carrying a shard over"), "{rebuilt:?}");
    assert_eq!(rebuilt[0].connections_lost, 0, "{rebuilt:?}");
    let stats: StatsResult = ok(&d, json!({"op": "stats"}));
    assert_eq!(stats.report["worker_restarts"], 1);
    let now: ConfigResult = ok(&d, json!({"op": "get_config"}));
    assert!(now.config.networks[0].mac_limit == 100, "{:?}", now.config.networks[0]);
    assert_eq!(connections(&d), 1, "the connection survives, carried or restored");
    assert!(fdb(&d).contains(&entry("lan", 2, "b")), "{:?}", fdb(&d));
    // Both workers forward: a's and b's queues are polled by different workers.
    sent(&d, "a");
    sent(&d, "b");
    inject(&d, "a", &frame(mac(2), mac(1)));
    inject(&d, "b", &frame(mac(1), mac(2)));
    eventually("forwarding both ways after the panic", || !sent(&d, "b").is_empty() && !sent(&d, "a").is_empty());
    let r = apply(&d, &limit(200));
    assert!(!r.summary.workers_paused && r.summary.shards_rebuilt.is_empty(), "{r:?}");
    assert_eq!(r.generation, 4);
    assert_eq!(connections(&d), 1);
    stop(d);
}

fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn trace_reports_each_stage_on_a_scratch_copy_and_leaves_the_switch_alone() {
    let (d, _) = daemon(BASE);
    learn_and_connect(&d);
    let stats_before: StatsResult = ok(&d, json!({"op": "stats"}));
    let fdb_before = fdb(&d);

    // Switched: a new source on b, to a known MAC.
    let t: TraceResult = ok(&d, json!({"op": "trace", "port": "b", "frame_hex": hex(&frame(mac(1), mac(77)))}));
    let stages: Vec<(&str, &str)> = t.stages.iter().map(|s| (s.stage.as_str(), s.decision.as_str())).collect();
    assert_eq!(stages.len(), 3, "{stages:?}");
    assert!(stages[0].0 == "ingress" && stages[0].1.starts_with("valid"), "{stages:?}");
    assert_eq!(stages[1], ("bridge", "network lan: known unicast: to port a"));
    assert_eq!(stages[2], ("egress", "queued on port a (60 bytes)"));
    assert_eq!(t.outputs.iter().map(|o| o.port.as_str()).collect::<Vec<_>>(), ["a"]);
    assert!(t.drops.is_empty(), "{:?}", t.drops);

    // Routed and masqueraded: out of up, to the next hop's resolved MAC (the neighbour was copied), source
    // translated to up's address.
    let gw = derived_mac("network:lan");
    let pkt = Ipv4Spec::new(mac(1), gw, Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(198, 51, 100, 8)).udp(4001, 53, 20);
    let t: TraceResult = ok(&d, json!({"op": "trace", "port": "a", "frame_hex": hex(&pkt)}));
    let find = |name: &str| t.stages.iter().find(|s| s.stage == name).map(|s| s.decision.clone()).unwrap_or_default();
    assert_eq!(find("bridge"), "network lan: to the router, interface network:lan");
    assert_eq!(find("route"), "198.51.100.8: 0.0.0.0/0 (static) via 203.0.113.1 out port:up");
    // Each stage said what it decided, in order, from the real pipeline: the route from the FIB, conntrack's
    // verdict with the translation, the neighbour the frame goes to.
    let order: Vec<&str> = t.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(order, ["ingress", "bridge", "route", "conntrack", "neighbour", "egress"], "{t:?}");
    assert!(find("conntrack").starts_with("original direction of a tracked connection"), "{}", find("conntrack"));
    assert!(find("conntrack").contains("Snat: Udp 10.1.0.5:4001 -> 198.51.100.8:53 becomes Udp 203.0.113.2:"), "{t:?}");
    assert_eq!(find("neighbour"), "203.0.113.1 is at 02:00:00:00:09:09");
    assert_eq!(t.outputs.len(), 1, "{t:?}");
    assert_eq!(t.outputs[0].port, "up");
    assert!(t.outputs[0].frame.contains("203.0.113.2") && t.outputs[0].frame.contains("02:00:00:00:09:09"), "{t:?}");

    // A reply of the live switch's tracked connection: the scratch copy has the connection, so conntrack says
    // so and the reply is translated back to the container.
    let up = derived_mac("port:up");
    let reply =
        Ipv4Spec::new(MacAddr([2, 0, 0, 0, 9, 9]), up, Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::new(203, 0, 113, 2))
            .udp(53, 4000, 20);
    let t: TraceResult = ok(&d, json!({"op": "trace", "port": "up", "frame_hex": hex(&reply)}));
    let find = |name: &str| t.stages.iter().find(|s| s.stage == name).map(|s| s.decision.clone()).unwrap_or_default();
    let order: Vec<&str> = t.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(order[..6], ["ingress", "bridge", "router", "conntrack", "route", "neighbour"], "{t:?}");
    assert!(find("conntrack").starts_with("reply direction of a tracked connection"), "{t:?}");
    assert!(find("conntrack").ends_with("becomes Udp 198.51.100.7:53 -> 10.1.0.5:4000"), "{t:?}");
    // The container's address was never resolved: the translated reply waits while the router asks for it.
    assert_eq!(find("neighbour"), "10.1.0.5 unresolved: the frame waits for ARP");
    assert_eq!(t.outputs.iter().map(|o| o.port.as_str()).collect::<Vec<_>>(), ["a", "b"], "{t:?}");
    assert!(t.outputs.iter().all(|o| o.frame.contains("ARP who-has 10.1.0.5")), "{t:?}");

    // An unroutable packet is dropped with its reason; a frame too short is refused.
    let mut ttl1 = pkt.clone();
    ttl1[14 + 8] = 1;
    let t: TraceResult = ok(&d, json!({"op": "trace", "port": "a", "frame_hex": hex(&ttl1)}));
    assert!(!t.drops.is_empty(), "{t:?}");

    // Nothing reached the live switch: no new MAC, no new connection, no counters.
    assert_eq!(fdb(&d), fdb_before);
    assert_eq!(connections(&d), 1);
    let stats_after: StatsResult = ok(&d, json!({"op": "stats"}));
    for p in ["a", "b", "up"] {
        assert_eq!(stats_after.report["ports"][p]["pipeline"], stats_before.report["ports"][p]["pipeline"], "{p}");
    }

    let e = fail(&d, json!({"op": "trace", "port": "zz", "frame_hex": hex(&pkt)}));
    assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::NotFound, Some("port")));
    for bad in ["0g", "abc", "0011"] {
        let e = fail(&d, json!({"op": "trace", "port": "a", "frame_hex": bad}));
        assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::BadRequest, Some("frame_hex")), "{bad}: {e:?}");
    }
    stop(d);
}

/// Opening ports (taps, AF_XDP sockets can take a while) happens before the switch-over: reads are answered
/// meanwhile, and a second apply waits for the first.
#[test]
fn reads_are_served_while_an_apply_opens_its_ports() {
    let (d, _) = daemon(BASE);
    let slow = BASE.to_string() + "\n[[port]]\nname = \"slow1\"\nkind = \"mem\"\nnetwork = \"lan\"\n";
    let d2 = Arc::clone(&d);
    let t0 = Instant::now();
    let applying = std::thread::spawn(move || apply(&d2, &slow));
    std::thread::sleep(Duration::from_millis(100));
    let hello: HelloResult = ok(&d, json!({"op": "hello"}));
    let ports: Vec<PortRow> = ok(&d, json!({"op": "port_ls"}));
    assert!(t0.elapsed() < Duration::from_millis(450), "reads waited for the apply: {:?}", t0.elapsed());
    assert_eq!((hello.generation, ports.len()), (1, 4), "the old configuration until the switch-over");
    let second = ok::<ApplyResult>(&d, json!({"op": "apply", "toml": BASE, "expect_generation": 2}));
    assert!(t0.elapsed() >= Duration::from_millis(600), "the second apply waited for the first");
    assert_eq!(second.generation, 3, "{second:?}");
    assert_eq!(applying.join().unwrap().generation, 2);
    assert_eq!(second.summary.ports_removed, ["slow1"]);
    stop(d);
}
