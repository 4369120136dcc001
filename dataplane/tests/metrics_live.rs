//! `vswitchd run --metrics` against a real Prometheus server (Debian's `prometheus`, installed by `.ci/run`):
//! vswitchd runs in a namespace of its own with two taps moved into two host namespaces; Prometheus runs inside
//! vswitchd's namespace (`ip netns exec`), scraping `127.0.0.1` there every second, with a private TSDB in a
//! temporary directory. The test pings between the hosts, waits until Prometheus has scraped a value of
//! `vswitch_port_rx_packets_total` that counts those pings, and checks the page with `promtool check metrics`.
//! Needs root; skipped (with a message) without it, or without prometheus outside CI (with `CI` set, a missing
//! server fails the test). Prometheus and vswitchd are stopped by their PIDs; the namespaces are deleted by name.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/netns.rs"]
mod netns;

use daemon::Daemon;
use netns::{skip_reason, Netns};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const METRICS_PORT: u16 = 9477;
const PROMETHEUS_PORT: u16 = 9090;

/// A process killed (by its PID) and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on 127.0.0.1:port inside `ns`; returns (status line, body).
fn http_get(ns: &Netns, port: u16, path: &str) -> Option<(String, String)> {
    let path = path.to_string();
    ns.run(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        let status = head.lines().next()?.to_string();
        // Prometheus answers with chunked encoding; the JSON object is the part between the first '{' and the last '}'.
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            let (a, b) = (body.find('{')?, body.rfind('}')?);
            body[a..=b].to_string()
        } else {
            body.to_string()
        };
        Some((status, body))
    })
}

/// The value Prometheus has for `query` (an instant vector with one sample), if any.
fn prom_value(ns: &Netns, query: &str) -> Option<f64> {
    let enc: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (_, body) = http_get(ns, PROMETHEUS_PORT, &format!("/api/v1/query?query={enc}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

fn ping(from: &Netns, to: &str, count: u32) {
    let out = Command::new("ip")
        .args(["netns", "exec", &from.0, "ping", "-c", &count.to_string(), "-i", "0.05", "-W", "1", to])
        .output()
        .expect("ping");
    assert!(out.status.success(), "ping {to}: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn prometheus_scrapes_counters_that_traffic_moves() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    if !std::path::Path::new("/usr/bin/prometheus").exists() {
        // .ci/run installs it: in CI a missing server is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "CI: /usr/bin/prometheus missing (.ci/run installs prometheus)");
        eprintln!("skipped: /usr/bin/prometheus not installed (Debian package prometheus)");
        return;
    }
    let pid = std::process::id();
    let sw = Netns::create(&format!("vsm{pid}sw"));
    let ha = Netns::create(&format!("vsm{pid}a"));
    let hb = Netns::create(&format!("vsm{pid}b"));
    for ns in [&sw, &ha, &hb] {
        ns.disable_ipv6();
    }
    let (ta, tb) = (format!("vsm{pid}ta"), format!("vsm{pid}tb"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switch.toml");
    std::fs::write(
        &config,
        format!(
            "[[network]]\nname = \"lan\"\n\n\
             [[port]]\nname = \"a\"\nkind = \"tap\"\nifname = \"{ta}\"\nnetwork = \"lan\"\nnetns = \"{}\"\n\n\
             [[port]]\nname = \"b\"\nkind = \"tap\"\nifname = \"{tb}\"\nnetwork = \"lan\"\nnetns = \"{}\"\n",
            ha.0, hb.0
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{METRICS_PORT}");
    let mut switch = Daemon::spawn_in(
        &sw,
        [
            "run".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--socket".as_ref(),
            dir.path().join("ctl.sock").as_os_str(),
            "--metrics".as_ref(),
            addr.as_ref(),
        ],
    );
    // The taps appear in the hosts' namespaces once the ports are open.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(netns::ip_output(&["-n", &ha.0, "link", "show", &ta]).status.success()
        && netns::ip_output(&["-n", &hb.0, "link", "show", &tb]).status.success())
    {
        assert!(Instant::now() < deadline, "taps did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    ha.ip(&["addr", "add", "10.88.0.1/24", "dev", &ta]);
    ha.ip(&["link", "set", &ta, "up"]);
    hb.ip(&["addr", "add", "10.88.0.2/24", "dev", &tb]);
    hb.ip(&["link", "set", &tb, "up"]);

    // The page itself, and promtool on it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let page = loop {
        if let Some((status, body)) = http_get(&sw, METRICS_PORT, "/metrics") {
            assert!(status.contains("200"), "{status}");
            break body;
        }
        assert!(Instant::now() < deadline, "no answer on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(page.contains("vswitch_port_rx_packets_total{port=\"a\",kind=\"tap\"}"), "{page}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool check metrics: {}", String::from_utf8_lossy(&out.stdout));

    // Prometheus inside vswitchd's namespace, scraping every second.
    let prom_yml = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_yml,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: vswitchd\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let tsdb = dir.path().join("tsdb");
    let prometheus = Killed(
        Command::new("ip")
            .args(["netns", "exec", &sw.0, "/usr/bin/prometheus"])
            .arg(format!("--config.file={}", prom_yml.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus"),
    );

    // A first scraped value, then traffic, then a scraped value that counts it.
    let query = "vswitch_port_rx_packets_total{port=\"a\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        if let Some(v) = prom_value(&sw, query) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never had {query}; its log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    ping(&ha, "10.88.0.2", 20);
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let v = prom_value(&sw, query).unwrap_or(before);
        if v >= before + 20.0 {
            break v;
        }
        assert!(Instant::now() < deadline, "Prometheus still has {v} for {query} (before the pings: {before})");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(after >= before + 20.0);
    // The worker's batch histogram was scraped too.
    let batches = prom_value(&sw, "sum(vswitch_worker_batch_frames_count)").unwrap_or(0.0);
    assert!(batches >= 20.0, "batches scraped: {batches}");

    drop(prometheus);
    let out = switch.terminate();
    assert!(out.status.success(), "vswitchd: {}", String::from_utf8_lossy(&out.stderr));
}
