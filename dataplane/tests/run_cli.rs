//! `vswitchd run` through its real command line: the errors that must stop it before it forwards (exit 2 for the
//! command line and configuration, 1 for ports, each naming the culprit, nothing left behind), and, as root, a
//! live run: vswitchd in a namespace of its own, two taps moved into two host namespaces, ping across, SIGTERM,
//! exit 0, counters, taps gone. Live tests skip with a message when not root.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/netns.rs"]
mod netns;

use daemon::Daemon;
use dataplane::port::IfName;
use netns::{skip_reason, Netns};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// An interface name the test made (valid by construction).
fn ifname(name: &str) -> IfName {
    IfName::new(name).expect("a valid interface name")
}

fn vswitchd(args: &[&str]) -> Output {
    let args = with_socket(args);
    let out = Command::new(env!("CARGO_BIN_EXE_vswitchd")).args(&args).output().expect("vswitchd runs");
    let _ = std::fs::remove_dir(socket_dir());
    out
}

/// This test process's directory for control sockets (vswitchd creates it and removes each socket at exit).
fn socket_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vswitchd-run-cli-{}", std::process::id()))
}

/// `args` with `--socket` set to a path of this test's own for `run` (tests run in parallel, and the default
/// socket is machine-wide).
fn with_socket(args: &[&str]) -> Vec<String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if args.first() == Some(&"run") && !args.contains(&"--socket") {
        let path = socket_dir().join(format!("{}.sock", N.fetch_add(1, Ordering::Relaxed)));
        v.extend(["--socket".to_string(), path.display().to_string()]);
        // The state snapshot is written next to the socket at exit: --cleanup deletes it (and the taps), so the
        // socket directory is left empty and removed.
        if !args.contains(&"--cleanup") {
            v.push("--cleanup".to_string());
        }
    }
    v
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn run_refuses_a_control_socket_path_that_is_not_a_socket_without_touching_it() {
    // Without --config vswitchd starts empty and serves the socket (tests/control_live.rs); a regular file in
    // the way is not removed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, "keep me").unwrap();
    let o = vswitchd(&["run", "--socket", &path.display().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("exists and is not a socket"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[test]
fn bad_config_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[switch]\nworkers = 0\n");
    let o = vswitchd(&["run", "--config", &cfg]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("config.toml:2") && e.contains("workers"), "{e}");
}

#[test]
fn bad_command_line_values_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let stats = dir.path().join("s.json").display().to_string();
    let o = vswitchd(&["run", "--config", &cfg, "--workers", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--workers 0"), "{}", stderr(&o));
    let o = vswitchd(&["run", "--config", &cfg, "--stats-json", &stats, "--stats-interval", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--stats-interval"), "{}", stderr(&o));
    // An interval without a file to write is a usage error (clap).
    let o = vswitchd(&["run", "--config", &cfg, "--stats-interval", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn replay_only_kinds_are_refused_naming_the_port() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["mem", "pcap"] {
        let cfg = write_config(
            dir.path(),
            &format!("[[network]]\nname = \"lan\"\n[[port]]\nname = \"m1\"\nkind = \"{kind}\"\nnetwork = \"lan\"\n"),
        );
        let o = vswitchd(&["run", "--config", &cfg]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(&format!("port m1: kind {kind} is replay-only")), "{}", stderr(&o));
        assert!(o.stdout.is_empty(), "no counters for a switch that never started");
    }
}

#[cfg(not(feature = "afxdp"))]
#[test]
fn afxdp_without_the_feature_is_refused_naming_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[[network]]\nname = \"lan\"\n[[port]]\nname = \"x1\"\nkind = \"afxdp\"\nifname = \"nope0\"\nnetwork = \"lan\"\n",
    );
    let o = vswitchd(&["run", "--config", &cfg]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("port x1: port up: kind afxdp needs vswitchd built with --features afxdp"),
        "{}",
        stderr(&o)
    );
}

/// Starts `vswitchd ARGS` inside namespace `ns`, with this test's own control socket.
fn spawn_in(ns: &Netns, args: &[&str]) -> CliDaemon {
    CliDaemon(Daemon::spawn_in(ns, with_socket(args)))
}

/// A [`Daemon`] that also removes this test process's socket directory when dropped, once no test uses it any
/// more (removing a non-empty one fails).
struct CliDaemon(Daemon);

impl std::ops::Deref for CliDaemon {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}

impl std::ops::DerefMut for CliDaemon {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.0
    }
}

impl Drop for CliDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(socket_dir());
    }
}

fn link_exists(ns: &Netns, ifname: &str) -> bool {
    netns::ip_output(&["-n", &ns.0, "link", "show", "dev", ifname]).status.success()
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

#[test]
fn live_two_taps_in_two_namespaces_ping_then_sigterm_stops_cleanly() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let pid = std::process::id();
    let (sw, h1, h2) = (
        Netns::create(&format!("vrc{pid}s")),
        Netns::create(&format!("vrc{pid}h1")),
        Netns::create(&format!("vrc{pid}h2")),
    );
    let (ta, tb) = (format!("vrc{pid}a"), format!("vrc{pid}b"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[switch]\nworkers = 2\npoll_idle_us = 100\n\n[[network]]\nname = \"lan\"\n\n\
             [[port]]\nname = \"t1\"\nkind = \"tap\"\nifname = \"{ta}\"\nnetwork = \"lan\"\nnetns = \"{}\"\n\n\
             [[port]]\nname = \"t2\"\nkind = \"tap\"\nifname = \"{tb}\"\nnetwork = \"lan\"\nnetns = \"{}\"\n",
            h1.0, h2.0
        ),
    );
    let stats = dir.path().join("stats.json");
    let stats_arg = stats.display().to_string();
    let mut d =
        spawn_in(&sw, &["run", "--config", &cfg, "--stats-json", &stats_arg, "--stats-interval", "0.2", "--cleanup"]);
    assert!(
        eventually(Duration::from_secs(5), || link_exists(&h1, &ta) && link_exists(&h2, &tb)),
        "taps did not appear in the host namespaces"
    );
    h1.ip(&["addr", "add", "10.77.0.1/24", "dev", &ta]);
    h2.ip(&["addr", "add", "10.77.0.2/24", "dev", &tb]);
    let ping = Command::new("ip")
        .args(["netns", "exec", &h1.0, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.0.2"])
        .output()
        .expect("ping");
    assert!(ping.status.success(), "ping through the switch: {}", String::from_utf8_lossy(&ping.stdout));

    // The periodic stats file is written while running.
    assert!(eventually(Duration::from_secs(2), || stats.exists()), "no periodic stats file");
    let during: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(during["workers"].as_array().map(Vec::len), Some(2), "{during}");

    // Idle, the workers sleep on their taps' fds: a second of wall time costs them little CPU.
    let read_stats =
        || -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap() };
    let cpu = |v: &serde_json::Value| -> u64 {
        v["workers"].as_array().unwrap().iter().map(|w| w["cpu_ns"].as_u64().unwrap()).sum()
    };
    let (a, t0) = (read_stats(), Instant::now());
    std::thread::sleep(Duration::from_millis(1500));
    let b = read_stats();
    let wall = t0.elapsed().as_nanos() as u64;
    assert!(cpu(&b) > 0, "{b}");
    assert!(cpu(&b) - cpu(&a) < wall / 5, "idle workers used {} ns of CPU in {wall} ns", cpu(&b) - cpu(&a));

    let t = Instant::now();
    d.signal(libc::SIGTERM);
    let out = d.wait(Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(2), "stop took {:?}", t.elapsed());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("counters JSON on stdout");
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(report, file, "--stats-json holds the final counters");
    for port in ["t1", "t2"] {
        let p = &report["ports"][port];
        assert_eq!(p["kind"], "tap");
        assert_eq!(p["queues"], 2, "one tap queue per worker");
        // Three echo requests one way, three replies the other, after ARP: unicast, forwarded.
        assert!(p["pipeline"]["forwarded"].as_u64().unwrap() >= 3, "{port}: {p}");
        assert!(p["io"]["tx_packets"].as_u64().unwrap() >= 3, "{port}: {p}");
    }
    let workers = report["workers"].as_array().unwrap();
    let rx: u64 = workers.iter().map(|w| w["rx_packets"].as_u64().unwrap()).sum();
    assert!(rx >= 6, "{report}");
    assert!(workers.iter().all(|w| w["pool_available"] == w["pool_capacity"]), "buffers lost: {report}");
    // --cleanup: the taps (persistent otherwise) were deleted at exit, wherever they had been moved.
    assert!(!link_exists(&h1, &ta) && !link_exists(&h2, &tb), "taps left behind");
}

/// Ports that cannot be opened at start (an AF_PACKET port on an interface that does not exist yet, a tap whose
/// name belongs to a veth that is not ours) are reported failed in the stats, with their error; the others come
/// up; the veth is left alone; once the missing interface appears the port comes up by itself (retried).
#[test]
fn live_ports_that_cannot_be_opened_are_reported_failed_and_retried_while_the_others_run() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let pid = std::process::id();
    let sw = Netns::create(&format!("vrc{pid}f"));
    let (tap, taken, missing) = (format!("vrc{pid}t"), format!("vrc{pid}d"), format!("vrc{pid}x"));
    let dir = tempfile::tempdir().unwrap();
    let peer = format!("vrc{pid}e");
    sw.ip(&["link", "add", &taken, "type", "veth", "peer", "name", &peer]);
    let cfg = write_config(
        dir.path(),
        &format!(
            "[switch]\nworkers = 2\n[[network]]\nname = \"lan\"\n\
             [[port]]\nname = \"t1\"\nkind = \"tap\"\nifname = \"{tap}\"\nnetwork = \"lan\"\n\
             [[port]]\nname = \"up\"\nkind = \"afpacket\"\nifname = \"{missing}\"\nnetwork = \"lan\"\n\
             [[port]]\nname = \"t9\"\nkind = \"tap\"\nifname = \"{taken}\"\nnetwork = \"lan\"\n"
        ),
    );
    let stats = dir.path().join("stats.json");
    let stats_arg = stats.display().to_string();
    let mut d = spawn_in(&sw, &["run", "--config", &cfg, "--stats-json", &stats_arg, "--stats-interval", "0.1"]);
    let read = || -> Option<serde_json::Value> { serde_json::from_str(&std::fs::read_to_string(&stats).ok()?).ok() };
    assert!(eventually(Duration::from_secs(5), || read().is_some()), "vswitchd did not start");
    let r = read().unwrap();
    assert_eq!(r["ports"]["t1"]["state"], "up", "{r}");
    assert!(link_exists(&sw, &tap), "t1's tap is up");
    assert_eq!(r["ports"]["up"]["state"], "failed", "{r}");
    assert!(r["ports"]["up"]["error"].as_str().unwrap().contains(&format!("port up: AF_PACKET on {missing}")), "{r}");
    assert_eq!(r["ports"]["t9"]["state"], "failed", "{r}");
    let e = r["ports"]["t9"]["error"].as_str().unwrap();
    assert!(e.contains(&format!("port t9: tap {taken}: an interface of that name exists and is not")), "{e}");
    assert!(link_exists(&sw, &taken), "the veth must survive");

    // The missing interface appears: the port comes up by itself (retried with backoff, ≤ 5 s apart).
    sw.ip(&["link", "add", &missing, "type", "veth", "peer", "name", &format!("vrc{pid}y")]);
    sw.ip(&["link", "set", "dev", &missing, "up"]);
    assert!(
        eventually(Duration::from_secs(8), || read().is_some_and(|r| r["ports"]["up"]["state"] == "up")),
        "the port did not come up: {:?}",
        read()
    );
    // The port that came up stops counting attempts; the one still failing goes on being retried (how many times
    // by now depends on the machine's load, so wait for the second attempt rather than expect it).
    assert!(
        eventually(Duration::from_secs(8), || read()
            .is_some_and(|r| r["ports"]["t9"]["open_attempts"].as_u64().is_some_and(|n| n >= 2))),
        "t9 was not retried: {:?}",
        read()
    );
    let r = read().unwrap();
    assert_eq!(r["ports"]["up"]["open_attempts"], 0, "{r}");
    assert_eq!(r["ports"]["t9"]["state"], "failed", "{r}");
    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("port failed to open") && e.contains("port up:"), "the failure is logged: {e}");
    assert!(link_exists(&sw, &taken), "the veth must survive");
}

/// Not a test: switch throughput and CPU per frame with 1 and 2 workers, as root, without a load generator
/// competing for the CPUs: a veth pair whose two ends are both AF_PACKET ports of vswitchd (in its own netns);
/// 8192 frames (distinct UDP flows, so fan-out spreads them) are injected once and circulate A → B → A, each hop
/// one receive and one transmit by the switch.
/// `cargo test -p dataplane --release --test run_cli measure -- --ignored --nocapture`
#[test]
#[ignore]
fn measure_afpacket_loop_one_vs_two_workers() {
    use dataplane::buffer::{BufPool, Frame};
    use dataplane::port::afpacket::{AfPacketConfig, AfPacketPort};
    use dataplane::port::Port;
    use dataplane::wire::builder::Ipv4Spec;
    use dataplane::wire::MacAddr;
    use std::net::Ipv4Addr;
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    const FRAMES: u16 = 8192;
    let pid = std::process::id();
    for workers in [1, 2] {
        let sw = Netns::create(&format!("vrc{pid}m{workers}"));
        let (a, b) = (format!("vrc{pid}m{workers}a"), format!("vrc{pid}m{workers}b"));
        sw.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        sw.ip(&["link", "set", &a, "up"]);
        sw.ip(&["link", "set", &b, "up"]);
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(
            dir.path(),
            &format!(
                "[switch]\nworkers = {workers}\n[[network]]\nname = \"lan\"\n\
                 [[port]]\nname = \"pa\"\nkind = \"afpacket\"\nifname = \"{a}\"\nnetwork = \"lan\"\n\
                 [[port]]\nname = \"pb\"\nkind = \"afpacket\"\nifname = \"{b}\"\nnetwork = \"lan\"\n"
            ),
        );
        let stats = dir.path().join("stats.json");
        let stats_arg = stats.display().to_string();
        let mut d = spawn_in(&sw, &["run", "--config", &cfg, "--stats-json", &stats_arg, "--stats-interval", "0.5"]);
        assert!(eventually(Duration::from_secs(5), || stats.exists()), "vswitchd did not start");
        let inject_on = a.clone();
        sw.run(move || {
            let mut port =
                AfPacketPort::open("inject", &AfPacketConfig::new(ifname(&inject_on))).expect("inject socket");
            let mut pool = BufPool::new(256);
            let (src, dst) = (MacAddr([2, 0, 0x5e, 0, 0, 1]), MacAddr([2, 0, 0x5e, 0, 0, 2]));
            let spec = Ipv4Spec::new(src, dst, Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 9, 0, 2));
            for chunk in 0..FRAMES / 256 {
                let mut out: Vec<Frame> = (0..256)
                    .map(|i| {
                        let mut f = pool.alloc().expect("buffer");
                        f.load(&spec.udp(1000 + chunk * 256 + i, 9, 18)).unwrap();
                        f
                    })
                    .collect();
                port.tx_burst(&mut pool, &mut out).expect("inject");
            }
        });
        let read = || -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap() };
        std::thread::sleep(Duration::from_millis(1500));
        let first = read();
        std::thread::sleep(Duration::from_secs(4));
        let last = read();
        d.signal(libc::SIGTERM);
        assert_eq!(d.wait(Duration::from_secs(5)).status.code(), Some(0));
        let sum = |v: &serde_json::Value, k: &str| -> f64 {
            v["workers"].as_array().unwrap().iter().map(|w| w[k].as_u64().unwrap() as f64).sum()
        };
        let diff = |k: &str| sum(&last, k) - sum(&first, k);
        let secs = (last["uptime_ns"].as_u64().unwrap() - first["uptime_ns"].as_u64().unwrap()) as f64 / 1e9;
        let pkts = diff("rx_packets");
        println!(
            "workers={workers}: {:.0} kpps, {:.0} ns CPU/frame, {:.0} ns busy/frame, workers' CPU {:.0}%, \
             {:.1} frames/batch, switch lock held by another thread in {:.2}% of batches",
            pkts / secs / 1e3,
            diff("cpu_ns") / pkts,
            diff("busy_ns") / pkts,
            diff("cpu_ns") / secs / 1e7,
            pkts / diff("rx_batches"),
            100.0 * diff("switch_waits") / diff("rx_batches"),
        );
    }
}

