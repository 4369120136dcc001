//! `vswitch-agent` and `vswitchctl` against a real `vswitchd run --socket TMP/ctl.sock`, as root (the test skips
//! with a message otherwise).
//!
//! Topology (every name carries this process's PID; nothing is created in the root namespace):
//! - namespace `vsa{pid}sw`: vswitchd, started empty (`ip netns exec NS vswitchd run --socket …`; the Unix socket
//!   lives in a temporary directory, reachable from the root namespace), and one end (`vsu{pid}a`) of a veth;
//! - namespaces `vsa{pid}c1`, `vsa{pid}c2`: "containers"; the config's tap ports `c1`, `c2` are moved into them by
//!   vswitchd (`netns = …`), and get 10.77.0.2/24 and 10.77.0.3/24 with the gateway 10.77.0.1 as default route;
//! - namespace `vsa{pid}ex`: the "external" host, 203.0.113.1/24 on the other end of the veth (`vsu{pid}b`); the
//!   config's routed port `up` (kind `afpacket`) is the switch's 203.0.113.2/24 on the veth, and network `bridge`
//!   masquerades, so the containers reach the external host without it knowing a route back.
//!
//! The test pushes the config with `vswitch-agent --once`, pings (bridged, the gateway, routed with masquerade),
//! then checks the rows `vswitchctl port ls`, `fdb show`, `neigh show`, `conntrack ls`, `route show`, `network
//! ls` print as tables and as `--json`; then runs the agent in watch mode: an edit is applied, an invalid edit is
//! reported and `vswitchctl config show` shows the running configuration unchanged, and after vswitchd is killed
//! and started again the agent pushes the configuration again.
//!
//! Where vswitchd comes from: the binary in the same target directory as this test (`target/debug/vswitchd`,
//! built by `cargo test --workspace`); when it is not there the test builds it with
//! `cargo build -p dataplane --bin vswitchd` first. Every process the test starts is ended by its PID, every
//! namespace deleted by its exact name (Drop guards, on failure too).

#[path = "../../dataplane/tests/common/netns.rs"]
mod netns;

use netns::{skip_reason, Netns};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_vswitch-agent");
const CTL: &str = env!("CARGO_BIN_EXE_vswitchctl");
const WAIT: Duration = Duration::from_secs(15);

/// The vswitchd binary next to this test's target directory, built if missing.
fn vswitchd_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/PROFILE/deps/live-HASH → target/PROFILE
    let profile_dir = exe.parent().and_then(Path::parent).expect("test binary in target/PROFILE/deps");
    let bin = profile_dir.join("vswitchd");
    if !bin.exists() {
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(other) => other.to_string(),
        };
        let target_dir = profile_dir.parent().unwrap();
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", "dataplane", "--bin", "vswitchd", "--profile", &profile, "--target-dir"])
            .arg(target_dir)
            .status()
            .expect("run cargo build")
            .success();
        assert!(ok && bin.exists(), "could not build {}", bin.display());
    }
    bin
}

/// A child process ended (SIGTERM, then SIGKILL) by its PID when dropped.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Sends `sig` to this process.
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the PID of a child this test started and has not yet waited for.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill {} {}", self.name, self.pid());
    }

    /// SIGTERM, then waits up to 5 s (SIGKILL after that).
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// vswitchd in namespace `ns`, serving `socket`, its output in `log`.
fn start_vswitchd(ns: &Netns, socket: &Path, log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(vswitchd_binary())
        .args(["run", "--socket"])
        .arg(socket)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start vswitchd");
    // `ip netns exec` execs the command in place: the child's PID is vswitchd's.
    let p = Proc { child, name: "vswitchd" };
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if ctl(socket, &["version"]).status.success() {
            return p;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("vswitchd did not answer on {}", socket.display());
}

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(CTL).arg("--socket").arg(socket).args(args).output().expect("run vswitchctl")
}

