//! Restarting `vswitchd run` without taking the containers down (root; skips with a message otherwise).
//!
//! The world: vswitchd in a namespace of its own (`vrs{pid}s`); two "containers" (`vrs{pid}c1`, `vrs{pid}c2`) on
//! taps the switch moves into them (network `lan`, 10.80.0.0/24, gateway 10.80.0.1, masquerade); an "external"
//! host (`vrs{pid}x`, 203.0.113.1/24) behind an AF_PACKET uplink on a veth (the switch's 203.0.113.2/24).
//! Namespaces are deleted by exact name when their guards drop (on failure too), which deletes every interface
//! in them.
//!
//! A TCP stream runs from c1 to the external host through masquerade, a byte pattern checked by the receiver.
//! vswitchd is killed (`SIGKILL`) and started again with the same configuration: c1's interface keeps its index,
//! MAC and address throughout, and the same TCP connection carries data again within 2 s of the restart. The
//! same after a clean SIGTERM stop and start. A second connection runs the other way (a download from the
//! external host): after the restart only the external host's retransmissions reach the switch, so it goes on
//! only because the state snapshot restored its connection and NAT binding. Then a worker panic injected through
//! the test hook (`VSWITCHD_TEST_HOOKS=1`, SIGUSR1): counted, and both connections go on. At the end, with `--cleanup`, nothing is left behind.
//!
//! One container's namespace deleted while vswitchd is down: after the restart the other container forwards,
//! the missing one is reported failed (with the reason) and comes up by itself once the namespace exists again.
//! A tap of the configured name that vswitchd did not make is never adopted.
//!
//! Changes in place: a tap's MTU under a 10 ms ping; a multi-queue tap's queue count (the same tap re-adopted);
//! a namespace change that fails (the old tap kept, forwarding, the apply saying why) and one that works.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/netns.rs"]
mod netns;

use daemon::Daemon;
use netns::{skip_reason, Netns};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `(ifindex, MAC)` of `ifname` in `ns`, if it exists.
fn link(ns: &Netns, ifname: &str) -> Option<(String, String)> {
    let out = netns::ip_output(&["-n", &ns.0, "-o", "link", "show", "dev", ifname]);
    if !out.status.success() {
        return None;
    }
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let index = out.split(':').next()?.trim().to_string();
    let mac = out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1)?.to_string();
    Some((index, mac))
}

/// The interface is administratively up.
fn is_up(ns: &Netns, ifname: &str) -> bool {
    let out = netns::ip_output(&["-n", &ns.0, "-o", "link", "show", "dev", ifname]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split('<').nth(1).and_then(|f| f.split('>').next()).is_some_and(|flags| flags.split(',').any(|f| f == "UP"))
}

fn has_addr(ns: &Netns, ifname: &str, addr: &str) -> bool {
    ns.ip_stdout(&["-o", "addr", "show", "dev", ifname]).contains(addr)
}

/// The byte at offset `i` of the stream.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// Reads the pattern from `s`, counting bytes into `received` and setting `corrupt` on a wrong byte.
fn receive(mut s: TcpStream, received: &AtomicU64, corrupt: &AtomicBool) {
    let mut buf = [0u8; 4096];
    let mut at = 0u64;
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        if buf[..n].iter().enumerate().any(|(k, b)| *b != pattern(at + k as u64)) {
            corrupt.store(true, Relaxed);
        }
        at += n as u64;
        received.store(at, Relaxed);
    }
}

