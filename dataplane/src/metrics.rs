//! Prometheus metrics for `vswitchd run --metrics ADDR`: a snapshot of the live counters ([`LiveReport`] and the
//! configured limits) rendered in the Prometheus text format, served over HTTP at `/metrics`.
//!
//! # What is exported
//! Names follow Prometheus conventions: a `vswitch_` prefix, counters end in `_total`, base units (seconds,
//! bytes) in the name. Per port (`port`, `kind` labels): I/O packets/bytes/drops both ways
//! (`vswitch_port_{rx,tx}_{packets,bytes,dropped}_total`) and the pipeline's view
//! (`vswitch_port_{forwarded,flooded,routed,dropped}_total`); `vswitch_drops_total{reason}` for every drop
//! reason (zeros included, so a series exists before its first drop); per network the MAC table's size and
//! limit (`vswitch_fdb_entries`, `vswitch_fdb_limit`) and counters; neighbours, routes, the router's, NAT's and
//! port allocation's counters; the connection table's size, limit and counters; per worker (`worker` label)
//! busy/idle/CPU seconds, packets, batches, sleeps, lock waits, pool gauges, and two histograms:
//! `vswitch_worker_batch_frames` (frames per received burst) and `vswitch_worker_batch_duration_seconds` (the
//! pipeline's time per burst, recorded by the worker in fixed atomic buckets, `worker::BatchHistograms`).
//!
//! # Format and server
//! The text is encoded with the `prometheus-client` crate (a [`Collector`] over the snapshot), which writes
//! OpenMetrics; [`render`] turns it into the classic text format 0.0.4 that every Prometheus server and
//! `promtool check metrics` read (a counter family's `# HELP`/`# TYPE` lines name it with its `_total` suffix,
//! and the `# EOF` marker is dropped).
//!
//! [`serve`] answers on one thread of its own with a minimal HTTP/1.1 responder over `std::net`: one request per
//! connection (`Connection: close`), `GET /metrics` (or `HEAD`) → 200, any other path → 404, any other method →
//! 405, a request head over 8 KiB or not complete within 2 s → closed. Scrapes are rare (seconds apart) and the
//! snapshot is what the control socket's `stats` reads, so one thread and no async runtime are enough; pulling an
//! HTTP stack into the daemon for one read-only page would not be.
//!
//! Threads: the server thread only reads (the snapshot takes each port queue lock and the switch lock briefly,
//! like `--stats-interval`); off by default.

use crate::counters::DropReason;
use crate::live::LiveReport;
use crate::worker::{BATCH_FRAMES_BOUNDS, BATCH_NS_BOUNDS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// What one scrape shows: the counters and the configured limits.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The live counters.
    pub report: LiveReport,
    /// The connection table's limit (`[conntrack] limit`).
    pub conntrack_limit: usize,
    /// Per network: its MAC table limit.
    pub mac_limits: BTreeMap<String, usize>,
    /// Static routes configured.
    pub routes: usize,
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

fn counter<V: prometheus_client::encoding::EncodeCounterValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        if labels.is_empty() {
            m.encode_counter::<(), _, u64>(&v, None)?;
        } else {
            m.encode_family(&labels)?.encode_counter::<(), _, u64>(&v, None)?;
        }
    }
    Ok(())
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        if labels.is_empty() {
            m.encode_gauge(&v)?;
        } else {
            m.encode_family(&labels)?.encode_gauge(&v)?;
        }
    }
    Ok(())
}