/// `vswitchctl ARGS`, which must succeed; its stdout.
fn ctl_ok(socket: &Path, args: &[&str]) -> String {
    let out = ctl(socket, args);
    assert!(out.status.success(), "vswitchctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn ctl_json(socket: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ctl_ok(socket, &all)).expect("vswitchctl --json prints JSON")
}

/// Waits until `f` returns true (panics with `what` after [`WAIT`]).
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn ping(ns: &Netns, ip: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &ns.0, "ping", "-c", "1", "-W", "1", ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The MAC of `ifname` in `ns`.
fn mac_of(ns: &Netns, ifname: &str) -> String {
    let out = ns.ip_stdout(&["-j", "link", "show", "dev", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

/// Gives the tap `ifname` in container `ns` its address and default route, once vswitchd moved it there.
fn configure_container(ns: &Netns, ifname: &str, addr: &str) {
    wait_until(&format!("tap {ifname} in {}", ns.0), || {
        netns::ip_output(&["-n", &ns.0, "link", "show", "dev", ifname]).status.success()
    });
    ns.ip(&["addr", "add", addr, "dev", ifname]);
    ns.ip(&["link", "set", "dev", ifname, "up"]);
    ns.ip(&["route", "add", "default", "via", "10.77.0.1"]);
}

fn config(pid: u32, ns_c1: &str, ns_c2: &str, extra: &str) -> String {
    format!(
        r#"# vswitch-agent live test
[[network]]
name = "bridge"
subnet = "10.77.0.0/24"
gateway = "10.77.0.1"
masquerade = true

[[port]]
name = "c1"
kind = "tap"
ifname = "vsc{pid}a"
network = "bridge"
netns = "{ns_c1}"

[[port]]
name = "c2"
kind = "tap"
ifname = "vsc{pid}b"
network = "bridge"
netns = "{ns_c2}"

[[port]]
name = "up"
kind = "afpacket"
ifname = "vsu{pid}a"
address = "203.0.113.2/24"

[[route]]
prefix = "0.0.0.0/0"
via = "203.0.113.1"
{extra}"#
    )
}

/// The agent in watch mode; its output is collected by threads.
struct WatchingAgent {
    /// Ended by its PID when the agent is dropped.
    _proc: Proc,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl WatchingAgent {
    fn start(cfg: &Path, socket: &Path) -> WatchingAgent {
        let mut child = Command::new(AGENT)
            .arg("--config")
            .arg(cfg)
            .arg("--socket")
            .arg(socket)
            .args(["--poll-ms", "50", "--settle-ms", "200", "--check-ms", "200"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vswitch-agent");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let readers: [Box<dyn Read + Send>; 2] =
            [Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
        for mut r in readers {
            let output = std::sync::Arc::clone(&output);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        WatchingAgent { _proc: Proc { child, name: "vswitch-agent" }, output }
    }

    fn wait_output(&self, needle: &str) {
        wait_until(&format!("agent output {needle:?}"), || self.output.lock().unwrap().contains(needle));
    }
}

#[test]
fn agent_and_ctl_drive_a_real_vswitchd() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping the control live test: {why}");
        return;
    }
    let pid = std::process::id();
    let ns_sw = Netns::create(&format!("vsa{pid}sw"));
    let ns_c1 = Netns::create(&format!("vsa{pid}c1"));
    let ns_c2 = Netns::create(&format!("vsa{pid}c2"));
    let ns_ex = Netns::create(&format!("vsa{pid}ex"));
    for ns in [&ns_sw, &ns_c1, &ns_c2, &ns_ex] {
        ns.disable_ipv6();
    }
    let (veth_sw, veth_ex) = (format!("vsu{pid}a"), format!("vsu{pid}b"));
    ns_sw.ip(&["link", "add", &veth_sw, "type", "veth", "peer", "name", &veth_ex, "netns", &ns_ex.0]);
    ns_sw.ip(&["link", "set", "dev", &veth_sw, "up"]);
    ns_ex.ip(&["addr", "add", "203.0.113.1/24", "dev", &veth_ex]);
    ns_ex.ip(&["link", "set", "dev", &veth_ex, "up"]);

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let cfg_path = dir.path().join("switch.toml");
    let text = config(pid, &ns_c1.0, &ns_c2.0, "");
    std::fs::write(&cfg_path, &text).unwrap();
    let mut vswitchd = start_vswitchd(&ns_sw, &socket, &dir.path().join("vswitchd-1.log"));

    // Push with --once: the plan, then the apply.
    let out =
        Command::new(AGENT).arg("--config").arg(&cfg_path).arg("--socket").arg(&socket).arg("--once").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "agent --once: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("+ network bridge: subnet=10.77.0.0/24, gateway=10.77.0.1, masquerade=true\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("+ port up: kind=afpacket, ifname={veth_sw}, address=203.0.113.2/24\n")),
        "{stdout}"
    );
    assert!(stdout.contains("applied 5 change(s): generation 1"), "{stdout}");

    let (tap1, tap2) = (format!("vsc{pid}a"), format!("vsc{pid}b"));
    configure_container(&ns_c1, &tap1, "10.77.0.2/24");
    configure_container(&ns_c2, &tap2, "10.77.0.3/24");
    for (what, ns, ip) in [
        ("c1 → c2 (bridged)", &ns_c1, "10.77.0.3"),
        ("c1 → gateway", &ns_c1, "10.77.0.1"),
        ("c1 → external host (routed, masqueraded)", &ns_c1, "203.0.113.1"),
    ] {
        wait_until(what, || ping(ns, ip));
    }

    // port ls: the three ports with their attachment, and traffic counted.
    let ports = ctl_ok(&socket, &["port", "ls"]);
    let lines: Vec<&str> = ports.lines().collect();
    assert!(lines[0].starts_with("NAME  KIND      IFNAME"), "{ports}");
    assert_eq!(lines.len(), 4, "{ports}");
    assert!(lines[1].starts_with(&format!("c1    tap       {tap1}")) && lines[1].contains("network bridge"), "{ports}");
    assert!(
        lines[3].starts_with(&format!("up    afpacket  {veth_sw}")) && lines[3].contains("routed 203.0.113.2/24"),
        "{ports}"
    );
    let json = ctl_json(&socket, &["port", "ls"]);
    let names: Vec<&str> = json.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["c1", "c2", "up"]);
    assert!(json[0]["io"]["rx_packets"].as_u64().unwrap() > 0, "{json}");

    // fdb show: c1's and c2's MACs learned on their ports.
    let mac1 = mac_of(&ns_c1, &tap1);
    let fdb = ctl_ok(&socket, &["fdb", "show", "bridge"]);
    assert!(fdb.starts_with("NETWORK  MAC"), "{fdb}");
    assert!(fdb.lines().any(|l| l.starts_with(&format!("bridge   {mac1}  c1"))), "{mac1} on c1:\n{fdb}");
    let json = ctl_json(&socket, &["fdb", "show"]);
    assert!(json.as_array().unwrap().iter().any(|r| r["mac"] == mac1.as_str() && r["port"] == "c1"), "{json}");

    // neigh show: the external host resolved on the routed port.
    let ext_mac = mac_of(&ns_ex, &veth_ex);
    let neigh = ctl_ok(&socket, &["neigh", "show"]);
    assert!(neigh.starts_with("INTERFACE"), "{neigh}");
    assert!(neigh.lines().any(|l| l.contains("203.0.113.1") && l.contains(&ext_mac)), "{ext_mac}:\n{neigh}");
    let json = ctl_json(&socket, &["neigh", "show"]);
    assert!(
        json.as_array().unwrap().iter().any(|n| n["ip"] == "203.0.113.1" && n["mac"] == ext_mac.as_str()),
        "{json}"
    );

    // conntrack ls: the ping to the external host, translated to the uplink's address.
    let ct = ctl_ok(&socket, &["conntrack", "ls"]);
    assert!(ct.starts_with("PROTO"), "{ct}");
    let row = ct.lines().find(|l| l.starts_with("icmp") && l.contains("10.77.0.2:") && l.contains("> 203.0.113.1:"));
    let row = row.unwrap_or_else(|| panic!("no icmp connection from 10.77.0.2 to 203.0.113.1:\n{ct}"));
    assert!(row.contains("203.0.113.2:") && row.contains("snat"), "{row}");
    let json = ctl_json(&socket, &["conntrack", "ls"]);
    let conns = json["connections"].as_array().unwrap();
    assert!(
        conns
            .iter()
            .any(|c| c["proto"] == "icmp" && c["orig"]["src"] == "10.77.0.2" && c["reply"]["dst"] == "203.0.113.2"),
        "{json}"
    );

    // stats and network inspect.
    let stats = ctl_ok(&socket, &["stats"]);
    assert!(stats.starts_with("COUNTER") && stats.lines().any(|l| l.starts_with("frames_in ")), "{stats}");
    assert!(ctl_json(&socket, &["stats"])["report"]["frames_in"].as_u64().unwrap() > 0);
    let inspect = ctl_ok(&socket, &["network", "inspect", "bridge"]);
    assert!(inspect.lines().any(|l| l.starts_with("masquerade") && l.ends_with("true")), "{inspect}");
    assert!(inspect.lines().any(|l| l.contains(&mac1) && l.contains("c1")), "{inspect}");

    // conntrack flush empties the table.
    let flushed = ctl_ok(&socket, &["conntrack", "flush"]);
    assert!(flushed.starts_with("flushed ") && !flushed.starts_with("flushed 0 "), "{flushed}");
    assert_eq!(ctl_json(&socket, &["conntrack", "ls"])["total"], 0);
    assert_eq!(ctl_json(&socket, &["conntrack", "flush"]), serde_json::json!({"removed": 0}));

    // trace: an ARP request from c1 for the gateway, run on a scratch copy of the switch.
    let arp = format!(
        "ffffffffffff {m} 0806 0001 0800 06 04 0001 {m} 0a4d0002 000000000000 0a4d0001",
        m = mac1.replace(':', "")
    );
    let trace = ctl_ok(&socket, &["trace", "c1", &arp]);
    assert!(trace.starts_with("frame on c1: ") && trace.contains("\nSTAGE "), "{trace}");
    let json = ctl_json(&socket, &["trace", "c1", &arp]);
    assert_eq!(json["port"], "c1");
    assert!(!json["stages"].as_array().unwrap().is_empty(), "{json}");

    // route show and network ls.
    let routes = ctl_ok(&socket, &["route", "show"]);
    assert!(
        routes.lines().any(|l| l.starts_with("0.0.0.0/0") && l.contains("203.0.113.1") && l.contains("static")),
        "{routes}"
    );
    let nets = ctl_ok(&socket, &["network", "ls"]);
    assert!(nets.lines().any(|l| l.starts_with("bridge") && l.contains("masquerade") && l.contains("c1,c2")), "{nets}");

    // Watch mode: an edit is applied.
    let agent = WatchingAgent::start(&cfg_path, &socket);
    agent.wait_output("in sync");
    let edited = config(pid, &ns_c1.0, &ns_c2.0, "\n[[network]]\nname = \"extra\"\n");
    let tmp = dir.path().join(".switch.toml.tmp");
    std::fs::write(&tmp, &edited).unwrap();
    std::fs::rename(&tmp, &cfg_path).unwrap();
    agent.wait_output("+ network extra");
    wait_until("network extra running", || ctl_ok(&socket, &["network", "ls"]).lines().any(|l| l.starts_with("extra")));
    let shown = ctl_ok(&socket, &["config", "show"]);
    assert!(shown.starts_with("# generation 2"), "{shown}");
    assert_eq!(
        vswitch_api::config::Config::parse(&shown, "shown").unwrap(),
        vswitch_api::config::Config::parse(&edited, "edited").unwrap()
    );
    assert!(ping(&ns_c1, "10.77.0.3"), "forwarding goes on across the apply");

    // An invalid edit: reported with file and line, the running configuration stays.
    std::fs::write(&cfg_path, edited.replace("masquerade = true", "masquerade = true\nmac_limit = 0")).unwrap();
    agent.wait_output(&format!("{}:7: network bridge: mac_limit", cfg_path.display()));
    agent.wait_output("the running configuration stays as it is");
    assert_eq!(ctl_ok(&socket, &["config", "show"]), shown);

    // vswitchd killed and started again (empty): the agent pushes the configuration again.
    std::fs::write(&cfg_path, &edited).unwrap();
    vswitchd.stop();
    let vswitchd2 = start_vswitchd(&ns_sw, &socket, &dir.path().join("vswitchd-2.log"));
    wait_until("the agent's re-push", || {
        ctl(&socket, &["config", "show"]).stdout.starts_with(b"# generation 1, from ")
    });
    let shown = ctl_ok(&socket, &["config", "show"]);
    assert_eq!(
        vswitch_api::config::Config::parse(&shown, "shown").unwrap(),
        vswitch_api::config::Config::parse(&edited, "edited").unwrap()
    );
    let names: Vec<String> = ctl_json(&socket, &["port", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["c1", "c2", "up"]);
    drop(agent);
    drop(vswitchd2);
}

/// 64 control connections that each sent half a request line and then nothing take every slot of a real
/// vswitchd; `vswitchctl port ls` is still answered within a second (it evicts the connection idle the longest).
#[test]
fn vswitchctl_answers_despite_64_half_line_clients() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping the control live test: {why}");
        return;
    }
    use std::io::Write;
    let ns_sw = Netns::create(&format!("vsa{}hl", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let _vswitchd = start_vswitchd(&ns_sw, &socket, &dir.path().join("vswitchd.log"));
    let _half: Vec<std::os::unix::net::UnixStream> = (0..64)
        .map(|_| {
            let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            s.write_all(br#"{"version":1,"id":1,"#).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        let t = Instant::now();
        ctl_ok(&socket, &["port", "ls"]);
        assert!(t.elapsed() < Duration::from_secs(1), "port ls took {:?}", t.elapsed());
    }
}
