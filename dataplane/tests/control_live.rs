//! The control socket live (root): `vswitchd run` started EMPTY inside a namespace of its own with `--socket` in
//! a temporary directory, configured over the socket by a tiny client written here (std `UnixStream`, one JSON
//! line per request): two taps moved into two "container" namespaces, ping between them; a second apply adding
//! a third tap keeps the first two as they were (same interface, address still on it, MAC entries still
//! there, ping again); an apply with a port that cannot be opened goes through with that port reported
//! failed and the others forwarding; SIGTERM stops it and removes the socket. Skips with a message when not root.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/netns.rs"]
mod netns;

use daemon::Daemon;
use netns::{skip_reason, Netns};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The tiny client: one request line out, one response line back.
struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).expect("connect to the control socket");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client { writer: s.try_clone().unwrap(), reader: BufReader::new(s), next_id: 1 }
    }

    /// Sends `op` with its arguments; returns the whole response object.
    fn call(&mut self, mut req: Value) -> Value {
        req["version"] = json!(1);
        req["id"] = json!(self.next_id);
        self.next_id += 1;
        self.writer.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a response line");
        let resp: Value = serde_json::from_str(&line).expect("a JSON response");
        assert_eq!(resp["id"], req["id"], "{resp}");
        resp
    }

    /// As [`Client::call`], asserting success; returns the result.
    fn ok(&mut self, req: Value) -> Value {
        let resp = self.call(req.clone());
        assert_eq!(resp["ok"], true, "{req} failed: {resp}");
        resp["result"].clone()
    }
}

fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ping(from: &Netns, to: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &from.0, "ping", "-c", "2", "-i", "0.2", "-W", "2", to])
        .output()
        .expect("ping")
        .status
        .success()
}

/// `(ifindex, MAC)` of `ifname` in `ns`, from `ip -o link show`.
fn link(ns: &Netns, ifname: &str) -> (String, String) {
    let out = ns.ip_stdout(&["-o", "link", "show", "dev", ifname]);
    let index = out.split(':').next().unwrap().trim().to_string();
    let mac = out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).expect("a MAC").to_string();
    (index, mac)
}

fn link_exists(ns: &str, ifname: &str) -> bool {
    netns::ip_output(&["-n", ns, "link", "show", "dev", ifname]).status.success()
}

fn tap(name: &str, ifname: &str, ns: &Netns) -> String {
    format!(
        "[[port]]\nname = \"{name}\"\nkind = \"tap\"\nifname = \"{ifname}\"\nnetwork = \"lan\"\nnetns = \"{}\"\n\n",
        ns.0
    )
}