/// Hostile control clients do not hold vswitchd's exit: 64 clients that sent half a line and one that pipelines
/// requests and never reads its answers (its connection thread blocked writing) — SIGTERM still ends vswitchd
/// within a second, exit 0.
#[test]
fn live_sigterm_is_prompt_whatever_control_clients_do() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let sw = Netns::create(&format!("vrc{}q", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let socket_arg = socket.display().to_string();
    let mut d = spawn_in(&sw, &["run", "--socket", &socket_arg]);
    assert!(eventually(Duration::from_secs(10), || UnixStream::connect(&socket).is_ok()), "socket up");
    let _half: Vec<UnixStream> = (0..64)
        .map(|_| {
            let mut s = UnixStream::connect(&socket).unwrap();
            s.write_all(br#"{"version":1,"id":1,"#).unwrap();
            s
        })
        .collect();
    let flood = UnixStream::connect(&socket).unwrap();
    flood.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut w = flood.try_clone().unwrap();
    let line = b"{\"version\":1,\"id\":1,\"op\":\"get_config\"}\n".repeat(64);
    while w.write_all(&line).is_ok() {}
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    let out = d.wait(Duration::from_secs(10));
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
    assert!(!socket.exists(), "socket removed");
}

/// README § Security model, Memory: eight clients each sending an 8 MiB `apply` line of `{}` elements (the JSON
/// shape with the largest tree per byte, ~22×) at once keep vswitchd's peak RSS (`VmHWM`) under 320 MiB: the
/// documented bound for this case (idle ~17 MB, request text at most 16 MiB beyond each line's first 64 KiB with
/// buffers up to twice that, one large line parsed at a time, ~176 MiB). Before the budget, each client held its
/// own tree (~1.4 GB for eight). Every client gets an answer (parsed, or `too_large`), and vswitchd still answers.
#[test]
fn live_eight_parallel_8mib_requests_keep_rss_under_the_bound() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    const BOUND_KIB: u64 = 320 * 1024;
    let sw = Netns::create(&format!("vrc{}k", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let socket_arg = socket.display().to_string();
    let mut d = spawn_in(&sw, &["run", "--socket", &socket_arg]);
    assert!(eventually(Duration::from_secs(10), || UnixStream::connect(&socket).is_ok()), "socket up");
    let status = |key: &str| -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).expect("vswitchd's status");
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("no {key}"))
    };
    let idle = status("VmRSS:");
    let head = br#"{"version":1,"id":1,"op":"apply","config":{"network":["#;
    let mut line = head.to_vec();
    while line.len() + 3 + 8 < 8 * 1024 * 1024 - 100 {
        line.extend_from_slice(b"{},");
    }
    line.extend_from_slice(b"{}]}}\n");
    let line = std::sync::Arc::new(line);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (socket, line) = (socket.clone(), std::sync::Arc::clone(&line));
            std::thread::spawn(move || -> String {
                let mut s = UnixStream::connect(&socket).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                // A refused client sees its write fail once the server closes it: the answer is still there.
                let _ = s.write_all(&line);
                let mut answer = String::new();
                let _ = BufReader::new(s).read_line(&mut answer);
                answer
            })
        })
        .collect();
    let answers: Vec<String> = clients.into_iter().map(|c| c.join().expect("client")).collect();
    let peak = status("VmHWM:");
    println!(
        "VmRSS idle {idle} KiB, VmHWM after {peak} KiB; answers: {:?}",
        answers.iter().map(|a| a.chars().take(90).collect::<String>()).collect::<Vec<_>>()
    );
    // Served (parsed whole, then refused for what it says) or refused for the budget, never left unanswered.
    let served = answers.iter().filter(|a| a.contains("\"kind\":\"bad_request\"")).count();
    let refused = answers.iter().filter(|a| a.contains("\"kind\":\"too_large\"")).count();
    assert_eq!(served + refused, 8, "every client got an answer: {answers:?}");
    assert!(served >= 1, "at least one 8 MiB line was parsed: {answers:?}");
    assert!(peak < BOUND_KIB, "peak RSS {peak} KiB over the documented {BOUND_KIB} KiB");
    let mut s = UnixStream::connect(&socket).expect("connect after");
    s.write_all(b"{\"version\":1,\"id\":2,\"op\":\"hello\"}\n").unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    assert!(answer.contains("\"ok\":true"), "{answer}");
    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// With RUST_LOG unset, vswitchd logs at `info`: its start-up memory budget and each control connection's peer
