//! The control socket's `apply` and reads, in process, without privileges: a running switch on memory ports
//! (real workers), driven through the protocol ([`Daemon::handle_line`] with request lines as a client writes
//! them, and a real Unix socket for the server tests). Checks what survives which apply (MAC entries, the
//! router's neighbours and connections), that unchanged ports are not reopened, that a failing apply changes
//! nothing, and that bad request lines get clear errors while the connection keeps serving.

use dataplane::config::{Config, PortConfig};
use dataplane::control::daemon::Daemon;
use dataplane::control::proto::*;
use dataplane::control::server::{BindError, ControlSocket};
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
/// for ports called `bad*` and ports with MTU 1234 (and takes 600 ms for ports called `slow*`).
fn daemon(cfg: &str) -> (Arc<Daemon>, Arc<Mutex<Vec<String>>>) {
    let cfg = Config::parse(cfg, "base.toml").unwrap();
    let ports = cfg.ports.iter().map(|p| vec![mem_port(&p.name)]).collect();
    let opts = RunOptions { workers: 1, poll_idle: 50_000, pool_buffers: 1024 };
    let running = Runtime::new(&cfg, ports, opts).unwrap().start().unwrap();
    let opened = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&opened);
    let open = move |p: &PortConfig, n: usize| -> Result<Vec<AnyPort>, StartError> {
        log.lock().unwrap().push(p.name.clone());
        if p.name.starts_with("slow") {
            std::thread::sleep(Duration::from_millis(600));
        }
        if p.name.starts_with("bad") || p.mtu == 1234 {
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

    // 3. A route changes: the router is rebuilt, its connections and neighbours flushed.
    let routed = moved.clone() + "\n[[route]]\nprefix = \"10.9.0.0/16\"\nvia = \"203.0.113.1\"\n";
    let r = apply(&d, &routed);
    assert_eq!((r.summary.router_state, r.summary.connections_flushed), (RouterState::Flushed, 1));
    assert_eq!(connections(&d), 0);
    assert!(ok::<Vec<NeighRow>>(&d, json!({"op": "neigh_show"})).is_empty());
    assert_eq!(fdb(&d), vec![entry("lan", 1, "a")], "MAC entries are not the router's");
    let routes: Vec<RouteRow> = ok(&d, json!({"op": "route_show"}));
    assert!(routes.iter().any(|r| r.prefix.to_string() == "10.9.0.0/16" && r.interface == "port:up"), "{routes:?}");
    stop(d);
}

#[test]
fn a_failing_apply_changes_nothing() {
    let (d, opened) = daemon(BASE);
    learn_and_connect(&d);
    let before: ConfigResult = ok(&d, json!({"op": "get_config"}));
    let fdb_before = fdb(&d);

    // A port that cannot be opened, after one that can: both end closed, nothing changes.
    let bad = BASE.replace("[[port]]\nname = \"x\"\nkind = \"mem\"\nnetwork = \"dmz\"\n", "")
        + "\n[[port]]\nname = \"good\"\nkind = \"mem\"\nnetwork = \"lan\"\n\n[[port]]\nname = \"bad1\"\nkind = \"mem\"\nnetwork = \"lan\"\n";
    let e = fail(&d, json!({"op": "apply", "toml": bad}));
    assert_eq!(e.kind, ErrorKind::PortFailed);
    assert!(e.message.contains("port bad1:") && e.message.contains("no such device"), "{}", e.message);
    assert_eq!(*opened.lock().unwrap(), ["good", "bad1"]);
    let after: ConfigResult = ok(&d, json!({"op": "get_config"}));
    assert_eq!(after, before, "same configuration, same generation");
    assert_eq!(fdb(&d), fdb_before);
    assert_eq!(connections(&d), 1);
    let ports: Vec<PortRow> = ok(&d, json!({"op": "port_ls"}));
    assert_eq!(ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a", "b", "x", "up"]);
    // Still forwarding on the old topology.
    sent(&d, "x");
    inject(&d, "a", &frame(mac(9), mac(1)));
    eventually("a → x (dmz) is not possible, but a → b is", || !sent(&d, "b").is_empty());

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
    assert_eq!(*opened.lock().unwrap(), ["good", "bad1"], "nothing else was opened");

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
    let server = sock.serve(Arc::clone(&d), Arc::clone(&stop_flag)).unwrap();

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

/// A port whose back-end settings change is reopened; when it needs the interface the old one holds, the old
/// one is closed first, and if the new one then fails, the old one is opened again and nothing changes.
#[test]
fn a_reopened_port_on_the_same_interface_rolls_back_when_it_fails() {
    let base = BASE.replace("name = \"a\"\nkind = \"mem\"", "name = \"a\"\nkind = \"mem\"\nifname = \"m-a\"");
    let (d, opened) = daemon(&base);
    learn_and_connect(&d);
    let before: ConfigResult = ok(&d, json!({"op": "get_config"}));

    let failing = base.replace("ifname = \"m-a\"", "ifname = \"m-a\"\nmtu = 1234");
    let e = fail(&d, json!({"op": "apply", "toml": failing}));
    assert_eq!(e.kind, ErrorKind::PortFailed);
    assert!(e.message.starts_with("port a: ") && !e.message.contains("could not reopen"), "{}", e.message);
    assert_eq!(*opened.lock().unwrap(), ["a", "a"], "the new port failed, the old one was opened again");
    assert_eq!(ok::<ConfigResult>(&d, json!({"op": "get_config"})), before);
    // The reopened old port forwards.
    sent(&d, "b");
    inject(&d, "a", &frame(mac(2), mac(1)));
    eventually("a → b", || !sent(&d, "b").is_empty());

    let ok_mtu = base.replace("ifname = \"m-a\"", "ifname = \"m-a\"\nmtu = 1400");
    let r = apply(&d, &ok_mtu);
    assert_eq!(r.summary.ports_reopened, ["a"]);
    assert_eq!(r.summary.ports_unchanged, ["b", "x", "up"]);
    assert_eq!(opened.lock().unwrap().len(), 3);
    assert!(fdb(&d).contains(&entry("lan", 1, "a")), "same name, same network: its MAC entries stay");
    // The gateway network's MTU (its smallest port MTU) changed: the router was rebuilt.
    assert_eq!(r.summary.router_state, RouterState::Flushed);
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
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].0 == "ingress" && stages[0].1.starts_with("valid"), "{stages:?}");
    assert_eq!(stages[1], ("bridge", "network lan: known unicast: to port a"));
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
    assert!(find("router").contains("nat.snat_created +1"), "{}", find("router"));
    assert_eq!(t.outputs.len(), 1, "{t:?}");
    assert_eq!(t.outputs[0].port, "up");
    assert!(t.outputs[0].frame.contains("203.0.113.2") && t.outputs[0].frame.contains("02:00:00:00:09:09"), "{t:?}");

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