/// Counters (and the listed gauges) of a stats struct, from its JSON form: `PREFIX_FIELD_total`.
fn stats_struct(
    e: &mut DescriptorEncoder,
    prefix: &str,
    what: &str,
    value: &serde_json::Value,
    gauges: &[(&str, &str)],
) -> std::fmt::Result {
    let Some(fields) = value.as_object() else { return Ok(()) };
    for (field, v) in fields {
        let Some(v) = v.as_u64() else { continue };
        match gauges.iter().find(|(f, _)| f == field) {
            Some((_, name)) => {
                gauge(e, &format!("{prefix}_{name}"), &format!("{what}: {field} now"), [(vec![], v as i64)])?
            }
            None => counter(e, &format!("{prefix}_{field}"), &format!("{what}: {field}"), [(vec![], v)])?,
        }
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let r = &s.report;
        gauge(
            &mut e,
            "vswitch_uptime_seconds",
            "Seconds since the workers' clock started",
            [(vec![], r.uptime_ns as f64 / 1e9)],
        )?;

        // Ports.
        let port = |name: &String, p: &crate::live::LivePortReport| -> Labels {
            vec![("port", name.clone()), ("kind", p.kind.to_string())]
        };
        type Io = fn(&crate::live::LivePortReport) -> u64;
        let io: [(&str, &str, Io); 10] = [
            ("vswitch_port_rx_packets", "Frames the port received and handed to the switch", |p| p.io.rx_packets),
            ("vswitch_port_rx_bytes", "Bytes of the frames received", |p| p.io.rx_bytes),
            (
                "vswitch_port_rx_dropped",
                "Frames the port received but could not hand over (ring full, too long)",
                |p| p.io.rx_dropped,
            ),
            ("vswitch_port_tx_packets", "Frames the port sent", |p| p.io.tx_packets),
            ("vswitch_port_tx_bytes", "Bytes of the frames sent", |p| p.io.tx_bytes),
            ("vswitch_port_tx_dropped", "Frames given to the port that it could not send", |p| p.io.tx_dropped),
            ("vswitch_port_forwarded", "Received frames the pipeline sent to one known port", |p| p.pipeline.forwarded),
            ("vswitch_port_flooded", "Received frames flooded (broadcast, multicast, unknown unicast)", |p| {
                p.pipeline.flooded
            }),
            ("vswitch_port_routed", "Received frames handed to the router", |p| p.pipeline.routed),
            ("vswitch_port_dropped", "Received frames the pipeline dropped (any reason)", |p| p.pipeline.dropped),
        ];
        for (name, help, get) in io {
            counter(&mut e, name, help, r.ports.iter().map(|(n, p)| (port(n, p), get(p))))?;
        }
        counter(
            &mut e,
            "vswitch_drops",
            "Frames dropped by the pipeline, by reason",
            DropReason::ALL
                .iter()
                .map(|d| (vec![("reason", d.name().to_string())], r.switch.drops.get(d.name()).copied().unwrap_or(0))),
        )?;

        // Tables.
        let net = |n: &String| -> Labels { vec![("network", n.clone())] };
        gauge(
            &mut e,
            "vswitch_fdb_entries",
            "MAC table entries now",
            r.switch.networks.iter().map(|(n, x)| (net(n), x.fdb.entries as i64)),
        )?;
        gauge(
            &mut e,
            "vswitch_fdb_limit",
            "MAC table limit (mac_limit)",
            s.mac_limits.iter().map(|(n, l)| (net(n), *l as i64)),
        )?;
        type Fdb = fn(&crate::fdb::FdbStats) -> u64;
        let fdb: [(&str, &str, Fdb); 4] = [
            ("vswitch_fdb_learned", "MAC addresses learned", |f| f.learned),
            ("vswitch_fdb_moved", "MAC addresses that moved to another port", |f| f.moved),
            ("vswitch_fdb_evicted", "MAC entries evicted because the table was full", |f| f.evicted),
            ("vswitch_fdb_aged", "MAC entries removed by ageing", |f| f.aged),
        ];
        for (name, help, get) in fdb {
            counter(&mut e, name, help, r.switch.networks.iter().map(|(n, x)| (net(n), get(&x.fdb))))?;
        }
        gauge(&mut e, "vswitch_routes", "Static routes configured", [(vec![], s.routes as i64)])?;
        stats_struct(&mut e, "vswitch_bridge", "Bridge", &json(&r.switch.bridge), &[])?;
        stats_struct(&mut e, "vswitch_router", "Router", &json(&r.switch.router), &[])?;
        stats_struct(&mut e, "vswitch_neigh", "Neighbour table", &json(&r.switch.neigh), &[("entries", "entries")])?;
        stats_struct(&mut e, "vswitch_nat", "NAT", &json(&r.switch.nat), &[])?;
        stats_struct(
            &mut e,
            "vswitch_snat",
            "Masquerade port allocation",
            &json(&r.switch.snat),
            &[("in_use", "ports_in_use"), ("destinations", "destinations")],
        )?;
        stats_struct(&mut e, "vswitch_conntrack", "Connection table", &json(&r.conntrack), &[("entries", "entries")])?;
        gauge(
            &mut e,
            "vswitch_conntrack_limit",
            "Connection table limit ([conntrack] limit)",
            [(vec![], s.conntrack_limit as i64)],
        )?;

        // Workers.
        let w = |id: usize| -> Labels { vec![("worker", id.to_string())] };
        let secs = |ns: u64| ns as f64 / 1e9;
        counter(
            &mut e,
            "vswitch_worker_busy_seconds",
            "Wall time in iterations that moved frames",
            r.workers.iter().map(|x| (w(x.id), secs(x.busy_ns))),
        )?;
        counter(
            &mut e,
            "vswitch_worker_idle_seconds",
            "Wall time since start not in busy iterations (polling empty queues or asleep)",
            r.workers.iter().map(|x| (w(x.id), secs(r.uptime_ns.saturating_sub(x.busy_ns)))),
        )?;
        counter(
            &mut e,
            "vswitch_worker_cpu_seconds",
            "The worker thread's CPU time (read every 100 ms)",
            r.workers.iter().map(|x| (w(x.id), secs(x.cpu_ns))),
        )?;
        type Wk = fn(&crate::worker::WorkerReport) -> u64;
        let wk: [(&str, &str, Wk); 10] = [
            ("vswitch_worker_rx_packets", "Frames received from the worker's queues", |x| x.rx_packets),
            ("vswitch_worker_rx_batches", "Non-empty bursts received", |x| x.rx_batches),
            ("vswitch_worker_iterations", "Poll loop iterations", |x| x.iterations),
            ("vswitch_worker_sleeps", "Times the worker slept on its ports' fds", |x| x.sleeps),
            ("vswitch_worker_switch_waits", "Times the worker's shard was held by the control thread", |x| {
                x.switch_waits
            }),
            ("vswitch_worker_handed_off", "Frames handed to the worker owning their connection", |x| x.handed_off),
            ("vswitch_worker_handed_in", "Frames handed to this worker by others", |x| x.handed_in),
            ("vswitch_worker_handoff_dropped", "Frames that could not be handed over", |x| x.handoff_dropped),
            ("vswitch_worker_updates_dropped", "Learned-state updates lost to a full queue", |x| x.updates_dropped),
            ("vswitch_worker_port_errors", "Port I/O errors", |x| x.port_errors),
        ];
        for (name, help, get) in wk {
            counter(&mut e, name, help, r.workers.iter().map(|x| (w(x.id), get(x))))?;
        }
        gauge(
            &mut e,
            "vswitch_worker_pool_available_buffers",
            "Free buffers in the worker's pool",
            r.workers.iter().map(|x| (w(x.id), x.pool_available as i64)),
        )?;
        gauge(
            &mut e,
            "vswitch_worker_pool_capacity_buffers",
            "The worker's pool capacity",
            r.workers.iter().map(|x| (w(x.id), x.pool_capacity as i64)),
        )?;

        {
            let mut m = e.encode_descriptor(
                "vswitch_worker_batch_frames",
                "Frames per received burst",
                None,
                MetricType::Histogram,
            )?;
            for x in &r.workers {
                let buckets: Vec<(f64, u64)> = BATCH_FRAMES_BOUNDS
                    .iter()
                    .zip(&x.batch_frames)
                    .map(|(b, c)| (*b as f64, *c))
                    .chain([(f64::MAX, 0)])
                    .collect();
                let sum: f64 =
                    BATCH_FRAMES_BOUNDS.iter().zip(&x.batch_frames).map(|(b, c)| *b as f64 * *c as f64).sum();
                let count = x.batch_frames.iter().sum();
                // The sum is an upper bound (each burst counted at its bucket's bound): the exact sum is rx_packets.
                let sum = if x.rx_batches == count { x.rx_packets as f64 } else { sum };
                m.encode_family(&w(x.id))?.encode_histogram::<()>(sum, count, &buckets, None)?;
            }
        }
        let mut m = e.encode_descriptor(
            "vswitch_worker_batch_duration_seconds",
            "The pipeline's time per received burst (switch lock wait included)",
            None,
            MetricType::Histogram,
        )?;
        for x in &r.workers {
            let bounds = BATCH_NS_BOUNDS.iter().map(|b| *b as f64 / 1e9).chain([f64::MAX]);
            let buckets: Vec<(f64, u64)> = bounds.zip(x.batch_ns.iter().copied()).collect();
            let count = x.batch_ns.iter().sum();
            m.encode_family(&w(x.id))?.encode_histogram::<()>(secs(x.batch_ns_sum), count, &buckets, None)?;
        }
        Ok(())
    }
}