/// Writes the pattern to `s`, 512 bytes every 5 ms, until `stop`.
fn send(mut s: TcpStream, stop: &AtomicBool) {
    let mut at = 0u64;
    while !stop.load(Relaxed) {
        let chunk: Vec<u8> = (0..512).map(|k| pattern(at + k)).collect();
        if s.write_all(&chunk).is_err() {
            break;
        }
        at += chunk.len() as u64;
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One TCP connection from c1 to the external host, sending the pattern; the receiver counts and checks it.
struct Stream {
    received: Arc<AtomicU64>,
    corrupt: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Stream {
    /// A connection from `client` to `to` (in `server`); `upload`: the client sends the pattern and the server
    /// checks it, else the other way round (a download: after a restart only the server's retransmissions
    /// reach the switch, so the connection continues only if the switch restored its NAT binding).
    fn start(client: &Netns, server: &Netns, to: &'static str, upload: bool) -> Stream {
        Stream::start_via(client, server, to, to, upload)
    }

    /// As [`Stream::start`], the server listening on `bind` and the client connecting to `to` (a published
    /// port: the switch translates one into the other).
    fn start_via(client: &Netns, server: &Netns, bind: &'static str, to: &'static str, upload: bool) -> Stream {
        let received = Arc::new(AtomicU64::new(0));
        let corrupt = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let listener = server.run(move || TcpListener::bind(bind).expect("bind the server"));
        let (r, c, st) = (Arc::clone(&received), Arc::clone(&corrupt), Arc::clone(&stop));
        let (r2, c2, st2) = (Arc::clone(&received), Arc::clone(&corrupt), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (s, _) = listener.accept().expect("accept");
            if upload {
                receive(s, &r, &c)
            } else {
                send(s, &st)
            }
        });
        client.spawn(move || {
            let s = TcpStream::connect_timeout(&to.parse().unwrap(), Duration::from_secs(5)).expect("connect");
            if upload {
                send(s, &st2)
            } else {
                receive(s, &r2, &c2)
            }
        });
        Stream { received, corrupt, stop }
    }

    fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }

    /// Waits until `since + limit` for more than `than` bytes; returns when that was, from `since`.
    fn grows_past_since(&self, than: u64, since: Instant, limit: Duration) -> Option<Duration> {
        let left = (since + limit).saturating_duration_since(Instant::now());
        eventually(left, || self.received() > than + 2048).then(|| since.elapsed())
    }

    /// Waits up to `limit` for more than `than` bytes; returns how long it took.
    fn grows_past(&self, than: u64, limit: Duration) -> Option<Duration> {
        self.grows_past_since(than, Instant::now(), limit)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// The byte counts of two streams once they have stopped moving (vswitchd is down): what was in flight is
/// drained first, then they must stay put for 200 ms.
fn stalled(a: &Stream, b: &Stream) -> (u64, u64) {
    std::thread::sleep(Duration::from_millis(300));
    let at = (a.received(), b.received());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!((a.received(), b.received()), at, "data moved while vswitchd was down");
    at
}

struct World {
    pid: String,
    sw: Netns,
    c1: Netns,
    c2: Netns,
    ext: Netns,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl World {
    fn tap(&self, c: usize) -> String {
        format!("vrs{}t{c}", self.pid)
    }

    fn socket(&self) -> String {
        self.dir.path().join("vswitchd.sock").display().to_string()
    }

    /// The world of test `tag` (one letter: tests run in parallel in one process).
    fn build(tag: &str) -> World {
        let pid = format!("{}{tag}", std::process::id());
        let sw = Netns::create(&format!("vrs{pid}s"));
        let (c1, c2, ext) = (
            Netns::create(&format!("vrs{pid}c1")),
            Netns::create(&format!("vrs{pid}c2")),
            Netns::create(&format!("vrs{pid}x")),
        );
        for ns in [&c1, &c2, &ext] {
            ns.disable_ipv6();
        }
        let (veth_sw, veth_ex) = (format!("vrs{pid}u"), format!("vrs{pid}e"));
        sw.ip(&["link", "add", &veth_sw, "type", "veth", "peer", "name", &veth_ex, "netns", &ext.0]);
        sw.ip(&["link", "set", "dev", &veth_sw, "up"]);
        ext.ip(&["addr", "add", "203.0.113.1/24", "dev", &veth_ex]);
        ext.ip(&["link", "set", "dev", &veth_ex, "up"]);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("switch.toml");
        let text = format!(
            "[switch]\npoll_idle_us = 100\n\n\
             [[network]]\nname = \"lan\"\nsubnet = \"10.80.0.0/24\"\ngateway = \"10.80.0.1\"\nmasquerade = true\n\n\
             [[port]]\nname = \"c1\"\nkind = \"tap\"\nifname = \"vrs{pid}t1\"\nnetns = \"{}\"\nnetwork = \"lan\"\n\n\
             [[port]]\nname = \"c2\"\nkind = \"tap\"\nifname = \"vrs{pid}t2\"\nnetns = \"{}\"\nnetwork = \"lan\"\n\n\
             [[port]]\nname = \"up\"\nkind = \"afpacket\"\nifname = \"{veth_sw}\"\naddress = \"203.0.113.2/24\"\n\n\
             [[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"203.0.113.1\"\n\n\
             [[publish]]\nport = \"up\"\nproto = \"tcp\"\nexternal_port = 8080\nto = \"10.80.0.2:8080\"\n",
            c1.0, c2.0
        );
        std::fs::write(&config, text).unwrap();
        World { pid, sw, c1, c2, ext, dir, config }
    }

    fn start(&self, extra: &[&str]) -> Daemon {
        let mut args = vec!["run", "--config", self.config.to_str().unwrap(), "--state-interval", "0.2", "--socket"];
        let socket = self.socket();
        args.push(&socket);
        args.extend_from_slice(extra);
        // The test hook (SIGUSR1 injects a worker panic) is on in every test's vswitchd.
        Daemon::spawn_in_env(&self.sw, args, &[("VSWITCHD_TEST_HOOKS", "1")])
    }

    /// vswitchd started for the first time: waits for both taps to appear in the containers, then gives them
    /// their addresses and routes.
    fn start_with_containers(&self) -> Daemon {
        let d = self.start(&[]);
        let (t1, t2) = (self.tap(1), self.tap(2));
        // Up, not only there: vswitchd moves a tap into its namespace and then sets it up, and a route via the
        // gateway cannot be added before (no prefix route on a down interface).
        let up = |ns: &Netns, tap: &str| link(ns, tap).is_some() && is_up(ns, tap);
        assert!(
            eventually(Duration::from_secs(5), || up(&self.c1, &t1) && up(&self.c2, &t2)),
            "taps did not appear, up"
        );
        self.configure_containers();
        d
    }

    /// Addresses and default routes in the containers (once: they live on the taps).
    fn configure_containers(&self) {
        for (c, ns) in [(1, &self.c1), (2, &self.c2)] {
            let tap = self.tap(c);
            ns.ip(&["addr", "add", &format!("10.80.0.{}/24", c + 1), "dev", &tap]);
            ns.ip(&["route", "add", "default", "via", "10.80.0.1"]);
        }
    }
}

/// One request on the control socket; the whole response.
fn control(socket: &str, op: &str) -> Option<serde_json::Value> {
    request(socket, serde_json::json!({"op": op}))
}

/// One request (`op` and its arguments) on the control socket; the whole response.
fn request(socket: &str, mut req: serde_json::Value) -> Option<serde_json::Value> {
    req["version"] = 1.into();
    req["id"] = 1.into();
    let s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    (&s).write_all(format!("{req}\n").as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// `(state, error)` of port `name` from `port_ls`.
fn port_state(socket: &str, name: &str) -> Option<(String, Option<String>)> {
    let r = control(socket, "port_ls")?;
    let p = r["result"].as_array()?.iter().find(|p| p["name"] == name)?.clone();
    Some((p["state"].as_str()?.to_string(), p["error"].as_str().map(str::to_string)))
}

fn ping_ok(from: &Netns, to: &str) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "exec", &from.0, "ping", "-c", "1", "-W", "1", to])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn wait_socket(path: &str) -> bool {
    eventually(Duration::from_secs(5), || Path::new(path).exists())
}

#[test]
fn live_kill_9_and_restart_keep_the_taps_and_the_masqueraded_tcp_connection() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let w = World::build("k");
    let (t1, t2) = (w.tap(1), w.tap(2));
    let mut d = w.start_with_containers();
    let before = link(&w.c1, &t1).unwrap();
    let before2 = link(&w.c2, &t2).unwrap();

    let stream = Stream::start(&w.c1, &w.ext, "203.0.113.1:7001", true);
    let download = Stream::start(&w.c1, &w.ext, "203.0.113.1:7002", false);
    assert!(stream.grows_past(0, Duration::from_secs(5)).is_some(), "the stream never started");
    assert!(download.grows_past(0, Duration::from_secs(5)).is_some(), "the download never started");
    // The connections are in the next periodic state snapshot (--state-interval 0.2).
    std::thread::sleep(Duration::from_millis(400));

    // kill -9: nothing runs at exit. The taps stay, with their index, MAC and address.
    d.signal(libc::SIGKILL);
    let _ = d.wait(Duration::from_secs(5));
    assert_eq!(link(&w.c1, &t1).as_ref(), Some(&before), "c1's interface survives kill -9");
    assert!(has_addr(&w.c1, &t1, "10.80.0.2/24"), "c1's address survives kill -9");
    // Nothing moves while the switch is down (so what follows the restart is the switch's doing).
    let (at_kill, down_at_kill) = stalled(&stream, &download);

    let mut d = w.start(&[]);
    let restarted = Instant::now();
    let took = stream.grows_past_since(at_kill, restarted, Duration::from_secs(2));
    assert!(took.is_some(), "the TCP connection did not carry data within 2 s of the restart (kill -9)");
    println!("after kill -9: data again {:?} after the restart", took.unwrap());
    let took = download.grows_past_since(down_at_kill, restarted, Duration::from_secs(2));
    assert!(took.is_some(), "the download did not go on within 2 s of the restart (kill -9): NAT binding lost?");
    println!("after kill -9: download again {:?} after the restart", took.unwrap());
    assert!(wait_socket(&w.socket()), "no control socket after the restart");
    assert_eq!(link(&w.c1, &t1).as_ref(), Some(&before), "c1's interface re-adopted, not recreated");
    assert_eq!(link(&w.c2, &t2).as_ref(), Some(&before2), "c2's interface re-adopted, not recreated");
    assert!(has_addr(&w.c1, &t1, "10.80.0.2/24"));

    // A clean stop and start: the same.
    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(link(&w.c1, &t1).as_ref(), Some(&before), "c1's interface survives a clean stop");
    let (at_stop, down_at_stop) = stalled(&stream, &download);
    let mut d = w.start(&["--cleanup"]);
    let restarted = Instant::now();
    let took = stream.grows_past_since(at_stop, restarted, Duration::from_secs(2));
    assert!(took.is_some(), "the TCP connection did not carry data within 2 s of the restart (SIGTERM)");
    println!("after SIGTERM: data again {:?} after the restart", took.unwrap());
    let took = download.grows_past_since(down_at_stop, restarted, Duration::from_secs(2));
    assert!(took.is_some(), "the download did not go on within 2 s of the restart (SIGTERM)");
    println!("after SIGTERM: download again {:?} after the restart", took.unwrap());
    assert_eq!(link(&w.c1, &t1).as_ref(), Some(&before));

    // A worker panics (the test hook): it recovers, the switch keeps running, both connections go on.
    let socket = w.socket();
    assert!(wait_socket(&socket));
    let (at_panic, down_at_panic) = (stream.received(), download.received());
    d.signal(libc::SIGUSR1);
    let restarts = || control(&socket, "stats").map(|r| r["result"]["report"]["worker_restarts"].clone());
    assert!(eventually(Duration::from_secs(2), || restarts() == Some(1.into())), "not counted: {:?}", restarts());
    assert!(stream.grows_past(at_panic, Duration::from_secs(2)).is_some(), "the stream stopped after a worker panic");
    assert!(download.grows_past(down_at_panic, Duration::from_secs(2)).is_some(), "the download stopped");
    assert!(!stream.corrupt.load(Relaxed) && !download.corrupt.load(Relaxed), "bytes out of pattern");
    drop(download);
    drop(stream);

    // --cleanup: the taps go at exit; nothing of ours is left in any namespace.
    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(link(&w.c1, &t1).is_none() && link(&w.c2, &t2).is_none(), "taps left behind after --cleanup");
    assert!(netns::ip_output(&["link", "show", "dev", &t1]).status.code() != Some(0), "no tap in the root namespace");
}

#[test]
fn live_a_missing_namespace_fails_one_port_the_other_forwards_and_it_comes_back_by_itself() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let w = World::build("m");
    let t2 = w.tap(2);
    let mut d = w.start_with_containers();
    assert!(ping_ok(&w.c1, "203.0.113.1"), "c1 → external through masquerade");
    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    // c2's namespace goes (and its tap with it) while vswitchd is down (its guard deletes it again at the end).
    let c2_name = w.c2.0.clone();
    netns::ip(&["netns", "delete", &c2_name]);
    let mut d = w.start(&[]);
    let t = Instant::now();
    assert!(eventually(Duration::from_secs(2), || ping_ok(&w.c1, "203.0.113.1")), "c1 does not forward");
    println!("c1 forwards {:?} after the restart", t.elapsed());
    let socket = w.socket();
    assert!(wait_socket(&socket));
    let (state, error) = port_state(&socket, "c2").expect("c2 listed");
    assert_eq!(state, "failed");
    let error = error.expect("a reason");
    assert!(error.contains("port c2") && error.contains(&c2_name), "{error}");
    assert_eq!(port_state(&socket, "c1").unwrap().0, "up");

    // The namespace is back: the port comes up by itself (a new tap), and c2 forwards again.
    netns::ip(&["netns", "add", &c2_name]);
    w.c2.disable_ipv6();
    assert!(
        eventually(Duration::from_secs(8), || port_state(&socket, "c2").is_some_and(|(s, _)| s == "up")),
        "c2 did not come up: {:?}",
        port_state(&socket, "c2")
    );
    assert!(link(&w.c2, &t2).is_some(), "c2's tap is back in its namespace");
    w.c2.ip(&["addr", "add", "10.80.0.3/24", "dev", &t2]);
    assert!(eventually(Duration::from_secs(3), || ping_ok(&w.c2, "10.80.0.2")), "c2 → c1 after coming back");
    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn live_a_tap_that_is_not_ours_is_never_adopted() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let w = World::build("n");
    let t1 = w.tap(1);
    // Someone else's tap, with the configured name, in c1's namespace.
    w.c1.ip(&["tuntap", "add", "dev", &t1, "mode", "tap"]);
    let theirs = link(&w.c1, &t1).unwrap();
    let mut d = w.start(&[]);
    let socket = w.socket();
    assert!(wait_socket(&socket));
    assert!(eventually(Duration::from_secs(3), || port_state(&socket, "c2").is_some_and(|(s, _)| s == "up")));
    let (state, error) = port_state(&socket, "c1").unwrap();
    assert_eq!(state, "failed");
    assert!(error.as_deref().unwrap_or("").contains("is not a free vswitchd tap"), "{error:?}");
    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(link(&w.c1, &t1), Some(theirs), "their tap untouched");
    assert!(!w.c1.ip_stdout(&["-d", "link", "show", "dev", &t1]).contains("vswitchd"), "not marked as ours");
}

#[test]
fn live_a_tap_mtu_changes_in_place_without_losing_a_ping() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let w = World::build("u");
    let t1 = w.tap(1);
    let mut d = w.start_with_containers();
    let socket = w.socket();
    assert!(wait_socket(&socket));
    assert!(ping_ok(&w.c2, "10.80.0.2"), "c2 → c1");
    let before = link(&w.c1, &t1).unwrap();

    // c2 pings c1 every 10 ms for 2 s; half way, c1's MTU changes.
    let ping = std::process::Command::new("ip")
        .args(["netns", "exec", &w.c2.0, "ping", "-q", "-i", "0.01", "-c", "200", "-W", "1", "10.80.0.2"])
        .output();
    let pinger = std::thread::spawn(move || ping);
    std::thread::sleep(Duration::from_millis(800));
    let text = std::fs::read_to_string(&w.config).unwrap().replacen(
        &format!("ifname = \"{t1}\""),
        &format!("ifname = \"{t1}\"\nmtu = 1400"),
        1,
    );
    let r = request(&socket, serde_json::json!({"op": "apply", "toml": text, "origin": "mtu.toml"})).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let summary = &r["result"]["summary"];
    assert_eq!(summary["ports_reattached"], serde_json::json!(["c1"]), "changed in place, not reopened: {r}");
    assert!(summary["ports_reopened"].as_array().unwrap().is_empty(), "{r}");
    let out = pinger.join().unwrap().expect("ping");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("200 received") && stdout.contains(" 0% packet loss"), "{stdout}");
    assert_eq!(link(&w.c1, &t1), Some(before), "same interface index and MAC");
    assert!(has_addr(&w.c1, &t1, "10.80.0.2/24"), "address kept");
    assert!(w.c1.ip_stdout(&["link", "show", "dev", &t1]).contains("mtu 1400"), "MTU changed");
    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A tap moved to a namespace that does not exist: the apply goes through with c1 reported as failed to change
/// (the error names the namespace), and c1 keeps its tap, index and address, and forwards. Moved to one that
/// exists: the tap is created there and the old one deleted.
#[test]
fn live_a_namespace_change_that_fails_keeps_the_old_tap_forwarding() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let w = World::build("n");
    let t1 = w.tap(1);
    let mut d = w.start_with_containers();
    let socket = w.socket();
    assert!(wait_socket(&socket));
    assert!(ping_ok(&w.c2, "10.80.0.2"), "c2 → c1");
    let before = link(&w.c1, &t1).unwrap();
    let config = std::fs::read_to_string(&w.config).unwrap();
    let moved_to = |ns: &str| config.replacen(&format!("netns = \"{}\"", w.c1.0), &format!("netns = \"{ns}\""), 1);

    let gone = format!("vrs{}g", w.pid);
    let r = request(&socket, serde_json::json!({"op": "apply", "toml": moved_to(&gone), "origin": "gone.toml"}));
    let r = r.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let summary = &r["result"]["summary"];
    assert_eq!(summary["ports_change_failed"][0]["port"], "c1", "{r}");
    assert!(summary["ports_change_failed"][0]["error"].as_str().unwrap().contains(&gone), "{r}");
    assert!(summary["ports_reopened"].as_array().unwrap().is_empty(), "{r}");
    assert!(summary["ports_failed"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(link(&w.c1, &t1), Some(before.clone()), "the same tap, untouched");
    assert!(has_addr(&w.c1, &t1, "10.80.0.2/24"));
    assert!(ping_ok(&w.c2, "10.80.0.2"), "c2 → c1 on the old tap");
    assert_eq!(port_state(&socket, "c1"), Some(("up".to_string(), None)));
    let running = control(&socket, "get_config").unwrap();
    let c1 =
        running["result"]["config"]["port"].as_array().unwrap().iter().find(|p| p["name"] == "c1").unwrap().clone();
    assert_eq!(c1["netns"], w.c1.0.as_str(), "the running configuration keeps the old namespace: {c1}");

    // A namespace that exists: a new tap there (opened before the old one closed), the old one deleted.
    let c3 = Netns::create(&format!("vrs{}c3", w.pid));
    c3.disable_ipv6();
    let r = request(&socket, serde_json::json!({"op": "apply", "toml": moved_to(&c3.0), "origin": "c3.toml"}));
    let r = r.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["summary"]["ports_reopened"], serde_json::json!(["c1"]), "{r}");
    assert!(r["result"]["summary"]["ports_change_failed"].as_array().unwrap().is_empty(), "{r}");
    assert!(link(&c3, &t1).is_some(), "the tap is in c3");
    assert!(eventually(Duration::from_secs(2), || link(&w.c1, &t1).is_none()), "the old tap is deleted");
    c3.ip(&["addr", "add", "10.80.0.2/24", "dev", &t1]);
    // From c3 (a new MAC: c2's neighbour entry for 10.80.0.2 still has the old tap's).
    assert!(eventually(Duration::from_secs(3), || ping_ok(&c3, "10.80.0.3")), "c1 in c3 → c2");
    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A multi-queue tap whose queue count changes is reopened on the same tap (closed without deleting it, then
/// re-adopted with the new count): same index, MAC and address. (From one queue to several the tap's kind
/// changes: it is created again.) The counts, 3 then 4, differ from the default (one per worker) whether the
/// suite runs with one worker or with `VSWITCH_TEST_WORKERS=2`.
#[test]
fn live_a_tap_queue_count_change_reopens_the_same_tap() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let w = World::build("q");
    let t1 = w.tap(1);
    let mut d = w.start_with_containers();
    let socket = w.socket();
    assert!(wait_socket(&socket));
    let config = std::fs::read_to_string(&w.config).unwrap();
    let queues =
        |n: u32| config.replacen(&format!("ifname = \"{t1}\""), &format!("ifname = \"{t1}\"\nqueues = {n}"), 1);
    let apply = |text: String| {
        let r = request(&socket, serde_json::json!({"op": "apply", "toml": text, "origin": "q.toml"})).unwrap();
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["result"]["summary"]["ports_reopened"], serde_json::json!(["c1"]), "{r}");
        assert!(r["result"]["summary"]["ports_change_failed"].as_array().unwrap().is_empty(), "{r}");
    };
    apply(queues(3));
    assert!(eventually(Duration::from_secs(2), || link(&w.c1, &t1).is_some() && is_up(&w.c1, &t1)));
    if !has_addr(&w.c1, &t1, "10.80.0.2/24") {
        // Created again (single- to multi-queue): the container's address is set again.
        w.c1.ip(&["addr", "add", "10.80.0.2/24", "dev", &t1]);
        w.c1.ip(&["route", "replace", "default", "via", "10.80.0.1"]);
    }
    assert!(eventually(Duration::from_secs(3), || ping_ok(&w.c1, "10.80.0.3")), "c1 → c2 on 3 queues");
    let before = link(&w.c1, &t1).unwrap();
    apply(queues(4));
    assert_eq!(link(&w.c1, &t1), Some(before), "the same tap: index and MAC");
    assert!(has_addr(&w.c1, &t1, "10.80.0.2/24"), "address kept");
    assert!(w.c1.ip_stdout(&["-d", "link", "show", "dev", &t1]).contains("numqueues 4"), "4 queues attached");
    assert!(ping_ok(&w.c2, "10.80.0.2"), "c2 → c1 on 4 queues");
    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn live_adding_an_unrelated_network_flushes_no_connection_and_a_published_stream_goes_on() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let w = World::build("p");

    let mut d = w.start_with_containers();
    let socket = w.socket();
    assert!(wait_socket(&socket));
    // The external host streams to c1 through the published port.
    let stream = Stream::start_via(&w.ext, &w.c1, "0.0.0.0:8080", "203.0.113.2:8080", true);
    assert!(stream.grows_past(0, Duration::from_secs(5)).is_some(), "the published stream never started");

    // A network with a gateway of its own (a new router interface: the router is rebuilt).
    let text = std::fs::read_to_string(&w.config).unwrap()
        + "\n[[network]]\nname = \"other\"\nsubnet = \"10.81.0.0/24\"\ngateway = \"10.81.0.1\"\n";
    let at = stream.received();
    let r = request(&socket, serde_json::json!({"op": "apply", "toml": text, "origin": "more.toml"})).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let summary = &r["result"]["summary"];
    assert_eq!(summary["networks_added"], serde_json::json!(["other"]), "{r}");
    assert_eq!(summary["connections_flushed"], 0, "{r}");
    let took = stream.grows_past(at, Duration::from_millis(500));
    assert!(took.is_some(), "the stream stalled after the apply");
    println!("published stream: data again {:?} after the apply", took.unwrap());
    let conns = control(&socket, "conntrack_ls").unwrap();
    assert!(conns.to_string().contains("dnat"), "the published connection is still tracked: {conns}");
    assert!(!stream.corrupt.load(Relaxed));
    drop(stream);
    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The XDP program attached to `ifname` in `ns`, from `ip -j link show`.
#[cfg(feature = "afxdp")]
fn xdp_prog(ns: &Netns, ifname: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(&ns.ip_stdout(&["-j", "link", "show", "dev", ifname])).ok()?;
    v[0]["xdp"]["prog"]["id"].as_u64()
}

/// AF_XDP: the program a killed vswitchd left attached is recognised as ours and replaced at restart, so the
/// restarted vswitchd detaches its own at a clean stop and nothing is left on the interface.
#[cfg(feature = "afxdp")]
#[test]
fn live_a_stale_xdp_program_of_ours_is_replaced_and_nothing_is_left() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let pid = std::process::id();
    let sw = Netns::create(&format!("vrs{pid}xs"));
    let ext = Netns::create(&format!("vrs{pid}xx"));
    let (u, e) = (format!("vrs{pid}xu"), format!("vrs{pid}xe"));
    sw.ip(&["link", "add", &u, "type", "veth", "peer", "name", &e, "netns", &ext.0]);
    sw.ip(&["link", "set", "dev", &u, "up"]);
    ext.ip(&["link", "set", "dev", &e, "up"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switch.toml");
    std::fs::write(
        &config,
        format!(
            "[[network]]\nname = \"lan\"\n\n[[port]]\nname = \"up\"\nkind = \"afxdp\"\nmode = \"generic\"\n\
             ifname = \"{u}\"\nnetwork = \"lan\"\n\n[[port]]\nname = \"t\"\nkind = \"tap\"\nifname = \"vrs{pid}xt\"\nnetwork = \"lan\"\n"
        ),
    )
    .unwrap();
    let socket = dir.path().join("vswitchd.sock").display().to_string();
    let args = ["run", "--config", config.to_str().unwrap(), "--socket", &socket];
    let mut d = Daemon::spawn_in(&sw, args);
    assert!(eventually(Duration::from_secs(5), || xdp_prog(&sw, &u).is_some()), "no XDP program attached");
    let first = xdp_prog(&sw, &u).unwrap();
    // vswitchd records the program as its own right after the open (a kill before that leaves one it will not
    // recognise: the window is the open itself).
    let record = dir.path().join("vswitchd.xdp-programs.json");
    assert!(eventually(Duration::from_secs(5), || std::fs::read_to_string(&record)
        .is_ok_and(|r| r.contains(&first.to_string()))));
    d.signal(libc::SIGKILL);
    let _ = d.wait(Duration::from_secs(5));
    assert_eq!(xdp_prog(&sw, &u), Some(first), "kill -9 leaves the program attached");

    let mut d = Daemon::spawn_in(&sw, args);
    assert!(
        eventually(Duration::from_secs(5), || xdp_prog(&sw, &u).is_some_and(|id| id != first)),
        "the stale program was not replaced: {:?}",
        xdp_prog(&sw, &u)
    );
    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(xdp_prog(&sw, &u), None, "our program detached at the clean stop: nothing left");
}
