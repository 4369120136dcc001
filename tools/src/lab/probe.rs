//! Probes that exercise a running lab through the kernels of its hosts: ping (iputils `ping` run in a host's
//! namespace), a TCP transfer between a client and a server thread that each joined a host's namespace, and a
//! UDP echo ([`UdpEcho`], [`udp_echoed`]).
//!
//! The TCP server accepts one connection, reads it to the end, and answers with one line
//! `bytes=N peer=A.B.C.D:P`: the byte count it received and the source address it saw, so the client learns
//! whether the switch translated its address (masquerade) or the destination (published ports). Every wait is
//! bounded by a timeout. Callable from any thread.

use super::netns::{in_netns, run};
use super::LabError;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What `ping` reported.
#[derive(Debug, Clone, PartialEq)]
pub struct PingReport {
    /// Echo requests sent.
    pub sent: u32,
    /// Echo replies received.
    pub received: u32,
    /// Average round trip in milliseconds, when any reply came.
    pub avg_ms: Option<f64>,
}

/// Pings `to` `count` times from namespace `ns` (0.2 s apart, 2 s wait for the last reply).
pub fn ping(ns: &str, to: Ipv4Addr, count: u32) -> Result<PingReport, LabError> {
    if run("sh", &["-c", "command -v ping"]).is_err() {
        return Err(LabError::Missing("ping (install iputils-ping)".into()));
    }
    let count_s = count.to_string();
    let to_s = to.to_string();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-n", "-q", "-c", &count_s, "-i", "0.2", "-W", "2", &to_s])
        .output()
        .map_err(|e| LabError::Command { cmd: "ping".into(), detail: e.to_string() })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut report = PingReport { sent: 0, received: 0, avg_ms: None };
    for line in text.lines() {
        if line.contains("packets transmitted") {
            let nums: Vec<u32> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
            if nums.len() >= 2 {
                report.sent = nums[0];
                report.received = nums[1];
            }
        } else if let Some(rest) = line.strip_prefix("rtt min/avg/max/mdev = ") {
            report.avg_ms = rest.split('/').nth(1).and_then(|v| v.parse().ok());
        }
    }
    if report.sent == 0 {
        return Err(LabError::Command {
            cmd: format!("ip netns exec {ns} ping {to}"),
            detail: format!("{}{}", text.trim(), String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(report)
}

/// What the server saw of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReport {
    /// Bytes received before the end of the stream.
    pub bytes: u64,
    /// The connection's source address as the server saw it.
    pub peer: SocketAddrV4,
}

/// A one-connection TCP server running on a thread inside a host's namespace.
#[derive(Debug)]
pub struct TcpServer {
    handle: JoinHandle<Result<Result<ServerReport, String>, LabError>>,
}

impl TcpServer {
    /// Listens on `0.0.0.0:port` inside `ns`; returns once the socket is bound. The server gives up after
    /// `timeout` without a finished connection.
    pub fn start(ns: &str, port: u16, timeout: Duration) -> Result<TcpServer, LabError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let handle = in_netns(ns, move || serve_one(port, timeout, ready_tx));
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(TcpServer { handle }),
            Ok(Err(detail)) => Err(LabError::Probe(format!("server on port {port}: {detail}"))),
            Err(_) => {
                // The thread ended before binding: most likely it could not join the namespace.
                let detail = match handle.join() {
                    Ok(Err(e)) => e.to_string(),
                    _ => "server thread ended".to_string(),
                };
                Err(LabError::Probe(format!("server on port {port}: {detail}")))
            }
        }
    }

    /// Waits for the server's report.
    pub fn finish(self) -> Result<ServerReport, LabError> {
        match self.handle.join() {
            Ok(Ok(Ok(r))) => Ok(r),
            Ok(Ok(Err(detail))) => Err(LabError::Probe(format!("server: {detail}"))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(LabError::Probe("server thread panicked".into())),
        }
    }
}

fn serve_one(port: u16, timeout: Duration, ready: mpsc::Sender<Result<(), String>>) -> Result<ServerReport, String> {
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("bind: {e}")));
            return Err(format!("bind: {e}"));
        }
    };
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let _ = ready.send(Ok(()));
    let deadline = Instant::now() + timeout;
    let (mut stream, peer) = loop {
        match listener.accept() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err("no connection before the timeout".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    let SocketAddr::V4(peer) = peer else { return Err(format!("IPv6 peer {peer}")) };
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read after {bytes} bytes: {e}")),
        }
    }
    let _ = writeln!(stream, "bytes={bytes} peer={peer}");
    Ok(ServerReport { bytes, peer })
}