/// A stats struct's JSON form (its fields become metrics).
fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// The snapshot in the Prometheus text format 0.0.4.
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    let mut open_metrics = String::new();
    // Writing to a String cannot fail; a collector error would leave a partial page, which promtool would catch.
    let _ = prometheus_client::encoding::text::encode(&mut open_metrics, &registry);
    to_classic_text(&open_metrics)
}

/// OpenMetrics text → Prometheus text 0.0.4: counter families are named with their `_total` suffix in `# HELP`
/// and `# TYPE` (their samples already carry it), `# UNIT` and `# EOF` lines are dropped.
pub fn to_classic_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rest = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or(line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match rest {
            Some((kw, r)) => {
                let (name, tail) = r.split_once(' ').unwrap_or((r, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{kw}{name}_total {tail}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// How long a client may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request head read.
const MAX_HEAD: usize = 8192;

/// Serves `GET /metrics` on `listener` from a thread of its own until `stop` is set (checked every 50 ms);
/// `page` makes the body (`None`: the switch is shutting down, answered with 503).
pub fn serve(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    page: Box<dyn Fn() -> Option<String> + Send>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("vsw-metrics".into()).spawn(move || {
        crate::sched::give_way_to_workers();
        while !stop.load(Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = answer(stream, &*page) {
                        tracing::debug!(error = %e, "metrics request");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    })
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream, page: &dyn Fn() -> Option<String>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request head too large\n",
                true,
            )?;
            linger(&mut stream);
            return Ok(());
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => match page() {
            Some(body) => respond(&mut stream, "200 OK", CONTENT_TYPE, &body, method == "GET"),
            None => respond(&mut stream, "503 Service Unavailable", "text/plain", "shutting down\n", true),
        },
        ("GET" | "HEAD", _) => respond(&mut stream, "404 Not Found", "text/plain", "only /metrics is served\n", true),
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", "GET /metrics\n", true),
    }
}

/// After answering early: stops writing and reads (bounded) what the client still sends, so closing does not
/// reset the connection before it has read the answer.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// The content type of the classic text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn respond(stream: &mut TcpStream, status: &str, ctype: &str, body: &str, with_body: bool) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if with_body {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::live::{RunOptions, Runtime};
    use crate::port::any::AnyPort;
    use crate::port::mem::MemPort;
    use crate::wire::builder::{eth, pattern};
    use crate::wire::MacAddr;

    const CONFIG: &str = "[[network]]\nname = \"lan\"\nmac_limit = 77\n\n\
                          [[port]]\nname = \"a\"\nkind = \"mem\"\nnetwork = \"lan\"\n\n\
                          [[port]]\nname = \"b\"\nkind = \"mem\"\nnetwork = \"lan\"\n";

    fn snapshot_after_traffic() -> Snapshot {
        let cfg = Config::parse(CONFIG, "test").unwrap();
        let ports = cfg.ports.iter().map(|p| vec![AnyPort::Mem(MemPort::new(p.name.clone()))]).collect();
        let running = Runtime::new(&cfg, ports, RunOptions { workers: 1, poll_idle: 50_000, pool_buffers: 256 })
            .unwrap()
            .start()
            .unwrap();
        let frame = eth(MacAddr([2, 0, 0, 0, 0, 2]), MacAddr([2, 0, 0, 0, 0, 1]), 0x88b5, &pattern(46));
        for _ in 0..5 {
            running.with_queue(0, 0, |p| p.as_mem_mut().unwrap().inject(&frame));
        }
        running.with_queue(0, 0, |p| p.as_mem_mut().unwrap().inject(&[0u8; 10]));
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while running.report().ports["a"].pipeline.rx_packets < 6 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let report = running.stop().report;
        Snapshot {
            report,
            conntrack_limit: cfg.conntrack.limit,
            mac_limits: cfg.networks.iter().map(|n| (n.name.clone(), n.mac_limit)).collect(),
            routes: cfg.routes.len(),
        }
    }

    #[test]
    fn render_names_every_family_after_the_conventions_and_counts_the_traffic() {
        let text = render(snapshot_after_traffic());
        assert!(!text.contains("# EOF"));
        assert!(text.contains("# TYPE vswitch_port_rx_packets_total counter\n"), "{text}");
        assert!(text.contains("vswitch_port_rx_packets_total{port=\"a\",kind=\"mem\"} 6\n"), "{text}");
        assert!(text.contains("vswitch_port_flooded_total{port=\"a\",kind=\"mem\"} 5\n"), "{text}");
        assert!(text.contains("vswitch_drops_total{reason=\"runt\"} 1\n"), "{text}");
        assert!(text.contains("vswitch_drops_total{reason=\"conntrack-full\"} 0\n"), "zeros are exported too");
        assert!(text.contains("vswitch_fdb_limit{network=\"lan\"} 77\n"));
        assert!(text.contains("vswitch_fdb_entries{network=\"lan\"} 1\n"));
        assert!(text.contains("vswitch_worker_batch_frames_count{worker=\"0\"} "), "{text}");
        assert!(
            text.contains("vswitch_worker_batch_duration_seconds_bucket{le=\"+Inf\",worker=\"0\"} ")
                || text.contains("vswitch_worker_batch_duration_seconds_bucket{worker=\"0\",le=\"+Inf\"} "),
            "{text}"
        );
        assert!(text.contains("vswitch_conntrack_entries 0\n"));
        // Every sample belongs to a family with HELP and TYPE, every counter sample ends in _total.
        let mut typed = std::collections::HashMap::new();
        for l in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, t) = l.split_once(' ').unwrap();
            typed.insert(name.to_string(), t.to_string());
            assert!(text.contains(&format!("# HELP {name} ")), "no help for {name}");
        }
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.get(*f).is_some_and(|t| t == "histogram")))
                .unwrap_or(name);
            let t = typed.get(family).unwrap_or_else(|| panic!("sample {name} has no family"));
            assert_eq!(t == "counter", name.ends_with("_total"), "{name}: {t}");
        }
    }

    #[test]
    fn promtool_accepts_the_page() {
        if std::process::Command::new("promtool").arg("--version").output().is_err() {
            eprintln!("promtool not installed: skipped");
            return;
        }
        let text = render(snapshot_after_traffic());
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn get(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn the_server_answers_metrics_and_refuses_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let h = serve(listener, Arc::clone(&stop), Box::new(|| Some("vswitch_x 1\n".to_string()))).unwrap();
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE) && ok.ends_with("\r\n\r\nvswitch_x 1\n"), "{ok}");
        assert!(get(addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        assert!(get(addr, &big).starts_with("HTTP/1.1 431"));
        stop.store(true, Relaxed);
        h.join().unwrap();
    }
}