/// (the security record, README § Security model) reach stderr.
#[test]
fn live_without_rust_log_the_budget_and_each_control_peer_are_logged() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let sw = Netns::create(&format!("vrc{}l", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let socket_arg = socket.display().to_string();
    let mut d = Daemon::spawn_in_env_removed(&sw, ["run", "--socket", &socket_arg], &["RUST_LOG"]);
    assert!(eventually(Duration::from_secs(10), || socket.exists()), "socket up");
    let mut s = UnixStream::connect(&socket).unwrap();
    s.write_all(b"{\"version\":1,\"id\":1,\"op\":\"hello\"}\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    assert!(answer.contains("\"ok\":true"), "{answer}");
    drop(s);
    let out = d.terminate();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("memory budget") && err.contains("total_mib="), "no budget line: {err}");
    // SAFETY: geteuid has no preconditions.
    let ours = unsafe { libc::geteuid() };
    assert!(err.contains("control connection") && err.contains(&format!("uid={ours}")), "no peer line: {err}");
}

/// vswitchd in a namespace of this test's (`vrc{pid}{suffix}`) serving a socket with `--socket-group gid`, in a
/// temporary directory made 0755 so that uid 65534 can reach it; returns once the socket exists. Keep the
/// namespace, directory and daemon for the test's length (dropped in reverse order: vswitchd first).
fn with_socket_group(suffix: &str, gid: libc::gid_t) -> (Netns, tempfile::TempDir, std::path::PathBuf, CliDaemon) {
    use std::os::unix::fs::PermissionsExt;
    let sw = Netns::create(&format!("vrc{}{suffix}", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("ctl.sock");
    let socket_arg = socket.display().to_string();
    let d = spawn_in(&sw, &["run", "--socket", &socket_arg, "--socket-group", &gid.to_string()]);
    assert!(eventually(Duration::from_secs(10), || socket.exists()), "socket up");
    (sw, dir, socket, d)
}

/// `--socket-group G` admits a peer whose primary group is G and one that has G only as a supplementary group
/// (`SO_PEERGROUPS`), and refuses one that has neither ("permission denied", even when the socket file's mode
/// would let it connect). The clients are `socat` run as uid 65534 with the groups set before exec.
#[test]
fn live_socket_group_admits_primary_and_supplementary_members_only() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let g: libc::gid_t = 4_000_000 + std::process::id() % 1000;
    let (_sw, _dir, socket, mut d) = with_socket_group("g", g);
    let socket_arg = socket.display().to_string();
    // One hello as uid 65534 with primary group `gid` and supplementary groups `groups`: socat's output.
    let hello = |gid: libc::gid_t, groups: Vec<libc::gid_t>| -> String {
        let mut child = socat_as_nobody(&socket_arg, gid, groups).spawn().expect("socat runs");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"{\"version\":1,\"id\":1,\"op\":\"hello\"}\n").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let primary = hello(g, vec![]);
    assert!(primary.contains("\"ok\":true"), "primary group {g}: {primary}");
    let supplementary = hello(65534, vec![g]);
    assert!(supplementary.contains("\"ok\":true"), "supplementary group {g}: {supplementary}");
    // A stranger: let the file mode admit it, so the refusal is the server's own check.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let stranger = hello(65534, vec![]);
    assert!(stranger.contains("permission denied") && !stranger.contains("\"ok\":true"), "stranger: {stranger}");
    let out = d.terminate();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("control connection refused") && err.contains("uid=65534"), "{err}");
}