fn fdb_macs(c: &mut Client) -> Vec<(String, String)> {
    let rows = c.ok(json!({"op": "fdb_show", "network": "lan"}));
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["mac"].as_str().unwrap().to_string(), r["port"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn live_empty_vswitchd_configured_over_the_socket_keeps_ports_across_applies() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let pid = std::process::id();
    let sw = Netns::create(&format!("vcl{pid}s"));
    let hosts: Vec<Netns> = (1..=3).map(|i| Netns::create(&format!("vcl{pid}h{i}"))).collect();
    for h in &hosts {
        h.disable_ipv6();
    }
    let taps: Vec<String> = (1..=3).map(|i| format!("vcl{pid}t{i}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let socket: PathBuf = dir.path().join("run/vswitchd.sock");
    let sock_arg = socket.display().to_string();

    let mut d = Daemon::spawn_in(&sw, ["run", "--socket", &sock_arg]);
    assert!(eventually(Duration::from_secs(5), || UnixStream::connect(&socket).is_ok()), "no control socket");
    let mut c = Client::connect(&socket);
    let hello = c.ok(json!({"op": "hello"}));
    assert_eq!((hello["generation"].as_u64(), hello["protocol_version"].as_u64()), (Some(0), Some(1)), "{hello}");
    assert!(c.ok(json!({"op": "port_ls"})).as_array().unwrap().is_empty(), "started empty");

    // A second vswitchd on the same socket is refused before it touches anything.
    let out = Daemon::spawn_in(&sw, ["run", "--socket", &sock_arg]).wait(Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another vswitchd"), "{out:?}");

    // Generation 1: two taps, moved into two container namespaces.
    let head = "[switch]\nworkers = 2\npoll_idle_us = 100\n\n[[network]]\nname = \"lan\"\n\n";
    let two = format!("{head}{}{}", tap("t1", &taps[0], &hosts[0]), tap("t2", &taps[1], &hosts[1]));
    let r = c.ok(json!({"op": "apply", "toml": two, "origin": "two.toml", "expect_generation": 0}));
    assert_eq!(r["generation"], 1, "{r}");
    assert_eq!(r["summary"]["ports_added"], json!(["t1", "t2"]), "{r}");
    for (i, h) in hosts.iter().enumerate() {
        assert!(link_exists(&h.0, &taps[i]) || i == 2, "tap {} not in {}", taps[i], h.0);
    }
    hosts[0].ip(&["addr", "add", "10.78.0.1/24", "dev", &taps[0]]);
    hosts[1].ip(&["addr", "add", "10.78.0.2/24", "dev", &taps[1]]);
    assert!(ping(&hosts[0], "10.78.0.2"), "ping h1 → h2 after the first apply");
    let (index1, mac1) = link(&hosts[0], &taps[0]);
    let (index2, mac2) = link(&hosts[1], &taps[1]);
    let learned = fdb_macs(&mut c);
    assert!(
        learned.contains(&(mac1.clone(), "t1".into())) && learned.contains(&(mac2.clone(), "t2".into())),
        "{learned:?}"
    );

    // Generation 2: a third tap. The first two are untouched: same interfaces, addresses still on them, their MAC
    // entries still there before any new traffic.
    let three = format!("{two}{}", tap("t3", &taps[2], &hosts[2]));
    let r = c.ok(json!({"op": "apply", "toml": three, "origin": "three.toml", "expect_generation": 1}));
    assert_eq!(r["generation"], 2, "{r}");
    assert_eq!(r["summary"]["ports_added"], json!(["t3"]), "{r}");
    assert_eq!(r["summary"]["ports_unchanged"], json!(["t1", "t2"]), "{r}");
    assert_eq!(r["summary"]["fdb_entries_flushed"], 0, "{r}");
    println!("apply adding t3: forwarding paused {} µs", r["summary"]["pause_us"]);
    let after = fdb_macs(&mut c);
    assert!(after.contains(&(mac1.clone(), "t1".into())) && after.contains(&(mac2.clone(), "t2".into())), "{after:?}");
    assert_eq!(link(&hosts[0], &taps[0]).0, index1, "t1's tap was not recreated");
    assert_eq!(link(&hosts[1], &taps[1]).0, index2, "t2's tap was not recreated");
    assert!(hosts[0].ip_stdout(&["-o", "addr", "show", "dev", &taps[0]]).contains("10.78.0.1/24"));
    assert!(ping(&hosts[0], "10.78.0.2"), "ping h1 → h2 after adding t3");
    assert!(link_exists(&hosts[2].0, &taps[2]), "t3 in h3");
    hosts[2].ip(&["addr", "add", "10.78.0.3/24", "dev", &taps[2]]);
    assert!(ping(&hosts[2], "10.78.0.1"), "ping h3 → h1 through the new port");

    // An apply with a port that cannot be opened: a fourth tap, then an AF_PACKET port on an interface that does
    // not exist. Per-port outcome: the apply goes through, the bad port is reported failed (and retried), the
    // fourth tap comes up, the others are untouched.
    let t4 = format!("vcl{pid}t4");
    let bad = format!(
        "{three}[[port]]\nname = \"t4\"\nkind = \"tap\"\nifname = \"{t4}\"\nnetwork = \"lan\"\n\n\
         [[port]]\nname = \"ghost\"\nkind = \"afpacket\"\nifname = \"vcl{pid}nx\"\nnetwork = \"lan\"\n"
    );
    let r = c.ok(json!({"op": "apply", "toml": bad, "origin": "bad.toml"}));
    assert_eq!(r["generation"], 3, "{r}");
    assert_eq!(r["summary"]["ports_failed"][0]["port"], "ghost", "{r}");
    assert!(r["summary"]["ports_failed"][0]["error"].as_str().unwrap().contains("port ghost"), "{r}");
    assert!(link_exists(&sw.0, &t4), "the fourth tap came up");
    let ports = c.ok(json!({"op": "port_ls"}));
    let ghost = ports.as_array().unwrap().iter().find(|p| p["name"] == "ghost").expect("ghost listed").clone();
    assert_eq!(ghost["state"], "failed", "{ghost}");
    assert!(ghost["error"].as_str().unwrap().contains(&format!("vcl{pid}nx")), "{ghost}");
    assert_eq!(ports.as_array().unwrap().len(), 5);
    assert_eq!(link(&hosts[0], &taps[0]).0, index1);
    assert!(ping(&hosts[1], "10.78.0.1"), "ping h2 → h1 with a port down");
    let stats = c.ok(json!({"op": "stats"}));
    assert!(stats["report"]["ports"]["t1"]["pipeline"]["forwarded"].as_u64().unwrap() >= 4, "{stats}");
    drop(c);

    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!socket.exists(), "the socket is removed at exit");
    // The taps are persistent: they outlive vswitchd (a restart re-adopts them); the namespaces take them away.
    assert_eq!(link(&hosts[0], &taps[0]).0, index1, "t1's tap kept at exit");
    assert_eq!(link(&hosts[1], &taps[1]).0, index2, "t2's tap kept at exit");
}
