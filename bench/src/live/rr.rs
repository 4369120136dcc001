//! UDP request/response round-trip latency through a forwarder (what sockperf's ping-pong and netperf's
//! UDP_RR measure): a client in the sender's namespace sends a 64-byte-frame request, a server in the
//! receiver's namespace echoes it, the client records the round trip in an hdrhistogram.
//!
//! Clocks: the client reads `Instant::now()` right before `send` and right after the matching `recv` returns;
//! the round trip includes both hosts' UDP stacks, the forwarder both ways, and any wake-up of an idle core or
//! poll-mode thread on the way. One request is outstanding at a time; requests are paced to at most `rate` per
//! second (the next one leaves at the later of its schedule and the previous reply). A request without a reply
//! within [`TIMEOUT`] is counted as lost and not recorded.
//!
//! Two loads: **low** (nothing else on the path) and **loaded** (the rate-controlled [`sender`](super::sender)
//! offering a background stream of 64-byte frames at a given rate through the same forwarder meanwhile). Client,
//! server and background sender run on the sender's core (the placement the baselines used for sockperf); the
//! background sender sleeps between batches, so the round-trip threads get the core most of the time.

use super::ndr::Path;
use super::sender::{self, SendSpec};
use super::traffic::pin_to;
use crate::pipeline::Latency;
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tools::lab::netns::in_netns;

/// The echo server's port.
pub const PORT: u16 = 7007;
/// A request without a reply after this long is lost.
pub const TIMEOUT: Duration = Duration::from_millis(100);
/// Request payload: 18 bytes (a 64-byte frame): sequence number and padding.
const PAYLOAD: usize = 18;

/// Round-trip latency at one load.
#[derive(Debug, Clone, Serialize)]
pub struct RrResult {
    /// Background frames per second offered meanwhile (0: none).
    pub background_pps: f64,
    /// Requests per second asked.
    pub rate: f64,
    /// Round trips, nanoseconds.
    pub latency_ns: Latency,
    /// Requests sent.
    pub requests: u64,
    /// Requests without a reply.
    pub lost: u64,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct RrSpec {
    /// Sender (client) namespace.
    pub client_ns: String,
    /// Receiver (server) namespace.
    pub server_ns: String,
    /// The server's address, as the client reaches it.
    pub server: Ipv4Addr,
    /// At most this many requests per second.
    pub rate: f64,
    /// How long.
    pub duration: Duration,
    /// The core every thread runs on.
    pub cpu: usize,
}

/// Measures round trips; with `background` (a path and a rate), a background stream runs meanwhile.
pub fn measure(spec: &RrSpec, background: Option<(&Path, f64)>) -> anyhow::Result<RrResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = {
        let stop = Arc::clone(&stop);
        let cpu = spec.cpu;
        in_netns(&spec.server_ns, move || serve(cpu, &stop, ready_tx))
    };
    let ready = ready_rx.recv_timeout(Duration::from_secs(5));
    let result = match ready {
        Ok(Ok(())) => {
            let bg = background.map(|(path, rate)| {
                let spec = SendSpec {
                    ns: path.sender_ns.clone(),
                    ifname: path.sender_if.clone(),
                    frame: path.frame.clone(),
                    rate: Some(rate),
                    // Longer than the round trips, so the stream covers them all (it starts first).
                    duration: spec.duration + Duration::from_millis(600),
                    cpu: path.cpu,
                };
                std::thread::spawn(move || sender::send(&spec))
            });
            if bg.is_some() {
                std::thread::sleep(Duration::from_millis(200));
            }
            let client = {
                let spec = spec.clone();
                in_netns(&spec.client_ns.clone(), move || client(&spec))
            };
            let r = client.join().map_err(|_| anyhow::anyhow!("round-trip client panicked"));
            if let Some(h) = bg {
                let sent = h.join().map_err(|_| anyhow::anyhow!("background sender panicked"))??;
                r.and_then(|r| r.map_err(anyhow::Error::from)).and_then(|r| r).map(|mut r| {
                    r.background_pps = sent.pps();
                    r
                })
            } else {
                r.and_then(|r| r.map_err(anyhow::Error::from)).and_then(|r| r)
            }
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(anyhow::anyhow!("the echo server did not start")),
    };
    stop.store(true, Relaxed);
    let served = server.join().map_err(|_| anyhow::anyhow!("echo server panicked"))?;
    served.map_err(anyhow::Error::from)?;
    result
}

fn serve(cpu: usize, stop: &AtomicBool, ready: std::sync::mpsc::Sender<anyhow::Result<()>>) {
    pin_to(cpu);
    let sock = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!("echo server: bind port {PORT}: {e}")));
            return;
        }
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = ready.send(Ok(()));
    let mut buf = [0u8; 2048];
    while !stop.load(Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

fn client(spec: &RrSpec) -> anyhow::Result<RrResult> {
    pin_to(spec.cpu);
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    sock.connect(SocketAddrV4::new(spec.server, PORT))?;
    sock.set_read_timeout(Some(TIMEOUT))?;
    let mut hist = crate::pipeline::ports::histogram();
    let (mut requests, mut lost) = (0u64, 0u64);
    let mut buf = [0u8; 2048];
    let mut req = [0u8; PAYLOAD];
    let gap = Duration::from_secs_f64(1.0 / spec.rate.max(1.0));
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < spec.duration {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += gap;
        requests += 1;
        req[..8].copy_from_slice(&requests.to_be_bytes());
        let t0 = Instant::now();
        sock.send(&req)?;
        // Wait for this request's reply; a late reply to an earlier one is skipped.
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 8 && buf[..8] == requests.to_be_bytes() => {
                    hist.saturating_record(t0.elapsed().as_nanos() as u64);
                    break;
                }
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    lost += 1;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // ICMP errors (a port unreachable before the server started) surface here: count as lost.
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
        if next < Instant::now() {
            next = Instant::now();
        }
    }
    anyhow::ensure!(!hist.is_empty(), "no reply to any of {requests} requests");
    Ok(RrResult { background_pps: 0.0, rate: spec.rate, latency_ns: Latency::of(&hist), requests, lost })
}