/// `socat - UNIX-CONNECT:SOCKET` (stdin, stdout and stderr piped) run as uid 65534 with primary group `gid` and
/// supplementary groups `groups`, set after fork and before exec.
fn socat_as_nobody(socket: &str, gid: libc::gid_t, groups: Vec<libc::gid_t>) -> Command {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let mut cmd = Command::new("socat");
    cmd.args(["-t", "5", "-", &format!("UNIX-CONNECT:{socket}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Async-signal-safe system calls only.
    let drop_privileges = move || {
        // SAFETY: `groups` is a live vector of `groups.len()` gids, read by the kernel only.
        let set_groups = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
        // SAFETY: setgid and setuid take plain ids and have no memory preconditions.
        let set_gid = unsafe { libc::setgid(gid) };
        // SAFETY: as above.
        let set_uid = unsafe { libc::setuid(65534) };
        if set_groups != 0 || set_gid != 0 || set_uid != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe system calls (no
    // allocation, no lock).
    unsafe {
        cmd.pre_exec(drop_privileges);
    }
    cmd
}

/// 64 members of the socket's group (uid 65534) each ask for a 1 MiB answer and read it slowly (16 KiB every
/// 100 ms: busy, and never idle, for seconds): they get at most 60 connections between them, the others are
/// refused or take the place of an idle one of theirs, and root still gets one of the 4 reserved slots at once.
#[test]
fn live_the_socket_group_cannot_take_the_slots_reserved_for_root() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixStream;
    let g: libc::gid_t = 4_001_000 + std::process::id() % 1000;
    let (_sw, _dir, socket, mut d) = with_socket_group("r", g);
    let socket_arg = socket.display().to_string();
    let root_call = |line: &str| -> String {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(line.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        let mut answer = String::new();
        BufReader::new(&s).read_line(&mut answer).unwrap();
        answer
    };
    // A configuration whose origin is 1 MiB long: get_config's answer carries it.
    let apply = serde_json::json!({"version": 1, "id": 1, "op": "apply", "toml": "[[network]]\nname = \"n\"\n",
        "origin": "o".repeat(1 << 20)});
    assert!(root_call(&apply.to_string()).contains("\"ok\":true"), "applied");
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..64 {
        let mut child = socat_as_nobody(&socket_arg, 65534, vec![g]).spawn().expect("socat runs");
        child.stdin.as_mut().unwrap().write_all(b"{\"version\":1,\"id\":2,\"op\":\"get_config\"}\n").unwrap();
        let mut out = child.stdout.take().unwrap();
        readers.push(std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 16 << 10];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                std::thread::sleep(Duration::from_millis(100));
            }
            got
        }));
        children.push(child);
        // One at a time, so each is busy with its answer before the next arrives.
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = root_call(r#"{"version":1,"id":3,"op":"hello"}"#);
    let root_ok = answer.contains("\"ok\":true");
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let outputs: Vec<Vec<u8>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let served = outputs.iter().filter(|o| o.starts_with(b"{\"version\":1,\"id\":2,\"ok\":true")).count();
    let busy = outputs.iter().filter(|o| String::from_utf8_lossy(o).contains("all busy")).count();
    assert!(root_ok, "root was not served while the group's members read slowly: {answer}");
    assert!(served <= 60, "the group's members were served on {served} connections");
    assert!(busy >= 1, "no group member was refused \"all busy\" ({served} served)");
    let out = d.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