/// What a client's transfer achieved, with the server's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// Bytes the client wrote.
    pub sent: u64,
    /// Bytes the server said it received.
    pub server_bytes: u64,
    /// The client's address as the server saw it.
    pub server_saw: SocketAddrV4,
    /// From connect to the server's answer.
    pub elapsed: Duration,
}

impl Transfer {
    /// Payload throughput in Mbit/s.
    pub fn mbit_per_s(&self) -> f64 {
        self.sent as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Connects from namespace `ns` to `to`, writes `bytes` bytes, closes its side and reads the server's answer.
pub fn tcp_send(ns: &str, to: SocketAddrV4, bytes: u64, timeout: Duration) -> Result<Transfer, LabError> {
    let handle = in_netns(ns, move || send(to, bytes, timeout));
    match handle.join() {
        Ok(Ok(Ok(t))) => Ok(t),
        Ok(Ok(Err(detail))) => Err(LabError::Probe(format!("client to {to}: {detail}"))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(LabError::Probe("client thread panicked".into())),
    }
}

fn send(to: SocketAddrV4, bytes: u64, timeout: Duration) -> Result<Transfer, String> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&to.into(), timeout).map_err(|e| format!("connect: {e}"))?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0u64;
    while sent < bytes {
        let n = chunk.len().min((bytes - sent) as usize);
        stream.write_all(&chunk[..n]).map_err(|e| format!("write after {sent} bytes: {e}"))?;
        sent += n as u64;
    }
    stream.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(|e| format!("reading the server's answer: {e}"))?;
    let elapsed = start.elapsed();
    let (server_bytes, server_saw) = parse_answer(&line).ok_or_else(|| format!("bad answer {line:?}"))?;
    Ok(Transfer { sent, server_bytes, server_saw, elapsed })
}

/// Parses `bytes=N peer=A:P`.
fn parse_answer(line: &str) -> Option<(u64, SocketAddrV4)> {
    let mut words = line.split_whitespace();
    let bytes = words.next()?.strip_prefix("bytes=")?.parse().ok()?;
    let peer = words.next()?.strip_prefix("peer=")?.parse().ok()?;
    Some((bytes, peer))
}

#[cfg(test)]
mod tests {
    use super::parse_answer;

    #[test]
    fn server_answer_parses() {
        assert_eq!(parse_answer("bytes=10 peer=203.0.113.2:40000\n"), Some((10, "203.0.113.2:40000".parse().unwrap())));
        assert_eq!(parse_answer("bytes=x peer=1.2.3.4:5"), None);
        assert_eq!(parse_answer(""), None);
    }
}

/// A UDP echo server on a thread inside a host's namespace: every datagram it receives on `0.0.0.0:port` is
/// sent back to its source, until `lifetime` has passed.
#[derive(Debug)]
pub struct UdpEcho {
    handle: JoinHandle<Result<u64, LabError>>,
}

impl UdpEcho {
    /// Binds `0.0.0.0:port` inside `ns`; returns once the socket is bound.
    pub fn start(ns: &str, port: u16, lifetime: Duration) -> Result<UdpEcho, LabError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let handle = in_netns(ns, move || {
            let sock = match std::net::UdpSocket::bind(("0.0.0.0", port)) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return 0;
                }
            };
            let deadline = Instant::now() + lifetime;
            let mut echoed = 0;
            let mut buf = [0u8; 2048];
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                let _ = sock.set_read_timeout(Some(left.max(Duration::from_millis(1))));
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if sock.send_to(&buf[..n], from).is_ok() {
                        echoed += 1;
                    }
                }
            }
            echoed
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(UdpEcho { handle }),
            Ok(Err(detail)) => Err(LabError::Probe(format!("udp echo on port {port}: {detail}"))),
            Err(_) => Err(LabError::Probe(format!("udp echo on port {port}: thread ended before binding"))),
        }
    }

    /// Waits for the server's lifetime to end; returns how many datagrams it echoed.
    pub fn finish(self) -> Result<u64, LabError> {
        self.handle.join().map_err(|_| LabError::Probe("udp echo thread panicked".into()))?
    }
}

/// Sends up to `tries` datagrams from namespace `ns` to `to`, each waiting `wait` for its echo; true when one
/// came back with the same bytes.
pub fn udp_echoed(ns: &str, to: SocketAddrV4, tries: u32, wait: Duration) -> Result<bool, LabError> {
    let handle = in_netns(ns, move || -> Result<bool, String> {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        for i in 0..tries {
            let msg = format!("probe {i}");
            sock.send_to(msg.as_bytes(), to).map_err(|e| e.to_string())?;
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) if &buf[..n] == msg.as_bytes() => return Ok(true),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        Ok(false)
    });
    match handle.join() {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(detail))) => Err(LabError::Probe(format!("udp to {to}: {detail}"))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(LabError::Probe("udp probe thread panicked".into())),
    }
}
